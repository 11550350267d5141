//! Data care: backups while the hub works, restore over a broken database,
//! retention, and the integrity check with its repair.

use crate::harness::{Hub, HubOpts, PATIENCE, muster_command, path_str, run_to_end};
use serde_json::Value;
use std::io::{Seek, SeekFrom, Write};

async fn restore(hub: &Hub, file: &str) -> (i32, String, String) {
    let data = path_str(hub.dir.path());
    run_to_end(&mut muster_command(&["--data-dir", &data, "restore", file]), PATIENCE).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_taken_while_tasks_run_restores_every_acknowledged_task_over_a_corrupt_database() {
    let mut hub = Hub::start().await;
    let agent = hub.agent("w", 2, &[]).await;
    let scratch = tempfile::tempdir().unwrap();
    let gate = path_str(&scratch.path().join("gate"));
    let mut acknowledged = Vec::new();
    for i in 0..30 {
        let script = if i % 3 == 0 {
            format!("while [ ! -e '{gate}' ]; do sleep 0.05; done; echo gated-{i}")
        } else {
            format!("echo quick-{i}")
        };
        acknowledged.push(hub.shell_task(&script).await);
    }
    hub.wait_until("runs under way", || async {
        (hub.get("/status").await["tasks"]["running"].as_u64() >= Some(1)).then_some(())
    })
    .await;

    let (code, out, err) = hub.cli(&["backup"]).await;
    assert_eq!(code, 0, "{err}");
    let backup = out.trim().to_owned();
    assert!(err.contains("backup verified"), "{err}");
    assert!(backup.ends_with(".db") && std::path::Path::new(&backup).exists(), "{backup}");
    let (_, out, _) = hub.cli(&["backup", "list", "--json"]).await;
    let listed: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["path"], backup.as_str());
    let events = hub.events("").await;
    assert!(events.iter().any(|e| e["kind"] == "backup.created"), "the backup is on the timeline");
    let metrics = reqwest::get(format!("{}/metrics", hub.url)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("\nmuster_last_backup_age_seconds "), "{metrics}");

    // A restore is refused while the hub runs.
    let (code, _, err) = restore(&hub, &backup).await;
    assert_ne!(code, 0);
    assert!(err.contains("stop the hub before restoring"), "{err}");

    // Stop the hub and break its database.
    assert_eq!(hub.terminate().await, Some(0));
    let db = hub.dir.path().join("muster.db");
    let mut f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    f.seek(SeekFrom::Start(4096)).unwrap();
    f.write_all(&[0xA5; 16 * 1024]).unwrap();
    f.sync_all().unwrap();
    drop(f);

    // A broken file is refused as a backup, and nothing is touched.
    let broken = path_str(&scratch.path().join("broken.db"));
    std::fs::copy(&db, &broken).unwrap();
    let before = std::fs::read(&db).unwrap();
    let (code, _, err) = restore(&hub, &broken).await;
    assert_ne!(code, 0);
    assert!(err.contains("restore refused"), "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), before, "a refused restore changes nothing");
    assert!(!hub.dir.path().join("muster.restoring").exists());

    let (code, out, err) = restore(&hub, &backup).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), path_str(&db));
    assert!(err.contains("integrity ok"), "{err}");
    assert!(err.contains(".before-restore-"), "the replaced database is kept: {err}");

    hub.restart().await;
    for id in &acknowledged {
        let (status, task) = hub.request(reqwest::Method::GET, &format!("/tasks/{id}"), None).await;
        assert_eq!(status, 200, "task {id} acknowledged before the backup is missing: {task}");
    }
    // The work goes on from the backup's state: every task ends up done.
    std::fs::write(&gate, b"").unwrap();
    hub.wait_until("every task to succeed after the restore", || async {
        (hub.get("/status").await["tasks"]["succeeded"] == 30).then_some(())
    })
    .await;
    drop(agent);
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_newest_backups_are_kept() {
    let hub = Hub::start_with(HubOpts { extra: &["--backup-keep", "2"], ..HubOpts::default() }).await;
    let mut made = Vec::new();
    for _ in 0..3 {
        let (code, out, err) = hub.cli(&["backup"]).await;
        assert_eq!(code, 0, "{err}");
        made.push(out.trim().to_owned());
    }
    let (_, out, _) = hub.cli(&["backup", "list", "--json"]).await;
    let listed: Vec<String> = serde_json::from_str::<Vec<Value>>(&out)
        .unwrap()
        .iter()
        .map(|b| b["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, [made[2].clone(), made[1].clone()], "newest first, the oldest removed");
    assert!(!std::path::Path::new(&made[0]).exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn check_finds_an_injected_orphan_and_repair_hands_it_back_to_the_queue() {
    let mut hub = Hub::start().await;
    let (code, out, _) = hub.cli(&["check"]).await;
    assert_eq!(code, 0);
    assert_eq!(out, "ok: the database's integrity check and every invariant pass\n");
    let id = hub.shell_task("echo rescued").await;
    assert_eq!(hub.terminate().await, Some(0));

    // A task left running under a lease held by an agent nobody registered,
    // good for another hour: without a repair it would sit there.
    let db = rusqlite::Connection::open(hub.dir.path().join("muster.db")).unwrap();
    let in_an_hour = muster_proto::parse_timestamp(&muster_proto::timestamp(muster_core::Millis(0))).unwrap().0
        + std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
        + 3_600_000;
    db.execute(
        "UPDATE tasks SET state = 'running', attempts = 1, epoch = 1, agent = 'ghost', lease_agent = 'ghost', \
         lease_epoch = 1, lease_expires_at = ?, started_at = ? WHERE id = ?",
        rusqlite::params![in_an_hour, in_an_hour - 3_600_000, id],
    )
    .unwrap();
    drop(db);
    hub.restart().await;

    let (code, out, err) = hub.cli(&["check"]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains(&format!("orphan     {id} is running under a lease held by ghost")), "{out}");
    assert!(err.contains("muster check --repair"), "{err}");

    let _agent = hub.agent("w", 1, &[]).await;
    let (code, out, err) = hub.cli(&["check", "--repair"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("repaired   {id}: reclaimed (Requeued), now queued")), "{out}");
    let task = hub.wait_state(&id, &["succeeded"]).await;
    assert_eq!(task["agent"], "w");
    assert_eq!(hub.output(&id).await, "rescued\n");
    let events = hub.events(&format!("task={id}")).await;
    assert!(events.iter().any(|e| e["kind"] == "task.reclaimed"), "{events:?}");
    assert!(hub.events("").await.iter().any(|e| e["kind"] == "db.repaired"));
    let (code, _, _) = hub.cli(&["check"]).await;
    assert_eq!(code, 0, "clean after the repair");
}
