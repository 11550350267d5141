//! Steps of a run and its live status.

use super::*;

pub fn append_steps(
    c: &Connection,
    agent: &AgentName,
    id: &TaskId,
    epoch: Epoch,
    steps: Vec<NewStep>,
    now: Millis,
) -> Result<()> {
    let task = running_attempt(c, agent, id, epoch, now)?;
    let Some(last) = steps.last() else { return Ok(()) };
    let latest = clip(&last.line(), LATEST_STEP_CHARS);
    let stored: u64 = c
        .prepare_cached("SELECT steps FROM attempts WHERE task_id = ? AND epoch = ?")?
        .query_row(params![id.as_str(), epoch.0 as i64], |r| r.get::<_, i64>(0))? as u64;
    let mut insert = c.prepare_cached(
        "INSERT INTO steps (task_id, epoch, seq, at, kind, name, summary, is_error, duration_ms) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )?;
    let mut seq = stored;
    for step in &steps {
        seq += 1;
        if seq > MAX_STEPS {
            continue;
        }
        insert.execute(params![
            id.as_str(),
            epoch.0 as i64,
            seq as i64,
            now.0,
            step.kind.as_str(),
            step.name.as_deref().map(|n| clip(n, 200)),
            clip(&step.summary, MAX_STEP_SUMMARY),
            step.is_error,
            step.duration_ms.map(|d| d.min(i64::MAX as u64) as i64),
        ])?;
    }
    c.prepare_cached("UPDATE attempts SET steps = ?, latest_step = ? WHERE task_id = ? AND epoch = ?")?
        .execute(params![seq as i64, latest, id.as_str(), epoch.0 as i64])?;
    // Past the limit the latest step still shows, but the timeline is spared.
    if stored >= MAX_STEPS {
        return Ok(());
    }
    task_event(c, now, "task.step", &task, Some(&latest))
}

pub fn set_live(
    c: &Connection,
    agent: &AgentName,
    id: &TaskId,
    epoch: Epoch,
    status: muster_core::Live,
    detail: Option<&str>,
    now: Millis,
) -> Result<()> {
    let task = running_attempt(c, agent, id, epoch, now)?;
    let status = status.as_str();
    let detail = detail.map(|d| clip(d, 300));
    c.prepare_cached("UPDATE attempts SET live = ?, live_detail = ? WHERE task_id = ? AND epoch = ?")?
        .execute(params![status, detail, id.as_str(), epoch.0 as i64])?;
    let line = match &detail {
        Some(d) => format!("{status}: {d}"),
        None => status.to_owned(),
    };
    task_event(c, now, "task.live", &task, Some(&line))
}

pub fn steps(c: &Connection, id: &TaskId, attempt: Option<u32>) -> Result<Vec<StepRecord>> {
    let mut stmt = c.prepare_cached(
        "SELECT a.number, s.seq, s.at, s.kind, s.name, s.summary, s.is_error, s.duration_ms FROM steps s \
         JOIN attempts a ON a.task_id = s.task_id AND a.epoch = s.epoch \
         WHERE s.task_id = ? AND (CAST(? AS BIGINT) IS NULL OR a.number = ?) ORDER BY a.number, s.seq",
    )?;
    let rows = stmt.query_map(params![id.as_str(), attempt, attempt], |r| {
        let kind: String = r.get(3)?;
        Ok(StepRecord {
            attempt: r.get(0)?,
            seq: r.get::<_, i64>(1)? as u64,
            at: Millis(r.get(2)?),
            step: NewStep {
                kind: StepKind::parse(&kind).ok_or_else(|| corrupt("step kind", &kind))?,
                name: r.get(4)?,
                summary: r.get(5)?,
                is_error: r.get(6)?,
                duration_ms: r.get::<_, Option<i64>>(7)?.map(|d| d as u64),
            },
        })
    })?;
    rows.collect::<Result<_>>()
}
