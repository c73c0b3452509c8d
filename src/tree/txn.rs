//! Transactions: what prep produces, the write-ahead log will store and apply consumes.
//!
//! The variants mirror ZooKeeper's txn records (`CreateTxn`, `CreateContainerTxn`,
//! `CreateTTLTxn`, `DeleteTxn`, `SetDataTxn`, `SetACLTxn`, `CheckVersionTxn`,
//! `CreateSessionTxn`, `CloseSessionTxn`, `ErrorTxn`, `MultiTxn`) so the log can encode them
//! byte for byte as ZooKeeper does.

use crate::proto::{Acl, ErrorCode, EventType, Stat};
use std::sync::Arc;

/// ZooKeeper's `TxnHeader`: who, which request, which zxid, when (leader wall clock), what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnHeader {
    pub session_id: i64,
    pub cxid: i32,
    pub zxid: i64,
    pub time_ms: i64,
    /// The request opcode (`proto::op`), e.g. `CREATE2` or `MULTI`; `ERROR` is not used here,
    /// a failed request keeps its opcode and carries `Txn::Error`.
    pub op: i32,
}

/// Which create record, and so which opcode the log writes for it: `CreateTxn` (persistent or
/// ephemeral) from create (1) or create2 (15), `CreateContainerTxn` (19) or `CreateTTLTxn` (21)
/// with its ttl in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CreateKind {
    /// A `CreateTxn` from create (1).
    Persistent,
    /// A `CreateTxn` from create2 (15): the same node as `Persistent`. Kept apart because
    /// ZooKeeper logs a multi's sub-txn under its request opcode, and a ZooKeeper follower
    /// answers a multi's create2 with the stat only when the logged type says create2.
    Persistent2,
    Container,
    Ttl(i64),
}

impl CreateKind {
    /// True for the `CreateTxn` kinds, the only ones that may be ephemeral.
    pub fn is_create_txn(self) -> bool {
        matches!(self, CreateKind::Persistent | CreateKind::Persistent2)
    }
}

/// A transaction, applied by [`super::DataTree::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Txn {
    Create {
        /// The final path, sequence suffix included.
        path: String,
        data: Option<Arc<[u8]>>,
        acl: Vec<Acl>,
        /// 0, or the owning session id for an ephemeral (only with `CreateKind::Persistent` or
        /// `Persistent2`).
        ephemeral_owner: i64,
        /// The parent's stored cversion after this create (`stored + 1`), or -1 for "+1".
        parent_cversion: i32,
        kind: CreateKind,
    },
    Delete {
        path: String,
    },
    SetData {
        path: String,
        data: Option<Arc<[u8]>>,
        /// The node's new version.
        version: i32,
    },
    SetAcl {
        path: String,
        acl: Vec<Acl>,
        /// The node's new aversion.
        version: i32,
    },
    Check {
        path: String,
        /// As ZooKeeper logs it: the checked version plus one.
        version: i32,
    },
    CreateSession {
        timeout_ms: i32,
    },
    CloseSession {
        /// The session's ephemerals at prep time, sorted.
        paths_to_delete: Vec<String>,
    },
    Error {
        err: ErrorCode,
    },
    Multi(Vec<Txn>),
}

/// The outcome of one applied txn, as the reply needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpResult {
    /// createSession, closeSession and anything else without a reply body.
    Ok,
    /// create / create2 / createContainer / createTTL: the final path and the new node's stat.
    Created {
        path: String,
        stat: Stat,
    },
    Deleted,
    SetData {
        stat: Stat,
    },
    SetAcl {
        stat: Stat,
    },
    /// A check inside a multi that passed.
    Checked,
    /// The request failed with this code. In a failed multi: `Error(Ok)` for the ops before
    /// the failing one, its code for it, `Error(RuntimeInconsistency)` after.
    Error(ErrorCode),
    /// One result per sub-op. The reply header's err is 0 even when a sub-op failed.
    Multi(Vec<OpResult>),
}

impl OpResult {
    /// The error a client sees for this result: its code, or for a multi the first failure.
    pub fn err(&self) -> ErrorCode {
        match self {
            OpResult::Error(code) => *code,
            OpResult::Multi(results) => results
                .iter()
                .map(OpResult::err)
                .find(|code| *code != ErrorCode::Ok)
                .unwrap_or(ErrorCode::Ok),
            _ => ErrorCode::Ok,
        }
    }
}

/// A watch event a txn causes, in the order ZooKeeper fires them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchTrigger {
    pub path: String,
    pub event: EventType,
    /// The ACL of the node the event is about (the parent's for NodeChildrenChanged, the
    /// deleted node's for NodeDeleted). ZooKeeper 3.8.4+ delivers an event only to sessions
    /// with READ on it, and after a delete the node is gone from the view, so it travels here.
    pub acl: Arc<[Acl]>,
}

/// What applying a txn produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResult {
    pub result: OpResult,
    pub triggers: Vec<WatchTrigger>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_err_is_first_failure() {
        // A failed multi reports its failing op's code, a passing one reports Ok.
        let failed = OpResult::Multi(vec![
            OpResult::Error(ErrorCode::Ok),
            OpResult::Error(ErrorCode::NoNode),
            OpResult::Error(ErrorCode::RuntimeInconsistency),
        ]);
        assert_eq!(failed.err(), ErrorCode::NoNode);
        assert_eq!(
            OpResult::Multi(vec![OpResult::Deleted]).err(),
            ErrorCode::Ok
        );
        assert_eq!(OpResult::Error(ErrorCode::NoAuth).err(), ErrorCode::NoAuth);
    }
}
