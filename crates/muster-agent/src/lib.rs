//! The Muster agent worker.
//!
//! It connects to a hub over a WebSocket, announces what it can run, and
//! runs what it is assigned, each run in a process group of its own. Runs
//! outlive the connection: when the socket drops, the agent keeps its runs
//! going, buffers their output, reconnects with backoff and jitter, and
//! re-attaches to them. A run's `finished` report is repeated after every
//! reconnect until the hub acknowledges that it is durable.

pub mod config;
pub mod doctor;
pub mod process;
pub mod redact;
pub mod run;
pub mod stream;
pub mod workspace;

pub use config::{AgentConfig, AgentFile, Format, Liveness, PromptMode, RunnerProfile};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use muster_proto::ws::{AgentMsg, HubMsg, PROTOCOL_VERSION, RunRef};
use muster_proto::{from_json, to_json};
use run::{Finished, RunEvent, RunSpec, Stop};
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig, frame::coding::CloseCode};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Longest a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Output kept while disconnected, across all runs; older output beyond it is dropped.
const MAX_BUFFERED_BYTES: usize = 16 << 20;

struct Running {
    epoch: u64,
    stop: watch::Sender<Option<Stop>>,
    /// The hub dropped this run: it is being killed and no longer holds a slot
    /// in the hub's eyes, so it must not hold one here either.
    dropped: bool,
    /// The run waits for a person's answer (the hub says so).
    /// Questions it asked and still waits for, as the hub last said.
    asking: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

struct Agent {
    config: AgentConfig,
    runs: HashMap<String, Running>,
    /// `finished` reports sent but not yet acknowledged.
    unacked: Vec<Finished>,
    /// Output produced while disconnected.
    buffered: VecDeque<AgentMsg>,
    buffered_bytes: usize,
    dropped_bytes: u64,
    events_tx: mpsc::UnboundedSender<RunEvent>,
    events: mpsc::UnboundedReceiver<RunEvent>,
    draining: bool,
    drain_deadline: Option<Instant>,
    name: Option<String>,
    /// The latest doctor report and when it was made.
    doctor: Option<(Instant, muster_proto::ws::DoctorReport)>,
    places: std::sync::Arc<workspace::Places>,
    /// Which of the hubs it connects to next (see `hub_urls`).
    turn: usize,
}

/// A doctor report is reused across reconnects this close together.
const DOCTOR_FRESH: Duration = Duration::from_secs(300);

enum SessionEnd {
    Lost(String),
    /// The hub will not take this agent as it is (e.g. a protocol mismatch):
    /// reconnecting would only be refused again.
    Refused(String),
    Finished,
}

/// Runs the agent until `shutdown` resolves and its runs are done.
pub async fn run(config: AgentConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    config.validate()?;
    let (shutdown_tx, mut shutdown_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = shutdown_tx.send(true);
    });
    let (events_tx, events) = mpsc::unbounded_channel();
    let places = std::sync::Arc::new(config.places());
    let mut agent = Agent {
        places,
        config,
        runs: HashMap::new(),
        unacked: Vec::new(),
        buffered: VecDeque::new(),
        buffered_bytes: 0,
        dropped_bytes: 0,
        events_tx,
        events,
        draining: false,
        drain_deadline: None,
        name: None,
        doctor: None,
        turn: 0,
    };
    let mut failures: u32 = 0;
    loop {
        // Examined before connecting, so the hub's hello deadline never waits
        // on a slow `--version`; a runner fixed or broken since shows up.
        if agent.doctor.as_ref().is_none_or(|(at, _)| at.elapsed() > DOCTOR_FRESH) {
            let report = doctor::examine(&agent.config).await;
            for r in report.runners.iter().filter(|r| !r.ok) {
                tracing::warn!(runner = %r.name, problems = ?r.problems, "runner unavailable; the hub will not dispatch to it");
            }
            agent.doctor = Some((Instant::now(), report));
        }
        match agent.connect().await {
            Ok(socket) => {
                failures = 0;
                match agent.session(socket, &mut shutdown_rx).await {
                    SessionEnd::Finished => return Ok(()),
                    SessionEnd::Refused(reason) => return Err(anyhow::Error::new(Refusal(reason))),
                    SessionEnd::Lost(reason) => {
                        tracing::warn!(reason = %reason, hub = %agent.hub(), "lost the hub; reconnecting");
                        // Hubs on one database are equals: the next one may be up.
                        agent.turn += 1;
                    }
                }
            }
            Err(e) if is_refusal(&e) => return Err(e),
            Err(e) => {
                if failures.is_multiple_of(10) {
                    tracing::warn!(error = %format!("{e:#}"), "cannot reach the hub; retrying");
                }
                agent.turn += 1;
            }
        }
        failures = failures.saturating_add(1);
        let delay = agent.reconnect_delay(failures);
        if agent.offline(delay, &mut shutdown_rx).await {
            return Ok(());
        }
    }
}

/// The hub answered and said no: retrying will not help.
pub fn is_refusal(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Refusal>().is_some()
}

#[derive(Debug)]
struct Refusal(String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

fn random_unit() -> f64 {
    let mut buf = [0u8; 8];
    if getrandom::fill(&mut buf).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(buf) >> 11) as f64 / (1u64 << 53) as f64
}

/// What `wss://` trusts: the system's roots and `ca` (PEM), if given.
pub fn tls_config(ca: Option<&std::path::Path>) -> anyhow::Result<std::sync::Arc<rustls::ClientConfig>> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(ca) = ca {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca)
            .with_context(|| format!("cannot read the CA file {}", ca.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("{} holds no valid PEM certificate", ca.display()))?;
        if certs.is_empty() {
            bail!("{} holds no PEM certificate", ca.display());
        }
        for cert in certs {
            roots.add(cert).with_context(|| format!("{} holds a certificate rustls refuses", ca.display()))?;
        }
    }
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

/// The hubs an agent may connect to: `--hub` takes one URL or several,
/// separated by commas (hubs on one database, as equals). It tries them in
/// turn, moving on when one cannot be reached or drops it.
pub fn hub_urls(list: &str) -> Vec<&str> {
    list.split(',').map(str::trim).filter(|u| !u.is_empty()).collect()
}

/// Checks every URL of a `--hub` list (see [`hub_urls`]).
pub fn check_hub_urls(list: &str) -> anyhow::Result<()> {
    let urls = hub_urls(list);
    if urls.is_empty() {
        bail!("no hub URL given");
    }
    for url in urls {
        connect_url(url)?;
    }
    Ok(())
}

/// The WebSocket address for a hub's base URL.
pub fn connect_url(hub: &str) -> anyhow::Result<String> {
    let hub = hub.trim_end_matches('/');
    let rest = if let Some(r) = hub.strip_prefix("http://") {
        format!("ws://{r}")
    } else if let Some(r) = hub.strip_prefix("https://") {
        format!("wss://{r}")
    } else if hub.starts_with("ws://") || hub.starts_with("wss://") {
        hub.to_owned()
    } else {
        bail!("hub URL {hub:?} must start with http:// or https://");
    };
    Ok(format!("{rest}{}/agent/connect", muster_proto::API_PREFIX))
}

impl Agent {
    /// The hub it is connected to, or connects to next.
    fn hub(&self) -> String {
        let urls = hub_urls(&self.config.hub);
        urls.get(self.turn % urls.len().max(1)).map_or_else(|| self.config.hub.clone(), |u| (*u).to_owned())
    }

    /// The hubs a run's `muster ctl` may reach (`MUSTER_URL`): the one this
    /// agent is connected to first, then the others it was given, so a run
    /// outlives its hub as the agent does.
    fn hubs_for_runs(&self) -> String {
        let urls = hub_urls(&self.config.hub);
        let n = urls.len().max(1);
        (0..urls.len()).map(|k| urls[(self.turn + k) % n]).collect::<Vec<_>>().join(",")
    }

    fn reconnect_delay(&self, failures: u32) -> Duration {
        let ceiling = self.config.reconnect_min.saturating_mul(1 << failures.min(16)).min(self.config.reconnect_max);
        // Equal jitter: never less than half, so a fleet does not reconnect in lockstep.
        ceiling / 2 + (ceiling / 2).mul_f64(random_unit())
    }

    async fn connect(&self) -> anyhow::Result<Socket> {
        let url = connect_url(&self.hub())?;
        let mut request = url.as_str().into_client_request().with_context(|| format!("bad hub URL {url:?}"))?;
        let auth = HeaderValue::from_str(&format!("Bearer {}", self.config.token))
            .context("the token is not valid header text")?;
        request.headers_mut().insert("authorization", auth);
        let mut ws_config = WebSocketConfig::default();
        ws_config.max_message_size = Some(muster_proto::ws::MAX_FRAME_BYTES);
        ws_config.max_frame_size = Some(muster_proto::ws::MAX_FRAME_BYTES);
        let connector = match url.starts_with("wss://") {
            true => Some(tokio_tungstenite::Connector::Rustls(tls_config(self.config.ca.as_deref())?)),
            false => None,
        };
        let connecting = tokio_tungstenite::connect_async_tls_with_config(request, Some(ws_config), true, connector);
        let Ok(connected) = tokio::time::timeout(CONNECT_TIMEOUT, connecting).await else {
            bail!("cannot connect to {url}: no answer within {CONNECT_TIMEOUT:?}");
        };
        match connected {
            Ok((socket, _)) => Ok(socket),
            Err(WsError::Http(response)) => {
                let status = response.status();
                let body =
                    response.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
                let detail =
                    serde_json::from_str::<muster_proto::api::Problem>(&body).map(|p| p.detail).unwrap_or(body);
                let message = format!("the hub refused the connection ({status}): {detail}");
                if status == 401 || status == 403 { Err(anyhow::Error::new(Refusal(message))) } else { bail!(message) }
            }
            Err(e) => Err(anyhow::Error::new(e).context(format!("cannot connect to {url}"))),
        }
    }

    /// Runs this agent holds: those going on, and those whose outcome the hub
    /// has not acknowledged yet (so their leases stay alive, and a lost accept
    /// is recovered, until the report lands).
    fn run_refs(&self) -> Vec<RunRef> {
        let live = self.runs.iter().map(|(task, r)| RunRef { task: task.clone(), epoch: r.epoch });
        let reported = self.unacked.iter().map(|f| RunRef { task: f.task.clone(), epoch: f.epoch });
        live.chain(reported).collect()
    }

    fn hello(&self, doctor: Option<muster_proto::ws::DoctorReport>) -> AgentMsg {
        AgentMsg::Hello {
            protocol: PROTOCOL_VERSION,
            version: env!("CARGO_PKG_VERSION").to_owned(),
            capabilities: self.config.capabilities.clone(),
            runners: self.config.runners.keys().cloned().collect(),
            slots: self.config.slots,
            runs: self.run_refs(),
            draining: self.draining,
            doctor,
            channels: self.config.channels.clone(),
        }
    }

    fn begin_drain(&mut self) {
        if !self.draining {
            tracing::info!(runs = self.runs.len(), "draining: finishing current runs, taking no new ones");
            self.draining = true;
            self.drain_deadline = Some(Instant::now() + self.config.drain_timeout);
        }
    }

    fn drain_expired(&mut self) {
        if self.drain_deadline.is_some_and(|d| Instant::now() >= d) {
            for (task, run) in &self.runs {
                tracing::warn!(task_id = %task, "drain timeout: stopping the run");
                let _ = run.stop.send(Some(Stop::Shutdown));
            }
            self.drain_deadline = None;
        }
    }

    fn done(&self) -> bool {
        self.draining && self.runs.is_empty() && self.unacked.is_empty()
    }

    /// Records a run's event; returns a message to send if connected.
    fn on_run_event(&mut self, ev: RunEvent) -> Option<AgentMsg> {
        match ev {
            RunEvent::Output { task, epoch, stream, data } => {
                Some(AgentMsg::Output { task, epoch, stream: stream.to_owned(), data })
            }
            RunEvent::Steps { task, epoch, steps } => Some(AgentMsg::Steps { task, epoch, steps }),
            RunEvent::Live { task, epoch, status, detail } => {
                Some(AgentMsg::Live { task, epoch, status: status.as_str().to_owned(), detail })
            }
            RunEvent::Files { task, epoch, files } => Some(AgentMsg::Files { task, epoch, files }),
            RunEvent::Finished(f) => {
                if self.runs.get(&f.task).is_some_and(|r| r.epoch == f.epoch) {
                    self.runs.remove(&f.task);
                }
                tracing::info!(task_id = %f.task, outcome = %f.outcome, exit_code = ?f.exit_code, "run finished");
                let msg = finished_msg(&f);
                self.unacked.push(*f);
                Some(msg)
            }
            RunEvent::Dropped { task, epoch } => {
                if self.runs.get(&task).is_some_and(|r| r.epoch == epoch) {
                    self.runs.remove(&task);
                }
                None
            }
        }
    }

    /// Keeps a run's output or steps for sending after a reconnect; the
    /// oldest go first when the buffer is full.
    fn buffer(&mut self, msg: AgentMsg) {
        self.buffered_bytes += buffered_size(&msg);
        self.buffered.push_back(msg);
        while self.buffered_bytes > MAX_BUFFERED_BYTES {
            let Some(old) = self.buffered.pop_front() else { break };
            let size = buffered_size(&old);
            self.buffered_bytes -= size;
            self.dropped_bytes += size as u64;
        }
    }

    /// Waits out a reconnect delay while runs go on. Returns true when the
    /// agent should exit.
    async fn offline(&mut self, delay: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
        let until = Instant::now() + delay;
        loop {
            if self.draining && self.runs.is_empty() {
                if !self.unacked.is_empty() {
                    tracing::warn!(
                        reports = self.unacked.len(),
                        "exiting with finished reports the hub has not acknowledged; their leases will expire and the tasks be retried"
                    );
                }
                return true;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return false,
                Some(ev) = self.events.recv() => {
                    if let Some(msg @ (AgentMsg::Output { .. } | AgentMsg::Steps { .. } | AgentMsg::Live { .. })) =
                        self.on_run_event(ev)
                    {
                        self.buffer(msg);
                    }
                }
                changed = shutdown.changed(), if !self.draining => {
                    let _ = changed;
                    self.begin_drain();
                }
                _ = sleep_until_opt(self.drain_deadline) => self.drain_expired(),
            }
        }
    }

    async fn session(&mut self, socket: Socket, shutdown: &mut watch::Receiver<bool>) -> SessionEnd {
        let (mut sink, mut stream) = socket.split();
        let send = |msg: &AgentMsg| Message::Text(to_json(msg).into());
        let report = self.doctor.as_ref().map(|(_, r)| r.clone());
        if let Err(e) = sink.send(send(&self.hello(report))).await {
            return SessionEnd::Lost(format!("cannot send hello: {e}"));
        }
        let welcome = tokio::time::timeout(Duration::from_secs(10), stream.next()).await;
        let heartbeat = match welcome {
            Ok(Some(Ok(Message::Text(t)))) => match from_json::<HubMsg>(t.as_bytes()) {
                Ok(HubMsg::Welcome { agent, heartbeat_ms, max_output_bytes, .. }) => {
                    // The hub keeps this much per attempt; forwarding more would be dropped unseen.
                    self.config.max_output_bytes = max_output_bytes;
                    if self.name.as_deref() != Some(&agent) {
                        tracing::info!(agent = %agent, hub = %self.hub(), "connected");
                    }
                    self.name = Some(agent);
                    Duration::from_millis(heartbeat_ms.max(10))
                }
                Ok(HubMsg::Error { message }) => {
                    return SessionEnd::Refused(format!("the hub refused the hello: {message}"));
                }
                other => return SessionEnd::Lost(format!("expected welcome, got {other:?}")),
            },
            Ok(Some(Ok(Message::Close(frame)))) => return SessionEnd::Lost(format!("closed by the hub: {frame:?}")),
            other => return SessionEnd::Lost(format!("no welcome from the hub: {other:?}")),
        };
        // What happened while disconnected, in order: output, then outcomes.
        if self.dropped_bytes > 0 {
            tracing::warn!(bytes = self.dropped_bytes, "output dropped while disconnected (buffer full)");
            self.dropped_bytes = 0;
        }
        let backlog: Vec<AgentMsg> = self.buffered.drain(..).chain(self.unacked.iter().map(finished_msg)).collect();
        self.buffered_bytes = 0;
        for msg in backlog {
            if let Err(e) = sink.send(send(&msg)).await {
                return SessionEnd::Lost(format!("send failed: {e}"));
            }
        }
        let mut ticker = tokio::time::interval(heartbeat);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            if self.done() {
                let close =
                    Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "agent stopped".into() }));
                let _ = sink.send(close).await;
                let _ = sink.close().await;
                tracing::info!("drained; agent stopped");
                return SessionEnd::Finished;
            }
            let outgoing: Option<AgentMsg> = tokio::select! {
                frame = stream.next() => match frame {
                    None => return SessionEnd::Lost("socket closed".into()),
                    Some(Err(e)) => return SessionEnd::Lost(format!("socket error: {e}")),
                    Some(Ok(Message::Close(frame))) => {
                        let reason = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                        if reason == "token revoked" {
                            tracing::error!("the hub revoked this agent's token");
                        }
                        // This process's own reconnects never see this: it has
                        // left the old socket before it opens a new one. So
                        // another process is using this agent's token, and
                        // reconnecting would only take the place back, forever.
                        if reason == muster_proto::ws::CLOSE_REPLACED {
                            let name = self.name.clone().unwrap_or_default();
                            return SessionEnd::Refused(format!(
                                "another process connected to the hub as agent {name} with this agent's token; \
                                 two processes must not share one agent (give each its own: muster agent add), \
                                 so this one stops"
                            ));
                        }
                        return SessionEnd::Lost(format!("closed by the hub: {reason}"));
                    }
                    Some(Ok(Message::Text(t))) => match from_json::<HubMsg>(t.as_bytes()) {
                        Ok(HubMsg::Settings { heartbeat_ms, .. }) => {
                            let every = Duration::from_millis(heartbeat_ms.max(10));
                            if every != ticker.period() {
                                tracing::info!(heartbeat_ms, "the hub changed the heartbeat interval");
                                ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                            }
                            // Answered at once: the hub times this agent's silence afresh.
                            Some(AgentMsg::Heartbeat { runs: self.run_refs(), draining: self.draining })
                        }
                        Ok(msg) => self.on_hub_msg(msg),
                        Err(e) => {
                            tracing::warn!(error = %e, "unreadable message from the hub");
                            None
                        }
                    },
                    Some(Ok(_)) => None,
                },
                Some(ev) = self.events.recv() => self.on_run_event(ev),
                _ = ticker.tick() => {
                    // Reports the hub has not acknowledged go again: a write that
                    // failed on the hub is retried without waiting for a reconnect.
                    for f in &self.unacked {
                        if let Err(e) = sink.send(send(&finished_msg(f))).await {
                            return SessionEnd::Lost(format!("send failed: {e}"));
                        }
                    }
                    Some(AgentMsg::Heartbeat { runs: self.run_refs(), draining: self.draining })
                }
                changed = shutdown.changed(), if !self.draining => {
                    let _ = changed;
                    self.begin_drain();
                    Some(AgentMsg::Heartbeat { runs: self.run_refs(), draining: true })
                }
                _ = sleep_until_opt(self.drain_deadline) => {
                    self.drain_expired();
                    None
                }
            };
            if let Some(msg) = outgoing
                && let Err(e) = sink.send(send(&msg)).await
            {
                if let msg @ (AgentMsg::Output { .. } | AgentMsg::Steps { .. } | AgentMsg::Live { .. }) = msg {
                    self.buffer(msg);
                }
                return SessionEnd::Lost(format!("send failed: {e}"));
            }
        }
    }

    fn on_hub_msg(&mut self, msg: HubMsg) -> Option<AgentMsg> {
        match msg {
            HubMsg::Assign {
                task,
                epoch,
                runner,
                prompt,
                timeout_ms,
                metadata: _,
                workspace,
                budget,
                task_token,
                checks,
            } => {
                let refuse = |reason: String| Some(AgentMsg::Reject { task: task.clone(), epoch, reason });
                if self.draining {
                    return refuse("the agent is draining".into());
                }
                let busy = self.runs.iter().filter(|(t, r)| !r.dropped && **t != task).count();
                if busy >= self.config.slots as usize {
                    return refuse("no free slot".into());
                }
                let Some(profile) = self.config.runners.get(&runner).cloned() else {
                    return refuse(format!("runner {runner:?} is not offered by this agent"));
                };
                let liveness = self.config.liveness_of(&profile).unwrap_or_default();
                if let Some(old) = self.runs.get(&task) {
                    // A newer lease on a task we still run: the old run is superseded.
                    let _ = old.stop.send(Some(Stop::Drop));
                }
                let (stop, stop_rx) = watch::channel(None);
                let asking = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
                self.runs.insert(task.clone(), Running { epoch, stop, dropped: false, asking: asking.clone() });
                let spec = RunSpec {
                    task: task.clone(),
                    epoch,
                    prompt,
                    timeout: Duration::from_millis(timeout_ms),
                    profile,
                    workdir: self.config.workdir.clone(),
                    kill_grace: self.config.kill_grace,
                    max_output_bytes: self.config.max_output_bytes,
                    workspace,
                    places: self.places.clone(),
                    liveness,
                    budget,
                    task_token,
                    hub_url: self.hubs_for_runs(),
                    hub_ca: self.config.ca.clone(),
                    asking,
                    checks,
                };
                let events = self.events_tx.clone();
                tracing::info!(task_id = %task, epoch, runner = %runner, "run starting");
                tokio::spawn(async move {
                    let (task, epoch) = (spec.task.clone(), spec.epoch);
                    let ev = match run::execute(spec, events.clone(), stop_rx).await {
                        Some(finished) => RunEvent::Finished(Box::new(finished)),
                        None => RunEvent::Dropped { task, epoch },
                    };
                    let _ = events.send(ev);
                });
                Some(AgentMsg::Accept { task, epoch })
            }
            HubMsg::Cancel { task, epoch } => {
                if let Some(run) = self.runs.get(&task).filter(|r| r.epoch == epoch) {
                    tracing::info!(task_id = %task, "cancelling the run");
                    let _ = run.stop.send(Some(Stop::Cancel));
                }
                None
            }
            HubMsg::Message(m) => {
                // An agent's mailbox is for the people who run it: the log is where they look.
                tracing::info!(message = m.id, to = %m.to, from = %m.sender, thread = m.thread, body = %m.body, "message");
                m.to.starts_with("agent:").then(|| AgentMsg::MessageAck { ids: vec![m.id] })
            }
            HubMsg::Asking { task, epoch, open } => {
                if let Some(run) = self.runs.get(&task).filter(|r| r.epoch == epoch) {
                    run.asking.store(open, std::sync::atomic::Ordering::SeqCst);
                }
                None
            }
            HubMsg::Drop { task, epoch, reason } => {
                if let Some(run) = self.runs.get_mut(&task).filter(|r| r.epoch == epoch) {
                    tracing::warn!(task_id = %task, epoch, reason = %reason, "the hub dropped the run; stopping it");
                    let _ = run.stop.send(Some(Stop::Drop));
                    run.dropped = true;
                }
                self.unacked.retain(|f| !(f.task == task && f.epoch == epoch));
                None
            }
            HubMsg::Ack { task, epoch } => {
                self.unacked.retain(|f| !(f.task == task && f.epoch == epoch));
                None
            }
            HubMsg::Drain { reason } => {
                tracing::info!(reason = %reason, "the hub asked this agent to drain");
                self.begin_drain();
                Some(AgentMsg::Heartbeat { runs: self.run_refs(), draining: true })
            }
            HubMsg::Welcome { .. } | HubMsg::Settings { .. } => None,
            HubMsg::Error { message } => {
                tracing::warn!(message = %message, "the hub reported an error");
                None
            }
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn finished_msg(f: &Finished) -> AgentMsg {
    AgentMsg::Finished {
        task: f.task.clone(),
        epoch: f.epoch,
        outcome: f.outcome.as_str().to_owned(),
        exit_code: f.exit_code,
        reason: f.reason.clone(),
        output_truncated: f.output_truncated,
        output_chunks: f.output_chunks,
        report: f.report.clone(),
        workspace: f.workspace.clone().map(Box::new),
        limit: f.limit.clone(),
        summary: f.summary.clone(),
        checks: f.checks.clone(),
    }
}

/// Bytes a buffered message holds, roughly.
fn buffered_size(msg: &AgentMsg) -> usize {
    match msg {
        AgentMsg::Output { data, .. } => data.len(),
        AgentMsg::Steps { steps, .. } => {
            steps.iter().map(|s| s.summary.len() + s.name.as_ref().map_or(0, String::len) + 64).sum()
        }
        AgentMsg::Live { .. } => 64,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_urls_become_socket_urls() {
        assert_eq!(connect_url("http://127.0.0.1:4000/").unwrap(), "ws://127.0.0.1:4000/api/v1/agent/connect");
        assert_eq!(connect_url("https://hub.example").unwrap(), "wss://hub.example/api/v1/agent/connect");
        assert!(connect_url("127.0.0.1:4000").is_err());
    }
}
