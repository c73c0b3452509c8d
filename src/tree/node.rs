//! The stored form of a znode and of a child table.
//!
//! Memory is the point of this file: a million znodes must fit well under 350 MB, and every
//! byte here is paid per znode. `Node` is kept at 104 bytes so that `Arc<Node>` (16 bytes of
//! counts + 104) lands in a 128-byte allocator class; a child name of up to 22 bytes is stored
//! inline in its 24-byte key, so the common case costs no allocation for names at all; child
//! tables are B+trees of exact-capacity blocks, about 34 bytes per child.

use crate::proto::Acl;
use std::cmp::Ordering;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// The longest child name kept inline in a `Name` (longer names go to the heap).
pub(crate) const NAME_INLINE_BYTES_MAX: usize = 22;

const _: () = assert!(NAME_INLINE_BYTES_MAX < u8::MAX as usize);
// `words` splits an inline name into 16 + up to 8 bytes.
const _: () = assert!(NAME_INLINE_BYTES_MAX >= 16 && NAME_INLINE_BYTES_MAX <= 24);
const _: () = assert!(std::mem::size_of::<Name>() == 24);
const _: () = assert!(std::mem::size_of::<Node>() <= 104);

/// One path segment: the key of a child table. Ordered as its bytes, which is the order of
/// `str` (UTF-8 preserves code point order).
#[derive(Clone)]
pub(crate) enum Name {
    /// Zero-padded bytes: padding never changes the order (see `cmp_key`).
    Inline {
        len: u8,
        bytes: [u8; NAME_INLINE_BYTES_MAX],
    },
    Heap(Arc<str>),
}

/// A name to search for, borrowed from a path, padded like an inline `Name` when it fits so
/// that comparing the two is a fixed-size compare rather than a `memcmp` call.
pub(crate) struct Key<'a> {
    padded: Option<[u8; NAME_INLINE_BYTES_MAX]>,
    bytes: &'a [u8],
}

impl<'a> Key<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Key<'a> {
        let mut padded = [0u8; NAME_INLINE_BYTES_MAX];
        let fits = match padded.get_mut(..bytes.len()) {
            Some(prefix) => {
                prefix.copy_from_slice(bytes);
                true
            }
            None => false,
        };
        Key {
            padded: fits.then_some(padded),
            bytes,
        }
    }
}

impl Name {
    pub(crate) fn new(name: &str) -> Name {
        let source = name.as_bytes();
        let mut bytes = [0u8; NAME_INLINE_BYTES_MAX];
        match (bytes.get_mut(..source.len()), u8::try_from(source.len())) {
            (Some(target), Ok(len)) => {
                target.copy_from_slice(source);
                Name::Inline { len, bytes }
            }
            _ => Name::Heap(Arc::from(name)),
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            Name::Inline { len, bytes } => bytes.get(..usize::from(*len)).unwrap_or(&[]),
            Name::Heap(name) => name.as_bytes(),
        }
    }

    /// The name as text. A `Name` is only ever built from a whole `&str`, so the bytes are
    /// always valid UTF-8; the empty fallback exists only to keep this path panic-free.
    pub(crate) fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    pub(crate) fn key(&self) -> Key<'_> {
        match self {
            Name::Inline { bytes, .. } => Key {
                padded: Some(*bytes),
                bytes: self.as_bytes(),
            },
            Name::Heap(name) => Key::new(name.as_bytes()),
        }
    }

    /// Byte order. Two zero-padded inline names compare as their padded arrays, then by
    /// length: where the arrays first differ, the shorter name has padding (0) against a byte
    /// of the longer, exactly as if it had ended; equal arrays differ at most in trailing
    /// NULs, which the length settles.
    pub(crate) fn cmp_key(&self, key: &Key<'_>) -> Ordering {
        match (self, &key.padded) {
            (Name::Inline { len, bytes }, Some(padded)) => words(bytes)
                .cmp(&words(padded))
                .then(usize::from(*len).cmp(&key.bytes.len())),
            _ => self.as_bytes().cmp(key.bytes),
        }
    }
}

/// The padded bytes as big-endian integers: comparing these compares the bytes, in a few
/// instructions instead of a `memcmp` call (a lookup makes about 20 such comparisons).
fn words(bytes: &[u8; NAME_INLINE_BYTES_MAX]) -> (u128, u64) {
    let mut high = [0u8; 16];
    let mut low = [0u8; 8];
    let (first, rest) = bytes.split_at(16);
    high.copy_from_slice(first);
    if let Some(target) = low.get_mut(..rest.len()) {
        target.copy_from_slice(rest);
    }
    (u128::from_be_bytes(high), u64::from_be_bytes(low))
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Name {}

impl PartialOrd for Name {
    fn partial_cmp(&self, other: &Name) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Name {
    fn cmp(&self, other: &Name) -> Ordering {
        self.cmp_key(&other.key())
    }
}

impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// What kind of znode this is. Kept explicitly rather than decoded from `ephemeral_owner`,
/// because a session id of a server with id 255 has the same top byte as a TTL marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum NodeKind {
    Persistent,
    Ephemeral,
    Container,
    Ttl,
}

/// A znode as stored: ZooKeeper's `StatPersisted` plus data, ACL and children.
/// `cversion` is the *stored* count of child creates; clients see `cversion * 2 - numChildren`.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub(crate) czxid: i64,
    pub(crate) mzxid: i64,
    pub(crate) pzxid: i64,
    pub(crate) ctime_ms: i64,
    pub(crate) mtime_ms: i64,
    /// Session id for ephemerals, `i64::MIN` for containers, `0xFF << 56 | ttl` for TTL nodes.
    pub(crate) ephemeral_owner: i64,
    pub(crate) version: i32,
    pub(crate) cversion: i32,
    pub(crate) aversion: i32,
    pub(crate) kind: NodeKind,
    pub(crate) data: Option<Arc<[u8]>>,
    pub(crate) acl: Arc<[Acl]>,
    /// `None` when the node has no children (most nodes), so leaves pay 8 bytes here.
    pub(crate) children: Option<Arc<ChildMap>>,
}

impl Node {
    pub(crate) fn child_count(&self) -> usize {
        self.children.as_ref().map_or(0, |children| children.len())
    }

    pub(crate) fn child(&self, name: &[u8]) -> Option<&Arc<Node>> {
        self.children.as_ref()?.get(name)
    }

    /// The child table for writing; copies it first if a read view still shares it.
    pub(crate) fn children_mut(&mut self) -> &mut ChildMap {
        Arc::make_mut(
            self.children
                .get_or_insert_with(|| Arc::new(ChildMap::default())),
        )
    }

    /// Drops an emptied child table so a leaf goes back to costing nothing for children.
    pub(crate) fn release_empty_children(&mut self) {
        if self.child_count() == 0 {
            self.children = None;
        }
    }
}

/// Most entries a leaf block holds; one more splits it. Small, because the first write to a
/// leaf after a commit batch's view copies it, and the copy costs one atomic increment per
/// entry, each on another node's cache line (mostly a miss): under the ensemble's setData
/// load (10k keys) those copies were ~12% of the three servers' CPU samples with 64-entry
/// leaves, ~7% with 16.
pub(crate) const LEAF_ENTRIES_MAX: usize = 16;

/// Most entries an inner block holds. Inner blocks are few and copied at most once per
/// batch each, so they stay wide and the tree shallow.
pub(crate) const INNER_ENTRIES_MAX: usize = 64;

const _: () = assert!(LEAF_ENTRIES_MAX >= 8 && INNER_ENTRIES_MAX >= 8);

/// A persistent child table: a small B+tree of `Arc`-shared blocks, so a write copies only
/// the blocks on one root-to-leaf path. Blocks are exact-capacity vectors (not fixed 64-slot
/// arrays as in `imbl`), and a block overflowing at its right end (sequential names) splits
/// off just the new entry, so ascending inserts leave full blocks behind.
#[derive(Clone, Debug)]
pub(crate) struct ChildMap {
    root: Block,
    len: usize,
}

/// One B+tree block. In an inner block, entry `i > 0` is keyed by a lower bound of its
/// subtree that is above every key of subtree `i - 1`; entry 0's key is not used.
#[derive(Clone, Debug)]
pub(crate) enum Block {
    Leaf(Vec<(Name, Arc<Node>)>),
    Inner(Vec<(Name, Arc<Block>)>),
}

/// What an insert did to a block.
enum Grown {
    Exists,
    Done,
    Split(Name, Block),
}

impl Block {
    fn len(&self) -> usize {
        match self {
            Block::Leaf(entries) => entries.len(),
            Block::Inner(children) => children.len(),
        }
    }

    /// Most entries this kind of block holds.
    fn max_len(&self) -> usize {
        match self {
            Block::Leaf(_) => LEAF_ENTRIES_MAX,
            Block::Inner(_) => INNER_ENTRIES_MAX,
        }
    }

    /// Appends `other`, the right neighbour at the same depth whose lower bound is `bound`.
    /// Gives `other` back if the two are not blocks of the same kind.
    fn absorb(&mut self, other: Block, bound: Name) -> Result<(), Block> {
        match (self, other) {
            (Block::Leaf(entries), Block::Leaf(more)) => entries.extend(more),
            (Block::Inner(children), Block::Inner(mut more)) => {
                // The right block's first key was unused there; here it must be a real bound.
                if let Some(first) = more.first_mut() {
                    first.0 = bound;
                }
                children.extend(more);
            }
            (_, other) => return Err(other),
        }
        Ok(())
    }
}

impl Default for ChildMap {
    fn default() -> ChildMap {
        ChildMap {
            root: Block::Leaf(Vec::new()),
            len: 0,
        }
    }
}

impl ChildMap {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn get(&self, name: &[u8]) -> Option<&Arc<Node>> {
        let key = Key::new(name);
        let mut block = &self.root;
        loop {
            match block {
                Block::Inner(children) => block = &children.get(child_index(children, &key))?.1,
                Block::Leaf(entries) => {
                    let index = search_leaf(entries, &key).ok()?;
                    return entries.get(index).map(|(_, node)| node);
                }
            }
        }
    }

    /// The child for writing; copies the blocks on its path that a view still shares.
    pub(crate) fn get_mut(&mut self, name: &[u8]) -> Option<&mut Arc<Node>> {
        block_get_mut(&mut self.root, &Key::new(name))
    }

    /// Inserts a child; returns false (and changes nothing) if the name is taken.
    pub(crate) fn insert(&mut self, name: Name, node: Arc<Node>) -> bool {
        match block_insert(&mut self.root, name, node) {
            Grown::Exists => return false,
            Grown::Done => {}
            Grown::Split(bound, right) => {
                let left = std::mem::replace(&mut self.root, Block::Leaf(Vec::new()));
                let children = vec![(bound.clone(), Arc::new(left)), (bound, Arc::new(right))];
                self.root = Block::Inner(children);
            }
        }
        self.len += 1;
        true
    }

    /// Removes a child. Callers check that it exists first: a miss may still have copied the
    /// blocks on its path.
    pub(crate) fn remove(&mut self, name: &[u8]) -> Option<Arc<Node>> {
        let removed = block_remove(&mut self.root, &Key::new(name))?;
        self.len = self.len.saturating_sub(1);
        // A root left with one child hands over to it, keeping the tree as shallow as it can be.
        while let Block::Inner(children) = &mut self.root {
            if children.len() > 1 {
                break;
            }
            self.root = match children.pop() {
                Some((_, only)) => Arc::unwrap_or_clone(only),
                None => Block::Leaf(Vec::new()),
            };
        }
        Some(removed)
    }

    /// A table holding `entries`, which must be in strictly ascending name order (the
    /// caller checks): built bottom-up in one pass, full blocks left to right, with no
    /// searching — what a snapshot load needs for a million children.
    pub(crate) fn from_sorted(entries: Vec<(Name, Arc<Node>)>) -> ChildMap {
        debug_assert!(entries.windows(2).all(|pair| pair[0].0 < pair[1].0));
        let len = entries.len();
        let mut level: Vec<(Name, Block)> = Vec::with_capacity(len / LEAF_ENTRIES_MAX + 1);
        let mut entries = entries.into_iter().peekable();
        while entries.peek().is_some() {
            let leaf: Vec<(Name, Arc<Node>)> = entries.by_ref().take(LEAF_ENTRIES_MAX).collect();
            let Some(bound) = leaf.first().map(|(name, _)| name.clone()) else {
                break;
            };
            level.push((bound, Block::Leaf(leaf)));
        }
        while level.len() > 1 {
            let mut upper = Vec::with_capacity(level.len() / INNER_ENTRIES_MAX + 1);
            let mut blocks = level.into_iter().peekable();
            while blocks.peek().is_some() {
                let inner: Vec<(Name, Arc<Block>)> = blocks
                    .by_ref()
                    .take(INNER_ENTRIES_MAX)
                    .map(|(bound, block)| (bound, Arc::new(block)))
                    .collect();
                let Some(bound) = inner.first().map(|(name, _)| name.clone()) else {
                    break;
                };
                upper.push((bound, Block::Inner(inner)));
            }
            level = upper;
        }
        let root = level
            .pop()
            .map_or(Block::Leaf(Vec::new()), |(_, block)| block);
        ChildMap { root, len }
    }

    pub(crate) fn iter(&self) -> ChildIter<'_> {
        let mut iter = ChildIter {
            inners: Vec::new(),
            leaf: [].iter(),
            remaining: self.len,
        };
        iter.descend(&self.root);
        iter
    }

    /// The B+tree's shape: sorted keys within bounds, block sizes, uniform depth, length.
    pub(crate) fn check(&self) -> Result<(), String> {
        let mut leaf_depth = None;
        let count = check_block(&self.root, None, 0, &mut leaf_depth, true)?;
        if count != self.len {
            return Err(format!("child table holds {count}, says {}", self.len));
        }
        Ok(())
    }
}

fn block_get_mut<'a>(block: &'a mut Block, key: &Key<'_>) -> Option<&'a mut Arc<Node>> {
    match block {
        Block::Inner(children) => {
            let index = child_index(children, key);
            block_get_mut(Arc::make_mut(&mut children.get_mut(index)?.1), key)
        }
        Block::Leaf(entries) => {
            let index = search_leaf(entries, key).ok()?;
            entries.get_mut(index).map(|(_, node)| node)
        }
    }
}

fn block_insert(block: &mut Block, name: Name, node: Arc<Node>) -> Grown {
    match block {
        Block::Leaf(entries) => {
            let Err(index) = search_leaf(entries, &name.key()) else {
                return Grown::Exists;
            };
            grow_for_one(entries);
            entries.insert(index, (name, node));
            match split_if_over(entries, index, LEAF_ENTRIES_MAX) {
                Some((bound, right)) => Grown::Split(bound, Block::Leaf(right)),
                None => Grown::Done,
            }
        }
        Block::Inner(children) => {
            let index = child_index(children, &name.key());
            let Some((_, child)) = children.get_mut(index) else {
                return Grown::Exists;
            };
            let (bound, right) = match block_insert(Arc::make_mut(child), name, node) {
                Grown::Split(bound, right) => (bound, right),
                // Exists or Done: nothing changes at this level.
                unchanged => return unchanged,
            };
            grow_for_one(children);
            children.insert(index + 1, (bound, Arc::new(right)));
            match split_if_over(children, index + 1, INNER_ENTRIES_MAX) {
                Some((bound, right)) => Grown::Split(bound, Block::Inner(right)),
                None => Grown::Done,
            }
        }
    }
}

fn block_remove(block: &mut Block, key: &Key<'_>) -> Option<Arc<Node>> {
    match block {
        Block::Leaf(entries) => {
            let index = search_leaf(entries, key).ok()?;
            let (_, node) = entries.remove(index);
            shrink_if_loose(entries);
            Some(node)
        }
        Block::Inner(children) => {
            let index = child_index(children, key);
            let (_, child) = children.get_mut(index)?;
            let removed = block_remove(Arc::make_mut(child), key)?;
            rebalance(children, index);
            Some(removed)
        }
    }
}

/// After a removal from child `index`: drop it if empty, or merge it with a neighbour when
/// it has shrunk below a quarter of its kind's maximum and the two fit in three quarters.
fn rebalance(children: &mut Vec<(Name, Arc<Block>)>, index: usize) {
    let Some((child_len, max_len)) = children
        .get(index)
        .map(|(_, child)| (child.len(), child.max_len()))
    else {
        return;
    };
    if child_len == 0 {
        children.remove(index);
        return;
    }
    if child_len >= max_len / 4 {
        return;
    }
    let left = index.saturating_sub(1);
    let right = left + 1;
    let combined_len = match (children.get(left), children.get(right)) {
        (Some((_, a)), Some((_, b))) => a.len() + b.len(),
        _ => return,
    };
    if combined_len > max_len * 3 / 4 {
        return;
    }
    let (bound, right_block) = children.remove(right);
    let Some((_, left_block)) = children.get_mut(left) else {
        return;
    };
    if let Err(right_block) =
        Arc::make_mut(left_block).absorb(Arc::unwrap_or_clone(right_block), bound.clone())
    {
        // Blocks of one level are always the same kind; put it back rather than lose it.
        children.insert(right, (bound, Arc::new(right_block)));
    }
}

/// Grows a full vector by a quarter (at least 2) instead of doubling: blocks stay dense.
fn grow_for_one<T>(entries: &mut Vec<T>) {
    if entries.len() == entries.capacity() {
        entries.reserve_exact((entries.len() / 4).max(2));
    }
}

fn shrink_if_loose<T>(entries: &mut Vec<T>) {
    if entries.capacity() > 2 * entries.len() + 4 {
        entries.shrink_to(entries.len() + entries.len() / 4);
    }
}

/// Splits an overflowing block. Ascending inserts (the new entry is last, as with sequential
/// znodes) split off only that entry and descending ones only the first, leaving a full block;
/// other inserts split in the middle.
fn split_if_over<T>(
    entries: &mut Vec<(Name, T)>,
    inserted: usize,
    max_len: usize,
) -> Option<(Name, Vec<(Name, T)>)> {
    if entries.len() <= max_len {
        return None;
    }
    let at = if inserted + 1 == entries.len() {
        entries.len() - 1
    } else if inserted == 0 {
        1
    } else {
        entries.len() / 2
    };
    let right = entries.split_off(at);
    entries.shrink_to_fit();
    let bound = right.first()?.0.clone();
    Some((bound, right))
}

/// Which child of an inner block may hold `key`: the number of bounds (entries 1..) at or
/// below it.
fn child_index(children: &[(Name, Arc<Block>)], key: &Key<'_>) -> usize {
    children.get(1..).map_or(0, |bounded| {
        bounded.partition_point(|(bound, _)| bound.cmp_key(key) != Ordering::Greater)
    })
}

fn search_leaf(entries: &[(Name, Arc<Node>)], key: &Key<'_>) -> Result<usize, usize> {
    entries.binary_search_by(|(name, _)| name.cmp_key(key))
}

fn check_block(
    block: &Block,
    lower: Option<&Name>,
    depth: usize,
    leaf_depth: &mut Option<usize>,
    is_root: bool,
) -> Result<usize, String> {
    if block.len() > block.max_len() || (!is_root && block.len() == 0) {
        return Err(format!("block of {} entries at depth {depth}", block.len()));
    }
    match block {
        Block::Leaf(entries) => {
            if leaf_depth.get_or_insert(depth) != &depth {
                return Err(format!("leaf at depth {depth}, others at {leaf_depth:?}"));
            }
            let first_below = entries
                .first()
                .zip(lower)
                .is_some_and(|((first, _), lower)| first < lower);
            let unsorted = entries.windows(2).any(|pair| pair[0].0 >= pair[1].0);
            if first_below || unsorted {
                return Err(format!("leaf keys out of order at depth {depth}"));
            }
            Ok(entries.len())
        }
        Block::Inner(children) => {
            let mut count = 0;
            for (index, (bound, child)) in children.iter().enumerate() {
                let bound = if index == 0 { lower } else { Some(bound) };
                count += check_block(child, bound, depth + 1, leaf_depth, false)?;
            }
            if children
                .windows(2)
                .skip(1)
                .any(|pair| pair[0].0 >= pair[1].0)
            {
                return Err(format!("inner bounds out of order at depth {depth}"));
            }
            Ok(count)
        }
    }
}

/// Iterates a child table in name order.
pub(crate) struct ChildIter<'a> {
    inners: Vec<std::slice::Iter<'a, (Name, Arc<Block>)>>,
    leaf: std::slice::Iter<'a, (Name, Arc<Node>)>,
    remaining: usize,
}

impl<'a> ChildIter<'a> {
    fn descend(&mut self, mut block: &'a Block) {
        loop {
            match block {
                Block::Leaf(entries) => {
                    self.leaf = entries.iter();
                    return;
                }
                Block::Inner(children) => {
                    let mut children = children.iter();
                    let Some((_, first)) = children.next() else {
                        return;
                    };
                    self.inners.push(children);
                    block = first;
                }
            }
        }
    }
}

impl<'a> Iterator for ChildIter<'a> {
    type Item = (&'a Name, &'a Arc<Node>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some((name, node)) = self.leaf.next() {
                self.remaining = self.remaining.saturating_sub(1);
                return Some((name, node));
            }
            // The leaf is done: move to the next subtree of the deepest unfinished inner block.
            let next = loop {
                let top = self.inners.last_mut()?;
                match top.next() {
                    Some((_, block)) => break block,
                    None => {
                        self.inners.pop();
                    }
                }
            };
            self.descend(next);
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.remaining, Some(self.remaining))
    }
}

impl ExactSizeIterator for ChildIter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf() -> Arc<Node> {
        Arc::new(Node {
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
            data: None,
            acl: Arc::from(Vec::new()),
            children: None,
        })
    }

    #[test]
    fn names_inline_up_to_22_bytes_and_order_as_str() {
        // Short names live inline, long ones on the heap, and both compare like their text.
        let short = Name::new("child-node-0000000001");
        let long = Name::new("a-rather-long-child-name-that-spills");
        assert!(matches!(short, Name::Inline { .. }));
        assert!(matches!(long, Name::Heap(_)));
        assert_eq!(short.as_str(), "child-node-0000000001");
        assert_eq!(long.as_str(), "a-rather-long-child-name-that-spills");
        assert_eq!(Name::new("é").as_str(), "é");
        assert!(Name::new("a") < Name::new("b"));
        assert!(Name::new("zz") > Name::new("a-rather-long-child-name-that-spills"));
    }

    #[test]
    fn child_map_grows_splits_merges_and_stays_sorted() {
        // Thousands of inserts in ascending, descending and scattered order build a valid
        // multi-level B+tree; removing all but a few merges it back down to one leaf.
        let mut map = ChildMap::default();
        let names: Vec<String> = (0..3_000)
            .map(|i| match i % 3 {
                0 => format!("n{i:05}"),
                1 => format!("n{:05}", 9_000 - i),
                _ => format!("x{:05}-a-rather-long-child-name", (i * 7_919) % 3_000),
            })
            .collect();
        for name in &names {
            assert!(map.insert(Name::new(name), leaf()));
        }
        assert_eq!(map.check(), Ok(()));
        assert!(matches!(map.root, Block::Inner(_)));
        assert!(!map.insert(Name::new(&names[17]), leaf()));
        assert_eq!(map.len(), names.len());
        let listed: Vec<&str> = map.iter().map(|(name, _)| name.as_str()).collect();
        let mut sorted: Vec<&str> = names.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        assert_eq!(listed, sorted);
        assert_eq!(map.iter().len(), names.len());
        for name in &names[..2_997] {
            assert!(map.get(name.as_bytes()).is_some());
            assert!(map.get_mut(name.as_bytes()).is_some());
            assert!(map.remove(name.as_bytes()).is_some(), "{name}");
            assert!(map.get(name.as_bytes()).is_none());
        }
        assert_eq!(map.check(), Ok(()));
        assert_eq!(map.len(), 3);
        assert!(matches!(map.root, Block::Leaf(_)));
        assert!(map.remove(b"missing").is_none());
    }

    #[test]
    fn ascending_inserts_leave_full_blocks() {
        // Sequential names fill every leaf to the maximum, so memory per child stays near
        // the entry size.
        let mut map = ChildMap::default();
        for index in 0..(LEAF_ENTRIES_MAX * 10) {
            map.insert(Name::new(&format!("seq-{index:010}")), leaf());
        }
        let Block::Inner(children) = &map.root else {
            panic!("expected an inner root");
        };
        assert_eq!(children.len(), 10);
        assert!(children
            .iter()
            .all(|(_, block)| block.len() == LEAF_ENTRIES_MAX));
    }

    #[test]
    fn key_order_matches_byte_order() {
        // The padded fast compare orders names exactly as their bytes, NULs and lengths
        // included, inline or not.
        let samples = [
            "",
            "a",
            "a\0",
            "a\0\0",
            "a\0b",
            "ab",
            "b",
            "abcdefghijklmnopqrstuv",
            "abcdefghijklmnopqrstuvw",
            "é",
            "z\u{7f}",
        ];
        for left in samples {
            for right in samples {
                let expected = left.as_bytes().cmp(right.as_bytes());
                assert_eq!(
                    Name::new(left).cmp_key(&Key::new(right.as_bytes())),
                    expected
                );
                assert_eq!(
                    Name::new(left).cmp(&Name::new(right)),
                    expected,
                    "{left:?} {right:?}"
                );
            }
        }
    }

    mod random_ops {
        //! The B+tree against a `BTreeMap` model under random inserts, removes and copies.

        use super::*;
        use proptest::prelude::*;
        use std::collections::BTreeMap;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

            #[test]
            fn child_map_matches_a_model(
                ops in prop::collection::vec((any::<bool>(), 0..600u32, 0..4u8), 1..2_000)
            ) {
                // Whatever the order of inserts and removes, and with views of earlier
                // versions kept alive, the table lists what the model holds, in order.
                let mut map = ChildMap::default();
                let mut model: BTreeMap<String, ()> = BTreeMap::new();
                let mut views: Vec<(ChildMap, Vec<String>)> = Vec::new();
                for (index, (insert, number, style)) in ops.into_iter().enumerate() {
                    let name = match style {
                        0 => format!("n{number:04}"),
                        1 => format!("{number}"),
                        2 => format!("long-name-over-twenty-two-bytes-{number}"),
                        _ => format!("é{}", 600 - number),
                    };
                    if insert {
                        let fresh = model.insert(name.clone(), ()).is_none();
                        prop_assert_eq!(map.insert(Name::new(&name), leaf()), fresh);
                    } else {
                        let present = model.remove(&name).is_some();
                        prop_assert_eq!(map.remove(name.as_bytes()).is_some(), present);
                        prop_assert!(map.get(name.as_bytes()).is_none());
                    }
                    if index % 97 == 0 {
                        views.push((map.clone(), model.keys().cloned().collect()));
                    }
                }
                prop_assert_eq!(map.check(), Ok(()));
                let listed: Vec<String> = map.iter().map(|(n, _)| n.as_str().to_string()).collect();
                prop_assert_eq!(listed, model.keys().cloned().collect::<Vec<_>>());
                for (view, names) in views {
                    prop_assert_eq!(view.check(), Ok(()));
                    let listed: Vec<String> =
                        view.iter().map(|(n, _)| n.as_str().to_string()).collect();
                    prop_assert_eq!(listed, names);
                }
            }
        }
    }
}
