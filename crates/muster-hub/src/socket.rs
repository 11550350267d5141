//! One connected agent: the WebSocket session from `hello` to close.
//!
//! Reports about one task are handled in the order the agent sent them,
//! each after the store has committed the one before, so output always
//! lands before the run's `finished` report. Reports about different tasks
//! are handled side by side (see `Lanes`): an agent with many slots does
//! not wait a commit per report, and its reports share the store's batches.
//! Any other message (a heartbeat, say) waits until everything before it
//! is applied, and is applied before anything after it. The agent's
//! identity comes from its token, never from what it says, and every report
//! about a task is checked against the task's current lease epoch.

use crate::error::ApiError;
use crate::extract::AgentCaller;
use crate::{Hub, Outbound, Session};
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade, close_code};
use axum::response::Response;
use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use muster_core::backoff::Retry;
use muster_core::{AgentName, Capability, Epoch, Outcome, RunnerName, TaskId};
use muster_proto::ws::{AgentMsg, HubMsg, MAX_FRAME_BYTES, PROTOCOL_VERSION, RunRef, parse_outcome};
use muster_proto::ws::{MAX_STEPS_PER_MESSAGE, StepMsg};
use muster_proto::{FieldError, from_json, to_json};
use muster_store::{
    AgentFlags, Announce, FinishResult, NewEvent, NewStep, OutputChunk, RunDetails, RunReport, StepKind, StoreError,
    Stream, Tokens, WorkspaceRecord,
};
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::Ordering;
use std::time::Duration;

const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes read from an agent's socket at a time. Each idle agent keeps this
/// much; a frame larger than it (a `finished` report with a diff) gets a
/// buffer of its own size while it is read.
const SOCKET_BUFFER: usize = 1024;
/// Bytes of frames to the agent gathered before they are written. The
/// session writes whatever is queued (an `assign` per task a claim pass
/// handed over, an `ack` per report a batch made durable) and then flushes,
/// so a burst is one write, not one per frame; the buffer only grows as far
/// as the bursts an agent is sent.
const WRITE_GATHER: usize = 16 * 1024;
/// How long a task an agent turned down waits before it is handed out again.
const RELEASE_DELAY: Duration = Duration::from_secs(1);
/// Longest a close frame may take to send before the socket is dropped anyway.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Reports of one agent received but not yet applied; past this the session
/// reads no more frames until some are, so a flood waits in the socket.
const MAX_PENDING: usize = 256;

/// The agent's WebSocket.
#[utoipa::path(
    get,
    operation_id = "connect_agent",
    path = "/agent/connect",
    tag = "agents",
    security(("agent_token" = [])),
    responses(
        (status = 101, description = "Switching to the agent WebSocket protocol"),
    ),
)]
pub async fn connect(
    State(hub): State<Hub>,
    AgentCaller(name): AgentCaller,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    if hub.shared.draining.load(Ordering::SeqCst) {
        return Err(ApiError::Unavailable("the hub is shutting down".into()));
    }
    let ws = ws.map_err(crate::extract::not_a_socket)?;
    // Small buffers, grown only by the frames that need it: an idle agent's
    // socket should cost the hub a few kilobytes, not the default 256 KiB.
    Ok(ws
        .max_message_size(MAX_FRAME_BYTES)
        .read_buffer_size(SOCKET_BUFFER)
        .write_buffer_size(WRITE_GATHER)
        .on_upgrade(move |socket| session(hub, name, socket)))
}

/// Counts open sockets so shutdown can wait for them to close.
struct OpenSocket(Hub);

impl OpenSocket {
    fn new(hub: &Hub) -> OpenSocket {
        hub.shared.sockets_open.fetch_add(1, Ordering::SeqCst);
        OpenSocket(hub.clone())
    }
}

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.0.shared.sockets_open.fetch_sub(1, Ordering::SeqCst);
        self.0.shared.sockets_closed.notify_waiters();
    }
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame { code, reason: Utf8Bytes::from(reason.to_owned()) }))
}

fn text(msg: &HubMsg) -> Message {
    Message::Text(Utf8Bytes::from(to_json(msg)))
}

fn parse_runs(runs: &[RunRef]) -> Result<Vec<(TaskId, Epoch)>, FieldError> {
    runs.iter().map(|r| Ok((TaskId::parse(&r.task)?, Epoch(r.epoch)))).collect()
}

/// What a valid `hello` says: the announcement (with only the runners its
/// doctor passed), every runner it has, the runs to re-attach, whether the
/// agent is draining, and the channels it follows.
type Hello = (Announce, Vec<RunnerName>, Vec<(TaskId, Epoch)>, bool, Vec<String>);

fn parse_hello(msg: AgentMsg) -> Result<Hello, FieldError> {
    let AgentMsg::Hello { protocol, version, capabilities, runners, slots, runs, draining, doctor, channels } = msg
    else {
        return Err(FieldError { field: "type".into(), reason: "the first message must be `hello`".into() });
    };
    if protocol != PROTOCOL_VERSION {
        return Err(FieldError {
            field: "protocol".into(),
            reason: format!("this hub speaks protocol {PROTOCOL_VERSION}, the agent {protocol}"),
        });
    }
    if slots == 0 || slots > 1024 {
        return Err(FieldError { field: "slots".into(), reason: "must be between 1 and 1024".into() });
    }
    let all: Vec<RunnerName> = runners.iter().map(|r| RunnerName::parse(r)).collect::<Result<_, _>>()?;
    // A runner its doctor failed is known (tasks for it are accepted) but not dispatched to.
    let failed: Vec<&str> = doctor
        .as_ref()
        .map(|d| d.runners.iter().filter(|r| !r.ok).map(|r| r.name.as_str()).collect())
        .unwrap_or_default();
    let announce = Announce {
        capabilities: capabilities.iter().map(|c| Capability::parse(c)).collect::<Result<_, _>>()?,
        runners: all.iter().filter(|r| !failed.contains(&r.as_str())).cloned().collect(),
        slots,
        version,
        doctor: doctor.as_ref().map(to_json),
        holds: None,
    };
    for c in &channels {
        muster_store::check_channel_name(c)?;
    }
    let runs = parse_runs(&runs)?;
    // What it holds, so that what it was handed and never got goes back to the queue now.
    let announce = Announce { holds: Some(runs.clone()), ..announce };
    Ok((announce, all, runs, draining, channels))
}

async fn session(hub: Hub, name: AgentName, socket: WebSocket) {
    let _open = OpenSocket::new(&hub);
    // Subscribed before the handshake, and read with `wait_for`, so a shutdown
    // that starts while this session is being set up is still seen.
    let mut stopping = hub.shared.stopping.subscribe();
    let (mut sink, mut stream) = socket.split();

    let first = tokio::time::timeout(HELLO_TIMEOUT, stream.next()).await;
    let hello = match first {
        Ok(Some(Ok(Message::Text(t)))) => from_json::<AgentMsg>(t.as_bytes()).and_then(parse_hello),
        Ok(_) => Err(FieldError { field: String::new(), reason: "expected a `hello` text frame".into() }),
        Err(_) => Err(FieldError { field: String::new(), reason: "no `hello` within 10 s".into() }),
    };
    let (announce, all_runners, runs, mut draining, channels) = match hello {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(agent = %name, error = %e, "agent handshake refused");
            let _ = sink.send(text(&HubMsg::Error { message: e.to_string() })).await;
            let _ = sink.send(close(close_code::POLICY, "bad hello")).await;
            return;
        }
    };
    // Known before the agent shows as connected, so a task for its runner is
    // accepted as soon as anyone can see the agent online.
    hub.shared.known_runners.lock().expect("runners lock poisoned").extend(all_runners);
    let now = hub.now();
    let (record, session_id) = match hub.shared.store.agent_connected(&name, announce, now).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(agent = %name, error = %e, "cannot record the agent's connection");
            let _ = sink.send(close(close_code::ERROR, "hub store error")).await;
            return;
        }
    };
    let (tx, mut rx) = futures_channel::mpsc::unbounded();
    {
        let mut sessions = hub.shared.sessions.lock().expect("sessions lock poisoned");
        // Two connections for one agent race here: the later session number wins,
        // whichever finished its handshake first.
        match sessions.get(&name) {
            Some(newer) if newer.id > session_id => {
                let _ = tx.unbounded_send(Outbound::Close(muster_proto::ws::CLOSE_REPLACED.into()));
            }
            _ => {
                if let Some(old) =
                    sessions.insert(name.clone(), Session { id: session_id, tx, channels: channels.clone() })
                {
                    let _ = old.tx.unbounded_send(Outbound::Close(muster_proto::ws::CLOSE_REPLACED.into()));
                }
            }
        }
    }
    hub.publish_roster();
    tracing::info!(agent = %name, session = session_id, runs = runs.len(), "agent connected");
    let mut runtime = hub.shared.runtime.subscribe();
    let live = runtime.borrow_and_update().clone();
    let welcome = HubMsg::Welcome {
        agent: name.to_string(),
        protocol: PROTOCOL_VERSION,
        heartbeat_ms: live.heartbeat_interval.as_millis() as u64,
        lease_ttl_ms: live.lease_ttl.as_millis() as u64,
        max_output_bytes: hub.config().max_output_bytes_per_attempt,
    };
    let conn = Conn { hub: hub.clone(), name: name.clone(), dropped: Mutex::new(HashSet::new()) };
    let mut lanes = Lanes::default();
    let mut reason = String::from("socket closed");
    if sink.send(text(&welcome)).await.is_ok() {
        if draining != record.status.draining {
            Box::pin(conn.set_draining(draining)).await;
        }
        // Boxed, like every handling below: the session's future is as large
        // as the largest thing it awaits in place, and every idle agent keeps it.
        Box::pin(conn.reattach(&runs)).await;
        Box::pin(hub.deliver_mail(&name)).await;
        hub.wake_dispatcher();
        let mut offline_after = live.offline_after();
        // Only what the agent sends proves it alive; the hub's own sends do not.
        let mut last_heard = tokio::time::Instant::now();
        reason = loop {
            // Biased, the timer last: after a stall (a long store write), frames
            // that arrived in the meantime count before the silence does.
            tokio::select! {
                biased;
                frame = stream.next(), if lanes.pending < MAX_PENDING => {
                    last_heard = tokio::time::Instant::now();
                    match frame {
                        None => break "socket closed".into(),
                        Some(Err(e)) => break format!("socket error: {e}"),
                        Some(Ok(Message::Text(t))) => match from_json::<AgentMsg>(t.as_bytes()) {
                            Ok(AgentMsg::Heartbeat { runs, draining: d }) => {
                                Box::pin(lanes.finish(&conn)).await;
                                if d != draining {
                                    draining = d;
                                    Box::pin(conn.set_draining(d)).await;
                                }
                                Box::pin(conn.heartbeat(&runs)).await;
                            }
                            Ok(msg) => match msg.task() {
                                Some(task) => {
                                    let task = task.to_owned();
                                    lanes.push(&conn, task, msg);
                                }
                                None => {
                                    Box::pin(lanes.finish(&conn)).await;
                                    Box::pin(conn.handle(msg)).await;
                                }
                            },
                            Err(e) => conn.reply(HubMsg::Error { message: format!("bad message: {e}") }),
                        },
                        Some(Ok(Message::Close(_))) => break "closed by the agent".into(),
                        Some(Ok(Message::Binary(_))) => {
                            conn.reply(HubMsg::Error { message: "binary frames are not part of the protocol".into() });
                        }
                        Some(Ok(_)) => {}
                    }
                }
                Some(task) = lanes.running.next(), if !lanes.running.is_empty() => lanes.done(&conn, task),
                // The hub told the agent its new heartbeat interval (see
                // `broadcast_timings`); the agent gets a whole new window to answer.
                Ok(()) = runtime.changed() => {
                    let now_after = runtime.borrow_and_update().offline_after();
                    if now_after != offline_after {
                        offline_after = now_after;
                        last_heard = tokio::time::Instant::now();
                    }
                }
                out = rx.next() => {
                    // Everything already queued goes out in one write.
                    let mut next = out;
                    let mut ending = None;
                    let sent = async {
                        while let Some(Outbound::Msg(m)) = next {
                            sink.feed(text(&m)).await?;
                            next = match rx.try_recv() {
                                Ok(more) => Some(more),
                                Err(e) if e.is_closed() => None,
                                Err(_) => return sink.flush().await,
                            };
                        }
                        ending = Some(next);
                        sink.flush().await
                    };
                    // An agent that stops reading must not wedge its session.
                    match tokio::time::timeout(offline_after, sent).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => break format!("send failed: {e}"),
                        Err(_) => break format!("the agent read nothing for {} ms", offline_after.as_millis()),
                    }
                    match ending {
                        None | Some(Some(Outbound::Msg(_))) => {}
                        Some(Some(Outbound::Close(why))) => {
                            let _ = tokio::time::timeout(SEND_TIMEOUT, sink.send(close(close_code::POLICY, &why))).await;
                            break why;
                        }
                        Some(None) => break "session replaced".into(),
                    }
                }
                // The guard `wait_for` returns is dropped inside the block: it must not be held across a send.
                _ = async { drop(stopping.wait_for(|stop| *stop).await) } => {
                    let _ = tokio::time::timeout(SEND_TIMEOUT, sink.send(close(close_code::AWAY, "hub shutting down"))).await;
                    break "hub shutting down".into();
                }
                _ = tokio::time::sleep_until(last_heard + offline_after) => {
                    let why = format!("missed heartbeats for {} ms", offline_after.as_millis());
                    let _ = tokio::time::timeout(SEND_TIMEOUT, sink.send(close(close_code::AWAY, &why))).await;
                    break why;
                }
            }
        };
        // What the agent sent before it went is still applied: a `finished`
        // report that arrived just before the socket closed is not lost.
        Box::pin(lanes.finish(&conn)).await;
    }
    let _ = sink.close().await;
    {
        let mut sessions = hub.shared.sessions.lock().expect("sessions lock poisoned");
        if sessions.get(&name).is_some_and(|s| s.id == session_id) {
            sessions.remove(&name);
        }
    }
    hub.publish_roster();
    tracing::info!(agent = %name, session = session_id, reason = %reason, "agent disconnected");
    if let Err(e) = hub.shared.store.agent_disconnected(&name, session_id, &reason, hub.now()).await {
        tracing::error!(agent = %name, error = %e, "cannot record the agent's disconnection");
    }
}

/// What one session needs to handle its agent's messages.
struct Conn {
    hub: Hub,
    name: AgentName,
    /// Runs already told to drop, so a chatty stale agent makes one event, not many.
    dropped: Mutex<HashSet<(TaskId, Epoch)>>,
}

/// Handling one report; yields the task it was about.
type Handling<'a> = Pin<Box<dyn Future<Output = String> + Send + 'a>>;

fn handling<'a>(conn: &'a Conn, task: String, msg: AgentMsg) -> Handling<'a> {
    Box::pin(async move {
        conn.handle(msg).await;
        task
    })
}

/// One agent's reports, a lane per task: each task's reports are handled
/// one after another in the order they came, while different tasks' go on
/// side by side. The store applies changes in the order they reach its
/// writer, so within a lane a report sees everything before it committed.
#[derive(Default)]
struct Lanes<'a> {
    /// The report being handled in each busy lane; each yields its task.
    running: FuturesUnordered<Handling<'a>>,
    /// Reports waiting behind the one being handled, by task.
    waiting: HashMap<String, VecDeque<AgentMsg>>,
    /// Reports received and not yet applied, over every lane.
    pending: usize,
}

impl<'a> Lanes<'a> {
    fn push(&mut self, conn: &'a Conn, task: String, msg: AgentMsg) {
        self.pending += 1;
        match self.waiting.get_mut(&task) {
            Some(queue) => queue.push_back(msg),
            None => {
                self.waiting.insert(task.clone(), VecDeque::new());
                self.running.push(handling(conn, task, msg));
            }
        }
    }

    /// `task`'s report was handled: start the next one in its lane.
    fn done(&mut self, conn: &'a Conn, task: String) {
        self.pending -= 1;
        let next = self.waiting.get_mut(&task).and_then(VecDeque::pop_front);
        match next {
            Some(msg) => self.running.push(handling(conn, task, msg)),
            None => {
                self.waiting.remove(&task);
            }
        }
    }

    /// Handles every report received so far.
    async fn finish(&mut self, conn: &'a Conn) {
        while let Some(task) = self.running.next().await {
            self.done(conn, task);
        }
    }
}

impl Conn {
    fn reply(&self, msg: HubMsg) {
        self.hub.send_to(&self.name, msg);
    }

    async fn set_draining(&self, draining: bool) {
        let flags = AgentFlags { paused: None, draining: Some(draining) };
        if let Err(e) = self.hub.shared.store.set_agent_flags(&self.name, flags, self.hub.now()).await {
            tracing::error!(agent = %self.name, error = %e, "cannot record draining");
        }
    }

    /// After a reconnect: keep the runs the hub still recognises and drop the rest.
    async fn reattach(&self, runs: &[(TaskId, Epoch)]) {
        if !runs.is_empty() {
            self.renew(runs).await;
        }
        // What it was told while away is lost: say again which runs wait for a person.
        for (id, epoch) in runs {
            if let Ok(Some(task)) = self.hub.shared.store.task(id).await
                && task.lease.as_ref().is_some_and(|l| l.epoch == *epoch)
            {
                self.hub.sync_asking(&task).await;
            }
        }
    }

    async fn heartbeat(&self, runs: &[RunRef]) {
        match parse_runs(runs) {
            Ok(runs) => self.renew(&runs).await,
            Err(e) => self.reply(HubMsg::Error { message: format!("bad heartbeat: {e}") }),
        }
    }

    async fn renew(&self, runs: &[(TaskId, Epoch)]) {
        let lease_ttl = self.hub.shared.runtime.borrow().lease_ttl;
        match self.hub.shared.store.heartbeat(&self.name, runs, self.hub.now(), lease_ttl).await {
            Ok(beat) => {
                for (id, epoch) in beat.stale {
                    self.reject(&id, epoch, "heartbeat", "the hub no longer holds this run under that epoch").await;
                }
                // Repeated at every heartbeat until the run stops, so a cancel
                // lost on the way (or sent while the agent was away) still lands.
                for (id, epoch) in beat.cancel {
                    self.reply(HubMsg::Cancel { task: id.to_string(), epoch: epoch.0 });
                }
            }
            Err(e) => tracing::error!(agent = %self.name, error = %e, "cannot record heartbeat"),
        }
    }

    /// A report about a run the hub does not recognise: log it as an event,
    /// never apply it, and tell the agent to let the run go.
    async fn reject(&self, id: &TaskId, epoch: Epoch, what: &str, why: &str) {
        let first = self.dropped.lock().expect("dropped runs lock poisoned").insert((id.clone(), epoch));
        if !first {
            self.hub.drop_run(&self.name, id, epoch, why);
            return;
        }
        tracing::warn!(agent = %self.name, task_id = %id, epoch = epoch.0, report = what, reason = why, "stale report rejected");
        self.hub.metrics().stale_reports.with(&[what]).inc();
        let event = NewEvent {
            kind: "task.stale_report",
            task: Some(id.clone()),
            agent: Some(self.name.clone()),
            epoch: Some(epoch),
            state: None,
            detail: Some(format!("{what} rejected: {why}")),
        };
        if let Err(e) = self.hub.shared.store.record_event(event, self.hub.now()).await {
            tracing::error!(error = %e, "cannot record a stale report");
        }
        self.hub.drop_run(&self.name, id, epoch, why);
    }

    async fn handle(&self, msg: AgentMsg) {
        let store = self.hub.shared.store.clone();
        let now = self.hub.now();
        let lease_ttl = self.hub.shared.runtime.borrow().lease_ttl;
        match msg {
            AgentMsg::Hello { .. } => self.reply(HubMsg::Error { message: "`hello` was already received".into() }),
            AgentMsg::Heartbeat { .. } => unreachable!("handled by the session loop"),
            AgentMsg::Accept { task, epoch } => {
                let Some(id) = self.task_id(&task) else { return };
                let epoch = Epoch(epoch);
                match store.start_task(&self.name, &id, epoch, now, lease_ttl).await {
                    Ok(task) => {
                        let waited = now.since(task.ready_at).as_secs_f64();
                        self.hub.metrics().dispatch_latency.observe(waited);
                        self.hub.shared.window.started(waited);
                    }
                    Err(e) => self.refused(&id, epoch, "accept", e).await,
                }
            }
            AgentMsg::Reject { task, epoch, reason } => {
                let Some(id) = self.task_id(&task) else { return };
                let epoch = Epoch(epoch);
                match store.release_task(&self.name, &id, epoch, &reason, now, RELEASE_DELAY).await {
                    Ok(_) => self.hub.wake_dispatcher(),
                    Err(e) => self.refused(&id, epoch, "reject", e).await,
                }
            }
            AgentMsg::Output { task, epoch, stream, data } => {
                let Some(id) = self.task_id(&task) else { return };
                let epoch = Epoch(epoch);
                let Some(stream) = Stream::parse(&stream) else {
                    self.reply(HubMsg::Error { message: format!("unknown stream {stream:?}") });
                    return;
                };
                // The agent redacted it; the hub also takes out any Muster token a run printed.
                let data = match crate::auth::redact_tokens(&data) {
                    std::borrow::Cow::Borrowed(_) => data,
                    std::borrow::Cow::Owned(clean) => clean,
                };
                let chunk = OutputChunk { stream, data: data.into_bytes() };
                match store.append_output(&self.name, &id, epoch, vec![chunk], now).await {
                    Ok(_) => {
                        self.hub.shared.output.send_modify(|n| *n += 1);
                    }
                    Err(e) => self.refused(&id, epoch, "output", e).await,
                }
            }
            AgentMsg::MessageAck { ids } => {
                if let Err(e) = store.mark_delivered(&self.name, ids, now).await {
                    tracing::error!(agent = %self.name, error = %e, "cannot mark messages delivered");
                }
            }
            AgentMsg::Files { task, epoch, files } => {
                let Some(id) = self.task_id(&task) else { return };
                let epoch = Epoch(epoch);
                match store.report_files(&self.name, &id, epoch, files, now).await {
                    Ok(found) => {
                        for c in found {
                            tracing::warn!(
                                conflict = c.conflict.id, repo = %c.conflict.repo, winner = %c.conflict.winner,
                                loser = %c.conflict.loser, files = c.conflict.files.len(),
                                "two active tasks change the same files; the lower-priority one is paused"
                            );
                            // Stopped, its run ends parked, waiting for the answer without a slot.
                            if let Some((agent, epoch)) = c.stop {
                                let msg = HubMsg::Cancel { task: c.conflict.loser.to_string(), epoch: epoch.0 };
                                self.hub.send_to(&agent, msg);
                            }
                        }
                    }
                    Err(e) => self.refused(&id, epoch, "files", e).await,
                }
            }
            AgentMsg::Live { task, epoch, status, detail } => {
                let Some(id) = self.task_id(&task) else { return };
                let epoch = Epoch(epoch);
                let status = match muster_core::Live::reported(&status) {
                    Ok(s) => s,
                    Err(e) => {
                        self.reply(HubMsg::Error { message: e.reason });
                        return;
                    }
                };
                let detail = detail.map(|d| crate::auth::redact_tokens(&d).into_owned());
                if let Err(e) = store.set_live(&self.name, &id, epoch, status, detail.as_deref(), now).await {
                    self.refused(&id, epoch, "live", e).await;
                }
            }
            AgentMsg::Steps { task, epoch, steps } => {
                let Some(id) = self.task_id(&task) else { return };
                let epoch = Epoch(epoch);
                let steps = match new_steps(steps) {
                    Ok(s) => s,
                    Err(message) => {
                        self.reply(HubMsg::Error { message });
                        return;
                    }
                };
                if let Err(e) = store.append_steps(&self.name, &id, epoch, steps, now).await {
                    self.refused(&id, epoch, "steps", e).await;
                }
            }
            AgentMsg::Finished {
                task,
                epoch,
                outcome,
                exit_code,
                reason,
                output_truncated,
                output_chunks,
                report,
                workspace,
                limit,
                summary,
                checks,
            } => {
                let Some(id) = self.task_id(&task) else { return };
                let epoch = Epoch(epoch);
                let outcome = match parse_outcome(&outcome, exit_code, reason) {
                    Ok(o) => o,
                    Err(e) => {
                        self.reply(HubMsg::Error { message: format!("bad finished report: {e}") });
                        return;
                    }
                };
                if output_truncated
                    && let Err(e) = store.mark_output_truncated(&self.name, &id, epoch, now).await
                    && !matches!(e, StoreError::Refused(_))
                {
                    tracing::error!(task_id = %id, error = %e, "cannot record truncated output");
                }
                // The runner that ran it, for the token counts: a fallback,
                // when its lease says so. Read only when there is a report.
                let ran_with = match &report {
                    Some(_) => store.task(&id).await.ok().flatten().map(|t| t.runner_in_use().clone()),
                    None => None,
                };
                let retry = Retry { backoff: self.hub.config().backoff, jitter: jitter() };
                let details = RunDetails {
                    report: report.map(|r| run_report(&r)),
                    workspace: workspace.map(|w| workspace_record(*w)),
                    summary,
                    output_chunks,
                    checks: checks
                        .into_iter()
                        .map(|c| muster_store::CheckRecord {
                            name: c.name,
                            passed: c.passed,
                            exit_code: c.exit_code,
                            duration_ms: c.duration_ms,
                            output: c.output,
                        })
                        .collect(),
                };
                let spent = details.report.as_ref().map(|r| (r.tokens, r.cost));
                if let Some(limit) = limit {
                    // The provider said no: back to the queue until the reset, no attempt spent.
                    let until = match limit.reset_at_ms {
                        Some(ms) => muster_core::Millis(i64::try_from(ms).unwrap_or(i64::MAX))
                            .clamp(now.plus(LIMIT_MIN_WAIT), now.plus(LIMIT_MAX_WAIT)),
                        None => now.plus(LIMIT_DEFAULT_WAIT),
                    };
                    match store.limit_task(&self.name, &id, epoch, &limit.message, until, details, now).await {
                        Ok((task, result)) => {
                            if result != FinishResult::Duplicate {
                                self.hub.metrics().outcomes.with(&[Outcome::Limited.as_str()]).inc();
                                if spent.is_some_and(|(_, cost)| cost.is_some_and(|c| !c.is_zero()))
                                    && let Err(e) = self.hub.enforce_budgets().await
                                {
                                    tracing::error!(error = %e, "cannot check the daily budgets");
                                }
                                tracing::warn!(
                                    task_id = %id, runner = %task.spec.runner, until = until.0, message = %limit.message,
                                    "the provider limited the run; requeued without spending an attempt"
                                );
                            }
                            self.reply(HubMsg::Ack { task: id.to_string(), epoch: epoch.0 });
                            self.hub.wake_dispatcher();
                        }
                        Err(e) => self.refused(&id, epoch, "finished", e).await,
                    }
                    return;
                }
                match store.finish_task(&self.name, &id, epoch, &outcome, details, now, retry).await {
                    Ok((task, result)) => {
                        if result == FinishResult::Duplicate {
                            tracing::debug!(task_id = %id, epoch = epoch.0, "duplicate finished report acknowledged");
                        } else {
                            let metrics = self.hub.metrics();
                            let ended = outcome.outcome();
                            metrics.outcomes.with(&[ended.as_str()]).inc();
                            if let Some((tokens, cost)) = spent {
                                let runner = ran_with.as_ref().unwrap_or(&task.spec.runner).as_str();
                                for (kind, n) in [
                                    ("input", tokens.input),
                                    ("output", tokens.output),
                                    ("cache_read", tokens.cache_read),
                                    ("cache_write", tokens.cache_write),
                                ] {
                                    metrics.tokens.with(&[runner, kind]).add(n);
                                }
                                metrics.cost_micro_usd.with(&[runner]).add(cost.map_or(0, |c| c.0));
                                if cost.is_some_and(|c| !c.is_zero())
                                    && let Err(e) = self.hub.enforce_budgets().await
                                {
                                    tracing::error!(error = %e, "cannot check the daily budgets");
                                }
                            }
                            let cost = spent.and_then(|(_, cost)| cost).unwrap_or_default();
                            if ended == Outcome::Cancelled {
                                self.hub.shared.window.spent(cost);
                            } else {
                                self.hub.shared.window.ended(ended == Outcome::Succeeded, cost);
                            }
                            if let Some(started) = task.started_at {
                                metrics.run_duration.with(&[ended.as_str()]).observe(now.since(started).as_secs_f64());
                            }
                        }
                        self.reply(HubMsg::Ack { task: id.to_string(), epoch: epoch.0 });
                        self.hub.wake_for(&task);
                    }
                    Err(e) => self.refused(&id, epoch, "finished", e).await,
                }
            }
        }
    }

    fn task_id(&self, raw: &str) -> Option<TaskId> {
        match TaskId::parse(raw) {
            Ok(id) => Some(id),
            Err(e) => {
                self.reply(HubMsg::Error { message: e.to_string() });
                None
            }
        }
    }

    async fn refused(&self, id: &TaskId, epoch: Epoch, what: &str, e: StoreError) {
        match e {
            StoreError::Refused(r) => self.reject(id, epoch, what, &r.to_string()).await,
            StoreError::NotFound { .. } => self.reject(id, epoch, what, "no such task").await,
            // Not the agent's fault: leave the run alone; the agent resends after it reconnects.
            other => {
                tracing::error!(agent = %self.name, task_id = %id, error = %other, report = what, "cannot apply report")
            }
        }
    }
}

/// An agent's steps as the store keeps them; an unknown kind or an
/// oversized batch is refused whole.
fn new_steps(steps: Vec<StepMsg>) -> Result<Vec<NewStep>, String> {
    if steps.len() > MAX_STEPS_PER_MESSAGE {
        return Err(format!("a steps message carries at most {MAX_STEPS_PER_MESSAGE} steps, got {}", steps.len()));
    }
    steps
        .into_iter()
        .map(|s| {
            let kind = StepKind::parse(&s.kind).ok_or_else(|| format!("unknown step kind {:?}", s.kind))?;
            let summary = match crate::auth::redact_tokens(&s.summary) {
                std::borrow::Cow::Borrowed(_) => s.summary,
                std::borrow::Cow::Owned(clean) => clean,
            };
            Ok(NewStep { kind, name: s.name, summary, is_error: s.is_error, duration_ms: s.duration_ms })
        })
        .collect()
}

/// A run's report as the store keeps it: cost in millionths of a dollar.
fn run_report(r: &muster_proto::ws::RunReport) -> RunReport {
    let cost = r.cost_usd.and_then(muster_core::MicroUsd::from_usd);
    RunReport {
        session_id: r.session_id.clone(),
        model: r.model.clone(),
        turns: r.turns,
        tokens: Tokens {
            input: r.input_tokens,
            output: r.output_tokens,
            cache_read: r.cache_read_tokens,
            cache_write: r.cache_write_tokens,
        },
        cost,
        result: r.result.clone(),
        tool_uses: r.tool_uses,
        tool_errors: r.tool_errors,
    }
}

fn workspace_record(w: muster_proto::ws::WorkspaceReport) -> WorkspaceRecord {
    WorkspaceRecord {
        repo: w.repo,
        branch: w.branch,
        base: w.base,
        head: w.head,
        commits: w.commits,
        files: w.files,
        stat: w.stat,
        diff: w.diff,
        diff_truncated: w.diff_truncated,
        kept_at: w.kept_at,
        error: w.error,
        snapshot: w.snapshot,
    }
}

/// How long a limited runner rests when its provider named no reset, and the
/// bounds on a reset it did name.
const LIMIT_DEFAULT_WAIT: Duration = Duration::from_secs(60);
const LIMIT_MIN_WAIT: Duration = Duration::from_secs(1);
const LIMIT_MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// A random number in `[0, 1)` for retry jitter.
fn jitter() -> f64 {
    let mut buf = [0u8; 8];
    if getrandom::fill(&mut buf).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(buf) >> 11) as f64 / (1u64 << 53) as f64
}
