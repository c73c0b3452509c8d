//! Snapshots: a written tree loads back equal, damage anywhere is detected (never a panic),
//! the newest loadable snapshot wins, and purging keeps the newest ones.

use super::*;
use crate::proto::{op, open_acl_unsafe, perms, Acl};
use crate::tree::{CreateKind, Txn, TxnHeader};
use std::sync::Arc;

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "keel-snapshot-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn apply(tree: &mut DataTree, session_id: i64, txn: Txn) {
    let zxid = tree.last_zxid() + 1;
    let header = TxnHeader {
        session_id,
        cxid: 0,
        zxid,
        time_ms: 1_000 + zxid,
        op: op::CREATE,
    };
    tree.apply(&header, &txn);
}

fn create(path: &str, data: Option<&[u8]>, acl: Vec<Acl>, owner: i64, kind: CreateKind) -> Txn {
    Txn::Create {
        path: path.to_string(),
        data: data.map(Arc::from),
        acl,
        ephemeral_owner: owner,
        parent_cversion: -1,
        kind,
    }
}

/// Every kind of node, several ACLs, null and empty data, a quota, a deletion (so a
/// cversion differs from the child count) and a multi-byte name.
fn sample_tree() -> DataTree {
    let mut tree = DataTree::new();
    let open = open_acl_unsafe();
    let digest = vec![Acl::new(perms::ALL, "digest", "user:hash=")];
    let persistent = CreateKind::Persistent;
    apply(
        &mut tree,
        1,
        create("/app", Some(b"cfg"), open.clone(), 0, persistent),
    );
    apply(
        &mut tree,
        1,
        create("/app/null", None, open.clone(), 0, persistent),
    );
    apply(
        &mut tree,
        1,
        create("/app/empty", Some(b""), digest.clone(), 0, persistent),
    );
    apply(
        &mut tree,
        7,
        create("/app/eph", Some(b"e"), open.clone(), 7, persistent),
    );
    let container = CreateKind::Container;
    apply(
        &mut tree,
        1,
        create("/box", None, open.clone(), 0, container),
    );
    let ttl = CreateKind::Ttl(5_000);
    apply(&mut tree, 1, create("/ttl", Some(b"t"), digest, 0, ttl));
    apply(
        &mut tree,
        1,
        create("/app/gone", None, open.clone(), 0, persistent),
    );
    apply(
        &mut tree,
        1,
        Txn::Delete {
            path: "/app/gone".into(),
        },
    );
    apply(
        &mut tree,
        1,
        create("/ünï", Some(&[0, 255, 7]), open.clone(), 0, persistent),
    );
    for index in 0..200 {
        let path = format!("/app/n{index:04}");
        apply(
            &mut tree,
            1,
            create(&path, Some(&[7; 100]), open.clone(), 0, persistent),
        );
    }
    let quota = "/zookeeper/quota/app";
    apply(
        &mut tree,
        1,
        create(quota, None, open.clone(), 0, persistent),
    );
    let limits = b"count=10,bytes=-1".as_slice();
    let path = format!("{quota}/zookeeper_limits");
    apply(
        &mut tree,
        1,
        create(&path, Some(limits), open.clone(), 0, persistent),
    );
    let path = format!("{quota}/zookeeper_stats");
    apply(
        &mut tree,
        1,
        create(&path, Some(b"count=0,bytes=0"), open, 0, persistent),
    );
    apply(
        &mut tree,
        1,
        Txn::SetData {
            path: "/app".into(),
            data: Some(Arc::from(b"v2".as_slice())),
            version: 1,
        },
    );
    assert_eq!(tree.invariants(), Ok(()));
    tree
}

type Dump = Vec<(String, StoredStat, Option<Vec<u8>>, Vec<Acl>)>;

fn dump(tree: &DataTree) -> Dump {
    let mut out = Vec::new();
    tree.walk(|path, node| {
        out.push((
            path.to_string(),
            node.stored_stat(),
            node.data().map(|data| data.to_vec()),
            node.acl().to_vec(),
        ));
    });
    out
}

#[test]
fn a_snapshot_loads_back_as_the_same_tree_and_sessions() {
    let scratch = Scratch::new("roundtrip");
    let tree = sample_tree();
    let sessions = vec![(7, 30_000), (0x0100_0000_0000_0001, 4_000)];
    let info = write_snapshot(&scratch.0, &tree, &sessions).unwrap();
    assert_eq!(info.zxid, tree.last_zxid());
    assert_eq!(info.nodes, tree.node_count_distinct() as u64);
    assert!(info.path.ends_with(snapshot_name(tree.last_zxid())));
    let loaded = load_snapshot(&info.path).unwrap();
    assert_eq!(dump(&loaded.tree), dump(&tree));
    assert_eq!(loaded.tree.invariants(), Ok(()));
    assert_eq!(loaded.tree.last_zxid(), tree.last_zxid());
    assert_eq!(loaded.tree.node_count(), tree.node_count());
    // ZooKeeper's cached size lags quota-stats writes until a restart recounts it; so do we.
    let recount: u64 = dump(&tree)
        .iter()
        .map(|(path, _, data, _)| {
            path.encode_utf16().count() as u64 + data.as_ref().map_or(0, |d| d.len() as u64)
        })
        .sum();
    assert_eq!(loaded.tree.approximate_data_size(), recount);
    assert_eq!(loaded.tree.ephemerals(7), vec!["/app/eph".to_string()]);
    assert_eq!(loaded.tree.acl_count(), tree.acl_count());
    assert_eq!(loaded.sessions, sessions);
    assert_eq!(loaded.info.file_bytes, info.file_bytes);
    // The quota came back registered: a create under /app still updates its stats node.
    let mut twin = loaded.tree;
    let mut original = tree;
    for tree in [&mut twin, &mut original] {
        let txn = create(
            "/app/more",
            None,
            open_acl_unsafe(),
            0,
            CreateKind::Persistent,
        );
        apply(tree, 1, txn);
    }
    assert_eq!(dump(&twin), dump(&original));
}

#[test]
fn a_paced_snapshot_takes_its_time_and_loads_back_the_same() {
    // Several chunks of 256 KiB at 4 MiB/s: the write cannot finish before bytes / rate, and
    // the file is the same as an unpaced one's.
    let scratch = Scratch::new("paced");
    let mut tree = sample_tree();
    let open = open_acl_unsafe();
    for index in 0..2_000 {
        let path = format!("/big{index:05}");
        apply(
            &mut tree,
            1,
            create(
                &path,
                Some(&[9; 500]),
                open.clone(),
                0,
                CreateKind::Persistent,
            ),
        );
    }
    let sessions = vec![(7, 30_000)];
    let rate = 4 << 20;
    let started = std::time::Instant::now();
    let info =
        write_snapshot_paced(&scratch.0, &tree, &sessions, Pace::BytesPerSecond(rate)).unwrap();
    let took = started.elapsed();
    assert!(info.file_bytes > 1 << 20, "{}", info.file_bytes);
    // The last chunk (under one buffer) is not waited for.
    let paced_bytes = info.file_bytes - HEADER_BYTES - (2 * PACED_WRITE_BUFFER_BYTES) as u64;
    let floor = std::time::Duration::from_secs_f64(paced_bytes as f64 / rate as f64);
    assert!(took >= floor, "{took:?} < {floor:?}");
    let paced = std::fs::read(&info.path).unwrap();
    let loaded = load_snapshot(&info.path).unwrap();
    assert_eq!(dump(&loaded.tree), dump(&tree));
    assert_eq!(loaded.sessions, sessions);
    std::fs::remove_file(&info.path).unwrap();
    let unpaced = write_snapshot(&scratch.0, &tree, &sessions).unwrap();
    assert_eq!(std::fs::read(&unpaced.path).unwrap(), paced);
}

/// `sample_tree` plus what a load split must carry across threads: containers, ephemerals of
/// two sessions and two ACLs among the split node's children, and quotas whose limit nodes
/// are built by a share.
fn wide_tree() -> DataTree {
    let mut tree = sample_tree();
    let digest = vec![Acl::new(perms::READ, "digest", "reader:hash=")];
    for index in 0..300 {
        let path = format!("/app/w{index:04}");
        let (acl, owner, kind) = match index % 5 {
            0 => (digest.clone(), 0, CreateKind::Persistent),
            1 => (open_acl_unsafe(), 7, CreateKind::Persistent),
            2 => (open_acl_unsafe(), 9, CreateKind::Persistent),
            3 => (open_acl_unsafe(), 0, CreateKind::Container),
            _ => (open_acl_unsafe(), 0, CreateKind::Persistent),
        };
        apply(
            &mut tree,
            owner.max(1),
            create(&path, Some(b"w"), acl, owner, kind),
        );
        if kind == CreateKind::Persistent && owner == 0 {
            let child = format!("{path}/c");
            let txn = create(&child, None, open_acl_unsafe(), 0, CreateKind::Persistent);
            apply(&mut tree, 1, txn);
        }
    }
    assert_eq!(tree.invariants(), Ok(()));
    tree
}

/// The quota'd paths' limit nodes dominate the tree: the split falls in /zookeeper/quota.
fn quota_tree() -> DataTree {
    let mut tree = DataTree::new();
    let open = open_acl_unsafe();
    let persistent = CreateKind::Persistent;
    for index in 0..200 {
        let path = format!("/q{index:03}");
        apply(
            &mut tree,
            1,
            create(&path, None, open.clone(), 0, persistent),
        );
        apply(
            &mut tree,
            1,
            create(
                &format!("{path}/x"),
                Some(b"x"),
                open.clone(),
                0,
                persistent,
            ),
        );
        let quota = format!("/zookeeper/quota{path}");
        apply(
            &mut tree,
            1,
            create(&quota, None, open.clone(), 0, persistent),
        );
        let limits = format!("{quota}/zookeeper_limits");
        let spec = b"count=10,bytes=-1".as_slice();
        apply(
            &mut tree,
            1,
            create(&limits, Some(spec), open.clone(), 0, persistent),
        );
        let stats = format!("{quota}/zookeeper_stats");
        // Stale stats, as a fuzzy ZooKeeper snapshot may hold: the load recounts them.
        let stale = b"count=0,bytes=0".as_slice();
        apply(
            &mut tree,
            1,
            create(&stats, Some(stale), open.clone(), 0, persistent),
        );
    }
    tree
}

/// `bytes` in an 8-byte aligned buffer (the loader views records in place), and its length.
fn aligned(bytes: &[u8]) -> (Vec<u64>, usize) {
    let mut words = vec![0u64; bytes.len().div_ceil(8)];
    bytemuck::cast_slice_mut::<u64, u8>(&mut words)[..bytes.len()].copy_from_slice(bytes);
    (words, bytes.len())
}

/// `bytes` loaded from an aligned copy, shared between `parallel` threads.
fn load_with(bytes: &[u8], parallel: Parallel) -> Result<LoadedSnapshot, SnapshotError> {
    let (words, len) = aligned(bytes);
    let copy = &bytemuck::cast_slice::<u64, u8>(&words)[..len];
    load_mapped_with(copy, Path::new("memory"), parallel)
}

/// The snapshot of `tree` viewed in place, for `Sections::split`.
fn with_sections<T>(tree: &DataTree, look: impl FnOnce(&Sections<'_>) -> T) -> T {
    let (words, len) = aligned(&snapshot_bytes(tree, &[]).unwrap());
    let copy = &bytemuck::cast_slice::<u64, u8>(&words)[..len];
    let header = read_header(copy, len as u64).unwrap();
    let sections = Sections::check(copy, &header).unwrap();
    look(&sections)
}

#[test]
fn a_load_shared_between_threads_builds_the_same_tree() {
    for (tree, split_at) in [(wide_tree(), "/app"), (quota_tree(), "/zookeeper/quota")] {
        let bytes = snapshot_bytes(&tree, &[(7, 4_000), (9, 4_000)]).unwrap();
        let origin = Path::new("memory");
        let one = |bytes: &[u8]| {
            let parallel = Parallel {
                threads: 1,
                nodes_min: 1,
            };
            let mut aligned = vec![0u64; bytes.len().div_ceil(8)];
            let copy = &mut bytemuck::cast_slice_mut::<u64, u8>(&mut aligned)[..bytes.len()];
            copy.copy_from_slice(bytes);
            load_mapped_with(copy, origin, parallel).map(|loaded| loaded.tree)
        };
        let alone = one(&bytes).unwrap();
        for threads in 2..=4 {
            let parallel = Parallel {
                threads,
                nodes_min: 1,
            };
            let split = with_sections(&tree, |sections| sections.split(parallel)).unwrap();
            assert_eq!(split.parent_path, split_at);
            assert_eq!(
                split.shares.len(),
                threads - 1,
                "{split_at}: {threads} threads"
            );
            let shared = load_with(&bytes, parallel).unwrap().tree;
            assert_eq!(shared.invariants(), Ok(()), "{threads} threads");
            assert_eq!(dump(&shared), dump(&alone));
            assert_eq!(dump(&shared), dump(&tree));
            assert_eq!(shared.node_count(), alone.node_count());
            assert_eq!(
                shared.approximate_data_size(),
                alone.approximate_data_size()
            );
            assert_eq!(shared.acl_count(), alone.acl_count());
            for session in [7, 9] {
                assert_eq!(shared.ephemerals(session), alone.ephemerals(session));
            }
            assert_eq!(
                shared.container_and_ttl_candidates(i64::MAX / 2, 1),
                alone.container_and_ttl_candidates(i64::MAX / 2, 1)
            );
            // Quotas came back registered and recounted: the stats nodes match, and a
            // create under a quota'd path updates its stats node in both.
            let (mut shared, mut alone) = (shared, alone.clone());
            for tree in [&mut shared, &mut alone] {
                let txn = create(
                    "/q007/y",
                    None,
                    open_acl_unsafe(),
                    0,
                    CreateKind::Persistent,
                );
                apply(tree, 1, txn);
            }
            assert_eq!(dump(&shared), dump(&alone));
        }
    }
}

#[test]
fn damage_in_a_shared_load_is_an_error_not_a_panic() {
    let tree = wide_tree();
    let bytes = snapshot_bytes(&tree, &[]).unwrap();
    let parallel = Parallel {
        threads: 3,
        nodes_min: 1,
    };
    let record_bytes = std::mem::size_of::<NodeRecord>();
    let node_count = tree.node_count_distinct();
    // Every node record's depth, set one deeper and one shallower than it is (the CRC
    // is fixed up so that the structure itself is what the load must catch).
    for at in (0..node_count).step_by(7) {
        for delta in [1i64, -1] {
            let mut damaged = bytes.clone();
            let offset =
                HEADER_BYTES as usize + at * record_bytes + std::mem::offset_of!(NodeRecord, depth);
            let depth = i64::from(u32::from_le_bytes(
                damaged[offset..offset + 4].try_into().unwrap(),
            ));
            let Ok(new_depth) = u32::try_from(depth + delta) else {
                continue;
            };
            damaged[offset..offset + 4].copy_from_slice(&new_depth.to_le_bytes());
            fix_crcs(&mut damaged);
            let one_thread = Parallel {
                threads: 1,
                nodes_min: 1,
            };
            let one = load_with(&damaged, one_thread);
            let shared = load_with(&damaged, parallel);
            // The same verdict either way; a tree that loads is a sound one.
            assert_eq!(one.is_ok(), shared.is_ok(), "record {at} depth {delta:+}");
            if let (Ok(one), Ok(shared)) = (one, shared) {
                assert_eq!(shared.tree.invariants(), Ok(()));
                assert_eq!(dump(&shared.tree), dump(&one.tree));
            }
        }
    }
}

/// Recomputes the node table's CRC and the header's after a deliberate change.
fn fix_crcs(bytes: &mut [u8]) {
    let mut header: Header = bytemuck::pod_read_unaligned(&bytes[..std::mem::size_of::<Header>()]);
    let nodes = &bytes[header.nodes_offset as usize..header.heap_offset as usize];
    header.nodes_crc = crc32c::crc32c(nodes);
    header.header_crc = header_crc(&header);
    bytes[..std::mem::size_of::<Header>()].copy_from_slice(bytemuck::bytes_of(&header));
}

#[test]
fn an_empty_fresh_tree_round_trips() {
    let scratch = Scratch::new("fresh");
    let tree = DataTree::new();
    let info = write_snapshot(&scratch.0, &tree, &[]).unwrap();
    let loaded = load_snapshot(&info.path).unwrap();
    assert_eq!(dump(&loaded.tree), dump(&tree));
    assert!(loaded.sessions.is_empty());
}

#[test]
fn every_damaged_byte_is_detected_without_panicking() {
    // Flip one bit at offsets spread over every section (and every header field) and cut the
    // file at many lengths: each load fails with a reason, none panics or succeeds.
    let scratch = Scratch::new("damage");
    let tree = sample_tree();
    let info = write_snapshot(&scratch.0, &tree, &[(7, 30_000)]).unwrap();
    let good = std::fs::read(&info.path).unwrap();
    let header_bytes = std::mem::size_of::<Header>();
    let offsets = (0..header_bytes + 8)
        .chain((HEADER_BYTES as usize..good.len()).step_by(37))
        .chain([good.len() - 1]);
    let damaged = scratch.0.join(VERSION_DIR).join("damaged");
    for offset in offsets {
        let mut bytes = good.clone();
        bytes[offset] ^= 0x10;
        std::fs::write(&damaged, &bytes).unwrap();
        let result = load_snapshot(&damaged);
        assert!(result.is_err(), "a flip at byte {offset} went unnoticed");
    }
    for cut in (0..good.len()).step_by(101) {
        std::fs::write(&damaged, &good[..cut]).unwrap();
        assert!(load_snapshot(&damaged).is_err(), "cut at {cut} loaded");
    }
    // Bytes past the end are damage too.
    let mut longer = good.clone();
    longer.extend_from_slice(&[0; 8]);
    std::fs::write(&damaged, &longer).unwrap();
    assert!(load_snapshot(&damaged).is_err());
}

#[test]
fn a_snapshot_built_in_memory_is_the_file_byte_for_byte() {
    let scratch = Scratch::new("memory");
    let tree = sample_tree();
    let sessions = vec![(7, 30_000)];
    let info = write_snapshot(&scratch.0, &tree, &sessions).unwrap();
    let bytes = snapshot_bytes(&tree, &sessions).unwrap();
    assert_eq!(bytes, std::fs::read(&info.path).unwrap());
    let empty = snapshot_bytes(&DataTree::new(), &[]).unwrap();
    let loaded = load_snapshot_bytes(&Arc::<[u8]>::from(empty), &scratch.0).unwrap();
    assert_eq!(dump(&loaded.tree), dump(&DataTree::new()));
}

#[test]
fn bytes_in_memory_load_like_the_file_aligned_or_not_and_damage_is_detected() {
    let scratch = Scratch::new("bytes");
    let tree = sample_tree();
    let sessions = vec![(7, 30_000), (9, 4_000)];
    let info = write_snapshot(&scratch.0, &tree, &sessions).unwrap();
    let good = std::fs::read(&info.path).unwrap();
    let origin = scratch.0.join("received");
    // An 8-byte aligned buffer is viewed in place; one shifted by a byte is copied first.
    let aligned: Arc<[u8]> = Arc::from(good.as_slice());
    let mut shifted = vec![0u8; good.len() + 1];
    shifted[1..].copy_from_slice(&good);
    for bytes in [&aligned[..], &shifted[1..]] {
        let loaded = load_snapshot_bytes(bytes, &origin).unwrap();
        assert_eq!(dump(&loaded.tree), dump(&tree));
        assert_eq!(loaded.sessions, sessions);
        assert_eq!(loaded.info.zxid, info.zxid);
        assert_eq!(loaded.info.file_bytes, good.len() as u64);
    }
    for offset in (0..good.len()).step_by(53) {
        let mut bytes = good.clone();
        bytes[offset] ^= 0x10;
        assert!(
            load_snapshot_bytes(&bytes, &origin).is_err(),
            "flip at {offset}"
        );
    }
    for cut in (0..good.len()).step_by(211) {
        assert!(
            load_snapshot_bytes(&good[..cut], &origin).is_err(),
            "cut at {cut}"
        );
    }
}

#[test]
fn a_header_naming_another_zxid_is_refused() {
    let scratch = Scratch::new("rename");
    let info = write_snapshot(&scratch.0, &sample_tree(), &[]).unwrap();
    let renamed = info.path.with_file_name(snapshot_name(info.zxid + 1));
    std::fs::rename(&info.path, &renamed).unwrap();
    let error = load_snapshot(&renamed).unwrap_err();
    assert!(error.to_string().contains("file name"), "{error}");
}

#[test]
fn the_newest_loadable_snapshot_wins_and_purge_keeps_the_newest() {
    let scratch = Scratch::new("newest");
    let mut tree = sample_tree();
    let mut zxids = Vec::new();
    for round in 0..4 {
        let path = format!("/round{round}");
        apply(
            &mut tree,
            1,
            create(&path, None, open_acl_unsafe(), 0, CreateKind::Persistent),
        );
        zxids.push(write_snapshot(&scratch.0, &tree, &[]).unwrap().zxid);
    }
    // A crash mid-snapshot leaves a .tmp: never loaded, removed at start.
    let tmp = scratch
        .0
        .join(VERSION_DIR)
        .join(format!("{}.tmp", snapshot_name(999_999)));
    std::fs::write(&tmp, b"partial").unwrap();
    let listed: Vec<i64> = list_snapshots(&scratch.0)
        .unwrap()
        .iter()
        .map(|s| s.0)
        .collect();
    let mut newest_first = zxids.clone();
    newest_first.reverse();
    assert_eq!(listed, newest_first);
    assert_eq!(remove_temporaries(&scratch.0).unwrap(), 1);
    assert!(!tmp.exists());
    // Damage the newest: the one before it loads, and the skip says why.
    let newest = scratch.0.join(VERSION_DIR).join(snapshot_name(zxids[3]));
    let mut bytes = std::fs::read(&newest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(&newest, bytes).unwrap();
    let (loaded, skipped) = load_newest(&scratch.0).unwrap();
    assert_eq!(loaded.unwrap().info.zxid, zxids[2]);
    assert_eq!(skipped.len(), 1);
    assert!(skipped[0].to_string().contains("CRC"), "{}", skipped[0]);
    // Keep three: the oldest goes, and the log is needed from the oldest kept on.
    let (removed, oldest_kept) = purge_snapshots(&scratch.0, 3).unwrap();
    assert_eq!(removed, vec![zxids[0]]);
    assert_eq!(oldest_kept, Some(zxids[1]));
    assert_eq!(list_snapshots(&scratch.0).unwrap().len(), 3);
    let empty = Scratch::new("none");
    let (none, skipped) = load_newest(&empty.0).unwrap();
    assert!(none.is_none() && skipped.is_empty());
}

#[test]
fn snapshot_names_parse_as_zookeeper_prints_them() {
    assert_eq!(parse_snapshot_name("snapshot.1a"), Some(0x1a));
    assert_eq!(parse_snapshot_name("snapshot.ffffffffffffffff"), Some(-1));
    assert_eq!(
        parse_snapshot_name(&snapshot_name(0x5_0000_0001)),
        Some(0x5_0000_0001)
    );
    for bad in [
        "snapshot.",
        "snapshot.1a.tmp",
        "snapshot.xyz",
        "log.1",
        "snapshot.12345678901234567",
    ] {
        assert_eq!(parse_snapshot_name(bad), None, "{bad}");
    }
}

#[test]
#[ignore = "measurement: run alone with --release --ignored --nocapture"]
fn write_and_load_speed_1m() {
    // 1,000 parents x 1,000 children of 100 B: the time to write a snapshot and to load it.
    let scratch = Scratch::new("speed");
    let mut tree = DataTree::new();
    let open = open_acl_unsafe();
    for parent in 0..1_000 {
        let path = format!("/p{parent:04}");
        apply(
            &mut tree,
            1,
            create(&path, Some(b""), open.clone(), 0, CreateKind::Persistent),
        );
        for child in 0..1_000 {
            let path = format!("/p{parent:04}/node-{child:015}");
            let txn = create(
                &path,
                Some(&[7; 100]),
                open.clone(),
                0,
                CreateKind::Persistent,
            );
            apply(&mut tree, 1, txn);
        }
    }
    let started = std::time::Instant::now();
    let info = write_snapshot(&scratch.0, &tree, &[]).unwrap();
    let write = started.elapsed();
    let started = std::time::Instant::now();
    let loaded = load_snapshot(&info.path).unwrap();
    let load = started.elapsed();
    println!(
        "{} nodes, {} MB: write {write:?}, load {load:?}",
        info.nodes,
        info.file_bytes >> 20
    );
    assert_eq!(loaded.tree.node_count(), tree.node_count());
}
