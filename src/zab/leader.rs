//! leader: discovery, synchronization and broadcast as seen by the elected server
//! (ZooKeeper's `Leader.lead` and `LearnerHandler`).
//!
//! Owns: the chosen epoch, one handle per connected learner (its connection, stage and
//! acked zxid), the zxid counter, the ping schedule, and learners' syncs waiting for the
//! commit of the last proposal made before them (ZooKeeper's `pendingSyncs`).
//! Must not: commit before a quorum of voters (itself included, after its own fsync) holds
//! the entry; propose before a quorum acked NEWLEADER.
//! Invariants: commits go out in zxid order; at most `proposals_in_flight_max` uncommitted
//! proposals; the epoch equals acceptedEpoch once chosen; at most `SYNCS_PENDING_MAX`
//! pending syncs, each waiting for an uncommitted zxid, its SYNC sent after that COMMIT.

use super::peer::{Peer, ProposeError, Request, Revalidation, State};
use super::{AuthId, Entry, Link, Message, Packet, Payload, PeerId, Snapshot, Zxid};
use std::collections::{BTreeMap, VecDeque};

/// Syncs a leader holds at most while their proposals commit (and a learner at most while
/// it applies them); beyond it `sync_learner` refuses with `SyncsFull`.
pub const SYNCS_PENDING_MAX: usize = 16_384;

/// Revalidations a peer remembers handing to its driver unanswered, at most; beyond it the
/// oldest is forgotten (its answer is then dropped, as a stale one).
pub const REVALIDATIONS_HANDED_MAX: usize = 16_384;

/// A learner's REVALIDATE handed to the driver (`Ready::revalidations`): its answer goes back
/// only on the connection it came on, in the leadership that took it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HandedRevalidation {
    learner: PeerId,
    session_id: i64,
    /// `LeaderState::session` and the learner's `Handle::conn` when it came.
    leadership: u64,
    conn: u64,
}

/// A learner's sync waiting for the commit of `zxid`, the last proposal when it came.
#[derive(Debug, Clone, Copy)]
struct PendingSync {
    zxid: Zxid,
    learner: PeerId,
    /// The learner's connection: a sync does not outlive it.
    conn: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Discovery,
    Sync,
    Broadcast,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    /// FOLLOWERINFO received.
    Info,
    /// ACKEPOCH received; waits for the epoch quorum to be synced.
    EpochAcked,
    /// The sync stream and NEWLEADER went out.
    NewLeaderSent,
    NewLeaderAcked,
    UpToDate,
}

#[derive(Debug, Clone)]
struct Handle {
    conn: u64,
    send_seq: u64,
    recv_seq: u64,
    observer: bool,
    accepted_epoch: u32,
    stage: Stage,
    /// From ACKEPOCH: the learner's currentEpoch (None: it had accepted this epoch before,
    /// so it does not count towards the epoch quorum) and last logged zxid.
    current_epoch: Option<u32>,
    last_zxid: Zxid,
    /// The last zxid of the sync stream; a NEWLEADER ack covers it.
    sync_end_zxid: Zxid,
    /// Followers: everything up to it is durable there.
    acked_zxid: Zxid,
    /// Observers: the last entry they hold (sync stream or INFORM).
    informed_zxid: Zxid,
    last_heard_tick: u64,
    /// Set when its SNAP was put off for a fresh snapshot (`Config::snap_tail_entries_min`):
    /// the tick it started waiting and the zxid of the newest snapshot then. It waits once.
    snapshot_wait: Option<(u64, Zxid)>,
}

/// A leader's learners by how far they got, for `mntr` (ZooKeeper's learners,
/// synced_followers, synced_observers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LearnerCounts {
    pub learners: usize,
    pub synced_followers: usize,
    pub synced_observers: usize,
}

impl LeaderState {
    pub(crate) fn learner_counts(&self) -> LearnerCounts {
        let synced = |observer: bool| {
            self.learners
                .values()
                .filter(|h| h.observer == observer && h.stage >= Stage::NewLeaderAcked)
                .count()
        };
        LearnerCounts {
            learners: self.learners.len(),
            synced_followers: synced(false),
            synced_observers: synced(true),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct LeaderState {
    pub(crate) epoch: Option<u32>,
    pub(crate) phase: Phase,
    deadline_tick: u64,
    learners: BTreeMap<PeerId, Handle>,
    /// The leader's last zxid when it started syncing: its history to commit first.
    initial_last_zxid: Zxid,
    pub(crate) next_counter: u32,
    last_ping_tick: u64,
    /// This leadership's id on every link (never 0).
    session: u64,
    /// A snapshot newer than the log's, offered by the driver before its compaction: SNAPs
    /// send it (and the log after it).
    offered: Option<Snapshot>,
    /// Learners' syncs by the zxid they wait for, oldest first (so in zxid order).
    pending_syncs: VecDeque<PendingSync>,
}

impl LeaderState {
    pub(crate) fn is_serving(&self) -> bool {
        self.phase == Phase::Broadcast
    }

    pub(crate) fn pending_syncs(&self) -> usize {
        self.pending_syncs.len()
    }

    pub(crate) fn invariants(&self, peer: &Peer) {
        if let Some(epoch) = self.epoch {
            assert_eq!(
                epoch, peer.accepted_epoch,
                "leader epoch is not acceptedEpoch"
            );
        }
        if self.phase == Phase::Broadcast {
            assert_eq!(
                self.epoch,
                Some(peer.current_epoch),
                "serving without currentEpoch"
            );
        }
        if self.is_serving() {
            let in_flight = peer.log.after(peer.commit_zxid).len();
            assert!(
                in_flight <= peer.config.proposals_in_flight_max,
                "pipeline overflow"
            );
            assert!(
                peer.commit_zxid >= self.initial_last_zxid,
                "serving before committing"
            );
        }
        for handle in self.learners.values() {
            assert!(
                handle.acked_zxid <= peer.log.last_zxid(),
                "ack beyond the log"
            );
        }
        assert!(
            self.pending_syncs.len() <= SYNCS_PENDING_MAX,
            "sync overflow"
        );
        for pending in &self.pending_syncs {
            assert!(
                pending.zxid > peer.commit_zxid,
                "a committed sync not answered"
            );
        }
    }
}

impl Peer {
    fn leader(&self) -> &LeaderState {
        match &self.state {
            State::Leading(l) => l,
            _ => unreachable!("not leading"),
        }
    }

    fn leader_mut(&mut self) -> &mut LeaderState {
        match &mut self.state {
            State::Leading(l) => l,
            _ => unreachable!("not leading"),
        }
    }

    pub(crate) fn become_leading(&mut self) {
        self.state = State::Leading(Box::new(LeaderState {
            epoch: None,
            phase: Phase::Discovery,
            deadline_tick: self.now_ticks + self.config.init_limit_ticks,
            learners: BTreeMap::new(),
            initial_last_zxid: Zxid::ZERO,
            next_counter: 1,
            last_ping_tick: self.now_ticks,
            session: self.rng.next_u64() | 1,
            offered: None,
            pending_syncs: VecDeque::new(),
        }));
        self.leader_try_choose_epoch();
    }

    fn leader_send(&mut self, to: PeerId, packet: Packet) {
        let session = self.leader().session;
        let handle = self
            .leader_mut()
            .learners
            .get_mut(&to)
            .expect("send to a known learner");
        let link = Link {
            conn: handle.conn,
            session,
            seq: handle.send_seq,
        };
        handle.send_seq += 1;
        self.send(to, Message::Quorum { link, packet });
    }

    /// Voters among the learners at `stage` or later, plus this leader when `self_counts`.
    fn voters_at(&self, stage: Stage, self_counts: bool) -> usize {
        let learners = self
            .leader()
            .learners
            .iter()
            .filter(|(id, h)| !h.observer && h.stage >= stage && self.config.is_voter(**id))
            .count();
        learners + usize::from(self_counts)
    }

    pub(crate) fn leader_on_packet(&mut self, from: PeerId, link: Link, packet: Packet) {
        if let Packet::FollowerInfo {
            accepted_epoch,
            observer,
        } = packet
        {
            self.leader_on_info(from, link, accepted_epoch, observer);
            return;
        }
        let now = self.now_ticks;
        let session = self.leader().session;
        let Some(handle) = self.leader_mut().learners.get_mut(&from) else {
            return;
        };
        let stale = link.conn != handle.conn || link.session != session;
        if stale || link.seq < handle.recv_seq {
            return; // An older connection, or a duplicate.
        }
        let gap = link.seq > handle.recv_seq;
        handle.recv_seq += 1;
        handle.last_heard_tick = now;
        if gap {
            self.leader_mut().learners.remove(&from); // The connection broke.
            return;
        }
        match packet {
            Packet::AckEpoch {
                current_epoch,
                last_zxid,
            } => self.leader_on_ack_epoch(from, current_epoch, last_zxid),
            Packet::Ack { zxid } => self.leader_on_ack(from, zxid),
            Packet::Request { payload, auth } => self.leader_on_request(from, payload, auth),
            Packet::Revalidate {
                session_id,
                timeout_ms,
            } => self.leader_on_revalidate(from, session_id, timeout_ms),
            Packet::Ping { payload } if !payload.is_empty() => {
                self.ready.session_touches.push((from, payload));
            }
            Packet::Ping { .. } => {}
            _ => self.leader_drop(from, "unexpected packet kind"),
        }
    }

    fn leader_drop(&mut self, learner: PeerId, reason: &'static str) {
        self.violations += 1;
        self.last_violation = Some(reason);
        self.leader_mut().learners.remove(&learner);
    }

    fn leader_on_info(&mut self, from: PeerId, link: Link, accepted_epoch: u32, observer: bool) {
        let member = if observer {
            self.config.observers.contains(&from)
        } else {
            self.config.is_voter(from)
        };
        let known = self.leader().learners.get(&from).map(|h| h.conn);
        if !member || link.seq != 0 || known == Some(link.conn) {
            return;
        }
        let handle = Handle {
            conn: link.conn,
            send_seq: 0,
            recv_seq: 1,
            observer,
            accepted_epoch,
            stage: Stage::Info,
            current_epoch: None,
            last_zxid: Zxid::ZERO,
            sync_end_zxid: Zxid::ZERO,
            acked_zxid: Zxid::ZERO,
            informed_zxid: Zxid::ZERO,
            last_heard_tick: self.now_ticks,
            snapshot_wait: None,
        };
        self.leader_mut().learners.insert(from, handle);
        match self.leader().epoch {
            Some(epoch) => self.leader_send(from, Packet::LeaderInfo { epoch }),
            None => self.leader_try_choose_epoch(),
        }
    }

    /// Discovery: once a quorum of voters told us their acceptedEpoch, the new epoch is one
    /// above the largest.
    fn leader_try_choose_epoch(&mut self) {
        if self.voters_at(Stage::Info, true) < self.config.quorum() {
            return;
        }
        let leader = self.leader();
        let learners_max = leader.learners.values().map(|h| h.accepted_epoch).max();
        let epoch = learners_max.unwrap_or(0).max(self.accepted_epoch) + 1;
        self.persist_accepted_epoch(epoch);
        self.leader_mut().epoch = Some(epoch);
        let ids: Vec<PeerId> = self.leader().learners.keys().copied().collect();
        for id in ids {
            self.leader_send(id, Packet::LeaderInfo { epoch });
        }
        self.leader_try_start_sync();
    }

    fn leader_on_ack_epoch(&mut self, from: PeerId, current_epoch: Option<u32>, last_zxid: Zxid) {
        if self.handle_mut(from).stage != Stage::Info {
            self.leader_drop(from, "ACKEPOCH twice");
            return;
        }
        let handle = self.handle_mut(from);
        handle.stage = Stage::EpochAcked;
        handle.current_epoch = current_epoch;
        handle.last_zxid = last_zxid;
        if self.leader().phase == Phase::Discovery {
            self.leader_try_start_sync();
        } else {
            self.leader_sync(from);
        }
    }

    fn handle_mut(&mut self, id: PeerId) -> &mut Handle {
        self.leader_mut()
            .learners
            .get_mut(&id)
            .expect("a known learner")
    }

    /// The end of discovery: a quorum acked the epoch. A learner with a more recent history
    /// than ours means this election was wrong: start over (ZooKeeper does the same).
    fn leader_try_start_sync(&mut self) {
        if self.leader().epoch.is_none() {
            return;
        }
        let counted = self
            .leader()
            .learners
            .iter()
            .filter(|(id, h)| {
                let acked = h.stage == Stage::EpochAcked && h.current_epoch.is_some();
                acked && !h.observer && self.config.is_voter(**id)
            })
            .count();
        if counted + 1 < self.config.quorum() {
            return;
        }
        let ours = (Some(self.current_epoch), self.log.last_zxid());
        let ahead = self
            .leader()
            .learners
            .values()
            .any(|h| h.stage == Stage::EpochAcked && (h.current_epoch, h.last_zxid) > ours);
        if ahead {
            self.become_looking();
            return;
        }
        let deadline_tick = self.now_ticks + self.config.init_limit_ticks;
        let last = self.log.last_zxid();
        let leader = self.leader_mut();
        leader.phase = Phase::Sync;
        leader.deadline_tick = deadline_tick;
        leader.initial_last_zxid = last;
        let ids: Vec<PeerId> = leader
            .learners
            .iter()
            .filter(|(_, h)| h.stage == Stage::EpochAcked)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.leader_sync(id);
        }
        self.leader_try_establish();
    }

    /// Sends DIFF, TRUNC or SNAP, the missing proposals, and NEWLEADER (reference §5.6).
    /// A SNAP sends the newest snapshot held (offered or the log's); when the log after it
    /// is long, a serving leader first puts the learner off, once, and asks for a fresh one
    /// (`Ready::snapshot_wanted`, `Config::snap_tail_entries_min`).
    fn leader_sync(&mut self, id: PeerId) {
        let epoch = self.leader().epoch.expect("syncing without an epoch");
        let handle = &self.leader().learners[&id];
        let (learner_zxid, waited) = (handle.last_zxid, handle.snapshot_wait.is_some());
        let last = self.log.last_zxid();
        let (first, from) = if self.log.contains(learner_zxid) {
            (Packet::Diff { zxid: last }, learner_zxid)
        } else if learner_zxid > self.log.snapshot().zxid {
            let to = self.log.last_below(learner_zxid);
            (Packet::Trunc { zxid: to }, to)
        } else {
            let snapshot = self.leader_newest_snapshot().clone();
            let tail = self.log.after(snapshot.zxid).len();
            let long = tail > self.config.snap_tail_entries_min
                && tail.saturating_mul(self.config.snap_entry_cost_bytes) > snapshot.data.len();
            if long && !waited && self.leader().is_serving() {
                self.handle_mut(id).snapshot_wait = Some((self.now_ticks, snapshot.zxid));
                self.snapshot_waits += 1;
                self.ready.snapshot_wanted = Some(snapshot.zxid);
                return;
            }
            let zxid = snapshot.zxid;
            (Packet::Snap { snapshot }, zxid)
        };
        self.leader_send(id, first);
        let entries: Vec<Entry> = self.log.after(from).to_vec();
        for entry in entries {
            self.leader_send(id, Packet::Proposal { entry });
        }
        if self.leader().is_serving() && self.commit_zxid > from {
            self.leader_send(
                id,
                Packet::Commit {
                    zxid: self.commit_zxid,
                },
            );
        }
        self.leader_send(id, Packet::NewLeader { epoch });
        let handle = self
            .leader_mut()
            .learners
            .get_mut(&id)
            .expect("synced learner");
        handle.stage = Stage::NewLeaderSent;
        handle.sync_end_zxid = last;
        handle.informed_zxid = last;
    }

    fn leader_on_ack(&mut self, from: PeerId, zxid: Zxid) {
        let epoch = self.leader().epoch.unwrap_or(0);
        let last = self.log.last_zxid();
        let handle = self.handle_mut(from);
        let (stage, observer, acked) = (handle.stage, handle.observer, handle.acked_zxid);
        if zxid == Zxid::new(epoch, 0) && stage == Stage::NewLeaderSent {
            handle.stage = Stage::NewLeaderAcked;
            handle.acked_zxid = handle.sync_end_zxid;
            if self.leader().phase == Phase::Sync {
                self.leader_try_establish();
            } else {
                self.leader_send_up_to_date(from);
                self.leader_advance_commit();
            }
            return;
        }
        if stage < Stage::NewLeaderAcked || observer {
            return;
        }
        if zxid.epoch() == epoch && zxid <= last && zxid > acked {
            self.handle_mut(from).acked_zxid = zxid;
            self.leader_advance_commit();
        }
    }

    fn leader_send_up_to_date(&mut self, id: PeerId) {
        let commit = self.commit_zxid;
        self.leader_send(id, Packet::Commit { zxid: commit });
        self.leader_send(id, Packet::UpToDate);
        if let Some(handle) = self.leader_mut().learners.get_mut(&id) {
            handle.stage = Stage::UpToDate;
        }
    }

    /// The end of synchronization: a quorum (this leader after its fsync included) holds the
    /// leader's whole history in the new epoch, so all of it is committed.
    fn leader_try_establish(&mut self) {
        let leader = self.leader();
        if leader.phase != Phase::Sync {
            return;
        }
        let epoch = leader.epoch.expect("syncing without an epoch");
        let initial = leader.initial_last_zxid;
        let self_ready = self.persisted_zxid >= initial;
        if self_ready && self.current_epoch < epoch {
            // Like a learner: currentEpoch only after the history it vouches for is durable.
            self.persist_current_epoch(epoch);
        }
        // The leader is always part of the quorum (ZooKeeper acks NEWLEADER to itself first):
        // it serves only with its own history and currentEpoch durable.
        if !self_ready || self.voters_at(Stage::NewLeaderAcked, true) < self.config.quorum() {
            return;
        }
        self.leader_mut().phase = Phase::Broadcast;
        self.commit_zxid = self.commit_zxid.max(initial);
        let acked: Vec<PeerId> = self
            .leader()
            .learners
            .iter()
            .filter(|(_, h)| h.stage == Stage::NewLeaderAcked)
            .map(|(id, _)| *id)
            .collect();
        for id in acked {
            self.leader_send_up_to_date(id);
        }
    }

    pub(crate) fn leader_on_persisted(&mut self) {
        match self.leader().phase {
            Phase::Discovery => {}
            Phase::Sync => self.leader_try_establish(),
            Phase::Broadcast => self.leader_advance_commit(),
        }
    }

    /// Commits the largest zxid that a quorum of voters holds durably.
    fn leader_advance_commit(&mut self) {
        if !self.leader().is_serving() {
            return;
        }
        let mut acked: Vec<Zxid> = self
            .leader()
            .learners
            .iter()
            .filter(|(id, h)| {
                !h.observer && h.stage >= Stage::NewLeaderAcked && self.config.is_voter(**id)
            })
            .map(|(_, h)| h.acked_zxid)
            .collect();
        acked.push(self.persisted_zxid);
        acked.sort_unstable_by(|a, b| b.cmp(a));
        let Some(candidate) = acked.get(self.config.quorum() - 1).copied() else {
            return;
        };
        if candidate <= self.commit_zxid {
            return;
        }
        let previous = self.commit_zxid;
        self.commit_zxid = candidate;
        self.leader_broadcast_commit(previous);
        self.leader_send_syncs();
    }

    /// COMMIT to followers; to observers COMMIT for what they hold, INFORM for the rest.
    fn leader_broadcast_commit(&mut self, previous: Zxid) {
        let commit = self.commit_zxid;
        let ids: Vec<(PeerId, bool, Zxid)> = self
            .leader()
            .learners
            .iter()
            .filter(|(_, h)| h.stage >= Stage::NewLeaderSent)
            .map(|(id, h)| (*id, h.observer, h.informed_zxid))
            .collect();
        for (id, observer, informed) in ids {
            if !observer {
                self.leader_send(id, Packet::Commit { zxid: commit });
                continue;
            }
            if informed < self.log.snapshot().zxid {
                // Compacted past what it holds: it must sync again (with SNAP).
                self.leader_mut().learners.remove(&id);
                continue;
            }
            if informed > previous {
                self.leader_send(
                    id,
                    Packet::Commit {
                        zxid: commit.min(informed),
                    },
                );
            }
            if commit > informed {
                let entries: Vec<Entry> = self.log.range(informed, commit).to_vec();
                for entry in entries {
                    self.leader_send(id, Packet::Inform { entry });
                }
                let handle = self.leader_mut().learners.get_mut(&id).expect("observer");
                handle.informed_zxid = commit;
            }
        }
    }

    fn leader_on_request(&mut self, from: PeerId, payload: Payload, auth: Vec<AuthId>) {
        if self.config.requests_to_driver {
            if self.leader().is_serving() {
                self.ready.requests.push(Request {
                    from,
                    payload,
                    auth,
                });
            } else {
                self.requests_dropped += 1;
            }
            return;
        }
        if self.leader_propose(payload).is_err() {
            self.requests_dropped += 1;
        }
    }

    fn leader_on_revalidate(&mut self, from: PeerId, session_id: i64, timeout_ms: i32) {
        let leader = self.leader();
        if !leader.is_serving() {
            self.requests_dropped += 1;
            return;
        }
        let leadership = leader.session;
        let Some(conn) = leader.learners.get(&from).map(|h| h.conn) else {
            return;
        };
        if self.revalidations_handed.len() >= REVALIDATIONS_HANDED_MAX {
            self.revalidations_handed.pop_front();
        }
        self.revalidations_handed.push_back(HandedRevalidation {
            learner: from,
            session_id,
            leadership,
            conn,
        });
        self.ready.revalidations.push(Revalidation {
            from,
            session_id,
            timeout_ms,
        });
    }

    /// Any role: the driver answers the oldest revalidation it was handed from `learner`
    /// about `session_id`. The answer goes out only if this is still the leadership and the
    /// connection that asked: a late answer must not reach the learner's next connection
    /// (or the next leadership's), where nobody asked, or where the same session was asked
    /// again and would get this older answer in place of its own.
    pub(crate) fn answer_handed_revalidation(
        &mut self,
        learner: PeerId,
        session_id: i64,
        valid: bool,
    ) -> Result<(), ProposeError> {
        let index = self
            .revalidations_handed
            .iter()
            .position(|h| h.learner == learner && h.session_id == session_id);
        let handed = index.and_then(|i| self.revalidations_handed.remove(i));
        let State::Leading(leader) = &self.state else {
            return Err(ProposeError::NotServing);
        };
        let conn = leader.learners.get(&learner).map(|h| h.conn);
        let asked_here =
            handed.is_some_and(|h| h.leadership == leader.session && conn == Some(h.conn));
        if !asked_here {
            return Err(ProposeError::UnknownLearner(learner));
        }
        self.leader_send(learner, Packet::Revalidated { session_id, valid });
        Ok(())
    }

    /// Answers `learner`'s sync at once when nothing is outstanding, else once the last
    /// proposal so far commits (`leader_send_syncs`).
    pub(crate) fn leader_sync_learner(&mut self, learner: PeerId) -> Result<(), ProposeError> {
        let leader = self.leader();
        if !leader.is_serving() {
            return Err(ProposeError::NotServing);
        }
        let Some(conn) = leader.learners.get(&learner).map(|h| h.conn) else {
            return Err(ProposeError::UnknownLearner(learner));
        };
        let last = self.log.last_zxid();
        if last <= self.commit_zxid {
            self.leader_send(learner, Packet::Sync);
            return Ok(());
        }
        let pending = leader.pending_syncs.len();
        if pending >= SYNCS_PENDING_MAX {
            return Err(ProposeError::SyncsFull(pending));
        }
        assert!(
            leader.pending_syncs.back().is_none_or(|p| p.zxid <= last),
            "pending syncs out of zxid order"
        );
        self.leader_mut().pending_syncs.push_back(PendingSync {
            zxid: last,
            learner,
            conn,
        });
        Ok(())
    }

    /// After a commit went out: SYNC to each learner whose sync it covers, on the same
    /// connection behind the COMMIT (ZooKeeper's `Leader.tryToCommit`).
    fn leader_send_syncs(&mut self) {
        let commit = self.commit_zxid;
        while let Some(pending) = self.leader().pending_syncs.front().copied() {
            if pending.zxid > commit {
                break;
            }
            self.leader_mut().pending_syncs.pop_front();
            let conn = self.leader().learners.get(&pending.learner).map(|h| h.conn);
            if conn == Some(pending.conn) {
                self.leader_send(pending.learner, Packet::Sync);
            }
        }
    }

    pub(crate) fn leader_propose(&mut self, payload: Payload) -> Result<Zxid, ProposeError> {
        let leader = self.leader();
        if !leader.is_serving() {
            return Err(ProposeError::NotServing);
        }
        let in_flight = self.log.after(self.commit_zxid).len();
        if in_flight >= self.config.proposals_in_flight_max {
            return Err(ProposeError::QueueFull(in_flight));
        }
        if leader.next_counter > self.config.zxid_counter_max {
            // ZooKeeper's XidRolloverException: a new epoch starts the counter over.
            self.become_looking();
            return Err(ProposeError::EpochExhausted);
        }
        let epoch = leader.epoch.expect("serving without an epoch");
        let zxid = Zxid::new(epoch, leader.next_counter);
        self.leader_mut().next_counter += 1;
        let entry = Entry { zxid, payload };
        self.append(entry.clone());
        let followers: Vec<PeerId> = self
            .leader()
            .learners
            .iter()
            .filter(|(_, h)| !h.observer && h.stage >= Stage::NewLeaderSent)
            .map(|(id, _)| *id)
            .collect();
        for id in followers {
            self.leader_send(
                id,
                Packet::Proposal {
                    entry: entry.clone(),
                },
            );
        }
        Ok(zxid)
    }

    pub(crate) fn leader_tick(&mut self) {
        let now = self.now_ticks;
        let leader = self.leader();
        if leader.phase != Phase::Broadcast && now >= leader.deadline_tick {
            self.become_looking(); // initLimit passed without a quorum.
            return;
        }
        if now >= leader.last_ping_tick + self.config.ping_interval_ticks {
            self.leader_ping();
        }
        self.leader_drop_silent();
        self.leader_end_snapshot_waits();
        if self.leader().is_serving()
            && self.voters_at(Stage::NewLeaderAcked, true) < self.config.quorum()
        {
            self.become_looking(); // Lost the quorum for syncLimit.
        }
    }

    /// Learners put off for a fresh snapshot that did not come in `snapshot_wait_ticks` get
    /// the newest one held.
    fn leader_end_snapshot_waits(&mut self) {
        let expired = self
            .now_ticks
            .saturating_sub(self.config.snapshot_wait_ticks);
        self.leader_sync_waiting(|since, _| since <= expired);
    }

    /// Syncs the learners waiting for a fresh snapshot for which `done(since_tick, zxid
    /// of the newest snapshot when they started)` holds.
    fn leader_sync_waiting(&mut self, done: impl Fn(u64, Zxid) -> bool) {
        let ids: Vec<PeerId> = self
            .leader()
            .learners
            .iter()
            .filter(|(_, h)| h.stage == Stage::EpochAcked)
            .filter(|(_, h)| {
                h.snapshot_wait
                    .is_some_and(|(since, zxid)| done(since, zxid))
            })
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.leader_sync(id);
        }
    }

    /// Syncs the learners waiting for a snapshot newer than the one they found.
    fn leader_sync_refreshed(&mut self) {
        let newest = self.leader_newest_snapshot().zxid;
        self.leader_sync_waiting(|_, found| found < newest);
    }

    fn leader_newest_snapshot(&self) -> &Snapshot {
        match &self.leader().offered {
            Some(offered) if offered.zxid > self.log.snapshot().zxid => offered,
            _ => self.log.snapshot(),
        }
    }

    /// A snapshot of the state applied up to `snapshot.zxid`, for SNAPs from now on; learners
    /// waiting for one get it at once. Ignored unless this is a serving leader, the zxid is
    /// committed and newer than any snapshot held, and the log holds what follows it.
    pub(crate) fn leader_offer_snapshot(&mut self, snapshot: &Snapshot) {
        // Applied implies committed (`Peer::invariants`).
        let usable = self.leader().is_serving()
            && snapshot.zxid <= self.applied_zxid
            && snapshot.zxid > self.leader_newest_snapshot().zxid
            && self.log.contains(snapshot.zxid);
        if usable {
            self.leader_mut().offered = Some(snapshot.clone());
            self.leader_sync_refreshed();
        }
    }

    /// After a compaction: an offered snapshot no newer than the log's is dropped.
    pub(crate) fn leader_on_compacted(&mut self) {
        let log_zxid = self.log.snapshot().zxid;
        let leader = self.leader_mut();
        if leader.offered.as_ref().is_some_and(|s| s.zxid <= log_zxid) {
            leader.offered = None;
        }
        self.leader_sync_refreshed();
    }

    fn leader_ping(&mut self) {
        self.leader_mut().last_ping_tick = self.now_ticks;
        let ids: Vec<PeerId> = self
            .leader()
            .learners
            .iter()
            .filter(|(_, h)| h.stage >= Stage::NewLeaderSent)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.leader_send(
                id,
                Packet::Ping {
                    payload: Payload::from(Vec::new()),
                },
            );
        }
    }

    fn leader_drop_silent(&mut self) {
        let now = self.now_ticks;
        let sync_limit = self.config.sync_limit_ticks;
        let init_limit = self.config.init_limit_ticks;
        self.leader_mut().learners.retain(|_, h| {
            let limit = if h.stage >= Stage::NewLeaderAcked {
                sync_limit
            } else {
                init_limit
            };
            now <= h.last_heard_tick + limit
        });
    }
}
