//! store: a small durable store for one `zab::Peer` in its dataDir, used by the socket driver
//! (`net`) until the replica's write-ahead log (`crate::log`) is wired to ZAB.
//!
//! Owns, under `<dataDir>/version-2/`:
//! - `acceptedEpoch`, `currentEpoch`: decimal text and a newline, as ZooKeeper writes them,
//!   replaced atomically (tmp → fsync → rename → fsync the directory);
//! - `keel-zab.snapshot`: `magic | zxid u64 | crc32c u32 | len u64 | data`, replaced atomically
//!   (a compaction's is written as `keel-zab.snapshot.<zxid>.tmp` off the driver's thread
//!   first, a SNAP's as `keel-zab.snapshot.<zxid>.incoming.tmp` while it arrives
//!   (`IncomingSnapshot`), mapped, and renamed once installed; `open` removes such files a
//!   crash left). Never written in place: `open` maps it, and a mapping keeps the bytes of
//!   the file it mapped when a newer one is renamed over it;
//! - `keel-zab.log`: `magic | base zxid u64` then records `len u32 | crc32c u32 | zxid u64 |
//!   payload`, the crc over `zxid | payload`. `base` is the snapshot the log continues. On
//!   open, a log based on an older snapshot that holds the current snapshot's zxid is the
//!   remains of a `compact` that crashed before rewriting it (its entries after the snapshot
//!   are kept); any other log older than the snapshot is stale (a crash inside
//!   `install_snapshot`, which drops the whole log) and is dropped.
//!
//! Must not: hand `Peer::new` anything out of order. `open` keeps the longest valid prefix of
//! the log (a torn or corrupt tail, or a zxid that does not increase, ends it) and cuts the
//! file there. Epoch and snapshot files that exist but do not parse are errors (they are
//! written atomically, so that is not a crash artefact).
//! Not ZooKeeper's on-disk format beyond the epoch files (no `log.<zxid>` / `snapshot.<zxid>`).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::log_sync::{LogSyncer, SyncRequest};
use super::{Durable, Entry, Payload, Snapshot, SnapshotData, Zxid};

const LOG_MAGIC: &[u8; 4] = b"KZL1";
const SNAPSHOT_MAGIC: &[u8; 4] = b"KZS1";
const LOG_HEADER_BYTES: u64 = 12;
const SNAPSHOT_HEADER_BYTES: usize = 24;
const RECORD_HEADER_BYTES: usize = 16;
/// The largest record or snapshot this store reads back (bounds allocation on a corrupt file).
pub const RECORD_BYTES_MAX: usize = 64 * 1024 * 1024;

/// A storage failure: the driver stops, it never continues on a store it cannot trust.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Corrupt { path: PathBuf, reason: &'static str },
    #[error("an append of {len} bytes exceeds the record limit {max}")]
    TooLarge { len: usize, max: usize },
    #[error("the log's sync thread is gone")]
    SyncThreadGone,
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// One group commit of the log: what a sync made durable, and how long the fdatasync took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Synced {
    /// Every entry up to this zxid is durable.
    pub upto: Zxid,
    /// Entries and bytes appended since the sync before.
    pub entries: u64,
    pub bytes: u64,
    pub took: Duration,
}

/// One record's place in the log file.
#[derive(Debug, Clone, Copy)]
struct Placed {
    zxid: Zxid,
    offset_bytes: u64,
}

/// A snapshot file written and fsynced by `FileStore::prepare_snapshot`, not published yet.
#[derive(Debug)]
pub struct PreparedSnapshot {
    path: PathBuf,
    zxid: Zxid,
}

/// The durable store of one peer.
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    /// Shared with the sync thread while it fdatasyncs it.
    log: Arc<File>,
    log_path: PathBuf,
    log_len_bytes: u64,
    records: Vec<Placed>,
    /// Appended records not written yet: `sync` writes them with one call, then fsyncs.
    pending: Vec<u8>,
    /// The file's length: the log, then zeros written ahead of it (`PREALLOC_BYTES` at a
    /// time), so an fdatasync after an append does not also have to grow the file.
    allocated_bytes: u64,
    /// With it, `start_sync` returns at once and `take_synced` reports the answer.
    syncer: Option<LogSyncer>,
    /// The zeros being written past `allocated_bytes` on a thread of their own, which
    /// returns the file's new length; appends never go past `allocated_bytes` until it
    /// has joined, and cutting or replacing the log joins it first.
    zeroing: Option<JoinHandle<std::io::Result<u64>>>,
    /// The thread closing the log a rewrite replaced (`close_in_background`).
    closing: Option<JoinHandle<()>>,
    /// The background sync in flight. Cutting or replacing the log waits for it and drops
    /// its answer: the zxid it names may since belong to another entry.
    sync_in_flight: Option<Synced>,
    /// False (`forceSync=no`): `start_sync` writes appends but never fdatasyncs them.
    force_sync: bool,
    /// Appends (written or pending) no sync has been asked to cover yet: (entries, bytes).
    unsynced: (u64, u64),
}

impl FileStore {
    /// Opens (creating if needed) `<data_dir>/version-2` and reads what survived.
    ///
    /// # Errors
    /// IO errors, or an epoch/snapshot file that exists but does not parse.
    pub fn open(data_dir: &Path) -> Result<(FileStore, Durable), StoreError> {
        let dir = data_dir.join("version-2");
        fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        remove_prepared_snapshots(&dir)?;
        let accepted = read_epoch(&dir.join("acceptedEpoch"))?;
        let current = read_epoch(&dir.join("currentEpoch"))?;
        let snapshot = read_snapshot(&dir.join("keel-zab.snapshot"))?;
        let log_path = dir.join("keel-zab.log");
        let (records, mut entries, len) = read_log(&log_path, snapshot.zxid)?;
        let mut store = FileStore {
            log: Arc::new(
                OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&log_path)
                    .map_err(io("open", &log_path))?,
            ),
            dir,
            log_path,
            log_len_bytes: len,
            records,
            pending: Vec::new(),
            allocated_bytes: len,
            syncer: None,
            sync_in_flight: None,
            unsynced: (0, 0),
            force_sync: true,
            zeroing: None,
            closing: None,
        };
        let log_base = read_log_base(&store.log_path);
        if len == 0 {
            store.reset_log(snapshot.zxid)?;
        } else if log_base.is_some_and(|base| base < snapshot.zxid) {
            // A compaction that wrote its snapshot but not its log: the entries up to the
            // snapshot are in it, the rest carry on.
            entries.retain(|e| e.zxid > snapshot.zxid);
            store.rewrite_log(snapshot.zxid, &entries)?;
        } else {
            store.cut_log(len)?;
        }
        // currentEpoch is written after acceptedEpoch; a lost acceptedEpoch file (an empty
        // store) must not leave the peer with currentEpoch ahead.
        let durable = Durable {
            accepted_epoch: accepted.max(current),
            current_epoch: current,
            snapshot,
            log: entries,
        };
        Ok((store, durable))
    }

    /// Writes `acceptedEpoch` durably.
    ///
    /// # Errors
    /// IO errors.
    pub fn write_accepted_epoch(&mut self, epoch: u32) -> Result<(), StoreError> {
        self.replace("acceptedEpoch", &[format!("{epoch}\n").as_bytes()])
    }

    /// Writes `currentEpoch` durably.
    ///
    /// # Errors
    /// IO errors.
    pub fn write_current_epoch(&mut self, epoch: u32) -> Result<(), StoreError> {
        self.replace("currentEpoch", &[format!("{epoch}\n").as_bytes()])
    }

    /// Appends one entry (not durable until `sync`).
    ///
    /// # Errors
    /// IO errors or an entry over `RECORD_BYTES_MAX`.
    pub fn append(&mut self, entry: &Entry) -> Result<(), StoreError> {
        let before = self.pending.len();
        self.pending
            .reserve(RECORD_HEADER_BYTES + entry.payload.len());
        if let Err(error) = encode_record(entry, &mut self.pending) {
            self.pending.truncate(before);
            return Err(error);
        }
        self.records.push(Placed {
            zxid: entry.zxid,
            offset_bytes: self.log_len_bytes,
        });
        let record_bytes = (self.pending.len() - before) as u64;
        self.log_len_bytes += record_bytes;
        self.unsynced.0 += 1;
        self.unsynced.1 += record_bytes;
        Ok(())
    }

    /// Writes the buffered appends to the file (one write call for a whole batch), into
    /// zeros written ahead of time. Once less than half of `PREALLOC_BYTES` of zeros is
    /// left, the next ones are written on a thread of their own (16 MiB of zeros and an
    /// fsync would stall this caller, the driver's loop, for tens of milliseconds).
    fn write_pending(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.join_zeroing(false)?;
        if self.allocated_bytes < self.log_len_bytes {
            self.join_zeroing(true)?;
        }
        if self.allocated_bytes < self.log_len_bytes {
            let target = (self.log_len_bytes / PREALLOC_BYTES + 1) * PREALLOC_BYTES;
            write_zeros(&self.log, self.allocated_bytes, target)
                .map_err(io("preallocate", &self.log_path))?;
            self.allocated_bytes = target;
        }
        let offset = self.log_len_bytes - self.pending.len() as u64;
        self.log
            .write_all_at(&self.pending, offset)
            .map_err(io("append", &self.log_path))?;
        self.pending.clear();
        if self.zeroing.is_none() && self.allocated_bytes - self.log_len_bytes < PREALLOC_BYTES / 2
        {
            let (file, from) = (self.log.clone(), self.allocated_bytes);
            let to = from + PREALLOC_BYTES;
            let spawned = std::thread::Builder::new()
                .name("zab-zeros".into())
                .spawn(move || write_zeros(&file, from, to).map(|()| to));
            // Without the thread, the next append past the end writes the zeros itself.
            self.zeroing = spawned.ok();
        }
        Ok(())
    }

    /// Takes in the zeros written ahead on their thread: once it has finished, or (`wait`)
    /// waiting for it.
    fn join_zeroing(&mut self, wait: bool) -> Result<(), StoreError> {
        let Some(handle) = self.zeroing.take_if(|h| wait || h.is_finished()) else {
            return Ok(());
        };
        let joined = handle
            .join()
            .unwrap_or_else(|_| Err(std::io::Error::other("the zeroing thread panicked")));
        let to = joined.map_err(io("preallocate", &self.log_path))?;
        self.allocated_bytes = self.allocated_bytes.max(to);
        Ok(())
    }

    /// From now on `start_sync` hands fdatasyncs to a thread of their own; `notify` runs
    /// when one finishes (the owner then calls `take_synced`).
    ///
    /// # Errors
    /// The thread could not be started.
    pub fn sync_in_background(
        &mut self,
        name: String,
        notify: Box<dyn Fn() + Send>,
    ) -> Result<(), StoreError> {
        let syncer = LogSyncer::start(name, notify).map_err(io("start sync thread", &self.dir))?;
        self.syncer = Some(syncer);
        Ok(())
    }

    /// ZooKeeper's `forceSync=no`: `start_sync` no longer fdatasyncs, it only writes; the
    /// log's cuts and rewrites still sync. Acknowledged writes can be lost on a crash.
    pub fn skip_append_syncs(&mut self) {
        self.force_sync = false;
        self.syncer = None;
    }

    /// The last record in the log, durable or not.
    pub fn last_zxid(&self) -> Option<Zxid> {
        self.records.last().map(|r| r.zxid)
    }

    /// Group commit: writes the buffered appends and, unless a background sync is in flight
    /// already (the next one then starts when it ends), asks for one that covers them.
    /// Without a background thread it syncs here, and `take_synced` reports it.
    ///
    /// # Errors
    /// IO errors (of the write; the sync's come from `take_synced`).
    pub fn start_sync(&mut self) -> Result<(), StoreError> {
        self.write_pending()?;
        if self.unsynced.0 == 0 || self.sync_in_flight.is_some() {
            return Ok(());
        }
        let Some(upto) = self.last_zxid() else {
            return Ok(());
        };
        let (entries, bytes) = std::mem::take(&mut self.unsynced);
        let mut batch = Synced {
            upto,
            entries,
            bytes,
            took: Duration::ZERO,
        };
        let Some(syncer) = &self.syncer else {
            let started = Instant::now();
            if self.force_sync {
                self.log.sync_data().map_err(io("fsync", &self.log_path))?;
            }
            batch.took = started.elapsed();
            self.sync_in_flight = Some(batch);
            return Ok(());
        };
        let request = SyncRequest {
            file: self.log.clone(),
            upto,
        };
        if !syncer.request(request) {
            return Err(StoreError::SyncThreadGone);
        }
        self.sync_in_flight = Some(batch);
        Ok(())
    }

    /// A finished `start_sync`, once: the log is durable up to its `upto`. `None` while it
    /// runs. Starts the next sync if appends came meanwhile.
    ///
    /// # Errors
    /// The fdatasync failed: the log cannot be trusted and must not be synced again.
    pub fn take_synced(&mut self) -> Result<Option<Synced>, StoreError> {
        let Some(mut batch) = self.sync_in_flight else {
            return Ok(None);
        };
        if let Some(syncer) = &self.syncer {
            let Some(done) = syncer.try_done() else {
                return Ok(None);
            };
            done.result.map_err(io("fsync", &self.log_path))?;
            debug_assert_eq!(done.upto, batch.upto);
            batch.took = done.took;
        }
        self.sync_in_flight = None;
        self.start_sync()?;
        Ok(Some(batch))
    }

    /// Waits for the background sync in flight, if any, and drops its answer: the caller is
    /// about to cut or replace the log (which syncs everything itself), after which the
    /// zxid it names may belong to another entry.
    fn settle_sync(&mut self) -> Result<(), StoreError> {
        if self.sync_in_flight.take().is_none() {
            return Ok(());
        }
        let Some(syncer) = &self.syncer else {
            return Ok(());
        };
        let done = syncer.wait_done().ok_or(StoreError::SyncThreadGone)?;
        done.result.map_err(io("fsync", &self.log_path))
    }

    /// Makes every append durable.
    ///
    /// # Errors
    /// IO errors.
    pub fn sync(&mut self) -> Result<(), StoreError> {
        self.write_pending()?;
        if self.unsynced.0 > 0 {
            self.log.sync_data().map_err(io("fsync", &self.log_path))?;
            self.unsynced = (0, 0);
        }
        Ok(())
    }

    /// Drops every record above `zxid`, durably.
    ///
    /// # Errors
    /// IO errors.
    pub fn truncate_after(&mut self, zxid: Zxid) -> Result<(), StoreError> {
        let keep = self.records.partition_point(|r| r.zxid <= zxid);
        if let Some(first_dropped) = self.records.get(keep) {
            let offset = first_dropped.offset_bytes;
            self.records.truncate(keep);
            self.cut_log(offset)?;
        }
        Ok(())
    }

    /// Persists `snapshot`, then starts an empty log based on it.
    ///
    /// # Errors
    /// IO errors.
    /// A snapshot received into its own file (`incoming_snapshot`) is published by renaming
    /// that file: no second copy.
    pub fn install_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StoreError> {
        let path = self.dir.join("keel-zab.snapshot");
        match snapshot.data.file() {
            Some(file) if file.parent() == Some(self.dir.as_path()) && file.exists() => {
                File::open(file)
                    .and_then(|f| f.sync_all())
                    .map_err(io("fsync", file))?;
                fs::rename(file, &path).map_err(io("rename", &path))?;
                File::open(&self.dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io("fsync", &self.dir))?;
            }
            _ => self.replace(
                "keel-zab.snapshot",
                &[&snapshot_header(snapshot), &snapshot.data],
            )?,
        }
        self.reset_log(snapshot.zxid)
    }

    /// A file in the store's directory for a SNAP of `data_bytes` that is arriving, with its
    /// blocks reserved (a full disk fails here, not halfway through). Named like a
    /// compaction's temporary, so a crash leaves nothing `open` keeps; unlinked when the SNAP
    /// is dropped unfinished, or its data uninstalled; never a name used before (a mapping
    /// of an earlier one may be alive).
    ///
    /// # Errors
    /// IO errors, the disk being full among them.
    pub fn incoming_snapshot(
        &self,
        zxid: Zxid,
        data_bytes: usize,
    ) -> Result<IncomingSnapshot, StoreError> {
        static INCOMING: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let serial = INCOMING.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = self.dir.join(format!(
            "keel-zab.snapshot.{:x}.{serial}.incoming.tmp",
            zxid.0
        ));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io("create", &path))?;
        let file_bytes = (SNAPSHOT_HEADER_BYTES + data_bytes) as u64;
        let unlink = |error| {
            let _ = fs::remove_file(&path);
            io("fallocate", &path)(error)
        };
        reserve(&file, file_bytes).map_err(unlink)?;
        Ok(IncomingSnapshot {
            file,
            path,
            finished: false,
            zxid,
            data_bytes: data_bytes as u64,
            written: 0,
            crc: 0,
        })
    }

    /// The log's path (tests tear it).
    pub fn log_path(data_dir: &Path) -> PathBuf {
        data_dir.join("version-2").join("keel-zab.log")
    }

    fn reset_log(&mut self, base: Zxid) -> Result<(), StoreError> {
        self.rewrite_log(base, &[])
    }

    /// Replaces the log by one based on `base` holding `entries`, atomically.
    fn rewrite_log(&mut self, base: Zxid, entries: &[Entry]) -> Result<(), StoreError> {
        let mut bytes = Vec::with_capacity(LOG_HEADER_BYTES as usize);
        bytes.extend_from_slice(LOG_MAGIC);
        bytes.extend_from_slice(&base.0.to_be_bytes());
        let mut records = Vec::with_capacity(entries.len());
        for entry in entries {
            records.push(Placed {
                zxid: entry.zxid,
                offset_bytes: bytes.len() as u64,
            });
            encode_record(entry, &mut bytes)?;
        }
        self.settle_sync()?;
        self.join_zeroing(true)?;
        self.replace("keel-zab.log", &[&bytes])?;
        let replaced = std::mem::replace(
            &mut self.log,
            Arc::new(
                OpenOptions::new()
                    .write(true)
                    .open(&self.log_path)
                    .map_err(io("open", &self.log_path))?,
            ),
        );
        self.close_in_background(replaced);
        self.records = records;
        self.log_len_bytes = bytes.len() as u64;
        self.allocated_bytes = self.log_len_bytes;
        self.pending.clear();
        self.unsynced = (0, 0);
        Ok(())
    }

    /// Closes the log file a rewrite renamed over on a thread of its own: the last close of
    /// that unlinked inode frees its blocks (the log and the zeros written ahead of it),
    /// which took 12-35 ms inside a compaction on the driver's thread (ext4, measured under
    /// the ensemble's setData load). One such thread at a time: a second rewrite waits for
    /// the first close.
    fn close_in_background(&mut self, file: Arc<File>) {
        if let Some(previous) = self.closing.take() {
            let _ = previous.join();
        }
        let spawned = std::thread::Builder::new()
            .name("zab-close".into())
            .spawn(move || drop(file));
        // Without the thread, the file was closed here, with the closure that held it.
        self.closing = spawned.ok();
    }

    /// Compaction: persists `snapshot` (of the applied state at `snapshot.zxid`, which is
    /// logged or is the current snapshot), then rewrites the log to hold only the entries
    /// after it. A crash in between leaves the new snapshot with the old log, which `open`
    /// recognises (the log's base is older and it holds the snapshot's zxid) and finishes.
    ///
    /// # Errors
    /// IO errors.
    pub fn compact(&mut self, snapshot: &Snapshot, after: &[Entry]) -> Result<(), StoreError> {
        let data_dir = self.dir.parent().unwrap_or(&self.dir).to_path_buf();
        let prepared = FileStore::prepare_snapshot(&data_dir, snapshot)?;
        self.compact_prepared(prepared, after)
    }

    /// The slow half of `compact`, which needs no store and runs on any thread: writes
    /// `snapshot` to `keel-zab.snapshot.<zxid>.tmp` and fsyncs it. `open` removes such files
    /// left by a crash; `compact_prepared` publishes it, `discard` removes it.
    ///
    /// # Errors
    /// IO errors (the file is removed if it can be).
    pub fn prepare_snapshot(
        data_dir: &Path,
        snapshot: &Snapshot,
    ) -> Result<PreparedSnapshot, StoreError> {
        let dir = data_dir.join("version-2");
        let path = dir.join(format!("keel-zab.snapshot.{:x}.tmp", snapshot.zxid.0));
        let written = File::create(&path)
            .map_err(io("create", &path))
            .and_then(|file| {
                let parts: [&[u8]; 2] = [&snapshot_header(snapshot), &snapshot.data];
                write_durably(&file, &path, &parts)
            });
        if let Err(error) = written {
            let _ = fs::remove_file(&path);
            return Err(error);
        }
        Ok(PreparedSnapshot {
            path,
            zxid: snapshot.zxid,
        })
    }

    /// `compact` with a snapshot `prepare_snapshot` wrote: renamed in place, the directory
    /// fsynced, then the log rewritten (a crash in between is `compact`'s, see there).
    ///
    /// # Errors
    /// IO errors.
    pub fn compact_prepared(
        &mut self,
        prepared: PreparedSnapshot,
        after: &[Entry],
    ) -> Result<(), StoreError> {
        self.sync()?;
        let path = self.dir.join("keel-zab.snapshot");
        fs::rename(&prepared.path, &path).map_err(io("rename", &path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync", &self.dir))?;
        self.rewrite_log(prepared.zxid, after)
    }

    /// Removes a prepared snapshot that will not be published.
    pub fn discard(prepared: PreparedSnapshot) {
        let _ = fs::remove_file(&prepared.path);
    }

    fn cut_log(&mut self, len_bytes: u64) -> Result<(), StoreError> {
        self.settle_sync()?;
        self.write_pending()?;
        self.join_zeroing(true)?;
        self.log
            .set_len(len_bytes)
            .map_err(io("truncate", &self.log_path))?;
        self.log.sync_all().map_err(io("fsync", &self.log_path))?;
        self.log_len_bytes = len_bytes;
        self.allocated_bytes = len_bytes;
        self.unsynced = (0, 0);
        Ok(())
    }

    /// tmp → fsync → rename → fsync the directory; the file is `parts` back to back.
    fn replace(&self, name: &str, parts: &[&[u8]]) -> Result<(), StoreError> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let file = File::create(&tmp).map_err(io("create", &tmp))?;
        write_durably(&file, &tmp, parts)?;
        drop(file);
        fs::rename(&tmp, &path).map_err(io("rename", &path))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync", &self.dir))
    }
}

/// A SNAP's data written to its file as it arrives (`FileStore::incoming_snapshot`): the
/// disk writes overlap the transfer, and `finish` hands the bytes over mapped from the page
/// cache instead of in a second, anonymous copy.
pub struct IncomingSnapshot {
    file: File,
    path: PathBuf,
    /// Handed over mapped (`finish`): the mapping unlinks it from then on.
    finished: bool,
    zxid: Zxid,
    data_bytes: u64,
    written: u64,
    crc: u32,
}

impl IncomingSnapshot {
    /// Data bytes still to come.
    pub fn missing_bytes(&self) -> u64 {
        self.data_bytes - self.written
    }

    /// Writes the next data bytes (at most `missing_bytes`); each 8 MiB written starts its
    /// writeback.
    ///
    /// # Errors
    /// IO errors, or more bytes than the SNAP holds.
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        if bytes.len() as u64 > self.missing_bytes() {
            return Err(StoreError::Corrupt {
                path: self.path.clone(),
                reason: "more SNAP data than announced",
            });
        }
        let at = SNAPSHOT_HEADER_BYTES as u64 + self.written;
        self.file
            .write_all_at(bytes, at)
            .map_err(io("write", &self.path))?;
        self.crc = crc32c::crc32c_append(self.crc, bytes);
        let chunk = WRITEBACK_CHUNK_BYTES as u64;
        let before = self.written / chunk;
        self.written += bytes.len() as u64;
        if self.written / chunk != before || self.missing_bytes() == 0 {
            let from = before * chunk + SNAPSHOT_HEADER_BYTES as u64;
            let to = SNAPSHOT_HEADER_BYTES as u64 + self.written;
            crate::snapshot::write_back(&self.file, from, to - from, libc::SYNC_FILE_RANGE_WRITE);
        }
        Ok(())
    }

    /// The whole SNAP, once every byte is in: its header is written and the file mapped.
    /// Not durable yet: `FileStore::install_snapshot` fsyncs and publishes it.
    ///
    /// # Errors
    /// IO errors, or data missing.
    pub fn finish(mut self) -> Result<Snapshot, StoreError> {
        if self.missing_bytes() != 0 {
            return Err(StoreError::Corrupt {
                path: self.path.clone(),
                reason: "SNAP data missing",
            });
        }
        let header = header_of(self.zxid, self.crc, self.data_bytes);
        self.file
            .write_all_at(&header, 0)
            .map_err(io("write", &self.path))?;
        // Never written again: it is renamed into place or unlinked, and a later SNAP of the
        // same zxid gets a new inode.
        let map = map_snapshot_file(&self.file, &self.path)?;
        self.finished = true;
        Ok(Snapshot {
            zxid: self.zxid,
            data: SnapshotData::mapped(map, SNAPSHOT_HEADER_BYTES, &self.path),
        })
    }
}

impl Drop for IncomingSnapshot {
    fn drop(&mut self) {
        if !self.finished {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Reserves `bytes` of blocks for `file` (its length becomes `bytes`).
fn reserve(file: &File, bytes: u64) -> std::io::Result<()> {
    let len = libc::off_t::try_from(bytes).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on a descriptor this function borrows.
    match unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) } {
        0 => Ok(()),
        errno => Err(std::io::Error::from_raw_os_error(errno)),
    }
}

/// Bytes written before their writeback is started (`sync_file_range`), so that a large
/// file's disk writes overlap its copy into the page cache instead of all waiting for the
/// final fsync.
const WRITEBACK_CHUNK_BYTES: usize = 8 << 20;

/// Writes `parts` back to back from the start of the new `file`, then fsyncs it.
fn write_durably(file: &File, path: &Path, parts: &[&[u8]]) -> Result<(), StoreError> {
    let mut written: u64 = 0;
    let mut writer = file;
    for part in parts {
        for chunk in part.chunks(WRITEBACK_CHUNK_BYTES) {
            writer.write_all(chunk).map_err(io("write", path))?;
            // Starts the chunk's writeback without waiting: the fsync below waits.
            let bytes = chunk.len() as u64;
            crate::snapshot::write_back(file, written, bytes, libc::SYNC_FILE_RANGE_WRITE);
            written += bytes;
        }
    }
    file.sync_all().map_err(io("fsync", path))
}

/// The snapshot file's `magic | zxid u64 | crc32c u32 | len u64`, which `data` follows.
fn snapshot_header(snapshot: &Snapshot) -> [u8; SNAPSHOT_HEADER_BYTES] {
    let crc = crc32c::crc32c(&snapshot.data);
    header_of(snapshot.zxid, crc, snapshot.data.len() as u64)
}

/// The same from the zxid, the data's CRC32C and its length.
fn header_of(zxid: Zxid, crc: u32, data_bytes: u64) -> [u8; SNAPSHOT_HEADER_BYTES] {
    let mut header = [0u8; SNAPSHOT_HEADER_BYTES];
    header[0..4].copy_from_slice(SNAPSHOT_MAGIC);
    header[4..12].copy_from_slice(&zxid.0.to_be_bytes());
    header[12..16].copy_from_slice(&crc.to_be_bytes());
    header[16..24].copy_from_slice(&data_bytes.to_be_bytes());
    header
}

/// Removes the `keel-zab.snapshot.<zxid>.tmp` files of compactions a crash interrupted.
fn remove_prepared_snapshots(dir: &Path) -> Result<(), StoreError> {
    for entry in fs::read_dir(dir).map_err(io("list", dir))? {
        let path = entry.map_err(io("list", dir))?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with("keel-zab.snapshot.") && name.ends_with(".tmp") {
            fs::remove_file(&path).map_err(io("remove", &path))?;
        }
    }
    Ok(())
}

/// `len u32 | crc32c u32 | zxid u64 | payload`, the crc over `zxid | payload`.
fn encode_record(entry: &Entry, out: &mut Vec<u8>) -> Result<(), StoreError> {
    let len = entry.payload.len();
    let len_u32 = u32::try_from(len)
        .ok()
        .filter(|_| len <= RECORD_BYTES_MAX)
        .ok_or(StoreError::TooLarge {
            len,
            max: RECORD_BYTES_MAX,
        })?;
    let zxid = entry.zxid.0.to_be_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c(&zxid), &entry.payload);
    out.extend_from_slice(&len_u32.to_be_bytes());
    out.extend_from_slice(&crc.to_be_bytes());
    out.extend_from_slice(&zxid);
    out.extend_from_slice(&entry.payload);
    Ok(())
}

/// Zeros written ahead of the log at a time (see `FileStore::write_pending`).
const PREALLOC_BYTES: u64 = 16 << 20;
const ZERO_CHUNK_BYTES: usize = 1 << 20;

/// Extends `file` from `from` to `to` with zeros, durably (the length too). Recovery stops at
/// the first record that does not check out, so zeros are never read as entries, and `open`
/// cuts them off.
fn write_zeros(file: &File, from: u64, to: u64) -> std::io::Result<()> {
    let zeros = vec![0u8; ZERO_CHUNK_BYTES];
    let mut at = from;
    while at < to {
        let n = usize::try_from(to - at).map_or(ZERO_CHUNK_BYTES, |n| n.min(ZERO_CHUNK_BYTES));
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    file.sync_all()
}

/// The base zxid in a log file's header, if it has one.
fn read_log_base(path: &Path) -> Option<Zxid> {
    let mut header = [0u8; LOG_HEADER_BYTES as usize];
    File::open(path).ok()?.read_exact(&mut header).ok()?;
    let base: [u8; 8] = header.get(4..12)?.try_into().ok()?;
    (header.get(0..4) == Some(LOG_MAGIC.as_slice())).then(|| Zxid(u64::from_be_bytes(base)))
}

fn read_epoch(path: &Path) -> Result<u32, StoreError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io("read", path)(e)),
    };
    text.trim().parse().map_err(|_| StoreError::Corrupt {
        path: path.to_path_buf(),
        reason: "not an epoch number",
    })
}

/// Maps a snapshot file of the store's (published, or a SNAP's once it is all in) for a
/// sequential read.
fn map_snapshot_file(file: &File, path: &Path) -> Result<memmap2::Mmap, StoreError> {
    // SAFETY: the store never writes or truncates a snapshot file it maps: a published one is
    // only replaced by renaming another over it, a SNAP's is renamed into place or unlinked.
    // So the mapped bytes do not change under the mapping.
    let map = unsafe { memmap2::Mmap::map(file) }.map_err(io("mmap", path))?;
    let _ = map.advise(memmap2::Advice::Sequential);
    Ok(map)
}

/// The store's snapshot, mapped rather than read: a million znodes are ~180 MB, which
/// reading copied twice (into a buffer, then into the shared payload) on every start.
fn read_snapshot(path: &Path) -> Result<Snapshot, StoreError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Snapshot::empty()),
        Err(e) => return Err(io("open", path)(e)),
    };
    let corrupt = |reason| StoreError::Corrupt {
        path: path.to_path_buf(),
        reason,
    };
    let file_bytes = file.metadata().map_err(io("stat", path))?.len();
    if file_bytes < SNAPSHOT_HEADER_BYTES as u64 {
        return Err(corrupt("short snapshot"));
    }
    let map = map_snapshot_file(&file, path)?;
    let bytes: &[u8] = &map;
    let (Some(magic), Some(zxid), Some(crc), Some(len), Some(data)) = (
        bytes.get(0..4),
        bytes.get(4..12),
        bytes.get(12..16),
        bytes.get(16..24),
        bytes.get(SNAPSHOT_HEADER_BYTES..),
    ) else {
        return Err(corrupt("short snapshot"));
    };
    let be64 = |b: &[u8]| b.try_into().map(u64::from_be_bytes).unwrap_or(u64::MAX);
    if magic != SNAPSHOT_MAGIC || be64(len) != data.len() as u64 {
        return Err(corrupt("bad snapshot header"));
    }
    let crc = crc.try_into().map(u32::from_be_bytes).unwrap_or(0);
    if crc32c::crc32c(data) != crc {
        return Err(corrupt("snapshot checksum mismatch"));
    }
    let zxid = Zxid(be64(zxid));
    Ok(Snapshot {
        zxid,
        data: SnapshotData::published(map, SNAPSHOT_HEADER_BYTES),
    })
}

/// The valid records of the log, their entries, and the file length to keep (0: rewrite the
/// log from scratch, it is missing, stale or has no valid header).
fn read_log(path: &Path, base: Zxid) -> Result<(Vec<Placed>, Vec<Entry>, u64), StoreError> {
    let mut bytes = Vec::new();
    match File::open(path) {
        Ok(mut file) => {
            file.read_to_end(&mut bytes).map_err(io("read", path))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((vec![], vec![], 0)),
        Err(e) => return Err(io("open", path)(e)),
    }
    let log_base = bytes
        .get(4..12)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_be_bytes)
        .map(Zxid);
    let magic_ok = bytes.get(0..4) == Some(LOG_MAGIC.as_slice());
    let header_ok = magic_ok && log_base.is_some_and(|b| b <= base);
    if !header_ok {
        if !bytes.is_empty() {
            tracing::warn!(path = %path.display(), "zab store: stale or bad log header, log dropped");
        }
        return Ok((vec![], vec![], 0));
    }
    let (mut records, mut entries) = (Vec::new(), Vec::new());
    let mut at = LOG_HEADER_BYTES as usize;
    let snapshot_zxid = base;
    let mut last = log_base.unwrap_or(base);
    while let Some(header) = bytes.get(at..at + RECORD_HEADER_BYTES) {
        let be32 = |b: &[u8]| b.try_into().map(u32::from_be_bytes).unwrap_or(u32::MAX);
        let len = be32(header.get(0..4).unwrap_or_default()) as usize;
        let crc = be32(header.get(4..8).unwrap_or_default());
        if len > RECORD_BYTES_MAX {
            break;
        }
        let Some(summed) = bytes.get(at + 8..at + RECORD_HEADER_BYTES + len) else {
            break; // A torn tail.
        };
        if crc32c::crc32c(summed) != crc {
            break;
        }
        let zxid = Zxid(
            summed
                .get(0..8)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_be_bytes),
        );
        if zxid <= last {
            break;
        }
        last = zxid;
        records.push(Placed {
            zxid,
            offset_bytes: at as u64,
        });
        entries.push(Entry {
            zxid,
            payload: Payload::from(summed.get(8..).unwrap_or_default().to_vec()),
        });
        at += RECORD_HEADER_BYTES + len;
    }
    if last < snapshot_zxid
        || !(log_base == Some(snapshot_zxid)
            || records.iter().any(|r: &Placed| r.zxid == snapshot_zxid))
    {
        // Older than the snapshot and not a log the snapshot was cut from: stale (a crash
        // inside `install_snapshot`).
        tracing::warn!(path = %path.display(), "zab store: stale log, dropped");
        return Ok((vec![], vec![], 0));
    }
    if at < bytes.len() {
        tracing::warn!(path = %path.display(), kept_bytes = at, file_bytes = bytes.len(),
            "zab store: torn or corrupt log tail cut");
    }
    Ok((records, entries, at as u64))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        std::env::temp_dir().join(format!(
            "keel-zab-store-{name}-{}-{nanos}",
            std::process::id()
        ))
    }

    fn entry(epoch: u32, counter: u32) -> Entry {
        Entry {
            zxid: Zxid::new(epoch, counter),
            payload: Payload::from(format!("e{epoch}.{counter}").into_bytes()),
        }
    }

    #[test]
    fn a_damaged_snapshot_file_is_refused_with_its_name_and_reason() {
        // The snapshot is mapped, not read: an empty, cut or flipped file must still be a
        // clear error at open (no mapping of nothing, no read past the end).
        let dir = temp_dir("damaged");
        let (mut store, _) = FileStore::open(&dir).unwrap();
        let snapshot = Snapshot {
            zxid: Zxid::new(1, 3),
            data: Payload::from(vec![5u8; 10_000]).into(),
        };
        store.compact(&snapshot, &[]).unwrap();
        drop(store);
        let path = dir.join("version-2").join("keel-zab.snapshot");
        let good = fs::read(&path).unwrap();
        let mut flipped = good.clone();
        if let Some(last) = flipped.last_mut() {
            *last ^= 1;
        }
        let cases = [
            ("empty", Vec::new(), "short snapshot"),
            ("cut header", good[..10].to_vec(), "short snapshot"),
            (
                "cut data",
                good[..good.len() - 1].to_vec(),
                "bad snapshot header",
            ),
            ("flipped", flipped, "snapshot checksum mismatch"),
        ];
        for (what, bytes, expected) in cases {
            fs::write(&path, &bytes).unwrap();
            match FileStore::open(&dir) {
                Err(StoreError::Corrupt {
                    path: named,
                    reason,
                }) => {
                    assert_eq!(
                        (named.as_path(), reason),
                        (path.as_path(), expected),
                        "{what}"
                    );
                }
                Err(other) => panic!("{what}: {other}"),
                Ok(_) => panic!("{what}: opened"),
            }
        }
        fs::write(&path, &good).unwrap();
        let (_, durable) = FileStore::open(&dir).unwrap();
        assert_eq!(durable.snapshot, snapshot);
        fs::remove_dir_all(&dir).unwrap();
    }

    /// Waits (bounded) for the background sync in flight to answer.
    fn synced(store: &mut FileStore) -> Option<Zxid> {
        for _ in 0..2_000 {
            store.sync_in_flight?;
            if let Some(batch) = store.take_synced().unwrap() {
                return Some(batch.upto);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        panic!("the background sync never answered");
    }

    #[test]
    fn background_syncs_group_appends_and_drop_answers_for_a_cut_log() {
        // One sync at a time: appends made while one runs wait for the next, which starts
        // when the first is taken. An answer asked for before a truncation reports nothing
        // (the zxid it names may since belong to another entry).
        let dir = temp_dir("background");
        let (mut store, _) = FileStore::open(&dir).unwrap();
        let (tx, rx) = crossbeam::channel::unbounded();
        store
            .sync_in_background(
                "test-sync".into(),
                Box::new(move || {
                    let _ = tx.send(());
                }),
            )
            .unwrap();
        for counter in 1..=3 {
            store.append(&entry(1, counter)).unwrap();
        }
        store.start_sync().unwrap();
        store.append(&entry(1, 4)).unwrap();
        store.start_sync().unwrap(); // Written, but waits for the sync in flight.
        assert_eq!(synced(&mut store), Some(Zxid::new(1, 3)));
        assert!(rx.try_recv().is_ok(), "the owner was woken");
        assert_eq!(synced(&mut store), Some(Zxid::new(1, 4)));
        assert_eq!(synced(&mut store), None, "nothing left to sync");

        store.append(&entry(1, 5)).unwrap();
        store.start_sync().unwrap();
        store.truncate_after(Zxid::new(1, 4)).unwrap();
        store.append(&entry(2, 1)).unwrap();
        assert_eq!(
            synced(&mut store),
            None,
            "the cut dropped the answer for 1.5"
        );
        store.start_sync().unwrap();
        assert_eq!(synced(&mut store), Some(Zxid::new(2, 1)));
        drop(store);
        let (_, durable) = FileStore::open(&dir).unwrap();
        let zxids: Vec<Zxid> = durable.log.iter().map(|e| e.zxid).collect();
        let mut expected: Vec<Zxid> = (1..=4).map(|c| Zxid::new(1, c)).collect();
        expected.push(Zxid::new(2, 1));
        assert_eq!(zxids, expected);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn force_sync_off_still_writes_and_reports_every_append() {
        // forceSync=no: nothing waits for a disk sync, but the entries are written (a clean
        // stop keeps them) and reported durable at once, so the peer acks them.
        let dir = temp_dir("no-force-sync");
        let (mut store, _) = FileStore::open(&dir).unwrap();
        store.skip_append_syncs();
        store.append(&entry(1, 1)).unwrap();
        store.append(&entry(1, 2)).unwrap();
        store.start_sync().unwrap();
        let batch = store
            .take_synced()
            .unwrap()
            .expect("reported without a sync thread");
        assert_eq!((batch.upto, batch.entries), (Zxid::new(1, 2), 2));
        assert_eq!(store.take_synced().unwrap(), None);
        drop(store);
        assert_eq!(FileStore::open(&dir).unwrap().1.log.len(), 2);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_install_that_crashed_before_its_rename_leaves_the_old_state() {
        // A learner killed while writing a SNAP's snapshot: the `.tmp` (whole or cut) is
        // ignored, the old snapshot and log come back, and the next install replaces both.
        let dir = temp_dir("install-crash");
        let (mut store, _) = FileStore::open(&dir).unwrap();
        let old = Snapshot {
            zxid: Zxid::new(1, 4),
            data: Payload::from(b"old state".to_vec()).into(),
        };
        store.install_snapshot(&old).unwrap();
        store.append(&entry(1, 5)).unwrap();
        store.sync().unwrap();
        drop(store);
        let new = Snapshot {
            zxid: Zxid::new(2, 9),
            data: Payload::from(vec![7u8; 4096]).into(),
        };
        let tmp = dir.join("version-2").join("keel-zab.snapshot.tmp");
        let mut whole = snapshot_header(&new).to_vec();
        whole.extend_from_slice(&new.data);
        for written in [whole.len(), whole.len() / 2, 3] {
            fs::write(&tmp, &whole[..written]).unwrap();
            let (_, durable) = FileStore::open(&dir).unwrap();
            assert_eq!(durable.snapshot, old, "{written} bytes written");
            assert_eq!(durable.log, vec![entry(1, 5)]);
        }
        let (mut store, _) = FileStore::open(&dir).unwrap();
        store.install_snapshot(&new).unwrap();
        drop(store);
        let (_, durable) = FileStore::open(&dir).unwrap();
        assert_eq!(durable.snapshot, new);
        assert!(durable.log.is_empty());
        assert!(!tmp.exists());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_prepared_compaction_is_published_by_the_store_or_dropped_by_a_crash() {
        // The snapshot file is written off the driver's thread; until the store renames it,
        // a crash leaves the old snapshot and log, and `open` removes the file.
        let dir = temp_dir("prepared");
        let (mut store, _) = FileStore::open(&dir).unwrap();
        for counter in 1..=4 {
            store.append(&entry(1, counter)).unwrap();
        }
        store.sync().unwrap();
        let at_two = Snapshot {
            zxid: Zxid::new(1, 2),
            data: Payload::from(b"two".to_vec()).into(),
        };
        let prepared = FileStore::prepare_snapshot(&dir, &at_two).unwrap();
        drop(store); // The crash: never published.
        let (mut store, durable) = FileStore::open(&dir).unwrap();
        assert_eq!(durable.snapshot, Snapshot::empty());
        assert_eq!(durable.log.len(), 4);
        assert!(!prepared.path.exists(), "open removes a prepared snapshot");
        let prepared = FileStore::prepare_snapshot(&dir, &at_two).unwrap();
        store
            .compact_prepared(prepared, &[entry(1, 3), entry(1, 4)])
            .unwrap();
        drop(store);
        let (_, durable) = FileStore::open(&dir).unwrap();
        assert_eq!(durable.snapshot, at_two);
        assert_eq!(durable.log, vec![entry(1, 3), entry(1, 4)]);
        let discarded = FileStore::prepare_snapshot(&dir, &at_two).unwrap();
        let path = discarded.path.clone();
        FileStore::discard(discarded);
        assert!(!path.exists());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn store_survives_reopen_truncate_torn_tail_and_snapshot() {
        // What was synced comes back in order; truncation and a torn tail cut the log; a
        // snapshot install drops the log and survives a reopen.
        let dir = temp_dir("reopen");
        let (mut store, durable) = FileStore::open(&dir).unwrap();
        assert_eq!(durable, Durable::empty());
        store.write_accepted_epoch(3).unwrap();
        store.write_current_epoch(2).unwrap();
        for counter in 1..=5 {
            store.append(&entry(2, counter)).unwrap();
        }
        store.sync().unwrap();
        store.truncate_after(Zxid::new(2, 3)).unwrap();
        store.append(&entry(3, 1)).unwrap();
        store.sync().unwrap();
        drop(store);
        let (store, durable) = FileStore::open(&dir).unwrap();
        drop(store);
        assert_eq!((durable.accepted_epoch, durable.current_epoch), (3, 2));
        let zxids: Vec<Zxid> = durable.log.iter().map(|e| e.zxid).collect();
        let expected = vec![
            Zxid::new(2, 1),
            Zxid::new(2, 2),
            Zxid::new(2, 3),
            Zxid::new(3, 1),
        ];
        assert_eq!(zxids, expected);
        assert_eq!(durable.log[3], entry(3, 1));

        let path = FileStore::log_path(&dir);
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let (mut store, durable) = FileStore::open(&dir).unwrap();
        assert_eq!(durable.log.len(), 3, "the torn record is dropped");
        store.append(&entry(3, 2)).unwrap();
        store.sync().unwrap();
        let snapshot = Snapshot {
            zxid: Zxid::new(3, 2),
            data: Payload::from(b"state".to_vec()).into(),
        };
        store.install_snapshot(&snapshot).unwrap();
        store.append(&entry(3, 3)).unwrap();
        store.sync().unwrap();
        drop(store);
        let (_, durable) = FileStore::open(&dir).unwrap();
        assert_eq!(durable.snapshot, snapshot);
        assert_eq!(durable.log, vec![entry(3, 3)]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn appends_land_in_zeros_written_ahead_and_a_crash_leaves_them_harmless() {
        // The log file is extended with zeros ahead of the appends; a crash leaves that
        // zero tail, which reopening ignores (the entries come back) and cuts off.
        let dir = temp_dir("prealloc");
        let (mut store, _) = FileStore::open(&dir).unwrap();
        for counter in 1..=100 {
            store.append(&entry(1, counter)).unwrap();
        }
        store.sync().unwrap();
        let path = FileStore::log_path(&dir);
        assert_eq!(fs::metadata(&path).unwrap().len(), PREALLOC_BYTES);
        for counter in 101..=150 {
            store.append(&entry(1, counter)).unwrap();
        }
        store.sync().unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), PREALLOC_BYTES);
        drop(store); // As after kill -9: the zeros stay.
        let (mut store, durable) = FileStore::open(&dir).unwrap();
        assert_eq!(durable.log.len(), 150);
        assert_eq!(durable.log[149], entry(1, 150));
        assert!(fs::metadata(&path).unwrap().len() < PREALLOC_BYTES);
        store.append(&entry(1, 151)).unwrap();
        store.sync().unwrap();
        drop(store);
        let (_, durable) = FileStore::open(&dir).unwrap();
        assert_eq!(durable.log.len(), 151);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn zeros_ahead_are_written_in_the_background_and_appends_wait_for_them() {
        // Past half of the zeros, the next 16 MiB are written on a thread; appends that
        // reach the end meanwhile wait for it rather than race it.
        let dir = temp_dir("zeros-ahead");
        let (mut store, _) = FileStore::open(&dir).unwrap();
        let big = |counter: u32| Entry {
            zxid: Zxid::new(1, counter),
            payload: Payload::from(vec![counter as u8; 1 << 20]),
        };
        for counter in 1..=9 {
            store.append(&big(counter)).unwrap();
            store.sync().unwrap();
        }
        assert!(
            store.zeroing.is_some(),
            "9 MiB into 16: the next zeros are under way"
        );
        for counter in 10..=20 {
            store.append(&big(counter)).unwrap();
            store.sync().unwrap();
        }
        assert_eq!(store.allocated_bytes, 2 * PREALLOC_BYTES);
        store.join_zeroing(true).unwrap();
        drop(store);
        let (_, durable) = FileStore::open(&dir).unwrap();
        assert_eq!(durable.log.len(), 20);
        for (entry, counter) in durable.log.iter().zip(1..) {
            assert_eq!(*entry, big(counter));
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn store_compaction_keeps_the_tail_even_when_it_crashed_halfway() {
        // compact keeps the entries after the snapshot; a crash after the snapshot but
        // before the log rewrite (the old log still holds the snapshot's zxid) is finished
        // on open; a log that does not hold it is stale and dropped.
        let dir = temp_dir("compact");
        let (mut store, _) = FileStore::open(&dir).unwrap();
        for counter in 1..=6 {
            store.append(&entry(1, counter)).unwrap();
        }
        store.sync().unwrap();
        let snapshot = |counter| Snapshot {
            zxid: Zxid::new(1, counter),
            data: Payload::from(format!("upto{counter}").into_bytes()).into(),
        };
        let tail: Vec<Entry> = (5..=6).map(|c| entry(1, c)).collect();
        store.compact(&snapshot(4), &tail).unwrap();
        store.append(&entry(1, 7)).unwrap();
        store.sync().unwrap();
        drop(store);
        let (store, durable) = FileStore::open(&dir).unwrap();
        drop(store);
        assert_eq!(durable.snapshot, snapshot(4));
        assert_eq!(durable.log, vec![entry(1, 5), entry(1, 6), entry(1, 7)]);

        // The crash: a newer snapshot replaced, the log not rewritten yet.
        let (store, _) = FileStore::open(&dir).unwrap();
        store
            .replace(
                "keel-zab.snapshot",
                &[&snapshot_header(&snapshot(6)), &snapshot(6).data],
            )
            .unwrap();
        drop(store);
        let (store, durable) = FileStore::open(&dir).unwrap();
        drop(store);
        assert_eq!(durable.snapshot, snapshot(6));
        assert_eq!(durable.log, vec![entry(1, 7)]);

        // A snapshot beyond everything the log holds (a SNAP install that crashed before
        // resetting the log): the log is stale.
        let (store, _) = FileStore::open(&dir).unwrap();
        let foreign = Snapshot {
            zxid: Zxid::new(2, 9),
            data: Payload::from(b"other".to_vec()).into(),
        };
        store
            .replace(
                "keel-zab.snapshot",
                &[&snapshot_header(&foreign), &foreign.data],
            )
            .unwrap();
        drop(store);
        let (_, durable) = FileStore::open(&dir).unwrap();
        assert_eq!(durable.snapshot, foreign);
        assert!(durable.log.is_empty());
        fs::remove_dir_all(&dir).unwrap();
    }
}
