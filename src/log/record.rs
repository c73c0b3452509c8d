//! record: one log record — a checksummed frame around a txn encoded as ZooKeeper encodes it.
//!
//! Owns: the payload codec (`TxnHeader{clientId, cxid, zxid, time, type}` followed by the txn
//! record its type selects, ZooKeeper's `SerializeUtils.deserializeTxn` table, with no trailing
//! `TxnDigest`) and the frame around it (`magic | payload_bytes | crc32c | zxid | payload`).
//! Must not: do IO, panic on bytes read back (every length is checked before use), or accept
//! a nested multi (ZooKeeper cannot encode one, so depth is bounded at two levels).
//! Invariants: an encoded frame parses back with the same zxid and CRC (checked at encode);
//! the payload's TxnHeader zxid equals the frame's zxid (checked at decode).
//!
//! Faithful details: a failed request is logged with type `error` (-1) and an `ErrorTxn`, so it
//! decodes with `op == op::ERROR` whatever opcode it was prepared under; `CreateTxn.ephemeral`
//! is a flag, so an ephemeral's owner is the header's (the multi's) session id; a multi's
//! sub-txns are `Txn{type, buffer}` with each sub-record serialized into the buffer.

use crate::proto::jute::{Reader, Writer};
use crate::proto::{op, Acl, ErrorCode, ProtoError};
use crate::tree::{CreateKind, Txn, TxnHeader};
use std::sync::Arc;

/// Bytes of the fixed frame header: magic, payload length, CRC32C, zxid.
pub const RECORD_HEADER_BYTES: usize = 20;
/// The largest payload a frame may carry. ZooKeeper bounds requests by jute.maxbuffer (1 MiB);
/// a closeSession listing many ephemerals can exceed that, so the bound is generous.
pub const RECORD_PAYLOAD_BYTES_MAX: usize = 16 << 20;
/// Magic of the first record of a write ("KBAT"): it always starts at a block boundary.
pub const MAGIC_BATCH: u32 = 0x4B42_4154;
/// Magic of every other record ("KREC").
pub const MAGIC_RECORD: u32 = 0x4B52_4543;
/// `TxnHeader`: long clientId, int cxid, long zxid, long time, int type.
const TXN_HEADER_BYTES: usize = 8 + 4 + 8 + 8 + 4;
/// Elements preallocated for a decoded vector; more grow on demand, so a forged count
/// cannot make us allocate ahead of the bytes that back it.
const DECODE_CAPACITY_MAX: usize = 64;

const _: () = assert!(MAGIC_BATCH != 0 && MAGIC_RECORD != 0 && MAGIC_BATCH != MAGIC_RECORD);
const _: () = assert!(RECORD_PAYLOAD_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(RECORD_HEADER_BYTES == 4 + 4 + 4 + 8);

/// Why a payload that passed its CRC does not decode. Disk input: never a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("jute: {0}")]
    Proto(#[from] ProtoError),
    #[error("unknown txn type {0}")]
    UnknownType(i32),
    #[error("a multi inside a multi")]
    NestedMulti,
    #[error("{0} trailing bytes after the txn record")]
    Trailing(usize),
    #[error("frame zxid {frame:#x} differs from the txn header's {header:#x}")]
    ZxidMismatch { frame: i64, header: i64 },
}

/// A frame as read from disk, its CRC verified; `payload` is not decoded yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    pub first_in_batch: bool,
    pub zxid: i64,
    pub payload: &'a [u8],
}

impl Frame<'_> {
    /// Header plus payload: where the next record starts.
    pub fn total_bytes(&self) -> usize {
        RECORD_HEADER_BYTES + self.payload.len()
    }
}

/// Why no frame could be read at some offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameDefect {
    /// Fewer than `RECORD_HEADER_BYTES` bytes remain.
    Short,
    /// The magic is zero: padding or the end of the log.
    Zero,
    BadMagic,
    /// The length is over `RECORD_PAYLOAD_BYTES_MAX` or runs past the bytes given.
    BadLength,
    BadCrc,
}

/// The CRC32C a frame carries: over the zxid (big-endian) and then the payload.
pub fn frame_crc(zxid: i64, payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&zxid.to_be_bytes()), payload)
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let field: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_be_bytes(field))
}

fn be_i64(bytes: &[u8], at: usize) -> Option<i64> {
    let field: [u8; 8] = bytes.get(at..at.checked_add(8)?)?.try_into().ok()?;
    Some(i64::from_be_bytes(field))
}

/// Reads the frame at the start of `bytes`, checking magic, length and CRC.
pub fn parse_frame(bytes: &[u8]) -> Result<Frame<'_>, FrameDefect> {
    let magic = be_u32(bytes, 0).ok_or(FrameDefect::Short)?;
    if magic == 0 {
        return Err(FrameDefect::Zero);
    }
    let header = (be_u32(bytes, 4), be_u32(bytes, 8), be_i64(bytes, 12));
    let (Some(payload_bytes), Some(crc), Some(zxid)) = header else {
        return Err(FrameDefect::Short);
    };
    if magic != MAGIC_BATCH && magic != MAGIC_RECORD {
        return Err(FrameDefect::BadMagic);
    }
    let payload_bytes = usize::try_from(payload_bytes).map_err(|_| FrameDefect::BadLength)?;
    if payload_bytes > RECORD_PAYLOAD_BYTES_MAX {
        return Err(FrameDefect::BadLength);
    }
    let end = RECORD_HEADER_BYTES + payload_bytes;
    let payload = bytes
        .get(RECORD_HEADER_BYTES..end)
        .ok_or(FrameDefect::BadLength)?;
    if frame_crc(zxid, payload) != crc {
        return Err(FrameDefect::BadCrc);
    }
    Ok(Frame {
        first_in_batch: magic == MAGIC_BATCH,
        zxid,
        payload,
    })
}

/// Appends the frame for `(header, txn)` to `out` and returns its length in bytes.
///
/// # Errors
/// `RecordTooLarge` if the payload exceeds `RECORD_PAYLOAD_BYTES_MAX`; `out` is then unchanged.
///
/// # Panics
/// On a txn that cannot be encoded faithfully (see `encode_txn`), and if the frame just
/// written does not parse back with its zxid: both are bugs, not disk conditions.
pub fn encode_record(
    header: &TxnHeader,
    txn: &Txn,
    first_in_batch: bool,
    out: &mut Vec<u8>,
) -> Result<usize, super::LogError> {
    let start = out.len();
    out.resize(start + RECORD_HEADER_BYTES, 0);
    encode_txn(header, txn, out);
    let payload_bytes = out.len() - start - RECORD_HEADER_BYTES;
    if payload_bytes > RECORD_PAYLOAD_BYTES_MAX {
        out.truncate(start);
        return Err(super::LogError::RecordTooLarge {
            zxid: header.zxid,
            bytes: payload_bytes,
            bytes_max: RECORD_PAYLOAD_BYTES_MAX,
        });
    }
    let magic = if first_in_batch {
        MAGIC_BATCH
    } else {
        MAGIC_RECORD
    };
    let crc = frame_crc(
        header.zxid,
        out.get(start + RECORD_HEADER_BYTES..).unwrap_or(&[]),
    );
    let mut fixed = [0u8; RECORD_HEADER_BYTES];
    fixed[0..4].copy_from_slice(&magic.to_be_bytes());
    fixed[4..8].copy_from_slice(
        &u32::try_from(payload_bytes)
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    fixed[8..12].copy_from_slice(&crc.to_be_bytes());
    fixed[12..20].copy_from_slice(&header.zxid.to_be_bytes());
    if let Some(slot) = out.get_mut(start..start + RECORD_HEADER_BYTES) {
        slot.copy_from_slice(&fixed);
    }
    // Pair assertion, write side: the bytes we hand to the disk verify as recovery will.
    let frame = parse_frame(out.get(start..).unwrap_or(&[]));
    assert_eq!(frame.map(|f| f.zxid), Ok(header.zxid), "frame must verify");
    assert_eq!(frame.map(|f| f.first_in_batch), Ok(first_in_batch));
    Ok(RECORD_HEADER_BYTES + payload_bytes)
}

/// The type ZooKeeper logs a txn under inside a multi (and, for most, at top level).
///
/// # Panics
/// On `Txn::Multi`: a multi has no sub-txn type because it cannot be nested.
fn sub_txn_type(txn: &Txn) -> i32 {
    match txn {
        Txn::Create { kind, .. } => match kind {
            CreateKind::Persistent => op::CREATE,
            CreateKind::Persistent2 => op::CREATE2,
            CreateKind::Container => op::CREATE_CONTAINER,
            CreateKind::Ttl(_) => op::CREATE_TTL,
        },
        Txn::Delete { .. } => op::DELETE,
        Txn::SetData { .. } => op::SET_DATA,
        Txn::SetAcl { .. } => op::SET_ACL,
        Txn::Check { .. } => op::CHECK,
        Txn::CreateSession { .. } => op::CREATE_SESSION,
        Txn::CloseSession { .. } => op::CLOSE_SESSION,
        Txn::Error { .. } => op::ERROR,
        Txn::Multi(_) => panic!("a multi cannot be nested in a multi"),
    }
}

/// Whether `header_op` is an opcode ZooKeeper logs `txn` under at top level.
fn header_op_fits(header_op: i32, txn: &Txn) -> bool {
    match txn {
        Txn::Error { .. } => true,
        Txn::Multi(_) => header_op == op::MULTI,
        Txn::Delete { .. } => header_op == op::DELETE || header_op == op::DELETE_CONTAINER,
        Txn::SetData { .. } => header_op == op::SET_DATA || header_op == op::RECONFIG,
        _ => header_op == sub_txn_type(txn),
    }
}

/// Appends the ZooKeeper encoding of `(header, txn)`: TxnHeader, then the txn record.
///
/// # Panics
/// If the txn cannot be logged faithfully — `header.op` is not an opcode for this txn, an
/// ephemeral's owner is not the header's session, a container or TTL create names an owner, or
/// a multi is nested. Prep never produces these; they are programmer errors.
pub fn encode_txn(header: &TxnHeader, txn: &Txn, out: &mut Vec<u8>) {
    assert!(
        header_op_fits(header.op, txn),
        "op {} does not fit the txn",
        header.op
    );
    // A failed request is logged as type error whatever its opcode (PrepRequestProcessor).
    let logged_type = match txn {
        Txn::Error { .. } => op::ERROR,
        _ => header.op,
    };
    let mut writer = Writer::new(out);
    writer.write_i64(header.session_id);
    writer.write_i32(header.cxid);
    writer.write_i64(header.zxid);
    writer.write_i64(header.time_ms);
    writer.write_i32(logged_type);
    write_txn_record(&mut writer, header.session_id, txn);
}

fn write_txn_record(w: &mut Writer<'_>, session_id: i64, txn: &Txn) {
    match txn {
        Txn::Create {
            path,
            data,
            acl,
            ephemeral_owner,
            parent_cversion,
            kind,
        } => {
            assert!(
                *ephemeral_owner == 0 || (kind.is_create_txn() && *ephemeral_owner == session_id),
                "an ephemeral's owner must be the logging session"
            );
            w.write_string(path);
            w.write_buffer(data.as_deref());
            Acl::write_vec(acl, w);
            if kind.is_create_txn() {
                w.write_bool(*ephemeral_owner != 0);
            }
            w.write_i32(*parent_cversion);
            if let CreateKind::Ttl(ttl_ms) = kind {
                w.write_i64(*ttl_ms);
            }
        }
        Txn::Delete { path } => w.write_string(path),
        Txn::SetData {
            path,
            data,
            version,
        } => {
            w.write_string(path);
            w.write_buffer(data.as_deref());
            w.write_i32(*version);
        }
        Txn::SetAcl { path, acl, version } => {
            w.write_string(path);
            Acl::write_vec(acl, w);
            w.write_i32(*version);
        }
        Txn::Check { path, version } => {
            w.write_string(path);
            w.write_i32(*version);
        }
        Txn::CreateSession { timeout_ms } => w.write_i32(*timeout_ms),
        Txn::CloseSession { paths_to_delete } => w.write_string_vec(paths_to_delete),
        Txn::Error { err } => w.write_i32(err.code()),
        Txn::Multi(txns) => write_multi(w, session_id, txns),
    }
}

/// `MultiTxn{vector<Txn{int type; buffer data}>}`; each sub-record is written in place into
/// its buffer and the length prefix filled in afterwards.
fn write_multi(w: &mut Writer<'_>, session_id: i64, txns: &[Txn]) {
    w.write_vec_len(txns.len());
    for sub in txns {
        w.write_i32(sub_txn_type(sub));
        let at = w.begin_frame();
        write_txn_record(w, session_id, sub);
        w.end_frame(at);
    }
}

/// Decodes a payload written by `encode_txn`.
///
/// # Errors
/// Any malformed, truncated or over-long content; never panics.
pub fn decode_txn(payload: &[u8]) -> Result<(TxnHeader, Txn), RecordError> {
    if payload.len() < TXN_HEADER_BYTES {
        return Err(RecordError::Proto(ProtoError::Short));
    }
    let mut r = Reader::new(payload);
    let header = TxnHeader {
        session_id: r.read_i64()?,
        cxid: r.read_i32()?,
        zxid: r.read_i64()?,
        time_ms: r.read_i64()?,
        op: r.read_i32()?,
    };
    let txn = read_txn_record(&mut r, header.op, header.session_id, false)?;
    if !r.is_empty() {
        return Err(RecordError::Trailing(r.remaining()));
    }
    Ok((header, txn))
}

/// Decodes a frame's payload and checks it against the frame (pair assertion, read side).
///
/// # Errors
/// As `decode_txn`, and `ZxidMismatch` if the payload's zxid is not the frame's.
pub fn decode_frame(frame: &Frame<'_>) -> Result<(TxnHeader, Txn), RecordError> {
    let (header, txn) = decode_txn(frame.payload)?;
    if header.zxid != frame.zxid {
        return Err(RecordError::ZxidMismatch {
            frame: frame.zxid,
            header: header.zxid,
        });
    }
    Ok((header, txn))
}

fn read_data(r: &mut Reader<'_>) -> Result<Option<Arc<[u8]>>, RecordError> {
    Ok(r.read_buffer()?.map(Arc::from))
}

fn read_txn_record(
    r: &mut Reader<'_>,
    txn_type: i32,
    session_id: i64,
    nested: bool,
) -> Result<Txn, RecordError> {
    let txn = match txn_type {
        op::CREATE | op::CREATE2 | op::CREATE_CONTAINER | op::CREATE_TTL => {
            read_create(r, txn_type, session_id)?
        }
        op::DELETE | op::DELETE_CONTAINER => Txn::Delete {
            path: r.read_string()?.to_string(),
        },
        op::SET_DATA | op::RECONFIG => Txn::SetData {
            path: r.read_string()?.to_string(),
            data: read_data(r)?,
            version: r.read_i32()?,
        },
        op::SET_ACL => Txn::SetAcl {
            path: r.read_string()?.to_string(),
            acl: Acl::read_vec(r)?,
            version: r.read_i32()?,
        },
        op::CHECK => Txn::Check {
            path: r.read_string()?.to_string(),
            version: r.read_i32()?,
        },
        op::CREATE_SESSION => Txn::CreateSession {
            timeout_ms: r.read_i32()?,
        },
        // Old logs wrote closeSession with no record at all.
        op::CLOSE_SESSION => Txn::CloseSession {
            paths_to_delete: if r.is_empty() {
                Vec::new()
            } else {
                read_strings(r)?
            },
        },
        // Unknown codes become SystemError, as everywhere else a code is read.
        op::ERROR => Txn::Error {
            err: ErrorCode::from_code(r.read_i32()?),
        },
        op::MULTI if nested => return Err(RecordError::NestedMulti),
        op::MULTI => read_multi(r, session_id)?,
        other => return Err(RecordError::UnknownType(other)),
    };
    Ok(txn)
}

fn read_create(r: &mut Reader<'_>, txn_type: i32, session_id: i64) -> Result<Txn, RecordError> {
    let path = r.read_string()?.to_string();
    let data = read_data(r)?;
    let acl = Acl::read_vec(r)?;
    let (kind, ephemeral_owner, parent_cversion) = match txn_type {
        op::CREATE_CONTAINER => (CreateKind::Container, 0, r.read_i32()?),
        op::CREATE_TTL => {
            let parent_cversion = r.read_i32()?;
            (CreateKind::Ttl(r.read_i64()?), 0, parent_cversion)
        }
        _ => {
            let kind = if txn_type == op::CREATE2 {
                CreateKind::Persistent2
            } else {
                CreateKind::Persistent
            };
            let owner = if r.read_bool()? { session_id } else { 0 };
            // CreateTxnV0 ends after `ephemeral`; ZooKeeper reads it as parentCVersion -1.
            let parent_cversion = if r.is_empty() { -1 } else { r.read_i32()? };
            (kind, owner, parent_cversion)
        }
    };
    Ok(Txn::Create {
        path,
        data,
        acl,
        ephemeral_owner,
        parent_cversion,
        kind,
    })
}

/// `vector<ustring>`, null read as empty, preallocating at most `DECODE_CAPACITY_MAX`.
fn read_strings(r: &mut Reader<'_>) -> Result<Vec<String>, RecordError> {
    let count = r.read_vec_len()?.unwrap_or(0);
    let mut out = Vec::with_capacity(count.min(DECODE_CAPACITY_MAX));
    for _ in 0..count {
        out.push(r.read_string()?.to_string());
    }
    Ok(out)
}

fn read_multi(r: &mut Reader<'_>, session_id: i64) -> Result<Txn, RecordError> {
    let count = r.read_vec_len()?.unwrap_or(0);
    let mut txns = Vec::with_capacity(count.min(DECODE_CAPACITY_MAX));
    for _ in 0..count {
        let sub_type = r.read_i32()?;
        let bytes = r.read_buffer()?.unwrap_or(&[]);
        let mut sub = Reader::new(bytes);
        txns.push(read_txn_record(&mut sub, sub_type, session_id, true)?);
        if !sub.is_empty() {
            return Err(RecordError::Trailing(sub.remaining()));
        }
    }
    Ok(Txn::Multi(txns))
}
