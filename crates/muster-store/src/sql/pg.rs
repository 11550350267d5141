//! The PostgreSQL side of the connection API: a client with its statement
//! cache, SQL turned into PostgreSQL's spelling, and [`Value`]s converted
//! to and from whatever type each column and placeholder has.

use super::{Param, Value};
use crate::{Result, StoreError};
use postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};
use std::cell::{Cell as Counter, RefCell};
use std::collections::HashMap;

/// Statements kept compiled per connection; the cache starts over when full
/// (queries whose text varies would otherwise fill it without end).
const CACHED_STATEMENTS: usize = 512;

/// One session with the server, owned by the thread that runs its changes.
pub struct PgConn {
    client: RefCell<postgres::Client>,
    cache: RefCell<HashMap<String, postgres::Statement>>,
    changes: Counter<u64>,
}

impl PgConn {
    pub fn new(client: postgres::Client) -> PgConn {
        PgConn { client: RefCell::new(client), cache: RefCell::default(), changes: Counter::new(0) }
    }

    /// Whether the session is gone (the server closed it, the network dropped it).
    pub fn is_closed(&self) -> bool {
        self.client.borrow().is_closed()
    }

    pub fn client(&self) -> std::cell::RefMut<'_, postgres::Client> {
        self.client.borrow_mut()
    }

    pub(super) fn prepare(&self, sql: &str) -> Result<postgres::Statement> {
        if let Some(s) = self.cache.borrow().get(sql) {
            return Ok(s.clone());
        }
        let translated = translate(sql);
        let stmt = self.client.borrow_mut().prepare(&translated).map_err(|e| match StoreError::from(e) {
            StoreError::Database(why) => StoreError::Database(format!("{why} in `{translated}`")),
            other => other,
        })?;
        let mut cache = self.cache.borrow_mut();
        if cache.len() >= CACHED_STATEMENTS {
            cache.clear();
        }
        cache.insert(sql.to_owned(), stmt.clone());
        Ok(stmt)
    }

    pub(super) fn execute(&self, stmt: &postgres::Statement, params: &[&dyn Param]) -> Result<usize> {
        let values: Vec<Value<'_>> = params.iter().map(|p| p.value()).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        let n = self.client.borrow_mut().execute(stmt, &refs)?;
        self.changes.set(self.changes.get() + n);
        Ok(n as usize)
    }

    pub(super) fn query(&self, stmt: &postgres::Statement, params: &[&dyn Param]) -> Result<Vec<postgres::Row>> {
        let values: Vec<Value<'_>> = params.iter().map(|p| p.value()).collect();
        let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        Ok(self.client.borrow_mut().query(stmt, &refs)?)
    }

    pub(super) fn batch(&self, sql: &str) -> Result<()> {
        Ok(self.client.borrow_mut().batch_execute(sql)?)
    }

    pub(super) fn total_changes(&self) -> u64 {
        self.changes.get()
    }

    /// Forgets compiled statements, after the schema changed under them.
    pub fn forget_statements(&self) {
        self.cache.borrow_mut().clear();
    }
}

/// SQLite's spelling to PostgreSQL's: `?`/`?N` placeholders become `$N`,
/// index hints go, and `LIKE` ignores case as SQLite's does for ASCII.
/// Nothing inside a quoted string or identifier is touched.
pub fn translate(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut next = 0u32;
    let mut chars = sql.char_indices().peekable();
    let mut quote: Option<char> = None;
    while let Some((i, ch)) = chars.next() {
        if let Some(q) = quote {
            out.push(ch);
            if ch == q {
                quote = None;
            }
            continue;
        }
        match ch {
            '\'' | '"' => {
                quote = Some(ch);
                out.push(ch);
            }
            '?' => {
                let mut digits = String::new();
                while let Some((_, d)) = chars.peek().filter(|(_, d)| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                let n = if digits.is_empty() {
                    next += 1;
                    next
                } else {
                    let n: u32 = digits.parse().unwrap_or(0);
                    next = next.max(n);
                    n
                };
                out.push('$');
                out.push_str(&n.to_string());
            }
            c if c.is_ascii_alphabetic() && !prev_is_word(sql, i) => {
                let word_end =
                    sql[i..].find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(sql.len(), |e| i + e);
                let word = &sql[i..word_end];
                if word.eq_ignore_ascii_case("INDEXED")
                    && sql[word_end..].trim_start().to_ascii_uppercase().starts_with("BY ")
                {
                    // `INDEXED BY name`: skip the three words.
                    let rest = sql[word_end..].trim_start();
                    let after_by = &rest[2..];
                    let name_start = after_by.len() - after_by.trim_start().len();
                    let name_len = after_by
                        .trim_start()
                        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .unwrap_or(after_by.trim_start().len());
                    let skip = (sql.len() - rest.len()) + 2 + name_start + name_len;
                    while chars.peek().is_some_and(|(j, _)| *j < skip) {
                        chars.next();
                    }
                    continue;
                }
                if word.eq_ignore_ascii_case("LIKE") {
                    out.push_str("ILIKE");
                } else {
                    out.push_str(word);
                }
                while chars.peek().is_some_and(|(j, _)| *j < word_end) {
                    chars.next();
                }
            }
            c => out.push(c),
        }
    }
    out
}

fn prev_is_word(sql: &str, i: usize) -> bool {
    sql[..i].chars().next_back().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
}

impl ToSql for Value<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let wrong = || -> Box<dyn std::error::Error + Sync + Send> {
            // The value's kind only: it may be a prompt or a secret.
            let kind = match self {
                Value::Null => "null".to_owned(),
                Value::Int(_) => "an integer".to_owned(),
                Value::Real(_) => "a real".to_owned(),
                Value::Text(t) => format!("text of {} bytes", t.len()),
                Value::Blob(b) => format!("{} bytes", b.len()),
            };
            format!("cannot bind {kind} to a parameter of type {ty}").into()
        };
        match *self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(i).map_err(|_| wrong())?.to_sql(ty, out),
                Type::INT2 => i16::try_from(i).map_err(|_| wrong())?.to_sql(ty, out),
                Type::BOOL => (i != 0).to_sql(ty, out),
                Type::FLOAT8 => (i as f64).to_sql(ty, out),
                Type::FLOAT4 => (i as f32).to_sql(ty, out),
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
                    i.to_string().as_str().to_sql(&Type::TEXT, out)
                }
                _ => Err(wrong()),
            },
            Value::Real(r) => match *ty {
                Type::FLOAT8 => r.to_sql(ty, out),
                Type::FLOAT4 => (r as f32).to_sql(ty, out),
                _ => Err(wrong()),
            },
            Value::Text(t) => match *ty {
                Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN | Type::JSON => {
                    t.to_sql(&Type::TEXT, out)
                }
                Type::INT8 => t.parse::<i64>().map_err(|_| wrong())?.to_sql(ty, out),
                Type::INT4 => t.parse::<i32>().map_err(|_| wrong())?.to_sql(ty, out),
                _ => Err(wrong()),
            },
            Value::Blob(b) => match *ty {
                Type::BYTEA => b.to_sql(ty, out),
                _ => Err(wrong()),
            },
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

/// A cell of any type, as a [`Value`].
pub struct Cell(CellValue);

enum CellValue {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Cell {
    pub(super) fn value(&self) -> Value<'_> {
        match &self.0 {
            CellValue::Null => Value::Null,
            CellValue::Int(i) => Value::Int(*i),
            CellValue::Real(r) => Value::Real(*r),
            CellValue::Text(t) => Value::Text(t),
            CellValue::Blob(b) => Value::Blob(b),
        }
    }
}

impl<'a> FromSql<'a> for Cell {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> std::result::Result<Cell, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Cell(match *ty {
            Type::INT8 => CellValue::Int(i64::from_sql(ty, raw)?),
            Type::INT4 => CellValue::Int(i32::from_sql(ty, raw)?.into()),
            Type::INT2 => CellValue::Int(i16::from_sql(ty, raw)?.into()),
            Type::OID => CellValue::Int(u32::from_sql(ty, raw)?.into()),
            Type::BOOL => CellValue::Int(bool::from_sql(ty, raw)?.into()),
            Type::FLOAT8 => CellValue::Real(f64::from_sql(ty, raw)?),
            Type::FLOAT4 => CellValue::Real(f32::from_sql(ty, raw)?.into()),
            Type::NUMERIC => numeric(raw)?,
            Type::BYTEA => CellValue::Blob(raw.to_vec()),
            _ => CellValue::Text(String::from_sql(&Type::TEXT, raw)?),
        }))
    }

    fn from_sql_null(_: &Type) -> std::result::Result<Cell, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Cell(CellValue::Null))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

/// A `numeric` (what `SUM` of integers gives) in its binary form: digits
/// in base 10,000, the first one's weight, a sign and the scale. Whole
/// numbers come back as integers, others as reals.
fn numeric(raw: &[u8]) -> std::result::Result<CellValue, Box<dyn std::error::Error + Sync + Send>> {
    let word = |i: usize| -> std::result::Result<u16, Box<dyn std::error::Error + Sync + Send>> {
        raw.get(i * 2..i * 2 + 2).map(|b| u16::from_be_bytes([b[0], b[1]])).ok_or_else(|| "short numeric".into())
    };
    let (ndigits, weight, sign) = (word(0)? as usize, word(1)? as i16, word(2)?);
    if sign == 0xC000 {
        return Ok(CellValue::Real(f64::NAN));
    }
    let mut value = 0f64;
    let mut whole = 0i128;
    let mut fraction = false;
    for k in 0..ndigits {
        let d = word(4 + k)?;
        let power = i32::from(weight) - k as i32;
        value += f64::from(d) * 10_000f64.powi(power);
        if power >= 0 {
            whole += i128::from(d) * 10_000i128.pow(power as u32);
        } else if d != 0 {
            fraction = true;
        }
    }
    let negative = sign == 0x4000;
    if !fraction {
        let whole = if negative { -whole } else { whole };
        if let Ok(i) = i64::try_from(whole) {
            return Ok(CellValue::Int(i));
        }
    }
    Ok(CellValue::Real(if negative { -value } else { value }))
}

impl From<postgres::Error> for StoreError {
    fn from(e: postgres::Error) -> StoreError {
        use postgres::error::SqlState;
        let text = match e.as_db_error() {
            Some(db) => match db.detail() {
                Some(detail) => format!("{}: {detail}", db.message()),
                None => db.message().to_owned(),
            },
            None => e.to_string(),
        };
        match e.code() {
            Some(c) if *c == SqlState::T_R_SERIALIZATION_FAILURE || *c == SqlState::T_R_DEADLOCK_DETECTED => {
                StoreError::Contended(text)
            }
            Some(c) if *c == SqlState::DISK_FULL => StoreError::NoSpace(text),
            _ if e.is_closed() => StoreError::Database(format!("the connection to PostgreSQL is closed: {text}")),
            _ => StoreError::Database(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::translate;

    #[test]
    fn placeholders_hints_and_like_take_postgresql_spelling() {
        assert_eq!(translate("SELECT a FROM t WHERE b = ? AND c = ?"), "SELECT a FROM t WHERE b = $1 AND c = $2");
        assert_eq!(translate("UPDATE t SET a = ?2 WHERE b = ?1"), "UPDATE t SET a = $2 WHERE b = $1");
        assert_eq!(translate("SELECT '?' , \"x?\" FROM t WHERE a = ?"), "SELECT '?' , \"x?\" FROM t WHERE a = $1");
        assert_eq!(
            translate("SELECT MIN(ready_at) FROM tasks INDEXED BY tasks_ready WHERE state = 'queued'"),
            "SELECT MIN(ready_at) FROM tasks  WHERE state = 'queued'"
        );
        assert_eq!(translate("WHERE id LIKE ? ESCAPE '\\'"), "WHERE id ILIKE $1 ESCAPE '\\'");
        assert_eq!(translate("SELECT likes, unlike FROM t"), "SELECT likes, unlike FROM t");
    }
}
