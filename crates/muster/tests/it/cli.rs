//! The CLI as a user runs it, against a real hub with a real agent; and the
//! long-running commands (`hub`, `agent run`, `up`) started and stopped the
//! way an operator would.

use crate::harness::{Hub, PATIENCE, cli_with_input, forward_stderr, muster_command, path_str, run_to_end};
use muster_agent::process::ProcessGroup;
use serde_json::Value;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// How long a command that should give up at once may take.
const PROMPTLY: Duration = Duration::from_secs(15);

/// `t_` and 26 lowercase base32 characters.
fn is_task_id(s: &str) -> bool {
    s.strip_prefix("t_")
        .is_some_and(|body| body.len() == 26 && body.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()))
}

/// Runs the CLI against `hub` and returns its stdout, failing the test unless it exits 0.
async fn ok(hub: &Hub, args: &[&str]) -> String {
    let (code, stdout, stderr) = hub.cli(args).await;
    assert_eq!(code, 0, "muster {}: stdout {stdout:?} stderr {stderr:?}", args.join(" "));
    stdout
}

fn parse(what: &str, text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{what} is not JSON ({e}): {text:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_queues_a_task_waits_for_it_and_reads_its_output() {
    let hub = Hub::start().await;
    let _w = hub.agent("w", 2, &[]).await;

    let out = ok(&hub, &["task", "add", "--runner", "shell", "echo hello"]).await;
    let id = out.strip_suffix('\n').unwrap_or_else(|| panic!("no newline: {out:?}"));
    assert!(is_task_id(id), "stdout should be only the id: {out:?}");
    assert_eq!(ok(&hub, &["task", "wait", id]).await, format!("{id} succeeded\n"));
    assert_eq!(ok(&hub, &["task", "logs", id]).await, "hello\n");
    let show = ok(&hub, &["task", "show", id]).await;
    assert!(show.contains("state") && show.contains("succeeded"), "{show}");

    let list = ok(&hub, &["task", "list"]).await;
    let header: Vec<&str> = list.lines().next().unwrap_or("").split_whitespace().collect();
    assert_eq!(header.get(..4), Some(&["ID", "STATE", "PRIORITY", "RUNNER"][..]), "{list}");
    assert!(list.lines().skip(1).any(|l| l.starts_with(id) && l.contains("succeeded")), "{list}");
    let listed = parse("task list --json", &ok(&hub, &["task", "list", "--json"]).await);
    let listed = listed.as_array().unwrap_or_else(|| panic!("not an array: {listed}"));
    assert!(listed.iter().any(|t| t["id"] == id && t["state"] == "succeeded"), "{listed:?}");
    let found = ok(&hub, &["task", "list", "--search", "HELLO", "--runner", "shell", "--priority", "normal"]).await;
    assert_eq!(found.lines().skip(1).map(|l| &l[..id.len()]).collect::<Vec<_>>(), [id], "{found}");
    let none = ok(&hub, &["task", "list", "--search", "hello", "--priority", "urgent"]).await;
    assert_eq!(none.lines().count(), 1, "only the header: {none}");

    // --json prints the whole task.
    let task = parse("task add --json", &ok(&hub, &["task", "add", "--runner", "shell", "--json", "echo json"]).await);
    for key in ["id", "state", "priority", "attempts", "runner", "agent", "exit_code", "created_at", "updated_at"] {
        assert!(task.get(key).is_some(), "no {key} in {task}");
    }
    let json_id = task["id"].as_str().unwrap();
    assert!(is_task_id(json_id), "{task}");
    assert_eq!((task["runner"].as_str(), task["priority"].as_str()), (Some("shell"), Some("normal")));
    ok(&hub, &["task", "wait", json_id]).await;

    // `-` reads the prompt from stdin.
    let args = ["task", "add", "--runner", "shell", "-"];
    let (code, out, err) = cli_with_input(&hub.url, &hub.token, &args, Some("echo from stdin\n")).await;
    assert_eq!(code, 0, "{err}");
    let stdin_id = out.trim();
    assert!(is_task_id(stdin_id), "{out:?}");
    assert_eq!(hub.task(stdin_id).await["prompt"], "echo from stdin\n");
    ok(&hub, &["task", "wait", stdin_id]).await;
    assert_eq!(ok(&hub, &["task", "logs", stdin_id]).await, "from stdin\n");

    let status = parse("status --json", &ok(&hub, &["status", "--json"]).await);
    assert!(status["tasks"].is_object() && status["agents"].is_object(), "{status}");
    assert_eq!(status["tasks"]["succeeded"], 3, "{status}");

    // One JSON object per line, the task's life in order.
    let events = ok(&hub, &["events", "--task", id, "--json"]).await;
    let events: Vec<Value> = events.lines().map(|l| parse("an event line", l)).collect();
    assert!(events.iter().all(|e| e["task"] == id), "{events:?}");
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["kind"].as_str()).collect();
    assert_eq!(kinds, ["task.created", "task.assigned", "task.started", "task.succeeded"]);
    let ends = ok(&hub, &["events", "--kind", "task.succeeded", "--json"]).await;
    assert_eq!(ends.lines().count(), 3, "three tasks succeeded: {ends}");
    assert!(ends.lines().all(|l| parse("an event line", l)["kind"] == "task.succeeded"), "{ends}");
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_follow_prints_output_as_it_comes_and_ends_with_the_task() {
    let hub = Hub::start().await;
    let _w = hub.agent("w", 1, &[]).await;
    let gate_dir = tempfile::tempdir().unwrap();
    let gate = path_str(&gate_dir.path().join("go"));
    // The run prints one line, then waits for the test to open the gate.
    let script = format!("echo line-1; while [ ! -e '{gate}' ]; do sleep 0.05; done; echo line-2; echo line-3");
    let id = hub.shell_task(&script).await;

    let mut cmd = muster_command(&["task", "logs", "--follow", &id]);
    cmd.env("MUSTER_URL", &hub.url).env("MUSTER_TOKEN", &hub.token);
    let mut follow = ProcessGroup::spawn(&mut cmd).unwrap();
    drop(forward_stderr(&mut follow, "logs --follow", "\u{0}never"));
    let mut lines = BufReader::new(follow.child_mut().stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(PATIENCE, lines.next_line()).await.expect("the first line in time").unwrap();
    assert_eq!(first.as_deref(), Some("line-1"));
    // Still running: what follows is printed live, not read back at the end.
    assert_eq!(hub.task(&id).await["state"], "running");
    std::fs::write(&gate, "").unwrap();

    let mut rest = Vec::new();
    while let Some(line) = tokio::time::timeout(PATIENCE, lines.next_line()).await.expect("output in time").unwrap() {
        rest.push(line);
    }
    assert_eq!(rest, ["line-2", "line-3"]);
    let status = tokio::time::timeout(PATIENCE, follow.wait()).await.expect("follow ends with the task").unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(hub.task(&id).await["state"], "succeeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_and_tokens_are_managed_and_a_revoked_token_is_shut_out() {
    let hub = Hub::start().await;

    let created = parse("agent add --json", &ok(&hub, &["agent", "add", "gpu1", "--cap", "gpu", "--json"]).await);
    let keys: Vec<&String> = created.as_object().unwrap_or_else(|| panic!("not an object: {created}")).keys().collect();
    assert_eq!(keys, ["name", "token"], "{created}");
    assert_eq!(created["name"], "gpu1");
    assert!(created["token"].as_str().unwrap().starts_with("mst_"), "{created}");
    let agents = parse("agent list --json", &ok(&hub, &["agent", "list", "--json"]).await);
    let gpu1 = agents.as_array().unwrap().iter().find(|a| a["name"] == "gpu1").cloned();
    let gpu1 = gpu1.unwrap_or_else(|| panic!("gpu1 not listed: {agents}"));
    assert_eq!(gpu1["state"], "offline", "{gpu1}");
    assert_eq!(gpu1["capabilities"], serde_json::json!(["gpu"]), "{gpu1}");

    let token = hub.add_agent("w", &[]).await;
    let mut w = hub.spawn_agent(("w", &token), 1, &[]);
    hub.wait_connected("w").await;

    let text = ok(&hub, &["token", "list", "--json"]).await;
    assert!(!text.contains("mst_"), "token list shows a secret: {text}");
    let tokens = parse("token list --json", &text);
    let tokens = tokens.as_array().unwrap();
    assert!(tokens.iter().any(|t| t["scope"] == "admin"), "{tokens:?}");
    assert!(tokens.iter().any(|t| t["scope"] == "agent" && t["agent"] == "gpu1"), "{tokens:?}");
    let w_token = tokens.iter().find(|t| t["agent"] == "w").unwrap_or_else(|| panic!("no token for w: {tokens:?}"));
    let w_token_id = w_token["id"].as_str().unwrap().to_owned();
    assert_eq!(hub.get("/agents/w").await["token_id"], w_token_id.as_str());

    // Revoking the token disconnects the agent using it...
    ok(&hub, &["token", "revoke", &w_token_id]).await;
    hub.wait_until("w to be offline", || async {
        let agent = hub.get("/agents/w").await;
        (agent["state"] == "offline").then_some(())
    })
    .await;
    // ...which is refused when it tries again, and gives up.
    let running = w.process.as_mut().unwrap();
    let status = tokio::time::timeout(PROMPTLY, running.wait()).await.expect("the refused agent stops").unwrap();
    assert!(!status.success(), "{status:?}");

    // A new agent with the revoked token is refused at once, and says why.
    let workdir = tempfile::tempdir().unwrap();
    let workdir = path_str(workdir.path());
    let mut cmd = muster_command(&["agent", "run", "--hub", &hub.url, "--runner", "shell", "--workdir", &workdir]);
    cmd.env("MUSTER_TOKEN", &token);
    let (code, _, stderr) = run_to_end(&mut cmd, PROMPTLY).await;
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("refused") && stderr.contains("revoked"), "{stderr}");
    assert_eq!(hub.get("/agents/w").await["state"], "offline");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hub_stopped_with_sigterm_exits_0_and_its_agent_reconnects_to_the_next() {
    let mut hub = Hub::start().await;
    let mut w = hub.agent("w", 1, &[]).await;
    assert_eq!(hub.terminate().await, Some(0));
    let agent = w.process.as_mut().unwrap().child_mut();
    assert!(agent.try_wait().unwrap().is_none(), "the agent exited with the hub");

    hub.restart().await;
    hub.wait_connected("w").await;
    let id = hub.shell_task("echo again").await;
    hub.wait_state(&id, &["succeeded"]).await;
    assert_eq!(hub.output(&id).await, "again\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn muster_up_runs_a_shell_task_with_the_admin_token_from_its_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = path_str(dir.path());
    let mut cmd = muster_command(&["--data-dir", &data_dir, "up", "--listen", "127.0.0.1:0"]);
    cmd.env("MUSTER_LOG", "info").stdout(Stdio::null());
    let mut up = ProcessGroup::spawn(&mut cmd).unwrap();
    let ready = forward_stderr(&mut up, "up", "muster is up: hub http://");
    let line = tokio::time::timeout(PATIENCE, ready).await.expect("up starts in time").expect("up starts");
    let url = line.split("hub ").nth(1).and_then(|s| s.split_whitespace().next()).expect("a hub URL").to_owned();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");

    // No MUSTER_TOKEN: the CLI reads admin.token from the data directory.
    let cli = |args: &[&str]| {
        let mut cmd = muster_command(&[&["--data-dir", data_dir.as_str()], args].concat());
        cmd.env("MUSTER_URL", &url);
        cmd
    };
    let (code, out, err) = run_to_end(&mut cli(&["task", "add", "--runner", "shell", "echo hello"]), PATIENCE).await;
    assert_eq!(code, 0, "{err}");
    let id = out.trim().to_owned();
    assert!(is_task_id(&id), "{out:?}");
    let (code, out, err) = run_to_end(&mut cli(&["task", "wait", &id]), PATIENCE).await;
    assert_eq!(code, 0, "{out} {err}");
    let (code, out, err) = run_to_end(&mut cli(&["task", "logs", &id]), PATIENCE).await;
    assert_eq!((code, out.as_str()), (0, "hello\n"), "{err}");

    up.signal(libc::SIGTERM);
    let status = tokio::time::timeout(PATIENCE, up.wait()).await.expect("up stops in time").unwrap();
    assert_eq!(status.code(), Some(0));
}

/// On main `muster status | head -1` panicked with exit 101 ("failed
/// printing to stdout: Broken pipe"). Every command that prints ends
/// quietly when its reader has gone, as `head` expects.
#[tokio::test(flavor = "multi_thread")]
async fn commands_end_quietly_when_their_reader_closes_the_pipe() {
    use std::os::unix::process::ExitStatusExt;
    let hub = Hub::start().await;
    let _agent = hub.agent("w", 1, &[]).await;
    let id = hub.shell_task("seq 1 2000").await;
    hub.wait_state(&id, &["succeeded"]).await;
    for args in [
        vec!["status"],
        vec!["task", "list"],
        vec!["task", "logs", &id],
        vec!["task", "show", &id, "--json"],
        vec!["events"],
        vec!["agent", "list"],
        vec!["config"],
        vec!["--help"],
    ] {
        let mut cmd = muster_command(&args);
        cmd.env("MUSTER_URL", &hub.url).env("MUSTER_TOKEN", &hub.token);
        let mut group = ProcessGroup::spawn(&mut cmd).expect("muster starts");
        // The reader is gone before the first line is written.
        drop(group.child_mut().stdout.take());
        let mut err = String::new();
        let mut stderr = group.child_mut().stderr.take().expect("stderr");
        tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut err).await.expect("stderr read");
        let status = tokio::time::timeout(PATIENCE, group.wait()).await.expect("it ends").expect("a status");
        let quiet = status.signal() == Some(libc::SIGPIPE) || status.code() == Some(0);
        assert!(quiet, "muster {}: {status:?}, stderr {err:?}", args.join(" "));
        assert!(!err.contains("panicked"), "muster {}: {err}", args.join(" "));
    }
}

/// On main, `muster doctor` with no flags on a machine without Claude Code
/// said only "this agent offers no runners".
#[tokio::test(flavor = "multi_thread")]
async fn doctor_with_no_flags_names_the_coding_agents_that_are_missing_and_how_to_install_them() {
    let bare = tempfile::tempdir().expect("a directory");
    // Only git on PATH: no claude, no codex.
    let git = String::from_utf8(std::process::Command::new("which").arg("git").output().unwrap().stdout).unwrap();
    std::os::unix::fs::symlink(git.trim(), bare.path().join("git")).unwrap();
    let mut cmd = muster_command(&["doctor", "--workdir", &path_str(bare.path())]);
    cmd.env("PATH", bare.path());
    let (code, out, err) = run_to_end(&mut cmd, PROMPTLY).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(!err.contains("offers no runners"), "{err}");
    assert!(out.contains("FAIL runner claude: claude"), "{out}");
    assert!(
        out.contains("claude is not on PATH: install Claude Code with `npm install -g @anthropic-ai/claude-code`"),
        "{out}"
    );
    assert!(out.contains("codex is not on PATH: install Codex with `npm install -g @openai/codex`"), "{out}");
}

/// On main `muster agent run --url https://…` retried for ever; the CLI
/// already refused that URL with a clear error.
#[tokio::test(flavor = "multi_thread")]
async fn an_agent_given_a_url_it_cannot_speak_exits_at_once_saying_why() {
    let token = format!("mst_AAAAAAAAAAAA_{}", "B".repeat(43));
    for url in ["ftp://hub.example", "hub.example:4000"] {
        let mut cmd = muster_command(&["agent", "run", "--url", url, "--runner", "shell"]);
        cmd.env("MUSTER_TOKEN", &token);
        let (code, _, err) = run_to_end(&mut cmd, PROMPTLY).await;
        assert_eq!(code, 2, "{url}: {err}");
        assert!(err.contains(url) && err.contains("must start with http:// or https://"), "{err}");
        let (cli_code, _, cli_err) = cli_with_input(url, &token, &["status"], None).await;
        assert_eq!(cli_code, 2, "the CLI says the same: {cli_err}");
    }
}
