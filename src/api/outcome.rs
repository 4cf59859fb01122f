//! What requests resolve with, and a node's role: plain types shared by the API and the node
//! runtime.

use bytes::Bytes;
use ringraft_storage::Index;

/// A node's role, as [`Raft::state`](crate::Raft::state) reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RaftState {
    /// Follows a leader, or waits for one.
    Follower,
    /// Asking for pre-votes (it has not changed its term).
    PreCandidate,
    /// Campaigning.
    Candidate,
    /// Leading.
    Leader,
    /// Stopped.
    Shutdown,
}

/// The outcome of [`Raft::apply`](crate::Raft::apply).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The entry's log index.
    pub index: Index,
    /// What [`Fsm::apply`](crate::Fsm::apply) returned for it.
    pub response: Bytes,
}

/// The outcome of [`Raft::apply_batch`](crate::Raft::apply_batch).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedBatch {
    /// The first entry's index.
    pub first: Index,
    /// The last entry's index.
    pub last: Index,
    /// [`Fsm::apply`](crate::Fsm::apply)'s response for each command, in order.
    pub responses: Vec<Bytes>,
}
