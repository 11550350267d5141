//! Runtime settings: `config`, `config set|reset`, and alert rules' settings (`config alerts`).

use crate::client::{CliResult, ConnArgs};
use crate::output::print_json;
use crate::table::Table;
use crate::{CliError, Client, exit};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Change settings: `muster config set heartbeat_interval=5s retention.output=7d`.
    Set {
        /// KEY=VALUE pairs, applied together or not at all.
        #[arg(required = true, value_name = "KEY=VALUE")]
        pairs: Vec<String>,
    },
    /// Return settings to their startup values (muster.toml, environment, flags).
    Reset {
        #[arg(required = true, value_name = "KEY")]
        keys: Vec<String>,
    },
    /// Alert rules' settings; `set` changes them at once, no restart.
    Alerts {
        #[command(subcommand)]
        cmd: Option<AlertConfigCmd>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AlertConfigCmd {
    /// Change one rule's settings.
    Set {
        rule: String,
        #[arg(long, allow_negative_numbers = true)]
        threshold: Option<f64>,
        /// warning or critical.
        #[arg(long)]
        severity: Option<String>,
        #[arg(long)]
        enabled: Option<bool>,
    },
}

/// A value as typed on the command line, as JSON: numbers and booleans as
/// such, everything else as a string (durations, names, `off`).
fn typed(value: &str) -> serde_json::Value {
    match value {
        "true" => true.into(),
        "false" => false.into(),
        _ if value.bytes().all(|b| b.is_ascii_digit() || b == b'-') && value.parse::<i64>().is_ok() => {
            value.parse::<i64>().map_or_else(|_| value.into(), serde_json::Value::from)
        }
        _ => match value.parse::<f64>() {
            Ok(n) if value.bytes().all(|b| b.is_ascii_digit() || b == b'.' || b == b'-') => {
                serde_json::Number::from_f64(n).map_or_else(|| value.into(), serde_json::Value::Number)
            }
            _ => value.into(),
        },
    }
}

/// `muster config [set K=V... | reset K... | alerts ...]`.
pub(crate) async fn run(conn: &ConnArgs, cmd: Option<ConfigCmd>, json: bool) -> CliResult {
    let client = conn.client()?;
    let view: muster_proto::api::ConfigView = match cmd {
        None => client.get("/config").await?,
        Some(ConfigCmd::Set { pairs }) => {
            let mut patch = serde_json::Map::new();
            for pair in &pairs {
                let Some((key, value)) = pair.split_once('=') else {
                    return Err(CliError::new(
                        exit::USAGE,
                        format!("{pair:?}: write KEY=VALUE, for example heartbeat_interval=5s"),
                    ));
                };
                patch.insert(key.trim().to_owned(), typed(value.trim()));
            }
            let view = client.put("/config", &patch).await?;
            eprintln!("applied; in force now and kept across restarts (muster config reset KEY undoes it)");
            view
        }
        Some(ConfigCmd::Reset { keys }) => {
            let patch: serde_json::Map<String, serde_json::Value> =
                keys.iter().map(|k| (k.clone(), serde_json::Value::Null)).collect();
            let view = client.put("/config", &patch).await?;
            eprintln!("back to the startup values");
            view
        }
        Some(ConfigCmd::Alerts { cmd, json }) => return alert_config(&client, cmd, json).await,
    };
    if json {
        return print_json(&view);
    }
    let show = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        other => other.to_string(),
    };
    let mut t = Table::new(&["KEY", "VALUE", "SET", "MEANING"]);
    for s in &view.settings {
        let set = if s.runtime { format!("at runtime (startup: {})", show(&s.startup)) } else { "startup".into() };
        t.row(vec![s.key.clone(), show(&s.value), set, s.description.clone()]);
    }
    print!("{}", t.render());
    Ok(())
}

async fn alert_config(client: &Client, cmd: Option<AlertConfigCmd>, json: bool) -> CliResult {
    let configs: std::collections::BTreeMap<String, muster_proto::api::RuleConfigView> = match cmd {
        None => client.get("/config/alerts").await?,
        Some(AlertConfigCmd::Set { rule, threshold, severity, enabled }) => {
            let patch = muster_proto::api::RuleConfigPatch { enabled, severity, threshold };
            let body = std::collections::BTreeMap::from([(rule.clone(), patch)]);
            let updated = client.put("/config/alerts", &body).await?;
            eprintln!("{rule} updated; it applies at the next evaluation");
            updated
        }
    };
    if json {
        return print_json(&configs);
    }
    let mut t = Table::new(&["RULE", "ENABLED", "SEVERITY", "THRESHOLD", "MEANING"]);
    for (rule, c) in &configs {
        t.row(vec![
            rule.clone(),
            c.enabled.to_string(),
            c.severity.clone(),
            c.threshold.to_string(),
            c.threshold_meaning.clone(),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}
