//! net: runs one [`Peer`] over real TCP — election and quorum listeners, outbound
//! connections, `wire` framing, a logical tick, the durable [`FileStore`], and delivery of
//! what the peer decided to its owner as [`Event`]s (the server's `server::quorum`).
//!
//! Owns: the sockets of one server, the mapping from TCP connections to the peer's `Link`s,
//! the per-connection send queues, the tick timer and the store.
//! Must not: interpret payloads (they are opaque to it), panic on anything a socket delivers
//! (a decode error closes that connection with a logged reason and a counter), resolve host
//! names (IPv4 literals and `localhost` only), or wait on a peer longer than
//! `Limits::connect_timeout` (dials are blocking `connect_timeout` calls on the loop thread;
//! a refused dial returns at once, an unreachable peer costs up to that timeout).
//!
//! Threading: one plain std thread per driver runs a mio readiness loop (mio 1, already in
//! the lockfile through loadgen; it lets the thread sleep in epoll instead of polling). The
//! owner talks to it through a bounded command channel plus a `mio::Waker` (`propose`,
//! `compact`, `stop`) and reads a `Status` snapshot behind a mutex. Committed entries go to the
//! `on_apply` callback, on the driver thread, in order; it must not block.
//!
//! Loop: wait for readiness at most until the next tick → read, decode, `step` → commands
//! (`propose`, `compact`) → `tick` when due (missed ticks are skipped, never bunched) → drain `Ready`:
//! disk ops in order (epochs, truncations and snapshot installs are synchronous; appends are
//! written), role change, messages (queued, then written once per connection), committed
//! entries. The appends' fdatasync runs on the store's sync thread (`store::FileStore::
//! start_sync`, one in flight, later appends grouped behind it); when it answers, the loop
//! calls `on_persisted(the last zxid it covers)` — so an ACK never covers what is not
//! durable. A `Ready` that cut or replaced the log syncs its appends in place instead.
//!
//! Election port: every server keeps one *outbound* connection to each other server's
//! election port and only writes on it; it only reads from *inbound* ones. That replaces
//! ZooKeeper's "the higher myid keeps the one connection" rule with two one-way connections
//! per pair: no tie-break, no race when both dial at once. The outbound connection starts
//! with ZooKeeper's initial message (`long -65536`, `long myid`, `int len`, `"host:port"`);
//! then each notification is `int len` + `wire::encode_notification`. A notification with
//! no connection (and none allowed yet by the backoff) is dropped: the election resends.
//!
//! Quorum port: the learner dials the leader when its peer sends packet 0 (FOLLOWERINFO) of
//! a new `Link::conn`; QuorumPackets go back to back with no length prefix, as ZooKeeper
//! writes them. The driver rebuilds each `Link` from the connection: the learner's `conn`
//! id, the accepting side's connection id, a per-connection `session` stamp and a receive
//! counter for `seq`. Resends of packet 0 on a live connection are dropped (TCP does not
//! lose it); a leader that is not leading when a FOLLOWERINFO arrives closes that
//! connection so the learner's next resend dials again. A leader's connection belongs to
//! one leadership (`Link::session` of the first packet sent on it); a packet of another
//! leadership closes it. Role changes close what the new role does not use. A learner must
//! wait for LEADERINFO before it sends ACKEPOCH, as ZooKeeper's does: what arrives before
//! the leader's first packet on a connection carries no session and the peer ignores it.
//!
//! Limits: `Limits` — bytes queued per connection (overflow closes the connection and is
//! counted), the largest quorum packet read (`wire::decode_packet`'s data cap), reads per
//! readiness event, connect timeout and reconnect backoff (25 ms doubling to 500 ms), and
//! commands per loop. Notifications are capped by `wire::NOTIFICATION_BYTES_MAX`.
//!
//! Compaction: `Driver::compact(snapshot)` takes a snapshot of the caller's applied state,
//! writes and fsyncs its file on the caller's thread (`FileStore::prepare_snapshot`); the
//! loop publishes it (`FileStore::compact_prepared`: rename, log rewrite) and calls
//! `Peer::compact`; later SNAP syncs send it. Before the write it is offered to the peer
//! (`Driver::offer_snapshot`) for learners waiting on a fresh SNAP (`Event::SnapshotWanted`);
//! the loop puts publishing off while a connection has a SNAP's worth queued
//! (`COMPACT_DEFER_QUEUED_BYTES`, at most `COMPACT_DEFER_MAX`).
//! On start, a stored snapshot is handed to `on_apply` as `Apply::Snapshot` first.
//!
//! A store error (a full disk, a failed fdatasync) stops the loop for good: `Status::fatal`
//! says why, and the event callback is dropped, which is the owner's cue (the server then
//! exits with status 70; a restart recovers what is durable and syncs with the leader).
//!
//! A learner whose established link to its leader closes goes LOOKING at once, as
//! ZooKeeper's does (a leader that closes before it spoke gets the learner's next resend).
//!
//! Not yet: `multiAddress` and quorum auth/TLS.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::{self, Receiver, Sender, TrySendError};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use super::store::{FileStore, IncomingSnapshot, PreparedSnapshot, StoreError, Synced};
use super::wire::{self, packet_type, WireError};
use super::{Apply, Config, ConfigError, DiskOp, Envelope, Link, Message, Packet, Payload, Ready};
use super::{AuthId, Entry, Peer, PeerId, ProposeError, Proposed, Revalidation, Role};
use super::{Snapshot, SnapshotData, Zxid};

/// ZooKeeper's `QuorumCnxManager.PROTOCOL_VERSION_V1` (the initial message's first long).
const ELECTION_PROTOCOL_VERSION: i64 = -65536;
/// The longest `host:port` accepted in an election handshake.
const HANDSHAKE_ADDR_BYTES_MAX: usize = 1024;
const LISTEN_ELECTION: Token = Token(0);
const LISTEN_QUORUM: Token = Token(1);
const WAKE: Token = Token(2);
const FIRST_CONN_TOKEN: usize = 16;
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// A SNAP's data goes from the socket to its file through a buffer of its own (its
/// `SnapInto::File`'s, so it lives as long as the SNAP arrives), this big: with 64 KiB reads
/// and writes, their syscalls were about a third of a 184 MB SNAP's transfer (149-194 ms;
/// 97-133 ms with 1 MiB, 4 alternating 1M-znode catch-ups each).
const SNAP_READ_CHUNK_BYTES: usize = 1024 * 1024;
/// SNAP data read per readiness event, at most: what 64 KiB reads took per event before,
/// so that a SNAP holds up the loop's other connections no longer than then.
const SNAP_READ_BYTES_PER_EVENT_MAX: usize = 4 * 1024 * 1024;
const ACCEPTS_PER_EVENT_MAX: usize = 64;
const WRITES_PER_FLUSH_MAX: usize = 64;
/// A connection's queued output is written at once past this size; below it, at the end of
/// the `Ready` (or loop turn) that queued it, so a batch of packets leaves in one `write`.
const FLUSH_EARLY_BYTES: usize = 256 * 1024;
const READY_ROUNDS_MAX: usize = 64;
/// A connection's emptied receive buffer larger than this is freed, not kept.
const BUFFER_KEPT_BYTES_MAX: usize = 4 << 20;
/// Small frames queued for one connection share buffers of up to this many bytes.
const COALESCED_BYTES_MAX: usize = 256 * 1024;
/// A quorum packet's bytes besides its data when it has no authinfo: frame length, type,
/// zxid, data length, authinfo count.
const PACKET_OVERHEAD_BYTES: usize = 4 + 4 + 8 + 4 + 4;
/// A quorum packet's data buffer from this size on is queued shared, not copied.
const SHARED_DATA_BYTES_MIN: usize = 64 * 1024;

/// The longest zab tick in a server's ensemble: finer than tickTime so that elections run
/// on ZooKeeper's 200 ms scale.
const ZAB_TICK_MS_MAX: u64 = 100;
/// Unanswered dials of the chosen leader in a row before a learner looks again.
const LEADER_DIALS_UNANSWERED_MAX: u32 = 3;
/// Measured here: the learner replays ~3 µs per entry (234k after a 155 MB snapshot: 0.8 s),
/// while the leader builds its snapshot at ~1 GB/s (203 MB, 1M znodes, 0.2 s) on another
/// thread and the learner loads it at ~0.7 GB/s: ~1000 bytes of snapshot per entry.
const SNAP_ENTRY_COST_BYTES: usize = 1000;
/// Queued bytes on one connection above which a compaction waits (a SNAP is being sent).
const COMPACT_DEFER_QUEUED_BYTES: usize = 16 << 20;
/// The longest a compaction waits for that.
const COMPACT_DEFER_MAX: Duration = Duration::from_secs(5);
/// The largest snapshot a server's ensemble sends or accepts in one SNAP.
const SNAP_BYTES_MAX: usize = 1 << 30;
/// The longest interval between a LOOKING server's notification resends.
const ELECTION_RESEND_MS_MAX: u64 = 6_400;

/// One server's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerAddrs {
    pub id: PeerId,
    pub quorum: SocketAddr,
    pub election: SocketAddr,
}

/// Bounds of one driver.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes queued for one connection; beyond it the connection is closed (counted).
    pub send_queue_bytes_max: usize,
    /// The largest QuorumPacket data buffer read (a SNAP carries the whole snapshot).
    pub packet_data_bytes_max: usize,
    /// Reads of `READ_CHUNK_BYTES` per readiness event before the loop moves on.
    pub reads_per_event_max: usize,
    /// Commands (proposals) taken per loop iteration.
    pub commands_per_loop_max: usize,
    /// The command channel's capacity; `propose` fails with `Busy` beyond it.
    pub commands_queued_max: usize,
    pub connect_timeout: Duration,
    pub reconnect_backoff_min: Duration,
    pub reconnect_backoff_max: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            send_queue_bytes_max: 64 * 1024 * 1024,
            packet_data_bytes_max: 32 * 1024 * 1024,
            reads_per_event_max: 64,
            commands_per_loop_max: 4096,
            commands_queued_max: 4096,
            connect_timeout: Duration::from_millis(100),
            reconnect_backoff_min: Duration::from_millis(25),
            reconnect_backoff_max: Duration::from_millis(500),
        }
    }
}

/// Everything one driver needs.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Membership and limits in ticks; `zab.id` is this server.
    pub zab: Config,
    /// Every server, this one included.
    pub servers: Vec<ServerAddrs>,
    /// One logical tick (ZooKeeper's tickTime).
    pub tick: Duration,
    pub data_dir: PathBuf,
    /// ZooKeeper's `forceSync`: false skips the fdatasync of appends (benchmarks only).
    pub force_sync: bool,
    /// The peer's randomness (election jitter, connection ids).
    pub seed: u64,
    pub limits: Limits,
}

impl NetConfig {
    /// The driver's view of a parsed zoo.cfg in quorum mode: `myid`, the `server.N` lines
    /// (their first address; `peerType` from each line), `tickTime`, `initLimit`,
    /// `syncLimit` and `dataDir`. The leader pings every half tickTime, as ZooKeeper does;
    /// forwarded requests go to the driver's owner (`Config::requests_to_driver`).
    ///
    /// # Errors
    /// A host that is not an IPv4 address or `localhost`, a server
    /// line without an address, or limits the zab config refuses.
    pub fn from_server_config(
        config: &crate::config::Config,
        seed: u64,
    ) -> Result<NetConfig, NetError> {
        use crate::config::PeerType;
        let (mut voters, mut observers, mut servers) = (vec![], vec![], vec![]);
        for (id, server) in &config.servers {
            let address = server
                .addresses
                .first()
                .ok_or(NetError::UnknownServer(*id))?;
            let ip = resolve_host(&address.host)?;
            servers.push(ServerAddrs {
                id: *id,
                quorum: SocketAddr::from((ip, address.quorum_port)),
                election: SocketAddr::from((ip, address.election_port)),
            });
            match server.role {
                PeerType::Participant => voters.push(*id),
                PeerType::Observer => observers.push(*id),
            }
        }
        // ZooKeeper's election runs on its own clock (finalizeWait 200 ms, resends doubling
        // up to 60 s) and its quorum timers on tickTime. One zab tick here is at most
        // ZAB_TICK_MS_MAX; initLimit and syncLimit are scaled to it.
        let tick_time_ms = u64::try_from(config.tick_time_ms.max(1)).unwrap_or(1);
        let zab_tick_ms = tick_time_ms.min(ZAB_TICK_MS_MAX);
        let per_tick = tick_time_ms.div_ceil(zab_tick_ms);
        let ms_to_ticks = |ms: u64| ms.div_ceil(zab_tick_ms).max(1);
        let mut zab = Config::new(config.server_id, voters, observers);
        zab.init_limit_ticks = u64::from(config.init_limit_ticks) * per_tick;
        zab.sync_limit_ticks = u64::from(config.sync_limit_ticks) * per_tick;
        zab.ping_interval_ticks = (per_tick / 2).max(1);
        // A follower that reached its leader before it led retries on the election's scale,
        // not a ping's: a 2 s tickTime would otherwise add a second to a fail-over.
        zab.follower_info_resend_ticks = ms_to_ticks(100);
        zab.election_timeout_ticks = ms_to_ticks(200);
        zab.election_timeout_ticks_max = ms_to_ticks(ELECTION_RESEND_MS_MAX);
        zab.election_jitter_ticks = ms_to_ticks(100);
        zab.finalize_wait_ticks = ms_to_ticks(200);
        // The replica core bounds what is in flight (sessions x outstanding requests).
        zab.proposals_in_flight_max = 1 << 20;
        zab.requests_to_driver = true;
        zab.snap_tail_entries_min = config.snap_tail_entries_min;
        zab.snap_entry_cost_bytes = SNAP_ENTRY_COST_BYTES;
        zab.snapshot_wait_ticks = (zab.init_limit_ticks / 2).max(1);
        zab.validate()?;
        let tick_ms = zab_tick_ms;
        // A SNAP carries the whole snapshot in one packet (1M znodes of 100 B: ~200 MB).
        let limits = Limits {
            send_queue_bytes_max: SNAP_BYTES_MAX + (64 << 20),
            packet_data_bytes_max: SNAP_BYTES_MAX,
            ..Limits::default()
        };
        let net = NetConfig {
            zab,
            servers,
            tick: Duration::from_millis(tick_ms),
            data_dir: config.data_dir.clone(),
            force_sync: config.force_sync,
            seed,
            limits,
        };
        Ok(net)
    }
}

/// Why a driver could not start or a request failed.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("zab config: {0}")]
    Config(#[from] ConfigError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{what} {addr}: {source}")]
    Io {
        what: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}: {1}")]
    Setup(&'static str, std::io::Error),
    #[error("host {0:?} does not resolve to an address")]
    UnresolvedHost(String),
    #[error("server {0} has no addresses")]
    UnknownServer(PeerId),
    #[error("the driver has stopped")]
    Stopped,
    #[error("the command queue is full")]
    Busy,
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot compact at {0}: not applied, or neither logged nor the snapshot")]
    BadCompaction(Zxid),
    #[error("propose: {0}")]
    Propose(#[from] ProposeError),
}

/// Counters of what the driver dropped or closed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub connections_accepted: u64,
    pub connects_failed: u64,
    pub connections_closed: u64,
    pub send_queue_overflows: u64,
    pub decode_errors: u64,
    pub notifications_dropped: u64,
    pub packets_dropped: u64,
    /// Learner: how the leaders synced this server (DIFF, TRUNC, SNAP received).
    pub syncs_diff: u64,
    pub syncs_trunc: u64,
    pub syncs_snap: u64,
}

/// What the driver's peer looks like, refreshed every loop iteration.
#[derive(Debug, Clone)]
pub struct Status {
    pub role: Role,
    /// The epoch this peer leads, once discovery is over.
    pub leader_epoch: Option<u32>,
    pub accepted_epoch: u32,
    pub current_epoch: u32,
    pub last_zxid: Zxid,
    pub commit_zxid: Zxid,
    pub applied_zxid: Zxid,
    pub violations: u64,
    pub requests_dropped: u64,
    /// Leader: SNAPs put off for a fresh snapshot.
    pub snapshot_waits: u64,
    pub counters: Counters,
    /// Set when the loop stopped on a store error (the peer must not go on).
    pub fatal: Option<String>,
    /// A leader's learners by stage.
    pub learners: Option<super::LearnerCounts>,
    /// Voters that make a quorum.
    pub quorum_size: usize,
    /// A leader's learner syncs waiting for a commit (mntr's zk_pending_syncs).
    pub pending_syncs: Option<usize>,
}

/// What the driver tells its owner, on the driver thread, in the order it happened.
#[derive(Debug, Clone)]
pub enum Event {
    /// A committed entry or a snapshot to apply (a leader's own proposals included).
    Apply(Apply),
    /// The role changed, after the applies that came before the change. `next_zxid` is a
    /// serving leader's first proposal zxid ([`Peer::next_zxid`]).
    Role { role: Role, next_zxid: Option<Zxid> },
    /// Leader with `Config::requests_to_driver`: a learner's forwarded request (REQUEST)
    /// and its client connection's auth ids.
    Request {
        from: PeerId,
        payload: Payload,
        auth: Vec<AuthId>,
    },
    /// Leader: a learner asks whether a session is alive; answer with
    /// [`Driver::answer_revalidations`].
    Revalidate(Revalidation),
    /// Learner: the leader's answer to [`Driver::revalidate`].
    Revalidated { session_id: i64, valid: bool },
    /// Learner: this many of its forwarded syncs, oldest first, are answered (SYNC) and
    /// everything committed before them is applied (after their `Apply` events).
    SyncsAnswered(usize),
    /// Leader: a learner's PING payload (the sessions its clients touched).
    Touches { from: PeerId, payload: Payload },
    /// A group commit of the log finished (for metrics).
    Synced(Synced),
    /// Leader: a learner waits for a snapshot newer than `newer_than` before its SNAP; one
    /// of the applied state goes to `Driver::offer_snapshot` (then to `compact`).
    SnapshotWanted { newer_than: Zxid },
}

enum Command {
    Propose(Payload, Sender<Result<Proposed, ProposeError>>),
    /// Learner: client requests for the leader (REQUEST), without waiting.
    Forward(Vec<(Payload, Vec<AuthId>)>),
    /// Learner: sessions to ask the leader about (REVALIDATE): (session id, timeout).
    Revalidate(Vec<(i64, i32)>),
    /// Leader: answers to `Event::Revalidate`: (learner, session id, valid).
    Revalidated(Vec<(PeerId, i64, bool)>),
    /// Leader: learners' forwarded syncs, in the order their requests were handled.
    SyncLearners(Vec<PeerId>),
    /// Proposals whose zxids the caller already assigned, from `first` on.
    ProposeAt {
        first: Zxid,
        payloads: Vec<Payload>,
    },
    /// A snapshot and its file, written and fsynced on the caller's thread.
    Compact(Snapshot, PreparedSnapshot, Sender<Result<(), NetError>>),
    PingReply(Payload),
    /// Leader: a snapshot of the applied state for learners waiting for a SNAP.
    OfferSnapshot(Snapshot),
}

/// A running peer. Dropping it stops the thread and closes every socket.
pub struct Driver {
    id: PeerId,
    data_dir: PathBuf,
    thread: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    commands: Sender<Command>,
    status: Arc<Mutex<Status>>,
}

impl Driver {
    /// Opens the store, binds both listeners and starts the loop thread.
    ///
    /// # Errors
    /// A bad config, a store that cannot be read, or an address that cannot be bound.
    pub fn start(
        config: NetConfig,
        mut on_apply: Box<dyn FnMut(Apply) + Send>,
    ) -> Result<Driver, NetError> {
        let on_event = Box::new(move |event: Event| {
            if let Event::Apply(apply) = event {
                on_apply(apply);
            }
        });
        Driver::start_with_events(config, on_event)
    }

    /// [`Driver::start`] with every [`Event`], not only the applies.
    ///
    /// # Errors
    /// As [`Driver::start`].
    pub fn start_with_events(
        config: NetConfig,
        on_event: Box<dyn FnMut(Event) + Send>,
    ) -> Result<Driver, NetError> {
        config.zab.validate()?;
        let id = config.zab.id;
        let own = *config
            .servers
            .iter()
            .find(|s| s.id == id)
            .ok_or(NetError::UnknownServer(id))?;
        for other in config.zab.others() {
            if !config.servers.iter().any(|s| s.id == other) {
                return Err(NetError::UnknownServer(other));
            }
        }
        let opening = Instant::now();
        let (mut store, durable) = FileStore::open(&config.data_dir)?;
        tracing::info!(
            id,
            snapshot = %durable.snapshot.zxid,
            snapshot_bytes = durable.snapshot.data.len(),
            log_entries = durable.log.len(),
            open_ms = opening.elapsed().as_millis() as u64,
            "zab net: store opened"
        );
        let mut on_event = on_event;
        if durable.snapshot.zxid != Zxid::ZERO {
            // The state starts from the local snapshot; the peer applies what follows it.
            on_event(Event::Apply(Apply::Snapshot(durable.snapshot.clone())));
        }
        let peer = Peer::new(config.zab.clone(), durable, config.seed)?;
        let poll = Poll::new().map_err(|e| NetError::Setup("poll", e))?;
        let waker =
            Arc::new(Waker::new(poll.registry(), WAKE).map_err(|e| NetError::Setup("waker", e))?);
        let mut election = TcpListener::bind(own.election).map_err(|source| NetError::Io {
            what: "bind election",
            addr: own.election,
            source,
        })?;
        let mut quorum = TcpListener::bind(own.quorum).map_err(|source| NetError::Io {
            what: "bind quorum",
            addr: own.quorum,
            source,
        })?;
        poll.registry()
            .register(&mut election, LISTEN_ELECTION, Interest::READABLE)
            .map_err(|e| NetError::Setup("register", e))?;
        poll.registry()
            .register(&mut quorum, LISTEN_QUORUM, Interest::READABLE)
            .map_err(|e| NetError::Setup("register", e))?;
        if config.force_sync {
            let sync_waker = waker.clone();
            store.sync_in_background(
                format!("zab-sync-{id}"),
                Box::new(move || {
                    let _ = sync_waker.wake();
                }),
            )?;
        } else {
            store.skip_append_syncs();
        }
        let (commands, command_rx) = channel::bounded(config.limits.commands_queued_max);
        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(Mutex::new(status_of(&peer, Counters::default(), None)));
        let mut lp = Loop {
            addrs: config.servers.iter().map(|s| (s.id, *s)).collect(),
            own,
            tick: config.tick,
            limits: config.limits,
            peer,
            store,
            poll,
            election,
            quorum,
            conns: HashMap::new(),
            next_token: FIRST_CONN_TOKEN,
            election_out: HashMap::new(),
            backoff: HashMap::new(),
            learner_out: None,
            leader_in: HashMap::new(),
            next_conn_id: 1,
            pending_reads: Vec::new(),
            snap_parsed: false,
            unflushed: Vec::new(),
            deferred_compaction: None,
            read_chunk: vec![0u8; READ_CHUNK_BYTES].into_boxed_slice(),
            inbox: Vec::new(),
            held_infos: BTreeMap::new(),
            leader_dials_unanswered: 0,
            counters: Counters::default(),
            commands: command_rx,
            stop: stop.clone(),
            status: status.clone(),
            on_event,
        };
        let thread = std::thread::Builder::new()
            .name(format!("zab-net-{id}"))
            .spawn(move || lp.run())
            .map_err(|e| NetError::Setup("spawn", e))?;
        Ok(Driver {
            id,
            data_dir: config.data_dir.clone(),
            thread: Some(thread),
            stop,
            waker,
            commands,
            status,
        })
    }

    pub fn id(&self) -> PeerId {
        self.id
    }

    /// Proposes `payload` (leader) or forwards it (learner), waiting at most `timeout` for
    /// the peer's answer (not for the commit: that arrives through `on_apply`).
    ///
    /// # Errors
    /// The peer refused, the driver stopped, its queue is full, or no answer in time.
    pub fn propose(&self, payload: Payload, timeout: Duration) -> Result<Proposed, NetError> {
        let (reply, answer) = channel::bounded(1);
        match self.commands.try_send(Command::Propose(payload, reply)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(NetError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(NetError::Stopped),
        }
        self.waker.wake().map_err(|e| NetError::Setup("wake", e))?;
        match answer.recv_timeout(timeout) {
            Ok(result) => Ok(result?),
            Err(channel::RecvTimeoutError::Timeout) => Err(NetError::Timeout(timeout)),
            Err(channel::RecvTimeoutError::Disconnected) => Err(NetError::Stopped),
        }
    }

    /// Hands the driver a snapshot of the state applied up to `snapshot.zxid` (which must
    /// be applied, and be a logged zxid or the current snapshot's): it is persisted, the
    /// log entries up to it are dropped from the store and the peer, and later SNAP syncs
    /// send it. Waits at most `timeout` for the answer.
    ///
    /// # Errors
    /// A zxid that cannot be compacted to, the driver stopped, its queue is full, or no
    /// answer in time.
    pub fn compact(&self, snapshot: Snapshot, timeout: Duration) -> Result<(), NetError> {
        // Written and fsynced here, on the caller's thread: the loop only renames it.
        let prepared = FileStore::prepare_snapshot(&self.data_dir, &snapshot)?;
        let (reply, answer) = channel::bounded(1);
        match self
            .commands
            .try_send(Command::Compact(snapshot, prepared, reply))
        {
            Ok(()) => {}
            Err(TrySendError::Full(Command::Compact(_, prepared, _))) => {
                FileStore::discard(prepared);
                return Err(NetError::Busy);
            }
            Err(TrySendError::Full(_)) => return Err(NetError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(NetError::Stopped),
        }
        self.waker.wake().map_err(|e| NetError::Setup("wake", e))?;
        match answer.recv_timeout(timeout) {
            Ok(result) => result,
            Err(channel::RecvTimeoutError::Timeout) => Err(NetError::Timeout(timeout)),
            Err(channel::RecvTimeoutError::Disconnected) => Err(NetError::Stopped),
        }
    }

    /// Leader: hands learners that wait for a fresh SNAP (`Event::SnapshotWanted`) this
    /// snapshot of the state applied up to `snapshot.zxid`, before it is written: it is the
    /// ensemble's committed state, and the learner persists its own copy before acking.
    ///
    /// # Errors
    /// The driver stopped or its queue is full.
    pub fn offer_snapshot(&self, snapshot: Snapshot) -> Result<(), NetError> {
        self.command(Command::OfferSnapshot(snapshot))
    }

    /// Proposes `payloads` as the zxids `first`, `first + 1`, … without waiting. The caller
    /// assigned them (its state machine already applied them speculatively); if the peer
    /// cannot propose exactly these, it steps down: the caller sees a `Role` event, after
    /// which it must discard what was not committed.
    ///
    /// # Errors
    /// The driver stopped or its queue is full (nothing was proposed).
    pub fn propose_at(&self, first: Zxid, payloads: Vec<Payload>) -> Result<(), NetError> {
        self.command(Command::ProposeAt { first, payloads })
    }

    /// Learner: forwards `payloads` to the leader without waiting. A learner that is not
    /// serving drops them (counted in `Status::requests_dropped`'s log line); its clients are
    /// disconnected by the role change that stopped it.
    ///
    /// # Errors
    /// The driver stopped or its queue is full.
    pub fn forward(&self, requests: Vec<(Payload, Vec<AuthId>)>) -> Result<(), NetError> {
        self.command(Command::Forward(requests))
    }

    /// Learner: asks the leader about sessions (session id, timeout) without waiting; each
    /// answer comes as an `Event::Revalidated`.
    ///
    /// # Errors
    /// The driver stopped or its queue is full.
    pub fn revalidate(&self, sessions: Vec<(i64, i32)>) -> Result<(), NetError> {
        self.command(Command::Revalidate(sessions))
    }

    /// Leader: answers learners' `Event::Revalidate`s: (learner, session id, valid).
    ///
    /// # Errors
    /// The driver stopped or its queue is full.
    pub fn answer_revalidations(&self, answers: Vec<(PeerId, i64, bool)>) -> Result<(), NetError> {
        self.command(Command::Revalidated(answers))
    }

    /// Leader: learners' forwarded syncs, handled after every request before them (and
    /// after the proposals those made, which the caller handed over first).
    ///
    /// # Errors
    /// The driver stopped or its queue is full.
    pub fn sync_learners(&self, learners: Vec<PeerId>) -> Result<(), NetError> {
        self.command(Command::SyncLearners(learners))
    }

    /// Adds to this learner's next PING reply (its clients' session touches; reports made
    /// between two PINGs are concatenated).
    ///
    /// # Errors
    /// The driver stopped or its queue is full.
    pub fn add_ping_reply(&self, payload: Payload) -> Result<(), NetError> {
        self.command(Command::PingReply(payload))
    }

    fn command(&self, command: Command) -> Result<(), NetError> {
        match self.commands.try_send(command) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(NetError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(NetError::Stopped),
        }
        self.waker.wake().map_err(|e| NetError::Setup("wake", e))
    }

    pub fn status(&self) -> Status {
        match self.status.lock() {
            Ok(status) => status.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Stops the loop and joins its thread; every socket is closed when this returns.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!(id = self.id, "zab net: driver thread panicked");
            }
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn status_of(peer: &Peer, counters: Counters, fatal: Option<String>) -> Status {
    Status {
        role: peer.role(),
        leader_epoch: peer.leader_epoch(),
        accepted_epoch: peer.accepted_epoch(),
        current_epoch: peer.current_epoch(),
        last_zxid: peer.last_zxid(),
        commit_zxid: peer.commit_zxid(),
        applied_zxid: peer.applied_zxid(),
        violations: peer.violations(),
        requests_dropped: peer.requests_dropped(),
        snapshot_waits: peer.snapshot_waits(),
        counters,
        fatal,
        learners: peer.learner_counts(),
        quorum_size: peer.config.quorum(),
        pending_syncs: peer.pending_syncs(),
    }
}

#[derive(Debug)]
enum Kind {
    /// We dialled `to`'s election port; write-only.
    ElectionOut { to: PeerId },
    /// Someone dialled our election port; read-only. `from` once the handshake was read.
    ElectionIn { from: Option<PeerId> },
    /// We (a learner) dialled the leader for the peer's connection `conn`.
    LearnerOut {
        leader: PeerId,
        conn: u64,
        /// The `Link::session` stamped on packets received on this connection.
        session_stamp: u64,
        sent_next_seq: u64,
        recv_seq: u64,
    },
    /// A learner dialled us; `conn` is our id for it. `learner` once FOLLOWERINFO was read.
    LeaderIn {
        learner: Option<PeerId>,
        conn: u64,
        /// The leadership that owns it: the session of the first packet we sent on it.
        session: Option<u64>,
        recv_seq: u64,
    },
}

/// Bytes queued for a connection: small frames coalesce into owned buffers (up to
/// `COALESCED_BYTES_MAX`); a packet's large data buffer (a SNAP's snapshot) is queued as the
/// shared payload itself, never copied.
enum Chunk {
    Owned(Vec<u8>),
    Shared(Payload),
    /// A SNAP's data, written from where it is (mapped: from the page cache).
    Snapshot(SnapshotData),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(bytes) => bytes,
            Chunk::Shared(payload) => payload,
            Chunk::Snapshot(data) => data,
        }
    }
}

struct Conn {
    stream: TcpStream,
    kind: Kind,
    input: Vec<u8>,
    /// Learner: the SNAP whose data is arriving straight into its buffer.
    snap_in: Option<SnapIn>,
    output: VecDeque<Chunk>,
    /// Bytes of the front chunk already written.
    output_sent: usize,
    /// Bytes queued and not yet written, over every chunk.
    output_bytes: usize,
    closing: Option<&'static str>,
}

impl Conn {
    fn queued_bytes(&self) -> usize {
        self.output_bytes
    }
}

struct Backoff {
    next_attempt: Instant,
    delay: Duration,
}

struct Loop {
    addrs: BTreeMap<PeerId, ServerAddrs>,
    own: ServerAddrs,
    tick: Duration,
    limits: Limits,
    peer: Peer,
    store: FileStore,
    poll: Poll,
    election: TcpListener,
    quorum: TcpListener,
    conns: HashMap<Token, Conn>,
    next_token: usize,
    election_out: HashMap<PeerId, Token>,
    backoff: HashMap<PeerId, Backoff>,
    learner_out: Option<Token>,
    /// Our connection id → the accepted learner connection.
    leader_in: HashMap<u64, Token>,
    next_conn_id: u64,
    pending_reads: Vec<Token>,
    /// A SNAP was decoded this turn: no more reads until `drain_ready` handed it over.
    snap_parsed: bool,
    /// Connections with output queued and not written yet: what `enqueue` queued since
    /// (written once per Ready or loop turn, so a batch of packets leaves in one write), and
    /// flushes that stopped at `WRITES_PER_FLUSH_MAX` with bytes left (their sockets may
    /// still take more, and an edge-triggered poll would not say so again).
    unflushed: Vec<Token>,
    /// A compaction put off while a connection has a SNAP's worth queued (`compact_due`).
    deferred_compaction: Option<DeferredCompaction>,
    /// The buffer every socket read goes through.
    read_chunk: Box<[u8]>,
    /// Decoded messages waiting for `step`.
    inbox: Vec<(PeerId, Message)>,
    /// FOLLOWERINFOs that reached this server while it was LOOKING, one per learner: the
    /// peer gets them if it comes to lead (`on_role`); otherwise their connections close
    /// with every learner connection. A learner that decided for this server a little
    /// before it decided itself is then answered at once, not after its next dial: a
    /// closed FOLLOWERINFO cost ~100 ms of a fail-over.
    held_infos: BTreeMap<PeerId, Message>,
    /// Learner: dials of the chosen leader in a row that failed or that it closed unanswered.
    leader_dials_unanswered: u32,
    counters: Counters,
    commands: Receiver<Command>,
    stop: Arc<AtomicBool>,
    status: Arc<Mutex<Status>>,
    on_event: Box<dyn FnMut(Event) + Send>,
}

impl Loop {
    fn run(&mut self) {
        let mut events = Events::with_capacity(256);
        let mut next_tick = Instant::now() + self.tick;
        let mut fatal = None;
        // The peer's first `Ready` (a LOOKING server's notifications) goes out on the first
        // turn, not after a tick of waiting: a restarted server rejoins ~100 ms sooner.
        let mut started = false;
        while !self.stop.load(Ordering::SeqCst) {
            let now = Instant::now();
            // A step-down in the last turn's `reap` (the leader's connection closed) left a
            // `Ready` with the role change and the first votes: it goes out now, not after up
            // to a tick of waiting.
            let idle = self.pending_reads.is_empty()
                && self.unflushed.is_empty()
                && !self.peer.has_ready();
            let timeout = if idle && std::mem::replace(&mut started, true) {
                next_tick.saturating_duration_since(now).min(self.tick)
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != ErrorKind::Interrupted {
                    fatal = Some(format!("poll: {e}"));
                    break;
                }
            }
            for event in events.iter() {
                match event.token() {
                    LISTEN_ELECTION => self.accept(true),
                    LISTEN_QUORUM => self.accept(false),
                    WAKE => {}
                    token => {
                        if event.is_writable() {
                            self.flush(token);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.read(token);
                        }
                    }
                }
            }
            let pending = std::mem::take(&mut self.pending_reads);
            for token in pending {
                if self.snap_parsed {
                    // The SNAP goes to the owner first (`drain_ready`), to load while this
                    // thread reads the log tail behind it.
                    self.pending_reads.push(token);
                } else {
                    self.read(token);
                }
            }
            self.flush_queued();
            self.deliver_inbox();
            if let Err(e) = self.take_commands() {
                tracing::error!(id = self.own.id, error = %e, "zab net: store failed, stopping");
                fatal = Some(e.to_string());
                break;
            }
            let now = Instant::now();
            if now >= next_tick {
                self.peer.tick();
                next_tick = if now >= next_tick + self.tick {
                    now + self.tick // Late: skip the missed ticks.
                } else {
                    next_tick + self.tick
                };
            }
            let turn_end = self
                .take_synced()
                .and_then(|()| self.drain_ready())
                .and_then(|()| self.compact_due());
            self.snap_parsed = false;
            if let Err(e) = turn_end {
                tracing::error!(id = self.own.id, error = %e, "zab net: store failed, stopping");
                fatal = Some(e.to_string());
                break;
            }
            self.flush_queued();
            self.reap();
            self.publish(None);
        }
        self.publish(fatal);
        let tokens: Vec<Token> = self.conns.keys().copied().collect();
        for token in tokens {
            self.close(token, "driver stopped");
        }
        self.reap();
    }

    fn publish(&self, fatal: Option<String>) {
        let status = status_of(&self.peer, self.counters, fatal);
        match self.status.lock() {
            Ok(mut s) => *s = status,
            Err(poisoned) => *poisoned.into_inner() = status,
        }
    }

    fn take_commands(&mut self) -> Result<(), StoreError> {
        for _ in 0..self.limits.commands_per_loop_max {
            match self.commands.try_recv() {
                Err(_) => return Ok(()),
                Ok(Command::Propose(payload, reply)) => {
                    let result = self.peer.propose(payload);
                    let _ = reply.try_send(result); // The caller may have timed out.
                }
                Ok(Command::ProposeAt { first, payloads }) => self.propose_at(first, payloads),
                Ok(Command::Forward(requests)) => {
                    for (payload, auth) in requests {
                        if let Err(error) = self.peer.forward(payload, auth) {
                            tracing::debug!(id = self.own.id, %error, "zab net: forward dropped");
                        }
                    }
                }
                Ok(Command::Revalidate(sessions)) => {
                    for (session_id, timeout_ms) in sessions {
                        if let Err(error) = self.peer.revalidate(session_id, timeout_ms) {
                            tracing::debug!(id = self.own.id, %error,
                                "zab net: revalidation dropped");
                        }
                    }
                }
                Ok(Command::Revalidated(answers)) => {
                    for (learner, session_id, valid) in answers {
                        let result = self.peer.answer_revalidation(learner, session_id, valid);
                        if let Err(error) = result {
                            tracing::debug!(id = self.own.id, %error,
                                "zab net: revalidation answer dropped");
                        }
                    }
                }
                Ok(Command::SyncLearners(learners)) => {
                    for learner in learners {
                        if let Err(error) = self.peer.sync_learner(learner) {
                            tracing::warn!(id = self.own.id, learner, %error,
                                "zab net: a learner's sync is refused (its client times out)");
                        }
                    }
                }
                Ok(Command::Compact(snapshot, prepared, reply)) => {
                    if let Some(earlier) = self.deferred_compaction.take() {
                        // Superseded: its caller hears that it was not applied.
                        FileStore::discard(earlier.prepared);
                        let _ = earlier.reply.try_send(Err(NetError::Busy));
                    }
                    self.deferred_compaction = Some(DeferredCompaction {
                        snapshot,
                        prepared,
                        reply,
                        since: Instant::now(),
                    });
                    self.compact_due()?;
                }
                Ok(Command::PingReply(payload)) => self.peer.append_ping_reply(&payload),
                Ok(Command::OfferSnapshot(snapshot)) => self.peer.offer_snapshot(&snapshot),
            }
        }
        Ok(())
    }

    /// Runs the deferred compaction unless a connection still has more than
    /// `COMPACT_DEFER_QUEUED_BYTES` to send (a SNAP going out): publishing the snapshot
    /// rewrites and fsyncs the log on this thread, which would stall that SNAP for as long
    /// (~0.5 s at 1M znodes). Put off at most `COMPACT_DEFER_MAX`.
    fn compact_due(&mut self) -> Result<(), StoreError> {
        if self.deferred_compaction.is_none() {
            return Ok(());
        }
        // A SNAP the peer just decided on is still in its Ready: queue it first.
        self.drain_ready()?;
        let Some(deferred) = &self.deferred_compaction else {
            return Ok(());
        };
        let sending = self
            .conns
            .values()
            .any(|conn| conn.queued_bytes() > COMPACT_DEFER_QUEUED_BYTES);
        if sending && deferred.since.elapsed() < COMPACT_DEFER_MAX {
            return Ok(());
        }
        if let Some(deferred) = self.deferred_compaction.take() {
            let result = self.compact(deferred.snapshot, deferred.prepared)?;
            let _ = deferred.reply.try_send(result);
        }
        Ok(())
    }

    fn propose_at(&mut self, first: Zxid, payloads: Vec<Payload>) {
        let mut expected = first;
        for payload in payloads {
            let result = match self.peer.next_zxid() {
                Some(next) if next == expected => self.peer.propose(payload),
                _ => Err(ProposeError::NotServing),
            };
            match result {
                Ok(Proposed::Local(zxid)) if zxid == expected => {
                    expected = Zxid(zxid.0 + 1);
                }
                other => {
                    // The caller's state machine holds txns the log will not: only a new
                    // leadership (and the caller's reset on the role change) repairs that.
                    tracing::warn!(id = self.own.id, zxid = %expected, ?other,
                        "zab net: a prepared proposal could not be proposed; stepping down");
                    self.peer.step_down();
                    return;
                }
            }
        }
    }

    /// Persists `snapshot` and drops the entries up to it from the store and the peer.
    /// The outer error is the store's (fatal), the inner one the caller's.
    fn compact(
        &mut self,
        snapshot: Snapshot,
        prepared: PreparedSnapshot,
    ) -> Result<Result<(), NetError>, StoreError> {
        // Every entry the peer holds must be in the store before the log is rewritten.
        self.drain_ready()?;
        let zxid = snapshot.zxid;
        let current = self.peer.snapshot().zxid;
        let logged = self
            .peer
            .entries()
            .binary_search_by_key(&zxid, |e| e.zxid)
            .is_ok();
        if zxid > self.peer.applied_zxid() || zxid < current || !(logged || zxid == current) {
            FileStore::discard(prepared);
            return Ok(Err(NetError::BadCompaction(zxid)));
        }
        let after: Vec<Entry> = self
            .peer
            .entries()
            .iter()
            .filter(|e| e.zxid > zxid)
            .cloned()
            .collect();
        let compacting = Instant::now();
        let after_entries = after.len();
        self.store.compact_prepared(prepared, &after)?;
        tracing::info!(id = self.own.id, zxid = %zxid, after_entries,
            ms = compacting.elapsed().as_millis() as u64, "zab net: log compacted");
        self.peer.compact(snapshot);
        // The rewritten log is durable; a background sync in flight before it no longer
        // reports anything.
        if let Some(zxid) = self.store.last_zxid() {
            self.peer.on_persisted(zxid);
        }
        Ok(Ok(()))
    }

    fn deliver_inbox(&mut self) {
        for (from, message) in std::mem::take(&mut self.inbox) {
            let info = matches!(
                &message,
                Message::Quorum {
                    packet: Packet::FollowerInfo { .. },
                    ..
                }
            );
            if info && self.peer.role() == Role::Looking {
                // A learner's earlier connection, held or not, closed at parse time
                // (`after_parse`): its held FOLLOWERINFO is replaced here.
                self.held_infos.insert(from, message);
                continue;
            }
            self.peer.step(from, message);
        }
    }

    /// Tells the peer how far a finished background sync made the log durable.
    fn take_synced(&mut self) -> Result<(), StoreError> {
        if let Some(batch) = self.store.take_synced()? {
            self.peer.on_persisted(batch.upto);
            (self.on_event)(Event::Synced(batch));
        }
        Ok(())
    }

    /// Executes `Ready`s until the peer has nothing left (bounded rounds).
    fn drain_ready(&mut self) -> Result<(), StoreError> {
        for _ in 0..READY_ROUNDS_MAX {
            if !self.peer.has_ready() {
                return Ok(());
            }
            let mut ready = self.peer.take_ready();
            self.hand_over_snapshot(&mut ready);
            let mut appended = false;
            // Cut or replaced (which drops the answer of a background sync asked for
            // before): this Ready's appends are synced here (a rare, election-time path).
            let mut log_rewritten = false;
            for op in &ready.disk {
                match op {
                    DiskOp::AcceptedEpoch(epoch) => self.store.write_accepted_epoch(*epoch)?,
                    DiskOp::CurrentEpoch(epoch) => self.store.write_current_epoch(*epoch)?,
                    DiskOp::InstallSnapshot(snapshot) => {
                        let writing = Instant::now();
                        self.store.install_snapshot(snapshot)?;
                        log_rewritten = true;
                        tracing::info!(id = self.own.id, zxid = %snapshot.zxid,
                            bytes = snapshot.data.len(),
                            write_ms = writing.elapsed().as_millis() as u64,
                            "zab net: snapshot persisted");
                    }
                    DiskOp::TruncateAfter(zxid) => {
                        self.store.truncate_after(*zxid)?;
                        log_rewritten = true;
                    }
                    DiskOp::Append(entry) => {
                        self.store.append(entry)?;
                        appended = true;
                    }
                }
            }
            if let Some(role) = ready.role {
                self.on_role(role);
            }
            // Appends need not be durable before messages go out (rule 1: only the
            // synchronous operations must be; an ACK comes from `on_persisted` alone): a
            // leader's PROPOSALs reach the followers while its own fsync runs, as ZooKeeper's.
            for envelope in ready.messages {
                self.send(envelope);
            }
            self.flush_queued();
            // `flush_queued` wrote the messages to their sockets already. Normally the
            // fdatasync runs on the sync thread while this loop goes on (`take_synced`
            // reports it); the log on disk then holds exactly the peer's entries up to the
            // zxid it names, as only appends came since it was asked for.
            let mut persisted = None;
            if appended && log_rewritten {
                self.store.sync()?;
                persisted = self.store.last_zxid();
            } else if appended {
                self.store.start_sync()?;
            }
            for apply in ready.committed {
                (self.on_event)(Event::Apply(apply));
            }
            if let Some(role) = ready.role {
                let next_zxid = self.peer.next_zxid();
                (self.on_event)(Event::Role { role, next_zxid });
            }
            for request in ready.requests {
                (self.on_event)(Event::Request {
                    from: request.from,
                    payload: request.payload,
                    auth: request.auth,
                });
            }
            for revalidation in ready.revalidations {
                (self.on_event)(Event::Revalidate(revalidation));
            }
            for (session_id, valid) in ready.revalidated {
                (self.on_event)(Event::Revalidated { session_id, valid });
            }
            if ready.syncs_answered > 0 {
                (self.on_event)(Event::SyncsAnswered(ready.syncs_answered));
            }
            for (from, payload) in ready.session_touches {
                (self.on_event)(Event::Touches { from, payload });
            }
            if let Some(newer_than) = ready.snapshot_wanted {
                (self.on_event)(Event::SnapshotWanted { newer_than });
            }
            if let Some(zxid) = persisted {
                self.peer.on_persisted(zxid);
            }
        }
        Ok(())
    }

    /// A SNAP's snapshot goes to the owner before `drain_ready` writes it, so that the owner
    /// loads it while this thread writes and fsyncs it (the exception to rule 3 of the `zab`
    /// module header: it is the ensemble's committed state, and nothing is acked or served
    /// from it before the write is durable).
    fn hand_over_snapshot(&mut self, ready: &mut Ready) {
        let installs = ready
            .disk
            .iter()
            .any(|op| matches!(op, DiskOp::InstallSnapshot(_)));
        let last = ready
            .committed
            .iter()
            .rposition(|apply| matches!(apply, Apply::Snapshot(_)));
        if let (true, Some(last)) = (installs, last) {
            for apply in ready.committed.drain(..=last) {
                (self.on_event)(Event::Apply(apply));
            }
        }
    }

    fn on_role(&mut self, role: Role) {
        tracing::info!(id = self.own.id, ?role, "zab net: role");
        self.leader_dials_unanswered = 0;
        match role {
            Role::Leading { .. } => {
                for (from, info) in std::mem::take(&mut self.held_infos) {
                    self.peer.step(from, info);
                }
            }
            Role::Looking => self.close_former_learners(),
            Role::Following { .. } | Role::Observing { .. } => {
                // The held FOLLOWERINFOs' connections among them.
                self.held_infos.clear();
                let tokens: Vec<Token> = self.leader_in.values().copied().collect();
                for token in tokens {
                    self.close(token, "no longer leading");
                }
            }
        }
        let learner_of = match role {
            Role::Following { leader, .. } | Role::Observing { leader, .. } => Some(leader),
            _ => None,
        };
        if let Some(token) = self.learner_out {
            let keep = matches!(self.conns.get(&token).map(|c| &c.kind),
                Some(Kind::LearnerOut { leader, .. }) if Some(*leader) == learner_of);
            if !keep {
                self.close(token, "no longer following that leader");
            }
        }
    }

    /// On going LOOKING: closes the connections of our last leadership's learners (their
    /// FOLLOWERINFO parsed and not held). A connection still before its FOLLOWERINFO, or
    /// holding one, stays for the election's end: the step-down that led here (`reap`) was
    /// published a turn before `on_role` runs, and a learner may have dialled in between.
    fn close_former_learners(&mut self) {
        let held: Vec<u64> = self
            .held_infos
            .values()
            .filter_map(|info| match info {
                Message::Quorum { link, .. } => Some(link.conn),
                Message::Notification(_) => None,
            })
            .collect();
        let former: Vec<Token> = self
            .leader_in
            .iter()
            .filter(|&(conn, token)| {
                let parsed = matches!(
                    self.conns.get(token).map(|c| &c.kind),
                    Some(Kind::LeaderIn {
                        learner: Some(_),
                        ..
                    })
                );
                parsed && !held.contains(conn)
            })
            .map(|(_, &token)| token)
            .collect();
        for token in former {
            self.close(token, "no longer leading");
        }
    }

    fn send(&mut self, envelope: Envelope) {
        let to = envelope.to;
        match envelope.message {
            Message::Notification(n) => {
                let body = wire::encode_notification(&wire::WireNotification::from_notification(
                    &n,
                    Vec::new(),
                ));
                let Some(token) = self.election_conn(to) else {
                    self.counters.notifications_dropped += 1;
                    return;
                };
                let mut frame = Vec::with_capacity(4 + body.len());
                frame.extend_from_slice(&(body.len() as i32).to_be_bytes());
                frame.extend_from_slice(&body);
                self.enqueue(token, vec![Chunk::Owned(frame)]);
            }
            Message::Quorum { link, packet } => {
                if let Packet::Snap { snapshot } = &packet {
                    tracing::info!(id = self.own.id, to, zxid = %snapshot.zxid,
                        bytes = snapshot.data.len(), "zab net: sending SNAP");
                }
                let bytes = match &packet {
                    Packet::Snap { snapshot } => snap_chunks(snapshot),
                    _ => packet_chunks(&wire::to_quorum_packet(&packet, self.own.id)),
                };
                if let Some(&token) = self.leader_in.get(&link.conn) {
                    self.send_as_leader(token, link, bytes);
                } else {
                    self.send_as_learner(to, link, bytes);
                }
            }
        }
    }

    fn send_as_leader(&mut self, token: Token, link: Link, bytes: Vec<Chunk>) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let mut foreign = false;
        if let Kind::LeaderIn { session, .. } = &mut conn.kind {
            match session {
                None => *session = Some(link.session),
                Some(s) => foreign = *s != link.session,
            }
        }
        if foreign {
            self.counters.packets_dropped += 1;
            self.close(token, "a packet of another leadership");
            return;
        }
        self.enqueue(token, bytes);
    }

    fn send_as_learner(&mut self, leader: PeerId, link: Link, bytes: Vec<Chunk>) {
        let current = self.learner_out.and_then(|t| match self.conns.get_mut(&t) {
            Some(Conn {
                kind:
                    Kind::LearnerOut {
                        leader: l,
                        conn,
                        sent_next_seq,
                        ..
                    },
                closing: None,
                ..
            }) if *l == leader && *conn == link.conn => Some((t, sent_next_seq)),
            _ => None,
        });
        if let Some((token, sent_next_seq)) = current {
            if link.seq < *sent_next_seq {
                return; // A resend of FOLLOWERINFO: TCP already carries the first copy.
            }
            *sent_next_seq = link.seq + 1;
            self.enqueue(token, bytes);
            return;
        }
        if link.seq != 0 {
            self.counters.packets_dropped += 1; // The connection is gone; the peer times out.
            return;
        }
        if let Some(old) = self.learner_out.take() {
            self.close(old, "the learner started a new connection");
        }
        let Some(addr) = self.addrs.get(&leader).map(|a| a.quorum) else {
            self.counters.packets_dropped += 1;
            return;
        };
        let stamp = self.next_conn_id | (1 << 63);
        self.next_conn_id += 1;
        let kind = Kind::LearnerOut {
            leader,
            conn: link.conn,
            session_stamp: stamp,
            sent_next_seq: 1,
            recv_seq: 0,
        };
        if let Some(token) = self.dial(addr, kind) {
            self.learner_out = Some(token);
            self.enqueue(token, bytes);
        } else {
            self.counters.packets_dropped += 1;
            self.leader_unanswered(leader);
        }
    }

    /// The chosen leader refused a dial or closed it before speaking. A server that is not
    /// leading (it chose another leader meanwhile) does that every time; after a few in a row
    /// the learner looks again, as ZooKeeper's gives up connecting after a few tries —
    /// otherwise it would hold its vote until initLimit and could stall the election.
    fn leader_unanswered(&mut self, leader: PeerId) {
        self.leader_dials_unanswered += 1;
        let following = matches!(self.peer.role(),
            Role::Following { leader: l, .. } | Role::Observing { leader: l, .. } if l == leader);
        if following && self.leader_dials_unanswered >= LEADER_DIALS_UNANSWERED_MAX {
            tracing::info!(
                id = self.own.id,
                leader,
                "zab net: the leader does not answer; looking"
            );
            self.leader_dials_unanswered = 0;
            self.peer.step_down();
        }
    }

    /// The outbound election connection to `to`, dialling it when the backoff allows.
    fn election_conn(&mut self, to: PeerId) -> Option<Token> {
        if let Some(&token) = self.election_out.get(&to) {
            if self.conns.get(&token).is_some_and(|c| c.closing.is_none()) {
                return Some(token);
            }
        }
        let now = Instant::now();
        if self.backoff.get(&to).is_some_and(|b| now < b.next_attempt) {
            return None;
        }
        let addr = self.addrs.get(&to)?.election;
        match self.dial(addr, Kind::ElectionOut { to }) {
            Some(token) => {
                self.backoff.remove(&to);
                self.election_out.insert(to, token);
                let own = self.own.election.to_string();
                let mut hello = Vec::with_capacity(20 + own.len());
                hello.extend_from_slice(&ELECTION_PROTOCOL_VERSION.to_be_bytes());
                hello.extend_from_slice(&(self.own.id as i64).to_be_bytes());
                hello.extend_from_slice(&(own.len() as i32).to_be_bytes());
                hello.extend_from_slice(own.as_bytes());
                self.enqueue(token, vec![Chunk::Owned(hello)]);
                Some(token)
            }
            None => {
                let (min, max) = (
                    self.limits.reconnect_backoff_min,
                    self.limits.reconnect_backoff_max,
                );
                let b = self.backoff.entry(to).or_insert(Backoff {
                    next_attempt: now,
                    delay: min / 2,
                });
                b.delay = (b.delay * 2).clamp(min, max);
                b.next_attempt = now + b.delay;
                None
            }
        }
    }

    fn dial(&mut self, addr: SocketAddr, kind: Kind) -> Option<Token> {
        let connected = std::net::TcpStream::connect_timeout(&addr, self.limits.connect_timeout)
            .and_then(|s| {
                s.set_nodelay(true)?;
                s.set_nonblocking(true)?;
                Ok(s)
            });
        match connected {
            Ok(stream) => self.register(TcpStream::from_std(stream), kind),
            Err(e) => {
                self.counters.connects_failed += 1;
                tracing::debug!(id = self.own.id, %addr, error = %e, "zab net: connect failed");
                None
            }
        }
    }

    fn register(&mut self, mut stream: TcpStream, kind: Kind) -> Option<Token> {
        let token = Token(self.next_token);
        self.next_token += 1;
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self.poll.registry().register(&mut stream, token, interest) {
            tracing::warn!(id = self.own.id, error = %e, "zab net: register failed");
            return None;
        }
        self.conns.insert(
            token,
            Conn {
                stream,
                kind,
                input: Vec::new(),
                snap_in: None,
                output: VecDeque::new(),
                output_sent: 0,
                output_bytes: 0,
                closing: None,
            },
        );
        Some(token)
    }

    fn accept(&mut self, election: bool) {
        for _ in 0..ACCEPTS_PER_EVENT_MAX {
            let listener = if election {
                &self.election
            } else {
                &self.quorum
            };
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!(id = self.own.id, error = %e, "zab net: accept failed");
                    return;
                }
            };
            let _ = stream.set_nodelay(true);
            self.counters.connections_accepted += 1;
            let kind = if election {
                Kind::ElectionIn { from: None }
            } else {
                let conn = self.next_conn_id;
                self.next_conn_id += 1;
                Kind::LeaderIn {
                    learner: None,
                    conn,
                    session: None,
                    recv_seq: 0,
                }
            };
            let conn_id = match kind {
                Kind::LeaderIn { conn, .. } => Some(conn),
                _ => None,
            };
            if let (Some(token), Some(conn)) = (self.register(stream, kind), conn_id) {
                self.leader_in.insert(conn, token);
            }
        }
        // More may be waiting: mio is edge-triggered, so re-arm and look again next round.
        self.accept_again(election);
    }

    /// Accepts left after `ACCEPTS_PER_EVENT_MAX`: reregistering re-arms the edge.
    fn accept_again(&mut self, election: bool) {
        let (listener, token) = if election {
            (&mut self.election, LISTEN_ELECTION)
        } else {
            (&mut self.quorum, LISTEN_QUORUM)
        };
        let _ = self
            .poll
            .registry()
            .reregister(listener, token, Interest::READABLE);
    }

    /// Queues `chunks` (one frame) for the connection and writes what its socket takes.
    fn enqueue(&mut self, token: Token, chunks: Vec<Chunk>) {
        let max = self.limits.send_queue_bytes_max;
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if conn.closing.is_some() {
            return;
        }
        let frame_bytes: usize = chunks.iter().map(|chunk| chunk.bytes().len()).sum();
        if conn.queued_bytes() + frame_bytes > max {
            self.counters.send_queue_overflows += 1;
            self.close(token, "send queue overflow");
            return;
        }
        for chunk in chunks {
            match (chunk, conn.output.back_mut()) {
                (Chunk::Owned(bytes), Some(Chunk::Owned(back)))
                    if back.len() + bytes.len() <= COALESCED_BYTES_MAX =>
                {
                    back.extend_from_slice(&bytes);
                }
                (chunk, _) if chunk.bytes().is_empty() => {}
                (chunk, _) => conn.output.push_back(chunk),
            }
        }
        conn.output_bytes += frame_bytes;
        if conn.queued_bytes() >= FLUSH_EARLY_BYTES {
            self.flush(token);
        } else if !self.unflushed.contains(&token) {
            self.unflushed.push(token);
        }
    }

    /// Writes out what `enqueue` left queued: one write per connection for many packets.
    fn flush_queued(&mut self) {
        for token in std::mem::take(&mut self.unflushed) {
            self.flush(token);
        }
    }

    fn flush(&mut self, token: Token) {
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        let mut failed = None;
        let mut blocked = false;
        for _ in 0..WRITES_PER_FLUSH_MAX {
            let Some(front) = conn.output.front() else {
                break;
            };
            let rest = front.bytes().get(conn.output_sent..).unwrap_or_default();
            match conn.stream.write(rest) {
                Ok(0) => {
                    failed = Some("write returned 0");
                    break;
                }
                Ok(n) => {
                    conn.output_sent += n;
                    conn.output_bytes -= n;
                    if conn.output_sent == front.bytes().len() {
                        conn.output.pop_front();
                        conn.output_sent = 0;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    blocked = true;
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    failed = Some("write failed");
                    break;
                }
            }
        }
        if let Some(reason) = failed {
            self.close(token, reason);
        } else if !blocked && conn.queued_bytes() > 0 && !self.unflushed.contains(&token) {
            self.unflushed.push(token);
        }
    }

    fn read(&mut self, token: Token) {
        let reads_max = self.limits.reads_per_event_max;
        let Some(conn) = self.conns.get_mut(&token) else {
            return;
        };
        if conn.closing.is_some() {
            return;
        }
        let chunk = &mut self.read_chunk;
        let mut outcome = None;
        let mut drained = false;
        let mut snap_read_bytes = 0;
        let learner = matches!(conn.kind, Kind::LearnerOut { .. });
        for _ in 0..reads_max {
            if snap_read_bytes >= SNAP_READ_BYTES_PER_EVENT_MAX {
                break;
            }
            let stream = &mut conn.stream;
            let read = match conn
                .snap_in
                .as_mut()
                .filter(|snap| snap.unfilled_bytes() > 0)
            {
                Some(snap) => {
                    let read = snap.fill(|buffer| stream.read(buffer));
                    snap_read_bytes += read.as_ref().map_or(0, |n| *n);
                    read
                }
                None => stream.read(chunk).inspect(|n| {
                    conn.input
                        .extend_from_slice(chunk.get(..*n).unwrap_or_default());
                }),
            };
            if learner && conn.snap_in.is_none() {
                if let Some(snap) = SnapIn::begin(
                    &mut conn.input,
                    self.limits.packet_data_bytes_max,
                    Some(&self.store),
                ) {
                    tracing::info!(
                        id = self.own.id,
                        data_bytes = snap.data_bytes,
                        to_file = matches!(snap.into, SnapInto::File { .. }),
                        "zab net: SNAP header received"
                    );
                    conn.snap_in = Some(snap);
                }
            }
            match read {
                Ok(0) => {
                    outcome = Some("closed by the peer");
                    break;
                }
                // A SNAP's data is in: what follows it waits for the next turn, so that the
                // snapshot is handed over without first stepping a read's worth of log tail.
                Ok(_)
                    if conn
                        .snap_in
                        .as_ref()
                        .is_some_and(|s| s.unfilled_bytes() == 0) =>
                {
                    break
                }
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    drained = true;
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    outcome = Some("read failed");
                    break;
                }
            }
        }
        if let Err(reason) = self.parse(token) {
            self.counters.decode_errors += 1;
            self.close(token, reason);
            return;
        }
        if let Some(reason) = outcome {
            self.close(token, reason);
        } else if !drained {
            self.pending_reads.push(token);
        }
    }

    /// Decodes every complete frame in the connection's input into the inbox.
    fn parse(&mut self, token: Token) -> Result<(), &'static str> {
        let Some(conn) = self.conns.get_mut(&token) else {
            return Ok(());
        };
        let mut used = 0;
        let result = loop {
            let rest = conn.input.get(used..).unwrap_or_default();
            let step = match &mut conn.kind {
                Kind::ElectionOut { .. } => {
                    used = conn.input.len(); // Write-only: ignore whatever comes back.
                    break Ok(());
                }
                Kind::ElectionIn { from } => parse_election(rest, from, &self.addrs, self.own.id),
                Kind::LearnerOut {
                    leader,
                    conn: conn_id,
                    session_stamp,
                    recv_seq,
                    ..
                } => match conn.snap_in.as_ref().map(|snap| snap.unfilled_bytes()) {
                    Some(0) => SnapIn::finish(&mut conn.snap_in, rest),
                    Some(_) => Ok(None),
                    None => parse_packet(rest, self.limits.packet_data_bytes_max),
                }
                .map(|got| {
                    got.map(|(packet, n)| {
                        match &packet {
                            Packet::Diff { .. } => self.counters.syncs_diff += 1,
                            Packet::Trunc { .. } => self.counters.syncs_trunc += 1,
                            Packet::Snap { snapshot } => {
                                self.counters.syncs_snap += 1;
                                self.snap_parsed = true;
                                tracing::info!(id = self.own.id, zxid = %snapshot.zxid,
                                    bytes = snapshot.data.len(), "zab net: SNAP received");
                            }
                            _ => {}
                        }
                        let link = Link {
                            conn: *conn_id,
                            session: *session_stamp,
                            seq: *recv_seq,
                        };
                        *recv_seq += 1;
                        (n, Some((*leader, Message::Quorum { link, packet })))
                    })
                }),
                Kind::LeaderIn {
                    learner,
                    conn: conn_id,
                    session,
                    recv_seq,
                } => match parse_packet(rest, self.limits.packet_data_bytes_max) {
                    Err(e) => Err(e),
                    Ok(None) => Ok(None),
                    Ok(Some((packet, n))) => {
                        let from = match (*learner, &packet) {
                            (Some(from), _) => Ok(from),
                            (None, Packet::FollowerInfo { .. }) => {
                                learner_id(rest).ok_or("FOLLOWERINFO without a server id")
                            }
                            (None, _) => Err("the first packet is not FOLLOWERINFO"),
                        };
                        match from {
                            Err(e) => Err(e),
                            Ok(from) if from == self.own.id || !self.addrs.contains_key(&from) => {
                                Err("FOLLOWERINFO from an unknown server")
                            }
                            Ok(from) => {
                                *learner = Some(from);
                                let link = Link {
                                    conn: *conn_id,
                                    session: session.unwrap_or(0),
                                    seq: *recv_seq,
                                };
                                *recv_seq += 1;
                                Ok(Some((n, Some((from, Message::Quorum { link, packet })))))
                            }
                        }
                    }
                },
            };
            match step {
                Err(e) => break Err(e),
                Ok(None) => break Ok(()),
                Ok(Some((n, message))) => {
                    used += n;
                    if let Some(m) = message {
                        self.inbox.push(m);
                    }
                }
            }
        };
        conn.input.drain(..used.min(conn.input.len()));
        if conn.input.is_empty() && conn.input.capacity() > BUFFER_KEPT_BYTES_MAX {
            conn.input = Vec::new(); // A SNAP's buffer: give it back.
        }
        if conn.input.len() > self.limits.packet_data_bytes_max + 64 * 1024 {
            return Err("input beyond the frame limit");
        }
        result?;
        self.after_parse(token);
        Ok(())
    }

    /// Connection bookkeeping that needs the whole loop: one learner connection per server.
    fn after_parse(&mut self, token: Token) {
        let (leader_in, election_in) = match self.conns.get(&token).map(|c| &c.kind) {
            Some(Kind::LeaderIn {
                learner: Some(from),
                conn,
                ..
            }) => (Some((*from, *conn)), None),
            Some(Kind::ElectionIn { from: Some(from) }) => (None, Some(*from)),
            _ => (None, None),
        };
        if let Some((from, conn_id)) = leader_in {
            match self.peer.role() {
                // LOOKING: held until the election ends (`held_infos`).
                Role::Leading { .. } | Role::Looking => {}
                _ => {
                    // Our peer ignores it; the learner dials again on its next resend.
                    self.close(token, "FOLLOWERINFO while not leading");
                    return;
                }
            }
            let older: Vec<Token> = self
                .leader_in
                .iter()
                .filter(|(c, t)| {
                    **c != conn_id
                        && matches!(self.conns.get(t).map(|c| &c.kind),
                            Some(Kind::LeaderIn { learner: Some(l), .. }) if *l == from)
                })
                .map(|(_, t)| *t)
                .collect();
            for old in older {
                self.close(old, "the learner connected again");
            }
        }
        if let Some(from) = election_in {
            let older: Vec<Token> = self
                .conns
                .iter()
                .filter(|(t, c)| {
                    **t != token
                        && matches!(c.kind, Kind::ElectionIn { from: Some(f) } if f == from)
                })
                .map(|(t, _)| *t)
                .collect();
            for old in older {
                self.close(old, "the server connected again");
            }
        }
    }

    fn close(&mut self, token: Token, reason: &'static str) {
        if let Some(conn) = self.conns.get_mut(&token) {
            if conn.closing.is_none() {
                tracing::debug!(id = self.own.id, kind = ?conn.kind, reason, "zab net: closing");
                conn.closing = Some(reason);
            }
        }
    }

    /// Drops every closing connection.
    fn reap(&mut self) {
        let closing: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| c.closing.is_some())
            .map(|(t, _)| *t)
            .collect();
        for token in closing {
            if let Some(mut conn) = self.conns.remove(&token) {
                let _ = self.poll.registry().deregister(&mut conn.stream);
                self.counters.connections_closed += 1;
                match conn.kind {
                    Kind::ElectionOut { to } if self.election_out.get(&to) == Some(&token) => {
                        self.election_out.remove(&to);
                    }
                    Kind::LeaderIn { conn: id, .. } => {
                        self.leader_in.remove(&id);
                    }
                    Kind::LearnerOut {
                        leader, recv_seq, ..
                    } if self.learner_out == Some(token) => {
                        self.learner_out = None;
                        // ZooKeeper's learner goes LOOKING as soon as an established link to
                        // its leader fails; waiting for syncLimit would stretch every
                        // fail-over. A leader that closed before it spoke (it was not
                        // leading yet) gets the learner's next resend instead.
                        let following = matches!(self.peer.role(),
                            Role::Following { leader: l, .. } | Role::Observing { leader: l, .. }
                                if l == leader);
                        if following && recv_seq > 0 {
                            tracing::info!(
                                id = self.own.id,
                                leader,
                                "zab net: the connection to the leader closed; looking"
                            );
                            self.leader_dials_unanswered = 0;
                            self.peer.step_down();
                        } else if recv_seq == 0 {
                            self.leader_unanswered(leader);
                        }
                    }
                    _ => {}
                }
            }
        }
    }
}

type Parsed = Result<Option<(usize, Option<(PeerId, Message)>)>, &'static str>;

/// The election port: the handshake, then `int len` + notification frames.
fn parse_election(
    bytes: &[u8],
    from: &mut Option<PeerId>,
    addrs: &BTreeMap<PeerId, ServerAddrs>,
    own: PeerId,
) -> Parsed {
    let be64 = |b: Option<&[u8]>| b.and_then(|b| b.try_into().ok()).map(i64::from_be_bytes);
    let be32 = |b: Option<&[u8]>| b.and_then(|b| b.try_into().ok()).map(i32::from_be_bytes);
    let Some(sender) = *from else {
        let Some(first) = be64(bytes.get(0..8)) else {
            return Ok(None);
        };
        let (sid, used) = if first >= 0 {
            (first, 8) // ZooKeeper before 3.5: the server id alone.
        } else {
            let Some(sid) = be64(bytes.get(8..16)) else {
                return Ok(None);
            };
            let Some(len) = be32(bytes.get(16..20)) else {
                return Ok(None);
            };
            let len = usize::try_from(len).map_err(|_| "negative handshake address length")?;
            if len > HANDSHAKE_ADDR_BYTES_MAX {
                return Err("handshake address too long");
            }
            if bytes.len() < 20 + len {
                return Ok(None);
            }
            (sid, 20 + len)
        };
        let sid = sid as u64;
        if sid == own || !addrs.contains_key(&sid) {
            return Err("election handshake from an unknown server");
        }
        *from = Some(sid);
        return Ok(Some((used, None)));
    };
    let Some(len) = be32(bytes.get(0..4)) else {
        return Ok(None);
    };
    let len = usize::try_from(len).map_err(|_| "negative notification length")?;
    if len > wire::NOTIFICATION_BYTES_MAX {
        return Err("notification over the size limit");
    }
    let Some(body) = bytes.get(4..4 + len) else {
        return Ok(None);
    };
    let notification = wire::decode_notification(body)
        .and_then(|n| n.to_notification())
        .map_err(|e| wire_reason(&e))?;
    Ok(Some((
        4 + len,
        Some((sender, Message::Notification(notification))),
    )))
}

/// `packet` as queued chunks: its encoding, or for a large data buffer the bytes around it
/// and the buffer itself, shared.
fn packet_chunks(packet: &wire::QuorumPacket) -> Vec<Chunk> {
    match &packet.data {
        Some(data) if data.len() >= SHARED_DATA_BYTES_MIN => {
            let (mut head, mut tail) = (Vec::new(), Vec::new());
            wire::encode_packet_head(packet, &mut head);
            wire::encode_packet_tail(packet, &mut tail);
            vec![
                Chunk::Owned(head),
                Chunk::Shared(data.clone()),
                Chunk::Owned(tail),
            ]
        }
        _ => {
            // The header, the data and the authinfo count: one allocation, no regrowth.
            let data_bytes = packet.data.as_ref().map_or(0, |d| d.len());
            let mut bytes = Vec::with_capacity(PACKET_OVERHEAD_BYTES + data_bytes);
            wire::encode_packet(packet, &mut bytes);
            vec![Chunk::Owned(bytes)]
        }
    }
}

/// A SNAP as queued chunks, the data written from where it is (a payload, a built buffer or
/// a mapped file): the bytes `packet_chunks` would queue, without `to_payload`'s copy of the
/// whole snapshot.
fn snap_chunks(snapshot: &Snapshot) -> Vec<Chunk> {
    let dataless = wire::QuorumPacket {
        kind: packet_type::SNAP,
        zxid: snapshot.zxid.0 as i64,
        data: None,
        auth: None,
    };
    let (mut head, mut tail) = (Vec::new(), Vec::new());
    let data_bytes = Some(snapshot.data.len());
    wire::encode_head(dataless.kind, dataless.zxid, data_bytes, &mut head);
    wire::encode_packet_tail(&dataless, &mut tail);
    vec![
        Chunk::Owned(head),
        Chunk::Snapshot(snapshot.data.clone()),
        Chunk::Owned(tail),
    ]
}

fn parse_packet(
    bytes: &[u8],
    data_bytes_max: usize,
) -> Result<Option<(Packet, usize)>, &'static str> {
    match wire::decode_packet(bytes, data_bytes_max) {
        Ok(None) => Ok(None),
        Ok(Some((q, used))) => {
            let packet = wire::from_quorum_packet(&q).map_err(|e| wire_reason(&e))?;
            Ok(Some((packet, used)))
        }
        Err(e) => Err(wire_reason(&e)),
    }
}

/// A `server.N` host: an IPv4 or IPv6 address as written, or a name resolved once, at
/// start, through the system resolver (/etc/hosts, DNS), its first IPv4 address preferred
/// as ZooKeeper's `InetAddress.getByName` usually returns it.
fn resolve_host(host: &str) -> Result<std::net::IpAddr, NetError> {
    use std::net::ToSocketAddrs;
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return Ok(ip);
    }
    let unresolved = || NetError::UnresolvedHost(host.to_owned());
    let addrs: Vec<SocketAddr> = (host, 0)
        .to_socket_addrs()
        .map_err(|_| unresolved())?
        .collect();
    addrs
        .iter()
        .find(|addr| addr.is_ipv4())
        .or(addrs.first())
        .map(SocketAddr::ip)
        .ok_or_else(unresolved)
}

/// A compaction waiting for a SNAP to leave (`Loop::compact_due`).
struct DeferredCompaction {
    snapshot: Snapshot,
    prepared: PreparedSnapshot,
    reply: Sender<Result<(), NetError>>,
    since: Instant,
}

/// A SNAP arriving on a learner's connection. Its data (the whole snapshot, ~200 MB for
/// 1M znodes) goes from the socket straight to where `Snapshot::data` will be: a file in the
/// store's directory, written as it arrives and then mapped (installing it is a rename), or,
/// when the store cannot make that file, a buffer in memory. No copy through the input
/// buffer and the decoder either way.
struct SnapIn {
    zxid: Zxid,
    data_bytes: usize,
    into: SnapInto,
}

enum SnapInto {
    /// The file, and the buffer reads go through on their way to it.
    File {
        file: IncomingSnapshot,
        chunk: Box<[u8]>,
    },
    Memory {
        data: Payload,
        filled: usize,
    },
}

impl SnapIn {
    /// A SNAP that starts `input` with a data length within `data_bytes_max` and is not all
    /// there yet: its data bytes so far move out of `input` (the parser takes a whole one).
    /// Its data goes to a file of `store` if there is one and it can make one.
    fn begin(
        input: &mut Vec<u8>,
        data_bytes_max: usize,
        store: Option<&FileStore>,
    ) -> Option<SnapIn> {
        // type i32, zxid i64, data length i32, data, authinfo count i32.
        let kind = i32::from_be_bytes(input.get(0..4)?.try_into().ok()?);
        let zxid = Zxid(i64::from_be_bytes(input.get(4..12)?.try_into().ok()?) as u64);
        let len = i32::from_be_bytes(input.get(12..16)?.try_into().ok()?);
        let data_bytes = usize::try_from(len).ok().filter(|&n| n <= data_bytes_max)?;
        if kind != packet_type::SNAP || input.len() >= 16 + data_bytes + 4 {
            return None;
        }
        let into = match store.map(|store| store.incoming_snapshot(zxid, data_bytes)) {
            Some(Ok(file)) => SnapInto::File {
                file,
                chunk: vec![0u8; SNAP_READ_CHUNK_BYTES.min(data_bytes)].into_boxed_slice(),
            },
            Some(Err(error)) => {
                tracing::warn!(%error, "zab net: receiving a SNAP into memory instead");
                SnapInto::memory(data_bytes)
            }
            None => SnapInto::memory(data_bytes),
        };
        let mut snap = SnapIn {
            zxid,
            data_bytes,
            into,
        };
        let arrived = input.get(16..).unwrap_or_default();
        let filled = arrived.len().min(data_bytes);
        snap.into.append(arrived.get(..filled)?).ok()?;
        input.drain(..16 + filled);
        Some(snap)
    }

    fn unfilled_bytes(&self) -> usize {
        match &self.into {
            SnapInto::File { file, .. } => {
                usize::try_from(file.missing_bytes()).unwrap_or(usize::MAX)
            }
            SnapInto::Memory { data, filled } => data.len() - filled,
        }
    }

    /// Takes the next data bytes from `source` (handed a buffer of at most the bytes still
    /// missing, it fills a prefix and says how long), through the file's chunk on the way to
    /// a file.
    ///
    /// # Errors
    /// `source`'s, or the file could not be written (logged here).
    fn fill(
        &mut self,
        source: impl FnOnce(&mut [u8]) -> std::io::Result<usize>,
    ) -> std::io::Result<usize> {
        let missing = self.unfilled_bytes();
        match &mut self.into {
            SnapInto::Memory { data, filled } => {
                let at = *filled;
                let rest = Arc::get_mut(data)
                    .and_then(|data| data.get_mut(at..))
                    .unwrap_or_default();
                let n = source(rest)?;
                *filled += n;
                Ok(n)
            }
            SnapInto::File { file, chunk } => {
                let len = missing.min(chunk.len());
                let buffer = chunk.get_mut(..len).unwrap_or_default();
                let n = source(buffer)?;
                append_to_file(file, buffer.get(..n).unwrap_or_default())?;
                Ok(n)
            }
        }
    }

    /// The SNAP packet once its data is in and `rest` holds its authinfo count (which must
    /// be 0 or -1, no ids: a SNAP is Keel-to-Keel), and the input bytes that count took.
    fn finish(
        snap_in: &mut Option<SnapIn>,
        rest: &[u8],
    ) -> Result<Option<(Packet, usize)>, &'static str> {
        let Some(count) = rest.get(..4) else {
            return Ok(None);
        };
        // An empty (0) or a null (-1, what ZooKeeper writes) authinfo vector.
        if count != [0; 4] && count != [0xff; 4] {
            return Err("a SNAP with authinfo");
        }
        let Some(snap) = snap_in.take() else {
            return Ok(None);
        };
        let snapshot = match snap.into {
            SnapInto::Memory { data, .. } => Snapshot {
                zxid: snap.zxid,
                data: data.into(),
            },
            SnapInto::File { file, .. } => file.finish().map_err(|error| {
                tracing::error!(%error, "zab net: the SNAP's file could not be finished");
                "the SNAP's file could not be finished"
            })?,
        };
        Ok(Some((Packet::Snap { snapshot }, 4)))
    }
}

impl SnapInto {
    /// Adds data bytes already read (no more than are missing).
    ///
    /// # Errors
    /// The file could not be written (logged here).
    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            SnapInto::Memory { data, filled } => {
                let at = *filled;
                let rest = Arc::get_mut(data)
                    .and_then(|data| data.get_mut(at..at + bytes.len()))
                    .ok_or_else(|| std::io::Error::other("more SNAP data than announced"))?;
                rest.copy_from_slice(bytes);
                *filled += bytes.len();
                Ok(())
            }
            SnapInto::File { file, .. } => append_to_file(file, bytes),
        }
    }

    fn memory(data_bytes: usize) -> SnapInto {
        // A zeroed allocation this large is fresh zero pages from the OS, not a memset: they
        // are faulted in as the data arrives. Unique until `finish`.
        let zeroed: Arc<[std::mem::MaybeUninit<u8>]> = Arc::new_zeroed_slice(data_bytes);
        // SAFETY: every byte is initialized to zero, a valid u8.
        let data: Payload = unsafe { zeroed.assume_init() };
        SnapInto::Memory { data, filled: 0 }
    }
}

/// Writes SNAP data bytes to their file.
///
/// # Errors
/// The file could not be written (logged here).
fn append_to_file(file: &mut IncomingSnapshot, bytes: &[u8]) -> std::io::Result<()> {
    file.append(bytes).map_err(|error| {
        tracing::error!(%error, "zab net: writing the SNAP's file failed");
        std::io::Error::other(error.to_string())
    })
}

/// The server id in a FOLLOWERINFO/OBSERVERINFO at the start of `bytes` (LearnerInfo's sid).
fn learner_id(bytes: &[u8]) -> Option<PeerId> {
    let kind = i32::from_be_bytes(bytes.get(0..4)?.try_into().ok()?);
    if kind != packet_type::FOLLOWERINFO && kind != packet_type::OBSERVERINFO {
        return None;
    }
    // type i32, zxid i64, data length i32, then LearnerInfo { long serverid; ... }.
    let len = i32::from_be_bytes(bytes.get(12..16)?.try_into().ok()?);
    if len < 8 {
        return None;
    }
    let sid = i64::from_be_bytes(bytes.get(16..24)?.try_into().ok()?);
    u64::try_from(sid).ok()
}

fn wire_reason(e: &WireError) -> &'static str {
    match e {
        WireError::ShortNotification(_) => "short notification",
        WireError::TooLarge { .. } => "message over the size limit",
        WireError::UnknownState(_) => "unknown server state",
        WireError::BadLength(_) => "bad length",
        WireError::UnknownType(_) => "unknown packet type",
        WireError::BadPayload { reason, .. } => reason,
        WireError::Trailing(_) => "trailing bytes",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "keel-zab-net-{name}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn net_config_comes_from_zoo_cfg_server_lines() {
        // myid, server.N (participants and an observer), tickTime and the limits map onto
        // the driver's config; any IPv4 address is taken, a host name is not resolved.
        let dir = temp_dir("cfg");
        std::fs::write(dir.join("myid"), "2\n").unwrap();
        let text = |host: &str| {
            format!(
                "dataDir={}\ntickTime=50\ninitLimit=10\nsyncLimit=5\n\
                 server.1=127.0.0.1:2888:3888\nserver.2=localhost:2889:3889\n\
                 server.3=127.0.0.1:2890:3890\nserver.4={host}:2891:3891:observer\n",
                dir.display()
            )
        };
        let config = crate::config::Config::parse_str(&text("127.0.0.1"), &dir).unwrap();
        let net = NetConfig::from_server_config(&config, 7).unwrap();
        assert_eq!(net.zab.id, 2);
        assert_eq!(net.zab.voters, vec![1, 2, 3]);
        assert_eq!(net.zab.observers, vec![4]);
        assert_eq!(
            (net.zab.init_limit_ticks, net.zab.sync_limit_ticks),
            (10, 5)
        );
        assert_eq!(net.tick, Duration::from_millis(50));
        assert_eq!(net.servers[1].quorum, "127.0.0.1:2889".parse().unwrap());
        assert_eq!(net.servers[3].election, "127.0.0.1:3891".parse().unwrap());
        let remote = crate::config::Config::parse_str(&text("10.0.0.4"), &dir).unwrap();
        let net = NetConfig::from_server_config(&remote, 7).unwrap();
        assert_eq!(net.servers[3].quorum, "10.0.0.4:2891".parse().unwrap());
        // Names go through the system resolver (localhost is in /etc/hosts); IPv6 is taken
        // as written; a name that does not resolve is refused at start, naming it.
        let v6 = crate::config::Config::parse_str(&text("[::1]"), &dir).unwrap();
        let net = NetConfig::from_server_config(&v6, 7).unwrap();
        assert_eq!(net.servers[3].quorum, "[::1]:2891".parse().unwrap());
        let named = crate::config::Config::parse_str(&text("zk4.invalid"), &dir).unwrap();
        let refused = NetConfig::from_server_config(&named, 7);
        assert!(
            matches!(&refused, Err(NetError::UnresolvedHost(host)) if host == "zk4.invalid"),
            "{refused:?}"
        );
        // ZooKeeper's 2 s tickTime: elections on a 100 ms tick, limits scaled to it.
        let slow = text("127.0.0.1").replace("tickTime=50", "tickTime=2000");
        let net = NetConfig::from_server_config(
            &crate::config::Config::parse_str(&slow, &dir).unwrap(),
            7,
        )
        .unwrap();
        assert_eq!(net.tick, Duration::from_millis(100));
        assert_eq!(
            (
                net.zab.init_limit_ticks,
                net.zab.sync_limit_ticks,
                net.zab.ping_interval_ticks
            ),
            (200, 100, 10)
        );
        assert_eq!(net.zab.finalize_wait_ticks, 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn election_handshake_and_learner_id_are_parsed_without_panics() {
        // Partial input asks for more bytes; unknown ids and bad lengths are errors; every
        // prefix of a valid stream and some garbage decode without a panic.
        let addrs: BTreeMap<PeerId, ServerAddrs> = (1..=3)
            .map(|id| {
                let a = SocketAddr::from(([127, 0, 0, 1], 1000 + id as u16));
                (
                    id,
                    ServerAddrs {
                        id,
                        quorum: a,
                        election: a,
                    },
                )
            })
            .collect();
        let mut hello = ELECTION_PROTOCOL_VERSION.to_be_bytes().to_vec();
        hello.extend_from_slice(&3i64.to_be_bytes());
        hello.extend_from_slice(&4i32.to_be_bytes());
        hello.extend_from_slice(b"a:10");
        for cut in 0..hello.len() {
            let mut from = None;
            assert_eq!(
                parse_election(&hello[..cut], &mut from, &addrs, 1),
                Ok(None)
            );
        }
        let mut from = None;
        assert_eq!(
            parse_election(&hello, &mut from, &addrs, 1),
            Ok(Some((24, None)))
        );
        assert_eq!(from, Some(3));
        let mut own = None;
        assert!(parse_election(&hello, &mut own, &addrs, 3).is_err());
        for garbage in [vec![0xff; 64], vec![0x7f; 64], vec![0; 3]] {
            let mut from = Some(2);
            let _ = parse_election(&garbage, &mut from, &addrs, 1);
            let _ = learner_id(&garbage);
        }
        let mut info = Vec::new();
        let packet = Packet::FollowerInfo {
            accepted_epoch: 4,
            observer: false,
        };
        wire::encode_packet(&wire::to_quorum_packet(&packet, 3), &mut info);
        assert_eq!(learner_id(&info), Some(3));
        assert_eq!(learner_id(&info[..20]), None);
    }

    /// Copies as much of `from` as fits to the start of `to` (a read); returns how much.
    fn copy_prefix(to: &mut [u8], from: &[u8]) -> usize {
        let n = to.len().min(from.len());
        to[..n].copy_from_slice(&from[..n]);
        n
    }

    /// Feeds `bytes` to a learner's SNAP path as reads of `step` bytes would: the input
    /// buffer until a SNAP header begins it, then the SNAP's own buffer, then the input.
    /// With `store`, the SNAP's data goes to a file of it.
    fn receive_in_steps(
        bytes: &[u8],
        step: usize,
        store: Option<&FileStore>,
    ) -> Result<Vec<Packet>, &'static str> {
        let (mut input, mut snap_in, mut packets) = (Vec::new(), None::<SnapIn>, Vec::new());
        let mut at = 0;
        while at < bytes.len() {
            let end = (at + step).min(bytes.len());
            match snap_in.as_mut().filter(|snap| snap.unfilled_bytes() > 0) {
                Some(snap) => {
                    let from = &bytes[at..end];
                    at += snap.fill(|buffer| Ok(copy_prefix(buffer, from))).unwrap();
                }
                None => {
                    input.extend_from_slice(&bytes[at..end]);
                    at = end;
                }
            }
            if snap_in.is_none() {
                snap_in = SnapIn::begin(&mut input, 1 << 20, store);
            }
            loop {
                let got = match snap_in.as_ref().map(SnapIn::unfilled_bytes) {
                    Some(0) => SnapIn::finish(&mut snap_in, &input)?,
                    Some(_) => None,
                    None => parse_packet(&input, 1 << 20)?,
                };
                let Some((packet, used)) = got else { break };
                input.drain(..used);
                packets.push(packet);
            }
        }
        Ok(packets)
    }

    #[test]
    fn a_snap_is_read_into_its_own_buffer_whatever_the_read_sizes() {
        // A DIFF, a SNAP of 10,000 bytes and a PROPOSAL back to back, read in pieces of
        // every size from 1 byte to all at once, come out as the packets that were sent.
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let sent = vec![
            Packet::Diff { zxid: Zxid(5) },
            Packet::Snap {
                snapshot: Snapshot {
                    zxid: Zxid(0x1_0000_0007),
                    data: Payload::from(data).into(),
                },
            },
            Packet::Proposal {
                entry: Entry {
                    zxid: Zxid(0x1_0000_0008),
                    payload: Payload::from(vec![1, 2, 3]),
                },
            },
        ];
        let mut bytes = Vec::new();
        for packet in &sent {
            wire::encode_packet(&wire::to_quorum_packet(packet, 1), &mut bytes);
        }
        for step in [
            1,
            3,
            4,
            15,
            16,
            17,
            19,
            20,
            21,
            1000,
            4096,
            10_020,
            bytes.len(),
        ] {
            assert_eq!(
                receive_in_steps(&bytes, step, None),
                Ok(sent.clone()),
                "step {step}"
            );
        }
        // A SNAP carrying authinfo is refused, not mistaken for another packet.
        let mut snap_only = Vec::new();
        wire::encode_packet(&wire::to_quorum_packet(&sent[1], 1), &mut snap_only);
        let mut tampered = snap_only[..snap_only.len() - 4].to_vec();
        tampered.extend_from_slice(&1i32.to_be_bytes());
        tampered.extend_from_slice(&[0; 8]);
        assert_eq!(
            receive_in_steps(&tampered, 4096, None),
            Err("a SNAP with authinfo")
        );
    }

    #[test]
    fn a_snap_is_written_to_its_file_as_it_arrives_and_installed_by_a_rename() {
        let dir = std::env::temp_dir().join(format!(
            "keel-zab-net-snapfile-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (mut store, _) = FileStore::open(&dir).unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 251) as u8).collect();
        let snapshot = Snapshot {
            zxid: Zxid(0x2_0000_0009),
            data: data.clone().into(),
        };
        let sent = vec![
            Packet::Snap {
                snapshot: snapshot.clone(),
            },
            Packet::Diff { zxid: Zxid(5) },
        ];
        let mut bytes = Vec::new();
        for packet in &sent {
            wire::encode_packet(&wire::to_quorum_packet(packet, 1), &mut bytes);
        }
        for step in [1, 999, 1000, 1001, 65_536, bytes.len()] {
            let got = receive_in_steps(&bytes, step, Some(&store)).unwrap();
            assert_eq!(got, sent, "step {step}");
            let Packet::Snap { snapshot: received } = &got[0] else {
                panic!("not a SNAP: {:?}", got[0]);
            };
            if step == bytes.len() {
                // Whole in one read: parsed like any packet, in memory.
                assert_eq!(received.data.file(), None);
                continue;
            }
            // The bytes are the file's: mapped, not a copy in memory.
            let file = received.data.file().unwrap().to_path_buf();
            assert_eq!(file.parent(), Some(dir.join("version-2").as_path()));
            assert_eq!(&std::fs::read(&file).unwrap()[24..], &data[..]);
            if step == 65_536 {
                store.install_snapshot(received).unwrap();
                assert!(!file.exists(), "published by renaming it");
            } else {
                drop(got);
                assert!(
                    !file.exists(),
                    "step {step}: unlinked with its last mapping"
                );
            }
        }
        // A SNAP cut off halfway leaves no file behind.
        let half = &bytes[..bytes.len() / 2];
        assert_eq!(receive_in_steps(half, 4096, Some(&store)), Ok(Vec::new()));
        let incoming = |dir: &std::path::Path| {
            std::fs::read_dir(dir.join("version-2"))
                .unwrap()
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .filter(|name| name.ends_with(".tmp"))
                .collect::<Vec<_>>()
        };
        assert_eq!(incoming(&dir), Vec::<String>::new());
        // A store that cannot make the file (here its directory is gone; a full disk in
        // life) gets the SNAP in memory, whole.
        std::fs::rename(dir.join("version-2"), dir.join("moved")).unwrap();
        let got = receive_in_steps(&bytes, 4096, Some(&store)).unwrap();
        assert_eq!(got, sent);
        let Packet::Snap { snapshot: received } = &got[0] else {
            panic!("not a SNAP: {:?}", got[0]);
        };
        assert_eq!(received.data.file(), None);
        std::fs::rename(dir.join("moved"), dir.join("version-2")).unwrap();
        // The published file is the store's snapshot after a restart.
        drop(store);
        let (_, durable) = FileStore::open(&dir).unwrap();
        assert_eq!(durable.snapshot, snapshot);
        assert_eq!(incoming(&dir), Vec::<String>::new());
        // Mapped from that file, not read: sent as a SNAP, the mapping is written as it is,
        // byte for byte what the same snapshot in memory encodes to; dropping the mapping
        // leaves the published file where it is.
        assert!(durable.snapshot.data.is_mapped());
        assert_eq!(durable.snapshot.data.file(), None);
        let queued = |snapshot: &Snapshot| -> Vec<u8> {
            snap_chunks(snapshot)
                .iter()
                .flat_map(|chunk| chunk.bytes().to_vec())
                .collect()
        };
        let mut encoded = Vec::new();
        let snap = Packet::Snap {
            snapshot: snapshot.clone(),
        };
        wire::encode_packet(&wire::to_quorum_packet(&snap, 1), &mut encoded);
        assert_eq!(queued(&durable.snapshot), encoded);
        // Likewise a built snapshot's buffer, queued as it is.
        assert_eq!(queued(&snapshot), encoded);
        drop(durable);
        assert!(dir.join("version-2").join("keel-zab.snapshot").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
