//! The watch registry of one shard: ZooKeeper's two `WatchManager`s (data and child) over the
//! shard's connections, as a plain data structure.
//!
//! Each (path, connection) pair holds a set of modes per side: one-shot (standard),
//! persistent, persistent-recursive. Keeping a set rather than one mode is ZooKeeper 3.9's fix
//! (ZOOKEEPER-4466): in 3.8 a getData watch set on a path with a persistent watch silently
//! replaced it with a one-shot one.

use super::txn::WatchTrigger;
use crate::proto::{EventType, WatcherType};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// A connection on the shard that owns this registry.
pub type ConnId = u64;

/// What registered the watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchKind {
    /// getData(watch): one-shot, data side.
    Data,
    /// exists(watch), also on a missing node: one-shot, data side.
    Exist,
    /// getChildren(watch): one-shot, child side.
    Child,
    /// addWatch mode 0: both sides, kept after firing.
    Persistent,
    /// addWatch mode 1: data side, kept, fires for the path and all descendants.
    PersistentRecursive,
}

const MODE_STANDARD: u8 = 1;
const MODE_PERSISTENT: u8 = 2;
const MODE_RECURSIVE: u8 = 4;

/// The modes one connection holds on one path, per side.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Modes {
    data: u8,
    child: u8,
}

impl Modes {
    fn is_empty(self) -> bool {
        self.data == 0 && self.child == 0
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Data,
    Child,
}

/// All watches of one shard's connections.
#[derive(Debug, Default)]
pub struct WatchManager {
    paths: HashMap<Arc<str>, BTreeMap<ConnId, Modes>>,
    conns: HashMap<ConnId, BTreeSet<Arc<str>>>,
    /// Data-side recursive watches; while zero, triggers skip the walk up the ancestors.
    recursive_count: usize,
}

impl WatchManager {
    pub fn new() -> WatchManager {
        WatchManager::default()
    }

    pub fn add(&mut self, path: &str, conn: ConnId, kind: WatchKind) {
        let (data, child) = match kind {
            WatchKind::Data | WatchKind::Exist => (MODE_STANDARD, 0),
            WatchKind::Child => (0, MODE_STANDARD),
            WatchKind::Persistent => (MODE_PERSISTENT, MODE_PERSISTENT),
            WatchKind::PersistentRecursive => (MODE_RECURSIVE, 0),
        };
        let key: Arc<str> = match self.paths.get_key_value(path) {
            Some((key, _)) => key.clone(),
            None => Arc::from(path),
        };
        let modes = self
            .paths
            .entry(key.clone())
            .or_default()
            .entry(conn)
            .or_default();
        if data & MODE_RECURSIVE != 0 && modes.data & MODE_RECURSIVE == 0 {
            self.recursive_count += 1;
        }
        modes.data |= data;
        modes.child |= child;
        self.conns.entry(conn).or_default().insert(key);
    }

    /// The notifications one trigger causes, at most one per connection, sorted by
    /// connection. One-shot watches that fire are removed.
    ///
    /// NodeCreated and NodeDataChanged fire the data side; NodeChildrenChanged the child side;
    /// NodeDeleted both. A recursive watch fires for its path and every descendant, never with
    /// NodeChildrenChanged. The caller filters by READ permission on `trigger.acl`.
    pub fn trigger(&mut self, trigger: &WatchTrigger) -> Vec<(ConnId, EventType, String)> {
        if self.paths.is_empty() {
            // No watch on this shard (the common case under a write load): no path to hash.
            return Vec::new();
        }
        let mut fired = BTreeSet::new();
        let path = trigger.path.as_str();
        match trigger.event {
            EventType::NodeCreated | EventType::NodeDataChanged => {
                self.fire(path, trigger.event, Side::Data, &mut fired);
            }
            EventType::NodeChildrenChanged => {
                self.fire(path, trigger.event, Side::Child, &mut fired);
            }
            EventType::NodeDeleted => {
                // ZooKeeper suppresses the child-side event for connections the data side
                // already notified; a set of connections does the same.
                self.fire(path, trigger.event, Side::Data, &mut fired);
                self.fire(path, trigger.event, Side::Child, &mut fired);
            }
            _ => {}
        }
        fired
            .into_iter()
            .map(|conn| (conn, trigger.event, trigger.path.clone()))
            .collect()
    }

    fn fire(&mut self, path: &str, event: EventType, side: Side, fired: &mut BTreeSet<ConnId>) {
        let recursive_fires = event != EventType::NodeChildrenChanged;
        let mut emptied: Vec<ConnId> = Vec::new();
        if let Some(watchers) = self.paths.get_mut(path) {
            for (conn, modes) in watchers.iter_mut() {
                let bits = match side {
                    Side::Data => &mut modes.data,
                    Side::Child => &mut modes.child,
                };
                if *bits & (MODE_STANDARD | MODE_PERSISTENT) != 0
                    || (*bits & MODE_RECURSIVE != 0 && recursive_fires)
                {
                    fired.insert(*conn);
                }
                *bits &= !MODE_STANDARD;
                if modes.is_empty() {
                    emptied.push(*conn);
                }
            }
        }
        for conn in emptied {
            self.forget(path, conn);
        }
        if side == Side::Data && self.recursive_count > 0 && recursive_fires {
            self.fire_ancestors(path, fired);
        }
    }

    /// Recursive watches on the strict ancestors of `path`, up to `/`.
    fn fire_ancestors(&self, path: &str, fired: &mut BTreeSet<ConnId>) {
        let mut current = path;
        while let Some((parent, _)) = current.rsplit_once('/') {
            let ancestor = if parent.is_empty() { "/" } else { parent };
            if ancestor == current {
                break;
            }
            if let Some(watchers) = self.paths.get(ancestor) {
                let recursive = watchers
                    .iter()
                    .filter(|(_, modes)| modes.data & MODE_RECURSIVE != 0);
                fired.extend(recursive.map(|(conn, _)| *conn));
            }
            current = ancestor;
        }
    }

    /// Drops the (path, conn) entry from both indexes.
    fn forget(&mut self, path: &str, conn: ConnId) {
        if let Some(watchers) = self.paths.get_mut(path) {
            if let Some(modes) = watchers.remove(&conn) {
                if modes.data & MODE_RECURSIVE != 0 {
                    self.recursive_count = self.recursive_count.saturating_sub(1);
                }
            }
            if watchers.is_empty() {
                self.paths.remove(path);
            }
        }
        if let Some(paths) = self.conns.get_mut(&conn) {
            paths.remove(path);
            if paths.is_empty() {
                self.conns.remove(&conn);
            }
        }
    }

    /// Drops every watch of a closed connection.
    pub fn remove_conn(&mut self, conn: ConnId) {
        let Some(paths) = self.conns.remove(&conn) else {
            return;
        };
        for path in paths {
            self.forget(&path, conn);
        }
    }

    /// checkWatches: Children/Data ask for a one-shot watch on that side, Persistent and
    /// PersistentRecursive for that mode, Any for anything on either side (ZooKeeper 3.9's
    /// `DataTree.containsWatcher`).
    pub fn check(&self, path: &str, conn: ConnId, ty: WatcherType) -> bool {
        let Some(modes) = self
            .paths
            .get(path)
            .and_then(|watchers| watchers.get(&conn))
        else {
            return false;
        };
        match ty {
            WatcherType::Children => modes.child & MODE_STANDARD != 0,
            WatcherType::Data => modes.data & MODE_STANDARD != 0,
            WatcherType::Persistent => modes.data & MODE_PERSISTENT != 0,
            WatcherType::PersistentRecursive => modes.data & MODE_RECURSIVE != 0,
            WatcherType::Any => !modes.is_empty(),
        }
    }

    /// removeWatches: removes what `check` would find and returns which kinds went, as the
    /// client reports them (DataWatchRemoved, ChildWatchRemoved, PersistentWatchRemoved).
    /// Empty means nothing matched: reply NoWatcher. ZooKeeper's server sends no notification
    /// for a removal — the client raises these events itself — so the list is informational.
    pub fn remove(&mut self, path: &str, conn: ConnId, ty: WatcherType) -> Vec<EventType> {
        let Some(modes) = self
            .paths
            .get(path)
            .and_then(|watchers| watchers.get(&conn))
        else {
            return Vec::new();
        };
        let before = *modes;
        let (data_cleared, child_cleared) = match ty {
            WatcherType::Children => (0, MODE_STANDARD),
            WatcherType::Data => (MODE_STANDARD, 0),
            WatcherType::Persistent => (MODE_PERSISTENT, MODE_PERSISTENT),
            WatcherType::PersistentRecursive => (MODE_RECURSIVE, 0),
            WatcherType::Any => (u8::MAX, u8::MAX),
        };
        let removed = Modes {
            data: before.data & data_cleared,
            child: before.child & child_cleared,
        };
        let after = Modes {
            data: before.data & !data_cleared,
            child: before.child & !child_cleared,
        };
        self.store(path, conn, before, after);
        removed_events(removed)
    }

    /// Writes back a (path, conn) entry after a removal, keeping the indexes in step.
    fn store(&mut self, path: &str, conn: ConnId, before: Modes, after: Modes) {
        if after.is_empty() {
            self.forget(path, conn);
            return;
        }
        if before.data & MODE_RECURSIVE != 0 && after.data & MODE_RECURSIVE == 0 {
            self.recursive_count = self.recursive_count.saturating_sub(1);
        }
        if let Some(modes) = self.paths.get_mut(path).and_then(|w| w.get_mut(&conn)) {
            *modes = after;
        }
    }

    /// ZooKeeper's `zk_watch_count`: data-side plus child-side watches (a persistent watch
    /// counts twice, as it sits in both managers).
    pub fn watch_count(&self) -> usize {
        let sides = |modes: &Modes| usize::from(modes.data != 0) + usize::from(modes.child != 0);
        self.paths
            .values()
            .flat_map(|watchers| watchers.values())
            .map(sides)
            .sum()
    }

    /// Paths with at least one watch, either side.
    pub fn path_count(&self) -> usize {
        self.paths.len()
    }

    /// Connections with at least one watch.
    pub fn conn_count(&self) -> usize {
        self.conns.len()
    }

    /// For wchc: each watching connection with its paths, all sorted. Both sides are listed
    /// (ZooKeeper's wchc shows only the data side).
    pub fn by_conn(&self) -> Vec<(ConnId, Vec<String>)> {
        let mut out: Vec<(ConnId, Vec<String>)> = self
            .conns
            .iter()
            .map(|(conn, paths)| (*conn, paths.iter().map(|p| p.to_string()).collect()))
            .collect();
        out.sort_unstable_by_key(|(conn, _)| *conn);
        out
    }

    /// The data-side watches (getData, exists, persistent, recursive) as (connection, path)
    /// pairs sorted by connection then path: what ZooKeeper's wchs, wchc and wchp list, since
    /// they read only its dataWatches manager.
    pub fn data_side(&self) -> Vec<(ConnId, String)> {
        let mut out: Vec<(ConnId, String)> = self
            .paths
            .iter()
            .flat_map(|(path, watchers)| {
                watchers
                    .iter()
                    .filter(|(_, modes)| modes.data != 0)
                    .map(move |(conn, _)| (*conn, path.to_string()))
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// For wchp: each watched path with its connections, all sorted.
    pub fn by_path(&self) -> Vec<(String, Vec<ConnId>)> {
        let mut out: Vec<(String, Vec<ConnId>)> = self
            .paths
            .iter()
            .map(|(path, watchers)| (path.to_string(), watchers.keys().copied().collect()))
            .collect();
        out.sort_unstable();
        out
    }

    /// The two indexes agree, no entry is empty, and the recursive count is exact.
    pub fn invariants(&self) -> Result<(), String> {
        let mut recursive = 0;
        for (path, watchers) in &self.paths {
            if watchers.is_empty() {
                return Err(format!("{path}: empty watcher map kept"));
            }
            for (conn, modes) in watchers {
                if modes.is_empty() {
                    return Err(format!("{path}: conn {conn} with no modes"));
                }
                recursive += usize::from(modes.data & MODE_RECURSIVE != 0);
                if !self
                    .conns
                    .get(conn)
                    .is_some_and(|paths| paths.contains(path))
                {
                    return Err(format!("{path}: conn {conn} missing from the conn index"));
                }
            }
        }
        for (conn, paths) in &self.conns {
            for path in paths {
                if !self.paths.get(path).is_some_and(|w| w.contains_key(conn)) {
                    return Err(format!("conn {conn}: {path} missing from the path index"));
                }
            }
        }
        if recursive != self.recursive_count {
            return Err(format!(
                "recursive count {} != {recursive}",
                self.recursive_count
            ));
        }
        Ok(())
    }
}

fn removed_events(removed: Modes) -> Vec<EventType> {
    let mut events = Vec::new();
    if removed.data & MODE_STANDARD != 0 {
        events.push(EventType::DataWatchRemoved);
    }
    if removed.child & MODE_STANDARD != 0 {
        events.push(EventType::ChildWatchRemoved);
    }
    if (removed.data | removed.child) & (MODE_PERSISTENT | MODE_RECURSIVE) != 0 {
        events.push(EventType::PersistentWatchRemoved);
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(path: &str, event: EventType) -> WatchTrigger {
        WatchTrigger {
            path: path.to_string(),
            event,
            acl: Arc::from(Vec::new()),
        }
    }

    fn conns(fired: &[(ConnId, EventType, String)]) -> Vec<ConnId> {
        fired.iter().map(|(conn, _, _)| *conn).collect()
    }

    #[test]
    fn one_shot_watches_fire_once_on_their_side() {
        // Data/exist watches fire on create, data change and delete; child watches on
        // children-changed and delete; each only once.
        let mut watches = WatchManager::new();
        watches.add("/a", 1, WatchKind::Exist);
        watches.add("/a", 2, WatchKind::Child);
        assert!(
            watches
                .trigger(&event("/a", EventType::NodeChildrenChanged))
                .len()
                == 1
        );
        assert!(watches
            .trigger(&event("/a", EventType::NodeChildrenChanged))
            .is_empty());
        let created = watches.trigger(&event("/a", EventType::NodeCreated));
        assert_eq!(created, vec![(1, EventType::NodeCreated, "/a".to_string())]);
        assert!(watches
            .trigger(&event("/a", EventType::NodeDataChanged))
            .is_empty());
        watches.add("/a", 1, WatchKind::Data);
        watches.add("/a", 2, WatchKind::Child);
        assert_eq!(
            conns(&watches.trigger(&event("/a", EventType::NodeDeleted))),
            [1, 2]
        );
        assert_eq!(watches.watch_count(), 0);
        assert_eq!(watches.path_count(), 0);
        assert_eq!(watches.invariants(), Ok(()));
    }

    #[test]
    fn one_event_per_connection_per_trigger() {
        // A connection with a data and a child watch on a deleted node hears about it once.
        let mut watches = WatchManager::new();
        watches.add("/a", 7, WatchKind::Data);
        watches.add("/a", 7, WatchKind::Child);
        watches.add("/a", 7, WatchKind::PersistentRecursive);
        let fired = watches.trigger(&event("/a", EventType::NodeDeleted));
        assert_eq!(fired, vec![(7, EventType::NodeDeleted, "/a".to_string())]);
        assert!(watches.check("/a", 7, WatcherType::PersistentRecursive));
        assert!(!watches.check("/a", 7, WatcherType::Data));
        assert!(!watches.check("/a", 7, WatcherType::Children));
    }

    #[test]
    fn persistent_watches_stay_and_cover_both_sides() {
        // A persistent watch fires for data and children events on its path, repeatedly,
        // and counts once per side.
        let mut watches = WatchManager::new();
        watches.add("/p", 3, WatchKind::Persistent);
        assert_eq!(watches.watch_count(), 2);
        for kind in [
            EventType::NodeDataChanged,
            EventType::NodeChildrenChanged,
            EventType::NodeDataChanged,
            EventType::NodeDeleted,
            EventType::NodeCreated,
        ] {
            assert_eq!(conns(&watches.trigger(&event("/p", kind))), [3], "{kind:?}");
        }
        assert!(watches
            .trigger(&event("/p/c", EventType::NodeCreated))
            .is_empty());
        assert!(watches.check("/p", 3, WatcherType::Persistent));
    }

    #[test]
    fn recursive_watches_cover_descendants_but_not_child_events() {
        // A recursive watch on /r fires for /r and everything below, except
        // NodeChildrenChanged, and leaves siblings alone; one on / sees everything.
        let mut watches = WatchManager::new();
        watches.add("/r", 4, WatchKind::PersistentRecursive);
        watches.add("/", 5, WatchKind::PersistentRecursive);
        let deep = watches.trigger(&event("/r/x/y", EventType::NodeCreated));
        assert_eq!(conns(&deep), [4, 5]);
        assert_eq!(deep[0].2, "/r/x/y");
        assert_eq!(
            conns(&watches.trigger(&event("/r", EventType::NodeDataChanged))),
            [4, 5]
        );
        assert!(watches
            .trigger(&event("/r", EventType::NodeChildrenChanged))
            .is_empty());
        assert_eq!(
            conns(&watches.trigger(&event("/rx", EventType::NodeDeleted))),
            [5]
        );
        assert_eq!(
            conns(&watches.trigger(&event("/", EventType::NodeDataChanged))),
            [5]
        );
        assert_eq!(watches.invariants(), Ok(()));
    }

    #[test]
    fn standard_and_persistent_modes_coexist() {
        // A one-shot data watch added on a persistently watched path does not demote it.
        let mut watches = WatchManager::new();
        watches.add("/m", 1, WatchKind::Persistent);
        watches.add("/m", 1, WatchKind::Data);
        assert_eq!(
            watches
                .trigger(&event("/m", EventType::NodeDataChanged))
                .len(),
            1
        );
        assert!(!watches.check("/m", 1, WatcherType::Data));
        assert_eq!(
            watches
                .trigger(&event("/m", EventType::NodeDataChanged))
                .len(),
            1
        );
    }

    #[test]
    fn check_and_remove_by_type() {
        // removeWatches removes only the matching kind and reports what it removed; a miss
        // is empty (NoWatcher).
        let mut watches = WatchManager::new();
        watches.add("/w", 9, WatchKind::Data);
        watches.add("/w", 9, WatchKind::Child);
        watches.add("/w", 9, WatchKind::PersistentRecursive);
        assert!(watches.check("/w", 9, WatcherType::Any));
        assert!(watches.remove("/w", 9, WatcherType::Persistent).is_empty());
        assert_eq!(
            watches.remove("/w", 9, WatcherType::Children),
            [EventType::ChildWatchRemoved]
        );
        assert!(!watches.check("/w", 9, WatcherType::Children));
        assert!(watches.check("/w", 9, WatcherType::Data));
        assert_eq!(
            watches.remove("/w", 9, WatcherType::Any),
            [
                EventType::DataWatchRemoved,
                EventType::PersistentWatchRemoved
            ]
        );
        assert!(!watches.check("/w", 9, WatcherType::Any));
        assert!(watches.remove("/w", 9, WatcherType::Any).is_empty());
        assert!(watches
            .trigger(&event("/w/x", EventType::NodeCreated))
            .is_empty());
        assert_eq!(watches.invariants(), Ok(()));
    }

    #[test]
    fn closing_a_connection_drops_its_watches_and_reports_list_them() {
        // remove_conn forgets a connection everywhere; the dumps list what remains, sorted.
        let mut watches = WatchManager::new();
        watches.add("/b", 2, WatchKind::Data);
        watches.add("/a", 2, WatchKind::Child);
        watches.add("/a", 1, WatchKind::Persistent);
        watches.add("/c", 3, WatchKind::PersistentRecursive);
        assert_eq!(watches.conn_count(), 3);
        watches.remove_conn(3);
        watches.remove_conn(42);
        assert_eq!(
            watches.by_conn(),
            vec![
                (1, vec!["/a".to_string()]),
                (2, vec!["/a".to_string(), "/b".to_string()])
            ]
        );
        assert_eq!(
            watches.by_path(),
            vec![("/a".to_string(), vec![1, 2]), ("/b".to_string(), vec![2])]
        );
        assert_eq!(watches.watch_count(), 4);
        assert_eq!(watches.invariants(), Ok(()));
        assert!(watches
            .trigger(&event("/c/d", EventType::NodeCreated))
            .is_empty());
    }
}
