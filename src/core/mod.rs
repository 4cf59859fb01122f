//! The sans-IO consensus core (ARCHITECTURE §4).
//!
//! ```text
//!   Input ──► Core::step(now, input) ──► (state changes) ──► Core::take_effects() ──► [Effect]
//! ```
//!
//! The core is a deterministic state machine. It does no I/O, reads no clock and draws no OS
//! randomness: time arrives as the `now` argument, election jitter comes from a PRNG seeded by
//! [`CoreConfig::seed`], and everything the outside world must do comes back as [`Effect`]s.
//!
//! Ordering contract (what makes the glue impossible to get wrong):
//! - `Effect::Persist` batches carry consecutive sequence numbers and must be made durable in
//!   that order; report each with `Input::Persisted`.
//! - A message that may only leave once something is durable (a vote, an append
//!   acknowledgement, any answer after a term change) is held inside the core and released as an
//!   `Effect::Send` only after the matching `Input::Persisted`. Every `Send` may go out at once.
//! - The leader's own log write runs in parallel with replication (thesis §10.2.1): its
//!   AppendEntries leave before its `Persist` completes, and it counts itself toward the commit
//!   quorum only up to its durable index.
//! - `take_effects` also closes a batch: proposals and reads that arrived in several `step`s
//!   since the last call share one persist batch, one AppendEntries per follower and one
//!   heartbeat round. Call it once per event-loop turn.
//!
//! Role logic lives in [`election`](self) (pre-vote, votes, role changes), `follower`
//! (AppendEntries and heartbeats received) and `leader` (replication, commit, reads);
//! `membership`, `transfer`, `snapshot` (compaction, InstallSnapshot) and `restore` (user
//! restore: the external snapshot is staged before its log entry, and followers stage it before
//! they accept that entry) hold the Consensus core II operations. `durability` is the gate
//! described above (persist batches, messages held until durable), `bootstrap` the bootstrap
//! and offline recovery, `errors` the start and bootstrap errors, `invariants` what tests and
//! the simulator check after every step.

mod bootstrap;
mod config;
mod durability;
mod election;
mod errors;
mod follower;
mod invariants;
mod leader;
mod log;
mod membership;
mod progress;
mod quiesce;
mod restore;
mod rng;
mod snapshot;
mod transfer;
mod types;

pub use bootstrap::has_existing_state;
#[cfg(feature = "sim")]
pub use config::Mutation;
pub use config::{ConfigError, CoreConfig};
pub use errors::{BootstrapError, CoreError};
pub use log::RaftLog;
pub use progress::{majority, quorum_value, quorum_value_of, Progress, ReplicationState};
pub use rng::Rng;
pub use types::{
    Effect, Event, HardState, Input, InvalidInput, MembershipChange, Outcome, PersistBatch,
    RecoveredState, RequestError, Role, Time, Timing, Token,
};

use leader::LeaderState;
use ringraft_net::message::{Body, Message};
use ringraft_storage::{
    Configuration, ConfigurationError, Entry, EntryKind, Index, LogId, NodeId, SnapshotMeta, Term,
};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;

pub(crate) enum RoleState {
    Follower,
    PreCandidate { granted: BTreeSet<NodeId> },
    Candidate { granted: BTreeSet<NodeId> },
    Leader(Box<LeaderState>),
}

/// One node's consensus state machine. See the module docs.
pub struct Core {
    config: CoreConfig,
    rng: Rng,
    now: Time,
    term: Term,
    vote: Option<NodeId>,
    log: RaftLog,
    commit: Index,
    applied: Index,
    apply_requested: Index,
    role: RoleState,
    leader: Option<NodeId>,
    election_deadline: Time,
    /// When a leader (or a candidate we voted for) last showed itself alive. A voter refuses
    /// votes within `election_timeout` of it (leader stickiness, thesis §9.6).
    last_leader_contact: Time,
    /// Configuration entries in the log, in order; the first may come from a snapshot.
    configs: Vec<(Index, Configuration)>,
    /// The latest configuration's voters (derived from `configs`).
    voters: Vec<NodeId>,
    /// The newest snapshot of the state machine.
    snapshot: Option<SnapshotMeta>,
    /// A snapshot being received from the leader. Boxed: rare, and 112 bytes inline in each of
    /// the tens of thousands of replicas a `MultiRaft` host may hold.
    receiving: Option<Box<snapshot::Receiving>>,
    /// User restores staged here (keyed by their restore entry's id) and not yet covered by a
    /// snapshot: this node may accept, apply and stream those entries.
    restores: BTreeMap<LogId, SnapshotMeta>,
    staged: PersistBatch,
    /// How many entries the last persist batch had: room for as many is reserved when a
    /// leader stages its next batch's first entry (`stage_entry`).
    staged_hint: u32,
    hard_state_dirty: bool,
    commit_recorded: Index,
    last_issued_seq: u64,
    persisted_seq: u64,
    held: VecDeque<(u64, Message)>,
    /// The latest persist batch that wrote the hard state.
    hard_state_seq: u64,
    /// A single-voter candidate becomes leader once this persist batch (its vote) is durable.
    win_after_seq: Option<u64>,
    effects: Vec<Effect>,
    /// Peers the transport reported unreachable and not heard from since (leadership
    /// transfers to them fail fast).
    unreachable: BTreeSet<NodeId>,
    /// Quiesced (see `quiesce`): no timer runs.
    quiesced: bool,
    /// When the last request or message other than a heartbeat acknowledgement arrived.
    active_at: Time,
}

impl Core {
    /// A core starting at time `now` from recovered state.
    ///
    /// A restarted node refuses to vote for one election timeout (it may have forgotten that it
    /// heard from a live leader), which keeps leader leases safe across restarts.
    pub fn new(config: CoreConfig, state: RecoveredState, now: Time) -> Result<Core, CoreError> {
        config.validate().map_err(CoreError::Config)?;
        let mut expected = state.log_prev.index.next();
        let mut configs = Vec::new();
        let snapshot_index = state.snapshot.as_ref().map_or(Index(0), |s| s.last.index);
        if let Some(s) = &state.snapshot {
            if state.log_prev.index > s.last.index {
                return Err(CoreError::LogBeyondSnapshot {
                    log_prev: state.log_prev,
                    snapshot: s.last,
                });
            }
            configs.push((s.configuration_index, s.configuration.clone()));
        }
        for entry in &state.entries {
            if entry.id.index != expected {
                return Err(CoreError::RecoveredLogNotConsecutive {
                    expected,
                    found: entry.id,
                });
            }
            expected = expected.next();
        }
        let recovered_last = state.log_prev.index.plus(state.entries.len() as u64);
        let mut log = RaftLog::new(state.log_prev, state.entries);
        if let Some(s) = &state.snapshot {
            // Entries the snapshot covers are committed; a log that disagrees with it is stale.
            log.compact_through(s.last);
        }
        // The configurations: the snapshot's, then every configuration entry of the log that
        // survived the compaction above (a stale log discarded there must not leave its
        // configurations behind; the simulator's bookkeeping checker found that).
        for entry in log.iter() {
            let after_base = configs.last().is_none_or(|(i, _)| entry.id.index > *i);
            if entry.kind == EntryKind::Configuration && after_base {
                let c = Configuration::decode(&entry.data).map_err(|error| {
                    CoreError::RecoveredConfiguration {
                        index: entry.id.index,
                        error,
                    }
                })?;
                configs.push((entry.id.index, c));
            }
        }
        let commit = state
            .hard_state
            .commit
            .min(log.last_index())
            .max(log.prev().index);
        let applied = snapshot_index.max(state.log_prev.index);
        let staged_count = state.staged_restores.len();
        let restores: BTreeMap<LogId, SnapshotMeta> = state
            .staged_restores
            .into_iter()
            .filter(|m| m.last.index > applied)
            .map(|m| (m.last, m))
            .collect();
        let covered_restores = restores.len() < staged_count;
        let mut core = Core {
            rng: Rng::new(config.seed),
            config,
            now,
            term: state.hard_state.term,
            vote: state.hard_state.vote,
            commit,
            applied,
            apply_requested: applied,
            commit_recorded: commit,
            log,
            role: RoleState::Follower,
            leader: None,
            election_deadline: now,
            last_leader_contact: now,
            configs,
            voters: Vec::new(),
            snapshot: state.snapshot,
            receiving: None,
            restores,
            staged: PersistBatch::default(),
            staged_hint: 0,
            hard_state_dirty: false,
            last_issued_seq: 0,
            persisted_seq: 0,
            held: VecDeque::new(),
            hard_state_seq: 0,
            win_after_seq: None,
            effects: Vec::new(),
            unreachable: BTreeSet::new(),
            quiesced: false,
            active_at: now,
        };
        core.configs_changed();
        core.reset_election_deadline();
        if core.log.prev().index > state.log_prev.index {
            // The snapshot is durable but the log store was not yet compacted behind it (a
            // crash came in between): make the store agree before anything is appended. A
            // store log that disagrees with the snapshot was discarded above, entries past the
            // snapshot's index included (Figure 13 rule 7): the store drops them too, or its
            // next append there would not follow its last entry.
            if recovered_last > core.log.last_index() {
                core.staged.truncate_from = Some(core.log.last_index().next());
            }
            core.staged.compact_through = Some(core.log.prev());
            core.flush_persist();
        }
        if covered_restores {
            // Staged restores a snapshot or compaction covers are no longer needed.
            core.emit(Effect::DropStagedRestores { through: applied });
        }
        core.emit_apply();
        Ok(core)
    }

    /// Feeds one input at time `now` (which must not go backwards; an earlier time is treated
    /// as the latest time seen).
    pub fn step(&mut self, now: Time, input: Input) {
        self.now = self.now.max(now);
        let activity = Core::activity_of(&input);
        match input {
            Input::Tick => self.tick(),
            Input::Message(message) => self.handle_message(message),
            Input::Propose {
                token,
                commands,
                extensions,
            } => self.propose(token, commands, extensions),
            Input::Barrier { token } => self.propose_barrier(token),
            Input::VerifyLeader { token } => self.verify_leader(token),
            Input::ReadIndex { token } => self.read_index(token),
            Input::LeaseRead { token } => self.lease_read(token),
            Input::ChangeMembership {
                token,
                change,
                prev_index,
            } => self.change_membership(token, change, prev_index),
            Input::TransferLeadership { token, target } => self.transfer_leadership(token, target),
            Input::SnapshotTaken { meta } => self.snapshot_taken(meta),
            Input::SnapshotChunkRead {
                peer,
                snapshot,
                offset,
                data,
                done,
            } => self.snapshot_chunk_read(peer, snapshot, offset, data, done),
            Input::SnapshotChunkWritten {
                snapshot,
                stage,
                next_offset,
                done,
            } => self.snapshot_chunk_written(snapshot, stage, next_offset, done),
            Input::UserRestore { token } => self.user_restore(token),
            Input::RestoreStaged { token, meta } => self.restore_staged(token, meta),
            Input::RestoreStageFailed { token } => self.restore_stage_failed(token),
            Input::Reconfigure(timing) => self.reconfigure(timing),
            Input::PeerUnreachable { peer } => {
                self.quiesced_leader_silent(peer);
                self.transfer_target_unreachable(peer)
            }
            Input::Persisted { seq } => self.persisted(seq),
            Input::Applied { index } => self.handle_applied(index),
        }
        self.after_activity(activity);
    }

    /// Closes the current batch (see the module docs) and returns every effect produced since
    /// the last call, in the order they must be performed.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        self.flush_leader_batch();
        self.flush_persist();
        std::mem::take(&mut self.effects)
    }

    /// When the core next needs a `Tick` (the earliest timer).
    pub fn next_timer(&self) -> Time {
        if self.quiesced {
            return Core::quiesced_timer();
        }
        match &self.role {
            RoleState::Leader(l) => l.next_heartbeat_at,
            _ => self.election_deadline,
        }
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.config.id
    }

    /// The current role.
    pub fn role(&self) -> Role {
        match self.role {
            RoleState::Follower => Role::Follower,
            RoleState::PreCandidate { .. } => Role::PreCandidate,
            RoleState::Candidate { .. } => Role::Candidate,
            RoleState::Leader(_) => Role::Leader,
        }
    }

    /// The current term.
    pub fn term(&self) -> Term {
        self.term
    }

    /// The vote cast in the current term.
    pub fn vote(&self) -> Option<NodeId> {
        self.vote
    }

    /// The leader this node follows (itself when leading), if known.
    pub fn leader(&self) -> Option<NodeId> {
        self.leader
    }

    /// The commit index.
    pub fn commit_index(&self) -> Index {
        self.commit
    }

    /// True if this node leads and has committed its term's first entry: a quorum follows it
    /// (a `MultiRaft` node then gives its campaign slot back, ARCHITECTURE §14).
    pub fn leads_with_own_term_committed(&self) -> bool {
        match &self.role {
            RoleState::Leader(l) => l.committed_own_term(self.commit),
            _ => false,
        }
    }

    /// The highest index the state machine reported applied.
    pub fn applied_index(&self) -> Index {
        self.applied
    }

    /// The log.
    pub fn log(&self) -> &RaftLog {
        &self.log
    }

    /// The settings the core runs with (as started, with the timing of any reload since).
    pub fn config(&self) -> &CoreConfig {
        &self.config
    }

    /// Every configuration the core tracks, oldest first, with the index of its entry: the
    /// base (from the snapshot or the oldest retained entry) and every configuration entry in
    /// the log after it.
    pub fn configurations(&self) -> &[(Index, Configuration)] {
        &self.configs
    }

    /// The latest configuration (in effect as soon as appended) and its index.
    pub fn latest_configuration(&self) -> (Index, Configuration) {
        self.configs.last().cloned().unwrap_or_default()
    }

    /// The newest configuration at or below `index` (what a snapshot at `index` records).
    pub fn configuration_at(&self, index: Index) -> (Index, Configuration) {
        self.configs
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .cloned()
            .unwrap_or_default()
    }

    /// The latest committed configuration and its index.
    pub fn committed_configuration(&self) -> (Index, Configuration) {
        self.configs
            .iter()
            .rev()
            .find(|(i, _)| *i <= self.commit)
            .cloned()
            .unwrap_or_default()
    }

    /// The newest snapshot this node knows of.
    pub fn snapshot(&self) -> Option<&SnapshotMeta> {
        self.snapshot.as_ref()
    }

    /// The leader's view of a follower's replication progress.
    pub fn progress(&self, peer: NodeId) -> Option<&Progress> {
        match &self.role {
            RoleState::Leader(l) => l.progress.get(&peer),
            _ => None,
        }
    }

    // ---- shared machinery -------------------------------------------------------------

    fn emit(&mut self, effect: Effect) {
        self.effects.push(effect);
    }

    fn send(&mut self, to: NodeId, body: Body) {
        let message = Message {
            from: self.id(),
            to,
            term: self.term,
            body,
        };
        self.emit(Effect::Send(message));
    }

    /// Applies new timing settings if they are valid, and re-arms the timers: a leader whose
    /// heartbeat interval shrank heartbeats at its next tick; every other role draws a fresh
    /// election deadline from the new timeout.
    fn reconfigure(&mut self, timing: Timing) {
        let mut next = self.config.clone();
        next.election_timeout = timing.election_timeout;
        next.heartbeat_interval = timing.heartbeat_interval;
        next.leader_lease_timeout = timing.leader_lease_timeout;
        next.trailing_logs = timing.trailing_logs;
        if let Err(e) = next.validate() {
            self.invalid(None, InvalidInput::BadTiming(e));
            return;
        }
        let shorter_heartbeats = next.heartbeat_interval < self.config.heartbeat_interval;
        let election_changed = next.election_timeout != self.config.election_timeout;
        self.config = next;
        let now = self.now;
        match &mut self.role {
            RoleState::Leader(l) => {
                if shorter_heartbeats {
                    l.next_heartbeat_at = l.next_heartbeat_at.min(now);
                }
                if election_changed {
                    // Votes already granted were timed with the old election timeout: a lease
                    // counts only rounds sent from now on (the simulator found a stale lease
                    // read after a reload that lengthened the timeout).
                    l.lease_rounds_from = now;
                }
            }
            _ => self.reset_election_deadline(),
        }
    }

    fn handle_applied(&mut self, index: Index) {
        if index > self.apply_requested {
            self.invalid(None, InvalidInput::AppliedBeyondApply { reported: index });
            return;
        }
        self.applied = self.applied.max(index);
    }

    /// Hands newly committed entries to the state machine.
    fn emit_apply(&mut self) {
        #[allow(unused_mut)]
        let mut target = self.commit;
        #[cfg(feature = "sim")]
        if self.config.mutation == Some(Mutation::ApplyBeforeCommit) {
            target = self.log.last_index();
        }
        if target <= self.apply_requested {
            return;
        }
        let entries = self
            .log
            .slice(self.apply_requested.next(), target, usize::MAX, usize::MAX);
        self.apply_requested = target;
        if !entries.is_empty() {
            self.emit(Effect::Apply { entries });
        }
    }

    fn invalid(&mut self, from: Option<NodeId>, reason: InvalidInput) {
        self.emit(Effect::Event(Event::InvalidInput { from, reason }));
    }

    fn is_voter(&self, id: NodeId) -> bool {
        self.configs.last().is_some_and(|(_, c)| c.is_voter(id))
    }

    /// Whether to consider `candidate`'s vote request. A candidate that is a voter in our
    /// latest configuration, yes. One that is not is refused (a removed server must not pull
    /// the cluster into elections; hashicorp/raft#524) — unless our configuration may simply be
    /// stale: when we know no configuration yet (a new server waiting for the leader), or when
    /// the candidate's log is strictly newer than ours, so it may hold a configuration we have
    /// not received. Without that exception a lagging voter whose stale configuration lacks a
    /// newly added voter can refuse the only candidate that could win, and the cluster never
    /// elects a leader again (the simulator found this; the thesis, §4.2.3, lets servers vote
    /// for candidates outside their configuration for the same reason). Voting is safe either
    /// way: the candidate counts only voters of its own configuration.
    fn may_vote_for(&self, candidate: NodeId, candidate_last: LogId) -> bool {
        let Some((_, latest)) = self.configs.last() else {
            return true;
        };
        if latest.servers.is_empty() || latest.is_voter(candidate) {
            return true;
        }
        let ours = self.log.last_log_id();
        (candidate_last.term, candidate_last.index) > (ours.term, ours.index)
    }

    /// The voters of the latest configuration (cached: read on every acknowledgement).
    fn voters(&self) -> &[NodeId] {
        &self.voters
    }

    /// Recomputes the voter cache; call after every change to `configs`.
    fn configs_changed(&mut self) {
        self.voters = self
            .configs
            .last()
            .map(|(_, c)| c.voters().collect())
            .unwrap_or_default();
    }

    /// True if `id` is in the latest configuration (voter or not).
    fn is_member(&self, id: NodeId) -> bool {
        self.configs
            .last()
            .is_some_and(|(_, c)| c.server(id).is_some())
    }

    fn quorum(&self) -> usize {
        majority(self.voters.len())
    }

    fn election_timeout_nanos(&self) -> u64 {
        self.config.election_timeout.as_nanos() as u64
    }

    fn reset_election_deadline(&mut self) {
        let t = self.election_timeout_nanos();
        let jitter = self.rng.range(t, 2 * t);
        self.election_deadline = self.now.plus_nanos(jitter);
    }

    fn set_leader(&mut self, leader: Option<NodeId>) {
        if self.leader != leader {
            self.leader = leader;
            self.emit(Effect::Event(Event::LeaderChanged {
                leader,
                term: self.term,
            }));
        }
    }
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core")
            .field("id", &self.id())
            .field("role", &self.role())
            .field("term", &self.term)
            .field("vote", &self.vote)
            .field("leader", &self.leader)
            .field("last", &self.log.last_log_id())
            .field("commit", &self.commit)
            .field("applied", &self.applied)
            .finish()
    }
}
