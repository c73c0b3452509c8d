//! replica: the replica core's sequential state — prep, zxids, apply, sessions — as a pure
//! state machine.
//!
//! Owns: the authoritative data tree, the session table, the zxid counter and the batch of
//! committed work not yet handed to the shards; in an ensemble also the learner's requests
//! waiting for their commits, its forwarded syncs waiting for the leader's SYNC (oldest
//! first) and its reconnects waiting for the leader's REVALIDATE answer, and the leader's
//! undo record of speculative session changes and learners' syncs to hand to ZAB.
//! Must not: do IO or read clocks. The driver (`server`) feeds it `Inbound` messages and ticks
//! with the time, and ships each sealed `CommitBatch` to every shard once it is durable
//! (standalone: the write-ahead log; ensemble: a ZAB commit).
//! Roles (`Role`): standalone and a serving leader prepare, number and apply writes here (a
//! leader speculatively: `reset_to` rolls back what a lost leadership did not commit); a
//! learner forwards writes and syncs (`take_forwards`) and applies only committed txns
//! (`apply_committed`), answering its own clients' requests when their txns arrive and
//! their syncs when the leader's SYNC does (`syncs_answered`). Neither costs a zxid: a
//! forwarded sync is answered by ZAB (`take_learner_syncs`), a session unknown to a learner
//! is asked about with REVALIDATE (`take_revalidations`, `revalidate`, `revalidated`).
//! Limits: `SYNCS_FORWARDED_MAX` and `REVALIDATIONS_PENDING_MAX`; beyond them the request's
//! connection is closed (`CommitEntry::Overloaded`) rather than a queue grown.
//! Invariants: zxids handed out increase (by one per txn, or to a new epoch's first); a
//! batch's figures (and view, when it carries one) are the tree's after its last entry; a view
//! asked for goes out with the next batch unless the last one handed out is as new; every
//! write gets exactly one reply entry, in the order it arrived from its shard.

pub mod forward;

use crate::proto::{op, ErrorCode, Id, ProtoError};
use crate::session::{session_password, SessionTable};
use crate::tree::{
    prep, DataTree, OpResult, PrepContext, TreeFigures, Txn, TxnHeader, WatchTrigger, WriteOp,
};
use forward::{Forwarded, ForwardedBody};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Learner: syncs forwarded to the leader and not answered yet, at most.
pub const SYNCS_FORWARDED_MAX: usize = 16_384;
// A correct leader never has more of one learner's syncs waiting than that learner forwarded.
const _: () = assert!(SYNCS_FORWARDED_MAX <= crate::zab::SYNCS_PENDING_MAX);
/// Learner: sessions waiting for the leader's REVALIDATE answer, at most.
pub const REVALIDATIONS_PENDING_MAX: usize = 4096;
/// Learner: reconnects of one session waiting for that answer, at most.
const REVALIDATION_ROUTES_MAX: usize = 16;

/// How this server takes part in an ensemble.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// No ensemble: every write is prepared, numbered and applied here.
    Standalone,
    /// A serving leader: writes are prepared and applied speculatively, numbered from
    /// `next_zxid` on, in the order the driver proposes them.
    Leader { next_zxid: i64 },
    /// A serving follower or observer: writes are forwarded; only commits are applied.
    Learner,
    /// Not serving (electing or syncing): new sessions are refused, requests dropped (the
    /// driver closes every client connection when serving stops).
    Looking,
}

/// A learner's client request waiting for its txn to commit.
#[derive(Debug, Clone)]
enum Pending {
    Write {
        cxid: i32,
        route: Route,
        op_code: i32,
    },
    /// `answered` once the leader's SYNC for it came; replied when it reaches the front.
    Sync {
        cxid: i32,
        route: Route,
        path: String,
        answered: bool,
    },
}

/// A leader's speculative session change, undone by `reset_to` if not committed.
#[derive(Debug, Clone, Copy)]
enum SessionChange {
    Added { id: i64 },
    Removed { id: i64, timeout_ms: i32 },
}

/// Where a reply goes: a shard and a connection on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    pub shard: u16,
    pub conn: u64,
}

/// Work a shard hands to the replica core.
#[derive(Debug)]
pub enum Inbound {
    /// A handshake: a new session (`session_id == 0`) or a resume.
    Connect {
        route: Route,
        session_id: i64,
        password: [u8; 16],
        timeout_ms: i32,
    },
    /// A state-changing request.
    Write {
        route: Route,
        session_id: i64,
        xid: i32,
        op_code: i32,
        op: WriteOp,
        auth_ids: Arc<[Id]>,
        /// In an ensemble: the client's request record as it sent it, which a learner
        /// forwards to its leader unchanged (ZooKeeper's REQUEST).
        record: Option<Vec<u8>>,
    },
    /// `sync(path)`: answered once everything before it is committed.
    Sync {
        route: Route,
        session_id: i64,
        xid: i32,
        path: String,
        auth_ids: Arc<[Id]>,
    },
    /// Sessions that showed traffic since the shard's last report.
    Touch { session_ids: Vec<i64> },
    /// A shard serves reads, or holds one because its view is older than a batch it applied:
    /// the next batch carries a view (a batch of its own if nothing else is to be sealed).
    WantView,
    /// Several of the above from one socket read, in order: one cross-core hop (and at most
    /// one wake-up of a parked replica core) instead of one per request.
    Batch(Vec<Inbound>),
}

/// The reply to one routed request.
#[derive(Debug, Clone)]
pub struct Reply {
    pub route: Route,
    pub xid: i32,
    pub op_code: i32,
    pub result: OpResult,
}

/// One entry of the commit stream, applied by every shard in order.
#[derive(Debug, Clone)]
pub enum CommitEntry {
    Txn {
        zxid: i64,
        triggers: Vec<WatchTrigger>,
        reply: Option<Reply>,
        /// Set when this txn closed a session: shards drop its connection.
        closed_session: Option<i64>,
    },
    SessionOpened {
        route: Route,
        session_id: i64,
        timeout_ms: i32,
        password: [u8; 16],
    },
    SessionRejected {
        route: Route,
    },
    /// A session resumed elsewhere; its older connection is closed.
    SessionMoved {
        old: Route,
    },
    /// A request this server could not queue (a learner's limit): its connection is
    /// closed, and the client retries after reconnecting.
    Overloaded {
        route: Route,
    },
    Synced {
        route: Route,
        xid: i32,
        path: String,
    },
    /// The server stopped serving or changed its ensemble role: every client connection is
    /// closed (clients reconnect, here or elsewhere).
    Disconnect,
}

/// Everything committed since the previous batch, and the tree's figures as of its last
/// entry; the tree itself only when a shard asked for a view (`Inbound::WantView`).
///
/// Views are on demand because each one costs the writer: a view the shards hold shares
/// every block with the replica core's tree, so the next write to each block copies it.
/// Under the ensemble's setData load, with a view in every batch those copies, their frees
/// and the allocator took ~1/4 of the CPU samples; without them the three servers used
/// ~7% less CPU per write. Without reads no view is asked for.
#[derive(Debug, Clone)]
pub struct CommitBatch {
    pub view: Option<DataTree>,
    pub figures: TreeFigures,
    pub entries: Vec<CommitEntry>,
    /// The batch's transactions in zxid order, for the write-ahead log. The driver makes
    /// them durable before any shard sees the batch.
    pub txns: Vec<(TxnHeader, Txn)>,
}

/// Limits and switches the replica core needs from the configuration.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    pub server_id: u8,
    pub tick_ms: i64,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub extended_types_enabled: bool,
    pub skip_acl: bool,
    /// `zookeeper.enforceQuota`: hard quota limits fail writes with QUOTAEXCEEDED.
    pub enforce_quota: bool,
    pub container_check_interval_ms: i64,
    pub container_never_used_ms: i64,
    pub container_deletes_per_minute_max: usize,
}

/// The time as the driver reads it: wall clock for txn timestamps, monotonic for expiry.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub wall_ms: i64,
    pub mono_ms: i64,
}

/// The replica core's state machine.
#[derive(Debug)]
pub struct Replica {
    config: ReplicaConfig,
    tree: DataTree,
    sessions: SessionTable,
    owners: HashMap<i64, Route>,
    batch: Vec<CommitEntry>,
    batch_txns: Vec<(TxnHeader, Txn)>,
    container_check_due_ms: i64,
    /// Count of transactions committed since start, for `mntr`.
    pub txn_count: u64,
    role: Role,
    /// Learner: requests for the leader, oldest first.
    forwards: Vec<Forwarded>,
    /// Learner: each session's requests waiting for their commits, in order.
    pending: HashMap<i64, VecDeque<Pending>>,
    /// Learner: sessions it numbered, waiting for their createSession to commit.
    pending_connects: HashMap<i64, Route>,
    /// Learner: forwarded syncs (session, cxid) in the order the leader answers them.
    syncs_forwarded: VecDeque<(i64, i32)>,
    /// Learner: resumes of sessions not known here (with their negotiated timeouts),
    /// waiting for the leader's REVALIDATE answer.
    pending_revalidations: HashMap<i64, Vec<(Route, i32)>>,
    /// Learner: sessions to ask the leader about (id, timeout), oldest first.
    revalidations: Vec<(i64, i32)>,
    /// Leader: learners whose forwarded syncs were handled, in order, for ZAB.
    learner_syncs: Vec<u64>,
    /// Learner: sessions with traffic since the last PING reply, with their timeouts.
    touched: HashMap<i64, i32>,
    /// Leader: speculative session changes by zxid, oldest first.
    session_changes: VecDeque<(i64, SessionChange)>,
    /// A view was asked for since the last batch that carried one.
    view_wanted: bool,
    /// The zxid of the last view handed out.
    view_zxid: i64,
}

impl Replica {
    pub fn new(config: ReplicaConfig, tree: DataTree, now: Now) -> Replica {
        assert!(config.min_session_timeout_ms <= config.max_session_timeout_ms);
        let sessions = SessionTable::new(config.server_id, config.tick_ms, now.wall_ms);
        let container_check_due_ms = now.mono_ms + config.container_check_interval_ms;
        // The shards start with this tree as their view.
        let tree_zxid = tree.last_zxid();
        Replica {
            config,
            tree,
            sessions,
            owners: HashMap::new(),
            batch: Vec::new(),
            batch_txns: Vec::new(),
            container_check_due_ms,
            txn_count: 0,
            role: Role::Standalone,
            forwards: Vec::new(),
            pending: HashMap::new(),
            pending_connects: HashMap::new(),
            syncs_forwarded: VecDeque::new(),
            pending_revalidations: HashMap::new(),
            revalidations: Vec::new(),
            learner_syncs: Vec::new(),
            touched: HashMap::new(),
            session_changes: VecDeque::new(),
            view_wanted: false,
            view_zxid: tree_zxid,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// Takes a new role. Leaving `Learner` forgets the requests waiting for commits (their
    /// connections are closed by the driver); a leader numbers from `next_zxid`.
    ///
    /// # Panics
    /// A leader's `next_zxid` at or below the tree's last zxid.
    pub fn set_role(&mut self, role: Role) {
        if let Role::Leader { next_zxid } = role {
            assert!(
                next_zxid > self.tree.last_zxid(),
                "a leader numbers forward"
            );
        }
        if role != Role::Learner {
            self.forwards.clear();
            self.pending.clear();
            self.pending_connects.clear();
            self.syncs_forwarded.clear();
            self.pending_revalidations.clear();
            self.revalidations.clear();
            self.touched.clear();
        }
        if !matches!(role, Role::Leader { .. }) {
            self.session_changes.clear();
            self.learner_syncs.clear();
        }
        self.owners.clear();
        self.role = role;
    }

    /// Learner: the requests to forward to the leader since the last call.
    pub fn take_forwards(&mut self) -> Vec<Forwarded> {
        std::mem::take(&mut self.forwards)
    }

    /// Learner: the sessions (id, timeout) to revalidate with the leader since the last call.
    pub fn take_revalidations(&mut self) -> Vec<(i64, i32)> {
        std::mem::take(&mut self.revalidations)
    }

    /// Leader: the learners whose syncs were handled since the last call, in order. Hand
    /// them to ZAB after the proposals of the same calls.
    pub fn take_learner_syncs(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.learner_syncs)
    }

    /// Learner: the sessions touched since the last call, for the PING reply.
    pub fn take_touches(&mut self) -> Vec<(i64, i32)> {
        self.touched.drain().collect()
    }

    /// Leader: the txns up to `zxid` are committed; their session changes stay.
    pub fn committed_through(&mut self, zxid: i64) {
        while self
            .session_changes
            .front()
            .is_some_and(|(z, _)| *z <= zxid)
        {
            self.session_changes.pop_front();
        }
    }

    /// Leader stepping down: goes back to `view` (the committed tree) and undoes the session
    /// changes after it. The batch being built is dropped: its clients are disconnected.
    pub fn reset_to(&mut self, view: DataTree, now: Now) {
        let zxid = view.last_zxid();
        while let Some((change_zxid, change)) = self.session_changes.pop_back() {
            if change_zxid <= zxid {
                break;
            }
            match change {
                SessionChange::Added { id } => {
                    self.sessions.remove(id);
                }
                SessionChange::Removed { id, timeout_ms } => {
                    self.sessions.add(id, timeout_ms, now.mono_ms);
                }
            }
        }
        self.session_changes.clear();
        self.tree = view;
        self.batch.clear();
        self.batch_txns.clear();
        // The driver hands the shards this tree with its disconnect.
        self.view_zxid = zxid;
    }

    /// Replaces the whole state by a snapshot's (a SNAP from the leader, or the start).
    pub fn install(&mut self, tree: DataTree, sessions: &[(i64, i32)], now: Now) {
        self.tree = tree;
        self.sessions = SessionTable::new(self.config.server_id, self.config.tick_ms, now.wall_ms);
        for (id, timeout_ms) in sessions {
            self.sessions.add(*id, *timeout_ms, now.mono_ms);
        }
        self.batch.clear();
        self.batch_txns.clear();
        self.view_zxid = self.tree.last_zxid();
    }

    pub fn tree(&self) -> &DataTree {
        &self.tree
    }

    pub fn sessions(&self) -> &SessionTable {
        &self.sessions
    }

    pub fn has_pending(&self) -> bool {
        !self.batch.is_empty() || self.view_due()
    }

    /// The next batch carries a view (the driver's own needs: a snapshot, a bounded
    /// rollback).
    pub fn want_view(&mut self) {
        self.view_wanted = true;
    }

    /// A view was asked for and the tree moved on since the last one handed out (if it did
    /// not, that view is on its way to the shards and serves).
    fn view_due(&self) -> bool {
        self.view_wanted && self.tree.last_zxid() > self.view_zxid
    }

    /// Hands over everything committed since the last call, with the current view if one is
    /// due: a batch of no entries when only the view is. A request for a view stands until
    /// one goes out (the shard that asked sends no other until then).
    pub fn seal_batch(&mut self) -> Option<CommitBatch> {
        let view = self.view_due().then(|| self.tree.clone());
        if self.batch.is_empty() && view.is_none() {
            return None;
        }
        if view.is_some() {
            self.view_wanted = false;
            self.view_zxid = self.tree.last_zxid();
        }
        // The next batch is likely as long: one allocation for it instead of a run of
        // doublings (a learner catching up seals thousands of entries per batch).
        let next = Vec::with_capacity(self.batch.len());
        Some(CommitBatch {
            view,
            figures: self.tree.figures(),
            entries: std::mem::replace(&mut self.batch, next),
            txns: std::mem::take(&mut self.batch_txns),
        })
    }

    /// Handles one message from a shard.
    pub fn step(&mut self, message: Inbound, now: Now) {
        match message {
            Inbound::Connect {
                route,
                session_id,
                password,
                timeout_ms,
            } => match self.role {
                Role::Standalone | Role::Leader { .. } => {
                    self.connect(route, session_id, password, timeout_ms, now);
                }
                Role::Learner => self.learner_connect(route, session_id, password, timeout_ms),
                Role::Looking => self.batch.push(CommitEntry::SessionRejected { route }),
            },
            Inbound::Write {
                route,
                session_id,
                xid,
                op_code,
                op,
                auth_ids,
                record,
            } => match self.role {
                Role::Standalone | Role::Leader { .. } => {
                    self.write(Some(route), session_id, xid, op_code, &op, &auth_ids, now);
                }
                Role::Learner => {
                    // A shard of an ensemble member always sends the record.
                    let Some(record) = record else {
                        self.batch.push(CommitEntry::Overloaded { route });
                        return;
                    };
                    self.learner_touch(session_id);
                    self.pending
                        .entry(session_id)
                        .or_default()
                        .push_back(Pending::Write {
                            cxid: xid,
                            route,
                            op_code,
                        });
                    self.forwards.push(Forwarded {
                        session_id,
                        cxid: xid,
                        op_code,
                        record,
                        auth_ids: auth_ids.to_vec(),
                    });
                }
                Role::Looking => {}
            },
            Inbound::Sync {
                route,
                session_id,
                xid,
                path,
                auth_ids,
            } => match self.role {
                Role::Standalone | Role::Leader { .. } => {
                    self.sessions.touch(session_id, now.mono_ms);
                    self.batch.push(CommitEntry::Synced { route, xid, path });
                }
                Role::Learner => {
                    self.learner_sync(route, session_id, xid, path, &auth_ids);
                }
                Role::Looking => {}
            },
            Inbound::Touch { session_ids } => {
                for id in session_ids {
                    self.sessions.touch(id, now.mono_ms);
                    if self.role == Role::Learner {
                        self.learner_touch(id);
                    }
                }
            }
            Inbound::WantView => self.want_view(),
            Inbound::Batch(messages) => {
                for message in messages {
                    self.step(message, now);
                }
            }
        }
    }

    /// A learner forwards a sync (ZooKeeper: REQUEST of type sync) and answers it when the
    /// leader's SYNC for it arrives, or earlier when a later request of the same session
    /// commits (the leader handled that request after the sync).
    fn learner_sync(&mut self, route: Route, session_id: i64, xid: i32, path: String, ids: &[Id]) {
        if self.syncs_forwarded.len() >= SYNCS_FORWARDED_MAX {
            self.batch.push(CommitEntry::Overloaded { route });
            return;
        }
        self.learner_touch(session_id);
        self.forwards
            .push(Forwarded::sync(session_id, xid, &path, ids.to_vec()));
        self.syncs_forwarded.push_back((session_id, xid));
        self.pending
            .entry(session_id)
            .or_default()
            .push_back(Pending::Sync {
                cxid: xid,
                route,
                path,
                answered: false,
            });
    }

    /// Learner: the leader answered this many of the forwarded syncs, oldest first, and
    /// everything committed before them is applied. A SYNC for no pending sync is ignored
    /// (ZooKeeper: "Not expecting a sync").
    pub fn syncs_answered(&mut self, count: usize) {
        for _ in 0..count {
            let Some((session_id, cxid)) = self.syncs_forwarded.pop_front() else {
                return;
            };
            let Some(queue) = self.pending.get_mut(&session_id) else {
                continue; // The session closed.
            };
            let sync = queue.iter_mut().find_map(|p| match p {
                Pending::Sync {
                    cxid: c, answered, ..
                } if *c == cxid => Some(answered),
                _ => None,
            });
            if let Some(answered) = sync {
                *answered = true; // Else a later request's commit answered it already.
            }
            self.release_answered_syncs(session_id);
        }
    }

    /// Replies to the answered syncs at the front of a session's pending requests.
    fn release_answered_syncs(&mut self, session_id: i64) {
        let Some(queue) = self.pending.get_mut(&session_id) else {
            return;
        };
        while let Some(Pending::Sync { answered: true, .. }) = queue.front() {
            if let Some(Pending::Sync {
                cxid, route, path, ..
            }) = queue.pop_front()
            {
                self.batch.push(CommitEntry::Synced {
                    route,
                    xid: cxid,
                    path,
                });
            }
        }
    }

    fn learner_touch(&mut self, session_id: i64) {
        if let Some(session) = self.sessions.get(session_id) {
            self.touched.insert(session_id, session.timeout_ms);
        }
    }

    /// A learner numbers a new session itself (its myid is in the id) and forwards the
    /// createSession; a resumed session is checked against the committed session table.
    fn learner_connect(&mut self, route: Route, id: i64, password: [u8; 16], timeout_ms: i32) {
        let timeout_ms = self.negotiate_timeout(timeout_ms);
        if id == 0 {
            let id = self.sessions.next_session_id();
            self.pending_connects.insert(id, route);
            self.forwards
                .push(Forwarded::create_session(id, timeout_ms));
            return;
        }
        if password != session_password(id) {
            self.batch.push(CommitEntry::SessionRejected { route });
            return;
        }
        if self.sessions.get(id).is_none() {
            // Perhaps created on another server and not applied here yet: ask the leader
            // (ZooKeeper's REVALIDATE), which knows every session and touches it.
            self.learner_ask_leader(route, id, timeout_ms);
            return;
        }
        self.learner_resume(route, id);
    }

    fn learner_ask_leader(&mut self, route: Route, id: i64, timeout_ms: i32) {
        let sessions = self.pending_revalidations.len();
        let routes = self.pending_revalidations.get(&id).map_or(0, Vec::len);
        let full = routes == 0 && sessions >= REVALIDATIONS_PENDING_MAX;
        if full || routes >= REVALIDATION_ROUTES_MAX {
            self.batch.push(CommitEntry::Overloaded { route });
            return;
        }
        if routes == 0 {
            self.revalidations.push((id, timeout_ms));
        }
        self.pending_revalidations
            .entry(id)
            .or_default()
            .push((route, timeout_ms));
    }

    /// Learner: the leader's REVALIDATE answer. A valid session attaches to the waiting
    /// connections (with the timeout they negotiated if this learner has not applied its
    /// createSession yet, as ZooKeeper's `finishSessionInit`); an invalid one is refused.
    pub fn revalidated(&mut self, session_id: i64, valid: bool) {
        let Some(routes) = self.pending_revalidations.remove(&session_id) else {
            return; // Not asked here, or answered already.
        };
        for (route, timeout_ms) in routes {
            if !valid {
                self.batch.push(CommitEntry::SessionRejected { route });
            } else if self.sessions.get(session_id).is_some() {
                self.learner_resume(route, session_id);
            } else {
                self.touched.insert(session_id, timeout_ms);
                self.resume(route, session_id, timeout_ms, session_password(session_id));
            }
        }
    }

    /// Leader: a learner asks whether a session is alive; it is touched if it is
    /// (ZooKeeper's `checkIfValidGlobalSession`).
    pub fn revalidate(&mut self, session_id: i64, now: Now) -> bool {
        matches!(self.role, Role::Leader { .. }) && self.sessions.touch(session_id, now.mono_ms)
    }

    /// A learner attaches a session it knows, or refuses one that is closing or gone.
    fn learner_resume(&mut self, route: Route, id: i64) {
        let known = self.sessions.get(id).filter(|s| !s.closing);
        let Some(timeout_ms) = known.map(|s| s.timeout_ms) else {
            self.batch.push(CommitEntry::SessionRejected { route });
            return;
        };
        self.touched.insert(id, timeout_ms);
        self.resume(route, id, timeout_ms, session_password(id));
    }

    /// Leader: a request `learner` forwarded, prepared exactly like a local client's. Any
    /// other role drops it (the learner's client is disconnected when that learner's
    /// leadership ends).
    ///
    /// # Errors
    /// A record that does not decode: the request is dropped.
    pub fn step_forwarded(
        &mut self,
        request: Forwarded,
        learner: u64,
        now: Now,
    ) -> Result<(), ProtoError> {
        if !matches!(self.role, Role::Leader { .. }) {
            return Ok(());
        }
        let body = request.body()?;
        let Forwarded {
            session_id,
            cxid,
            op_code,
            auth_ids,
            ..
        } = request;
        match body {
            ForwardedBody::CreateSession { timeout_ms } => {
                if self.sessions.get(session_id).is_some() {
                    return Ok(()); // A duplicate: the learner numbered it once.
                }
                let timeout_ms = self.negotiate_timeout(timeout_ms);
                self.sessions.add(session_id, timeout_ms, now.mono_ms);
                self.commit(
                    session_id,
                    0,
                    op::CREATE_SESSION,
                    Txn::CreateSession { timeout_ms },
                    now,
                );
            }
            ForwardedBody::Write(op) => {
                self.write(None, session_id, cxid, op_code, &op, &auth_ids, now);
            }
            ForwardedBody::Sync => {
                // No txn: ZAB answers the learner once what is proposed now is committed.
                self.sessions.touch(session_id, now.mono_ms);
                self.learner_syncs.push(learner);
            }
        }
        Ok(())
    }

    /// Leader: sessions a learner's clients touched (its PING reply).
    pub fn touch_sessions(&mut self, touches: &[(i64, i32)], now: Now) {
        for (id, _) in touches {
            self.sessions.touch(*id, now.mono_ms);
        }
    }

    /// A committed txn this replica did not prepare (learner; a new leader's backlog):
    /// applied, and answered if one of this server's clients is waiting for it.
    ///
    /// # Panics
    /// `header.zxid` does not follow the tree's last zxid: commits arrive in order.
    pub fn apply_committed(&mut self, header: &TxnHeader, txn: Txn, now: Now) {
        assert!(
            header.zxid > self.tree.last_zxid(),
            "committed zxids must increase"
        );
        let session_id = header.session_id;
        let result = self.tree.apply(header, &txn);
        self.txn_count += 1;
        let mut reply = None;
        match &txn {
            Txn::CreateSession { timeout_ms } => {
                self.sessions.add(session_id, *timeout_ms, now.mono_ms);
                if let Some(route) = self.pending_connects.remove(&session_id) {
                    self.owners.insert(session_id, route);
                    self.batch.push(CommitEntry::SessionOpened {
                        route,
                        session_id,
                        timeout_ms: *timeout_ms,
                        password: session_password(session_id),
                    });
                }
            }
            Txn::CloseSession { .. } => {
                self.sessions.remove(session_id);
            }
            _ => {}
        }
        // The session's first waiting write: the syncs before it were handled by the leader
        // before this txn, so its commit answers them too (their SYNCs come later).
        let waiting = self.pending.get_mut(&session_id);
        let first_write = waiting.as_ref().and_then(|q| {
            q.iter()
                .position(|p| matches!(p, Pending::Write { .. }))
                .filter(|at| {
                    matches!(q.get(*at), Some(Pending::Write { cxid, .. }) if *cxid == header.cxid)
                })
        });
        let mut op_result = Some(result.result);
        if let (Some(at), Some(queue)) = (first_write, waiting) {
            for pending in queue.drain(..=at) {
                match pending {
                    Pending::Sync {
                        cxid, route, path, ..
                    } => self.batch.push(CommitEntry::Synced {
                        route,
                        xid: cxid,
                        path,
                    }),
                    Pending::Write {
                        cxid,
                        route,
                        op_code,
                    } => {
                        reply = Some(Reply {
                            route,
                            xid: cxid,
                            op_code,
                            result: op_result.take().unwrap_or(OpResult::Ok),
                        });
                    }
                }
            }
        }
        let closed_session = matches!(txn, Txn::CloseSession { .. }).then_some(session_id);
        if closed_session.is_some() {
            self.pending.remove(&session_id);
            self.owners.remove(&session_id);
        }
        self.batch.push(CommitEntry::Txn {
            zxid: header.zxid,
            triggers: result.triggers,
            reply,
            closed_session,
        });
        if closed_session.is_none() {
            self.release_answered_syncs(session_id);
        }
    }

    /// A known session attaches to `route`; a connection it had elsewhere is closed.
    fn resume(&mut self, route: Route, id: i64, timeout_ms: i32, password: [u8; 16]) {
        if let Some(old) = self.owners.insert(id, route) {
            if old != route {
                self.batch.push(CommitEntry::SessionMoved { old });
            }
        }
        self.batch.push(CommitEntry::SessionOpened {
            route,
            session_id: id,
            timeout_ms,
            password,
        });
    }

    fn negotiate_timeout(&self, requested_ms: i32) -> i32 {
        requested_ms.clamp(
            self.config.min_session_timeout_ms,
            self.config.max_session_timeout_ms,
        )
    }

    fn connect(&mut self, route: Route, id: i64, password: [u8; 16], timeout_ms: i32, now: Now) {
        let timeout_ms = self.negotiate_timeout(timeout_ms);
        if id == 0 {
            let id = self.sessions.next_session_id();
            self.sessions.add(id, timeout_ms, now.mono_ms);
            self.owners.insert(id, route);
            self.commit(
                id,
                0,
                op::CREATE_SESSION,
                Txn::CreateSession { timeout_ms },
                now,
            );
            self.batch.push(CommitEntry::SessionOpened {
                route,
                session_id: id,
                timeout_ms,
                password: session_password(id),
            });
            return;
        }
        let valid = password == session_password(id) && self.sessions.touch(id, now.mono_ms);
        if !valid {
            self.batch.push(CommitEntry::SessionRejected { route });
            return;
        }
        let timeout_ms = self.sessions.get(id).map_or(timeout_ms, |s| s.timeout_ms);
        self.resume(route, id, timeout_ms, password);
    }

    #[allow(clippy::too_many_arguments)]
    fn write(
        &mut self,
        route: Option<Route>,
        session_id: i64,
        xid: i32,
        op_code: i32,
        op: &WriteOp,
        auth_ids: &[Id],
        now: Now,
    ) {
        let live = self.sessions.touch(session_id, now.mono_ms);
        let txn = if live {
            let context = PrepContext {
                session_id,
                auth_ids,
                extended_types_enabled: self.config.extended_types_enabled,
                skip_acl: self.config.skip_acl,
                ephemeral_session_ok: true,
                enforce_quota: self.config.enforce_quota,
            };
            prep(&self.tree, op, &context)
        } else {
            Txn::Error {
                err: ErrorCode::SessionExpired,
            }
        };
        let closes = matches!(op, WriteOp::CloseSession) && live;
        if closes {
            self.sessions.set_closing(session_id);
        }
        let reply = route.map(|route| Reply {
            route,
            xid,
            op_code,
            result: OpResult::Ok,
        });
        self.commit_with_reply(session_id, xid, op_code, txn, reply, now);
        if closes {
            self.finish_close(session_id);
        }
    }

    /// Gives `txn` the next zxid, applies it and records the commit entry.
    fn commit(&mut self, session_id: i64, cxid: i32, op_code: i32, txn: Txn, now: Now) {
        self.commit_with_reply(session_id, cxid, op_code, txn, None, now);
    }

    fn commit_with_reply(
        &mut self,
        session_id: i64,
        cxid: i32,
        op_code: i32,
        txn: Txn,
        reply: Option<Reply>,
        now: Now,
    ) {
        let zxid = match &mut self.role {
            Role::Leader { next_zxid } => {
                let zxid = *next_zxid;
                *next_zxid += 1;
                match &txn {
                    Txn::CreateSession { .. } => self
                        .session_changes
                        .push_back((zxid, SessionChange::Added { id: session_id })),
                    Txn::CloseSession { .. } => {
                        let timeout_ms = self.sessions.get(session_id).map_or(0, |s| s.timeout_ms);
                        let change = SessionChange::Removed {
                            id: session_id,
                            timeout_ms,
                        };
                        self.session_changes.push_back((zxid, change));
                    }
                    _ => {}
                }
                zxid
            }
            _ => self.tree.last_zxid() + 1,
        };
        let header = TxnHeader {
            session_id,
            cxid,
            zxid,
            time_ms: now.wall_ms,
            op: op_code,
        };
        let result = self.tree.apply(&header, &txn);
        assert_eq!(self.tree.last_zxid(), zxid, "apply must advance the zxid");
        self.txn_count += 1;
        let closed_session = matches!(txn, Txn::CloseSession { .. }).then_some(session_id);
        self.batch_txns.push((header, txn));
        self.batch.push(CommitEntry::Txn {
            zxid,
            triggers: result.triggers,
            reply: reply.map(|reply| Reply {
                result: result.result,
                ..reply
            }),
            closed_session,
        });
    }

    fn finish_close(&mut self, session_id: i64) {
        self.sessions.remove(session_id);
        self.owners.remove(&session_id);
    }

    /// Re-applies a transaction recovered from the log at start-up: the tree, and the session
    /// table (a recovered session gets a full timeout from now, as in ZooKeeper, so a client
    /// that comes back in time keeps it).
    ///
    /// # Panics
    /// If `header.zxid` does not follow the tree's last zxid: recovery hands txns in order.
    pub fn replay(&mut self, header: &TxnHeader, txn: &Txn, now: Now) {
        assert!(
            header.zxid > self.tree.last_zxid(),
            "replayed zxids must increase"
        );
        self.tree.apply(header, txn);
        match txn {
            Txn::CreateSession { timeout_ms } => {
                self.sessions
                    .add(header.session_id, *timeout_ms, now.mono_ms);
            }
            Txn::CloseSession { .. } => {
                self.sessions.remove(header.session_id);
            }
            _ => {}
        }
        self.txn_count += 1;
    }

    /// A session from a snapshot: it gets a whole timeout from now to come back, as after a
    /// ZooKeeper restart.
    pub fn restore_session(&mut self, session_id: i64, timeout_ms: i32, now: Now) {
        self.sessions.add(session_id, timeout_ms, now.mono_ms);
    }

    /// Expires sessions and reaps empty containers and TTL nodes. Call about once a tick.
    /// Only a standalone server or a leader decides these; learners apply its txns.
    pub fn tick(&mut self, now: Now) {
        if !matches!(self.role, Role::Standalone | Role::Leader { .. }) {
            return;
        }
        for session_id in self.sessions.expire(now.mono_ms) {
            let txn = prep(
                &self.tree,
                &WriteOp::CloseSession,
                &self.internal_context(session_id),
            );
            self.commit(session_id, 0, op::CLOSE_SESSION, txn, now);
            self.finish_close(session_id);
        }
        if now.mono_ms >= self.container_check_due_ms {
            self.container_check_due_ms = now.mono_ms + self.config.container_check_interval_ms;
            self.reap_containers(now);
        }
    }

    fn internal_context(&self, session_id: i64) -> PrepContext<'static> {
        PrepContext {
            session_id,
            auth_ids: &[],
            extended_types_enabled: self.config.extended_types_enabled,
            skip_acl: true,
            ephemeral_session_ok: true,
            enforce_quota: false,
        }
    }

    fn reap_containers(&mut self, now: Now) {
        let candidates = self
            .tree
            .container_and_ttl_candidates(now.wall_ms, self.config.container_never_used_ms);
        let per_check_max = self.config.container_deletes_per_minute_max.max(1);
        for path in candidates.into_iter().take(per_check_max) {
            let op = WriteOp::DeleteContainer { path };
            let txn = prep(&self.tree, &op, &self.internal_context(0));
            if matches!(txn, Txn::Error { .. }) {
                continue;
            }
            self.commit(0, 0, op::DELETE_CONTAINER, txn, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::open_acl_unsafe;

    fn replica() -> Replica {
        let config = ReplicaConfig {
            server_id: 1,
            tick_ms: 2_000,
            min_session_timeout_ms: 4_000,
            max_session_timeout_ms: 40_000,
            extended_types_enabled: false,
            skip_acl: false,
            enforce_quota: false,
            container_check_interval_ms: 60_000,
            container_never_used_ms: 0,
            container_deletes_per_minute_max: 10_000,
        };
        Replica::new(config, DataTree::new(), now())
    }

    fn now() -> Now {
        Now {
            wall_ms: 1_000,
            mono_ms: 1_000,
        }
    }

    fn messages() -> Vec<Inbound> {
        let route = Route { shard: 0, conn: 7 };
        let connect = Inbound::Connect {
            route,
            session_id: 0,
            password: [0; 16],
            timeout_ms: 10_000,
        };
        let mut messages = vec![connect];
        for (xid, path) in [(1, "/a"), (2, "/a/b"), (3, "/a")] {
            messages.push(create_message(0x0100_0000_0000_0001, xid, path));
        }
        messages
    }

    #[test]
    fn a_batch_steps_exactly_like_its_messages_one_by_one() {
        // Shards send every request of one socket read as one Inbound::Batch; the replica
        // core must commit the same txns, replies and tree as for separate messages.
        let mut one_by_one = replica();
        for message in messages() {
            one_by_one.step(message, now());
        }
        let mut batched = replica();
        batched.step(Inbound::Batch(messages()), now());
        let (a, b) = (one_by_one.seal_batch(), batched.seal_batch());
        let (Some(a), Some(b)) = (a, b) else {
            panic!("both committed something");
        };
        assert_eq!(
            a.txns.len(),
            4,
            "createSession and three creates (one fails)"
        );
        assert_eq!(format!("{:?}", a.txns), format!("{:?}", b.txns));
        assert_eq!(format!("{:?}", a.entries), format!("{:?}", b.entries));
        assert_eq!(a.figures, b.figures);
    }

    /// One create of `path` holding "x", by `session_id`.
    fn create_message(session_id: i64, xid: i32, path: &str) -> Inbound {
        Inbound::Write {
            route: Route { shard: 0, conn: 7 },
            session_id,
            xid,
            op_code: op::CREATE,
            op: WriteOp::Create {
                path: path.to_string(),
                data: Some(b"x".to_vec()),
                acl: open_acl_unsafe(),
                flags: 0,
                ttl: -1,
                op: op::CREATE,
            },
            auth_ids: Arc::from(Vec::new()),
            record: None,
        }
    }

    #[test]
    fn a_batch_carries_a_view_only_when_one_was_asked_for_and_the_tree_moved_on() {
        let mut replica = replica();
        replica.step(Inbound::Batch(messages()), now());
        let batch = replica.seal_batch().expect("committed");
        assert!(batch.view.is_none(), "nobody asked for a view");
        assert_eq!(batch.figures, replica.tree().figures());
        assert_eq!(batch.figures.last_zxid, 4);
        let session = batch
            .entries
            .iter()
            .find_map(|entry| match entry {
                CommitEntry::SessionOpened { session_id, .. } => Some(*session_id),
                _ => None,
            })
            .expect("a session opened");
        replica.step(create_message(session, 1, "/a"), now());
        assert!(replica.seal_batch().expect("committed").view.is_none());

        // Asked for with nothing else to seal: a batch of the view alone.
        replica.step(Inbound::WantView, now());
        assert!(replica.has_pending());
        let batch = replica.seal_batch().expect("the view is due");
        assert!(batch.entries.is_empty() && batch.txns.is_empty());
        let view = batch.view.expect("asked for");
        assert_eq!(view.last_zxid(), 5);
        assert!(view.node("/a").is_some());

        // Answered once: the next batch goes without.
        replica.step(create_message(session, 2, "/c"), now());
        let batch = replica.seal_batch().expect("committed");
        assert!(batch.view.is_none());

        // Asked for together with writes: it comes with them, as of the last one.
        replica.step(create_message(session, 3, "/d"), now());
        replica.step(Inbound::WantView, now());
        replica.step(create_message(session, 4, "/e"), now());
        let batch = replica.seal_batch().expect("committed");
        assert_eq!(batch.txns.len(), 2);
        let view = batch.view.expect("asked for");
        assert_eq!(view.last_zxid(), 8);
        assert!(view.node("/d").is_some() && view.node("/e").is_some());

        // Asked for when the last view handed out is as new: nothing to seal; the request
        // stands, and the next batch brings one.
        replica.step(Inbound::WantView, now());
        assert!(!replica.has_pending());
        assert!(replica.seal_batch().is_none());
        replica.step(create_message(session, 5, "/f"), now());
        let batch = replica.seal_batch().expect("committed");
        assert_eq!(batch.view.map(|view| view.last_zxid()), Some(9));
    }

    const SESSION: i64 = 0x0100_0000_0000_0001;

    fn leader() -> Replica {
        let mut leader = replica();
        leader.set_role(Role::Leader { next_zxid: 1 });
        let create = Forwarded::create_session(SESSION, 10_000);
        leader.step_forwarded(create, 2, now()).unwrap();
        assert!(
            leader.sessions().get(SESSION).is_some(),
            "the session is open"
        );
        leader.seal_batch().expect("createSession");
        leader
    }

    /// A client's request record (no RequestHeader), as kazoo or the Java client writes it.
    fn create_record(path: &str, data: &[u8], acl: &[crate::proto::Acl], flags: i32) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = crate::proto::jute::Writer::new(&mut out);
        w.write_string(path);
        w.write_buffer(Some(data));
        crate::proto::Acl::write_vec(acl, &mut w);
        w.write_i32(flags);
        out
    }

    fn set_data_record(path: &str, data: &[u8], version: i32) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = crate::proto::jute::Writer::new(&mut out);
        w.write_string(path);
        w.write_buffer(Some(data));
        w.write_i32(version);
        out
    }

    /// MultiRequest: per op a MultiHeader{type, done=false, err=-1} and its record, then
    /// MultiHeader{-1, true, -1}.
    fn multi_record(ops: &[(i32, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (code, record) in ops {
            let mut w = crate::proto::jute::Writer::new(&mut out);
            w.write_i32(*code);
            w.write_bool(false);
            w.write_i32(-1);
            out.extend_from_slice(record);
        }
        let mut w = crate::proto::jute::Writer::new(&mut out);
        w.write_i32(-1);
        w.write_bool(true);
        w.write_i32(-1);
        out
    }

    /// Steps one write on a leader as a local client's (decoded as a shard does) or as a
    /// learner's forwarded record, and returns the txns it committed.
    fn prepare(
        leader: &mut Replica,
        code: i32,
        record: &[u8],
        ids: &[Id],
        forwarded: bool,
    ) -> String {
        let xid = 40;
        if forwarded {
            let request = Forwarded {
                session_id: SESSION,
                cxid: xid,
                op_code: code,
                record: record.to_vec(),
                auth_ids: ids.to_vec(),
            };
            let data = request.encode();
            let request = Forwarded::decode(&data, ids.to_vec()).expect("decodes");
            leader.step_forwarded(request, 2, now()).expect("a write");
        } else {
            let request = crate::proto::records::Request::decode_record(code, record).unwrap();
            let Some(forward::Forward::Write(op)) = forward::to_replica(&request) else {
                panic!("not a write");
            };
            leader.step(
                Inbound::Write {
                    route: Route { shard: 0, conn: 1 },
                    session_id: SESSION,
                    xid,
                    op_code: code,
                    op,
                    auth_ids: Arc::from(ids.to_vec()),
                    record: None,
                },
                now(),
            );
        }
        let batch = leader.seal_batch().expect("committed");
        format!("{:?}", batch.txns)
    }

    #[test]
    fn a_forwarded_raw_write_is_prepared_on_the_leader_exactly_like_a_local_one() {
        // A learner forwards the client's record bytes; the leader decodes them with the
        // client decoder and prepares the same txns, auth ids included, as for its own client.
        let digest = Id::new("digest", "u:h");
        let acl = vec![crate::proto::Acl {
            perms: crate::proto::perms::ALL,
            id: digest.clone(),
        }];
        let mut writes = vec![
            (op::CREATE, create_record("/a", b"x", &open_acl_unsafe(), 0)),
            (op::CREATE, create_record("/locked", b"", &acl, 0)),
            (op::SET_DATA, set_data_record("/locked", b"y", 0)),
            (op::SET_DATA, set_data_record("/a", b"z", 5)),
        ];
        let multi = multi_record(&[
            (
                op::CREATE,
                create_record("/a/m", b"1", &open_acl_unsafe(), 2),
            ),
            (op::SET_DATA, set_data_record("/a", b"w", -1)),
        ]);
        writes.push((op::MULTI, multi));
        let (mut local, mut remote) = (leader(), leader());
        for (code, record) in &writes {
            let ids = [digest.clone()];
            let expected = prepare(&mut local, *code, record, &ids, false);
            assert_eq!(prepare(&mut remote, *code, record, &ids, true), expected);
        }
        assert_eq!(local.tree().last_zxid(), remote.tree().last_zxid());
        assert!(
            remote.tree().node("/a/m0000000000").is_some(),
            "the multi's create"
        );
        // Without the digest id the forwarded setData fails its ACL check, as a local one.
        let record = set_data_record("/locked", b"q", -1);
        let denied = prepare(&mut remote, op::SET_DATA, &record, &[], true);
        assert!(denied.contains("NoAuth"), "{denied}");
    }

    fn learner() -> Replica {
        let mut learner = replica();
        learner.set_role(Role::Learner);
        learner.apply_committed(
            &TxnHeader {
                session_id: SESSION,
                cxid: 0,
                zxid: 1,
                time_ms: 1,
                op: op::CREATE_SESSION,
            },
            Txn::CreateSession { timeout_ms: 10_000 },
            now(),
        );
        learner.seal_batch();
        learner
    }

    fn sync_message(xid: i32) -> Inbound {
        Inbound::Sync {
            route: Route { shard: 0, conn: 3 },
            session_id: SESSION,
            xid,
            path: "/".into(),
            auth_ids: Arc::from(vec![Id::new("ip", "127.0.0.1")]),
        }
    }

    #[test]
    fn a_follower_sync_costs_no_zxid_and_is_answered_by_the_leaders_sync() {
        // The learner forwards sync as ZooKeeper's REQUEST; the leader commits nothing and
        // hands the learner to ZAB; the learner answers when told its sync was answered.
        let mut learner = learner();
        let zxid_before = learner.tree().last_zxid();
        learner.step(sync_message(5), now());
        let forwards = learner.take_forwards();
        assert_eq!(forwards.len(), 1);
        assert_eq!(forwards[0].op_code, op::SYNC);
        assert_eq!(forwards[0].record, vec![0, 0, 0, 1, b'/']);
        assert!(learner.seal_batch().is_none(), "not answered before SYNC");
        let mut leader = leader();
        let leader_zxid = leader.tree().last_zxid();
        let request = forwards.into_iter().next().unwrap();
        leader.step_forwarded(request, 2, now()).unwrap();
        assert!(leader.seal_batch().is_none(), "no marker txn");
        assert_eq!(leader.tree().last_zxid(), leader_zxid);
        assert_eq!(leader.take_learner_syncs(), vec![2]);
        learner.syncs_answered(1);
        let batch = learner.seal_batch().expect("answered");
        assert!(matches!(
            batch.entries.as_slice(),
            [CommitEntry::Synced { xid: 5, .. }]
        ));
        assert_eq!(learner.tree().last_zxid(), zxid_before);
        // A SYNC with no sync waiting is ignored.
        learner.syncs_answered(1);
        assert!(learner.seal_batch().is_none());
    }

    #[test]
    fn a_later_write_of_the_session_answers_its_earlier_sync_first() {
        // The leader handled the sync before the write, so the write's commit answers the
        // sync too, and the replies keep the session's order; the SYNC that follows is spent.
        let mut learner = learner();
        learner.step(sync_message(5), now());
        learner.step(
            Inbound::Write {
                route: Route { shard: 0, conn: 3 },
                session_id: SESSION,
                xid: 6,
                op_code: op::DELETE,
                op: WriteOp::Delete {
                    path: "/nope".into(),
                    version: -1,
                },
                auth_ids: Arc::from(Vec::new()),
                record: Some(vec![
                    0, 0, 0, 5, b'/', b'n', b'o', b'p', b'e', 0xff, 0xff, 0xff, 0xff,
                ]),
            },
            now(),
        );
        assert_eq!(learner.take_forwards().len(), 2);
        let header = TxnHeader {
            session_id: SESSION,
            cxid: 6,
            zxid: 2,
            time_ms: 1,
            op: op::DELETE,
        };
        let failed = Txn::Error {
            err: ErrorCode::NoNode,
        };
        learner.apply_committed(&header, failed, now());
        let batch = learner.seal_batch().expect("answered");
        match batch.entries.as_slice() {
            [CommitEntry::Synced { xid: 5, .. }, CommitEntry::Txn {
                reply: Some(reply), ..
            }] => assert_eq!(reply.xid, 6),
            other => panic!("sync then write expected: {other:?}"),
        }
        learner.syncs_answered(1);
        assert!(learner.seal_batch().is_none(), "answered once");
    }

    fn resume(learner: &mut Replica, id: i64) {
        learner.step(
            Inbound::Connect {
                route: Route { shard: 1, conn: 9 },
                session_id: id,
                password: session_password(id),
                timeout_ms: 12_000,
            },
            now(),
        );
    }

    #[test]
    fn a_session_unknown_to_a_learner_is_revalidated_by_the_leader() {
        // REVALIDATE carries (id, negotiated timeout); the leader answers from its session
        // table and touches the session; the learner then attaches or refuses the client.
        let mut learner = learner();
        let mut leader = leader();
        let moved = SESSION; // Known to the leader only.
        let mut fresh = replica();
        fresh.set_role(Role::Learner);
        resume(&mut fresh, moved);
        assert!(
            fresh.seal_batch().is_none(),
            "no answer before the leader's"
        );
        assert_eq!(fresh.take_revalidations(), vec![(moved, 12_000)]);
        assert!(fresh.take_forwards().is_empty(), "no marker request");
        let valid = leader.revalidate(moved, now());
        assert!(valid);
        assert!(leader.seal_batch().is_none(), "no txn on the leader");
        fresh.revalidated(moved, valid);
        let batch = fresh.seal_batch().expect("answered");
        assert!(batch.entries.iter().any(|e| matches!(e,
            CommitEntry::SessionOpened { session_id, timeout_ms: 12_000, .. }
                if *session_id == moved)));
        // A session the leader does not know is refused.
        let ghost = SESSION + 1;
        resume(&mut learner, ghost);
        assert_eq!(learner.take_revalidations(), vec![(ghost, 12_000)]);
        let valid = leader.revalidate(ghost, now());
        assert!(!valid);
        learner.revalidated(ghost, valid);
        let batch = learner.seal_batch().expect("answered");
        assert!(batch
            .entries
            .iter()
            .any(|e| matches!(e, CommitEntry::SessionRejected { .. })));
        // A stray answer changes nothing.
        learner.revalidated(ghost, true);
        assert!(learner.seal_batch().is_none());
    }
}
