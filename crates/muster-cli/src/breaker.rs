//! Circuit breakers: `breakers`, and `breaker reset NAME`.

use crate::client::{CliResult, ConnArgs, segment, usage};
use crate::output::print_json;
use crate::table::{Table, dash};
use crate::{CliError, exit};
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum BreakerCmd {
    /// Close an agent's or a runner's breaker now, without waiting for a probe.
    Reset {
        /// The agent or runner.
        name: String,
        /// agent or runner; needed only when an agent and a runner share the name.
        #[arg(long, value_parser = ["agent", "runner"])]
        scope: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

fn breakers_table(all: &[muster_proto::api::BreakerView]) -> String {
    let mut t = Table::new(&["SCOPE", "NAME", "STATE", "FAILURES", "OPENED", "HALF-OPENS", "PROBE"]);
    for b in all {
        t.row(vec![
            b.scope.clone(),
            b.name.clone(),
            b.state.replace('_', "-"),
            b.failures.to_string(),
            dash(b.opened_at.as_ref()),
            dash(b.half_opens_at.as_ref()),
            dash(b.probe.as_ref()),
        ]);
    }
    t.render()
}

/// `muster breakers`: every agent's and runner's circuit breaker that has seen a failure.
pub(crate) async fn list(conn: &ConnArgs, json: bool) -> CliResult {
    let client = conn.client()?;
    let all: Vec<muster_proto::api::BreakerView> = client.get("/breakers").await?;
    if json {
        return print_json(&all);
    }
    if all.is_empty() {
        eprintln!("(no breaker has seen a failure: all closed)");
        return Ok(());
    }
    print!("{}", breakers_table(&all));
    Ok(())
}

/// `muster breaker reset NAME`.
pub(crate) async fn run(conn: &ConnArgs, cmd: BreakerCmd) -> CliResult {
    let client = conn.client()?;
    let BreakerCmd::Reset { name, scope, json } = cmd;
    let scope = match scope {
        Some(s) => s,
        None => {
            let all: Vec<muster_proto::api::BreakerView> = client.get("/breakers").await?;
            let scopes: Vec<&str> = all.iter().filter(|b| b.name == name).map(|b| b.scope.as_str()).collect();
            match scopes.as_slice() {
                [one] => (*one).to_owned(),
                [] => {
                    return Err(CliError::new(
                        exit::NOT_FOUND,
                        format!("no breaker named {name:?}; see `muster breakers`"),
                    ));
                }
                _ => {
                    return Err(usage(format!(
                        "{name:?} is both an agent and a runner: add --scope agent or --scope runner"
                    )));
                }
            }
        }
    };
    let b: muster_proto::api::BreakerView =
        client.post(&format!("/breakers/{}/{}/reset", segment(&scope), segment(&name)), &()).await?;
    if json {
        return print_json(&b);
    }
    eprintln!("{} {} closed", b.scope, b.name);
    Ok(())
}
