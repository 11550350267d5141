//! Alert rules: when each one's condition holds, and how an alert moves
//! between resolved, firing and acknowledged.
//!
//! The hub gathers an `Observation` on a schedule; `check` says whether a
//! rule's condition holds and why; `step` turns that into a state change.

use crate::Invalid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    QueueGrowing,
    QueueWait,
    HighFailureRate,
    StuckTasks,
    NoAgentsOnline,
    HighErrorRate,
    BackupStale,
    DiskLow,
    CircuitOpen,
    BudgetReached,
    Deadlock,
}

impl Rule {
    pub const ALL: [Rule; 11] = [
        Rule::QueueGrowing,
        Rule::QueueWait,
        Rule::HighFailureRate,
        Rule::StuckTasks,
        Rule::NoAgentsOnline,
        Rule::HighErrorRate,
        Rule::BackupStale,
        Rule::DiskLow,
        Rule::CircuitOpen,
        Rule::BudgetReached,
        Rule::Deadlock,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rule::QueueGrowing => "queue_growing",
            Rule::QueueWait => "queue_wait",
            Rule::HighFailureRate => "high_failure_rate",
            Rule::StuckTasks => "stuck_tasks",
            Rule::NoAgentsOnline => "no_agents_online",
            Rule::HighErrorRate => "high_error_rate",
            Rule::BackupStale => "backup_stale",
            Rule::DiskLow => "disk_low",
            Rule::CircuitOpen => "circuit_open",
            Rule::BudgetReached => "budget_reached",
            Rule::Deadlock => "deadlock",
        }
    }

    pub fn parse(s: &str) -> Result<Rule, Invalid> {
        Rule::ALL.into_iter().find(|r| r.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = Rule::ALL.iter().map(|r| r.as_str()).collect();
            Invalid::new("rule", format!("unknown alert rule {s:?}; rules are {}", names.join(", ")))
        })
    }

    /// What the threshold means, for people.
    pub fn threshold_meaning(self) -> &'static str {
        match self {
            Rule::QueueGrowing => "evaluations in a row the queue grew",
            Rule::QueueWait => "seconds the oldest due task may wait in the queue",
            Rule::HighFailureRate => "share of runs failing in the last hour (0 to 1)",
            Rule::StuckTasks => "seconds a running task may go without output",
            Rule::NoAgentsOnline => {
                "unused (fires when no agent is connected while work waits or agents that connected before are registered)"
            }
            Rule::HighErrorRate => "failed runs in the last hour",
            Rule::BackupStale => "seconds since the newest backup",
            Rule::DiskLow => "share of the data disk that must stay free (0 to 1)",
            Rule::CircuitOpen => "unused (fires while an agent's or a runner's circuit breaker is open)",
            Rule::BudgetReached => "unused (fires while a runner rests for its daily budget)",
            Rule::Deadlock => "seconds it keeps firing after a lock acquire was refused as a deadlock",
        }
    }

    /// What an operator does first when it fires.
    pub fn next_step(self) -> &'static str {
        match self {
            Rule::QueueGrowing | Rule::QueueWait => {
                "muster agent list: agents offline, paused, or missing the runner or capability the queue needs? add agents or slots"
            }
            Rule::HighFailureRate | Rule::HighErrorRate => {
                "muster task list --state failed, then muster task show ID and muster task logs ID: look for a shared reason"
            }
            Rule::StuckTasks => {
                "muster task logs ID --follow on the running tasks; muster task cancel ID if one is truly stuck"
            }
            Rule::NoAgentsOnline => "muster agent list, then check each agent's service and log on its machine",
            Rule::BackupStale => "muster backup; look for backup.failed in muster events",
            Rule::DiskLow => "free space on the data disk; move backup_dir to another disk",
            Rule::CircuitOpen => {
                "muster breakers, then muster task explain ID on the failed tasks; once fixed, muster breaker reset NAME"
            }
            Rule::Deadlock => {
                "muster deadlocks and muster locks: which tasks take the same locks in opposite orders? make them take locks in one order, or muster unlock NAME"
            }
            Rule::BudgetReached => {
                "muster costs --by runner --since 24h; raise it with muster config set budget.daily=... or budget.daily_per_runner=RUNNER=..., or let it rest until midnight UTC"
            }
        }
    }

    pub fn default_config(self) -> RuleConfig {
        let (severity, threshold) = match self {
            Rule::QueueGrowing => (Severity::Warning, 5.0),
            Rule::QueueWait => (Severity::Warning, 600.0),
            Rule::HighFailureRate => (Severity::Critical, 0.5),
            Rule::StuckTasks => (Severity::Warning, 1800.0),
            Rule::NoAgentsOnline => (Severity::Critical, 0.0),
            Rule::HighErrorRate => (Severity::Warning, 10.0),
            Rule::BackupStale => (Severity::Warning, 2.0 * 86400.0),
            Rule::DiskLow => (Severity::Critical, 0.05),
            Rule::CircuitOpen => (Severity::Warning, 0.0),
            Rule::BudgetReached => (Severity::Warning, 0.0),
            Rule::Deadlock => (Severity::Warning, 900.0),
        };
        RuleConfig { enabled: true, severity, threshold }
    }

    /// Checks a threshold a person asked for.
    pub fn validate_threshold(self, t: f64) -> Result<(), Invalid> {
        let fraction = matches!(self, Rule::HighFailureRate | Rule::DiskLow);
        if !t.is_finite() || t < 0.0 || (fraction && t > 1.0) {
            let range = if fraction { "between 0 and 1" } else { "zero or more" };
            return Err(Invalid::new("threshold", format!("{}: must be {range}, got {t}", self.as_str())));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Result<Severity, Invalid> {
        match s {
            "warning" => Ok(Severity::Warning),
            "critical" => Ok(Severity::Critical),
            _ => Err(Invalid::new("severity", format!("unknown severity {s:?}; expected warning or critical"))),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RuleConfig {
    pub enabled: bool,
    pub severity: Severity,
    pub threshold: f64,
}

/// What the hub saw at one evaluation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observation {
    /// Evaluations in a row at which the queue was deeper than at the one before.
    pub queue_rises: u32,
    pub queued: u64,
    /// Seconds the oldest queued task has been due; `None` when none is due.
    pub oldest_wait_secs: Option<f64>,
    /// Runs that ended in the last hour.
    pub succeeded: u64,
    pub failed: u64,
    /// Running tasks with no output for longer than the stuck threshold.
    pub stuck: u64,
    /// Registered agents that have connected at least once.
    pub agents_registered: u64,
    pub agents_online: u64,
    /// Seconds since the newest backup; `None` when there is none.
    pub backup_age_secs: Option<f64>,
    /// The database is backed up by its own tools (PostgreSQL), not by Muster.
    pub backups_elsewhere: bool,
    pub uptime_secs: f64,
    /// Share of the data disk free; `None` when unknown.
    pub disk_free: Option<f64>,
    /// Circuit breakers open or half-open, as `runner claude`, `agent w1`.
    pub open_circuits: Vec<String>,
    /// Runners resting for their daily budget, with why.
    pub over_budget: Vec<String>,
    /// The latest lock acquire refused as a deadlock: seconds ago, and the cycle.
    pub deadlock: Option<(f64, String)>,
}

/// Whether `rule`'s condition holds, and why (as `describe` says it).
pub fn check(rule: Rule, cfg: &RuleConfig, o: &Observation) -> Option<String> {
    (cfg.enabled && holds(rule, cfg.threshold, o)).then(|| describe(rule, cfg, o))
}

fn holds(rule: Rule, t: f64, o: &Observation) -> bool {
    match rule {
        Rule::QueueGrowing => f64::from(o.queue_rises) >= t.max(1.0),
        Rule::QueueWait => o.oldest_wait_secs.is_some_and(|w| w > t),
        Rule::HighFailureRate => {
            let finished = o.succeeded + o.failed;
            // A rate over one or two runs says little.
            finished >= 4 && o.failed as f64 / finished as f64 >= t
        }
        Rule::StuckTasks => o.stuck > 0,
        Rule::NoAgentsOnline => o.agents_online == 0 && (o.agents_registered > 0 || o.queued > 0),
        Rule::HighErrorRate => (o.failed as f64) >= t.max(1.0),
        Rule::BackupStale if o.backups_elsewhere => false,
        Rule::BackupStale => match o.backup_age_secs {
            Some(age) => age > t,
            None => o.uptime_secs > t,
        },
        Rule::BudgetReached => !o.over_budget.is_empty(),
        Rule::Deadlock => o.deadlock.as_ref().is_some_and(|(age, _)| *age <= t),
        Rule::CircuitOpen => !o.open_circuits.is_empty(),
        Rule::DiskLow => o.disk_free.is_some_and(|free| free < t),
    }
}

/// What `rule` watches, as it stands in `o`, whether or not the condition
/// holds: the detail of a firing alert is refreshed with it at every
/// evaluation, and a resolved one says where things stand.
pub fn describe(rule: Rule, cfg: &RuleConfig, o: &Observation) -> String {
    let t = cfg.threshold;
    match rule {
        Rule::QueueGrowing => {
            format!("the queue grew {} evaluations in a row; {} tasks queued", o.queue_rises, o.queued)
        }
        Rule::QueueWait => match o.oldest_wait_secs {
            Some(w) => format!(
                "the oldest due task has waited {w:.0} s in the queue (threshold {t:.0} s); {} tasks queued",
                o.queued
            ),
            None => format!("no task waits in the queue; {} tasks queued", o.queued),
        },
        Rule::HighFailureRate => {
            let finished = o.succeeded + o.failed;
            let rate = if finished > 0 { o.failed as f64 / finished as f64 } else { 0.0 };
            format!("{:.0}% of runs failed in the last hour ({} of {finished})", rate * 100.0, o.failed)
        }
        Rule::StuckTasks => format!("{} running tasks have printed nothing for over {t:.0} s", o.stuck),
        Rule::NoAgentsOnline if o.agents_online == 0 => {
            format!("no agent is connected ({} registered, {} tasks queued)", o.agents_registered, o.queued)
        }
        Rule::NoAgentsOnline => format!(
            "{} agents connected ({} registered, {} tasks queued)",
            o.agents_online, o.agents_registered, o.queued
        ),
        Rule::HighErrorRate => format!("{} runs failed in the last hour (threshold {t:.0})", o.failed),
        Rule::BackupStale if o.backups_elsewhere => {
            "the database is PostgreSQL, backed up by its own tools (pg_dump, base backups)".to_owned()
        }
        Rule::BackupStale => match o.backup_age_secs {
            Some(age) => format!("the newest backup is {age:.0} s old (threshold {t:.0} s)"),
            None => format!("no backup in {:.0} s of running", o.uptime_secs),
        },
        Rule::BudgetReached if o.over_budget.is_empty() => "no runner rests for its daily budget".to_owned(),
        Rule::BudgetReached => {
            format!("{} runners rest until midnight UTC: {}", o.over_budget.len(), o.over_budget.join("; "))
        }
        Rule::Deadlock => match &o.deadlock {
            Some((age, cycle)) => format!("a lock acquire was refused as a deadlock {age:.0} s ago: {cycle}"),
            None => "no lock acquire has been refused as a deadlock".to_owned(),
        },
        Rule::CircuitOpen if o.open_circuits.is_empty() => "no circuit breaker is open".to_owned(),
        Rule::CircuitOpen => {
            format!("{} circuit breakers open: {}", o.open_circuits.len(), o.open_circuits.join(", "))
        }
        Rule::DiskLow => match o.disk_free {
            Some(free) => format!("{:.1}% of the data disk is free (threshold {:.1}%)", free * 100.0, t * 100.0),
            None => "the data disk's free space is unknown".to_owned(),
        },
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertState {
    Resolved,
    Firing,
    Acknowledged,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Resolved => "resolved",
            AlertState::Firing => "firing",
            AlertState::Acknowledged => "acknowledged",
        }
    }

    pub fn parse(s: &str) -> Result<AlertState, Invalid> {
        match s {
            "resolved" => Ok(AlertState::Resolved),
            "firing" => Ok(AlertState::Firing),
            "acknowledged" => Ok(AlertState::Acknowledged),
            _ => Err(Invalid::new("state", format!("unknown alert state {s:?}"))),
        }
    }

    /// Whether someone should be looking at it.
    pub fn is_active(self) -> bool {
        self != AlertState::Resolved
    }
}

/// A change worth putting on the timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Fired,
    Resolved,
}

/// The next state given whether the condition holds now. An acknowledged
/// alert stays acknowledged while its condition holds.
pub fn step(state: AlertState, holds: bool) -> (AlertState, Option<Change>) {
    match (state, holds) {
        (AlertState::Resolved, true) => (AlertState::Firing, Some(Change::Fired)),
        (AlertState::Firing | AlertState::Acknowledged, false) => (AlertState::Resolved, Some(Change::Resolved)),
        (s, _) => (s, None),
    }
}

/// A person takes the alert on: only a firing alert can be acknowledged.
pub fn acknowledge(state: AlertState) -> Result<AlertState, Invalid> {
    match state {
        AlertState::Firing => Ok(AlertState::Acknowledged),
        AlertState::Acknowledged => Err(Invalid::new("state", "the alert is already acknowledged")),
        AlertState::Resolved => Err(Invalid::new("state", "the alert is not firing")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holds(rule: Rule, o: &Observation) -> bool {
        check(rule, &rule.default_config(), o).is_some()
    }

    #[test]
    fn the_detail_says_where_things_stand_whether_or_not_the_rule_holds() {
        let cfg = Rule::HighFailureRate.default_config();
        let bad = Observation { succeeded: 0, failed: 5, ..Observation::default() };
        assert_eq!(
            check(Rule::HighFailureRate, &cfg, &bad).as_deref(),
            Some("100% of runs failed in the last hour (5 of 5)")
        );
        let better = Observation { succeeded: 15, failed: 5, ..Observation::default() };
        assert_eq!(check(Rule::HighFailureRate, &cfg, &better), None);
        assert_eq!(describe(Rule::HighFailureRate, &cfg, &better), "25% of runs failed in the last hour (5 of 20)");
        let wait = Rule::QueueWait.default_config();
        assert_eq!(
            describe(Rule::QueueWait, &wait, &Observation { queued: 3, ..Observation::default() }),
            "no task waits in the queue; 3 tasks queued"
        );
    }

    #[test]
    fn each_rule_fires_on_its_condition_only() {
        let calm = Observation {
            agents_registered: 2,
            agents_online: 2,
            succeeded: 50,
            backup_age_secs: Some(3600.0),
            uptime_secs: 7200.0,
            disk_free: Some(0.5),
            ..Observation::default()
        };
        for rule in Rule::ALL {
            assert!(!holds(rule, &calm), "{} fires on a calm hub", rule.as_str());
        }
        let cases = [
            (Rule::QueueGrowing, Observation { queue_rises: 5, queued: 40, ..calm.clone() }),
            (Rule::QueueWait, Observation { oldest_wait_secs: Some(601.0), queued: 2000, ..calm.clone() }),
            (Rule::HighFailureRate, Observation { succeeded: 4, failed: 4, ..calm.clone() }),
            (Rule::StuckTasks, Observation { stuck: 1, ..calm.clone() }),
            (Rule::NoAgentsOnline, Observation { agents_online: 0, ..calm.clone() }),
            (Rule::HighErrorRate, Observation { failed: 10, ..calm.clone() }),
            (Rule::BackupStale, Observation { backup_age_secs: Some(3.0 * 86400.0), ..calm.clone() }),
            (Rule::DiskLow, Observation { disk_free: Some(0.01), ..calm.clone() }),
            (Rule::Deadlock, Observation { deadlock: Some((60.0, "t1 waits for a".into())), ..calm.clone() }),
        ];
        for (rule, o) in cases {
            assert!(holds(rule, &o), "{} does not fire", rule.as_str());
        }
        // A fresh hub with nothing registered and nothing queued is not an emergency.
        assert!(!holds(Rule::NoAgentsOnline, &Observation::default()));
        // A deadlock long past its threshold is history, not an alert.
        assert!(!holds(
            Rule::Deadlock,
            &Observation { deadlock: Some((901.0, "t1 waits for a".into())), ..calm.clone() }
        ));
        // Too few runs for a rate.
        assert!(!holds(Rule::HighFailureRate, &Observation { failed: 3, ..calm.clone() }));
        // A deep queue whose oldest task has not waited long is busy, not stuck.
        assert!(!holds(Rule::QueueWait, &Observation { oldest_wait_secs: Some(30.0), queued: 2000, ..calm.clone() }));
        let off = RuleConfig { enabled: false, ..Rule::StuckTasks.default_config() };
        assert_eq!(check(Rule::StuckTasks, &off, &Observation { stuck: 3, ..calm }), None);
    }

    #[test]
    fn alerts_fire_get_acknowledged_and_resolve() {
        let (s, c) = step(AlertState::Resolved, true);
        assert_eq!((s, c), (AlertState::Firing, Some(Change::Fired)));
        assert_eq!(step(s, true), (AlertState::Firing, None));
        let s = acknowledge(s).unwrap();
        assert_eq!(step(s, true), (AlertState::Acknowledged, None));
        assert!(acknowledge(s).is_err());
        assert_eq!(step(s, false), (AlertState::Resolved, Some(Change::Resolved)));
        assert!(acknowledge(AlertState::Resolved).is_err());
    }

    #[test]
    fn thresholds_are_checked() {
        assert!(Rule::DiskLow.validate_threshold(1.5).is_err());
        assert!(Rule::QueueGrowing.validate_threshold(-1.0).is_err());
        assert!(Rule::QueueGrowing.validate_threshold(f64::NAN).is_err());
        assert!(Rule::StuckTasks.validate_threshold(600.0).is_ok());
        assert!(Rule::parse("queue_growing").is_ok());
        assert_eq!(Rule::parse("nope").unwrap_err().field, "rule");
    }
}
