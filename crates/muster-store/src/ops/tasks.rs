//! Tasks: creation (one or a batch), dependencies, listing and counts, and
//! the operator's actions on one task.

use super::*;

pub(super) fn task_row(r: &Row<'_>) -> Result<Task> {
    let id: String = r.get(0)?;
    let runner: String = r.get(2)?;
    let caps: String = r.get(3)?;
    let priority: i64 = r.get(4)?;
    let state: String = r.get(9)?;
    let lease_agent: Option<String> = r.get(12)?;
    let lease_epoch: Option<i64> = r.get(13)?;
    let lease_expires: Option<i64> = r.get(14)?;
    let agent: Option<String> = r.get(19)?;
    let lease_runner: Option<String> = r.get(30)?;
    let lease = match (lease_agent, lease_epoch, lease_expires) {
        (Some(a), Some(e), Some(x)) => Some(Lease {
            agent: AgentName::parse(&a).map_err(|e| corrupt("lease agent", e))?,
            epoch: Epoch(e as u64),
            expires_at: Millis(x),
            runner: lease_runner.map(|r| RunnerName::parse(&r)).transpose().map_err(|e| corrupt("lease runner", e))?,
        }),
        _ => None,
    };
    Ok(Task {
        id: TaskId::parse(&id).map_err(|e| corrupt("task id", e))?,
        spec: TaskSpec {
            prompt: r.get(1)?,
            runner: RunnerName::parse(&runner).map_err(|e| corrupt("runner", e))?,
            capabilities: split(&caps, Capability::parse)?,
            priority: Priority::from_rank(priority).ok_or_else(|| corrupt("priority", priority))?,
            timeout: Duration::from_millis(r.get::<_, i64>(5)? as u64),
            max_attempts: r.get(6)?,
            idempotency_key: r.get(7)?,
            metadata: r.get(8)?,
            workspace: match r.get::<_, Option<String>>(25)? {
                Some(repo) => {
                    let keep: String = r.get(28)?;
                    Some(Workspace {
                        repo,
                        base: r.get(26)?,
                        auto_commit: r.get(27)?,
                        keep: Keep::parse(&keep).map_err(|e| corrupt("keep_worktree", e))?,
                    })
                }
                None => None,
            },
            fallback: split(&r.get::<_, Option<String>>(29)?.unwrap_or_default(), RunnerName::parse)?,
            budget: muster_core::task::Budget {
                max_cost: r.get::<_, Option<i64>>(31)?.map(MicroUsd::from_micros),
                max_tokens: r.get::<_, Option<i64>>(32)?.map(|v| v.max(0) as u64),
            },
            shadow_of: r
                .get::<_, Option<String>>(33)?
                .map(|s| TaskId::parse(&s))
                .transpose()
                .map_err(|e| corrupt("shadow_of", e))?,
            requires_approval: r.get(34)?,
            depends_on: split(&r.get::<_, Option<String>>(35)?.unwrap_or_default(), TaskId::parse)?,
            on_dependency_failure: {
                let p: String = r.get(36)?;
                DependencyPolicy::parse(&p).map_err(|e| corrupt("on_dependency_failure", e))?
            },
            checks: lines(&r.get::<_, String>(37)?)
                .iter()
                .map(|l| muster_core::Check::parse(l))
                .collect::<std::result::Result<_, _>>()
                .map_err(|e| corrupt("checks", e))?,
        },
        state: TaskState::parse(&state).map_err(|e| corrupt("task state", e))?,
        attempts: r.get(10)?,
        runs: r.get(38)?,
        epoch: Epoch(r.get::<_, i64>(11)? as u64),
        lease,
        ready_at: Millis(r.get(15)?),
        cancel_requested: r.get(16)?,
        exit_code: r.get(17)?,
        reason: r.get(18)?,
        agent: agent.map(|a| AgentName::parse(&a)).transpose().map_err(|e| corrupt("agent", e))?,
        created_at: Millis(r.get(20)?),
        updated_at: Millis(r.get(21)?),
        started_at: ms(r.get(22)?),
        finished_at: ms(r.get(23)?),
    })
}

pub fn find_task(c: &Connection, id: &TaskId) -> Result<Option<Task>> {
    c.prepare_cached(FIND_TASK)?.query_row([id.as_str()], task_row).optional()
}

pub(super) fn load_task(c: &Connection, id: &TaskId) -> Result<Task> {
    find_task(c, id)?.ok_or_else(|| StoreError::not_found("task", id))
}

/// Writes back every field a transition may change.
pub(super) fn save_task(c: &Connection, t: &Task) -> Result<()> {
    let lease = t.lease.as_ref();
    c.prepare_cached(
        "UPDATE tasks SET state = ?, attempts = ?, runs = ?, epoch = ?, lease_agent = ?, lease_epoch = ?, \
         lease_expires_at = ?, lease_runner = ?, ready_at = ?, cancel_requested = ?, exit_code = ?, reason = ?, \
         agent = ?, updated_at = ?, started_at = ?, finished_at = ? WHERE id = ?",
    )?
    .execute(params![
        t.state.as_str(),
        t.attempts,
        t.runs,
        t.epoch.0 as i64,
        lease.map(|l| l.agent.as_str()),
        lease.map(|l| l.epoch.0 as i64),
        lease.map(|l| l.expires_at.0),
        lease.and_then(|l| l.runner.as_ref()).map(|r| r.as_str()),
        t.ready_at.0,
        t.cancel_requested,
        t.exit_code,
        t.reason,
        t.agent.as_ref().map(|a| a.as_str()),
        t.updated_at.0,
        t.started_at.map(|m| m.0),
        t.finished_at.map(|m| m.0),
        t.id.as_str(),
    ])?;
    Ok(())
}

pub(super) fn refused(r: muster_core::Refused) -> StoreError {
    StoreError::Refused(r)
}

pub fn create_task(c: &Connection, id: TaskId, spec: TaskSpec, now: Millis) -> Result<Created> {
    let spec = spec.validate().map_err(StoreError::Invalid)?;
    if let Some(key) = &spec.idempotency_key {
        let existing: Option<String> = c
            .prepare_cached("SELECT id FROM tasks WHERE idempotency_key = ?")?
            .query_row([key], |r| r.get(0))
            .optional()?;
        if let Some(existing) = existing {
            let id = TaskId::parse(&existing).map_err(|e| corrupt("task id", e))?;
            return Ok(Created { task: load_task(c, &id)?, created: false });
        }
    }
    for dep in &spec.depends_on {
        if find_task(c, dep)?.is_none() {
            return Err(StoreError::Invalid(Invalid::new("depends_on", format!("no task {dep}"))));
        }
    }
    let task = Task::new(id, spec, now);
    let caps: Vec<&str> = task.spec.capabilities.iter().map(|c| c.as_str()).collect();
    c.prepare_cached(
        "INSERT INTO tasks (id, prompt, runner, capabilities, priority, timeout_ms, max_attempts, idempotency_key, \
         metadata, state, attempts, epoch, ready_at, cancel_requested, created_at, updated_at, repo, base_ref, \
         auto_commit, keep_worktree, fallback, max_cost_micro_usd, max_tokens, shadow_of, requires_approval, depends_on, \
         on_dependency_failure) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        task.id.as_str(),
        task.spec.prompt,
        task.spec.runner.as_str(),
        join(&caps),
        task.spec.priority.rank(),
        task.spec.timeout.as_millis() as i64,
        task.spec.max_attempts,
        task.spec.idempotency_key,
        task.spec.metadata,
        task.state.as_str(),
        task.ready_at.0,
        now.0,
        now.0,
        task.spec.workspace.as_ref().map(|w| w.repo.as_str()),
        task.spec.workspace.as_ref().and_then(|w| w.base.as_deref()),
        task.spec.workspace.as_ref().is_some_and(|w| w.auto_commit),
        task.spec.workspace.as_ref().map(|w| w.keep.as_str()),
        (!task.spec.fallback.is_empty()).then(|| task
            .spec
            .fallback
            .iter()
            .map(RunnerName::as_str)
            .collect::<Vec<_>>()
            .join(" ")),
        task.spec.budget.max_cost.map(MicroUsd::micros_i64),
        task.spec.budget.max_tokens.map(|v| v.min(i64::MAX as u64) as i64),
        task.spec.shadow_of.as_ref().map(|t| t.as_str()),
        task.spec.requires_approval,
        (!task.spec.depends_on.is_empty())
            .then(|| task.spec.depends_on.iter().map(TaskId::as_str).collect::<Vec<_>>().join(" ")),
        task.spec.on_dependency_failure.as_str(),
    ])?;
    if !task.spec.checks.is_empty() {
        let text: Vec<String> = task.spec.checks.iter().map(muster_core::Check::to_text).collect();
        c.prepare_cached("UPDATE tasks SET checks = ? WHERE id = ?")?
            .execute(params![text.join("\n"), task.id.as_str()])?;
    }
    let mut insert_cap = c.prepare_cached("INSERT INTO task_caps (task_id, cap) VALUES (?, ?)")?;
    for cap in &caps {
        insert_cap.execute(params![task.id.as_str(), cap])?;
    }
    task_event(c, now, "task.created", &task, Some(task.spec.priority.as_str()))?;
    let mut insert_dep = c.prepare_cached("INSERT INTO task_deps (task_id, dep_id) VALUES (?, ?)")?;
    for dep in &task.spec.depends_on {
        insert_dep.execute(params![task.id.as_str(), dep.as_str()])?;
    }
    // Dependencies that have already ended decide at once.
    let task = if task.state == TaskState::Blocked { settle_blocked(c, task, now)? } else { task };
    Ok(Created { task, created: true })
}

/// Creates every task or none (the writer rolls a failed change back whole);
/// a refusal names the task's place in the batch.
pub fn create_tasks(c: &Connection, tasks: Vec<(TaskId, TaskSpec)>, now: Millis) -> Result<Vec<Created>> {
    let mut created = Vec::with_capacity(tasks.len());
    for (i, (id, spec)) in tasks.into_iter().enumerate() {
        match create_task(c, id, spec, now) {
            Ok(one) => created.push(one),
            Err(StoreError::Invalid(e)) => {
                return Err(StoreError::Invalid(Invalid::new(e.field, format!("task {i} of the batch: {}", e.reason))));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(created)
}

/// Whether a dependency in `state` lets its dependents go on: it succeeded,
/// or an operator decided it needs no run.
fn satisfies(state: TaskState) -> bool {
    matches!(state, TaskState::Succeeded | TaskState::Skipped)
}

/// A blocked task whose dependencies have all ended well is unblocked; one
/// with a dependency that ended badly fails or is skipped, by its policy.
/// Returns the task as it is now; its own dependents follow it.
fn settle_blocked(c: &Connection, mut task: Task, now: Millis) -> Result<Task> {
    let mut failed: Option<TaskId> = None;
    let mut waiting = false;
    for dep in &task.spec.depends_on {
        match find_task(c, dep)?.map(|d| d.state) {
            Some(state) if satisfies(state) => {}
            Some(state) if state.is_terminal() => {
                failed = Some(dep.clone());
                break;
            }
            // A dependency pruned by retention had ended long ago: only finished tasks are pruned.
            None => {}
            Some(_) => waiting = true,
        }
    }
    if let Some(dep) = failed {
        let ended = task.dependency_failed(&dep, now).map_err(refused)?;
        save_task(c, &task)?;
        let kind = if ended == TaskState::Skipped { "task.skipped" } else { "task.failed" };
        task_event(c, now, kind, &task, task.reason.as_deref())?;
        settle_dependents(c, &task, now)?;
    } else if !waiting {
        render_stage(c, &mut task)?;
        task.unblock(now).map_err(refused)?;
        save_task(c, &task)?;
        task_event(c, now, "task.unblocked", &task, Some("every dependency succeeded"))?;
    }
    Ok(task)
}

/// After `task` changed: decisions nobody waits for any more are withdrawn,
/// and the tasks that depend on it are settled.
pub(super) fn settle(c: &Connection, task: &Task, now: Millis) -> Result<()> {
    withdraw_decisions(c, task, now)?;
    release_conflicts(c, task, now)?;
    settle_dependents(c, task, now)
}

/// After `task` changed: when it has ended, the tasks blocked on it go on,
/// fail or are skipped, and so on down the chain.
fn settle_dependents(c: &Connection, task: &Task, now: Millis) -> Result<()> {
    if !task.state.is_terminal() {
        return Ok(());
    }
    let dependents: Vec<String> = c
        .prepare_cached("SELECT d.task_id FROM task_deps d JOIN tasks t ON t.id = d.task_id WHERE d.dep_id = ? AND t.state = 'blocked'")?
        .query_map([task.id.as_str()], |r| r.get(0))?
        .collect::<Result<_>>()?;
    for id in dependents {
        let id = TaskId::parse(&id).map_err(|e| corrupt("task id", e))?;
        let dependent = load_task(c, &id)?;
        if dependent.state == TaskState::Blocked {
            settle_blocked(c, dependent, now)?;
        }
    }
    Ok(())
}

pub fn list_tasks(c: &Connection, f: &TaskFilter) -> Result<Page<Task>> {
    let limit = f.limit.clamp(1, 1000);
    let mut sql = format!("SELECT {TASK_COLS} FROM tasks WHERE 1 = 1");
    let mut args: Vec<Owned> = Vec::new();
    if let Some(state) = f.state {
        sql.push_str(" AND state = ?");
        args.push(state.as_str().to_owned().into());
    }
    if let Some(agent) = &f.agent {
        sql.push_str(" AND agent = ?");
        args.push(agent.as_str().to_owned().into());
    }
    if let Some(priority) = f.priority {
        sql.push_str(" AND priority = ?");
        args.push(priority.rank().into());
    }
    if let Some(runner) = &f.runner {
        sql.push_str(" AND runner = ?");
        args.push(runner.as_str().to_owned().into());
    }
    if let Some(cap) = &f.capability {
        sql.push_str(" AND EXISTS (SELECT 1 FROM task_caps c WHERE c.task_id = tasks.id AND c.cap = ?)");
        args.push(cap.as_str().to_owned().into());
    }
    if let Some(text) = f.text.as_deref().filter(|t| !t.is_empty()) {
        sql.push_str(" AND (id LIKE ? ESCAPE '\\' OR prompt LIKE ? ESCAPE '\\' OR reason LIKE ? ESCAPE '\\')");
        let pattern = format!("%{}%", like_escaped(text));
        for _ in 0..3 {
            args.push(pattern.clone().into());
        }
    }
    if let Some(before) = f.before {
        sql.push_str(" AND seq < ?");
        args.push(before.into());
    }
    sql.push_str(" ORDER BY seq DESC LIMIT ?");
    args.push(((limit + 1) as i64).into());
    let mut stmt = c.prepare(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), |row| Ok((row.get::<_, i64>(24)?, task_row(row)?)))?;
    let mut items = Vec::new();
    let mut seqs = Vec::new();
    for row in rows {
        let (seq, task) = row?;
        seqs.push(seq);
        items.push(task);
    }
    let next = if items.len() > limit {
        items.truncate(limit);
        Some(seqs[limit - 1])
    } else {
        None
    };
    Ok(Page { items, next })
}

/// `text` for a LIKE pattern with `ESCAPE '\\'`: its own `%` and `_` taken literally.
fn like_escaped(text: &str) -> String {
    let mut p = String::with_capacity(text.len() + 2);
    for ch in text.chars() {
        if matches!(ch, '%' | '_' | '\\') {
            p.push('\\');
        }
        p.push(ch);
    }
    p
}

pub fn count_tasks(c: &Connection) -> Result<Vec<(TaskState, u64)>> {
    let mut counts: Vec<(TaskState, u64)> = TaskState::ALL.iter().map(|s| (*s, 0)).collect();
    let mut stmt = c.prepare("SELECT state, COUNT(*) FROM tasks GROUP BY state")?;
    for row in stmt.query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?)))? {
        let (state, n) = row?;
        let state = TaskState::parse(&state).map_err(|e| corrupt("task state", e))?;
        if let Some(slot) = counts.iter_mut().find(|(s, _)| *s == state) {
            slot.1 = n as u64;
        }
    }
    Ok(counts)
}

pub fn count_tasks_by_priority(c: &Connection) -> Result<Vec<(TaskState, Priority, u64)>> {
    let mut stmt = c.prepare("SELECT state, priority, COUNT(*) FROM tasks GROUP BY state, priority")?;
    let rows = stmt.query_map([], |r| {
        let state: String = r.get(0)?;
        let priority: i64 = r.get(1)?;
        Ok((
            TaskState::parse(&state).map_err(|e| corrupt("task state", e))?,
            Priority::from_rank(priority).ok_or_else(|| corrupt("priority", priority))?,
            r.get::<_, i64>(2)? as u64,
        ))
    })?;
    rows.collect::<Result<_>>()
}

pub fn outcomes_since(c: &Connection, since: Millis) -> Result<Vec<(Outcome, u64)>> {
    let mut stmt = c.prepare_cached(
        "SELECT outcome, COUNT(*) FROM attempts WHERE finished_at >= ? AND outcome IS NOT NULL \
         GROUP BY outcome ORDER BY outcome",
    )?;
    let rows = stmt.query_map([since.0], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64)))?;
    let mut counts = Vec::new();
    for row in rows {
        let (word, n) = row?;
        // A word this build does not know (written by a newer one) is left
        // out of the counts rather than failing the health of the whole hub.
        match Outcome::parse(&word) {
            Ok(outcome) => counts.push((outcome, n)),
            Err(e) => {
                tracing::warn!(error = %e, attempts = n, "attempts with an unknown outcome left out of the counts")
            }
        }
    }
    Ok(counts)
}

/// `(good, total)` attempts for a service level objective since `since`:
/// `dispatch` counts attempts started, good when they waited at most
/// `threshold_ms` in the queue; `run` counts runs ended (not cancelled), good
/// when they took at most `threshold_ms`.
pub fn slo_counts(c: &Connection, kind: crate::SloKind, since: Millis, threshold_ms: i64) -> Result<(u64, u64)> {
    let sql = match kind {
        crate::SloKind::Dispatch => {
            "SELECT COALESCE(SUM(CASE WHEN waited_ms <= ?2 THEN 1 ELSE 0 END), 0), COUNT(*) FROM attempts WHERE started_at >= ?1 AND waited_ms IS NOT NULL"
        }
        crate::SloKind::Run => {
            "SELECT COALESCE(SUM(CASE WHEN finished_at - started_at <= ?2 THEN 1 ELSE 0 END), 0), COUNT(*) FROM attempts \
             WHERE finished_at >= ?1 AND outcome IN ('succeeded', 'failed', 'timeout')"
        }
    };
    let (good, total): (i64, i64) =
        c.prepare_cached(sql)?.query_row(params![since.0, threshold_ms], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok((good as u64, total as u64))
}

pub fn cancel_task(c: &Connection, id: &TaskId, now: Millis) -> Result<(Task, Cancel)> {
    let mut task = load_task(c, id)?;
    let outcome = task.cancel(now).map_err(refused)?;
    save_task(c, &task)?;
    match &outcome {
        Cancel::Done { .. } => task_event(c, now, "task.cancelled", &task, None)?,
        Cancel::Requested { .. } => task_event(c, now, "task.cancel_requested", &task, None)?,
    }
    if task.state.is_terminal() {
        release_task_locks(c, &task, now)?;
    }
    settle(c, &task, now)?;
    Ok((task, outcome))
}

pub fn retry_task(c: &Connection, id: &TaskId, now: Millis) -> Result<Task> {
    let mut task = load_task(c, id)?;
    task.retry(now).map_err(refused)?;
    save_task(c, &task)?;
    task_event(c, now, "task.retried", &task, None)?;
    Ok(task)
}

pub fn operate_task(c: &Connection, id: &TaskId, op: &TaskOp, by: &str, now: Millis) -> Result<Task> {
    let mut task = load_task(c, id)?;
    let (kind, detail) = match op {
        TaskOp::Skip { reason } => {
            let reason = clip(reason.trim(), 500);
            if reason.is_empty() {
                return Err(StoreError::Invalid(Invalid::new("reason", "must say why the task is skipped")));
            }
            task.skip(&reason, now).map_err(refused)?;
            ("task.skipped", format!("{reason} (by {by})"))
        }
        TaskOp::Reset => {
            task.reset(now).map_err(refused)?;
            ("task.reset", format!("attempts cleared (by {by})"))
        }
        TaskOp::Approve => {
            task.approve(now).map_err(refused)?;
            ("task.approved", format!("by {by}"))
        }
        TaskOp::Reject { reason } => {
            let reason = clip(reason.trim(), 500);
            if reason.is_empty() {
                return Err(StoreError::Invalid(Invalid::new("reason", "must say why the task is rejected")));
            }
            task.reject(&reason, now).map_err(refused)?;
            ("task.rejected", format!("{reason} (by {by})"))
        }
        TaskOp::Move { priority } => {
            let was = task.reprioritise(*priority, now).map_err(refused)?;
            c.prepare_cached("UPDATE tasks SET priority = ? WHERE id = ?")?
                .execute(params![priority.rank(), id.as_str()])?;
            ("task.moved", format!("{} -> {} (by {by})", was.as_str(), priority.as_str()))
        }
    };
    save_task(c, &task)?;
    task_event(c, now, kind, &task, Some(&detail))?;
    settle(c, &task, now)?;
    // A reset task waits on its dependencies again, which may have ended.
    let task = if task.state == TaskState::Blocked { settle_blocked(c, task, now)? } else { task };
    Ok(task)
}
