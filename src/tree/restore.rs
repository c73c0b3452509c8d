//! restore: a `DataTree` built from stored nodes in one pass — a snapshot being loaded, or
//! another server's data being imported — without replaying any history.
//!
//! Owns: `StoredStat` (the persisted fields of a znode, ZooKeeper's `StatPersisted` plus the
//! node kind) and `TreeBuilder`.
//! Input contract: nodes arrive in pre-order with every subtree contiguous — a parent before
//! its descendants, and a node's subtree finished before its next sibling starts. That is how
//! Keel's snapshots and ZooKeeper's `DataTree.serialize` write them. The children of one parent
//! may come in any order (ZooKeeper writes them in hash-set order): a parent's child table is
//! sorted once, when the parent is closed, and then built bottom-up without searching.
//! Must not: panic on any input. A node whose parent is not open, a name given twice, a bad
//! path, or a child under an ephemeral is a `RestoreError`, and the caller falls back (to an
//! older snapshot) or refuses to start.
//! Invariants: `finish` returns a tree whose indexes (counts, data size, ephemerals,
//! containers/TTLs, interned ACLs, quotas) match a full recount (`DataTree::invariants`), as if
//! the same nodes had been created one by one; each quota's stats node holds its subtree's
//! real usage (ZooKeeper's `setupQuota` on load).

use super::data_tree::system_node;
use super::node::{ChildMap, Name, Node, NodeKind};
use super::path::{split_parent, valid_name, validate_path};
use super::quota::{stat_path, trim_quota_path, LIMIT_NODE};
use super::DataTree;
use crate::proto::{open_acl_unsafe, read_acl_unsafe, Acl};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What a snapshot keeps of a znode besides its path, data, ACL and children. `cversion` is
/// the *stored* count of child creates (ZooKeeper's persisted cversion), and `ephemeral_owner`
/// is stored raw: the session id, or the container/TTL marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredStat {
    pub czxid: i64,
    pub mzxid: i64,
    pub pzxid: i64,
    pub ctime_ms: i64,
    pub mtime_ms: i64,
    pub ephemeral_owner: i64,
    pub version: i32,
    pub cversion: i32,
    pub aversion: i32,
    pub kind: NodeKind,
}

/// Why stored nodes do not form a tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    #[error("the first node must be the root, found {0:?}")]
    RootNotFirst(String),
    #[error("no nodes: not even the root")]
    Empty,
    #[error("{0:?}: not a valid znode path")]
    BadPath(String),
    #[error("{0:?}: its parent is not open (nodes out of pre-order, or the parent is missing)")]
    Orphan(String),
    #[error("{0:?}: stored twice")]
    Duplicate(String),
    #[error("{0:?}: stored under an ephemeral node")]
    ChildOfEphemeral(String),
}

/// Sibling subtrees built by their own `TreeBuilder` (`for_children_of`), with the counts
/// and indexes of their nodes, waiting to be grafted under their parent (`graft`).
pub struct Subtrees {
    children: Vec<(Name, Arc<Node>)>,
    children_sorted: bool,
    /// Only the counts and indexes: its root is a placeholder.
    index: DataTree,
    acls: BTreeMap<Arc<[Acl]>, u64>,
    quota_prefixes: Vec<String>,
}

/// A node whose subtree is still arriving.
struct Frame {
    node: Node,
    name: Name,
    children: Vec<(Name, Arc<Node>)>,
    /// False once a child arrived out of name order: sort when closing.
    children_sorted: bool,
    /// Length of the builder's `path` up to this node's parent.
    parent_path_bytes: usize,
}

/// Builds a `DataTree` from nodes in pre-order; see the module header.
pub struct TreeBuilder {
    tree: DataTree,
    frames: Vec<Frame>,
    /// The path of the top frame, `""` for the root (so a child's path is `path + "/" + name`).
    path: String,
    acls: BTreeMap<Arc<[Acl]>, u64>,
    /// The last list interned and its uses since (not yet counted in `acls`).
    last_acl: Option<(Arc<[Acl]>, u64)>,
    /// Paths whose quota (limits node) was seen: their stats are recounted in `finish`.
    quota_prefixes: Vec<String>,
}

impl Default for TreeBuilder {
    fn default() -> TreeBuilder {
        TreeBuilder::new()
    }
}

impl TreeBuilder {
    pub fn new() -> TreeBuilder {
        TreeBuilder {
            tree: DataTree::empty(),
            frames: Vec::new(),
            path: String::new(),
            acls: BTreeMap::new(),
            last_acl: None,
            quota_prefixes: Vec::new(),
        }
    }

    /// Nodes added so far.
    pub fn node_count(&self) -> usize {
        self.tree.node_count_distinct + self.frames.len()
    }

    /// Adds the node at `path` (`"/"` or `""` for the root, which must come first).
    ///
    /// # Errors
    /// The input breaks the contract in the module header; the builder should be dropped.
    pub fn add(
        &mut self,
        path: &str,
        stat: StoredStat,
        data: Option<Arc<[u8]>>,
        acl: &[Acl],
    ) -> Result<(), RestoreError> {
        let acl = self.intern_acl_with(acl, || Arc::from(acl));
        let node = node_from(stat, data, acl);
        if self.frames.is_empty() {
            return self.add_root(node, path);
        }
        if validate_path(path).is_err() {
            return Err(RestoreError::BadPath(path.to_string()));
        }
        let Some((parent_path, name)) = split_parent(path) else {
            return Err(RestoreError::BadPath(path.to_string()));
        };
        let parent_key = if parent_path == "/" { "" } else { parent_path };
        while self.path != parent_key {
            if self.frames.len() <= 1 {
                return Err(RestoreError::Orphan(path.to_string()));
            }
            self.close_top()?;
        }
        self.open_child(node, name)
    }

    /// Adds the node named `name` at `depth` (the root: depth 0, name ignored; its children:
    /// 1), the pre-order of the nodes before it giving its parent: what a snapshot stores.
    /// Same as `add` with the path, without building and splitting that path per node.
    /// `acl` is interned as it is (not copied) when the builder has no equal list yet, so
    /// builders that share a table of lists share their copies (`graft` needs that).
    ///
    /// # Errors
    /// As `add`.
    pub fn add_at_depth(
        &mut self,
        depth: usize,
        name: &str,
        stat: StoredStat,
        data: Option<Arc<[u8]>>,
        acl: &Arc<[Acl]>,
    ) -> Result<(), RestoreError> {
        let acl = self.intern_acl_with(acl, || acl.clone());
        let node = node_from(stat, data, acl);
        if depth == 0 || self.frames.is_empty() {
            let path = if depth == 0 {
                "/".to_string()
            } else {
                self.child_path(name)
            };
            return self.add_root(node, &path);
        }
        if !valid_name(name) {
            return Err(RestoreError::BadPath(self.child_path(name)));
        }
        // depth >= 1 here: the root is never closed this way.
        while self.frames.len() > depth {
            self.close_top()?;
        }
        if self.frames.len() != depth {
            return Err(RestoreError::Orphan(self.child_path(name)));
        }
        self.open_child(node, name)
    }

    fn add_root(&mut self, node: Node, path: &str) -> Result<(), RestoreError> {
        if !self.frames.is_empty() || self.tree.node_count_distinct > 0 {
            return Err(RestoreError::Duplicate(path.to_string()));
        }
        if !path.is_empty() && path != "/" {
            return Err(RestoreError::RootNotFirst(path.to_string()));
        }
        self.frames.push(Frame::new(node, Name::new(""), 0));
        Ok(())
    }

    /// The path of a child of the top frame named `name`, for errors.
    fn child_path(&self, name: &str) -> String {
        format!("{}/{name}", self.path)
    }

    /// Opens `node`, named `name`, under the top frame (whose path `self.path` is).
    fn open_child(&mut self, node: Node, name: &str) -> Result<(), RestoreError> {
        let Some(parent) = self.frames.last() else {
            return Err(RestoreError::Orphan(self.child_path(name)));
        };
        if parent.node.kind == NodeKind::Ephemeral {
            return Err(RestoreError::ChildOfEphemeral(self.child_path(name)));
        }
        let name = Name::new(name);
        if let Some(parent) = self.frames.last_mut() {
            if parent
                .children
                .last()
                .is_some_and(|(previous, _)| *previous >= name)
            {
                parent.children_sorted = false;
            }
        }
        let parent_path_bytes = self.path.len();
        self.path.push('/');
        self.path.push_str(name.as_str());
        self.frames.push(Frame::new(node, name, parent_path_bytes));
        Ok(())
    }

    /// The tree, with `last_zxid` as its last applied zxid. Missing system nodes
    /// (`/zookeeper`, `/zookeeper/quota`, `/zookeeper/config`) are added as a fresh tree has
    /// them.
    ///
    /// # Errors
    /// No root was added, or a child table holds a name twice.
    pub fn finish(mut self, last_zxid: i64) -> Result<DataTree, RestoreError> {
        while self.frames.len() > 1 {
            self.close_top()?;
        }
        let Some(root) = self.frames.pop() else {
            return Err(RestoreError::Empty);
        };
        let (root, _) = root.close("/")?;
        self.tree
            .index_created("/", root.kind, root.ephemeral_owner, &root.data);
        self.tree.root = Arc::new(root);
        self.count_last_acl();
        let mut tree = self.tree;
        tree.acls = self.acls.into_iter().collect();
        tree.last_zxid = last_zxid;
        ensure_system_node(&mut tree, "/zookeeper", &open_acl_unsafe(), 0);
        ensure_system_node(&mut tree, "/zookeeper/quota", &open_acl_unsafe(), 0);
        ensure_system_node(&mut tree, "/zookeeper/config", &read_acl_unsafe(), -1);
        // ZooKeeper's setupQuota on every snapshot load: each quota's stats node is set to
        // its subtree's real usage. A fuzzy ZooKeeper snapshot may hold stats from a moment
        // other than its tree's; the log replayed after it then counts from the right base.
        for prefix in &self.quota_prefixes {
            tree.refresh_quota_stats(prefix, &stat_path(prefix));
        }
        Ok(tree)
    }

    /// A builder of some of the children (with their subtrees) of the node at `parent_path`
    /// (`""` for the root), which is at `parent_depth` and of `parent_kind`: one share of a
    /// load split between threads. It takes nodes deeper than the parent through
    /// `add_at_depth`, as the main builder would, and `into_subtrees` hands them over for
    /// `graft`. ACL lists must come from the table the main builder uses.
    pub fn for_children_of(
        parent_path: &str,
        parent_depth: usize,
        parent_kind: NodeKind,
    ) -> TreeBuilder {
        let mut builder = TreeBuilder::new();
        // Frames for the parent and its ancestors: nodes deeper than the parent never close
        // them, and only the parent's (the top) is looked at.
        let placeholder = || {
            let mut node = system_node(Arc::from(Vec::new()));
            node.kind = parent_kind;
            Frame::new(node, Name::new(""), 0)
        };
        builder.frames = (0..=parent_depth).map(|_| placeholder()).collect();
        builder.path = parent_path.to_string();
        builder
    }

    /// The children added under the parent of `for_children_of`, each subtree finished.
    ///
    /// # Errors
    /// A child table holds a name twice.
    pub fn into_subtrees(mut self, parent_depth: usize) -> Result<Subtrees, RestoreError> {
        while self.frames.len() > parent_depth + 1 {
            self.close_top()?;
        }
        self.count_last_acl();
        let parent = self.frames.pop().ok_or(RestoreError::Empty)?;
        Ok(Subtrees {
            children: parent.children,
            children_sorted: parent.children_sorted,
            index: self.tree,
            acls: self.acls,
            quota_prefixes: self.quota_prefixes,
        })
    }

    /// Adds `subtrees`, built by `for_children_of` for the node at `parent_depth` on the
    /// path of nodes open here, as that node's next children.
    ///
    /// # Errors
    /// No node at `parent_depth` is open.
    pub fn graft(&mut self, parent_depth: usize, subtrees: Subtrees) -> Result<(), RestoreError> {
        while self.frames.len() > parent_depth + 1 {
            self.close_top()?;
        }
        if self.frames.len() != parent_depth + 1 {
            return Err(RestoreError::Orphan(self.path.clone()));
        }
        let Some(parent) = self.frames.last_mut() else {
            return Err(RestoreError::Empty);
        };
        let Subtrees {
            children,
            children_sorted,
            index,
            acls,
            quota_prefixes,
        } = subtrees;
        let in_order = match (parent.children.last(), children.first()) {
            (Some((last, _)), Some((first, _))) => last < first,
            _ => true,
        };
        parent.children_sorted &= children_sorted && in_order;
        parent.children.extend(children);
        let tree = &mut self.tree;
        tree.node_count_distinct += index.node_count_distinct;
        tree.data_size_approximate = tree
            .data_size_approximate
            .saturating_add(index.data_size_approximate);
        tree.ephemerals = std::mem::take(&mut tree.ephemerals).union(index.ephemerals);
        for (owner, count) in index.ephemeral_counts {
            *tree.ephemeral_counts.entry(owner).or_insert(0) += count;
        }
        tree.reapables = std::mem::take(&mut tree.reapables).union(index.reapables);
        for prefix in quota_prefixes {
            tree.quotas.add(&prefix);
            self.quota_prefixes.push(prefix);
        }
        for (acl, uses) in acls {
            *self.acls.entry(acl).or_insert(0) += uses;
        }
        Ok(())
    }

    /// Closes the deepest open node and hands it to its parent.
    fn close_top(&mut self) -> Result<(), RestoreError> {
        debug_assert!(self.frames.len() > 1, "the root is closed by finish");
        let Some(frame) = self.frames.pop() else {
            return Ok(());
        };
        let parent_path_bytes = frame.parent_path_bytes;
        let (node, frame_name) = frame.close(&self.path)?;
        let path = self.path.as_str();
        self.tree
            .index_created(path, node.kind, node.ephemeral_owner, &node.data);
        let name = frame_name;
        if name.as_str() == LIMIT_NODE {
            let parent_path = path.get(..parent_path_bytes).unwrap_or_default();
            if let Some(prefix) = trim_quota_path(parent_path) {
                self.tree.quotas.add(prefix);
                self.quota_prefixes.push(prefix.to_owned());
            }
        }
        self.path.truncate(parent_path_bytes);
        if let Some(parent) = self.frames.last_mut() {
            parent.children.push((name, Arc::new(node)));
        }
        Ok(())
    }

    /// The shared copy of an ACL list equal to `acl`, counted once more; `copy` makes it
    /// when the builder has none yet.
    fn intern_acl_with(&mut self, acl: &[Acl], copy: impl FnOnce() -> Arc<[Acl]>) -> Arc<[Acl]> {
        // Most nodes share their predecessor's list: count it without a map lookup.
        if let Some((last, uses)) = &mut self.last_acl {
            if **last == *acl {
                *uses += 1;
                return last.clone();
            }
        }
        self.count_last_acl();
        let interned = match self.acls.get_key_value(acl) {
            Some((interned, count)) => {
                let (interned, count) = (interned.clone(), count + 1);
                self.acls.insert(interned.clone(), count);
                interned
            }
            None => {
                let interned = copy();
                self.acls.insert(interned.clone(), 1);
                interned
            }
        };
        self.last_acl = Some((interned.clone(), 0));
        interned
    }

    /// Adds the uses of `last_acl` not yet in the map.
    fn count_last_acl(&mut self) {
        if let Some((last, uses)) = self.last_acl.take() {
            if let Some(count) = self.acls.get_mut(&last) {
                *count += uses;
            }
        }
    }
}

impl Frame {
    fn new(node: Node, name: Name, parent_path_bytes: usize) -> Frame {
        Frame {
            node,
            name,
            children: Vec::new(),
            children_sorted: true,
            parent_path_bytes,
        }
    }

    /// The finished node, its child table built, and its name. `path` is its path, for
    /// errors.
    fn close(self, path: &str) -> Result<(Node, Name), RestoreError> {
        let Frame {
            mut node,
            name,
            mut children,
            children_sorted,
            ..
        } = self;
        if !children_sorted {
            children.sort_unstable_by(|(a, _), (b, _)| a.cmp(b));
        }
        if let Some(pair) = children.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            let base = if path == "/" { "" } else { path };
            return Err(RestoreError::Duplicate(format!("{base}/{:?}", pair[0].0)));
        }
        if !children.is_empty() {
            node.children = Some(Arc::new(ChildMap::from_sorted(children)));
        }
        Ok((node, name))
    }
}

fn node_from(stat: StoredStat, data: Option<Arc<[u8]>>, acl: Arc<[Acl]>) -> Node {
    Node {
        czxid: stat.czxid,
        mzxid: stat.mzxid,
        pzxid: stat.pzxid,
        ctime_ms: stat.ctime_ms,
        mtime_ms: stat.mtime_ms,
        ephemeral_owner: stat.ephemeral_owner,
        version: stat.version,
        cversion: stat.cversion,
        aversion: stat.aversion,
        kind: stat.kind,
        data,
        acl,
        children: None,
    }
}

/// Adds a system node that a foreign snapshot left out, as `DataTree::new` makes it.
fn ensure_system_node(tree: &mut DataTree, path: &str, acl: &[Acl], aversion: i32) {
    if tree.node(path).is_some() {
        return;
    }
    let Some((parent_path, name)) = split_parent(path) else {
        return;
    };
    if tree.node(parent_path).is_none() {
        return;
    }
    let mut node = system_node(tree.intern_acl(acl));
    node.aversion = aversion;
    let (kind, owner, data) = (node.kind, node.ephemeral_owner, node.data.clone());
    if let Some(parent) = tree.node_mut(parent_path) {
        parent
            .children_mut()
            .insert(Name::new(name), Arc::new(node));
        tree.index_created(path, kind, owner, &data);
    }
}
