//! learner: a follower or an observer talking to its leader (ZooKeeper's
//! `Learner.registerWithLeader`, `syncWithLeader`, `Follower`/`Observer.processPacket`).
//!
//! Owns: the connection to the leader, the epoch it offered, what this learner acked, and
//! the SYNCs received but not yet handed to the driver (each waits until the commits sent
//! before it are applied here).
//! Must not: ACK anything that is not durable; ACK NEWLEADER before currentEpoch and the
//! synced entries are durable; serve clients before UPTODATE.
//! Invariants: packets of one connection are handled in order, each once; a gap breaks it.

use super::leader::SYNCS_PENDING_MAX;
use super::peer::{Apply, DiskOp, Peer, ProposeError, Proposed, State};
use super::{AuthId, Entry, Link, Message, Packet, Payload, PeerId, Snapshot, Zxid};
use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// FOLLOWERINFO sent, waiting for LEADERINFO.
    Discovery,
    /// ACKEPOCH sent; the sync stream, NEWLEADER and UPTODATE follow.
    Sync,
    /// UPTODATE received: serving clients.
    Broadcast,
}

#[derive(Debug, Clone)]
pub(crate) struct LearnerState {
    pub(crate) leader: PeerId,
    pub(crate) observer: bool,
    conn: u64,
    /// The leadership this connection joined (`Link::session`), 0 until it answered.
    leader_session: u64,
    send_seq: u64,
    recv_seq: u64,
    phase: Phase,
    new_epoch: Option<u32>,
    /// Set by NEWLEADER: the last synced zxid, acked once durable.
    newleader_zxid: Option<Zxid>,
    newleader_acked: bool,
    acked_zxid: Zxid,
    last_heard_tick: u64,
    /// When FOLLOWERINFO last went out; resent until the leader answers.
    info_sent_tick: u64,
    /// SYNCs received, each with the commit zxid it came after: answered to the driver once
    /// that is applied here (the leader sent every COMMIT it covers first). At most
    /// `SYNCS_PENDING_MAX`, the leader's own bound.
    syncs_received: VecDeque<Zxid>,
}

impl LearnerState {
    pub(crate) fn is_serving(&self) -> bool {
        self.phase == Phase::Broadcast
    }
}

impl Peer {
    fn learner(&self) -> &LearnerState {
        match &self.state {
            State::Learning(l) => l,
            _ => unreachable!("not learning"),
        }
    }

    fn learner_mut(&mut self) -> &mut LearnerState {
        match &mut self.state {
            State::Learning(l) => l,
            _ => unreachable!("not learning"),
        }
    }

    pub(crate) fn become_learning(&mut self, leader: PeerId, observer: bool) {
        assert_ne!(leader, self.config.id, "following itself");
        self.state = State::Learning(Box::new(LearnerState {
            leader,
            observer,
            conn: self.rng.next_u64(),
            leader_session: 0,
            send_seq: 0,
            recv_seq: 0,
            phase: Phase::Discovery,
            new_epoch: None,
            newleader_zxid: None,
            newleader_acked: false,
            acked_zxid: Zxid::ZERO,
            last_heard_tick: self.now_ticks,
            info_sent_tick: self.now_ticks,
            syncs_received: VecDeque::new(),
        }));
        self.learner_send_info();
    }

    /// FOLLOWERINFO is always packet 0 of the connection: a resend is a duplicate to a leader
    /// that already has it, and the first copy to one that only now started leading (it may
    /// still have been LOOKING when the first copy arrived).
    fn learner_send_info(&mut self) {
        let (accepted_epoch, now) = (self.accepted_epoch, self.now_ticks);
        let learner = self.learner_mut();
        assert!(
            learner.recv_seq == 0,
            "FOLLOWERINFO after the leader answered"
        );
        let observer = learner.observer;
        learner.info_sent_tick = now;
        learner.send_seq = 0;
        self.learner_send(Packet::FollowerInfo {
            accepted_epoch,
            observer,
        });
    }

    fn learner_send(&mut self, packet: Packet) {
        let learner = self.learner_mut();
        let link = Link {
            conn: learner.conn,
            session: learner.leader_session,
            seq: learner.send_seq,
        };
        learner.send_seq += 1;
        let leader = learner.leader;
        self.send(leader, Message::Quorum { link, packet });
    }

    /// Drops the leader after a packet a correct leader never sends.
    fn learner_violation(&mut self, reason: &'static str) {
        self.violations += 1;
        self.last_violation = Some(reason);
        self.become_looking();
    }

    pub(crate) fn learner_on_packet(&mut self, from: PeerId, link: Link, packet: Packet) {
        let now = self.now_ticks;
        let learner = self.learner_mut();
        if from != learner.leader || link.conn != learner.conn {
            return; // Someone else, or an older connection.
        }
        if learner.leader_session == 0 && link.seq == 0 {
            learner.leader_session = link.session; // The leadership that answered first.
        }
        if link.session != learner.leader_session || link.seq < learner.recv_seq {
            return; // Another leadership of the same server, or a duplicate.
        }
        if link.seq > learner.recv_seq {
            self.become_looking(); // A gap: the connection broke.
            return;
        }
        learner.recv_seq += 1;
        learner.last_heard_tick = now;
        match packet {
            Packet::LeaderInfo { epoch } => self.learner_on_leader_info(epoch),
            Packet::Diff { .. } => {}
            Packet::Trunc { zxid } => self.learner_on_trunc(zxid),
            Packet::Snap { snapshot } => self.learner_on_snap(snapshot),
            Packet::Proposal { entry } => self.learner_on_proposal(entry),
            Packet::Commit { zxid } => self.learner_on_commit(zxid),
            Packet::Inform { entry } => self.learner_on_inform(entry),
            Packet::NewLeader { epoch } => self.learner_on_new_leader(epoch),
            Packet::UpToDate => self.learner_mut().phase = Phase::Broadcast,
            Packet::Ping { .. } => {
                let payload = std::mem::replace(&mut self.ping_reply, Payload::from(Vec::new()));
                self.learner_send(Packet::Ping { payload });
            }
            Packet::Sync => self.learner_on_sync(),
            Packet::Revalidated { session_id, valid } => {
                self.ready.revalidated.push((session_id, valid));
            }
            _ => self.learner_violation("unexpected packet kind"),
        }
    }

    fn learner_on_leader_info(&mut self, epoch: u32) {
        if self.learner().phase != Phase::Discovery {
            return self.learner_violation("LEADERINFO out of discovery");
        }
        if epoch < self.accepted_epoch {
            // We already promised a newer leader: this one cannot win.
            self.become_looking();
            return;
        }
        let current_epoch = if epoch > self.accepted_epoch {
            self.persist_accepted_epoch(epoch);
            Some(self.current_epoch)
        } else {
            None
        };
        let learner = self.learner_mut();
        learner.new_epoch = Some(epoch);
        learner.phase = Phase::Sync;
        let last_zxid = self.log.last_zxid();
        self.learner_send(Packet::AckEpoch {
            current_epoch,
            last_zxid,
        });
    }

    fn learner_on_trunc(&mut self, zxid: Zxid) {
        let below_snapshot = zxid < self.log.snapshot().zxid;
        if self.learner().phase != Phase::Sync || zxid < self.commit_zxid || below_snapshot {
            return self.learner_violation("TRUNC below commit or snapshot");
        }
        self.log.truncate_after(zxid);
        self.ready.disk.push(DiskOp::TruncateAfter(zxid));
        self.persisted_zxid = self.persisted_zxid.min(zxid);
    }

    fn learner_on_snap(&mut self, snapshot: Snapshot) {
        if self.learner().phase != Phase::Sync || snapshot.zxid < self.commit_zxid {
            return self.learner_violation("SNAP below commit");
        }
        let zxid = snapshot.zxid;
        self.log = super::log::Log::new(snapshot.clone(), Vec::new());
        self.ready
            .disk
            .push(DiskOp::InstallSnapshot(snapshot.clone()));
        self.ready.committed.push(Apply::Snapshot(snapshot));
        self.persisted_zxid = zxid;
        self.commit_zxid = zxid;
        self.applied_zxid = zxid;
    }

    fn learner_on_proposal(&mut self, entry: Entry) {
        if entry.zxid <= self.log.last_zxid() || self.learner().phase == Phase::Discovery {
            return self.learner_violation("PROPOSAL out of order");
        }
        self.append(entry);
    }

    fn learner_on_commit(&mut self, zxid: Zxid) {
        if zxid > self.log.last_zxid() {
            return self.learner_violation("COMMIT beyond the log");
        }
        self.commit_zxid = self.commit_zxid.max(zxid);
    }

    fn learner_on_inform(&mut self, entry: Entry) {
        if !self.learner().observer {
            return self.learner_violation("INFORM to a follower");
        }
        let zxid = entry.zxid;
        self.learner_on_proposal(entry);
        if matches!(self.state, State::Learning(_)) {
            self.commit_zxid = self.commit_zxid.max(zxid);
        }
    }

    fn learner_on_new_leader(&mut self, epoch: u32) {
        let learner = self.learner();
        if learner.phase != Phase::Sync || learner.new_epoch != Some(epoch) {
            return self.learner_violation("NEWLEADER for another epoch");
        }
        if learner.newleader_zxid.is_some() {
            return self.learner_violation("second NEWLEADER");
        }
        // currentEpoch is written only once the synced entries are durable (learner_maybe_ack):
        // a restart with the new currentEpoch but without them would win elections it must
        // lose, because votes compare the epoch first.
        let last = self.log.last_zxid();
        self.learner_mut().newleader_zxid = Some(last);
        self.learner_maybe_ack();
    }

    /// Once the synced entries are durable: writes currentEpoch and ACKs NEWLEADER; then ACKs
    /// proposals as they become durable.
    pub(crate) fn learner_maybe_ack(&mut self) {
        let persisted = self.persisted_zxid;
        let learner = self.learner();
        let (Some(synced), Some(epoch)) = (learner.newleader_zxid, learner.new_epoch) else {
            return;
        };
        if !learner.newleader_acked {
            if persisted < synced {
                return;
            }
            if epoch > self.current_epoch {
                self.persist_current_epoch(epoch);
            }
            let learner = self.learner_mut();
            learner.newleader_acked = true;
            learner.acked_zxid = synced;
            self.learner_send(Packet::Ack {
                zxid: Zxid::new(epoch, 0),
            });
        }
        let learner = self.learner();
        if !learner.observer && persisted > learner.acked_zxid && persisted.epoch() == epoch {
            self.learner_mut().acked_zxid = persisted;
            self.learner_send(Packet::Ack { zxid: persisted });
        }
    }

    /// SYNC: the oldest sync this learner forwarded is answered once everything committed
    /// before it is applied here (ZooKeeper queues it behind the commits the same way).
    fn learner_on_sync(&mut self) {
        let commit = self.commit_zxid;
        let learner = self.learner_mut();
        if learner.phase != Phase::Broadcast || learner.syncs_received.len() >= SYNCS_PENDING_MAX {
            return self.learner_violation("SYNC before serving or beyond the sync limit");
        }
        learner.syncs_received.push_back(commit);
        self.learner_release_syncs();
    }

    /// Counts in `Ready::syncs_answered` the SYNCs whose commits are all applied.
    pub(crate) fn learner_release_syncs(&mut self) {
        let applied = self.applied_zxid;
        let learner = self.learner_mut();
        let mut released = 0;
        while learner
            .syncs_received
            .front()
            .is_some_and(|z| *z <= applied)
        {
            learner.syncs_received.pop_front();
            released += 1;
        }
        self.ready.syncs_answered += released;
    }

    pub(crate) fn learner_forward(&mut self, payload: Payload) -> Result<Proposed, ProposeError> {
        self.learner_forward_with(payload, Vec::new())
    }

    pub(crate) fn learner_forward_with(
        &mut self,
        payload: Payload,
        auth: Vec<AuthId>,
    ) -> Result<Proposed, ProposeError> {
        if !self.learner().is_serving() {
            return Err(ProposeError::NotServing);
        }
        self.learner_send(Packet::Request { payload, auth });
        Ok(Proposed::Forwarded)
    }

    pub(crate) fn learner_revalidate(
        &mut self,
        session_id: i64,
        timeout_ms: i32,
    ) -> Result<(), ProposeError> {
        if !self.learner().is_serving() {
            return Err(ProposeError::NotServing);
        }
        self.learner_send(Packet::Revalidate {
            session_id,
            timeout_ms,
        });
        Ok(())
    }

    pub(crate) fn learner_tick(&mut self) {
        let learner = self.learner();
        let limit = if learner.is_serving() {
            self.config.sync_limit_ticks
        } else {
            self.config.init_limit_ticks
        };
        if self.now_ticks > learner.last_heard_tick + limit {
            self.become_looking();
            return;
        }
        let unanswered = learner.phase == Phase::Discovery && learner.recv_seq == 0;
        if unanswered
            && self.now_ticks >= learner.info_sent_tick + self.config.follower_info_resend_ticks
        {
            self.learner_send_info();
        }
    }
}
