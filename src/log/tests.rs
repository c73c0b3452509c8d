//! Tests of the write-ahead log: record round trips, write/recover, torn and corrupt tails,
//! corruption in the middle, segment rolls and injected IO failures.
//!
//! `MemDir` is an in-memory `LogDir` whose files can tear a write (each 512-byte sector lands
//! or not, from a seed) or fail a write or fdatasync; seeded loops replay from their seed.

use super::record::{encode_record, parse_frame, FrameDefect, RECORD_HEADER_BYTES};
use super::segment::{parse_segment_name, segment_name, SEGMENT_HEADER_BYTES};
use super::*;
use crate::proto::{op, Acl, ErrorCode};
use crate::tree::{CreateKind, Txn, TxnHeader};
use proptest::prelude::*;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

// ---------------------------------------------------------------------------------------------
// Fixtures.

/// xorshift64*: a tiny seeded generator, so every loop below replays from its seed.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}

#[derive(Debug, Default)]
struct MemState {
    segments: BTreeMap<i64, Vec<u8>>,
    partials: BTreeMap<i64, Vec<u8>>,
    set_aside: Vec<i64>,
    write_calls: u32,
    sync_calls: u32,
    /// The write call (0-based) that tears: each 512-byte sector lands if the seeded
    /// generator says so, and the call fails.
    tear_write: Option<(u32, u64)>,
    /// The fdatasync call (0-based) that fails.
    fail_sync: Option<u32>,
}

impl MemState {
    fn file_mut(&mut self, first_zxid: i64) -> &mut Vec<u8> {
        if self.segments.contains_key(&first_zxid) {
            self.segments.entry(first_zxid).or_default()
        } else {
            self.partials.entry(first_zxid).or_default()
        }
    }
}

#[derive(Debug, Clone, Default)]
struct MemDir(Rc<RefCell<MemState>>);

struct MemFile {
    state: Rc<RefCell<MemState>>,
    first_zxid: i64,
}

const SECTOR_BYTES: usize = 512;

impl LogFile for MemFile {
    fn write_at(&mut self, offset_bytes: u64, bytes: &[u8]) -> std::io::Result<()> {
        assert_eq!(offset_bytes % BLOCK_BYTES as u64, 0);
        assert_eq!(bytes.len() % BLOCK_BYTES, 0);
        let mut state = self.state.borrow_mut();
        let call = state.write_calls;
        state.write_calls += 1;
        let tear = match state.tear_write {
            Some((at, seed)) if at == call => Some(Rng::new(seed)),
            _ => None,
        };
        let file = state.file_mut(self.first_zxid);
        let offset = offset_bytes as usize;
        if file.len() < offset + bytes.len() {
            file.resize(offset + bytes.len(), 0);
        }
        let mut tear = tear;
        for (index, sector) in bytes.chunks(SECTOR_BYTES).enumerate() {
            let lands = tear.as_mut().is_none_or(|rng| rng.below(2) == 0);
            if lands {
                let at = offset + index * SECTOR_BYTES;
                file[at..at + sector.len()].copy_from_slice(sector);
            }
        }
        match tear {
            Some(_) => Err(std::io::Error::other("injected torn write")),
            None => Ok(()),
        }
    }

    fn sync(&mut self) -> std::io::Result<()> {
        let mut state = self.state.borrow_mut();
        let call = state.sync_calls;
        state.sync_calls += 1;
        match state.fail_sync {
            Some(at) if at == call => Err(std::io::Error::other("injected EIO on fdatasync")),
            _ => Ok(()),
        }
    }

    fn len_bytes(&self) -> std::io::Result<u64> {
        Ok(self.state.borrow_mut().file_mut(self.first_zxid).len() as u64)
    }
}

impl LogDir for MemDir {
    type File = MemFile;

    fn create_partial(&mut self, first_zxid: i64, _segment_bytes: u64) -> std::io::Result<MemFile> {
        self.0.borrow_mut().partials.insert(first_zxid, Vec::new());
        Ok(MemFile {
            state: self.0.clone(),
            first_zxid,
        })
    }

    fn publish(&mut self, first_zxid: i64) -> std::io::Result<()> {
        let mut state = self.0.borrow_mut();
        let file = state.partials.remove(&first_zxid).expect("partial exists");
        state.segments.insert(first_zxid, file);
        Ok(())
    }

    fn open_segment(&mut self, first_zxid: i64) -> std::io::Result<MemFile> {
        assert!(self.0.borrow().segments.contains_key(&first_zxid));
        Ok(MemFile {
            state: self.0.clone(),
            first_zxid,
        })
    }

    fn list_segments(&mut self) -> std::io::Result<Vec<i64>> {
        Ok(self.0.borrow().segments.keys().rev().copied().collect())
    }

    fn remove_partials(&mut self) -> std::io::Result<usize> {
        let mut state = self.0.borrow_mut();
        let count = state.partials.len();
        state.partials.clear();
        Ok(count)
    }

    fn read_segment(&mut self, first_zxid: i64, bytes_max: u64) -> std::io::Result<Vec<u8>> {
        let state = self.0.borrow();
        let image = state.segments.get(&first_zxid).expect("segment exists");
        assert!(image.len() as u64 <= bytes_max);
        Ok(image.clone())
    }

    fn retire_segment(&mut self, first_zxid: i64, keep: bool) -> std::io::Result<()> {
        let mut state = self.0.borrow_mut();
        state.segments.remove(&first_zxid).expect("segment exists");
        if keep {
            state.set_aside.push(first_zxid);
        }
        Ok(())
    }
}

/// A directory under the system temp dir, removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let unique = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("keel-log-{tag}-{}-{unique}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir(path)
    }

    fn segment(&self, first_zxid: i64) -> std::path::PathBuf {
        self.0.join("version-2").join(segment_name(first_zxid))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const SESSION: i64 = 0x1_0000_0042;

fn header(zxid: i64, op_code: i32) -> TxnHeader {
    TxnHeader {
        session_id: SESSION,
        cxid: (zxid % 1000) as i32,
        zxid,
        time_ms: 1_700_000_000_000 + zxid,
        op: op_code,
    }
}

/// A setData of `data_bytes` bytes (varying sizes make records straddle block boundaries).
fn set_data(zxid: i64, data_bytes: usize) -> (TxnHeader, Txn) {
    let data: Vec<u8> = (0..data_bytes)
        .map(|index| (index as u8) ^ (zxid as u8))
        .collect();
    let txn = Txn::SetData {
        path: format!("/node-{}", zxid % 97),
        data: Some(Arc::from(data)),
        version: (zxid % 50) as i32,
    };
    (header(zxid, op::SET_DATA), txn)
}

/// `count` batches of 1..=`per_batch_max` txns with zxids from `first_zxid`.
fn batches(
    rng: &mut Rng,
    first_zxid: i64,
    count: usize,
    per_batch_max: u64,
) -> Vec<Vec<(TxnHeader, Txn)>> {
    let mut zxid = first_zxid;
    (0..count)
        .map(|_| {
            let size = 1 + rng.below(per_batch_max) as usize;
            (0..size)
                .map(|_| {
                    let txn = set_data(zxid, rng.below(700) as usize);
                    zxid += 1;
                    txn
                })
                .collect()
        })
        .collect()
}

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024,
        batch_bytes_max: 16 * 1024,
        force_sync: true,
    }
}

/// Writes every batch with its own flush; returns the writer.
fn write_all<D: LogDir>(
    dir: D,
    config: LogConfig,
    resume: &Resume,
    batches: &[Vec<(TxnHeader, Txn)>],
) -> LogWriter<D> {
    let mut writer = LogWriter::new(dir, config, resume).expect("writer");
    for batch in batches {
        writer.append_batch(batch).expect("append");
        let durable_zxid = writer.flush_and_sync().expect("flush");
        assert_eq!(durable_zxid, batch.last().expect("non-empty").0.zxid);
    }
    writer
}

fn recover_mem(dir: &MemDir, options: RecoverOptions) -> Result<Recovery, LogError> {
    recover(&mut dir.clone(), &options)
}

fn flatten(batches: &[Vec<(TxnHeader, Txn)>]) -> Vec<(TxnHeader, Txn)> {
    batches.iter().flatten().cloned().collect()
}

/// Each record of a segment image: (start, end, zxid), following the writer's layout.
fn record_spans(image: &[u8]) -> Vec<(usize, usize, i64)> {
    let mut spans = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES;
    while offset < image.len() {
        if image[offset] == 0 {
            if offset.is_multiple_of(BLOCK_BYTES) {
                break;
            }
            offset = offset.next_multiple_of(BLOCK_BYTES);
            continue;
        }
        let frame = parse_frame(&image[offset..]).expect("pristine image parses");
        spans.push((offset, offset + frame.total_bytes(), frame.zxid));
        offset += frame.total_bytes();
    }
    spans
}

// ---------------------------------------------------------------------------------------------
// Records.

fn error_code() -> impl Strategy<Value = ErrorCode> {
    prop::sample::select(vec![
        ErrorCode::Ok,
        ErrorCode::SystemError,
        ErrorCode::RuntimeInconsistency,
        ErrorCode::MarshallingError,
        ErrorCode::NoNode,
        ErrorCode::NodeExists,
        ErrorCode::BadVersion,
        ErrorCode::NotEmpty,
        ErrorCode::SessionExpired,
        ErrorCode::QuotaExceeded,
    ])
}

fn acls() -> impl Strategy<Value = Vec<Acl>> {
    prop::collection::vec(
        (any::<i32>(), "[a-z]{0,6}", ".{0,8}")
            .prop_map(|(perms, scheme, id)| Acl::new(perms, &scheme, &id)),
        0..3,
    )
}

fn data() -> impl Strategy<Value = Option<Arc<[u8]>>> {
    prop::option::of(prop::collection::vec(any::<u8>(), 0..40)).prop_map(|data| data.map(Arc::from))
}

/// A txn that is not a multi, with an opcode ZooKeeper logs it under at top level.
fn leaf_txn() -> impl Strategy<Value = (i32, Txn)> {
    let kind = prop_oneof![
        Just((op::CREATE, CreateKind::Persistent)),
        Just((op::CREATE2, CreateKind::Persistent2)),
        Just((op::CREATE_CONTAINER, CreateKind::Container)),
        any::<i64>().prop_map(|ttl| (op::CREATE_TTL, CreateKind::Ttl(ttl))),
    ];
    let create = (".{0,16}", data(), acls(), any::<bool>(), any::<i32>(), kind).prop_map(
        |(path, data, acl, ephemeral, parent_cversion, (op_code, kind))| {
            let ephemeral_owner = if ephemeral && kind.is_create_txn() {
                SESSION
            } else {
                0
            };
            let txn = Txn::Create {
                path,
                data,
                acl,
                ephemeral_owner,
                parent_cversion,
                kind,
            };
            (op_code, txn)
        },
    );
    prop_oneof![
        4 => create,
        2 => (".{0,16}", prop::sample::select(vec![op::DELETE, op::DELETE_CONTAINER]))
            .prop_map(|(path, op_code)| (op_code, Txn::Delete { path })),
        2 => (".{0,16}", data(), any::<i32>(), prop::sample::select(vec![op::SET_DATA, op::RECONFIG]))
            .prop_map(|(path, data, version, op_code)| (op_code, Txn::SetData { path, data, version })),
        1 => (".{0,16}", acls(), any::<i32>())
            .prop_map(|(path, acl, version)| (op::SET_ACL, Txn::SetAcl { path, acl, version })),
        1 => (".{0,16}", any::<i32>())
            .prop_map(|(path, version)| (op::CHECK, Txn::Check { path, version })),
        1 => any::<i32>().prop_map(|timeout_ms| (op::CREATE_SESSION, Txn::CreateSession { timeout_ms })),
        1 => prop::collection::vec(".{0,12}", 0..4)
            .prop_map(|paths_to_delete| (op::CLOSE_SESSION, Txn::CloseSession { paths_to_delete })),
        1 => (error_code(), prop::sample::select(vec![op::CREATE2, op::DELETE, op::MULTI, op::SET_DATA]))
            .prop_map(|(err, op_code)| (op_code, Txn::Error { err })),
    ]
}

fn any_txn() -> impl Strategy<Value = (TxnHeader, Txn)> {
    let txn = prop_oneof![
        4 => leaf_txn(),
        1 => prop::collection::vec(leaf_txn().prop_map(|(_, txn)| txn), 0..5)
            .prop_map(|txns| (op::MULTI, Txn::Multi(txns))),
    ];
    (any::<i32>(), 1..i64::MAX, any::<i64>(), txn).prop_map(
        |(cxid, zxid, time_ms, (op_code, txn))| {
            let header = TxnHeader {
                session_id: SESSION,
                cxid,
                zxid,
                time_ms,
                op: op_code,
            };
            (header, txn)
        },
    )
}

/// What decoding gives back: a failed request is logged, and so read, as type error (-1).
fn as_logged(header: &TxnHeader, txn: &Txn) -> TxnHeader {
    match txn {
        Txn::Error { .. } => TxnHeader {
            op: op::ERROR,
            ..*header
        },
        _ => *header,
    }
}

proptest! {
    #[test]
    fn every_txn_round_trips((header, txn) in any_txn(), first_in_batch in any::<bool>()) {
        // Any encodable txn decodes back to itself, bare and inside a verified frame.
        let mut payload = Vec::new();
        encode_txn(&header, &txn, &mut payload);
        prop_assert_eq!(decode_txn(&payload), Ok((as_logged(&header, &txn), txn.clone())));
        let mut framed = Vec::new();
        let bytes = encode_record(&header, &txn, first_in_batch, &mut framed).expect("fits");
        prop_assert_eq!(bytes, framed.len());
        prop_assert_eq!(bytes, RECORD_HEADER_BYTES + payload.len());
        let frame = parse_frame(&framed).expect("verifies");
        prop_assert_eq!(frame.first_in_batch, first_in_batch);
        prop_assert_eq!(frame.payload, &payload[..]);
        let decoded = record::decode_frame(&frame);
        prop_assert_eq!(decoded, Ok((as_logged(&header, &txn), txn)));
    }

    #[test]
    fn arbitrary_payloads_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        // Garbage decodes to an error or some txn, never a panic or an oversized allocation.
        let _ = decode_txn(&bytes);
        let _ = parse_frame(&bytes);
    }

    #[test]
    fn truncated_payloads_are_errors((header, txn) in any_txn(), cut in any::<prop::sample::Index>()) {
        // Every strict prefix of a payload fails to decode.
        let mut payload = Vec::new();
        encode_txn(&header, &txn, &mut payload);
        let cut = cut.index(payload.len());
        let decoded = decode_txn(&payload[..cut]);
        // Two short forms ZooKeeper also reads: CreateTxnV0 and a record-less closeSession.
        let v0_form = matches!(&txn, Txn::Create { kind, .. } if kind.is_create_txn())
            && cut == payload.len() - 4;
        let bare_close = matches!(&txn, Txn::CloseSession { .. }) && cut == 32;
        prop_assert!(
            decoded.is_err() || v0_form || bare_close,
            "prefix {} of {} decoded", cut, payload.len()
        );
    }
}

#[test]
fn create_txn_bytes_are_zookeepers() {
    // A create2 of an ephemeral "/a" is TxnHeader then CreateTxn, field for field as jute has it.
    let header = header(0x1_0000_0005, op::CREATE2);
    let txn = Txn::Create {
        path: "/a".to_string(),
        data: Some(Arc::from(&b"x"[..])),
        acl: vec![Acl::new(31, "world", "anyone")],
        ephemeral_owner: SESSION,
        parent_cversion: 7,
        kind: CreateKind::Persistent2,
    };
    let mut expected = Vec::new();
    expected.extend_from_slice(&SESSION.to_be_bytes());
    expected.extend_from_slice(&header.cxid.to_be_bytes());
    expected.extend_from_slice(&header.zxid.to_be_bytes());
    expected.extend_from_slice(&header.time_ms.to_be_bytes());
    expected.extend_from_slice(&15i32.to_be_bytes());
    expected.extend_from_slice(&[0, 0, 0, 2, b'/', b'a', 0, 0, 0, 1, b'x']);
    expected.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 31]);
    expected.extend_from_slice(&[0, 0, 0, 5, b'w', b'o', b'r', b'l', b'd']);
    expected.extend_from_slice(&[0, 0, 0, 6, b'a', b'n', b'y', b'o', b'n', b'e']);
    expected.extend_from_slice(&[1, 0, 0, 0, 7]);
    let mut payload = Vec::new();
    encode_txn(&header, &txn, &mut payload);
    assert_eq!(payload, expected);
}

#[test]
fn multi_and_error_bytes_are_zookeepers() {
    // A multi logs each sub-txn as Txn{type, buffer}, create2 as 15; a failed request as -1.
    let multi = Txn::Multi(vec![
        Txn::Create {
            path: "/m".to_string(),
            data: None,
            acl: Vec::new(),
            ephemeral_owner: 0,
            parent_cversion: 1,
            kind: CreateKind::Persistent2,
        },
        Txn::Error {
            err: ErrorCode::NoNode,
        },
    ]);
    let mut payload = Vec::new();
    encode_txn(&header(9, op::MULTI), &multi, &mut payload);
    let record = &payload[32..];
    let create: &[u8] = &[
        0, 0, 0, 2, b'/', b'm', 255, 255, 255, 255, 0, 0, 0, 0, 0, 0, 0, 0, 1,
    ];
    let mut expected = vec![0, 0, 0, 2, 0, 0, 0, 15, 0, 0, 0, create.len() as u8];
    expected.extend_from_slice(create);
    expected.extend_from_slice(&[255, 255, 255, 255, 0, 0, 0, 4]);
    expected.extend_from_slice(&(-101i32).to_be_bytes());
    assert_eq!(record, &expected[..]);
    assert_eq!(&payload[28..32], &14i32.to_be_bytes());
    let mut failed = Vec::new();
    encode_txn(
        &header(10, op::CREATE),
        &Txn::Error {
            err: ErrorCode::NodeExists,
        },
        &mut failed,
    );
    assert_eq!(&failed[28..], &[255, 255, 255, 255, 255, 255, 255, 146]);
}

#[test]
fn create_txn_v0_reads_parent_cversion_minus_one() {
    // An old CreateTxnV0 (no parentCVersion) decodes with parentCVersion -1, as ZooKeeper reads it.
    let header = header(3, op::CREATE);
    let txn = Txn::Create {
        path: "/v0".to_string(),
        data: None,
        acl: Vec::new(),
        ephemeral_owner: 0,
        parent_cversion: 12,
        kind: CreateKind::Persistent,
    };
    let mut payload = Vec::new();
    encode_txn(&header, &txn, &mut payload);
    payload.truncate(payload.len() - 4);
    let (_, decoded) = decode_txn(&payload).expect("v0 decodes");
    assert!(matches!(
        decoded,
        Txn::Create {
            parent_cversion: -1,
            ..
        }
    ));
}

#[test]
fn frame_defects_are_classified() {
    // Zeros, a foreign magic, an over-long length and a flipped payload bit are each told apart.
    let (header, txn) = set_data(5, 10);
    let mut framed = Vec::new();
    encode_record(&header, &txn, true, &mut framed).expect("fits");
    assert_eq!(parse_frame(&[0; 64]), Err(FrameDefect::Zero));
    assert_eq!(parse_frame(&framed[..10]), Err(FrameDefect::Short));
    let mut bad = framed.clone();
    bad[0] ^= 1;
    assert_eq!(parse_frame(&bad), Err(FrameDefect::BadMagic));
    let mut bad = framed.clone();
    bad[4] = 0x7f;
    assert_eq!(parse_frame(&bad), Err(FrameDefect::BadLength));
    let mut bad = framed.clone();
    *bad.last_mut().expect("payload") ^= 0x10;
    assert_eq!(parse_frame(&bad), Err(FrameDefect::BadCrc));
}

#[test]
fn segment_names_are_zookeepers() {
    // Segment names are log.<lowercase unpadded hex>, and parse back; other names do not.
    assert_eq!(segment_name(0x1_0000_00ab), "log.1000000ab");
    assert_eq!(parse_segment_name("log.1000000ab"), Some(0x1_0000_00ab));
    assert_eq!(parse_segment_name("log.1000000ab.partial"), None);
    assert_eq!(parse_segment_name("log."), None);
    assert_eq!(parse_segment_name("snapshot.5"), None);
}

// ---------------------------------------------------------------------------------------------
// Writing and recovering.

#[test]
fn batches_written_to_disk_are_recovered() {
    // N batches written through O_DIRECT files come back whole, and a resumed writer appends.
    let temp = TempDir::new("recover-all");
    let mut rng = Rng::new(1);
    let written = batches(&mut rng, 0x1_0000_0001, 40, 12);
    let options = RecoverOptions::default();
    let (writer, recovery) = open(&temp.0, LogConfig::default(), &options).expect("open");
    assert!(recovery.txns.is_empty());
    let mut writer = writer;
    for batch in &written {
        writer.append_batch(batch).expect("append");
        writer.flush_and_sync().expect("flush");
    }
    drop(writer);
    let (mut writer, recovery) = open(&temp.0, LogConfig::default(), &options).expect("reopen");
    assert_eq!(recovery.txns, flatten(&written));
    assert_eq!(recovery.report.truncation, None);
    let more = batches(&mut rng, writer.durable_zxid() + 1, 5, 3);
    for batch in &more {
        writer.append_batch(batch).expect("append");
    }
    assert_eq!(
        writer.flush_and_sync().expect("flush"),
        more.last().expect("x").last().expect("x").0.zxid
    );
    drop(writer);
    let (_, recovery) = open(&temp.0, LogConfig::default(), &options).expect("reopen");
    assert_eq!(recovery.txns, [flatten(&written), flatten(&more)].concat());
    let image = std::fs::read(temp.segment(0x1_0000_0001)).expect("segment");
    assert_eq!(
        image.len() as u64,
        LogConfig::default().segment_bytes,
        "preallocated"
    );
}

#[test]
fn snapshot_zxid_filters_replay() {
    // Only txns after the snapshot's zxid are returned, though all are verified.
    let dir = MemDir::default();
    let written = batches(&mut Rng::new(2), 1, 10, 5);
    drop(write_all(
        dir.clone(),
        small_config(),
        &Resume::default(),
        &written,
    ));
    let all = flatten(&written);
    let snapshot_zxid = all[all.len() / 2].0.zxid;
    let options = RecoverOptions {
        snapshot_zxid,
        truncate_at_corruption: false,
    };
    let recovery = recover_mem(&dir, options).expect("recover");
    let after: Vec<_> = all
        .iter()
        .filter(|(h, _)| h.zxid > snapshot_zxid)
        .cloned()
        .collect();
    assert_eq!(recovery.txns, after);
    assert_eq!(recovery.report.records_valid, all.len() as u64);
    assert_eq!(recovery.resume.last_zxid, all.last().expect("x").0.zxid);
}

#[test]
fn segments_roll_when_full() {
    // Small segments fill and roll; each is named for its first zxid and recovery spans them.
    let temp = TempDir::new("roll");
    let config = small_config();
    let written = batches(&mut Rng::new(3), 100, 60, 10);
    let options = RecoverOptions::default();
    let (mut writer, _) = open(&temp.0, config, &options).expect("open");
    for batch in &written {
        writer.append_batch(batch).expect("append");
        writer.flush_and_sync().expect("flush");
    }
    drop(writer);
    let mut names: Vec<i64> = std::fs::read_dir(temp.0.join("version-2"))
        .expect("dir")
        .filter_map(|entry| parse_segment_name(entry.ok()?.file_name().to_str()?))
        .collect();
    names.sort_unstable();
    assert!(names.len() >= 3, "rolled into {} segments", names.len());
    assert_eq!(names[0], 100);
    let (mut writer, recovery) = open(&temp.0, config, &options).expect("reopen");
    assert_eq!(recovery.txns, flatten(&written));
    assert_eq!(recovery.report.segments_scanned, names.len());
    let first_zxids: Vec<i64> = written.iter().map(|batch| batch[0].0.zxid).collect();
    assert!(
        names.iter().all(|zxid| first_zxids.contains(zxid)),
        "named for a write's first zxid"
    );
    let more = batches(&mut Rng::new(4), writer.durable_zxid() + 1, 20, 10);
    for batch in &more {
        writer.append_batch(batch).expect("append");
        writer.flush_and_sync().expect("flush");
    }
    drop(writer);
    let (_, recovery) = open(&temp.0, config, &options).expect("reopen");
    assert_eq!(recovery.txns, [flatten(&written), flatten(&more)].concat());
}

#[test]
fn group_commit_writes_once_per_flush() {
    // Several append_batch calls between flushes cost one write and one fdatasync.
    let dir = MemDir::default();
    let mut writer =
        LogWriter::new(dir.clone(), small_config(), &Resume::default()).expect("writer");
    let written = batches(&mut Rng::new(5), 1, 6, 3);
    for batch in &written[..3] {
        writer.append_batch(batch).expect("append");
    }
    assert!(writer.pending_bytes() > 0);
    writer.flush_and_sync().expect("flush");
    let (writes, syncs) = (dir.0.borrow().write_calls, dir.0.borrow().sync_calls);
    for batch in &written[3..] {
        writer.append_batch(batch).expect("append");
    }
    writer.flush_and_sync().expect("flush");
    assert_eq!(dir.0.borrow().write_calls, writes + 1);
    assert_eq!(dir.0.borrow().sync_calls, syncs + 1);
    assert_eq!(
        writer.flush_and_sync().expect("empty flush"),
        written[5].last().expect("x").0.zxid
    );
    assert_eq!(
        dir.0.borrow().write_calls,
        writes + 1,
        "an empty flush does no IO"
    );
    assert_eq!(
        recover_mem(&dir, RecoverOptions::default())
            .expect("recover")
            .txns,
        flatten(&written)
    );
}

#[test]
fn oversized_batches_are_refused_whole() {
    // A batch over the buffer limit is refused without buffering any of it.
    let dir = MemDir::default();
    let mut writer = LogWriter::new(dir, small_config(), &Resume::default()).expect("writer");
    let big: Vec<_> = (1..=40).map(|zxid| set_data(zxid, 600)).collect();
    assert!(matches!(
        writer.append_batch(&big),
        Err(LogError::BatchTooLarge { .. })
    ));
    assert_eq!(writer.pending_bytes(), 0);
    assert_eq!(writer.appended_zxid(), 0);
    writer.append_batch(&big[..5]).expect("fits");
    assert_eq!(writer.flush_and_sync().expect("flush"), 5);
}

#[test]
fn force_sync_off_skips_fdatasync() {
    // forceSync=no writes each flush but never fdatasyncs it (segment creation still does).
    let dir = MemDir::default();
    let config = LogConfig {
        force_sync: false,
        ..small_config()
    };
    drop(write_all(
        dir.clone(),
        config,
        &Resume::default(),
        &batches(&mut Rng::new(6), 1, 5, 4),
    ));
    assert_eq!(
        dir.0.borrow().sync_calls,
        1,
        "only the segment creation synced"
    );
}

// ---------------------------------------------------------------------------------------------
// Damage.

/// Writes a log of a few segments to memory and returns it with what was written.
fn pristine_log(seed: u64) -> (MemDir, Vec<(TxnHeader, Txn)>) {
    let dir = MemDir::default();
    let mut rng = Rng::new(seed);
    let count = 3 + rng.below(30) as usize;
    let first_zxid = 1 + rng.below(1 << 40) as i64;
    let written = batches(&mut rng, first_zxid, count, 8);
    drop(write_all(
        dir.clone(),
        small_config(),
        &Resume::default(),
        &written,
    ));
    (dir, flatten(&written))
}

/// After damage to the newest segment at or after `first_modified`, recovery must return
/// exactly the records that end at or before it, repair the log, and let a writer resume.
fn check_tail_recovery(
    dir: &MemDir,
    all: &[(TxnHeader, Txn)],
    pristine: &[u8],
    first_modified: Option<usize>,
) {
    let last_first_zxid = *dir.0.borrow().segments.keys().last().expect("a segment");
    let spans = record_spans(pristine);
    let lost_zxids: Vec<i64> = spans
        .iter()
        .filter(|(_, end, _)| first_modified.is_some_and(|modified| *end > modified))
        .map(|(_, _, zxid)| *zxid)
        .collect();
    let expected: Vec<_> = all
        .iter()
        .filter(|(h, _)| !lost_zxids.contains(&h.zxid))
        .cloned()
        .collect();
    // Whole writes removed cleanly look as if never written: a truncation is reported exactly
    // when non-zero bytes remain past the last kept record.
    let kept_end = spans
        .iter()
        .rfind(|(_, _, zxid)| !lost_zxids.contains(zxid))
        .map_or(SEGMENT_HEADER_BYTES, |span| span.1);
    let damaged = newest_segment(dir);
    let garbage_left = damaged
        .get(kept_end..)
        .is_some_and(|rest| rest.iter().any(|b| *b != 0));
    let recovery = recover_mem(dir, RecoverOptions::default()).expect("a torn tail recovers");
    assert_eq!(recovery.txns, expected, "exactly the valid prefix");
    assert_eq!(recovery.report.truncation.is_some(), garbage_left);
    if let Some(truncation) = &recovery.report.truncation {
        assert!(!truncation.committed_data_dropped);
        assert!(truncation.offset_bytes as usize <= first_modified.expect("damage"));
    }
    let again = recover_mem(dir, RecoverOptions::default()).expect("repaired");
    assert_eq!(again.txns, expected);
    assert_eq!(again.report.truncation, None, "the repair is durable");
    let image_bytes = dir
        .0
        .borrow()
        .segments
        .get(&last_first_zxid)
        .map_or(0, Vec::len);
    assert!(image_bytes == 0 || image_bytes as u64 == small_config().segment_bytes);
    let next_zxid = expected.last().map_or(1, |(h, _)| h.zxid + 1);
    let more = batches(&mut Rng::new(next_zxid as u64), next_zxid, 3, 4);
    drop(write_all(dir.clone(), small_config(), &again.resume, &more));
    let after = recover_mem(dir, RecoverOptions::default()).expect("resumed log recovers");
    assert_eq!(after.txns, [expected, flatten(&more)].concat());
}

fn newest_segment(dir: &MemDir) -> Vec<u8> {
    dir.0
        .borrow()
        .segments
        .values()
        .last()
        .expect("a segment")
        .clone()
}

fn set_newest_segment(dir: &MemDir, image: Vec<u8>) {
    let mut state = dir.0.borrow_mut();
    let (_, slot) = state.segments.iter_mut().last().expect("a segment");
    *slot = image;
}

#[test]
fn cut_tails_keep_the_valid_prefix() {
    // The newest segment cut (shortened, or zeroed from) at random offsets loses only records
    // that reach past the cut, for 300 seeds.
    for seed in 0..300u64 {
        let (dir, all) = pristine_log(seed);
        let pristine = newest_segment(&dir);
        let mut rng = Rng::new(seed ^ 0xC0FFEE);
        let used = record_spans(&pristine)
            .last()
            .map_or(SEGMENT_HEADER_BYTES, |span| span.1);
        let cut = SEGMENT_HEADER_BYTES
            + rng.below((used + 2 * BLOCK_BYTES - SEGMENT_HEADER_BYTES) as u64) as usize;
        let cut = cut.min(pristine.len());
        let mut image = pristine.clone();
        if seed % 2 == 0 {
            image.truncate(cut);
        } else {
            image[cut..].fill(0);
        }
        let first_modified = pristine[cut..]
            .iter()
            .position(|byte| *byte != 0)
            .map(|at| cut + at);
        set_newest_segment(&dir, image);
        check_tail_recovery(&dir, &all, &pristine, first_modified);
    }
}

#[test]
fn flipped_bits_in_the_tail_keep_the_valid_prefix() {
    // 1–4 random bit flips at or after the start of the newest write drop only the records at
    // or after the first flipped byte, for 300 seeds.
    for seed in 0..300u64 {
        let (dir, all) = pristine_log(seed);
        let pristine = newest_segment(&dir);
        let mut rng = Rng::new(seed ^ 0xB17F11B);
        let spans = record_spans(&pristine);
        let newest_write = spans
            .iter()
            .rev()
            .find(|(start, _, _)| {
                parse_frame(&pristine[*start..]).is_ok_and(|frame| frame.first_in_batch)
            })
            .map_or(SEGMENT_HEADER_BYTES, |span| span.0);
        let reach = (spans.last().map_or(newest_write, |span| span.1) + BLOCK_BYTES)
            .min(pristine.len())
            - newest_write;
        let mut image = pristine.clone();
        for _ in 0..1 + rng.below(4) {
            let at = newest_write + rng.below(reach as u64) as usize;
            image[at] ^= 1 << rng.below(8);
        }
        let first_modified = (0..image.len()).find(|at| image[*at] != pristine[*at]);
        assert!(first_modified.is_some());
        set_newest_segment(&dir, image);
        check_tail_recovery(&dir, &all, &pristine, first_modified);
    }
}

#[test]
fn torn_writes_keep_the_valid_prefix() {
    // A write that lands only some of its 512-byte sectors, then fails, poisons the writer;
    // recovery keeps everything flushed before it plus the torn write's intact leading records.
    for seed in 0..200u64 {
        let mut rng = Rng::new(seed);
        let count = 2 + rng.below(12) as usize;
        let written = batches(&mut rng, 1, count, 10);
        let (durable, torn) = written.split_at(written.len() - 1);
        // The untorn run: the bytes the torn write meant to put there, and whether it rolled.
        let intended_dir = MemDir::default();
        drop(write_all(
            intended_dir.clone(),
            small_config(),
            &Resume::default(),
            durable,
        ));
        let segments_before = intended_dir.0.borrow().segments.len();
        drop(write_all(
            intended_dir.clone(),
            small_config(),
            &Resume::default(),
            &written,
        ));
        let rolled = intended_dir.0.borrow().segments.len() > segments_before;
        let intended = newest_segment(&intended_dir);
        let dir = MemDir::default();
        let mut writer = write_all(dir.clone(), small_config(), &Resume::default(), durable);
        // A roll first zero-fills the new segment in one write (64 KiB < one chunk).
        let data_write = dir.0.borrow().write_calls + u32::from(rolled);
        dir.0.borrow_mut().tear_write = Some((data_write, seed));
        writer.append_batch(&torn[0]).expect("append");
        let failed = writer.flush_and_sync();
        assert!(matches!(failed, Err(LogError::Write { .. })), "{failed:?}");
        assert!(matches!(writer.flush_and_sync(), Err(LogError::Poisoned)));
        drop(writer);
        let torn_image = newest_segment(&dir);
        let intact =
            |start: usize, end: usize| torn_image.get(start..end) == intended.get(start..end);
        let durable_zxid = durable.last().expect("x").last().expect("x").0.zxid;
        let landed_zxids: Vec<i64> = record_spans(&intended)
            .into_iter()
            .filter(|(_, _, zxid)| *zxid > durable_zxid)
            .take_while(|(start, end, _)| intact(*start, *end))
            .map(|(_, _, zxid)| zxid)
            .collect();
        let mut expected = flatten(durable);
        expected.extend(
            torn[0]
                .iter()
                .filter(|(h, _)| landed_zxids.contains(&h.zxid))
                .cloned(),
        );
        let recovery = recover_mem(&dir, RecoverOptions::default()).expect("torn tail recovers");
        assert_eq!(recovery.txns, expected, "seed {seed}");
    }
}

#[test]
fn corruption_before_a_later_write_is_corrupt_middle() {
    // A flipped bit in a synced write followed by a later write is refused, not truncated,
    // unless truncate_at_corruption is set; then the later data is dropped and reported.
    let dir = MemDir::default();
    let config = LogConfig {
        segment_bytes: 1 << 20,
        ..small_config()
    };
    let written = batches(&mut Rng::new(7), 1, 10, 5);
    drop(write_all(dir.clone(), config, &Resume::default(), &written));
    let mut image = newest_segment(&dir);
    let spans = record_spans(&image);
    let (start, end, zxid) = spans[spans.len() / 3];
    image[(start + end) / 2] ^= 0x04;
    set_newest_segment(&dir, image);
    let error = recover_mem(&dir, RecoverOptions::default()).expect_err("refused");
    assert!(
        matches!(&error, LogError::CorruptMiddle { segment, offset_bytes } if segment == "log.1" && *offset_bytes == start as u64),
        "{error:?}"
    );
    let options = RecoverOptions {
        truncate_at_corruption: true,
        ..RecoverOptions::default()
    };
    let recovery = recover_mem(&dir, options).expect("truncated on request");
    let expected: Vec<_> = flatten(&written)
        .into_iter()
        .filter(|(h, _)| h.zxid < zxid)
        .collect();
    assert_eq!(recovery.txns, expected);
    let truncation = recovery.report.truncation.expect("reported");
    assert!(truncation.committed_data_dropped);
    assert!(truncation.dropped_records > 0);
    assert_eq!(
        recover_mem(&dir, RecoverOptions::default())
            .expect("clean")
            .txns,
        expected
    );
}

#[test]
fn corruption_in_an_older_segment_is_corrupt_middle() {
    // Damage at the end of a full older segment is refused while a newer segment has records;
    // with truncate_at_corruption the newer segments are set aside as .dropped.
    let dir = MemDir::default();
    let written = batches(&mut Rng::new(8), 1, 60, 10);
    drop(write_all(
        dir.clone(),
        small_config(),
        &Resume::default(),
        &written,
    ));
    let first_zxids: Vec<i64> = dir.0.borrow().segments.keys().copied().collect();
    assert!(first_zxids.len() >= 3);
    let older = first_zxids[0];
    let mut image = dir.0.borrow().segments[&older].clone();
    let (start, end, _) = *record_spans(&image).last().expect("records");
    image[end - 1] ^= 0x80;
    dir.0.borrow_mut().segments.insert(older, image);
    let error = recover_mem(&dir, RecoverOptions::default()).expect_err("refused");
    assert!(
        matches!(error, LogError::CorruptMiddle { offset_bytes, .. } if offset_bytes == start as u64)
    );
    let options = RecoverOptions {
        truncate_at_corruption: true,
        ..RecoverOptions::default()
    };
    let recovery = recover_mem(&dir, options).expect("truncated on request");
    let truncation = recovery.report.truncation.expect("reported");
    assert_eq!(truncation.dropped_segments.len(), first_zxids.len() - 1);
    assert_eq!(dir.0.borrow().set_aside, first_zxids[1..].to_vec());
    assert_eq!(
        recovery.resume.tail.map(|tail| tail.first_zxid),
        Some(older)
    );
}

#[test]
fn a_bad_segment_header_is_an_error() {
    // A segment whose header block is damaged is reported, not guessed at.
    let (dir, _) = pristine_log(9);
    let mut image = newest_segment(&dir);
    image[10] ^= 1;
    set_newest_segment(&dir, image);
    let error = recover_mem(&dir, RecoverOptions::default()).expect_err("refused");
    assert!(
        matches!(
            error,
            LogError::BadSegment {
                reason: "header checksum mismatch",
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn leftovers_of_an_interrupted_roll_are_removed() {
    // A .partial from a crash mid-creation, and a newest segment whose first write never
    // landed, are removed; appending resumes in the segment before.
    let dir = MemDir::default();
    let written = batches(&mut Rng::new(10), 1, 5, 4);
    drop(write_all(
        dir.clone(),
        small_config(),
        &Resume::default(),
        &written,
    ));
    let last_zxid = written[4].last().expect("x").0.zxid;
    let mut empty = vec![0u8; small_config().segment_bytes as usize];
    segment::encode_segment_header(
        last_zxid + 1,
        small_config().segment_bytes,
        &mut empty[..SEGMENT_HEADER_BYTES],
    );
    dir.0.borrow_mut().segments.insert(last_zxid + 1, empty);
    dir.0
        .borrow_mut()
        .partials
        .insert(last_zxid + 9, vec![1, 2, 3]);
    let recovery = recover_mem(&dir, RecoverOptions::default()).expect("recover");
    assert_eq!(recovery.txns, flatten(&written));
    assert_eq!(recovery.report.partials_removed, 1);
    assert_eq!(recovery.report.empty_segments_removed, 1);
    assert_eq!(recovery.resume.tail.map(|tail| tail.first_zxid), Some(1));
    assert!(dir.0.borrow().partials.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Injected IO failures.

#[test]
fn a_failed_fdatasync_is_surfaced_and_never_retried() {
    // The flush whose fdatasync fails returns Sync; every later call is Poisoned and issues
    // no further write or fdatasync.
    let dir = MemDir::default();
    let written = batches(&mut Rng::new(11), 1, 4, 3);
    let mut writer = write_all(
        dir.clone(),
        small_config(),
        &Resume::default(),
        &written[..2],
    );
    let syncs = dir.0.borrow().sync_calls;
    dir.0.borrow_mut().fail_sync = Some(syncs);
    writer.append_batch(&written[2]).expect("append");
    let error = writer.flush_and_sync().expect_err("sync fails");
    assert!(matches!(error, LogError::Sync { .. }), "{error:?}");
    let (writes, syncs) = (dir.0.borrow().write_calls, dir.0.borrow().sync_calls);
    assert!(matches!(writer.flush_and_sync(), Err(LogError::Poisoned)));
    assert!(matches!(
        writer.append_batch(&written[3]),
        Err(LogError::Poisoned)
    ));
    assert!(matches!(writer.flush_and_sync(), Err(LogError::Poisoned)));
    assert_eq!(
        (dir.0.borrow().write_calls, dir.0.borrow().sync_calls),
        (writes, syncs)
    );
    assert_eq!(writer.durable_zxid(), written[1].last().expect("x").0.zxid);
}

#[test]
fn a_failed_segment_creation_is_surfaced() {
    // A roll whose zero-fill write fails poisons the writer and publishes no segment.
    let dir = MemDir::default();
    dir.0.borrow_mut().tear_write = Some((0, 42));
    let mut writer =
        LogWriter::new(dir.clone(), small_config(), &Resume::default()).expect("writer");
    writer.append_batch(&[set_data(1, 10)]).expect("append");
    let error = writer.flush_and_sync().expect_err("creation fails");
    assert!(
        matches!(
            error,
            LogError::Io {
                op: "zero-fill",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(dir.0.borrow().segments.is_empty());
    assert!(matches!(writer.flush_and_sync(), Err(LogError::Poisoned)));
    let recovery = recover_mem(&dir, RecoverOptions::default()).expect("recover");
    assert_eq!(recovery.report.partials_removed, 1);
    assert!(recovery.txns.is_empty());
}

#[test]
fn configurations_are_validated() {
    // Sizes that are not whole blocks, or a batch that cannot fit a segment, are refused.
    let bad = [
        LogConfig {
            segment_bytes: 10_000,
            ..LogConfig::default()
        },
        LogConfig {
            batch_bytes_max: 5000,
            ..LogConfig::default()
        },
        LogConfig {
            segment_bytes: 64 * 1024,
            batch_bytes_max: 64 * 1024,
            force_sync: true,
        },
        LogConfig {
            segment_bytes: 2 << 30,
            ..LogConfig::default()
        },
    ];
    for config in bad {
        let result = LogWriter::new(MemDir::default(), config, &Resume::default());
        assert!(matches!(result, Err(LogError::Config(_))), "{config:?}");
    }
    assert_eq!(LogConfig::default().validate(), Ok(()));
}

#[test]
fn retiring_covered_segments_keeps_what_a_snapshot_still_needs() {
    // Segments whose every record is at or below the snapshot's zxid go; the one holding the
    // snapshot's successor, and the active one, stay; recovery from the snapshot still gets
    // every later txn.
    let temp = TempDir::new("retire");
    let config = small_config();
    let written = batches(&mut Rng::new(11), 1, 80, 10);
    let options = RecoverOptions::default();
    let (mut writer, _) = open(&temp.0, config, &options).expect("open");
    for batch in &written {
        writer.append_batch(batch).expect("append");
        writer.flush_and_sync().expect("flush");
    }
    let segments = |dir: &Path| {
        let mut names: Vec<i64> = std::fs::read_dir(dir.join("version-2"))
            .expect("dir")
            .filter_map(|entry| parse_segment_name(entry.ok()?.file_name().to_str()?))
            .collect();
        names.sort_unstable();
        names
    };
    let before = segments(&temp.0);
    assert!(before.len() >= 4, "rolled into {} segments", before.len());
    // A snapshot in the middle of the third segment: recovery does not even read the two
    // segments before it.
    let snapshot_zxid = before[2] + 1;
    let covered = RecoverOptions {
        snapshot_zxid,
        ..RecoverOptions::default()
    };
    let report = recover(&mut DirectDir::open(&temp.0).expect("dir"), &covered)
        .expect("recover")
        .report;
    assert_eq!(report.segments_covered, 2);
    assert_eq!(report.segments_scanned, before.len() - 2);
    assert_eq!(writer.retire_segments_through(0).expect("retire none"), 0);
    let retired = writer
        .retire_segments_through(snapshot_zxid)
        .expect("retire");
    assert_eq!(retired, 2);
    assert_eq!(segments(&temp.0), before[2..].to_vec());
    // Far past the end: everything but the active segment goes.
    let last_zxid = writer.durable_zxid();
    drop(writer);
    let options = RecoverOptions {
        snapshot_zxid,
        ..RecoverOptions::default()
    };
    let (mut writer, recovery) = open(&temp.0, config, &options).expect("reopen");
    let expected: Vec<_> = flatten(&written)
        .into_iter()
        .filter(|(header, _)| header.zxid > snapshot_zxid)
        .collect();
    assert_eq!(recovery.txns, expected);
    writer
        .retire_segments_through(last_zxid + 100)
        .expect("retire all");
    assert_eq!(segments(&temp.0), vec![*before.last().expect("a segment")]);
}
