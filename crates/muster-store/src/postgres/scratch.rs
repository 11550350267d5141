//! Scratch databases for tests and benchmarks: created empty on a server
//! and dropped, with any session still on them, when the guard goes.

use crate::{Result, StoreError};

/// Where scratch databases are made unless `MUSTER_TEST_POSTGRES` says otherwise.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// An empty database of its own; dropped when this is.
pub struct ScratchDb {
    admin: String,
    name: String,
    url: String,
}

impl ScratchDb {
    /// Creates `muster_scratch_<pid>_<random>` on the server that
    /// `MUSTER_TEST_POSTGRES` (or [`DEFAULT_ADMIN_URL`]) names. Blocks.
    pub fn create() -> Result<ScratchDb> {
        let admin = std::env::var("MUSTER_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
        ScratchDb::create_on(&admin)
    }

    /// Creates `muster_scratch_<pid>_<random>` on the server `admin` names
    /// (connecting to the database it names to do so). Blocks.
    pub fn create_on(admin: &str) -> Result<ScratchDb> {
        let admin = admin.to_owned();
        let name = format!("muster_scratch_{}_{:08x}", std::process::id(), getrandom::u32().unwrap_or(0));
        let url = match admin.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => return Err(StoreError::Database(format!("{admin} names no database"))),
        };
        let sql = format!("CREATE DATABASE {name}");
        on_server(&admin, &sql)?;
        Ok(ScratchDb { admin, name, url })
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = on_server(&self.admin, &sql) {
            eprintln!("could not drop the scratch database {}: {e}", self.name);
        }
    }
}

/// Runs `sql` on the admin database, on a thread of its own: the driver
/// blocks, and must not run on an async runtime's thread.
fn on_server(admin: &str, sql: &str) -> Result<()> {
    let (admin, sql) = (admin.to_owned(), sql.to_owned());
    std::thread::spawn(move || -> Result<()> {
        let mut client = postgres::Client::connect(&admin, postgres::NoTls).map_err(|e| {
            StoreError::Database(format!(
                "cannot reach PostgreSQL at {} (set MUSTER_TEST_POSTGRES to another server): {e}",
                super::redact(&admin)
            ))
        })?;
        Ok(client.batch_execute(&sql)?)
    })
    .join()
    .map_err(|_| StoreError::Database("the scratch database thread panicked".into()))?
}
