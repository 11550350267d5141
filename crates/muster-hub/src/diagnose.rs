//! `muster diagnose`: everything an operator looks at first, in one report,
//! with the next step for each problem found.

use crate::Hub;
use crate::error::ApiError;
use muster_core::alert::Rule;
use muster_core::{Offer, Requirements, TaskState};
use muster_proto::api::{DiagnoseView, DiagnosedProblem};
use muster_store::TaskFilter;
use std::io::{BufRead, BufReader};
use std::sync::atomic::Ordering;

/// Warning and error lines kept from the log.
const LOG_LINES: usize = 20;

fn problem(area: &str, what: impl Into<String>, next_step: impl Into<String>) -> DiagnosedProblem {
    DiagnosedProblem { area: area.to_owned(), what: what.into(), next_step: next_step.into() }
}

/// The newest WARN and ERROR lines of `<data-dir>/logs/muster.log`.
fn recent_log(hub: &Hub) -> Vec<String> {
    let path = hub.config().data_dir.join("logs").join("muster.log");
    let Ok(file) = std::fs::File::open(path) else { return Vec::new() };
    let mut kept = std::collections::VecDeque::with_capacity(LOG_LINES);
    for line in BufReader::new(file).lines().map_while(Result::ok) {
        if line.contains("\"level\":\"WARN\"") || line.contains("\"level\":\"ERROR\"") {
            if kept.len() == LOG_LINES {
                kept.pop_front();
            }
            kept.push_back(line);
        }
    }
    kept.into()
}

impl Hub {
    pub(crate) async fn diagnose(&self) -> Result<DiagnoseView, ApiError> {
        let store = &self.shared.store;
        let mut problems = Vec::new();

        let database = store.ping().await;
        if let Err(e) = &database {
            problems.push(problem(
                "readiness",
                format!("the database does not answer: {e}"),
                "see the hub's log; muster check; restore a backup if it is damaged",
            ));
        }
        let draining = self.shared.draining.load(Ordering::SeqCst);
        if draining {
            problems.push(problem("readiness", "the hub is shutting down", "start it again once it has stopped"));
        }
        let commits = self.commits().await;
        let room = self.disk_room().await;
        for why in [&commits, &room].into_iter().filter_map(|r| r.as_ref().err()) {
            problems.push(problem(
                "readiness",
                why.clone(),
                "make room on the data disk (troubleshooting.md, \"/readyz answers 503\")",
            ));
        }
        if self.shared.dispatch_paused.load(Ordering::SeqCst) {
            problems.push(problem("dispatch", "dispatch is paused: no task is handed out", "muster resume"));
        }

        let health = self.health().await?;
        if health.level != "HEALTHY" {
            problems.push(problem(
                "health",
                format!("{}: {}", health.level, health.reasons.join("; ")),
                Rule::HighFailureRate.next_step(),
            ));
        }

        for alert in self.alert_views().await?.into_iter().filter(|a| a.state != "resolved") {
            let next = Rule::parse(&alert.rule).map(Rule::next_step).unwrap_or("muster alerts");
            let what = format!(
                "alert {} ({}, {}): {}",
                alert.rule,
                alert.severity,
                alert.state,
                alert.detail.unwrap_or_default()
            );
            problems.push(problem("alert", what, next));
        }

        let agents = store.list_agents().await?;
        let mut notes = Vec::new();
        // Registered and never started is a note, not a problem: it may be on its way.
        for a in agents.iter().filter(|a| a.last_seen_at.is_none()) {
            notes.push(problem(
                "agent",
                format!(
                    "agent {} was registered {} and has never connected",
                    a.name,
                    muster_proto::timestamp(a.created_at)
                ),
                format!("start it with its token (muster agent run --token …), or muster agent remove {}", a.name),
            ));
        }
        for a in agents.iter().filter(|a| !a.status.connected && a.last_seen_at.is_some()) {
            problems.push(problem(
                "agent",
                format!("agent {} is offline", a.name),
                format!(
                    "on its machine, check the agent's service and log; muster events --agent {}; \
                     if it is gone for good, muster agent remove {}",
                    a.name, a.name
                ),
            ));
        }
        for a in &agents {
            if let Some(report) = crate::views::doctor_of(a) {
                for r in report.runners.iter().filter(|r| !r.ok) {
                    problems.push(problem(
                        "agent",
                        format!("agent {} cannot run {}: {}", a.name, r.name, r.problems.join("; ")),
                        "on that machine: muster doctor",
                    ));
                }
            }
        }

        // Queued work that no connected agent could take.
        let queued_page =
            store.list_tasks(&TaskFilter { state: Some(TaskState::Queued), limit: 1000, ..Default::default() }).await?;
        let offers: Vec<Offer> = agents.iter().filter(|a| a.status.connected).map(|a| a.offer()).collect();
        let mut stranded: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
        for t in &queued_page.items {
            let req = Requirements { runner: &t.spec.runner, capabilities: &t.spec.capabilities };
            if !offers.iter().any(|o| o.can_run(req)) {
                let caps: Vec<&str> = t.spec.capabilities.iter().map(|c| c.as_str()).collect();
                let need = if caps.is_empty() {
                    format!("runner {}", t.spec.runner)
                } else {
                    format!("runner {} with {}", t.spec.runner, caps.join(", "))
                };
                *stranded.entry(need).or_default() += 1;
            }
        }
        for (need, n) in stranded {
            problems.push(problem(
                "queue",
                format!("{n} queued tasks need {need}, which no connected agent offers"),
                "start an agent with that runner and those capabilities (muster agent run --runner …, --cap …), or check muster agent list for UNAVAILABLE",
            ));
        }

        let findings = store.check(false, self.now()).await?.findings;
        for (kind, detail) in findings {
            let next = if kind == "integrity" || kind == "events" {
                "restore a verified backup (muster restore)"
            } else {
                "muster check --repair"
            };
            problems.push(problem("database", format!("{kind}: {detail}"), next));
        }

        let backup_age = self.last_backup_age();
        if backup_age.is_none() && self.runtime().backup_interval.is_zero() {
            problems.push(problem(
                "backup",
                "there is no backup and scheduled backups are off",
                "muster backup, and set backup_interval",
            ));
        }

        let counts = store.count_tasks().await?;
        let count = |s: TaskState| crate::tasks_in(&counts, s);
        Ok(DiagnoseView {
            health,
            ready: database.is_ok() && !draining && commits.is_ok() && room.is_ok(),
            agents_online: agents.iter().filter(|a| a.status.connected).count() as u64,
            agents_registered: agents.len() as u64,
            queued: count(TaskState::Queued),
            running: count(TaskState::Running) + count(TaskState::Assigned),
            last_backup_age_secs: backup_age.map(|a| a.as_secs()),
            problems,
            notes,
            recent_log: recent_log(self),
        })
    }
}
