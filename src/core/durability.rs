//! The durability gate: persist batches, and messages held until what they depend on is
//! durable (see the ordering contract in the module docs of `core`).

use super::*;

/// The most entries `stage_entry` reserves room for up front (a guess from the last batch).
const STAGED_HINT_MAX: usize = 4096;

impl Core {
    /// Sends `body` once everything staged or issued so far is durable.
    pub(super) fn send_when_durable(&mut self, to: NodeId, body: Body) {
        let needed =
            self.last_issued_seq + u64::from(!self.staged.is_empty() || self.hard_state_dirty);
        self.send_after(needed, to, body);
    }

    /// Sends `body` once our term and vote are durable (log writes may still be in flight):
    /// for answers that promise nothing about the log, such as a heartbeat acknowledgement.
    /// Not waiting for a slow disk's log writes keeps the leader's lease alive under load.
    pub(super) fn send_when_term_durable(&mut self, to: NodeId, body: Body) {
        #[cfg(feature = "sim")]
        if self.config.mutation == Some(Mutation::HeartbeatAckBeforeTermDurable)
            && matches!(body, Body::HeartbeatResponse { .. })
        {
            return self.send(to, body);
        }
        let needed = if self.hard_state_dirty {
            self.last_issued_seq + 1
        } else {
            self.hard_state_seq
        };
        self.send_after(needed, to, body);
    }

    pub(super) fn send_after(&mut self, needed: u64, to: NodeId, body: Body) {
        let message = Message {
            from: self.id(),
            to,
            term: self.term,
            body,
        };
        if needed <= self.persisted_seq {
            self.emit(Effect::Send(message));
        } else {
            self.held.push_back((needed, message));
        }
    }

    pub(super) fn reply(&mut self, token: Token, result: Result<Outcome, RequestError>) {
        self.emit(Effect::Reply { token, result });
    }

    pub(super) fn stage_truncate(&mut self, from: Index) {
        assert!(
            from > self.commit,
            "{}: truncating committed entries at {from}",
            self.id()
        );
        self.log.truncate_from(from);
        #[allow(unused_mut)]
        let mut keep_configs = false;
        #[cfg(feature = "sim")]
        if self.config.mutation == Some(Mutation::KeepTruncatedConfigurations) {
            keep_configs = true;
        }
        if !keep_configs {
            self.configs.retain(|(i, _)| *i < from);
            self.configs_changed();
        }
        self.staged.entries.retain(|e| e.id.index < from);
        let earliest = self.staged.truncate_from.map_or(from, |t| t.min(from));
        self.staged.truncate_from = Some(earliest);
    }

    /// Appends entries (already validated) to the log and the persist batch.
    pub(super) fn stage_append(&mut self, entries: Vec<Entry>) {
        for entry in &entries {
            self.note_configuration(entry);
        }
        self.log.append(entries.iter().cloned());
        if self.staged.entries.is_empty() {
            // The common case (one append per persist batch): the vector itself, not a copy.
            self.staged.entries = entries;
        } else {
            self.staged.entries.extend(entries);
        }
    }

    /// Appends one entry to the log and to the staged persist batch (a leader's own entries,
    /// one at a time as it builds them).
    pub(super) fn stage_entry(&mut self, entry: Entry) {
        self.note_configuration(&entry);
        self.log.append([entry.clone()]);
        if self.staged.entries.capacity() == 0 {
            // A leader stages one entry per request of its turn, so a busy one's batches are
            // alike: one allocation of the last batch's size, not one per doubling (with 256
            // clients, those reallocations were 1.2 % of the in-memory cluster's shard thread).
            self.staged
                .entries
                .reserve(self.staged_hint.max(1) as usize);
        }
        self.staged.entries.push(entry);
    }

    /// A configuration entry takes effect as soon as it is in the log (Raft's rule for
    /// membership changes).
    fn note_configuration(&mut self, entry: &Entry) {
        if entry.kind == EntryKind::Configuration {
            // Validated at the gateway (the AppendEntries handler, or our own proposal).
            if let Ok(c) = Configuration::decode(&entry.data) {
                self.configs.push((entry.id.index, c));
                self.configs_changed();
            }
        }
    }

    pub(super) fn flush_persist(&mut self) {
        if self.staged.is_empty() && !self.hard_state_dirty {
            return;
        }
        self.last_issued_seq += 1;
        let mut batch = std::mem::take(&mut self.staged);
        batch.seq = self.last_issued_seq;
        self.staged_hint = u32::try_from(batch.entries.len().min(STAGED_HINT_MAX)).unwrap_or(1);
        if self.hard_state_dirty {
            batch.hard_state = Some(self.hard_state());
            self.hard_state_seq = batch.seq;
        }
        if self.commit > self.commit_recorded {
            // The commit index rides along with a write that happens anyway; it never causes a
            // write by itself (hashicorp's CommitTrackingLogStore stages it the same way).
            batch.commit = Some(self.commit);
        }
        self.commit_recorded = self.commit;
        self.hard_state_dirty = false;
        self.log.note_persist_batch(batch.seq);
        self.emit(Effect::Persist(batch));
    }

    /// The hard state as it stands.
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.commit,
        }
    }

    pub(super) fn persisted(&mut self, seq: u64) {
        if seq > self.last_issued_seq {
            self.invalid(None, InvalidInput::PersistedUnknownBatch { seq });
            return;
        }
        if seq <= self.persisted_seq {
            return;
        }
        self.persisted_seq = seq;
        self.log.mark_persisted(seq);
        // Release, in order, every held message whose writes are now durable (a heartbeat
        // answer, which waits only for the term, may overtake an append answer).
        let mut i = 0;
        while i < self.held.len() {
            if self.held[i].0 > seq {
                i += 1;
            } else if let Some((_, message)) = self.held.remove(i) {
                self.emit(Effect::Send(message));
            }
        }
        if matches!(self.role, RoleState::Leader(_)) {
            self.maybe_commit();
        }
        if matches!(self.role, RoleState::Candidate { .. })
            && self.win_after_seq.is_some_and(|needed| needed <= seq)
        {
            self.win_after_seq = None;
            self.become_leader();
        }
    }
}
