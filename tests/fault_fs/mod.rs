//! A fault-injecting FUSE filesystem for `tests/disk_errors.rs`: it passes every operation
//! through to a backing directory and, while a `Fault` is armed, answers EIO to the writes or
//! the fsyncs of the files whose names start with a given prefix. The errors are real: Keel
//! gets them from pwrite(2) and fdatasync(2) exactly as it would from a failing disk (this
//! VM's kernel has neither device-mapper nor fault injection, but FUSE is built in).
//!
//! An injected fsync failure can also drop what was written to that file since its last
//! successful fsync (`lose_unsynced`), the way the kernel drops dirty pages whose write-back
//! failed: a server that acknowledged such a write anyway, or retried the fsync (which then
//! "succeeds"), loses acknowledged data, and the test sees it after a restart.
//!
//! The filesystem runs on a thread of the test process (fuser, without libfuse: as root the
//! mount is a plain mount(2) on /dev/fuse) and is unmounted when `FaultMount` drops.
#![allow(dead_code)]

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};
use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Attributes and entries are not cached: every lookup asks the backing directory, so renames
/// and unlinks are seen at once.
const TTL: Duration = Duration::ZERO;

/// The operation a fault fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Write,
    Fsync,
}

/// What to fail: `op` on files whose name starts with `name_prefix`, once `after` such calls
/// have gone through, `count` times (then the fault disarms itself; `None`: until `disarm`).
#[derive(Clone, Debug)]
pub struct Fault {
    pub op: Op,
    pub name_prefix: &'static str,
    pub after: u64,
    pub count: Option<u64>,
    /// On an injected fsync failure, zero what was written since the file's last good fsync.
    pub lose_unsynced: bool,
}

/// One write or fsync that reached the filesystem, in order.
#[derive(Clone, Debug)]
pub struct Event {
    pub op: Op,
    /// The file's name when it was opened.
    pub name: String,
    pub injected: bool,
}

/// Shared between the filesystem threads and the test.
#[derive(Default)]
struct Faults {
    armed: Mutex<Option<Fault>>,
    events: Mutex<Vec<Event>>,
}

impl Faults {
    /// Records `op` on `name`; returns the fault if it fails now (counting it down).
    fn strike(&self, op: Op, name: &str) -> Option<Fault> {
        let struck = self.count_down(op, name);
        lock(&self.events).push(Event {
            op,
            name: name.to_string(),
            injected: struck.is_some(),
        });
        struck
    }

    fn count_down(&self, op: Op, name: &str) -> Option<Fault> {
        let mut armed = lock(&self.armed);
        let fault = armed.as_mut()?;
        if fault.op != op || !name.starts_with(fault.name_prefix) {
            return None;
        }
        if fault.after > 0 {
            fault.after -= 1;
            return None;
        }
        let struck = fault.clone();
        if let Some(count) = fault.count.as_mut() {
            *count = count.saturating_sub(1);
            if *count == 0 {
                *armed = None;
            }
        }
        Some(struck)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// An open file: the backing file, its name (for matching faults), and the byte ranges
/// written since its last successful fsync.
struct Open {
    file: File,
    name: String,
    unsynced: Vec<(u64, u64)>,
}

struct FaultFs {
    backing: PathBuf,
    /// inode → path in the backing directory. Inode numbers are the backing inodes' (the
    /// root's is 1).
    paths: Mutex<HashMap<u64, PathBuf>>,
    open: Mutex<HashMap<u64, Open>>,
    next_handle: AtomicU64,
    faults: Arc<Faults>,
}

fn errno(error: io::Error) -> Errno {
    Errno::from_i32(error.raw_os_error().unwrap_or(libc::EIO))
}

fn kind(file_type: std::fs::FileType) -> FileType {
    FileType::from_std(file_type).unwrap_or(FileType::RegularFile)
}

fn time(seconds: i64, nanos: i64) -> SystemTime {
    let since = Duration::new(seconds.max(0) as u64, nanos.clamp(0, 999_999_999) as u32);
    UNIX_EPOCH + since
}

impl FaultFs {
    fn path(&self, ino: INodeNo) -> Result<PathBuf, Errno> {
        lock(&self.paths).get(&ino.0).cloned().ok_or(Errno::ENOENT)
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<PathBuf, Errno> {
        Ok(self.path(parent)?.join(name))
    }

    /// The attributes of `path`, remembering its inode's path.
    fn attr(&self, path: &Path) -> Result<FileAttr, Errno> {
        let meta = std::fs::symlink_metadata(path).map_err(errno)?;
        let ino = if path == self.backing {
            INodeNo::ROOT.0
        } else {
            meta.ino()
        };
        lock(&self.paths).insert(ino, path.to_path_buf());
        Ok(FileAttr {
            ino: INodeNo(ino),
            size: meta.size(),
            blocks: meta.blocks(),
            atime: time(meta.atime(), meta.atime_nsec()),
            mtime: time(meta.mtime(), meta.mtime_nsec()),
            ctime: time(meta.ctime(), meta.ctime_nsec()),
            crtime: UNIX_EPOCH,
            kind: kind(meta.file_type()),
            perm: (meta.mode() & 0o7777) as u16,
            nlink: meta.nlink() as u32,
            uid: meta.uid(),
            gid: meta.gid(),
            rdev: meta.rdev() as u32,
            blksize: 4096,
            flags: 0,
        })
    }

    /// unlink or rmdir: `remove` on the backing path.
    fn remove(
        &self,
        parent: INodeNo,
        name: &OsStr,
        remove: fn(PathBuf) -> io::Result<()>,
        reply: ReplyEmpty,
    ) {
        match self
            .child(parent, name)
            .and_then(|path| remove(path).map_err(errno))
        {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(error),
        }
    }

    fn keep_open(&self, file: File, path: &Path) -> FileHandle {
        let handle = self.next_handle.fetch_add(1, Ordering::Relaxed);
        let name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let open = Open {
            file,
            name,
            unsynced: Vec::new(),
        };
        lock(&self.open).insert(handle, open);
        FileHandle(handle)
    }
}

/// The flags the backing file is opened with: the caller's, less O_DIRECT (FUSE hands over
/// unaligned buffers) and less what the kernel already did (creation, truncation).
fn backing_flags(flags: i32) -> i32 {
    flags & !(libc::O_ACCMODE | libc::O_DIRECT | libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC)
}

impl Filesystem for FaultFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.child(parent, name).and_then(|path| self.attr(&path)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(error) => reply.error(error),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.path(ino).and_then(|path| self.attr(&path)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(error) => reply.error(error),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let result = self.path(ino).and_then(|path| {
            if let Some(mode) = mode {
                let permissions = std::fs::Permissions::from_mode(mode);
                std::fs::set_permissions(&path, permissions).map_err(errno)?;
            }
            if let Some(size) = size {
                let file = OpenOptions::new().write(true).open(&path).map_err(errno)?;
                file.set_len(size).map_err(errno)?;
            }
            self.attr(&path)
        });
        match result {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(error) => reply.error(error),
        }
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let result = self.child(parent, name).and_then(|path| {
            std::fs::create_dir(&path).map_err(errno)?;
            let permissions = std::fs::Permissions::from_mode(mode & !umask);
            std::fs::set_permissions(&path, permissions).map_err(errno)?;
            self.attr(&path)
        });
        match result {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(error) => reply.error(error),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, std::fs::remove_file, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent, name, std::fs::remove_dir, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if !flags.is_empty() {
            return reply.error(Errno::EINVAL);
        }
        let result = self.child(parent, name).and_then(|from| {
            let to = self.child(newparent, newname)?;
            std::fs::rename(&from, &to).map_err(errno)?;
            self.attr(&to).map(drop)
        });
        match result {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(error),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let result = self.path(ino).and_then(|path| {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(backing_flags(flags.0))
                .open(&path)
                .map_err(errno)?;
            Ok(self.keep_open(file, &path))
        });
        match result {
            Ok(handle) => reply.opened(handle, FopenFlags::empty()),
            Err(error) => reply.error(error),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let result = self.child(parent, name).and_then(|path| {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .create_new(flags & libc::O_EXCL != 0)
                .truncate(flags & libc::O_TRUNC != 0)
                .mode(mode & !umask)
                .custom_flags(backing_flags(flags))
                .open(&path)
                .map_err(errno)?;
            let attr = self.attr(&path)?;
            Ok((attr, self.keep_open(file, &path)))
        });
        match result {
            Ok((attr, handle)) => {
                reply.created(&TTL, &attr, Generation(0), handle, FopenFlags::empty())
            }
            Err(error) => reply.error(error),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let open = lock(&self.open);
        let Some(open) = open.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        let mut buffer = vec![0u8; size as usize];
        let mut filled = 0;
        while filled < buffer.len() {
            match open
                .file
                .read_at(&mut buffer[filled..], offset + filled as u64)
            {
                Ok(0) => break,
                Ok(read) => filled += read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return reply.error(errno(error)),
            }
        }
        reply.data(&buffer[..filled]);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut open = lock(&self.open);
        let Some(open) = open.get_mut(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        if self.faults.strike(Op::Write, &open.name).is_some() {
            return reply.error(Errno::EIO);
        }
        match open.file.write_all_at(data, offset) {
            Ok(()) => {
                open.unsynced.push((offset, data.len() as u64));
                reply.written(data.len() as u32);
            }
            Err(error) => reply.error(errno(error)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        lock(&self.open).remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut open = lock(&self.open);
        let Some(open) = open.get_mut(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        if let Some(fault) = self.faults.strike(Op::Fsync, &open.name) {
            if fault.lose_unsynced {
                for (offset, bytes) in std::mem::take(&mut open.unsynced) {
                    let zeros = vec![0u8; bytes as usize];
                    if let Err(error) = open.file.write_all_at(&zeros, offset) {
                        panic!(
                            "fault_fs: cannot drop the unsynced data of {}: {error}",
                            open.name
                        );
                    }
                }
            }
            return reply.error(Errno::EIO);
        }
        let synced = if datasync {
            open.file.sync_data()
        } else {
            open.file.sync_all()
        };
        match synced {
            Ok(()) => {
                open.unsynced.clear();
                reply.ok();
            }
            Err(error) => reply.error(errno(error)),
        }
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.opened(FileHandle(0), FopenFlags::empty());
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let path = match self.path(ino) {
            Ok(path) => path,
            Err(error) => return reply.error(error),
        };
        let entries = match std::fs::read_dir(&path) {
            Ok(entries) => entries,
            Err(error) => return reply.error(errno(error)),
        };
        let mut listed = vec![
            (ino.0, FileType::Directory, OsStr::new(".").to_os_string()),
            (ino.0, FileType::Directory, OsStr::new("..").to_os_string()),
        ];
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            listed.push((meta.ino(), kind(meta.file_type()), entry.file_name()));
        }
        for (index, (entry_ino, entry_kind, name)) in
            listed.iter().enumerate().skip(offset as usize)
        {
            if reply.add(INodeNo(*entry_ino), index as u64 + 1, *entry_kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let synced = self.path(ino).and_then(|path| {
            File::open(path)
                .and_then(|dir| dir.sync_all())
                .map_err(errno)
        });
        match synced {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(error),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let Ok(path) = CString::new(self.backing.as_os_str().as_bytes()) else {
            return reply.error(Errno::EINVAL);
        };
        // SAFETY: statvfs writes into the zeroed struct we pass; the path is NUL-terminated.
        let stat = unsafe {
            let mut stat: libc::statvfs = std::mem::zeroed();
            if libc::statvfs(path.as_ptr(), &mut stat) != 0 {
                return reply.error(errno(io::Error::last_os_error()));
            }
            stat
        };
        reply.statfs(
            stat.f_blocks,
            stat.f_bfree,
            stat.f_bavail,
            stat.f_files,
            stat.f_ffree,
            stat.f_bsize as u32,
            stat.f_namemax as u32,
            stat.f_frsize as u32,
        );
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        use std::os::fd::AsRawFd;
        let open = lock(&self.open);
        let Some(open) = open.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        // SAFETY: fallocate reads only its integer arguments; the fd is owned by `open.file`.
        let rc = unsafe {
            libc::fallocate(
                open.file.as_raw_fd(),
                mode,
                offset as libc::off_t,
                length as libc::off_t,
            )
        };
        match rc {
            0 => reply.ok(),
            _ => reply.error(errno(io::Error::last_os_error())),
        }
    }
}

/// `FaultFs` mounted over `mountpoint`, passing through to `backing`; unmounted when dropped.
pub struct FaultMount {
    pub dir: PathBuf,
    faults: Arc<Faults>,
    session: Option<fuser::BackgroundSession>,
}

impl FaultMount {
    /// Mounts; an `Err` says why it cannot be done here (not root, no /dev/fuse, mount
    /// refused), for the test to skip.
    pub fn mount(backing: &Path, mountpoint: &Path) -> Result<FaultMount, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root".into());
        }
        if !Path::new("/dev/fuse").exists() {
            return Err("no /dev/fuse".into());
        }
        for dir in [backing, mountpoint] {
            std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        }
        let backing = backing
            .canonicalize()
            .map_err(|e| format!("{}: {e}", backing.display()))?;
        let faults = Arc::new(Faults::default());
        let filesystem = FaultFs {
            backing: backing.clone(),
            paths: Mutex::new(HashMap::from([(INodeNo::ROOT.0, backing)])),
            open: Mutex::new(HashMap::new()),
            next_handle: AtomicU64::new(1),
            faults: faults.clone(),
        };
        let mut config = fuser::Config::default();
        config.mount_options = vec![MountOption::FSName("keel-fault-fs".into())];
        config.n_threads = Some(2);
        let session = fuser::spawn_mount(filesystem, mountpoint, &config)
            .map_err(|e| format!("FUSE mount on {}: {e}", mountpoint.display()))?;
        Ok(FaultMount {
            dir: mountpoint.to_path_buf(),
            faults,
            session: Some(session),
        })
    }

    pub fn arm(&self, fault: Fault) {
        *lock(&self.faults.armed) = Some(fault);
    }

    pub fn disarm(&self) {
        *lock(&self.faults.armed) = None;
    }

    /// Every write and fsync so far, in order, injected failures marked.
    pub fn events(&self) -> Vec<Event> {
        lock(&self.faults.events).clone()
    }
}

impl Drop for FaultMount {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            if session.umount_and_join().is_err() {
                // Busy (a process still has a file open): detach it, so that a failing test
                // never leaves a mount behind.
                if let Ok(target) = CString::new(self.dir.as_os_str().as_bytes()) {
                    // SAFETY: a valid NUL-terminated path.
                    unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
                }
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}
