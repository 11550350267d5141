//! Retention, compaction and checkpoints: SQLite's upkeep, not domain rules.

use super::*;

/// What one pruning change removed.
#[derive(Debug, Default)]
pub struct Pruned {
    pub tasks: u64,
    pub outputs: u64,
    pub output_bytes: u64,
    pub events: u64,
    /// A limit was reached: there may be more to prune.
    pub more: bool,
}

const FINISHED: &str = "state IN ('succeeded', 'failed', 'cancelled', 'skipped')";

fn cutoff(now: Millis, age: Option<Duration>) -> Option<i64> {
    age.map(|a| now.0.saturating_sub(a.as_millis().min(i64::MAX as u128) as i64))
}

pub(super) fn ids(c: &Connection, sql: &str, from: i64, before: i64, limit: usize) -> Result<Vec<String>> {
    let mut stmt = c.prepare_cached(sql)?;
    let rows = stmt.query_map(params![from, before, limit as i64], |r| r.get(0))?;
    rows.collect::<Result<_>>()
}

/// Output bytes one pruning change removes at most, beside its task count.
const PRUNE_BYTES: u64 = 64 << 20;

/// Finished tasks before this instant have had their output pruned: later
/// passes start there instead of walking past them again.
const OUTPUT_PRUNED_BEFORE: &str = "compaction.output_pruned_before";

fn output_bytes_of(c: &Connection, task: &str) -> Result<u64> {
    let n: i64 = c
        .prepare_cached("SELECT COALESCE(SUM(length(data)), 0) FROM output WHERE task_id = ?")?
        .query_row([task], |r| r.get(0))?;
    Ok(n as u64)
}

/// Removes up to `limit` of each kind of expired record: finished tasks with
/// everything of theirs, the output of finished tasks, and the oldest events
/// (a prefix of the sequence, never the newest event).
pub fn prune_batch(c: &Connection, r: &crate::Retention, now: Millis, limit: usize) -> Result<Pruned> {
    let mut p = Pruned::default();
    if let Some(before) = cutoff(now, r.tasks) {
        let expired = ids(
            c,
            &format!(
                "SELECT id FROM tasks WHERE finished_at >= ?1 AND finished_at < ?2 AND {FINISHED} \
                 ORDER BY finished_at LIMIT ?3"
            ),
            i64::MIN,
            before,
            limit,
        )?;
        p.more |= expired.len() == limit;
        let mut bytes = 0;
        for id in &expired {
            if bytes >= PRUNE_BYTES {
                p.more = true;
                break;
            }
            bytes += output_bytes_of(c, id)?;
            for table in [
                "output",
                "steps",
                "attempts",
                "task_caps",
                "task_deps",
                "locks",
                "lock_waits",
                "task_files",
                "check_results",
                "decisions",
            ] {
                c.prepare_cached(&format!("DELETE FROM {table} WHERE task_id = ?"))?.execute([id])?;
            }
            // Only its own row: a follow-up it created that still lives keeps
            // its tree (root, depth, budget) until it is pruned itself.
            c.prepare_cached("DELETE FROM followups WHERE child = ?")?.execute([id])?;
            c.prepare_cached("DELETE FROM conflicts WHERE winner = ?1 OR loser = ?1")?.execute([id])?;
            c.prepare_cached("DELETE FROM task_deps WHERE dep_id = ?")?.execute([id])?;
            c.prepare_cached("DELETE FROM tasks WHERE id = ?")?.execute([id])?;
            p.tasks += 1;
        }
        p.output_bytes += bytes;
    }
    if let Some(before) = cutoff(now, r.output) {
        let from: i64 = c
            .query_row("SELECT value FROM settings WHERE key = ?", [OUTPUT_PRUNED_BEFORE], |r| r.get::<_, String>(0))
            .optional()?
            .and_then(|v| v.parse().ok())
            .unwrap_or(i64::MIN);
        let expired = ids(
            c,
            &format!(
                "SELECT t.id FROM tasks t WHERE t.finished_at >= ?1 AND t.finished_at < ?2 AND t.{FINISHED} \
                 AND EXISTS (SELECT 1 FROM output o WHERE o.task_id = t.id) ORDER BY t.finished_at LIMIT ?3"
            ),
            from,
            before,
            limit,
        )?;
        let mut more = expired.len() == limit;
        let mut bytes = 0;
        for id in &expired {
            if bytes >= PRUNE_BYTES {
                more = true;
                break;
            }
            bytes += output_bytes_of(c, id)?;
            c.prepare_cached("DELETE FROM output WHERE task_id = ?")?.execute([id])?;
            c.prepare_cached("UPDATE attempts SET output_pruned = 1 WHERE task_id = ? AND output_bytes > 0")?
                .execute([id])?;
            p.outputs += 1;
        }
        p.output_bytes += bytes;
        p.more |= more;
        if !more && before > from {
            put_setting(c, OUTPUT_PRUNED_BEFORE, &before.to_string(), now)?;
        }
    }
    if let Some(before) = cutoff(now, r.events) {
        // The oldest events, up to the first one that is not expired.
        let mut stmt = c.prepare_cached(
            "SELECT seq, at FROM events WHERE seq < (SELECT MAX(seq) FROM events) ORDER BY seq LIMIT ?",
        )?;
        let rows: Vec<(i64, i64)> =
            stmt.query_map([limit as i64], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_>>()?;
        let expired: Vec<i64> = rows.iter().take_while(|(_, at)| *at < before).map(|(seq, _)| *seq).collect();
        if let Some(last) = expired.last() {
            c.prepare_cached("DELETE FROM events WHERE seq <= ?")?.execute([last])?;
        }
        p.events = expired.len() as u64;
        p.more |= expired.len() == limit;
        // Messages are kept as long as the timeline, whether delivered or not.
        let gone = c
            .prepare_cached(
                "DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE created_at < ? ORDER BY id LIMIT ?)",
            )?
            .execute(params![before, limit as i64])?;
        p.more |= gone == limit;
        // Hubs that stopped as long ago are no one's history either.
        c.prepare_cached("DELETE FROM hubs WHERE stopped_at IS NOT NULL AND stopped_at < ?")?.execute([before])?;
    }
    Ok(p)
}

/// Moves every live lease's expiry `by` later, rounded up to the millisecond:
/// however short the wait, a heartbeat may have waited through it.
pub fn extend_leases(c: &Connection, by: Duration) -> Result<()> {
    let ms = by.as_nanos().div_ceil(1_000_000).min(i64::MAX as u128) as i64;
    c.execute("UPDATE tasks SET lease_expires_at = lease_expires_at + ? WHERE lease_expires_at IS NOT NULL", [ms])?;
    Ok(())
}

const LAST_COMPACTION_AT: &str = "compaction.last_at";
const LAST_COMPACTION: &str = "compaction.last";

pub fn record_compaction(c: &Connection, report: &crate::CompactReport, now: Millis) -> Result<()> {
    let summary = report.summary();
    put_setting(c, LAST_COMPACTION_AT, &now.0.to_string(), now)?;
    put_setting(c, LAST_COMPACTION, &summary, now)?;
    agent_event(c, now, "db.compacted", None, None, Some(&summary))
}

/// What `DbStats` says of Muster's tables; the backend adds its own figures.
pub fn db_stats(c: &Connection) -> Result<crate::DbStats> {
    let count = |sql: &str| c.query_row(sql, [], |r| r.get::<_, i64>(0));
    let setting = |key: &str| -> Result<Option<String>> {
        c.query_row("SELECT value FROM settings WHERE key = ?", [key], |r| r.get(0)).optional()
    };
    let last_compaction = match (setting(LAST_COMPACTION_AT)?, setting(LAST_COMPACTION)?) {
        (Some(at), Some(summary)) => at.parse().ok().map(|at| crate::LastCompaction { at: Millis(at), summary }),
        _ => None,
    };
    Ok(crate::DbStats {
        backend: match c.dialect() {
            crate::sql::Dialect::Sqlite => "sqlite",
            crate::sql::Dialect::Postgres => "postgres",
        },
        tasks: count("SELECT COUNT(*) FROM tasks")? as u64,
        events: count("SELECT COUNT(*) FROM events")? as u64,
        output_bytes: count("SELECT COALESCE(SUM(output_bytes), 0) FROM attempts WHERE output_pruned = 0")? as u64,
        last_compaction,
        ..crate::DbStats::default()
    })
}
