//! log: the peer's in-memory history, a snapshot followed by the entries logged after it.
//!
//! Owns: the entries (committed or not) this peer has accepted. Must not: know what is
//! durable or committed; the peer tracks that. Invariant: zxids strictly increase, all above
//! the snapshot's.

use super::{Entry, Snapshot, Zxid};

#[derive(Debug, Clone)]
pub(crate) struct Log {
    snapshot: Snapshot,
    entries: Vec<Entry>,
}

impl Log {
    pub(crate) fn new(snapshot: Snapshot, entries: Vec<Entry>) -> Log {
        let log = Log { snapshot, entries };
        log.invariants();
        log
    }

    pub(crate) fn invariants(&self) {
        let mut previous = self.snapshot.zxid;
        for entry in &self.entries {
            assert!(entry.zxid > previous, "log out of order at {}", entry.zxid);
            previous = entry.zxid;
        }
    }

    pub(crate) fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    pub(crate) fn entries(&self) -> &[Entry] {
        &self.entries
    }

    pub(crate) fn last_zxid(&self) -> Zxid {
        self.entries.last().map_or(self.snapshot.zxid, |e| e.zxid)
    }

    /// True when `zxid` is the snapshot's or a logged entry's.
    pub(crate) fn contains(&self, zxid: Zxid) -> bool {
        zxid == self.snapshot.zxid || self.index_of(zxid).is_ok()
    }

    fn index_of(&self, zxid: Zxid) -> Result<usize, usize> {
        self.entries.binary_search_by_key(&zxid, |e| e.zxid)
    }

    /// The entries strictly above `zxid` (which must be at or above the snapshot).
    pub(crate) fn after(&self, zxid: Zxid) -> &[Entry] {
        assert!(
            zxid >= self.snapshot.zxid,
            "after({zxid}) below the snapshot"
        );
        let start = match self.index_of(zxid) {
            Ok(index) => index + 1,
            Err(index) => index,
        };
        &self.entries[start..]
    }

    /// The entries in `(low, high]`.
    pub(crate) fn range(&self, low: Zxid, high: Zxid) -> &[Entry] {
        let tail = self.after(low);
        let end = tail.partition_point(|e| e.zxid <= high);
        &tail[..end]
    }

    /// The largest logged zxid (or the snapshot's) strictly below `zxid`.
    pub(crate) fn last_below(&self, zxid: Zxid) -> Zxid {
        assert!(
            zxid > self.snapshot.zxid,
            "last_below({zxid}) at or below the snapshot"
        );
        let index = self.entries.partition_point(|e| e.zxid < zxid);
        if index == 0 {
            self.snapshot.zxid
        } else {
            self.entries[index - 1].zxid
        }
    }

    pub(crate) fn append(&mut self, entry: Entry) {
        assert!(
            entry.zxid > self.last_zxid(),
            "append {} after {}",
            entry.zxid,
            self.last_zxid()
        );
        self.entries.push(entry);
    }

    /// Drops every entry above `zxid`, which must be at or above the snapshot.
    pub(crate) fn truncate_after(&mut self, zxid: Zxid) {
        assert!(zxid >= self.snapshot.zxid, "truncate below the snapshot");
        let keep = self.entries.partition_point(|e| e.zxid <= zxid);
        self.entries.truncate(keep);
    }

    /// Replaces the entries up to `snapshot.zxid` by the snapshot. Entries above it stay when
    /// `snapshot.zxid` is logged here; otherwise the whole log is replaced.
    pub(crate) fn install(&mut self, snapshot: Snapshot) {
        let keep_from = match self.index_of(snapshot.zxid) {
            Ok(index) => index + 1,
            Err(_) => self.entries.len(),
        };
        self.entries.drain(..keep_from);
        self.snapshot = snapshot;
        self.invariants();
    }
}
