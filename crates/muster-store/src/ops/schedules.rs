//! Schedules and their firings.

use super::*;

const SCHEDULE_COLS: &str =
    "id, name, cron, tz, template, missed, paused, next_at, last_at, last_task, created_by, created_at";

fn schedule_row(r: &Row<'_>) -> Result<ScheduleRecord> {
    let last_task: Option<String> = r.get(9)?;
    Ok(ScheduleRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        cron: r.get(2)?,
        tz: r.get(3)?,
        template: r.get(4)?,
        missed: r.get(5)?,
        paused: r.get(6)?,
        next_at: ms(r.get(7)?),
        last_at: ms(r.get(8)?),
        last_task: last_task.map(|t| TaskId::parse(&t)).transpose().map_err(|e| corrupt("task id", e))?,
        created_by: r.get(10)?,
        created_at: Millis(r.get(11)?),
    })
}

pub fn schedules(c: &Connection) -> Result<Vec<ScheduleRecord>> {
    let rows = c
        .prepare_cached(&format!("SELECT {SCHEDULE_COLS} FROM schedules ORDER BY name"))?
        .query_map([], schedule_row)?
        .collect::<Result<_>>()?;
    Ok(rows)
}

/// By id (all digits) or by name.
pub fn schedule(c: &Connection, key: &str) -> Result<Option<ScheduleRecord>> {
    match key.parse::<i64>().ok().filter(|_| key.chars().all(|ch| ch.is_ascii_digit())) {
        Some(id) => c
            .prepare_cached(&format!(
                "SELECT {SCHEDULE_COLS} FROM schedules WHERE id = ? OR name = ? ORDER BY id LIMIT 1"
            ))?
            .query_row(params![id, key], schedule_row)
            .optional(),
        None => c
            .prepare_cached(&format!("SELECT {SCHEDULE_COLS} FROM schedules WHERE name = ?"))?
            .query_row([key], schedule_row)
            .optional(),
    }
}

fn load_schedule(c: &Connection, key: &str) -> Result<ScheduleRecord> {
    schedule(c, key)?.ok_or_else(|| StoreError::not_found("schedule", key))
}

fn schedule_event(c: &Connection, now: Millis, kind: &str, detail: &str) -> Result<()> {
    insert_event_row(c, now, kind, EventRow { detail: Some(detail), ..EventRow::default() })
}

pub fn add_schedule(c: &Connection, new: NewSchedule, now: Millis) -> Result<ScheduleRecord> {
    let name = new.name.trim();
    if name.is_empty()
        || name.len() > 64
        || !name.chars().all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
        || name.chars().all(|ch| ch.is_ascii_digit())
    {
        return Err(StoreError::Invalid(Invalid::new(
            "name",
            "a schedule name is 1 to 64 letters, digits, -, _ or ., and not only digits",
        )));
    }
    if schedule(c, name)?.is_some() {
        return Err(StoreError::Conflict(format!(
            "a schedule named {name} exists; delete it first or pick another name"
        )));
    }
    let id: i64 = c
        .prepare_cached(
            "INSERT INTO schedules (name, cron, tz, template, missed, next_at, created_by, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        )?
        .query_row(
            params![name, new.cron, new.tz, new.template, new.missed, new.next_at.map(|m| m.0), new.created_by, now.0],
            |r| r.get(0),
        )?;
    let s = load_schedule(c, &id.to_string())?;
    schedule_event(c, now, "schedule.added", &format!("{} `{}` {} (by {})", s.name, s.cron, s.tz, s.created_by))?;
    Ok(s)
}

/// Pauses it (no next time), or resumes it from `next_at`.
pub fn set_schedule_paused(
    c: &Connection,
    key: &str,
    paused: bool,
    next_at: Option<Millis>,
    by: &str,
    now: Millis,
) -> Result<ScheduleRecord> {
    let s = load_schedule(c, key)?;
    if s.paused == paused {
        return Err(StoreError::Conflict(format!(
            "schedule {} is already {}",
            s.name,
            if paused { "paused" } else { "running" }
        )));
    }
    c.prepare_cached("UPDATE schedules SET paused = ?, next_at = ? WHERE id = ?")?.execute(params![
        paused,
        if paused { None } else { next_at.map(|m| m.0) },
        s.id
    ])?;
    let kind = if paused { "schedule.paused" } else { "schedule.resumed" };
    schedule_event(c, now, kind, &format!("{} (by {by})", s.name))?;
    load_schedule(c, &s.id.to_string())
}

pub fn delete_schedule(c: &Connection, key: &str, by: &str, now: Millis) -> Result<ScheduleRecord> {
    let s = load_schedule(c, key)?;
    c.prepare_cached("DELETE FROM schedules WHERE id = ?")?.execute([s.id])?;
    schedule_event(c, now, "schedule.deleted", &format!("{} (by {by})", s.name))?;
    Ok(s)
}

/// Schedules due at `now`, not paused.
pub fn due_schedules(c: &Connection, now: Millis) -> Result<Vec<ScheduleRecord>> {
    let rows = c
        .prepare_cached(&format!(
            "SELECT {SCHEDULE_COLS} FROM schedules WHERE paused = 0 AND next_at IS NOT NULL AND next_at <= ? ORDER BY next_at"
        ))?
        .query_map([now.0], schedule_row)?
        .collect::<Result<_>>()?;
    Ok(rows)
}

pub fn next_schedule_at(c: &Connection) -> Result<Option<Millis>> {
    let next: Option<i64> =
        c.prepare_cached("SELECT min(next_at) FROM schedules WHERE paused = 0")?.query_row([], |r| r.get(0))?;
    Ok(next.map(Millis))
}

/// Fires a schedule: creates its task (if any) and moves it to its next
/// time, together; `None` when it was not due as the hub saw it (another
/// hub fired it, or it was paused or changed meanwhile).
pub fn fire_schedule(c: &Connection, f: Firing, now: Millis) -> Result<Option<Option<Task>>> {
    let current: Option<(Option<i64>, bool, String)> = c
        .prepare_cached("SELECT next_at, paused, name FROM schedules WHERE id = ?")?
        .query_row([f.schedule], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((Some(next), false, name)) = current else { return Ok(None) };
    if next != f.due.0 {
        return Ok(None);
    }
    let task = match f.task {
        Some((id, mut spec)) => {
            // The same firing never makes two tasks, whatever retries.
            spec.idempotency_key = Some(format!("schedule:{}:{}", f.schedule, f.due.0));
            let created = create_task(c, id, spec, now)?;
            Some(created.task)
        }
        None => None,
    };
    c.prepare_cached("UPDATE schedules SET next_at = ?, last_at = ?, last_task = coalesce(?, last_task) WHERE id = ?")?
        .execute(params![f.next_at.map(|m| m.0), now.0, task.as_ref().map(|t| t.id.as_str()), f.schedule])?;
    let what = match &task {
        Some(t) => format!("{name}: task {} ({})", t.id, f.note),
        None => format!("{name}: no task ({})", f.note),
    };
    schedule_event(c, now, "schedule.fired", &what)?;
    Ok(Some(task))
}
