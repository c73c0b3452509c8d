//! Criterion benchmark of applying committed txns to the data tree, as the replica core does
//! on every server of an ensemble:
//! - `set_data/view_every_<n>`: setData of 100 B on pseudo-random keys among 10,000 children
//!   of one parent, with a view of the tree taken every n applies (what `seal_batch` hands to
//!   the shards after each commit batch), so the copy-on-write copies of shared blocks are
//!   part of the cost. n = 1 is the worst case, 1,000,000 the copy-free one.
//! - `create_append/<children>`: creates of sequentially named children under a parent that
//!   already has that many, a view taken every 256: what a follower replays from the log tail
//!   after a SNAP, and what a registry's sequential nodes cost.
//! - `get_data/<children>`: a read's lookup (path to node, its stat and data) among that
//!   many children, the shards' side of the block size.
//!
//! Run: `cargo bench --bench tree`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use keel::proto::{op, open_acl_unsafe};
use keel::tree::{CreateKind, DataTree, Txn, TxnHeader};
use std::hint::black_box;
use std::sync::Arc;

const KEYS: usize = 10_000;
const VALUE_BYTES: usize = 100;

/// Starts the key order: the same in every run.
const KEY_ORDER_SEED: u64 = 0x9E37_79B9_7F4A_7C15;

/// The next pseudo-random index below `len` (a 64-bit LCG's high bits).
fn next_index(state: &mut u64, len: usize) -> usize {
    *state = state
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    (*state >> 33) as usize % len
}

fn header(zxid: i64, op: i32) -> TxnHeader {
    TxnHeader {
        session_id: 0x1_0000_0001,
        cxid: 1,
        zxid,
        time_ms: 1_700_000_000_000,
        op,
    }
}

fn create(path: String) -> Txn {
    Txn::Create {
        path,
        data: Some(Arc::from(vec![7u8; VALUE_BYTES])),
        acl: open_acl_unsafe(),
        ephemeral_owner: 0,
        parent_cversion: -1,
        kind: CreateKind::Persistent,
    }
}

/// A tree with `/bench` holding `children` nodes named `n0000000000`, ...
fn tree_with(children: usize) -> (DataTree, i64) {
    let mut tree = DataTree::new();
    let mut zxid = 1;
    tree.apply(&header(zxid, op::CREATE), &create("/bench".to_string()));
    for i in 0..children {
        zxid += 1;
        let txn = create(format!("/bench/n{i:010}"));
        tree.apply(&header(zxid, op::CREATE), &txn);
    }
    (tree, zxid)
}

fn set_data(c: &mut Criterion) {
    let mut group = c.benchmark_group("set_data");
    group.throughput(Throughput::Elements(1));
    let paths: Vec<String> = (0..KEYS).map(|i| format!("/bench/n{i:010}")).collect();
    let data: Arc<[u8]> = Arc::from(vec![9u8; VALUE_BYTES]);
    for view_every in [1u64, 64, 1_000_000] {
        let (mut tree, mut zxid) = tree_with(KEYS);
        let mut view = tree.clone();
        let mut state = KEY_ORDER_SEED;
        let mut applied: u64 = 0;
        group.bench_function(BenchmarkId::new("view_every", view_every), |b| {
            b.iter(|| {
                let path = &paths[next_index(&mut state, KEYS)];
                zxid += 1;
                let txn = Txn::SetData {
                    path: path.clone(),
                    data: Some(data.clone()),
                    version: 1,
                };
                black_box(tree.apply(&header(zxid, op::SET_DATA), &txn));
                applied += 1;
                if applied.is_multiple_of(view_every) {
                    view = tree.clone();
                }
            });
        });
        black_box(&view);
    }
    group.finish();
}

fn create_append(c: &mut Criterion) {
    let mut group = c.benchmark_group("create_append");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    for children in [10_000usize, 200_000] {
        let (mut tree, mut zxid) = tree_with(children);
        let mut view = tree.clone();
        let mut next = children;
        group.bench_function(BenchmarkId::from_parameter(children), |b| {
            b.iter(|| {
                zxid += 1;
                let txn = create(format!("/bench/n{next:010}"));
                next += 1;
                black_box(tree.apply(&header(zxid, op::CREATE), &txn));
                if next.is_multiple_of(256) {
                    view = tree.clone();
                }
            });
        });
        black_box(&view);
    }
    group.finish();
}

fn get_data(c: &mut Criterion) {
    let mut group = c.benchmark_group("get_data");
    group.throughput(Throughput::Elements(1));
    for children in [10_000usize, 1_000_000] {
        let (tree, _) = tree_with(children);
        let paths: Vec<String> = (0..children).map(|i| format!("/bench/n{i:010}")).collect();
        let mut state = KEY_ORDER_SEED;
        group.bench_function(BenchmarkId::from_parameter(children), |b| {
            b.iter(|| {
                let path = &paths[next_index(&mut state, children)];
                let node = tree.node(path).expect("every key exists");
                black_box((node.stat(), node.data().map(|data| data.len())));
            });
        });
    }
    group.finish();
}

criterion_group!(benches, set_data, create_append, get_data);
criterion_main!(benches);
