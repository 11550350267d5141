//! Counters, histograms and label families, and their rendering in the
//! Prometheus text exposition format.
//!
//! Recording is lock-free for plain metrics and one short mutex for labelled
//! families. Label values must come from bounded sets (a route template, an
//! outcome name), never from ids or user input.

use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.add(1);
    }

    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Bucket bounds (seconds) for latencies from a millisecond to minutes.
pub const LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];
/// Bucket bounds (seconds) for run durations, a second to a day.
pub const DURATION_BUCKETS: &[f64] =
    &[0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0];
/// Bucket bounds for counts such as changes per commit.
pub const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// A distribution of observations in fixed buckets.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One count per bound, plus the +Inf bucket; not cumulative.
    counts: Vec<AtomicU64>,
    /// The sum of observations, as f64 bits.
    sum: AtomicU64,
}

/// A histogram's state at one instant, with cumulative buckets.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// `(upper bound, observations at or below it)`, ending with +Inf.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: f64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Histogram {
        debug_assert!(bounds.windows(2).all(|w| w[0] < w[1]), "bounds must increase");
        Histogram { bounds, counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(), sum: AtomicU64::new(0) }
    }

    pub fn observe(&self, value: f64) {
        let value = if value.is_finite() { value.max(0.0) } else { 0.0 };
        let i = self.bounds.iter().position(|b| value <= *b).unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| Some((f64::from_bits(bits) + value).to_bits()));
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut running = 0;
        let mut buckets = Vec::with_capacity(self.counts.len());
        for (i, c) in self.counts.iter().enumerate() {
            running += c.load(Ordering::Relaxed);
            buckets.push((self.bounds.get(i).copied().unwrap_or(f64::INFINITY), running));
        }
        HistogramSnapshot { buckets, count: running, sum: f64::from_bits(self.sum.load(Ordering::Relaxed)) }
    }
}

/// Metrics of one kind keyed by label values.
#[derive(Debug)]
pub struct Family<T> {
    labels: &'static [&'static str],
    make: fn() -> T,
    /// Sorted by label values, so a lookup (every request makes some)
    /// allocates nothing; short critical sections only.
    members: Mutex<Vec<(Vec<String>, std::sync::Arc<T>)>>,
}

impl<T> Family<T> {
    pub fn new(labels: &'static [&'static str], make: fn() -> T) -> Family<T> {
        Family { labels, make, members: Mutex::new(Vec::new()) }
    }

    /// The member for these label values (in the order of `labels`).
    pub fn with(&self, values: &[&str]) -> std::sync::Arc<T> {
        debug_assert_eq!(values.len(), self.labels.len());
        let mut members = self.members.lock().expect("metrics lock poisoned");
        match members.binary_search_by(|(key, _)| key.iter().map(String::as_str).cmp(values.iter().copied())) {
            Ok(i) => members[i].1.clone(),
            Err(i) => {
                let member = std::sync::Arc::new((self.make)());
                members.insert(i, (values.iter().map(|v| v.to_string()).collect(), member.clone()));
                member
            }
        }
    }

    fn each(&self, mut f: impl FnMut(Vec<(&'static str, String)>, &T)) {
        let members = self.members.lock().expect("metrics lock poisoned");
        for (values, member) in members.iter() {
            f(self.labels.iter().copied().zip(values.iter().cloned()).collect(), member);
        }
    }
}

/// Label pairs for one sample.
pub type Labels = Vec<(&'static str, String)>;

/// Builds a Prometheus text exposition.
#[derive(Default)]
pub struct Exposition {
    out: String,
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\n', "\\n").replace('"', "\\\"")
}

fn label_text(labels: &[(&'static str, String)], extra: Option<(&str, String)>) -> String {
    let mut parts: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
    if let Some((k, v)) = extra {
        parts.push(format!("{k}=\"{v}\""));
    }
    if parts.is_empty() { String::new() } else { format!("{{{}}}", parts.join(",")) }
}

fn number(v: f64) -> String {
    if v == f64::INFINITY {
        "+Inf".into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

impl Exposition {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", help.replace('\\', "\\\\").replace('\n', "\\n"));
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// A gauge with one sample per label set.
    pub fn gauge(&mut self, name: &str, help: &str, samples: &[(Labels, f64)]) {
        self.header(name, "gauge", help);
        for (labels, v) in samples {
            let _ = writeln!(self.out, "{name}{} {}", label_text(labels, None), number(*v));
        }
    }

    /// A counter; `name` must end in `_total`.
    pub fn counter(&mut self, name: &str, help: &str, samples: &[(Labels, u64)]) {
        debug_assert!(name.ends_with("_total"));
        self.header(name, "counter", help);
        for (labels, v) in samples {
            let _ = writeln!(self.out, "{name}{} {v}", label_text(labels, None));
        }
    }

    /// A counter family kept in integer units and shown divided (e.g. micro-dollars as dollars).
    pub fn counter_family_divided(&mut self, name: &str, help: &str, family: &Family<Counter>, divisor: f64) {
        debug_assert!(name.ends_with("_total"));
        self.header(name, "counter", help);
        family.each(|labels, c| {
            let _ = writeln!(self.out, "{name}{} {}", label_text(&labels, None), number(c.get() as f64 / divisor));
        });
    }

    pub fn counter_family(&mut self, name: &str, help: &str, family: &Family<Counter>) {
        let mut samples = Vec::new();
        family.each(|labels, c| samples.push((labels, c.get())));
        self.counter(name, help, &samples);
    }

    pub fn histogram(&mut self, name: &str, help: &str, samples: &[(Labels, HistogramSnapshot)]) {
        self.header(name, "histogram", help);
        for (labels, h) in samples {
            for (bound, n) in &h.buckets {
                let _ = writeln!(self.out, "{name}_bucket{} {n}", label_text(labels, Some(("le", number(*bound)))));
            }
            let _ = writeln!(self.out, "{name}_sum{} {}", label_text(labels, None), number(h.sum));
            let _ = writeln!(self.out, "{name}_count{} {}", label_text(labels, None), h.count);
        }
    }

    pub fn histogram_family(&mut self, name: &str, help: &str, family: &Family<Histogram>) {
        let mut samples = Vec::new();
        family.each(|labels, h| samples.push((labels, h.snapshot())));
        self.histogram(name, help, &samples);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_are_cumulative_and_sum_their_observations() {
        let h = Histogram::new(&[1.0, 5.0]);
        for v in [0.5, 1.0, 3.0, 9.0, f64::NAN] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.buckets, vec![(1.0, 3), (5.0, 4), (f64::INFINITY, 5)]);
        assert_eq!(s.count, 5);
        assert_eq!(s.sum, 13.5);
    }

    #[test]
    fn a_family_finds_each_member_again_and_lists_them_in_order() {
        let f: Family<Counter> = Family::new(&["route", "status"], Counter::default);
        f.with(&["/b", "200"]).inc();
        f.with(&["/a", "500"]).inc();
        f.with(&["/a", "200"]).inc();
        f.with(&["/b", "200"]).add(2);
        f.with(&["/a", "20"]).inc();
        let mut seen = Vec::new();
        f.each(|labels, c| seen.push((labels.into_iter().map(|(_, v)| v).collect::<Vec<_>>().join(" "), c.get())));
        let want = [("/a 20", 1), ("/a 200", 1), ("/a 500", 1), ("/b 200", 3)];
        assert_eq!(seen, want.map(|(l, n)| (l.to_owned(), n)));
    }

    #[test]
    fn exposition_is_prometheus_text() {
        let f: Family<Counter> = Family::new(&["outcome"], Counter::default);
        f.with(&["failed"]).add(2);
        f.with(&["succeeded"]).inc();
        let h = Histogram::new(&[0.5]);
        h.observe(0.25);
        let mut e = Exposition::default();
        e.counter_family("muster_x_total", "Things.", &f);
        e.histogram("muster_y_seconds", "Time \"taken\".", &[(vec![("route", "/a\"b".into())], h.snapshot())]);
        e.gauge("muster_z", "A level.", &[(vec![], 1.5)]);
        assert_eq!(
            e.finish(),
            "# HELP muster_x_total Things.\n# TYPE muster_x_total counter\n\
             muster_x_total{outcome=\"failed\"} 2\nmuster_x_total{outcome=\"succeeded\"} 1\n\
             # HELP muster_y_seconds Time \"taken\".\n# TYPE muster_y_seconds histogram\n\
             muster_y_seconds_bucket{route=\"/a\\\"b\",le=\"0.5\"} 1\nmuster_y_seconds_bucket{route=\"/a\\\"b\",le=\"+Inf\"} 1\n\
             muster_y_seconds_sum{route=\"/a\\\"b\"} 0.25\nmuster_y_seconds_count{route=\"/a\\\"b\"} 1\n\
             # HELP muster_z A level.\n# TYPE muster_z gauge\nmuster_z 1.5\n"
        );
    }
}
