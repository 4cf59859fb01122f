//! Snapshot stores: [`FileSnapshotStore`], [`InmemSnapshotStore`], [`DiscardSnapshotStore`].
//!
//! File layout (as hashicorp's `FileSnapshotStore`, with binary metadata):
//!
//! ```text
//!  <dir>/<term:020>-<index:020>-<seq:08>/      one directory per snapshot
//!        meta.bin   version byte (2), then MessagePack: the array [last index, last term,
//!                   configuration index, size, data crc32c, servers (as in a version 2
//!                   configuration)]; then crc32c (u32, little-endian) of all the bytes before
//!        state.bin  the state machine's bytes
//!  <dir>/<id>.tmp/  a snapshot being written; ignored by `list`, removed on open
//!  <dir>/staged/     the staging area for user restores: the same layout, no retention
//! ```
//!
//! Commit order: fsync `state.bin`, write and fsync `meta.bin`, fsync the temp directory,
//! rename it to its final name, fsync the parent. A crash at any point leaves either no
//! snapshot or a complete one, never a half-written one under a final name.
//!
//! `meta.bin` of version 1 (earlier builds: fixed little-endian fields, then a configuration
//! of its own encoding, then the crc32c) still reads; any other version is a
//! [`SnapshotError::Corruption`] naming the version.

use crate::configuration::{from_msgpack, to_msgpack, Configuration, WireServer};
use crate::error::SnapshotError;
use crate::store::{SnapshotMeta, SnapshotSink, SnapshotStore};
use crate::types::{Index, LogId, Term};
use bytes::{BufMut, Bytes};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Cursor, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

const META_FILE: &str = "meta.bin";
const STATE_FILE: &str = "state.bin";
const TMP_SUFFIX: &str = ".tmp";
const STAGING_DIR: &str = "staged";
/// The version byte of `meta.bin` files written now (MessagePack).
const META_VERSION: u8 = 2;
/// The fixed layout of earlier builds: still read, never written.
const LEGACY_META_VERSION: u8 = 1;

/// `meta.bin`'s MessagePack body.
#[derive(Serialize, Deserialize)]
struct WireMeta<'a> {
    last_index: u64,
    last_term: u64,
    configuration_index: u64,
    size: u64,
    data_crc: u32,
    servers: Vec<WireServer<'a>>,
}

fn encode_meta(meta: &SnapshotMeta, data_crc: u32) -> Vec<u8> {
    let wire = WireMeta {
        last_index: meta.last.index.0,
        last_term: meta.last.term.0,
        configuration_index: meta.configuration_index.0,
        size: meta.size,
        data_crc,
        servers: meta.configuration.to_wire(),
    };
    let mut out = vec![META_VERSION];
    to_msgpack(&wire, &mut out);
    let crc = crate::crc::crc32c(&out);
    out.put_u32_le(crc);
    out
}

/// Decodes `meta.bin`; returns the metadata and the data checksum.
fn decode_meta(id: &str, bytes: &[u8]) -> Result<(SnapshotMeta, u32), SnapshotError> {
    let corrupt = |reason: &str| SnapshotError::Corruption {
        id: id.into(),
        reason: reason.into(),
    };
    let Some((body, crc)) = bytes.split_last_chunk::<4>() else {
        return Err(corrupt("metadata truncated"));
    };
    if crate::crc::crc32c(body) != u32::from_le_bytes(*crc) {
        return Err(corrupt("metadata checksum mismatch"));
    }
    let Some((&version, fields)) = body.split_first() else {
        return Err(corrupt("metadata truncated"));
    };
    let wire = match version {
        META_VERSION => from_msgpack::<WireMeta<'static>>(fields)
            .map_err(|e| corrupt(&format!("metadata: {e}")))?,
        LEGACY_META_VERSION => return decode_legacy_meta(id, fields),
        version => return Err(corrupt(&format!("unsupported metadata version {version}"))),
    };
    let configuration = Configuration::from_wire(wire.servers)
        .map_err(|e| corrupt(&format!("configuration: {e}")))?;
    let meta = SnapshotMeta {
        id: id.into(),
        last: LogId::new(Term(wire.last_term), Index(wire.last_index)),
        configuration,
        configuration_index: Index(wire.configuration_index),
        size: wire.size,
    };
    Ok((meta, wire.data_crc))
}

/// The fields of a version 1 `meta.bin` (after the version byte, before the checksum): last
/// index, last term, configuration index, size (u64 each), data crc32c, configuration length
/// (u32 each), the encoded configuration; all little-endian.
fn decode_legacy_meta(id: &str, fields: &[u8]) -> Result<(SnapshotMeta, u32), SnapshotError> {
    let corrupt = |reason: &str| SnapshotError::Corruption {
        id: id.into(),
        reason: reason.into(),
    };
    let Some((head, configuration)) = fields.split_first_chunk::<40>() else {
        return Err(corrupt("metadata truncated"));
    };
    let u64_at = |at: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&head[at..at + 8]);
        u64::from_le_bytes(word)
    };
    let u32_at = |at: usize| {
        let mut word = [0u8; 4];
        word.copy_from_slice(&head[at..at + 4]);
        u32::from_le_bytes(word)
    };
    if configuration.len() != u32_at(36) as usize {
        return Err(corrupt("metadata length mismatch"));
    }
    let configuration = Configuration::decode(configuration)
        .map_err(|e| corrupt(&format!("configuration: {e}")))?;
    let meta = SnapshotMeta {
        id: id.into(),
        last: LogId::new(Term(u64_at(8)), Index(u64_at(0))),
        configuration,
        configuration_index: Index(u64_at(16)),
        size: u64_at(24),
    };
    Ok((meta, u32_at(32)))
}

fn sort_newest_first(metas: &mut [SnapshotMeta]) {
    metas.sort_by(|a, b| {
        (b.last.term, b.last.index, &b.id).cmp(&(a.last.term, a.last.index, &a.id))
    });
}

/// Snapshots as directories on disk; keeps the newest `retain`.
#[derive(Debug)]
pub struct FileSnapshotStore {
    dir: PathBuf,
    retain: usize,
    sequence: AtomicU64,
    /// `<dir>/staged`, with no retention limit (absent on the staging area itself).
    staging: Option<Box<FileSnapshotStore>>,
}

impl FileSnapshotStore {
    /// Opens the store in `dir` (created if absent), keeping at most `retain` (≥ 1) snapshots.
    /// Leftover temporary snapshots from an interrupted write are removed.
    pub fn new(dir: impl Into<PathBuf>, retain: usize) -> Result<FileSnapshotStore, SnapshotError> {
        let dir = dir.into();
        let staging = FileSnapshotStore::open(dir.join(STAGING_DIR), usize::MAX, None)?;
        FileSnapshotStore::open(dir, retain, Some(Box::new(staging)))
    }

    fn open(
        dir: PathBuf,
        retain: usize,
        staging: Option<Box<FileSnapshotStore>>,
    ) -> Result<FileSnapshotStore, SnapshotError> {
        if retain == 0 {
            return Err(SnapshotError::Config {
                reason: "retain must be at least 1".into(),
            });
        }
        // The staging area is created on first use (most nodes never stage a restore).
        let lazy = staging.is_none();
        if !lazy || dir.exists() {
            crate::create_dir_durable(&dir)
                .map_err(|e| SnapshotError::io("create directory", &dir, e))?;
        }
        let mut sequence = 0;
        let listing = match fs::read_dir(&dir) {
            Ok(listing) => Some(listing),
            Err(e) if lazy && e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(SnapshotError::io("list", &dir, e)),
        };
        for item in listing.into_iter().flatten().flatten() {
            let name = item.file_name().to_string_lossy().into_owned();
            if name.ends_with(TMP_SUFFIX) {
                let _ = fs::remove_dir_all(item.path());
            } else if let Some(seq) = name.rsplit('-').next().and_then(|s| s.parse::<u64>().ok()) {
                sequence = sequence.max(seq + 1);
            }
        }
        Ok(FileSnapshotStore {
            dir,
            retain,
            sequence: AtomicU64::new(sequence),
            staging,
        })
    }

    fn valid_id(id: &str) -> bool {
        !(id.contains('/') || id.ends_with(TMP_SUFFIX) || id.is_empty() || id.starts_with('.'))
    }

    fn read_meta(&self, id: &str) -> Result<(SnapshotMeta, u32), SnapshotError> {
        let path = self.dir.join(id).join(META_FILE);
        let bytes = fs::read(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => SnapshotError::NotFound { id: id.into() },
            _ => SnapshotError::io("read metadata", &path, e),
        })?;
        decode_meta(id, &bytes)
    }

    /// Every valid snapshot, newest first (not limited to `retain`).
    fn all(&self) -> Result<Vec<SnapshotMeta>, SnapshotError> {
        let mut metas = Vec::new();
        let listing = match fs::read_dir(&self.dir) {
            Ok(listing) => listing,
            Err(e) if e.kind() == io::ErrorKind::NotFound && self.staging.is_none() => {
                return Ok(metas); // A staging area not created yet.
            }
            Err(e) => return Err(SnapshotError::io("list", &self.dir, e)),
        };
        for item in listing.flatten() {
            let name = item.file_name().to_string_lossy().into_owned();
            if name.ends_with(TMP_SUFFIX) || !item.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            // Unreadable or corrupt snapshots are skipped, as hashicorp does.
            if let Ok((meta, _)) = self.read_meta(&name) {
                metas.push(meta);
            }
        }
        sort_newest_first(&mut metas);
        Ok(metas)
    }

    /// Deletes all but the newest `retain` snapshots.
    pub fn reap(&self) -> Result<(), SnapshotError> {
        for meta in self.all()?.into_iter().skip(self.retain) {
            self.delete(&meta.id)?;
        }
        Ok(())
    }

    /// Deletes snapshot `id` all at once: renamed to a temporary name first (which listing
    /// skips and opening the store removes), then its files. Deleting the files in place could
    /// leave, after a power loss, a snapshot whose metadata survived its data (directories list
    /// their files in hash order, so either may go first).
    fn delete(&self, id: &str) -> Result<(), SnapshotError> {
        let path = self.dir.join(id);
        let doomed = self.dir.join(format!("{id}.removed{TMP_SUFFIX}"));
        fs::rename(&path, &doomed).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => SnapshotError::NotFound { id: id.into() },
            _ => SnapshotError::io("remove snapshot", &path, e),
        })?;
        fs::remove_dir_all(&doomed).map_err(|e| SnapshotError::io("remove snapshot", &doomed, e))
    }
}

struct FileSink {
    store_dir: PathBuf,
    retain: usize,
    id: String,
    tmp: PathBuf,
    writer: Option<BufWriter<File>>,
    crc: u32,
    meta: SnapshotMeta,
}

impl Write for FileSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| io::Error::other("sink closed"))?;
        let n = writer.write(buf)?;
        self.crc = crate::crc::crc32c_append(self.crc, &buf[..n]);
        self.meta.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.as_mut().map_or(Ok(()), |w| w.flush())
    }
}

impl FileSink {
    fn finish(&mut self) -> Result<(), SnapshotError> {
        let state_path = self.tmp.join(STATE_FILE);
        let writer = self.writer.take().ok_or_else(|| SnapshotError::Config {
            reason: "snapshot sink already closed".into(),
        })?;
        let file = writer
            .into_inner()
            .map_err(|e| SnapshotError::io("write snapshot", &state_path, e.into_error()))?;
        file.sync_all()
            .map_err(|e| SnapshotError::io("fsync", &state_path, e))?;
        let meta_path = self.tmp.join(META_FILE);
        let mut meta_file =
            File::create(&meta_path).map_err(|e| SnapshotError::io("create", &meta_path, e))?;
        meta_file
            .write_all(&encode_meta(&self.meta, self.crc))
            .and_then(|()| meta_file.sync_all())
            .map_err(|e| SnapshotError::io("write metadata", &meta_path, e))?;
        crate::sync_dir(&self.tmp).map_err(|e| SnapshotError::io("fsync", &self.tmp, e))?;
        let final_path = self.store_dir.join(&self.id);
        fs::rename(&self.tmp, &final_path)
            .map_err(|e| SnapshotError::io("rename", &final_path, e))?;
        if crate::mutation::enabled(crate::mutation::Mutation::SkipSnapshotDirSync) {
            return Ok(());
        }
        crate::sync_dir(&self.store_dir).map_err(|e| SnapshotError::io("fsync", &self.store_dir, e))
    }
}

impl SnapshotSink for FileSink {
    fn id(&self) -> &str {
        &self.id
    }

    fn commit(mut self: Box<Self>) -> Result<SnapshotMeta, SnapshotError> {
        crate::blocking::check("a file snapshot's commit (fsync and rename)");
        if let Err(e) = self.finish() {
            let _ = fs::remove_dir_all(&self.tmp);
            return Err(e);
        }
        let store = FileSnapshotStore {
            dir: self.store_dir.clone(),
            retain: self.retain,
            sequence: AtomicU64::new(0),
            staging: None,
        };
        store.reap()?;
        Ok(self.meta.clone())
    }

    fn cancel(mut self: Box<Self>) -> Result<(), SnapshotError> {
        self.writer = None;
        fs::remove_dir_all(&self.tmp).map_err(|e| SnapshotError::io("remove", &self.tmp, e))
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        if self.writer.is_some() {
            // Dropped without commit: the same as cancel.
            self.writer = None;
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

impl SnapshotStore for FileSnapshotStore {
    fn create(
        &self,
        last: LogId,
        configuration: &Configuration,
        configuration_index: Index,
    ) -> Result<Box<dyn SnapshotSink>, SnapshotError> {
        crate::blocking::check("FileSnapshotStore::create");
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:020}-{:020}-{sequence:08}", last.term.0, last.index.0);
        if !self.dir.exists() {
            // The staging area, on first use: make its directory entry durable too.
            crate::create_dir_durable(&self.dir)
                .map_err(|e| SnapshotError::io("create", &self.dir, e))?;
        }
        let tmp = self.dir.join(format!("{id}{TMP_SUFFIX}"));
        fs::create_dir(&tmp).map_err(|e| SnapshotError::io("create", &tmp, e))?;
        let state_path = tmp.join(STATE_FILE);
        let file =
            File::create(&state_path).map_err(|e| SnapshotError::io("create", &state_path, e))?;
        Ok(Box::new(FileSink {
            store_dir: self.dir.clone(),
            retain: self.retain,
            id: id.clone(),
            tmp,
            writer: Some(BufWriter::with_capacity(1 << 20, file)),
            crc: 0,
            meta: SnapshotMeta {
                id,
                last,
                configuration: configuration.clone(),
                configuration_index,
                size: 0,
            },
        }))
    }

    fn list(&self) -> Result<Vec<SnapshotMeta>, SnapshotError> {
        crate::blocking::check("FileSnapshotStore::list");
        let mut all = self.all()?;
        all.truncate(self.retain);
        Ok(all)
    }

    fn staging(&self) -> Option<&dyn SnapshotStore> {
        self.staging.as_deref().map(|s| s as &dyn SnapshotStore)
    }

    fn remove(&self, id: &str) -> Result<(), SnapshotError> {
        crate::blocking::check("FileSnapshotStore::remove");
        if !FileSnapshotStore::valid_id(id) || id == STAGING_DIR {
            return Err(SnapshotError::NotFound { id: id.into() });
        }
        self.delete(id)?;
        crate::sync_dir(&self.dir).map_err(|e| SnapshotError::io("fsync", &self.dir, e))
    }

    fn open(&self, id: &str) -> Result<(SnapshotMeta, Box<dyn Read + Send>), SnapshotError> {
        crate::blocking::check("FileSnapshotStore::open (reads and verifies the file)");
        if !FileSnapshotStore::valid_id(id) {
            return Err(SnapshotError::NotFound { id: id.into() });
        }
        let (meta, crc) = self.read_meta(id)?;
        let path = self.dir.join(id).join(STATE_FILE);
        let open = || File::open(&path).map_err(|e| SnapshotError::io("open", &path, e));
        // Verify the whole file before handing out a reader, as hashicorp does.
        let mut reader = BufReader::with_capacity(1 << 20, open()?);
        let (mut computed, mut size) = (0u32, 0u64);
        loop {
            let chunk = reader
                .fill_buf()
                .map_err(|e| SnapshotError::io("read", &path, e))?;
            if chunk.is_empty() {
                break;
            }
            computed = crate::crc::crc32c_append(computed, chunk);
            size += chunk.len() as u64;
            let n = chunk.len();
            reader.consume(n);
        }
        if computed != crc || size != meta.size {
            return Err(SnapshotError::Corruption {
                id: id.into(),
                reason: format!("data checksum or size mismatch ({size} bytes read)"),
            });
        }
        Ok((meta, Box::new(BufReader::with_capacity(1 << 20, open()?))))
    }
}

/// Snapshots as `(metadata, data)`, newest last.
type InmemSnapshots = Arc<Mutex<Vec<(SnapshotMeta, Bytes)>>>;

/// Keeps only the latest snapshot in memory (as hashicorp's `InmemSnapshotStore`), plus an
/// in-memory staging area for user restores.
#[derive(Clone, Debug)]
pub struct InmemSnapshotStore {
    snapshots: InmemSnapshots,
    sequence: Arc<AtomicU64>,
    staging: Option<Arc<InmemSnapshotStore>>,
}

impl InmemSnapshotStore {
    /// An empty store.
    pub fn new() -> InmemSnapshotStore {
        InmemSnapshotStore {
            staging: Some(Arc::new(InmemSnapshotStore::staging_area())),
            ..InmemSnapshotStore::staging_area()
        }
    }

    fn staging_area() -> InmemSnapshotStore {
        InmemSnapshotStore {
            snapshots: InmemSnapshots::default(),
            sequence: Arc::default(),
            staging: None,
        }
    }

    fn keeps_all(&self) -> bool {
        // The staging area keeps every snapshot until it is removed.
        self.staging.is_none()
    }
}

impl Default for InmemSnapshotStore {
    fn default() -> InmemSnapshotStore {
        InmemSnapshotStore::new()
    }
}

struct InmemSink {
    snapshots: InmemSnapshots,
    keep_all: bool,
    meta: SnapshotMeta,
    data: Vec<u8>,
}

impl Write for InmemSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.data.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SnapshotSink for InmemSink {
    fn id(&self) -> &str {
        &self.meta.id
    }

    fn commit(mut self: Box<Self>) -> Result<SnapshotMeta, SnapshotError> {
        self.meta.size = self.data.len() as u64;
        let data = Bytes::from(std::mem::take(&mut self.data));
        let mut snapshots = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        if !self.keep_all {
            snapshots.clear();
        }
        snapshots.push((self.meta.clone(), data));
        Ok(self.meta.clone())
    }

    fn cancel(self: Box<Self>) -> Result<(), SnapshotError> {
        Ok(())
    }
}

impl SnapshotStore for InmemSnapshotStore {
    fn create(
        &self,
        last: LogId,
        configuration: &Configuration,
        configuration_index: Index,
    ) -> Result<Box<dyn SnapshotSink>, SnapshotError> {
        // In memory nothing blocks, but it stands in for stores that do: the same check.
        crate::blocking::check("InmemSnapshotStore::create");
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:020}-{:020}-{sequence:08}", last.term.0, last.index.0);
        Ok(Box::new(InmemSink {
            snapshots: self.snapshots.clone(),
            keep_all: self.keeps_all(),
            meta: SnapshotMeta {
                id,
                last,
                configuration: configuration.clone(),
                configuration_index,
                size: 0,
            },
            data: Vec::new(),
        }))
    }

    fn list(&self) -> Result<Vec<SnapshotMeta>, SnapshotError> {
        crate::blocking::check("InmemSnapshotStore::list");
        let snapshots = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        let mut metas: Vec<SnapshotMeta> = snapshots.iter().map(|(meta, _)| meta.clone()).collect();
        sort_newest_first(&mut metas);
        Ok(metas)
    }

    fn open(&self, id: &str) -> Result<(SnapshotMeta, Box<dyn Read + Send>), SnapshotError> {
        crate::blocking::check("InmemSnapshotStore::open");
        let snapshots = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        match snapshots.iter().find(|(meta, _)| meta.id == id) {
            Some((meta, data)) => Ok((meta.clone(), Box::new(Cursor::new(data.clone())))),
            None => Err(SnapshotError::NotFound { id: id.into() }),
        }
    }

    fn staging(&self) -> Option<&dyn SnapshotStore> {
        self.staging.as_deref().map(|s| s as &dyn SnapshotStore)
    }

    fn remove(&self, id: &str) -> Result<(), SnapshotError> {
        let mut snapshots = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        let before = snapshots.len();
        snapshots.retain(|(meta, _)| meta.id != id);
        if snapshots.len() == before {
            return Err(SnapshotError::NotFound { id: id.into() });
        }
        Ok(())
    }
}

/// Keeps no snapshots: sinks discard their data, `list` is empty and `open` fails. For
/// deployments that only want log compaction.
#[derive(Clone, Copy, Debug, Default)]
pub struct DiscardSnapshotStore;

struct DiscardSink(SnapshotMeta);

impl Write for DiscardSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.size += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SnapshotSink for DiscardSink {
    fn id(&self) -> &str {
        &self.0.id
    }

    fn commit(self: Box<Self>) -> Result<SnapshotMeta, SnapshotError> {
        Ok(self.0)
    }

    fn cancel(self: Box<Self>) -> Result<(), SnapshotError> {
        Ok(())
    }
}

impl SnapshotStore for DiscardSnapshotStore {
    fn create(
        &self,
        last: LogId,
        configuration: &Configuration,
        configuration_index: Index,
    ) -> Result<Box<dyn SnapshotSink>, SnapshotError> {
        Ok(Box::new(DiscardSink(SnapshotMeta {
            id: "discard".into(),
            last,
            configuration: configuration.clone(),
            configuration_index,
            size: 0,
        })))
    }

    fn list(&self) -> Result<Vec<SnapshotMeta>, SnapshotError> {
        Ok(Vec::new())
    }

    fn open(&self, _id: &str) -> Result<(SnapshotMeta, Box<dyn Read + Send>), SnapshotError> {
        Err(SnapshotError::NotSupported)
    }
}

#[cfg(test)]
#[path = "snapshot_tests.rs"]
mod tests;
