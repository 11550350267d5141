//! The doctor: can this machine run each of the agent's runners?
//!
//! For each runner: is its program there, what version it says (for the
//! built-in runners only: running an unknown program is not harmless), and
//! which of the environment variables it passes on are set (names only).
//! Also: is the working directory writable, and is git installed. A runner
//! whose program is missing is reported not ok, and the hub does not hand it
//! work.

use crate::config::{AgentConfig, RunnerProfile, on_path};
use crate::process::ProcessGroup;
use muster_proto::ws::{DoctorReport, RunnerDoctor};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

const VERSION_TIMEOUT: Duration = Duration::from_secs(15);

/// Runs `program --version` and returns its first line.
async fn version(program: &str) -> Result<String, String> {
    let mut cmd = tokio::process::Command::new(program);
    cmd.arg("--version").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut group = ProcessGroup::spawn(&mut cmd).map_err(|e| format!("cannot run {program} --version: {e}"))?;
    let out = group.child_mut().stdout.take();
    let read = async {
        use tokio::io::AsyncReadExt;
        let mut text = String::new();
        if let Some(mut out) = out {
            let _ = out.read_to_string(&mut text).await;
        }
        let status = group.wait().await;
        (text, status)
    };
    match tokio::time::timeout(VERSION_TIMEOUT, read).await {
        Ok((text, Ok(status))) if status.success() => Ok(text.lines().next().unwrap_or("").trim().to_owned()),
        Ok((_, Ok(status))) => Err(format!("{program} --version exited with {status}")),
        Ok((_, Err(e))) => Err(format!("{program} --version: {e}")),
        Err(_) => Err(format!("{program} --version did not answer within {VERSION_TIMEOUT:?}")),
    }
}

/// How to install a built-in runner's program.
pub fn install_hint(runner: &str, program: &str) -> Option<&'static str> {
    match (runner, program) {
        ("claude", "claude") => Some("install Claude Code with `npm install -g @anthropic-ai/claude-code`"),
        ("codex", "codex") => Some("install Codex with `npm install -g @openai/codex`"),
        _ => None,
    }
}

fn writable(dir: &Path) -> bool {
    tempfile::Builder::new().prefix(".muster-doctor-").tempfile_in(dir).is_ok()
}

pub async fn runner(name: &str, profile: &RunnerProfile) -> RunnerDoctor {
    let program = profile.argv.first().cloned().unwrap_or_default();
    let mut problems = Vec::new();
    let mut found_version = None;
    if !on_path(&program) {
        problems.push(match install_hint(name, &program) {
            Some(hint) => format!("{program} is not on PATH: {hint}"),
            None => format!("{program} is not on PATH"),
        });
    } else if RunnerProfile::builtin(name).is_some_and(|b| b.argv.first() == Some(&program)) {
        match version(&program).await {
            Ok(v) => found_version = Some(v),
            Err(e) => problems.push(e),
        }
    }
    if let Some(cwd) = &profile.cwd
        && !cwd.is_dir()
    {
        problems.push(format!("working directory {} does not exist", cwd.display()));
    }
    let env = profile.env.iter().map(|n| (n.clone(), std::env::var_os(n).is_some())).collect();
    RunnerDoctor { name: name.to_owned(), ok: problems.is_empty(), program, version: found_version, problems, env }
}

/// Checks every runner of the agent, its working directory, and git.
pub async fn examine(config: &AgentConfig) -> DoctorReport {
    let mut runners = Vec::new();
    for (name, profile) in &config.runners {
        runners.push(runner(name, profile).await);
    }
    let git = if on_path("git") { version("git").await.ok() } else { None };
    DoctorReport {
        runners,
        workdir: config.workdir.display().to_string(),
        workdir_writable: writable(&config.workdir),
        git,
    }
}

/// The report for people; true when every runner is usable.
pub fn render(report: &DoctorReport) -> (String, bool) {
    let mut out = String::new();
    let mut all_ok = true;
    for r in &report.runners {
        all_ok &= r.ok;
        let version = r.version.as_deref().map(|v| format!(" ({v})")).unwrap_or_default();
        out.push_str(&format!("{} runner {}: {}{version}\n", if r.ok { "ok  " } else { "FAIL" }, r.name, r.program));
        for p in &r.problems {
            out.push_str(&format!("       {p}\n"));
        }
        for (name, set) in &r.env {
            out.push_str(&format!("       env {name}: {}\n", if *set { "set" } else { "not set" }));
        }
    }
    let w = if report.workdir_writable { "ok  " } else { "FAIL" };
    out.push_str(&format!(
        "{w} workdir {} is {}writable\n",
        report.workdir,
        if report.workdir_writable { "" } else { "not " }
    ));
    all_ok &= report.workdir_writable;
    match &report.git {
        Some(v) => out.push_str(&format!("ok   git: {v}\n")),
        None => out.push_str("warn git is not installed (needed for worktrees)\n"),
    }
    (out, all_ok)
}
