//! The core's errors: why a start or a bootstrap was refused.

use super::ConfigError;
use ringraft_storage::{ConfigurationError, Index, LogId, NodeId};
use std::fmt;

/// Why bootstrap or recovery was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BootstrapError {
    /// The node already has state: bootstrap only initialises empty nodes.
    ExistingState,
    /// Recovery needs existing state to recover.
    NoExistingState,
    /// The local node must be a voter in the bootstrap configuration.
    NotVoter {
        /// The local node.
        id: NodeId,
    },
    /// The configuration is invalid.
    InvalidConfiguration(ConfigurationError),
}

impl fmt::Display for BootstrapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootstrapError::ExistingState => {
                write!(f, "cannot bootstrap a node with existing state")
            }
            BootstrapError::NoExistingState => write!(f, "no existing state to recover"),
            BootstrapError::NotVoter { id } => {
                write!(
                    f,
                    "local node {id} is not a voter in the bootstrap configuration"
                )
            }
            BootstrapError::InvalidConfiguration(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for BootstrapError {}

/// Why a core could not be created.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CoreError {
    /// The configuration is invalid.
    Config(ConfigError),
    /// A recovered entry is not where the log says it should be.
    RecoveredLogNotConsecutive {
        /// The index expected.
        expected: Index,
        /// The entry's id.
        found: LogId,
    },
    /// The recovered log was compacted past the newest snapshot.
    LogBeyondSnapshot {
        /// The log's compaction point.
        log_prev: LogId,
        /// The snapshot's last entry.
        snapshot: LogId,
    },
    /// A recovered configuration entry could not be decoded.
    RecoveredConfiguration {
        /// The entry's index.
        index: Index,
        /// What is wrong with it.
        error: ConfigurationError,
    },
}

impl fmt::Display for CoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CoreError::Config(e) => e.fmt(f),
            CoreError::RecoveredLogNotConsecutive { expected, found } => {
                write!(
                    f,
                    "recovered log is not consecutive: expected {expected}, found {found}"
                )
            }
            CoreError::LogBeyondSnapshot { log_prev, snapshot } => write!(
                f,
                "recovered log starts after {log_prev}, beyond the newest snapshot {snapshot}"
            ),
            CoreError::RecoveredConfiguration { index, error } => {
                write!(
                    f,
                    "recovered configuration entry at {index} is invalid: {error}"
                )
            }
        }
    }
}

impl std::error::Error for CoreError {}
