//! Schedules: add, list, show, pause, resume, delete.

use crate::Hub;
use crate::error::{ApiError, ApiResult, json};
use crate::extract::Path;
use crate::extract::{Admin, Body};
use crate::schedules::*;
use axum::extract::State;
use axum::http::StatusCode;
use muster_proto::api::ScheduleAdd;
use muster_store::NewSchedule;

/// Body `{"name": "…", "cron": "0 * * * *", "tz": "UTC", "missed": "skip"\|"run_once", "task": {the
/// body of POST /api/v1/tasks}}`; 201 with the schedule.
#[utoipa::path(
    post,
    operation_id = "add_schedule",
    path = "/schedules",
    tag = "schedules",
    security(("admin_token" = [])),
    request_body = muster_proto::api::ScheduleAdd,
    responses(
        (status = 201, description = "Added", body = muster_proto::api::ScheduleView),
    ),
)]
pub(crate) async fn add(State(hub): State<Hub>, Admin(by): Admin, Body(req): Body<ScheduleAdd>) -> ApiResult {
    let tz = req.tz.unwrap_or_else(|| "UTC".to_owned());
    let when = When::parse(&req.cron, &tz)?;
    let missed = match req.missed.as_deref().unwrap_or("skip") {
        m @ ("skip" | "run_once") => m.to_owned(),
        "run-once" => "run_once".to_owned(),
        other => return Err(ApiError::bad("missed", format!("{other:?}: expected skip or run_once"))),
    };
    spec_of(&hub, &req.task)?;
    let now = hub.now();
    let next_at = when.next_after(now);
    if next_at.is_none() {
        return Err(ApiError::bad("cron", format!("{:?} never fires again", req.cron)));
    }
    let new = NewSchedule {
        name: req.name,
        cron: req.cron.trim().to_owned(),
        tz: when.tz.name().to_owned(),
        template: serde_json::to_string(&req.task).map_err(|e| ApiError::Internal(e.to_string()))?,
        missed,
        next_at,
        created_by: by.name.clone(),
    };
    let s = hub.shared.store.add_schedule(new, now).await?;
    tracing::info!(schedule = %s.name, cron = %s.cron, tz = %s.tz, by = %by.name, "schedule added");
    hub.wake_dispatcher();
    Ok(json(StatusCode::CREATED, &view(&s)))
}

/// Each `{id, name, cron, tz, missed, paused, next_at, last_at, last_task, task, created_by,
/// created_at}`.
#[utoipa::path(
    get,
    operation_id = "list_schedules",
    path = "/schedules",
    tag = "schedules",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "Every schedule", body = Vec<muster_proto::api::ScheduleView>),
    ),
)]
pub(crate) async fn list(State(hub): State<Hub>, _: Admin) -> ApiResult {
    let all = hub.shared.store.schedules().await?;
    Ok(json(StatusCode::OK, &all.iter().map(view).collect::<Vec<_>>()))
}

/// Each `{id, name, cron, tz, missed, paused, next_at, last_at, last_task, task, created_by,
/// created_at}`.
#[utoipa::path(
    get,
    operation_id = "show_schedule",
    path = "/schedules/{key}",
    tag = "schedules",
    security(("admin_token" = [])),
    params(
        ("key" = String, Path, description = "The schedule's id or name"),
    ),
    responses(
        (status = 200, description = "The schedule", body = muster_proto::api::ScheduleView),
    ),
)]
pub(crate) async fn show(State(hub): State<Hub>, _: Admin, Path(key): Path<String>) -> ApiResult {
    let s = hub.shared.store.schedule(&key).await?.ok_or_else(|| ApiError::NotFound(format!("no schedule {key}")))?;
    Ok(json(StatusCode::OK, &view(&s)))
}

/// 409 when it already is.
#[utoipa::path(
    post,
    operation_id = "pause_schedule",
    path = "/schedules/{key}/pause",
    tag = "schedules",
    security(("admin_token" = [])),
    params(
        ("key" = String, Path, description = "The schedule's id or name"),
    ),
    responses(
        (status = 200, description = "Paused", body = muster_proto::api::ScheduleView),
    ),
)]
pub(crate) async fn pause(State(hub): State<Hub>, Admin(by): Admin, Path(key): Path<String>) -> ApiResult {
    let s = hub.shared.store.set_schedule_paused(&key, true, None, &by.name, hub.now()).await?;
    Ok(json(StatusCode::OK, &view(&s)))
}

/// Resumes from now: what fell due while paused is not run.
#[utoipa::path(
    post,
    operation_id = "resume_schedule",
    path = "/schedules/{key}/resume",
    tag = "schedules",
    security(("admin_token" = [])),
    params(
        ("key" = String, Path, description = "The schedule's id or name"),
    ),
    responses(
        (status = 200, description = "Resumed from now", body = muster_proto::api::ScheduleView),
    ),
)]
pub(crate) async fn resume(State(hub): State<Hub>, Admin(by): Admin, Path(key): Path<String>) -> ApiResult {
    let s = hub.shared.store.schedule(&key).await?.ok_or_else(|| ApiError::NotFound(format!("no schedule {key}")))?;
    let next_at = When::parse(&s.cron, &s.tz)?.next_after(hub.now());
    let s = hub.shared.store.set_schedule_paused(&key, false, next_at, &by.name, hub.now()).await?;
    hub.wake_dispatcher();
    Ok(json(StatusCode::OK, &view(&s)))
}

/// The schedule as it was.
#[utoipa::path(
    delete,
    operation_id = "delete_schedule",
    path = "/schedules/{key}",
    tag = "schedules",
    security(("admin_token" = [])),
    params(
        ("key" = String, Path, description = "The schedule's id or name"),
    ),
    responses(
        (status = 200, description = "Deleted", body = muster_proto::api::ScheduleView),
    ),
)]
pub(crate) async fn delete(State(hub): State<Hub>, Admin(by): Admin, Path(key): Path<String>) -> ApiResult {
    let s = hub.shared.store.delete_schedule(&key, &by.name, hub.now()).await?;
    Ok(json(StatusCode::OK, &view(&s)))
}
