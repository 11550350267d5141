//! Settings an operator changes while the hub runs: `GET/PUT /api/v1/config`.
//!
//! The hub starts from what flags, the environment and `muster.toml` say
//! (`HubConfig::live`), then applies what was set through the API before
//! (stored as `config.<key>` settings): a value set at runtime outlives a
//! restart until it is reset. The current values sit in a `watch` channel;
//! the loops and sockets that use them read it each time, or wake when it
//! changes, so a change applies without a restart.
//!
//! Alert rule settings (`alerts.<rule>.<field>`) are part of the same view and
//! the same all-or-nothing change; they keep living where the alert engine
//! reads them (see `alerts.rs`).

use crate::Hub;
use crate::error::ApiError;
use muster_core::{MicroUsd, RunnerName};
use muster_proto::api::{ConfigView, RuleConfigPatch, SettingView};
use muster_proto::{FieldError, parse_duration, setting_duration};
use muster_store::{Retention, StoreError};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

pub(crate) const PREFIX: &str = "config.";

/// The settings that can change while the hub runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Runtime {
    /// How often agents send heartbeats; told to each agent at connect and
    /// again when it changes.
    pub heartbeat_interval: Duration,
    /// How long a running task's lease lasts without renewal.
    pub lease_ttl: Duration,
    /// How long an agent has to accept an assignment.
    pub accept_timeout: Duration,
    /// The runner of tasks that name none; `None` makes the runner required.
    pub default_runner: Option<RunnerName>,
    pub retention: Retention,
    /// How often retention is applied and the file compacted; zero turns the schedule off.
    pub compact_interval: Duration,
    /// How often the hub backs itself up; zero turns the schedule off.
    pub backup_interval: Duration,
    /// Backups kept; older ones are deleted after each new one.
    pub backup_keep: usize,
    /// Failed attempts in a row that open an agent's or a runner's circuit breaker.
    pub breaker_failures: usize,
    /// How long an open breaker waits before letting one task through.
    pub breaker_cooldown: Duration,
    /// What the whole fleet may spend in a UTC day, in millionths of a dollar.
    pub budget_daily: Option<MicroUsd>,
    /// What each runner may spend in a UTC day, in millionths of a dollar.
    pub budget_daily_per_runner: BTreeMap<RunnerName, MicroUsd>,
    /// Runners whose tasks always wait for a person's approval.
    pub approval_runners: std::collections::BTreeSet<RunnerName>,
    /// Token names that may approve tasks and answer agents' permission
    /// prompts; empty: any admin token.
    pub approvers: std::collections::BTreeSet<String>,
    /// API requests a second each token may make; 0 is no limit.
    pub api_rate: usize,
    /// Requests a token may make at once beyond its rate.
    pub api_burst: usize,
    /// Follow-up tasks the runs on one agent may create a minute; 0 is no limit.
    pub followups_per_minute: usize,
    /// Follow-up tasks one task tree (a root and all its descendants) may hold.
    pub followups_per_tree: usize,
}

impl Default for Runtime {
    fn default() -> Runtime {
        let heartbeat = Duration::from_secs(10);
        let day = Duration::from_secs(86_400);
        Runtime {
            heartbeat_interval: heartbeat,
            lease_ttl: heartbeat * 3,
            accept_timeout: Duration::from_secs(60),
            default_runner: RunnerName::parse("claude").ok(),
            retention: Retention { tasks: Some(day * 90), output: Some(day * 30), events: Some(day * 30) },
            compact_interval: day,
            backup_interval: day,
            backup_keep: 7,
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(60),
            budget_daily: None,
            budget_daily_per_runner: BTreeMap::new(),
            approval_runners: std::collections::BTreeSet::new(),
            approvers: std::collections::BTreeSet::new(),
            api_rate: 1000,
            api_burst: 5000,
            followups_per_minute: 60,
            followups_per_tree: 100,
        }
    }
}

impl Runtime {
    /// When circuit breakers open, for the store.
    pub fn breaker_policy(&self) -> muster_core::breaker::Policy {
        muster_core::breaker::Policy {
            failures: self.breaker_failures.min(u32::MAX as usize) as u32,
            cooldown: self.breaker_cooldown,
        }
    }

    /// An agent that misses three heartbeats is offline.
    pub fn offline_after(&self) -> Duration {
        self.heartbeat_interval * 3
    }

    /// Checks what one field cannot: how fields relate. Each field was checked when set.
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.lease_ttl < self.heartbeat_interval * 2 {
            return Err(FieldError {
                field: "lease_ttl".into(),
                reason: format!(
                    "must be at least two heartbeat intervals: lease_ttl is {}, heartbeat_interval {}",
                    setting_duration(self.lease_ttl),
                    setting_duration(self.heartbeat_interval)
                ),
            });
        }
        Ok(())
    }

    /// Sets `key` from its text form, checking the value alone.
    pub fn set(&mut self, key: &str, text: &str) -> Result<(), FieldError> {
        let spec = Key::find(key)?;
        let bad = |reason: String| FieldError { field: key.to_owned(), reason };
        let text = text.trim();
        match spec.kind {
            Kind::Duration { min, max } => {
                let d = parse_duration(spec.name, text)?;
                if d < min || d > max {
                    return Err(bad(format!(
                        "{} is out of range: between {} and {}",
                        setting_duration(d),
                        setting_duration(min),
                        setting_duration(max)
                    )));
                }
                *spec.duration_mut(self) = d;
            }
            Kind::Interval { min } => {
                let d = optional_duration(spec.name, text)?.unwrap_or_default();
                if !d.is_zero() && d < min {
                    return Err(bad(format!("must be at least {}, or off", setting_duration(min))));
                }
                *spec.duration_mut(self) = d;
            }
            Kind::Age => *spec.age_mut(self) = optional_duration(spec.name, text)?,
            Kind::Count { min, max } => {
                let n: usize = text.parse().map_err(|_| bad(format!("{text:?} is not a whole number")))?;
                if n < min || n > max {
                    return Err(bad(format!("{n} is out of range: between {min} and {max}")));
                }
                *spec.count_mut(self) = n;
            }
            Kind::Money => {
                self.budget_daily = match text {
                    "" | "off" | "none" => None,
                    amount => Some(dollars(amount).map_err(bad)?),
                }
            }
            Kind::RunnerMoney => {
                let mut map = BTreeMap::new();
                if !matches!(text, "" | "off" | "none") {
                    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                        let (runner, amount) = part
                            .split_once('=')
                            .ok_or_else(|| bad(format!("{part:?}: write RUNNER=DOLLARS, e.g. claude=20")))?;
                        let runner = RunnerName::parse(runner.trim()).map_err(|e| bad(e.reason))?;
                        map.insert(runner, dollars(amount.trim()).map_err(bad)?);
                    }
                }
                self.budget_daily_per_runner = map;
            }
            Kind::Runners => {
                let mut set = std::collections::BTreeSet::new();
                if !matches!(text, "" | "none" | "off") {
                    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                        set.insert(RunnerName::parse(name).map_err(|e| bad(e.reason))?);
                    }
                }
                self.approval_runners = set;
            }
            Kind::Names => {
                let mut set = std::collections::BTreeSet::new();
                if !matches!(text, "" | "any") {
                    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                        if name.len() > 64 || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                            return Err(bad(format!("{name:?} is not a token name")));
                        }
                        set.insert(name.to_owned());
                    }
                }
                self.approvers = set;
            }
            Kind::Runner => {
                self.default_runner = match text {
                    "" | "none" => None,
                    name => Some(RunnerName::parse(name).map_err(|e| bad(e.reason))?),
                }
            }
        }
        Ok(())
    }

    /// `key`'s value in the form `set` reads back.
    pub fn get(&self, key: &str) -> Result<String, FieldError> {
        let spec = Key::find(key)?;
        let off = |d: Option<Duration>| d.filter(|d| !d.is_zero()).map_or_else(|| "off".to_owned(), setting_duration);
        Ok(match spec.kind {
            Kind::Duration { .. } => setting_duration(*spec.duration(self)),
            Kind::Interval { .. } => off(Some(*spec.duration(self))),
            Kind::Age => off(*spec.age(self)),
            Kind::Count { .. } => spec.count(self).to_string(),
            Kind::Runner => self.default_runner.as_ref().map_or_else(|| "none".to_owned(), |r| r.to_string()),
            Kind::Names if self.approvers.is_empty() => "any".to_owned(),
            Kind::Names => self.approvers.iter().cloned().collect::<Vec<_>>().join(","),
            Kind::Runners if self.approval_runners.is_empty() => "none".to_owned(),
            Kind::Runners => self.approval_runners.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(","),
            Kind::Money => self.budget_daily.map_or_else(|| "off".to_owned(), MicroUsd::decimal),
            Kind::RunnerMoney if self.budget_daily_per_runner.is_empty() => "off".to_owned(),
            Kind::RunnerMoney => self
                .budget_daily_per_runner
                .iter()
                .map(|(r, m)| format!("{r}={}", m.decimal()))
                .collect::<Vec<_>>()
                .join(","),
        })
    }

    fn json(&self, key: &Key) -> Value {
        let text = self.get(key.name).expect("every listed key has a value");
        match key.kind {
            Kind::Count { .. } => Value::from(key.count(self)),
            _ => Value::String(text),
        }
    }
}

/// A number of US dollars above 0.
fn dollars(text: &str) -> Result<MicroUsd, String> {
    MicroUsd::parse(text).ok_or_else(|| format!("{:?} is not an amount of dollars above 0 (or off)", text.trim()))
}

/// `off`, `0` or `none` for no duration, or a duration.
fn optional_duration(field: &'static str, text: &str) -> Result<Option<Duration>, FieldError> {
    match text {
        "off" | "0" | "none" | "never" => Ok(None),
        _ => {
            let d = parse_duration(field, text)?;
            if d < Duration::from_secs(1) {
                return Err(FieldError { field: field.to_owned(), reason: "must be at least 1s, or off".into() });
            }
            Ok(Some(d))
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Duration {
        min: Duration,
        max: Duration,
    },
    /// A schedule's interval; `off` turns it off.
    Interval {
        min: Duration,
    },
    /// A retention age; `off` keeps forever.
    Age,
    Count {
        min: usize,
        max: usize,
    },
    Runner,
    /// Runner names, as `claude,codex`, or `none`.
    Runners,
    /// Token names, as `alice,lead`, or `any`.
    Names,
    /// US dollars, or `off`.
    Money,
    /// `RUNNER=DOLLARS,...`, or `off`.
    RunnerMoney,
}

/// One runtime setting.
struct Key {
    name: &'static str,
    kind: Kind,
    description: &'static str,
}

const DAY: Duration = Duration::from_secs(86_400);

const KEYS: &[Key] = &[
    Key {
        name: "heartbeat_interval",
        kind: Kind::Duration { min: Duration::from_millis(50), max: Duration::from_secs(600) },
        description: "how often agents send heartbeats; an agent silent for three is offline",
    },
    Key {
        name: "lease_ttl",
        kind: Kind::Duration { min: Duration::from_millis(100), max: DAY },
        description: "how long a running task's lease lasts without a heartbeat; at least two heartbeats",
    },
    Key {
        name: "accept_timeout",
        kind: Kind::Duration { min: Duration::from_millis(100), max: DAY },
        description: "how long an agent has to accept an assignment before it goes back to the queue",
    },
    Key {
        name: "default_runner",
        kind: Kind::Runner,
        description: "runner for tasks that name none; none makes --runner required",
    },
    Key {
        name: "retention.tasks",
        kind: Kind::Age,
        description: "finished tasks older than this are deleted with their attempts and output; off keeps them",
    },
    Key {
        name: "retention.output",
        kind: Kind::Age,
        description: "output of finished tasks older than this is deleted; the tasks stay; off keeps it",
    },
    Key {
        name: "retention.events",
        kind: Kind::Age,
        description: "timeline events older than this are deleted; off keeps them",
    },
    Key {
        name: "compact_interval",
        kind: Kind::Interval { min: Duration::from_secs(1) },
        description: "how often retention is applied and the database compacted; off turns the schedule off",
    },
    Key {
        name: "backup_interval",
        // Each backup is a full copy of the database.
        kind: Kind::Interval { min: Duration::from_secs(60) },
        description: "how often the hub backs itself up; off turns the schedule off",
    },
    Key {
        name: "backup_keep",
        kind: Kind::Count { min: 1, max: 1000 },
        description: "backups kept; older ones are deleted after each new one",
    },
    Key {
        name: "breaker.failures",
        kind: Kind::Count { min: 1, max: 1000 },
        description: "failed attempts in a row that open an agent's or a runner's circuit breaker",
    },
    Key {
        name: "approval.runners",
        kind: Kind::Runners,
        description: "runners whose tasks always wait for a person's approval (muster approve), as claude,codex; none",
    },
    Key {
        name: "approval.approvers",
        kind: Kind::Names,
        description: "token names that may approve tasks and answer agents' permission prompts, as alice,lead; any",
    },
    Key {
        name: "budget.daily",
        kind: Kind::Money,
        description: "US dollars the fleet may spend in a UTC day; past it every runner rests until midnight; off",
    },
    Key {
        name: "budget.daily_per_runner",
        kind: Kind::RunnerMoney,
        description: "US dollars each runner may spend in a UTC day, as claude=20,codex=10; past it that runner rests",
    },
    Key {
        name: "limits.api_rate",
        kind: Kind::Count { min: 0, max: 1_000_000 },
        description: "API requests a second each token (or agent, or run) may make; past it, 429; 0 is no limit",
    },
    Key {
        name: "limits.api_burst",
        kind: Kind::Count { min: 1, max: 1_000_000 },
        description: "API requests a token may make at once before limits.api_rate applies",
    },
    Key {
        name: "limits.followups_per_minute",
        kind: Kind::Count { min: 0, max: 1_000_000 },
        description: "follow-up tasks the runs on one agent may create a minute; past it, 429; 0 is no limit",
    },
    Key {
        name: "limits.followups_per_tree",
        kind: Kind::Count { min: 1, max: 1_000_000 },
        description: "follow-up tasks one task and all its descendants may hold; past it a run's follow-up is refused",
    },
    Key {
        name: "breaker.cooldown",
        kind: Kind::Duration { min: Duration::from_millis(100), max: DAY },
        description: "how long an open circuit breaker waits before letting one task through",
    },
];

impl Key {
    fn find(name: &str) -> Result<&'static Key, FieldError> {
        KEYS.iter().find(|k| k.name == name).ok_or_else(|| FieldError {
            field: name.to_owned(),
            reason: format!(
                "is not a setting; settings are {}, and alerts.<rule>.enabled, .severity and .threshold",
                KEYS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
            ),
        })
    }

    fn duration<'a>(&self, r: &'a Runtime) -> &'a Duration {
        match self.name {
            "heartbeat_interval" => &r.heartbeat_interval,
            "lease_ttl" => &r.lease_ttl,
            "accept_timeout" => &r.accept_timeout,
            "compact_interval" => &r.compact_interval,
            "backup_interval" => &r.backup_interval,
            "breaker.cooldown" => &r.breaker_cooldown,
            other => unreachable!("{other} is not a duration"),
        }
    }

    fn count(&self, r: &Runtime) -> usize {
        match self.name {
            "backup_keep" => r.backup_keep,
            "breaker.failures" => r.breaker_failures,
            "limits.api_rate" => r.api_rate,
            "limits.api_burst" => r.api_burst,
            "limits.followups_per_minute" => r.followups_per_minute,
            "limits.followups_per_tree" => r.followups_per_tree,
            other => unreachable!("{other} is not a count"),
        }
    }

    fn count_mut<'a>(&self, r: &'a mut Runtime) -> &'a mut usize {
        match self.name {
            "backup_keep" => &mut r.backup_keep,
            "breaker.failures" => &mut r.breaker_failures,
            "limits.api_rate" => &mut r.api_rate,
            "limits.api_burst" => &mut r.api_burst,
            "limits.followups_per_minute" => &mut r.followups_per_minute,
            "limits.followups_per_tree" => &mut r.followups_per_tree,
            other => unreachable!("{other} is not a count"),
        }
    }

    fn duration_mut<'a>(&self, r: &'a mut Runtime) -> &'a mut Duration {
        match self.name {
            "heartbeat_interval" => &mut r.heartbeat_interval,
            "lease_ttl" => &mut r.lease_ttl,
            "accept_timeout" => &mut r.accept_timeout,
            "compact_interval" => &mut r.compact_interval,
            "backup_interval" => &mut r.backup_interval,
            "breaker.cooldown" => &mut r.breaker_cooldown,
            other => unreachable!("{other} is not a duration"),
        }
    }

    fn age<'a>(&self, r: &'a Runtime) -> &'a Option<Duration> {
        match self.name {
            "retention.tasks" => &r.retention.tasks,
            "retention.output" => &r.retention.output,
            "retention.events" => &r.retention.events,
            other => unreachable!("{other} is not a retention age"),
        }
    }

    fn age_mut<'a>(&self, r: &'a mut Runtime) -> &'a mut Option<Duration> {
        match self.name {
            "retention.tasks" => &mut r.retention.tasks,
            "retention.output" => &mut r.retention.output,
            "retention.events" => &mut r.retention.events,
            other => unreachable!("{other} is not a retention age"),
        }
    }
}

/// A JSON value as the text `Runtime::set` reads.
fn text_of(key: &str, value: &Value) -> Result<String, FieldError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(FieldError { field: key.to_owned(), reason: "must be a string, a number or null (reset)".into() }),
    }
}

/// The startup values overlaid with what was set at runtime before. Each
/// stored value is applied only if the result still fits (`fits`); one that
/// does not, or that this build cannot read, is skipped with a warning and
/// the others still apply. Values that only fit together (a longer heartbeat
/// with a longer lease) are applied in further passes.
pub(crate) fn overlay(
    startup: &Runtime,
    stored: &[(String, String)],
    fits: impl Fn(&Runtime) -> Result<(), FieldError>,
) -> Runtime {
    overlay_and_tell(startup, stored, fits, true)
}

/// `overlay`, saying what it skipped and what overrides the startup value
/// only when `tell` (a hub following the others' changes says it once).
pub(crate) fn overlay_and_tell(
    startup: &Runtime,
    stored: &[(String, String)],
    fits: impl Fn(&Runtime) -> Result<(), FieldError>,
    tell: bool,
) -> Runtime {
    let mut live = startup.clone();
    let mut left: Vec<(&str, &str)> =
        stored.iter().filter_map(|(k, v)| Some((k.strip_prefix(PREFIX)?, v.as_str()))).collect();
    loop {
        let mut refused = Vec::new();
        let before = left.len();
        for (name, text) in left {
            let mut next = live.clone();
            match next.set(name, text).and_then(|()| fits(&next)) {
                Ok(()) => live = next,
                Err(e) => refused.push((name, text, e)),
            }
        }
        if refused.is_empty() || refused.len() == before {
            for (name, text, e) in refused.into_iter().filter(|_| tell) {
                tracing::warn!(setting = name, value = text, error = %e, "ignoring a value set at runtime; the startup value applies");
            }
            break;
        }
        left = refused.into_iter().map(|(name, text, _)| (name, text)).collect();
    }
    for (name, text) in stored.iter().filter(|_| tell).filter_map(|(k, v)| Some((k.strip_prefix(PREFIX)?, v))) {
        if live.get(name).ok().as_deref() == Some(text) && startup.get(name).ok().as_deref() != Some(text) {
            tracing::warn!(
                setting = name,
                value = %text,
                startup = %startup.get(name).unwrap_or_default(),
                "a value set at runtime overrides the startup setting (muster config reset {name} returns to it)"
            );
        }
    }
    live
}

impl Hub {
    /// The settings in force now.
    pub fn runtime(&self) -> Runtime {
        self.shared.runtime.borrow().clone()
    }

    /// Every runtime setting with its value, its startup value and whether it was set at runtime.
    pub(crate) async fn config_view(&self) -> Result<ConfigView, StoreError> {
        let live = self.runtime();
        let startup = &self.config().live;
        let stored = self.shared.store.settings(PREFIX).await?;
        let mut settings: Vec<SettingView> = KEYS
            .iter()
            .map(|k| SettingView {
                key: k.name.to_owned(),
                value: live.json(k),
                startup: startup.json(k),
                // Set at runtime and in force: a stored value that did not fit at start is not.
                runtime: stored
                    .iter()
                    .any(|(s, v)| s.strip_prefix(PREFIX) == Some(k.name) && live.get(k.name).ok().as_ref() == Some(v)),
                description: k.description.to_owned(),
            })
            .collect();
        let stored_alerts: Vec<String> =
            self.shared.store.settings(crate::alerts::PREFIX).await?.into_iter().map(|(k, _)| k).collect();
        for (rule, cfg) in self.rule_configs().await? {
            let default = rule.default_config();
            let fields: [(&str, Value, Value, String); 3] = [
                ("enabled", cfg.enabled.into(), default.enabled.into(), "whether the rule is evaluated".into()),
                (
                    "severity",
                    cfg.severity.as_str().into(),
                    default.severity.as_str().into(),
                    "warning or critical".into(),
                ),
                ("threshold", cfg.threshold.into(), default.threshold.into(), rule.threshold_meaning().to_owned()),
            ];
            for (field, value, startup, description) in fields {
                let key = format!("{}{}.{field}", crate::alerts::PREFIX, rule.as_str());
                settings.push(SettingView { runtime: stored_alerts.contains(&key), key, value, startup, description });
            }
        }
        Ok(ConfigView { settings })
    }

    /// Validates and applies a change to any runtime settings, all or nothing:
    /// stored (with one `config.changed` event), then in force at once. A
    /// `null` value resets a setting to its startup value.
    pub(crate) async fn update_config(&self, patch: BTreeMap<String, Value>, by: &str) -> Result<(), ApiError> {
        let bad = |e: FieldError| ApiError::BadRequest(e);
        if patch.is_empty() {
            return Err(bad(FieldError { field: String::new(), reason: "nothing to change".into() }));
        }
        // One change at a time: each starts from what the last one left.
        let _one = self.shared.changing_config.lock().await;
        let before = self.runtime();
        let startup = &self.config().live;
        let mut next = before.clone();
        let mut pairs: Vec<(String, Option<String>)> = Vec::new();
        let mut alerts: BTreeMap<String, RuleConfigPatch> = BTreeMap::new();
        for (key, value) in &patch {
            if let Some(rest) = key.strip_prefix(crate::alerts::PREFIX) {
                let (rule, field) = rest.split_once('.').ok_or_else(|| {
                    bad(FieldError { field: key.clone(), reason: "write alerts.<rule>.<field>".into() })
                })?;
                if value.is_null() {
                    crate::alerts::check_field(key, rule, field).map_err(bad)?;
                    pairs.push((key.clone(), None));
                    continue;
                }
                let entry = alerts.entry(rule.to_owned()).or_default();
                let wrong = |what: &str| bad(FieldError { field: key.clone(), reason: format!("must be {what}") });
                match field {
                    "enabled" => {
                        let b = value.as_bool().or_else(|| value.as_str().and_then(|s| s.parse().ok()));
                        entry.enabled = Some(b.ok_or_else(|| wrong("true or false"))?)
                    }
                    "severity" => entry.severity = Some(value.as_str().ok_or_else(|| wrong("a string"))?.to_owned()),
                    "threshold" => {
                        let n = value.as_f64().or_else(|| value.as_str().and_then(|s| s.trim().parse().ok()));
                        entry.threshold = Some(n.ok_or_else(|| wrong("a number"))?)
                    }
                    _ => {
                        return Err(bad(FieldError {
                            field: key.clone(),
                            reason: "alert rules have enabled, severity and threshold".into(),
                        }));
                    }
                }
                continue;
            }
            let spec = Key::find(key).map_err(bad)?;
            if value.is_null() {
                next.set(spec.name, &startup.get(spec.name).map_err(bad)?).map_err(bad)?;
                pairs.push((format!("{PREFIX}{key}"), None));
            } else {
                next.set(spec.name, &text_of(key, value).map_err(bad)?).map_err(bad)?;
                pairs.push((format!("{PREFIX}{key}"), Some(next.get(spec.name).map_err(bad)?)));
            }
        }
        self.config().fits(&next).map_err(bad)?;
        if next.default_runner != before.default_runner
            && next.default_runner != startup.default_runner
            && let Some(runner) = &next.default_runner
        {
            let known = self.shared.known_runners.lock().expect("known runners lock poisoned").contains(runner);
            if !known {
                return Err(bad(FieldError {
                    field: "default_runner".into(),
                    reason: format!("no agent offers runner {runner:?} and it is not configured"),
                }));
            }
        }
        pairs.extend(self.alert_pairs(&alerts)?.into_iter().map(|(k, v)| (k, Some(v))));
        self.shared.store.put_settings(pairs, by, self.now()).await?;
        tracing::info!(by, changed = ?patch.keys().collect::<Vec<_>>(), "runtime settings changed");
        Ok(self.apply_runtime(&before, next).await?)
    }

    /// Puts `next` in force in place of `before`: on this hub's breakers,
    /// roster, budgets and connected agents.
    pub(crate) async fn apply_runtime(&self, before: &Runtime, next: Runtime) -> Result<(), StoreError> {
        self.shared.store.set_breaker_policy(next.breaker_policy());
        self.shared.runtime.send_replace(next.clone());
        self.publish_roster();
        if (&next.budget_daily, &next.budget_daily_per_runner)
            != (&before.budget_daily, &before.budget_daily_per_runner)
        {
            self.enforce_budgets().await?;
        }
        if (next.heartbeat_interval, next.lease_ttl) != (before.heartbeat_interval, before.lease_ttl) {
            self.broadcast_timings(&next);
        }
        self.wake_dispatcher();
        Ok(())
    }

    /// Tells every connected agent the heartbeat interval and lease in force.
    fn broadcast_timings(&self, live: &Runtime) {
        let msg = muster_proto::ws::HubMsg::Settings {
            heartbeat_ms: live.heartbeat_interval.as_millis() as u64,
            lease_ttl_ms: live.lease_ttl.as_millis() as u64,
        };
        let sessions = self.shared.sessions.lock().expect("sessions lock poisoned");
        for session in sessions.values() {
            let _ = session.tx.unbounded_send(crate::Outbound::Msg(Box::new(msg.clone())));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_reads_back_what_it_was_set_to() {
        let mut r = Runtime::default();
        for (key, text, shown) in [
            ("heartbeat_interval", "5s", "5s"),
            ("lease_ttl", "1m 30s", "1m30s"),
            ("accept_timeout", "90", "1m30s"),
            ("default_runner", "shell", "shell"),
            ("default_runner", "none", "none"),
            ("retention.tasks", "7d", "7d"),
            ("retention.tasks", "3months", "91d7h40m48s"),
            ("retention.output", "off", "off"),
            ("retention.events", "12h", "12h"),
            ("compact_interval", "0", "off"),
            ("backup_interval", "6h", "6h"),
            ("backup_interval", "off", "off"),
            ("backup_keep", "3", "3"),
        ] {
            r.set(key, text).unwrap_or_else(|e| panic!("{key}={text}: {e}"));
            assert_eq!(r.get(key).unwrap(), shown, "{key}={text}");
            let mut again = r.clone();
            again.set(key, shown).unwrap();
            assert_eq!(again, r, "{key}: the shown form reads back the same");
        }
    }

    #[test]
    fn bad_values_name_the_setting_and_why() {
        let mut r = Runtime::default();
        for (key, text, says) in [
            ("heartbeat_interval", "soon", "not a duration"),
            ("heartbeat_interval", "1h", "out of range"),
            ("backup_keep", "0", "out of range"),
            ("backup_keep", "many", "not a whole number"),
            ("retention.tasks", "10ms", "at least 1s"),
            ("backup_interval", "5s", "at least 1m"),
            ("default_runner", "Bad Name!", ""),
            ("heartbeat", "5s", "not a setting"),
        ] {
            let e = r.set(key, text).expect_err(&format!("{key}={text} must be refused"));
            assert_eq!(e.field, key);
            assert!(e.reason.contains(says), "{key}={text}: {}", e.reason);
        }
        assert_eq!(r, Runtime::default(), "a refused value changes nothing");
        r.set("heartbeat_interval", "20s").unwrap();
        let e = r.validate().expect_err("a lease shorter than two heartbeats");
        assert_eq!(e.field, "lease_ttl");
    }

    #[test]
    fn stored_values_override_the_startup_ones_unless_they_do_not_fit() {
        let startup = Runtime::default();
        let stored = vec![
            ("config.accept_timeout".to_owned(), "5s".to_owned()),
            ("config.retention.tasks".to_owned(), "off".to_owned()),
            ("config.unknown".to_owned(), "1".to_owned()),
        ];
        let live = overlay(&startup, &stored, Runtime::validate);
        assert_eq!(live.accept_timeout, Duration::from_secs(5));
        assert_eq!(live.retention.tasks, None);
        assert_eq!(live.heartbeat_interval, startup.heartbeat_interval);
        let clash = vec![
            ("config.heartbeat_interval".to_owned(), "1m".to_owned()),
            ("config.retention.tasks".to_owned(), "off".to_owned()),
        ];
        let live = overlay(&startup, &clash, Runtime::validate);
        assert_eq!(live.heartbeat_interval, startup.heartbeat_interval, "a heartbeat longer than half the lease");
        assert_eq!(live.retention.tasks, None, "what fits still applies");
        let pair = vec![
            ("config.heartbeat_interval".to_owned(), "20s".to_owned()),
            ("config.lease_ttl".to_owned(), "1m".to_owned()),
        ];
        let live = overlay(&startup, &pair, Runtime::validate);
        assert_eq!((live.heartbeat_interval, live.lease_ttl), (Duration::from_secs(20), Duration::from_secs(60)));
    }
}
