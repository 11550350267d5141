//! Named locks with wait-for cycle detection (`muster_core::locks`).

use super::*;

fn lock_rows(c: &Connection, sql: &str, arg: Option<&str>) -> Result<Vec<LockRecord>> {
    let mut stmt = c.prepare_cached(sql)?;
    let map = |r: &Row<'_>| {
        let (task, mode): (String, String) = (r.get(1)?, r.get(2)?);
        Ok(LockRecord {
            name: r.get(0)?,
            task: TaskId::parse(&task).map_err(|e| corrupt("task id", e))?,
            mode: LockMode::parse(&mode).ok_or_else(|| corrupt("lock mode", &mode))?,
            since: Millis(r.get(3)?),
        })
    };
    let rows = match arg {
        Some(a) => stmt.query_map([a], map)?.collect::<Result<Vec<_>>>()?,
        None => stmt.query_map([], map)?.collect::<Result<Vec<_>>>()?,
    };
    Ok(rows)
}

fn holders_of(c: &Connection, name: &str) -> Result<Vec<LockRecord>> {
    lock_rows(c, "SELECT name, task_id, mode, since FROM locks WHERE name = ? ORDER BY since", Some(name))
}

/// Holders that stand in the way of `task` taking `name` in `mode`.
fn blockers(holders: &[LockRecord], task: &TaskId, mode: LockMode) -> Vec<TaskId> {
    holders
        .iter()
        .filter(|h| h.task != *task && (mode == LockMode::Exclusive || h.mode == LockMode::Exclusive))
        .map(|h| h.task.clone())
        .collect()
}

fn lock_event(c: &Connection, now: Millis, kind: &str, task: Option<&Task>, detail: &str) -> Result<()> {
    match task {
        Some(t) => task_event(c, now, kind, t, Some(detail)),
        None => insert_event_row(
            c,
            now,
            kind,
            EventRow { task: None, agent: None, epoch: None, state: None, detail: Some(detail) },
        ),
    }
}

#[allow(clippy::too_many_arguments)] // each is one fact of the request
pub fn acquire_lock(
    c: &Connection,
    name: &str,
    id: &TaskId,
    epoch: Epoch,
    mode: LockMode,
    try_only: bool,
    now: Millis,
) -> Result<Acquire> {
    check_lock_name(name).map_err(StoreError::Invalid)?;
    let task = load_task(c, id)?;
    if !(task.state.is_leased() && task.lease.as_ref().is_some_and(|l| l.epoch == epoch)) {
        return Err(refused(muster_core::Refused::StaleEpoch { current: task.epoch, got: epoch }));
    }
    let holders = holders_of(c, name)?;
    let blocking = blockers(&holders, id, mode);
    if blocking.is_empty() {
        c.prepare_cached("DELETE FROM lock_waits WHERE task_id = ? AND name = ?")?
            .execute(params![id.as_str(), name])?;
        let held = holders.iter().any(|h| h.task == *id);
        c.prepare_cached(
            "INSERT INTO locks (name, task_id, mode, since) VALUES (?, ?, ?, ?) \
             ON CONFLICT (name, task_id) DO UPDATE SET mode = excluded.mode",
        )?
        .execute(params![name, id.as_str(), mode.as_str(), now.0])?;
        if !held {
            lock_event(c, now, "lock.acquired", Some(&task), &format!("{name} ({})", mode.as_str()))?;
        }
        return Ok(Acquire::Acquired);
    }
    if try_only {
        return Ok(Acquire::Busy { holders: blocking });
    }
    // Would this wait close a cycle? Follow who waits for whom, from the holders.
    if let Some(cycle) = cycle_through(c, id, name, &blocking)? {
        c.prepare_cached("DELETE FROM lock_waits WHERE task_id = ? AND name = ?")?
            .execute(params![id.as_str(), name])?;
        let text = cycle.iter().map(|(t, n)| format!("{t} waits for {n}")).collect::<Vec<_>>().join(", ");
        lock_event(c, now, "lock.deadlock", Some(&task), &format!("{text}: {id}'s acquire of {name} is refused"))?;
        return Ok(Acquire::Deadlock { cycle });
    }
    let new = c
        .prepare_cached(
            "INSERT INTO lock_waits (name, task_id, mode, since) VALUES (?, ?, ?, ?) \
             ON CONFLICT (task_id, name) DO NOTHING",
        )?
        .execute(params![name, id.as_str(), mode.as_str(), now.0])?;
    if new > 0 {
        let held_by = blocking.iter().map(|t| t.as_str()).collect::<Vec<_>>().join(", ");
        lock_event(c, now, "lock.waiting", Some(&task), &format!("{name} ({}), held by {held_by}", mode.as_str()))?;
    }
    Ok(Acquire::Busy { holders: blocking })
}

/// The cycle `task` waiting for `name` (held by `blocking`) would close: the core's rule over the stored waits.
fn cycle_through(
    c: &Connection,
    task: &TaskId,
    name: &str,
    blocking: &[TaskId],
) -> Result<Option<Vec<(TaskId, String)>>> {
    let waits = lock_waits(c)?;
    let graph: Vec<Wait<'_>> =
        waits.iter().map(|w| Wait { task: &w.task, name: &w.name, holders: &w.holders }).collect();
    Ok(muster_core::locks::cycle_through(task, name, blocking, &graph))
}

pub fn release_lock(c: &Connection, name: &str, task: Option<&TaskId>, by: &str, now: Millis) -> Result<u64> {
    check_lock_name(name).map_err(StoreError::Invalid)?;
    let gone = match task {
        Some(t) => {
            let n = c
                .prepare_cached("DELETE FROM locks WHERE name = ? AND task_id = ?")?
                .execute(params![name, t.as_str()])?;
            let w = c
                .prepare_cached("DELETE FROM lock_waits WHERE name = ? AND task_id = ?")?
                .execute(params![name, t.as_str()])?;
            if n > 0 {
                let held = load_task(c, t)?;
                lock_event(c, now, "lock.released", Some(&held), name)?;
            }
            (n + w) as u64
        }
        None => {
            let holders = holders_of(c, name)?;
            if holders.is_empty() {
                return Err(StoreError::not_found("lock", name));
            }
            c.prepare_cached("DELETE FROM locks WHERE name = ?")?.execute([name])?;
            let tasks = holders.iter().map(|h| h.task.to_string()).collect::<Vec<_>>().join(", ");
            lock_event(c, now, "lock.forced", None, &format!("{name} taken from {tasks} (by {by})"))?;
            holders.len() as u64
        }
    };
    Ok(gone)
}

pub fn stop_waiting(c: &Connection, name: &str, task: &TaskId) -> Result<()> {
    c.prepare_cached("DELETE FROM lock_waits WHERE name = ? AND task_id = ?")?.execute(params![name, task.as_str()])?;
    Ok(())
}

pub fn release_all_locks(c: &Connection, by: &str, now: Millis) -> Result<u64> {
    let all = locks(c)?;
    let mut names: Vec<&str> = all.iter().map(|l| l.name.as_str()).collect();
    names.dedup();
    for name in &names {
        release_lock(c, name, None, by, now)?;
    }
    Ok(all.len() as u64)
}

/// A run ended (or was taken back): whatever its task held or waited for is let go.
pub(super) fn release_task_locks(c: &Connection, task: &Task, now: Millis) -> Result<()> {
    let held = lock_rows(c, "SELECT name, task_id, mode, since FROM locks WHERE task_id = ?", Some(task.id.as_str()))?;
    c.prepare_cached("DELETE FROM locks WHERE task_id = ?")?.execute([task.id.as_str()])?;
    c.prepare_cached("DELETE FROM lock_waits WHERE task_id = ?")?.execute([task.id.as_str()])?;
    // The files it had changed belonged to that run's worktree, gone with it.
    c.prepare_cached("DELETE FROM task_files WHERE task_id = ?")?.execute([task.id.as_str()])?;
    if !held.is_empty() {
        let names = held.iter().map(|l| l.name.as_str()).collect::<Vec<_>>().join(", ");
        lock_event(c, now, "lock.released", Some(task), &format!("{names} (the run ended)"))?;
    }
    Ok(())
}

pub fn locks(c: &Connection) -> Result<Vec<LockRecord>> {
    lock_rows(c, "SELECT name, task_id, mode, since FROM locks ORDER BY name, since", None)
}

pub fn lock_waits(c: &Connection) -> Result<Vec<LockWait>> {
    let mut stmt = c.prepare_cached("SELECT name, task_id, mode, since FROM lock_waits ORDER BY since")?;
    let rows: Vec<(String, String, String, i64)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?.collect::<Result<_>>()?;
    let mut out = Vec::with_capacity(rows.len());
    for (name, task, mode, since) in rows {
        let task = TaskId::parse(&task).map_err(|e| corrupt("task id", e))?;
        let mode = LockMode::parse(&mode).ok_or_else(|| corrupt("lock mode", &mode))?;
        let holders = blockers(&holders_of(c, &name)?, &task, mode);
        out.push(LockWait { name, task, mode, since: Millis(since), holders });
    }
    Ok(out)
}
