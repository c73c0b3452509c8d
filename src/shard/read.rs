//! Requests a shard answers from its own view: reads, watches, auth, whoAmI.

use super::conn::Conn;
use super::reply::write_error;
use super::Shard;
use crate::proto::jute::Writer;
use crate::proto::records::{self, MultiOp, Request, RequestHeader, SetWatches};
use crate::proto::{
    op, perms, xid, Acl, AddWatchMode, ErrorCode, EventType, Id, WatcherType,
    KEEPER_STATE_SYNC_CONNECTED,
};
use crate::tree::{check_acl, digest_id, DataTree, NodeRef, WatchKind};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Answers `request` into the connection's output buffer.
pub fn execute(shard: &Shard, conn: &Conn, header: RequestHeader, request: &Request<'_>) {
    let view = shard.view.borrow().clone();
    let zxid = view.last_zxid();
    let auth_ids = conn.state.borrow().auth_ids.clone();
    let reader = Reader {
        shard,
        conn,
        view: &view,
        auth_ids: &auth_ids,
        xid: header.xid,
        zxid,
    };
    // The reply is encoded straight into the connection's write buffer; nothing else writes to
    // it while `answer` runs (setWatches' synthesised events go through `out` too).
    let mut out = std::mem::take(&mut conn.state.borrow_mut().out);
    let outcome = reader.answer(&mut out, request);
    let mut state = conn.state.borrow_mut();
    debug_assert!(state.out.is_empty());
    state.out = out;
    drop(state);
    if outcome == Outcome::Close {
        conn.close();
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Done,
    Close,
}

struct Reader<'a> {
    shard: &'a Shard,
    conn: &'a Conn,
    view: &'a DataTree,
    auth_ids: &'a [Id],
    xid: i32,
    zxid: i64,
}

impl Reader<'_> {
    fn allowed(&self, node: &NodeRef<'_>, perm: i32) -> bool {
        self.shard.config.skip_acl || check_acl(node.acl(), perm, self.auth_ids)
    }

    /// Looks a node up and checks `perm` on it.
    fn readable(&self, path: &str, perm: i32) -> Result<NodeRef<'_>, ErrorCode> {
        let node = self.view.node(path).ok_or(ErrorCode::NoNode)?;
        if !self.allowed(&node, perm) {
            return Err(ErrorCode::NoAuth);
        }
        Ok(node)
    }

    fn error(&self, out: &mut Vec<u8>, code: ErrorCode) {
        write_error(out, self.xid, self.zxid, code);
    }

    fn reply(&self, out: &mut Vec<u8>, body: impl FnOnce(&mut Writer<'_>)) {
        let mut w = Writer::new(out);
        let at = records::begin_reply(&mut w, self.xid, self.zxid, 0);
        body(&mut w);
        w.end_frame(at);
    }

    fn watch(&self, path: &str, kind: WatchKind) {
        self.shard
            .watches
            .borrow_mut()
            .add(path, self.conn.id, kind);
    }

    fn answer(&self, out: &mut Vec<u8>, request: &Request<'_>) -> Outcome {
        match request {
            Request::Exists { path, watch } => self.exists(out, path, *watch),
            Request::GetData { path, watch } => self.get_data(out, path, *watch),
            Request::GetChildren { path, watch } => self.get_children(out, path, *watch, false),
            Request::GetChildren2 { path, watch } => self.get_children(out, path, *watch, true),
            Request::GetAcl { path } => self.get_acl(out, path),
            Request::GetAllChildrenNumber { path } => match self.readable(path, perms::READ) {
                Err(code) => self.error(out, code),
                Ok(_) => {
                    let count = self.view.all_children_number(path).unwrap_or(0);
                    self.reply(out, |w| w.write_i32(count));
                }
            },
            Request::GetEphemerals { prefix } => self.get_ephemerals(out, prefix),
            Request::MultiRead(ops) => self.multi_read(out, ops),
            Request::WhoAmI => self.who_am_i(out),
            Request::AddWatch { path, mode } => self.add_watch(out, path, *mode),
            Request::CheckWatches { path, watcher_type } => {
                self.check_watches(out, path, *watcher_type, false)
            }
            Request::RemoveWatches { path, watcher_type } => {
                self.check_watches(out, path, *watcher_type, true)
            }
            Request::SetWatches(set) => self.set_watches(out, set),
            Request::Sasl { token } => return self.sasl(out, token),
            // ZooKeeper checks reconfigEnabled first; a standalone server then cannot
            // reconfigure at all.
            Request::Reconfig if self.shard.config.reconfig_enabled => {
                self.error(out, ErrorCode::Unimplemented)
            }
            Request::Reconfig => self.error(out, ErrorCode::ReconfigDisabled),
            _ => self.error(out, ErrorCode::Unimplemented),
        }
        Outcome::Done
    }

    fn exists(&self, out: &mut Vec<u8>, path: &str, watch: bool) {
        if path.contains('\0') {
            return self.error(out, ErrorCode::BadArguments);
        }
        match self.view.node(path) {
            None => {
                if watch {
                    self.watch(path, WatchKind::Exist);
                }
                self.error(out, ErrorCode::NoNode);
            }
            Some(node) if !self.allowed(&node, perms::READ) => self.error(out, ErrorCode::NoAuth),
            Some(node) => {
                if watch {
                    self.watch(path, WatchKind::Data);
                }
                let stat = node.stat();
                self.reply(out, |w| stat.write(w));
            }
        }
    }

    fn get_data(&self, out: &mut Vec<u8>, path: &str, watch: bool) {
        match self.readable(path, perms::READ) {
            Err(code) => self.error(out, code),
            Ok(node) => {
                if watch {
                    self.watch(path, WatchKind::Data);
                }
                let stat = node.stat();
                let data = node.data().map(|data| &data[..]);
                self.reply(out, |w| records::write_data_stat(w, data, &stat));
            }
        }
    }

    fn get_children(&self, out: &mut Vec<u8>, path: &str, watch: bool, with_stat: bool) {
        match self.readable(path, perms::READ) {
            Err(code) => self.error(out, code),
            Ok(node) => {
                if watch {
                    self.watch(path, WatchKind::Child);
                }
                let children: Vec<&str> = node.children().collect();
                let stat = node.stat();
                self.reply(out, |w| {
                    w.write_string_vec(&children);
                    if with_stat {
                        stat.write(w);
                    }
                });
            }
        }
    }

    fn get_acl(&self, out: &mut Vec<u8>, path: &str) {
        let Some(node) = self.view.node(path) else {
            return self.error(out, ErrorCode::NoNode);
        };
        let admin = self.allowed(&node, perms::ADMIN);
        if !admin && !self.allowed(&node, perms::READ) {
            return self.error(out, ErrorCode::NoAuth);
        }
        let acl: Vec<Acl> = node
            .acl()
            .iter()
            .map(|entry| {
                if admin {
                    entry.clone()
                } else {
                    mask_digest(entry)
                }
            })
            .collect();
        let stat = node.stat();
        self.reply(out, |w| {
            Acl::write_vec(&acl, w);
            stat.write(w);
        });
    }

    fn get_ephemerals(&self, out: &mut Vec<u8>, prefix: &str) {
        let session_id = self.conn.session_id();
        let all = self.view.ephemerals(session_id);
        let matching: Vec<&String> = all
            .iter()
            .filter(|path| prefix.is_empty() || prefix == "/" || path.starts_with(prefix))
            .collect();
        let names: Vec<&str> = matching.iter().map(|path| path.as_str()).collect();
        self.reply(out, |w| w.write_string_vec(&names));
    }

    fn multi_read(&self, out: &mut Vec<u8>, ops: &[MultiOp<'_>]) {
        self.reply(out, |w| {
            for multi_op in ops {
                match multi_op {
                    MultiOp::GetChildren { path } => match self.readable(path, perms::READ) {
                        Ok(node) => {
                            records::encode::multi_header(w, op::GET_CHILDREN, false, 0);
                            let children: Vec<&str> = node.children().collect();
                            w.write_string_vec(&children);
                        }
                        Err(code) => write_multi_error(w, code),
                    },
                    MultiOp::GetData { path } => match self.readable(path, perms::READ) {
                        Ok(node) => {
                            records::encode::multi_header(w, op::GET_DATA, false, 0);
                            let stat = node.stat();
                            records::write_data_stat(w, node.data().map(|d| &d[..]), &stat);
                        }
                        Err(code) => write_multi_error(w, code),
                    },
                    _ => write_multi_error(w, ErrorCode::BadArguments),
                }
            }
            records::encode::multi_header(w, -1, true, -1);
        });
    }

    /// whoAmI: the connection's ids as ZooKeeper reports them — provider user names (a
    /// digest id shows only its user), ids from auth packets ahead of the automatic `ip` one.
    fn who_am_i(&self, out: &mut Vec<u8>) {
        let (ip_ids, other_ids): (Vec<&Id>, Vec<&Id>) =
            self.auth_ids.iter().partition(|id| &*id.scheme == "ip");
        let ids: Vec<&Id> = other_ids.into_iter().chain(ip_ids).collect();
        self.reply(out, |w| {
            w.write_vec_len(ids.len());
            for id in ids {
                let user = match &*id.scheme {
                    "digest" => id.id.split(':').next().unwrap_or(""),
                    _ => &id.id,
                };
                w.write_string(&id.scheme);
                w.write_string(user);
            }
        });
    }

    fn add_watch(&self, out: &mut Vec<u8>, path: &str, mode: i32) {
        let kind = match AddWatchMode::from_code(mode) {
            Some(AddWatchMode::Persistent) => WatchKind::Persistent,
            Some(AddWatchMode::PersistentRecursive) => WatchKind::PersistentRecursive,
            None => return self.error(out, ErrorCode::BadArguments),
        };
        self.watch(path, kind);
        self.reply(out, |w| w.write_i32(0));
    }

    fn check_watches(&self, out: &mut Vec<u8>, path: &str, code: i32, remove: bool) {
        let Some(watcher_type) = WatcherType::from_code(code) else {
            return self.error(out, ErrorCode::BadArguments);
        };
        let found = if remove {
            !self
                .shard
                .watches
                .borrow_mut()
                .remove(path, self.conn.id, watcher_type)
                .is_empty()
        } else {
            self.shard
                .watches
                .borrow()
                .check(path, self.conn.id, watcher_type)
        };
        if found {
            self.reply(out, |_| {});
        } else {
            self.error(out, ErrorCode::NoWatcher);
        }
    }

    /// Re-registers a reconnecting client's watches, firing those whose change it missed.
    fn set_watches(&self, out: &mut Vec<u8>, set: &SetWatches<'_>) {
        let relative = set.relative_zxid;
        for path in &set.data {
            match self.view.node(path) {
                None => notify(out, EventType::NodeDeleted, path),
                Some(node) if node.stat().mzxid > relative => {
                    notify(out, EventType::NodeDataChanged, path)
                }
                Some(_) => self.watch(path, WatchKind::Data),
            }
        }
        for path in &set.exist {
            match self.view.node(path) {
                Some(_) => notify(out, EventType::NodeCreated, path),
                None => self.watch(path, WatchKind::Exist),
            }
        }
        for path in &set.child {
            match self.view.node(path) {
                None => notify(out, EventType::NodeDeleted, path),
                Some(node) if node.stat().pzxid > relative => {
                    notify(out, EventType::NodeChildrenChanged, path)
                }
                Some(_) => self.watch(path, WatchKind::Child),
            }
        }
        for path in &set.persistent {
            self.watch(path, WatchKind::Persistent);
        }
        for path in &set.persistent_recursive {
            self.watch(path, WatchKind::PersistentRecursive);
        }
        write_error(out, xid::SET_WATCHES, self.zxid, ErrorCode::Ok);
    }

    fn sasl(&self, out: &mut Vec<u8>, token: &[u8]) -> Outcome {
        let mut state = self.conn.state.borrow_mut();
        if state.sasl.is_none() {
            if self.shard.sasl_users.is_empty() {
                drop(state);
                self.error(out, ErrorCode::AuthFailed);
                return Outcome::Close;
            }
            state.sasl = Some(crate::auth::new_digest_server(&self.shard.sasl_users));
        }
        let Some(server) = state.sasl.as_mut() else {
            return Outcome::Close;
        };
        match crate::auth::sasl_step(server, token) {
            Ok((reply_token, authorized)) => {
                if let Some(user) = authorized {
                    let mut ids: Vec<Id> = state.auth_ids.to_vec();
                    ids.push(Id::new("sasl", &user));
                    if self.shard.config.sasl_super_user.as_deref() == Some(user.as_str()) {
                        ids.push(Id::new("super", ""));
                    }
                    state.auth_ids = Arc::from(ids);
                }
                drop(state);
                self.reply(out, |w| w.write_buffer(Some(&reply_token)));
                Outcome::Done
            }
            Err(reason) => {
                drop(state);
                tracing::warn!(conn = self.conn.id, %reason, "SASL authentication failed");
                self.shard.stats.auth_failed_count.fetch_add(1, Relaxed);
                self.error(out, ErrorCode::AuthFailed);
                Outcome::Close
            }
        }
    }
}

/// A synthesised watch event; ZooKeeper 3.8 sends zxid -1 in every notification.
fn notify(out: &mut Vec<u8>, event: EventType, path: &str) {
    records::write_notification(out, -1, event as i32, KEEPER_STATE_SYNC_CONNECTED, path);
}

fn write_multi_error(w: &mut Writer<'_>, code: ErrorCode) {
    records::encode::multi_header(w, op::ERROR, false, code.code());
    w.write_i32(code.code());
}

/// Without ADMIN, getACL hides digest hashes: `user:hash` becomes `user:x`.
fn mask_digest(entry: &Acl) -> Acl {
    if &*entry.id.scheme != "digest" {
        return entry.clone();
    }
    let user = entry.id.id.split(':').next().unwrap_or("");
    Acl::new(entry.perms, "digest", &format!("{user}:x"))
}

/// Handles an AuthPacket (xid -4). Digest always succeeds (it only names the caller); an
/// unknown scheme is AUTHFAILED and the connection closes, as in ZooKeeper.
pub fn authenticate(shard: &Shard, conn: &Conn, scheme: &str, auth: &[u8]) {
    let new_ids: Option<Vec<Id>> = match scheme {
        "digest" => std::str::from_utf8(auth).ok().map(|user_password| {
            let digest = digest_id(user_password);
            let mut ids = vec![Id::new("digest", &digest)];
            if shard.config.super_digest.as_deref() == Some(digest.as_str()) {
                ids.push(Id::new("super", ""));
            }
            ids
        }),
        "ip" => Some(vec![Id::new("ip", &conn.peer.ip().to_string())]),
        _ => None,
    };
    let zxid = 0;
    match new_ids {
        Some(ids) => {
            {
                let mut state = conn.state.borrow_mut();
                let mut all: Vec<Id> = state.auth_ids.to_vec();
                for id in ids {
                    if !all.contains(&id) {
                        all.push(id);
                    }
                }
                state.auth_ids = Arc::from(all);
            }
            conn.reply_with(|out| records::write_header_only(out, xid::AUTH, zxid, 0));
        }
        None => {
            shard.stats.auth_failed_count.fetch_add(1, Relaxed);
            let code = ErrorCode::AuthFailed.code();
            conn.reply_with(|out| records::write_header_only(out, xid::AUTH, zxid, code));
            conn.close();
        }
    }
}
