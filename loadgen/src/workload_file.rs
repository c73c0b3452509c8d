//! workload_file: `--workload-file F`, a custom mix of the basic ops read from a TOML file.
//!
//! Owns: the file format (checked like any untrusted input: unknown fields, zero total weight
//! and out-of-range sizes are errors that name the field) and `MixWorkload`, whose generator
//! draws each op by weight. Keys and `<prefix>/w` are set up and torn down as `KvWorkload`
//! does. create and delete work on the session's own nodes under `<prefix>/w`: a session keeps
//! at most `OWN_NODES_MAX` of them, so a create with none free deletes instead, and a delete
//! with none left creates instead.
//!
//! ```toml
//! name = "read-heavy-zipf"          # optional; shown in the summary
//! [ops]                             # weights, any non-negative integers
//! getData = 60
//! exists = 10
//! getChildren = 5
//! setData = 20
//! create = 3
//! delete = 2
//! [keys]                            # optional; replaces --keys / --key-dist / --zipf-s
//! count = 10000
//! distribution = "zipf"             # or "uniform"
//! zipf_s = 0.99
//! [values]                          # optional; replaces --value-bytes
//! min_bytes = 10                    # each write draws its size uniformly in [min, max]
//! max_bytes = 1000                  # (or bytes = 100 for a fixed size)
//! ```

use crate::keys::KeyDistribution;
use crate::plan::{KEYS_MAX, VALUE_BYTES_MAX};
use crate::rng::Rng;
use crate::sync_client::SyncClient;
use crate::workload::{KvWorkload, OpGenerator, OpKind, Workload};
use anyhow::{bail, Context, Result};
use keel::proto::records::encode;
use keel::proto::{op, open_acl_unsafe, Acl};
use serde::Deserialize;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::Arc;

/// Own nodes a session keeps under `<prefix>/w` at most.
pub const OWN_NODES_MAX: usize = 16;
/// Upper bound on any one weight, so the sum fits easily.
const WEIGHT_MAX: u32 = 1_000_000;
/// The ops a file may weigh, in `OpKind` order.
const MIX_OPS: [OpKind; 6] = [
    OpKind::GetData,
    OpKind::Exists,
    OpKind::GetChildren,
    OpKind::SetData,
    OpKind::Create,
    OpKind::Delete,
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    name: Option<String>,
    ops: OpsSection,
    keys: Option<KeysSection>,
    values: Option<ValuesSection>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct OpsSection {
    #[serde(default, rename = "getData")]
    get_data: u32,
    #[serde(default)]
    exists: u32,
    #[serde(default, rename = "getChildren")]
    get_children: u32,
    #[serde(default, rename = "setData")]
    set_data: u32,
    #[serde(default)]
    create: u32,
    #[serde(default)]
    delete: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeysSection {
    count: Option<u64>,
    distribution: Option<String>,
    zipf_s: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct ValuesSection {
    bytes: Option<usize>,
    min_bytes: Option<usize>,
    max_bytes: Option<usize>,
}

/// A checked workload file.
#[derive(Debug, Clone, PartialEq)]
pub struct Mix {
    pub name: String,
    /// Weights in `MIX_OPS` order.
    pub weights: [u32; 6],
    /// Replaces the plan's keys when the file has a `[keys]` section.
    pub keys: Option<(u64, Option<f64>)>,
    /// Replaces --value-bytes when the file has a `[values]` section: (min, max).
    pub value_bytes: Option<(usize, usize)>,
}

impl Mix {
    /// Reads and checks a workload file.
    ///
    /// # Errors
    /// The file is unreadable, not TOML of this format, or a value is out of range.
    pub fn load(path: &std::path::Path) -> Result<Mix> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--workload-file {}", path.display()))?;
        Mix::parse(&text).with_context(|| format!("--workload-file {}", path.display()))
    }

    /// # Errors
    /// Not TOML of this format, or a value is out of range.
    pub fn parse(text: &str) -> Result<Mix> {
        let file: FileFormat = toml::from_str(text)?;
        let o = &file.ops;
        let weights = [
            o.get_data,
            o.exists,
            o.get_children,
            o.set_data,
            o.create,
            o.delete,
        ];
        if let Some(&weight) = weights.iter().find(|&&w| w > WEIGHT_MAX) {
            bail!("[ops]: weight {weight} is above {WEIGHT_MAX}");
        }
        if weights.iter().all(|&w| w == 0) {
            bail!("[ops]: give at least one op a positive weight");
        }
        let keys = file.keys.as_ref().map(check_keys).transpose()?;
        let value_bytes = file.values.as_ref().map(check_values).transpose()?;
        Ok(Mix {
            name: file.name.unwrap_or_else(|| "custom".to_string()),
            weights,
            keys,
            value_bytes,
        })
    }

    /// The key distribution the file asks for, if it has a `[keys]` section.
    pub fn key_distribution(&self) -> Option<KeyDistribution> {
        self.keys.map(|(count, zipf_s)| match zipf_s {
            Some(s) => KeyDistribution::zipf(count, s),
            None => KeyDistribution::uniform(count),
        })
    }

    /// `custom(name: getData=60 setData=20 …)` for the summary.
    pub fn describe(&self) -> String {
        let mut out = format!("file({}:", self.name);
        for (kind, weight) in MIX_OPS.iter().zip(self.weights) {
            if weight > 0 {
                let _ = write!(out, " {}={weight}", kind.name());
            }
        }
        out.push(')');
        out
    }
}

fn check_keys(keys: &KeysSection) -> Result<(u64, Option<f64>)> {
    let count = keys.count.unwrap_or(1000);
    if !(1..=KEYS_MAX).contains(&count) {
        bail!("[keys] count {count} is out of range [1, {KEYS_MAX}]");
    }
    let zipf_s = match keys.distribution.as_deref().unwrap_or("uniform") {
        "uniform" => None,
        "zipf" => {
            let s = keys.zipf_s.unwrap_or(0.99);
            if !(s.is_finite() && s > 0.0 && s <= 10.0) {
                bail!("[keys] zipf_s {s} must be in (0, 10]");
            }
            Some(s)
        }
        other => bail!("[keys] distribution {other:?}: use \"uniform\" or \"zipf\""),
    };
    Ok((count, zipf_s))
}

fn check_values(values: &ValuesSection) -> Result<(usize, usize)> {
    let (min, max) = match (values.bytes, values.min_bytes, values.max_bytes) {
        (Some(bytes), None, None) => (bytes, bytes),
        (None, Some(min), Some(max)) => (min, max),
        (None, None, None) => bail!("[values]: give bytes, or min_bytes and max_bytes"),
        _ => bail!("[values]: give either bytes, or both min_bytes and max_bytes"),
    };
    if min > max || max > VALUE_BYTES_MAX {
        bail!("[values]: need min_bytes {min} <= max_bytes {max} <= {VALUE_BYTES_MAX}");
    }
    Ok((min, max))
}

/// The basic ops in the file's proportions.
pub struct MixWorkload {
    pub kv: KvWorkload,
    pub mix: Mix,
    pub value_min_bytes: usize,
}

impl Workload for MixWorkload {
    fn describe(&self) -> String {
        self.mix.describe()
    }

    fn setup(&self, client: &mut SyncClient) -> Result<()> {
        self.kv.setup(client)
    }

    fn teardown(&self, client: &mut SyncClient) -> Result<()> {
        self.kv.teardown(client)
    }

    fn generator(&self, worker_index: usize, session_count: usize) -> Box<dyn OpGenerator> {
        let mut cumulative = [0u32; 6];
        let mut sum = 0;
        for (slot, weight) in cumulative.iter_mut().zip(self.mix.weights) {
            sum += weight;
            *slot = sum;
        }
        Box::new(MixGenerator {
            prefix: self.kv.prefix.clone(),
            keys: self.kv.keys.clone(),
            value: self.kv.value.clone(),
            value_min_bytes: self.value_min_bytes,
            cumulative,
            worker_index,
            acl: open_acl_unsafe(),
            sessions: vec![OwnNodes::default(); session_count],
            path: String::new(),
        })
    }
}

/// A session's own nodes under `<prefix>/w`, oldest first.
#[derive(Debug, Clone, Default)]
struct OwnNodes {
    next_seq: u64,
    live: VecDeque<u64>,
}

struct MixGenerator {
    prefix: String,
    keys: KeyDistribution,
    value: Arc<[u8]>,
    value_min_bytes: usize,
    cumulative: [u32; 6],
    worker_index: usize,
    acl: Vec<Acl>,
    sessions: Vec<OwnNodes>,
    path: String,
}

impl MixGenerator {
    fn draw(&self, rng: &mut Rng) -> OpKind {
        let total = self.cumulative[5];
        let roll = rng.below(u64::from(total)) as u32;
        let index = self.cumulative.iter().position(|&c| roll < c).unwrap_or(5);
        MIX_OPS[index]
    }

    fn value_len(&self, rng: &mut Rng) -> usize {
        let spread = (self.value.len() - self.value_min_bytes) as u64;
        self.value_min_bytes + rng.below(spread + 1) as usize
    }

    fn own_path(&mut self, slot: usize, seq: u64) {
        self.path.clear();
        let worker = self.worker_index;
        let _ = write!(self.path, "{}/w/m{worker}-{slot}-{seq}", self.prefix);
    }
}

impl OpGenerator for MixGenerator {
    fn next_op(
        &mut self,
        slot: usize,
        xid: i32,
        _now_ns: u64,
        rng: &mut Rng,
        out: &mut Vec<u8>,
    ) -> Option<OpKind> {
        let mut kind = self.draw(rng);
        let own = &self.sessions[slot];
        if kind == OpKind::Create && own.live.len() >= OWN_NODES_MAX {
            kind = OpKind::Delete;
        } else if kind == OpKind::Delete && own.live.is_empty() {
            kind = OpKind::Create;
        }
        match kind {
            OpKind::Create => {
                let own = &mut self.sessions[slot];
                let seq = own.next_seq;
                own.next_seq += 1;
                own.live.push_back(seq);
                self.own_path(slot, seq);
                let value = &self.value[..self.value_len(rng)];
                let (path, acl) = (&self.path, &self.acl);
                encode::request(out, xid, op::CREATE, |w| {
                    encode::create(w, path, value, acl, 0)
                });
            }
            OpKind::Delete => {
                let seq = self.sessions[slot].live.pop_front().expect("a live node");
                self.own_path(slot, seq);
                let path = &self.path;
                encode::request(out, xid, op::DELETE, |w| encode::path_version(w, path, -1));
            }
            OpKind::SetData => {
                KvWorkload::key_path(&self.prefix, self.keys.sample(rng), &mut self.path);
                let value = &self.value[..self.value_len(rng)];
                let path = &self.path;
                encode::request(out, xid, op::SET_DATA, |w| {
                    encode::set_data(w, path, value, -1)
                });
            }
            read => {
                KvWorkload::key_path(&self.prefix, self.keys.sample(rng), &mut self.path);
                let code = match read {
                    OpKind::GetData => op::GET_DATA,
                    OpKind::Exists => op::EXISTS,
                    _ => op::GET_CHILDREN,
                };
                let path = &self.path;
                encode::request(out, xid, code, |w| encode::path_watch(w, path, false));
            }
        }
        Some(kind)
    }

    fn on_connection_lost(&mut self, slot: usize) {
        // Creates and deletes in flight may or may not have applied: forget the own nodes
        // (teardown removes what is left under <prefix>/w); names never repeat.
        self.sessions[slot].live.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_file_parses() {
        // Every section and field, as in the module docs.
        let mix = Mix::parse(
            r#"
            name = "zipf-reads"
            [ops]
            getData = 60
            setData = 20
            create = 3
            delete = 2
            [keys]
            count = 500
            distribution = "zipf"
            zipf_s = 1.1
            [values]
            min_bytes = 10
            max_bytes = 1000
            "#,
        )
        .unwrap();
        assert_eq!(mix.weights, [60, 0, 0, 20, 3, 2]);
        assert_eq!(mix.keys, Some((500, Some(1.1))));
        assert_eq!(mix.value_bytes, Some((10, 1000)));
        assert_eq!(
            mix.describe(),
            "file(zipf-reads: getData=60 setData=20 create=3 delete=2)"
        );
    }

    #[test]
    fn bad_files_name_the_problem() {
        // Unknown fields, no weights, and contradictory sizes are refused with a reason.
        let cases = [
            ("[ops]\ngetdata = 1", "getdata"),
            ("[ops]\nexists = 0", "positive weight"),
            (
                "[ops]\nexists = 1\n[values]\nbytes = 5\nmax_bytes = 9",
                "either bytes",
            ),
            (
                "[ops]\nexists = 1\n[keys]\ndistribution = \"normal\"",
                "normal",
            ),
            (
                "[ops]\nexists = 1\n[values]\nmin_bytes = 9\nmax_bytes = 5",
                "min_bytes",
            ),
        ];
        for (text, expected) in cases {
            let error = format!("{:#}", Mix::parse(text).unwrap_err());
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn draws_follow_the_weights() {
        // 3:1 between getData and setData over 40,000 draws, within 2%.
        let mix = Mix::parse("[ops]\ngetData = 3\nsetData = 1").unwrap();
        let workload = MixWorkload {
            kv: KvWorkload {
                prefix: "/p".to_string(),
                keys: KeyDistribution::uniform(10),
                value: vec![b'x'; 8].into(),
                read_pct: 0,
            },
            mix,
            value_min_bytes: 8,
        };
        let mut generator = workload.generator(0, 1);
        let mut rng = Rng::new(5, 0);
        let mut out = Vec::new();
        let mut gets = 0;
        for xid in 0..40_000 {
            if generator.next_op(0, xid, 0, &mut rng, &mut out) == Some(OpKind::GetData) {
                gets += 1;
            }
        }
        let share = f64::from(gets) / 40_000.0;
        assert!((share - 0.75).abs() < 0.02, "{share}");
    }

    #[test]
    fn own_nodes_stay_bounded() {
        // Creates only: after OWN_NODES_MAX the session deletes its oldest instead.
        let mix = Mix::parse("[ops]\ncreate = 1").unwrap();
        let workload = MixWorkload {
            kv: KvWorkload {
                prefix: "/p".to_string(),
                keys: KeyDistribution::uniform(1),
                value: vec![b'x'; 4].into(),
                read_pct: 0,
            },
            mix,
            value_min_bytes: 1,
        };
        let mut generator = workload.generator(0, 1);
        let mut rng = Rng::new(5, 0);
        let mut out = Vec::new();
        let kinds: Vec<OpKind> = (0..40)
            .filter_map(|xid| generator.next_op(0, xid, 0, &mut rng, &mut out))
            .collect();
        assert!(kinds[..OWN_NODES_MAX].iter().all(|&k| k == OpKind::Create));
        assert_eq!(kinds[OWN_NODES_MAX], OpKind::Delete);
    }
}
