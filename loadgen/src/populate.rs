//! populate: `keel-loadgen populate --servers A,B,C --nodes N`, N persistent znodes written as
//! fast as the servers take them, for catch-up and restart measurements.
//!
//! Owns: the layout `<prefix>/d<j>/n<i>` (at most `--per-dir` nodes under each `d<j>`, so no
//! node gets a huge child list) and the creating sessions: `--sessions` blocking sessions spread
//! over the servers in turn, one thread each, each sending windows of `--outstanding` creates and
//! waiting for their replies before the next window. Nodes are left in place; a node that already
//! exists counts as `existed`, any other error ends the run. Bounded by `--timeout`.

use crate::cli::parse_duration;
use crate::sync_client::{SyncClient, WINDOW_REQUESTS_SET_MAX};
use anyhow::{anyhow, bail, Result};
use keel::proto::records::encode;
use keel::proto::{op, open_acl_unsafe, ErrorCode};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const NODES_MAX: u64 = 100_000_000;
pub const SESSIONS_MAX: usize = 1024;
/// Creates one session sends between progress updates.
const CHUNK_NODES: u64 = 4096;
/// Session timeout asked of the server.
const SESSION_TIMEOUT_MS: i32 = 30_000;
/// Bound on one window's exchange.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Args)]
pub struct PopulateArgs {
    /// Servers as host:port, comma separated; sessions are spread over them in turn.
    #[arg(long, value_delimiter = ',', required = true)]
    pub servers: Vec<String>,
    /// Nodes to create.
    #[arg(long)]
    pub nodes: u64,
    /// Bytes of data in each node.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// Creating sessions, one thread each.
    #[arg(long, default_value_t = 16)]
    pub sessions: usize,
    /// Creates each session sends before it waits for their replies.
    #[arg(long, default_value_t = 64)]
    pub outstanding: u64,
    /// Parent of the nodes; created if missing.
    #[arg(long, default_value = "/keel-populate")]
    pub prefix: String,
    /// Nodes under each `<prefix>/d<j>`.
    #[arg(long, default_value_t = 1000)]
    pub per_dir: u64,
    /// Hard limit on the whole run.
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    pub timeout: Duration,
    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,
    /// Also write the result as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PopulateSummary {
    pub servers: Vec<String>,
    pub prefix: String,
    pub nodes: u64,
    pub value_bytes: usize,
    pub sessions: usize,
    pub outstanding: u64,
    pub created: u64,
    pub existed: u64,
    pub seconds: f64,
    pub creates_per_s: f64,
}

impl PopulateSummary {
    pub fn render_text(&self) -> String {
        format!(
            "populate: {} nodes of {} bytes under {} on {} ({} sessions x {} outstanding)\n\
             created: {}  already there: {}\nseconds: {:.2}  creates/s: {:.0}\n",
            self.nodes,
            self.value_bytes,
            self.prefix,
            self.servers.join(","),
            self.sessions,
            self.outstanding,
            self.created,
            self.existed,
            self.seconds,
            self.creates_per_s
        )
    }
}

#[derive(Debug, Clone)]
pub struct PopulatePlan {
    pub servers: Vec<SocketAddr>,
    pub nodes: u64,
    pub value_bytes: usize,
    pub sessions: usize,
    pub outstanding: u64,
    pub prefix: String,
    pub per_dir: u64,
    pub timeout: Duration,
    pub progress: bool,
}

impl PopulateArgs {
    /// # Errors
    /// A flag is out of range or a server does not resolve.
    pub fn into_plan(self) -> Result<PopulatePlan> {
        if self.servers.is_empty() || self.servers.len() > crate::failover::SERVERS_MAX {
            bail!(
                "--servers: give 1 to {} host:port",
                crate::failover::SERVERS_MAX
            );
        }
        let servers = crate::cli::resolve(&self.servers)?;
        if !(1..=NODES_MAX).contains(&self.nodes) {
            bail!("--nodes {} is out of range [1, {NODES_MAX}]", self.nodes);
        }
        if self.value_bytes > crate::plan::VALUE_BYTES_MAX {
            bail!(
                "--value-bytes must be at most {}",
                crate::plan::VALUE_BYTES_MAX
            );
        }
        if !(1..=SESSIONS_MAX).contains(&self.sessions) {
            bail!(
                "--sessions {} is out of range [1, {SESSIONS_MAX}]",
                self.sessions
            );
        }
        if !(1..=WINDOW_REQUESTS_SET_MAX).contains(&self.outstanding) {
            bail!(
                "--outstanding {} is out of range [1, {WINDOW_REQUESTS_SET_MAX}]",
                self.outstanding
            );
        }
        if !(1..=1_000_000).contains(&self.per_dir) {
            bail!("--per-dir {} is out of range [1, 1000000]", self.per_dir);
        }
        let valid = |c: char| c.is_ascii_alphanumeric() || "-_./".contains(c);
        if !self.prefix.starts_with('/')
            || self.prefix.len() < 2
            || self.prefix.ends_with('/')
            || !self.prefix.chars().all(valid)
            || self.prefix.contains("//")
        {
            bail!("--prefix '{}' must be an absolute node path", self.prefix);
        }
        if self.timeout.is_zero() {
            bail!("--timeout must be positive");
        }
        Ok(PopulatePlan {
            servers,
            nodes: self.nodes,
            value_bytes: self.value_bytes,
            sessions: self.sessions,
            outstanding: self.outstanding,
            prefix: self.prefix,
            per_dir: self.per_dir,
            timeout: self.timeout,
            progress: !self.quiet,
        })
    }
}

impl PopulatePlan {
    fn dir_of(&self, index: u64) -> String {
        format!("{}/d{}", self.prefix, index / self.per_dir)
    }

    pub fn path_of(&self, index: u64) -> String {
        format!("{}/n{index}", self.dir_of(index))
    }

    fn dir_count(&self) -> u64 {
        self.nodes.div_ceil(self.per_dir)
    }
}

/// Counts of one batch of creates: (created, existed).
fn count_codes(codes: &[i32], what: &str) -> Result<(u64, u64)> {
    let mut created = 0;
    let mut existed = 0;
    for &code in codes {
        if code == 0 {
            created += 1;
        } else if code == ErrorCode::NodeExists.code() {
            existed += 1;
        } else {
            bail!("{what}: create answered {:?}", ErrorCode::from_code(code));
        }
    }
    Ok((created, existed))
}

/// Creates the prefix (and its parents) and the directories, on the first server that takes
/// a session.
fn create_parents(plan: &PopulatePlan, deadline: Instant) -> Result<()> {
    let mut client = SyncClient::connect(&plan.servers, SESSION_TIMEOUT_MS, IO_TIMEOUT, deadline)?;
    let mut parents = Vec::new();
    let mut at = 0;
    while let Some(next) = plan.prefix[at + 1..].find('/') {
        at += 1 + next;
        parents.push(plan.prefix[..at].to_owned());
    }
    parents.push(plan.prefix.clone());
    parents.extend((0..plan.dir_count()).map(|dir| format!("{}/d{dir}", plan.prefix)));
    let codes = client.create_nodes(&parents, &[])?;
    count_codes(&codes, "creating the directories")?;
    client.close();
    Ok(())
}

/// Runs the creates; returns once every node exists.
///
/// # Errors
/// A session failed, a create got an error other than NodeExists, or the timeout passed.
pub fn run(plan: &PopulatePlan) -> Result<PopulateSummary> {
    let started = Instant::now();
    let deadline = started + plan.timeout;
    create_parents(plan, deadline)?;
    let done = Arc::new(AtomicU64::new(0));
    let value = Arc::new(vec![b'p'; plan.value_bytes]);
    let per_session = plan.nodes.div_ceil(plan.sessions as u64);
    let mut threads = Vec::new();
    for session in 0..plan.sessions {
        let first = per_session * session as u64;
        let end = (first + per_session).min(plan.nodes);
        if first >= end {
            break;
        }
        let mut servers = plan.servers.clone();
        servers.rotate_left(session % plan.servers.len());
        let (plan, done, value) = (plan.clone(), done.clone(), value.clone());
        threads.push(std::thread::spawn(move || -> Result<(u64, u64)> {
            let mut client =
                SyncClient::connect(&servers, SESSION_TIMEOUT_MS, IO_TIMEOUT, deadline)?;
            client.set_window(plan.outstanding);
            let acl = open_acl_unsafe();
            let (mut created, mut existed) = (0, 0);
            let mut at = first;
            while at < end {
                let chunk_end = (at + CHUNK_NODES).min(end);
                let result = client.pipeline(chunk_end - at, |offset, xid, out| {
                    let path = plan.path_of(at + offset);
                    encode::request(out, xid, op::CREATE, |w| {
                        encode::create(w, &path, &value, &acl, 0)
                    });
                    Ok(())
                })?;
                // NodeExists (a rerun) is the only failure allowed.
                result.fail_on_any_but(ErrorCode::NodeExists, "populate")?;
                let ok = result.ok_count;
                created += ok;
                existed += chunk_end - at - ok;
                done.fetch_add(chunk_end - at, Ordering::Relaxed);
                at = chunk_end;
            }
            client.close();
            Ok((created, existed))
        }));
    }
    let mut last_progress = Instant::now();
    while threads.iter().any(|t| !t.is_finished()) {
        std::thread::sleep(Duration::from_millis(50));
        if plan.progress && last_progress.elapsed() >= Duration::from_secs(5) {
            last_progress = Instant::now();
            let count = done.load(Ordering::Relaxed);
            eprintln!(
                "populate: {count}/{} nodes after {:.0} s ({:.0}/s)",
                plan.nodes,
                started.elapsed().as_secs_f64(),
                count as f64 / started.elapsed().as_secs_f64()
            );
        }
    }
    let (mut created, mut existed) = (0, 0);
    for thread in threads {
        let (c, e) = thread
            .join()
            .map_err(|_| anyhow!("a populate thread panicked"))??;
        created += c;
        existed += e;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(PopulateSummary {
        servers: plan.servers.iter().map(ToString::to_string).collect(),
        prefix: plan.prefix.clone(),
        nodes: plan.nodes,
        value_bytes: plan.value_bytes,
        sessions: plan.sessions,
        outstanding: plan.outstanding,
        created,
        existed,
        seconds: crate::summary::round_to(seconds, 3),
        creates_per_s: crate::summary::round_to(plan.nodes as f64 / seconds, 1),
    })
}
