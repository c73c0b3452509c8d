//! What a shard shows of itself to the four-letter words: its connections and watches.
//!
//! A four-letter word runs on the shard that accepted it. With several shards, each publishes
//! a bounded report of itself once a second into its slot of `SharedReports`, and the answering
//! shard combines its own live report with the others' latest. Nothing on the request path
//! reads or writes a report.

use super::{Conn, Shard};
use hdrhistogram::Histogram;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

/// Watches listed per report at most; counts stay exact beyond it.
pub const REPORT_WATCHES_MAX: usize = 100_000;

/// One connection as `cons` and `stat` print it.
#[derive(Debug, Clone)]
pub struct ConnReport {
    pub id: u64,
    pub peer: String,
    pub session_id: i64,
    /// ZooKeeper's `dumpConnectionInfo(brief = true)`, as `stat` prints it.
    pub brief: String,
    /// `dumpConnectionInfo(brief = false)`, as `cons` prints it.
    pub full: String,
}

#[derive(Debug, Clone, Default)]
pub struct ShardReport {
    pub conns: Vec<ConnReport>,
    /// (session id, path) for each data-side watch, at most `REPORT_WATCHES_MAX`.
    pub watches: Vec<(i64, String)>,
    /// Data-side watches, exact (wchs).
    pub data_watch_count: usize,
    /// Watches on both sides, exact (mntr's zk_watch_count).
    pub watch_count: usize,
    /// Latency histograms (µs) for mntr's readlatency and updatelatency summaries.
    pub read_latency_us: Option<Histogram<u64>>,
    pub update_latency_us: Option<Histogram<u64>>,
}

/// One slot per shard, indexed by shard id.
pub type SharedReports = Arc<Vec<Mutex<ShardReport>>>;

impl Shard {
    /// This shard's report, from live state.
    pub fn report(&self) -> ShardReport {
        let mut conns: Vec<ConnReport> = self
            .conns
            .borrow()
            .values()
            .map(|conn| ConnReport {
                id: conn.id,
                peer: conn.peer.to_string(),
                session_id: conn.session_id(),
                brief: connection_line(conn, true),
                full: connection_line(conn, false),
            })
            .collect();
        conns.sort_by_key(|conn| conn.id);
        let watches = self.watches.borrow();
        let session_of = |conn_id| {
            self.conns
                .borrow()
                .get(&conn_id)
                .map_or(0, |conn| conn.session_id())
        };
        let data_side = watches.data_side();
        let data_watch_count = data_side.len();
        let listed = data_side
            .into_iter()
            .take(REPORT_WATCHES_MAX)
            .map(|(conn_id, path)| (session_of(conn_id), path))
            .collect();
        ShardReport {
            conns,
            watches: listed,
            data_watch_count,
            watch_count: watches.watch_count(),
            read_latency_us: Some(self.read_latency_us.borrow().clone()),
            update_latency_us: Some(self.update_latency_us.borrow().clone()),
        }
    }

    /// This shard's live report followed by every other shard's latest.
    pub fn all_reports(&self) -> Vec<ShardReport> {
        let mut reports = vec![self.report()];
        for (index, slot) in self.reports.iter().enumerate() {
            if index != usize::from(self.id) {
                if let Ok(report) = slot.lock() {
                    reports.push(report.clone());
                }
            }
        }
        reports
    }

    /// Stores this shard's report for the others to read.
    pub fn publish_report(&self) {
        if let Some(slot) = self.reports.get(usize::from(self.id)) {
            let report = self.report();
            if let Ok(mut stored) = slot.lock() {
                *stored = report;
            }
        }
    }
}

/// ZooKeeper's `dumpConnectionInfo`.
fn connection_line(conn: &Conn, brief: bool) -> String {
    let state = conn.state.borrow();
    // ZooKeeper prints the selector's interest ops: 1 (read) for a serving connection, 0 for
    // one that is answering a four-letter word or closing.
    let interest_ops = u8::from(matches!(
        state.phase,
        super::conn::Phase::Open | super::conn::Phase::Handshaking
    ));
    let mut line = format!(
        " /{}[{interest_ops}](queued={},recved={},sent={}",
        conn.peer,
        state.queue.len(),
        state.packets_received,
        state.packets_sent
    );
    if !brief && state.session_id != 0 {
        let established_ms = conn
            .established
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let (min, avg, max) = match state.latency_us_sum.checked_div(state.latency_count) {
            None => (0, 0, 0),
            Some(avg_us) => (
                state.latency_us_min / 1000,
                avg_us / 1000,
                state.latency_us_max / 1000,
            ),
        };
        let _ = write!(
            line,
            ",sid={:#x},lop={},est={},to={},lcxid={:#x},lzxid={:#x},lresp={},llat={},minlat={},avglat={},maxlat={}",
            state.session_id,
            state.last_op,
            established_ms,
            state.timeout_ms,
            state.last_cxid,
            state.last_zxid,
            established_ms,
            0,
            min,
            avg,
            max
        );
    }
    line.push(')');
    line
}
