//! writer: group commit — buffer the records of many batches, then one aligned write and one
//! fdatasync for all of them.
//!
//! Owns: the append buffer (one block-aligned allocation made at start), the active segment and
//! its write offset, rolling to a new pre-zeroed segment when a write would not fit, and the
//! zxids appended and made durable.
//! Must not: retry anything. The first failed write, fdatasync or segment creation poisons the
//! writer — every later call returns `LogError::Poisoned` without touching the disk — because
//! after a failed fsync the kernel may have dropped the dirty data and cleared the error, so a
//! second fsync "succeeding" proves nothing. The caller crashes and recovers instead.
//! Invariants (`invariants`): durable ≤ appended zxid; the buffer is non-empty exactly when a
//! first buffered zxid is set; the write offset is block-aligned, past the header, within the
//! segment; writes never overlap an earlier write (each starts on a fresh block).
//!
//! Driving it (DESIGN §5, STYLE rule 7): while one `flush_and_sync` is in flight the replica
//! core keeps calling `append_batch`; when the flush returns, the next one takes everything
//! buffered. Only zxids ≤ the returned durable zxid may be acknowledged or applied.

use super::record::{encode_record, parse_frame};
use super::recover::Resume;
use super::segment::{
    encode_segment_header, segment_name, write_zeroed_range, AlignedBuffer, LogDir, LogFile,
    LogTail, SEGMENT_BYTES_MAX, SEGMENT_BYTES_MIN, SEGMENT_HEADER_BYTES,
};
use super::{LogError, BLOCK_BYTES};
use crate::tree::{Txn, TxnHeader};
use std::io;

/// Writer limits and switches (from zoo.cfg where ZooKeeper has a key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// Bytes per segment file, header included; whole blocks. ZooKeeper's preAllocSize is 64 MiB.
    pub segment_bytes: u64,
    /// The most bytes buffered between two flushes, padding included; whole blocks. Also the
    /// largest single write, so it must fit in a segment after its header.
    pub batch_bytes_max: usize,
    /// zoo.cfg `forceSync`: false skips fdatasync, so a flush is written but not durable.
    pub force_sync: bool,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            segment_bytes: 64 << 20,
            batch_bytes_max: 16 << 20,
            force_sync: true,
        }
    }
}

impl LogConfig {
    /// # Errors
    /// The first rule the configuration breaks.
    pub fn validate(&self) -> Result<(), &'static str> {
        let block_bytes = BLOCK_BYTES as u64;
        if !(SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&self.segment_bytes) {
            return Err("segment_bytes out of range");
        }
        let whole_blocks = self.segment_bytes.is_multiple_of(block_bytes)
            && self.batch_bytes_max.is_multiple_of(BLOCK_BYTES);
        if !whole_blocks {
            return Err("segment_bytes and batch_bytes_max must be whole 4 KiB blocks");
        }
        let room_bytes = self.segment_bytes - SEGMENT_HEADER_BYTES as u64;
        let batch_bytes = self.batch_bytes_max as u64;
        if batch_bytes < block_bytes || batch_bytes > room_bytes {
            return Err("batch_bytes_max must be at least a block and fit in a segment");
        }
        Ok(())
    }
}

struct ActiveSegment<F> {
    file: F,
    first_zxid: i64,
    segment_bytes: u64,
    write_offset_bytes: u64,
}

/// The log's single writer, on the replica core. See the module header.
pub struct LogWriter<D: LogDir> {
    dir: D,
    config: LogConfig,
    segment: Option<ActiveSegment<D::File>>,
    buffer: AlignedBuffer,
    /// One `append_batch`'s records, encoded before any of them is committed to the buffer.
    scratch: Vec<u8>,
    buffered_first_zxid: Option<i64>,
    appended_zxid: i64,
    durable_zxid: i64,
    poisoned: bool,
}

fn io_error(op: &'static str, first_zxid: i64) -> impl FnOnce(io::Error) -> LogError {
    move |source| LogError::Io {
        op,
        segment: segment_name(first_zxid),
        source,
    }
}

impl<D: LogDir> LogWriter<D> {
    /// A writer that appends after `resume` (from `recover`), or starts a fresh log.
    ///
    /// # Errors
    /// An invalid configuration, or the tail segment cannot be opened or has the wrong size.
    pub fn new(mut dir: D, config: LogConfig, resume: &Resume) -> Result<Self, LogError> {
        config.validate().map_err(LogError::Config)?;
        let segment = match resume.tail {
            None => None,
            Some(tail) => Some(open_tail(&mut dir, tail)?),
        };
        let writer = LogWriter {
            dir,
            config,
            segment,
            buffer: AlignedBuffer::new(config.batch_bytes_max),
            scratch: Vec::new(),
            buffered_first_zxid: None,
            appended_zxid: resume.last_zxid,
            durable_zxid: resume.last_zxid,
            poisoned: false,
        };
        writer.invariants();
        Ok(writer)
    }

    /// The highest zxid whose flush completed (and was fdatasynced, with `force_sync`).
    pub fn durable_zxid(&self) -> i64 {
        self.durable_zxid
    }

    /// The highest zxid handed to `append_batch`.
    pub fn appended_zxid(&self) -> i64 {
        self.appended_zxid
    }

    /// Bytes buffered for the next flush, before padding; flush before `batch_bytes_max`.
    pub fn pending_bytes(&self) -> usize {
        self.buffer.len()
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// The segment directory (for messages that name a segment's full path).
    pub fn dir(&self) -> &D {
        &self.dir
    }

    /// Encodes `txns` into the buffer for the next flush; nothing reaches the disk.
    ///
    /// # Errors
    /// `Poisoned` after an earlier failure; `RecordTooLarge` or `BatchTooLarge` (flush first,
    /// or split the batch), in which case nothing of `txns` was buffered.
    ///
    /// # Panics
    /// If zxids do not strictly increase, or a txn cannot be logged faithfully (bugs).
    pub fn append_batch(&mut self, txns: &[(TxnHeader, Txn)]) -> Result<(), LogError> {
        if self.poisoned {
            return Err(LogError::Poisoned);
        }
        self.scratch.clear();
        let mut zxid = self.appended_zxid;
        for (index, (header, txn)) in txns.iter().enumerate() {
            assert!(
                header.zxid > zxid,
                "zxid {:#x} appended after {zxid:#x}",
                header.zxid
            );
            let first_in_batch = index == 0 && self.buffer.is_empty();
            encode_record(header, txn, first_in_batch, &mut self.scratch)?;
            zxid = header.zxid;
        }
        let bytes = self.buffer.len() + self.scratch.len();
        if bytes > self.buffer.capacity() {
            return Err(LogError::BatchTooLarge {
                bytes,
                bytes_max: self.buffer.capacity(),
            });
        }
        let appended = self.buffer.extend_from_slice(&self.scratch);
        assert!(appended, "capacity was checked");
        if let (None, Some((header, _))) = (self.buffered_first_zxid, txns.first()) {
            self.buffered_first_zxid = Some(header.zxid);
        }
        self.appended_zxid = zxid;
        Ok(())
    }

    /// Deletes the segments whose every record is at or below `zxid` (covered by a kept
    /// snapshot): each segment but the active one, when the next segment starts at or below
    /// `zxid + 1`. Returns how many went. A failure here loses nothing (the files stay) and
    /// does not poison the writer.
    ///
    /// # Errors
    /// Listing or deleting a segment failed.
    pub fn retire_segments_through(&mut self, zxid: i64) -> Result<usize, LogError> {
        let mut firsts = self.dir.list_segments().map_err(io_error("list", zxid))?;
        firsts.sort_unstable();
        let active = self.segment.as_ref().map(|segment| segment.first_zxid);
        let mut retired = 0;
        for pair in firsts.windows(2) {
            let &[first, next] = pair else { break };
            if Some(first) == active || next.saturating_sub(1) > zxid {
                break;
            }
            self.dir
                .retire_segment(first, false)
                .map_err(io_error("retire", first))?;
            retired += 1;
        }
        Ok(retired)
    }

    /// Writes everything buffered as one block-aligned write (rolling to a new segment if it
    /// does not fit), fdatasyncs it unless `force_sync` is off, and returns the durable zxid.
    ///
    /// # Errors
    /// `Write`, `Sync` or `Io` (segment creation): fatal — the writer is poisoned and the
    /// caller must crash and recover, never retry. `Poisoned` after an earlier failure.
    pub fn flush_and_sync(&mut self) -> Result<i64, LogError> {
        if self.poisoned {
            return Err(LogError::Poisoned);
        }
        let Some(first_zxid) = self.buffered_first_zxid else {
            return Ok(self.durable_zxid);
        };
        self.buffer.pad_to_block();
        self.verify_buffer(first_zxid);
        let result = self.write_buffer(first_zxid);
        if let Err(error) = result {
            self.poisoned = true;
            return Err(error);
        }
        self.buffer.clear();
        self.buffered_first_zxid = None;
        self.durable_zxid = self.appended_zxid;
        self.invariants();
        Ok(self.durable_zxid)
    }

    fn write_buffer(&mut self, first_zxid: i64) -> Result<(), LogError> {
        let write_bytes = self.buffer.len() as u64;
        let fits = self.segment.as_ref().is_some_and(|segment| {
            segment.write_offset_bytes + write_bytes <= segment.segment_bytes
        });
        if !fits {
            self.roll(first_zxid)?;
        }
        let Some(segment) = self.segment.as_mut() else {
            unreachable!("roll installs a segment");
        };
        let offset_bytes = segment.write_offset_bytes;
        assert!(offset_bytes + write_bytes <= segment.segment_bytes);
        let name = || segment_name(segment.first_zxid);
        if let Err(source) = segment.file.write_at(offset_bytes, self.buffer.as_slice()) {
            let segment = name();
            return Err(LogError::Write {
                segment,
                offset_bytes,
                source,
            });
        }
        if self.config.force_sync {
            if let Err(source) = segment.file.sync() {
                return Err(LogError::Sync {
                    segment: name(),
                    source,
                });
            }
        }
        segment.write_offset_bytes += write_bytes;
        Ok(())
    }

    /// Creates, zero-fills, syncs and publishes `log.<first_zxid>`, and makes it active.
    /// The fdatasync here runs even without `force_sync`: a published segment must have its
    /// full size and header on disk before its name exists.
    fn roll(&mut self, first_zxid: i64) -> Result<(), LogError> {
        let segment_bytes = self.config.segment_bytes;
        let mut file = self
            .dir
            .create_partial(first_zxid, segment_bytes)
            .map_err(io_error("create", first_zxid))?;
        let mut header = [0u8; SEGMENT_HEADER_BYTES];
        encode_segment_header(first_zxid, segment_bytes, &mut header);
        write_zeroed_range(&mut file, 0, segment_bytes, &header)
            .map_err(io_error("zero-fill", first_zxid))?;
        file.sync().map_err(|source| LogError::Sync {
            segment: segment_name(first_zxid),
            source,
        })?;
        self.dir
            .publish(first_zxid)
            .map_err(io_error("publish", first_zxid))?;
        self.segment = Some(ActiveSegment {
            file,
            first_zxid,
            segment_bytes,
            write_offset_bytes: SEGMENT_HEADER_BYTES as u64,
        });
        Ok(())
    }

    /// Pair assertion, write side: the padded buffer reads back as recovery will read it —
    /// one "KBAT" record first, zxids increasing from the last durable one to the last
    /// appended one, then zeros to the block boundary.
    fn verify_buffer(&self, first_zxid: i64) {
        let bytes = self.buffer.as_slice();
        let mut offset = 0;
        let mut zxid = self.durable_zxid;
        while let Some(Ok(frame)) = bytes.get(offset..).map(parse_frame) {
            assert_eq!(
                frame.first_in_batch,
                offset == 0,
                "only the first record is KBAT"
            );
            assert!(frame.zxid > zxid, "zxids increase within a write");
            assert!(offset != 0 || frame.zxid == first_zxid);
            zxid = frame.zxid;
            offset += frame.total_bytes();
        }
        assert_eq!(zxid, self.appended_zxid, "every buffered record verifies");
        let padding = bytes.get(offset..).unwrap_or(&[]);
        assert!(padding.iter().all(|byte| *byte == 0), "padding is zeros");
        assert_eq!(bytes.len() % BLOCK_BYTES, 0);
    }

    /// # Panics
    /// If an invariant in the module header does not hold.
    pub fn invariants(&self) {
        assert!(self.durable_zxid <= self.appended_zxid);
        assert_eq!(self.buffered_first_zxid.is_some(), !self.buffer.is_empty());
        assert!(self.buffer.len() <= self.buffer.capacity());
        if let Some(segment) = &self.segment {
            assert_eq!(segment.write_offset_bytes % BLOCK_BYTES as u64, 0);
            assert!(segment.write_offset_bytes >= SEGMENT_HEADER_BYTES as u64);
            assert!(segment.write_offset_bytes <= segment.segment_bytes);
        }
    }
}

fn open_tail<D: LogDir>(dir: &mut D, tail: LogTail) -> Result<ActiveSegment<D::File>, LogError> {
    assert_eq!(tail.append_offset_bytes % BLOCK_BYTES as u64, 0);
    assert!(tail.append_offset_bytes >= SEGMENT_HEADER_BYTES as u64);
    assert!(tail.append_offset_bytes <= tail.segment_bytes);
    let file = dir
        .open_segment(tail.first_zxid)
        .map_err(io_error("open", tail.first_zxid))?;
    let len_bytes = file
        .len_bytes()
        .map_err(io_error("stat", tail.first_zxid))?;
    if len_bytes != tail.segment_bytes {
        return Err(LogError::BadSegment {
            segment: segment_name(tail.first_zxid),
            reason: "its length differs from its header",
        });
    }
    Ok(ActiveSegment {
        file,
        first_zxid: tail.first_zxid,
        segment_bytes: tail.segment_bytes,
        write_offset_bytes: tail.append_offset_bytes,
    })
}
