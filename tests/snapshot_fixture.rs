//! A data directory holding one snapshot of a large tree, for benchmarks that need a server
//! with a million znodes without loading them over the wire (`benches/snapshot_stall.sh`).
//!
//! Ignored unless asked for:
//!
//!   KEEL_FIXTURE_DIR=/tmp/x KEEL_FIXTURE_SHAPE=spread \
//!     cargo test --release --test snapshot_fixture -- --ignored --nocapture
//!
//! Shapes (100 B of data per znode, OPEN_ACL_UNSAFE):
//! - `spread`: 1,000 parents `/p0000..` x 1,000 children `node-<15 digits>` (as
//!   `benches/load_tree.py` and `benches/restart_1m.sh` build it);
//! - `flat`: 1,000,000 children `node-<15 digits>` under `/flat`.
//!
//! `KEEL_FIXTURE_NODES` changes the total (default 1,000,000).

use keel::proto::{op, open_acl_unsafe};
use keel::snapshot::write_snapshot;
use keel::tree::{CreateKind, DataTree, Txn, TxnHeader};
use std::path::PathBuf;
use std::sync::Arc;

fn create(tree: &mut DataTree, path: String, data: &Arc<[u8]>) {
    let zxid = tree.last_zxid() + 1;
    let header = TxnHeader {
        session_id: 0,
        cxid: 0,
        zxid,
        time_ms: 1_000,
        op: op::CREATE,
    };
    let txn = Txn::Create {
        path,
        data: Some(data.clone()),
        acl: open_acl_unsafe(),
        ephemeral_owner: 0,
        parent_cversion: -1,
        kind: CreateKind::Persistent,
    };
    tree.apply(&header, &txn);
}

#[test]
#[ignore = "writes a large snapshot for benchmarks; run with KEEL_FIXTURE_DIR set"]
fn write_fixture_snapshot() {
    let Some(dir) = std::env::var_os("KEEL_FIXTURE_DIR").map(PathBuf::from) else {
        eprintln!("KEEL_FIXTURE_DIR is not set: nothing to do");
        return;
    };
    let shape = std::env::var("KEEL_FIXTURE_SHAPE").unwrap_or_else(|_| "spread".into());
    let nodes: usize = std::env::var("KEEL_FIXTURE_NODES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(1_000_000);
    let data: Arc<[u8]> = Arc::from(vec![b'x'; 100]);
    let mut tree = DataTree::new();
    match shape.as_str() {
        "spread" => {
            let parents = nodes.div_ceil(1_000);
            for parent in 0..parents {
                create(&mut tree, format!("/p{parent:04}"), &data);
                for child in 0..1_000.min(nodes - parent * 1_000) {
                    create(&mut tree, format!("/p{parent:04}/node-{child:015}"), &data);
                }
            }
        }
        "flat" => {
            create(&mut tree, "/flat".to_string(), &data);
            for child in 0..nodes {
                create(&mut tree, format!("/flat/node-{child:015}"), &data);
            }
        }
        other => panic!("KEEL_FIXTURE_SHAPE must be spread or flat, not {other:?}"),
    }
    let info = write_snapshot(&dir, &tree, &[]).expect("write the snapshot");
    println!(
        "{shape}: {} nodes, {} MB, zxid {:#x} in {}",
        info.nodes,
        info.file_bytes >> 20,
        info.zxid,
        info.path.display()
    );
}

fn set_data(tree: &mut DataTree, path: String, data: &Arc<[u8]>) {
    let zxid = tree.last_zxid() + 1;
    let header = TxnHeader {
        session_id: 0,
        cxid: 0,
        zxid,
        time_ms: 2_000,
        op: op::SET_DATA,
    };
    let txn = Txn::SetData {
        path,
        data: Some(data.clone()),
        version: 1,
    };
    tree.apply(&header, &txn);
}

/// Applies `batches` x `batch` setData txns on random keys of `keys`, handing a view to a
/// "shard" after each batch as the replica core does; with `hold`, a snapshot's view taken
/// at the start is also held throughout. Returns the seconds taken.
fn apply_batches(
    tree: &mut DataTree,
    keys: &[String],
    batches: usize,
    batch: usize,
    hold: bool,
) -> f64 {
    let data: Arc<[u8]> = Arc::from(vec![b'y'; 100]);
    let snapshot_view = hold.then(|| tree.clone());
    let mut shard_view = tree.clone();
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let started = std::time::Instant::now();
    for _ in 0..batches {
        for _ in 0..batch {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let key = &keys[(state % keys.len() as u64) as usize];
            set_data(tree, key.clone(), &data);
        }
        shard_view = tree.clone();
    }
    let took = started.elapsed().as_secs_f64();
    drop(shard_view);
    drop(snapshot_view);
    took
}

#[test]
#[ignore = "a timing experiment on 1M znodes; run by hand with --release --nocapture"]
fn copy_on_write_cost_of_a_snapshot_view() {
    // Is a write slower while a snapshot holds an old view? Both shapes of issue 3: 1,000 x
    // 1,000 (writes on a 1,000-child parent) and 1,000,000 children under one parent. Each
    // round alternates without and with a held view; 400 setData per batch.
    let data: Arc<[u8]> = Arc::from(vec![b'x'; 100]);
    for shape in ["spread", "flat"] {
        let mut tree = DataTree::new();
        let mut keys = Vec::new();
        if shape == "spread" {
            for parent in 0..1_000 {
                create(&mut tree, format!("/p{parent:04}"), &data);
                for child in 0..1_000 {
                    let path = format!("/p{parent:04}/node-{child:015}");
                    create(&mut tree, path.clone(), &data);
                    if parent == 500 {
                        keys.push(path);
                    }
                }
            }
        } else {
            create(&mut tree, "/flat".to_string(), &data);
            for child in 0..1_000_000 {
                let path = format!("/flat/node-{child:015}");
                create(&mut tree, path.clone(), &data);
                keys.push(path);
            }
        }
        for round in 0..3 {
            let free = apply_batches(&mut tree, &keys, 500, 400, false);
            let held = apply_batches(&mut tree, &keys, 500, 400, true);
            println!(
                "{shape} round {round}: 200k setData {:.0} ns/op without a snapshot view, \
                 {:.0} ns/op with one held",
                free * 1e9 / 200_000.0,
                held * 1e9 / 200_000.0
            );
        }
    }
}

/// 4 KiB write + fdatasync, over and over for `run`, on a pre-written file in `dir`, while
/// `snapshots` writes snapshots of `tree` back to back (none if it is `None`). Returns the
/// fdatasync latencies in µs, sorted, and how many snapshots were written.
fn fdatasync_beside(
    dir: &std::path::Path,
    tree: &DataTree,
    pace: Option<keel::snapshot::Pace>,
    run: std::time::Duration,
) -> (Vec<u64>, usize) {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    let log_path = dir.join("log");
    let mut log = std::fs::File::create(&log_path).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..16 {
        log.write_all(&zeros).unwrap();
    }
    log.sync_all().unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let snap_dir = dir.join("snapshots");
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let mut written = 0;
            let Some(pace) = pace else {
                return written;
            };
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let info = keel::snapshot::write_snapshot_paced(&snap_dir, tree, &[], pace)
                    .expect("snapshot");
                std::fs::remove_file(info.path).unwrap();
                written += 1;
            }
            written
        });
        let record = [7u8; 4096];
        let mut latencies = Vec::new();
        let started = std::time::Instant::now();
        let mut at = 0u64;
        while started.elapsed() < run {
            let one = std::time::Instant::now();
            log.write_all_at(&record, at).unwrap();
            log.sync_data().unwrap();
            latencies.push(one.elapsed().as_micros() as u64);
            at = (at + 4096) % (16 << 20);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let written = writer.join().unwrap();
        latencies.sort_unstable();
        (latencies, written)
    })
}

#[test]
#[ignore = "a disk experiment with a 1M-znode tree; run by hand with --release --nocapture"]
fn log_fdatasync_beside_a_snapshot() {
    // The latency of a log-like 4 KiB write + fdatasync while 1M-znode snapshots (1,000 x
    // 1,000, 100 B, 206 MB) are written back to back, unpaced and paced, against none; the
    // three alternate within each round because the disk's other traffic drifts.
    use keel::snapshot::Pace;
    let dir = std::env::temp_dir().join(format!("keel-fdatasync-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data: Arc<[u8]> = Arc::from(vec![b'x'; 100]);
    let mut tree = DataTree::new();
    for parent in 0..1_000 {
        create(&mut tree, format!("/p{parent:04}"), &data);
        for child in 0..1_000 {
            create(&mut tree, format!("/p{parent:04}/node-{child:015}"), &data);
        }
    }
    let rounds: usize = std::env::var("KEEL_ROUNDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(3);
    let modes = [
        ("none", None),
        ("unpaced", Some(Pace::Unpaced)),
        ("paced 128 MiB/s", Some(Pace::BytesPerSecond(128 << 20))),
    ];
    for round in 0..rounds {
        for (name, pace) in modes {
            let (latencies, snapshots) =
                fdatasync_beside(&dir, &tree, pace, std::time::Duration::from_secs(6));
            let at = |q: f64| {
                latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)]
            };
            println!(
                "round {round} {name:<16} snapshots {snapshots:>2}  fdatasyncs {:>6}  p50 {:>6} \
                 p99 {:>6}  p99.9 {:>6}  max {:>6} µs",
                latencies.len(),
                at(0.5),
                at(0.99),
                at(0.999),
                latencies.last().copied().unwrap_or(0)
            );
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
#[ignore = "a timing experiment; run by hand with --release --nocapture"]
fn set_data_cost_by_batch_size() {
    // keel-loadgen's write shape: 10,000 keys under one parent, a view shipped to the shards
    // after every batch. How much does copy-on-write cost per setData as batches shrink?
    let data: Arc<[u8]> = Arc::from(vec![b'x'; 100]);
    let mut tree = DataTree::new();
    create(&mut tree, "/keel-loadgen".to_string(), &data);
    let keys: Vec<String> = (0..10_000)
        .map(|key| format!("/keel-loadgen/k{key}"))
        .collect();
    for key in &keys {
        create(&mut tree, key.clone(), &data);
    }
    for round in 0..2 {
        for batch in [1, 8, 64, 512] {
            let batches = 200_000 / batch;
            let took = apply_batches(&mut tree, &keys, batches, batch, false);
            println!(
                "round {round}: batches of {batch}: {:.0} ns per setData",
                took * 1e9 / (batches * batch) as f64
            );
        }
    }
}
