//! Alerts: they fire, are acknowledged and resolve with their condition;
//! thresholds change at runtime and persist.

use crate::harness::{Hub, HubOpts};
use serde_json::{Value, json};

fn fast_alerts() -> HubOpts {
    HubOpts { alert_interval: "100ms", ..HubOpts::default() }
}

/// Waits for an alert event of `kind` about `rule` after `mark`.
async fn wait_alert_event(hub: &Hub, mark: i64, kind: &str, rule: &str) -> Value {
    hub.wait_until(&format!("{kind} for {rule}"), || async {
        let events = hub.get(&format!("/events?after={mark}&limit=10000")).await;
        events["events"]
            .as_array()
            .expect("events")
            .iter()
            .find(|e| e["kind"] == kind && e["detail"].as_str().unwrap_or("").starts_with(&format!("{rule} (")))
            .cloned()
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn an_alert_fires_is_acknowledged_and_resolves_when_its_condition_clears() {
    let hub = Hub::start_with(fast_alerts()).await;
    // One registered and never started is not a fleet gone quiet.
    let idle = hub.add_agent("never", &[]).await;
    assert!(!idle.is_empty());
    let token = hub.add_agent("w", &[]).await;
    let mut agent = hub.spawn_agent(("w", &token), 1, &[]);
    hub.wait_connected("w").await;
    let mark = hub.last_event().await;
    agent.kill9().await;
    // Connected once, gone now: no agent is online.
    let fired = wait_alert_event(&hub, mark, "alert.firing", "no_agents_online").await;
    assert_eq!(fired["detail"], "no_agents_online (critical): no agent is connected (1 registered, 0 tasks queued)");

    let (code, out, _) = hub.cli(&["alerts"]).await;
    assert_eq!(code, 0);
    let line = out.lines().find(|l| l.starts_with("no_agents_online")).unwrap();
    assert!(line.contains("firing") && line.contains("critical"), "{out}");
    let metrics = reqwest::get(format!("{}/metrics", hub.url)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("muster_alerts_firing{rule=\"no_agents_online\",severity=\"critical\"} 1"), "{metrics}");

    let (code, _, err) = hub.cli(&["alerts", "ack", "no_agents_online"]).await;
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = hub.cli(&["alerts"]).await;
    assert!(out.lines().any(|l| l.starts_with("no_agents_online") && l.contains("acknowledged by admin")), "{out}");
    let (code, _, err) = hub.cli(&["alerts", "ack", "no_agents_online"]).await;
    assert_eq!(code, 4, "acknowledging twice is a conflict: {err}");
    let (code, _, err) = hub.cli(&["alerts", "ack", "no_such_rule"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown alert rule"), "{err}");

    // The condition clears: the alert resolves by itself.
    let _agent = hub.spawn_agent(("w", &token), 1, &[]);
    wait_alert_event(&hub, mark, "alert.resolved", "no_agents_online").await;
    let kinds: Vec<String> = hub
        .events("")
        .await
        .into_iter()
        .filter(|e| e["detail"].as_str().unwrap_or("").starts_with("no_agents_online ("))
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(kinds, ["alert.firing", "alert.acknowledged", "alert.resolved"]);
    let (_, out, _) = hub.cli(&["alerts", "--json"]).await;
    let alerts: Vec<Value> = serde_json::from_str(&out).unwrap();
    let a = alerts.iter().find(|a| a["rule"] == "no_agents_online").unwrap();
    assert_eq!(a["state"], "resolved");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_threshold_change_applies_at_the_next_evaluation_and_survives_a_restart() {
    let mut hub = Hub::start_with(fast_alerts()).await;
    let _agent = hub.agent("w", 2, &[]).await;
    for _ in 0..2 {
        let id = hub.add_task(json!({ "prompt": "exit 1", "runner": "shell", "max_attempts": 1 })).await;
        hub.wait_state(&id, &["failed"]).await;
    }
    // Two failures are under the default threshold of ten.
    let mark = hub.last_event().await;
    let (code, _, err) = hub.cli(&["config", "alerts", "set", "high_error_rate", "--threshold", "-1"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("high_error_rate.threshold"), "{err}");
    let (code, _, err) = hub.cli(&["config", "alerts", "set", "high_error_rate", "--threshold", "2"]).await;
    assert_eq!(code, 0, "{err}");
    let fired = wait_alert_event(&hub, mark, "alert.firing", "high_error_rate").await;
    assert_eq!(fired["detail"], "high_error_rate (warning): 2 runs failed in the last hour (threshold 2)");
    let changed = hub.events("").await.into_iter().find(|e| e["kind"] == "config.changed").unwrap();
    assert_eq!(changed["detail"], "alerts.high_error_rate.threshold=2 by admin");

    // Persisted: a restarted hub keeps the setting.
    assert_eq!(hub.terminate().await, Some(0));
    hub.restart().await;
    let config = hub.get("/config/alerts").await;
    assert_eq!(config["high_error_rate"]["threshold"], 2.0);
    let (status, body) =
        hub.request(reqwest::Method::PUT, "/config/alerts", Some(json!({ "disk_low": { "colour": "red" } }))).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["field"], "disk_low.colour");
}

/// On main, 2,000 tasks queued behind one slot never fired an alert
/// (`queue_growing` needs growth at several evaluations in a row), and a
/// firing alert kept the figure it fired with. Now `queue_wait` fires on the
/// oldest due task's wait, its detail follows the queue, and the resolved
/// event says where things stand.
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_behind_one_slot_fires_queue_wait_whose_detail_follows_the_queue() {
    let hub = Hub::start_with(fast_alerts()).await;
    let (status, body) =
        hub.request(reqwest::Method::PUT, "/config/alerts", Some(json!({ "queue_wait": { "threshold": 1 } }))).await;
    assert_eq!(status, 200, "{body}");
    let _agent = hub.agent("w", 1, &[]).await;
    let mark = hub.last_event().await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let tasks: Vec<Value> = (0..1000).map(|_| json!({ "prompt": "sleep 60", "runner": "shell" })).collect();
        let (status, body) = hub.post("/tasks/batch", json!({ "tasks": tasks })).await;
        assert_eq!(status, 201, "{body}");
        ids.extend(body["tasks"].as_array().unwrap().iter().map(|t| t["task"]["id"].as_str().unwrap().to_owned()));
    }
    let fired = wait_alert_event(&hub, mark, "alert.firing", "queue_wait").await;
    let first = fired["detail"].as_str().unwrap().to_owned();
    assert!(first.starts_with("queue_wait (warning): the oldest due task has waited"), "{first}");
    assert!(first.contains("(threshold 1 s); 1999 tasks queued"), "{first}");

    // While it fires, its detail is the queue as it is now.
    let refreshed = hub
        .wait_until("the queue_wait detail to change", || async {
            let alerts = hub.get("/alerts").await;
            let alert = alerts.as_array().unwrap().iter().find(|a| a["rule"] == "queue_wait").cloned().unwrap();
            let detail = alert["detail"].as_str().unwrap_or("").to_owned();
            (alert["state"] == "firing" && !first.ends_with(&detail)).then_some(detail)
        })
        .await;
    assert!(refreshed.starts_with("the oldest due task has waited"), "{refreshed}");

    for id in ids.iter().rev() {
        let (status, body) = hub.post(&format!("/tasks/{id}/cancel"), json!({})).await;
        assert!(status == 200 || status == 409, "{body}");
    }
    let resolved = wait_alert_event(&hub, mark, "alert.resolved", "queue_wait").await;
    assert_eq!(resolved["detail"], "queue_wait (warning): no task waits in the queue; 0 tasks queued");
}
