//! Shadow mode: a task, or a share of the tasks that match a policy, also
//! runs on another runner. The shadow is a task of its own (`shadow_of`
//! names the task it shadows), so it never changes that task's outcome; it
//! runs in a worktree of its own, which it never keeps, and nothing it does
//! is pushed anywhere. The report compares finished pairs.

use crate::Hub;
use crate::error::ApiError;
use muster_core::{Priority, RunnerName, Task, TaskId, TaskSpec};
use muster_proto::FieldError;
use muster_proto::api::{ShadowMismatch, ShadowPolicy, ShadowReport, ShadowRunnerRow};
use muster_store::{OutputFilter, StoreError, Stream};
use regex::Regex;
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// Settings keys: `shadow.<runner>` holds that runner's policy.
const PREFIX: &str = "shadow.";
/// Pairs a report looks at, the most recent first.
const REPORT_PAIRS: usize = 1_000;
/// Mismatches listed in a report.
const REPORT_MISMATCHES: usize = 50;
/// Output compared, from the end of a run's standard output.
const COMPARED_BYTES: usize = 256 << 10;

fn bad(field: &str, reason: impl Into<String>) -> ApiError {
    ApiError::BadRequest(FieldError { field: field.to_owned(), reason: reason.into() })
}

/// A policy's filters, checked.
fn check_filters(filters: &[String]) -> Result<(), ApiError> {
    for f in filters {
        let (key, value) = f.split_once('=').ok_or_else(|| bad("filters", format!("{f:?}: write KEY=VALUE")))?;
        let ok = match key {
            "cap" => muster_core::Capability::parse(value).is_ok(),
            "runner" => RunnerName::parse(value).is_ok(),
            "priority" => Priority::parse(value).is_ok(),
            _ => false,
        };
        if !ok {
            return Err(bad("filters", format!("{f:?}: filters are cap=NAME, runner=NAME and priority=LEVEL")));
        }
    }
    Ok(())
}

fn matches(filters: &[String], spec: &TaskSpec) -> bool {
    filters.iter().all(|f| match f.split_once('=') {
        Some(("cap", v)) => spec.capabilities.iter().any(|c| c.as_str() == v),
        Some(("runner", v)) => spec.runner.as_str() == v,
        Some(("priority", v)) => spec.priority.as_str() == v,
        _ => false,
    })
}

fn encode(p: &ShadowPolicy) -> String {
    format!("percent={};filters={}", p.percent, p.filters.join(","))
}

fn decode(runner: &str, text: &str) -> Option<ShadowPolicy> {
    let mut percent = None;
    let mut filters = Vec::new();
    for part in text.split(';') {
        match part.split_once('=') {
            Some(("percent", v)) => percent = v.parse().ok(),
            Some(("filters", v)) => filters = v.split(',').filter(|f| !f.is_empty()).map(str::to_owned).collect(),
            _ => {}
        }
    }
    Some(ShadowPolicy { runner: runner.to_owned(), percent: percent?, filters })
}

fn random_unit() -> f64 {
    let mut buf = [0u8; 8];
    if getrandom::fill(&mut buf).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(buf) >> 11) as f64 / (1u64 << 53) as f64
}

/// Output with what differs from run to run taken out: whitespace, times,
/// durations, ids and hashes.
pub fn normalise(text: &str) -> String {
    static NOISE: OnceLock<Vec<(Regex, &'static str)>> = OnceLock::new();
    let noise = NOISE.get_or_init(|| {
        [
            (r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?", "<time>"),
            (r"\b\d+(?:\.\d+)?\s?(?:ms|s|sec|seconds|m|min)\b", "<duration>"),
            (r"\bt_[0-9a-z]{26}\b", "<task>"),
            (r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b", "<id>"),
            (r"\b[0-9a-f]{7,64}\b", "<hash>"),
            (r"\s+", " "),
        ]
        .into_iter()
        .map(|(p, with)| (Regex::new(p).expect("a valid pattern"), with))
        .collect()
    });
    let mut out = text.to_owned();
    for (re, with) in noise {
        out = re.replace_all(&out, *with).into_owned();
    }
    out.trim().to_owned()
}

impl Hub {
    pub(crate) async fn shadow_policies(&self) -> Result<Vec<ShadowPolicy>, StoreError> {
        let generation = match self.shared.shadow_policies.get(&()) {
            Ok(policies) => return Ok(policies),
            Err(generation) => generation,
        };
        let stored = self.shared.store.settings(PREFIX).await?;
        let policies: Vec<ShadowPolicy> =
            stored.iter().filter_map(|(k, v)| decode(k.strip_prefix(PREFIX)?, v)).collect();
        self.shared.shadow_policies.put(generation, (), policies.clone());
        Ok(policies)
    }

    /// Sets (or, with `percent` 0, clears) the policy for one shadow runner.
    pub(crate) async fn set_shadow_policy(&self, p: ShadowPolicy, by: &str) -> Result<(), ApiError> {
        let runner = RunnerName::parse(&p.runner).map_err(|e| bad("runner", e.reason))?;
        if !p.percent.is_finite() || !(0.0..=100.0).contains(&p.percent) {
            return Err(bad("percent", format!("must be between 0 and 100, got {}", p.percent)));
        }
        check_filters(&p.filters)?;
        if p.percent > 0.0 && !self.shared.known_runners.lock().expect("runners lock poisoned").contains(&runner) {
            return Err(bad("runner", format!("unknown runner {:?}", runner.as_str())));
        }
        let key = format!("{PREFIX}{runner}");
        let value = (p.percent > 0.0).then(|| encode(&p));
        self.shared.store.put_settings(vec![(key, value)], by, self.now()).await?;
        self.shared.shadow_policies.clear();
        Ok(())
    }

    /// After a task is created: the shadows it asked for, and those the
    /// policies pick for it.
    pub(crate) async fn start_shadows(&self, task: &Task, asked: &[RunnerName]) -> Result<Vec<TaskId>, ApiError> {
        if task.spec.shadow_of.is_some() {
            return Ok(Vec::new());
        }
        let mut runners: Vec<RunnerName> = asked.to_vec();
        for p in self.shadow_policies().await? {
            let Ok(runner) = RunnerName::parse(&p.runner) else { continue };
            if matches(&p.filters, &task.spec) && random_unit() * 100.0 < p.percent && !runners.contains(&runner) {
                runners.push(runner);
            }
        }
        let mut made = Vec::new();
        for runner in runners.into_iter().filter(|r| *r != task.spec.runner) {
            let mut spec = task.spec.clone();
            spec.runner = runner.clone();
            spec.fallback = Vec::new();
            spec.idempotency_key = None;
            spec.shadow_of = Some(task.id.clone());
            if let Some(w) = spec.workspace.as_mut() {
                w.auto_commit = false;
                w.keep = muster_core::Keep::Never;
            }
            let now = self.now();
            let created = self.shared.store.create_task(crate::new_task_id(now)?, spec, now).await?;
            tracing::info!(task_id = %task.id, shadow = %created.task.id, runner = %runner, "shadow run queued");
            made.push(created.task.id);
        }
        if !made.is_empty() {
            self.wake_dispatcher();
        }
        Ok(made)
    }

    /// What a finished task printed or concluded, for comparison.
    async fn result_of(&self, id: &TaskId) -> Result<(String, Option<u64>, Option<muster_core::MicroUsd>), StoreError> {
        let attempts = self.shared.store.attempts(id).await?;
        let Some(last) = attempts.last() else { return Ok((String::new(), None, None)) };
        let took = last.finished_at.map(|f| f.since(last.started_at).as_millis() as u64);
        let cost = last.report.as_ref().and_then(|r| r.cost);
        let text = match (last.report.as_ref().and_then(|r| r.result.clone()), &last.summary) {
            (Some(result), _) => result,
            (None, Some(summary)) => summary.clone(),
            (None, None) => {
                let filter = OutputFilter { attempt: Some(last.number), after: 0, limit: 10_000 };
                let chunks = self.shared.store.read_output(id, &filter).await?;
                let mut out: Vec<u8> =
                    chunks.into_iter().filter(|c| c.stream == Stream::Stdout).flat_map(|c| c.data).collect();
                if out.len() > COMPARED_BYTES {
                    out.drain(..out.len() - COMPARED_BYTES);
                }
                String::from_utf8_lossy(&out).into_owned()
            }
        };
        Ok((text, took, cost))
    }

    pub(crate) async fn shadow_report(&self) -> Result<ShadowReport, StoreError> {
        let pairs = self.shared.store.shadow_pairs(REPORT_PAIRS).await?;
        let mut report = ShadowReport::default();
        let mut duration_deltas = Vec::new();
        let mut cost_deltas = Vec::new();
        let mut by_runner: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for (task_id, shadow_id) in pairs {
            let (Some(task), Some(shadow)) =
                (self.shared.store.task(&task_id).await?, self.shared.store.task(&shadow_id).await?)
            else {
                continue;
            };
            let (task_out, task_took, task_cost) = self.result_of(&task_id).await?;
            let (shadow_out, shadow_took, shadow_cost) = self.result_of(&shadow_id).await?;
            let same_outcome = (task.state == muster_core::TaskState::Succeeded)
                == (shadow.state == muster_core::TaskState::Succeeded);
            let same_output = normalise(&task_out) == normalise(&shadow_out);
            report.pairs += 1;
            report.outcome_matches += u64::from(same_outcome);
            report.output_matches += u64::from(same_output);
            let matched = same_outcome && same_output && task.state == muster_core::TaskState::Succeeded;
            let row = by_runner.entry(format!("{} -> {}", task.spec.runner, shadow.spec.runner)).or_default();
            row.0 += 1;
            row.1 += u64::from(matched);
            if let (Some(a), Some(b)) = (task_took, shadow_took) {
                duration_deltas.push(b as f64 - a as f64);
            }
            if let (Some(a), Some(b)) = (task_cost, shadow_cost) {
                cost_deltas.push(b.usd() - a.usd());
            }
            if !(same_outcome && same_output) && report.mismatches.len() < REPORT_MISMATCHES {
                let why = match (same_outcome, same_output) {
                    (false, false) => "outcome and output",
                    (false, true) => "outcome",
                    _ => "output",
                };
                report.mismatches.push(ShadowMismatch {
                    task: task_id.to_string(),
                    shadow: shadow_id.to_string(),
                    task_runner: task.spec.runner.to_string(),
                    shadow_runner: shadow.spec.runner.to_string(),
                    task_state: task.state.as_str().to_owned(),
                    shadow_state: shadow.state.as_str().to_owned(),
                    why: why.to_owned(),
                });
            }
        }
        let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        let matched: u64 = by_runner.values().map(|(_, m)| m).sum();
        report.match_rate = if report.pairs == 0 { 0.0 } else { matched as f64 / report.pairs as f64 };
        report.mean_duration_delta_ms = mean(&duration_deltas).unwrap_or(0.0);
        report.mean_cost_delta_usd = mean(&cost_deltas);
        report.by_runner = by_runner
            .into_iter()
            .map(|(runners, (pairs, matched))| ShadowRunnerRow {
                runners,
                pairs,
                match_rate: if pairs == 0 { 0.0 } else { matched as f64 / pairs as f64 },
            })
            .collect();
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_compared_without_times_ids_and_spacing() {
        let a = "Done at 2026-11-21T21:13:33.120Z in 1.5s.\nTask t_01m7zz9fm338dy9dsx8awm5vxr, commit 1a2b3c4d ok";
        let b = "Done at 2026-11-22 08:00:00 in 12 ms.  Task t_01m7zzk4ce0mnrt8rwe6zp180y, commit deadbeef99 ok\n";
        assert_eq!(normalise(a), normalise(b));
        assert_ne!(normalise("3 tests failed"), normalise("all tests passed"));
    }

    #[test]
    fn policies_survive_their_text_form_and_filters_are_checked() {
        let p = ShadowPolicy { runner: "codex".into(), percent: 12.5, filters: vec!["cap=rust".into()] };
        assert_eq!(decode("codex", &encode(&p)), Some(p));
        assert!(check_filters(&["cap=rust".into(), "priority=high".into()]).is_ok());
        assert!(check_filters(&["colour=red".into()]).is_err());
        assert!(check_filters(&["priority=whenever".into()]).is_err());
    }
}
