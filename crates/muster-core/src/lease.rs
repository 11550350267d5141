//! Leases and their fencing epochs.
//!
//! A task handed to an agent carries a lease: which agent holds it, until
//! when, and under which epoch. The epoch grows every time the task is handed
//! out, so a report carrying an older epoch comes from a holder that has been
//! superseded and must never be applied.

use crate::{AgentName, Millis};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Epoch(pub u64);

impl Epoch {
    pub fn next(self) -> Epoch {
        Epoch(self.0 + 1)
    }
}

impl std::fmt::Display for Epoch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub agent: AgentName,
    pub epoch: Epoch,
    pub expires_at: Millis,
    /// The runner this lease runs the task with, when it is one of the
    /// task's fallbacks rather than its own runner.
    pub runner: Option<crate::RunnerName>,
}

impl Lease {
    pub fn is_expired(&self, now: Millis) -> bool {
        self.expires_at <= now
    }

    /// Whether a report from `agent` under `epoch` speaks for this lease.
    pub fn is_held_by(&self, agent: &AgentName, epoch: Epoch) -> bool {
        self.epoch == epoch && &self.agent == agent
    }
}
