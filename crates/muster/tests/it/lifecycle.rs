//! A task's life: retries with backoff, the dead-letter list and manual
//! retry, cancel, timeout, and idempotency keys.

use crate::harness::{Hub, HubOpts, count_kind, live_members, path_str};
use muster_proto::parse_timestamp;
use serde_json::{Value, json};

fn millis(v: &Value) -> i64 {
    parse_timestamp(v.as_str().expect("a timestamp")).expect("RFC 3339").0
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_retry_with_growing_backoff_then_dead_letter_then_manual_retry_succeeds() {
    let hub = Hub::start_with(HubOpts { backoff_base: "400ms", backoff_max: "10s", ..HubOpts::default() }).await;
    let _agent = hub.agent("worker", 1, &[]).await;
    let scratch = tempfile::tempdir().unwrap();
    let fixed = path_str(&scratch.path().join("fixed"));
    let script = format!("echo attempt; if [ -e '{fixed}' ]; then exit 0; fi; echo broken >&2; exit 3");
    let id = hub.add_task(json!({ "prompt": script, "runner": "shell", "max_attempts": 3 })).await;

    let task = hub.wait_state(&id, &["failed"]).await;
    assert_eq!(task["attempts"], 3);
    assert_eq!(task["exit_code"], 3);
    assert_eq!(task["reason"], "exit code 3");
    let attempts = task["attempts_detail"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    // Each retry waits at least half its ceiling: 400 ms, then 800 ms, so >= 200 ms and >= 400 ms.
    for (n, pair) in attempts.windows(2).enumerate() {
        let gap = millis(&pair[1]["started_at"]) - millis(&pair[0]["finished_at"]);
        let floor = 200 << n;
        assert!(gap >= floor, "retry {} came {gap} ms after the failure; backoff floor is {floor} ms", n + 1);
        assert_eq!(pair[0]["outcome"], "failed");
    }
    let events = hub.events(&format!("task={id}")).await;
    assert_eq!(count_kind(&events, "task.retry_scheduled"), 2);
    assert_eq!(count_kind(&events, "task.failed"), 1);
    assert!(hub.output(&id).await.contains("broken"));

    // The dead-letter list is the failed state.
    let (code, out, _) = hub.cli(&["task", "list", "--state", "failed", "--json"]).await;
    assert_eq!(code, 0);
    let failed: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert!(failed.iter().any(|t| t["id"] == id.as_str()), "{out}");

    // Fix the cause, revive the task: a fresh budget of attempts.
    std::fs::write(&fixed, b"").unwrap();
    let (code, _, err) = hub.cli(&["task", "retry", &id]).await;
    assert_eq!(code, 0, "{err}");
    let task = hub.wait_state(&id, &["succeeded"]).await;
    assert_eq!(task["attempts"], 1, "attempts count the new budget");
    let attempts = task["attempts_detail"].as_array().unwrap();
    assert_eq!(attempts.len(), 4, "the history keeps every attempt");
    assert_eq!(attempts[3]["number"], 4);
    assert_eq!(attempts[3]["outcome"], "succeeded");
    // On main `task list` and `task show` said 1/3 beside attempt 4: now they name the run too.
    assert_eq!(task["runs"], 4);
    let (_, list, _) = hub.cli(&["task", "list"]).await;
    let row = list.lines().find(|l| l.starts_with(&id)).expect("the task is listed");
    assert!(row.contains("1/3 (run 4)"), "{row}");
    let (_, show, _) = hub.cli(&["task", "show", &id]).await;
    assert!(show.lines().any(|l| l.starts_with("attempts") && l.ends_with("1/3 (run 4)")), "{show}");

    // A succeeded task cannot be retried; the answer names the reason.
    let (status, body) = hub.post(&format!("/tasks/{id}/retry"), json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert!(body["detail"].as_str().unwrap().contains("only a failed task can be retried"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_running_task_kills_its_whole_process_group() {
    let hub = Hub::start().await;
    let _agent = hub.agent("worker", 1, &[]).await;
    // A grandchild in the background, another that ignores SIGTERM, and the shell waiting on them.
    let script = "sleep 300 & (trap '' TERM; sleep 300) & echo \"pgid $$\"; wait";
    let id = hub.shell_task(script).await;
    let out = hub.wait_output(&id, "pgid ").await;
    let pgid: i32 = out.trim().strip_prefix("pgid ").unwrap().parse().unwrap();
    assert!(live_members(pgid).len() >= 3, "the run's group is alive: {:?}", live_members(pgid));

    let (code, _, err) = hub.cli(&["task", "cancel", &id]).await;
    assert_eq!(code, 0, "{err}");
    let task = hub.wait_state(&id, &["cancelled"]).await;
    assert_eq!(task["attempts_detail"][0]["outcome"], "cancelled");
    assert_eq!(live_members(pgid), Vec::<i32>::new(), "processes of the cancelled run survived");
    let events = hub.events(&format!("task={id}")).await;
    assert_eq!(count_kind(&events, "task.cancel_requested"), 1);
    assert_eq!(count_kind(&events, "task.cancelled"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_queued_task_is_immediate_and_final() {
    let hub = Hub::start().await;
    // No agent: the task stays queued.
    let id = hub.shell_task("echo never").await;
    let (status, body) = hub.post(&format!("/tasks/{id}/cancel"), json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "cancelled");
    let _agent = hub.agent("late", 1, &[]).await;
    let probe = hub.shell_task("echo probe").await;
    hub.wait_state(&probe, &["succeeded"]).await;
    assert_eq!(hub.task(&id).await["state"], "cancelled");
    let (status, _) = hub.post(&format!("/tasks/{id}/cancel"), json!({})).await;
    assert_eq!(status, 409, "a finished task cannot be cancelled again");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_past_its_timeout_is_killed_with_its_group_and_fails() {
    let hub = Hub::start().await;
    let _agent = hub.agent("worker", 1, &[]).await;
    let script = "echo \"pgid $$\"; sleep 300 & sleep 300";
    let id = hub.add_task(json!({ "prompt": script, "runner": "shell", "timeout": 1, "max_attempts": 1 })).await;
    let task = hub.wait_state(&id, &["failed"]).await;
    assert_eq!(task["reason"], "timeout");
    assert_eq!(task["attempts_detail"][0]["outcome"], "timeout");
    let out = hub.output(&id).await;
    let pgid: i32 = out.trim().strip_prefix("pgid ").unwrap().parse().unwrap();
    assert_eq!(live_members(pgid), Vec::<i32>::new(), "processes of the timed-out run survived");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_idempotency_key_returns_the_same_task() {
    let hub = Hub::start().await;
    let body = json!({ "prompt": "echo once", "runner": "shell", "idempotency_key": "deploy-42" });
    let (first_status, first) = hub.post("/tasks", body.clone()).await;
    assert_eq!(first_status, 201);
    assert_eq!(first["created"], true);
    // Concurrent repeats, as from a client retrying after a timeout.
    let repeats = futures_util::future::join_all((0..8).map(|_| hub.post("/tasks", body.clone()))).await;
    for (status, again) in repeats {
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["created"], false);
        assert_eq!(again["task"]["id"], first["task"]["id"]);
    }
    let (code, out, _) =
        hub.cli(&["task", "add", "--runner", "shell", "--idempotency-key", "deploy-42", "echo once"]).await;
    assert_eq!(code, 0);
    assert_eq!(out.trim(), first["task"]["id"].as_str().unwrap());
    let tasks = hub.get("/tasks").await;
    assert_eq!(tasks["tasks"].as_array().unwrap().len(), 1);

    // Truly concurrent first submissions: many at once, none committed
    // before the others are sent, make one task; exactly one says it created it.
    let body = json!({ "prompt": "echo once", "runner": "shell", "idempotency_key": "deploy-43" });
    let firsts = futures_util::future::join_all((0..32).map(|_| hub.post("/tasks", body.clone()))).await;
    let ids: std::collections::BTreeSet<String> =
        firsts.iter().map(|(_, b)| b["task"]["id"].as_str().expect("a task").to_owned()).collect();
    assert_eq!(ids.len(), 1, "{firsts:?}");
    let created: Vec<u16> = firsts.iter().filter(|(_, b)| b["created"] == true).map(|(s, _)| *s).collect();
    assert_eq!(created, [201], "{firsts:?}");
    assert!(firsts.iter().all(|(s, b)| (*s == 201) == (b["created"] == true)), "{firsts:?}");
    let id = ids.into_iter().next().unwrap();
    let events = hub.events(&format!("task={id}")).await;
    assert_eq!(crate::harness::count_kind(&events, "task.created"), 1, "{events:?}");
}
