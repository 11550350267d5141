//! The REST API under `/api/v1` and the probes beside it: one module per
//! resource, each handler with its `#[utoipa::path]` description. The
//! router is built from those descriptions (`routes`), so the OpenAPI 3.1
//! document at `/api/v1/openapi.json` lists exactly the routes served.

use crate::Hub;
use crate::auth::{hash_token, mint_token};
use crate::error::{ApiError, ApiResult, json};
use crate::extract::{Admin, Body, MAX_BODY_BYTES, Params, Path, TaskCaller};
use crate::new_task_id;
use crate::views::{doctor_of, event_view, output_view};
use axum::Router;
use axum::body::Bytes;
use axum::extract::MatchedPath;
use axum::extract::{DefaultBodyLimit, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use muster_core::{AgentName, Capability, Live, MicroUsd, RunnerName, Task, TaskId, TaskState, TokenId};
use muster_proto::api::{
    AgentAdd, AgentCreated, AgentView, AttemptView, EventPage, LogsPage, StatusView, TaskBatch, TaskBatchCreated,
    TaskCreated, TaskDefaults, TaskDetail, TaskPage, TaskSubmit, TaskView, TokenView,
};
use muster_proto::{FieldError, timestamp};
use muster_store::{AgentRecord, EventFilter, NewAgent, NewToken, OutputFilter, Scope, StoreError, TaskFilter};
use std::collections::BTreeMap;
use std::time::Duration;
use utoipa_axum::{router::OpenApiRouter, routes};

mod admin;
mod agents;
mod alerts;
mod config;
mod ctl;
mod decisions;
mod events;
mod fleet;
mod locks;
mod messages;
mod pipelines;
mod probes;
mod runners;
mod schedules;
mod tasks;
mod tokens;

use admin::*;
use agents::*;
use alerts::*;
use config::*;
use ctl::*;
use events::*;
use fleet::*;
use locks::*;
use probes::*;
use runners::*;
use tasks::*;
use tokens::*;

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
        .routes(routes!(decisions::ctl_ask, decisions::ctl_list))
        .routes(routes!(decisions::ctl_show))
        .routes(routes!(decisions::add, decisions::list))
        .routes(routes!(pipelines::run, pipelines::list))
        .routes(routes!(pipelines::show))
        .routes(routes!(decisions::show))
        .routes(routes!(decisions::conflicts))
        .routes(routes!(regressions))
        .routes(routes!(messages::send, messages::list))
        .routes(routes!(messages::create_channel, messages::channels))
        .routes(routes!(messages::ctl_send, messages::ctl_read))
        .routes(routes!(ctl_create_task))
        .routes(routes!(schedules::add, schedules::list))
        .routes(routes!(schedules::show, schedules::delete))
        .routes(routes!(schedules::pause))
        .routes(routes!(schedules::resume))
        .routes(routes!(decisions::answer))
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
        .routes(routes!(hubs))
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

async fn not_found() -> ApiError {
    ApiError::NotFound("no such route".into())
}

fn task_id(raw: &str) -> ApiResult<TaskId> {
    Ok(TaskId::parse(raw)?)
}
