//! The write ceiling: the rows and changes of a task's whole life (created,
//! claimed, started, finished, with their events and attempt), written
//! straight into a fresh database with the hub's own settings (WAL,
//! `synchronous=FULL`, the store's VFS), many lives to a transaction. No
//! hub, no sockets, no writer queue: what this reaches is the most the disk
//! and SQLite allow for exactly what the hub writes, and the benchmark
//! reports the hub as a fraction of it.

use super::{configure, schema};
use crate::{Announce, NewAgent, NewToken, Result, RunDetails, Scope, StoreError};
use crate::{ops, sql};
use muster_core::backoff::Retry;
use muster_core::breaker::Policy;
use muster_core::{AgentName, Millis, RunOutcome, RunnerName, TaskId, TaskSpec, TokenId};
use std::path::Path;
use std::time::{Duration, Instant};

/// Writes `n` task lives into a new database at `path`, `batch` lives
/// (at most 1024) per transaction; returns how long the writing took.
pub fn task_lives(path: &Path, n: u64, batch: u32) -> Result<Duration> {
    let batch = batch.clamp(1, 1024);
    let mut conn = super::connect(path, rusqlite::OpenFlags::default())?;
    configure(&conn)?;
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    let _: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    schema::migrate(&mut conn)?;
    let raw = conn;
    let conn = sql::Connection::Sqlite(&raw);
    let runner = RunnerName::parse("bench").map_err(StoreError::Invalid)?;
    let name = AgentName::parse("ceiling").map_err(StoreError::Invalid)?;
    let now = Millis(1_700_000_000_000);
    let token = NewToken {
        id: TokenId::parse("tk_000000000000").map_err(StoreError::Invalid)?,
        name: "agent:ceiling".into(),
        scope: Scope::Agent,
        agent: Some(name.clone()),
        hash: "0".repeat(64),
    };
    ops::register_agent(&conn, &NewAgent { name: name.clone(), capabilities: Vec::new() }, &token, now)?;
    let hello =
        Announce { runners: vec![runner.clone()], slots: batch, version: "ceiling".into(), ..Default::default() };
    ops::agent_connected(&conn, &name, &hello, None, now)?;
    let mut spec = TaskSpec::new("noop", runner, Duration::from_secs(1800), 1);
    spec.metadata = Some(r#"{"i":0}"#.into());
    let (accept, lease, backoff) = (Duration::from_secs(60), Duration::from_secs(30), Duration::from_secs(2));
    let began = Instant::now();
    let mut written = 0u64;
    while written < n {
        let count = u64::from(batch).min(n - written);
        conn.execute_batch("BEGIN IMMEDIATE")?;
        for i in 0..count {
            let id = TaskId::from_parts(now.0, u128::from(written + i));
            ops::create_task(&conn, id, spec.clone(), now)?;
        }
        for task in ops::claim_tasks(&conn, &name, now, accept, Policy::default())? {
            ops::start_task(&conn, &name, &task.id, task.epoch, now, lease)?;
            let outcome = RunOutcome::Succeeded { exit_code: 0 };
            ops::finish_task(
                &conn,
                &name,
                &task.id,
                task.epoch,
                &outcome,
                &RunDetails::default(),
                now,
                Retry::fixed(backoff),
                Policy::default(),
            )?;
        }
        conn.execute_batch("COMMIT")?;
        written += count;
    }
    Ok(began.elapsed())
}
