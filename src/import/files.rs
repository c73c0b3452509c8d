//! files: pure readers of Apache ZooKeeper's on-disk files (reference §6), bytes in, records out.
//!
//! Owns: `parse_snapshot` (FileSnap: "ZKSN" header, sessions, the ACL cache, the nodes in
//! pre-order into a `TreeBuilder`, the Adler32 seal, the 3.6+ digest trailer and the 3.9+
//! lastProcessedZxid trailer, each seal checked) and `parse_txn_log` (FileTxnLog: "ZKLG"
//! header, then `long adler32 | int len | txn bytes | 'B'` entries up to the zero padding).
//! Must not: do IO or panic, whatever the bytes: every length is checked against what
//! remains (the jute `Reader` does), and every count only bounds a loop that consumes bytes.
//! Faithful details: a log entry's bytes are ZooKeeper's txn encoding, which `log::decode_txn`
//! reads (TxnHeader + record by type); 3.6+ appends `TxnDigest{int version; long digest}`,
//! which is split off here. Like `FileTxnIterator`, a zero or null length, a short buffer or a
//! missing 'B' ends the log (a torn last entry), while a checksum mismatch is an error.

use super::ImportError;
use crate::log::{decode_txn, RecordError};
use crate::proto::jute::Reader;
use crate::proto::{Acl, ProtoError};
use crate::tree::{
    DataTree, NodeKind, StoredStat, TreeBuilder, Txn, TxnHeader, CONTAINER_EPHEMERAL_OWNER,
};
use std::collections::HashMap;
use std::sync::Arc;

/// "ZKSN", FileSnap.SNAP_MAGIC.
pub const SNAP_MAGIC: [u8; 4] = *b"ZKSN";
/// "ZKLG", FileTxnLog.TXNLOG_MAGIC.
pub const LOG_MAGIC: [u8; 4] = *b"ZKLG";
/// FileTxnSnapLog.VERSION.
pub const FILE_VERSION: i32 = 2;
/// `TxnDigest{int version; long treeDigest}`.
const TXN_DIGEST_BYTES: usize = 12;
/// DigestCalculator.DIGEST_VERSION.
const DIGEST_VERSION: i32 = 2;
/// Util.readTxnBytes' end-of-record byte.
const END_OF_RECORD: u8 = b'B';

/// Adler-32 (java.util.zip.Adler32), as ZooKeeper checksums snapshots and log entries.
pub fn adler32(bytes: &[u8]) -> u32 {
    adler32_append(1, bytes)
}

/// Continues an Adler-32 over more bytes.
pub fn adler32_append(state: u32, bytes: &[u8]) -> u32 {
    const MOD: u32 = 65_521;
    // 5552 bytes is the longest run whose sums cannot overflow u32 before the modulo.
    let (mut a, mut b) = (state & 0xFFFF, state >> 16);
    for chunk in bytes.chunks(5552) {
        for &byte in chunk {
            a += u32::from(byte);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

/// Largest inflated snapshot accepted (a damaged or hostile size, not a real tree).
const GUNZIP_BYTES_MAX: usize = 1 << 36;

/// Inflates a gzip file (RFC 1952, one member, as java.util.zip.GZIPOutputStream writes for
/// `zookeeper.snapshot.compression.method=gz`), checking the trailer's CRC-32 and size.
///
/// # Errors
/// Not gzip, a damaged stream, or a CRC-32/size mismatch.
pub fn gunzip(bytes: &[u8]) -> Result<Vec<u8>, ImportError> {
    let what = "gzip snapshot";
    let bad = |reason: &str| malformed(what, reason);
    let mut r = Reader::new(bytes);
    let fixed = r.take(10).map_err(corrupt(what))?;
    let (Some(&[0x1f, 0x8b, 8]), Some(&flags)) = (fixed.get(..3), fixed.get(3)) else {
        return Err(bad("not a gzip stream (magic 1f 8b, method 8)"));
    };
    if flags & 0x04 != 0 {
        let extra = r.take(2).map_err(corrupt(what))?;
        let len = u16::from_le_bytes([
            extra.first().copied().unwrap_or(0),
            extra.get(1).copied().unwrap_or(0),
        ]);
        r.take(usize::from(len)).map_err(corrupt(what))?;
    }
    for flag in [0x08, 0x10] {
        if flags & flag != 0 {
            // A zero-terminated name or comment.
            while r.take(1).map_err(corrupt(what))? != [0] {}
        }
    }
    if flags & 0x02 != 0 {
        r.take(2).map_err(corrupt(what))?;
    }
    let body = bytes.get(r.offset()..).unwrap_or_default();
    let Some(split) = body.len().checked_sub(8) else {
        return Err(bad("no room for the trailer"));
    };
    let (deflated, trailer) = body.split_at(split);
    let inflated = miniz_oxide::inflate::decompress_to_vec_with_limit(deflated, GUNZIP_BYTES_MAX)
        .map_err(|error| bad(&format!("inflate: {error}")))?;
    let mut t = trailer.iter().copied();
    let mut le_u32 = || u32::from_le_bytes([(); 4].map(|()| t.next().unwrap_or(0)));
    let (crc, size) = (le_u32(), le_u32());
    if crc != super::digest::crc32(&inflated) || size != inflated.len() as u32 {
        return Err(ImportError::Checksum {
            what: "gzip snapshot (CRC-32 or size)".to_string(),
            offset: bytes.len() - 8,
        });
    }
    Ok(inflated)
}

/// The tree digest a 3.6+ snapshot or log entry carries (`ZxidDigest` / `TxnDigest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZkDigest {
    /// The zxid the digest is of (a snapshot's trailer; for a log entry, the entry's zxid).
    pub zxid: i64,
    pub version: i32,
    pub digest: i64,
}

/// A ZooKeeper snapshot, parsed and checked.
pub struct ZkSnapshot {
    /// The tree, with `last_zxid` set to the zxid the caller named (the file name's).
    pub tree: DataTree,
    /// Sessions (id, timeout ms) in file order.
    pub sessions: Vec<(i64, i32)>,
    pub nodes: usize,
    /// The 3.6+ digest trailer, if the snapshot has one.
    pub digest: Option<ZkDigest>,
    /// The 3.9+ lastProcessedZxid trailer, if the snapshot has one.
    pub last_processed_zxid: Option<i64>,
}

/// One txn log entry, checksum verified and decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZkLogEntry {
    pub header: TxnHeader,
    pub txn: Txn,
    /// The tree digest after this txn (3.6+ with digest.enabled).
    pub digest: Option<ZkDigest>,
}

/// Why a log file's entries ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogEnd {
    /// The physical end of the file, right after an entry.
    Eof,
    /// A zero (or null) length: preallocated padding.
    Padding,
    /// A last entry cut short or missing its 'B': a torn write, ignored like ZooKeeper does.
    Torn { offset: usize },
}

/// A ZooKeeper txn log file, parsed.
#[derive(Debug, Clone)]
pub struct ZkTxnLog {
    pub dbid: i64,
    pub entries: Vec<ZkLogEntry>,
    pub end: LogEnd,
}

fn corrupt(what: impl Into<String>) -> impl FnOnce(ProtoError) -> ImportError {
    let what = what.into();
    move |error| ImportError::Malformed {
        what,
        reason: error.to_string(),
    }
}

fn malformed(what: impl Into<String>, reason: impl Into<String>) -> ImportError {
    ImportError::Malformed {
        what: what.into(),
        reason: reason.into(),
    }
}

/// The node kind ZooKeeper derives from a stored ephemeralOwner (`EphemeralType.get` with
/// extended types on): 0 persistent, `i64::MIN` container, top byte 0xFF TTL, else ephemeral.
pub fn kind_of_owner(owner: i64) -> NodeKind {
    if owner == 0 {
        NodeKind::Persistent
    } else if owner == CONTAINER_EPHEMERAL_OWNER {
        NodeKind::Container
    } else if (owner as u64) >> 56 == 0xFF {
        NodeKind::Ttl
    } else {
        NodeKind::Ephemeral
    }
}

fn read_file_header(r: &mut Reader<'_>, magic: [u8; 4], what: &str) -> Result<i64, ImportError> {
    let found = r.take(4).map_err(corrupt(format!("{what} header")))?;
    if found != magic {
        return Err(ImportError::BadMagic {
            expected: String::from_utf8_lossy(&magic).into_owned(),
            found: found.to_vec(),
        });
    }
    let version = r.read_i32().map_err(corrupt(format!("{what} header")))?;
    if version != FILE_VERSION {
        return Err(ImportError::UnsupportedVersion(version));
    }
    r.read_i64().map_err(corrupt(format!("{what} header")))
}

/// Checks a seal at the reader's position: `long adler32 of every byte before it; ustring "/"`.
fn read_seal(r: &mut Reader<'_>, bytes: &[u8], what: &str) -> Result<(), ImportError> {
    let sealed = bytes.get(..r.offset()).unwrap_or_default();
    let expected = adler32(sealed);
    let found = r.read_i64().map_err(corrupt(what))?;
    if found != i64::from(expected) {
        return Err(ImportError::Checksum {
            what: what.to_string(),
            offset: sealed.len(),
        });
    }
    let slash = r.read_ustring().map_err(corrupt(what))?;
    if slash != Some("/") {
        return Err(malformed(what, "the seal does not end with \"/\""));
    }
    Ok(())
}

/// Parses an uncompressed ZooKeeper snapshot (`snapshot.<hex zxid>`) named for `zxid`.
///
/// # Errors
/// Anything that is not a complete, checksummed ZooKeeper snapshot whose nodes form a tree.
pub fn parse_snapshot(bytes: &[u8], zxid: i64) -> Result<ZkSnapshot, ImportError> {
    let mut r = Reader::new(bytes);
    read_file_header(&mut r, SNAP_MAGIC, "snapshot")?;
    let sessions = read_sessions(&mut r)?;
    let acls = read_acl_cache(&mut r)?;
    let mut builder = TreeBuilder::new();
    loop {
        let path = r.read_string().map_err(corrupt("node path"))?;
        if path == "/" {
            break;
        }
        let what = || format!("node {path:?}");
        let data = r.read_buffer().map_err(corrupt(what()))?;
        let acl_id = r.read_i64().map_err(corrupt(what()))?;
        let stat = read_stat_persisted(&mut r).map_err(corrupt(what()))?;
        let Some(acl) = acls.get(&acl_id) else {
            return Err(malformed(
                what(),
                format!("ACL id {acl_id} is not in the ACL cache"),
            ));
        };
        builder
            .add(path, stat, data.map(Arc::from), acl)
            .map_err(ImportError::Tree)?;
    }
    let nodes = builder.node_count();
    read_seal(&mut r, bytes, "snapshot checksum")?;
    let mut digest = None;
    let mut last_processed_zxid = None;
    if !r.is_empty() {
        let what = "snapshot digest trailer";
        let digest_zxid = r.read_i64().map_err(corrupt(what))?;
        let version = r.read_i32().map_err(corrupt(what))?;
        let value = r.read_i64().map_err(corrupt(what))?;
        read_seal(&mut r, bytes, what)?;
        digest = Some(ZkDigest {
            zxid: digest_zxid,
            version,
            digest: value,
        });
    }
    if !r.is_empty() {
        let what = "snapshot lastProcessedZxid trailer";
        last_processed_zxid = Some(r.read_i64().map_err(corrupt(what))?);
        read_seal(&mut r, bytes, what)?;
    }
    if !r.is_empty() {
        return Err(malformed(
            "snapshot",
            format!("{} bytes after the last seal", r.remaining()),
        ));
    }
    let tree = builder.finish(zxid).map_err(ImportError::Tree)?;
    Ok(ZkSnapshot {
        tree,
        sessions,
        nodes,
        digest,
        last_processed_zxid,
    })
}

fn read_sessions(r: &mut Reader<'_>) -> Result<Vec<(i64, i32)>, ImportError> {
    let what = "snapshot sessions";
    let count = r.read_i32().map_err(corrupt(what))?;
    let count = usize::try_from(count)
        .map_err(|_| malformed(what, format!("negative session count {count}")))?;
    // 12 bytes a session: the count cannot exceed what remains.
    if count > r.remaining() / 12 {
        return Err(malformed(
            what,
            format!("{count} sessions do not fit the file"),
        ));
    }
    let mut sessions = Vec::with_capacity(count);
    for _ in 0..count {
        let id = r.read_i64().map_err(corrupt(what))?;
        let timeout = r.read_i32().map_err(corrupt(what))?;
        sessions.push((id, timeout));
    }
    Ok(sessions)
}

fn read_acl_cache(r: &mut Reader<'_>) -> Result<HashMap<i64, Vec<Acl>>, ImportError> {
    let what = "snapshot ACL cache";
    let count = r.read_i32().map_err(corrupt(what))?;
    let count =
        usize::try_from(count).map_err(|_| malformed(what, format!("negative size {count}")))?;
    if count > r.remaining() / 12 {
        return Err(malformed(
            what,
            format!("{count} entries do not fit the file"),
        ));
    }
    let mut acls = HashMap::with_capacity(count);
    for _ in 0..count {
        let id = r.read_i64().map_err(corrupt(what))?;
        let list = Acl::read_vec(r).map_err(corrupt(what))?;
        acls.insert(id, list);
    }
    // ReferenceCountedACLCache: -1 is OPEN_ACL_UNSAFE without being listed.
    acls.entry(-1).or_insert_with(crate::proto::open_acl_unsafe);
    Ok(acls)
}

/// `StatPersisted{czxid, mzxid, ctime, mtime, version, cversion, aversion, ephemeralOwner,
/// pzxid}`, with the node kind derived from the owner.
fn read_stat_persisted(r: &mut Reader<'_>) -> Result<StoredStat, ProtoError> {
    let czxid = r.read_i64()?;
    let mzxid = r.read_i64()?;
    let ctime_ms = r.read_i64()?;
    let mtime_ms = r.read_i64()?;
    let version = r.read_i32()?;
    let cversion = r.read_i32()?;
    let aversion = r.read_i32()?;
    let ephemeral_owner = r.read_i64()?;
    let pzxid = r.read_i64()?;
    Ok(StoredStat {
        czxid,
        mzxid,
        pzxid,
        ctime_ms,
        mtime_ms,
        ephemeral_owner,
        version,
        cversion,
        aversion,
        kind: kind_of_owner(ephemeral_owner),
    })
}

/// Parses a ZooKeeper txn log file (`log.<hex first zxid>`).
///
/// # Errors
/// A bad header, a checksum mismatch, or an entry that passed its checksum but does not decode.
pub fn parse_txn_log(bytes: &[u8]) -> Result<ZkTxnLog, ImportError> {
    let mut r = Reader::new(bytes);
    let dbid = read_file_header(&mut r, LOG_MAGIC, "txn log")?;
    let mut entries = Vec::new();
    let end = loop {
        let offset = r.offset();
        if r.is_empty() {
            break LogEnd::Eof;
        }
        let (Ok(checksum), Ok(len)) = (r.read_i64(), r.read_i32()) else {
            break LogEnd::Torn { offset };
        };
        if len == 0 || len == -1 {
            break LogEnd::Padding;
        }
        let Ok(len) = usize::try_from(len) else {
            return Err(malformed(
                format!("txn log entry at byte {offset}"),
                format!("length {len}"),
            ));
        };
        let Ok(payload) = r.take(len) else {
            break LogEnd::Torn { offset };
        };
        match r.take(1) {
            Ok([END_OF_RECORD]) => {}
            _ => break LogEnd::Torn { offset },
        }
        if checksum != i64::from(adler32(payload)) {
            return Err(ImportError::Checksum {
                what: "txn log entry".to_string(),
                offset,
            });
        }
        let entry = decode_entry(payload).map_err(|error| ImportError::Txn { offset, error })?;
        entries.push(entry);
    };
    Ok(ZkTxnLog { dbid, entries, end })
}

/// Decodes a log entry's bytes: the txn, then the optional `TxnDigest` (3.6+).
///
/// Like ZooKeeper 3.6+, which reads the txn and then tries a digest, an entry whose last 12
/// bytes are a version-2 `TxnDigest` after a txn that decodes exactly is read as txn + digest
/// (this matters for a closeSession logged without its record, which is then followed
/// directly by the digest); anything else must be a txn alone (pre-3.6, or digest.enabled off).
///
/// # Errors
/// The bytes are neither a txn nor a txn followed by a version-2 digest.
pub fn decode_entry(payload: &[u8]) -> Result<ZkLogEntry, RecordError> {
    if let Some(split) = payload.len().checked_sub(TXN_DIGEST_BYTES) {
        let (txn_bytes, digest_bytes) = payload.split_at(split);
        let mut d = Reader::new(digest_bytes);
        if let (Ok(DIGEST_VERSION), Ok(digest)) = (d.read_i32(), d.read_i64()) {
            if let Ok((header, txn)) = decode_txn(txn_bytes) {
                return Ok(ZkLogEntry {
                    header,
                    txn,
                    digest: Some(ZkDigest {
                        zxid: header.zxid,
                        version: DIGEST_VERSION,
                        digest,
                    }),
                });
            }
        }
    }
    let (header, txn) = decode_txn(payload)?;
    Ok(ZkLogEntry {
        header,
        txn,
        digest: None,
    })
}
