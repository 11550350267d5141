//! Named locks as an operator sees them: `locks`, `deadlocks`, and `unlock`.

use crate::client::{CliResult, ConnArgs, usage};
use crate::output::print_json;
use crate::table::Table;

/// `muster locks`: who holds which lock, and who waits for one.
pub(crate) async fn list(conn: &ConnArgs, json: bool) -> CliResult {
    let client = conn.client()?;
    let view: muster_proto::api::LocksView = client.get("/locks").await?;
    if json {
        return print_json(&view);
    }
    if view.held.is_empty() && view.waiting.is_empty() {
        eprintln!("(no lock is held)");
        return Ok(());
    }
    let mut t = Table::new(&["LOCK", "MODE", "TASK", "STATE", "SINCE", "WAITS FOR"]);
    for (l, state) in view.held.iter().map(|l| (l, "held")).chain(view.waiting.iter().map(|l| (l, "waiting"))) {
        let waits_for = if l.waits_for.is_empty() { "-".to_owned() } else { l.waits_for.join(", ") };
        t.row(vec![l.name.clone(), l.mode.clone(), l.task.clone(), state.to_owned(), l.since.clone(), waits_for]);
    }
    print!("{}", t.render());
    Ok(())
}

/// `muster deadlocks`: the wait-for graph, one edge per line: a task, the
/// lock it waits for, and the tasks holding it.
pub(crate) async fn deadlocks(conn: &ConnArgs, json: bool) -> CliResult {
    let client = conn.client()?;
    let view: muster_proto::api::LocksView = client.get("/locks").await?;
    if json {
        return print_json(&view.waiting);
    }
    if view.waiting.is_empty() {
        eprintln!("(no task waits for a lock: no edges, no deadlock)");
        return Ok(());
    }
    for w in &view.waiting {
        println!("{} waits for {} ({}), held by {}", w.task, w.name, w.mode, w.waits_for.join(", "));
    }
    eprintln!("(a wait that would close a cycle is refused as it forms: see lock.deadlock in muster events)");
    Ok(())
}

/// `muster unlock NAME` or `muster unlock --all --yes`: an operator's force.
pub(crate) async fn unlock(conn: &ConnArgs, name: Option<String>, all: bool, yes: bool) -> CliResult {
    let client = conn.client()?;
    let body = match (name, all) {
        (Some(name), false) => serde_json::json!({ "name": name }),
        (None, true) if yes => serde_json::json!({ "all": true }),
        (None, true) => return Err(usage("unlock --all takes every lock from its task: add --yes to do it")),
        _ => return Err(usage("give a lock NAME, or --all --yes")),
    };
    let answer: serde_json::Value = client.post("/locks/unlock", &body).await?;
    let released = answer.get("released").and_then(|r| r.as_u64()).unwrap_or(0);
    println!("released {released} lock{}", if released == 1 { "" } else { "s" });
    Ok(())
}
