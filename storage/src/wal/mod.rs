//! The segment WAL: [`WalLogStore`], a durable [`LogStore`] in a directory of segment files.
//!
//! ```text
//!  shard thread                              WAL writer thread              spare thread
//!  append(entries): lay out + encode each ──► stage: aligned chunks ─┐
//!    record in place, index it (8 B/entry)    (final file offsets)   │ take: + commit record,
//!    returns Ticket (visible at once)                                │ seed next stage with
//!                                                                    │ the partial last block
//!  durable() / wait_durable(ticket) ◄──── durable ◄─ pwritev2(RWF_DSYNC), or io_uring
//!  notifier() ◄──────────────────────────────────────  O_DIRECT writes then fdatasync
//!                                                      rotate: take the spare ◄─ zero-filled
//!                                                                                next segment
//! ```
//!
//! **Group commit.** The writer takes everything staged, writes and syncs it with one
//! `pwritev2(RWF_DSYNC)` (or, past 256 KiB, a set of concurrent io_uring writes and one
//! fdatasync), and completes every ticket in it together.
//! Appends that arrive during that sync form the next batch. A caller that holds its
//! operations back ([`LogStore::hold_writes`]) may, on release, run those steps itself on its
//! own thread while the writer thread waits for work, for a small batch of a WAL of one group
//! ([`LogStore::release_writes`]): one wake-up of the writer thread and one of the caller
//! fewer. A caller with an event loop may instead have released batches of up to 256 KiB
//! submitted as one asynchronous io_uring write with `RWF_DSYNC` and reap the completion
//! itself ([`LogStore::write_completions`]): the writer thread then keeps only rotations,
//! compactions and larger batches. Batches are written strictly one
//! after another, so at most the last batch on disk can be incomplete (see [`scan()`]). A
//! large append releases the lock every 256 KiB, so the writer may take part of it; its ticket
//! completes with the batch that holds its last record.
//!
//! **Layout.** A record's place on disk is decided when it is appended: the shard encodes it
//! straight into a block-aligned buffer that mirrors the file from the block holding the tail
//! (one copy of each payload, no per-entry work on the writer thread, no queued `Entry`
//! clones). Writes are whole 4 KiB blocks at block offsets (O_DIRECT needs it); the partly
//! filled last block is copied into the next stage and rewritten, with more records, by the
//! next batch. Segments are preallocated and zero-filled (with O_DIRECT) by a background thread
//! before they are needed, so a sync never has to commit file-size or extent changes and
//! rotation never waits on allocation. Tail and head truncations are records replayed on
//! recovery; once a head truncation is durable, segments that hold no live entry of any group
//! are deleted.
//!
//! **Reads.** An entry not yet written is copied from the stage (or the batch being written); a
//! written one is read with `pread` (a range in the same segment with one call). Both are
//! verified against their checksum before they are returned, so damage that happens after
//! recovery is still reported, never returned.
//!
//! **Many groups.** One WAL can hold many groups' logs ([`SharedWal`]): every record names
//! its group, each group has its own index and notifier, one batch covers every group's
//! operations, and each segment starts with a checkpoint of every group (see [`format`]). A
//! segment is deleted once no group has a live entry in it; the writer rewrites the small logs
//! of idle groups that pin the oldest segment to the end of the log (see
//! [`WalConfig::rewrite_after_segments`]).
//!
//! **Failure.** Any write or sync error stops the store ([`LogError::Failed`] for every later
//! call) until it is reopened: after a failed fsync the kernel may have dropped the dirty data,
//! so retrying could acknowledge writes that are not on disk.

mod format;
mod index;
mod io;
mod open;
pub mod scan;
mod writer;

pub use format::{
    parse_segment_file_name, segment_file_name, SegmentHeader, CHECKPOINT_RECORD_SIZE,
    COMMIT_RECORD_SIZE, KIND_CHECKPOINT, KIND_COMMIT, KIND_HARD_STATE, KIND_REMOVE_GROUP,
    KIND_REWRITE_BEGIN, KIND_REWRITE_END, KIND_TRUNCATE_PREFIX, KIND_TRUNCATE_SUFFIX,
    SEGMENT_HEADER_SIZE, SEGMENT_MAGIC, SEGMENT_VERSION, SEGMENT_VERSION_OLDEST,
};
pub use io::{BackendChoice, BackendKind, BLOCK_SIZE};
pub use scan::{scan, RecordAction, ScanError, ScannedRecord, SegmentScan};

use crate::error::LogError;
use crate::record::{self, encoded_len};
use crate::store::{DurableNotifier, HardState, LogStore, Ticket};
use crate::types::{Entry, GroupId, Index, LogId, Term};
use bytes::Bytes;
use index::{Loc, LogIndex};
use io::AlignedBuf;
use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use zerocopy::little_endian::{U32, U64};
use zerocopy::IntoBytes;

/// Configuration of a [`WalLogStore`].
#[derive(Clone, Debug)]
pub struct WalConfig {
    /// The directory holding the segment files (created if absent).
    pub dir: PathBuf,
    /// Size of each segment file. Default 64 MiB; a multiple of 4 KiB, at most 4 GiB.
    pub segment_size_bytes: u64,
    /// Largest entry payload (data plus extensions) accepted. Default 16 MiB; must fit in a
    /// segment with room to spare.
    pub max_entry_bytes: usize,
    /// Which write backend to use. Default [`BackendChoice::Auto`].
    pub backend: BackendChoice,
    /// Written into every segment header and checked on open, so logs of different clusters
    /// cannot be mixed up. Default 0.
    pub cluster_id: u64,
    /// Once the WAL has more than this many segments, the writer moves the whole log of each
    /// group that keeps the oldest segment alive (an idle group that never compacts) to the
    /// end of the log, if it is at most an eighth of a segment, so that the segment can be
    /// deleted. Default 8; at least 2.
    pub rewrite_after_segments: usize,
    /// The group whose log [`WalLogStore::open`] opens. Default 0. A [`SharedWal`] holds the
    /// logs of many groups and ignores it.
    pub group: GroupId,
    /// Whether the WAL offers asynchronous writes ([`LogStore::write_completions`], io_uring
    /// backend only), which ringraft's `MultiRaft` hosts use. Default true; false keeps every
    /// batch on the writer thread (or a caller's thread), for a kernel or file system whose
    /// io_uring writes with `RWF_DSYNC` misbehave.
    pub asynchronous_writes: bool,
}

impl WalConfig {
    /// Defaults for a WAL in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> WalConfig {
        WalConfig {
            dir: dir.into(),
            segment_size_bytes: 64 << 20,
            max_entry_bytes: 16 << 20,
            backend: BackendChoice::Auto,
            cluster_id: 0,
            rewrite_after_segments: 8,
            group: GroupId(0),
            asynchronous_writes: true,
        }
    }

    fn validate(&self) -> Result<(), LogError> {
        if self.rewrite_after_segments < 2 {
            return Err(LogError::Config {
                reason: format!(
                    "rewrite_after_segments {} must be at least 2",
                    self.rewrite_after_segments
                ),
            });
        }
        let size = self.segment_size_bytes;
        let needed = (SEGMENT_HEADER_SIZE
            + encoded_len(self.max_entry_bytes)
            + 2 * COMMIT_RECORD_SIZE
            + 2 * BLOCK_SIZE) as u64;
        if size % BLOCK_SIZE as u64 != 0 || size > u32::MAX as u64 || size < needed {
            return Err(LogError::Config {
                reason: format!(
                    "segment_size_bytes {size} must be a multiple of {BLOCK_SIZE}, at most \
                     4 GiB and at least {needed} for max_entry_bytes {}",
                    self.max_entry_bytes
                ),
            });
        }
        Ok(())
    }
}

/// What opening a WAL found and chose.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalInfo {
    /// The write backend in use.
    pub backend: BackendKind,
    /// Segment files in use (not counting the spare).
    pub segments: usize,
    /// Bytes of a torn last batch that recovery discarded (0 after a clean shutdown).
    pub torn_bytes_discarded: u64,
}

/// How a WAL's group commits were written since it was opened ([`SharedWal::batch_counts`],
/// [`WalLogStore::batch_counts`]): each is one write and one data sync (or, past 256 KiB, a
/// set of concurrent writes and one sync).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchCounts {
    /// By the WAL's writer thread.
    pub writer_thread: u64,
    /// On a caller's thread that released them and waited ([`LogStore::release_writes`] with
    /// `here`).
    pub caller_thread: u64,
    /// Submitted without blocking and reaped by a caller's event loop
    /// ([`LogStore::write_completions`]).
    pub asynchronous: u64,
}

/// A segment file open for reading.
#[derive(Debug)]
struct SegmentFile {
    file: File,
    path: PathBuf,
}

/// Part of the log's tail laid out in memory exactly as it will be on disk: from the
/// block-aligned `file_offset` of `segment`, the already written start of that block, then the
/// records staged since `batch_start`. Records are encoded straight into `buf`, which is what
/// the writer hands to the kernel (one copy of each payload).
pub(super) struct Chunk {
    segment: u32,
    /// This chunk begins its segment (`buf` starts with the segment header): the writer must
    /// activate the spare first.
    starts_segment: bool,
    file_offset: u64,
    /// Where this chunk's new records begin; the commit record of its batch names it.
    batch_start: u64,
    buf: AlignedBuf,
}

impl Chunk {
    fn end(&self) -> u64 {
        self.file_offset + self.buf.len() as u64
    }

    fn has_records(&self) -> bool {
        self.end() > self.batch_start
    }

    /// The bytes of the record at `offset` of `segment`, if this chunk holds them.
    fn record(&self, segment: u32, offset: u64, len: usize) -> Option<&[u8]> {
        if segment != self.segment || offset < self.file_offset {
            return None;
        }
        let at = (offset - self.file_offset) as usize;
        self.buf.as_slice().get(at..at + len)
    }
}

/// Where appends go next; owned by the shard side, handed to the writer batch by batch.
struct Stage {
    /// Chunks not yet taken by the writer, in log order; the last one receives new records.
    chunks: Vec<Chunk>,
    /// Size of the segment the last chunk belongs to.
    capacity: u64,
    /// The id the next segment will have (the writer's spare thread prepares ids in order).
    next_segment: u32,
    /// The latest ticket whose records are all staged (an append in progress may have staged
    /// only some of its records when the writer takes a batch).
    ticket: Ticket,
    /// A head truncation was staged since the writer last took a batch, so older segments may
    /// have died.
    compacted: bool,
    /// Groups (slots) with operations staged since the writer last took a batch: their
    /// notifiers run when the batch is durable.
    touched: Vec<u32>,
    /// Buffers of written batches, reused so that steady-state appends do not allocate.
    free: Vec<AlignedBuf>,
}

impl Stage {
    fn has_records(&self) -> bool {
        self.chunks.iter().any(Chunk::has_records)
    }

    /// Whether what is staged may be written on a caller's thread: at most
    /// [`INLINE_BATCH_BYTES_MAX`] (see [`Stage::one_write`]).
    fn small(&self) -> bool {
        self.one_write(INLINE_BATCH_BYTES_MAX)
    }

    /// Whether what is staged may be submitted as one asynchronous write: at most
    /// [`ASYNC_BATCH_BYTES_MAX`] (see [`Stage::one_write`]).
    fn fits_async(&self) -> bool {
        self.one_write(ASYNC_BATCH_BYTES_MAX)
    }

    /// Whether what is staged is one write of at most `max` bytes that the writer thread
    /// need not do: one chunk in the active segment (activating the spare may wait for it to
    /// be zero-filled), and no head truncation (its batch may delete segments when it
    /// completes).
    fn one_write(&self, max: usize) -> bool {
        let bytes: usize = self.chunks.iter().map(|c| c.buf.len()).sum();
        bytes <= max
            && self.chunks.len() <= 1
            && !self.compacted
            && !self.chunks.iter().any(|c| c.starts_segment)
    }

    fn buffer(&mut self) -> AlignedBuf {
        let mut buf = self.free.pop().unwrap_or_default();
        buf.clear();
        buf
    }
}

/// Where the checksum sits in a record header.
const CRC_FIELD: std::ops::Range<usize> = 4..8;

/// How many free buffers to keep for reuse. Buffers come and go in bursts (a batch that spans
/// a rotation has two chunks; a rotation may need a buffer while the writer still holds the
/// last batch's): with 4, the 4 KiB × 1024 pipelined benchmark kept dropping a buffer and
/// growing a new one from nothing, and spent a third of the shard thread in page faults,
/// `memset` and `realloc` copies.
const FREE_BUFFERS_MAX: usize = 8;

/// The largest stretch of other records between two of a group's records that one read of
/// both may span (see `WalLogStore::read_range`).
const READ_GAP_MAX: u64 = 4096;

/// An append releases the lock after staging this many bytes, so that the writer can take what
/// is staged (and keep the disk busy) while a large batch is still being encoded.
const STAGE_BYTES_PER_LOCK: usize = 256 << 10;

/// The most [`LogStore::release_writes`] writes on the caller's thread: a batch of a few
/// blocks, written and synced with one call (see `io::write_durably`).
const INLINE_BATCH_BYTES_MAX: usize = 16 << 10;

/// The most one asynchronous write carries (see [`Stage::fits_async`]); larger batches go to
/// the writer thread, which splits them into concurrent writes.
const ASYNC_BATCH_BYTES_MAX: usize = 256 << 10;

/// One group's log in the WAL.
struct GroupLog {
    id: GroupId,
    /// Where each entry `first..=last` is (staged, being written, or on disk).
    index: LogIndex,
    /// The newest hard state recovered or submitted; copied into every new segment's
    /// checkpoint.
    hard_state: Option<HardState>,
    /// The ticket of this group's latest operation.
    last_ticket: Ticket,
    notifier: Option<DurableNotifier>,
    /// A [`WalLogStore`] handle of it is open.
    open: bool,
    /// In [`Stage::touched`].
    touched: bool,
}

impl GroupLog {
    fn new(id: GroupId, index: LogIndex, hard_state: Option<HardState>) -> GroupLog {
        GroupLog {
            id,
            index,
            hard_state,
            last_ticket: Ticket(0),
            notifier: None,
            open: false,
            touched: false,
        }
    }

    /// Whether it holds anything a new segment's checkpoint must carry.
    fn has_state(&self) -> bool {
        self.hard_state.is_some() || self.index.first() != Index(1) || !self.index.is_empty()
    }
}

struct State {
    /// Every group the WAL holds, by slot; a slot is never reused.
    groups: Vec<GroupLog>,
    slots: BTreeMap<GroupId, u32>,
    stage: Stage,
    /// The batch the writer is writing: still readable from memory until it completes.
    inflight: Vec<Arc<Chunk>>,
    last_ticket: Ticket,
    durable: Ticket,
    failed: Option<LogError>,
    files: BTreeMap<u32, Arc<SegmentFile>>,
    shutdown: bool,
    /// The writer is blocked on `work` and nobody has undertaken to wake it yet (set by the
    /// writer before it waits; cleared by the writer when it wakes, and by the one appender
    /// that undertakes the wake-up, see [`State::claim_writer_wake`]). `Condvar::notify_one`
    /// is a futex system call even when nobody waits, and an append while the writer is busy
    /// or already being woken needs none: the writer checks for staged work under the lock
    /// before it sleeps again.
    writer_waiting: bool,
    /// The ticket of the last batch taken by a writer.
    taken: Ticket,
    /// Threads blocked on `done` in `wait_durable`; the writer signals `done` only if any.
    durable_waiters: usize,
    /// Live handles of [`WalCompletions`]: while any lives, batches that qualify
    /// ([`Stage::fits_async`]) are submitted without blocking (see `Writer::submit_async`).
    reapers: usize,
    /// A batch was submitted that way and has not been reaped yet: nothing else is written
    /// until it is (batches go to disk one after another).
    async_inflight: bool,
    /// Batches completed, by how they were written (the writer thread's are the rest).
    batches: BatchCounts,
}

impl State {
    /// Whether the caller, which has just staged work under the lock, must wake the writer
    /// (`work.notify_one()` once the lock is released). Only the first caller after the writer
    /// went to sleep is told to: the flag is cleared here, so the many groups of a shared WAL
    /// that append before the writer has woken up make one wake-up system call between them,
    /// not one each. No wake-up is lost: the writer, woken by that one, takes everything
    /// staged by then under the lock, and sets the flag again before it next waits.
    fn claim_writer_wake(&mut self) -> bool {
        std::mem::take(&mut self.writer_waiting)
    }

    fn group(&self, slot: u32) -> &GroupLog {
        &self.groups[slot as usize]
    }

    fn group_mut(&mut self, slot: u32) -> &mut GroupLog {
        &mut self.groups[slot as usize]
    }

    /// Notes that `slot` has an operation in the stage (its notifier runs when it is durable)
    /// and gives it the next ticket.
    fn ticket_for(&mut self, slot: u32) -> Ticket {
        let ticket = self.next_ticket();
        let group = &mut self.groups[slot as usize];
        group.last_ticket = ticket;
        if !group.touched {
            group.touched = true;
            self.stage.touched.push(slot);
        }
        ticket
    }

    /// The slot of `group`, created empty if the WAL holds nothing of it.
    fn slot_of(&mut self, group: GroupId) -> u32 {
        if let Some(&slot) = self.slots.get(&group) {
            return slot;
        }
        let slot = self.groups.len() as u32;
        self.groups
            .push(GroupLog::new(group, LogIndex::new(Index(1)), None));
        self.slots.insert(group, slot);
        slot
    }

    /// The oldest segment that must be kept: none of any group's entries is in a segment
    /// before it, and it is not after the segment being filled.
    fn oldest_live_segment(&self) -> Option<u32> {
        let filling = self.stage.chunks.last().map(|c| c.segment)?;
        Some(
            self.groups
                .iter()
                .filter_map(|g| g.index.oldest_segment())
                .fold(filling, u32::min),
        )
    }

    fn check_failed(&self) -> Result<(), LogError> {
        match &self.failed {
            Some(cause) => Err(LogError::Failed {
                cause: Box::new(cause.clone()),
            }),
            None => Ok(()),
        }
    }

    fn next_ticket(&mut self) -> Ticket {
        self.last_ticket = Ticket(self.last_ticket.0 + 1);
        self.last_ticket
    }

    /// The chunk that has room for a record of `len` bytes plus its batch's commit record,
    /// starting the next segment if the current one is full.
    fn room_for(&mut self, len: usize, config: &WalConfig) -> &mut Chunk {
        let need = (len + COMMIT_RECORD_SIZE) as u64;
        let capacity = self.stage.capacity;
        let fits = self
            .stage
            .chunks
            .last()
            .is_some_and(|c| c.end() + need <= capacity);
        if !fits {
            // A chunk holding only already-written bytes is not needed any more.
            if self.stage.chunks.last().is_some_and(|c| !c.has_records()) {
                if let Some(chunk) = self.stage.chunks.pop() {
                    self.stage.free.push(chunk.buf);
                }
            }
            let id = self.stage.next_segment;
            self.stage.next_segment += 1;
            let header = SegmentHeader::new(u64::from(id), config.cluster_id);
            let mut buf = self.stage.buffer();
            buf.extend_from_slice(header.as_bytes());
            self.stage.chunks.push(Chunk {
                segment: id,
                starts_segment: true,
                file_offset: 0,
                batch_start: SEGMENT_HEADER_SIZE as u64,
                buf,
            });
            self.stage_checkpoints();
            self.stage.capacity = config.segment_size_bytes;
        }
        let last = self.stage.chunks.len() - 1;
        &mut self.stage.chunks[last]
    }

    /// One checkpoint record per group holding anything, at the end of the stage (which
    /// begins a segment): see [`KIND_CHECKPOINT`].
    fn stage_checkpoints(&mut self) {
        let Some(chunk) = self.stage.chunks.last_mut() else {
            return;
        };
        for group in self.groups.iter().filter(|g| g.has_state()) {
            // Where every group stands opens every segment: once older segments are deleted
            // behind compactions, its hard state and first index are still on disk.
            // `SharedWal::log` keeps the groups few enough to fit.
            let (id, body) = checkpoint_record(group);
            write_record(chunk, group.id, KIND_CHECKPOINT, id, &body, b"");
        }
    }

    /// Stages a prefix of `entries` (of the group in `slot`; contiguous and within the size
    /// limit, as `append` checked) as records with one reservation in the chunk being filled:
    /// as many as fit in it (at least one, starting the next segment if the first does not)
    /// and together under `max_payload` bytes of payload (at least one). Each is checksummed
    /// as it is encoded, three interleaved (`crate::crc`), and indexed. Returns how many were
    /// staged and their payload bytes.
    ///
    /// The same bytes as [`write_record`] record by record (the record format, checked by
    /// `staged_records_are_the_record_format_byte_for_byte`). The bytes are copied once, into
    /// the buffer the writer hands to the kernel, and each checksum is one pass over the whole
    /// record (for 64-byte entries, four checksum calls (header, data, extensions, padding)
    /// cost more than the copy did). What staging an append at once saves is per record: the
    /// room check, the reservation, and a separate pass for the checksums.
    fn stage_entries(
        &mut self,
        config: &WalConfig,
        slot: u32,
        entries: &[Entry],
        max_payload: usize,
    ) -> (usize, usize) {
        let Some(first) = entries.first() else {
            return (0, 0);
        };
        self.room_for(encoded_len(first.payload_len()), config);
        let capacity = self.stage.capacity;
        let last = self.stage.chunks.len() - 1;
        let chunk = &mut self.stage.chunks[last];
        let room = capacity.saturating_sub(chunk.end() + COMMIT_RECORD_SIZE as u64);
        let (mut count, mut total, mut payload) = (0usize, 0usize, 0usize);
        for entry in entries {
            let len = encoded_len(entry.payload_len());
            if count > 0 && ((total + len) as u64 > room || payload >= max_payload) {
                break;
            }
            count += 1;
            total += len;
            payload += entry.payload_len();
        }
        let group = &mut self.groups[slot as usize];
        let id = group.id;
        let segment = chunk.segment;
        // Segments are at most 4 GiB (checked by `WalConfig::validate`).
        let base = chunk.end() as u32;
        let out = chunk.buf.reserve_tail(total);
        let mut at = 0usize;
        for three in entries[..count].chunks(3) {
            let mut spans = [(0usize, 0usize); 3];
            for (entry, span) in three.iter().zip(&mut spans) {
                let len = encoded_len(entry.payload_len());
                encode_into(
                    &mut out[at..at + len],
                    id,
                    entry.kind.code(),
                    entry.id,
                    &entry.data,
                    &entry.extensions,
                );
                group.index.push(
                    entry.id.index,
                    entry.id.term,
                    segment,
                    base + at as u32,
                    entry.payload_len() as u32,
                );
                *span = (at, len);
                at += len;
            }
            let bytes = |(start, len): (usize, usize)| &out[start..start + len];
            let crcs = crate::crc::crc32c_3(bytes(spans[0]), bytes(spans[1]), bytes(spans[2]));
            for (&(start, _), crc) in spans.iter().zip(crcs).take(three.len()) {
                out[start + CRC_FIELD.start..start + CRC_FIELD.end]
                    .copy_from_slice(&crc.to_le_bytes());
            }
        }
        (count, payload)
    }

    /// A record copied byte for byte (checksum included) from elsewhere in the log; returns
    /// its segment and offset.
    fn stage_copy(&mut self, config: &WalConfig, record: &[u8]) -> (u32, u32) {
        self.room_for(record.len(), config);
        let last = self.stage.chunks.len() - 1;
        let chunk = &mut self.stage.chunks[last];
        let offset = chunk.end();
        chunk.buf.extend_from_slice(record);
        (chunk.segment, offset as u32)
    }

    /// One record, checksummed at once, at the end of the log (starting the next segment if
    /// it does not fit); returns its segment and offset. The caller has checked the payload
    /// size against the configuration.
    fn stage_record(
        &mut self,
        config: &WalConfig,
        group: GroupId,
        kind: u8,
        id: LogId,
        data: &[u8],
        extensions: &[u8],
    ) -> (u32, u32) {
        let chunk = self.room_for(encoded_len(data.len() + extensions.len()), config);
        write_record(chunk, group, kind, id, data, extensions)
    }

    fn stage_marker(&mut self, config: &WalConfig, slot: u32, kind: u8, index: Index) -> Ticket {
        let ticket = self.ticket_for(slot);
        let group = self.group(slot).id;
        self.stage_record(config, group, kind, LogId::new(Term(0), index), b"", b"");
        self.stage.ticket = ticket;
        ticket
    }

    /// The lowest position (segment, offset) that may not be on disk yet: every record before
    /// it has been written, everything from it on is in a staged or in-flight chunk.
    fn memory_floor(&self) -> (u32, u64) {
        self.inflight
            .iter()
            .map(|c| c.as_ref())
            .chain(&self.stage.chunks)
            .filter(|c| c.has_records())
            .map(|c| (c.segment, c.batch_start))
            .min()
            .unwrap_or((u32::MAX, u64::MAX))
    }

    /// A copy of the record at `segment`/`offset` from a staged or in-flight chunk.
    fn record_in_memory(&self, segment: u32, offset: u64, len: usize) -> Option<&[u8]> {
        self.stage
            .chunks
            .iter()
            .chain(self.inflight.iter().map(|c| c.as_ref()))
            .find_map(|c| c.record(segment, offset, len))
    }
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when the stage gains work or shutdown is requested.
    work: Condvar,
    /// Signalled when `durable` advances or the store fails.
    done: Condvar,
    /// A reaper found the writer's lock taken (see `writer::reap_pending`).
    reap_wanted: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// Waits on `done` once, from the held lock (see [`WalInner::wait_for`]).
    fn wait_once<'a>(&self, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        state.durable_waiters += 1;
        state = self
            .done
            .wait(state)
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        state.durable_waiters -= 1;
        state
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// What the handles of one WAL share; its writer stops when the last handle is dropped.
struct WalInner {
    shared: Arc<Shared>,
    config: WalConfig,
    info: WalInfo,
    /// The writer: run by its thread, or by a caller that writes a batch itself.
    writer: Arc<Mutex<writer::Writer>>,
    writer_thread: Option<JoinHandle<()>>,
    /// The asynchronous ring's eventfd, once asked for (`None`: no such ring).
    async_fd: std::sync::OnceLock<Option<std::os::fd::RawFd>>,
}

impl WalInner {
    fn batch_counts(&self) -> BatchCounts {
        let state = self.shared.lock();
        let mut counts = state.batches;
        counts.writer_thread = counts
            .writer_thread
            .saturating_sub(counts.caller_thread + counts.asynchronous);
        counts
    }

    /// Waits, from the held lock, until `ticket` is durable or the store has failed. An
    /// asynchronous batch in flight is reaped here (waiting for it): the event loop that
    /// would reap it may be this very thread.
    fn wait_for<'a>(
        &'a self,
        mut state: MutexGuard<'a, State>,
        ticket: Ticket,
    ) -> Result<(), LogError> {
        loop {
            state.check_failed()?;
            if state.durable >= ticket {
                return Ok(());
            }
            if state.async_inflight {
                drop(state);
                writer::with_writer(&self.writer, &self.shared, |w| w.reap(true));
                state = self.shared.lock();
                continue;
            }
            state = self.shared.wait_once(state);
        }
    }
}

impl Drop for WalInner {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.work.notify_all();
        if let Some(writer) = self.writer_thread.take() {
            // The writer drains the queue first, so a clean drop loses nothing submitted.
            let _ = writer.join();
        }
    }
}

/// One WAL holding the logs of many Raft groups (the groups of a `MultiRaft` node, say): one
/// group commit (one write and one data sync) makes every group's entries and hard states of
/// that moment durable together. [`SharedWal::log`] hands out each group's [`WalLogStore`].
///
/// A segment is deleted once no group has a live entry in it (each group compacts its own
/// log with `truncate_prefix`); every segment starts with a checkpoint of each group's first
/// index and hard state, so nothing else pins it. The writer moves the few entries of a group
/// that never compacts (an idle one) forward, so it does not pin old segments either. A group
/// that leaves the node for good is removed with [`SharedWal::remove`] (see ARCHITECTURE §14).
///
/// ```
/// use ringraft_storage::wal::{SharedWal, WalConfig};
/// use ringraft_storage::{Entry, EntryKind, GroupId, Index, LogId, LogStore, Term};
///
/// let dir = tempfile::tempdir()?;
/// let wal = SharedWal::open(WalConfig::new(dir.path()))?;
/// let mut logs = Vec::new();
/// for g in 1..=3 {
///     let mut log = wal.log(GroupId(g))?;
///     let id = LogId::new(Term(1), Index(1));
///     log.append_and_wait(&[Entry::new(id, EntryKind::Command, vec![g as u8].into())])?;
///     logs.push(log);
/// }
/// drop((logs, wal));
/// // Reopened, each group finds its own log.
/// let wal = SharedWal::open(WalConfig::new(dir.path()))?;
/// assert_eq!(wal.groups(), vec![GroupId(1), GroupId(2), GroupId(3)]);
/// let log = wal.log(GroupId(2))?;
/// assert_eq!(log.entry(Index(1))?.map(|e| e.data.to_vec()), Some(vec![2]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct SharedWal {
    inner: Arc<WalInner>,
}

impl SharedWal {
    /// Opens (recovering every group's log) or creates the WAL in `config.dir`.
    ///
    /// Recovery cuts a torn last batch and zeroes it on disk; damage anywhere else, or a
    /// group whose entries were in a segment that is gone, is [`LogError::Corruption`].
    pub fn open(config: WalConfig) -> Result<SharedWal, LogError> {
        config.validate()?;
        Ok(SharedWal {
            inner: Arc::new(open::open(config)?),
        })
    }

    /// The log of `group`, empty if the WAL holds nothing of it yet. One handle per group may
    /// be open at a time ([`LogError::Config`] otherwise); dropping it closes it, and the
    /// group's log stays in the WAL.
    ///
    /// Every new segment starts with one checkpoint record per group, so a segment must have
    /// room for them (at most half a segment): with the default 64 MiB segments, about 500 000
    /// groups.
    pub fn log(&self, group: GroupId) -> Result<WalLogStore, LogError> {
        let mut state = self.inner.shared.lock();
        state.check_failed()?;
        let known = state.slots.contains_key(&group);
        let groups = state.groups.len() + usize::from(!known);
        let room = self.inner.config.segment_size_bytes as usize / 2;
        if groups.saturating_mul(CHECKPOINT_RECORD_SIZE) > room {
            return Err(LogError::Config {
                reason: format!(
                    "{groups} groups need {} bytes of checkpoints per segment; segments of {} \
                     bytes hold at most {room}",
                    groups * CHECKPOINT_RECORD_SIZE,
                    self.inner.config.segment_size_bytes
                ),
            });
        }
        let slot = state.slot_of(group);
        let log = state.group_mut(slot);
        if log.open {
            return Err(LogError::Config {
                reason: format!("the log of group {} is already open", group.0),
            });
        }
        log.open = true;
        Ok(WalLogStore {
            inner: self.inner.clone(),
            slot,
            held: false,
        })
    }

    /// Removes `group`'s log from the WAL for good, and returns once that is durable: its
    /// entries and hard state are forgotten (a later [`SharedWal::log`] of the group, here or
    /// after a reopen, is empty), its entries no longer keep segments alive (they are
    /// deleted with the next group commit, without being rewritten forward), and new segments
    /// carry no checkpoint of it. Use it when a group leaves the node for good (its replica
    /// was removed from the group, or the group was deleted): shut the group down first.
    ///
    /// One `REMOVE_GROUP` record, written with the next group commit: a crash before it is
    /// durable leaves the group's log as it was. Fails with [`LogError::Config`] while a handle
    /// of the group's log is open (nothing changes), and with [`LogError::Failed`] if the WAL
    /// has failed. A group the WAL holds nothing of is left as it is (if it was just removed,
    /// the call still waits until that removal is durable). Blocks until durable: not for a
    /// shard thread.
    pub fn remove(&self, group: GroupId) -> Result<(), LogError> {
        crate::blocking::check("SharedWal::remove");
        let shared = &self.inner.shared;
        let mut state = shared.lock();
        state.check_failed()?;
        let Some(&slot) = state.slots.get(&group) else {
            return Ok(());
        };
        let log = state.group(slot);
        if log.open {
            return Err(LogError::Config {
                reason: format!(
                    "the log of group {} is open: shut the group down (drop its log) before \
                     removing it",
                    group.0
                ),
            });
        }
        if !log.has_state() {
            // Nothing to remove, but an earlier removal of it may not be durable yet.
            let ticket = log.last_ticket;
            return self.inner.wait_for(state, ticket);
        }
        // The record first, as for the truncation markers: if it starts a segment, that
        // segment's checkpoints still show the group as recovery replays it up to the record.
        let ticket = state.stage_marker(&self.inner.config, slot, KIND_REMOVE_GROUP, Index(0));
        let log = state.group_mut(slot);
        log.index = LogIndex::new(Index(1));
        log.hard_state = None;
        // The segments its entries kept alive may go once the record is durable.
        state.stage.compacted = true;
        if state.claim_writer_wake() {
            shared.work.notify_one();
        }
        self.inner.wait_for(state, ticket)
    }

    /// The groups the WAL holds anything of (recovered or written since), in order.
    pub fn groups(&self) -> Vec<GroupId> {
        let state = self.inner.shared.lock();
        state
            .groups
            .iter()
            .filter(|g| g.has_state())
            .map(|g| g.id)
            .collect()
    }

    /// What opening found and chose.
    pub fn info(&self) -> &WalInfo {
        &self.inner.info
    }

    /// How its group commits were written since it was opened.
    pub fn batch_counts(&self) -> BatchCounts {
        self.inner.batch_counts()
    }

    /// The configuration the WAL was opened with.
    pub fn config(&self) -> &WalConfig {
        &self.inner.config
    }
}

/// A durable [`LogStore`] over segment files, for one group: either a WAL of its own
/// ([`WalLogStore::open`]) or its share of a [`SharedWal`]. See the module docs.
///
/// Its tickets are the WAL's: they increase with every operation of this group, by more than
/// one when other groups' operations come between.
pub struct WalLogStore {
    inner: Arc<WalInner>,
    slot: u32,
    /// Between [`LogStore::hold_writes`] and [`LogStore::release_writes`]: operations are
    /// staged without waking the writer.
    held: bool,
}

impl Drop for WalLogStore {
    fn drop(&mut self) {
        if self.held {
            // Released unreleased: what was staged must not wait for another group's write.
            let _ = self.release_writes(false);
        }
        let mut state = self.inner.shared.lock();
        let group = state.group_mut(self.slot);
        group.open = false;
        group.notifier = None;
    }
}

/// The id and body of `group`'s checkpoint record (see [`KIND_CHECKPOINT`]).
fn checkpoint_record(group: &GroupLog) -> (LogId, [u8; 24]) {
    let hs = group.hard_state.unwrap_or_default();
    let mut body = [0u8; 24];
    body[..8].copy_from_slice(&group.index.first().0.to_le_bytes());
    body[8..16].copy_from_slice(&hs.vote.map_or(0, |v| v.0).to_le_bytes());
    body[16..].copy_from_slice(&hs.commit.0.to_le_bytes());
    (LogId::new(hs.term, group.index.last()), body)
}

/// The id and body of `hs`'s hard-state record: term and commit index in the id, the vote in
/// the body.
fn hard_state_record(hs: &HardState) -> (LogId, [u8; 8]) {
    let vote = hs.vote.map_or(0, |v| v.0);
    (LogId::new(hs.term, hs.commit), vote.to_le_bytes())
}

/// Encodes one record in place at the end of `chunk`; returns its segment and offset. The
/// caller made room for it.
fn write_record(
    chunk: &mut Chunk,
    group: GroupId,
    kind: u8,
    id: LogId,
    data: &[u8],
    extensions: &[u8],
) -> (u32, u32) {
    let start = chunk.buf.len();
    let at = encode_record(chunk, group, kind, id, data, extensions);
    let out = &mut chunk.buf.as_mut_slice()[start..];
    // CRC-32C of the header with its crc field zero, the body and the padding: exactly
    // what `record::record_header` computes (checked by a test).
    let crc = crate::crc::crc32c(out);
    out[CRC_FIELD].copy_from_slice(&crc.to_le_bytes());
    at
}

/// [`write_record`] without the checksum: the crc field is left zero, as the checksum covers
/// it.
fn encode_record(
    chunk: &mut Chunk,
    group: GroupId,
    kind: u8,
    id: LogId,
    data: &[u8],
    extensions: &[u8],
) -> (u32, u32) {
    let len = encoded_len(data.len() + extensions.len());
    let offset = chunk.end();
    encode_into(
        chunk.buf.reserve_tail(len),
        group,
        kind,
        id,
        data,
        extensions,
    );
    // Segments are at most 4 GiB (checked by `WalConfig::validate`).
    (chunk.segment, offset as u32)
}

/// Encodes one record into `out` (exactly its encoded length), the crc field zero.
fn encode_into(
    out: &mut [u8],
    group: GroupId,
    kind: u8,
    id: LogId,
    data: &[u8],
    extensions: &[u8],
) {
    let size = data.len() + extensions.len();
    let header = record::RecordHeader {
        length: U32::new(size as u32),
        crc: U32::new(0),
        index: U64::new(id.index.0),
        term: U64::new(id.term.0),
        group: U64::new(group.0),
        data_len: U32::new(data.len() as u32),
        kind,
        flags: 0,
        reserved: [0; 2],
    };
    let (head, rest) = out.split_at_mut(record::HEADER_SIZE);
    head.copy_from_slice(header.as_bytes());
    let (d, rest) = rest.split_at_mut(data.len());
    d.copy_from_slice(data);
    let (e, pad) = rest.split_at_mut(extensions.len());
    // Most entries have no extensions and a body that is a multiple of 8: skip the calls
    // (a zero-length memset still showed up as 4 % of the shard thread in a profile).
    if !e.is_empty() {
        e.copy_from_slice(extensions);
    }
    if !pad.is_empty() {
        pad.fill(0);
    }
}

/// Records to decode after the lock is released.
enum Part {
    /// Consecutive records of one segment on disk: read with one `pread`.
    Disk(Arc<SegmentFile>, Vec<(Index, Term, Loc)>),
    /// Copies of records still in memory: (bytes, [(index, term, start in bytes)]).
    Memory(Vec<u8>, Vec<(Index, Term, usize)>),
}

impl WalLogStore {
    /// Opens (recovering) or creates the WAL described by `config`, as the log of
    /// `config.group`. Other groups' logs in the same WAL stay in it untouched.
    ///
    /// Recovery cuts a torn last batch and zeroes it on disk; damage anywhere else is
    /// [`LogError::Corruption`] naming the file and offset.
    pub fn open(config: WalConfig) -> Result<WalLogStore, LogError> {
        let group = config.group;
        SharedWal::open(config)?.log(group)
    }

    /// What opening the WAL found and chose.
    pub fn info(&self) -> &WalInfo {
        &self.inner.info
    }

    /// How the WAL's group commits were written since it was opened (of every group, for a
    /// share of a [`SharedWal`]).
    pub fn batch_counts(&self) -> BatchCounts {
        self.inner.batch_counts()
    }

    /// The configuration the WAL was opened with.
    pub fn config(&self) -> &WalConfig {
        &self.inner.config
    }

    /// The group whose log this is.
    pub fn group(&self) -> GroupId {
        self.inner.shared.lock().group(self.slot).id
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    fn read_range(
        &self,
        start: Index,
        end: Index,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, LogError> {
        // Plan under the lock (copying records that are only in memory), read without it.
        let mut parts: Vec<Part> = Vec::new();
        let max_entry_bytes = self.config().max_entry_bytes;
        let id;
        {
            let state = self.shared().lock();
            let group = state.group(self.slot);
            if start < group.index.first() {
                return Ok(Vec::new());
            }
            let last = group.index.last();
            id = group.id;
            let floor = state.memory_floor();
            let mut index = start;
            let mut bytes = 0usize;
            let mut count = 0usize;
            while index < end && index <= last {
                let (Some(loc), Some(term)) = (group.index.locate(index), group.index.term(index))
                else {
                    break;
                };
                let payload = loc.payload as usize;
                if count > 0 && bytes + payload > max_bytes {
                    break;
                }
                bytes += payload;
                count += 1;
                if (loc.segment, u64::from(loc.offset)) < floor {
                    match parts.last_mut() {
                        // One pread for records of one segment that are close together. In
                        // a shared WAL a group's records are interleaved with other groups':
                        // reading the span between distant ones read (and kept alive, under
                        // the entries' shared buffer) whole segments per group.
                        Some(Part::Disk(_, locs))
                            if locs.last().is_some_and(|l| {
                                l.2.segment == loc.segment
                                    && u64::from(loc.offset)
                                        <= u64::from(l.2.offset)
                                            + encoded_len(l.2.payload as usize) as u64
                                            + READ_GAP_MAX
                            }) =>
                        {
                            locs.push((index, term, loc))
                        }
                        _ => {
                            let Some(file) = state.files.get(&loc.segment) else {
                                return Err(LogError::Config {
                                    reason: format!("segment {} is not open", loc.segment),
                                });
                            };
                            parts.push(Part::Disk(file.clone(), vec![(index, term, loc)]));
                        }
                    }
                } else {
                    let len = encoded_len(payload);
                    let Some(record) =
                        state.record_in_memory(loc.segment, u64::from(loc.offset), len)
                    else {
                        return Err(LogError::Config {
                            reason: format!("entry {index} is neither written nor staged"),
                        });
                    };
                    if !matches!(parts.last(), Some(Part::Memory(..))) {
                        parts.push(Part::Memory(Vec::new(), Vec::new()));
                    }
                    if let Some(Part::Memory(buf, records)) = parts.last_mut() {
                        records.push((index, term, buf.len()));
                        buf.extend_from_slice(record);
                    }
                }
                index = index.next();
            }
        }
        let mut out = Vec::new();
        for part in parts {
            match part {
                Part::Memory(buf, records) => {
                    let buf = Bytes::from(buf);
                    for (index, term, at) in records {
                        let entry = decode_checked(&buf, at, (id, index, term), max_entry_bytes)
                            .map_err(|reason| LogError::Config {
                                reason: format!("staged record of entry {index}: {reason}"),
                            })?;
                        out.push(entry);
                    }
                }
                Part::Disk(file, locs) => read_locs(&file, id, &locs, max_entry_bytes, &mut out)?,
            }
        }
        Ok(out)
    }
}

/// Decodes the entry record at `at` and checks that it is entry `index` of term `term`.
fn decode_checked(
    buf: &Bytes,
    at: usize,
    (group, index, term): (GroupId, Index, Term),
    max_entry_bytes: usize,
) -> Result<Entry, String> {
    let (entry, found, _) =
        record::decode_entry(buf, at, max_entry_bytes).map_err(|e| e.to_string())?;
    if found != group {
        return Err(format!(
            "record of group {} where group {}'s entry {index} was written",
            found.0, group.0
        ));
    }
    if entry.id != LogId::new(term, index) {
        return Err(format!(
            "record holds entry {} where {} was written",
            entry.id,
            LogId::new(term, index)
        ));
    }
    Ok(entry)
}

/// Reads the records at `locs` (contiguous, one segment) with one pread and decodes them.
fn read_locs(
    file: &SegmentFile,
    group: GroupId,
    locs: &[(Index, Term, Loc)],
    max_entry_bytes: usize,
    out: &mut Vec<Entry>,
) -> Result<(), LogError> {
    let (Some(first), Some(last)) = (locs.first(), locs.last()) else {
        return Ok(());
    };
    let start = u64::from(first.2.offset);
    let end = u64::from(last.2.offset) + encoded_len(last.2.payload as usize) as u64;
    let mut buf = vec![0u8; (end - start) as usize];
    file.file
        .read_exact_at(&mut buf, start)
        .map_err(|e| LogError::io("read segment", &file.path, e))?;
    let buf = Bytes::from(buf);
    for &(index, term, loc) in locs {
        let at = (u64::from(loc.offset) - start) as usize;
        let entry =
            decode_checked(&buf, at, (group, index, term), max_entry_bytes).map_err(|reason| {
                LogError::Corruption {
                    path: file.path.clone(),
                    offset: u64::from(loc.offset),
                    reason,
                }
            })?;
        out.push(entry);
    }
    Ok(())
}

impl LogStore for WalLogStore {
    fn first_index(&self) -> Index {
        self.shared().lock().group(self.slot).index.first()
    }

    fn last_index(&self) -> Index {
        self.shared().lock().group(self.slot).index.last()
    }

    fn term(&self, index: Index) -> Result<Option<Term>, LogError> {
        Ok(self.shared().lock().group(self.slot).index.term(index))
    }

    fn entry(&self, index: Index) -> Result<Option<Entry>, LogError> {
        Ok(self.read_range(index, index.next(), usize::MAX)?.pop())
    }

    fn entries(&self, start: Index, end: Index, max_bytes: usize) -> Result<Vec<Entry>, LogError> {
        self.read_range(start, end, max_bytes)
    }

    fn append(&mut self, entries: &[Entry]) -> Result<Ticket, LogError> {
        let config = &self.inner.config;
        let max = config.max_entry_bytes;
        let slot = self.slot;
        let mut state = self.inner.shared.lock();
        state.check_failed()?;
        if entries.is_empty() {
            return Ok(state.group(slot).last_ticket);
        }
        let mut expected = state.group(slot).index.last().next();
        for entry in entries {
            if entry.id.index != expected {
                return Err(LogError::NotContiguous {
                    expected,
                    found: entry.id.index,
                });
            }
            if entry.payload_len() > max {
                return Err(LogError::EntryTooLarge {
                    index: entry.id.index,
                    size: entry.payload_len(),
                    max,
                });
            }
            expected = expected.next();
        }
        let ticket = state.ticket_for(slot);
        let mut staged_bytes = 0;
        let mut rest = entries;
        while !rest.is_empty() {
            let (count, payload) =
                state.stage_entries(config, slot, rest, STAGE_BYTES_PER_LOCK - staged_bytes);
            rest = &rest[count..];
            staged_bytes += payload;
            if staged_bytes >= STAGE_BYTES_PER_LOCK && !rest.is_empty() {
                // Let a writer that is between batches take what is staged so far.
                staged_bytes = 0;
                drop(state);
                // A writer woken by the unlock would usually lose the lock to us again.
                std::thread::yield_now();
                state = self.inner.shared.lock();
            }
        }
        state.stage.ticket = ticket;
        let wake = !self.held && state.claim_writer_wake();
        drop(state);
        if wake {
            self.inner.shared.work.notify_one();
        }
        Ok(ticket)
    }

    fn truncate_suffix(&mut self, last: Index) -> Result<Ticket, LogError> {
        let slot = self.slot;
        let mut state = self.inner.shared.lock();
        state.check_failed()?;
        let index = &state.group(slot).index;
        if last < index.first().prev() {
            return Err(LogError::TruncateOutOfRange {
                requested: last,
                first: index.first(),
                last: index.last(),
            });
        }
        if last >= index.last() {
            return Ok(state.group(slot).last_ticket);
        }
        // The marker first: if it starts a segment, that segment's checkpoint must show the
        // log as it was before the marker, as recovery will have replayed it.
        let ticket = state.stage_marker(&self.inner.config, slot, KIND_TRUNCATE_SUFFIX, last);
        state.group_mut(slot).index.truncate_suffix(last);
        let wake = !self.held && state.claim_writer_wake();
        drop(state);
        if wake {
            self.inner.shared.work.notify_one();
        }
        Ok(ticket)
    }

    fn truncate_prefix(&mut self, first: Index) -> Result<Ticket, LogError> {
        let slot = self.slot;
        let mut state = self.inner.shared.lock();
        state.check_failed()?;
        if first <= state.group(slot).index.first() {
            return Ok(state.group(slot).last_ticket);
        }
        // The marker first, as in `truncate_suffix`.
        let ticket = state.stage_marker(&self.inner.config, slot, KIND_TRUNCATE_PREFIX, first);
        state.group_mut(slot).index.truncate_prefix(first);
        state.stage.compacted = true;
        let wake = !self.held && state.claim_writer_wake();
        drop(state);
        if wake {
            self.inner.shared.work.notify_one();
        }
        Ok(ticket)
    }

    fn durable(&self) -> Result<Ticket, LogError> {
        let state = self.shared().lock();
        state.check_failed()?;
        Ok(state.durable)
    }

    fn wait_durable(&self, ticket: Ticket) -> Result<(), LogError> {
        crate::blocking::check("WalLogStore::wait_durable");
        self.inner.wait_for(self.shared().lock(), ticket)
    }

    fn set_durable_notifier(&mut self, notifier: DurableNotifier) {
        self.shared().lock().group_mut(self.slot).notifier = Some(notifier);
    }

    /// A `HARD_STATE` record, written with the next group commit (see [`format`]).
    fn save_hard_state(&mut self, hs: &HardState) -> Result<Option<Ticket>, LogError> {
        let slot = self.slot;
        let mut state = self.inner.shared.lock();
        state.check_failed()?;
        let group = state.group(slot).id;
        let ticket = state.ticket_for(slot);
        let (id, vote) = hard_state_record(hs);
        state.stage_record(&self.inner.config, group, KIND_HARD_STATE, id, &vote, b"");
        state.group_mut(slot).hard_state = Some(*hs);
        state.stage.ticket = ticket;
        let wake = !self.held && state.claim_writer_wake();
        drop(state);
        if wake {
            self.inner.shared.work.notify_one();
        }
        Ok(Some(ticket))
    }

    fn saved_hard_state(&self) -> Option<HardState> {
        self.shared().lock().group(self.slot).hard_state
    }

    fn hold_writes(&mut self) {
        self.held = true;
    }

    /// Writes on the calling thread only when this WAL holds one group (a shared WAL's group
    /// commit must not be split by one group writing alone), its writer thread is waiting
    /// for work, and what is staged is at most 16 KiB, starts no new
    /// segment (activating the spare may wait for it to be zero-filled) and truncates no
    /// head (its completion may delete segments).
    fn release_writes(&mut self, here: bool) -> Result<bool, LogError> {
        if !std::mem::take(&mut self.held) {
            return Ok(false);
        }
        let shared = &self.inner.shared;
        let mut state = shared.lock();
        if !writer::has_work(&state) {
            state.check_failed()?;
            return Ok(false);
        }
        if here && state.writer_waiting && state.groups.len() == 1 && state.stage.small() {
            drop(state);
            let step = writer::try_with_writer(&self.inner.writer, shared, |writer| {
                let _allow = crate::blocking::Allow::new();
                writer.step()
            });
            match step {
                Some(writer::Step::Wrote) => {
                    shared.lock().batches.caller_thread += 1;
                    return Ok(true);
                }
                Some(writer::Step::Failed) => {
                    return shared.lock().check_failed().map(|()| true);
                }
                // The writer thread took it in between.
                Some(writer::Step::Idle) => return Ok(false),
                None => {}
            }
            state = shared.lock();
        }
        if state.reapers > 0 && state.writer_waiting && state.stage.fits_async() {
            drop(state);
            let submitted =
                writer::try_with_writer(&self.inner.writer, shared, |w| w.submit_async());
            if submitted == Some(true) {
                return Ok(false);
            }
            state = shared.lock();
        }
        let wake = state.claim_writer_wake();
        drop(state);
        if wake {
            shared.work.notify_one();
        }
        Ok(false)
    }

    /// Submits released batches of at most 256 KiB in the active segment as one io_uring
    /// write with `RWF_DSYNC` (io_uring backend only), reaped by the caller's event loop.
    /// Larger batches, rotations and head truncations still go to the writer thread; so does
    /// everything if the ring cannot be set up (then `None`). One ring per WAL, shared by the
    /// handles of all its groups.
    fn write_completions(&mut self) -> Option<Arc<dyn crate::store::WriteCompletions>> {
        if !self.inner.config.asynchronous_writes {
            return None;
        }
        // The writer's lock only the first time: a batch may be being written under it.
        let inner = &self.inner;
        let fd = (*inner
            .async_fd
            .get_or_init(|| writer::with_writer(&inner.writer, &inner.shared, |w| w.async_fd())))?;
        self.shared().lock().reapers += 1;
        Some(Arc::new(WalCompletions {
            inner: self.inner.clone(),
            fd,
        }))
    }
}

/// A [`WalLogStore`]'s [`WriteCompletions`](crate::store::WriteCompletions): while one lives,
/// the WAL submits small released batches without blocking and this reaps them.
struct WalCompletions {
    inner: Arc<WalInner>,
    fd: std::os::fd::RawFd,
}

impl crate::store::WriteCompletions for WalCompletions {
    fn fd(&self) -> std::os::fd::RawFd {
        self.fd
    }

    fn reap(&self) {
        // Never waits for the lock: whoever holds it reaps for us when it lets go.
        let shared = &self.inner.shared;
        shared
            .reap_wanted
            .store(true, std::sync::atomic::Ordering::SeqCst);
        writer::reap_pending(&self.inner.writer, shared);
    }
}

impl Drop for WalCompletions {
    fn drop(&mut self) {
        let orphaned = {
            let mut state = self.inner.shared.lock();
            state.reapers -= 1;
            state.reapers == 0 && state.async_inflight
        };
        if orphaned {
            // Nobody is left to reap it: wait for it here, then hand on what is staged.
            let _allow = crate::blocking::Allow::new();
            writer::with_writer(&self.inner.writer, &self.inner.shared, |w| w.reap(true));
        }
    }
}

/// Paths of the segment files in `dir`, sorted by id, and their ids.
pub fn list_segments(dir: &Path) -> std::io::Result<Vec<(u64, PathBuf)>> {
    let mut segments = Vec::new();
    for item in std::fs::read_dir(dir)? {
        let item = item?;
        if let Some(id) = item.file_name().to_str().and_then(parse_segment_file_name) {
            segments.push((id, item.path()));
        }
    }
    segments.sort();
    Ok(segments)
}

#[cfg(test)]
mod shared_tests;
#[cfg(test)]
mod tests;
