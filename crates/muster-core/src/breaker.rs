//! Circuit breakers: one per agent and one per runner.
//!
//! ```text
//!            N failures in a row            cooldown passed: one task let through
//!   closed ─────────────────────► open ─────────────────────────────► half-open
//!     ▲                            ▲                                      │
//!     │                            └────────── the probe failed ──────────┤
//!     └──────────────────────────── the probe succeeded ──────────────────┘
//! ```
//!
//! The scheduler asks `admits` before handing out work. Only the probe's
//! result moves a half-open breaker; results of runs that began before it
//! opened are not evidence about now and are passed over.

use crate::{Invalid, Millis, TaskId};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Agent,
    Runner,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Agent => "agent",
            Scope::Runner => "runner",
        }
    }

    pub fn parse(s: &str) -> Result<Scope, Invalid> {
        match s {
            "agent" => Ok(Scope::Agent),
            "runner" => Ok(Scope::Runner),
            other => Err(Invalid::new("scope", format!("unknown scope {other:?}; expected agent or runner"))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }

    pub fn parse(s: &str) -> Result<State, Invalid> {
        match s {
            "closed" => Ok(State::Closed),
            "open" => Ok(State::Open),
            "half_open" => Ok(State::HalfOpen),
            other => Err(Invalid::new("state", format!("unknown breaker state {other:?}"))),
        }
    }
}

/// When breakers open and how long they stay open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Failed attempts in a row that open a breaker.
    pub failures: u32,
    /// How long an open breaker waits before letting one task through.
    pub cooldown: Duration,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy { failures: 5, cooldown: Duration::from_secs(60) }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breaker {
    pub scope: Scope,
    pub name: String,
    pub state: State,
    /// Failed attempts in a row (while closed), or that opened it.
    pub failures: u32,
    /// When it last opened.
    pub opened_at: Option<Millis>,
    /// The one task let through while half-open.
    pub probe: Option<TaskId>,
}

/// What `admits` allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Yes,
    /// One task, which becomes the probe.
    Probe,
    No,
}

/// A change worth telling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Opened,
    HalfOpened,
    Closed,
}

impl Breaker {
    pub fn new(scope: Scope, name: &str) -> Breaker {
        Breaker { scope, name: name.to_owned(), state: State::Closed, failures: 0, opened_at: None, probe: None }
    }

    /// When an open breaker lets a probe through.
    pub fn half_opens_at(&self, policy: Policy) -> Option<Millis> {
        match (self.state, self.opened_at) {
            (State::Open, Some(at)) => Some(at.plus(policy.cooldown)),
            _ => None,
        }
    }

    pub fn admits(&self, now: Millis, policy: Policy) -> Admit {
        match self.state {
            State::Closed => Admit::Yes,
            State::Open if self.half_opens_at(policy).is_some_and(|at| at <= now) => Admit::Probe,
            State::Open => Admit::No,
            // A probe whose task was lost (cancelled, reclaimed) is replaced.
            State::HalfOpen if self.probe.is_none() => Admit::Probe,
            State::HalfOpen => Admit::No,
        }
    }

    /// `task` goes through as the probe.
    pub fn start_probe(&mut self, task: &TaskId) -> Option<Change> {
        let was = self.state;
        self.state = State::HalfOpen;
        self.probe = Some(task.clone());
        (was != State::HalfOpen).then_some(Change::HalfOpened)
    }

    /// A run of `task` that this breaker covers ended; `ok` is its verdict.
    pub fn record(&mut self, task: &TaskId, ok: bool, now: Millis, policy: Policy) -> Option<Change> {
        match self.state {
            State::Closed if ok => {
                self.failures = 0;
                None
            }
            State::Closed => {
                self.failures = self.failures.saturating_add(1);
                (self.failures >= policy.failures.max(1)).then(|| self.open(now))
            }
            State::HalfOpen if self.probe.as_ref() == Some(task) => {
                if ok {
                    Some(self.reset())
                } else {
                    Some(self.open(now))
                }
            }
            State::Open | State::HalfOpen => None,
        }
    }

    /// The probe's run ended with no verdict (cancelled): another may go.
    pub fn probe_lost(&mut self, task: &TaskId) {
        if self.probe.as_ref() == Some(task) {
            self.probe = None;
        }
    }

    fn open(&mut self, now: Millis) -> Change {
        self.state = State::Open;
        self.opened_at = Some(now);
        self.probe = None;
        Change::Opened
    }

    /// Closed, counting from zero: on a probe's success or an operator's word.
    pub fn reset(&mut self) -> Change {
        self.state = State::Closed;
        self.failures = 0;
        self.probe = None;
        Change::Closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy { failures: 3, cooldown: Duration::from_secs(60) };

    fn t(n: u128) -> TaskId {
        TaskId::from_parts(0, n)
    }

    fn at(s: i64) -> Millis {
        Millis(s * 1000)
    }

    #[test]
    fn opens_after_n_failures_in_a_row_half_opens_after_the_cooldown_and_closes_on_success() {
        let mut b = Breaker::new(Scope::Runner, "claude");
        assert_eq!(b.record(&t(1), false, at(0), POLICY), None);
        assert_eq!(b.record(&t(2), true, at(1), POLICY), None, "a success resets the count");
        assert_eq!(b.record(&t(3), false, at(2), POLICY), None);
        assert_eq!(b.record(&t(4), false, at(3), POLICY), None);
        assert_eq!(b.admits(at(3), POLICY), Admit::Yes);
        assert_eq!(b.record(&t(5), false, at(4), POLICY), Some(Change::Opened));
        assert_eq!(b.admits(at(63), POLICY), Admit::No, "open until the cooldown passes");
        assert_eq!(b.record(&t(6), true, at(10), POLICY), None, "a run from before it opened proves nothing");
        assert_eq!(b.admits(at(64), POLICY), Admit::Probe);
        assert_eq!(b.start_probe(&t(7)), Some(Change::HalfOpened));
        assert_eq!(b.admits(at(65), POLICY), Admit::No, "one probe at a time");
        assert_eq!(b.record(&t(8), true, at(66), POLICY), None, "only the probe decides");
        assert_eq!(b.record(&t(7), true, at(67), POLICY), Some(Change::Closed));
        assert_eq!((b.state, b.failures, b.admits(at(67), POLICY)), (State::Closed, 0, Admit::Yes));
    }

    #[test]
    fn a_failed_probe_opens_it_again_and_a_lost_probe_is_replaced() {
        let mut b = Breaker::new(Scope::Agent, "w1");
        for n in 0..3 {
            b.record(&t(n), false, at(0), POLICY);
        }
        b.start_probe(&t(9));
        assert_eq!(b.record(&t(9), false, at(70), POLICY), Some(Change::Opened));
        assert_eq!(b.opened_at, Some(at(70)), "the cooldown starts again");
        assert_eq!(b.admits(at(100), POLICY), Admit::No);
        assert_eq!(b.admits(at(130), POLICY), Admit::Probe);
        b.start_probe(&t(10));
        b.probe_lost(&t(10));
        assert_eq!(b.admits(at(131), POLICY), Admit::Probe, "a cancelled probe is replaced at once");
        assert_eq!(b.reset(), Change::Closed);
        assert_eq!(b.admits(at(131), POLICY), Admit::Yes);
    }
}
