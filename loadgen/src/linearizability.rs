//! linearizability: decides whether a recorded history of ops on versioned registers is
//! linearizable.
//!
//! Owns: the history format (`History`, saved as JSON by `--history` and read by `check`), the
//! versioned-register model and a bounded Wing–Gong search in the style of Porcupine (Lowe's
//! refinement: memoise each (set of linearized ops, model state) already explored). Must not: do
//! IO, read the clock, or run without a bound: every search stops after `steps_max` steps or
//! `memo_bytes_max` bytes of memo and answers `Unknown` then.
//!
//! Model: each key is a ZooKeeper node seen as a register `Option<(value, version)>`. Keys are
//! independent (P-compositionality), so each key's ops are checked on their own; the history is
//! linearizable iff every key's is. A `create` makes version 0, `setData` adds one to the version
//! and returns the new one, a conditional `setData` (cas) fails with `BadVersion` on a version
//! mismatch, `delete` removes the node. A definite error (`NoNode`, `NodeExists`, `BadVersion`) is
//! an observation too and must fit the state at its linearization point.
//!
//! Indeterminate ops (timeouts, connection losses, ops unfinished at the end) have no return
//! time: they may take effect at any point after their invocation, or never. The search treats
//! them as optional: it succeeds once every determinate op is linearized.
//!
//! When a key is not linearizable, the report names op F, the op that the deepest partial
//! linearization (the most ops placed, as in Porcupine's longest linearizable prefix) could not
//! place next, and shows F, the ops concurrent with F, and the last writes that completed
//! before F was invoked.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

/// The `format` field of a history file this code reads and writes.
pub const HISTORY_FORMAT: u32 = 1;
/// Default search budget per key, in candidate steps.
pub const STEPS_MAX_DEFAULT: u64 = 5_000_000;
/// Default memo budget per key, in bytes (approximate: each entry's holes plus its overhead).
pub const MEMO_BYTES_MAX_DEFAULT: u64 = 512 << 20;
/// Completed writes before the failing op that the window shows.
const WINDOW_WRITES_BEFORE: usize = 3;
/// Assumed per-entry overhead of the memo's hash set, in bytes.
const MEMO_ENTRY_OVERHEAD_BYTES: u64 = 64;

/// A node's contents as a client sees them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Node {
    pub value: String,
    pub version: i32,
}

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Input {
    /// getData.
    Read,
    /// setData at any version (-1).
    Write { value: String },
    /// setData at `expected_version`.
    Cas {
        value: String,
        expected_version: i32,
    },
    /// create (persistent).
    Create { value: String },
    /// delete at `expected_version`, or at any version (-1) when it is absent.
    Delete {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected_version: Option<i32>,
    },
}

/// What the server answered; `Unknown` when no answer came (timeout, connection loss).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Output {
    Unknown,
    /// getData's data and stat version, or `None` for NoNode.
    Read {
        node: Option<Node>,
    },
    /// setData's new stat version.
    Written {
        version: i32,
    },
    Created,
    Deleted,
    NoNode,
    NodeExists,
    BadVersion,
}

/// One operation of one client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub client: u32,
    pub key: String,
    /// Invocation time, nanoseconds on the recorder's clock.
    pub call_ns: u64,
    /// Completion time; `None` for an indeterminate op.
    pub return_ns: Option<u64>,
    pub input: Input,
    pub output: Output,
}

impl Op {
    /// True when the op may or may not have taken effect.
    pub fn is_indeterminate(&self) -> bool {
        self.output == Output::Unknown || self.return_ns.is_none()
    }
}

/// A recorded history: each key's state before the first op, and the ops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    pub format: u32,
    /// Each key's node before any op (`None`: the node does not exist).
    pub initial: BTreeMap<String, Option<Node>>,
    pub ops: Vec<Op>,
}

impl History {
    /// Checks what the search relies on; a history file is untrusted input.
    ///
    /// # Errors
    /// Unknown format, an op on a key with no initial state, or a return before its call.
    pub fn validate(&self) -> Result<(), String> {
        if self.format != HISTORY_FORMAT {
            return Err(format!(
                "history format {} (this checker reads {HISTORY_FORMAT})",
                self.format
            ));
        }
        for (index, op) in self.ops.iter().enumerate() {
            if !self.initial.contains_key(&op.key) {
                return Err(format!(
                    "op #{index}: key {:?} has no initial state",
                    op.key
                ));
            }
            if op.return_ns.is_some_and(|ret| ret < op.call_ns) {
                return Err(format!("op #{index}: returns before it is called"));
            }
        }
        Ok(())
    }
}

/// Search bounds for one key.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub steps_max: u64,
    pub memo_bytes_max: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            steps_max: STEPS_MAX_DEFAULT,
            memo_bytes_max: MEMO_BYTES_MAX_DEFAULT,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Linearizable,
    NotLinearizable,
    /// The search hit its step or memo budget before deciding.
    Unknown,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Linearizable => "linearizable",
            Verdict::NotLinearizable => "not_linearizable",
            Verdict::Unknown => "unknown",
        }
    }
}

/// Why a key is not linearizable: op indices into `History::ops`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// The op whose return ends the shortest non-linearizable prefix.
    pub failing_op: usize,
    /// The failing op, the ops concurrent with it, and the writes just before it, by call time.
    pub ops: Vec<usize>,
    /// `describe_op` of each of `ops`, the failing one marked with `*`.
    pub lines: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyReport {
    pub key: String,
    pub ops: usize,
    pub indeterminate_ops: usize,
    pub verdict: Verdict,
    pub steps: u64,
    pub window: Option<Window>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub verdict: Verdict,
    pub ops: usize,
    pub indeterminate_ops: usize,
    pub steps: u64,
    pub keys: Vec<KeyReport>,
}

/// Checks every key of `history` within `limits` (per key).
///
/// # Errors
/// The history does not validate.
pub fn check(history: &History, limits: Limits) -> Result<Report, String> {
    history.validate()?;
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (index, op) in history.ops.iter().enumerate() {
        by_key.entry(op.key.as_str()).or_default().push(index);
    }
    let mut values = Interner::default();
    let mut keys = Vec::with_capacity(by_key.len());
    for (key, indices) in by_key {
        let initial = history.initial[key].as_ref().map(|node| values.node(node));
        let entries = compile(history, &indices, &mut values);
        keys.push(check_key(
            history,
            (key, &indices),
            &entries,
            initial,
            limits,
        ));
    }
    let verdict = if keys.iter().any(|k| k.verdict == Verdict::NotLinearizable) {
        Verdict::NotLinearizable
    } else if keys.iter().any(|k| k.verdict == Verdict::Unknown) {
        Verdict::Unknown
    } else {
        Verdict::Linearizable
    };
    Ok(Report {
        verdict,
        ops: history.ops.len(),
        indeterminate_ops: history
            .ops
            .iter()
            .filter(|op| op.is_indeterminate())
            .count(),
        steps: keys.iter().map(|k| k.steps).sum(),
        keys,
    })
}

fn check_key(
    history: &History,
    (key, indices): (&str, &[usize]),
    entries: &[Entry],
    initial: State,
    limits: Limits,
) -> KeyReport {
    let (outcome, steps, stuck) = search(entries, initial, limits);
    let window = (outcome == Verdict::NotLinearizable).then(|| failing_window(entries, stuck));
    let window = window.map(|mut window| {
        window.lines = window
            .ops
            .iter()
            .map(|&index| {
                let mark = if index == window.failing_op { '*' } else { ' ' };
                format!("{mark} {}", describe_op(history, index))
            })
            .collect();
        window
    });
    let own: Vec<&Op> = indices.iter().map(|&index| &history.ops[index]).collect();
    KeyReport {
        key: key.to_string(),
        ops: own.len(),
        indeterminate_ops: own.iter().filter(|op| op.is_indeterminate()).count(),
        verdict: outcome,
        steps,
        window,
    }
}

/// Values as small integers, so model states are cheap to hash and compare.
#[derive(Default)]
struct Interner {
    ids: HashMap<String, u32>,
}

impl Interner {
    fn value(&mut self, value: &str) -> u32 {
        let next = u32::try_from(self.ids.len()).expect("fewer than 2^32 distinct values");
        *self.ids.entry(value.to_string()).or_insert(next)
    }

    fn node(&mut self, node: &Node) -> CNode {
        CNode {
            value: self.value(&node.value),
            version: node.version,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct CNode {
    value: u32,
    version: i32,
}

type State = Option<CNode>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CInput {
    Read,
    Write(u32),
    Cas(u32, i32),
    Create(u32),
    Delete(Option<i32>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum COutput {
    Unknown,
    Read(State),
    Written(i32),
    Created,
    Deleted,
    NoNode,
    NodeExists,
    BadVersion,
}

/// One op of one key, in the search's terms.
#[derive(Debug, Clone, Copy)]
struct Entry {
    call_ns: u64,
    /// `u64::MAX` for an indeterminate op.
    return_ns: u64,
    input: CInput,
    output: COutput,
    /// Index into `History::ops`.
    op: usize,
}

impl Entry {
    fn is_determinate(&self) -> bool {
        self.output != COutput::Unknown
    }
}

/// The key's ops sorted by call time; indeterminate reads are dropped (they change nothing).
fn compile(history: &History, indices: &[usize], values: &mut Interner) -> Vec<Entry> {
    let mut entries: Vec<Entry> = indices
        .iter()
        .filter_map(|&index| {
            let op = &history.ops[index];
            let input = match &op.input {
                Input::Read => CInput::Read,
                Input::Write { value } => CInput::Write(values.value(value)),
                Input::Cas {
                    value,
                    expected_version,
                } => CInput::Cas(values.value(value), *expected_version),
                Input::Create { value } => CInput::Create(values.value(value)),
                Input::Delete { expected_version } => CInput::Delete(*expected_version),
            };
            let output = if op.is_indeterminate() {
                COutput::Unknown
            } else {
                match &op.output {
                    Output::Unknown => COutput::Unknown,
                    Output::Read { node } => COutput::Read(node.as_ref().map(|n| values.node(n))),
                    Output::Written { version } => COutput::Written(*version),
                    Output::Created => COutput::Created,
                    Output::Deleted => COutput::Deleted,
                    Output::NoNode => COutput::NoNode,
                    Output::NodeExists => COutput::NodeExists,
                    Output::BadVersion => COutput::BadVersion,
                }
            };
            if output == COutput::Unknown && input == CInput::Read {
                return None;
            }
            Some(Entry {
                call_ns: op.call_ns,
                return_ns: if output == COutput::Unknown {
                    u64::MAX
                } else {
                    op.return_ns.unwrap_or(u64::MAX)
                },
                input,
                output,
                op: index,
            })
        })
        .collect();
    entries.sort_by_key(|e| (e.call_ns, e.op));
    entries
}

/// The versioned register: what the op returns in `state`, and the state after it.
fn apply(state: State, input: CInput) -> (COutput, State) {
    match (input, state) {
        (CInput::Read, _) => (COutput::Read(state), state),
        (CInput::Write(_) | CInput::Cas(..) | CInput::Delete(_), None) => (COutput::NoNode, None),
        (CInput::Write(value), Some(node)) => {
            let version = node.version.wrapping_add(1);
            (COutput::Written(version), Some(CNode { value, version }))
        }
        (CInput::Cas(value, expected), Some(node)) if node.version == expected => {
            let version = node.version.wrapping_add(1);
            (COutput::Written(version), Some(CNode { value, version }))
        }
        (CInput::Cas(..), Some(_)) => (COutput::BadVersion, state),
        (CInput::Create(value), None) => (COutput::Created, Some(CNode { value, version: 0 })),
        (CInput::Create(_), Some(_)) => (COutput::NodeExists, state),
        (CInput::Delete(Some(expected)), Some(node)) if node.version != expected => {
            (COutput::BadVersion, state)
        }
        (CInput::Delete(_), Some(_)) => (COutput::Deleted, None),
    }
}

/// A fixed-size bitset of linearized entries.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Bits {
    words: Box<[u64]>,
}

impl Bits {
    fn new(count: usize) -> Bits {
        Bits {
            words: vec![0; count.div_ceil(64)].into_boxed_slice(),
        }
    }

    fn get(&self, index: usize) -> bool {
        self.words[index / 64] & (1 << (index % 64)) != 0
    }

    fn set(&mut self, index: usize, on: bool) {
        let mask = 1u64 << (index % 64);
        if on {
            self.words[index / 64] |= mask;
        } else {
            self.words[index / 64] &= !mask;
        }
    }

    /// The unset indices in `from..to`, ascending.
    fn zeros_in(&self, from: usize, to: usize) -> Vec<u32> {
        let mut zeros = Vec::new();
        let mut index = from;
        while index < to {
            let word = !self.words[index / 64] >> (index % 64);
            if word == 0 {
                index = (index / 64 + 1) * 64;
                continue;
            }
            index += word.trailing_zeros() as usize;
            if index < to {
                zeros.push(u32::try_from(index).expect("fewer than 2^32 ops per key"));
            }
            index += 1;
        }
        zeros
    }
}

/// A memo key: the linearized set as "every index below `high` except `holes`", which stays
/// small however long the history (the holes are the ops still open around the frontier and
/// indeterminate ops never placed), plus the model state.
#[derive(Debug, PartialEq, Eq, Hash)]
struct MemoKey {
    high: u32,
    holes: Box<[u32]>,
    state: State,
}

impl MemoKey {
    fn bytes(&self) -> u64 {
        self.holes.len() as u64 * 4 + MEMO_ENTRY_OVERHEAD_BYTES
    }
}

/// A step of the current partial linearization, kept to undo it.
struct Frame {
    chosen: usize,
    /// Where the candidate scan resumes after this step is undone (see `search`).
    position: usize,
    state_before: State,
    call_start: usize,
    return_start: usize,
    /// One past the highest linearized index before this step.
    high_before: usize,
    /// The only step worth trying from its configuration: backtracking goes past it.
    forced: bool,
}

/// The Wing–Gong search with memoisation. Returns the verdict and the steps taken.
fn search(entries: &[Entry], initial: State, limits: Limits) -> (Verdict, u64, usize) {
    let count = entries.len();
    let mut by_return: Vec<usize> = (0..count)
        .filter(|&i| entries[i].is_determinate())
        .collect();
    by_return.sort_by_key(|&i| (entries[i].return_ns, i));
    let determinate_total = by_return.len();
    let mut memo: HashSet<MemoKey> = HashSet::new();
    let mut memo_bytes = 0u64;
    let mut done = Bits::new(count);
    let mut high = 0usize;
    let (mut state, mut determinate_done, mut steps) = (initial, 0usize, 0u64);
    let (mut call_start, mut return_start, mut cursor) = (0usize, 0usize, 0usize);
    let mut stack: Vec<Frame> = Vec::with_capacity(count);
    // The deepest configuration seen (most determinate ops placed) and the op it could not
    // place next: the earliest pending return there.
    let (mut deepest_done, mut stuck) = (0usize, by_return.first().copied().unwrap_or(0));
    loop {
        if determinate_done == determinate_total {
            return (Verdict::Linearizable, steps, stuck);
        }
        while call_start < count && done.get(call_start) {
            call_start += 1;
        }
        while done.get(by_return[return_start]) {
            return_start += 1;
        }
        // Only ops invoked before the earliest pending return may go next (and that op
        // itself, even when it returned the nanosecond it was invoked).
        let earliest = by_return[return_start];
        let earliest_return_ns = entries[earliest].return_ns;
        if determinate_done > deepest_done {
            deepest_done = determinate_done;
            stuck = earliest;
        }
        let is_candidate = |index: usize, done: &Bits| {
            let concurrent = entries[index].call_ns < earliest_return_ns;
            !done.get(index) && (concurrent || index == earliest)
        };
        // An op that leaves the state as it is (a read, a failed write) and fits now can be
        // placed now without trying anything else first: any linearization that places it
        // later stays valid with it moved here. Such a step is "forced": it never branches.
        let mut found = None;
        let mut forced = false;
        if cursor == 0 {
            let mut next = call_start;
            while next < count && entries[next].call_ns <= earliest_return_ns {
                let candidate = next;
                next += 1;
                if !is_candidate(candidate, &done) || !entries[candidate].is_determinate() {
                    continue;
                }
                let (output, after) = apply(state, entries[candidate].input);
                if after == state && output == entries[candidate].output {
                    steps += 1;
                    forced = true;
                    found = Some((candidate, after));
                    break;
                }
            }
        }
        // Determinate ops first, then indeterminate ones (optional: placing them early only
        // adds branches). `cursor` counts positions over both passes: pass 0 is 0..count,
        // pass 1 is count..2*count.
        let mut position = 0;
        for pass in 0..2usize {
            if found.is_some() {
                break;
            }
            let base = pass * count;
            let mut next = cursor.saturating_sub(base).max(call_start);
            if cursor >= base + count {
                continue;
            }
            while next < count && entries[next].call_ns <= earliest_return_ns {
                let candidate = next;
                next += 1;
                let wanted = entries[candidate].is_determinate() == (pass == 0);
                if !wanted || !is_candidate(candidate, &done) {
                    continue;
                }
                steps += 1;
                if steps > limits.steps_max || memo_bytes > limits.memo_bytes_max {
                    return (Verdict::Unknown, steps, stuck);
                }
                let entry = &entries[candidate];
                let (output, after) = apply(state, entry.input);
                if entry.output != COutput::Unknown && entry.output != output {
                    continue;
                }
                position = base + candidate;
                found = Some((candidate, after));
                break;
            }
        }
        if let Some((chosen, after)) = found {
            // Every index below call_start is linearized, so the holes lie above it.
            done.set(chosen, true);
            let key_high = high.max(chosen + 1);
            let key = MemoKey {
                high: u32::try_from(key_high).expect("fewer than 2^32 ops per key"),
                holes: done.zeros_in(call_start, key_high).into_boxed_slice(),
                state: after,
            };
            let key_bytes = key.bytes();
            if memo.insert(key) {
                memo_bytes += key_bytes;
                stack.push(Frame {
                    chosen,
                    position,
                    state_before: state,
                    call_start,
                    return_start,
                    high_before: high,
                    forced,
                });
                high = key_high;
                state = after;
                determinate_done += usize::from(entries[chosen].is_determinate());
                cursor = 0;
                continue;
            }
            done.set(chosen, false);
            if !forced {
                // Seen before from here: try the next candidate.
                cursor = position + 1;
                continue;
            }
            // A forced step into a configuration already explored: this one fails too.
        }
        let Some(frame) = stack.pop() else {
            return (Verdict::NotLinearizable, steps, stuck);
        };
        done.set(frame.chosen, false);
        determinate_done -= usize::from(entries[frame.chosen].is_determinate());
        state = frame.state_before;
        call_start = frame.call_start;
        return_start = frame.return_start;
        high = frame.high_before;
        cursor = if frame.forced {
            usize::MAX
        } else {
            frame.position + 1
        };
    }
}

/// The ops around `stuck`, the op the deepest partial linearization could not place: those
/// concurrent with it and the last writes that completed before it was invoked.
fn failing_window(entries: &[Entry], stuck: usize) -> Window {
    let failing = &entries[stuck];
    assert!(
        failing.is_determinate(),
        "only an op with a result can be stuck"
    );
    let prefix = entries;
    let mut ops: Vec<&Entry> = prefix
        .iter()
        .filter(|e| e.call_ns <= failing.return_ns && e.return_ns >= failing.call_ns)
        .filter(|e| e.is_determinate() || e.call_ns <= failing.return_ns)
        .collect();
    let mut writes_before: Vec<&Entry> = prefix
        .iter()
        .filter(|e| e.return_ns < failing.call_ns && changes_state(e))
        .collect();
    writes_before.sort_by_key(|e| e.return_ns);
    let skip = writes_before.len().saturating_sub(WINDOW_WRITES_BEFORE);
    ops.extend(writes_before.into_iter().skip(skip));
    ops.sort_by_key(|e| (e.call_ns, e.op));
    ops.dedup_by_key(|e| e.op);
    Window {
        failing_op: failing.op,
        ops: ops.iter().map(|e| e.op).collect(),
        lines: Vec::new(),
    }
}

fn changes_state(entry: &Entry) -> bool {
    matches!(
        entry.output,
        COutput::Written(_) | COutput::Created | COutput::Deleted
    )
}

/// One line per op, for reports: `#12 client 3 k2 [1.000000 ms, 1.200000 ms] write "x" -> ...`.
pub fn describe_op(history: &History, index: usize) -> String {
    let op = &history.ops[index];
    let ms = |ns: u64| format!("{:.6}", ns as f64 / 1e6);
    let span = match op.return_ns {
        Some(ret) if !op.is_indeterminate() => format!("[{} ms, {} ms]", ms(op.call_ns), ms(ret)),
        _ => format!("[{} ms, never]", ms(op.call_ns)),
    };
    let input = match &op.input {
        Input::Read => "read".to_string(),
        Input::Write { value } => format!("write {value:?}"),
        Input::Cas {
            value,
            expected_version,
        } => format!("cas {value:?} if version {expected_version}"),
        Input::Create { value } => format!("create {value:?}"),
        Input::Delete {
            expected_version: None,
        } => "delete".to_string(),
        Input::Delete {
            expected_version: Some(version),
        } => format!("delete if version {version}"),
    };
    let node = |node: &Option<Node>| match node {
        Some(n) => format!("{:?} v{}", n.value, n.version),
        None => "no node".to_string(),
    };
    let output = match &op.output {
        Output::Unknown => "unknown (may or may not have taken effect)".to_string(),
        Output::Read { node: n } => node(n),
        Output::Written { version } => format!("ok, version {version}"),
        Output::Created | Output::Deleted => "ok".to_string(),
        Output::NoNode => "NoNode".to_string(),
        Output::NodeExists => "NodeExists".to_string(),
        Output::BadVersion => "BadVersion".to_string(),
    };
    format!(
        "#{index} client {} {} {span} {input} -> {output}",
        op.client, op.key
    )
}

impl Report {
    /// The text report; every figure comes from `self`.
    pub fn render_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "linearizability: {} ({} ops, {} indeterminate, {} keys, {} search steps)",
            self.verdict.name(),
            self.ops,
            self.indeterminate_ops,
            self.keys.len(),
            self.steps
        );
        for key in &self.keys {
            let _ = writeln!(
                out,
                "  key {}: {} ({} ops, {} indeterminate, {} steps)",
                key.key,
                key.verdict.name(),
                key.ops,
                key.indeterminate_ops,
                key.steps
            );
            if let Some(window) = &key.window {
                let _ = writeln!(
                    out,
                    "    op #{} cannot be placed: the search placed the most ops just before it, \
                     and no order of these ops explains its result:",
                    window.failing_op
                );
                for line in &window.lines {
                    let _ = writeln!(out, "    {line}");
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(value: &str, version: i32) -> Option<Node> {
        Some(Node {
            value: value.to_string(),
            version,
        })
    }

    fn op(client: u32, span: (u64, Option<u64>), input: Input, output: Output) -> Op {
        Op {
            client,
            key: "k".to_string(),
            call_ns: span.0,
            return_ns: span.1,
            input,
            output,
        }
    }

    fn read(client: u32, call: u64, ret: u64, seen: Option<Node>) -> Op {
        op(
            client,
            (call, Some(ret)),
            Input::Read,
            Output::Read { node: seen },
        )
    }

    fn write(client: u32, call: u64, ret: u64, value: &str, version: i32) -> Op {
        let input = Input::Write {
            value: value.to_string(),
        };
        op(
            client,
            (call, Some(ret)),
            input,
            Output::Written { version },
        )
    }

    fn lost_write(client: u32, call: u64, value: &str) -> Op {
        let input = Input::Write {
            value: value.to_string(),
        };
        op(client, (call, None), input, Output::Unknown)
    }

    fn history(ops: Vec<Op>) -> History {
        History {
            format: HISTORY_FORMAT,
            initial: [("k".to_string(), node("init", 0))].into_iter().collect(),
            ops,
        }
    }

    fn verdict(ops: Vec<Op>) -> Verdict {
        check(&history(ops), Limits::default()).unwrap().verdict
    }

    #[test]
    fn sequential_reads_and_writes_are_linearizable() {
        // Each read sees the write before it, with the version setData returned.
        let ops = vec![
            read(0, 0, 1, node("init", 0)),
            write(0, 2, 3, "a", 1),
            read(1, 4, 5, node("a", 1)),
            write(1, 6, 7, "b", 2),
            read(0, 8, 9, node("b", 2)),
        ];
        assert_eq!(verdict(ops), Verdict::Linearizable);
    }

    #[test]
    fn concurrent_ops_may_take_either_order() {
        // A read overlapping a write may see the old or the new value, and two overlapping
        // writes may apply in either order.
        let old = vec![write(0, 0, 10, "a", 1), read(1, 1, 5, node("init", 0))];
        let new = vec![write(0, 0, 10, "a", 1), read(1, 1, 5, node("a", 1))];
        let swapped = vec![
            write(0, 0, 10, "a", 2),
            write(1, 1, 9, "b", 1),
            read(2, 11, 12, node("a", 2)),
        ];
        assert_eq!(verdict(old), Verdict::Linearizable);
        assert_eq!(verdict(new), Verdict::Linearizable);
        assert_eq!(verdict(swapped), Verdict::Linearizable);
    }

    #[test]
    fn a_stale_read_is_caught_with_its_window() {
        // The write of "a" completed before the read began, yet the read sees the old value.
        let h = history(vec![
            read(2, 0, 1, node("init", 0)),
            write(0, 2, 3, "a", 1),
            read(1, 4, 5, node("init", 0)),
            read(1, 6, 7, node("a", 1)),
        ]);
        let report = check(&h, Limits::default()).unwrap();
        assert_eq!(report.verdict, Verdict::NotLinearizable);
        let window = report.keys[0].window.clone().expect("a window");
        assert_eq!(window.failing_op, 2);
        assert_eq!(window.ops, vec![1, 2]);
        let text = report.render_text();
        assert!(text.contains("* #2 client 1 k"), "{text}");
        assert!(
            !text.contains("#3 "),
            "later ops are not in the window: {text}"
        );
    }

    #[test]
    fn a_lost_write_is_caught() {
        // Two acknowledged writes, then a read that shows only the first took effect.
        let ops = vec![
            write(0, 0, 1, "a", 1),
            write(1, 2, 3, "b", 2),
            read(0, 4, 5, node("a", 1)),
        ];
        assert_eq!(verdict(ops), Verdict::NotLinearizable);
    }

    #[test]
    fn a_read_of_a_value_never_written_is_caught() {
        // Nobody wrote "ghost".
        let ops = vec![write(0, 0, 10, "a", 1), read(1, 2, 4, node("ghost", 1))];
        assert_eq!(verdict(ops), Verdict::NotLinearizable);
    }

    #[test]
    fn versions_must_match_too() {
        // The value is right but the version skips one: not a versioned-register history.
        let ops = vec![write(0, 0, 1, "a", 1), read(1, 2, 3, node("a", 2))];
        assert_eq!(verdict(ops), Verdict::NotLinearizable);
    }

    #[test]
    fn an_indeterminate_write_may_take_effect_later() {
        // The timed-out write of "x" shows up in a read long after the client gave up on it.
        let ops = vec![
            lost_write(0, 0, "x"),
            read(1, 10, 11, node("init", 0)),
            read(1, 20, 21, node("x", 1)),
        ];
        assert_eq!(verdict(ops), Verdict::Linearizable);
    }

    #[test]
    fn an_indeterminate_write_may_never_take_effect() {
        // The timed-out write of "x" is never seen: as if it never happened.
        let ops = vec![
            lost_write(0, 0, "x"),
            write(1, 10, 11, "y", 1),
            read(1, 20, 21, node("y", 1)),
        ];
        assert_eq!(verdict(ops), Verdict::Linearizable);
    }

    #[test]
    fn an_indeterminate_write_cannot_take_effect_before_it_is_invoked() {
        // "x" is seen before anybody tried to write it.
        let ops = vec![read(1, 0, 1, node("x", 1)), lost_write(0, 5, "x")];
        assert_eq!(verdict(ops), Verdict::NotLinearizable);
    }

    #[test]
    fn definite_errors_are_observations() {
        // NoNode after a delete is fine; NodeExists on a key that was deleted is not; a cas
        // at the current version succeeds and one at an old version fails.
        let delete = |c, call, ret, out| {
            let input = Input::Delete {
                expected_version: None,
            };
            op(c, (call, Some(ret)), input, out)
        };
        let delete_if = |c, call, ret, version, out| {
            let input = Input::Delete {
                expected_version: Some(version),
            };
            op(c, (call, Some(ret)), input, out)
        };
        let create = |c, call, ret, out| {
            let input = Input::Create {
                value: "n".to_string(),
            };
            op(c, (call, Some(ret)), input, out)
        };
        let cas = |c, call, ret, expected_version, out| {
            let input = Input::Cas {
                value: "c".to_string(),
                expected_version,
            };
            op(c, (call, Some(ret)), input, out)
        };
        let good = vec![
            delete(0, 0, 1, Output::Deleted),
            delete(1, 2, 3, Output::NoNode),
            read(0, 4, 5, None),
            create(1, 6, 7, Output::Created),
            cas(0, 8, 9, 0, Output::Written { version: 1 }),
            cas(1, 10, 11, 0, Output::BadVersion),
            read(0, 12, 13, node("c", 1)),
            delete_if(1, 14, 15, 0, Output::BadVersion),
            delete_if(0, 16, 17, 1, Output::Deleted),
            read(1, 18, 19, None),
        ];
        assert_eq!(verdict(good), Verdict::Linearizable);
        let bad = vec![
            delete(0, 0, 1, Output::Deleted),
            create(1, 2, 3, Output::NodeExists),
        ];
        assert_eq!(verdict(bad), Verdict::NotLinearizable);
    }

    #[test]
    fn keys_are_checked_independently() {
        // A stale read on key "b" fails the history; key "a" is fine on its own.
        let mut ops = vec![write(0, 0, 1, "x", 1), read(1, 2, 3, node("x", 1))];
        let mut stale = vec![write(0, 4, 5, "y", 1), read(1, 6, 7, node("init", 0))];
        for op in &mut stale {
            op.key = "b".to_string();
        }
        ops.append(&mut stale);
        let mut h = history(ops);
        h.initial.insert("b".to_string(), node("init", 0));
        let report = check(&h, Limits::default()).unwrap();
        assert_eq!(report.verdict, Verdict::NotLinearizable);
        let verdict_of = |key: &str| report.keys.iter().find(|k| k.key == key).unwrap().verdict;
        assert_eq!(verdict_of("k"), Verdict::Linearizable);
        assert_eq!(verdict_of("b"), Verdict::NotLinearizable);
    }

    #[test]
    fn the_step_budget_gives_unknown_not_a_hang() {
        // Many fully concurrent indeterminate writes and a read nobody could produce: with a
        // budget of 1000 steps the answer is unknown.
        let mut ops: Vec<Op> = (0..40).map(|c| lost_write(c, c.into(), "w")).collect();
        ops.push(read(99, 100, 101, node("nobody", 7)));
        let limits = Limits {
            steps_max: 1000,
            memo_bytes_max: MEMO_BYTES_MAX_DEFAULT,
        };
        let report = check(&history(ops), limits).unwrap();
        assert_eq!(report.verdict, Verdict::Unknown);
        assert!(report.steps <= 1001);
    }

    #[test]
    fn memo_keys_list_only_the_holes() {
        // Set bits 0..=9 and 12: below 13, only 10 and 11 are unset.
        let mut bits = Bits::new(200);
        for index in (0..10).chain([12, 150]) {
            bits.set(index, true);
        }
        assert_eq!(bits.zeros_in(0, 13), vec![10, 11]);
        assert_eq!(bits.zeros_in(5, 12), vec![10, 11]);
        assert_eq!(bits.zeros_in(140, 152).len(), 11);
        assert!(bits.zeros_in(0, 10).is_empty());
    }

    #[test]
    fn bad_histories_are_refused() {
        // A return before its call, and a key with no initial state, are errors.
        let mut h = history(vec![read(0, 5, 1, node("init", 0))]);
        assert!(check(&h, Limits::default()).is_err());
        h.ops[0].return_ns = Some(6);
        h.ops[0].key = "other".to_string();
        assert!(check(&h, Limits::default())
            .unwrap_err()
            .contains("initial"));
    }

    #[test]
    fn histories_round_trip_through_json() {
        // What --history writes, `check` reads back identically.
        let h = history(vec![
            write(0, 0, 1, "a", 1),
            lost_write(1, 2, "b"),
            read(0, 3, 4, None),
        ]);
        let text = serde_json::to_string(&h).unwrap();
        assert!(text.contains(r#""op":"write""#), "{text}");
        let back: History = serde_json::from_str(&text).unwrap();
        assert_eq!(back, h);
        // A delete may leave out its version.
        let delete: Input = serde_json::from_str(r#"{"op":"delete"}"#).unwrap();
        let expected_version = None;
        assert_eq!(delete, Input::Delete { expected_version });
    }

    /// A random sequential execution on `keys` keys by `clients` clients, then each op's
    /// interval is widened at random (never past the neighbours' linearization points): the
    /// result must be linearizable. Some ops are made indeterminate.
    fn random_linearizable_history(seed: u64, clients: u32, ops_count: usize) -> History {
        random_history_of_width(seed, clients, ops_count, 4)
    }

    /// As `random_linearizable_history`, each interval widened by up to `width` ops per side.
    fn random_history_of_width(seed: u64, clients: u32, ops_count: usize, width: u64) -> History {
        let mut rng = crate::rng::Rng::new(seed, 0);
        let keys = ["a", "b", "c"];
        let mut state: BTreeMap<&str, Option<Node>> =
            keys.iter().map(|k| (*k, node("init", 0))).collect();
        let mut ops = Vec::with_capacity(ops_count);
        for index in 0..ops_count {
            // Op `index` takes effect at time 100 * index + 50.
            let point = 100 * index as u64 + 50;
            let key = keys[rng.below(keys.len() as u64) as usize];
            let current = state[key].clone();
            let value = format!("v{index}");
            let (input, output, after) = match rng.below(5) {
                0 | 1 => (
                    Input::Read,
                    Output::Read {
                        node: current.clone(),
                    },
                    current,
                ),
                2 => match &current {
                    Some(n) => {
                        let next = node(&value, n.version + 1);
                        (
                            Input::Write { value },
                            Output::Written {
                                version: n.version + 1,
                            },
                            next,
                        )
                    }
                    None => (Input::Write { value }, Output::NoNode, None),
                },
                3 => match &current {
                    Some(n) => {
                        let expected_version = rng.percent(50).then_some(n.version);
                        (Input::Delete { expected_version }, Output::Deleted, None)
                    }
                    None => {
                        let input = Input::Delete {
                            expected_version: None,
                        };
                        (input, Output::NoNode, None)
                    }
                },
                _ => match &current {
                    Some(_) => (Input::Create { value }, Output::NodeExists, current),
                    None => {
                        let next = node(&value, 0);
                        (Input::Create { value }, Output::Created, next)
                    }
                },
            };
            state.insert(key, after);
            let spread = 100 * (1 + rng.below(width));
            let call = point.saturating_sub(rng.below(spread));
            let ret = point + rng.below(spread);
            let indeterminate = rng.below(20) == 0 && !matches!(input, Input::Read);
            ops.push(Op {
                client: rng.below(u64::from(clients)) as u32,
                key: key.to_string(),
                call_ns: call,
                return_ns: (!indeterminate).then_some(ret),
                input,
                output: if indeterminate {
                    Output::Unknown
                } else {
                    output
                },
            });
        }
        History {
            format: HISTORY_FORMAT,
            initial: keys
                .iter()
                .map(|k| (k.to_string(), node("init", 0)))
                .collect(),
            ops,
        }
    }

    #[test]
    fn random_sequential_executions_with_overlap_are_linearizable() {
        // 200 seeds × 300 ops, intervals widened up to 4 ops either way (some to nothing, so
        // an op may return the nanosecond it was invoked): always linearizable.
        for seed in 0..200 {
            let h = random_linearizable_history(seed, 6, 300);
            let report = check(&h, Limits::default()).unwrap();
            assert_eq!(report.verdict, Verdict::Linearizable, "seed {seed}");
        }
    }

    #[test]
    fn a_wide_history_is_decided_in_few_steps_per_op() {
        // 20,000 ops overlapping up to 32 ops either way, some indeterminate, some deletes
        // unversioned: linearizable within 15 steps per op, thanks to placing state-preserving
        // ops without branching and trying determinate ops first.
        let h = random_history_of_width(3, 32, 20_000, 32);
        let report = check(&h, Limits::default()).unwrap();
        assert_eq!(report.verdict, Verdict::Linearizable);
        assert!(report.steps < 15 * 20_000, "{} steps", report.steps);
    }

    #[test]
    fn corrupting_one_read_of_a_random_history_is_caught() {
        // The same histories with one read's result replaced by a value never written: caught.
        for seed in 0..50 {
            let mut h = random_linearizable_history(seed, 6, 200);
            let Some(victim) = h.ops.iter().position(|op| {
                matches!(op.output, Output::Read { node: Some(_) }) && op.return_ns.is_some()
            }) else {
                continue;
            };
            h.ops[victim].output = Output::Read {
                node: node("corrupt", 1),
            };
            let report = check(&h, Limits::default()).unwrap();
            assert_eq!(report.verdict, Verdict::NotLinearizable, "seed {seed}");
            let window = report.keys.iter().find_map(|k| k.window.clone()).unwrap();
            assert_eq!(window.failing_op, victim, "seed {seed}");
        }
    }
}
