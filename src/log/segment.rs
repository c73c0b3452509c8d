//! segment: segment files — names, the header block, the IO seam, and the O_DIRECT files.
//!
//! Owns: `log.<hex first zxid>` naming in `<dataLogDir>/version-2/`, the 4 KiB header block,
//! block-aligned buffers, the `LogDir`/`LogFile` traits through which the writer and recovery
//! do every IO (tests substitute files that tear writes or fail syncs), and `DirectDir` /
//! `DirectFile`, the real implementation: plain `pwrite` + `fdatasync` on an O_DIRECT fd.
//! Must not: retry a failed write or sync, or read a segment larger than the caller's bound.
//!
//! Measured on this VM (platform.md §3.1): O_DIRECT pwrite + fdatasync into a pre-zeroed file
//! ~104 µs p50, against 1.8–3x for fallocate-only or growing files, hence zero-filling at
//! creation. io_uring (a linked write+fdatasync, or overlapping the next write with the current
//! sync) is a later optimisation behind this same trait; it would keep the replica core's
//! thread from blocking in the syscall, not make the disk faster.

use super::BLOCK_BYTES;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Block 0 of every segment.
pub const SEGMENT_HEADER_BYTES: usize = BLOCK_BYTES;
/// "KLOG".
pub const SEGMENT_MAGIC: u32 = 0x4B4C_4F47;
pub const SEGMENT_FORMAT_VERSION: u32 = 1;
/// The smallest segment: its header and one block of records.
pub const SEGMENT_BYTES_MIN: u64 = 2 * BLOCK_BYTES as u64;
/// Recovery reads a segment whole; it refuses files larger than this.
pub const SEGMENT_BYTES_MAX: u64 = 1 << 30;
/// The directory under dataLogDir, as ZooKeeper names it (`FileTxnSnapLog.VERSION`).
pub const VERSION_DIR: &str = "version-2";
/// Zero-filling and repairs write in chunks of this size.
pub const ZERO_CHUNK_BYTES: usize = 1 << 20;
/// Magic, version, first zxid, segment bytes: the fields the header CRC covers.
const HEADER_FIELDS_BYTES: usize = 24;

const _: () = assert!(ZERO_CHUNK_BYTES.is_multiple_of(BLOCK_BYTES));
const _: () = assert!(SEGMENT_HEADER_BYTES.is_multiple_of(BLOCK_BYTES));
const _: () = assert!(SEGMENT_BYTES_MAX.is_multiple_of(BLOCK_BYTES as u64));
const _: () = assert!(HEADER_FIELDS_BYTES + 4 <= SEGMENT_HEADER_BYTES);

/// Where appending resumes after recovery: the newest kept segment and its first free block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogTail {
    pub first_zxid: i64,
    pub segment_bytes: u64,
    pub append_offset_bytes: u64,
}

/// One segment file, opened for block-aligned writes.
pub trait LogFile {
    /// Writes all of `bytes` at `offset_bytes`; offset, length and buffer address are
    /// `BLOCK_BYTES`-aligned. A short write is an error, never continued.
    fn write_at(&mut self, offset_bytes: u64, bytes: &[u8]) -> io::Result<()>;
    /// fdatasync. An error is final: the caller must not call it again to "retry".
    fn sync(&mut self) -> io::Result<()>;
    fn len_bytes(&self) -> io::Result<u64>;
}

/// The segment directory: creating, publishing, listing, reading and retiring segments.
pub trait LogDir {
    type File: LogFile;
    /// Creates an empty `log.<hex>.partial` (replacing a leftover one), space reserved.
    fn create_partial(&mut self, first_zxid: i64, segment_bytes: u64) -> io::Result<Self::File>;
    /// Renames the partial segment to `log.<hex>` and makes the rename durable.
    fn publish(&mut self, first_zxid: i64) -> io::Result<()>;
    /// Opens a published segment for writing.
    fn open_segment(&mut self, first_zxid: i64) -> io::Result<Self::File>;
    /// The first zxids of the published segments, in no particular order.
    fn list_segments(&mut self) -> io::Result<Vec<i64>>;
    /// Deletes leftover partial segments; returns how many.
    fn remove_partials(&mut self) -> io::Result<usize>;
    /// Reads a whole segment; fails with `InvalidData`, before allocating, if it is longer
    /// than `bytes_max`.
    fn read_segment(&mut self, first_zxid: i64, bytes_max: u64) -> io::Result<Vec<u8>>;
    /// Takes a segment out of the log durably: renamed to `log.<hex>.dropped` when `keep`
    /// (damaged committed data an operator may want), deleted otherwise.
    fn retire_segment(&mut self, first_zxid: i64, keep: bool) -> io::Result<()>;
}

/// `log.<first zxid in lowercase hex>`, ZooKeeper's `Long.toHexString` naming.
pub fn segment_name(first_zxid: i64) -> String {
    format!("log.{first_zxid:x}")
}

/// The first zxid a segment file name stands for, or None if it is not a segment name.
pub fn parse_segment_name(name: &str) -> Option<i64> {
    let hex = name.strip_prefix("log.")?;
    let canonical =
        !hex.is_empty() && hex.len() <= 16 && hex.bytes().all(|b| b.is_ascii_hexdigit());
    if !canonical {
        return None;
    }
    // Two's complement, as Java prints a negative long.
    u64::from_str_radix(hex, 16).ok().map(|bits| bits as i64)
}

/// The header block: magic, version, first zxid, segment bytes, CRC32C of those, zeros.
pub fn encode_segment_header(first_zxid: i64, segment_bytes: u64, block: &mut [u8]) {
    assert_eq!(block.len(), SEGMENT_HEADER_BYTES);
    let mut fields = [0u8; HEADER_FIELDS_BYTES];
    fields[0..4].copy_from_slice(&SEGMENT_MAGIC.to_be_bytes());
    fields[4..8].copy_from_slice(&SEGMENT_FORMAT_VERSION.to_be_bytes());
    fields[8..16].copy_from_slice(&first_zxid.to_be_bytes());
    fields[16..24].copy_from_slice(&segment_bytes.to_be_bytes());
    block.fill(0);
    let crc = crc32c::crc32c(&fields).to_be_bytes();
    for (slot, byte) in block.iter_mut().zip(fields.iter().chain(crc.iter())) {
        *slot = *byte;
    }
    // Pair assertion: the block we write is the block recovery accepts.
    assert_eq!(parse_segment_header(block), Ok((first_zxid, segment_bytes)));
}

/// `N` bytes of `bytes` at `at`, if they are there.
fn field<const N: usize>(bytes: &[u8], at: usize) -> Option<[u8; N]> {
    bytes.get(at..at.checked_add(N)?)?.try_into().ok()
}

/// Reads a header block; returns `(first_zxid, segment_bytes)` or why it is unacceptable.
pub fn parse_segment_header(bytes: &[u8]) -> Result<(i64, u64), &'static str> {
    const SHORT: &str = "shorter than its header";
    let fields = bytes.get(..HEADER_FIELDS_BYTES).ok_or(SHORT)?;
    let crc = field::<4>(bytes, HEADER_FIELDS_BYTES).ok_or(SHORT)?;
    if field::<4>(fields, 0) != Some(SEGMENT_MAGIC.to_be_bytes()) {
        return Err("no segment magic");
    }
    if crc32c::crc32c(fields) != u32::from_be_bytes(crc) {
        return Err("header checksum mismatch");
    }
    if field::<4>(fields, 4) != Some(SEGMENT_FORMAT_VERSION.to_be_bytes()) {
        return Err("unknown format version");
    }
    let first_zxid = i64::from_be_bytes(field(fields, 8).ok_or(SHORT)?);
    let segment_bytes = u64::from_be_bytes(field(fields, 16).ok_or(SHORT)?);
    let sized = (SEGMENT_BYTES_MIN..=SEGMENT_BYTES_MAX).contains(&segment_bytes);
    if !sized || !segment_bytes.is_multiple_of(BLOCK_BYTES as u64) {
        return Err("segment size out of range");
    }
    Ok((first_zxid, segment_bytes))
}

/// Rounds up to a whole number of blocks.
pub fn align_up(bytes: u64) -> u64 {
    bytes.div_ceil(BLOCK_BYTES as u64) * BLOCK_BYTES as u64
}

/// Rounds down to a whole number of blocks.
pub fn align_down(bytes: u64) -> u64 {
    bytes - bytes % BLOCK_BYTES as u64
}

/// Writes `[from_bytes, to_bytes)` of `file` as `prefix` followed by zeros, in block-aligned
/// chunks of at most `ZERO_CHUNK_BYTES`. Creating a segment writes its header this way, and
/// recovery zeroes a torn tail this way while keeping the valid bytes of its first block.
///
/// # Errors
/// The first failed write; nothing is retried.
///
/// # Panics
/// If the range is not block-aligned or `prefix` is longer than one chunk or the range.
pub fn write_zeroed_range<F: LogFile>(
    file: &mut F,
    from_bytes: u64,
    to_bytes: u64,
    prefix: &[u8],
) -> io::Result<()> {
    assert_eq!(from_bytes % BLOCK_BYTES as u64, 0);
    assert_eq!(to_bytes % BLOCK_BYTES as u64, 0);
    assert!(from_bytes <= to_bytes);
    assert!(prefix.len() <= ZERO_CHUNK_BYTES && prefix.len() as u64 <= to_bytes - from_bytes);
    let chunk_bytes_max = (to_bytes - from_bytes).min(ZERO_CHUNK_BYTES as u64);
    let mut buffer = AlignedBuffer::new(usize::try_from(chunk_bytes_max).unwrap_or(0));
    let mut offset_bytes = from_bytes;
    while offset_bytes < to_bytes {
        let chunk_bytes = (to_bytes - offset_bytes).min(chunk_bytes_max);
        buffer.clear();
        if offset_bytes == from_bytes {
            let copied = buffer.extend_from_slice(prefix);
            assert!(copied, "the prefix fits the first chunk");
        }
        buffer.resize_zeroed(usize::try_from(chunk_bytes).unwrap_or(0));
        file.write_at(offset_bytes, buffer.as_slice())?;
        offset_bytes += chunk_bytes;
    }
    Ok(())
}

/// A fixed-capacity byte buffer whose start is `BLOCK_BYTES`-aligned, as O_DIRECT requires.
/// It over-allocates a `Vec` by one block and uses the aligned window inside it, which needs
/// no `unsafe`; the `Vec` is never grown, so the window never moves.
#[derive(Debug)]
pub struct AlignedBuffer {
    storage: Vec<u8>,
    start: usize,
    len: usize,
    capacity: usize,
}

impl AlignedBuffer {
    /// # Panics
    /// If `capacity_bytes` is not a whole number of blocks.
    pub fn new(capacity_bytes: usize) -> AlignedBuffer {
        assert_eq!(
            capacity_bytes % BLOCK_BYTES,
            0,
            "capacity must be whole blocks"
        );
        let storage = vec![0u8; capacity_bytes + BLOCK_BYTES];
        let start = storage.as_ptr().align_offset(BLOCK_BYTES);
        assert!(start < BLOCK_BYTES, "an aligned window must exist");
        AlignedBuffer {
            storage,
            start,
            len: 0,
            capacity: capacity_bytes,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn as_slice(&self) -> &[u8] {
        self.storage
            .get(self.start..self.start + self.len)
            .unwrap_or(&[])
    }

    fn window_mut(&mut self, from: usize, to: usize) -> &mut [u8] {
        assert!(from <= to && to <= self.capacity, "window out of range");
        let (start, end) = (self.start + from, self.start + to);
        self.storage.get_mut(start..end).unwrap_or(&mut [])
    }

    /// Appends `bytes`; returns false, changing nothing, if they do not fit.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) -> bool {
        let end = self.len + bytes.len();
        if end > self.capacity {
            return false;
        }
        self.window_mut(self.len, end).copy_from_slice(bytes);
        self.len = end;
        true
    }

    /// Grows the contents to `len` bytes with zeros (no-op if already that long).
    pub fn resize_zeroed(&mut self, len: usize) {
        if len > self.len {
            self.window_mut(self.len, len).fill(0);
            self.len = len;
        }
    }

    /// Zero-pads to the next block boundary.
    pub fn pad_to_block(&mut self) {
        let padded = self.len.div_ceil(BLOCK_BYTES) * BLOCK_BYTES;
        self.window_mut(self.len, padded).fill(0);
        self.len = padded;
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }
}

/// A real segment: an O_DIRECT file descriptor (buffered only where O_DIRECT is refused).
#[derive(Debug)]
pub struct DirectFile {
    file: File,
}

impl LogFile for DirectFile {
    fn write_at(&mut self, offset_bytes: u64, bytes: &[u8]) -> io::Result<()> {
        debug_assert_eq!(offset_bytes % BLOCK_BYTES as u64, 0);
        debug_assert_eq!(bytes.len() % BLOCK_BYTES, 0);
        let written = self.file.write_at(bytes, offset_bytes)?;
        if written != bytes.len() {
            // Continuing would issue an unaligned O_DIRECT write; a short write is a failure.
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {written} of {} bytes", bytes.len()),
            ));
        }
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        // fdatasync (std retries only EINTR, which is not a failed flush).
        self.file.sync_data()
    }

    fn len_bytes(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
}

/// `<dataLogDir>/version-2/`, the real segment directory.
#[derive(Debug)]
pub struct DirectDir {
    dir: PathBuf,
}

impl DirectDir {
    /// Opens (creating if needed) `<data_log_dir>/version-2/`.
    ///
    /// # Errors
    /// If the directory cannot be created or made durable.
    pub fn open(data_log_dir: &Path) -> io::Result<DirectDir> {
        let dir = data_log_dir.join(VERSION_DIR);
        if !dir.is_dir() {
            fs::create_dir_all(&dir)?;
            sync_dir(data_log_dir)?;
        }
        Ok(DirectDir { dir })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn final_path(&self, first_zxid: i64) -> PathBuf {
        self.dir.join(segment_name(first_zxid))
    }

    fn partial_path(&self, first_zxid: i64) -> PathBuf {
        self.dir
            .join(format!("{}.partial", segment_name(first_zxid)))
    }
}

/// Opens with O_DIRECT; falls back to buffered IO only where the filesystem refuses O_DIRECT
/// (EINVAL, e.g. an old tmpfs): pwrite + fdatasync stays durable, only slower.
fn open_direct(options: &mut OpenOptions, path: &Path) -> io::Result<File> {
    let mut direct = options.clone();
    match direct.custom_flags(libc::O_DIRECT).open(path) {
        Err(error) if error.raw_os_error() == Some(libc::EINVAL) => {
            tracing::warn!(path = %path.display(), "O_DIRECT refused; using buffered IO");
            options.open(path)
        }
        result => result,
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn preallocate(file: &File, bytes: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let length = libc::off_t::try_from(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "segment too large"))?;
    // SAFETY: fallocate only reads its integer arguments; the fd is owned by `file`.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, length) };
    match rc {
        0 => Ok(()),
        _ => {
            let error = io::Error::last_os_error();
            // Filesystems without fallocate still get the zero-fill that follows.
            match error.raw_os_error() {
                Some(libc::EOPNOTSUPP) => Ok(()),
                _ => Err(error),
            }
        }
    }
}

impl LogDir for DirectDir {
    type File = DirectFile;

    fn create_partial(&mut self, first_zxid: i64, segment_bytes: u64) -> io::Result<DirectFile> {
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(true);
        let file = open_direct(&mut options, &self.partial_path(first_zxid))?;
        // Reserve the extents up front: ENOSPC now, not mid-segment.
        preallocate(&file, segment_bytes)?;
        Ok(DirectFile { file })
    }

    fn publish(&mut self, first_zxid: i64) -> io::Result<()> {
        fs::rename(self.partial_path(first_zxid), self.final_path(first_zxid))?;
        sync_dir(&self.dir)
    }

    fn open_segment(&mut self, first_zxid: i64) -> io::Result<DirectFile> {
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        let file = open_direct(&mut options, &self.final_path(first_zxid))?;
        Ok(DirectFile { file })
    }

    fn list_segments(&mut self) -> io::Result<Vec<i64>> {
        let mut zxids = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let name = entry?.file_name();
            if let Some(zxid) = name.to_str().and_then(parse_segment_name) {
                zxids.push(zxid);
            }
        }
        Ok(zxids)
    }

    fn remove_partials(&mut self) -> io::Result<usize> {
        let mut removed = 0;
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let partial = name
                .to_str()
                .and_then(|name| name.strip_suffix(".partial"))
                .and_then(parse_segment_name);
            if partial.is_some() {
                fs::remove_file(entry.path())?;
                removed += 1;
            }
        }
        if removed > 0 {
            sync_dir(&self.dir)?;
        }
        Ok(removed)
    }

    fn read_segment(&mut self, first_zxid: i64, bytes_max: u64) -> io::Result<Vec<u8>> {
        let file = File::open(self.final_path(first_zxid))?;
        let len_bytes = file.metadata()?.len();
        if len_bytes > bytes_max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "segment too large",
            ));
        }
        let capacity = usize::try_from(len_bytes)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "segment too large"))?;
        let mut image = Vec::with_capacity(capacity);
        // `take` keeps a file that grows under us from growing the buffer past the bound.
        file.take(bytes_max).read_to_end(&mut image)?;
        Ok(image)
    }

    fn retire_segment(&mut self, first_zxid: i64, keep: bool) -> io::Result<()> {
        let path = self.final_path(first_zxid);
        if keep {
            fs::rename(
                &path,
                self.dir
                    .join(format!("{}.dropped", segment_name(first_zxid))),
            )?;
        } else {
            fs::remove_file(&path)?;
        }
        sync_dir(&self.dir)
    }
}
