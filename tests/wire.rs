//! Byte-level tests of the client protocol against an in-process server on 127.0.0.1.

mod common;

use common::{read_frame, Client};
use keel::config::Config;
use keel::proto::jute::Reader;
use keel::proto::records::{encode, ConnectRequest};
use keel::proto::{op, Stat};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::OnceLock;
use std::time::Duration;

/// One server for the whole file: unpinned, one shard, an ephemeral port. Tests run in
/// parallel and one churns thousands of connections from 127.0.0.1, so the per-IP cap
/// (maxClientCnxns) is off here.
fn server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| start_server(&[]))
}

/// A second server whose globalOutstandingLimit is 1: every pipelined request beyond the
/// first waits for the server to stop reading, then resume. Its shard runs on the replica
/// core's executor (`keel.shards=0`), where both ends of that wait share one thread.
fn throttled_server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| start_server(&["globalOutstandingLimit=1", "keel.shards=0"]))
}

/// A server whose one shard is a task on the replica core's executor (`keel.shards=0`).
fn colocated_server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| start_server(&["keel.shards=0"]))
}

fn start_server(extra: &[&str]) -> SocketAddr {
    let mut config = Config::embedded_default();
    let base = [
        "clientPort=0",
        "keel.unpinned=true",
        "keel.shards=1",
        "4lw.commands.whitelist=*",
        "tickTime=200",
        "minSessionTimeout=400",
        "maxClientCnxns=0",
        "preAllocSize=4096",
    ];
    for pair in base.iter().chain(extra) {
        config.apply_override(pair).expect("override");
    }
    config
        .apply_override(&format!("dataDir={}", temp_data_dir().display()))
        .expect("dataDir");
    let server = keel::server::start(config).expect("server starts");
    let addr = server.client_addr;
    std::thread::spawn(move || server.join());
    addr
}

/// A fresh data directory under the system's temp dir, one per server.
fn temp_data_dir() -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("keel-wire-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn unique(name: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("/{name}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

#[test]
fn session_timeout_is_clamped_to_twenty_ticks() {
    // A client asking for 30 s gets maxSessionTimeout = 20 x tickTime (200 ms) = 4 s.
    assert_eq!(Client::connect_to(server()).timeout_ms, 4000);
}

#[test]
fn create_then_get_data_returns_the_bytes_and_stat() {
    // A created node reads back with its data and a Stat whose zxids match the create.
    let mut client = Client::connect_to(server());
    let path = unique("node");
    let (err, body) = client.create(&path, b"hello", 0);
    assert_eq!(err, 0);
    let mut r = Reader::new(&body);
    assert_eq!(r.read_ustring().unwrap(), Some(path.as_str()));
    let created = Stat::read(&mut r).unwrap();
    assert_eq!(created.version, 0);
    assert_eq!(created.czxid, created.mzxid);
    assert_eq!(created.czxid, created.pzxid);
    assert_eq!(created.data_length, 5);
    let xid = client.send(op::GET_DATA, |w| encode::path_watch(w, &path, false));
    let (reply_xid, zxid, err, body) = client.recv();
    assert_eq!((reply_xid, err), (xid, 0));
    assert!(zxid >= created.czxid);
    let mut r = Reader::new(&body);
    assert_eq!(r.read_buffer().unwrap(), Some(&b"hello"[..]));
    assert_eq!(Stat::read(&mut r).unwrap(), created);
}

#[test]
fn pipelined_read_sees_the_sessions_earlier_write() {
    for addr in [server(), colocated_server()] {
        pipelined_read_sees_the_sessions_earlier_write_on(addr);
    }
}

fn pipelined_read_sees_the_sessions_earlier_write_on(addr: SocketAddr) {
    // A getData sent right behind a setData, in the same TCP write, sees the new value.
    let mut client = Client::connect_to(addr);
    let path = unique("fifo");
    assert_eq!(client.create(&path, b"v0", 0).0, 0);
    let mut out = Vec::new();
    for round in 1..=20 {
        let value = format!("v{round}");
        encode::request(&mut out, 1000 + round * 2, op::SET_DATA, |w| {
            encode::set_data(w, &path, value.as_bytes(), -1)
        });
        encode::request(&mut out, 1001 + round * 2, op::GET_DATA, |w| {
            encode::path_watch(w, &path, false)
        });
    }
    client.stream.write_all(&out).unwrap();
    for round in 1..=20 {
        let (xid, _, err, _) = client.recv();
        assert_eq!(
            (xid, err),
            (1000 + round * 2, 0),
            "replies in request order"
        );
        let (xid, _, err, body) = client.recv();
        assert_eq!((xid, err), (1001 + round * 2, 0));
        let mut r = Reader::new(&body);
        let expected = format!("v{round}");
        assert_eq!(r.read_buffer().unwrap(), Some(expected.as_bytes()));
        assert_eq!(Stat::read(&mut r).unwrap().version, round);
    }
}

#[test]
fn data_watch_fires_once_for_another_sessions_write() {
    for addr in [server(), colocated_server()] {
        data_watch_fires_once_for_another_sessions_write_on(addr);
    }
}

fn data_watch_fires_once_for_another_sessions_write_on(addr: SocketAddr) {
    // A one-shot data watch delivers NodeDataChanged for the first change and not the second.
    let mut watcher = Client::connect_to(addr);
    let mut writer = Client::connect_to(addr);
    let path = unique("watched");
    assert_eq!(writer.create(&path, b"a", 0).0, 0);
    let xid = watcher.send(op::GET_DATA, |w| encode::path_watch(w, &path, true));
    assert_eq!(watcher.recv().0, xid);
    for value in [&b"b"[..], b"c"] {
        let xid = writer.send(op::SET_DATA, |w| encode::set_data(w, &path, value, -1));
        assert_eq!(writer.recv().0, xid);
    }
    let (xid, zxid, err, body) = watcher.recv();
    assert_eq!(
        (xid, zxid, err),
        (-1, -1, 0),
        "a notification, zxid -1 as in 3.8"
    );
    let mut r = Reader::new(&body);
    assert_eq!(r.read_i32().unwrap(), 3, "NodeDataChanged");
    assert_eq!(r.read_i32().unwrap(), 3, "SyncConnected");
    assert_eq!(r.read_ustring().unwrap(), Some(path.as_str()));
    let ping = watcher.send(op::PING, |_| {});
    let _ = ping;
    let (xid, _, _, _) = watcher.recv();
    assert_eq!(
        xid, -2,
        "only the ping reply follows: the watch was one-shot"
    );
}

#[test]
fn garbage_and_oversized_frames_close_only_their_connection() {
    // Bad frames close the sender's connection; a healthy session keeps working throughout.
    let mut healthy = Client::connect_to(server());
    let path = unique("survivor");
    assert_eq!(healthy.create(&path, b"ok", 0).0, 0);
    let bad_inputs: Vec<Vec<u8>> = vec![
        0x7fff_ffffu32.to_be_bytes().to_vec(),
        (-5i32).to_be_bytes().to_vec(),
        vec![0, 0, 0, 8, 1, 2, 3],
        vec![0, 0, 0, 3, 0xde, 0xad, 0xbe],
    ];
    for bytes in bad_inputs {
        let mut bad = TcpStream::connect(server()).unwrap();
        bad.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        bad.write_all(&bytes).unwrap();
        let _ = bad.shutdown(std::net::Shutdown::Write);
        let mut sink = Vec::new();
        let _ = bad.read_to_end(&mut sink);
        let xid = healthy.send(op::EXISTS, |w| encode::path_watch(w, &path, false));
        let (reply_xid, _, err, _) = healthy.recv();
        assert_eq!((reply_xid, err), (xid, 0));
    }
    // A garbage request on an open session closes that session's connection.
    let mut victim = Client::connect_to(server());
    victim.stream.write_all(&[0, 0, 0, 2, 0xff, 0xff]).unwrap();
    let mut sink = Vec::new();
    let read = victim.stream.read_to_end(&mut sink);
    assert!(matches!(read, Ok(0)) || read.is_err() || sink.is_empty());
    let xid = healthy.send(op::EXISTS, |w| encode::path_watch(w, &path, false));
    assert_eq!(healthy.recv().0, xid);
}

#[test]
fn ruok_answers_imok_and_closes() {
    // The four-letter word ruok is answered on the client port.
    let mut stream = TcpStream::connect(server()).unwrap();
    stream.write_all(b"ruok").unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    assert_eq!(text, "imok");
}

#[test]
fn resumed_session_keeps_its_ephemerals() {
    // Reconnecting with id and password keeps the session; a wrong password is refused.
    let mut first = Client::connect_to(server());
    let path = unique("eph");
    assert_eq!(first.create(&path, b"", 1).0, 0);
    let password = keel::session::session_password(first.session_id);
    let session_id = first.session_id;
    drop(first);
    for (password, accepted) in [(password, true), ([7u8; 16], false)] {
        let mut stream = TcpStream::connect(server()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut out = Vec::new();
        ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 0,
            timeout_ms: 4000,
            session_id,
            password: &password,
            read_only: Some(false),
        }
        .encode(&mut out);
        stream.write_all(&out).unwrap();
        let reply = read_frame(&mut stream).unwrap();
        let mut r = Reader::new(&reply);
        r.read_i32().unwrap();
        let timeout_ms = r.read_i32().unwrap();
        let resumed_id = r.read_i64().unwrap();
        if accepted {
            assert_eq!((timeout_ms, resumed_id), (4000, session_id));
        } else {
            assert_eq!(
                (timeout_ms, resumed_id),
                (0, 0),
                "expired/invalid session answer"
            );
        }
    }
    let mut other = Client::connect_to(server());
    let xid = other.send(op::EXISTS, |w| encode::path_watch(w, &path, false));
    let (reply_xid, _, err, body) = other.recv();
    assert_eq!((reply_xid, err), (xid, 0));
    let stat = Stat::read(&mut Reader::new(&body)).unwrap();
    assert_eq!(stat.ephemeral_owner, session_id);
}

#[test]
fn a_healthy_session_sees_no_error_while_others_misbehave() {
    // While attackers send garbage, oversized prefixes, half frames and churn 2000 connections,
    // a well-behaved client's writes and reads all succeed and read back what it wrote.
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    // The healthy session is connected before the storm starts.
    let mut client = Client::connect_to(server());
    let path = unique("steady");
    assert_eq!(client.create(&path, b"0", 0).0, 0);
    let done = Arc::new(AtomicBool::new(false));
    let mut attackers = Vec::new();
    for kind in 0..4u32 {
        let done = done.clone();
        attackers.push(std::thread::spawn(move || {
            let mut count = 0u32;
            while !done.load(Ordering::Relaxed) && count < 500 {
                count += 1;
                let Ok(mut stream) = TcpStream::connect(server()) else {
                    continue;
                };
                let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
                let bytes: Vec<u8> = match kind {
                    0 => (0..64u32).map(|i| (i * 37 + count) as u8).collect(),
                    1 => 0x4000_0000u32.to_be_bytes().to_vec(),
                    2 => {
                        let mut half = 45i32.to_be_bytes().to_vec();
                        half.extend_from_slice(&[0u8; 20]);
                        half
                    }
                    _ => Vec::new(),
                };
                let _ = stream.write_all(&bytes);
                drop(stream);
            }
            count
        }));
    }
    for round in 1..=300 {
        let value = round.to_string();
        let xid = client.send(op::SET_DATA, |w| {
            encode::set_data(w, &path, value.as_bytes(), -1)
        });
        let (reply_xid, _, err, _) = client.recv();
        assert_eq!((reply_xid, err), (xid, 0), "setData round {round}");
        let xid = client.send(op::GET_DATA, |w| encode::path_watch(w, &path, false));
        let (reply_xid, _, err, body) = client.recv();
        assert_eq!((reply_xid, err), (xid, 0), "getData round {round}");
        let data = Reader::new(&body)
            .read_buffer()
            .unwrap()
            .map(<[u8]>::to_vec);
        assert_eq!(data, Some(value.into_bytes()));
    }
    done.store(true, Ordering::Relaxed);
    let churned: u32 = attackers.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(churned > 0);
    // The server still accepts new sessions once the dropped connections have drained.
    std::thread::sleep(Duration::from_millis(300));
    let mut late = Client::connect_to(server());
    let xid = late.send(op::EXISTS, |w| encode::path_watch(w, &path, false));
    assert_eq!(late.recv().0, xid);
}

#[test]
fn global_outstanding_limit_throttles_without_losing_order() {
    // With globalOutstandingLimit=1, 200 pipelined writes and reads still all complete, in order.
    let mut client = Client::connect_to(throttled_server());
    let path = unique("throttled");
    assert_eq!(client.create(&path, b"0", 0).0, 0);
    let mut out = Vec::new();
    for round in 1..=100 {
        let value = round.to_string();
        encode::request(&mut out, round * 2, op::SET_DATA, |w| {
            encode::set_data(w, &path, value.as_bytes(), round - 1)
        });
        encode::request(&mut out, round * 2 + 1, op::EXISTS, |w| {
            encode::path_watch(w, &path, false)
        });
    }
    client.stream.write_all(&out).unwrap();
    for round in 1..=100 {
        let (xid, _, err, _) = client.recv();
        assert_eq!(
            (xid, err),
            (round * 2, 0),
            "setData with version {}",
            round - 1
        );
        let (xid, _, err, body) = client.recv();
        assert_eq!((xid, err), (round * 2 + 1, 0));
        assert_eq!(Stat::read(&mut Reader::new(&body)).unwrap().version, round);
    }
}

#[test]
fn notifications_skip_nodes_the_watcher_cannot_read() {
    // A recursive watcher without READ on a node gets no event for it, but does for a
    // readable sibling created afterwards (ZooKeeper 3.8.4+, ZOOKEEPER-4799).
    let mut owner = Client::connect_to(server());
    let mut watcher = Client::connect_to(server());
    let root = unique("acl-watch");
    assert_eq!(owner.create(&root, b"", 0).0, 0);
    let xid = watcher.send(op::ADD_WATCH, |w| {
        w.write_string(&root);
        w.write_i32(1);
    });
    assert_eq!(watcher.recv().0, xid);
    owner.send(op::AUTH, |w| {
        w.write_i32(0);
        w.write_string("digest");
        w.write_buffer(Some(b"owner:secret"));
    });
    assert_eq!(owner.recv().0, -4);
    let digest = keel::tree::digest_id("owner:secret");
    let private_acl = vec![keel::proto::Acl::new(31, "digest", &digest)];
    let private = format!("{root}/private");
    let public = format!("{root}/public");
    let xid = owner.send(op::CREATE, |w| {
        encode::create(w, &private, b"p", &private_acl, 0)
    });
    assert_eq!(owner.recv().0, xid);
    assert_eq!(owner.create(&public, b"", 0).0, 0);
    let (xid, _, _, body) = watcher.recv();
    assert_eq!(xid, -1);
    let mut r = Reader::new(&body);
    assert_eq!(r.read_i32().unwrap(), 1, "NodeCreated");
    r.read_i32().unwrap();
    assert_eq!(r.read_ustring().unwrap(), Some(public.as_str()));
}

/// A server with three client shards on one port (SO_REUSEPORT spreads connections).
fn sharded_server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| start_server(&["keel.shards=3"]))
}

#[test]
fn a_read_on_any_shard_sees_the_writes_acknowledged_before_it() {
    // Commit batches carry a view only when a shard asks for one (it holds a read until one
    // comes), so runs of writes nobody reads leave every shard's view behind. A read sent
    // after a write's reply, on any shard, must still see that write, and its reply's zxid
    // must not go back behind the write's.
    let addr = sharded_server();
    let mut writer = Client::connect_to(addr);
    let mut readers: Vec<Client> = (0..6).map(|_| Client::connect_to(addr)).collect();
    let path = unique("acked");
    assert_eq!(writer.create(&path, b"v0", 0).0, 0);
    let mut version = 0;
    for round in 1..=20 {
        let mut write_zxid = 0;
        for _ in 0..5 {
            version += 1;
            let value = format!("v{version}");
            let xid = writer.send(op::SET_DATA, |w| {
                encode::set_data(w, &path, value.as_bytes(), -1)
            });
            let (reply_xid, zxid, err, _) = writer.recv();
            assert_eq!((reply_xid, err), (xid, 0));
            write_zxid = zxid;
        }
        for reader in &mut readers {
            let xid = reader.send(op::GET_DATA, |w| encode::path_watch(w, &path, false));
            let (reply_xid, zxid, err, body) = reader.recv();
            assert_eq!((reply_xid, err), (xid, 0), "round {round}");
            assert!(
                zxid >= write_zxid,
                "round {round}: read at {zxid:#x} < {write_zxid:#x}"
            );
            let mut r = Reader::new(&body);
            let expected = format!("v{version}");
            assert_eq!(r.read_buffer().unwrap(), Some(expected.as_bytes()));
            assert_eq!(Stat::read(&mut r).unwrap().version, version);
        }
    }
}

fn four_letter_word(addr: SocketAddr, word: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.write_all(word.as_bytes()).unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn four_letter_words_list_every_shards_watches() {
    // Watches set by sessions spread over three shards all show in wchc and wchs, whichever
    // shard answers (other shards' figures are at most a second old).
    let addr = sharded_server();
    let mut clients: Vec<Client> = (0..9).map(|_| Client::connect_to(addr)).collect();
    let mut expected = Vec::new();
    for client in &mut clients {
        let path = unique("sharded-watch");
        let xid = client.send(op::EXISTS, |w| encode::path_watch(w, &path, true));
        assert_eq!(client.recv().0, xid);
        expected.push((format!("{:#x}", client.session_id), path));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let wchc = four_letter_word(addr, "wchc");
        let all_listed = expected
            .iter()
            .all(|(session, path)| wchc.contains(&format!("{session}\n\t{path}\n")));
        if all_listed {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "wchc lacks watches:\n{wchc}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let wchs = four_letter_word(addr, "wchs");
    let total: usize = wchs
        .lines()
        .find_map(|line| line.strip_prefix("Total watches:"))
        .and_then(|count| count.trim().parse().ok())
        .unwrap_or(0);
    assert!(total >= expected.len(), "{wchs}");
    let cons = four_letter_word(addr, "cons");
    for client in &clients {
        assert!(
            cons.contains(&format!("sid={:#x}", client.session_id)),
            "{cons}"
        );
    }
}

#[test]
fn mntr_latency_summaries_count_reads_and_writes() {
    // After writes and reads, mntr's updatelatency and readlatency summaries (HdrHistograms)
    // have counted them, with ZooKeeper's key names.
    let addr = throttled_server();
    let mut client = Client::connect_to(addr);
    let path = unique("mntr");
    assert_eq!(client.create(&path, b"x", 0).0, 0);
    for _ in 0..5 {
        let xid = client.send(op::GET_DATA, |w| encode::path_watch(w, &path, false));
        assert_eq!(client.recv().0, xid);
    }
    let mntr = four_letter_word(addr, "mntr");
    let value = |key: &str| -> u64 {
        mntr.lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix('\t'))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{key} missing in:\n{mntr}"))
    };
    assert!(value("zk_cnt_updatelatency") >= 1);
    assert!(value("zk_cnt_readlatency") >= 5);
    assert!(value("zk_p999_readlatency") >= value("zk_p50_readlatency"));
}

/// A server that reaps containers and TTL nodes every 100 ms, with TTL nodes enabled.
fn reaping_server() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        start_server(&[
            "extendedTypesEnabled=true",
            "znode.container.checkIntervalMs=100",
        ])
    })
}

fn exists(client: &mut Client, path: &str) -> bool {
    let xid = client.send(op::EXISTS, |w| encode::path_watch(w, path, false));
    let (reply_xid, _, err, _) = client.recv();
    assert_eq!(reply_xid, xid);
    err == 0
}

fn wait_gone(client: &mut Client, path: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while exists(client, path) {
        assert!(
            std::time::Instant::now() < deadline,
            "{path} was never reaped"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn empty_containers_and_expired_ttl_nodes_are_reaped() {
    // A container whose last child went is deleted, one that still has a child is kept,
    // and a TTL node is deleted once its TTL has passed without a change.
    let mut client = Client::connect_to(reaping_server());
    let used = unique("container");
    let kept = unique("container-kept");
    for container in [&used, &kept] {
        let xid = client.send(op::CREATE_CONTAINER, |w| {
            encode::create(w, container, b"", &keel::proto::open_acl_unsafe(), 4)
        });
        assert_eq!(client.recv().2, 0, "createContainer {xid}");
        assert_eq!(client.create(&format!("{container}/child"), b"", 0).0, 0);
    }
    let xid = client.send(op::DELETE, |w| {
        encode::path_version(w, &format!("{used}/child"), -1)
    });
    assert_eq!(client.recv().0, xid);
    wait_gone(&mut client, &used);
    assert!(exists(&mut client, &kept), "a container with a child stays");
    let ttl = unique("ttl");
    let xid = client.send(op::CREATE_TTL, |w| {
        encode::create(w, &ttl, b"t", &keel::proto::open_acl_unsafe(), 5);
        w.write_i64(200);
    });
    let (reply_xid, _, err, _) = client.recv();
    assert_eq!((reply_xid, err), (xid, 0));
    assert!(exists(&mut client, &ttl));
    wait_gone(&mut client, &ttl);
}
