//! Runtime settings and data care: settings change without a restart and
//! outlive one; retention prunes finished work on a schedule and on demand,
//! and the database reports its size and care.

use crate::harness::{AgentSocket as Socket, Hub, HubOpts, PATIENCE, agent_socket};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

async fn next(socket: &mut Socket) -> Value {
    loop {
        match tokio::time::timeout(PATIENCE, socket.next()).await.expect("the hub speaks in time") {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).expect("the hub sends JSON"),
            Some(Ok(_)) => {}
            other => panic!("the socket ended: {other:?}"),
        }
    }
}

/// The setting `key` from `GET /api/v1/config`.
async fn setting(hub: &Hub, key: &str) -> Value {
    let config = hub.get("/config").await;
    config["settings"]
        .as_array()
        .expect("settings")
        .iter()
        .find(|s| s["key"] == key)
        .cloned()
        .unwrap_or_else(|| panic!("no setting {key} in {config}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn runtime_settings_apply_at_once_outlive_a_restart_and_reset() {
    // The raw socket below never heartbeats: a hub that waits 3 s for one
    // keeps it while the CLI calls before the change run, however loaded the machine.
    let mut hub = Hub::start_with(HubOpts { heartbeat: "1s", lease_ttl: "5s", ..HubOpts::default() }).await;
    let token = hub.add_agent("raw", &[]).await;
    let mut socket = agent_socket(&hub, &token).await;
    let welcome = next(&mut socket).await;
    assert_eq!((welcome["type"].as_str(), welcome["heartbeat_ms"].as_u64()), (Some("welcome"), Some(1000)));

    let (code, out, err) = hub.cli(&["config"]).await;
    assert_eq!(code, 0, "{err}");
    let line = out.lines().find(|l| l.starts_with("heartbeat_interval")).expect("heartbeat_interval is listed");
    assert!(line.contains("1s") && line.contains("startup"), "{line}");
    for key in ["accept_timeout", "retention.tasks", "retention.output", "compact_interval", "default_runner"] {
        assert!(out.lines().any(|l| l.starts_with(key)), "{key} is listed: {out}");
    }
    assert!(out.contains("alerts.stuck_tasks.threshold"), "alert thresholds are part of it: {out}");

    // Bad values are refused, naming what is wrong, and change nothing.
    let before = hub.get("/config").await;
    for (args, names) in [
        (vec!["heartbeat_interval=soon"], "heartbeat_interval"),
        (vec!["lease_ttl=300ms"], "lease_ttl"),
        (vec!["heartbeat_colour=blue"], "heartbeat_colour"),
        (vec!["accept_timeout=2s", "backup_keep=0"], "backup_keep"),
        (vec!["default_runner=nobody-offers-this"], "default_runner"),
        (vec!["alerts.disk_low.threshold=7"], "disk_low.threshold"),
        (vec!["retention.tasks=7d"], "objective runs-within-30m looks back (30d)"),
        (vec!["backup_interval=10s"], "backup_interval"),
    ] {
        let mut cli = vec!["config", "set"];
        cli.extend(args.iter());
        let (code, _, err) = hub.cli(&cli).await;
        assert_eq!(code, 2, "{args:?} must be refused: {err}");
        assert!(err.contains(names), "{args:?}: the error names {names}: {err}");
    }
    assert_eq!(hub.get("/config").await, before, "a refused change writes nothing, not even part of itself");
    // Whole numbers and `0` (off) as people type them.
    let (code, _, err) =
        hub.cli(&["config", "set", "backup_keep=3", "compact_interval=0", "alerts.disk_low.threshold=0"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(setting(&hub, "backup_keep").await["value"], 3);
    assert_eq!(setting(&hub, "compact_interval").await["value"], "off");
    let (code, _, err) =
        hub.cli(&["config", "reset", "backup_keep", "compact_interval", "alerts.disk_low.threshold"]).await;
    assert_eq!(code, 0, "{err}");

    // One change of several settings, in force at once: the connected agent
    // is told its new heartbeat interval.
    let (code, _, err) = hub
        .cli(&[
            "config",
            "set",
            "heartbeat_interval=250ms",
            "lease_ttl=2s",
            "default_runner=shell",
            "alerts.queue_growing.threshold=9",
        ])
        .await;
    assert_eq!(code, 0, "{err}");
    let told = loop {
        let msg = next(&mut socket).await;
        if msg["type"] == "settings" {
            break msg;
        }
    };
    assert_eq!((told["heartbeat_ms"].as_u64(), told["lease_ttl_ms"].as_u64()), (Some(250), Some(2000)));
    let hb = setting(&hub, "heartbeat_interval").await;
    assert_eq!(
        (hb["value"].as_str(), hb["startup"].as_str(), hb["runtime"].as_bool()),
        (Some("250ms"), Some("1s"), Some(true))
    );
    assert_eq!(setting(&hub, "alerts.queue_growing.threshold").await["value"], 9.0);
    drop(socket);

    // The default runner applies to the next task that names none.
    let _agent = hub.agent("worker", 1, &[]).await;
    let id = hub.add_task(json!({ "prompt": "echo by default" })).await;
    let task = hub.wait_state(&id, &["succeeded"]).await;
    assert_eq!(task["runner"], "shell");
    let changed: Vec<Value> = hub.events("").await.into_iter().filter(|e| e["kind"] == "config.changed").collect();
    let detail = changed.last().expect("the change is on the timeline")["detail"].as_str().unwrap().to_owned();
    assert!(detail.contains("config.heartbeat_interval=250ms") && detail.ends_with("by admin"), "{detail}");

    // Kept across a restart, and reset back to the startup value.
    assert_eq!(hub.terminate().await, Some(0));
    hub.restart().await;
    assert_eq!(setting(&hub, "heartbeat_interval").await["value"], "250ms");
    assert_eq!(setting(&hub, "default_runner").await["value"], "shell");
    let (code, _, err) = hub.cli(&["config", "reset", "heartbeat_interval", "lease_ttl"]).await;
    assert_eq!(code, 0, "{err}");
    let hb = setting(&hub, "heartbeat_interval").await;
    assert_eq!((hb["value"].as_str(), hb["runtime"].as_bool()), (Some("1s"), Some(false)));
    let token = hub.add_agent("late", &[]).await;
    let mut socket = agent_socket(&hub, &token).await;
    assert_eq!(next(&mut socket).await["heartbeat_ms"], 1000, "a new agent is welcomed with the value in force");
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_prunes_on_a_schedule_and_on_demand_and_the_database_reports_it() {
    // Finished tasks may be kept only as long as health and objectives look
    // back: here, a second.
    let settings_dir = tempfile::tempdir().unwrap();
    let settings = settings_dir.path().join("muster.toml");
    std::fs::write(
        &settings,
        "[health]\nwindow = \"1s\"\n\n[[slo]]\nname = \"quick\"\nkind = \"run\"\nthreshold = \"1m\"\ntarget = 0.9\nwindow = \"1s\"\n",
    )
    .unwrap();
    let path: &'static str = Box::leak(settings.to_str().unwrap().to_owned().into_boxed_str());
    let extra: &'static [&'static str] = Box::leak(vec!["--config", path].into_boxed_slice());
    let hub = Hub::start_with(HubOpts { extra, ..HubOpts::default() }).await;
    let _agent = hub.agent("w", 2, &[]).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let id = hub.shell_task(&format!("echo line {n}")).await;
        hub.wait_state(&id, &["succeeded"]).await;
        ids.push(id);
    }
    let (code, out, err) = hub.cli(&["db", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let db: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (db["backend"].as_str(), db["tasks"].as_u64(), db["auto_vacuum"].as_str()),
        (Some("sqlite"), Some(3), Some("incremental"))
    );
    assert_eq!(db["output_bytes"], 21, "{db}");
    assert!(db["last_compaction"].is_null(), "{db}");
    assert_eq!(db["retention"]["tasks"], "90d", "the default retention: {db}");

    // The schedule applies the new retention without a restart.
    let (code, _, err) = hub.cli(&["config", "set", "retention.output=1s", "compact_interval=1s"]).await;
    assert_eq!(code, 0, "{err}");
    hub.wait_until("the scheduled compaction to prune the output", || async {
        let task = hub.task(&ids[0]).await;
        (task["attempts_detail"][0]["output_pruned"] == true).then_some(())
    })
    .await;
    let (code, _, err) = hub.cli(&["config", "set", "compact_interval=off"]).await;
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = hub.cli(&["task", "logs", &ids[0]]).await;
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    assert!(err.contains("removed by retention"), "{err}");
    let (_, shown, _) = hub.cli(&["task", "show", &ids[0]]).await;
    assert!(shown.contains("7 B (pruned)"), "{shown}");

    // On demand: finished tasks past their retention go entirely.
    let (code, _, err) = hub.cli(&["config", "set", "retention.tasks=1s"]).await;
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = hub.cli(&["compact", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["tasks_pruned"], 3, "{report}");
    assert!(report["bytes_after"].as_u64() > Some(0), "{report}");
    let (code, _, _) = hub.cli(&["task", "show", &ids[2]]).await;
    assert_eq!(code, 3, "a pruned task is gone");
    let (code, out, err) = hub.cli(&["db"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("pruned 3 tasks"), "the last compaction is reported: {out}");
    assert!(out.lines().any(|l| l.starts_with("rows") && l.contains("0 tasks")), "{out}");
    let compactions = hub.events("").await.into_iter().filter(|e| e["kind"] == "db.compacted").count();
    assert!(compactions >= 2, "scheduled and on-demand compactions are on the timeline");
    let (code, out, err) = hub.cli(&["check"]).await;
    assert_eq!(code, 0, "pruning leaves every invariant whole: {out}{err}");
}
