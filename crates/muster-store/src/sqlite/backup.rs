//! Backups and restores of the SQLite database.
//!
//! A backup is `VACUUM INTO` from a read connection: SQLite writes a
//! consistent, compacted snapshot of the database as of one read transaction
//! while the hub keeps writing; copying the file of a WAL database would not
//! be consistent. Every copy is verified before it counts: SQLite's own
//! integrity check, and a schema this build knows.
//!
//! A restore happens with the hub stopped: the verified file is copied beside
//! the database, synced, and renamed over it, so a crash leaves either the old
//! database or the new one, never half of each.

use crate::sqlite::schema;
use crate::{BackupInfo, Result, StoreError};
use rusqlite::{Connection, OpenFlags};
use std::path::{Path, PathBuf};

pub fn backup(conn: &Connection, dest: &Path) -> Result<BackupInfo> {
    if dest.exists() {
        return Err(StoreError::Conflict(format!("{} already exists", dest.display())));
    }
    let partial = dest.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    let target =
        partial.to_str().ok_or_else(|| StoreError::Invalid(muster_core::Invalid::new("path", "is not UTF-8")))?;
    conn.execute("VACUUM INTO ?", [target])?;
    let info = match verify(&partial) {
        Ok(info) => info,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    // A backup holds everything the database does: its owner's alone, whatever the umask.
    std::fs::set_permissions(&partial, <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600))
        .map_err(io("make the backup private"))?;
    std::fs::File::open(&partial).and_then(|f| f.sync_all()).map_err(io("sync the backup"))?;
    std::fs::rename(&partial, dest).map_err(io("name the backup"))?;
    sync_dir(dest)?;
    Ok(BackupInfo { path: dest.to_owned(), ..info })
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> StoreError {
    move |e| StoreError::Database(format!("cannot {what}: {e}"))
}

fn sync_dir(path: &Path) -> Result<()> {
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io("sync the directory"))?;
    }
    Ok(())
}

/// Checks that `path` is an intact Muster database this build can open.
pub fn verify(path: &Path) -> Result<BackupInfo> {
    let bad =
        |why: String| StoreError::Invalid(muster_core::Invalid::new("file", format!("{}: {why}", path.display())));
    let meta = std::fs::metadata(path).map_err(|e| bad(format!("cannot read it ({e})")))?;
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| bad(format!("cannot open it as a database ({e})")))?;
    let check: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| bad(format!("is not a readable SQLite database ({e})")))?;
    if check != ["ok"] {
        return Err(bad(format!("fails the integrity check: {}", check.join("; "))));
    }
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| bad(format!("has no schema version ({e})")))?;
    if version < 1 || version as usize > schema::CURRENT {
        return Err(bad(format!("has schema version {version}; this build reads 1 to {}", schema::CURRENT)));
    }
    let tasks: i64 = conn
        .query_row("SELECT COUNT(*) FROM tasks", [], |r| r.get(0))
        .map_err(|e| bad(format!("is not a Muster database ({e})")))?;
    Ok(BackupInfo { path: path.to_owned(), bytes: meta.len(), tasks: tasks as u64 })
}

/// Moves everything in the WAL into the database file, or says why not.
fn fold_wal(db: &Path) -> Result<()> {
    let conn = Connection::open(db).map_err(|e| StoreError::Database(format!("cannot open {}: {e}", db.display())))?;
    conn.busy_timeout(std::time::Duration::from_millis(500))?;
    let busy: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
    if busy != 0 {
        return Err(StoreError::Conflict(format!(
            "{} is in use (its WAL cannot be folded in); stop the hub first",
            db.display()
        )));
    }
    Ok(())
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct Restored {
    pub from: BackupInfo,
    /// Where the replaced database was kept, if there was one.
    pub previous: Option<PathBuf>,
}

/// Puts the backup `from` in place of the database at `db`. The hub must be
/// stopped. A copy of the replaced database is kept beside it as
/// `<db>.before-restore-<stamp>`.
pub fn restore(from: &Path, db: &Path, stamp: &str) -> Result<Restored> {
    let info = verify(from)?;
    let incoming = db.with_extension("restoring");
    std::fs::copy(from, &incoming).map_err(io("copy the backup"))?;
    std::fs::File::open(&incoming).and_then(|f| f.sync_all()).map_err(io("sync the copy"))?;
    // The copy must still verify where it landed before anything is replaced.
    if let Err(e) = verify(&incoming) {
        let _ = std::fs::remove_file(&incoming);
        return Err(e);
    }
    // From here on, at every instant `db` is either the old database, whole,
    // or the restored one: the old one is copied aside, never moved, and the
    // new one arrives by a single rename over it.
    let mut previous = None;
    if db.exists() {
        // A database in use must not be replaced; a broken one is what a
        // restore is for, so failing to fold its WAL is no reason to stop.
        if let Err(e @ StoreError::Conflict(_)) = fold_wal(db) {
            let _ = std::fs::remove_file(&incoming);
            return Err(e);
        }
        let kept = PathBuf::from(format!("{}.before-restore-{stamp}", db.display()));
        for suffix in ["", "-wal"] {
            let (from, to) = (format!("{}{suffix}", db.display()), format!("{}{suffix}", kept.display()));
            if Path::new(&from).exists() {
                std::fs::copy(&from, &to).map_err(io("keep a copy of the old database"))?;
                std::fs::File::open(&to).and_then(|f| f.sync_all()).map_err(io("sync the kept copy"))?;
            }
        }
        previous = Some(kept);
    }
    // The old WAL is folded in and empty; a stale one must not be replayed
    // into the restored file.
    for suffix in ["-wal", "-shm"] {
        let side = PathBuf::from(format!("{}{suffix}", db.display()));
        if side.exists() {
            std::fs::remove_file(&side).map_err(io("remove the old database's WAL"))?;
        }
    }
    std::fs::rename(&incoming, db).map_err(io("put the backup in place"))?;
    sync_dir(db)?;
    Ok(Restored { from: info, previous })
}
