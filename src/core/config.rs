//! The consensus core's configuration.

use ringraft_storage::NodeId;
use std::fmt;
use std::time::Duration;

/// A bug the simulator can inject into the core, to prove that its checkers catch it.
///
/// Only compiled with the `sim` feature; production builds cannot enable a mutation.
#[cfg(feature = "sim")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mutation {
    /// A leader commits an entry of an earlier term by counting replicas (violates §5.4.2).
    CommitOldTermByCounting,
    /// A voter grants a second vote in a term it already voted in.
    GrantTwoVotesPerTerm,
    /// A follower takes the leader's commit index without the min: it caps it at its own last
    /// index instead of the last entry the AppendEntries matched, and heartbeats carry the
    /// leader's full commit index instead of `min(commit, match)`. A follower holding a stale
    /// suffix then commits it.
    FollowerCommitWithoutMin,
    /// A vote response leaves before the vote is durable.
    ReleaseVoteBeforePersist,
    /// Entries are handed to the state machine before they are committed.
    ApplyBeforeCommit,
    /// A leader starts a configuration change while another is still uncommitted.
    AllowTwoUncommittedConfigurations,
    /// A follower installing a snapshot keeps its log suffix even when its entry at the
    /// snapshot's index has another term (violates Figure 13 rule 7; hashicorp/raft#697).
    KeepConflictingSuffixOnInstall,
    /// A leader counts non-voters' acknowledgements toward the voters' commit quorum.
    CountNonvoterTowardCommit,
    /// A follower accepts a user-restore entry without having staged its snapshot (the
    /// hashicorp-style shortcut: data and entry travel separately).
    AcceptUnstagedRestore,
    /// A leader keeps serving lease reads after a leadership transfer sent `TimeoutNow`
    /// (the stale-read bug of an earlier version: the transfer's votes bypass the lease).
    LeaseAfterTimeoutNow,
    /// A heartbeat acknowledgement leaves before the term it carries is durable.
    HeartbeatAckBeforeTermDurable,
    /// An AppendEntries success leaves once the term is durable, without waiting for the
    /// entries it acknowledges.
    AppendAckBeforeEntriesDurable,
    /// A truncation of the log's suffix leaves the configurations it removed in the core's
    /// bookkeeping.
    KeepTruncatedConfigurations,
    /// A leader counts the round echoed by a `StaleTerm` answer (to a message of an older
    /// term) as an acknowledgement, even a round it never sent in its term (a bug the read
    /// checker found on 2026-12-05).
    CountStaleTermRound,
    /// In the node glue (not the core): a persist batch is reported durable to the core as
    /// soon as it is submitted to the log store, so acknowledgements and votes leave before
    /// the disk has them.
    GlueAckBeforeDurable,
    /// In the node glue: entries go to the state machine as soon as they are submitted to the
    /// log store, before they are committed.
    GlueApplyBeforeCommit,
    /// In the node glue: a read (ReadIndex, lease read, barrier) is answered once the core
    /// says it may be served, before the state machine has applied up to its index.
    GlueReplyBeforeApply,
    /// A quiesced follower ignores its host's report that the leader's node went silent
    /// (it waits for a message that never comes).
    QuiescedIgnoresSilence,
    /// In the node glue: a node never gives its host's campaign slot back, so the host's
    /// other groups wait for it forever (caught only with several groups per node).
    GlueKeepsCampaignSlot,
}

#[cfg(feature = "sim")]
impl Mutation {
    /// Every mutation, in a fixed order.
    pub const ALL: [Mutation; 19] = [
        Mutation::CommitOldTermByCounting,
        Mutation::GrantTwoVotesPerTerm,
        Mutation::FollowerCommitWithoutMin,
        Mutation::ReleaseVoteBeforePersist,
        Mutation::ApplyBeforeCommit,
        Mutation::AllowTwoUncommittedConfigurations,
        Mutation::KeepConflictingSuffixOnInstall,
        Mutation::CountNonvoterTowardCommit,
        Mutation::AcceptUnstagedRestore,
        Mutation::LeaseAfterTimeoutNow,
        Mutation::HeartbeatAckBeforeTermDurable,
        Mutation::AppendAckBeforeEntriesDurable,
        Mutation::KeepTruncatedConfigurations,
        Mutation::CountStaleTermRound,
        Mutation::GlueAckBeforeDurable,
        Mutation::GlueApplyBeforeCommit,
        Mutation::GlueReplyBeforeApply,
        Mutation::QuiescedIgnoresSilence,
        Mutation::GlueKeepsCampaignSlot,
    ];

    /// The mutation's command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Mutation::CommitOldTermByCounting => "commit-old-term",
            Mutation::GrantTwoVotesPerTerm => "two-votes",
            Mutation::FollowerCommitWithoutMin => "follower-commit-no-min",
            Mutation::ReleaseVoteBeforePersist => "vote-before-persist",
            Mutation::ApplyBeforeCommit => "apply-before-commit",
            Mutation::AllowTwoUncommittedConfigurations => "two-uncommitted-configs",
            Mutation::KeepConflictingSuffixOnInstall => "keep-conflicting-suffix",
            Mutation::CountNonvoterTowardCommit => "count-nonvoter",
            Mutation::AcceptUnstagedRestore => "accept-unstaged-restore",
            Mutation::LeaseAfterTimeoutNow => "lease-after-timeout-now",
            Mutation::HeartbeatAckBeforeTermDurable => "heartbeat-ack-before-term",
            Mutation::AppendAckBeforeEntriesDurable => "append-ack-before-entries",
            Mutation::KeepTruncatedConfigurations => "keep-truncated-configs",
            Mutation::CountStaleTermRound => "count-stale-term-round",
            Mutation::GlueAckBeforeDurable => "glue-ack-before-durable",
            Mutation::GlueApplyBeforeCommit => "glue-apply-before-commit",
            Mutation::GlueReplyBeforeApply => "glue-reply-before-apply",
            Mutation::QuiescedIgnoresSilence => "quiesced-ignores-silence",
            Mutation::GlueKeepsCampaignSlot => "glue-keeps-campaign-slot",
        }
    }

    /// The mutation with this command-line name.
    pub fn from_name(name: &str) -> Option<Mutation> {
        Mutation::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// Settings of one consensus core. Durations are converted to the core's nanosecond clock.
#[derive(Clone, Debug)]
pub struct CoreConfig {
    /// This node's id (never 0).
    pub id: NodeId,
    /// Base election timeout `T`: a follower that hears no leader for a random time in
    /// `[T, 2T)` campaigns; a voter that heard from a leader within `T` refuses votes.
    pub election_timeout: Duration,
    /// How often a leader starts a heartbeat round (heartbeats carry the commit index). With a
    /// lease of four intervals or more, a round skips followers that are receiving
    /// AppendEntries, for more rounds the longer the lease (`Core::busy_rounds`;
    /// docs/ARCHITECTURE.md §4, "Heartbeats of a busy leader").
    pub heartbeat_interval: Duration,
    /// A leader that has not heard from a quorum of voters within this time steps down.
    pub leader_lease_timeout: Duration,
    /// Campaign with a pre-vote round first (thesis §9.6). On by default.
    pub pre_vote: bool,
    /// Maximum entries in one AppendEntries.
    pub max_append_entries: usize,
    /// Maximum payload bytes in one AppendEntries (at least one entry is always sent).
    pub max_append_bytes: usize,
    /// Maximum AppendEntries in flight to one follower.
    pub max_inflight: usize,
    /// Allow lease-based reads (thesis §6.4.1). Off by default: it relies on bounded clock
    /// drift.
    pub lease_read: bool,
    /// How much a lease is shortened to allow for clock-rate differences between nodes.
    pub clock_drift_bound: Duration,
    /// Seed of the election-jitter PRNG. Give each node a different seed.
    pub seed: u64,
    /// Entries kept behind a snapshot when compacting, so slightly-behind followers catch up
    /// from the log instead of a snapshot (hashicorp's `TrailingLogs`).
    pub trailing_logs: u64,
    /// Largest InstallSnapshot chunk.
    pub snapshot_chunk_bytes: u64,
    /// When a configuration that removes or demotes this leader commits, report that the node
    /// should shut down (hashicorp's `ShutdownOnRemove`).
    pub shutdown_on_remove: bool,
    /// Catch-up before a new voter gets its vote (beyond hashicorp, see hashicorp/raft#404):
    /// `AddVoter` for a server that is not yet a voter first adds it as a non-voter and promotes
    /// it once its match index is within this many entries of the leader's last index. `None`
    /// promotes immediately (hashicorp's behaviour).
    pub promotion_lag_max: Option<u64>,
    /// Heartbeat rounds a catching-up server gets before its promotion fails with
    /// `PromotionTimeout`.
    pub promotion_rounds_max: u64,
    /// Quiesce when idle (ARCHITECTURE §14): a leader that has had nothing to do for an
    /// election timeout, with every follower holding every entry, sends `Quiesce` and stops
    /// heartbeating; its followers pause their election timers. Any request or message wakes
    /// the group. Only for nodes whose host tells them when a peer node goes silent
    /// (`Input::PeerUnreachable`): a quiesced follower learns of its leader's failure from
    /// nothing else. Off by default.
    pub quiesce: bool,
    /// A bug to inject (simulator only).
    #[cfg(feature = "sim")]
    pub mutation: Option<Mutation>,
}

impl CoreConfig {
    /// Defaults suited to a LAN: 1 s election timeout, 100 ms heartbeats, 500 ms lease.
    pub fn new(id: NodeId) -> CoreConfig {
        CoreConfig {
            id,
            election_timeout: Duration::from_millis(1000),
            heartbeat_interval: Duration::from_millis(100),
            leader_lease_timeout: Duration::from_millis(500),
            pre_vote: true,
            max_append_entries: 64,
            max_append_bytes: 1 << 20,
            max_inflight: 64,
            lease_read: false,
            clock_drift_bound: Duration::from_millis(50),
            seed: id.0,
            trailing_logs: 10_240,
            snapshot_chunk_bytes: 1 << 20,
            shutdown_on_remove: true,
            promotion_lag_max: None,
            promotion_rounds_max: 100,
            quiesce: false,
            #[cfg(feature = "sim")]
            mutation: None,
        }
    }

    /// Checks the settings; the error names the offending field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &'static str, reason: &'static str| Err(ConfigError { field, reason });
        if self.id.0 == 0 {
            return bad("id", "must not be 0");
        }
        if self.election_timeout < Duration::from_millis(1) {
            return bad("election_timeout", "must be at least 1 ms");
        }
        if self.heartbeat_interval.is_zero() || self.heartbeat_interval >= self.election_timeout {
            return bad(
                "heartbeat_interval",
                "must be non-zero and below election_timeout",
            );
        }
        if self.leader_lease_timeout < self.heartbeat_interval
            || self.leader_lease_timeout > self.election_timeout
        {
            return bad(
                "leader_lease_timeout",
                "must lie between heartbeat_interval and election_timeout",
            );
        }
        if self.max_append_entries == 0 {
            return bad("max_append_entries", "must be at least 1");
        }
        if self.max_append_bytes == 0 {
            return bad("max_append_bytes", "must be at least 1");
        }
        if self.max_inflight == 0 {
            return bad("max_inflight", "must be at least 1");
        }
        if self.snapshot_chunk_bytes == 0 {
            return bad("snapshot_chunk_bytes", "must be at least 1");
        }
        if self.promotion_lag_max.is_some() && self.promotion_rounds_max == 0 {
            return bad(
                "promotion_rounds_max",
                "must be at least 1 when promotion_lag_max is set",
            );
        }
        if self.clock_drift_bound >= self.election_timeout {
            return bad("clock_drift_bound", "must be below election_timeout");
        }
        Ok(())
    }
}

/// An invalid [`CoreConfig`] field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The field's name.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid config: {} {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_each_rule_names_its_field() {
        let ok = CoreConfig::new(NodeId(1));
        assert_eq!(ok.validate(), Ok(()));
        type Breaker = Box<dyn Fn(&mut CoreConfig)>;
        let cases: Vec<(&str, Breaker)> = vec![
            ("id", Box::new(|c| c.id = NodeId(0))),
            (
                "election_timeout",
                Box::new(|c| c.election_timeout = Duration::ZERO),
            ),
            (
                "heartbeat_interval",
                Box::new(|c| c.heartbeat_interval = c.election_timeout),
            ),
            (
                "leader_lease_timeout",
                Box::new(|c| c.leader_lease_timeout = Duration::from_secs(9)),
            ),
            ("max_append_entries", Box::new(|c| c.max_append_entries = 0)),
            ("max_append_bytes", Box::new(|c| c.max_append_bytes = 0)),
            ("max_inflight", Box::new(|c| c.max_inflight = 0)),
            (
                "clock_drift_bound",
                Box::new(|c| c.clock_drift_bound = Duration::from_secs(5)),
            ),
        ];
        for (field, mutate) in cases {
            let mut c = ok.clone();
            mutate(&mut c);
            assert_eq!(c.validate().map_err(|e| e.field), Err(field));
        }
    }
}
