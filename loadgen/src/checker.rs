//! checker: `--workload checker`, a live run that records a history of reads and writes on a
//! few keys and checks it with `linearizability`.
//!
//! Owns: one blocking client thread per session (each runs one op at a time, so every op has a
//! clear invocation and completion time), the op mix, decoding replies into model outputs, and
//! the checker summary (text and JSON). An op whose connection fails or times out is recorded as
//! indeterminate (`Output::Unknown`, no return time) and the client opens a new session. Every
//! wait is bounded by --request-timeout and the run's time limit; the history is bounded by
//! --ops; the search by --check-steps.

use crate::linearizability::{self, History, Input, Limits, Node, Op, Output, Report, Verdict};
use crate::plan::{duration_ns, CheckerPlan, Clock, Plan};
use crate::rng::Rng;
use crate::stats::cause;
use crate::summary::round_to;
use crate::sync_client::SyncClient;
use crate::workload::{KvWorkload, Workload};
use anyhow::{anyhow, Context, Result};
use keel::proto::jute::Reader;
use keel::proto::records::encode;
use keel::proto::{op, open_acl_unsafe, ErrorCode, Stat};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Every key starts as a node holding this value at version 0.
pub const INITIAL_VALUE: &str = "init";
/// The op mix, in percent: read, write, cas, delete; create takes the rest.
const READ_PCT: u64 = 50;
const WRITE_PCT: u64 = 20;
const CAS_PCT: u64 = 15;
const DELETE_PCT: u64 = 7;
const _: () = assert!(READ_PCT + WRITE_PCT + CAS_PCT + DELETE_PCT < 100);
/// Wait between reconnect attempts of one client.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(50);

/// What the checker prints and writes with --json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckerSummary {
    pub run_id: String,
    pub servers: Vec<String>,
    pub clients: usize,
    pub keys: u64,
    pub seed: u64,
    pub recorded_ops: usize,
    pub recording_s: f64,
    pub recorded_ops_per_s: f64,
    /// True when the time limit, not --ops or --duration, ended the recording.
    pub hit_time_limit: bool,
    pub errors_by_cause: BTreeMap<String, u64>,
    pub error_examples: BTreeMap<String, String>,
    pub check_s: f64,
    pub report: Report,
    /// Where the history was saved, if it was.
    pub history_file: Option<String>,
    pub teardown: String,
}

impl CheckerSummary {
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "keel-loadgen checker run {}: {} clients, {} keys, servers {}, seed {}",
            self.run_id,
            self.clients,
            self.keys,
            self.servers.join(","),
            self.seed
        );
        let _ = writeln!(
            out,
            "recorded {} ops in {:.3} s = {:.1} ops/s{}",
            self.recorded_ops,
            self.recording_s,
            self.recorded_ops_per_s,
            if self.hit_time_limit {
                " (cut by the time limit)"
            } else {
                ""
            }
        );
        render_errors(&mut out, &self.errors_by_cause, &self.error_examples);
        out.push_str(&self.report.render_text());
        let _ = writeln!(out, "check took {:.3} s", self.check_s);
        if let Some(file) = &self.history_file {
            let _ = writeln!(out, "history: {file}");
        }
        let _ = writeln!(out, "teardown: {}", self.teardown);
        out
    }

    /// 0 linearizable, 5 not, 6 undecided.
    pub fn exit_code(&self) -> i32 {
        verdict_exit_code(self.report.verdict)
    }
}

pub fn verdict_exit_code(verdict: Verdict) -> i32 {
    match verdict {
        Verdict::Linearizable => 0,
        Verdict::NotLinearizable => 5,
        Verdict::Unknown => 6,
    }
}

fn render_errors(
    out: &mut String,
    by_cause: &BTreeMap<String, u64>,
    examples: &BTreeMap<String, String>,
) {
    if by_cause.is_empty() {
        let _ = writeln!(out, "errors by cause: none");
        return;
    }
    let _ = writeln!(out, "errors by cause:");
    for (cause, count) in by_cause {
        let example = examples.get(cause).map_or("", String::as_str);
        let _ = writeln!(out, "  {cause}: {count} (first: {example})");
    }
}

/// The offline `check FILE` command's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileCheckSummary {
    pub file: String,
    pub check_s: f64,
    pub report: Report,
}

impl FileCheckSummary {
    pub fn render_text(&self) -> String {
        let mut out = format!("keel-loadgen check {}\n", self.file);
        out.push_str(&self.report.render_text());
        let _ = writeln!(out, "check took {:.3} s", self.check_s);
        out
    }
}

/// Reads a history file and checks it.
///
/// # Errors
/// The file cannot be read, is not a history, or does not validate.
pub fn check_file(path: &std::path::Path, steps_max: u64) -> Result<FileCheckSummary> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let history: History = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a history file", path.display()))?;
    let started = Instant::now();
    let report = linearizability::check(&history, limits(steps_max))
        .map_err(|error| anyhow!("{}: {error}", path.display()))?;
    Ok(FileCheckSummary {
        file: path.display().to_string(),
        check_s: round_to(started.elapsed().as_secs_f64(), 3),
        report,
    })
}

fn limits(steps_max: u64) -> Limits {
    Limits {
        steps_max,
        ..Limits::default()
    }
}

/// One client's share of the recording.
#[derive(Default)]
struct ClientRecord {
    ops: Vec<Op>,
    errors_by_cause: BTreeMap<String, u64>,
    error_examples: BTreeMap<String, String>,
}

impl ClientRecord {
    fn count(&mut self, cause: &str, detail: String) {
        *self.errors_by_cause.entry(cause.to_string()).or_insert(0) += 1;
        self.error_examples
            .entry(cause.to_string())
            .or_insert(detail);
    }
}

/// What every client thread shares.
struct Shared {
    plan: Arc<Plan>,
    clock: Clock,
    /// Ops claimed so far, over all clients; none past `ops_max`.
    claimed: AtomicU64,
    ops_max: u64,
    /// No op starts at or after this.
    stop_ns: u64,
    deadline: Instant,
}

/// Records, saves and checks a history against the plan's servers.
///
/// # Errors
/// Setup failed, no client ever connected, or the history could not be saved.
pub fn run(plan: Plan) -> Result<CheckerSummary> {
    let checker = plan
        .checker
        .clone()
        .ok_or_else(|| anyhow!("not a checker plan"))?;
    let started = Instant::now();
    let deadline = started + plan.time_limit;
    let plan = Arc::new(plan);
    let workload = KvWorkload {
        prefix: plan.prefix(),
        keys: plan.keys.clone(),
        value: INITIAL_VALUE.as_bytes().into(),
        read_pct: 0,
    };
    let io_timeout = plan.request_timeout.max(plan.connect_timeout);
    let mut client =
        SyncClient::connect(&plan.servers, plan.session_timeout_ms, io_timeout, deadline)
            .context("setup")?;
    let setup = workload.setup(&mut client);
    client.close();
    if let Err(error) = setup {
        let teardown = teardown(&plan, &workload, deadline);
        return Err(error.context(format!("setup failed (teardown: {teardown})")));
    }
    let clock = Clock::new(started);
    let begin_ns = clock.now_ns();
    let shared = Arc::new(Shared {
        stop_ns: (begin_ns + duration_ns(plan.duration)).min(clock.ns_of(deadline)),
        plan: plan.clone(),
        clock,
        claimed: AtomicU64::new(0),
        ops_max: checker.ops_max,
        deadline,
    });
    let records = record(&shared)?;
    let end_ns = clock.now_ns();
    let recording = Duration::from_nanos(end_ns - begin_ns);
    let hit_time_limit =
        shared.claimed.load(Ordering::Relaxed) < shared.ops_max && end_ns >= clock.ns_of(deadline);
    let teardown = if hit_time_limit {
        format!(
            "skipped at the time limit; nodes are left under {}",
            plan.prefix()
        )
    } else {
        teardown(&plan, &workload, deadline)
    };
    summarise(
        &plan,
        &checker,
        records,
        (recording, hit_time_limit),
        teardown,
    )
}

fn teardown(plan: &Plan, workload: &KvWorkload, deadline: Instant) -> String {
    let io_timeout = plan.request_timeout.max(plan.connect_timeout);
    let result = SyncClient::connect(&plan.servers, plan.session_timeout_ms, io_timeout, deadline)
        .and_then(|mut client| {
            workload.teardown(&mut client)?;
            client.close();
            Ok(())
        });
    match result {
        Ok(()) => "ok".to_string(),
        Err(error) => format!(
            "incomplete, nodes may be left under {}: {error:#}",
            plan.prefix()
        ),
    }
}

fn record(shared: &Arc<Shared>) -> Result<Vec<ClientRecord>> {
    let handles: Vec<_> = (0..shared.plan.sessions)
        .map(|client| {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("checker-{client}"))
                .spawn(move || run_client(&shared, client as u32))
                .context("spawning a checker client")
        })
        .collect::<Result<_>>()?;
    handles
        .into_iter()
        .map(|handle| {
            handle
                .join()
                .map_err(|_| anyhow!("a checker client panicked"))
        })
        .collect()
}

fn summarise(
    plan: &Plan,
    checker: &CheckerPlan,
    records: Vec<ClientRecord>,
    (recording, hit_time_limit): (Duration, bool),
    teardown: String,
) -> Result<CheckerSummary> {
    let mut ops = Vec::new();
    let mut errors_by_cause = BTreeMap::new();
    let mut error_examples = BTreeMap::new();
    for record in records {
        ops.extend(record.ops);
        for (cause, count) in record.errors_by_cause {
            *errors_by_cause.entry(cause).or_insert(0) += count;
        }
        for (cause, example) in record.error_examples {
            error_examples.entry(cause).or_insert(example);
        }
    }
    if ops.is_empty() {
        let why: Vec<String> = error_examples.values().cloned().collect();
        return Err(anyhow!(
            "no op was recorded on {:?}: {}",
            plan.servers,
            why.join("; ")
        ));
    }
    ops.sort_by_key(|op| (op.call_ns, op.client));
    let initial = (0..plan.keys.count())
        .map(|key| {
            let node = Node {
                value: INITIAL_VALUE.to_string(),
                version: 0,
            };
            (key_name(key), Some(node))
        })
        .collect();
    let history = History {
        format: linearizability::HISTORY_FORMAT,
        initial,
        ops,
    };
    let history_file = match &checker.history_path {
        Some(path) => {
            let text = serde_json::to_string(&history)?;
            std::fs::write(path, text + "\n")
                .with_context(|| format!("writing the history to {}", path.display()))?;
            Some(path.display().to_string())
        }
        None => None,
    };
    let check_started = Instant::now();
    let report = linearizability::check(&history, limits(checker.steps_max))
        .map_err(|error| anyhow!("the recorded history is malformed: {error}"))?;
    let recording_s = round_to(recording.as_secs_f64(), 3);
    Ok(CheckerSummary {
        run_id: plan.run_id.clone(),
        servers: plan.servers.iter().map(ToString::to_string).collect(),
        clients: plan.sessions,
        keys: plan.keys.count(),
        seed: plan.seed,
        recorded_ops: history.ops.len(),
        recording_s,
        recorded_ops_per_s: round_to(history.ops.len() as f64 / recording_s.max(1e-3), 1),
        hit_time_limit,
        errors_by_cause,
        error_examples,
        check_s: round_to(check_started.elapsed().as_secs_f64(), 3),
        report,
        history_file,
        teardown,
    })
}

fn key_name(key: u64) -> String {
    format!("k{key}")
}

/// One client: ops one at a time until --ops are claimed, --duration is over, or the time limit.
fn run_client(shared: &Shared, client: u32) -> ClientRecord {
    let plan = &shared.plan;
    let checker = plan.checker.as_ref().expect("a checker plan");
    let mut rng = Rng::new(plan.seed, 1_000 + u64::from(client));
    let mut record = ClientRecord::default();
    let mut connection: Option<SyncClient> = None;
    let mut seen_version: HashMap<u64, i32> = HashMap::new();
    let mut next_value = 0u64;
    let prefix = plan.prefix();
    let io_timeout = plan.request_timeout;
    // Clients start on different servers and move on to the next after each failure.
    let mut servers = plan.servers.clone();
    let first = client as usize % servers.len();
    servers.rotate_left(first);
    loop {
        if shared.clock.now_ns() >= shared.stop_ns {
            break;
        }
        let Some(session) = connection.as_mut() else {
            // One server per attempt, so every refusal is counted before moving on.
            match SyncClient::connect(
                &servers[..1],
                plan.session_timeout_ms,
                plan.connect_timeout,
                shared.deadline,
            ) {
                Ok(session) => connection = Some(session),
                Err(error) => {
                    record.count(cause::CONNECT_FAILED, format!("{error:#}"));
                    servers.rotate_left(1);
                    let left = shared.stop_ns.saturating_sub(shared.clock.now_ns());
                    std::thread::sleep(RECONNECT_BACKOFF.min(Duration::from_nanos(left)));
                }
            }
            continue;
        };
        session.set_io_timeout(io_timeout);
        if shared.claimed.fetch_add(1, Ordering::Relaxed) >= shared.ops_max {
            break;
        }
        let key = plan.keys.sample(&mut rng);
        let input = choose_input(&mut rng, client, &mut next_value, seen_version.get(&key));
        let path = format!("{prefix}/{}", key_name(key));
        let call_ns = shared.clock.now_ns();
        let reply = if checker.sync_reads && input == Input::Read {
            sync(session, &path).and_then(|()| send(session, &path, &input))
        } else {
            send(session, &path, &input)
        };
        let return_ns = shared.clock.now_ns();
        let output = match reply {
            Ok((err, body)) => match decode(&input, err, &body) {
                Ok(output) => output,
                Err(detail) => {
                    record.count(&crate::stats::error_code_name(err), detail);
                    connection = None;
                    Output::Unknown
                }
            },
            Err(error) => {
                let server = session.server();
                record.count(
                    cause::CONNECTION_LOSS,
                    format!(
                        "{server}: {} outstanding when the connection failed: {error:#}",
                        kind(&input)
                    ),
                );
                connection = None;
                servers.rotate_left(1);
                Output::Unknown
            }
        };
        match &output {
            Output::Read { node: Some(node) } => {
                seen_version.insert(key, node.version);
            }
            Output::Written { version } => {
                seen_version.insert(key, *version);
            }
            Output::Created => {
                seen_version.insert(key, 0);
            }
            _ => {}
        }
        let determinate = output != Output::Unknown;
        record.ops.push(Op {
            client,
            key: key_name(key),
            call_ns,
            return_ns: determinate.then_some(return_ns),
            input,
            output,
        });
    }
    if let Some(session) = connection {
        session.close();
    }
    record
}

fn kind(input: &Input) -> &'static str {
    match input {
        Input::Read => "getData",
        Input::Write { .. } | Input::Cas { .. } => "setData",
        Input::Create { .. } => "create",
        Input::Delete { .. } => "delete",
    }
}

fn choose_input(rng: &mut Rng, client: u32, next_value: &mut u64, seen: Option<&i32>) -> Input {
    let roll = rng.below(100);
    let mut value = || {
        *next_value += 1;
        format!("c{client}-{next_value}")
    };
    if roll < READ_PCT {
        Input::Read
    } else if roll < READ_PCT + WRITE_PCT {
        Input::Write { value: value() }
    } else if roll < READ_PCT + WRITE_PCT + CAS_PCT {
        Input::Cas {
            value: value(),
            expected_version: seen.copied().unwrap_or(0),
        }
    } else if roll < READ_PCT + WRITE_PCT + CAS_PCT + DELETE_PCT {
        // At the version last seen, as cas does: a versioned delete pins down which
        // incarnation of the node it removed, which keeps the search small.
        Input::Delete {
            expected_version: seen.copied(),
        }
    } else {
        Input::Create { value: value() }
    }
}

/// sync on `path`: the server catches up with the leader before the next request is served.
fn sync(session: &mut SyncClient, path: &str) -> Result<()> {
    let (err, _) = session.call(op::SYNC, |w| w.write_string(path))?;
    if err != 0 {
        anyhow::bail!("sync returned {}", crate::stats::error_code_name(err));
    }
    Ok(())
}

fn send(session: &mut SyncClient, path: &str, input: &Input) -> Result<(i32, Vec<u8>)> {
    match input {
        Input::Read => session.call(op::GET_DATA, |w| encode::path_watch(w, path, false)),
        Input::Write { value } => session.call(op::SET_DATA, |w| {
            encode::set_data(w, path, value.as_bytes(), -1)
        }),
        Input::Cas {
            value,
            expected_version,
        } => session.call(op::SET_DATA, |w| {
            encode::set_data(w, path, value.as_bytes(), *expected_version)
        }),
        Input::Create { value } => session.call(op::CREATE, |w| {
            encode::create(w, path, value.as_bytes(), &open_acl_unsafe(), 0)
        }),
        Input::Delete { expected_version } => session.call(op::DELETE, |w| {
            encode::path_version(w, path, expected_version.unwrap_or(-1))
        }),
    }
}

/// The model's output for a reply; Err for a reply the model has no outcome for (the op may
/// or may not have applied, so the caller records it as indeterminate).
fn decode(input: &Input, err: i32, body: &[u8]) -> Result<Output, String> {
    let code = ErrorCode::from_code(err);
    let unexpected = || {
        format!(
            "{} returned {}",
            kind(input),
            crate::stats::error_code_name(err)
        )
    };
    let mut r = Reader::new(body);
    let bad_body = |error: keel::proto::ProtoError| format!("{}: bad reply: {error}", kind(input));
    match (input, code) {
        (Input::Read, ErrorCode::Ok) => {
            let data = r.read_buffer().map_err(bad_body)?.unwrap_or(&[]);
            let stat = Stat::read(&mut r).map_err(bad_body)?;
            Ok(Output::Read {
                node: Some(Node {
                    value: String::from_utf8_lossy(data).into_owned(),
                    version: stat.version,
                }),
            })
        }
        (Input::Read, ErrorCode::NoNode) => Ok(Output::Read { node: None }),
        (Input::Write { .. } | Input::Cas { .. }, ErrorCode::Ok) => {
            let stat = Stat::read(&mut r).map_err(bad_body)?;
            Ok(Output::Written {
                version: stat.version,
            })
        }
        (Input::Create { .. }, ErrorCode::Ok) => Ok(Output::Created),
        (Input::Create { .. }, ErrorCode::NodeExists) => Ok(Output::NodeExists),
        (Input::Delete { .. }, ErrorCode::Ok) => Ok(Output::Deleted),
        (Input::Cas { .. } | Input::Delete { .. }, ErrorCode::BadVersion) => Ok(Output::BadVersion),
        (Input::Write { .. } | Input::Cas { .. } | Input::Delete { .. }, ErrorCode::NoNode) => {
            Ok(Output::NoNode)
        }
        _ => Err(unexpected()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel::proto::jute::Writer;

    #[test]
    fn replies_decode_to_model_outputs() {
        // getData's data and version, setData's new version, and the definite error codes.
        let mut body = Vec::new();
        let mut w = Writer::new(&mut body);
        w.write_buffer(Some(b"c1-4"));
        Stat {
            version: 3,
            ..Stat::default()
        }
        .write(&mut w);
        let read = decode(&Input::Read, 0, &body).unwrap();
        let expected = Node {
            value: "c1-4".to_string(),
            version: 3,
        };
        assert_eq!(
            read,
            Output::Read {
                node: Some(expected)
            }
        );
        let cas = Input::Cas {
            value: "x".to_string(),
            expected_version: 2,
        };
        assert_eq!(
            decode(&cas, ErrorCode::BadVersion.code(), &[]),
            Ok(Output::BadVersion)
        );
        assert_eq!(
            decode(
                &Input::Delete {
                    expected_version: None
                },
                ErrorCode::NoNode.code(),
                &[]
            ),
            Ok(Output::NoNode)
        );
        let delete = Input::Delete {
            expected_version: Some(1),
        };
        let unknown = decode(&delete, ErrorCode::NotEmpty.code(), &[]);
        assert!(unknown.unwrap_err().contains("NotEmpty"));
        assert!(decode(&Input::Read, 0, &[1, 2]).is_err(), "a short body");
    }

    #[test]
    fn the_mix_uses_every_op_and_fresh_values() {
        // 1000 draws give every input kind, and no written value repeats.
        let mut rng = Rng::new(1, 2);
        let mut next = 0;
        let mut values = std::collections::HashSet::new();
        let mut kinds = std::collections::HashSet::new();
        for _ in 0..1000 {
            let input = choose_input(&mut rng, 3, &mut next, Some(&5));
            kinds.insert(std::mem::discriminant(&input));
            match input {
                Input::Write { value } | Input::Create { value } => {
                    assert!(values.insert(value));
                }
                Input::Cas {
                    value,
                    expected_version,
                } => {
                    assert_eq!(expected_version, 5);
                    assert!(values.insert(value));
                }
                Input::Delete { expected_version } => assert_eq!(expected_version, Some(5)),
                Input::Read => {}
            }
        }
        assert_eq!(kinds.len(), 5);
    }
}
