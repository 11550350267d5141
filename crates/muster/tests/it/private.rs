//! What the hub writes stays its owner's: file modes whatever the umask,
//! and secrets kept out of everything a run sends.

use crate::harness::{Hub, HubOpts};
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Every file and directory under `dir` with its mode and whether it is a
/// directory. What vanishes while it is walked (a rotated log) is left out.
fn modes(dir: &Path) -> Vec<(String, u32, bool)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(path) = pending.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
        out.push((path.display().to_string(), meta.permissions().mode() & 0o777, meta.is_dir()));
        if meta.is_dir()
            && let Ok(entries) = std::fs::read_dir(&path)
        {
            pending.extend(entries.flatten().map(|e| e.path()));
        }
    }
    out
}

/// On main, under umask 000 `logs/` and `backups/` were 0777, the log and
/// `hub.lock` 0666, and the database, its WAL and backups 0644; an existing
/// 0755 data directory stayed 0755.
#[tokio::test(flavor = "multi_thread")]
async fn everything_the_hub_writes_is_private_whatever_the_umask_and_an_open_directory_is_tightened() {
    let dir = tempfile::tempdir().expect("a directory");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "left here by an operator").unwrap();
    std::fs::set_permissions(dir.path().join("notes.txt"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let opts = HubOpts { umask: Some(0), extra: &["--log-max-bytes", "1024", "--log-keep", "9"], ..HubOpts::default() };
    let mut hub = Hub::start_in(dir, opts).await;
    let _agent = hub.agent("w", 1, &[]).await;
    for _ in 0..3 {
        let id = hub.shell_task("echo private").await;
        hub.wait_state(&id, &["succeeded"]).await;
    }
    let (status, body) = hub.post("/admin/backups", json!({})).await;
    assert_eq!(status, 201, "{body}");
    let walked = modes(hub.dir.path());
    hub.terminate().await;
    let names: Vec<&str> = walked.iter().map(|(p, _, _)| p.rsplit('/').next().unwrap_or("")).collect();
    for expected in ["muster.db", "muster.db-wal", "hub.lock", "admin.token", "muster.log", "muster.log.1.gz"] {
        assert!(names.contains(&expected), "{expected} was written: {names:?}");
    }
    assert!(walked.iter().any(|(p, _, _)| p.contains("/backups/") && p.ends_with(".db")), "{walked:?}");
    for (path, mode, is_dir) in &walked {
        let want = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*mode, want, "{path} is {mode:o}");
    }
    let log = crate::logs::all_lines(&hub).join("\n");
    assert!(log.contains("other users could read files here"), "the tightening is logged");
}

/// On main a task token printed in two writes was stored in full, and so
/// was one passed to `muster ctl note`. Now no part of it reaches the
/// output, the timeline, a message, a question or a follow-up's prompt.
#[tokio::test(flavor = "multi_thread")]
async fn a_task_token_split_across_writes_or_sent_through_ctl_is_never_stored() {
    let hub = Hub::start().await;
    let _agent = hub.agent("w", 2, &[]).await;
    let bin = env!("CARGO_BIN_EXE_muster");
    let script = format!(
        "printf 'the token is %s' \"${{MUSTER_TASK_TOKEN:0:24}}\"; sleep 1; printf '%s and more\\n' \"${{MUSTER_TASK_TOKEN:24}}\"\n\
         {bin} ctl note \"a note with $MUSTER_TASK_TOKEN in it\"\n\
         {bin} ctl msg send --to task:$MUSTER_TASK_ID \"a message with $MUSTER_TASK_TOKEN\"\n\
         {bin} ctl ask \"may I use $MUSTER_TASK_TOKEN?\" --option yes --option \"$MUSTER_TASK_TOKEN\" --default yes --timeout 1s\n\
         {bin} ctl task add --runner shell \"echo follow-up with $MUSTER_TASK_TOKEN\"\n"
    );
    let id = hub.shell_task(&script).await;
    let task = hub.wait_state(&id, &["succeeded", "failed"]).await;
    assert_eq!(task["state"], "succeeded", "{task}");
    let out = hub.output(&id).await;
    assert!(out.contains("the token is [REDACTED] and more"), "{out}");
    assert_eq!(task["attempts_detail"][0]["output_incomplete"], false, "every piece held back was sent: {task}");
    let child = out.lines().last().expect("the follow-up's id").trim().to_owned();
    let child_task = hub.wait_state(&child, &["succeeded", "failed"]).await;

    let mut everything = vec![out.clone(), child_task["prompt"].to_string(), hub.output(&child).await];
    everything.extend(hub.events(&format!("task={id}")).await.iter().map(|e| e.to_string()));
    everything.push(hub.get(&format!("/messages?to=task:{id}")).await.to_string());
    everything.push(hub.get(&format!("/decisions?task={id}&state=all")).await.to_string());
    let text = everything.join("\n");
    assert!(!text.contains("mtt_"), "a task token was stored: {text}");
    for needle in ["a note with [REDACTED] in it", "a message with [REDACTED]", "may I use [REDACTED]?"] {
        assert!(text.contains(needle), "{needle:?} missing from {text}");
    }
    assert!(child_task["prompt"].as_str().unwrap().contains("follow-up with [REDACTED]"), "{child_task}");
}
