//! The validated parameters of one run, shared read-only by the driver and every worker.

use crate::keys::KeyDistribution;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Hard limits on the run's shape: every queue and buffer is sized from these.
pub const SESSIONS_MAX: usize = 100_000;
pub const OUTSTANDING_MAX: usize = 10_000;
pub const OUTSTANDING_TOTAL_MAX: usize = 10_000_000;
pub const THREADS_MAX: usize = 64;
pub const KEYS_MAX: u64 = 10_000_000;
/// Below ZooKeeper's default jute.maxbuffer (1 MiB - 1) with room for the request header.
pub const VALUE_BYTES_MAX: usize = 1_000_000;
/// Checker runs: one blocking client thread per session, and a bounded history.
pub const CHECKER_CLIENTS_MAX: usize = 256;
pub const CHECKER_OPS_MAX: u64 = 1_000_000;
const _: () = assert!(OUTSTANDING_MAX <= OUTSTANDING_TOTAL_MAX);
const _: () = assert!(CHECKER_CLIENTS_MAX <= SESSIONS_MAX);
const _: () = assert!(VALUE_BYTES_MAX < 0xfffff);

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Each session keeps `outstanding` requests in flight.
    ClosedLoop,
    /// Requests go out on a fixed schedule at `rate` ops/s.
    OpenLoop { rate_ops_per_s: f64 },
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub servers: Vec<SocketAddr>,
    pub sessions: usize,
    pub outstanding_max: usize,
    pub mode: Mode,
    pub threads: usize,
    pub read_pct: u32,
    pub value_bytes: usize,
    pub keys: KeyDistribution,
    pub warmup: Duration,
    pub duration: Duration,
    pub time_limit: Duration,
    pub session_timeout_ms: i32,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub run_id: String,
    pub seed: u64,
    pub json_path: Option<PathBuf>,
    pub plot_dir: Option<PathBuf>,
    pub progress: bool,
    /// Set for `--workload checker`.
    pub checker: Option<CheckerPlan>,
    /// Set for --workload-file.
    pub mix: Option<crate::workload_file::Mix>,
    /// Set for the scenario workloads (registry, fanout, churn, lock, seqid, queue).
    pub scenario: Option<crate::scenario::Kind>,
}

/// What a checker run records and how hard it searches.
#[derive(Debug, Clone)]
pub struct CheckerPlan {
    pub ops_max: u64,
    /// Send sync on the key before each getData (part of the read op).
    pub sync_reads: bool,
    pub history_path: Option<PathBuf>,
    pub steps_max: u64,
}

impl Plan {
    /// The ZooKeeper path under which this run keeps all its nodes.
    pub fn prefix(&self) -> String {
        format!("{}/{}", crate::workload::ROOT_PATH, self.run_id)
    }

    /// Sessions of worker `worker`: session i belongs to worker i % threads.
    pub fn sessions_of(&self, worker: usize) -> usize {
        assert!(worker < self.threads);
        self.sessions / self.threads + usize::from(worker < self.sessions % self.threads)
    }

    /// Checks the relationships the rest of the code relies on.
    pub fn assert_valid(&self) {
        assert!(!self.servers.is_empty());
        assert!((1..=SESSIONS_MAX).contains(&self.sessions));
        assert!((1..=OUTSTANDING_MAX).contains(&self.outstanding_max));
        assert!(self.sessions * self.outstanding_max <= OUTSTANDING_TOTAL_MAX);
        assert!((1..=THREADS_MAX).contains(&self.threads));
        assert!(self.threads <= self.sessions);
        assert!(self.read_pct <= 100);
        assert!(self.value_bytes <= VALUE_BYTES_MAX);
        assert!(self.session_timeout_ms > 0);
        assert!(!self.connect_timeout.is_zero());
        assert!(!self.request_timeout.is_zero());
    }
}

/// Monotonic nanoseconds since a base shared by every thread of the run.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    base: Instant,
}

impl Clock {
    pub fn new(base: Instant) -> Clock {
        Clock { base }
    }

    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    pub fn ns_of(&self, instant: Instant) -> u64 {
        let since = instant.saturating_duration_since(self.base);
        u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
    }
}

pub fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}
