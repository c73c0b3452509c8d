//! The data tree: a persistent (path-copying) tree of znodes with ZooKeeper's apply semantics
//! (`DataTree.processTxn`, `createNode`, `deleteNode`, `setData`, `setACL`, `killSession`).
//!
//! A `DataTree` value is a root `Arc<Node>` plus a few persistent indexes, so `clone()` is O(1)
//! and the clone is an immutable view that may move to another thread. Mutation goes through
//! `Arc::make_mut` from the root down to the changed node: nodes still shared with a view are
//! copied on the way (with their child table's touched B-tree chunks), everything else is
//! shared. Between two views, the first write to a region pays the copy; later writes in the
//! same batch mutate in place.

use super::node::{ChildIter, Name, Node, NodeKind};
use super::path::{java_length, split_parent, validate_path, watch_path, PathCursor};
use super::quota::{quota_path_unregistered_by_delete, LIMIT_NODE, STAT_NODE};
use super::quota::{stat_path, trie_spelling, trim_quota_path, QuotaTrie, StatsTrack};
use super::restore::StoredStat;
use super::txn::{CreateKind, OpResult, Txn, TxnHeader, TxnResult, WatchTrigger};
use crate::proto::{op, open_acl_unsafe, read_acl_unsafe, Acl, ErrorCode, EventType, Stat};
use imbl::{OrdMap, OrdSet};
use std::sync::Arc;

/// The stored ephemeralOwner of a container (`EphemeralType.CONTAINER_EPHEMERAL_OWNER`).
pub const CONTAINER_EPHEMERAL_OWNER: i64 = i64::MIN;

/// The top byte that marks a TTL node's stored ephemeralOwner (`0xFF << 56`).
pub const TTL_EPHEMERAL_OWNER_MARK: i64 = -0x0100_0000_0000_0000;

/// The largest TTL, about 34.8 years (`EphemeralType.TTL` max value).
pub const TTL_MS_MAX: i64 = 0xFF_FFFF_FFFF;

const _: () = assert!(TTL_EPHEMERAL_OWNER_MARK as u64 == 0xFF00_0000_0000_0000);
const _: () = assert!(TTL_EPHEMERAL_OWNER_MARK & TTL_MS_MAX == 0);

// A view is handed to shard threads, so the whole tree must be Send + Sync.
const _: fn() = || {
    fn is_send_sync<T: Send + Sync>() {}
    is_send_sync::<DataTree>();
};

/// The znode tree. See the module docs for the persistence design.
#[derive(Clone)]
pub struct DataTree {
    pub(super) root: Arc<Node>,
    /// Nodes in the tree, root included once (ZooKeeper's map counts it twice).
    pub(super) node_count_distinct: usize,
    /// Path length plus data length over all nodes, exactly.
    pub(super) data_size_approximate: u64,
    /// Net bytes that quota stats writes added to stats nodes. ZooKeeper writes those without
    /// telling its cached `nodeDataSize`, which therefore lags the true size by this much.
    pub(super) quota_stats_bytes_unseen: i64,
    /// The paths with a quota (ZooKeeper's `pTrie`).
    pub(super) quotas: QuotaTrie,
    pub(super) last_zxid: i64,
    /// (owner session, path) of every ephemeral node.
    pub(super) ephemerals: OrdSet<(i64, Arc<str>)>,
    /// How many ephemerals each session owns (sessions with none are absent).
    pub(super) ephemeral_counts: OrdMap<i64, usize>,
    /// Paths of container and TTL nodes: what the reaper looks at.
    pub(super) reapables: OrdSet<Arc<str>>,
    /// Interned ACL lists with the number of nodes using each.
    pub(super) acls: OrdMap<Arc<[Acl]>, u64>,
}

/// A read-only handle on one node of a tree view.
#[derive(Clone, Copy)]
pub struct NodeRef<'a> {
    node: &'a Node,
}

/// A tree's summary figures at one zxid: what the four-letter words report of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TreeFigures {
    pub last_zxid: i64,
    /// As `DataTree::node_count` (ZooKeeper's `zk_znode_count`).
    pub node_count: u64,
    pub approximate_data_size: u64,
    pub ephemerals_count: u64,
}

/// The names of a node's children, in byte order.
pub struct ChildNames<'a> {
    inner: Option<ChildIter<'a>>,
}

impl<'a> Iterator for ChildNames<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        self.inner.as_mut()?.next().map(|(name, _)| name.as_str())
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner
            .as_ref()
            .map_or((0, Some(0)), |inner| inner.size_hint())
    }
}

impl ExactSizeIterator for ChildNames<'_> {}

impl<'a> NodeRef<'a> {
    /// The Stat a client sees (derived cversion, masked ephemeralOwner, computed lengths).
    pub fn stat(&self) -> Stat {
        node_stat(self.node)
    }

    /// `None` is null data (getData returns length -1), distinct from empty data.
    pub fn data(&self) -> Option<&'a Arc<[u8]>> {
        self.node.data.as_ref()
    }

    pub fn acl(&self) -> &'a Arc<[Acl]> {
        &self.node.acl
    }

    pub fn children(&self) -> ChildNames<'a> {
        ChildNames {
            inner: self.node.children.as_ref().map(|children| children.iter()),
        }
    }

    pub fn child(&self, name: &str) -> Option<NodeRef<'a>> {
        self.node
            .child(name.as_bytes())
            .map(|node| NodeRef { node })
    }

    pub fn num_children(&self) -> usize {
        self.node.child_count()
    }

    /// The stored ephemeralOwner, including the container and TTL markers.
    pub fn ephemeral_owner_raw(&self) -> i64 {
        self.node.ephemeral_owner
    }

    /// The stored cversion: the number of child creates, the sequential-suffix counter.
    pub fn stored_cversion(&self) -> i32 {
        self.node.cversion
    }

    /// Everything a snapshot keeps of this node besides its data, ACL and children.
    pub fn stored_stat(&self) -> StoredStat {
        let node = self.node;
        StoredStat {
            czxid: node.czxid,
            mzxid: node.mzxid,
            pzxid: node.pzxid,
            ctime_ms: node.ctime_ms,
            mtime_ms: node.mtime_ms,
            ephemeral_owner: node.ephemeral_owner,
            version: node.version,
            cversion: node.cversion,
            aversion: node.aversion,
            kind: node.kind,
        }
    }

    /// The owning session of an ephemeral node.
    pub fn ephemeral_session(&self) -> Option<i64> {
        (self.node.kind == NodeKind::Ephemeral).then_some(self.node.ephemeral_owner)
    }

    pub fn is_container(&self) -> bool {
        self.node.kind == NodeKind::Container
    }

    pub fn ttl_ms(&self) -> Option<i64> {
        (self.node.kind == NodeKind::Ttl).then_some(self.node.ephemeral_owner & TTL_MS_MAX)
    }
}

fn data_len(data: &Option<Arc<[u8]>>) -> usize {
    data.as_ref().map_or(0, |data| data.len())
}

fn node_stat(node: &Node) -> Stat {
    let num_children = i32::try_from(node.child_count()).unwrap_or(i32::MAX);
    let ephemeral_owner = match node.kind {
        NodeKind::Container | NodeKind::Ttl => 0,
        NodeKind::Persistent | NodeKind::Ephemeral => node.ephemeral_owner,
    };
    Stat {
        czxid: node.czxid,
        mzxid: node.mzxid,
        ctime: node.ctime_ms,
        mtime: node.mtime_ms,
        version: node.version,
        // Stored cversion counts creates; every missing child was deleted once more.
        cversion: node.cversion.wrapping_mul(2).wrapping_sub(num_children),
        aversion: node.aversion,
        ephemeral_owner,
        data_length: i32::try_from(data_len(&node.data)).unwrap_or(i32::MAX),
        num_children,
        pzxid: node.pzxid,
    }
}

/// The arguments of a create txn, borrowed from it.
struct CreateArgs<'a> {
    path: &'a str,
    data: &'a Option<Arc<[u8]>>,
    acl: &'a [Acl],
    ephemeral_owner: i64,
    parent_cversion: i32,
    kind: CreateKind,
}

impl Default for DataTree {
    fn default() -> DataTree {
        DataTree::new()
    }
}

impl std::fmt::Debug for DataTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataTree")
            .field("nodes", &self.node_count_distinct)
            .field("last_zxid", &self.last_zxid)
            .field("ephemerals", &self.ephemerals.len())
            .field("data_size", &self.data_size_approximate)
            .finish()
    }
}

impl DataTree {
    /// A fresh tree as ZooKeeper starts: `/`, `/zookeeper`, `/zookeeper/quota` with all-zero
    /// stats, OPEN_ACL_UNSAFE and empty (not null) data; `/zookeeper/config` likewise but with
    /// READ_ACL_UNSAFE and aversion -1 (ZooKeeper sets its ACL with version -1 at startup).
    pub fn new() -> DataTree {
        let mut tree = DataTree {
            node_count_distinct: 4,
            ..DataTree::empty()
        };
        let open = open_acl_unsafe();
        let mut config = system_node(tree.intern_acl(&read_acl_unsafe()));
        config.aversion = -1;
        let mut zookeeper = system_node(tree.intern_acl(&open));
        let quota = system_node(tree.intern_acl(&open));
        zookeeper
            .children_mut()
            .insert(Name::new("quota"), Arc::new(quota));
        zookeeper
            .children_mut()
            .insert(Name::new("config"), Arc::new(config));
        let mut root = system_node(tree.intern_acl(&open));
        root.children_mut()
            .insert(Name::new("zookeeper"), Arc::new(zookeeper));
        tree.root = Arc::new(root);
        tree.data_size_approximate = ["/", "/zookeeper", "/zookeeper/quota", "/zookeeper/config"]
            .iter()
            .map(|path| java_length(path))
            .sum();
        tree
    }

    /// A bare root with empty indexes and counts of zero: the start of `new` and of
    /// `TreeBuilder`, which fill in nodes and counts themselves.
    pub(super) fn empty() -> DataTree {
        DataTree {
            root: Arc::new(system_node(Arc::from(Vec::new()))),
            node_count_distinct: 0,
            data_size_approximate: 0,
            quota_stats_bytes_unseen: 0,
            quotas: QuotaTrie::default(),
            last_zxid: 0,
            ephemerals: OrdSet::new(),
            ephemeral_counts: OrdMap::new(),
            reapables: OrdSet::new(),
            acls: OrdMap::new(),
        }
    }

    /// The node at `path`; `""` is ZooKeeper's alias of the root. Paths are looked up as they
    /// are, with no validation: a malformed path simply finds nothing.
    pub fn node(&self, path: &str) -> Option<NodeRef<'_>> {
        self.lookup(path).map(|node| NodeRef { node })
    }

    /// As ZooKeeper's `zk_znode_count`: its node map holds the root under both `""` and `/`,
    /// so a fresh tree reports 5.
    pub fn node_count(&self) -> usize {
        self.node_count_distinct + 1
    }

    /// ZooKeeper's `zk_approximate_data_size`: path lengths (UTF-16 units) plus data bytes,
    /// less what quota stats writes added, as ZooKeeper's cached size misses those.
    pub fn approximate_data_size(&self) -> u64 {
        let cached =
            i128::from(self.data_size_approximate) - i128::from(self.quota_stats_bytes_unseen);
        u64::try_from(cached.max(0)).unwrap_or(u64::MAX)
    }

    pub fn last_zxid(&self) -> i64 {
        self.last_zxid
    }

    /// The figures `srvr` and `mntr` show of this tree, without holding on to it.
    pub fn figures(&self) -> TreeFigures {
        TreeFigures {
            last_zxid: self.last_zxid,
            node_count: self.node_count() as u64,
            approximate_data_size: self.approximate_data_size(),
            ephemerals_count: self.ephemeral_count() as u64,
        }
    }

    /// True when no other clone shares this view's root: dropping it then frees, on the
    /// dropping thread, the blocks that only this version still holds. A hint (another
    /// version with the same root, e.g. after a failed txn, keeps it false), never a
    /// condition for correctness.
    pub fn is_sole_view(&self) -> bool {
        Arc::strong_count(&self.root) == 1
    }

    /// Moves the last applied zxid forward without a txn (snapshot load, new epoch).
    pub fn set_last_zxid(&mut self, zxid: i64) {
        self.last_zxid = self.last_zxid.max(zxid);
    }

    /// The ephemeral paths of a session, sorted.
    pub fn ephemerals(&self, session_id: i64) -> Vec<String> {
        let start = (session_id, Arc::<str>::from(""));
        self.ephemerals
            .range(start..)
            .take_while(|(owner, _)| *owner == session_id)
            .map(|(_, path)| path.to_string())
            .collect()
    }

    pub fn ephemeral_count(&self) -> usize {
        self.ephemerals.len()
    }

    /// Sessions owning at least one ephemeral, ascending.
    pub fn session_ids_with_ephemerals(&self) -> Vec<i64> {
        self.ephemeral_counts.keys().copied().collect()
    }

    /// getAllChildrenNumber: all descendants of `path` (for `/`, every other node, the
    /// `/zookeeper` ones included). `None` if the node does not exist.
    pub fn all_children_number(&self, path: &str) -> Option<i32> {
        let node = self.lookup(path)?;
        if std::ptr::eq(node, &*self.root) {
            return Some(i32::try_from(self.node_count_distinct - 1).unwrap_or(i32::MAX));
        }
        // An explicit stack: a path of a megabyte can be half a million levels deep.
        let mut count: usize = 0;
        let mut stack: Vec<&Node> = vec![node];
        while let Some(next) = stack.pop() {
            if let Some(children) = &next.children {
                count += children.len();
                stack.extend(children.iter().map(|(_, child)| &**child));
            }
        }
        Some(i32::try_from(count).unwrap_or(i32::MAX))
    }

    /// What ZooKeeper's `ContainerManager` would delete now, sorted: containers without
    /// children that had one (stored cversion > 0) or, if `container_never_used_ms` is not 0,
    /// were last modified longer ago than it; TTL nodes without children whose
    /// `now - mtime > ttl`.
    pub fn container_and_ttl_candidates(
        &self,
        now_ms: i64,
        container_never_used_ms: i64,
    ) -> Vec<String> {
        let mut candidates = Vec::new();
        for path in self.reapables.iter() {
            let Some(node) = self.lookup(path) else {
                continue;
            };
            if node.child_count() > 0 {
                continue;
            }
            let elapsed_ms = now_ms.saturating_sub(node.mtime_ms);
            let due = match node.kind {
                NodeKind::Container => {
                    node.cversion > 0
                        || (container_never_used_ms != 0 && elapsed_ms > container_never_used_ms)
                }
                NodeKind::Ttl => {
                    let ttl_ms = node.ephemeral_owner & TTL_MS_MAX;
                    ttl_ms != 0 && elapsed_ms > ttl_ms
                }
                NodeKind::Persistent | NodeKind::Ephemeral => false,
            };
            if due {
                candidates.push(path.to_string());
            }
        }
        candidates
    }

    /// Visits every node in pre-order (parent before children, children in name order).
    pub fn walk(&self, mut visit: impl FnMut(&str, NodeRef<'_>)) {
        let mut cursor = PathCursor::default();
        self.walk_names(|depth, name, node| {
            if let Some(path) = cursor.enter(depth, name) {
                visit(path, node);
            }
        });
    }

    /// Visits every node in pre-order with its depth (the root is 0) and name (`""` for the
    /// root), children in name order: what a snapshot writes, without building paths.
    pub fn walk_names(&self, mut visit: impl FnMut(usize, &str, NodeRef<'_>)) {
        let mut stack: Vec<(usize, &str, &Node)> = vec![(0, "", &*self.root)];
        while let Some((depth, name, node)) = stack.pop() {
            visit(depth, name, NodeRef { node });
            let Some(children) = &node.children else {
                continue;
            };
            let start = stack.len();
            for (name, child) in children.iter() {
                stack.push((depth + 1, name.as_str(), &**child));
            }
            // Reverse so that popping yields children in name order.
            stack[start..].reverse();
        }
    }

    /// Distinct nodes in the tree, root included (unlike `node_count`, which counts the root
    /// twice as ZooKeeper does).
    pub fn node_count_distinct(&self) -> usize {
        self.node_count_distinct
    }

    fn lookup(&self, path: &str) -> Option<&Node> {
        let mut node: &Node = &self.root;
        if path.is_empty() || path == "/" {
            return Some(node);
        }
        // An empty segment finds nothing: no child is ever named "".
        for segment in path.strip_prefix('/')?.split('/') {
            node = node.child(segment.as_bytes())?;
        }
        Some(node)
    }

    /// The node at `path` for writing, copying every node on the way that a view still shares.
    /// Callers look the path up first so that a miss copies nothing.
    pub(super) fn node_mut(&mut self, path: &str) -> Option<&mut Node> {
        let mut node: &mut Node = Arc::make_mut(&mut self.root);
        if path.is_empty() || path == "/" {
            return Some(node);
        }
        for segment in path.strip_prefix('/')?.split('/') {
            let children = node.children.as_mut()?;
            node = Arc::make_mut(Arc::make_mut(children).get_mut(segment.as_bytes())?);
        }
        Some(node)
    }

    /// The shared copy of an ACL list, counted once more.
    pub(super) fn intern_acl(&mut self, acl: &[Acl]) -> Arc<[Acl]> {
        if let Some(count) = self.acls.get_mut(acl) {
            *count += 1;
        }
        if let Some((interned, _)) = self.acls.get_key_value(acl) {
            return interned.clone();
        }
        let interned: Arc<[Acl]> = Arc::from(acl);
        self.acls.insert(interned.clone(), 1);
        interned
    }

    fn release_acl(&mut self, acl: &[Acl]) {
        let Some(count) = self.acls.get_mut(acl) else {
            return;
        };
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.acls.remove(acl);
        }
    }

    /// How many distinct ACL lists are in use (ZooKeeper's `aclCacheSize`).
    pub fn acl_count(&self) -> usize {
        self.acls.len()
    }
}

pub(super) fn system_node(acl: Arc<[Acl]>) -> Node {
    Node {
        czxid: 0,
        mzxid: 0,
        pzxid: 0,
        ctime_ms: 0,
        mtime_ms: 0,
        ephemeral_owner: 0,
        version: 0,
        cversion: 0,
        aversion: 0,
        kind: NodeKind::Persistent,
        data: Some(Arc::from(Vec::new())),
        acl,
        children: None,
    }
}

// Applying transactions.
impl DataTree {
    /// Applies one committed txn, deterministically, and records its zxid.
    ///
    /// Errors are results, never panics: a txn that does not fit the tree (possible only when
    /// replaying a log over a fuzzy snapshot) yields `OpResult::Error` as ZooKeeper's
    /// `processTxn` would, including its NodeExists parent-cversion repair.
    pub fn apply(&mut self, header: &TxnHeader, txn: &Txn) -> TxnResult {
        // Most txns trigger one or two watches (a create: the node's and its parent's).
        let mut triggers = Vec::with_capacity(2);
        let result = match txn {
            Txn::Multi(txns) => self.apply_multi(header, txns, &mut triggers),
            _ => self.apply_single(header, txn, &mut triggers),
        };
        if let (Txn::Create { path, .. }, OpResult::Error(ErrorCode::NodeExists)) = (txn, &result) {
            if header.op == op::CREATE {
                self.repair_parent_cversion(txn, path, header.zxid);
            }
        }
        self.last_zxid = self.last_zxid.max(header.zxid);
        TxnResult { result, triggers }
    }

    fn apply_single(
        &mut self,
        header: &TxnHeader,
        txn: &Txn,
        triggers: &mut Vec<WatchTrigger>,
    ) -> OpResult {
        let outcome = match txn {
            Txn::Create {
                path,
                data,
                acl,
                ephemeral_owner,
                parent_cversion,
                kind,
            } => {
                let args = CreateArgs {
                    path,
                    data,
                    acl,
                    ephemeral_owner: *ephemeral_owner,
                    parent_cversion: *parent_cversion,
                    kind: *kind,
                };
                self.apply_create(header, &args, triggers)
            }
            Txn::Delete { path } => self
                .apply_delete(path, header.zxid, triggers)
                .map(|()| OpResult::Deleted),
            Txn::SetData {
                path,
                data,
                version,
            } => self
                .apply_set_data(header, path, data, *version, triggers)
                .map(|stat| OpResult::SetData { stat }),
            Txn::SetAcl { path, acl, version } => self
                .apply_set_acl(path, acl, *version)
                .map(|stat| OpResult::SetAcl { stat }),
            // ZooKeeper checks versions in prep only; the txn just records that it passed.
            Txn::Check { .. } => Ok(OpResult::Checked),
            Txn::CreateSession { .. } => Ok(OpResult::Ok),
            Txn::CloseSession { paths_to_delete } => {
                self.apply_close_session(header, paths_to_delete, triggers);
                Ok(OpResult::Ok)
            }
            Txn::Error { err } => Err(*err),
            // A multi nested in a multi cannot be encoded; refuse it without touching the tree.
            Txn::Multi(_) => Err(ErrorCode::MarshallingError),
        };
        outcome.unwrap_or_else(OpResult::Error)
    }

    /// A multi: if prep failed one op, no op applies and each gets its error result; else
    /// each applies in order under the same zxid.
    fn apply_multi(
        &mut self,
        header: &TxnHeader,
        txns: &[Txn],
        triggers: &mut Vec<WatchTrigger>,
    ) -> OpResult {
        let nested = |txn: &Txn| {
            matches!(
                txn,
                Txn::Multi(_) | Txn::CreateSession { .. } | Txn::CloseSession { .. }
            )
        };
        if txns.iter().any(nested) {
            return OpResult::Error(ErrorCode::MarshallingError);
        }
        let failed = txns.iter().any(|txn| matches!(txn, Txn::Error { .. }));
        let mut after_failure = false;
        let mut results = Vec::with_capacity(txns.len());
        for txn in txns {
            let result = match txn {
                Txn::Error { err } => {
                    after_failure = true;
                    OpResult::Error(*err)
                }
                _ if failed && after_failure => OpResult::Error(ErrorCode::RuntimeInconsistency),
                _ if failed => OpResult::Error(ErrorCode::Ok),
                _ => self.apply_single(header, txn, triggers),
            };
            results.push(result);
        }
        OpResult::Multi(results)
    }

    fn apply_create(
        &mut self,
        header: &TxnHeader,
        args: &CreateArgs<'_>,
        triggers: &mut Vec<WatchTrigger>,
    ) -> Result<OpResult, ErrorCode> {
        // Prep only produces valid paths; checking again keeps a foreign or damaged log from
        // creating a node under a non-canonical path ("//a") that the indexes would misname.
        validate_path(args.path)?;
        let (parent_path, name) = split_parent(args.path).ok_or(ErrorCode::BadArguments)?;
        if name.is_empty() {
            return Err(ErrorCode::NodeExists);
        }
        let (kind, owner) = stored_kind(args.kind, args.ephemeral_owner)?;
        let parent = self.lookup(parent_path).ok_or(ErrorCode::NoNode)?;
        if parent.kind == NodeKind::Ephemeral {
            // ZooKeeper checks this in prep only; refusing here too keeps ephemerals leaves
            // whatever a log says.
            return Err(ErrorCode::NoChildrenForEphemerals);
        }
        let node = Node {
            czxid: header.zxid,
            mzxid: header.zxid,
            pzxid: header.zxid,
            ctime_ms: header.time_ms,
            mtime_ms: header.time_ms,
            ephemeral_owner: owner,
            version: 0,
            cversion: 0,
            aversion: 0,
            kind,
            data: args.data.clone(),
            acl: self.intern_acl(args.acl),
            children: None,
        };
        let stat = node_stat(&node);
        let node_acl = node.acl.clone();
        let Some(parent) = self.node_mut(parent_path) else {
            self.release_acl(&node_acl);
            return Err(ErrorCode::NoNode);
        };
        // One search of the parent's children, not a lookup and then the insert's own: a
        // taken name changes nothing (the blocks it copied hold what they held).
        if !parent
            .children_mut()
            .insert(Name::new(name), Arc::new(node))
        {
            self.release_acl(&node_acl);
            // ZooKeeper re-points an existing node's ACL before failing (a replay repair).
            self.replace_acl(args.path, args.acl);
            return Err(ErrorCode::NodeExists);
        }
        let cversion = match args.parent_cversion {
            -1 => parent.cversion.wrapping_add(1),
            cversion => cversion,
        };
        if cversion > parent.cversion {
            parent.cversion = cversion;
            parent.pzxid = header.zxid;
        }
        let parent_acl = parent.acl.clone();
        self.index_created(args.path, kind, owner, args.data);
        self.quota_after_create(args.path, parent_path, name, data_len(args.data));
        triggers.push(trigger(args.path, EventType::NodeCreated, node_acl));
        let parent_event = EventType::NodeChildrenChanged;
        triggers.push(trigger(watch_path(parent_path), parent_event, parent_acl));
        Ok(OpResult::Created {
            path: args.path.to_string(),
            stat,
        })
    }

    pub(super) fn index_created(
        &mut self,
        path: &str,
        kind: NodeKind,
        owner: i64,
        data: &Option<Arc<[u8]>>,
    ) {
        self.node_count_distinct += 1;
        self.data_size_approximate = self
            .data_size_approximate
            .saturating_add(java_length(path))
            .saturating_add(data_len(data) as u64);
        match kind {
            NodeKind::Ephemeral => {
                self.ephemerals.insert((owner, Arc::from(path)));
                *self.ephemeral_counts.entry(owner).or_insert(0) += 1;
            }
            NodeKind::Container | NodeKind::Ttl => {
                self.reapables.insert(Arc::from(path));
            }
            NodeKind::Persistent => {}
        }
    }

    fn index_deleted(&mut self, path: &str, node: &Node) {
        self.node_count_distinct = self.node_count_distinct.saturating_sub(1);
        self.data_size_approximate = self
            .data_size_approximate
            .saturating_sub(java_length(path))
            .saturating_sub(data_len(&node.data) as u64);
        self.release_acl(&node.acl);
        match node.kind {
            NodeKind::Ephemeral => {
                let owner = node.ephemeral_owner;
                self.ephemerals.remove(&(owner, Arc::from(path)));
                let remaining = self
                    .ephemeral_counts
                    .get(&owner)
                    .map_or(0, |n| n.saturating_sub(1));
                if remaining == 0 {
                    self.ephemeral_counts.remove(&owner);
                } else {
                    self.ephemeral_counts.insert(owner, remaining);
                }
            }
            NodeKind::Container | NodeKind::Ttl => {
                self.reapables.remove(path);
            }
            NodeKind::Persistent => {}
        }
    }

    /// Removes a childless node. As in ZooKeeper, the parent's pzxid moves forward even when
    /// the child turns out to be missing. Unlike ZooKeeper, a node with children is refused
    /// (NotEmpty) rather than orphaning them; prep never lets that reach apply.
    fn apply_delete(
        &mut self,
        path: &str,
        zxid: i64,
        triggers: &mut Vec<WatchTrigger>,
    ) -> Result<(), ErrorCode> {
        // A non-canonical path ("//a", "/a/") names no node; touch nothing.
        validate_path(path).map_err(|_| ErrorCode::NoNode)?;
        let (parent_path, name) = split_parent(path).ok_or(ErrorCode::NoNode)?;
        if name.is_empty() {
            return Err(ErrorCode::NoNode);
        }
        let parent = self.lookup(parent_path).ok_or(ErrorCode::NoNode)?;
        let exists = match parent.child(name.as_bytes()) {
            Some(child) if child.child_count() > 0 => return Err(ErrorCode::NotEmpty),
            Some(_) => true,
            None => false,
        };
        let parent = self.node_mut(parent_path).ok_or(ErrorCode::NoNode)?;
        if zxid > parent.pzxid {
            parent.pzxid = zxid;
        }
        let removed = if exists {
            parent.children_mut().remove(name.as_bytes())
        } else {
            None
        };
        parent.release_empty_children();
        let parent_acl = parent.acl.clone();
        let removed = removed.ok_or(ErrorCode::NoNode)?;
        self.index_deleted(path, &removed);
        self.quota_after_delete(path, parent_path, name, data_len(&removed.data));
        triggers.push(trigger(path, EventType::NodeDeleted, removed.acl.clone()));
        let parent_event = EventType::NodeChildrenChanged;
        triggers.push(trigger(watch_path(parent_path), parent_event, parent_acl));
        Ok(())
    }

    fn apply_set_data(
        &mut self,
        header: &TxnHeader,
        path: &str,
        data: &Option<Arc<[u8]>>,
        version: i32,
        triggers: &mut Vec<WatchTrigger>,
    ) -> Result<Stat, ErrorCode> {
        // No `lookup` first: a committed setData names a node that exists, and on a miss
        // the copies `node_mut` made along the path are equal to what they replace.
        let node = self.node_mut(path).ok_or(ErrorCode::NoNode)?;
        let old_length = data_len(&node.data) as u64;
        node.data = data.clone();
        node.mtime_ms = header.time_ms;
        node.mzxid = header.zxid;
        node.version = version;
        let stat = node_stat(node);
        let acl = node.acl.clone();
        self.data_size_approximate = self
            .data_size_approximate
            .saturating_sub(old_length)
            .saturating_add(data_len(data) as u64);
        if let Some(prefix) = self.quota_prefix(path) {
            let bytes_diff = (data_len(data) as i64).wrapping_sub(old_length as i64);
            self.add_to_quota_stats(&prefix, bytes_diff, 0);
        }
        triggers.push(trigger(path, EventType::NodeDataChanged, acl));
        Ok(stat)
    }

    fn apply_set_acl(&mut self, path: &str, acl: &[Acl], version: i32) -> Result<Stat, ErrorCode> {
        self.lookup(path).ok_or(ErrorCode::NoNode)?;
        let stat = self.replace_acl(path, acl).ok_or(ErrorCode::NoNode)?;
        let node = self.node_mut(path).ok_or(ErrorCode::NoNode)?;
        node.aversion = version;
        Ok(Stat {
            aversion: version,
            ..stat
        })
    }

    /// Points the node's ACL at the interned `acl`, releasing the old one.
    fn replace_acl(&mut self, path: &str, acl: &[Acl]) -> Option<Stat> {
        self.lookup(path)?;
        let interned = self.intern_acl(acl);
        let Some(node) = self.node_mut(path) else {
            self.release_acl(&interned);
            return None;
        };
        let old = std::mem::replace(&mut node.acl, interned);
        let stat = node_stat(node);
        self.release_acl(&old);
        Some(stat)
    }

    /// Deletes the listed paths (missing ones are skipped), then any ephemeral the session
    /// still owns that the list did not name, as ZooKeeper's `killSession` does.
    fn apply_close_session(
        &mut self,
        header: &TxnHeader,
        paths_to_delete: &[String],
        triggers: &mut Vec<WatchTrigger>,
    ) {
        for path in paths_to_delete {
            // A missing path was already deleted; ZooKeeper only logs it.
            let _ = self.apply_delete(path, header.zxid, triggers);
        }
        for path in self.ephemerals(header.session_id) {
            let _ = self.apply_delete(&path, header.zxid, triggers);
        }
    }

    /// ZooKeeper's `setCversionPzxid` after a create txn hit an existing node during replay.
    fn repair_parent_cversion(&mut self, txn: &Txn, path: &str, zxid: i64) {
        let Txn::Create {
            parent_cversion, ..
        } = txn
        else {
            return;
        };
        let Some((parent_path, _)) = split_parent(path) else {
            return;
        };
        let Some(parent) = self.lookup(parent_path) else {
            return;
        };
        let cversion = match *parent_cversion {
            -1 => parent.cversion.wrapping_add(1),
            cversion => cversion,
        };
        if cversion > parent.cversion {
            if let Some(parent) = self.node_mut(parent_path) {
                parent.cversion = cversion;
                parent.pzxid = zxid;
            }
        }
    }
}

fn trigger(path: &str, event: EventType, acl: Arc<[Acl]>) -> WatchTrigger {
    WatchTrigger {
        path: path.to_string(),
        event,
        acl,
    }
}

/// The node kind and stored ephemeralOwner for a create txn.
fn stored_kind(kind: CreateKind, ephemeral_owner: i64) -> Result<(NodeKind, i64), ErrorCode> {
    match kind {
        CreateKind::Persistent | CreateKind::Persistent2 if ephemeral_owner == 0 => {
            Ok((NodeKind::Persistent, 0))
        }
        CreateKind::Persistent | CreateKind::Persistent2 => {
            Ok((NodeKind::Ephemeral, ephemeral_owner))
        }
        CreateKind::Container => Ok((NodeKind::Container, CONTAINER_EPHEMERAL_OWNER)),
        CreateKind::Ttl(ttl_ms) if (1..=TTL_MS_MAX).contains(&ttl_ms) => {
            Ok((NodeKind::Ttl, TTL_EPHEMERAL_OWNER_MARK | ttl_ms))
        }
        CreateKind::Ttl(_) => Err(ErrorCode::BadArguments),
    }
}

// Quotas: ZooKeeper's `DataTree` bookkeeping of `/zookeeper/quota` (see `quota`).
impl DataTree {
    /// `getMaxPrefixWithQuota`: the path of the quota covering `path`, the longest one.
    pub(crate) fn quota_prefix(&self, path: &str) -> Option<String> {
        if self.quotas.is_empty() {
            return None;
        }
        self.quotas.max_prefix(path)
    }

    /// The quota part of `createNode`: a new limits node registers its quota, a new stats node
    /// gets its quota's current usage, then the new node counts toward the quota covering it.
    fn quota_after_create(&mut self, path: &str, parent_path: &str, name: &str, bytes: usize) {
        if let Some(prefix) = trim_quota_path(parent_path) {
            if name == LIMIT_NODE {
                self.quotas.add(prefix);
            } else if name == STAT_NODE {
                self.refresh_quota_stats(prefix, path);
            }
        }
        if let Some(prefix) = self.quota_prefix(path) {
            self.add_to_quota_stats(&prefix, i64::try_from(bytes).unwrap_or(i64::MAX), 1);
        }
    }

    /// The quota part of `deleteNode`: a deleted limits node drops its quota (see
    /// `quota_path_unregistered_by_delete` for which), then the node leaves the quota covering
    /// it.
    fn quota_after_delete(&mut self, path: &str, parent_path: &str, name: &str, bytes: usize) {
        if name == LIMIT_NODE {
            if let Some(prefix) = quota_path_unregistered_by_delete(parent_path) {
                self.quotas.remove(&prefix);
            }
        }
        if let Some(prefix) = self.quota_prefix(path) {
            let bytes_diff = i64::try_from(bytes).map_or(i64::MIN, |bytes| -bytes);
            self.add_to_quota_stats(&prefix, bytes_diff, -1);
        }
    }

    /// `updateQuotaForPath`: writes the node count and data bytes of the subtree at `prefix`
    /// (looked up as ZooKeeper looks up its map key, so `""` is the whole tree and a prefix
    /// without a leading `/` is nothing) into the stats node just created at `stats_path`.
    pub(super) fn refresh_quota_stats(&mut self, prefix: &str, stats_path: &str) {
        let (count, bytes) = self.subtree_usage(prefix);
        let mut stats = StatsTrack::default();
        stats.set_bytes(bytes);
        stats.set_count(count);
        self.write_quota_stats(stats_path, stats.to_bytes());
    }

    /// (nodes, data bytes) of the subtree at `path`, itself included; (0, 0) if it is missing.
    fn subtree_usage(&self, path: &str) -> (i64, i64) {
        let Some(top) = self.lookup(path) else {
            return (0, 0);
        };
        let (mut count, mut bytes): (i64, i64) = (0, 0);
        let mut stack: Vec<&Node> = vec![top];
        while let Some(node) = stack.pop() {
            count = count.wrapping_add(1);
            bytes = bytes.wrapping_add(i64::try_from(data_len(&node.data)).unwrap_or(i64::MAX));
            if let Some(children) = &node.children {
                stack.extend(children.iter().map(|(_, child)| &**child));
            }
        }
        (count, bytes)
    }

    /// `updateQuotaStat`: adds to the count and bytes in the stats node of the quota on
    /// `prefix`, keeping its other keys. A missing stats node, or one whose data ZooKeeper
    /// could not parse (null or malformed; ZooKeeper 3.8 would throw), is left alone.
    fn add_to_quota_stats(&mut self, prefix: &str, bytes_diff: i64, count_diff: i64) {
        let path = stat_path(prefix);
        let Some(node) = self.lookup(&path) else {
            return;
        };
        let Some(mut stats) = StatsTrack::parse(node.data.as_deref()) else {
            return;
        };
        stats.set_count(stats.count().wrapping_add(count_diff));
        stats.set_bytes(stats.bytes().wrapping_add(bytes_diff));
        self.write_quota_stats(&path, stats.to_bytes());
    }

    /// Replaces a stats node's data as ZooKeeper does: in place, with no change to its
    /// version, mzxid or mtime, no watch event, and unseen by the cached data size.
    fn write_quota_stats(&mut self, path: &str, data: Vec<u8>) {
        if self.lookup(path).is_none() {
            return;
        }
        let Some(node) = self.node_mut(path) else {
            return;
        };
        let old_length = data_len(&node.data) as u64;
        let new_length = data.len() as u64;
        node.data = Some(Arc::from(data));
        self.data_size_approximate = self
            .data_size_approximate
            .saturating_sub(old_length)
            .saturating_add(new_length);
        let grown = (new_length as i64).wrapping_sub(old_length as i64);
        self.quota_stats_bytes_unseen = self.quota_stats_bytes_unseen.wrapping_add(grown);
    }
}

// Self-checks, for tests and the simulator.
impl DataTree {
    /// Checks every structural invariant by walking the whole tree (O(n)); returns the first
    /// violation found. Counters match a recount; every ephemeral, container and TTL node is
    /// in its index and nothing else is; ephemerals have no children; ACL reference counts
    /// match and every node points at the interned copy; child tables are sorted, non-empty
    /// and named validly; no zxid is beyond `last_zxid`; every registered quota has a limits
    /// node (the converse can fail, as in ZooKeeper, when two limits nodes alias one quota).
    pub fn invariants(&self) -> Result<(), String> {
        let mut census = Census::default();
        let mut failure: Option<String> = None;
        self.walk(|path, node| {
            if failure.is_none() {
                failure = census.visit(self, path, node.node).err();
            }
        });
        if let Some(failure) = failure {
            return Err(failure);
        }
        census.compare(self)
    }
}

/// What a full walk counts, to compare against the incremental indexes.
#[derive(Default)]
struct Census {
    nodes: usize,
    data_size: u64,
    ephemerals: Vec<(i64, String)>,
    reapables: Vec<String>,
    acl_uses: std::collections::BTreeMap<Vec<Acl>, u64>,
    /// The quota paths that existing limits nodes would register.
    quota_paths: std::collections::BTreeSet<String>,
}

impl Census {
    fn visit(&mut self, tree: &DataTree, path: &str, node: &Node) -> Result<(), String> {
        self.nodes += 1;
        if let Some((parent_path, LIMIT_NODE)) = split_parent(path) {
            let prefix = trim_quota_path(parent_path).and_then(trie_spelling);
            self.quota_paths.extend(prefix);
        }
        self.data_size += java_length(path) + data_len(&node.data) as u64;
        *self.acl_uses.entry(node.acl.to_vec()).or_insert(0) += 1;
        match tree.acls.get_key_value(&*node.acl) {
            Some((interned, _)) if Arc::ptr_eq(interned, &node.acl) => {}
            _ => return Err(format!("{path}: ACL is not the interned copy")),
        }
        match node.kind {
            NodeKind::Ephemeral => self
                .ephemerals
                .push((node.ephemeral_owner, path.to_string())),
            NodeKind::Container | NodeKind::Ttl => self.reapables.push(path.to_string()),
            NodeKind::Persistent => {}
        }
        if node.kind == NodeKind::Ephemeral && node.child_count() > 0 {
            return Err(format!("{path}: ephemeral with children"));
        }
        let newest = node.czxid.max(node.mzxid).max(node.pzxid);
        if newest > tree.last_zxid {
            return Err(format!(
                "{path}: zxid {newest} beyond last {}",
                tree.last_zxid
            ));
        }
        check_children(path, node)
    }

    fn compare(mut self, tree: &DataTree) -> Result<(), String> {
        if self.nodes != tree.node_count_distinct {
            return Err(format!(
                "node count {} != {}",
                tree.node_count_distinct, self.nodes
            ));
        }
        if self.data_size != tree.data_size_approximate {
            return Err(format!(
                "data size {} != {}",
                tree.data_size_approximate, self.data_size
            ));
        }
        self.ephemerals.sort();
        let indexed: Vec<(i64, String)> = tree
            .ephemerals
            .iter()
            .map(|(owner, path)| (*owner, path.to_string()))
            .collect();
        if indexed != self.ephemerals {
            return Err(format!(
                "ephemeral index {indexed:?} != {:?}",
                self.ephemerals
            ));
        }
        let counted: usize = tree.ephemeral_counts.values().sum();
        let sessions_ok = tree.ephemeral_counts.iter().all(|(owner, count)| {
            *count > 0 && indexed.iter().filter(|(o, _)| o == owner).count() == *count
        });
        if counted != indexed.len() || !sessions_ok {
            return Err("per-session ephemeral counts disagree with the index".to_string());
        }
        self.reapables.sort();
        let reapables: Vec<String> = tree.reapables.iter().map(|p| p.to_string()).collect();
        if reapables != self.reapables {
            return Err(format!(
                "reapable index {reapables:?} != {:?}",
                self.reapables
            ));
        }
        let interned: std::collections::BTreeMap<Vec<Acl>, u64> = tree
            .acls
            .iter()
            .map(|(acl, n)| (acl.to_vec(), *n))
            .collect();
        if interned != self.acl_uses {
            return Err(format!("ACL counts {interned:?} != {:?}", self.acl_uses));
        }
        tree.quotas.check()?;
        let stray = tree
            .quotas
            .marked_paths()
            .into_iter()
            .find(|path| !self.quota_paths.contains(path));
        if let Some(stray) = stray {
            return Err(format!("quota on {stray} without a limits node"));
        }
        Ok(())
    }
}

fn check_children(path: &str, node: &Node) -> Result<(), String> {
    let Some(children) = &node.children else {
        return Ok(());
    };
    if children.len() == 0 {
        return Err(format!("{path}: empty child table kept"));
    }
    let mut previous: Option<&Name> = None;
    for (name, _) in children.iter() {
        if name.as_str().is_empty() || name.as_str().contains('/') {
            return Err(format!("{path}: bad child name {name:?}"));
        }
        if previous.is_some_and(|previous| previous >= name) {
            return Err(format!("{path}: children out of order at {name:?}"));
        }
        previous = Some(name);
    }
    children
        .check()
        .map_err(|reason| format!("{path}: {reason}"))
}
