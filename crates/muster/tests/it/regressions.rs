//! One test per bug, named after what broke.

use crate::harness::{Hub, PATIENCE, count_kind, muster_command, path_str, run_to_end};
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn revoking_every_admin_token_does_not_lock_the_operator_out() {
    let mut hub = Hub::start().await;
    let tokens = hub.get("/tokens").await;
    let admin_id = tokens.as_array().unwrap().iter().find(|t| t["scope"] == "admin").unwrap()["id"].clone();
    let (status, _) = hub.post(&format!("/tokens/{}/revoke", admin_id.as_str().unwrap()), json!({})).await;
    assert_eq!(status, 200);
    let (status, _) = hub.request(reqwest::Method::GET, "/status", None).await;
    assert_eq!(status, 401, "the revoked token no longer works");

    // Restarting the hub issues a new admin token into admin.token.
    assert_eq!(hub.terminate().await, Some(0));
    hub.restart().await;
    let fresh = std::fs::read_to_string(hub.dir.path().join("admin.token")).unwrap().trim().to_owned();
    assert_ne!(fresh, hub.token);
    hub.token = fresh;
    let status = hub.get("/status").await;
    assert_eq!(status["tasks"]["queued"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hub_that_cannot_listen_does_not_spend_the_admin_token_display() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let data = path_str(dir.path());
    let mut cmd = muster_command(&["--data-dir", &data, "hub", "--listen", &addr]);
    let (code, out, err) = run_to_end(&mut cmd, PATIENCE).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot listen on"), "{err}");
    // (Its log lines go to stdout; none of them is a token.)
    assert!(!out.contains("mst_"), "no token is shown by a hub that did not start: {out}");
    assert!(!dir.path().join("admin.token").exists());
    drop(taken);

    // The next, successful start creates it; not at a terminal, it is saved, not shown.
    let mut cmd = muster_command(&["--data-dir", &data, "hub", "--listen", "127.0.0.1:0"]);
    let mut group = muster_agent::process::ProcessGroup::spawn(&mut cmd).unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut stderr = tokio::io::BufReader::new(group.child_mut().stderr.take().unwrap()).lines();
    let line = tokio::time::timeout(PATIENCE, stderr.next_line()).await.unwrap().unwrap().unwrap();
    assert!(line.contains("created an admin token and saved it to"), "{line}");
    assert!(line.contains("it is not shown because stderr is not a terminal"), "{line}");
    let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    assert!(token.starts_with("mst_"));
    assert!(!line.contains(token.trim()));
}

#[tokio::test(flavor = "multi_thread")]
async fn not_found_errors_name_the_id_plainly() {
    let hub = Hub::start().await;
    let (status, body) = hub.request(reqwest::Method::GET, "/tasks/t_00000000000000000000000000", None).await;
    assert_eq!(status, 404);
    assert_eq!(body["detail"], "no task t_00000000000000000000000000");
    let (status, body) = hub.request(reqwest::Method::GET, "/agents/nobody", None).await;
    assert_eq!(status, 404);
    assert_eq!(body["detail"], "no agent named nobody");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_with_a_missing_workdir_says_so_instead_of_blaming_its_runner() {
    let hub = Hub::start().await;
    let token = hub.add_agent("lost", &[]).await;
    let mut cmd = muster_command(&["agent", "run", "--runner", "shell", "--workdir", "/nonexistent/muster-work"]);
    cmd.env("MUSTER_URL", &hub.url).env("MUSTER_TOKEN", &token);
    let (code, _, err) = run_to_end(&mut cmd, PATIENCE).await;
    assert_eq!(code, 1);
    assert!(err.contains("workdir /nonexistent/muster-work is not an existing directory"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_https_url_is_spoken_and_a_hub_not_there_is_unreachable_not_a_usage_error() {
    let (code, _, err) = crate::harness::cli_with_input("https://127.0.0.1:9", "mst_x", &["status"], None).await;
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("cannot reach the hub at https://127.0.0.1:9"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prompt_that_grows_sixfold_in_json_still_reaches_its_agent() {
    let hub = Hub::start().await;
    let _agent = hub.agent("w", 1, &[]).await;
    // Control characters escape to six bytes each (\u0001) on the wire.
    let prompt = format!("# {}\necho arrived", "\u{1}".repeat(400_000));
    let id = hub.add_task(json!({ "prompt": prompt, "runner": "shell" })).await;
    let task = hub.wait_state(&id, &["succeeded", "failed"]).await;
    assert_eq!(task["state"], "succeeded", "{}", task["reason"]);
    assert_eq!(task["epoch"], 1, "handed out once");
    assert_eq!(hub.output(&id).await, "arrived\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_being_killed_after_its_lease_was_lost_does_not_block_its_slot() {
    let hub = Hub::start().await;
    let agent = hub.agent("frozen", 1, &[]).await;
    // The first run ignores SIGTERM, so it lingers through the kill grace after being dropped.
    let script = "if [ \"$MUSTER_TASK_EPOCH\" = 1 ]; then trap '' TERM; echo \"first $$\"; sleep 30; fi; echo second";
    let id = hub.add_task(json!({ "prompt": script, "runner": "shell", "max_attempts": 3 })).await;
    let out = hub.wait_output(&id, "first").await;
    let first: i32 = out.split_whitespace().nth(1).and_then(|p| p.parse().ok()).expect("the first run's group");

    // Freeze the agent past its lease, as a VM pause or SIGSTOP would.
    let pid = agent.process.as_ref().unwrap().pgid();
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    hub.wait_until("the frozen agent's task to be reclaimed", || async {
        let events = hub.events(&format!("task={id}")).await;
        (count_kind(&events, "task.reclaimed") == 1).then_some(())
    })
    .await;
    unsafe { libc::kill(pid, libc::SIGCONT) };

    // Back, the agent is told to drop the old run, and takes the task again at once.
    let task = hub.wait_state(&id, &["succeeded"]).await;
    assert_eq!(task["agent"], "frozen");
    let events = hub.events(&format!("task={id}")).await;
    assert_eq!(count_kind(&events, "task.released"), 0, "the agent turned the task down");
    assert_eq!(count_kind(&events, "task.assigned"), 2);
    assert!(hub.output(&id).await.ends_with("second\n"));
    // "At once": the retry ran to its end while the dropped run, which
    // ignores SIGTERM, was still alive inside its kill grace (10 s), so
    // its slot was not held until it died.
    assert!(
        !crate::harness::live_members(first).is_empty(),
        "the dropped run was already gone: the retry may have waited for its slot"
    );
}
