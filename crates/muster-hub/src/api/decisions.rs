//! Decisions: asked by operators and by runs, answered by people; and conflicts between runs.

use crate::Hub;
use crate::decisions::*;
use crate::error::{ApiError, ApiResult, json};
use crate::extract::Path;
use crate::extract::{Admin, Body, Params, TaskCaller};
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use muster_core::TaskId;
use muster_proto::api::{CtlAsk, DecisionAdd, DecisionAnswer};
use muster_proto::timestamp;
use muster_store::{DecisionState, NewDecision};

/// `POST /api/v1/decisions`: an operator asks about a queued task.
#[utoipa::path(
    post,
    operation_id = "add_decision",
    path = "/decisions",
    tag = "decisions",
    security(("admin_token" = [])),
    request_body = muster_proto::api::DecisionAdd,
    responses(
        (status = 201, description = "Asked; the task waits for it", body = muster_proto::api::DecisionView),
    ),
)]
pub(crate) async fn add(State(hub): State<Hub>, Admin(by): Admin, Body(req): Body<DecisionAdd>) -> ApiResult {
    let new = NewDecision {
        task: TaskId::parse(&req.task).map_err(|e| ApiError::bad("task", e.to_string()))?,
        question: req.question,
        options: req.options,
        default: req.default,
        timeout: timeout(req.timeout.as_ref())?,
        answerers: req.answerers,
        raised_by: by.name.clone(),
        epoch: None,
        park: false,
    };
    let (d, _) = hub.shared.store.open_decision(new, hub.now()).await?;
    tracing::info!(decision = d.id, task_id = %d.task, by = %by.name, "decision opened");
    hub.wake_dispatcher();
    Ok(json(StatusCode::CREATED, &view(&d)))
}

/// `GET /api/v1/decisions?state=open|all&task=ID`.
#[utoipa::path(
    get,
    operation_id = "list_decisions",
    path = "/decisions",
    tag = "decisions",
    security(("admin_token" = [])),
    params(
        ("state" = Option<String>, Query, description = "open, answered, timed_out, withdrawn or all"),
        ("task" = Option<String>, Query, description = "Only this task's"),
        ("limit" = Option<u32>, Query, description = "At most this many"),
    ),
    responses(
        (status = 200, description = "Decisions, open ones by default", body = Vec<muster_proto::api::DecisionView>),
    ),
)]
pub(crate) async fn list(State(hub): State<Hub>, _: Admin, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q, &["state", "task", "limit"])?;
    let open_only = match p.get("state") {
        None | Some("open") => true,
        Some("all") => false,
        Some(other) => return Err(ApiError::bad("state", format!("{other:?}: expected open or all"))),
    };
    let task = p.get("task").map(TaskId::parse).transpose().map_err(|e| ApiError::bad("task", e.to_string()))?;
    let limit = p.number::<usize>("limit")?.unwrap_or(200).clamp(1, 1000);
    let all = hub.shared.store.decisions(open_only, task.as_ref(), limit).await?;
    Ok(json(StatusCode::OK, &all.iter().map(view).collect::<Vec<_>>()))
}

/// One decision.
#[utoipa::path(
    get,
    operation_id = "show_decision",
    path = "/decisions/{id}",
    tag = "decisions",
    security(("admin_token" = [])),
    params(
        ("id" = String, Path, description = "The decision's id"),
    ),
    responses(
        (status = 200, description = "The decision", body = muster_proto::api::DecisionView),
    ),
)]
pub(crate) async fn show(State(hub): State<Hub>, _: Admin, Path(id): Path<String>) -> ApiResult {
    let id = decision_id(&id)?;
    let d = hub.shared.store.decision(id).await?.ok_or_else(|| ApiError::NotFound(format!("no decision #{id}")))?;
    Ok(json(StatusCode::OK, &view(&d)))
}

/// `POST /api/v1/decisions/{id}/answer`: a person chooses.
#[utoipa::path(
    post,
    operation_id = "answer_decision",
    path = "/decisions/{id}/answer",
    tag = "decisions",
    security(("admin_token" = [])),
    params(
        ("id" = String, Path, description = "The decision's id"),
    ),
    request_body = muster_proto::api::DecisionAnswer,
    responses(
        (status = 200, description = "Answered", body = muster_proto::api::DecisionView),
    ),
)]
pub(crate) async fn answer(
    State(hub): State<Hub>,
    Admin(by): Admin,
    Path(id): Path<String>,
    Body(req): Body<DecisionAnswer>,
) -> ApiResult {
    let id = decision_id(&id)?;
    let d = hub.shared.store.decision(id).await?.ok_or_else(|| ApiError::NotFound(format!("no decision #{id}")))?;
    if !d.answerers.is_empty() && !d.answerers.contains(&by.name) {
        return Err(ApiError::Forbidden(format!(
            "decision #{id} may be answered only by {}; this token is {}",
            d.answerers.join(", "),
            by.name
        )));
    }
    let (d, task) = hub.shared.store.answer_decision(id, &req.option, req.note, &by.name, hub.now()).await?;
    tracing::info!(decision = id, task_id = %task.id, by = %by.name, answer = ?d.answer, "decision answered");
    if !d.park {
        hub.sync_asking(&task).await;
    }
    hub.wake_dispatcher();
    Ok(json(StatusCode::OK, &view(&d)))
}

/// `POST /api/v1/ctl/decisions`: the run asks a person about its own task.
#[utoipa::path(
    post,
    path = "/ctl/decisions",
    tag = "ctl",
    security(("task_token" = [])),
    request_body = muster_proto::api::CtlAsk,
    responses(
        (status = 201, description = "Asked", body = muster_proto::api::DecisionView),
    ),
)]
pub(crate) async fn ctl_ask(
    State(hub): State<Hub>,
    TaskCaller(task, epoch): TaskCaller,
    Body(req): Body<CtlAsk>,
) -> ApiResult {
    let (options, answerers) = if req.permission {
        if req.park {
            return Err(ApiError::bad("park", "a permission prompt waits for its answer"));
        }
        let approvers = hub.shared.runtime.borrow().approvers.iter().cloned().collect();
        (vec!["allow".to_owned(), "deny".to_owned()], approvers)
    } else {
        (req.options, Vec::new())
    };
    let redact = |text: String| crate::auth::redact_tokens(&text).into_owned();
    let new = NewDecision {
        task: task.clone(),
        question: redact(req.question),
        options: options.into_iter().map(redact).collect(),
        default: req.default.map(redact),
        timeout: timeout(req.timeout.as_ref())?,
        answerers,
        raised_by: format!("the run of {task}"),
        epoch: Some(epoch),
        park: req.park,
    };
    let (d, t) = hub.shared.store.open_decision(new, hub.now()).await?;
    tracing::info!(decision = d.id, task_id = %task, park = d.park, "a run asked for a decision");
    if !d.park {
        hub.sync_asking(&t).await;
    }
    Ok(json(StatusCode::CREATED, &view(&d)))
}

/// `GET /api/v1/ctl/decisions`: the task's decisions, answered ones included.
#[utoipa::path(
    get,
    path = "/ctl/decisions",
    tag = "ctl",
    security(("task_token" = [])),
    responses(
        (status = 200, description = "The decisions its task asked", body = Vec<muster_proto::api::DecisionView>),
    ),
)]
pub(crate) async fn ctl_list(State(hub): State<Hub>, TaskCaller(task, _): TaskCaller) -> ApiResult {
    let all = hub.shared.store.decisions(false, Some(&task), 1000).await?;
    Ok(json(StatusCode::OK, &all.iter().map(view).collect::<Vec<_>>()))
}

/// `GET /api/v1/ctl/decisions/{id}?wait=60s`: one of the task's decisions,
/// held until it is closed or the wait runs out.
#[utoipa::path(
    get,
    path = "/ctl/decisions/{id}",
    tag = "ctl",
    security(("task_token" = [])),
    params(
        ("id" = String, Path, description = "The decision's id"),
        ("wait" = Option<String>, Query, description = "Long-poll up to this long for an answer"),
    ),
    responses(
        (status = 200, description = "The decision", body = muster_proto::api::DecisionView),
    ),
)]
pub(crate) async fn ctl_show(
    State(hub): State<Hub>,
    TaskCaller(task, _): TaskCaller,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
    let id = decision_id(&id)?;
    let wait = Params::parse(q, &["wait"])?.wait()?;
    let deadline = tokio::time::Instant::now() + wait;
    let mut changes = hub.shared.store.subscribe();
    loop {
        changes.borrow_and_update();
        let d = hub.shared.store.decision(id).await?.filter(|d| d.task == task);
        let d = d.ok_or_else(|| ApiError::NotFound(format!("{task} has no decision #{id}")))?;
        let now = tokio::time::Instant::now();
        if d.state != DecisionState::Open || now >= deadline {
            return Ok(json(StatusCode::OK, &view(&d)));
        }
        let _ = tokio::time::timeout(deadline - now, changes.changed()).await;
    }
}

/// `GET /api/v1/conflicts?state=open|all`.
#[utoipa::path(
    get,
    operation_id = "list_conflicts",
    path = "/conflicts",
    tag = "decisions",
    security(("admin_token" = [])),
    params(
        ("state" = Option<String>, Query, description = "open or all"),
        ("limit" = Option<u32>, Query, description = "At most this many"),
    ),
    responses(
        (status = 200, description = "Conflicts between runs", body = Vec<muster_proto::api::ConflictView>),
    ),
)]
pub(crate) async fn conflicts(State(hub): State<Hub>, _: Admin, RawQuery(q): RawQuery) -> ApiResult {
    let p = Params::parse(q, &["state", "limit"])?;
    let open_only = match p.get("state") {
        None | Some("all") => false,
        Some("open") => true,
        Some(other) => return Err(ApiError::bad("state", format!("{other:?}: expected open or all"))),
    };
    let limit = p.number::<usize>("limit")?.unwrap_or(200).clamp(1, 1000);
    let all = hub.shared.store.conflicts(open_only, limit).await?;
    let view: Vec<muster_proto::api::ConflictView> = all
        .iter()
        .map(|c| muster_proto::api::ConflictView {
            id: c.id,
            repo: c.repo.clone(),
            files: c.files.clone(),
            winner: c.winner.to_string(),
            loser: c.loser.to_string(),
            decision: c.decision,
            resolution: c.resolution.clone(),
            created_at: timestamp(c.created_at),
            resolved_at: c.resolved_at.map(timestamp),
        })
        .collect();
    Ok(json(StatusCode::OK, &view))
}
