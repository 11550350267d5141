//! Conflicts between runs that changed the same files in one repository.

use super::*;

const CONFLICT_COLS: &str = "id, repo, files, winner, loser, decision_id, resolution, created_at, resolved_at";

fn conflict_row(r: &Row<'_>) -> Result<ConflictRecord> {
    let (files, winner, loser): (String, String, String) = (r.get(2)?, r.get(3)?, r.get(4)?);
    Ok(ConflictRecord {
        id: r.get(0)?,
        repo: r.get(1)?,
        files: lines(&files),
        winner: TaskId::parse(&winner).map_err(|e| corrupt("task id", e))?,
        loser: TaskId::parse(&loser).map_err(|e| corrupt("task id", e))?,
        decision: r.get(5)?,
        resolution: r.get(6)?,
        created_at: Millis(r.get(7)?),
        resolved_at: ms(r.get(8)?),
    })
}

/// Newest first; `open_only`: those not yet resolved.
pub fn conflicts(c: &Connection, open_only: bool, limit: usize) -> Result<Vec<ConflictRecord>> {
    let filter = if open_only { "WHERE resolution IS NULL" } else { "" };
    let rows = c
        .prepare(&format!("SELECT {CONFLICT_COLS} FROM conflicts {filter} ORDER BY id DESC LIMIT ?"))?
        .query_map([limit.clamp(1, 1000) as i64], conflict_row)?
        .collect::<Result<_>>()?;
    Ok(rows)
}

/// A run says which files it has changed so far. Another active task on the
/// same repository changing any of them is a conflict: the lower-priority
/// task (else the newer) is paused and a person asked whether it waits for
/// the other to end or goes on.
pub fn report_files(
    c: &Connection,
    agent: &AgentName,
    id: &TaskId,
    epoch: Epoch,
    files: &[String],
    now: Millis,
) -> Result<Vec<NewConflict>> {
    let task = running_attempt(c, agent, id, epoch, now)?;
    let Some(repo) = task.spec.workspace.as_ref().map(|w| w.repo.clone()) else {
        return Err(StoreError::Invalid(Invalid::new("files", "the task has no repository")));
    };
    c.prepare_cached("DELETE FROM task_files WHERE task_id = ?")?.execute([id.as_str()])?;
    for path in files.iter().take(2000) {
        if path.is_empty() || path.len() > 4096 || path.contains('\n') {
            continue;
        }
        c.prepare_cached("INSERT INTO task_files (task_id, repo, path) VALUES (?, ?, ?) ON CONFLICT DO NOTHING")?
            .execute(params![id.as_str(), repo, path])?;
    }
    // Other active tasks changing the same files, with the files.
    let rows: Vec<(String, String)> = c
        .prepare_cached(
            "SELECT o.task_id, o.path FROM task_files m JOIN task_files o ON o.repo = m.repo AND o.path = m.path \
             JOIN tasks t ON t.id = o.task_id \
             WHERE m.task_id = ?1 AND o.task_id != ?1 \
             AND t.state IN ('assigned', 'running') ORDER BY o.task_id, o.path",
        )?
        .query_map([id.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_>>()?;
    let mut by_task: std::collections::BTreeMap<String, Vec<String>> = std::collections::BTreeMap::new();
    for (other, path) in rows {
        by_task.entry(other).or_default().push(path);
    }
    let mut found = Vec::new();
    for (other, files) in by_task {
        let other = load_task(c, &TaskId::parse(&other).map_err(|e| corrupt("task id", e))?)?;
        let known: i64 = c
            .prepare_cached(
                "SELECT count(*) FROM conflicts WHERE (resolution IS NULL OR resolution = 'go-on') AND \
                 ((winner = ?1 AND loser = ?2) OR (winner = ?2 AND loser = ?1))",
            )?
            .query_row(params![id.as_str(), other.id.as_str()], |r| r.get(0))?;
        if known > 0 {
            continue;
        }
        let first = (task.spec.priority, task.created_at, task.id.as_str())
            <= (other.spec.priority, other.created_at, other.id.as_str());
        let (winner, loser) = if first { (task.clone(), other) } else { (other, task.clone()) };
        found.push(open_conflict(c, &repo, files, &winner, loser, now)?);
    }
    Ok(found)
}

fn open_conflict(
    c: &Connection,
    repo: &str,
    files: Vec<String>,
    winner: &Task,
    loser: Task,
    now: Millis,
) -> Result<NewConflict> {
    let id: i64 = c
        .prepare_cached(
            "INSERT INTO conflicts (repo, files, winner, loser, created_at) VALUES (?, ?, ?, ?, ?) RETURNING id",
        )?
        .query_row(params![repo, files.join("\n"), winner.id.as_str(), loser.id.as_str(), now.0], |r| r.get(0))?;
    let shown: Vec<&str> = files.iter().take(5).map(String::as_str).collect();
    let more = if files.len() > 5 { format!(" and {} more", files.len() - 5) } else { String::new() };
    let question = format!(
        "Conflict #{id} on {repo}: {} ({}) and {} ({}) both change {}{more}. {} is paused: should it wait until {} has ended, or go on now?",
        loser.id,
        loser.spec.priority.as_str(),
        winner.id,
        winner.spec.priority.as_str(),
        shown.join(", "),
        loser.id,
        winner.id,
    );
    // A running loser is asked under its run, which is stopped and parked; a
    // queued one waits at once; one not yet queued is only recorded.
    let running = loser.state.is_leased().then(|| loser.lease.as_ref().map(|l| (l.agent.clone(), l.epoch))).flatten();
    let can_wait = running.is_some() || matches!(loser.state, TaskState::Queued | TaskState::NeedsDecision);
    let mut decision = None;
    if can_wait && (running.is_none() || loser.state == TaskState::Running) {
        let new = NewDecision {
            task: loser.id.clone(),
            question,
            options: vec!["wait".to_owned(), "go-on".to_owned()],
            default: None,
            timeout: None,
            answerers: Vec::new(),
            raised_by: format!("conflict #{id}"),
            epoch: running.as_ref().map(|(_, e)| *e),
            park: running.is_some(),
        };
        let (d, _) = open_decision(c, new, now)?;
        c.prepare_cached("UPDATE conflicts SET decision_id = ? WHERE id = ?")?.execute(params![d.id, id])?;
        decision = Some(d.id);
    }
    let loser = load_task(c, &loser.id)?;
    task_event(
        c,
        now,
        "conflict.detected",
        &loser,
        Some(&format!("#{id} on {repo} with {}: {}{more}", winner.id, shown.join(", "))),
    )?;
    let conflict = c
        .prepare_cached(&format!("SELECT {CONFLICT_COLS} FROM conflicts WHERE id = ?"))?
        .query_row([id], conflict_row)?;
    let stop = if decision.is_some() { running } else { None };
    Ok(NewConflict { conflict, stop })
}

/// A decision about a conflict was answered: the conflict is resolved so.
pub(super) fn resolve_conflict(c: &Connection, decision: &DecisionRecord, now: Millis) -> Result<()> {
    c.prepare_cached(
        "UPDATE conflicts SET resolution = ?, resolved_at = ? WHERE decision_id = ? AND resolution IS NULL",
    )?
    .execute(params![decision.answer, now.0, decision.id])?;
    Ok(())
}

/// Whether `task` was told to wait for a conflicting task that has not ended.
pub(super) fn waits_for_winner(c: &Connection, task: &TaskId) -> Result<bool> {
    let n: i64 = c
        .prepare_cached(
            "SELECT count(*) FROM conflicts k JOIN tasks w ON w.id = k.winner WHERE k.loser = ? \
             AND k.resolution = 'wait' AND w.state NOT IN ('succeeded', 'failed', 'cancelled', 'skipped')",
        )?
        .query_row([task.as_str()], |r| r.get(0))?;
    Ok(n > 0)
}

/// `task` ended: tasks that waited for it go on, and its files are no longer active.
pub(super) fn release_conflicts(c: &Connection, task: &Task, now: Millis) -> Result<()> {
    if !task.state.is_terminal() {
        return Ok(());
    }
    c.prepare_cached("DELETE FROM task_files WHERE task_id = ?")?.execute([task.id.as_str()])?;
    let losers: Vec<String> = c
        .prepare_cached("SELECT loser FROM conflicts WHERE winner = ? AND resolution = 'wait'")?
        .query_map([task.id.as_str()], |r| r.get(0))?
        .collect::<Result<_>>()?;
    for loser in losers {
        // Retention may have removed it; then there is nothing to resume.
        if let Some(loser) = find_task(c, &TaskId::parse(&loser).map_err(|e| corrupt("task id", e))?)? {
            resume_if_decided(c, loser, now)?;
        }
    }
    // A task paused behind this one, still undecided: the question is moot.
    let undecided: Vec<i64> = c
        .prepare_cached(
            "SELECT decision_id FROM conflicts WHERE winner = ? AND resolution IS NULL AND decision_id IS NOT NULL",
        )?
        .query_map([task.id.as_str()], |r| r.get(0))?
        .collect::<Result<_>>()?;
    for id in undecided {
        let mut d = load_decision(c, id)?;
        if d.state == DecisionState::Open {
            close_decision(c, &mut d, DecisionState::Withdrawn, None, None, None, now)?;
            if let Some(loser) = find_task(c, &d.task)? {
                decision_event(c, now, "decision.withdrawn", &loser, &d, &format!("{} has ended", task.id))?;
                resume_if_decided(c, loser, now)?;
            }
        }
    }
    // Conflicts nobody decided end with either task: the pair may meet again.
    c.prepare_cached(
        "UPDATE conflicts SET resolution = 'ended', resolved_at = ? WHERE resolution IS NULL AND (winner = ?2 OR loser = ?2)",
    )?
    .execute(params![now.0, task.id.as_str()])?;
    Ok(())
}
