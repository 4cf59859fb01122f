//! Write backends: io_uring with O_DIRECT, and portable buffered pwrite + fdatasync.
//!
//! Both receive the same thing from the writer: a block-aligned buffer to write at a
//! block-aligned offset, followed by one data sync. The io_uring backend splits a buffer
//! larger than one write into chunks submitted together (ARCHITECTURE §5: chained IO_LINK writes
//! serialize in the kernel, so the writes are independent) and calls fdatasync once they have
//! all completed; a buffer of one write (every small group-commit batch) is written with a
//! blocking O_DIRECT `pwritev2(RWF_DSYNC)`, which completes with one wake-up fewer than an
//! io_uring write and syncs in the same call (see [`Backend::write_and_sync`]).

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
/// Submission queue size of the rings this module creates.
pub const RING_ENTRIES: u32 = 64;

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
#[derive(Default)]
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
        self.reserve_tail(bytes.len()).copy_from_slice(bytes);
    }

    /// Grows the used part by `n` bytes and returns them (contents unspecified) to be filled
    /// in place, so records are encoded straight into the buffer that is written. Capacity is
    /// kept across [`AlignedBuf::clear`], so a reused buffer does not allocate.
    pub fn reserve_tail(&mut self, n: usize) -> &mut [u8] {
        let start = self.len;
        let end = start + n;
        let blocks = end.div_ceil(BLOCK_SIZE);
        if blocks > self.blocks.len() {
            // At least double, so that growing record by record stays amortized O(1).
            let target = blocks.max(self.blocks.len() * 2);
            self.blocks.resize(target, Block([0; BLOCK_SIZE]));
        }
        self.len = end;
        &mut self.blocks.as_mut_bytes()[start..end]
    }

    /// The used bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.blocks.as_bytes()[..self.len]
    }

    /// The used bytes, to patch in place.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.blocks.as_mut_bytes()[..self.len]
    }

    /// Bytes in use.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Zero-fills from the end of the used bytes to the next block boundary (see
    /// [`AlignedBuf::padded_bytes`]).
    pub fn pad_to_block(&mut self) {
        let end = self.len.div_ceil(BLOCK_SIZE) * BLOCK_SIZE;
        self.blocks.as_mut_bytes()[self.len..end].fill(0);
    }

    /// The used bytes and the rest of their last block, as left by
    /// [`AlignedBuf::pad_to_block`].
    pub fn padded_bytes(&self) -> &[u8] {
        &self.blocks.as_bytes()[..self.len.div_ceil(BLOCK_SIZE) * BLOCK_SIZE]
    }

    /// The used bytes padded with zeros to a whole number of blocks.
    pub fn padded(&mut self) -> &[u8] {
        let end = self.len.div_ceil(BLOCK_SIZE) * BLOCK_SIZE;
        let bytes = self.blocks.as_mut_bytes();
        bytes[self.len..end].fill(0);
        &bytes[..end]
    }

    /// Keeps the first `len` bytes (`len` at most the current length).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
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
            if let Backend::Uring(ring) = &mut backend {
                // Through the ring, although `write_and_sync` would `pwrite` one block: this
                // probes io_uring writes as well as O_DIRECT.
                uring_write_all(ring, &file, 0, buf.padded())?;
            }
            file.sync_data()
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
                sync_data(file)
            }
            Backend::Uring(ring) => {
                if buf.len() <= WRITE_CHUNK_BYTES {
                    // One write: a blocking O_DIRECT pwritev2. The kernel completes a
                    // synchronous direct write by waking this thread from the device's
                    // interrupt; an io_uring one is completed through the file system's
                    // `dio` workqueue first (a kworker wake-up and context switch more on the
                    // critical path of every small batch). io_uring pays only when a batch
                    // becomes several concurrent writes. A/B with `ringraft-load --clients 1`
                    // (3-node durable cluster, same session): p50 287 → 256 µs. With
                    // RWF_DSYNC the sync is part of the same call: one WAL batch of one
                    // record took 11 % less time than with `pwrite` + `fdatasync`
                    // (docs/PERFORMANCE.md, session 19).
                    return write_durably(file, offset, buf);
                }
                uring_write_all(ring, file, offset, buf)?;
                // fdatasync(2) from this thread, not IORING_OP_FSYNC: io_uring always hands a
                // sync to an io-wq worker thread, and that hop (two more context switches)
                // cut one-entry batches from 8 100 to 4 500 syncs/s here (A/B in the same
                // run); the writes before it are what io_uring speeds up.
                sync_data(file)
            }
        }
    }
}

/// Writes `buf` at `offset` with one `pwritev2(RWF_DSYNC)`: the kernel writes the data and
/// then does what fdatasync(2) of that range does (flushes the device's cache, commits any
/// metadata needed to read the data back) before the call returns, so the batch is as
/// durable as after `pwrite` + `fdatasync`, with one system call and one return to this
/// thread fewer. A short write finishes with `pwrite` + `fdatasync`; a kernel that refuses the
/// flag gets the two calls.
fn write_durably(file: &File, offset: u64, buf: &[u8]) -> io::Result<()> {
    if crate::mutation::enabled(crate::mutation::Mutation::SkipWalFdatasync) {
        return file.write_all_at(buf, offset);
    }
    let iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let Ok(at) = libc::off_t::try_from(offset) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "write offset out of range",
        ));
    };
    let written = loop {
        // SAFETY: `iov` points to `buf`, which outlives the call; the kernel only reads it.
        let n = unsafe { libc::pwritev2(file.as_raw_fd(), &iov, 1, at, libc::RWF_DSYNC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) => break 0,
            _ => return Err(e),
        }
    };
    if written == buf.len() {
        return Ok(());
    }
    file.write_all_at(&buf[written..], offset + written as u64)?;
    sync_data(file)
}

/// A ring for one durable write at a time that does not block the thread that submits it:
/// a `Write` with `RWF_DSYNC` (the write and the sync of its range in one operation, as
/// [`write_durably`]), whose completion is signalled on an eventfd an event loop watches
/// ([`AsyncRing::fd`]). The WAL uses it when a caller's event loop reaps its completions (see
/// `LogStore::write_completions`), so that neither a writer thread nor the caller's thread
/// waits for the disk.
///
/// It keeps what the kernel reads from (`inflight`) until the write completed, and its drop
/// waits for an outstanding write: the kernel never reads freed memory.
pub(super) struct AsyncRing {
    ring: IoUring,
    event: std::os::fd::OwnedFd,
    inflight: Option<std::sync::Arc<super::Chunk>>,
}

impl AsyncRing {
    /// A ring of a few entries whose completions post to a new non-blocking eventfd.
    pub fn new() -> io::Result<AsyncRing> {
        use std::os::fd::FromRawFd;
        let ring = IoUring::new(4)?;
        // SAFETY: eventfd takes no pointers; the result is checked before it is owned.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor nothing else owns.
        let event = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        ring.submitter().register_eventfd(fd)?;
        Ok(AsyncRing {
            ring,
            event,
            inflight: None,
        })
    }

    /// The eventfd that becomes readable when a write completes.
    pub fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.event.as_raw_fd()
    }

    /// Whether a write is outstanding.
    pub fn busy(&self) -> bool {
        self.inflight.is_some()
    }

    /// Submits one durable write of `chunk`'s padded buffer at its file offset in `file`.
    /// On error nothing is outstanding (the caller writes the chunk another way).
    pub fn submit(&mut self, file: &File, chunk: std::sync::Arc<super::Chunk>) -> io::Result<()> {
        debug_assert!(self.inflight.is_none(), "one write at a time");
        let buf = chunk.buf.padded_bytes();
        let flags = if crate::mutation::enabled(crate::mutation::Mutation::SkipWalFdatasync) {
            0
        } else {
            libc::RWF_DSYNC
        };
        let entry = opcode::Write::new(types::Fd(file.as_raw_fd()), buf.as_ptr(), buf.len() as u32)
            .offset(chunk.file_offset)
            .rw_flags(flags)
            .build()
            .user_data(1);
        // SAFETY: the buffer belongs to `chunk`, which `self.inflight` keeps alive until the
        // completion is reaped (`complete`, or the drop, which waits for it).
        if unsafe { self.ring.submission().push(&entry) }.is_err() {
            return Err(io::Error::other("io_uring submission queue full"));
        }
        self.inflight = Some(chunk);
        loop {
            match self.ring.submit() {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Whether the kernel took the entry is not known: wait for it either way
                    // (a refused entry stays queued and goes with this wait).
                    let _ = self.wait();
                    return Err(e);
                }
            }
        }
    }

    /// The outcome of the outstanding write if it has completed: bytes written, or the error.
    /// Clears the eventfd first, so a completion after this call signals it again.
    pub fn poll(&mut self) -> Option<io::Result<usize>> {
        self.inflight.as_ref()?;
        let mut count = [0u8; 8];
        // SAFETY: reads 8 bytes into `count`; a non-blocking eventfd with nothing to read fails
        // with EAGAIN, which is ignored.
        let _ = unsafe {
            libc::read(
                std::os::fd::AsRawFd::as_raw_fd(&self.event),
                count.as_mut_ptr().cast(),
                8,
            )
        };
        let result = self.ring.completion().next()?.result();
        self.inflight = None;
        Some(cqe_result(result))
    }

    /// Waits for the outstanding write (if any) and returns its outcome.
    pub fn wait(&mut self) -> Option<io::Result<usize>> {
        let mut failures = 0;
        loop {
            if let Some(done) = self.poll() {
                return Some(done);
            }
            self.inflight.as_ref()?;
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    failures += 1;
                    if failures >= ENTER_RETRIES_MAX {
                        eprintln!(
                            "ringraft WAL: io_uring keeps failing ({e}) with a write of a \
                             buffer in flight; aborting rather than freeing memory the kernel \
                             may still use"
                        );
                        std::process::abort();
                    }
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
            }
        }
    }
}

impl Drop for AsyncRing {
    fn drop(&mut self) {
        let _ = self.wait();
    }
}

/// Finishes a durable write of `buf` at `offset` of which the first `written` bytes went out
/// with `RWF_DSYNC`: the rest with [`write_durably`] (a short write is rare: a signal, a
/// device limit).
pub(super) fn finish_durably(
    file: &File,
    offset: u64,
    buf: &[u8],
    written: usize,
) -> io::Result<()> {
    if written >= buf.len() {
        return Ok(());
    }
    write_durably(file, offset + written as u64, &buf[written..])
}

/// fdatasync(2), unless the power-loss tests' mutation removed it.
fn sync_data(file: &File) -> io::Result<()> {
    if crate::mutation::enabled(crate::mutation::Mutation::SkipWalFdatasync) {
        return Ok(());
    }
    file.sync_data()
}

fn cqe_result(res: i32) -> io::Result<usize> {
    if res < 0 {
        Err(io::Error::from_raw_os_error(-res))
    } else {
        Ok(res as usize)
    }
}

/// How many failed `io_uring_enter` calls [`uring_run`] retries while operations that point
/// into its caller's buffers are still queued or in flight (about a second in all).
const ENTER_RETRIES_MAX: u32 = 1000;

/// Submits `entries` and waits for all of their completions; results in submission order.
///
/// Never returns while the kernel may still use a buffer an entry points to: if pushing fails
/// part-way, what was pushed is still submitted and reaped; if submitting or waiting fails,
/// the call keeps submitting and waiting (the failure is reported afterwards) until every
/// pushed entry has completed. Returning earlier would let the kernel read or write memory
/// whose borrow ended (or submit the leftovers with the ring's next use). If the ring keeps
/// failing for [`ENTER_RETRIES_MAX`] attempts, the process aborts: no safe return is left.
fn uring_run(ring: &mut IoUring, entries: &[io_uring::squeue::Entry]) -> io::Result<Vec<i32>> {
    let mut results = vec![0i32; entries.len()];
    let mut error: Option<io::Error> = None;
    let mut pushed = 0;
    for (i, entry) in entries.iter().enumerate() {
        let entry = entry.clone().user_data(i as u64);
        // SAFETY: every buffer an entry points to is borrowed by our caller until this function
        // returns, and it returns only once every pushed entry's completion was reaped below
        // (on every path, errors included).
        if unsafe { ring.submission().push(&entry) }.is_err() {
            error = Some(io::Error::other("io_uring submission queue full"));
            break;
        }
        pushed += 1;
    }
    let mut reaped = 0;
    let mut failures = 0;
    while reaped < pushed {
        match submit_and_wait(ring, pushed - reaped) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => {
                failures += 1;
                if failures >= ENTER_RETRIES_MAX {
                    eprintln!(
                        "ringraft WAL: io_uring keeps failing ({e}) with operations on borrowed \
                         buffers still queued; aborting rather than freeing memory the kernel \
                         may still use"
                    );
                    std::process::abort();
                }
                error.get_or_insert(e);
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        for cqe in ring.completion() {
            if let Some(slot) = results.get_mut(cqe.user_data() as usize) {
                *slot = cqe.result();
                reaped += 1;
            }
        }
    }
    match error {
        Some(e) => Err(e),
        None => Ok(results),
    }
}

/// `io_uring_enter` (submit what is queued, wait for `want` completions). Tests can make the
/// next calls fail (see `inject_enter_errors`).
fn submit_and_wait(ring: &mut IoUring, want: usize) -> io::Result<usize> {
    #[cfg(test)]
    if injected::take() {
        return Err(io::Error::from_raw_os_error(libc::EAGAIN));
    }
    ring.submit_and_wait(want)
}

#[cfg(test)]
mod injected {
    use std::cell::Cell;

    thread_local! {
        static ENTER_ERRORS: Cell<u32> = const { Cell::new(0) };
    }

    /// Makes the next `n` `io_uring_enter` calls of this thread fail with EAGAIN.
    pub(super) fn inject_enter_errors(n: u32) {
        ENTER_ERRORS.with(|c| c.set(n));
    }

    pub(super) fn take() -> bool {
        ENTER_ERRORS.with(|c| {
            let left = c.get();
            c.set(left.saturating_sub(1));
            left > 0
        })
    }
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

/// How big one recovery read is; up to [`RING_ENTRIES`] of them are in flight.
const READ_CHUNK_BYTES: usize = 1 << 20;

/// Reads `file` from offset 0 into `buf` (at least `len` rounded up to a block) with many
/// concurrent reads, so that the device sees a deep queue rather than one request at a time.
/// `len` is the file's length; returns how many bytes were read before the end of the file.
pub fn uring_read_all(
    ring: &mut IoUring,
    file: &File,
    buf: &mut [u8],
    len: usize,
) -> io::Result<usize> {
    let fd = types::Fd(file.as_raw_fd());
    let want = len.div_ceil(BLOCK_SIZE) * BLOCK_SIZE;
    if buf.len() < want {
        return Err(io::Error::other("read buffer shorter than the file"));
    }
    let mut todo: Vec<(usize, usize)> = (0..want)
        .step_by(READ_CHUNK_BYTES)
        .map(|start| (start, READ_CHUNK_BYTES.min(want - start)))
        .collect();
    let mut end = 0;
    while !todo.is_empty() {
        let wave: Vec<(usize, usize)> = todo
            .drain(..todo.len().min(RING_ENTRIES as usize))
            .collect();
        let entries: Vec<_> = wave
            .iter()
            .map(|&(start, n)| {
                opcode::Read::new(fd, buf[start..].as_mut_ptr(), n as u32)
                    .offset(start as u64)
                    .build()
            })
            .collect();
        let results = uring_run(ring, &entries)?;
        for (&(start, n), res) in wave.iter().zip(results) {
            let got = cqe_result(res)?;
            end = end.max(start + got);
            // Zero means the end of the file; a short read before it is retried.
            if got > 0 && got < n && start + got < len {
                todo.push((start + got, n - got));
            }
        }
    }
    Ok(end.min(len))
}

#[cfg(test)]
mod uring_tests {
    use super::*;

    fn ring() -> Option<IoUring> {
        IoUring::new(RING_ENTRIES).ok()
    }

    /// A failing `io_uring_enter` in the middle of a multi-chunk write: the call reports the
    /// failure only after every submitted write completed, so nothing still points into the
    /// caller's buffer, the ring is empty, and the bytes are in the file.
    #[test]
    fn a_failed_submit_drains_every_operation_before_returning() {
        let Some(mut ring) = ring() else {
            eprintln!("skipping: io_uring unavailable");
            return;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .expect("open");
        let data: Vec<u8> = (0..3 * WRITE_CHUNK_BYTES)
            .map(|i| (i % 251) as u8)
            .collect();
        injected::inject_enter_errors(3);
        let result = uring_write_all(&mut ring, &file, 0, &data);
        let error = result.expect_err("the injected failure is reported");
        assert_eq!(error.raw_os_error(), Some(libc::EAGAIN));
        assert!(ring.submission().is_empty(), "nothing left to submit");
        assert!(ring.completion().is_empty(), "nothing left to reap");
        let mut back = vec![0u8; data.len()];
        file.read_exact_at(&mut back, 0).expect("read back");
        assert_eq!(
            back, data,
            "every submitted write completed before the return"
        );
        // The ring is usable again.
        uring_write_all(&mut ring, &file, 0, &data[..4096]).expect("write after the failure");
    }

    /// More entries than the submission queue holds: the ones pushed are still submitted and
    /// reaped before the error returns.
    #[test]
    fn a_full_submission_queue_still_drains_what_was_pushed() {
        let Some(mut ring) = ring() else {
            eprintln!("skipping: io_uring unavailable");
            return;
        };
        let entries: Vec<_> = (0..RING_ENTRIES as usize + 5)
            .map(|_| opcode::Nop::new().build())
            .collect();
        let error = uring_run(&mut ring, &entries).expect_err("the queue is too small");
        assert!(
            error.to_string().contains("submission queue full"),
            "{error}"
        );
        assert!(ring.submission().is_empty());
        assert!(ring.completion().is_empty());
        let ok = uring_run(&mut ring, &entries[..4]).expect("the ring works afterwards");
        assert_eq!(ok, vec![0; 4]);
    }
}
