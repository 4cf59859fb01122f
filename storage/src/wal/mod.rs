//! The segment WAL: [`WalLogStore`], a durable [`LogStore`] in a directory of segment files.
//!
//! ```text
//!  shard thread                         WAL writer thread                 spare thread
//!  append(entries) ─ encode records ──► queue ─┐ take everything queued
//!     returns Ticket (visible at once)         │ lay out after the tail,
//!                                              │ + one commit record
//!  durable() / wait_durable(ticket) ◄── durable│ write (io_uring O_DIRECT
//!  notifier() ◄─────────────────────────────── │ or pwrite), fdatasync
//!                                              └ rotate: take the spare ◄── zero-filled
//!                                                                          next segment
//! ```
//!
//! **Group commit.** The writer takes everything queued, writes it with one write (or a set of
//! concurrent io_uring writes) and one fdatasync, and completes every ticket in it together.
//! Appends that arrive during that sync form the next batch. Batches are written strictly one
//! after another, so at most the last batch on disk can be incomplete (see [`scan()`]).
//!
//! **Layout.** Writes are whole 4 KiB blocks at block offsets (O_DIRECT needs it); the partly
//! filled last block is kept in memory and rewritten, with more records, by the next batch.
//! Segments are preallocated and zero-filled by a background thread before they are needed, so
//! a sync never has to commit file-size or extent changes and rotation never waits on
//! allocation. Tail and head truncations are records replayed on recovery; once a head
//! truncation is durable, segments wholly before the new first index are deleted.
//!
//! **Reads.** An entry not yet written is served from memory; a written one is read with
//! `pread` (a range in the same segment with one call) and verified against its checksum before
//! it is returned, so damage that happens after recovery is still reported, never returned.
//!
//! **Failure.** Any write or sync error stops the store ([`LogError::Failed`] for every later
//! call) until it is reopened: after a failed fsync the kernel may have dropped the dirty data,
//! so retrying could acknowledge writes that are not on disk.

mod format;
mod io;
mod open;
pub mod scan;
mod writer;

pub use format::{
    parse_segment_file_name, segment_file_name, SegmentHeader, COMMIT_RECORD_SIZE, KIND_COMMIT,
    KIND_TRUNCATE_PREFIX, KIND_TRUNCATE_SUFFIX, SEGMENT_HEADER_SIZE, SEGMENT_MAGIC,
    SEGMENT_VERSION,
};
pub use io::{BackendChoice, BackendKind, BLOCK_SIZE};
pub use scan::{scan, RecordAction, ScanError, ScannedRecord, SegmentScan};

use crate::error::LogError;
use crate::record::{self, encoded_len};
use crate::store::{DurableNotifier, LogStore, Ticket};
use crate::types::{Entry, GroupId, Index, Term};
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

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
    /// The group written into every record. Default 0.
    pub group: GroupId,
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
            group: GroupId(0),
        }
    }

    fn validate(&self) -> Result<(), LogError> {
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

/// Where a written entry lives.
#[derive(Clone, Copy, Debug)]
struct Loc {
    term: Term,
    segment: u32,
    offset: u32,
    payload: u32,
}

/// A segment file open for reading.
#[derive(Debug)]
struct SegmentFile {
    file: File,
    path: PathBuf,
}

/// A record queued for the writer.
#[derive(Clone, Copy, Debug)]
struct QueuedRecord {
    offset: usize,
    len: usize,
    kind: u8,
    index: Index,
    ticket: Ticket,
}

#[derive(Default)]
struct Queue {
    bytes: Vec<u8>,
    records: Vec<QueuedRecord>,
}

struct State {
    /// Entries `first..` are `written` then `pending` (not yet placed on disk).
    first: Index,
    written: VecDeque<Loc>,
    pending: VecDeque<(Ticket, Entry)>,
    last_ticket: Ticket,
    durable: Ticket,
    failed: Option<LogError>,
    queue: Queue,
    files: BTreeMap<u32, Arc<SegmentFile>>,
    shutdown: bool,
    notifier: Option<DurableNotifier>,
}

impl State {
    fn last(&self) -> Index {
        Index(self.first.0 + (self.written.len() + self.pending.len()) as u64 - 1)
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

    fn push_marker(&mut self, kind: u8, index: Index, group: GroupId) -> Ticket {
        let ticket = self.next_ticket();
        let offset = self.queue.bytes.len();
        let id = crate::types::LogId::new(Term(0), index);
        // Markers have empty bodies, far below any size limit.
        let len = record::encode_raw(&mut self.queue.bytes, kind, group, id, b"", b"", 0)
            .unwrap_or_default();
        self.queue.records.push(QueuedRecord {
            offset,
            len,
            kind,
            index,
            ticket,
        });
        ticket
    }
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when the queue gains work or shutdown is requested.
    work: Condvar,
    /// Signalled when `durable` advances or the store fails.
    done: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A durable [`LogStore`] over segment files. See the module docs.
pub struct WalLogStore {
    shared: Arc<Shared>,
    config: WalConfig,
    info: WalInfo,
    writer: Option<JoinHandle<()>>,
}

impl WalLogStore {
    /// Opens (recovering) or creates the WAL described by `config`.
    ///
    /// Recovery cuts a torn last batch and zeroes it on disk; damage anywhere else is
    /// [`LogError::Corruption`] naming the file and offset.
    pub fn open(config: WalConfig) -> Result<WalLogStore, LogError> {
        config.validate()?;
        open::open(config)
    }

    /// What opening found and chose.
    pub fn info(&self) -> &WalInfo {
        &self.info
    }

    /// The configuration the store was opened with.
    pub fn config(&self) -> &WalConfig {
        &self.config
    }

    fn read_range(
        &self,
        start: Index,
        end: Index,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, LogError> {
        // Plan under the lock, read without it.
        enum Part {
            Disk(Arc<SegmentFile>, Vec<Loc>),
            Memory(Entry),
        }
        let mut parts: Vec<Part> = Vec::new();
        {
            let state = self.shared.lock();
            let last = state.last();
            let mut index = start;
            if start < state.first {
                return Ok(Vec::new());
            }
            let mut bytes = 0usize;
            let mut count = 0usize;
            while index < end && index <= last {
                let i = (index.0 - state.first.0) as usize;
                let payload = if let Some(loc) = state.written.get(i) {
                    loc.payload as usize
                } else {
                    state
                        .pending
                        .get(i - state.written.len())
                        .map_or(0, |(_, e)| e.payload_len())
                };
                if count > 0 && bytes + payload > max_bytes {
                    break;
                }
                bytes += payload;
                count += 1;
                if let Some(loc) = state.written.get(i) {
                    match parts.last_mut() {
                        Some(Part::Disk(_, locs))
                            if locs.last().is_some_and(|l| l.segment == loc.segment) =>
                        {
                            locs.push(*loc)
                        }
                        _ => {
                            let Some(file) = state.files.get(&loc.segment) else {
                                return Err(LogError::Config {
                                    reason: format!("segment {} is not open", loc.segment),
                                });
                            };
                            parts.push(Part::Disk(file.clone(), vec![*loc]));
                        }
                    }
                } else if let Some((_, entry)) = state.pending.get(i - state.written.len()) {
                    parts.push(Part::Memory(entry.clone()));
                }
                index = index.next();
            }
        }
        let mut out = Vec::new();
        for part in parts {
            match part {
                Part::Memory(entry) => out.push(entry),
                Part::Disk(file, locs) => {
                    read_locs(&file, &locs, self.config.max_entry_bytes, &mut out)?
                }
            }
        }
        Ok(out)
    }
}

/// Reads the records at `locs` (contiguous, one segment) with one pread and decodes them.
fn read_locs(
    file: &SegmentFile,
    locs: &[Loc],
    max_entry_bytes: usize,
    out: &mut Vec<Entry>,
) -> Result<(), LogError> {
    let (Some(first), Some(last)) = (locs.first(), locs.last()) else {
        return Ok(());
    };
    let start = first.offset as u64;
    let end = last.offset as u64 + encoded_len(last.payload as usize) as u64;
    let mut buf = vec![0u8; (end - start) as usize];
    file.file
        .read_exact_at(&mut buf, start)
        .map_err(|e| LogError::io("read segment", &file.path, e))?;
    let buf = Bytes::from(buf);
    for loc in locs {
        let at = (loc.offset as u64 - start) as usize;
        let corrupt = |reason: String| LogError::Corruption {
            path: file.path.clone(),
            offset: loc.offset as u64,
            reason,
        };
        let (entry, _, _) =
            record::decode_entry(&buf, at, max_entry_bytes).map_err(|e| corrupt(e.to_string()))?;
        if entry.id.term != loc.term {
            return Err(corrupt(format!(
                "entry term {} where {} was written",
                entry.id.term, loc.term
            )));
        }
        out.push(entry);
    }
    Ok(())
}

impl LogStore for WalLogStore {
    fn first_index(&self) -> Index {
        self.shared.lock().first
    }

    fn last_index(&self) -> Index {
        self.shared.lock().last()
    }

    fn term(&self, index: Index) -> Result<Option<Term>, LogError> {
        let state = self.shared.lock();
        if index < state.first || index > state.last() {
            return Ok(None);
        }
        let i = (index.0 - state.first.0) as usize;
        Ok(match state.written.get(i) {
            Some(loc) => Some(loc.term),
            None => state
                .pending
                .get(i - state.written.len())
                .map(|(_, e)| e.id.term),
        })
    }

    fn entry(&self, index: Index) -> Result<Option<Entry>, LogError> {
        Ok(self.read_range(index, index.next(), usize::MAX)?.pop())
    }

    fn entries(&self, start: Index, end: Index, max_bytes: usize) -> Result<Vec<Entry>, LogError> {
        self.read_range(start, end, max_bytes)
    }

    fn append(&mut self, entries: &[Entry]) -> Result<Ticket, LogError> {
        let group = self.config.group;
        let max = self.config.max_entry_bytes;
        let mut state = self.shared.lock();
        state.check_failed()?;
        if entries.is_empty() {
            return Ok(state.last_ticket);
        }
        let mut expected = state.last().next();
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
        let ticket = state.next_ticket();
        for entry in entries {
            let offset = state.queue.bytes.len();
            let len =
                record::encode_entry(&mut state.queue.bytes, group, entry, max).map_err(|e| {
                    LogError::Config {
                        reason: e.to_string(),
                    }
                })?;
            let kind = entry.kind.code();
            state.queue.records.push(QueuedRecord {
                offset,
                len,
                kind,
                index: entry.id.index,
                ticket,
            });
            state.pending.push_back((ticket, entry.clone()));
        }
        drop(state);
        self.shared.work.notify_one();
        Ok(ticket)
    }

    fn truncate_suffix(&mut self, last: Index) -> Result<Ticket, LogError> {
        let mut state = self.shared.lock();
        state.check_failed()?;
        if last < state.first.prev() {
            return Err(LogError::TruncateOutOfRange {
                requested: last,
                first: state.first,
                last: state.last(),
            });
        }
        if last >= state.last() {
            return Ok(state.last_ticket);
        }
        let keep = (last.0 + 1 - state.first.0) as usize;
        if keep <= state.written.len() {
            state.written.truncate(keep);
            state.pending.clear();
        } else {
            let keep_pending = keep - state.written.len();
            state.pending.truncate(keep_pending);
        }
        let ticket = state.push_marker(KIND_TRUNCATE_SUFFIX, last, self.config.group);
        drop(state);
        self.shared.work.notify_one();
        Ok(ticket)
    }

    fn truncate_prefix(&mut self, first: Index) -> Result<Ticket, LogError> {
        let mut state = self.shared.lock();
        state.check_failed()?;
        if first <= state.first {
            return Ok(state.last_ticket);
        }
        let mut drop_count = (first.0 - state.first.0) as usize;
        let from_written = drop_count.min(state.written.len());
        state.written.drain(..from_written);
        drop_count -= from_written;
        let from_pending = drop_count.min(state.pending.len());
        state.pending.drain(..from_pending);
        state.first = first;
        let ticket = state.push_marker(KIND_TRUNCATE_PREFIX, first, self.config.group);
        drop(state);
        self.shared.work.notify_one();
        Ok(ticket)
    }

    fn durable(&self) -> Result<Ticket, LogError> {
        let state = self.shared.lock();
        state.check_failed()?;
        Ok(state.durable)
    }

    fn wait_durable(&self, ticket: Ticket) -> Result<(), LogError> {
        let mut state = self.shared.lock();
        loop {
            state.check_failed()?;
            if state.durable >= ticket {
                return Ok(());
            }
            state = self
                .shared
                .done
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    fn set_durable_notifier(&mut self, notifier: DurableNotifier) {
        self.shared.lock().notifier = Some(notifier);
    }
}

impl Drop for WalLogStore {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.work.notify_all();
        if let Some(writer) = self.writer.take() {
            // The writer drains the queue first, so a clean drop loses nothing submitted.
            let _ = writer.join();
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
mod tests;
