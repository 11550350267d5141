//! The dashboard: a web console served by the hub at `/`, its assets
//! embedded in the binary (no CDN, no build step: plain JavaScript).
//!
//! A person signs in with an admin token once; the hub answers with a
//! session in an `HttpOnly`, `SameSite=Strict` cookie (`Secure` under TLS),
//! stored by its hash in the database, so every hub on it knows it and a
//! restart signs nobody out. Requests that carry the cookie instead of a
//! bearer token must come from the hub's own origin when they change
//! anything, and the live event socket checks the origin at upgrade. The
//! pages are served with a Content-Security-Policy that allows no inline
//! script, and the script writes every value as text, never as markup.

use crate::Hub;
use crate::auth::{COOKIE, SESSION_IDLE, hash_token, session_cookie};
use crate::error::{ApiError, ApiResult, json};
use crate::extract::Path;
use crate::extract::{Admin, same_origin};
use axum::body::Bytes;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use muster_proto::api::{EventView, SessionStart};
use muster_proto::{from_json, to_json};
use std::time::Duration;

const INDEX: &str = include_str!("../ui/index.html");
const APP_JS: &str = include_str!("../ui/app.js");
const APP_CSS: &str = include_str!("../ui/app.css");

const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

#[utoipa::path(
    get,
    operation_id = "dashboard",
    path = "/",
    tag = "dashboard",
    responses(
        (status = 200, description = "The dashboard", body = String, content_type = "text/html"),
    ),
)]
pub(crate) async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

#[utoipa::path(
    get,
    operation_id = "dashboard_asset",
    path = "/ui/{name}",
    tag = "dashboard",
    params(
        ("name" = String, Path, description = "The asset's file name"),
    ),
    responses(
        (status = 200, description = "A dashboard asset: app.js or app.css", content(
            (String = "text/javascript"),
            (String = "text/css"),
        )),
    ),
)]
pub(crate) async fn asset(Path(name): Path<String>) -> Response {
    match name.as_str() {
        "app.js" => page("text/javascript; charset=utf-8", APP_JS),
        "app.css" => page("text/css; charset=utf-8", APP_CSS),
        _ => ApiError::NotFound(format!("no dashboard asset {name:?}")).into_response(),
    }
}

/// Refuses a cookie-authenticated request that changes something from
/// another origin (cross-site request forgery); bearer tokens are not sent
/// by browsers on their own, so they need no such check.
pub(crate) async fn guard_origin(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let headers = request.headers();
    let by_cookie = headers.get(header::AUTHORIZATION).is_none() && session_cookie(headers).is_some();
    let safe = matches!(*request.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let upgrade = headers.get(header::UPGRADE).is_some();
    if by_cookie && (!safe || upgrade) && !same_origin(headers) {
        return ApiError::Forbidden("a request from another origin is refused".into()).into_response();
    }
    next.run(request).await
}

/// `POST /api/v1/ui/session`: signs a browser in with an admin token.
#[utoipa::path(
    post,
    operation_id = "sign_in",
    path = "/ui/session",
    tag = "dashboard",
    request_body = muster_proto::api::SessionStart,
    responses(
        (status = 403, description = "Not from the hub's own page, or not an admin token", body = muster_proto::api::Problem, content_type = "application/problem+json"),
        (status = 401, description = "The token is not valid", body = muster_proto::api::Problem, content_type = "application/problem+json"),
        (status = 200, description = "Signed in; the session cookie is set", body = muster_proto::api::SessionView),
    ),
)]
pub(crate) async fn sign_in(State(hub): State<Hub>, headers: HeaderMap, body: Bytes) -> ApiResult {
    if !same_origin(&headers) {
        return Err(ApiError::Forbidden("sign in from the hub's own page".into()));
    }
    let req: SessionStart = from_json(&body)?;
    let bearer = format!("Bearer {}", req.token.trim());
    let token = match hub.authenticate(Some(&bearer)).await? {
        crate::auth::Caller::Admin(t) => t,
        _ => return Err(ApiError::Forbidden("only an admin token signs in to the dashboard".into())),
    };
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| ApiError::Internal(format!("no randomness available: {e}")))?;
    let id = crate::auth::hex(&raw);
    let expires = hub.now().plus(SESSION_IDLE);
    hub.shared.store.start_session(hash_token(&id), token.id.clone(), expires, hub.now()).await?;
    tracing::info!(token = %token.name, "signed in to the dashboard");
    let mut r = json(StatusCode::OK, &muster_proto::api::SessionView { name: token.name.clone() });
    // Sent only over TLS when the hub serves it.
    let secure = if hub.shared.tls.is_some() { "; Secure" } else { "" };
    let cookie =
        format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}", SESSION_IDLE.as_secs());
    r.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("a cookie is ASCII"));
    Ok(r)
}

/// `GET /api/v1/ui/session`: who the browser is signed in as.
#[utoipa::path(
    get,
    operation_id = "show_session",
    path = "/ui/session",
    tag = "dashboard",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Who is signed in", body = muster_proto::api::SessionView),
    ),
)]
pub(crate) async fn whoami(Admin(token): Admin) -> ApiResult {
    Ok(json(StatusCode::OK, &muster_proto::api::SessionView { name: token.name.clone() }))
}

/// `DELETE /api/v1/ui/session`: signs the browser out.
#[utoipa::path(
    delete,
    operation_id = "sign_out",
    path = "/ui/session",
    tag = "dashboard",
    responses(
        (status = 204, description = "Signed out"),
    ),
)]
pub(crate) async fn sign_out(State(hub): State<Hub>, headers: HeaderMap) -> ApiResult {
    if let Some(id) = session_cookie(&headers) {
        hub.shared.store.end_session(hash_token(&id)).await?;
    }
    let mut r = StatusCode::NO_CONTENT.into_response();
    let cookie = format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    r.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("a cookie is ASCII"));
    Ok(r)
}

/// `GET /api/v1/events/live?after=N`: the timeline as it happens, over a
/// WebSocket: first every event after `N` (a reconnect catches up), then
/// new ones in batches as they are written, and each new point of the
/// metrics window as it is taken.
#[utoipa::path(
    get,
    operation_id = "live_events",
    path = "/events/live",
    tag = "events",
    security(("admin_token" = [])),
    params(
        ("after" = Option<i64>, Query, description = "Events after this sequence number first"),
    ),
    responses(
        (status = 101, description = "Switching to a WebSocket of events"),
    ),
)]
pub(crate) async fn live(
    State(hub): State<Hub>,
    _: crate::extract::NotCrossOrigin,
    _: Admin,
    RawQuery(q): RawQuery,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult {
    let upgrade = upgrade.map_err(crate::extract::not_a_socket)?;
    let p = crate::extract::Params::parse(q, &["after"])?;
    let after = p.number::<i64>("after")?.unwrap_or(0);
    Ok(upgrade.on_upgrade(move |socket| stream_events(hub, socket, after)))
}

/// What the page asked to follow besides the timeline: one task's output.
struct Follow {
    task: muster_core::TaskId,
    after: i64,
}

async fn stream_events(hub: Hub, mut socket: WebSocket, mut after: i64) {
    let mut changes = hub.shared.store.subscribe();
    let mut output = hub.shared.output.subscribe();
    let mut stopping = hub.shared.stopping.subscribe();
    let mut points = hub.shared.window.fresh.subscribe();
    // Points taken so far; each one after it is sent, even when several
    // were taken while a send was slow.
    let mut sent = *points.borrow_and_update();
    let mut point_due = false;
    let mut follow: Option<Follow> = None;
    loop {
        changes.borrow_and_update();
        output.borrow_and_update();
        if std::mem::take(&mut point_due) | points.has_changed().unwrap_or(false) {
            let taken = *points.borrow_and_update();
            let new = usize::try_from(taken.saturating_sub(sent)).unwrap_or(usize::MAX).min(crate::window::POINTS);
            sent = taken;
            let fresh = hub.shared.window.latest(new);
            if !fresh.is_empty() {
                let text = to_json(&serde_json::json!({ "type": "metrics", "points": fresh }));
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
        }
        let filter = muster_store::EventFilter { after, limit: 500, ..Default::default() };
        let events = match hub.shared.store.events(&filter).await {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read events for a dashboard");
                return;
            }
        };
        let mut more = false;
        if let Some(last) = events.last() {
            after = last.seq;
            more |= events.len() == 500;
            let batch: Vec<EventView> = events.into_iter().map(crate::views::event_view).collect();
            let text = to_json(&serde_json::json!({ "type": "events", "events": batch }));
            if socket.send(Message::Text(text.into())).await.is_err() {
                return;
            }
        }
        if let Some(f) = follow.as_mut() {
            let filter = muster_store::OutputFilter { attempt: None, after: f.after, limit: 1000 };
            if let Ok(chunks) = hub.shared.store.read_output(&f.task, &filter).await
                && let Some(last) = chunks.last()
            {
                f.after = last.seq;
                more |= chunks.len() == 1000;
                let views: Vec<muster_proto::api::OutputView> =
                    chunks.into_iter().map(crate::views::output_view).collect();
                let text =
                    to_json(&serde_json::json!({ "type": "output", "task": f.task.to_string(), "chunks": views }));
                if socket.send(Message::Text(text.into())).await.is_err() {
                    return;
                }
            }
        }
        if more {
            continue;
        }
        tokio::select! {
            r = changes.changed() => if r.is_err() { return },
            r = output.changed() => if r.is_err() { return },
            r = points.changed() => {
                if r.is_err() {
                    return;
                }
                point_due = true;
            }
            _ = async { drop(stopping.wait_for(|s| *s).await) } => {
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
            msg = socket.recv() => match msg {
                // `{"follow": "t_…", "after": 0}` streams that task's output; `{"follow": null}` stops.
                Some(Ok(Message::Text(t))) => {
                    let asked: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
                    follow = asked["follow"].as_str().and_then(|id| muster_core::TaskId::parse(id).ok()).map(|task| Follow {
                        task,
                        after: asked["after"].as_i64().unwrap_or(0),
                    });
                    continue;
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                _ => {}
            },
            // Pings keep proxies from closing an idle socket.
            _ = tokio::time::sleep(Duration::from_secs(25)) => {
                if socket.send(Message::Ping(Vec::new().into())).await.is_err() {
                    return;
                }
            }
        }
        // Batch what arrives together rather than one frame per event.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
