//! `muster migrate`: a SQLite hub's whole history copied into an empty
//! PostgreSQL database, in one transaction, then counted and checked.

use crate::sql::{Connection, Owned, params_from_iter, pg::PgConn};
use crate::{CheckReport, Result, StoreError};
use muster_core::Millis;
use std::path::Path;

/// Rows inserted per statement.
const ROWS_PER_INSERT: usize = 200;

/// What a migration copied and found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrateReport {
    /// Rows per table, in the order copied; the same on both sides.
    pub tables: Vec<(String, u64)>,
    /// `muster check` on the copy.
    pub check: CheckReport,
}

/// Copies the SQLite database at `from` (whose hub must be stopped) into
/// the PostgreSQL database at `to`, which must hold no Muster data yet.
/// Blocks: call it off the async runtime's threads.
pub fn sqlite_to_postgres(from: &Path, to: &str, now: Millis) -> Result<MigrateReport> {
    if !from.exists() {
        return Err(StoreError::not_found("database", from.display()));
    }
    // Brings the file to this build's schema, as a hub start would.
    drop(crate::sqlite::SqliteStore::open(from, crate::Limits::default())?);
    let source = rusqlite::Connection::open_with_flags(from, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let src = Connection::Sqlite(&source);
    let client = postgres::Client::connect(to, postgres::NoTls)
        .map_err(|e| StoreError::Database(format!("cannot connect to {}: {e}", crate::postgres::redact(to))))?;
    let target = PgConn::new(client);
    crate::postgres::schema::migrate(&target)?;
    let dst = Connection::Pg(&target);
    let tables = tables(&src)?;
    for (table, _) in &tables {
        let rows: i64 = dst.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?;
        if rows > 0 && !matches!(table.as_str(), "probe") {
            return Err(StoreError::Conflict(format!(
                "{} is not empty ({table} has {rows} rows): migrate into a new, empty database",
                crate::postgres::redact(to)
            )));
        }
    }
    dst.execute_batch("BEGIN ISOLATION LEVEL SERIALIZABLE")?;
    let copied = copy_all(&src, &dst, &tables);
    if copied.is_err() {
        let _ = dst.execute_batch("ROLLBACK");
    }
    copied?;
    // Checked before the commit: a copy that breaks an invariant is not kept.
    let check = match crate::ops::check(&dst, false, now) {
        Ok(check) if check.findings.is_empty() => check,
        Ok(check) => {
            let _ = dst.execute_batch("ROLLBACK");
            let findings: Vec<String> = check.findings.iter().map(|(k, d)| format!("{k}: {d}")).collect();
            return Err(StoreError::Conflict(format!(
                "the copy breaks {} invariants, so nothing was kept: {}; run `muster check --repair` on the SQLite hub first",
                findings.len(),
                findings.join("; ")
            )));
        }
        Err(e) => {
            let _ = dst.execute_batch("ROLLBACK");
            return Err(e);
        }
    };
    dst.execute_batch("COMMIT")?;
    let mut report = MigrateReport { check, ..MigrateReport::default() };
    for (table, _) in &tables {
        let count = |c: &Connection<'_>| -> Result<u64> {
            c.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        };
        let (had, has) = (count(&src)?, count(&dst)?);
        if had != has {
            return Err(StoreError::Database(format!("{table}: {had} rows in SQLite but {has} in PostgreSQL")));
        }
        report.tables.push((table.clone(), has));
    }
    Ok(report)
}

/// Muster's tables in the SQLite file with their columns, tokens first
/// (agents refer to them), the rest by name. The hubs that ran on it, the
/// duties they led, what they left each other and dashboard sign-ins are
/// not history: the hubs that start on the copy list themselves.
fn tables(src: &Connection<'_>) -> Result<Vec<(String, Vec<String>)>> {
    let names: Vec<String> = src
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
             AND name NOT IN ('hubs', 'duties', 'relays', 'ui_sessions') ORDER BY name",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_>>()?;
    let mut out = Vec::new();
    for name in names {
        let columns: Vec<String> = src
            .prepare(&format!("SELECT name FROM pragma_table_info('{name}') ORDER BY cid"))?
            .query_map([], |r| r.get(0))?
            .collect::<Result<_>>()?;
        out.push((name, columns));
    }
    out.sort_by_key(|(name, _)| (name != "tokens", name.clone()));
    Ok(out)
}

fn copy_all(src: &Connection<'_>, dst: &Connection<'_>, tables: &[(String, Vec<String>)]) -> Result<()> {
    // The schema made the probe's one row; the copy brings its own.
    dst.execute_batch("DELETE FROM probe")?;
    for (table, columns) in tables {
        copy_table(src, dst, table, columns)?;
    }
    // Ids the database hands out carry on after the copied ones.
    let identities: Vec<(String, String)> = dst
        .prepare(
            "SELECT table_name, column_name FROM information_schema.columns \
             WHERE table_schema = current_schema() AND is_identity = 'YES'",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_>>()?;
    for (table, column) in identities {
        dst.execute_batch(&format!(
            "SELECT setval(pg_get_serial_sequence('{table}', '{column}'), \
             (SELECT COALESCE(MAX({column}), 0) + 1 FROM {table}), false)"
        ))?;
    }
    Ok(())
}

fn copy_table(src: &Connection<'_>, dst: &Connection<'_>, table: &str, columns: &[String]) -> Result<()> {
    let list = columns.join(", ");
    let width = columns.len();
    let mut stmt = src.prepare(&format!("SELECT {list} FROM {table}"))?;
    let rows = stmt.query_map([], |r| (0..width).map(|i| r.get::<_, Owned>(i)).collect::<Result<Vec<Owned>>>())?;
    let mut batch: Vec<Owned> = Vec::with_capacity(ROWS_PER_INSERT * width);
    let flush = |batch: &mut Vec<Owned>| -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let n = batch.len() / width;
        let row = format!("({})", vec!["?"; width].join(", "));
        let sql = format!("INSERT INTO {table} ({list}) VALUES {}", vec![row; n].join(", "));
        dst.prepare(&sql)?.execute(params_from_iter(batch.drain(..)))?;
        Ok(())
    };
    for row in rows {
        batch.extend(row?);
        if batch.len() >= ROWS_PER_INSERT * width {
            flush(&mut batch)?;
        }
    }
    flush(&mut batch)
}

impl crate::sql::Cell for Owned {
    fn from_value(v: crate::sql::Value<'_>) -> std::result::Result<Owned, String> {
        use crate::sql::Value;
        Ok(match v {
            Value::Null => Owned::Null,
            Value::Int(i) => Owned::Int(i),
            Value::Real(r) => Owned::Real(r),
            Value::Text(t) => Owned::Text(t.to_owned()),
            Value::Blob(b) => Owned::Blob(b.to_vec()),
        })
    }
}
