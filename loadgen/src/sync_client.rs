//! A blocking client for setup and teardown: one connection, pipelined in fixed windows, and
//! every read and write bounded by the run's deadline.

use anyhow::{anyhow, bail, Context, Result};
use keel::proto::jute::Reader;
use keel::proto::records::{encode, split_frame, ConnectRequest};
use keel::proto::{op, open_acl_unsafe, xid as special_xid, ErrorCode};
use std::collections::BTreeMap;
use std::io::{BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Requests in flight at once during setup and teardown.
const WINDOW_REQUESTS_MAX: u64 = 256;
/// The largest window `set_window` takes.
pub const WINDOW_REQUESTS_SET_MAX: u64 = 4096;
/// ZooKeeper's default `jute.maxbuffer`, plus the frame's header room.
pub const FRAME_BYTES_MAX: u32 = 0xfffff + 1024;

pub struct SyncClient {
    /// Buffered for reads (replies are small); writes go to the socket underneath.
    stream: BufReader<TcpStream>,
    server: SocketAddr,
    xid: i32,
    io_timeout: Duration,
    deadline: Instant,
    /// Requests sent per window of `pipeline`.
    window: u64,
}

/// The outcome of a pipelined batch: how many succeeded and which error codes the rest got.
#[derive(Debug, Default)]
pub struct BatchResult {
    pub ok_count: u64,
    pub failed_by_code: BTreeMap<i32, u64>,
    pub first_failure: Option<(u64, i32)>,
}

impl BatchResult {
    /// # Errors
    /// Any request failed.
    pub fn fail_on_any(&self, what: &str) -> Result<()> {
        self.fail_on_any_but(ErrorCode::Ok, what)
    }

    /// # Errors
    /// A request failed with a code other than `allowed`.
    pub fn fail_on_any_but(&self, allowed: ErrorCode, what: &str) -> Result<()> {
        let bad: u64 = self
            .failed_by_code
            .iter()
            .filter(|(code, _)| **code != allowed.code())
            .map(|(_, count)| count)
            .sum();
        if bad == 0 {
            return Ok(());
        }
        let codes: Vec<String> = self
            .failed_by_code
            .iter()
            .map(|(code, count)| format!("{:?}×{count}", ErrorCode::from_code(*code)))
            .collect();
        bail!("{what}: {bad} requests failed ({})", codes.join(", "))
    }
}

impl SyncClient {
    /// Connects to the first server in `servers` that completes a handshake.
    ///
    /// # Errors
    /// No server accepted a session before its timeout; the message lists each server's error.
    pub fn connect(
        servers: &[SocketAddr],
        session_timeout_ms: i32,
        io_timeout: Duration,
        deadline: Instant,
    ) -> Result<SyncClient> {
        let mut failures = Vec::new();
        for &server in servers {
            match SyncClient::connect_one(server, session_timeout_ms, io_timeout, deadline) {
                Ok(client) => return Ok(client),
                Err(error) => failures.push(format!("{server}: {error:#}")),
            }
        }
        bail!(
            "cannot open a session on any server: {}",
            failures.join("; ")
        )
    }

    fn connect_one(
        server: SocketAddr,
        session_timeout_ms: i32,
        io_timeout: Duration,
        deadline: Instant,
    ) -> Result<SyncClient> {
        let connect_timeout = remaining(deadline)?.min(io_timeout);
        let stream = TcpStream::connect_timeout(&server, connect_timeout)?;
        stream.set_nodelay(true)?;
        let mut client = SyncClient {
            stream: BufReader::with_capacity(64 * 1024, stream),
            server,
            xid: 0,
            io_timeout,
            deadline,
            window: WINDOW_REQUESTS_MAX,
        };
        let mut out = Vec::new();
        ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 0,
            timeout_ms: session_timeout_ms,
            session_id: 0,
            password: &[0; 16],
            read_only: Some(false),
        }
        .encode(&mut out);
        client.write_all(&out)?;
        let reply = client
            .read_frame()
            .context("waiting for the handshake reply")?;
        let mut r = Reader::new(&reply);
        let _protocol_version = r.read_i32()?;
        let timeout_ms = r.read_i32()?;
        if timeout_ms <= 0 {
            bail!("the server refused the session (negotiated timeout {timeout_ms} ms)");
        }
        Ok(client)
    }

    /// The bound on each later exchange (connect used the one given to `connect`).
    pub fn set_io_timeout(&mut self, io_timeout: Duration) {
        assert!(!io_timeout.is_zero());
        self.io_timeout = io_timeout;
    }

    /// Requests `pipeline` sends before it waits for their replies, 1 to 4096 [default: 256].
    pub fn set_window(&mut self, window: u64) {
        assert!((1..=WINDOW_REQUESTS_SET_MAX).contains(&window));
        self.window = window;
    }

    pub fn server(&self) -> SocketAddr {
        self.server
    }

    /// Sends `count` requests, at most a window (`set_window`) at a time; `encode(index, xid, out)` appends
    /// request `index`. Replies must come back in order, as ZooKeeper guarantees per session.
    ///
    /// # Errors
    /// The connection failed, a reply did not arrive in time, or `encode` failed.
    pub fn pipeline(
        &mut self,
        count: u64,
        encode: impl FnMut(u64, i32, &mut Vec<u8>) -> Result<()>,
    ) -> Result<BatchResult> {
        let mut result = BatchResult::default();
        self.pipeline_each(count, encode, |index, err| result.record(index, err))?;
        Ok(result)
    }

    /// As `pipeline`, calling `on_reply(index, err)` for each reply in order.
    fn pipeline_each(
        &mut self,
        count: u64,
        mut encode: impl FnMut(u64, i32, &mut Vec<u8>) -> Result<()>,
        mut on_reply: impl FnMut(u64, i32),
    ) -> Result<()> {
        let mut out = Vec::new();
        let mut sent = 0u64;
        while sent < count {
            let batch_end = count.min(sent + self.window);
            out.clear();
            let first_xid = self.xid + 1;
            for index in sent..batch_end {
                self.xid += 1;
                encode(index, self.xid, &mut out)?;
            }
            self.write_all(&out)?;
            for (offset, index) in (sent..batch_end).enumerate() {
                let (xid, err) = self.read_reply(|_| Ok(()))?;
                let expected = first_xid + offset as i32;
                if xid != expected {
                    bail!("reply xid {xid} out of order (expected {expected})");
                }
                on_reply(index, err);
            }
            sent = batch_end;
        }
        Ok(())
    }

    /// Creates persistent nodes with `data`; returns each one's error code.
    ///
    /// # Errors
    /// The connection failed or a reply did not arrive in time.
    pub fn create_nodes(&mut self, paths: &[String], data: &[u8]) -> Result<Vec<i32>> {
        let acl = open_acl_unsafe();
        self.codes_of(paths, |path, xid, out| {
            encode::request(out, xid, op::CREATE, |w| {
                encode::create(w, path, data, &acl, 0)
            })
        })
    }

    /// Deletes nodes at any version; returns each one's error code.
    ///
    /// # Errors
    /// The connection failed or a reply did not arrive in time.
    pub fn delete_nodes(&mut self, paths: &[String]) -> Result<Vec<i32>> {
        self.codes_of(paths, |path, xid, out| {
            encode::request(out, xid, op::DELETE, |w| encode::path_version(w, path, -1))
        })
    }

    fn codes_of(
        &mut self,
        paths: &[String],
        mut encode: impl FnMut(&str, i32, &mut Vec<u8>),
    ) -> Result<Vec<i32>> {
        let mut codes = vec![0; paths.len()];
        self.pipeline_each(
            paths.len() as u64,
            |index, xid, out| {
                encode(&paths[index as usize], xid, out);
                Ok(())
            },
            |index, err| codes[index as usize] = err,
        )?;
        Ok(codes)
    }

    /// Deletes every child of `path` (which must have no grandchildren). A missing `path` is fine.
    ///
    /// # Errors
    /// The listing failed (for example it exceeds the server's frame limit) or a delete failed.
    pub fn delete_children(&mut self, path: &str) -> Result<()> {
        self.xid += 1;
        let xid = self.xid;
        let mut out = Vec::new();
        encode::request(&mut out, xid, op::GET_CHILDREN, |w| {
            encode::path_watch(w, path, false)
        });
        self.write_all(&out)?;
        let mut children = Vec::new();
        let (reply_xid, err) = self.read_reply(|r| {
            children = r.read_string_vec()?.iter().map(|s| s.to_string()).collect();
            Ok(())
        })?;
        if reply_xid != xid {
            bail!("reply xid {reply_xid} out of order (expected {xid})");
        }
        if err == ErrorCode::NoNode.code() {
            return Ok(());
        }
        if err != 0 {
            bail!("teardown: list {path}: {:?}", ErrorCode::from_code(err));
        }
        let paths: Vec<String> = children
            .iter()
            .map(|child| format!("{path}/{child}"))
            .collect();
        let mut all = paths;
        all.push(path.to_string());
        let codes = self.delete_nodes(&all)?;
        let failed = codes
            .iter()
            .filter(|&&c| c != 0 && c != ErrorCode::NoNode.code())
            .count();
        if failed > 0 {
            bail!("teardown: {failed} deletes under {path} failed");
        }
        Ok(())
    }

    /// Sends one request and waits for its reply: (error code, the reply body after the
    /// header; empty unless the code is 0).
    ///
    /// # Errors
    /// The connection failed, the reply did not arrive in time, or it is out of order.
    pub fn call(
        &mut self,
        code: i32,
        body: impl FnOnce(&mut keel::proto::jute::Writer<'_>),
    ) -> Result<(i32, Vec<u8>)> {
        self.xid += 1;
        let xid = self.xid;
        let mut out = Vec::new();
        encode::request(&mut out, xid, code, body);
        self.write_all(&out)?;
        let mut reply = Vec::new();
        let (reply_xid, err) = self.read_reply(|r| {
            reply = r.take(r.remaining())?.to_vec();
            Ok(())
        })?;
        if reply_xid != xid {
            bail!("reply xid {reply_xid} out of order (expected {xid})");
        }
        Ok((err, reply))
    }

    /// Closes the session; errors are ignored since the server expires it anyway.
    pub fn close(mut self) {
        self.xid += 1;
        let mut out = Vec::new();
        encode::request(&mut out, self.xid, op::CLOSE_SESSION, |_| {});
        if self.write_all(&out).is_ok() {
            let _ = self.read_reply(|_| Ok(()));
        }
    }

    /// Reads the next reply, skipping watch notifications: (xid, err); `body` reads the rest
    /// when err is 0.
    fn read_reply(
        &mut self,
        mut body: impl FnMut(&mut Reader<'_>) -> Result<(), keel::proto::ProtoError>,
    ) -> Result<(i32, i32)> {
        loop {
            let frame = self.read_frame()?;
            let mut r = Reader::new(&frame);
            let xid = r.read_i32()?;
            let _zxid = r.read_i64()?;
            let err = r.read_i32()?;
            if xid == special_xid::NOTIFICATION || xid == special_xid::PING {
                continue;
            }
            if err == 0 {
                body(&mut r)?;
            }
            return Ok((xid, err));
        }
    }

    fn read_frame(&mut self) -> Result<Vec<u8>> {
        let mut prefix = [0u8; 4];
        self.read_exact(&mut prefix)?;
        let range = split_frame(&prefix, FRAME_BYTES_MAX)
            .map_err(|error| anyhow!("bad frame from {}: {error}", self.server))?;
        debug_assert!(range.is_none(), "a bare prefix never holds a whole frame");
        let len = i32::from_be_bytes(prefix) as usize;
        let mut payload = vec![0u8; len];
        self.read_exact(&mut payload)?;
        Ok(payload)
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<()> {
        self.stream
            .read_exact(buf)
            .map_err(|error| self.io_error(error, "reading"))
    }

    /// Every exchange starts with a write, so this is where the socket timeouts for the
    /// write and the replies that follow are set from the time left.
    fn write_all(&mut self, buf: &[u8]) -> Result<()> {
        let timeout = remaining(self.deadline)?.min(self.io_timeout);
        let socket = self.stream.get_mut();
        socket.set_read_timeout(Some(timeout))?;
        socket.set_write_timeout(Some(timeout))?;
        socket
            .write_all(buf)
            .map_err(|error| self.io_error(error, "writing"))
    }

    fn io_error(&self, error: std::io::Error, doing: &str) -> anyhow::Error {
        match error.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => anyhow!(
                "{doing} {}: no progress within {:?} (server too slow, or the time limit)",
                self.server,
                self.io_timeout
            ),
            ErrorKind::UnexpectedEof => {
                anyhow!("{doing} {}: the server closed the connection", self.server)
            }
            _ => anyhow!("{doing} {}: {error}", self.server),
        }
    }
}

impl BatchResult {
    fn record(&mut self, index: u64, err: i32) {
        if err == 0 {
            self.ok_count += 1;
            return;
        }
        *self.failed_by_code.entry(err).or_insert(0) += 1;
        self.first_failure.get_or_insert((index, err));
    }
}

/// Time left before `deadline`, or an error once it has passed.
fn remaining(deadline: Instant) -> Result<Duration> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        bail!("the time limit was reached");
    }
    Ok(left)
}
