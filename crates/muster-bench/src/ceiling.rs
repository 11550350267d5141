//! `ceiling`: what the disk and SQLite allow for exactly what the hub
//! writes, with no hub in the way.

use crate::Plan;
use crate::results::CeilingRow;
use anyhow::Context;
use std::path::Path;

pub async fn run(dir: &Path, plan: &Plan) -> anyhow::Result<CeilingRow> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("ceiling.db");
    let (n, batch) = (plan.ceiling_tasks, plan.ceiling_batch);
    let cpu = crate::host::cpu_ticks();
    let took = tokio::task::spawn_blocking(move || muster_store::sqlite::ceiling::task_lives(&path, n, batch))
        .await
        .context("the ceiling run panicked")??;
    Ok(CeilingRow {
        tasks: n,
        batch: u64::from(batch),
        lives_per_sec: n as f64 / took.as_secs_f64(),
        seconds: took.as_secs_f64(),
        steal_pct: crate::host::steal_since(cpu),
    })
}
