//! Agents as an operator manages them: `agent add|list|pause|resume|drain|remove|token`
//! (`agent run`, the worker itself, belongs to the binary).

use crate::client::{CliResult, ConnArgs, segment};
use crate::output::print_json;
use crate::table::{Table, dash};
use clap::{Args, Subcommand};
use muster_proto::api::{AgentAdd, AgentCreated, AgentView};

/// What an operator does with agents; the binary adds `agent run` in front.
#[derive(Debug, Subcommand)]
pub enum AgentCmd {
    /// Register an agent and print its token (shown once).
    Add(AgentAddArgs),
    /// List agents.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Take no new tasks on this agent (its runs go on).
    Pause { name: String },
    /// Let a paused agent take tasks again.
    Resume { name: String },
    /// Finish the agent's runs, take no new ones, then stop the agent.
    Drain { name: String },
    /// Remove an agent: revoke its token and forget it; its tasks' history keeps its name.
    /// Refused while it holds runs, unless --force, which queues them again.
    Remove {
        name: String,
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Revoke the agent's token and print a new one (shown once).
    Token {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct AgentAddArgs {
    /// The agent's name: lowercase letters, digits, '-', '_' and '.'.
    pub name: String,
    /// A capability the agent offers (repeatable).
    #[arg(long = "cap")]
    pub caps: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

/// `muster agent add|list|pause|resume|drain|remove|token`.
pub async fn run(conn: &ConnArgs, cmd: AgentCmd) -> CliResult {
    match cmd {
        AgentCmd::Add(args) => add(conn, args).await,
        AgentCmd::List { json } => list(conn, json).await,
        AgentCmd::Pause { name } => pause(conn, &name, true).await,
        AgentCmd::Resume { name } => pause(conn, &name, false).await,
        AgentCmd::Drain { name } => drain(conn, &name).await,
        AgentCmd::Remove { name, force, json } => remove(conn, &name, force, json).await,
        AgentCmd::Token { name, json } => token(conn, &name, json).await,
    }
}

/// `muster agent add NAME`: registers it and prints its token, once.
async fn add(conn: &ConnArgs, args: AgentAddArgs) -> CliResult {
    let client = conn.client()?;
    let created: AgentCreated = client.post("/agents", &AgentAdd { name: args.name, capabilities: args.caps }).await?;
    if args.json {
        return print_json(&serde_json::json!({ "name": created.name, "token": created.token }));
    }
    println!("{}", created.token);
    eprintln!(
        "agent {} registered (token id {}); the token above is shown only once. Start it with:",
        created.name, created.token_id
    );
    eprintln!("  MUSTER_TOKEN=<token> muster agent run --hub {}", client.base());
    Ok(())
}

/// `muster agent list`.
async fn list(conn: &ConnArgs, json: bool) -> CliResult {
    let client = conn.client()?;
    let agents: Vec<AgentView> = client.get("/agents").await?;
    if json {
        return print_json(&agents);
    }
    let mut t =
        Table::new(&["NAME", "STATE", "SLOTS", "RUNNERS", "CAPABILITIES", "VERSION", "LAST SEEN", "UNAVAILABLE"]);
    for a in &agents {
        t.row(vec![
            a.name.clone(),
            a.state.clone(),
            format!("{}/{}", a.used_slots, a.slots),
            if a.runners.is_empty() { "-".into() } else { a.runners.join(",") },
            if a.capabilities.is_empty() { "-".into() } else { a.capabilities.join(",") },
            dash(a.version.as_ref()),
            dash(a.last_seen_at.as_ref()),
            if a.unavailable.is_empty() { "-".into() } else { a.unavailable.join("; ") },
        ]);
    }
    print!("{}", t.render());
    Ok(())
}

/// `muster agent token NAME`: a new token in place of the old one.
async fn token(conn: &ConnArgs, name: &str, json: bool) -> CliResult {
    let client = conn.client()?;
    let created: AgentCreated = client.post(&format!("/agents/{}/token", segment(name)), &()).await?;
    if json {
        return print_json(&serde_json::json!({ "name": created.name, "token": created.token }));
    }
    println!("{}", created.token);
    eprintln!("agent {}: the old token is revoked; the new one above is shown only once", created.name);
    Ok(())
}

/// `muster agent pause NAME` and, with `pause` false, `muster agent resume NAME`.
async fn pause(conn: &ConnArgs, name: &str, pause: bool) -> CliResult {
    let client = conn.client()?;
    let action = if pause { "pause" } else { "resume" };
    let agent: AgentView = client.post(&format!("/agents/{}/{action}", segment(name)), &()).await?;
    eprintln!("agent {} is {}", agent.name, agent.state);
    Ok(())
}

/// `muster agent drain NAME`: the agent finishes its runs, takes no new ones, and stops.
async fn drain(conn: &ConnArgs, name: &str) -> CliResult {
    let client = conn.client()?;
    let agent: AgentView = client.post(&format!("/agents/{}/drain", segment(name)), &()).await?;
    eprintln!(
        "agent {} is {}: it finishes its {} runs, takes no new ones, then stops",
        agent.name, agent.state, agent.used_slots
    );
    Ok(())
}

/// `muster agent remove NAME [--force]`.
async fn remove(conn: &ConnArgs, name: &str, force: bool, json: bool) -> CliResult {
    let client = conn.client()?;
    let path = format!("/agents/{}{}", segment(name), if force { "?force=true" } else { "" });
    let removed: muster_proto::api::AgentRemoved = client.delete(&path).await?;
    if json {
        return print_json(&removed);
    }
    eprintln!("agent {} removed: its token is revoked; its history keeps its name", removed.name);
    for t in &removed.tasks {
        let became = match t.state.as_str() {
            "queued" => "queued again",
            "failed" => "failed: it had no attempt left",
            "cancelled" => "cancelled, as it had been asked",
            other => other,
        };
        println!("{}\t{became}", t.task);
    }
    Ok(())
}
