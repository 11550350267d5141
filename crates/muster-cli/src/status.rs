//! How the hub is doing: `status`, `metrics`, `slo` and `diagnose`.

use crate::client::{CliResult, ConnArgs};
use crate::output::print_json;
use crate::table::{Table, clip};
use crate::{CliError, exit};
use muster_proto::api::StatusView;
use std::time::Duration;

/// `muster status`: the hub's state at a glance.
pub(crate) async fn status(conn: &ConnArgs, json: bool) -> CliResult {
    let client = conn.client()?;
    let s: StatusView = client.get("/status").await?;
    if json {
        return print_json(&s);
    }
    let mut notes = String::new();
    if s.draining {
        notes.push_str(" draining");
    }
    if s.dispatch_paused {
        notes.push_str(" DISPATCH PAUSED (muster resume)");
    }
    println!("hub        {} (muster {}, up {}s){notes}", client.base(), s.version, s.uptime_secs);
    let line = |m: &std::collections::BTreeMap<String, u64>, order: &[&str]| {
        order.iter().map(|k| format!("{k} {}", m.get(*k).copied().unwrap_or(0))).collect::<Vec<_>>().join("  ")
    };
    let window = muster_proto::human_duration(Duration::from_secs(s.health.window_secs));
    println!("health     {} (runs ended in the last {window})", s.health.level);
    for reason in &s.health.reasons {
        println!("           - {reason}");
    }
    println!(
        "tasks      {}",
        line(
            &s.tasks,
            &[
                "blocked",
                "pending_approval",
                "queued",
                "assigned",
                "running",
                "succeeded",
                "failed",
                "cancelled",
                "skipped"
            ]
        )
    );
    println!("agents     {}", line(&s.agents, &["idle", "busy", "draining", "paused", "offline"]));
    println!("sockets    {} connected", s.connected_agents);
    // One hub alone says nothing new; several are listed with their duties.
    if s.hubs.len() > 1 || s.hubs.iter().any(|h| !h.leads.is_empty() && !h.this) {
        for (i, h) in s.hubs.iter().enumerate() {
            let state = if h.alive { "up" } else { "gone" };
            let this = if h.this { " (this hub)" } else { "" };
            let leads = if h.leads.is_empty() { "-".to_owned() } else { h.leads.join(",") };
            println!(
                "{}{} {state}{this}  {}  leads {leads}  agents {}",
                if i == 0 { "hubs       " } else { "           " },
                h.name,
                h.url,
                h.agents.len()
            );
        }
    }
    println!("events     {} recorded", s.last_event);
    if !s.workers.is_empty() {
        let states: Vec<String> = s.workers.iter().map(|w| format!("{} {}", w.name, w.state)).collect();
        println!("workers    {}", states.join("  "));
        for w in s.workers.iter().filter(|w| w.last_error.is_some()) {
            let since = w.failing_since.as_deref().unwrap_or("?");
            let error = w.last_error.as_deref().unwrap_or_default();
            let passes =
                if w.failing_passes == 1 { "1 pass".to_owned() } else { format!("{} passes", w.failing_passes) };
            println!("           - {} failing since {since} ({passes} in a row): {error}", w.name);
        }
    }
    Ok(())
}

/// A line of block characters, one per value, scaled to the largest.
fn sparkline(values: &[f64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let max = values.iter().copied().fold(0.0, f64::max);
    values
        .iter()
        .map(|v| if max <= 0.0 { BARS[0] } else { BARS[((v / max) * 7.0).round().clamp(0.0, 7.0) as usize] })
        .collect()
}

/// `muster metrics`: the last hour at a glance.
pub(crate) async fn metrics(conn: &ConnArgs, json: bool) -> CliResult {
    let client = conn.client()?;
    let w: muster_proto::api::MetricsWindow = client.get("/metrics").await?;
    if json {
        return print_json(&w);
    }
    let Some(last) = w.points.last() else {
        println!("no points yet: the window takes one every {} s", w.interval_secs);
        return Ok(());
    };
    let span = muster_proto::human_duration(Duration::from_secs_f64(w.interval_secs * w.points.len() as f64));
    let succeeded: u64 = w.points.iter().map(|p| p.succeeded).sum();
    let failed: u64 = w.points.iter().map(|p| p.failed).sum();
    let ended = succeeded + failed;
    let recent: Vec<&muster_proto::api::MetricsPoint> = w.points.iter().rev().take(30).collect();
    let throughput = recent.iter().map(|p| p.throughput).sum::<f64>() / recent.len() as f64;
    let latency = w.points.iter().rev().find(|p| p.latency_p50.is_some());
    let secs = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3}s"));
    let pct = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{:.0}%", v * 100.0));
    println!("window       last {span} ({} points, one every {} s)", w.points.len(), w.interval_secs);
    println!(
        "queue        {} queued, {} {:+.1}/min; {} running",
        last.queued, w.queue_trend, w.queue_trend_per_min, last.running
    );
    println!("             {}", sparkline(&w.points.iter().map(|p| p.queued as f64).collect::<Vec<_>>()));
    println!("throughput   {throughput:.2} runs/s (last {} points)", recent.len());
    println!(
        "latency      p50 {}  p95 {}  p99 {} (queue wait)",
        secs(latency.and_then(|p| p.latency_p50)),
        secs(latency.and_then(|p| p.latency_p95)),
        secs(latency.and_then(|p| p.latency_p99))
    );
    println!("utilization  {}", pct(last.utilization));
    println!(
        "failures     {failed} of {ended} runs ({})",
        if ended == 0 { "-".to_owned() } else { format!("{:.0}%", failed as f64 * 100.0 / ended as f64) }
    );
    Ok(())
}

/// `muster diagnose`: one report of what is wrong and what to do. Exits 1
/// when it finds a problem.
pub(crate) async fn diagnose(conn: &ConnArgs, json: bool) -> CliResult {
    let client = conn.client()?;
    let d: muster_proto::api::DiagnoseView = client.get("/admin/diagnose").await?;
    if json {
        print_json(&d)?;
    } else {
        println!("hub        {} ({}), {}", client.base(), d.health.level, if d.ready { "ready" } else { "NOT READY" });
        println!("agents     {} of {} online", d.agents_online, d.agents_registered);
        println!("tasks      {} queued, {} running", d.queued, d.running);
        println!("backup     {}", d.last_backup_age_secs.map_or("none yet".to_owned(), |s| format!("{s} s old")));
        if d.problems.is_empty() {
            println!("\nno problems found");
        } else {
            println!("\n{} problems:", d.problems.len());
            for p in &d.problems {
                println!("- [{}] {}", p.area, p.what);
                println!("    next: {}", p.next_step);
            }
        }
        if !d.notes.is_empty() {
            println!("\nnotes:");
            for n in &d.notes {
                println!("- [{}] {}", n.area, n.what);
                println!("    next: {}", n.next_step);
            }
        }
        if !d.recent_log.is_empty() {
            println!("\nrecent warnings and errors in the hub's log:");
            for line in &d.recent_log {
                println!("  {}", clip(line, 200));
            }
        }
    }
    if d.problems.is_empty() {
        Ok(())
    } else {
        Err(CliError::new(exit::FAILURE, format!("{} problems found", d.problems.len())))
    }
}

/// `muster slo`: each objective, its error budget left and how fast it burns.
pub(crate) async fn slo(conn: &ConnArgs, json: bool) -> CliResult {
    let client = conn.client()?;
    let all: Vec<muster_proto::api::SloView> = client.get("/slo").await?;
    if json {
        return print_json(&all);
    }
    let mut t =
        Table::new(&["OBJECTIVE", "TARGET", "WINDOW", "GOOD/TOTAL", "SLI", "BUDGET LEFT", "BURN (1H)", "STATUS"]);
    for s in &all {
        let what =
            format!("{} within {}", s.kind, muster_proto::human_duration(Duration::from_secs_f64(s.threshold_secs)));
        t.row(vec![
            format!("{} ({what})", s.name),
            format!("{}%", s.target * 100.0),
            muster_proto::human_duration(Duration::from_secs(s.window_secs)),
            format!("{}/{}", s.good, s.total),
            s.sli.map_or("-".into(), |v| format!("{:.3}%", v * 100.0)),
            format!("{:.0}%", s.budget_remaining * 100.0),
            format!("{:.2}", s.burn_rate_1h),
            s.status.clone(),
        ]);
    }
    print!("{}", t.render());
    Ok(())
}
