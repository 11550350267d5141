//! What only the running binary shows: a schedule firing on the wall
//! clock, the limit on a body's size, an agent's token rotated under it,
//! signing out of the dashboard, and `/healthz`.

use crate::harness::{Hub, PATIENCE};
use serde_json::{Value, json};

#[tokio::test(flavor = "multi_thread")]
async fn a_schedule_fires_through_the_running_hub_and_its_task_runs() {
    let hub = Hub::start().await;
    let _agent = hub.agent("w", 1, &[]).await;
    let mark = hub.last_event().await;
    // Every second: seconds first, as croner reads six fields.
    let (code, out, err) =
        hub.cli(&["schedule", "add", "tick", "--cron", "* * * * * *", "--runner", "shell", "echo tick"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let fired = hub
        .wait_until("the schedule to fire", || async {
            let page = hub.get(&format!("/events?after={mark}&limit=10000")).await;
            page["events"].as_array().unwrap().iter().find(|e| e["kind"] == "schedule.fired").cloned()
        })
        .await;
    let id = fired["detail"]
        .as_str()
        .and_then(|d| d.split_whitespace().find(|w| w.starts_with("t_")))
        .unwrap_or_else(|| panic!("the firing names its task: {fired}"))
        .trim_matches(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .to_owned();
    let task = hub.wait_state(&id, &["succeeded", "failed"]).await;
    assert_eq!(task["state"], "succeeded", "{task}");
    assert_eq!(hub.output(&id).await, "tick\n");
    let (code, _, err) = hub.cli(&["schedule", "delete", "tick"]).await;
    assert_eq!(code, 0, "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_past_the_limit_is_refused_with_413_and_nothing_is_queued() {
    let hub = Hub::start().await;
    let prompt = "x".repeat(9 << 20);
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/tasks", hub.url))
        .bearer_auth(&hub.token)
        .header("content-type", "application/json")
        .body(json!({ "prompt": prompt, "runner": "shell" }).to_string())
        .timeout(PATIENCE)
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), 413);
    let (status, body) = hub.post("/tasks", json!({ "prompt": "x".repeat((1 << 20) + 1), "runner": "shell" })).await;
    assert_eq!((status, &body["field"]), (400, &json!("prompt")), "the prompt's own limit names it: {body}");
    assert_eq!(hub.get("/tasks").await["tasks"].as_array().map(Vec::len), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn rotating_an_agents_token_cuts_off_the_old_one_and_the_new_one_connects() {
    let hub = Hub::start().await;
    let first = hub.add_agent("w", &[]).await;
    let mut agent = hub.spawn_agent(("w", &first), 1, &[]);
    hub.wait_connected("w").await;
    let (code, out, err) = hub.cli(&["agent", "token", "w", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let second = serde_json::from_str::<Value>(&out).expect("JSON")["token"].as_str().expect("a token").to_owned();
    assert_ne!(second, first);
    // The running agent is cut off and stops, rather than retry a token that is gone.
    let process = agent.process.as_mut().expect("the agent runs");
    let status = tokio::time::timeout(PATIENCE, process.wait()).await.expect("it exits").expect("a status");
    assert_eq!(status.code(), Some(5), "{status:?}");
    let (status, _) = hub.request_as(&first, reqwest::Method::GET, "/agent/connect", None).await;
    assert_eq!(status, 401);
    let _again = hub.spawn_agent(("w", &second), 1, &[]);
    hub.wait_connected("w").await;
    let id = hub.shell_task("echo with the new token").await;
    assert_eq!(hub.wait_state(&id, &["succeeded", "failed"]).await["state"], "succeeded");
}

#[tokio::test(flavor = "multi_thread")]
async fn signing_out_of_the_dashboard_ends_the_session() {
    let mut hub = Hub::start().await;
    let http = reqwest::Client::new();
    let origin = hub.url.clone();
    let host = hub.addr.to_string();
    let signed = http
        .post(format!("{}/api/v1/ui/session", hub.url))
        .header("origin", &origin)
        .header("host", &host)
        .json(&json!({ "token": hub.token }))
        .send()
        .await
        .expect("an answer");
    assert_eq!(signed.status(), 200);
    let cookie = signed.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let session_url = format!("{}/api/v1/ui/session", hub.url);
    let whoami = |cookie: String| {
        let http = http.clone();
        let url = session_url.clone();
        async move { http.get(url).header("cookie", cookie).send().await.expect("an answer").status().as_u16() }
    };
    assert_eq!(whoami(cookie.clone()).await, 200);
    // A session outlives a restart of the hub.
    hub.terminate().await;
    hub.restart().await;
    assert_eq!(whoami(cookie.clone()).await, 200, "still signed in after a restart");
    let out = http
        .delete(format!("{}/api/v1/ui/session", hub.url))
        .header("cookie", &cookie)
        .header("origin", &origin)
        .header("host", &host)
        .send()
        .await
        .expect("an answer");
    assert!(out.status().is_success(), "{}", out.status());
    assert_eq!(whoami(cookie).await, 401, "the cookie no longer signs anyone in");
}

#[tokio::test(flavor = "multi_thread")]
async fn healthz_is_livez_by_another_name() {
    let hub = Hub::start().await;
    for path in ["/healthz", "/livez"] {
        let r = reqwest::get(format!("{}{path}", hub.url)).await.expect("an answer");
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.text().await.unwrap(), "ok\n", "{path}");
    }
}
