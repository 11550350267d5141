//! The table `muster bench` prints, and the targets judged from the results.

use crate::Plan;
use crate::results::{Results, Spread, Target};
use std::fmt::Write;

/// Each target of the performance work, judged from what was measured;
/// a target whose scenario did not run is left out.
pub fn targets(r: &Results) -> Vec<Target> {
    let mut out = Vec::new();
    let mut judge = |name: &str, wanted: String, measured: String, met: bool| {
        out.push(Target { name: name.into(), wanted, measured, met });
    };
    let empty = r.throughput.iter().find(|t| t.queued == 0).map(|t| t.finished_per_sec);
    let best_peer = fastest(&r.peers);
    if let (Some(muster), Some(peer)) = (empty, best_peer) {
        let ratio = muster / peer.jobs_per_sec.max(f64::MIN_POSITIVE);
        judge(
            "throughput vs the best peer",
            "at least 3x".into(),
            format!("{ratio:.2}x ({muster:.0}/s vs {} {:.0}/s)", peer.name, peer.jobs_per_sec),
            ratio >= 3.0,
        );
    }
    if let (Some(muster), Some(ceiling)) = (empty, &r.ceiling) {
        let share = muster / ceiling.lives_per_sec;
        judge(
            "throughput vs the write ceiling",
            "at least 50%".into(),
            format!("{:.0}% ({muster:.0}/s vs {:.0}/s)", share * 100.0, ceiling.lives_per_sec),
            share >= 0.5,
        );
    }
    if let Some(half) = r.latency.iter().find(|l| l.label == "half of peak") {
        judge(
            "dispatch latency p99 at half of peak",
            "at most 5 ms".into(),
            format!("{:.2} ms at {:.0}/s", half.p99_ms, half.rate),
            half.p99_ms <= 5.0,
        );
        judge(
            "dispatch latency p99.9 at half of peak",
            "at most 20 ms".into(),
            format!("{:.2} ms at {:.0}/s", half.p999_ms, half.rate),
            half.p999_ms <= 20.0,
        );
    }
    if let Some(a) = &r.agents {
        let how = if a.agents >= 100_000 {
            "measured".to_owned()
        } else {
            format!("projected from {} agents (open-file limit {})", a.agents, a.open_file_limit)
        };
        judge(
            "hub memory with 100,000 idle agents",
            "at most 1024 MiB".into(),
            format!("{:.0} MiB, {how}", a.projected_100k_mib),
            a.projected_100k_mib <= 1024.0,
        );
    }
    if let Some(rec) = &r.recovery {
        judge(
            "restart to first dispatch",
            "at most 1 s, nothing lost".into(),
            format!(
                "{:.3} s with {} queued and {} running, {} lost",
                rec.first_dispatch_s, rec.queued, rec.running, rec.lost
            ),
            rec.first_dispatch_s <= 1.0 && rec.lost == 0,
        );
    }
    if let (Some(base), Some(deep)) = (empty, r.throughput.iter().filter(|t| t.queued > 0).max_by_key(|t| t.queued)) {
        let slower = 1.0 - deep.finished_per_sec / base;
        judge(
            "throughput with the deepest queue",
            "at most 20% below an empty queue".into(),
            format!(
                "{:.0}% {} ({:.0}/s with {} queued, {base:.0}/s empty)",
                slower.abs() * 100.0,
                if slower < 0.0 { "above" } else { "below" },
                deep.finished_per_sec,
                deep.queued
            ),
            slower <= 0.2,
        );
    }
    let one = r.hubs.iter().find(|h| h.hubs == 1).map(|h| h.throughput.finished_per_sec);
    let best_graphile = fastest(&r.graphile_sweep);
    if let (Some(muster), Some(peer)) = (one, best_graphile) {
        let ratio = muster / peer.jobs_per_sec.max(f64::MIN_POSITIVE);
        judge(
            "PostgreSQL: one hub vs graphile-worker at its best",
            "at least 2x".into(),
            format!("{ratio:.2}x ({muster:.0}/s vs {:.0}/s at concurrency {})", peer.jobs_per_sec, peer.concurrency),
            ratio >= 2.0,
        );
    }
    if let (Some(one), Some(three)) = (one, r.hubs.iter().find(|h| h.hubs == 3)) {
        let three = three.throughput.finished_per_sec;
        judge(
            "PostgreSQL: three hubs vs one",
            "faster".into(),
            format!("{:.2}x ({three:.0}/s vs {one:.0}/s)", three / one.max(f64::MIN_POSITIVE)),
            three > one,
        );
    }
    out
}

/// The peer row that ran and did the most jobs a second.
fn fastest(rows: &[crate::results::PeerRow]) -> Option<&crate::results::PeerRow> {
    rows.iter().filter(|p| p.error.is_none()).max_by(|a, b| a.jobs_per_sec.total_cmp(&b.jobs_per_sec))
}

/// How much CPU time the host took back during each measured scenario.
fn steal_line(r: &Results) -> Option<String> {
    let pct = |p: Option<f64>| p.map_or("-".to_owned(), |p| format!("{p:.0}%"));
    let mut parts = Vec::new();
    if r.throughput.iter().any(|t| t.steal_pct.is_some()) {
        let each: Vec<String> =
            r.throughput.iter().map(|t| format!("{} queued {}", t.queued, pct(t.steal_pct))).collect();
        parts.push(format!("throughput ({})", each.join(", ")));
    }
    if r.latency.iter().any(|l| l.steal_pct.is_some()) {
        let each: Vec<String> = r.latency.iter().map(|l| format!("{} {}", l.label, pct(l.steal_pct))).collect();
        parts.push(format!("latency ({})", each.join(", ")));
    }
    if let Some(c) = r.ceiling.as_ref().filter(|c| c.steal_pct.is_some()) {
        parts.push(format!("ceiling {}", pct(c.steal_pct)));
    }
    (!parts.is_empty()).then(|| format!("host steal (CPU time the host took back): {}", parts.join("; ")))
}

/// Muster on PostgreSQL with 1, 2 and 3 hubs beside graphile-worker on the
/// same server at each concurrency tried.
fn hubs_table(s: &mut String, r: &Results) {
    let _ = writeln!(s, "PostgreSQL, one server for all (a fresh database each):");
    let _ = writeln!(s, "| system | setting | tasks | tasks/s | vs one hub | enqueue→start p50 | p99 | p99.9 |");
    let _ = writeln!(s, "|---|---|---:|---:|---:|---:|---:|---:|");
    let one = r.hubs.iter().find(|h| h.hubs == 1).map(|h| h.throughput.finished_per_sec);
    let vs = |rate: f64| one.map_or("-".into(), |o| format!("{:.2}x", rate / o.max(f64::MIN_POSITIVE)));
    for h in &r.hubs {
        let (t, l) = (&h.throughput, &h.latency);
        let _ = writeln!(
            s,
            "| Muster | {} hub(s), {} agents x {} slots | {} | {:.0} | {} | {:.2} ms | {:.2} ms | {:.2} ms |",
            h.hubs,
            t.agents,
            t.slots,
            t.tasks,
            t.finished_per_sec,
            vs(t.finished_per_sec),
            l.p50_ms,
            l.p99_ms,
            l.p999_ms
        );
    }
    for p in &r.graphile_sweep {
        match &p.error {
            Some(e) => {
                let why = e.lines().next().unwrap_or_default().replace('|', "/");
                let _ = writeln!(
                    s,
                    "| {} | concurrency {} | {} | did not run: {why} | | | | |",
                    p.name, p.concurrency, p.tasks
                );
            }
            None => {
                let _ = writeln!(
                    s,
                    "| {} {} | concurrency {} | {} | {:.0} | {} | {:.2} ms | {:.2} ms | {:.2} ms |",
                    p.name,
                    p.version,
                    p.concurrency,
                    p.tasks,
                    p.jobs_per_sec,
                    vs(p.jobs_per_sec),
                    p.p50_ms,
                    p.p99_ms,
                    p.p999_ms
                );
            }
        }
    }
    let _ = writeln!(
        s,
        "(Muster's latency is at half of its own throughput, open loop; graphile-worker's over its closed-loop run.)\n"
    );
}

/// The results as a table for a terminal or a Markdown page.
pub fn table(r: &Results, plan: &Plan) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nmuster bench — {}{}",
        r.machine,
        if r.smoke { " — SMOKE RUN: figures mean nothing" } else { "" }
    );
    let _ =
        writeln!(s, "hub: SQLite WAL, synchronous=FULL; {} agents x {} slots; no-op runner", plan.agents, plan.slots);
    if let Some(d) = &r.disk {
        let _ = writeln!(
            s,
            "disk: fsync after a {} KiB append p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms ({} fsyncs)",
            d.write_kib, d.p50_ms, d.p99_ms, d.p999_ms, d.max_ms, d.fsyncs
        );
    }
    if let Some(line) = steal_line(r) {
        let _ = writeln!(s, "{line}");
    }
    let _ = writeln!(s);
    let muster = r.throughput.iter().find(|t| t.queued == 0);
    if !r.throughput.is_empty() || !r.peers.is_empty() {
        let _ =
            writeln!(s, "| system | queued before | tasks | tasks/s | vs Muster | enqueue→start p50 | p99 | p99.9 |");
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
        let half = r.latency.iter().find(|l| l.label == "half of peak");
        for t in &r.throughput {
            let lat = match (t.queued, half) {
                (0, Some(h)) => format!("{:.2} ms | {:.2} ms | {:.2} ms", h.p50_ms, h.p99_ms, h.p999_ms),
                _ => "- | - | -".into(),
            };
            let _ = writeln!(s, "| Muster | {} | {} | {:.0} | 1.00x | {lat} |", t.queued, t.tasks, t.finished_per_sec);
        }
        for p in &r.peers {
            match &p.error {
                Some(e) => {
                    // The first line says why; the whole error went to stderr and the JSON.
                    let why = e.lines().next().unwrap_or_default().replace('|', "/");
                    let _ = writeln!(s, "| {} | 0 | {} | did not run: {why} | | | | |", p.name, p.tasks);
                }
                None => {
                    let ratio = muster.map_or("-".into(), |m| format!("{:.2}x", p.jobs_per_sec / m.finished_per_sec));
                    let _ = writeln!(
                        s,
                        "| {} {} ({}) | 0 | {} | {:.0} | {ratio} | {:.2} ms | {:.2} ms | {:.2} ms |",
                        p.name, p.version, p.backend, p.tasks, p.jobs_per_sec, p.p50_ms, p.p99_ms, p.p999_ms
                    );
                }
            }
        }
        let _ = writeln!(s);
    }
    if !r.hubs.is_empty() || !r.graphile_sweep.is_empty() {
        hubs_table(&mut s, r);
    }
    if let Some(c) = &r.ceiling {
        let _ = writeln!(
            s,
            "ceiling: {:.0} task lives/s written straight into SQLite, {} per transaction",
            c.lives_per_sec, c.batch
        );
    }
    for l in &r.latency {
        let _ = writeln!(
            s,
            "latency at {} ({:.0}/s, {} tasks): p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms",
            l.label, l.rate, l.tasks, l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms
        );
        if let Some(p) = &l.parts {
            let part = |name: &str, x: &Spread| {
                format!("{name} p50 {:.2}, p99 {:.2}, p99.9 {:.2}, max {:.2}", x.p50_ms, x.p99_ms, x.p999_ms, x.max_ms)
            };
            let _ = writeln!(
                s,
                "  of which (ms): {}; {}; {}",
                part("harness lag", &p.send_lag),
                part("API acknowledgement", &p.submit),
                part("after it", &p.after_ack)
            );
        }
        if let Some(c) = &l.commits {
            let _ = writeln!(
                s,
                "  hub commits meanwhile (log write and fsync): {}, of which {} over 5 ms, {} over 50 ms, {} over 500 ms; the slowest at most {:.0} ms",
                c.commits, c.over_5ms, c.over_50ms, c.over_500ms, c.slowest_at_most_ms
            );
        }
    }
    if let Some(a) = &r.agents {
        let _ = writeln!(
            s,
            "idle agents: {} connected ({} asked, open-file limit {}): hub {:.0} → {:.0} MiB, {:.1} KiB each, 100k → {:.0} MiB; \
             {:.0} heartbeats/s cost {:.3} cores ({:.0} µs each; 100k at {:.0} s → {:.2} cores)",
            a.agents,
            a.requested,
            a.open_file_limit,
            a.rss_before_mib,
            a.rss_after_mib,
            a.per_agent_kib,
            a.projected_100k_mib,
            a.heartbeats_per_sec,
            a.cpu_cores,
            a.cpu_us_per_heartbeat,
            a.heartbeat_s,
            a.projected_100k_cpu_cores
        );
    }
    if let Some(rec) = &r.recovery {
        let _ = writeln!(
            s,
            "recovery: SIGKILL with {} queued and {} running; listening after {:.3} s, first dispatch after {:.3} s; \
             tasks {} before, {} after, {} runs dropped, {} lost",
            rec.queued,
            rec.running,
            rec.listening_s,
            rec.first_dispatch_s,
            rec.tasks_before,
            rec.tasks_after,
            rec.runs_dropped,
            rec.lost
        );
    }
    if !r.targets.is_empty() {
        let _ = writeln!(s, "\n| target | wanted | measured | met |");
        let _ = writeln!(s, "|---|---|---|---|");
        for t in &r.targets {
            let met = match (r.smoke, t.met) {
                (true, _) => "not judged (smoke)",
                (false, true) => "yes",
                (false, false) => "NO",
            };
            let _ = writeln!(s, "| {} | {} | {} | {met} |", t.name, t.wanted, t.measured);
        }
    }
    s
}
