//! Dispatch: throughput over several agents, capability routing, priorities.

use crate::harness::{Hub, count_kind, path_str};
use serde_json::json;
use std::collections::HashMap;

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_tasks_over_three_agents_all_succeed_exactly_once() {
    let hub = Hub::start().await;
    let _a = hub.agent("a1", 2, &[]).await;
    let _b = hub.agent("a2", 2, &[]).await;
    let _c = hub.agent("a3", 2, &[]).await;
    let ledger = tempfile::tempdir().unwrap();
    let ledger_file = path_str(&ledger.path().join("ran"));
    let mut ids = Vec::new();
    for i in 0..200 {
        // Each run appends its task id to a shared ledger, so a second run of any task would show.
        let script = format!("echo \"$MUSTER_TASK_ID\" >> '{ledger_file}'; echo task-{i}");
        ids.push(hub.shell_task(&script).await);
    }
    hub.wait_until("all 200 tasks to succeed", || async {
        let counts = hub.get("/status").await["tasks"].clone();
        (counts["succeeded"] == 200).then_some(())
    })
    .await;

    let ledger = std::fs::read_to_string(&ledger_file).unwrap();
    let mut runs: HashMap<&str, usize> = HashMap::new();
    for line in ledger.lines() {
        *runs.entry(line).or_default() += 1;
    }
    let mut per_agent: HashMap<String, usize> = HashMap::new();
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(runs.get(id.as_str()), Some(&1), "task {id} ran {:?} times", runs.get(id.as_str()));
        let task = hub.task(id).await;
        assert_eq!(task["state"], "succeeded");
        assert_eq!(task["attempts"], 1);
        assert_eq!(task["exit_code"], 0);
        *per_agent.entry(task["agent"].as_str().unwrap().to_owned()).or_default() += 1;
        assert_eq!(hub.output(id).await, format!("task-{i}\n"));
        let events = hub.events(&format!("task={id}")).await;
        assert_eq!(count_kind(&events, "task.succeeded"), 1, "{id}: {events:?}");
    }
    assert_eq!(runs.len(), 200);
    // Every agent took part.
    assert_eq!(per_agent.len(), 3, "{per_agent:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tasks_go_only_to_agents_with_every_capability_and_the_runner() {
    let hub = Hub::start().await;
    let _gpu = hub.agent("gpu-box", 2, &["gpu", "lang:rust"]).await;
    let _plain = hub.agent("plain-box", 2, &[]).await;

    let gpu_tasks: Vec<String> = futures_util::future::join_all(
        (0..4).map(|_| hub.add_task(json!({ "prompt": "echo gpu", "runner": "shell", "capabilities": ["gpu"] }))),
    )
    .await;
    let both =
        hub.add_task(json!({ "prompt": "echo both", "runner": "shell", "capabilities": ["gpu", "lang:rust"] })).await;
    let nobody =
        hub.add_task(json!({ "prompt": "echo never", "runner": "shell", "capabilities": ["gpu", "arm64"] })).await;
    let plain: Vec<String> = futures_util::future::join_all((0..4).map(|_| hub.shell_task("echo plain"))).await;

    for id in gpu_tasks.iter().chain([&both]) {
        let task = hub.wait_state(id, &["succeeded"]).await;
        assert_eq!(task["agent"], "gpu-box", "{id} needs gpu");
    }
    for id in &plain {
        hub.wait_state(id, &["succeeded"]).await;
    }
    // Both agents have been free many times since; the task no agent can run is still untouched.
    let task = hub.task(&nobody).await;
    assert_eq!(task["state"], "queued");
    let events = hub.events(&format!("task={nobody}")).await;
    assert_eq!(events.len(), 1, "only task.created: {events:?}");

    // A runner no agent offers is refused at submission, naming the field.
    let (status, body) = hub.post("/tasks", json!({ "prompt": "x", "runner": "aider" })).await;
    assert_eq!(status, 400);
    assert_eq!(body["field"], "runner");
}

#[tokio::test(flavor = "multi_thread")]
async fn higher_priority_first_then_oldest_first() {
    let hub = Hub::start().await;
    let _agent = hub.agent("solo", 1, &[]).await;
    // Hold the agent's only slot so the queue builds up behind it.
    let gate = tempfile::tempdir().unwrap();
    let gate_file = path_str(&gate.path().join("open"));
    let blocker = hub.shell_task(&format!("while [ ! -e '{gate_file}' ]; do sleep 0.05; done")).await;
    hub.wait_state(&blocker, &["running"]).await;

    let mut order = Vec::new();
    for (priority, label) in [
        ("low", "low-1"),
        ("normal", "normal-1"),
        ("urgent", "urgent-1"),
        ("high", "high-1"),
        ("urgent", "urgent-2"),
        ("normal", "normal-2"),
    ] {
        let id =
            hub.add_task(json!({ "prompt": format!("echo {label}"), "runner": "shell", "priority": priority })).await;
        order.push((id, label));
    }
    std::fs::write(&gate_file, b"").unwrap();
    for (id, _) in &order {
        hub.wait_state(id, &["succeeded"]).await;
    }
    let started: Vec<String> = hub
        .events("")
        .await
        .into_iter()
        .filter(|e| e["kind"] == "task.started" && e["task"] != blocker.as_str())
        .map(|e| e["task"].as_str().unwrap().to_owned())
        .collect();
    let labels: Vec<&str> =
        started.iter().map(|id| order.iter().find(|(o, _)| o == id).map(|(_, l)| *l).unwrap()).collect();
    assert_eq!(labels, ["urgent-1", "urgent-2", "high-1", "normal-1", "normal-2", "low-1"]);
}
