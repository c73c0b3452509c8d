//! Disk errors (issue 3 item 7): real EIO, from a fault-injecting FUSE filesystem under the
//! dataDir (`tests/fault_fs`), on a write-ahead log write, on the log's fdatasync, and on
//! snapshot writes and fsyncs.
//!
//! Expected, and checked:
//! - A failed log write or fdatasync stops the server by itself: exit status 70, never a
//!   panic or a signal, stderr naming the operation, the segment and the error. It is never
//!   retried: after the failure the server issues no further write or fsync to the log (the
//!   injected fault fails once, so a retry would have "succeeded"). The failed fdatasync also
//!   drops the batch's data, as the kernel drops dirty pages whose write-back failed, so a
//!   server that acknowledged that batch (or retried its fsync) loses an acknowledged write.
//!   Restarted with the fault gone, every acknowledged write is there with its data and
//!   version, and the server goes on taking writes.
//! - A failed snapshot write or fsync does not stop the server: the log holds every txn, so
//!   Keel logs the failure, publishes no snapshot, leaves no temporary file, and a later
//!   snapshot succeeds. (Apache ZooKeeper exits with status 10 here instead; Keel keeps
//!   serving, as its storage layer's contract says.) After a SIGKILL everything acknowledged
//!   is recovered.
//!
//! Needs root and /dev/fuse (a FUSE mount); otherwise each test prints why and is skipped.

mod fault_fs;
mod faults;

use fault_fs::{Event, Fault, FaultMount, Op};
use faults::disk::{
    create_counters, expect_clean_stop, kill_restart_verify, skip, verify, write_until_stopped,
    Acked,
};
use faults::{Conn, Server, OK};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Log writes (batches) that go through after the fault is armed, before the one that fails:
/// the clients have many acknowledged writes in flight around the failure.
const LOG_OPS_BEFORE_FAULT: u64 = 150;
/// How stderr names an EIO.
const EIO: &[&str] = &["Input/output error", "os error 5"];
const SNAPSHOT_WAIT: Duration = Duration::from_secs(20);

/// A test's directories: the FUSE mount over `work/backing`, a dataDir on it, and a zoo.cfg;
/// all removed when dropped, the mount first.
struct Setup {
    work: PathBuf,
    /// `None` only while dropping.
    fuse: Option<FaultMount>,
    config: PathBuf,
    port: u16,
    stderr_path: PathBuf,
    log_dir: PathBuf,
}

impl Setup {
    /// `None` (after saying why) where FUSE cannot be mounted.
    fn new(name: &str, extra_config: &str) -> Option<Setup> {
        let work = faults::temp_dir(name);
        let mount = match FaultMount::mount(&work.join("backing"), &work.join("mnt")) {
            Ok(mount) => mount,
            Err(reason) => {
                skip(name, "a fault-injecting FUSE filesystem", &reason);
                let _ = std::fs::remove_dir_all(&work);
                return None;
            }
        };
        let data_dir = mount.dir.join("data");
        std::fs::create_dir_all(&data_dir).expect("dataDir on the FUSE mount");
        let config = work.join("zoo.cfg");
        let port = faults::free_port();
        faults::write_config(&config, &data_dir, port, extra_config);
        Some(Setup {
            stderr_path: work.join("keel.stderr"),
            log_dir: data_dir.join("version-2"),
            work,
            fuse: Some(mount),
            config,
            port,
        })
    }

    fn mount(&self) -> &FaultMount {
        self.fuse.as_ref().expect("mounted until dropped")
    }

    fn start(&self) -> Server {
        let _ = std::fs::write(&self.stderr_path, b"");
        Server::start(&self.config, self.port, &self.stderr_path)
    }

    fn stderr(&self) -> String {
        faults::tail_of(&self.stderr_path)
    }

    /// How many lines of the whole stderr contain `what`.
    fn log_count(&self, what: &str) -> usize {
        let stderr = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        stderr.lines().filter(|line| line.contains(what)).count()
    }

    /// Names in the log/snapshot directory.
    fn files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(&self.log_dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        drop(self.fuse.take());
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

#[test]
fn a_failed_log_write_stops_keel_and_acked_writes_survive() {
    log_fault(
        "eio-log-write",
        Fault {
            op: Op::Write,
            name_prefix: "log.",
            after: LOG_OPS_BEFORE_FAULT,
            count: Some(1),
            lose_unsynced: false,
        },
        "write to log.",
    );
}

#[test]
fn a_failed_log_fdatasync_stops_keel_is_not_retried_and_acked_writes_survive() {
    log_fault(
        "eio-log-fdatasync",
        Fault {
            op: Op::Fsync,
            name_prefix: "log.",
            after: LOG_OPS_BEFORE_FAULT,
            count: Some(1),
            lose_unsynced: true,
        },
        "fdatasync of log.",
    );
}

/// Writers run until `fault` stops the server; then the checks in the module header.
fn log_fault(name: &str, fault: Fault, failed_op: &str) {
    let began = Instant::now();
    // 4 MiB segments: the writes here stay well within the first one, so every log write
    // after set-up is a batch (no segment roll).
    let Some(setup) = Setup::new(name, "preAllocSize=4096\nsnapCount=1000000\n") else {
        return;
    };
    let seed = faults::seed_from_env("KEEL_DISK_ERRORS_SEED");
    let context = format!("{name} seed {seed} (replay: KEEL_DISK_ERRORS_SEED={seed})");
    let mut acked = Acked::default();
    let mut server = setup.start();
    {
        let mut conn = Conn::connect(server.addr, 10_000).expect("connect");
        create_counters(&mut conn, &mut acked);
    }
    setup.mount().arm(fault.clone());
    let count = write_until_stopped(server.addr, 1, &mut acked, seed);
    let status = expect_clean_stop(&mut server, &context, EIO);
    drop(server);
    let stderr = setup.stderr();
    let log_dir = &setup.log_dir;
    assert!(
        stderr.contains(failed_op) && stderr.contains(&*log_dir.to_string_lossy()),
        "{context}: stderr does not name the failed operation and the file ({failed_op}… in \
         {}):\n{stderr}",
        log_dir.display()
    );
    check_not_retried(&setup.mount().events(), &fault, &context);
    println!(
        "{name}: {count} writes acknowledged, then keel stopped with {status} ({:.1} s): {}",
        began.elapsed().as_secs_f64(),
        stderr.lines().last().unwrap_or("")
    );
    assert!(
        count > 50,
        "{context}: only {count} writes before the fault"
    );

    // The fault is gone (it failed once); restart, verify, and go on writing.
    let server = setup.start();
    let mut conn = Conn::connect(server.addr, 10_000).expect("connect after the fault");
    let nodes = verify(&mut conn, &mut acked, &context);
    let more = create_more(&mut conn, &mut acked, "after", 200, &context);
    let (err, data, stat) = conn.get_data("/fill/w0").expect("read a counter");
    assert_eq!(err, OK, "{context}: /fill/w0");
    let (version, expected) = &acked.counters["/fill/w0"];
    assert!(
        stat.version == *version && data == *expected,
        "{context}: /fill/w0 after the restart: v{} (expected v{version})",
        stat.version
    );
    drop(conn);
    kill_restart_verify(server, || setup.start(), &mut acked, &context);
    println!(
        "{name}: {nodes} nodes verified after the restart, {more} more writes survived a \
         SIGKILL ({:.1} s)",
        began.elapsed().as_secs_f64()
    );
}

/// The fault fired exactly once, on the log, and the server touched the log no more after it:
/// no second write, and above all no second fsync "to retry".
fn check_not_retried(events: &[Event], fault: &Fault, context: &str) {
    let on_log = |event: &&Event| event.name.starts_with(fault.name_prefix);
    let failed: Vec<usize> = events
        .iter()
        .enumerate()
        .filter(|(_, event)| event.injected)
        .map(|(index, _)| index)
        .collect();
    let [failed_at] = failed[..] else {
        panic!("{context}: expected one injected failure, saw {failed:?} in {events:?}");
    };
    assert_eq!(events[failed_at].op, fault.op, "{context}");
    let after: Vec<&Event> = events[failed_at + 1..].iter().filter(on_log).collect();
    assert!(
        after.is_empty(),
        "{context}: the log was written or synced again after the failed {:?} of {}: {after:?}",
        fault.op,
        events[failed_at].name
    );
}

/// `count` creates of `/fill/{tag}-{n}` on `conn`, each acknowledged; returns `count`.
fn create_more(
    conn: &mut Conn,
    acked: &mut Acked,
    tag: &str,
    count: usize,
    context: &str,
) -> usize {
    for n in 0..count {
        let path = format!("/fill/{tag}-{n}");
        let data = format!("{tag} {n}").into_bytes();
        let (err, _) = conn
            .create(&path, &data, 0)
            .unwrap_or_else(|error| panic!("{context}: create {path}: {error} (keel stopped?)"));
        assert_eq!(err, OK, "{context}: create {path}");
        acked.created.insert(path, data);
        acked.acked += 1;
    }
    count
}

/// How many `op`s failed by injection.
fn injected(events: &[Event], op: Op) -> usize {
    events
        .iter()
        .filter(|event| event.injected && event.op == op)
        .count()
}

/// Published snapshots (`snapshot.<hex>`) and temporaries (`….tmp`) among `files`.
fn snapshots(files: &[String]) -> (Vec<&String>, Vec<&String>) {
    files
        .iter()
        .filter(|name| name.starts_with("snapshot."))
        .partition(|name| !name.ends_with(".tmp"))
}

#[test]
fn a_failed_snapshot_write_or_fsync_does_not_stop_keel() {
    let name = "eio-snapshot";
    let began = Instant::now();
    // A snapshot every 50 to 100 txns.
    let Some(setup) = Setup::new(name, "snapCount=100\n") else {
        return;
    };
    let context = name.to_string();
    let mut acked = Acked::default();
    let server = setup.start();
    let mut conn = Conn::connect(server.addr, 10_000).expect("connect");
    assert_eq!(conn.create("/fill", b"", 0).expect("create").0, OK);
    // Snapshot writes fail, then (the fault switched with no healthy moment between, so no
    // snapshot can be published meanwhile) snapshot fsyncs.
    for (phase, op) in [("write", Op::Write), ("fsync", Op::Fsync)] {
        setup.mount().arm(Fault {
            op,
            name_prefix: "snapshot.",
            after: 0,
            count: None,
            lose_unsynced: false,
        });
        // Writes until two snapshots have failed this way (bounded): a failure is not the end
        // of snapshotting either.
        let deadline = Instant::now() + SNAPSHOT_WAIT;
        let mut n = 0;
        while injected(&setup.mount().events(), op) < 2 {
            assert!(
                Instant::now() < deadline,
                "{context}: no snapshot {phase} failed within {} s; stderr:\n{}",
                SNAPSHOT_WAIT.as_secs(),
                setup.stderr()
            );
            n += create_more(&mut conn, &mut acked, &format!("{phase}-{n}"), 20, &context);
        }
        println!(
            "{name}: snapshot {phase}s failing: {n} writes acknowledged ({:.1} s)",
            began.elapsed().as_secs_f64()
        );
    }
    // No more writes, so no new snapshot: wait (bounded) for the one in flight to end.
    let deadline = Instant::now() + SNAPSHOT_WAIT;
    let ended =
        |setup: &Setup| setup.log_count("snapshot failed") + setup.log_count("snapshot written");
    while ended(&setup) < setup.log_count("snapshot started") {
        assert!(
            Instant::now() < deadline,
            "{context}: a snapshot did not end within {} s; stderr:\n{}",
            SNAPSHOT_WAIT.as_secs(),
            setup.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let stderr = setup.stderr();
    let failed = setup.log_count("snapshot failed");
    assert!(
        failed >= 4 && setup.log_count("snapshot written") == 0,
        "{context}: expected every snapshot to fail, and at least 4 to be tried:\n{stderr}"
    );
    assert!(
        EIO.iter().any(|eio| stderr.contains(eio)) && stderr.contains(".tmp"),
        "{context}: a failed snapshot is not reported with its file and error:\n{stderr}"
    );
    let files = setup.files();
    let (published, temporaries) = snapshots(&files);
    assert!(
        published.is_empty() && temporaries.is_empty(),
        "{context}: after failed snapshots: published {published:?}, left {temporaries:?}"
    );
    setup.mount().disarm();

    // Faults gone: a snapshot is published (bounded wait, writing on), the server still runs.
    let deadline = Instant::now() + SNAPSHOT_WAIT;
    let mut round = 0;
    while snapshots(&setup.files()).0.is_empty() {
        assert!(
            Instant::now() < deadline,
            "{context}: no snapshot published after the faults were removed; files {:?}; \
             stderr:\n{}",
            setup.files(),
            setup.stderr()
        );
        round += 1;
        create_more(
            &mut conn,
            &mut acked,
            &format!("healed-{round}"),
            20,
            &context,
        );
    }
    drop(conn);
    let nodes = kill_restart_verify(server, || setup.start(), &mut acked, &context);
    println!(
        "{name}: {failed} snapshots failed, the server went on; then {:?} published; {nodes} \
         nodes verified after a SIGKILL ({:.1} s)",
        snapshots(&setup.files()).0,
        began.elapsed().as_secs_f64()
    );
}
