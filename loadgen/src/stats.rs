//! Latency and error accounting. Each worker owns a `Recorder` (no sharing on the request path);
//! a few times a second it adds its interval figures to the shared `Live` for the progress line,
//! and at the end the driver merges the recorders.

use crate::workload::OpKind;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Latencies are recorded in nanoseconds, up to an hour, with 3 significant digits.
pub const LATENCY_NS_MAX: u64 = 3_600_000_000_000;
const LATENCY_SIGNIFICANT_DIGITS: u8 = 3;

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_NS_MAX, LATENCY_SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

/// Figures for one operation type over the measured window.
#[derive(Debug, Clone)]
pub struct OpStats {
    /// Latency of each successful op: reply time minus intended send time.
    pub latency_ns: Histogram<u64>,
    pub ok_count: u64,
    pub error_count: u64,
}

/// Figures since the last progress flush, across all ops and the warmup too.
#[derive(Debug, Clone)]
pub struct Live {
    pub latency_ns: Histogram<u64>,
    pub ok_count: u64,
    pub error_count: u64,
    pub sessions_ready: i64,
}

impl Default for Live {
    fn default() -> Self {
        Live {
            latency_ns: new_histogram(),
            ok_count: 0,
            error_count: 0,
            sessions_ready: 0,
        }
    }
}

/// The cause recorded for each kind of failure that is not a ZooKeeper error code.
pub mod cause {
    /// The connection dropped with the op outstanding: its outcome is unknown.
    pub const CONNECTION_LOSS: &str = "connection_loss";
    /// The op was still outstanding when the run ended.
    pub const UNFINISHED: &str = "unfinished_at_end";
    /// A TCP connect or handshake failed or timed out.
    pub const CONNECT_FAILED: &str = "connect_failed";
    /// The server closed a connection, or it failed with an IO error.
    pub const CONNECTION_CLOSED: &str = "connection_closed";
    /// No reply to the oldest request (or a ping) within --request-timeout.
    pub const REQUEST_TIMEOUT: &str = "request_timeout";
    /// The server reported the session expired (handshake with timeout 0).
    pub const SESSION_EXPIRED: &str = "session_expired";
    /// The server sent bytes that do not decode, or a reply out of order.
    pub const PROTOCOL_ERROR: &str = "protocol_error";
}

/// One worker's figures.
#[derive(Debug, Clone)]
pub struct Recorder {
    pub per_op: Vec<OpStats>,
    pub errors_by_cause: BTreeMap<String, u64>,
    /// The first message seen for each cause, so the summary can say what happened.
    pub error_examples: BTreeMap<String, String>,
    /// Actual send time minus intended send time: the generator's own lateness (open loop).
    pub send_lag_ns: Histogram<u64>,
    window_start_ns: u64,
    window_end_ns: u64,
    interval: Live,
}

impl Recorder {
    /// Ops intended in `[window_start_ns, window_end_ns)` count; others (warmup) only show in
    /// the progress line.
    pub fn new(window_start_ns: u64, window_end_ns: u64) -> Recorder {
        assert!(window_start_ns <= window_end_ns);
        let per_op = OpKind::ALL
            .iter()
            .map(|_| OpStats {
                latency_ns: new_histogram(),
                ok_count: 0,
                error_count: 0,
            })
            .collect();
        Recorder {
            per_op,
            errors_by_cause: BTreeMap::new(),
            error_examples: BTreeMap::new(),
            send_lag_ns: new_histogram(),
            window_start_ns,
            window_end_ns,
            interval: Live::default(),
        }
    }

    pub fn set_window(&mut self, window_start_ns: u64, window_end_ns: u64) {
        assert!(window_start_ns <= window_end_ns);
        self.window_start_ns = window_start_ns;
        self.window_end_ns = window_end_ns;
    }

    fn in_window(&self, intended_ns: u64) -> bool {
        (self.window_start_ns..self.window_end_ns).contains(&intended_ns)
    }

    /// A request went out at `sent_ns`; it was meant to at `intended_ns`.
    pub fn record_send(&mut self, intended_ns: u64, sent_ns: u64) {
        if self.in_window(intended_ns) {
            let lag_ns = sent_ns.saturating_sub(intended_ns).max(1);
            self.send_lag_ns.saturating_record(lag_ns);
        }
    }

    /// A reply: `err` 0 records the latency, anything else is an error named by its code.
    pub fn record_reply(&mut self, kind: OpKind, intended_ns: u64, done_ns: u64, err: i32) {
        let latency_ns = done_ns.saturating_sub(intended_ns).max(1);
        if err == 0 {
            self.interval.ok_count += 1;
            self.interval.latency_ns.saturating_record(latency_ns);
            if self.in_window(intended_ns) {
                let stats = &mut self.per_op[kind.index()];
                stats.ok_count += 1;
                stats.latency_ns.saturating_record(latency_ns);
            }
            return;
        }
        self.record_op_failure(kind, intended_ns, &error_code_name(err), || {
            format!("{} returned {}", kind.name(), error_code_name(err))
        });
    }

    /// An op that got no reply (connection loss, end of run).
    pub fn record_op_failure(
        &mut self,
        kind: OpKind,
        intended_ns: u64,
        cause: &str,
        detail: impl FnOnce() -> String,
    ) {
        self.interval.error_count += 1;
        if self.in_window(intended_ns) {
            self.per_op[kind.index()].error_count += 1;
            self.count_cause(cause, detail);
        }
    }

    /// A failure of a session rather than an op; counted whenever it happens.
    pub fn record_session_failure(&mut self, cause: &str, detail: impl FnOnce() -> String) {
        self.interval.error_count += 1;
        self.count_cause(cause, detail);
    }

    fn count_cause(&mut self, cause: &str, detail: impl FnOnce() -> String) {
        *self.errors_by_cause.entry(cause.to_string()).or_insert(0) += 1;
        if !self.error_examples.contains_key(cause) {
            self.error_examples.insert(cause.to_string(), detail());
        }
    }

    pub fn adjust_sessions_ready(&mut self, delta: i64) {
        self.interval.sessions_ready += delta;
    }

    /// Adds the interval figures to `live` and starts a new interval.
    pub fn flush_interval(&mut self, live: &Mutex<Live>) {
        let mut shared = live.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        shared.ok_count += self.interval.ok_count;
        shared.error_count += self.interval.error_count;
        shared.sessions_ready += self.interval.sessions_ready;
        let _ = shared.latency_ns.add(&self.interval.latency_ns);
        drop(shared);
        self.interval.latency_ns.reset();
        self.interval.ok_count = 0;
        self.interval.error_count = 0;
        self.interval.sessions_ready = 0;
    }

    /// Adds another worker's figures to these.
    pub fn merge(&mut self, other: &Recorder) {
        for (mine, theirs) in self.per_op.iter_mut().zip(&other.per_op) {
            mine.ok_count += theirs.ok_count;
            mine.error_count += theirs.error_count;
            let _ = mine.latency_ns.add(&theirs.latency_ns);
        }
        let _ = self.send_lag_ns.add(&other.send_lag_ns);
        for (cause, count) in &other.errors_by_cause {
            *self.errors_by_cause.entry(cause.clone()).or_insert(0) += count;
        }
        for (cause, example) in &other.error_examples {
            self.error_examples
                .entry(cause.clone())
                .or_insert_with(|| example.clone());
        }
    }

    pub fn error_total(&self) -> u64 {
        self.errors_by_cause.values().sum()
    }
}

/// `NoNode`, `NodeExists`, …; an unknown code reads as `error(-999)`.
pub fn error_code_name(err: i32) -> String {
    let code = keel::proto::ErrorCode::from_code(err);
    if code.code() == err {
        format!("{code:?}")
    } else {
        format!("error({err})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ops_intended_inside_the_window_count() {
        // A warmup op and a late op only reach the progress figures; the one inside counts.
        let mut recorder = Recorder::new(1_000, 2_000);
        recorder.record_reply(OpKind::GetData, 500, 900, 0);
        recorder.record_reply(OpKind::GetData, 1_500, 1_700, 0);
        recorder.record_reply(OpKind::GetData, 2_000, 2_100, 0);
        recorder.record_reply(OpKind::SetData, 1_200, 1_300, -101);
        let get = &recorder.per_op[OpKind::GetData.index()];
        assert_eq!(get.ok_count, 1);
        assert_eq!(get.latency_ns.max(), 200);
        assert_eq!(recorder.per_op[OpKind::SetData.index()].error_count, 1);
        assert_eq!(recorder.errors_by_cause.get("NoNode"), Some(&1));
        let live = Mutex::new(Live::default());
        recorder.flush_interval(&live);
        let live = live.into_inner().unwrap();
        assert_eq!((live.ok_count, live.error_count), (3, 1));
    }

    #[test]
    fn merging_adds_counts_and_keeps_the_first_example() {
        // Two workers' recorders merge into one with summed counts.
        let mut a = Recorder::new(0, 100);
        let mut b = Recorder::new(0, 100);
        a.record_session_failure(cause::CONNECT_FAILED, || "first".to_string());
        b.record_session_failure(cause::CONNECT_FAILED, || "second".to_string());
        b.record_reply(OpKind::Exists, 10, 20, 0);
        a.merge(&b);
        assert_eq!(a.errors_by_cause[cause::CONNECT_FAILED], 2);
        assert_eq!(a.error_examples[cause::CONNECT_FAILED], "first");
        assert_eq!(a.per_op[OpKind::Exists.index()].ok_count, 1);
        assert_eq!(a.error_total(), 2);
        assert_eq!(error_code_name(-999), "error(-999)");
    }
}
