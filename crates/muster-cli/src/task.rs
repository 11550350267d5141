//! Tasks: `task add|list|show|logs|steps|transcript|explain|diff|cancel|skip|reset|move|retry|wait`,
//! and `approve` / `reject` for a task pending approval.

use crate::client::{CliResult, ConnArgs, encode, segment, usage};
use crate::output::{print_json, usd};
use crate::table::{Table, attempts_used, clip, dash};
use crate::{CliError, Client, exit};
use clap::{Args, Subcommand};
use muster_core::MicroUsd;
use muster_proto::api::{
    DiffView, DurationValue, EventPage, LogsPage, StepsPage, TaskCreated, TaskDetail, TaskPage, TaskSubmit, TaskView,
};
use muster_proto::ws::RunReport;
use std::io::{Read, Write};
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub enum TaskCmd {
    /// Queue a task; prints its id (or the task with --json).
    Add(Box<TaskAddArgs>),
    /// List tasks, newest first.
    List {
        /// queued, assigned, running, succeeded, failed or cancelled.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        agent: Option<String>,
        /// urgent, high, normal or low.
        #[arg(long)]
        priority: Option<String>,
        #[arg(long)]
        runner: Option<String>,
        /// Tasks that require this capability.
        #[arg(long)]
        capability: Option<String>,
        /// Tasks whose id, prompt or reason contains this (ignoring ASCII case).
        #[arg(long)]
        search: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Show one task with its attempts.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Print a task's output (stdout to stdout, stderr to stderr).
    Logs {
        id: String,
        /// Keep printing until the task ends.
        #[arg(long, short)]
        follow: bool,
        /// Only this attempt (1-based).
        #[arg(long)]
        attempt: Option<u32>,
        /// One JSON object per chunk.
        #[arg(long)]
        json: bool,
    },
    /// What the coding agent did: its session, messages, tool calls and results, in order.
    Steps {
        id: String,
        /// Only this attempt (1-based).
        #[arg(long)]
        attempt: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// A coding agent's whole event stream for one attempt, as it printed it (secrets redacted).
    Transcript {
        id: String,
        /// This attempt (1-based); default: the latest.
        #[arg(long)]
        attempt: Option<u32>,
    },
    /// One attempt explained: how and why it ended, tokens and cost, tool calls with durations, errors.
    Explain {
        id: String,
        /// This attempt (1-based); default: the latest.
        #[arg(long)]
        attempt: Option<u32>,
    },
    /// The change a task made in its worktree: commits, files, and the diff.
    Diff {
        id: String,
        /// This attempt (1-based); default: the latest that ran in a worktree.
        #[arg(long)]
        attempt: Option<u32>,
        /// Only the commits and the diff stat.
        #[arg(long)]
        stat: bool,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a task: at once if queued, by killing its run if running.
    Cancel {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Decide a queued or finished task needs no run: it ends `skipped`.
    Skip {
        id: String,
        /// Why (on the timeline, with who).
        #[arg(long)]
        reason: String,
        #[arg(long)]
        json: bool,
    },
    /// Put a task that is not handed out back in the queue, attempts cleared.
    Reset {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Change the priority of a task not yet finished.
    Move {
        id: String,
        /// urgent, high, normal or low.
        #[arg(long)]
        priority: String,
        #[arg(long)]
        json: bool,
    },
    /// Revive a failed (dead-lettered) task with a fresh budget of attempts.
    Retry {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Wait until a task ends; exits 0 if it succeeded, 7 otherwise.
    Wait {
        id: String,
        /// Give up after this long (e.g. 10m).
        #[arg(long)]
        timeout: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct TaskAddArgs {
    /// The prompt; `-` reads it from standard input.
    pub prompt: String,
    /// Runner profile: claude, codex, shell, or one an agent defines.
    #[arg(long)]
    pub runner: Option<String>,
    /// A capability the agent must have (repeatable).
    #[arg(long = "cap")]
    pub caps: Vec<String>,
    /// urgent, high, normal or low.
    #[arg(long)]
    pub priority: Option<String>,
    /// How long a run may take, e.g. 90s, 10m, 2h.
    #[arg(long)]
    pub timeout: Option<String>,
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// A repeated key returns the existing task instead of creating another.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// A JSON object stored with the task.
    #[arg(long)]
    pub metadata: Option<String>,
    /// Run in a git worktree of this repository (a name the agent maps, or a
    /// path under its repository root), on branch muster/<task-id>.
    #[arg(long)]
    pub repo: Option<String>,
    /// The ref the worktree starts from (default: the repository's HEAD).
    #[arg(long, requires = "repo")]
    pub base: Option<String>,
    /// Commit what the agent leaves uncommitted, on the task's branch.
    #[arg(long, requires = "repo")]
    pub auto_commit: bool,
    /// Keep the worktree afterwards: on-failure (default), always or never.
    #[arg(long, requires = "repo")]
    pub keep_worktree: Option<String>,
    /// A runner to use while --runner is disabled or its circuit is open (repeatable, in order).
    #[arg(long)]
    pub fallback: Vec<String>,
    /// Stop a run that spends more than this many US dollars (reason `budget`).
    #[arg(long)]
    pub max_cost: Option<f64>,
    /// Stop a run that uses more tokens than this (input, output and cache together).
    #[arg(long)]
    pub max_tokens: Option<u64>,
    /// Also run it on this runner as a shadow, compared with it and never changing its result (repeatable).
    #[arg(long)]
    pub shadow: Vec<String>,
    /// Wait in pending_approval until a person runs `muster approve ID`.
    #[arg(long)]
    pub requires_approval: bool,
    /// Wait in `blocked` until this task succeeds (repeatable).
    #[arg(long)]
    pub depends_on: Vec<String>,
    /// fail (default) or skip: what becomes of it when a dependency fails or is cancelled.
    #[arg(long, requires = "depends_on")]
    pub on_dependency_failure: Option<String>,
    /// A command to run in the workspace after the agent succeeds, as
    /// `NAME=COMMAND` or `COMMAND` (repeatable); one failing fails the attempt.
    #[arg(long = "check", value_name = "[NAME=]COMMAND")]
    pub checks: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

/// `muster task ...`.
pub(crate) async fn run(conn: &ConnArgs, cmd: TaskCmd) -> CliResult {
    let client = conn.client()?;
    match cmd {
        TaskCmd::Add(args) => task_add(&client, *args).await,
        TaskCmd::List { state, agent, priority, runner, capability, search, limit, json } => {
            let mut query = vec![("limit", limit.to_string())];
            let filters = [
                ("state", state),
                ("agent", agent),
                ("priority", priority),
                ("runner", runner),
                ("capability", capability),
            ];
            for (key, value) in filters.into_iter().chain([("q", search)]) {
                if let Some(v) = value {
                    query.push((key, v));
                }
            }
            let page: TaskPage = client.get(&format!("/tasks?{}", encode(&query))).await?;
            if json {
                return print_json(&page.tasks);
            }
            let mut t =
                Table::new(&["ID", "STATE", "PRIORITY", "RUNNER", "ATTEMPTS", "AGENT", "EXIT", "CREATED", "PROMPT"]);
            for task in &page.tasks {
                t.row(vec![
                    task.id.clone(),
                    task.state.clone(),
                    task.priority.clone(),
                    task.runner.clone(),
                    attempts_used(task),
                    dash(task.agent.as_ref()),
                    dash(task.exit_code),
                    task.created_at.clone(),
                    clip(&task.prompt, 40),
                ]);
            }
            print!("{}", t.render());
            if page.next.is_some() {
                eprintln!("(more tasks: raise --limit or narrow with --state, --runner or --search)");
            }
            Ok(())
        }
        TaskCmd::Show { id, json } => {
            let detail: TaskDetail = client.get(&format!("/tasks/{}", segment(&id))).await?;
            if json {
                return print_json(&detail);
            }
            print!("{}", render_task(&detail));
            Ok(())
        }
        TaskCmd::Logs { id, follow, attempt, json } => task_logs(&client, &id, follow, attempt, json).await,
        TaskCmd::Transcript { id, attempt } => {
            let detail: TaskDetail = client.get(&format!("/tasks/{}", segment(&id))).await?;
            let number = crate::explain::pick(&detail, attempt).map_err(|e| CliError::new(exit::NOT_FOUND, e))?.number;
            let a = &detail.attempts_detail.iter().find(|a| a.number == number).expect("picked from this list");
            if a.output_pruned {
                return Err(CliError::new(
                    exit::NOT_FOUND,
                    format!("attempt {number}'s transcript was removed by retention (retention.output)"),
                ));
            }
            eprintln!(
                "# attempt {number} of {}: {} bytes{}",
                detail.task.id,
                a.output_bytes,
                match (a.output_truncated, a.output_incomplete) {
                    (true, _) => " (cut off at the hub's max_output_bytes)",
                    (false, true) => " (incomplete: some output never reached the hub)",
                    (false, false) => "",
                }
            );
            let mut after = 0i64;
            let mut out = std::io::stdout().lock();
            loop {
                let page: LogsPage = client
                    .get(&format!("/tasks/{}/logs?attempt={number}&after={after}&limit=10000", segment(&id)))
                    .await?;
                for chunk in page.chunks.iter().filter(|c| c.stream == "stdout") {
                    let _ = out.write_all(chunk.data.as_bytes());
                }
                if page.chunks.is_empty() {
                    return Ok(());
                }
                after = page.next_after;
            }
        }
        TaskCmd::Explain { id, attempt } => {
            let detail: TaskDetail = client.get(&format!("/tasks/{}", segment(&id))).await?;
            let a = crate::explain::pick(&detail, attempt).map_err(|e| CliError::new(exit::NOT_FOUND, e))?;
            let page: StepsPage = client.get(&format!("/tasks/{}/steps?attempt={}", segment(&id), a.number)).await?;
            print!("{}", crate::explain::render(&detail, a, &page.steps));
            Ok(())
        }
        TaskCmd::Skip { id, reason, json } => {
            let t: TaskView =
                client.post(&format!("/tasks/{}/skip", segment(&id)), &muster_proto::api::TaskSkip { reason }).await?;
            changed(&t, json, "skipped")
        }
        TaskCmd::Reset { id, json } => {
            let t: TaskView = client.post(&format!("/tasks/{}/reset", segment(&id)), &()).await?;
            changed(&t, json, "back in the queue, attempts cleared")
        }
        TaskCmd::Move { id, priority, json } => {
            let t: TaskView = client
                .post(&format!("/tasks/{}/move", segment(&id)), &muster_proto::api::TaskMove { priority })
                .await?;
            changed(&t, json, &format!("now {}", t.priority))
        }
        TaskCmd::Diff { id, attempt, stat, json } => {
            let query = attempt.map(|a| format!("?attempt={a}")).unwrap_or_default();
            let view: DiffView = client.get(&format!("/tasks/{}/diff{query}", segment(&id))).await?;
            if json {
                return print_json(&view);
            }
            let w = &view.workspace;
            let mut out = std::io::stdout().lock();
            let short = |sha: &str| sha.chars().take(12).collect::<String>();
            let head = w.head.as_deref().map(short).unwrap_or_else(|| "-".into());
            let _ =
                writeln!(out, "# attempt {} on {} in {}: {}..{}", view.attempt, w.branch, w.repo, short(&w.base), head);
            for c in &w.commits {
                let _ = writeln!(out, "# commit {} {}", short(&c.sha), c.subject);
            }
            if let Some(snapshot) = &w.snapshot {
                let _ = writeln!(out, "# uncommitted changes kept as {snapshot}");
            }
            if let Some(kept) = &w.kept_at {
                let _ = writeln!(out, "# worktree kept at {kept}");
            }
            if let Some(e) = &w.error {
                let _ = writeln!(out, "# problem: {e}");
            }
            if w.files.is_empty() {
                let _ = writeln!(out, "# no changes");
                return Ok(());
            }
            if stat {
                let _ = write!(out, "{}", w.stat);
            } else {
                let _ = write!(out, "{}", view.diff);
                if view.diff_truncated {
                    let whole = w.snapshot.as_deref().unwrap_or(&w.branch);
                    let _ = writeln!(out, "# (the diff was cut off; {whole} in {} has all of it)", w.repo);
                }
            }
            Ok(())
        }
        TaskCmd::Steps { id, attempt, json } => {
            let query = attempt.map(|a| format!("?attempt={a}")).unwrap_or_default();
            let page: StepsPage = client.get(&format!("/tasks/{}/steps{query}", segment(&id))).await?;
            if json {
                return print_json(&page);
            }
            if page.steps.is_empty() {
                eprintln!("(no steps: the runner does not read its agent's stream, or the run has not begun)");
                return Ok(());
            }
            let mut table = Table::new(&["ATTEMPT", "#", "AT", "KIND", "NAME", "TOOK", "SUMMARY"]);
            for s in &page.steps {
                let kind = if s.step.is_error { format!("{} (error)", s.step.kind) } else { s.step.kind.clone() };
                table.row(vec![
                    s.attempt.to_string(),
                    s.seq.to_string(),
                    s.at.clone(),
                    kind,
                    dash(s.step.name.as_ref()),
                    s.step.duration_ms.map_or_else(|| "-".into(), |d| format!("{d} ms")),
                    clip(&s.step.summary.replace('\n', " "), 100),
                ]);
            }
            print!("{}", table.render());
            Ok(())
        }
        TaskCmd::Cancel { id, json } => {
            let task: TaskView = client.post(&format!("/tasks/{}/cancel", segment(&id)), &()).await?;
            if json {
                return print_json(&task);
            }
            if task.state == "cancelled" {
                eprintln!("cancelled {}", task.id);
            } else {
                eprintln!("cancel requested for {}: its run is being stopped", task.id);
            }
            Ok(())
        }
        TaskCmd::Retry { id, json } => {
            let task: TaskView = client.post(&format!("/tasks/{}/retry", segment(&id)), &()).await?;
            if json {
                return print_json(&task);
            }
            eprintln!("{} is queued again with {} attempts", task.id, task.max_attempts);
            Ok(())
        }
        TaskCmd::Wait { id, timeout, json } => {
            let limit = timeout.map(|t| muster_proto::parse_duration("timeout", &t)).transpose().map_err(usage)?;
            let task = wait_for_end(&client, &id, limit).await?;
            if json {
                print_json(&task)?;
            } else {
                println!("{} {}", task.id, task.state);
            }
            if task.state == "succeeded" {
                Ok(())
            } else {
                Err(CliError::new(exit::TASK_FAILED, format!("task {} ended {}", task.id, task.state)))
            }
        }
    }
}

/// The task `muster task add` (or `schedule add`) describes.
pub(crate) fn task_submit(args: TaskAddArgs) -> CliResult<TaskSubmit> {
    let prompt = if args.prompt == "-" {
        let mut buf = String::new();
        std::io::stdin()
            .read_to_string(&mut buf)
            .map_err(|e| usage(format!("cannot read the prompt from stdin: {e}")))?;
        buf
    } else {
        args.prompt
    };
    let metadata = args
        .metadata
        .map(|m| serde_json::from_str(&m).map_err(|e| usage(format!("--metadata is not JSON: {e}"))))
        .transpose()?;
    let submit = TaskSubmit {
        prompt,
        runner: args.runner,
        capabilities: args.caps,
        priority: args.priority,
        timeout: args.timeout.map(DurationValue::Text),
        max_attempts: args.max_attempts,
        idempotency_key: args.idempotency_key,
        metadata,
        repo: args.repo,
        base: args.base,
        auto_commit: args.auto_commit.then_some(true),
        keep_worktree: args.keep_worktree,
        fallback: args.fallback,
        max_cost_usd: args.max_cost,
        max_tokens: args.max_tokens,
        shadow: args.shadow,
        requires_approval: args.requires_approval.then_some(true),
        depends_on: args.depends_on,
        on_dependency_failure: args.on_dependency_failure,
        checks: args.checks,
    };
    Ok(submit)
}

async fn task_add(client: &Client, args: TaskAddArgs) -> CliResult {
    let json = args.json;
    let submit = task_submit(args)?;
    let created: TaskCreated = client.post("/tasks", &submit).await?;
    if json {
        return print_json(&created.task);
    }
    println!("{}", created.task.id);
    if !created.created {
        eprintln!("(an existing task with this idempotency key; nothing new was queued)");
    }
    Ok(())
}

fn render_task(d: &TaskDetail) -> String {
    let t = &d.task;
    let mut out = String::new();
    let mut field = |k: &str, v: String| out.push_str(&format!("{k:<13} {v}\n"));
    field("id", t.id.clone());
    field(
        "state",
        if t.cancel_requested && !matches!(t.state.as_str(), "cancelled") {
            format!("{} (cancel requested)", t.state)
        } else {
            t.state.clone()
        },
    );
    field("priority", t.priority.clone());
    if !t.depends_on.is_empty() {
        field("depends on", format!("{} (on failure: {})", t.depends_on.join(", "), t.on_dependency_failure));
    }
    if let Some(of) = &t.shadow_of {
        field("shadow of", format!("{of} (this run never changes that task's result)"));
    }
    field(
        "runner",
        if t.fallback.is_empty() {
            t.runner.clone()
        } else {
            format!("{} (fallback {})", t.runner, t.fallback.join(", "))
        },
    );
    field("capabilities", if t.capabilities.is_empty() { "-".into() } else { t.capabilities.join(", ") });
    field("attempts", attempts_used(t));
    field("agent", dash(t.agent.as_ref()));
    field("exit code", dash(t.exit_code));
    field("reason", dash(t.reason.as_ref()));
    field("timeout", t.timeout.clone());
    if t.max_cost_usd.is_some() || t.max_tokens.is_some() {
        let mut limits = Vec::new();
        if let Some(c) = t.max_cost_usd {
            // In cents, unless the ceiling is finer than a cent.
            let cents = |m: MicroUsd| if m.0.is_multiple_of(10_000) { m.cents() } else { format!("${}", m.decimal()) };
            limits.push(MicroUsd::from_usd(c).map_or_else(|| format!("${c}"), cents));
        }
        if let Some(n) = t.max_tokens {
            limits.push(format!("{n} tokens"));
        }
        field("budget", format!("{} per run", limits.join(", ")));
    }
    field("epoch", t.epoch.to_string());
    field("created", t.created_at.clone());
    field("updated", t.updated_at.clone());
    if t.state == "queued" {
        field("ready at", t.ready_at.clone());
    }
    field("started", dash(t.started_at.as_ref()));
    field("finished", dash(t.finished_at.as_ref()));
    if let Some(lease) = &t.lease_expires_at {
        field("lease until", lease.clone());
    }
    if let Some(key) = &t.idempotency_key {
        field("idem. key", key.clone());
    }
    if let Some(m) = &t.metadata {
        field("metadata", m.to_string());
    }
    if let Some(w) = &t.workspace {
        let mut how = vec![format!("{} at {}", w.repo, w.base.as_deref().unwrap_or("HEAD"))];
        if w.auto_commit {
            how.push("auto-commit".into());
        }
        how.push(format!("keep {}", w.keep_worktree.replace('_', "-")));
        field("workspace", how.join(" · "));
    }
    field("prompt", clip(&t.prompt, 200));
    if let Some(a) = d.attempts_detail.last()
        && a.outcome.is_none()
        && let Some(live) = &a.live
    {
        field(
            "live",
            match &a.live_detail {
                Some(detail) => format!("{live} ({detail})"),
                None => live.clone(),
            },
        );
    }
    if let Some(a) = d.attempts_detail.last()
        && let Some(step) = &a.latest_step
    {
        let live = if a.outcome.is_none() { "now" } else { "last step" };
        field(live, format!("{} (attempt {}, {} steps)", clip(step, 160), a.number, a.steps));
    }
    let spent: Vec<&RunReport> = d.attempts_detail.iter().filter_map(|a| a.report.as_ref()).collect();
    if !spent.is_empty() {
        let tokens = spent.iter().fold(0u64, |sum, r| sum.saturating_add(total_tokens(r)));
        let cost: MicroUsd = spent.iter().filter_map(|r| r.cost_usd.and_then(MicroUsd::from_usd)).sum();
        let priced = spent.iter().all(|r| r.cost_usd.is_some());
        field("spent", format!("{tokens} tokens, {cost}{}", if priced { "" } else { " (some runs reported no cost)" }));
    }
    if !d.attempts_detail.is_empty() {
        let mut table = Table::new(&[
            "ATTEMPT", "AGENT", "RUNNER", "EPOCH", "OUTCOME", "EXIT", "OUTPUT", "STARTED", "FINISHED", "REASON",
        ]);
        for a in &d.attempts_detail {
            table.row(vec![
                a.number.to_string(),
                a.agent.clone(),
                a.runner.clone().unwrap_or_else(|| t.runner.clone()),
                a.epoch.to_string(),
                a.outcome.clone().unwrap_or_else(|| "running".into()),
                dash(a.exit_code),
                format!(
                    "{} B{}",
                    a.output_bytes,
                    match (a.output_pruned, a.output_truncated, a.output_incomplete) {
                        (true, _, _) => " (pruned)",
                        (false, true, _) => " (truncated)",
                        (false, false, true) => " (incomplete)",
                        (false, false, false) => "",
                    }
                ),
                a.started_at.clone(),
                dash(a.finished_at.as_ref()),
                dash(a.reason.as_ref()),
            ]);
        }
        out.push('\n');
        out.push_str(&table.render());
        for a in &d.attempts_detail {
            if let Some(r) = &a.report {
                out.push('\n');
                out.push_str(&render_report(a.number, r));
            }
            if let Some(summary) = &a.summary {
                out.push_str(&format!("attempt {}: summary: {}\n", a.number, clip(summary, 300)));
            }
            for c in &a.checks {
                let how = match (c.passed, c.exit_code) {
                    (true, _) => "passed".to_owned(),
                    (false, Some(code)) => format!("FAILED (exit code {code})"),
                    (false, None) => "FAILED".to_owned(),
                };
                out.push_str(&format!(
                    "attempt {}: check {} {how} in {}\n",
                    a.number,
                    c.name,
                    muster_proto::human_duration(std::time::Duration::from_millis(c.duration_ms))
                ));
                if !c.passed && !c.output.trim().is_empty() {
                    for line in c.output.trim_end().lines().rev().take(5).collect::<Vec<_>>().into_iter().rev() {
                        out.push_str(&format!("    {line}\n"));
                    }
                }
            }
            if let Some(w) = &a.workspace {
                let mut line = format!(
                    "attempt {}: branch {} · {} · {} changed",
                    a.number,
                    w.branch,
                    crate::table::count(w.commits.len(), "commit", "commits"),
                    crate::table::count(w.files.len(), "file", "files")
                );
                if let Some(kept) = &w.kept_at {
                    line.push_str(&format!(" · worktree kept at {kept}"));
                }
                out.push_str(&format!("{line}\n"));
                if let Some(e) = &w.error {
                    out.push_str(&format!("  problem: {e}\n"));
                }
            }
        }
    }
    out
}

fn total_tokens(r: &RunReport) -> u64 {
    r.input_tokens
        .saturating_add(r.output_tokens)
        .saturating_add(r.cache_read_tokens)
        .saturating_add(r.cache_write_tokens)
}

/// A coding agent's report of one attempt, in a few lines.
fn render_report(number: u32, r: &RunReport) -> String {
    let mut head = vec![r.model.clone().unwrap_or_else(|| "model unknown".into())];
    if let Some(s) = &r.session_id {
        head.push(format!("session {s}"));
    }
    if let Some(t) = r.turns {
        head.push(format!("{t} turns"));
    }
    let plural = if r.tool_uses == 1 { "" } else { "s" };
    head.push(format!("{} tool call{plural} ({} failed)", r.tool_uses, r.tool_errors));
    let mut out = format!("attempt {number}: {}\n", head.join(" · "));
    out.push_str(&format!(
        "  tokens {} in, {} out, {} cache read, {} cache write · cost {}\n",
        r.input_tokens,
        r.output_tokens,
        r.cache_read_tokens,
        r.cache_write_tokens,
        r.cost_usd.map_or_else(|| "not reported".into(), usd)
    ));
    if let Some(result) = &r.result {
        out.push_str(&format!("  result: {}\n", clip(&result.replace('\n', " "), 300)));
    }
    out
}

async fn task_logs(client: &Client, id: &str, follow: bool, attempt: Option<u32>, json: bool) -> CliResult {
    let mut after = 0i64;
    let wait = Duration::from_secs(30);
    loop {
        let mut query = vec![("after", after.to_string())];
        if let Some(a) = attempt {
            query.push(("attempt", a.to_string()));
        }
        if follow {
            query.push(("wait", "30s".into()));
        }
        let page: LogsPage =
            client.get_waiting(&format!("/tasks/{}/logs?{}", segment(id), encode(&query)), wait).await?;
        let mut stdout = std::io::stdout().lock();
        for chunk in &page.chunks {
            if json {
                let line = serde_json::to_string(chunk).map_err(|e| CliError::new(exit::FAILURE, e.to_string()))?;
                let _ = writeln!(stdout, "{line}");
            } else if chunk.stream == "stderr" {
                let _ = stdout.flush();
                eprint!("{}", chunk.data);
            } else {
                let _ = stdout.write_all(chunk.data.as_bytes());
            }
        }
        let _ = stdout.flush();
        if page.pruned {
            eprintln!("muster: this output was removed by retention (retention.output; see muster config)");
        }
        after = page.next_after;
        // Without --follow, read to the end of what is stored and stop.
        if page.done || (!follow && page.chunks.is_empty()) {
            return Ok(());
        }
    }
}

/// Polls by long-poll on the task's events until it reaches a terminal state.
async fn wait_for_end(client: &Client, id: &str, limit: Option<Duration>) -> CliResult<TaskView> {
    let deadline = limit.map(|l| tokio::time::Instant::now() + l);
    let mut after = 0i64;
    loop {
        let detail: TaskDetail = client.get(&format!("/tasks/{}", segment(id))).await?;
        if matches!(detail.task.state.as_str(), "succeeded" | "failed" | "cancelled" | "skipped") {
            return Ok(detail.task);
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            return Err(CliError::new(
                exit::FAILURE,
                format!("task {id} is still {} after the timeout", detail.task.state),
            ));
        }
        let mut wait = Duration::from_secs(20);
        if let Some(d) = deadline {
            wait = wait.min(d.saturating_duration_since(tokio::time::Instant::now())).max(Duration::from_millis(10));
        }
        let wait_text = format!("{}ms", wait.as_millis());
        let query = encode(&[("task", detail.task.id.clone()), ("after", after.to_string()), ("wait", wait_text)]);
        let page: EventPage = client.get_waiting(&format!("/events?{query}"), wait).await?;
        after = page.next_after;
    }
}

/// What an operator's change left: the task as JSON, or a line.
fn changed(t: &TaskView, json: bool, what: &str) -> CliResult {
    if json {
        return print_json(t);
    }
    eprintln!("{} {what}", t.id);
    Ok(())
}

/// `muster approve ID`: a task pending approval joins the queue.
pub(crate) async fn approve(conn: &ConnArgs, id: &str, json: bool) -> CliResult {
    let client = conn.client()?;
    let t: TaskView = client.post(&format!("/tasks/{}/approve", segment(id)), &()).await?;
    changed(&t, json, "approved: queued")
}

/// `muster reject ID --reason TEXT`: a task pending approval ends `cancelled`.
pub(crate) async fn reject(conn: &ConnArgs, id: &str, reason: String, json: bool) -> CliResult {
    let client = conn.client()?;
    let t: TaskView =
        client.post(&format!("/tasks/{}/reject", segment(id)), &muster_proto::api::TaskReject { reason }).await?;
    changed(&t, json, "rejected")
}
