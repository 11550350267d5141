//! Circuit breakers: an agent's and a runner's open after failed attempts in
//! a row, dispatch skips them, one probe goes through after the cooldown and
//! its success closes them; operators see them and can reset them.

use crate::harness::{Hub, HubOpts};
use serde_json::{Value, json};

async fn failing(hub: &Hub) -> String {
    hub.add_task(json!({ "prompt": "exit 9", "runner": "shell", "max_attempts": 1 })).await
}

fn breaker<'a>(all: &'a Value, scope: &str, name: &str) -> &'a Value {
    all.as_array()
        .and_then(|a| a.iter().find(|b| b["scope"] == scope && b["name"] == name))
        .unwrap_or_else(|| panic!("no {scope} breaker {name} in {all}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_open_the_breakers_a_probe_after_the_cooldown_closes_them() {
    let hub = Hub::start().await;
    let (code, _, err) = hub.cli(&["config", "set", "breaker.failures=2", "breaker.cooldown=1s"]).await;
    assert_eq!(code, 0, "{err}");
    let _agent = hub.agent("w", 2, &[]).await;
    for _ in 0..2 {
        let id = failing(&hub).await;
        hub.wait_state(&id, &["failed"]).await;
    }
    let all = hub.get("/breakers").await;
    assert_eq!(breaker(&all, "runner", "shell")["state"], "open", "{all}");
    assert_eq!(breaker(&all, "agent", "w")["state"], "open", "{all}");
    assert!(breaker(&all, "runner", "shell")["half_opens_at"].is_string(), "{all}");
    let (code, table, err) = hub.cli(&["breakers"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(table.lines().any(|l| l.starts_with("runner") && l.contains("shell") && l.contains("open")), "{table}");
    let metrics = reqwest::get(format!("{}/metrics", hub.url)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("muster_circuit_state{scope=\"runner\",name=\"shell\"} 2"), "{metrics}");

    // Two tasks wait; after the cooldown one goes through as the probe, and its success closes the breakers.
    let probe = hub.shell_task("echo probe").await;
    let after = hub.shell_task("echo after").await;
    let task = hub.wait_state(&probe, &["succeeded"]).await;
    assert_eq!(task["attempts"], 1);
    hub.wait_state(&after, &["succeeded"]).await;
    let events = hub.events("").await;
    let kinds: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e["kind"].as_str().is_some_and(|k| k.starts_with("breaker.")))
        .map(|e| (e["kind"].as_str().unwrap(), e["detail"].as_str().unwrap_or_default()))
        .collect();
    let opened = kinds.iter().filter(|(k, _)| *k == "breaker.opened").count();
    assert_eq!(opened, 2, "{kinds:?}");
    assert!(
        kinds.iter().any(|(k, d)| *k == "breaker.half_open" && d.contains("goes through as the probe")),
        "{kinds:?}"
    );
    assert!(kinds.iter().any(|(k, d)| *k == "breaker.closed" && d.contains("the probe")), "{kinds:?}");
    let all = hub.get("/breakers").await;
    assert_eq!(breaker(&all, "runner", "shell")["state"], "closed", "{all}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_operator_resets_a_breaker_and_work_flows_again() {
    let hub = Hub::start_with(HubOpts { alert_interval: "100ms", ..HubOpts::default() }).await;
    let (code, _, err) = hub.cli(&["config", "set", "breaker.failures=1", "breaker.cooldown=1h"]).await;
    assert_eq!(code, 0, "{err}");
    let _agent = hub.agent("w", 1, &[]).await;
    let id = failing(&hub).await;
    hub.wait_state(&id, &["failed"]).await;
    let alert = |state: &'static str| {
        let hub = &hub;
        async move {
            let alerts = hub.get("/alerts").await;
            let a = alerts.as_array()?.iter().find(|a| a["rule"] == "circuit_open")?.clone();
            (a["state"] == state).then_some(a)
        }
    };
    let firing = hub.wait_until("circuit_open to fire", || alert("firing")).await;
    let detail = firing["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("agent w") && detail.contains("runner shell"), "{firing}");
    // (That an open breaker hands out nothing is proven in the store's conformance cases.)
    let waiting = hub.shell_task("echo through").await;

    let (code, _, err) = hub.cli(&["breaker", "reset", "nope"]).await;
    assert_eq!(code, 3, "{err}");
    let (code, _, err) = hub.cli(&["breaker", "reset", "shell"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("runner shell closed"), "{err}");
    let (code, _, err) = hub.cli(&["breaker", "reset", "w", "--scope", "agent"]).await;
    assert_eq!(code, 0, "{err}");
    hub.wait_state(&waiting, &["succeeded"]).await;
    hub.wait_until("circuit_open to resolve", || alert("resolved")).await;
    let closed = hub.events("").await.into_iter().filter(|e| e["kind"] == "breaker.closed").count();
    assert_eq!(closed, 2, "each reset is on the timeline");
    let (status, bad) = hub.request(reqwest::Method::POST, "/breakers/planet/x/reset", None).await;
    assert_eq!((status, &bad["field"]), (400, &json!("scope")), "{bad}");
}

/// An agent offering the `alt` runner: bash, like `shell`, under another name.
async fn alt_agent(hub: &Hub, name: &str, dir: &std::path::Path) -> crate::harness::Agent {
    let toml = "[runners.alt]\nargv = [\"bash\", \"{prompt_file}\"]\nprompt = \"file\"\n";
    let opts = crate::harness::AgentOpts { runners: &[], ..Default::default() };
    hub.agent_with_config(name, dir, toml, opts).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disabled_runner_or_an_open_circuit_routes_tasks_to_their_fallback() {
    let hub = Hub::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (code, _, err) = hub.cli(&["config", "set", "breaker.failures=1", "breaker.cooldown=1h"]).await;
    assert_eq!(code, 0, "{err}");
    let _shell = hub.agent("w1", 2, &[]).await;
    let _alt = alt_agent(&hub, "w2", dir.path()).await;

    // Disabled: tasks with a fallback use it; tasks without wait.
    let (code, _, err) = hub.cli(&["runner", "disable", "shell", "--reason", "provider outage"]).await;
    assert_eq!(code, 0, "{err}");
    let (_, list, _) = hub.cli(&["runner", "list"]).await;
    assert!(
        list.lines().any(|l| l.starts_with("shell") && l.contains("disabled") && l.contains("provider outage")),
        "{list}"
    );
    let (code, id, err) = hub.cli(&["task", "add", "--runner", "shell", "--fallback", "alt", "echo rerouted"]).await;
    assert_eq!(code, 0, "{err}");
    let id = id.trim().to_owned();
    let task = hub.wait_state(&id, &["succeeded", "failed"]).await;
    assert_eq!(task["state"], "succeeded", "{}", task["reason"]);
    assert_eq!((&task["attempts_detail"][0]["runner"], &task["agent"]), (&json!("alt"), &json!("w2")), "{task}");
    let fell_back = hub.events(&format!("task={id}")).await.into_iter().find(|e| e["kind"] == "task.fallback");
    assert_eq!(fell_back.expect("a task.fallback event")["detail"], "shell is disabled: provider outage; runs on alt");
    let (_, shown, _) = hub.cli(&["task", "show", &id]).await;
    assert!(shown.contains("runner        shell (fallback alt)"), "{shown}");
    let (code, _, err) = hub.cli(&["task", "add", "--runner", "shell", "--fallback", "nope", "true"]).await;
    assert_eq!(code, 2, "an unknown fallback is refused: {err}");
    assert!(err.contains("fallback"), "{err}");
    let (code, _, err) = hub.cli(&["runner", "enable", "shell"]).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, _) = hub.cli(&["runner", "enable", "shell"]).await;
    assert_eq!(code, 3, "enabling an enabled runner says so");

    // An open circuit does the same, with its own reason.
    let failing = hub.add_task(json!({ "prompt": "exit 4", "runner": "shell", "max_attempts": 1 })).await;
    hub.wait_state(&failing, &["failed"]).await;
    let id = hub.add_task(json!({ "prompt": "echo rerouted", "runner": "shell", "fallback": ["alt"] })).await;
    let task = hub.wait_state(&id, &["succeeded", "failed"]).await;
    assert_eq!(task["attempts_detail"][0]["runner"], "alt", "{task}");
    let fell_back = hub.events(&format!("task={id}")).await.into_iter().find(|e| e["kind"] == "task.fallback");
    assert_eq!(fell_back.expect("a task.fallback event")["detail"], "runner shell's circuit is open; runs on alt");
}
