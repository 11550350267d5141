//! `muster check`: the store's own invariants, and their repair.

use super::*;

/// The database's integrity check, then Muster's invariants:
/// - a task holds a lease exactly when it is assigned or running, and the
///   lease names a registered agent and the task's current epoch;
/// - a task has at most one open attempt, and only while running under it;
/// - no task used more attempts than it may;
/// - event numbers have no gaps.
///
/// With `repair`: a lease held by an unknown agent, or a running or assigned
/// task without one, is expired now and the task reclaimed by the usual rules
/// (requeued, or failed if it was its last attempt); a leftover lease on a
/// finished task is removed; a stray open attempt is closed.
pub fn check(c: &Connection, repair: bool, now: Millis) -> Result<crate::CheckReport> {
    let mut report = crate::CheckReport::default();
    let mut find = |kind: &str, detail: String| report.findings.push((kind.to_owned(), detail));
    // PostgreSQL checks its own pages as it reads them (and with amcheck).
    if c.dialect() == crate::sql::Dialect::Sqlite {
        let integrity: Vec<String> =
            c.prepare("PRAGMA integrity_check")?.query_map([], |r| r.get(0))?.collect::<Result<_>>()?;
        if integrity != ["ok"] {
            find("integrity", integrity.join("; "));
        }
    }

    let mut orphans: Vec<String> = Vec::new();
    let mut leftover: Vec<String> = Vec::new();
    let mut stmt = c.prepare(
        "SELECT t.id, t.state, t.lease_agent, t.lease_epoch, t.epoch, \
         (SELECT COUNT(*) FROM agents a WHERE a.name = t.lease_agent) \
         FROM tasks t WHERE t.state IN ('assigned', 'running') OR t.lease_agent IS NOT NULL",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, Option<String>>(2)?,
            r.get::<_, Option<i64>>(3)?,
            r.get::<_, i64>(4)?,
            r.get::<_, i64>(5)?,
        ))
    })?;
    for row in rows {
        let (id, state, agent, lease_epoch, epoch, known) = row?;
        let leased_state = state == "assigned" || state == "running";
        match (&agent, leased_state) {
            (None, true) => {
                find("orphan", format!("{id} is {state} but holds no lease"));
                orphans.push(id);
            }
            (Some(a), false) => {
                find("lease", format!("{id} is {state} but still holds a lease for {a}"));
                leftover.push(id);
            }
            (Some(a), true) if known == 0 => {
                find("orphan", format!("{id} is {state} under a lease held by {a}, which is not a registered agent"));
                orphans.push(id);
            }
            (Some(a), true) if lease_epoch != Some(epoch) => {
                find(
                    "lease",
                    format!("{id}'s lease for {a} is under epoch {lease_epoch:?}, the task's epoch is {epoch}"),
                );
                orphans.push(id);
            }
            _ => {}
        }
    }
    drop(stmt);

    let mut stray: Vec<(String, i64)> = Vec::new();
    let mut stmt = c.prepare(
        "SELECT a.task_id, a.epoch, t.state, t.epoch FROM attempts a JOIN tasks t ON t.id = a.task_id \
         WHERE a.finished_at IS NULL AND NOT (t.state = 'running' AND t.epoch = a.epoch)",
    )?;
    for row in stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?, r.get::<_, String>(2)?, r.get::<_, i64>(3)?))
    })? {
        let (id, epoch, state, current) = row?;
        find(
            "attempt",
            format!("{id} has an open attempt under epoch {epoch}, but the task is {state} under epoch {current}"),
        );
        stray.push((id, epoch));
    }
    drop(stmt);

    let over: Vec<(String, i64, i64)> = c
        .prepare("SELECT id, attempts, max_attempts FROM tasks WHERE attempts > max_attempts")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_>>()?;
    for (id, attempts, max) in over {
        find("attempts", format!("{id} used {attempts} attempts of {max}"));
    }

    let (low, high, count): (Option<i64>, Option<i64>, i64) =
        c.query_row("SELECT MIN(seq), MAX(seq), COUNT(*) FROM events", [], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
    if let (Some(low), Some(high)) = (low, high) {
        let missing = high - low + 1 - count;
        if missing > 0 {
            find("events", format!("{missing} events missing between {low} and {high}"));
        }
    }

    if repair {
        for id in &leftover {
            c.execute(
                "UPDATE tasks SET lease_agent = NULL, lease_epoch = NULL, lease_expires_at = NULL WHERE id = ?",
                [id],
            )?;
            report.repaired.push(format!("{id}: leftover lease removed"));
        }
        for id in &orphans {
            c.execute(
                "UPDATE tasks SET lease_expires_at = ?, lease_agent = COALESCE(lease_agent, 'repair'), \
                 lease_epoch = COALESCE(lease_epoch, epoch) WHERE id = ?",
                params![now.0, id],
            )?;
            let id = TaskId::parse(id).map_err(|e| corrupt("task id", e))?;
            // A repair says nothing about any agent or runner: no breaker moves.
            let (task, outcome) = take_back(c, &id, now, None, None)?;
            report.repaired.push(format!("{}: reclaimed ({outcome:?}), now {}", task.id, task.state.as_str()));
        }
        for (id, epoch) in &stray {
            c.execute(
                "UPDATE attempts SET finished_at = ?, outcome = 'lease_expired', reason = 'closed by repair' \
                 WHERE task_id = ? AND epoch = ? AND finished_at IS NULL",
                params![now.0, id, epoch],
            )?;
            report.repaired.push(format!("{id}: open attempt under epoch {epoch} closed"));
        }
        if !report.repaired.is_empty() {
            let detail = format!("{} findings, {} repairs", report.findings.len(), report.repaired.len());
            agent_event(c, now, "db.repaired", None, None, Some(&detail))?;
        }
    }
    Ok(report)
}
