//! Active tasks on one repository changing the same files: `conflicts`.

use crate::client::{CliResult, ConnArgs};
use crate::output::print_json;
use crate::table::Table;

/// `muster conflicts`: newest first.
pub(crate) async fn list(conn: &ConnArgs, open: bool, json: bool) -> CliResult {
    let client = conn.client()?;
    let all: Vec<muster_proto::api::ConflictView> =
        client.get(&format!("/conflicts?state={}", if open { "open" } else { "all" })).await?;
    if json {
        return print_json(&all);
    }
    if all.is_empty() {
        eprintln!("(no conflicts)");
        return Ok(());
    }
    let mut t = Table::new(&["ID", "REPO", "GOES ON", "PAUSED", "FILES", "DECISION", "RESOLUTION", "SINCE"]);
    for c in &all {
        let files = if c.files.len() > 3 {
            format!("{} and {} more", c.files[..3].join(", "), c.files.len() - 3)
        } else {
            c.files.join(", ")
        };
        t.row(vec![
            format!("#{}", c.id),
            c.repo.clone(),
            c.winner.clone(),
            c.loser.clone(),
            files,
            c.decision.map_or_else(|| "-".to_owned(), |d| format!("#{d}")),
            c.resolution.clone().unwrap_or_else(|| "open".to_owned()),
            c.created_at.clone(),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}
