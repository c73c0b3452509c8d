//! session: the session table of the replica core — ids, passwords, timeouts and expiry.
//!
//! Owns: which sessions exist, their negotiated timeouts and their expiry deadlines, kept in
//! buckets `tick_ms` wide as ZooKeeper's `ExpiryQueue` does (deadline = roundUp(now + timeout)).
//! Must not: read a clock or do IO; the caller passes `now_ms` in.
//! Invariants: every live session is in exactly one bucket, the one of its deadline; a session
//! that is closing is in none and is never touched back to life.

use std::collections::{BTreeMap, HashMap, HashSet};

/// The stored ephemeralOwner that marks a container; never handed out as a session id.
pub const CONTAINER_EPHEMERAL_OWNER: i64 = i64::MIN;

/// One session as the replica core tracks it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub id: i64,
    pub timeout_ms: i32,
    pub deadline_ms: i64,
    pub closing: bool,
}

/// Sessions and their expiry buckets.
#[derive(Debug)]
pub struct SessionTable {
    tick_ms: i64,
    next_id: i64,
    sessions: HashMap<i64, Session>,
    buckets: BTreeMap<i64, HashSet<i64>>,
}

impl SessionTable {
    /// `server_id` goes into the top byte of every id; `now_ms` seeds the rest, as ZooKeeper's
    /// `initializeNextSessionId` does, so ids differ across restarts.
    pub fn new(server_id: u8, tick_ms: i64, now_ms: i64) -> SessionTable {
        assert!(tick_ms > 0, "tick_ms must be positive");
        let time_part = ((now_ms << 24) as u64 >> 8) as i64;
        let next_id = time_part | (i64::from(server_id) << 56);
        SessionTable {
            tick_ms,
            next_id,
            sessions: HashMap::new(),
            buckets: BTreeMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    pub fn get(&self, id: i64) -> Option<&Session> {
        self.sessions.get(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values()
    }

    fn round_up(&self, time_ms: i64) -> i64 {
        (time_ms / self.tick_ms + 1) * self.tick_ms
    }

    /// Allocates the next session id, skipping the container marker and ids in use.
    pub fn next_session_id(&mut self) -> i64 {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.wrapping_add(1);
            if id != CONTAINER_EPHEMERAL_OWNER && id != 0 && !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }

    /// Adds a session with an id chosen by `next_session_id` (or replayed from a log).
    pub fn add(&mut self, id: i64, timeout_ms: i32, now_ms: i64) {
        let deadline_ms = self.round_up(now_ms + i64::from(timeout_ms));
        if let Some(old) = self.sessions.get(&id) {
            let old_deadline = old.deadline_ms;
            self.unbucket(id, old_deadline);
        }
        self.sessions.insert(
            id,
            Session {
                id,
                timeout_ms,
                deadline_ms,
                closing: false,
            },
        );
        self.buckets.entry(deadline_ms).or_default().insert(id);
    }

    fn unbucket(&mut self, id: i64, deadline_ms: i64) {
        if let Some(bucket) = self.buckets.get_mut(&deadline_ms) {
            bucket.remove(&id);
            if bucket.is_empty() {
                self.buckets.remove(&deadline_ms);
            }
        }
    }

    /// Moves a live session's deadline forward. False if it is unknown or closing.
    pub fn touch(&mut self, id: i64, now_ms: i64) -> bool {
        let Some(session) = self.sessions.get(&id) else {
            return false;
        };
        if session.closing {
            return false;
        }
        let old_deadline = session.deadline_ms;
        let new_deadline = self.round_up(now_ms + i64::from(session.timeout_ms));
        if new_deadline <= old_deadline {
            return true;
        }
        self.unbucket(id, old_deadline);
        self.buckets.entry(new_deadline).or_default().insert(id);
        if let Some(session) = self.sessions.get_mut(&id) {
            session.deadline_ms = new_deadline;
        }
        true
    }

    /// Marks a session closing: it stays known (so a reconnect is refused) until `remove`.
    pub fn set_closing(&mut self, id: i64) -> bool {
        let Some(session) = self.sessions.get(&id) else {
            return false;
        };
        if session.closing {
            return false;
        }
        let deadline = session.deadline_ms;
        self.unbucket(id, deadline);
        if let Some(session) = self.sessions.get_mut(&id) {
            session.closing = true;
        }
        true
    }

    pub fn remove(&mut self, id: i64) -> Option<Session> {
        let session = self.sessions.remove(&id)?;
        if !session.closing {
            self.unbucket(id, session.deadline_ms);
        }
        Some(session)
    }

    /// Sessions whose deadline is at or before `now_ms`; each is marked closing and returned
    /// once, oldest deadline first.
    pub fn expire(&mut self, now_ms: i64) -> Vec<i64> {
        let mut expired = Vec::new();
        while let Some((&deadline, _)) = self.buckets.first_key_value() {
            if deadline > now_ms {
                break;
            }
            let Some(bucket) = self.buckets.remove(&deadline) else {
                break;
            };
            let mut ids: Vec<i64> = bucket.into_iter().collect();
            ids.sort_unstable();
            for id in ids {
                if let Some(session) = self.sessions.get_mut(&id) {
                    session.closing = true;
                    expired.push(id);
                }
            }
        }
        expired
    }

    /// Live sessions grouped by deadline, earliest first: ZooKeeper's session sets (`dump`).
    pub fn deadline_buckets(&self) -> impl Iterator<Item = (i64, &HashSet<i64>)> {
        self.buckets.iter().map(|(deadline, ids)| (*deadline, ids))
    }

    /// Checks the table's invariants; the simulator and tests call it after each step.
    pub fn invariants(&self) {
        let bucketed: usize = self.buckets.values().map(HashSet::len).sum();
        let live = self.sessions.values().filter(|s| !s.closing).count();
        assert_eq!(
            bucketed, live,
            "every live session is in exactly one bucket"
        );
        for session in self.sessions.values().filter(|s| !s.closing) {
            let bucket = self.buckets.get(&session.deadline_ms);
            assert!(bucket.is_some_and(|b| b.contains(&session.id)));
            assert_eq!(session.deadline_ms % self.tick_ms, 0);
        }
    }
}

/// The session password: `java.util.Random(session_id ^ 0xB3415C00).nextBytes(16)`, so any
/// server (Java or Keel) recomputes it from the id alone.
pub fn session_password(session_id: i64) -> [u8; 16] {
    let mut random = JavaRandom::new(session_id ^ 0xB341_5C00);
    let mut out = [0u8; 16];
    for chunk in out.chunks_mut(4) {
        let value = random.next_i32();
        for (index, byte) in chunk.iter_mut().enumerate() {
            *byte = (value >> (8 * index)) as u8;
        }
    }
    out
}

/// `java.util.Random`'s 48-bit linear congruential generator, bit for bit.
struct JavaRandom {
    seed: u64,
}

impl JavaRandom {
    const MULTIPLIER: u64 = 0x5_DEEC_E66D;
    const MASK: u64 = (1 << 48) - 1;

    fn new(seed: i64) -> JavaRandom {
        JavaRandom {
            seed: (seed as u64 ^ Self::MULTIPLIER) & Self::MASK,
        }
    }

    fn next_i32(&mut self) -> i32 {
        self.seed = (self.seed.wrapping_mul(Self::MULTIPLIER).wrapping_add(0xB)) & Self::MASK;
        (self.seed >> 16) as u32 as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_random_matches_the_jdk() {
        // new java.util.Random(42).nextInt() is -1170105035 in every JDK.
        let mut random = JavaRandom::new(42);
        assert_eq!(random.next_i32(), -1_170_105_035);
        assert_eq!(random.next_i32(), 234_785_527);
    }

    #[test]
    fn password_is_a_pure_function_of_the_id() {
        // The same id always yields the same 16 bytes, different ids differ.
        assert_eq!(session_password(7), session_password(7));
        assert_ne!(session_password(7), session_password(8));
    }

    #[test]
    fn sessions_expire_on_tick_boundaries() {
        // A session touched at t expires at the first tick boundary after t + timeout.
        let mut table = SessionTable::new(1, 2000, 1_000_000);
        let id = table.next_session_id();
        assert_eq!(id >> 56, 1);
        table.add(id, 4000, 10_500);
        assert_eq!(table.get(id).map(|s| s.deadline_ms), Some(16_000));
        assert!(table.expire(15_999).is_empty());
        assert!(table.touch(id, 13_000));
        assert!(table.expire(16_000).is_empty());
        table.invariants();
        assert_eq!(table.expire(18_000), vec![id]);
        assert!(!table.touch(id, 18_000), "a closing session is not revived");
        table.invariants();
        assert!(table.remove(id).is_some());
        table.invariants();
    }
}
