//! Bad input: every mistake gets a 4xx with a problem body naming the field
//! and the reason, and changes nothing; the CLI turns each into one line on
//! stderr and a documented exit code.

use crate::harness::{Hub, cli_with_input};
use serde_json::{Value, json};

const UNKNOWN_ID: &str = "t_00000000000000000000000000";

/// Which credentials a request carries.
#[derive(Debug, Clone, Copy)]
enum Auth {
    Admin,
    None,
    Garbage,
    Revoked,
    Agent,
}

struct Tokens {
    admin: String,
    agent: String,
    revoked: String,
}

/// A request and the problem it must earn.
struct Case<'a> {
    auth: Auth,
    method: &'a str,
    path: String,
    /// Sent as is with `content-type: application/json`.
    body: Option<String>,
    status: u16,
    /// The field the problem must name; `None` means it names none.
    field: Option<&'a str>,
    /// Words the detail must contain.
    detail: &'a str,
}

fn submit(body: Value) -> Case<'static> {
    post("/tasks", body.to_string())
}

fn post(path: &str, body: String) -> Case<'static> {
    Case {
        auth: Auth::Admin,
        method: "POST",
        path: path.to_owned(),
        body: Some(body),
        status: 400,
        field: None,
        detail: "",
    }
}

fn get(path: &str) -> Case<'static> {
    Case { auth: Auth::Admin, method: "GET", path: path.to_owned(), body: None, status: 400, field: None, detail: "" }
}

impl<'a> Case<'a> {
    fn expect(self, status: u16, field: Option<&'a str>, detail: &'a str) -> Case<'a> {
        Case { status, field, detail, ..self }
    }

    fn with(self, auth: Auth) -> Case<'a> {
        Case { auth, ..self }
    }
}

/// What the hub has written so far: the latest event and the number of tasks.
async fn written(hub: &Hub) -> (i64, u64) {
    let status = hub.get("/status").await;
    let tasks = status["tasks"].as_object().expect("task counts").values().map(|n| n.as_u64().expect("a count")).sum();
    (status["last_event"].as_i64().expect("last_event"), tasks)
}

/// Sends the case's request and checks the answer is the expected problem and nothing was written.
async fn check(hub: &Hub, tokens: &Tokens, case: Case<'_>) {
    let what = format!("{} {} ({:?})", case.method, case.path, case.auth);
    let before = written(hub).await;
    let url = format!("{}/api/v1{}", hub.url, case.path);
    let method = reqwest::Method::from_bytes(case.method.as_bytes()).expect("an HTTP method");
    let mut req = reqwest::Client::new().request(method, url);
    let token = match case.auth {
        Auth::Admin => Some(tokens.admin.as_str()),
        Auth::None => None,
        Auth::Garbage => Some("garbage"),
        Auth::Revoked => Some(tokens.revoked.as_str()),
        Auth::Agent => Some(tokens.agent.as_str()),
    };
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = case.body {
        req = req.header("content-type", "application/json").body(body);
    }
    let resp = req.send().await.expect("the hub answers");
    let status = resp.status().as_u16();
    let header = |name: &str| resp.headers().get(name).map(|v| v.to_str().expect("a text header").to_owned());
    let (content_type, challenge) = (header("content-type"), header("www-authenticate"));
    let text = resp.text().await.expect("a body");
    assert_eq!(status, case.status, "{what}: {text}");
    assert_eq!(content_type.as_deref(), Some("application/problem+json"), "{what}");
    if status == 401 {
        assert_eq!(challenge.as_deref(), Some("Bearer"), "{what}: a 401 says how to authenticate");
    }
    let problem: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"));
    for key in ["type", "title", "detail"] {
        assert!(problem[key].as_str().is_some_and(|s| !s.is_empty()), "{what}: no {key}: {problem}");
    }
    assert_eq!(problem["status"], status, "{what}: {problem}");
    let field = problem.get("field").and_then(Value::as_str).filter(|f| !f.is_empty());
    assert_eq!(field, case.field, "{what}: {problem}");
    let detail = problem["detail"].as_str().expect("a detail").to_lowercase();
    assert!(
        detail.contains(&case.detail.to_lowercase()),
        "{what}: the detail should mention {:?}: {problem}",
        case.detail
    );
    assert_eq!(written(hub).await, before, "{what} wrote something");
}

/// A hub with an agent token, a revoked token, and one queued task (no agent runs it).
async fn setup() -> (Hub, Tokens, String) {
    let hub = Hub::start().await;
    let agent = hub.add_agent("worker", &[]).await;
    let (status, gone) = hub.post("/agents", json!({ "name": "gone" })).await;
    assert_eq!(status, 201, "{gone}");
    let (status, revoked) =
        hub.post(&format!("/tokens/{}/revoke", gone["token_id"].as_str().expect("a token id")), json!({})).await;
    assert_eq!(status, 200, "{revoked}");
    let queued = hub.shell_task("echo never runs").await;
    let tokens =
        Tokens { admin: hub.token.clone(), agent, revoked: gone["token"].as_str().expect("a token").to_owned() };
    (hub, tokens, queued)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_task_submission_names_its_field_and_creates_nothing() {
    let (hub, tokens, _) = setup().await;
    let shell = |extra: Value| {
        let mut body = json!({ "prompt": "echo hi", "runner": "shell" });
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        submit(body)
    };
    let too_long = "x".repeat((1 << 20) + 1);
    let cases = [
        shell(json!({ "colour": "red" })).expect(400, Some("colour"), "unknown field"),
        shell(json!({ "runner": "nosuch" })).expect(400, Some("runner"), "unknown runner"),
        shell(json!({ "priority": "asap" })).expect(400, Some("priority"), "unknown priority"),
        shell(json!({ "timeout": 0 })).expect(400, Some("timeout"), "greater than zero"),
        shell(json!({ "timeout": -5 })).expect(400, Some("timeout"), "greater than zero"),
        shell(json!({ "timeout": "later" })).expect(400, Some("timeout"), "not a duration"),
        shell(json!({ "prompt": too_long })).expect(400, Some("prompt"), "limit"),
        shell(json!({ "prompt": "" })).expect(400, Some("prompt"), "empty"),
        shell(json!({ "max_attempts": 0 })).expect(400, Some("max_attempts"), "between"),
        shell(json!({ "capabilities": ["a b"] })).expect(400, Some("capabilities"), "capability"),
        shell(json!({ "metadata": [1, 2] })).expect(400, Some("metadata"), "object"),
    ];
    for case in cases {
        check(&hub, &tokens, case).await;
    }
}

/// A body that is not JSON is wrong as a whole: the problem names no field
/// (not the field the parser stopped in) and nothing is created.
#[tokio::test(flavor = "multi_thread")]
async fn malformed_json_is_refused_as_a_whole_naming_no_field() {
    let (hub, tokens, _) = setup().await;
    let bodies = [
        "",
        "not json at all",
        r#"{"prompt": "#,
        r#"{"prompt": tru}"#,
        r#"{"prompt": "echo hi" "runner": "shell"}"#,
        r#"{"prompt": "echo hi", "runner": "shell""#,
    ];
    for body in bodies {
        check(&hub, &tokens, post("/tasks", body.into()).expect(400, None, "malformed")).await;
    }
}

/// A valid object followed by anything else is not a valid body either.
#[tokio::test(flavor = "multi_thread")]
async fn trailing_characters_after_the_json_body_are_refused() {
    let (hub, tokens, _) = setup().await;
    for body in [r#"{"prompt": "echo hi", "runner": "shell"} trailing"#, r#"{"prompt": "echo hi", "runner": "shell"}}"#]
    {
        check(&hub, &tokens, post("/tasks", body.into()).expect(400, None, "malformed")).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_ids_queries_and_state_changes_are_refused() {
    let (hub, tokens, queued) = setup().await;
    let cases = [
        get(&format!("/tasks/{UNKNOWN_ID}")).expect(404, None, UNKNOWN_ID),
        get("/tasks/t_nope").expect(400, Some("id"), "t_nope"),
        post(&format!("/tasks/{queued}/retry"), String::new()).expect(409, Some("state"), "only a failed task"),
        post(&format!("/tasks/{UNKNOWN_ID}/retry"), String::new()).expect(404, None, UNKNOWN_ID),
        get("/tasks?colour=red").expect(400, Some("colour"), "unknown query parameter"),
        get("/tasks?state=done").expect(400, Some("state"), "unknown state"),
        get("/tasks?limit=lots").expect(400, Some("limit"), "not a valid number"),
        get("/tasks?priority=asap").expect(400, Some("priority"), "unknown priority"),
        get("/tasks?runner=no%20spaces").expect(400, Some("runner"), "runner"),
        get("/events?before=soon").expect(400, Some("before"), "not a valid number"),
        get("/events?after=1&after=2").expect(400, Some("after"), "given more than once"),
    ];
    for case in cases {
        check(&hub, &tokens, case).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_without_the_right_token_are_refused() {
    let (hub, tokens, _) = setup().await;
    let cases = [
        get("/tasks").with(Auth::None).expect(401, None, "token is required"),
        get("/tasks").with(Auth::Garbage).expect(401, None, "not valid"),
        get("/tasks").with(Auth::Revoked).expect(401, None, "revoked"),
        get("/agent/connect").with(Auth::Revoked).expect(401, None, "revoked"),
        get("/tasks").with(Auth::Agent).expect(403, None, "admin token"),
        submit(json!({ "prompt": "echo hi", "runner": "shell" })).with(Auth::Agent).expect(403, None, "admin token"),
        get("/agent/connect").with(Auth::Admin).expect(403, None, "admin token cannot connect"),
    ];
    for case in cases {
        check(&hub, &tokens, case).await;
    }
}

/// A CLI run and what it must end with.
struct CliCase<'a> {
    args: &'a [&'a str],
    url: &'a str,
    token: &'a str,
    code: i32,
    /// Words stderr must contain.
    says: &'a str,
    /// Whether stderr must be exactly one `muster: ` line (clap's usage errors are its own).
    one_line: bool,
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_reports_each_error_in_one_line_with_its_exit_code() {
    let (hub, _, queued) = setup().await;
    let nobody = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let (url, token) = (hub.url.as_str(), hub.token.as_str());
    let retry = ["task", "retry", queued.as_str()];
    let case = |args, code, says| CliCase { args, url, token, code, says, one_line: true };
    let cases = [
        case(&["task", "add", "--runner", "nosuch", "x"], 2, "runner"),
        case(&["task", "add", "--runner", "shell", "--timeout", "soon", "x"], 2, "timeout"),
        case(&["task", "show", UNKNOWN_ID], 3, UNKNOWN_ID),
        case(&retry, 4, "only a failed task"),
        CliCase { token: "mst_wrong", ..case(&["task", "list"], 5, "token") },
        CliCase { url: &nobody, ..case(&["task", "list"], 6, "cannot reach the hub") },
        CliCase { one_line: false, ..case(&["task", "add"], 2, "<PROMPT>") },
    ];
    for c in cases {
        let before = written(&hub).await;
        let (code, stdout, stderr) = cli_with_input(c.url, c.token, c.args, None).await;
        let what = format!("muster {}", c.args.join(" "));
        assert_eq!(code, c.code, "{what}: stdout {stdout:?} stderr {stderr:?}");
        assert_eq!(stdout, "", "{what}");
        assert!(stderr.contains(c.says), "{what}: stderr should mention {:?}: {stderr:?}", c.says);
        if c.one_line {
            assert!(stderr.starts_with("muster: ") && stderr.lines().count() == 1, "{what}: {stderr:?}");
        }
        assert_eq!(written(&hub).await, before, "{what} wrote something");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn coordination_endpoints_refuse_bad_input_and_write_nothing() {
    let (hub, tokens, queued) = setup().await;
    let decision = |extra: Value| {
        let mut body = json!({ "task": queued, "question": "Ship it?" });
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        post("/decisions", body.to_string())
    };
    let schedule = |extra: Value| {
        let mut body = json!({ "name": "nightly", "cron": "@hourly", "task": { "prompt": "x", "runner": "shell" } });
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        post("/schedules", body.to_string())
    };
    let cases = [
        decision(json!({ "task": UNKNOWN_ID })).expect(404, None, UNKNOWN_ID),
        decision(json!({ "question": " " })).expect(400, Some("question"), "1 to"),
        decision(json!({ "options": ["only"] })).expect(400, Some("options"), "2 to 20"),
        decision(json!({ "default": "maybe", "timeout": "1m" })).expect(400, Some("default"), "not one of the options"),
        decision(json!({ "timeout": "0s" })).expect(400, Some("timeout"), "more than 0"),
        post("/decisions/abc/answer", json!({ "option": "yes" }).to_string()).expect(
            400,
            Some("id"),
            "not a decision id",
        ),
        post("/decisions/999/answer", json!({ "option": "yes" }).to_string()).expect(404, None, "no decision #999"),
        get("/decisions?state=closed").expect(400, Some("state"), "expected open or all"),
        post("/ctl/locks", json!({ "name": "x" }).to_string()).expect(403, None, "task token"),
        post("/ctl/decisions", json!({ "question": "q" }).to_string()).with(Auth::Agent).expect(
            403,
            None,
            "task token",
        ),
        post("/locks/unlock", json!({ "name": "nothing" }).to_string()).expect(404, None, "no lock nothing"),
        post("/locks/unlock", json!({}).to_string()).expect(400, Some("name"), "all"),
        post("/pipelines", json!({ "source": "name: x\n" }).to_string()).expect(
            400,
            Some("source"),
            "stages is missing",
        ),
        post("/pipelines", json!({ "source": 5 }).to_string()).expect(400, Some("source"), ""),
        get("/pipelines/abc").expect(400, Some("id"), "not a pipeline id"),
        schedule(json!({ "cron": "61 * * * *" })).expect(400, Some("cron"), "not a cron pattern"),
        schedule(json!({ "tz": "Nowhere/Special" })).expect(400, Some("tz"), "not a time zone"),
        schedule(json!({ "task": { "prompt": "x", "runner": "nosuch" } })).expect(
            400,
            Some("task.runner"),
            "unknown runner",
        ),
        schedule(json!({ "missed": "sometimes" })).expect(400, Some("missed"), "skip or run_once"),
        schedule(json!({ "name": "123" })).expect(400, Some("name"), "not only digits"),
        post("/schedules/nope/pause", String::new()).expect(404, None, "no schedule nope"),
        post("/messages", json!({ "to": "robot:x", "body": "x" }).to_string()).expect(400, Some("to"), "agent:NAME"),
        post("/messages", json!({ "to": "agent:worker", "body": "" }).to_string()).expect(400, Some("body"), "1 to"),
        post("/messages", json!({ "to": "channel:none", "body": "x" }).to_string()).expect(
            404,
            None,
            "no channel none",
        ),
        post("/channels", json!({ "name": "Bad Name" }).to_string()).expect(400, Some("name"), "lowercase"),
        get("/messages").expect(400, Some("to"), "give to="),
        get("/conflicts?state=maybe").expect(400, Some("state"), "expected open or all"),
    ];
    for case in cases {
        check(&hub, &tokens, case).await;
    }
}
