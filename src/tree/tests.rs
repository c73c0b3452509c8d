//! Scenario tests across prep, apply and watches, a property test over random op sequences,
//! and the (ignored) 1M-znode memory and speed measurement quoted in the module header.

use super::*;
use crate::proto::{op, perms, Acl, ErrorCode, EventType, Id, Stat};
use std::sync::Arc;

const SESSION: i64 = 0x100_0000_0000_0001;

/// Drives prep + apply the way the replica core does: one zxid and one millisecond per write.
struct Harness {
    tree: DataTree,
    time_ms: i64,
    ids: Vec<Id>,
    extended: bool,
    local_session: bool,
    enforce_quota: bool,
}

impl Harness {
    fn new() -> Harness {
        Harness {
            tree: DataTree::new(),
            time_ms: 1_000,
            ids: vec![Id::new("ip", "127.0.0.1")],
            extended: true,
            local_session: false,
            enforce_quota: false,
        }
    }

    fn prep(&self, session_id: i64, write: &WriteOp) -> Txn {
        let ctx = PrepContext {
            session_id,
            auth_ids: &self.ids,
            extended_types_enabled: self.extended,
            skip_acl: false,
            ephemeral_session_ok: !self.local_session,
            enforce_quota: self.enforce_quota,
        };
        prep(&self.tree, write, &ctx)
    }

    fn write_as(&mut self, session_id: i64, write: WriteOp) -> TxnResult {
        let txn = self.prep(session_id, &write);
        self.time_ms += 1;
        let header = TxnHeader {
            session_id,
            cxid: 0,
            zxid: self.tree.last_zxid() + 1,
            time_ms: self.time_ms,
            op: op_code(&write),
        };
        let result = self.tree.apply(&header, &txn);
        assert_eq!(self.tree.last_zxid(), header.zxid);
        assert_eq!(self.tree.invariants(), Ok(()));
        result
    }

    fn write(&mut self, write: WriteOp) -> TxnResult {
        self.write_as(SESSION, write)
    }

    fn stat(&self, path: &str) -> Stat {
        self.tree
            .node(path)
            .map(|node| node.stat())
            .unwrap_or_default()
    }
}

fn op_code(write: &WriteOp) -> i32 {
    match write {
        WriteOp::Create { op, .. } => *op,
        WriteOp::Delete { .. } => op::DELETE,
        WriteOp::DeleteContainer { .. } => op::DELETE_CONTAINER,
        WriteOp::SetData { .. } => op::SET_DATA,
        WriteOp::SetAcl { .. } => op::SET_ACL,
        WriteOp::Check { .. } => op::CHECK,
        WriteOp::Multi(_) => op::MULTI,
        WriteOp::CloseSession => op::CLOSE_SESSION,
    }
}

fn open() -> Vec<Acl> {
    vec![Acl::new(perms::ALL, "world", "anyone")]
}

fn create_with(path: &str, data: Option<&[u8]>, flags: i32, opcode: i32, ttl: i64) -> WriteOp {
    WriteOp::Create {
        path: path.to_string(),
        data: data.map(<[u8]>::to_vec),
        acl: open(),
        flags,
        ttl,
        op: opcode,
    }
}

fn create(path: &str, data: &[u8]) -> WriteOp {
    create_with(path, Some(data), 0, op::CREATE2, -1)
}

fn set_data(path: &str, data: &[u8], version: i32) -> WriteOp {
    WriteOp::SetData {
        path: path.to_string(),
        data: Some(data.to_vec()),
        version,
    }
}

fn delete(path: &str, version: i32) -> WriteOp {
    WriteOp::Delete {
        path: path.to_string(),
        version,
    }
}

fn error(code: ErrorCode) -> OpResult {
    OpResult::Error(code)
}

fn created_path(result: &TxnResult) -> String {
    match &result.result {
        OpResult::Created { path, .. } => path.clone(),
        other => panic!("expected a create, got {other:?}"),
    }
}

fn events(result: &TxnResult) -> Vec<(String, EventType)> {
    let pairs = result.triggers.iter();
    pairs.map(|t| (t.path.clone(), t.event)).collect()
}

#[test]
fn fresh_tree_matches_zookeeper() {
    // A new tree has ZooKeeper's four system nodes with their initial stats and ACLs.
    let tree = DataTree::new();
    assert_eq!(tree.node_count(), 5);
    assert_eq!(tree.approximate_data_size(), 44);
    assert_eq!(tree.last_zxid(), 0);
    assert_eq!(tree.all_children_number("/"), Some(3));
    let root = tree.node("/").map(|n| n.stat()).unwrap_or_default();
    assert_eq!((root.cversion, root.num_children, root.pzxid), (-1, 1, 0));
    let zookeeper = tree
        .node("/zookeeper")
        .map(|n| n.stat())
        .unwrap_or_default();
    assert_eq!((zookeeper.cversion, zookeeper.num_children), (-2, 2));
    let config = tree.node("/zookeeper/config");
    let config = config.map(|n| (n.stat().aversion, n.acl().to_vec(), n.data().cloned()));
    let read_only = vec![Acl::new(perms::READ, "world", "anyone")];
    assert_eq!(config, Some((-1, read_only, Some(Arc::from(Vec::new())))));
    assert_eq!(
        tree.node("/zookeeper/quota").map(|n| n.acl().to_vec()),
        Some(open())
    );
    assert_eq!(tree.node("").map(|n| n.num_children()), Some(1));
    assert_eq!(tree.acl_count(), 2);
    assert_eq!(tree.invariants(), Ok(()));
}

#[test]
fn create_sets_every_stat_field() {
    // A create stamps czxid/mzxid/pzxid and ctime/mtime with its txn and bumps the parent's
    // stored cversion and pzxid.
    let mut h = Harness::new();
    let result = h.write(create("/a", b"hello"));
    let stat = Stat {
        czxid: 1,
        mzxid: 1,
        ctime: 1_001,
        mtime: 1_001,
        version: 0,
        cversion: 0,
        aversion: 0,
        ephemeral_owner: 0,
        data_length: 5,
        num_children: 0,
        pzxid: 1,
    };
    let expected = OpResult::Created {
        path: "/a".to_string(),
        stat,
    };
    assert_eq!(result.result, expected);
    assert_eq!(h.stat("/a"), stat);
    let root = h.stat("/");
    assert_eq!(
        (root.cversion, root.num_children, root.pzxid, root.mzxid),
        (0, 2, 1, 0)
    );
    assert_eq!(h.tree.node("/").map(|n| n.stored_cversion()), Some(1));
    assert_eq!(h.tree.approximate_data_size(), 44 + 2 + 5);
}

#[test]
fn set_data_delete_and_set_acl_stats() {
    // setData moves mzxid/mtime/version only; a child create and delete move the parent's
    // pzxid and its derived cversion by one each; setACL moves aversion only.
    let mut h = Harness::new();
    h.write(create("/a", b"x"));
    let result = h.write(set_data("/a", b"yy", 0));
    let stat = h.stat("/a");
    assert_eq!(result.result, OpResult::SetData { stat });
    assert_eq!((stat.czxid, stat.mzxid, stat.pzxid), (1, 2, 1));
    assert_eq!(
        (stat.ctime, stat.mtime, stat.version, stat.data_length),
        (1_001, 1_002, 1, 2)
    );
    h.write(create("/a/c", b""));
    let parent = h.stat("/a");
    assert_eq!(
        (
            parent.cversion,
            parent.num_children,
            parent.pzxid,
            parent.mzxid
        ),
        (1, 1, 3, 2)
    );
    assert_eq!(h.write(delete("/a/c", 0)).result, OpResult::Deleted);
    let parent = h.stat("/a");
    assert_eq!(
        (parent.cversion, parent.num_children, parent.pzxid),
        (2, 0, 4)
    );
    assert_eq!(h.tree.node("/a").map(|n| n.stored_cversion()), Some(1));
    let acl = vec![Acl::new(perms::ALL, "ip", "127.0.0.1")];
    let set_acl = WriteOp::SetAcl {
        path: "/a".to_string(),
        acl: acl.clone(),
        version: 0,
    };
    let result = h.write(set_acl);
    let stat = h.stat("/a");
    assert_eq!(result.result, OpResult::SetAcl { stat });
    assert_eq!(
        (stat.aversion, stat.version, stat.mzxid, stat.pzxid),
        (1, 1, 2, 4)
    );
    assert_eq!(h.tree.node("/a").map(|n| n.acl().to_vec()), Some(acl));
    assert!(result.triggers.is_empty());
}

#[test]
fn node_kinds_show_their_owner_as_zookeeper_does() {
    // Ephemerals show their session; containers and TTL nodes store markers but show 0.
    let mut h = Harness::new();
    h.write(create_with("/e", Some(b""), 1, op::CREATE2, -1));
    h.write(create_with("/c", Some(b""), 4, op::CREATE_CONTAINER, -1));
    h.write(create_with("/t", Some(b""), 5, op::CREATE_TTL, 5_000));
    let raw = |path: &str| h.tree.node(path).map(|n| n.ephemeral_owner_raw());
    assert_eq!(
        (h.stat("/e").ephemeral_owner, raw("/e")),
        (SESSION, Some(SESSION))
    );
    assert_eq!(
        (h.stat("/c").ephemeral_owner, raw("/c")),
        (0, Some(i64::MIN))
    );
    let ttl_raw = TTL_EPHEMERAL_OWNER_MARK | 5_000;
    assert_eq!(
        (h.stat("/t").ephemeral_owner, raw("/t")),
        (0, Some(ttl_raw))
    );
    assert_eq!(h.tree.node("/t").and_then(|n| n.ttl_ms()), Some(5_000));
    assert_eq!(h.tree.ephemerals(SESSION), vec!["/e".to_string()]);
    assert_eq!(h.tree.session_ids_with_ephemerals(), vec![SESSION]);
    assert_eq!(h.tree.ephemeral_count(), 1);
}

#[test]
fn null_data_is_distinct_from_empty() {
    // A create with null data keeps None (getData length -1); empty data stays Some([]).
    let mut h = Harness::new();
    h.write(create_with("/null", None, 0, op::CREATE, -1));
    h.write(create("/empty", b""));
    assert_eq!(h.tree.node("/null").map(|n| n.data().is_none()), Some(true));
    assert_eq!(
        h.tree
            .node("/empty")
            .and_then(|n| n.data())
            .map(|d| d.len()),
        Some(0)
    );
    assert_eq!(h.stat("/null").data_length, 0);
}

#[test]
fn sequential_names_share_the_parent_counter() {
    // Sequential suffixes count every child create of the parent, sequential or not, and
    // deletes never lower the counter.
    let mut h = Harness::new();
    h.write(create("/q", b""));
    let seq = |path: &str| create_with(path, Some(b""), 2, op::CREATE, -1);
    assert_eq!(created_path(&h.write(seq("/q/n"))), "/q/n0000000000");
    h.write(create("/q/plain", b""));
    assert_eq!(created_path(&h.write(seq("/q/n"))), "/q/n0000000002");
    h.write(delete("/q/n0000000000", -1));
    assert_eq!(created_path(&h.write(seq("/q/n"))), "/q/n0000000003");
    // A trailing slash makes a name that is only the counter.
    assert_eq!(created_path(&h.write(seq("/q/"))), "/q/0000000004");
    let ephemeral_seq = create_with("/q/e-", Some(b""), 3, op::CREATE, -1);
    assert_eq!(created_path(&h.write(ephemeral_seq)), "/q/e-0000000005");
    assert_eq!(h.stat("/q").cversion, 6 * 2 - 5);
    assert_eq!(format!("{:010}", -5), "-000000005");
}

#[test]
fn create_checks_run_in_zookeeper_order() {
    // Each create error, with inputs that break an earlier rule winning over later ones.
    let mut h = Harness::new();
    h.write(create("/p", b""));
    h.write(create_with("/eph", Some(b""), 1, op::CREATE, -1));
    let no_acl = WriteOp::Create {
        path: "/missing/x".to_string(),
        data: None,
        acl: vec![],
        flags: 0,
        ttl: -1,
        op: op::CREATE,
    };
    let cases = [
        (
            create_with("/x", None, 7, op::CREATE, -1),
            ErrorCode::BadArguments,
        ),
        (
            create_with("/x", None, 0, op::CREATE, 10),
            ErrorCode::BadArguments,
        ),
        (
            create_with("/x", None, 5, op::CREATE_TTL, 0),
            ErrorCode::BadArguments,
        ),
        (
            create_with("/x", None, 5, op::CREATE_TTL, TTL_MS_MAX + 1),
            ErrorCode::BadArguments,
        ),
        (
            create_with("/x", None, 0, op::CREATE_TTL, -1),
            ErrorCode::BadArguments,
        ),
        (create("x", b""), ErrorCode::BadArguments),
        (create("/a\0", b""), ErrorCode::BadArguments),
        (no_acl, ErrorCode::InvalidAcl),
        (create("/missing/x", b""), ErrorCode::NoNode),
        (create("/p/", b""), ErrorCode::BadArguments),
        (create("/p/..", b""), ErrorCode::BadArguments),
        (create("/p", b""), ErrorCode::NodeExists),
        (create("/", b""), ErrorCode::NodeExists),
        (create("/eph/c", b""), ErrorCode::NoChildrenForEphemerals),
    ];
    for (write, code) in cases {
        assert_eq!(h.write(write.clone()).result, error(code), "{write:?}");
    }
    h.extended = false;
    let ttl = create_with("/x", None, 5, op::CREATE_TTL, 10);
    assert_eq!(h.write(ttl).result, error(ErrorCode::Unimplemented));
    h.local_session = true;
    let ephemeral = create_with("/x", None, 1, op::CREATE, -1);
    assert_eq!(
        h.write(ephemeral).result,
        error(ErrorCode::EphemeralOnLocalSession)
    );
    assert_eq!(h.tree.node_count(), 7);
    assert_eq!(h.tree.last_zxid(), 18);
}

#[test]
fn delete_set_data_and_check_errors() {
    // Special paths, versions, children and missing nodes give ZooKeeper's codes.
    let mut h = Harness::new();
    h.write(create("/d", b""));
    h.write(create("/d/c", b""));
    let err = |h: &mut Harness, write: WriteOp| h.write(write).result;
    for special in SPECIAL_PATHS {
        assert_eq!(
            err(&mut h, delete(special, -1)),
            error(ErrorCode::BadArguments)
        );
    }
    assert_eq!(
        err(&mut h, delete("nope", -1)),
        error(ErrorCode::BadArguments)
    );
    assert_eq!(err(&mut h, delete("/nope/x", -1)), error(ErrorCode::NoNode));
    assert_eq!(err(&mut h, delete("/nope", -1)), error(ErrorCode::NoNode));
    assert_eq!(err(&mut h, delete("/d", 3)), error(ErrorCode::BadVersion));
    assert_eq!(err(&mut h, delete("/d", 0)), error(ErrorCode::NotEmpty));
    assert_eq!(
        err(&mut h, set_data("/d", b"", 7)),
        error(ErrorCode::BadVersion)
    );
    assert_eq!(
        err(&mut h, set_data("/d/", b"", -1)),
        error(ErrorCode::BadArguments)
    );
    assert_eq!(
        err(&mut h, set_data("/zz", b"", -1)),
        error(ErrorCode::NoNode)
    );
    let check = |version| WriteOp::Check {
        path: "/d".to_string(),
        version,
    };
    assert_eq!(err(&mut h, check(1)), error(ErrorCode::BadVersion));
    assert_eq!(err(&mut h, check(0)), OpResult::Checked);
    assert_eq!(
        h.prep(SESSION, &check(-1)),
        Txn::Check {
            path: "/d".to_string(),
            version: 1
        }
    );
    let bad_acl = WriteOp::SetAcl {
        path: "/d".to_string(),
        acl: vec![Acl::new(perms::ALL, "digest", "nocolon")],
        version: -1,
    };
    assert_eq!(err(&mut h, bad_acl), error(ErrorCode::InvalidAcl));
    let stale = WriteOp::SetAcl {
        path: "/d".to_string(),
        acl: open(),
        version: 4,
    };
    assert_eq!(err(&mut h, stale), error(ErrorCode::BadVersion));
    assert_eq!(h.stat("/d").version, 0);
}

#[test]
fn acls_gate_every_write() {
    // CREATE/DELETE on the parent, WRITE/ADMIN/READ on the node; super and skipACL pass.
    let mut h = Harness::new();
    let owner = Id::new("digest", &digest_id("bob:secret"));
    h.ids.push(owner.clone());
    let restricted = WriteOp::Create {
        path: "/r".to_string(),
        data: None,
        acl: vec![
            Acl::new(perms::ALL, "auth", ""),
            Acl::new(perms::READ, "world", "anyone"),
        ],
        flags: 0,
        ttl: -1,
        op: op::CREATE,
    };
    h.write(restricted);
    assert_eq!(h.tree.node("/r").map(|n| n.acl().len()), Some(2));
    h.write(create("/r/kid", b""));
    h.ids = vec![Id::new("ip", "10.0.0.9")];
    let err = |h: &mut Harness, write: WriteOp| h.write(write).result;
    assert_eq!(err(&mut h, create("/r/x", b"")), error(ErrorCode::NoAuth));
    assert_eq!(err(&mut h, delete("/r/kid", -1)), error(ErrorCode::NoAuth));
    assert_eq!(
        err(&mut h, set_data("/r", b"v", -1)),
        error(ErrorCode::NoAuth)
    );
    let check = WriteOp::Check {
        path: "/r".to_string(),
        version: -1,
    };
    assert_eq!(err(&mut h, check), OpResult::Checked);
    let set_acl = WriteOp::SetAcl {
        path: "/r".to_string(),
        acl: open(),
        version: -1,
    };
    assert_eq!(err(&mut h, set_acl.clone()), error(ErrorCode::NoAuth));
    h.ids = vec![Id::new("super", "")];
    assert!(matches!(
        err(&mut h, set_data("/r", b"v", -1)),
        OpResult::SetData { .. }
    ));
    h.ids = vec![owner];
    assert!(matches!(err(&mut h, set_acl), OpResult::SetAcl { .. }));
    let ctx = PrepContext {
        session_id: SESSION,
        auth_ids: &[],
        extended_types_enabled: false,
        skip_acl: true,
        ephemeral_session_ok: true,
        enforce_quota: false,
    };
    let locked = vec![Acl::new(perms::READ, "digest", "x:y")];
    h.write(WriteOp::SetAcl {
        path: "/r".to_string(),
        acl: locked,
        version: -1,
    });
    assert!(matches!(
        prep(&h.tree, &set_data("/r", b"", -1), &ctx),
        Txn::SetData { .. }
    ));
}

#[test]
fn triggers_follow_zookeeper_order() {
    // create fires the node then its parent, delete likewise, setData the node only;
    // a failed write fires nothing; the root parent is reported as "/".
    let mut h = Harness::new();
    let created = h.write(create("/t", b""));
    let created_events = vec![
        ("/t".to_string(), EventType::NodeCreated),
        ("/".to_string(), EventType::NodeChildrenChanged),
    ];
    assert_eq!(events(&created), created_events);
    let nested = h.write(create("/t/u", b""));
    assert_eq!(nested.triggers[1].path, "/t");
    let changed = h.write(set_data("/t/u", b"1", -1));
    assert_eq!(
        events(&changed),
        vec![("/t/u".to_string(), EventType::NodeDataChanged)]
    );
    let deleted = h.write(delete("/t/u", -1));
    let deleted_events = vec![
        ("/t/u".to_string(), EventType::NodeDeleted),
        ("/t".to_string(), EventType::NodeChildrenChanged),
    ];
    assert_eq!(events(&deleted), deleted_events);
    assert!(h.write(delete("/t/u", -1)).triggers.is_empty());
    assert_eq!(created.triggers[0].acl.to_vec(), open());
}

#[test]
fn multi_is_all_or_nothing_with_per_op_results() {
    // A multi whose later ops depend on earlier ones succeeds as a whole; one failing op
    // turns every result into an error and leaves the tree untouched but the zxid used.
    let mut h = Harness::new();
    let ok = WriteOp::Multi(vec![
        create("/m", b""),
        create_with("/m/s-", Some(b""), 2, op::CREATE, -1),
        create_with("/m/s-", Some(b""), 2, op::CREATE, -1),
        set_data("/m", b"v", 0),
        WriteOp::Check {
            path: "/m".to_string(),
            version: 1,
        },
        delete("/m/s-0000000000", 0),
    ]);
    let result = h.write(ok);
    let OpResult::Multi(results) = &result.result else {
        panic!("not a multi result: {result:?}");
    };
    assert_eq!(results.len(), 6);
    assert!(matches!(&results[2], OpResult::Created { path, .. } if path == "/m/s-0000000001"));
    assert!(matches!(results[3], OpResult::SetData { stat } if stat.version == 1));
    assert_eq!(
        (results[4].clone(), results[5].clone()),
        (OpResult::Checked, OpResult::Deleted)
    );
    assert_eq!(h.stat("/m").num_children, 1);
    assert_eq!(h.stat("/m/s-0000000001").mzxid, 1);
    let failing = WriteOp::Multi(vec![
        create("/n", b""),
        set_data("/m", b"w", 0),
        delete("/m/s-0000000001", -1),
    ]);
    let before = h.tree.clone();
    let result = h.write(failing);
    let expected = OpResult::Multi(vec![
        error(ErrorCode::Ok),
        error(ErrorCode::BadVersion),
        error(ErrorCode::RuntimeInconsistency),
    ]);
    assert_eq!(result.result, expected);
    assert_eq!(result.result.err(), ErrorCode::BadVersion);
    assert!(result.triggers.is_empty());
    assert!(h.tree.node("/n").is_none());
    assert_eq!(h.tree.last_zxid(), before.last_zxid() + 1);
    assert_eq!(
        h.stat("/m"),
        before.node("/m").map(|n| n.stat()).unwrap_or_default()
    );
}

#[test]
fn multi_prep_logs_real_txns_before_the_failure() {
    // As ZooKeeper logs it: real txns before the failing op, its error, then -2s; ops that
    // cannot be in a multi fail the whole request.
    let h = Harness::new();
    let txn = h.prep(
        SESSION,
        &WriteOp::Multi(vec![
            create("/a", b""),
            delete("/zz", -1),
            create("/b", b""),
        ]),
    );
    let Txn::Multi(txns) = txn else {
        panic!("not a multi txn");
    };
    assert!(matches!(txns[0], Txn::Create { .. }));
    assert_eq!(
        txns[1],
        Txn::Error {
            err: ErrorCode::NoNode
        }
    );
    assert_eq!(
        txns[2],
        Txn::Error {
            err: ErrorCode::RuntimeInconsistency
        }
    );
    let nested = WriteOp::Multi(vec![WriteOp::Multi(vec![])]);
    assert_eq!(
        h.prep(SESSION, &nested),
        Txn::Error {
            err: ErrorCode::MarshallingError
        }
    );
    assert_eq!(h.prep(SESSION, &WriteOp::Multi(vec![])), Txn::Multi(vec![]));
}

#[test]
fn close_session_deletes_its_ephemerals_only() {
    // closeSession lists the session's ephemerals in the txn and deletes them with triggers;
    // other sessions' ephemerals and persistent nodes stay.
    let mut h = Harness::new();
    let other = SESSION + 1;
    h.write(create("/dir", b""));
    h.write(create_with("/dir/e1", Some(b""), 1, op::CREATE, -1));
    h.write(create_with("/e0", Some(b""), 1, op::CREATE, -1));
    h.write_as(other, create_with("/dir/o", Some(b""), 1, op::CREATE, -1));
    let txn = h.prep(SESSION, &WriteOp::CloseSession);
    let listed = vec!["/dir/e1".to_string(), "/e0".to_string()];
    assert_eq!(
        txn,
        Txn::CloseSession {
            paths_to_delete: listed
        }
    );
    let result = h.write(WriteOp::CloseSession);
    assert_eq!(result.result, OpResult::Ok);
    assert_eq!(result.triggers.len(), 4);
    assert!(h.tree.ephemerals(SESSION).is_empty());
    assert_eq!(h.tree.ephemerals(other), vec!["/dir/o".to_string()]);
    assert_eq!(h.tree.session_ids_with_ephemerals(), vec![other]);
    assert_eq!(h.stat("/dir").pzxid, 5);
    assert!(h.tree.node("/dir").is_some());
}

#[test]
fn containers_and_ttls_are_reaped_when_due() {
    // A container is due once it had a child and is empty (or was never used for longer
    // than the limit); a TTL node once idle past its ttl; the reaper's delete checks again.
    let mut h = Harness::new();
    h.write(create_with("/c", Some(b""), 4, op::CREATE_CONTAINER, -1));
    h.write(create_with("/t", Some(b""), 5, op::CREATE_TTL, 100));
    let now = h.time_ms;
    assert!(h.tree.container_and_ttl_candidates(now, 0).is_empty());
    assert_eq!(
        h.tree.container_and_ttl_candidates(now + 101, 0),
        vec!["/t".to_string()]
    );
    let never_used = h.tree.container_and_ttl_candidates(now + 10, 5);
    assert_eq!(never_used, vec!["/c".to_string()]);
    h.write(create("/c/kid", b""));
    h.write(create("/t/kid", b""));
    assert!(h
        .tree
        .container_and_ttl_candidates(now + 1_000, 5)
        .is_empty());
    let reap = |path: &str| WriteOp::DeleteContainer {
        path: path.to_string(),
    };
    assert_eq!(h.write(reap("/c")).result, error(ErrorCode::NotEmpty));
    h.write(delete("/c/kid", -1));
    assert_eq!(
        h.tree.container_and_ttl_candidates(now, 0),
        vec!["/c".to_string()]
    );
    assert_eq!(h.write(reap("/c")).result, OpResult::Deleted);
    h.write(create_with("/e", Some(b""), 1, op::CREATE, -1));
    assert_eq!(h.write(reap("/e")).result, error(ErrorCode::BadVersion));
    assert_eq!(
        h.write(reap("/zookeeper")).result,
        error(ErrorCode::BadArguments)
    );
    assert!(h.tree.node("/c").is_none());
}

#[test]
fn views_are_immutable_snapshots() {
    // A clone taken before writes keeps seeing the old tree while the original moves on.
    let mut h = Harness::new();
    h.write(create("/v", b"one"));
    for index in 0..40 {
        h.write(create(&format!("/v/c{index:02}"), b""));
    }
    let view = h.tree.clone();
    h.write(set_data("/v", b"two", -1));
    h.write(delete("/v/c07", -1));
    h.write(create("/v/new", b""));
    let data = |tree: &DataTree| tree.node("/v").and_then(|n| n.data().map(|d| d.to_vec()));
    assert_eq!(data(&view), Some(b"one".to_vec()));
    assert_eq!(data(&h.tree), Some(b"two".to_vec()));
    assert!(view.node("/v/c07").is_some() && h.tree.node("/v/c07").is_none());
    assert!(view.node("/v/new").is_none());
    assert_eq!(view.node("/v").map(|n| n.children().count()), Some(40));
    assert_eq!(view.invariants(), Ok(()));
    let handle = std::thread::spawn(move || view.node("/v/c07").map(|n| n.stat().czxid));
    assert_eq!(handle.join().ok().flatten(), Some(9));
}

#[test]
fn children_counts_and_lists() {
    // getChildren lists names in order; getAllChildrenNumber counts all descendants.
    let mut h = Harness::new();
    h.write(create("/a", b""));
    h.write(create("/a/y", b""));
    h.write(create("/a/x", b""));
    h.write(create("/a/x/deep", b""));
    let names: Option<Vec<String>> = h
        .tree
        .node("/a")
        .map(|n| n.children().map(str::to_string).collect());
    assert_eq!(names, Some(vec!["x".to_string(), "y".to_string()]));
    assert_eq!(h.tree.all_children_number("/a"), Some(3));
    assert_eq!(h.tree.all_children_number("/"), Some(7));
    assert_eq!(h.tree.all_children_number("/a/y"), Some(0));
    assert_eq!(h.tree.all_children_number("/b"), None);
    assert!(h.tree.node("/a/").is_none() && h.tree.node("a").is_none());
    assert!(h.tree.node("//a").is_none());
    let mut walked = Vec::new();
    h.tree.walk(|path, _| walked.push(path.to_string()));
    let expected = ["/", "/a", "/a/x", "/a/x/deep", "/a/y", "/zookeeper"];
    assert_eq!(&walked[..6], &expected);
}

#[test]
fn replaying_a_create_onto_an_existing_node_repairs_the_parent() {
    // ZooKeeper's fuzzy-snapshot repair: a create txn that finds its node raises the
    // parent's cversion and pzxid, and a delete of a missing child still moves pzxid.
    let mut h = Harness::new();
    h.write(create("/p", b""));
    h.write(create("/p/c", b""));
    let txn = Txn::Create {
        path: "/p/c".to_string(),
        data: None,
        acl: open(),
        ephemeral_owner: 0,
        parent_cversion: 5,
        kind: CreateKind::Persistent,
    };
    let header = TxnHeader {
        session_id: 1,
        cxid: 0,
        zxid: 10,
        time_ms: 0,
        op: op::CREATE,
    };
    assert_eq!(
        h.tree.apply(&header, &txn).result,
        error(ErrorCode::NodeExists)
    );
    assert_eq!(
        h.tree
            .node("/p")
            .map(|n| (n.stored_cversion(), n.stat().pzxid)),
        Some((5, 10))
    );
    let delete = Txn::Delete {
        path: "/p/gone".to_string(),
    };
    let header = TxnHeader {
        zxid: 11,
        op: op::DELETE,
        ..header
    };
    assert_eq!(
        h.tree.apply(&header, &delete).result,
        error(ErrorCode::NoNode)
    );
    assert_eq!(h.stat("/p").pzxid, 11);
    assert_eq!(h.tree.invariants(), Ok(()));
}

#[test]
fn watch_registry_follows_tree_triggers() {
    // Triggers from apply drive the watch registry: a recursive watch on / sees a deep
    // create but not the parent's children-changed; a child watch sees that instead.
    let mut h = Harness::new();
    h.write(create("/w", b""));
    let mut watches = WatchManager::new();
    watches.add("/", 1, WatchKind::PersistentRecursive);
    watches.add("/w", 2, WatchKind::Child);
    watches.add("/w/x", 3, WatchKind::Exist);
    let result = h.write(create("/w/x", b""));
    let fired: Vec<_> = result
        .triggers
        .iter()
        .flat_map(|t| watches.trigger(t))
        .collect();
    let expected = vec![
        (1, EventType::NodeCreated, "/w/x".to_string()),
        (3, EventType::NodeCreated, "/w/x".to_string()),
        (2, EventType::NodeChildrenChanged, "/w".to_string()),
    ];
    assert_eq!(fired, expected);
    assert_eq!(watches.invariants(), Ok(()));
}

mod quotas;
mod restore;

mod random_ops {
    //! Random op sequences: prep and apply never panic and every invariant holds after each.

    use super::*;
    use proptest::prelude::*;

    fn path() -> impl Strategy<Value = String> {
        let segment = prop_oneof![
            12 => prop::sample::select(vec!["a", "b", "c"]),
            1 => prop::sample::select(vec![
                "zookeeper", "quota", "", "..", "zookeeper_limits", "zookeeper_stats",
            ]),
        ];
        prop::collection::vec(segment, 0..4).prop_map(|segments| {
            let joined = segments.join("/");
            format!("/{joined}")
        })
    }

    fn acl() -> impl Strategy<Value = Vec<Acl>> {
        prop_oneof![
            8 => Just(open()),
            1 => Just(vec![Acl::new(perms::READ, "world", "anyone")]),
            1 => Just(vec![Acl::new(perms::ALL, "auth", "")]),
            1 => Just(vec![Acl::new(perms::ALL, "ip", "127.0.0.0/8")]),
            1 => Just(vec![]),
        ]
    }

    /// (flags, ttl, opcode): mostly the valid pairings, sometimes a mismatched one.
    fn create_mode() -> impl Strategy<Value = (i32, i64, i32)> {
        prop_oneof![
            6 => (0..4i32, prop::sample::select(vec![op::CREATE, op::CREATE2]))
                .prop_map(|(flags, opcode)| (flags, -1, opcode)),
            2 => Just((4, -1, op::CREATE_CONTAINER)),
            2 => (5..7i32, 1..200i64).prop_map(|(flags, ttl)| (flags, ttl, op::CREATE_TTL)),
            1 => (0..8i32, prop::sample::select(vec![-1i64, 0, 50, TTL_MS_MAX + 1]), 0..25i32),
        ]
    }

    fn simple_op() -> impl Strategy<Value = WriteOp> {
        let data = prop::option::of(prop::collection::vec(any::<u8>(), 0..8));
        let version = prop_oneof![3 => Just(-1i32), 1 => 0..3i32];
        prop_oneof![
            6 => (path(), data.clone(), acl(), create_mode()).prop_map(
                |(path, data, acl, (flags, ttl, op))| {
                    WriteOp::Create { path, data, acl, flags, ttl, op }
                }
            ),
            2 => (path(), version.clone())
                .prop_map(|(path, version)| WriteOp::Delete { path, version }),
            2 => (path(), data, version.clone())
                .prop_map(|(path, data, version)| WriteOp::SetData { path, data, version }),
            1 => (path(), acl(), version.clone())
                .prop_map(|(path, acl, version)| WriteOp::SetAcl { path, acl, version }),
            1 => (path(), version).prop_map(|(path, version)| WriteOp::Check { path, version }),
            1 => path().prop_map(|path| WriteOp::DeleteContainer { path }),
        ]
    }

    pub(super) fn write_op() -> impl Strategy<Value = (i64, WriteOp)> {
        let session = 1..4i64;
        let op = prop_oneof![
            8 => simple_op(),
            2 => prop::collection::vec(simple_op(), 0..5).prop_map(WriteOp::Multi),
            1 => Just(WriteOp::CloseSession),
        ];
        (session, op)
    }

    fn raw_txn() -> impl Strategy<Value = Txn> {
        let data = prop::option::of(prop::collection::vec(any::<u8>(), 0..4))
            .prop_map(|data| data.map(Arc::from));
        let kind = prop_oneof![
            Just(CreateKind::Persistent),
            Just(CreateKind::Container),
            prop::sample::select(vec![-1i64, 0, 1, TTL_MS_MAX, TTL_MS_MAX + 1])
                .prop_map(CreateKind::Ttl),
        ];
        let owner = prop::sample::select(vec![0i64, 1, 2, i64::MIN, -1]);
        let paths = prop::collection::vec(path(), 0..3);
        let leaf = prop_oneof![
            4 => (path(), data.clone(), acl(), owner, -2..4i32, kind).prop_map(
                |(path, data, acl, ephemeral_owner, parent_cversion, kind)| Txn::Create {
                    path, data, acl, ephemeral_owner, parent_cversion, kind,
                }
            ),
            2 => path().prop_map(|path| Txn::Delete { path }),
            2 => (path(), data, any::<i32>())
                .prop_map(|(path, data, version)| Txn::SetData { path, data, version }),
            1 => (path(), acl(), any::<i32>())
                .prop_map(|(path, acl, version)| Txn::SetAcl { path, acl, version }),
            1 => (path(), any::<i32>()).prop_map(|(path, version)| Txn::Check { path, version }),
            1 => paths.prop_map(|paths_to_delete| Txn::CloseSession { paths_to_delete }),
            1 => Just(Txn::Error { err: ErrorCode::NoNode }),
            1 => Just(Txn::CreateSession { timeout_ms: 30_000 }),
        ];
        leaf.prop_recursive(2, 8, 4, |inner| {
            prop::collection::vec(inner, 0..4).prop_map(Txn::Multi)
        })
    }

    /// Every node's path, client stat and data, in walk order.
    type Dump = Vec<(String, Stat, Option<Vec<u8>>)>;

    fn dump(tree: &DataTree) -> Dump {
        let mut out = Vec::new();
        tree.walk(|path, node| {
            out.push((
                path.to_string(),
                node.stat(),
                node.data().map(|d| d.to_vec()),
            ));
        });
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

        #[test]
        fn random_ops_keep_invariants(ops in prop::collection::vec(write_op(), 1..60)) {
            // Any sequence of writes from three sessions keeps the tree consistent, and a
            // view taken midway never changes.
            let mut h = Harness::new();
            h.ids.push(Id::new("digest", "user:hash"));
            let mut view: Option<(DataTree, Dump)> = None;
            for (index, (session, write)) in ops.into_iter().enumerate() {
                h.write_as(session, write);
                let due = h.tree.container_and_ttl_candidates(h.time_ms + 1_000, 1);
                prop_assert!(due.iter().all(|path| h.tree.node(path).is_some()));
                if index == 10 {
                    view = Some((h.tree.clone(), dump(&h.tree)));
                }
            }
            if let Some((view, before)) = view {
                prop_assert_eq!(dump(&view), before);
            }
        }

        #[test]
        fn raw_txns_keep_invariants(
            txns in prop::collection::vec((1..4i64, -2..3i64, raw_txn()), 1..50)
        ) {
            // Txns that prep would never produce (as from a foreign or damaged log) still
            // apply without panicking, in any zxid order, and keep every invariant.
            let mut tree = DataTree::new();
            for (session_id, zxid_step, txn) in txns {
                let zxid = tree.last_zxid() + zxid_step;
                let header = TxnHeader { session_id, cxid: 0, zxid, time_ms: zxid, op: op::CREATE };
                tree.apply(&header, &txn);
                prop_assert_eq!(tree.invariants(), Ok(()));
            }
        }

        #[test]
        fn arbitrary_paths_never_panic(raw in ".{0,24}", version in any::<i32>()) {
            // Paths straight from the wire, however odd, only ever produce error results.
            let mut h = Harness::new();
            let _ = h.tree.node(&raw);
            let _ = h.tree.all_children_number(&raw);
            let _ = validate_path(&raw);
            h.write(create(&raw, b""));
            h.write(create_with(&raw, None, 2, op::CREATE, -1));
            h.write(set_data(&raw, b"", version));
            h.write(delete(&raw, version));
            h.write(WriteOp::DeleteContainer { path: raw.clone() });
            let mut watches = WatchManager::new();
            watches.add(&raw, 1, WatchKind::PersistentRecursive);
            let event = EventType::NodeDeleted;
            let trigger = WatchTrigger { path: raw, event, acl: Arc::from(open()) };
            prop_assert_eq!(watches.trigger(&trigger).len(), 1);
        }
    }
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status.lines().find(|line| line.starts_with("VmRSS:"));
    let kilobytes = line.and_then(|line| line.split_whitespace().nth(1));
    kilobytes.and_then(|kb| kb.parse::<u64>().ok()).unwrap_or(0) * 1024
}

fn build_tree(parents: usize, znodes: usize) -> DataTree {
    let mut tree = DataTree::new();
    let acl = open();
    let mut zxid = 0;
    let mut apply = |tree: &mut DataTree, path: String, data: Option<Arc<[u8]>>| {
        zxid += 1;
        let header = TxnHeader {
            session_id: 1,
            cxid: 0,
            zxid,
            time_ms: zxid,
            op: op::CREATE,
        };
        let txn = Txn::Create {
            path,
            data,
            acl: acl.clone(),
            ephemeral_owner: 0,
            parent_cversion: -1,
            kind: CreateKind::Persistent,
        };
        let result = tree.apply(&header, &txn);
        assert!(matches!(result.result, OpResult::Created { .. }));
    };
    for parent in 0..parents {
        apply(&mut tree, format!("/parent-{parent:07}"), None);
    }
    for index in 0..znodes {
        let path = format!("/parent-{:07}/child-node-{index:09}", index % parents);
        apply(&mut tree, path, Some(Arc::from(vec![7u8; 100])));
    }
    tree
}

#[test]
#[ignore = "measurement: run alone with --release --ignored --nocapture"]
fn memory_and_speed_1m() {
    // Builds 1M znodes (100 B data, 20-char names, 1,000 parents) and reports RSS per znode,
    // apply, lookup and copy-on-write costs for the module header.
    let (parents, znodes) = (1_000, 1_000_000);
    let before = rss_bytes();
    let started = std::time::Instant::now();
    let mut tree = build_tree(parents, znodes);
    let build_ns = started.elapsed().as_nanos() as u64 / znodes as u64;
    let after = rss_bytes();
    let per_znode = (after - before) / znodes as u64;
    println!(
        "RSS {} MB -> {} MB: {per_znode} B/znode",
        before >> 20,
        after >> 20
    );
    let paths: Vec<String> = (0..100_000)
        .map(|i| {
            format!(
                "/parent-{:07}/child-node-{:09}",
                (i * 7919) % parents,
                (i * 7919) % znodes
            )
        })
        .collect();
    let started = std::time::Instant::now();
    let mut found = 0usize;
    for _ in 0..10 {
        found += paths
            .iter()
            .filter(|path| tree.node(path).is_some())
            .count();
    }
    let lookup_ns = started.elapsed().as_nanos() as u64 / found.max(1) as u64;
    let started = std::time::Instant::now();
    let mut hot_found = 0usize;
    for round in 0..1_000_000 {
        let path = std::hint::black_box(&paths[round % 64]);
        hot_found += usize::from(tree.node(path).is_some());
    }
    let hot_ns = started.elapsed().as_nanos() as u64 / hot_found.max(1) as u64;
    let started = std::time::Instant::now();
    let rounds = 10_000i64;
    for round in 0..rounds {
        let view = tree.clone();
        let path = &paths[round as usize % paths.len()];
        let txn = Txn::SetData {
            path: path.clone(),
            data: Some(Arc::from(vec![1u8; 100])),
            version: 1,
        };
        let zxid = tree.last_zxid() + 1;
        let header = TxnHeader {
            session_id: 1,
            cxid: 0,
            zxid,
            time_ms: zxid,
            op: op::SET_DATA,
        };
        tree.apply(&header, &txn);
        drop(view);
    }
    let cow_ns = started.elapsed().as_nanos() as u64 / rounds as u64;
    println!("apply create {build_ns} ns, lookup cold {lookup_ns} ns hot {hot_ns} ns");
    println!("view + first setData {cow_ns} ns");
    assert!(per_znode < 350, "{per_znode} B/znode");
    assert_eq!(tree.node_count(), znodes + parents + 5);
}
