//! Snapshots: log compaction behind the state machine's snapshots, streaming a snapshot to a
//! follower that needs compacted entries, and installing one (Raft §7).
//!
//! The core never touches snapshot bytes. The leader asks the glue to read a chunk
//! (`Effect::ReadSnapshotChunk`), sends it as an `InstallSnapshot` with its offset, and asks for
//! the next chunk when the follower answers with the offset it expects next — so a lost chunk
//! is resent from where the follower stands. The follower hands chunks to the glue
//! (`Effect::WriteSnapshotChunk`); once the whole snapshot is durable it installs it: if its
//! log holds the snapshot's last entry (same index and term) it keeps the entries after it,
//! otherwise it discards its whole log (Figure 13, rule 7). Never keeping a conflicting suffix
//! is what makes hashicorp/raft#697's install-snapshot livelock impossible here.

use super::types::{Effect, InvalidInput};
use super::{Core, ReplicationState, RoleState};
use bytes::Bytes;
use ringraft_net::message::{Body, InstallSnapshot, InstallSnapshotResponse};
use ringraft_storage::{Index, LogId, NodeId, SnapshotMeta};

/// A snapshot being received from the leader.
pub(crate) struct Receiving {
    meta: SnapshotMeta,
    /// A user restore to stage, not a snapshot to install.
    stage: bool,
    next_offset: u64,
    leader: NodeId,
    round: u64,
}

impl Core {
    /// The state machine saved a snapshot: remember it and compact the log behind it.
    pub(super) fn snapshot_taken(&mut self, meta: SnapshotMeta) {
        let newest = self
            .snapshot
            .as_ref()
            .map_or(self.log.prev().index, |s| s.last.index);
        if meta.last.index > self.applied
            || meta.last.index <= newest
            || self
                .log
                .term_at(meta.last.index)
                .is_some_and(|t| t != meta.last.term)
        {
            self.invalid(None, InvalidInput::BadSnapshot { last: meta.last });
            return;
        }
        let upto = meta.last.index.min(Index(
            self.log
                .last_index()
                .0
                .saturating_sub(self.config.trailing_logs),
        ));
        let through = meta.last.index;
        self.snapshot = Some(meta);
        self.drop_restores_through(through);
        if upto > self.log.prev().index {
            if let Some(term) = self.log.term_at(upto) {
                self.compact(LogId::new(term, upto));
            }
        }
    }

    /// Drops log entries through `id` (covered by a snapshot) and stages the same for disk.
    fn compact(&mut self, id: LogId) {
        self.log.compact_through(id);
        self.staged.compact_through = Some(id);
        // Keep the newest configuration at or below the compaction point as the base.
        let base = self.configs.iter().rposition(|(i, _)| *i <= id.index);
        if let Some(base) = base {
            self.configs.drain(..base);
        }
    }

    /// What `peer`'s snapshot stream sends: the staged restore it is being given, or the
    /// leader's snapshot. `None` if there is nothing to send.
    fn stream_source(&self, peer: NodeId) -> Option<(SnapshotMeta, bool)> {
        let RoleState::Leader(l) = &self.role else {
            return None;
        };
        let staging = l.progress.get(&peer).and_then(|p| match p.state {
            ReplicationState::Snapshot {
                index, stage: true, ..
            } => Some(index),
            _ => None,
        });
        match staging.and_then(|index| self.staged_restore_at(index)) {
            Some(meta) => Some((meta, true)),
            // Not staging, or a snapshot now covers the restore (and replaced it): the snapshot.
            None => self.snapshot.clone().map(|meta| (meta, false)),
        }
    }

    /// Leader: start or continue streaming the snapshot (or a staged restore) to `peer`.
    pub(super) fn send_snapshot_chunk(&mut self, peer: NodeId) {
        let Some((meta, stage)) = self.stream_source(peer) else {
            // Staging a restore that is gone with no snapshot to replace it (cannot happen:
            // a restore is dropped only behind a snapshot): probe rather than stall.
            if let RoleState::Leader(l) = &mut self.role {
                let round = l.round();
                if let Some(p) = l.progress.get_mut(&peer) {
                    if matches!(p.state, ReplicationState::Snapshot { stage: true, .. }) {
                        p.on_staged(round);
                    }
                }
            }
            return;
        };
        let max_bytes = self.config.snapshot_chunk_bytes;
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        let round = l.round();
        let Some(p) = l.progress.get_mut(&peer) else {
            return;
        };
        let streaming = match p.state {
            ReplicationState::Snapshot { stage: s, .. } => s == stage,
            _ => false,
        };
        if !streaming {
            p.become_snapshot(meta.last.index, round);
        }
        let ReplicationState::Snapshot {
            index,
            next_offset,
            in_flight,
            sent_round,
            ..
        } = &mut p.state
        else {
            return;
        };
        if *index != meta.last.index {
            // A newer snapshot replaced the one being sent: start over with it.
            *index = meta.last.index;
            *next_offset = 0;
            *in_flight = false;
        }
        if *in_flight {
            return;
        }
        *in_flight = true;
        *sent_round = round;
        let offset = *next_offset;
        self.emit(Effect::ReadSnapshotChunk {
            peer,
            meta,
            stage,
            offset,
            max_bytes,
        });
    }

    /// Leader: a chunk the glue read for `peer`.
    pub(super) fn snapshot_chunk_read(
        &mut self,
        peer: NodeId,
        snapshot: LogId,
        offset: u64,
        data: Bytes,
        done: bool,
    ) {
        let Some((meta, stage)) = self.stream_source(peer) else {
            return;
        };
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        let round = l.round();
        let Some(p) = l.progress.get(&peer) else {
            return;
        };
        let ReplicationState::Snapshot {
            index,
            next_offset,
            stage: streaming_stage,
            ..
        } = p.state
        else {
            return;
        };
        if snapshot != meta.last
            || index != snapshot.index
            || offset != next_offset
            || streaming_stage != stage
        {
            return; // A stale read.
        }
        let body = Body::InstallSnapshot(InstallSnapshot {
            meta,
            offset,
            data,
            done,
            stage,
            round,
        });
        self.send(peer, body);
    }

    /// Leader: the follower's answer to a chunk.
    pub(super) fn handle_snapshot_response(&mut self, from: NodeId, r: InstallSnapshotResponse) {
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        let round = l.round();
        let Some(p) = l.progress.get_mut(&from) else {
            self.invalid(Some(from), InvalidInput::UnknownPeer);
            return;
        };
        p.ack_round(r.round, round);
        let ReplicationState::Snapshot {
            index,
            next_offset,
            in_flight,
            stage,
            ..
        } = &mut p.state
        else {
            return;
        };
        if *index != r.last.index || *stage != r.stage {
            return;
        }
        if r.done && r.stage {
            // Staged: resend the entries it refused.
            p.on_staged(round);
            self.send_appends(from);
        } else if r.done {
            p.on_snapshot_installed(r.last.index, round);
            self.maybe_commit();
            self.send_appends(from);
        } else {
            *next_offset = r.next_offset;
            *in_flight = false;
            self.send_snapshot_chunk(from);
        }
        self.resolve_verifications();
    }

    /// Follower: a chunk from the leader.
    pub(super) fn handle_install_snapshot(&mut self, from: NodeId, m: InstallSnapshot) {
        if !self.accept_leader(from) {
            return;
        }
        let last = m.meta.last;
        let stage = m.stage;
        if last.index <= self.commit
            || last.index <= self.log.prev().index
            || (stage && self.has_staged(last))
        {
            // We already hold everything it covers (committed entries match the leader's), or
            // already staged this restore.
            let size = m.meta.size;
            self.answer_snapshot(from, last, size, true, stage, m.round);
            return;
        }
        let expected = match &self.receiving {
            Some(r) if r.meta.last == last && r.stage == stage => r.next_offset,
            _ => 0,
        };
        if m.offset != expected {
            self.answer_snapshot(from, last, expected, false, stage, m.round);
            return;
        }
        self.receiving = Some(Box::new(Receiving {
            meta: m.meta.clone(),
            stage,
            next_offset: m.offset,
            leader: from,
            round: m.round,
        }));
        self.emit(Effect::WriteSnapshotChunk {
            meta: m.meta,
            offset: m.offset,
            data: m.data,
            done: m.done,
            stage,
        });
    }

    /// Follower: the glue stored a chunk.
    pub(super) fn snapshot_chunk_written(
        &mut self,
        snapshot: LogId,
        stage: bool,
        next_offset: u64,
        done: bool,
    ) {
        let Some(r) = self.receiving.as_mut() else {
            return;
        };
        // A staged restore and the leader's own snapshot can end at the same entry (the leader
        // snapshots right after applying the restore): a chunk of the transfer this one
        // replaced must not complete it (simulator, seed 15441).
        if r.meta.last != snapshot || r.stage != stage {
            return;
        }
        r.next_offset = next_offset;
        let (leader, round, stage) = (r.leader, r.round, r.stage);
        if !done {
            self.answer_snapshot(leader, snapshot, next_offset, false, stage, round);
            return;
        }
        let Some(r) = self.receiving.take() else {
            return;
        };
        if stage {
            self.restore_received(r.meta);
        } else {
            self.install_snapshot(r.meta.clone());
        }
        self.answer_snapshot(leader, snapshot, next_offset, true, stage, round);
    }

    fn answer_snapshot(
        &mut self,
        to: NodeId,
        last: LogId,
        next_offset: u64,
        done: bool,
        stage: bool,
        round: u64,
    ) {
        let body = Body::InstallSnapshotResponse(InstallSnapshotResponse {
            last,
            next_offset,
            done,
            stage,
            round,
        });
        self.send_when_durable(to, body);
    }

    /// Replaces the log prefix (or the whole log) and the state machine with `meta`.
    fn install_snapshot(&mut self, meta: SnapshotMeta) {
        let last = meta.last;
        if last.index <= self.commit {
            return;
        }
        #[allow(unused_mut)]
        let mut conflicting = self.log.term_at(last.index) != Some(last.term);
        #[cfg(feature = "sim")]
        if self.config.mutation == Some(super::Mutation::KeepConflictingSuffixOnInstall)
            && self.log.last_index() > last.index
        {
            // The bug: trust the suffix anyway, and keep it after the snapshot.
            self.log.force_prev(last);
            conflicting = false;
        }
        if conflicting && self.log.last_index() > self.commit {
            // Figure 13 rule 7: no matching entry, so nothing after it can be trusted.
            self.stage_truncate(self.commit.next().max(self.log.prev().index.next()));
        }
        self.compact(last);
        // Close the batch here: entries appended later in this turn follow the snapshot, and a
        // batch applies its compaction after its appends.
        self.flush_persist();
        self.configs.retain(|(i, _)| *i > last.index);
        self.configs
            .insert(0, (meta.configuration_index, meta.configuration.clone()));
        self.configs_changed();
        self.commit = last.index;
        self.apply_requested = last.index;
        self.applied = last.index;
        self.snapshot = Some(meta.clone());
        self.drop_restores_through(last.index);
        self.emit(Effect::RestoreSnapshot { meta });
        self.emit_apply();
    }
}
