//! SQLite's own upkeep: giving free pages back, rewriting the file so that
//! it can, checkpoints, and the file's page figures.

use crate::Result;
use rusqlite::Connection;
use std::time::Duration;

/// Whether the file gives free pages back on request (`auto_vacuum=INCREMENTAL`).
pub fn gives_space_back(c: &Connection) -> Result<bool> {
    Ok(c.query_row("PRAGMA auto_vacuum", [], |r| r.get::<_, i64>(0))? == 2)
}

/// Rewrites the whole file so that it gives free pages back from now on.
/// Returns how long every write waited for it.
pub fn rewrite_for_incremental_vacuum(c: &Connection) -> Result<Duration> {
    let began = std::time::Instant::now();
    c.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    // The copy VACUUM builds goes to a temporary file, not memory: it is as
    // large as the database.
    c.pragma_update(None, "temp_store", "FILE")?;
    let vacuumed = c.execute_batch("VACUUM");
    c.pragma_update(None, "temp_store", "MEMORY")?;
    vacuumed?;
    Ok(began.elapsed())
}

/// Gives up to `pages` free pages back to the file system; returns how many it gave.
pub fn incremental_vacuum(c: &Connection, pages: u64) -> Result<u64> {
    let free = |c: &Connection| c.query_row("PRAGMA freelist_count", [], |r| r.get::<_, i64>(0));
    let before = free(c)?;
    // The pragma frees one page per step of its statement: run it to the end.
    let mut stmt = c.prepare(&format!("PRAGMA incremental_vacuum({pages})"))?;
    let mut rows = stmt.query([])?;
    while rows.next()?.is_some() {}
    drop(rows);
    Ok(before.saturating_sub(free(c)?) as u64)
}

/// Tries a truncating checkpoint this many times, `CHECKPOINT_RETRY` apart.
const CHECKPOINT_TRIES: u32 = 20;
const CHECKPOINT_RETRY: Duration = Duration::from_millis(5);

/// Folds the write-ahead log into the file and truncates it, unless a
/// reader is in the way: then it gives up (the next checkpoint does it)
/// rather than hold up every write while the reader finishes. The
/// background checkpointer holds the log for a few milliseconds at a time,
/// so a busy log is tried again for up to a tenth of a second first.
pub fn checkpoint(c: &Connection) -> Result<()> {
    c.busy_timeout(Duration::ZERO)?;
    let mut result = Ok(0);
    for _ in 0..CHECKPOINT_TRIES {
        // The first column is 1 when the checkpoint could not finish.
        result = c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get::<_, i64>(0));
        match result {
            Ok(1) => std::thread::sleep(CHECKPOINT_RETRY),
            _ => break,
        }
    }
    c.busy_timeout(Duration::from_secs(10))?;
    result?;
    Ok(())
}

/// The file's page figures, for `DbStats`.
pub fn pages(c: &Connection, stats: &mut crate::DbStats) -> Result<()> {
    let pragma = |name: &str| c.query_row(&format!("PRAGMA {name}"), [], |r| r.get::<_, i64>(0));
    stats.page_size = pragma("page_size")? as u64;
    stats.pages = pragma("page_count")? as u64;
    stats.free_pages = pragma("freelist_count")? as u64;
    stats.auto_vacuum = match pragma("auto_vacuum")? {
        1 => "full",
        2 => "incremental",
        _ => "none",
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_incremental_vacuum_step_gives_back_up_to_its_page_count() {
        let c = Connection::open_in_memory().unwrap();
        c.pragma_update(None, "auto_vacuum", "INCREMENTAL").unwrap();
        c.execute_batch("CREATE TABLE blobs (data BLOB); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 400) INSERT INTO blobs SELECT zeroblob(8000) FROM n; DELETE FROM blobs;").unwrap();
        let free: i64 = c.query_row("PRAGMA freelist_count", [], |r| r.get(0)).unwrap();
        assert!(free > 500, "the delete freed pages: {free}");
        assert_eq!(incremental_vacuum(&c, 100).unwrap(), 100, "a step gives back as many pages as asked");
        assert_eq!(incremental_vacuum(&c, 100_000).unwrap() as i64, free - 100, "and no more than there are");
    }
}
