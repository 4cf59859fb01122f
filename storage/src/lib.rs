//! `ringraft-storage`: the data ringraft keeps and the stores that keep it.
//!
//! ```text
//!   ringraft core ── Entry / LogId / Configuration / record format (plain data, this crate)
//!        │
//!   node glue ──► LogStore ──────┬─ WalLogStore: segment WAL, group commit, one data sync
//!        │        (submit, then  │    per batch; O_DIRECT (+ io_uring) or portable pwrite;
//!        │         learn durable)│    one per group, or many groups' shares of a SharedWal
//!        │                       ├─ LogCache<S>: ring of recent durable entries over any S
//!        │                       └─ InmemStore (tests, simulator)
//!        ├──────► StableStore ───┬─ FileStableStore: two alternating checksummed slots
//!        │                       └─ InmemStore
//!        └──────► SnapshotStore ─┬─ FileSnapshotStore: dir per snapshot, temp → rename
//!                                ├─ InmemSnapshotStore
//!                                └─ DiscardSnapshotStore
//! ```
//!
//! - [`record`]: the little-endian record format shared by the WAL and the wire (ARCHITECTURE §5).
//! - [`LogStore`]: how a shard submits writes and learns when they are durable; the module
//!   docs of [`LogStore`] spell out the ordering and failure contract.
//! - [`wal`]: segment files, recovery as a pure [`wal::scan()`], torn-tail handling.
//!
//! ```
//! use bytes::Bytes;
//! use ringraft_storage::{Entry, EntryKind, Index, LogId, LogStore, Term, WalConfig, WalLogStore};
//!
//! let dir = std::env::temp_dir().join(format!("ringraft-doc-{}", std::process::id()));
//! let mut log = WalLogStore::open(WalConfig::new(&dir))?;
//! let entry = Entry::new(LogId::new(Term(1), Index(1)), EntryKind::Command, Bytes::from("set x 1"));
//! let ticket = log.append(std::slice::from_ref(&entry))?; // returns at once
//! log.wait_durable(ticket)?; // or poll `log.durable()` from the shard loop
//! assert_eq!(log.entry(Index(1))?, Some(entry));
//! drop(log);
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), ringraft_storage::LogError>(())
//! ```
#![deny(missing_docs)]

mod configuration;
pub mod crc;
mod error;
mod inmem;
mod log_cache;
pub mod record;
mod snapshot;
mod stable;
mod store;
mod types;
pub mod wal;

pub mod blocking;
pub mod mutation;
pub use configuration::{Configuration, ConfigurationError, Server, Suffrage};
pub use error::{IoFailure, LogError, SnapshotError, StableError};
pub use inmem::InmemStore;
pub use log_cache::LogCache;
pub use snapshot::{DiscardSnapshotStore, FileSnapshotStore, InmemSnapshotStore};
pub use stable::FileStableStore;
pub use store::{
    DurableNotifier, HardState, LogStore, SnapshotMeta, SnapshotSink, SnapshotStore, StableStore,
    Ticket, WriteCompletions,
};
pub use types::{Entry, EntryKind, GroupId, Index, LogId, NodeId, Term};
pub use wal::{
    BackendChoice, BackendKind, BatchCounts, SharedWal, WalConfig, WalInfo, WalLogStore,
};

/// Creates `dir` and its missing parents and makes their entries durable: the parent of every
/// directory created is fsynced, and so are `dir` and its parent even when they already existed
/// (a process killed between creating a directory and syncing it leaves the entry in the page
/// cache only, and a power loss later would still take it, with everything written under it).
/// A few fsyncs of clean directories at start: they cost next to nothing.
pub fn create_dir_durable(dir: &std::path::Path) -> std::io::Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(path) = at.filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
        missing.push(path);
        at = path.parent();
    }
    std::fs::create_dir_all(dir)?;
    for created in missing {
        if let Some(parent) = created.parent() {
            sync_dir(parent)?;
        }
    }
    sync_dir(dir)?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// fsyncs a directory so that entries created, renamed or removed in it are durable.
pub(crate) fn sync_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        std::path::Path::new(".")
    } else {
        dir
    };
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod testkit;
