//! Checks that passed before and fail now: `regressions`.

use crate::client::{CliResult, ConnArgs};
use crate::output::print_json;
use crate::table::Table;

/// `muster regressions`: newest first.
pub(crate) async fn list(conn: &ConnArgs, json: bool) -> CliResult {
    let client = conn.client()?;
    let all: Vec<muster_proto::api::RegressionView> = client.get("/regressions").await?;
    if json {
        return print_json(&all);
    }
    if all.is_empty() {
        eprintln!("(no regressions)");
        return Ok(());
    }
    let short = |c: &Option<String>| c.as_deref().map_or("-".to_owned(), |c| c.chars().take(12).collect());
    let mut t = Table::new(&["ID", "REPO", "CHECK", "BROKEN BY", "AT COMMIT", "LAST PASSED", "AT COMMIT", "SINCE"]);
    for r in &all {
        t.row(vec![
            format!("#{}", r.id),
            r.repo.clone(),
            r.check.clone(),
            r.task.clone(),
            short(&r.commit),
            r.last_passed_task.clone(),
            short(&r.last_passed_commit),
            r.at.clone(),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}
