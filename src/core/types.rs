//! The data that crosses the core boundary: inputs, effects, replies and events.

use bytes::Bytes;
use ringraft_net::message::Message;
pub use ringraft_storage::HardState;
use ringraft_storage::{Entry, Index, LogId, NodeId, SnapshotMeta, Term};
use std::fmt;

/// Monotonic time in nanoseconds, supplied by the caller of `step`. The core never reads a
/// clock.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub u64);

impl Time {
    /// `self + nanos`, saturating.
    pub fn plus_nanos(self, nanos: u64) -> Time {
        Time(self.0.saturating_add(nanos))
    }

    /// Nanoseconds since `earlier` (0 if `earlier` is later).
    pub fn nanos_since(self, earlier: Time) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

/// Identifies a client request so its reply can be routed; chosen by the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Token(pub u64);

/// What a node recovered from its stores when it starts.
#[derive(Clone, Debug, Default)]
pub struct RecoveredState {
    /// Term, vote and commit index.
    pub hard_state: HardState,
    /// The newest snapshot, already restored into the state machine (entries up to its last
    /// index count as applied).
    pub snapshot: Option<SnapshotMeta>,
    /// The id just before the first entry in `entries` (0/0 for a log that starts at 1).
    pub log_prev: LogId,
    /// The log, consecutive from `log_prev.index + 1`.
    pub entries: Vec<Entry>,
    /// User restores staged in the snapshot store's staging area (their `last` is the id of
    /// the `EntryKind::Restore` entry that restores them).
    pub staged_restores: Vec<SnapshotMeta>,
}

/// Something that happened to the core.
#[derive(Clone, Debug)]
pub enum Input {
    /// Time passed; timers may fire.
    Tick,
    /// A message from another node.
    Message(Message),
    /// Append these commands (as one batch) to the log. Replied to when committed.
    Propose {
        /// The reply's token.
        token: Token,
        /// The commands, in order.
        commands: Vec<Bytes>,
        /// Per-entry extensions (hashicorp's `Log.Extensions`): `extensions[i]` travels with
        /// `commands[i]` to every log and state machine. Empty for none; commands past its end
        /// get none; more extensions than commands is refused (`TooManyExtensions`).
        extensions: Vec<Bytes>,
    },
    /// Append a barrier entry; replied to when it commits.
    Barrier {
        /// The reply's token.
        token: Token,
    },
    /// Confirm that this node is still leader with one quorum round of heartbeats.
    VerifyLeader {
        /// The reply's token.
        token: Token,
    },
    /// A linearizable read (thesis §6.4): replied to with an index; the caller reads its state
    /// machine once it has applied that index.
    ReadIndex {
        /// The reply's token.
        token: Token,
    },
    /// A lease-based read (thesis §6.4.1): answered without a quorum round while the lease
    /// holds, else as a ReadIndex. A leader whose transfer sent `TimeoutNow` has no lease for
    /// the rest of its term (see `core::transfer`).
    LeaseRead {
        /// The reply's token.
        token: Token,
    },
    /// Change the membership (leader only); replied to when the configuration commits.
    ChangeMembership {
        /// The reply's token.
        token: Token,
        /// What to change.
        change: MembershipChange,
        /// If set, fail unless the latest configuration is at this index.
        prev_index: Option<Index>,
    },
    /// Hand leadership to `target`, or to the most up-to-date voter (leader only).
    TransferLeadership {
        /// The reply's token.
        token: Token,
        /// The target, if chosen by the caller.
        target: Option<NodeId>,
    },
    /// The state machine saved a snapshot covering every entry up to `meta.last`; the log may
    /// be compacted behind it.
    SnapshotTaken {
        /// What the snapshot covers.
        meta: SnapshotMeta,
    },
    /// A chunk of the local snapshot `snapshot`, read for `peer` (answers
    /// [`Effect::ReadSnapshotChunk`]).
    SnapshotChunkRead {
        /// The follower it is for.
        peer: NodeId,
        /// The snapshot's last entry.
        snapshot: LogId,
        /// The chunk's offset.
        offset: u64,
        /// The bytes.
        data: Bytes,
        /// True if the chunk ends the snapshot.
        done: bool,
    },
    /// A received snapshot chunk is stored (answers [`Effect::WriteSnapshotChunk`]); when
    /// `done`, the whole snapshot is durable in the snapshot store.
    SnapshotChunkWritten {
        /// The snapshot's last entry.
        snapshot: LogId,
        /// Whether it was a restore being staged (as in its `WriteSnapshotChunk`): a staged
        /// restore and the leader's own snapshot may end at the same entry.
        stage: bool,
        /// The offset after the chunk.
        next_offset: u64,
        /// True once the snapshot is complete and durable.
        done: bool,
    },
    /// Replace the cluster's state with an external snapshot (hashicorp's `Restore`; leader
    /// only). The core reserves the id of the restore entry and answers with
    /// [`Effect::StageRestore`]; proposals, barriers, configuration changes and transfers are
    /// refused with [`RequestError::RestoreInProgress`] until the entry is appended. Replied to
    /// with `Outcome::Committed` once the entry commits.
    UserRestore {
        /// The reply's token.
        token: Token,
    },
    /// The snapshot asked for by [`Effect::StageRestore`] is durable in the staging area,
    /// under `meta` (its `id` and `size` filled in).
    RestoreStaged {
        /// The restore's token.
        token: Token,
        /// The staged snapshot.
        meta: SnapshotMeta,
    },
    /// Staging the restore's snapshot failed; the restore is abandoned (replied to with
    /// [`RequestError::RestoreFailed`]) and nothing changed.
    RestoreStageFailed {
        /// The restore's token.
        token: Token,
    },
    /// New timing settings for the running node (hashicorp's `ReloadConfig`). Applied only if
    /// the resulting configuration is valid (otherwise reported as `InvalidInput` and
    /// ignored); timers are re-armed at once.
    Reconfigure(Timing),
    /// The transport cannot reach `peer` right now (a failed connection or send). A
    /// leadership transfer to it that has not sent `TimeoutNow` yet fails at once with
    /// `TransferTargetUnreachable` instead of waiting for its timeout.
    PeerUnreachable {
        /// The peer.
        peer: NodeId,
    },
    /// Every persist batch up to `seq` is durable.
    Persisted {
        /// The highest durable batch.
        seq: u64,
    },
    /// The state machine has applied every entry up to `index`.
    Applied {
        /// The highest applied index.
        index: Index,
    },
}

/// The settings of a running core that [`Input::Reconfigure`] may change.
///
/// Lease reads assume that no voter grants a vote within the *leader's* `election_timeout` of
/// hearing from it, so the leader's timeout must never exceed any voter's. A leader whose
/// election timeout changes counts only heartbeat rounds sent after the change toward its
/// lease (votes granted before were timed with the old timeout), so a reload applied to every
/// node at once is safe. Reloading nodes one by one, shorten the timeout on the leader first
/// and lengthen it there last, or disable lease reads meanwhile (leadership may move, so that
/// is the simple, safe choice).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// See [`CoreConfig::election_timeout`](crate::core::CoreConfig::election_timeout).
    pub election_timeout: std::time::Duration,
    /// See [`CoreConfig::heartbeat_interval`](crate::core::CoreConfig::heartbeat_interval).
    pub heartbeat_interval: std::time::Duration,
    /// See [`CoreConfig::leader_lease_timeout`](crate::core::CoreConfig::leader_lease_timeout).
    pub leader_lease_timeout: std::time::Duration,
    /// See [`CoreConfig::trailing_logs`](crate::core::CoreConfig::trailing_logs).
    pub trailing_logs: u64,
}

/// Durable writes, performed in this order: truncate the log's suffix, append the entries
/// (durably, together with `commit` if set), then write the hard state. Batches must be performed in `seq` order; report
/// `Input::Persisted { seq }` when a batch (and every earlier one) is durable.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PersistBatch {
    /// The batch's sequence number (starting at 1, consecutive).
    pub seq: u64,
    /// Remove every entry at or after this index first.
    pub truncate_from: Option<Index>,
    /// Then append these entries.
    pub entries: Vec<Entry>,
    /// A commit index to record with the entries (cheap: the log store keeps it in the same
    /// write). Never above the last entry once this batch is applied. On recovery the larger of
    /// this and the hard state's commit is the node's commit index.
    pub commit: Option<Index>,
    /// Then write this hard state (only when the term or vote changed).
    pub hard_state: Option<HardState>,
    /// Finally drop every entry up to and including this one (log compaction behind a
    /// snapshot, or the log replaced by an installed snapshot). The store's log then starts
    /// after it, even if it held fewer entries.
    pub compact_through: Option<LogId>,
}

impl PersistBatch {
    /// True if the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.truncate_from.is_none()
            && self.entries.is_empty()
            && self.hard_state.is_none()
            && self.commit.is_none()
            && self.compact_through.is_none()
    }
}

/// What the core asks its caller to do. Perform effects in the order returned.
#[derive(Clone, Debug)]
pub enum Effect {
    /// Write to stable storage (see [`PersistBatch`]).
    Persist(PersistBatch),
    /// Send a message. The core releases a message only once everything it depends on is
    /// durable, so the caller may send it at once.
    Send(Message),
    /// Apply these committed entries to the state machine, in order, then report
    /// `Input::Applied`. An `EntryKind::Restore` entry replaces the state machine's state with
    /// the staged snapshot whose `last` is the entry's id (the core guarantees it is staged). A proposal's `Reply` with `Outcome::Committed` comes no later than the
    /// `Apply` that carries its entries, so the glue can register a waiter for the state
    /// machine's response before the entries reach the state machine.
    Apply {
        /// Consecutive committed entries.
        entries: Vec<Entry>,
    },
    /// Read up to `max_bytes` of the local snapshot `meta` at `offset` and report it with
    /// `Input::SnapshotChunkRead` (the leader streams it to `peer`).
    ReadSnapshotChunk {
        /// The follower it is for.
        peer: NodeId,
        /// The snapshot.
        meta: SnapshotMeta,
        /// Read the staged user restore `meta.last` from the staging area, not a snapshot.
        stage: bool,
        /// Where to read.
        offset: u64,
        /// How much at most.
        max_bytes: u64,
    },
    /// Store a received snapshot chunk (offset 0 starts a new snapshot, discarding any partial
    /// one); report with `Input::SnapshotChunkWritten`. When `done`, make the snapshot durable
    /// first.
    WriteSnapshotChunk {
        /// The snapshot being received.
        meta: SnapshotMeta,
        /// The chunk's offset.
        offset: u64,
        /// The bytes.
        data: Bytes,
        /// True on the last chunk.
        done: bool,
        /// A user restore to keep in the staging area (under `meta.last`), not to install.
        stage: bool,
    },
    /// Store the caller's external snapshot durably in the staging area under `meta` (fill in
    /// `id` and `size`), then step [`Input::RestoreStaged`] (or [`Input::RestoreStageFailed`]).
    StageRestore {
        /// The restore's token.
        token: Token,
        /// Its metadata: `last` is the id the restore entry will have.
        meta: SnapshotMeta,
    },
    /// Staged user restores up to `through` are no longer needed (a snapshot covers them, or
    /// their entry was truncated away): delete them from the staging area.
    DropStagedRestores {
        /// Drop every staged restore whose `last.index` is at or below this.
        through: Index,
    },
    /// Replace the state machine's state with the stored snapshot `meta` (received from the
    /// leader). Entries up to `meta.last` count as applied.
    RestoreSnapshot {
        /// The snapshot to restore.
        meta: SnapshotMeta,
    },
    /// Answer a request.
    Reply {
        /// The request's token.
        token: Token,
        /// Its outcome.
        result: Result<Outcome, RequestError>,
    },
    /// Something observable happened.
    Event(Event),
}

/// A single-server membership change (hashicorp semantics).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    /// Add a voter, update a voter's address, or promote a non-voter.
    AddVoter {
        /// The server.
        id: NodeId,
        /// Its address.
        address: String,
    },
    /// Add a non-voter, or update an existing server's address (never demotes).
    AddNonvoter {
        /// The server.
        id: NodeId,
        /// Its address.
        address: String,
    },
    /// Make a voter a non-voter.
    DemoteVoter {
        /// The server.
        id: NodeId,
    },
    /// Remove a server.
    RemoveServer {
        /// The server.
        id: NodeId,
    },
}

/// A successful request outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The proposal or barrier committed at these indexes (all in `term`).
    Committed {
        /// The entries' term.
        term: Term,
        /// The first entry's index.
        first: Index,
        /// The last entry's index.
        last: Index,
    },
    /// A quorum confirmed this node's leadership after the request arrived.
    LeaderVerified,
    /// A read may be served once the state machine has applied `index`.
    ReadReady {
        /// The read index.
        index: Index,
    },
    /// Leadership passed to another node.
    LeadershipTransferred,
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestError {
    /// This node is not the leader; `leader` is the last leader it heard from, if any. The
    /// request certainly did not take effect.
    NotLeader {
        /// A hint where to retry.
        leader: Option<NodeId>,
    },
    /// Leadership was lost while the request was pending: its outcome is unknown (a proposal
    /// may still commit).
    LeadershipLost,
    /// Lease reads are disabled in the configuration.
    LeaseReadDisabled,
    /// The proposal had no commands.
    EmptyProposal,
    /// The proposal had more extensions than commands.
    TooManyExtensions,
    /// A leadership transfer is in progress: proposals, barriers and configuration changes
    /// wait until it ends. The request did not take effect.
    TransferInProgress,
    /// A user restore is being staged: proposals, barriers, configuration changes and
    /// transfers wait until its entry is appended. The request did not take effect.
    RestoreInProgress,
    /// Staging the restore's snapshot failed; nothing changed.
    RestoreFailed,
    /// A configuration change is still uncommitted (or this leader has not yet committed an
    /// entry of its term); only one may be in flight. The request did not take effect.
    ConfigurationChangeInProgress,
    /// `prev_index` did not match the latest configuration's index.
    ConfigurationChanged {
        /// The latest configuration's index.
        latest: Index,
    },
    /// The resulting configuration would be invalid.
    InvalidConfiguration(ringraft_storage::ConfigurationError),
    /// A new voter did not catch up within the allowed heartbeat rounds; it stays a non-voter.
    PromotionTimeout {
        /// The server that lagged.
        id: NodeId,
    },
    /// Leadership transfer to this node itself.
    TransferToSelf,
    /// The transfer target is not in the configuration.
    UnknownServer {
        /// The id asked for.
        id: NodeId,
    },
    /// The transfer target is not a voter.
    TargetNotVoter {
        /// The id asked for.
        id: NodeId,
    },
    /// There is no other voter to transfer leadership to.
    NoTransferTarget,
    /// The transfer did not complete within twice the election timeout; this node still leads.
    TransferTimeout,
    /// The transfer's target cannot be reached (reported by the transport before it was told
    /// to campaign); this node still leads.
    TransferTargetUnreachable {
        /// The target.
        id: NodeId,
    },
    /// A snapshot was asked for at an index the state machine has not applied, or below the
    /// latest snapshot.
    SnapshotNotApplied,
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::NotLeader { leader: Some(l) } => write!(f, "not the leader (try {l})"),
            RequestError::NotLeader { leader: None } => write!(f, "not the leader (none known)"),
            RequestError::LeadershipLost => {
                write!(
                    f,
                    "leadership lost while the request was pending; outcome unknown"
                )
            }
            RequestError::LeaseReadDisabled => write!(f, "lease reads are disabled"),
            RequestError::EmptyProposal => write!(f, "a proposal needs at least one command"),
            RequestError::TooManyExtensions => {
                write!(f, "a proposal has more extensions than commands")
            }
            RequestError::TransferInProgress => write!(f, "leadership transfer in progress"),
            RequestError::RestoreInProgress => write!(f, "a user restore is being staged"),
            RequestError::RestoreFailed => {
                write!(
                    f,
                    "the restore's snapshot could not be staged; nothing changed"
                )
            }
            RequestError::ConfigurationChangeInProgress => {
                write!(f, "a configuration change is already in progress")
            }
            RequestError::ConfigurationChanged { latest } => {
                write!(
                    f,
                    "configuration changed since prev_index (latest is {latest})"
                )
            }
            RequestError::InvalidConfiguration(e) => write!(f, "{e}"),
            RequestError::PromotionTimeout { id } => {
                write!(f, "{id} did not catch up in time to be promoted to voter")
            }
            RequestError::TransferToSelf => write!(f, "cannot transfer leadership to itself"),
            RequestError::UnknownServer { id } => write!(f, "{id} is not in the configuration"),
            RequestError::TargetNotVoter { id } => {
                write!(f, "{id} is not a voter and cannot lead")
            }
            RequestError::NoTransferTarget => write!(f, "no other voter to transfer to"),
            RequestError::TransferTimeout => write!(f, "leadership transfer timed out"),
            RequestError::TransferTargetUnreachable { id } => {
                write!(f, "leadership transfer target {id} is unreachable")
            }
            RequestError::SnapshotNotApplied => {
                write!(
                    f,
                    "snapshot index is not applied or not above the latest snapshot"
                )
            }
        }
    }
}

impl std::error::Error for RequestError {}

/// A node's role.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asking for pre-votes; has not changed its term.
    PreCandidate,
    /// Asking for votes in its term.
    Candidate,
    /// Leads its term.
    Leader,
}

/// Observable happenings.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The role or term changed.
    RoleChanged {
        /// The new role.
        role: Role,
        /// The current term.
        term: Term,
    },
    /// The known leader changed.
    LeaderChanged {
        /// The new leader, if known.
        leader: Option<NodeId>,
        /// The current term.
        term: Term,
    },
    /// A configuration that removes or demotes this node committed while it led: it stepped
    /// down, and should shut down if `shutdown_on_remove` is set.
    RemovedFromConfiguration {
        /// True if the configuration says to shut down.
        shutdown: bool,
    },
    /// A message or input was rejected as invalid (it is otherwise ignored).
    InvalidInput {
        /// The sender, for messages.
        from: Option<NodeId>,
        /// Why.
        reason: InvalidInput,
    },
}

/// Why an input was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum InvalidInput {
    /// The message was addressed to another node.
    WrongRecipient {
        /// The addressee.
        to: NodeId,
    },
    /// A response came from a node this leader does not replicate to.
    UnknownPeer,
    /// AppendEntries entries were not consecutive after `prev_log_id`, or had terms out of
    /// order.
    MalformedEntries,
    /// A configuration entry could not be decoded.
    BadConfigurationEntry,
    /// AppendEntries contradicted an entry this node knows is committed.
    ConflictsWithCommitted {
        /// The index of the contradicted entry.
        index: Index,
    },
    /// A follower claimed to match an index beyond the leader's log.
    MatchBeyondLog {
        /// The claimed index.
        claimed: Index,
    },
    /// The caller reported applying beyond what the core asked it to apply.
    AppliedBeyondApply {
        /// The reported index.
        reported: Index,
    },
    /// A snapshot was reported at an index not applied, not above the newest snapshot, or with
    /// a term that contradicts the log.
    BadSnapshot {
        /// The snapshot's last entry as reported.
        last: LogId,
    },
    /// A reconfiguration would make the settings invalid.
    BadTiming(crate::core::ConfigError),
    /// A persist acknowledgement named a batch never issued.
    PersistedUnknownBatch {
        /// The reported sequence number.
        seq: u64,
    },
}
