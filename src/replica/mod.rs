//! replica: the replica core's sequential state — prep, zxids, apply, sessions — as a pure
//! state machine.
//!
//! Owns: the authoritative data tree, the session table, the zxid counter and the batch of
//! committed work not yet handed to the shards; in an ensemble also the learner's requests
//! waiting for their commits and the leader's undo record of speculative session changes.
//! Must not: do IO or read clocks. The driver (`server`) feeds it `Inbound` messages and ticks
//! with the time, and ships each sealed `CommitBatch` to every shard once it is durable
//! (standalone: the write-ahead log; ensemble: a ZAB commit).
//! Roles (`Role`): standalone and a serving leader prepare, number and apply writes here (a
//! leader speculatively: `reset_to` rolls back what a lost leadership did not commit); a
//! learner forwards writes (`take_forwards`) and applies only committed txns
//! (`apply_committed`), answering its own clients' requests when their txns arrive.
//! Invariants: zxids handed out increase (by one per txn, or to a new epoch's first); a
//! batch's view is the tree after its last entry; every write gets exactly one reply entry, in
//! the order it arrived from its shard.

pub mod forward;

use crate::proto::{op, ErrorCode, Id};
use crate::session::{session_password, SessionTable};
use crate::tree::{prep, DataTree, OpResult, PrepContext, Txn, TxnHeader, WatchTrigger, WriteOp};
use forward::{Forwarded, ForwardedBody};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// The cxid of a learner's revalidation marker (no client uses negative xids for requests).
const REVALIDATE_CXID: i32 = i32::MIN;

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
    Sync {
        cxid: i32,
        route: Route,
        path: String,
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
    },
    /// `sync(path)`: answered once everything before it is committed.
    Sync {
        route: Route,
        session_id: i64,
        xid: i32,
        path: String,
    },
    /// Sessions that showed traffic since the shard's last report.
    Touch { session_ids: Vec<i64> },
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
    Synced {
        route: Route,
        xid: i32,
        path: String,
    },
    /// The server stopped serving or changed its ensemble role: every client connection is
    /// closed (clients reconnect, here or elsewhere).
    Disconnect,
}

/// Everything committed since the previous batch, with the tree as of its last entry.
#[derive(Debug, Clone)]
pub struct CommitBatch {
    pub view: DataTree,
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
    /// Learner: resumes of sessions not known here, waiting for their revalidation marker.
    pending_revalidations: HashMap<i64, Vec<Route>>,
    /// Learner: sessions with traffic since the last PING reply, with their timeouts.
    touched: HashMap<i64, i32>,
    /// Leader: speculative session changes by zxid, oldest first.
    session_changes: VecDeque<(i64, SessionChange)>,
}

impl Replica {
    pub fn new(config: ReplicaConfig, tree: DataTree, now: Now) -> Replica {
        assert!(config.min_session_timeout_ms <= config.max_session_timeout_ms);
        let sessions = SessionTable::new(config.server_id, config.tick_ms, now.wall_ms);
        let container_check_due_ms = now.mono_ms + config.container_check_interval_ms;
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
            pending_revalidations: HashMap::new(),
            touched: HashMap::new(),
            session_changes: VecDeque::new(),
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
            self.pending_revalidations.clear();
            self.touched.clear();
        }
        if !matches!(role, Role::Leader { .. }) {
            self.session_changes.clear();
        }
        self.owners.clear();
        self.role = role;
    }

    /// Learner: the requests to forward to the leader since the last call.
    pub fn take_forwards(&mut self) -> Vec<Forwarded> {
        std::mem::take(&mut self.forwards)
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
    }

    pub fn tree(&self) -> &DataTree {
        &self.tree
    }

    pub fn sessions(&self) -> &SessionTable {
        &self.sessions
    }

    pub fn has_pending(&self) -> bool {
        !self.batch.is_empty()
    }

    /// Hands over everything committed since the last call, with the current view.
    pub fn seal_batch(&mut self) -> Option<CommitBatch> {
        if self.batch.is_empty() {
            return None;
        }
        Some(CommitBatch {
            view: self.tree.clone(),
            entries: std::mem::take(&mut self.batch),
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
            } => match self.role {
                Role::Standalone | Role::Leader { .. } => {
                    self.write(Some(route), session_id, xid, op_code, &op, &auth_ids, now);
                }
                Role::Learner => {
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
                        body: ForwardedBody::Write {
                            op,
                            auth_ids: auth_ids.iter().cloned().collect(),
                        },
                    });
                }
                Role::Looking => {}
            },
            Inbound::Sync {
                route,
                session_id,
                xid,
                path,
            } => match self.role {
                Role::Standalone | Role::Leader { .. } => {
                    self.sessions.touch(session_id, now.mono_ms);
                    self.batch.push(CommitEntry::Synced { route, xid, path });
                }
                Role::Learner => {
                    self.learner_touch(session_id);
                    self.forwards.push(Forwarded {
                        session_id,
                        cxid: xid,
                        op_code: op::SYNC,
                        body: ForwardedBody::Sync { path: path.clone() },
                    });
                    self.pending
                        .entry(session_id)
                        .or_default()
                        .push_back(Pending::Sync {
                            cxid: xid,
                            route,
                            path,
                        });
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
            Inbound::Batch(messages) => {
                for message in messages {
                    self.step(message, now);
                }
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
            self.forwards.push(Forwarded {
                session_id: id,
                cxid: 0,
                op_code: op::CREATE_SESSION,
                body: ForwardedBody::CreateSession { timeout_ms },
            });
            return;
        }
        if password != session_password(id) {
            self.batch.push(CommitEntry::SessionRejected { route });
            return;
        }
        if self.sessions.get(id).is_none() {
            // Perhaps created on another server and not applied here yet (ZooKeeper asks
            // its leader: REVALIDATE): a marker through the leader brings everything
            // committed before it, then the session is checked again.
            self.pending_revalidations
                .entry(id)
                .or_default()
                .push(route);
            self.forwards.push(Forwarded {
                session_id: id,
                cxid: REVALIDATE_CXID,
                op_code: op::SYNC,
                body: ForwardedBody::Sync {
                    path: String::new(),
                },
            });
            return;
        }
        self.learner_resume(route, id);
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

    /// Leader: a request a learner forwarded. Anything else drops it (the learner's client
    /// is disconnected when that learner's leadership ends).
    pub fn step_forwarded(&mut self, request: Forwarded, now: Now) {
        if !matches!(self.role, Role::Leader { .. }) {
            return;
        }
        let Forwarded {
            session_id,
            cxid,
            op_code,
            body,
        } = request;
        match body {
            ForwardedBody::CreateSession { timeout_ms } => {
                if self.sessions.get(session_id).is_some() {
                    return; // A duplicate: the learner numbered it once.
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
            ForwardedBody::Write { op, auth_ids } => {
                self.write(None, session_id, cxid, op_code, &op, &auth_ids, now);
            }
            ForwardedBody::Sync { .. } => {
                // A marker txn: when the learner applies it, everything committed before
                // the sync is applied there too.
                self.sessions.touch(session_id, now.mono_ms);
                let txn = Txn::Error { err: ErrorCode::Ok };
                self.commit(session_id, cxid, op::ERROR, txn, now);
            }
        }
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
        let mut synced = None;
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
        if header.cxid == REVALIDATE_CXID && header.op == op::ERROR {
            for route in self
                .pending_revalidations
                .remove(&session_id)
                .unwrap_or_default()
            {
                self.learner_resume(route, session_id);
            }
        }
        let waiting = self.pending.get_mut(&session_id);
        let matches = waiting
            .as_ref()
            .and_then(|q| q.front())
            .is_some_and(|p| match p {
                Pending::Write { cxid, .. } | Pending::Sync { cxid, .. } => *cxid == header.cxid,
            });
        if matches {
            match waiting.and_then(VecDeque::pop_front) {
                Some(Pending::Write {
                    cxid,
                    route,
                    op_code,
                }) => {
                    reply = Some(Reply {
                        route,
                        xid: cxid,
                        op_code,
                        result: result.result,
                    });
                }
                Some(Pending::Sync { cxid, route, path }) => {
                    synced = Some(CommitEntry::Synced {
                        route,
                        xid: cxid,
                        path,
                    });
                }
                None => {}
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
        self.batch.extend(synced);
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
            messages.push(Inbound::Write {
                route,
                session_id: 0x0100_0000_0000_0001,
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
            });
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
        assert_eq!(a.view.last_zxid(), b.view.last_zxid());
    }

    #[test]
    fn a_learner_revalidates_a_session_it_has_not_applied_yet() {
        // A client resumes on a learner before that learner applied the session's
        // createSession: it is answered after a marker through the leader, not refused.
        let mut learner = replica();
        learner.set_role(Role::Learner);
        let route = Route { shard: 0, conn: 9 };
        let id = 0x0200_0000_0000_0001;
        learner.step(
            Inbound::Connect {
                route,
                session_id: id,
                password: session_password(id),
                timeout_ms: 10_000,
            },
            now(),
        );
        assert!(
            learner.seal_batch().is_none(),
            "no answer before the marker"
        );
        let forwards = learner.take_forwards();
        assert_eq!(forwards.len(), 1);
        assert_eq!(
            (forwards[0].session_id, forwards[0].cxid),
            (id, REVALIDATE_CXID)
        );
        let header = |zxid, cxid, op| TxnHeader {
            session_id: id,
            cxid,
            zxid,
            time_ms: 1,
            op,
        };
        let create = Txn::CreateSession { timeout_ms: 10_000 };
        learner.apply_committed(&header(1, 0, op::CREATE_SESSION), create, now());
        let marker = Txn::Error { err: ErrorCode::Ok };
        learner.apply_committed(&header(2, REVALIDATE_CXID, op::ERROR), marker, now());
        let batch = learner.seal_batch().expect("answered");
        assert!(batch.entries.iter().any(|e| matches!(e,
            CommitEntry::SessionOpened { route: r, session_id, .. } if *r == route && *session_id == id)));
        // A session that never existed is refused once its marker is applied.
        let ghost = id + 1;
        learner.step(
            Inbound::Connect {
                route,
                session_id: ghost,
                password: session_password(ghost),
                timeout_ms: 10_000,
            },
            now(),
        );
        let marker = Txn::Error { err: ErrorCode::Ok };
        let ghost_header = TxnHeader {
            session_id: ghost,
            ..header(3, REVALIDATE_CXID, op::ERROR)
        };
        learner.apply_committed(&ghost_header, marker, now());
        let batch = learner.seal_batch().expect("answered");
        assert!(batch
            .entries
            .iter()
            .any(|e| matches!(e, CommitEntry::SessionRejected { route: r } if *r == route)));
    }
}
