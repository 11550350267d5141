//! Muster's domain model: the rules every other crate obeys.
//!
//! This crate does no I/O, spawns nothing, reads no clock and serializes
//! nothing. Time and randomness come in as arguments, so every rule here is
//! a plain function that tests can drive step by step.

pub mod agent;
pub mod alert;
pub mod backoff;
pub mod breaker;
pub mod check;
pub mod dispatch;
pub mod health;
pub mod ids;
pub mod lease;
pub mod locks;
pub mod money;
pub mod pipeline;
pub mod slo;
pub mod task;
pub mod time;
pub mod workspace;

pub use agent::{AgentState, AgentStatus};
pub use backoff::Backoff;
pub use check::Check;
pub use dispatch::{Offer, Requirements};
pub use ids::{AgentName, Capability, RunnerName, TaskId, TokenId};
pub use lease::{Epoch, Lease};
pub use money::MicroUsd;
pub use task::{Live, Outcome, Priority, Refused, RunOutcome, Task, TaskSpec, TaskState};
pub use time::Millis;
pub use workspace::{Keep, Workspace};

/// A value from outside that does not satisfy a rule: names the field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: &'static str,
    pub reason: String,
}

impl Invalid {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Invalid {
        Invalid { field, reason: reason.into() }
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.reason)
    }
}

impl std::error::Error for Invalid {}
