//! Decisions: questions for a person, their answers and deadlines, and runs
//! parked until they are answered.

use super::*;

const DECISION_COLS: &str = "id, task_id, question, options, default_option, deadline, answerers, raised_by, epoch, \
     park, state, answer, note, answered_by, created_at, closed_at";

fn decision_row(r: &Row<'_>) -> Result<DecisionRecord> {
    let task: String = r.get(1)?;
    let options: String = r.get(3)?;
    let answerers: String = r.get(6)?;
    let state: String = r.get(10)?;
    Ok(DecisionRecord {
        id: r.get(0)?,
        task: TaskId::parse(&task).map_err(|e| corrupt("task id", e))?,
        question: r.get(2)?,
        options: lines(&options),
        default: r.get(4)?,
        deadline: ms(r.get(5)?),
        answerers: lines(&answerers),
        raised_by: r.get(7)?,
        epoch: r.get::<_, Option<i64>>(8)?.map(|e| Epoch(e as u64)),
        park: r.get(9)?,
        state: DecisionState::parse(&state).ok_or_else(|| corrupt("decision state", &state))?,
        answer: r.get(11)?,
        note: r.get(12)?,
        answered_by: r.get(13)?,
        created_at: Millis(r.get(14)?),
        closed_at: ms(r.get(15)?),
    })
}

/// Options and answerers are kept one per line (neither may hold a control character).
pub(super) fn lines(s: &str) -> Vec<String> {
    s.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect()
}

pub fn decision(c: &Connection, id: i64) -> Result<Option<DecisionRecord>> {
    c.prepare_cached(&format!("SELECT {DECISION_COLS} FROM decisions WHERE id = ?"))?
        .query_row([id], decision_row)
        .optional()
}

pub(super) fn load_decision(c: &Connection, id: i64) -> Result<DecisionRecord> {
    decision(c, id)?.ok_or_else(|| StoreError::not_found("decision", id))
}

/// Open decisions first (oldest first), then the most recently closed; at most `limit`.
pub fn decisions(c: &Connection, open_only: bool, task: Option<&TaskId>, limit: usize) -> Result<Vec<DecisionRecord>> {
    let mut sql = format!("SELECT {DECISION_COLS} FROM decisions WHERE 1 = 1");
    let mut args: Vec<Owned> = Vec::new();
    if open_only {
        sql.push_str(" AND state = 'open'");
    }
    if let Some(t) = task {
        sql.push_str(" AND task_id = ?");
        args.push(t.as_str().to_owned().into());
    }
    sql.push_str(" ORDER BY state != 'open', CASE WHEN state = 'open' THEN id ELSE -id END LIMIT ?");
    args.push((limit.clamp(1, 1000) as i64).into());
    let rows = c.prepare_cached(&sql)?.query_map(params_from_iter(args), decision_row)?.collect::<Result<_>>()?;
    Ok(rows)
}

pub fn next_decision_deadline(c: &Connection) -> Result<Option<Millis>> {
    let next: Option<i64> = c
        .prepare_cached("SELECT min(deadline) FROM decisions WHERE state = 'open' AND deadline IS NOT NULL")?
        .query_row([], |r| r.get(0))?;
    Ok(next.map(Millis))
}

pub(super) fn decision_event(
    c: &Connection,
    now: Millis,
    kind: &str,
    task: &Task,
    d: &DecisionRecord,
    detail: &str,
) -> Result<()> {
    task_event(c, now, kind, task, Some(&format!("#{}: {detail}", d.id)))
}

pub(super) fn close_decision(
    c: &Connection,
    d: &mut DecisionRecord,
    state: DecisionState,
    answer: Option<String>,
    by: Option<&str>,
    note: Option<String>,
    now: Millis,
) -> Result<()> {
    d.state = state;
    d.answer = answer;
    d.answered_by = by.map(str::to_owned);
    d.note = note;
    d.closed_at = Some(now);
    c.prepare_cached(
        "UPDATE decisions SET state = ?, answer = ?, answered_by = ?, note = ?, closed_at = ? WHERE id = ? AND state = 'open'",
    )?
    .execute(params![d.state.as_str(), d.answer, d.answered_by, d.note, now.0, d.id])?;
    Ok(())
}

/// Runs at every change of a task's state, so it is one cached statement on
/// the `decisions_task` index.
fn open_decisions_of(c: &Connection, task: &TaskId) -> Result<Vec<DecisionRecord>> {
    let sql = format!("SELECT {DECISION_COLS} FROM decisions WHERE task_id = ? AND state = 'open' ORDER BY id");
    let rows = c.prepare_cached(&sql)?.query_map([task.as_str()], decision_row)?.collect::<Result<_>>()?;
    Ok(rows)
}

/// Opens a decision. An operator's parks a queued task in `needs_decision`
/// at once; a run's leaves its task running (the run waits for the answer,
/// or stops and is parked when it ends, if it asked to).
pub fn open_decision(c: &Connection, new: NewDecision, now: Millis) -> Result<(DecisionRecord, Task)> {
    let new = new.validate().map_err(StoreError::Invalid)?;
    let mut task = load_task(c, &new.task)?;
    match new.epoch {
        Some(epoch) => {
            if !(task.state == TaskState::Running && task.lease.as_ref().is_some_and(|l| l.epoch == epoch)) {
                return Err(refused(muster_core::Refused::StaleEpoch { current: task.epoch, got: epoch }));
            }
        }
        None => task.await_decision(now).map_err(refused)?,
    }
    let deadline = new.timeout.map(|t| now.plus(t));
    let id: i64 = c
        .prepare_cached(
            "INSERT INTO decisions (task_id, question, options, default_option, deadline, answerers, raised_by, epoch, \
         park, state, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'open', ?) RETURNING id",
        )?
        .query_row(
            params![
                new.task.as_str(),
                new.question,
                new.options.join("\n"),
                new.default,
                deadline.map(|d| d.0),
                new.answerers.join("\n"),
                new.raised_by,
                new.epoch.map(|e| e.0 as i64),
                new.park,
                now.0,
            ],
            |r| r.get(0),
        )?;
    let d = load_decision(c, id)?;
    let was = load_task(c, &new.task)?.state;
    if task.state != was {
        save_task(c, &task)?;
        task_event(c, now, "task.needs_decision", &task, Some(&format!("decision #{}", d.id)))?;
    }
    let default = d.default.as_deref().map(|o| format!(", default {o}")).unwrap_or_default();
    decision_event(
        c,
        now,
        "decision.opened",
        &task,
        &d,
        &format!("{} [{}{default}] (by {})", clip(&d.question, 200), d.options.join(" | "), d.raised_by),
    )?;
    Ok((d, task))
}

/// A task waiting in `needs_decision` with nothing left open goes back to the queue.
pub(super) fn resume_if_decided(c: &Connection, task: Task, now: Millis) -> Result<Task> {
    let mut task = task;
    if task.state == TaskState::NeedsDecision
        && open_decisions_of(c, &task.id)?.is_empty()
        && !waits_for_winner(c, &task.id)?
    {
        task.resume(now).map_err(refused)?;
        save_task(c, &task)?;
        task_event(c, now, "task.resumed", &task, Some("every decision is answered"))?;
    }
    Ok(task)
}

/// A person answers. `by` must be among the decision's answerers, if it names any.
pub fn answer_decision(
    c: &Connection,
    id: i64,
    option: &str,
    note: Option<String>,
    by: &str,
    now: Millis,
) -> Result<(DecisionRecord, Task)> {
    let mut d = load_decision(c, id)?;
    if d.state != DecisionState::Open {
        return Err(StoreError::Conflict(format!(
            "decision #{id} is already {}{}",
            d.state.as_str(),
            d.answer.as_deref().map(|a| format!(": {a}")).unwrap_or_default()
        )));
    }
    if !d.options.iter().any(|o| o == option) {
        return Err(StoreError::Invalid(Invalid::new(
            "option",
            format!("{option:?} is not an option of decision #{id}; choose one of {}", d.options.join(", ")),
        )));
    }
    if !d.answerers.is_empty() && !d.answerers.iter().any(|a| a == by) {
        return Err(StoreError::Conflict(format!(
            "decision #{id} may be answered only by {}; {by} may not",
            d.answerers.join(", ")
        )));
    }
    let note = note.map(|n| clip(n.trim(), 2000)).filter(|n| !n.is_empty());
    close_decision(c, &mut d, DecisionState::Answered, Some(option.to_owned()), Some(by), note.clone(), now)?;
    let task = load_task(c, &d.task)?;
    let said = note.as_deref().map(|n| format!(": {}", clip(n, 200))).unwrap_or_default();
    decision_event(c, now, "decision.answered", &task, &d, &format!("{option} (by {by}){said}"))?;
    resolve_conflict(c, &d, now)?;
    let task = resume_if_decided(c, task, now)?;
    Ok((d, task))
}

/// Applies every deadline that has passed: the default where there is one,
/// otherwise the task fails with `decision_timeout`.
pub fn expire_decisions(c: &Connection, now: Millis, limit: usize) -> Result<Vec<(DecisionRecord, Task)>> {
    let due: Vec<DecisionRecord> = c
        .prepare_cached(&format!(
            "SELECT {DECISION_COLS} FROM decisions WHERE state = 'open' AND deadline IS NOT NULL AND deadline <= ? \
             ORDER BY deadline LIMIT ?"
        ))?
        .query_map(params![now.0, limit as i64], decision_row)?
        .collect::<Result<_>>()?;
    let mut out = Vec::with_capacity(due.len());
    for mut d in due {
        // An earlier one in this batch may have ended the task, withdrawing this one.
        if load_decision(c, d.id)?.state != DecisionState::Open {
            continue;
        }
        let waited = waited_text(now.since(d.created_at));
        let mut task = load_task(c, &d.task)?;
        match d.default.clone() {
            Some(default) => {
                close_decision(
                    c,
                    &mut d,
                    DecisionState::AutoResolved,
                    Some(default.clone()),
                    Some("timeout"),
                    None,
                    now,
                )?;
                decision_event(
                    c,
                    now,
                    "decision.auto_resolved",
                    &task,
                    &d,
                    &format!("{default} (the default: nobody answered in {waited})"),
                )?;
                task = resume_if_decided(c, task, now)?;
            }
            None => {
                close_decision(c, &mut d, DecisionState::TimedOut, None, Some("timeout"), None, now)?;
                decision_event(
                    c,
                    now,
                    "decision.timed_out",
                    &task,
                    &d,
                    &format!("nobody answered in {waited} and there is no default"),
                )?;
                let epoch = task.epoch;
                let was_running = task.state == TaskState::Running;
                if task.decision_timed_out(now).is_ok() {
                    save_task(c, &task)?;
                    if was_running {
                        end_attempt(c, &task, epoch, Outcome::DecisionTimeout, now)?;
                    }
                    let kind = if task.state == TaskState::Failed { "task.failed" } else { "task.cancelled" };
                    task_event(c, now, kind, &task, task.reason.as_deref())?;
                    release_task_locks(c, &task, now)?;
                    settle(c, &task, now)?;
                }
            }
        }
        out.push((d, task));
    }
    Ok(out)
}

/// `90s`, `5m`, `2h`, `3d`: how long a decision stayed open.
fn waited_text(d: Duration) -> String {
    let secs = d.as_secs();
    match secs {
        0..120 => format!("{secs}s"),
        120..7200 => format!("{}m", secs / 60),
        7200..172_800 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

/// Open decisions whose task no longer waits for them are withdrawn: the task
/// ended or was reset, or the run that asked (without parking) is over.
pub(super) fn withdraw_decisions(c: &Connection, task: &Task, now: Millis) -> Result<()> {
    if task.state == TaskState::NeedsDecision {
        return Ok(());
    }
    for mut d in open_decisions_of(c, &task.id)? {
        let asker_runs = task.state.is_leased() && d.epoch == Some(task.epoch);
        if asker_runs {
            continue;
        }
        close_decision(c, &mut d, DecisionState::Withdrawn, None, None, None, now)?;
        decision_event(c, now, "decision.withdrawn", task, &d, &format!("the task is {}", task.state.as_str()))?;
        c.prepare_cached(
            "UPDATE conflicts SET resolution = 'ended', resolved_at = ? WHERE decision_id = ? AND resolution IS NULL",
        )?
        .execute(params![now.0, d.id])?;
    }
    Ok(())
}

/// Whether any other record is tied to the task: a decision, a lock held or
/// waited for, a file its run changes, a conflict, a task that depends on
/// it. A run's end looks each of those up and settles it (`parked_by`,
/// `release_task_locks`, `settle`), about ten statements; most tasks have
/// none of them, and one statement says so. A new kind of record that a
/// run's end must settle belongs in this probe too.
pub(super) fn has_ties(c: &Connection, id: &TaskId) -> Result<bool> {
    c.prepare_cached(
        "SELECT EXISTS (SELECT 1 FROM decisions WHERE task_id = ?1) \
             OR EXISTS (SELECT 1 FROM locks WHERE task_id = ?1) \
             OR EXISTS (SELECT 1 FROM lock_waits WHERE task_id = ?1) \
             OR EXISTS (SELECT 1 FROM task_files WHERE task_id = ?1) \
             OR EXISTS (SELECT 1 FROM conflicts WHERE winner = ?1) \
             OR EXISTS (SELECT 1 FROM conflicts WHERE loser = ?1) \
             OR EXISTS (SELECT 1 FROM task_deps WHERE dep_id = ?1)",
    )?
    .query_row([id.as_str()], |r| r.get(0))
}

/// The decision that makes this run's end a park rather than a finish: one it
/// raised asking to stop, still open, or answered while it was stopping.
pub(super) fn parked_by(c: &Connection, task: &Task, epoch: Epoch) -> Result<Option<DecisionRecord>> {
    // MIN rather than ORDER BY ... LIMIT 1: the same row without building a
    // sorter, which every finished run paid for though hardly any run parks.
    c.prepare_cached(&format!(
        "SELECT {DECISION_COLS} FROM decisions WHERE id = (SELECT MIN(id) FROM decisions WHERE task_id = ? \
         AND epoch = ? AND park = 1 AND state IN ('open', 'answered', 'auto_resolved'))"
    ))?
    .query_row(params![task.id.as_str(), epoch.0 as i64], decision_row)
    .optional()
}

/// The run stopped after asking: its task waits in `needs_decision` (or is
/// queued at once, if the answer came while it was stopping), without
/// spending the attempt.
#[allow(clippy::too_many_arguments)] // each is one fact of the report
pub(super) fn park_task(
    c: &Connection,
    mut task: Task,
    agent: &AgentName,
    epoch: Epoch,
    outcome: &RunOutcome,
    details: &RunDetails,
    parked: &DecisionRecord,
    now: Millis,
) -> Result<(Task, FinishResult)> {
    let state = task.park(agent, epoch, now).map_err(refused)?;
    save_task(c, &task)?;
    end_attempt(c, &task, epoch, Outcome::Parked, now)?;
    // Questions the run asked and waited for have nobody waiting any more.
    for mut d in open_decisions_of(c, &task.id)?.into_iter().filter(|d| d.epoch == Some(epoch) && !d.park) {
        close_decision(c, &mut d, DecisionState::Withdrawn, None, None, None, now)?;
        decision_event(c, now, "decision.withdrawn", &task, &d, "the run that asked stopped")?;
    }
    save_details(c, &task.id, epoch, details, now)?;
    let ran = outcome.outcome().as_str();
    let finished = if state == TaskState::Cancelled {
        task_event(c, now, "task.cancelled", &task, Some("cancelled while waiting for a decision"))?;
        Finished::Cancelled
    } else {
        task_event(
            c,
            now,
            "task.needs_decision",
            &task,
            Some(&format!("decision #{}; the run stopped ({ran}), no attempt spent", parked.id)),
        )?;
        Finished::RetryScheduled { ready_at: now }
    };
    release_task_locks(c, &task, now)?;
    settle(c, &task, now)?;
    let task = resume_if_decided(c, task, now)?;
    Ok((task, FinishResult::Applied(finished)))
}
