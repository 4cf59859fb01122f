//! The leader: proposals, replication, commit, heartbeats, leases and reads.
//!
//! Heartbeat rounds: the leader numbers its heartbeat broadcasts (`round`) and stamps every
//! AppendEntries and heartbeat with the current round; followers echo it. The largest round a
//! quorum of voters has acknowledged tells the leader that, at the time that round was sent, a
//! quorum still accepted it. That one number drives verify-leader and ReadIndex (thesis §6.4:
//! wait for a round started after the request), leader leases (§6.4.1: a lease runs from the
//! send time of the acknowledged round) and lease step-down (no quorum acknowledgement within
//! `leader_lease_timeout`).
//!
//! Commit (Raft §5.3, §5.4.2): the highest index a quorum of voters holds durably, counting the
//! leader only up to its own durable index, and only if that entry is of the leader's term.

#[cfg(feature = "sim")]
use super::config::Mutation;
use super::progress::{quorum_value_of, Progress, ReplicationState};
use super::types::{InvalidInput, Outcome, RequestError, Time, Token};
use super::{Core, CoreConfig, RoleState};
use bytes::Bytes;
use ringraft_net::message::{
    AppendEntries, AppendEntriesResponse, AppendResult, Body, ConflictHint,
};
use ringraft_storage::{Entry, EntryKind, Index, LogId, NodeId};
use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;

/// Heartbeats of a busy leader (ARCHITECTURE §4): the heartbeat timer's round skips a busy
/// follower, one that is streaming entries (`Replicate`) and was sent AppendEntries and
/// acknowledged a round within the last `b` rounds (`Progress::is_busy`; `b` is
/// `Core::busy_rounds`, from this to [`BUSY_ROUNDS_MAX`] as the lease allows). Its
/// AppendEntries reset its election timer, and the next one carries the new round; if none
/// goes out, the heartbeat of the round `b` later does. So a leader whose followers keep
/// receiving entries sends no heartbeats: with a thousand busy groups per node, heartbeats and
/// their answers were a third of the messages and a quarter of the group turns.
/// What it costs: the round a quorum acknowledged can be `b` intervals older than the one
/// before (so the lease must have room for it), and a follower learns the commit index of the
/// last write of a burst up to `b + 1` intervals later rather than one. Rounds that a
/// verification or a wake-up starts reach every follower, and so does the timer's round while a
/// verification waits.
const BUSY_ROUNDS_MIN: u64 = 2;

/// The most rounds a busy follower goes without a heartbeat. With a group getting about one
/// write per heartbeat interval (1 000 busy groups, durable), two rounds often passed without
/// one and half of all group turns were heartbeats, their answers and the leaders' ticks; four
/// rounds removed about three quarters of those heartbeats (docs/PERFORMANCE.md, session 16).
/// A follower then hears from its leader at least every five intervals: at most half an
/// election timeout with a node's `Config` (heartbeats every tenth of the heartbeat timeout,
/// which the election timeout is at least), and always less than the lease (below) and so than
/// the election timeout. The commit index of a burst's last write reaches the followers within
/// five intervals too.
const BUSY_ROUNDS_MAX: u64 = 4;

/// A proposal or barrier waiting to commit.
struct PendingCommit {
    token: Token,
    first: LogId,
    last: Index,
}

/// A server catching up before it becomes a voter.
pub(crate) struct Promotion {
    pub(crate) server: ringraft_storage::Server,
    pub(crate) token: Token,
    pub(crate) rounds_left: u64,
}

/// A leadership transfer in progress.
pub(crate) struct Transfer {
    pub(crate) target: NodeId,
    pub(crate) token: Token,
    pub(crate) deadline: Time,
    pub(crate) timeout_now_sent: bool,
}

/// A request waiting for a quorum to acknowledge `round`.
struct PendingVerification {
    round: u64,
    token: Token,
    outcome: Outcome,
}

pub(crate) struct LeaderState {
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    round: u64,
    /// The first round sent since the leader was last active (quiescence waits for every
    /// follower to acknowledge it).
    round_since_active: Option<u64>,
    /// Send time of every round a quorum may still acknowledge, ascending.
    round_sent_at: VecDeque<(u64, Time)>,
    became_leader_at: Time,
    pub(crate) next_heartbeat_at: Time,
    /// The index of this term's first entry (the no-op).
    first_index_of_term: Index,
    pending_commits: VecDeque<PendingCommit>,
    reads_awaiting_commit: Vec<Token>,
    verifications: Vec<PendingVerification>,
    /// A heartbeat round must start when the batch closes and reach every follower (a
    /// verification waits for it, or the leader woke from quiescence).
    broadcast_needed: bool,
    /// The heartbeat timer fired: a round starts when the batch closes, and busy followers
    /// are not sent its heartbeat ([`BUSY_ROUNDS_MIN`]).
    heartbeat_due: bool,
    /// Followers may have new entries to receive when the batch closes.
    replication_needed: bool,
    /// A server catching up before promotion to voter.
    pub(crate) promotion: Option<Promotion>,
    /// A leadership transfer in progress.
    pub(crate) transfer: Option<Transfer>,
    /// A user restore being staged: its token and the id its entry will have.
    pub(crate) restoring: Option<(Token, LogId)>,
    /// This term's lease is void: a transfer sent `TimeoutNow`, and voters grant the target's
    /// votes even while they hear from us. A copy of that message can still arrive after the
    /// transfer failed here (delayed or duplicated), so the lease stays void for the term and
    /// lease reads take a quorum round instead.
    pub(crate) lease_void: bool,
    /// Rounds sent before this time do not count for the lease: the election timeout changed
    /// then (a reload), and voters decided on their votes before it with the old one.
    pub(crate) lease_rounds_from: Time,
    /// When the leader last woke from quiescence: its step-down check counts from then, not
    /// from acknowledgements that predate the quiet.
    woke_at: Time,
    /// The last tick came more than a heartbeat interval late and skipped the step-down check
    /// (see `leader_tick`); the next tick checks whatever its lateness.
    late_tick_excused: bool,
}

impl LeaderState {
    pub(crate) fn new(members: &[NodeId], last: Index, now: Time, config: &CoreConfig) -> Self {
        LeaderState {
            progress: members
                .iter()
                .map(|&m| (m, Progress::new(last, 1)))
                .collect(),
            round: 1,
            round_since_active: None,
            round_sent_at: VecDeque::from([(1, now)]),
            became_leader_at: now,
            next_heartbeat_at: now.plus_nanos(config.heartbeat_interval.as_nanos() as u64),
            first_index_of_term: last.next(),
            pending_commits: VecDeque::new(),
            reads_awaiting_commit: Vec::new(),
            verifications: Vec::new(),
            broadcast_needed: false,
            heartbeat_due: false,
            replication_needed: true,
            promotion: None,
            transfer: None,
            restoring: None,
            lease_void: false,
            lease_rounds_from: now,
            woke_at: now,
            late_tick_excused: false,
        }
    }

    /// Wakes from quiescence at `now`: a heartbeat round starts when the batch closes, and the
    /// step-down check counts from now.
    pub(crate) fn wake(&mut self, now: Time, heartbeat_nanos: u64) {
        self.woke_at = now;
        self.broadcast_needed = true;
        self.next_heartbeat_at = now.plus_nanos(heartbeat_nanos);
    }

    /// True when no request waits on this leader and nothing is being replicated or handed
    /// over (a condition of quiescence).
    pub(crate) fn is_idle(&self) -> bool {
        self.pending_commits.is_empty()
            && self.reads_awaiting_commit.is_empty()
            && self.verifications.is_empty()
            && !self.broadcast_needed
            && !self.heartbeat_due
            && !self.replication_needed
            && self.promotion.is_none()
            && self.transfer.is_none()
            && self.restoring.is_none()
    }

    /// The current heartbeat round.
    pub(crate) fn round(&self) -> u64 {
        self.round
    }

    /// True once this term's first entry has committed.
    pub(crate) fn committed_own_term(&self, commit: Index) -> bool {
        commit >= self.first_index_of_term
    }

    pub(crate) fn push_pending_commit(&mut self, token: Token, first: LogId, last: Index) {
        self.pending_commits
            .push_back(PendingCommit { token, first, last });
    }

    /// Every pending request's token, leaving none behind.
    pub(crate) fn drain_pending(&mut self) -> Vec<Token> {
        let mut tokens: Vec<Token> = self.pending_commits.drain(..).map(|p| p.token).collect();
        tokens.extend(self.promotion.take().map(|p| p.token));
        tokens.extend(self.restoring.take().map(|(token, _)| token));
        tokens.append(&mut self.reads_awaiting_commit);
        tokens.extend(self.verifications.drain(..).map(|v| v.token));
        tokens
    }

    /// The leader was active (quiescence): the next round is the first sent since.
    pub(crate) fn note_activity(&mut self) {
        self.round_since_active = None;
    }

    /// The first heartbeat round sent since the leader was last active, if one was.
    pub(crate) fn round_since_active(&self) -> Option<u64> {
        self.round_since_active
    }

    fn sent_at(&self, round: u64) -> Time {
        self.round_sent_at
            .iter()
            .find(|(r, _)| *r == round)
            .map(|(_, t)| *t)
            .unwrap_or(self.became_leader_at)
    }
}

impl Core {
    pub(super) fn leader_state_mut(&mut self) -> Option<&mut LeaderState> {
        match &mut self.role {
            RoleState::Leader(l) => Some(l),
            _ => None,
        }
    }

    pub(super) fn not_leader(&mut self, token: Token) -> bool {
        if matches!(self.role, RoleState::Leader(_)) {
            return false;
        }
        let leader = self.leader;
        self.reply(token, Err(RequestError::NotLeader { leader }));
        true
    }

    pub(super) fn append_noop(&mut self) {
        self.append_as_leader(vec![(EntryKind::Noop, Bytes::new())]);
    }

    pub(super) fn append_as_leader(&mut self, items: Vec<(EntryKind, Bytes)>) -> (LogId, Index) {
        self.append_as_leader_with_extensions(
            items
                .into_iter()
                .map(|(kind, data)| (kind, data, Bytes::new())),
        )
    }

    /// Appends entries of this term (kind, data, extensions); returns the first id and the
    /// last index. `items` must not be empty.
    ///
    /// Each entry goes straight into the log and the staged persist batch: a proposal costs
    /// no vector of its own on the shard thread (ARCHITECTURE §10).
    pub(super) fn append_as_leader_with_extensions(
        &mut self,
        items: impl IntoIterator<Item = (EntryKind, Bytes, Bytes)>,
    ) -> (LogId, Index) {
        let term = self.term;
        let before = self.log.last_index();
        let mut index = before;
        for (kind, data, extensions) in items {
            index = index.next();
            self.stage_entry(Entry {
                id: LogId::new(term, index),
                kind,
                data,
                extensions,
            });
        }
        debug_assert!(index > before, "a leader appends at least one entry");
        if let Some(l) = self.leader_state_mut() {
            l.replication_needed = true;
        }
        (LogId::new(term, before.next()), index)
    }

    /// Refuses a write while a transfer runs or a restore is staged, or after this leader
    /// removed itself.
    pub(super) fn refuse_write(&mut self, token: Token) -> bool {
        if self.not_leader(token) {
            return true;
        }
        let (transferring, restoring) = match &self.role {
            RoleState::Leader(l) => (l.transfer.is_some(), l.restoring.is_some()),
            _ => (false, false),
        };
        if transferring {
            self.reply(token, Err(RequestError::TransferInProgress));
            return true;
        }
        if restoring {
            self.reply(token, Err(RequestError::RestoreInProgress));
            return true;
        }
        if !self.is_voter(self.id()) {
            // Leaving the configuration: hashicorp answers NotLeader until it steps down.
            self.reply(token, Err(RequestError::NotLeader { leader: None }));
            return true;
        }
        false
    }

    pub(super) fn propose(&mut self, token: Token, commands: Vec<Bytes>, extensions: Vec<Bytes>) {
        if self.refuse_write(token) {
            return;
        }
        if commands.is_empty() {
            self.reply(token, Err(RequestError::EmptyProposal));
            return;
        }
        if extensions.len() > commands.len() {
            self.reply(token, Err(RequestError::TooManyExtensions));
            return;
        }
        let mut extensions = extensions.into_iter();
        let (first, last) = self.append_as_leader_with_extensions(
            commands
                .into_iter()
                .map(|c| (EntryKind::Command, c, extensions.next().unwrap_or_default())),
        );
        if let Some(l) = self.leader_state_mut() {
            l.pending_commits
                .push_back(PendingCommit { token, first, last });
        }
    }

    pub(super) fn propose_barrier(&mut self, token: Token) {
        if self.refuse_write(token) {
            return;
        }
        let (first, last) = self.append_as_leader(vec![(EntryKind::Barrier, Bytes::new())]);
        if let Some(l) = self.leader_state_mut() {
            l.pending_commits
                .push_back(PendingCommit { token, first, last });
        }
    }

    pub(super) fn verify_leader(&mut self, token: Token) {
        if self.not_leader(token) {
            return;
        }
        self.await_quorum_round(token, Outcome::LeaderVerified);
    }

    pub(super) fn read_index(&mut self, token: Token) {
        if self.not_leader(token) {
            return;
        }
        let commit = self.commit;
        let Some(l) = self.leader_state_mut() else {
            return;
        };
        if commit < l.first_index_of_term {
            // Thesis §6.4 step 1: the leader's commit index is only current once it has
            // committed an entry of its own term.
            l.reads_awaiting_commit.push(token);
            return;
        }
        self.await_quorum_round(token, Outcome::ReadReady { index: commit });
    }

    pub(super) fn lease_read(&mut self, token: Token) {
        if !self.config.lease_read {
            self.reply(token, Err(RequestError::LeaseReadDisabled));
            return;
        }
        if self.not_leader(token) {
            return;
        }
        if self.lease_valid() {
            let index = self.commit;
            self.reply(token, Ok(Outcome::ReadReady { index }));
        } else {
            self.read_index(token);
        }
    }

    /// True while no other leader can have been elected: a quorum acknowledged a round sent
    /// less than `election_timeout - clock_drift_bound` ago, this term has committed an
    /// entry, and no transfer has sent `TimeoutNow` in this term (see `lease_void`).
    fn lease_valid(&self) -> bool {
        let RoleState::Leader(l) = &self.role else {
            return false;
        };
        #[allow(unused_mut)]
        let mut void = l.lease_void;
        #[cfg(feature = "sim")]
        if self.config.mutation == Some(Mutation::LeaseAfterTimeoutNow) {
            void = false;
        }
        if void || self.commit < l.first_index_of_term {
            return false;
        }
        let round = self.quorum_acked_round();
        if round == 0 {
            return false;
        }
        let sent = l.sent_at(round);
        if sent < l.lease_rounds_from {
            return false;
        }
        let lease = self.election_timeout_nanos() - self.config.clock_drift_bound.as_nanos() as u64;
        self.now < sent.plus_nanos(lease)
    }

    fn await_quorum_round(&mut self, token: Token, outcome: Outcome) {
        if self.quorum() <= 1 && self.is_voter(self.id()) {
            self.reply(token, Ok(outcome));
            return;
        }
        let Some(l) = self.leader_state_mut() else {
            return;
        };
        let round = l.round + 1;
        l.verifications.push(PendingVerification {
            round,
            token,
            outcome,
        });
        l.broadcast_needed = true;
    }

    /// The highest round a quorum of voters has acknowledged (the leader acknowledges its own
    /// current round).
    fn quorum_acked_round(&self) -> u64 {
        let RoleState::Leader(l) = &self.role else {
            return 0;
        };
        let me = self.id();
        let rounds = self.voters().iter().map(|&v| {
            if v == me {
                l.round
            } else {
                l.progress.get(&v).map_or(0, |p| p.acked_round)
            }
        });
        quorum_value_of(rounds, self.quorum()).unwrap_or(0)
    }

    pub(super) fn leader_tick(&mut self) {
        let heartbeat = self.config.heartbeat_interval.as_nanos() as u64;
        let lease_timeout = self.config.leader_lease_timeout.as_nanos() as u64;
        let quorum_round = self.quorum_acked_round();
        let now = self.now;
        let alone_a_quorum = self.quorum() <= 1 && self.is_voter(self.id());
        let Some(l) = self.leader_state_mut() else {
            return;
        };
        let last_ack = if quorum_round == 0 {
            l.became_leader_at
        } else {
            l.sent_at(quorum_round)
        }
        .max(l.woke_at);
        // A tick more than a heartbeat interval late means this node itself did not run for
        // that long (a stalled shard thread, a paused process, a long turn of another node on
        // its thread): its followers' answers may be waiting unread, so their silence proves
        // nothing yet. Such a tick sends its round and leaves the step-down to the next tick,
        // which checks whatever its lateness, so a leader whose ticks are all late still steps
        // down, one interval later. The lease is not extended: it counts from when the
        // acknowledged rounds were sent (`lease_valid`).
        let late = now.nanos_since(l.next_heartbeat_at) > heartbeat;
        let excused = late && !l.late_tick_excused;
        l.late_tick_excused = excused;
        if !excused && !alone_a_quorum && now.nanos_since(last_ack) > lease_timeout {
            // Leader lease step-down: we cannot show a quorum still follows us. (A leader that
            // is a quorum by itself needs no one: a slow thread must not depose it.)
            let term = self.term;
            self.become_follower(term, None);
            return;
        }
        if now >= l.next_heartbeat_at {
            l.next_heartbeat_at = now.plus_nanos(heartbeat);
            if self.try_quiesce() {
                return;
            }
            let Some(l) = self.leader_state_mut() else {
                return;
            };
            l.heartbeat_due = true;
            let departed = l.progress.values().any(|p| p.removed_at_round.is_some());
            self.check_promotion(true);
            if departed {
                // Stop replicating to servers that left long enough ago.
                self.sync_progress();
            }
        }
        self.expire_transfer();
    }

    /// Closes the leader's batch: one AppendEntries per follower for everything proposed, one
    /// heartbeat round for every verification.
    pub(super) fn flush_leader_batch(&mut self) {
        let Some(l) = self.leader_state_mut() else {
            return;
        };
        let replicate = std::mem::take(&mut l.replication_needed);
        let broadcast = std::mem::take(&mut l.broadcast_needed);
        let due = std::mem::take(&mut l.heartbeat_due);
        // The timer's round while a verification waits reaches every follower too: the
        // verification's own round may have been lost, and busy followers would answer only
        // with their next AppendEntries, if any goes out.
        let to_all = broadcast || !l.verifications.is_empty();
        if replicate {
            // Peer by peer in id order, without collecting them first.
            let mut next = l.progress.keys().next().copied();
            while let Some(peer) = next {
                self.send_appends(peer);
                next = match &self.role {
                    RoleState::Leader(l) => l
                        .progress
                        .range((Bound::Excluded(peer), Bound::Unbounded))
                        .next()
                        .map(|(&p, _)| p),
                    _ => None,
                };
            }
            // A single-voter leader commits as soon as its own write is durable.
            self.maybe_commit();
        }
        if broadcast || due {
            self.broadcast_heartbeat(to_all);
        }
    }

    /// How many rounds `b` a busy follower may go without a heartbeat: a round of the
    /// heartbeat timer skips a follower that is streaming entries and was sent AppendEntries
    /// and acknowledged a round within the last `b` rounds (docs/ARCHITECTURE.md §4,
    /// "Heartbeats of a busy leader"); 0 when the timer's rounds reach every follower. A
    /// skipped follower acknowledges the new round with its next AppendEntries, or else with
    /// the heartbeat of a later round, so the round a quorum acknowledged can be up to `b`
    /// intervals older than the one before, and the lease must outlast that with time to spare
    /// for the answers and late ticks: two rounds need a lease of four intervals (two to
    /// spare), and more rounds are taken only while three intervals stay spare. hashicorp's
    /// defaults (a lease of five intervals) give two; the lease of ten intervals that
    /// `Config::fast` and the load tool use, four.
    pub fn busy_rounds(&self) -> u64 {
        let interval = self.config.heartbeat_interval.as_nanos().max(1);
        let intervals = self.config.leader_lease_timeout.as_nanos() / interval;
        let intervals = u64::try_from(intervals).unwrap_or(u64::MAX);
        if intervals < BUSY_ROUNDS_MIN + 2 {
            return 0;
        }
        intervals
            .saturating_sub(3)
            .clamp(BUSY_ROUNDS_MIN, BUSY_ROUNDS_MAX)
    }

    /// Starts a heartbeat round. With `to_all` false (the heartbeat timer's round), a busy
    /// follower is skipped (see [`BUSY_ROUNDS_MIN`]).
    fn broadcast_heartbeat(&mut self, to_all: bool) {
        let busy_rounds = if to_all { 0 } else { self.busy_rounds() };
        #[cfg(feature = "sim")]
        let mutation = self.config.mutation;
        let now = self.now;
        let commit = self.commit;
        let me = self.id();
        let term = self.term;
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        let previous = l.round;
        l.round += 1;
        let round = l.round;
        l.round_since_active.get_or_insert(round);
        l.round_sent_at.push_back((round, now));
        for (&peer, p) in &l.progress {
            if busy_rounds > 0 && p.is_busy(previous, busy_rounds) {
                continue;
            }
            #[allow(unused_mut)]
            let mut leader_commit = commit.min(p.match_index);
            #[cfg(feature = "sim")]
            if mutation == Some(Mutation::FollowerCommitWithoutMin) {
                leader_commit = commit;
            }
            // `emit`, on the field: `l` borrows the role.
            self.effects
                .push(super::Effect::Send(ringraft_net::message::Message {
                    from: me,
                    to: peer,
                    term,
                    body: Body::Heartbeat {
                        leader_commit,
                        round,
                    },
                }));
        }
        // Rounds a quorum has moved past are no longer needed.
        self.prune_rounds();
        self.resolve_verifications();
    }

    fn prune_rounds(&mut self) {
        let quorum_round = self.quorum_acked_round();
        let Some(l) = self.leader_state_mut() else {
            return;
        };
        while l.round_sent_at.len() > 1 && l.round_sent_at[0].0 < quorum_round {
            l.round_sent_at.pop_front();
        }
    }

    /// Sends AppendEntries to `peer` while its window allows and there is something to send.
    pub(super) fn send_appends(&mut self, peer: NodeId) {
        let (max_count, max_bytes, max_inflight) = (
            self.config.max_append_entries,
            self.config.max_append_bytes,
            self.config.max_inflight,
        );
        loop {
            let last = self.log.last_index();
            let commit = self.commit;
            let me = self.id();
            let term = self.term;
            let RoleState::Leader(l) = &mut self.role else {
                return;
            };
            let round = l.round;
            let Some(p) = l.progress.get_mut(&peer) else {
                return;
            };
            if let ReplicationState::Snapshot { .. } = p.state {
                return self.send_snapshot_chunk(peer);
            }
            if p.is_paused(max_inflight) {
                return;
            }
            let prev_index = p.next_index.prev();
            let Some(prev_term) = self.log.term_at(prev_index) else {
                // The entries this follower needs were compacted: it needs a snapshot.
                return self.send_snapshot_chunk(peer);
            };
            let entries = self.log.slice(p.next_index, last, max_count, max_bytes);
            let replicating = matches!(p.state, ReplicationState::Replicate { .. });
            if entries.is_empty() && replicating {
                return;
            }
            let sent_last = prev_index.plus(entries.len() as u64);
            let carried = !entries.is_empty();
            p.on_sent(sent_last, carried);
            p.append_round = round;
            let body = Body::AppendEntries(AppendEntries {
                prev_log_id: LogId::new(prev_term, prev_index),
                entries,
                leader_commit: commit,
                round,
            });
            self.effects
                .push(super::Effect::Send(ringraft_net::message::Message {
                    from: me,
                    to: peer,
                    term,
                    body,
                }));
            if !replicating || !carried {
                return;
            }
        }
    }

    pub(super) fn handle_append_response(&mut self, from: NodeId, response: AppendEntriesResponse) {
        #[cfg(feature = "sim")]
        let mutation = self.config.mutation;
        let last = self.log.last_index();
        let AppendEntriesResponse { result, round } = response;
        let retry_next = match result {
            AppendResult::Conflict {
                rejected_prev_index,
                hint: ConflictHint::MissingRestore { entry },
            } => {
                self.stage_restore_on(from, entry, rejected_prev_index, round);
                self.resolve_verifications();
                return;
            }
            AppendResult::Conflict {
                rejected_prev_index,
                hint,
            } => Some((
                rejected_prev_index,
                self.retry_point(rejected_prev_index, hint),
            )),
            AppendResult::Success { .. } | AppendResult::StaleTerm => None,
        };
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        let current_round = l.round;
        let Some(p) = l.progress.get_mut(&from) else {
            self.invalid(Some(from), InvalidInput::UnknownPeer);
            return;
        };
        // A StaleTerm answer is to a message of an older term (the follower echoes that
        // message's round under its current term, which may be ours again): it acknowledges
        // no round of this term.
        if !matches!(result, AppendResult::StaleTerm) {
            p.ack_round(round, current_round);
        }
        #[cfg(feature = "sim")]
        if mutation == Some(Mutation::CountStaleTermRound) {
            // The old code: any echoed round counts.
            p.acked_round = p.acked_round.max(round);
        }
        match result {
            AppendResult::Success { match_index } => {
                if match_index > last {
                    self.invalid(
                        Some(from),
                        InvalidInput::MatchBeyondLog {
                            claimed: match_index,
                        },
                    );
                    return;
                }
                if p.on_success(match_index, current_round) {
                    self.maybe_commit();
                }
                self.send_appends(from);
                self.advance_transfer();
                self.check_promotion(false);
                if !self.is_member(from) {
                    // A departed server caught up with its removal: say goodbye.
                    self.sync_progress();
                }
            }
            AppendResult::Conflict { .. } => {
                if let Some((rejected, next)) = retry_next {
                    if p.on_reject(rejected, next, current_round) {
                        self.send_appends(from);
                    }
                }
            }
            AppendResult::StaleTerm => {}
        }
        self.resolve_verifications();
    }

    /// Where to resume after a rejection, from the follower's conflict hint.
    fn retry_point(&self, rejected_prev: Index, hint: ConflictHint) -> Index {
        match hint {
            ConflictHint::LogTooShort { last_index } => last_index.next(),
            ConflictHint::TermMismatch { term, first_index } => {
                // If we hold entries of that term, the follower's run of it may match ours up
                // to our last entry of it; otherwise skip the whole run.
                match self.log.last_index_of_term_at_or_below(term, rejected_prev) {
                    Some(i) if i >= first_index => i.next(),
                    _ => first_index,
                }
            }
            // Handled before any hint analysis (see `stage_restore_on`).
            ConflictHint::MissingRestore { .. } => rejected_prev,
        }
    }

    pub(super) fn handle_heartbeat_response(&mut self, from: NodeId, round: u64) {
        let last = self.log.last_index();
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        let current_round = l.round;
        let Some(p) = l.progress.get_mut(&from) else {
            self.invalid(Some(from), InvalidInput::UnknownPeer);
            return;
        };
        p.on_heartbeat_response(round, current_round, last);
        if p.match_index < last {
            self.send_appends(from);
        }
        self.advance_transfer();
        self.resolve_verifications();
    }

    pub(super) fn resolve_verifications(&mut self) {
        let quorum_round = self.quorum_acked_round();
        let Some(l) = self.leader_state_mut() else {
            return;
        };
        if l.verifications.iter().all(|v| v.round > quorum_round) {
            return;
        }
        let (done, waiting): (Vec<_>, Vec<_>) = l
            .verifications
            .drain(..)
            .partition(|v| v.round <= quorum_round);
        l.verifications = waiting;
        for v in done {
            self.reply(v.token, Ok(v.outcome));
        }
    }

    /// Advances the commit index to what a quorum of voters holds durably, if that entry is of
    /// this term.
    pub(super) fn maybe_commit(&mut self) {
        let me = self.id();
        let durable = self.log.durable_index();
        let RoleState::Leader(l) = &self.role else {
            return;
        };
        #[allow(unused_mut)]
        let mut counted: &[NodeId] = self.voters();
        #[cfg(feature = "sim")]
        let members: Vec<NodeId>;
        #[cfg(feature = "sim")]
        if self.config.mutation == Some(Mutation::CountNonvoterTowardCommit) {
            members = self.latest_configuration().1.members().collect();
            counted = &members;
        }
        let matches = counted.iter().map(|&v| {
            if v == me {
                durable
            } else {
                l.progress.get(&v).map_or(Index(0), |p| p.match_index)
            }
        });
        let Some(candidate) = quorum_value_of(matches, self.quorum()) else {
            return;
        };
        if candidate <= self.commit {
            return;
        }
        #[allow(unused_mut)]
        let mut own_term = self.log.term_at(candidate) == Some(self.term);
        #[cfg(feature = "sim")]
        if self.config.mutation == Some(Mutation::CommitOldTermByCounting) {
            own_term = true;
        }
        if !own_term {
            return;
        }
        let previous = std::mem::replace(&mut self.commit, candidate);
        self.on_leader_commit(previous);
    }

    /// The commit index advanced from `previous`: answer requests, apply, and finish any
    /// configuration change that just committed.
    fn on_leader_commit(&mut self, previous: Index) {
        let commit = self.commit;
        let term = self.term;
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        while l.pending_commits.front().is_some_and(|p| p.last <= commit) {
            if let Some(p) = l.pending_commits.pop_front() {
                let outcome = Outcome::Committed {
                    term,
                    first: p.first.index,
                    last: p.last,
                };
                // `emit`, on the field: `l` borrows the role.
                self.effects.push(super::Effect::Reply {
                    token: p.token,
                    result: Ok(outcome),
                });
            }
        }
        let reads = if commit >= l.first_index_of_term {
            std::mem::take(&mut l.reads_awaiting_commit)
        } else {
            Vec::new()
        };
        for token in reads {
            self.await_quorum_round(token, Outcome::ReadReady { index: commit });
        }
        self.emit_apply();
        if self
            .configs
            .iter()
            .any(|(i, _)| *i > previous && *i <= commit)
        {
            self.on_configuration_commit();
        }
    }
}
