//! Runners taken out of service by an operator or a provider's limit.

use super::*;

pub fn disabled_runners(c: &Connection) -> Result<Vec<DisabledRunner>> {
    let mut stmt = c.prepare_cached("SELECT name, reason, by, at, until FROM runners_disabled ORDER BY name")?;
    let rows = stmt.query_map([], |r| {
        let name: String = r.get(0)?;
        Ok(DisabledRunner {
            name: RunnerName::parse(&name).map_err(|e| corrupt("runner", e))?,
            reason: r.get(1)?,
            by: r.get(2)?,
            at: Millis(r.get(3)?),
            until: ms(r.get(4)?),
        })
    })?;
    rows.collect::<Result<_>>()
}

fn runner_event(c: &Connection, now: Millis, kind: &str, detail: &str) -> Result<()> {
    let row = EventRow { task: None, agent: None, epoch: None, state: None, detail: Some(detail) };
    insert_event_row(c, now, kind, row)
}

pub fn disable_runner(c: &Connection, name: &RunnerName, reason: &str, by: &str, now: Millis) -> Result<()> {
    let reason = clip(reason.trim(), 500);
    if reason.is_empty() {
        return Err(StoreError::Invalid(Invalid::new("reason", "must say why the runner is disabled")));
    }
    c.prepare_cached(
        "INSERT INTO runners_disabled (name, reason, by, at, until) VALUES (?, ?, ?, ?, NULL) \
         ON CONFLICT (name) DO UPDATE SET reason = excluded.reason, by = excluded.by, at = excluded.at, until = NULL",
    )?
    .execute(params![name.as_str(), reason, by, now.0])?;
    runner_event(c, now, "runner.disabled", &format!("{name}: {reason} (by {by})"))
}

/// Takes a runner out of service until `until`, with a `runner.limited`
/// event; an operator's disable (no `until`) is left as it is, and so is a
/// limit that lasts longer (its reason and who set it stay true).
pub fn limit_runner(
    c: &Connection,
    runner: &RunnerName,
    reason: &str,
    by: &str,
    until: Millis,
    now: Millis,
) -> Result<()> {
    let limited = c
        .prepare_cached(
            "INSERT INTO runners_disabled (name, reason, by, at, until) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET reason = excluded.reason, by = excluded.by, at = excluded.at, \
             until = excluded.until WHERE runners_disabled.until <= excluded.until",
        )?
        .execute(params![runner.as_str(), reason, by, now.0, until.0])?;
    if limited > 0 {
        runner_event(c, now, "runner.limited", &format!("{runner} until {}: {reason} ({by})", when(until)))?;
    }
    Ok(())
}

pub fn enable_runner(c: &Connection, name: &RunnerName, by: &str, now: Millis) -> Result<()> {
    let gone = c.prepare_cached("DELETE FROM runners_disabled WHERE name = ?")?.execute([name.as_str()])?;
    if gone == 0 {
        return Err(StoreError::not_found("disabled runner", name));
    }
    runner_event(c, now, "runner.enabled", &format!("{name} (by {by})"))
}

/// Up to `limit` due tasks for these runners whose capabilities are all in `caps`, in dispatch order.
pub(super) fn queued_for(
    c: &Connection,
    runners: &[&str],
    caps: &[&str],
    now: Millis,
    limit: u32,
) -> Result<Vec<Task>> {
    if runners.is_empty() || limit == 0 {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {TASK_COLS} FROM tasks t INDEXED BY tasks_queue WHERE state = 'queued' AND ready_at <= ? \
         AND attempts < max_attempts \
         AND runner IN ({}) AND NOT EXISTS (SELECT 1 FROM task_caps c WHERE c.task_id = t.id AND c.cap NOT IN ({})) \
         ORDER BY priority, seq LIMIT ?",
        placeholders(runners.len()),
        placeholders(caps.len()),
    );
    let mut args: Vec<Owned> = vec![now.0.into()];
    args.extend(runners.iter().map(|r| Owned::from(r.to_string())));
    args.extend(caps.iter().map(|c| Owned::from(c.to_string())));
    args.push(i64::from(limit).into());
    c.prepare_cached(&sql)?.query_map(params_from_iter(args), task_row)?.collect::<Result<_>>()
}
