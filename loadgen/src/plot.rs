//! plot: `--plot-dir`, hand-written SVG line plots of the latency spectrum and of throughput
//! over time.
//!
//! Owns: axes, ticks, labels and polylines for one or more series. Must not: pull in a plotting
//! library; the plots are simple on purpose. The latency plot follows HdrHistogram's percentile
//! plots: x is the percentile on a log scale of 1/(1-p), so 90%, 99%, 99.9% … are evenly
//! spaced, and the last point (100%, the maximum) sits a quarter decade past the one before it.

use crate::summary::{SpectrumPoint, Summary, TimelinePoint};
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::Path;

const WIDTH_PX: f64 = 800.0;
const HEIGHT_PX: f64 = 480.0;
const MARGIN_LEFT_PX: f64 = 80.0;
const MARGIN_RIGHT_PX: f64 = 20.0;
const MARGIN_TOP_PX: f64 = 40.0;
const MARGIN_BOTTOM_PX: f64 = 60.0;
const Y_TICKS: usize = 5;
const COLORS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e"];
/// Where the 100% (max) point goes past the last finite one, in decades of 1/(1-p).
const MAX_POINT_OFFSET_DECADES: f64 = 0.25;

/// One line: its legend name and its (x, y) points in data units.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XAxis {
    Linear,
    /// x holds percentiles in [0, 100]; drawn on log10(1/(1-p)).
    Percentile,
}

/// A series of the spectrum, x in percent.
pub fn spectrum_series(name: &str, points: &[SpectrumPoint]) -> Series {
    Series {
        name: name.to_string(),
        points: points
            .iter()
            .map(|p| (p.percentile, p.latency_us))
            .collect(),
    }
}

pub fn timeline_series(name: &str, points: &[TimelinePoint]) -> Series {
    Series {
        name: name.to_string(),
        points: points.iter().map(|p| (p.t_s, p.ops_per_s)).collect(),
    }
}

/// Writes `latency.svg` and `throughput.svg` into `dir` (created if missing), one series per
/// (name, summary).
///
/// # Errors
/// The directory or a file cannot be written.
pub fn write_plots(dir: &Path, runs: &[(&str, &Summary)], title: &str) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("--plot-dir {}", dir.display()))?;
    let latency: Vec<Series> = runs
        .iter()
        .map(|(name, s)| spectrum_series(name, &s.latency_spectrum_us))
        .collect();
    let throughput: Vec<Series> = runs
        .iter()
        .map(|(name, s)| timeline_series(name, &s.throughput_timeline))
        .collect();
    let files = [
        (
            "latency.svg",
            svg(
                &format!("{title}: latency by percentile"),
                ("percentile", "latency (us)"),
                XAxis::Percentile,
                &latency,
            ),
        ),
        (
            "throughput.svg",
            svg(
                &format!("{title}: throughput over time"),
                ("time since load start (s)", "ops/s"),
                XAxis::Linear,
                &throughput,
            ),
        ),
    ];
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// log10(1/(1-p)) for p in percent below 100.
fn percentile_position(percent: f64) -> f64 {
    let tail = (1.0 - percent / 100.0).max(1e-12);
    -tail.log10()
}

/// Maps each series' x to drawing units (the percentile transform, and the max point).
fn x_positions(axis: XAxis, points: &[(f64, f64)]) -> Vec<(f64, f64)> {
    if axis == XAxis::Linear {
        return points.to_vec();
    }
    let mut last_finite = 0.0f64;
    points
        .iter()
        .map(|&(p, y)| {
            if p >= 100.0 {
                (last_finite + MAX_POINT_OFFSET_DECADES, y)
            } else {
                last_finite = percentile_position(p);
                (last_finite, y)
            }
        })
        .collect()
}

/// A round step (1, 2 or 5 × 10^k) giving about `ticks` intervals over `span`.
fn nice_step(span: f64, ticks: usize) -> f64 {
    let raw = (span / ticks as f64).max(f64::MIN_POSITIVE);
    let magnitude = 10f64.powf(raw.log10().floor());
    let fraction = raw / magnitude;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

fn format_tick(value: f64) -> String {
    if value.abs() >= 1e6 {
        format!("{:.1}M", value / 1e6)
    } else if value.abs() >= 1e4 {
        format!("{:.0}k", value / 1e3)
    } else if value.fract().abs() < 1e-9 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// One plot as an SVG document.
pub fn svg(
    title: &str,
    (x_label, y_label): (&str, &str),
    axis: XAxis,
    series: &[Series],
) -> String {
    let drawn: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| x_positions(axis, &s.points))
        .collect();
    let all = drawn.iter().flatten();
    let x_max = all.clone().map(|p| p.0).fold(0.0f64, f64::max).max(1e-9);
    let x_min = match axis {
        XAxis::Percentile => 0.0,
        XAxis::Linear => all
            .clone()
            .map(|p| p.0)
            .fold(f64::INFINITY, f64::min)
            .min(x_max),
    };
    let x_min = if x_min.is_finite() {
        x_min.min(0.0)
    } else {
        0.0
    };
    let y_max = all.map(|p| p.1).fold(0.0f64, f64::max).max(1e-9) * 1.05;
    let plot_w = WIDTH_PX - MARGIN_LEFT_PX - MARGIN_RIGHT_PX;
    let plot_h = HEIGHT_PX - MARGIN_TOP_PX - MARGIN_BOTTOM_PX;
    let to_px = |x: f64, y: f64| {
        (
            MARGIN_LEFT_PX + (x - x_min) / (x_max - x_min).max(1e-9) * plot_w,
            MARGIN_TOP_PX + plot_h - y / y_max * plot_h,
        )
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH_PX}" height="{HEIGHT_PX}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#,
        WIDTH_PX / 2.0,
        escape(title)
    );
    let (left, bottom) = to_px(x_min, 0.0);
    let (right, top) = (left + plot_w, MARGIN_TOP_PX);
    let _ = writeln!(
        out,
        r#"<path d="M{left:.1},{top:.1} L{left:.1},{bottom:.1} L{right:.1},{bottom:.1}" stroke="black" fill="none"/>"#
    );
    // y ticks and grid
    let y_step = nice_step(y_max, Y_TICKS);
    let mut y = 0.0;
    while y <= y_max {
        let (_, py) = to_px(x_min, y);
        let _ = writeln!(
            out,
            r##"<line x1="{left:.1}" y1="{py:.1}" x2="{right:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            left - 6.0,
            py + 4.0,
            format_tick(y)
        );
        y += y_step;
    }
    // x ticks
    for (x, label) in x_ticks(axis, x_min, x_max) {
        let (px, _) = to_px(x, 0.0);
        let _ = writeln!(
            out,
            r#"<line x1="{px:.1}" y1="{bottom:.1}" x2="{px:.1}" y2="{:.1}" stroke="black"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            bottom + 5.0,
            bottom + 18.0,
            escape(&label)
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        left + plot_w / 2.0,
        HEIGHT_PX - 15.0,
        escape(x_label)
    );
    let _ = writeln!(
        out,
        r#"<text transform="translate(18,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        MARGIN_TOP_PX + plot_h / 2.0,
        escape(y_label)
    );
    for (index, (s, points)) in series.iter().zip(&drawn).enumerate() {
        let color = COLORS[index % COLORS.len()];
        let mut path = String::new();
        for &(x, y) in points {
            let (px, py) = to_px(x, y);
            let _ = write!(path, "{px:.1},{py:.1} ");
        }
        let _ = writeln!(
            out,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
            path.trim_end()
        );
        let legend_y = MARGIN_TOP_PX + 14.0 + 18.0 * index as f64;
        let _ = writeln!(
            out,
            r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{color}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            left + 12.0,
            legend_y - 4.0,
            left + 36.0,
            legend_y - 4.0,
            left + 42.0,
            legend_y,
            escape(&s.name)
        );
    }
    out.push_str("</svg>\n");
    out
}

fn x_ticks(axis: XAxis, x_min: f64, x_max: f64) -> Vec<(f64, String)> {
    match axis {
        XAxis::Percentile => {
            let labels = ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"];
            labels
                .iter()
                .enumerate()
                .map(|(decade, label)| (decade as f64, label.to_string()))
                .filter(|(x, _)| *x <= x_max)
                .collect()
        }
        XAxis::Linear => {
            let step = nice_step(x_max - x_min, 8);
            let mut ticks = Vec::new();
            let mut x = (x_min / step).ceil() * step;
            while x <= x_max + 1e-9 && ticks.len() < 100 {
                ticks.push((x, format_tick(x)));
                x += step;
            }
            ticks
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_spaced_by_decades_of_the_tail() {
        // 90% is one decade from 0%, 99.9% three; the max sits a quarter decade past the last.
        assert!((percentile_position(90.0) - 1.0).abs() < 1e-9);
        assert!((percentile_position(99.9) - 3.0).abs() < 1e-9);
        let drawn = x_positions(XAxis::Percentile, &[(0.0, 1.0), (99.0, 5.0), (100.0, 9.0)]);
        assert!((drawn[1].0 - 2.0).abs() < 1e-9);
        assert!((drawn[2].0 - 2.25).abs() < 1e-9);
    }

    #[test]
    fn an_svg_has_every_series_and_its_axes() {
        // Two series: two polylines with as many points as given, legends, tick labels.
        let a = Series {
            name: "A <keel>".to_string(),
            points: vec![(0.0, 10.0), (90.0, 20.0), (99.0, 50.0), (100.0, 80.0)],
        };
        let b = Series {
            name: "B".to_string(),
            points: vec![(0.0, 12.0), (90.0, 30.0)],
        };
        let text = svg(
            "t",
            ("percentile", "latency (us)"),
            XAxis::Percentile,
            &[a, b],
        );
        assert_eq!(text.matches("<polyline").count(), 2);
        assert!(text.contains("A &lt;keel&gt;"));
        assert!(text.contains(">99%<") && text.contains(">90%<"));
        let first = text.split("points=\"").nth(1).unwrap();
        let points = first.split('"').next().unwrap();
        assert_eq!(points.split(' ').count(), 4);
        assert!(text.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn nice_steps_are_round() {
        // Spans map to 1, 2 or 5 times a power of ten.
        assert_eq!(nice_step(100.0, 5), 20.0);
        assert_eq!(nice_step(7.0, 5), 2.0);
        assert_eq!(nice_step(4500.0, 5), 1000.0);
    }
}
