//! Alerts and the hub's runtime settings.

use super::*;

const ALERT_COLS: &str = "rule, state, severity, detail, since, acknowledged_by, acknowledged_at, updated_at";

fn alert_row(r: &Row<'_>) -> Result<crate::AlertRecord> {
    use muster_core::alert::{AlertState, Rule, Severity};
    let rule: String = r.get(0)?;
    let state: String = r.get(1)?;
    let severity: String = r.get(2)?;
    Ok(crate::AlertRecord {
        rule: Rule::parse(&rule).map_err(|e| corrupt("alert rule", e))?,
        state: AlertState::parse(&state).map_err(|e| corrupt("alert state", e))?,
        severity: Severity::parse(&severity).map_err(|e| corrupt("alert severity", e))?,
        detail: r.get(3)?,
        since: ms(r.get(4)?),
        acknowledged_by: r.get(5)?,
        acknowledged_at: ms(r.get(6)?),
        updated_at: Millis(r.get(7)?),
    })
}

pub fn alerts(c: &Connection) -> Result<Vec<crate::AlertRecord>> {
    c.prepare(&format!("SELECT {ALERT_COLS} FROM alerts ORDER BY rule"))?
        .query_map([], alert_row)?
        .collect::<Result<_>>()
}

fn alert_event(c: &Connection, now: Millis, kind: &str, a: &crate::AlertRecord) -> Result<()> {
    let detail = format!(
        "{} ({}){}",
        a.rule.as_str(),
        a.severity.as_str(),
        a.detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default()
    );
    agent_event(c, now, kind, None, Some(a.state.as_str()), Some(&detail))
}

pub fn save_alert(c: &Connection, a: &crate::AlertRecord, event: Option<&str>, now: Millis) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO alerts (rule, state, severity, detail, since, acknowledged_by, acknowledged_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (rule) DO UPDATE SET state = excluded.state, \
         severity = excluded.severity, detail = excluded.detail, since = excluded.since, \
         acknowledged_by = excluded.acknowledged_by, acknowledged_at = excluded.acknowledged_at, \
         updated_at = excluded.updated_at",
    )?
    .execute(params![
        a.rule.as_str(),
        a.state.as_str(),
        a.severity.as_str(),
        a.detail,
        a.since.map(|m| m.0),
        a.acknowledged_by,
        a.acknowledged_at.map(|m| m.0),
        a.updated_at.0
    ])?;
    if let Some(kind) = event {
        alert_event(c, now, kind, a)?;
    }
    Ok(())
}

pub fn acknowledge_alert(
    c: &Connection,
    rule: muster_core::alert::Rule,
    by: &str,
    now: Millis,
) -> Result<crate::AlertRecord> {
    let found = c
        .prepare_cached(&format!("SELECT {ALERT_COLS} FROM alerts WHERE rule = ?"))?
        .query_row([rule.as_str()], alert_row)
        .optional()?;
    let state = found.as_ref().map_or(muster_core::alert::AlertState::Resolved, |a| a.state);
    let acknowledged = muster_core::alert::acknowledge(state).map_err(StoreError::Invalid)?;
    let mut alert = found.ok_or_else(|| StoreError::not_found("alert", rule.as_str()))?;
    alert.state = acknowledged;
    alert.acknowledged_by = Some(by.to_owned());
    alert.acknowledged_at = Some(now);
    alert.updated_at = now;
    save_alert(c, &alert, Some("alert.acknowledged"), now)?;
    Ok(alert)
}

pub fn settings(c: &Connection, prefix: &str) -> Result<Vec<(String, String)>> {
    let mut stmt =
        c.prepare_cached("SELECT key, value FROM settings WHERE substr(key, 1, length(?)) = ? ORDER BY key")?;
    let rows = stmt.query_map([prefix, prefix], |r| Ok((r.get(0)?, r.get(1)?)))?;
    rows.collect::<Result<_>>()
}

/// Stores one setting, with no event: for the store's own bookkeeping.
pub(super) fn put_setting(c: &Connection, key: &str, value: &str, now: Millis) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
    )?
    .execute(params![key, value, now.0])?;
    Ok(())
}

/// The value stored under `key`, storing `value` first when there is none:
/// whoever comes first decides, every later caller reads the same value.
pub fn setting_or_insert(c: &Connection, key: &str, value: &str, now: Millis) -> Result<String> {
    c.prepare_cached("INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?) ON CONFLICT (key) DO NOTHING")?
        .execute(params![key, value, now.0])?;
    c.query_row("SELECT value FROM settings WHERE key = ?", [key], |r| r.get(0))
}

pub fn put_settings(c: &Connection, pairs: &[(String, Option<String>)], by: &str, now: Millis) -> Result<()> {
    let mut remove = c.prepare_cached("DELETE FROM settings WHERE key = ?")?;
    for (k, v) in pairs {
        match v {
            Some(v) => put_setting(c, k, v, now)?,
            None => {
                remove.execute([k])?;
            }
        }
    }
    let detail: Vec<String> = pairs
        .iter()
        .map(|(k, v)| match v {
            Some(v) => format!("{k}={v}"),
            None => format!("{k} reset"),
        })
        .collect();
    agent_event(c, now, "config.changed", None, None, Some(&format!("{} by {by}", detail.join(", "))))
}

pub fn count_quiet_running(c: &Connection, quiet_since: Millis) -> Result<u64> {
    let n: i64 = c.query_row(
        "SELECT COUNT(*) FROM tasks t WHERE t.state = 'running' AND t.started_at < ?1 \
         AND NOT EXISTS (SELECT 1 FROM output o WHERE o.task_id = t.id AND o.epoch = t.epoch AND o.at >= ?1)",
        [quiet_since.0],
        |r| r.get(0),
    )?;
    Ok(n as u64)
}
