//! One client connection: handshake, frame loop, in-order replies, backpressure.

use super::{read, reply, Shard};
use crate::io::{spawn_local, Signal, TcpStream};
use crate::proto::jute::Writer;
use crate::proto::records::{self, split_frame, ConnectRequest, Request};
use crate::proto::{op, xid, ErrorCode, EventType, Id, KEEPER_STATE_SYNC_CONNECTED};
use crate::replica::Inbound;
use crate::tree::{ConnId, OpResult};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the ConnectRequest (or a four-letter word).
    Greeting,
    /// ConnectRequest sent to the replica core; the socket is not read meanwhile.
    Handshaking,
    Open,
    Closing,
}

/// A request whose reply is not written yet, in arrival order.
#[derive(Debug)]
pub enum Pending {
    /// A write or sync forwarded to the replica core. `sub_ops` are a multi's op codes.
    Write {
        xid: i32,
        op_code: i32,
        sub_ops: Vec<i32>,
        started: Instant,
    },
    /// A request held behind earlier ones: a read waiting for the session's pending write to
    /// commit, or any request behind such a read. Held writes are forwarded only when no held
    /// read precedes them, so a read never sees a write the session sent after it.
    Held {
        frame: Vec<u8>,
        is_write: bool,
        started: Instant,
    },
}

/// Mutable per-connection state.
#[derive(Debug)]
pub struct ConnState {
    pub phase: Phase,
    pub session_id: i64,
    pub timeout_ms: i32,
    pub read_only_byte: Option<bool>,
    pub auth_ids: Arc<[Id]>,
    pub out: Vec<u8>,
    pub queue: VecDeque<Pending>,
    pub sasl: Option<crate::auth::DigestMd5Server>,
    pub packets_received: u64,
    pub packets_sent: u64,
    pub last_op: &'static str,
    pub last_cxid: i32,
    pub last_zxid: i64,
    pub latency_us_min: u64,
    pub latency_us_max: u64,
    pub latency_us_sum: u64,
    pub latency_count: u64,
}

/// A client connection as the shard sees it.
pub struct Conn {
    pub id: ConnId,
    pub peer: SocketAddr,
    pub established: std::time::SystemTime,
    pub state: RefCell<ConnState>,
    /// Wakes the writer task.
    out_ready: Signal,
    /// Wakes the reader task: handshake done, queue drained, or closing.
    progress: Signal,
}

impl Conn {
    fn new(id: ConnId, peer: SocketAddr) -> Conn {
        let ip = Id::new("ip", &peer.ip().to_string());
        Conn {
            id,
            peer,
            established: std::time::SystemTime::now(),
            state: RefCell::new(ConnState {
                phase: Phase::Greeting,
                session_id: 0,
                timeout_ms: 0,
                read_only_byte: Some(false),
                auth_ids: Arc::from(vec![ip]),
                out: Vec::with_capacity(16 << 10),
                queue: VecDeque::new(),
                sasl: None,
                packets_received: 0,
                packets_sent: 0,
                last_op: "NA",
                last_cxid: 0,
                last_zxid: 0,
                latency_us_min: u64::MAX,
                latency_us_max: 0,
                latency_us_sum: 0,
                latency_count: 0,
            }),
            out_ready: Signal::new(),
            progress: Signal::new(),
        }
    }

    pub fn session_id(&self) -> i64 {
        self.state.borrow().session_id
    }

    pub fn is_closing(&self) -> bool {
        self.state.borrow().phase == Phase::Closing
    }

    /// Starts closing: unsent replies are still flushed, nothing more is read.
    pub fn close(&self) {
        self.state.borrow_mut().phase = Phase::Closing;
        self.out_ready.notify();
        self.progress.notify();
    }

    pub fn notify_watch(&self, event: EventType, path: &str) {
        let mut state = self.state.borrow_mut();
        if state.phase == Phase::Closing {
            return;
        }
        records::write_notification(
            &mut state.out,
            -1,
            event as i32,
            KEEPER_STATE_SYNC_CONNECTED,
            path,
        );
        state.packets_sent += 1;
        drop(state);
        self.out_ready.notify();
    }

    pub fn open_session(&self, session_id: i64, timeout_ms: i32, password: [u8; 16]) {
        let mut state = self.state.borrow_mut();
        if state.phase != Phase::Handshaking {
            return;
        }
        state.session_id = session_id;
        state.timeout_ms = timeout_ms;
        state.phase = Phase::Open;
        let read_only = state.read_only_byte;
        records::write_connect_response(
            &mut state.out,
            timeout_ms,
            session_id,
            &password,
            read_only,
        );
        drop(state);
        self.out_ready.notify();
        self.progress.notify();
    }

    /// Unknown session or wrong password: ZooKeeper answers with a zero session and closes.
    pub fn reject_session(&self) {
        let mut state = self.state.borrow_mut();
        let read_only = state.read_only_byte;
        records::write_connect_response(&mut state.out, 0, 0, &[0; 16], read_only);
        drop(state);
        self.close();
    }

    /// The reply for the write at the head of the queue has committed.
    pub fn complete_write(&self, shard: &Shard, reply_xid: i32, result: &OpResult) {
        let Some((op_code, sub_ops, started)) = self.pop_write(reply_xid) else {
            return;
        };
        let zxid = shard.applied_zxid.get();
        {
            let mut state = self.state.borrow_mut();
            reply::write_result(&mut state.out, reply_xid, zxid, op_code, &sub_ops, result);
            finish_request(&mut state, shard, started, zxid, Latency::Update);
        }
        if op_code == op::CLOSE_SESSION {
            self.close();
            return;
        }
        self.drain_deferred(shard);
    }

    pub fn complete_sync(&self, shard: &Shard, reply_xid: i32, path: &str) {
        let Some((_, _, started)) = self.pop_write(reply_xid) else {
            return;
        };
        let zxid = shard.applied_zxid.get();
        {
            let mut state = self.state.borrow_mut();
            let mut w = Writer::new(&mut state.out);
            let at = records::begin_reply(&mut w, reply_xid, zxid, 0);
            w.write_string(path);
            w.end_frame(at);
            finish_request(&mut state, shard, started, zxid, Latency::Read);
        }
        self.drain_deferred(shard);
    }

    fn pop_write(&self, reply_xid: i32) -> Option<(i32, Vec<i32>, Instant)> {
        let mut state = self.state.borrow_mut();
        match state.queue.pop_front() {
            Some(Pending::Write {
                xid,
                op_code,
                sub_ops,
                started,
            }) if xid == reply_xid => Some((op_code, sub_ops, started)),
            other => {
                // A reply that does not match the head of the queue is a bug in the ordering
                // machinery; the client would see "xid out of order", so drop the connection.
                tracing::error!(conn = self.id, reply_xid, head = ?other, "reply out of order");
                drop(state);
                self.close();
                None
            }
        }
    }

    /// Runs the held reads that no longer wait for a write, up to the next write. A held
    /// write at the head is left for the reader task to forward (that needs an await).
    pub(super) fn drain_deferred(&self, shard: &Shard) {
        loop {
            let held = {
                let mut state = self.state.borrow_mut();
                let read_is_next = matches!(
                    state.queue.front(),
                    Some(Pending::Held {
                        is_write: false,
                        ..
                    })
                );
                if !read_is_next {
                    break;
                }
                if shard.is_lagging() {
                    // A newer state was shown than this view holds: the reads wait for a
                    // view (`Shard::apply_batch` asks for one).
                    shard.lagging_conns.borrow_mut().push(self.id);
                    break;
                }
                state.queue.pop_front()
            };
            let Some(Pending::Held { frame, started, .. }) = held else {
                break;
            };
            if let Ok((header, request)) = Request::decode(&frame) {
                read::execute(shard, self, header, &request);
                let zxid = shard.view.borrow().last_zxid();
                finish_request(
                    &mut self.state.borrow_mut(),
                    shard,
                    started,
                    zxid,
                    Latency::Read,
                );
            }
        }
        self.out_ready.notify();
        self.progress.notify();
    }

    /// Takes the held write at the head of the held part of the queue, if no held read is
    /// ahead of it, and marks it forwarded.
    fn take_held_write(&self) -> Option<(Vec<u8>, Instant)> {
        let mut state = self.state.borrow_mut();
        let index = state
            .queue
            .iter()
            .position(|pending| matches!(pending, Pending::Held { .. }))?;
        let Some(Pending::Held { is_write: true, .. }) = state.queue.get(index) else {
            return None;
        };
        let Some(Pending::Held { frame, started, .. }) = state.queue.remove(index) else {
            return None;
        };
        Some((frame, started))
    }

    /// Queues a finished reply's bytes written by `write` and wakes the writer.
    pub fn reply_with(&self, write: impl FnOnce(&mut Vec<u8>)) {
        let mut state = self.state.borrow_mut();
        write(&mut state.out);
        state.packets_sent += 1;
        drop(state);
        self.out_ready.notify();
    }
}

/// Which of ZooKeeper's latency summaries a request counts in: `updatelatency` for writes
/// (transactions), `readlatency` for the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Latency {
    Read,
    Update,
}

fn finish_request(
    state: &mut ConnState,
    shard: &Shard,
    started: Instant,
    zxid: i64,
    kind: Latency,
) {
    let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    shard.record_latency(kind, latency_us);
    state.packets_sent += 1;
    state.last_zxid = zxid;
    state.latency_us_min = state.latency_us_min.min(latency_us);
    state.latency_us_max = state.latency_us_max.max(latency_us);
    state.latency_us_sum += latency_us;
    state.latency_count += 1;
    shard.stats.record_latency(latency_us);
    shard.stats.packets_sent.fetch_add(1, Relaxed);
    shard.stats.outstanding.fetch_sub(1, Relaxed);
}

/// Serves one accepted connection until it closes; never fails the shard.
pub async fn serve_connection(shard: Rc<Shard>, stream: TcpStream) {
    let Ok(peer) = stream.peer_addr() else {
        return;
    };
    if let Err(reason) = admit(&shard, peer) {
        tracing::warn!(%peer, reason, "connection refused");
        shard.stats.connection_rejected.fetch_add(1, Relaxed);
        return;
    }
    let _ = stream.set_nodelay(true);
    let conn = Rc::new(Conn::new(shard.allocate_conn_id(), peer));
    shard.conns.borrow_mut().insert(conn.id, conn.clone());
    shard.stats.connections.fetch_add(1, Relaxed);
    let (reader, writer) = futures_lite::io::split(stream);
    let writer_task = spawn_local(write_loop(conn.clone(), writer));
    if let Err(reason) = read_loop(&shard, &conn, reader).await {
        tracing::debug!(conn = conn.id, %peer, reason, "closing connection");
        shard.stats.connection_drop_count.fetch_add(1, Relaxed);
    }
    conn.close();
    writer_task.await;
    let pending = conn.state.borrow().queue.len();
    shard.stats.outstanding.fetch_sub(pending as i64, Relaxed);
    shard.drop_conn(&conn);
    shard.stats.connections.fetch_sub(1, Relaxed);
}

fn admit(shard: &Shard, peer: SocketAddr) -> Result<(), &'static str> {
    let limits = &shard.limits;
    if limits.connections_max > 0 && shard.conns.borrow().len() >= limits.connections_max {
        return Err("too many connections on this shard");
    }
    if limits.connections_per_ip_max > 0
        && shard.connections_from(peer.ip()) >= limits.connections_per_ip_max
    {
        return Err("too many connections from this address (maxClientCnxns)");
    }
    Ok(())
}

async fn write_loop(conn: Rc<Conn>, mut writer: futures_lite::io::WriteHalf<TcpStream>) {
    let mut spare = Vec::with_capacity(16 << 10);
    loop {
        conn.out_ready.wait().await;
        loop {
            std::mem::swap(&mut spare, &mut conn.state.borrow_mut().out);
            if spare.is_empty() {
                break;
            }
            if writer.write_all(&spare).await.is_err() {
                conn.close();
                return;
            }
            spare.clear();
            conn.progress.notify();
        }
        if conn.is_closing() {
            let _ = writer.flush().await;
            let _ = writer.close().await;
            return;
        }
    }
}

/// Reads frames until the peer goes away, the connection is closed, or input is bad.
async fn read_loop(
    shard: &Shard,
    conn: &Conn,
    mut reader: futures_lite::io::ReadHalf<TcpStream>,
) -> Result<(), String> {
    let frame_max = shard.limits.frame_bytes_max;
    let mut buf = vec![0u8; 64 << 10];
    let mut filled = 0usize;
    loop {
        forward_held_writes(shard, conn).await?;
        let consumed = process_frames(shard, conn, &buf[..filled], frame_max).await?;
        buf.copy_within(consumed..filled, 0);
        filled -= consumed;
        if conn.is_closing() {
            return Ok(());
        }
        if is_busy(shard, conn) {
            // Held writes may still need forwarding; every wake-up goes round the loop.
            conn.progress.wait().await;
            continue;
        }
        if filled == buf.len() {
            let grown = (buf.len() * 2).min(frame_max as usize + 4);
            if grown <= buf.len() {
                return Err("frame larger than the read buffer".into());
            }
            buf.resize(grown, 0);
        }
        let read = futures_lite::future::or(
            async { Some(reader.read(&mut buf[filled..]).await) },
            async {
                conn.progress.wait().await;
                None
            },
        )
        .await;
        match read {
            None => continue,
            Some(Ok(0)) => return Ok(()),
            Some(Ok(count)) => {
                filled += count;
                shard.stats.bytes_received.fetch_add(count as u64, Relaxed);
            }
            Some(Err(error)) => return Err(error.to_string()),
        }
    }
}

/// True while the handshake is in flight or the connection has too much outstanding: the
/// socket is not read then (backpressure).
fn is_busy(shard: &Shard, conn: &Conn) -> bool {
    let state = conn.state.borrow();
    let global_full = shard.stats.outstanding.load(Relaxed) >= shard.limits.global_outstanding_max;
    state.phase == Phase::Handshaking
        || state.queue.len() >= shard.limits.outstanding_max
        || state.out.len() >= shard.limits.out_bytes_max
        || (global_full && !state.queue.is_empty())
}

/// Handles every complete frame in `buf`; returns how many bytes were used. What must go to
/// the replica core is sent as one message per call (see `Inbound::Batch`), in frame order.
async fn process_frames(
    shard: &Shard,
    conn: &Conn,
    buf: &[u8],
    frame_max: u32,
) -> Result<usize, String> {
    let mut outbox = Vec::new();
    let result = decode_frames(shard, conn, buf, frame_max, &mut outbox).await;
    send_outbox(shard, &mut outbox).await?;
    result
}

/// Sends what `decode_frames` collected: one message, or one `Inbound::Batch` of several.
async fn send_outbox(shard: &Shard, outbox: &mut Vec<Inbound>) -> Result<(), String> {
    let message = match outbox.len() {
        0 => return Ok(()),
        1 => outbox.pop(),
        _ => Some(Inbound::Batch(std::mem::take(outbox))),
    };
    if let Some(message) = message {
        if shard.to_replica.send(message).await.is_err() {
            return Err("replica core is gone".into());
        }
    }
    Ok(())
}

/// `process_frames`'s loop: decodes, serves reads, and collects replica-core messages in
/// `outbox` (bounded by `outstanding_max` per connection and by the buffer's frames).
async fn decode_frames(
    shard: &Shard,
    conn: &Conn,
    buf: &[u8],
    frame_max: u32,
    outbox: &mut Vec<Inbound>,
) -> Result<usize, String> {
    let mut consumed = 0;
    loop {
        let phase = conn.state.borrow().phase;
        let rest = &buf[consumed..];
        match phase {
            Phase::Closing | Phase::Handshaking => return Ok(consumed),
            Phase::Greeting => {
                if let Some(command) = rest.get(..4).and_then(super::fourlw_command) {
                    conn.state.borrow_mut().packets_received += 1;
                    let text = crate::server::fourlw::run(command, shard);
                    conn.reply_with(|out| out.extend_from_slice(text.as_bytes()));
                    conn.close();
                    return Ok(buf.len());
                }
            }
            Phase::Open => {
                if conn.state.borrow().queue.len() >= shard.limits.outstanding_max {
                    return Ok(consumed);
                }
            }
        }
        let range = match split_frame(rest, frame_max) {
            Ok(Some(range)) => range,
            Ok(None) => return Ok(consumed),
            Err(error) => return Err(error.to_string()),
        };
        let payload = &rest[range.clone()];
        consumed += range.end;
        let forward = if phase == Phase::Greeting {
            Some(greet(shard, conn, payload)?)
        } else {
            handle_request(shard, conn, payload)?
        };
        outbox.extend(forward);
    }
}

fn greet(shard: &Shard, conn: &Conn, payload: &[u8]) -> Result<Inbound, String> {
    let connect = ConnectRequest::decode(payload).map_err(|e| format!("bad connect: {e}"))?;
    if shard
        .stats
        .not_serving
        .load(std::sync::atomic::Ordering::Relaxed)
    {
        // ZooKeeper closes the connection too ("ZooKeeperServer not running"); the client
        // tries its next server.
        return Err("not serving: this server has no quorum".to_owned());
    }
    // The newest state any shard has shown, which this server holds (committed) even when
    // this shard's view is older.
    let last_zxid = shard
        .exposed_zxid
        .load(std::sync::atomic::Ordering::Acquire);
    if connect.last_zxid_seen > last_zxid {
        return Err(format!(
            "client has seen zxid {:#x}, our last zxid is {:#x}",
            connect.last_zxid_seen, last_zxid
        ));
    }
    let mut password = [0u8; 16];
    if connect.password.len() == 16 {
        password.copy_from_slice(connect.password);
    }
    let mut state = conn.state.borrow_mut();
    state.phase = Phase::Handshaking;
    state.read_only_byte = connect.read_only.map(|_| false);
    state.packets_received += 1;
    Ok(Inbound::Connect {
        route: shard.route(conn.id),
        session_id: connect.session_id,
        password,
        timeout_ms: connect.timeout_ms,
    })
}

/// A RequestHeader's bytes (`int xid, int type`) ahead of a request's record.
const REQUEST_HEADER_BYTES: usize = 8;

/// Handles one request after the handshake; returns what must go to the replica core.
fn handle_request(shard: &Shard, conn: &Conn, payload: &[u8]) -> Result<Option<Inbound>, String> {
    let (header, request) = Request::decode(payload).map_err(|e| format!("bad request: {e}"))?;
    let session_id = {
        let mut state = conn.state.borrow_mut();
        state.packets_received += 1;
        state.last_cxid = header.xid;
        state.last_op = reply::op_name(header.op);
        state.session_id
    };
    shard.stats.packets_received.fetch_add(1, Relaxed);
    shard.touched.borrow_mut().insert(session_id);
    match &request {
        Request::Ping => {
            let zxid = shard.applied_zxid.get();
            conn.reply_with(|out| records::write_header_only(out, xid::PING, zxid, 0));
            return Ok(None);
        }
        Request::Auth { scheme, auth } => {
            read::authenticate(shard, conn, scheme, auth);
            return Ok(None);
        }
        Request::Unknown(code) => {
            let zxid = shard.applied_zxid.get();
            let err = ErrorCode::Unimplemented.code();
            conn.reply_with(|out| records::write_header_only(out, header.xid, zxid, err));
            conn.close();
            return Err(format!("unimplemented opcode {code}"));
        }
        _ => {}
    }
    shard.stats.outstanding.fetch_add(1, Relaxed);
    let started = Instant::now();
    if reply::to_replica(&request).is_none() {
        return Ok(run_or_defer(
            shard, conn, header, &request, payload, started,
        ));
    }
    if has_held(conn) {
        conn.state.borrow_mut().queue.push_back(Pending::Held {
            frame: payload.to_vec(),
            is_write: true,
            started,
        });
        return Ok(None);
    }
    Ok(forward_message(
        shard, conn, header, &request, payload, started,
    ))
}

fn run_or_defer(
    shard: &Shard,
    conn: &Conn,
    header: records::RequestHeader,
    request: &Request<'_>,
    payload: &[u8],
    started: Instant,
) -> Option<Inbound> {
    let must_wait = !conn.state.borrow().queue.is_empty();
    let lagging = shard.is_lagging();
    if must_wait || lagging {
        conn.state.borrow_mut().queue.push_back(Pending::Held {
            frame: payload.to_vec(),
            is_write: false,
            started,
        });
        if must_wait {
            // Served when what is ahead of it completes (`Conn::drain_deferred`).
            return None;
        }
        // The view is older than a state some shard has shown: wait for a newer one.
        shard.lagging_conns.borrow_mut().push(conn.id);
        return shard.ask_for_view().then_some(Inbound::WantView);
    }
    read::execute(shard, conn, header, request);
    let zxid = shard.view.borrow().last_zxid();
    finish_request(
        &mut conn.state.borrow_mut(),
        shard,
        started,
        zxid,
        Latency::Read,
    );
    conn.out_ready.notify();
    // Reads are being served here: the next batch brings a view, so that the next read
    // after it need not wait for one.
    shard.ask_for_view().then_some(Inbound::WantView)
}

fn has_held(conn: &Conn) -> bool {
    conn.state
        .borrow()
        .queue
        .iter()
        .any(|pending| matches!(pending, Pending::Held { .. }))
}

/// Forwards held writes that have reached the head of the held requests.
async fn forward_held_writes(shard: &Shard, conn: &Conn) -> Result<(), String> {
    while let Some((frame, started)) = conn.take_held_write() {
        let (header, request) = Request::decode(&frame).map_err(|e| format!("bad request: {e}"))?;
        let message = forward_message(shard, conn, header, &request, &frame, started)
            .ok_or("held request is not a write")?;
        if shard.to_replica.send(message).await.is_err() {
            return Err("replica core is gone".into());
        }
    }
    Ok(())
}

/// Builds the replica-core message for a write or sync and queues its pending reply, in
/// front of any held requests. `payload` is the request as the client sent it (header and
/// record): in an ensemble a learner forwards the record to its leader as it is.
fn forward_message(
    shard: &Shard,
    conn: &Conn,
    header: records::RequestHeader,
    request: &Request<'_>,
    payload: &[u8],
    started: Instant,
) -> Option<Inbound> {
    let forward = reply::to_replica(request)?;
    let mut state = conn.state.borrow_mut();
    let session_id = state.session_id;
    let message = match forward {
        reply::Forward::Sync(path) => Inbound::Sync {
            route: shard.route(conn.id),
            session_id,
            xid: header.xid,
            path,
            auth_ids: state.auth_ids.clone(),
        },
        reply::Forward::Write(write_op) => Inbound::Write {
            route: shard.route(conn.id),
            session_id,
            xid: header.xid,
            op_code: header.op,
            op: write_op,
            auth_ids: state.auth_ids.clone(),
            record: shard
                .config
                .is_quorum()
                .then(|| payload.get(REQUEST_HEADER_BYTES..).unwrap_or(&[]).to_vec()),
        },
    };
    let held_at = state
        .queue
        .iter()
        .position(|pending| matches!(pending, Pending::Held { .. }))
        .unwrap_or(state.queue.len());
    state.queue.insert(
        held_at,
        Pending::Write {
            xid: header.xid,
            op_code: header.op,
            sub_ops: reply::sub_op_codes(request),
            started,
        },
    );
    Some(message)
}
