//! Write backends: io_uring with O_DIRECT, and portable buffered pwrite + fdatasync.
//!
//! Both receive the same thing from the writer: a block-aligned buffer to write at a
//! block-aligned offset, followed by one data sync. The io_uring backend splits the buffer
//! into chunks submitted together (DESIGN §5: chained IO_LINK writes serialize in the kernel,
//! so the writes are independent and the sync is submitted once they all completed).

use io_uring::{opcode, types, IoUring};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The alignment and granularity of every write (the largest common logical block size).
pub const BLOCK_SIZE: usize = 4096;

/// How big one io_uring write is; a batch becomes `len / WRITE_CHUNK_BYTES` concurrent writes.
const WRITE_CHUNK_BYTES: usize = 256 << 10;
const RING_ENTRIES: u32 = 64;

/// Which backend a WAL uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendKind {
    /// io_uring with O_DIRECT segment files.
    IoUring,
    /// Buffered pwrite + fdatasync.
    Portable,
}

/// How to choose the backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BackendChoice {
    /// io_uring if the kernel and file system support it, otherwise portable (logged).
    #[default]
    Auto,
    /// io_uring or fail.
    IoUring,
    /// Portable.
    Portable,
}

#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C, align(4096))]
struct Block([u8; BLOCK_SIZE]);

/// A growable byte buffer whose start is aligned to [`BLOCK_SIZE`] (O_DIRECT needs it).
pub struct AlignedBuf {
    blocks: Vec<Block>,
    len: usize,
}

impl AlignedBuf {
    /// An empty buffer.
    pub fn new() -> AlignedBuf {
        AlignedBuf {
            blocks: Vec::new(),
            len: 0,
        }
    }

    /// Appends `bytes`.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        let end = self.len + bytes.len();
        let blocks = end.div_ceil(BLOCK_SIZE);
        if blocks > self.blocks.len() {
            self.blocks.resize(blocks, Block([0; BLOCK_SIZE]));
        }
        self.blocks.as_mut_bytes()[self.len..end].copy_from_slice(bytes);
        self.len = end;
    }

    /// The used bytes padded with zeros to a whole number of blocks.
    pub fn padded(&mut self) -> &[u8] {
        let end = self.len.div_ceil(BLOCK_SIZE) * BLOCK_SIZE;
        let bytes = self.blocks.as_mut_bytes();
        bytes[self.len..end].fill(0);
        &bytes[..end]
    }

    /// Keeps only `bytes[from..len]`, moved to the start (`from` must be block-aligned).
    pub fn keep_tail(&mut self, from: usize) {
        debug_assert_eq!(from % BLOCK_SIZE, 0);
        let bytes = self.blocks.as_mut_bytes();
        bytes.copy_within(from..self.len, 0);
        self.len -= from;
    }

    /// Empties the buffer.
    pub fn clear(&mut self) {
        self.len = 0;
    }
}

/// Writes and syncs segment files.
pub enum Backend {
    /// io_uring.
    Uring(Box<IoUring>),
    /// pwrite + fdatasync.
    Portable,
}

impl Backend {
    /// Builds the backend for `choice`, probing io_uring and O_DIRECT in `dir` when needed.
    pub fn new(choice: BackendChoice, dir: &Path) -> io::Result<Backend> {
        match choice {
            BackendChoice::Portable => Ok(Backend::Portable),
            BackendChoice::IoUring => Backend::probe_uring(dir),
            BackendChoice::Auto => match Backend::probe_uring(dir) {
                Ok(backend) => Ok(backend),
                Err(e) => {
                    eprintln!(
                        "ringraft-storage: io_uring with O_DIRECT unavailable in {} ({e}); \
                         using the portable pwrite backend",
                        dir.display()
                    );
                    Ok(Backend::Portable)
                }
            },
        }
    }

    fn probe_uring(dir: &Path) -> io::Result<Backend> {
        let mut backend = Backend::Uring(Box::new(IoUring::new(RING_ENTRIES)?));
        let path = dir.join(".direct-io-probe");
        let result = (|| {
            let file = backend.open_for_write(&path, true)?;
            let mut buf = AlignedBuf::new();
            buf.extend_from_slice(&[0u8; 16]);
            backend.write_and_sync(&file, 0, buf.padded())
        })();
        let _ = std::fs::remove_file(&path);
        result.map(|()| backend)
    }

    /// Which backend this is.
    pub fn kind(&self) -> BackendKind {
        match self {
            Backend::Uring(_) => BackendKind::IoUring,
            Backend::Portable => BackendKind::Portable,
        }
    }

    /// Opens a segment for writing (O_DIRECT for io_uring).
    pub fn open_for_write(&self, path: &Path, create: bool) -> io::Result<File> {
        let mut options = OpenOptions::new();
        options
            .read(true)
            .write(true)
            .create(create)
            .truncate(false);
        if matches!(self, Backend::Uring(_)) {
            options.custom_flags(libc::O_DIRECT);
        }
        options.open(path)
    }

    /// Writes `buf` (block-aligned length and address) at `offset` (block-aligned), then
    /// syncs the file's data. Returns only when both are complete.
    pub fn write_and_sync(&mut self, file: &File, offset: u64, buf: &[u8]) -> io::Result<()> {
        match self {
            Backend::Portable => {
                file.write_all_at(buf, offset)?;
                file.sync_data()
            }
            Backend::Uring(ring) => {
                uring_write_all(ring, file, offset, buf)?;
                let fd = types::Fd(file.as_raw_fd());
                let sync = opcode::Fsync::new(fd)
                    .flags(types::FsyncFlags::DATASYNC)
                    .build();
                let results = uring_run(ring, &[sync])?;
                results
                    .into_iter()
                    .try_for_each(|res| cqe_result(res).map(drop))
            }
        }
    }
}

fn cqe_result(res: i32) -> io::Result<usize> {
    if res < 0 {
        Err(io::Error::from_raw_os_error(-res))
    } else {
        Ok(res as usize)
    }
}

/// Submits `entries` and waits for all of their completions; results in submission order.
fn uring_run(ring: &mut IoUring, entries: &[io_uring::squeue::Entry]) -> io::Result<Vec<i32>> {
    let mut results = vec![0i32; entries.len()];
    for (i, entry) in entries.iter().enumerate() {
        let entry = entry.clone().user_data(i as u64);
        // SAFETY: every buffer an entry points to is borrowed by our caller until this function
        // has reaped all of the entries' completions below.
        unsafe { ring.submission().push(&entry) }
            .map_err(|_| io::Error::other("io_uring submission queue full"))?;
    }
    let mut reaped = 0;
    while reaped < entries.len() {
        match ring.submit_and_wait(entries.len() - reaped) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(e),
        }
        for cqe in ring.completion() {
            if let Some(slot) = results.get_mut(cqe.user_data() as usize) {
                *slot = cqe.result();
                reaped += 1;
            }
        }
    }
    Ok(results)
}

fn uring_write_all(ring: &mut IoUring, file: &File, offset: u64, buf: &[u8]) -> io::Result<()> {
    let fd = types::Fd(file.as_raw_fd());
    // (start in buf, len) of writes still to do; short writes put their remainder back.
    let mut todo: Vec<(usize, usize)> = (0..buf.len())
        .step_by(WRITE_CHUNK_BYTES)
        .map(|start| (start, WRITE_CHUNK_BYTES.min(buf.len() - start)))
        .collect();
    while !todo.is_empty() {
        let wave: Vec<(usize, usize)> = todo
            .drain(..todo.len().min(RING_ENTRIES as usize))
            .collect();
        let entries: Vec<_> = wave
            .iter()
            .map(|&(start, len)| {
                opcode::Write::new(fd, buf[start..].as_ptr(), len as u32)
                    .offset(offset + start as u64)
                    .build()
            })
            .collect();
        let results = uring_run(ring, &entries)?;
        for (&(start, len), res) in wave.iter().zip(results) {
            let written = cqe_result(res)?;
            if written == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "io_uring wrote 0 bytes",
                ));
            }
            if written < len {
                todo.push((start + written, len - written));
            }
        }
    }
    Ok(())
}
