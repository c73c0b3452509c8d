//! zab_net: three `zab::net::Driver`s on 127.0.0.1 — election, 1,000 commits through the
//! leader and through a follower, leader loss and return, and a rejoin from a torn and from
//! an empty store. Every wait is bounded; every driver is stopped when its test ends
//! (`Cluster`'s `Drop`), and its data directory removed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel::zab::net::{Driver, Limits, NetConfig, NetError, ServerAddrs};
use keel::zab::{Apply, Config, Payload, PeerId, ProposeError, Role, Zxid};

const TICK: Duration = Duration::from_millis(20);
const WAIT_MAX: Duration = Duration::from_secs(10);
const PROPOSE_ANSWER_MAX: Duration = Duration::from_secs(2);
const BATCH: usize = 100;

type Applied = Arc<Mutex<Vec<(Zxid, Vec<u8>)>>>;

struct Node {
    driver: Option<Driver>,
    applied: Applied,
    dir: PathBuf,
}

struct Cluster {
    servers: Vec<ServerAddrs>,
    /// Server ids above this one are observers.
    voters_max: PeerId,
    limits: Limits,
    nodes: BTreeMap<PeerId, Node>,
    root: PathBuf,
}

fn free_loopback_ports(count: usize) -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    listeners.iter().map(|l| l.local_addr().unwrap()).collect()
}

fn zab_config(id: PeerId, voters: Vec<PeerId>, observers: Vec<PeerId>) -> Config {
    let mut config = Config::new(id, voters, observers);
    config.election_timeout_ticks = 4;
    config.election_timeout_ticks_max = 16;
    config.election_jitter_ticks = 3;
    config.finalize_wait_ticks = 2;
    config.init_limit_ticks = 50;
    config.sync_limit_ticks = 25;
    config.ping_interval_ticks = 2;
    config
}

impl Cluster {
    fn start(name: &str, count: u64) -> Cluster {
        Cluster::start_with(name, count, 0, Limits::default())
    }

    fn start_with(name: &str, voters: u64, observers: u64, limits: Limits) -> Cluster {
        let count = voters + observers;
        let ports = free_loopback_ports(2 * count as usize);
        let servers = (1..=count)
            .map(|id| ServerAddrs {
                id,
                quorum: ports[2 * (id as usize - 1)],
                election: ports[2 * (id as usize - 1) + 1],
            })
            .collect();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let root = std::env::temp_dir().join(format!(
            "keel-zab-net-{name}-{}-{nanos}",
            std::process::id()
        ));
        let mut cluster = Cluster {
            servers,
            voters_max: voters,
            limits,
            nodes: BTreeMap::new(),
            root,
        };
        for id in 1..=count {
            let dir = cluster.root.join(format!("server{id}"));
            cluster.nodes.insert(
                id,
                Node {
                    driver: None,
                    applied: Applied::default(),
                    dir,
                },
            );
            cluster.boot(id);
        }
        cluster
    }

    /// Starts (or restarts) `id` on its data directory with a fresh applied sequence.
    fn boot(&mut self, id: PeerId) {
        let (voters, observers): (Vec<PeerId>, Vec<PeerId>) = self
            .servers
            .iter()
            .map(|s| s.id)
            .partition(|id| *id <= self.voters_max);
        let node = self.nodes.get_mut(&id).unwrap();
        assert!(node.driver.is_none());
        let applied = Applied::default();
        let sink = applied.clone();
        let config = NetConfig {
            zab: zab_config(id, voters, observers),
            servers: self.servers.clone(),
            tick: TICK,
            data_dir: node.dir.clone(),
            force_sync: true,
            seed: id * 7919 + node.dir.as_os_str().len() as u64,
            limits: self.limits,
        };
        let on_apply = Box::new(move |apply: Apply| match apply {
            Apply::Entry(e) => sink.lock().unwrap().push((e.zxid, e.payload.to_vec())),
            // A snapshot replaces the state: here, the applied sequence it encodes.
            Apply::Snapshot(s) => *sink.lock().unwrap() = decode_state(&s.data),
        });
        node.driver = Some(Driver::start(config, on_apply).unwrap());
        node.applied = applied;
    }

    fn stop(&mut self, id: PeerId) {
        if let Some(driver) = self.nodes.get_mut(&id).unwrap().driver.take() {
            driver.stop();
        }
    }

    fn driver(&self, id: PeerId) -> &Driver {
        self.nodes[&id].driver.as_ref().unwrap()
    }

    fn applied(&self, id: PeerId) -> Vec<(Zxid, Vec<u8>)> {
        self.nodes[&id].applied.lock().unwrap().clone()
    }

    fn running(&self) -> Vec<PeerId> {
        self.nodes
            .iter()
            .filter(|(_, n)| n.driver.is_some())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Waits until one running server leads (serving, epoch above `epoch_above`) and every
    /// other running server follows it and serves.
    fn await_leader(&self, epoch_above: u32) -> (PeerId, u32) {
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            let running = self.running();
            let statuses: Vec<_> = running
                .iter()
                .map(|id| (*id, self.driver(*id).status()))
                .collect();
            for (id, s) in &statuses {
                assert!(s.fatal.is_none(), "server {id} failed: {:?}", s.fatal);
            }
            let leaders: Vec<_> = statuses
                .iter()
                .filter(|(_, s)| s.role == Role::Leading { serving: true })
                .collect();
            if let [(leader, status)] = leaders.as_slice() {
                let epoch = status.leader_epoch.unwrap_or(0);
                let followers_ok = statuses.iter().all(|(id, s)| {
                    let expected = if *id > self.voters_max {
                        Role::Observing {
                            leader: *leader,
                            serving: true,
                        }
                    } else {
                        Role::Following {
                            leader: *leader,
                            serving: true,
                        }
                    };
                    id == leader || s.role == expected
                });
                if followers_ok && epoch > epoch_above {
                    return (*leader, epoch);
                }
            }
            assert!(
                Instant::now() < deadline,
                "no single serving leader within {WAIT_MAX:?}: {statuses:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Submits `payloads` through `via`, retrying refusals until the deadline.
    fn submit(&self, via: PeerId, payloads: &[Vec<u8>]) {
        let deadline = Instant::now() + WAIT_MAX;
        for payload in payloads {
            loop {
                let result = self
                    .driver(via)
                    .propose(Payload::from(payload.clone()), PROPOSE_ANSWER_MAX);
                match result {
                    Ok(_) => break,
                    Err(NetError::Propose(
                        ProposeError::NotServing | ProposeError::QueueFull(_),
                    ))
                    | Err(NetError::Busy | NetError::Timeout(_)) => {
                        assert!(Instant::now() < deadline, "server {via} kept refusing");
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(e) => panic!("propose through {via}: {e}"),
                }
            }
        }
    }

    /// Waits until every running server applied at least `count` entries.
    fn await_applied(&self, count: usize) {
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            let lens: Vec<(PeerId, usize)> = self
                .running()
                .iter()
                .map(|id| (*id, self.applied(*id).len()))
                .collect();
            if lens.iter().all(|(_, n)| *n >= count) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not all applied {count} within {WAIT_MAX:?}: {lens:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until every running server applied all of `payloads`.
    fn await_contains(&self, payloads: &[Vec<u8>]) {
        let deadline = Instant::now() + WAIT_MAX;
        loop {
            let missing: Vec<PeerId> = self
                .running()
                .into_iter()
                .filter(|id| !contains_all(&self.applied(*id), payloads))
                .collect();
            if missing.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "servers {missing:?} did not apply a batch within {WAIT_MAX:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Submits `count` payloads tagged `tag` through `via` in batches, each batch committed
    /// everywhere before the next (the leader's pipeline never fills, so no forwarded
    /// REQUEST is dropped).
    fn commit(&self, via: PeerId, tag: &str, count: usize) -> Vec<Vec<u8>> {
        self.commit_padded(via, tag, count, 0)
    }

    /// `commit` with each payload padded to at least `bytes`.
    fn commit_padded(&self, via: PeerId, tag: &str, count: usize, bytes: usize) -> Vec<Vec<u8>> {
        let payloads: Vec<Vec<u8>> = (0..count)
            .map(|i| {
                let mut payload = format!("{tag}-{i}").into_bytes();
                let pad = bytes.saturating_sub(payload.len());
                payload.extend(std::iter::repeat_n(b'.', pad));
                payload
            })
            .collect();
        for chunk in payloads.chunks(BATCH) {
            self.submit(via, chunk);
            self.await_contains(chunk);
        }
        payloads
    }

    /// Every running server applied exactly the same sequence, zxids strictly increasing;
    /// returns it.
    fn assert_same_sequence(&self) -> Vec<(Zxid, Vec<u8>)> {
        let running = self.running();
        let reference = self.applied(running[0]);
        assert!(
            reference.windows(2).all(|w| w[0].0 < w[1].0),
            "zxids increase"
        );
        for id in &running[1..] {
            let other = self.applied(*id);
            assert_eq!(
                other.len(),
                reference.len(),
                "server {id} applied a different count"
            );
            assert!(
                other == reference,
                "server {id} applied a different sequence"
            );
        }
        reference
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(driver) = node.driver.take() {
                driver.stop();
            }
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// The test's state machine state: the applied sequence, `zxid u64 | len u32 | payload`
/// each.
fn encode_state(applied: &[(Zxid, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (zxid, payload) in applied {
        out.extend_from_slice(&zxid.0.to_be_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(payload);
    }
    out
}

fn decode_state(mut bytes: &[u8]) -> Vec<(Zxid, Vec<u8>)> {
    let mut applied = Vec::new();
    while bytes.len() >= 12 {
        let zxid = Zxid(u64::from_be_bytes(bytes[..8].try_into().unwrap()));
        let len = u32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize;
        applied.push((zxid, bytes[12..12 + len].to_vec()));
        bytes = &bytes[12 + len..];
    }
    applied
}

fn contains_all(sequence: &[(Zxid, Vec<u8>)], payloads: &[Vec<u8>]) -> bool {
    let applied: std::collections::HashSet<&Vec<u8>> = sequence.iter().map(|(_, p)| p).collect();
    payloads.iter().all(|p| applied.contains(p))
}

#[test]
fn three_peers_elect_one_leader_and_commit_a_thousand_in_one_order() {
    // One leader, two followers; 500 writes to the leader and 500 forwarded by a follower
    // are applied by all three, once each, in the same order.
    let started = Instant::now();
    let cluster = Cluster::start("commit", 3);
    let (leader, _) = cluster.await_leader(0);
    let follower = cluster
        .running()
        .into_iter()
        .find(|id| *id != leader)
        .unwrap();
    let direct = cluster.commit(leader, "leader", 500);
    let forwarded = cluster.commit(follower, "follower", 500);
    let sequence = cluster.assert_same_sequence();
    assert_eq!(sequence.len(), 1000, "each write applied exactly once");
    assert!(contains_all(&sequence, &direct) && contains_all(&sequence, &forwarded));
    for id in cluster.running() {
        let status = cluster.driver(id).status();
        assert_eq!(status.violations, 0, "server {id}: {status:?}");
        assert_eq!(status.counters.decode_errors, 0, "server {id}: {status:?}");
    }
    eprintln!("commit test took {:?}", started.elapsed());
}

#[test]
fn a_lost_leader_is_replaced_and_catches_up_when_it_returns() {
    // The leader stops mid-stream; the two others elect a leader of a higher epoch and keep
    // committing; nothing the old leader applied is lost; it restarts on its data directory,
    // syncs (DIFF or TRUNC) and applies the same sequence.
    let started = Instant::now();
    let mut cluster = Cluster::start("failover", 3);
    let (old_leader, old_epoch) = cluster.await_leader(0);
    let first = cluster.commit(old_leader, "before", 200);
    // A few more in flight when the leader goes: they may or may not survive.
    let in_flight: Vec<Vec<u8>> = (0..20)
        .map(|i| format!("flight-{i}").into_bytes())
        .collect();
    cluster.submit(old_leader, &in_flight);
    cluster.stop(old_leader);
    let seen_by_old = cluster.applied(old_leader);
    assert!(contains_all(&seen_by_old, &first));

    let (new_leader, new_epoch) = cluster.await_leader(old_epoch);
    assert_ne!(new_leader, old_leader);
    assert!(new_epoch > old_epoch);
    let after = cluster.commit(new_leader, "after", 200);
    let survivors = cluster.assert_same_sequence();
    assert!(
        survivors.starts_with(&seen_by_old),
        "a committed entry was lost"
    );
    assert!(contains_all(&survivors, &after));

    cluster.boot(old_leader);
    let (leader, epoch) = cluster.await_leader(old_epoch);
    assert_eq!(
        (leader, epoch),
        (new_leader, new_epoch),
        "the returning server follows"
    );
    cluster.await_applied(survivors.len());
    let counters = cluster.driver(old_leader).status().counters;
    assert!(
        counters.syncs_diff + counters.syncs_trunc >= 1 && counters.syncs_snap == 0,
        "the returning server synced by DIFF or TRUNC: {counters:?}"
    );
    eprintln!(
        "failover: the old leader synced with {} DIFF, {} TRUNC",
        counters.syncs_diff, counters.syncs_trunc
    );
    let more = cluster.commit(new_leader, "returned", 100);
    let sequence = cluster.assert_same_sequence();
    assert!(sequence.starts_with(&survivors));
    assert!(contains_all(&sequence, &more));
    eprintln!("failover test took {:?}", started.elapsed());
}

#[test]
fn a_follower_rejoins_from_a_torn_and_from_an_empty_store() {
    // A follower whose log lost its last bytes, and later one whose data directory is gone,
    // rejoins, syncs and applies the same sequence as the others.
    let started = Instant::now();
    let mut cluster = Cluster::start("rejoin", 3);
    let (leader, epoch) = cluster.await_leader(0);
    let follower = cluster
        .running()
        .into_iter()
        .find(|id| *id != leader)
        .unwrap();
    cluster.commit(leader, "first", 200);

    cluster.stop(follower);
    let log = keel::zab::store::FileStore::log_path(&cluster.nodes[&follower].dir);
    let len = std::fs::metadata(&log).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
    file.set_len(len - 5).unwrap(); // Tears the last record.
    drop(file);
    cluster.boot(follower);
    assert_eq!(cluster.await_leader(0), (leader, epoch));
    cluster.commit(leader, "torn", 100);
    assert_eq!(cluster.assert_same_sequence().len(), 300);

    cluster.stop(follower);
    std::fs::remove_dir_all(&cluster.nodes[&follower].dir).unwrap();
    cluster.boot(follower);
    assert_eq!(cluster.await_leader(0), (leader, epoch));
    cluster.commit(follower, "empty", 100);
    assert_eq!(cluster.assert_same_sequence().len(), 400);
    eprintln!("rejoin test took {:?}", started.elapsed());
}

/// Sends `bytes` to `addr` and expects the server to close the connection.
fn expect_closed_after(addr: SocketAddr, bytes: &[u8]) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, WAIT_MAX).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("{addr}: the server did not close the connection: {e}"),
        }
        assert!(Instant::now() < deadline, "{addr}: still open");
    }
}

#[test]
fn malformed_input_closes_only_that_connection() {
    // Garbage on either port closes that one connection (counted as a decode error); the
    // server neither panics nor stops, and the cluster keeps committing in one order.
    let started = Instant::now();
    let cluster = Cluster::start("garbage", 3);
    let (leader, _) = cluster.await_leader(0);
    cluster.commit(leader, "before", 50);
    let target = cluster.servers[0];
    let hello = |sid: i64| {
        let mut b = (-65536i64).to_be_bytes().to_vec();
        b.extend_from_slice(&sid.to_be_bytes());
        b.extend_from_slice(&9i32.to_be_bytes());
        b.extend_from_slice(b"127.0.0.1");
        b
    };
    // Election port: an unknown server id; a member's id then a negative frame length; a
    // frame over the notification limit; a notification too short to be one.
    expect_closed_after(target.election, &hello(99));
    for frame in [-1i32, 1 << 30, 3] {
        let mut bytes = hello(3);
        bytes.extend_from_slice(&frame.to_be_bytes());
        bytes.extend_from_slice(&[0; 3]);
        expect_closed_after(target.election, &bytes);
    }
    // Quorum port: a PING before FOLLOWERINFO; a data length over the packet limit; a
    // FOLLOWERINFO from an unknown server.
    let mut ping = 5i32.to_be_bytes().to_vec();
    ping.extend_from_slice(&0i64.to_be_bytes());
    ping.extend_from_slice(&(-1i32).to_be_bytes());
    ping.extend_from_slice(&0i32.to_be_bytes());
    expect_closed_after(target.quorum, &ping);
    let mut huge = 11i32.to_be_bytes().to_vec();
    huge.extend_from_slice(&0i64.to_be_bytes());
    huge.extend_from_slice(&i32::MAX.to_be_bytes());
    expect_closed_after(target.quorum, &huge);
    let mut stranger = 11i32.to_be_bytes().to_vec();
    stranger.extend_from_slice(&0i64.to_be_bytes());
    stranger.extend_from_slice(&20i32.to_be_bytes());
    stranger.extend_from_slice(&99i64.to_be_bytes());
    stranger.extend_from_slice(&[0; 12]);
    stranger.extend_from_slice(&0i32.to_be_bytes());
    expect_closed_after(target.quorum, &stranger);

    let deadline = Instant::now() + WAIT_MAX;
    loop {
        // The status is published just after the loop closed the last connection.
        let status = cluster.driver(target.id).status();
        assert!(status.fatal.is_none());
        if status.counters.decode_errors >= 7 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "every bad connection is counted: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (leader, _) = cluster.await_leader(0);
    cluster.commit(leader, "after", 50);
    assert_eq!(cluster.assert_same_sequence().len(), 100);
    eprintln!("garbage test took {:?}", started.elapsed());
}

/// A blocking connection to `addr` (127.0.0.1) whose receive buffer is fixed at 4 KiB, so
/// the kernel's receive autotuning (up to tcp_rmem's maximum) cannot absorb what a server
/// sends to a client that does not read.
fn connect_with_small_receive_buffer(addr: SocketAddr) -> std::net::TcpStream {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(v4) = addr else {
        panic!("loopback IPv4 only")
    };
    assert!(v4.ip().is_loopback());
    // SAFETY: plain socket calls on a descriptor this function owns; the sockaddr_in and
    // the int outlive the calls that read them.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket");
        let stream = std::net::TcpStream::from_raw_fd(fd);
        let size: libc::c_int = 4096;
        let set = libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
        assert_eq!(set, 0, "SO_RCVBUF");
        let mut sin: libc::sockaddr_in = std::mem::zeroed();
        sin.sin_family = libc::AF_INET as libc::sa_family_t;
        sin.sin_port = v4.port().to_be();
        sin.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
        let connected = libc::connect(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        );
        assert_eq!(connected, 0, "connect {addr}");
        stream
    }
}

#[test]
fn a_learner_that_never_reads_overflows_its_queue_and_is_cut_off() {
    // A client posing as a stopped follower registers (FOLLOWERINFO, ACKEPOCH) and never
    // reads: the leader's sync stream overflows that connection's send queue, which is
    // closed and counted; the real follower then returns and the cluster keeps one order.
    use keel::zab::wire::{encode_packet, to_quorum_packet};
    use keel::zab::Packet;
    use std::io::{Read, Write};
    let started = Instant::now();
    let limits = Limits {
        send_queue_bytes_max: 256 * 1024,
        ..Limits::default()
    };
    let mut cluster = Cluster::start_with("overflow", 3, 0, limits);
    let (leader, _) = cluster.await_leader(0);
    let posed = cluster
        .running()
        .into_iter()
        .find(|id| *id != leader)
        .unwrap();
    cluster.stop(posed);
    let big = vec![b'x'; 16 * 1024];
    let deadline = Instant::now() + WAIT_MAX;
    for batch in 0..20 {
        let payloads: Vec<Vec<u8>> = (0..10)
            .map(|i| [format!("big-{batch}-{i}-").into_bytes(), big.clone()].concat())
            .collect();
        cluster.submit(leader, &payloads);
        cluster.await_contains(&payloads);
        assert!(Instant::now() < deadline);
    }
    let send = |stream: &mut std::net::TcpStream, packet: Packet| {
        let mut bytes = Vec::new();
        encode_packet(&to_quorum_packet(&packet, posed), &mut bytes);
        stream.write_all(&bytes).unwrap();
    };
    let quorum = cluster.servers[leader as usize - 1].quorum;
    let mut stream = connect_with_small_receive_buffer(quorum);
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let info = Packet::FollowerInfo {
        accepted_epoch: 0,
        observer: false,
    };
    send(&mut stream, info);
    // As a learner does: wait for LEADERINFO (the first packet back) before ACKEPOCH.
    let mut head = Vec::new();
    let mut chunk = [0u8; 64];
    for _ in 0..100 {
        if keel::zab::wire::decode_packet(&head, 1024)
            .unwrap()
            .is_some()
        {
            break;
        }
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "the leader closed the connection");
        head.extend_from_slice(&chunk[..n]);
    }
    let (leader_info, _) = keel::zab::wire::decode_packet(&head, 1024)
        .unwrap()
        .unwrap();
    assert_eq!(leader_info.kind, keel::zab::wire::packet_type::LEADERINFO);
    let ack = Packet::AckEpoch {
        current_epoch: Some(0),
        last_zxid: Zxid::ZERO,
    };
    send(&mut stream, ack);
    let deadline = Instant::now() + WAIT_MAX;
    while cluster
        .driver(leader)
        .status()
        .counters
        .send_queue_overflows
        == 0
    {
        assert!(
            Instant::now() < deadline,
            "the leader never cut the silent learner off"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Now reading finds the stream end after what the kernel had buffered.
    let mut sink = vec![0u8; 256 * 1024];
    let mut received_bytes = 0usize;
    for _ in 0..10_000 {
        match stream.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => received_bytes += n,
        }
    }
    assert!(received_bytes < 200 * 16 * 1024, "the stream was cut short");
    drop(stream);

    cluster.boot(posed);
    assert_eq!(cluster.await_leader(0).0, leader);
    cluster.commit(posed, "after", 20);
    assert_eq!(cluster.assert_same_sequence().len(), 220);
    eprintln!("overflow test took {:?}", started.elapsed());
}

#[test]
fn a_returning_leader_truncates_what_it_never_committed() {
    // The leader logs writes after both followers stopped (no quorum: never committed), then
    // stops too. The followers return and elect a leader of a higher epoch that commits
    // more; the old leader returns, is told to TRUNC, and applies exactly the new history:
    // none of its orphaned writes appear anywhere.
    let started = Instant::now();
    let mut cluster = Cluster::start("trunc", 3);
    let (old_leader, old_epoch) = cluster.await_leader(0);
    cluster.commit(old_leader, "committed", 100);
    let followers: Vec<PeerId> = cluster
        .running()
        .into_iter()
        .filter(|id| *id != old_leader)
        .collect();
    for id in &followers {
        cluster.stop(*id);
    }
    let orphans: Vec<Vec<u8>> = (0..5).map(|i| format!("orphan-{i}").into_bytes()).collect();
    for orphan in &orphans {
        let proposed = cluster
            .driver(old_leader)
            .propose(Payload::from(orphan.clone()), PROPOSE_ANSWER_MAX);
        assert!(
            matches!(proposed, Ok(keel::zab::Proposed::Local(_))),
            "the leader has not noticed yet: {proposed:?}"
        );
    }
    let deadline = Instant::now() + WAIT_MAX;
    while cluster.driver(old_leader).status().last_zxid.counter() < 105 {
        assert!(Instant::now() < deadline, "the orphans were not logged");
        std::thread::sleep(Duration::from_millis(5));
    }
    cluster.stop(old_leader);

    for id in &followers {
        cluster.boot(*id);
    }
    let (new_leader, new_epoch) = cluster.await_leader(old_epoch);
    cluster.commit(new_leader, "new", 50);
    cluster.boot(old_leader);
    assert_eq!(cluster.await_leader(old_epoch), (new_leader, new_epoch));
    cluster.await_applied(150);
    let counters = cluster.driver(old_leader).status().counters;
    assert!(counters.syncs_trunc >= 1, "synced by TRUNC: {counters:?}");
    let sequence = cluster.assert_same_sequence();
    assert_eq!(sequence.len(), 150);
    assert!(
        sequence.iter().all(|(_, p)| !orphans.contains(p)),
        "an uncommitted write was applied"
    );
    eprintln!("trunc test took {:?}", started.elapsed());
}

#[test]
fn an_observer_learns_every_commit_and_forwards_writes() {
    // Three voters and one observer (OBSERVERINFO, INFORM on the wire): the observer applies
    // the same sequence, including writes it forwarded itself; it observes, never leads.
    let started = Instant::now();
    let cluster = Cluster::start_with("observer", 3, 1, Limits::default());
    let (leader, _) = cluster.await_leader(0);
    assert_ne!(leader, 4, "an observer never leads");
    cluster.commit(leader, "voter", 100);
    cluster.commit(4, "observer", 100);
    assert_eq!(cluster.assert_same_sequence().len(), 200);
    eprintln!("observer test took {:?}", started.elapsed());
}

#[test]
fn a_wiped_follower_is_sent_the_leaders_snapshot() {
    // The leader compacts its log into a snapshot of what it applied; a follower whose data
    // directory is gone rejoins by SNAP, installs it and applies what follows; the old
    // leader restarts from its own snapshot plus log. Every server ends with one sequence.
    // The snapshot is ~13 MB: its data arrives in many reads over several loop turns.
    let started = Instant::now();
    let mut cluster = Cluster::start("snap", 3);
    let (leader, epoch) = cluster.await_leader(0);
    let follower = cluster
        .running()
        .into_iter()
        .find(|id| *id != leader)
        .unwrap();
    cluster.commit_padded(leader, "first", 200, 64 * 1024);
    cluster.stop(follower);
    let applied = cluster.applied(leader);
    let zxid = applied.last().unwrap().0;
    let beyond = keel::zab::Snapshot {
        zxid: Zxid(zxid.0 + 1),
        data: Vec::new().into(),
    };
    assert!(matches!(
        cluster.driver(leader).compact(beyond, PROPOSE_ANSWER_MAX),
        Err(NetError::BadCompaction(_))
    ));
    let snapshot = keel::zab::Snapshot {
        zxid,
        data: encode_state(&applied).into(),
    };
    cluster
        .driver(leader)
        .compact(snapshot, PROPOSE_ANSWER_MAX)
        .unwrap();
    cluster.commit(leader, "second", 50);

    std::fs::remove_dir_all(&cluster.nodes[&follower].dir).unwrap();
    cluster.boot(follower);
    assert_eq!(cluster.await_leader(0), (leader, epoch));
    cluster.commit(follower, "third", 50);
    let counters = cluster.driver(follower).status().counters;
    assert!(counters.syncs_snap >= 1, "synced by SNAP: {counters:?}");
    let sequence = cluster.assert_same_sequence();
    assert_eq!(sequence.len(), 300);

    cluster.stop(leader);
    let (new_leader, _) = cluster.await_leader(epoch);
    cluster.commit(new_leader, "fourth", 50);
    cluster.boot(leader);
    cluster.await_leader(epoch);
    cluster.await_applied(350);
    let sequence = cluster.assert_same_sequence();
    assert_eq!(sequence.len(), 350);
    eprintln!("snap test took {:?}", started.elapsed());
}

#[test]
fn a_followerinfo_reaching_a_looking_server_is_held_not_closed() {
    // A learner that decided for a server before that server decided itself sends its
    // FOLLOWERINFO to a LOOKING server: the connection is held for the election's end, not
    // closed (the learner would only dial again on its next resend, ~100 ms into a
    // fail-over). One of a configured voter's id, to a server left alone and so LOOKING.
    let mut cluster = Cluster::start("held-info", 3);
    cluster.await_leader(0);
    let alone = cluster.servers[0];
    for id in [2, 3] {
        cluster.stop(id);
    }
    let deadline = Instant::now() + WAIT_MAX;
    while cluster.driver(alone.id).status().role != Role::Looking {
        assert!(Instant::now() < deadline, "a server without a quorum looks");
        std::thread::sleep(Duration::from_millis(10));
    }
    use std::io::{Read, Write};
    let mut info = 11i32.to_be_bytes().to_vec(); // FOLLOWERINFO
    info.extend_from_slice(&0i64.to_be_bytes());
    info.extend_from_slice(&20i32.to_be_bytes());
    info.extend_from_slice(&2i64.to_be_bytes()); // LearnerInfo: server 2,
    info.extend_from_slice(&[0; 12]); // protocol and config versions.
    info.extend_from_slice(&0i32.to_be_bytes()); // no authinfo
    let mut stream = std::net::TcpStream::connect_timeout(&alone.quorum, WAIT_MAX).unwrap();
    stream.write_all(&info).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    // Closed at once before; held now, for as long as the server stays LOOKING (here
    // 25 ticks, well past a learner's resend).
    let held_until = Instant::now() + TICK * 25;
    let mut buf = [0u8; 64];
    while Instant::now() < held_until {
        match stream.read(&mut buf) {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            other => panic!("the held FOLLOWERINFO's connection ended: {other:?}"),
        }
    }
    assert_eq!(cluster.driver(alone.id).status().role, Role::Looking);
}
