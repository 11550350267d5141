//! Liveness, readiness and Prometheus metrics, outside `/api/v1`.

use super::*;

/// Liveness: `ok`.
#[utoipa::path(
    get,
    path = "/livez",
    tag = "probes",
    responses(
        (status = 200, description = "The process answers", body = String, content_type = "text/plain"),
    ),
)]
pub(super) async fn livez() -> &'static str {
    "ok\n"
}

/// Same as `/livez`.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "probes",
    responses(
        (status = 200, description = "The process answers (livez by another name)", body = String, content_type = "text/plain"),
    ),
)]
pub(super) async fn healthz() -> &'static str {
    livez().await
}

/// Ready to take work: the database answers and commits, the data disk has
/// room, and the hub is not draining. `?verbose` lists each check.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "probes",
    params(
        ("verbose" = Option<String>, Query, description = "List each check"),
    ),
    responses(
        (status = 200, description = "Ready to take work", body = String, content_type = "text/plain"),
        (status = 503, description = "Not ready; ?verbose says which check failed", body = String, content_type = "text/plain"),
    ),
)]
pub(super) async fn readyz(State(hub): State<Hub>, RawQuery(q): RawQuery) -> Response {
    let verbose = q.is_some_and(|q| q.split('&').any(|p| p == "verbose" || p.starts_with("verbose=")));
    let mut checks: Vec<(&str, Result<(), String>)> = Vec::new();
    checks.push(("database", hub.shared.store.ping().await.map_err(|e| e.to_string())));
    checks.push(("commits", hub.commits().await));
    checks.push(("disk", hub.disk_room().await));
    let draining = hub.shared.draining.load(std::sync::atomic::Ordering::SeqCst);
    checks.push(("draining", if draining { Err("the hub is shutting down".into()) } else { Ok(()) }));
    let ready = checks.iter().all(|(_, r)| r.is_ok());
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = if verbose {
        let mut text: String = checks
            .iter()
            .map(|(name, r)| match r {
                Ok(()) => format!("[+] {name} ok\n"),
                Err(why) => format!("[-] {name} failed: {why}\n"),
            })
            .collect();
        text.push_str(if ready { "ready\n" } else { "not ready\n" });
        text
    } else if ready {
        "ready\n".to_owned()
    } else {
        "not ready\n".to_owned()
    };
    (status, body).into_response()
}

/// Prometheus metrics. Unauthenticated like `/livez`: it carries counts
/// only, no ids, names of tasks or secrets.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "probes",
    responses(
        (status = 200, description = "Prometheus metrics", body = String, content_type = "text/plain"),
    ),
)]
pub(super) async fn metrics(State(hub): State<Hub>) -> ApiResult {
    let text = hub.render_metrics().await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}
