//! The hand-driven test cluster's disk ([`super::testkit`]): a log, a hard state and the
//! newest snapshot, written by the core's persist batches directly. (The simulator's nodes run
//! the shard glue over `super::node`'s log store instead.)
//!
//! Fault model (what a crash may do to data, after TigerBeetle's habit of writing it down):
//! - A persist batch is durable only once its completion event fired (the fsync returned).
//! - At a crash, the batches still in flight survive as a prefix: the first `k` complete, the
//!   next may be torn (its truncation and a prefix of its entries survive; its commit index,
//!   hard state and compaction do not), the rest are lost. This is what a checksummed,
//!   append-only log recovers to after losing unsynced pages.
//! - Snapshots, and user restores staged beside the log, are durable once written (the
//!   snapshot store fsyncs before it reports).
//! - Durable data is never damaged (bit rot is the storage crate's concern: its recovery
//!   refuses corrupt records, and its tests cover that).

use super::kv::Kv;
use crate::core::{HardState, PersistBatch, RecoveredState};
use bytes::Bytes;
use ringraft_storage::{Entry, Index, LogId, SnapshotMeta};
use std::collections::{BTreeMap, VecDeque};

/// One node's disk.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    hard_state: HardState,
    commit: Index,
    /// The entry before `log[0]`.
    prev: LogId,
    log: Vec<Entry>,
    snapshot: Option<(SnapshotMeta, Kv)>,
    /// Staged user restores, by their restore entry's id.
    staged: BTreeMap<LogId, (SnapshotMeta, Bytes)>,
    inflight: VecDeque<PersistBatch>,
}

impl Disk {
    /// A disk holding a bootstrapped state.
    pub fn with_state(state: &RecoveredState) -> Disk {
        Disk {
            hard_state: state.hard_state,
            commit: state.hard_state.commit,
            prev: state.log_prev,
            log: state.entries.clone(),
            snapshot: None,
            staged: BTreeMap::new(),
            inflight: VecDeque::new(),
        }
    }

    /// Queues a batch; it becomes durable when completed.
    pub fn submit(&mut self, batch: PersistBatch) {
        self.inflight.push_back(batch);
    }

    /// Completes the oldest in-flight batch, which must be `seq`. Errors describe an ordering or
    /// consistency bug in the core's persist batches.
    pub fn complete(&mut self, seq: u64) -> Result<(), String> {
        let Some(batch) = self.inflight.pop_front() else {
            return Err(format!("disk: completion of {seq} with nothing in flight"));
        };
        if batch.seq != seq {
            return Err(format!(
                "disk: completed {seq} but oldest in flight is {}",
                batch.seq
            ));
        }
        self.write(&batch, batch.entries.len(), true)
    }

    fn last_index(&self) -> Index {
        self.prev.index.plus(self.log.len() as u64)
    }

    fn write(&mut self, batch: &PersistBatch, entries: usize, whole: bool) -> Result<(), String> {
        if let Some(from) = batch.truncate_from {
            if from <= self.prev.index {
                return Err(format!(
                    "disk: truncation at {from}, at or below {}",
                    self.prev
                ));
            }
            self.log.truncate((from.0 - self.prev.index.0 - 1) as usize);
        }
        for entry in batch.entries.iter().take(entries) {
            let expected = self.last_index().next();
            if entry.id.index != expected {
                return Err(format!(
                    "disk: append of {} where {expected} was expected",
                    entry.id
                ));
            }
            self.log.push(entry.clone());
        }
        if whole {
            if let Some(commit) = batch.commit {
                self.commit = self.commit.max(commit);
            }
            if let Some(hs) = batch.hard_state {
                self.hard_state = hs;
            }
            if let Some(id) = batch.compact_through {
                self.compact_through(id);
            }
        }
        Ok(())
    }

    fn compact_through(&mut self, id: LogId) {
        if id.index <= self.prev.index {
            return;
        }
        let offset = (id.index.0 - self.prev.index.0) as usize;
        let holds = offset <= self.log.len() && self.log[offset - 1].id == id;
        if holds {
            self.log.drain(..offset);
        } else {
            self.log.clear();
        }
        self.prev = id;
    }

    /// Stages a user restore durably.
    pub fn stage(&mut self, meta: SnapshotMeta, data: Bytes) {
        self.staged.insert(meta.last, (meta, data));
    }

    /// The staged restore for the entry `id`.
    pub fn staged(&self, id: LogId) -> Option<&(SnapshotMeta, Bytes)> {
        self.staged.get(&id)
    }

    /// Deletes staged restores at or below `through`.
    pub fn drop_staged(&mut self, through: Index) {
        self.staged.retain(|id, _| id.index > through);
    }

    /// What a restarting node reads back.
    pub fn recover(&self) -> RecoveredState {
        let mut hard_state = self.hard_state;
        hard_state.commit = hard_state.commit.max(self.commit).min(self.last_index());
        RecoveredState {
            hard_state,
            snapshot: self.snapshot.as_ref().map(|(m, _)| m.clone()),
            log_prev: self.prev,
            entries: self.log.clone(),
            staged_restores: self.staged.values().map(|(m, _)| m.clone()).collect(),
        }
    }

    /// A copy of the durable state only (what survives a crash that loses everything in
    /// flight).
    pub fn durable_copy(&self) -> Disk {
        Disk {
            inflight: VecDeque::new(),
            ..self.clone()
        }
    }
}
