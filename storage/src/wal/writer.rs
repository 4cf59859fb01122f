//! The WAL's writer thread (group commit, layout, rotation) and spare-segment thread.

use super::format::{
    segment_file_name, COMMIT_RECORD_SIZE, KIND_COMMIT, KIND_REWRITE_BEGIN, KIND_REWRITE_END,
};
use super::index::{Loc, LogIndex};
use super::io::{finish_durably, AlignedBuf, AsyncRing, Backend, BLOCK_SIZE};
use super::{Chunk, GroupLog, SegmentFile, Shared, State, WalConfig, FREE_BUFFERS_MAX};
use crate::error::LogError;
use crate::record::{self, encoded_len};
use crate::store::{DurableNotifier, Ticket};
use crate::types::{Index, LogId, Term};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, TryLockError};
use std::thread::JoinHandle;
use zerocopy::IntoBytes;

/// The segment currently being written.
pub(super) struct Active {
    pub id: u32,
    pub path: PathBuf,
    pub file: File,
}

/// Hands out zero-filled segment files prepared on a background thread.
pub(super) struct Spare {
    ready: Option<(u32, PathBuf)>,
    requests: Option<Sender<u32>>,
    results: Receiver<std::io::Result<(u32, PathBuf)>>,
    thread: Option<JoinHandle<()>>,
}

impl Spare {
    /// Starts the spare thread. `existing` is an unused segment found on open.
    pub fn start(
        dir: PathBuf,
        size: u64,
        existing: Option<(u32, PathBuf)>,
        next_id: u32,
    ) -> std::io::Result<Spare> {
        let (requests, request_rx) = channel::<u32>();
        let (result_tx, results) = channel();
        let thread = std::thread::Builder::new()
            .name("ringraft-wal-spare".into())
            .spawn(move || {
                for id in request_rx {
                    let result = create_zeroed_segment(&dir, id, size).map(|path| (id, path));
                    if result.is_err() {
                        // Give back whatever a failed attempt (say, a full disk) took.
                        let tmp = format!("{}.tmp", segment_file_name(u64::from(id)));
                        let _ = std::fs::remove_file(dir.join(tmp));
                    }
                    if result_tx.send(result).is_err() {
                        break;
                    }
                }
            })?;
        let spare = Spare {
            ready: existing,
            requests: Some(requests),
            results,
            thread: Some(thread),
        };
        if spare.ready.is_none() {
            spare.request(next_id);
        }
        Ok(spare)
    }

    fn request(&self, id: u32) {
        if let Some(requests) = &self.requests {
            // The thread only exits when `requests` is dropped, so this cannot fail.
            let _ = requests.send(id);
        }
    }

    /// The next spare, waiting for it if it is not ready yet; asks for the one after.
    fn take(&mut self, dir: &Path) -> Result<(u32, PathBuf), LogError> {
        let (id, path) = match self.ready.take() {
            Some(ready) => ready,
            None => match self.results.recv() {
                Ok(result) => result.map_err(|e| LogError::io("create spare segment", dir, e))?,
                Err(_) => {
                    return Err(LogError::Config {
                        reason: "spare segment thread stopped".into(),
                    })
                }
            },
        };
        self.request(id + 1);
        Ok((id, path))
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Creates segment `id` zero-filled under a temporary name, then renames it into place and
/// makes the rename durable. Real zeros (not just `fallocate`): writes into unwritten extents
/// would make every later fdatasync commit extent conversions too.
///
/// The zeros are written with O_DIRECT where the file system allows it. Buffered zeroing cost
/// a third of the machine's CPU in the 64 B × 1024 benchmark (profiled: the spare thread copying
/// 64 MiB of zeros into the page cache per segment, then writeback), on a 2-core VM where the
/// shard and the writer need that CPU; direct writes from one zero buffer cost almost none.
fn create_zeroed_segment(dir: &Path, id: u32, size: u64) -> std::io::Result<PathBuf> {
    let path = dir.join(segment_file_name(u64::from(id)));
    let tmp = dir.join(format!("{}.tmp", segment_file_name(u64::from(id))));
    let open = |direct: bool| {
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        if direct {
            options.custom_flags(libc::O_DIRECT);
        }
        options.open(&tmp)
    };
    let file = match open(true) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => open(false)?,
        other => other?,
    };
    // Reserve the space first: a full disk fails here rather than halfway, and the extents
    // come out contiguous.
    // SAFETY: fallocate on a file descriptor we own, with no pointers.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, size as libc::off_t) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EOPNOTSUPP) {
            return Err(e);
        }
    }
    let mut zeros = AlignedBuf::new();
    zeros.reserve_tail(ZERO_FILL_CHUNK_BYTES).fill(0);
    let mut at = 0;
    while at < size {
        let n = (size - at).min(ZERO_FILL_CHUNK_BYTES as u64) as usize;
        file.write_all_at(&zeros.as_slice()[..n], at)?;
        at += n as u64;
    }
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, &path)?;
    crate::sync_dir(dir)?;
    Ok(path)
}

/// Size of one zero-filling write.
const ZERO_FILL_CHUNK_BYTES: usize = 1 << 20;

/// What the writer took from the stage: chunks to write in order, then the ticket they make
/// durable.
pub(super) struct Batch {
    chunks: Vec<Arc<Chunk>>,
    ticket: Ticket,
    /// Segments before this one are dead once the batch is durable.
    dead_before: Option<u32>,
    /// Slots of the groups with operations in the batch.
    touched: Vec<u32>,
}

/// The writer: owns the active segment and the write backend.
pub(super) struct Writer {
    pub shared: Arc<Shared>,
    pub backend: Backend,
    pub config: WalConfig,
    /// Used segments in order; the last is the active one.
    pub segments: VecDeque<(u32, PathBuf)>,
    pub active: Option<Active>,
    pub spare: Spare,
    /// The number of segments when the writer last looked for groups to rewrite: it looks
    /// again only when that changes.
    pub rewrite_checked_at: usize,
    /// The ring of asynchronous writes, made when a caller first asks for
    /// [`WalCompletions`](super::WalCompletions) (io_uring backend only).
    pub async_ring: Option<AsyncRing>,
    /// The batch submitted on it and not reaped yet.
    pub async_batch: Option<Batch>,
    /// The kernel refused an asynchronous write's flags: none are submitted any more (the
    /// ring stays, so its descriptor stays valid for whoever watches it).
    pub async_refused: bool,
}

/// A group's whole log, to be written again at the end of the WAL.
struct RewritePlan {
    slot: u32,
    first: Index,
    last: Index,
    /// Every entry's term and location, and its segment file.
    records: Vec<(Term, Loc, Arc<SegmentFile>)>,
}

/// Whether the writer has something to do: staged records, or an append whose records all
/// went out with earlier batches (taken while it was still staging) and whose ticket is not
/// yet covered. Never after a failure: nothing is written once a write or sync failed.
pub(super) fn has_work(state: &State) -> bool {
    state.failed.is_none()
        && !state.async_inflight
        && (state.stage.has_records() || state.stage.ticket > state.taken)
}

/// Locks the writer, runs `f` and lets go; then reaps for a reaper that found the lock taken
/// meanwhile (see [`reap_pending`]). Every user of the writer's lock goes through this or
/// [`try_with_writer`].
pub(super) fn with_writer<R>(
    writer: &Mutex<Writer>,
    shared: &Shared,
    f: impl FnOnce(&mut Writer) -> R,
) -> R {
    let result = f(&mut writer.lock().unwrap_or_else(|poison| poison.into_inner()));
    reap_pending(writer, shared);
    result
}

/// [`with_writer`] if the lock is free now; `None` (and `f` not run) if it is taken.
pub(super) fn try_with_writer<R>(
    writer: &Mutex<Writer>,
    shared: &Shared,
    f: impl FnOnce(&mut Writer) -> R,
) -> Option<R> {
    let result = match writer.try_lock() {
        Ok(mut guard) => f(&mut guard),
        Err(TryLockError::Poisoned(poison)) => f(&mut poison.into_inner()),
        Err(TryLockError::WouldBlock) => return None,
    };
    reap_pending(writer, shared);
    Some(result)
}

/// Reaps the asynchronous ring if a reaper asked to (`Shared::reap_wanted`) and the writer's
/// lock is free. A reaper woken by a completion sets the flag, then tries the lock; whoever
/// held it checks the flag after letting go, so the completion is reaped by one of them: a
/// reaper that just gave up would otherwise leave it unreaped, with no later signal to wake
/// anyone (the WAL writes nothing else until it is reaped).
pub(super) fn reap_pending(writer: &Mutex<Writer>, shared: &Shared) {
    while shared.reap_wanted.load(Ordering::SeqCst) {
        let mut guard = match writer.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poison)) => poison.into_inner(),
            Err(TryLockError::WouldBlock) => return,
        };
        shared.reap_wanted.store(false, Ordering::SeqCst);
        guard.reap(false);
    }
}

/// The writer thread: waits for work and writes it, batch by batch, until the WAL shuts down
/// (after writing everything staged) or a batch fails. Between batches it lets go of the
/// writer, so a caller may write a batch on its own thread meanwhile ([`Writer::step`]).
pub(super) fn run(writer: Arc<Mutex<Writer>>, shared: Arc<Shared>) {
    loop {
        {
            let mut state = shared.lock();
            while !has_work(&state) && !state.shutdown && state.failed.is_none() {
                state.writer_waiting = true;
                state = shared
                    .work
                    .wait(state)
                    .unwrap_or_else(|poison| poison.into_inner());
                state.writer_waiting = false;
            }
            if state.async_inflight {
                // Shutting down (nobody reaps any more) with an asynchronous batch in flight:
                // wait for it, then write what is staged behind it.
                drop(state);
                with_writer(&writer, &shared, |writer| writer.reap(true));
                continue;
            }
            if !has_work(&state) && (state.shutdown || state.failed.is_some()) {
                break;
            }
        }
        let step = with_writer(&writer, &shared, |writer| {
            let step = writer.step();
            if step == Step::Wrote {
                writer.rewrite_pinning_groups();
            }
            step
        });
        if step == Step::Failed {
            break;
        }
    }
}

/// What one [`Writer::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Nothing was staged.
    Idle,
    /// A batch was written and synced.
    Wrote,
    /// A batch failed: the WAL refuses everything from now on.
    Failed,
}

impl Writer {
    /// Takes everything staged as one batch, writes and syncs it, and publishes the outcome.
    pub(super) fn step(&mut self) -> Step {
        let batch = {
            let mut state = self.shared.lock();
            if !has_work(&state) {
                return if state.failed.is_some() {
                    Step::Failed
                } else {
                    Step::Idle
                };
            }
            let batch = take_batch(&mut state, &self.config);
            state.taken = batch.ticket;
            batch
        };
        let result = self.write_batch(&batch);
        let failed = result.is_err();
        self.complete(batch, result);
        if failed {
            Step::Failed
        } else {
            Step::Wrote
        }
    }

    /// The eventfd of the asynchronous ring, made now if there is none yet; `None` with the
    /// portable backend (its files are not O_DIRECT: an io_uring write of them would be
    /// handed to a kernel worker thread) or if the ring cannot be made.
    pub(super) fn async_fd(&mut self) -> Option<std::os::fd::RawFd> {
        if !matches!(self.backend.kind(), super::BackendKind::IoUring) {
            return None;
        }
        if self.async_ring.is_none() {
            self.async_ring = AsyncRing::new().ok();
        }
        self.async_ring.as_ref().map(AsyncRing::fd)
    }

    /// Takes what is staged as one batch and submits it as one asynchronous durable write, if
    /// a caller reaps such writes, none is in flight and the batch qualifies
    /// ([`super::Stage::fits_async`]). Returns whether it took a batch (one with no records
    /// completes at once; one the ring refuses is written here, blocking).
    pub(super) fn submit_async(&mut self) -> bool {
        let batch = {
            let mut state = self.shared.lock();
            if state.reapers == 0
                || self.async_refused
                || self.async_ring.as_ref().is_none_or(AsyncRing::busy)
                || !has_work(&state)
                || !state.stage.fits_async()
            {
                return false;
            }
            let batch = take_batch(&mut state, &self.config);
            state.taken = batch.ticket;
            state.async_inflight = true;
            batch
        };
        let Some(chunk) = batch.chunks.first().cloned() else {
            self.complete(batch, Ok(()));
            self.shared.lock().batches.asynchronous += 1;
            return true;
        };
        let (Some(ring), Some(active)) = (
            self.async_ring.as_mut(),
            self.active.as_ref().filter(|a| a.id == chunk.segment),
        ) else {
            // Not the active segment (cannot happen: `fits_async` excludes rotations):
            // the writer's own path reports it.
            let result = self.write_batch(&batch);
            self.complete(batch, result);
            self.shared.lock().batches.caller_thread += 1;
            return true;
        };
        if ring.submit(&active.file, chunk).is_ok() {
            self.async_batch = Some(batch);
        } else {
            let _allow = crate::blocking::Allow::new();
            let result = self.write_batch(&batch);
            self.complete(batch, result);
            self.shared.lock().batches.caller_thread += 1;
        }
        true
    }

    /// Completes the asynchronous batch in flight if its write has finished (with `wait`,
    /// once it has), then starts what was staged meanwhile: asynchronously if it qualifies,
    /// else on the writer thread. Returns whether a batch completed.
    pub(super) fn reap(&mut self, wait: bool) -> bool {
        let Some(ring) = self.async_ring.as_mut() else {
            return false;
        };
        let done = if wait { ring.wait() } else { ring.poll() };
        // The batch only once its write is done: taken before, it would be lost (and the
        // WAL would wait for it forever).
        let Some(done) = done else {
            if wait {
                self.lost_async_batch();
            }
            return false;
        };
        let Some(batch) = self.async_batch.take() else {
            self.lost_async_batch();
            return false;
        };
        let result = match (&batch.chunks[..], self.active.as_ref()) {
            ([chunk], Some(active)) => {
                let buf = chunk.buf.padded_bytes();
                let outcome = match done {
                    Ok(written) => finish_durably(&active.file, chunk.file_offset, buf, written),
                    // The kernel refused the flag or the operation: nothing was written, so
                    // the writer's own path may write it, and does from now on.
                    Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP)) => {
                        self.async_refused = true;
                        let _allow = crate::blocking::Allow::new();
                        finish_durably(&active.file, chunk.file_offset, buf, 0)
                    }
                    Err(e) => Err(e),
                };
                outcome.map_err(|e| LogError::io("write and fdatasync", &active.path, e))
            }
            _ => Err(LogError::Config {
                reason: "an asynchronous batch is not one chunk of the active segment".into(),
            }),
        };
        self.complete(batch, result);
        self.shared.lock().batches.asynchronous += 1;
        if !self.submit_async() {
            let mut state = self.shared.lock();
            if has_work(&state) && state.claim_writer_wake() {
                drop(state);
                self.shared.work.notify_one();
            }
        }
        true
    }

    /// Fails the WAL if it counts an asynchronous batch in flight that neither the ring nor
    /// the writer holds: a bug, reported to every group as a failed store rather than left
    /// for the writer thread and waiters to wait on (or spin over) forever.
    fn lost_async_batch(&mut self) {
        let ticket = {
            let state = self.shared.lock();
            if !state.async_inflight || self.async_ring.as_ref().is_some_and(AsyncRing::busy) {
                return;
            }
            state.taken
        };
        // Completed as a failed batch of nothing: every group hears of the failure.
        let lost = Batch {
            chunks: Vec::new(),
            ticket,
            dead_before: None,
            touched: Vec::new(),
        };
        let failure = LogError::Config {
            reason: "the WAL lost track of an asynchronous write".into(),
        };
        self.complete(lost, Err(failure));
    }

    /// Writes each chunk of the batch and syncs it, activating new segments on the way.
    fn write_batch(&mut self, batch: &Batch) -> Result<(), LogError> {
        for chunk in &batch.chunks {
            if chunk.starts_segment {
                self.rotate(chunk.segment)?;
            }
            let Some(active) = self.active.as_ref().filter(|a| a.id == chunk.segment) else {
                return Err(LogError::Config {
                    reason: format!("batch for segment {} is not the active one", chunk.segment),
                });
            };
            self.backend
                .write_and_sync(&active.file, chunk.file_offset, chunk.buf.padded_bytes())
                .map_err(|e| LogError::io("write and fdatasync", &active.path, e))?;
        }
        Ok(())
    }

    /// Starts segment `id` (the next spare); its header is at the start of its first chunk.
    fn rotate(&mut self, id: u32) -> Result<(), LogError> {
        let (spare_id, path) = self.spare.take(&self.config.dir)?;
        if spare_id != id {
            return Err(LogError::Config {
                reason: format!("spare segment {spare_id} ready where {id} was laid out"),
            });
        }
        let file = self
            .backend
            .open_for_write(&path, false)
            .map_err(|e| LogError::io("open segment for writing", &path, e))?;
        let read = File::open(&path).map_err(|e| LogError::io("open segment", &path, e))?;
        self.active = Some(Active {
            id,
            path: path.clone(),
            file,
        });
        self.segments.push_back((id, path.clone()));
        self.shared
            .lock()
            .files
            .insert(id, Arc::new(SegmentFile { file: read, path }));
        Ok(())
    }

    /// Publishes a batch's outcome: tickets durable (or the store failed), waiters woken.
    fn complete(&mut self, batch: Batch, result: Result<(), LogError>) {
        let mut doomed = Vec::new();
        let failed = result.is_err();
        let mut state = self.shared.lock();
        state.async_inflight = false;
        // All of them here; the callers that wrote one another way count it there too.
        state.batches.writer_thread += 1;
        match result {
            Ok(()) => {
                // Written: reads of these records go to the file from now on. (After a
                // failure the chunks stay, so what was staged can still be read.)
                state.inflight.clear();
                if let Some(bound) = batch.dead_before {
                    // No group has a live entry before `bound` once the batch's head
                    // truncations are durable; the checkpoints opening `bound` (durable with
                    // this batch or before) hold every group's first index and hard state.
                    while self.segments.len() > 1 && self.segments[0].0 < bound {
                        if let Some((id, path)) = self.segments.pop_front() {
                            state.files.remove(&id);
                            doomed.push(path);
                        }
                    }
                }
            }
            Err(e) => state.failed = Some(e),
        }
        for chunk in batch.chunks {
            if let Ok(chunk) = Arc::try_unwrap(chunk) {
                if state.stage.free.len() < FREE_BUFFERS_MAX {
                    state.stage.free.push(chunk.buf);
                }
            }
        }
        if !doomed.is_empty() {
            // Delete before waking waiters: once a head truncation is durable, its segments
            // are gone. Without the lock: appends go on meanwhile.
            drop(state);
            self.delete_segments(&doomed);
            state = self.shared.lock();
        }
        if !failed {
            state.durable = state.durable.max(batch.ticket);
        }
        // After a failure every group must hear of it; otherwise the groups with operations
        // in the batch.
        let notifiers: Vec<DurableNotifier> = if failed {
            state
                .groups
                .iter()
                .filter_map(|g| g.notifier.clone())
                .collect()
        } else {
            batch
                .touched
                .iter()
                .filter_map(|&slot| state.group(slot).notifier.clone())
                .collect()
        };
        // The list goes back to the stage for the next batch (no allocation per batch),
        // unless operations since the take started a new one.
        let mut touched = batch.touched;
        touched.clear();
        if state.stage.touched.capacity() == 0 {
            state.stage.touched = touched;
        }
        let waiters = state.durable_waiters > 0;
        drop(state);
        // The shards first: they are on every write's critical path. A blocking waiter (rare:
        // hard state saves, tests) only when there is one, since `notify_all` is a futex
        // system call even when nobody waits.
        for notify in notifiers {
            notify();
        }
        if waiters {
            self.shared.done.notify_all();
        }
    }

    /// Moves the logs of the groups that keep the oldest segment alive to the end of the log
    /// (see [`WalConfig::rewrite_after_segments`]). A group that never compacts (an idle one:
    /// no snapshot is ever due) would otherwise keep every segment from its entries on. Its
    /// records are copied byte for byte between a `REWRITE_BEGIN` and a `REWRITE_END` record,
    /// in one stage under one lock (recovery takes the copies only with the end record), and
    /// the group's index then points at the copies; the next batch's durability lets the old
    /// segment go. Only logs of at most an eighth of a segment that are wholly on disk are
    /// moved: larger ones are expected to compact through snapshots.
    fn rewrite_pinning_groups(&mut self) {
        let count = self.segments.len();
        if count <= self.config.rewrite_after_segments || count == self.rewrite_checked_at {
            return;
        }
        self.rewrite_checked_at = count;
        let oldest = self.segments[0].0;
        let budget = self.config.segment_size_bytes / 8;
        let plans: Vec<RewritePlan> = {
            let state = self.shared.lock();
            if state.failed.is_some() || state.shutdown {
                return;
            }
            let floor = state.memory_floor();
            state
                .groups
                .iter()
                .enumerate()
                .filter(|(_, g)| g.index.oldest_segment() == Some(oldest))
                .filter_map(|(slot, g)| plan_rewrite(&state, slot as u32, g, floor, budget))
                .collect()
        };
        for plan in plans {
            let mut copies = Vec::with_capacity(plan.records.len());
            for (_, loc, file) in &plan.records {
                let len = encoded_len(loc.payload as usize);
                let mut buf = vec![0u8; len];
                let read = file.file.read_exact_at(&mut buf, u64::from(loc.offset));
                // A copy must be exactly what was written: a record that fails its checksum
                // stays where it is (reads report it).
                let intact =
                    read.is_ok() && record::decode_raw(&buf, self.config.max_entry_bytes).is_ok();
                if !intact {
                    copies.clear();
                    break;
                }
                copies.push(buf);
            }
            if copies.len() != plan.records.len() {
                continue;
            }
            let mut state = self.shared.lock();
            let group = state.group(plan.slot);
            // Unchanged since the plan (no append or truncation in between)?
            let mut at = plan.first;
            let same = group.index.first() == plan.first
                && group.index.last() == plan.last
                && plan.records.iter().all(|(term, loc, _)| {
                    let held =
                        group.index.locate(at) == Some(*loc) && group.index.term(at) == Some(*term);
                    at = at.next();
                    held
                });
            if !same {
                continue;
            }
            let id = group.id;
            let config = &self.config;
            // The whole rewrite in one segment (it is at most an eighth of one): a segment
            // started in its middle would open with checkpoints of the old log (the index
            // changes at the end record) followed by copies whose begin record is in the
            // segment before, which recovery cannot start from once that one is deleted.
            let whole =
                encoded_len(8) + copies.iter().map(Vec::len).sum::<usize>() + encoded_len(0);
            state.room_for(whole, config);
            let begin = LogId::new(Term(0), plan.first);
            let last = plan.last.0.to_le_bytes();
            state.stage_record(config, id, KIND_REWRITE_BEGIN, begin, &last, b"");
            let mut index = LogIndex::new(plan.first);
            let mut at = plan.first;
            for ((term, loc, _), copy) in plan.records.iter().zip(&copies) {
                let (segment, offset) = state.stage_copy(config, copy);
                index.push(at, *term, segment, offset, loc.payload);
                at = at.next();
            }
            let end = LogId::new(Term(0), plan.last);
            state.stage_record(config, id, KIND_REWRITE_END, end, b"", b"");
            state.group_mut(plan.slot).index = index;
            state.stage.compacted = true;
        }
    }

    /// Deletes dead segments, oldest first, each made durable before the next: a crash must
    /// never leave a gap (an old segment kept, a younger one gone). A segment that survives is
    /// harmless, since the durable prefix marker hides its entries on recovery, so a failed
    /// delete is only logged.
    fn delete_segments(&self, doomed: &[PathBuf]) {
        for path in doomed {
            if let Err(e) = std::fs::remove_file(path) {
                eprintln!("ringraft-storage: could not delete {}: {e}", path.display());
                break;
            }
            if let Err(e) = crate::sync_dir(&self.config.dir) {
                eprintln!("ringraft-storage: fsync {}: {e}", self.config.dir.display());
                break;
            }
        }
    }
}

/// The plan to move `group`'s whole log, if it is small enough and wholly on disk.
fn plan_rewrite(
    state: &State,
    slot: u32,
    group: &GroupLog,
    floor: (u32, u64),
    budget: u64,
) -> Option<RewritePlan> {
    let (first, last) = (group.index.first(), group.index.last());
    let mut records = Vec::new();
    let mut bytes = 0u64;
    let mut at = first;
    while at <= last {
        let loc = group.index.locate(at)?;
        let term = group.index.term(at)?;
        bytes += encoded_len(loc.payload as usize) as u64;
        if bytes > budget || (loc.segment, u64::from(loc.offset)) >= floor {
            return None;
        }
        records.push((term, loc, state.files.get(&loc.segment)?.clone()));
        at = at.next();
    }
    Some(RewritePlan {
        slot,
        first,
        last,
        records,
    })
}

/// Takes everything staged as one batch: ends each chunk with its commit record, and starts
/// the next stage with a copy of the partly filled last block (which the next batch rewrites
/// with more records). Costs one ≤ 4 KiB copy under the lock, nothing per record.
fn take_batch(state: &mut State, config: &WalConfig) -> Batch {
    // Computed before the stage is taken, while its last chunk names the segment being
    // filled; only after a head truncation, since nothing else lets a segment die.
    let dead_before = if std::mem::take(&mut state.stage.compacted) {
        state.oldest_live_segment()
    } else {
        None
    };
    let touched = std::mem::take(&mut state.stage.touched);
    for &slot in &touched {
        state.group_mut(slot).touched = false;
    }
    if !state.stage.has_records() {
        // Only a ticket to cover: its records went out with earlier batches.
        return Batch {
            chunks: Vec::new(),
            ticket: state.stage.ticket,
            dead_before,
            touched,
        };
    }
    let mut chunks = std::mem::take(&mut state.stage.chunks);
    for chunk in chunks.iter_mut().filter(|c| c.has_records()) {
        let body = chunk.batch_start.to_le_bytes();
        let id = LogId::new(Term(0), Index(state.stage.ticket.0));
        let header = record::record_header(KIND_COMMIT, config.group, id, &body, b"", 8)
            .unwrap_or_else(|e| panic!("a commit record is 8 bytes: {e}"));
        let out = chunk.buf.reserve_tail(COMMIT_RECORD_SIZE);
        let (head, rest) = out.split_at_mut(record::HEADER_SIZE);
        head.copy_from_slice(header.as_bytes());
        rest.copy_from_slice(&body);
        chunk.buf.pad_to_block();
    }
    if let Some(tail) = chunks.last() {
        let end = tail.end();
        let block = end & !(BLOCK_SIZE as u64 - 1);
        let mut buf = state.stage.buffer();
        buf.extend_from_slice(&tail.buf.as_slice()[(block - tail.file_offset) as usize..]);
        state.stage.chunks.push(Chunk {
            segment: tail.segment,
            starts_segment: false,
            file_offset: block,
            batch_start: end,
            buf,
        });
    }
    let mut taken = Vec::with_capacity(chunks.len());
    for chunk in chunks {
        if chunk.has_records() {
            taken.push(Arc::new(chunk));
        } else {
            state.stage.free.push(chunk.buf);
        }
    }
    state.inflight = taken.clone();
    Batch {
        chunks: taken,
        ticket: state.stage.ticket,
        dead_before,
        touched,
    }
}
