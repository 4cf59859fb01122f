//! The simulated disk.
//!
//! Fault model (what a crash may do to data, after TigerBeetle's habit of writing it down):
//! - A persist batch is durable only once its completion event fired (the fsync returned).
//! - At a crash, the batches still in flight survive as a prefix: the first `k` complete, the
//!   next may be torn (its truncation and a prefix of its entries survive, its commit index and
//!   hard state do not), the rest are lost. This is what a checksummed, append-only log
//!   recovers to after losing unsynced pages.
//! - Durable data is never damaged (bit rot is the storage crate's concern: its recovery
//!   refuses corrupt records, and its tests cover that).

use crate::core::{HardState, PersistBatch, RecoveredState, Rng};
use ringraft_storage::{Entry, Index, LogId};
use std::collections::VecDeque;

/// One node's disk.
#[derive(Clone, Debug, Default)]
pub struct Disk {
    hard_state: HardState,
    commit: Index,
    /// Entry `i` lives at `log[i - 1]`.
    log: Vec<Entry>,
    inflight: VecDeque<PersistBatch>,
}

impl Disk {
    /// A disk holding a bootstrapped state.
    pub fn with_state(state: &RecoveredState) -> Disk {
        Disk {
            hard_state: state.hard_state,
            commit: state.hard_state.commit,
            log: state.entries.clone(),
            inflight: VecDeque::new(),
        }
    }

    /// Queues a batch; it becomes durable at `complete`.
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

    fn write(&mut self, batch: &PersistBatch, entries: usize, whole: bool) -> Result<(), String> {
        if let Some(from) = batch.truncate_from {
            if from.0 == 0 {
                return Err("disk: truncation at index 0".into());
            }
            self.log.truncate((from.0 - 1) as usize);
        }
        for entry in batch.entries.iter().take(entries) {
            let expected = self.log.len() as u64 + 1;
            if entry.id.index.0 != expected {
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
        }
        Ok(())
    }

    /// A crash: in-flight batches survive as a (possibly torn) prefix.
    pub fn crash(&mut self, rng: &mut Rng) -> Result<(), String> {
        let batches: Vec<PersistBatch> = self.inflight.drain(..).collect();
        let keep = rng.below(batches.len() as u64 + 1) as usize;
        for batch in &batches[..keep] {
            self.write(batch, batch.entries.len(), true)?;
        }
        if let Some(torn) = batches.get(keep) {
            if rng.chance(1, 2) {
                let entries = rng.below(torn.entries.len() as u64 + 1) as usize;
                self.write(torn, entries, false)?;
            }
        }
        Ok(())
    }

    /// What a restarting node reads back.
    pub fn recover(&self) -> RecoveredState {
        let last = Index(self.log.len() as u64);
        let mut hard_state = self.hard_state;
        hard_state.commit = hard_state.commit.max(self.commit).min(last);
        RecoveredState {
            hard_state,
            log_prev: LogId::default(),
            entries: self.log.clone(),
        }
    }
}
