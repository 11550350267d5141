//! What the machine itself did during a run: how fast its disk makes a
//! small write durable, and how much CPU time its host took back. On a
//! virtual machine both move from hour to hour, and a figure means little
//! without them: no acknowledgement can be faster than the fsync under it.

use crate::results::DiskProbe;
use anyhow::Context;
use hdrhistogram::Histogram;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// Bytes each probe write appends: about what one of the hub's commits
/// writes to its log under load.
const PROBE_WRITE: usize = 16 * 1024;
/// The probe's file starts over at this size, as the hub's log does after
/// a checkpoint.
const PROBE_FILE: u64 = 16 * 1024 * 1024;

/// Appends `PROBE_WRITE` bytes and fsyncs, again and again for `span`, in
/// a fresh file under `dir`; the time each fsync took.
pub fn probe_fsync(dir: &Path, span: Duration) -> anyhow::Result<DiskProbe> {
    let path = dir.join("fsync-probe");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    let block = vec![0x5au8; PROBE_WRITE];
    let mut took = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).context("a histogram")?;
    let (began, mut at) = (Instant::now(), 0u64);
    while began.elapsed() < span {
        file.write_all_at(&block, at).with_context(|| format!("cannot write {}", path.display()))?;
        at = (at + PROBE_WRITE as u64) % PROBE_FILE;
        let t = Instant::now();
        file.sync_all().with_context(|| format!("cannot fsync {}", path.display()))?;
        took.saturating_record(t.elapsed().as_micros().max(1) as u64);
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    let ms = |q: f64| took.value_at_quantile(q) as f64 / 1000.0;
    Ok(DiskProbe {
        write_kib: (PROBE_WRITE / 1024) as u64,
        fsyncs: took.len(),
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: took.max() as f64 / 1000.0,
    })
}

/// The CPU time of all cores so far, from `/proc/stat`: (stolen, all), in
/// clock ticks. `None` where there is no such file.
pub fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    parse_cpu_line(stat.lines().next()?)
}

/// The share of CPU time the host took (steal) since `before`, in percent.
pub fn steal_since(before: Option<(u64, u64)>) -> Option<f64> {
    steal_between(before?, cpu_ticks()?)
}

/// The share of CPU time stolen between two readings, in percent; `None`
/// when no time passed between them.
fn steal_between((s0, t0): (u64, u64), (s1, t1): (u64, u64)) -> Option<f64> {
    let all = t1.checked_sub(t0).filter(|d| *d > 0)?;
    Some(s1.saturating_sub(s0) as f64 * 100.0 / all as f64)
}

/// `cpu  user nice system idle iowait irq softirq steal ...`: steal and the
/// sum of the eight (guest time is already counted in user).
fn parse_cpu_line(line: &str) -> Option<(u64, u64)> {
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let ticks: Vec<u64> = fields.take(8).map(|f| f.parse().ok()).collect::<Option<_>>()?;
    (ticks.len() == 8).then(|| (ticks[7], ticks.iter().sum()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_line_gives_steal_and_the_whole() {
        let line = "cpu  100 5 50 800 20 1 4 20 0 0";
        assert_eq!(parse_cpu_line(line), Some((20, 1000)));
        assert_eq!(parse_cpu_line("cpu0 1 2 3 4 5 6 7 8"), None);
        assert_eq!(parse_cpu_line("cpu  1 2 3"), None);
    }

    #[test]
    fn a_probe_times_each_fsync_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let probe = probe_fsync(dir.path(), Duration::from_millis(50)).unwrap();
        assert!(probe.fsyncs > 0);
        assert!(probe.p50_ms <= probe.p99_ms && probe.p99_ms <= probe.p999_ms && probe.p999_ms <= probe.max_ms);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn steal_is_a_share_of_the_time_between_two_readings() {
        assert_eq!(steal_between((20, 1000), (30, 1100)), Some(10.0));
        assert_eq!(steal_between((20, 1000), (20, 1200)), Some(0.0));
        assert_eq!(steal_between((20, 1000), (20, 1000)), None, "no time passed");
        assert_eq!(steal_since(None), None);
        // On this machine: once the clock has ticked, a share of it.
        let before = cpu_ticks();
        assert!(before.is_some(), "this machine has a /proc/stat");
        let deadline = Instant::now() + Duration::from_secs(10);
        let share = loop {
            if let Some(share) = steal_since(before) {
                break share;
            }
            assert!(Instant::now() < deadline, "/proc/stat did not move in 10 s");
            std::hint::black_box((0..100_000u64).sum::<u64>());
        };
        assert!((0.0..=100.0).contains(&share), "{share}");
    }
}
