//! The alert engine: gathers an observation on a schedule, checks every
//! rule against its settings (read from the store each time, so a change
//! applies at the next evaluation), and records every firing, resolution
//! and acknowledgement on the timeline.

use crate::Hub;
use crate::error::ApiError;
use muster_core::alert::{self, AlertState, Change, Observation, Rule, RuleConfig, Severity};
use muster_core::{Millis, TaskState};
use muster_proto::api::{AlertView, RuleConfigPatch, RuleConfigView};
use muster_proto::{FieldError, timestamp};
use muster_store::{AlertRecord, StoreError};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

pub(crate) const PREFIX: &str = "alerts.";

/// How the queue moved between evaluations.
#[derive(Default)]
pub struct QueueTrend {
    last: Option<u64>,
    rises: u32,
}

impl QueueTrend {
    fn observe(&mut self, depth: u64) -> u32 {
        self.rises = match self.last {
            Some(last) if depth > last => self.rises + 1,
            _ => 0,
        };
        self.last = Some(depth);
        self.rises
    }
}

/// Share of the filesystem holding `path` that is free to unprivileged users.
pub(crate) fn disk_free(path: &Path) -> Option<f64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `s` a valid out-pointer.
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 || s.f_blocks == 0 {
        return None;
    }
    Some(s.f_bavail as f64 / s.f_blocks as f64)
}

/// Evaluates the alert rules every `alert_interval`. The first evaluation
/// waits an interval too: right at start, agents are still reconnecting and
/// would all look offline.
#[derive(Default)]
pub(crate) struct AlertWorker {
    trend: QueueTrend,
}

impl crate::workers::Worker for AlertWorker {
    fn name(&self) -> &'static str {
        "alerts"
    }

    fn purpose(&self) -> &'static str {
        "evaluates the alert rules every alert_interval"
    }

    async fn next(&mut self, hub: &Hub) {
        tokio::time::sleep(hub.config().alert_interval).await;
    }

    async fn step(&mut self, hub: &Hub) -> Result<bool, String> {
        hub.evaluate_alerts(&mut self.trend).await.map_err(|e| e.to_string())?;
        Ok(false)
    }
}

impl Hub {
    /// Every rule's settings: the defaults overlaid with what was stored.
    pub(crate) async fn rule_configs(&self) -> Result<BTreeMap<Rule, RuleConfig>, StoreError> {
        let stored = self.shared.store.settings(PREFIX).await?;
        let mut configs: BTreeMap<Rule, RuleConfig> = Rule::ALL.iter().map(|r| (*r, r.default_config())).collect();
        for (key, value) in stored {
            let mut parts = key[PREFIX.len()..].splitn(2, '.');
            let (Some(rule), Some(field)) = (parts.next(), parts.next()) else { continue };
            let Some(cfg) = Rule::parse(rule).ok().and_then(|r| configs.get_mut(&r)) else { continue };
            match field {
                "enabled" => cfg.enabled = value == "true",
                "severity" => cfg.severity = Severity::parse(&value).unwrap_or(cfg.severity),
                "threshold" => cfg.threshold = value.parse().unwrap_or(cfg.threshold),
                _ => {}
            }
        }
        Ok(configs)
    }

    async fn observe(&self, trend: &mut QueueTrend, stuck_after: Duration) -> Result<Observation, StoreError> {
        let store = &self.shared.store;
        let now = self.now();
        let counts = store.count_tasks().await?;
        let queued = crate::tasks_in(&counts, TaskState::Queued);
        let outcomes = store.outcomes_since(Millis(now.0 - 3_600_000)).await?;
        let (succeeded, failed) = muster_core::Outcome::tally(&outcomes);
        let agents = store.list_agents().await?;
        let quiet_since = Millis(now.0 - stuck_after.as_millis() as i64);
        // The earliest `ready_at` of a queued task is the one that has waited longest, once it is due.
        let oldest_wait_secs = store.next_ready().await?.filter(|r| *r <= now).map(|r| now.since(r).as_secs_f64());
        Ok(Observation {
            queue_rises: trend.observe(queued),
            queued,
            oldest_wait_secs,
            succeeded,
            failed,
            stuck: store.count_quiet_running(quiet_since).await?,
            // One registered and never started is not a fleet gone quiet.
            agents_registered: agents.iter().filter(|a| a.last_seen_at.is_some()).count() as u64,
            agents_online: agents.iter().filter(|a| a.status.connected).count() as u64,
            backup_age_secs: self.last_backup_age().map(|a| a.as_secs_f64()),
            backups_elsewhere: store.maintenance().backend() == "postgres",
            uptime_secs: now.since(self.shared.started_at).as_secs_f64(),
            disk_free: disk_free(&self.config().data_dir),
            open_circuits: store
                .breakers()
                .await?
                .iter()
                .filter(|b| b.state != muster_core::breaker::State::Closed)
                .map(|b| format!("{} {}", b.scope.as_str(), b.name))
                .collect(),
            over_budget: self.over_budget().await?,
            deadlock: self
                .shared
                .last_deadlock
                .lock()
                .expect("deadlock lock poisoned")
                .as_ref()
                .map(|(at, cycle)| (now.since(*at).as_secs_f64(), cycle.clone())),
        })
    }

    /// One evaluation of every rule, by the hub that leads alerts (the
    /// others leave it to that one).
    pub(crate) async fn evaluate_alerts(&self, trend: &mut QueueTrend) -> Result<(), StoreError> {
        if !self.lead(muster_store::Duty::Alerts).await? {
            return Ok(());
        }
        let configs = self.rule_configs().await?;
        let stuck_after = Duration::from_secs_f64(configs[&Rule::StuckTasks].threshold.max(1.0));
        let observation = self.observe(trend, stuck_after).await?;
        let stored: BTreeMap<Rule, AlertRecord> =
            self.shared.store.alerts().await?.into_iter().map(|a| (a.rule, a)).collect();
        let now = self.now();
        for (rule, cfg) in &configs {
            let holds = alert::check(*rule, cfg, &observation);
            let current = stored.get(rule);
            let state = current.map_or(AlertState::Resolved, |a| a.state);
            let (next, change) = alert::step(state, holds.is_some());
            let Some(change) = change else {
                // Still firing: its detail follows the condition as it changes.
                if let (Some(current), Some(detail)) = (current, holds)
                    && current.state.is_active()
                    && current.detail.as_deref() != Some(detail.as_str())
                {
                    let record = AlertRecord { detail: Some(detail), updated_at: now, ..current.clone() };
                    self.shared.store.save_alert(record, None, now).await?;
                }
                continue;
            };
            let record = match change {
                Change::Fired => AlertRecord {
                    rule: *rule,
                    state: next,
                    severity: cfg.severity,
                    detail: holds,
                    since: Some(now),
                    acknowledged_by: None,
                    acknowledged_at: None,
                    updated_at: now,
                },
                // Where things stand now, not the figure it fired with.
                Change::Resolved => AlertRecord {
                    state: next,
                    detail: Some(alert::describe(*rule, cfg, &observation)),
                    updated_at: now,
                    ..current.cloned().expect("only a stored alert can resolve")
                },
            };
            let kind = match change {
                Change::Fired => "alert.firing",
                Change::Resolved => "alert.resolved",
            };
            match change {
                Change::Fired => {
                    tracing::warn!(
                        rule = rule.as_str(),
                        severity = cfg.severity.as_str(),
                        detail = record.detail.as_deref().unwrap_or(""),
                        "alert firing"
                    )
                }
                Change::Resolved => tracing::info!(rule = rule.as_str(), "alert resolved"),
            }
            self.shared.store.save_alert(record, Some(kind), now).await?;
        }
        Ok(())
    }

    /// Every rule with its state and settings.
    pub(crate) async fn alert_views(&self) -> Result<Vec<AlertView>, StoreError> {
        let configs = self.rule_configs().await?;
        let stored: BTreeMap<Rule, AlertRecord> =
            self.shared.store.alerts().await?.into_iter().map(|a| (a.rule, a)).collect();
        Ok(configs
            .iter()
            .map(|(rule, cfg)| {
                let a = stored.get(rule);
                AlertView {
                    rule: rule.as_str().to_owned(),
                    state: a.map_or(AlertState::Resolved, |a| a.state).as_str().to_owned(),
                    severity: a
                        .filter(|a| a.state.is_active())
                        .map_or(cfg.severity, |a| a.severity)
                        .as_str()
                        .to_owned(),
                    enabled: cfg.enabled,
                    threshold: cfg.threshold,
                    detail: a.and_then(|a| a.detail.clone()),
                    since: a.and_then(|a| a.since).map(timestamp),
                    acknowledged_by: a.and_then(|a| a.acknowledged_by.clone()),
                    acknowledged_at: a.and_then(|a| a.acknowledged_at).map(timestamp),
                }
            })
            .collect())
    }

    pub(crate) async fn alert_config_views(&self) -> Result<BTreeMap<String, RuleConfigView>, StoreError> {
        Ok(self
            .rule_configs()
            .await?
            .into_iter()
            .map(|(rule, cfg)| {
                let view = RuleConfigView {
                    enabled: cfg.enabled,
                    severity: cfg.severity.as_str().to_owned(),
                    threshold: cfg.threshold,
                    threshold_meaning: rule.threshold_meaning().to_owned(),
                };
                (rule.as_str().to_owned(), view)
            })
            .collect())
    }

    /// Validates and stores changes to rule settings, all or nothing.
    pub(crate) async fn update_alert_config(
        &self,
        patch: BTreeMap<String, RuleConfigPatch>,
        by: &str,
    ) -> Result<(), ApiError> {
        let pairs = self.alert_pairs(&patch)?;
        if pairs.is_empty() {
            return Err(ApiError::BadRequest(FieldError { field: String::new(), reason: "nothing to change".into() }));
        }
        self.shared.store.put_settings(pairs.into_iter().map(|(k, v)| (k, Some(v))).collect(), by, self.now()).await?;
        Ok(())
    }

    /// The settings a change to rule settings stores, once each value is checked.
    pub(crate) fn alert_pairs(
        &self,
        patch: &BTreeMap<String, RuleConfigPatch>,
    ) -> Result<Vec<(String, String)>, ApiError> {
        let bad = |field: String, reason: String| ApiError::BadRequest(FieldError { field, reason });
        let mut pairs = Vec::new();
        for (name, change) in patch {
            let rule = Rule::parse(name).map_err(|e| bad(name.clone(), e.reason))?;
            if let Some(enabled) = change.enabled {
                pairs.push((format!("{PREFIX}{name}.enabled"), enabled.to_string()));
            }
            if let Some(severity) = &change.severity {
                let severity = Severity::parse(severity).map_err(|e| bad(format!("{name}.severity"), e.reason))?;
                pairs.push((format!("{PREFIX}{name}.severity"), severity.as_str().to_owned()));
            }
            if let Some(threshold) = change.threshold {
                rule.validate_threshold(threshold).map_err(|e| bad(format!("{name}.threshold"), e.reason))?;
                pairs.push((format!("{PREFIX}{name}.threshold"), threshold.to_string()));
            }
        }
        Ok(pairs)
    }
}

/// Checks that `rule` names a rule and `field` one of its settings; `key` is how the caller wrote them.
pub(crate) fn check_field(key: &str, rule: &str, field: &str) -> Result<(), FieldError> {
    Rule::parse(rule).map_err(|e| FieldError { field: key.to_owned(), reason: e.reason })?;
    match field {
        "enabled" | "severity" | "threshold" => Ok(()),
        _ => {
            Err(FieldError { field: key.to_owned(), reason: "alert rules have enabled, severity and threshold".into() })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_trend_counts_rises_in_a_row() {
        let mut t = QueueTrend::default();
        let rises: Vec<u32> = [1, 2, 3, 3, 4, 5, 1].into_iter().map(|d| t.observe(d)).collect();
        assert_eq!(rises, [0, 1, 2, 0, 1, 2, 0]);
    }
}
