//! Shared by the disk-fault tests (`tests/enospc.rs`, `tests/disk_errors.rs`, the full disk
//! of `tests/ensemble.rs`): a tmpfs or loop-mounted ext4 to fill (`Mount`), writers that
//! record what each client was told, the check after a restart that every acknowledged write
//! is there (and nothing no client sent), and the check that a server whose disk failed
//! stopped by itself, cleanly, saying why.

use super::{show, tail_of, Conn, Rng, Server, NO_NODE, OK};
use keel::proto::op;
use keel::proto::records::encode;
use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

/// The exit status `make_durable` documents for a failed log write (EX_SOFTWARE).
pub const EXIT_LOG_FAILED: i32 = 70;
const WRITERS: usize = 4;
const WRITES_MAX: usize = 20_000;
const PHASE_TIME_MAX: Duration = Duration::from_secs(60);
/// How long a server whose disk failed may take to exit.
const EXIT_WAIT: Duration = Duration::from_secs(20);

/// What the clients were told, per node under /fill. For each writer's counter node only the
/// last acknowledged setData counts, plus the one write that may have been in flight.
#[derive(Default)]
pub struct Acked {
    /// path → data of every acknowledged create.
    pub created: BTreeMap<String, Vec<u8>>,
    /// Creates sent without a reply: may or may not be there.
    pub maybe_created: BTreeMap<String, Vec<u8>>,
    /// counter path → (version, data) of its last acknowledged setData (version 0: create).
    pub counters: BTreeMap<String, (i32, Vec<u8>)>,
    /// counter path → (version, data) of a setData in flight when the server stopped.
    pub maybe_counters: BTreeMap<String, (i32, Vec<u8>)>,
    pub acked: usize,
}

#[derive(Default)]
struct WriterReport {
    created: Vec<(String, Vec<u8>)>,
    maybe_created: Option<(String, Vec<u8>)>,
    counter: Option<(String, i32, Vec<u8>)>,
    maybe_counter: Option<(String, i32, Vec<u8>)>,
    acked: usize,
    failure: Option<String>,
}

/// One writer: its session creates `/fill/p{phase}-w{index}-{n}` nodes (about 3 KB each) and
/// sets its counter `/fill/w{index}` with the expected version, one request at a time, until
/// the connection breaks (the server stopped) or a bound is hit.
fn writer(
    addr: SocketAddr,
    phase: usize,
    index: usize,
    counter: (i32, Vec<u8>),
    seed: u64,
) -> WriterReport {
    let mut report = WriterReport::default();
    let mut conn = match Conn::connect(addr, 10_000) {
        Ok(conn) => conn,
        Err(_) => return report, // The server stopped before this session was made.
    };
    let mut rng = Rng::new(seed ^ ((phase as u64) << 32) ^ index as u64);
    let counter_path = format!("/fill/w{index}");
    let (mut version, _) = counter;
    let deadline = Instant::now() + PHASE_TIME_MAX;
    let mut n = 0;
    while n < WRITES_MAX && Instant::now() < deadline {
        n += 1;
        let fill = b'a' + rng.below(26) as u8;
        let mut data = format!("p{phase}-w{index}-{n}:").into_bytes();
        data.extend(std::iter::repeat_n(fill, 2000 + rng.below(2000) as usize));
        if rng.below(10) < 7 {
            let path = format!("/fill/p{phase}-w{index}-{n}");
            match conn.create(&path, &data, 0) {
                Ok((OK, created)) if created == path => report.created.push((path, data)),
                Ok(other) => {
                    report.failure = Some(format!("create {path}: {other:?}"));
                    return report;
                }
                Err(_) => {
                    report.maybe_created = Some((path, data));
                    return report;
                }
            }
        } else {
            let reply = conn.call(op::SET_DATA, |w| {
                encode::set_data(w, &counter_path, &data, version)
            });
            match reply {
                Ok(reply) if reply.err == OK => {
                    version += 1;
                    report.counter = Some((counter_path.clone(), version, data));
                }
                Ok(reply) => {
                    report.failure = Some(format!(
                        "setData {counter_path} @v{version}: error {}",
                        reply.err
                    ));
                    return report;
                }
                Err(_) => {
                    report.maybe_counter = Some((counter_path.clone(), version + 1, data));
                    return report;
                }
            }
        }
        report.acked += 1;
    }
    report
}

/// Runs the writers until the server stops or the bounds are hit; folds what they were told
/// into `acked`.
pub fn write_until_stopped(addr: SocketAddr, phase: usize, acked: &mut Acked, seed: u64) -> usize {
    let reports: Vec<WriterReport> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..WRITERS)
            .map(|index| {
                let counter = acked
                    .counters
                    .get(&format!("/fill/w{index}"))
                    .cloned()
                    .expect("counter created in setup");
                scope.spawn(move || writer(addr, phase, index, counter, seed))
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("a writer panicked"))
            .collect()
    });
    let mut count = 0;
    for report in reports {
        if let Some(failure) = report.failure {
            panic!("seed {seed} phase {phase}: unexpected reply: {failure}");
        }
        count += report.acked;
        acked.created.extend(report.created);
        acked.maybe_created.extend(report.maybe_created);
        if let Some((path, version, data)) = report.counter {
            acked.counters.insert(path, (version, data));
        }
        if let Some((path, version, data)) = report.maybe_counter {
            acked.maybe_counters.insert(path, (version, data));
        }
    }
    acked.acked += count;
    count
}

/// Every acknowledged write is there; every other node under /fill is one a client tried to
/// create (sent, no reply). Resolves the uncertain ones to what was found.
pub fn verify(conn: &mut Conn, acked: &mut Acked, context: &str) -> usize {
    let (err, names) = conn.get_children("/fill").expect("getChildren /fill");
    assert_eq!(err, OK, "{context}: /fill");
    let mut found: BTreeMap<String, (Vec<u8>, i32)> = BTreeMap::new();
    for name in names {
        let path = format!("/fill/{name}");
        let (err, data, stat) = conn.get_data(&path).expect("getData");
        assert_eq!(err, OK, "{context}: getData {path}");
        found.insert(path, (data, stat.version));
    }
    for (path, data) in &acked.created {
        match found.get(path) {
            None => panic!("{context}: acknowledged create {path} is missing"),
            Some((got, version)) => assert!(
                got == data && *version == 0,
                "{context}: {path}: expected v0 {}, found v{version} {}",
                show(data),
                show(got)
            ),
        }
    }
    for (path, (version, data)) in &acked.counters {
        let (got, got_version) = found
            .get(path)
            .unwrap_or_else(|| panic!("{context}: counter {path} is missing"));
        let in_flight = acked.maybe_counters.get(path);
        let matches_acked = got_version == version && got == data;
        let matches_in_flight = in_flight.is_some_and(|(v, d)| got_version == v && got == d);
        assert!(
            matches_acked || matches_in_flight,
            "{context}: {path}: expected the last acknowledged setData v{version} {} (or the \
             one in flight: {:?}), found v{got_version} {}",
            show(data),
            in_flight.map(|(v, d)| (v, show(d))),
            show(got)
        );
    }
    for (path, (data, version)) in &found {
        if acked.created.contains_key(path) || acked.counters.contains_key(path) {
            continue;
        }
        let tried = acked.maybe_created.get(path).unwrap_or_else(|| {
            panic!("{context}: {path} exists, but no client ever tried to create it")
        });
        assert!(
            tried == data && *version == 0,
            "{context}: {path} (in flight when the server stopped) is there, but not whole: \
             expected v0 {}, found v{version} {}",
            show(tried),
            show(data)
        );
    }
    // What was found is now the truth: an in-flight write found applied counts as written.
    let maybe = std::mem::take(&mut acked.maybe_created);
    for (path, data) in maybe {
        if found.contains_key(&path) {
            acked.created.insert(path, data);
        }
    }
    let maybe = std::mem::take(&mut acked.maybe_counters);
    for (path, (version, data)) in maybe {
        if found.get(&path).is_some_and(|(_, v)| *v == version) {
            acked.counters.insert(path, (version, data));
        }
    }
    found.len()
}

/// SIGKILLs `server`, which must still be running, starts it again with `restart`, and checks
/// that every acknowledged write is there (and nothing never sent); returns the nodes found.
pub fn kill_restart_verify(
    server: Server,
    restart: impl FnOnce() -> Server,
    acked: &mut Acked,
    context: &str,
) -> usize {
    let stderr_path = server.stderr_path.clone();
    assert!(
        server.kill_9().is_none(),
        "{context}: keel stopped by itself before the SIGKILL; stderr:\n{}",
        tail_of(&stderr_path)
    );
    let server = restart();
    let mut conn = Conn::connect(server.addr, 10_000).expect("connect after SIGKILL");
    let nodes = verify(&mut conn, acked, context);
    assert_eq!(conn.get_data("/fill/none").expect("read").0, NO_NODE);
    nodes
}

/// Creates `/fill` and the writers' counter nodes `/fill/w{index}` (version 0), recorded as
/// acknowledged.
pub fn create_counters(conn: &mut Conn, acked: &mut Acked) {
    assert_eq!(conn.create("/fill", b"", 0).expect("create").0, OK);
    for index in 0..WRITERS {
        let path = format!("/fill/w{index}");
        assert_eq!(conn.create(&path, b"0", 0).expect("create").0, OK);
        acked.counters.insert(path, (0, b"0".to_vec()));
    }
}

/// Waits (bounded) for the server to stop on its own after its disk failed, and checks how:
/// exit status `EXIT_LOG_FAILED`, and stderr naming the error (one of `names`).
pub fn expect_clean_stop(server: &mut Server, context: &str, names: &[&str]) -> ExitStatus {
    let Some(status) = server.wait_exit(EXIT_WAIT) else {
        panic!(
            "{context}: keel is still running {} s after its disk failed (hung?); stderr:\n{}",
            EXIT_WAIT.as_secs(),
            server.stderr_tail()
        );
    };
    check_stop_status(
        status,
        &server.stderr_path,
        Some(EXIT_LOG_FAILED),
        context,
        names,
    );
    status
}

/// A stop without a signal or panic, whose stderr names the error (contains one of `names`);
/// with `code`, that exit status exactly, otherwise any non-zero one.
pub fn check_stop_status(
    status: ExitStatus,
    stderr_path: &Path,
    code: Option<i32>,
    context: &str,
    names: &[&str],
) {
    use std::os::unix::process::ExitStatusExt;
    let stderr = tail_of(stderr_path);
    assert_eq!(
        status.signal(),
        None,
        "{context}: keel died of a signal (panic=abort, crash?); stderr:\n{stderr}"
    );
    match code {
        Some(code) => assert_eq!(
            status.code(),
            Some(code),
            "{context}: exit status; stderr:\n{stderr}"
        ),
        None => assert_ne!(
            status.code(),
            Some(0),
            "{context}: exit status; stderr:\n{stderr}"
        ),
    }
    assert!(
        names.iter().any(|name| stderr.contains(name)),
        "{context}: stderr names none of {names:?}:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "{context}: keel panicked:\n{stderr}"
    );
}

/// Says why a test did not run (it needs `what`, which `reason` says cannot be had here).
/// Written to the process's stderr directly, not through `eprintln!`, so that `cargo test`
/// shows it even while it captures test output.
pub fn skip(name: &str, what: &str, reason: &str) {
    let message = format!(
        "SKIPPED {name}: cannot mount {what} ({reason}); run the tests as root to check the \
         disk-error behaviour\n"
    );
    print!("{message}");
    let _ = std::io::stderr().write_all(message.as_bytes());
}

/// A tmpfs mounted for the test; unmounted (and its mount point removed) when dropped.
pub struct Mount {
    pub dir: PathBuf,
}

impl Mount {
    pub fn tmpfs(dir: &Path, bytes: u64) -> Result<Mount, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root".into());
        }
        std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let target = CString::new(dir.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
        let options = CString::new(format!("size={bytes},mode=0700")).map_err(|e| e.to_string())?;
        // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                options.as_ptr().cast(),
            )
        };
        if rc != 0 {
            let error = std::io::Error::last_os_error();
            let _ = std::fs::remove_dir(dir);
            return Err(format!("mount -t tmpfs on {}: {error}", dir.display()));
        }
        Ok(Mount {
            dir: dir.to_path_buf(),
        })
    }
}

impl Mount {
    /// A loop-mounted ext4 image of `bytes` (the image lives next to the mount point, on the
    /// ordinary disk): the filesystem most deployments use, with real extents and a journal.
    pub fn ext4_loop(dir: &Path, image: &Path, bytes: u64) -> Result<Mount, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root".into());
        }
        std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let file = std::fs::File::create(image).map_err(|e| format!("create image: {e}"))?;
        file.set_len(bytes)
            .map_err(|e| format!("size the image: {e}"))?;
        drop(file);
        let mkfs = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(image)
            .output()
            .map_err(|e| format!("mkfs.ext4 not runnable: {e}"))?;
        if !mkfs.status.success() {
            return Err(format!(
                "mkfs.ext4 failed: {}",
                String::from_utf8_lossy(&mkfs.stderr).trim()
            ));
        }
        let mount = std::process::Command::new("mount")
            .args(["-t", "ext4", "-o", "loop"])
            .arg(image)
            .arg(dir)
            .output()
            .map_err(|e| format!("mount not runnable: {e}"))?;
        if !mount.status.success() {
            let _ = std::fs::remove_dir(dir);
            return Err(format!(
                "mount -o loop failed: {}",
                String::from_utf8_lossy(&mount.stderr).trim()
            ));
        }
        Ok(Mount {
            dir: dir.to_path_buf(),
        })
    }
}

impl Mount {
    /// Writes (and fsyncs) a file `filler` that leaves about `free` bytes of the mount free;
    /// returns its path, to delete when the space should come back.
    pub fn fill_until_free(&self, free: u64) -> PathBuf {
        let filler = self.dir.join("filler");
        let mut file = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0x5au8; 1 << 20];
        let mut left = free_bytes(&self.dir).saturating_sub(free);
        while left > 0 {
            let bytes = left.min(chunk.len() as u64) as usize;
            file.write_all(&chunk[..bytes]).expect("write the filler");
            left -= bytes as u64;
        }
        file.sync_all().expect("sync the filler");
        filler
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let Ok(target) = CString::new(self.dir.as_os_str().as_bytes()) else {
            return;
        };
        // SAFETY: a valid NUL-terminated path. A busy mount is detached instead (MNT_DETACH),
        // so a failing test never leaves a mount behind.
        unsafe {
            if libc::umount2(target.as_ptr(), 0) != 0 {
                libc::umount2(target.as_ptr(), libc::MNT_DETACH);
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

pub fn free_bytes(dir: &Path) -> u64 {
    let path = CString::new(dir.as_os_str().as_bytes()).expect("path");
    // SAFETY: statvfs writes into the zeroed struct we pass; the path is NUL-terminated.
    unsafe {
        let mut stat: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(path.as_ptr(), &mut stat) != 0 {
            return 0;
        }
        stat.f_bavail as u64 * stat.f_frsize as u64
    }
}
