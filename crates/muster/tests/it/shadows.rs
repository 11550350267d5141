//! Shadow mode: tasks also run on another runner, never changing their own
//! result, and the report compares the pairs.

use crate::harness::{Agent, AgentOpts, Hub};
use serde_json::{Value, json};

/// An agent offering `shell`, `twin` (the same as shell) and `odd` (prints
/// one more line and fails).
async fn agent(hub: &Hub, dir: &std::path::Path) -> Agent {
    let toml = r#"
[runners.twin]
argv = ["bash", "{prompt_file}"]
prompt = "file"

[runners.odd]
argv = ["bash", "-c", "source \"$1\"; echo variant-b; exit 3", "odd", "{prompt_file}"]
prompt = "file"
"#;
    hub.agent_with_config("w", dir, toml, AgentOpts { slots: 4, runners: &["shell"], ..AgentOpts::default() }).await
}

async fn shadows_of(hub: &Hub, id: &str) -> Vec<Value> {
    let page = hub.get("/tasks?limit=500").await;
    page["tasks"].as_array().expect("tasks").iter().filter(|t| t["shadow_of"] == id).cloned().collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn shadows_run_beside_their_task_never_change_it_and_are_compared() {
    let hub = Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let _agent = agent(&hub, dir.path()).await;

    // Asked for: one shadow that agrees (times and ids aside), one that does not.
    let (code, id, err) = hub
        .cli(&[
            "task",
            "add",
            "--runner",
            "shell",
            "--shadow",
            "twin",
            "--shadow",
            "odd",
            "echo built $MUSTER_TASK_ID at $(date -u +%Y-%m-%dT%H:%M:%S.%NZ)",
        ])
        .await;
    assert_eq!(code, 0, "{err}");
    let id = id.trim().to_owned();
    let task = hub.wait_state(&id, &["succeeded", "failed"]).await;
    assert_eq!(task["state"], "succeeded", "the task's own result stands: {task}");
    let shadows = shadows_of(&hub, &id).await;
    assert_eq!(shadows.len(), 2, "{shadows:?}");
    for s in &shadows {
        hub.wait_state(s["id"].as_str().unwrap(), &["succeeded", "failed"]).await;
    }
    let (_, shown, _) = hub.cli(&["task", "show", shadows[0]["id"].as_str().unwrap()]).await;
    assert!(shown.contains(&format!("shadow of     {id}")), "{shown}");
    assert_eq!(hub.task(&id).await["state"], "succeeded", "a failed shadow changes nothing");

    // A policy: every high-priority task is shadowed on twin, others are not.
    let (code, _, err) =
        hub.cli(&["shadow", "set", "--runner", "twin", "--percent", "100", "--filter", "priority=high"]).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) =
        hub.cli(&["shadow", "set", "--runner", "twin", "--percent", "100", "--filter", "colour=red"]).await;
    assert_eq!(code, 2, "{err}");
    let high = hub.add_task(json!({ "prompt": "echo high", "runner": "shell", "priority": "high" })).await;
    let normal = hub.add_task(json!({ "prompt": "echo normal", "runner": "shell" })).await;
    hub.wait_state(&high, &["succeeded"]).await;
    hub.wait_state(&normal, &["succeeded"]).await;
    let high_shadows = shadows_of(&hub, &high).await;
    assert_eq!(high_shadows.len(), 1);
    assert!(shadows_of(&hub, &normal).await.is_empty(), "the filter leaves normal tasks alone");
    hub.wait_state(high_shadows[0]["id"].as_str().unwrap(), &["succeeded"]).await;
    let (_, list, _) = hub.cli(&["shadow", "list"]).await;
    assert!(list.contains("twin") && list.contains("100%") && list.contains("priority=high"), "{list}");

    let report = hub.get("/shadow/report").await;
    assert_eq!(
        (&report["pairs"], &report["outcome_matches"], &report["output_matches"]),
        (&json!(3), &json!(2), &json!(2)),
        "{report}"
    );
    let mismatches = report["mismatches"].as_array().unwrap();
    assert_eq!(mismatches.len(), 1, "{report}");
    assert_eq!((&mismatches[0]["shadow_runner"], &mismatches[0]["why"]), (&json!("odd"), &json!("outcome and output")));
    let (code, text, err) = hub.cli(&["shadow", "report"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(text.contains("pairs compared     3") && text.contains("shell -> odd"), "{text}");
    let (code, _, err) = hub.cli(&["shadow", "clear", "twin"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(hub.get("/shadow/policies").await, json!([]));
}
