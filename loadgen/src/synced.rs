//! synced: `keel-loadgen synced --server A --leader B --started-ns N`, the time from a
//! server's start (N, ns since the epoch, taken by whoever started it) until its `srvr` says
//! `Mode: follower` (or observer) with a `Zxid` at least the leader's: a catch-up's length.
//!
//! Owns: the poll loop. One `srvr` per `--interval` (a fresh TCP connection each, as any
//! four-letter word), bounded by `--timeout`; the leader is asked only once the server has
//! reached the zxid the leader had at the previous ask. Cheap on purpose: the figure is a
//! fraction of a second on a 2-CPU machine that also runs the servers, and a poller that
//! burns CPU (a shell loop of nc, a Python loop) slows what it measures.

use crate::cli::parse_duration;
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The longest `srvr` answer read (ZooKeeper's is ~300 bytes).
const ANSWER_BYTES_MAX: u64 = 64 * 1024;

#[derive(Debug, clap::Args)]
pub struct SyncedArgs {
    /// The server catching up, host:port.
    #[arg(long)]
    pub server: String,
    /// The leader, host:port.
    #[arg(long)]
    pub leader: String,
    /// When the server was started, ns since the epoch (the clock starts there).
    #[arg(long)]
    pub started_ns: u128,
    /// Stop (with an error) as soon as this process is gone: the server exited.
    #[arg(long)]
    pub pid: Option<u32>,
    /// Time between polls.
    #[arg(long, default_value = "5ms", value_parser = parse_duration)]
    pub interval: Duration,
    /// Give up this long after the command starts (exit 3).
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Also write the result as JSON to this file.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

/// What `srvr` said: the mode and the zxid, when it said them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srvr {
    pub mode: Option<String>,
    pub zxid: Option<u64>,
}

impl Srvr {
    /// Parses a `srvr` answer (`Mode: follower`, `Zxid: 0x...` lines).
    pub fn parse(answer: &str) -> Srvr {
        let field = |name: &str| {
            answer
                .lines()
                .find_map(|line| line.strip_prefix(name).map(str::trim))
                .map(str::to_string)
        };
        let zxid = field("Zxid:")
            .and_then(|hex| u64::from_str_radix(hex.trim_start_matches("0x"), 16).ok());
        Srvr {
            mode: field("Mode:"),
            zxid,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct SyncedSummary {
    /// From the start to the poll that saw the server synced.
    pub seconds: f64,
    /// From the start to the server's first answer of any kind.
    pub first_answer_s: f64,
    pub zxid: u64,
    pub polls: u64,
}

/// Polls until the server is synced with the leader.
///
/// # Errors
/// An address that does not resolve, or no sync within the timeout.
pub fn run(args: &SyncedArgs) -> Result<SyncedSummary> {
    let server = resolve(&args.server)?;
    let leader = resolve(&args.leader)?;
    let deadline = Instant::now() + args.timeout;
    let since_start = || {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        now.saturating_sub(args.started_ns) as f64 / 1e9
    };
    let (mut first_answer_s, mut target, mut polls) = (None, 0u64, 0u64);
    while Instant::now() < deadline {
        if let Some(pid) = args.pid {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                bail!("{} (pid {pid}) exited before it synced", args.server);
            }
        }
        polls += 1;
        if let Some(seen) = srvr(server) {
            first_answer_s.get_or_insert_with(since_start);
            let mode_ok = matches!(seen.mode.as_deref(), Some("follower" | "observer"));
            if let (true, Some(zxid)) = (mode_ok, seen.zxid) {
                if zxid >= target {
                    let at = since_start();
                    // Is it still the leader's? Ask again only now, not every poll.
                    match srvr(leader).and_then(|l| l.zxid) {
                        Some(lead) if zxid >= lead => {
                            return Ok(SyncedSummary {
                                seconds: at,
                                first_answer_s: first_answer_s.unwrap_or(at),
                                zxid,
                                polls,
                            })
                        }
                        Some(lead) => target = lead,
                        None => {}
                    }
                }
            }
        }
        std::thread::sleep(args.interval);
    }
    bail!(
        "{} not synced with {} after {:?}",
        args.server,
        args.leader,
        args.timeout
    )
}

fn resolve(address: &str) -> Result<SocketAddr> {
    address
        .to_socket_addrs()
        .with_context(|| format!("resolving {address}"))?
        .next()
        .with_context(|| format!("{address} resolves to nothing"))
}

/// One `srvr`, or `None` if the server does not answer (yet).
fn srvr(address: SocketAddr) -> Option<Srvr> {
    let timeout = Duration::from_secs(1);
    let mut stream = TcpStream::connect_timeout(&address, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.write_all(b"srvr").ok()?;
    let mut answer = String::new();
    stream
        .take(ANSWER_BYTES_MAX)
        .read_to_string(&mut answer)
        .ok()?;
    (!answer.is_empty()).then(|| Srvr::parse(&answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn srvr_answers_parse_as_zookeeper_and_keel_print_them() {
        let answer = "Zookeeper version: 3.8.0-keel\nLatency min/avg/max: 0/0.0/0\n\
                      Received: 5\nSent: 4\nConnections: 1\nOutstanding: 0\n\
                      Zxid: 0x1000f46ab\nMode: follower\nNode count: 5\n";
        assert_eq!(
            Srvr::parse(answer),
            Srvr {
                mode: Some("follower".into()),
                zxid: Some(0x1_000f_46ab),
            }
        );
        let not_serving = "This ZooKeeper instance is not currently serving requests\n";
        assert_eq!(
            Srvr::parse(not_serving),
            Srvr {
                mode: None,
                zxid: None,
            }
        );
    }

    #[test]
    fn a_server_that_never_answers_times_out() {
        // A port nothing listens on (bound, then released).
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let args = SyncedArgs {
            server: format!("127.0.0.1:{port}"),
            leader: format!("127.0.0.1:{port}"),
            started_ns: 0,
            pid: None,
            interval: Duration::from_millis(5),
            timeout: Duration::from_millis(50),
            json: None,
        };
        assert!(run(&args).is_err());
        // A server process that is gone ends the wait at once, whatever the timeout.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let args = SyncedArgs {
            pid: Some(pid),
            timeout: Duration::from_secs(60),
            ..args
        };
        let started = Instant::now();
        let error = run(&args).unwrap_err().to_string();
        assert!(error.contains("exited"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
