//! forward: the bytes a learner's replica core sends its leader — forwarded client requests
//! (ZAB's REQUEST packet) and session touches (the PING reply) — and their decoding.
//!
//! Owns: the encoding of both. A REQUEST's data starts as ZooKeeper's does (`long
//! sessionId`, `int cxid`, `int type`), then carries Keel's own body: the prepared
//! `WriteOp` (jute-style, big-endian), the connection's auth ids, or a createSession's
//! timeout. Only Keel leaders read it (a JVM leader would not: joining one is a later step).
//! A PING reply is ZooKeeper's: `long sessionId`, `int timeout` per touched session.
//! Must not: panic on bytes from the network; every decode error is a `ProtoError`.

use crate::proto::jute::{Reader, Writer};
use crate::proto::{op, Acl, Id, ProtoError};
use crate::tree::WriteOp;

/// One forwarded request as the leader's replica core needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    pub session_id: i64,
    pub cxid: i32,
    pub op_code: i32,
    pub body: ForwardedBody,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardedBody {
    /// A new session the learner numbered; its password derives from the id.
    CreateSession {
        timeout_ms: i32,
    },
    Write {
        op: WriteOp,
        auth_ids: Vec<Id>,
    },
    /// `sync(path)`: the leader commits a marker the learner answers on.
    Sync {
        path: String,
    },
}

// Tags of the WriteOp encoding.
const TAG_CREATE: i32 = 1;
const TAG_DELETE: i32 = 2;
const TAG_DELETE_CONTAINER: i32 = 3;
const TAG_SET_DATA: i32 = 4;
const TAG_SET_ACL: i32 = 5;
const TAG_CHECK: i32 = 6;
const TAG_MULTI: i32 = 7;
const TAG_CLOSE_SESSION: i32 = 8;
/// Nesting a multi inside a multi is not something a client can send; refuse deeper input.
const MULTI_DEPTH_MAX: usize = 2;

impl Forwarded {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        let mut w = Writer::new(&mut out);
        w.write_i64(self.session_id);
        w.write_i32(self.cxid);
        w.write_i32(self.op_code);
        match &self.body {
            ForwardedBody::CreateSession { timeout_ms } => w.write_i32(*timeout_ms),
            ForwardedBody::Sync { path } => w.write_string(path),
            ForwardedBody::Write { op, auth_ids } => {
                write_op(&mut w, op);
                w.write_vec_len(auth_ids.len());
                for id in auth_ids {
                    id.write(&mut w);
                }
            }
        }
        out
    }

    /// # Errors
    /// Bytes that are not a forwarded request (short, bad tags, trailing bytes).
    pub fn decode(bytes: &[u8]) -> Result<Forwarded, ProtoError> {
        let mut r = Reader::new(bytes);
        let session_id = r.read_i64()?;
        let cxid = r.read_i32()?;
        let op_code = r.read_i32()?;
        let body = match op_code {
            op::CREATE_SESSION => ForwardedBody::CreateSession {
                timeout_ms: r.read_i32()?,
            },
            op::SYNC => ForwardedBody::Sync {
                path: r.read_string()?.to_owned(),
            },
            _ => {
                let op = read_op(&mut r, 0)?;
                let count = r.read_vec_len()?.unwrap_or(0);
                let mut auth_ids = Vec::with_capacity(count.min(64));
                for _ in 0..count {
                    auth_ids.push(Id::read(&mut r)?);
                }
                ForwardedBody::Write { op, auth_ids }
            }
        };
        if !r.is_empty() {
            return Err(ProtoError::Trailing(r.remaining()));
        }
        Ok(Forwarded {
            session_id,
            cxid,
            op_code,
            body,
        })
    }
}

fn write_op(w: &mut Writer<'_>, op: &WriteOp) {
    match op {
        WriteOp::Create {
            path,
            data,
            acl,
            flags,
            ttl,
            op,
        } => {
            w.write_i32(TAG_CREATE);
            w.write_string(path);
            w.write_buffer(data.as_deref());
            Acl::write_vec(acl, w);
            w.write_i32(*flags);
            w.write_i64(*ttl);
            w.write_i32(*op);
        }
        WriteOp::Delete { path, version } => {
            w.write_i32(TAG_DELETE);
            w.write_string(path);
            w.write_i32(*version);
        }
        WriteOp::DeleteContainer { path } => {
            w.write_i32(TAG_DELETE_CONTAINER);
            w.write_string(path);
        }
        WriteOp::SetData {
            path,
            data,
            version,
        } => {
            w.write_i32(TAG_SET_DATA);
            w.write_string(path);
            w.write_buffer(data.as_deref());
            w.write_i32(*version);
        }
        WriteOp::SetAcl { path, acl, version } => {
            w.write_i32(TAG_SET_ACL);
            w.write_string(path);
            Acl::write_vec(acl, w);
            w.write_i32(*version);
        }
        WriteOp::Check { path, version } => {
            w.write_i32(TAG_CHECK);
            w.write_string(path);
            w.write_i32(*version);
        }
        WriteOp::Multi(ops) => {
            w.write_i32(TAG_MULTI);
            w.write_vec_len(ops.len());
            for op in ops {
                write_op(w, op);
            }
        }
        WriteOp::CloseSession => w.write_i32(TAG_CLOSE_SESSION),
    }
}

fn read_op(r: &mut Reader<'_>, depth: usize) -> Result<WriteOp, ProtoError> {
    let path = |r: &mut Reader<'_>| r.read_string().map(str::to_owned);
    Ok(match r.read_i32()? {
        TAG_CREATE => WriteOp::Create {
            path: path(r)?,
            data: r.read_buffer()?.map(<[u8]>::to_vec),
            acl: Acl::read_vec(r)?,
            flags: r.read_i32()?,
            ttl: r.read_i64()?,
            op: r.read_i32()?,
        },
        TAG_DELETE => WriteOp::Delete {
            path: path(r)?,
            version: r.read_i32()?,
        },
        TAG_DELETE_CONTAINER => WriteOp::DeleteContainer { path: path(r)? },
        TAG_SET_DATA => WriteOp::SetData {
            path: path(r)?,
            data: r.read_buffer()?.map(<[u8]>::to_vec),
            version: r.read_i32()?,
        },
        TAG_SET_ACL => WriteOp::SetAcl {
            path: path(r)?,
            acl: Acl::read_vec(r)?,
            version: r.read_i32()?,
        },
        TAG_CHECK => WriteOp::Check {
            path: path(r)?,
            version: r.read_i32()?,
        },
        TAG_MULTI if depth < MULTI_DEPTH_MAX => {
            let count = r.read_vec_len()?.unwrap_or(0);
            let mut ops = Vec::with_capacity(count.min(1024));
            for _ in 0..count {
                ops.push(read_op(r, depth + 1)?);
            }
            WriteOp::Multi(ops)
        }
        TAG_CLOSE_SESSION => WriteOp::CloseSession,
        tag => return Err(ProtoError::UnknownOp(tag)),
    })
}

/// A learner's PING reply: the sessions its clients touched, with their timeouts.
pub fn encode_touches(touches: &[(i64, i32)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(touches.len() * 12);
    let mut w = Writer::new(&mut out);
    for (id, timeout_ms) in touches {
        w.write_i64(*id);
        w.write_i32(*timeout_ms);
    }
    out
}

/// # Errors
/// A payload that is not whole (id, timeout) pairs.
pub fn decode_touches(bytes: &[u8]) -> Result<Vec<(i64, i32)>, ProtoError> {
    let mut r = Reader::new(bytes);
    let mut touches = Vec::with_capacity(bytes.len() / 12);
    while !r.is_empty() {
        touches.push((r.read_i64()?, r.read_i32()?));
    }
    Ok(touches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::open_acl_unsafe;

    fn samples() -> Vec<Forwarded> {
        let create = WriteOp::Create {
            path: "/a/b".into(),
            data: Some(b"xyz".to_vec()),
            acl: open_acl_unsafe(),
            flags: 3,
            ttl: 1234,
            op: op::CREATE_TTL,
        };
        let multi = WriteOp::Multi(vec![
            create.clone(),
            WriteOp::Check {
                path: "/a".into(),
                version: 4,
            },
            WriteOp::SetData {
                path: "/a".into(),
                data: None,
                version: -1,
            },
            WriteOp::Delete {
                path: "/a/c".into(),
                version: 2,
            },
        ]);
        let write = |op_code, op| Forwarded {
            session_id: 0x0200_0000_0000_0007,
            cxid: 42,
            op_code,
            body: ForwardedBody::Write {
                op,
                auth_ids: vec![Id::new("digest", "u:h"), Id::new("ip", "127.0.0.1")],
            },
        };
        vec![
            write(op::CREATE_TTL, create),
            write(op::MULTI, multi),
            write(
                op::SET_ACL,
                WriteOp::SetAcl {
                    path: "/x".into(),
                    acl: open_acl_unsafe(),
                    version: 0,
                },
            ),
            write(op::CLOSE_SESSION, WriteOp::CloseSession),
            Forwarded {
                session_id: -5,
                cxid: 0,
                op_code: op::CREATE_SESSION,
                body: ForwardedBody::CreateSession { timeout_ms: 30_000 },
            },
            Forwarded {
                session_id: 9,
                cxid: 7,
                op_code: op::SYNC,
                body: ForwardedBody::Sync { path: "/".into() },
            },
        ]
    }

    #[test]
    fn forwarded_requests_round_trip_and_damage_is_an_error() {
        for sample in samples() {
            let bytes = sample.encode();
            assert_eq!(Forwarded::decode(&bytes).unwrap(), sample);
            for cut in 0..bytes.len() {
                assert!(Forwarded::decode(&bytes[..cut]).is_err(), "cut at {cut}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert!(Forwarded::decode(&longer).is_err());
        }
    }

    #[test]
    fn touches_round_trip_and_a_partial_pair_is_an_error() {
        let touches = vec![(1_i64, 4000_i32), (-3, 10_000)];
        let bytes = encode_touches(&touches);
        assert_eq!(bytes.len(), 24);
        assert_eq!(decode_touches(&bytes).unwrap(), touches);
        assert!(decode_touches(&bytes[..20]).is_err());
    }
}
