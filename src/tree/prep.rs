//! prep: ZooKeeper's `PrepRequestProcessor.pRequest2Txn` — check a write against the current
//! tree and turn it into the txn to log and apply.
//!
//! A write that fails a check becomes `Txn::Error` rather than an `Err`: ZooKeeper still logs
//! it (as an ErrorTxn, under its own zxid) so that replies stay in per-session order. Checks run
//! in ZooKeeper's order, so a request that breaks two rules gets the same code it would there.

use super::acl::{check_acl, fixup_acl};
use super::data_tree::{DataTree, NodeRef, TTL_MS_MAX};
use super::path::{parent_for_delete, split_parent, validate_path};
use super::quota::check_quota;
use super::txn::{CreateKind, Txn, TxnHeader};
use crate::proto::{op, perms, Acl, CreateMode, ErrorCode, Id};
use std::sync::Arc;

/// A state-changing request, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    Create {
        path: String,
        data: Option<Vec<u8>>,
        acl: Vec<Acl>,
        flags: i32,
        /// The requested TTL in ms for createTTL, else -1.
        ttl: i64,
        /// The request opcode: create (1), create2 (15), createContainer (19), createTTL (21).
        op: i32,
    },
    Delete {
        path: String,
        version: i32,
    },
    /// The container/TTL reaper's internal delete: no ACL or version check, only "still empty".
    DeleteContainer {
        path: String,
    },
    SetData {
        path: String,
        data: Option<Vec<u8>>,
        version: i32,
    },
    SetAcl {
        path: String,
        acl: Vec<Acl>,
        version: i32,
    },
    Check {
        path: String,
        version: i32,
    },
    /// Sub-ops may be create, delete, setData and check; anything else fails the whole request
    /// with MarshallingError, as ZooKeeper fails to decode such a multi.
    Multi(Vec<WriteOp>),
    /// Close the context's session; prep lists its ephemerals into the txn.
    CloseSession,
}

/// Who is asking, and the server switches prep depends on.
#[derive(Debug, Clone, Copy)]
pub struct PrepContext<'a> {
    pub session_id: i64,
    /// The connection's auth ids, `ip:<addr>` included; a `super` id bypasses ACLs.
    pub auth_ids: &'a [Id],
    /// `zookeeper.extendedTypesEnabled`: TTL nodes allowed.
    pub extended_types_enabled: bool,
    /// `zookeeper.skipACL`.
    pub skip_acl: bool,
    /// False for a local (not yet global) session, which may not own ephemerals.
    pub ephemeral_session_ok: bool,
    /// `zookeeper.enforceQuota`: a create or setData past a hard quota limit fails with
    /// QuotaExceeded. Soft limits never fail.
    pub enforce_quota: bool,
}

/// Validates `op` against `tree` and produces its txn; failures become `Txn::Error`.
pub fn prep(tree: &DataTree, op: &WriteOp, ctx: &PrepContext<'_>) -> Txn {
    match op {
        WriteOp::Multi(ops) => prep_multi(tree, ops, ctx),
        WriteOp::CloseSession => Txn::CloseSession {
            paths_to_delete: tree.ephemerals(ctx.session_id),
        },
        _ => prep_single(tree, tree, op, ctx).unwrap_or_else(|err| Txn::Error { err }),
    }
}

/// Each sub-op is checked against a scratch view with the earlier sub-ops applied, as
/// ZooKeeper checks against its outstanding change records. On the first failure that op's
/// txn is its error and every later one RuntimeInconsistency; earlier ones keep their real
/// txns, as ZooKeeper logs them (apply turns them into `Error(Ok)` results). Quotas are
/// checked against the tree before the multi, as ZooKeeper checks them against its database
/// rather than the outstanding changes; the one MarshallingError a sub-op can raise (malformed
/// quota data, an exception ZooKeeper does not catch per sub-op) fails the whole request.
fn prep_multi(tree: &DataTree, ops: &[WriteOp], ctx: &PrepContext<'_>) -> Txn {
    let allowed = |op: &WriteOp| {
        matches!(
            op,
            WriteOp::Create { .. }
                | WriteOp::Delete { .. }
                | WriteOp::SetData { .. }
                | WriteOp::Check { .. }
        )
    };
    if !ops.iter().all(allowed) {
        return Txn::Error {
            err: ErrorCode::MarshallingError,
        };
    }
    let mut scratch = tree.clone();
    let header = TxnHeader {
        session_id: ctx.session_id,
        cxid: 0,
        zxid: tree.last_zxid().saturating_add(1),
        time_ms: 0,
        op: op::MULTI,
    };
    let mut txns = Vec::with_capacity(ops.len());
    let mut failed = false;
    for sub_op in ops {
        if failed {
            txns.push(Txn::Error {
                err: ErrorCode::RuntimeInconsistency,
            });
            continue;
        }
        match prep_single(&scratch, tree, sub_op, ctx) {
            Ok(txn) => {
                scratch.apply(&header, &txn);
                txns.push(txn);
            }
            Err(ErrorCode::MarshallingError) => {
                return Txn::Error {
                    err: ErrorCode::MarshallingError,
                };
            }
            Err(err) => {
                failed = true;
                txns.push(Txn::Error { err });
            }
        }
    }
    Txn::Multi(txns)
}

/// Preps one op against `tree`; `quota_tree` is the tree quotas are checked against.
fn prep_single(
    tree: &DataTree,
    quota_tree: &DataTree,
    op: &WriteOp,
    ctx: &PrepContext<'_>,
) -> Result<Txn, ErrorCode> {
    match op {
        WriteOp::Create {
            path,
            data,
            acl,
            flags,
            ttl,
            op,
        } => {
            let request = CreateRequest {
                path,
                data,
                acl,
                flags: *flags,
                ttl_ms: *ttl,
                op: *op,
            };
            prep_create(tree, quota_tree, &request, ctx)
        }
        WriteOp::Delete { path, version } => prep_delete(tree, path, *version, ctx),
        WriteOp::DeleteContainer { path } => prep_delete_container(tree, path),
        WriteOp::SetData {
            path,
            data,
            version,
        } => {
            let request = SetDataRequest {
                path,
                data,
                version: *version,
            };
            prep_set_data(tree, quota_tree, &request, ctx)
        }
        WriteOp::SetAcl { path, acl, version } => prep_set_acl(tree, path, acl, *version, ctx),
        WriteOp::Check { path, version } => prep_check(tree, path, *version, ctx),
        WriteOp::Multi(_) | WriteOp::CloseSession => Err(ErrorCode::MarshallingError),
    }
}

struct CreateRequest<'a> {
    path: &'a str,
    data: &'a Option<Vec<u8>>,
    acl: &'a [Acl],
    flags: i32,
    ttl_ms: i64,
    op: i32,
}

fn prep_create(
    tree: &DataTree,
    quota_tree: &DataTree,
    request: &CreateRequest<'_>,
    ctx: &PrepContext<'_>,
) -> Result<Txn, ErrorCode> {
    let mode = CreateMode::from_flags(request.flags).ok_or(ErrorCode::BadArguments)?;
    check_create_mode(mode, request, ctx)?;
    if request.path.contains('\0') {
        return Err(ErrorCode::BadArguments);
    }
    let (parent_path, _) = split_parent(request.path).ok_or(ErrorCode::BadArguments)?;
    let acl = fixup_acl(request.acl, ctx.auth_ids)?;
    let parent = tree.node(parent_path).ok_or(ErrorCode::NoNode)?;
    require(parent, perms::CREATE, ctx)?;
    // The suffix comes from the parent's stored cversion, a counter shared by all its
    // child creates, sequential or not; Java's %010d pads negatives as "-000000005".
    let parent_cversion = parent.stored_cversion();
    let path = if mode.is_sequential() {
        format!("{}{parent_cversion:010}", request.path)
    } else {
        request.path.to_string()
    };
    validate_path(&path)?;
    if tree.node(&path).is_some() {
        return Err(ErrorCode::NodeExists);
    }
    if parent.ephemeral_session().is_some() {
        return Err(ErrorCode::NoChildrenForEphemerals);
    }
    let bytes = request.data.as_ref().map_or(0, Vec::len);
    enforce_quota(quota_tree, &path, java_long(bytes), 1, ctx)?;
    // The opcode, not the flags, picks the record: ZooKeeper logs createContainer as a
    // CreateContainerTxn whatever its flags, and create with flags 4 as a plain CreateTxn.
    let kind = match request.op {
        op::CREATE_CONTAINER => CreateKind::Container,
        op::CREATE_TTL => CreateKind::Ttl(request.ttl_ms),
        op::CREATE2 => CreateKind::Persistent2,
        _ => CreateKind::Persistent,
    };
    let ephemeral = kind.is_create_txn() && mode.is_ephemeral();
    Ok(Txn::Create {
        path,
        data: request.data.as_deref().map(Arc::from),
        acl,
        ephemeral_owner: if ephemeral { ctx.session_id } else { 0 },
        parent_cversion: parent_cversion.wrapping_add(1),
        kind,
    })
}

/// `validateCreateRequest`: TTL support and range, the ttl/mode pairing, session kind.
fn check_create_mode(
    mode: CreateMode,
    request: &CreateRequest<'_>,
    ctx: &PrepContext<'_>,
) -> Result<(), ErrorCode> {
    if mode.is_ttl() && !ctx.extended_types_enabled {
        return Err(ErrorCode::Unimplemented);
    }
    let ttl_ok = if mode.is_ttl() {
        (1..=TTL_MS_MAX).contains(&request.ttl_ms)
    } else {
        request.ttl_ms < 0
    };
    // ZooKeeper would accept createTTL with a non-TTL mode and ttl -1, then fail to apply
    // it; refusing it here keeps apply total.
    if !ttl_ok || (request.op == op::CREATE_TTL && !mode.is_ttl()) {
        return Err(ErrorCode::BadArguments);
    }
    if mode.is_ephemeral() && !ctx.ephemeral_session_ok {
        return Err(ErrorCode::EphemeralOnLocalSession);
    }
    Ok(())
}

fn prep_delete(
    tree: &DataTree,
    path: &str,
    version: i32,
    ctx: &PrepContext<'_>,
) -> Result<Txn, ErrorCode> {
    let parent_path = parent_for_delete(path)?;
    let parent = tree.node(parent_path).ok_or(ErrorCode::NoNode)?;
    require(parent, perms::DELETE, ctx)?;
    let node = tree.node(path).ok_or(ErrorCode::NoNode)?;
    next_version(node.stat().version, version)?;
    if node.num_children() > 0 {
        return Err(ErrorCode::NotEmpty);
    }
    Ok(Txn::Delete {
        path: path.to_string(),
    })
}

/// ZooKeeper answers BadVersion when the reaper's target turned into a session ephemeral.
fn prep_delete_container(tree: &DataTree, path: &str) -> Result<Txn, ErrorCode> {
    let parent_path = parent_for_delete(path)?;
    let node = tree.node(path).ok_or(ErrorCode::NoNode)?;
    if node.num_children() > 0 {
        return Err(ErrorCode::NotEmpty);
    }
    if node.ephemeral_session().is_some() {
        return Err(ErrorCode::BadVersion);
    }
    tree.node(parent_path).ok_or(ErrorCode::NoNode)?;
    Ok(Txn::Delete {
        path: path.to_string(),
    })
}

struct SetDataRequest<'a> {
    path: &'a str,
    data: &'a Option<Vec<u8>>,
    version: i32,
}

fn prep_set_data(
    tree: &DataTree,
    quota_tree: &DataTree,
    request: &SetDataRequest<'_>,
    ctx: &PrepContext<'_>,
) -> Result<Txn, ErrorCode> {
    let path = request.path;
    validate_path(path)?;
    let node = tree.node(path).ok_or(ErrorCode::NoNode)?;
    require(node, perms::WRITE, ctx)?;
    let old_bytes = node.data().map_or(0, |data| data.len());
    let new_bytes = request.data.as_ref().map_or(0, Vec::len);
    let bytes_diff = java_long(new_bytes).wrapping_sub(java_long(old_bytes));
    enforce_quota(quota_tree, path, bytes_diff, 0, ctx)?;
    let version = next_version(node.stat().version, request.version)?;
    Ok(Txn::SetData {
        path: path.to_string(),
        data: request.data.as_deref().map(Arc::from),
        version,
    })
}

/// `ZooKeeperServer.checkQuota` when `enforceQuota` is on.
fn enforce_quota(
    quota_tree: &DataTree,
    path: &str,
    bytes_diff: i64,
    count_diff: i64,
    ctx: &PrepContext<'_>,
) -> Result<(), ErrorCode> {
    if !ctx.enforce_quota {
        return Ok(());
    }
    check_quota(quota_tree, path, bytes_diff, count_diff)
}

fn java_long(length: usize) -> i64 {
    i64::try_from(length).unwrap_or(i64::MAX)
}

fn prep_set_acl(
    tree: &DataTree,
    path: &str,
    acl: &[Acl],
    version: i32,
    ctx: &PrepContext<'_>,
) -> Result<Txn, ErrorCode> {
    validate_path(path)?;
    let acl = fixup_acl(acl, ctx.auth_ids)?;
    let node = tree.node(path).ok_or(ErrorCode::NoNode)?;
    require(node, perms::ADMIN, ctx)?;
    let version = next_version(node.stat().aversion, version)?;
    Ok(Txn::SetAcl {
        path: path.to_string(),
        acl,
        version,
    })
}

fn prep_check(
    tree: &DataTree,
    path: &str,
    version: i32,
    ctx: &PrepContext<'_>,
) -> Result<Txn, ErrorCode> {
    validate_path(path)?;
    let node = tree.node(path).ok_or(ErrorCode::NoNode)?;
    require(node, perms::READ, ctx)?;
    let version = next_version(node.stat().version, version)?;
    Ok(Txn::Check {
        path: path.to_string(),
        version,
    })
}

fn require(node: NodeRef<'_>, perm: i32, ctx: &PrepContext<'_>) -> Result<(), ErrorCode> {
    if ctx.skip_acl || check_acl(node.acl(), perm, ctx.auth_ids) {
        Ok(())
    } else {
        Err(ErrorCode::NoAuth)
    }
}

/// `checkAndIncVersion` as in 3.8: -1 matches any version; the next version wraps like a Java
/// int (3.10 later skips -1 on the wrap; 3.8 does not).
fn next_version(current: i32, expected: i32) -> Result<i32, ErrorCode> {
    if expected != -1 && expected != current {
        return Err(ErrorCode::BadVersion);
    }
    Ok(current.wrapping_add(1))
}
