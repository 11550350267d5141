//! The OpenAPI 3.1 document at `/api/v1/openapi.json`: valid, served by the
//! hub it describes for every route, and honoured by the hub when
//! schemathesis throws generated requests at every operation.

use crate::harness::{Hub, Missing, skip};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

/// The Python tools `.ci/run` installs: schemathesis and the OpenAPI
/// validator, in a virtual environment of their own.
fn tool(name: &str) -> Option<PathBuf> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/schemathesis/bin").join(name);
    path.exists().then_some(path)
}

async fn document(hub: &Hub) -> Value {
    let response = reqwest::get(format!("{}/api/v1/openapi.json", hub.url)).await.expect("an answer");
    assert_eq!(response.status(), 200, "the document needs no token");
    assert_eq!(response.headers()["content-type"], "application/json");
    response.json().await.expect("the document is JSON")
}

const METHODS: [&str; 4] = ["get", "post", "put", "delete"];

#[tokio::test(flavor = "multi_thread")]
async fn the_document_is_valid_openapi_3_1_and_every_route_in_it_is_served() {
    let test = "openapi::the_document_is_valid_openapi_3_1_and_every_route_in_it_is_served";
    let hub = Hub::start().await;
    let doc = document(&hub).await;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    let operations: Vec<(&str, &str, &Value)> = paths
        .iter()
        .flat_map(|(path, item)| METHODS.iter().filter_map(move |m| item.get(*m).map(|op| (path.as_str(), *m, op))))
        .collect();
    assert!(operations.len() > 90, "every route, not a handful: {}", operations.len());

    // Described: a tag, an operation id, a description on every answer, a
    // token scheme on all but the public routes, and problems for errors.
    let public = ["/", "/ui/{name}", "/livez", "/healthz", "/readyz", "/metrics", "/api/v1/openapi.json"];
    let schemes = doc["components"]["securitySchemes"].as_object().expect("security schemes");
    for (path, method, op) in &operations {
        let name = format!("{} {path}", method.to_uppercase());
        assert!(op["operationId"].is_string() && op["tags"][0].is_string(), "{name}: {op}");
        for (status, answer) in op["responses"].as_object().expect("responses") {
            assert!(answer["description"].as_str().is_some_and(|d| !d.is_empty()), "{name} {status}");
        }
        assert!(op["responses"]["500"]["content"]["application/problem+json"].is_object(), "{name}");
        let security = op["security"].as_array();
        let public =
            public.contains(path) || *path == "/api/v1/version" || *path == "/api/v1/ui/session" && *method != "get";
        match security {
            Some(s) => {
                let scheme = s[0].as_object().and_then(|o| o.keys().next()).expect("a scheme");
                assert!(schemes.contains_key(scheme), "{name} names {scheme}");
                assert!(!public, "{name} is public but asks for {scheme}");
            }
            None => assert!(public, "{name} takes a token but says none"),
        }
    }

    // Served: each operation in the document reaches a handler (an unknown
    // route is a 404 "no such route"; a known path with another method, 405).
    let client = reqwest::Client::new();
    for (path, method, _) in &operations {
        let url = format!("{}{}", hub.url, path.replace(['{', '}'], "_"));
        let request = match *method {
            "get" => client.get(&url),
            "post" => client.post(&url).json(&json!({})),
            "put" => client.put(&url).json(&json!({})),
            _ => client.delete(&url),
        };
        let response = request.bearer_auth(&hub.token).send().await.expect("an answer");
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or_default();
        assert!(status != 405 && body["detail"] != "no such route", "{method} {path} is not served: {status} {body}");
    }

    // Nothing is routed except through the document: the router is built
    // only from handlers that carry their description.
    let hub_src = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../muster-hub/src");
    let mut sources = Vec::new();
    for dir in [hub_src.clone(), hub_src.join("api")] {
        for entry in std::fs::read_dir(&dir).expect("the hub's sources") {
            let path = entry.expect("an entry").path();
            if path.extension().is_some_and(|e| e == "rs") {
                sources.push(path);
            }
        }
    }
    assert!(sources.iter().any(|p| p.ends_with("api/tasks.rs")), "{sources:?}");
    for path in sources {
        let text = std::fs::read_to_string(&path).expect("a source file");
        for bad in [".route(\"", ".route_service(", ".nest_service(", " Router::new()"] {
            assert!(!text.contains(bad), "{} adds a route without a description: {bad}", path.display());
        }
    }

    // And the document is valid OpenAPI 3.1 to a validator that is not ours.
    let Some(validator) = tool("openapi-spec-validator") else {
        skip(test, Missing::Dependency("openapi-spec-validator (PyPI) in target/schemathesis"));
        return;
    };
    let file = hub.dir.path().join("openapi.json");
    std::fs::write(&file, doc.to_string()).expect("the document written");
    let out = tokio::process::Command::new(validator).arg(&file).output().await.expect("the validator runs");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && said.contains(": OK"), "{said}{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    let test = "openapi::schemathesis_finds_no_server_error_and_no_answer_outside_the_document";
    let Some(st) = tool("st") else {
        skip(test, Missing::Dependency("schemathesis (PyPI) in target/schemathesis"));
        return;
    };
    let hub = Hub::start().await;
    let _agent = hub.agent("w", 2, &[]).await;
    // Something for the generated requests to find besides 404s.
    let task = hub.shell_task("echo schemathesis").await;
    hub.wait_state(&task, &["succeeded"]).await;
    let run = tokio::process::Command::new(st)
        .current_dir(hub.dir.path())
        .args(["run", &format!("{}/api/v1/openapi.json", hub.url)])
        .args(["--header", &format!("Authorization: Bearer {}", hub.token)])
        .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance"])
        .args(["--checks", "response_schema_conformance,response_headers_conformance"])
        .args(["--phases", "examples,coverage,fuzzing", "--max-examples", "10", "--workers", "2"])
        .args(["--request-timeout", "10", "--no-shrink", "--warnings", "off"])
        // It reuses what answers show, ids included: given the admin
        // token's own id from GET /tokens, it would revoke the token it
        // runs with and spend the rest of the run on 401s.
        .args(["--exclude-operation-id", "revoke_token"])
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(600), run).await.expect("schemathesis ends").expect("it runs");
    let said = String::from_utf8_lossy(&out.stdout);
    let summary = said.lines().skip_while(|l| !l.contains("SUMMARY")).collect::<Vec<_>>().join("\n");
    eprintln!("{summary}");
    assert!(out.status.success(), "schemathesis found failures:\n{said}{}", String::from_utf8_lossy(&out.stderr));
    // Every operation but the document's own and the one left out was
    // selected, and each was tried.
    let count = |label: &str| {
        let line = summary.lines().find_map(|l| l.trim().strip_prefix(label)).unwrap_or_else(|| panic!("{label}"));
        line.split('/').map(|n| n.trim().parse::<usize>().expect("a count")).collect::<Vec<_>>()
    };
    let selected = count("Selected:");
    assert!(selected[0] + 1 == selected[1] && selected[0] > 90, "{summary}");
    assert_eq!(count("Tested:"), [selected[0]], "every operation was tried:\n{summary}");
    let cases = summary
        .lines()
        .find_map(|l| l.trim().strip_suffix(" passed").and_then(|l| l.split_once(" generated, ")))
        .unwrap_or_else(|| panic!("a count of cases:\n{summary}"));
    assert_eq!(cases.0, cases.1, "every generated case passed:\n{summary}");
    assert!(cases.0.parse::<u32>().expect("a number") > 1000, "enough cases to mean something:\n{summary}");
}
