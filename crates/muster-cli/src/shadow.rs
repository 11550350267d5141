//! Shadow mode: `shadow set|clear|list|report`.

use crate::client::{CliResult, ConnArgs};
use crate::output::print_json;
use crate::table::Table;
use clap::Subcommand;

#[derive(Debug, Subcommand)]
pub enum ShadowCmd {
    /// Shadow a share of the tasks that match on another runner.
    Set {
        /// The runner the shadows run on.
        #[arg(long)]
        runner: String,
        /// The share of matching tasks, 0 to 100.
        #[arg(long)]
        percent: f64,
        /// cap=NAME, runner=NAME or priority=LEVEL; a task must match every one (repeatable).
        #[arg(long = "filter")]
        filters: Vec<String>,
    },
    /// Stop shadowing on a runner.
    Clear { runner: String },
    /// The policies in force.
    List {
        #[arg(long)]
        json: bool,
    },
    /// How shadows compare with the tasks they shadow.
    Report {
        #[arg(long)]
        json: bool,
    },
}

/// `muster shadow ...`
pub(crate) async fn run(conn: &ConnArgs, cmd: ShadowCmd) -> CliResult {
    use muster_proto::api::{ShadowPolicy, ShadowReport};
    let client = conn.client()?;
    let show = |all: &[ShadowPolicy]| {
        if all.is_empty() {
            eprintln!("(no shadow policy: only tasks submitted with --shadow are shadowed)");
            return;
        }
        let mut t = Table::new(&["RUNNER", "PERCENT", "FILTERS"]);
        for p in all {
            t.row(vec![
                p.runner.clone(),
                format!("{}%", p.percent),
                if p.filters.is_empty() { "-".into() } else { p.filters.join(" ") },
            ]);
        }
        print!("{}", t.render());
    };
    match cmd {
        ShadowCmd::Set { runner, percent, filters } => {
            let all: Vec<ShadowPolicy> =
                client.put("/shadow/policies", &ShadowPolicy { runner, percent, filters }).await?;
            show(&all);
            Ok(())
        }
        ShadowCmd::Clear { runner } => {
            let all: Vec<ShadowPolicy> =
                client.put("/shadow/policies", &ShadowPolicy { runner, percent: 0.0, filters: Vec::new() }).await?;
            show(&all);
            Ok(())
        }
        ShadowCmd::List { json } => {
            let all: Vec<ShadowPolicy> = client.get("/shadow/policies").await?;
            if json {
                return print_json(&all);
            }
            show(&all);
            Ok(())
        }
        ShadowCmd::Report { json } => {
            let r: ShadowReport = client.get("/shadow/report").await?;
            if json {
                return print_json(&r);
            }
            println!("pairs compared     {}", r.pairs);
            println!("outcomes agree     {} of {}", r.outcome_matches, r.pairs);
            println!(
                "output agrees      {} of {} (after normalising whitespace, times and ids)",
                r.output_matches, r.pairs
            );
            println!("match rate         {:.0}% (both succeeded with the same output)", r.match_rate * 100.0);
            println!("run time           shadow {:+.0} ms on average", r.mean_duration_delta_ms);
            match r.mean_cost_delta_usd {
                Some(d) => println!("cost               shadow {d:+.6} USD on average"),
                None => println!("cost               not comparable (a side reported none)"),
            }
            if !r.by_runner.is_empty() {
                let mut t = Table::new(&["RUNNERS", "PAIRS", "MATCH RATE"]);
                for row in &r.by_runner {
                    t.row(vec![row.runners.clone(), row.pairs.to_string(), format!("{:.0}%", row.match_rate * 100.0)]);
                }
                print!("\n{}", t.render());
            }
            if !r.mismatches.is_empty() {
                let mut t = Table::new(&["TASK", "SHADOW", "RUNNERS", "STATES", "DIFFERS IN"]);
                for m in &r.mismatches {
                    t.row(vec![
                        m.task.clone(),
                        m.shadow.clone(),
                        format!("{} -> {}", m.task_runner, m.shadow_runner),
                        format!("{} / {}", m.task_state, m.shadow_state),
                        m.why.clone(),
                    ]);
                }
                print!("\nmismatches (muster task transcript ID for either side):\n{}", t.render());
            }
            Ok(())
        }
    }
}
