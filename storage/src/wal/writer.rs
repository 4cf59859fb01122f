//! The WAL's writer thread (group commit, layout, rotation) and spare-segment thread.

use super::format::{segment_file_name, SegmentHeader, COMMIT_RECORD_SIZE, KIND_COMMIT};
use super::format::{KIND_TRUNCATE_PREFIX, KIND_TRUNCATE_SUFFIX, SEGMENT_HEADER_SIZE};
use super::io::{AlignedBuf, Backend, BLOCK_SIZE};
use super::{Loc, Queue, QueuedRecord, SegmentFile, Shared, WalConfig};
use crate::error::LogError;
use crate::record;
use crate::store::Ticket;
use crate::types::{Index, LogId, Term};
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use zerocopy::IntoBytes;

/// The segment currently being written.
pub(super) struct Active {
    pub id: u32,
    pub path: PathBuf,
    pub file: File,
    pub capacity: u64,
    /// End of the committed data: where the next record goes.
    pub len: u64,
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
/// makes the rename durable. Real zeros (not `fallocate`): writes into unwritten extents would
/// make every later fdatasync commit extent conversions too.
fn create_zeroed_segment(dir: &Path, id: u32, size: u64) -> std::io::Result<PathBuf> {
    let path = dir.join(segment_file_name(u64::from(id)));
    let tmp = dir.join(format!("{}.tmp", segment_file_name(u64::from(id))));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)?;
    let zeros = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        file.write_all(&zeros[..n])?;
        left -= n as u64;
    }
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, &path)?;
    crate::sync_dir(dir)?;
    Ok(path)
}

/// The writer: owns the active segment and the write backend.
pub(super) struct Writer {
    pub shared: Arc<Shared>,
    pub backend: Backend,
    pub config: WalConfig,
    /// Used segments in order with their base indexes; the last is the active one.
    pub segments: VecDeque<(u32, Index, PathBuf)>,
    pub active: Option<Active>,
    /// Bytes from file offset `buf_offset` (block-aligned) to `active.len`, not yet synced
    /// beyond the last commit; its first block is the partly filled block already on disk.
    pub buf: AlignedBuf,
    pub buf_offset: u64,
    /// The log's last index as of the last record placed.
    pub written_last: Index,
    pub spare: Spare,
}

impl Writer {
    pub fn run(mut self) {
        let mut spare_queue = Queue::default();
        loop {
            let mut queue = {
                let mut state = self.shared.lock();
                while state.queue.records.is_empty() && !state.shutdown {
                    state = self
                        .shared
                        .work
                        .wait(state)
                        .unwrap_or_else(|poison| poison.into_inner());
                }
                if state.queue.records.is_empty() {
                    break;
                }
                std::mem::swap(&mut state.queue, &mut spare_queue);
                std::mem::take(&mut spare_queue)
            };
            let result = self.write_batch(&queue);
            let failed = result.is_err();
            self.complete(&queue, result);
            if failed {
                break;
            }
            queue.bytes.clear();
            queue.records.clear();
            spare_queue = queue;
        }
    }

    /// Places every queued record after the tail, rotating segments as they fill, and makes
    /// them durable. Returns each record's segment and offset.
    fn write_batch(&mut self, queue: &Queue) -> Result<Vec<(u32, u64)>, LogError> {
        let mut placed = Vec::with_capacity(queue.records.len());
        if self.active.is_none() {
            self.rotate()?;
        }
        let mut chunk_start = self.active_len();
        for rec in &queue.records {
            let need = (rec.len + COMMIT_RECORD_SIZE) as u64;
            let (len, capacity) = self.active.as_ref().map_or((0, 0), |a| (a.len, a.capacity));
            if len + need > capacity {
                if len > chunk_start {
                    self.commit_chunk(chunk_start)?;
                }
                self.rotate()?;
                chunk_start = self.active_len();
            }
            let Some(bytes) = queue.bytes.get(rec.offset..rec.offset + rec.len) else {
                return Err(LogError::Config {
                    reason: "queued record out of bounds".into(),
                });
            };
            self.buf.extend_from_slice(bytes);
            if let Some(active) = self.active.as_mut() {
                placed.push((active.id, active.len));
                active.len += rec.len as u64;
            }
            self.written_last = match rec.kind {
                KIND_TRUNCATE_SUFFIX => self.written_last.min(rec.index),
                KIND_TRUNCATE_PREFIX if rec.index > self.written_last.next() => rec.index.prev(),
                KIND_TRUNCATE_PREFIX => self.written_last,
                _ => rec.index,
            };
        }
        if self.active_len() > chunk_start {
            self.commit_chunk(chunk_start)?;
        }
        Ok(placed)
    }

    fn active_len(&self) -> u64 {
        self.active.as_ref().map_or(0, |a| a.len)
    }

    /// Ends the current chunk with a commit record, writes and syncs it.
    fn commit_chunk(&mut self, chunk_start: u64) -> Result<(), LogError> {
        let Some(active) = self.active.as_mut() else {
            return Ok(());
        };
        let mut commit = Vec::with_capacity(COMMIT_RECORD_SIZE);
        let id = LogId::new(Term(0), self.written_last);
        let group = self.config.group;
        record::encode_raw(
            &mut commit,
            KIND_COMMIT,
            group,
            id,
            &chunk_start.to_le_bytes(),
            b"",
            8,
        )
        .map_err(|e| LogError::Config {
            reason: e.to_string(),
        })?;
        self.buf.extend_from_slice(&commit);
        active.len += commit.len() as u64;
        self.backend
            .write_and_sync(&active.file, self.buf_offset, self.buf.padded())
            .map_err(|e| LogError::io("write and fdatasync", &active.path, e))?;
        let tail_block = active.len & !(BLOCK_SIZE as u64 - 1);
        self.buf.keep_tail((tail_block - self.buf_offset) as usize);
        self.buf_offset = tail_block;
        Ok(())
    }

    /// Starts the next segment from the spare; its header goes out with its first chunk.
    fn rotate(&mut self) -> Result<(), LogError> {
        let (id, path) = self.spare.take(&self.config.dir)?;
        let file = self
            .backend
            .open_for_write(&path, false)
            .map_err(|e| LogError::io("open segment for writing", &path, e))?;
        let read = File::open(&path).map_err(|e| LogError::io("open segment", &path, e))?;
        let base = self.written_last.next();
        let header = SegmentHeader::new(u64::from(id), base.0, self.config.cluster_id);
        self.buf.clear();
        self.buf.extend_from_slice(header.as_bytes());
        self.buf_offset = 0;
        self.active = Some(Active {
            id,
            path: path.clone(),
            file,
            capacity: self.config.segment_size_bytes,
            len: SEGMENT_HEADER_SIZE as u64,
        });
        self.segments.push_back((id, base, path.clone()));
        self.shared
            .lock()
            .files
            .insert(id, Arc::new(SegmentFile { file: read, path }));
        Ok(())
    }

    /// Publishes a batch's outcome: entries become `written`, tickets durable, waiters woken.
    fn complete(&mut self, queue: &Queue, result: Result<Vec<(u32, u64)>, LogError>) {
        let mut doomed = Vec::new();
        let mut failed = false;
        {
            let mut state = self.shared.lock();
            match result {
                Ok(placed) => {
                    let mut prefix: Option<Index> = None;
                    for (rec, &(segment, offset)) in queue.records.iter().zip(&placed) {
                        match rec.kind {
                            KIND_TRUNCATE_PREFIX => prefix = Some(rec.index),
                            KIND_TRUNCATE_SUFFIX => {}
                            _ => promote(&mut state, rec, segment, offset),
                        }
                    }
                    if let Some(first) = prefix {
                        // Segments wholly before `first` are dead once the marker is durable.
                        while self.segments.len() > 1 && self.segments[1].1 <= first {
                            if let Some((id, _, path)) = self.segments.pop_front() {
                                state.files.remove(&id);
                                doomed.push(path);
                            }
                        }
                    }
                }
                Err(e) => {
                    state.failed = Some(e);
                    failed = true;
                }
            }
        };
        // Delete before waking waiters: once a head truncation is durable, its segments are gone.
        if !doomed.is_empty() {
            for path in &doomed {
                // Oldest first, each made durable before the next: a crash must never leave a
                // gap (an old segment kept, a younger one gone). A segment that survives is
                // harmless, since the durable prefix marker hides its entries on recovery, so
                // a failed delete is only logged.
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
        let notifier = {
            let mut state = self.shared.lock();
            if let (false, Some(last)) = (failed, queue.records.last()) {
                state.durable = state.durable.max(last.ticket);
            }
            state.notifier.clone()
        };
        self.shared.done.notify_all();
        if let Some(notify) = notifier {
            notify();
        }
    }
}

/// Moves the pending entry `rec` stands for (if it was not truncated meanwhile) to `written`.
fn promote(state: &mut super::State, rec: &QueuedRecord, segment: u32, offset: u64) {
    let matches = state
        .pending
        .front()
        .is_some_and(|(ticket, entry): &(Ticket, _)| {
            *ticket == rec.ticket && entry.id.index == rec.index
        });
    if !matches {
        return;
    }
    if let Some((_, entry)) = state.pending.pop_front() {
        state.written.push_back(Loc {
            term: entry.id.term,
            segment,
            offset: offset as u32,
            payload: entry.payload_len() as u32,
        });
    }
}
