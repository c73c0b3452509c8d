//! The real `keel` binary killed with SIGKILL and restarted on the same data directory:
//! acknowledged writes, versions, multi results and sessions come back from the log.

mod common;

use common::Client;
use keel::proto::jute::Reader;
use keel::proto::records::encode;
use keel::proto::{op, open_acl_unsafe, Stat};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A keel process on 127.0.0.1, killed (by PID) when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

fn start(data_dir: &Path, port: u16) -> Server {
    start_with(data_dir, port, "")
}

/// `start` with extra zoo.cfg lines.
fn start_with(data_dir: &Path, port: u16, extra: &str) -> Server {
    let config = data_dir.join("zoo.cfg");
    std::fs::write(
        &config,
        format!(
            "tickTime=500\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
             maxClientCnxns=0\npreAllocSize=4096\nkeel.unpinned=true\n\
             4lw.commands.whitelist=*\n{extra}",
            data_dir.display()
        ),
    )
    .expect("write zoo.cfg");
    let child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn keel");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    // Owned from here on: a failed start still kills and reaps the process (Drop).
    let server = Server { child, addr };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(mut stream) = TcpStream::connect(addr) {
            let mut answer = String::new();
            if stream.write_all(b"ruok").is_ok()
                && stream.read_to_string(&mut answer).is_ok()
                && answer == "imok"
            {
                return server;
            }
        }
        assert!(Instant::now() < deadline, "keel did not answer ruok");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn kill_9(mut server: Server) {
    // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
    unsafe {
        libc::kill(server.child.id() as i32, libc::SIGKILL);
    }
    let _ = server.child.wait();
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keel-restart-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn get_data(client: &mut Client, path: &str) -> (i32, Option<Vec<u8>>, Stat) {
    let xid = client.send(op::GET_DATA, |w| encode::path_watch(w, path, false));
    let (reply_xid, _, err, body) = client.recv();
    assert_eq!(reply_xid, xid);
    if err != 0 {
        return (err, None, Stat::default());
    }
    let mut r = Reader::new(&body);
    let data = r.read_buffer().unwrap().map(<[u8]>::to_vec);
    (err, data, Stat::read(&mut r).unwrap())
}

#[test]
fn acknowledged_writes_survive_kill_9() {
    // Every write acknowledged before SIGKILL is there after restart, with its version; a
    // failed multi left nothing; a resumed session still owns its ephemeral.
    let dir = temp_dir("ack");
    let port = free_port();
    let server = start(&dir, port);
    let mut client = Client::connect_to(server.addr);
    assert_eq!(client.create("/app", b"v0", 0).0, 0);
    for round in 1..=50 {
        let value = format!("v{round}");
        let xid = client.send(op::SET_DATA, |w| {
            encode::set_data(w, "/app", value.as_bytes(), round - 1)
        });
        assert_eq!(client.recv().0, xid);
    }
    for index in 0..20 {
        assert_eq!(client.create("/app/seq-", &[index], 2).0, 0);
    }
    assert_eq!(client.create("/app/eph", b"mine", 1).0, 0);
    let xid = client.send(op::MULTI, |w| {
        encode::multi_header(w, op::CREATE, false, -1);
        encode::create(w, "/half", b"x", &open_acl_unsafe(), 0);
        encode::multi_header(w, op::CHECK, false, -1);
        encode::path_version(w, "/app", 999);
        encode::multi_header(w, -1, true, -1);
    });
    assert_eq!(client.recv().0, xid);
    let session_id = client.session_id;
    kill_9(server);

    let server = start(&dir, port);
    let mut reader = Client::connect_to(server.addr);
    let (err, data, stat) = get_data(&mut reader, "/app");
    assert_eq!(err, 0);
    assert_eq!(data.as_deref(), Some(&b"v50"[..]));
    assert_eq!(stat.version, 50);
    assert_eq!(
        stat.num_children, 21,
        "20 sequential nodes and the ephemeral"
    );
    assert_eq!(
        get_data(&mut reader, "/half").0,
        -101,
        "the failed multi created nothing"
    );
    let (err, _, stat) = get_data(&mut reader, "/app/eph");
    assert_eq!((err, stat.ephemeral_owner), (0, session_id));
    let (err, data, _) = get_data(&mut reader, "/app/seq-0000000019");
    assert_eq!((err, data), (0, Some(vec![19])));
    let mut resumed = Client::resume(server.addr, session_id);
    assert_eq!(
        resumed.session_id, session_id,
        "the session outlived the crash"
    );
    let (err, data, _) = get_data(&mut resumed, "/app/eph");
    assert_eq!((err, data.as_deref()), (0, Some(&b"mine"[..])));
    let xid = resumed.send(op::CREATE2, |w| {
        encode::create(w, "/after", b"new", &open_acl_unsafe(), 0)
    });
    let (reply_xid, _, err, _) = resumed.recv();
    assert_eq!(
        (reply_xid, err),
        (xid, 0),
        "new writes continue after the recovered zxid"
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_expired_sessions_ephemerals_go_after_restart() {
    // A session whose client never comes back expires after restart, and its ephemeral
    // node is deleted then.
    let dir = temp_dir("expire");
    let port = free_port();
    let server = start(&dir, port);
    let mut client = Client::connect_to(server.addr);
    assert_eq!(client.create("/gone", b"", 1).0, 0);
    kill_9(server);
    let server = start(&dir, port);
    let mut reader = Client::connect_to(server.addr);
    assert_eq!(
        get_data(&mut reader, "/gone").0,
        0,
        "still there right after restart"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while get_data(&mut reader, "/gone").0 == 0 {
        assert!(Instant::now() < deadline, "the ephemeral was never removed");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(get_data(&mut reader, "/gone").0, -101);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The answer to a four-letter word.
fn four_letter(addr: SocketAddr, word: &str) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect for a 4lw");
    stream.write_all(word.as_bytes()).expect("send 4lw");
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

fn mntr_value(addr: SocketAddr, key: &str) -> Option<u64> {
    four_letter(addr, "mntr")
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('\t')?.parse().ok())
}

/// (snapshot zxids, log segment first zxids) in the data directory, ascending.
fn files(dir: &Path) -> (Vec<i64>, Vec<i64>) {
    let mut snapshots = Vec::new();
    let mut segments = Vec::new();
    for entry in std::fs::read_dir(dir.join("version-2")).expect("version-2") {
        let name = entry
            .expect("entry")
            .file_name()
            .into_string()
            .expect("utf-8");
        if let Some(zxid) = keel::snapshot::parse_snapshot_name(&name) {
            snapshots.push(zxid);
        } else if let Some(zxid) = keel::log::segment::parse_segment_name(&name) {
            segments.push(zxid);
        }
    }
    snapshots.sort_unstable();
    segments.sort_unstable();
    (snapshots, segments)
}

#[test]
fn snapshots_purge_the_log_and_a_damaged_one_falls_back() {
    // With a small snapCount the server snapshots in the background while writes go on;
    // autopurge keeps three snapshots and retires the log segments they cover; a restart
    // loads the newest snapshot plus the log; a damaged newest snapshot falls back to the one
    // before it; with every snapshot gone the purged log cannot rebuild the state, and the
    // server refuses to start rather than serve a tree with txns missing.
    let dir = temp_dir("snap");
    let port = free_port();
    let extra = "snapCount=200\nautopurge.snapRetainCount=3\nautopurge.purgeInterval=1\n";
    let server = start_with(&dir, port, extra);
    let mut client = Client::connect_to(server.addr);
    assert_eq!(client.create("/app", b"v0", 0).0, 0);
    assert_eq!(client.create("/app/eph", b"mine", 1).0, 0);
    // One write per group commit: each takes a 4 KiB block, so 1,500 of them fill more
    // than one 4 MiB segment.
    let write_round = |client: &mut Client, round: i32| {
        let value = format!("v{round}");
        let xid = client.send(op::SET_DATA, |w| {
            encode::set_data(w, "/app", value.as_bytes(), round - 1)
        });
        let (reply_xid, _, err, _) = client.recv();
        assert_eq!((reply_xid, err), (xid, 0));
        if round % 100 == 0 {
            assert_eq!(client.create(&format!("/app/n{round}"), b"x", 0).0, 0);
        }
    };
    let mut writes = 0;
    while writes < 1_500 {
        writes += 1;
        write_round(&mut client, writes);
    }
    // Snapshots fall every 100-199 txns at random: write on (a bounded amount) until the
    // oldest of the three kept is past the first segment, so that segment is retired.
    let writes_max = 4_000;
    let deadline = Instant::now() + Duration::from_secs(20);
    let (snapshots, segments) = loop {
        let (snapshots, segments) = files(&dir);
        if snapshots.len() == 3 && segments.first() > Some(&1) {
            break (snapshots, segments);
        }
        assert!(
            Instant::now() < deadline && writes < writes_max,
            "expected 3 snapshots and a retired first segment after {writes} writes: \
             {snapshots:?} {segments:?}"
        );
        for _ in 0..50 {
            writes += 1;
            write_round(&mut client, writes);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        segments[0] <= snapshots[0] + 1,
        "the log still reaches back to the oldest kept snapshot: {snapshots:?} {segments:?}"
    );
    assert!(mntr_value(server.addr, "zk_cnt_snapshottime").unwrap_or(0) >= 3);
    assert!(mntr_value(server.addr, "zk_cnt_fsynctime").unwrap_or(0) >= writes as u64);
    let session_id = client.session_id;
    kill_9(server);

    let check = |server: &Server| {
        let mut reader = Client::connect_to(server.addr);
        let (err, data, stat) = get_data(&mut reader, "/app");
        assert_eq!(err, 0);
        assert_eq!(data, Some(format!("v{writes}").into_bytes()));
        assert_eq!(stat.version, writes);
        assert_eq!(stat.num_children, 1 + writes / 100);
        let (err, _, stat) = get_data(&mut reader, "/app/eph");
        assert_eq!((err, stat.ephemeral_owner), (0, session_id));
    };
    let server = start_with(&dir, port, extra);
    check(&server);
    let loaded = mntr_value(server.addr, "zk_sum_startup_txns_loaded").unwrap_or(u64::MAX);
    assert!(
        loaded <= 400,
        "replayed {loaded} txns: the snapshot was not used"
    );
    let resumed = Client::resume(server.addr, session_id);
    assert_eq!(
        resumed.session_id, session_id,
        "the session is in the snapshot"
    );
    drop(resumed);
    kill_9(server);

    let (snapshots, _) = files(&dir);
    let newest = dir
        .join("version-2")
        .join(format!("snapshot.{:x}", snapshots[snapshots.len() - 1]));
    let mut bytes = std::fs::read(&newest).expect("read snapshot");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&newest, bytes).expect("damage snapshot");
    let server = start_with(&dir, port, extra);
    check(&server);
    kill_9(server);

    for zxid in files(&dir).0 {
        let path = dir.join("version-2").join(format!("snapshot.{zxid:x}"));
        std::fs::remove_file(path).expect("remove snapshot");
    }
    let config = dir.join("zoo.cfg");
    let stderr_path = dir.join("refused.stderr");
    let stderr_file = std::fs::File::create(&stderr_path).expect("stderr file");
    let child = Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr_file)
        .spawn()
        .expect("spawn keel");
    // Owned by a Server so that a keel that wrongly starts is still killed.
    let mut refused = Server {
        child,
        addr: format!("127.0.0.1:{port}").parse().expect("addr"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = refused.child.try_wait().expect("try_wait") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "keel started without its snapshots"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    assert!(!status.success(), "started without its snapshots");
    assert!(stderr.contains("txns are missing"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
