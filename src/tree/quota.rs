//! Quotas as ZooKeeper 3.8 keeps them (`Quotas`, `StatsTrack`, `PathTrie`, the quota parts of
//! `DataTree` and `ZooKeeperServer.checkQuota`).
//!
//! A quota on path P is the node `/zookeeper/quota/P/zookeeper_limits`; its usage lives in
//! `/zookeeper/quota/P/zookeeper_stats`. Both hold `StatsTrack` text: `count=N,bytes=M`, with any
//! further keys (the hard limits) sorted after an extra `=` as `=;byteHardLimit=X;countHardLimit=Y`.
//! Apply registers P when the limits node is created and forgets it when that node is deleted;
//! creating the stats node fills it with P's current usage; every create, delete and setData
//! under P (the longest registered prefix) then adjusts the stats node's data in place.

use super::data_tree::DataTree;
use crate::proto::ErrorCode;
use imbl::OrdMap;
use std::collections::BTreeMap;
use std::sync::Arc;

/// ZooKeeper's `Quotas.quotaZookeeper`.
pub(crate) const QUOTA_ROOT: &str = "/zookeeper/quota";
/// The child of a quota path holding the limits (`Quotas.limitNode`).
pub(crate) const LIMIT_NODE: &str = "zookeeper_limits";
/// The child of a quota path holding the usage (`Quotas.statNode`).
pub(crate) const STAT_NODE: &str = "zookeeper_stats";

const COUNT_KEY: &str = "count";
const BYTES_KEY: &str = "bytes";
const COUNT_HARD_LIMIT_KEY: &str = "countHardLimit";
const BYTE_HARD_LIMIT_KEY: &str = "byteHardLimit";

/// `Quotas.limitPath`: the limits node of the quota on `prefix`.
pub(crate) fn limit_path(prefix: &str) -> String {
    format!("{QUOTA_ROOT}{prefix}/{LIMIT_NODE}")
}

/// `Quotas.statPath`: the stats node of the quota on `prefix`.
pub(crate) fn stat_path(prefix: &str) -> String {
    format!("{QUOTA_ROOT}{prefix}/{STAT_NODE}")
}

/// `Quotas.trimQuotaPath` of a parent path: what follows `/zookeeper/quota` when the parent
/// starts with it (a plain string prefix, as in ZooKeeper, so `/zookeeper/quotaX` gives `X`).
pub(crate) fn trim_quota_path(parent_path: &str) -> Option<&str> {
    parent_path.strip_prefix(QUOTA_ROOT)
}

/// The quota path ZooKeeper 3.8's `deleteNode` unregisters when a limits node under `parent_path`
/// goes: it tests the parent against `/zookeeper` (not `/zookeeper/quota`) and then drops the
/// parent's first 16 UTF-16 units, so a stray `/zookeeper/abcdefgh/zookeeper_limits` unregisters
/// `fgh`. `None` where 3.8 throws on its apply path (a shorter parent) instead.
pub(crate) fn quota_path_unregistered_by_delete(parent_path: &str) -> Option<String> {
    if !parent_path.starts_with("/zookeeper") {
        return None;
    }
    let units: Vec<u16> = parent_path.encode_utf16().collect();
    let rest = units.get(QUOTA_ROOT.len()..)?;
    Some(String::from_utf16_lossy(rest))
}

/// ZooKeeper's `StatsTrack`: a map from key to long, parsed from and printed to quota text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct StatsTrack {
    values: BTreeMap<String, i64>,
}

impl StatsTrack {
    /// Parses quota text as `new StatsTrack(new String(data, UTF_8))` does. `None` where Java
    /// throws (a pair without `=`, a value that is not a long) — and for null data, which Java
    /// cannot even decode. Empty text is a valid, empty map.
    pub(crate) fn parse(data: Option<&[u8]>) -> Option<StatsTrack> {
        let text = String::from_utf8_lossy(data?);
        let mut values = BTreeMap::new();
        if text.is_empty() {
            return Some(StatsTrack { values });
        }
        for pair in java_split(&text, |c| c == ',' || c == ';', true) {
            let parts = java_split(pair, |c| c == '=', false);
            let (key, value) = (parts.first()?, parts.get(1)?);
            let value = if value.is_empty() {
                -1
            } else {
                value.parse::<i64>().ok()?
            };
            values.insert((*key).to_string(), value);
        }
        Some(StatsTrack { values })
    }

    /// A key's value, -1 when absent (`getValue`).
    fn value(&self, key: &str) -> i64 {
        self.values.get(key).copied().unwrap_or(-1)
    }

    pub(crate) fn count(&self) -> i64 {
        self.value(COUNT_KEY)
    }

    pub(crate) fn bytes(&self) -> i64 {
        self.value(BYTES_KEY)
    }

    pub(crate) fn count_hard_limit(&self) -> i64 {
        self.value(COUNT_HARD_LIMIT_KEY)
    }

    pub(crate) fn byte_hard_limit(&self) -> i64 {
        self.value(BYTE_HARD_LIMIT_KEY)
    }

    pub(crate) fn set_count(&mut self, count: i64) {
        self.values.insert(COUNT_KEY.to_string(), count);
    }

    pub(crate) fn set_bytes(&mut self, bytes: i64) {
        self.values.insert(BYTES_KEY.to_string(), bytes);
    }

    /// `getStatsBytes`: `count=N,bytes=M`, then, if any other key is set, `=` and `;key=value`
    /// for each in Java string order (UTF-16 code units).
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut text = format!("{COUNT_KEY}={},{BYTES_KEY}={}", self.count(), self.bytes());
        let mut extra: Vec<(&String, &i64)> = self
            .values
            .iter()
            .filter(|(key, _)| key.as_str() != COUNT_KEY && key.as_str() != BYTES_KEY)
            .collect();
        if !extra.is_empty() {
            text.push('=');
            extra.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            for (key, value) in extra {
                text.push_str(&format!(";{key}={value}"));
            }
        }
        text.into_bytes()
    }
}

/// Java's `String.split` by a one-character-class regex: a leading empty piece is kept when the
/// text starts with a separator, trailing empty pieces are dropped, and text without any
/// separator comes back whole. `runs` makes a run of separators one (a `+` quantifier).
fn java_split(text: &str, is_separator: impl Fn(char) -> bool, runs: bool) -> Vec<&str> {
    if !text.chars().any(&is_separator) {
        return vec![text];
    }
    let mut pieces: Vec<&str> = Vec::new();
    for (index, piece) in text.split(&is_separator).enumerate() {
        // Between two adjacent separators of one run lies an empty piece that `+` swallows.
        if runs && index > 0 && piece.is_empty() {
            continue;
        }
        pieces.push(piece);
    }
    while pieces.last().is_some_and(|piece| piece.is_empty()) {
        pieces.pop();
    }
    pieces
}

/// The components `PathTrie` sees in a path: split at `/`, dropping those that are empty
/// after Java's `trim()` (made only of characters up to U+0020).
fn trie_components(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter(|component| !component.chars().all(|c| c <= ' '))
}

/// How `PathTrie` spells `path` (`/` and its components joined by `/`); `None` when it has no
/// components, which the trie cannot mark.
pub(crate) fn trie_spelling(path: &str) -> Option<String> {
    let components: Vec<&str> = trie_components(path).collect();
    (!components.is_empty()).then(|| format!("/{}", components.join("/")))
}

/// The trie id of the root, which is never marked.
const TRIE_ROOT_ID: u64 = 0;

/// ZooKeeper's `PathTrie` of quota paths, persistent so that a tree view clones it in O(1).
///
/// Stored flat, one entry per component, so that a lookup costs one map search per component
/// of the path (not one per prefix, which would be quadratic in the path length) and nothing
/// recurses, however deep a quota path is.
#[derive(Debug, Clone, Default)]
pub(crate) struct QuotaTrie {
    /// Edge key (parent id, 8 bytes big-endian, then the component's bytes) → child id.
    edges: OrdMap<Arc<[u8]>, u64>,
    /// Every trie node but the root.
    nodes: OrdMap<u64, TrieNode>,
    last_id: u64,
}

#[derive(Debug, Clone)]
struct TrieNode {
    parent: u64,
    edge: Arc<[u8]>,
    children: usize,
    /// A quota is set on this path (`TrieNode.property`).
    marked: bool,
}

fn edge_key(buffer: &mut Vec<u8>, parent: u64, component: &str) {
    buffer.clear();
    buffer.extend_from_slice(&parent.to_be_bytes());
    buffer.extend_from_slice(component.as_bytes());
}

impl QuotaTrie {
    pub(crate) fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// `addPath`: marks `path`; a path without components marks nothing (ZooKeeper 3.8
    /// throws there, killing its apply thread).
    pub(crate) fn add(&mut self, path: &str) {
        let mut id = TRIE_ROOT_ID;
        let mut buffer = Vec::new();
        for component in trie_components(path) {
            edge_key(&mut buffer, id, component);
            id = match self.edges.get(&buffer[..]) {
                Some(child) => *child,
                None => self.add_child(id, Arc::from(&buffer[..])),
            };
        }
        if let Some(node) = self.nodes.get_mut(&id) {
            node.marked = true;
        }
    }

    fn add_child(&mut self, parent: u64, edge: Arc<[u8]>) -> u64 {
        self.last_id += 1;
        let id = self.last_id;
        if let Some(parent_node) = self.nodes.get_mut(&parent) {
            parent_node.children += 1;
        }
        self.edges.insert(edge.clone(), id);
        let node = TrieNode {
            parent,
            edge,
            children: 0,
            marked: false,
        };
        self.nodes.insert(id, node);
        id
    }

    /// `deletePath`: unmarks `path` (quotas below it stay) and drops trie nodes left unused.
    pub(crate) fn remove(&mut self, path: &str) {
        let Some(mut id) = self.find(path) else {
            return;
        };
        if let Some(node) = self.nodes.get_mut(&id) {
            node.marked = false;
        }
        while let Some(node) = self.nodes.get(&id) {
            if node.marked || node.children > 0 {
                break;
            }
            let (parent, edge) = (node.parent, node.edge.clone());
            self.edges.remove(&edge[..]);
            self.nodes.remove(&id);
            if let Some(parent_node) = self.nodes.get_mut(&parent) {
                parent_node.children = parent_node.children.saturating_sub(1);
            }
            id = parent;
        }
    }

    fn find(&self, path: &str) -> Option<u64> {
        let mut id = TRIE_ROOT_ID;
        let mut buffer = Vec::new();
        for component in trie_components(path) {
            edge_key(&mut buffer, id, component);
            id = *self.edges.get(&buffer[..])?;
        }
        Some(id)
    }

    /// `getMaxPrefixWithQuota`: the longest marked prefix of `path` by components, spelled as
    /// `PathTrie.findMaxPrefix` does (`/` and the components joined by `/`).
    pub(crate) fn max_prefix(&self, path: &str) -> Option<String> {
        let mut id = TRIE_ROOT_ID;
        let mut buffer = Vec::new();
        let mut seen: Vec<&str> = Vec::new();
        let mut deepest = 0;
        for component in trie_components(path) {
            edge_key(&mut buffer, id, component);
            let Some(child) = self.edges.get(&buffer[..]) else {
                break;
            };
            id = *child;
            seen.push(component);
            if self.nodes.get(&id).is_some_and(|node| node.marked) {
                deepest = seen.len();
            }
        }
        (deepest > 0).then(|| format!("/{}", seen[..deepest].join("/")))
    }

    /// Every marked path, spelled as `max_prefix` spells it, sorted (for self-checks).
    pub(crate) fn marked_paths(&self) -> Vec<String> {
        let mut paths: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, node)| node.marked)
            .map(|(id, _)| self.spell(*id))
            .collect();
        paths.sort();
        paths
    }

    fn spell(&self, mut id: u64) -> String {
        let mut components: Vec<String> = Vec::new();
        while let Some(node) = self.nodes.get(&id) {
            let name = node.edge.get(8..).unwrap_or_default();
            components.push(String::from_utf8_lossy(name).into_owned());
            id = node.parent;
        }
        components.reverse();
        format!("/{}", components.join("/"))
    }

    /// Structural self-check: edges and nodes agree, child counts match, no unused leaf.
    pub(crate) fn check(&self) -> Result<(), String> {
        if self.edges.len() != self.nodes.len() {
            return Err("quota trie: edge and node counts differ".to_string());
        }
        let mut children: BTreeMap<u64, usize> = BTreeMap::new();
        for (id, node) in self.nodes.iter() {
            if self.edges.get(&node.edge[..]) != Some(id) {
                return Err(format!("quota trie: node {id} not found by its edge"));
            }
            if node.parent != TRIE_ROOT_ID && !self.nodes.contains_key(&node.parent) {
                return Err(format!("quota trie: node {id} has a missing parent"));
            }
            *children.entry(node.parent).or_insert(0) += 1;
        }
        for (id, node) in self.nodes.iter() {
            if children.get(id).copied().unwrap_or(0) != node.children {
                return Err(format!("quota trie: node {id} child count is wrong"));
            }
            if !node.marked && node.children == 0 {
                return Err(format!("quota trie: unused leaf {id} kept"));
            }
        }
        Ok(())
    }
}

/// The checks of `ZooKeeperServer.checkQuota` (the caller has checked `enforceQuota`): would
/// adding `bytes_diff` bytes and `count_diff` nodes under `path` pass a hard limit of its
/// quota? Soft limits only log in ZooKeeper, so they never fail here.
///
/// # Errors
/// `QuotaExceeded` past a hard limit. `MarshallingError` where ZooKeeper's own parse throws
/// (null or malformed limits or stats data): its prep turns that exception into a
/// MARSHALLINGERROR for the whole request.
pub(crate) fn check_quota(
    tree: &DataTree,
    path: &str,
    bytes_diff: i64,
    count_diff: i64,
) -> Result<(), ErrorCode> {
    let Some(prefix) = tree.quota_prefix(path) else {
        return Ok(());
    };
    let Some(limit_node) = tree.node(&limit_path(&prefix)) else {
        return Ok(());
    };
    let parse = |data: Option<&Arc<[u8]>>| {
        StatsTrack::parse(data.map(|data| &data[..])).ok_or(ErrorCode::MarshallingError)
    };
    let limits = parse(limit_node.data())?;
    let check_count = count_diff != 0 && (limits.count() > -1 || limits.count_hard_limit() > -1);
    let check_bytes = bytes_diff != 0 && (limits.bytes() > -1 || limits.byte_hard_limit() > -1);
    if !check_count && !check_bytes {
        return Ok(());
    }
    let Some(stat_node) = tree.node(&stat_path(&prefix)) else {
        return Ok(());
    };
    let usage = parse(stat_node.data())?;
    let over = |used: i64, diff: i64, hard_limit: i64| {
        hard_limit > -1 && used.wrapping_add(diff) > hard_limit
    };
    if check_count && over(usage.count(), count_diff, limits.count_hard_limit()) {
        return Err(ErrorCode::QuotaExceeded);
    }
    if check_bytes && over(usage.bytes(), bytes_diff, limits.byte_hard_limit()) {
        return Err(ErrorCode::QuotaExceeded);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Option<StatsTrack> {
        StatsTrack::parse(Some(text.as_bytes()))
    }

    fn reprint(text: &str) -> Option<String> {
        parse(text).map(|stats| String::from_utf8_lossy(&stats.to_bytes()).into_owned())
    }

    #[test]
    fn stats_text_round_trips_as_java_prints_it() {
        // count and bytes come first, other keys sorted after an extra '=', absent ones are -1.
        assert_eq!(
            reprint("count=1,bytes=5").as_deref(),
            Some("count=1,bytes=5")
        );
        assert_eq!(reprint("").as_deref(), Some("count=-1,bytes=-1"));
        let hard = "count=-1,bytes=-1=;byteHardLimit=10;countHardLimit=3";
        assert_eq!(reprint(hard).as_deref(), Some(hard));
        assert_eq!(
            reprint("countHardLimit=3;bytes=2;zz=1,count=4").as_deref(),
            Some("count=4,bytes=2=;countHardLimit=3;zz=1")
        );
        let limits = parse(hard).unwrap_or_default();
        assert_eq!(
            (limits.count_hard_limit(), limits.byte_hard_limit()),
            (3, 10)
        );
    }

    #[test]
    fn stats_parse_fails_where_java_throws() {
        // Pairs without '=', values that are not longs and null data are errors; an empty
        // value, separator runs and a trailing separator are not.
        assert_eq!(parse("count"), None);
        assert_eq!(parse(",count=1"), None);
        assert_eq!(parse("count=x"), None);
        assert_eq!(parse("count=99999999999999999999"), None);
        assert_eq!(StatsTrack::parse(None), None);
        assert_eq!(parse("count==5").map(|s| s.count()), Some(-1));
        assert_eq!(
            reprint("count=+2,;;bytes=-3,").as_deref(),
            Some("count=2,bytes=-3")
        );
        assert_eq!(reprint(",").as_deref(), Some("count=-1,bytes=-1"));
    }

    #[test]
    fn trie_finds_the_longest_marked_prefix_by_component() {
        // Nested quotas resolve to the deepest one; blank components are ignored as in Java.
        let mut trie = QuotaTrie::default();
        assert_eq!(trie.max_prefix("/a"), None);
        trie.add("/a");
        trie.add("/a/b/c");
        assert_eq!(trie.max_prefix("/a").as_deref(), Some("/a"));
        assert_eq!(trie.max_prefix("/a/b").as_deref(), Some("/a"));
        assert_eq!(trie.max_prefix("/a/b/c/d").as_deref(), Some("/a/b/c"));
        assert_eq!(trie.max_prefix("/ab"), None);
        assert_eq!(trie.max_prefix("/ /a").as_deref(), Some("/a"));
        assert_eq!(trie.marked_paths(), vec!["/a", "/a/b/c"]);
        assert_eq!(trie.check(), Ok(()));
        trie.remove("/a");
        assert_eq!(trie.max_prefix("/a/b"), None);
        assert_eq!(trie.max_prefix("/a/b/c").as_deref(), Some("/a/b/c"));
        trie.remove("/a/b/c");
        assert!(trie.is_empty());
        trie.add("");
        trie.add("X");
        assert_eq!(trie.marked_paths(), vec!["/X"]);
        assert_eq!(trie.check(), Ok(()));
    }
}
