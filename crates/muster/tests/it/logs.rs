//! Logs: JSON lines in `<data-dir>/logs/`, rotated by size, a level that
//! changes at runtime, and never a token.

use crate::harness::{Hub, HubOpts};
use serde_json::{Value, json};
use std::io::Read;

/// Every log line the hub has written, oldest file first.
pub(crate) fn all_lines(hub: &Hub) -> Vec<String> {
    let dir = hub.dir.path().join("logs");
    let mut texts = Vec::new();
    for n in (1..=9).rev() {
        let gz = dir.join(format!("muster.log.{n}.gz"));
        if gz.exists() {
            let mut text = String::new();
            flate2::read::GzDecoder::new(std::fs::File::open(gz).expect("a log file"))
                .read_to_string(&mut text)
                .expect("gzip");
            texts.push(text);
        }
    }
    texts.push(std::fs::read_to_string(dir.join("muster.log")).expect("the live log"));
    texts.iter().flat_map(|t| t.lines().map(str::to_owned).collect::<Vec<_>>()).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_are_json_lines_rotated_by_size_keeping_the_newest_and_never_a_token() {
    let mut hub =
        Hub::start_with(HubOpts { extra: &["--log-max-bytes", "1024", "--log-keep", "2"], ..HubOpts::default() }).await;
    let agent_token = hub.add_agent("w", &[]).await;
    let _agent = hub.spawn_agent(("w", &agent_token), 2, &[]);
    hub.wait_connected("w").await;
    for _ in 0..40 {
        let id = hub.shell_task("echo hi").await;
        hub.wait_state(&id, &["succeeded"]).await;
    }
    // A live hub may be mid-rotation when the directory is listed: stop it
    // first, so that its last line has been written.
    hub.terminate().await;
    let dir = hub.dir.path().join("logs");
    let mut names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["muster.log", "muster.log.1.gz", "muster.log.2.gz"], "two rotated files kept");
    assert!(std::fs::metadata(dir.join("muster.log")).unwrap().len() <= 1024);

    let lines = all_lines(&hub);
    let parsed: Vec<Value> = lines.iter().map(|l| serde_json::from_str(l).expect("every line is JSON")).collect();
    for v in &parsed {
        for key in ["timestamp", "level", "target", "message"] {
            assert!(v.get(key).is_some(), "{key} missing from {v}");
        }
    }
    assert!(
        parsed
            .iter()
            .any(|v| v["message"] == "assigned" && v["task_id"].is_string() && v["agent"] == "w" && v["epoch"] == 1),
        "a dispatch line carries task_id, agent and epoch"
    );
    let text = lines.join("\n");
    assert!(!text.contains(&hub.token), "the admin token reached a log line");
    assert!(!text.contains(&agent_token), "an agent token reached a log line");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_log_level_changes_at_runtime_and_requests_carry_an_id() {
    let hub = Hub::start().await;
    let first = hub.shell_task("echo one").await;
    let (status, _) = hub.post(&format!("/tasks/{first}/cancel"), json!({})).await;
    assert_eq!(status, 200);
    let cancel_lines = |hub: &Hub| -> Vec<Value> {
        all_lines(hub)
            .iter()
            .map(|l| serde_json::from_str::<Value>(l).expect("JSON"))
            .filter(|v| v["message"] == "cancel")
            .collect()
    };
    let lines = cancel_lines(&hub);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["task_id"], first.as_str());
    assert_eq!(lines[0]["by"], "admin");
    assert!(lines[0]["span"]["request_id"].as_str().is_some_and(|id| id.len() == 16), "{}", lines[0]);

    let (status, body) = hub.request(reqwest::Method::PUT, "/admin/log-level", Some(json!({ "level": "warn" }))).await;
    assert_eq!(status, 200, "{body}");
    let second = hub.shell_task("echo two").await;
    hub.post(&format!("/tasks/{second}/cancel"), json!({})).await;
    assert_eq!(cancel_lines(&hub).len(), 1, "info lines stop at level warn");

    let (status, body) = hub.request(reqwest::Method::PUT, "/admin/log-level", Some(json!({ "level": "info" }))).await;
    assert_eq!(status, 200, "{body}");
    let third = hub.shell_task("echo three").await;
    hub.post(&format!("/tasks/{third}/cancel"), json!({})).await;
    assert_eq!(cancel_lines(&hub).len(), 2, "and come back at info");

    let (status, body) =
        hub.request(reqwest::Method::PUT, "/admin/log-level", Some(json!({ "level": "loud=[" }))).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "level");
}
