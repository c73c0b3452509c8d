//! Workloads: what a run creates first, which request each session sends next, and what it
//! removes at the end.
//!
//! A `Workload` is shared by the driver (setup and teardown, through the blocking `SyncClient`)
//! and hands each worker thread its own `OpGenerator`, which encodes requests straight into a
//! session's write buffer. Later scenario workloads (registry, config fan-out, ephemeral churn,
//! locks, sequential ids, queues) implement the same two traits; `OpKind` grows with them.

use crate::keys::KeyDistribution;
use crate::rng::Rng;
use crate::sync_client::SyncClient;
use anyhow::{bail, Context, Result};
use keel::proto::records::encode;
use keel::proto::{op, open_acl_unsafe, Acl, ErrorCode};
use std::fmt::Write as _;
use std::sync::Arc;

/// The request types a generator sends, and the scenario figures measured across requests;
/// each has its own latency histogram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    GetData,
    Exists,
    GetChildren,
    SetData,
    Create,
    Delete,
    /// A create with the sequential flag (seqid, queue produce, lock request).
    CreateSequential,
    /// fanout: from the setData's send to the last watcher's notification.
    FanoutLastNotify,
    /// registry: from a provider's create or delete send to a consumer's child notification.
    WatchNotify,
    /// lock: from the lock request (create) to holding the lock.
    LockAcquire,
    /// lock: from the holder's release (delete send) to the next holder taking the lock.
    LockHandoff,
    /// churn: from the TCP connect to the handshake reply of a new session.
    SessionOpen,
    /// churn: from closeSession's send to its reply.
    SessionClose,
}

impl OpKind {
    pub const ALL: [OpKind; 13] = [
        OpKind::GetData,
        OpKind::Exists,
        OpKind::GetChildren,
        OpKind::SetData,
        OpKind::Create,
        OpKind::Delete,
        OpKind::CreateSequential,
        OpKind::FanoutLastNotify,
        OpKind::WatchNotify,
        OpKind::LockAcquire,
        OpKind::LockHandoff,
        OpKind::SessionOpen,
        OpKind::SessionClose,
    ];
    pub const COUNT: usize = OpKind::ALL.len();

    pub fn index(self) -> usize {
        self as usize
    }

    /// ZooKeeper's name for the operation, as shown in the summary.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::GetData => "getData",
            OpKind::Exists => "exists",
            OpKind::GetChildren => "getChildren",
            OpKind::SetData => "setData",
            OpKind::Create => "create",
            OpKind::Delete => "delete",
            OpKind::CreateSequential => "createSeq",
            OpKind::FanoutLastNotify => "fanout_last_notify",
            OpKind::WatchNotify => "watch_notify",
            OpKind::LockAcquire => "lock_acquire",
            OpKind::LockHandoff => "lock_handoff",
            OpKind::SessionOpen => "session_open",
            OpKind::SessionClose => "session_close",
        }
    }
}

const _: () = assert!(OpKind::COUNT == OpKind::SessionClose as usize + 1);

/// A reply to one of the generator's requests.
#[derive(Debug, Clone, Copy)]
pub struct Reply<'a> {
    pub kind: OpKind,
    /// The ZooKeeper error code.
    pub err: i32,
    /// The reply record after the header (empty unless `err` is 0).
    pub body: &'a [u8],
    pub sent_ns: u64,
    pub now_ns: u64,
}

/// A watch notification on one of the generator's sessions.
#[derive(Debug, Clone, Copy)]
pub struct Notification<'a> {
    pub event_type: i32,
    pub path: &'a str,
    pub now_ns: u64,
}

/// What a generator asks of its worker after a callback; the worker drains it each time.
#[derive(Debug, Default)]
pub struct Effects {
    /// Sessions whose `next_op` returned `None` and may have a request now.
    pub wake: Vec<usize>,
    /// Latencies measured by the workload itself: (kind, start_ns, end_ns).
    pub latencies: Vec<(OpKind, u64, u64)>,
    /// Sessions to close (closeSession) and reopen as new sessions (churn).
    pub renew: Vec<usize>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.wake.is_empty() && self.latencies.is_empty() && self.renew.is_empty()
    }
}

/// Encodes one worker's sessions' requests; owned by that worker thread.
pub trait OpGenerator: Send {
    /// Appends one framed request with `xid` for the worker's session `slot` to `out`, or
    /// returns `None` with nothing appended when the session has nothing to send now (it waits
    /// for a watch or a peer; the worker asks again after a wake or every housekeeping tick).
    fn next_op(
        &mut self,
        slot: usize,
        xid: i32,
        now_ns: u64,
        rng: &mut Rng,
        out: &mut Vec<u8>,
    ) -> Option<OpKind>;
    /// The reply to an op from `next_op`.
    fn on_reply(&mut self, _slot: usize, _reply: Reply<'_>, _effects: &mut Effects) {}
    /// A watch fired on the session.
    fn on_notification(&mut self, _slot: usize, _event: Notification<'_>, _fx: &mut Effects) {}
    /// The session completed a handshake; `new_session` is false when it resumed one.
    fn on_session_ready(&mut self, _slot: usize, _new_session: bool, _now_ns: u64) {}
    /// The session's connection dropped: its outstanding ops have no known outcome.
    fn on_connection_lost(&mut self, slot: usize);
    /// Error codes the workload expects (a lost race in a queue); they count as successes.
    fn error_is_expected(&self, _kind: OpKind, _err: i32) -> bool {
        false
    }
}

/// A workload for the whole run.
pub trait Workload: Send + Sync {
    /// For the summary, e.g. `mixed(read=90%)`.
    fn describe(&self) -> String;
    /// Creates what the ops need. Runs once, before any session connects.
    fn setup(&self, client: &mut SyncClient) -> Result<()>;
    /// Removes everything setup and the ops created; best effort, the reason if incomplete.
    fn teardown(&self, client: &mut SyncClient) -> Result<()>;
    /// The generator for one worker thread that drives `session_count` sessions.
    fn generator(&self, worker_index: usize, session_count: usize) -> Box<dyn OpGenerator>;
}

/// The run's root: `/keel-loadgen/<run>`.
pub const ROOT_PATH: &str = "/keel-loadgen";

/// Reads of keys (getData, exists, getChildren) and writes (setData on keys; create and delete
/// of per-session nodes under `<prefix>/w`), mixed by `read_pct`.
pub struct KvWorkload {
    pub prefix: String,
    pub keys: KeyDistribution,
    pub value: Arc<[u8]>,
    pub read_pct: u32,
}

impl KvWorkload {
    pub fn key_path(prefix: &str, key: u64, out: &mut String) {
        out.clear();
        let _ = write!(out, "{prefix}/k{key}");
    }
}

impl Workload for KvWorkload {
    fn describe(&self) -> String {
        match self.read_pct {
            100 => "read".to_string(),
            0 => "write".to_string(),
            pct => format!("mixed(read={pct}%)"),
        }
    }

    fn setup(&self, client: &mut SyncClient) -> Result<()> {
        create_prefix(client, &self.prefix)?;
        let write_dir = format!("{}/w", self.prefix);
        client.create_nodes(&[write_dir], &[])?;
        let count = self.keys.count();
        let prefix = self.prefix.clone();
        let mut path = String::new();
        client
            .pipeline(count, |index, xid, out| {
                KvWorkload::key_path(&prefix, index, &mut path);
                encode::request(out, xid, op::CREATE, |w| {
                    encode::create(w, &path, &self.value, &open_acl_unsafe(), 0)
                });
                Ok(())
            })
            .with_context(|| format!("setup: creating {count} keys under {}", self.prefix))?
            .fail_on_any("setup: create key")
    }

    fn teardown(&self, client: &mut SyncClient) -> Result<()> {
        let prefix = self.prefix.clone();
        let mut path = String::new();
        client
            .pipeline(self.keys.count(), |index, xid, out| {
                KvWorkload::key_path(&prefix, index, &mut path);
                encode::request(out, xid, op::DELETE, |w| encode::path_version(w, &path, -1));
                Ok(())
            })
            .context("teardown: deleting keys")?
            .fail_on_any_but(ErrorCode::NoNode, "teardown: delete key")?;
        client.delete_children(&format!("{}/w", self.prefix))?;
        delete_prefix(client, &self.prefix)
    }

    fn generator(&self, worker_index: usize, session_count: usize) -> Box<dyn OpGenerator> {
        Box::new(KvGenerator {
            prefix: self.prefix.clone(),
            keys: self.keys.clone(),
            value: self.value.clone(),
            read_pct: self.read_pct,
            worker_index,
            acl: open_acl_unsafe(),
            sessions: vec![KvSession::default(); session_count],
            path: String::with_capacity(self.prefix.len() + 32),
        })
    }
}

/// Attempts at creating the run's prefix when another run's teardown keeps deleting an
/// empty `/keel-loadgen` between our create of it and of the prefix.
const PREFIX_CREATE_ATTEMPTS: usize = 5;

/// Creates `/keel-loadgen` if missing, then the run's own prefix, which must be new.
pub fn create_prefix(client: &mut SyncClient, prefix: &str) -> Result<()> {
    for _ in 0..PREFIX_CREATE_ATTEMPTS {
        let root = client.create_nodes(&[ROOT_PATH.to_string()], &[])?;
        if root[0] != 0 && root[0] != ErrorCode::NodeExists.code() {
            bail!(
                "setup: create {ROOT_PATH}: {:?}",
                ErrorCode::from_code(root[0])
            );
        }
        let own = client.create_nodes(&[prefix.to_string()], &[])?;
        if own[0] == ErrorCode::NoNode.code() {
            continue; // Another run's teardown removed the root in between.
        }
        if own[0] == ErrorCode::NodeExists.code() {
            bail!("setup: {prefix} already exists: another run uses this --run-id");
        }
        if own[0] != 0 {
            bail!("setup: create {prefix}: {:?}", ErrorCode::from_code(own[0]));
        }
        return Ok(());
    }
    bail!("setup: {ROOT_PATH} was deleted under {prefix} {PREFIX_CREATE_ATTEMPTS} times in a row")
}

/// Deletes the run's prefix, then `/keel-loadgen` unless another run still uses it.
pub fn delete_prefix(client: &mut SyncClient, prefix: &str) -> Result<()> {
    let own = client.delete_nodes(&[prefix.to_string()])?;
    if own[0] != 0 && own[0] != ErrorCode::NoNode.code() {
        bail!(
            "teardown: delete {prefix}: {:?}",
            ErrorCode::from_code(own[0])
        );
    }
    let root = client.delete_nodes(&[ROOT_PATH.to_string()])?;
    let benign = [0, ErrorCode::NoNode.code(), ErrorCode::NotEmpty.code()];
    if !benign.contains(&root[0]) {
        bail!(
            "teardown: delete {ROOT_PATH}: {:?}",
            ErrorCode::from_code(root[0])
        );
    }
    Ok(())
}

/// Percentages of the read mix and of the write mix (create and delete alternate per session).
const GET_DATA_PCT: u32 = 50;
const EXISTS_PCT: u32 = 25;
const SET_DATA_PCT: u32 = 50;
const _: () = assert!(GET_DATA_PCT + EXISTS_PCT <= 100);
const _: () = assert!(SET_DATA_PCT <= 100);

/// Per-session state of the write mix: whether its last create still needs a delete.
#[derive(Debug, Clone, Default)]
struct KvSession {
    node_seq: u64,
    node_exists: bool,
}

struct KvGenerator {
    prefix: String,
    keys: KeyDistribution,
    value: Arc<[u8]>,
    read_pct: u32,
    worker_index: usize,
    acl: Vec<Acl>,
    sessions: Vec<KvSession>,
    path: String,
}

impl KvGenerator {
    fn read_op(&mut self, xid: i32, rng: &mut Rng, out: &mut Vec<u8>) -> OpKind {
        KvWorkload::key_path(&self.prefix, self.keys.sample(rng), &mut self.path);
        let roll = rng.below(100) as u32;
        let (kind, code) = if roll < GET_DATA_PCT {
            (OpKind::GetData, op::GET_DATA)
        } else if roll < GET_DATA_PCT + EXISTS_PCT {
            (OpKind::Exists, op::EXISTS)
        } else {
            (OpKind::GetChildren, op::GET_CHILDREN)
        };
        encode::request(out, xid, code, |w| encode::path_watch(w, &self.path, false));
        kind
    }

    /// setData on a key, or the session's next create or delete: a session creates one node,
    /// deletes it, then creates the next, so pipelined requests never race each other.
    fn write_op(&mut self, slot: usize, xid: i32, rng: &mut Rng, out: &mut Vec<u8>) -> OpKind {
        if rng.percent(SET_DATA_PCT) {
            KvWorkload::key_path(&self.prefix, self.keys.sample(rng), &mut self.path);
            let value = &self.value;
            encode::request(out, xid, op::SET_DATA, |w| {
                encode::set_data(w, &self.path, value, -1)
            });
            return OpKind::SetData;
        }
        let session = &mut self.sessions[slot];
        self.path.clear();
        let (worker, seq) = (self.worker_index, session.node_seq);
        let _ = write!(self.path, "{}/w/c{worker}-{slot}-{seq}", self.prefix);
        if session.node_exists {
            session.node_exists = false;
            session.node_seq += 1;
            encode::request(out, xid, op::DELETE, |w| {
                encode::path_version(w, &self.path, -1)
            });
            return OpKind::Delete;
        }
        session.node_exists = true;
        let (value, acl) = (&self.value, &self.acl);
        encode::request(out, xid, op::CREATE, |w| {
            encode::create(w, &self.path, value, acl, 0)
        });
        OpKind::Create
    }
}

impl OpGenerator for KvGenerator {
    fn next_op(
        &mut self,
        slot: usize,
        xid: i32,
        _now_ns: u64,
        rng: &mut Rng,
        out: &mut Vec<u8>,
    ) -> Option<OpKind> {
        Some(if rng.percent(self.read_pct) {
            self.read_op(xid, rng, out)
        } else {
            self.write_op(slot, xid, rng, out)
        })
    }

    fn on_connection_lost(&mut self, slot: usize) {
        // The create may or may not have applied; start a fresh name so the next op is a
        // create, never a delete of a node that may not exist. Teardown removes leftovers.
        let session = &mut self.sessions[slot];
        if session.node_exists {
            session.node_exists = false;
            session.node_seq += 1;
        }
    }
}
