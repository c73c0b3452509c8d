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

use faults::disk::{
    check_stop_status, create_counters, expect_clean_stop, free_bytes, kill_restart_verify, skip,
    verify, write_until_stopped, Acked, Mount,
};
use faults::{Conn, Rng, Server, OK};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

const FS_BYTES: u64 = 16 << 20;
/// Left free after the filler: room for one 4 MiB segment (and directories), not for two.
const FREE_BYTES: u64 = 6 << 20;
/// How stderr names the space error.
const SPACE_ERROR: &[&str] = &["No space left on device", "os error 28"];

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
    let filler = mount.fill_until_free(FREE_BYTES);
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
        create_counters(&mut conn, &mut acked);
    }
    let count = write_until_stopped(server.addr, 1, &mut acked, seed);
    let status = expect_clean_stop(&mut server, &context, SPACE_ERROR);
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
            check_stop_status(status, &stderr_path, None, &context, SPACE_ERROR);
            println!("  phase 2: keel refused to start on the full disk: {status}");
        }
        Ok(mut server) => {
            let nodes = match Conn::connect(server.addr, 10_000) {
                Ok(mut conn) => verify(&mut conn, &mut acked, &context),
                Err(_) => 0, // Its session could not be logged: the server is stopping.
            };
            let count = write_until_stopped(server.addr, 2, &mut acked, seed);
            let status = expect_clean_stop(&mut server, &context, SPACE_ERROR);
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
    let restart = || Server::start(&config, port, &stderr_path);
    let nodes_after = kill_restart_verify(server, restart, &mut acked, &context);
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
