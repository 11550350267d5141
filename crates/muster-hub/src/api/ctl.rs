//! What a run does for its own task with its task token: notes, locks, follow-up tasks.

use super::*;

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
pub(super) async fn ctl_lock(
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
pub(super) struct StopWaiting {
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
pub(super) async fn ctl_unlock(
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
pub(super) async fn ctl_note(
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
pub(super) async fn ctl_create_task(
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
