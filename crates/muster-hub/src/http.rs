//! The REST API under `/api/v1`, its errors, and the health routes.

use crate::Hub;
use crate::auth::{Caller, hash_token, mint_token};
use axum::Router;
use axum::body::Bytes;
use axum::extract::MatchedPath;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use muster_core::{AgentName, Capability, Live, MicroUsd, Millis, RunnerName, Task, TaskId, TaskState, TokenId};
use muster_proto::api::{
    AgentAdd, AgentCreated, AgentView, AttemptView, EventPage, EventView, LogsPage, OutputView, Problem, StatusView,
    TaskBatch, TaskBatchCreated, TaskCreated, TaskDefaults, TaskDetail, TaskPage, TaskSubmit, TaskView, TokenView,
};
use muster_proto::{FieldError, from_json, timestamp, to_json};
use muster_store::{AgentRecord, EventFilter, NewAgent, NewToken, OutputFilter, Scope, StoreError, TaskFilter};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use utoipa_axum::{router::OpenApiRouter, routes};

/// Largest request body. Prompts are capped at 1 MiB by validation, which
/// names the field; this only stops bodies far beyond any valid request.
const MAX_BODY_BYTES: usize = 8 << 20;
/// Longest a long-poll (`?wait=`) may hold a request.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// Every way a request can fail, each mapped to a status and a problem body.
#[derive(Debug)]
pub enum ApiError {
    BadRequest(FieldError),
    Unauthorized(String),
    Forbidden(String),
    NotFound(String),
    Conflict {
        field: Option<String>,
        detail: String,
    },
    Unavailable(String),
    /// The request body is larger than the hub takes (413).
    TooLarge(String),
    /// The disk has no room for the change (507); nothing was written.
    InsufficientStorage(String),
    /// Over a rate limit: try again after `retry_after`.
    TooManyRequests {
        detail: String,
        retry_after: Duration,
    },
    Internal(String),
}

impl ApiError {
    pub(crate) fn bad(field: &str, reason: impl Into<String>) -> ApiError {
        ApiError::BadRequest(FieldError { field: field.to_owned(), reason: reason.into() })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::BadRequest(e) => write!(f, "{e}"),
            ApiError::Conflict { detail, .. } | ApiError::TooManyRequests { detail, .. } => f.write_str(detail),
            ApiError::Unauthorized(d)
            | ApiError::Forbidden(d)
            | ApiError::NotFound(d)
            | ApiError::TooLarge(d)
            | ApiError::Unavailable(d)
            | ApiError::InsufficientStorage(d)
            | ApiError::Internal(d) => f.write_str(d),
        }
    }
}

impl std::error::Error for ApiError {}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> ApiError {
        ApiError::BadRequest(e)
    }
}

impl From<muster_core::Invalid> for ApiError {
    fn from(e: muster_core::Invalid) -> ApiError {
        ApiError::BadRequest(e.into())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound { what, id } => ApiError::NotFound(format!("no {what} {id}")),
            StoreError::Conflict(detail) => ApiError::Conflict { field: None, detail },
            StoreError::Refused(r) => ApiError::Conflict { field: Some("state".into()), detail: r.to_string() },
            StoreError::Invalid(i) => ApiError::BadRequest(i.into()),
            StoreError::Closed => ApiError::Unavailable("the hub is shutting down".into()),
            StoreError::NoSpace(detail) => ApiError::InsufficientStorage(detail),
            StoreError::Database(detail) => ApiError::Internal(detail),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry_after = match &self {
            ApiError::TooManyRequests { retry_after, .. } => Some(crate::quota::retry_after_secs(*retry_after)),
            _ => None,
        };
        let (status, title, detail, field) = match self {
            ApiError::BadRequest(e) => {
                let field = (!e.field.is_empty()).then(|| e.field.clone());
                (StatusCode::BAD_REQUEST, "invalid request", e.to_string(), field)
            }
            ApiError::Unauthorized(d) => (StatusCode::UNAUTHORIZED, "unauthorized", d, None),
            ApiError::Forbidden(d) => (StatusCode::FORBIDDEN, "forbidden", d, None),
            ApiError::NotFound(d) => (StatusCode::NOT_FOUND, "not found", d, None),
            ApiError::TooLarge(d) => (StatusCode::PAYLOAD_TOO_LARGE, "payload too large", d, None),
            ApiError::Conflict { field, detail } => (StatusCode::CONFLICT, "conflict", detail, field),
            ApiError::Unavailable(d) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable", d, None),
            ApiError::InsufficientStorage(d) => (StatusCode::INSUFFICIENT_STORAGE, "insufficient storage", d, None),
            ApiError::TooManyRequests { detail, .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too many requests", detail, None)
            }
            ApiError::Internal(d) => (StatusCode::INTERNAL_SERVER_ERROR, "internal error", d, None),
        };
        let problem =
            Problem { kind: "about:blank".into(), title: title.into(), status: status.as_u16(), detail, field };
        let mut response = (status, to_json(&problem)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/problem+json"));
        if let Some(secs) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        response
    }
}

pub(crate) type ApiResult<T = Response> = Result<T, ApiError>;

/// A request made with the admin token or a signed-in dashboard session:
/// operator routes take this, so no handler checks a header itself.
pub(crate) struct Admin(pub muster_store::TokenRecord);

impl axum::extract::FromRequestParts<Hub> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, hub: &Hub) -> ApiResult<Admin> {
        hub.admin(&parts.headers).await.map(Admin)
    }
}

/// A run speaking for its own task with the task token it was given: the
/// `ctl` routes take this.
pub(crate) struct TaskCaller(pub TaskId, pub muster_core::Epoch);

impl axum::extract::FromRequestParts<Hub> for TaskCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, hub: &Hub) -> ApiResult<TaskCaller> {
        let (task, epoch) = hub.task_caller(&parts.headers).await?;
        Ok(TaskCaller(task, epoch))
    }
}

/// An agent with its own token: the agent socket takes this.
pub(crate) struct AgentCaller(pub AgentName);

impl axum::extract::FromRequestParts<Hub> for AgentCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, hub: &Hub) -> ApiResult<AgentCaller> {
        match hub.caller(&parts.headers).await? {
            Caller::Agent(name) => Ok(AgentCaller(name)),
            Caller::Admin(_) => {
                Err(ApiError::Forbidden("an admin token cannot connect as an agent; use the agent's own token".into()))
            }
            Caller::Task { task, .. } => Err(ApiError::Forbidden(format!(
                "{task}'s task token cannot connect as an agent; use the agent's own token"
            ))),
        }
    }
}

/// A path parameter; one that cannot be read is a 400 problem like any
/// other bad input.
pub(crate) struct Path<T>(pub T);

impl<T: serde::de::DeserializeOwned + Send> axum::extract::FromRequestParts<Hub> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, hub: &Hub) -> ApiResult<Path<T>> {
        match axum::extract::Path::<T>::from_request_parts(parts, hub).await {
            Ok(axum::extract::Path(value)) => Ok(Path(value)),
            Err(e) => Err(ApiError::bad("path", e.body_text())),
        }
    }
}

/// A WebSocket route asked without the upgrade: a 400 problem, or 426 when
/// the connection cannot be upgraded at all.
pub(crate) fn not_a_socket(e: axum::extract::ws::rejection::WebSocketUpgradeRejection) -> ApiError {
    ApiError::bad("", e.body_text())
}

/// A JSON request body, read as `muster_proto::from_json` reads it: a bad
/// body is a 400 naming the field.
pub(crate) struct Body<T>(pub T);

impl<T: serde::de::DeserializeOwned> axum::extract::FromRequest<Hub> for Body<T> {
    type Rejection = Response;

    async fn from_request(request: axum::extract::Request, hub: &Hub) -> Result<Body<T>, Response> {
        let bytes = match Bytes::from_request(request, hub).await {
            Ok(bytes) => bytes,
            Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                return Err(
                    ApiError::TooLarge(format!("the body is larger than {MAX_BODY_BYTES} bytes")).into_response()
                );
            }
            Err(e) => return Err(ApiError::bad("", e.body_text()).into_response()),
        };
        from_json(&bytes).map(Body).map_err(|e| ApiError::from(e).into_response())
    }
}

pub(crate) fn json<T: serde::Serialize>(status: StatusCode, body: &T) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], (status, to_json(body))).into_response()
}

/// The hub's routes, and the OpenAPI document generated from the same
/// handlers: a route without a description cannot be added, nor the reverse.
pub(crate) fn routes() -> (Router<Hub>, utoipa::openapi::OpenApi) {
    let api = OpenApiRouter::new()
        .routes(routes!(create_task, list_tasks))
        .routes(routes!(create_tasks))
        .routes(routes!(show_task))
        .routes(routes!(cancel_task))
        .routes(routes!(retry_task))
        .routes(routes!(skip_task))
        .routes(routes!(approve_task))
        .routes(routes!(reject_task))
        .routes(routes!(reset_task))
        .routes(routes!(move_task))
        .routes(routes!(task_logs))
        .routes(routes!(task_steps))
        .routes(routes!(task_diff))
        .routes(routes!(add_agent, list_agents))
        .routes(routes!(show_agent, remove_agent))
        .routes(routes!(pause_agent))
        .routes(routes!(resume_agent))
        .routes(routes!(reissue_token))
        .routes(routes!(drain_agent))
        .routes(routes!(agent_doctor))
        .routes(routes!(pause_dispatch))
        .routes(routes!(resume_dispatch))
        .routes(routes!(list_tokens))
        .routes(routes!(revoke_token))
        .routes(routes!(list_events))
        .routes(routes!(status))
        .routes(routes!(health))
        .routes(routes!(slo))
        .routes(routes!(costs))
        .routes(routes!(ctl_note))
        .routes(routes!(ctl_lock))
        .routes(routes!(crate::decisions::ctl_ask, crate::decisions::ctl_list))
        .routes(routes!(crate::decisions::ctl_show))
        .routes(routes!(crate::decisions::add, crate::decisions::list))
        .routes(routes!(crate::pipelines::run, crate::pipelines::list))
        .routes(routes!(crate::pipelines::show))
        .routes(routes!(crate::decisions::show))
        .routes(routes!(crate::decisions::conflicts))
        .routes(routes!(regressions))
        .routes(routes!(crate::messages::send, crate::messages::list))
        .routes(routes!(crate::messages::create_channel, crate::messages::channels))
        .routes(routes!(crate::messages::ctl_send, crate::messages::ctl_read))
        .routes(routes!(ctl_create_task))
        .routes(routes!(crate::schedules::add, crate::schedules::list))
        .routes(routes!(crate::schedules::show, crate::schedules::delete))
        .routes(routes!(crate::schedules::pause))
        .routes(routes!(crate::schedules::resume))
        .routes(routes!(crate::decisions::answer))
        .routes(routes!(ctl_unlock))
        .routes(routes!(locks))
        .routes(routes!(unlock))
        .routes(routes!(shadow_policies, put_shadow_policy))
        .routes(routes!(shadow_report))
        .routes(routes!(breakers))
        .routes(routes!(runners))
        .routes(routes!(disable_runner))
        .routes(routes!(enable_runner))
        .routes(routes!(reset_breaker))
        .routes(routes!(metrics_window))
        .routes(routes!(create_backup, list_backups))
        .routes(routes!(check))
        .routes(routes!(db))
        .routes(routes!(compact))
        .routes(routes!(diagnose))
        .routes(routes!(workers))
        .routes(routes!(put_log_level))
        .routes(routes!(list_alerts))
        .routes(routes!(ack_alert))
        .routes(routes!(config, put_config))
        .routes(routes!(alert_config, put_alert_config))
        .routes(routes!(version))
        .routes(routes!(crate::socket::connect))
        .routes(routes!(crate::ui::sign_in, crate::ui::whoami, crate::ui::sign_out))
        .routes(routes!(crate::ui::live))
        .layer(axum::middleware::from_fn(crate::ui::guard_origin));
    OpenApiRouter::with_openapi(crate::openapi::base())
        .routes(routes!(crate::ui::index))
        .routes(routes!(crate::ui::asset))
        .routes(routes!(livez))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(openapi_json))
        .nest(muster_proto::API_PREFIX, api)
        .split_for_parts()
}

pub fn router(hub: Hub) -> Router {
    let (routes, _) = routes();
    routes
        .route_layer(axum::middleware::from_fn_with_state(hub.clone(), track))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(hub)
}

/// The OpenAPI 3.1 document of this API, made once.
static OPENAPI: std::sync::LazyLock<Bytes> = std::sync::LazyLock::new(|| {
    let mut doc = routes().1;
    crate::openapi::finish(&mut doc);
    Bytes::from(doc.to_json().expect("the OpenAPI document serializes"))
});

#[utoipa::path(
    get,
    path = "/api/v1/openapi.json",
    tag = "probes",
    responses(
        (status = 200, description = "This document", body = Object, content_type = "application/json"),
    ),
)]
async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI.clone()).into_response()
}

/// Liveness: `ok`.
#[utoipa::path(
    get,
    path = "/livez",
    tag = "probes",
    responses(
        (status = 200, description = "The process answers", body = String, content_type = "text/plain"),
    ),
)]
async fn livez() -> &'static str {
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
async fn healthz() -> &'static str {
    livez().await
}

/// Counts every routed request by its route template (never the raw path,
/// which would carry ids), method and status.
async fn track(
    State(hub): State<Hub>,
    route: Option<MatchedPath>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let route = route.map_or_else(|| "unmatched".to_owned(), |r| r.as_str().to_owned());
    let method: &'static str = match *request.method() {
        axum::http::Method::GET => "GET",
        axum::http::Method::POST => "POST",
        axum::http::Method::PUT => "PUT",
        axum::http::Method::DELETE => "DELETE",
        axum::http::Method::PATCH => "PATCH",
        axum::http::Method::HEAD => "HEAD",
        axum::http::Method::OPTIONS => "OPTIONS",
        _ => "other",
    };
    let started = std::time::Instant::now();
    let mut id = [0u8; 8];
    let _ = getrandom::fill(&mut id);
    let request_id = crate::auth::hex(&id);
    let span = tracing::info_span!("request", request_id = %request_id, route = %route);
    let response = tracing::Instrument::instrument(next.run(request), span).await;
    let m = hub.metrics();
    m.http_requests.with(&[&route, method, response.status().as_str()]).inc();
    m.http_duration.with(&[&route]).observe(started.elapsed().as_secs_f64());
    response
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
async fn readyz(State(hub): State<Hub>, RawQuery(q): RawQuery) -> Response {
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
async fn metrics(State(hub): State<Hub>) -> ApiResult {
    let text = hub.render_metrics().await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response())
}

/// Version, API version, agent protocol.
#[utoipa::path(
    get,
    path = "/version",
    tag = "fleet",
    responses(
        (status = 200, description = "The hub's version and protocol", body = muster_proto::api::VersionView),
    ),
)]
async fn version() -> Response {
    let view = muster_proto::api::VersionView {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        api: "v1".to_owned(),
        agent_protocol: muster_proto::ws::PROTOCOL_VERSION,
    };
    json(StatusCode::OK, &view)
}

impl Hub {
    /// The health level over the configured window of recent runs.
    pub(crate) async fn health(&self) -> ApiResult<muster_proto::api::HealthView> {
        let config = &self.shared.config;
        let since = muster_core::Millis(self.now().0 - config.health_window.as_millis() as i64);
        let outcomes = self.shared.store.outcomes_since(since).await?;
        let (succeeded, failed) = muster_core::Outcome::tally(&outcomes);
        let (level, reasons) = muster_core::health::assess(succeeded, failed, &config.health);
        Ok(muster_proto::api::HealthView {
            level: level.as_str().to_owned(),
            reasons,
            window_secs: config.health_window.as_secs(),
            succeeded,
            failed,
        })
    }
}

/// Every alert rule with its state and settings.
#[utoipa::path(
    get,
    path = "/alerts",
    tag = "alerts",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Alert rules and their state", body = Vec<muster_proto::api::AlertView>),
    ),
)]
async fn list_alerts(State(hub): State<Hub>, _: Admin) -> ApiResult {
    Ok(json(StatusCode::OK, &hub.alert_views().await?))
}

/// Acknowledge a firing alert (409 if it is not firing).
#[utoipa::path(
    post,
    path = "/alerts/{rule}/ack",
    tag = "alerts",
    security(("admin_token" = [])),
    params(
        ("rule" = String, Path, description = "The alert rule"),
    ),
    responses(
        (status = 200, description = "Acknowledged", body = muster_proto::api::AlertView),
    ),
)]
async fn ack_alert(State(hub): State<Hub>, Admin(by): Admin, Path(rule): Path<String>) -> ApiResult {
    let rule = muster_core::alert::Rule::parse(&rule)?;
    match hub.shared.store.acknowledge_alert(rule, &by.name, hub.now()).await {
        Ok(_) => {}
        // Not firing is a state conflict, not a malformed request.
        Err(StoreError::Invalid(i)) => {
            return Err(ApiError::Conflict {
                field: Some(i.field.to_owned()),
                detail: format!("{}: {}", rule.as_str(), i.reason),
            });
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(rule = rule.as_str(), by = %by.name, "alert acknowledged");
    let views = hub.alert_views().await?;
    let view = views
        .into_iter()
        .find(|v| v.rule == rule.as_str())
        .ok_or_else(|| ApiError::Internal("alert vanished".into()))?;
    Ok(json(StatusCode::OK, &view))
}

/// Every runtime setting with its value, startup value and source; PUT changes the keys given
/// (`null` resets), all or nothing.
#[utoipa::path(
    get,
    path = "/config",
    tag = "config",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Runtime settings", body = muster_proto::api::ConfigView),
    ),
)]
async fn config(State(hub): State<Hub>, _: Admin) -> ApiResult {
    Ok(json(StatusCode::OK, &hub.config_view().await?))
}

/// Every runtime setting with its value, startup value and source; PUT changes the keys given
/// (`null` resets), all or nothing.
#[utoipa::path(
    put,
    path = "/config",
    tag = "config",
    security(("admin_token" = [])),
    request_body = std::collections::BTreeMap<String, serde_json::Value>,
    responses(
        (status = 200, description = "Runtime settings after the change", body = muster_proto::api::ConfigView),
    ),
)]
async fn put_config(
    State(hub): State<Hub>,
    Admin(by): Admin,
    Body(patch): Body<BTreeMap<String, serde_json::Value>>,
) -> ApiResult {
    // Once approvers are named, only they may change who they are.
    if patch.contains_key("approval.approvers") {
        check_approver(&hub, &by.name)?;
    }
    hub.update_config(patch, &by.name).await?;
    Ok(json(StatusCode::OK, &hub.config_view().await?))
}

/// Database size, free pages, rows, last backup, last compaction, retention.
#[utoipa::path(
    get,
    path = "/admin/db",
    tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The database", body = muster_proto::api::DbView),
    ),
)]
async fn db(State(hub): State<Hub>, _: Admin) -> ApiResult {
    Ok(json(StatusCode::OK, &hub.db_view().await?))
}

/// Apply retention and give free space back now (409 while one runs).
#[utoipa::path(
    post,
    path = "/admin/compact",
    tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Pruned and compacted", body = muster_proto::api::CompactView),
    ),
)]
async fn compact(State(hub): State<Hub>, Admin(by): Admin) -> ApiResult {
    Ok(json(StatusCode::OK, &hub.compact_now(&by.name, true).await?))
}

/// Alert rules' settings; PUT changes the fields given.
#[utoipa::path(
    get,
    path = "/config/alerts",
    tag = "config",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Alert rule settings", body = std::collections::BTreeMap<String, muster_proto::api::RuleConfigView>),
    ),
)]
async fn alert_config(State(hub): State<Hub>, _: Admin) -> ApiResult {
    Ok(json(StatusCode::OK, &hub.alert_config_views().await?))
}

/// Alert rules' settings; PUT changes the fields given.
#[utoipa::path(
    put,
    path = "/config/alerts",
    tag = "config",
    security(("admin_token" = [])),
    request_body = std::collections::BTreeMap<String, muster_proto::api::RuleConfigPatch>,
    responses(
        (status = 200, description = "Alert rule settings after the change", body = std::collections::BTreeMap<String, muster_proto::api::RuleConfigView>),
    ),
)]
async fn put_alert_config(
    State(hub): State<Hub>,
    Admin(by): Admin,
    Body(patch): Body<BTreeMap<String, muster_proto::api::RuleConfigPatch>>,
) -> ApiResult {
    hub.update_alert_config(patch, &by.name).await?;
    Ok(json(StatusCode::OK, &hub.alert_config_views().await?))
}

#[utoipa::path(
    put,
    path = "/admin/log-level",
    tag = "admin",
    security(("admin_token" = [])),
    request_body = muster_proto::api::LogLevel,
    responses(
        (status = 200, description = "The level now", body = muster_proto::api::LogLevel),
    ),
)]
async fn put_log_level(
    State(hub): State<Hub>,
    Admin(by): Admin,
    Body(muster_proto::api::LogLevel { level }): Body<muster_proto::api::LogLevel>,
) -> ApiResult {
    let set =
        hub.shared.log_level.get().ok_or_else(|| ApiError::Unavailable("this hub's log level is fixed".into()))?;
    set(&level).map_err(|reason| ApiError::BadRequest(FieldError { field: "level".into(), reason }))?;
    tracing::warn!(level = %level, by = %by.name, "log level changed until the next restart");
    Ok(json(StatusCode::OK, &muster_proto::api::LogLevel { level }))
}

/// The hub's background workers: what each does, whether it is waiting or
/// working, its passes, and its last error until a pass succeeds.
#[utoipa::path(
    get,
    path = "/admin/workers",
    tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Every background worker", body = Vec<muster_proto::api::WorkerView>),
    ),
)]
async fn workers(State(hub): State<Hub>, _: Admin) -> ApiResult {
    Ok(json(StatusCode::OK, &hub.shared.workers.views()))
}

/// What `muster diagnose` prints: problems with next steps, notes (agents never started), recent
/// log warnings.
#[utoipa::path(
    get,
    path = "/admin/diagnose",
    tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "What is wrong, with the next step for each", body = muster_proto::api::DiagnoseView),
    ),
)]
async fn diagnose(State(hub): State<Hub>, _: Admin) -> ApiResult {
    Ok(json(StatusCode::OK, &hub.diagnose().await?))
}

/// Integrity check and invariants; `?repair=true` repairs.
#[utoipa::path(
    post,
    path = "/admin/check",
    tag = "admin",
    security(("admin_token" = [])),
    params(
        ("repair" = Option<bool>, Query, description = "Repair what it finds"),
    ),
    responses(
        (status = 200, description = "What the check found", body = muster_proto::api::CheckView),
    ),
)]
async fn check(State(hub): State<Hub>, Admin(by): Admin, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q, &["repair"])?;
    let repair = p.flag("repair")?;
    let views = |findings: Vec<(String, String)>| -> Vec<muster_proto::api::FindingView> {
        findings.into_iter().map(|(kind, detail)| muster_proto::api::FindingView { kind, detail }).collect()
    };
    let report = hub.shared.store.check(repair, hub.now()).await?;
    let remaining = if repair && !report.repaired.is_empty() {
        tracing::warn!(by = %by.name, repaired = ?report.repaired, "database repaired");
        // Expired leases are reclaimed by the dispatch loop.
        hub.wake_dispatcher();
        hub.shared.store.check(false, hub.now()).await?.findings
    } else {
        report.findings.clone()
    };
    let view = muster_proto::api::CheckView {
        findings: views(report.findings),
        repaired: report.repaired,
        remaining: views(remaining),
    };
    Ok(json(StatusCode::OK, &view))
}

/// Make a verified backup now; list backups.
#[utoipa::path(
    post,
    path = "/admin/backups",
    tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 201, description = "Backed up and verified", body = muster_proto::api::BackupView),
    ),
)]
async fn create_backup(State(hub): State<Hub>, Admin(by): Admin) -> ApiResult {
    tracing::info!(by = %by.name, "backup requested");
    let backup = hub.backup_now().await?;
    Ok(json(StatusCode::CREATED, &backup))
}

/// Make a verified backup now; list backups.
#[utoipa::path(
    get,
    path = "/admin/backups",
    tag = "admin",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Backups, newest first", body = Vec<muster_proto::api::BackupView>),
    ),
)]
async fn list_backups(State(hub): State<Hub>, _: Admin) -> ApiResult {
    let dir = &hub.config().backup_dir;
    let backups = crate::backup::list(dir)
        .map_err(|e| ApiError::Internal(format!("cannot list backups in {}: {e}", dir.display())))?;
    Ok(json(StatusCode::OK, &backups))
}

/// The last hour: 360 points and the queue's trend.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "fleet",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The last hour, point by point", body = muster_proto::api::MetricsWindow),
    ),
)]
async fn metrics_window(State(hub): State<Hub>, _: Admin) -> ApiResult {
    Ok(json(StatusCode::OK, &hub.metrics_window()))
}

fn breaker_view(
    b: &muster_core::breaker::Breaker,
    policy: muster_core::breaker::Policy,
) -> muster_proto::api::BreakerView {
    muster_proto::api::BreakerView {
        scope: b.scope.as_str().to_owned(),
        name: b.name.clone(),
        state: b.state.as_str().to_owned(),
        failures: b.failures,
        opened_at: b.opened_at.map(timestamp),
        half_opens_at: b.half_opens_at(policy).map(timestamp),
        probe: b.probe.as_ref().map(|p| p.to_string()),
    }
}

/// Every circuit breaker that has seen a failure.
#[utoipa::path(
    get,
    path = "/breakers",
    tag = "runners",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Circuit breakers", body = Vec<muster_proto::api::BreakerView>),
    ),
)]
async fn breakers(State(hub): State<Hub>, _: Admin) -> ApiResult {
    let policy = hub.shared.runtime.borrow().breaker_policy();
    let all = hub.shared.store.breakers().await?;
    let views: Vec<_> = all.iter().map(|b| breaker_view(b, policy)).collect();
    Ok(json(StatusCode::OK, &views))
}

/// Close one now; `scope` is `agent` or `runner`.
#[utoipa::path(
    post,
    path = "/breakers/{scope}/{name}/reset",
    tag = "runners",
    security(("admin_token" = [])),
    params(
        ("scope" = String, Path, description = "runner or agent"),
        ("name" = String, Path, description = "The runner's or agent's name"),
    ),
    responses(
        (status = 200, description = "Closed", body = muster_proto::api::BreakerView),
    ),
)]
async fn reset_breaker(
    State(hub): State<Hub>,
    Admin(by): Admin,
    Path((scope, name)): Path<(String, String)>,
) -> ApiResult {
    let scope = muster_core::breaker::Scope::parse(&scope)?;
    let b = hub.shared.store.reset_breaker(scope, &name, &by.name, hub.now()).await?;
    tracing::info!(scope = scope.as_str(), name = %name, by = %by.name, "circuit breaker reset");
    hub.wake_dispatcher();
    let policy = hub.shared.runtime.borrow().breaker_policy();
    Ok(json(StatusCode::OK, &breaker_view(&b, policy)))
}

/// Every known runner: status, agents offering it, why it is disabled.
#[utoipa::path(
    get,
    path = "/runners",
    tag = "runners",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Runners", body = Vec<muster_proto::api::RunnerView>),
    ),
)]
async fn runners(State(hub): State<Hub>, _: Admin) -> ApiResult {
    Ok(json(StatusCode::OK, &runner_views(&hub).await?))
}

/// Every known runner: whether it is in service, and who offers it.
async fn runner_views(hub: &Hub) -> ApiResult<Vec<muster_proto::api::RunnerView>> {
    let mut known: std::collections::BTreeSet<RunnerName> =
        hub.shared.known_runners.lock().expect("runners lock poisoned").iter().cloned().collect();
    let disabled = hub.shared.store.disabled_runners().await?;
    // A runner disabled before a restart is listed even before an agent offers it again.
    known.extend(disabled.iter().map(|d| d.name.clone()));
    let breakers = hub.shared.store.breakers().await?;
    let agents = hub.shared.store.list_agents().await?;
    let mut views = Vec::new();
    let now = hub.now();
    for name in known {
        let off = disabled.iter().find(|d| d.name == name && d.in_force(now));
        let breaker = breakers
            .iter()
            .find(|b| b.scope == muster_core::breaker::Scope::Runner && b.name == name.as_str())
            .map(|b| b.state);
        let offering: Vec<String> = agents
            .iter()
            .filter(|a| a.status.connected && a.runners.contains(&name))
            .map(|a| a.name.to_string())
            .collect();
        let status = match (off, breaker) {
            (Some(d), _) if d.until.is_some() => "limited",
            (Some(_), _) => "disabled",
            (None, Some(muster_core::breaker::State::Open)) => "circuit open",
            (None, Some(muster_core::breaker::State::HalfOpen)) => "half-open",
            _ if offering.is_empty() => "no agent",
            _ => "available",
        };
        views.push(muster_proto::api::RunnerView {
            name: name.to_string(),
            status: status.to_owned(),
            agents: offering,
            disabled_reason: off.map(|d| d.reason.clone()),
            disabled_by: off.map(|d| d.by.clone()),
            disabled_at: off.map(|d| timestamp(d.at)),
            until: off.and_then(|d| d.until).map(timestamp),
            breaker: breaker.map(|s| s.as_str().to_owned()),
        });
    }
    Ok(views)
}

async fn runner_view(hub: &Hub, name: &RunnerName) -> ApiResult {
    let views = runner_views(hub).await?;
    let view = views
        .into_iter()
        .find(|v| v.name == name.as_str())
        .ok_or_else(|| ApiError::NotFound(format!("no runner {name:?} is known to this hub")))?;
    Ok(json(StatusCode::OK, &view))
}

/// Body `{"reason": "..."}`. Nothing more is dispatched to it.
#[utoipa::path(
    post,
    path = "/runners/{name}/disable",
    tag = "runners",
    security(("admin_token" = [])),
    params(
        ("name" = String, Path, description = "The runner's name"),
    ),
    request_body = muster_proto::api::RunnerDisable,
    responses(
        (status = 200, description = "Out of service", body = muster_proto::api::RunnerView),
    ),
)]
async fn disable_runner(
    State(hub): State<Hub>,
    Admin(by): Admin,
    Path(name): Path<String>,
    Body(body): Body<muster_proto::api::RunnerDisable>,
) -> ApiResult {
    let name = RunnerName::parse(&name)?;
    if !hub.shared.known_runners.lock().expect("runners lock poisoned").contains(&name) {
        return Err(ApiError::NotFound(format!("no runner {name:?} is known to this hub")));
    }
    hub.shared.store.disable_runner(&name, &body.reason, &by.name, hub.now()).await?;
    tracing::warn!(runner = %name, reason = %body.reason, by = %by.name, "runner disabled");
    hub.wake_dispatcher();
    runner_view(&hub, &name).await
}

/// Back in service; 404 if it was not disabled.
#[utoipa::path(
    post,
    path = "/runners/{name}/enable",
    tag = "runners",
    security(("admin_token" = [])),
    params(
        ("name" = String, Path, description = "The runner's name"),
    ),
    responses(
        (status = 200, description = "In service", body = muster_proto::api::RunnerView),
    ),
)]
async fn enable_runner(State(hub): State<Hub>, Admin(by): Admin, Path(name): Path<String>) -> ApiResult {
    let name = RunnerName::parse(&name)?;
    hub.shared.store.enable_runner(&name, &by.name, hub.now()).await?;
    tracing::info!(runner = %name, by = %by.name, "runner enabled");
    hub.wake_dispatcher();
    runner_view(&hub, &name).await
}

/// The shadow policies in force.
#[utoipa::path(
    get,
    path = "/shadow/policies",
    tag = "runners",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Shadow policies", body = Vec<muster_proto::api::ShadowPolicy>),
    ),
)]
async fn shadow_policies(State(hub): State<Hub>, _: Admin) -> ApiResult {
    Ok(json(StatusCode::OK, &hub.shadow_policies().await?))
}

/// Body `{"runner": "codex", "percent": 10, "filters": ["cap=rust"]}`; `percent` 0 removes it.
#[utoipa::path(
    put,
    path = "/shadow/policies",
    tag = "runners",
    security(("admin_token" = [])),
    request_body = muster_proto::api::ShadowPolicy,
    responses(
        (status = 200, description = "Shadow policies after the change", body = Vec<muster_proto::api::ShadowPolicy>),
    ),
)]
async fn put_shadow_policy(
    State(hub): State<Hub>,
    Admin(by): Admin,
    Body(policy): Body<muster_proto::api::ShadowPolicy>,
) -> ApiResult {
    hub.set_shadow_policy(policy, &by.name).await?;
    Ok(json(StatusCode::OK, &hub.shadow_policies().await?))
}

/// Finished task and shadow pairs compared: outcome and output agreement, run time and cost deltas,
/// mismatches.
#[utoipa::path(
    get,
    path = "/shadow/report",
    tag = "runners",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "How shadow runs compare", body = muster_proto::api::ShadowReport),
    ),
)]
async fn shadow_report(State(hub): State<Hub>, _: Admin) -> ApiResult {
    Ok(json(StatusCode::OK, &hub.shadow_report().await?))
}

/// Tokens and cost summed. Query: `by` (`day` (default), `runner`, `agent`, `task`), `since` (a
/// duration back from now).
#[utoipa::path(
    get,
    path = "/costs",
    tag = "fleet",
    security(("admin_token" = [])),
    params(
        ("by" = Option<String>, Query, description = "task, agent, runner or day"),
        ("since" = Option<String>, Query, description = "How far back, e.g. 7d"),
    ),
    responses(
        (status = 200, description = "Tokens and cost summed by a key", body = muster_proto::api::CostsView),
    ),
)]
async fn costs(State(hub): State<Hub>, _: Admin, RawQuery(q): RawQuery) -> ApiResult {
    use muster_proto::api::{CostRowView, CostsView};
    let p = Params::parse(q, &["by", "since"])?;
    let by = match p.get("by") {
        None => muster_store::CostGroup::Day,
        Some(b) => muster_store::CostGroup::parse(b).ok_or_else(|| {
            ApiError::BadRequest(muster_proto::FieldError {
                field: "by".into(),
                reason: format!("unknown grouping {b:?}; expected task, agent, runner or day"),
            })
        })?,
    };
    let now = hub.now();
    let since = match p.get("since") {
        None => muster_core::Millis(0),
        Some(s) => {
            let back = muster_proto::parse_duration("since", s).map_err(ApiError::BadRequest)?;
            muster_core::Millis(now.0.saturating_sub(back.as_millis().min(i64::MAX as u128) as i64))
        }
    };
    let (rows, all) = hub.shared.store.costs(by, since).await?;
    let view = |r: &muster_store::CostRow| CostRowView {
        key: r.key.clone(),
        attempts: r.attempts,
        priced_attempts: r.priced,
        input_tokens: r.tokens.input,
        output_tokens: r.tokens.output,
        cache_read_tokens: r.tokens.cache_read,
        cache_write_tokens: r.tokens.cache_write,
        cost_usd: r.cost.usd(),
    };
    let costs = CostsView {
        by: by.as_str().to_owned(),
        since: timestamp(since),
        rows: rows.iter().map(view).collect(),
        total: view(&all),
    };
    Ok(json(StatusCode::OK, &costs))
}

/// Each objective with its error budget left and burn rate.
#[utoipa::path(
    get,
    path = "/slo",
    tag = "fleet",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Each objective with its error budget", body = Vec<muster_proto::api::SloView>),
    ),
)]
async fn slo(State(hub): State<Hub>, _: Admin) -> ApiResult {
    let now = hub.now();
    let mut views = Vec::new();
    for o in &hub.config().slos {
        let since = |d: std::time::Duration| muster_core::Millis(now.0 - d.as_millis() as i64);
        let (good, total) = hub.shared.store.slo_counts(o.kind, since(o.window), o.threshold).await?;
        let (recent_good, recent_total) =
            hub.shared.store.slo_counts(o.kind, since(std::time::Duration::from_secs(3600)), o.threshold).await?;
        let budget = muster_core::slo::budget(good, total, o.target);
        let burn = muster_core::slo::burn_rate(recent_good, recent_total, o.target);
        let status = if budget.remaining <= 0.0 {
            "exhausted"
        } else if burn > 1.0 {
            "burning"
        } else {
            "ok"
        };
        views.push(muster_proto::api::SloView {
            name: o.name.clone(),
            kind: o.kind.as_str().to_owned(),
            threshold_secs: o.threshold.as_secs_f64(),
            target: o.target,
            window_secs: o.window.as_secs(),
            good,
            total,
            sli: budget.sli,
            budget_remaining: if budget.remaining.is_finite() { budget.remaining } else { -1.0 },
            burn_rate_1h: if burn.is_finite() { burn } else { f64::MAX },
            status: status.to_owned(),
        });
    }
    Ok(json(StatusCode::OK, &views))
}

/// The health level, its reasons and counts.
#[utoipa::path(
    get,
    path = "/health",
    tag = "fleet",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The health level over recent runs", body = muster_proto::api::HealthView),
    ),
)]
async fn health(State(hub): State<Hub>, _: Admin) -> ApiResult {
    Ok(json(StatusCode::OK, &hub.health().await?))
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

impl Hub {
    pub(crate) async fn caller(&self, headers: &HeaderMap) -> ApiResult<Caller> {
        let header = match headers.get(header::AUTHORIZATION) {
            // A browser signed in to the dashboard.
            None if let Some(id) = crate::ui::session_cookie(headers) => {
                let caller = Caller::Admin(self.session_token(&id).await?);
                let _ = crate::edge::CONN.try_with(|c| c.authenticated());
                self.take_request(&caller)?;
                return Ok(caller);
            }
            None => None,
            Some(v) => {
                Some(v.to_str().map_err(|_| ApiError::Unauthorized("the Authorization header is not text".into()))?)
            }
        };
        let caller = self.authenticate(header).await?;
        // A run's task token speaks for code the hub does not trust with its
        // capacity: its connections stay sheddable.
        if !matches!(caller, Caller::Task { .. }) {
            let _ = crate::edge::CONN.try_with(|c| c.authenticated());
        }
        self.take_request(&caller)?;
        Ok(caller)
    }

    /// Only the admin token may use operator routes.
    pub(crate) async fn admin(&self, headers: &HeaderMap) -> ApiResult<muster_store::TokenRecord> {
        match self.caller(headers).await? {
            Caller::Admin(token) => Ok(token),
            Caller::Agent(name) => {
                Err(ApiError::Forbidden(format!("agent {name}'s token cannot use operator routes; use an admin token")))
            }
            Caller::Task { task, .. } => Err(ApiError::Forbidden(format!(
                "{task}'s task token cannot use operator routes; it is for muster ctl inside the run"
            ))),
        }
    }

    /// Only a run's own task token may use the `ctl` routes, for its task.
    pub(crate) async fn task_caller(&self, headers: &HeaderMap) -> ApiResult<(TaskId, muster_core::Epoch)> {
        match self.caller(headers).await? {
            Caller::Task { task, epoch } => Ok((task, epoch)),
            _ => Err(ApiError::Forbidden(
                "ctl routes take the task token a run is given (MUSTER_TASK_TOKEN), not an admin or agent token".into(),
            )),
        }
    }
}

/// `POST /api/v1/ctl/locks`: the run takes a lock for its task, waiting up to
/// `wait` for it. 200 when held; 409 naming the holders when it is still
/// busy, or naming the cycle when waiting would deadlock.
#[utoipa::path(
    post,
    path = "/ctl/locks",
    tag = "ctl",
    security(("task_token" = [])),
    request_body = muster_proto::api::LockRequest,
    responses(
        (status = 200, description = "Held", body = muster_proto::api::LockTaken),
    ),
)]
async fn ctl_lock(
    State(hub): State<Hub>,
    TaskCaller(task, epoch): TaskCaller,
    Body(req): Body<muster_proto::api::LockRequest>,
) -> ApiResult {
    let mode = match req.mode.as_deref() {
        None | Some("exclusive") => muster_store::LockMode::Exclusive,
        Some("shared") => muster_store::LockMode::Shared,
        Some(other) => {
            return Err(ApiError::bad("mode", format!("unknown mode {other:?}; expected exclusive or shared")));
        }
    };
    let wait = match &req.wait {
        Some(w) => w.to_duration("wait")?,
        None => Duration::ZERO,
    };
    if wait > Duration::from_secs(3600) {
        return Err(ApiError::bad("wait", "at most 1h; wait again in a loop for longer"));
    }
    let deadline = tokio::time::Instant::now() + wait;
    let mut changes = hub.shared.store.subscribe();
    // Should the caller go away mid-wait, its wait leaves the wait-for graph.
    let mut waiting = StopWaiting { hub: hub.clone(), name: req.name.clone(), task: task.clone(), armed: false };
    loop {
        changes.borrow_and_update();
        let got = hub.shared.store.acquire_lock(&req.name, &task, epoch, mode, wait.is_zero(), hub.now()).await?;
        match got {
            muster_store::Acquire::Acquired => {
                waiting.armed = false; // taking it ended the wait
                return Ok(json(
                    StatusCode::OK,
                    &muster_proto::api::LockTaken { name: req.name, mode: mode.as_str().into() },
                ));
            }
            muster_store::Acquire::Deadlock { cycle } => {
                let text = cycle.iter().map(|(t, n)| format!("{t} waits for {n}")).collect::<Vec<_>>().join(", ");
                *hub.shared.last_deadlock.lock().expect("deadlock lock poisoned") = Some((hub.now(), text.clone()));
                return Err(ApiError::Conflict {
                    field: Some("deadlock".into()),
                    detail: format!("deadlock: {text}; this acquire of {} is refused", req.name),
                });
            }
            muster_store::Acquire::Busy { holders } => {
                waiting.armed = !wait.is_zero();
                let now = tokio::time::Instant::now();
                if wait.is_zero() || now >= deadline {
                    let held_by = holders.iter().map(|h| h.to_string()).collect::<Vec<_>>().join(", ");
                    return Err(ApiError::Conflict {
                        field: Some("name".into()),
                        detail: format!("{} is held by {held_by}", req.name),
                    });
                }
                let _ = tokio::time::timeout(deadline - now, changes.changed()).await;
            }
        }
    }
}

/// Takes a finished (or abandoned) lock wait out of the wait-for graph.
struct StopWaiting {
    hub: Hub,
    name: String,
    task: TaskId,
    armed: bool,
}

impl Drop for StopWaiting {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let (hub, name, task) = (self.hub.clone(), std::mem::take(&mut self.name), self.task.clone());
        tokio::spawn(async move {
            if let Err(e) = hub.shared.store.stop_waiting(&name, &task).await {
                tracing::warn!(error = %e, lock = %name, task = %task, "could not drop a lock wait");
            }
        });
    }
}

/// `POST /api/v1/ctl/locks/release`: the run gives a lock up (or stops waiting for it).
#[utoipa::path(
    post,
    path = "/ctl/locks/release",
    tag = "ctl",
    security(("task_token" = [])),
    request_body = muster_proto::api::LockName,
    responses(
        (status = 204, description = "Released"),
    ),
)]
async fn ctl_unlock(
    State(hub): State<Hub>,
    TaskCaller(task, _): TaskCaller,
    Body(req): Body<muster_proto::api::LockName>,
) -> ApiResult {
    let gone = hub.shared.store.release_lock(&req.name, Some(&task), &task.to_string(), hub.now()).await?;
    if gone == 0 {
        return Err(ApiError::NotFound(format!("{task} holds no lock {}", req.name)));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `{"held": [...], "waiting": [...]}`; each `{name, task, mode, since}`, a wait with `waits_for`
/// (the holders).
#[utoipa::path(
    get,
    path = "/locks",
    tag = "locks",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Held locks and waits", body = muster_proto::api::LocksView),
    ),
)]
async fn locks(State(hub): State<Hub>, _: Admin) -> ApiResult {
    use muster_proto::api::{LockView, LocksView};
    let held = hub.shared.store.locks().await?;
    let waits = hub.shared.store.lock_waits().await?;
    let view = LocksView {
        held: held
            .iter()
            .map(|l| LockView {
                name: l.name.clone(),
                task: l.task.to_string(),
                mode: l.mode.as_str().to_owned(),
                since: timestamp(l.since),
                waits_for: Vec::new(),
            })
            .collect(),
        waiting: waits
            .iter()
            .map(|w| LockView {
                name: w.name.clone(),
                task: w.task.to_string(),
                mode: w.mode.as_str().to_owned(),
                since: timestamp(w.since),
                waits_for: w.holders.iter().map(|h| h.to_string()).collect(),
            })
            .collect(),
    };
    Ok(json(StatusCode::OK, &view))
}

/// `POST /api/v1/locks/unlock`: an operator forces one lock, or `{"all": true}` every one.
#[utoipa::path(
    post,
    path = "/locks/unlock",
    tag = "locks",
    security(("admin_token" = [])),
    request_body = muster_proto::api::LockForce,
    responses(
        (status = 200, description = "Released", body = muster_proto::api::Unlocked),
    ),
)]
async fn unlock(State(hub): State<Hub>, Admin(by): Admin, Body(req): Body<muster_proto::api::LockForce>) -> ApiResult {
    let released = match (req.name, req.all) {
        (Some(name), None | Some(false)) => hub.shared.store.release_lock(&name, None, &by.name, hub.now()).await?,
        (None, Some(true)) => hub.shared.store.release_all_locks(&by.name, hub.now()).await?,
        _ => return Err(ApiError::bad("name", r#"give {"name": "LOCK"} or {"all": true}"#)),
    };
    tracing::warn!(by = %by.name, released, "locks forced");
    Ok(json(StatusCode::OK, &muster_proto::api::Unlocked { released }))
}

/// `POST /api/v1/ctl/note`: a run says how it is getting on.
#[utoipa::path(
    post,
    path = "/ctl/note",
    tag = "ctl",
    security(("task_token" = [])),
    request_body = muster_proto::api::CtlNote,
    responses(
        (status = 204, description = "Noted on the run's timeline"),
    ),
)]
async fn ctl_note(
    State(hub): State<Hub>,
    TaskCaller(task, epoch): TaskCaller,
    Body(note): Body<muster_proto::api::CtlNote>,
) -> ApiResult {
    let text = note.text.trim();
    if text.is_empty() || text.len() > 2_000 {
        return Err(ApiError::bad("text", "must be 1 to 2000 bytes"));
    }
    let text = crate::auth::redact_tokens(text);
    let agent = hub.shared.store.task(&task).await?.and_then(|t| t.agent);
    let event = muster_store::NewEvent {
        kind: "task.note",
        task: Some(task.clone()),
        agent,
        epoch: Some(epoch),
        state: None,
        detail: Some(text.into_owned()),
    };
    hub.shared.store.record_event(event, hub.now()).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Query parameters, refusing any the route does not know.
pub(crate) struct Params(HashMap<String, String>);

impl Params {
    pub(crate) fn parse(raw: Option<String>, allowed: &[&str]) -> ApiResult<Params> {
        let raw = raw.unwrap_or_default();
        let mut map = HashMap::new();
        for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
            let (k, v) = (k.into_owned(), v.into_owned());
            if !allowed.contains(&k.as_str()) {
                return Err(ApiError::bad(&k, format!("unknown query parameter; allowed: {}", allowed.join(", "))));
            }
            if map.contains_key(&k) {
                return Err(ApiError::bad(&k, "given more than once"));
            }
            map.insert(k, v);
        }
        Ok(Params(map))
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str).filter(|v| !v.is_empty())
    }

    pub(crate) fn number<T: std::str::FromStr>(&self, key: &str) -> ApiResult<Option<T>> {
        self.get(key)
            .map(|v| v.parse::<T>().map_err(|_| ApiError::bad(key, format!("{v:?} is not a valid number"))))
            .transpose()
    }

    /// `true` or `false`; absent is `false`.
    pub(crate) fn flag(&self, key: &str) -> ApiResult<bool> {
        match self.get(key) {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(other) => Err(ApiError::bad(key, format!("{other:?} is not true or false"))),
        }
    }

    pub(crate) fn wait(&self) -> ApiResult<Duration> {
        Ok(match self.get("wait") {
            None => Duration::ZERO,
            Some(w) => muster_proto::parse_duration("wait", w)?.min(MAX_WAIT),
        })
    }
}

fn task_id(raw: &str) -> ApiResult<TaskId> {
    Ok(TaskId::parse(raw)?)
}

pub(crate) fn new_task_id(now: Millis) -> ApiResult<TaskId> {
    let mut buf = [0u8; 16];
    getrandom::fill(&mut buf).map_err(|e| ApiError::Internal(format!("no randomness available: {e}")))?;
    Ok(TaskId::from_parts(now.0, u128::from_le_bytes(buf)))
}

/// A submitted task as the hub accepts it: defaults filled in, its runners
/// (own, shadow, fallback) known, and approval applied.
fn checked_spec(hub: &Hub, submit: TaskSubmit) -> ApiResult<(muster_core::TaskSpec, Vec<RunnerName>)> {
    let shadows = submit
        .shadow
        .iter()
        .map(|r| RunnerName::parse(r).map_err(|e| ApiError::bad("shadow", e.reason)))
        .collect::<ApiResult<Vec<_>>>()?;
    let config = &hub.shared.config;
    let defaults = TaskDefaults {
        runner: hub.runtime().default_runner,
        timeout: config.default_timeout,
        max_attempts: config.default_max_attempts,
    };
    let mut spec = submit.into_spec(&defaults)?;
    // Some runners' work always waits for a person.
    spec.requires_approval |= hub.shared.runtime.borrow().approval_runners.contains(&spec.runner);
    {
        let known = hub.shared.known_runners.lock().expect("runners lock poisoned");
        let names = || known.iter().map(RunnerName::as_str).collect::<Vec<_>>().join(", ");
        if !known.contains(&spec.runner) {
            return Err(ApiError::bad(
                "runner",
                format!("unknown runner {:?}; known runners: {}", spec.runner.as_str(), names()),
            ));
        }
        if let Some(s) = shadows.iter().find(|s| !known.contains(*s)) {
            return Err(ApiError::bad(
                "shadow",
                format!("unknown runner {:?}; known runners: {}", s.as_str(), names()),
            ));
        }
        if let Some(f) = spec.fallback.iter().find(|f| !known.contains(*f)) {
            return Err(ApiError::bad(
                "fallback",
                format!("unknown runner {:?}; known runners: {}", f.as_str(), names()),
            ));
        }
    }
    Ok((spec, shadows))
}

/// Queue a task. 201 with `{"created": true, "task": …}`, or 200 with `"created": false` for a
/// known idempotency key.
#[utoipa::path(
    post,
    path = "/tasks",
    tag = "tasks",
    security(("admin_token" = [])),
    request_body = muster_proto::api::TaskSubmit,
    responses(
        (status = 201, description = "Queued", body = muster_proto::api::TaskCreated),
        (status = 200, description = "An existing task with the same idempotency key", body = muster_proto::api::TaskCreated),
    ),
)]
async fn create_task(State(hub): State<Hub>, _: Admin, Body(submit): Body<TaskSubmit>) -> ApiResult {
    if hub.shared.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(ApiError::Unavailable("the hub is shutting down and takes no new tasks".into()));
    }
    let (spec, shadows) = checked_spec(&hub, submit)?;
    let now = hub.now();
    let created = hub.shared.store.create_task(new_task_id(now)?, spec, now).await?;
    if created.created {
        hub.wake_for(&created.task);
        // The task is durable; a shadow that cannot be queued costs only the comparison.
        if let Err(e) = hub.start_shadows(&created.task, &shadows).await {
            tracing::error!(task_id = %created.task.id, error = %e, "cannot queue shadow runs");
        }
    }
    let status = if created.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(json(status, &TaskCreated { created: created.created, task: TaskView::from_task(&created.task) }))
}

/// Tasks one `POST /api/v1/tasks/batch` may create.
pub const MAX_BATCH_TASKS: usize = 1000;

/// Creates up to `MAX_BATCH_TASKS` tasks in one durable change, all or none.
#[utoipa::path(
    post,
    path = "/tasks/batch",
    tag = "tasks",
    security(("admin_token" = [])),
    request_body = muster_proto::api::TaskBatch,
    responses(
        (status = 201, description = "All queued, in one commit", body = muster_proto::api::TaskBatchCreated),
    ),
)]
async fn create_tasks(State(hub): State<Hub>, _: Admin, Body(batch): Body<TaskBatch>) -> ApiResult {
    if hub.shared.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(ApiError::Unavailable("the hub is shutting down and takes no new tasks".into()));
    }
    if batch.tasks.is_empty() || batch.tasks.len() > MAX_BATCH_TASKS {
        return Err(ApiError::bad(
            "tasks",
            format!("a batch holds 1 to {MAX_BATCH_TASKS} tasks, got {}", batch.tasks.len()),
        ));
    }
    let now = hub.now();
    let mut specs = Vec::with_capacity(batch.tasks.len());
    let mut shadows = Vec::with_capacity(batch.tasks.len());
    for (i, submit) in batch.tasks.into_iter().enumerate() {
        let (spec, own) = checked_spec(&hub, submit).map_err(|e| match e {
            ApiError::BadRequest(f) => ApiError::bad(&format!("tasks[{i}].{}", f.field), f.reason),
            other => other,
        })?;
        specs.push((new_task_id(now)?, spec));
        shadows.push(own);
    }
    let created = hub.shared.store.create_tasks(specs, now).await?;
    if created.iter().any(|c| c.created) {
        hub.wake_dispatcher();
    }
    for (one, own) in created.iter().zip(&shadows) {
        if one.created
            && !own.is_empty()
            && let Err(e) = hub.start_shadows(&one.task, own).await
        {
            tracing::error!(task_id = %one.task.id, error = %e, "cannot queue shadow runs");
        }
    }
    let tasks: Vec<TaskCreated> =
        created.iter().map(|c| TaskCreated { created: c.created, task: TaskView::from_task(&c.task) }).collect();
    Ok(json(StatusCode::CREATED, &TaskBatchCreated { tasks }))
}

/// List tasks, newest first. Query: `state`, `agent`, `priority`, `runner`, `capability` (tasks
/// requiring it), `q` (id, prompt or reason contains it, ignoring case), `limit` (default 100, at
/// most 1000), `before` (the `next` of the previous page).
#[utoipa::path(
    get,
    path = "/tasks",
    tag = "tasks",
    security(("admin_token" = [])),
    params(
        ("state" = Option<String>, Query, description = "Only tasks in this state"),
        ("agent" = Option<String>, Query, description = "Only tasks an agent ran"),
        ("priority" = Option<String>, Query, description = "Only this priority"),
        ("runner" = Option<String>, Query, description = "Only this runner"),
        ("capability" = Option<String>, Query, description = "Only tasks that need this capability"),
        ("q" = Option<String>, Query, description = "Text in the prompt or metadata"),
        ("limit" = Option<u32>, Query, description = "At most this many (1 to 1000; 50 by default)"),
        ("before" = Option<String>, Query, description = "The `next` cursor of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of tasks, newest first", body = muster_proto::api::TaskPage),
    ),
)]
async fn list_tasks(State(hub): State<Hub>, _: Admin, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q, &["state", "agent", "priority", "runner", "capability", "q", "limit", "before"])?;
    let filter = TaskFilter {
        state: p.get("state").map(TaskState::parse).transpose()?,
        agent: p.get("agent").map(AgentName::parse).transpose()?,
        priority: p.get("priority").map(muster_core::Priority::parse).transpose()?,
        runner: p.get("runner").map(RunnerName::parse).transpose()?,
        capability: p.get("capability").map(muster_core::Capability::parse).transpose()?,
        text: p.get("q").map(str::to_owned),
        limit: p.number::<usize>("limit")?.unwrap_or(100).clamp(1, 1000),
        before: p.number("before")?,
    };
    let page = hub.shared.store.list_tasks(&filter).await?;
    Ok(json(StatusCode::OK, &TaskPage { tasks: page.items.iter().map(TaskView::from_task).collect(), next: page.next }))
}

async fn load_task(hub: &Hub, raw: &str) -> ApiResult<Task> {
    let id = task_id(raw)?;
    hub.shared.store.task(&id).await?.ok_or_else(|| ApiError::NotFound(format!("no task {id}")))
}

/// A task with its `attempts_detail`.
#[utoipa::path(
    get,
    path = "/tasks/{id}",
    tag = "tasks",
    security(("admin_token" = [])),
    params(
        ("id" = String, Path, description = "The task's id"),
    ),
    responses(
        (status = 200, description = "The task with its attempts", body = muster_proto::api::TaskDetail),
    ),
)]
async fn show_task(State(hub): State<Hub>, _: Admin, Path(id): Path<String>) -> ApiResult {
    let task = load_task(&hub, &id).await?;
    let attempts = hub.shared.store.attempts(&task.id).await?;
    let detail = TaskDetail {
        task: TaskView::from_task(&task),
        attempts_detail: attempts
            .iter()
            .map(|a| AttemptView {
                number: a.number,
                epoch: a.epoch.0,
                agent: a.agent.to_string(),
                started_at: timestamp(a.started_at),
                finished_at: a.finished_at.map(timestamp),
                outcome: a.outcome.map(|o| o.as_str().to_owned()),
                exit_code: a.exit_code,
                reason: a.reason.clone(),
                output_bytes: a.output_bytes,
                output_truncated: a.output_truncated,
                output_incomplete: a.output_incomplete,
                output_pruned: a.output_pruned,
                steps: a.steps,
                latest_step: a.latest_step.clone(),
                live: Some(if a.finished_at.is_some() {
                    Live::Done.as_str().to_owned()
                } else {
                    a.live.clone().unwrap_or_else(|| Live::Working.as_str().to_owned())
                }),
                live_detail: a.live_detail.clone().filter(|_| a.finished_at.is_none()),
                report: a.report.as_ref().map(report_view),
                workspace: a.workspace.as_ref().map(workspace_summary),
                runner: a.runner.clone(),
                summary: a.summary.clone(),
                checks: a
                    .checks
                    .iter()
                    .map(|c| muster_proto::ws::CheckResult {
                        name: c.name.clone(),
                        passed: c.passed,
                        exit_code: c.exit_code,
                        duration_ms: c.duration_ms,
                        output: c.output.clone(),
                    })
                    .collect(),
            })
            .collect(),
    };
    Ok(json(StatusCode::OK, &detail))
}

fn report_view(r: &muster_store::RunReport) -> muster_proto::ws::RunReport {
    muster_proto::ws::RunReport {
        session_id: r.session_id.clone(),
        model: r.model.clone(),
        turns: r.turns,
        input_tokens: r.tokens.input,
        output_tokens: r.tokens.output,
        cache_read_tokens: r.tokens.cache_read,
        cache_write_tokens: r.tokens.cache_write,
        cost_usd: r.cost.map(MicroUsd::usd),
        result: r.result.clone(),
        tool_uses: r.tool_uses,
        tool_errors: r.tool_errors,
    }
}

fn workspace_summary(w: &muster_store::WorkspaceRecord) -> muster_proto::api::WorkspaceSummary {
    use muster_proto::api::{CommitView, FileView, WorkspaceSummary};
    WorkspaceSummary {
        repo: w.repo.clone(),
        branch: w.branch.clone(),
        base: w.base.clone(),
        head: w.head.clone(),
        commits: w
            .commits
            .iter()
            .map(|(sha, subject)| CommitView { sha: sha.clone(), subject: subject.clone() })
            .collect(),
        files: w.files.iter().map(|(status, path)| FileView { status: status.clone(), path: path.clone() }).collect(),
        stat: w.stat.clone(),
        kept_at: w.kept_at.clone(),
        error: w.error.clone(),
        snapshot: w.snapshot.clone(),
    }
}

/// One attempt's change: the one asked for, or the latest that ran in a worktree.
#[utoipa::path(
    get,
    path = "/tasks/{id}/diff",
    tag = "tasks",
    security(("admin_token" = [])),
    params(
        ("id" = String, Path, description = "The task's id"),
        ("attempt" = Option<u32>, Query, description = "One attempt (1-based); the latest by default"),
    ),
    responses(
        (status = 200, description = "The diff its run made", body = muster_proto::api::DiffView),
    ),
)]
async fn task_diff(State(hub): State<Hub>, _: Admin, Path(id): Path<String>, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q, &["attempt"])?;
    let id = task_id(&id)?;
    let wanted: Option<u32> = p.number("attempt")?;
    let task = hub.shared.store.task(&id).await?.ok_or_else(|| ApiError::NotFound(format!("no task {id}")))?;
    if task.spec.workspace.is_none() {
        return Err(ApiError::NotFound(format!("task {id} did not run in a worktree (it names no repository)")));
    }
    let attempts = hub.shared.store.attempts(&id).await?;
    let found = match wanted {
        Some(n) => attempts.iter().find(|a| a.number == n),
        None => attempts.iter().rev().find(|a| a.workspace.is_some()),
    };
    let Some(attempt) = found else {
        return Err(ApiError::NotFound(match wanted {
            Some(n) => format!("task {id} has no attempt {n}"),
            None => format!("task {id} has no finished attempt with a worktree yet"),
        }));
    };
    let Some(w) = &attempt.workspace else {
        return Err(ApiError::NotFound(format!("attempt {} of task {id} reported no worktree", attempt.number)));
    };
    let (diff, diff_truncated) = hub.shared.store.attempt_diff(&id, attempt.number).await?.unwrap_or_default();
    let view =
        muster_proto::api::DiffView { attempt: attempt.number, workspace: workspace_summary(w), diff, diff_truncated };
    Ok(json(StatusCode::OK, &view))
}

/// A coding agent's steps in order. Query: `attempt`.
#[utoipa::path(
    get,
    path = "/tasks/{id}/steps",
    tag = "tasks",
    security(("admin_token" = [])),
    params(
        ("id" = String, Path, description = "The task's id"),
        ("attempt" = Option<u32>, Query, description = "One attempt (1-based); the latest by default"),
    ),
    responses(
        (status = 200, description = "The steps of an attempt", body = muster_proto::api::StepsPage),
    ),
)]
async fn task_steps(State(hub): State<Hub>, _: Admin, Path(id): Path<String>, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q, &["attempt"])?;
    let id = task_id(&id)?;
    let attempt = p.number("attempt")?;
    if hub.shared.store.task(&id).await?.is_none() {
        return Err(ApiError::NotFound(format!("no task {id}")));
    }
    let steps = hub.shared.store.steps(&id, attempt).await?;
    let page = muster_proto::api::StepsPage {
        steps: steps
            .into_iter()
            .map(|s| muster_proto::api::StepView {
                attempt: s.attempt,
                seq: s.seq,
                at: timestamp(s.at),
                step: muster_proto::ws::StepMsg {
                    kind: s.step.kind.as_str().to_owned(),
                    name: s.step.name,
                    summary: s.step.summary,
                    is_error: s.step.is_error,
                    duration_ms: s.step.duration_ms,
                },
            })
            .collect(),
    };
    Ok(json(StatusCode::OK, &page))
}

/// Cancel a task.
#[utoipa::path(
    post,
    path = "/tasks/{id}/cancel",
    tag = "tasks",
    security(("admin_token" = [])),
    params(
        ("id" = String, Path, description = "The task's id"),
    ),
    responses(
        (status = 200, description = "Cancelled, or cancel requested of its run", body = muster_proto::api::TaskView),
    ),
)]
async fn cancel_task(State(hub): State<Hub>, Admin(by): Admin, Path(id): Path<String>) -> ApiResult {
    let id = task_id(&id)?;
    tracing::info!(task_id = %id, by = %by.name, "cancel");
    let (task, outcome) = hub.shared.store.cancel_task(&id, hub.now()).await?;
    match outcome {
        muster_core::task::Cancel::Done { notify: Some((agent, epoch)) } => {
            hub.drop_run(&agent, &id, epoch, "cancelled");
            hub.wake_dispatcher();
        }
        muster_core::task::Cancel::Done { notify: None } => {}
        muster_core::task::Cancel::Requested { agent, epoch } => {
            hub.send_to(&agent, muster_proto::ws::HubMsg::Cancel { task: id.to_string(), epoch: epoch.0 });
        }
    }
    Ok(json(StatusCode::OK, &TaskView::from_task(&task)))
}

/// Revive a failed task.
#[utoipa::path(
    post,
    path = "/tasks/{id}/retry",
    tag = "tasks",
    security(("admin_token" = [])),
    params(
        ("id" = String, Path, description = "The task's id"),
    ),
    responses(
        (status = 200, description = "Queued again", body = muster_proto::api::TaskView),
    ),
)]
async fn retry_task(State(hub): State<Hub>, Admin(by): Admin, Path(id): Path<String>) -> ApiResult {
    let id = task_id(&id)?;
    tracing::info!(task_id = %id, by = %by.name, "retry");
    let task = hub.shared.store.retry_task(&id, hub.now()).await?;
    hub.wake_dispatcher();
    Ok(json(StatusCode::OK, &TaskView::from_task(&task)))
}

/// Body `{"reason": "..."}`; the task ends `skipped`.
#[utoipa::path(
    post,
    path = "/tasks/{id}/skip",
    tag = "tasks",
    security(("admin_token" = [])),
    params(
        ("id" = String, Path, description = "The task's id"),
    ),
    request_body = muster_proto::api::TaskSkip,
    responses(
        (status = 200, description = "Skipped", body = muster_proto::api::TaskView),
    ),
)]
async fn skip_task(
    State(hub): State<Hub>,
    Admin(by): Admin,
    Path(id): Path<String>,
    Body(body): Body<muster_proto::api::TaskSkip>,
) -> ApiResult {
    let id = task_id(&id)?;
    operate(&hub, &id, muster_store::TaskOp::Skip { reason: body.reason }, &by.name).await
}

/// Refuses a token that `approval.approvers` does not name (when it names any).
pub(crate) fn check_approver(hub: &Hub, by: &str) -> ApiResult<()> {
    let approvers = hub.shared.runtime.borrow().approvers.clone();
    if !approvers.is_empty() && !approvers.contains(by) {
        let names: Vec<&str> = approvers.iter().map(String::as_str).collect();
        return Err(ApiError::Forbidden(format!(
            "only {} may approve (approval.approvers); this token is {by}",
            names.join(", ")
        )));
    }
    Ok(())
}

/// A task pending approval joins the queue.
#[utoipa::path(
    post,
    path = "/tasks/{id}/approve",
    tag = "tasks",
    security(("admin_token" = [])),
    params(
        ("id" = String, Path, description = "The task's id"),
    ),
    responses(
        (status = 200, description = "Approved and queued", body = muster_proto::api::TaskView),
    ),
)]
async fn approve_task(State(hub): State<Hub>, Admin(by): Admin, Path(id): Path<String>) -> ApiResult {
    check_approver(&hub, &by.name)?;
    let id = task_id(&id)?;
    operate(&hub, &id, muster_store::TaskOp::Approve, &by.name).await
}

/// Body `{"reason": "..."}`; it ends `cancelled`.
#[utoipa::path(
    post,
    path = "/tasks/{id}/reject",
    tag = "tasks",
    security(("admin_token" = [])),
    params(
        ("id" = String, Path, description = "The task's id"),
    ),
    request_body = muster_proto::api::TaskReject,
    responses(
        (status = 200, description = "Rejected", body = muster_proto::api::TaskView),
    ),
)]
async fn reject_task(
    State(hub): State<Hub>,
    Admin(by): Admin,
    Path(id): Path<String>,
    Body(body): Body<muster_proto::api::TaskReject>,
) -> ApiResult {
    check_approver(&hub, &by.name)?;
    let id = task_id(&id)?;
    operate(&hub, &id, muster_store::TaskOp::Reject { reason: body.reason }, &by.name).await
}

/// Back to the queue, attempts cleared.
#[utoipa::path(
    post,
    path = "/tasks/{id}/reset",
    tag = "tasks",
    security(("admin_token" = [])),
    params(
        ("id" = String, Path, description = "The task's id"),
    ),
    responses(
        (status = 200, description = "Queued afresh with its attempts reset", body = muster_proto::api::TaskView),
    ),
)]
async fn reset_task(State(hub): State<Hub>, Admin(by): Admin, Path(id): Path<String>) -> ApiResult {
    let id = task_id(&id)?;
    operate(&hub, &id, muster_store::TaskOp::Reset, &by.name).await
}

/// Body `{"priority": "urgent"}`.
#[utoipa::path(
    post,
    path = "/tasks/{id}/move",
    tag = "tasks",
    security(("admin_token" = [])),
    params(
        ("id" = String, Path, description = "The task's id"),
    ),
    request_body = muster_proto::api::TaskMove,
    responses(
        (status = 200, description = "Moved to another priority", body = muster_proto::api::TaskView),
    ),
)]
async fn move_task(
    State(hub): State<Hub>,
    Admin(by): Admin,
    Path(id): Path<String>,
    Body(body): Body<muster_proto::api::TaskMove>,
) -> ApiResult {
    let id = task_id(&id)?;
    let priority = muster_core::Priority::parse(&body.priority)?;
    operate(&hub, &id, muster_store::TaskOp::Move { priority }, &by.name).await
}

/// An operator's change to one task: applied, logged, and the dispatcher woken.
async fn operate(hub: &Hub, id: &TaskId, op: muster_store::TaskOp, by: &str) -> ApiResult {
    tracing::info!(task_id = %id, by, op = ?op, "operator changed a task");
    let task = hub.shared.store.operate_task(id, op, by, hub.now()).await?;
    hub.wake_dispatcher();
    Ok(json(StatusCode::OK, &TaskView::from_task(&task)))
}

/// Output chunks. Query: `attempt`, `after` (a chunk `seq`), `limit` (default 1000, at most 10000),
/// `wait` (long-poll, at most 60s).
#[utoipa::path(
    get,
    path = "/tasks/{id}/logs",
    tag = "tasks",
    security(("admin_token" = [])),
    params(
        ("id" = String, Path, description = "The task's id"),
        ("attempt" = Option<u32>, Query, description = "One attempt (1-based); the latest by default"),
        ("after" = Option<i64>, Query, description = "Output after this sequence number"),
        ("limit" = Option<u32>, Query, description = "At most this many chunks"),
        ("wait" = Option<String>, Query, description = "Long-poll up to this long (e.g. 30s, at most 60s) for new output"),
    ),
    responses(
        (status = 200, description = "Output after `after`", body = muster_proto::api::LogsPage),
    ),
)]
async fn task_logs(State(hub): State<Hub>, _: Admin, Path(id): Path<String>, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q, &["attempt", "after", "limit", "wait"])?;
    let id = task_id(&id)?;
    let filter = OutputFilter {
        attempt: p.number("attempt")?,
        after: p.number("after")?.unwrap_or(0),
        limit: p.number::<usize>("limit")?.unwrap_or(1000).clamp(1, 10_000),
    };
    let wait = p.wait()?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut output = hub.shared.output.subscribe();
    let mut events = hub.shared.store.subscribe();
    let mut stopping = hub.shared.stopping.subscribe();
    loop {
        // Marked seen before reading, so a change that lands after the read wakes us.
        output.borrow_and_update();
        events.borrow_and_update();
        let task = hub.shared.store.task(&id).await?.ok_or_else(|| ApiError::NotFound(format!("no task {id}")))?;
        let chunks = hub.shared.store.read_output(&id, &filter).await?;
        // Done only when the task has ended and every chunk was read.
        let done = task.state.is_terminal() && chunks.len() < filter.limit;
        if !chunks.is_empty() || done || wait.is_zero() {
            let next_after = chunks.last().map_or(filter.after, |c| c.seq);
            let pruned = done
                && chunks.is_empty()
                && filter.after == 0
                && hub
                    .shared
                    .store
                    .attempts(&id)
                    .await?
                    .iter()
                    .any(|a| a.output_pruned && filter.attempt.is_none_or(|n| n == a.number));
            let page = LogsPage {
                chunks: chunks.into_iter().map(output_view).collect(),
                next_after,
                done,
                state: task.state.as_str().to_owned(),
                pruned,
            };
            return Ok(json(StatusCode::OK, &page));
        }
        // Wake on new output or on any event (the task may have ended).
        let woke = tokio::time::timeout_at(deadline, async {
            tokio::select! {
                r = output.changed() => r.is_ok(),
                r = events.changed() => r.is_ok(),
                _ = async { drop(stopping.wait_for(|stop| *stop).await) } => false,
            }
        })
        .await;
        // Past the deadline, or the hub is stopping and nothing more will come.
        if !matches!(woke, Ok(true)) {
            let page = LogsPage {
                chunks: vec![],
                next_after: filter.after,
                done: false,
                state: task.state.as_str().into(),
                pruned: false,
            };
            return Ok(json(StatusCode::OK, &page));
        }
    }
}

pub(crate) fn doctor_of(a: &AgentRecord) -> Option<muster_proto::ws::DoctorReport> {
    a.doctor.as_deref().and_then(|d| from_json(d.as_bytes()).ok())
}

/// The agent's latest doctor report.
#[utoipa::path(
    get,
    path = "/agents/{name}/doctor",
    tag = "agents",
    security(("admin_token" = [])),
    params(
        ("name" = String, Path, description = "The agent's name"),
    ),
    responses(
        (status = 200, description = "What the agent checked of its runners", body = muster_proto::ws::DoctorReport),
    ),
)]
async fn agent_doctor(State(hub): State<Hub>, _: Admin, Path(name): Path<String>) -> ApiResult {
    let agent = load_agent(&hub, &name).await?;
    let report = doctor_of(&agent)
        .ok_or_else(|| ApiError::NotFound(format!("agent {} has not sent a doctor report", agent.name)))?;
    Ok(json(StatusCode::OK, &report))
}

fn agent_view(a: &AgentRecord) -> AgentView {
    AgentView {
        name: a.name.to_string(),
        state: a.status.state().as_str().to_owned(),
        connected: a.status.connected,
        capabilities: a.capabilities().iter().map(|c| c.to_string()).collect(),
        runners: a.runners.iter().map(|r| r.to_string()).collect(),
        slots: a.status.slots,
        used_slots: a.status.used_slots,
        paused: a.status.paused,
        draining: a.status.draining,
        version: a.version.clone(),
        unavailable: doctor_of(a)
            .map(|d| {
                d.runners.iter().filter(|r| !r.ok).map(|r| format!("{}: {}", r.name, r.problems.join("; "))).collect()
            })
            .unwrap_or_default(),
        token_id: a.token_id.to_string(),
        last_seen_at: a.last_seen_at.map(timestamp),
        created_at: timestamp(a.created_at),
    }
}

/// Register an agent: `{"name": …, "capabilities": [...]}`. 201 with `name`, `token`, `token_id`.
#[utoipa::path(
    post,
    path = "/agents",
    tag = "agents",
    security(("admin_token" = [])),
    request_body = muster_proto::api::AgentAdd,
    responses(
        (status = 201, description = "Registered; the token is shown once", body = muster_proto::api::AgentCreated),
    ),
)]
async fn add_agent(State(hub): State<Hub>, _: Admin, Body(add): Body<AgentAdd>) -> ApiResult {
    let name = AgentName::parse(&add.name)?;
    let capabilities = add.capabilities.iter().map(|c| Capability::parse(c)).collect::<Result<Vec<_>, _>>()?;
    let (minted, token) = agent_token(&name)?;
    let agent = hub.shared.store.register_agent(NewAgent { name, capabilities }, token, hub.now()).await?;
    Ok(json(
        StatusCode::CREATED,
        &AgentCreated { name: agent.name.to_string(), token: minted.token, token_id: minted.id.to_string() },
    ))
}

/// A fresh token for `name`: the secret to show once, and the record to store.
fn agent_token(name: &AgentName) -> ApiResult<(crate::auth::Minted, NewToken)> {
    let minted = mint_token().map_err(|e| ApiError::Internal(e.to_string()))?;
    let token = NewToken {
        id: minted.id.clone(),
        name: format!("agent:{name}"),
        scope: Scope::Agent,
        agent: Some(name.clone()),
        hash: hash_token(&minted.token),
    };
    Ok((minted, token))
}

impl Hub {
    /// Revokes the agent's token, issues a new one and disconnects the agent;
    /// returns the new token, which is shown only this once.
    pub async fn reissue_agent_token(&self, name: &AgentName) -> Result<(String, String), ApiError> {
        let (minted, token) = agent_token(name)?;
        self.shared.store.replace_agent_token(name, token, self.now()).await?;
        self.shared.tokens.clear();
        self.close_agent(name, "token revoked");
        Ok((minted.token, minted.id.to_string()))
    }

    /// Registers an agent; returns its token, shown only this once.
    pub async fn register_agent(&self, name: &AgentName, capabilities: Vec<Capability>) -> Result<String, ApiError> {
        let (minted, token) = agent_token(name)?;
        self.shared.store.register_agent(NewAgent { name: name.clone(), capabilities }, token, self.now()).await?;
        Ok(minted.token)
    }
}

/// `DELETE /api/v1/agents/{name}[?force=true]`: revokes the agent's token,
/// disconnects it and deletes its record; its history keeps its name.
/// Refused (409) while it holds runs, unless forced, which queues them again.
#[utoipa::path(
    delete,
    path = "/agents/{name}",
    tag = "agents",
    security(("admin_token" = [])),
    params(
        ("name" = String, Path, description = "The agent's name"),
        ("force" = Option<bool>, Query, description = "Remove even while it holds tasks (they go back to the queue)"),
    ),
    responses(
        (status = 200, description = "Removed; its token revoked", body = muster_proto::api::AgentRemoved),
    ),
)]
async fn remove_agent(
    State(hub): State<Hub>,
    Admin(by): Admin,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let p = Params::parse(q, &["force"])?;
    let force = p.flag("force")?;
    let agent = load_agent(&hub, &name).await?;
    let taken = hub.shared.store.remove_agent(&agent.name, force, &by.name, hub.now()).await?;
    hub.shared.tokens.clear();
    hub.close_agent(&agent.name, "token revoked");
    hub.wake_dispatcher();
    tracing::info!(agent = %agent.name, by = %by.name, taken_back = taken.len(), "agent removed");
    let view = muster_proto::api::AgentRemoved {
        name: agent.name.to_string(),
        tasks: taken
            .iter()
            .map(|t| muster_proto::api::TakenBack { task: t.id.to_string(), state: t.state.as_str().to_owned() })
            .collect(),
    };
    Ok(json(StatusCode::OK, &view))
}

/// Revoke the agent's token and issue a new one (201).
#[utoipa::path(
    post,
    path = "/agents/{name}/token",
    tag = "agents",
    security(("admin_token" = [])),
    params(
        ("name" = String, Path, description = "The agent's name"),
    ),
    responses(
        (status = 201, description = "A new token; the old one is revoked", body = muster_proto::api::AgentCreated),
    ),
)]
async fn reissue_token(State(hub): State<Hub>, _: Admin, Path(name): Path<String>) -> ApiResult {
    let agent = load_agent(&hub, &name).await?;
    let (token, token_id) = hub.reissue_agent_token(&agent.name).await?;
    Ok(json(StatusCode::CREATED, &AgentCreated { name: agent.name.to_string(), token, token_id }))
}

/// Tell a connected agent to finish its runs and stop.
#[utoipa::path(
    post,
    path = "/agents/{name}/drain",
    tag = "agents",
    security(("admin_token" = [])),
    params(
        ("name" = String, Path, description = "The agent's name"),
    ),
    responses(
        (status = 200, description = "Finishes its runs, then disconnects", body = muster_proto::api::AgentView),
    ),
)]
async fn drain_agent(State(hub): State<Hub>, Admin(by): Admin, Path(name): Path<String>) -> ApiResult {
    let agent = load_agent(&hub, &name).await?;
    let reason = format!("drain requested by {}", by.name);
    if !hub.send_to(&agent.name, muster_proto::ws::HubMsg::Drain { reason: reason.clone() }) {
        return Err(ApiError::Conflict {
            field: Some("name".into()),
            detail: format!("agent {} is not connected; only a connected agent can drain", agent.name),
        });
    }
    // Take nothing new for it from now on, without waiting for its next heartbeat.
    let flags = muster_store::AgentFlags { paused: None, draining: Some(true) };
    let agent = hub.shared.store.set_agent_flags(&agent.name, flags, hub.now()).await?;
    tracing::info!(agent = %agent.name, by = %by.name, "drain requested");
    Ok(json(StatusCode::OK, &agent_view(&agent)))
}

async fn set_dispatch(hub: Hub, Admin(by): Admin, paused: bool) -> ApiResult {
    let setting = vec![(crate::DISPATCH_PAUSED.to_owned(), Some(paused.to_string()))];
    hub.shared.store.put_settings(setting, &by.name, hub.now()).await?;
    hub.shared.dispatch_paused.store(paused, std::sync::atomic::Ordering::SeqCst);
    hub.publish_roster();
    tracing::warn!(paused, by = %by.name, "dispatch {}", if paused { "paused" } else { "resumed" });
    hub.wake_dispatcher();
    status(State(hub.clone()), Admin(by)).await
}

/// Stop or restart all dispatch; answers with the status.
#[utoipa::path(
    post,
    path = "/admin/pause",
    tag = "fleet",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Dispatch paused", body = muster_proto::api::StatusView),
    ),
)]
async fn pause_dispatch(State(hub): State<Hub>, admin: Admin) -> ApiResult {
    set_dispatch(hub, admin, true).await
}

/// Stop or restart all dispatch; answers with the status.
#[utoipa::path(
    post,
    path = "/admin/resume",
    tag = "fleet",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Dispatch resumed", body = muster_proto::api::StatusView),
    ),
)]
async fn resume_dispatch(State(hub): State<Hub>, admin: Admin) -> ApiResult {
    set_dispatch(hub, admin, false).await
}

/// List agents.
#[utoipa::path(
    get,
    path = "/agents",
    tag = "agents",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Every agent", body = Vec<muster_proto::api::AgentView>),
    ),
)]
async fn list_agents(State(hub): State<Hub>, _: Admin) -> ApiResult {
    let agents = hub.shared.store.list_agents().await?;
    Ok(json(StatusCode::OK, &agents.iter().map(agent_view).collect::<Vec<_>>()))
}

async fn load_agent(hub: &Hub, raw: &str) -> ApiResult<AgentRecord> {
    let name = AgentName::parse(raw)?;
    hub.shared.store.agent(&name).await?.ok_or_else(|| ApiError::NotFound(format!("no agent named {name}")))
}

/// One agent.
#[utoipa::path(
    get,
    path = "/agents/{name}",
    tag = "agents",
    security(("admin_token" = [])),
    params(
        ("name" = String, Path, description = "The agent's name"),
    ),
    responses(
        (status = 200, description = "The agent", body = muster_proto::api::AgentView),
    ),
)]
async fn show_agent(State(hub): State<Hub>, _: Admin, Path(name): Path<String>) -> ApiResult {
    Ok(json(StatusCode::OK, &agent_view(&load_agent(&hub, &name).await?)))
}

async fn set_paused(hub: Hub, name: String, paused: bool) -> ApiResult {
    let agent = load_agent(&hub, &name).await?;
    let flags = muster_store::AgentFlags { paused: Some(paused), draining: None };
    let agent = hub.shared.store.set_agent_flags(&agent.name, flags, hub.now()).await?;
    hub.wake_dispatcher();
    Ok(json(StatusCode::OK, &agent_view(&agent)))
}

/// Pause an agent.
#[utoipa::path(
    post,
    path = "/agents/{name}/pause",
    tag = "agents",
    security(("admin_token" = [])),
    params(
        ("name" = String, Path, description = "The agent's name"),
    ),
    responses(
        (status = 200, description = "Takes no new work", body = muster_proto::api::AgentView),
    ),
)]
async fn pause_agent(State(hub): State<Hub>, _: Admin, Path(name): Path<String>) -> ApiResult {
    set_paused(hub, name, true).await
}

/// Resume an agent.
#[utoipa::path(
    post,
    path = "/agents/{name}/resume",
    tag = "agents",
    security(("admin_token" = [])),
    params(
        ("name" = String, Path, description = "The agent's name"),
    ),
    responses(
        (status = 200, description = "Takes work again", body = muster_proto::api::AgentView),
    ),
)]
async fn resume_agent(State(hub): State<Hub>, _: Admin, Path(name): Path<String>) -> ApiResult {
    set_paused(hub, name, false).await
}

fn token_view(t: &muster_store::TokenRecord) -> TokenView {
    TokenView {
        id: t.id.to_string(),
        name: t.name.clone(),
        scope: t.scope.as_str().to_owned(),
        agent: t.agent.as_ref().map(|a| a.to_string()),
        created_at: timestamp(t.created_at),
        revoked_at: t.revoked_at.map(timestamp),
        last_used_at: t.last_used_at.map(timestamp),
    }
}

/// List tokens (never secrets).
#[utoipa::path(
    get,
    path = "/tokens",
    tag = "tokens",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Every token, never its secret", body = Vec<muster_proto::api::TokenView>),
    ),
)]
async fn list_tokens(State(hub): State<Hub>, _: Admin) -> ApiResult {
    let tokens = hub.shared.store.list_tokens().await?;
    Ok(json(StatusCode::OK, &tokens.iter().map(token_view).collect::<Vec<_>>()))
}

/// Revoke a token.
#[utoipa::path(
    post,
    path = "/tokens/{id}/revoke",
    tag = "tokens",
    security(("admin_token" = [])),
    params(
        ("id" = String, Path, description = "The token's id"),
    ),
    responses(
        (status = 200, description = "Revoked", body = muster_proto::api::TokenView),
    ),
)]
async fn revoke_token(State(hub): State<Hub>, Admin(by): Admin, Path(id): Path<String>) -> ApiResult {
    let id = TokenId::parse(&id)?;
    tracing::info!(token = %id, by = %by.name, "revoke token");
    let token = hub.shared.store.revoke_token(&id, hub.now()).await?;
    hub.shared.tokens.clear();
    if let Some(agent) = &token.agent {
        hub.close_agent(agent, "token revoked");
    }
    Ok(json(StatusCode::OK, &token_view(&token)))
}

/// An event as the API and the dashboard's socket show it.
pub(crate) fn event_view(e: muster_store::Event) -> EventView {
    EventView {
        seq: e.seq,
        at: timestamp(e.at),
        kind: e.kind,
        task: e.task.map(|t| t.to_string()),
        agent: e.agent.map(|a| a.to_string()),
        epoch: e.epoch.map(|e| e.0),
        state: e.state,
        detail: e.detail,
    }
}

/// A chunk of output as the API and the dashboard's socket show it.
pub(crate) fn output_view(c: muster_store::OutputRecord) -> OutputView {
    OutputView {
        seq: c.seq,
        attempt: c.attempt,
        stream: c.stream.as_str().to_owned(),
        at: timestamp(c.at),
        data: String::from_utf8_lossy(&c.data).into_owned(),
    }
}

/// Events, oldest first. Query: `after`, `before` (the newest `limit` events below it, to read
/// backwards), `task`, `agent`, `kind` (`task.failed`, or a family: `task`, `lock`), `limit`
/// (default 1000, at most 10000), `wait` (long-poll, at most 60s).
#[utoipa::path(
    get,
    path = "/events",
    tag = "events",
    security(("admin_token" = [])),
    params(
        ("after" = Option<i64>, Query, description = "Events after this sequence number"),
        ("before" = Option<i64>, Query, description = "Events before this sequence number, newest first"),
        ("task" = Option<String>, Query, description = "Only this task's"),
        ("agent" = Option<String>, Query, description = "Only this agent's"),
        ("kind" = Option<String>, Query, description = "Only this kind, or a family such as task.*"),
        ("limit" = Option<u32>, Query, description = "At most this many"),
        ("wait" = Option<String>, Query, description = "Long-poll up to this long for new events"),
    ),
    responses(
        (status = 200, description = "Events in order", body = muster_proto::api::EventPage),
    ),
)]
async fn list_events(State(hub): State<Hub>, _: Admin, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q, &["after", "before", "task", "agent", "kind", "limit", "wait"])?;
    let filter = EventFilter {
        after: p.number("after")?.unwrap_or(0),
        before: p.number("before")?,
        task: p.get("task").map(TaskId::parse).transpose()?,
        agent: p.get("agent").map(AgentName::parse).transpose()?,
        kind: p.get("kind").map(str::to_owned),
        limit: p.number::<usize>("limit")?.unwrap_or(1000).clamp(1, 10_000),
    };
    let deadline = tokio::time::Instant::now() + p.wait()?;
    let mut seen = hub.shared.store.subscribe();
    let mut stopping = hub.shared.stopping.subscribe();
    loop {
        seen.borrow_and_update();
        let events = hub.shared.store.events(&filter).await?;
        if !events.is_empty() || tokio::time::Instant::now() >= deadline {
            let next_after = events.last().map_or(filter.after, |e| e.seq);
            let page = EventPage { events: events.into_iter().map(event_view).collect(), next_after };
            return Ok(json(StatusCode::OK, &page));
        }
        let woke = tokio::time::timeout_at(deadline, async {
            tokio::select! {
                r = seen.changed() => r.is_ok(),
                _ = async { drop(stopping.wait_for(|stop| *stop).await) } => false,
            }
        })
        .await;
        if !matches!(woke, Ok(true)) {
            // Past the deadline, or the store closed: answer with what there is.
            let page = EventPage { events: Vec::new(), next_after: filter.after };
            return Ok(json(StatusCode::OK, &page));
        }
    }
}

/// Counts and uptime.
#[utoipa::path(
    get,
    path = "/status",
    tag = "fleet",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "The hub at a glance", body = muster_proto::api::StatusView),
    ),
)]
async fn status(State(hub): State<Hub>, _: Admin) -> ApiResult {
    let counts = hub.shared.store.count_tasks().await?;
    let agents = hub.shared.store.list_agents().await?;
    let mut by_state: BTreeMap<String, u64> =
        muster_core::AgentState::ALL.iter().map(|s| (s.as_str().to_owned(), 0)).collect();
    for a in &agents {
        *by_state.entry(a.status.state().as_str().to_owned()).or_default() += 1;
    }
    let now = hub.now();
    let health = hub.health().await?;
    let last_event = *hub.shared.store.subscribe().borrow();
    let view = StatusView {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        started_at: timestamp(hub.shared.started_at),
        uptime_secs: now.since(hub.shared.started_at).as_secs(),
        draining: hub.shared.draining.load(std::sync::atomic::Ordering::SeqCst),
        tasks: counts.into_iter().map(|(s, n)| (s.as_str().to_owned(), n)).collect(),
        agents: by_state,
        connected_agents: hub.shared.sessions.lock().expect("sessions lock poisoned").len() as u64,
        last_event,
        health,
        dispatch_paused: hub.shared.dispatch_paused.load(std::sync::atomic::Ordering::SeqCst),
        workers: hub.shared.workers.views(),
    };
    Ok(json(StatusCode::OK, &view))
}

/// `GET /api/v1/regressions`: newest first.
#[utoipa::path(
    get,
    path = "/regressions",
    tag = "tasks",
    security(("admin_token" = [])),
    params(
        ("limit" = Option<u32>, Query, description = "At most this many"),
    ),
    responses(
        (status = 200, description = "Checks that passed before and fail now", body = Vec<muster_proto::api::RegressionView>),
    ),
)]
async fn regressions(State(hub): State<Hub>, _: Admin, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q, &["limit"])?;
    let limit = p.number::<usize>("limit")?.unwrap_or(200).clamp(1, 1000);
    let all = hub.shared.store.regressions(limit).await?;
    let view: Vec<muster_proto::api::RegressionView> = all
        .iter()
        .map(|r| muster_proto::api::RegressionView {
            id: r.id,
            repo: r.repo.clone(),
            check: r.check.clone(),
            task: r.task.to_string(),
            commit: r.commit.clone(),
            last_passed_task: r.last_passed_task.to_string(),
            last_passed_commit: r.last_passed_commit.clone(),
            at: timestamp(r.at),
        })
        .collect();
    Ok(json(StatusCode::OK, &view))
}

/// `POST /api/v1/ctl/tasks`: a run creates a follow-up task (at most 20 per
/// task, 5 deep, `limits.followups_per_tree` in its task tree, and
/// `limits.followups_per_minute` from one agent's runs; no shadows).
#[utoipa::path(
    post,
    path = "/ctl/tasks",
    tag = "ctl",
    security(("task_token" = [])),
    request_body = muster_proto::api::TaskSubmit,
    responses(
        (status = 201, description = "A follow-up task queued", body = muster_proto::api::TaskCreated),
        (status = 200, description = "An existing task with the same idempotency key", body = muster_proto::api::TaskCreated),
    ),
)]
async fn ctl_create_task(
    State(hub): State<Hub>,
    TaskCaller(parent, epoch): TaskCaller,
    Body(mut submit): Body<TaskSubmit>,
) -> ApiResult {
    if hub.shared.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(ApiError::Unavailable("the hub is shutting down and takes no new tasks".into()));
    }
    if !submit.shadow.is_empty() {
        return Err(ApiError::bad("shadow", "a follow-up task has no shadows"));
    }
    submit.prompt = crate::auth::redact_tokens(&submit.prompt).into_owned();
    if submit.idempotency_key.is_some() {
        return Err(ApiError::bad("idempotency_key", "a follow-up task takes no idempotency key"));
    }
    let parent_task =
        hub.shared.store.task(&parent).await?.ok_or_else(|| ApiError::NotFound(format!("no task {parent}")))?;
    // A run cannot raise its own work above itself...
    let p = parent_task.spec.priority;
    submit.priority.get_or_insert_with(|| p.as_str().to_owned());
    let (mut spec, _) = checked_spec(&hub, submit)?;
    if spec.priority < p {
        return Err(ApiError::bad(
            "priority",
            format!("a follow-up task may not be more urgent than the task that creates it ({})", p.as_str()),
        ));
    }
    // ...nor reach, without a person, a runner, agents or commands its own task could not.
    let caps_within = spec.capabilities.iter().all(|c| parent_task.spec.capabilities.contains(c));
    if spec.runner != parent_task.spec.runner || !caps_within || !spec.checks.is_empty() {
        spec.requires_approval = true;
    }
    if let Some(agent) = parent_task.lease.as_ref().map(|l| &l.agent) {
        hub.take_followup(agent)?;
    }
    let now = hub.now();
    let per_tree = hub.shared.runtime.borrow().followups_per_tree as u64;
    let created = match hub.shared.store.create_followup(&parent, epoch, new_task_id(now)?, spec, per_tree, now).await?
    {
        muster_store::Followup::Created(created) => created,
        muster_store::Followup::OverBudget { root, held } => {
            tracing::warn!(parent = %parent, root = %root, held, "a run's follow-up task was refused: its tree is full");
            return Err(ApiError::Conflict {
                field: Some("followups".into()),
                detail: format!(
                    "the task tree of {root} already holds {held} follow-up tasks, the most it may \
                     (limits.followups_per_tree); finish this work in the run, or ask a person to queue more"
                ),
            });
        }
    };
    tracing::info!(parent = %parent, task_id = %created.task.id, "a run created a follow-up task");
    hub.wake_dispatcher();
    let status = if created.created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(json(status, &TaskCreated { created: created.created, task: TaskView::from_task(&created.task) }))
}

impl Hub {
    /// Whether a commit reaches the disk: when the latest one failed, a
    /// probe write says whether they do again.
    pub(crate) async fn commits(&self) -> Result<(), String> {
        if self.shared.store.maintenance().write_stats().failing.is_none() {
            return Ok(());
        }
        // Anyone may ask /readyz: probe at most once a second, one at a time.
        let mut last = self.shared.probe.lock().await;
        if let Some((at, result)) = last.as_ref()
            && at.elapsed() < Duration::from_secs(1)
        {
            return result.clone();
        }
        let Some(why) = self.shared.store.maintenance().write_stats().failing else { return Ok(()) };
        let result = match self.shared.store.probe_write(self.now()).await {
            Ok(()) => Ok(()),
            Err(e) => Err(format!("the last commit failed ({why}), and so does a probe write: {e}")),
        };
        *last = Some((std::time::Instant::now(), result.clone()));
        result
    }

    /// Whether the disk holding the data directory has more room than the
    /// `disk_low` alert's threshold.
    pub(crate) async fn disk_room(&self) -> Result<(), String> {
        let dir = &self.config().data_dir;
        let Some(free) = crate::alerts::disk_free(dir) else { return Ok(()) };
        let threshold = self
            .rule_configs()
            .await
            .map(|c| c[&muster_core::alert::Rule::DiskLow].threshold)
            .unwrap_or_else(|_| muster_core::alert::Rule::DiskLow.default_config().threshold);
        if free < threshold {
            return Err(format!(
                "{:.1}% of the disk holding {} is free, below the disk_low threshold of {:.1}%",
                free * 100.0,
                dir.display(),
                threshold * 100.0
            ));
        }
        Ok(())
    }
}
