//! Opening a WAL: scan every segment, replay the records into the index, repair a torn tail.

use super::format::SEGMENT_HEADER_SIZE;
use super::io::{AlignedBuf, Backend, BLOCK_SIZE};
use super::scan::{scan, RecordAction, ScannedRecord};
use super::writer::{Active, Spare, Writer};
use super::{list_segments, Loc, SegmentFile, Shared, State, WalConfig, WalInfo, WalLogStore};
use crate::error::LogError;
use crate::store::Ticket;
use crate::types::Index;
use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};

/// The log index rebuilt from committed records.
pub(super) struct Replay {
    pub first: Option<Index>,
    pub last: Index,
    pub written: VecDeque<Loc>,
}

impl Replay {
    pub fn new() -> Replay {
        Replay {
            first: None,
            last: Index(0),
            written: VecDeque::new(),
        }
    }

    /// Starts a segment whose header says its first entry is `base`.
    pub fn begin_segment(&mut self, base: Index) -> Result<(), String> {
        match self.first {
            None => {
                self.first = Some(base);
                self.last = base.prev();
                Ok(())
            }
            Some(_) if base == self.last.next() => Ok(()),
            Some(_) => Err(format!(
                "segment base index {base} does not follow the previous segment's last index {}",
                self.last
            )),
        }
    }

    /// Applies one committed record of segment `segment`.
    pub fn apply(&mut self, segment: u32, record: &ScannedRecord) -> Result<(), String> {
        let first = self.first.unwrap_or(Index(1));
        match record.action {
            RecordAction::Entry => {
                if record.index != self.last.next() {
                    return Err(format!(
                        "entry index {} where {} was expected",
                        record.index,
                        self.last.next()
                    ));
                }
                self.written.push_back(Loc {
                    term: record.term,
                    segment,
                    offset: record.offset as u32,
                    payload: record.payload_len,
                });
                self.last = record.index;
            }
            RecordAction::TruncateSuffix => {
                if record.index < first.prev() {
                    return Err(format!(
                        "tail truncation to {} below first index {first}",
                        record.index
                    ));
                }
                if record.index < self.last {
                    self.written
                        .truncate((record.index.0 + 1 - first.0) as usize);
                    self.last = record.index;
                }
            }
            RecordAction::TruncatePrefix => {
                if record.index > first {
                    let drop = ((record.index.0 - first.0) as usize).min(self.written.len());
                    self.written.drain(..drop);
                    self.first = Some(record.index);
                    if record.index > self.last.next() {
                        self.last = record.index.prev();
                    }
                }
            }
        }
        Ok(())
    }
}

fn corruption(path: &Path, offset: u64, reason: impl Into<String>) -> LogError {
    LogError::Corruption {
        path: path.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

fn read_file(path: &Path, buf: &mut Vec<u8>) -> Result<(), LogError> {
    buf.clear();
    File::open(path)
        .and_then(|mut f| f.read_to_end(buf))
        .map_err(|e| LogError::io("read segment", path, e))?;
    Ok(())
}

struct Tail {
    id: u32,
    path: PathBuf,
    capacity: u64,
    valid_len: u64,
    torn_end: u64,
    /// The partly filled block holding `valid_len`.
    last_block: Vec<u8>,
}

pub(super) fn open(config: WalConfig) -> Result<WalLogStore, LogError> {
    let dir = config.dir.clone();
    std::fs::create_dir_all(&dir).map_err(|e| LogError::io("create directory", &dir, e))?;
    let listing = std::fs::read_dir(&dir).map_err(|e| LogError::io("list directory", &dir, e))?;
    for item in listing.flatten() {
        // A spare whose creation was interrupted.
        if item
            .file_name()
            .to_str()
            .is_some_and(|n| n.ends_with(".seg.tmp"))
        {
            let _ = std::fs::remove_file(item.path());
        }
    }
    let segments = list_segments(&dir).map_err(|e| LogError::io("list directory", &dir, e))?;
    let backend =
        Backend::new(config.backend, &dir).map_err(|e| LogError::io("set up io_uring", &dir, e))?;

    let mut replay = Replay::new();
    let mut files = BTreeMap::new();
    let mut used: VecDeque<(u32, Index, PathBuf)> = VecDeque::new();
    let mut spare: Option<(u32, PathBuf)> = None;
    let mut tail: Option<Tail> = None;
    let mut bytes = Vec::new();
    let mut max_id = None;
    for (k, (id, path)) in segments.iter().enumerate() {
        let Ok(id32) = u32::try_from(*id) else {
            return Err(corruption(path, 0, "segment id out of range"));
        };
        max_id = Some(id32);
        read_file(path, &mut bytes)?;
        let scanned = scan(&bytes, config.max_entry_bytes)
            .map_err(|e| corruption(path, e.offset, e.reason))?;
        let Some(header) = scanned.header else {
            if k + 1 == segments.len() {
                spare = Some((id32, path.clone()));
                continue;
            }
            return Err(corruption(path, 0, "unused segment before used segments"));
        };
        if header.segment_id.get() != *id {
            return Err(corruption(
                path,
                0,
                "segment header id does not match the file name",
            ));
        }
        if header.cluster_id.get() != config.cluster_id {
            return Err(LogError::Config {
                reason: format!(
                    "{} belongs to cluster {}, not {}",
                    path.display(),
                    header.cluster_id.get(),
                    config.cluster_id
                ),
            });
        }
        if let Some(previous) = &tail {
            if previous.torn_end > previous.valid_len {
                return Err(corruption(
                    &previous.path,
                    previous.valid_len,
                    "incomplete batch at the end of a sealed segment",
                ));
            }
        }
        let base = Index(header.base_index.get());
        replay
            .begin_segment(base)
            .map_err(|reason| corruption(path, 0, reason))?;
        for record in &scanned.records {
            replay
                .apply(id32, record)
                .map_err(|reason| corruption(path, record.offset, reason))?;
        }
        let file = File::open(path).map_err(|e| LogError::io("open segment", path, e))?;
        files.insert(
            id32,
            Arc::new(SegmentFile {
                file,
                path: path.clone(),
            }),
        );
        used.push_back((id32, base, path.clone()));
        let block_start = (scanned.valid_len as usize) & !(BLOCK_SIZE - 1);
        tail = Some(Tail {
            id: id32,
            path: path.clone(),
            capacity: (bytes.len() as u64) & !(BLOCK_SIZE as u64 - 1),
            valid_len: scanned.valid_len,
            torn_end: scanned.torn_end,
            last_block: bytes
                .get(block_start..scanned.valid_len as usize)
                .unwrap_or(&[])
                .to_vec(),
        });
    }

    let mut torn_bytes_discarded = 0;
    let mut active = None;
    let mut buf = AlignedBuf::new();
    let mut buf_offset = 0;
    if let Some(tail) = tail {
        if tail.torn_end > tail.valid_len {
            // Zero the torn batch so its stale records can never be read as part of a later
            // batch, and make that durable before anything new is written after it.
            torn_bytes_discarded = tail.torn_end - tail.valid_len;
            let file = OpenOptions::new()
                .write(true)
                .open(&tail.path)
                .map_err(|e| LogError::io("open segment for repair", &tail.path, e))?;
            let zeros = vec![0u8; torn_bytes_discarded as usize];
            file.write_all_at(&zeros, tail.valid_len)
                .and_then(|()| file.sync_data())
                .map_err(|e| LogError::io("zero torn tail", &tail.path, e))?;
        }
        let file = backend
            .open_for_write(&tail.path, false)
            .map_err(|e| LogError::io("open segment for writing", &tail.path, e))?;
        buf.extend_from_slice(&tail.last_block);
        buf_offset = tail.valid_len & !(BLOCK_SIZE as u64 - 1);
        // A segment cut short (a damaged file system) is still usable up to its length.
        let capacity = tail.capacity.max(SEGMENT_HEADER_SIZE as u64);
        active = Some(Active {
            id: tail.id,
            path: tail.path,
            file,
            capacity,
            len: tail.valid_len,
        });
    }

    let next_id = max_id.map_or(0, |id| id + 1);
    let spare = Spare::start(dir.clone(), config.segment_size_bytes, spare, next_id)
        .map_err(|e| LogError::io("start spare thread", &dir, e))?;
    let first = replay.first.unwrap_or(Index(1));
    let info = WalInfo {
        backend: backend.kind(),
        segments: used.len(),
        torn_bytes_discarded,
    };
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            first,
            written: replay.written,
            pending: VecDeque::new(),
            last_ticket: Ticket(0),
            durable: Ticket(0),
            failed: None,
            queue: Default::default(),
            files,
            shutdown: false,
            notifier: None,
        }),
        work: Condvar::new(),
        done: Condvar::new(),
    });
    let writer = Writer {
        shared: shared.clone(),
        backend,
        config: config.clone(),
        segments: used,
        active,
        buf,
        buf_offset,
        written_last: replay.last.max(first.prev()),
        spare,
    };
    let handle = std::thread::Builder::new()
        .name("ringraft-wal-writer".into())
        .spawn(move || writer.run())
        .map_err(|e| LogError::io("start writer thread", &dir, e))?;
    Ok(WalLogStore {
        shared,
        config,
        info,
        writer: Some(handle),
    })
}
