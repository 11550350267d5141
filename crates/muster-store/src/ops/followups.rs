//! Follow-up tasks a run creates, bounded in number and depth.

use super::*;

/// Most tasks one task's runs may create, and how deep a chain of them may go.
pub const MAX_FOLLOWUPS: i64 = 20;
pub const MAX_FOLLOWUP_DEPTH: i64 = 5;

/// A run creates a task for later work; it must hold its task's lease, and
/// the limits keep a run from flooding the queue or recursing for ever.
pub fn create_followup(
    c: &Connection,
    parent: &TaskId,
    epoch: Epoch,
    id: TaskId,
    spec: TaskSpec,
    per_tree: u64,
    now: Millis,
) -> Result<crate::Followup> {
    let task = load_task(c, parent)?;
    if !(task.state.is_leased() && task.lease.as_ref().is_some_and(|l| l.epoch == epoch)) {
        return Err(refused(muster_core::Refused::StaleEpoch { current: task.epoch, got: epoch }));
    }
    let made: i64 = c
        .prepare_cached("SELECT count(*) FROM followups WHERE parent = ?")?
        .query_row([parent.as_str()], |r| r.get(0))?;
    if made >= MAX_FOLLOWUPS {
        return Err(StoreError::Conflict(format!("{parent} has created {made} tasks, the most a task may")));
    }
    let (depth, root): (i64, String) = c
        .prepare_cached("SELECT depth, root FROM followups WHERE child = ?")?
        .query_row([parent.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?
        .unwrap_or_else(|| (0, parent.as_str().to_owned()));
    let depth = depth + 1;
    if depth > MAX_FOLLOWUP_DEPTH {
        return Err(StoreError::Conflict(format!(
            "{parent} is itself {} tasks deep in follow-ups; at most {MAX_FOLLOWUP_DEPTH}",
            depth - 1
        )));
    }
    // The single writer counts and inserts in one transaction: two runs of one tree never both see room.
    let held: i64 =
        c.prepare_cached("SELECT count(*) FROM followups WHERE root = ?")?.query_row([&root], |r| r.get(0))?;
    let root = TaskId::parse(&root).map_err(|e| StoreError::Database(format!("a follow-up's root: {e}")))?;
    if held as u64 >= per_tree {
        let detail = format!("{held} follow-up tasks in the tree of {root}, the most it may hold ({per_tree})");
        task_event(c, now, "task.followup_refused", &task, Some(&detail))?;
        return Ok(crate::Followup::OverBudget { root, held: held as u64 });
    }
    let created = create_task(c, id, spec, now)?;
    if created.created {
        c.prepare_cached("INSERT INTO followups (child, parent, depth, root) VALUES (?, ?, ?, ?)")?
            .execute(params![created.task.id.as_str(), parent.as_str(), depth, root.as_str()])?;
        task_event(c, now, "task.followup", &task, Some(&format!("created {}", created.task.id)))?;
    }
    Ok(crate::Followup::Created(Box::new(created)))
}
