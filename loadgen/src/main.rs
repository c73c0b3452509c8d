//! `keel-loadgen [flags]`: parse the flags, run, print the summary, exit with its status.
//! `keel-loadgen check FILE`: check a saved history for linearizability.
//! `keel-loadgen failover ...`, `populate ...`, `synced ...`: the ensemble benchmark's tools.
//!
//! A watchdog thread is the last line of the time limit: if the run has not wound down a few
//! seconds after the limit, it says so and exits with status 3.

use clap::Parser;
use keel_loadgen::checker;
use keel_loadgen::cli::{CheckArgs, Cli, Command, CompareArgs};
use serde::Serialize;
use std::time::{Duration, Instant};

/// How long after the time limit the watchdog waits for the run to wind down by itself.
const WATCHDOG_GRACE: Duration = Duration::from_secs(5);

fn main() {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check(args)) => check_file(&args),
        Some(Command::Compare(args)) => compare(*args),
        Some(Command::Failover(args)) => failover(args),
        Some(Command::Populate(args)) => populate(args),
        Some(Command::Synced(args)) => synced(&args),
        None => run(cli.load),
    }
}

fn fail(code: i32, error: &anyhow::Error) -> ! {
    eprintln!("keel-loadgen: {error:#}");
    std::process::exit(code);
}

fn check_file(args: &CheckArgs) {
    let summary = checker::check_file(&args.file, args.check_steps).unwrap_or_else(|e| fail(1, &e));
    print!("{}", summary.render_text());
    write_json_or_exit(args.json.as_deref(), &summary);
    std::process::exit(checker::verdict_exit_code(summary.report.verdict));
}

fn compare(args: CompareArgs) {
    let (plan, a, b, rounds) = args.into_parts().unwrap_or_else(|e| fail(2, &e));
    let limit = plan.time_limit * 2 * rounds as u32;
    spawn_watchdog(Instant::now() + limit + WATCHDOG_GRACE, limit);
    let summary = keel_loadgen::compare::run(&plan, a, b, rounds).unwrap_or_else(|e| fail(1, &e));
    print!("{}", summary.render_text());
    write_json_or_exit(plan.json_path.as_deref(), &summary);
    if let Some(dir) = &plan.plot_dir {
        let (a_run, b_run) = summary.median_runs();
        let runs = [(&*format!("A {a}"), a_run), (&*format!("B {b}"), b_run)];
        let title = format!("{} (median-throughput round)", summary.workload);
        keel_loadgen::plot::write_plots(dir, &runs, &title).unwrap_or_else(|e| fail(1, &e));
    }
    std::process::exit(summary.exit_code());
}

fn failover(args: keel_loadgen::failover::FailoverArgs) {
    let json = args.json.clone();
    let plan = args.into_plan().unwrap_or_else(|e| fail(2, &e));
    let limit = plan.timeout * 2 + plan.attempt_timeout * plan.servers.len() as u32;
    spawn_watchdog(Instant::now() + limit + WATCHDOG_GRACE, limit);
    let summary = keel_loadgen::failover::run(&plan).unwrap_or_else(|e| fail(1, &e));
    print!("{}", summary.render_text());
    write_json_or_exit(json.as_deref(), &summary);
    std::process::exit(summary.exit_code());
}

fn populate(args: keel_loadgen::populate::PopulateArgs) {
    let json = args.json.clone();
    let plan = args.into_plan().unwrap_or_else(|e| fail(2, &e));
    spawn_watchdog(Instant::now() + plan.timeout + WATCHDOG_GRACE, plan.timeout);
    let summary = keel_loadgen::populate::run(&plan).unwrap_or_else(|e| fail(1, &e));
    print!("{}", summary.render_text());
    write_json_or_exit(json.as_deref(), &summary);
}

fn synced(args: &keel_loadgen::synced::SyncedArgs) {
    spawn_watchdog(Instant::now() + args.timeout + WATCHDOG_GRACE, args.timeout);
    let summary = keel_loadgen::synced::run(args).unwrap_or_else(|e| fail(3, &e));
    println!(
        "synced at zxid {:#x} after {:.3} s (first answer after {:.3} s, {} polls)",
        summary.zxid, summary.seconds, summary.first_answer_s, summary.polls
    );
    write_json_or_exit(args.json.as_deref(), &summary);
}

fn run(args: keel_loadgen::cli::Args) {
    let plan = args.into_plan().unwrap_or_else(|e| fail(2, &e));
    spawn_watchdog(
        Instant::now() + plan.time_limit + WATCHDOG_GRACE,
        plan.time_limit,
    );
    let json_path = plan.json_path.clone();
    if plan.checker.is_some() {
        let summary = checker::run(plan).unwrap_or_else(|e| fail(1, &e));
        print!("{}", summary.render_text());
        write_json_or_exit(json_path.as_deref(), &summary);
        std::process::exit(summary.exit_code());
    }
    let plot_dir = plan.plot_dir.clone();
    let summary = keel_loadgen::driver::run(plan).unwrap_or_else(|e| fail(1, &e));
    print!("{}", summary.render_text());
    write_json_or_exit(json_path.as_deref(), &summary);
    if let Some(dir) = plot_dir {
        let name = summary.run.servers.join(",");
        keel_loadgen::plot::write_plots(&dir, &[(&name, &summary)], &summary.run.workload)
            .unwrap_or_else(|e| fail(1, &e));
    }
    std::process::exit(match summary.result.status.as_str() {
        "ok" => 0,
        "time_limit" => 3,
        _ => 4,
    });
}

fn write_json_or_exit(path: Option<&std::path::Path>, value: &impl Serialize) {
    let Some(path) = path else {
        return;
    };
    let result = serde_json::to_string_pretty(value)
        .map_err(anyhow::Error::from)
        .and_then(|text| Ok(std::fs::write(path, text + "\n")?));
    if let Err(error) = result {
        fail(1, &error.context(format!("writing {}", path.display())));
    }
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
