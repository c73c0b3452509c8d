//! `keel-loadgen [flags]`: parse the flags, run, print the summary, exit with its status.
//!
//! A watchdog thread is the last line of the time limit: if the run has not wound down a few
//! seconds after the limit, it says so and exits with status 3.

use clap::Parser;
use keel_loadgen::cli::Args;
use keel_loadgen::summary::Summary;
use std::time::{Duration, Instant};

/// How long after the time limit the watchdog waits for the run to wind down by itself.
const WATCHDOG_GRACE: Duration = Duration::from_secs(5);

fn main() {
    let args = Args::parse();
    let plan = match args.into_plan() {
        Ok(plan) => plan,
        Err(error) => {
            eprintln!("keel-loadgen: {error:#}");
            std::process::exit(2);
        }
    };
    spawn_watchdog(
        Instant::now() + plan.time_limit + WATCHDOG_GRACE,
        plan.time_limit,
    );
    let json_path = plan.json_path.clone();
    let summary = match keel_loadgen::driver::run(plan) {
        Ok(summary) => summary,
        Err(error) => {
            eprintln!("keel-loadgen: {error:#}");
            std::process::exit(1);
        }
    };
    print!("{}", summary.render_text());
    if let Some(path) = json_path {
        if let Err(error) = write_json(&path, &summary) {
            eprintln!("keel-loadgen: writing {}: {error:#}", path.display());
            std::process::exit(1);
        }
    }
    std::process::exit(match summary.result.status.as_str() {
        "ok" => 0,
        "time_limit" => 3,
        _ => 4,
    });
}

fn write_json(path: &std::path::Path, summary: &Summary) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(summary)?;
    std::fs::write(path, text + "\n")?;
    Ok(())
}

fn spawn_watchdog(at: Instant, time_limit: Duration) {
    std::thread::spawn(move || {
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        eprintln!(
            "keel-loadgen: the run did not end within its time limit ({time_limit:?}) plus \
             {WATCHDOG_GRACE:?}; exiting"
        );
        std::process::exit(3);
    });
}
