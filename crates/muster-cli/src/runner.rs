//! Runners fleet-wide: `runner list|disable|enable`.

use crate::client::{CliResult, ConnArgs, segment};
use crate::output::print_json;
use crate::table::{Table, dash};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum RunnerCmd {
    /// Every runner the hub knows: available, disabled, circuit open, or no agent offers it.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Take a runner out of service fleet-wide: nothing more is dispatched to it; tasks with fallbacks use them.
    Disable {
        name: String,
        /// Why (shown on the timeline and in `muster runner list`).
        #[arg(long)]
        reason: String,
    },
    /// Put a disabled runner back in service.
    Enable { name: String },
}

/// `muster runner ...`
pub(crate) async fn run(conn: &ConnArgs, cmd: RunnerCmd) -> CliResult {
    let client = conn.client()?;
    match cmd {
        RunnerCmd::List { json } => {
            let all: Vec<muster_proto::api::RunnerView> = client.get("/runners").await?;
            if json {
                return print_json(&all);
            }
            let mut t = Table::new(&["RUNNER", "STATUS", "AGENTS", "WHY"]);
            for r in &all {
                let why = match (&r.disabled_reason, &r.disabled_by, &r.until) {
                    (Some(reason), Some(by), Some(until)) => format!("{reason} (by {by}; until {until})"),
                    (Some(reason), Some(by), None) => format!("{reason} (by {by}, {})", dash(r.disabled_at.as_ref())),
                    _ => "-".into(),
                };
                t.row(vec![
                    r.name.clone(),
                    r.status.clone(),
                    if r.agents.is_empty() { "-".into() } else { r.agents.join(", ") },
                    why,
                ]);
            }
            print!("{}", t.render());
            Ok(())
        }
        RunnerCmd::Disable { name, reason } => {
            let body = muster_proto::api::RunnerDisable { reason };
            let _: muster_proto::api::RunnerView =
                client.post(&format!("/runners/{}/disable", segment(&name)), &body).await?;
            eprintln!("runner {name} disabled: nothing more is dispatched to it");
            Ok(())
        }
        RunnerCmd::Enable { name } => {
            let _: muster_proto::api::RunnerView =
                client.post(&format!("/runners/{}/enable", segment(&name)), &()).await?;
            eprintln!("runner {name} enabled");
            Ok(())
        }
    }
}
