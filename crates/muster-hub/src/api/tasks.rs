//! Tasks: queue, list, show, steer, and read what their runs did.

use super::*;

/// A submitted task as the hub accepts it: defaults filled in, its runners
/// (own, shadow, fallback) known, and approval applied.
pub(super) fn checked_spec(hub: &Hub, submit: TaskSubmit) -> ApiResult<(muster_core::TaskSpec, Vec<RunnerName>)> {
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
pub(super) async fn create_task(State(hub): State<Hub>, _: Admin, Body(submit): Body<TaskSubmit>) -> ApiResult {
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
pub(super) async fn create_tasks(State(hub): State<Hub>, _: Admin, Body(batch): Body<TaskBatch>) -> ApiResult {
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
        ("q" = Option<String>, Query, description = "Text the id, prompt or reason contains, ignoring case"),
        ("limit" = Option<u32>, Query, description = "At most this many (1 to 1000; 100 by default)"),
        ("before" = Option<i64>, Query, description = "The `next` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of tasks, newest first", body = muster_proto::api::TaskPage),
    ),
)]
pub(super) async fn list_tasks(State(hub): State<Hub>, _: Admin, RawQuery(q): RawQuery) -> ApiResult {
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

pub(super) async fn load_task(hub: &Hub, raw: &str) -> ApiResult<Task> {
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
pub(super) async fn show_task(State(hub): State<Hub>, _: Admin, Path(id): Path<String>) -> ApiResult {
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

pub(super) fn report_view(r: &muster_store::RunReport) -> muster_proto::ws::RunReport {
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

pub(super) fn workspace_summary(w: &muster_store::WorkspaceRecord) -> muster_proto::api::WorkspaceSummary {
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
pub(super) async fn task_diff(
    State(hub): State<Hub>,
    _: Admin,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
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
pub(super) async fn task_steps(
    State(hub): State<Hub>,
    _: Admin,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
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
pub(super) async fn cancel_task(State(hub): State<Hub>, Admin(by): Admin, Path(id): Path<String>) -> ApiResult {
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
pub(super) async fn retry_task(State(hub): State<Hub>, Admin(by): Admin, Path(id): Path<String>) -> ApiResult {
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
pub(super) async fn skip_task(
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
pub(super) async fn approve_task(State(hub): State<Hub>, Admin(by): Admin, Path(id): Path<String>) -> ApiResult {
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
pub(super) async fn reject_task(
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
pub(super) async fn reset_task(State(hub): State<Hub>, Admin(by): Admin, Path(id): Path<String>) -> ApiResult {
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
pub(super) async fn move_task(
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
pub(super) async fn operate(hub: &Hub, id: &TaskId, op: muster_store::TaskOp, by: &str) -> ApiResult {
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
pub(super) async fn task_logs(
    State(hub): State<Hub>,
    _: Admin,
    Path(id): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult {
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
pub(super) async fn regressions(State(hub): State<Hub>, _: Admin, RawQuery(q): RawQuery) -> ApiResult {
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
