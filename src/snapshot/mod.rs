//! snapshot: the tree and the sessions at one zxid, in a file of Keel's own layout, written
//! without stopping the replica core and loaded by mapping the file.
//!
//! Owns: the file format, writing a snapshot (`write_snapshot`), loading one
//! (`load_snapshot`, `load_newest` with fall-back past damaged files) and retention
//! (`purge_snapshots`).
//! Must not: import `io`, `shard`, `server` or `replica`; panic on any byte of any file;
//! allocate by a count read from disk before checking it against the file's size; publish a
//! snapshot before its bytes are durable.
//! Invariants: a published `snapshot.<hex zxid>` was fsynced before its rename and the rename
//! was fsynced (a crash leaves at most a `.tmp`, removed at start); its header names the zxid
//! of its name; every section's CRC32C matches; loading it gives a tree equal to the one
//! written (`tests`), with every index rebuilt by `TreeBuilder`.
//!
//! Why this is cheap to take: the tree is persistent, so the replica core hands a clone — an
//! O(1) view at an exact zxid, not a fuzzy one — to a background thread and goes on applying
//! writes; the thread walks that view and writes the file.
//!
//! Layout, in `<dataDir>/version-2/snapshot.<last zxid, lowercase hex>` (ZooKeeper's naming;
//! ZooKeeper's own snapshots start with "ZKSN", ours with "KSNP"); integers little-endian,
//! every section 8-byte aligned so that it is read in place with bytemuck:
//! - bytes 0..4096: `Header` (magic, version, zxid, section offsets, counts and CRC32Cs, and a
//!   CRC32C of the header itself), zeros after it. Written last.
//! - node table at 4096: one 96-byte `NodeRecord` per znode in pre-order (parent first,
//!   children in name order), each with its depth (root 0), persisted stat, kind, ACL index
//!   and the heap offsets of its name and data.
//! - heap: names, data and encoded ACL lists, back to back.
//! - ACL table: one `AclRecord` per distinct ACL list (heap offset, bytes, entries).
//! - session table: one `SessionRecord` (id, timeout) per open session.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::cast_possible_truncation
    )
)]

#[cfg(test)]
mod tests;

use crate::proto::Acl;
use crate::tree::{DataTree, NodeKind, RestoreError, StoredStat, TreeBuilder};
use bytemuck::{Pod, Zeroable};
use std::cell::Cell;
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The directory under dataDir, as ZooKeeper names it.
pub const VERSION_DIR: &str = "version-2";
pub const MAGIC: [u8; 4] = *b"KSNP";
const FORMAT_VERSION: u32 = 1;
const HEADER_BYTES: u64 = HEADER_BLOCK_BYTES as u64;
const HEADER_BLOCK_BYTES: usize = 4096;
/// Buffered bytes per section before a positioned write.
const WRITE_BUFFER_BYTES: usize = 1 << 20;
/// The same for a paced write: smaller chunks spread its disk traffic more evenly.
const PACED_WRITE_BUFFER_BYTES: usize = 256 << 10;
/// The longest single pause of a paced write (a pause is cut into pieces no longer than it).
const PACE_SLEEP_MAX: Duration = Duration::from_millis(100);
/// A snapshot bigger than this is refused on load (a damaged size field, not a real tree).
const FILE_BYTES_MAX: u64 = 1 << 40;

const _: () = assert!(
    cfg!(target_endian = "little"),
    "the layout is read in place"
);
const _: () = assert!(std::mem::size_of::<Header>() <= HEADER_BLOCK_BYTES);
const _: () = assert!(std::mem::size_of::<NodeRecord>() == 96);
const _: () = assert!(std::mem::size_of::<AclRecord>() == 16);
const _: () = assert!(std::mem::size_of::<SessionRecord>() == 16);

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct Header {
    magic: [u8; 4],
    version: u32,
    last_zxid: i64,
    node_count: u64,
    nodes_offset: u64,
    heap_offset: u64,
    heap_bytes: u64,
    acls_offset: u64,
    acl_count: u64,
    sessions_offset: u64,
    session_count: u64,
    file_bytes: u64,
    nodes_crc: u32,
    heap_crc: u32,
    acls_crc: u32,
    sessions_crc: u32,
    pad: u32,
    /// CRC32C of every byte of the header before this field.
    header_crc: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct NodeRecord {
    czxid: i64,
    mzxid: i64,
    pzxid: i64,
    ctime_ms: i64,
    mtime_ms: i64,
    ephemeral_owner: i64,
    name_offset: u64,
    data_offset: u64,
    version: i32,
    cversion: i32,
    aversion: i32,
    acl_index: u32,
    name_bytes: u32,
    data_bytes: u32,
    depth: u32,
    kind: u8,
    has_data: u8,
    pad: [u8; 2],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct AclRecord {
    heap_offset: u64,
    bytes: u32,
    entries: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct SessionRecord {
    id: i64,
    timeout_ms: i32,
    pad: u32,
}

/// Why a snapshot could not be written or loaded.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{path}: damaged snapshot: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("{path}: the snapshot's nodes do not form a tree: {source}")]
    Tree {
        path: String,
        #[source]
        source: RestoreError,
    },
    #[error("the tree changed while it was written: {0}")]
    Inconsistent(&'static str),
}

/// What a finished snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub path: PathBuf,
    pub zxid: i64,
    pub file_bytes: u64,
    pub nodes: u64,
    pub sessions: u64,
}

/// A loaded snapshot: the tree at `zxid` and the sessions open then (id, timeout).
#[derive(Debug)]
pub struct LoadedSnapshot {
    pub tree: DataTree,
    pub sessions: Vec<(i64, i32)>,
    pub info: SnapshotInfo,
}

/// `snapshot.<zxid in lowercase hex>`, ZooKeeper's naming.
pub fn snapshot_name(zxid: i64) -> String {
    format!("snapshot.{zxid:x}")
}

/// The zxid a snapshot file name stands for; `None` for any other name (`.tmp` included).
pub fn parse_snapshot_name(name: &str) -> Option<i64> {
    let hex = name.strip_prefix("snapshot.")?;
    let canonical =
        !hex.is_empty() && hex.len() <= 16 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    // Two's complement, as Java prints a negative long.
    canonical
        .then(|| u64::from_str_radix(hex, 16).ok().map(|bits| bits as i64))
        .flatten()
}

fn io_error(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SnapshotError {
    let path = path.display().to_string();
    move |source| SnapshotError::Io { op, path, source }
}

fn align8(offset: u64) -> u64 {
    offset.div_ceil(8) * 8
}

// ---------------------------------------------------------------------------------------------
// Writing.

/// How fast a snapshot may write. Unpaced is for snapshots nothing waits behind (import,
/// tests); a server pacing its background snapshots keeps the disk free for the log.
///
/// Why: unpaced, a 1M-znode snapshot is a half-second burst of tree walking, copying 206 MB
/// into the page cache and write-back, which the log's fdatasync queues behind and which
/// competes with the executors for 2 cores. Measured on the 2-vCPU VM: a loop of 4 KiB
/// O_DIRECT writes, each fdatasynced, beside a model of this writer (buffered 1 MiB chunks, sync_file_range)
/// had a p99.9 of 67-72 ms against 3-9 ms alone, and 8-12 ms beside one paced to ~125 MB/s;
/// with the disk out (tmpfs, `benches/snapshot_stall.sh`, 4 rounds) the median p99.9 of a
/// 32x16 mixed load under back-to-back snapshots went from 85 ms unpaced to 58 ms paced
/// (23-47 ms with snapshots off). The same fdatasync check with this writer
/// (`tests/snapshot_fixture.rs`) was within the noise of a disk shared with other work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    Unpaced,
    BytesPerSecond(u64),
}

/// Spreads the writes of one snapshot file over time at a `Pace`: after each chunk, sleeps
/// until the bytes written so far are no more than the pace allows since the start.
struct Pacer {
    pace: Pace,
    started: Instant,
    bytes: Cell<u64>,
}

impl Pacer {
    fn new(pace: Pace) -> Pacer {
        Pacer {
            pace,
            started: Instant::now(),
            bytes: Cell::new(0),
        }
    }

    fn chunk_bytes(&self) -> usize {
        match self.pace {
            Pace::Unpaced => WRITE_BUFFER_BYTES,
            Pace::BytesPerSecond(_) => PACED_WRITE_BUFFER_BYTES,
        }
    }

    /// Counts `bytes` written and waits until the pace allows the next chunk.
    fn wrote(&self, bytes: u64) {
        let Pace::BytesPerSecond(rate) = self.pace else {
            return;
        };
        let total = self.bytes.get().saturating_add(bytes);
        self.bytes.set(total);
        let due = Duration::from_secs_f64(total as f64 / rate.max(1) as f64);
        while let Some(ahead) = due.checked_sub(self.started.elapsed()) {
            if ahead.is_zero() {
                break;
            }
            std::thread::sleep(ahead.min(PACE_SLEEP_MAX));
        }
    }
}

/// Where a snapshot is written: a file, or memory (an ensemble leader's snapshot, which its
/// zab store persists and sends as it is).
#[derive(Clone, Copy)]
enum Target<'a> {
    File(&'a File),
    Memory(&'a std::cell::RefCell<Vec<u8>>),
}

impl Target<'_> {
    fn write_at(self, bytes: &[u8], at: u64) -> io::Result<()> {
        match self {
            Target::File(file) => file.write_all_at(bytes, at),
            Target::Memory(memory) => {
                let mut memory = memory.borrow_mut();
                let start = usize::try_from(at).map_err(|_| too_large())?;
                let end = start.checked_add(bytes.len()).ok_or_else(too_large)?;
                if memory.len() < end {
                    memory.resize(end, 0);
                }
                memory
                    .get_mut(start..end)
                    .ok_or_else(too_large)?
                    .copy_from_slice(bytes);
                Ok(())
            }
        }
    }

    fn set_len(self, bytes: u64) -> io::Result<()> {
        match self {
            Target::File(file) => file.set_len(bytes),
            Target::Memory(memory) => {
                let bytes = usize::try_from(bytes).map_err(|_| too_large())?;
                memory.borrow_mut().resize(bytes, 0);
                Ok(())
            }
        }
    }
}

fn too_large() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "beyond memory")
}

/// One section of the file being written: buffered, positioned writes and a running CRC.
struct Section<'a> {
    target: Target<'a>,
    pacer: &'a Pacer,
    start: u64,
    written: u64,
    buffer: Vec<u8>,
    crc: u32,
    /// The previous flush's (offset, bytes), whose write-back this flush waits for.
    in_write_back: Option<(u64, u64)>,
}

impl<'a> Section<'a> {
    fn new(target: Target<'a>, pacer: &'a Pacer, start: u64) -> Section<'a> {
        Section {
            target,
            pacer,
            start,
            written: 0,
            buffer: Vec::with_capacity(pacer.chunk_bytes()),
            crc: 0,
            in_write_back: None,
        }
    }

    fn push(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, bytes);
        self.buffer.extend_from_slice(bytes);
        self.written += bytes.len() as u64;
        if self.buffer.len() >= self.pacer.chunk_bytes() {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the buffer out and starts its write-back at once, then waits for the previous
    /// chunk's: a snapshot keeps about two chunks dirty instead of hundreds of megabytes,
    /// which the final fsync — and every WAL fdatasync on the same disk meanwhile — would
    /// otherwise wait behind.
    fn flush(&mut self) -> io::Result<()> {
        let buffered = self.buffer.len() as u64;
        let at = self.start + self.written - buffered;
        self.target.write_at(&self.buffer, at)?;
        self.buffer.clear();
        if let Target::File(file) = self.target {
            write_back(file, at, buffered, libc::SYNC_FILE_RANGE_WRITE);
            if let Some((previous_at, previous_bytes)) = self.in_write_back.replace((at, buffered))
            {
                let wait = libc::SYNC_FILE_RANGE_WAIT_BEFORE
                    | libc::SYNC_FILE_RANGE_WRITE
                    | libc::SYNC_FILE_RANGE_WAIT_AFTER;
                write_back(file, previous_at, previous_bytes, wait);
            }
        }
        self.pacer.wrote(buffered);
        Ok(())
    }

    fn end(&self) -> u64 {
        self.start + self.written
    }
}

/// The running state of one snapshot write: sections, the ACL table, the first error.
struct Writer<'a> {
    nodes: Section<'a>,
    heap: Section<'a>,
    acl_records: Vec<AclRecord>,
    acl_indexes: HashMap<*const Acl, u32>,
    node_count: u64,
}

impl Writer<'_> {
    fn node(&mut self, depth: usize, name: &str, node: crate::tree::NodeRef<'_>) -> io::Result<()> {
        let acl_index = self.acl_index(node.acl())?;
        let stat = node.stored_stat();
        let name_offset = self.heap.written;
        self.heap.push(name.as_bytes())?;
        let data_offset = self.heap.written;
        let data = node.data().map(|data| &data[..]);
        self.heap.push(data.unwrap_or_default())?;
        let record = NodeRecord {
            czxid: stat.czxid,
            mzxid: stat.mzxid,
            pzxid: stat.pzxid,
            ctime_ms: stat.ctime_ms,
            mtime_ms: stat.mtime_ms,
            ephemeral_owner: stat.ephemeral_owner,
            name_offset,
            data_offset,
            version: stat.version,
            cversion: stat.cversion,
            aversion: stat.aversion,
            acl_index,
            name_bytes: u32_len(name.len())?,
            data_bytes: u32_len(data.map_or(0, <[u8]>::len))?,
            depth: u32_len(depth)?,
            kind: kind_code(stat.kind),
            has_data: u8::from(data.is_some()),
            pad: [0; 2],
        };
        self.nodes.push(bytemuck::bytes_of(&record))?;
        self.node_count += 1;
        Ok(())
    }

    fn acl_index(&mut self, acl: &Arc<[Acl]>) -> io::Result<u32> {
        let key = Arc::as_ptr(acl) as *const Acl;
        if let Some(index) = self.acl_indexes.get(&key) {
            return Ok(*index);
        }
        let heap_offset = self.heap.written;
        for entry in acl.iter() {
            self.heap.push(&entry.perms.to_le_bytes())?;
            for text in [&*entry.id.scheme, &*entry.id.id] {
                self.heap.push(&u32_len(text.len())?.to_le_bytes())?;
                self.heap.push(text.as_bytes())?;
            }
        }
        let index = u32_len(self.acl_records.len())?;
        self.acl_records.push(AclRecord {
            heap_offset,
            bytes: u32_len(usize::try_from(self.heap.written - heap_offset).unwrap_or(usize::MAX))?,
            entries: u32_len(acl.len())?,
        });
        self.acl_indexes.insert(key, index);
        Ok(index)
    }
}

/// `sync_file_range` over a written range: pacing only. Durability comes from the fsync
/// before the rename, so a failure here (or a filesystem without it) changes nothing.
/// The zab store's snapshot and log writes use it too.
pub(crate) fn write_back(file: &File, at: u64, bytes: u64, flags: libc::c_uint) {
    use std::os::fd::AsRawFd;
    let (Ok(at), Ok(bytes)) = (libc::off64_t::try_from(at), libc::off64_t::try_from(bytes)) else {
        return;
    };
    // SAFETY: a plain syscall on a file descriptor we own; it reads no memory of ours.
    let _ = unsafe { libc::sync_file_range(file.as_raw_fd(), at, bytes, flags) };
}

fn u32_len(len: usize) -> io::Result<u32> {
    u32::try_from(len).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "over 4 GiB"))
}

fn kind_code(kind: NodeKind) -> u8 {
    match kind {
        NodeKind::Persistent => 0,
        NodeKind::Ephemeral => 1,
        NodeKind::Container => 2,
        NodeKind::Ttl => 3,
    }
}

fn kind_from_code(code: u8) -> Option<NodeKind> {
    Some(match code {
        0 => NodeKind::Persistent,
        1 => NodeKind::Ephemeral,
        2 => NodeKind::Container,
        3 => NodeKind::Ttl,
        _ => return None,
    })
}

/// Writes the snapshot of `tree` (at `tree.last_zxid()`) and `sessions` (id, timeout) into
/// `<data_dir>/version-2/`: a `.tmp` file, fsynced, renamed, the directory fsynced. A failure
/// leaves no published file (the `.tmp` is removed if it can be).
///
/// # Errors
/// Any IO error, or `Inconsistent` if the tree's node count disagrees with its walk.
pub fn write_snapshot(
    data_dir: &Path,
    tree: &DataTree,
    sessions: &[(i64, i32)],
) -> Result<SnapshotInfo, SnapshotError> {
    write_snapshot_paced(data_dir, tree, sessions, Pace::Unpaced)
}

/// `write_snapshot` with its disk writes spread out at `pace` (see `Pace`).
///
/// # Errors
/// As `write_snapshot`.
pub fn write_snapshot_paced(
    data_dir: &Path,
    tree: &DataTree,
    sessions: &[(i64, i32)],
    pace: Pace,
) -> Result<SnapshotInfo, SnapshotError> {
    let dir = data_dir.join(VERSION_DIR);
    std::fs::create_dir_all(&dir).map_err(io_error("create", &dir))?;
    let zxid = tree.last_zxid();
    let path = dir.join(snapshot_name(zxid));
    let tmp = dir.join(format!("{}.tmp", snapshot_name(zxid)));
    let result = write_file(&tmp, tree, sessions, pace).and_then(|info| {
        std::fs::rename(&tmp, &path).map_err(io_error("rename", &tmp))?;
        sync_dir(&dir)?;
        Ok(SnapshotInfo { path, ..info })
    });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn sync_dir(dir: &Path) -> Result<(), SnapshotError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(io_error("fsync", dir))
}

fn write_file(
    tmp: &Path,
    tree: &DataTree,
    sessions: &[(i64, i32)],
    pace: Pace,
) -> Result<SnapshotInfo, SnapshotError> {
    let file = File::create(tmp).map_err(io_error("create", tmp))?;
    let header =
        write_to(Target::File(&file), tree, sessions, pace).map_err(|error| match error {
            WriteError::Io(source) => io_error("write", tmp)(source),
            WriteError::Inconsistent(reason) => SnapshotError::Inconsistent(reason),
        })?;
    file.sync_all().map_err(io_error("fsync", tmp))?;
    Ok(SnapshotInfo {
        path: tmp.to_path_buf(),
        zxid: header.last_zxid,
        file_bytes: header.file_bytes,
        nodes: header.node_count,
        sessions: header.session_count,
    })
}

/// The bytes of the snapshot of `tree` (at `tree.last_zxid()`) and `sessions`, as
/// `write_snapshot` would write them to a file, built in memory. For an ensemble leader:
/// its zab store persists them (once) and sends them to learners as they are.
///
/// # Errors
/// `Inconsistent` if the tree's node count disagrees with its walk; `Io` for a snapshot
/// beyond what memory can address.
pub fn snapshot_bytes(tree: &DataTree, sessions: &[(i64, i32)]) -> Result<Vec<u8>, SnapshotError> {
    // Room for the whole snapshot at once: grown chunk by chunk, a 180 MB buffer was copied
    // into twice its size at every doubling, each time into fresh memory.
    let memory = std::cell::RefCell::new(Vec::with_capacity(estimated_bytes(tree, sessions)));
    write_to(Target::Memory(&memory), tree, sessions, Pace::Unpaced).map_err(
        |error| match error {
            WriteError::Io(source) => io_error("build", Path::new("memory"))(source),
            WriteError::Inconsistent(reason) => SnapshotError::Inconsistent(reason),
        },
    )?;
    Ok(memory.into_inner())
}

/// About what `snapshot_bytes` makes of `tree`: its records, plus its data and paths (names
/// are shorter than paths, and ACLs are few), plus its sessions.
fn estimated_bytes(tree: &DataTree, sessions: &[(i64, i32)]) -> usize {
    let records = tree.node_count_distinct() as u64 * std::mem::size_of::<NodeRecord>() as u64;
    let sessions = sessions.len() as u64 * 16;
    let bytes = HEADER_BYTES + records + tree.approximate_data_size() + sessions;
    usize::try_from(bytes).unwrap_or(0)
}

enum WriteError {
    Io(io::Error),
    Inconsistent(&'static str),
}

impl From<io::Error> for WriteError {
    fn from(error: io::Error) -> WriteError {
        WriteError::Io(error)
    }
}

/// Writes every section, then the header, to `target`; returns the header.
fn write_to(
    target: Target<'_>,
    tree: &DataTree,
    sessions: &[(i64, i32)],
    pace: Pace,
) -> Result<Header, WriteError> {
    let pacer = Pacer::new(pace);
    let node_count = tree.node_count_distinct() as u64;
    let record_bytes = std::mem::size_of::<NodeRecord>() as u64;
    let heap_offset = HEADER_BYTES + node_count * record_bytes;
    let mut writer = Writer {
        nodes: Section::new(target, &pacer, HEADER_BYTES),
        heap: Section::new(target, &pacer, heap_offset),
        acl_records: Vec::new(),
        acl_indexes: HashMap::new(),
        node_count: 0,
    };
    let mut failure: Option<io::Error> = None;
    tree.walk_names(|depth, name, node| {
        if failure.is_none() {
            failure = writer.node(depth, name, node).err();
        }
    });
    if let Some(error) = failure {
        return Err(WriteError::Io(error));
    }
    if writer.node_count != node_count || writer.nodes.end() != heap_offset {
        return Err(WriteError::Inconsistent("node count != nodes walked"));
    }
    let (mut nodes, mut heap) = (writer.nodes, writer.heap);
    nodes.flush()?;
    heap.flush()?;
    let mut acls = Section::new(target, &pacer, align8(heap.end()));
    for record in &writer.acl_records {
        acls.push(bytemuck::bytes_of(record))?;
    }
    acls.flush()?;
    let mut session_section = Section::new(target, &pacer, align8(acls.end()));
    for &(id, timeout_ms) in sessions {
        let record = SessionRecord {
            id,
            timeout_ms,
            pad: 0,
        };
        session_section.push(bytemuck::bytes_of(&record))?;
    }
    session_section.flush()?;
    let mut header = Header {
        magic: MAGIC,
        version: FORMAT_VERSION,
        last_zxid: tree.last_zxid(),
        node_count,
        nodes_offset: HEADER_BYTES,
        heap_offset,
        heap_bytes: heap.written,
        acls_offset: acls.start,
        acl_count: writer.acl_records.len() as u64,
        sessions_offset: session_section.start,
        session_count: sessions.len() as u64,
        file_bytes: session_section.end(),
        nodes_crc: nodes.crc,
        heap_crc: heap.crc,
        acls_crc: acls.crc,
        sessions_crc: session_section.crc,
        header_crc: 0,
        pad: 0,
    };
    header.header_crc = header_crc(&header);
    target.write_at(bytemuck::bytes_of(&header), 0)?;
    target.set_len(header.file_bytes)?;
    Ok(header)
}

fn header_crc(header: &Header) -> u32 {
    let bytes = bytemuck::bytes_of(header);
    let covered = std::mem::offset_of!(Header, header_crc);
    crc32c::crc32c(bytes.get(..covered).unwrap_or_default())
}

// ---------------------------------------------------------------------------------------------
// Loading.

/// Loads and checks one snapshot file.
///
/// # Errors
/// `Io` if it cannot be read; `Corrupt` or `Tree` if any check fails.
pub fn load_snapshot(path: &Path) -> Result<LoadedSnapshot, SnapshotError> {
    let file = File::open(path).map_err(io_error("open", path))?;
    let file_bytes = file.metadata().map_err(io_error("stat", path))?.len();
    if !(HEADER_BYTES..=FILE_BYTES_MAX).contains(&file_bytes) {
        return Err(corrupt(path, "file size out of range"));
    }
    // SAFETY: the mapping is read-only and Keel never writes a published snapshot; another
    // process truncating it under us is outside what a data directory may suffer.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(io_error("mmap", path))?;
    let _ = map.advise(memmap2::Advice::Sequential);
    let loaded = load_mapped(&map, path)?;
    let name_zxid = path
        .file_name()
        .and_then(|name| name.to_str())
        .and_then(parse_snapshot_name);
    if name_zxid.is_some_and(|zxid| zxid != loaded.info.zxid) {
        return Err(corrupt(path, "header zxid differs from the file name"));
    }
    Ok(loaded)
}

/// Loads and checks a snapshot held in memory (one a leader sent), with a file's checks but
/// its name's; `origin` names it in errors and in the returned info. Bytes that are not
/// 8-byte aligned (bytemuck views the records in place) are copied to an aligned buffer.
///
/// # Errors
/// `Corrupt` or `Tree` if any check fails.
pub fn load_snapshot_bytes(bytes: &[u8], origin: &Path) -> Result<LoadedSnapshot, SnapshotError> {
    if !(HEADER_BYTES..=FILE_BYTES_MAX).contains(&(bytes.len() as u64)) {
        return Err(corrupt(origin, "size out of range"));
    }
    if bytes.as_ptr().align_offset(std::mem::align_of::<u64>()) == 0 {
        return load_mapped(bytes, origin);
    }
    let mut aligned = vec![0u64; bytes.len().div_ceil(8)];
    let (copy, _) = bytemuck::cast_slice_mut::<u64, u8>(&mut aligned).split_at_mut(bytes.len());
    copy.copy_from_slice(bytes);
    load_mapped(copy, origin)
}

fn corrupt(path: &Path, reason: &str) -> SnapshotError {
    SnapshotError::Corrupt {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// The checks and the tree of a whole snapshot in `map` (8-byte aligned), from `path`.
fn load_mapped(map: &[u8], path: &Path) -> Result<LoadedSnapshot, SnapshotError> {
    load_mapped_with(map, path, Parallel::for_this_thread())
}

fn load_mapped_with(
    map: &[u8],
    path: &Path,
    parallel: Parallel,
) -> Result<LoadedSnapshot, SnapshotError> {
    let file_bytes = map.len() as u64;
    let corrupt = |reason: &str| corrupt(path, reason);
    let header = read_header(map, file_bytes).map_err(corrupt)?;
    let sections = Sections::check(map, &header).map_err(corrupt)?;
    let acls = sections.acls().map_err(corrupt)?;
    let tree = sections
        .tree(&acls, header.last_zxid, parallel)
        .map_err(|error| match error {
            LoadError::Corrupt(reason) => corrupt(reason),
            LoadError::Tree(source) => SnapshotError::Tree {
                path: path.display().to_string(),
                source,
            },
        })?;
    let sessions = sections
        .sessions
        .iter()
        .map(|record| (record.id, record.timeout_ms))
        .collect();
    Ok(LoadedSnapshot {
        tree,
        sessions,
        info: SnapshotInfo {
            path: path.to_path_buf(),
            zxid: header.last_zxid,
            file_bytes,
            nodes: header.node_count,
            sessions: header.session_count,
        },
    })
}

fn read_header(map: &[u8], file_bytes: u64) -> Result<Header, &'static str> {
    let bytes = map
        .get(..std::mem::size_of::<Header>())
        .ok_or("shorter than its header")?;
    let header: Header = bytemuck::pod_read_unaligned(bytes);
    if header.magic != MAGIC {
        return Err("not a Keel snapshot (bad magic)");
    }
    if header.version != FORMAT_VERSION {
        return Err("unknown format version");
    }
    if header.header_crc != header_crc(&header) {
        return Err("header CRC mismatch");
    }
    let after_header = map.get(std::mem::size_of::<Header>()..HEADER_BLOCK_BYTES);
    if !after_header.is_some_and(|bytes| bytes.iter().all(|byte| *byte == 0)) {
        return Err("non-zero bytes after the header");
    }
    if header.file_bytes != file_bytes {
        return Err("file size differs from the header (cut or extended)");
    }
    Ok(header)
}

enum LoadError {
    Corrupt(&'static str),
    Tree(RestoreError),
}

/// The checked sections of a mapped snapshot, viewed in place.
struct Sections<'a> {
    nodes: &'a [NodeRecord],
    heap: &'a [u8],
    acls: &'a [AclRecord],
    sessions: &'a [SessionRecord],
}

/// The bytes `offset .. offset + count * size` of `map`, if in bounds.
fn section(map: &[u8], offset: u64, count: u64, size: usize) -> Option<&[u8]> {
    let bytes = count.checked_mul(size as u64)?;
    let start = usize::try_from(offset).ok()?;
    let end = usize::try_from(offset.checked_add(bytes)?).ok()?;
    map.get(start..end)
}

impl<'a> Sections<'a> {
    fn check(map: &'a [u8], header: &Header) -> Result<Sections<'a>, &'static str> {
        let record_bytes = std::mem::size_of::<NodeRecord>();
        let ordered = header.nodes_offset == HEADER_BYTES
            && Some(header.heap_offset)
                == header
                    .node_count
                    .checked_mul(record_bytes as u64)
                    .and_then(|bytes| bytes.checked_add(HEADER_BYTES))
            && header.heap_offset.checked_add(header.heap_bytes) <= Some(header.acls_offset)
            && header.acls_offset <= header.sessions_offset
            && header.acls_offset.is_multiple_of(8)
            && header.sessions_offset.is_multiple_of(8);
        if !ordered {
            return Err("section offsets out of order");
        }
        let nodes = section(map, header.nodes_offset, header.node_count, record_bytes);
        let heap = section(map, header.heap_offset, header.heap_bytes, 1);
        let acls = section(map, header.acls_offset, header.acl_count, 16);
        let sessions = section(map, header.sessions_offset, header.session_count, 16);
        let (Some(nodes), Some(heap), Some(acls), Some(sessions)) = (nodes, heap, acls, sessions)
        else {
            return Err("a section runs past the end of the file");
        };
        let crcs = [
            (nodes, header.nodes_crc),
            (heap, header.heap_crc),
            (acls, header.acls_crc),
            (sessions, header.sessions_crc),
        ];
        if crcs
            .iter()
            .any(|(bytes, crc)| crc32c::crc32c(bytes) != *crc)
        {
            return Err("section CRC mismatch");
        }
        let misaligned = "section misaligned";
        Ok(Sections {
            nodes: bytemuck::try_cast_slice(nodes).map_err(|_| misaligned)?,
            heap,
            acls: bytemuck::try_cast_slice(acls).map_err(|_| misaligned)?,
            sessions: bytemuck::try_cast_slice(sessions).map_err(|_| misaligned)?,
        })
    }

    fn heap_bytes(&self, offset: u64, bytes: u64) -> Option<&'a [u8]> {
        section(self.heap, offset, bytes, 1)
    }

    fn acls(&self) -> Result<Vec<Arc<[Acl]>>, &'static str> {
        let mut lists = Vec::with_capacity(self.acls.len());
        for record in self.acls {
            let bytes = self
                .heap_bytes(record.heap_offset, u64::from(record.bytes))
                .ok_or("ACL outside the heap")?;
            let list = decode_acl(bytes, record.entries).ok_or("malformed ACL list")?;
            lists.push(Arc::from(list));
        }
        Ok(lists)
    }

    /// The tree of every node record. A big snapshot is built by several threads: each
    /// builds a share of the children of one node (`LoadSplit`), grafted in order.
    fn tree(
        &self,
        acls: &[Arc<[Acl]>],
        last_zxid: i64,
        parallel: Parallel,
    ) -> Result<DataTree, LoadError> {
        let mut builder = TreeBuilder::new();
        let Some(split) = self.split(parallel) else {
            self.add_nodes(&mut builder, self.nodes, acls)?;
            return builder.finish(last_zxid).map_err(LoadError::Tree);
        };
        let (Some(first), Some(last)) = (split.shares.first(), split.shares.last()) else {
            return Err(LoadError::Corrupt("empty load split"));
        };
        let (before, after) = (0..first.start, last.end..self.nodes.len());
        let build_share = |share: &std::ops::Range<usize>| {
            let mut builder = TreeBuilder::for_children_of(
                &split.parent_path,
                split.parent_depth,
                split.parent_kind,
            );
            let nodes = self.nodes.get(share.clone()).unwrap_or_default();
            self.add_nodes(&mut builder, nodes, acls)?;
            builder
                .into_subtrees(split.parent_depth)
                .map_err(LoadError::Tree)
        };
        std::thread::scope(|scope| {
            // A share whose thread cannot be started is built here, in its turn.
            let handles: Vec<_> = split
                .shares
                .iter()
                .map(|share| {
                    std::thread::Builder::new()
                        .name("keel-snap-share".into())
                        .spawn_scoped(scope, move || build_share(share))
                        .map_err(|_| share)
                })
                .collect();
            let mine = self.add_nodes(
                &mut builder,
                self.nodes.get(before).unwrap_or_default(),
                acls,
            );
            // Every share is joined before any error returns: none is left running.
            let shares: Vec<_> = handles
                .into_iter()
                .map(|handle| match handle {
                    Ok(handle) => handle
                        .join()
                        .unwrap_or(Err(LoadError::Corrupt("a load thread panicked"))),
                    Err(share) => build_share(share),
                })
                .collect();
            mine?;
            for share in shares {
                builder
                    .graft(split.parent_depth, share?)
                    .map_err(LoadError::Tree)?;
            }
            let rest = self.nodes.get(after).unwrap_or_default();
            self.add_nodes(&mut builder, rest, acls)?;
            builder.finish(last_zxid).map_err(LoadError::Tree)
        })
    }

    fn add_nodes(
        &self,
        builder: &mut TreeBuilder,
        nodes: &[NodeRecord],
        acls: &[Arc<[Acl]>],
    ) -> Result<(), LoadError> {
        for record in nodes {
            let depth = usize::try_from(record.depth).unwrap_or(usize::MAX);
            let name = self.name(record).ok_or(LoadError::Corrupt(
                "node name outside the heap or not UTF-8",
            ))?;
            let data_bytes = self
                .heap_bytes(record.data_offset, u64::from(record.data_bytes))
                .ok_or(LoadError::Corrupt("node data outside the heap"))?;
            let data = (record.has_data != 0).then(|| Arc::from(data_bytes));
            let acl = usize::try_from(record.acl_index)
                .ok()
                .and_then(|index| acls.get(index))
                .ok_or(LoadError::Corrupt("node ACL index out of range"))?;
            let kind = kind_from_code(record.kind).ok_or(LoadError::Corrupt("bad node kind"))?;
            let stat = StoredStat {
                czxid: record.czxid,
                mzxid: record.mzxid,
                pzxid: record.pzxid,
                ctime_ms: record.ctime_ms,
                mtime_ms: record.mtime_ms,
                ephemeral_owner: record.ephemeral_owner,
                version: record.version,
                cversion: record.cversion,
                aversion: record.aversion,
                kind,
            };
            builder
                .add_at_depth(depth, name, stat, data, acl)
                .map_err(LoadError::Tree)?;
        }
        Ok(())
    }

    fn name(&self, record: &NodeRecord) -> Option<&'a str> {
        self.heap_bytes(record.name_offset, u64::from(record.name_bytes))
            .and_then(|bytes| std::str::from_utf8(bytes).ok())
    }

    /// How `parallel.threads` threads share the load, or `None` to load on this one: too few
    /// nodes, or a shape with no node whose children split well. Goes down from the root
    /// while one child holds more than half of the subtree, then cuts that node's children
    /// into runs of about `nodes / threads` records: the first run stays with this thread,
    /// with every node outside the split node's subtree. Never fails on bad records: a
    /// shape it does not follow gives `None`, and the one-thread load reports the fault.
    fn split(&self, parallel: Parallel) -> Option<LoadSplit> {
        let (nodes, threads) = (self.nodes, parallel.threads);
        if threads < 2 || nodes.len() < parallel.nodes_min || nodes.first()?.depth != 0 {
            return None;
        }
        let (mut parent, mut parent_path) = (0usize, String::new());
        for _ in 0..SPLIT_DESCENTS_MAX {
            let depth = nodes.get(parent)?.depth;
            let child_depth = depth.checked_add(1)?;
            // One pass over the subtree: where it ends, and where each child starts.
            let (mut end, mut starts) = (nodes.len(), Vec::new());
            for (at, record) in nodes.iter().enumerate().skip(parent + 1) {
                if record.depth <= depth {
                    end = at;
                    break;
                }
                if record.depth == child_depth {
                    starts.push(at);
                }
            }
            if starts.first() != Some(&(parent + 1)) {
                return None;
            }
            let size = |index: usize| -> usize {
                let from = starts.get(index).copied().unwrap_or(end);
                starts.get(index + 1).copied().unwrap_or(end) - from
            };
            let biggest = (0..starts.len()).max_by_key(|&index| size(index))?;
            if size(biggest) * 2 > end - parent - 1 && size(biggest) > 1 {
                parent = *starts.get(biggest)?;
                parent_path.push('/');
                parent_path.push_str(self.name(nodes.get(parent)?)?);
                continue;
            }
            let mut cuts: Vec<usize> = (1..threads)
                .filter_map(|share| {
                    let ideal = nodes.len() * share / threads;
                    let at = starts.partition_point(|&start| start < ideal);
                    starts.get(at).copied()
                })
                .collect();
            cuts.dedup();
            if cuts.is_empty() {
                return None;
            }
            cuts.push(end);
            return Some(LoadSplit {
                parent_path,
                parent_depth: usize::try_from(depth).ok()?,
                parent_kind: kind_from_code(nodes.get(parent)?.kind)?,
                shares: cuts
                    .iter()
                    .zip(cuts.iter().skip(1))
                    .map(|(&a, &b)| a..b)
                    .collect(),
            });
        }
        None
    }
}

/// How many threads may load one snapshot, and from how many nodes on.
#[derive(Clone, Copy, Debug)]
struct Parallel {
    threads: usize,
    nodes_min: usize,
}

impl Parallel {
    /// Up to 4 threads, as many as this thread may run on, for 100,000 nodes or more: a
    /// 900k-node load is ~0.45 s of CPU (a fifth of it faulting in fresh memory).
    fn for_this_thread() -> Parallel {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Parallel {
            threads: threads.min(4),
            nodes_min: 100_000,
        }
    }
}

/// How deep `Sections::split` looks for the node to split (each level scans its subtree).
const SPLIT_DESCENTS_MAX: usize = 16;

/// The node whose children a load shares out, and the runs of records (each a whole number
/// of its children with their subtrees) that other threads build.
struct LoadSplit {
    parent_path: String,
    parent_depth: usize,
    parent_kind: NodeKind,
    shares: Vec<std::ops::Range<usize>>,
}

/// An encoded ACL list: per entry perms (i32), then scheme and id as (u32 length, bytes).
fn decode_acl(mut bytes: &[u8], entries: u32) -> Option<Vec<Acl>> {
    fn take<'b>(bytes: &mut &'b [u8], count: usize) -> Option<&'b [u8]> {
        let (head, rest) = (bytes.get(..count)?, bytes.get(count..)?);
        *bytes = rest;
        Some(head)
    }
    fn text(bytes: &mut &[u8]) -> Option<String> {
        let len = u32::from_le_bytes(take(bytes, 4)?.try_into().ok()?);
        let raw = take(bytes, usize::try_from(len).ok()?)?;
        String::from_utf8(raw.to_vec()).ok()
    }
    // Each entry is at least 12 bytes: bound the allocation by what the bytes can hold.
    let mut acl = Vec::with_capacity(bytes.len() / 12);
    for _ in 0..entries {
        let perms = i32::from_le_bytes(take(&mut bytes, 4)?.try_into().ok()?);
        let scheme = text(&mut bytes)?;
        let id = text(&mut bytes)?;
        acl.push(Acl::new(perms, &scheme, &id));
    }
    bytes.is_empty().then_some(acl)
}

// ---------------------------------------------------------------------------------------------
// The directory: finding, loading and purging snapshots.

/// Published snapshots in `<data_dir>/version-2`, newest first. A missing directory is empty.
///
/// # Errors
/// The directory exists but cannot be read.
pub fn list_snapshots(data_dir: &Path) -> Result<Vec<(i64, PathBuf)>, SnapshotError> {
    let dir = data_dir.join(VERSION_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(io_error("read", &dir)(error)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_error("read", &dir))?;
        let zxid = entry.file_name().to_str().and_then(parse_snapshot_name);
        if let Some(zxid) = zxid {
            found.push((zxid, entry.path()));
        }
    }
    found.sort_by_key(|(zxid, _)| std::cmp::Reverse(*zxid));
    Ok(found)
}

/// Deletes `.tmp` files a crash left behind mid-snapshot; returns how many.
///
/// # Errors
/// The directory cannot be read or a file cannot be removed.
pub fn remove_temporaries(data_dir: &Path) -> Result<usize, SnapshotError> {
    let dir = data_dir.join(VERSION_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(0);
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(io_error("read", &dir))?;
        let name = entry.file_name();
        let is_tmp = name
            .to_str()
            .and_then(|name| name.strip_suffix(".tmp"))
            .and_then(parse_snapshot_name)
            .is_some();
        if is_tmp {
            std::fs::remove_file(entry.path()).map_err(io_error("remove", &entry.path()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// The newest snapshot that loads, and every newer one that did not with why. `None` when
/// there is no snapshot at all or none loads (the caller decides whether the log alone can
/// rebuild the state).
///
/// # Errors
/// The directory cannot be read.
pub fn load_newest(
    data_dir: &Path,
) -> Result<(Option<LoadedSnapshot>, Vec<SnapshotError>), SnapshotError> {
    let mut skipped = Vec::new();
    for (_, path) in list_snapshots(data_dir)? {
        match load_snapshot(&path) {
            Ok(loaded) => return Ok((Some(loaded), skipped)),
            Err(error) => skipped.push(error),
        }
    }
    Ok((None, skipped))
}

/// Keeps the `retain_count` newest snapshots and deletes the others (autopurge); returns the
/// zxids deleted and the oldest zxid kept, below which the log is no longer needed.
///
/// # Errors
/// The directory cannot be read or a file cannot be removed.
pub fn purge_snapshots(
    data_dir: &Path,
    retain_count: usize,
) -> Result<(Vec<i64>, Option<i64>), SnapshotError> {
    assert!(
        retain_count >= 1,
        "purging every snapshot would leave only the log"
    );
    let snapshots = list_snapshots(data_dir)?;
    let oldest_kept = snapshots
        .get(..retain_count.min(snapshots.len()))
        .and_then(|kept| kept.last())
        .map(|(zxid, _)| *zxid);
    let mut removed = Vec::new();
    for (zxid, path) in snapshots.iter().skip(retain_count) {
        std::fs::remove_file(path).map_err(io_error("remove", path))?;
        removed.push(*zxid);
    }
    if !removed.is_empty() {
        sync_dir(&data_dir.join(VERSION_DIR))?;
    }
    Ok((removed, oldest_kept))
}
