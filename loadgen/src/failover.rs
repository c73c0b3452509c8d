//! failover: `keel-loadgen failover --servers A,B,C [--kill-pid PID]`, the time from an outage
//! (the kill of a server, or the start of the command) to the first successful write.
//!
//! Owns: the attempt loop. One thread per server keeps trying, each attempt a fresh session
//! (connect + handshake) and one setData on `--path` (a create when the node is missing), every
//! attempt bounded by `--attempt-timeout` and the whole run by `--timeout`. The first attempt
//! that gets a reply with no error ends the run; its reply time minus the clock's start is the
//! figure. With `--kill-pid`, one write must succeed first (so the servers serve and the node
//! exists), then the command sends SIGKILL to the PID and starts the clock at that instant.

use crate::cli::parse_duration;
use crate::sync_client::SyncClient;
use anyhow::{bail, Result};
use keel::proto::records::encode;
use keel::proto::{op, open_acl_unsafe, ErrorCode};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Session timeout asked of the server for each attempt's session (ZooKeeper's floor with
/// tickTime 2000 is 4 s); failed attempts leave sessions that expire this soon.
const ATTEMPT_SESSION_TIMEOUT_MS: i32 = 4000;
/// The most servers one run tries.
pub const SERVERS_MAX: usize = 64;

#[derive(Debug, clap::Args)]
pub struct FailoverArgs {
    /// Servers as host:port, comma separated; each gets its own attempt loop.
    #[arg(long, value_delimiter = ',', required = true)]
    pub servers: Vec<String>,
    /// Send SIGKILL to this process (after one write has succeeded) and start the clock at
    /// the kill. Without it the clock starts when the command starts.
    #[arg(long)]
    pub kill_pid: Option<i32>,
    /// Give up this long after the clock starts (exit 3).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Bound on one attempt: connect, handshake and the write.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub attempt_timeout: Duration,
    /// Pause after a failed attempt before the next one to the same server.
    #[arg(long, default_value = "10ms", value_parser = parse_duration)]
    pub retry_pause: Duration,
    /// The node written (setData; created when missing).
    #[arg(long, default_value = "/keel-loadgen-failover")]
    pub path: String,
    /// Bytes written to the node.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// Also write the result as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailoverSummary {
    pub servers: Vec<String>,
    pub killed_pid: Option<i32>,
    /// "ok" or "timeout".
    pub status: String,
    /// From the clock's start (the kill, or the command's start) to the first successful write.
    pub first_write_ms: Option<f64>,
    /// The server that took the first successful write.
    pub first_write_server: Option<String>,
    /// Attempts started, over all servers, until the first success (or the timeout).
    pub attempts: u64,
    /// The last failure seen before the first success, for the record.
    pub last_error: Option<String>,
    pub timeout_ms: f64,
}

impl FailoverSummary {
    pub fn render_text(&self) -> String {
        let killed = self
            .killed_pid
            .map_or_else(|| "none (clock from start)".to_owned(), |p| p.to_string());
        let first = match (self.first_write_ms, &self.first_write_server) {
            (Some(ms), Some(server)) => format!("{ms:.1} ms (on {server})"),
            _ => format!("none within {:.0} ms", self.timeout_ms),
        };
        format!(
            "failover: servers {}\nkilled pid: {killed}\nfirst successful write: {first}\n\
             attempts: {}\nstatus: {}\n",
            self.servers.join(","),
            self.attempts,
            self.status
        )
    }

    /// 0 when a write succeeded, 3 when none did in time.
    pub fn exit_code(&self) -> i32 {
        if self.status == "ok" {
            0
        } else {
            3
        }
    }
}

/// The checked flags.
#[derive(Debug, Clone)]
pub struct FailoverPlan {
    pub servers: Vec<SocketAddr>,
    pub kill_pid: Option<i32>,
    pub timeout: Duration,
    pub attempt_timeout: Duration,
    pub retry_pause: Duration,
    pub path: String,
    pub value: Vec<u8>,
}

impl FailoverArgs {
    /// # Errors
    /// A flag is out of range or a server does not resolve.
    pub fn into_plan(self) -> Result<FailoverPlan> {
        if self.servers.is_empty() || self.servers.len() > SERVERS_MAX {
            bail!("--servers: give 1 to {SERVERS_MAX} host:port");
        }
        let servers = crate::cli::resolve(&self.servers)?;
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(3600) {
            bail!("--timeout must be in (0, 1h]");
        }
        if self.attempt_timeout.is_zero() || self.attempt_timeout > self.timeout {
            bail!("--attempt-timeout must be positive and at most --timeout");
        }
        if self.retry_pause > Duration::from_secs(10) {
            bail!("--retry-pause must be at most 10s");
        }
        if !self.path.starts_with('/') || self.path.len() < 2 || self.path.ends_with('/') {
            bail!("--path '{}' must be an absolute node path", self.path);
        }
        if self.value_bytes > crate::plan::VALUE_BYTES_MAX {
            bail!(
                "--value-bytes must be at most {}",
                crate::plan::VALUE_BYTES_MAX
            );
        }
        if let Some(pid) = self.kill_pid {
            if pid <= 1 {
                bail!("--kill-pid {pid} must be a process id above 1");
            }
        }
        Ok(FailoverPlan {
            servers,
            kill_pid: self.kill_pid,
            timeout: self.timeout,
            attempt_timeout: self.attempt_timeout,
            retry_pause: self.retry_pause,
            path: self.path,
            value: vec![b'f'; self.value_bytes],
        })
    }
}

/// One attempt: a fresh session on `server`, then setData (or create) on the path.
///
/// # Errors
/// The session or the write failed, or the deadline passed.
pub fn write_once(
    server: SocketAddr,
    path: &str,
    value: &[u8],
    io_timeout: Duration,
    deadline: Instant,
) -> Result<()> {
    let mut client =
        SyncClient::connect(&[server], ATTEMPT_SESSION_TIMEOUT_MS, io_timeout, deadline)?;
    let (err, _) = client.call(op::SET_DATA, |w| encode::set_data(w, path, value, -1))?;
    let err = if err == ErrorCode::NoNode.code() {
        let acl = open_acl_unsafe();
        let (err, _) = client.call(op::CREATE, |w| encode::create(w, path, value, &acl, 0))?;
        err
    } else {
        err
    };
    if err != 0 {
        bail!("{server}: write answered {:?}", ErrorCode::from_code(err));
    }
    client.close();
    Ok(())
}

/// Runs the measurement. Attempt threads still inside an attempt when it ends stop by
/// themselves within `attempt_timeout`.
///
/// # Errors
/// With `--kill-pid`: no write succeeded before the kill, or the kill failed.
pub fn run(plan: &FailoverPlan) -> Result<FailoverSummary> {
    if plan.kill_pid.is_some() {
        let deadline = Instant::now() + plan.timeout;
        let mut last = None;
        let ready = plan.servers.iter().any(|&server| {
            match write_once(
                server,
                &plan.path,
                &plan.value,
                plan.attempt_timeout,
                deadline,
            ) {
                Ok(()) => true,
                Err(error) => {
                    last = Some(format!("{error:#}"));
                    false
                }
            }
        });
        if !ready {
            bail!(
                "no server took a write before the kill, so nothing was killed: {}",
                last.unwrap_or_default()
            );
        }
    }
    let started = Instant::now();
    if let Some(pid) = plan.kill_pid {
        // SAFETY: kill(2) takes two integers and touches no memory of ours.
        let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
        if rc != 0 {
            bail!("kill -9 {pid}: {}", std::io::Error::last_os_error());
        }
    }
    let deadline = started + plan.timeout;
    let done = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicU64::new(0));
    let (tx, rx) = mpsc::channel::<(SocketAddr, Duration)>();
    let last_error = Arc::new(std::sync::Mutex::new(None::<String>));
    for &server in &plan.servers {
        let (done, attempts, tx, last_error) = (
            done.clone(),
            attempts.clone(),
            tx.clone(),
            last_error.clone(),
        );
        let plan = plan.clone();
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let now = Instant::now();
                if now >= deadline {
                    return;
                }
                attempts.fetch_add(1, Ordering::Relaxed);
                let attempt_deadline = (now + plan.attempt_timeout).min(deadline);
                match write_once(
                    server,
                    &plan.path,
                    &plan.value,
                    plan.attempt_timeout,
                    attempt_deadline,
                ) {
                    Ok(()) => {
                        let _ = tx.send((server, started.elapsed()));
                        done.store(true, Ordering::Relaxed);
                        return;
                    }
                    Err(error) => {
                        if let Ok(mut slot) = last_error.lock() {
                            *slot = Some(format!("{error:#}"));
                        }
                        std::thread::sleep(plan.retry_pause);
                    }
                }
            }
        });
    }
    drop(tx);
    let wait = deadline.saturating_duration_since(Instant::now());
    let first = rx.recv_timeout(wait).ok();
    done.store(true, Ordering::Relaxed);
    let last_error = last_error.lock().ok().and_then(|slot| slot.clone());
    Ok(FailoverSummary {
        servers: plan.servers.iter().map(ToString::to_string).collect(),
        killed_pid: plan.kill_pid,
        status: if first.is_some() { "ok" } else { "timeout" }.to_owned(),
        first_write_ms: first.map(|(_, at)| crate::summary::round_to(at.as_secs_f64() * 1e3, 1)),
        first_write_server: first.map(|(server, _)| server.to_string()),
        attempts: attempts.load(Ordering::Relaxed),
        last_error,
        timeout_ms: plan.timeout.as_secs_f64() * 1e3,
    })
}
