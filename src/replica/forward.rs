//! forward: what a learner's replica core sends its leader — forwarded client requests
//! (ZAB's REQUEST packet) and session touches (the PING reply) — and their decoding, plus
//! the one mapping from a decoded client request to the replica core's work.
//!
//! Owns: ZooKeeper's REQUEST data (`Learner.request`): `long sessionId, int cxid, int type`,
//! then the client's request record exactly as the client sent it (a CreateRequest's jute
//! bytes, a SyncRequest's path, nothing for closeSession); a createSession's record is its
//! negotiated timeout as a 4-byte int (`ZooKeeperServer.createSession`). The connection's
//! auth ids travel beside it, in the QuorumPacket's authinfo. The leader decodes the record
//! with the client-protocol decoder (`proto::records::Request::decode_record`) and turns it
//! into a `WriteOp` with `to_replica`, as the shards do for their own clients.
//! A PING reply is ZooKeeper's: `long sessionId`, `int timeout` per touched session.
//! Must not: panic on bytes from the network; every decode error is a `ProtoError`.

use crate::proto::jute::{Reader, Writer};
use crate::proto::records::{MultiOp, Request};
use crate::proto::{op, Id, ProtoError};
use crate::tree::WriteOp;

/// `long sessionId, int cxid, int type` ahead of a forwarded request's record.
const REQUEST_HEAD_BYTES: usize = 16;

/// One forwarded request: a REQUEST's data, split, and its authinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    pub session_id: i64,
    pub cxid: i32,
    pub op_code: i32,
    /// The client's request record (without its RequestHeader), as it sent it.
    pub record: Vec<u8>,
    pub auth_ids: Vec<Id>,
}

/// What a forwarded request asks the leader's replica core for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ForwardedBody {
    /// A new session the learner numbered; its password derives from the id.
    CreateSession {
        timeout_ms: i32,
    },
    Write(WriteOp),
    /// `sync(path)`: answered by a SYNC packet once what the leader proposed is committed.
    Sync,
}

impl Forwarded {
    /// A createSession: its record is the negotiated timeout.
    pub fn create_session(session_id: i64, timeout_ms: i32) -> Forwarded {
        Forwarded {
            session_id,
            cxid: 0,
            op_code: op::CREATE_SESSION,
            record: timeout_ms.to_be_bytes().to_vec(),
            auth_ids: Vec::new(),
        }
    }

    /// A sync: its record is the client's SyncRequest (`ustring path`).
    pub fn sync(session_id: i64, cxid: i32, path: &str, auth_ids: Vec<Id>) -> Forwarded {
        let mut record = Vec::with_capacity(4 + path.len());
        Writer::new(&mut record).write_string(path);
        Forwarded {
            session_id,
            cxid,
            op_code: op::SYNC,
            record,
            auth_ids,
        }
    }

    /// The REQUEST's data.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(REQUEST_HEAD_BYTES + self.record.len());
        let mut w = Writer::new(&mut out);
        w.write_i64(self.session_id);
        w.write_i32(self.cxid);
        w.write_i32(self.op_code);
        out.extend_from_slice(&self.record);
        out
    }

    /// # Errors
    /// Data shorter than the request head.
    pub fn decode(data: &[u8], auth_ids: Vec<Id>) -> Result<Forwarded, ProtoError> {
        let mut r = Reader::new(data);
        let session_id = r.read_i64()?;
        let cxid = r.read_i32()?;
        let op_code = r.read_i32()?;
        let record = data.get(REQUEST_HEAD_BYTES..).ok_or(ProtoError::Short)?;
        Ok(Forwarded {
            session_id,
            cxid,
            op_code,
            record: record.to_vec(),
            auth_ids,
        })
    }

    /// Decodes the record for the leader's replica core.
    ///
    /// # Errors
    /// A malformed record, trailing bytes, or a request that is not forwarded (a read).
    pub fn body(&self) -> Result<ForwardedBody, ProtoError> {
        let mut r = Reader::new(&self.record);
        let body = match self.op_code {
            op::CREATE_SESSION => ForwardedBody::CreateSession {
                timeout_ms: r.read_i32()?,
            },
            op::SYNC => {
                r.read_string()?;
                ForwardedBody::Sync
            }
            code => {
                let request = Request::decode_record(code, &self.record)?;
                match to_replica(&request) {
                    Some(Forward::Write(op)) => return Ok(ForwardedBody::Write(op)),
                    _ => return Err(ProtoError::UnknownOp(code)),
                }
            }
        };
        if !r.is_empty() {
            return Err(ProtoError::Trailing(r.remaining()));
        }
        Ok(body)
    }
}

/// What a client request needs from the replica core.
pub enum Forward {
    Write(WriteOp),
    Sync(String),
}

/// The replica-core work for `request`, or None when a shard answers it alone. The one
/// mapping for a shard's own clients and a leader's forwarded requests alike.
pub fn to_replica(request: &Request<'_>) -> Option<Forward> {
    let single = |multi_op: MultiOp<'_>| multi_write_op(&multi_op).map(Forward::Write);
    match request {
        Request::Create { op, body } => single(MultiOp::Create {
            op: *op,
            body: body.clone(),
        }),
        Request::Delete { path, version } => single(MultiOp::Delete {
            path,
            version: *version,
        }),
        Request::SetData {
            path,
            data,
            version,
        } => single(MultiOp::SetData {
            path,
            data: *data,
            version: *version,
        }),
        Request::SetAcl { path, acl, version } => Some(Forward::Write(WriteOp::SetAcl {
            path: (*path).to_owned(),
            acl: acl.clone(),
            version: *version,
        })),
        Request::Multi(ops) => Some(Forward::Write(WriteOp::Multi(
            ops.iter().filter_map(multi_write_op).collect(),
        ))),
        Request::CloseSession => Some(Forward::Write(WriteOp::CloseSession)),
        Request::Sync { path } => Some(Forward::Sync((*path).to_owned())),
        _ => None,
    }
}

fn multi_write_op(multi_op: &MultiOp<'_>) -> Option<WriteOp> {
    Some(match multi_op {
        MultiOp::Create { op, body } => WriteOp::Create {
            path: body.path.to_owned(),
            data: body.data.map(<[u8]>::to_vec),
            acl: body.acl.clone(),
            flags: body.flags,
            ttl: body.ttl_ms,
            op: *op,
        },
        MultiOp::Delete { path, version } => WriteOp::Delete {
            path: (*path).to_owned(),
            version: *version,
        },
        MultiOp::SetData {
            path,
            data,
            version,
        } => WriteOp::SetData {
            path: (*path).to_owned(),
            data: data.map(<[u8]>::to_vec),
            version: *version,
        },
        MultiOp::Check { path, version } => WriteOp::Check {
            path: (*path).to_owned(),
            version: *version,
        },
        MultiOp::GetChildren { .. } | MultiOp::GetData { .. } => return None,
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

    #[test]
    fn a_request_is_its_head_then_the_record_as_sent() {
        // Learner.request: long sessionId, int cxid, int type, then the client's bytes; the
        // auth ids are not in the data (they go in authinfo).
        let record = vec![0, 0, 0, 2, b'/', b'a', 0xff, 0xff, 0xff, 0xff];
        let forwarded = Forwarded {
            session_id: 0x0102_0304_0506_0708,
            cxid: 9,
            op_code: op::DELETE,
            record: record.clone(),
            auth_ids: vec![Id::new("ip", "127.0.0.1")],
        };
        let mut expected = vec![1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 9, 0, 0, 0, 2];
        expected.extend_from_slice(&record);
        let data = forwarded.encode();
        assert_eq!(data, expected);
        let back = Forwarded::decode(&data, forwarded.auth_ids.clone()).unwrap();
        assert_eq!(back, forwarded);
        assert_eq!(
            back.body().unwrap(),
            ForwardedBody::Write(WriteOp::Delete {
                path: "/a".into(),
                version: -1
            })
        );
        for cut in 0..REQUEST_HEAD_BYTES {
            assert!(
                Forwarded::decode(&data[..cut], vec![]).is_err(),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn create_session_sync_and_close_session_records_are_zookeepers() {
        // createSession: the timeout as a 4-byte int; sync: SyncRequest; closeSession: none.
        let create = Forwarded::create_session(5, 30_000);
        assert_eq!(create.record, vec![0, 0, 0x75, 0x30]);
        let body = |f: &Forwarded| Forwarded::decode(&f.encode(), vec![]).unwrap().body();
        assert_eq!(
            body(&create),
            Ok(ForwardedBody::CreateSession { timeout_ms: 30_000 })
        );
        let sync = Forwarded::sync(5, 3, "/x", vec![]);
        assert_eq!(sync.record, vec![0, 0, 0, 2, b'/', b'x']);
        assert_eq!(body(&sync), Ok(ForwardedBody::Sync));
        let close = Forwarded {
            session_id: 5,
            cxid: 4,
            op_code: op::CLOSE_SESSION,
            record: Vec::new(),
            auth_ids: vec![],
        };
        assert_eq!(close.encode().len(), REQUEST_HEAD_BYTES);
        assert_eq!(
            body(&close),
            Ok(ForwardedBody::Write(WriteOp::CloseSession))
        );
    }

    #[test]
    fn damaged_or_unforwardable_records_are_errors() {
        // Trailing bytes, a cut record and a read request are refused, never a panic.
        let mut sync = Forwarded::sync(5, 3, "/x", vec![]);
        sync.record.push(0);
        assert!(sync.body().is_err());
        let mut create = Forwarded::create_session(5, 1);
        create.record.pop();
        assert!(create.body().is_err());
        let read = Forwarded {
            session_id: 5,
            cxid: 4,
            op_code: op::GET_DATA,
            record: vec![0, 0, 0, 1, b'/', 0],
            auth_ids: vec![],
        };
        assert_eq!(read.body(), Err(ProtoError::UnknownOp(op::GET_DATA)));
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
