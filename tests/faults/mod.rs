//! Shared by the fault tests (`tests/crash.rs`, `tests/enospc.rs`, `tests/disk_errors.rs`,
//! `tests/ensemble.rs`): the real `keel` binary on 127.0.0.1 (killed by PID when dropped,
//! stderr captured to a file), a blocking client that reports IO errors instead of panicking
//! (a killed server is expected there) and can keep many requests in flight, subtree reads,
//! and a seeded PRNG; `disk` has what the disk-fault tests share.
#![allow(dead_code)]

pub mod disk;

use keel::proto::jute::Reader;
use keel::proto::records::{encode, ConnectRequest};
use keel::proto::{op, open_acl_unsafe, Stat};
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// ZooKeeper error codes the tests look at.
pub const OK: i32 = 0;
pub const NO_NODE: i32 = -101;

/// A keel process on 127.0.0.1, killed (by PID) and reaped when dropped.
pub struct Server {
    pub child: Option<Child>,
    pub addr: SocketAddr,
    pub stderr_path: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// A fresh directory under the system temp dir, removed first if a previous run left it.
pub fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keel-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Writes `config_path` (a zoo.cfg listening on 127.0.0.1:`port` only) with `extra` lines.
pub fn write_config(config_path: &Path, data_dir: &Path, port: u16, extra: &str) {
    std::fs::write(
        config_path,
        format!(
            "tickTime=500\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
             maxClientCnxns=0\nkeel.unpinned=true\n4lw.commands.whitelist=*\n{extra}",
            data_dir.display()
        ),
    )
    .expect("write zoo.cfg");
}

impl Server {
    /// Starts `keel <config_path>` with stderr appended to `stderr_path`; waits (bounded) for
    /// `ruok` on 127.0.0.1:`port`. Panics with the server's stderr if it exits or never answers.
    pub fn start(config_path: &Path, port: u16, stderr_path: &Path) -> Server {
        match Server::try_start(config_path, port, stderr_path) {
            Ok(server) => server,
            Err(status) => panic!(
                "keel exited during start-up with {status}; stderr:\n{}",
                tail_of(stderr_path)
            ),
        }
    }

    /// As `start`, but a server that exits during start-up is an `Err` with its status.
    pub fn try_start(
        config_path: &Path,
        port: u16,
        stderr_path: &Path,
    ) -> Result<Server, ExitStatus> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        Server::try_start_command(keel_command(config_path), addr, stderr_path)
    }

    /// Runs `command` (a keel, perhaps wrapped, e.g. by `ip netns exec`) and waits (bounded)
    /// for `ruok` on `addr`; a process that exits first is an `Err` with its status.
    pub fn try_start_command(
        command: Command,
        addr: SocketAddr,
        stderr_path: &Path,
    ) -> Result<Server, ExitStatus> {
        let mut server = Server::spawn_command(command, addr, stderr_path);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = server.try_wait() {
                return Err(status);
            }
            if let Ok(mut stream) = TcpStream::connect_timeout(&server.addr, Duration::from_secs(1))
            {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut answer = String::new();
                if stream.write_all(b"ruok").is_ok()
                    && stream.read_to_string(&mut answer).is_ok()
                    && answer == "imok"
                {
                    return Ok(server);
                }
            }
            assert!(
                Instant::now() < deadline,
                "keel did not answer ruok within 30 s; stderr:\n{}",
                server.stderr_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Spawns `keel <config_path>` (stderr appended to `stderr_path`) without waiting for it.
    pub fn spawn(config_path: &Path, port: u16, stderr_path: &Path) -> Server {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        Server::spawn_command(keel_command(config_path), addr, stderr_path)
    }

    fn spawn_command(mut command: Command, addr: SocketAddr, stderr_path: &Path) -> Server {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(stderr_path)
            .expect("open the stderr file");
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("spawn keel");
        Server {
            child: Some(child),
            addr,
            stderr_path: stderr_path.to_path_buf(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |child| child.id() as i32)
    }

    /// The exit status if the process has ended (reaped), None while it runs.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => {
                self.child = None;
                Some(status)
            }
            _ => None,
        }
    }

    /// SIGKILL by PID, then reap. Returns the status if the server had already exited on its
    /// own before the signal (which the crash test treats as a failure).
    pub fn kill_9(mut self) -> Option<ExitStatus> {
        if let Some(status) = self.try_wait() {
            return Some(status);
        }
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGKILL);
            }
            let _ = child.wait();
        }
        None
    }

    /// Waits up to `limit` for the process to exit on its own; None if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The last 4 KiB of the captured stderr.
    pub fn stderr_tail(&self) -> String {
        tail_of(&self.stderr_path)
    }
}

/// `keel <config_path>`.
pub fn keel_command(config_path: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keel"));
    command.arg(config_path);
    command
}

/// The last 4 KiB of a text file.
pub fn tail_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let start = text.len().saturating_sub(4096);
    let start = (start..text.len())
        .find(|&at| text.is_char_boundary(at))
        .unwrap_or(text.len());
    text[start..].to_string()
}

/// One reply: (xid, zxid, err, body after the reply header).
#[derive(Debug)]
pub struct Reply {
    pub xid: i32,
    pub zxid: i64,
    pub err: i32,
    pub body: Vec<u8>,
}

/// A blocking client on one session; every IO error is returned, never a panic.
pub struct Conn {
    stream: TcpStream,
    pub session_id: i64,
    pub timeout_ms: i32,
    xid: i32,
    out: Vec<u8>,
}

fn read_frame(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len)?;
    let len = i32::from_be_bytes(len);
    if !(0..=16 << 20).contains(&len) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame length {len}"),
        ));
    }
    let mut payload = vec![0u8; len as usize];
    stream.read_exact(&mut payload)?;
    Ok(payload)
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

impl Conn {
    /// Opens a new session asking for `timeout_ms`.
    pub fn connect(addr: SocketAddr, timeout_ms: i32) -> io::Result<Conn> {
        Conn::open(addr, timeout_ms, 0)
    }

    /// Reattaches session `session_id` (its password derives from the id); a session the
    /// server does not know (expired) is an error.
    pub fn resume(addr: SocketAddr, timeout_ms: i32, session_id: i64) -> io::Result<Conn> {
        Conn::open(addr, timeout_ms, session_id)
    }

    fn open(addr: SocketAddr, timeout_ms: i32, session_id: i64) -> io::Result<Conn> {
        let password = if session_id == 0 {
            [0; 16]
        } else {
            keel::session::session_password(session_id)
        };
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(20)))?;
        stream.set_write_timeout(Some(Duration::from_secs(20)))?;
        stream.set_nodelay(true)?;
        let mut out = Vec::new();
        ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 0,
            timeout_ms,
            session_id,
            password: &password,
            read_only: Some(false),
        }
        .encode(&mut out);
        stream.write_all(&out)?;
        let reply = read_frame(&mut stream)?;
        let mut r = Reader::new(&reply);
        r.read_i32().map_err(|_| bad("connect response"))?;
        let timeout_ms = r.read_i32().map_err(|_| bad("connect response"))?;
        let session_id = r.read_i64().map_err(|_| bad("connect response"))?;
        if timeout_ms <= 0 || session_id == 0 {
            return Err(bad("session refused"));
        }
        Ok(Conn {
            stream,
            session_id,
            timeout_ms,
            xid: 0,
            out: Vec::new(),
        })
    }

    /// Sends one request; returns its xid.
    pub fn send(
        &mut self,
        code: i32,
        body: impl FnOnce(&mut keel::proto::jute::Writer<'_>),
    ) -> io::Result<i32> {
        self.xid += 1;
        self.out.clear();
        encode::request(&mut self.out, self.xid, code, body);
        self.stream.write_all(&self.out)?;
        Ok(self.xid)
    }

    /// Reads the next reply to a request (notifications and pings are skipped).
    pub fn recv(&mut self) -> io::Result<Reply> {
        loop {
            let frame = read_frame(&mut self.stream)?;
            let mut r = Reader::new(&frame);
            let xid = r.read_i32().map_err(|_| bad("reply header"))?;
            let zxid = r.read_i64().map_err(|_| bad("reply header"))?;
            let err = r.read_i32().map_err(|_| bad("reply header"))?;
            if xid == -1 || xid == -2 {
                continue;
            }
            return Ok(Reply {
                xid,
                zxid,
                err,
                body: frame[16..].to_vec(),
            });
        }
    }

    /// Sends and waits for the reply, checking the xid.
    pub fn call(
        &mut self,
        code: i32,
        body: impl FnOnce(&mut keel::proto::jute::Writer<'_>),
    ) -> io::Result<Reply> {
        let xid = self.send(code, body)?;
        let reply = self.recv()?;
        if reply.xid != xid {
            return Err(bad(&format!("reply xid {} for request {xid}", reply.xid)));
        }
        Ok(reply)
    }

    /// create2: (err, created path).
    pub fn create(&mut self, path: &str, data: &[u8], flags: i32) -> io::Result<(i32, String)> {
        let reply = self.call(op::CREATE2, |w| {
            encode::create(w, path, data, &open_acl_unsafe(), flags)
        })?;
        if reply.err != OK {
            return Ok((reply.err, String::new()));
        }
        let mut r = Reader::new(&reply.body);
        let created = r.read_string().map_err(|_| bad("create2 reply"))?;
        Ok((OK, created.to_string()))
    }

    /// getData: (err, data, stat).
    pub fn get_data(&mut self, path: &str) -> io::Result<(i32, Vec<u8>, Stat)> {
        let reply = self.call(op::GET_DATA, |w| encode::path_watch(w, path, false))?;
        parse_get_data(&reply)
    }

    /// getChildren: (err, sorted names).
    pub fn get_children(&mut self, path: &str) -> io::Result<(i32, Vec<String>)> {
        let reply = self.call(op::GET_CHILDREN, |w| encode::path_watch(w, path, false))?;
        parse_children(&reply)
    }

    /// Reads every node of the subtree at `root` (root included) level by level, with all the
    /// requests of a level in flight at once. Absent root: an empty map.
    pub fn read_subtree(&mut self, root: &str) -> io::Result<BTreeMap<String, NodeRead>> {
        let mut nodes = BTreeMap::new();
        let mut level = vec![root.to_string()];
        while !level.is_empty() {
            let mut next = Vec::new();
            for chunk in level.chunks(128) {
                for path in chunk {
                    self.send(op::GET_DATA, |w| encode::path_watch(w, path, false))?;
                    self.send(op::GET_CHILDREN, |w| encode::path_watch(w, path, false))?;
                }
                for path in chunk {
                    let (err, data, stat) = parse_get_data(&self.recv()?)?;
                    let (children_err, children) = parse_children(&self.recv()?)?;
                    if err == NO_NODE || children_err == NO_NODE {
                        continue; // Deleted meanwhile (only ephemerals expire during reads).
                    }
                    if err != OK || children_err != OK {
                        return Err(bad(&format!("reading {path}: {err} / {children_err}")));
                    }
                    for child in &children {
                        next.push(join(path, child));
                    }
                    nodes.insert(path.clone(), NodeRead { data, stat });
                }
            }
            level = next;
        }
        Ok(nodes)
    }
}

/// A node as read back: its data and Stat.
#[derive(Debug, Clone)]
pub struct NodeRead {
    pub data: Vec<u8>,
    pub stat: Stat,
}

pub fn join(parent: &str, child: &str) -> String {
    if parent == "/" {
        format!("/{child}")
    } else {
        format!("{parent}/{child}")
    }
}

pub fn parse_get_data(reply: &Reply) -> io::Result<(i32, Vec<u8>, Stat)> {
    if reply.err != OK {
        return Ok((reply.err, Vec::new(), Stat::default()));
    }
    let mut r = Reader::new(&reply.body);
    let data = r
        .read_buffer()
        .map_err(|_| bad("getData reply"))?
        .map(<[u8]>::to_vec)
        .unwrap_or_default();
    let stat = Stat::read(&mut r).map_err(|_| bad("getData stat"))?;
    Ok((OK, data, stat))
}

pub fn parse_children(reply: &Reply) -> io::Result<(i32, Vec<String>)> {
    if reply.err != OK {
        return Ok((reply.err, Vec::new()));
    }
    let mut r = Reader::new(&reply.body);
    let mut children: Vec<String> = r
        .read_string_vec()
        .map_err(|_| bad("getChildren reply"))?
        .into_iter()
        .map(str::to_string)
        .collect();
    children.sort();
    Ok((OK, children))
}

/// Shortens bytes for a failure message.
pub fn show(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    if text.len() > 80 {
        let mut end = 80;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…({} bytes)", &text[..end], bytes.len())
    } else {
        format!("{text:?}")
    }
}

/// SplitMix64: small, seeded, reproducible.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..bound` (bound > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }
}

/// A seed from the environment variable `var` if set, otherwise from the clock.
pub fn seed_from_env(var: &str) -> u64 {
    match std::env::var(var) {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{var}={text:?} is not a u64")),
        Err(_) => {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                % 1_000_000_007
        }
    }
}
