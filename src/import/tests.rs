//! The readers against files written by Apache ZooKeeper 3.8 (tests/fixtures/zookeeper-3.8,
//! made by tests/clients/import/make_fixtures.sh: a snapshot holding every node kind, and the
//! log after it holding every txn type ZooKeeper 3.8 writes — create, create2, createContainer,
//! createTTL, setData, setACL, delete, deleteContainer (the ContainerManager reaping an emptied
//! container and an expired TTL node), error, a multi of create/container/TTL/setData/check/
//! delete, a failed multi, createSession, closeSession with ephemerals — each with its 3.6+
//! TxnDigest), checked against kazoo's dump of the same tree from ZooKeeper (expected.txt); and
//! damaged copies of those files, which must be errors, never panics.

use super::files::{adler32, decode_entry, parse_snapshot, parse_txn_log, LogEnd};
use super::*;
use crate::proto::Acl;
use crate::tree::NodeKind;
use proptest::prelude::*;
use std::path::PathBuf;

const SNAPSHOT: &str = "snapshot.14";
const LOG: &str = "log.15";
/// The session that held `/log/eph` when ZooKeeper stopped, and its negotiated timeout.
const HOLDER: (i64, i32) = (72_057_706_404_642_855, 40_000);

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/zookeeper-3.8")
}

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(fixture_dir().join(name)).unwrap()
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "keel-import-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// `<dir>/version-2/` holding the fixture's snapshot and log.
    fn with_fixtures(name: &str) -> Scratch {
        let scratch = Scratch::new(name);
        let version = scratch.0.join(VERSION_DIR);
        std::fs::create_dir_all(&version).unwrap();
        for file in [SNAPSHOT, LOG] {
            std::fs::copy(fixture_dir().join(file), version.join(file)).unwrap();
        }
        scratch
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One node of kazoo's dump: path, the 11 Stat fields, ACL, data.
struct Expected {
    path: String,
    stat: [i64; 11],
    acl: Vec<Acl>,
    data: Vec<u8>,
}

fn expected_nodes() -> Vec<Expected> {
    let text = String::from_utf8(fixture("expected.txt")).unwrap();
    text.lines()
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            let stat: Vec<i64> = fields[1].split(' ').map(|n| n.parse().unwrap()).collect();
            let acl = fields[2]
                .split(',')
                .map(|entry| {
                    let (perms, rest) = entry.split_once(':').unwrap();
                    let (scheme, id) = rest.split_once(':').unwrap();
                    Acl::new(perms.parse().unwrap(), scheme, id)
                })
                .collect();
            let data = (0..fields[3].len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&fields[3][i..i + 2], 16).unwrap())
                .collect();
            Expected {
                path: fields[0].to_string(),
                stat: stat.try_into().unwrap(),
                acl,
                data,
            }
        })
        .collect()
}

fn client_stat(tree: &DataTree, path: &str) -> [i64; 11] {
    let s = tree.node(path).unwrap().stat();
    [
        s.czxid,
        s.mzxid,
        s.ctime,
        s.mtime,
        s.version.into(),
        s.cversion.into(),
        s.aversion.into(),
        s.ephemeral_owner,
        s.data_length.into(),
        s.num_children.into(),
        s.pzxid,
    ]
}

/// Every node, with its Stat, ACL and data as a ZooKeeper client saw them; no other node.
fn assert_tree_is_expected(tree: &DataTree) {
    let expected = expected_nodes();
    let mut paths = Vec::new();
    tree.walk(|path, _| paths.push(path.to_string()));
    let mut expected_paths: Vec<String> = expected.iter().map(|e| e.path.clone()).collect();
    paths.sort();
    expected_paths.sort();
    assert_eq!(paths, expected_paths);
    for node in &expected {
        let found = tree.node(&node.path).unwrap();
        assert_eq!(client_stat(tree, &node.path), node.stat, "{}", node.path);
        assert_eq!(&found.acl()[..], &node.acl[..], "{}", node.path);
        let data = found.data().map(|d| d.to_vec()).unwrap_or_default();
        assert_eq!(data, node.data, "{}", node.path);
    }
    tree.invariants().unwrap();
}

#[test]
fn adler32_matches_the_reference_values() {
    assert_eq!(adler32(b""), 1);
    assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
    let long = vec![0xFFu8; 100_000];
    // Computed byte by byte with the modulo at every step.
    let (mut a, mut b) = (1u64, 0u64);
    for &byte in &long {
        a = (a + u64::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    assert_eq!(u64::from(adler32(&long)), (b << 16) | a);
}

#[test]
fn the_snapshot_parses_with_sessions_acls_kinds_and_digest() {
    let snapshot = parse_snapshot(&fixture(SNAPSHOT), 0x14).unwrap();
    assert_eq!(snapshot.tree.last_zxid(), 0x14);
    assert_eq!(snapshot.nodes, 15);
    // Phase one's holder session (it expired later, in the log).
    assert_eq!(snapshot.sessions, vec![(72_057_706_269_376_513, 40_000)]);
    let digest = snapshot.digest.unwrap();
    assert_eq!((digest.zxid, digest.version), (0x14, 2));
    assert_eq!(digest.digest, digest::tree_digest(&snapshot.tree));
    assert_eq!(snapshot.last_processed_zxid, None);
    let tree = &snapshot.tree;
    let kind = |path: &str| tree.node(path).unwrap().stored_stat().kind;
    assert_eq!(kind("/app/box"), NodeKind::Container);
    assert_eq!(kind("/app/ttl"), NodeKind::Ttl);
    assert_eq!(tree.node("/app/ttl").unwrap().ttl_ms(), Some(3_600_000));
    assert_eq!(kind("/app/eph"), NodeKind::Ephemeral);
    assert_eq!(
        tree.node("/app/eph").unwrap().ephemeral_session(),
        Some(72_057_706_269_376_513)
    );
    assert!(tree.node("/app/null").unwrap().data().is_none());
    assert_eq!(tree.node("/app/secret").unwrap().acl().len(), 2);
    tree.invariants().unwrap();
}

#[test]
fn the_log_decodes_every_txn_type_with_its_digest() {
    let log = parse_txn_log(&fixture(LOG)).unwrap();
    assert_eq!(log.end, LogEnd::Padding);
    assert_eq!(log.entries.first().unwrap().header.zxid, 0x15);
    assert_eq!(log.entries.last().unwrap().header.zxid, 0x7c);
    let zxids: Vec<i64> = log.entries.iter().map(|e| e.header.zxid).collect();
    assert!(zxids.windows(2).all(|w| w[1] == w[0] + 1));
    let mut ops: Vec<i32> = log.entries.iter().map(|e| e.header.op).collect();
    ops.sort_unstable();
    ops.dedup();
    assert_eq!(ops, vec![-11, -10, -1, 1, 2, 5, 7, 14, 15, 19, 20, 21]);
    // ZooKeeper 3.8 appends a TxnDigest to every txn but a failed request's error txn.
    for entry in &log.entries {
        assert_eq!(entry.digest.is_some(), entry.header.op != -1, "{entry:?}");
    }
    let multi = log.entries.iter().find(|e| e.header.zxid == 110).unwrap();
    let Txn::Multi(subs) = &multi.txn else {
        panic!("{multi:?}")
    };
    assert_eq!(subs.len(), 7);
    let failed = log.entries.iter().find(|e| e.header.zxid == 111).unwrap();
    assert!(matches!(&failed.txn, Txn::Multi(subs) if matches!(subs[1], Txn::Error { .. })));
}

#[test]
fn importing_gives_the_tree_zookeeper_served() {
    let imported = import_data_dir(&fixture_dir(), None).unwrap();
    assert_tree_is_expected(&imported.tree);
    assert_eq!(imported.last_zxid, 0x7c);
    assert_eq!(imported.tree.last_zxid(), 0x7c);
    assert_eq!(imported.sessions, vec![HOLDER]);
    let summary = &imported.summary;
    assert_eq!(summary.snapshot_zxid, 0x14);
    assert_eq!(summary.txns_replayed, 0x7c - 0x14);
    assert_eq!(summary.txns_with_error_result, 3);
    assert_eq!(summary.digest_matches, Some(true));
    assert_eq!(summary.nodes, 21);
    assert_eq!(summary.dead_session_ephemerals, 0);
    assert!(summary.skipped_snapshots.is_empty());
}

#[test]
fn the_digest_before_trailing_error_txns_is_compared() {
    // The fixture log up to and including the BadVersion error txn (zxid 109 = 0x6d): the
    // last digest ZooKeeper logged is for 107, and two error txns follow it.
    let scratch = Scratch::with_fixtures("digest");
    let version = scratch.0.join(VERSION_DIR);
    let bytes = fixture(LOG);
    let mut end = 16;
    loop {
        let len = i32::from_be_bytes(bytes[end + 8..end + 12].try_into().unwrap()) as usize;
        let payload = &bytes[end + 12..end + 12 + len];
        end += 12 + len + 1;
        if decode_entry(payload).unwrap().header.zxid == 109 {
            break;
        }
    }
    std::fs::write(version.join(LOG), &bytes[..end]).unwrap();
    let imported = import_data_dir(&scratch.0, None).unwrap();
    assert_eq!(imported.last_zxid, 109);
    assert_eq!(imported.summary.digest_matches, Some(true));
}

#[test]
fn a_damaged_newer_snapshot_falls_back_to_an_older_one() {
    let scratch = Scratch::with_fixtures("fallback");
    let version = scratch.0.join(VERSION_DIR);
    let mut damaged = fixture(SNAPSHOT);
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x10;
    std::fs::write(version.join("snapshot.40"), &damaged).unwrap();
    // Not ZooKeeper's: ignored whatever its name.
    std::fs::write(version.join("snapshot.50"), b"KSNP and more").unwrap();
    let imported = import_data_dir(&scratch.0, None).unwrap();
    assert_eq!(imported.summary.snapshot_zxid, 0x14);
    assert_eq!(imported.summary.skipped_snapshots.len(), 1);
    assert_tree_is_expected(&imported.tree);
}

/// Written by Apache ZooKeeper 3.8 restarted on the fixture files with
/// `-Dzookeeper.snapshot.compression.method=gz`: the same tree, gzip-compressed.
/// Kept in `gz/` so that the other tests import the plain snapshot and the log.
const GZ_SNAPSHOT: &str = "snapshot.7c.gz";

fn gz_fixture() -> Vec<u8> {
    std::fs::read(fixture_dir().join("gz").join(GZ_SNAPSHOT)).unwrap()
}

#[test]
fn a_gzip_snapshot_from_zookeeper_imports() {
    let scratch = Scratch::new("gz");
    let version = scratch.0.join(VERSION_DIR);
    std::fs::create_dir_all(&version).unwrap();
    std::fs::write(version.join(GZ_SNAPSHOT), gz_fixture()).unwrap();
    let imported = import_data_dir(&scratch.0, None).unwrap();
    assert_eq!(imported.summary.snapshot_zxid, 0x7c);
    assert_eq!(imported.summary.txns_replayed, 0);
    assert_tree_is_expected(&imported.tree);
    assert_eq!(imported.sessions, vec![HOLDER]);
}

#[test]
fn damaged_gzip_and_snappy_snapshots_are_skipped_with_a_reason() {
    let scratch = Scratch::with_fixtures("gzbad");
    let version = scratch.0.join(VERSION_DIR);
    let gz = gz_fixture();
    let inflated = files::gunzip(&gz).unwrap();
    for at in 0..gz.len() {
        let mut damaged = gz.clone();
        damaged[at] ^= 0x01;
        // Either detected, or a bit that does not change the content (the header's FTEXT,
        // MTIME, XFL, OS; an unused code length in a Huffman table header).
        if let Ok(bytes) = files::gunzip(&damaged) {
            assert_eq!(bytes, inflated, "flip at {at}");
        }
        assert!(files::gunzip(&damaged[..at]).is_err(), "cut at {at}");
    }
    let mut damaged = gz.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 0x01;
    std::fs::write(version.join("snapshot.90.gz"), &damaged).unwrap();
    std::fs::write(version.join("snapshot.a0.snappy"), b"\x82SNAPPY\x00").unwrap();
    let imported = import_data_dir(&scratch.0, None).unwrap();
    assert_eq!(imported.summary.snapshot_zxid, 0x14);
    let skipped = &imported.summary.skipped_snapshots;
    assert_eq!(skipped.len(), 2);
    assert!(skipped[0].contains("snappy"), "{skipped:?}");
    assert!(skipped[1].contains("gzip"), "{skipped:?}");
    assert_tree_is_expected(&imported.tree);
}

#[test]
fn the_cli_checks_its_arguments() {
    let scratch = Scratch::new("cli");
    assert_eq!(run_cli(&[]), 2);
    let missing = scratch.0.join("missing").display().to_string();
    assert_eq!(run_cli(&[missing]), 2);
    let dir = scratch.0.display().to_string();
    assert_eq!(run_cli(&[dir.clone(), dir.clone(), dir.clone()]), 2);
    assert_eq!(run_cli(&[dir.clone(), "tickTime=soon".to_string()]), 2);
    // A directory without ZooKeeper files: an import error, nothing written.
    let keel = scratch.0.join("keel");
    let data_dir = format!("dataDir={}", keel.display());
    assert_eq!(run_cli(&[dir, data_dir]), 1);
    assert!(!keel.join(VERSION_DIR).exists());
}

#[test]
fn no_snapshot_is_an_error() {
    let scratch = Scratch::new("nosnap");
    let version = scratch.0.join(VERSION_DIR);
    std::fs::create_dir_all(&version).unwrap();
    std::fs::copy(fixture_dir().join(LOG), version.join(LOG)).unwrap();
    let error = import_data_dir(&scratch.0, None).err().unwrap();
    assert!(matches!(error, ImportError::NoSnapshot { .. }), "{error}");
}

#[test]
fn missing_txns_between_the_snapshot_and_the_log_are_an_error() {
    let scratch = Scratch::with_fixtures("gap");
    let version = scratch.0.join(VERSION_DIR);
    // The log, minus its first entry, under a later name: txn 0x15 is missing.
    let bytes = fixture(LOG);
    let first_len = i32::from_be_bytes(bytes[24..28].try_into().unwrap()) as usize;
    let mut cut = bytes[..16].to_vec();
    cut.extend_from_slice(&bytes[16 + 12 + first_len + 1..]);
    std::fs::remove_file(version.join(LOG)).unwrap();
    std::fs::write(version.join("log.16"), &cut).unwrap();
    assert_eq!(parse_txn_log(&cut).unwrap().entries[0].header.zxid, 0x16);
    let error = import_data_dir(&scratch.0, None).err().unwrap();
    assert!(
        matches!(
            error,
            ImportError::Gap {
                after: 0x14,
                next: 0x16,
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn a_torn_last_entry_ends_the_log() {
    let bytes = fixture(LOG);
    let full = parse_txn_log(&bytes).unwrap();
    let used = 16 + full.entries.len(); // at least the header and one byte per entry
    for cut in (16..bytes.len().min(used + 8_000)).step_by(7) {
        let log = parse_txn_log(&bytes[..cut]).unwrap();
        assert!(log.entries.len() <= full.entries.len());
        assert_eq!(log.entries[..], full.entries[..log.entries.len()]);
        if log.end == LogEnd::Padding {
            assert_eq!(log.entries.len(), full.entries.len());
        }
    }
}

#[test]
fn every_flipped_bit_of_the_snapshot_is_detected() {
    let bytes = fixture(SNAPSHOT);
    for at in 0..bytes.len() {
        for bit in 0..8 {
            let mut damaged = bytes.clone();
            damaged[at] ^= 1 << bit;
            assert!(
                parse_snapshot(&damaged, 0x14).is_err(),
                "flip of bit {bit} at byte {at} went unnoticed"
            );
        }
    }
    // A pre-3.6 snapshot ends after the first seal: a cut there is the one that parses.
    let first_seal_end = bytes.len() - (8 + 4 + 8 + 8 + 4 + 1);
    for cut in 0..bytes.len() {
        let parsed = parse_snapshot(&bytes[..cut], 0x14);
        assert_eq!(parsed.is_ok(), cut == first_seal_end, "cut at {cut}");
    }
}

#[test]
fn a_flipped_bit_in_a_log_entry_is_a_checksum_error_or_an_end() {
    let bytes = fixture(LOG);
    let full = parse_txn_log(&bytes).unwrap();
    // From 16: the header's dbid is not checked (ZooKeeper ignores it too).
    for at in (16..3_000).step_by(3) {
        let mut damaged = bytes.clone();
        damaged[at] ^= 0x04;
        if let Ok(log) = parse_txn_log(&damaged) {
            // A flip in a length or an end-of-record byte ends the log early.
            assert!(log.entries.len() < full.entries.len(), "flip at {at}");
            assert_eq!(log.entries[..], full.entries[..log.entries.len()]);
        }
    }
}

#[test]
fn an_entry_without_a_digest_decodes_too() {
    let log = parse_txn_log(&fixture(LOG)).unwrap();
    let entry = &log.entries[5];
    let mut payload = Vec::new();
    crate::log::encode_txn(&entry.header, &entry.txn, &mut payload);
    let plain = decode_entry(&payload).unwrap();
    assert_eq!(
        (plain.header, &plain.txn, plain.digest),
        (entry.header, &entry.txn, None)
    );
}

#[test]
fn a_close_session_without_its_record_before_a_digest_decodes() {
    let mut payload = Vec::new();
    for field in [
        &7i64.to_be_bytes()[..],
        &3i32.to_be_bytes(),
        &9i64.to_be_bytes(),
        &1i64.to_be_bytes(),
    ] {
        payload.extend_from_slice(field);
    }
    payload.extend_from_slice(&(-11i32).to_be_bytes());
    payload.extend_from_slice(&2i32.to_be_bytes());
    payload.extend_from_slice(&0x0000_0004_0000_0000i64.to_be_bytes());
    let entry = decode_entry(&payload).unwrap();
    assert_eq!(
        entry.txn,
        Txn::CloseSession {
            paths_to_delete: Vec::new()
        }
    );
    assert_eq!(
        entry.digest.map(|d| (d.zxid, d.digest)),
        Some((9, 0x0000_0004_0000_0000))
    );
}

#[test]
fn auto_import_moves_logs_out_of_a_separate_data_log_dir() {
    let scratch = Scratch::new("logdir");
    let (data, logs) = (scratch.0.join("data"), scratch.0.join("logs"));
    for (dir, file) in [(&data, SNAPSHOT), (&logs, LOG)] {
        std::fs::create_dir_all(dir.join(VERSION_DIR)).unwrap();
        std::fs::copy(fixture_dir().join(file), dir.join(VERSION_DIR).join(file)).unwrap();
    }
    let mut config = Config::embedded_default();
    config.data_dir = data.clone();
    config.data_log_dir = logs.clone();
    let summary = auto_import(&config).unwrap().unwrap();
    assert_eq!(summary.last_zxid, 0x7c);
    assert_eq!(summary.moved_to.len(), 2);
    assert!(logs.join(VERSION_DIR).join(IMPORTED_DIR).join(LOG).exists());
    assert!(data
        .join(VERSION_DIR)
        .join(IMPORTED_DIR)
        .join(SNAPSHOT)
        .exists());
    let loaded = crate::snapshot::load_snapshot(&data.join(VERSION_DIR).join("snapshot.7c"));
    assert_tree_is_expected(&loaded.unwrap().tree);
    // keel import takes the two directories too.
    let keel = scratch.0.join("keel");
    let summary = import_into(
        &data.join(VERSION_DIR).join(IMPORTED_DIR),
        Some(&logs.join(VERSION_DIR).join(IMPORTED_DIR)),
        &keel,
        &keel,
    )
    .unwrap();
    assert_eq!(summary.txns_replayed, 0x7c - 0x14);
}

#[test]
fn auto_import_finds_the_logs_next_to_the_snapshots_when_keel_logs_elsewhere() {
    let scratch = Scratch::with_fixtures("logsindata");
    let mut config = Config::embedded_default();
    config.data_dir = scratch.0.clone();
    config.data_log_dir = scratch.0.join("keel-logs");
    let summary = auto_import(&config).unwrap().unwrap();
    assert_eq!(summary.last_zxid, 0x7c);
    assert_eq!(summary.txns_replayed, 0x7c - 0x14);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn damaged_files_never_panic(
        cut in 0usize..20_000,
        flips in proptest::collection::vec((0usize..20_000, 0u8..8), 0..6),
        which in 0usize..3,
    ) {
        let mut bytes = match which {
            0 => fixture(SNAPSHOT),
            1 => fixture(LOG),
            _ => gz_fixture(),
        };
        for (at, bit) in flips {
            let len = bytes.len();
            bytes[at % len] ^= 1 << bit;
        }
        bytes.truncate(cut);
        let _ = parse_snapshot(&bytes, 0x14);
        let _ = parse_txn_log(&bytes);
        let _ = decode_entry(&bytes);
        let _ = files::gunzip(&bytes).map(|inflated| parse_snapshot(&inflated, 0x7c));
    }
}

#[test]
fn import_into_writes_a_keel_snapshot_and_refuses_a_second_time() {
    let scratch = Scratch::new("into");
    let keel = scratch.0.join("keel");
    let summary = import_into(&fixture_dir(), None, &keel, &keel).unwrap();
    let written = summary.keel_snapshot.clone().unwrap();
    assert_eq!(written, keel.join(VERSION_DIR).join("snapshot.7c"));
    let loaded = crate::snapshot::load_snapshot(&written).unwrap();
    assert_tree_is_expected(&loaded.tree);
    assert_eq!(loaded.sessions, vec![HOLDER]);
    assert_eq!(loaded.tree.last_zxid(), 0x7c);
    let again = import_into(&fixture_dir(), None, &keel, &keel)
        .err()
        .unwrap();
    assert!(matches!(again, ImportError::KeelStateExists(_)), "{again}");
}

#[test]
fn auto_import_moves_zookeeper_files_aside_and_runs_once() {
    let scratch = Scratch::with_fixtures("auto");
    let mut config = Config::embedded_default();
    config.data_dir = scratch.0.clone();
    config.data_log_dir = scratch.0.clone();
    let summary = auto_import(&config).unwrap().unwrap();
    let version = scratch.0.join(VERSION_DIR);
    let imported = version.join(IMPORTED_DIR);
    assert_eq!(summary.moved_to, vec![imported.clone()]);
    for file in [SNAPSHOT, LOG] {
        assert!(!version.join(file).exists(), "{file} left in place");
        assert_eq!(std::fs::read(imported.join(file)).unwrap(), fixture(file));
    }
    let loaded = crate::snapshot::load_snapshot(&version.join("snapshot.7c")).unwrap();
    assert_tree_is_expected(&loaded.tree);
    assert!(auto_import(&config).unwrap().is_none());
}

#[test]
fn auto_import_resumes_from_moved_files_and_ignores_plain_dirs() {
    let scratch = Scratch::new("resume");
    let mut config = Config::embedded_default();
    config.data_dir = scratch.0.clone();
    config.data_log_dir = scratch.0.clone();
    assert!(auto_import(&config).unwrap().is_none());
    // A start that moved the files and stopped before writing Keel's snapshot.
    let imported = scratch.0.join(VERSION_DIR).join(IMPORTED_DIR);
    std::fs::create_dir_all(&imported).unwrap();
    for file in [SNAPSHOT, LOG] {
        std::fs::copy(fixture_dir().join(file), imported.join(file)).unwrap();
    }
    let summary = auto_import(&config).unwrap().unwrap();
    assert_eq!(summary.last_zxid, 0x7c);
    assert!(summary.moved_to.is_empty());
    assert!(auto_import(&config).unwrap().is_none());
}
