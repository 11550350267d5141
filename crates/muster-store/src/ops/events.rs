//! The event log: every change appends its event in the same transaction.

use super::*;

/// The columns of one event row, borrowed.
#[derive(Default)]
pub(super) struct EventRow<'a> {
    pub(super) task: Option<&'a TaskId>,
    pub(super) agent: Option<&'a AgentName>,
    pub(super) epoch: Option<Epoch>,
    pub(super) state: Option<&'a str>,
    pub(super) detail: Option<&'a str>,
}

pub(super) fn insert_event_row(c: &Connection, now: Millis, kind: &str, e: EventRow<'_>) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO events (at, kind, task_id, agent, epoch, state, detail) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )?
    .execute(params![
        now.0,
        kind,
        e.task.map(|t| t.as_str()),
        e.agent.map(|a| a.as_str()),
        e.epoch.map(|e| e.0 as i64),
        e.state,
        e.detail
    ])?;
    Ok(())
}

/// An event about an agent, a token or the hub rather than a task.
pub(super) fn agent_event(
    c: &Connection,
    now: Millis,
    kind: &str,
    agent: Option<&AgentName>,
    state: Option<&str>,
    detail: Option<&str>,
) -> Result<()> {
    insert_event_row(c, now, kind, EventRow { agent, state, detail, ..EventRow::default() })
}

pub fn insert_event(c: &Connection, now: Millis, e: &NewEvent) -> Result<()> {
    let row = EventRow {
        task: e.task.as_ref(),
        agent: e.agent.as_ref(),
        epoch: e.epoch,
        state: e.state.as_deref(),
        detail: e.detail.as_deref(),
    };
    insert_event_row(c, now, e.kind, row)
}

/// Appends an event describing `task` as it is now.
pub(super) fn task_event(c: &Connection, now: Millis, kind: &str, task: &Task, detail: Option<&str>) -> Result<()> {
    let row = EventRow {
        task: Some(&task.id),
        agent: task.agent.as_ref(),
        epoch: (task.epoch.0 > 0).then_some(task.epoch),
        state: Some(task.state.as_str()),
        detail,
    };
    insert_event_row(c, now, kind, row)
}

pub fn events(c: &Connection, f: &EventFilter) -> Result<Vec<Event>> {
    let limit = f.limit.clamp(1, 10_000) as i64;
    // Only the conditions asked for, so that SQLite can use the rowid range
    // and the task and agent indexes.
    let mut cond = String::from("seq > ?");
    let mut args: Vec<Owned> = vec![f.after.into()];
    if let Some(before) = f.before {
        cond.push_str(" AND seq < ?");
        args.push(before.into());
    }
    if let Some(task) = &f.task {
        cond.push_str(" AND task_id = ?");
        args.push(task.as_str().to_owned().into());
    }
    if let Some(agent) = &f.agent {
        cond.push_str(" AND agent = ?");
        args.push(agent.as_str().to_owned().into());
    }
    if let Some(kind) = f.kind.as_deref().filter(|k| !k.is_empty()) {
        // A kind, or every kind under it: `task` takes `task.failed`. Exact
        // and case-sensitive, as kinds are.
        cond.push_str(" AND (kind = ? OR substr(kind, 1, ?) = ?)");
        args.push(kind.to_owned().into());
        args.push((kind.chars().count() as i64 + 1).into());
        args.push(format!("{kind}.").into());
    }
    args.push(limit.into());
    const COLS: &str = "seq, at, kind, task_id, agent, epoch, state, detail";
    // Reading backwards takes the newest below `before`, then puts them oldest first.
    let sql = if f.before.is_some() {
        format!(
            "SELECT * FROM (SELECT {COLS} FROM events WHERE {cond} ORDER BY seq DESC LIMIT ?) AS latest ORDER BY seq"
        )
    } else {
        format!("SELECT {COLS} FROM events WHERE {cond} ORDER BY seq LIMIT ?")
    };
    let mut stmt = c.prepare_cached(&sql)?;
    let rows = stmt.query_map(params_from_iter(args), |r| {
        let task: Option<String> = r.get(3)?;
        let agent: Option<String> = r.get(4)?;
        Ok(Event {
            seq: r.get(0)?,
            at: Millis(r.get(1)?),
            kind: r.get(2)?,
            task: task.map(|t| TaskId::parse(&t)).transpose().map_err(|e| corrupt("task id", e))?,
            agent: agent.map(|a| AgentName::parse(&a)).transpose().map_err(|e| corrupt("agent", e))?,
            epoch: r.get::<_, Option<i64>>(5)?.map(|e| Epoch(e as u64)),
            state: r.get(6)?,
            detail: r.get(7)?,
        })
    })?;
    rows.collect::<Result<_>>()
}
