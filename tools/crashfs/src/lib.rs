//! crashfs: a FUSE file system for power-loss tests. It forgets what was not made durable.
//!
//! `kill -9` does not test durability: the page cache survives the process. On crashfs a
//! process's writes, size changes and directory changes stay in the file system's own memory
//! until the process makes them durable (`fsync`/`fdatasync` of the file for its content and
//! size, `fsync` of the directory for its entries); [`CrashFs::crash`] (or an armed
//! [`Trigger`]) then discards what was not, optionally keeping a random prefix with the last
//! write torn at a random byte, and fails every later operation with `EIO` until
//! [`CrashFs::restart`] mounts the surviving state again. The semantics are in [`model`]; this
//! module serves them over FUSE.
//!
//! Files are opened in FUSE's `direct_io` mode: the kernel keeps no page cache for them, so
//! `O_DIRECT` opens work (the WAL's io_uring backend uses them) and nothing the file system
//! forgot can be read back from a kernel cache. Entry and attribute lifetimes are zero for the
//! same reason. Mounting needs root (`mount(2)` on `/dev/fuse`, no `fusermount`).
//!
//! docs/POWERLOSS.md in the repository describes the failure model and what it found.

#![deny(missing_docs)]

pub mod model;

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request,
    SessionACL, TimeOrNow, WriteFlags,
};
use model::{Attr, Model};
pub use model::{CrashMode, CrashReport, OpKind, Phase, Stats, Trigger};
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

const TTL: Duration = Duration::ZERO;

struct Shared {
    model: Mutex<Model>,
    crashed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Model> {
        // A panic while holding the lock leaves the model as it was at some operation's end or
        // mid-operation; for a test file system the state is still worth serving.
        self.model.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A mounted crashfs, unmounted when dropped.
pub struct CrashFs {
    shared: Arc<Shared>,
    mountpoint: PathBuf,
    session: Option<fuser::BackgroundSession>,
    _backing: tempfile::TempDir,
}

impl CrashFs {
    /// Mounts an empty crashfs at `mountpoint` (an existing empty directory), with durable
    /// contents kept in a temporary directory under `backing_parent`. `seed` drives the
    /// choices of [`CrashMode::Torn`].
    pub fn mount(
        mountpoint: &Path,
        backing_parent: &Path,
        mode: CrashMode,
        seed: u64,
    ) -> io::Result<CrashFs> {
        let backing = tempfile::Builder::new()
            .prefix("crashfs-backing")
            .tempdir_in(backing_parent)?;
        let shared = Arc::new(Shared {
            model: Mutex::new(Model::new(backing.path(), mode, seed)),
            crashed: Condvar::new(),
        });
        let mut fs = CrashFs {
            shared,
            mountpoint: mountpoint.to_path_buf(),
            session: None,
            _backing: backing,
        };
        fs.start_session()?;
        Ok(fs)
    }

    fn start_session(&mut self) -> io::Result<()> {
        let mut config = fuser::Config::default();
        config.mount_options = vec![
            MountOption::FSName("crashfs".into()),
            MountOption::Subtype("crashfs".into()),
        ];
        config.acl = SessionACL::All;
        let fs = Adaptor {
            shared: self.shared.clone(),
        };
        let session = fuser::Session::new(fs, &self.mountpoint, &config)?;
        self.session = Some(session.spawn()?);
        Ok(())
    }

    /// Where it is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// Arms a crash at an operation (see [`Trigger`]).
    pub fn arm(&self, trigger: Trigger) {
        self.shared.lock().arm(trigger);
    }

    /// Disarms every trigger.
    pub fn disarm(&self) {
        self.shared.lock().disarm();
    }

    /// Sets how later crashes treat pending operations.
    pub fn set_mode(&self, mode: CrashMode) {
        self.shared.lock().set_mode(mode);
    }

    /// Fails the power now; every later operation fails with `EIO` until [`CrashFs::restart`].
    pub fn crash(&self) -> CrashReport {
        let report = self.shared.lock().crash();
        self.shared.crashed.notify_all();
        report
    }

    /// The crash that stopped the file system, waiting up to `timeout` for an armed trigger.
    pub fn wait_crashed(&self, timeout: Duration) -> Option<CrashReport> {
        let model = self.shared.lock();
        let (model, _) = self
            .shared
            .crashed
            .wait_timeout_while(model, timeout, |m| m.crashed().is_none())
            .unwrap_or_else(|e| e.into_inner());
        model.crashed().cloned()
    }

    /// The crash that stopped the file system, if it is stopped.
    pub fn crashed(&self) -> Option<CrashReport> {
        self.shared.lock().crashed().cloned()
    }

    /// Counts of operations served.
    pub fn stats(&self) -> Stats {
        self.shared.lock().stats().clone()
    }

    /// Unmounts (the processes using it should be dead), powers the state that survived back
    /// on and mounts it again at the same place: a reboot.
    pub fn restart(&mut self) -> io::Result<()> {
        self.unmount();
        self.shared.lock().restart();
        self.start_session()
    }

    fn unmount(&mut self) {
        if let Some(session) = self.session.take() {
            // `umount_and_join` fails if a process still has files open; a lazy detach then
            // lets the mount point be reused at once (the kernel ends the old session when the
            // last user goes away).
            if session.umount_and_join().is_err() {
                let path = std::ffi::CString::new(self.mountpoint.as_os_str().as_encoded_bytes());
                if let Ok(path) = path {
                    // SAFETY: a valid NUL-terminated path; umount2 has no other preconditions.
                    unsafe {
                        libc::umount2(path.as_ptr(), libc::MNT_DETACH);
                    }
                }
            }
        }
    }
}

impl Drop for CrashFs {
    fn drop(&mut self) {
        self.unmount();
    }
}

/// The FUSE face of the model.
struct Adaptor {
    shared: Arc<Shared>,
}

impl Adaptor {
    /// Runs `f` on the model, waking waiters if the operation crashed the file system.
    fn with<T>(&self, f: impl FnOnce(&mut Model) -> T) -> T {
        let mut model = self.shared.lock();
        let was_live = model.crashed().is_none();
        let out = f(&mut model);
        if was_live && model.crashed().is_some() {
            self.shared.crashed.notify_all();
        }
        out
    }
}

fn errno(e: model::Errno) -> Errno {
    Errno::from_i32(e)
}

/// Answers an operation that returns nothing but success or an error.
fn empty(reply: ReplyEmpty, result: Result<(), model::Errno>) {
    match result {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}

fn attr(a: Attr) -> FileAttr {
    let epoch = SystemTime::UNIX_EPOCH;
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: epoch,
        mtime: epoch,
        ctime: epoch,
        crtime: epoch,
        kind: if a.dir {
            FileType::Directory
        } else {
            FileType::RegularFile
        },
        perm: a.perm,
        nlink: a.nlink,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

impl Filesystem for Adaptor {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.with(|m| m.lookup(parent.0, name)) {
            Ok(a) => reply.entry(&TTL, &attr(a), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.with(|m| m.getattr(ino.0)) {
            Ok(a) => reply.attr(&TTL, &attr(a)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
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
        let result = self.with(|m| {
            if let Some(size) = size {
                m.set_len(ino.0, size)?;
            }
            m.getattr(ino.0)
        });
        match result {
            Ok(a) => reply.attr(&TTL, &attr(a)),
            Err(e) => reply.error(errno(e)),
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
        let perm = (mode & !umask & 0o7777) as u16;
        match self.with(|m| m.create(parent.0, name, perm, true)) {
            Ok(a) => reply.entry(&TTL, &attr(a), Generation(0)),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.with(|m| m.remove(parent.0, name, false)));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.with(|m| m.remove(parent.0, name, true)));
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
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            reply.error(Errno::EINVAL);
            return;
        }
        let no_replace = flags.contains(RenameFlags::RENAME_NOREPLACE);
        empty(
            reply,
            self.with(|m| m.rename(parent.0, name, newparent.0, newname, no_replace)),
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let truncate = flags.0 & libc::O_TRUNC != 0;
        match self.with(|m| m.open(ino.0, truncate)) {
            Ok(()) => reply.opened(FileHandle(ino.0), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let perm = (mode & !umask & 0o7777) as u16;
        let result = self.with(|m| {
            let a = m.create(parent.0, name, perm, false)?;
            m.open(a.ino, false)?;
            Ok(a)
        });
        match result {
            Ok(a) => reply.created(
                &TTL,
                &attr(a),
                Generation(0),
                FileHandle(a.ino),
                FopenFlags::FOPEN_DIRECT_IO,
            ),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.with(|m| m.read(ino.0, offset, size)) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // A synchronous write (the file opened with O_DSYNC or O_SYNC, or `pwritev2` with
        // RWF_DSYNC, which the kernel passes on as O_DSYNC) is durable when it returns, as
        // an fdatasync right after it would make it; O_SYNC includes the O_DSYNC bit.
        let sync = flags.0 & libc::O_DSYNC != 0;
        let written = self.with(|m| {
            let n = m.write(ino.0, offset, data)?;
            if sync {
                m.fsync(ino.0)?;
            }
            Ok(n)
        });
        match written {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(errno(e)),
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
        // close(2) makes nothing durable.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.with(|m| m.release(ino.0));
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.with(|m| m.fsync(ino.0)));
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.with(|m| m.getattr(ino.0)) {
            Ok(a) if a.dir => reply.opened(FileHandle(ino.0), FopenFlags::empty()),
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let listed = self.with(|m| m.readdir(ino.0).map(|entries| (entries, m.parent(ino.0))));
        let (entries, parent) = match listed {
            Ok(x) => x,
            Err(e) => {
                reply.error(errno(e));
                return;
            }
        };
        let mut all = vec![
            (ino.0, FileType::Directory, OsStr::new(".").to_os_string()),
            (parent, FileType::Directory, OsStr::new("..").to_os_string()),
        ];
        for (name, i, dir) in entries {
            let kind = if dir {
                FileType::Directory
            } else {
                FileType::RegularFile
            };
            all.push((i, kind, name));
        }
        for (i, (child, kind, name)) in all.into_iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), (i + 1) as u64, kind, &name) {
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
        empty(reply, self.with(|m| m.fsync_dir(ino.0)));
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // Plenty of room: space is the backing directory's concern, not this test's.
        reply.statfs(1 << 24, 1 << 23, 1 << 23, 1 << 20, 1 << 19, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        match self.with(|m| m.getattr(ino.0)) {
            Ok(_) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        empty(
            reply,
            self.with(|m| m.fallocate(ino.0, offset, length, mode)),
        );
    }
}
