//! A run's output, in order, compressed once it is large enough.

use super::*;

/// Refuses unless `agent` holds the running lease under `epoch`; the task as it is.
pub(super) fn running_attempt(
    c: &Connection,
    agent: &AgentName,
    id: &TaskId,
    epoch: Epoch,
    now: Millis,
) -> Result<Task> {
    let mut task = load_task(c, id)?;
    // Output from a run whose accept was lost: the run is real. Keep the
    // lease's current deadline; the agent's next heartbeat renews it.
    let deadline = task.lease.as_ref().map_or(Duration::ZERO, |l| l.expires_at.since(now));
    if adopt_lost_accept(c, agent, &task, epoch, now, deadline)? {
        task = load_task(c, id)?;
    }
    let held = task.lease.as_ref().is_some_and(|l| l.is_held_by(agent, epoch)) && task.state == TaskState::Running;
    if !held {
        return Err(refused(muster_core::Refused::StaleEpoch { current: task.epoch, got: epoch }));
    }
    Ok(task)
}

pub fn mark_output_truncated(c: &Connection, agent: &AgentName, id: &TaskId, epoch: Epoch, now: Millis) -> Result<()> {
    running_attempt(c, agent, id, epoch, now)?;
    c.prepare_cached("UPDATE attempts SET output_truncated = 1 WHERE task_id = ? AND epoch = ?")?
        .execute(params![id.as_str(), epoch.0 as i64])?;
    Ok(())
}

pub fn append_output(
    c: &Connection,
    agent: &AgentName,
    id: &TaskId,
    epoch: Epoch,
    chunks: &[OutputChunk],
    now: Millis,
    cap: u64,
) -> Result<AppendOutput> {
    running_attempt(c, agent, id, epoch, now)?;
    let (mut stored, mut truncated): (u64, bool) = c
        .prepare_cached("SELECT output_bytes, output_truncated FROM attempts WHERE task_id = ? AND epoch = ?")?
        .query_row(params![id.as_str(), epoch.0 as i64], |r| Ok((r.get::<_, i64>(0)? as u64, r.get(1)?)))?;
    let mut insert =
        c.prepare_cached("INSERT INTO output (task_id, epoch, stream, at, data, encoding) VALUES (?, ?, ?, ?, ?, ?)")?;
    for chunk in chunks {
        if truncated {
            break;
        }
        let room = cap.saturating_sub(stored) as usize;
        let take = chunk.data.len().min(room);
        if take > 0 {
            let (data, encoding) = encode(&chunk.data[..take]);
            insert.execute(params![id.as_str(), epoch.0 as i64, chunk.stream.as_str(), now.0, &data[..], encoding])?;
            stored += take as u64;
        }
        if take < chunk.data.len() {
            truncated = true;
        }
    }
    c.prepare_cached("UPDATE attempts SET output_bytes = ?, output_truncated = ? WHERE task_id = ? AND epoch = ?")?
        .execute(params![stored as i64, truncated, id.as_str(), epoch.0 as i64])?;
    Ok(AppendOutput { stored_bytes: stored, truncated })
}

/// Chunks at least this big are compressed at rest, when that makes them smaller.
const COMPRESS_FROM: usize = 512;
const RAW: i64 = 0;
const DEFLATE: i64 = 1;

/// Output as stored: deflated when that pays.
fn encode(data: &[u8]) -> (std::borrow::Cow<'_, [u8]>, i64) {
    use std::io::Write;
    if data.len() >= COMPRESS_FROM {
        let mut z = flate2::write::DeflateEncoder::new(Vec::with_capacity(data.len() / 2), flate2::Compression::fast());
        if z.write_all(data).is_ok()
            && let Ok(packed) = z.finish()
            && packed.len() < data.len()
        {
            return (std::borrow::Cow::Owned(packed), DEFLATE);
        }
    }
    (std::borrow::Cow::Borrowed(data), RAW)
}

fn decode(data: Vec<u8>, encoding: i64) -> std::result::Result<Vec<u8>, String> {
    use std::io::Read;
    match encoding {
        RAW => Ok(data),
        DEFLATE => {
            let mut out = Vec::with_capacity(data.len() * 3);
            flate2::read::DeflateDecoder::new(&data[..]).read_to_end(&mut out).map_err(|e| e.to_string())?;
            Ok(out)
        }
        other => Err(format!("unknown encoding {other}")),
    }
}

pub fn read_output(c: &Connection, id: &TaskId, f: &OutputFilter) -> Result<Vec<OutputRecord>> {
    let limit = f.limit.clamp(1, 10_000) as i64;
    let mut stmt = c.prepare_cached(
        "SELECT o.seq, a.number, o.stream, o.at, o.data, o.encoding FROM output o \
         JOIN attempts a ON a.task_id = o.task_id AND a.epoch = o.epoch \
         WHERE o.task_id = ? AND o.seq > ? AND (CAST(? AS BIGINT) IS NULL OR a.number = ?) ORDER BY o.seq LIMIT ?",
    )?;
    let rows = stmt.query_map(params![id.as_str(), f.after, f.attempt, f.attempt, limit], |r| {
        let stream: String = r.get(2)?;
        Ok(OutputRecord {
            seq: r.get(0)?,
            attempt: r.get(1)?,
            stream: Stream::parse(&stream).ok_or_else(|| corrupt("stream", &stream))?,
            at: Millis(r.get(3)?),
            data: decode(r.get(4)?, r.get(5)?).map_err(|e| corrupt("output", e))?,
        })
    })?;
    rows.collect::<Result<_>>()
}
