//! The hub's edge under abuse: floods of idle and slow connections, caps
//! that answer 503, slow headers cut, rate limits per token, and refused
//! tokens counted and logged without the token.

use crate::harness::{Hub, HubOpts, PATIENCE};
use serde_json::json;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Lets the test process hold as many sockets as the system allows it.
fn raise_own_file_limit() {
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit with a pointer to a live rlimit.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut l);
        l.rlim_cur = l.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
    }
}

/// Reads until the peer closes; what it sent. Fails the test past `PATIENCE`.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let read = tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the hub kept the connection open past {PATIENCE:?}; it sent {got:?}");
    String::from_utf8_lossy(&got).into_owned()
}

/// Reads until `needle` arrives.
async fn read_until(stream: &mut TcpStream, needle: &str) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let found = tokio::time::timeout(PATIENCE, async {
        loop {
            let n = stream.read(&mut buf).await.expect("a read");
            assert!(n > 0, "closed before {needle:?}: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&got).contains(needle) {
                return;
            }
        }
    })
    .await;
    assert!(found.is_ok(), "no {needle:?} in time: {}", String::from_utf8_lossy(&got));
    String::from_utf8_lossy(&got).into_owned()
}

/// `n` connections that each started a request the hub is now reading the
/// body of (it answered `100 Continue`): busy, and without a token. Signing
/// in is the route that reads a body before any token: the others refuse a
/// request without one before they read its body.
async fn busy_anonymous(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::new();
    for _ in 0..n {
        let mut s = TcpStream::connect(addr).await.expect("a connection");
        s.write_all(
            b"POST /api/v1/ui/session HTTP/1.1\r\nhost: hub\r\ncontent-type: application/json\r\n\
              content-length: 100\r\nexpect: 100-continue\r\n\r\n",
        )
        .await
        .expect("a request head");
        read_until(&mut s, "100 Continue").await;
        held.push(s);
    }
    held
}

async fn metric(hub: &Hub, line_start: &str) -> f64 {
    let text = reqwest::get(format!("{}/metrics", hub.url)).await.expect("metrics").text().await.expect("text");
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// On main, 3,000 idle and slow-header connections took every file
/// descriptor a hub limited to 1,024 had: `/livez` and agents were locked
/// out until the flood left. Now the oldest anonymous connections are shed
/// to make room, and an agent connected before the flood is never touched.
#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_idle_and_slow_header_connections_leaves_livez_and_agents_reachable() {
    raise_own_file_limit();
    let hub = Hub::start_with(HubOpts { file_limit: Some(1024), ..HubOpts::default() }).await;
    let _before = hub.agent("before", 1, &[]).await;
    let mark = hub.last_event().await;

    let mut flood = Vec::new();
    for i in 0..3000 {
        let Ok(Ok(mut s)) = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(hub.addr)).await else {
            continue;
        };
        if i % 2 == 0 {
            // Slowloris: headers that never end.
            let _ = s.write_all(b"GET /api/v1/status HTTP/1.1\r\nhost: hub\r\nx-slow: ").await;
        }
        flood.push(s);
    }

    let livez = tokio::time::timeout(Duration::from_secs(30), reqwest::get(format!("{}/livez", hub.url))).await;
    let livez = livez.expect("/livez answers during the flood").expect("a response");
    assert_eq!(livez.status(), 200);
    let _during = hub.agent("during", 1, &[]).await;
    let id = hub.shell_task("echo through the flood").await;
    assert_eq!(hub.wait_state(&id, &["succeeded", "failed"]).await["state"], "succeeded");

    assert!(metric(&hub, "muster_connections_shed_total{cap=\"address\"}").await > 0.0, "anonymous ones were shed");
    let open = metric(&hub, "muster_connections_open ").await;
    let max = metric(&hub, "muster_connections_max ").await;
    assert!(max > 0.0 && max < 1024.0 && open <= max, "open {open}, max {max}");
    let events: Vec<_> =
        hub.events("agent=before").await.into_iter().filter(|e| e["seq"].as_i64() > Some(mark)).collect();
    assert_eq!(crate::harness::count_kind(&events, "agent.disconnected"), 0, "{events:?}");
    drop(flood);
}

/// Headers that never end are cut, and so is a keep-alive connection left idle.
#[tokio::test(flavor = "multi_thread")]
async fn slow_headers_and_idle_keep_alive_connections_are_closed_after_the_header_timeout() {
    let hub = Hub::start_with(HubOpts { extra: &["--header-timeout", "1s"], ..HubOpts::default() }).await;
    let mut slow = TcpStream::connect(hub.addr).await.expect("a connection");
    slow.write_all(b"GET /livez HTTP/1.1\r\nhost: hub\r\n").await.expect("half a head");
    read_to_close(&mut slow).await;

    let mut idle = TcpStream::connect(hub.addr).await.expect("a connection");
    idle.write_all(b"GET /livez HTTP/1.1\r\nhost: hub\r\n\r\n").await.expect("a request");
    let answer = read_to_close(&mut idle).await;
    assert!(answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok\n"), "{answer:?}");
}

/// Over a cap, with every anonymous connection busy, a new connection is
/// answered 503 at once rather than left waiting.
#[tokio::test(flavor = "multi_thread")]
async fn over_a_cap_with_nothing_to_shed_a_connection_is_answered_503_at_once() {
    for (extra, n) in [
        (&["--max-anonymous-per-address", "8", "--header-timeout", "60s"][..], 8),
        (&["--max-connections", "16", "--header-timeout", "60s"][..], 16),
    ] {
        let hub = Hub::start_with(HubOpts { extra, ..HubOpts::default() }).await;
        let held = busy_anonymous(hub.addr, n).await;
        let mut over = TcpStream::connect(hub.addr).await.expect("a connection");
        let answer = read_to_close(&mut over).await;
        assert!(answer.starts_with("HTTP/1.1 503"), "{extra:?}: {answer:?}");
        assert!(answer.contains("retry-after: 1") && answer.contains("try again in a second"), "{answer}");
        drop(held);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_token_has_a_request_rate_past_which_it_is_told_when_to_come_back() {
    let hub = Hub::start_with(HubOpts { extra: &["--api-rate", "1", "--api-burst", "3"], ..HubOpts::default() }).await;
    let agent_token = hub.add_agent("w", &[]).await;
    for _ in 0..2 {
        hub.get("/status").await;
    }
    let response = reqwest::Client::new()
        .get(format!("{}/api/v1/status", hub.url))
        .bearer_auth(&hub.token)
        .send()
        .await
        .expect("an answer");
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"].to_str().unwrap().parse().expect("whole seconds");
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = response.json().await.expect("a problem body");
    assert!(body["detail"].as_str().unwrap().contains("limits.api_rate"), "{body}");

    // Another token has its own allowance.
    let (status, _) = hub.request_as(&agent_token, reqwest::Method::GET, "/ctl/messages", None).await;
    assert_eq!(status, 403, "the agent's token is refused for its scope, not for the admin's rate");

    // Back after the time it was told; then the limit is lifted at runtime.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let (status, body) = hub.request(reqwest::Method::PUT, "/config", Some(json!({ "limits.api_rate": 0 }))).await;
    assert_eq!(status, 200, "{body}");
    for _ in 0..10 {
        hub.get("/status").await;
    }
    let limited = metric(&hub, "muster_rate_limited_total{limit=\"api\"}").await;
    assert_eq!(limited, 1.0, "one request was refused");
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_tokens_are_counted_and_logged_with_the_client_address_never_the_token() {
    let hub = Hub::start().await;
    let forged = format!("mst_AAAAAAAAAAAA_{}", "B".repeat(43));
    for _ in 0..5 {
        let (status, _) = hub.request_as(&forged, reqwest::Method::GET, "/status", None).await;
        assert_eq!(status, 401);
    }
    let (status, _) = hub.request_as("", reqwest::Method::GET, "/status", None).await;
    assert_eq!(status, 401);
    assert_eq!(metric(&hub, "muster_auth_failures_total{reason=\"invalid\"}").await, 5.0);
    assert_eq!(metric(&hub, "muster_auth_failures_total{reason=\"missing\"}").await, 1.0);
    let lines = crate::logs::all_lines(&hub);
    let refused: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "authentication refused")
        .collect();
    assert!(!refused.is_empty() && refused.len() < 5, "logged at most once a second: {refused:?}");
    assert_eq!((&refused[0]["client"], &refused[0]["reason"]), (&json!("127.0.0.1"), &json!("invalid")));
    assert!(!lines.join("\n").contains("BBBBBBBBBB"), "the presented token reached the log");
}
