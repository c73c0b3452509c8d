//! The ensemble benchmark's tools, end to end: `keel-loadgen failover` against an in-process
//! Keel that starts late (an outage of known length) or against nothing, with and without
//! `--kill-pid`; `keel-loadgen populate` creating nodes and finding them on a rerun.

mod common;

use common::start_keel;
use keel_loadgen::failover::FailoverSummary;
use keel_loadgen::populate::PopulateSummary;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const SIGKILL: i32 = 9;

/// No command may take longer than this, whatever goes wrong.
const RUN_BOUND: Duration = Duration::from_secs(30);

/// One server for the tests that need one from the start.
fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| start_keel(0, 1, "keel-loadgen-ensemble-tools"))
}

/// A port on 127.0.0.1 that nothing listens on (free a moment ago).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

fn json_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("keel-loadgen-{name}-{}.json", std::process::id()))
}

/// Spawns keel-loadgen with `args` and `--json FILE` appended.
fn spawn(args: &[&str], json: &std::path::Path) -> std::process::Child {
    let _ = std::fs::remove_file(json);
    Command::new(env!("CARGO_BIN_EXE_keel-loadgen"))
        .args(args)
        .args(["--json", json.to_str().expect("utf-8 temp path")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keel-loadgen")
}

/// Waits for `child`, killing it and failing the test past RUN_BOUND.
/// `keel-loadgen failover --kill-pid PID` against `servers`, bounded by `timeout`.
fn spawn_failover_killing(
    servers: &str,
    pid: &str,
    timeout: &str,
    json: &std::path::Path,
) -> std::process::Child {
    spawn(
        &[
            "failover",
            "--servers",
            servers,
            "--kill-pid",
            pid,
            "--timeout",
            timeout,
        ],
        json,
    )
}

fn finish(mut child: std::process::Child, what: &str) -> (Output, Duration) {
    let started = Instant::now();
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            break;
        }
        if started.elapsed() > RUN_BOUND {
            let _ = child.kill();
            panic!("keel-loadgen {what} ran past {RUN_BOUND:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (child.wait_with_output().expect("output"), started.elapsed())
}

fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Option<T> {
    let text = std::fs::read_to_string(path).ok()?;
    let _ = std::fs::remove_file(path);
    Some(serde_json::from_str(&text).expect("the JSON file parses"))
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn failover_reports_the_first_write_after_a_late_server_starts() {
    // Nothing listens on the port for 1.5 s, then Keel starts there: the first successful
    // write comes after the outage, on that server, after several refused attempts; a second
    // address that never serves does not hold it up.
    let port = free_port();
    let late = format!("127.0.0.1:{port}");
    let never = format!("127.0.0.1:{}", free_port());
    let servers = format!("{late},{never}");
    let json = json_path("failover-late");
    let outage = Duration::from_millis(1500);
    let child = spawn(
        &[
            "failover",
            "--servers",
            &servers,
            "--timeout",
            "15s",
            "--attempt-timeout",
            "500ms",
        ],
        &json,
    );
    std::thread::sleep(outage);
    let addr = start_keel(port, 1, "keel-loadgen-failover-late");
    assert_eq!(addr.port(), port);
    let (output, _) = finish(child, "failover");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let summary: FailoverSummary = read_json(&json).expect("--json wrote a file");
    assert_eq!(
        summary.render_text(),
        String::from_utf8_lossy(&output.stdout)
    );
    assert_eq!(summary.status, "ok");
    assert_eq!(summary.killed_pid, None);
    let ms = summary.first_write_ms.expect("a first write");
    assert!(
        ms >= outage.as_secs_f64() * 1e3 && ms < 10_000.0,
        "first write at {ms} ms for an outage of {outage:?}"
    );
    assert_eq!(summary.first_write_server.as_deref(), Some(late.as_str()));
    assert!(summary.attempts > 2, "{summary:?}");
    assert!(summary.last_error.is_some(), "{summary:?}");
}

#[test]
fn failover_kills_the_pid_and_times_from_the_kill() {
    // With --kill-pid the process dies by SIGKILL, and a healthy server takes the write at once.
    let mut victim = Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    let pid = victim.id().to_string();
    let json = json_path("failover-kill");
    let servers = server().to_string();
    let child = spawn_failover_killing(&servers, &pid, "10s", &json);
    let (output, _) = finish(child, "failover --kill-pid");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let status = victim.wait().expect("wait for the victim");
    assert_eq!(status.signal(), Some(SIGKILL), "{status:?}");
    let summary: FailoverSummary = read_json(&json).expect("--json wrote a file");
    assert_eq!(summary.killed_pid, Some(victim.id() as i32));
    let ms = summary.first_write_ms.expect("a first write");
    assert!(ms < 3000.0, "{summary:?}");
}

#[test]
fn failover_with_no_server_gives_up_at_its_timeout_and_kills_nothing() {
    // No server: without --kill-pid the run ends at --timeout with exit 3 and no first write;
    // with --kill-pid nothing is killed (no write succeeded first) and the exit status is 1.
    let servers = format!("127.0.0.1:{}", free_port());
    let json = json_path("failover-none");
    let child = spawn(
        &["failover", "--servers", &servers, "--timeout", "1s"],
        &json,
    );
    let (output, elapsed) = finish(child, "failover without a server");
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    assert!(elapsed < Duration::from_secs(6), "{elapsed:?}");
    let summary: FailoverSummary = read_json(&json).expect("--json wrote a file");
    assert_eq!(summary.status, "timeout");
    assert_eq!(summary.first_write_ms, None);
    assert!(summary.attempts >= 2, "{summary:?}");

    let mut victim = Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    let pid = victim.id().to_string();
    let child = spawn_failover_killing(&servers, &pid, "1s", &json);
    let (output, _) = finish(child, "failover --kill-pid without a server");
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("nothing was killed"),
        "{}",
        text(&output)
    );
    assert!(
        victim.try_wait().expect("try_wait").is_none(),
        "the victim lives"
    );
    victim.kill().expect("kill the victim");
    let _ = victim.wait();
}

#[test]
fn populate_creates_every_node_and_a_rerun_finds_them_all() {
    // 2,500 nodes over 4 sessions in directories of 1,000: all created; a rerun on the same
    // prefix creates none and finds all 2,500.
    let prefix = format!("/populate-test-{}", std::process::id());
    let servers = server().to_string();
    let json = json_path("populate");
    let args = [
        "populate",
        "--servers",
        &servers,
        "--nodes",
        "2500",
        "--sessions",
        "4",
        "--outstanding",
        "32",
        "--per-dir",
        "1000",
        "--prefix",
        &prefix,
        "--quiet",
    ];
    let (output, _) = finish(spawn(&args, &json), "populate");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let first: PopulateSummary = read_json(&json).expect("--json wrote a file");
    assert_eq!(first.render_text(), String::from_utf8_lossy(&output.stdout));
    assert_eq!((first.created, first.existed), (2500, 0), "{first:?}");
    assert!(first.creates_per_s > 0.0);
    let (output, _) = finish(spawn(&args, &json), "populate rerun");
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let again: PopulateSummary = read_json(&json).expect("--json wrote a file");
    assert_eq!((again.created, again.existed), (0, 2500), "{again:?}");
}

#[test]
fn populate_refuses_bad_flags() {
    // Out-of-range counts and a relative prefix are bad flags (exit 2), named in the message.
    let servers = server().to_string();
    let json = json_path("populate-bad");
    for (flag, value) in [
        ("--nodes", "0"),
        ("--sessions", "0"),
        ("--outstanding", "0"),
        ("--prefix", "relative"),
    ] {
        let mut args = vec!["populate", "--servers", &servers, flag, value];
        if flag != "--nodes" {
            args.extend(["--nodes", "10"]);
        }
        let (output, _) = finish(spawn(&args, &json), "populate with a bad flag");
        assert_eq!(output.status.code(), Some(2), "{flag}: {}", text(&output));
        assert!(
            String::from_utf8_lossy(&output.stderr).contains(flag),
            "{flag}: {}",
            text(&output)
        );
    }
}
