//! The operator commands: `task`, `agent add|list|pause|resume`, `token`,
//! `status`, `events`.

use crate::client::{CliResult, segment};
use crate::table::{Table, attempts_used, clip, dash};
use crate::{CliError, Client, exit};
use clap::{Args, Subcommand};
use muster_core::MicroUsd;
use muster_proto::api::{
    AgentAdd, AgentCreated, AgentView, DiffView, DurationValue, EventPage, EventView, LogsPage, StatusView, StepsPage,
    TaskCreated, TaskDetail, TaskPage, TaskSubmit, TaskView, TokenView,
};
use muster_proto::ws::RunReport;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

/// How to reach the hub.
#[derive(Debug, Clone, Args)]
pub struct ConnArgs {
    /// The hub's base URL [default: http://127.0.0.1:4000].
    #[arg(long = "url", visible_alias = "hub", env = "MUSTER_URL", global = true)]
    pub url: Option<String>,
    /// An API token; defaults to the admin token in the data directory.
    #[arg(long, env = "MUSTER_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// The hub's data directory [default: .muster]; the CLI reads `admin.token` there.
    #[arg(long, env = "MUSTER_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,
}

pub const DEFAULT_URL: &str = "http://127.0.0.1:4000";
pub const DEFAULT_DATA_DIR: &str = ".muster";

impl ConnArgs {
    pub fn client(&self) -> CliResult<Client> {
        let token = match &self.token {
            Some(t) if !t.trim().is_empty() => t.clone(),
            _ => {
                let dir = self.data_dir.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
                let path = dir.join("admin.token");
                std::fs::read_to_string(&path).map_err(|e| {
                    CliError::new(
                        exit::AUTH,
                        format!(
                            "no token: set MUSTER_TOKEN or --token, or run where {} is readable ({e})",
                            path.display()
                        ),
                    )
                })?
            }
        };
        Client::new(self.url.as_deref().unwrap_or(DEFAULT_URL), &token)
    }
}

fn print_json<T: serde::Serialize>(value: &T) -> CliResult {
    let text = serde_json::to_string_pretty(value).map_err(|e| CliError::new(exit::FAILURE, e.to_string()))?;
    println!("{text}");
    Ok(())
}

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

pub async fn task(conn: &ConnArgs, cmd: TaskCmd) -> CliResult {
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

fn usage(e: impl std::fmt::Display) -> CliError {
    CliError::new(exit::USAGE, e.to_string())
}

fn encode(pairs: &[(&str, String)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// The task `muster task add` (or `schedule add`) describes.
fn task_submit(args: TaskAddArgs) -> CliResult<TaskSubmit> {
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

/// `$0.012300`, for dollars as the hub serves them.
pub(crate) fn usd(cost: f64) -> String {
    MicroUsd::from_usd(cost).map_or_else(|| format!("${cost}"), |m| m.to_string())
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
pub async fn wait_for_end(client: &Client, id: &str, limit: Option<Duration>) -> CliResult<TaskView> {
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

#[derive(Debug, Args)]
pub struct AgentAddArgs {
    /// The agent's name: lowercase letters, digits, '-', '_' and '.'.
    pub name: String,
    /// A capability the agent offers (repeatable).
    #[arg(long = "cap")]
    pub caps: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

pub async fn agent_add(conn: &ConnArgs, args: AgentAddArgs) -> CliResult {
    let client = conn.client()?;
    let created: AgentCreated = client.post("/agents", &AgentAdd { name: args.name, capabilities: args.caps }).await?;
    if args.json {
        return print_json(&serde_json::json!({ "name": created.name, "token": created.token }));
    }
    println!("{}", created.token);
    eprintln!(
        "agent {} registered (token id {}); the token above is shown only once. Start it with:",
        created.name, created.token_id
    );
    eprintln!("  MUSTER_TOKEN=<token> muster agent run --hub {}", client.base());
    Ok(())
}

pub async fn agent_list(conn: &ConnArgs, json: bool) -> CliResult {
    let client = conn.client()?;
    let agents: Vec<AgentView> = client.get("/agents").await?;
    if json {
        return print_json(&agents);
    }
    let mut t =
        Table::new(&["NAME", "STATE", "SLOTS", "RUNNERS", "CAPABILITIES", "VERSION", "LAST SEEN", "UNAVAILABLE"]);
    for a in &agents {
        t.row(vec![
            a.name.clone(),
            a.state.clone(),
            format!("{}/{}", a.used_slots, a.slots),
            if a.runners.is_empty() { "-".into() } else { a.runners.join(",") },
            if a.capabilities.is_empty() { "-".into() } else { a.capabilities.join(",") },
            dash(a.version.as_ref()),
            dash(a.last_seen_at.as_ref()),
            if a.unavailable.is_empty() { "-".into() } else { a.unavailable.join("; ") },
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

pub async fn agent_token(conn: &ConnArgs, name: &str, json: bool) -> CliResult {
    let client = conn.client()?;
    let created: AgentCreated = client.post(&format!("/agents/{}/token", segment(name)), &()).await?;
    if json {
        return print_json(&serde_json::json!({ "name": created.name, "token": created.token }));
    }
    println!("{}", created.token);
    eprintln!("agent {}: the old token is revoked; the new one above is shown only once", created.name);
    Ok(())
}

pub async fn agent_pause(conn: &ConnArgs, name: &str, pause: bool) -> CliResult {
    let client = conn.client()?;
    let action = if pause { "pause" } else { "resume" };
    let agent: AgentView = client.post(&format!("/agents/{}/{action}", segment(name)), &()).await?;
    eprintln!("agent {} is {}", agent.name, agent.state);
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// List tokens (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by id; an agent using it is disconnected.
    Revoke { id: String },
}

pub async fn token(conn: &ConnArgs, cmd: TokenCmd) -> CliResult {
    let client = conn.client()?;
    match cmd {
        TokenCmd::List { json } => {
            let tokens: Vec<TokenView> = client.get("/tokens").await?;
            if json {
                return print_json(&tokens);
            }
            let mut t = Table::new(&["ID", "NAME", "SCOPE", "AGENT", "CREATED", "LAST USED", "REVOKED"]);
            for tok in &tokens {
                t.row(vec![
                    tok.id.clone(),
                    tok.name.clone(),
                    tok.scope.clone(),
                    dash(tok.agent.as_ref()),
                    tok.created_at.clone(),
                    dash(tok.last_used_at.as_ref()),
                    dash(tok.revoked_at.as_ref()),
                ]);
            }
            print!("{}", t.render());
            Ok(())
        }
        TokenCmd::Revoke { id } => {
            let tok: TokenView = client.post(&format!("/tokens/{}/revoke", segment(&id)), &()).await?;
            eprintln!("revoked {} ({})", tok.id, tok.name);
            Ok(())
        }
    }
}

pub async fn status(conn: &ConnArgs, json: bool) -> CliResult {
    let client = conn.client()?;
    let s: StatusView = client.get("/status").await?;
    if json {
        return print_json(&s);
    }
    let mut notes = String::new();
    if s.draining {
        notes.push_str(" draining");
    }
    if s.dispatch_paused {
        notes.push_str(" DISPATCH PAUSED (muster resume)");
    }
    println!("hub        {} (muster {}, up {}s){notes}", client.base(), s.version, s.uptime_secs);
    let line = |m: &std::collections::BTreeMap<String, u64>, order: &[&str]| {
        order.iter().map(|k| format!("{k} {}", m.get(*k).copied().unwrap_or(0))).collect::<Vec<_>>().join("  ")
    };
    let window = muster_proto::human_duration(Duration::from_secs(s.health.window_secs));
    println!("health     {} (runs ended in the last {window})", s.health.level);
    for reason in &s.health.reasons {
        println!("           - {reason}");
    }
    println!(
        "tasks      {}",
        line(
            &s.tasks,
            &[
                "blocked",
                "pending_approval",
                "queued",
                "assigned",
                "running",
                "succeeded",
                "failed",
                "cancelled",
                "skipped"
            ]
        )
    );
    println!("agents     {}", line(&s.agents, &["idle", "busy", "draining", "paused", "offline"]));
    println!("sockets    {} connected", s.connected_agents);
    println!("events     {} recorded", s.last_event);
    Ok(())
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    #[arg(long)]
    pub task: Option<String>,
    #[arg(long)]
    pub agent: Option<String>,
    /// An event kind (task.failed) or a family of them (task, lock, agent).
    #[arg(long)]
    pub kind: Option<String>,
    /// Only events after this sequence number.
    #[arg(long, default_value_t = 0)]
    pub after: i64,
    /// Print at most this many events (without --follow).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Keep printing new events as they happen.
    #[arg(long, short)]
    pub follow: bool,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

pub async fn events(conn: &ConnArgs, args: EventsArgs) -> CliResult {
    let client = conn.client()?;
    let mut after = args.after;
    let mut left = if args.follow { usize::MAX } else { args.limit.unwrap_or(usize::MAX) };
    while left > 0 {
        let page_size = left.min(1000);
        let mut query = vec![("after", after.to_string()), ("limit", page_size.to_string())];
        if let Some(t) = &args.task {
            query.push(("task", t.clone()));
        }
        if let Some(a) = &args.agent {
            query.push(("agent", a.clone()));
        }
        if let Some(k) = &args.kind {
            query.push(("kind", k.clone()));
        }
        if args.follow {
            query.push(("wait", "30s".into()));
        }
        let page: EventPage =
            client.get_waiting(&format!("/events?{}", encode(&query)), Duration::from_secs(30)).await?;
        for e in &page.events {
            if args.json {
                println!("{}", serde_json::to_string(e).map_err(|e| CliError::new(exit::FAILURE, e.to_string()))?);
            } else {
                println!("{}", event_line(e));
            }
        }
        after = page.next_after;
        left = left.saturating_sub(page.events.len());
        if !args.follow && page.events.len() < page_size {
            return Ok(());
        }
    }
    Ok(())
}

fn event_line(e: &EventView) -> String {
    let mut parts = vec![format!("{:>6}", e.seq), e.at.clone(), format!("{:<22}", e.kind)];
    if let Some(t) = &e.task {
        parts.push(t.clone());
    }
    if let Some(a) = &e.agent {
        parts.push(format!("agent={a}"));
    }
    if let Some(ep) = e.epoch {
        parts.push(format!("epoch={ep}"));
    }
    if let Some(s) = &e.state {
        parts.push(format!("state={s}"));
    }
    if let Some(d) = &e.detail {
        parts.push(format!("({})", clip(d, 120)));
    }
    parts.join(" ")
}

#[derive(Debug, Subcommand)]
pub enum BackupCmd {
    /// List backups, newest first.
    List {
        #[arg(long)]
        json: bool,
    },
}

/// `muster backup`: an online, verified copy of the database, now.
pub async fn backup(conn: &ConnArgs, cmd: Option<BackupCmd>, json: bool) -> CliResult {
    let client = conn.client()?;
    match cmd {
        None => {
            let b: muster_proto::api::BackupView =
                client.post_waiting("/admin/backups", &(), Duration::from_secs(3600)).await?;
            if json {
                return print_json(&b);
            }
            println!("{}", b.path);
            eprintln!("backup verified: {} bytes, {} tasks", b.bytes, b.tasks.unwrap_or(0));
            Ok(())
        }
        Some(BackupCmd::List { json }) => {
            let all: Vec<muster_proto::api::BackupView> = client.get("/admin/backups").await?;
            if json {
                return print_json(&all);
            }
            let mut t = Table::new(&["FILE", "CREATED", "BYTES", "PATH"]);
            for b in &all {
                t.row(vec![b.file.clone(), b.created_at.clone(), b.bytes.to_string(), b.path.clone()]);
            }
            print!("{}", t.render());
            Ok(())
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum AlertsCmd {
    /// Acknowledge a firing alert: someone is on it.
    Ack { rule: String },
}

/// `muster alerts`: every rule, its state and why.
pub async fn alerts(conn: &ConnArgs, cmd: Option<AlertsCmd>, json: bool) -> CliResult {
    let client = conn.client()?;
    if let Some(AlertsCmd::Ack { rule }) = cmd {
        let a: muster_proto::api::AlertView = client.post(&format!("/alerts/{}/ack", segment(&rule)), &()).await?;
        if json {
            return print_json(&a);
        }
        eprintln!("{} acknowledged", a.rule);
        return Ok(());
    }
    let all: Vec<muster_proto::api::AlertView> = client.get("/alerts").await?;
    if json {
        return print_json(&all);
    }
    let mut t = Table::new(&["RULE", "STATE", "SEVERITY", "SINCE", "DETAIL"]);
    for a in &all {
        let state = match (&a.acknowledged_by, a.state.as_str()) {
            (Some(by), "acknowledged") => format!("acknowledged by {by}"),
            _ if !a.enabled => "off".to_owned(),
            _ => a.state.clone(),
        };
        let detail = if a.state == "resolved" { "-".to_owned() } else { dash(a.detail.as_ref()) };
        let since = if a.state == "resolved" { "-".to_owned() } else { dash(a.since.as_ref()) };
        t.row(vec![a.rule.clone(), state, a.severity.clone(), since, detail]);
    }
    print!("{}", t.render());
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Change settings: `muster config set heartbeat_interval=5s retention.output=7d`.
    Set {
        /// KEY=VALUE pairs, applied together or not at all.
        #[arg(required = true, value_name = "KEY=VALUE")]
        pairs: Vec<String>,
    },
    /// Return settings to their startup values (muster.toml, environment, flags).
    Reset {
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },
    /// Alert rules' settings; `set` changes them at once, no restart.
    Alerts {
        #[command(subcommand)]
        cmd: Option<AlertConfigCmd>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AlertConfigCmd {
    /// Change one rule's settings.
    Set {
        rule: String,
        #[arg(long, allow_negative_numbers = true)]
        threshold: Option<f64>,
        /// warning or critical.
        #[arg(long)]
        severity: Option<String>,
        #[arg(long)]
        enabled: Option<bool>,
    },
}

/// A value as typed on the command line, as JSON: numbers and booleans as
/// such, everything else as a string (durations, names, `off`).
fn typed(value: &str) -> serde_json::Value {
    match value {
        "true" => true.into(),
        "false" => false.into(),
        _ if value.bytes().all(|b| b.is_ascii_digit() || b == b'-') && value.parse::<i64>().is_ok() => {
            value.parse::<i64>().map_or_else(|_| value.into(), serde_json::Value::from)
        }
        _ => match value.parse::<f64>() {
            Ok(n) if value.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b'-') => {
                serde_json::Number::from_f64(n).map_or_else(|| value.into(), serde_json::Value::Number)
            }
            _ => value.into(),
        },
    }
}

/// `muster config [set K=V... | reset K... | alerts ...]`.
pub async fn config(conn: &ConnArgs, cmd: Option<ConfigCmd>, json: bool) -> CliResult {
    let client = conn.client()?;
    let view: muster_proto::api::ConfigView = match cmd {
        None => client.get("/config").await?,
        Some(ConfigCmd::Set { pairs }) => {
            let mut patch = serde_json::Map::new();
            for pair in &pairs {
                let Some((key, value)) = pair.split_once('=') else {
                    return Err(CliError::new(
                        exit::USAGE,
                        format!("{pair:?}: write KEY=VALUE, for example heartbeat_interval=5s"),
                    ));
                };
                patch.insert(key.trim().to_owned(), typed(value.trim()));
            }
            let view = client.put("/config", &patch).await?;
            eprintln!("applied; in force now and kept across restarts (muster config reset KEY undoes it)");
            view
        }
        Some(ConfigCmd::Reset { keys }) => {
            let patch: serde_json::Map<String, serde_json::Value> =
                keys.iter().map(|k| (k.clone(), serde_json::Value::Null)).collect();
            let view = client.put("/config", &patch).await?;
            eprintln!("back to the startup values");
            view
        }
        Some(ConfigCmd::Alerts { cmd, json }) => return alert_config(&client, cmd, json).await,
    };
    if json {
        return print_json(&view);
    }
    let show = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        other => other.to_string(),
    };
    let mut t = Table::new(&["KEY", "VALUE", "SET", "MEANING"]);
    for s in &view.settings {
        let set = if s.runtime { format!("at runtime (startup: {})", show(&s.startup)) } else { "startup".into() };
        t.row(vec![s.key.clone(), show(&s.value), set, s.description.clone()]);
    }
    print!("{}", t.render());
    Ok(())
}

async fn alert_config(client: &Client, cmd: Option<AlertConfigCmd>, json: bool) -> CliResult {
    let configs: std::collections::BTreeMap<String, muster_proto::api::RuleConfigView> = match cmd {
        None => client.get("/config/alerts").await?,
        Some(AlertConfigCmd::Set { rule, threshold, severity, enabled }) => {
            let patch = muster_proto::api::RuleConfigPatch { enabled, severity, threshold };
            let body = std::collections::BTreeMap::from([(rule.clone(), patch)]);
            let updated = client.put("/config/alerts", &body).await?;
            eprintln!("{rule} updated; it applies at the next evaluation");
            updated
        }
    };
    if json {
        return print_json(&configs);
    }
    let mut t = Table::new(&["RULE", "ENABLED", "SEVERITY", "THRESHOLD", "MEANING"]);
    for (rule, c) in &configs {
        t.row(vec![
            rule.clone(),
            c.enabled.to_string(),
            c.severity.clone(),
            c.threshold.to_string(),
            c.threshold_meaning.clone(),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

/// `muster compact`: applies retention and gives free space back, now.
pub async fn compact(conn: &ConnArgs, json: bool) -> CliResult {
    let client = conn.client()?;
    let c: muster_proto::api::CompactView =
        client.post_waiting("/admin/compact", &(), Duration::from_secs(3600)).await?;
    if json {
        return print_json(&c);
    }
    println!(
        "pruned     {} finished tasks, the output of {} more ({}), {} events",
        c.tasks_pruned,
        c.outputs_pruned,
        bytes(c.output_bytes_pruned),
        c.events_pruned
    );
    println!(
        "database   {} -> {}{}",
        bytes(c.bytes_before),
        bytes(c.bytes_after),
        if c.rewritten { " (rewritten once to give space back step by step)" } else { "" }
    );
    println!("took       {} ms", c.took_ms);
    Ok(())
}

/// `muster db`: the database's size, free space, last backup and compaction.
pub async fn db(conn: &ConnArgs, json: bool) -> CliResult {
    let client = conn.client()?;
    let d: muster_proto::api::DbView = client.get("/admin/db").await?;
    if json {
        return print_json(&d);
    }
    println!("database     {} {}", d.backend, d.path.as_deref().unwrap_or("-"));
    println!("size         {} (+ {} write-ahead log)", bytes(d.bytes), bytes(d.wal_bytes));
    println!(
        "free         {} of {} pages ({:.1}%){}",
        d.free_pages,
        d.pages,
        d.free_ratio * 100.0,
        match (d.auto_vacuum.as_str(), d.free_ratio > 0.25) {
            ("incremental", true) => ": muster compact gives them back",
            ("incremental", false) => "",
            _ => ": reused, never given back until muster compact rewrites the file once",
        }
    );
    println!("rows         {} tasks, {} events, {} of output", d.tasks, d.events, bytes(d.output_bytes));
    println!("retention    tasks {}, output {}, events {}", d.retention.tasks, d.retention.output, d.retention.events);
    match &d.last_compaction {
        Some(c) => println!("compacted    {} ({}); every {}", c.at, c.summary, d.compact_interval),
        None => println!("compacted    never; every {}", d.compact_interval),
    }
    match &d.last_backup {
        Some(b) => println!("backed up    {} ({}, {})", b.created_at, b.file, bytes(b.bytes)),
        None => println!("backed up    never: run muster backup"),
    }
    Ok(())
}

/// Bytes as people read them: `812 B`, `4.2 MiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// `muster check [--repair]`: exits 0 when nothing is wrong (after a repair,
/// when nothing is left), 1 otherwise.
pub async fn check(conn: &ConnArgs, repair: bool, json: bool) -> CliResult {
    let client = conn.client()?;
    let path = if repair { "/admin/check?repair=true" } else { "/admin/check" };
    let report: muster_proto::api::CheckView = client.post(path, &()).await?;
    if json {
        print_json(&report)?;
    } else {
        if report.findings.is_empty() {
            println!("ok: the database's integrity check and every invariant pass");
        }
        for f in &report.findings {
            println!("{:<10} {}", f.kind, f.detail);
        }
        for r in &report.repaired {
            println!("repaired   {r}");
        }
    }
    match (repair, report.remaining.len()) {
        (_, 0) => Ok(()),
        (true, n) => Err(CliError::new(exit::FAILURE, format!("{n} findings remain that a repair cannot fix"))),
        (false, n) => {
            Err(CliError::new(exit::FAILURE, format!("{n} findings; `muster check --repair` fixes what it can")))
        }
    }
}

/// `muster pause` / `muster resume`: all dispatch; runs under way go on.
pub async fn dispatch(conn: &ConnArgs, pause: bool) -> CliResult {
    let client = conn.client()?;
    let path = if pause { "/admin/pause" } else { "/admin/resume" };
    let _: StatusView = client.post(path, &()).await?;
    if pause {
        eprintln!("dispatch paused: no task is handed out until `muster resume`; runs under way go on");
    } else {
        eprintln!("dispatch resumed");
    }
    Ok(())
}

/// `muster agent drain NAME`: the agent finishes its runs, takes no new ones, and stops.
pub async fn agent_drain(conn: &ConnArgs, name: &str) -> CliResult {
    let client = conn.client()?;
    let agent: AgentView = client.post(&format!("/agents/{}/drain", segment(name)), &()).await?;
    eprintln!(
        "agent {} is {}: it finishes its {} runs, takes no new ones, then stops",
        agent.name, agent.state, agent.used_slots
    );
    Ok(())
}

/// `muster agent remove NAME [--force]`.
pub async fn agent_remove(conn: &ConnArgs, name: &str, force: bool, json: bool) -> CliResult {
    let client = conn.client()?;
    let path = format!("/agents/{}{}", segment(name), if force { "?force=true" } else { "" });
    let removed: muster_proto::api::AgentRemoved = client.delete(&path).await?;
    if json {
        return print_json(&removed);
    }
    eprintln!("agent {} removed: its token is revoked; its history keeps its name", removed.name);
    for t in &removed.tasks {
        let became = match t.state.as_str() {
            "queued" => "queued again",
            "failed" => "failed: it had no attempt left",
            "cancelled" => "cancelled, as it had been asked",
            other => other,
        };
        println!("{}\t{became}", t.task);
    }
    Ok(())
}

/// A line of block characters, one per value, scaled to the largest.
fn sparkline(values: &[f64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().copied().fold(0.0, f64::max);
    values
        .iter()
        .map(|v| if max <= 0.0 { BARS[0] } else { BARS[((v / max) * 7.0).round().clamp(0.0, 7.0) as usize] })
        .collect()
}

/// `muster metrics`: the last hour at a glance.
pub async fn metrics(conn: &ConnArgs, json: bool) -> CliResult {
    let client = conn.client()?;
    let w: muster_proto::api::MetricsWindow = client.get("/metrics").await?;
    if json {
        return print_json(&w);
    }
    let Some(last) = w.points.last() else {
        println!("no points yet: the window takes one every {} s", w.interval_secs);
        return Ok(());
    };
    let span = muster_proto::human_duration(Duration::from_secs_f64(w.interval_secs * w.points.len() as f64));
    let succeeded: u64 = w.points.iter().map(|p| p.succeeded).sum();
    let failed: u64 = w.points.iter().map(|p| p.failed).sum();
    let ended = succeeded + failed;
    let recent: Vec<&muster_proto::api::MetricsPoint> = w.points.iter().rev().take(30).collect();
    let throughput = recent.iter().map(|p| p.throughput).sum::<f64>() / recent.len() as f64;
    let latency = w.points.iter().rev().find(|p| p.latency_p50.is_some());
    let secs = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}s"));
    let pct = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{:.0}%", v * 100.0));
    println!("window       last {span} ({} points, one every {} s)", w.points.len(), w.interval_secs);
    println!(
        "queue        {} queued, {} {:+.1}/min; {} running",
        last.queued, w.queue_trend, w.queue_trend_per_min, last.running
    );
    println!("             {}", sparkline(&w.points.iter().map(|p| p.queued as f64).collect::<Vec<_>>()));
    println!("throughput   {throughput:.2} runs/s (last {} points)", recent.len());
    println!(
        "latency      p50 {}  p95 {}  p99 {} (queue wait)",
        secs(latency.and_then(|p| p.latency_p50)),
        secs(latency.and_then(|p| p.latency_p95)),
        secs(latency.and_then(|p| p.latency_p99))
    );
    println!("utilization  {}", pct(last.utilization));
    println!(
        "failures     {failed} of {ended} runs ({})",
        if ended == 0 { "-".to_owned() } else { format!("{:.0}%", failed as f64 * 100.0 / ended as f64) }
    );
    Ok(())
}

/// `muster diagnose`: one report of what is wrong and what to do. Exits 1
/// when it finds a problem.
pub async fn diagnose(conn: &ConnArgs, json: bool) -> CliResult {
    let client = conn.client()?;
    let d: muster_proto::api::DiagnoseView = client.get("/admin/diagnose").await?;
    if json {
        print_json(&d)?;
    } else {
        println!("hub        {} ({}), {}", client.base(), d.health.level, if d.ready { "ready" } else { "NOT READY" });
        println!("agents     {} of {} online", d.agents_online, d.agents_registered);
        println!("tasks      {} queued, {} running", d.queued, d.running);
        println!("backup     {}", d.last_backup_age_secs.map_or("none yet".to_owned(), |s| format!("{s} s old")));
        if d.problems.is_empty() {
            println!("\nno problems found");
        } else {
            println!("\n{} problems:", d.problems.len());
            for p in &d.problems {
                println!("- [{}] {}", p.area, p.what);
                println!("    next: {}", p.next_step);
            }
        }
        if !d.notes.is_empty() {
            println!("\nnotes:");
            for n in &d.notes {
                println!("- [{}] {}", n.area, n.what);
                println!("    next: {}", n.next_step);
            }
        }
        if !d.recent_log.is_empty() {
            println!("\nrecent warnings and errors in the hub's log:");
            for line in &d.recent_log {
                println!("  {}", clip(line, 200));
            }
        }
    }
    if d.problems.is_empty() {
        Ok(())
    } else {
        Err(CliError::new(exit::FAILURE, format!("{} problems found", d.problems.len())))
    }
}

/// `muster slo`: each objective, its error budget left and how fast it burns.
pub async fn slo(conn: &ConnArgs, json: bool) -> CliResult {
    let client = conn.client()?;
    let all: Vec<muster_proto::api::SloView> = client.get("/slo").await?;
    if json {
        return print_json(&all);
    }
    let mut t =
        Table::new(&["OBJECTIVE", "TARGET", "WINDOW", "GOOD/TOTAL", "SLI", "BUDGET LEFT", "BURN (1H)", "STATUS"]);
    for s in &all {
        let what =
            format!("{} within {}", s.kind, muster_proto::human_duration(Duration::from_secs_f64(s.threshold_secs)));
        t.row(vec![
            format!("{} ({what})", s.name),
            format!("{}%", s.target * 100.0),
            muster_proto::human_duration(Duration::from_secs(s.window_secs)),
            format!("{}/{}", s.good, s.total),
            s.sli.map_or("-".into(), |v| format!("{:.3}%", v * 100.0)),
            format!("{:.0}%", s.budget_remaining * 100.0),
            format!("{:.2}", s.burn_rate_1h),
            s.status.clone(),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

/// `muster costs`: tokens and cost, summed by task, agent, runner or day.
pub async fn costs(conn: &ConnArgs, by: &str, since: Option<String>, json: bool) -> CliResult {
    let client = conn.client()?;
    let mut query = vec![("by", by.to_owned())];
    if let Some(s) = since {
        query.push(("since", s));
    }
    let view: muster_proto::api::CostsView = client.get(&format!("/costs?{}", encode(&query))).await?;
    if json {
        return print_json(&view);
    }
    if view.rows.is_empty() {
        eprintln!("(no attempt since {} reported what it used)", view.since);
        return Ok(());
    }
    let key = match view.by.as_str() {
        "task" => "TASK",
        "agent" => "AGENT",
        "runner" => "RUNNER",
        _ => "DAY (UTC)",
    };
    let mut t = Table::new(&[key, "ATTEMPTS", "INPUT", "OUTPUT", "CACHE READ", "CACHE WRITE", "COST (USD)"]);
    for r in view.rows.iter().chain(std::iter::once(&view.total)) {
        let unpriced = r.attempts - r.priced_attempts.min(r.attempts);
        t.row(vec![
            r.key.clone(),
            r.attempts.to_string(),
            r.input_tokens.to_string(),
            r.output_tokens.to_string(),
            r.cache_read_tokens.to_string(),
            r.cache_write_tokens.to_string(),
            {
                let cost = usd(r.cost_usd);
                let cost = cost.trim_start_matches('$');
                if unpriced > 0 { format!("{cost} ({unpriced} unpriced)") } else { cost.to_owned() }
            },
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum BreakerCmd {
    /// Close an agent's or a runner's breaker now, without waiting for a probe.
    Reset {
        /// The agent or runner.
        name: String,
        /// agent or runner; needed only when an agent and a runner share the name.
        #[arg(long, value_parser = ["agent", "runner"])]
        scope: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

fn breakers_table(all: &[muster_proto::api::BreakerView]) -> String {
    let mut t = Table::new(&["SCOPE", "NAME", "STATE", "FAILURES", "OPENED", "HALF-OPENS", "PROBE"]);
    for b in all {
        t.row(vec![
            b.scope.clone(),
            b.name.clone(),
            b.state.replace('_', "-"),
            b.failures.to_string(),
            dash(b.opened_at.as_ref()),
            dash(b.half_opens_at.as_ref()),
            dash(b.probe.as_ref()),
        ]);
    }
    t.render()
}

/// `muster breakers`: every agent's and runner's circuit breaker that has seen a failure.
pub async fn breakers(conn: &ConnArgs, json: bool) -> CliResult {
    let client = conn.client()?;
    let all: Vec<muster_proto::api::BreakerView> = client.get("/breakers").await?;
    if json {
        return print_json(&all);
    }
    if all.is_empty() {
        eprintln!("(no breaker has seen a failure: all closed)");
        return Ok(());
    }
    print!("{}", breakers_table(&all));
    Ok(())
}

/// `muster breaker reset NAME`.
pub async fn breaker(conn: &ConnArgs, cmd: BreakerCmd) -> CliResult {
    let client = conn.client()?;
    let BreakerCmd::Reset { name, scope, json } = cmd;
    let scope = match scope {
        Some(s) => s,
        None => {
            let all: Vec<muster_proto::api::BreakerView> = client.get("/breakers").await?;
            let scopes: Vec<&str> = all.iter().filter(|b| b.name == name).map(|b| b.scope.as_str()).collect();
            match scopes.as_slice() {
                [one] => (*one).to_owned(),
                [] => {
                    return Err(CliError::new(
                        exit::NOT_FOUND,
                        format!("no breaker named {name:?}; see `muster breakers`"),
                    ));
                }
                _ => {
                    return Err(usage(format!(
                        "{name:?} is both an agent and a runner: add --scope agent or --scope runner"
                    )));
                }
            }
        }
    };
    let b: muster_proto::api::BreakerView =
        client.post(&format!("/breakers/{}/{}/reset", segment(&scope), segment(&name)), &()).await?;
    if json {
        return print_json(&b);
    }
    eprintln!("{} {} closed", b.scope, b.name);
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum RunnerCmd {
    /// Every runner the hub knows: available, disabled, circuit open, or no agent offers it.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Take a runner out of service fleet-wide: nothing more is dispatched to it; tasks with fallbacks use them.
    Disable {
        name: String,
        /// Why (shown on the timeline and in `muster runner list`).
        #[arg(long)]
        reason: String,
    },
    /// Put a disabled runner back in service.
    Enable { name: String },
}

/// `muster runner ...`
pub async fn runner(conn: &ConnArgs, cmd: RunnerCmd) -> CliResult {
    let client = conn.client()?;
    match cmd {
        RunnerCmd::List { json } => {
            let all: Vec<muster_proto::api::RunnerView> = client.get("/runners").await?;
            if json {
                return print_json(&all);
            }
            let mut t = Table::new(&["RUNNER", "STATUS", "AGENTS", "WHY"]);
            for r in &all {
                let why = match (&r.disabled_reason, &r.disabled_by, &r.until) {
                    (Some(reason), Some(by), Some(until)) => format!("{reason} (by {by}; until {until})"),
                    (Some(reason), Some(by), None) => format!("{reason} (by {by}, {})", dash(r.disabled_at.as_ref())),
                    _ => "-".into(),
                };
                t.row(vec![
                    r.name.clone(),
                    r.status.clone(),
                    if r.agents.is_empty() { "-".into() } else { r.agents.join(", ") },
                    why,
                ]);
            }
            print!("{}", t.render());
            Ok(())
        }
        RunnerCmd::Disable { name, reason } => {
            let body = muster_proto::api::RunnerDisable { reason };
            let _: muster_proto::api::RunnerView =
                client.post(&format!("/runners/{}/disable", segment(&name)), &body).await?;
            eprintln!("runner {name} disabled: nothing more is dispatched to it");
            Ok(())
        }
        RunnerCmd::Enable { name } => {
            let _: muster_proto::api::RunnerView =
                client.post(&format!("/runners/{}/enable", segment(&name)), &()).await?;
            eprintln!("runner {name} enabled");
            Ok(())
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ShadowCmd {
    /// Shadow a share of the tasks that match on another runner.
    Set {
        /// The runner the shadows run on.
        #[arg(long)]
        runner: String,
        /// The share of matching tasks, 0 to 100.
        #[arg(long)]
        percent: f64,
        /// cap=NAME, runner=NAME or priority=LEVEL; a task must match every one (repeatable).
        #[arg(long = "filter")]
        filters: Vec<String>,
    },
    /// Stop shadowing on a runner.
    Clear { runner: String },
    /// The policies in force.
    List {
        #[arg(long)]
        json: bool,
    },
    /// How shadows compare with the tasks they shadow.
    Report {
        #[arg(long)]
        json: bool,
    },
}

/// `muster shadow ...`
pub async fn shadow(conn: &ConnArgs, cmd: ShadowCmd) -> CliResult {
    use muster_proto::api::{ShadowPolicy, ShadowReport};
    let client = conn.client()?;
    let show = |all: &[ShadowPolicy]| {
        if all.is_empty() {
            eprintln!("(no shadow policy: only tasks submitted with --shadow are shadowed)");
            return;
        }
        let mut t = Table::new(&["RUNNER", "PERCENT", "FILTERS"]);
        for p in all {
            t.row(vec![
                p.runner.clone(),
                format!("{}%", p.percent),
                if p.filters.is_empty() { "-".into() } else { p.filters.join(" ") },
            ]);
        }
        print!("{}", t.render());
    };
    match cmd {
        ShadowCmd::Set { runner, percent, filters } => {
            let all: Vec<ShadowPolicy> =
                client.put("/shadow/policies", &ShadowPolicy { runner, percent, filters }).await?;
            show(&all);
            Ok(())
        }
        ShadowCmd::Clear { runner } => {
            let all: Vec<ShadowPolicy> =
                client.put("/shadow/policies", &ShadowPolicy { runner, percent: 0.0, filters: Vec::new() }).await?;
            show(&all);
            Ok(())
        }
        ShadowCmd::List { json } => {
            let all: Vec<ShadowPolicy> = client.get("/shadow/policies").await?;
            if json {
                return print_json(&all);
            }
            show(&all);
            Ok(())
        }
        ShadowCmd::Report { json } => {
            let r: ShadowReport = client.get("/shadow/report").await?;
            if json {
                return print_json(&r);
            }
            println!("pairs compared     {}", r.pairs);
            println!("outcomes agree     {} of {}", r.outcome_matches, r.pairs);
            println!(
                "output agrees      {} of {} (after normalising whitespace, times and ids)",
                r.output_matches, r.pairs
            );
            println!("match rate         {:.0}% (both succeeded with the same output)", r.match_rate * 100.0);
            println!("run time           shadow {:+.0} ms on average", r.mean_duration_delta_ms);
            match r.mean_cost_delta_usd {
                Some(d) => println!("cost               shadow {d:+.6} USD on average"),
                None => println!("cost               not comparable (a side reported none)"),
            }
            if !r.by_runner.is_empty() {
                let mut t = Table::new(&["RUNNERS", "PAIRS", "MATCH RATE"]);
                for row in &r.by_runner {
                    t.row(vec![row.runners.clone(), row.pairs.to_string(), format!("{:.0}%", row.match_rate * 100.0)]);
                }
                print!("\n{}", t.render());
            }
            if !r.mismatches.is_empty() {
                let mut t = Table::new(&["TASK", "SHADOW", "RUNNERS", "STATES", "DIFFERS IN"]);
                for m in &r.mismatches {
                    t.row(vec![
                        m.task.clone(),
                        m.shadow.clone(),
                        format!("{} -> {}", m.task_runner, m.shadow_runner),
                        format!("{} / {}", m.task_state, m.shadow_state),
                        m.why.clone(),
                    ]);
                }
                print!("\nmismatches (muster task transcript ID for either side):\n{}", t.render());
            }
            Ok(())
        }
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
pub async fn approve(conn: &ConnArgs, id: &str, json: bool) -> CliResult {
    let client = conn.client()?;
    let t: TaskView = client.post(&format!("/tasks/{}/approve", segment(id)), &()).await?;
    changed(&t, json, "approved: queued")
}

/// `muster reject ID --reason TEXT`: a task pending approval ends `cancelled`.
pub async fn reject(conn: &ConnArgs, id: &str, reason: String, json: bool) -> CliResult {
    let client = conn.client()?;
    let t: TaskView =
        client.post(&format!("/tasks/{}/reject", segment(id)), &muster_proto::api::TaskReject { reason }).await?;
    changed(&t, json, "rejected")
}

#[derive(Debug, Subcommand)]
pub enum CtlCmd {
    /// Say how the run is getting on: a `task.note` on the timeline.
    Note {
        /// What to say (`-` reads it from standard input).
        text: String,
    },
    /// Take a named lock for the task (`repo:web/src/api.rs`, `deploy:staging`);
    /// it is let go when the run ends. Exit 4: still held by another task; 8: deadlock.
    Lock {
        name: String,
        /// Share it with other shared holders; the default is exclusive.
        #[arg(long)]
        shared: bool,
        /// Wait up to this long for it (`30s`, `5m`); without it, try once.
        #[arg(long)]
        wait: Option<String>,
    },
    /// Let go of a lock the task holds.
    Unlock { name: String },
    /// Ask a person: prints the option chosen. Exit 9: nobody answered in
    /// time and there was no default (the task fails); 4: the question was withdrawn.
    Ask {
        question: String,
        /// An option to choose from (give two or more); without any: yes and no.
        #[arg(long = "option")]
        options: Vec<String>,
        /// The option taken when nobody answers by the timeout.
        #[arg(long)]
        default: Option<String>,
        /// How long a person has (`30m`, `1d`); without it, no limit.
        #[arg(long)]
        timeout: Option<String>,
        /// Do not wait: the run should stop now; the task waits without a
        /// slot and runs again once answered (`muster ctl decisions` shows the answer).
        #[arg(long)]
        park: bool,
    },
    /// The task's decisions and their answers (for a run resumed after one).
    Decisions {
        #[arg(long)]
        json: bool,
    },
    /// Messages: `ctl msg send --to … TEXT`, `ctl msg read [--channel NAME] [--wait 30s]`.
    Msg {
        #[command(subcommand)]
        cmd: CtlMsgCmd,
    },
    /// Create a follow-up task, with every `muster task add` option (at most
    /// 20 per task, 5 deep): `ctl task add --runner shell 'make docs'`.
    Task {
        #[command(subcommand)]
        cmd: CtlTaskCmd,
    },
}

#[derive(Debug, Subcommand)]
pub enum CtlTaskCmd {
    /// Queue a follow-up task; prints its id.
    Add(Box<TaskAddArgs>),
}

#[derive(Debug, Subcommand)]
pub enum CtlMsgCmd {
    /// Send a message (`--to agent:NAME|task:ID|channel:NAME`), signed as this task.
    Send {
        #[arg(long)]
        to: String,
        text: String,
        #[arg(long)]
        reply_to: Option<i64>,
    },
    /// Read the task's mailbox (marked read), or `--channel NAME`; `--wait 30s` waits for one.
    Read {
        #[arg(long)]
        channel: Option<String>,
        /// Only messages after this id.
        #[arg(long, default_value_t = 0)]
        after: i64,
        #[arg(long)]
        wait: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

/// Asks a person for the run's task; unless it parks, waits for the answer.
/// Errors: nobody answered in time without a default (exit 9), or it was withdrawn (exit 4).
pub async fn ask(client: &Client, req: &muster_proto::api::CtlAsk) -> CliResult<muster_proto::api::DecisionView> {
    let asked: muster_proto::api::DecisionView = client.post("/ctl/decisions", req).await?;
    if req.park {
        return Ok(asked);
    }
    eprintln!("asked as decision #{}; waiting for a person (muster decide {} OPTION)", asked.id, asked.id);
    loop {
        let d: muster_proto::api::DecisionView =
            client.get_waiting(&format!("/ctl/decisions/{}?wait=60s", asked.id), Duration::from_secs(60)).await?;
        match d.state.as_str() {
            "open" => continue,
            "answered" | "auto_resolved" => return Ok(d),
            "timed_out" => {
                return Err(CliError::new(
                    exit::DECISION_TIMEOUT,
                    format!(
                        "decision #{}: nobody answered in time and there is no default; the task fails (decision_timeout)",
                        d.id
                    ),
                ));
            }
            other => return Err(CliError::new(exit::CONFLICT, format!("decision #{} was {other}", d.id))),
        }
    }
}

/// The client a run uses: its task token and the hub's address from its environment.
pub fn run_client() -> CliResult<Client> {
    let token = std::env::var("MUSTER_TASK_TOKEN").ok().filter(|t| !t.is_empty()).ok_or_else(|| {
        CliError::new(
            exit::AUTH,
            "muster ctl runs inside a task: MUSTER_TASK_TOKEN is not set (the agent sets it for each run)",
        )
    })?;
    let url = std::env::var("MUSTER_URL").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| DEFAULT_URL.to_owned());
    Client::new(&url, &token)
}

/// `muster ctl ...`: what a run does for its own task, with the task token
/// its agent gave it (`MUSTER_TASK_TOKEN`, and `MUSTER_URL`).
pub async fn ctl(cmd: CtlCmd) -> CliResult {
    let client = run_client()?;
    match cmd {
        CtlCmd::Note { text } => {
            let text = if text == "-" {
                let mut buf = String::new();
                std::io::stdin().read_to_string(&mut buf).map_err(|e| usage(format!("cannot read stdin: {e}")))?;
                buf
            } else {
                text
            };
            client.post_no_content("/ctl/note", &muster_proto::api::CtlNote { text }).await
        }
        CtlCmd::Lock { name, shared, wait } => {
            // `--wait 0`, like none, tries once.
            let wait = wait.filter(|w| !matches!(w.trim(), "0" | "0s" | "0ms"));
            let limit = wait.as_deref().map(|w| muster_proto::parse_duration("wait", w)).transpose().map_err(usage)?;
            let req = muster_proto::api::LockRequest {
                name,
                mode: shared.then(|| "shared".to_owned()),
                wait: wait.map(DurationValue::Text),
            };
            let _: serde_json::Value =
                client.post_waiting("/ctl/locks", &req, limit.unwrap_or_default() + Duration::from_secs(30)).await?;
            Ok(())
        }
        CtlCmd::Unlock { name } => {
            client.post_no_content("/ctl/locks/release", &muster_proto::api::LockName { name }).await
        }
        CtlCmd::Ask { question, options, default, timeout, park } => {
            let req = muster_proto::api::CtlAsk {
                question,
                options,
                default,
                timeout: timeout.map(DurationValue::Text),
                park,
                permission: false,
            };
            let d = ask(&client, &req).await?;
            if park {
                println!("#{}", d.id);
                eprintln!("asked as decision #{}: stop this run now; the task runs again once it is answered", d.id);
                return Ok(());
            }
            if let Some(note) = &d.note {
                eprintln!("note from {}: {note}", d.answered_by.as_deref().unwrap_or("?"));
            }
            println!("{}", d.answer.unwrap_or_default());
            Ok(())
        }
        CtlCmd::Msg { cmd: CtlMsgCmd::Send { to, text, reply_to } } => {
            let req = muster_proto::api::MessageSend { to, body: read_text(text)?, reply_to };
            let m: muster_proto::api::MessageView = client.post("/ctl/messages", &req).await?;
            println!("#{}", m.id);
            Ok(())
        }
        CtlCmd::Msg { cmd: CtlMsgCmd::Read { channel, after, wait, json } } => {
            let limit = wait.as_deref().map(|w| muster_proto::parse_duration("wait", w)).transpose().map_err(usage)?;
            let mut path = format!("/ctl/messages?after={after}");
            if let Some(c) = channel {
                path.push_str(&format!("&to={}", segment(&format!("channel:{c}"))));
            }
            if let Some(w) = &wait {
                path.push_str(&format!("&wait={}", segment(w)));
            }
            let page: Vec<muster_proto::api::MessageView> =
                client.get_waiting(&path, limit.unwrap_or_default()).await?;
            for m in &page {
                if json {
                    println!("{}", serde_json::to_string(m).unwrap_or_default());
                } else {
                    println!("{}", message_line(m));
                }
            }
            Ok(())
        }
        CtlCmd::Task { cmd: CtlTaskCmd::Add(args) } => {
            let json = args.json;
            let submit = task_submit(*args)?;
            let created: TaskCreated = client.post("/ctl/tasks", &submit).await?;
            if json {
                return print_json(&created.task);
            }
            println!("{}", created.task.id);
            Ok(())
        }
        CtlCmd::Decisions { json } => {
            let all: Vec<muster_proto::api::DecisionView> = client.get("/ctl/decisions").await?;
            if json {
                return print_json(&all);
            }
            for d in &all {
                println!("{}", decision_line(d));
            }
            Ok(())
        }
    }
}

/// `muster locks`: who holds which lock, and who waits for one.
pub async fn locks(conn: &ConnArgs, json: bool) -> CliResult {
    let client = conn.client()?;
    let view: muster_proto::api::LocksView = client.get("/locks").await?;
    if json {
        return print_json(&view);
    }
    if view.held.is_empty() && view.waiting.is_empty() {
        eprintln!("(no lock is held)");
        return Ok(());
    }
    let mut t = Table::new(&["LOCK", "MODE", "TASK", "STATE", "SINCE", "WAITS FOR"]);
    for (l, state) in view.held.iter().map(|l| (l, "held")).chain(view.waiting.iter().map(|l| (l, "waiting"))) {
        let waits_for = if l.waits_for.is_empty() { "-".to_owned() } else { l.waits_for.join(", ") };
        t.row(vec![l.name.clone(), l.mode.clone(), l.task.clone(), state.to_owned(), l.since.clone(), waits_for]);
    }
    print!("{}", t.render());
    Ok(())
}

/// `muster deadlocks`: the wait-for graph, one edge per line: a task, the
/// lock it waits for, and the tasks holding it.
pub async fn deadlocks(conn: &ConnArgs, json: bool) -> CliResult {
    let client = conn.client()?;
    let view: muster_proto::api::LocksView = client.get("/locks").await?;
    if json {
        return print_json(&view.waiting);
    }
    if view.waiting.is_empty() {
        eprintln!("(no task waits for a lock: no edges, no deadlock)");
        return Ok(());
    }
    for w in &view.waiting {
        println!("{} waits for {} ({}), held by {}", w.task, w.name, w.mode, w.waits_for.join(", "));
    }
    eprintln!("(a wait that would close a cycle is refused as it forms: see lock.deadlock in muster events)");
    Ok(())
}

/// `muster unlock NAME` or `muster unlock --all --yes`: an operator's force.
pub async fn unlock(conn: &ConnArgs, name: Option<String>, all: bool, yes: bool) -> CliResult {
    let client = conn.client()?;
    let body = match (name, all) {
        (Some(name), false) => serde_json::json!({ "name": name }),
        (None, true) if yes => serde_json::json!({ "all": true }),
        (None, true) => return Err(usage("unlock --all takes every lock from its task: add --yes to do it")),
        _ => return Err(usage("give a lock NAME, or --all --yes")),
    };
    let answer: serde_json::Value = client.post("/locks/unlock", &body).await?;
    let released = answer.get("released").and_then(|r| r.as_u64()).unwrap_or(0);
    println!("released {released} lock{}", if released == 1 { "" } else { "s" });
    Ok(())
}

// -- decisions -----------------------------------------------------------------

#[derive(Debug, Subcommand)]
pub enum DecisionCmd {
    /// Ask a person about a queued task: it waits in needs_decision until answered.
    Add {
        task: String,
        question: String,
        /// An option to choose from (give two or more); without any: yes and no.
        #[arg(long = "option")]
        options: Vec<String>,
        /// The option taken when nobody answers by the timeout; without one the task fails.
        #[arg(long)]
        default: Option<String>,
        /// How long a person has (`30m`, `1d`); without it, no limit.
        #[arg(long)]
        timeout: Option<String>,
        /// A token name that may answer (repeat for more); without it, any admin token.
        #[arg(long = "answerer")]
        answerers: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// One decision, whatever its state.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
}

fn decision_line(d: &muster_proto::api::DecisionView) -> String {
    let mut line = format!("#{} {}: {}", d.id, d.state.replace('_', "-"), d.question);
    if let Some(a) = &d.answer {
        line.push_str(&format!(" -> {a}"));
        if let Some(by) = &d.answered_by {
            line.push_str(&format!(" (by {by})"));
        }
    }
    line
}

fn decisions_table(all: &[muster_proto::api::DecisionView]) -> String {
    let mut t =
        Table::new(&["ID", "TASK", "STATE", "QUESTION", "OPTIONS", "DEFAULT", "DEADLINE", "ASKED BY", "ANSWER"]);
    for d in all {
        let answer = match (&d.answer, &d.answered_by) {
            (Some(a), Some(by)) => format!("{a} (by {by})"),
            (Some(a), None) => a.clone(),
            _ => "-".to_owned(),
        };
        let question: String = if d.question.chars().count() > 60 {
            d.question.chars().take(59).chain(['…']).collect()
        } else {
            d.question.clone()
        };
        t.row(vec![
            format!("#{}", d.id),
            d.task.clone(),
            d.state.replace('_', "-"),
            question.replace('\n', " "),
            d.options.join(" | "),
            dash(d.default.as_ref()),
            dash(d.deadline.as_ref()),
            d.raised_by.clone(),
            answer,
        ]);
    }
    t.render()
}

/// `muster decisions`: open ones by default, oldest first.
pub async fn decisions(conn: &ConnArgs, all: bool, task: Option<String>, json: bool) -> CliResult {
    let client = conn.client()?;
    let mut path = format!("/decisions?state={}", if all { "all" } else { "open" });
    if let Some(t) = task {
        path.push_str(&format!("&task={}", segment(&t)));
    }
    let list: Vec<muster_proto::api::DecisionView> = client.get(&path).await?;
    if json {
        return print_json(&list);
    }
    if list.is_empty() {
        eprintln!("{}", if all { "(no decisions)" } else { "(no decision waits for an answer)" });
        return Ok(());
    }
    print!("{}", decisions_table(&list));
    Ok(())
}

/// `muster decide ID OPTION [--note TEXT]`.
pub async fn decide(conn: &ConnArgs, id: &str, option: String, note: Option<String>, json: bool) -> CliResult {
    let client = conn.client()?;
    let id = id.trim_start_matches('#');
    let d: muster_proto::api::DecisionView = client
        .post(&format!("/decisions/{}/answer", segment(id)), &muster_proto::api::DecisionAnswer { option, note })
        .await?;
    if json {
        return print_json(&d);
    }
    println!("{}", decision_line(&d));
    Ok(())
}

/// `muster decision add|show`.
pub async fn decision(conn: &ConnArgs, cmd: DecisionCmd) -> CliResult {
    let client = conn.client()?;
    let (d, json): (muster_proto::api::DecisionView, bool) = match cmd {
        DecisionCmd::Add { task, question, options, default, timeout, answerers, json } => {
            let req = muster_proto::api::DecisionAdd {
                task,
                question,
                options,
                default,
                timeout: timeout.map(DurationValue::Text),
                answerers,
            };
            (client.post("/decisions", &req).await?, json)
        }
        DecisionCmd::Show { id, json } => {
            (client.get(&format!("/decisions/{}", segment(id.trim_start_matches('#')))).await?, json)
        }
    };
    if json {
        return print_json(&d);
    }
    println!("{}", decision_line(&d));
    if d.state == "open" {
        println!("options: {}", d.options.join(", "));
    }
    Ok(())
}

// -- pipelines -----------------------------------------------------------------

#[derive(Debug, Subcommand)]
pub enum PipelineCmd {
    /// Check a pipeline file and create its stages' tasks (every problem is
    /// reported with its line, and then nothing is created).
    Run {
        file: std::path::PathBuf,
        /// A value for `{{vars.NAME}}` in the file (repeat for more).
        #[arg(long = "var", value_name = "NAME=VALUE")]
        vars: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// A pipeline's stages, each with its task and where it stands.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Pipelines, newest first.
    List {
        #[arg(long)]
        json: bool,
    },
}

fn print_pipeline(p: &muster_proto::api::PipelineView) {
    println!("pipeline {}  {}  {}  (by {}, {})", p.id, p.name, p.state, p.created_by, p.created_at);
    let mut t = Table::new(&["STAGE", "TASK", "STATE", "ATTEMPTS", "REASON"]);
    for s in &p.stages {
        t.row(vec![
            s.name.clone(),
            s.task.clone(),
            s.state.replace('_', "-"),
            s.attempts.to_string(),
            dash(s.reason.as_ref()),
        ]);
    }
    print!("{}", t.render());
}

/// `muster pipeline run|show|list`.
pub async fn pipeline(conn: &ConnArgs, cmd: PipelineCmd) -> CliResult {
    let client = conn.client()?;
    match cmd {
        PipelineCmd::Run { file, vars, json } => {
            let source =
                std::fs::read_to_string(&file).map_err(|e| usage(format!("cannot read {}: {e}", file.display())))?;
            let mut map = std::collections::BTreeMap::new();
            for v in vars {
                let (k, val) = v.split_once('=').ok_or_else(|| usage(format!("--var {v:?}: expected NAME=VALUE")))?;
                map.insert(k.trim().to_owned(), val.to_owned());
            }
            let req = muster_proto::api::PipelineRun { source, vars: map };
            let p: muster_proto::api::PipelineView = match client.post("/pipelines", &req).await {
                Ok(p) => p,
                Err(e) if e.code == exit::USAGE => {
                    // One problem per line, each as FILE:LINE: …
                    let shown = file.display();
                    let lines: Vec<String> = e
                        .message
                        .strip_prefix("source: ")
                        .unwrap_or(&e.message)
                        .lines()
                        .map(|l| match l.strip_prefix("line ").and_then(|r| r.split_once(": ")) {
                            Some((n, m)) => format!("{shown}:{n}: {m}"),
                            None => format!("{shown}: {l}"),
                        })
                        .collect();
                    return Err(CliError::new(exit::USAGE, lines.join("\n")));
                }
                Err(e) => return Err(e),
            };
            if json {
                return print_json(&p);
            }
            print_pipeline(&p);
            Ok(())
        }
        PipelineCmd::Show { id, json } => {
            let p: muster_proto::api::PipelineView = client.get(&format!("/pipelines/{}", segment(&id))).await?;
            if json {
                return print_json(&p);
            }
            print_pipeline(&p);
            Ok(())
        }
        PipelineCmd::List { json } => {
            let all: Vec<muster_proto::api::PipelineView> = client.get("/pipelines").await?;
            if json {
                return print_json(&all);
            }
            if all.is_empty() {
                eprintln!("(no pipelines)");
                return Ok(());
            }
            let mut t = Table::new(&["ID", "NAME", "STATE", "STAGES", "CREATED", "BY"]);
            for p in &all {
                let done = p.stages.iter().filter(|s| s.state == "succeeded").count();
                t.row(vec![
                    p.id.to_string(),
                    p.name.clone(),
                    p.state.clone(),
                    format!("{done}/{}", p.stages.len()),
                    p.created_at.clone(),
                    p.created_by.clone(),
                ]);
            }
            print!("{}", t.render());
            Ok(())
        }
    }
}

/// `muster conflicts`: newest first.
pub async fn conflicts(conn: &ConnArgs, open: bool, json: bool) -> CliResult {
    let client = conn.client()?;
    let all: Vec<muster_proto::api::ConflictView> =
        client.get(&format!("/conflicts?state={}", if open { "open" } else { "all" })).await?;
    if json {
        return print_json(&all);
    }
    if all.is_empty() {
        eprintln!("(no conflicts)");
        return Ok(());
    }
    let mut t = Table::new(&["ID", "REPO", "GOES ON", "PAUSED", "FILES", "DECISION", "RESOLUTION", "SINCE"]);
    for c in &all {
        let files = if c.files.len() > 3 {
            format!("{} and {} more", c.files[..3].join(", "), c.files.len() - 3)
        } else {
            c.files.join(", ")
        };
        t.row(vec![
            format!("#{}", c.id),
            c.repo.clone(),
            c.winner.clone(),
            c.loser.clone(),
            files,
            c.decision.map_or_else(|| "-".to_owned(), |d| format!("#{d}")),
            c.resolution.clone().unwrap_or_else(|| "open".to_owned()),
            c.created_at.clone(),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

/// `muster regressions`: newest first.
pub async fn regressions(conn: &ConnArgs, json: bool) -> CliResult {
    let client = conn.client()?;
    let all: Vec<muster_proto::api::RegressionView> = client.get("/regressions").await?;
    if json {
        return print_json(&all);
    }
    if all.is_empty() {
        eprintln!("(no regressions)");
        return Ok(());
    }
    let short = |c: &Option<String>| c.as_deref().map_or("-".to_owned(), |c| c.chars().take(12).collect());
    let mut t = Table::new(&["ID", "REPO", "CHECK", "BROKEN BY", "AT COMMIT", "LAST PASSED", "AT COMMIT", "SINCE"]);
    for r in &all {
        t.row(vec![
            format!("#{}", r.id),
            r.repo.clone(),
            r.check.clone(),
            r.task.clone(),
            short(&r.commit),
            r.last_passed_task.clone(),
            short(&r.last_passed_commit),
            r.at.clone(),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

// -- schedules -----------------------------------------------------------------

#[derive(Debug, Subcommand)]
pub enum ScheduleCmd {
    /// Create tasks on a cron pattern: `schedule add NAME --cron '0 * * * *' [task add options] PROMPT`.
    Add {
        /// A name for it (letters, digits, -, _ or .).
        name: String,
        /// `MIN HOUR DAY MONTH WEEKDAY` (or with seconds first), or @hourly, @daily, @weekly, @monthly.
        #[arg(long)]
        cron: String,
        /// The time zone the pattern is read in (IANA, such as Europe/Paris); default UTC.
        #[arg(long)]
        tz: Option<String>,
        /// skip (default) or run-once: runs missed while the hub was down.
        #[arg(long, value_parser = ["skip", "run-once"])]
        missed: Option<String>,
        #[command(flatten)]
        task: Box<TaskAddArgs>,
    },
    /// Every schedule, with when it fires next.
    List {
        #[arg(long)]
        json: bool,
    },
    /// One schedule and the task it creates.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Stop firing until resumed.
    Pause {
        name: String,
    },
    /// Fire again, from the next time after now (what fell due while paused is not run).
    Resume {
        name: String,
    },
    Delete {
        name: String,
    },
}

fn schedule_line(s: &muster_proto::api::ScheduleView) -> String {
    let next = if s.paused { "paused".to_owned() } else { s.next_at.clone().unwrap_or_else(|| "never".to_owned()) };
    format!("{}  `{}` {}  next {next}", s.name, s.cron, s.tz)
}

/// `muster schedule add|list|show|pause|resume|delete`.
pub async fn schedule(conn: &ConnArgs, cmd: ScheduleCmd) -> CliResult {
    let client = conn.client()?;
    let path = |name: &str, action: &str| format!("/schedules/{}{action}", segment(name));
    let (s, json): (muster_proto::api::ScheduleView, bool) = match cmd {
        ScheduleCmd::Add { name, cron, tz, missed, task } => {
            let json = task.json;
            let req = muster_proto::api::ScheduleAdd {
                name,
                cron,
                tz,
                missed: missed.map(|m| m.replace('-', "_")),
                task: task_submit(*task)?,
            };
            (client.post("/schedules", &req).await?, json)
        }
        ScheduleCmd::List { json } => {
            let all: Vec<muster_proto::api::ScheduleView> = client.get("/schedules").await?;
            if json {
                return print_json(&all);
            }
            if all.is_empty() {
                eprintln!("(no schedules)");
                return Ok(());
            }
            let mut t = Table::new(&["NAME", "CRON", "TZ", "MISSED", "NEXT", "LAST", "LAST TASK", "RUNNER"]);
            for s in &all {
                t.row(vec![
                    s.name.clone(),
                    s.cron.clone(),
                    s.tz.clone(),
                    s.missed.replace('_', "-"),
                    if s.paused { "paused".to_owned() } else { dash(s.next_at.as_ref()) },
                    dash(s.last_at.as_ref()),
                    dash(s.last_task.as_ref()),
                    dash(s.task.runner.as_ref()),
                ]);
            }
            print!("{}", t.render());
            return Ok(());
        }
        ScheduleCmd::Show { name, json } => (client.get(&path(&name, "")).await?, json),
        ScheduleCmd::Pause { name } => (client.post(&path(&name, "/pause"), &()).await?, false),
        ScheduleCmd::Resume { name } => (client.post(&path(&name, "/resume"), &()).await?, false),
        ScheduleCmd::Delete { name } => {
            let s: muster_proto::api::ScheduleView = client.delete(&path(&name, "")).await?;
            println!("deleted {}", s.name);
            return Ok(());
        }
    };
    if json {
        return print_json(&s);
    }
    println!("{}", schedule_line(&s));
    Ok(())
}

// -- messages and channels ---------------------------------------------------------

#[derive(Debug, Subcommand)]
pub enum MsgCmd {
    /// Send a message to an agent's or a task's mailbox (or a channel).
    Send {
        /// `agent:NAME`, `task:ID` or `channel:NAME`.
        #[arg(long)]
        to: String,
        /// The text (`-` reads it from standard input).
        text: String,
        /// The message this answers: the reply joins its thread.
        #[arg(long)]
        reply_to: Option<i64>,
        #[arg(long)]
        json: bool,
    },
    /// A mailbox, oldest first, with whether each was delivered (agents) or read (tasks).
    Read {
        /// `agent:NAME` or `task:ID`.
        #[arg(long)]
        to: String,
        /// Only this thread (the id of its first message).
        #[arg(long)]
        thread: Option<i64>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ChannelCmd {
    /// A named topic with history.
    Create {
        name: String,
        #[arg(long, default_value = "")]
        description: String,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    /// Post to a channel (`--reply-to ID` answers in that message's thread).
    Post {
        name: String,
        text: String,
        #[arg(long)]
        reply_to: Option<i64>,
    },
    /// A channel's history, oldest first; `--follow` waits for new posts.
    Tail {
        name: String,
        #[arg(long)]
        thread: Option<i64>,
        /// Start after this message id.
        #[arg(long, default_value_t = 0)]
        after: i64,
        #[arg(long)]
        follow: bool,
        #[arg(long)]
        json: bool,
    },
}

fn message_line(m: &muster_proto::api::MessageView) -> String {
    let thread = if m.thread != m.id { format!(" (in #{})", m.thread) } else { String::new() };
    let state = match (&m.delivered_at, &m.read_at) {
        (_, Some(_)) => " [read]",
        (Some(_), None) => " [delivered]",
        _ if m.to.starts_with("channel:") => "",
        _ => " [waiting]",
    };
    format!("#{} {} {}{thread}{state}: {}", m.id, m.created_at, m.sender, m.body)
}

fn read_text(text: String) -> CliResult<String> {
    if text != "-" {
        return Ok(text);
    }
    let mut buf = String::new();
    std::io::stdin().read_to_string(&mut buf).map_err(|e| usage(format!("cannot read stdin: {e}")))?;
    Ok(buf)
}

async fn print_messages(client: &Client, path: &str, follow: bool, json: bool, mut after: i64) -> CliResult {
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let wait = if follow { "&wait=30s" } else { "" };
        let page: Vec<muster_proto::api::MessageView> = client
            .get_waiting(&format!("{path}{sep}after={after}&limit=1000{wait}"), std::time::Duration::from_secs(30))
            .await?;
        for m in &page {
            if json {
                println!("{}", serde_json::to_string(m).unwrap_or_default());
            } else {
                println!("{}", message_line(m));
            }
        }
        if let Some(last) = page.last() {
            after = last.id;
        } else if !follow {
            return Ok(());
        }
    }
}

/// `muster msg send|read`.
pub async fn msg(conn: &ConnArgs, cmd: MsgCmd) -> CliResult {
    let client = conn.client()?;
    match cmd {
        MsgCmd::Send { to, text, reply_to, json } => {
            let req = muster_proto::api::MessageSend { to, body: read_text(text)?, reply_to };
            let m: muster_proto::api::MessageView = client.post("/messages", &req).await?;
            if json {
                return print_json(&m);
            }
            println!("#{}", m.id);
            Ok(())
        }
        MsgCmd::Read { to, thread, json } => {
            let mut path = format!("/messages?to={}", segment(&to));
            if let Some(t) = thread {
                path.push_str(&format!("&thread={t}"));
            }
            print_messages(&client, &path, false, json, 0).await
        }
    }
}

/// `muster channel create|list|post|tail`.
pub async fn channel(conn: &ConnArgs, cmd: ChannelCmd) -> CliResult {
    let client = conn.client()?;
    match cmd {
        ChannelCmd::Create { name, description } => {
            let c: muster_proto::api::ChannelView =
                client.post("/channels", &muster_proto::api::ChannelAdd { name, description }).await?;
            println!("{}", c.name);
            Ok(())
        }
        ChannelCmd::List { json } => {
            let all: Vec<muster_proto::api::ChannelView> = client.get("/channels").await?;
            if json {
                return print_json(&all);
            }
            if all.is_empty() {
                eprintln!("(no channels)");
                return Ok(());
            }
            let mut t = Table::new(&["NAME", "MESSAGES", "CREATED", "BY", "DESCRIPTION"]);
            for c in &all {
                t.row(vec![
                    c.name.clone(),
                    c.messages.to_string(),
                    c.created_at.clone(),
                    c.created_by.clone(),
                    c.description.clone(),
                ]);
            }
            print!("{}", t.render());
            Ok(())
        }
        ChannelCmd::Post { name, text, reply_to } => {
            let req =
                muster_proto::api::MessageSend { to: format!("channel:{name}"), body: read_text(text)?, reply_to };
            let m: muster_proto::api::MessageView = client.post("/messages", &req).await?;
            println!("#{}", m.id);
            Ok(())
        }
        ChannelCmd::Tail { name, thread, after, follow, json } => {
            let mut path = format!("/messages?to={}", segment(&format!("channel:{name}")));
            if let Some(t) = thread {
                path.push_str(&format!("&thread={t}"));
            }
            print_messages(&client, &path, follow, json, after).await
        }
    }
}
