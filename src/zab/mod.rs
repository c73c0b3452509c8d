//! zab: ZooKeeper's atomic broadcast (FastLeaderElection, discovery, synchronization,
//! broadcast) as a pure, deterministic state machine, one [`Peer`] per server.
//!
//! Owns: the election round and votes, the accepted/current epochs, the peer's in-memory log
//! (a snapshot plus the entries after it), which zxid is persisted / committed / applied, the
//! per-learner progress and pending syncs on a leader. A learner's syncs are answered here
//! (SYNC after the covering COMMIT, no txn), its session revalidations carried (REVALIDATE);
//! what a REQUEST or a session means is the driver's state machine's business.
//! Must not: do IO, read clocks, spawn threads or draw randomness from anywhere but the seed it
//! is given. A driver feeds it `step(from, message)`, `tick()`, `propose(payload)` and
//! `on_persisted(zxid)`, then drains a [`Ready`] (disk operations in order, messages to send,
//! committed entries to apply, role changes), exactly like raft-rs's `RawNode`.
//! Invariants (checked by [`Peer::invariants`] after every step in the simulator):
//! - log zxids strictly increase and all are above the snapshot's zxid;
//! - applied <= committed, applied <= persisted, persisted <= last logged;
//! - a leader never has more than `proposals_in_flight_max` uncommitted proposals;
//! - acceptedEpoch >= currentEpoch; a leader's epoch is its acceptedEpoch.
//!
//! Durability rules for the driver (DESIGN §5, STYLE rule 7):
//! 1. Execute `Ready::disk` in order. Epoch, snapshot and truncate operations are synchronous
//!    (durable before the next operation); appends may be buffered and fsynced later (group
//!    commit); call `on_persisted(last_appended_zxid)` once they are durable.
//! 2. Send `Ready::messages` only after the synchronous operations of that `Ready` are done. A
//!    follower's ACK is generated only by `on_persisted`, so it never acks what is not durable.
//! 3. Apply `Ready::committed` in order; they are always durable locally already — but for
//!    a SNAP's `Apply::Snapshot`, which may be applied while its `InstallSnapshot` is written
//!    (it is committed ensemble state; a learner acks NEWLEADER only after the write, and
//!    serves nothing before that). A crash in between restarts from the old durable state.
//!
//! A driver's loop (the simulator in `sim.rs` is one):
//! ```text
//! let mut peer = Peer::new(config, durable_from_disk, seed)?;   // starts LOOKING
//! loop {
//!     on a timer:                 peer.tick();
//!     on a message from `from`:   peer.step(from, message);
//!     on a client write:          peer.propose(payload)   // Local(zxid) | Forwarded | Err
//!     when an fsync completes:    peer.on_persisted(last_zxid_it_covered);
//!     after a snapshot is written: peer.compact(snapshot);
//!     while peer.has_ready() {
//!         let ready = peer.take_ready();
//!         ready.disk      -> storage, in order (rule 1 below)
//!         ready.messages  -> network, after the synchronous disk ops (rule 2)
//!         ready.committed -> state machine, in order (Apply::Entry | Apply::Snapshot)
//!         ready.role      -> start/stop serving clients, forward to the new leader
//!         ready.session_touches -> (leader) the learners' PING payloads
//!         ready.requests / revalidations -> (leader) learners' REQUESTs and REVALIDATEs;
//!             answered with peer.sync_learner(id) / peer.answer_revalidation(..) (each
//!             revalidation once; one learner's about one session in the order handed over)
//!         ready.syncs_answered / revalidated -> (learner) the leader's SYNCs and answers
//!     }
//! }
//! ```
//!
//! Limits: a leader holds at most `proposals_in_flight_max` uncommitted proposals; beyond it
//! `propose` fails with `QueueFull` and a forwarded REQUEST is dropped (counted in
//! `requests_dropped`; the client's request times out). It holds at most
//! `SYNCS_PENDING_MAX` learner syncs; beyond it `sync_learner` fails with `SyncsFull`. A peer
//! remembers at most `REVALIDATIONS_HANDED_MAX` revalidations its driver has yet to answer
//! (the oldest is forgotten, its answer dropped). A `Ready` holds what one batch of
//! inputs produced and is drained after each; the in-memory log grows until `compact`.
//!
//! Transport: election notifications tolerate loss, duplication and reordering. The
//! leader/learner channel is modelled as a connection (`Link::conn`, chosen by the learner,
//! and `Link::session`, chosen by each leadership) carrying numbered packets (`Link::seq`); a
//! duplicate is ignored, a gap breaks the connection. Over TCP the driver maps a connection to
//! these and numbers packets itself, so none of them goes on the wire (`wire` has the bytes).
//!
//! Deliberate difference from ZooKeeper: entries are applied only once committed (ZooKeeper
//! replays its whole log on restart), so truncating uncommitted entries is always safe and the
//! leader sends TRUNC across an epoch boundary too, where ZooKeeper falls back to SNAP. SNAP is
//! used when the learner is behind the leader's snapshot (the leader compacted its log). It
//! sends the newest snapshot held (the log's, or a newer one offered by the driver); when the
//! log after it is long (`Config::snap_tail_entries_min`, `snap_entry_cost_bytes`), a serving
//! leader first puts the learner off once, asks for a fresh one (`Ready::snapshot_wanted`,
//! `Peer::offer_snapshot`) and sends what it has after `snapshot_wait_ticks` without it.

mod election;
mod leader;
mod learner;
mod log;
mod log_sync;
mod message;
pub mod net;
mod peer;
pub mod rng;
pub mod store;
pub mod wire;

#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

pub use leader::{LearnerCounts, REVALIDATIONS_HANDED_MAX, SYNCS_PENDING_MAX};
pub use message::{
    AuthId, Entry, Link, Message, Notification, Packet, ServerState, Snapshot, SnapshotData, Vote,
};
pub use peer::{
    Apply, DiskOp, Durable, Envelope, Peer, ProposeError, Proposed, Ready, Request, Revalidation,
    Role,
};

/// A server id (`myid`).
pub type PeerId = u64;

/// Opaque bytes: a proposal's txn, a ping's session touches, a snapshot's state.
pub type Payload = std::sync::Arc<[u8]>;

/// A ZooKeeper transaction id: `epoch << 32 | counter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Zxid(pub u64);

impl Zxid {
    pub const ZERO: Zxid = Zxid(0);

    pub fn new(epoch: u32, counter: u32) -> Zxid {
        Zxid((u64::from(epoch) << 32) | u64::from(counter))
    }

    pub fn epoch(self) -> u32 {
        (self.0 >> 32) as u32
    }

    pub fn counter(self) -> u32 {
        (self.0 & 0xffff_ffff) as u32
    }
}

impl std::fmt::Display for Zxid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "0x{:x}", self.0)
    }
}

/// Static membership and limits, all times in logical ticks.
#[derive(Debug, Clone)]
pub struct Config {
    pub id: PeerId,
    /// Participants: they vote and count towards quorums. Sorted, no duplicates.
    pub voters: Vec<PeerId>,
    /// Observers: they learn commits but never vote.
    pub observers: Vec<PeerId>,
    /// First LOOKING resend interval; doubles up to `election_timeout_ticks_max`.
    pub election_timeout_ticks: u64,
    pub election_timeout_ticks_max: u64,
    /// Random extra ticks added to each resend interval (from the peer's seed).
    pub election_jitter_ticks: u64,
    /// ZooKeeper's finalizeWait: how long a quorum vote waits for a better one.
    pub finalize_wait_ticks: u64,
    /// ZooKeeper's initLimit: discovery and synchronization must finish within it.
    pub init_limit_ticks: u64,
    /// ZooKeeper's syncLimit: silence longer than this breaks a leader/learner pairing.
    pub sync_limit_ticks: u64,
    pub ping_interval_ticks: u64,
    /// How often a learner resends FOLLOWERINFO while its chosen leader has not answered (a
    /// leader that was still LOOKING when the first one came closed the connection).
    pub follower_info_resend_ticks: u64,
    /// Uncommitted proposals a leader keeps at most; `propose` fails with `QueueFull` beyond.
    pub proposals_in_flight_max: usize,
    /// The last usable zxid counter in an epoch; reaching it forces a new election.
    /// ZooKeeper's value is 0xffff_fffe (0xffff_ffff is never used); tests use small ones.
    pub zxid_counter_max: u32,
    /// What a leader does with a learner's REQUEST: propose its payload as it is (the
    /// simulator's opaque writes), or hand it to the driver in `Ready::requests`, whose state
    /// machine prepares a txn from it and proposes that (Keel's server: a request must be
    /// validated against the leader's tree before it becomes a txn).
    pub requests_to_driver: bool,
    /// A serving leader about to SNAP a learner asks its driver for a fresh snapshot
    /// (`Ready::snapshot_wanted`) and sends that when offered (`Peer::offer_snapshot`) if
    /// the log after its newest snapshot is long: more than `snap_tail_entries_min`
    /// entries, and more than the snapshot's bytes over `snap_entry_cost_bytes` (replaying
    /// one entry costs the learner about as much as building and loading that many bytes of
    /// snapshot). ZooKeeper always streams its current tree. `usize::MAX`: never ask.
    pub snap_tail_entries_min: usize,
    pub snap_entry_cost_bytes: usize,
    /// How long a learner waits for that fresh snapshot before the leader sends what it has.
    pub snapshot_wait_ticks: u64,
}

/// A configuration that cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("server {0} is neither a voter nor an observer")]
    NotAMember(PeerId),
    #[error("voters must be sorted, unique, non-empty and disjoint from observers")]
    BadMembership,
    #[error("{0} must be positive")]
    ZeroLimit(&'static str),
    #[error("sync_limit_ticks must exceed ping_interval_ticks")]
    PingTooSlow,
}

impl Config {
    /// A configuration with ZooKeeper-like proportions for `voters` and `observers`.
    pub fn new(id: PeerId, voters: Vec<PeerId>, observers: Vec<PeerId>) -> Config {
        Config {
            id,
            voters,
            observers,
            election_timeout_ticks: 4,
            election_timeout_ticks_max: 32,
            election_jitter_ticks: 3,
            finalize_wait_ticks: 2,
            init_limit_ticks: 20,
            sync_limit_ticks: 10,
            ping_interval_ticks: 2,
            follower_info_resend_ticks: 2,
            proposals_in_flight_max: 1000,
            zxid_counter_max: 0xffff_fffe,
            requests_to_driver: false,
            snap_tail_entries_min: usize::MAX,
            snap_entry_cost_bytes: 1000,
            snapshot_wait_ticks: 10,
        }
    }

    /// # Errors
    /// The first reason this configuration cannot run.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let sorted = self.voters.windows(2).all(|w| w[0] < w[1]);
        let disjoint = self.observers.iter().all(|o| !self.voters.contains(o));
        if self.voters.is_empty() || !sorted || !disjoint {
            return Err(ConfigError::BadMembership);
        }
        if !self.voters.contains(&self.id) && !self.observers.contains(&self.id) {
            return Err(ConfigError::NotAMember(self.id));
        }
        let limits = [
            ("election_timeout_ticks", self.election_timeout_ticks),
            ("finalize_wait_ticks", self.finalize_wait_ticks),
            ("init_limit_ticks", self.init_limit_ticks),
            ("ping_interval_ticks", self.ping_interval_ticks),
            (
                "follower_info_resend_ticks",
                self.follower_info_resend_ticks,
            ),
            (
                "proposals_in_flight_max",
                self.proposals_in_flight_max as u64,
            ),
            ("zxid_counter_max", u64::from(self.zxid_counter_max)),
        ];
        if let Some((name, _)) = limits.iter().find(|(_, v)| *v == 0) {
            return Err(ConfigError::ZeroLimit(name));
        }
        if self.sync_limit_ticks <= self.ping_interval_ticks {
            return Err(ConfigError::PingTooSlow);
        }
        Ok(())
    }

    pub fn is_voter(&self, id: PeerId) -> bool {
        self.voters.binary_search(&id).is_ok()
    }

    /// The number of voters that make a majority.
    pub fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// Everyone but this server, voters first.
    pub fn others(&self) -> impl Iterator<Item = PeerId> + '_ {
        let id = self.id;
        self.voters
            .iter()
            .chain(self.observers.iter())
            .copied()
            .filter(move |p| *p != id)
    }
}
