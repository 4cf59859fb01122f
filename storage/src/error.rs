//! Typed errors, one enum per store interface.

use crate::types::Index;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An operating-system I/O error with what was being done and to which file.
#[derive(Clone, Debug)]
pub struct IoFailure {
    /// What was being done ("fdatasync", "open segment", …).
    pub op: &'static str,
    /// The file or directory involved.
    pub path: PathBuf,
    /// The OS error (shared so the error can be cloned and returned to every waiter).
    pub source: Arc<io::Error>,
}

impl IoFailure {
    pub(crate) fn new(op: &'static str, path: &Path, source: io::Error) -> IoFailure {
        IoFailure {
            op,
            path: path.to_path_buf(),
            source: Arc::new(source),
        }
    }

    /// True if the OS said the device is out of space (or quota).
    pub fn is_no_space(&self) -> bool {
        matches!(
            self.source.raw_os_error(),
            Some(libc::ENOSPC) | Some(libc::EDQUOT)
        )
    }
}

impl fmt::Display for IoFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.op, self.path.display(), self.source)
    }
}

/// Why a [`LogStore`](crate::LogStore) operation failed.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum LogError {
    /// An I/O error. The store has stopped accepting writes (see [`LogError::Failed`]).
    Io(IoFailure),
    /// The device is full. The store has stopped accepting writes; free space and reopen.
    NoSpace(IoFailure),
    /// An earlier I/O error stopped the store: an fsync that failed cannot be retried safely
    /// (the kernel may have dropped the dirty pages), so nothing is accepted until the store is
    /// reopened and recovered from what is really on disk.
    Failed {
        /// The error that stopped the store.
        cause: Box<LogError>,
    },
    /// Stored data failed verification before the log's tail: never skipped silently.
    Corruption {
        /// The file.
        path: PathBuf,
        /// Byte offset of the bad data in the file.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// An appended entry does not follow the log's last index.
    NotContiguous {
        /// The index the log expected next.
        expected: Index,
        /// The index supplied.
        found: Index,
    },
    /// An entry's payload exceeds the configured maximum.
    EntryTooLarge {
        /// The entry.
        index: Index,
        /// Its payload size (data plus extensions).
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A truncation would remove entries that the store no longer holds the range for.
    TruncateOutOfRange {
        /// The index asked for.
        requested: Index,
        /// The first index held.
        first: Index,
        /// The last index held.
        last: Index,
    },
    /// The store's configuration or directory is unusable.
    Config {
        /// Why.
        reason: String,
    },
}

impl LogError {
    pub(crate) fn from_io(failure: IoFailure) -> LogError {
        if failure.is_no_space() {
            LogError::NoSpace(failure)
        } else {
            LogError::Io(failure)
        }
    }

    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> LogError {
        LogError::from_io(IoFailure::new(op, path, source))
    }

    /// True for [`LogError::NoSpace`], also when wrapped in [`LogError::Failed`].
    pub fn is_no_space(&self) -> bool {
        match self {
            LogError::NoSpace(_) => true,
            LogError::Failed { cause } => cause.is_no_space(),
            _ => false,
        }
    }
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::Io(e) => write!(f, "log I/O error: {e}"),
            LogError::NoSpace(e) => write!(f, "log device is out of space: {e}"),
            LogError::Failed { cause } => {
                write!(
                    f,
                    "log store stopped after an earlier error (reopen to recover): {cause}"
                )
            }
            LogError::Corruption {
                path,
                offset,
                reason,
            } => {
                write!(
                    f,
                    "log corruption in {} at offset {offset}: {reason}",
                    path.display()
                )
            }
            LogError::NotContiguous { expected, found } => {
                write!(
                    f,
                    "appended entry {found} does not follow the log (expected {expected})"
                )
            }
            LogError::EntryTooLarge { index, size, max } => {
                write!(
                    f,
                    "entry {index} payload of {size} bytes exceeds the maximum of {max}"
                )
            }
            LogError::TruncateOutOfRange {
                requested,
                first,
                last,
            } => write!(
                f,
                "cannot truncate the log at {requested}: it holds entries {first}..={last}"
            ),
            LogError::Config { reason } => write!(f, "log store configuration: {reason}"),
        }
    }
}

impl std::error::Error for LogError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            LogError::Io(e) | LogError::NoSpace(e) => Some(&*e.source),
            LogError::Failed { cause } => Some(&**cause),
            _ => None,
        }
    }
}

/// Why a [`StableStore`](crate::StableStore) operation failed.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum StableError {
    /// An I/O error. A failed save stops the store until it is reopened.
    Io(IoFailure),
    /// The device is full.
    NoSpace(IoFailure),
    /// An earlier failed save stopped the store.
    Failed {
        /// The error that stopped the store.
        cause: Box<StableError>,
    },
    /// Neither slot of an existing file holds a valid state.
    Corruption {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

impl StableError {
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> StableError {
        let failure = IoFailure::new(op, path, source);
        if failure.is_no_space() {
            StableError::NoSpace(failure)
        } else {
            StableError::Io(failure)
        }
    }
}

impl fmt::Display for StableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StableError::Io(e) => write!(f, "stable store I/O error: {e}"),
            StableError::NoSpace(e) => write!(f, "stable store device is out of space: {e}"),
            StableError::Failed { cause } => {
                write!(
                    f,
                    "stable store stopped after an earlier error (reopen): {cause}"
                )
            }
            StableError::Corruption { path, reason } => {
                write!(f, "stable store {} is corrupt: {reason}", path.display())
            }
        }
    }
}

impl std::error::Error for StableError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StableError::Io(e) | StableError::NoSpace(e) => Some(&*e.source),
            StableError::Failed { cause } => Some(&**cause),
            _ => None,
        }
    }
}

/// Why a [`SnapshotStore`](crate::SnapshotStore) operation failed.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum SnapshotError {
    /// An I/O error.
    Io(IoFailure),
    /// The device is full.
    NoSpace(IoFailure),
    /// No snapshot has this id.
    NotFound {
        /// The id asked for.
        id: String,
    },
    /// A snapshot's metadata or data failed verification.
    Corruption {
        /// The snapshot.
        id: String,
        /// What was wrong.
        reason: String,
    },
    /// The store does not keep snapshots (the discard store).
    NotSupported,
    /// The store's configuration is unusable.
    Config {
        /// Why.
        reason: String,
    },
}

impl SnapshotError {
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> SnapshotError {
        let failure = IoFailure::new(op, path, source);
        if failure.is_no_space() {
            SnapshotError::NoSpace(failure)
        } else {
            SnapshotError::Io(failure)
        }
    }
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::Io(e) => write!(f, "snapshot I/O error: {e}"),
            SnapshotError::NoSpace(e) => write!(f, "snapshot device is out of space: {e}"),
            SnapshotError::NotFound { id } => write!(f, "snapshot {id:?} not found"),
            SnapshotError::Corruption { id, reason } => {
                write!(f, "snapshot {id:?} is corrupt: {reason}")
            }
            SnapshotError::NotSupported => write!(f, "this snapshot store keeps no snapshots"),
            SnapshotError::Config { reason } => write!(f, "snapshot store configuration: {reason}"),
        }
    }
}

impl std::error::Error for SnapshotError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SnapshotError::Io(e) | SnapshotError::NoSpace(e) => Some(&*e.source),
            _ => None,
        }
    }
}

impl From<SnapshotError> for io::Error {
    fn from(e: SnapshotError) -> io::Error {
        match e {
            SnapshotError::Io(f) | SnapshotError::NoSpace(f) => {
                io::Error::new(f.source.kind(), format!("{f}"))
            }
            other => io::Error::other(other.to_string()),
        }
    }
}
