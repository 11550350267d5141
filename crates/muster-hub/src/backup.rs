//! Backups: on demand and on a schedule, verified, the newest N kept.

use crate::Hub;
use muster_core::Millis;
use muster_proto::api::BackupView;
use muster_proto::timestamp;
use muster_store::{NewEvent, StoreError};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const PREFIX: &str = "muster-";
const SUFFIX: &str = ".db";

/// `muster-20261121T183600123Z.db`: sorts by time.
fn file_name(now: Millis) -> String {
    let stamp = timestamp(now).replace(['-', ':', '.'], "");
    format!("{PREFIX}{stamp}{SUFFIX}")
}

fn modified_ms(meta: &std::fs::Metadata) -> Millis {
    let t = meta.modified().unwrap_or(UNIX_EPOCH);
    Millis(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as i64)
}

/// Backups in `dir`, newest first.
pub fn list(dir: &Path) -> std::io::Result<Vec<BackupView>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with(PREFIX) && name.ends_with(SUFFIX)) {
            continue;
        }
        let meta = entry.metadata()?;
        out.push(BackupView {
            file: name,
            path: entry.path().display().to_string(),
            bytes: meta.len(),
            created_at: timestamp(modified_ms(&meta)),
            tasks: None,
        });
    }
    out.sort_by(|a, b| b.file.cmp(&a.file));
    Ok(out)
}

impl Hub {
    /// Makes and verifies a backup now, then deletes all but the newest
    /// `backup_keep`. Recorded on the timeline either way.
    pub async fn backup_now(&self) -> Result<BackupView, StoreError> {
        let _one = self.shared.backing_up.lock().await;
        let config = self.config();
        let dir = config.backup_dir.clone();
        let result = self.make_backup(&dir).await;
        let event = match &result {
            Ok(b) => NewEvent {
                kind: "backup.created",
                detail: Some(format!("{} ({} bytes, {} tasks)", b.file, b.bytes, b.tasks.unwrap_or(0))),
                ..Default::default()
            },
            Err(e) => NewEvent { kind: "backup.failed", detail: Some(e.to_string()), ..Default::default() },
        };
        if let Err(e) = self.shared.store.record_event(event, self.now()).await {
            tracing::error!(error = %e, "cannot record the backup on the timeline");
        }
        match &result {
            Ok(b) => {
                tracing::info!(file = %b.path, bytes = b.bytes, "backup created and verified");
                self.prune_backups(&dir, self.runtime().backup_keep);
            }
            Err(e) => tracing::error!(error = %e, "backup failed"),
        }
        result
    }

    async fn make_backup(&self, dir: &Path) -> Result<BackupView, StoreError> {
        std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
            .create(dir)
            .map_err(|e| StoreError::Database(format!("cannot create {}: {e}", dir.display())))?;
        let now = self.now();
        let dest = dir.join(file_name(now));
        let info = self.shared.store.maintenance().backup(&dest).await?;
        Ok(BackupView {
            file: dest.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default(),
            path: info.path.display().to_string(),
            bytes: info.bytes,
            created_at: timestamp(now),
            tasks: Some(info.tasks),
        })
    }

    fn prune_backups(&self, dir: &Path, keep: usize) {
        match list(dir) {
            Ok(all) => {
                for old in all.into_iter().skip(keep.max(1)) {
                    match std::fs::remove_file(&old.path) {
                        Ok(()) => tracing::info!(file = %old.path, "old backup removed"),
                        Err(e) => tracing::warn!(file = %old.path, error = %e, "cannot remove an old backup"),
                    }
                }
            }
            Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot list backups"),
        }
    }

    /// Age of the newest backup, if any.
    pub(crate) fn last_backup_age(&self) -> Option<Duration> {
        let newest = list(&self.config().backup_dir).ok()?.into_iter().next()?;
        let meta = std::fs::metadata(&newest.path).ok()?;
        SystemTime::now().duration_since(meta.modified().ok()?).ok()
    }
}

/// Backs up every `backup_interval`, counting from the newest backup on
/// disk, so a restart does not reset the schedule.
pub(crate) fn worker() -> crate::workers::Scheduled {
    crate::workers::Scheduled::new(
        "backups",
        "backs the database up every backup_interval",
        |r| r.backup_interval,
        |hub| Box::pin(async move { hub.last_backup_age() }),
        |hub| Box::pin(async move { hub.backup_now().await.map(drop).map_err(|e| e.to_string()) }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_names_sort_by_time() {
        let a = file_name(Millis(1_763_700_000_000));
        let b = file_name(Millis(1_763_700_000_001));
        assert_eq!(a, "muster-20251121T044000000Z.db");
        assert!(a < b);
    }
}
