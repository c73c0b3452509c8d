//! compare: `keel-loadgen compare --a H:P --b H:P --rounds N`, the same workload run against
//! two servers in turn (A, B, A, B, …), summarised figure by figure.
//!
//! Owns: the round loop and the comparison (medians, the ratio B/A and its spread over rounds).
//! Each run is an ordinary `driver::run` with its own run id, so runs never share nodes; a run
//! that fails ends the comparison with the reason.

use crate::driver;
use crate::plan::Plan;
use crate::summary::{round_to, Summary};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::net::SocketAddr;

pub const ROUNDS_MAX: usize = 100;

/// The figures compared, from each run's `all` row: (name, getter).
type Getter = fn(&Summary) -> f64;
const FIGURES: [(&str, Getter); 4] = [
    ("ops/s", |s| s.result.throughput_ops_per_s),
    ("p50_us", |s| all_row(s).latency_us.p50),
    ("p99_us", |s| all_row(s).latency_us.p99),
    ("p99.9_us", |s| all_row(s).latency_us.p99_9),
];

fn all_row(summary: &Summary) -> &crate::summary::OpSummary {
    summary
        .operations
        .last()
        .expect("op_rows always ends with `all`")
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FigureRow {
    pub figure: String,
    pub a_median: f64,
    pub b_median: f64,
    /// b_median / a_median (0 when a_median is 0).
    pub ratio_b_over_a: f64,
    /// The smallest and largest per-round ratio B/A.
    pub ratio_min: f64,
    pub ratio_max: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Round {
    pub round: usize,
    pub a: Summary,
    pub b: Summary,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompareSummary {
    pub a: String,
    pub b: String,
    pub rounds: usize,
    pub workload: String,
    pub figures: Vec<FigureRow>,
    /// Each run's full summary, in the order they ran.
    pub runs: Vec<Round>,
}

fn median(values: &mut [f64]) -> f64 {
    assert!(!values.is_empty());
    values.sort_by(f64::total_cmp);
    let middle = values.len() / 2;
    if values.len() % 2 == 1 {
        values[middle]
    } else {
        (values[middle - 1] + values[middle]) / 2.0
    }
}

fn ratio(b: f64, a: f64) -> f64 {
    if a == 0.0 {
        0.0
    } else {
        b / a
    }
}

/// The comparison of finished rounds.
pub fn compare_rows(rounds: &[Round]) -> Vec<FigureRow> {
    FIGURES
        .iter()
        .map(|(name, get)| {
            let mut a: Vec<f64> = rounds.iter().map(|r| get(&r.a)).collect();
            let mut b: Vec<f64> = rounds.iter().map(|r| get(&r.b)).collect();
            let ratios: Vec<f64> = rounds.iter().map(|r| ratio(get(&r.b), get(&r.a))).collect();
            let (a_median, b_median) = (median(&mut a), median(&mut b));
            FigureRow {
                figure: (*name).to_string(),
                a_median: round_to(a_median, 1),
                b_median: round_to(b_median, 1),
                ratio_b_over_a: round_to(ratio(b_median, a_median), 3),
                ratio_min: round_to(ratios.iter().copied().fold(f64::INFINITY, f64::min), 3),
                ratio_max: round_to(ratios.iter().copied().fold(0.0, f64::max), 3),
            }
        })
        .collect()
}

/// Runs `rounds` rounds of A then B with `plan`'s workload.
///
/// # Errors
/// A run failed (setup, or no session connected); the message names the round and server.
pub fn run(plan: &Plan, a: SocketAddr, b: SocketAddr, rounds: usize) -> Result<CompareSummary> {
    assert!((1..=ROUNDS_MAX).contains(&rounds));
    let mut done = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let mut pair = Vec::with_capacity(2);
        for (label, server) in [("a", a), ("b", b)] {
            let mut one = plan.clone();
            one.servers = vec![server];
            one.run_id = format!("{}-r{round}{label}", plan.run_id);
            one.json_path = None;
            if plan.progress {
                eprintln!("keel-loadgen compare: round {round}, server {label} = {server}");
            }
            let summary = driver::run(one)
                .with_context(|| format!("compare round {round}, server {label} = {server}"))?;
            pair.push(summary);
        }
        let b_summary = pair.pop().expect("two runs");
        let a_summary = pair.pop().expect("two runs");
        done.push(Round {
            round,
            a: a_summary,
            b: b_summary,
        });
    }
    Ok(CompareSummary {
        a: a.to_string(),
        b: b.to_string(),
        rounds,
        workload: done[0].a.run.workload.clone(),
        figures: compare_rows(&done),
        runs: done,
    })
}

impl CompareSummary {
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "keel-loadgen compare: A = {}, B = {}, {} rounds run A,B alternately, workload {}",
            self.a, self.b, self.rounds, self.workload
        );
        for round in &self.runs {
            let _ = writeln!(
                out,
                "round {}: A {} {:.1} ops/s, B {} {:.1} ops/s",
                round.round,
                round.a.result.status,
                round.a.result.throughput_ops_per_s,
                round.b.result.status,
                round.b.result.throughput_ops_per_s
            );
        }
        let _ = writeln!(
            out,
            "\n{:<10} {:>12} {:>12} {:>8} {:>17}",
            "figure", "A median", "B median", "B/A", "B/A min-max"
        );
        for row in &self.figures {
            let spread = format!("{:.3}-{:.3}", row.ratio_min, row.ratio_max);
            let _ = writeln!(
                out,
                "{:<10} {:>12.1} {:>12.1} {:>8.3} {:>17}",
                row.figure, row.a_median, row.b_median, row.ratio_b_over_a, spread
            );
        }
        out
    }

    /// 0 when every run was clean, 3 if one hit its time limit, else 4 if one counted errors.
    pub fn exit_code(&self) -> i32 {
        let statuses = self
            .runs
            .iter()
            .flat_map(|r| [r.a.result.status.as_str(), r.b.result.status.as_str()]);
        let mut code = 0;
        for status in statuses {
            code = match (status, code) {
                ("time_limit", _) => 3,
                ("ok", code) => code,
                (_, 0) => 4,
                (_, code) => code,
            };
        }
        code
    }

    /// The round whose A (or B) throughput is the median, for plots.
    pub fn median_runs(&self) -> (&Summary, &Summary) {
        let pick = |get: fn(&Round) -> &Summary| {
            let mut order: Vec<&Round> = self.runs.iter().collect();
            order.sort_by(|x, y| {
                get(x)
                    .result
                    .throughput_ops_per_s
                    .total_cmp(&get(y).result.throughput_ops_per_s)
            });
            get(order[order.len() / 2])
        };
        (pick(|r| &r.a), pick(|r| &r.b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        // The middle value, or the mean of the two middle ones.
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(ratio(5.0, 0.0), 0.0);
    }
}
