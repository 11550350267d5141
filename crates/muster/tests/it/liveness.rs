//! Liveness: an agent that falls silent is taken offline and loses its
//! leases; the hub's output cap reaches the agents.

use crate::harness::{
    AgentSocket as Socket, Hub, HubOpts, PATIENCE, agent_socket, agent_socket_with_slots, count_kind,
};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// The next text frame as JSON, or the close frame's reason.
async fn next(socket: &mut Socket) -> Result<Value, String> {
    loop {
        match tokio::time::timeout(PATIENCE, socket.next()).await.expect("the hub speaks in time") {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t).expect("the hub sends JSON")),
            Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| f.reason.to_string()).unwrap_or_default()),
            Some(Ok(_)) => {}
            other => return Err(format!("socket ended: {other:?}")),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reports_about_many_tasks_sent_at_once_each_apply_in_order_though_the_agent_hangs_up_straight_after() {
    let hub = Hub::start().await;
    let token = hub.add_agent("burst", &[]).await;
    let mut socket = agent_socket_with_slots(&hub, &token, 8).await;
    assert_eq!(next(&mut socket).await.unwrap()["type"], "welcome");
    let mut ids = Vec::new();
    for i in 0..8 {
        ids.push(hub.shell_task(&format!("echo {i}")).await);
    }
    let mut assigns = Vec::new();
    while assigns.len() < ids.len() {
        let frame = next(&mut socket).await.unwrap();
        if frame["type"] == "assign" {
            assigns.push(frame);
        }
    }
    // Every task's accept, output and finished, back to back with no wait for
    // an answer, then the socket closes. Each task's output must land before
    // its finished (after it, the output would be a stale report), and what
    // arrived before the close must all be applied.
    for (i, assign) in assigns.iter().enumerate() {
        let (task, epoch) = (&assign["task"], &assign["epoch"]);
        for frame in [
            json!({ "type": "accept", "task": task, "epoch": epoch }),
            json!({ "type": "output", "task": task, "epoch": epoch, "stream": "stdout", "data": format!("burst {i}\n") }),
            json!({ "type": "finished", "task": task, "epoch": epoch, "outcome": "succeeded", "exit_code": 0,
                    "reason": null, "output_truncated": false }),
        ] {
            socket.feed(Message::text(frame.to_string())).await.unwrap();
        }
    }
    socket.flush().await.unwrap();
    socket.close(None).await.unwrap();
    for (i, assign) in assigns.iter().enumerate() {
        let id = assign["task"].as_str().unwrap();
        hub.wait_state(id, &["succeeded"]).await;
        assert_eq!(hub.output(id).await, format!("burst {i}\n"), "{id}'s output");
    }
    let events = hub.events("agent=burst").await;
    assert_eq!(count_kind(&events, "task.stale_report"), 0, "{events:?}");
    assert_eq!(count_kind(&events, "task.succeeded"), ids.len(), "{events:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_that_stops_heartbeating_goes_offline_and_its_task_runs_elsewhere() {
    let hub = Hub::start().await;
    let token = hub.add_agent("silent", &[]).await;
    let mut socket = agent_socket(&hub, &token).await;
    assert_eq!(next(&mut socket).await.unwrap()["type"], "welcome");
    let id = hub.shell_task("echo ran").await;
    let assign = next(&mut socket).await.unwrap();
    assert_eq!(assign["type"], "assign");
    assert_eq!(assign["task"], id.as_str());
    let accept = json!({ "type": "accept", "task": id, "epoch": assign["epoch"] });
    socket.send(Message::text(accept.to_string())).await.unwrap();
    hub.wait_state(&id, &["running"]).await;

    // From here on the agent says nothing, though its socket stays open: a
    // hung or partitioned agent. Three missed heartbeats take it offline.
    let closed = loop {
        match next(&mut socket).await {
            Ok(_) => continue,
            Err(reason) => break reason,
        }
    };
    assert!(closed.contains("missed heartbeats"), "{closed}");
    // The close frame can arrive before the hub has recorded the disconnect.
    hub.wait_until("the silent agent to be offline", || async {
        (hub.get("/agents/silent").await["state"] == "offline").then_some(())
    })
    .await;
    let events = hub.events("agent=silent").await;
    assert!(
        events
            .iter()
            .any(|e| e["kind"] == "agent.disconnected"
                && e["detail"].as_str().unwrap_or("").contains("missed heartbeats")),
        "{events:?}"
    );

    // Its lease expires and a live agent finishes the task.
    let _live = hub.agent("live", 1, &[]).await;
    let task = hub.wait_state(&id, &["succeeded"]).await;
    assert_eq!(task["agent"], "live");
    assert_eq!(task["attempts_detail"][0]["outcome"], "lease_expired");
    assert_eq!(hub.output(&id).await, "ran\n");
    assert_eq!(count_kind(&hub.events(&format!("task={id}")).await, "task.reclaimed"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn output_past_the_hubs_cap_is_cut_and_the_attempt_marked_truncated() {
    let hub = Hub::start_with(HubOpts { extra: &["--max-output-bytes", "1000"], ..HubOpts::default() }).await;
    let _agent = hub.agent("chatty", 1, &[]).await;
    let id = hub.shell_task("head -c 5000 /dev/zero | tr '\\0' x; echo >&2 after").await;
    let task = hub.wait_state(&id, &["succeeded"]).await;
    let attempt = &task["attempts_detail"][0];
    assert_eq!(attempt["output_truncated"], true, "{task}");
    assert_eq!(attempt["output_bytes"], 1000, "{task}");
    let output = hub.output(&id).await;
    assert_eq!(output.len(), 1000);
    // The agent reads stdout and stderr side by side, so `after` may land
    // among the first 1000 bytes if stdout arrived in small reads; nothing else may.
    assert!(output.replace("after\n", "").bytes().all(|b| b == b'x'), "only the first 1000 bytes are kept: {output:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_process_with_the_same_agent_token_stops_the_first_instead_of_flapping() {
    use crate::harness::{forward_stderr, muster_command};
    let hub = Hub::start().await;
    let token = hub.add_agent("twin", &[]).await;
    let workdir = tempfile::tempdir().unwrap();
    let mut first = muster_command(&["agent", "run", "--hub", &hub.url, "--runner", "shell"]);
    first.env("MUSTER_TOKEN", &token).current_dir(workdir.path()).stderr(std::process::Stdio::piped());
    let mut first = muster_agent::process::ProcessGroup::spawn(&mut first).expect("the first agent starts");
    let said = forward_stderr(&mut first, "agent twin (first)", "another process connected");
    hub.wait_connected("twin").await;
    let mark = hub.last_event().await;

    let _second = hub.spawn_agent(("twin", &token), 1, &[]);
    let status = tokio::time::timeout(PATIENCE, first.wait()).await.expect("the first agent stops").unwrap();
    assert_eq!(status.code(), Some(5), "it stops as refused, exit code 5: {status:?}");
    let line = said.await.expect("the first agent says why");
    assert!(line.contains("two processes must not share one agent"), "{line}");
    let connects: Vec<Value> =
        hub.events("agent=twin").await.into_iter().filter(|e| e["seq"].as_i64() > Some(mark)).collect();
    assert_eq!(count_kind(&connects, "agent.connected"), 1, "one takeover, no flapping: {connects:?}");
    assert_eq!(hub.get("/agents/twin").await["state"], "idle", "the second process keeps the agent");
}
