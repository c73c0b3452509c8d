//! A data directory holding one snapshot of a large tree, for benchmarks that need a server
//! with a million znodes without loading them over the wire (`benches/snapshot_stall.sh`).
//!
//! Ignored unless asked for:
//!
//!   KEEL_FIXTURE_DIR=/tmp/x KEEL_FIXTURE_SHAPE=spread \
//!     cargo test --release --test snapshot_fixture -- --ignored --nocapture
//!
//! Shapes (100 B of data per znode, OPEN_ACL_UNSAFE):
//! - `spread`: 1,000 parents `/p0000..` x 1,000 children `node-<15 digits>` (as
//!   `benches/load_tree.py` and `benches/restart_1m.sh` build it);
//! - `flat`: 1,000,000 children `node-<15 digits>` under `/flat`.
//!
//! `KEEL_FIXTURE_NODES` changes the total (default 1,000,000).

use keel::proto::{op, open_acl_unsafe};
use keel::snapshot::write_snapshot;
use keel::tree::{CreateKind, DataTree, Txn, TxnHeader};
use std::path::PathBuf;
use std::sync::Arc;

fn create(tree: &mut DataTree, path: String, data: &Arc<[u8]>) {
    let zxid = tree.last_zxid() + 1;
    let header = TxnHeader {
        session_id: 0,
        cxid: 0,
        zxid,
        time_ms: 1_000,
        op: op::CREATE,
    };
    let txn = Txn::Create {
        path,
        data: Some(data.clone()),
        acl: open_acl_unsafe(),
        ephemeral_owner: 0,
        parent_cversion: -1,
        kind: CreateKind::Persistent,
    };
    tree.apply(&header, &txn);
}

#[test]
#[ignore = "writes a large snapshot for benchmarks; run with KEEL_FIXTURE_DIR set"]
fn write_fixture_snapshot() {
    let Some(dir) = std::env::var_os("KEEL_FIXTURE_DIR").map(PathBuf::from) else {
        eprintln!("KEEL_FIXTURE_DIR is not set: nothing to do");
        return;
    };
    let shape = std::env::var("KEEL_FIXTURE_SHAPE").unwrap_or_else(|_| "spread".into());
    let nodes: usize = std::env::var("KEEL_FIXTURE_NODES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(1_000_000);
    let data: Arc<[u8]> = Arc::from(vec![b'x'; 100]);
    let mut tree = DataTree::new();
    match shape.as_str() {
        "spread" => {
            let parents = nodes.div_ceil(1_000);
            for parent in 0..parents {
                create(&mut tree, format!("/p{parent:04}"), &data);
                for child in 0..1_000.min(nodes - parent * 1_000) {
                    create(&mut tree, format!("/p{parent:04}/node-{child:015}"), &data);
                }
            }
        }
        "flat" => {
            create(&mut tree, "/flat".to_string(), &data);
            for child in 0..nodes {
                create(&mut tree, format!("/flat/node-{child:015}"), &data);
            }
        }
        other => panic!("KEEL_FIXTURE_SHAPE must be spread or flat, not {other:?}"),
    }
    let info = write_snapshot(&dir, &tree, &[]).expect("write the snapshot");
    println!(
        "{shape}: {} nodes, {} MB, zxid {:#x} in {}",
        info.nodes,
        info.file_bytes >> 20,
        info.zxid,
        info.path.display()
    );
}
