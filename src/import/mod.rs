//! import: Apache ZooKeeper 3.x data (`snapshot.*` and `log.*` in `version-2/`) into Keel state.
//!
//! Owns: the readers of ZooKeeper's files (`files`: plain or gzip snapshots, logs), rebuilding ZooKeeper's state from them
//! (`import_data_dir`: the newest snapshot that parses and checks, falling back to older ones,
//! then every logged txn after it, as `FileTxnSnapLog.restore` does), writing that state as a
//! Keel snapshot (`import_into`, behind `keel import`), and the import on first start
//! (`auto_import`) when Keel's own dataDir holds ZooKeeper's files.
//! Must not: panic on any byte of any file (every defect is an `ImportError`); overwrite or
//! delete ZooKeeper's files (auto-import moves them, intact, into `version-2/zookeeper-imported/`
//! for rollback); import over existing Keel state.
//! Faithful details: ZooKeeper's snapshots are fuzzy and named after the last zxid applied when
//! they started, so every logged txn with a greater zxid is replayed over them (`DataTree::apply`
//! tolerates what a fuzzy snapshot already holds, as `processTxn` does); the logs that may
//! hold those are the newest one starting at or before the snapshot's zxid and all later ones
//! (`FileTxnLog.getLogFiles`); sessions are the snapshot's plus createSession minus
//! closeSession; ephemerals whose session is not among them are removed, as
//! `ZooKeeperServer.loadData` kills dead sessions. Unlike ZooKeeper, a gap in the zxids
//! (within an epoch) between the snapshot and the logs, or between logs, is an error: the
//! import would otherwise produce a state that never existed.

#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod files;
#[cfg(test)]
mod tests;

use crate::config::Config;
use crate::log::RecordError;
use crate::proto::op;
use crate::snapshot::SnapshotError;
use crate::tree::{DataTree, OpResult, RestoreError, Txn, TxnHeader};
use files::{parse_snapshot, parse_txn_log, LogEnd, ZkDigest, LOG_MAGIC, SNAP_MAGIC};
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The directory under dataDir and dataLogDir, as ZooKeeper names it.
pub const VERSION_DIR: &str = "version-2";
/// Where auto-import moves ZooKeeper's files, inside `version-2/`.
pub const IMPORTED_DIR: &str = "zookeeper-imported";
/// Magic of Keel's own log segments and snapshots: Keel state.
const KEEL_MAGICS: [[u8; 4]; 2] = [*b"KLOG", *b"KSNP"];

/// Why ZooKeeper's data could not be imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not a ZooKeeper {expected} file (magic {found:02x?})")]
    BadMagic { expected: String, found: Vec<u8> },
    #[error("unsupported file format version {0} (ZooKeeper 3.x writes 2)")]
    UnsupportedVersion(i32),
    #[error("{what}: {reason}")]
    Malformed { what: String, reason: String },
    #[error("{what}: Adler32 checksum mismatch at byte {offset}")]
    Checksum { what: String, offset: usize },
    #[error("txn log entry at byte {offset}: {error}")]
    Txn { offset: usize, error: RecordError },
    #[error("the snapshot's nodes do not form a tree: {0}")]
    Tree(RestoreError),
    #[error("{path}: snappy-compressed snapshots are not supported: restart ZooKeeper with zookeeper.snapshot.compression.method=gz (or none) to write one Keel reads")]
    Compressed { path: String },
    #[error("{path}: {source}")]
    InFile {
        path: String,
        #[source]
        source: Box<ImportError>,
    },
    #[error("no usable ZooKeeper snapshot in {dir}{}", describe_skipped(.skipped))]
    NoSnapshot { dir: String, skipped: Vec<String> },
    #[error("{path}: the txns after zxid {after:#x} resume at {next:#x}: {} are missing (a log file is missing or damaged)", next - after - 1)]
    Gap { path: String, after: i64, next: i64 },
    #[error("{0} already holds Keel state: refusing to import over it")]
    KeelStateExists(String),
    #[error("{0} already holds ZooKeeper files: start keel on it to import them in place")]
    TargetHoldsZooKeeper(String),
    #[error("writing Keel's snapshot: {0}")]
    Snapshot(#[from] SnapshotError),
}

fn describe_skipped(skipped: &[String]) -> String {
    if skipped.is_empty() {
        String::new()
    } else {
        format!(" (skipped: {})", skipped.join("; "))
    }
}

fn io_error(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ImportError {
    let path = path.display().to_string();
    move |source| ImportError::Io { op, path, source }
}

fn in_file(path: &Path) -> impl FnOnce(ImportError) -> ImportError {
    let path = path.display().to_string();
    move |source| ImportError::InFile {
        path,
        source: Box::new(source),
    }
}

/// ZooKeeper's state rebuilt from its files.
pub struct Imported {
    pub tree: DataTree,
    /// Open sessions (id, timeout ms), sorted by id.
    pub sessions: Vec<(i64, i32)>,
    pub last_zxid: i64,
    pub summary: ImportSummary,
}

/// What an import read and did, for the operator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportSummary {
    pub snapshot: PathBuf,
    pub snapshot_zxid: i64,
    /// Newer snapshots that did not parse or check, with why.
    pub skipped_snapshots: Vec<String>,
    pub logs: Vec<PathBuf>,
    /// Txns applied after the snapshot.
    pub txns_replayed: usize,
    /// Of those, how many ended in an error result (a failed request logged as an error txn,
    /// or a txn a fuzzy snapshot already held).
    pub txns_with_error_result: usize,
    /// A log whose last entry was torn (ignored, as ZooKeeper does).
    pub torn_logs: Vec<PathBuf>,
    /// Ephemerals of sessions that no longer exist, removed.
    pub dead_session_ephemerals: usize,
    pub nodes: usize,
    pub sessions: usize,
    pub last_zxid: i64,
    /// The tree digest ZooKeeper recorded for `last_zxid` (or before error txns that end the
    /// log) and whether ours equals it; `None` when ZooKeeper recorded none (digest.enabled
    /// false, an empty digest, or none for that zxid).
    pub digest_matches: Option<bool>,
    /// Keel's snapshot written from it.
    pub keel_snapshot: Option<PathBuf>,
    /// Where auto-import moved ZooKeeper's files.
    pub moved_to: Vec<PathBuf>,
}

impl fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "snapshot: {} (zxid {:#x})",
            self.snapshot.display(),
            self.snapshot_zxid
        )?;
        for skipped in &self.skipped_snapshots {
            writeln!(f, "skipped newer snapshot: {skipped}")?;
        }
        for log in &self.logs {
            writeln!(f, "log: {}", log.display())?;
        }
        for log in &self.torn_logs {
            writeln!(f, "torn last entry ignored: {}", log.display())?;
        }
        writeln!(
            f,
            "txns replayed after the snapshot: {} ({} with an error result)",
            self.txns_replayed, self.txns_with_error_result
        )?;
        if self.dead_session_ephemerals > 0 {
            writeln!(
                f,
                "ephemerals of dead sessions removed: {}",
                self.dead_session_ephemerals
            )?;
        }
        let digest = match self.digest_matches {
            None => "not recorded by ZooKeeper",
            Some(true) => "matches ZooKeeper's",
            Some(false) => "DIFFERS from ZooKeeper's",
        };
        writeln!(f, "tree digest: {digest}")?;
        if let Some(path) = &self.keel_snapshot {
            writeln!(f, "keel snapshot: {}", path.display())?;
        }
        for dir in &self.moved_to {
            writeln!(f, "ZooKeeper files moved to: {}", dir.display())?;
        }
        write!(
            f,
            "imported {} nodes, {} sessions, last zxid {:#x}",
            self.nodes, self.sessions, self.last_zxid
        )
    }
}

/// `dir/version-2` if it exists, else `dir` itself (the version directory was named).
fn version_dir(dir: &Path) -> PathBuf {
    let nested = dir.join(VERSION_DIR);
    if nested.is_dir() {
        nested
    } else {
        dir.to_path_buf()
    }
}

/// The zxid in a ZooKeeper file name `prefix.<hex>`; two's complement as Java prints it.
fn parse_hex_name(name: &str, prefix: &str) -> Option<i64> {
    let hex = name.strip_prefix(prefix)?.strip_prefix('.')?;
    let ok = !hex.is_empty() && hex.len() <= 16 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then(|| u64::from_str_radix(hex, 16).ok().map(|bits| bits as i64))
        .flatten()
}

/// The first four bytes of a file, or `None` if it has fewer or cannot be read.
fn magic_of(path: &Path) -> Option<[u8; 4]> {
    let mut file = std::fs::File::open(path).ok()?;
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic).ok()?;
    Some(magic)
}

/// Files `prefix.<hex zxid>` (and, for snapshots, `.gz`/`.snappy` variants) in `dir` whose
/// magic is `magic` (compressed ones are listed whatever their bytes: the magic is inside),
/// sorted by zxid.
fn list_zk_files(
    dir: &Path,
    prefix: &str,
    magic: [u8; 4],
) -> Result<Vec<(i64, PathBuf)>, ImportError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(io_error("read", dir)(error)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_error("read", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let (base, compressed) = match name
            .strip_suffix(".gz")
            .or_else(|| name.strip_suffix(".snappy"))
        {
            Some(base) if prefix == "snapshot" => (base, true),
            _ => (name, false),
        };
        let Some(zxid) = parse_hex_name(base, prefix) else {
            continue;
        };
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        if compressed || magic_of(&path) == Some(magic) {
            found.push((zxid, path));
        }
    }
    found.sort();
    Ok(found)
}

/// Whether `dir` (a `version-2` directory) holds ZooKeeper snapshots or logs.
fn holds_zookeeper_files(dir: &Path) -> Result<bool, ImportError> {
    Ok(!list_zk_files(dir, "snapshot", SNAP_MAGIC)?.is_empty()
        || !list_zk_files(dir, "log", LOG_MAGIC)?.is_empty())
}

/// A Keel snapshot or log segment in `dir` (a `version-2` directory), if any.
fn keel_state_in(dir: &Path) -> Result<Option<PathBuf>, ImportError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(io_error("read", dir)(error)),
    };
    for entry in entries {
        let entry = entry.map_err(io_error("read", dir))?;
        let path = entry.path();
        let name = entry.file_name();
        let named = name
            .to_str()
            .is_some_and(|n| n.starts_with("snapshot.") || n.starts_with("log."));
        if named && path.is_file() && magic_of(&path).is_some_and(|m| KEEL_MAGICS.contains(&m)) {
            return Ok(Some(path));
        }
    }
    Ok(None)
}

fn read_file(path: &Path) -> Result<Vec<u8>, ImportError> {
    std::fs::read(path).map_err(io_error("read", path))
}

/// Rebuilds ZooKeeper's state from `data_dir` (snapshots) and `data_log_dir` (txn logs; the
/// same as `data_dir` when `None`). Each may name the ZooKeeper directory or its `version-2`.
///
/// # Errors
/// No snapshot parses and checks, a log file is damaged before its end, or IO fails.
pub fn import_data_dir(
    data_dir: &Path,
    data_log_dir: Option<&Path>,
) -> Result<Imported, ImportError> {
    let snap_dir = version_dir(data_dir);
    let log_dir = version_dir(data_log_dir.unwrap_or(data_dir));
    let snapshots = list_zk_files(&snap_dir, "snapshot", SNAP_MAGIC)?;
    let mut skipped = Vec::new();
    let mut chosen = None;
    for (zxid, path) in snapshots.iter().rev() {
        let parsed = match path.extension().and_then(|e| e.to_str()) {
            Some("snappy") => Err(ImportError::Compressed {
                path: path.display().to_string(),
            }),
            Some("gz") => read_file(path).and_then(|bytes| {
                files::gunzip(&bytes)
                    .and_then(|bytes| parse_snapshot(&bytes, *zxid))
                    .map_err(in_file(path))
            }),
            _ => read_file(path)
                .and_then(|bytes| parse_snapshot(&bytes, *zxid).map_err(in_file(path))),
        };
        match parsed {
            Ok(snapshot) => {
                chosen = Some((*zxid, path.clone(), snapshot));
                break;
            }
            Err(error) => skipped.push(error.to_string()),
        }
    }
    let Some((snapshot_zxid, snapshot_path, snapshot)) = chosen else {
        return Err(ImportError::NoSnapshot {
            dir: snap_dir.display().to_string(),
            skipped,
        });
    };
    let mut summary = ImportSummary {
        snapshot: snapshot_path,
        snapshot_zxid,
        skipped_snapshots: skipped,
        ..ImportSummary::default()
    };
    let mut tree = snapshot.tree;
    let mut sessions: BTreeMap<i64, i32> = snapshot.sessions.iter().copied().collect();
    let mut last_digest: Option<ZkDigest> = snapshot.digest;

    // FileTxnLog.getLogFiles: the newest log starting at or before the snapshot, and after.
    let logs = list_zk_files(&log_dir, "log", LOG_MAGIC)?;
    let first = logs
        .iter()
        .rposition(|(start, _)| *start <= snapshot_zxid)
        .unwrap_or(0);
    let mut last_zxid = snapshot_zxid;
    for (_, path) in logs.iter().skip(first) {
        let bytes = read_file(path)?;
        let log = parse_txn_log(&bytes).map_err(in_file(path))?;
        if matches!(log.end, LogEnd::Torn { .. }) {
            summary.torn_logs.push(path.clone());
        }
        summary.logs.push(path.clone());
        for entry in &log.entries {
            let zxid = entry.header.zxid;
            if zxid <= last_zxid {
                continue;
            }
            // Within an epoch zxids are consecutive; a new epoch restarts the counter.
            if zxid >> 32 == last_zxid >> 32 && zxid != last_zxid + 1 {
                return Err(ImportError::Gap {
                    path: path.display().to_string(),
                    after: last_zxid,
                    next: zxid,
                });
            }
            last_zxid = zxid;
            track_sessions(&mut sessions, &entry.header, &entry.txn);
            let result = tree.apply(&entry.header, &entry.txn);
            if has_error(&result.result) {
                summary.txns_with_error_result += 1;
            }
            summary.txns_replayed += 1;
            // A failed request's error txn carries no digest and changes nothing: the digest
            // before it still holds. Any other txn without one leaves no digest to compare.
            if entry.digest.is_some() {
                last_digest = entry.digest;
            } else if let (Txn::Error { .. }, Some(digest)) = (&entry.txn, &mut last_digest) {
                digest.zxid = zxid;
            }
        }
    }
    summary.dead_session_ephemerals = kill_dead_sessions(&mut tree, &sessions, last_zxid);
    tree.set_last_zxid(last_zxid);
    summary.digest_matches = last_digest
        .filter(|digest| {
            digest.version == 2 && digest.zxid == last_zxid && summary.dead_session_ephemerals == 0
        })
        .map(|digest| digest::tree_digest(&tree) == digest.digest);
    summary.nodes = tree.node_count_distinct();
    summary.sessions = sessions.len();
    summary.last_zxid = last_zxid;
    Ok(Imported {
        tree,
        sessions: sessions.into_iter().collect(),
        last_zxid,
        summary,
    })
}

fn has_error(result: &OpResult) -> bool {
    match result {
        OpResult::Error(_) => true,
        OpResult::Multi(results) => results.iter().any(has_error),
        _ => false,
    }
}

fn track_sessions(sessions: &mut BTreeMap<i64, i32>, header: &TxnHeader, txn: &Txn) {
    match txn {
        Txn::CreateSession { timeout_ms } => {
            sessions.insert(header.session_id, *timeout_ms);
        }
        Txn::CloseSession { .. } => {
            sessions.remove(&header.session_id);
        }
        _ => {}
    }
}

/// Removes the ephemerals of sessions that are not open (ZooKeeperServer.loadData's
/// `killSession` at the last zxid); returns how many.
fn kill_dead_sessions(tree: &mut DataTree, sessions: &BTreeMap<i64, i32>, zxid: i64) -> usize {
    let mut removed = 0;
    for session_id in tree.session_ids_with_ephemerals() {
        if sessions.contains_key(&session_id) {
            continue;
        }
        let paths = tree.ephemerals(session_id);
        removed += paths.len();
        let header = TxnHeader {
            session_id,
            cxid: 0,
            zxid,
            time_ms: 0,
            op: op::CLOSE_SESSION,
        };
        tree.apply(
            &header,
            &Txn::CloseSession {
                paths_to_delete: paths,
            },
        );
    }
    removed
}

/// Imports ZooKeeper's data into Keel's `keel_data_dir` as a Keel snapshot.
///
/// # Errors
/// Keel's dataDir (or `keel_data_log_dir`) already holds Keel state or ZooKeeper files, the
/// import fails, or the snapshot cannot be written.
pub fn import_into(
    zk_data_dir: &Path,
    zk_data_log_dir: Option<&Path>,
    keel_data_dir: &Path,
    keel_data_log_dir: &Path,
) -> Result<ImportSummary, ImportError> {
    for dir in [keel_data_dir, keel_data_log_dir] {
        let version = dir.join(VERSION_DIR);
        if let Some(path) = keel_state_in(&version)? {
            return Err(ImportError::KeelStateExists(path.display().to_string()));
        }
        if holds_zookeeper_files(&version)? {
            return Err(ImportError::TargetHoldsZooKeeper(
                version.display().to_string(),
            ));
        }
    }
    let imported = import_data_dir(zk_data_dir, zk_data_log_dir)?;
    let info = crate::snapshot::write_snapshot(keel_data_dir, &imported.tree, &imported.sessions)?;
    let mut summary = imported.summary;
    summary.keel_snapshot = Some(info.path);
    Ok(summary)
}

/// On start: if Keel's dataDir or dataLogDir holds ZooKeeper's files and there is no Keel
/// state, moves them (intact) into `version-2/zookeeper-imported/`, imports them from there
/// and writes Keel's snapshot. A start interrupted in between resumes from the moved files.
///
/// # Errors
/// The files cannot be moved, do not import, or the snapshot cannot be written; ZooKeeper's
/// files are then in `zookeeper-imported/`, untouched.
pub fn auto_import(config: &Config) -> Result<Option<ImportSummary>, ImportError> {
    let data_version = config.data_dir.join(VERSION_DIR);
    let log_version = config.data_log_dir.join(VERSION_DIR);
    let zk_here = holds_zookeeper_files(&data_version)? || holds_zookeeper_files(&log_version)?;
    let data_imported = data_version.join(IMPORTED_DIR);
    let log_imported = log_version.join(IMPORTED_DIR);
    let keel_state = match keel_state_in(&data_version)? {
        Some(path) => Some(path),
        None => keel_state_in(&log_version)?,
    };
    if let Some(keel) = keel_state {
        if zk_here {
            tracing::warn!(
                keel = %keel.display(),
                "ZooKeeper files next to Keel state: not imported (Keel state wins)"
            );
        }
        return Ok(None);
    }
    let mut moved_to = Vec::new();
    if zk_here {
        for (from, to) in [
            (&data_version, &data_imported),
            (&log_version, &log_imported),
        ] {
            if move_zookeeper_files(from, to)? > 0 {
                moved_to.push(to.clone());
            }
        }
    } else if !holds_zookeeper_files(&data_imported)? {
        return Ok(None);
    }
    tracing::info!(
        dir = %data_imported.display(),
        "importing Apache ZooKeeper data found in dataDir"
    );
    // ZooKeeper's logs are in its dataLogDir, which defaults to its dataDir: Keel's dataLogDir
    // may hold them, or (when Keel's differs) they came with the snapshots.
    let log_source = if list_zk_files(&log_imported, "log", LOG_MAGIC)?.is_empty() {
        &data_imported
    } else {
        &log_imported
    };
    let imported = import_data_dir(&data_imported, Some(log_source))?;
    let info =
        crate::snapshot::write_snapshot(&config.data_dir, &imported.tree, &imported.sessions)?;
    let mut summary = imported.summary;
    summary.keel_snapshot = Some(info.path);
    summary.moved_to = moved_to;
    for line in summary.to_string().lines() {
        tracing::info!("zookeeper import: {line}");
    }
    Ok(Some(summary))
}

/// Renames ZooKeeper's snapshots and logs from `from` into `to`; returns how many.
fn move_zookeeper_files(from: &Path, to: &Path) -> Result<usize, ImportError> {
    let mut files = list_zk_files(from, "snapshot", SNAP_MAGIC)?;
    files.extend(list_zk_files(from, "log", LOG_MAGIC)?);
    if files.is_empty() {
        return Ok(0);
    }
    std::fs::create_dir_all(to).map_err(io_error("create", to))?;
    for (_, path) in &files {
        let Some(name) = path.file_name() else {
            continue;
        };
        let target = to.join(name);
        std::fs::rename(path, &target).map_err(io_error("rename", path))?;
    }
    for dir in [to, from] {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error("fsync", dir))?;
    }
    Ok(files.len())
}

/// `keel import <zk dataDir> [<zk dataLogDir>] [zoo.cfg] [key=value ...]`: returns the exit
/// status. The zoo.cfg and overrides give Keel's dataDir (and dataLogDir).
pub fn run_cli(args: &[String]) -> i32 {
    let mut zk_dirs = Vec::new();
    let mut cfg_file = None;
    let mut overrides = Vec::new();
    for arg in args {
        let path = Path::new(arg);
        if arg.contains('=') && !path.exists() {
            overrides.push(arg.as_str());
        } else if path.is_file() {
            cfg_file = Some(path);
        } else {
            zk_dirs.push(path);
        }
    }
    let (zk_data_dir, zk_log_dir) = match zk_dirs.as_slice() {
        [data] => (*data, None),
        [data, log] => (*data, Some(*log)),
        _ => {
            eprintln!(
                "usage: keel import <zookeeper dataDir> [<zookeeper dataLogDir>] [zoo.cfg] [key=value ...]"
            );
            return 2;
        }
    };
    if !zk_data_dir.is_dir() {
        eprintln!("keel import: {} is not a directory", zk_data_dir.display());
        return 2;
    }
    let config = match cfg_file {
        Some(file) => Config::from_file(file),
        None => Ok(Config::embedded_default()),
    }
    .and_then(|mut config| {
        for pair in &overrides {
            config.apply_override(pair)?;
        }
        config.validate()?;
        Ok(config)
    });
    let config = match config {
        Ok(config) => config,
        Err(error) => {
            eprintln!("keel import: configuration error: {error}");
            return 2;
        }
    };
    match import_into(
        zk_data_dir,
        zk_log_dir,
        &config.data_dir,
        &config.data_log_dir,
    ) {
        Ok(summary) => {
            println!("{summary}");
            0
        }
        Err(error) => {
            eprintln!("keel import: {error}");
            1
        }
    }
}

mod digest;
