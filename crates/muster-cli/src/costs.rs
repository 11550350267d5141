//! What coding agents spent: `costs`.

use crate::client::{CliResult, ConnArgs, encode};
use crate::output::{print_json, usd};
use crate::table::Table;

/// `muster costs`: tokens and cost, summed by task, agent, runner or day.
pub(crate) async fn run(conn: &ConnArgs, by: &str, since: Option<String>, json: bool) -> CliResult {
    let client = conn.client()?;
    let mut query = vec![("by", by.to_owned())];
    if let Some(s) = since {
        query.push(("since", s));
    }
    let view: muster_proto::api::CostsView = client.get(&format!("/costs?{}", encode(&query))).await?;
    if json {
        return print_json(&view);
    }
    if view.rows.is_empty() {
        eprintln!("(no attempt since {} reported what it used)", view.since);
        return Ok(());
    }
    let key = match view.by.as_str() {
        "task" => "TASK",
        "agent" => "AGENT",
        "runner" => "RUNNER",
        _ => "DAY (UTC)",
    };
    let mut t = Table::new(&[key, "ATTEMPTS", "INPUT", "OUTPUT", "CACHE READ", "CACHE WRITE", "COST (USD)"]);
    for r in view.rows.iter().chain(std::iter::once(&view.total)) {
        let unpriced = r.attempts - r.priced_attempts.min(r.attempts);
        t.row(vec![
            r.key.clone(),
            r.attempts.to_string(),
            r.input_tokens.to_string(),
            r.output_tokens.to_string(),
            r.cache_read_tokens.to_string(),
            r.cache_write_tokens.to_string(),
            {
                let cost = usd(r.cost_usd);
                let cost = cost.trim_start_matches('$');
                if unpriced > 0 { format!("{cost} ({unpriced} unpriced)") } else { cost.to_owned() }
            },
        ]);
    }
    print!("{}", t.render());
    Ok(())
}
