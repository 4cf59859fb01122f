//! The RPC messages of the Raft protocol as ringraft speaks it.
//!
//! Every message travels in an envelope ([`Message`]) naming sender, receiver and the sender's
//! current term; the receiver applies the term rules of Raft §5.1 before looking at the body.
//! Responses are messages too: nothing here assumes a request/response transport, which lets a
//! transport pipeline AppendEntries and deliver responses in any order.

use bytes::Bytes;
use ringraft_storage::{Entry, Index, LogId, NodeId, SnapshotMeta, Term};

/// A message from one node to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The sender.
    pub from: NodeId,
    /// The receiver.
    pub to: NodeId,
    /// The sender's current term (for a pre-vote request: the term it would campaign in).
    pub term: Term,
    /// What the message says.
    pub body: Body,
}

/// The body of a [`Message`].
///
/// Deliberately exhaustive: the consensus core matches every kind, so a new kind fails to
/// compile there instead of being silently ignored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// Leader → follower: append `entries` after `prev_log_id` (Raft §5.3).
    AppendEntries(AppendEntries),
    /// Follower → leader: the outcome of an AppendEntries.
    AppendEntriesResponse(AppendEntriesResponse),
    /// Leader → follower: "I am still leader"; carries a commit index the follower's log is
    /// known to match up to.
    Heartbeat {
        /// The commit index, capped at what the follower is known to hold.
        leader_commit: Index,
        /// The leader's heartbeat round, echoed back (for verify-leader, ReadIndex, leases).
        round: u64,
    },
    /// Follower → leader: acknowledges a heartbeat.
    HeartbeatResponse {
        /// The round of the heartbeat acknowledged.
        round: u64,
    },
    /// Candidate → voter: vote for me in `term` (Raft §5.2).
    RequestVote {
        /// The candidate's last log entry (Raft §5.4.1 up-to-date check).
        last_log_id: LogId,
        /// Set when campaigning because of a leadership transfer: voters grant even while they
        /// still hear from a live leader.
        leadership_transfer: bool,
    },
    /// Voter → candidate.
    RequestVoteResponse {
        /// Whether the vote was granted.
        granted: bool,
    },
    /// Pre-candidate → voter: would you vote for me in `term`? Touches no persistent state
    /// (thesis §9.6).
    PreVote {
        /// The pre-candidate's last log entry.
        last_log_id: LogId,
    },
    /// Voter → pre-candidate.
    PreVoteResponse {
        /// Whether the voter would grant.
        granted: bool,
    },
    /// Leader → transfer target: campaign now (thesis §3.10).
    TimeoutNow,
    /// Leader → follower: one chunk of a snapshot (Raft §7). Chunks carry offsets so a
    /// transport can stream them and the leader can resume after a lost chunk.
    InstallSnapshot(InstallSnapshot),
    /// Follower → leader: what the follower has of the snapshot.
    InstallSnapshotResponse(InstallSnapshotResponse),
    /// Leader → follower: a heartbeat that also says "this group is idle and every follower
    /// holds every entry: stop expecting heartbeats". Sent by leaders whose node hosts many
    /// groups and watches its peer nodes' liveness (quiescence, ARCHITECTURE §14); the follower
    /// pauses its election timer until any other message arrives or the leader's node goes
    /// silent. Not answered.
    Quiesce {
        /// The commit index, capped at what the follower is known to hold.
        leader_commit: Index,
        /// The leader's heartbeat round.
        round: u64,
    },
    /// Node → node: "this node is alive", between hosts of many groups that watch each other
    /// (quiescence, ARCHITECTURE §14). Sent outside any group; the host consumes it, no
    /// consensus core sees it. Not answered.
    NodePing,
    /// Node → node: "this node no longer runs the frame's group" (it was shut down there while
    /// the node stays up), so the group's followers on the receiving node stop waiting for a
    /// leader there (ARCHITECTURE §14). The host consumes it, no consensus core sees it. Not
    /// answered.
    GroupStopped,
}

/// One chunk of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallSnapshot {
    /// What the snapshot covers (index, term, configuration, size).
    pub meta: SnapshotMeta,
    /// Byte offset of `data` within the snapshot.
    pub offset: u64,
    /// The chunk's bytes.
    pub data: Bytes,
    /// True on the last chunk.
    pub done: bool,
    /// Stage only: the snapshot is a user restore's, for the follower to keep aside until the
    /// log entry that restores it is applied (see `EntryKind::Restore`), not to install.
    pub stage: bool,
    /// The leader's heartbeat round when this was sent, echoed back.
    pub round: u64,
}

/// The follower's answer to a snapshot chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallSnapshotResponse {
    /// The snapshot's last included entry.
    pub last: LogId,
    /// The offset the follower expects next (where the leader resumes after a loss).
    pub next_offset: u64,
    /// True once the follower installed the whole snapshot (or, with `stage`, staged it).
    pub done: bool,
    /// Answers a stage-only stream (see [`InstallSnapshot::stage`]).
    pub stage: bool,
    /// The round of the chunk answered.
    pub round: u64,
}

/// Leader → follower log replication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendEntries {
    /// The entry immediately before `entries`; the follower must hold it.
    pub prev_log_id: LogId,
    /// Entries to append, consecutive from `prev_log_id.index + 1`.
    pub entries: Vec<Entry>,
    /// The leader's commit index.
    pub leader_commit: Index,
    /// The leader's heartbeat round when this was sent, echoed back.
    pub round: u64,
}

/// Follower → leader: the outcome of an AppendEntries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendEntriesResponse {
    /// Success with the follower's match index, or a rejection with a conflict hint.
    pub result: AppendResult,
    /// The round of the request answered.
    pub round: u64,
}

/// The outcome of an AppendEntries at the follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppendResult {
    /// The follower's log now matches the leader's up to `match_index` (durably).
    Success {
        /// Last index known to match the leader's log.
        match_index: Index,
    },
    /// The follower does not hold `prev_log_id`; `hint` lets the leader skip back quickly.
    Conflict {
        /// The `prev_log_id.index` of the rejected request.
        rejected_prev_index: Index,
        /// Where the leader should retry.
        hint: ConflictHint,
    },
    /// The request's term was stale; the envelope carries the follower's newer term.
    StaleTerm,
}

/// The fast-backtracking hint of a rejected AppendEntries (thesis §5.3 optimisation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConflictHint {
    /// The follower's log ends before the requested previous entry.
    LogTooShort {
        /// The follower's last index.
        last_index: Index,
    },
    /// The follower holds a different term at the requested previous index.
    TermMismatch {
        /// The term the follower holds there.
        term: Term,
        /// The first index of that term in the follower's log.
        first_index: Index,
    },
    /// The follower matches `prev_log_id`, but the entries carry a user restore whose snapshot
    /// it has not staged: the leader must stage it there first.
    MissingRestore {
        /// The restore entry.
        entry: LogId,
    },
}

impl Body {
    /// A short name for logs and traces.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Body::AppendEntries(_) => "AppendEntries",
            Body::AppendEntriesResponse(_) => "AppendEntriesResponse",
            Body::Heartbeat { .. } => "Heartbeat",
            Body::HeartbeatResponse { .. } => "HeartbeatResponse",
            Body::RequestVote { .. } => "RequestVote",
            Body::RequestVoteResponse { .. } => "RequestVoteResponse",
            Body::PreVote { .. } => "PreVote",
            Body::PreVoteResponse { .. } => "PreVoteResponse",
            Body::TimeoutNow => "TimeoutNow",
            Body::InstallSnapshot(_) => "InstallSnapshot",
            Body::InstallSnapshotResponse(_) => "InstallSnapshotResponse",
            Body::Quiesce { .. } => "Quiesce",
            Body::NodePing => "NodePing",
            Body::GroupStopped => "GroupStopped",
        }
    }
}
