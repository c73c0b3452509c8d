//! scenario: the seeds' use cases as workloads — service registry, config fan-out, ephemeral
//! churn, locks, sequential ids and queues.
//!
//! Owns: each scenario's `Workload` (setup and teardown of its parent nodes) and `OpGenerator`
//! (a small state machine per session, driven by replies and watch notifications), and the
//! figures measured across requests (`OpKind::FanoutLastNotify`, `LockHandoff`, …). State
//! shared between worker threads is a few atomics per group, touched once per op at most.
//!
//! Groups: `--keys N` is the number of independent groups (services, locks, queues, id
//! parents) under `<prefix>/g0 … g(N-1)`; session i works on group i mod N. Session numbers
//! are global: worker w's slot s is session w + s × threads.

use crate::rng::Rng;
use crate::sync_client::SyncClient;
use crate::workload::{
    create_prefix, delete_prefix, Effects, Notification, OpGenerator, OpKind, Reply, Workload,
};
use anyhow::{Context, Result};
use keel::proto::jute::Reader;
use keel::proto::records::encode;
use keel::proto::{op, open_acl_unsafe, Acl, ErrorCode, EventType};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const EPHEMERAL: i32 = 1;
const PERSISTENT_SEQUENTIAL: i32 = 2;
const EPHEMERAL_SEQUENTIAL: i32 = 3;
/// churn: ephemeral nodes each session creates before it closes.
pub const CHURN_EPHEMERALS_PER_SESSION: u32 = 2;
/// fanout: a round whose watchers are not all notified by then is given up, and the next
/// starts with whoever is armed (a watcher whose connection dropped lost its watch).
const FANOUT_ROUND_TIMEOUT_NS: u64 = 1_000_000_000;

/// Which scenario, and the run facts every one needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Registry,
    Fanout,
    Churn,
    Lock,
    Seqid,
    Queue,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Registry => "registry",
            Kind::Fanout => "fanout",
            Kind::Churn => "churn",
            Kind::Lock => "lock",
            Kind::Seqid => "seqid",
            Kind::Queue => "queue",
        }
    }

    /// Groups when --keys is not given.
    pub fn default_groups(self) -> u64 {
        match self {
            Kind::Registry => 4,
            _ => 1,
        }
    }
}

pub struct ScenarioWorkload {
    pub kind: Kind,
    pub prefix: String,
    pub groups: u64,
    pub threads: usize,
    pub sessions: usize,
    pub value: Arc<[u8]>,
    /// Per group: fan-out round state, lock release times, registry change times.
    shared: Arc<Vec<GroupShared>>,
}

/// Cross-thread state of one group.
#[derive(Debug, Default)]
struct GroupShared {
    /// registry: send time of the last provider change; lock: of the last release.
    last_change_ns: AtomicU64,
    /// fanout: the current round (starts at 0: none yet).
    round: AtomicU64,
    /// fanout: watchers armed for the next round.
    armed: AtomicU64,
    /// fanout: watchers of the current round not yet notified.
    remaining: AtomicU64,
    /// fanout: send time of the current round's setData.
    round_started_ns: AtomicU64,
}

impl ScenarioWorkload {
    pub fn new(
        kind: Kind,
        prefix: String,
        groups: u64,
        (threads, sessions): (usize, usize),
        value: Arc<[u8]>,
    ) -> ScenarioWorkload {
        assert!(groups > 0 && threads > 0 && sessions >= threads);
        let shared = (0..groups).map(|_| GroupShared::default()).collect();
        ScenarioWorkload {
            kind,
            prefix,
            groups,
            threads,
            sessions,
            value,
            shared: Arc::new(shared),
        }
    }

    fn group_paths(&self) -> Vec<String> {
        (0..self.groups)
            .map(|g| group_path(&self.prefix, g))
            .collect()
    }
}

fn group_path(prefix: &str, group: u64) -> String {
    format!("{prefix}/g{group}")
}

impl Workload for ScenarioWorkload {
    fn describe(&self) -> String {
        format!("{}(groups={})", self.kind.name(), self.groups)
    }

    fn setup(&self, client: &mut SyncClient) -> Result<()> {
        create_prefix(client, &self.prefix)?;
        let paths = self.group_paths();
        let codes = client
            .create_nodes(&paths, &self.value)
            .context("setup: creating the groups")?;
        if let Some(code) = codes.iter().find(|&&code| code != 0) {
            anyhow::bail!("setup: create group: {:?}", ErrorCode::from_code(*code));
        }
        Ok(())
    }

    fn teardown(&self, client: &mut SyncClient) -> Result<()> {
        for path in self.group_paths() {
            client.delete_children(&path)?;
        }
        delete_prefix(client, &self.prefix)
    }

    fn generator(&self, worker_index: usize, session_count: usize) -> Box<dyn OpGenerator> {
        let sessions = (0..session_count)
            .map(|slot| {
                let global = worker_index + slot * self.threads;
                let group = global as u64 % self.groups;
                SessionState {
                    global,
                    member: global / self.groups as usize,
                    group,
                    group_path: group_path(&self.prefix, group),
                    ..SessionState::default()
                }
            })
            .collect();
        Box::new(ScenarioGenerator {
            kind: self.kind,
            sessions_total: self.sessions,
            groups: self.groups,
            worker_index,
            value: self.value.clone(),
            acl: open_acl_unsafe(),
            shared: self.shared.clone(),
            sessions,
            path: String::new(),
        })
    }
}

/// Where a session is in its scenario's cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Step {
    /// Nothing sent yet in this cycle.
    #[default]
    Start,
    /// A request is in flight; wait for its reply.
    Waiting,
    /// Waiting for a watch notification.
    Watching,
    /// registry/queue/lock: list the group next.
    List,
    /// lock: holding it; release next.
    Release,
    /// churn: done with this session; it is being renewed.
    Renewing,
}

#[derive(Debug, Clone, Default)]
struct SessionState {
    global: usize,
    /// The session's number within its group: member 0 writes in fanout; even members
    /// provide (registry) or produce (queue), odd ones consume.
    member: usize,
    group: u64,
    group_path: String,
    step: Step,
    /// registry provider: whether its instance node exists; churn: ephemerals created.
    count: u64,
    /// lock: own node name; queue consumer: children left to take, lowest last.
    own: Option<String>,
    backlog: Vec<String>,
    /// lock: when the request was sent; fanout watcher: the round it armed for.
    mark_ns: u64,
    armed_round: u64,
}

struct ScenarioGenerator {
    kind: Kind,
    sessions_total: usize,
    groups: u64,
    worker_index: usize,
    value: Arc<[u8]>,
    acl: Vec<Acl>,
    shared: Arc<Vec<GroupShared>>,
    sessions: Vec<SessionState>,
    path: String,
}

fn read_path(body: &[u8]) -> Option<String> {
    Reader::new(body).read_string().ok().map(str::to_string)
}

fn read_children(body: &[u8]) -> Option<Vec<String>> {
    let children = Reader::new(body).read_string_vec().ok()?;
    Some(children.iter().map(|c| c.to_string()).collect())
}

/// The sequence number ZooKeeper appends: the last 10 digits.
fn sequence_of(name: &str) -> u64 {
    let digits = &name[name.len().saturating_sub(10)..];
    digits.parse().unwrap_or(u64::MAX)
}

impl ScenarioGenerator {
    fn create(&mut self, xid: i32, out: &mut Vec<u8>, flags: i32) {
        let (path, value, acl) = (&self.path, &self.value, &self.acl);
        encode::request(out, xid, op::CREATE, |w| {
            encode::create(w, path, value, acl, flags)
        });
    }

    fn simple(&mut self, xid: i32, out: &mut Vec<u8>, code: i32, watch: bool) {
        let path = &self.path;
        encode::request(out, xid, code, |w| encode::path_watch(w, path, watch));
    }

    fn delete(&mut self, xid: i32, out: &mut Vec<u8>) {
        let path = &self.path;
        encode::request(out, xid, op::DELETE, |w| encode::path_version(w, path, -1));
    }

    fn shared(&self, slot: usize) -> &GroupShared {
        &self.shared[self.sessions[slot].group as usize]
    }

    /// fanout: the one session that writes is global session 0; the rest watch.
    fn fanout_writer_slot(&self) -> Option<usize> {
        (self.worker_index == 0).then_some(0)
    }

    /// fanout: the sessions of `group` other than its writer.
    fn fanout_watchers(&self, group: u64) -> u64 {
        let sessions = self.sessions_total as u64;
        let members = sessions / self.groups + u64::from(group < sessions % self.groups);
        members.saturating_sub(1)
    }
}

/// next_op for each scenario.
impl ScenarioGenerator {
    fn next_seqid(&mut self, slot: usize, xid: i32, out: &mut Vec<u8>) -> OpKind {
        self.path.clear();
        self.path.push_str(&self.sessions[slot].group_path);
        self.path.push_str("/id-");
        self.create(xid, out, EPHEMERAL_SEQUENTIAL);
        OpKind::CreateSequential
    }

    fn next_queue(&mut self, slot: usize, xid: i32, out: &mut Vec<u8>) -> Option<OpKind> {
        let session = &mut self.sessions[slot];
        self.path.clear();
        self.path.push_str(&session.group_path);
        if session.member.is_multiple_of(2) {
            self.path.push_str("/item-");
            self.create(xid, out, PERSISTENT_SEQUENTIAL);
            return Some(OpKind::CreateSequential);
        }
        if let Some(lowest) = session.backlog.pop() {
            self.path.push('/');
            self.path.push_str(&lowest);
            self.delete(xid, out);
            return Some(OpKind::Delete);
        }
        if session.step == Step::Waiting {
            return None;
        }
        session.step = Step::Waiting;
        self.simple(xid, out, op::GET_CHILDREN, false);
        Some(OpKind::GetChildren)
    }

    fn next_registry(
        &mut self,
        slot: usize,
        xid: i32,
        now_ns: u64,
        out: &mut Vec<u8>,
    ) -> Option<OpKind> {
        let session = &mut self.sessions[slot];
        if session.step != Step::Start && session.step != Step::List {
            return None;
        }
        self.path.clear();
        self.path.push_str(&session.group_path);
        if session.member % 2 == 1 {
            // A consumer lists with a watch, then waits for the next change.
            session.step = Step::Waiting;
            self.simple(xid, out, op::GET_CHILDREN, true);
            return Some(OpKind::GetChildren);
        }
        // A provider registers its instance, then deregisters it, and so on.
        session.step = Step::Waiting;
        let registered = session.count % 2 == 1;
        let _ = std::fmt::Write::write_fmt(
            &mut self.path,
            format_args!("/p{}-{}", session.global, session.count / 2),
        );
        session.count += 1;
        self.shared(slot)
            .last_change_ns
            .store(now_ns, Ordering::Relaxed);
        if registered {
            self.delete(xid, out);
            Some(OpKind::Delete)
        } else {
            self.create(xid, out, EPHEMERAL);
            Some(OpKind::Create)
        }
    }

    fn next_fanout(
        &mut self,
        slot: usize,
        xid: i32,
        now_ns: u64,
        out: &mut Vec<u8>,
    ) -> Option<OpKind> {
        let watchers = self.fanout_watchers(self.sessions[slot].group);
        let is_writer = self.sessions[slot].member == 0;
        let step = self.sessions[slot].step;
        self.path.clear();
        self.path.push_str(&self.sessions[slot].group_path);
        if !is_writer {
            if step != Step::Start {
                return None;
            }
            self.sessions[slot].step = Step::Waiting;
            self.simple(xid, out, op::GET_DATA, true);
            return Some(OpKind::GetData);
        }
        if step == Step::Waiting {
            return None;
        }
        if self.sessions[slot].mark_ns == 0 {
            self.sessions[slot].mark_ns = now_ns;
        }
        let first_try_ns = self.sessions[slot].mark_ns;
        let shared = self.shared(slot);
        let pending = shared.remaining.load(Ordering::Acquire) > 0;
        let started_ns = shared
            .round_started_ns
            .load(Ordering::Relaxed)
            .max(first_try_ns);
        let ready = shared.armed.load(Ordering::Acquire) >= watchers;
        let overdue = now_ns.saturating_sub(started_ns) > FANOUT_ROUND_TIMEOUT_NS;
        if !(ready && !pending || overdue) {
            return None;
        }
        // A new round: whoever armed since the last one is waited for.
        let armed = shared.armed.swap(0, Ordering::AcqRel);
        shared.round_started_ns.store(now_ns, Ordering::Relaxed);
        shared.remaining.store(armed, Ordering::Release);
        shared.round.fetch_add(1, Ordering::AcqRel);
        self.sessions[slot].step = Step::Waiting;
        let (path, value) = (&self.path, &self.value);
        encode::request(out, xid, op::SET_DATA, |w| {
            encode::set_data(w, path, value, -1)
        });
        Some(OpKind::SetData)
    }

    fn next_lock(
        &mut self,
        slot: usize,
        xid: i32,
        now_ns: u64,
        out: &mut Vec<u8>,
    ) -> Option<OpKind> {
        let session = &mut self.sessions[slot];
        self.path.clear();
        self.path.push_str(&session.group_path);
        match session.step {
            Step::Start => {
                session.step = Step::Waiting;
                session.mark_ns = now_ns;
                self.path.push_str("/n-");
                self.create(xid, out, EPHEMERAL_SEQUENTIAL);
                Some(OpKind::CreateSequential)
            }
            Step::List => {
                session.step = Step::Waiting;
                self.simple(xid, out, op::GET_CHILDREN, false);
                Some(OpKind::GetChildren)
            }
            Step::Release => {
                session.step = Step::Waiting;
                let own = session.own.take().unwrap_or_default();
                self.path.push('/');
                self.path.push_str(&own);
                self.shared(slot)
                    .last_change_ns
                    .store(now_ns, Ordering::Release);
                self.delete(xid, out);
                Some(OpKind::Delete)
            }
            Step::Waiting | Step::Watching | Step::Renewing => None,
        }
    }

    fn next_churn(&mut self, slot: usize, xid: i32, out: &mut Vec<u8>) -> Option<OpKind> {
        let session = &mut self.sessions[slot];
        if session.step != Step::Start {
            return None;
        }
        session.step = Step::Waiting;
        self.path.clear();
        let _ = std::fmt::Write::write_fmt(
            &mut self.path,
            format_args!(
                "{}/e-{}-{}",
                session.group_path, session.global, session.count
            ),
        );
        self.create(xid, out, EPHEMERAL);
        Some(OpKind::Create)
    }
}

/// on_reply for each scenario.
impl ScenarioGenerator {
    fn reply_queue(&mut self, slot: usize, reply: Reply<'_>) {
        if reply.kind != OpKind::GetChildren {
            return;
        }
        let session = &mut self.sessions[slot];
        session.step = Step::Start;
        if reply.err == 0 {
            let mut children = read_children(reply.body).unwrap_or_default();
            // Lowest sequence number last, so pop() takes it.
            children.sort_by_key(|c| std::cmp::Reverse(sequence_of(c)));
            session.backlog = children;
        }
    }

    fn reply_registry(&mut self, slot: usize, reply: Reply<'_>) {
        let session = &mut self.sessions[slot];
        session.step = if reply.kind == OpKind::GetChildren && reply.err == 0 {
            Step::Watching
        } else {
            Step::List
        };
    }

    fn reply_fanout(&mut self, slot: usize, reply: Reply<'_>, effects: &mut Effects) {
        let session = &mut self.sessions[slot];
        if reply.kind == OpKind::SetData {
            session.step = Step::Start;
            return;
        }
        if reply.err != 0 {
            session.step = Step::Start;
            return;
        }
        session.step = Step::Watching;
        let shared = &self.shared[session.group as usize];
        session.armed_round = shared.round.load(Ordering::Acquire) + 1;
        shared.armed.fetch_add(1, Ordering::AcqRel);
        if let Some(writer) = self.fanout_writer_slot() {
            effects.wake.push(writer);
        }
    }

    fn reply_lock(&mut self, slot: usize, reply: Reply<'_>, effects: &mut Effects) {
        let session = &mut self.sessions[slot];
        match reply.kind {
            OpKind::CreateSequential if reply.err == 0 => {
                let name =
                    read_path(reply.body).and_then(|p| p.rsplit('/').next().map(str::to_string));
                session.own = name;
                session.step = Step::List;
            }
            OpKind::GetChildren if reply.err == 0 => {
                let Some(own) = session.own.clone() else {
                    session.step = Step::Start;
                    return;
                };
                let mut children = read_children(reply.body).unwrap_or_default();
                children.sort_by_key(|c| sequence_of(c));
                let position = children.iter().position(|c| *c == own);
                match position {
                    Some(0) => {
                        // Acquired.
                        let now_ns = reply.now_ns;
                        effects
                            .latencies
                            .push((OpKind::LockAcquire, session.mark_ns, now_ns));
                        let shared = &self.shared[session.group as usize];
                        let released_ns = shared.last_change_ns.swap(0, Ordering::AcqRel);
                        if released_ns != 0 {
                            effects
                                .latencies
                                .push((OpKind::LockHandoff, released_ns, now_ns));
                        }
                        session.step = Step::Release;
                    }
                    Some(index) => {
                        // Watch the predecessor; it is deleted when the lock passes to us.
                        session.backlog = vec![children[index - 1].clone()];
                        session.step = Step::Watching;
                        effects.wake.push(slot);
                    }
                    None => session.step = Step::Start,
                }
            }
            OpKind::Exists => {
                // NoNode: the predecessor left already; list again. Otherwise wait for it.
                session.step = if reply.err == 0 {
                    Step::Watching
                } else {
                    Step::List
                };
                session.backlog.clear();
            }
            OpKind::Delete => {
                session.step = Step::Start;
            }
            _ => session.step = Step::Start,
        }
    }

    fn reply_churn(&mut self, slot: usize, reply: Reply<'_>, effects: &mut Effects) {
        let session = &mut self.sessions[slot];
        session.count += 1;
        if reply.err == 0
            && session
                .count
                .is_multiple_of(u64::from(CHURN_EPHEMERALS_PER_SESSION))
        {
            session.step = Step::Renewing;
            effects.renew.push(slot);
        } else {
            session.step = Step::Start;
        }
    }
}

impl OpGenerator for ScenarioGenerator {
    fn next_op(
        &mut self,
        slot: usize,
        xid: i32,
        now_ns: u64,
        _rng: &mut Rng,
        out: &mut Vec<u8>,
    ) -> Option<OpKind> {
        match self.kind {
            Kind::Seqid => Some(self.next_seqid(slot, xid, out)),
            Kind::Queue => self.next_queue(slot, xid, out),
            Kind::Registry => self.next_registry(slot, xid, now_ns, out),
            Kind::Fanout => self.next_fanout(slot, xid, now_ns, out),
            Kind::Lock => {
                // The lock's exists watch goes out from here too.
                if self.sessions[slot].step == Step::Watching
                    && !self.sessions[slot].backlog.is_empty()
                {
                    let session = &mut self.sessions[slot];
                    let predecessor = session.backlog.pop().unwrap_or_default();
                    session.step = Step::Waiting;
                    self.path.clear();
                    self.path.push_str(&session.group_path);
                    self.path.push('/');
                    self.path.push_str(&predecessor);
                    self.simple(xid, out, op::EXISTS, true);
                    return Some(OpKind::Exists);
                }
                self.next_lock(slot, xid, now_ns, out)
            }
            Kind::Churn => self.next_churn(slot, xid, out),
        }
    }

    fn on_reply(&mut self, slot: usize, reply: Reply<'_>, effects: &mut Effects) {
        match self.kind {
            Kind::Seqid => {}
            Kind::Queue => self.reply_queue(slot, reply),
            Kind::Registry => self.reply_registry(slot, reply),
            Kind::Fanout => self.reply_fanout(slot, reply, effects),
            Kind::Lock => self.reply_lock(slot, reply, effects),
            Kind::Churn => self.reply_churn(slot, reply, effects),
        }
        if self.sessions[slot].step != Step::Watching && self.sessions[slot].step != Step::Renewing
        {
            effects.wake.push(slot);
        }
    }

    fn on_notification(&mut self, slot: usize, event: Notification<'_>, effects: &mut Effects) {
        let writer_slot = self.fanout_writer_slot();
        let session = &mut self.sessions[slot];
        if session.step != Step::Watching {
            return;
        }
        let shared = &self.shared[session.group as usize];
        match self.kind {
            Kind::Registry if event.event_type == EventType::NodeChildrenChanged as i32 => {
                let changed_ns = shared.last_change_ns.load(Ordering::Relaxed);
                if changed_ns != 0 && changed_ns <= event.now_ns {
                    effects
                        .latencies
                        .push((OpKind::WatchNotify, changed_ns, event.now_ns));
                }
                session.step = Step::List;
            }
            Kind::Fanout if event.event_type == EventType::NodeDataChanged as i32 => {
                let round = shared.round.load(Ordering::Acquire);
                if session.armed_round == round {
                    let left = shared.remaining.fetch_sub(1, Ordering::AcqRel);
                    if left == 1 {
                        let started_ns = shared.round_started_ns.load(Ordering::Relaxed);
                        effects.latencies.push((
                            OpKind::FanoutLastNotify,
                            started_ns,
                            event.now_ns,
                        ));
                        if let Some(writer) = writer_slot {
                            effects.wake.push(writer);
                        }
                    }
                }
                session.step = Step::Start;
            }
            Kind::Lock if event.event_type == EventType::NodeDeleted as i32 => {
                session.step = Step::List;
            }
            _ => return,
        }
        effects.wake.push(slot);
    }

    fn on_session_ready(&mut self, slot: usize, new_session: bool, _now_ns: u64) {
        let session = &mut self.sessions[slot];
        if new_session || session.step == Step::Waiting || session.step == Step::Watching {
            // Watches do not survive a reconnect (no setWatches is sent): start the cycle
            // again. A lock keeps its node if the session survived, so it lists again.
            session.step = if self.kind == Kind::Lock && session.own.is_some() && !new_session {
                Step::List
            } else {
                Step::Start
            };
            session.backlog.clear();
        }
        if new_session {
            session.own = None;
        }
    }

    fn on_connection_lost(&mut self, slot: usize) {
        let session = &mut self.sessions[slot];
        if self.kind == Kind::Registry && session.count % 2 == 1 {
            // The create may not have applied; next time register a fresh instance.
            session.count += 1;
        }
    }

    fn error_is_expected(&self, kind: OpKind, err: i32) -> bool {
        // A queue consumer that loses the race for an item; a lock's predecessor that is gone.
        let no_node = err == ErrorCode::NoNode.code();
        match self.kind {
            Kind::Queue => kind == OpKind::Delete && no_node,
            Kind::Lock => kind == OpKind::Exists && no_node,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fanout_counts_each_groups_watchers() {
        // 10 sessions over 3 groups: members 4, 3, 3, so 3, 2, 2 watchers besides the writer.
        let workload =
            ScenarioWorkload::new(Kind::Fanout, "/p".into(), 3, (1, 10), Arc::from(&b""[..]));
        let generator = ScenarioGenerator {
            kind: Kind::Fanout,
            sessions_total: 10,
            groups: 3,
            worker_index: 0,
            value: workload.value.clone(),
            acl: open_acl_unsafe(),
            shared: workload.shared.clone(),
            sessions: Vec::new(),
            path: String::new(),
        };
        let watchers: Vec<u64> = (0..3).map(|g| generator.fanout_watchers(g)).collect();
        assert_eq!(watchers, [3, 2, 2]);
    }

    #[test]
    fn sequence_numbers_sort_numerically() {
        // The last ten digits are the sequence, whatever the prefix.
        assert_eq!(sequence_of("item-0000000012"), 12);
        assert_eq!(sequence_of("n-0000000100"), 100);
        let mut names = vec!["n-0000000100", "x-0000000002", "n-0000000010"];
        names.sort_by_key(|n| sequence_of(n));
        assert_eq!(names, ["x-0000000002", "n-0000000010", "n-0000000100"]);
    }
}
