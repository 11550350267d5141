//! One run of one task: start the runner's process group, feed it the
//! prompt, stream its output, enforce the timeout, obey a cancel.

use crate::config::{BASE_ENV, Liveness, PromptMode, RunnerProfile};
use crate::process::ProcessGroup;
use crate::redact::Redactor;
use crate::stream::{Recorder, Summary};
use crate::workspace::{self, Places};
use muster_core::{Live, Outcome};
use muster_proto::api::WorkspaceView;
use muster_proto::ws::{MAX_STEPS_PER_MESSAGE, ProviderLimit, RunBudget, RunReport, StepMsg, WorkspaceReport};
use std::borrow::Cow;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// What a run sends back to the agent loop.
#[derive(Debug)]
pub enum RunEvent {
    Output {
        task: String,
        epoch: u64,
        stream: &'static str,
        data: String,
    },
    /// The run's live status changed: `working`, `waiting` or `quiet`.
    Live {
        task: String,
        epoch: u64,
        status: muster_core::Live,
        detail: Option<String>,
    },
    /// What the coding agent did, read from its stream.
    Steps {
        task: String,
        epoch: u64,
        steps: Vec<StepMsg>,
    },
    /// The files the run has changed in its worktree so far, when they change.
    Files {
        task: String,
        epoch: u64,
        files: Vec<String>,
    },
    Finished(Box<Finished>),
    /// The run was stopped on the hub's word and is not to be reported.
    Dropped {
        task: String,
        epoch: u64,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Finished {
    pub task: String,
    pub epoch: u64,
    pub outcome: Outcome,
    pub exit_code: Option<i32>,
    pub reason: Option<String>,
    pub output_truncated: bool,
    /// `output` messages sent for the run (`None`: it never started).
    pub output_chunks: Option<u64>,
    /// The coding agent's account, for runners whose stream is read.
    pub report: Option<RunReport>,
    /// The run's worktree and what changed in it.
    pub workspace: Option<WorkspaceReport>,
    /// The provider limited the run: the hub requeues it without spending an attempt.
    pub limit: Option<ProviderLimit>,
    /// What the runner's `summary_pattern` or `summary_json` found in its output.
    pub summary: Option<String>,
    /// How the task's checks went.
    pub checks: Vec<muster_proto::ws::CheckResult>,
}

/// Standard output kept for a summary, at most.
const MAX_TAIL_BYTES: usize = 64 << 10;
/// Characters of a summary kept.
const SUMMARY_CHARS: usize = 2_000;

/// A generic runner's summary, from the end of its output.
fn extract_summary(profile: &RunnerProfile, tail: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(tail);
    let found = if let Some(pointer) = &profile.summary_json {
        text.lines().rev().find_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok()).and_then(|v| {
            v.pointer(pointer).map(|found| match found {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
        })
    } else {
        let re = regex::Regex::new(profile.summary_pattern.as_deref()?).ok()?;
        re.captures_iter(&text).last().map(|c| c.get(1).or_else(|| c.get(0)).map_or("", |m| m.as_str()).to_owned())
    };
    found.map(|s| crate::stream::clip(&s, SUMMARY_CHARS)).filter(|s| !s.is_empty())
}

/// Why a run is being stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The task was cancelled: report `cancelled`.
    Cancel,
    /// The hub no longer recognises the run: stop and report nothing.
    Drop,
    /// The agent is shutting down: report `failed` so the task is retried.
    Shutdown,
}

pub struct RunSpec {
    pub task: String,
    pub epoch: u64,
    pub prompt: String,
    pub timeout: Duration,
    pub profile: RunnerProfile,
    pub workdir: PathBuf,
    pub kill_grace: Duration,
    pub max_output_bytes: u64,
    /// Run in a git worktree of this repository.
    pub workspace: Option<WorkspaceView>,
    pub places: Arc<Places>,
    /// When silence makes the run quiet, and wedged.
    pub liveness: Liveness,
    /// What the run may spend before it is stopped.
    pub budget: Option<RunBudget>,
    /// The token the run acts for its task with (`muster ctl`, `muster mcp`).
    pub task_token: Option<String>,
    /// The hub, as the agent reaches it.
    pub hub_url: String,
    /// The certificate authority the agent trusts for it, passed on as `MUSTER_CA`.
    pub hub_ca: Option<std::path::PathBuf>,
    /// Set while the run waits for a person's answer to a decision it asked
    /// (`muster ctl ask`): silence then is not a wedge.
    pub asking: Arc<std::sync::atomic::AtomicU32>,
    /// Commands run in the workspace once the agent has succeeded.
    pub checks: Vec<muster_proto::ws::CheckSpec>,
}

/// How often a run in a worktree looks for files it changed.
const FILES_EVERY: Duration = Duration::from_millis(500);

/// Tools with which a coding agent asks a person something.
const ASKS_A_PERSON: &[&str] = &["AskUserQuestion", "request_user_input"];

const READ_CHUNK: usize = 32 << 10;
/// What one `steps` message may take once serialized: well inside the hub's frame limit.
const MAX_STEPS_MESSAGE_JSON: usize = 1 << 20;
/// An unfinished line is held back at most this long and this big.
const FLUSH_PARTIAL_AFTER: Duration = Duration::from_millis(200);
const MAX_HELD_BYTES: usize = 4 << 10;
/// What a long line's piece keeps back for the next: longer than any secret.
const KEPT_BACK_BYTES: usize = 1 << 10;

/// The longest prefix of `bytes` that ends on a UTF-8 character boundary
/// (all of it when the bytes are not UTF-8 anyway).
fn utf8_boundary(bytes: &[u8]) -> usize {
    match std::str::from_utf8(bytes) {
        Ok(_) => bytes.len(),
        Err(e) if e.error_len().is_none() => e.valid_up_to(),
        Err(_) => bytes.len(),
    }
}

/// Runs to the end and returns what to report (`None` for a dropped run).
pub async fn execute(
    spec: RunSpec,
    events: mpsc::UnboundedSender<RunEvent>,
    mut stop: watch::Receiver<Option<Stop>>,
) -> Option<Finished> {
    let finished = |outcome: Outcome, exit_code: Option<i32>, reason: Option<String>, truncated: bool| Finished {
        task: spec.task.clone(),
        epoch: spec.epoch,
        outcome,
        exit_code,
        reason,
        output_truncated: truncated,
        output_chunks: None,
        report: None,
        workspace: None,
        limit: None,
        summary: None,
        checks: Vec::new(),
    };
    // A private directory for the prompt file; removed when the run ends.
    let scratch = match tempfile::Builder::new().prefix("muster-run-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            return Some(finished(
                Outcome::Failed,
                None,
                Some(format!("cannot create a scratch directory: {e}")),
                false,
            ));
        }
    };
    let prompt_file = scratch.path().join("prompt");
    if spec.profile.prompt == PromptMode::File
        && let Err(e) = write_private(&prompt_file, spec.prompt.as_bytes())
    {
        return Some(finished(Outcome::Failed, None, Some(format!("cannot write the prompt file: {e}")), false));
    }
    // `{mcp_config}`: a file naming Muster's own MCP server for this run,
    // private to it like the prompt (it carries the run's task token).
    let mcp_config = scratch.path().join("mcp.json");
    if spec.profile.argv.iter().any(|a| a.contains("{mcp_config}")) {
        let written = std::env::current_exe().and_then(|exe| {
            let mut env = serde_json::json!({ "MUSTER_URL": spec.hub_url });
            if let Some(ca) = &spec.hub_ca {
                env["MUSTER_CA"] = serde_json::Value::String(ca.display().to_string());
            }
            if let Some(token) = &spec.task_token {
                env["MUSTER_TASK_TOKEN"] = serde_json::Value::String(token.clone());
            }
            let config = serde_json::json!({ "mcpServers": { "muster": {
                "type": "stdio", "command": exe, "args": ["mcp"], "env": env } } });
            write_private(&mcp_config, config.to_string().as_bytes())
        });
        if let Err(e) = written {
            return Some(finished(Outcome::Failed, None, Some(format!("cannot write the MCP config: {e}")), false));
        }
    }
    let prepared = match &spec.workspace {
        Some(w) => match workspace::prepare(&spec.places, &spec.task, spec.epoch, w).await {
            Ok(p) => Some(p),
            Err(e) => return Some(finished(Outcome::Failed, None, Some(format!("workspace: {e}")), false)),
        },
        None => None,
    };
    let argv: Vec<String> = spec
        .profile
        .argv
        .iter()
        .map(|a| {
            a.replace("{prompt_file}", &prompt_file.to_string_lossy())
                .replace("{mcp_config}", &mcp_config.to_string_lossy())
                .replace("{prompt}", &spec.prompt)
        })
        .collect();
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .current_dir(prepared.as_ref().map(|p| &p.dir).or(spec.profile.cwd.as_ref()).unwrap_or(&spec.workdir))
        .stdin(if spec.profile.prompt == PromptMode::Stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut passed: Vec<(String, String)> = Vec::new();
    for name in BASE_ENV.iter().copied().chain(spec.profile.env.iter().map(String::as_str)) {
        // The agent's own credentials never reach a run.
        if name == "MUSTER_TOKEN" {
            continue;
        }
        if let Some(value) = std::env::var_os(name) {
            passed.push((name.to_owned(), value.to_string_lossy().into_owned()));
            cmd.env(name, value);
        }
    }
    cmd.env("MUSTER_TASK_ID", &spec.task).env("MUSTER_TASK_EPOCH", spec.epoch.to_string());
    if let Some(token) = &spec.task_token {
        // Good for this task only, and only while this run holds it.
        cmd.env("MUSTER_TASK_TOKEN", token).env("MUSTER_URL", &spec.hub_url);
        if let Some(ca) = &spec.hub_ca {
            cmd.env("MUSTER_CA", ca);
        }
        passed.push(("MUSTER_TASK_TOKEN".to_owned(), token.clone()));
    }
    // The run's own secrets, and anything shaped like a credential, never leave the agent.
    let redactor = Arc::new(Redactor::new(passed.iter().map(|(n, v)| (n.as_str(), v.as_str()))));

    let mut group = match ProcessGroup::spawn(&mut cmd) {
        Ok(g) => g,
        Err(e) => {
            let mut f = finished(Outcome::Failed, None, Some(format!("cannot start {:?}: {e}", argv[0])), false);
            if let (Some(p), Some(w)) = (prepared.as_ref(), spec.workspace.as_ref()) {
                f.workspace = Some(workspace::conclude(p, w, &spec.prompt, false).await);
            }
            return Some(f);
        }
    };
    if let Some(mut stdin) = group.child_mut().stdin.take() {
        let prompt = spec.prompt.clone();
        tokio::spawn(async move {
            // A runner that exits without reading its prompt is not an error here.
            let _ = stdin.write_all(prompt.as_bytes()).await;
            let _ = stdin.shutdown().await;
        });
    }
    let started = Instant::now();
    let output = OutputSink {
        task: spec.task.clone(),
        epoch: spec.epoch,
        events: events.clone(),
        budget: Arc::new(AtomicI64::new(spec.max_output_bytes as i64)),
        truncated: Arc::new(AtomicBool::new(false)),
        sent: Arc::new(AtomicU64::new(0)),
        started,
        active_at_ms: Arc::new(AtomicU64::new(0)),
        waiting: Arc::new(AtomicBool::new(false)),
        stirred: Arc::new(tokio::sync::Notify::new()),
        redactor: redactor.clone(),
        spend: Arc::new(Spend { budget: spec.budget, prices: spec.profile.prices, over: Mutex::new(None) }),
    };
    let mut readers = Vec::new();
    if let Some(out) = group.child_mut().stdout.take() {
        let recorder = spec.profile.format.map(|f| Recorder::new(f, redactor.clone()));
        let keep_tail = spec.profile.summary_pattern.is_some() || spec.profile.summary_json.is_some();
        readers.push(tokio::spawn(pump(out, "stdout", output.clone(), recorder, keep_tail)));
    }
    if let Some(err) = group.child_mut().stderr.take() {
        readers.push(tokio::spawn(pump(err, "stderr", output.clone(), None, false)));
    }

    // While it runs, the hub hears which files it has changed, so two runs
    // changing the same files are noticed while both can still be stopped.
    let watcher = prepared.as_ref().map(|p| {
        let (p, events, task, epoch) = (p.clone(), events.clone(), spec.task.clone(), spec.epoch);
        tokio::spawn(async move {
            let mut last: Vec<String> = Vec::new();
            let mut every = tokio::time::interval(FILES_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if let Ok(files) = workspace::changed_now(&p).await
                    && files != last
                {
                    last.clone_from(&files);
                    if events.send(RunEvent::Files { task: task.clone(), epoch, files }).is_err() {
                        return;
                    }
                }
            }
        })
    });
    let deadline = tokio::time::sleep(spec.timeout);
    tokio::pin!(deadline);
    let check_every = (spec.liveness.quiet / 4).clamp(Duration::from_millis(20), Duration::from_secs(5));
    let mut checks = tokio::time::interval(check_every);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut live = Live::Working;
    let end = loop {
        tokio::select! {
            status = group.wait() => break End::Exited(status),
            _ = &mut deadline => break End::TimedOut,
            _ = async {
                tokio::select! {
                    _ = checks.tick() => {}
                    _ = output.stirred.notified() => {}
                }
            } => {
                if let Some(why) = output.spend.over() {
                    break End::OverBudget(why);
                }
                let idle = output.idle();
                let asking = spec.asking.load(Ordering::SeqCst) > 0;
                // A run waiting for a person is silent by design, not wedged.
                if idle >= spec.liveness.wedged && !asking && !output.waiting.load(Ordering::SeqCst) {
                    break End::Wedged(idle);
                }
                let (now, detail) = if asking {
                    (Live::Waiting, Some("the run asked a person for a decision".to_owned()))
                } else if output.waiting.load(Ordering::SeqCst) {
                    (Live::Waiting, Some("the agent asked a person for input".to_owned()))
                } else if idle >= spec.liveness.quiet {
                    (Live::Quiet, Some(format!("no output for {}", muster_proto::setting_duration(round_s(idle)))))
                } else {
                    (Live::Working, None)
                };
                if now != live {
                    live = now;
                    let _ = events.send(RunEvent::Live { task: spec.task.clone(), epoch: spec.epoch, status: now, detail });
                }
            }
            changed = stop.changed() => {
                if changed.is_err() {
                    break End::Stopped(Stop::Shutdown);
                }
                if let Some(s) = *stop.borrow() {
                    break End::Stopped(s);
                }
            }
        }
    };
    let end = match end {
        End::Exited(status) => {
            // Whatever the leader left behind in its group goes with it.
            group.signal(libc::SIGKILL);
            End::Exited(status)
        }
        other => {
            let _ = group.terminate(spec.kill_grace).await;
            other
        }
    };
    // The pipes close once every process holding them is gone.
    let mut summary: Option<Summary> = None;
    let mut tail: Option<Vec<u8>> = None;
    for mut reader in readers {
        // A process that left the group may hold a pipe open forever: stop
        // reading it rather than leave a reader sending output after `finished`.
        match tokio::time::timeout(Duration::from_secs(5), &mut reader).await {
            Ok(Ok(pumped)) => {
                if pumped.summary.is_some() {
                    summary = pumped.summary;
                }
                if pumped.tail.is_some() {
                    tail = pumped.tail;
                }
            }
            Ok(_) => {}
            Err(_) => {
                reader.abort();
                let _ = reader.await;
            }
        }
    }
    drop(group);
    if let Some(w) = watcher {
        w.abort();
    }
    let truncated = output.truncated.load(Ordering::SeqCst);
    let mut result = verdict(end, summary.as_ref(), &spec.timeout, truncated, finished);
    if let Some(f) = result.as_mut() {
        f.output_chunks = Some(output.sent.load(Ordering::SeqCst));
    }
    if let (Some(f), Some(s)) = (result.as_mut(), summary.as_ref()) {
        let mut report = crate::stream::run_report(s);
        report.result = report.result.map(|text| redactor.redact(&text).into_owned());
        f.report = Some(report);
        if f.outcome == Outcome::Failed {
            let now_ms =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
            f.limit = crate::stream::provider_limit(s, now_ms).map(|mut l| {
                l.message = redactor.redact(&l.message).into_owned();
                l
            });
        }
    }
    if let Some(f) = result.as_mut() {
        f.reason = f.reason.take().map(|why| redactor.redact(&why).into_owned());
        f.summary =
            tail.as_deref().and_then(|t| extract_summary(&spec.profile, t)).map(|s| redactor.redact(&s).into_owned());
    }
    let mut dropped = false;
    // The agent succeeded: its checks decide whether the attempt did.
    if let Some(f) = result.as_mut()
        && f.outcome == Outcome::Succeeded
        && !spec.checks.is_empty()
    {
        let dir = prepared.as_ref().map(|p| &p.dir).or(spec.profile.cwd.as_ref()).unwrap_or(&spec.workdir).clone();
        let left = spec.timeout.saturating_sub(started.elapsed()).max(Duration::from_secs(1));
        let (checks, stopped) = run_checks(&spec.checks, &dir, &passed, left, &redactor, &mut stop).await;
        f.checks = checks;
        let failed: Vec<&str> = f.checks.iter().filter(|c| !c.passed).map(|c| c.name.as_str()).collect();
        match stopped {
            // Stopped while its checks ran: as if the run itself had been.
            Some(Stop::Drop) => dropped = true,
            Some(Stop::Cancel) => {
                f.outcome = Outcome::Cancelled;
                f.reason = Some("cancelled".into());
            }
            Some(Stop::Shutdown) => {
                f.outcome = Outcome::Failed;
                f.reason = Some("agent shut down".into());
            }
            None if !failed.is_empty() => {
                f.outcome = Outcome::Failed;
                f.reason = Some(format!("checks_failed: {}", failed.join(", ")));
            }
            None => {}
        }
    }
    if dropped {
        result = None;
    }
    if let (Some(p), Some(w)) = (prepared.as_ref(), spec.workspace.as_ref()) {
        // A dropped run is cleaned up by the same policy, as a failure; nothing is reported.
        let succeeded = result.as_ref().is_some_and(|f| f.outcome == Outcome::Succeeded);
        let mut report = workspace::conclude(p, w, &spec.prompt, succeeded).await;
        // A diff can hold a secret as easily as output can (an `.env` written by the run).
        report.diff = redactor.redact(&report.diff).into_owned();
        if let Some(f) = result.as_mut() {
            f.workspace = Some(report);
        }
    }
    result
}

/// The end of what a check printed that is kept.
const CHECK_TAIL: usize = 4000;

/// Reads `from` to its end, keeping the last `CHECK_TAIL` bytes.
async fn tail_of(mut from: impl tokio::io::AsyncRead + Unpin) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut kept: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 << 10];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                kept.extend_from_slice(&buf[..n]);
                if kept.len() > 2 * CHECK_TAIL {
                    kept.drain(..kept.len() - CHECK_TAIL);
                }
            }
        }
    }
}

/// Resolves when the run is told to stop.
async fn stopped(stop: &mut watch::Receiver<Option<Stop>>) -> Stop {
    loop {
        if let Some(s) = *stop.borrow_and_update() {
            return s;
        }
        if stop.changed().await.is_err() {
            return Stop::Shutdown;
        }
    }
}

/// Runs each check in `dir`, in order, as its argument list (no shell),
/// with the run's environment; all of them within `left`.
/// Stops at the first cancel, drop or shutdown, and says which.
async fn run_checks(
    checks: &[muster_proto::ws::CheckSpec],
    dir: &std::path::Path,
    env: &[(String, String)],
    left: Duration,
    redactor: &crate::redact::Redactor,
    stop: &mut watch::Receiver<Option<Stop>>,
) -> (Vec<muster_proto::ws::CheckResult>, Option<Stop>) {
    let deadline = Instant::now() + left;
    let mut out = Vec::with_capacity(checks.len());
    for check in checks {
        let began = Instant::now();
        let mut cmd = tokio::process::Command::new(&check.argv[0]);
        cmd.args(&check.argv[1..])
            .env_clear()
            .envs(env.iter().filter(|(k, _)| k != "MUSTER_TASK_TOKEN").map(|(k, v)| (k, v)))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let (passed, exit_code, output) = match ProcessGroup::spawn(&mut cmd) {
            Err(e) => (false, None, format!("cannot start {:?}: {e}", check.argv[0])),
            Ok(mut group) => {
                let stdout = group.child_mut().stdout.take().map(|o| tokio::spawn(tail_of(o)));
                let stderr = group.child_mut().stderr.take().map(|e| tokio::spawn(tail_of(e)));
                let waited = tokio::select! {
                    w = tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), group.wait()) => Ok(w),
                    s = stopped(stop) => Err(s),
                };
                let (passed, code, note) = match waited {
                    Ok(Ok(Ok(status))) => (status.success(), status.code(), None),
                    Ok(Ok(Err(e))) => (false, None, Some(format!("cannot wait for it: {e}"))),
                    Ok(Err(_)) => (false, None, Some("timed out: the task's time ran out".to_owned())),
                    Err(s) => {
                        let _ = group.terminate(Duration::from_secs(5)).await;
                        return (out, Some(s));
                    }
                };
                // Whatever it left running goes with it.
                group.signal(libc::SIGKILL);
                drop(group);
                let mut text = Vec::new();
                for reader in [stdout, stderr].into_iter().flatten() {
                    if let Ok(Ok(bytes)) = tokio::time::timeout(Duration::from_secs(5), reader).await {
                        text.extend_from_slice(&bytes);
                    }
                }
                let mut text = String::from_utf8_lossy(&text).into_owned();
                if let Some(n) = note {
                    text.push_str(&format!("\n[muster] {n}"));
                }
                (passed, code, text)
            }
        };
        let output = redactor.redact(&output).into_owned();
        let cut = output.len().saturating_sub(CHECK_TAIL);
        let cut = (cut..=output.len()).find(|i| output.is_char_boundary(*i)).unwrap_or(output.len());
        out.push(muster_proto::ws::CheckResult {
            name: check.name.clone(),
            passed,
            exit_code,
            duration_ms: began.elapsed().as_millis() as u64,
            output: output[cut..].to_owned(),
        });
    }
    (out, None)
}

enum End {
    Exited(std::io::Result<std::process::ExitStatus>),
    TimedOut,
    /// No output for this long: past the wedged limit.
    Wedged(Duration),
    /// It spent more than its task allows.
    OverBudget(String),
    Stopped(Stop),
}

/// `d` to whole seconds, for saying how long a run has been silent.
fn round_s(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs().max(1))
}

/// What to report for a run that ended so, given what its stream said.
fn verdict(
    end: End,
    summary: Option<&Summary>,
    timeout: &Duration,
    truncated: bool,
    finished: impl Fn(Outcome, Option<i32>, Option<String>, bool) -> Finished,
) -> Option<Finished> {
    match end {
        End::Exited(Ok(status)) if status.code().is_some() && summary.is_some() => {
            let code = status.code().unwrap_or_default();
            match summary.and_then(|s| crate::stream::verdict(s, code)) {
                None => Some(finished(Outcome::Succeeded, Some(0), None, truncated)),
                Some(why) => Some(finished(Outcome::Failed, Some(code), Some(why), truncated)),
            }
        }
        End::Exited(Ok(status)) => match status.code() {
            Some(0) => Some(finished(Outcome::Succeeded, Some(0), None, truncated)),
            Some(code) => Some(finished(Outcome::Failed, Some(code), Some(format!("exit code {code}")), truncated)),
            None => {
                use std::os::unix::process::ExitStatusExt;
                let signal = status.signal().unwrap_or(0);
                Some(finished(Outcome::Failed, None, Some(format!("killed by signal {signal}")), truncated))
            }
        },
        End::Exited(Err(e)) => {
            Some(finished(Outcome::Failed, None, Some(format!("cannot wait for the run: {e}")), truncated))
        }
        End::TimedOut => {
            Some(finished(Outcome::Timeout, None, Some(format!("timed out after {timeout:?}")), truncated))
        }
        End::OverBudget(why) => Some(finished(Outcome::Failed, None, Some(format!("budget: {why}")), truncated)),
        End::Wedged(idle) => Some(finished(
            Outcome::Failed,
            None,
            Some(format!("wedged: no output for {}", muster_proto::setting_duration(round_s(idle)))),
            truncated,
        )),
        End::Stopped(Stop::Cancel) => Some(finished(Outcome::Cancelled, None, Some("cancelled".into()), truncated)),
        End::Stopped(Stop::Shutdown) => {
            Some(finished(Outcome::Failed, None, Some("agent shut down".into()), truncated))
        }
        End::Stopped(Stop::Drop) => None,
    }
}

fn write_private(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(data)
}

/// Where both of a run's output pipes send what they read, and the budget
/// they share.
#[derive(Clone)]
struct OutputSink {
    task: String,
    epoch: u64,
    events: mpsc::UnboundedSender<RunEvent>,
    /// Bytes still to forward, across stdout and stderr.
    budget: Arc<AtomicI64>,
    truncated: Arc<AtomicBool>,
    /// `output` messages sent so far.
    sent: Arc<AtomicU64>,
    started: Instant,
    /// When output last arrived, in milliseconds since `started`.
    active_at_ms: Arc<AtomicU64>,
    /// The agent's latest step asks a person something.
    waiting: Arc<AtomicBool>,
    /// Woken when output arrives, so a change of live status is told at once.
    stirred: Arc<tokio::sync::Notify>,
    redactor: Arc<Redactor>,
    spend: Arc<Spend>,
}

/// A run's budget, and whether the stream shows it passed.
struct Spend {
    budget: Option<RunBudget>,
    /// The runner's own prices; otherwise the model's list prices, if known.
    prices: Option<crate::stream::Prices>,
    over: Mutex<Option<String>>,
}

impl Spend {
    fn over(&self) -> Option<String> {
        self.over.lock().expect("budget lock poisoned").clone()
    }

    /// Checks what the stream says so far; true when this passed the budget.
    fn check(&self, s: &Summary) -> bool {
        let Some(budget) = self.budget else { return false };
        if self.over().is_some() {
            return false;
        }
        let u = &s.usage;
        let tokens = u
            .input_tokens
            .saturating_add(u.output_tokens)
            .saturating_add(u.cache_read_tokens)
            .saturating_add(u.cache_write_tokens);
        let why = if let Some(max) = budget.max_tokens.filter(|max| tokens > *max) {
            Some(format!("used {tokens} tokens; the task allows {max} a run"))
        } else if let Some(max) = budget.max_cost_usd {
            let reported = s.report.as_ref().and_then(|r| r.cost_usd);
            let prices = self.prices.or_else(|| s.model.as_deref().and_then(crate::stream::Prices::of_model));
            let (cost, how) = match (reported, prices) {
                (Some(c), _) => (Some(c), "as the agent reported it"),
                (None, Some(p)) => (Some(p.cost_usd(u)), "estimated from its tokens"),
                (None, None) => (None, ""),
            };
            cost.filter(|c| *c > max).map(|c| format!("spent ${c:.4} ({how}); the task allows ${max:.4} a run"))
        } else {
            None
        };
        match why {
            Some(why) => {
                *self.over.lock().expect("budget lock poisoned") = Some(why);
                true
            }
            None => false,
        }
    }
}

impl OutputSink {
    /// Sends output, redacted.
    fn send(&self, stream: &'static str, data: &str) {
        if data.is_empty() {
            return;
        }
        let data = self.redactor.redact(data).into_owned();
        self.sent.fetch_add(1, Ordering::SeqCst);
        let _ = self.events.send(RunEvent::Output { task: self.task.clone(), epoch: self.epoch, stream, data });
    }

    /// Output arrived: the run is alive.
    fn touch(&self) {
        self.active_at_ms.store(self.started.elapsed().as_millis() as u64, Ordering::SeqCst);
        self.stirred.notify_one();
    }

    /// How long since output last arrived.
    fn idle(&self) -> Duration {
        self.started.elapsed().saturating_sub(Duration::from_millis(self.active_at_ms.load(Ordering::SeqCst)))
    }

    fn steps(&self, mut steps: Vec<StepMsg>) {
        for step in &mut steps {
            if let Cow::Owned(clean) = self.redactor.redact(&step.summary) {
                step.summary = clean;
            }
        }
        if let Some(last) = steps.last() {
            let asks = last.kind == "tool_use" && last.name.as_deref().is_some_and(|n| ASKS_A_PERSON.contains(&n));
            self.waiting.store(asks, Ordering::SeqCst);
            self.stirred.notify_one();
        }
        // Batches small enough for one message: by count, and by size once escaped.
        while !steps.is_empty() {
            let mut size = 0;
            let mut take = 0;
            for step in steps.iter().take(MAX_STEPS_PER_MESSAGE) {
                size += serde_json::to_string(step).map_or(0, |j| j.len());
                if take > 0 && size > MAX_STEPS_MESSAGE_JSON {
                    break;
                }
                take += 1;
            }
            let rest = steps.split_off(take);
            let _ = self.events.send(RunEvent::Steps { task: self.task.clone(), epoch: self.epoch, steps });
            steps = rest;
        }
    }
}

/// Reads one pipe to its end, forwarding output while the budget lasts and
/// draining the rest so the child never blocks on a full pipe. With a
/// recorder, every byte is also read as the agent's event stream (past the
/// output budget too), and what the stream said is returned.
async fn pump(
    mut pipe: impl AsyncRead + Unpin,
    stream: &'static str,
    sink: OutputSink,
    mut recorder: Option<Recorder>,
    keep_tail: bool,
) -> Pumped {
    let mut buf = vec![0u8; READ_CHUNK];
    let mut tail: Vec<u8> = Vec::new();
    // Output not sent yet: an unfinished line (so a secret split across
    // reads is still redacted whole), or part of a UTF-8 character.
    let mut pending: Vec<u8> = Vec::new();
    // All of `pending` may be the start of a secret: it waits for more output.
    let mut held = false;
    loop {
        let read = if pending.is_empty() || held {
            pipe.read(&mut buf).await
        } else {
            // A partial line (a prompt, a progress bar) goes out once the pipe is idle.
            match tokio::time::timeout(FLUSH_PARTIAL_AFTER, pipe.read(&mut buf)).await {
                Ok(read) => read,
                Err(_) => {
                    // All but what could be the start of a secret that the next read completes.
                    let cut = utf8_boundary(&pending);
                    let text = String::from_utf8_lossy(&pending[..cut]);
                    // (Bytes that are not UTF-8 are replaced when sent; then nothing is held.)
                    let cut = cut - if text.len() == cut { sink.redactor.held_back(&text) } else { 0 };
                    if cut == 0 {
                        // Nothing can go until more comes: wait for it without a timer.
                        held = true;
                        continue;
                    }
                    let rest = pending.split_off(cut);
                    sink.send(stream, &String::from_utf8_lossy(&pending));
                    pending = rest;
                    continue;
                }
            }
        };
        let n = match read {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        held = false;
        sink.touch();
        if keep_tail {
            tail.extend_from_slice(&buf[..n]);
            if tail.len() > MAX_TAIL_BYTES {
                tail.drain(..tail.len() - MAX_TAIL_BYTES);
            }
        }
        if let Some(r) = recorder.as_mut() {
            sink.steps(r.feed(&buf[..n]));
            if sink.spend.check(r.summary()) {
                sink.stirred.notify_one();
            }
        }
        let left = sink.budget.fetch_sub(n as i64, Ordering::SeqCst);
        let take = if left <= 0 { 0 } else { (left as usize).min(n) };
        if take < n {
            sink.truncated.store(true, Ordering::SeqCst);
        }
        if take == 0 {
            continue;
        }
        pending.extend_from_slice(&buf[..take]);
        // Whole lines go now; an unfinished one waits, unless it is long.
        let cut = match pending.iter().rposition(|&b| b == b'\n' || b == b'\r') {
            Some(i) if pending.len() - (i + 1) <= MAX_HELD_BYTES => i + 1,
            _ if pending.len() <= MAX_HELD_BYTES => 0,
            // A long line goes in pieces, cut where no secret can be (at a
            // space, a quote, a bracket), keeping the rest for the next piece.
            _ => {
                let limit = pending.len() - KEPT_BACK_BYTES;
                let cut =
                    pending[..limit].iter().rposition(|b| b" \t\",;'<>()[]{}".contains(b)).map_or(limit, |i| i + 1);
                utf8_boundary(&pending[..cut])
            }
        };
        let rest = pending.split_off(cut);
        sink.send(stream, &String::from_utf8_lossy(&pending));
        pending = rest;
    }
    sink.send(stream, &String::from_utf8_lossy(&pending));
    let summary = recorder.map(|r| {
        let (steps, summary) = r.finish();
        sink.steps(steps);
        summary
    });
    Pumped { summary, tail: keep_tail.then_some(tail) }
}

/// What reading one pipe found besides the output itself.
struct Pumped {
    /// The agent's stream, read.
    summary: Option<Summary>,
    /// The end of the output, for a summary pattern.
    tail: Option<Vec<u8>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn sink(events: mpsc::UnboundedSender<RunEvent>, redactor: Redactor) -> OutputSink {
        OutputSink {
            task: "t_x".into(),
            epoch: 1,
            events,
            budget: Arc::new(AtomicI64::new(1 << 30)),
            truncated: Arc::new(AtomicBool::new(false)),
            sent: Arc::new(AtomicU64::new(0)),
            started: Instant::now(),
            active_at_ms: Arc::new(AtomicU64::new(0)),
            waiting: Arc::new(AtomicBool::new(false)),
            stirred: Arc::new(tokio::sync::Notify::new()),
            redactor: Arc::new(redactor),
            spend: Arc::new(Spend { budget: None, prices: None, over: Mutex::new(None) }),
        }
    }

    #[tokio::test]
    async fn a_secret_split_across_reads_of_a_long_line_is_redacted_whole() {
        let secret = "sk-ant-api03-ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let line = format!("{}\"{secret}\" and more{}\n", "x".repeat(4_990), " y".repeat(300));
        let split = 4_990 + 12;
        let (mut writer, reader) = tokio::io::duplex(64 << 10);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let reading = tokio::spawn(pump(reader, "stdout", sink(tx, Redactor::default()), None, false));
        writer.write_all(&line.as_bytes()[..split]).await.unwrap();
        // The first piece of the long line goes out before the rest is written.
        let Some(RunEvent::Output { data: first, .. }) = rx.recv().await else { panic!("output") };
        assert!(first.len() < split, "the end of the piece is kept back");
        writer.write_all(&line.as_bytes()[split..]).await.unwrap();
        drop(writer);
        reading.await.unwrap();
        let mut sent = first;
        while let Ok(RunEvent::Output { data, .. }) = rx.try_recv() {
            sent.push_str(&data);
        }
        assert!(!sent.contains("ABCDEFGHIJ"), "no piece of the secret got out");
        assert!(sent.contains("\"[REDACTED]\" and more"), "it was redacted whole");
        assert_eq!(sent.len(), line.len() - secret.len() + "[REDACTED]".len(), "nothing else was lost");
    }
}
