//! The follower side of replication: AppendEntries and heartbeats received (Raft §5.3).
//!
//! Every check on a received AppendEntries happens before any state changes (validate at the
//! gateway): entries must follow `prev_log_id` consecutively, with terms that never decrease
//! and never exceed the message's term, and configuration entries must decode.

#[cfg(feature = "sim")]
use super::config::Mutation;
use super::types::InvalidInput;
use super::{Core, RoleState};
use ringraft_net::message::{
    AppendEntries, AppendEntriesResponse, AppendResult, Body, ConflictHint,
};
use ringraft_storage::{Configuration, EntryKind, Index, NodeId, Term};

impl Core {
    /// Same-term leader traffic: follow `from` (a candidate of this term yields to it).
    pub(super) fn accept_leader(&mut self, from: NodeId) -> bool {
        if matches!(self.role, RoleState::Leader(_)) {
            // Two leaders in one term is impossible under the protocol: reject the input.
            self.invalid(Some(from), InvalidInput::UnknownPeer);
            return false;
        }
        if !matches!(self.role, RoleState::Follower) || self.leader != Some(from) {
            self.become_follower(self.term, Some(from));
        }
        self.last_leader_contact = self.now;
        self.reset_election_deadline();
        true
    }

    fn entries_are_well_formed(&self, ae: &AppendEntries, term: Term) -> bool {
        let mut expected = ae.prev_log_id.index.next();
        let mut previous_term = ae.prev_log_id.term;
        for entry in &ae.entries {
            if entry.id.index != expected || entry.id.term < previous_term || entry.id.term > term {
                return false;
            }
            expected = expected.next();
            previous_term = entry.id.term;
        }
        true
    }

    pub(super) fn handle_append_entries(&mut self, from: NodeId, ae: AppendEntries) {
        if !self.accept_leader(from) {
            return;
        }
        if !self.entries_are_well_formed(&ae, self.term) {
            self.invalid(Some(from), InvalidInput::MalformedEntries);
            return;
        }
        if ae
            .entries
            .iter()
            .any(|e| e.kind == EntryKind::Configuration && Configuration::decode(&e.data).is_err())
        {
            self.invalid(Some(from), InvalidInput::BadConfigurationEntry);
            return;
        }
        let round = ae.round;
        let prev = ae.prev_log_id;
        // Entries at or below our compaction point are committed, hence identical to the
        // leader's: skip them.
        let compacted = self.log.prev().index;
        let (prev, entries) = if prev.index < compacted {
            let skip = (compacted.0 - prev.index.0) as usize;
            if skip > ae.entries.len() {
                // Everything offered is already compacted here: acknowledge what we hold.
                return self.respond_append(
                    from,
                    round,
                    AppendResult::Success {
                        match_index: compacted.min(prev.index.plus(ae.entries.len() as u64)),
                    },
                );
            }
            (self.log.prev(), ae.entries[skip..].to_vec())
        } else {
            (prev, ae.entries)
        };
        match self.log.term_at(prev.index) {
            None => {
                let hint = ConflictHint::LogTooShort {
                    last_index: self.log.last_index(),
                };
                let result = AppendResult::Conflict {
                    rejected_prev_index: prev.index,
                    hint,
                };
                return self.respond_append(from, round, result);
            }
            Some(term) if term != prev.term => {
                let first_index = self.log.first_index_of_term_run(prev.index);
                let hint = ConflictHint::TermMismatch { term, first_index };
                let result = AppendResult::Conflict {
                    rejected_prev_index: prev.index,
                    hint,
                };
                return self.respond_append(from, round, result);
            }
            Some(_) => {}
        }
        let last_new = prev.index.plus(entries.len() as u64);
        // Skip entries we already hold; truncate at the first conflict; append the rest.
        let start = entries
            .iter()
            .position(|e| self.log.term_at(e.id.index) != Some(e.id.term))
            .unwrap_or(entries.len());
        let conflicts = entries
            .get(start)
            .is_some_and(|e| self.log.term_at(e.id.index).is_some());
        if conflicts && entries[start].id.index <= self.commit {
            // A leader never contradicts a committed entry: this message is corrupt or from a
            // broken peer. Reject it rather than lose committed data.
            let index = entries[start].id.index;
            self.invalid(Some(from), InvalidInput::ConflictsWithCommitted { index });
            return;
        }
        let missing = entries[start..]
            .iter()
            .find(|e| e.kind == EntryKind::Restore && !self.has_staged(e.id));
        #[cfg(feature = "sim")]
        let missing =
            missing.filter(|_| self.config.mutation != Some(Mutation::AcceptUnstagedRestore));
        if let Some(entry) = missing {
            // A log that holds a restore entry must hold its data: have the leader stage it
            // here first (see core::restore).
            let result = AppendResult::Conflict {
                rejected_prev_index: prev.index,
                hint: ConflictHint::MissingRestore { entry: entry.id },
            };
            return self.respond_append(from, round, result);
        }
        if conflicts {
            self.stage_truncate(entries[start].id.index);
        }
        if start < entries.len() {
            let new: Vec<_> = entries.into_iter().skip(start).collect();
            self.stage_append(new);
        }
        #[allow(unused_mut)]
        let mut commit_cap = last_new;
        #[cfg(feature = "sim")]
        if self.config.mutation == Some(Mutation::FollowerCommitWithoutMin) {
            commit_cap = self.log.last_index();
        }
        self.advance_follower_commit(ae.leader_commit.min(commit_cap));
        self.respond_append(
            from,
            round,
            AppendResult::Success {
                match_index: last_new,
            },
        );
    }

    fn respond_append(&mut self, to: NodeId, round: u64, result: AppendResult) {
        #[cfg(feature = "sim")]
        let success = matches!(result, AppendResult::Success { .. });
        let body = Body::AppendEntriesResponse(AppendEntriesResponse { result, round });
        #[cfg(feature = "sim")]
        if success && self.config.mutation == Some(Mutation::AppendAckBeforeEntriesDurable) {
            return self.send_when_term_durable(to, body);
        }
        self.send_when_durable(to, body);
    }

    pub(super) fn handle_heartbeat(&mut self, from: NodeId, leader_commit: Index, round: u64) {
        if !self.accept_leader(from) {
            return;
        }
        // The leader caps the commit index at our match index, so our log agrees with it up
        // to there.
        self.advance_follower_commit(leader_commit.min(self.log.last_index()));
        self.send_when_term_durable(from, Body::HeartbeatResponse { round });
    }

    pub(super) fn advance_follower_commit(&mut self, commit: Index) {
        if commit > self.commit {
            self.commit = commit;
            self.emit_apply();
        }
    }
}
