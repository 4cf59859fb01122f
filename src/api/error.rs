//! Errors of the public API: one small `#[non_exhaustive]` enum per kind of request
//! (STYLE: "Errors"). Every request can fail with `Shutdown` (the node stopped before answering)
//! and, where it waits in the submission queue, `EnqueueTimeout`.

use crate::core::{CoreError, RequestError};
use ringraft_storage::{ConfigurationError, Index, LogError, NodeId, SnapshotError, StableError};
use std::fmt;

/// Why an `apply`, `apply_batch` or `barrier` failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApplyError {
    /// This node is not the leader; `leader` is a hint where to retry. Nothing was applied.
    NotLeader {
        /// The last leader this node heard from, if any.
        leader: Option<NodeId>,
    },
    /// Leadership was lost while the request was pending: its outcome is unknown (the entry
    /// may still commit).
    LeadershipLost,
    /// A leadership transfer is in progress; retry on the new leader.
    LeadershipTransferInProgress,
    /// A user restore is being staged; retry shortly. Nothing changed.
    RestoreInProgress,
    /// `apply_batch` was given no commands.
    EmptyBatch,
    /// The request could not enter the submission queue before its timeout.
    EnqueueTimeout,
    /// The node shut down before answering (for a proposal, its outcome is unknown).
    Shutdown,
}

/// Why `verify_leader`, `read_index` or `lease_read` failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadError {
    /// This node is not the leader.
    NotLeader {
        /// The last leader this node heard from, if any.
        leader: Option<NodeId>,
    },
    /// Leadership was lost before a quorum confirmed it.
    LeadershipLost,
    /// `lease_read` was called but [`Config::lease_read`](crate::Config::lease_read) is off.
    LeaseReadDisabled,
    /// The request could not enter the submission queue before its timeout.
    EnqueueTimeout,
    /// The node shut down before answering.
    Shutdown,
}

/// Why a membership change failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MembershipError {
    /// This node is not the leader. Nothing changed.
    NotLeader {
        /// The last leader this node heard from, if any.
        leader: Option<NodeId>,
    },
    /// Leadership was lost while the change was pending: its outcome is unknown.
    LeadershipLost,
    /// A leadership transfer is in progress.
    LeadershipTransferInProgress,
    /// A user restore is being staged; retry shortly. Nothing changed.
    RestoreInProgress,
    /// Another configuration change is still uncommitted (or the leader has not committed an
    /// entry of its term yet); retry later.
    ConfigurationChangeInProgress,
    /// `prev_index` did not match the latest configuration's index.
    ConfigurationChanged {
        /// The latest configuration's index.
        latest: Index,
    },
    /// The resulting configuration would be invalid (for example, no voters).
    InvalidConfiguration(ConfigurationError),
    /// A new voter did not catch up in time; it stays a non-voter.
    PromotionTimeout {
        /// The server.
        id: NodeId,
    },
    /// The request could not start before its timeout: it waited in the submission queue or
    /// behind other configuration changes (hashicorp's enqueue timeout). Nothing changed.
    EnqueueTimeout,
    /// Too many configuration changes are already waiting behind the one in flight. Nothing
    /// changed.
    ChangeQueueFull,
    /// The node shut down before answering.
    Shutdown,
}

/// Why a user restore ([`Raft::restore`](crate::Raft::restore)) failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RestoreError {
    /// This node is not the leader. Nothing changed.
    NotLeader {
        /// The last leader this node heard from, if any.
        leader: Option<NodeId>,
    },
    /// Leadership was lost while the restore was pending: its outcome is unknown (its entry
    /// may still commit).
    LeadershipLost,
    /// A leadership transfer is in progress. Nothing changed.
    LeadershipTransferInProgress,
    /// Another restore is being staged. Nothing changed.
    RestoreInProgress,
    /// The snapshot store has no staging area (see
    /// [`SnapshotStore::staging`](ringraft_storage::SnapshotStore::staging)). Nothing changed.
    NotSupported,
    /// Reading the snapshot or writing it to the staging area failed. Nothing changed.
    Staging(String),
    /// The request could not enter the submission queue before its timeout.
    EnqueueTimeout,
    /// The node shut down before answering (the outcome is unknown).
    Shutdown,
}

/// Why a leadership transfer failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransferError {
    /// This node is not the leader.
    NotLeader {
        /// The last leader this node heard from, if any.
        leader: Option<NodeId>,
    },
    /// Leadership was lost (not through the transfer) while it was pending.
    LeadershipLost,
    /// Another transfer is in progress.
    LeadershipTransferInProgress,
    /// A user restore is being staged; retry shortly. Nothing changed.
    RestoreInProgress,
    /// The target is this node.
    TransferToSelf,
    /// The target is not in the configuration.
    UnknownServer {
        /// The id asked for.
        id: NodeId,
    },
    /// The target is not a voter.
    TargetNotVoter {
        /// The id asked for.
        id: NodeId,
    },
    /// There is no other voter to hand leadership to.
    NoTransferTarget,
    /// The transfer did not complete in time; this node still leads.
    Timeout,
    /// The transport reported the target unreachable before it was told to campaign; this
    /// node still leads (hashicorp fails the same way when its TimeoutNow RPC fails).
    TargetUnreachable {
        /// The target.
        id: NodeId,
    },
    /// The request could not enter the submission queue before its timeout.
    EnqueueTimeout,
    /// The node shut down before answering.
    Shutdown,
}

/// Why a user-requested snapshot failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TakeSnapshotError {
    /// The state machine applied nothing since the latest snapshot.
    NothingNewToSnapshot,
    /// The state machine failed to produce or persist its snapshot.
    Fsm(String),
    /// The snapshot store failed.
    Store(String),
    /// The request could not enter the submission queue before its timeout.
    EnqueueTimeout,
    /// The node shut down before answering.
    Shutdown,
}

/// Why `bootstrap_cluster` failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BootstrapClusterError {
    /// The node already has state (a term, log entries or a snapshot): bootstrap only
    /// initialises empty nodes. Safe to ignore when restarting a bootstrapped node.
    CantBootstrap,
    /// The local node is not a voter in the configuration.
    NotVoter {
        /// The local node.
        id: NodeId,
    },
    /// The configuration is invalid.
    InvalidConfiguration(ConfigurationError),
    /// Writing the initial state failed; the node has stopped.
    Storage(String),
    /// The request could not enter the submission queue before its timeout.
    EnqueueTimeout,
    /// The node shut down before answering.
    Shutdown,
}

/// Why [`Raft::new`](crate::Raft::new) failed.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is invalid.
    Config(ConfigError),
    /// Reading the log failed.
    Log(LogError),
    /// Reading the stable store failed.
    Stable(StableError),
    /// Listing or opening a snapshot failed.
    Snapshot(SnapshotError),
    /// The state machine could not restore the newest snapshot.
    Restore(String),
    /// The log starts after index 1 but no snapshot covers the entries before it.
    LogCompactedWithoutSnapshot {
        /// The log's first index.
        first_index: Index,
    },
    /// The recovered state is inconsistent.
    Core(CoreError),
    /// A thread could not be started (or pinned, or given its runtime).
    Thread(String),
    /// The transport could not be created (the TCP listener could not bind, say).
    Transport(String),
}

/// An invalid [`Config`](crate::Config) field: the same type the core uses for its own
/// settings, so one error names the field whichever layer found it.
pub use crate::core::ConfigError;

fn not_leader(f: &mut fmt::Formatter<'_>, leader: &Option<NodeId>) -> fmt::Result {
    match leader {
        Some(l) => write!(f, "not the leader (try {l})"),
        None => write!(f, "not the leader (none known)"),
    }
}

const LOST: &str = "leadership lost while the request was pending; outcome unknown";
const ENQUEUE: &str = "timed out waiting to enter the submission queue";
const SHUTDOWN: &str = "the node shut down";
const TRANSFER: &str = "leadership transfer in progress";
const RESTORING: &str = "a user restore is being staged";

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApplyError::NotLeader { leader } => not_leader(f, leader),
            ApplyError::LeadershipLost => f.write_str(LOST),
            ApplyError::LeadershipTransferInProgress => f.write_str(TRANSFER),
            ApplyError::RestoreInProgress => f.write_str(RESTORING),
            ApplyError::EmptyBatch => f.write_str("a batch needs at least one command"),
            ApplyError::EnqueueTimeout => f.write_str(ENQUEUE),
            ApplyError::Shutdown => f.write_str(SHUTDOWN),
        }
    }
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::NotLeader { leader } => not_leader(f, leader),
            ReadError::LeadershipLost => f.write_str("leadership lost before it was confirmed"),
            ReadError::LeaseReadDisabled => f.write_str("lease reads are disabled"),
            ReadError::EnqueueTimeout => f.write_str(ENQUEUE),
            ReadError::Shutdown => f.write_str(SHUTDOWN),
        }
    }
}

impl fmt::Display for MembershipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MembershipError::NotLeader { leader } => not_leader(f, leader),
            MembershipError::LeadershipLost => f.write_str(LOST),
            MembershipError::LeadershipTransferInProgress => f.write_str(TRANSFER),
            MembershipError::RestoreInProgress => f.write_str(RESTORING),
            MembershipError::ConfigurationChangeInProgress => {
                f.write_str("a configuration change is already in progress")
            }
            MembershipError::ConfigurationChanged { latest } => {
                write!(
                    f,
                    "configuration changed since prev_index (latest is {latest})"
                )
            }
            MembershipError::InvalidConfiguration(e) => write!(f, "{e}"),
            MembershipError::PromotionTimeout { id } => {
                write!(f, "{id} did not catch up in time to become a voter")
            }
            MembershipError::EnqueueTimeout => f.write_str(ENQUEUE),
            MembershipError::ChangeQueueFull => {
                f.write_str("too many configuration changes are waiting")
            }
            MembershipError::Shutdown => f.write_str(SHUTDOWN),
        }
    }
}

impl fmt::Display for TransferError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TransferError::NotLeader { leader } => not_leader(f, leader),
            TransferError::LeadershipLost => f.write_str(LOST),
            TransferError::LeadershipTransferInProgress => f.write_str(TRANSFER),
            TransferError::RestoreInProgress => f.write_str(RESTORING),
            TransferError::TransferToSelf => f.write_str("cannot transfer leadership to itself"),
            TransferError::UnknownServer { id } => write!(f, "{id} is not in the configuration"),
            TransferError::TargetNotVoter { id } => write!(f, "{id} is not a voter"),
            TransferError::NoTransferTarget => f.write_str("no other voter to transfer to"),
            TransferError::Timeout => f.write_str("leadership transfer timed out"),
            TransferError::TargetUnreachable { id } => {
                write!(f, "leadership transfer target {id} is unreachable")
            }
            TransferError::EnqueueTimeout => f.write_str(ENQUEUE),
            TransferError::Shutdown => f.write_str(SHUTDOWN),
        }
    }
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RestoreError::NotLeader { leader } => not_leader(f, leader),
            RestoreError::LeadershipLost => f.write_str(LOST),
            RestoreError::LeadershipTransferInProgress => f.write_str(TRANSFER),
            RestoreError::RestoreInProgress => f.write_str(RESTORING),
            RestoreError::NotSupported => {
                f.write_str("the snapshot store cannot stage restores (no staging area)")
            }
            RestoreError::Staging(e) => write!(f, "staging the restore failed: {e}"),
            RestoreError::EnqueueTimeout => f.write_str(ENQUEUE),
            RestoreError::Shutdown => f.write_str(SHUTDOWN),
        }
    }
}

impl std::error::Error for RestoreError {}

impl From<RequestError> for RestoreError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::NotLeader { leader } => RestoreError::NotLeader { leader },
            RequestError::TransferInProgress => RestoreError::LeadershipTransferInProgress,
            RequestError::RestoreInProgress => RestoreError::RestoreInProgress,
            RequestError::RestoreFailed => RestoreError::Staging("see the node's log".into()),
            _ => RestoreError::LeadershipLost,
        }
    }
}

impl fmt::Display for TakeSnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TakeSnapshotError::NothingNewToSnapshot => f.write_str("nothing new to snapshot"),
            TakeSnapshotError::Fsm(e) => write!(f, "state machine snapshot failed: {e}"),
            TakeSnapshotError::Store(e) => write!(f, "snapshot store failed: {e}"),
            TakeSnapshotError::EnqueueTimeout => f.write_str(ENQUEUE),
            TakeSnapshotError::Shutdown => f.write_str(SHUTDOWN),
        }
    }
}

impl fmt::Display for BootstrapClusterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootstrapClusterError::CantBootstrap => {
                f.write_str("cannot bootstrap a node with existing state")
            }
            BootstrapClusterError::NotVoter { id } => {
                write!(f, "local node {id} is not a voter in the configuration")
            }
            BootstrapClusterError::InvalidConfiguration(e) => write!(f, "{e}"),
            BootstrapClusterError::Storage(e) => write!(f, "writing the initial state: {e}"),
            BootstrapClusterError::EnqueueTimeout => f.write_str(ENQUEUE),
            BootstrapClusterError::Shutdown => f.write_str(SHUTDOWN),
        }
    }
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "{e}"),
            StartError::Log(e) => write!(f, "reading the log: {e}"),
            StartError::Stable(e) => write!(f, "reading the stable store: {e}"),
            StartError::Snapshot(e) => write!(f, "reading snapshots: {e}"),
            StartError::Restore(e) => write!(f, "restoring the newest snapshot: {e}"),
            StartError::LogCompactedWithoutSnapshot { first_index } => write!(
                f,
                "the log starts at {first_index} but no snapshot covers the entries before it"
            ),
            StartError::Core(e) => write!(f, "recovered state: {e}"),
            StartError::Thread(e) => write!(f, "starting a thread: {e}"),
            StartError::Transport(e) => write!(f, "starting the transport: {e}"),
        }
    }
}

impl std::error::Error for ApplyError {}
impl std::error::Error for ReadError {}
impl std::error::Error for MembershipError {}
impl std::error::Error for TransferError {}
impl std::error::Error for TakeSnapshotError {}
impl std::error::Error for BootstrapClusterError {}
impl std::error::Error for StartError {}

// ---- mapping the core's request errors ------------------------------------------------------
//
// Each request kind can only receive some of the core's errors; anything else would be a core
// bug, reported as the closest "outcome unknown" error rather than a panic.

impl From<RequestError> for ApplyError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::NotLeader { leader } => ApplyError::NotLeader { leader },
            RequestError::TransferInProgress => ApplyError::LeadershipTransferInProgress,
            RequestError::RestoreInProgress => ApplyError::RestoreInProgress,
            RequestError::EmptyProposal => ApplyError::EmptyBatch,
            _ => ApplyError::LeadershipLost,
        }
    }
}

impl From<RequestError> for ReadError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::NotLeader { leader } => ReadError::NotLeader { leader },
            RequestError::LeaseReadDisabled => ReadError::LeaseReadDisabled,
            _ => ReadError::LeadershipLost,
        }
    }
}

impl From<RequestError> for MembershipError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::NotLeader { leader } => MembershipError::NotLeader { leader },
            RequestError::TransferInProgress => MembershipError::LeadershipTransferInProgress,
            RequestError::RestoreInProgress => MembershipError::RestoreInProgress,
            RequestError::ConfigurationChangeInProgress => {
                MembershipError::ConfigurationChangeInProgress
            }
            RequestError::ConfigurationChanged { latest } => {
                MembershipError::ConfigurationChanged { latest }
            }
            RequestError::InvalidConfiguration(c) => MembershipError::InvalidConfiguration(c),
            RequestError::PromotionTimeout { id } => MembershipError::PromotionTimeout { id },
            _ => MembershipError::LeadershipLost,
        }
    }
}

impl From<RequestError> for TransferError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::NotLeader { leader } => TransferError::NotLeader { leader },
            RequestError::TransferInProgress => TransferError::LeadershipTransferInProgress,
            RequestError::RestoreInProgress => TransferError::RestoreInProgress,
            RequestError::TransferToSelf => TransferError::TransferToSelf,
            RequestError::UnknownServer { id } => TransferError::UnknownServer { id },
            RequestError::TargetNotVoter { id } => TransferError::TargetNotVoter { id },
            RequestError::NoTransferTarget => TransferError::NoTransferTarget,
            RequestError::TransferTimeout => TransferError::Timeout,
            RequestError::TransferTargetUnreachable { id } => {
                TransferError::TargetUnreachable { id }
            }
            _ => TransferError::LeadershipLost,
        }
    }
}

/// Why [`Raft::reload_config`](crate::Raft::reload_config) changed nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReloadConfigError {
    /// The merged configuration breaks a [`Config::validate`](crate::Config::validate) rule.
    Invalid(ConfigError),
    /// The request could not enter the submission queue before its timeout.
    EnqueueTimeout,
    /// The node shut down before answering.
    Shutdown,
}

impl fmt::Display for ReloadConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadConfigError::Invalid(e) => e.fmt(f),
            ReloadConfigError::EnqueueTimeout => f.write_str(ENQUEUE),
            ReloadConfigError::Shutdown => f.write_str(SHUTDOWN),
        }
    }
}

impl std::error::Error for ReloadConfigError {}
