//! Which agent may run which task, and in what order tasks go out.

use crate::{Capability, Millis, Priority, RunnerName};

/// What a task needs from an agent.
#[derive(Debug, Clone, Copy)]
pub struct Requirements<'a> {
    pub runner: &'a RunnerName,
    pub capabilities: &'a [Capability],
}

/// What a connected agent offers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Offer {
    pub runners: Vec<RunnerName>,
    pub capabilities: Vec<Capability>,
}

impl Offer {
    /// An agent can run a task when it has the task's runner and every
    /// capability the task names.
    pub fn can_run(&self, req: Requirements<'_>) -> bool {
        self.runners.contains(req.runner) && req.capabilities.iter().all(|c| self.capabilities.contains(c))
    }
}

/// The order tasks leave the queue: highest priority first, then oldest
/// first. `seq` is the order of creation.
pub fn dispatch_key(priority: Priority, seq: i64) -> (i64, i64) {
    (priority.rank(), seq)
}

/// Whether a queued task is due: its backoff, if any, has passed.
pub fn is_due(ready_at: Millis, now: Millis) -> bool {
    ready_at <= now
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(names: &[&str]) -> Vec<Capability> {
        names.iter().map(|n| Capability::parse(n).unwrap()).collect()
    }

    #[test]
    fn needs_runner_and_every_capability() {
        let shell = RunnerName::parse("shell").unwrap();
        let claude = RunnerName::parse("claude").unwrap();
        let offer = Offer { runners: vec![shell.clone()], capabilities: caps(&["gpu", "lang:rust"]) };
        assert!(offer.can_run(Requirements { runner: &shell, capabilities: &caps(&["gpu"]) }));
        assert!(offer.can_run(Requirements { runner: &shell, capabilities: &[] }));
        assert!(!offer.can_run(Requirements { runner: &shell, capabilities: &caps(&["gpu", "arm"]) }));
        assert!(!offer.can_run(Requirements { runner: &claude, capabilities: &[] }));
    }

    #[test]
    fn urgent_old_before_normal_new() {
        let mut keys = [
            dispatch_key(Priority::Low, 1),
            dispatch_key(Priority::Normal, 3),
            dispatch_key(Priority::Urgent, 5),
            dispatch_key(Priority::Normal, 2),
        ];
        keys.sort();
        assert_eq!(keys, [(0, 5), (2, 2), (2, 3), (3, 1)]);
    }
}
