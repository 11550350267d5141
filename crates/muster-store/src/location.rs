//! Where the store lives, as operators write it: a data directory or
//! `sqlite:PATH` for the embedded database, `postgres://…` for PostgreSQL.

use crate::postgres::{PgStore, redact};
use crate::sqlite::SqliteStore;
use crate::{Limits, Result, Store, StoreError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// The SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL connection URL (`postgres://` or `postgresql://`).
    Postgres(String),
}

impl Location {
    /// Reads `--database`; none means `muster.db` in the data directory.
    pub fn parse(database: Option<&str>, data_dir: &Path) -> Result<Location> {
        let Some(db) = database.map(str::trim).filter(|d| !d.is_empty()) else {
            return Ok(Location::Sqlite(data_dir.join("muster.db")));
        };
        if db.starts_with("postgres://") || db.starts_with("postgresql://") {
            db.parse::<postgres::Config>().map_err(|e| {
                StoreError::Invalid(muster_core::Invalid::new(
                    "database",
                    format!("{} is not a PostgreSQL URL: {e}", redact(db)),
                ))
            })?;
            return Ok(Location::Postgres(db.to_owned()));
        }
        if let Some(path) = db.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(StoreError::Invalid(muster_core::Invalid::new("database", "sqlite: needs a file path")));
            }
            return Ok(Location::Sqlite(PathBuf::from(path)));
        }
        Err(StoreError::Invalid(muster_core::Invalid::new(
            "database",
            format!(
                "{} is neither postgres://… nor sqlite:PATH (leave it out to use muster.db in the data directory)",
                redact(db)
            ),
        )))
    }

    /// Opens the store. PostgreSQL's driver blocks while connecting: call
    /// this off the async runtime's threads.
    pub fn open(&self, limits: Limits) -> Result<Arc<dyn Store>> {
        Ok(match self {
            Location::Sqlite(path) => Arc::new(SqliteStore::open(path, limits)?),
            Location::Postgres(url) => Arc::new(PgStore::open(url, limits)?),
        })
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, Location::Postgres(_))
    }
}

/// As `Display`: a URL's password never reaches a log, even through `{:?}`.
impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "Sqlite({})", path.display()),
            Location::Postgres(url) => write!(f, "Postgres({})", redact(url)),
        }
    }
}

impl std::fmt::Display for Location {
    /// Safe to log: a URL's password is left out.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "{}", path.display()),
            Location::Postgres(url) => f.write_str(&redact(url)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_is_a_data_directory_a_sqlite_path_or_a_postgres_url() {
        let dir = Path::new("/srv/muster");
        assert_eq!(Location::parse(None, dir).unwrap(), Location::Sqlite(dir.join("muster.db")));
        assert_eq!(Location::parse(Some("sqlite:/tmp/x.db"), dir).unwrap(), Location::Sqlite("/tmp/x.db".into()));
        let pg = Location::parse(Some("postgres://muster:s3cret@db.internal:5432/muster"), dir).unwrap();
        assert!(pg.is_postgres());
        assert_eq!(pg.to_string(), "postgres://muster:***@db.internal:5432/muster", "no password in logs");
        assert!(!format!("{pg:?}").contains("s3cret"), "nor in debug output");
        let query = Location::parse(Some("postgres://db.internal/muster?user=m&password=hunter2"), dir).unwrap();
        assert_eq!(query.to_string(), "postgres://db.internal/muster?user=m&password=***");
        let err = Location::parse(Some("mysql://root:hunter2@x/db"), dir).unwrap_err().to_string();
        assert!(err.contains("neither postgres") && !err.contains("hunter2"), "{err}");
        assert!(Location::parse(Some("sqlite:"), dir).is_err());
    }
}
