//! Messages: mailboxes held until their agent connects, a task's mailbox
//! read from inside its run, and channels with history and threads.

use crate::harness::Hub;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn mail_for_an_offline_agent_arrives_when_it_connects() {
    let hub = Hub::start().await;
    let token = hub.add_agent("w", &[]).await;
    let (code, out, err) = hub.cli(&["msg", "send", "--to", "agent:w", "rotate your credentials tonight"]).await;
    assert_eq!(code, 0, "{err}");
    let id: i64 = out.trim().trim_start_matches('#').parse().unwrap();
    let (_, mailbox, _) = hub.cli(&["msg", "read", "--to", "agent:w"]).await;
    assert!(mailbox.contains("[waiting]: rotate your credentials tonight"), "held while it is offline: {mailbox}");

    let _agent = hub.spawn_agent(("w", &token), 1, &[]);
    let delivered = hub
        .wait_until("the mail to be delivered", || async {
            hub.events("agent=w").await.into_iter().find(|e| e["kind"] == "message.delivered")
        })
        .await;
    assert_eq!(delivered["detail"], format!("#{id} to agent:w"));
    let (_, mailbox, _) = hub.cli(&["msg", "read", "--to", "agent:w", "--json"]).await;
    let m: serde_json::Value = serde_json::from_str(mailbox.lines().next().unwrap()).unwrap();
    assert!(m["delivered_at"].is_string(), "{m}");
    // While it is connected, mail goes to it at once.
    let (_, out, _) = hub.cli(&["msg", "send", "--to", "agent:w", "--reply-to", &id.to_string(), "done?"]).await;
    let second = out.trim().to_owned();
    hub.wait_until("the second to be delivered", || async {
        hub.events("agent=w").await.into_iter().find(|e| e["detail"] == format!("{second} to agent:w"))
    })
    .await;
    let (code, _, err) = hub.cli(&["msg", "send", "--to", "agent:nobody", "x"]).await;
    assert_eq!(code, 3, "{err}");
    let (code, _, err) = hub.cli(&["msg", "send", "--to", "robot:w", "x"]).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("agent:NAME, task:ID or channel:NAME"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_reads_its_mailbox_and_posts_to_a_channel_with_threads() {
    let hub = Hub::start().await;
    let _agent = hub.agent("w", 1, &[]).await;
    let (code, _, err) = hub.cli(&["channel", "create", "deploys", "--description", "who deploys what"]).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = hub.cli(&["channel", "create", "deploys"]).await;
    assert_eq!(code, 4, "{err}");
    let (code, out, _) = hub.cli(&["channel", "post", "deploys", "staging is frozen until 18:00"]).await;
    assert_eq!(code, 0);
    let root = out.trim().trim_start_matches('#').to_owned();

    let bin = env!("CARGO_BIN_EXE_muster");
    let script = format!(
        "{bin} ctl msg read --wait 60s\n{bin} ctl msg send --to channel:deploys --reply-to {root} 'deploying after the freeze'"
    );
    let id = hub.shell_task(&script).await;
    hub.wait_state(&id, &["running"]).await;
    let (code, _, err) = hub.cli(&["msg", "send", "--to", &format!("task:{id}"), "go ahead at 18:05"]).await;
    assert_eq!(code, 0, "{err}");
    let task = hub.wait_state(&id, &["succeeded", "failed"]).await;
    assert_eq!(task["state"], "succeeded", "{task}");
    let out = hub.output(&id).await;
    assert!(out.contains(" admin ") && out.contains(": go ahead at 18:05"), "the run read its mail: {out}");
    let (_, mailbox, _) = hub.cli(&["msg", "read", "--to", &format!("task:{id}")]).await;
    assert!(mailbox.contains("[read]"), "{mailbox}");

    let (_, tail, _) = hub.cli(&["channel", "tail", "deploys", "--thread", &root]).await;
    let lines: Vec<&str> = tail.lines().collect();
    assert_eq!(lines.len(), 2, "{tail}");
    assert!(lines[0].contains("admin: staging is frozen"), "{tail}");
    assert!(lines[1].contains(&format!("task:{id} (in #{root}): deploying after the freeze")), "{tail}");
    let (_, listed, _) = hub.cli(&["channel", "list"]).await;
    assert!(listed.contains("deploys") && listed.contains("who deploys what"), "{listed}");
    let (status, body) = hub.post("/messages", json!({ "to": "channel:nowhere", "body": "x" })).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = hub.post("/messages", json!({ "to": "channel:deploys", "body": "" })).await;
    assert_eq!((status, &body["field"]), (400, &json!("body")), "{body}");
}

/// On main a run's tree of follow-ups grew 364 tasks in seconds. A tree (a
/// root and every descendant) holds at most `limits.followups_per_tree`,
/// counted atomically while two children race to fill it; the runs on one
/// agent create at most `limits.followups_per_minute`.
#[tokio::test(flavor = "multi_thread")]
async fn a_task_tree_stops_at_its_follow_up_budget_and_an_agent_at_its_rate() {
    let hub = Hub::start().await;
    let (status, body) =
        hub.request(reqwest::Method::PUT, "/config", Some(json!({ "limits.followups_per_tree": 6 }))).await;
    assert_eq!(status, 200, "{body}");
    let _agent = hub.agent("w", 3, &[]).await;
    let bin = env!("CARGO_BIN_EXE_muster");
    let child = format!(
        "for i in $(seq 10); do msg=$({bin} ctl task add --runner shell 'echo leaf' 2>&1 >/dev/null); \
         code=$?; if [ $code -ne 0 ]; then echo \"refused with $code: $msg\"; fi; done"
    );
    let root_script = format!(
        "{bin} ctl task add --runner shell {c} && {bin} ctl task add --runner shell {c}",
        c = shlex::try_quote(&child).unwrap()
    );
    let root = hub.shell_task(&root_script).await;
    assert_eq!(hub.wait_state(&root, &["succeeded", "failed"]).await["state"], "succeeded");
    let children: Vec<String> = hub.output(&root).await.lines().map(str::to_owned).collect();
    assert_eq!(children.len(), 2, "{children:?}");
    let mut refusals = 0;
    let mut created = 0;
    for child in &children {
        assert_eq!(hub.wait_state(child, &["succeeded", "failed"]).await["state"], "succeeded");
        let out = hub.output(child).await;
        for line in out.lines() {
            assert!(line.starts_with("refused with 4: ") && line.contains("limits.followups_per_tree"), "{line}");
            refusals += 1;
        }
        created += hub.events(&format!("task={child}")).await.iter().filter(|e| e["kind"] == "task.followup").count();
        let refused_events =
            hub.events(&format!("task={child}")).await.iter().filter(|e| e["kind"] == "task.followup_refused").count();
        assert_eq!(refused_events, out.lines().count(), "each refusal is on the timeline");
    }
    assert_eq!((created, refusals), (4, 16), "two children and four grandchildren fill a tree of 6");

    // An agent's runs create at most two follow-ups a minute.
    let (status, body) = hub
        .request(
            reqwest::Method::PUT,
            "/config",
            Some(json!({ "limits.followups_per_tree": 100, "limits.followups_per_minute": 2 })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let burst = hub
        .shell_task(&format!(
            "for i in 1 2 3; do msg=$({bin} ctl task add --runner shell 'echo x' 2>&1 >/dev/null) || echo \"exit $? $msg\"; done"
        ))
        .await;
    assert_eq!(hub.wait_state(&burst, &["succeeded", "failed"]).await["state"], "succeeded");
    let out = hub.output(&burst).await;
    assert!(out.starts_with("exit 10 ") && out.contains("limits.followups_per_minute"), "{out}");
    assert_eq!(out.lines().count(), 1, "the first two were created: {out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_queues_follow_up_tasks_within_limits() {
    let hub = Hub::start().await;
    let _agent = hub.agent("w", 1, &[]).await;
    let bin = env!("CARGO_BIN_EXE_muster");
    // One follow-up like itself; one that would outrank it; one for another
    // runner; then 25 more, of which 18 fit under the 20 a task may create.
    let script = format!(
        "{bin} ctl task add --runner shell 'echo follow-up' > first\n\
         {bin} ctl task add --runner shell --priority urgent 'echo jump' 2> urgent; echo \"urgent exit $?\"\n\
         {bin} ctl task add --runner claude 'review it' > other\n\
         for i in $(seq 25); do {bin} ctl task add --runner shell \"echo more $i\" >/dev/null 2>>refused || true; done\n\
         cat first other urgent\ntail -n 1 refused"
    );
    let parent = hub.shell_task(&script).await;
    let task = hub.wait_state(&parent, &["succeeded", "failed"]).await;
    assert_eq!(task["state"], "succeeded", "{task}");
    let out = hub.output(&parent).await;
    let mut lines = out.lines().filter(|l| l.starts_with("t_"));
    let (child, other) = (lines.next().unwrap().to_owned(), lines.next().unwrap().to_owned());
    assert!(out.contains("urgent exit 2") && out.contains("may not be more urgent"), "{out}");
    assert!(out.contains(&format!("{parent} has created 20 tasks, the most a task may")), "{out}");
    let child_task = hub.wait_state(&child, &["succeeded", "failed"]).await;
    assert_eq!((&child_task["state"], &child_task["priority"]), (&json!("succeeded"), &json!("normal")));
    assert_eq!(hub.task(&other).await["state"], "pending_approval", "another runner needs a person");
    let followups =
        hub.events(&format!("task={parent}")).await.into_iter().filter(|e| e["kind"] == "task.followup").count();
    assert_eq!(followups, 20);
    let (status, body) =
        hub.request_as(&hub.token, reqwest::Method::POST, "/ctl/tasks", Some(json!({ "prompt": "x" }))).await;
    assert_eq!(status, 403, "{body}");
}
