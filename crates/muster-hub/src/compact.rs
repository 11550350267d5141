//! Retention and compaction: on a schedule (`compact_interval`) and on
//! demand (`POST /api/v1/admin/compact`), finished work past its retention
//! is pruned and the freed space given back; `GET /api/v1/admin/db` says
//! how big the database is and when it was last backed up and compacted.

use crate::Hub;
use crate::error::ApiError;
use muster_proto::api::{CompactView, CompactionView, DbView, RetentionView};
use muster_proto::timestamp;
use std::time::Duration;

/// Applies retention and compacts the file every `compact_interval`.
pub(crate) fn worker() -> crate::workers::Scheduled {
    crate::workers::Scheduled::new(
        "compaction",
        "prunes finished work past its retention and gives the space back every compact_interval",
        |r| r.compact_interval,
        |hub| Box::pin(async move { hub.last_compaction_age().await }),
        |hub| {
            Box::pin(async move {
                // One hub compacts for all of them.
                if !hub.lead(muster_store::Duty::Upkeep).await.map_err(|e| e.to_string())? {
                    return Ok(());
                }
                hub.compact_now("schedule", false).await.map(drop).map_err(|e| e.to_string())
            })
        },
    )
}

impl Hub {
    /// Applies the retention in force and compacts the file now. One at a
    /// time: a second request while one runs is a conflict. Only an
    /// operator's request (`rewrite`) rewrites a file that cannot give space
    /// back step by step: that blocks writes while it runs.
    pub(crate) async fn compact_now(&self, by: &str, rewrite: bool) -> Result<CompactView, ApiError> {
        let Ok(_one) = self.shared.compacting.try_lock() else {
            return Err(ApiError::Conflict { field: None, detail: "a compaction is already running".into() });
        };
        let retention = self.runtime().retention;
        let began = std::time::Instant::now();
        tracing::info!(by, ?retention, "compaction started");
        let report = match self.shared.store.maintenance().compact(retention, rewrite, self.now()).await {
            Ok(report) => report,
            Err(e) => {
                tracing::error!(error = %e, by, "compaction failed");
                let event = muster_store::NewEvent {
                    kind: "db.compaction_failed",
                    detail: Some(e.to_string()),
                    ..Default::default()
                };
                if let Err(e) = self.shared.store.record_event(event, self.now()).await {
                    tracing::error!(error = %e, "cannot record the failed compaction");
                }
                return Err(e.into());
            }
        };
        let took_ms = began.elapsed().as_millis() as u64;
        let summary = report.summary();
        tracing::info!(by, took_ms, summary = %summary, "compaction finished");
        Ok(CompactView {
            tasks_pruned: report.tasks_pruned,
            outputs_pruned: report.outputs_pruned,
            output_bytes_pruned: report.output_bytes_pruned,
            events_pruned: report.events_pruned,
            bytes_before: report.bytes_before,
            bytes_after: report.bytes_after,
            rewritten: report.rewritten,
            needs_rewrite: report.needs_rewrite,
            took_ms,
            summary,
        })
    }

    async fn last_compaction_age(&self) -> Option<Duration> {
        let last = self.shared.store.maintenance().db_stats().await.ok()?.last_compaction?;
        Some(self.now().since(last.at))
    }

    pub(crate) async fn db_view(&self) -> Result<DbView, ApiError> {
        let stats = self.shared.store.maintenance().db_stats().await?;
        let live = self.runtime();
        let setting = |key: &str| live.get(key).unwrap_or_default();
        let last_backup = crate::backup::list(&self.config().backup_dir).ok().and_then(|b| b.into_iter().next());
        Ok(DbView {
            backend: stats.backend.to_owned(),
            path: stats.path.as_ref().map(|p| p.display().to_string()),
            bytes: stats.bytes,
            wal_bytes: stats.wal_bytes,
            page_size: stats.page_size,
            pages: stats.pages,
            free_pages: stats.free_pages,
            free_ratio: stats.free_ratio(),
            auto_vacuum: stats.auto_vacuum.to_owned(),
            tasks: stats.tasks,
            events: stats.events,
            output_bytes: stats.output_bytes,
            last_backup,
            last_compaction: stats.last_compaction.map(|c| CompactionView { at: timestamp(c.at), summary: c.summary }),
            retention: RetentionView {
                tasks: setting("retention.tasks"),
                output: setting("retention.output"),
                events: setting("retention.events"),
            },
            compact_interval: setting("compact_interval"),
        })
    }
}
