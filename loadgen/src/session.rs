//! One client session's connection state, seen from the worker that owns it.
//!
//! A session is `Idle` (no connection; retry later), `Connecting` (TCP), `Handshaking`
//! (ConnectRequest sent), `Ready`, `Closing` (closeSession sent) or `Closed`. Replies come back
//! in request order (ZooKeeper's per-session FIFO), so outstanding requests are a queue and a
//! reply must match the oldest xid. Buffers are bounded: the outbox holds at most the session's
//! outstanding requests plus a ping and a close, the inbox at most one frame plus one read.

use crate::workload::OpKind;
use anyhow::{bail, Result};
use keel::proto::jute::Reader;
use keel::proto::records::ConnectRequest;
use mio::net::TcpStream;
use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Idle { retry_at_ns: u64 },
    Connecting { deadline_ns: u64 },
    Handshaking { deadline_ns: u64 },
    Ready,
    Closing { deadline_ns: u64 },
    Closed,
}

/// A request sent and not yet answered.
#[derive(Debug, Clone, Copy)]
pub struct InFlight {
    pub xid: i32,
    pub kind: OpKind,
    /// When it was meant to go out (open loop) or went out (closed loop): latency starts here.
    pub intended_ns: u64,
    pub sent_ns: u64,
}

pub struct Session {
    pub server_index: usize,
    pub stream: Option<TcpStream>,
    pub phase: Phase,
    pub session_id: i64,
    pub password: Vec<u8>,
    pub negotiated_timeout_ms: i32,
    pub last_zxid: i64,
    next_xid: i32,
    pub close_xid: i32,
    pub inflight: VecDeque<InFlight>,
    pub outstanding_max: usize,
    pub ping_sent_ns: Option<u64>,
    pub last_send_ns: u64,
    pub outbox: Vec<u8>,
    pub outbox_sent_bytes: usize,
    pub inbox: Vec<u8>,
    /// In the worker's queue of sessions that can take another request.
    pub queued: bool,
    /// In the worker's list of sessions with bytes to write.
    pub dirty: bool,
    pub failures_in_row: u32,
    /// Reached Ready at least once: a later handshake is a reconnect.
    pub ever_ready: bool,
    /// The generator had nothing to send (it waits for a watch or a peer).
    pub parked: bool,
    /// Closing on the generator's request, to reopen as a new session (churn).
    pub renewing: bool,
    /// When the current connection's TCP connect started.
    pub connect_started_ns: u64,
    /// When closeSession was sent.
    pub close_sent_ns: u64,
}

impl Session {
    pub fn new(server_index: usize, outstanding_max: usize) -> Session {
        assert!(outstanding_max > 0);
        Session {
            server_index,
            stream: None,
            phase: Phase::Idle { retry_at_ns: 0 },
            session_id: 0,
            password: vec![0; 16],
            negotiated_timeout_ms: 0,
            last_zxid: 0,
            next_xid: 0,
            close_xid: 0,
            inflight: VecDeque::with_capacity(outstanding_max),
            outstanding_max,
            ping_sent_ns: None,
            last_send_ns: 0,
            outbox: Vec::new(),
            outbox_sent_bytes: 0,
            inbox: Vec::new(),
            queued: false,
            dirty: false,
            failures_in_row: 0,
            ever_ready: false,
            parked: false,
            renewing: false,
            connect_started_ns: 0,
            close_sent_ns: 0,
        }
    }

    /// Forgets the session, so the next handshake asks for a new one.
    pub fn forget_session(&mut self) {
        self.session_id = 0;
        self.password = vec![0; 16];
        self.last_zxid = 0;
    }

    /// The next request xid: positive, so it never collides with the special negative ones.
    pub fn take_xid(&mut self) -> i32 {
        self.next_xid = if self.next_xid == i32::MAX {
            1
        } else {
            self.next_xid + 1
        };
        self.next_xid
    }

    pub fn has_capacity(&self) -> bool {
        self.phase == Phase::Ready && self.inflight.len() < self.outstanding_max
    }

    pub fn is_connecting(&self) -> bool {
        matches!(
            self.phase,
            Phase::Connecting { .. } | Phase::Handshaking { .. }
        )
    }

    /// Appends the ConnectRequest: a new session, or this one again after a lost connection.
    pub fn encode_handshake(&mut self, session_timeout_ms: i32) {
        assert!(
            self.outbox.is_empty(),
            "a handshake goes first on a new connection"
        );
        assert_eq!(self.outbox_sent_bytes, 0);
        ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: self.last_zxid,
            timeout_ms: session_timeout_ms,
            session_id: self.session_id,
            password: &self.password,
            read_only: Some(false),
        }
        .encode(&mut self.outbox);
    }

    /// Applies a ConnectResponse. Ok(false): the server says the session expired.
    ///
    /// # Errors
    /// The response does not decode.
    pub fn accept_handshake(&mut self, frame: &[u8]) -> Result<bool> {
        let mut r = Reader::new(frame);
        let _protocol_version = r.read_i32()?;
        let timeout_ms = r.read_i32()?;
        let session_id = r.read_i64()?;
        let password = r.read_buffer()?.unwrap_or(&[]);
        if timeout_ms <= 0 {
            self.forget_session();
            return Ok(false);
        }
        if session_id == 0 {
            bail!("handshake reply with session id 0 and timeout {timeout_ms} ms");
        }
        self.session_id = session_id;
        self.password = password.to_vec();
        self.negotiated_timeout_ms = timeout_ms;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel::proto::records::write_connect_response;

    #[test]
    fn xids_stay_positive_when_they_wrap() {
        // After i32::MAX the next xid is 1, never a special negative xid or 0.
        let mut session = Session::new(0, 4);
        session.next_xid = i32::MAX - 1;
        assert_eq!(session.take_xid(), i32::MAX);
        assert_eq!(session.take_xid(), 1);
    }

    #[test]
    fn handshake_reply_sets_the_session_or_reports_expiry() {
        // A normal reply stores id and password; a zero timeout means the session expired.
        let mut session = Session::new(0, 1);
        let mut out = Vec::new();
        write_connect_response(&mut out, 4000, 0x0100_0000_0000_0007, &[9; 16], Some(false));
        assert!(session.accept_handshake(&out[4..]).unwrap());
        assert_eq!(session.session_id, 0x0100_0000_0000_0007);
        assert_eq!(session.password, vec![9; 16]);
        assert_eq!(session.negotiated_timeout_ms, 4000);
        out.clear();
        write_connect_response(&mut out, 0, 0, &[0; 16], Some(false));
        assert!(!session.accept_handshake(&out[4..]).unwrap());
        assert_eq!(session.session_id, 0);
    }
}
