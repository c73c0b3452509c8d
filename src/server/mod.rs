//! server: wiring — pins the replica core and the client shards, connects them with bounded
//! cross-core queues, and runs until the process is stopped.
//!
//! Owns: executor threads, the replica core's driver loop (inbound queues → `Replica` →
//! commit batches to every shard), ticks, and start-up errors.
//! Layout: with N CPUs, CPU 0 of the list is the replica core and the other N-1 are shards;
//! with one CPU, the replica core and one shard are two executors on that CPU. With
//! `keel.shards=0` the one shard is a task on the replica core's executor: no thread of its
//! own, and its queues to the replica core cost no cross-thread wake-ups.

pub mod fourlw;
pub mod quorum;
pub mod stats;
mod storage;

use crate::config::Config;
use crate::io::{self, Pin, SharedReceiver, SharedSender, Signal};
use crate::replica::{CommitBatch, CommitEntry, Inbound, Now, Replica, ReplicaConfig};
use crate::shard::{serve_connection, Limits, Shard};
use crate::tree::{DataTree, TreeFigures, WatchManager};
use stats::ServerStats;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime};
use storage::Storage;

/// Bound of each shard → replica queue, in messages.
const TO_REPLICA_QUEUE_MAX: usize = 4096;
/// How long a standalone replica core polls before it parks (see `start`).
const REPLICA_SPIN_BEFORE_PARK: Duration = Duration::from_micros(100);
/// Bound of each replica → shard queue, in commit batches.
const TO_SHARD_QUEUE_MAX: usize = 256;
/// Exit status of a server whose log (standalone) or zab store (ensemble) failed:
/// EX_SOFTWARE, as `tests/faults/disk.rs` expects.
const EXIT_STORE_FAILED: i32 = 70;

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start executor {name}: {source}")]
    Executor {
        name: String,
        source: std::io::Error,
    },
    #[error("cannot read SASL users from {path}: {reason}")]
    Jaas { path: String, reason: String },
    #[error("cannot recover the write-ahead log in {dir}: {reason}")]
    Log { dir: String, reason: String },
    #[error("an executor thread panicked")]
    Panicked,
}

/// A running server, for tests and `main`.
pub struct RunningServer {
    pub client_addr: SocketAddr,
    handles: Vec<io::ExecutorJoinHandle<()>>,
}

impl RunningServer {
    /// Blocks until every executor ends.
    ///
    /// # Errors
    /// An executor thread panicked.
    pub fn join(self) -> Result<(), ServerError> {
        for handle in self.handles {
            handle.join().map_err(|_| ServerError::Panicked)?;
        }
        Ok(())
    }
}

fn now(started: Instant) -> Now {
    let wall_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let mono_ms = i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
    Now { wall_ms, mono_ms }
}

/// Starts the replica core and the shards; returns once every shard listens.
///
/// # Errors
/// A listener could not bind, an executor could not start, or the JAAS file is bad.
pub fn start(config: Config) -> Result<RunningServer, ServerError> {
    io::raise_memlock_limit();
    let config = Arc::new(config);
    let sasl_users = Arc::new(load_sasl_users(&config)?);
    let cpus = config.cpu_list();
    let pins: Vec<Pin> = if config.unpinned {
        vec![Pin::Unpinned; cpus.len().max(1)]
    } else {
        cpus.iter().map(|&cpu| Pin::Cpu(cpu)).collect()
    };
    let replica_pin = pins.first().copied().unwrap_or(Pin::Unpinned);
    // `keel.shards=0`: one shard, run on the replica core's executor (`colocated` below).
    let shard_on_replica = config.shards == Some(0);
    let shard_pins: Vec<Pin> = match config.shards {
        Some(0) => vec![replica_pin],
        Some(count) => (0..count)
            .map(|index| pins[(index + 1) % pins.len().max(1)])
            .collect(),
        None if pins.len() > 1 => pins[1..].to_vec(),
        None => vec![replica_pin],
    };
    let started = Instant::now();
    let stats = Arc::new(ServerStats::default());
    stats
        .fsync_warning_threshold_ms
        .store(config.fsync_warning_threshold_ms, Relaxed);
    let (backend, replica) = if config.is_quorum() {
        let ensemble = quorum::Ensemble::start(&config)?;
        let replica = Replica::new(replica_config(&config), DataTree::new(), now(started));
        (Backend::Ensemble(ensemble), replica)
    } else {
        let (storage, replica) = Storage::open(&config, started, &stats)?;
        (Backend::Standalone(Box::new(storage)), replica)
    };
    let mode = if matches!(backend, Backend::Ensemble(_)) {
        "ensemble"
    } else {
        "standalone"
    };
    let mut to_replica_receivers = Vec::new();
    let mut to_shard_senders = Vec::new();
    let mut handles = Vec::new();
    let (ready_tx, ready_rx) = mpsc::channel::<Result<SocketAddr, ServerError>>();
    let tree = replica.tree().clone();
    let reports: crate::shard::SharedReports = Arc::new(
        (0..shard_pins.len())
            .map(|_| std::sync::Mutex::new(crate::shard::ShardReport::default()))
            .collect(),
    );
    let exposed_zxid = Arc::new(std::sync::atomic::AtomicI64::new(tree.last_zxid()));
    let mut bind_addr = config.client_socket_addr();
    let mut colocated: Option<ShardStart> = None;
    for (index, pin) in shard_pins.iter().enumerate() {
        let (to_replica_tx, to_replica_rx) = io::cross_core_channel(TO_REPLICA_QUEUE_MAX);
        let (to_shard_tx, to_shard_rx) = io::cross_core_channel(TO_SHARD_QUEUE_MAX);
        to_replica_receivers.push(to_replica_rx);
        to_shard_senders.push(to_shard_tx);
        let context = ShardStart {
            id: u16::try_from(index).unwrap_or(u16::MAX),
            config: config.clone(),
            stats: stats.clone(),
            sasl_users: sasl_users.clone(),
            to_replica: to_replica_tx,
            from_replica: to_shard_rx,
            view: tree.clone(),
            reports: reports.clone(),
            exposed_zxid: exposed_zxid.clone(),
            bind_addr,
            ready: ready_tx.clone(),
        };
        if shard_on_replica {
            colocated = Some(context);
            continue;
        }
        let name = format!("keel-shard-{index}");
        let handle = io::spawn_executor(&name, *pin, Duration::ZERO, move || shard_main(context))
            .map_err(|source| ServerError::Executor { name, source })?;
        handles.push(handle);
        if index == 0 {
            bind_addr = wait_ready(&ready_rx)?;
        }
    }
    let replica_context = ReplicaStart {
        stats,
        inbound: to_replica_receivers,
        outbound: to_shard_senders,
        replica,
        started,
        tick_ms: u64::try_from(config.tick_time_ms).unwrap_or(2000),
    };
    // A standalone replica core waits ~100-300 µs for each fdatasync on the blocking pool;
    // spinning through that wait instead of parking took durable 1x1 setData p50 from 312-340
    // to 214-229 µs (ZooKeeper 305-338), with 32x16 unchanged within noise (benches/
    // durable_writes.sh, 3 alternating rounds). An ensemble member does not spin: three of
    // them share this VM's two vCPUs in the benchmarks and tests.
    let replica_spin = match backend {
        Backend::Standalone(_) => REPLICA_SPIN_BEFORE_PARK,
        Backend::Ensemble(_) => Duration::ZERO,
    };
    let handle = io::spawn_executor(
        "keel-replica",
        replica_pin,
        replica_spin,
        move || async move {
            if let Some(shard) = colocated {
                io::spawn_local(shard_main(shard)).detach();
            }
            match backend {
                Backend::Standalone(storage) => replica_main(replica_context, *storage).await,
                Backend::Ensemble(ensemble) => ensemble_main(replica_context, ensemble).await,
            }
        },
    )
    .map_err(|source| ServerError::Executor {
        name: "keel-replica".into(),
        source,
    })?;
    handles.push(handle);
    if shard_on_replica {
        bind_addr = wait_ready(&ready_rx)?;
    }
    drop(ready_tx);
    for _ in 1..shard_pins.len() {
        wait_ready(&ready_rx)?;
    }
    let client_addr = bind_addr;
    tracing::info!(
        %client_addr,
        shards = shard_pins.len(),
        shard_on_replica,
        replica = ?replica_pin,
        mode,
        "keel serving"
    );
    Ok(RunningServer {
        client_addr,
        handles,
    })
}

/// Waits for one shard to report that it listens (or why it cannot).
fn wait_ready(
    ready: &mpsc::Receiver<Result<SocketAddr, ServerError>>,
) -> Result<SocketAddr, ServerError> {
    match ready.recv() {
        Ok(result) => result,
        Err(_) => Err(ServerError::Panicked),
    }
}

fn load_sasl_users(config: &Config) -> Result<HashMap<String, String>, ServerError> {
    let Some(path) = config.jaas_config_path.as_ref() else {
        return Ok(HashMap::new());
    };
    match crate::auth::load_server_users(path, &config.jaas_section) {
        Ok(users) => Ok(users.unwrap_or_default()),
        Err(error) => Err(ServerError::Jaas {
            path: path.display().to_string(),
            reason: error.to_string(),
        }),
    }
}

struct ReplicaStart {
    stats: Arc<ServerStats>,
    inbound: Vec<SharedReceiver<Inbound>>,
    outbound: Vec<SharedSender<Arc<CommitBatch>>>,
    replica: Replica,
    started: Instant,
    tick_ms: u64,
}

/// What makes the replica core's batches durable.
enum Backend {
    /// The write-ahead log and snapshots of one server.
    Standalone(Box<Storage>),
    /// ZAB: a batch is durable once a quorum of the ensemble has it.
    Ensemble(quorum::Ensemble),
}

fn replica_config(config: &Config) -> ReplicaConfig {
    ReplicaConfig {
        server_id: u8::try_from(config.server_id).unwrap_or(1),
        tick_ms: i64::from(config.tick_time_ms),
        min_session_timeout_ms: config.min_session_timeout_ms,
        max_session_timeout_ms: config.max_session_timeout_ms,
        extended_types_enabled: config.extended_types_enabled,
        skip_acl: config.skip_acl,
        enforce_quota: config.enforce_quota,
        container_check_interval_ms: config.container_check_interval_ms,
        container_never_used_ms: config.container_max_never_used_interval_ms,
        container_deletes_per_minute_max: config.container_max_per_minute,
    }
}

/// The replica core: drains every shard's queue into the state machine, ticks it, and ships
/// each batch to all shards.
async fn replica_main(start: ReplicaStart, storage: Storage) {
    let ReplicaStart {
        stats,
        inbound,
        outbound,
        replica,
        started,
        tick_ms,
    } = start;
    let replica = Rc::new(RefCell::new(replica));
    let storage = Rc::new(RefCell::new(storage));
    publish_stats(&stats, replica.borrow().tree().figures(), &replica.borrow());
    let flush = Signal::new();
    let stepped = replica.clone();
    let step = move |message| stepped.borrow_mut().step(message, now(started));
    let connected = connect_shards(inbound, outbound, step, &flush).await;
    {
        let replica = replica.clone();
        let flush = flush.clone();
        let stats = stats.clone();
        let storage = storage.clone();
        io::spawn_local(async move {
            loop {
                io::sleep(Duration::from_millis((tick_ms / 2).max(10))).await;
                let now = now(started);
                storage.borrow_mut().poll(&stats);
                replica.borrow_mut().tick(now);
                publish_session_sets(&stats, &replica.borrow(), now);
                flush.notify();
            }
        })
        .detach();
    }
    let mut retired = RetiredViews::default();
    loop {
        flush.wait().await;
        // Let the other inbound queues run first, so one batch carries all that is ready.
        futures_lite::future::yield_now().await;
        retired.release();
        let batch = replica.borrow_mut().seal_batch();
        let Some(mut batch) = batch else { continue };
        storage
            .borrow_mut()
            .batch_sealed(&replica.borrow(), batch.txns.len());
        // While this batch syncs, the inbound tasks keep stepping the replica core: the next
        // batch carries all that arrived meanwhile (pipelined group commit).
        storage::make_durable(&storage, std::mem::take(&mut batch.txns), &stats).await;
        publish_stats(&stats, batch.figures, &replica.borrow());
        if opens_or_closes_sessions(&batch) {
            publish_session_sets(&stats, &replica.borrow(), now(started));
        }
        if !ship(&connected, batch, &mut retired).await {
            return;
        }
    }
}

/// Views the replica core shipped, held until every shard (and read) has let go of them, so
/// that each is dropped here, on the replica core's thread. Dropped on a shard's thread
/// instead, an old version's blocks decrement their nodes' counts there and are freed there,
/// into the allocator's cross-thread free lists, and the nodes' lines move to that core.
/// Measured under the ensemble's setData load: dropping old versions took 8.2% of the three
/// servers' CPU samples on the shards' threads, 5.8% here.
#[derive(Default)]
struct RetiredViews {
    views: VecDeque<DataTree>,
}

/// Shipped views held at most; past it the oldest is let go (its last holder frees it).
const RETIRED_VIEWS_MAX: usize = 256;

impl RetiredViews {
    fn hold(&mut self, view: DataTree) {
        if self.views.len() >= RETIRED_VIEWS_MAX {
            self.views.pop_front();
        }
        self.views.push_back(view);
    }

    /// Drops, here, every held view nobody else holds any more.
    fn release(&mut self) {
        self.views.retain(|view| !view.is_sole_view());
    }
}

/// Sends `batch` to every shard; false once a shard has stopped (the replica core stops).
/// Its view, if it has one, is held in `retired` first, to be dropped on this thread once
/// the shards let go.
async fn ship(
    connected: &[io::ConnectedSender<Arc<CommitBatch>>],
    batch: CommitBatch,
    retired: &mut RetiredViews,
) -> bool {
    if let Some(view) = &batch.view {
        retired.hold(view.clone());
    }
    let batch = Arc::new(batch);
    for sender in connected {
        if sender.send(batch.clone()).await.is_err() {
            tracing::error!("a shard stopped; the replica core stops");
            return false;
        }
    }
    true
}

/// Starts a task per shard queue that hands each message to `step` and notifies `flush`,
/// then connects the queues to the shards.
async fn connect_shards<S>(
    inbound: Vec<SharedReceiver<Inbound>>,
    outbound: Vec<SharedSender<Arc<CommitBatch>>>,
    step: S,
    flush: &Signal,
) -> Vec<io::ConnectedSender<Arc<CommitBatch>>>
where
    S: Fn(Inbound) + Clone + 'static,
{
    for receiver in inbound {
        let step = step.clone();
        let flush = flush.clone();
        io::spawn_local(async move {
            let receiver = receiver.connect().await;
            while let Some(message) = receiver.recv().await {
                step(message);
                flush.notify();
            }
        })
        .detach();
    }
    // Shards connect their sender before their receiver; connect ours in the same order
    // (inbound tasks above are already waiting) or both sides wait on each other.
    let mut connected = Vec::new();
    for sender in outbound {
        connected.push(sender.connect().await);
    }
    connected
}

/// Builds and publishes an ensemble snapshot on a blocking thread; the core is told when it
/// ended (a failure is logged: the next one is due after snapCount more txns).
fn spawn_snapshot_job(
    core: &Rc<RefCell<quorum::QuorumCore>>,
    stats: &Arc<ServerStats>,
    job: quorum::SnapshotJob,
) {
    let core = core.clone();
    let stats = stats.clone();
    io::spawn_local(async move {
        let began = Instant::now();
        let zxid = job.zxid();
        // The blocking pool's thread shares the replica core's CPU; the build does not.
        let built = io::spawn_blocking(move || io::run_unpinned("keel-snap-build", || job.run()));
        match built.await {
            Ok(bytes) => {
                stats
                    .snapshot_time_ms
                    .record(u64::try_from(began.elapsed().as_millis()).unwrap_or(0));
                stats.last_snapshot_bytes.store(bytes, Relaxed);
                stats.last_snapshot_zxid.store(zxid, Relaxed);
            }
            Err(error) => tracing::warn!(%error, "ensemble snapshot failed"),
        }
        core.borrow_mut().snapshot_done();
    })
    .detach();
}

/// The replica core of a server in an ensemble: shards' requests and the zab driver's
/// events step the `QuorumCore`; committed batches go to every shard.
async fn ensemble_main(start: ReplicaStart, ensemble: quorum::Ensemble) {
    let ReplicaStart {
        stats,
        inbound,
        outbound,
        replica,
        started,
        tick_ms,
    } = start;
    let core = Rc::new(RefCell::new(quorum::QuorumCore::new(
        &ensemble,
        replica,
        stats.clone(),
    )));
    core.borrow().publish();
    let flush = Signal::new();
    let stepped = core.clone();
    let step = move |message| stepped.borrow_mut().replica.step(message, now(started));
    let connected = connect_shards(inbound, outbound, step, &flush).await;
    {
        let core = core.clone();
        let flush = flush.clone();
        let stats = stats.clone();
        let events = ensemble.events();
        io::spawn_local(async move {
            let mut taken = Vec::with_capacity(quorum::EVENTS_PER_WAKE_MAX);
            loop {
                events.next(&mut taken).await;
                if taken.is_empty() {
                    let failure = core.borrow().driver_failure();
                    stop_on_driver_failure(failure);
                    return;
                }
                let now = now(started);
                let job = {
                    let mut borrowed = core.borrow_mut();
                    for event in taken.drain(..) {
                        borrowed.on_event(event, now);
                    }
                    // A learner waiting for a fresh SNAP should not wait for the next tick.
                    borrowed.snapshot_due()
                };
                if let Some(job) = job {
                    spawn_snapshot_job(&core, &stats, job);
                }
                flush.notify();
                // Let the flush ship this wake's batch before the next wake adds to it: a
                // catch-up's ~100k commits are then batches of `EVENTS_PER_WAKE_MAX`
                // whose memory comes back, not one batch of all of them (every byte of it
                // freshly faulted in; half of a 1M catch-up's replay time).
                futures_lite::future::yield_now().await;
            }
        })
        .detach();
    }
    {
        let core = core.clone();
        let flush = flush.clone();
        let stats = stats.clone();
        io::spawn_local(async move {
            loop {
                io::sleep(Duration::from_millis((tick_ms / 2).max(10))).await;
                let now = now(started);
                let job = {
                    let mut core = core.borrow_mut();
                    core.replica.tick(now);
                    core.report_touches();
                    core.publish_quorum();
                    publish_session_sets(&stats, &core.replica, now);
                    core.snapshot_due()
                };
                if let Some(job) = job {
                    spawn_snapshot_job(&core, &stats, job);
                }
                flush.notify();
            }
        })
        .detach();
    }
    let mut retired = RetiredViews::default();
    loop {
        flush.wait().await;
        futures_lite::future::yield_now().await;
        retired.release();
        let batches = {
            let mut core = core.borrow_mut();
            core.seal_and_release();
            core.take_outgoing()
        };
        if batches.is_empty() {
            continue;
        }
        core.borrow().publish();
        for batch in batches {
            if !ship(&connected, batch, &mut retired).await {
                return;
            }
        }
    }
}

/// The zab driver stopped on its own: its store (log, epochs or snapshot) failed, a full
/// disk say, or its epoll did. It cannot be trusted to go on, and a server outside its
/// ensemble must not serve reads from its last view for ever: the process stops, as a
/// standalone server does when its log fails (status 70, the reason on stderr), and its
/// next start recovers from what is durable and syncs with the leader. `None` (stopped by
/// its owner) returns.
fn stop_on_driver_failure(failure: Option<String>) {
    let Some(reason) = failure else {
        tracing::error!("the ensemble driver stopped; this server no longer serves");
        return;
    };
    tracing::error!(%reason, "the ensemble driver failed; stopping (restart to recover)");
    eprintln!("keel: the ensemble driver failed: {reason}; stopping without retrying");
    std::process::exit(EXIT_STORE_FAILED);
}

/// Publishes `figures` of the durable tree the shards are about to get.
fn publish_stats(stats: &ServerStats, figures: TreeFigures, replica: &Replica) {
    stats.last_zxid.store(figures.last_zxid, Relaxed);
    stats.node_count.store(figures.node_count, Relaxed);
    stats
        .approximate_data_size
        .store(figures.approximate_data_size, Relaxed);
    stats
        .ephemerals_count
        .store(figures.ephemerals_count, Relaxed);
    stats
        .session_count
        .store(replica.sessions().len() as u64, Relaxed);
}

fn opens_or_closes_sessions(batch: &CommitBatch) -> bool {
    batch.entries.iter().any(|entry| {
        matches!(
            entry,
            CommitEntry::SessionOpened { .. }
                | CommitEntry::Txn {
                    closed_session: Some(_),
                    ..
                }
        )
    })
}

/// Copies the session table's expiry buckets (bounded) for `dump`, with wall-clock times.
fn publish_session_sets(stats: &ServerStats, replica: &Replica, now: Now) {
    let mut listed = 0;
    let mut sets = Vec::new();
    for (deadline_mono_ms, ids) in replica.sessions().deadline_buckets() {
        let mut ids: Vec<i64> = ids
            .iter()
            .copied()
            .take(stats::SESSIONS_DUMP_MAX.saturating_sub(listed))
            .collect();
        ids.sort_unstable();
        listed += ids.len();
        sets.push((now.wall_ms + (deadline_mono_ms - now.mono_ms), ids));
    }
    if let Ok(mut stored) = stats.session_sets.lock() {
        *stored = sets;
    }
}

struct ShardStart {
    id: u16,
    config: Arc<Config>,
    stats: Arc<ServerStats>,
    sasl_users: Arc<HashMap<String, String>>,
    to_replica: SharedSender<Inbound>,
    from_replica: SharedReceiver<Arc<CommitBatch>>,
    view: DataTree,
    reports: crate::shard::SharedReports,
    exposed_zxid: Arc<std::sync::atomic::AtomicI64>,
    /// Where to listen. Shard 0 binds the configured address first; the others bind the
    /// address it got (so `clientPort=0` gives every shard the same port).
    bind_addr: SocketAddr,
    ready: mpsc::Sender<Result<SocketAddr, ServerError>>,
}

fn shard_limits(config: &Config) -> Limits {
    Limits {
        frame_bytes_max: config.jute_max_buffer_bytes,
        outstanding_max: config.max_outstanding_per_session,
        global_outstanding_max: i64::from(config.global_outstanding_limit),
        out_bytes_max: 4 << 20,
        connections_max: config.connections_per_shard_max,
        connections_per_ip_max: config.max_client_cnxns,
    }
}

/// A client shard: listens (SO_REUSEPORT), serves connections, applies the commit stream.
async fn shard_main(start: ShardStart) {
    let addr = start.bind_addr;
    let listener = match io::TcpListener::bind(addr) {
        Ok(listener) => listener,
        Err(error) => {
            let _ = start.ready.send(Err(ServerError::Listen {
                addr,
                source: std::io::Error::other(error.to_string()),
            }));
            return;
        }
    };
    let local_addr = listener.local_addr().unwrap_or(addr);
    // Listening is all `start` waits for: connections queue in the backlog until the accept
    // loop below runs, after the cross-core queues are connected.
    let _ = start.ready.send(Ok(local_addr));
    let start_zxid = start.view.last_zxid();
    let shard = Rc::new(Shard {
        id: start.id,
        limits: shard_limits(&start.config),
        config: start.config.clone(),
        stats: start.stats,
        sasl_users: start.sasl_users,
        to_replica: start.to_replica.connect().await,
        view: RefCell::new(start.view),
        watches: RefCell::new(WatchManager::default()),
        conns: RefCell::new(HashMap::new()),
        sessions: RefCell::new(HashMap::new()),
        touched: RefCell::new(HashSet::new()),
        next_conn: Cell::new(1),
        stopping: Cell::new(false),
        stop_signal: Signal::new(),
        reports: start.reports,
        crst_seen: Cell::new(0),
        srst_seen: Cell::new(0),
        read_latency_us: RefCell::new(crate::shard::latency_histogram()),
        update_latency_us: RefCell::new(crate::shard::latency_histogram()),
        exposed_zxid: start.exposed_zxid,
        applied_zxid: Cell::new(start_zxid),
        view_asked: Cell::new(false),
        lagging_conns: RefCell::new(Vec::new()),
    });
    let from_replica = start.from_replica.connect().await;
    {
        let shard = shard.clone();
        io::spawn_local(async move {
            while let Some(batch) = from_replica.recv().await {
                if shard.apply_batch(&batch)
                    && shard.to_replica.send(Inbound::WantView).await.is_err()
                {
                    return;
                }
            }
        })
        .detach();
    }
    spawn_touch_reporter(shard.clone(), start.config.tick_time_ms);
    spawn_report_publisher(shard.clone());
    loop {
        match listener.accept().await {
            Ok(stream) => {
                io::spawn_local(serve_connection(shard.clone(), stream)).detach();
            }
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                io::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Once a second: publishes this shard's connections and watches for the four-letter words
/// answered on other shards (only when there are other shards), and applies `crst`.
fn spawn_report_publisher(shard: Rc<Shard>) {
    io::spawn_local(async move {
        loop {
            io::sleep(Duration::from_secs(1)).await;
            shard.reset_connection_stats_if_asked();
            shard.reset_server_stats_if_asked();
            if shard.reports.len() > 1 {
                shard.publish_report();
            }
        }
    })
    .detach();
}

/// Reports the sessions with traffic to the replica core a few times per tick, so their
/// expiry moves forward without a cross-core message per packet.
fn spawn_touch_reporter(shard: Rc<Shard>, tick_time_ms: i32) {
    let interval_ms = u64::try_from(tick_time_ms / 4)
        .unwrap_or(250)
        .clamp(10, 250);
    io::spawn_local(async move {
        loop {
            io::sleep(Duration::from_millis(interval_ms)).await;
            let session_ids = shard.take_touched();
            if session_ids.is_empty() {
                continue;
            }
            if shard
                .to_replica
                .send(Inbound::Touch { session_ids })
                .await
                .is_err()
            {
                return;
            }
        }
    })
    .detach();
}

#[cfg(test)]
mod tests {
    use super::{RetiredViews, RETIRED_VIEWS_MAX};
    use crate::tree::DataTree;

    #[test]
    fn a_retired_view_is_dropped_by_the_replica_core_once_nobody_else_holds_it() {
        let mut retired = RetiredViews::default();
        let shipped = DataTree::new();
        let shard_view = shipped.clone();
        retired.hold(shipped);
        retired.release();
        assert_eq!(retired.views.len(), 1, "a shard still holds the view");
        drop(shard_view);
        retired.release();
        assert!(retired.views.is_empty());

        // Views the shards keep are held up to the bound, no further.
        let shard_views: Vec<DataTree> = (0..RETIRED_VIEWS_MAX + 10)
            .map(|_| {
                let view = DataTree::new();
                retired.hold(view.clone());
                view
            })
            .collect();
        retired.release();
        assert_eq!(retired.views.len(), RETIRED_VIEWS_MAX);
        assert!(!retired.views[0].is_sole_view());
        drop(shard_views);
        retired.release();
        assert!(retired.views.is_empty());
    }
}
