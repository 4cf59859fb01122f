//! User restore: replacing the cluster's state with an external snapshot (hashicorp's
//! `Restore`), made safe by staging the snapshot before the log entry that restores it.
//!
//! hashicorp installs the external snapshot on the leader at once, as a compaction point above
//! every entry, and replicates it by InstallSnapshot. That point is not committed: if the
//! leader loses leadership before followers have it, the leader and any follower that
//! installed it hold a compaction point that the next leader's log contradicts, and
//! replication to them can never succeed again. The simulator found this livelock.
//!
//! Here a restore is an ordinary log entry ([`EntryKind::Restore`]) whose data lives beside the
//! log, in the snapshot store's staging area, under the entry's own id:
//!
//! 1. The leader reserves the entry's id (its term, its last index + 1), refuses writes,
//!    configuration changes and transfers meanwhile, and asks the glue to stage the caller's
//!    snapshot durably ([`Effect::StageRestore`]).
//! 2. Once staged, it appends the restore entry. It commits like any entry; applying it
//!    replaces the state machine with the staged snapshot. Entries before it apply before it,
//!    entries after it apply on top of it: no proposal needs to be cancelled.
//! 3. A follower accepts an AppendEntries carrying a restore entry only if it has staged that
//!    restore; otherwise it answers [`ConflictHint::MissingRestore`] and the leader streams the
//!    staged snapshot to it with stage-only InstallSnapshot chunks, then resends the entries.
//!    So every log that holds a restore entry also holds its data durably, a committed restore
//!    entry's data is on a quorum, and any future leader can apply and stream it.
//! 4. A staged restore is dropped once a snapshot at or above its entry exists (the snapshot
//!    contains its effect); a leader whose follower needs the entry afterwards sends that
//!    snapshot instead.

use super::types::{Effect, RequestError};
use super::{Core, RoleState};
use bytes::Bytes;
use ringraft_storage::{EntryKind, Index, LogId, NodeId, SnapshotMeta};

impl Core {
    /// Leader: start a user restore (see the module docs).
    pub(super) fn user_restore(&mut self, token: super::Token) {
        if self.refuse_write(token) {
            return;
        }
        let last = LogId::new(self.term, self.log.last_index().next());
        let (configuration_index, configuration) = self.latest_configuration();
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        l.restoring = Some((token, last));
        let meta = SnapshotMeta {
            id: String::new(),
            last,
            configuration,
            configuration_index,
            size: 0,
        };
        self.emit(Effect::StageRestore { token, meta });
    }

    /// Leader: the restore's snapshot is staged; append its entry.
    pub(super) fn restore_staged(&mut self, token: super::Token, meta: SnapshotMeta) {
        let next = LogId::new(self.term, self.log.last_index().next());
        let RoleState::Leader(l) = &mut self.role else {
            // Leadership was lost meanwhile (the request was answered then); the staged copy
            // is dropped once a snapshot passes its index.
            return;
        };
        if l.restoring != Some((token, meta.last)) {
            return;
        }
        l.restoring = None;
        if meta.last != next {
            // Nothing appends while a restore is staged, so this is a core bug; fail the
            // restore rather than append its entry under an id it was not staged for.
            self.reply(token, Err(RequestError::RestoreFailed));
            return;
        }
        self.restores.insert(meta.last, meta);
        let (first, last) = self.append_as_leader(vec![(EntryKind::Restore, Bytes::new())]);
        if let RoleState::Leader(l) = &mut self.role {
            l.push_pending_commit(token, first, last);
        }
    }

    /// Leader: staging failed; nothing changed.
    pub(super) fn restore_stage_failed(&mut self, token: super::Token) {
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        if l.restoring.is_some_and(|(t, _)| t == token) {
            l.restoring = None;
            self.reply(token, Err(RequestError::RestoreFailed));
        }
    }

    /// True if this node may hold the restore entry `entry` (its data is staged here).
    pub(super) fn has_staged(&self, entry: LogId) -> bool {
        self.restores.contains_key(&entry)
    }

    /// The staged restore whose entry, in this node's log, is at `index`.
    pub(super) fn staged_restore_at(&self, index: Index) -> Option<SnapshotMeta> {
        let term = self.log.term_at(index)?;
        self.restores.get(&LogId::new(term, index)).cloned()
    }

    /// Follower: a restore staged from the leader's stream.
    pub(super) fn restore_received(&mut self, meta: SnapshotMeta) {
        self.restores.insert(meta.last, meta);
    }

    /// Forgets staged restores at or below `through` (a snapshot there contains their effect)
    /// and asks the glue to delete them.
    pub(super) fn drop_restores_through(&mut self, through: Index) {
        let before = self.restores.len();
        self.restores.retain(|id, _| id.index > through);
        if self.restores.len() < before {
            self.emit(Effect::DropStagedRestores { through });
        }
    }

    /// Leader: `peer` refused entries for want of the restore `entry`. Stage it there (or, if a
    /// snapshot already covers it, send the snapshot), then resend from `rejected_prev + 1`.
    pub(super) fn stage_restore_on(
        &mut self,
        peer: NodeId,
        entry: LogId,
        rejected_prev: Index,
        response_round: u64,
    ) {
        if self.log.term_at(entry.index) != Some(entry.term) && !self.snapshot_covers(entry.index) {
            return; // Not an entry of ours: a stale or bogus answer.
        }
        let covered = self.snapshot_covers(entry.index);
        let staged = self.has_staged(entry);
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        let round = l.round();
        let Some(p) = l.progress.get_mut(&peer) else {
            return;
        };
        p.ack_round(response_round, round);
        if matches!(p.state, super::ReplicationState::Snapshot { .. })
            || rejected_prev < p.match_index
        {
            return; // Already streaming, or an answer older than what the follower confirmed.
        }
        if covered {
            if let Some(snapshot) = self.snapshot.as_ref() {
                p.become_snapshot(snapshot.last.index, round);
            }
        } else if staged {
            p.become_staging(entry.index, rejected_prev.next(), round);
        } else {
            return;
        }
        self.send_snapshot_chunk(peer);
    }

    fn snapshot_covers(&self, index: Index) -> bool {
        self.snapshot
            .as_ref()
            .is_some_and(|s| s.last.index >= index)
    }
}
