//! A run under its lease: start, release, finish, a provider's limit, and
//! the reclaim of leases whose holders went silent.

use super::*;

/// The holder reports on a task still recorded as assigned: its `accept`
/// was lost (the hub stopped before committing it, or the write failed).
/// The run is real, so it counts as started now rather than being run twice.
pub(super) fn adopt_lost_accept(
    c: &Connection,
    agent: &AgentName,
    task: &Task,
    epoch: Epoch,
    now: Millis,
    ttl: Duration,
) -> Result<bool> {
    if task.state != TaskState::Assigned || !task.lease.as_ref().is_some_and(|l| l.is_held_by(agent, epoch)) {
        return Ok(false);
    }
    start_task(c, agent, &task.id, epoch, now, ttl)?;
    Ok(true)
}

/// Whether `agent`'s attempt under `epoch` has already ended.
pub(super) fn attempt_finished_by(c: &Connection, agent: &AgentName, id: &TaskId, epoch: Epoch) -> Result<bool> {
    let finished: Option<(String, Option<i64>)> = c
        .prepare_cached("SELECT agent, finished_at FROM attempts WHERE task_id = ? AND epoch = ?")?
        .query_row(params![id.as_str(), epoch.0 as i64], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    Ok(matches!(finished, Some((by, Some(_))) if by == agent.as_str()))
}

/// Applies a run's report that its provider limited it: the task goes back to
/// the queue until `until` without spending an attempt, and its runner is out
/// of service until then (unless an operator already took it out for good).
#[allow(clippy::too_many_arguments)] // each is one fact of the report
pub fn limit_task(
    c: &Connection,
    agent: &AgentName,
    id: &TaskId,
    epoch: Epoch,
    reason: &str,
    until: Millis,
    details: &RunDetails,
    now: Millis,
) -> Result<(Task, FinishResult)> {
    let (mut task, resent) = task_for_report(c, agent, id, epoch, Outcome::Limited, now)?;
    if resent {
        return Ok((task, FinishResult::Duplicate));
    }
    let reason = clip(reason.trim(), 500);
    let runner = task.runner_in_use().clone();
    let finished = task.limited(agent, epoch, &reason, until, now).map_err(refused)?;
    save_task(c, &task)?;
    end_attempt(c, &task, epoch, Outcome::Limited, now)?;
    // What the run used before it was stopped is still spent.
    save_details(c, id, epoch, details, now)?;
    // A limit says nothing about the agent or the runner working: no verdict.
    let mut agent_breaker = load_breaker(c, BreakerScope::Agent, agent.as_str())?;
    agent_breaker.probe_lost(&task.id);
    let mut runner_breaker = load_breaker(c, BreakerScope::Runner, runner.as_str())?;
    runner_breaker.probe_lost(&task.id);
    for b in [&agent_breaker, &runner_breaker] {
        if breaker_exists(c, b.scope, &b.name)? {
            save_breaker(c, b, now)?;
        }
    }
    let (kind, detail) = match finished {
        Finished::Cancelled => ("task.cancelled", format!("limited: {reason}")),
        _ => ("task.limited", format!("{reason}; back in the queue at {}, no attempt spent", when(until))),
    };
    task_event(c, now, kind, &task, Some(&detail))?;
    limit_runner(c, &runner, &reason, &format!("agent {agent}"), until, now)?;
    release_task_locks(c, &task, now)?;
    settle(c, &task, now)?;
    Ok((task, FinishResult::Applied(finished)))
}

pub fn start_task(
    c: &Connection,
    agent: &AgentName,
    id: &TaskId,
    epoch: Epoch,
    now: Millis,
    ttl: Duration,
) -> Result<Task> {
    let mut task = load_task(c, id)?;
    let waited = (now.0 - task.ready_at.0).max(0);
    task.start(agent, epoch, now, ttl).map_err(refused)?;
    save_task(c, &task)?;
    let number: i64 = c
        .prepare_cached("SELECT COUNT(*) + 1 FROM attempts WHERE task_id = ?")?
        .query_row([id.as_str()], |r| r.get(0))?;
    c.prepare_cached(
        "INSERT INTO attempts (task_id, epoch, number, agent, started_at, waited_ms, runner) \
         VALUES (?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        id.as_str(),
        epoch.0 as i64,
        number,
        agent.as_str(),
        now.0,
        waited,
        task.runner_in_use().as_str()
    ])?;
    task_event(c, now, "task.started", &task, Some(&format!("attempt {number}")))?;
    Ok(task)
}

pub fn release_task(
    c: &Connection,
    agent: &AgentName,
    id: &TaskId,
    epoch: Epoch,
    reason: &str,
    now: Millis,
    retry_after: Duration,
) -> Result<Task> {
    let mut task = load_task(c, id)?;
    task.release(agent, epoch, reason, now, retry_after).map_err(refused)?;
    save_task(c, &task)?;
    task_event(c, now, "task.released", &task, Some(reason))?;
    Ok(task)
}

pub(super) fn end_attempt(c: &Connection, task: &Task, epoch: Epoch, outcome: Outcome, now: Millis) -> Result<()> {
    c.prepare_cached(
        "UPDATE attempts SET finished_at = ?, outcome = ?, exit_code = ?, reason = ? \
         WHERE task_id = ? AND epoch = ? AND finished_at IS NULL",
    )?
    .execute(params![now.0, outcome.as_str(), task.exit_code, task.reason, task.id.as_str(), epoch.0 as i64])?;
    Ok(())
}

/// The task a run's end is reported for, with a lost accept adopted first
/// (a run that ended before its accept was recovered still counts once), and
/// whether `agent` already reported this epoch's end as `outcome`: a resend
/// is answered, not refused.
fn task_for_report(
    c: &Connection,
    agent: &AgentName,
    id: &TaskId,
    epoch: Epoch,
    outcome: Outcome,
    now: Millis,
) -> Result<(Task, bool)> {
    let mut task = load_task(c, id)?;
    if adopt_lost_accept(c, agent, &task, epoch, now, Duration::ZERO)? {
        task = load_task(c, id)?;
    }
    let recorded: Option<(String, Option<String>)> = c
        .prepare_cached("SELECT agent, outcome FROM attempts WHERE task_id = ? AND epoch = ?")?
        .query_row(params![id.as_str(), epoch.0 as i64], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let recorded = recorded.map(|(by, ended)| (by, ended.and_then(|o| Outcome::parse(&o).ok())));
    let resent = task.is_resend(agent, epoch, outcome, recorded.as_ref().map(|(by, o)| (by.as_str(), *o)));
    Ok((task, resent))
}

/// Keeps what an agent reported of a run beside its outcome.
pub(super) fn save_details(c: &Connection, id: &TaskId, epoch: Epoch, details: &RunDetails, now: Millis) -> Result<()> {
    if let Some(report) = &details.report {
        save_report(c, id, epoch, report)?;
    }
    if let Some(w) = &details.workspace {
        save_workspace(c, id, epoch, w)?;
    }
    save_checks(c, id, epoch, details, now)?;
    // Output sent while the hub went down (or dropped by an agent away too
    // long) is lost; the attempt says so. Output cut at the cap is already marked.
    if let Some(sent) = details.output_chunks {
        let (stored, truncated): (i64, bool) = c
            .prepare_cached(
                "SELECT (SELECT COUNT(*) FROM output WHERE task_id = ?1 AND epoch = ?2), \
                 COALESCE((SELECT output_truncated FROM attempts WHERE task_id = ?1 AND epoch = ?2), 0)",
            )?
            .query_row(params![id.as_str(), epoch.0 as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
        if !truncated && (stored as u64) < sent {
            c.prepare_cached("UPDATE attempts SET output_incomplete = 1 WHERE task_id = ? AND epoch = ?")?
                .execute(params![id.as_str(), epoch.0 as i64])?;
        }
    }
    if let Some(summary) = &details.summary {
        c.prepare_cached("UPDATE attempts SET summary = ? WHERE task_id = ? AND epoch = ?")?.execute(params![
            clip(summary, 2_000),
            id.as_str(),
            epoch.0 as i64
        ])?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)] // each is one fact of the report; a struct would only rename them
pub fn finish_task(
    c: &Connection,
    agent: &AgentName,
    id: &TaskId,
    epoch: Epoch,
    outcome: &RunOutcome,
    details: &RunDetails,
    now: Millis,
    retry: Retry,
    policy: Policy,
) -> Result<(Task, FinishResult)> {
    let (mut task, resent) = task_for_report(c, agent, id, epoch, outcome.outcome(), now)?;
    if resent {
        return Ok((task, FinishResult::Duplicate));
    }
    let ran_with = task.runner_in_use().clone();
    let tied = has_ties(c, id)?;
    if tied && let Some(parked) = parked_by(c, &task, epoch)? {
        // A conflict's pause stops the run; a run that finished on its own
        // before the stop reached it keeps its result.
        let by_conflict = parked.raised_by.starts_with("conflict #");
        if !by_conflict || matches!(outcome, RunOutcome::Cancelled) {
            return park_task(c, task, agent, epoch, outcome, details, &parked, now);
        }
    }
    let finished = task.finish(agent, epoch, outcome, now, retry.after(task.attempts)).map_err(refused)?;
    save_task(c, &task)?;
    end_attempt(c, &task, epoch, outcome.outcome(), now)?;
    save_details(c, id, epoch, details, now)?;
    let verdict = match outcome {
        RunOutcome::Succeeded { .. } => Some(true),
        RunOutcome::Failed { .. } | RunOutcome::TimedOut => Some(false),
        RunOutcome::Cancelled => None,
    };
    record_breakers(c, &task, agent, &ran_with, (verdict, verdict), now, policy)?;
    let kind = match finished {
        Finished::Succeeded => "task.succeeded",
        Finished::RetryScheduled { .. } => "task.retry_scheduled",
        Finished::Failed => "task.failed",
        Finished::Cancelled => "task.cancelled",
    };
    let detail = match (finished, &task.reason) {
        (Finished::RetryScheduled { ready_at }, reason) => {
            Some(format!("{}; retry in {} ms", reason.as_deref().unwrap_or("failed"), ready_at.0 - now.0))
        }
        (_, reason) => reason.clone(),
    };
    task_event(c, now, kind, &task, detail.as_deref())?;
    if tied {
        release_task_locks(c, &task, now)?;
        settle(c, &task, now)?;
    }
    Ok((task, FinishResult::Applied(finished)))
}

pub fn reclaim_expired(c: &Connection, now: Millis, limit: usize, policy: Policy) -> Result<Vec<(Task, Reclaimed)>> {
    let ids: Vec<String> = c
        .prepare_cached(
            "SELECT id FROM tasks WHERE lease_expires_at IS NOT NULL AND lease_expires_at <= ? \
             ORDER BY lease_expires_at LIMIT ?",
        )?
        .query_map(params![now.0, limit as i64], |r| r.get(0))?
        .collect::<Result<_>>()?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let id = TaskId::parse(&id).map_err(|e| corrupt("task id", e))?;
        out.push(take_back(c, &id, now, Some(policy), None)?);
    }
    Ok(out)
}

/// Takes back one task, by the core's rules: its lease expired, or
/// (`disowned`) its holder connected again without it.
pub(super) fn take_back(
    c: &Connection,
    id: &TaskId,
    now: Millis,
    policy: Option<Policy>,
    disowned: Option<(&AgentName, Epoch, Disowned)>,
) -> Result<(Task, Reclaimed)> {
    {
        let mut task = load_task(c, id)?;
        let epoch = task.epoch;
        let was_running = task.state == TaskState::Running;
        let holder = task.lease.as_ref().map(|l| l.agent.clone());
        let ran_with = task.runner_in_use().clone();
        let reclaimed = match disowned {
            Some((agent, epoch, why)) => task.disown(agent, epoch, why, now),
            None => task.reclaim(now),
        }
        .map_err(refused)?;
        save_task(c, &task)?;
        if was_running {
            end_attempt(c, &task, epoch, Outcome::LeaseExpired, now)?;
        }
        if let (Some(holder), Some(policy)) = (&holder, policy) {
            // A run that went silent counts against its agent and runner; an
            // assignment never accepted says nothing about either.
            // A lease that expired says the agent went away, not that the runner is broken.
            record_breakers(c, &task, holder, &ran_with, (was_running.then_some(false), None), now, policy)?;
        }
        let kind = match reclaimed {
            Reclaimed::Requeued => "task.reclaimed",
            Reclaimed::Failed => "task.failed",
            Reclaimed::Cancelled => "task.cancelled",
        };
        task_event(c, now, kind, &task, task.reason.as_deref())?;
        release_task_locks(c, &task, now)?;
        settle(c, &task, now)?;
        Ok((task, reclaimed))
    }
}

/// Named index: without it SQLite's planner walks every queued task through
/// `tasks_state` to find the minimum.
const NEXT_READY: &str = "SELECT MIN(ready_at) FROM tasks INDEXED BY tasks_ready WHERE state = 'queued'";

pub fn next_ready(c: &Connection) -> Result<Option<Millis>> {
    let ready: Option<i64> = c.prepare_cached(NEXT_READY)?.query_row([], |r| r.get(0))?;
    Ok(ready.map(Millis))
}

pub fn next_lease_expiry(c: &Connection) -> Result<Option<Millis>> {
    let lease: Option<i64> = c
        .prepare_cached("SELECT MIN(lease_expires_at) FROM tasks WHERE lease_expires_at IS NOT NULL")?
        .query_row([], |r| r.get(0))?;
    Ok(lease.map(Millis))
}

pub fn next_due(c: &Connection) -> Result<Option<Millis>> {
    Ok(match (next_lease_expiry(c)?, next_ready(c)?) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}
