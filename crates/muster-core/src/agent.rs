//! Agent states, derived from facts rather than stored.
//!
//! An agent is `offline` when no socket is connected; otherwise an operator's
//! pause or the agent's own drain wins; otherwise it is `busy` when every slot
//! is used and `idle` when at least one is free. Deriving the state from these
//! facts means it can never disagree with them.

use crate::Invalid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AgentState {
    Offline,
    Idle,
    Busy,
    Draining,
    Paused,
}

impl AgentState {
    pub const ALL: [AgentState; 5] =
        [AgentState::Offline, AgentState::Idle, AgentState::Busy, AgentState::Draining, AgentState::Paused];

    pub fn as_str(self) -> &'static str {
        match self {
            AgentState::Offline => "offline",
            AgentState::Idle => "idle",
            AgentState::Busy => "busy",
            AgentState::Draining => "draining",
            AgentState::Paused => "paused",
        }
    }

    pub fn parse(s: &str) -> Result<AgentState, Invalid> {
        AgentState::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| Invalid::new("state", format!("unknown agent state {s:?}")))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AgentStatus {
    pub connected: bool,
    /// An operator paused the agent: it keeps its runs but takes no new work.
    pub paused: bool,
    /// The agent is shutting down: it finishes its runs and takes no new work.
    pub draining: bool,
    pub slots: u32,
    pub used_slots: u32,
}

impl AgentStatus {
    pub fn state(&self) -> AgentState {
        if !self.connected {
            AgentState::Offline
        } else if self.paused {
            AgentState::Paused
        } else if self.draining {
            AgentState::Draining
        } else if self.used_slots >= self.slots {
            AgentState::Busy
        } else {
            AgentState::Idle
        }
    }

    /// How many more tasks may be handed to this agent now.
    pub fn free_slots(&self) -> u32 {
        match self.state() {
            AgentState::Idle => self.slots - self.used_slots,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_follows_the_facts() {
        let mut s = AgentStatus { connected: true, slots: 2, used_slots: 1, ..Default::default() };
        assert_eq!((s.state(), s.free_slots()), (AgentState::Idle, 1));
        s.used_slots = 2;
        assert_eq!((s.state(), s.free_slots()), (AgentState::Busy, 0));
        s.draining = true;
        assert_eq!(s.state(), AgentState::Draining);
        s.paused = true;
        assert_eq!(s.state(), AgentState::Paused);
        s.connected = false;
        assert_eq!((s.state(), s.free_slots()), (AgentState::Offline, 0));
    }
}
