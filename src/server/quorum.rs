//! quorum: the replica core of a server in an ensemble (`server.N` lines): the `Replica`
//! driven by ZAB (`zab::net`) instead of the standalone write-ahead log.
//!
//! Owns: the zab driver, the bridge of its events into the replica core, a leader's sealed
//! batches waiting for their commit and its committed tree (`LeaderBase`), the ensemble
//! role shown to `srvr` and `mntr`, and the snapshot (compaction) policy.
//! Must not: ship a batch to the shards before ZAB committed every txn in it (a leader's tree
//! runs ahead: it prepares and applies speculatively), or keep speculative state when the
//! leadership ends (`rollback`: back to the committed view, every client disconnected).
//! Durability: the zab driver's store (`zab::store`, one fsync per batch of proposals) holds
//! the epochs, the log and the last snapshot in `<dataDir>/version-2/`.
//!
//! Flow on a leader: shard → `Replica::step` (prep + speculative apply, zxid from the epoch)
//! → `seal_batch` → `Driver::propose_at` with the batch's txns → the batch waits in `waiting`
//! → ZAB commits (Event::Apply of our own zxids) → the batch goes to the shards. On a
//! learner: shard → `Replica::step` (forward) → `Driver::forward` → the leader → commit →
//! Event::Apply → `Replica::apply_committed` (replies to our own waiting clients) → shards.
//! A learner's sync: forwarded as a REQUEST; the leader's replica core hands the learner to
//! `Driver::sync_learners` after the proposals before it; ZAB sends SYNC once they commit;
//! Event::SyncsAnswered → `Replica::syncs_answered`. A session unknown to a learner:
//! `Driver::revalidate` → the leader's Event::Revalidate → `Replica::revalidate` →
//! `Driver::answer_revalidations` → the learner's Event::Revalidated → `Replica::revalidated`.

use super::stats::ServerStats;
use super::{publish_stats, ServerError};
use crate::config::Config;
use crate::log::record::{decode_txn, encode_txn};
use crate::proto::Id;
use crate::replica::forward::{decode_touches, encode_touches, Forwarded};
use crate::replica::{CommitBatch, CommitEntry, Now, Replica, Role as ReplicaRole};
use crate::tree::{DataTree, TreeFigures, Txn, TxnHeader};
use crate::zab::net::{Driver, Event, NetConfig};
use crate::zab::AuthId;
use crate::zab::{Apply, Payload, Role, Snapshot, Zxid};
use crossbeam::channel::{self, Receiver, Sender};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::sync::Mutex;
use std::task::{Poll, Waker};
use std::time::Duration;

/// Events the zab driver may queue for the replica core before it blocks (backpressure on
/// the driver thread, which then stops reading its sockets).
const EVENTS_QUEUED_MAX: usize = 65_536;
/// Events taken per wake-up of the replica core.
pub(super) const EVENTS_PER_WAKE_MAX: usize = 4096;
/// Leader: txns committed since the last view released, at most, before one is asked for
/// (`LeaderBase`): what a lost leadership replays to rebuild the committed tree.
const TXNS_SINCE_VIEW_MAX: usize = 16_384;
/// How long a compaction may wait for the driver's answer.
const COMPACT_TIMEOUT: Duration = Duration::from_secs(60);

/// `srvr`'s Mode and mntr's zk_server_state, as `ServerStats::server_state` holds them.
pub const STATE_STANDALONE: u8 = 0;
pub const STATE_LEADER: u8 = 1;
pub const STATE_FOLLOWER: u8 = 2;
pub const STATE_OBSERVER: u8 = 3;
pub const STATE_LOOKING: u8 = 4;

/// ZooKeeper's name of a `ServerStats::server_state` value.
pub fn state_name(state: u8) -> &'static str {
    match state {
        STATE_LEADER => "leader",
        STATE_FOLLOWER => "follower",
        STATE_OBSERVER => "observer",
        STATE_LOOKING => "looking",
        _ => "standalone",
    }
}

/// The running zab driver and the receiving end of its events.
pub(super) struct Ensemble {
    driver: Arc<Driver>,
    events: EventInbox,
    snapshot_dir: PathBuf,
    snap_count: u64,
}

/// The zab driver's events on their way to the replica core: a bounded channel, and the
/// waker of the replica core's task waiting on it, woken from the driver thread (glommio
/// takes foreign wake-ups through its eventfd).
#[derive(Clone)]
pub(super) struct EventInbox {
    events: Receiver<Event>,
    waiting: Arc<Mutex<Option<Waker>>>,
}

/// The driver's end of the events: wakes the replica core's task for each event, and once
/// more when the driver drops it (its loop ended), after closing the channel, so that the
/// task sees the driver gone instead of waiting for an event that never comes.
struct EventOutbox {
    sender: Option<Sender<Event>>,
    waiting: Arc<Mutex<Option<Waker>>>,
}

impl EventOutbox {
    fn send(&self, event: Event) {
        if let Some(sender) = &self.sender {
            // The receiver is gone only when the replica core stopped; so does the server.
            let _ = sender.send(event);
        }
        self.wake();
    }

    fn wake(&self) {
        if let Some(waker) = lock(&self.waiting).take() {
            waker.wake();
        }
    }
}

impl Drop for EventOutbox {
    fn drop(&mut self) {
        drop(self.sender.take());
        self.wake();
    }
}

impl EventInbox {
    /// Moves the events queued now (at most `EVENTS_PER_WAKE_MAX`) into the empty `taken`,
    /// waiting for one if there are none; leaves it empty once the driver is gone. The
    /// caller keeps `taken` from wake to wake: a catch-up's thousands of events per wake
    /// then cost no allocation.
    pub(super) async fn next(&self, taken: &mut Vec<Event>) {
        std::future::poll_fn(|cx| {
            if self.take(taken) || !taken.is_empty() {
                return Poll::Ready(());
            }
            *lock(&self.waiting) = Some(cx.waker().clone());
            // An event sent before the waker was stored found no waker to wake: look again.
            if self.take(taken) || !taken.is_empty() {
                return Poll::Ready(());
            }
            Poll::Pending
        })
        .await;
    }

    /// Moves what is queued into `taken`; true if the driver is gone.
    fn take(&self, taken: &mut Vec<Event>) -> bool {
        while taken.len() < EVENTS_PER_WAKE_MAX {
            match self.events.try_recv() {
                Ok(event) => taken.push(event),
                Err(channel::TryRecvError::Empty) => return false,
                Err(channel::TryRecvError::Disconnected) => return true,
            }
        }
        false
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Ensemble {
    /// The driver's events, for the replica core's task that waits on them.
    pub(super) fn events(&self) -> EventInbox {
        self.events.clone()
    }

    /// Starts the zab driver for `config`'s `server.N` lines.
    ///
    /// # Errors
    /// The configuration cannot run (e.g. a non-loopback address), the store cannot be
    /// read, or a port is in use.
    pub(super) fn start(config: &Config) -> Result<Ensemble, ServerError> {
        let error = |reason: String| ServerError::Log {
            dir: config.data_dir.display().to_string(),
            reason,
        };
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            ^ config.server_id;
        tracing::info!(id = config.server_id, "ensemble: starting");
        let net = NetConfig::from_server_config(config, seed)
            .map_err(|e| error(format!("ensemble configuration: {e}")))?;
        if !net.force_sync {
            tracing::warn!(
                "forceSync=no: proposals are acknowledged before they are on disk (benchmarks only)"
            );
        }
        let (sender, events) = channel::bounded(EVENTS_QUEUED_MAX);
        let waiting: Arc<Mutex<Option<Waker>>> = Arc::default();
        let outbox = EventOutbox {
            sender: Some(sender),
            waiting: waiting.clone(),
        };
        let on_event = Box::new(move |event: Event| outbox.send(event));
        let driver = Driver::start_with_events(net, on_event)
            .map_err(|e| error(format!("starting the ensemble driver: {e}")))?;
        Ok(Ensemble {
            driver: Arc::new(driver),
            events: EventInbox { events, waiting },
            snapshot_dir: config.data_dir.join("keel-ensemble"),
            snap_count: u64::from(config.snap_count.max(2)),
        })
    }
}

/// A leader's sealed batch waiting for ZAB to commit its last txn.
struct Waiting {
    batch: CommitBatch,
    txns: Vec<(TxnHeader, Txn)>,
}

/// Leader: the committed tree, kept as the last view released plus the txns of the batches
/// released since without one (most carry none: see `CommitBatch`). Holding a view of every
/// batch instead would make every write copy its blocks, as shards' views did.
struct LeaderBase {
    view: DataTree,
    txns_since: Vec<(TxnHeader, Txn)>,
    /// A snapshot came due when this zxid was committed: it waits for a view that new.
    snapshot_due_at: Option<i64>,
}

impl LeaderBase {
    fn new(view: DataTree) -> LeaderBase {
        LeaderBase {
            view,
            txns_since: Vec::new(),
            snapshot_due_at: None,
        }
    }

    /// The committed tree, rebuilt.
    fn committed_tree(&self) -> DataTree {
        let mut tree = self.view.clone();
        for (header, txn) in &self.txns_since {
            tree.apply(header, txn);
        }
        tree
    }
}

/// The replica core's ensemble state, stepped on the replica core's executor.
pub(super) struct QuorumCore {
    pub replica: Replica,
    driver: Arc<Driver>,
    stats: Arc<ServerStats>,
    waiting: VecDeque<Waiting>,
    /// The last zxid ZAB committed (and this server applied or confirmed).
    committed_zxid: i64,
    /// The figures of the last batch released to the shards, for srvr and mntr.
    committed_figures: TreeFigures,
    /// Leader: the committed tree to go back to. A learner's own tree is committed.
    leader_base: Option<LeaderBase>,
    /// Batches ready for the shards, in order.
    outgoing: Vec<CommitBatch>,
    snapshot_dir: PathBuf,
    snap_count: u64,
    txns_since_snapshot: u64,
    snapshot_running: bool,
    /// Leader: a learner waits for a snapshot newer than this (`Event::SnapshotWanted`).
    snapshot_wanted: Option<i64>,
    /// The zxid of the last snapshot job started: it is offered to waiting learners.
    snapshot_started_zxid: i64,
    /// Leader: answers to learners' REVALIDATEs (learner, session id, valid) to send.
    revalidation_answers: Vec<(u64, i64, bool)>,
}

impl QuorumCore {
    pub(super) fn new(
        ensemble: &Ensemble,
        replica: Replica,
        stats: Arc<ServerStats>,
    ) -> QuorumCore {
        stats.server_state.store(STATE_LOOKING, Relaxed);
        stats.not_serving.store(true, Relaxed);
        let mut replica = replica;
        replica.set_role(ReplicaRole::Looking);
        QuorumCore {
            committed_zxid: replica.tree().last_zxid(),
            committed_figures: replica.tree().figures(),
            leader_base: None,
            replica,
            driver: ensemble.driver.clone(),
            stats,
            waiting: VecDeque::new(),
            outgoing: Vec::new(),
            snapshot_dir: ensemble.snapshot_dir.clone(),
            snap_count: ensemble.snap_count,
            txns_since_snapshot: 0,
            snapshot_running: false,
            snapshot_wanted: None,
            snapshot_started_zxid: 0,
            revalidation_answers: Vec::new(),
        }
    }

    /// Handles one event of the zab driver.
    pub(super) fn on_event(&mut self, event: Event, now: Now) {
        match event {
            Event::Apply(Apply::Entry(entry)) => {
                let zxid = i64::try_from(entry.zxid.0).unwrap_or(i64::MAX);
                self.on_commit(zxid, &entry.payload, now);
            }
            Event::Apply(Apply::Snapshot(snapshot)) => self.install(&snapshot, now),
            Event::Role { role, next_zxid } => self.on_role(role, next_zxid, now),
            Event::Request {
                from,
                payload,
                auth,
            } => {
                let ids = auth.iter().map(|a| Id::new(&a.scheme, &a.id)).collect();
                let stepped = Forwarded::decode(&payload, ids)
                    .and_then(|request| self.replica.step_forwarded(request, from, now));
                if let Err(error) = stepped {
                    tracing::warn!(from, %error, "dropping a malformed forwarded request");
                }
            }
            Event::Revalidate(asked) => {
                let valid = self.replica.revalidate(asked.session_id, now);
                self.revalidation_answers
                    .push((asked.from, asked.session_id, valid));
            }
            Event::Revalidated { session_id, valid } => {
                self.replica.revalidated(session_id, valid);
            }
            Event::SyncsAnswered(count) => self.replica.syncs_answered(count),
            Event::Touches { from, payload } => match decode_touches(&payload) {
                Ok(touches) => self.replica.touch_sessions(&touches, now),
                Err(error) => tracing::warn!(from, %error, "dropping malformed session touches"),
            },
            Event::SnapshotWanted { newer_than } => {
                let zxid = i64::try_from(newer_than.0).unwrap_or(i64::MAX);
                self.snapshot_wanted = Some(self.snapshot_wanted.map_or(zxid, |z| z.max(zxid)));
            }
            Event::Synced(batch) => self.stats.record_sync(
                u64::try_from(batch.took.as_millis()).unwrap_or(u64::MAX),
                batch.entries,
                batch.bytes,
            ),
        }
    }

    fn on_commit(&mut self, zxid: i64, payload: &[u8], now: Now) {
        self.txns_since_snapshot += 1;
        if zxid <= self.replica.tree().last_zxid() {
            // One of this leader's own proposals: already applied, now committed.
            self.committed_zxid = zxid;
            self.replica.committed_through(zxid);
            return;
        }
        let (header, txn) = match decode_txn(payload) {
            Ok(decoded) => decoded,
            // Going on would make this server's state differ from the ensemble's.
            Err(error) => panic!("committed txn {zxid:#x} cannot be decoded: {error}"),
        };
        assert_eq!(header.zxid, zxid, "a committed txn's header names its zxid");
        self.replica.apply_committed(&header, txn, now);
        self.committed_zxid = zxid;
    }

    fn install(&mut self, snapshot: &Snapshot, now: Now) {
        let loading = std::time::Instant::now();
        let dir = &self.snapshot_dir;
        let loaded =
            crate::io::run_unpinned("keel-snap-load", || load_snapshot_bytes(dir, snapshot));
        let loaded = match loaded {
            Ok(loaded) => loaded,
            Err(error) => panic!(
                "the snapshot at {} cannot be loaded: {error}",
                snapshot.zxid
            ),
        };
        tracing::info!(
            zxid = %snapshot.zxid,
            nodes = loaded.tree.node_count(),
            sessions = loaded.sessions.len(),
            load_ms = loading.elapsed().as_millis() as u64,
            "installed the snapshot"
        );
        self.replica.install(loaded.tree, &loaded.sessions, now);
        self.waiting.clear();
        self.committed_zxid = self.replica.tree().last_zxid();
        self.release_disconnect();
    }

    fn on_role(&mut self, role: Role, next_zxid: Option<Zxid>, now: Now) {
        tracing::info!(?role, ?next_zxid, "ensemble role");
        if matches!(self.replica.role(), ReplicaRole::Leader { .. }) {
            self.rollback(now);
        }
        let (replica_role, state) = match role {
            Role::Leading { serving: true } => match next_zxid {
                Some(next) => (
                    ReplicaRole::Leader {
                        next_zxid: i64::try_from(next.0).unwrap_or(i64::MAX),
                    },
                    STATE_LEADER,
                ),
                None => (ReplicaRole::Looking, STATE_LOOKING),
            },
            Role::Following { serving: true, .. } => (ReplicaRole::Learner, STATE_FOLLOWER),
            Role::Observing { serving: true, .. } => (ReplicaRole::Learner, STATE_OBSERVER),
            Role::Leading { .. } | Role::Following { .. } | Role::Observing { .. } => {
                (ReplicaRole::Looking, STATE_LOOKING)
            }
            Role::Looking => (ReplicaRole::Looking, STATE_LOOKING),
        };
        // ZooKeeper closes every client connection when a serving server's role changes;
        // the clients reconnect (to this server once it serves again, or another one). A
        // server that was not serving has no sessions to drop, and closing then could hit a
        // client that connected the moment serving began.
        self.seal_and_release();
        if self.replica.role() != ReplicaRole::Looking {
            self.release_disconnect();
        }
        // The replica core's tree is committed here (a leader's was rolled back above): a new
        // leader's base.
        self.leader_base = matches!(replica_role, ReplicaRole::Leader { .. })
            .then(|| LeaderBase::new(self.replica.tree().clone()));
        self.replica.set_role(replica_role);
        self.stats.server_state.store(state, Relaxed);
        self.stats
            .not_serving
            .store(replica_role == ReplicaRole::Looking, Relaxed);
        // mntr's quorum keys change with the role, as srvr's Mode just did: not half a tick
        // later.
        self.publish_quorum();
    }

    /// Every client connection is closed, and the shards get the replica core's tree (which
    /// must be committed) as their view.
    fn release_disconnect(&mut self) {
        let view = self.replica.tree().clone();
        let figures = view.figures();
        self.committed_figures = figures;
        self.outgoing.push(CommitBatch {
            figures,
            view: Some(view),
            entries: vec![CommitEntry::Disconnect],
            txns: Vec::new(),
        });
    }

    /// A leadership ended: back to what ZAB committed. The txns of waiting batches that did
    /// commit are applied again on the committed tree; the others are dropped.
    fn rollback(&mut self, now: Now) {
        let Some(base) = self.leader_base.take() else {
            return;
        };
        let mut tree = base.committed_tree();
        for waiting in self.waiting.drain(..) {
            for (header, txn) in &waiting.txns {
                if header.zxid <= self.committed_zxid {
                    tree.apply(header, txn);
                }
            }
        }
        let dropped = self.replica.tree().last_zxid() - tree.last_zxid();
        if dropped > 0 {
            tracing::warn!(
                dropped,
                committed = format_args!("{:#x}", tree.last_zxid()),
                "leadership ended with uncommitted proposals; they are dropped"
            );
        }
        self.committed_zxid = tree.last_zxid();
        self.replica.reset_to(tree, now);
    }

    /// Seals what the replica core did since the last call: a leader proposes it and holds
    /// it until committed; anything else is committed already. Then moves committed batches
    /// to `outgoing`.
    pub(super) fn seal_and_release(&mut self) {
        self.hand_requests_to_leader();
        if let Some(mut batch) = self.replica.seal_batch() {
            if matches!(self.replica.role(), ReplicaRole::Leader { .. }) {
                let txns = std::mem::take(&mut batch.txns);
                if let Some((first, _)) = txns.first() {
                    let payloads = txns
                        .iter()
                        .map(|(header, txn)| {
                            let mut bytes = Vec::with_capacity(64);
                            encode_txn(header, txn, &mut bytes);
                            Payload::from(bytes)
                        })
                        .collect();
                    let first = Zxid(u64::try_from(first.zxid).unwrap_or(0));
                    if let Err(error) = self.driver.propose_at(first, payloads) {
                        // The driver's next proposal will not follow on: it steps down and
                        // the role change rolls this back.
                        tracing::error!(%error, "could not hand proposals to the zab driver");
                    }
                }
                self.waiting.push_back(Waiting { batch, txns });
            } else {
                self.committed_zxid = self.committed_zxid.max(batch.figures.last_zxid);
                self.committed_figures = batch.figures;
                self.outgoing.push(batch);
            }
        }
        self.answer_learners();
        while self
            .waiting
            .front()
            .is_some_and(|w| w.batch.figures.last_zxid <= self.committed_zxid)
        {
            let Some(waiting) = self.waiting.pop_front() else {
                break;
            };
            self.committed_figures = waiting.batch.figures;
            if let Some(base) = &mut self.leader_base {
                match &waiting.batch.view {
                    Some(view) => {
                        base.view = view.clone();
                        base.txns_since.clear();
                    }
                    None => base.txns_since.extend(waiting.txns),
                }
                if base.txns_since.len() >= TXNS_SINCE_VIEW_MAX {
                    self.replica.want_view();
                }
            }
            self.outgoing.push(waiting.batch);
        }
    }

    /// The committed tree to snapshot: a learner's own; a leader's last view released (its
    /// own tree runs ahead), once that view holds all that was committed when the snapshot
    /// came due and is newer than what a waiting learner asked for. Until then it asks for a
    /// view and returns none; a later call has it.
    fn snapshot_tree(&mut self) -> Option<DataTree> {
        let Some(base) = &mut self.leader_base else {
            return Some(self.replica.tree().clone());
        };
        let due_at = *base.snapshot_due_at.get_or_insert(self.committed_zxid);
        let wanted = self
            .snapshot_wanted
            .map_or(0, |newer_than| newer_than.saturating_add(1));
        if base.view.last_zxid() < due_at.max(wanted) {
            self.replica.want_view();
            return None;
        }
        base.snapshot_due_at = None;
        Some(base.view.clone())
    }

    /// Learner: forwards requests (REQUEST) and asks about unknown sessions (REVALIDATE).
    fn hand_requests_to_leader(&mut self) {
        let forwards = self.replica.take_forwards();
        if !forwards.is_empty() {
            let requests = forwards
                .into_iter()
                .map(|f| {
                    let auth = f.auth_ids.iter().map(|id| AuthId {
                        scheme: id.scheme.to_string(),
                        id: id.id.to_string(),
                    });
                    (Payload::from(f.encode()), auth.collect())
                })
                .collect();
            if let Err(error) = self.driver.forward(requests) {
                tracing::warn!(%error, "could not forward requests to the leader");
            }
        }
        let revalidations = self.replica.take_revalidations();
        if !revalidations.is_empty() {
            if let Err(error) = self.driver.revalidate(revalidations) {
                tracing::warn!(%error, "could not ask the leader to revalidate sessions");
            }
        }
    }

    /// Leader: learners' syncs (after the proposals sealed before them) and REVALIDATE
    /// answers go to the driver.
    fn answer_learners(&mut self) {
        let syncs = self.replica.take_learner_syncs();
        if !syncs.is_empty() {
            if let Err(error) = self.driver.sync_learners(syncs) {
                tracing::warn!(%error, "could not hand learners' syncs to the zab driver");
            }
        }
        let answers = std::mem::take(&mut self.revalidation_answers);
        if !answers.is_empty() {
            if let Err(error) = self.driver.answer_revalidations(answers) {
                tracing::warn!(%error, "could not answer learners' revalidations");
            }
        }
    }

    pub(super) fn take_outgoing(&mut self) -> Vec<CommitBatch> {
        std::mem::take(&mut self.outgoing)
    }

    /// Learner: hands the driver the sessions touched since the last call for its PINGs.
    pub(super) fn report_touches(&mut self) {
        let touches = self.replica.take_touches();
        if touches.is_empty() {
            return;
        }
        if let Err(error) = self
            .driver
            .add_ping_reply(Payload::from(encode_touches(&touches)))
        {
            tracing::warn!(%error, "could not report session touches");
        }
    }

    /// A snapshot of the committed tree is due (every ~snapCount txns, or at once for a
    /// learner waiting for a SNAP): returns what to write, and marks one running until
    /// `snapshot_done`. One that is running already serves a waiting learner when it ends.
    pub(super) fn snapshot_due(&mut self) -> Option<SnapshotJob> {
        if self
            .snapshot_wanted
            .is_some_and(|newer_than| self.snapshot_started_zxid > newer_than)
        {
            // A job started since (maybe still running) is newer: it is offered when built.
            self.snapshot_wanted = None;
        }
        let due = self.snapshot_wanted.is_some() || self.txns_since_snapshot >= self.snap_count;
        if self.snapshot_running || !due {
            return None;
        }
        let tree = self.snapshot_tree()?;
        let zxid = tree.last_zxid();
        if zxid <= 0 {
            return None;
        }
        self.snapshot_running = true;
        self.snapshot_wanted = None;
        self.snapshot_started_zxid = zxid;
        self.txns_since_snapshot = 0;
        let sessions = self
            .replica
            .sessions()
            .iter()
            .filter(|s| !s.closing)
            .map(|s| (s.id, s.timeout_ms))
            .collect();
        Some(SnapshotJob {
            tree,
            sessions,
            driver: self.driver.clone(),
        })
    }

    pub(super) fn snapshot_done(&mut self) {
        self.snapshot_running = false;
    }

    /// Why the zab driver stopped by itself, if it did (see `net::Status::fatal`).
    pub(super) fn driver_failure(&self) -> Option<String> {
        self.driver.status().fatal
    }

    /// Copies the driver's role and learner counts into the mntr figures.
    pub(super) fn publish_quorum(&self) {
        let status = self.driver.status();
        let peer_state = match status.role {
            Role::Looking => "looking - election",
            Role::Leading { serving: true } => "leading - broadcast",
            Role::Leading { serving: false } => "leading - synchronization",
            Role::Following { serving: true, .. } => "following - broadcast",
            Role::Following { serving: false, .. } => "following - synchronization",
            Role::Observing { serving: true, .. } => "observing - broadcast",
            Role::Observing { serving: false, .. } => "observing - synchronization",
        };
        let figures = super::stats::QuorumFigures {
            peer_state,
            quorum_size: status.quorum_size,
            learners: status.learners,
            pending_syncs: status.pending_syncs.unwrap_or(0),
            syncs: [
                status.counters.syncs_diff,
                status.counters.syncs_trunc,
                status.counters.syncs_snap,
            ],
            snapshot_waits: status.snapshot_waits,
        };
        if let Ok(mut stored) = self.stats.quorum.lock() {
            *stored = figures;
        }
    }

    pub(super) fn publish(&self) {
        publish_stats(&self.stats, self.committed_figures, &self.replica);
    }
}

/// A snapshot to build off the replica core and hand to the driver for compaction.
pub struct SnapshotJob {
    tree: DataTree,
    sessions: Vec<(i64, i32)>,
    driver: Arc<Driver>,
}

impl SnapshotJob {
    /// The zxid of the state it captures.
    pub(super) fn zxid(&self) -> i64 {
        self.tree.last_zxid()
    }

    /// Builds the snapshot in Keel's format in memory and hands it to the driver, which
    /// persists it (its one write and fsync), drops the log before it, and sends it to
    /// learners that need a SNAP. Runs on a blocking thread.
    pub(super) fn run(self) -> Result<u64, String> {
        let building = std::time::Instant::now();
        let zxid = self.tree.last_zxid();
        let bytes = crate::snapshot::snapshot_bytes(&self.tree, &self.sessions)
            .map_err(|e| e.to_string())?;
        let len = bytes.len() as u64;
        let snapshot = Snapshot {
            zxid: Zxid(u64::try_from(zxid).unwrap_or(0)),
            data: bytes.into(),
        };
        let build_ms = building.elapsed().as_millis() as u64;
        // Learners waiting for a SNAP get it now, not after the write and fsync below.
        self.driver
            .offer_snapshot(snapshot.clone())
            .map_err(|e| e.to_string())?;
        let compacting = std::time::Instant::now();
        self.driver
            .compact(snapshot, COMPACT_TIMEOUT)
            .map_err(|e| e.to_string())?;
        tracing::info!(
            zxid = format_args!("{zxid:#x}"),
            bytes = len,
            build_ms,
            compact_ms = compacting.elapsed().as_millis() as u64,
            "ensemble snapshot taken"
        );
        Ok(len)
    }
}

/// Loads a snapshot received (or stored) as bytes, in place, with the snapshot module's
/// checks; `dir` only names it in errors.
fn load_snapshot_bytes(
    dir: &std::path::Path,
    snapshot: &Snapshot,
) -> Result<crate::snapshot::LoadedSnapshot, String> {
    // Errors name the file a SNAP was received into, or what it would have been called.
    let origin = snapshot.data.file().map_or_else(
        || dir.join(format!("received.{:x}", snapshot.zxid.0)),
        std::path::Path::to_path_buf,
    );
    crate::snapshot::load_snapshot_bytes(&snapshot.data, &origin).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::op;

    fn set_data(zxid: i64, value: &[u8]) -> (TxnHeader, Txn) {
        let header = TxnHeader {
            session_id: 1,
            cxid: 0,
            zxid,
            time_ms: zxid,
            op: op::SET_DATA,
        };
        let txn = Txn::SetData {
            path: "/zookeeper".to_owned(),
            data: Some(Arc::from(value)),
            version: i32::try_from(zxid).unwrap_or(i32::MAX),
        };
        (header, txn)
    }

    fn data_at(tree: &DataTree) -> Vec<u8> {
        let node = tree.node("/zookeeper").expect("a system node");
        node.data().map(|data| data.to_vec()).unwrap_or_default()
    }

    #[test]
    fn a_leader_base_rebuilds_the_committed_tree_from_its_view_and_the_txns_since() {
        let mut tree = DataTree::new();
        let (header, txn) = set_data(1, b"v1");
        tree.apply(&header, &txn);
        let mut base = LeaderBase::new(tree.clone());
        for zxid in 2..=4 {
            let (header, txn) = set_data(zxid, format!("v{zxid}").as_bytes());
            tree.apply(&header, &txn);
            base.txns_since.push((header, txn));
        }
        let rebuilt = base.committed_tree();
        assert_eq!(rebuilt.last_zxid(), 4);
        assert_eq!(data_at(&rebuilt), b"v4");
        assert_eq!(rebuilt.figures(), tree.figures());
        assert_eq!(
            data_at(&base.view),
            b"v1",
            "the view itself is left as it was"
        );
    }
}
