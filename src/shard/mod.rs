//! shard: one client-serving core — accepts connections, decodes frames, serves reads from its
//! current tree view, keeps its sessions' watches, forwards writes to the replica core and
//! applies the commit stream.
//!
//! Owns (per core, never shared): sockets, connection state, the watch registry, the view.
//! Must not: mutate the tree (only the replica core does), block, or grow a queue without bound.
//! Invariants (DESIGN.md §2):
//! - a commit batch is applied atomically between reads: triggers first, then the view switch,
//!   then replies, so a watch set by a read at view Z fires for the first change after Z;
//! - a connection's replies leave in request order; a read issued after the session's pending
//!   write waits for that write's commit;
//! - backpressure: a connection stops being read while it has `outstanding_max` requests in
//!   flight or `out_bytes_max` unsent bytes; a full replica queue stalls the sender;
//! - no shard serves an older state than any shard has already shown a client: a shard
//!   publishes each batch's zxid (`exposed_zxid`, shared by all shards) before it sends the
//!   batch's replies and events, and a shard whose view is older holds its reads (not its
//!   writes) until a view that new comes. Without this, client B on shard 2 could read an
//!   older version than client A on shard 1 had just been told of — a stale read ZooKeeper's
//!   single standalone tree never gives (found by keel-loadgen's linearizability checker
//!   with `keel.shards=2`);
//! - views come only when asked for (see `CommitBatch`): a shard asks (`Inbound::WantView`,
//!   once until one comes) when it serves a read or holds one for a newer view, so a load of
//!   writes alone makes the replica core copy no blocks for views.

pub mod conn;
mod read;
mod reply;
mod report;

use crate::config::Config;
use crate::io::{ConnectedSender, Signal};
use crate::proto::{perms, EventType};
use crate::replica::{CommitBatch, CommitEntry, Inbound, Route};
use crate::server::stats::ServerStats;
use crate::tree::{check_acl, ConnId, DataTree, WatchManager};
use hdrhistogram::Histogram;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

pub use conn::{serve_connection, Conn};
pub use report::{ConnReport, ShardReport, SharedReports, REPORT_WATCHES_MAX};

/// Per-connection limits, fixed at start-up.
#[derive(Debug, Clone)]
pub struct Limits {
    pub frame_bytes_max: u32,
    pub outstanding_max: usize,
    /// `globalOutstandingLimit`: above it, connections with requests in flight are not read.
    pub global_outstanding_max: i64,
    pub out_bytes_max: usize,
    pub connections_max: usize,
    pub connections_per_ip_max: usize,
}

/// The state of one shard, shared by its tasks through `Rc`.
pub struct Shard {
    pub id: u16,
    pub config: Arc<Config>,
    pub limits: Limits,
    pub stats: Arc<ServerStats>,
    pub sasl_users: Arc<HashMap<String, String>>,
    pub to_replica: ConnectedSender<Inbound>,
    pub view: RefCell<DataTree>,
    pub watches: RefCell<WatchManager>,
    pub conns: RefCell<HashMap<ConnId, Rc<Conn>>>,
    pub sessions: RefCell<HashMap<i64, ConnId>>,
    pub touched: RefCell<HashSet<i64>>,
    pub next_conn: Cell<u64>,
    /// Raised when the shard stops: accept loops and connections end.
    pub stopping: Cell<bool>,
    pub stop_signal: Signal,
    /// Every shard's latest report, for the four-letter words (see `report`).
    pub reports: SharedReports,
    /// The last `crst` generation this shard applied to its connections.
    pub crst_seen: Cell<u64>,
    /// The last `srst` generation this shard applied to its latency histograms.
    pub srst_seen: Cell<u64>,
    /// Request latencies in µs since the last `srst`: ZooKeeper's readlatency summary.
    pub read_latency_us: RefCell<Histogram<u64>>,
    /// The same for writes: ZooKeeper's updatelatency summary.
    pub update_latency_us: RefCell<Histogram<u64>>,
    /// The newest zxid any shard has shown a client (see the module header), shared by all
    /// shards.
    pub exposed_zxid: Arc<AtomicI64>,
    /// The zxid of the last batch applied here: replies and events sent so far are as of
    /// it. The view may be older.
    pub applied_zxid: Cell<i64>,
    /// A view was asked for and has not come yet.
    pub view_asked: Cell<bool>,
    /// Connections whose held reads stopped draining because the view was behind.
    pub lagging_conns: RefCell<Vec<ConnId>>,
}

/// A latency histogram: 1 µs to 1 h at 2 significant digits (a few KiB).
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("constant histogram bounds are valid")
}

impl Shard {
    pub fn route(&self, conn: ConnId) -> Route {
        Route {
            shard: self.id,
            conn,
        }
    }

    pub fn allocate_conn_id(&self) -> ConnId {
        let id = self.next_conn.get();
        self.next_conn.set(id + 1);
        (u64::from(self.id) << 48) | id
    }

    fn conn(&self, id: ConnId) -> Option<Rc<Conn>> {
        self.conns.borrow().get(&id).cloned()
    }

    /// Applies one commit batch: watch triggers, then its view (if it carries one) and its
    /// zxid, published as exposed, then replies; then serves the reads that waited for the
    /// view. True when the replica core must be asked for a view (`ask_for_view`).
    pub fn apply_batch(&self, batch: &CommitBatch) -> bool {
        self.fire_triggers(batch);
        if let Some(view) = &batch.view {
            *self.view.borrow_mut() = view.clone();
            self.view_asked.set(false);
        }
        let zxid = batch.figures.last_zxid;
        self.applied_zxid.set(self.applied_zxid.get().max(zxid));
        self.exposed_zxid.fetch_max(zxid, Ordering::AcqRel);
        for entry in &batch.entries {
            self.route_entry(entry);
        }
        if self.is_lagging() {
            return !self.lagging_conns.borrow().is_empty() && self.ask_for_view();
        }
        let lagging: Vec<ConnId> = self.lagging_conns.borrow_mut().drain(..).collect();
        for conn in lagging.into_iter().filter_map(|id| self.conn(id)) {
            conn.drain_deferred(self);
        }
        false
    }

    /// True while this shard's view is older than a state some shard has shown a client.
    pub fn is_lagging(&self) -> bool {
        self.view.borrow().last_zxid() < self.exposed_zxid.load(Ordering::Acquire)
    }

    /// True if the caller is to send `Inbound::WantView`: none was asked for since the last
    /// view came.
    pub fn ask_for_view(&self) -> bool {
        !self.view_asked.replace(true)
    }

    fn fire_triggers(&self, batch: &CommitBatch) {
        let mut watches = self.watches.borrow_mut();
        for entry in &batch.entries {
            let CommitEntry::Txn { triggers, .. } = entry else {
                continue;
            };
            for trigger in triggers {
                for (conn_id, event, path) in watches.trigger(trigger) {
                    let Some(conn) = self.conn(conn_id) else {
                        continue;
                    };
                    // ZooKeeper 3.8.4+ (ZOOKEEPER-4799): the watch is consumed, but the event
                    // reaches only a session that may READ the node it is about.
                    let auth_ids = conn.state.borrow().auth_ids.clone();
                    if self.config.skip_acl || check_acl(&trigger.acl, perms::READ, &auth_ids) {
                        conn.notify_watch(event, &path);
                    }
                }
            }
        }
    }

    fn route_entry(&self, entry: &CommitEntry) {
        match entry {
            CommitEntry::Txn {
                reply,
                closed_session,
                ..
            } => {
                if let Some(reply) = reply.as_ref().filter(|r| r.route.shard == self.id) {
                    if let Some(conn) = self.conn(reply.route.conn) {
                        conn.complete_write(self, reply.xid, &reply.result);
                    }
                }
                if let Some(session_id) = closed_session {
                    self.close_session_conn(*session_id);
                }
            }
            CommitEntry::SessionOpened {
                route,
                session_id,
                timeout_ms,
                password,
            } if route.shard == self.id => {
                if let Some(conn) = self.conn(route.conn) {
                    self.sessions.borrow_mut().insert(*session_id, route.conn);
                    conn.open_session(*session_id, *timeout_ms, *password);
                }
            }
            CommitEntry::SessionRejected { route } if route.shard == self.id => {
                if let Some(conn) = self.conn(route.conn) {
                    conn.reject_session();
                }
            }
            CommitEntry::SessionMoved { old: route } | CommitEntry::Overloaded { route }
                if route.shard == self.id =>
            {
                if let Some(conn) = self.conn(route.conn) {
                    conn.close();
                }
            }
            CommitEntry::Synced { route, xid, path } if route.shard == self.id => {
                if let Some(conn) = self.conn(route.conn) {
                    conn.complete_sync(self, *xid, path);
                }
            }
            CommitEntry::Disconnect => {
                let conns: Vec<Rc<Conn>> = self.conns.borrow().values().cloned().collect();
                for conn in conns {
                    conn.close();
                }
            }
            _ => {}
        }
    }

    /// A session ended (closeSession or expiry): its connection here, if any, is closed.
    fn close_session_conn(&self, session_id: i64) {
        let conn_id = self.sessions.borrow_mut().remove(&session_id);
        if let Some(conn) = conn_id.and_then(|id| self.conn(id)) {
            conn.close();
        }
    }

    /// Forgets a connection that has ended.
    pub fn drop_conn(&self, conn: &Conn) {
        self.conns.borrow_mut().remove(&conn.id);
        self.watches.borrow_mut().remove_conn(conn.id);
        let session_id = conn.session_id();
        let mut sessions = self.sessions.borrow_mut();
        if sessions.get(&session_id) == Some(&conn.id) {
            sessions.remove(&session_id);
        }
    }

    /// Sessions with traffic since the last call.
    pub fn take_touched(&self) -> Vec<i64> {
        self.touched.borrow_mut().drain().collect()
    }

    pub fn record_latency(&self, kind: conn::Latency, latency_us: u64) {
        let histogram = match kind {
            conn::Latency::Read => &self.read_latency_us,
            conn::Latency::Update => &self.update_latency_us,
        };
        // Saturate rather than fail: a latency above an hour is recorded as an hour.
        histogram.borrow_mut().saturating_record(latency_us.max(1));
    }

    /// Applies an `srst` issued on any shard: clears this shard's latency histograms.
    pub fn reset_server_stats_if_asked(&self) {
        let generation = self
            .stats
            .srst_generation
            .load(std::sync::atomic::Ordering::Relaxed);
        if generation == self.srst_seen.replace(generation) {
            return;
        }
        self.read_latency_us.borrow_mut().reset();
        self.update_latency_us.borrow_mut().reset();
    }

    /// Applies a `crst` issued on any shard: resets this shard's per-connection figures.
    pub fn reset_connection_stats_if_asked(&self) {
        let generation = self
            .stats
            .crst_generation
            .load(std::sync::atomic::Ordering::Relaxed);
        if generation == self.crst_seen.replace(generation) {
            return;
        }
        for conn in self.conns.borrow().values() {
            let mut state = conn.state.borrow_mut();
            state.packets_received = 0;
            state.packets_sent = 0;
            state.latency_us_min = u64::MAX;
            state.latency_us_max = 0;
            state.latency_us_sum = 0;
            state.latency_count = 0;
        }
    }

    pub fn connections_from(&self, ip: std::net::IpAddr) -> usize {
        self.conns
            .borrow()
            .values()
            .filter(|conn| conn.peer.ip() == ip)
            .count()
    }
}

/// Notification event types as sent on the wire.
pub fn event_code(event: EventType) -> i32 {
    event as i32
}

/// The four-letter word in a connection's first 4 bytes, if they are one.
pub fn fourlw_command(first: &[u8]) -> Option<&'static str> {
    crate::server::fourlw::COMMANDS
        .into_iter()
        .find(|command| command.as_bytes() == first)
}
