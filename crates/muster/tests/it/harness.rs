//! Starts real hubs and agents as child processes and talks to them over
//! HTTP, the way an operator or a script would.

use muster_agent::process::ProcessGroup;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::oneshot;

pub const BIN: &str = env!("CARGO_BIN_EXE_muster");

/// Longest any test waits for a condition before failing. A safety net,
/// not a synchronisation: every wait returns as soon as its event happens.
pub const PATIENCE: Duration = Duration::from_secs(90);

/// Settings for a test hub: short intervals so failures are noticed fast.
#[derive(Clone)]
pub struct HubOpts {
    pub heartbeat: &'static str,
    pub lease_ttl: &'static str,
    pub accept_timeout: &'static str,
    pub backoff_base: &'static str,
    pub backoff_max: &'static str,
    pub restart_grace: &'static str,
    /// Alerts are evaluated this often; rarely, unless a test is about them.
    pub alert_interval: &'static str,
    /// More `muster hub` flags.
    pub extra: &'static [&'static str],
    /// The hub's open-file limit, soft and hard (so it cannot raise it).
    pub file_limit: Option<u64>,
    /// The umask the hub is started with.
    pub umask: Option<u32>,
    /// `--database` (a PostgreSQL URL several hubs share); the data directory's SQLite file if none.
    pub database: Option<String>,
    /// The CA (PEM) the test's client and CLI trust, for a hub serving TLS (`--tls-cert` in `extra`).
    pub ca: Option<PathBuf>,
    /// `--listen` (a port of 0 picks a free one).
    pub listen: &'static str,
}

impl Default for HubOpts {
    fn default() -> HubOpts {
        HubOpts {
            heartbeat: "200ms",
            lease_ttl: "1s",
            accept_timeout: "3s",
            backoff_base: "100ms",
            backoff_max: "2s",
            restart_grace: "3s",
            alert_interval: "1h",
            extra: &[],
            file_limit: None,
            umask: None,
            database: None,
            ca: None,
            listen: "127.0.0.1:0",
        }
    }
}

pub struct Hub {
    pub process: Option<ProcessGroup>,
    pub addr: SocketAddr,
    pub url: String,
    pub dir: tempfile::TempDir,
    pub token: String,
    pub opts: HubOpts,
    http: reqwest::Client,
    /// The hub's port, bound (not listening: a connect is refused, as with
    /// no hub) while it is stopped, so that a test running beside this one
    /// cannot take it before `restart`.
    held: Option<tokio::net::TcpSocket>,
}

/// An HTTP client that trusts `ca` (PEM) beside the system's roots.
pub fn test_client(ca: Option<&Path>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder().use_rustls_tls();
    if let Some(ca) = ca {
        let pem = std::fs::read(ca).expect("the CA file");
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem).expect("a PEM certificate"));
    }
    builder.build().expect("an HTTP client")
}

/// Binds `addr` without listening on it.
fn hold_port(addr: SocketAddr) -> Option<tokio::net::TcpSocket> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }.ok()?;
    socket.set_reuseaddr(true).ok()?;
    socket.bind(addr).ok()?;
    Some(socket)
}

fn command(args: &[&str]) -> tokio::process::Command {
    command_via(&[], args)
}

/// `muster ARGS`, started through `via` when given (`ip netns exec NS`).
fn command_via(via: &[&str], args: &[&str]) -> tokio::process::Command {
    let mut cmd = match via.split_first() {
        Some((first, rest)) => {
            let mut cmd = tokio::process::Command::new(first);
            cmd.args(rest).arg(BIN);
            cmd
        }
        None => tokio::process::Command::new(BIN),
    };
    cmd.args(args).env("MUSTER_LOG", "info,muster_hub=debug").env_remove("MUSTER_TOKEN").env_remove("MUSTER_URL");
    cmd
}

/// Forwards a child's stderr to the test's output, tagged, and hands back
/// the first line that contains `needle`.
fn watch_stderr(group: &mut ProcessGroup, tag: String, needle: &'static str) -> oneshot::Receiver<String> {
    let stderr = group.child_mut().stderr.take().expect("stderr is piped");
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let mut tx = Some(tx);
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("[{tag}] {line}");
            if line.contains(needle)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(line);
            }
        }
    });
    rx
}

impl Hub {
    pub async fn start() -> Hub {
        Hub::start_with(HubOpts::default()).await
    }

    pub async fn start_with(opts: HubOpts) -> Hub {
        Hub::start_in(tempfile::tempdir().expect("a temporary directory"), opts).await
    }

    /// A hub whose data directory is `dir`, as the test left it.
    pub async fn start_in(dir: tempfile::TempDir, opts: HubOpts) -> Hub {
        let (process, addr) = Hub::spawn(dir.path(), opts.listen, &opts).await;
        let token = std::fs::read_to_string(dir.path().join("admin.token")).expect("the hub wrote admin.token");
        Hub {
            process: Some(process),
            addr,
            url: format!("{}://{addr}", if opts.ca.is_some() { "https" } else { "http" }),
            dir,
            token: token.trim().to_owned(),
            http: test_client(opts.ca.as_deref()),
            opts,
            held: None,
        }
    }

    /// Another hub on `first`'s database (PostgreSQL), in a data directory
    /// of its own; it uses the admin token `first` created.
    pub async fn join(first: &Hub) -> Hub {
        assert!(first.opts.database.is_some(), "hubs share a PostgreSQL database, not a data directory");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (process, addr) = Hub::spawn(dir.path(), first.opts.listen, &first.opts).await;
        Hub {
            process: Some(process),
            addr,
            url: format!("{}://{addr}", if first.opts.ca.is_some() { "https" } else { "http" }),
            dir,
            token: first.token.clone(),
            opts: first.opts.clone(),
            http: test_client(first.opts.ca.as_deref()),
            held: None,
        }
    }

    async fn spawn(dir: &Path, listen: &str, o: &HubOpts) -> (ProcessGroup, SocketAddr) {
        let dir = dir.to_str().expect("a UTF-8 path");
        let mut cmd = command(&[
            "--data-dir",
            dir,
            "hub",
            "--listen",
            listen,
            "--heartbeat-interval",
            o.heartbeat,
            "--lease-ttl",
            o.lease_ttl,
            "--accept-timeout",
            o.accept_timeout,
            "--retry-backoff-base",
            o.backoff_base,
            "--retry-backoff-max",
            o.backoff_max,
        ]);
        // Scheduled backups off: a background backup would race tests that watch the timeline.
        cmd.args(["--restart-grace", o.restart_grace, "--backup-interval", "0", "--alert-interval", o.alert_interval])
            .args(o.extra);
        if let Some(db) = &o.database {
            cmd.args(["--database", db]);
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::piped()).stdin(Stdio::null());
        if let Some(mask) = o.umask {
            // SAFETY: umask is async-signal-safe; it runs in the child before exec.
            unsafe {
                cmd.pre_exec(move || {
                    libc::umask(mask as libc::mode_t);
                    Ok(())
                });
            }
        }
        if let Some(limit) = o.file_limit {
            // SAFETY: setrlimit is async-signal-safe; it runs in the child before exec.
            unsafe {
                cmd.pre_exec(move || {
                    let l = libc::rlimit { rlim_cur: limit, rlim_max: limit };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut group = ProcessGroup::spawn(&mut cmd).expect("the hub starts");
        let listening = watch_stderr(&mut group, "hub".into(), "listening on http");
        let line =
            tokio::time::timeout(PATIENCE, listening).await.expect("the hub listens in time").expect("the hub listens");
        let addr = line.split("://").nth(1).and_then(|s| s.split_whitespace().next()).expect("an address");
        (group, addr.parse().expect("a socket address"))
    }

    /// Kills the hub with SIGKILL: no shutdown code runs.
    pub async fn kill9(&mut self) {
        let mut process = self.process.take().expect("the hub is running");
        process.signal(libc::SIGKILL);
        let _ = process.wait().await;
        self.held = hold_port(self.addr);
    }

    /// Starts the hub again on the same data directory and the same port,
    /// so agents find it where they left it.
    pub async fn restart(&mut self) {
        assert!(self.process.is_none(), "stop the hub first");
        drop(self.held.take());
        let (process, addr) = Hub::spawn(self.dir.path(), &self.addr.to_string(), &self.opts).await;
        assert_eq!(addr, self.addr);
        self.process = Some(process);
    }

    /// Sends SIGTERM to the hub and returns its exit code.
    pub async fn terminate(&mut self) -> Option<i32> {
        let mut process = self.process.take().expect("the hub is running");
        // SAFETY: signalling a child we spawned; the hub leads its group.
        unsafe {
            libc::kill(process.pgid(), libc::SIGTERM);
        }
        let status = tokio::time::timeout(PATIENCE, process.wait()).await.expect("the hub exits").expect("status");
        self.held = hold_port(self.addr);
        status.code()
    }

    pub async fn request(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.request_as(&self.token.clone(), method, path, body).await
    }

    pub async fn request_as(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}/api/v1{path}", self.url)).timeout(PATIENCE);
        if !token.is_empty() {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("the hub answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("a body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn get(&self, path: &str) -> Value {
        let (status, body) = self.request(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.request(reqwest::Method::POST, path, Some(body)).await
    }

    /// Submits a task and returns its id.
    pub async fn add_task(&self, body: Value) -> String {
        let (status, body) = self.post("/tasks", body).await;
        assert_eq!(status, 201, "task creation failed: {body}");
        body["task"]["id"].as_str().expect("an id").to_owned()
    }

    pub async fn shell_task(&self, script: &str) -> String {
        self.add_task(json!({ "prompt": script, "runner": "shell" })).await
    }

    pub async fn task(&self, id: &str) -> Value {
        self.get(&format!("/tasks/{id}")).await
    }

    pub async fn add_agent(&self, name: &str, caps: &[&str]) -> String {
        let (status, body) = self.post("/agents", json!({ "name": name, "capabilities": caps })).await;
        assert_eq!(status, 201, "agent registration failed: {body}");
        body["token"].as_str().expect("a token").to_owned()
    }

    /// The latest event sequence number.
    pub async fn last_event(&self) -> i64 {
        self.get("/status").await["last_event"].as_i64().expect("last_event")
    }

    /// Events matching `query` (e.g. `task=t_..`), all of them.
    pub async fn events(&self, query: &str) -> Vec<Value> {
        let mut all = Vec::new();
        let mut after = 0;
        loop {
            let page = self.get(&format!("/events?after={after}&limit=10000&{query}")).await;
            let events = page["events"].as_array().expect("events").clone();
            if events.is_empty() {
                return all;
            }
            after = page["next_after"].as_i64().expect("next_after");
            all.extend(events);
        }
    }

    /// Waits until `check` holds, re-checking after every new event.
    pub async fn wait_until<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let mut after = self.last_event().await;
        loop {
            if let Some(v) = check().await {
                return v;
            }
            assert!(tokio::time::Instant::now() < deadline, "gave up waiting for {what}");
            let page = self.get(&format!("/events?after={after}&limit=10000&wait=5s")).await;
            after = page["next_after"].as_i64().expect("next_after");
        }
    }

    /// Waits until the task is in one of `states` and returns it.
    pub async fn wait_state(&self, id: &str, states: &[&str]) -> Value {
        self.wait_until(&format!("task {id} to be {states:?}"), || async {
            let task = self.task(id).await;
            states.contains(&task["state"].as_str().unwrap_or("")).then_some(task)
        })
        .await
    }

    /// Waits until the agent is connected.
    pub async fn wait_connected(&self, name: &str) {
        self.wait_until(&format!("agent {name} to connect"), || async {
            let agent = self.get(&format!("/agents/{name}")).await;
            agent["connected"].as_bool().unwrap_or(false).then_some(())
        })
        .await
    }

    /// All output of a task as one string.
    pub async fn output(&self, id: &str) -> String {
        let page = self.get(&format!("/tasks/{id}/logs")).await;
        page["chunks"].as_array().expect("chunks").iter().map(|c| c["data"].as_str().unwrap_or("")).collect()
    }

    /// Waits until the task's output contains `needle`.
    pub async fn wait_output(&self, id: &str, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let out = self.output(id).await;
            if out.contains(needle) {
                return out;
            }
            assert!(tokio::time::Instant::now() < deadline, "gave up waiting for {needle:?} in {id}'s output");
            // The logs route holds the request until new output arrives.
            let after = self.get(&format!("/tasks/{id}/logs")).await["next_after"].as_i64().unwrap_or(0);
            let _ = self.get(&format!("/tasks/{id}/logs?after={after}&wait=5s")).await;
        }
    }

    /// Runs the CLI against this hub; returns (exit code, stdout, stderr).
    pub async fn cli(&self, args: &[&str]) -> (i32, String, String) {
        match &self.opts.ca {
            Some(ca) => {
                let ca = path_str(ca);
                let mut with_ca = vec!["--ca", &ca];
                with_ca.extend_from_slice(args);
                cli_with_input(&self.url, &self.token, &with_ca, None).await
            }
            None => cli_with_input(&self.url, &self.token, args, None).await,
        }
    }

    pub fn spawn_agent(&self, name_token: (&str, &str), slots: u32, caps: &[&str]) -> Agent {
        Agent::spawn(&self.url, name_token.0, name_token.1, slots, caps)
    }

    /// Registers and starts an agent whose config file (written in `dir`)
    /// says `toml`, and waits until it is connected.
    pub async fn agent_with_config(&self, name: &str, dir: &Path, toml: &str, opts: AgentOpts<'_>) -> Agent {
        let config = dir.join(format!("{name}.toml"));
        std::fs::write(&config, toml).expect("the agent config");
        let token = self.add_agent(name, &[]).await;
        let agent = Agent::spawn_with(&self.url, name, &token, AgentOpts { config: Some(&config), ..opts });
        self.wait_connected(name).await;
        agent
    }

    /// Registers and starts an agent, and waits until it is connected.
    pub async fn agent(&self, name: &str, slots: u32, caps: &[&str]) -> Agent {
        let token = self.add_agent(name, caps).await;
        let agent = self.spawn_agent((name, &token), slots, caps);
        self.wait_connected(name).await;
        agent
    }
}

pub async fn cli_with_input(url: &str, token: &str, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut cmd = command(args);
    cmd.env("MUSTER_URL", url).env("MUSTER_TOKEN", token).env("MUSTER_LOG", "warn");
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut group = ProcessGroup::spawn(&mut cmd).expect("the CLI starts");
    if let (Some(input), Some(mut pipe)) = (stdin, group.child_mut().stdin.take()) {
        use tokio::io::AsyncWriteExt;
        pipe.write_all(input.as_bytes()).await.expect("stdin written");
        drop(pipe);
    }
    let mut stdout = group.child_mut().stdout.take().expect("stdout");
    let mut stderr = group.child_mut().stderr.take().expect("stderr");
    let (mut out, mut err) = (String::new(), String::new());
    use tokio::io::AsyncReadExt;
    let (a, b) = tokio::join!(stdout.read_to_string(&mut out), stderr.read_to_string(&mut err));
    a.expect("stdout read");
    b.expect("stderr read");
    let status = tokio::time::timeout(PATIENCE, group.wait()).await.expect("the CLI exits").expect("status");
    (status.code().unwrap_or(-1), out, err)
}

pub struct Agent {
    pub process: Option<ProcessGroup>,
    /// Where the agent's runs start; removed with the agent.
    _workdir: tempfile::TempDir,
}

/// How to start an agent beyond its name and token.
pub struct AgentOpts<'a> {
    pub slots: u32,
    pub caps: &'a [&'a str],
    /// Built-in runners to enable (`--runner`).
    pub runners: &'a [&'a str],
    /// An agent config file (`--config`).
    pub config: Option<&'a Path>,
    /// Variables set in the agent's environment (its runs see those their profile names).
    pub env: Vec<(String, String)>,
    /// A network namespace to run it in (`ip netns exec`).
    pub netns: Option<&'a str>,
}

impl Default for AgentOpts<'_> {
    fn default() -> Self {
        AgentOpts { slots: 1, caps: &[], runners: &["shell"], config: None, env: Vec::new(), netns: None }
    }
}

impl Agent {
    pub fn spawn(url: &str, name: &str, token: &str, slots: u32, caps: &[&str]) -> Agent {
        Agent::spawn_with(url, name, token, AgentOpts { slots, caps, ..AgentOpts::default() })
    }

    pub fn spawn_with(url: &str, name: &str, token: &str, opts: AgentOpts<'_>) -> Agent {
        let workdir = tempfile::tempdir().expect("a workdir");
        let slots = opts.slots.to_string();
        let mut args = vec!["agent", "run", "--hub", url, "--slots", &slots, "--drain-timeout", "5s"];
        for runner in opts.runners {
            args.extend(["--runner", runner]);
        }
        let workdir_str = workdir.path().to_str().expect("a UTF-8 path").to_owned();
        args.extend(["--workdir", &workdir_str]);
        let config = opts.config.map(path_str);
        if let Some(config) = &config {
            args.extend(["--config", config]);
        }
        for cap in opts.caps {
            args.extend(["--cap", cap]);
        }
        let mut cmd = match opts.netns {
            Some(ns) => command_via(&["ip", "netns", "exec", ns], &args),
            None => command(&args),
        };
        cmd.envs(opts.env);
        cmd.env("MUSTER_TOKEN", token).stdout(Stdio::null()).stderr(Stdio::piped()).stdin(Stdio::null());
        let mut group = ProcessGroup::spawn(&mut cmd).expect("the agent starts");
        drop(watch_stderr(&mut group, format!("agent {name}"), "\u{0}never"));
        Agent { process: Some(group), _workdir: workdir }
    }

    /// SIGKILL to the agent process only: its runs are orphaned, not cleaned up.
    pub async fn kill9(&mut self) {
        let mut process = self.process.take().expect("the agent is running");
        // SAFETY: signalling a child we spawned.
        unsafe {
            libc::kill(process.pgid(), libc::SIGKILL);
        }
        let _ = process.wait().await;
        std::mem::forget(process);
    }
}

/// The live (non-zombie) processes in process group `pgid`.
pub fn live_members(pgid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return out };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // Fields after the command, which is in parentheses and may contain spaces.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let (state, pgrp) = (fields.first().copied().unwrap_or(""), fields.get(2).and_then(|p| p.parse::<i32>().ok()));
        if pgrp == Some(pgid) && state != "Z" && state != "X" {
            out.push(pid);
        }
    }
    out
}

pub fn count_kind(events: &[Value], kind: &str) -> usize {
    events.iter().filter(|e| e["kind"] == kind).count()
}

pub fn path_str(p: &Path) -> String {
    p.to_str().expect("a UTF-8 path").to_owned()
}

/// A `muster` command with no inherited hub URL or token, quiet logs and
/// every stream piped; the caller adds what the case needs.
pub fn muster_command(args: &[&str]) -> tokio::process::Command {
    let mut cmd = command(args);
    cmd.env("MUSTER_LOG", "warn").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// Runs `cmd` to its end; returns (exit code, stdout, stderr). Fails the
/// test if it has not exited within `limit`.
pub async fn run_to_end(cmd: &mut tokio::process::Command, limit: Duration) -> (i32, String, String) {
    use tokio::io::AsyncReadExt;
    let mut group = ProcessGroup::spawn(cmd).expect("muster starts");
    let mut stdout = group.child_mut().stdout.take().expect("stdout is piped");
    let mut stderr = group.child_mut().stderr.take().expect("stderr is piped");
    let run = async {
        let (mut out, mut err) = (String::new(), String::new());
        let (a, b) = tokio::join!(stdout.read_to_string(&mut out), stderr.read_to_string(&mut err));
        a.expect("stdout read");
        b.expect("stderr read");
        let status = group.wait().await.expect("status");
        (status.code().unwrap_or(-1), out, err)
    };
    tokio::time::timeout(limit, run).await.unwrap_or_else(|_| panic!("muster did not exit within {limit:?}"))
}

/// Forwards a child's piped stderr to the test's output, tagged, and hands
/// back the first line that contains `needle`.
pub fn forward_stderr(group: &mut ProcessGroup, tag: &str, needle: &'static str) -> oneshot::Receiver<String> {
    watch_stderr(group, tag.to_owned(), needle)
}

/// An agent's WebSocket, spoken by hand in tests.
pub type AgentSocket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Connects to the hub as the agent owning `token` and says `hello` (runner
/// `shell`, one slot, no runs). The hub's `welcome` is left to the caller.
pub async fn agent_socket(hub: &Hub, token: &str) -> AgentSocket {
    agent_socket_with_slots(hub, token, 1).await
}

/// `agent_socket` with `slots` slots.
pub async fn agent_socket_with_slots(hub: &Hub, token: &str, slots: u32) -> AgentSocket {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    let mut request = format!("ws://{}/api/v1/agent/connect", hub.addr).into_client_request().expect("a WebSocket URL");
    let auth = HeaderValue::from_str(&format!("Bearer {token}")).expect("a header value");
    request.headers_mut().insert("authorization", auth);
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.expect("the hub accepts the agent");
    let hello = serde_json::json!({
        "type": "hello", "protocol": muster_proto::ws::PROTOCOL_VERSION, "version": "test", "capabilities": [], "runners": ["shell"],
        "slots": slots, "runs": [], "draining": false,
    });
    let hello = tokio_tungstenite::tungstenite::Message::text(hello.to_string());
    socket.send(hello).await.expect("hello sent");
    socket
}

/// What keeps a test from running here.
pub enum Missing<'a> {
    /// A program or package the suite needs; `.ci/run` installs it. With
    /// `CI` set this fails the test, naming it: a green CI run means that
    /// everything ran.
    Dependency(&'a str),
    /// The kernel refused what the test needs (a mount in a container
    /// without the privilege): the test is skipped, even in CI, and counted.
    Kernel(&'a str),
}

/// Skips `test`, saying why on stderr and recording it in
/// `target/test-skips/` for `.ci/run`'s count; under `CI` a missing
/// dependency fails the test instead.
pub fn skip(test: &str, missing: Missing<'_>) {
    let (why, fatal) = match missing {
        Missing::Dependency(what) => (what, std::env::var_os("CI").is_some()),
        Missing::Kernel(what) => (what, false),
    };
    assert!(!fatal, "{test} cannot run: {why}. With CI set every test must run; .ci/run installs what they need");
    eprintln!("\n!!! SKIPPED {test}: {why} !!!\n");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-skips");
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = std::fs::write(dir.join(test.replace("::", "-")), format!("{why}\n"));
    }
}
