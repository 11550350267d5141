//! Fencing: a report carrying a superseded lease epoch, or speaking for
//! another agent's lease, is rejected and logged, never applied.
//!
//! The agents here are fakes speaking the WebSocket protocol by hand, so the
//! test decides exactly what each one says and when.

use crate::harness::{AgentSocket as Socket, Hub, PATIENCE, agent_socket, count_kind};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// Well inside the test hub's 200 ms heartbeat interval.
const HEARTBEAT: Duration = Duration::from_millis(100);

/// An agent that says only what the test tells it to, plus heartbeats naming
/// the runs it has accepted and not yet reported finished, as a real agent would.
struct FakeAgent {
    name: String,
    outbox: Option<mpsc::UnboundedSender<Value>>,
    inbox: mpsc::UnboundedReceiver<Value>,
    driver: JoinHandle<()>,
}

impl FakeAgent {
    /// Connects with `token`, says `hello` with no runs, and waits for `welcome`.
    async fn connect(hub: &Hub, name: &str, token: &str) -> FakeAgent {
        let mut socket = agent_socket(hub, token).await;
        let welcome = tokio::time::timeout(PATIENCE, next_json(&mut socket)).await.expect("a welcome in time");
        let welcome = welcome.expect("a welcome, not a closed socket");
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        assert_eq!(welcome["agent"], name, "{welcome}");
        let (outbox, commands) = mpsc::unbounded_channel();
        let (deliver, inbox) = mpsc::unbounded_channel();
        let driver = tokio::spawn(drive(socket, commands, deliver));
        FakeAgent { name: name.to_owned(), outbox: Some(outbox), inbox, driver }
    }

    fn send(&self, msg: Value) {
        self.outbox.as_ref().expect("the agent is connected").send(msg).expect("the socket is open");
    }

    /// The next message from the hub.
    async fn next(&mut self) -> Value {
        let msg = tokio::time::timeout(PATIENCE, self.inbox.recv()).await;
        let who = &self.name;
        msg.unwrap_or_else(|_| panic!("{who} heard nothing from the hub"))
            .unwrap_or_else(|| panic!("{who}'s socket closed"))
    }

    /// Sends a close frame after everything sent so far and waits for the socket to end.
    async fn close(mut self) {
        drop(self.outbox.take());
        tokio::time::timeout(PATIENCE, &mut self.driver).await.expect("the socket closes").expect("the driver ran");
    }
}

async fn next_json(socket: &mut Socket) -> Option<Value> {
    loop {
        match socket.next().await? {
            Ok(Message::Text(t)) => return Some(serde_json::from_str(&t).expect("the hub sends JSON")),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Owns the socket: sends what the test queues and heartbeats on time, and
/// passes on everything the hub says.
async fn drive(
    mut socket: Socket,
    mut commands: mpsc::UnboundedReceiver<Value>,
    deliver: mpsc::UnboundedSender<Value>,
) {
    let mut runs: Vec<Value> = Vec::new();
    let mut beat = tokio::time::interval(HEARTBEAT);
    loop {
        tokio::select! {
            _ = beat.tick() => {
                let heartbeat = json!({ "type": "heartbeat", "runs": runs, "draining": false });
                if socket.send(Message::text(heartbeat.to_string())).await.is_err() {
                    return;
                }
            }
            command = commands.recv() => {
                let Some(msg) = command else {
                    let _ = socket.close(None).await;
                    // Read on until the hub answers the close, so it has seen every frame before.
                    while next_json(&mut socket).await.is_some() {}
                    return;
                };
                let run = json!({ "task": msg["task"], "epoch": msg["epoch"] });
                match msg["type"].as_str() {
                    Some("accept") => runs.push(run),
                    // Like a real agent: a run reported finished is no longer renewed.
                    Some("finished") => runs.retain(|r| *r != run),
                    _ => {}
                }
                if socket.send(Message::text(msg.to_string())).await.is_err() {
                    return;
                }
            }
            frame = next_json(&mut socket) => match frame {
                Some(msg) => {
                    let _ = deliver.send(msg);
                }
                None => return,
            },
        }
    }
}

fn accept(task: &str, epoch: u64) -> Value {
    json!({ "type": "accept", "task": task, "epoch": epoch })
}

fn output(task: &str, epoch: u64, data: &str) -> Value {
    json!({ "type": "output", "task": task, "epoch": epoch, "stream": "stdout", "data": data })
}

fn finished(task: &str, epoch: u64) -> Value {
    json!({
        "type": "finished", "task": task, "epoch": epoch, "outcome": "succeeded", "exit_code": 0,
        "reason": null, "output_truncated": false,
    })
}

/// Asserts `msg` is a `kind` message (`assign`, `ack`, `drop`) about `task` under `epoch`.
fn assert_msg(msg: &Value, kind: &str, task: &str, epoch: u64) {
    assert_eq!(
        (msg["type"].as_str(), msg["task"].as_str(), msg["epoch"].as_u64()),
        (Some(kind), Some(task), Some(epoch)),
        "{msg}"
    );
}

async fn stale_reports(hub: &Hub, task: &str, agent: &str, epoch: u64) -> usize {
    let events = hub.events(&format!("task={task}")).await;
    events.iter().filter(|e| e["kind"] == "task.stale_report" && e["agent"] == agent && e["epoch"] == epoch).count()
}

/// Asserts the task is running under `epoch`, leased to `agent`.
async fn assert_running(hub: &Hub, task: &str, agent: &str, epoch: u64) {
    let t = hub.task(task).await;
    assert_eq!(
        (t["state"].as_str(), t["agent"].as_str(), t["epoch"].as_u64()),
        (Some("running"), Some(agent), Some(epoch)),
        "{t}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_finished_report_with_a_stale_epoch_is_dropped_and_logged_never_applied() {
    let hub = Hub::start().await;
    let token_a = hub.add_agent("a", &[]).await;
    let token_b = hub.add_agent("b", &[]).await;

    // A takes the task under epoch 1, then vanishes.
    let mut a = FakeAgent::connect(&hub, "a", &token_a).await;
    let id = hub.add_task(json!({ "prompt": "echo hi", "runner": "shell", "max_attempts": 3 })).await;
    assert_msg(&a.next().await, "assign", &id, 1);
    a.send(accept(&id, 1));
    hub.wait_state(&id, &["running"]).await;
    assert_running(&hub, &id, "a", 1).await;
    a.close().await;

    // Its lease runs out; the task is reclaimed and goes to B under epoch 2.
    let mut b = FakeAgent::connect(&hub, "b", &token_b).await;
    hub.wait_until("the task to be reclaimed", || async {
        let events = hub.events(&format!("task={id}")).await;
        (count_kind(&events, "task.reclaimed") == 1).then_some(())
    })
    .await;
    assert_msg(&b.next().await, "assign", &id, 2);
    b.send(accept(&id, 2));
    hub.wait_until("B to start the task", || async {
        let t = hub.task(&id).await;
        (t["state"] == "running" && t["epoch"] == 2).then_some(())
    })
    .await;
    assert_running(&hub, &id, "b", 2).await;

    // A comes back and reports the run it lost: the hub tells it to drop the run.
    let mut a = FakeAgent::connect(&hub, "a", &token_a).await;
    a.send(finished(&id, 1));
    assert_msg(&a.next().await, "drop", &id, 1);
    assert!(stale_reports(&hub, &id, "a", 1).await >= 1, "no task.stale_report for a's epoch 1");
    assert_running(&hub, &id, "b", 2).await;

    // Output under the stale epoch is refused as well, and not stored.
    a.send(output(&id, 1, "stale output from a\n"));
    assert_msg(&a.next().await, "drop", &id, 1);
    assert!(!hub.output(&id).await.contains("stale output"), "stale output was stored");

    // The right epoch does not help A: the lease is B's.
    a.send(finished(&id, 2));
    assert_msg(&a.next().await, "drop", &id, 2);
    assert_eq!(stale_reports(&hub, &id, "a", 2).await, 1);
    assert_running(&hub, &id, "b", 2).await;

    // B, the holder, finishes: applied and acknowledged, once.
    b.send(output(&id, 2, "from b\n"));
    b.send(finished(&id, 2));
    assert_msg(&b.next().await, "ack", &id, 2);
    let task = hub.task(&id).await;
    assert_eq!(
        (task["state"].as_str(), task["agent"].as_str(), task["exit_code"].as_i64()),
        (Some("succeeded"), Some("b"), Some(0)),
        "{task}"
    );
    assert_eq!(hub.output(&id).await, "from b\n");
    assert_eq!(count_kind(&hub.events(&format!("task={id}")).await, "task.succeeded"), 1);

    // A resend of the same report is acknowledged again and changes nothing.
    b.send(finished(&id, 2));
    assert_msg(&b.next().await, "ack", &id, 2);
    let events = hub.events(&format!("task={id}")).await;
    assert_eq!(count_kind(&events, "task.succeeded"), 1, "{events:?}");
    assert_eq!(hub.task(&id).await["state"], "succeeded");

    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_cannot_report_on_a_task_leased_to_another_agent() {
    let hub = Hub::start().await;
    let token_a = hub.add_agent("a", &[]).await;
    let token_b = hub.add_agent("b", &[]).await;
    let mut b = FakeAgent::connect(&hub, "b", &token_b).await;
    let id = hub.shell_task("echo hi").await;
    assert_msg(&b.next().await, "assign", &id, 1);
    b.send(accept(&id, 1));
    hub.wait_state(&id, &["running"]).await;

    // A names the task and its current epoch, but the lease is B's.
    let mut a = FakeAgent::connect(&hub, "a", &token_a).await;
    let before = hub.last_event().await;
    a.send(output(&id, 1, "not a's to write\n"));
    assert_msg(&a.next().await, "drop", &id, 1);
    a.send(finished(&id, 1));
    assert_msg(&a.next().await, "drop", &id, 1);
    assert_eq!(stale_reports(&hub, &id, "a", 1).await, 1);
    let after: Vec<Value> =
        hub.events(&format!("task={id}")).await.into_iter().filter(|e| e["seq"].as_i64() > Some(before)).collect();
    assert!(after.iter().all(|e| e["kind"] == "task.stale_report"), "a's reports changed the task: {after:?}");
    assert_running(&hub, &id, "b", 1).await;
    assert_eq!(hub.output(&id).await, "");

    b.send(finished(&id, 1));
    assert_msg(&b.next().await, "ack", &id, 1);
    assert_eq!(hub.task(&id).await["state"], "succeeded");
    a.close().await;
    b.close().await;
}
