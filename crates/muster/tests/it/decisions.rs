//! Decisions: a person is asked, from a run or by an operator, and the task
//! waits, goes on with the answer, takes the default, or fails at the timeout.

use crate::harness::Hub;
use serde_json::{Value, json};

async fn open_decision(hub: &Hub, task: &str) -> Value {
    hub.wait_until(&format!("a decision on {task}"), || async {
        let open = hub.get(&format!("/decisions?task={task}")).await;
        open.as_array().and_then(|a| a.first().cloned())
    })
    .await
}

async fn decision_state(hub: &Hub, id: i64, state: &'static str) -> Value {
    hub.wait_until(&format!("decision #{id} to be {state}"), || async {
        let d = hub.get(&format!("/decisions/{id}")).await;
        (d["state"] == state).then_some(d)
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_asks_a_person_and_goes_on_with_the_answer() {
    let hub = Hub::start().await;
    let _agent = hub.agent("w", 1, &[]).await;
    let bin = env!("CARGO_BIN_EXE_muster");
    let script = format!(
        "answer=$({bin} ctl ask 'Deploy to staging now?' --option deploy --option hold) || exit $?\necho \"chose: $answer\""
    );
    let id = hub.shell_task(&script).await;
    let d = open_decision(&hub, &id).await;
    assert_eq!(d["options"], json!(["deploy", "hold"]));
    assert_eq!(d["raised_by"], format!("the run of {id}"));
    assert_eq!(hub.task(&id).await["state"], "running", "a run that waits keeps its slot: it is using it");

    let (code, out, err) = hub.cli(&["decisions"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Deploy to staging now?") && out.contains("deploy | hold"), "{out}");
    let n = d["id"].as_i64().unwrap().to_string();
    let (code, _, err) = hub.cli(&["decide", &n, "maybe"]).await;
    assert_eq!(code, 2, "not an option: {err}");
    assert!(err.contains("\"maybe\" is not an option") && err.contains("deploy, hold"), "{err}");
    let (code, _, err) = hub.cli(&["decide", "999", "deploy"]).await;
    assert_eq!(code, 3, "{err}");
    let (code, out, err) = hub.cli(&["decide", &n, "deploy", "--note", "staging is quiet"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), format!("#{n} answered: Deploy to staging now? -> deploy (by admin)"));
    let (code, _, err) = hub.cli(&["decide", &n, "hold"]).await;
    assert_eq!(code, 4, "answered once: {err}");

    let task = hub.wait_state(&id, &["succeeded", "failed"]).await;
    assert_eq!(task["state"], "succeeded", "{task}");
    let out = hub.output(&id).await;
    assert!(out.contains("chose: deploy"), "{out}");
    assert!(out.contains("note from admin: staging is quiet"), "{out}");
    let answered = hub.events(&format!("task={id}")).await.into_iter().find(|e| e["kind"] == "decision.answered");
    assert_eq!(answered.expect("decision.answered")["detail"], format!("#{n}: deploy (by admin): staging is quiet"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_that_parks_frees_its_slot_and_runs_again_with_the_answer() {
    let hub = Hub::start().await;
    let _agent = hub.agent("w", 1, &[]).await;
    let bin = env!("CARGO_BIN_EXE_muster");
    // First run: ask and stop. The run after the answer finds it.
    let script = format!(
        "if {bin} ctl decisions | grep -q ' -> '; then {bin} ctl decisions; exit 0; fi\n\
         {bin} ctl ask 'Which database?' --option postgres --option sqlite --park\necho stopping"
    );
    let id = hub.shell_task(&script).await;
    let task = hub.wait_state(&id, &["needs_decision"]).await;
    assert_eq!(task["attempts"], 0, "asking spends no attempt: {task}");
    assert_eq!(task["attempts_detail"][0]["outcome"], "parked");
    // The one slot is free while a person thinks: other work runs.
    let other = hub.shell_task("echo meanwhile").await;
    assert_eq!(hub.wait_state(&other, &["succeeded", "failed"]).await["state"], "succeeded");
    let (_, listed, _) = hub.cli(&["task", "list", "--state", "needs_decision"]).await;
    assert!(listed.contains(&id), "{listed}");

    let d = open_decision(&hub, &id).await;
    assert_eq!(d["park"], true);
    let n = d["id"].as_i64().unwrap().to_string();
    let (code, _, err) = hub.cli(&["decide", &n, "sqlite"]).await;
    assert_eq!(code, 0, "{err}");
    let task = hub.wait_state(&id, &["succeeded", "failed"]).await;
    assert_eq!(task["state"], "succeeded", "{task}");
    assert_eq!(task["attempts"], 1);
    let logs = hub.get(&format!("/tasks/{id}/logs?attempt=2")).await;
    let second: String = logs["chunks"].as_array().unwrap().iter().map(|c| c["data"].as_str().unwrap()).collect();
    assert!(second.contains(&format!("#{n} answered: Which database? -> sqlite (by admin)")), "{second}");
    let kinds: Vec<String> = hub
        .events(&format!("task={id}"))
        .await
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .filter(|k| k.starts_with("decision.") || k == "task.needs_decision" || k == "task.resumed")
        .collect();
    assert_eq!(kinds, ["decision.opened", "task.needs_decision", "decision.answered", "task.resumed"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operators_decision_holds_a_queued_task_and_its_default_applies_at_the_timeout() {
    let hub = Hub::start().await;
    let id = hub.shell_task("echo hello").await;
    let (code, out, err) = hub
        .cli(&[
            "decision",
            "add",
            &id,
            "Run it during the freeze?",
            "--option",
            "run",
            "--option",
            "skip",
            "--default",
            "run",
            "--timeout",
            "1s",
        ])
        .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("open: Run it during the freeze?"), "{out}");
    assert_eq!(hub.task(&id).await["state"], "needs_decision");
    let d = open_decision(&hub, &id).await;
    let d = decision_state(&hub, d["id"].as_i64().unwrap(), "auto_resolved").await;
    assert_eq!((&d["answer"], &d["answered_by"]), (&json!("run"), &json!("timeout")));
    assert_eq!(hub.task(&id).await["state"], "queued", "the default lets it go on");
    let _agent = hub.agent("w", 1, &[]).await;
    assert_eq!(hub.wait_state(&id, &["succeeded", "failed"]).await["state"], "succeeded");

    // Bad input is named.
    let (code, _, err) = hub.cli(&["decision", "add", &id, "Again?"]).await;
    assert_eq!(code, 4, "a finished task is not asked about: {err}");
    let queued = hub.add_task(json!({ "prompt": "true", "runner": "shell", "capabilities": ["gpu"] })).await;
    let (code, _, err) = hub.cli(&["decision", "add", &queued, "Q?", "--default", "maybe", "--timeout", "1m"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("default") && err.contains("yes, no"), "{err}");
    let (code, _, err) = hub.cli(&["decision", "add", &queued, "Q?", "--option", "only"]).await;
    assert_eq!(code, 2, "{err}");
    assert_eq!(hub.task(&queued).await["state"], "queued", "a refused decision changes nothing");
}

#[tokio::test(flavor = "multi_thread")]
async fn nobody_answering_in_time_without_a_default_fails_the_task() {
    let hub = Hub::start().await;
    let _agent = hub.agent("w", 1, &[]).await;
    let bin = env!("CARGO_BIN_EXE_muster");
    let script = format!(
        "{bin} ctl lock deploy:staging || exit $?\n{bin} ctl ask 'Roll back?' --timeout 1s\necho \"ask exited $?\"\nsleep 30"
    );
    let id = hub.add_task(json!({ "prompt": script, "runner": "shell", "max_attempts": 3 })).await;
    let task = hub.wait_state(&id, &["failed"]).await;
    assert_eq!(task["reason"], "decision_timeout", "{task}");
    assert_eq!(task["attempts"], 1, "no retry: asking again would wait again");
    let locks = hub.get("/locks").await;
    assert_eq!(locks["held"], json!([]), "its locks are let go");
    let timed_out = hub.events(&format!("task={id}")).await.into_iter().find(|e| e["kind"] == "decision.timed_out");
    assert!(timed_out.expect("decision.timed_out")["detail"].as_str().unwrap().contains("no default"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_waiting_for_an_answer_is_waiting_not_wedged() {
    let hub = Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let opts = crate::harness::AgentOpts { slots: 2, ..Default::default() };
    let toml = "quiet_after = \"100ms\"\nwedged_after = \"400ms\"\n";
    let _agent = hub.agent_with_config("w", dir.path(), toml, opts).await;
    let bin = env!("CARGO_BIN_EXE_muster");
    let id = hub.shell_task(&format!("{bin} ctl ask 'Merge it?'")).await;
    hub.wait_until("the run to show as waiting", || async {
        let events = hub.events(&format!("task={id}")).await;
        events
            .into_iter()
            .find(|e| e["kind"] == "task.live" && e["detail"].as_str().is_some_and(|d| d.starts_with("waiting")))
    })
    .await;
    // Longer than the wedge limit passes, measured by another run.
    let other = hub.shell_task("for i in 1 2 3 4 5 6 7 8 9 10; do echo $i; sleep 0.1; done").await;
    assert_eq!(hub.wait_state(&other, &["succeeded", "failed"]).await["state"], "succeeded");
    assert_eq!(hub.task(&id).await["state"], "running", "still waiting for a person, not killed as wedged");
    let d = open_decision(&hub, &id).await;
    let (code, _, err) = hub.cli(&["decide", &d["id"].to_string(), "yes"]).await;
    assert_eq!(code, 0, "{err}");
    let task = hub.wait_state(&id, &["succeeded", "failed"]).await;
    assert_eq!(task["state"], "succeeded", "{task}");
    assert_eq!(task["attempts"], 1, "one run, never killed as wedged and retried: {task}");
    assert_eq!(hub.output(&id).await.trim_end().lines().last(), Some("yes"));
    let asked = hub.get(&format!("/decisions?state=all&task={id}")).await;
    assert_eq!(asked.as_array().map(Vec::len), Some(1), "asked once: {asked}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_tasks_changing_the_same_file_raise_a_conflict_and_the_lower_priority_one_waits() {
    let hub = Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let repo = crate::workspaces::repository(dir.path());
    let toml = format!(
        "repos_root = {:?}\n\n[repos]\nweb = {:?}\n",
        crate::harness::path_str(dir.path()),
        crate::harness::path_str(&repo)
    );
    let opts = crate::harness::AgentOpts { slots: 2, ..Default::default() };
    let _agent = hub.agent_with_config("coder", dir.path(), &toml, opts).await;
    let gate = |name: &str| crate::harness::path_str(&dir.path().join(name));
    let edit = |line: &str, gate: &str| {
        format!("echo {line} >> README.md\nwhile [ ! -e {gate} ]; do sleep 0.05; done\necho done")
    };
    let a = hub
        .add_task(
            json!({ "prompt": edit("a", &gate("release-a")), "runner": "shell", "repo": "web", "priority": "high" }),
        )
        .await;
    hub.wait_state(&a, &["running"]).await;
    let b = hub.add_task(json!({ "prompt": edit("b", &gate("release-b")), "runner": "shell", "repo": "web" })).await;

    let conflict = hub
        .wait_until("a conflict", || async { hub.get("/conflicts").await.as_array().and_then(|c| c.first().cloned()) })
        .await;
    assert_eq!((&conflict["winner"], &conflict["loser"]), (&json!(a), &json!(b)), "{conflict}");
    assert_eq!(conflict["files"], json!(["README.md"]));
    assert_eq!(conflict["repo"], "web");
    let task = hub.wait_state(&b, &["needs_decision"]).await;
    assert_eq!(task["attempts"], 0, "the paused run's attempt is given back: {task}");
    assert_eq!(hub.task(&a).await["state"], "running", "the higher-priority task goes on");
    let (code, out, _) = hub.cli(&["conflicts"]).await;
    assert_eq!(code, 0);
    assert!(out.contains(&format!("{a}  {b}")) && out.contains("README.md") && out.contains("open"), "{out}");

    std::fs::write(dir.path().join("release-b"), "").unwrap();
    let decision = conflict["decision"].to_string();
    let (code, _, err) = hub.cli(&["decide", &decision, "wait"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(hub.task(&b).await["state"], "needs_decision", "it waits until the other has ended");
    std::fs::write(dir.path().join("release-a"), "").unwrap();
    assert_eq!(hub.wait_state(&a, &["succeeded", "failed"]).await["state"], "succeeded");
    let task = hub.wait_state(&b, &["succeeded", "failed"]).await;
    assert_eq!(task["state"], "succeeded", "then it runs again: {task}");
    // Waited for: its second run started after the first task had ended.
    let seq_of = |events: &[serde_json::Value], kind: &str| -> Vec<i64> {
        events.iter().filter(|e| e["kind"] == kind).map(|e| e["seq"].as_i64().expect("a seq")).collect()
    };
    let a_ended = seq_of(&hub.events(&format!("task={a}")).await, "task.succeeded");
    let b_started = seq_of(&hub.events(&format!("task={b}")).await, "task.started");
    assert_eq!((a_ended.len(), b_started.len()), (1, 2), "{a_ended:?} {b_started:?}");
    assert!(b_started[1] > a_ended[0], "b ran again before a ended: {b_started:?} {a_ended:?}");
    let conflicts = hub.get("/conflicts").await;
    assert_eq!(conflicts.as_array().map(Vec::len), Some(1), "one conflict, decided once: {conflicts}");
    assert_eq!(conflicts[0]["resolution"], "wait");
    let detected = hub.events(&format!("task={b}")).await.into_iter().find(|e| e["kind"] == "conflict.detected");
    assert!(detected.expect("conflict.detected")["detail"].as_str().unwrap().contains("README.md"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_check_that_passed_and_now_fails_is_a_regression_naming_the_task_and_commit() {
    let hub = Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let repo = crate::workspaces::repository(dir.path());
    let _agent = crate::workspaces::agent_with_repo(&hub, dir.path(), &repo, &["shell"], Vec::new()).await;
    let check = "readme=sh -c '! grep -q broken README.md'";
    let submit = |prompt: &str| json!({ "prompt": prompt, "runner": "shell", "repo": "web", "auto_commit": true, "max_attempts": 1, "checks": [check] });
    let good = hub.add_task(submit("echo fine > NOTES.md")).await;
    let task = hub.wait_state(&good, &["succeeded", "failed"]).await;
    assert_eq!(task["state"], "succeeded", "{task}");
    assert_eq!(task["checks"], json!(["readme=sh -c '! grep -q broken README.md'"]));
    let c = &task["attempts_detail"][0]["checks"][0];
    assert_eq!((&c["name"], &c["passed"], &c["exit_code"]), (&json!("readme"), &json!(true), &json!(0)), "{c}");
    let good_head = task["attempts_detail"][0]["workspace"]["head"].clone();

    let bad = hub.add_task(submit("echo broken >> README.md")).await;
    let task = hub.wait_state(&bad, &["succeeded", "failed"]).await;
    assert_eq!((&task["state"], &task["reason"]), (&json!("failed"), &json!("checks_failed: readme")), "{task}");
    let bad_head = task["attempts_detail"][0]["workspace"]["head"].clone();
    assert_ne!(bad_head, good_head);

    let regressions = hub.get("/regressions").await;
    let r = &regressions[0];
    assert_eq!((&r["repo"], &r["check"]), (&json!("web"), &json!("readme")), "{regressions}");
    assert_eq!((&r["task"], &r["commit"]), (&json!(bad), &bad_head));
    assert_eq!((&r["last_passed_task"], &r["last_passed_commit"]), (&json!(good), &good_head));
    let (code, out, _) = hub.cli(&["regressions"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("readme") && out.contains(&bad) && out.contains(&good), "{out}");
    let (_, shown, _) = hub.cli(&["task", "show", &bad]).await;
    assert!(shown.contains("check readme FAILED (exit code 1)"), "{shown}");
    let event = hub.events(&format!("task={bad}")).await.into_iter().find(|e| e["kind"] == "regression.detected");
    assert!(event.expect("regression.detected")["detail"].as_str().unwrap().starts_with("readme on web: passed for"));

    // A check is run as its argument list: a bad one is refused at submit, naming it.
    let (status, body) =
        hub.post("/tasks", json!({ "prompt": "x", "runner": "shell", "checks": ["sh -c 'oops"] })).await;
    assert_eq!((status, &body["field"]), (400, &json!("checks")), "{body}");
}
