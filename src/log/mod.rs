//! log: the write-ahead log — txns made durable in group-committed batches, and recovered.
//!
//! Owns: the record format (`record`: a checksummed frame around a txn encoded exactly as
//! ZooKeeper's txn records), segment files (`segment`: naming, header, pre-zeroed
//! preallocation, the `LogDir`/`LogFile` IO seam and its O_DIRECT implementation), the
//! group-commit writer (`writer`) and recovery (`recover`: scan, verify, truncate a torn tail).
//! Must not: import `io`, `shard`, `server` or `replica` (the replica core's driver calls in
//! here, not the other way round); panic on anything read from disk; retry a failed write or
//! fdatasync — after a failed fsync the kernel may have dropped the dirty pages and cleared
//! the error, so the only safe reaction is to crash and recover from what is on disk.
//!
//! On-disk format, in `<dataLogDir>/version-2/`:
//! - A segment is `log.<first zxid, lowercase hex, unpadded>` (ZooKeeper's naming), exactly
//!   `segment_bytes` long, created under `log.<hex>.partial`, zero-filled, given its header
//!   block, fdatasynced, then renamed into place and the directory fsynced. A `.partial` left by
//!   a crash is deleted by recovery; a published segment always has its full size and header.
//! - Block 0 (4 KiB) is the segment header: magic "KLOG", format version, first zxid, segment
//!   bytes, CRC32C of those fields, zeros.
//! - From byte 4096 on, records. Each write (one `flush_and_sync`) starts on a 4 KiB boundary
//!   and is padded with zeros to the next one, so O_DIRECT never rewrites a block that holds
//!   synced records. A record is `magic u32 | payload_bytes u32 | crc32c u32 | zxid i64 |
//!   payload` (big-endian, 20-byte header), the CRC over `zxid ‖ payload`. The first record of a
//!   write carries magic "KBAT", the others "KREC"; zero is never a magic.
//! - Recognising the end: both magics begin with the byte 0x4B, so a zero byte where a record
//!   would start means "padding to the next block" mid-block (the rest of that block must be
//!   zero) and "end of log" at a block boundary (the rest of the segment must be zero, as
//!   preallocation left it). Anything else there is damage.
//!
//! Invariants: zxids strictly increase across all records of all segments; a record is
//! checked (CRC, zxid) when encoded and again when read back; every segment file has its full
//! preallocated size; writes are block-aligned and never overlap synced data.
//!
//! Why "KBAT": writes are serial (the next write starts after the previous fdatasync returned),
//! so only the newest write can be torn. Damage followed by a valid "KBAT" record at a later
//! block boundary (or by a later segment with records) therefore hit data that was already
//! synced — `LogError::CorruptMiddle` — while damage followed by nothing valid is a torn tail,
//! truncated with a report. Two consequences: overlapping a write with the previous fdatasync
//! (the io_uring optimisation) must keep at most one unsynced write per torn-able region or
//! revisit this rule; and with `force_sync` off several unsynced writes can be lost in any
//! order, so a crash may read as `CorruptMiddle` — `truncate_at_corruption` is the way back.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::cast_possible_truncation
    )
)]

pub mod record;
pub mod recover;
pub mod segment;
pub mod writer;

#[cfg(test)]
mod tests;

pub use record::{decode_txn, encode_txn, RecordError};
pub use recover::{recover, RecoverOptions, Recovery, RecoveryReport, Resume, Truncation};
pub use segment::{DirectDir, DirectFile, LogDir, LogFile, LogTail};
pub use writer::{LogConfig, LogWriter};

use std::io;
use std::path::Path;

/// The unit of O_DIRECT IO and of batch alignment.
pub const BLOCK_BYTES: usize = 4096;

/// Why the log could not do what was asked. `Write`, `Sync` and `Poisoned` from the writer are
/// fatal: the caller crashes the process and recovers; it never retries.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{op} of {segment} failed: {source}")]
    Io {
        op: &'static str,
        segment: String,
        #[source]
        source: io::Error,
    },
    #[error("write to {segment} at byte {offset_bytes} failed (fatal, not retried): {source}")]
    Write {
        segment: String,
        offset_bytes: u64,
        #[source]
        source: io::Error,
    },
    #[error("fdatasync of {segment} failed (fatal, never retried): {source}")]
    Sync {
        segment: String,
        #[source]
        source: io::Error,
    },
    #[error("the log writer failed earlier and accepts nothing more")]
    Poisoned,
    #[error("the batch would buffer {bytes} bytes, over the limit of {bytes_max}")]
    BatchTooLarge { bytes: usize, bytes_max: usize },
    #[error("txn {zxid} encodes to {bytes} bytes, over the record limit of {bytes_max}")]
    RecordTooLarge {
        zxid: i64,
        bytes: usize,
        bytes_max: usize,
    },
    #[error("invalid log configuration: {0}")]
    Config(&'static str),
    #[error("{segment}: bad segment: {reason}")]
    BadSegment {
        segment: String,
        reason: &'static str,
    },
    #[error(
        "{segment}: corrupt record at byte {offset_bytes} is followed by valid records; \
         refusing to drop committed txns (recover with truncate_at_corruption to do so)"
    )]
    CorruptMiddle { segment: String, offset_bytes: u64 },
    #[error(
        "{segment}: record at byte {offset_bytes} passes its CRC but does not decode: {reason}"
    )]
    Decode {
        segment: String,
        offset_bytes: u64,
        reason: RecordError,
    },
}

/// Recovers `<data_log_dir>/version-2/` and opens a writer that appends after what survived:
/// what the server does at start, before replaying `Recovery::txns` over its snapshot.
///
/// # Errors
/// As `recover` and `LogWriter::new`, and `Io` if the directory cannot be created.
pub fn open(
    data_log_dir: &Path,
    config: LogConfig,
    options: &RecoverOptions,
) -> Result<(LogWriter<DirectDir>, Recovery), LogError> {
    let mut dir = DirectDir::open(data_log_dir).map_err(|source| LogError::Io {
        op: "open",
        segment: data_log_dir
            .join(segment::VERSION_DIR)
            .display()
            .to_string(),
        source,
    })?;
    let recovery = recover(&mut dir, options)?;
    let writer = LogWriter::new(dir, config, &recovery.resume)?;
    Ok((writer, recovery))
}
