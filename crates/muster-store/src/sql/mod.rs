//! One connection API over both databases, shaped like the subset of
//! rusqlite the store's operations use, so that `ops` is written once.
//!
//! SQL is written once too, in the dialect both understand (`?`
//! placeholders, `ON CONFLICT`, `RETURNING`, `COALESCE`, `CASE`). On
//! PostgreSQL, `?` and `?N` become `$N`, SQLite's index hints are dropped
//! and `LIKE` matches regardless of case as SQLite's does; what has no
//! common spelling asks [`Connection::dialect`]. Values cross as
//! [`Value`]s: integers, reals, text, bytes and null, which is all SQLite
//! has, and what each PostgreSQL column type is converted from and to.

pub mod pg;

use crate::{Result, StoreError};

/// Which database a connection speaks to, for the few spellings that differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A connection inside the caller's transaction.
pub enum Connection<'a> {
    Sqlite(&'a rusqlite::Connection),
    Pg(&'a pg::PgConn),
}

/// One value, borrowed: a parameter on its way in, a cell on its way out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
}

/// An owned [`Value`], for parameter lists built at run time.
#[derive(Debug, Clone, PartialEq)]
pub enum Owned {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl From<i64> for Owned {
    fn from(v: i64) -> Owned {
        Owned::Int(v)
    }
}

impl From<String> for Owned {
    fn from(v: String) -> Owned {
        Owned::Text(v)
    }
}

impl From<&str> for Owned {
    fn from(v: &str) -> Owned {
        Owned::Text(v.to_owned())
    }
}

/// What can be bound to a placeholder.
pub trait Param {
    fn value(&self) -> Value<'_>;
}

impl Param for Owned {
    fn value(&self) -> Value<'_> {
        match self {
            Owned::Null => Value::Null,
            Owned::Int(v) => Value::Int(*v),
            Owned::Real(v) => Value::Real(*v),
            Owned::Text(v) => Value::Text(v),
            Owned::Blob(v) => Value::Blob(v),
        }
    }
}

macro_rules! int_param {
    ($($t:ty),*) => {$(
        impl Param for $t {
            fn value(&self) -> Value<'_> {
                Value::Int(i64::try_from(*self).unwrap_or(i64::MAX))
            }
        }
    )*};
}
int_param!(i64, i32, u32, u16, u8, u64, usize);

impl Param for bool {
    fn value(&self) -> Value<'_> {
        Value::Int(i64::from(*self))
    }
}

impl Param for f64 {
    fn value(&self) -> Value<'_> {
        Value::Real(*self)
    }
}

impl Param for str {
    fn value(&self) -> Value<'_> {
        Value::Text(self)
    }
}

impl Param for String {
    fn value(&self) -> Value<'_> {
        Value::Text(self)
    }
}

impl Param for [u8] {
    fn value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}

impl Param for Vec<u8> {
    fn value(&self) -> Value<'_> {
        Value::Blob(self)
    }
}

impl<T: Param + ?Sized> Param for &T {
    fn value(&self) -> Value<'_> {
        (**self).value()
    }
}

impl<T: Param> Param for Option<T> {
    fn value(&self) -> Value<'_> {
        match self {
            Some(v) => v.value(),
            None => Value::Null,
        }
    }
}

/// A statement's parameters, in placeholder order.
pub trait Params {
    fn with<R>(&self, f: impl FnOnce(&[&dyn Param]) -> R) -> R;
}

impl Params for &[&dyn Param] {
    fn with<R>(&self, f: impl FnOnce(&[&dyn Param]) -> R) -> R {
        f(self)
    }
}

impl Params for [&dyn Param; 0] {
    fn with<R>(&self, f: impl FnOnce(&[&dyn Param]) -> R) -> R {
        f(&[])
    }
}

macro_rules! array_params {
    ($($n:literal)*) => {$(
        impl<T: Param> Params for [T; $n] {
            fn with<R>(&self, f: impl FnOnce(&[&dyn Param]) -> R) -> R {
                let refs: [&dyn Param; $n] = std::array::from_fn(|i| &self[i] as &dyn Param);
                f(&refs)
            }
        }
    )*};
}
array_params!(1 2 3 4 5 6 7 8);

/// Parameters from a list built at run time.
pub struct ParamsFromIter<T>(Vec<T>);

pub fn params_from_iter<T: Param>(items: impl IntoIterator<Item = T>) -> ParamsFromIter<T> {
    ParamsFromIter(items.into_iter().collect())
}

impl<T: Param> Params for ParamsFromIter<T> {
    fn with<R>(&self, f: impl FnOnce(&[&dyn Param]) -> R) -> R {
        let refs: Vec<&dyn Param> = self.0.iter().map(|p| p as &dyn Param).collect();
        f(&refs)
    }
}

/// `params![a, b, c]`: a statement's parameters of mixed types.
#[macro_export]
#[doc(hidden)]
macro_rules! sql_params {
    () => { &[] as &[&dyn $crate::sql::Param] };
    ($($p:expr),+ $(,)?) => { &[$(&$p as &dyn $crate::sql::Param),+] as &[&dyn $crate::sql::Param] };
}
pub use crate::sql_params as params;

/// What a cell can be read as.
pub trait Cell: Sized {
    fn from_value(v: Value<'_>) -> std::result::Result<Self, String>;
}

fn kind(v: &Value<'_>) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Int(_) => "an integer",
        Value::Real(_) => "a real",
        Value::Text(_) => "text",
        Value::Blob(_) => "bytes",
    }
}

macro_rules! int_cell {
    ($($t:ty),*) => {$(
        impl Cell for $t {
            fn from_value(v: Value<'_>) -> std::result::Result<$t, String> {
                match v {
                    Value::Int(i) => <$t>::try_from(i).map_err(|_| format!("{i} is out of range")),
                    other => Err(format!("expected an integer, found {}", kind(&other))),
                }
            }
        }
    )*};
}
int_cell!(i64, i32, u32, u16, u8, u64, usize);

impl Cell for bool {
    fn from_value(v: Value<'_>) -> std::result::Result<bool, String> {
        match v {
            Value::Int(i) => Ok(i != 0),
            other => Err(format!("expected a flag, found {}", kind(&other))),
        }
    }
}

impl Cell for f64 {
    fn from_value(v: Value<'_>) -> std::result::Result<f64, String> {
        match v {
            Value::Real(r) => Ok(r),
            Value::Int(i) => Ok(i as f64),
            other => Err(format!("expected a number, found {}", kind(&other))),
        }
    }
}

impl Cell for String {
    fn from_value(v: Value<'_>) -> std::result::Result<String, String> {
        match v {
            Value::Text(t) => Ok(t.to_owned()),
            other => Err(format!("expected text, found {}", kind(&other))),
        }
    }
}

impl Cell for Vec<u8> {
    fn from_value(v: Value<'_>) -> std::result::Result<Vec<u8>, String> {
        match v {
            Value::Blob(b) => Ok(b.to_vec()),
            Value::Text(t) => Ok(t.as_bytes().to_vec()),
            other => Err(format!("expected bytes, found {}", kind(&other))),
        }
    }
}

impl<T: Cell> Cell for Option<T> {
    fn from_value(v: Value<'_>) -> std::result::Result<Option<T>, String> {
        match v {
            Value::Null => Ok(None),
            v => T::from_value(v).map(Some),
        }
    }
}

/// A column's position in a row. Only positions: the operations read
/// columns in the order their queries name them.
pub trait Idx {
    fn index(self) -> usize;
}

impl Idx for usize {
    fn index(self) -> usize {
        self
    }
}

/// One row of a result.
pub enum Row<'a> {
    Sqlite(&'a rusqlite::Row<'a>),
    Pg(&'a postgres::Row),
}

impl Row<'_> {
    pub fn get<I: Idx, T: Cell>(&self, idx: I) -> Result<T> {
        let i = idx.index();
        let read = match self {
            Row::Sqlite(r) => {
                let v = r.get_ref(i).map_err(StoreError::from)?;
                T::from_value(match v {
                    rusqlite::types::ValueRef::Null => Value::Null,
                    rusqlite::types::ValueRef::Integer(i) => Value::Int(i),
                    rusqlite::types::ValueRef::Real(r) => Value::Real(r),
                    rusqlite::types::ValueRef::Text(t) => {
                        Value::Text(std::str::from_utf8(t).map_err(|e| corrupt_cell(i, e))?)
                    }
                    rusqlite::types::ValueRef::Blob(b) => Value::Blob(b),
                })
            }
            Row::Pg(r) => {
                let cell: pg::Cell = r.try_get(i).map_err(StoreError::from)?;
                T::from_value(cell.value())
            }
        };
        read.map_err(|e| corrupt_cell(i, e))
    }
}

fn corrupt_cell(i: usize, e: impl std::fmt::Display) -> StoreError {
    StoreError::Database(format!("column {i} holds an unexpected value: {e}"))
}

/// What a query that must return a row says when it returned none; turned
/// into `None` by [`OptionalExtension::optional`].
const NO_ROWS: &str = "the query returned no rows";

fn no_rows() -> StoreError {
    StoreError::NotFound { what: "row", id: NO_ROWS.into() }
}

pub trait OptionalExtension<T> {
    /// `Ok(None)` when the query returned no row.
    fn optional(self) -> Result<Option<T>>;
}

impl<T> OptionalExtension<T> for Result<T> {
    fn optional(self) -> Result<Option<T>> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(StoreError::NotFound { what: "row", id }) if id == NO_ROWS => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A prepared statement.
pub enum Statement<'c> {
    SqliteCached(rusqlite::CachedStatement<'c>),
    Sqlite(rusqlite::Statement<'c>),
    Pg(&'c pg::PgConn, postgres::Statement),
}

/// Binds our values to rusqlite's placeholders without copying them.
struct Bound<'a>(&'a dyn Param);

impl rusqlite::ToSql for Bound<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self.0.value() {
            Value::Null => ValueRef::Null,
            Value::Int(i) => ValueRef::Integer(i),
            Value::Real(r) => ValueRef::Real(r),
            Value::Text(t) => ValueRef::Text(t.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

fn bound<'a>(params: &'a [&'a dyn Param]) -> rusqlite::ParamsFromIter<impl Iterator<Item = Bound<'a>>> {
    rusqlite::params_from_iter(params.iter().map(|p| Bound(*p)))
}

impl<'c> Statement<'c> {
    fn sqlite(&mut self) -> Option<&mut rusqlite::Statement<'c>> {
        match self {
            Statement::SqliteCached(s) => Some(s),
            Statement::Sqlite(s) => Some(s),
            Statement::Pg(..) => None,
        }
    }

    /// Runs a statement that returns no rows; how many rows it changed.
    pub fn execute<P: Params>(&mut self, params: P) -> Result<usize> {
        if let Statement::Pg(c, s) = self {
            return params.with(|p| c.execute(s, p));
        }
        let s = self.sqlite().expect("a SQLite statement");
        params.with(|p| s.execute(bound(p)).map_err(StoreError::from))
    }

    /// The first row, mapped by `f`; an error when there is none (see
    /// [`OptionalExtension`]).
    pub fn query_row<T, F>(&mut self, params: impl Params, f: F) -> Result<T>
    where
        F: FnOnce(&Row<'_>) -> Result<T>,
    {
        if let Statement::Pg(c, s) = self {
            let rows = params.with(|p| c.query(s, p))?;
            return match rows.first() {
                Some(r) => f(&Row::Pg(r)),
                None => Err(no_rows()),
            };
        }
        let s = self.sqlite().expect("a SQLite statement");
        params.with(|p| {
            let mut rows = s.query(bound(p))?;
            match rows.next()? {
                Some(r) => f(&Row::Sqlite(r)),
                None => Err(no_rows()),
            }
        })
    }

    /// Every row, mapped by `f`.
    pub fn query_map<T, F>(&mut self, params: impl Params, mut f: F) -> Result<std::vec::IntoIter<Result<T>>>
    where
        F: FnMut(&Row<'_>) -> Result<T>,
    {
        if let Statement::Pg(c, s) = self {
            let rows = params.with(|p| c.query(s, p))?;
            let mapped: Vec<Result<T>> = rows.iter().map(|r| f(&Row::Pg(r))).collect();
            return Ok(mapped.into_iter());
        }
        let s = self.sqlite().expect("a SQLite statement");
        let mapped = params.with(|p| -> Result<Vec<Result<T>>> {
            let mut rows = s.query(bound(p))?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.push(f(&Row::Sqlite(r)));
            }
            Ok(out)
        })?;
        Ok(mapped.into_iter())
    }

    /// Whether the query returns a row.
    pub fn exists(&mut self, params: impl Params) -> Result<bool> {
        self.query_row(params, |_| Ok(())).optional().map(|r| r.is_some())
    }
}

impl Connection<'_> {
    pub fn dialect(&self) -> Dialect {
        match self {
            Connection::Sqlite(_) => Dialect::Sqlite,
            Connection::Pg(_) => Dialect::Postgres,
        }
    }

    /// A statement compiled once per connection and kept.
    pub fn prepare_cached(&self, sql: &str) -> Result<Statement<'_>> {
        match self {
            Connection::Sqlite(c) => Ok(Statement::SqliteCached(c.prepare_cached(sql)?)),
            Connection::Pg(c) => Ok(Statement::Pg(c, c.prepare(sql)?)),
        }
    }

    /// A statement whose text varies: compiled each time on SQLite, so
    /// that it does not push the constant ones out of the cache.
    pub fn prepare(&self, sql: &str) -> Result<Statement<'_>> {
        match self {
            Connection::Sqlite(c) => Ok(Statement::Sqlite(c.prepare(sql)?)),
            Connection::Pg(c) => Ok(Statement::Pg(c, c.prepare(sql)?)),
        }
    }

    pub fn execute<P: Params>(&self, sql: &str, params: P) -> Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    pub fn query_row<T, P: Params, F>(&self, sql: &str, params: P, f: F) -> Result<T>
    where
        F: FnOnce(&Row<'_>) -> Result<T>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }

    /// Runs statements separated by `;`, with no parameters.
    pub fn execute_batch(&self, sql: &str) -> Result<()> {
        match self {
            Connection::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Connection::Pg(c) => c.batch(sql),
        }
    }

    /// Rows changed by statements on this connection so far.
    pub fn total_changes(&self) -> u64 {
        match self {
            Connection::Sqlite(c) => c.total_changes(),
            Connection::Pg(c) => c.total_changes(),
        }
    }

    /// The date in UTC (`YYYY-MM-DD`) of a column of epoch milliseconds.
    pub fn day_of(&self, millis: &str) -> String {
        match self.dialect() {
            Dialect::Sqlite => format!("strftime('%Y-%m-%d', {millis} / 1000, 'unixepoch')"),
            Dialect::Postgres => format!("to_char(to_timestamp({millis} / 1000) AT TIME ZONE 'UTC', 'YYYY-MM-DD')"),
        }
    }

    /// Whether `needle` occurs in `haystack` (both SQL expressions).
    pub fn contains(&self, haystack: &str, needle: &str) -> String {
        match self.dialect() {
            Dialect::Sqlite => format!("instr({haystack}, {needle}) > 0"),
            Dialect::Postgres => format!("strpos({haystack}, {needle}) > 0"),
        }
    }
}
