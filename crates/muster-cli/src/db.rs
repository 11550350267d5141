//! The database's upkeep: `db`, `compact` and `check`.

use crate::client::{CliResult, ConnArgs};
use crate::output::print_json;
use crate::{CliError, exit};
use std::time::Duration;

/// `muster compact`: applies retention and gives free space back, now.
pub(crate) async fn compact(conn: &ConnArgs, json: bool) -> CliResult {
    let client = conn.client()?;
    let c: muster_proto::api::CompactView =
        client.post_waiting("/admin/compact", &(), Duration::from_secs(3600)).await?;
    if json {
        return print_json(&c);
    }
    println!(
        "pruned     {} finished tasks, the output of {} more ({}), {} events",
        c.tasks_pruned,
        c.outputs_pruned,
        bytes(c.output_bytes_pruned),
        c.events_pruned
    );
    println!(
        "database   {} -> {}{}",
        bytes(c.bytes_before),
        bytes(c.bytes_after),
        if c.rewritten { " (rewritten once to give space back step by step)" } else { "" }
    );
    println!("took       {} ms", c.took_ms);
    Ok(())
}

/// `muster db`: the database's size, free space, last backup and compaction.
pub(crate) async fn show(conn: &ConnArgs, json: bool) -> CliResult {
    let client = conn.client()?;
    let d: muster_proto::api::DbView = client.get("/admin/db").await?;
    if json {
        return print_json(&d);
    }
    println!("database     {} {}", d.backend, d.path.as_deref().unwrap_or("-"));
    println!("size         {} (+ {} write-ahead log)", bytes(d.bytes), bytes(d.wal_bytes));
    println!(
        "free         {} of {} pages ({:.1}%){}",
        d.free_pages,
        d.pages,
        d.free_ratio * 100.0,
        match (d.auto_vacuum.as_str(), d.free_ratio > 0.25) {
            ("incremental", true) => ": muster compact gives them back",
            ("incremental", false) => "",
            _ => ": reused, never given back until muster compact rewrites the file once",
        }
    );
    println!("rows         {} tasks, {} events, {} of output", d.tasks, d.events, bytes(d.output_bytes));
    println!("retention    tasks {}, output {}, events {}", d.retention.tasks, d.retention.output, d.retention.events);
    match &d.last_compaction {
        Some(c) => println!("compacted    {} ({}); every {}", c.at, c.summary, d.compact_interval),
        None => println!("compacted    never; every {}", d.compact_interval),
    }
    match &d.last_backup {
        Some(b) => println!("backed up    {} ({}, {})", b.created_at, b.file, bytes(b.bytes)),
        None => println!("backed up    never: run muster backup"),
    }
    Ok(())
}

/// Bytes as people read them: `812 B`, `4.2 MiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{n} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}

/// `muster check [--repair]`: exits 0 when nothing is wrong (after a repair,
/// when nothing is left), 1 otherwise.
pub(crate) async fn check(conn: &ConnArgs, repair: bool, json: bool) -> CliResult {
    let client = conn.client()?;
    let path = if repair { "/admin/check?repair=true" } else { "/admin/check" };
    let report: muster_proto::api::CheckView = client.post(path, &()).await?;
    if json {
        print_json(&report)?;
    } else {
        if report.findings.is_empty() {
            println!("ok: the database's integrity check and every invariant pass");
        }
        for f in &report.findings {
            println!("{:<10} {}", f.kind, f.detail);
        }
        for r in &report.repaired {
            println!("repaired   {r}");
        }
    }
    match (repair, report.remaining.len()) {
        (_, 0) => Ok(()),
        (true, n) => Err(CliError::new(exit::FAILURE, format!("{n} findings remain that a repair cannot fix"))),
        (false, n) => {
            Err(CliError::new(exit::FAILURE, format!("{n} findings; `muster check --repair` fixes what it can")))
        }
    }
}
