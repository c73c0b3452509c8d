//! End-to-end runs of the keel-loadgen binary against an in-process Keel on 127.0.0.1, each
//! bounded to about a second of load, plus the bad conditions it must report without hanging.

mod common;

use keel::proto::records::write_connect_response;
use keel_loadgen::checker::{CheckerSummary, FileCheckSummary};
use keel_loadgen::linearizability::{History, Node, Output, Verdict};
use keel_loadgen::summary::Summary;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// No run may take longer than this, whatever goes wrong.
const RUN_BOUND: Duration = Duration::from_secs(20);

/// One server for the whole file: unpinned, one shard, an ephemeral port, no per-IP cap
/// (every session comes from 127.0.0.1).
fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| start_in_process(1, "keel-loadgen"))
}

/// Starts an in-process Keel with `shards` client shards on any port.
fn start_in_process(shards: usize, tag: &str) -> SocketAddr {
    common::start_keel(0, shards, tag)
}

struct Outcome<T = Summary> {
    code: i32,
    stdout: String,
    stderr: String,
    json: Option<T>,
    elapsed: Duration,
}

fn unique(name: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs the binary with `args` after short-run defaults; kills it if it outlives RUN_BOUND.
fn run(servers: &str, args: &[&str]) -> Outcome {
    run_for(servers, args)
}

/// As `run`, with the --json file read as `T`.
fn run_for<T: serde::de::DeserializeOwned>(servers: &str, args: &[&str]) -> Outcome<T> {
    let run_id = unique("test");
    let json_path = std::env::temp_dir().join(format!("keel-loadgen-{run_id}.json"));
    let _ = std::fs::remove_file(&json_path);
    let mut command = Command::new(env!("CARGO_BIN_EXE_keel-loadgen"));
    command
        .args(["--servers", servers, "--run-id", &run_id, "--seed", "7"])
        .args([
            "--warmup",
            "200ms",
            "--duration",
            "800ms",
            "--time-limit",
            "10s",
        ])
        .args([
            "--sessions",
            "20",
            "--threads",
            "2",
            "--keys",
            "100",
            "--value-bytes",
            "64",
        ])
        .args(["--json", json_path.to_str().expect("utf-8 temp path")])
        .args(args);
    let (code, stdout, stderr, elapsed) = run_bounded(command, args);
    let json = std::fs::read_to_string(&json_path)
        .ok()
        .map(|text| serde_json::from_str(&text).expect("the JSON file parses"));
    let _ = std::fs::remove_file(&json_path);
    Outcome {
        code,
        stdout,
        stderr,
        json,
        elapsed,
    }
}

/// Runs `command` with piped output; kills it and fails the test if it outlives RUN_BOUND.
fn run_bounded(mut command: Command, what: &[&str]) -> (i32, String, String, Duration) {
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command.spawn().expect("spawn keel-loadgen");
    let mut stdout_pipe = child.stdout.take().expect("stdout");
    let mut stderr_pipe = child.stderr.take().expect("stderr");
    let stdout_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout_pipe.read_to_string(&mut text);
        text
    });
    let stderr_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text);
        text
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if started.elapsed() > RUN_BOUND {
            let _ = child.kill();
            panic!("keel-loadgen {what:?} ran past {RUN_BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status.code().unwrap_or(-1),
        stdout_reader.join().expect("stdout reader"),
        stderr_reader.join().expect("stderr reader"),
        started.elapsed(),
    )
}

/// The `all` row of the printed table, as numbers.
fn printed_all_row(stdout: &str) -> Vec<f64> {
    let line = stdout
        .lines()
        .find(|line| line.starts_with("all "))
        .expect("the summary has an `all` row");
    line.split_whitespace()
        .skip(1)
        .map(|field| field.parse().expect("a number"))
        .collect()
}

/// A clean run: exit 0, ops counted, no errors, and the JSON holds exactly the printed figures.
fn assert_clean(outcome: &Outcome, expected_ops: &[&str]) -> Summary {
    assert_clean_rows(outcome, expected_ops, true)
}

/// As `assert_clean`; with `exact` false the summary may have rows besides `expected_ops`.
fn assert_clean_rows(outcome: &Outcome, expected_ops: &[&str], exact: bool) -> Summary {
    assert_eq!(
        outcome.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        outcome.stdout, outcome.stderr
    );
    let summary = outcome.json.clone().expect("--json wrote a file");
    assert_eq!(
        summary.render_text(),
        outcome.stdout,
        "JSON and printed summary differ"
    );
    assert!(summary.result.ops > 0, "{}", outcome.stdout);
    assert_eq!(summary.result.errors, 0, "{}", outcome.stdout);
    assert_eq!(summary.result.status, "ok");
    assert_eq!(summary.teardown, "ok");
    let all = summary.operations.last().expect("an `all` row");
    let l = &all.latency_us;
    let from_json = [
        all.ops as f64,
        all.errors as f64,
        all.throughput_ops_per_s,
        l.p50,
        l.p90,
        l.p99,
        l.p99_9,
        l.p99_99,
        l.max,
    ];
    assert_eq!(printed_all_row(&outcome.stdout), from_json);
    let ops: Vec<&str> = summary
        .operations
        .iter()
        .map(|row| row.op.as_str())
        .collect();
    if exact {
        assert_eq!(ops[..ops.len() - 1], *expected_ops, "{}", outcome.stdout);
    }
    for op in expected_ops {
        assert!(ops.contains(op), "no {op} row: {}", outcome.stdout);
    }
    assert!(summary.generator_cpu.user_s + summary.generator_cpu.system_s > 0.0);
    assert!(
        outcome.stderr.contains("ops/s"),
        "a progress line: {}",
        outcome.stderr
    );
    summary
}

const READS: [&str; 3] = ["getData", "exists", "getChildren"];
const WRITES: [&str; 3] = ["setData", "create", "delete"];
const ALL_OPS: [&str; 6] = [
    "getData",
    "exists",
    "getChildren",
    "setData",
    "create",
    "delete",
];

#[test]
fn read_workload_closed_loop() {
    // Twenty sessions with four requests each in flight read keys for 0.8 s without an error.
    let outcome = run(
        &server().to_string(),
        &["--workload", "read", "--outstanding", "4"],
    );
    let summary = assert_clean(&outcome, &READS);
    assert_eq!(summary.run.mode, "closed-loop");
    assert!(summary.send_lag_us.is_none());
}

#[test]
fn read_workload_open_loop() {
    // Reads at a fixed 2000 ops/s come out near that rate, with the send lag reported.
    let outcome = run(
        &server().to_string(),
        &["--workload", "read", "--rate", "2000"],
    );
    let summary = assert_clean(&outcome, &READS);
    assert_eq!(summary.run.mode, "open-loop");
    let rate = summary.result.throughput_ops_per_s;
    assert!((1800.0..=2100.0).contains(&rate), "{}", outcome.stdout);
    assert!(summary.send_lag_us.is_some());
}

#[test]
fn write_workload_closed_loop() {
    // setData on keys plus per-session create/delete pairs, pipelined, never collide.
    let outcome = run(
        &server().to_string(),
        &["--workload", "write", "--outstanding", "8"],
    );
    assert_clean(&outcome, &WRITES);
}

#[test]
fn write_workload_open_loop() {
    // Writes at 1000 ops/s on Zipf-distributed keys finish without errors.
    let args = [
        "--workload",
        "write",
        "--rate",
        "1000",
        "--key-dist",
        "zipf",
        "--outstanding",
        "4",
    ];
    let outcome = run(&server().to_string(), &args);
    let summary = assert_clean(&outcome, &WRITES);
    assert_eq!(summary.run.key_distribution, "zipf(s=0.99)");
}

#[test]
fn mixed_workload_closed_loop() {
    // A 50% read mix exercises all six operation types in one run.
    let args = [
        "--workload",
        "mixed",
        "--read-pct",
        "50",
        "--outstanding",
        "2",
    ];
    let summary = assert_clean(&run(&server().to_string(), &args), &ALL_OPS);
    assert_eq!(summary.run.workload, "mixed(read=50%)");
}

#[test]
fn mixed_workload_open_loop() {
    // The default 90% read mix at 3000 ops/s over 200 sessions on one worker thread.
    let args = [
        "--rate",
        "3000",
        "--sessions",
        "200",
        "--threads",
        "1",
        "--key-dist",
        "zipf",
    ];
    let summary = assert_clean(&run(&server().to_string(), &args), &ALL_OPS);
    assert_eq!(summary.sessions.ready_at_start, 200);
}

/// A port on 127.0.0.1 that nothing listens on.
fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

#[test]
fn a_closed_port_is_reported_and_ends_the_run_at_once() {
    // With no server at the address, the run fails at setup with the OS's reason, exit 1.
    let outcome = run(&closed_port().to_string(), &[]);
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains("Connection refused"),
        "{}",
        outcome.stderr
    );
    assert!(
        outcome.elapsed < Duration::from_secs(3),
        "{:?}",
        outcome.elapsed
    );
    assert!(outcome.json.is_none());
}

#[derive(Clone, Copy)]
enum Fake {
    /// Hangs up on every connection at once.
    Closes,
    /// Accepts and never answers.
    Silent,
    /// Answers every handshake as ZooKeeper does for an expired session, then hangs up.
    Expires,
    /// Accepts the session, then never answers a request.
    AnswersHandshakeOnly,
}

/// A misbehaving server on 127.0.0.1; its thread lives as long as the test process.
fn fake_server(behaviour: Fake) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().flatten() {
            match behaviour {
                Fake::Closes => drop(stream),
                Fake::Silent if held.len() < 1000 => held.push(stream),
                Fake::Silent => {}
                Fake::Expires => drop(answer_handshake(stream, 0)),
                Fake::AnswersHandshakeOnly if held.len() < 1000 => {
                    held.push(answer_handshake(stream, 10_000));
                }
                Fake::AnswersHandshakeOnly => {}
            }
        }
    });
    addr
}

/// Reads a ConnectRequest and answers it with `timeout_ms` (0: the session expired).
fn answer_handshake(mut stream: std::net::TcpStream, timeout_ms: i32) -> std::net::TcpStream {
    let mut prefix = [0u8; 4];
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    if stream.read_exact(&mut prefix).is_ok() {
        let mut request = vec![0; u32::from_be_bytes(prefix).min(4096) as usize];
        let _ = stream.read_exact(&mut request);
        let mut reply = Vec::new();
        let session_id = i64::from(timeout_ms) << 20 | 1;
        write_connect_response(&mut reply, timeout_ms, session_id, &[0; 16], Some(false));
        let _ = stream.write_all(&reply);
    }
    stream
}

fn run_with_a_bad_second_server(bad: SocketAddr) -> Summary {
    let servers = format!("{},{bad}", server());
    let args = [
        "--connect-timeout",
        "300ms",
        "--request-timeout",
        "500ms",
        "--outstanding",
        "2",
    ];
    let outcome = run(&servers, &args);
    assert_eq!(outcome.code, 4, "{}\n{}", outcome.stdout, outcome.stderr);
    let summary = outcome.json.expect("--json wrote a file");
    assert_eq!(summary.render_text(), outcome.stdout);
    assert_eq!(summary.result.status, "errors");
    assert!(
        summary.result.ops > 0,
        "the sessions moved to the good server"
    );
    summary
}

#[test]
fn a_server_closing_connections_is_counted_and_sessions_fail_over() {
    // Half the sessions start on a server that hangs up on every connection: each hang-up is
    // an error, and those sessions go on against the healthy server.
    let summary = run_with_a_bad_second_server(fake_server(Fake::Closes));
    let causes: Vec<&str> = summary.errors_by_cause.keys().map(String::as_str).collect();
    assert!(
        causes.contains(&"connect_failed") || causes.contains(&"connection_closed"),
        "{causes:?}"
    );
    assert!(summary.sessions.ready_at_start < 20);
}

#[test]
fn a_server_that_never_answers_times_out_and_sessions_fail_over() {
    // Half the sessions start on a server that accepts but never replies: their handshakes
    // time out after --connect-timeout, they are counted, and the run still ends on time.
    let summary = run_with_a_bad_second_server(fake_server(Fake::Silent));
    let example = &summary.error_examples["connect_failed"];
    assert!(example.contains("no session within"), "{example}");
}

#[test]
fn an_expired_session_is_counted_and_a_new_one_is_made_elsewhere() {
    // Half the sessions start on a server that declares every session expired: each is
    // counted as session_expired, and a new session is opened on the healthy server.
    let summary = run_with_a_bad_second_server(fake_server(Fake::Expires));
    let expired = summary
        .errors_by_cause
        .get("session_expired")
        .copied()
        .unwrap_or(0);
    assert!(expired >= 10, "{:?}", summary.errors_by_cause);
    assert!(summary.error_examples["session_expired"].contains("expired session"));
}

#[test]
fn the_time_limit_ends_a_long_run_with_what_it_measured() {
    // A 30 s run with a 1.5 s limit stops near the limit, prints its figures, exits 3.
    let args = [
        "--duration",
        "30s",
        "--warmup",
        "0s",
        "--time-limit",
        "1500ms",
    ];
    let outcome = run(&server().to_string(), &args);
    assert_eq!(outcome.code, 3, "{}\n{}", outcome.stdout, outcome.stderr);
    assert!(
        outcome.elapsed < Duration::from_secs(5),
        "{:?}",
        outcome.elapsed
    );
    let summary = outcome.json.expect("--json wrote a file");
    assert_eq!(summary.result.status, "time_limit");
    assert!(summary.result.ops > 0);
    assert!(
        summary.result.measured_s < 1.5,
        "only the time actually measured counts"
    );
    assert_eq!(summary.render_text(), outcome.stdout);
}

fn temp_file(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("keel-loadgen-{}", unique(name)))
}

/// `keel-loadgen check FILE --json J`: exit code, stdout and the JSON report.
fn check_history(path: &std::path::Path) -> (i32, String, FileCheckSummary) {
    let json_path = temp_file("check.json");
    let mut command = Command::new(env!("CARGO_BIN_EXE_keel-loadgen"));
    command.arg("check").arg(path).arg("--json").arg(&json_path);
    let (code, stdout, stderr, _) = run_bounded(command, &["check"]);
    let text = std::fs::read_to_string(&json_path).unwrap_or_else(|_| panic!("{stderr}"));
    let _ = std::fs::remove_file(&json_path);
    (
        code,
        stdout,
        serde_json::from_str(&text).expect("a check report"),
    )
}

const CHECKER_ARGS: [&str; 10] = [
    "--workload",
    "checker",
    "--sessions",
    "6",
    "--keys",
    "3",
    "--ops",
    "1500",
    "--duration",
    "4s",
];

#[test]
fn checker_run_against_keel_is_linearizable_and_its_history_checks_offline() {
    // Six clients record 1500 ops on three keys; Keel's history is linearizable, the JSON
    // holds what was printed, and `check FILE` on the saved history agrees. The same history
    // with one read's result replaced by a value nobody wrote is caught, with a window.
    let history_path = temp_file("history.json");
    let mut args = CHECKER_ARGS.to_vec();
    args.extend(["--history", history_path.to_str().expect("utf-8")]);
    let outcome: Outcome<CheckerSummary> = run_for(&server().to_string(), &args);
    assert_eq!(outcome.code, 0, "{}\n{}", outcome.stdout, outcome.stderr);
    let summary = outcome.json.expect("--json wrote a file");
    assert_eq!(summary.render_text(), outcome.stdout);
    assert_eq!(summary.report.verdict, Verdict::Linearizable);
    assert_eq!(summary.recorded_ops, 1500, "{}", outcome.stdout);
    assert!(summary.errors_by_cause.is_empty(), "{}", outcome.stdout);
    assert_eq!(summary.report.keys.len(), 3);
    assert_eq!(summary.teardown, "ok");
    let text = std::fs::read_to_string(&history_path).expect("--history wrote a file");
    let mut history: History = serde_json::from_str(&text).expect("a history");
    assert_eq!(history.ops.len(), 1500);
    let clients: std::collections::BTreeSet<u32> = history.ops.iter().map(|op| op.client).collect();
    assert_eq!(clients.len(), 6);
    let written = history
        .ops
        .iter()
        .filter(|op| matches!(op.output, Output::Written { .. }))
        .count();
    assert!(written > 100, "{written} successful setData");
    let (code, stdout, offline) = check_history(&history_path);
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(offline.report, summary.report);
    assert_eq!(offline.render_text(), stdout);

    let victim = history
        .ops
        .iter()
        .rposition(|op| matches!(op.output, Output::Read { node: Some(_) }))
        .expect("a read that found its node");
    history.ops[victim].output = Output::Read {
        node: Some(Node {
            value: "ghost".to_string(),
            version: 1,
        }),
    };
    std::fs::write(&history_path, serde_json::to_string(&history).unwrap()).unwrap();
    let (code, stdout, offline) = check_history(&history_path);
    let _ = std::fs::remove_file(&history_path);
    assert_eq!(code, 5, "{stdout}");
    assert_eq!(offline.report.verdict, Verdict::NotLinearizable);
    let window = offline
        .report
        .keys
        .iter()
        .find_map(|key| key.window.clone())
        .expect("a window");
    assert_eq!(window.failing_op, victim);
    assert!(stdout.contains(&format!("* #{victim} ")), "{stdout}");
    assert!(stdout.contains("\"ghost\" v1"), "{stdout}");
}

#[test]
fn checker_against_a_closed_port_fails_at_once() {
    // No server: exit 1 with the OS's reason, quickly, and no JSON.
    let outcome: Outcome<CheckerSummary> = run_for(&closed_port().to_string(), &CHECKER_ARGS);
    assert_eq!(outcome.code, 1, "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains("Connection refused"),
        "{}",
        outcome.stderr
    );
    assert!(
        outcome.elapsed < Duration::from_secs(3),
        "{:?}",
        outcome.elapsed
    );
    assert!(outcome.json.is_none());
}

#[test]
fn checker_ops_lost_to_a_server_that_stops_answering_are_indeterminate() {
    // Half the clients start on a server that completes the handshake and then never
    // answers: each op sent there times out, is recorded as indeterminate, and the client
    // moves on to Keel. The history stays linearizable with those ops in it.
    let servers = format!("{},{}", server(), fake_server(Fake::AnswersHandshakeOnly));
    let mut args = CHECKER_ARGS.to_vec();
    args.extend(["--ops", "600", "--request-timeout", "300ms"]);
    let outcome: Outcome<CheckerSummary> = run_for(&servers, &args);
    assert_eq!(outcome.code, 0, "{}\n{}", outcome.stdout, outcome.stderr);
    let summary = outcome.json.expect("--json wrote a file");
    assert_eq!(summary.render_text(), outcome.stdout);
    assert_eq!(summary.report.verdict, Verdict::Linearizable);
    let lost = summary
        .errors_by_cause
        .get("connection_loss")
        .copied()
        .unwrap_or(0);
    assert!(lost >= 3, "{}", outcome.stdout);
    assert!(
        summary.report.indeterminate_ops as u64 >= lost,
        "{}",
        outcome.stdout
    );
    assert!(summary.error_examples["connection_loss"].contains("no progress within"));
}

/// The row of `op` in the summary.
fn row<'a>(summary: &'a Summary, op: &str) -> &'a keel_loadgen::summary::OpSummary {
    summary
        .operations
        .iter()
        .find(|row| row.op == op)
        .unwrap_or_else(|| panic!("no {op} row"))
}

#[test]
fn seqid_workload_creates_sequential_ids() {
    // Every op is an ephemeral-sequential create; pipelined, with no errors.
    let args = ["--workload", "seqid", "--keys", "1", "--outstanding", "4"];
    let summary = assert_clean(&run(&server().to_string(), &args), &["createSeq"]);
    assert_eq!(summary.run.workload, "seqid(groups=1)");
}

#[test]
fn queue_workload_produces_and_consumes() {
    // Producers create sequential items; consumers list and delete the lowest, and lost races
    // (NoNode on delete) are not errors. Both sides make progress on two queues. (A consumer
    // whose listing outlasts the window sends no getChildren in it, so that row may be absent.)
    let args = ["--workload", "queue", "--keys", "2", "--outstanding", "2"];
    let summary = assert_clean_rows(
        &run(&server().to_string(), &args),
        &["delete", "createSeq"],
        false,
    );
    assert!(row(&summary, "createSeq").ops > 100);
    assert!(row(&summary, "delete").ops > 100);
}

#[test]
fn registry_workload_notifies_consumers() {
    // Providers register and deregister ephemeral instances under three services; consumers
    // re-list on every child notification, and the notification latency is its own row.
    let args = ["--workload", "registry", "--keys", "3"];
    let summary = assert_clean(
        &run(&server().to_string(), &args),
        &["getChildren", "create", "delete", "watch_notify"],
    );
    assert!(row(&summary, "watch_notify").ops > 10);
    assert!(row(&summary, "getChildren").ops >= row(&summary, "watch_notify").ops / 2);
}

#[test]
fn fanout_workload_measures_the_last_notification() {
    // One writer, nineteen watchers: each round's setData is followed by a last-notification
    // figure, and the watchers re-arm with getData after each notification.
    let summary = assert_clean(
        &run(
            &server().to_string(),
            &["--workload", "fanout", "--keys", "1"],
        ),
        &["getData", "setData", "fanout_last_notify"],
    );
    let rounds = row(&summary, "fanout_last_notify").ops;
    assert!(rounds > 10, "{rounds} rounds");
    assert!(rounds <= row(&summary, "setData").ops + 1);
    // Nineteen re-arms per round, give or take the rounds at the window's edges.
    assert!(row(&summary, "getData").ops >= 15 * rounds, "{summary:?}");
}

#[test]
fn lock_workload_hands_the_lock_over() {
    // Twenty sessions contend for one lock: acquisitions and hand-offs are counted, and every
    // waiter watches its predecessor with exists.
    let summary = assert_clean(
        &run(
            &server().to_string(),
            &["--workload", "lock", "--keys", "1"],
        ),
        &[
            "exists",
            "getChildren",
            "delete",
            "createSeq",
            "lock_acquire",
            "lock_handoff",
        ],
    );
    assert!(row(&summary, "lock_acquire").ops > 20);
    // One holder at a time: every release (delete) hands the lock over at most once.
    assert!(row(&summary, "lock_handoff").ops <= row(&summary, "delete").ops + 1);
}

#[test]
fn churn_workload_opens_and_closes_sessions() {
    // Each session creates two ephemerals, closes and opens a new session, over and over.
    let summary = assert_clean(
        &run(
            &server().to_string(),
            &["--workload", "churn", "--keys", "1"],
        ),
        &["create", "session_open", "session_close"],
    );
    let opened = row(&summary, "session_open").ops;
    assert!(opened > 50, "{opened}");
    let created = row(&summary, "create").ops;
    assert!(
        created.abs_diff(2 * opened) <= 2 * 20 + 2,
        "{created} creates, {opened} opens"
    );
    assert_eq!(
        summary.sessions.reconnects, 0,
        "renewals are not reconnects"
    );
}

#[test]
fn a_scenario_survives_a_server_closing_connections() {
    // The lock scenario with half its sessions first sent to a server that hangs up: the
    // failures are counted and the lock still changes hands on the healthy server.
    let servers = format!("{},{}", server(), fake_server(Fake::Closes));
    let args = [
        "--workload",
        "lock",
        "--keys",
        "1",
        "--connect-timeout",
        "300ms",
    ];
    let outcome = run(&servers, &args);
    assert_eq!(outcome.code, 4, "{}\n{}", outcome.stdout, outcome.stderr);
    let summary = outcome.json.expect("--json wrote a file");
    assert_eq!(summary.render_text(), outcome.stdout);
    assert!(row(&summary, "lock_acquire").ops > 0, "{}", outcome.stdout);
}

#[test]
fn a_workload_file_sets_the_mix_keys_and_value_sizes() {
    // A TOML mix of all six basic ops on 50 Zipf keys with 10-300 byte values runs clean, and
    // the summary shows the file's keys, sizes and weights.
    let path = temp_file("mix.toml");
    let text = "name = \"t\"\n[ops]\ngetData = 40\nexists = 10\ngetChildren = 10\n\
                setData = 20\ncreate = 10\ndelete = 10\n[keys]\ncount = 50\n\
                distribution = \"zipf\"\n[values]\nmin_bytes = 10\nmax_bytes = 300\n";
    std::fs::write(&path, text).unwrap();
    let args = [
        "--workload-file",
        path.to_str().unwrap(),
        "--outstanding",
        "2",
    ];
    let outcome = run(&server().to_string(), &args);
    let _ = std::fs::remove_file(&path);
    let summary = assert_clean(&outcome, &ALL_OPS);
    assert_eq!(summary.run.keys, 50);
    assert_eq!(summary.run.value_bytes, 300);
    assert_eq!(summary.run.key_distribution, "zipf(s=0.99)");
    assert_eq!(
        summary.run.workload,
        "file(t: getData=40 exists=10 getChildren=10 setData=20 create=10 delete=10)"
    );
    let get = row(&summary, "getData").ops as f64;
    let set = row(&summary, "setData").ops as f64;
    assert!(
        (1.5..2.5).contains(&(get / set)),
        "getData/setData {}",
        get / set
    );
}

#[test]
fn a_bad_workload_file_is_refused_as_a_bad_flag() {
    // Exit 2, naming the file and the unknown field, before anything connects.
    let path = temp_file("bad.toml");
    std::fs::write(&path, "[ops]\ngetdata = 5\n").unwrap();
    let outcome = run(
        &closed_port().to_string(),
        &["--workload-file", path.to_str().unwrap()],
    );
    let _ = std::fs::remove_file(&path);
    assert_eq!(outcome.code, 2, "{}", outcome.stderr);
    assert!(outcome.stderr.contains("getdata"), "{}", outcome.stderr);
    assert!(
        outcome.stderr.contains("--workload-file"),
        "{}",
        outcome.stderr
    );
}

/// A second in-process Keel, for compare mode and the checker: two shards, so sessions read
/// from different copies of the tree.
fn second_server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| start_in_process(2, "keel-loadgen-b"))
}

#[test]
fn compare_alternates_servers_and_reports_medians_and_ratios() {
    // Two rounds against two Keels: four runs in the order A, B, A, B, each against its own
    // server; every figure's medians and ratios follow from the runs in the JSON, and the
    // printed table shows them. The plots hold one line per server.
    let (a, b) = (server().to_string(), second_server().to_string());
    let json_path = temp_file("compare.json");
    let plot_dir = temp_file("compare-plots");
    let mut command = Command::new(env!("CARGO_BIN_EXE_keel-loadgen"));
    command
        .args(["compare", "--a", &a, "--b", &b, "--rounds", "2"])
        .args([
            "--warmup",
            "100ms",
            "--duration",
            "500ms",
            "--sessions",
            "8",
        ])
        .args(["--keys", "50", "--run-id", &unique("cmp"), "--quiet"])
        .arg("--json")
        .arg(&json_path)
        .arg("--plot-dir")
        .arg(&plot_dir);
    let (code, stdout, stderr, _) = run_bounded(command, &["compare"]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    let text = std::fs::read_to_string(&json_path).expect("--json wrote a file");
    let _ = std::fs::remove_file(&json_path);
    let summary: keel_loadgen::compare::CompareSummary = serde_json::from_str(&text).unwrap();
    assert_eq!(summary.render_text(), stdout);
    assert_eq!(summary.runs.len(), 2);
    for round in &summary.runs {
        assert_eq!(round.a.run.servers, std::slice::from_ref(&a));
        assert_eq!(round.b.run.servers, std::slice::from_ref(&b));
        assert!(round.a.result.ops > 0 && round.b.result.ops > 0);
    }
    let ops = &summary.figures[0];
    assert_eq!(ops.figure, "ops/s");
    let (a0, a1) = (
        summary.runs[0].a.result.throughput_ops_per_s,
        summary.runs[1].a.result.throughput_ops_per_s,
    );
    assert!((ops.a_median - (a0 + a1) / 2.0).abs() < 0.11, "{ops:?}");
    let ratios: Vec<f64> = summary
        .runs
        .iter()
        .map(|r| r.b.result.throughput_ops_per_s / r.a.result.throughput_ops_per_s)
        .collect();
    let low = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    assert!((ops.ratio_min - low).abs() < 0.001, "{ops:?} {ratios:?}");
    assert!(ops.ratio_min <= ops.ratio_b_over_a && ops.ratio_b_over_a <= ops.ratio_max);
    let p99 = summary
        .figures
        .iter()
        .find(|f| f.figure == "p99_us")
        .unwrap();
    assert!(p99.a_median > 0.0 && p99.b_median > 0.0);
    for name in ["latency.svg", "throughput.svg"] {
        let svg = std::fs::read_to_string(plot_dir.join(name)).expect("a plot");
        assert_eq!(svg.matches("<polyline").count(), 2, "{name}");
        assert!(svg.contains(&format!("A {a}")) && svg.contains(&format!("B {b}")));
    }
    let _ = std::fs::remove_dir_all(&plot_dir);
}

#[test]
fn compare_with_an_unreachable_server_fails_clearly() {
    // B is a closed port: the comparison stops with exit 1 and names the round and server.
    let a = server().to_string();
    let b = closed_port().to_string();
    let mut command = Command::new(env!("CARGO_BIN_EXE_keel-loadgen"));
    command
        .args(["compare", "--a", &a, "--b", &b, "--rounds", "3"])
        .args([
            "--warmup",
            "0s",
            "--duration",
            "200ms",
            "--sessions",
            "2",
            "--quiet",
        ])
        .args(["--run-id", &unique("cmp")]);
    let (code, _, stderr, elapsed) = run_bounded(command, &["compare"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains(&format!("server b = {b}")), "{stderr}");
    assert!(stderr.contains("Connection refused"), "{stderr}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[test]
fn a_single_run_writes_its_plots() {
    // --plot-dir on a plain run: a spectrum from 0% up to the max, and a throughput line.
    let plot_dir = temp_file("plots");
    let args = [
        "--workload",
        "read",
        "--plot-dir",
        plot_dir.to_str().unwrap(),
    ];
    let summary = assert_clean(&run(&server().to_string(), &args), &READS);
    let spectrum = &summary.latency_spectrum_us;
    assert_eq!(spectrum.first().unwrap().percentile, 0.0);
    assert_eq!(spectrum.last().unwrap().percentile, 100.0);
    let all = summary.operations.last().unwrap();
    assert_eq!(spectrum.last().unwrap().latency_us, all.latency_us.max);
    assert!(summary
        .throughput_timeline
        .iter()
        .any(|p| p.ops_per_s > 0.0));
    let latency = std::fs::read_to_string(plot_dir.join("latency.svg")).unwrap();
    let throughput = std::fs::read_to_string(plot_dir.join("throughput.svg")).unwrap();
    assert_eq!(latency.matches("<polyline").count(), 1);
    assert_eq!(throughput.matches("<polyline").count(), 1);
    let points = latency
        .split("points=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert_eq!(points.split(' ').count(), spectrum.len());
    let _ = std::fs::remove_dir_all(&plot_dir);
}

#[test]
fn checker_clients_refused_by_an_expiring_server_move_on() {
    // Half the clients start on a server that declares every session expired: each refusal
    // is counted as connect_failed with the reason, the clients move on to Keel, and the
    // history they record there is linearizable.
    let servers = format!("{},{}", server(), fake_server(Fake::Expires));
    let mut args = CHECKER_ARGS.to_vec();
    args.extend(["--ops", "400"]);
    let outcome: Outcome<CheckerSummary> = run_for(&servers, &args);
    assert_eq!(outcome.code, 0, "{}\n{}", outcome.stdout, outcome.stderr);
    let summary = outcome.json.expect("--json wrote a file");
    assert_eq!(summary.report.verdict, Verdict::Linearizable);
    assert_eq!(summary.recorded_ops, 400);
    let refused = &summary.error_examples["connect_failed"];
    assert!(refused.contains("refused the session"), "{refused}");
}

#[test]
fn checker_with_sync_reads_on_a_two_shard_keel_is_linearizable() {
    // With sync before every getData, reads are linearizable even when the sessions sit on
    // different shards (without it Keel's shards can serve stale reads; see the README).
    let mut args = CHECKER_ARGS.to_vec();
    args.extend(["--sync-reads", "--ops", "3000", "--sessions", "8"]);
    let outcome: Outcome<CheckerSummary> = run_for(&second_server().to_string(), &args);
    assert_eq!(outcome.code, 0, "{}\n{}", outcome.stdout, outcome.stderr);
    let summary = outcome.json.expect("--json wrote a file");
    assert_eq!(summary.report.verdict, Verdict::Linearizable);
    assert_eq!(summary.recorded_ops, 3000);
    assert!(summary.errors_by_cause.is_empty(), "{}", outcome.stdout);
}

#[test]
fn checker_on_a_two_shard_keel_is_linearizable_without_sync() {
    // Sessions on different shards read what any other session was already shown: a shard
    // holds requests while another shard serves a newer view. Before that rule this history
    // was non-linearizable in 3 of 3 runs (a read returned version 38 after another
    // session's read of version 39 had completed).
    let mut args = CHECKER_ARGS.to_vec();
    args.extend(["--ops", "20000", "--sessions", "16", "--duration", "30s"]);
    let outcome: Outcome<CheckerSummary> = run_for(&second_server().to_string(), &args);
    assert_eq!(outcome.code, 0, "{}\n{}", outcome.stdout, outcome.stderr);
    let summary = outcome.json.expect("--json wrote a file");
    assert_eq!(summary.report.verdict, Verdict::Linearizable);
    assert_eq!(summary.recorded_ops, 20000);
}
