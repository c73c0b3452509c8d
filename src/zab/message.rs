//! message: what peers say to each other, in protocol terms (the byte layouts are in `wire`).
//!
//! Owns: the vote order (`Vote::beats`, ZooKeeper's `totalOrderPredicate`) and the packet kinds
//! of the leader/learner channel. Must not: hold transport state.

use super::{Payload, PeerId, Zxid};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A server's role as announced in election notifications (ZooKeeper's numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServerState {
    Looking = 0,
    Following = 1,
    Leading = 2,
    Observing = 3,
}

/// A proposed leader with the history it would bring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Vote {
    pub leader: PeerId,
    /// The proposed leader's last logged zxid.
    pub zxid: Zxid,
    /// The proposed leader's currentEpoch.
    pub peer_epoch: u32,
}

impl Vote {
    /// ZooKeeper's `totalOrderPredicate`: true when `self` is strictly better than `other`,
    /// comparing (peerEpoch, zxid, server id) lexicographically.
    pub fn beats(&self, other: &Vote) -> bool {
        (self.peer_epoch, self.zxid, self.leader) > (other.peer_epoch, other.zxid, other.leader)
    }
}

/// A FastLeaderElection notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notification {
    pub state: ServerState,
    pub vote: Vote,
    /// The sender's logical clock (ZooKeeper's electionEpoch).
    pub round: u64,
}

/// One log entry: a zxid and its opaque txn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub zxid: Zxid,
    pub payload: Payload,
}

/// The state after applying every entry up to and including `zxid`, as opaque bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub zxid: Zxid,
    pub data: SnapshotData,
}

impl Snapshot {
    pub fn empty() -> Snapshot {
        Snapshot {
            zxid: Zxid::ZERO,
            data: SnapshotData::from(Vec::new()),
        }
    }
}

/// A snapshot's bytes: in memory, or the tail of a file mapped read-only — a SNAP written to
/// the store's directory as it arrived (`store::IncomingSnapshot`), which the store then
/// publishes by renaming that file instead of writing the bytes again, or the store's own
/// snapshot as it opened it.
#[derive(Clone)]
pub struct SnapshotData(Backing);

#[derive(Clone)]
enum Backing {
    Memory(Payload),
    /// A built snapshot's buffer, kept as built (an `Arc<[u8]>` of it would be a copy).
    Buffer(Arc<Vec<u8>>),
    Mapped(Arc<MappedFile>),
}

/// A file mapped read-only: a temporary one is unlinked when the last copy goes, unless it
/// was renamed (published) by then; a published one is left alone.
struct MappedFile {
    map: memmap2::Mmap,
    /// Where the data starts in the file (after the store's header).
    start: usize,
    temporary: Option<PathBuf>,
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        // NotFound once it was renamed into place: nothing to do then.
        if let Some(path) = &self.temporary {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl SnapshotData {
    /// `map[start..]`, the data of the temporary file at `path`, which is unlinked with the
    /// last copy of this unless renamed before. The file must never be truncated or written
    /// while mapped, and its name never reused: the store only renames or unlinks it.
    pub(crate) fn mapped(map: memmap2::Mmap, start: usize, path: &Path) -> SnapshotData {
        SnapshotData(Backing::Mapped(Arc::new(MappedFile {
            map,
            start,
            temporary: Some(path.to_path_buf()),
        })))
    }

    /// `map[start..]`, the data of a published snapshot file, which is only ever replaced by
    /// a rename (so the mapping keeps the bytes it had) and never unlinked from here.
    pub(crate) fn published(map: memmap2::Mmap, start: usize) -> SnapshotData {
        SnapshotData(Backing::Mapped(Arc::new(MappedFile {
            map,
            start,
            temporary: None,
        })))
    }

    /// The temporary file these bytes are the tail of, if they are mapped from one.
    pub fn file(&self) -> Option<&Path> {
        match &self.0 {
            Backing::Memory(_) | Backing::Buffer(_) => None,
            Backing::Mapped(file) => file.temporary.as_deref(),
        }
    }

    /// Mapped from a file rather than in memory (`to_payload` would copy it).
    #[cfg(test)]
    pub(crate) fn is_mapped(&self) -> bool {
        matches!(self.0, Backing::Mapped(_))
    }

    /// The bytes as a payload: shared when they are one, else copied.
    pub fn to_payload(&self) -> Payload {
        match &self.0 {
            Backing::Memory(payload) => payload.clone(),
            Backing::Buffer(_) | Backing::Mapped(_) => Payload::from(&**self),
        }
    }
}

impl std::ops::Deref for SnapshotData {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            Backing::Memory(payload) => payload,
            Backing::Buffer(bytes) => bytes,
            Backing::Mapped(file) => file.map.get(file.start..).unwrap_or_default(),
        }
    }
}

impl From<Payload> for SnapshotData {
    fn from(payload: Payload) -> SnapshotData {
        SnapshotData(Backing::Memory(payload))
    }
}

impl From<Vec<u8>> for SnapshotData {
    fn from(bytes: Vec<u8>) -> SnapshotData {
        SnapshotData(Backing::Buffer(Arc::new(bytes)))
    }
}

impl PartialEq for SnapshotData {
    fn eq(&self, other: &SnapshotData) -> bool {
        **self == **other
    }
}

impl Eq for SnapshotData {}

impl std::fmt::Debug for SnapshotData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotData")
            .field("bytes", &self.len())
            .field("file", &self.file())
            .finish()
    }
}

/// Which connection a quorum packet belongs to and its place in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Chosen by the learner when it starts following; both directions carry it.
    pub conn: u64,
    /// Chosen by the leader each time it starts leading; 0 until the learner heard from it.
    /// A connection joins one learner attempt to one leadership: a leader that stepped down
    /// and leads again must not continue an old connection (TCP would have closed it).
    pub session: u64,
    /// 0, 1, 2, … per direction of one connection.
    pub seq: u64,
}

/// One entry of a QuorumPacket's `authinfo`: a client connection's authenticated id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthId {
    pub scheme: String,
    pub id: String,
}

/// Leader/learner packets (ZooKeeper's QuorumPacket types, `Leader.java`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// Learner → leader: a client request (`long sessionId, int cxid, int type`, then the
    /// client's request record as it sent it) with its connection's auth ids.
    Request {
        payload: Payload,
        auth: Vec<AuthId>,
    },
    /// Leader → learner: the oldest sync this learner forwarded is answered (everything
    /// committed when the leader got it has been sent before this packet).
    Sync,
    /// Learner → leader: is this session (not known here) alive? The leader touches it.
    Revalidate {
        session_id: i64,
        timeout_ms: i32,
    },
    /// Leader → learner: the answer to a `Revalidate`.
    Revalidated {
        session_id: i64,
        valid: bool,
    },
    Proposal {
        entry: Entry,
    },
    /// Learner → leader: everything up to `zxid` is durable. `Zxid::new(epoch, 0)` acks
    /// NEWLEADER.
    Ack {
        zxid: Zxid,
    },
    /// Leader → learner: everything up to `zxid` is committed.
    Commit {
        zxid: Zxid,
    },
    Ping {
        payload: Payload,
    },
    /// Leader → observer: a committed entry.
    Inform {
        entry: Entry,
    },
    NewLeader {
        epoch: u32,
    },
    /// FOLLOWERINFO, or OBSERVERINFO when `observer`.
    FollowerInfo {
        accepted_epoch: u32,
        observer: bool,
    },
    UpToDate,
    /// Sync by difference: the learner's log is a prefix of the leader's.
    Diff {
        zxid: Zxid,
    },
    /// Drop every logged entry above `zxid`, then the difference follows.
    Trunc {
        zxid: Zxid,
    },
    /// Replace everything by this snapshot, then the difference follows.
    Snap {
        snapshot: Snapshot,
    },
    LeaderInfo {
        epoch: u32,
    },
    /// `current_epoch` is None (-1 on the wire) when the learner had already accepted this
    /// epoch: it may have acked it to another leader, so it must not count towards the
    /// epoch quorum (ZooKeeper's `Learner.registerWithLeader`).
    AckEpoch {
        current_epoch: Option<u32>,
        last_zxid: Zxid,
    },
}

/// Everything a peer receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Notification(Notification),
    Quorum { link: Link, packet: Packet },
}
