//! The file system's state, without FUSE: what is visible to processes and what a power loss
//! would leave.
//!
//! Every regular file has a durable content (kept in a backing file, one per inode) and a list
//! of operations since its last `fsync`/`fdatasync` (writes, size changes), kept in memory.
//! Every directory has a durable set of entries and a list of entry operations since its last
//! `fsync` (create, remove, rename). Reads see the durable state with the pending operations
//! applied in order. `fsync` of a file applies its operations to the backing file; `fsync` of
//! a directory makes its entries durable. Neither makes the other durable: a file created,
//! written and synced is lost with its name unless its directory was synced too (strict POSIX,
//! as LazyFS models it).
//!
//! A crash keeps, for every file and directory, a prefix of its pending operations: none with
//! [`CrashMode::DropUnsynced`]; a random prefix with [`CrashMode::Torn`], the next write then
//! surviving as a random prefix of its bytes (a torn write). Inodes no longer reachable from the
//! root are deleted. After a crash every operation fails with `EIO` until the file system is
//! restarted ([`Model::restart`]): the machine is off.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The root directory's inode number (FUSE's).
pub const ROOT: u64 = 1;

/// An error as the file system reports it: an errno value.
pub type Errno = i32;

/// What a crash keeps of the operations not yet made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// Nothing: every file and directory reverts to its last synced state.
    DropUnsynced,
    /// A random prefix of each file's and directory's pending operations survives, the next
    /// write possibly torn at a random byte (seeded by the model's generator).
    Torn,
}

/// When an armed trigger crashes the file system: just before the operation (it fails), or
/// just after it took effect (its caller still sees `EIO`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The operation does not happen.
    Before,
    /// The operation happens, then the power fails.
    After,
}

/// Kinds of operation a trigger can wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum OpKind {
    /// A write to a regular file.
    Write,
    /// `fsync`/`fdatasync` of a regular file.
    Fsync,
    /// `fsync` of a directory.
    FsyncDir,
    /// `fallocate`.
    Fallocate,
    /// A size change (`ftruncate`, `O_TRUNC`).
    SetLen,
    /// A file or directory created.
    Create,
    /// A rename.
    Rename,
    /// A file or empty directory removed.
    Remove,
}

impl OpKind {
    /// A short lower-case name, used in crash-point labels.
    pub fn name(self) -> &'static str {
        match self {
            OpKind::Write => "write",
            OpKind::Fsync => "fsync",
            OpKind::FsyncDir => "fsyncdir",
            OpKind::Fallocate => "fallocate",
            OpKind::SetLen => "setlen",
            OpKind::Create => "create",
            OpKind::Rename => "rename",
            OpKind::Remove => "remove",
        }
    }
}

/// A crash armed to happen at the `(skip + 1)`-th operation of kind `op` on a path containing
/// `path_contains`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trigger {
    /// The kind of operation.
    pub op: OpKind,
    /// Before or after it.
    pub phase: Phase,
    /// Only operations on a path (relative to the mount, starting with `/`) containing this.
    pub path_contains: String,
    /// How many matching operations to let through first.
    pub skip: u32,
}

/// What a crash did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrashReport {
    /// Where it happened: `"{op}-{before|after}:{path with digit runs as #}"` for a trigger,
    /// `"now:…"` for a crash on command (naming the kinds of operations it dropped).
    pub label: String,
    /// Pending operations discarded (files and directories).
    pub dropped: usize,
    /// Pending operations that survived (with [`CrashMode::Torn`]).
    pub kept: usize,
    /// Whether a write survived torn.
    pub torn: bool,
}

/// A pending operation on a file's content.
#[derive(Clone, Debug)]
enum FileOp {
    Write {
        offset: u64,
        data: Data,
    },
    SetLen(u64),
    /// `fallocate` without `KEEP_SIZE`: the size grows to at least this.
    Extend(u64),
}

#[derive(Clone, Debug)]
enum Data {
    Bytes(Vec<u8>),
    /// A write of zeros (segment pre-allocation writes megabytes of them).
    Zeros(u64),
}

impl Data {
    fn from_slice(bytes: &[u8]) -> Data {
        if bytes.iter().all(|&b| b == 0) {
            Data::Zeros(bytes.len() as u64)
        } else {
            Data::Bytes(bytes.to_vec())
        }
    }

    fn len(&self) -> u64 {
        match self {
            Data::Bytes(b) => b.len() as u64,
            Data::Zeros(n) => *n,
        }
    }

    fn prefix(&self, n: u64) -> Data {
        match self {
            Data::Bytes(b) => Data::Bytes(b[..n as usize].to_vec()),
            Data::Zeros(_) => Data::Zeros(n),
        }
    }

    /// Copies the bytes from `from` on into `out` (`from + out.len()` ≤ len).
    fn copy_into(&self, from: u64, out: &mut [u8]) {
        match self {
            Data::Bytes(b) => out.copy_from_slice(&b[from as usize..from as usize + out.len()]),
            Data::Zeros(_) => out.fill(0),
        }
    }
}

/// A pending operation on a directory's entries.
#[derive(Clone, Debug)]
enum DirOp {
    Insert(OsString, u64),
    Remove(OsString),
    /// A rename within the directory: atomic, as journaling file systems make it.
    Rename {
        from: OsString,
        to: OsString,
    },
}

#[derive(Debug)]
struct FileState {
    backing: File,
    backing_path: PathBuf,
    durable_len: u64,
    visible_len: u64,
    pending: Vec<FileOp>,
}

#[derive(Debug, Default)]
struct DirState {
    durable: BTreeMap<OsString, u64>,
    visible: BTreeMap<OsString, u64>,
    pending: Vec<DirOp>,
}

#[derive(Debug)]
enum Content {
    File(FileState),
    Dir(DirState),
}

#[derive(Debug)]
struct Inode {
    content: Content,
    perm: u16,
    /// The inode's parent and name as last seen (labels, `..`).
    parent: u64,
    name: OsString,
    /// Open handles.
    open: u32,
}

/// Attributes of an inode, as `stat` shows them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    /// Inode number.
    pub ino: u64,
    /// Size in bytes (visible).
    pub size: u64,
    /// A directory?
    pub dir: bool,
    /// Permission bits.
    pub perm: u16,
    /// Visible names (directories: 2 + subdirectories).
    pub nlink: u32,
}

/// Counts of operations served, for tests' reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Operations by kind.
    pub ops: BTreeMap<&'static str, u64>,
    /// Crashes so far.
    pub crashes: u64,
}

/// The file system's whole state.
#[derive(Debug)]
pub struct Model {
    backing_dir: PathBuf,
    inodes: BTreeMap<u64, Inode>,
    next_ino: u64,
    rng: u64,
    /// Seeds the order in which directories list their entries.
    order_seed: u64,
    mode: CrashMode,
    triggers: Vec<(Trigger, u32)>,
    crashed: Option<CrashReport>,
    stats: Stats,
}

/// Outcome of checking triggers before an operation.
enum Gate {
    Go,
    /// Crash after the operation, with this label.
    After(String),
}

impl Model {
    /// An empty file system keeping durable contents in `backing_dir` (which must exist).
    pub fn new(backing_dir: &Path, mode: CrashMode, seed: u64) -> Model {
        let mut inodes = BTreeMap::new();
        inodes.insert(
            ROOT,
            Inode {
                content: Content::Dir(DirState::default()),
                perm: 0o755,
                parent: ROOT,
                name: OsString::new(),
                open: 0,
            },
        );
        Model {
            backing_dir: backing_dir.to_path_buf(),
            inodes,
            next_ino: ROOT + 1,
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            order_seed: seed,
            mode,
            triggers: Vec::new(),
            crashed: None,
            stats: Stats::default(),
        }
    }

    /// Arms `trigger` (several may be armed; the first to fire crashes the file system).
    pub fn arm(&mut self, trigger: Trigger) {
        self.triggers.push((trigger, 0));
    }

    /// Disarms every trigger.
    pub fn disarm(&mut self) {
        self.triggers.clear();
    }

    /// The crash that stopped the file system, if it is stopped.
    pub fn crashed(&self) -> Option<&CrashReport> {
        self.crashed.as_ref()
    }

    /// Counts so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Sets how the next crashes treat pending operations.
    pub fn set_mode(&mut self, mode: CrashMode) {
        self.mode = mode;
    }

    fn random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn live(&self) -> Result<(), Errno> {
        if self.crashed.is_some() {
            Err(libc::EIO)
        } else {
            Ok(())
        }
    }

    fn path_of(&self, ino: u64) -> String {
        let mut parts = Vec::new();
        let mut at = ino;
        while at != ROOT {
            let Some(inode) = self.inodes.get(&at) else {
                break;
            };
            parts.push(inode.name.to_string_lossy().into_owned());
            at = inode.parent;
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }

    fn child_path(&self, parent: u64, name: &OsStr) -> String {
        let base = self.path_of(parent);
        if base == "/" {
            format!("/{}", name.to_string_lossy())
        } else {
            format!("{base}/{}", name.to_string_lossy())
        }
    }

    /// Counts the operation, fires a `Before` trigger (crashing now) or reports an `After` one.
    fn gate(&mut self, op: OpKind, path: &str) -> Result<Gate, Errno> {
        self.live()?;
        *self.stats.ops.entry(op.name()).or_default() += 1;
        let mut fired = None;
        for (trigger, seen) in &mut self.triggers {
            if trigger.op == op && path.contains(&trigger.path_contains) {
                *seen += 1;
                if *seen > trigger.skip && fired.is_none() {
                    fired = Some(trigger.phase);
                }
            }
        }
        let Some(phase) = fired else {
            return Ok(Gate::Go);
        };
        let label = format!(
            "{}-{}:{}",
            op.name(),
            if phase == Phase::Before {
                "before"
            } else {
                "after"
            },
            shape(path)
        );
        match phase {
            Phase::Before => {
                self.crash_labelled(label);
                Err(libc::EIO)
            }
            Phase::After => Ok(Gate::After(label)),
        }
    }

    /// Completes an operation that passed its gate: crashes if an `After` trigger fired.
    fn finish<T>(&mut self, gate: Gate, result: Result<T, Errno>) -> Result<T, Errno> {
        match gate {
            Gate::Go => result,
            Gate::After(label) => {
                self.crash_labelled(label);
                result.and(Err(libc::EIO))
            }
        }
    }

    fn inode(&self, ino: u64) -> Result<&Inode, Errno> {
        self.inodes.get(&ino).ok_or(libc::ENOENT)
    }

    fn dir(&self, ino: u64) -> Result<&DirState, Errno> {
        match &self.inode(ino)?.content {
            Content::Dir(d) => Ok(d),
            Content::File(_) => Err(libc::ENOTDIR),
        }
    }

    fn dir_mut(&mut self, ino: u64) -> Result<&mut DirState, Errno> {
        match &mut self.inodes.get_mut(&ino).ok_or(libc::ENOENT)?.content {
            Content::Dir(d) => Ok(d),
            Content::File(_) => Err(libc::ENOTDIR),
        }
    }

    fn file_mut(&mut self, ino: u64) -> Result<&mut FileState, Errno> {
        match &mut self.inodes.get_mut(&ino).ok_or(libc::ENOENT)?.content {
            Content::File(f) => Ok(f),
            Content::Dir(_) => Err(libc::EISDIR),
        }
    }

    /// The attributes of `ino`.
    pub fn getattr(&self, ino: u64) -> Result<Attr, Errno> {
        self.live()?;
        let inode = self.inode(ino)?;
        let (size, dir, nlink) = match &inode.content {
            Content::File(f) => {
                let links = self.visible_links(ino);
                (f.visible_len, false, links)
            }
            Content::Dir(d) => {
                let subdirs = d
                    .visible
                    .values()
                    .filter(|i| matches!(self.inodes.get(i), Some(n) if matches!(n.content, Content::Dir(_))))
                    .count();
                (0, true, 2 + subdirs as u32)
            }
        };
        Ok(Attr {
            ino,
            size,
            dir,
            perm: inode.perm,
            nlink,
        })
    }

    fn visible_links(&self, ino: u64) -> u32 {
        self.inodes
            .values()
            .filter_map(|i| match &i.content {
                Content::Dir(d) => Some(d.visible.values().filter(|&&x| x == ino).count() as u32),
                Content::File(_) => None,
            })
            .sum()
    }

    /// Looks `name` up in directory `parent`.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr, Errno> {
        self.live()?;
        let ino = *self.dir(parent)?.visible.get(name).ok_or(libc::ENOENT)?;
        self.getattr(ino)
    }

    /// Lists directory `ino`: `(name, inode, is directory)`, without `.` and `..`.
    ///
    /// The order is a hash of the names under the model's seed and the directory, as ext4's hashed directories
    /// give it: code that deletes a directory's files in listing order must not depend on
    /// which goes first.
    pub fn readdir(&self, ino: u64) -> Result<Vec<(OsString, u64, bool)>, Errno> {
        self.live()?;
        let mut entries: Vec<_> = self
            .dir(ino)?
            .visible
            .iter()
            .map(|(name, &i)| {
                let dir =
                    matches!(self.inodes.get(&i), Some(n) if matches!(n.content, Content::Dir(_)));
                (name.clone(), i, dir)
            })
            .collect();
        entries.sort_by_key(|(name, _, _)| {
            // FNV-1a, seeded.
            let mut h = 0xcbf2_9ce4_8422_2325 ^ self.order_seed ^ ino.wrapping_mul(0x9E37_79B9);
            for &b in name.as_encoded_bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
            h
        });
        Ok(entries)
    }

    /// The parent of directory `ino` (for `..`).
    pub fn parent(&self, ino: u64) -> u64 {
        self.inodes.get(&ino).map_or(ROOT, |i| i.parent)
    }

    /// Creates a regular file (`dir == false`) or a directory `name` in `parent`.
    pub fn create(
        &mut self,
        parent: u64,
        name: &OsStr,
        perm: u16,
        dir: bool,
    ) -> Result<Attr, Errno> {
        let path = self.child_path(parent, name);
        let gate = self.gate(OpKind::Create, &path)?;
        let result = self.create_inner(parent, name, perm, dir);
        self.finish(gate, result)
    }

    fn create_inner(
        &mut self,
        parent: u64,
        name: &OsStr,
        perm: u16,
        dir: bool,
    ) -> Result<Attr, Errno> {
        if self.dir(parent)?.visible.contains_key(name) {
            return Err(libc::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let content = if dir {
            Content::Dir(DirState::default())
        } else {
            let backing_path = self.backing_dir.join(ino.to_string());
            let backing = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&backing_path)
                .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
            Content::File(FileState {
                backing,
                backing_path,
                durable_len: 0,
                visible_len: 0,
                pending: Vec::new(),
            })
        };
        self.inodes.insert(
            ino,
            Inode {
                content,
                perm,
                parent,
                name: name.to_os_string(),
                open: 0,
            },
        );
        let d = self.dir_mut(parent)?;
        d.visible.insert(name.to_os_string(), ino);
        d.pending.push(DirOp::Insert(name.to_os_string(), ino));
        self.getattr(ino)
    }

    /// Removes `name` from `parent`: a file (`dir == false`) or an empty directory.
    pub fn remove(&mut self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let path = self.child_path(parent, name);
        let gate = self.gate(OpKind::Remove, &path)?;
        let result = self.remove_inner(parent, name, dir);
        self.finish(gate, result)
    }

    fn remove_inner(&mut self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let ino = *self.dir(parent)?.visible.get(name).ok_or(libc::ENOENT)?;
        match (&self.inode(ino)?.content, dir) {
            (Content::Dir(d), true) if !d.visible.is_empty() => return Err(libc::ENOTEMPTY),
            (Content::Dir(_), false) => return Err(libc::EISDIR),
            (Content::File(_), true) => return Err(libc::ENOTDIR),
            _ => {}
        }
        let d = self.dir_mut(parent)?;
        d.visible.remove(name);
        d.pending.push(DirOp::Remove(name.to_os_string()));
        Ok(())
    }

    /// Renames `parent/name` to `new_parent/new_name`, replacing a file (or empty directory)
    /// there unless `no_replace`.
    pub fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        no_replace: bool,
    ) -> Result<(), Errno> {
        let path = self.child_path(parent, name);
        let gate = self.gate(OpKind::Rename, &path)?;
        let result = self.rename_inner(parent, name, new_parent, new_name, no_replace);
        self.finish(gate, result)
    }

    fn rename_inner(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        no_replace: bool,
    ) -> Result<(), Errno> {
        let ino = *self.dir(parent)?.visible.get(name).ok_or(libc::ENOENT)?;
        let moving_dir = matches!(self.inode(ino)?.content, Content::Dir(_));
        if let Some(&target) = self.dir(new_parent)?.visible.get(new_name) {
            if target == ino {
                return Ok(());
            }
            if no_replace {
                return Err(libc::EEXIST);
            }
            match (&self.inode(target)?.content, moving_dir) {
                (Content::Dir(d), true) if !d.visible.is_empty() => return Err(libc::ENOTEMPTY),
                (Content::Dir(_), false) => return Err(libc::EISDIR),
                (Content::File(_), true) => return Err(libc::ENOTDIR),
                _ => {}
            }
        }
        if parent == new_parent {
            let d = self.dir_mut(parent)?;
            d.visible.remove(name);
            d.visible.insert(new_name.to_os_string(), ino);
            d.pending.push(DirOp::Rename {
                from: name.to_os_string(),
                to: new_name.to_os_string(),
            });
        } else {
            // Two directories, two independent changes: a crash may keep either.
            let to = self.dir_mut(new_parent)?;
            to.visible.insert(new_name.to_os_string(), ino);
            to.pending.push(DirOp::Insert(new_name.to_os_string(), ino));
            let from = self.dir_mut(parent)?;
            from.visible.remove(name);
            from.pending.push(DirOp::Remove(name.to_os_string()));
        }
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.parent = new_parent;
            inode.name = new_name.to_os_string();
        }
        Ok(())
    }

    /// Notes a new open handle on `ino`; `truncate` applies `O_TRUNC`.
    pub fn open(&mut self, ino: u64, truncate: bool) -> Result<(), Errno> {
        self.live()?;
        self.inode(ino)?;
        if truncate {
            self.set_len(ino, 0)?;
        }
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.open += 1;
        }
        Ok(())
    }

    /// Drops an open handle on `ino` (works on a crashed file system too).
    pub fn release(&mut self, ino: u64) {
        if let Some(inode) = self.inodes.get_mut(&ino) {
            inode.open = inode.open.saturating_sub(1);
        }
        if self.crashed.is_none() {
            self.collect_garbage();
        }
    }

    /// Reads up to `size` bytes of `ino` at `offset`, as processes see them.
    pub fn read(&mut self, ino: u64, offset: u64, size: u32) -> Result<Vec<u8>, Errno> {
        self.live()?;
        let f = self.file_mut(ino)?;
        if offset >= f.visible_len {
            return Ok(Vec::new());
        }
        let len = (f.visible_len - offset).min(u64::from(size));
        let mut buf = vec![0u8; len as usize];
        if offset < f.durable_len {
            let n = (f.durable_len - offset).min(len) as usize;
            f.backing
                .read_exact_at(&mut buf[..n], offset)
                .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        }
        let end = offset + len;
        // The pending operations, in order, over the durable bytes.
        let mut len_so_far = f.durable_len;
        for op in &f.pending {
            match op {
                FileOp::Write { offset: at, data } => {
                    let (from, to) = ((*at).max(offset), (at + data.len()).min(end));
                    if from < to {
                        let out = &mut buf[(from - offset) as usize..(to - offset) as usize];
                        data.copy_into(from - at, out);
                    }
                    len_so_far = len_so_far.max(at + data.len());
                }
                FileOp::SetLen(n) => {
                    if *n < end && *n < len_so_far {
                        let from = (*n).max(offset);
                        buf[(from - offset) as usize..].fill(0);
                    }
                    len_so_far = *n;
                }
                FileOp::Extend(n) => len_so_far = len_so_far.max(*n),
            }
        }
        Ok(buf)
    }

    /// Writes `data` to `ino` at `offset` (pending until the file is synced).
    pub fn write(&mut self, ino: u64, offset: u64, data: &[u8]) -> Result<u32, Errno> {
        let path = self.path_of(ino);
        let gate = self.gate(OpKind::Write, &path)?;
        let result = self.file_mut(ino).map(|f| {
            f.pending.push(FileOp::Write {
                offset,
                data: Data::from_slice(data),
            });
            f.visible_len = f.visible_len.max(offset + data.len() as u64);
            data.len() as u32
        });
        self.finish(gate, result)
    }

    /// Sets the size of `ino` (pending until synced).
    pub fn set_len(&mut self, ino: u64, len: u64) -> Result<(), Errno> {
        let path = self.path_of(ino);
        let gate = self.gate(OpKind::SetLen, &path)?;
        let result = self.file_mut(ino).map(|f| {
            f.pending.push(FileOp::SetLen(len));
            f.visible_len = len;
        });
        self.finish(gate, result)
    }

    /// `fallocate`: mode 0 grows the size to `offset + len`; `FALLOC_FL_KEEP_SIZE` changes
    /// nothing visible; other modes are not supported.
    pub fn fallocate(&mut self, ino: u64, offset: u64, len: u64, mode: i32) -> Result<(), Errno> {
        let path = self.path_of(ino);
        let gate = self.gate(OpKind::Fallocate, &path)?;
        let result = match mode {
            0 => self.file_mut(ino).map(|f| {
                let end = offset + len;
                if end > f.visible_len {
                    f.pending.push(FileOp::Extend(end));
                    f.visible_len = end;
                }
            }),
            libc::FALLOC_FL_KEEP_SIZE => self.file_mut(ino).map(|_| ()),
            _ => Err(libc::EOPNOTSUPP),
        };
        self.finish(gate, result)
    }

    /// `fsync`/`fdatasync` of a file: its pending operations become durable.
    pub fn fsync(&mut self, ino: u64) -> Result<(), Errno> {
        let path = self.path_of(ino);
        let gate = self.gate(OpKind::Fsync, &path)?;
        let result = self.file_mut(ino).and_then(|f| {
            let ops = std::mem::take(&mut f.pending);
            for op in &ops {
                apply(f, op)?;
            }
            Ok(())
        });
        self.finish(gate, result)
    }

    /// `fsync` of a directory: its entries become durable.
    pub fn fsync_dir(&mut self, ino: u64) -> Result<(), Errno> {
        let path = self.path_of(ino);
        let gate = self.gate(OpKind::FsyncDir, &path)?;
        let result = self.dir_mut(ino).map(|d| {
            d.durable = d.visible.clone();
            d.pending.clear();
        });
        self.collect_garbage();
        self.finish(gate, result)
    }

    /// Fails the power now (if not already off).
    pub fn crash(&mut self) -> CrashReport {
        if let Some(report) = &self.crashed {
            return report.clone();
        }
        let mut pending = BTreeSet::new();
        for (&ino, inode) in &self.inodes {
            let kinds: BTreeSet<&str> = match &inode.content {
                Content::File(f) => f
                    .pending
                    .iter()
                    .map(|op| match op {
                        FileOp::Write { .. } => "write",
                        FileOp::SetLen(_) => "setlen",
                        FileOp::Extend(_) => "fallocate",
                    })
                    .collect(),
                Content::Dir(d) if !d.pending.is_empty() => BTreeSet::from(["entries"]),
                Content::Dir(_) => BTreeSet::new(),
            };
            if !kinds.is_empty() {
                let kinds: Vec<_> = kinds.into_iter().collect();
                pending.insert(format!(
                    "{}({})",
                    shape(&self.path_of(ino)),
                    kinds.join("+")
                ));
            }
        }
        let label = if pending.is_empty() {
            "now:all-synced".to_string()
        } else {
            let pending: Vec<_> = pending.into_iter().collect();
            format!("now:unsynced {}", pending.join(" "))
        };
        self.crash_labelled(label)
    }

    fn crash_labelled(&mut self, label: String) -> CrashReport {
        let mut report = CrashReport {
            label,
            dropped: 0,
            kept: 0,
            torn: false,
        };
        let mut inos: Vec<u64> = self.inodes.keys().copied().collect();
        inos.sort_unstable();
        for ino in inos {
            let pending = match self.inodes.get(&ino).map(|i| &i.content) {
                Some(Content::File(f)) => f.pending.len(),
                Some(Content::Dir(d)) => d.pending.len(),
                None => 0,
            };
            let keep = match self.mode {
                CrashMode::DropUnsynced => 0,
                CrashMode::Torn if pending == 0 => 0,
                CrashMode::Torn => (self.random() % (pending as u64 + 1)) as usize,
            };
            let tear = self.mode == CrashMode::Torn && keep < pending && self.random() % 2 == 0;
            let cut = self.random();
            let Some(inode) = self.inodes.get_mut(&ino) else {
                continue;
            };
            report.kept += keep;
            report.dropped += pending - keep;
            match &mut inode.content {
                Content::File(f) => {
                    let ops = std::mem::take(&mut f.pending);
                    for op in &ops[..keep] {
                        // A backing-file error here leaves that file's durable content as it
                        // was: still a state some power loss could leave.
                        let _ = apply(f, op);
                    }
                    if tear {
                        if let Some(FileOp::Write { offset, data }) = ops.get(keep) {
                            if data.len() > 1 {
                                let n = 1 + cut % (data.len() - 1);
                                let torn = FileOp::Write {
                                    offset: *offset,
                                    data: data.prefix(n),
                                };
                                let _ = apply(f, &torn);
                                report.torn = true;
                            }
                        }
                    }
                    f.visible_len = f.durable_len;
                }
                Content::Dir(d) => {
                    let ops = std::mem::take(&mut d.pending);
                    for op in &ops[..keep] {
                        apply_dir(&mut d.durable, op);
                    }
                    d.visible = d.durable.clone();
                }
            }
        }
        // Whatever is no longer reachable from the root is gone; parents follow the tree.
        let mut reachable = BTreeSet::from([ROOT]);
        let mut queue = vec![ROOT];
        while let Some(at) = queue.pop() {
            let children: Vec<(OsString, u64)> = match self.inodes.get(&at).map(|i| &i.content) {
                Some(Content::Dir(d)) => d.visible.iter().map(|(n, &i)| (n.clone(), i)).collect(),
                _ => Vec::new(),
            };
            for (name, child) in children {
                if let Some(inode) = self.inodes.get_mut(&child) {
                    inode.parent = at;
                    inode.name = name;
                    if reachable.insert(child) {
                        queue.push(child);
                    }
                }
            }
        }
        let gone: Vec<u64> = self
            .inodes
            .keys()
            .filter(|i| !reachable.contains(i))
            .copied()
            .collect();
        for ino in gone {
            self.delete(ino);
        }
        for inode in self.inodes.values_mut() {
            inode.open = 0;
        }
        self.triggers.clear();
        self.stats.crashes += 1;
        self.crashed = Some(report.clone());
        report
    }

    /// Powers the file system back on after a crash: operations work again, on what survived.
    pub fn restart(&mut self) {
        self.crashed = None;
    }

    fn delete(&mut self, ino: u64) {
        if let Some(inode) = self.inodes.remove(&ino) {
            if let Content::File(f) = inode.content {
                let _ = std::fs::remove_file(&f.backing_path);
            }
        }
    }

    /// Deletes inodes that no directory (visible, durable or pending) names and no handle has
    /// open.
    fn collect_garbage(&mut self) {
        let mut named = BTreeSet::from([ROOT]);
        for inode in self.inodes.values() {
            if let Content::Dir(d) = &inode.content {
                named.extend(d.visible.values().copied());
                named.extend(d.durable.values().copied());
                for op in &d.pending {
                    if let DirOp::Insert(_, i) = op {
                        named.insert(*i);
                    }
                }
            }
        }
        let gone: Vec<u64> = self
            .inodes
            .iter()
            .filter(|(i, inode)| !named.contains(i) && inode.open == 0)
            .map(|(&i, _)| i)
            .collect();
        for ino in gone {
            self.delete(ino);
        }
    }
}

fn apply(f: &mut FileState, op: &FileOp) -> Result<(), Errno> {
    let io = |e: std::io::Error| e.raw_os_error().unwrap_or(libc::EIO);
    match op {
        FileOp::Write { offset, data } => {
            match data {
                Data::Bytes(b) => f.backing.write_all_at(b, *offset).map_err(io)?,
                Data::Zeros(n) => {
                    let end = offset + n;
                    if end > f.durable_len {
                        // Bytes past the end read as zeros once the file is longer.
                        f.backing.set_len(end).map_err(io)?;
                    }
                    let zeros = vec![0u8; 1 << 16];
                    let mut at = *offset;
                    let stop = end.min(f.durable_len);
                    while at < stop {
                        let n = (stop - at).min(zeros.len() as u64) as usize;
                        f.backing.write_all_at(&zeros[..n], at).map_err(io)?;
                        at += n as u64;
                    }
                }
            }
            f.durable_len = f.durable_len.max(offset + data.len());
        }
        FileOp::SetLen(n) => {
            f.backing.set_len(*n).map_err(io)?;
            f.durable_len = *n;
        }
        FileOp::Extend(n) => {
            if *n > f.durable_len {
                f.backing.set_len(*n).map_err(io)?;
                f.durable_len = *n;
            }
        }
    }
    Ok(())
}

fn apply_dir(entries: &mut BTreeMap<OsString, u64>, op: &DirOp) {
    match op {
        DirOp::Insert(name, ino) => {
            entries.insert(name.clone(), *ino);
        }
        DirOp::Remove(name) => {
            entries.remove(name);
        }
        DirOp::Rename { from, to } => {
            if let Some(ino) = entries.remove(from) {
                entries.insert(to.clone(), ino);
            }
        }
    }
}

/// A path with every run of digits replaced by `#`: segment 7 and segment 8 are one place.
pub fn shape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_digits = false;
    for c in path.chars() {
        if c.is_ascii_digit() {
            if !in_digits {
                out.push('#');
            }
            in_digits = true;
        } else {
            out.push(c);
            in_digits = false;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(mode: CrashMode) -> (tempfile::TempDir, Model) {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Model::new(dir.path(), mode, 1);
        (dir, m)
    }

    #[test]
    fn reads_apply_pending_writes_and_size_changes_in_order_over_the_durable_bytes() {
        let (_dir, mut m) = model(CrashMode::DropUnsynced);
        let f = m
            .create(ROOT, OsStr::new("f"), 0o644, false)
            .expect("create")
            .ino;
        m.fsync_dir(ROOT).expect("sync root");
        m.write(f, 0, b"abcdefgh").expect("write");
        m.fsync(f).expect("fsync");
        m.set_len(f, 3).expect("shrink");
        m.write(f, 5, b"XY").expect("write past the end");
        assert_eq!(m.read(f, 0, 100).expect("read"), b"abc\0\0XY");
        m.fallocate(f, 0, 10, 0).expect("fallocate");
        assert_eq!(m.getattr(f).expect("attr").size, 10);
        assert_eq!(m.read(f, 6, 100).expect("read"), b"Y\0\0\0");
        m.crash();
        assert_eq!(
            m.read(f, 0, 1),
            Err(libc::EIO),
            "a crashed file system serves nothing"
        );
        m.restart();
        assert_eq!(m.read(f, 0, 100).expect("read"), b"abcdefgh");
    }

    #[test]
    fn a_crash_keeps_renames_whole_and_forgets_unsynced_entries() {
        let (_dir, mut m) = model(CrashMode::DropUnsynced);
        let d = m
            .create(ROOT, OsStr::new("d"), 0o755, true)
            .expect("mkdir")
            .ino;
        m.fsync_dir(ROOT).expect("sync root");
        let old = m
            .create(d, OsStr::new("a"), 0o644, false)
            .expect("create")
            .ino;
        m.write(old, 0, b"old").expect("write");
        m.fsync(old).expect("fsync");
        m.fsync_dir(d).expect("sync d");
        let new = m
            .create(d, OsStr::new("a.tmp"), 0o644, false)
            .expect("create")
            .ino;
        m.write(new, 0, b"new").expect("write");
        m.fsync(new).expect("fsync");
        m.rename(d, OsStr::new("a.tmp"), d, OsStr::new("a"), false)
            .expect("rename");
        let report = m.crash();
        assert_eq!(report.dropped, 2, "{report:?}"); // create a.tmp, rename
        m.restart();
        let names: Vec<_> = m
            .readdir(d)
            .expect("list")
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(names, vec![OsString::from("a")]);
        let a = m.lookup(d, OsStr::new("a")).expect("lookup").ino;
        assert_eq!(a, old);
        assert_eq!(m.read(a, 0, 10).expect("read"), b"old");
        assert!(
            m.getattr(new).is_err(),
            "the unreachable new file was deleted"
        );
    }
}
