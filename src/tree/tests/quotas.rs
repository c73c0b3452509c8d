//! Quota scenarios: the stats node's data after each write, as ZooKeeper 3.8 leaves it, and
//! hard-limit enforcement in prep.

use super::*;

const HARD_LIMITS: &[u8] = b"count=-1,bytes=-1=;byteHardLimit=10;countHardLimit=3";

/// What zkCli's `setquota` sends: the quota path's parents (null data, existing ones are fine),
/// the limits node, then the stats node with `count=0,bytes=0`.
fn set_quota(h: &mut Harness, path: &str, limits: &[u8]) {
    let mut quota_path = "/zookeeper/quota".to_string();
    for segment in path.split('/').filter(|segment| !segment.is_empty()) {
        quota_path = format!("{quota_path}/{segment}");
        let result = h.write(create_with(&quota_path, None, 0, op::CREATE, -1));
        assert!(matches!(
            result.result,
            OpResult::Created { .. } | OpResult::Error(ErrorCode::NodeExists)
        ));
    }
    let limits_result = h.write(create(&format!("{quota_path}/zookeeper_limits"), limits));
    assert!(matches!(limits_result.result, OpResult::Created { .. }));
    let stats_result = h.write(create(
        &format!("{quota_path}/zookeeper_stats"),
        b"count=0,bytes=0",
    ));
    assert!(matches!(stats_result.result, OpResult::Created { .. }));
}

/// The stats node's data as text, or `<none>`.
fn stats(h: &Harness, path: &str) -> String {
    h.tree
        .node(&format!("/zookeeper/quota{path}/zookeeper_stats"))
        .and_then(|node| {
            node.data()
                .map(|data| String::from_utf8_lossy(data).into_owned())
        })
        .unwrap_or_else(|| "<none>".to_string())
}

/// (nodes, data bytes) of the subtree at `top`, counted from scratch.
fn recount(tree: &DataTree, top: &str) -> (i64, i64) {
    let mut usage = (0, 0);
    tree.walk(|path, node| {
        if path == top || path.starts_with(&format!("{top}/")) {
            usage.0 += 1;
            usage.1 += node.data().map_or(0, |data| data.len() as i64);
        }
    });
    usage
}

fn failed(result: &TxnResult) -> ErrorCode {
    result.result.err()
}

#[test]
fn stats_follow_creates_sets_and_deletes() {
    // setquota on /q counts /q itself, then every create, setData and delete below it moves
    // the stats in place: no version, mzxid or mtime change, no watch event.
    let mut h = Harness::new();
    h.write(create("/q", b"q"));
    set_quota(&mut h, "/q", b"count=4,bytes=100");
    assert_eq!(stats(&h, "/q"), "count=1,bytes=1");
    let stats_path = "/zookeeper/quota/q/zookeeper_stats";
    let created = h.stat(stats_path);
    let result = h.write(create("/q/a", b"12345"));
    assert_eq!(stats(&h, "/q"), "count=2,bytes=6");
    assert!(result
        .triggers
        .iter()
        .all(|t| !t.path.starts_with("/zookeeper")));
    h.write(create("/q/a/b", b"abc"));
    assert_eq!(stats(&h, "/q"), "count=3,bytes=9");
    h.write(set_data("/q/a", b"1", -1));
    assert_eq!(stats(&h, "/q"), "count=3,bytes=5");
    h.write(create_with("/q/e-", None, 3, op::CREATE, -1));
    assert_eq!(stats(&h, "/q"), "count=4,bytes=5");
    h.write(delete("/q/a/b", -1));
    assert_eq!(stats(&h, "/q"), "count=3,bytes=2");
    h.write(WriteOp::CloseSession);
    assert_eq!(stats(&h, "/q"), "count=2,bytes=2");
    h.write(create("/other", b"zzz"));
    h.write(create("/qq", b"zzz"));
    assert_eq!(stats(&h, "/q"), "count=2,bytes=2");
    let now = h.stat(stats_path);
    assert_eq!(
        (now.version, now.mzxid, now.mtime, now.data_length),
        (0, created.mzxid, created.mtime, 15)
    );
    assert_eq!(created.mzxid, created.czxid);
    assert_eq!(
        h.tree
            .node("/zookeeper/quota/q/zookeeper_limits")
            .and_then(|n| n.data().map(|d| d.to_vec())),
        Some(b"count=4,bytes=100".to_vec())
    );
}

#[test]
fn setquota_counts_the_existing_subtree() {
    // Creating the stats node fills it with the subtree's nodes and data bytes, null data
    // counting zero, however the client initialised it.
    let mut h = Harness::new();
    h.write(create_with("/p", None, 0, op::CREATE, -1));
    h.write(create("/p/x", b"ab"));
    h.write(create("/p/x/y", b"cde"));
    set_quota(&mut h, "/p", b"count=10");
    assert_eq!(stats(&h, "/p"), "count=3,bytes=5");
    assert_eq!(recount(&h.tree, "/p"), (3, 5));
}

#[test]
fn stats_without_limits_are_filled_once_then_left_alone() {
    // A stats node created before its limits node is filled at creation but only tracks
    // writes once the limits node registers the quota.
    let mut h = Harness::new();
    h.write(create("/p", b"12"));
    h.write(create_with("/zookeeper/quota/p", None, 0, op::CREATE, -1));
    h.write(create("/zookeeper/quota/p/zookeeper_stats", b"junk"));
    assert_eq!(stats(&h, "/p"), "count=1,bytes=2");
    h.write(create("/p/z", b"z"));
    assert_eq!(stats(&h, "/p"), "count=1,bytes=2");
    h.write(create("/zookeeper/quota/p/zookeeper_limits", b"count=5"));
    h.write(create("/p/w", b"w"));
    assert_eq!(stats(&h, "/p"), "count=2,bytes=3");
}

#[test]
fn the_deepest_quota_takes_the_update() {
    // With quotas on /n and /n/m (zkCli refuses nesting, the server does not), a write
    // counts only toward the longest quota prefix of its path.
    let mut h = Harness::new();
    h.write(create("/n", b""));
    h.write(create("/n/m", b"m"));
    set_quota(&mut h, "/n", b"count=9");
    set_quota(&mut h, "/n/m", b"count=9");
    assert_eq!(
        (stats(&h, "/n"), stats(&h, "/n/m")),
        ("count=2,bytes=1".to_string(), "count=1,bytes=1".to_string())
    );
    h.write(create("/n/m/k", b"1"));
    h.write(create("/n/mm", b"22"));
    assert_eq!(
        (stats(&h, "/n"), stats(&h, "/n/m")),
        ("count=3,bytes=3".to_string(), "count=2,bytes=2".to_string())
    );
    assert_eq!(h.tree.quota_prefix("/n/m/k/z").as_deref(), Some("/n/m"));
    assert_eq!(h.tree.quota_prefix("/nm"), None);
}

#[test]
fn delquota_stops_tracking_and_setquota_recounts() {
    // zkCli's delquota deletes the limits and stats nodes; after the limits node goes, writes
    // leave the stats alone, and a new setquota starts again from a recount.
    let mut h = Harness::new();
    h.write(create("/d", b"d"));
    set_quota(&mut h, "/d", b"count=4");
    h.write(delete("/zookeeper/quota/d/zookeeper_limits", -1));
    assert_eq!(h.tree.quota_prefix("/d"), None);
    h.write(create("/d/x", b"xx"));
    assert_eq!(stats(&h, "/d"), "count=1,bytes=1");
    h.write(delete("/zookeeper/quota/d/zookeeper_stats", -1));
    h.write(delete("/zookeeper/quota/d", -1));
    assert_eq!(stats(&h, "/d"), "<none>");
    set_quota(&mut h, "/d", b"count=4");
    assert_eq!(stats(&h, "/d"), "count=2,bytes=3");
    h.write(delete("/d/x", -1));
    h.write(delete("/d", -1));
    assert_eq!(stats(&h, "/d"), "count=0,bytes=0");
}

#[test]
fn stats_keep_extra_keys_and_skip_unparsable_data() {
    // An update keeps the stats node's other keys in Java's order; data ZooKeeper cannot
    // parse (malformed or null) is left as it is.
    let mut h = Harness::new();
    h.write(create("/x", b""));
    set_quota(&mut h, "/x", b"count=4");
    h.write(set_data(
        "/zookeeper/quota/x/zookeeper_stats",
        b"count=1,bytes=1=;zz=5;aa=2",
        -1,
    ));
    h.write(create("/x/a", b"a"));
    assert_eq!(stats(&h, "/x"), "count=2,bytes=2=;aa=2;zz=5");
    h.write(set_data("/zookeeper/quota/x/zookeeper_stats", b"junk", -1));
    h.write(create("/x/b", b"b"));
    assert_eq!(stats(&h, "/x"), "junk");
    let null_data = WriteOp::SetData {
        path: "/zookeeper/quota/x/zookeeper_stats".to_string(),
        data: None,
        version: -1,
    };
    h.write(null_data);
    h.write(create("/x/c", b"c"));
    assert_eq!(stats(&h, "/x"), "<none>");
    h.write(set_data("/zookeeper/quota/x/zookeeper_stats", b"", -1));
    h.write(create("/x/d", b"dd"));
    assert_eq!(stats(&h, "/x"), "count=0,bytes=1");
}

#[test]
fn odd_quota_paths_never_panic() {
    // A limits node right under /zookeeper/quota registers nothing (ZooKeeper 3.8 crashes);
    // a stats node there counts the whole tree, as 3.8's lookup of "" finds the root; and
    // 3.8's delete unregisters by cutting 16 characters off any parent under /zookeeper.
    let mut h = Harness::new();
    h.write(create("/zookeeper/quota/zookeeper_limits", b"count=1"));
    assert_eq!(h.tree.quota_prefix("/a"), None);
    h.write(create("/a", b"abc"));
    h.write(create("/zookeeper/quota/zookeeper_stats", b"1234"));
    // Root, /zookeeper, quota, config, the limits node, /a and the stats node itself.
    assert_eq!(stats(&h, ""), "count=7,bytes=14");
    h.write(delete("/zookeeper/quota/zookeeper_limits", -1));
    h.write(create_with("/zookeeper/quotaX", None, 0, op::CREATE, -1));
    h.write(create("/zookeeper/quotaX/zookeeper_limits", b"count=1"));
    assert_eq!(h.tree.quota_prefix("/X/y").as_deref(), Some("/X"));
    h.write(create("/X", b""));
    h.write(delete("/zookeeper/quotaX/zookeeper_limits", -1));
    assert_eq!(h.tree.quota_prefix("/X/y"), None);
    h.write(create("/fgh", b""));
    set_quota(&mut h, "/fgh", b"count=9");
    h.write(create_with("/zookeeper/abcdefgh", None, 0, op::CREATE, -1));
    h.write(create("/zookeeper/abcdefgh/zookeeper_limits", b""));
    assert_eq!(h.tree.quota_prefix("/fgh").as_deref(), Some("/fgh"));
    h.write(delete("/zookeeper/abcdefgh/zookeeper_limits", -1));
    assert_eq!(h.tree.quota_prefix("/fgh"), None);
    h.write(create("/zookeeper/zookeeper_limits", b""));
    h.write(delete("/zookeeper/zookeeper_limits", -1));
}

#[test]
fn cached_data_size_misses_stats_writes_as_in_zookeeper() {
    // ZooKeeper rewrites stats data behind its cached nodeDataSize, so the reported
    // approximate size lags a recount by the bytes those writes added.
    let mut h = Harness::new();
    h.write(create("/s", b""));
    set_quota(&mut h, "/s", b"count=100");
    let recount_size = |tree: &DataTree| {
        let mut size = 0u64;
        tree.walk(|path, node| {
            size += path.encode_utf16().count() as u64 + node.data().map_or(0, |d| d.len()) as u64;
        });
        size
    };
    assert_eq!(h.tree.approximate_data_size(), recount_size(&h.tree));
    for index in 0..10 {
        h.write(create(&format!("/s/{index}"), b""));
    }
    assert_eq!(stats(&h, "/s"), "count=11,bytes=0");
    assert_eq!(h.tree.approximate_data_size() + 1, recount_size(&h.tree));
    h.write(delete("/s/0", -1));
    h.write(delete("/s/1", -1));
    assert_eq!(stats(&h, "/s"), "count=9,bytes=0");
    assert_eq!(h.tree.approximate_data_size(), recount_size(&h.tree));
}

#[test]
fn hard_limits_fail_writes_only_when_enforced() {
    // With enforce_quota, a create or setData past countHardLimit or byteHardLimit fails with
    // QuotaExceeded before the version check and leaves the stats alone; without it, or
    // for a delete, nothing fails.
    let mut h = Harness::new();
    h.write(create("/h", b"h"));
    set_quota(&mut h, "/h", HARD_LIMITS);
    h.enforce_quota = true;
    assert!(matches!(
        h.write(create("/h/a", b"1234")).result,
        OpResult::Created { .. }
    ));
    assert!(matches!(
        h.write(create("/h/b", b"")).result,
        OpResult::Created { .. }
    ));
    assert_eq!(stats(&h, "/h"), "count=3,bytes=5");
    let over_count = h.write(create("/h/c", b""));
    assert_eq!(failed(&over_count), ErrorCode::QuotaExceeded);
    assert!(h.tree.node("/h/c").is_none());
    let txn = h.prep(SESSION, &create("/h/c", b""));
    assert_eq!(
        txn,
        Txn::Error {
            err: ErrorCode::QuotaExceeded
        }
    );
    assert!(matches!(
        h.write(set_data("/h/a", b"123456789", -1)).result,
        OpResult::SetData { .. }
    ));
    assert_eq!(stats(&h, "/h"), "count=3,bytes=10");
    let over_bytes = h.write(set_data("/h/a", b"1234567890", 99));
    assert_eq!(failed(&over_bytes), ErrorCode::QuotaExceeded);
    let same_size = h.write(set_data("/h/a", b"abcdefghi", -1));
    assert!(matches!(same_size.result, OpResult::SetData { .. }));
    assert_eq!(failed(&h.write(create("/other/x", b""))), ErrorCode::NoNode);
    assert_eq!(failed(&h.write(delete("/h/b", -1))), ErrorCode::Ok);
    h.enforce_quota = false;
    assert!(matches!(
        h.write(create("/h/c", b"")).result,
        OpResult::Created { .. }
    ));
    assert!(matches!(
        h.write(create("/h/d", b"xyz")).result,
        OpResult::Created { .. }
    ));
    assert_eq!(stats(&h, "/h"), "count=4,bytes=13");
}

#[test]
fn soft_limits_never_fail() {
    // count= and bytes= in the limits node are soft: ZooKeeper only logs when they are passed.
    let mut h = Harness::new();
    h.enforce_quota = true;
    h.write(create("/s", b""));
    set_quota(&mut h, "/s", b"count=1,bytes=1");
    assert!(matches!(
        h.write(create("/s/a", b"abc")).result,
        OpResult::Created { .. }
    ));
    assert!(matches!(
        h.write(set_data("/s/a", b"abcdef", -1)).result,
        OpResult::SetData { .. }
    ));
    assert_eq!(stats(&h, "/s"), "count=2,bytes=6");
}

#[test]
fn multi_checks_quota_against_the_tree_before_it() {
    // ZooKeeper checks quotas against its database, not the multi's earlier ops: two creates
    // that each fit alone both pass, and a quota set up inside the multi is not enforced yet.
    let mut h = Harness::new();
    h.enforce_quota = true;
    h.write(create("/h", b"h"));
    set_quota(&mut h, "/h", HARD_LIMITS);
    h.write(create("/h/a", b""));
    let both = h.write(WriteOp::Multi(vec![
        create("/h/b", b""),
        create("/h/c", b""),
    ]));
    assert_eq!(failed(&both), ErrorCode::Ok);
    assert_eq!(stats(&h, "/h"), "count=4,bytes=1");
    let over = h.write(WriteOp::Multi(vec![
        create("/h/d", b""),
        create("/h/e", b""),
    ]));
    let expected = OpResult::Multi(vec![
        error(ErrorCode::QuotaExceeded),
        error(ErrorCode::RuntimeInconsistency),
    ]);
    assert_eq!(over.result, expected);
    h.write(create("/m", b""));
    let setup = WriteOp::Multi(vec![
        create_with("/zookeeper/quota/m", None, 0, op::CREATE, -1),
        create("/zookeeper/quota/m/zookeeper_limits", b"countHardLimit=1"),
        create("/zookeeper/quota/m/zookeeper_stats", b"count=0,bytes=0"),
        create("/m/a", b"1"),
    ]);
    assert_eq!(failed(&h.write(setup)), ErrorCode::Ok);
    assert_eq!(stats(&h, "/m"), "count=2,bytes=1");
    assert_eq!(
        failed(&h.write(create("/m/b", b""))),
        ErrorCode::QuotaExceeded
    );
}

#[test]
fn unparsable_limits_fail_the_whole_request_when_enforced() {
    // ZooKeeper's prep cannot parse malformed limits and answers MarshallingError for the
    // request, a multi included; without enforcement the data is never read.
    let mut h = Harness::new();
    h.write(create("/b", b""));
    set_quota(&mut h, "/b", b"count=4");
    h.write(set_data(
        "/zookeeper/quota/b/zookeeper_limits",
        b"count=four",
        -1,
    ));
    assert!(matches!(
        h.write(create("/b/x", b"")).result,
        OpResult::Created { .. }
    ));
    h.enforce_quota = true;
    assert_eq!(
        failed(&h.write(create("/b/y", b""))),
        ErrorCode::MarshallingError
    );
    let multi = WriteOp::Multi(vec![create("/c", b""), create("/b/y", b"")]);
    let txn = h.prep(SESSION, &multi);
    assert_eq!(
        txn,
        Txn::Error {
            err: ErrorCode::MarshallingError
        }
    );
    assert_eq!(failed(&h.write(multi)), ErrorCode::MarshallingError);
    assert!(h.tree.node("/c").is_none());
}

mod random {
    //! Random writes around a quota: its stats always equal a recount of its subtree.

    use super::super::random_ops::write_op;
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        #[test]
        fn stats_match_a_recount(
            enforce in any::<bool>(),
            ops in prop::collection::vec(write_op(), 1..60),
        ) {
            // Whatever is written (creates, deletes, sets, multis, session closes, with or
            // without enforcement of a hard count limit of 6) the stats of the quota on /a
            // track /a's subtree exactly.
            let mut h = Harness::new();
            h.write(create("/a", b"a"));
            set_quota(&mut h, "/a", b"count=-1,bytes=-1=;countHardLimit=6");
            h.enforce_quota = enforce;
            for (session, write) in ops {
                h.write_as(session, write);
                let (count, bytes) = recount(&h.tree, "/a");
                prop_assert_eq!(stats(&h, "/a"), format!("count={count},bytes={bytes}"));
            }
        }
    }
}
