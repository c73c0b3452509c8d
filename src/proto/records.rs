//! Client requests and replies: decoding borrows from the frame, encoding appends to the
//! connection's write buffer.

use super::data::{Acl, Stat};
use super::jute::{Reader, Writer};
use super::op_code::op;
use super::ProtoError;

/// `ConnectRequest`; `read_only` is None for clients (≤3.3) that omit the trailing byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectRequest<'a> {
    pub protocol_version: i32,
    pub last_zxid_seen: i64,
    pub timeout_ms: i32,
    pub session_id: i64,
    pub password: &'a [u8],
    pub read_only: Option<bool>,
}

impl<'a> ConnectRequest<'a> {
    pub fn decode(payload: &'a [u8]) -> Result<ConnectRequest<'a>, ProtoError> {
        let mut r = Reader::new(payload);
        let protocol_version = r.read_i32()?;
        let last_zxid_seen = r.read_i64()?;
        let timeout_ms = r.read_i32()?;
        let session_id = r.read_i64()?;
        let password = r.read_buffer()?.unwrap_or(&[]);
        let read_only = if r.is_empty() {
            None
        } else {
            Some(r.read_bool()?)
        };
        Ok(ConnectRequest {
            protocol_version,
            last_zxid_seen,
            timeout_ms,
            session_id,
            password,
            read_only,
        })
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut w = Writer::new(out);
        let at = w.begin_frame();
        w.write_i32(self.protocol_version);
        w.write_i64(self.last_zxid_seen);
        w.write_i32(self.timeout_ms);
        w.write_i64(self.session_id);
        w.write_buffer(Some(self.password));
        if let Some(read_only) = self.read_only {
            w.write_bool(read_only);
        }
        w.end_frame(at);
    }
}

/// `ConnectResponse`, framed. `read_only` None omits the byte for old clients.
pub fn write_connect_response(
    out: &mut Vec<u8>,
    timeout_ms: i32,
    session_id: i64,
    password: &[u8],
    read_only: Option<bool>,
) {
    let mut w = Writer::new(out);
    let at = w.begin_frame();
    w.write_i32(0);
    w.write_i32(timeout_ms);
    w.write_i64(session_id);
    w.write_buffer(Some(password));
    if let Some(read_only) = read_only {
        w.write_bool(read_only);
    }
    w.end_frame(at);
}

/// `RequestHeader`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader {
    pub xid: i32,
    pub op: i32,
}

/// The body of `CreateRequest` / `CreateTTLRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateBody<'a> {
    pub path: &'a str,
    pub data: Option<&'a [u8]>,
    pub acl: Vec<Acl>,
    pub flags: i32,
    /// -1 unless the op is createTTL.
    pub ttl_ms: i64,
}

/// An operation inside multi or multiRead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MultiOp<'a> {
    Create {
        op: i32,
        body: CreateBody<'a>,
    },
    Delete {
        path: &'a str,
        version: i32,
    },
    SetData {
        path: &'a str,
        data: Option<&'a [u8]>,
        version: i32,
    },
    Check {
        path: &'a str,
        version: i32,
    },
    GetChildren {
        path: &'a str,
    },
    GetData {
        path: &'a str,
    },
}

impl MultiOp<'_> {
    pub fn is_read(&self) -> bool {
        matches!(self, MultiOp::GetChildren { .. } | MultiOp::GetData { .. })
    }
}

/// Every client request a server accepts after the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    Create {
        op: i32,
        body: CreateBody<'a>,
    },
    Delete {
        path: &'a str,
        version: i32,
    },
    Exists {
        path: &'a str,
        watch: bool,
    },
    GetData {
        path: &'a str,
        watch: bool,
    },
    SetData {
        path: &'a str,
        data: Option<&'a [u8]>,
        version: i32,
    },
    GetAcl {
        path: &'a str,
    },
    SetAcl {
        path: &'a str,
        acl: Vec<Acl>,
        version: i32,
    },
    GetChildren {
        path: &'a str,
        watch: bool,
    },
    GetChildren2 {
        path: &'a str,
        watch: bool,
    },
    Sync {
        path: &'a str,
    },
    Ping,
    Multi(Vec<MultiOp<'a>>),
    MultiRead(Vec<MultiOp<'a>>),
    Reconfig,
    CheckWatches {
        path: &'a str,
        watcher_type: i32,
    },
    RemoveWatches {
        path: &'a str,
        watcher_type: i32,
    },
    Auth {
        scheme: &'a str,
        auth: &'a [u8],
    },
    SetWatches(SetWatches<'a>),
    Sasl {
        token: &'a [u8],
    },
    GetEphemerals {
        prefix: &'a str,
    },
    GetAllChildrenNumber {
        path: &'a str,
    },
    AddWatch {
        path: &'a str,
        mode: i32,
    },
    WhoAmI,
    CloseSession,
    /// An opcode we do not serve: answered with UNIMPLEMENTED, then the connection closes.
    Unknown(i32),
}

/// `SetWatches` (101) and `SetWatches2` (105); the persistent lists are empty for 101.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SetWatches<'a> {
    pub relative_zxid: i64,
    pub data: Vec<&'a str>,
    pub exist: Vec<&'a str>,
    pub child: Vec<&'a str>,
    pub persistent: Vec<&'a str>,
    pub persistent_recursive: Vec<&'a str>,
}

impl<'a> Request<'a> {
    /// Decodes one request frame's payload (header + body).
    ///
    /// # Errors
    /// Any malformed record; the caller closes the connection.
    pub fn decode(payload: &'a [u8]) -> Result<(RequestHeader, Request<'a>), ProtoError> {
        let mut r = Reader::new(payload);
        let header = RequestHeader {
            xid: r.read_i32()?,
            op: r.read_i32()?,
        };
        let request = Self::decode_body(header.op, &mut r)?;
        Ok((header, request))
    }

    /// Decodes a request record without its header (`code` says which): what a learner
    /// forwards in a REQUEST after `sessionId, cxid, type`.
    ///
    /// # Errors
    /// Any malformed record, or bytes after it.
    pub fn decode_record(code: i32, record: &'a [u8]) -> Result<Request<'a>, ProtoError> {
        let mut r = Reader::new(record);
        let request = Self::decode_body(code, &mut r)?;
        if !r.is_empty() {
            return Err(ProtoError::Trailing(r.remaining()));
        }
        Ok(request)
    }

    fn decode_body(code: i32, r: &mut Reader<'a>) -> Result<Request<'a>, ProtoError> {
        Ok(match code {
            op::CREATE
            | op::CREATE2
            | op::CREATE_CONTAINER
            | op::CREATE_TTL
            | op::DELETE
            | op::SET_DATA => match read_write_body(code, r)? {
                MultiOp::Create { op, body } => Request::Create { op, body },
                MultiOp::Delete { path, version } => Request::Delete { path, version },
                MultiOp::SetData {
                    path,
                    data,
                    version,
                } => Request::SetData {
                    path,
                    data,
                    version,
                },
                _ => Request::Unknown(code),
            },
            op::EXISTS => Request::Exists {
                path: r.read_string()?,
                watch: r.read_bool()?,
            },
            op::GET_DATA => Request::GetData {
                path: r.read_string()?,
                watch: r.read_bool()?,
            },
            op::GET_ACL => Request::GetAcl {
                path: r.read_string()?,
            },
            op::SET_ACL => Request::SetAcl {
                path: r.read_string()?,
                acl: Acl::read_vec(r)?,
                version: r.read_i32()?,
            },
            op::GET_CHILDREN => Request::GetChildren {
                path: r.read_string()?,
                watch: r.read_bool()?,
            },
            op::GET_CHILDREN2 => Request::GetChildren2 {
                path: r.read_string()?,
                watch: r.read_bool()?,
            },
            op::SYNC => Request::Sync {
                path: r.read_string()?,
            },
            op::PING => Request::Ping,
            op::MULTI => Request::Multi(read_multi(r, false)?),
            op::MULTI_READ => Request::MultiRead(read_multi(r, true)?),
            op::RECONFIG => Request::Reconfig,
            op::CHECK_WATCHES => Request::CheckWatches {
                path: r.read_string()?,
                watcher_type: r.read_i32()?,
            },
            op::REMOVE_WATCHES => Request::RemoveWatches {
                path: r.read_string()?,
                watcher_type: r.read_i32()?,
            },
            op::AUTH => {
                let _type = r.read_i32()?;
                Request::Auth {
                    scheme: r.read_string()?,
                    auth: r.read_buffer()?.unwrap_or(&[]),
                }
            }
            op::SET_WATCHES | op::SET_WATCHES2 => {
                Request::SetWatches(read_set_watches(r, code == op::SET_WATCHES2)?)
            }
            op::SASL => Request::Sasl {
                token: r.read_buffer()?.unwrap_or(&[]),
            },
            op::GET_EPHEMERALS => Request::GetEphemerals {
                prefix: r.read_string()?,
            },
            op::GET_ALL_CHILDREN_NUMBER => Request::GetAllChildrenNumber {
                path: r.read_string()?,
            },
            op::ADD_WATCH => Request::AddWatch {
                path: r.read_string()?,
                mode: r.read_i32()?,
            },
            op::WHO_AM_I => Request::WhoAmI,
            op::CLOSE_SESSION => Request::CloseSession,
            other => Request::Unknown(other),
        })
    }

    /// True for requests that change state and so go through the replica core.
    pub fn is_write(&self) -> bool {
        matches!(
            self,
            Request::Create { .. }
                | Request::Delete { .. }
                | Request::SetData { .. }
                | Request::SetAcl { .. }
                | Request::Multi(_)
                | Request::CloseSession
        )
    }
}

fn read_create<'a>(r: &mut Reader<'a>, with_ttl: bool) -> Result<CreateBody<'a>, ProtoError> {
    let path = r.read_string()?;
    let data = r.read_buffer()?;
    let acl = Acl::read_vec(r)?;
    let flags = r.read_i32()?;
    let ttl_ms = if with_ttl { r.read_i64()? } else { -1 };
    Ok(CreateBody {
        path,
        data,
        acl,
        flags,
        ttl_ms,
    })
}

/// Reads the body of a write that may stand alone or inside a multi.
fn read_write_body<'a>(code: i32, r: &mut Reader<'a>) -> Result<MultiOp<'a>, ProtoError> {
    Ok(match code {
        op::CREATE | op::CREATE2 | op::CREATE_CONTAINER | op::CREATE_TTL => MultiOp::Create {
            op: code,
            body: read_create(r, code == op::CREATE_TTL)?,
        },
        op::DELETE => MultiOp::Delete {
            path: r.read_string()?,
            version: r.read_i32()?,
        },
        op::SET_DATA => MultiOp::SetData {
            path: r.read_string()?,
            data: r.read_buffer()?,
            version: r.read_i32()?,
        },
        op::CHECK => MultiOp::Check {
            path: r.read_string()?,
            version: r.read_i32()?,
        },
        _ => return Err(ProtoError::BadMulti("unknown op in multi")),
    })
}

/// Reads `MultiOperationRecord`: `MultiHeader{type, done, err}` + body, until `done`.
fn read_multi<'a>(r: &mut Reader<'a>, read_only: bool) -> Result<Vec<MultiOp<'a>>, ProtoError> {
    let mut ops = Vec::new();
    loop {
        let code = r.read_i32()?;
        let done = r.read_bool()?;
        let _err = r.read_i32()?;
        if done {
            break;
        }
        let multi_op = match code {
            op::GET_CHILDREN => {
                let path = r.read_string()?;
                let _watch = r.read_bool()?;
                MultiOp::GetChildren { path }
            }
            op::GET_DATA => {
                let path = r.read_string()?;
                let _watch = r.read_bool()?;
                MultiOp::GetData { path }
            }
            _ => read_write_body(code, r)?,
        };
        if multi_op.is_read() != read_only {
            return Err(ProtoError::BadMulti("Mixing different kind of ops"));
        }
        ops.push(multi_op);
    }
    Ok(ops)
}

fn read_set_watches<'a>(r: &mut Reader<'a>, version2: bool) -> Result<SetWatches<'a>, ProtoError> {
    let mut set = SetWatches {
        relative_zxid: r.read_i64()?,
        data: r.read_string_vec()?,
        exist: r.read_string_vec()?,
        child: r.read_string_vec()?,
        ..SetWatches::default()
    };
    if version2 {
        set.persistent = r.read_string_vec()?;
        set.persistent_recursive = r.read_string_vec()?;
    }
    Ok(set)
}

/// Starts a framed reply: length placeholder + `ReplyHeader`. Returns the frame start for
/// `Writer::end_frame`.
pub fn begin_reply(w: &mut Writer<'_>, xid: i32, zxid: i64, err: i32) -> usize {
    let at = w.begin_frame();
    w.write_i32(xid);
    w.write_i64(zxid);
    w.write_i32(err);
    at
}

/// A whole reply that has no body (or an error reply).
pub fn write_header_only(out: &mut Vec<u8>, xid: i32, zxid: i64, err: i32) {
    let mut w = Writer::new(out);
    let at = begin_reply(&mut w, xid, zxid, err);
    w.end_frame(at);
}

/// A watch notification frame: `ReplyHeader{-1, zxid, 0}` + `WatcherEvent`.
pub fn write_notification(out: &mut Vec<u8>, zxid: i64, event_type: i32, state: i32, path: &str) {
    let mut w = Writer::new(out);
    let at = begin_reply(&mut w, super::xid::NOTIFICATION, zxid, 0);
    w.write_i32(event_type);
    w.write_i32(state);
    w.write_string(path);
    w.end_frame(at);
}

/// `GetDataResponse{data, stat}` body.
pub fn write_data_stat(w: &mut Writer<'_>, data: Option<&[u8]>, stat: &Stat) {
    w.write_buffer(data);
    stat.write(w);
}

/// Encodes the request side, for clients of our own (loadgen, tests).
pub mod encode {
    use super::*;

    /// Frames `RequestHeader` + whatever `body` writes.
    pub fn request(out: &mut Vec<u8>, xid: i32, code: i32, body: impl FnOnce(&mut Writer<'_>)) {
        let mut w = Writer::new(out);
        let at = w.begin_frame();
        w.write_i32(xid);
        w.write_i32(code);
        body(&mut w);
        w.end_frame(at);
    }

    pub fn path_watch(w: &mut Writer<'_>, path: &str, watch: bool) {
        w.write_string(path);
        w.write_bool(watch);
    }

    pub fn create(w: &mut Writer<'_>, path: &str, data: &[u8], acl: &[Acl], flags: i32) {
        w.write_string(path);
        w.write_buffer(Some(data));
        Acl::write_vec(acl, w);
        w.write_i32(flags);
    }

    pub fn set_data(w: &mut Writer<'_>, path: &str, data: &[u8], version: i32) {
        w.write_string(path);
        w.write_buffer(Some(data));
        w.write_i32(version);
    }

    pub fn path_version(w: &mut Writer<'_>, path: &str, version: i32) {
        w.write_string(path);
        w.write_i32(version);
    }

    /// One `MultiHeader`.
    pub fn multi_header(w: &mut Writer<'_>, code: i32, done: bool, err: i32) {
        w.write_i32(code);
        w.write_bool(done);
        w.write_i32(err);
    }
}

/// Splits a frame off the front of `buf`: Ok(None) when more bytes are needed, otherwise the
/// payload's range. The length is checked against `max_bytes` as soon as its 4 bytes arrive.
///
/// # Errors
/// A negative length or one above `max_bytes`.
pub fn split_frame(
    buf: &[u8],
    max_bytes: u32,
) -> Result<Option<std::ops::Range<usize>>, ProtoError> {
    let Some(prefix) = buf.get(..4) else {
        return Ok(None);
    };
    let len = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    if len < 0 || i64::from(len) > i64::from(max_bytes) {
        return Err(ProtoError::FrameTooLarge {
            len: i64::from(len),
            max: max_bytes,
        });
    }
    let end = 4 + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some(4..end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{op, open_acl_unsafe};
    use proptest::prelude::*;

    fn framed(code: i32, body: impl FnOnce(&mut Writer<'_>)) -> Vec<u8> {
        let mut out = Vec::new();
        encode::request(&mut out, 7, code, body);
        out
    }

    fn sample_requests() -> Vec<Vec<u8>> {
        let acl = open_acl_unsafe();
        vec![
            framed(op::CREATE2, |w| encode::create(w, "/a/b", b"data", &acl, 3)),
            framed(op::SET_DATA, |w| encode::set_data(w, "/a", b"", 4)),
            framed(op::GET_DATA, |w| encode::path_watch(w, "/a", true)),
            framed(op::DELETE, |w| encode::path_version(w, "/a", -1)),
            framed(op::MULTI, |w| {
                encode::multi_header(w, op::CREATE, false, -1);
                encode::create(w, "/m", b"x", &acl, 0);
                encode::multi_header(w, op::CHECK, false, -1);
                encode::path_version(w, "/m", 0);
                encode::multi_header(w, -1, true, -1);
            }),
            framed(op::SET_WATCHES2, |w| {
                w.write_i64(5);
                for _ in 0..5 {
                    w.write_string_vec(&["/a", "/b"]);
                }
            }),
        ]
    }

    #[test]
    fn create_round_trips() {
        // A create2 request encoded by our client helpers decodes to the same fields.
        let frame = &sample_requests()[0];
        let range = split_frame(frame, 0xfffff).unwrap().unwrap();
        let (header, request) = Request::decode(&frame[range]).unwrap();
        assert_eq!(
            header,
            RequestHeader {
                xid: 7,
                op: op::CREATE2
            }
        );
        let Request::Create { op: code, body } = request else {
            panic!("not a create: {request:?}");
        };
        assert_eq!(code, op::CREATE2);
        assert_eq!(body.path, "/a/b");
        assert_eq!(body.data, Some(&b"data"[..]));
        assert_eq!(body.acl, open_acl_unsafe());
        assert_eq!((body.flags, body.ttl_ms), (3, -1));
    }

    #[test]
    fn multi_mixing_reads_and_writes_is_rejected() {
        // A multi that carries a getData is refused, as ZooKeeper refuses mixed kinds.
        let frame = framed(op::MULTI, |w| {
            encode::multi_header(w, op::GET_DATA, false, -1);
            encode::path_watch(w, "/a", false);
            encode::multi_header(w, -1, true, -1);
        });
        assert!(Request::decode(&frame[4..]).is_err());
    }

    #[test]
    fn every_truncation_of_a_valid_request_is_an_error() {
        // Cutting any valid request short gives an error, never a panic or a bogus success.
        for frame in sample_requests() {
            let payload = &frame[4..];
            assert!(Request::decode(payload).is_ok());
            for cut in 0..payload.len() {
                assert!(Request::decode(&payload[..cut]).is_err(), "cut at {cut}");
            }
        }
    }

    #[test]
    fn oversized_and_negative_lengths_are_refused_early() {
        // The length prefix is checked as soon as its four bytes arrive.
        assert!(split_frame(&0x10_0000i32.to_be_bytes(), 0xfffff).is_err());
        assert!(split_frame(&(-1i32).to_be_bytes(), 0xfffff).is_err());
        assert_eq!(split_frame(&[0, 0, 0], 0xfffff), Ok(None));
        assert_eq!(split_frame(&[0, 0, 0, 2, 1], 0xfffff), Ok(None));
        assert_eq!(split_frame(&[0, 0, 0, 1, 9], 0xfffff), Ok(Some(4..5)));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            // Arbitrary bytes decode to a request or an error; nothing panics.
            let _ = Request::decode(&bytes);
            let _ = ConnectRequest::decode(&bytes);
            let _ = split_frame(&bytes, 0xfffff);
        }

        #[test]
        fn mutated_requests_never_panic(index in 0usize..6, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
            // Valid requests with random bytes overwritten decode or fail cleanly.
            let mut frame = sample_requests()[index].clone();
            for (at, value) in flips {
                let at = 4 + at % (frame.len() - 4);
                frame[at] = value;
            }
            let _ = Request::decode(&frame[4..]);
        }

        #[test]
        fn connect_request_round_trips(session_id in any::<i64>(), zxid in any::<i64>(), timeout_ms in any::<i32>(), read_only in proptest::option::of(any::<bool>())) {
            // A ConnectRequest reads back equal, with or without the trailing readOnly byte.
            let password = [9u8; 16];
            let request = ConnectRequest { protocol_version: 0, last_zxid_seen: zxid, timeout_ms, session_id, password: &password, read_only };
            let mut out = Vec::new();
            request.encode(&mut out);
            prop_assert_eq!(ConnectRequest::decode(&out[4..]).unwrap(), request);
        }
    }
}
