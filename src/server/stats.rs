//! Server-wide counters read by the four-letter words. Updated with relaxed atomics: they are
//! statistics, never used to make a decision.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug)]
pub struct ServerStats {
    pub started: Instant,
    pub packets_received: AtomicU64,
    pub packets_sent: AtomicU64,
    pub connections: AtomicU64,
    pub outstanding: AtomicI64,
    pub latency_us_min: AtomicU64,
    pub latency_us_max: AtomicU64,
    pub latency_us_sum: AtomicU64,
    pub latency_count: AtomicU64,
    pub auth_failed_count: AtomicU64,
    pub connection_drop_count: AtomicU64,
    pub connection_rejected: AtomicU64,
    pub bytes_received: AtomicU64,
    /// Published by the replica core after each batch.
    pub last_zxid: AtomicI64,
    pub node_count: AtomicU64,
    pub session_count: AtomicU64,
    pub approximate_data_size: AtomicU64,
    pub ephemerals_count: AtomicU64,
    /// Bumped by `crst`; every shard resets its connections' figures when it sees a new value.
    pub crst_generation: AtomicU64,
    /// Bumped by `srst`; every shard clears its latency histograms when it sees a new value.
    pub srst_generation: AtomicU64,
    /// Session sets for `dump`: (expiry, wall-clock ms; session ids), published each tick by
    /// the replica core, at most `SESSIONS_DUMP_MAX` ids.
    pub session_sets: Mutex<Vec<(i64, Vec<i64>)>>,
    /// The replica core's disk, in ZooKeeper's mntr names: write + fdatasync of one group
    /// commit (ms), txns per group commit, snapshot duration (ms), start-up load.
    pub fsync_time_ms: Summary,
    pub sync_batch_txns: Summary,
    pub snapshot_time_ms: Summary,
    pub startup_txns_load_time_ms: Summary,
    pub startup_txns_loaded: Summary,
    pub db_init_time_ms: Summary,
    /// Keel's own: bytes per group commit (padding included) and the last snapshot's size.
    pub sync_batch_bytes: Summary,
    /// Group commits whose write + fdatasync took longer than `fsync_warning_threshold_ms`
    /// (ZooKeeper's zk_fsync_threshold_exceed_count and fsync.warningthresholdms).
    pub fsync_threshold_exceed_count: AtomicU64,
    pub fsync_warning_threshold_ms: AtomicU64,
    pub last_snapshot_bytes: AtomicU64,
    pub last_snapshot_zxid: AtomicI64,
    /// The ensemble role for `srvr`'s Mode and mntr (`server::quorum::STATE_*`).
    pub server_state: AtomicU8,
    /// Set while a server of an ensemble has no quorum: new connections are refused and the
    /// four-letter words say so, as ZooKeeper's do.
    pub not_serving: AtomicBool,
    /// An ensemble's figures for mntr, published by the replica core each tick.
    pub quorum: Mutex<QuorumFigures>,
}

/// mntr's quorum keys (ZooKeeper's names): zk_peer_state, zk_quorum_size and, on a leader,
/// zk_learners, zk_synced_followers, zk_synced_observers, zk_pending_syncs.
#[derive(Debug, Clone, Default)]
pub struct QuorumFigures {
    pub peer_state: &'static str,
    pub quorum_size: usize,
    pub learners: Option<crate::zab::LearnerCounts>,
    /// A leader's learner syncs waiting for a commit.
    pub pending_syncs: usize,
    /// Keel's own: how leaders synced this server since it started (DIFF, TRUNC, SNAP).
    pub syncs: [u64; 3],
    /// Keel's own, on a leader: SNAPs put off for a fresh snapshot.
    pub snapshot_waits: u64,
}

/// ZooKeeper's `AvgMinMaxCounter`: count, sum, min, max of recorded values.
#[derive(Debug)]
pub struct Summary {
    count: AtomicU64,
    sum: AtomicU64,
    min: AtomicU64,
    max: AtomicU64,
}

impl Default for Summary {
    fn default() -> Summary {
        Summary {
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0),
            min: AtomicU64::new(u64::MAX),
            max: AtomicU64::new(0),
        }
    }
}

impl Summary {
    pub fn record(&self, value: u64) {
        self.count.fetch_add(1, Relaxed);
        self.sum.fetch_add(value, Relaxed);
        self.min.fetch_min(value, Relaxed);
        self.max.fetch_max(value, Relaxed);
    }

    /// (count, sum, min, max), min 0 when nothing was recorded, as ZooKeeper prints it.
    pub fn read(&self) -> (u64, u64, u64, u64) {
        let count = self.count.load(Relaxed);
        let min = if count == 0 {
            0
        } else {
            self.min.load(Relaxed)
        };
        (count, self.sum.load(Relaxed), min, self.max.load(Relaxed))
    }
}

/// Sessions listed by `dump` at most.
pub const SESSIONS_DUMP_MAX: usize = 10_000;

impl Default for ServerStats {
    fn default() -> Self {
        ServerStats {
            started: Instant::now(),
            packets_received: AtomicU64::new(0),
            packets_sent: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            outstanding: AtomicI64::new(0),
            latency_us_min: AtomicU64::new(u64::MAX),
            latency_us_max: AtomicU64::new(0),
            latency_us_sum: AtomicU64::new(0),
            latency_count: AtomicU64::new(0),
            auth_failed_count: AtomicU64::new(0),
            connection_drop_count: AtomicU64::new(0),
            connection_rejected: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            last_zxid: AtomicI64::new(0),
            node_count: AtomicU64::new(0),
            session_count: AtomicU64::new(0),
            approximate_data_size: AtomicU64::new(0),
            ephemerals_count: AtomicU64::new(0),
            crst_generation: AtomicU64::new(0),
            srst_generation: AtomicU64::new(0),
            session_sets: Mutex::new(Vec::new()),
            fsync_time_ms: Summary::default(),
            fsync_threshold_exceed_count: AtomicU64::new(0),
            fsync_warning_threshold_ms: AtomicU64::new(FSYNC_WARNING_THRESHOLD_MS_DEFAULT),
            sync_batch_txns: Summary::default(),
            snapshot_time_ms: Summary::default(),
            startup_txns_load_time_ms: Summary::default(),
            startup_txns_loaded: Summary::default(),
            db_init_time_ms: Summary::default(),
            sync_batch_bytes: Summary::default(),
            last_snapshot_bytes: AtomicU64::new(0),
            last_snapshot_zxid: AtomicI64::new(0),
            server_state: AtomicU8::new(0),
            not_serving: AtomicBool::new(false),
            quorum: Mutex::new(QuorumFigures::default()),
        }
    }
}

/// ZooKeeper's default for `fsync.warningthresholdms`.
pub const FSYNC_WARNING_THRESHOLD_MS_DEFAULT: u64 = 1_000;

impl ServerStats {
    /// One group commit of the log: `took_ms` for its write + fdatasync, `txns` and `bytes`
    /// in it. Warns, as ZooKeeper does, when it took longer than the threshold.
    pub fn record_sync(&self, took_ms: u64, txns: u64, bytes: u64) {
        self.fsync_time_ms.record(took_ms);
        self.sync_batch_txns.record(txns);
        self.sync_batch_bytes.record(bytes);
        let threshold_ms = self.fsync_warning_threshold_ms.load(Relaxed);
        if took_ms > threshold_ms {
            self.fsync_threshold_exceed_count.fetch_add(1, Relaxed);
            tracing::warn!(
                took_ms,
                threshold_ms,
                txns,
                "fsync-ing the write ahead log took longer than fsync.warningthresholdms, \
                 which will adversely affect operation latency"
            );
        }
    }

    pub fn record_latency(&self, latency_us: u64) {
        self.latency_us_min.fetch_min(latency_us, Relaxed);
        self.latency_us_max.fetch_max(latency_us, Relaxed);
        self.latency_us_sum.fetch_add(latency_us, Relaxed);
        self.latency_count.fetch_add(1, Relaxed);
    }

    /// (min, avg, max) in milliseconds, as ZooKeeper prints them.
    pub fn latency_ms(&self) -> (f64, f64, f64) {
        let count = self.latency_count.load(Relaxed);
        if count == 0 {
            return (0.0, 0.0, 0.0);
        }
        let min = self.latency_us_min.load(Relaxed) as f64 / 1000.0;
        let max = self.latency_us_max.load(Relaxed) as f64 / 1000.0;
        let avg = self.latency_us_sum.load(Relaxed) as f64 / count as f64 / 1000.0;
        (min, avg, max)
    }

    /// `srst`: resets the latency and packet figures.
    pub fn reset(&self) {
        self.srst_generation.fetch_add(1, Relaxed);
        self.packets_received.store(0, Relaxed);
        self.packets_sent.store(0, Relaxed);
        self.latency_us_min.store(u64::MAX, Relaxed);
        self.latency_us_max.store(0, Relaxed);
        self.latency_us_sum.store(0, Relaxed);
        self.latency_count.store(0, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_commit_over_the_threshold_is_counted() {
        let stats = ServerStats::default();
        stats.fsync_warning_threshold_ms.store(20, Relaxed);
        stats.record_sync(20, 3, 300);
        assert_eq!(stats.fsync_threshold_exceed_count.load(Relaxed), 0);
        stats.record_sync(21, 5, 500);
        assert_eq!(stats.fsync_threshold_exceed_count.load(Relaxed), 1);
        assert_eq!(stats.sync_batch_txns.read(), (2, 8, 3, 5));
        assert_eq!(stats.fsync_time_ms.read(), (2, 41, 20, 21));
        assert_eq!(stats.sync_batch_bytes.read(), (2, 800, 300, 500));
    }
}
