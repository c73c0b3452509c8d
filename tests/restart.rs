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
    let config = data_dir.join("zoo.cfg");
    std::fs::write(
        &config,
        format!(
            "tickTime=500\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\n\
             maxClientCnxns=0\npreAllocSize=4096\nkeel.unpinned=true\n\
             4lw.commands.whitelist=*\n",
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
