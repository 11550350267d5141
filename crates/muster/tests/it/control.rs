//! Operator control: pausing all dispatch, and draining one agent.

use crate::harness::{Hub, PATIENCE, path_str};
use serde_json::Value;

fn seq_of(events: &[Value], pred: impl Fn(&Value) -> bool) -> Vec<i64> {
    events.iter().filter(|e| pred(e)).map(|e| e["seq"].as_i64().expect("a seq")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_hub_hands_out_nothing_until_resumed_even_across_a_restart() {
    let mut hub = Hub::start().await;
    let agent = hub.agent("w", 2, &[]).await;
    let (code, _, err) = hub.cli(&["pause"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("dispatch paused"), "{err}");
    let id = hub.shell_task("echo after the pause").await;
    let (_, out, _) = hub.cli(&["status"]).await;
    assert!(out.contains("DISPATCH PAUSED (muster resume)"), "{out}");

    // Persisted: a restarted hub is still paused.
    assert_eq!(hub.terminate().await, Some(0));
    hub.restart().await;
    hub.wait_connected("w").await;
    let status = hub.get("/status").await;
    assert_eq!(status["dispatch_paused"], true);
    assert_eq!(hub.task(&id).await["state"], "queued");

    let (code, _, err) = hub.cli(&["resume"]).await;
    assert_eq!(code, 0, "{err}");
    hub.wait_state(&id, &["succeeded"]).await;
    let events = hub.events("").await;
    let resumed = seq_of(&events, |e| e["kind"] == "config.changed" && e["detail"] == "dispatch.paused=false by admin");
    let assigned = seq_of(&events, |e| e["kind"] == "task.assigned" && e["task"] == id.as_str());
    assert_eq!(resumed.len(), 1);
    assert!(assigned.iter().all(|a| *a > resumed[0]), "assigned while paused: {assigned:?} vs {resumed:?}");
    drop(agent);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_drained_agent_finishes_its_run_takes_nothing_new_and_stops() {
    let hub = Hub::start().await;
    let mut agent = hub.agent("w", 1, &[]).await;
    let scratch = tempfile::tempdir().unwrap();
    let gate = path_str(&scratch.path().join("gate"));
    let running = hub.shell_task(&format!("while [ ! -e '{gate}' ]; do sleep 0.05; done; echo finished")).await;
    hub.wait_state(&running, &["running"]).await;
    let waiting = hub.shell_task("echo never here").await;

    let (code, _, err) = hub.cli(&["agent", "drain", "w"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("agent w is draining"), "{err}");
    std::fs::write(&gate, b"").unwrap();
    assert_eq!(hub.wait_state(&running, &["succeeded"]).await["agent"], "w");

    let process = agent.process.as_mut().unwrap();
    let status = tokio::time::timeout(PATIENCE, process.wait()).await.expect("the agent stops").unwrap();
    assert_eq!(status.code(), Some(0), "a drained agent exits cleanly");
    let events = hub.events(&format!("task={waiting}")).await;
    assert!(events.iter().all(|e| e["kind"] != "task.assigned"), "the drained agent took new work: {events:?}");

    let (code, _, err) = hub.cli(&["agent", "drain", "w"]).await;
    assert_eq!(code, 4, "an agent that is not connected cannot drain: {err}");
}

/// Agent `w` with the shell runner and a `ghost` runner whose program does not exist.
async fn ghost_agent(hub: &Hub) -> (muster_agent::process::ProcessGroup, tempfile::TempDir) {
    let token = hub.add_agent("w", &[]).await;
    let scratch = tempfile::tempdir().expect("a scratch directory");
    let config = scratch.path().join("agent.toml");
    std::fs::write(&config, "enable = [\"shell\"]\n[runners.ghost]\nargv = [\"no-such-program-for-muster\"]\n")
        .expect("config written");
    let workdir = path_str(scratch.path());
    let mut cmd = crate::harness::muster_command(&[
        "agent",
        "run",
        "--hub",
        &hub.url,
        "--config",
        &path_str(&config),
        "--workdir",
        &workdir,
    ]);
    cmd.env("MUSTER_TOKEN", &token);
    let mut agent = muster_agent::process::ProcessGroup::spawn(&mut cmd).expect("the agent starts");
    drop(crate::harness::forward_stderr(&mut agent, "agent w", "\u{0}never"));
    hub.wait_connected("w").await;
    (agent, scratch)
}

#[tokio::test(flavor = "multi_thread")]
async fn diagnose_names_each_problem_with_its_next_step() {
    let hub = Hub::start().await;
    let _agent = ghost_agent(&hub).await;
    hub.add_agent("gone", &[]).await;
    hub.add_task(serde_json::json!({ "prompt": "anything", "runner": "ghost" })).await;
    let (code, _, _) = hub.cli(&["pause"]).await;
    assert_eq!(code, 0);

    let (code, out, err) = hub.cli(&["diagnose"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("problems found"), "{err}");
    for (line, next) in [
        ("- [dispatch] dispatch is paused: no task is handed out", "    next: muster resume"),
        // Registered and never started: a note, with the way out.
        (
            "- [agent] agent gone was registered",
            "    next: start it with its token (muster agent run --token …), or muster agent remove gone",
        ),
        (
            "- [agent] agent w cannot run ghost: no-such-program-for-muster is not on PATH",
            "    next: on that machine: muster doctor",
        ),
        (
            "- [queue] 1 queued tasks need runner ghost, which no connected agent offers",
            "    next: start an agent with",
        ),
        ("- [backup] there is no backup and scheduled backups are off", "    next: muster backup"),
    ] {
        let at = out.find(line).unwrap_or_else(|| panic!("{line:?} missing from:\n{out}"));
        assert!(
            out[at..].lines().nth(1).is_some_and(|l| l.starts_with(next)),
            "{next:?} should follow {line:?}:\n{out}"
        );
    }
    assert!(out.contains("agents     1 of 2 online"), "{out}");

    let (_, out, _) = hub.cli(&["diagnose", "--json"]).await;
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["ready"], true);
    assert!(report["recent_log"].as_array().is_some_and(|l| !l.is_empty()), "the pause is a warning in the log");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runner_whose_program_is_missing_is_marked_unavailable_and_never_dispatched_to() {
    let hub = Hub::start().await;
    let _agent = ghost_agent(&hub).await;

    let ghost = hub.add_task(serde_json::json!({ "prompt": "anything", "runner": "ghost" })).await;
    let shell = hub.shell_task("echo fine").await;
    hub.wait_state(&shell, &["succeeded"]).await;

    let (_, out, _) = hub.cli(&["agent", "list"]).await;
    assert!(out.contains("ghost: no-such-program-for-muster is not on PATH"), "{out}");
    let agents = hub.get("/agents/w").await;
    assert_eq!(agents["runners"], serde_json::json!(["shell"]), "only the runner that passed is dispatched to");
    let doctor = hub.get("/agents/w/doctor").await;
    let runners = doctor["runners"].as_array().unwrap();
    let ghost_report = runners.iter().find(|r| r["name"] == "ghost").unwrap();
    assert_eq!(ghost_report["ok"], false);
    assert_eq!(runners.iter().find(|r| r["name"] == "shell").unwrap()["ok"], true);
    assert_eq!(doctor["workdir_writable"], true);

    // The agent was free the whole time; the ghost task was never handed out.
    let task = hub.task(&ghost).await;
    assert_eq!(task["state"], "queued");
    let events = hub.events(&format!("task={ghost}")).await;
    assert!(events.iter().all(|e| e["kind"] != "task.assigned"), "{events:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn operators_skip_reset_and_move_single_tasks_and_the_timeline_says_who() {
    let hub = crate::harness::Hub::start().await;
    // No agent offers `gpu`: these wait in the queue.
    let body = |prompt: &str| serde_json::json!({ "prompt": prompt, "runner": "shell", "capabilities": ["gpu"] });
    let first = hub.add_task(body("echo first")).await;
    let second = hub.add_task(body("echo second")).await;

    let (code, _, err) = hub.cli(&["task", "move", &second, "--priority", "urgent"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("now urgent"), "{err}");
    let (code, _, err) = hub.cli(&["task", "move", &second, "--priority", "asap"]).await;
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = hub.cli(&["task", "skip", &first, "--reason", "done by hand"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(hub.task(&first).await["state"], "skipped");
    let (code, _, err) = hub.cli(&["task", "skip", &first, "--reason", "again"]).await;
    assert_eq!(code, 4, "skipping a skipped task is a conflict: {err}");
    let (code, _, err) = hub.cli(&["task", "reset", &first]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        (&hub.task(&first).await["state"], &hub.task(&first).await["attempts"]),
        (&serde_json::json!("queued"), &serde_json::json!(0))
    );
    let (status, bad) = hub.post(&format!("/tasks/{first}/skip"), serde_json::json!({ "why": "x" })).await;
    assert_eq!(status, 400, "{bad}");

    let events = hub.events("").await;
    let said: Vec<(String, String)> = events
        .iter()
        .filter(|e| matches!(e["kind"].as_str(), Some("task.moved" | "task.skipped" | "task.reset")))
        .map(|e| (e["kind"].as_str().unwrap().to_owned(), e["detail"].as_str().unwrap_or_default().to_owned()))
        .collect();
    assert_eq!(
        said,
        [
            ("task.moved".to_owned(), "normal -> urgent (by admin)".to_owned()),
            ("task.skipped".to_owned(), "done by hand (by admin)".to_owned()),
            ("task.reset".to_owned(), "attempts cleared (by admin)".to_owned()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_approval_gate_holds_a_task_until_a_person_approves_it() {
    let hub = crate::harness::Hub::start().await;
    let _agent = hub.agent("w", 1, &[]).await;
    let (code, id, err) = hub.cli(&["task", "add", "--runner", "shell", "--requires-approval", "echo deployed"]).await;
    assert_eq!(code, 0, "{err}");
    let id = id.trim().to_owned();
    // A task queued after it runs first: the gated one is not in the queue.
    let after = hub.shell_task("echo after").await;
    hub.wait_state(&after, &["succeeded"]).await;
    assert_eq!(hub.task(&id).await["state"], "pending_approval");
    let (_, listed, _) = hub.cli(&["task", "list", "--state", "pending_approval"]).await;
    assert!(listed.contains(&id), "{listed}");

    let (code, _, err) = hub.cli(&["approve", &id]).await;
    assert_eq!(code, 0, "{err}");
    hub.wait_state(&id, &["succeeded"]).await;
    let (code, _, err) = hub.cli(&["approve", &id]).await;
    assert_eq!(code, 4, "{err}");
    let approved = hub.events(&format!("task={id}")).await.into_iter().find(|e| e["kind"] == "task.approved");
    assert_eq!(approved.expect("an approval event")["detail"], "by admin");

    // A runner can always need approval; a rejection ends the task.
    let (code, _, err) = hub.cli(&["config", "set", "approval.runners=shell"]).await;
    assert_eq!(code, 0, "{err}");
    let gated = hub.shell_task("echo never").await;
    assert_eq!(hub.task(&gated).await["state"], "pending_approval");
    let (code, _, err) = hub.cli(&["reject", &gated, "--reason", "wrong branch"]).await;
    assert_eq!(code, 0, "{err}");
    let task = hub.task(&gated).await;
    assert_eq!(
        (&task["state"], &task["reason"]),
        (&serde_json::json!("cancelled"), &serde_json::json!("rejected: wrong branch"))
    );
    let (code, _, err) = hub.cli(&["config", "set", "approval.runners=no such runner"]).await;
    assert_eq!(code, 2, "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dependencies_run_in_order_and_a_failure_propagates_by_policy() {
    use serde_json::json;
    let hub = crate::harness::Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let _agent = hub.agent("w", 2, &[]).await;
    let log = dir.path().join("order.log");
    let log = crate::harness::path_str(&log);
    let first = hub.add_task(json!({ "prompt": format!("echo first >> {log}"), "runner": "shell" })).await;
    let (code, second, err) =
        hub.cli(&["task", "add", "--runner", "shell", "--depends-on", &first, &format!("echo second >> {log}")]).await;
    assert_eq!(code, 0, "{err}");
    let second = second.trim().to_owned();
    hub.wait_state(&second, &["succeeded"]).await;
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "first\nsecond\n", "the dependent ran after");
    let (_, shown, _) = hub.cli(&["task", "show", &second]).await;
    assert!(shown.contains(&format!("depends on    {first} (on failure: fail)")), "{shown}");

    let broken = hub.add_task(json!({ "prompt": "exit 3", "runner": "shell", "max_attempts": 1 })).await;
    let fails = hub.add_task(json!({ "prompt": "echo never", "runner": "shell", "depends_on": [broken] })).await;
    let skips = hub
        .add_task(json!({ "prompt": "echo never", "runner": "shell", "depends_on": [broken], "on_dependency_failure": "skip" }))
        .await;
    let task = hub.wait_state(&fails, &["failed"]).await;
    assert_eq!(task["reason"], format!("dependency {broken} did not succeed"));
    let task = hub.wait_state(&skips, &["skipped"]).await;
    assert_eq!(task["reason"], format!("skipped: dependency {broken} did not succeed"));
    assert_eq!(task["attempts"], 0, "nothing ran");

    let (status, bad) = hub
        .post("/tasks", json!({ "prompt": "x", "runner": "shell", "depends_on": ["t_00000000000000000000000000"] }))
        .await;
    assert_eq!((status, &bad["field"]), (400, &json!("depends_on")), "{bad}");
    let (status, bad) = hub.post("/tasks", json!({ "prompt": "x", "runner": "shell", "depends_on": ["nope"] })).await;
    assert_eq!((status, &bad["field"]), (400, &json!("depends_on")), "{bad}");
    let (status, bad) = hub
        .post(
            "/tasks",
            json!({ "prompt": "x", "runner": "shell", "depends_on": [first], "on_dependency_failure": "maybe" }),
        )
        .await;
    assert_eq!((status, &bad["field"]), (400, &json!("on_dependency_failure")), "{bad}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_acts_for_its_own_task_with_a_task_token_that_ends_with_its_lease() {
    use serde_json::json;
    let hub = crate::harness::Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let _agent = hub.agent("w", 1, &[]).await;
    let kept = crate::harness::path_str(&dir.path().join("token"));
    let bin = env!("CARGO_BIN_EXE_muster");
    let script = format!(
        "printf '%s' \"$MUSTER_TASK_TOKEN\" > {kept}\n{bin} ctl note 'halfway there'\necho \"token: $MUSTER_TASK_TOKEN\""
    );
    let id = hub.add_task(json!({ "prompt": script, "runner": "shell" })).await;
    let task = hub.wait_state(&id, &["succeeded", "failed"]).await;
    assert_eq!(task["state"], "succeeded", "{}\n{}", task["reason"], hub.output(&id).await);
    let note = hub.events(&format!("task={id}")).await.into_iter().find(|e| e["kind"] == "task.note");
    assert_eq!(note.expect("a task.note")["detail"], "halfway there");
    assert!(hub.output(&id).await.contains("token: [REDACTED]"), "the task token never reaches the output");

    // The run is over: its token is no longer good, and never was for operator routes.
    let token = std::fs::read_to_string(dir.path().join("token")).unwrap();
    assert!(token.starts_with("mtt_"), "{token}");
    let client = reqwest::Client::new();
    let answer = client
        .post(format!("{}/api/v1/ctl/note", hub.url))
        .bearer_auth(&token)
        .json(&json!({ "text": "too late" }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 401);
    assert!(answer.text().await.unwrap().contains("has expired"));
    let (status, _) = hub.request_as(&token, reqwest::Method::GET, "/tasks", None).await;
    assert_eq!(status, 401, "an expired task token is refused everywhere");
    let (status, bad) = hub.request(reqwest::Method::POST, "/ctl/note", Some(json!({ "text": "x" }))).await;
    assert_eq!(status, 403, "the admin token is not a task token: {bad}");
    let (code, _, err) = hub.cli(&["ctl", "note", "outside"]).await;
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("MUSTER_TASK_TOKEN is not set"), "{err}");
}

/// A shell line that waits until `path` exists: the two runs below meet on files.
fn wait_for_file(path: &str) -> String {
    format!("while [ ! -e {path} ]; do sleep 0.02; done")
}

#[tokio::test(flavor = "multi_thread")]
async fn two_runs_taking_locks_in_opposite_orders_deadlock_and_exactly_one_is_refused() {
    use serde_json::json;
    let hub =
        crate::harness::Hub::start_with(crate::harness::HubOpts { alert_interval: "100ms", ..Default::default() })
            .await;
    let dir = tempfile::tempdir().unwrap();
    let _agent = hub.agent("w", 2, &[]).await;
    let bin = env!("CARGO_BIN_EXE_muster");
    let at = |name: &str| crate::harness::path_str(&dir.path().join(name));
    // Each takes its first lock, waits until the other has its own, then waits for the other's.
    let run = |first: &str, second: &str, mine: &str, theirs: &str| {
        format!(
            "{bin} ctl lock {first} || exit $?\ntouch {}\n{}\n{bin} ctl lock {second} --wait 60s || exit $?\necho got both",
            at(mine),
            wait_for_file(&at(theirs)),
        )
    };
    let a =
        hub.add_task(json!({ "prompt": run("repo:web/src/api.rs", "branch:main", "a", "b"), "runner": "shell" })).await;
    let b =
        hub.add_task(json!({ "prompt": run("branch:main", "repo:web/src/api.rs", "b", "a"), "runner": "shell" })).await;
    // The refused run exits 8 and its locks go with it; the other takes both,
    // and the refused task's retry then runs alone.
    let ta = hub.wait_state(&a, &["succeeded", "failed"]).await;
    let tb = hub.wait_state(&b, &["succeeded", "failed"]).await;
    assert_eq!((&ta["state"], &tb["state"]), (&json!("succeeded"), &json!("succeeded")), "{ta}\n{tb}");
    let mut attempts = [ta["attempts"].as_u64().unwrap(), tb["attempts"].as_u64().unwrap()];
    attempts.sort();
    assert_eq!(attempts, [1, 2], "exactly one is refused: {ta}\n{tb}");
    let (refused, refused_task) = if ta["attempts"] == 2 { (&a, &ta) } else { (&b, &tb) };
    assert_eq!(refused_task["attempts_detail"][0]["reason"], "exit code 8", "ctl lock exits 8 on a deadlock");
    let logs = hub.get(&format!("/tasks/{refused}/logs?attempt=1")).await;
    let refused_out: String = logs["chunks"].as_array().unwrap().iter().map(|c| c["data"].as_str().unwrap()).collect();
    assert!(refused_out.contains("deadlock"), "the refused run is told why: {refused_out}");
    let deadlock = hub.events("").await.into_iter().find(|e| e["kind"] == "lock.deadlock").expect("a lock.deadlock");
    assert_eq!(deadlock["task"].as_str(), Some(refused.as_str()));
    let detail = deadlock["detail"].as_str().unwrap();
    assert!(detail.contains(&a) && detail.contains(&b), "the cycle names both tasks: {detail}");
    assert!(detail.contains("branch:main") && detail.contains("repo:web/src/api.rs"), "and both locks: {detail}");
    let alert = hub
        .wait_until("the deadlock alert to fire", || async {
            let alerts = hub.get("/alerts").await;
            let a = alerts.as_array()?.iter().find(|a| a["rule"] == "deadlock")?.clone();
            (a["state"] == "firing").then_some(a)
        })
        .await;
    assert!(alert["detail"].as_str().unwrap().contains("branch:main"), "{alert}");
    let (_, locks, _) = hub.cli(&["locks", "--json"]).await;
    assert_eq!(serde_json::from_str::<serde_json::Value>(&locks).unwrap(), json!({ "held": [], "waiting": [] }));
    let (code, out, err) = hub.cli(&["deadlocks"]).await;
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    assert!(err.contains("no task waits"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn operators_see_locks_and_waits_and_force_them_free() {
    use serde_json::json;
    let hub = crate::harness::Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let _agent = hub.agent("w", 3, &[]).await;
    let bin = env!("CARGO_BIN_EXE_muster");
    let at = |name: &str| crate::harness::path_str(&dir.path().join(name));
    let holder = hub
        .add_task(json!({
            "prompt": format!("{bin} ctl lock deploy:staging || exit $?\n{bin} ctl lock docs --shared || exit $?\n{}", wait_for_file(&at("done"))),
            "runner": "shell",
        }))
        .await;
    hub.wait_until("the holder to hold both locks", || async {
        (hub.get("/locks").await["held"].as_array().unwrap().len() == 2).then_some(())
    })
    .await;
    let reader = hub
        .add_task(json!({ "prompt": format!("{bin} ctl lock docs --shared && echo shared ok"), "runner": "shell" }))
        .await;
    assert_eq!(hub.wait_state(&reader, &["succeeded", "failed"]).await["state"], "succeeded", "shared locks share");
    let busy = hub.add_task(json!({ "prompt": format!("{bin} ctl lock deploy:staging"), "runner": "shell" })).await;
    let task = hub.wait_state(&busy, &["succeeded", "failed"]).await;
    assert!(task["reason"].as_str().unwrap().contains("exit code 4"), "busy without --wait: exit 4: {task}");
    assert!(hub.output(&busy).await.contains(&format!("deploy:staging is held by {holder}")));
    let waiter = hub
        .add_task(
            json!({ "prompt": format!("{bin} ctl lock deploy:staging --wait 2m && echo finally"), "runner": "shell" }),
        )
        .await;
    let graph = hub
        .wait_until("the waiter to wait", || async {
            let view = hub.get("/locks").await;
            (!view["waiting"].as_array().unwrap().is_empty()).then_some(view)
        })
        .await;
    let waiting = hub.events(&format!("task={waiter}")).await.into_iter().find(|e| e["kind"] == "lock.waiting");
    assert_eq!(waiting.expect("a lock.waiting")["detail"], format!("deploy:staging (exclusive), held by {holder}"));
    assert_eq!(graph["waiting"][0]["task"].as_str(), Some(waiter.as_str()));
    assert_eq!(graph["waiting"][0]["waits_for"], json!([holder]));
    let (code, out, _) = hub.cli(&["locks"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("deploy:staging") && out.contains("waiting") && out.contains("shared"), "{out}");
    let (_, out, _) = hub.cli(&["deadlocks"]).await;
    assert!(out.contains(&format!("{waiter} waits for deploy:staging (exclusive), held by {holder}")), "{out}");

    let (code, _, err) = hub.cli(&["unlock", "--all"]).await;
    assert_eq!(code, 2, "--all needs --yes: {err}");
    let (code, _, err) = hub.cli(&["unlock", "nothing-held"]).await;
    assert_eq!(code, 3, "{err}");
    let (code, out, err) = hub.cli(&["unlock", "deploy:staging"]).await;
    assert_eq!((code, out.trim()), (0, "released 1 lock"), "{err}");
    assert_eq!(hub.wait_state(&waiter, &["succeeded", "failed"]).await["state"], "succeeded", "the waiter gets it");
    let forced = hub.events("").await.into_iter().find(|e| e["kind"] == "lock.forced").expect("a lock.forced");
    assert!(forced["detail"].as_str().unwrap().contains(&format!("deploy:staging taken from {holder} (by ")));

    let (code, out, _) = hub.cli(&["unlock", "--all", "--yes"]).await;
    assert_eq!((code, out.trim()), (0, "released 1 lock"), "the holder's shared docs lock");
    std::fs::write(dir.path().join("done"), "").unwrap();
    assert_eq!(hub.wait_state(&holder, &["succeeded", "failed"]).await["state"], "succeeded");
    let (_, locks, _) = hub.cli(&["locks", "--json"]).await;
    assert_eq!(serde_json::from_str::<serde_json::Value>(&locks).unwrap(), json!({ "held": [], "waiting": [] }));
}
