//! recover: read the log back after a restart — verify every record, keep the valid prefix,
//! truncate a torn tail, refuse to silently drop committed data.
//!
//! Owns: the segment scan (pure: `scan_segment` over a segment's bytes), the classification of
//! damage (torn tail vs. corruption in the middle), and the repairs recovery makes: zeroing a
//! torn tail, restoring a cut file to its full size, deleting leftover `.partial` files and an
//! empty newest segment, and — only with `truncate_at_corruption` — setting aside later
//! segments as `.dropped`.
//! Must not: panic on any byte of any file; allocate by a length read from disk before checking
//! it (segments are bounded by `SEGMENT_BYTES_MAX`, records by `RECORD_PAYLOAD_BYTES_MAX`
//! and the bytes that remain); truncate past damage that is followed by valid records unless
//! told to.
//! Invariants: the txns returned have strictly increasing zxids, all > `snapshot_zxid`; every
//! record before the first damage is returned (or skipped as covered by the snapshot); the
//! `Resume` points at the first free block after the last kept record.
//!
//! Damage is the first offset where the segment stops reading as the writer writes it: a bad
//! magic, length or CRC, a "KREC" record outside a write, a "KBAT" record off a block boundary,
//! a zxid that does not increase, non-zero padding, or non-zero bytes after the end-of-log
//! zeros. It is a torn tail when nothing valid follows it (only the newest write can be torn:
//! the writer never starts a write before the previous one's fdatasync returned); it is
//! `CorruptMiddle` when a valid "KBAT" record sits at a later block boundary or a later segment
//! holds records, because those were written after the damaged data had been synced.

use super::record::{decode_frame, parse_frame, RecordError, MAGIC_BATCH};
use super::segment::{
    align_down, align_up, parse_segment_header, segment_name, write_zeroed_range, LogDir, LogFile,
    LogTail, SEGMENT_BYTES_MAX, SEGMENT_HEADER_BYTES, VERSION_DIR,
};
use super::{LogError, BLOCK_BYTES};
use crate::tree::{Txn, TxnHeader};

/// Both record magics begin with this byte, so a zero byte where a record would start is
/// padding or the end of the log, never a record.
const MAGIC_FIRST_BYTE: u8 = MAGIC_BATCH.to_be_bytes()[0];
const _: () = assert!(MAGIC_FIRST_BYTE != 0);
const _: () = assert!(super::record::MAGIC_RECORD.to_be_bytes()[0] == MAGIC_FIRST_BYTE);

/// What to recover and how far to go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RecoverOptions {
    /// The zxid the loaded snapshot covers; only later txns are decoded and returned.
    pub snapshot_zxid: i64,
    /// Truncate at the first damage even when valid (committed) records follow it. An
    /// operator's decision to lose data: the default refuses with `CorruptMiddle`.
    pub truncate_at_corruption: bool,
}

/// Where a writer resumes: the newest kept segment and the last zxid in the log (0 if empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Resume {
    pub tail: Option<LogTail>,
    pub last_zxid: i64,
}

/// What recovery found and did.
#[derive(Debug)]
pub struct Recovery {
    /// The valid txns with zxid > `snapshot_zxid`, in zxid order.
    pub txns: Vec<(TxnHeader, Txn)>,
    pub resume: Resume,
    pub report: RecoveryReport,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments_scanned: usize,
    /// Oldest segments not read at all: every record in them is covered by the snapshot
    /// (the next segment starts at or below `snapshot_zxid + 1`).
    pub segments_covered: usize,
    /// Valid records in the kept log, snapshot-covered ones included.
    pub records_valid: u64,
    pub partials_removed: usize,
    /// Newest segments with no valid record, deleted (a roll whose first write never landed).
    pub empty_segments_removed: usize,
    pub truncation: Option<Truncation>,
}

/// A truncation recovery made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    pub segment: String,
    pub offset_bytes: u64,
    /// From the damage to the last non-zero byte of the segment: the bytes zeroed.
    pub dropped_bytes: u64,
    /// Records with a valid CRC found past the damage (survivors of a torn write, or with
    /// `truncate_at_corruption` committed records), not counting later segments.
    pub dropped_records: u64,
    /// Later segments renamed to `.dropped` (only with `truncate_at_corruption`).
    pub dropped_segments: Vec<String>,
    /// Valid records followed the damage: committed data was dropped on request.
    pub committed_data_dropped: bool,
}

/// The first damage in a segment, assessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Damage {
    pub offset_bytes: u64,
    /// One past the last non-zero byte of the segment (at least `offset_bytes`).
    pub end_bytes: u64,
    pub records_after: u64,
    /// A valid "KBAT" record with a higher zxid starts at a later block boundary.
    pub batch_after: bool,
}

/// One segment, scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentScan {
    pub segment_bytes: u64,
    /// The last valid zxid so far (the `prev_zxid` given, if this segment has no record).
    pub last_zxid: i64,
    pub records: u64,
    /// The first block after the last valid record: where the next write goes.
    pub append_offset_bytes: u64,
    pub damage: Option<Damage>,
}

/// Why a segment cannot be scanned at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScanError {
    BadSegment(&'static str),
    Decode {
        offset_bytes: u64,
        reason: RecordError,
    },
}

fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|byte| *byte == 0)
}

enum Stop {
    /// The records end here, followed only by zeros.
    End(usize),
    Damage(usize),
}

struct Walk<'a> {
    image: &'a [u8],
    first_zxid: i64,
    snapshot_zxid: i64,
    last_zxid: i64,
    records: u64,
}

impl Walk<'_> {
    /// Reads records from the end of the header until the end of the log or the first
    /// damage, decoding (and collecting) those after the snapshot.
    fn run(&mut self, txns: &mut Vec<(TxnHeader, Txn)>) -> Result<Stop, ScanError> {
        let mut offset = SEGMENT_HEADER_BYTES;
        let mut in_write = false;
        loop {
            let Some(rest) = self.image.get(offset..).filter(|rest| !rest.is_empty()) else {
                return Ok(Stop::End(offset));
            };
            let block_left = BLOCK_BYTES - offset % BLOCK_BYTES;
            let aligned = block_left == BLOCK_BYTES;
            if rest.first() == Some(&0) {
                let zeros = if aligned {
                    rest
                } else {
                    rest.get(..block_left).unwrap_or(rest)
                };
                if !all_zero(zeros) {
                    return Ok(Stop::Damage(offset));
                }
                if aligned {
                    return Ok(Stop::End(offset));
                }
                offset += block_left;
                in_write = false;
                continue;
            }
            let Ok(frame) = parse_frame(rest) else {
                return Ok(Stop::Damage(offset));
            };
            let placed = if frame.first_in_batch {
                aligned
            } else {
                in_write
            };
            let first_ok = self.records > 0 || frame.zxid == self.first_zxid;
            if !placed || !first_ok || frame.zxid <= self.last_zxid {
                return Ok(Stop::Damage(offset));
            }
            if frame.zxid > self.snapshot_zxid {
                let decoded = decode_frame(&frame).map_err(|reason| ScanError::Decode {
                    offset_bytes: offset as u64,
                    reason,
                })?;
                txns.push(decoded);
            }
            self.last_zxid = frame.zxid;
            self.records += 1;
            in_write = true;
            offset += frame.total_bytes();
        }
    }
}

/// Scans one segment image (its full preallocated length), appending the txns after
/// `snapshot_zxid` to `txns`. `prev_zxid` is the last zxid of the segments before it.
///
/// # Errors
/// `BadSegment` if the header is unacceptable or names another zxid, or the image is not the
/// size the header gives; `Decode` if a record passes its CRC but does not decode.
pub fn scan_segment(
    image: &[u8],
    first_zxid: i64,
    prev_zxid: i64,
    snapshot_zxid: i64,
    txns: &mut Vec<(TxnHeader, Txn)>,
) -> Result<SegmentScan, ScanError> {
    let (header_zxid, segment_bytes) =
        parse_segment_header(image).map_err(ScanError::BadSegment)?;
    if header_zxid != first_zxid {
        return Err(ScanError::BadSegment("its header names another first zxid"));
    }
    if image.len() as u64 != segment_bytes {
        return Err(ScanError::BadSegment("its length differs from its header"));
    }
    let mut walk = Walk {
        image,
        first_zxid,
        snapshot_zxid,
        last_zxid: prev_zxid,
        records: 0,
    };
    let stop = walk.run(txns)?;
    let (end, damage) = match stop {
        Stop::End(offset) => (offset, None),
        Stop::Damage(offset) => (offset, Some(assess(image, offset, walk.last_zxid))),
    };
    let scan = SegmentScan {
        segment_bytes,
        last_zxid: walk.last_zxid,
        records: walk.records,
        append_offset_bytes: align_up(end as u64),
        damage,
    };
    assert!(scan.append_offset_bytes <= segment_bytes);
    assert!(scan.last_zxid >= prev_zxid);
    Ok(scan)
}

/// Measures the damage at `offset`: how far non-zero bytes reach, how many valid frames lie
/// beyond it, and whether a later write (a "KBAT" record at a block boundary) survives.
fn assess(image: &[u8], offset: usize, last_zxid: i64) -> Damage {
    let end = image
        .iter()
        .rposition(|byte| *byte != 0)
        .map_or(offset, |last| last + 1)
        .max(offset);
    let region = image.get(offset..end).unwrap_or(&[]);
    let frame_at = |at: usize| image.get(at..).map(parse_frame);
    let records_after = region
        .iter()
        .enumerate()
        .filter(|(_, byte)| **byte == MAGIC_FIRST_BYTE)
        .filter(|(index, _)| matches!(frame_at(offset + index), Some(Ok(_))))
        .count() as u64;
    let first_block = (offset / BLOCK_BYTES + 1) * BLOCK_BYTES;
    let batch_after = (first_block..end).step_by(BLOCK_BYTES).any(|at| {
        matches!(frame_at(at), Some(Ok(frame)) if frame.first_in_batch && frame.zxid > last_zxid)
    });
    Damage {
        offset_bytes: offset as u64,
        end_bytes: end as u64,
        records_after,
        batch_after,
    }
}

fn io_error(op: &'static str, first_zxid: i64) -> impl FnOnce(std::io::Error) -> LogError {
    move |source| LogError::Io {
        op,
        segment: segment_name(first_zxid),
        source,
    }
}

/// An IO error on the segment directory itself rather than one segment.
fn dir_error(op: &'static str) -> impl FnOnce(std::io::Error) -> LogError {
    move |source| LogError::Io {
        op,
        segment: VERSION_DIR.to_string(),
        source,
    }
}

fn scan_error(first_zxid: i64) -> impl FnOnce(ScanError) -> LogError {
    move |error| match error {
        ScanError::BadSegment(reason) => LogError::BadSegment {
            segment: segment_name(first_zxid),
            reason,
        },
        ScanError::Decode {
            offset_bytes,
            reason,
        } => LogError::Decode {
            segment: segment_name(first_zxid),
            offset_bytes,
            reason,
        },
    }
}

/// Reads a segment and pads a cut file with zeros to the size its header gives, returning
/// the image and the file's length as found.
fn load_image<D: LogDir>(dir: &mut D, first_zxid: i64) -> Result<(Vec<u8>, u64), LogError> {
    let mut image = dir
        .read_segment(first_zxid, SEGMENT_BYTES_MAX)
        .map_err(io_error("read", first_zxid))?;
    let found_bytes = image.len() as u64;
    let (_, segment_bytes) =
        parse_segment_header(&image).map_err(|reason| LogError::BadSegment {
            segment: segment_name(first_zxid),
            reason,
        })?;
    if found_bytes < segment_bytes {
        // Bounded: the header's size was checked against SEGMENT_BYTES_MAX.
        image.resize(usize::try_from(segment_bytes).unwrap_or(0), 0);
    }
    Ok((image, found_bytes))
}

/// Whether any of these segments holds a valid first write (or cannot be read as a segment,
/// which conservatively counts as data that may have been committed).
fn any_records<D: LogDir>(dir: &mut D, first_zxids: &[i64]) -> Result<bool, LogError> {
    for &first_zxid in first_zxids {
        let image = match load_image(dir, first_zxid) {
            Ok((image, _)) => image,
            Err(LogError::BadSegment { .. }) => return Ok(true),
            Err(error) => return Err(error),
        };
        let first = image.get(SEGMENT_HEADER_BYTES..).map(parse_frame);
        if matches!(first, Some(Ok(frame)) if frame.first_in_batch) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Zeroes `[from_bytes, end)` of a segment — `end` being the last non-zero byte, or the full
/// size when the file was found cut short — keeping the valid bytes of the first block, then
/// fdatasyncs. The writer never rewrites a block, so this is the only partial-block write.
fn zero_tail<D: LogDir>(
    dir: &mut D,
    first_zxid: i64,
    image: &[u8],
    from_bytes: u64,
    end_bytes: u64,
) -> Result<(), LogError> {
    let start_bytes = align_down(from_bytes);
    let stop_bytes = align_up(end_bytes).min(image.len() as u64);
    if stop_bytes <= start_bytes {
        return Ok(());
    }
    let keep = usize::try_from(start_bytes)
        .ok()
        .zip(usize::try_from(from_bytes).ok())
        .and_then(|(start, from)| image.get(start..from))
        .unwrap_or(&[]);
    let mut file = dir
        .open_segment(first_zxid)
        .map_err(io_error("open", first_zxid))?;
    write_zeroed_range(&mut file, start_bytes, stop_bytes, keep)
        .map_err(io_error("zero the tail", first_zxid))?;
    file.sync().map_err(|source| LogError::Sync {
        segment: segment_name(first_zxid),
        source,
    })
}

/// Recovery's running state across segments.
struct Recovering {
    options: RecoverOptions,
    txns: Vec<(TxnHeader, Txn)>,
    report: RecoveryReport,
    last_zxid: i64,
    /// (first zxid, scan) of every kept segment.
    kept: Vec<(i64, SegmentScan)>,
}

impl Recovering {
    /// Scans one segment; returns false once damage ended the log.
    fn segment<D: LogDir>(
        &mut self,
        dir: &mut D,
        zxids: &[i64],
        index: usize,
    ) -> Result<bool, LogError> {
        let Some(&first_zxid) = zxids.get(index) else {
            return Ok(false);
        };
        let (image, found_bytes) = load_image(dir, first_zxid)?;
        let snapshot_zxid = self.options.snapshot_zxid;
        let mut scan = scan_segment(
            &image,
            first_zxid,
            self.last_zxid,
            snapshot_zxid,
            &mut self.txns,
        )
        .map_err(scan_error(first_zxid))?;
        self.report.segments_scanned += 1;
        self.report.records_valid += scan.records;
        self.last_zxid = scan.last_zxid;
        let cut_short = found_bytes < scan.segment_bytes;
        let Some(damage) = scan.damage else {
            if cut_short {
                zero_tail(dir, first_zxid, &image, found_bytes, scan.segment_bytes)?;
            }
            self.kept.push((first_zxid, scan));
            return Ok(true);
        };
        let later = zxids.get(index + 1..).unwrap_or(&[]);
        let committed_after = damage.batch_after || any_records(dir, later)?;
        if committed_after && !self.options.truncate_at_corruption {
            return Err(LogError::CorruptMiddle {
                segment: segment_name(first_zxid),
                offset_bytes: damage.offset_bytes,
            });
        }
        let end_bytes = if cut_short {
            scan.segment_bytes
        } else {
            damage.end_bytes
        };
        zero_tail(dir, first_zxid, &image, damage.offset_bytes, end_bytes)?;
        let mut dropped_segments = Vec::with_capacity(later.len());
        for &zxid in later {
            dir.retire_segment(zxid, true)
                .map_err(io_error("set aside", zxid))?;
            dropped_segments.push(segment_name(zxid));
        }
        self.report.truncation = Some(Truncation {
            segment: segment_name(first_zxid),
            offset_bytes: damage.offset_bytes,
            dropped_bytes: damage.end_bytes - damage.offset_bytes,
            dropped_records: damage.records_after,
            dropped_segments,
            committed_data_dropped: committed_after,
        });
        scan.damage = None;
        self.kept.push((first_zxid, scan));
        Ok(false)
    }

    /// Deletes the newest segments while they hold no record: each was created for a write
    /// that never landed, and is named for a zxid the log does not contain.
    fn drop_empty_tail<D: LogDir>(&mut self, dir: &mut D) -> Result<(), LogError> {
        while let Some(&(first_zxid, scan)) = self.kept.last() {
            if scan.records > 0 {
                break;
            }
            dir.retire_segment(first_zxid, false)
                .map_err(io_error("remove empty", first_zxid))?;
            self.kept.pop();
            self.report.empty_segments_removed += 1;
        }
        Ok(())
    }
}

/// Recovers the log in `dir`: scans every segment in zxid order, returns the valid txns after
/// `options.snapshot_zxid`, truncates a torn tail, and says where a writer resumes.
///
/// # Errors
/// `CorruptMiddle` when damage is followed by valid records (unless `truncate_at_corruption`);
/// `BadSegment` for a segment whose header is unacceptable; `Decode` for a record that passes
/// its CRC but does not decode; `Io`/`Sync` if reading or repairing fails.
pub fn recover<D: LogDir>(dir: &mut D, options: &RecoverOptions) -> Result<Recovery, LogError> {
    let partials_removed = dir
        .remove_partials()
        .map_err(dir_error("remove partial segments"))?;
    let mut zxids = dir.list_segments().map_err(dir_error("list"))?;
    zxids.sort_unstable();
    let mut state = Recovering {
        options: *options,
        txns: Vec::new(),
        report: RecoveryReport {
            partials_removed,
            ..RecoveryReport::default()
        },
        last_zxid: 0,
        kept: Vec::with_capacity(zxids.len()),
    };
    for index in 0..zxids.len() {
        // What the snapshot covers needs no reading: at a million znodes that is most of the
        // log, and reading it would delay the first request by seconds.
        let covered = options.snapshot_zxid > 0
            && zxids
                .get(index + 1)
                .is_some_and(|next| next.saturating_sub(1) <= options.snapshot_zxid);
        if covered {
            state.report.segments_covered += 1;
            continue;
        }
        if !state.segment(dir, &zxids, index)? {
            break;
        }
    }
    state.drop_empty_tail(dir)?;
    let tail = state.kept.last().map(|&(first_zxid, scan)| LogTail {
        first_zxid,
        segment_bytes: scan.segment_bytes,
        append_offset_bytes: scan.append_offset_bytes,
    });
    let txns_sorted = state.txns.windows(2).all(|pair| match pair {
        [before, after] => before.0.zxid < after.0.zxid,
        _ => true,
    });
    assert!(txns_sorted, "recovered zxids strictly increase");
    Ok(Recovery {
        txns: state.txns,
        resume: Resume {
            tail,
            last_zxid: state.last_zxid,
        },
        report: state.report,
    })
}
