//! driver: one run from start to end — setup, the workers, the progress line, teardown and
//! the summary — all inside the run's time limit.

use crate::cpu::CpuTimes;
use crate::plan::{duration_ns, Clock, Mode, Plan};
use crate::scenario::ScenarioWorkload;
use crate::stats::{Live, Recorder};
use crate::summary::{self, round_to, CpuInfo, ResultInfo, RunInfo, SessionInfo, Summary};
use crate::sync_client::SyncClient;
use crate::worker::{self, ConnectReport, Start, WorkerResult, WorkerSetup};
use crate::workload::{KvWorkload, Workload};
use crate::workload_file::MixWorkload;
use anyhow::{anyhow, bail, Context, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The first op is sent this long after the start signal, so every worker gets it in time.
const START_DELAY_NS: u64 = 20_000_000;
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// How often the driver looks at the workers and the clock between progress lines.
const DRIVER_TICK: Duration = Duration::from_millis(20);

/// Builds the workload the flags ask for.
pub fn workload_of(plan: &Plan) -> Arc<dyn Workload> {
    let value: Vec<u8> = (0..plan.value_bytes)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    if let Some(mix) = &plan.mix {
        let value_min_bytes = mix.value_bytes.map_or(plan.value_bytes, |(min, _)| min);
        return Arc::new(MixWorkload {
            kv: KvWorkload {
                prefix: plan.prefix(),
                keys: plan.keys.clone(),
                value: value.into(),
                read_pct: 0,
            },
            mix: mix.clone(),
            value_min_bytes,
        });
    }
    if let Some(kind) = plan.scenario {
        return Arc::new(ScenarioWorkload::new(
            kind,
            plan.prefix(),
            plan.keys.count(),
            (plan.threads, plan.sessions),
            value.into(),
        ));
    }
    Arc::new(KvWorkload {
        prefix: plan.prefix(),
        keys: plan.keys.clone(),
        value: value.into(),
        read_pct: plan.read_pct,
    })
}

/// Runs the whole thing and returns the summary; a run cut by the time limit still returns
/// what it measured, with status `time_limit`.
///
/// # Errors
/// Setup failed, or no session could connect: nothing was measured.
pub fn run(plan: Plan) -> Result<Summary> {
    plan.assert_valid();
    let started = Instant::now();
    let deadline = started + plan.time_limit;
    let plan = Arc::new(plan);
    let workload = workload_of(&plan);
    let setup_started = Instant::now();
    let mut client = open_client(&plan, deadline).context("setup")?;
    if let Err(error) = workload.setup(&mut client) {
        client.close();
        let teardown = teardown(&plan, workload.as_ref(), deadline);
        return Err(error.context(format!("setup failed (teardown: {teardown})")));
    }
    client.close();
    note(
        &plan,
        &format!(
            "setup: {} keys under {} in {:.3} s",
            plan.keys.count(),
            plan.prefix(),
            setup_started.elapsed().as_secs_f64()
        ),
    );
    let load = run_load(&plan, workload.as_ref(), Clock::new(started), deadline);
    let teardown = match &load {
        Ok(load) if load.hit_time_limit => {
            format!(
                "skipped at the time limit; nodes are left under {}",
                plan.prefix()
            )
        }
        _ => teardown(&plan, workload.as_ref(), deadline),
    };
    let load = load?;
    Ok(build_summary(&plan, workload.as_ref(), load, teardown))
}

fn open_client(plan: &Plan, deadline: Instant) -> Result<SyncClient> {
    let io_timeout = plan.request_timeout.max(plan.connect_timeout);
    SyncClient::connect(&plan.servers, plan.session_timeout_ms, io_timeout, deadline)
}

/// Best effort; says what happened.
fn teardown(plan: &Plan, workload: &dyn Workload, deadline: Instant) -> String {
    let result = open_client(plan, deadline).and_then(|mut client| {
        workload.teardown(&mut client)?;
        client.close();
        Ok(())
    });
    match result {
        Ok(()) => "ok".to_string(),
        Err(error) => format!(
            "incomplete, nodes may be left under {}: {error:#}",
            plan.prefix()
        ),
    }
}

fn note(plan: &Plan, line: &str) {
    if plan.progress {
        eprintln!("keel-loadgen: {line}");
    }
}

/// What the load phase produced.
struct LoadResult {
    recorder: Recorder,
    sessions_ready_at_start: usize,
    reconnects: u64,
    backlog_at_end: u64,
    hit_time_limit: bool,
    cpu: CpuTimes,
    wall: Duration,
    /// The measured window, shorter than --duration if the time limit cut it.
    measured: Duration,
    timeline: Vec<summary::TimelinePoint>,
}

struct Workers {
    handles: Vec<JoinHandle<std::io::Result<WorkerResult>>>,
    starts: Vec<SyncSender<Start>>,
    reports: std::sync::mpsc::Receiver<ConnectReport>,
    live: Arc<Mutex<Live>>,
    abort: Arc<AtomicBool>,
}

fn spawn_workers(
    plan: &Arc<Plan>,
    workload: &dyn Workload,
    clock: Clock,
    deadline: Instant,
) -> Result<Workers> {
    let live = Arc::new(Mutex::new(Live::default()));
    let abort = Arc::new(AtomicBool::new(false));
    let (report_tx, reports) = sync_channel(plan.threads);
    let mut handles = Vec::with_capacity(plan.threads);
    let mut starts = Vec::with_capacity(plan.threads);
    for index in 0..plan.threads {
        let (start_tx, start_rx) = sync_channel(1);
        let setup = WorkerSetup {
            index,
            plan: plan.clone(),
            clock,
            generator: workload.generator(index, plan.sessions_of(index)),
            live: live.clone(),
            abort: abort.clone(),
            deadline_ns: clock.ns_of(deadline),
            reports: report_tx.clone(),
            start: start_rx,
        };
        let handle = std::thread::Builder::new()
            .name(format!("loadgen-{index}"))
            .spawn(move || worker::run(setup))
            .context("spawning a worker thread")?;
        handles.push(handle);
        starts.push(start_tx);
    }
    Ok(Workers {
        handles,
        starts,
        reports,
        live,
        abort,
    })
}

fn run_load(
    plan: &Arc<Plan>,
    workload: &dyn Workload,
    clock: Clock,
    deadline: Instant,
) -> Result<LoadResult> {
    let cpu_before = CpuTimes::now();
    let load_started = Instant::now();
    let workers = spawn_workers(plan, workload, clock, deadline)?;
    let mut ready = 0;
    for _ in 0..plan.threads {
        let wait = deadline.saturating_duration_since(Instant::now());
        match workers.reports.recv_timeout(wait) {
            Ok(report) => ready += report.ready,
            Err(_) => break,
        }
    }
    let start_ns = clock.now_ns() + START_DELAY_NS;
    let signal = if ready > 0 {
        Start::Go { start_ns }
    } else {
        Start::Abort
    };
    for start in &workers.starts {
        let _ = start.try_send(signal);
    }
    note(
        plan,
        &format!("{ready}/{} sessions ready; load starts", plan.sessions),
    );
    let timeline = watch_progress(plan, &workers, clock, start_ns, deadline);
    let results = join_workers(workers.handles)?;
    let cpu = CpuTimes::now().since(&cpu_before);
    let wall = load_started.elapsed();
    let mut recorder = Recorder::new(0, 0);
    for result in &results {
        recorder.merge(&result.recorder);
    }
    let window_start_ns = start_ns + duration_ns(plan.warmup);
    let mut window_end_ns = window_start_ns + duration_ns(plan.duration);
    let hit_time_limit = results.iter().any(|r| r.hit_time_limit);
    if hit_time_limit {
        window_end_ns = window_end_ns.min(clock.ns_of(deadline));
    }
    let measured = Duration::from_nanos(window_end_ns.saturating_sub(window_start_ns));
    if ready == 0 {
        let why: Vec<String> = recorder.error_examples.values().cloned().collect();
        bail!(
            "no session could connect to {:?}: {}",
            plan.servers,
            why.join("; ")
        );
    }
    Ok(LoadResult {
        sessions_ready_at_start: results.iter().map(|r| r.sessions_ready_at_start).sum(),
        reconnects: results.iter().map(|r| r.reconnects).sum(),
        backlog_at_end: results.iter().map(|r| r.backlog_at_end).sum(),
        hit_time_limit,
        recorder,
        cpu,
        wall,
        measured,
        timeline,
    })
}

fn join_workers(
    handles: Vec<JoinHandle<std::io::Result<WorkerResult>>>,
) -> Result<Vec<WorkerResult>> {
    handles
        .into_iter()
        .map(|handle| {
            handle
                .join()
                .map_err(|_| anyhow!("a worker thread panicked"))?
                .context("a worker could not start its event loop")
        })
        .collect()
}

/// Prints the progress line once a second until every worker has finished, and a last one
/// then; sets the abort flag at the time limit (the workers also watch it themselves).
/// Returns the throughput of each interval.
fn watch_progress(
    plan: &Plan,
    workers: &Workers,
    clock: Clock,
    start_ns: u64,
    deadline: Instant,
) -> Vec<summary::TimelinePoint> {
    let mut progress = Progress {
        run_started: deadline - plan.time_limit,
        load_started: Instant::now(),
        last_line: Instant::now(),
        errors_total: 0,
        timeline: Vec::new(),
    };
    let mut next_line = Instant::now() + PROGRESS_EVERY;
    while !workers.handles.iter().all(JoinHandle::is_finished) {
        std::thread::sleep(DRIVER_TICK);
        let now = Instant::now();
        if now >= deadline {
            workers.abort.store(true, Ordering::Relaxed);
        }
        if now >= next_line {
            let phase = phase_name(plan, clock.now_ns(), start_ns);
            progress.print_line(plan, &workers.live, phase);
            next_line = now + PROGRESS_EVERY;
        }
    }
    progress.print_line(plan, &workers.live, "done");
    progress.timeline
}

/// At most this many throughput points are kept (one a second: over a day).
const TIMELINE_POINTS_MAX: usize = 100_000;

struct Progress {
    run_started: Instant,
    load_started: Instant,
    last_line: Instant,
    errors_total: u64,
    timeline: Vec<summary::TimelinePoint>,
}

impl Progress {
    /// One line from the figures the workers flushed since the last one.
    fn print_line(&mut self, plan: &Plan, live: &Mutex<Live>, phase: &str) {
        let now = Instant::now();
        let interval_s = now.duration_since(self.last_line).as_secs_f64().max(1e-3);
        let mut live = live.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        self.errors_total += live.error_count;
        // A short last interval (the drain) would plot as a spike or a drop: left out.
        let full_interval = interval_s >= PROGRESS_EVERY.as_secs_f64() / 2.0;
        if full_interval && self.timeline.len() < TIMELINE_POINTS_MAX {
            self.timeline.push(summary::TimelinePoint {
                t_s: round_to(now.duration_since(self.load_started).as_secs_f64(), 3),
                ops_per_s: round_to(live.ok_count as f64 / interval_s, 1),
            });
        }
        let line = format!(
            "[{:>4}s] {:<7} {:>9.0} ops/s  p99 {:>9.1} us  errors {}  sessions {}/{}",
            now.duration_since(self.run_started).as_secs(),
            phase,
            live.ok_count as f64 / interval_s,
            live.latency_ns.value_at_quantile(0.99) as f64 / 1000.0,
            self.errors_total,
            live.sessions_ready,
            plan.sessions
        );
        live.ok_count = 0;
        live.error_count = 0;
        live.latency_ns.reset();
        drop(live);
        if plan.progress {
            eprintln!("{line}");
        }
        self.last_line = now;
    }
}

fn phase_name(plan: &Plan, now_ns: u64, start_ns: u64) -> &'static str {
    let warmup_end_ns = start_ns + duration_ns(plan.warmup);
    if now_ns < warmup_end_ns {
        "warmup"
    } else if now_ns < warmup_end_ns + duration_ns(plan.duration) {
        "measure"
    } else {
        "drain"
    }
}

fn run_info(plan: &Plan, workload: &dyn Workload) -> RunInfo {
    RunInfo {
        run_id: plan.run_id.clone(),
        servers: plan.servers.iter().map(ToString::to_string).collect(),
        mode: match plan.mode {
            Mode::ClosedLoop => "closed-loop".to_string(),
            Mode::OpenLoop { .. } => "open-loop".to_string(),
        },
        target_rate_ops_per_s: match plan.mode {
            Mode::ClosedLoop => None,
            Mode::OpenLoop { rate_ops_per_s } => Some(round_to(rate_ops_per_s, 1)),
        },
        sessions: plan.sessions,
        outstanding_per_session: plan.outstanding_max,
        threads: plan.threads,
        workload: workload.describe(),
        keys: plan.keys.count(),
        key_distribution: plan.keys.describe(),
        value_bytes: plan.value_bytes,
        warmup_s: round_to(plan.warmup.as_secs_f64(), 3),
        duration_s: round_to(plan.duration.as_secs_f64(), 3),
        seed: plan.seed,
    }
}

fn build_summary(
    plan: &Plan,
    workload: &dyn Workload,
    load: LoadResult,
    teardown: String,
) -> Summary {
    let measured_s = round_to(load.measured.as_secs_f64(), 3);
    let operations = summary::op_rows(&load.recorder, measured_s);
    let all = operations
        .last()
        .expect("op_rows always ends with `all`")
        .clone();
    let errors = load.recorder.error_total();
    let status = if load.hit_time_limit {
        "time_limit"
    } else if errors > 0 {
        "errors"
    } else {
        "ok"
    };
    let cpu_s = (load.cpu.user + load.cpu.system).as_secs_f64();
    let wall_s = load.wall.as_secs_f64();
    Summary {
        run: run_info(plan, workload),
        result: ResultInfo {
            status: status.to_string(),
            measured_s,
            ops: all.ops,
            errors,
            throughput_ops_per_s: all.throughput_ops_per_s,
            backlog_at_end_ops: load.backlog_at_end,
        },
        operations,
        errors_by_cause: load.recorder.errors_by_cause.clone(),
        error_examples: load.recorder.error_examples.clone(),
        sessions: SessionInfo {
            total: plan.sessions,
            ready_at_start: load.sessions_ready_at_start,
            reconnects: load.reconnects,
        },
        generator_cpu: CpuInfo {
            user_s: round_to(load.cpu.user.as_secs_f64(), 3),
            system_s: round_to(load.cpu.system.as_secs_f64(), 3),
            wall_s: round_to(wall_s, 3),
            cores_used: round_to(if wall_s > 0.0 { cpu_s / wall_s } else { 0.0 }, 2),
            cpu_us_per_op: round_to(
                if all.ops > 0 {
                    cpu_s * 1e6 / all.ops as f64
                } else {
                    0.0
                },
                2,
            ),
        },
        send_lag_us: match plan.mode {
            Mode::ClosedLoop => None,
            Mode::OpenLoop { .. } => Some(summary::Percentiles::of(&load.recorder.send_lag_ns)),
        },
        teardown,
        latency_spectrum_us: summary::spectrum(&summary::all_latencies(&load.recorder)),
        throughput_timeline: load.timeline,
    }
}
