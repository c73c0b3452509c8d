//! A raw ZooKeeper-protocol client for the integration tests: frames built with the
//! project's codec, every assertion on the bytes that come back.
#![allow(dead_code)]

use keel::proto::jute::{Reader, Writer};
use keel::proto::records::{encode, ConnectRequest};
use keel::proto::{op, open_acl_unsafe};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

pub struct Client {
    pub stream: TcpStream,
    pub session_id: i64,
    pub xid: i32,
    /// The negotiated session timeout of a new session.
    pub timeout_ms: i32,
}

pub fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let mut payload = vec![0u8; i32::from_be_bytes(len) as usize];
    stream.read_exact(&mut payload)?;
    Ok(payload)
}

impl Client {
    pub fn connect_to(addr: SocketAddr) -> Client {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut out = Vec::new();
        ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 0,
            timeout_ms: 30_000,
            session_id: 0,
            password: &[0; 16],
            read_only: Some(false),
        }
        .encode(&mut out);
        stream.write_all(&out).expect("send connect");
        let reply = read_frame(&mut stream).expect("connect response");
        assert_eq!(reply.len(), 37, "ConnectResponse with the readOnly byte");
        let mut r = Reader::new(&reply);
        assert_eq!(r.read_i32().unwrap(), 0);
        let timeout_ms = r.read_i32().unwrap();
        assert!(timeout_ms > 0, "a new session has a negotiated timeout");
        let session_id = r.read_i64().unwrap();
        assert_eq!(session_id >> 56, 1, "standalone server id in the top byte");
        let password = r.read_buffer().unwrap().unwrap();
        assert_eq!(password, keel::session::session_password(session_id));
        assert!(!r.read_bool().unwrap());
        Client {
            stream,
            session_id,
            xid: 0,
            timeout_ms,
        }
    }

    /// Reconnects to an existing session with its id and password.
    pub fn resume(addr: SocketAddr, session_id: i64) -> Client {
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut out = Vec::new();
        let password = keel::session::session_password(session_id);
        ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 0,
            timeout_ms: 4000,
            session_id,
            password: &password,
            read_only: Some(false),
        }
        .encode(&mut out);
        stream.write_all(&out).expect("send connect");
        let reply = read_frame(&mut stream).expect("connect response");
        let mut r = Reader::new(&reply);
        r.read_i32().expect("protocol version");
        r.read_i32().expect("timeout");
        let resumed_id = r.read_i64().expect("session id");
        Client {
            stream,
            session_id: resumed_id,
            xid: 0,
            timeout_ms: 0,
        }
    }

    pub fn send(&mut self, code: i32, body: impl FnOnce(&mut Writer<'_>)) -> i32 {
        self.xid += 1;
        let mut out = Vec::new();
        encode::request(&mut out, self.xid, code, body);
        self.stream.write_all(&out).expect("send");
        self.xid
    }

    /// Reads one reply: (xid, zxid, err, body).
    pub fn recv(&mut self) -> (i32, i64, i32, Vec<u8>) {
        let frame = read_frame(&mut self.stream).expect("reply");
        let mut r = Reader::new(&frame);
        let xid = r.read_i32().unwrap();
        let zxid = r.read_i64().unwrap();
        let err = r.read_i32().unwrap();
        (xid, zxid, err, frame[16..].to_vec())
    }

    pub fn create(&mut self, path: &str, data: &[u8], flags: i32) -> (i32, Vec<u8>) {
        let xid = self.send(op::CREATE2, |w| {
            encode::create(w, path, data, &open_acl_unsafe(), flags)
        });
        let (reply_xid, _, err, body) = self.recv();
        assert_eq!(reply_xid, xid);
        (err, body)
    }
}
