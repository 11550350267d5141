//! Pipelines: run one from its YAML, list them, show one.

use crate::Hub;
use crate::error::{ApiError, ApiResult, json};
use crate::extract::Path;
use crate::extract::{Admin, Body, Params};
use crate::new_task_id;
use crate::pipelines::*;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use muster_proto::api::{PipelineRun, TaskDefaults};
use muster_store::NewPipeline;

/// `POST /api/v1/pipelines`: 201 with the pipeline, or 400 listing every
/// problem in the file, one `line N: …` per line of `detail`.
#[utoipa::path(
    post,
    operation_id = "run_pipeline",
    path = "/pipelines",
    tag = "pipelines",
    security(("admin_token" = [])),
    request_body = muster_proto::api::PipelineRun,
    responses(
        (status = 201, description = "Its stages queued", body = muster_proto::api::PipelineView),
    ),
)]
pub(crate) async fn run(State(hub): State<Hub>, Admin(by): Admin, Body(req): Body<PipelineRun>) -> ApiResult {
    if hub.shared.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(ApiError::Unavailable("the hub is shutting down and takes no new tasks".into()));
    }
    let config = &hub.shared.config;
    let defaults = TaskDefaults {
        runner: hub.runtime().default_runner,
        timeout: config.default_timeout,
        max_attempts: config.default_max_attempts,
    };
    let known = hub.shared.known_runners.lock().expect("runners lock poisoned").iter().cloned().collect();
    let now = hub.now();
    let mut id_error = None;
    let mut new_id = || match new_task_id(now) {
        Ok(id) => id,
        Err(e) => {
            id_error = Some(e);
            muster_core::TaskId::from_parts(now.0, 0)
        }
    };
    let checked = crate::pipeline::check(&req.source, &req.vars, &defaults, &known, &mut new_id);
    if let Some(e) = id_error {
        return Err(e);
    }
    let mut checked = checked.map_err(|problems| {
        let lines: Vec<String> = problems
            .iter()
            .map(|p| if p.line > 0 { format!("line {}: {}", p.line, p.message) } else { p.message.clone() })
            .collect();
        ApiError::bad("source", lines.join("\n"))
    })?;
    let approval = hub.shared.runtime.borrow().approval_runners.clone();
    for stage in &mut checked.stages {
        stage.spec.requires_approval |= approval.contains(&stage.spec.runner);
    }
    let new =
        NewPipeline { name: checked.name, source: req.source, created_by: by.name.clone(), stages: checked.stages };
    let p = hub.shared.store.create_pipeline(new, now).await?;
    tracing::info!(pipeline = p.id, name = %p.name, stages = p.stages.len(), by = %by.name, "pipeline created");
    hub.wake_dispatcher();
    Ok(json(StatusCode::CREATED, &view(&hub, &p).await?))
}

/// Newest first; query `limit` (default 50).
#[utoipa::path(
    get,
    operation_id = "list_pipelines",
    path = "/pipelines",
    tag = "pipelines",
    security(("admin_token" = [])),
    params(
        ("limit" = Option<u32>, Query, description = "At most this many"),
    ),
    responses(
        (status = 200, description = "Pipelines, newest first", body = Vec<muster_proto::api::PipelineView>),
    ),
)]
pub(crate) async fn list(State(hub): State<Hub>, _: Admin, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q, &["limit"])?;
    let limit = p.number::<usize>("limit")?.unwrap_or(50).clamp(1, 1000);
    let mut out = Vec::new();
    for p in hub.shared.store.pipelines(limit).await? {
        out.push(view(&hub, &p).await?);
    }
    Ok(json(StatusCode::OK, &out))
}

/// `{id, name, state, created_by, created_at, stages: [{name, task, state, attempts, reason,
/// started_at, finished_at}]}`.
#[utoipa::path(
    get,
    operation_id = "show_pipeline",
    path = "/pipelines/{id}",
    tag = "pipelines",
    security(("admin_token" = [])),
    params(
        ("id" = String, Path, description = "The pipeline's id"),
    ),
    responses(
        (status = 200, description = "The pipeline with its stages", body = muster_proto::api::PipelineView),
    ),
)]
pub(crate) async fn show(State(hub): State<Hub>, _: Admin, Path(id): Path<String>) -> ApiResult {
    let id: i64 = id
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiError::bad("id", format!("{id:?} is not a pipeline id (a number)")))?;
    let p = hub.shared.store.pipeline(id).await?.ok_or_else(|| ApiError::NotFound(format!("no pipeline {id}")))?;
    Ok(json(StatusCode::OK, &view(&hub, &p).await?))
}
