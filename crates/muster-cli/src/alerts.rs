//! Alert rules and their state: `alerts`, `alerts ack RULE`.

use crate::client::{CliResult, ConnArgs, segment};
use crate::output::print_json;
use crate::table::{Table, dash};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum AlertsCmd {
    /// Acknowledge a firing alert: someone is on it.
    Ack { rule: String },
}

/// `muster alerts`: every rule, its state and why.
pub(crate) async fn run(conn: &ConnArgs, cmd: Option<AlertsCmd>, json: bool) -> CliResult {
    let client = conn.client()?;
    if let Some(AlertsCmd::Ack { rule }) = cmd {
        let a: muster_proto::api::AlertView = client.post(&format!("/alerts/{}/ack", segment(&rule)), &()).await?;
        if json {
            return print_json(&a);
        }
        eprintln!("{} acknowledged", a.rule);
        return Ok(());
    }
    let all: Vec<muster_proto::api::AlertView> = client.get("/alerts").await?;
    if json {
        return print_json(&all);
    }
    let mut t = Table::new(&["RULE", "STATE", "SEVERITY", "SINCE", "DETAIL"]);
    for a in &all {
        let state = match (&a.acknowledged_by, a.state.as_str()) {
            (Some(by), "acknowledged") => format!("acknowledged by {by}"),
            _ if !a.enabled => "off".to_owned(),
            _ => a.state.clone(),
        };
        let detail = if a.state == "resolved" { "-".to_owned() } else { dash(a.detail.as_ref()) };
        let since = if a.state == "resolved" { "-".to_owned() } else { dash(a.since.as_ref()) };
        t.row(vec![a.rule.clone(), state, a.severity.clone(), since, detail]);
    }
    print!("{}", t.render());
    Ok(())
}
