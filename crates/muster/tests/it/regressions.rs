//! One test per bug, named after what broke.

use crate::harness::{Hub, PATIENCE, muster_command, path_str, run_to_end};
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
    assert_eq!(out, "", "no token is shown by a hub that did not start");
    assert!(!dir.path().join("admin.token").exists());
    drop(taken);

    // The next, successful start shows it.
    let mut cmd = muster_command(&["--data-dir", &data, "hub", "--listen", "127.0.0.1:0"]);
    let mut group = muster_agent::process::ProcessGroup::spawn(&mut cmd).unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut stdout = tokio::io::BufReader::new(group.child_mut().stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(PATIENCE, stdout.next_line()).await.unwrap().unwrap().unwrap();
    assert!(line.starts_with("mst_"), "{line}");
    assert_eq!(std::fs::read_to_string(dir.path().join("admin.token")).unwrap().trim(), line);
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
async fn https_urls_are_refused_with_a_reason_not_a_connection_error() {
    let (code, _, err) = crate::harness::cli_with_input("https://127.0.0.1:9", "mst_x", &["status"], None).await;
    assert_eq!(code, 2);
    assert!(err.contains("plain http:// only"), "{err}");
}
