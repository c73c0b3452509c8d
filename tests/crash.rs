//! Crash rounds: many sessions write concurrently (creates, sequential creates, setData with
//! expected versions, deletes, all-or-nothing multis, a multi that must fail) while the real
//! `keel` binary is SIGKILLed at a seeded random moment; it is restarted on the same dataDir
//! and every session's subtree is read back and compared with what the clients were told:
//!
//! - every acknowledged write is there, with its data, version and the parent's cversion;
//! - writes in flight at the kill may or may not be there, but per session only as a prefix of
//!   the session's in-flight writes (ZooKeeper's per-session FIFO order), and each one whole —
//!   a multi is all of its ops or none;
//! - nothing exists that no client tried to create; sequential names follow the parent's
//!   cversion, also across restarts;
//! - after the last restart, the sessions whose clients never came back expire and take their
//!   ephemerals with them.
//!
//! Several rounds run on one dataDir, so the log is recovered, appended to and recovered again.
//! Every other round the kill lands while a new segment is being created (a `.partial` file),
//! and in about one restart in three keel is killed again a few ms into its recovery.
//! The seed is printed; `KEEL_CRASH_SEED=<n>` replays its operation mix and kill delays (the
//! interleaving still depends on timing). `KEEL_CRASH_ROUNDS=<n>` runs more rounds.
//! Run with `cargo test --test crash -- --nocapture` to see the per-round report.

mod faults;

use faults::{join, show, Conn, Rng, Server, NO_NODE, OK};
use keel::proto::jute::{Reader, Writer};
use keel::proto::records::encode;
use keel::proto::{op, open_acl_unsafe, Stat};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Barrier, Mutex};
use std::time::{Duration, Instant};

/// The two tests share the machine's cores; one server at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Session timeout the writing clients ask for: short, so abandoned sessions expire quickly.
const LOAD_SESSION_MS: i32 = 2000;
/// The verifying client's session.
const VERIFY_SESSION_MS: i32 = 10_000;
/// A load thread stops after this many writes or this long, whichever comes first.
const LOAD_WRITES_MAX: usize = 20_000;
const LOAD_TIME_MAX: Duration = Duration::from_secs(15);
/// Flags of create.
const EPHEMERAL: i32 = 1;
const SEQUENTIAL: i32 = 2;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Node {
    data: Vec<u8>,
    version: i32,
    cversion: i32,
}

/// A session's subtree: path → node (its root included).
type State = BTreeMap<String, Node>;

/// One write a load thread sends, with everything needed to predict its effect.
#[derive(Clone, Debug)]
enum WriteOp {
    Create {
        path: String,
        data: Vec<u8>,
    },
    /// Under `parent`, which only ever gets sequential children (no deletes), so the suffix is
    /// the parent's cversion.
    CreateSequential {
        parent: String,
        data: Vec<u8>,
    },
    SetData {
        path: String,
        data: Vec<u8>,
        version: i32,
    },
    Delete {
        path: String,
        version: i32,
    },
    /// create `dir`, `dir/a`, `dir/b`, `dir/c` and setData `counter` at `counter_version`.
    Multi {
        dir: String,
        data: Vec<u8>,
        counter: String,
        counter_data: Vec<u8>,
        counter_version: i32,
    },
    /// create `path` + check `counter` at a wrong version: must fail and change nothing.
    FailingMulti {
        path: String,
        counter: String,
        wrong_version: i32,
    },
}

/// What the reply to a write must say.
#[derive(Debug, PartialEq, Eq)]
enum Expect {
    Created(String),
    Version(i32),
    Done,
    Fails,
}

fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) => "/",
        Some(at) => &path[..at],
        None => "/",
    }
}

fn bump_cversion(state: &mut State, parent: &str) {
    if let Some(node) = state.get_mut(parent) {
        node.cversion += 1;
    }
}

impl WriteOp {
    /// Applies the write to `state` as the server must, and says what the reply must be.
    fn apply(&self, state: &mut State) -> Expect {
        match self {
            WriteOp::Create { path, data } => {
                insert_new(state, path, data);
                Expect::Created(path.clone())
            }
            WriteOp::CreateSequential { parent, data } => {
                let suffix = state.get(parent).map_or(0, |node| node.cversion);
                let path = format!("{parent}/q-{suffix:010}");
                insert_new(state, &path, data);
                Expect::Created(path)
            }
            WriteOp::SetData {
                path,
                data,
                version,
            } => {
                let node = state.get_mut(path).expect("setData on a predicted node");
                assert_eq!(node.version, *version, "generator bug");
                node.data = data.clone();
                node.version += 1;
                Expect::Version(node.version)
            }
            WriteOp::Delete { path, .. } => {
                state.remove(path);
                bump_cversion(state, parent_of(path));
                Expect::Done
            }
            WriteOp::Multi {
                dir,
                data,
                counter,
                counter_data,
                ..
            } => {
                insert_new(state, dir, data);
                for child in ["a", "b", "c"] {
                    insert_new(state, &format!("{dir}/{child}"), data);
                }
                let node = state.get_mut(counter).expect("the counter exists");
                node.data = counter_data.clone();
                node.version += 1;
                Expect::Done
            }
            WriteOp::FailingMulti { .. } => Expect::Fails,
        }
    }

    fn send(&self, conn: &mut Conn) -> std::io::Result<i32> {
        let acl = open_acl_unsafe();
        match self {
            WriteOp::Create { path, data } => conn.send(op::CREATE2, |w| {
                encode::create(w, path, data, &acl, 0);
            }),
            WriteOp::CreateSequential { parent, data } => conn.send(op::CREATE2, |w| {
                encode::create(w, &format!("{parent}/q-"), data, &acl, SEQUENTIAL);
            }),
            WriteOp::SetData {
                path,
                data,
                version,
            } => conn.send(op::SET_DATA, |w| encode::set_data(w, path, data, *version)),
            WriteOp::Delete { path, version } => {
                conn.send(op::DELETE, |w| encode::path_version(w, path, *version))
            }
            WriteOp::Multi {
                dir,
                data,
                counter,
                counter_data,
                counter_version,
            } => conn.send(op::MULTI, |w| {
                multi_create(w, dir, data, &acl);
                for child in ["a", "b", "c"] {
                    multi_create(w, &format!("{dir}/{child}"), data, &acl);
                }
                encode::multi_header(w, op::SET_DATA, false, -1);
                encode::set_data(w, counter, counter_data, *counter_version);
                encode::multi_header(w, -1, true, -1);
            }),
            WriteOp::FailingMulti {
                path,
                counter,
                wrong_version,
            } => conn.send(op::MULTI, |w| {
                multi_create(w, path, b"never", &acl);
                encode::multi_header(w, op::CHECK, false, -1);
                encode::path_version(w, counter, *wrong_version);
                encode::multi_header(w, -1, true, -1);
            }),
        }
    }

    fn describe(&self) -> String {
        match self {
            WriteOp::Create { path, data } => format!("create {path} {}", show(data)),
            WriteOp::CreateSequential { parent, .. } => format!("create sequential {parent}/q-"),
            WriteOp::SetData { path, version, .. } => format!("setData {path} @v{version}"),
            WriteOp::Delete { path, version } => format!("delete {path} @v{version}"),
            WriteOp::Multi { dir, counter, .. } => {
                format!("multi create {dir}{{,/a,/b,/c}} + setData {counter}")
            }
            WriteOp::FailingMulti { path, .. } => format!("failing multi create {path}"),
        }
    }
}

fn multi_create(w: &mut Writer<'_>, path: &str, data: &[u8], acl: &[keel::proto::Acl]) {
    encode::multi_header(w, op::CREATE, false, -1);
    encode::create(w, path, data, acl, 0);
}

fn insert_new(state: &mut State, path: &str, data: &[u8]) {
    let previous = state.insert(
        path.to_string(),
        Node {
            data: data.to_vec(),
            version: 0,
            cversion: 0,
        },
    );
    assert!(previous.is_none(), "generator bug: {path} created twice");
    bump_cversion(state, parent_of(path));
}

/// What a reply said, in the terms of `Expect`.
fn reply_outcome(op: &WriteOp, reply: &faults::Reply) -> Result<Expect, String> {
    let mut r = Reader::new(&reply.body);
    match op {
        WriteOp::Create { .. } | WriteOp::CreateSequential { .. } => {
            if reply.err != OK {
                return Err(format!("error {}", reply.err));
            }
            let path = r.read_string().map_err(|e| format!("{e:?}"))?;
            Ok(Expect::Created(path.to_string()))
        }
        WriteOp::SetData { .. } => {
            if reply.err != OK {
                return Err(format!("error {}", reply.err));
            }
            let stat = Stat::read(&mut r).map_err(|e| format!("{e:?}"))?;
            Ok(Expect::Version(stat.version))
        }
        WriteOp::Delete { .. } => match reply.err {
            OK => Ok(Expect::Done),
            err => Err(format!("error {err}")),
        },
        WriteOp::Multi { .. } | WriteOp::FailingMulti { .. } => {
            if reply.err != OK {
                return Ok(Expect::Fails);
            }
            // A failed multi answers with one error result per op.
            let kind = r.read_i32().map_err(|e| format!("{e:?}"))?;
            Ok(if kind == -1 {
                Expect::Fails
            } else {
                Expect::Done
            })
        }
    }
}

/// One session's part of the workload, kept across rounds.
struct Session {
    index: usize,
    root: String,
    /// The subtree as the acknowledged writes (and, after a restart, the read-back) left it.
    confirmed: State,
    /// Writes sent whose reply never came (the kill), oldest first.
    in_flight: Vec<WriteOp>,
    next_name: u64,
    acked_total: usize,
}

/// An ephemeral a load session created before its round's load started (acknowledged).
struct Ephemeral {
    path: String,
    data: Vec<u8>,
    session_id: i64,
    /// Seen deleted (its session expired): a committed delete, so it must never come back.
    gone: bool,
}

#[derive(Default)]
struct LoadReport {
    sent: usize,
    acked: usize,
    failure: Option<String>,
    ephemeral: Option<Ephemeral>,
}

fn payload(rng: &mut Rng, label: &str) -> Vec<u8> {
    let mut data = label.as_bytes().to_vec();
    let extra = match rng.below(10) {
        0 => 1000 + rng.below(6000),
        1 => 0,
        _ => rng.below(200),
    };
    let fill = b'a' + (rng.below(26) as u8);
    data.extend(std::iter::repeat_n(fill, extra as usize));
    data
}

impl Session {
    fn new(index: usize) -> Session {
        Session {
            index,
            root: format!("/c/t{index}"),
            confirmed: State::new(),
            in_flight: Vec::new(),
            next_name: 0,
            acked_total: 0,
        }
    }

    fn seq_parent(&self) -> String {
        format!("{}/s", self.root)
    }

    fn counter(&self) -> String {
        format!("{}/counter", self.root)
    }

    /// Picks the next write from the state predicted with every earlier write applied.
    fn choose(&mut self, predicted: &State, rng: &mut Rng, label: &str) -> WriteOp {
        let keys_from = format!("{}/k", self.root);
        let keys_to = format!("{}/l", self.root);
        let keys: Vec<&String> = predicted
            .range(keys_from..keys_to)
            .map(|(path, _)| path)
            .collect();
        let pick = rng.below(100);
        let data = payload(rng, label);
        let counter = self.counter();
        let mut fresh = |prefix: &str| {
            self.next_name += 1;
            format!("{}/{prefix}{}", self.root, self.next_name)
        };
        match pick {
            0..=24 => WriteOp::Create {
                path: fresh("k"),
                data,
            },
            25..=49 if !keys.is_empty() => {
                let path = keys[rng.below(keys.len() as u64) as usize].clone();
                let version = predicted[&path].version;
                WriteOp::SetData {
                    path,
                    data,
                    version,
                }
            }
            50..=59 if !keys.is_empty() => {
                let path = keys[rng.below(keys.len() as u64) as usize].clone();
                let version = predicted[&path].version;
                WriteOp::Delete { path, version }
            }
            60..=74 => WriteOp::CreateSequential {
                parent: format!("{}/s", self.root),
                data,
            },
            75..=89 => {
                let counter_version = predicted[&counter].version;
                WriteOp::Multi {
                    dir: fresh("m"),
                    data,
                    counter_data: format!("{}", counter_version + 1).into_bytes(),
                    counter,
                    counter_version,
                }
            }
            90..=94 => {
                let wrong_version = predicted[&counter].version + 1000;
                WriteOp::FailingMulti {
                    path: fresh("x"),
                    counter,
                    wrong_version,
                }
            }
            _ => {
                let version = predicted[&counter].version;
                WriteOp::SetData {
                    path: counter,
                    data,
                    version,
                }
            }
        }
    }

    /// Opens a session, creates its round's ephemeral, waits at `start`, then writes with up to
    /// `depth` requests in flight until the connection breaks (the kill) or a bound is hit.
    fn load(
        &mut self,
        addr: SocketAddr,
        round: usize,
        seed: u64,
        depth: usize,
        start: &Barrier,
    ) -> LoadReport {
        let mut report = LoadReport::default();
        let setup = (|| -> Result<Conn, String> {
            let mut conn = Conn::connect(addr, LOAD_SESSION_MS).map_err(|e| e.to_string())?;
            let path = format!("/e/r{round}-t{}", self.index);
            let data = format!("session {:#x}", conn.session_id).into_bytes();
            match conn.create(&path, &data, EPHEMERAL) {
                Ok((OK, _)) => {}
                other => return Err(format!("create {path}: {other:?}")),
            }
            report.ephemeral = Some(Ephemeral {
                path,
                data,
                session_id: conn.session_id,
                gone: false,
            });
            Ok(conn)
        })();
        start.wait();
        let mut conn = match setup {
            Ok(conn) => conn,
            Err(error) => {
                report.failure = Some(format!("session {} setup: {error}", self.index));
                return report;
            }
        };
        let mut rng = Rng::new(seed ^ ((round as u64) << 40) ^ ((self.index as u64) << 20));
        let mut predicted = self.confirmed.clone();
        let mut queue: VecDeque<(i32, WriteOp, Expect)> = VecDeque::new();
        let deadline = Instant::now() + LOAD_TIME_MAX;
        'load: loop {
            while queue.len() < depth && report.sent < LOAD_WRITES_MAX && Instant::now() < deadline
            {
                let label = format!("{}#r{round}w{}", self.root, report.sent);
                let write = self.choose(&predicted, &mut rng, &label);
                let expect = write.apply(&mut predicted);
                report.sent += 1;
                // In flight from before the first byte goes out.
                self.in_flight.push(write.clone());
                match write.send(&mut conn) {
                    Ok(xid) => queue.push_back((xid, write, expect)),
                    Err(_) => break 'load,
                }
            }
            let Some((xid, write, expect)) = queue.pop_front() else {
                break;
            };
            let reply = match conn.recv() {
                Ok(reply) => reply,
                Err(_) => break,
            };
            let outcome = reply_outcome(&write, &reply);
            if reply.xid != xid || outcome.as_ref() != Ok(&expect) {
                report.failure = Some(format!(
                    "session {} ({}): `{}` (xid {xid}) expected {expect:?}, got xid {} {outcome:?}",
                    self.index,
                    self.root,
                    write.describe(),
                    reply.xid
                ));
                break;
            }
            write.apply(&mut self.confirmed);
            self.in_flight.remove(0);
            report.acked += 1;
        }
        self.acked_total += report.acked;
        report
    }
}

/// Converts read-back nodes to `State`, checking that none is ephemeral.
fn to_state(read: BTreeMap<String, faults::NodeRead>) -> Result<State, String> {
    let mut state = State::new();
    for (path, node) in read {
        if node.stat.ephemeral_owner != 0 {
            return Err(format!(
                "{path} is ephemeral (owner {:#x})",
                node.stat.ephemeral_owner
            ));
        }
        state.insert(
            path,
            Node {
                data: node.data,
                version: node.stat.version,
                cversion: node.stat.cversion,
            },
        );
    }
    Ok(state)
}

/// Up to 12 differences, `expected` against `found`.
fn diff(expected: &State, found: &State) -> String {
    let mut out = String::new();
    let mut count = 0;
    let paths: BTreeSet<&String> = expected.keys().chain(found.keys()).collect();
    for path in paths {
        let line = match (expected.get(path), found.get(path)) {
            (Some(_), None) => format!("  {path}: missing"),
            (None, Some(node)) => format!(
                "  {path}: exists but should not (v{} {})",
                node.version,
                show(&node.data)
            ),
            (Some(want), Some(got)) if want != got => format!(
                "  {path}: expected v{} cversion {} {}, found v{} cversion {} {}",
                want.version,
                want.cversion,
                show(&want.data),
                got.version,
                got.cversion,
                show(&got.data)
            ),
            _ => continue,
        };
        count += 1;
        if count <= 12 {
            let _ = writeln!(out, "{line}");
        }
    }
    if count > 12 {
        let _ = writeln!(out, "  … {} more", count - 12);
    }
    out
}

/// Reads every session's subtree back and matches it against the acknowledged state plus a
/// prefix of the in-flight writes; on success the read-back becomes the confirmed state.
/// Returns (nodes verified, in-flight writes found applied).
fn verify_sessions(conn: &mut Conn, sessions: &mut [Session], context: &str) -> (usize, usize) {
    let mut nodes = 0;
    let mut applied_total = 0;
    for session in sessions.iter_mut() {
        let read = conn
            .read_subtree(&session.root)
            .unwrap_or_else(|e| panic!("{context}: reading {}: {e}", session.root));
        let found = to_state(read).unwrap_or_else(|e| panic!("{context}: {e}"));
        let mut candidate = session.confirmed.clone();
        let mut matched = (candidate == found).then_some(0);
        for (index, write) in session.in_flight.iter().enumerate() {
            if matched.is_some() {
                break;
            }
            write.apply(&mut candidate);
            if candidate == found {
                matched = Some(index + 1);
            }
        }
        let Some(applied) = matched else {
            let in_flight: Vec<String> = session.in_flight.iter().map(WriteOp::describe).collect();
            panic!(
                "{context}: {} after restart is neither the acknowledged state nor it plus a \
                 prefix of the {} in-flight writes {in_flight:#?}\n\
                 differences from the acknowledged state (expected vs found):\n{}\
                 differences from acknowledged + all in-flight:\n{}",
                session.root,
                session.in_flight.len(),
                diff(&session.confirmed, &found),
                diff(&candidate, &found),
            );
        };
        nodes += found.len();
        applied_total += applied;
        session.confirmed = found;
        session.in_flight.clear();
    }
    (nodes, applied_total)
}

/// The top of the tree: only /zookeeper, /c and /e; /c holds exactly the session roots; every
/// node under /e is an ephemeral a session created, owned by that session, with its data.
/// An ephemeral seen gone must stay gone. Returns how many of the known ephemerals are there.
fn verify_top(
    conn: &mut Conn,
    sessions: &[Session],
    ephemerals: &mut [Ephemeral],
    context: &str,
) -> usize {
    let (err, top) = conn.get_children("/").expect("read /");
    assert_eq!(err, OK, "{context}: getChildren /");
    for name in &top {
        assert!(
            ["zookeeper", "c", "e"].contains(&name.as_str()),
            "{context}: /{name} exists, but no client ever created it"
        );
    }
    let fresh = sessions.iter().all(|s| s.confirmed.is_empty());
    let (err, roots) = conn.get_children("/c").expect("read /c");
    if fresh && err == NO_NODE {
        return 0; // Before the first round's setup.
    }
    assert_eq!(err, OK, "{context}: getChildren /c");
    let expected: Vec<String> = {
        let mut names: Vec<String> = sessions.iter().map(|s| format!("t{}", s.index)).collect();
        names.sort();
        names
    };
    assert_eq!(roots, expected, "{context}: children of /c");
    let (err, names) = conn.get_children("/e").expect("read /e");
    assert_eq!(err, OK, "{context}: getChildren /e");
    let mut present = BTreeSet::new();
    for name in names {
        let path = join("/e", &name);
        let known = ephemerals
            .iter()
            .find(|e| e.path == path)
            .unwrap_or_else(|| panic!("{context}: {path} exists, but no client ever created it"));
        assert!(
            !known.gone,
            "{context}: {path} is back, but it was seen deleted (its session {:#x} expired) \
             before the kill",
            known.session_id
        );
        let (err, data, stat) = conn.get_data(&path).expect("read an ephemeral");
        if err == NO_NODE {
            continue; // Its session expired just now.
        }
        assert_eq!(err, OK, "{context}: getData {path}");
        assert_eq!(
            (stat.ephemeral_owner, show(&data)),
            (known.session_id, show(&known.data)),
            "{context}: {path} (owner, data)"
        );
        present.insert(path);
    }
    for ephemeral in ephemerals.iter_mut() {
        ephemeral.gone = !present.contains(&ephemeral.path);
    }
    present.len()
}

/// Creates what must exist before a round's load (synchronously, acknowledged).
fn ensure(conn: &mut Conn, path: &str, data: &[u8], session: Option<&mut Session>) {
    if conn.get_data(path).expect("getData").0 == OK {
        return;
    }
    let (err, created) = conn.create(path, data, 0).expect("create");
    assert_eq!((err, created.as_str()), (OK, path), "setup create {path}");
    if let Some(session) = session {
        let mut state = std::mem::take(&mut session.confirmed);
        insert_new(&mut state, path, data);
        session.confirmed = state;
    }
}

struct Plan {
    name: &'static str,
    sessions: usize,
    depth: usize,
    rounds: usize,
    /// Kill delays are drawn from `kill_ms.0 .. kill_ms.1` after the load starts.
    kill_ms: (u64, u64),
}

fn rounds_from_env(default: usize) -> usize {
    std::env::var("KEEL_CRASH_ROUNDS")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(default)
}

fn run(plan: &Plan) {
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let seed = faults::seed_from_env("KEEL_CRASH_SEED");
    println!(
        "{}: seed {seed} (replay: KEEL_CRASH_SEED={seed}), {} sessions, {} in flight each, {} rounds",
        plan.name, plan.sessions, plan.depth, plan.rounds
    );
    let began = Instant::now();
    let dir = faults::temp_dir(plan.name);
    let data_dir = dir.join("data");
    let config = dir.join("zoo.cfg");
    let stderr_path = dir.join("keel.stderr");
    println!(
        "  dataDir and keel's stderr under {} (kept if the test fails)",
        dir.display()
    );
    let port = faults::free_port();
    // snapCount low: once snapshots exist, rounds also recover from a snapshot plus a log.
    faults::write_config(
        &config,
        &data_dir,
        port,
        "preAllocSize=4096\nsnapCount=500\n",
    );
    let mut rng = Rng::new(seed);
    let mut sessions: Vec<Session> = (0..plan.sessions).map(Session::new).collect();
    let mut ephemerals: Vec<Ephemeral> = Vec::new();
    let mut verified_acked = 0;
    for round in 1..=plan.rounds + 1 {
        let context = format!("{} seed {seed} round {round}", plan.name);
        if round > 1 {
            println!(
                "  log before restart {}: {}",
                round - 1,
                log_summary(&data_dir)
            );
            if rng.below(3) == 0 {
                // A second crash, during recovery (torn-tail repair, partial segment removal).
                let early = Duration::from_millis(rng.below(60));
                let server = Server::spawn(&config, port, &stderr_path);
                std::thread::sleep(early);
                if let Some(status) = server.kill_9() {
                    panic!(
                        "{context}: keel exited on its own ({status}) while recovering; \
                         stderr:\n{}",
                        faults::tail_of(&stderr_path)
                    );
                }
                println!("  SIGKILL again {} ms into the restart", early.as_millis());
            }
        }
        let server = Server::start(&config, port, &stderr_path);
        let mut verifier = Conn::connect(server.addr, VERIFY_SESSION_MS)
            .unwrap_or_else(|e| panic!("{context}: verifier connect: {e}"));
        let (nodes, applied) = verify_sessions(&mut verifier, &mut sessions, &context);
        let ephemerals_present = verify_top(&mut verifier, &sessions, &mut ephemerals, &context);
        if round > 1 {
            println!(
                "  after restart {}: {nodes} nodes match, {applied} in-flight writes found \
                 applied, {ephemerals_present}/{} ephemerals still there ({:.1} s)",
                round - 1,
                ephemerals.len(),
                began.elapsed().as_secs_f64()
            );
        }
        if round > plan.rounds {
            final_checks(&mut verifier, &sessions, &mut ephemerals, &context);
            drop(verifier);
            drop(server);
            break;
        }
        if round == 3 {
            // Let the earlier rounds' sessions expire now, so later rounds recover their
            // closeSession txns (and check that the deleted ephemerals stay deleted).
            wait_ephemerals_gone(&mut verifier, &context);
            verify_top(&mut verifier, &sessions, &mut ephemerals, &context);
            println!("  before round 3: every earlier session expired");
        }
        ensure(&mut verifier, "/c", b"", None);
        ensure(&mut verifier, "/e", b"", None);
        for session in sessions.iter_mut() {
            let root = session.root.clone();
            ensure(&mut verifier, &root, b"root", Some(session));
            let seq_parent = session.seq_parent();
            ensure(&mut verifier, &seq_parent, b"seq", Some(session));
            let counter = session.counter();
            ensure(&mut verifier, &counter, b"0", Some(session));
        }
        drop(verifier);

        let kill_after =
            Duration::from_millis(plan.kill_ms.0 + rng.below(plan.kill_ms.1 - plan.kill_ms.0));
        // Every other round, the kill lands while a new segment is being created (its
        // `.partial` file exists), or after the longest delay if no roll came by then.
        let at_roll = round % 2 == 0;
        let log_dir = data_dir.join("version-2");
        let mut killed_how = String::new();
        let start = Barrier::new(plan.sessions + 1);
        let addr = server.addr;
        let mut reports = Vec::new();
        let mut exited_early = None;
        std::thread::scope(|scope| {
            let handles: Vec<_> = sessions
                .iter_mut()
                .map(|session| {
                    let start = &start;
                    scope.spawn(move || session.load(addr, round, seed, plan.depth, start))
                })
                .collect();
            start.wait();
            let began = Instant::now();
            killed_how = if at_roll {
                match wait_for_partial(&log_dir, Duration::from_millis(plan.kill_ms.1 + 3000)) {
                    Some(partial) => format!(" while {partial} was being created"),
                    None => " without seeing a segment roll".to_string(),
                }
            } else {
                std::thread::sleep(kill_after);
                String::new()
            };
            killed_how = format!("after {} ms{killed_how}", began.elapsed().as_millis());
            exited_early = server.kill_9();
            for handle in handles {
                reports.push(handle.join().expect("a load thread panicked"));
            }
        });
        if let Some(status) = exited_early {
            panic!(
                "{context}: keel exited on its own ({status}) before the kill; stderr:\n{}",
                std::fs::read_to_string(&stderr_path).unwrap_or_default()
            );
        }
        let mut sent = 0;
        let mut acked = 0;
        for report in reports {
            if let Some(failure) = report.failure {
                panic!("{context}: {failure}");
            }
            sent += report.sent;
            acked += report.acked;
            ephemerals.extend(report.ephemeral);
        }
        verified_acked += acked;
        let in_flight: usize = sessions.iter().map(|s| s.in_flight.len()).sum();
        println!(
            "  round {round}: SIGKILL {killed_how}: {sent} writes sent, {acked} acknowledged, \
             {in_flight} in flight"
        );
    }
    let acked_total: usize = sessions.iter().map(|s| s.acked_total).sum();
    assert_eq!(acked_total, verified_acked);
    // A round killed before its first reply verifies nothing new; all rounds together must.
    assert!(
        verified_acked >= 100 * plan.rounds,
        "{} seed {seed}: only {verified_acked} writes acknowledged in {} rounds",
        plan.name,
        plan.rounds
    );
    println!(
        "{}: {verified_acked} acknowledged writes verified over {} restarts in {:.1} s",
        plan.name,
        plan.rounds,
        began.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Polls `log_dir` until a `.partial` segment appears (returns its name and size) or `limit`
/// passes.
fn wait_for_partial(log_dir: &Path, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        for entry in std::fs::read_dir(log_dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".partial") {
                let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
                return Some(format!("{name} ({bytes} B)"));
            }
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    None
}

/// The log directory in one line: segments, partial segments, anything else.
fn log_summary(data_dir: &Path) -> String {
    let mut segments = 0;
    let mut others = Vec::new();
    for entry in std::fs::read_dir(data_dir.join("version-2"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_segment = name
            .strip_prefix("log.")
            .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()));
        if is_segment {
            segments += 1;
        } else {
            others.push(name);
        }
    }
    format!("{segments} segments, other files: {others:?}")
}

/// After the last restart: the abandoned sessions expire and their ephemerals go; new writes
/// still work.
fn final_checks(
    conn: &mut Conn,
    sessions: &[Session],
    ephemerals: &mut [Ephemeral],
    context: &str,
) {
    wait_ephemerals_gone(conn, context);
    assert!(!ephemerals.is_empty());
    verify_top(conn, sessions, ephemerals, context);
    let (err, created) = conn.create("/c-after", b"after", 0).expect("create");
    assert_eq!(
        (err, created.as_str()),
        (OK, "/c-after"),
        "{context}: a write after recovery"
    );
    let (err, data, _) = conn.get_data("/c-after").expect("read");
    assert_eq!((err, data.as_slice()), (OK, &b"after"[..]));
}

/// Waits (at most 30 s) until /e is empty: every load session was abandoned and expires.
fn wait_ephemerals_gone(conn: &mut Conn, context: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (err, names) = conn.get_children("/e").expect("read /e");
        assert_eq!(err, OK);
        if names.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{context}: ephemerals of abandoned sessions still there 30 s after restart: {names:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn acknowledged_writes_survive_kill_9_rounds() {
    run(&Plan {
        name: "crash",
        sessions: 12,
        depth: 1,
        rounds: rounds_from_env(5),
        kill_ms: (100, 1500),
    });
}

#[test]
fn pipelined_sessions_survive_kill_9_rounds() {
    run(&Plan {
        name: "crash-pipelined",
        sessions: 8,
        depth: 32,
        rounds: rounds_from_env(3),
        kill_ms: (100, 1200),
    });
}
