//! peer: one server's ZAB state machine and the `Ready` it hands to its driver.
//!
//! Owns: the epochs, the log, the persisted/committed/applied marks and the current role.
//! Must not: do IO; everything the outside world must do is queued in `Ready`.
//! Invariants: see `Peer::invariants` and the module header of `zab`.

use super::election::{Action, Election};
use super::leader::{HandedRevalidation, LeaderState, REVALIDATIONS_HANDED_MAX};
use super::learner::LearnerState;
use super::log::Log;
use super::rng::SplitMix64;
use super::{AuthId, Config, ConfigError, Entry, Message, Notification, Payload, PeerId};
use super::{ServerState, Snapshot, Vote, Zxid};
use std::collections::VecDeque;

/// One durable-storage operation. Execute them in order (see the `zab` module header).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskOp {
    /// Write `<dataDir>/version-2/acceptedEpoch` atomically (synchronous).
    AcceptedEpoch(u32),
    /// Write `<dataDir>/version-2/currentEpoch` atomically (synchronous).
    CurrentEpoch(u32),
    /// Persist this snapshot and drop the whole log (synchronous).
    InstallSnapshot(Snapshot),
    /// Drop every logged entry above this zxid, durable or not (synchronous).
    TruncateAfter(Zxid),
    /// Append to the log; fsync whenever convenient, then call `Peer::on_persisted`.
    Append(Entry),
}

/// What the state machine must apply, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Apply {
    Entry(Entry),
    /// Replace the whole state by this snapshot (a SNAP from the leader).
    Snapshot(Snapshot),
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub to: PeerId,
    pub message: Message,
}

/// The role as the driver needs it: whom to forward to, whether to serve clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Looking,
    /// `serving` once a quorum acked NEWLEADER.
    Leading {
        serving: bool,
    },
    /// `serving` once UPTODATE arrived.
    Following {
        leader: PeerId,
        serving: bool,
    },
    Observing {
        leader: PeerId,
        serving: bool,
    },
}

/// Everything the driver must do, drained by `Peer::take_ready`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ready {
    pub disk: Vec<DiskOp>,
    pub messages: Vec<Envelope>,
    pub committed: Vec<Apply>,
    /// Set when the role changed since the previous `Ready`.
    pub role: Option<Role>,
    /// Leader only: the non-empty PING payloads learners sent (ZooKeeper: session touches).
    pub session_touches: Vec<(PeerId, Payload)>,
    /// Leader with `Config::requests_to_driver`: learners' forwarded REQUESTs.
    pub requests: Vec<Request>,
    /// Leader: learners' REVALIDATE questions, answered by `Peer::answer_revalidation`.
    pub revalidations: Vec<Revalidation>,
    /// Learner: the leader's REVALIDATE answers, (session id, valid).
    pub revalidated: Vec<(i64, bool)>,
    /// Learner: how many of its forwarded syncs the leader answered (SYNC) and this learner
    /// has applied everything for, oldest first.
    pub syncs_answered: usize,
    /// Leader: a learner waits for a snapshot newer than this zxid (the newest this peer
    /// holds; `Config::snap_tail_entries_min`): take one of the applied state and hand it
    /// to `Peer::offer_snapshot` (and compact with it).
    pub snapshot_wanted: Option<Zxid>,
}

/// A learner's REQUEST as its leader received it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub from: PeerId,
    pub payload: Payload,
    pub auth: Vec<AuthId>,
}

/// A learner asking whether a session it does not know is alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revalidation {
    pub from: PeerId,
    pub session_id: i64,
    pub timeout_ms: i32,
}

impl Ready {
    pub fn is_empty(&self) -> bool {
        self.disk.is_empty()
            && self.messages.is_empty()
            && self.committed.is_empty()
            && self.role.is_none()
            && self.session_touches.is_empty()
            && self.requests.is_empty()
            && self.snapshot_wanted.is_none()
            && self.revalidations.is_empty()
            && self.revalidated.is_empty()
            && self.syncs_answered == 0
    }

    /// True when some appends need an fsync before `on_persisted`.
    pub fn must_sync(&self) -> bool {
        self.disk.iter().any(|op| matches!(op, DiskOp::Append(_)))
    }
}

/// What survived on disk: the start of a restarted peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Durable {
    pub accepted_epoch: u32,
    pub current_epoch: u32,
    pub snapshot: Snapshot,
    /// Every durable entry above the snapshot, in zxid order (a torn tail already dropped).
    pub log: Vec<Entry>,
}

impl Durable {
    pub fn empty() -> Durable {
        Durable {
            accepted_epoch: 0,
            current_epoch: 0,
            snapshot: Snapshot::empty(),
            log: vec![],
        }
    }
}

/// Where a successful `propose` went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proposed {
    /// This leader proposed it under this zxid.
    Local(Zxid),
    /// This learner forwarded it to its leader (REQUEST).
    Forwarded,
}

/// Why `propose` refused: operating conditions, the client retries elsewhere or later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("not serving: no established leader to propose to")]
    NotServing,
    #[error("{0} proposals are in flight, the maximum")]
    QueueFull(usize),
    #[error("the epoch's zxid counter is exhausted; a new election was started")]
    EpochExhausted,
    #[error("{0} syncs are pending, the maximum")]
    SyncsFull(usize),
    #[error("no such learner: {0}")]
    UnknownLearner(PeerId),
}

pub(crate) enum State {
    Looking,
    Leading(Box<LeaderState>),
    Learning(Box<LearnerState>),
}

/// One ZAB server. See the `zab` module header for how a driver uses it.
pub struct Peer {
    pub(crate) config: Config,
    pub(crate) rng: SplitMix64,
    pub(crate) now_ticks: u64,
    pub(crate) accepted_epoch: u32,
    pub(crate) current_epoch: u32,
    pub(crate) log: Log,
    pub(crate) persisted_zxid: Zxid,
    pub(crate) commit_zxid: Zxid,
    pub(crate) applied_zxid: Zxid,
    pub(crate) election: Election,
    pub(crate) state: State,
    pub(crate) ready: Ready,
    reported_role: Role,
    pub(crate) ping_reply: Payload,
    /// Packets that a correct peer never sends (counted, then the link is dropped).
    pub(crate) violations: u64,
    pub(crate) last_violation: Option<&'static str>,
    /// Client writes a leader dropped because its pipeline was full.
    pub(crate) requests_dropped: u64,
    pub(crate) snapshot_waits: u64,
    /// Leader: the revalidations handed to the driver and not answered yet, oldest first
    /// (`leader::HandedRevalidation`). Kept across roles: a driver answers what it was handed
    /// even after the leadership ended, and those answers must pair with their own asks.
    pub(crate) revalidations_handed: VecDeque<HandedRevalidation>,
}

impl Peer {
    /// Starts a peer (new or restarted) in LOOKING; the first `Ready` holds its votes.
    ///
    /// # Errors
    /// `config` does not validate.
    ///
    /// # Panics
    /// `durable` is out of order (the storage layer must have verified it).
    pub fn new(config: Config, durable: Durable, seed: u64) -> Result<Peer, ConfigError> {
        config.validate()?;
        assert!(
            durable.accepted_epoch >= durable.current_epoch,
            "currentEpoch ahead"
        );
        let log = Log::new(durable.snapshot, durable.log);
        let snapshot_zxid = log.snapshot().zxid;
        let own_vote = Vote {
            leader: config.id,
            zxid: log.last_zxid(),
            peer_epoch: 0,
        };
        let mut peer = Peer {
            rng: SplitMix64::new(seed),
            now_ticks: 0,
            accepted_epoch: durable.accepted_epoch,
            current_epoch: durable.current_epoch,
            persisted_zxid: log.last_zxid(),
            commit_zxid: snapshot_zxid,
            applied_zxid: snapshot_zxid,
            log,
            election: Election::new(own_vote),
            state: State::Looking,
            ready: Ready::default(),
            reported_role: Role::Looking,
            ping_reply: Payload::from(Vec::new()),
            violations: 0,
            last_violation: None,
            requests_dropped: 0,
            snapshot_waits: 0,
            revalidations_handed: VecDeque::new(),
            config,
        };
        peer.become_looking();
        Ok(peer)
    }

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        self.now_ticks += 1;
        match self.state {
            State::Looking => {
                let action = self
                    .election
                    .on_tick(&self.config, self.now_ticks, &mut self.rng);
                self.carry_out(None, action);
            }
            State::Leading(_) => self.leader_tick(),
            State::Learning(_) => self.learner_tick(),
        }
        self.apply_committed();
    }

    /// Handles one message from `from`. Never panics on what a peer sends.
    pub fn step(&mut self, from: PeerId, message: Message) {
        if from == self.config.id {
            self.violations += 1;
            self.last_violation = Some("a message from itself");
            return;
        }
        match message {
            Message::Notification(n) => self.on_notification(from, &n),
            Message::Quorum { link, packet } => match self.state {
                State::Looking => {}
                State::Leading(_) => self.leader_on_packet(from, link, packet),
                State::Learning(_) => self.learner_on_packet(from, link, packet),
            },
        }
        self.apply_committed();
    }

    /// Proposes a client write (leader) or forwards it to the leader (learner).
    ///
    /// # Errors
    /// Not serving, the pipeline is full, or the epoch ran out of zxids.
    pub fn propose(&mut self, payload: Payload) -> Result<Proposed, ProposeError> {
        let result = match self.state {
            State::Looking => Err(ProposeError::NotServing),
            State::Leading(_) => self.leader_propose(payload).map(Proposed::Local),
            State::Learning(_) => self.learner_forward(payload),
        };
        self.apply_committed();
        result
    }

    /// Learner: forwards a client request with its connection's auth ids (REQUEST).
    ///
    /// # Errors
    /// Not a serving learner.
    pub fn forward(&mut self, payload: Payload, auth: Vec<AuthId>) -> Result<(), ProposeError> {
        match self.state {
            State::Learning(_) => self.learner_forward_with(payload, auth).map(|_| ()),
            _ => Err(ProposeError::NotServing),
        }
    }

    /// Learner: asks the leader whether a session is alive (REVALIDATE); the answer comes in
    /// `Ready::revalidated`.
    ///
    /// # Errors
    /// Not a serving learner.
    pub fn revalidate(&mut self, session_id: i64, timeout_ms: i32) -> Result<(), ProposeError> {
        match self.state {
            State::Learning(_) => self.learner_revalidate(session_id, timeout_ms),
            _ => Err(ProposeError::NotServing),
        }
    }

    /// Leader: a sync `learner` forwarded reached the driver's state machine after every
    /// request before it. SYNC goes back once everything proposed so far is committed: at
    /// once when nothing is outstanding (ZooKeeper's `Leader.processSync`).
    ///
    /// # Errors
    /// Not a serving leader, an unknown learner, or `SYNCS_PENDING_MAX` syncs pending.
    pub fn sync_learner(&mut self, learner: PeerId) -> Result<(), ProposeError> {
        match self.state {
            State::Leading(_) => self.leader_sync_learner(learner),
            _ => Err(ProposeError::NotServing),
        }
    }

    /// Leader: answers a learner's `Revalidation` (REVALIDATE with the session's validity).
    /// Answer each one once, those of one learner about one session in the order they came:
    /// an answer pairs with the oldest unanswered one, and goes back only on the connection
    /// it came on (a connection or leadership that ended drops it).
    ///
    /// # Errors
    /// Not a leader, or the learner's connection that asked is gone (or it never asked).
    pub fn answer_revalidation(
        &mut self,
        learner: PeerId,
        session_id: i64,
        valid: bool,
    ) -> Result<(), ProposeError> {
        self.answer_handed_revalidation(learner, session_id, valid)
    }

    /// The driver made every append up to `zxid` durable.
    pub fn on_persisted(&mut self, zxid: Zxid) {
        let zxid = zxid.min(self.log.last_zxid());
        if zxid <= self.persisted_zxid {
            return;
        }
        self.persisted_zxid = zxid;
        match self.state {
            State::Looking => {}
            State::Leading(_) => self.leader_on_persisted(),
            State::Learning(_) => self.learner_maybe_ack(),
        }
        self.apply_committed();
    }

    /// The driver wrote a snapshot of the applied state at `snapshot.zxid`; entries up to it
    /// leave memory. Later SNAP syncs send this snapshot.
    ///
    /// # Panics
    /// `snapshot.zxid` is not applied yet or is older than the current snapshot.
    pub fn compact(&mut self, snapshot: Snapshot) {
        assert!(
            snapshot.zxid <= self.applied_zxid,
            "compact beyond the applied zxid"
        );
        assert!(
            snapshot.zxid >= self.log.snapshot().zxid,
            "compact to an older snapshot"
        );
        assert!(
            self.log.contains(snapshot.zxid),
            "compact to an unknown zxid"
        );
        self.log.install(snapshot);
        if matches!(self.state, State::Leading(_)) {
            self.leader_on_compacted();
        }
    }

    /// Leader: offers a snapshot of the applied state for SNAPs (learners waiting for a
    /// fresh one get it at once, later ones too until the log's snapshot is as new). It
    /// does not replace the log's snapshot: `compact` does.
    pub fn offer_snapshot(&mut self, snapshot: &Snapshot) {
        if matches!(self.state, State::Leading(_)) {
            self.leader_offer_snapshot(snapshot);
        }
    }

    /// Leaves any role for a new election (the driver could not do what the role needs).
    pub fn step_down(&mut self) {
        if !matches!(self.state, State::Looking) {
            self.become_looking();
        }
    }

    /// The payload the next PING reply carries (ZooKeeper: the session touch table).
    pub fn set_ping_reply(&mut self, payload: Payload) {
        self.ping_reply = payload;
    }

    /// Appends to the next PING reply's payload (touch tables concatenate: a second report
    /// before the next PING must not replace the first).
    pub fn append_ping_reply(&mut self, payload: &[u8]) {
        if self.ping_reply.is_empty() {
            self.ping_reply = Payload::from(payload);
            return;
        }
        let mut joined = Vec::with_capacity(self.ping_reply.len() + payload.len());
        joined.extend_from_slice(&self.ping_reply);
        joined.extend_from_slice(payload);
        self.ping_reply = Payload::from(joined);
    }

    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty() || self.role() != self.reported_role
    }

    pub fn take_ready(&mut self) -> Ready {
        let mut ready = std::mem::take(&mut self.ready);
        let role = self.role();
        if role != self.reported_role {
            self.reported_role = role;
            ready.role = Some(role);
        }
        ready
    }

    pub fn id(&self) -> PeerId {
        self.config.id
    }

    pub fn now_ticks(&self) -> u64 {
        self.now_ticks
    }

    pub fn role(&self) -> Role {
        match &self.state {
            State::Looking => Role::Looking,
            State::Leading(l) => Role::Leading {
                serving: l.is_serving(),
            },
            State::Learning(l) if l.observer => Role::Observing {
                leader: l.leader,
                serving: l.is_serving(),
            },
            State::Learning(l) => Role::Following {
                leader: l.leader,
                serving: l.is_serving(),
            },
        }
    }

    /// The zxid the next successful `propose` gets: a serving leader's only.
    pub fn next_zxid(&self) -> Option<Zxid> {
        match &self.state {
            State::Leading(l) if l.is_serving() => Some(Zxid::new(l.epoch?, l.next_counter)),
            _ => None,
        }
    }

    /// A leader's syncs waiting for a commit (mntr's zk_pending_syncs); None elsewhere.
    pub fn pending_syncs(&self) -> Option<usize> {
        match &self.state {
            State::Leading(l) => Some(l.pending_syncs()),
            _ => None,
        }
    }

    /// A leader's learners by stage; None on any other role.
    pub fn learner_counts(&self) -> Option<super::leader::LearnerCounts> {
        match &self.state {
            State::Leading(l) => Some(l.learner_counts()),
            _ => None,
        }
    }

    /// The epoch this peer leads, once a quorum acked it (discovery is over).
    pub fn leader_epoch(&self) -> Option<u32> {
        match &self.state {
            State::Leading(l) if l.phase != super::leader::Phase::Discovery => l.epoch,
            _ => None,
        }
    }

    pub fn accepted_epoch(&self) -> u32 {
        self.accepted_epoch
    }

    pub fn current_epoch(&self) -> u32 {
        self.current_epoch
    }

    pub fn last_zxid(&self) -> Zxid {
        self.log.last_zxid()
    }

    pub fn persisted_zxid(&self) -> Zxid {
        self.persisted_zxid
    }

    pub fn commit_zxid(&self) -> Zxid {
        self.commit_zxid
    }

    pub fn applied_zxid(&self) -> Zxid {
        self.applied_zxid
    }

    pub fn snapshot(&self) -> &Snapshot {
        self.log.snapshot()
    }

    pub fn entries(&self) -> &[Entry] {
        self.log.entries()
    }

    pub fn violations(&self) -> u64 {
        self.violations
    }

    /// What the last violation was, for logs.
    pub fn last_violation(&self) -> Option<&'static str> {
        self.last_violation
    }

    /// Leader: SNAPs put off for a fresh snapshot (`Config::snap_tail_entries_min`).
    pub fn snapshot_waits(&self) -> u64 {
        self.snapshot_waits
    }

    pub fn requests_dropped(&self) -> u64 {
        self.requests_dropped
    }

    /// Asserts every internal invariant; the simulator calls it after each step.
    ///
    /// # Panics
    /// An invariant does not hold: a bug in this module.
    pub fn invariants(&self) {
        self.log.invariants();
        let last = self.log.last_zxid();
        assert!(self.persisted_zxid <= last, "persisted beyond the log");
        assert!(self.commit_zxid <= last, "committed beyond the log");
        assert!(
            self.applied_zxid <= self.commit_zxid,
            "applied beyond committed"
        );
        assert!(self.applied_zxid <= self.persisted_zxid.max(self.log.snapshot().zxid));
        assert!(
            self.applied_zxid >= self.log.snapshot().zxid,
            "applied below the snapshot"
        );
        assert!(
            self.accepted_epoch >= self.current_epoch,
            "currentEpoch ahead"
        );
        assert!(
            self.revalidations_handed.len() <= REVALIDATIONS_HANDED_MAX,
            "revalidations handed beyond the limit"
        );
        if let State::Leading(l) = &self.state {
            l.invariants(self);
        }
    }

    pub(crate) fn own_vote(&self) -> Vote {
        Vote {
            leader: self.config.id,
            zxid: self.log.last_zxid(),
            peer_epoch: self.current_epoch,
        }
    }

    pub(crate) fn send(&mut self, to: PeerId, message: Message) {
        debug_assert_ne!(to, self.config.id);
        self.ready.messages.push(Envelope { to, message });
    }

    pub(crate) fn persist_accepted_epoch(&mut self, epoch: u32) {
        assert!(epoch >= self.accepted_epoch, "acceptedEpoch going back");
        self.accepted_epoch = epoch;
        self.ready.disk.push(DiskOp::AcceptedEpoch(epoch));
    }

    pub(crate) fn persist_current_epoch(&mut self, epoch: u32) {
        assert!(
            epoch <= self.accepted_epoch,
            "currentEpoch beyond acceptedEpoch"
        );
        assert!(epoch >= self.current_epoch, "currentEpoch going back");
        self.current_epoch = epoch;
        self.ready.disk.push(DiskOp::CurrentEpoch(epoch));
    }

    pub(crate) fn append(&mut self, entry: Entry) {
        self.log.append(entry.clone());
        self.ready.disk.push(DiskOp::Append(entry));
    }

    /// Hands every entry that is both committed and durable to the state machine, then (a
    /// learner) the syncs answered up to what is applied.
    pub(crate) fn apply_committed(&mut self) {
        let upto = self.commit_zxid.min(self.persisted_zxid);
        if upto > self.applied_zxid {
            for entry in self.log.range(self.applied_zxid, upto) {
                self.ready.committed.push(Apply::Entry(entry.clone()));
            }
            self.applied_zxid = upto;
        }
        if let State::Learning(_) = self.state {
            self.learner_release_syncs();
        }
    }

    /// Leaves any role and starts a new election round.
    pub(crate) fn become_looking(&mut self) {
        self.state = State::Looking;
        let vote = self.own_vote();
        self.election.start(&self.config, vote, self.now_ticks);
        self.broadcast_vote();
    }

    fn notification(&self) -> Notification {
        let state = match &self.state {
            State::Looking => ServerState::Looking,
            State::Leading(_) => ServerState::Leading,
            State::Learning(l) if l.observer => ServerState::Observing,
            State::Learning(_) => ServerState::Following,
        };
        Notification {
            state,
            vote: self.election.proposal,
            round: self.election.round,
        }
    }

    fn broadcast_vote(&mut self) {
        let n = self.notification();
        let voters: Vec<PeerId> = self
            .config
            .voters
            .iter()
            .copied()
            .filter(|v| *v != self.config.id)
            .collect();
        for voter in voters {
            self.send(voter, Message::Notification(n));
        }
    }

    fn on_notification(&mut self, from: PeerId, n: &Notification) {
        if !matches!(self.state, State::Looking) {
            // Out of the election: tell a looking server whom we follow.
            if n.state == ServerState::Looking {
                self.send(from, Message::Notification(self.notification()));
            }
            return;
        }
        let action = self
            .election
            .on_notification(&self.config, from, n, self.now_ticks);
        self.carry_out(Some(from), action);
    }

    fn carry_out(&mut self, from: Option<PeerId>, action: Action) {
        if let Some(vote) = action.decided {
            self.election.proposal = vote;
            self.on_elected(vote);
            return;
        }
        if action.broadcast {
            self.broadcast_vote();
        } else if let (true, Some(from)) = (action.reply, from) {
            self.send(from, Message::Notification(self.notification()));
        }
    }

    fn on_elected(&mut self, vote: Vote) {
        if vote.leader == self.config.id {
            assert!(
                self.config.is_voter(self.config.id),
                "an observer elected itself"
            );
            self.become_leading();
        } else {
            let observer = !self.config.is_voter(self.config.id);
            self.become_learning(vote.leader, observer);
        }
    }
}
