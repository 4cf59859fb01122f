//! The shard's snapshot work: automatic and user-triggered snapshots of the state machine,
//! reading and writing InstallSnapshot chunks through the snapshot store, and restores.

use super::snapshot_io::SnapshotJob;
use super::*;
use ringraft_storage::Entry;

impl Shard {
    pub(super) fn schedule_snapshot_check(&mut self, now: Time) {
        // hashicorp checks every [interval, 2 × interval).
        let interval = self.config.snapshot_interval.as_nanos() as u64;
        let jitter =
            (now.0 ^ self.core.config().seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) % interval.max(1);
        self.next_snapshot_check = now.plus_nanos(interval + jitter);
    }

    /// Whether an automatic snapshot should start before the next check because the log held
    /// in memory reached `snapshot_memory_threshold` (ARCHITECTURE §13): no snapshot is being
    /// taken, `snapshot_threshold` entries were written since the last one, and as many since
    /// the memory last started one.
    pub(super) fn log_memory_full(&self) -> bool {
        let limit = self.config.snapshot_memory_threshold;
        if limit == 0 || self.snapshot_in_progress || self.core.log().held_bytes() < limit {
            return false;
        }
        let last = self.core.log().last_index().0;
        let threshold = self.config.snapshot_threshold;
        last.saturating_sub(self.snapshot_index().0) >= threshold
            && last.saturating_sub(self.memory_snapshot_at.0) >= threshold
    }

    pub(super) fn maybe_automatic_snapshot(&mut self) {
        let last = self.core.log().last_index();
        let snapshot = self.snapshot_index();
        if last.0.saturating_sub(snapshot.0) >= self.config.snapshot_threshold {
            self.start_snapshot(None);
        }
    }

    pub(super) fn snapshot_index(&self) -> Index {
        self.core
            .snapshot()
            .map_or(self.core.log().prev().index, |s| s.last.index)
    }

    pub(super) fn start_snapshot(
        &mut self,
        waiter: Option<Sender<Result<SnapshotMeta, TakeSnapshotError>>>,
    ) {
        self.snapshot_waiters.extend(waiter);
        if self.snapshot_in_progress {
            return;
        }
        // What the state machine has applied, as its callers know it: the apply loop
        // publishes its index before it resolves their futures, while the core hears of it
        // only when the shard handles the loop's `Applied` event (maybe after this request).
        // The capture itself runs on the apply loop after every entry sent to it, so it
        // covers each write acknowledged before the request.
        let applied = self
            .core
            .applied_index()
            .max(Index(self.shared.applied_index.load(Ordering::Acquire)));
        if applied <= self.snapshot_index() {
            self.finish_snapshot(Err(TakeSnapshotError::NothingNewToSnapshot));
            return;
        }
        if self.can_apply() {
            self.snapshot_in_progress = true;
            self.send_to_apply(ApplyTask::Snapshot);
        }
    }

    pub(super) fn finish_snapshot(&mut self, result: Result<SnapshotMeta, TakeSnapshotError>) {
        self.snapshot_in_progress = false;
        for w in self.snapshot_waiters.drain(..) {
            w.send(result.clone());
        }
    }

    /// Hands a captured FSM snapshot to the snapshot I/O worker, which writes it to the store
    /// (user code of unknown speed, and disk I/O, must not block the shard) and reports back.
    pub(super) fn persist_snapshot(&mut self, mut snapshot: Box<dyn FsmSnapshot>, last: LogId) {
        if last.index <= self.snapshot_index() {
            snapshot.release();
            self.finish_snapshot(Err(TakeSnapshotError::NothingNewToSnapshot));
            return;
        }
        let (configuration_index, configuration) = self.core.configuration_at(last.index);
        let job = SnapshotJob::Persist {
            snapshot,
            last,
            configuration,
            configuration_index,
        };
        if !self.snapshot_io.submit(job) {
            self.finish_snapshot(Err(TakeSnapshotError::Shutdown));
        }
    }

    pub(super) fn read_chunk(
        &mut self,
        peer: NodeId,
        meta: SnapshotMeta,
        stage: bool,
        offset: u64,
        max_bytes: u64,
    ) {
        self.snapshot_io.submit(SnapshotJob::ReadChunk {
            peer,
            meta,
            stage,
            offset,
            max_bytes,
        });
    }

    pub(super) fn write_chunk(
        &mut self,
        meta: SnapshotMeta,
        offset: u64,
        data: Bytes,
        done: bool,
        stage: bool,
    ) {
        self.snapshot_io.submit(SnapshotJob::WriteChunk {
            meta,
            offset,
            data,
            done,
            stage,
        });
    }

    /// The state machine takes the installed snapshot, in order with the entries before and
    /// after it (the worker opens it).
    pub(super) fn restore(&mut self, meta: SnapshotMeta) {
        self.configuration_dirty = true;
        self.snapshot_io.submit(SnapshotJob::ForgetReaders);
        self.restore_in_order(meta, false);
    }
}

/// User restores (see `core::restore`): staging the caller's snapshot, applying restore
/// entries, and dropping staged snapshots a snapshot covers.
impl Shard {
    /// Hands committed entries to the apply thread; a restore entry goes as a restore of its
    /// staged snapshot, in order with the entries around it.
    pub(super) fn apply_entries(&mut self, mut entries: Vec<Entry>) {
        while let Some(at) = entries.iter().position(|e| e.kind == EntryKind::Restore) {
            let rest = entries.split_off(at + 1);
            let Some(restore) = entries.pop() else {
                return;
            };
            if !entries.is_empty() {
                self.send_to_apply(ApplyTask::Entries(entries));
            }
            // The staged snapshot is found by the entry's id (ids differ between nodes).
            let meta = SnapshotMeta {
                id: String::new(),
                last: restore.id,
                configuration: ringraft_storage::Configuration::default(),
                configuration_index: Index(0),
                size: 0,
            };
            self.restore_in_order(meta, true);
            entries = rest;
        }
        if !entries.is_empty() {
            self.send_to_apply(ApplyTask::Entries(entries));
        }
    }

    /// Hands the caller's snapshot to the snapshot I/O worker, which copies it into the staging
    /// area (reading user data of unknown speed must not block the shard) and reports back.
    pub(super) fn stage_restore(&mut self, now: Time, token: Token, meta: SnapshotMeta) {
        let data = match self.waiters.get_mut(token) {
            Some(Waiter::Restore { data, .. }) => data.take(),
            _ => None,
        };
        let Some(data) = data else {
            // No snapshot to stage (cannot happen: the effect follows the request at once);
            // release the core's reservation rather than refuse writes forever.
            self.core.step(now, Input::RestoreStageFailed { token });
            return;
        };
        if self.snapshots.staging().is_none() {
            self.fail_restore(now, token, RestoreError::NotSupported);
            return;
        }
        if !self
            .snapshot_io
            .submit(SnapshotJob::StageRestore { token, meta, data })
        {
            self.fail_restore(
                now,
                token,
                RestoreError::Staging("the node is stopping".into()),
            );
        }
    }

    /// The snapshot I/O worker finished staging.
    pub(super) fn restore_stage_done(
        &mut self,
        now: Time,
        token: Token,
        result: Result<SnapshotMeta, String>,
    ) {
        match result {
            Ok(meta) => self.core.step(now, Input::RestoreStaged { token, meta }),
            Err(e) => self.fail_restore(now, token, RestoreError::Staging(e)),
        }
    }

    /// Abandons a restore before its entry exists: the core forgets it, the caller gets `e`.
    fn fail_restore(&mut self, now: Time, token: Token, e: RestoreError) {
        tracing::warn!(node = self.shared.id.0, error = %e, "user restore failed");
        if let Some(Waiter::Restore { reply, .. }) = self.waiters.remove(token) {
            reply.restore_failed(e);
        }
        self.core.step(now, Input::RestoreStageFailed { token });
    }

    /// Deletes staged restores at or below `through` (a snapshot covers them), on the worker.
    pub(super) fn drop_staged_restores(&mut self, through: Index) {
        self.snapshot_io.submit(SnapshotJob::DropStaged { through });
    }
}
