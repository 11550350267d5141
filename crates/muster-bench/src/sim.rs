//! The hub's clients, simulated: submitters on the real API and agents on
//! real WebSockets that run a no-op, so what is measured is the hub.

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use muster_proto::to_json;
use muster_proto::ws::{AgentMsg, HubMsg, PROTOCOL_VERSION, RunRef};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpSocket;
use tokio::sync::{Notify, Semaphore, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The runner the simulated agents offer: it does nothing, at once.
pub const RUNNER: &str = "bench";

/// Connections one loopback source address takes before the next is used:
/// below the kernel's ephemeral port range (32768–60999 by default).
const PER_SOURCE: usize = 25_000;

/// WebSocket handshakes one fleet has under way at once.
const HANDSHAKES: usize = 256;

/// The hub's HTTP API, as an admin.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    url: String,
    token: String,
    submitter: Arc<Submitter>,
}

impl Api {
    pub fn new(addr: SocketAddr, token: &str) -> Api {
        let http = reqwest::Client::builder().pool_max_idle_per_host(1024).build().expect("an HTTP client");
        let submitter = Arc::new(Submitter::new(addr, token));
        Api { http, url: format!("http://{addr}"), token: token.to_owned(), submitter }
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let mut req = self.http.request(method, format!("{}/api/v1{path}", self.url));
        if let Some(body) = body {
            req = req.json(body);
        }
        let text = self.text(req, path).await?;
        Ok(if text.is_empty() { Value::Null } else { serde_json::from_str(&text)? })
    }

    /// Sends `req` as the admin; the answer's body, or an error naming
    /// `path` when the status is not a success.
    async fn text(&self, req: reqwest::RequestBuilder, path: &str) -> anyhow::Result<String> {
        let resp = req.bearer_auth(&self.token).send().await.with_context(|| format!("{path}: no answer"))?;
        let status = resp.status();
        let text = resp.text().await.with_context(|| format!("{path}: no body"))?;
        if !status.is_success() {
            bail!("{path}: {status}: {text}");
        }
        Ok(text)
    }

    /// Registers an agent; returns its token.
    pub async fn add_agent(&self, name: &str) -> anyhow::Result<String> {
        let created = self.call(reqwest::Method::POST, "/agents", Some(&json!({ "name": name }))).await?;
        created["token"].as_str().map(str::to_owned).ok_or_else(|| anyhow!("no token for {name}"))
    }

    /// Registers `n` agents named `prefix-NNNNNN`, `parallel` at a time.
    pub async fn add_agents(&self, prefix: &str, n: usize, parallel: usize) -> anyhow::Result<Vec<(String, String)>> {
        let names: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:06}")).collect();
        let tokens: Vec<anyhow::Result<String>> = futures_util::stream::iter(names.iter())
            .map(|name| self.add_agent(name))
            .buffered(parallel)
            .collect()
            .await;
        names.into_iter().zip(tokens).map(|(n, t)| Ok((n, t?))).collect()
    }

    /// Queues one no-op task tagged with `i`.
    pub async fn submit(&self, i: u64, priority: &str) -> anyhow::Result<()> {
        self.submitter.submit(i, priority).await
    }

    /// Queues `n` no-op tasks in batches of a thousand, `parallel` batches at a time.
    pub async fn seed(&self, n: u64, parallel: usize) -> anyhow::Result<()> {
        const BATCH: u64 = 1000;
        let batches = n.div_ceil(BATCH);
        let results: Vec<anyhow::Result<Value>> = futures_util::stream::iter(0..batches)
            .map(|b| {
                let count = BATCH.min(n - b * BATCH);
                let tasks: Vec<Value> = (0..count)
                    .map(|_| json!({ "prompt": "noop", "runner": RUNNER, "metadata": { "seed": b } }))
                    .collect();
                let body = json!({ "tasks": tasks });
                async move { self.call(reqwest::Method::POST, "/tasks/batch", Some(&body)).await }
            })
            .buffer_unordered(parallel)
            .collect()
            .await;
        for r in results {
            r?;
        }
        Ok(())
    }

    /// The hub's metrics, as Prometheus text.
    pub async fn metrics(&self) -> anyhow::Result<String> {
        self.text(self.http.get(format!("{}/metrics", self.url)), "/metrics").await
    }

    /// Task counts by state.
    pub async fn counts(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let status = self.call(reqwest::Method::GET, "/status", None).await?;
        Ok(serde_json::from_value(status["tasks"].clone())?)
    }
}

/// Submits tasks the way a lean client would: each request written whole
/// in one call on a kept-alive connection of its own, and of the answer
/// only the status and the length read, the body parsed only when it is an
/// error. The harness shares the hub's cores, so what its client spends is
/// taken from the hub; the hub's side is its real HTTP/1.1 server.
pub struct Submitter {
    addr: SocketAddr,
    /// The request's head up to its `content-length` value.
    head: String,
    idle: std::sync::Mutex<Vec<HttpConn>>,
}

impl Submitter {
    fn new(addr: SocketAddr, token: &str) -> Submitter {
        let head = format!(
            "POST /api/v1/tasks HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer {token}\r\n\
             content-type: application/json\r\ncontent-length: "
        );
        Submitter { addr, head, idle: std::sync::Mutex::new(Vec::new()) }
    }

    async fn submit(&self, i: u64, priority: &str) -> anyhow::Result<()> {
        let body = format!(r#"{{"prompt":"noop","runner":"{RUNNER}","priority":"{priority}","metadata":{{"i":{i}}}}}"#);
        let mut request = Vec::with_capacity(self.head.len() + body.len() + 8);
        request.extend_from_slice(self.head.as_bytes());
        request.extend_from_slice(format!("{}\r\n\r\n", body.len()).as_bytes());
        request.extend_from_slice(body.as_bytes());
        let idle = self.idle.lock().expect("submitter lock poisoned").pop();
        let (mut conn, kept) = match idle {
            Some(conn) => (conn, true),
            None => (HttpConn::open(self.addr).await?, false),
        };
        let answer = match conn.exchange(&request).await {
            Ok(answer) => answer,
            // A kept connection the hub closed while it sat idle took
            // nothing of the request: it goes again on a new one.
            Err(e) if kept && e.is::<Unanswered>() => {
                conn = HttpConn::open(self.addr).await?;
                conn.exchange(&request).await.context("POST /tasks")?
            }
            Err(e) => return Err(e.context("POST /tasks")),
        };
        if !(200..300).contains(&answer.status) {
            bail!("POST /tasks: {}: {}", answer.status, String::from_utf8_lossy(&answer.body));
        }
        if answer.reusable {
            self.idle.lock().expect("submitter lock poisoned").push(conn);
        }
        Ok(())
    }
}

/// One kept-alive HTTP/1.1 connection to the hub.
struct HttpConn {
    stream: tokio::net::TcpStream,
    /// Bytes read and not yet consumed.
    buf: Vec<u8>,
}

struct Answer {
    status: u16,
    /// Kept only when the status is not a success.
    body: Vec<u8>,
    /// False when the hub said it closes the connection.
    reusable: bool,
}

impl HttpConn {
    async fn open(addr: SocketAddr) -> anyhow::Result<HttpConn> {
        let stream = tokio::net::TcpStream::connect(addr).await.with_context(|| format!("cannot connect to {addr}"))?;
        stream.set_nodelay(true)?;
        Ok(HttpConn { stream, buf: Vec::with_capacity(4096) })
    }

    /// Writes `request` and reads its answer, which must give its length.
    /// Fails with `Unanswered` when the connection broke before any of the
    /// answer came.
    async fn exchange(&mut self, request: &[u8]) -> anyhow::Result<Answer> {
        use tokio::io::AsyncWriteExt;
        if let Err(e) = self.stream.write_all(request).await {
            return Err(anyhow::Error::new(Unanswered).context(e));
        }
        let (head_len, status, length, reusable) = loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buf[..end]).context("an answer head that is not UTF-8")?;
                let (status, length, reusable) = parse_head(head)?;
                break (end + 4, status, length, reusable);
            }
            self.fill().await?;
        };
        while self.buf.len() < head_len + length {
            self.fill().await?;
        }
        let body = match status {
            200..300 => Vec::new(),
            _ => self.buf[head_len..head_len + length].to_vec(),
        };
        self.buf.drain(..head_len + length);
        Ok(Answer { status, body, reusable })
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        use tokio::io::AsyncReadExt;
        match self.stream.read_buf(&mut self.buf).await {
            Ok(0) | Err(_) if self.buf.is_empty() => Err(anyhow::Error::new(Unanswered)),
            Ok(0) => bail!("the hub closed the connection mid-answer"),
            Ok(_) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// The connection broke before any of the answer came.
#[derive(Debug)]
struct Unanswered;

impl std::fmt::Display for Unanswered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the hub closed the connection before answering")
    }
}

impl std::error::Error for Unanswered {}

/// An answer's status, body length and whether the connection stays open.
fn parse_head(head: &str) -> anyhow::Result<(u16, usize, bool)> {
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("an answer without a status: {status_line:?}"))?;
    let (mut length, mut reusable) = (None, true);
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse().with_context(|| format!("content-length {value:?}"))?);
        } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close") {
            reusable = false;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            bail!("an answer with transfer-encoding {value}: only content-length is read");
        }
    }
    Ok((status, length.unwrap_or(0), reusable))
}

/// What an agent does with an assignment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Accepts and finishes it at once.
    Finish,
    /// Accepts it and holds it, heartbeating, until the end.
    Hold,
    /// Takes no work (one slot, a runner no task names).
    Idle,
}

/// What every agent of a run adds to, shared.
#[derive(Default)]
pub struct Tally {
    pub welcomed: AtomicU64,
    pub assigned: AtomicU64,
    pub acked: AtomicU64,
    pub running: AtomicU64,
    pub dropped: AtomicU64,
    pub heartbeats: AtomicU64,
    pub changed: Notify,
}

impl Tally {
    /// Waits until `what` holds, or fails after `limit`.
    pub async fn wait(&self, what: &str, limit: Duration, check: impl Fn(&Tally) -> bool) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let changed = self.changed.notified();
            if check(self) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                bail!("timed out after {} s waiting for {what}", limit.as_secs());
            }
        }
    }

    fn bump(&self, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
        self.changed.notify_waiters();
    }
}

/// What one agent saw, handed back when it stops.
#[derive(Default)]
pub struct Seen {
    /// When each tagged assignment arrived: (the task's `i`, arrival).
    pub assigned: Vec<(u64, Instant)>,
    /// When each finished run was acknowledged as durable.
    pub acked: Vec<Instant>,
    /// When the first assignment arrived.
    pub first_assign: Option<Instant>,
}

pub struct AgentSpec {
    pub name: String,
    pub token: String,
    pub slots: u32,
    pub mode: Mode,
    /// Which loopback source address to connect from.
    pub source: IpAddr,
}

/// The loopback source address for the `k`th connection.
pub fn source_for(k: usize) -> IpAddr {
    let idx = (k / PER_SOURCE) as u8;
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + idx))
}

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// Small buffers: a bench may hold tens of thousands of these. Frames fed
/// before a flush (an `accept` and its `finished`) go out in one write.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(4096)
}

async fn connect(hub: SocketAddr, spec: &AgentSpec) -> anyhow::Result<Socket> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(spec.source, 0)).with_context(|| format!("cannot bind {}", spec.source))?;
    let stream = socket.connect(hub).await?;
    stream.set_nodelay(true)?;
    let mut request = format!("ws://{hub}/api/v1/agent/connect").into_client_request()?;
    request.headers_mut().insert("authorization", format!("Bearer {}", spec.token).parse()?);
    let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config())).await?;
    Ok(ws)
}

fn hello(spec: &AgentSpec, runs: &BTreeMap<String, u64>) -> Message {
    let runners = match spec.mode {
        Mode::Idle => vec!["idle".to_owned()],
        _ => vec![RUNNER.to_owned()],
    };
    let msg = AgentMsg::Hello {
        protocol: PROTOCOL_VERSION,
        version: "bench".into(),
        capabilities: Vec::new(),
        runners,
        slots: spec.slots,
        runs: run_refs(runs),
        draining: false,
        doctor: None,
        channels: Vec::new(),
    };
    Message::text(to_json(&msg))
}

fn run_refs(runs: &BTreeMap<String, u64>) -> Vec<RunRef> {
    runs.iter().map(|(task, epoch)| RunRef { task: task.clone(), epoch: *epoch }).collect()
}

/// Runs one simulated agent until `stop` turns true: connects (again after
/// any disconnect, within milliseconds), says hello with the runs it holds,
/// heartbeats, and does what `spec.mode` says with each assignment.
pub async fn agent(
    hub: SocketAddr,
    spec: AgentSpec,
    tally: Arc<Tally>,
    mut stop: watch::Receiver<bool>,
    handshakes: Arc<Semaphore>,
) -> Seen {
    let mut seen = Seen::default();
    let mut runs: BTreeMap<String, u64> = BTreeMap::new();
    while !*stop.borrow() {
        let ws = tokio::select! {
            ws = async {
                let _turn = handshakes.acquire().await;
                connect(hub, &spec).await
            } => ws,
            _ = async { drop(stop.wait_for(|s| *s).await) } => break,
        };
        let Ok(ws) = ws else {
            tokio::time::sleep(Duration::from_millis(2)).await;
            continue;
        };
        // Ends when the socket does, or when told to stop.
        if let Err(e) = session(ws, &spec, &tally, &mut stop, &mut runs, &mut seen).await
            && !*stop.borrow()
        {
            tracing_free_note(&spec.name, &e);
        }
    }
    seen
}

/// Disconnects are part of some scenarios (a hub killed on purpose); only
/// the unexpected ones are worth a line.
fn tracing_free_note(name: &str, e: &anyhow::Error) {
    let text = e.to_string();
    if !(text.contains("reset") || text.contains("closed") || text.contains("refused") || text.contains("EOF")) {
        eprintln!("bench agent {name}: {text}");
    }
}

async fn session(
    mut ws: Socket,
    spec: &AgentSpec,
    tally: &Tally,
    stop: &mut watch::Receiver<bool>,
    runs: &mut BTreeMap<String, u64>,
    seen: &mut Seen,
) -> anyhow::Result<()> {
    ws.send(hello(spec, runs)).await?;
    let mut beat = tokio::time::interval(Duration::from_secs(3600));
    let mut welcomed = false;
    loop {
        tokio::select! {
            frame = ws.next() => {
                let text = match frame {
                    None => bail!("closed"),
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(_))) => bail!("closed by the hub"),
                    Some(Ok(_)) => continue,
                };
                let at = Instant::now();
                let msg: HubMsg = serde_json::from_str(&text).with_context(|| format!("unreadable frame {text}"))?;
                match msg {
                    HubMsg::Welcome { heartbeat_ms, .. } | HubMsg::Settings { heartbeat_ms, .. } => {
                        let every = Duration::from_millis(heartbeat_ms.max(1));
                        beat = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                        if !welcomed {
                            welcomed = true;
                            tally.bump(&tally.welcomed);
                        }
                    }
                    HubMsg::Assign { task, epoch, metadata, .. } => {
                        seen.first_assign.get_or_insert(at);
                        if let Some(i) = metadata.as_ref().and_then(|m| m.get("i")).and_then(Value::as_u64) {
                            seen.assigned.push((i, at));
                        }
                        tally.bump(&tally.assigned);
                        let accept = AgentMsg::Accept { task: task.clone(), epoch };
                        ws.feed(Message::text(to_json(&accept))).await?;
                        if spec.mode == Mode::Finish {
                            ws.send(Message::text(to_json(&finished(task, epoch)))).await?;
                        } else {
                            ws.flush().await?;
                            runs.insert(task, epoch);
                            tally.bump(&tally.running);
                        }
                    }
                    HubMsg::Ack { .. } => {
                        seen.acked.push(at);
                        tally.bump(&tally.acked);
                    }
                    HubMsg::Drop { task, .. } | HubMsg::Cancel { task, .. } if runs.remove(&task).is_some() => {
                        tally.bump(&tally.dropped);
                    }
                    HubMsg::Error { message } => eprintln!("bench agent {}: the hub said: {message}", spec.name),
                    _ => {}
                }
            }
            _ = beat.tick(), if welcomed => {
                let msg = AgentMsg::Heartbeat { runs: run_refs(runs), draining: false };
                ws.send(Message::text(to_json(&msg))).await?;
                tally.bump(&tally.heartbeats);
            }
            _ = async { drop(stop.wait_for(|s| *s).await) } => {
                let _ = ws.close(None).await;
                return Ok(());
            }
        }
    }
}

fn finished(task: String, epoch: u64) -> AgentMsg {
    AgentMsg::Finished {
        task,
        epoch,
        outcome: "succeeded".into(),
        exit_code: Some(0),
        reason: None,
        output_truncated: false,
        output_chunks: None,
        report: None,
        workspace: None,
        limit: None,
        summary: None,
        checks: Vec::new(),
    }
}

/// A set of running simulated agents.
pub struct Fleet {
    pub tally: Arc<Tally>,
    stop: watch::Sender<bool>,
    /// Handshakes under way at once, as a fleet that reconnects with jitter spreads them.
    handshakes: Arc<Semaphore>,
    handles: Vec<tokio::task::JoinHandle<Seen>>,
}

impl Fleet {
    /// Starts one agent per `(name, token)`, all with `slots` and `mode`.
    pub fn start(hub: SocketAddr, agents: &[(String, String)], slots: u32, mode: Mode) -> Fleet {
        let tally = Arc::new(Tally::default());
        let (stop, _) = watch::channel(false);
        let handshakes = Arc::new(Semaphore::new(HANDSHAKES));
        let mut fleet = Fleet { tally, stop, handshakes, handles: Vec::new() };
        fleet.add(hub, agents, slots, mode, 0);
        fleet
    }

    /// Adds agents; `offset` counts the connections already made, for their source addresses.
    pub fn add(&mut self, hub: SocketAddr, agents: &[(String, String)], slots: u32, mode: Mode, offset: usize) {
        for (k, (name, token)) in agents.iter().enumerate() {
            let spec =
                AgentSpec { name: name.clone(), token: token.clone(), slots, mode, source: source_for(offset + k) };
            let run = agent(hub, spec, self.tally.clone(), self.stop.subscribe(), self.handshakes.clone());
            self.handles.push(tokio::spawn(run));
        }
    }

    /// Stops every agent and gathers what they saw.
    pub async fn stop(self) -> Vec<Seen> {
        self.stop.send_replace(true);
        let mut all = Vec::with_capacity(self.handles.len());
        for h in self.handles {
            if let Ok(seen) = h.await {
                all.push(seen);
            }
        }
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_head_gives_its_status_length_and_whether_it_stays_open() {
        let head = "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\nContent-Length: 512\r\ndate: x";
        assert_eq!(parse_head(head).unwrap(), (201, 512, true));
        let head = "HTTP/1.1 503 Service Unavailable\r\nconnection: Close\r\ncontent-length: 7";
        assert_eq!(parse_head(head).unwrap(), (503, 7, false));
        assert_eq!(parse_head("HTTP/1.1 204 No Content").unwrap(), (204, 0, true));
    }

    #[test]
    fn an_answer_head_it_cannot_read_is_an_error_naming_what() {
        let chunked = parse_head("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked").unwrap_err().to_string();
        assert!(chunked.contains("transfer-encoding chunked"), "{chunked}");
        let garbled = parse_head("SSH-2.0-OpenSSH").unwrap_err().to_string();
        assert!(garbled.contains("without a status"), "{garbled}");
        let length = parse_head("HTTP/1.1 200 OK\r\ncontent-length: many").unwrap_err().to_string();
        assert!(length.contains("content-length \"many\""), "{length}");
    }

    /// Answers as an HTTP/1.1 server gives them are read on one connection
    /// kept alive across requests; a refusal carries the server's words.
    #[tokio::test]
    async fn submissions_reuse_one_connection() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            for answer in [
                "HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}",
                "HTTP/1.1 400 Bad Request\r\ncontent-length: 4\r\n\r\nnope",
            ] {
                let n = socket.read(&mut buf).await.unwrap();
                seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                socket.write_all(answer.as_bytes()).await.unwrap();
            }
            seen
        });
        let submitter = Submitter::new(addr, "tok");
        submitter.submit(7, "high").await.unwrap();
        let refused = submitter.submit(8, "normal").await.unwrap_err().to_string();
        assert_eq!(refused, "POST /tasks: 400: nope");
        let seen = server.await.unwrap();
        assert!(seen[0].starts_with("POST /api/v1/tasks HTTP/1.1\r\n"), "{}", seen[0]);
        assert!(seen[0].contains("authorization: Bearer tok\r\n"), "{}", seen[0]);
        assert!(seen[0].ends_with(r#"{"prompt":"noop","runner":"bench","priority":"high","metadata":{"i":7}}"#));
        assert!(seen[1].contains(r#""metadata":{"i":8}"#), "{}", seen[1]);
    }

    /// A kept connection the server closed while it sat idle is replaced,
    /// and the submission goes through once, on the new one.
    #[tokio::test]
    async fn a_kept_connection_closed_while_idle_is_replaced() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            let answer = b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}";
            let (mut first, _) = listener.accept().await.unwrap();
            let n = first.read(&mut buf).await.unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).contains(r#""metadata":{"i":1}"#));
            first.write_all(answer).await.unwrap();
            drop(first);
            closed_tx.send(()).unwrap();
            let (mut second, _) = listener.accept().await.unwrap();
            let n = second.read(&mut buf).await.unwrap();
            second.write_all(answer).await.unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let submitter = Submitter::new(addr, "tok");
        submitter.submit(1, "normal").await.unwrap();
        closed_rx.await.unwrap();
        submitter.submit(2, "normal").await.unwrap();
        let second = server.await.unwrap();
        assert!(second.contains(r#""metadata":{"i":2}"#), "{second}");
    }
}
