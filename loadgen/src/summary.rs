//! The final figures. `Summary` is built once; the text summary is rendered from it and the
//! `--json` file is the same struct serialised, so both always hold the same figures. Every
//! figure is rounded to the precision the text prints before it is stored.

use crate::stats::{new_histogram, Recorder};
use crate::workload::OpKind;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub run: RunInfo,
    pub result: ResultInfo,
    /// One row per operation type that ran, then `all`.
    pub operations: Vec<OpSummary>,
    pub errors_by_cause: BTreeMap<String, u64>,
    pub error_examples: BTreeMap<String, String>,
    pub sessions: SessionInfo,
    pub generator_cpu: CpuInfo,
    /// Open loop: how late the generator sent ops against their intended times.
    pub send_lag_us: Option<Percentiles>,
    /// `ok`, or why setup's nodes may be left behind.
    pub teardown: String,
    /// The `all` row's latency at percentiles spaced evenly on a log(1/(1-p)) axis, for plots.
    #[serde(default)]
    pub latency_spectrum_us: Vec<SpectrumPoint>,
    /// Completed ops per second of the whole load (warmup and drain too), one point per
    /// progress interval, for plots.
    #[serde(default)]
    pub throughput_timeline: Vec<TimelinePoint>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SpectrumPoint {
    pub percentile: f64,
    pub latency_us: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// Seconds since the load started (end of the interval).
    pub t_s: f64,
    pub ops_per_s: f64,
}

/// Points per decade of 1/(1-p) in the latency spectrum.
const SPECTRUM_POINTS_PER_DECADE: u32 = 10;
/// The spectrum stops at 99.9999%.
const SPECTRUM_DECADES_MAX: u32 = 6;

/// The latency spectrum of `latency_ns`: p = 1 - 10^(-k/10) for k = 0, 1, …, as far as the
/// sample count supports (1/(1-p) at most the count), then the maximum at 100%.
pub fn spectrum(latency_ns: &Histogram<u64>) -> Vec<SpectrumPoint> {
    let count = latency_ns.len();
    if count == 0 {
        return Vec::new();
    }
    let us = |ns: u64| round_to(ns as f64 / 1_000.0, 1);
    let mut points = Vec::new();
    for k in 0..=SPECTRUM_POINTS_PER_DECADE * SPECTRUM_DECADES_MAX {
        let tail = 10f64.powf(-f64::from(k) / f64::from(SPECTRUM_POINTS_PER_DECADE));
        if 1.0 / tail > count as f64 {
            break;
        }
        let quantile = 1.0 - tail;
        points.push(SpectrumPoint {
            percentile: round_to(quantile * 100.0, 6),
            latency_us: us(latency_ns.value_at_quantile(quantile)),
        });
    }
    points.push(SpectrumPoint {
        percentile: 100.0,
        latency_us: us(latency_ns.max()),
    });
    points
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub run_id: String,
    pub servers: Vec<String>,
    /// `closed-loop` or `open-loop`.
    pub mode: String,
    pub target_rate_ops_per_s: Option<f64>,
    pub sessions: usize,
    pub outstanding_per_session: usize,
    pub threads: usize,
    pub workload: String,
    pub keys: u64,
    pub key_distribution: String,
    pub value_bytes: usize,
    pub warmup_s: f64,
    pub duration_s: f64,
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultInfo {
    /// `ok`, `errors` (the run finished but counted errors) or `time_limit`.
    pub status: String,
    pub measured_s: f64,
    pub ops: u64,
    pub errors: u64,
    pub throughput_ops_per_s: f64,
    /// Open loop: ops due by the end that were never sent.
    pub backlog_at_end_ops: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OpSummary {
    pub op: String,
    pub ops: u64,
    pub errors: u64,
    pub throughput_ops_per_s: f64,
    pub latency_us: Percentiles,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    #[serde(rename = "p99.9")]
    pub p99_9: f64,
    #[serde(rename = "p99.99")]
    pub p99_99: f64,
    pub max: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub total: usize,
    pub ready_at_start: usize,
    pub reconnects: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CpuInfo {
    pub user_s: f64,
    pub system_s: f64,
    /// Wall time of the load (connect, warmup, measurement, drain, close).
    pub wall_s: f64,
    /// (user + system) / wall: how many cores the generator kept busy.
    pub cores_used: f64,
    /// Generator CPU per measured op.
    pub cpu_us_per_op: f64,
}

/// Rounds to `decimals` places, the precision the text prints.
pub fn round_to(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

impl Percentiles {
    pub fn of(latency_ns: &Histogram<u64>) -> Percentiles {
        let us = |ns: u64| round_to(ns as f64 / 1_000.0, 1);
        let at = |quantile: f64| {
            if latency_ns.is_empty() {
                0.0
            } else {
                us(latency_ns.value_at_quantile(quantile))
            }
        };
        Percentiles {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            p99_9: at(0.999),
            p99_99: at(0.9999),
            max: if latency_ns.is_empty() {
                0.0
            } else {
                us(latency_ns.max())
            },
        }
    }
}

/// The latencies of every op type together.
pub fn all_latencies(recorder: &Recorder) -> Histogram<u64> {
    let mut all = new_histogram();
    for stats in &recorder.per_op {
        let _ = all.add(&stats.latency_ns);
    }
    all
}

/// The per-op rows and the `all` row from the merged recorder.
pub fn op_rows(recorder: &Recorder, measured_s: f64) -> Vec<OpSummary> {
    let rate = |ops: u64| {
        round_to(
            if measured_s > 0.0 {
                ops as f64 / measured_s
            } else {
                0.0
            },
            1,
        )
    };
    let mut rows = Vec::new();
    let mut all = new_histogram();
    let (mut all_ops, mut all_errors) = (0, 0);
    for kind in OpKind::ALL {
        let stats = &recorder.per_op[kind.index()];
        if stats.ok_count == 0 && stats.error_count == 0 {
            continue;
        }
        let _ = all.add(&stats.latency_ns);
        all_ops += stats.ok_count;
        all_errors += stats.error_count;
        rows.push(OpSummary {
            op: kind.name().to_string(),
            ops: stats.ok_count,
            errors: stats.error_count,
            throughput_ops_per_s: rate(stats.ok_count),
            latency_us: Percentiles::of(&stats.latency_ns),
        });
    }
    rows.push(OpSummary {
        op: "all".to_string(),
        ops: all_ops,
        errors: all_errors,
        throughput_ops_per_s: rate(all_ops),
        latency_us: Percentiles::of(&all),
    });
    rows
}

impl Summary {
    /// The text summary; every figure in it comes from `self`.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        self.render_header(&mut out);
        let _ = writeln!(
            out,
            "\n{:<18} {:>10} {:>8} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "op",
            "ops",
            "errors",
            "ops/s",
            "p50_us",
            "p90_us",
            "p99_us",
            "p99.9_us",
            "p99.99_us",
            "max_us"
        );
        for row in &self.operations {
            let l = &row.latency_us;
            let _ = writeln!(
                out,
                "{:<18} {:>10} {:>8} {:>11.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
                row.op,
                row.ops,
                row.errors,
                row.throughput_ops_per_s,
                l.p50,
                l.p90,
                l.p99,
                l.p99_9,
                l.p99_99,
                l.max
            );
        }
        self.render_footer(&mut out);
        out
    }

    fn render_header(&self, out: &mut String) {
        let run = &self.run;
        let rate = run
            .target_rate_ops_per_s
            .map_or(String::new(), |rate| format!(" at {rate:.1} ops/s"));
        let _ = writeln!(
            out,
            "keel-loadgen run {}: {}{rate}, {} sessions x {} outstanding, {} threads, servers {}",
            run.run_id,
            run.mode,
            run.sessions,
            run.outstanding_per_session,
            run.threads,
            run.servers.join(",")
        );
        let _ = writeln!(
            out,
            "workload {}, {} keys {}, {}-byte values, warmup {:.3} s, duration {:.3} s, seed {}",
            run.workload,
            run.keys,
            run.key_distribution,
            run.value_bytes,
            run.warmup_s,
            run.duration_s,
            run.seed
        );
        let result = &self.result;
        let _ = writeln!(
            out,
            "status {}: {} ops, {} errors in {:.3} s = {:.1} ops/s",
            result.status,
            result.ops,
            result.errors,
            result.measured_s,
            result.throughput_ops_per_s
        );
    }

    fn render_footer(&self, out: &mut String) {
        if self.errors_by_cause.is_empty() {
            let _ = writeln!(out, "\nerrors by cause: none");
        } else {
            let _ = writeln!(out, "\nerrors by cause:");
        }
        for (cause, count) in &self.errors_by_cause {
            let example = self.error_examples.get(cause).map_or("", String::as_str);
            let _ = writeln!(out, "  {cause}: {count} (first: {example})");
        }
        let sessions = &self.sessions;
        let _ = writeln!(
            out,
            "sessions: {}/{} ready at start, {} reconnects",
            sessions.ready_at_start, sessions.total, sessions.reconnects
        );
        if let Some(lag) = &self.send_lag_us {
            let _ = writeln!(
                out,
                "open-loop send lag (sent - intended): p50 {:.1} us, p99 {:.1} us, max {:.1} us; \
                 backlog at end: {} ops due but not sent",
                lag.p50, lag.p99, lag.max, self.result.backlog_at_end_ops
            );
        }
        let cpu = &self.generator_cpu;
        let _ = writeln!(
            out,
            "generator cpu: {:.3} s user + {:.3} s system over {:.3} s = {:.2} cores, {:.2} us/op",
            cpu.user_s, cpu.system_s, cpu.wall_s, cpu.cores_used, cpu.cpu_us_per_op
        );
        let _ = writeln!(out, "teardown: {}", self.teardown);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_microseconds_rounded_as_printed() {
        // 1..=1000 µs uniformly: p50 near 500 µs, max 1000 µs, one decimal.
        let mut histogram = new_histogram();
        for us in 1..=1000u64 {
            histogram.record(us * 1_000).unwrap();
        }
        let p = Percentiles::of(&histogram);
        assert!((p.p50 - 500.0).abs() < 1.0, "{p:?}");
        assert!((p.max - 1000.0).abs() < 1.0, "{p:?}");
        assert_eq!(p.p99, round_to(p.p99, 1));
        assert_eq!(Percentiles::of(&new_histogram()).max, 0.0);
    }

    #[test]
    fn the_spectrum_is_monotone_and_ends_at_the_max() {
        // 1..=10000 µs: the first point is the minimum, points rise, 99% is near 9900 µs,
        // nothing past what 10,000 samples support (99.99%), then the max at 100%.
        let mut histogram = new_histogram();
        for us in 1..=10_000u64 {
            histogram.record(us * 1_000).unwrap();
        }
        let points = spectrum(&histogram);
        assert!(points
            .windows(2)
            .all(|w| w[0].latency_us <= w[1].latency_us));
        assert!(points.windows(2).all(|w| w[0].percentile < w[1].percentile));
        let p99 = points.iter().find(|p| p.percentile == 99.0).unwrap();
        assert!((p99.latency_us - 9900.0).abs() < 20.0, "{p99:?}");
        let last = points.last().unwrap();
        assert_eq!(last.percentile, 100.0);
        assert!((last.latency_us - 10_000.0).abs() < 10.0);
        assert_eq!(points[points.len() - 2].percentile, 99.99);
        assert!(spectrum(&new_histogram()).is_empty());
    }

    #[test]
    fn empty_ops_are_left_out_and_all_sums_the_rest() {
        // Only op types that ran get a row; `all` adds them up.
        let mut recorder = Recorder::new(0, 1_000_000);
        recorder.record_reply(OpKind::GetData, 10, 50_010, 0);
        recorder.record_reply(OpKind::SetData, 20, 80_020, 0);
        recorder.record_reply(OpKind::SetData, 30, 90_030, -103);
        let rows = op_rows(&recorder, 2.0);
        let names: Vec<&str> = rows.iter().map(|row| row.op.as_str()).collect();
        assert_eq!(names, ["getData", "setData", "all"]);
        assert_eq!((rows[2].ops, rows[2].errors), (2, 1));
        assert_eq!(rows[2].throughput_ops_per_s, 1.0);
        assert!(
            (rows[2].latency_us.max - 80.0).abs() <= 0.1,
            "{:?}",
            rows[2]
        );
    }
}
