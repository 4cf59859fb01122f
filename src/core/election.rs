//! Message dispatch, the term rules of Raft §5.1, elections with pre-vote, and role changes.
//!
//! Votes count only in the candidate's configuration: a candidate counts grants from the
//! voters of its own latest configuration, so a non-voter's vote never counts. A server still
//! answers vote requests when its own (possibly stale) configuration lists it as a non-voter:
//! the candidate's configuration may already have promoted it (thesis §4.2.3). Refusing would
//! deadlock a promotion whose entry the promoted server has not received yet — the simulator
//! found exactly that.
//!
//! Leader stickiness (thesis §9.6, "disruptive servers"): a voter that heard from a live leader
//! within the election timeout neither grants a (pre-)vote nor adopts the requester's term,
//! unless the request is part of a leadership transfer or comes from that leader itself (it
//! stepped down and campaigns again: hashicorp exempts it too, and refusing it only delays the
//! next election). A higher term carried by any other
//! message is adopted even from a node outside the configuration (its vote is still refused,
//! unless its log is newer than ours: see `Core::may_vote_for`): otherwise a removed node with
//! a high term could wedge the cluster (hashicorp/raft#524).

#[cfg(feature = "sim")]
use super::config::Mutation;
use super::leader::LeaderState;
use super::types::{Effect, Event, InvalidInput, RequestError, Role};
use super::{Core, RoleState, Time};
use ringraft_net::message::{AppendEntriesResponse, AppendResult, Body, Message};
use ringraft_storage::{NodeId, Term};
use std::collections::BTreeSet;

impl Core {
    pub(super) fn handle_message(&mut self, m: Message) {
        if matches!(m.body, Body::NodePing | Body::GroupStopped) {
            // Between hosts; a host consumes these before any core sees them.
            return;
        }
        if m.to != self.id() {
            self.invalid(Some(m.from), InvalidInput::WrongRecipient { to: m.to });
            return;
        }
        if m.from == self.id() {
            self.invalid(Some(m.from), InvalidInput::UnknownPeer);
            return;
        }
        self.unreachable.remove(&m.from);
        // Pre-vote traffic never changes terms by itself.
        match m.body {
            Body::PreVote { last_log_id } => {
                return self.handle_pre_vote(m.from, m.term, last_log_id)
            }
            Body::PreVoteResponse { granted } => {
                return self.handle_pre_vote_response(m.from, m.term, granted)
            }
            Body::AppendEntries(_)
            | Body::AppendEntriesResponse(_)
            | Body::Heartbeat { .. }
            | Body::HeartbeatResponse { .. }
            | Body::RequestVote { .. }
            | Body::RequestVoteResponse { .. }
            | Body::TimeoutNow
            | Body::InstallSnapshot(_)
            | Body::InstallSnapshotResponse(_)
            | Body::Quiesce { .. }
            | Body::NodePing
            | Body::GroupStopped => {}
        }
        if m.term > self.term {
            let leader = match m.body {
                // The sender leads the newer term. (An InstallSnapshot comes from a leader too,
                // but hashicorp and the thesis adopt only the term; its handler follows it.)
                Body::AppendEntries(_)
                | Body::Heartbeat { .. }
                | Body::Quiesce { .. }
                | Body::TimeoutNow => Some(m.from),
                Body::AppendEntriesResponse(_)
                | Body::NodePing
                | Body::GroupStopped
                | Body::HeartbeatResponse { .. }
                | Body::RequestVote { .. }
                | Body::RequestVoteResponse { .. }
                | Body::PreVote { .. }
                | Body::PreVoteResponse { .. }
                | Body::InstallSnapshot(_)
                | Body::InstallSnapshotResponse(_) => None,
            };
            if let Body::RequestVote {
                leadership_transfer,
                ..
            } = m.body
            {
                if !leadership_transfer && self.sticks_to_another_leader(m.from) {
                    // Ignore the disruptive candidate entirely: no term change, no vote.
                    self.send(m.from, Body::RequestVoteResponse { granted: false });
                    return;
                }
            }
            self.become_follower(m.term, leader);
        } else if m.term < self.term {
            match m.body {
                // Tell a stale leader about the newer term so it steps down.
                Body::AppendEntries(ae) => self.send_when_durable(
                    m.from,
                    Body::AppendEntriesResponse(AppendEntriesResponse {
                        result: AppendResult::StaleTerm,
                        round: ae.round,
                    }),
                ),
                Body::Heartbeat { round, .. } => self.send_when_durable(
                    m.from,
                    Body::AppendEntriesResponse(AppendEntriesResponse {
                        result: AppendResult::StaleTerm,
                        round,
                    }),
                ),
                Body::RequestVote { .. } => {
                    self.send_when_durable(m.from, Body::RequestVoteResponse { granted: false })
                }
                // A stale leader's snapshot chunk, answers to requests of an older term, and an
                // old TimeoutNow: nothing to do (pre-votes returned above).
                Body::InstallSnapshot(_)
                | Body::AppendEntriesResponse(_)
                | Body::HeartbeatResponse { .. }
                | Body::RequestVoteResponse { .. }
                | Body::InstallSnapshotResponse(_)
                | Body::TimeoutNow
                | Body::PreVote { .. }
                | Body::PreVoteResponse { .. }
                | Body::NodePing
                | Body::GroupStopped => {}
                // A stale leader's Quiesce: tell it about the newer term, as for a heartbeat.
                Body::Quiesce { round, .. } => self.send_when_durable(
                    m.from,
                    Body::AppendEntriesResponse(AppendEntriesResponse {
                        result: AppendResult::StaleTerm,
                        round,
                    }),
                ),
            }
            return;
        }
        match m.body {
            Body::AppendEntries(ae) => self.handle_append_entries(m.from, ae),
            Body::Heartbeat {
                leader_commit,
                round,
            } => self.handle_heartbeat(m.from, leader_commit, round),
            Body::AppendEntriesResponse(r) => self.handle_append_response(m.from, r),
            Body::HeartbeatResponse { round } => self.handle_heartbeat_response(m.from, round),
            Body::RequestVote { last_log_id, .. } => self.handle_request_vote(m.from, last_log_id),
            Body::RequestVoteResponse { granted } => self.handle_vote_response(m.from, granted),
            Body::TimeoutNow => self.handle_timeout_now(m.from),
            Body::InstallSnapshot(chunk) => self.handle_install_snapshot(m.from, chunk),
            Body::InstallSnapshotResponse(r) => self.handle_snapshot_response(m.from, r),
            Body::Quiesce { leader_commit, .. } => self.handle_quiesce(m.from, leader_commit),
            // Handled before the term rules.
            Body::PreVote { .. }
            | Body::PreVoteResponse { .. }
            | Body::NodePing
            | Body::GroupStopped => {}
        }
    }

    /// True while this node believes a leader is alive: it leads, or it heard from a leader
    /// within the election timeout.
    pub(super) fn in_leader_lease(&self) -> bool {
        matches!(self.role, RoleState::Leader(_))
            || (self.quiesced && self.leader.is_some())
            || self.now.nanos_since(self.last_leader_contact) < self.election_timeout_nanos()
    }

    /// Leader stickiness: true while a live leader other than `candidate` holds our lease.
    fn sticks_to_another_leader(&self, candidate: NodeId) -> bool {
        self.in_leader_lease() && self.leader != Some(candidate)
    }

    fn handle_pre_vote(&mut self, from: NodeId, term: Term, last: ringraft_storage::LogId) {
        let granted = term > self.term
            && !self.sticks_to_another_leader(from)
            && self.may_vote_for(from, last)
            && self.log.is_up_to_date(last);
        // A grant echoes the proposed term; a refusal carries ours so a stale pre-candidate
        // catches up.
        let term = if granted { term } else { self.term };
        let message = Message {
            from: self.id(),
            to: from,
            term,
            body: Body::PreVoteResponse { granted },
        };
        self.emit(Effect::Send(message));
    }

    fn handle_pre_vote_response(&mut self, from: NodeId, term: Term, granted: bool) {
        if term > self.term && !granted {
            self.become_follower(term, None);
            return;
        }
        let quorum = self.quorum();
        let voter = self.is_voter(from);
        let RoleState::PreCandidate { granted: votes } = &mut self.role else {
            return;
        };
        if !granted || term != self.term.next() || !voter {
            return;
        }
        votes.insert(from);
        if votes.len() >= quorum {
            self.start_election(false);
        }
    }

    fn handle_request_vote(&mut self, from: NodeId, last: ringraft_storage::LogId) {
        #[allow(unused_mut)]
        let mut may_vote = self.vote.is_none() || self.vote == Some(from);
        #[cfg(feature = "sim")]
        if self.config.mutation == Some(Mutation::GrantTwoVotesPerTerm) {
            may_vote = true;
        }
        let granted = may_vote
            && !matches!(self.role, RoleState::Leader(_))
            && self.may_vote_for(from, last)
            && self.log.is_up_to_date(last);
        if granted {
            self.vote = Some(from);
            self.hard_state_dirty = true;
            self.last_leader_contact = self.now;
            self.reset_election_deadline();
        }
        let body = Body::RequestVoteResponse { granted };
        #[cfg(feature = "sim")]
        if self.config.mutation == Some(Mutation::ReleaseVoteBeforePersist) {
            self.send(from, body);
            return;
        }
        self.send_when_durable(from, body);
    }

    fn handle_vote_response(&mut self, from: NodeId, granted: bool) {
        let quorum = self.quorum();
        let voter = self.is_voter(from);
        let RoleState::Candidate { granted: votes } = &mut self.role else {
            return;
        };
        if !granted || !voter {
            return;
        }
        votes.insert(from);
        if votes.len() >= quorum {
            self.become_leader();
        }
    }

    fn handle_timeout_now(&mut self, from: NodeId) {
        if self.leader == Some(from) && self.may_campaign() {
            self.start_election(true);
        }
    }

    /// True if a tick at `now` would start a campaign (a pre-vote or an election): the node
    /// is awake, not the leader, may campaign, and its election timer is due. A host of many
    /// groups asks this before it ticks, to pace campaigns (ARCHITECTURE §14); leadership
    /// transfers do not go through ticks.
    pub fn campaign_due(&self, now: Time) -> bool {
        !self.quiesced
            && !matches!(self.role, RoleState::Leader(_))
            && now >= self.election_deadline
            && self.may_campaign()
    }

    pub(super) fn tick(&mut self) {
        if self.quiesced {
            // No timer runs while quiesced (`next_timer` is never due): a tick anyway changes
            // nothing.
            return;
        }
        if matches!(self.role, RoleState::Leader(_)) {
            self.leader_tick();
            return;
        }
        if self.now < self.election_deadline {
            return;
        }
        if !self.may_campaign() {
            // Non-voters and nodes without a configuration never campaign.
            self.reset_election_deadline();
            return;
        }
        // A node campaigning only because an uncommitted change removes it always asks for
        // pre-votes first, even with pre-vote off: it cannot vote for itself, and real
        // elections it cannot win would keep raising everyone's term and starve the voters'
        // own elections (the simulator found that livelock).
        if self.config.pre_vote || !self.is_voter(self.id()) {
            self.start_pre_vote();
        } else {
            self.start_election(false);
        }
    }

    /// A voter campaigns; so does a node that an uncommitted configuration removes or demotes
    /// (hashicorp's rule): until that change commits it may be the only node holding it, and
    /// without it no one could finish the change. Its own vote then does not count.
    ///
    /// "Removed by an uncommitted change" is judged against the configuration before the
    /// latest, which is committed whatever this node's commit index says: a leader appends a
    /// configuration only once the one before it committed, so in any log every configuration
    /// but the latest is committed (hashicorp reads its configurations from the log the same
    /// way at start). A node whose commit index lags (a restart that did not recover it, with
    /// a log store that keeps no commit index) would otherwise see no committed configuration
    /// that lists it and never campaign, even when it alone could finish the change (the
    /// simulator found that livelock at seed 30 884).
    fn may_campaign(&self) -> bool {
        let (latest_index, latest) = self.latest_configuration();
        let me = self.id();
        if latest.is_voter(me) {
            return true;
        }
        let (committed_index, committed) = self.committed_configuration();
        let before_latest = match self.configs.len() {
            n if n >= 2 => Some(&self.configs[n - 2].1),
            _ => None,
        };
        latest_index > committed_index
            && (committed.is_voter(me) || before_latest.is_some_and(|c| c.is_voter(me)))
            && latest.voters().next().is_some()
    }

    /// Our own vote, if it counts in our latest configuration.
    fn own_vote(&self) -> BTreeSet<NodeId> {
        let me = self.id();
        if self.is_voter(me) {
            BTreeSet::from([me])
        } else {
            BTreeSet::new()
        }
    }

    fn start_pre_vote(&mut self) {
        let me = self.id();
        self.role = RoleState::PreCandidate {
            granted: self.own_vote(),
        };
        self.set_leader(None);
        self.reset_election_deadline();
        self.role_changed();
        if self.own_vote().len() >= self.quorum() {
            self.start_election(false);
            return;
        }
        let last_log_id = self.log.last_log_id();
        let term = self.term.next();
        for peer in self.voters().to_vec() {
            if peer != me {
                let message = Message {
                    from: me,
                    to: peer,
                    term,
                    body: Body::PreVote { last_log_id },
                };
                self.emit(Effect::Send(message));
            }
        }
    }

    pub(super) fn start_election(&mut self, leadership_transfer: bool) {
        let me = self.id();
        if matches!(self.role, RoleState::Leader(_)) {
            self.finish_transfer(false);
            self.fail_leader_requests();
        }
        self.term = self.term.next();
        self.vote = Some(me);
        self.hard_state_dirty = true;
        self.role = RoleState::Candidate {
            granted: self.own_vote(),
        };
        self.set_leader(None);
        self.reset_election_deadline();
        self.role_changed();
        if self.own_vote().len() >= self.quorum() {
            // A single voter wins alone, but only once its term and vote are durable: a leader
            // that crashed before that could win the same term again after restarting and
            // write different entries under the same log ids (the simulator found this).
            self.win_after_seq = Some(self.last_issued_seq + 1);
            return;
        }
        let last_log_id = self.log.last_log_id();
        for peer in self.voters().to_vec() {
            if peer != me {
                // Held until our own vote and term are durable.
                self.send_when_durable(
                    peer,
                    Body::RequestVote {
                        last_log_id,
                        leadership_transfer,
                    },
                );
            }
        }
    }

    /// Becomes a follower in `term` (adopting it if newer), following `leader` if known.
    pub(super) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        let was = self.role();
        self.win_after_seq = None;
        self.quiesced = false;
        if matches!(self.role, RoleState::Leader(_)) {
            self.finish_transfer(term > self.term);
            self.fail_leader_requests();
        }
        if term > self.term {
            self.term = term;
            self.vote = None;
            self.hard_state_dirty = true;
        }
        self.role = RoleState::Follower;
        self.set_leader(leader);
        if leader.is_some() {
            self.last_leader_contact = self.now;
        }
        // Figure 2: the election timer restarts on hearing from a leader (or granting a vote),
        // not on merely seeing a higher term. Restarting it on every higher term let a node
        // with a short timeout and a stale log, campaigning again and again, keep everyone
        // else's timer from ever firing (a livelock the simulator found with unequal
        // timeouts). A deposed leader needs a fresh timer: its old one is long past.
        if leader.is_some() || was == Role::Leader {
            self.reset_election_deadline();
        }
        if was != Role::Follower || self.hard_state_dirty {
            self.role_changed();
        }
    }

    pub(super) fn become_leader(&mut self) {
        let me = self.id();
        let members: Vec<NodeId> = self
            .configs
            .last()
            .map(|(_, c)| c.members().filter(|&m| m != me).collect())
            .unwrap_or_default();
        let state = LeaderState::new(&members, self.log.last_index(), self.now, &self.config);
        self.role = RoleState::Leader(Box::new(state));
        self.set_leader(Some(me));
        self.role_changed();
        self.append_noop();
    }

    fn role_changed(&mut self) {
        let event = Event::RoleChanged {
            role: self.role(),
            term: self.term,
        };
        self.emit(Effect::Event(event));
    }

    /// Resolves every pending leader request: their outcome is unknown now.
    pub(super) fn fail_leader_requests(&mut self) {
        let RoleState::Leader(leader) = &mut self.role else {
            return;
        };
        let tokens = leader.drain_pending();
        for token in tokens {
            self.reply(token, Err(RequestError::LeadershipLost));
        }
    }
}
