//! Which agent may run which task, and in what order tasks go out.

use crate::breaker::Admit;
use crate::{Capability, RunnerName, Task};

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

/// A runner that takes no ordinary work now, and why, in words for events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unavailable {
    pub runner: RunnerName,
    pub why: String,
}

/// How a claimed task runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pick {
    pub runner: RunnerName,
    /// The runner is one of the task's fallbacks, not its own.
    pub fallback: bool,
    /// The task goes through as its own runner's circuit-breaker probe.
    pub probe: bool,
}

/// One agent's claim: which of its runners take work now, which let one
/// task through as a breaker's probe, and which take none (disabled,
/// limited, or an open breaker), so their tasks wait or fall back.
#[derive(Debug, Clone)]
pub struct Claim {
    usable: Vec<RunnerName>,
    probing: Vec<RunnerName>,
    probes_taken: Vec<RunnerName>,
    /// Out of service or probing, with why: the runners tasks fall back from.
    unavailable: Vec<Unavailable>,
}

impl Claim {
    /// How many tasks an agent with `free` slots may take while its own
    /// breaker says `agent`: none while open, one as the probe once cooled.
    pub fn slots(free: u32, agent: Admit) -> u32 {
        match agent {
            Admit::No => 0,
            Admit::Probe => free.min(1),
            Admit::Yes => free,
        }
    }

    /// `offered`: the agent's runners; `disabled`: runners disabled or
    /// limited; `breakers`: what each runner's breaker admits now.
    pub fn new(offered: &[RunnerName], disabled: Vec<Unavailable>, breakers: &[(RunnerName, Admit)]) -> Claim {
        let mut unavailable = disabled;
        let mut probing = Vec::new();
        for (runner, admit) in breakers {
            if unavailable.iter().any(|u| u.runner == *runner) {
                continue;
            }
            let why = format!("runner {runner}'s circuit is open");
            match admit {
                Admit::No => unavailable.push(Unavailable { runner: runner.clone(), why }),
                Admit::Probe => {
                    probing.push(runner.clone());
                    unavailable.push(Unavailable { runner: runner.clone(), why });
                }
                Admit::Yes => {}
            }
        }
        let out = |r: &RunnerName| unavailable.iter().any(|u| u.runner == *r);
        let usable = offered.iter().filter(|r| !out(r)).cloned().collect();
        let probing = offered.iter().filter(|r| probing.contains(r)).cloned().collect();
        Claim { usable, probing, probes_taken: Vec::new(), unavailable }
    }

    /// The agent's runners that take work now.
    pub fn usable(&self) -> &[RunnerName] {
        &self.usable
    }

    /// The agent's runners whose breaker lets one task through as its probe.
    pub fn probing(&self) -> &[RunnerName] {
        &self.probing
    }

    /// Runners whose tasks may run on a fallback instead: out of service or probing.
    pub fn fall_from(&self) -> impl Iterator<Item = &RunnerName> {
        self.unavailable.iter().map(|u| &u.runner)
    }

    /// Why `runner` takes no ordinary work, if it takes none.
    pub fn why(&self, runner: &RunnerName) -> Option<&str> {
        self.unavailable.iter().find(|u| u.runner == *runner).map(|u| u.why.as_str())
    }

    /// How `task` runs under this claim, if it can: on its own runner; as
    /// the probe of its own runner cooling down, if no task is that probe
    /// yet; else on the first of its fallbacks that takes work now.
    pub fn pick(&mut self, task: &Task) -> Option<Pick> {
        let own = &task.spec.runner;
        if self.usable.contains(own) {
            return Some(Pick { runner: own.clone(), fallback: false, probe: false });
        }
        if self.probing.contains(own) && !self.probes_taken.contains(own) {
            self.probes_taken.push(own.clone());
            return Some(Pick { runner: own.clone(), fallback: false, probe: true });
        }
        let f = task.spec.fallback.iter().find(|f| self.usable.contains(f))?;
        Some(Pick { runner: f.clone(), fallback: true, probe: false })
    }
}

/// The order a claim considers tasks: highest priority first, then oldest,
/// then by id; each task once.
pub fn order(tasks: &mut Vec<Task>) {
    tasks.sort_by(|a, b| {
        (a.spec.priority.rank(), a.created_at, &a.id).cmp(&(b.spec.priority.rank(), b.created_at, &b.id))
    });
    tasks.dedup_by(|a, b| a.id == b.id);
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

    fn r(name: &str) -> RunnerName {
        RunnerName::parse(name).unwrap()
    }

    fn task(n: u128, runner: &str, fallback: &[&str], priority: crate::Priority, created: i64) -> Task {
        let mut spec = crate::TaskSpec::new("p", r(runner), std::time::Duration::from_secs(60), 1);
        spec.fallback = fallback.iter().map(|f| r(f)).collect();
        spec.priority = priority;
        Task::new(crate::TaskId::from_parts(0, n), spec, crate::Millis(created))
    }

    #[test]
    fn a_claim_takes_usable_runners_one_probe_per_cooled_breaker_and_falls_back_from_the_rest() {
        let disabled = vec![Unavailable { runner: r("codex"), why: "codex is limited: 429".into() }];
        let breakers = [(r("codex"), Admit::Probe), (r("claude"), Admit::Probe), (r("gemini"), Admit::No)];
        let offered = [r("shell"), r("claude"), r("codex"), r("gemini")];
        let mut claim = Claim::new(&offered, disabled, &breakers);
        assert_eq!(claim.usable(), [r("shell")]);
        assert_eq!(claim.probing(), [r("claude")], "a disabled runner is no probe");
        let from: Vec<&str> = claim.fall_from().map(RunnerName::as_str).collect();
        assert_eq!(from, ["codex", "claude", "gemini"]);
        assert_eq!(claim.why(&r("codex")), Some("codex is limited: 429"));
        assert_eq!(claim.why(&r("gemini")), Some("runner gemini's circuit is open"));
        assert_eq!(claim.why(&r("shell")), None);

        let normal = crate::Priority::Normal;
        let pick = |claim: &mut Claim, t: &Task| claim.pick(t).map(|p| (p.runner.to_string(), p.fallback, p.probe));
        assert_eq!(pick(&mut claim, &task(1, "shell", &[], normal, 0)), Some(("shell".into(), false, false)));
        assert_eq!(pick(&mut claim, &task(2, "claude", &["shell"], normal, 0)), Some(("claude".into(), false, true)));
        // The probe is taken: the next claude task falls back, or waits without a fallback.
        assert_eq!(pick(&mut claim, &task(3, "claude", &["shell"], normal, 0)), Some(("shell".into(), true, false)));
        assert_eq!(pick(&mut claim, &task(4, "claude", &[], normal, 0)), None);
        assert_eq!(
            pick(&mut claim, &task(5, "codex", &["gemini", "shell"], normal, 0)),
            Some(("shell".into(), true, false))
        );
        assert_eq!(pick(&mut claim, &task(6, "gemini", &["codex"], normal, 0)), None);
    }

    #[test]
    fn an_open_agent_breaker_takes_nothing_and_a_cooled_one_a_single_probe() {
        assert_eq!((Claim::slots(4, Admit::Yes), Claim::slots(4, Admit::Probe), Claim::slots(4, Admit::No)), (4, 1, 0));
        assert_eq!(Claim::slots(0, Admit::Probe), 0);
    }

    #[test]
    fn urgent_old_before_normal_new_and_each_task_once() {
        use crate::Priority::{Low, Normal, Urgent};
        let mut tasks = vec![
            task(1, "s", &[], Low, 1),
            task(3, "s", &[], Normal, 3),
            task(5, "s", &[], Urgent, 5),
            task(2, "s", &[], Normal, 2),
        ];
        tasks.push(tasks[1].clone());
        order(&mut tasks);
        assert_eq!(tasks.len(), 4, "the repeated task is considered once");
        let created: Vec<i64> = tasks.iter().map(|t| t.created_at.0).collect();
        assert_eq!(created, [5, 2, 3, 1]);
    }
}
