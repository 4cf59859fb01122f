//! The shard's snapshot work: automatic and user-triggered snapshots of the state machine,
//! reading and writing InstallSnapshot chunks through the snapshot store, and restores.

use super::*;
use ringraft_storage::Entry;

impl Shard {
    pub(super) fn schedule_snapshot_check(&mut self, now: Time) {
        // hashicorp checks every [interval, 2 × interval).
        let interval = self.config.snapshot_interval.as_nanos() as u64;
        let jitter =
            (now.0 ^ self.core_config.seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) % interval.max(1);
        self.next_snapshot_check = now.plus_nanos(interval + jitter);
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

    /// Writes a captured FSM snapshot to the store on its own thread (user code of unknown
    /// speed must not block the shard), then reports back.
    pub(super) fn persist_snapshot(&mut self, mut snapshot: Box<dyn FsmSnapshot>, last: LogId) {
        if last.index <= self.snapshot_index() {
            snapshot.release();
            self.finish_snapshot(Err(TakeSnapshotError::NothingNewToSnapshot));
            return;
        }
        let (configuration_index, configuration) = self.core.configuration_at(last.index);
        let created_from = self.clock.now();
        let mut sink = match self
            .snapshots
            .create(last, &configuration, configuration_index)
        {
            Ok(sink) => sink,
            Err(e) => {
                snapshot.release();
                self.finish_snapshot(Err(TakeSnapshotError::Store(e.to_string())));
                return;
            }
        };
        let create = &self.shared.metrics.snapshot_create;
        crate::node::metrics::NodeMetrics::time(create, created_from, self.clock.now());
        let events = self.events_tx.clone();
        let signal = self.shared.signal.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("ringraft-snapshot-{}", self.shared.id.0))
            .spawn(move || {
                let result = match snapshot.persist(&mut sink) {
                    Ok(()) => sink
                        .commit()
                        .map_err(|e| TakeSnapshotError::Store(e.to_string())),
                    Err(e) => {
                        let _ = sink.cancel();
                        Err(TakeSnapshotError::Fsm(e.to_string()))
                    }
                };
                snapshot.release();
                let _ = events.send(ShardEvent::SnapshotPersisted(result));
                signal.notify();
            });
        if let Err(e) = spawned {
            self.finish_snapshot(Err(TakeSnapshotError::Fsm(format!("spawn: {e}"))));
        }
    }

    /// The store that holds snapshots (`stage` false) or staged user restores (`stage` true).
    fn store(&self, stage: bool) -> Option<&dyn SnapshotStore> {
        if stage {
            self.snapshots.staging()
        } else {
            Some(&*self.snapshots)
        }
    }

    /// The locally stored snapshot ending at `meta.last` (ids differ between nodes: a received
    /// snapshot is stored under this node's own id).
    pub(super) fn local_snapshot(&self, meta: &SnapshotMeta) -> Option<SnapshotMeta> {
        self.local_in(&meta.id, meta.last, false)
    }

    /// The snapshot (or, with `stage`, staged restore) ending at `last`, preferring the one
    /// stored under `id`.
    fn local_in(&self, id: &str, last: LogId, stage: bool) -> Option<SnapshotMeta> {
        let list = self.store(stage)?.list().ok()?;
        let exact = list.iter().find(|m| m.id == id && m.last == last);
        exact
            .or_else(|| list.iter().find(|m| m.last == last))
            .cloned()
    }

    pub(super) fn open_chunk_reader(
        &self,
        meta: &SnapshotMeta,
        stage: bool,
        offset: u64,
    ) -> Option<ChunkReader> {
        let local = self.local_in(&meta.id, meta.last, stage)?;
        let (stored, mut reader) = self.store(stage)?.open(&local.id).ok()?;
        let skipped = std::io::copy(&mut (&mut reader).take(offset), &mut std::io::sink()).ok()?;
        if skipped != offset {
            return None;
        }
        Some(ChunkReader {
            last: stored.last,
            stage,
            position: offset,
            size: stored.size,
            reader,
        })
    }

    pub(super) fn read_chunk(
        &mut self,
        now: Time,
        peer: NodeId,
        meta: &SnapshotMeta,
        stage: bool,
        offset: u64,
        max: u64,
    ) {
        let cached = self
            .chunk_readers
            .remove(&peer)
            .filter(|r| r.last == meta.last && r.stage == stage && r.position == offset);
        let Some(mut r) = cached.or_else(|| self.open_chunk_reader(meta, stage, offset)) else {
            // The snapshot is gone (replaced by a newer one): the core retries with what it has
            // once the follower asks again.
            return;
        };
        let want = max.min(r.size.saturating_sub(offset)) as usize;
        let mut data = vec![0u8; want];
        let mut filled = 0;
        while filled < want {
            match r.reader.read(&mut data[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
        data.truncate(filled);
        r.position += filled as u64;
        let done = r.position >= r.size;
        self.core.step(
            now,
            Input::SnapshotChunkRead {
                peer,
                snapshot: meta.last,
                offset,
                data: Bytes::from(data),
                done,
            },
        );
        if !done {
            self.chunk_readers.insert(peer, r);
        }
    }

    pub(super) fn write_chunk(
        &mut self,
        now: Time,
        meta: &SnapshotMeta,
        offset: u64,
        data: &[u8],
        done: bool,
        stage: bool,
    ) {
        if offset == 0 {
            if let Some(old) = self.receiving.take() {
                let _ = old.sink.cancel();
            }
            let sink = self.store(stage).map(|store| {
                store.create(meta.last, &meta.configuration, meta.configuration_index)
            });
            if let Some(Ok(sink)) = sink {
                self.receiving = Some(Receiving {
                    last: meta.last,
                    stage,
                    sink,
                    written: 0,
                });
            }
        }
        let (next_offset, done) = match self.receiving.take() {
            Some(mut r) if r.last == meta.last && r.stage == stage && r.written == offset => {
                if r.sink.write_all(data).is_err() {
                    let _ = r.sink.cancel();
                    (0, false)
                } else {
                    r.written += data.len() as u64;
                    if done {
                        match r.sink.commit() {
                            Ok(_) => (meta.size.max(offset + data.len() as u64), true),
                            Err(_) => (0, false),
                        }
                    } else {
                        let next = r.written;
                        self.receiving = Some(r);
                        (next, false)
                    }
                }
            }
            Some(r) if r.last == meta.last && r.stage == stage => {
                let next = r.written;
                self.receiving = Some(r);
                (next, false)
            }
            other => {
                self.receiving = other;
                (0, false)
            }
        };
        let next_offset = if done {
            offset + data.len() as u64
        } else {
            next_offset
        };
        self.core.step(
            now,
            Input::SnapshotChunkWritten {
                snapshot: meta.last,
                next_offset,
                done,
            },
        );
    }

    pub(super) fn restore(&mut self, meta: SnapshotMeta) {
        self.configuration_dirty = true;
        self.chunk_readers.clear();
        let opened = self
            .local_snapshot(&meta)
            .ok_or_else(|| "not in the snapshot store".to_string())
            .and_then(|local| self.snapshots.open(&local.id).map_err(|e| e.to_string()));
        match opened {
            Ok((_, reader)) => self.send_to_apply(ApplyTask::Restore { meta, reader }),
            Err(e) => {
                self.fatal = Some(format!(
                    "cannot open snapshot {} to restore: {e}",
                    meta.last
                ))
            }
        }
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
            let opened = self
                .local_in("", restore.id, true)
                .ok_or_else(|| "not in the staging area".to_string())
                .and_then(|local| {
                    self.store(true)
                        .ok_or_else(|| "the snapshot store has no staging area".to_string())?
                        .open(&local.id)
                        .map_err(|e| e.to_string())
                });
            match opened {
                Ok((_, reader)) => self.send_to_apply(ApplyTask::RestoreEntry {
                    entry: restore.id,
                    reader,
                }),
                Err(e) => {
                    // The core accepts a restore entry only once its snapshot is staged, so
                    // this is lost or damaged storage: stop rather than diverge.
                    self.fatal = Some(format!("cannot open staged restore {}: {e}", restore.id));
                    return;
                }
            }
            entries = rest;
        }
        if !entries.is_empty() {
            self.send_to_apply(ApplyTask::Entries(entries));
        }
    }

    /// Writes the caller's snapshot to the staging area on its own thread (reading user data
    /// of unknown speed must not block the shard), then reports back.
    pub(super) fn stage_restore(&mut self, token: Token, meta: SnapshotMeta) {
        let data = match self.waiters.get_mut(&token) {
            Some(Waiter::Restore { data, .. }) => data.take(),
            _ => None,
        };
        let Some(mut data) = data else {
            // No snapshot to stage (cannot happen: the effect follows the request at once);
            // release the core's reservation rather than refuse writes forever.
            let now = self.clock.now();
            self.core.step(now, Input::RestoreStageFailed { token });
            return;
        };
        let Some(staging) = self.snapshots.staging() else {
            self.fail_restore(token, RestoreError::NotSupported);
            return;
        };
        let sink = staging.create(meta.last, &meta.configuration, meta.configuration_index);
        let mut sink = match sink {
            Ok(sink) => sink,
            Err(e) => {
                self.fail_restore(token, RestoreError::Staging(e.to_string()));
                return;
            }
        };
        let events = self.events_tx.clone();
        let signal = self.shared.signal.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("ringraft-restore-{}", self.shared.id.0))
            .spawn(move || {
                let result = match std::io::copy(&mut data, &mut sink) {
                    Ok(_) => sink.commit().map_err(|e| e.to_string()),
                    Err(e) => {
                        let _ = sink.cancel();
                        Err(format!("reading the snapshot: {e}"))
                    }
                };
                let _ = events.send(ShardEvent::RestoreStaged { token, result });
                signal.notify();
            });
        if let Err(e) = spawned {
            self.fail_restore(token, RestoreError::Staging(format!("spawn: {e}")));
        }
    }

    /// The staging thread finished.
    pub(super) fn restore_stage_done(
        &mut self,
        token: Token,
        result: Result<SnapshotMeta, String>,
    ) {
        let now = self.clock.now();
        match result {
            Ok(meta) => self.core.step(now, Input::RestoreStaged { token, meta }),
            Err(e) => self.fail_restore(token, RestoreError::Staging(e)),
        }
    }

    /// Abandons a restore before its entry exists: the core forgets it, the caller gets `e`.
    fn fail_restore(&mut self, token: Token, e: RestoreError) {
        tracing::warn!(node = self.shared.id.0, error = %e, "user restore failed");
        if let Some(Waiter::Restore { reply, .. }) = self.waiters.remove(&token) {
            reply.send(Err(e));
        }
        let now = self.clock.now();
        self.core.step(now, Input::RestoreStageFailed { token });
    }

    /// Deletes staged restores at or below `through` (a snapshot covers them).
    pub(super) fn drop_staged_restores(&mut self, through: Index) {
        let Some(staging) = self.snapshots.staging() else {
            return;
        };
        let Ok(staged) = staging.list() else {
            return;
        };
        for meta in staged.iter().filter(|m| m.last.index <= through) {
            if let Err(e) = staging.remove(&meta.id) {
                tracing::warn!(node = self.shared.id.0, id = %meta.id, error = %e,
                    "could not delete a staged restore");
            }
        }
    }
}
