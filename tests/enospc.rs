//! A full disk: the dataDir on a 16 MiB tmpfs whose space is mostly taken by a filler file
//! created on purpose, so the write-ahead log runs out of room after its first 4 MiB segment
//! (`preAllocSize=1024` KiB is raised to Keel's 4 MiB minimum segment).
//!
//! Expected, and checked: when a new segment cannot be allocated the server stops by itself
//! with exit status 70 and a message on stderr naming the space error — within a bounded
//! time, never by a panic or a signal; restarted on the still-full disk it recovers, serves the
//! acknowledged data and stops the same way again when its log is full (or, if it cannot even
//! start, says why and exits non-zero); once the filler is deleted it recovers every
//! acknowledged write, accepts new writes (rolling to a new segment) and those survive a
//! SIGKILL too.
//!
//! Needs root (mount(2)); as another user, or where mounting is not permitted, the test prints
//! why and is skipped. The mount is undone in a Drop guard, also when the test fails.

mod faults;

use faults::{show, Conn, Rng, Server, NO_NODE, OK};
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

const FS_BYTES: u64 = 16 << 20;
/// Left free after the filler: room for one 4 MiB segment (and directories), not for two.
const FREE_BYTES: u64 = 6 << 20;
/// The exit status `make_durable` documents for a failed log write (EX_SOFTWARE).
const EXIT_LOG_FAILED: i32 = 70;
const WRITERS: usize = 4;
const WRITES_MAX: usize = 20_000;
const PHASE_TIME_MAX: Duration = Duration::from_secs(60);
/// How long a server that hit the full disk may take to exit.
const EXIT_WAIT: Duration = Duration::from_secs(20);

/// A tmpfs mounted for the test; unmounted (and its mount point removed) when dropped.
struct Mount {
    dir: PathBuf,
}

impl Mount {
    fn tmpfs(dir: &Path, bytes: u64) -> Result<Mount, String> {
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
    fn ext4_loop(dir: &Path, image: &Path, bytes: u64) -> Result<Mount, String> {
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

fn free_bytes(dir: &Path) -> u64 {
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

/// Free 4 KiB blocks at the end of the newest published segment (all zeros, as preallocated).
fn tail_free_blocks(log_dir: &Path) -> usize {
    let newest = std::fs::read_dir(log_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let hex = name.strip_prefix("log.")?;
            i64::from_str_radix(hex, 16)
                .ok()
                .map(|zxid| (zxid, entry.path()))
        })
        .max();
    let Some((_, path)) = newest else { return 0 };
    let bytes = std::fs::read(path).unwrap_or_default();
    bytes
        .chunks(4096)
        .rev()
        .take_while(|block| block.iter().all(|&b| b == 0))
        .count()
}

fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| {
                    let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
                    format!("{} ({len} B)", entry.file_name().to_string_lossy())
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// What the clients were told, per node under /fill. For each writer's counter node only the
/// last acknowledged setData counts, plus the one write that may have been in flight.
#[derive(Default)]
struct Acked {
    /// path → data of every acknowledged create.
    created: BTreeMap<String, Vec<u8>>,
    /// Creates sent without a reply: may or may not be there.
    maybe_created: BTreeMap<String, Vec<u8>>,
    /// counter path → (version, data) of its last acknowledged setData (version 0: create).
    counters: BTreeMap<String, (i32, Vec<u8>)>,
    /// counter path → (version, data) of a setData in flight when the server stopped.
    maybe_counters: BTreeMap<String, (i32, Vec<u8>)>,
    acked: usize,
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
fn write_until_stopped(addr: SocketAddr, phase: usize, acked: &mut Acked, seed: u64) -> usize {
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
fn verify(conn: &mut Conn, acked: &mut Acked, context: &str) -> usize {
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

/// Waits (bounded) for the server to stop on its own after its disk filled, and checks how.
fn expect_clean_stop(server: &mut Server, context: &str) -> ExitStatus {
    let Some(status) = server.wait_exit(EXIT_WAIT) else {
        panic!(
            "{context}: keel is still running {} s after its disk filled (hung?); stderr:\n{}",
            EXIT_WAIT.as_secs(),
            server.stderr_tail()
        );
    };
    check_stop_status(status, &server.stderr_path, Some(EXIT_LOG_FAILED), context);
    status
}

/// A stop without a signal or panic, whose stderr names the space error; with `code`, that
/// exit status exactly, otherwise any non-zero one.
fn check_stop_status(status: ExitStatus, stderr_path: &Path, code: Option<i32>, context: &str) {
    use std::os::unix::process::ExitStatusExt;
    let stderr = faults::tail_of(stderr_path);
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
        stderr.contains("No space left on device") || stderr.contains("os error 28"),
        "{context}: stderr does not name the space error:\n{stderr}"
    );
    assert!(
        !stderr.contains("panicked"),
        "{context}: keel panicked:\n{stderr}"
    );
}

#[test]
fn a_full_tmpfs_stops_keel_cleanly_and_acked_writes_survive() {
    let work = faults::temp_dir("enospc-tmpfs");
    match Mount::tmpfs(&work.join("mnt"), FS_BYTES) {
        Ok(mount) => full_disk("enospc-tmpfs", &work, mount),
        Err(reason) => skip("enospc-tmpfs", "a size-limited tmpfs", &reason),
    }
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn a_full_ext4_stops_keel_cleanly_and_acked_writes_survive() {
    let work = faults::temp_dir("enospc-ext4");
    match Mount::ext4_loop(&work.join("mnt"), &work.join("ext4.img"), 2 * FS_BYTES) {
        Ok(mount) => full_disk("enospc-ext4", &work, mount),
        Err(reason) => skip("enospc-ext4", "a loop-mounted ext4 image", &reason),
    }
    let _ = std::fs::remove_dir_all(&work);
}

/// Says why the test did not run. Written to the process's stderr directly, not through
/// `eprintln!`, so that `cargo test` shows it even while it captures test output.
fn skip(name: &str, what: &str, reason: &str) {
    let message = format!(
        "SKIPPED {name}: cannot mount {what} ({reason}); run the tests as root to check the \
         full-disk behaviour\n"
    );
    print!("{message}");
    let _ = std::io::stderr().write_all(message.as_bytes());
}

/// The three phases on `mount`, whose free space is cut to `FREE_BYTES` with a filler file.
fn full_disk(name: &str, work: &Path, mount: Mount) {
    let seed = faults::seed_from_env("KEEL_ENOSPC_SEED");
    let began = Instant::now();
    println!(
        "{name}: seed {seed} (replay: KEEL_ENOSPC_SEED={seed}), mounted at {}",
        mount.dir.display()
    );
    let data_dir = mount.dir.join("data");
    std::fs::create_dir_all(&data_dir).expect("dataDir");
    let filler = mount.dir.join("filler");
    {
        let mut file = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0x5au8; 1 << 20];
        let mut left = free_bytes(&mount.dir).saturating_sub(FREE_BYTES);
        while left > 0 {
            let bytes = left.min(chunk.len() as u64) as usize;
            file.write_all(&chunk[..bytes]).expect("write the filler");
            left -= bytes as u64;
        }
        file.sync_all().expect("sync the filler");
    }
    println!(
        "  filler written: {} KiB free",
        free_bytes(&mount.dir) >> 10
    );
    let config = work.join("zoo.cfg");
    let stderr_path = work.join("keel.stderr");
    let port = faults::free_port();
    // 1024 KiB asks for less than Keel's 4 MiB minimum segment; snapshots (snapCount) are kept
    // out of the way: this test is about the log filling the disk.
    faults::write_config(
        &config,
        &data_dir,
        port,
        "preAllocSize=1024\nsnapCount=1000000\n",
    );
    let log_dir = data_dir.join("version-2");
    let mut acked = Acked::default();

    // Phase 1: write until the disk is full.
    let context = format!("{name} seed {seed} phase 1 (filling the disk)");
    let mut server = Server::start(&config, port, &stderr_path);
    {
        let mut conn = Conn::connect(server.addr, 10_000).expect("connect");
        assert_eq!(conn.create("/fill", b"", 0).expect("create").0, OK);
        for index in 0..WRITERS {
            let path = format!("/fill/w{index}");
            assert_eq!(conn.create(&path, b"0", 0).expect("create").0, OK);
            acked.counters.insert(path, (0, b"0".to_vec()));
        }
    }
    let count = write_until_stopped(server.addr, 1, &mut acked, seed);
    let status = expect_clean_stop(&mut server, &context);
    drop(server);
    println!(
        "  phase 1: {count} writes acknowledged, then keel stopped with {status} ({:.1} s); \
         {} KiB free; log dir: {:?}, {} free blocks at the end of the newest segment",
        began.elapsed().as_secs_f64(),
        free_bytes(&mount.dir) >> 10,
        list(&log_dir),
        tail_free_blocks(&log_dir)
    );
    println!(
        "  stderr: {}",
        faults::tail_of(&stderr_path)
            .trim_end()
            .lines()
            .last()
            .unwrap_or("")
    );
    assert!(
        count > 100,
        "{context}: only {count} writes before the disk was full"
    );

    // Phase 2: restart on the still-full disk.
    let context = format!("{name} seed {seed} phase 2 (restart on the full disk)");
    let _ = std::fs::write(&stderr_path, b"");
    match Server::try_start(&config, port, &stderr_path) {
        Err(status) => {
            // Allowed: refusing to start on a full disk (a start-up snapshot, say), if it says
            // why and exits non-zero.
            check_stop_status(status, &stderr_path, None, &context);
            println!("  phase 2: keel refused to start on the full disk: {status}");
        }
        Ok(mut server) => {
            let nodes = match Conn::connect(server.addr, 10_000) {
                Ok(mut conn) => verify(&mut conn, &mut acked, &context),
                Err(_) => 0, // Its session could not be logged: the server is stopping.
            };
            let count = write_until_stopped(server.addr, 2, &mut acked, seed);
            let status = expect_clean_stop(&mut server, &context);
            println!(
                "  phase 2: restarted on the full disk, {nodes} nodes read back, {count} more \
                 writes acknowledged, then {status}"
            );
        }
    }

    // Phase 3: free the space; everything acknowledged is there and the log goes on.
    let context = format!("{name} seed {seed} phase 3 (space freed)");
    std::fs::remove_file(&filler).expect("delete the filler");
    println!(
        "  filler deleted: {} KiB free",
        free_bytes(&mount.dir) >> 10
    );
    let _ = std::fs::write(&stderr_path, b"");
    let server = Server::start(&config, port, &stderr_path);
    let mut conn = Conn::connect(server.addr, 10_000).expect("connect after freeing space");
    let nodes = verify(&mut conn, &mut acked, &context);
    let mut rng = Rng::new(seed);
    // More than a segment's worth, so the log rolls to a new segment on the freed space.
    let mut after = BTreeMap::new();
    for n in 0..1500 {
        let path = format!("/fill/after-{n}");
        let data = vec![b'a' + rng.below(26) as u8; 3000];
        let (err, _) = conn
            .create(&path, &data, 0)
            .expect("create after freeing space");
        assert_eq!(err, OK, "{context}: create {path}");
        after.insert(path, data);
    }
    acked.created.extend(after);
    drop(conn);
    let segments = list(&log_dir);
    assert!(
        server.kill_9().is_none(),
        "{context}: keel stopped by itself; stderr:\n{}",
        faults::tail_of(&stderr_path)
    );
    let server = Server::start(&config, port, &stderr_path);
    let mut conn = Conn::connect(server.addr, 10_000).expect("connect");
    let nodes_after = verify(&mut conn, &mut acked, &context);
    assert_eq!(conn.get_data("/fill/after-none").expect("read").0, NO_NODE);
    drop(conn);
    drop(server);
    println!(
        "  phase 3: {nodes} nodes verified after freeing space; 1500 more writes, SIGKILL, \
         {nodes_after} nodes verified; log dir: {segments:?}"
    );
    println!(
        "{name}: {} acknowledged writes verified in {:.1} s",
        acked.acked + 1500,
        began.elapsed().as_secs_f64()
    );
    drop(mount);
}
