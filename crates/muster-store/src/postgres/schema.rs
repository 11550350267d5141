//! The PostgreSQL schema, as an ordered list of migrations.
//!
//! `muster_meta`'s `schema_version` records how many have been applied.
//! All of them run in one transaction under an advisory lock, so hubs that
//! start together on a new database migrate it once, and a crash mid-way
//! leaves the previous version intact. Migrations are only ever appended.

use crate::sql::{Connection, OptionalExtension, pg::PgConn};
use crate::{Result, StoreError};

const MIGRATIONS: &[&str] = &[include_str!("schema.sql")];

pub const CURRENT: usize = MIGRATIONS.len();

/// The advisory lock key that serialises migrations ("muster" in ASCII).
const MIGRATION_LOCK: i64 = 0x6d75_7374_6572;

/// Brings the database to the current schema; returns the version it found.
pub fn migrate(conn: &PgConn) -> Result<usize> {
    let c = Connection::Pg(conn);
    c.execute_batch("BEGIN")?;
    let found = apply(&c);
    match &found {
        Ok(_) => c.execute_batch("COMMIT")?,
        Err(_) => {
            let _ = c.execute_batch("ROLLBACK");
        }
    }
    conn.forget_statements();
    found
}

fn apply(c: &Connection<'_>) -> Result<usize> {
    c.query_row("SELECT pg_advisory_xact_lock(?)", [MIGRATION_LOCK], |_| Ok(()))?;
    let has_meta: bool = c.query_row("SELECT to_regclass('muster_meta') IS NOT NULL", [], |r| r.get(0))?;
    let found = if has_meta {
        c.query_row("SELECT value FROM muster_meta WHERE key = 'schema_version'", [], |r| r.get::<_, String>(0))
            .optional()?
            .map(|v| v.parse::<usize>().map_err(|_| StoreError::Database(format!("schema_version is {v:?}"))))
            .transpose()?
            .unwrap_or(0)
    } else {
        let tables: i64 = c.query_row(
            "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()",
            [],
            |r| r.get(0),
        )?;
        if tables > 0 {
            return Err(StoreError::Database(
                "the database holds tables that are not Muster's; give Muster a database of its own".into(),
            ));
        }
        0
    };
    if found > CURRENT {
        return Err(StoreError::Database(format!(
            "the database's schema is version {found}, newer than this muster knows ({CURRENT}); upgrade muster"
        )));
    }
    for sql in &MIGRATIONS[found..] {
        c.execute_batch(sql)?;
    }
    if found < CURRENT {
        c.execute(
            "INSERT INTO muster_meta (key, value) VALUES ('schema_version', ?) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [CURRENT.to_string()],
        )?;
    }
    Ok(found)
}
