//! `muster task explain`: one attempt in a screenful, from what the hub
//! recorded: how it ended and why, what the agent used and spent, its tool
//! calls in order with their durations and failures, its errors, and what
//! changed in its worktree.

use crate::table::clip;
use muster_proto::api::{AttemptView, StepView, TaskDetail};
use std::collections::{HashMap, VecDeque};
use std::fmt::Write;

/// The attempt numbered `number`, or the latest.
pub fn pick(detail: &TaskDetail, number: Option<u32>) -> Result<&AttemptView, String> {
    match number {
        Some(n) => detail
            .attempts_detail
            .iter()
            .find(|a| a.number == n)
            .ok_or_else(|| format!("task {} has no attempt {n}", detail.task.id)),
        None => detail.attempts_detail.last().ok_or_else(|| format!("task {} has not run yet", detail.task.id)),
    }
}

/// Explains `attempt` of the task in `detail`, given that attempt's steps.
pub fn render(detail: &TaskDetail, attempt: &AttemptView, steps: &[StepView]) -> String {
    let t = &detail.task;
    let mut out = String::new();
    let ended = match (&attempt.outcome, &attempt.finished_at) {
        (Some(outcome), Some(at)) => format!("{outcome} at {at}"),
        _ => format!("still running ({})", attempt.live.as_deref().unwrap_or("working")),
    };
    let _ =
        writeln!(out, "attempt {} of {} ({} runner, agent {}): {ended}", attempt.number, t.id, t.runner, attempt.agent);
    let _ = writeln!(out, "started   {}", attempt.started_at);
    if let Some(reason) = &attempt.reason {
        let _ = writeln!(out, "why       {reason}");
    } else if attempt.outcome.as_deref() == Some("succeeded") {
        let _ = writeln!(out, "why       the run exited 0 and its agent reported success");
    }
    if let Some(r) = &attempt.report {
        let mut who = vec![r.model.clone().unwrap_or_else(|| "model unknown".into())];
        if let Some(s) = &r.session_id {
            who.push(format!("session {s}"));
        }
        if let Some(turns) = r.turns {
            who.push(format!("{turns} turns"));
        }
        let _ = writeln!(out, "agent     {}", who.join(" · "));
        let _ = writeln!(
            out,
            "tokens    {} in, {} out, {} cache read, {} cache write",
            r.input_tokens, r.output_tokens, r.cache_read_tokens, r.cache_write_tokens
        );
        let _ = writeln!(out, "cost      {}", r.cost_usd.map_or_else(|| "not reported".into(), crate::output::usd));
    } else {
        let _ = writeln!(out, "agent     no report (the runner's output is not read as an agent's stream)");
    }

    // Tool calls: each use paired with the next result for the same tool.
    let mut results: HashMap<&str, VecDeque<&StepView>> = HashMap::new();
    for s in steps.iter().filter(|s| s.step.kind == "tool_result") {
        results.entry(s.step.name.as_deref().unwrap_or("?")).or_default().push_back(s);
    }
    let uses: Vec<&StepView> = steps.iter().filter(|s| s.step.kind == "tool_use").collect();
    let failed = steps.iter().filter(|s| s.step.kind == "tool_result" && s.step.is_error).count();
    let _ = writeln!(out, "\ntool calls: {} ({} failed)", uses.len(), failed);
    for (i, u) in uses.iter().enumerate() {
        let name = u.step.name.as_deref().unwrap_or("?");
        let result = results.get_mut(name).and_then(VecDeque::pop_front);
        let took = result.and_then(|r| r.step.duration_ms).map_or_else(|| "-".to_owned(), seconds);
        let verdict = match result {
            None => "no result".to_owned(),
            Some(r) if r.step.is_error => format!("FAILED: {}", clip(&r.step.summary, 80)),
            Some(_) => "ok".to_owned(),
        };
        let _ = writeln!(
            out,
            "  {:>3}. {:<50} {:>8}  {verdict}",
            i + 1,
            clip(&format!("{name}: {}", u.step.summary), 50),
            took
        );
    }
    let errors: Vec<&StepView> =
        steps.iter().filter(|s| matches!(s.step.kind.as_str(), "error" | "retry" | "unreadable")).collect();
    if !errors.is_empty() {
        let _ = writeln!(out, "\nerrors: {}", errors.len());
        for e in errors.iter().take(20) {
            let _ = writeln!(out, "  - {}: {}", e.step.kind, clip(&e.step.summary, 120));
        }
    }
    if let Some(last) = steps.iter().rev().find(|s| s.step.kind == "result") {
        let _ = writeln!(
            out,
            "\nthe agent's last word ({}): {}",
            last.step.name.as_deref().unwrap_or("result"),
            clip(&last.step.summary, 300)
        );
    } else if let Some(text) = attempt.report.as_ref().and_then(|r| r.result.as_ref()) {
        let _ = writeln!(out, "\nthe agent's last word: {}", clip(text, 300));
    }
    if let Some(w) = &attempt.workspace {
        let _ = writeln!(
            out,
            "\nworktree  branch {} · {} · {} changed{}",
            w.branch,
            crate::table::count(w.commits.len(), "commit", "commits"),
            crate::table::count(w.files.len(), "file", "files"),
            w.kept_at.as_ref().map(|k| format!(" · kept at {k}")).unwrap_or_default()
        );
    }
    if attempt.steps > steps.len() as u64 {
        let _ = writeln!(out, "\n({} steps in all; {} were stored)", attempt.steps, steps.len());
    }
    out
}

fn seconds(ms: u64) -> String {
    if ms < 1_000 { format!("{ms} ms") } else { format!("{:.1} s", ms as f64 / 1000.0) }
}
