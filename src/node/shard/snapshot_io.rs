//! The snapshot I/O worker: every snapshot-store operation a node needs (persisting a state
//! machine snapshot, reading and writing InstallSnapshot chunks, staging a user restore,
//! deleting staged restores) runs here, on one thread per node, never on the shard thread.
//! The shard submits jobs in order and hears of their completions as [`ShardEvent`]s, which
//! it feeds to the core as inputs; one node's large or slow snapshot never stalls the other
//! nodes a `ShardHost` thread runs. A snapshot (or staged restore) the state machine must
//! restore is opened here too, in order with the other jobs (a later retention or deletion
//! cannot remove it first); the shard holds back the apply tasks that follow it until it is
//! open, so the state machine still sees the restore in its place among the entries.
//!
//! One thread per node keeps the jobs of a node in submission order (a chunk is written before
//! the next one) and bounds the threads a node uses, where an earlier version started a thread
//! per snapshot and per restore.

use super::super::apply::ShardEvent;
use super::super::metrics::NodeMetrics;
use super::super::Shared;
use crate::api::error::TakeSnapshotError;
use crate::api::fsm::FsmSnapshot;
use crate::core::{Input, Token};
use bytes::Bytes;
use ringraft_storage::SnapshotStore;
use ringraft_storage::{Configuration, Index, LogId, NodeId, SnapshotMeta, SnapshotSink};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

/// Work for the snapshot I/O worker.
pub(crate) enum SnapshotJob {
    /// Write a captured state machine snapshot to the store.
    Persist {
        snapshot: Box<dyn FsmSnapshot>,
        last: LogId,
        configuration: Configuration,
        configuration_index: Index,
    },
    /// Read the next chunk of a snapshot (or staged restore) being sent to `peer`.
    ReadChunk {
        peer: NodeId,
        meta: SnapshotMeta,
        stage: bool,
        offset: u64,
        max_bytes: u64,
    },
    /// Write a chunk received from the leader.
    WriteChunk {
        meta: SnapshotMeta,
        offset: u64,
        data: Bytes,
        done: bool,
        stage: bool,
    },
    /// Forget the readers of snapshots being sent (this node installed a snapshot).
    ForgetReaders,
    /// Open what a restore reads: the snapshot `meta` (an installed snapshot) or, with
    /// `stage`, the staged restore of the entry `meta.last`. In order with the other jobs, so
    /// a later retention or `DropStaged` cannot remove it first.
    OpenForRestore { meta: SnapshotMeta, stage: bool },
    /// Copy a caller's snapshot into the staging area.
    StageRestore {
        token: Token,
        meta: SnapshotMeta,
        data: Box<dyn Read + Send>,
    },
    /// Delete staged restores at or below this index.
    DropStaged { through: Index },
}

/// A local snapshot being read for a follower, chunk by chunk.
struct ChunkReader {
    last: LogId,
    /// Reading a staged user restore (from the staging area).
    stage: bool,
    position: u64,
    size: u64,
    reader: Box<dyn Read + Send>,
}

/// A snapshot being received from the leader.
struct Receiving {
    last: LogId,
    /// Receiving a user restore into the staging area.
    stage: bool,
    sink: Box<dyn SnapshotSink>,
    written: u64,
}

/// The shard's handle on its worker.
pub(crate) struct SnapshotIo {
    jobs: Jobs,
    /// Set at shutdown: jobs still queued are dropped, not done.
    stopping: Arc<AtomicBool>,
    /// The worker's thread could not be started (see [`SnapshotIo::take_failure`]).
    failure: Option<String>,
}

/// Where submitted jobs go.
enum Jobs {
    /// No job yet: the worker's thread starts with the first (`None` once stopped).
    NotStarted(Option<Box<Worker>>),
    /// To the worker thread (`None` once stopped).
    Thread(Option<mpsc::Sender<SnapshotJob>>),
    /// Held until [`SnapshotIo::run_queued`] does them on the caller's thread: the simulator
    /// decides when the "worker" runs, so seeds stay deterministic while the shard glue is
    /// the same code.
    #[cfg(feature = "sim")]
    Queued {
        jobs: std::collections::VecDeque<SnapshotJob>,
        worker: Box<Worker>,
    },
}

impl SnapshotIo {
    /// The worker of node `id`. Its thread starts with the first job: most nodes of a
    /// process hosting many groups never snapshot, and a thread each capped such a process
    /// near 5 400 groups (docs/PERFORMANCE.md, "Many groups in one process").
    pub(crate) fn start(
        id: NodeId,
        store: Arc<dyn SnapshotStore>,
        events: crate::node::events::EventSender,
        shared: Arc<Shared>,
    ) -> std::io::Result<SnapshotIo> {
        let stopping = Arc::new(AtomicBool::new(false));
        let worker = Worker::new(id, store, events, shared, stopping.clone());
        Ok(SnapshotIo {
            jobs: Jobs::NotStarted(Some(Box::new(worker))),
            stopping,
            failure: None,
        })
    }

    /// Why the worker's thread could not start, once (the node cannot go on without it).
    pub(crate) fn take_failure(&mut self) -> Option<String> {
        self.failure.take()
    }

    /// A worker without a thread: jobs wait until [`SnapshotIo::run_queued`].
    #[cfg(feature = "sim")]
    pub(crate) fn queued(
        id: NodeId,
        store: Arc<dyn SnapshotStore>,
        events: crate::node::events::EventSender,
        shared: Arc<Shared>,
    ) -> SnapshotIo {
        let stopping = Arc::new(AtomicBool::new(false));
        let worker = Box::new(Worker::new(id, store, events, shared, stopping.clone()));
        SnapshotIo {
            jobs: Jobs::Queued {
                jobs: std::collections::VecDeque::new(),
                worker,
            },
            stopping,
            failure: None,
        }
    }

    /// Queues `job`; false if the worker is gone (the node is stopping).
    pub(crate) fn submit(&mut self, job: SnapshotJob) -> bool {
        if let Jobs::NotStarted(worker) = &mut self.jobs {
            let Some(worker) = worker.take() else {
                return false; // stopped before any job
            };
            let name = format!("ringraft-snapshots-{}", worker.id.0);
            let (tx, rx) = mpsc::channel();
            match std::thread::Builder::new()
                .name(name)
                .spawn(move || worker.run(rx))
            {
                Ok(_) => self.jobs = Jobs::Thread(Some(tx)),
                Err(e) => {
                    self.failure = Some(format!("starting the snapshot worker thread: {e}"));
                    self.jobs = Jobs::Thread(None);
                    return false;
                }
            }
        }
        match &mut self.jobs {
            Jobs::NotStarted(_) => false,
            Jobs::Thread(tx) => tx.as_ref().is_some_and(|tx| tx.send(job).is_ok()),
            #[cfg(feature = "sim")]
            Jobs::Queued { jobs, .. } => {
                if self.stopping.load(Ordering::Acquire) {
                    return false;
                }
                jobs.push_back(job);
                true
            }
        }
    }

    /// Jobs waiting for [`SnapshotIo::run_queued`] (always 0 with a worker thread).
    #[cfg(feature = "sim")]
    pub(crate) fn queued_jobs(&self) -> usize {
        match &self.jobs {
            Jobs::NotStarted(_) | Jobs::Thread(_) => 0,
            Jobs::Queued { jobs, .. } => jobs.len(),
        }
    }

    /// Does the queued jobs, in order, as the worker thread would; their completions go to
    /// the shard's event channel.
    #[cfg(feature = "sim")]
    pub(crate) fn run_queued(&mut self) {
        if let Jobs::Queued { jobs, worker } = &mut self.jobs {
            while let Some(job) = jobs.pop_front() {
                if !worker.do_job(job) {
                    break;
                }
            }
        }
    }

    /// Stops the worker: queued jobs are dropped (a sink being received is cancelled) and the
    /// thread exits after the job in progress. It is not joined: the shard thread may host
    /// other nodes, and a slow snapshot of this one must not stall them; so a snapshot being
    /// persisted when the node stops may still land in its store just after.
    pub(crate) fn stop(&mut self) {
        self.stopping.store(true, Ordering::Release);
        match &mut self.jobs {
            Jobs::NotStarted(worker) => *worker = None,
            Jobs::Thread(tx) => *tx = None,
            #[cfg(feature = "sim")]
            Jobs::Queued { jobs, worker } => {
                jobs.clear();
                worker.cancel_receiving();
            }
        }
    }
}

struct Worker {
    stopping: Arc<AtomicBool>,
    id: NodeId,
    store: Arc<dyn SnapshotStore>,
    events: crate::node::events::EventSender,
    /// The node's signal (wakes the shard) and metrics.
    shared: Arc<Shared>,
    readers: BTreeMap<NodeId, ChunkReader>,
    receiving: Option<Receiving>,
}

impl Worker {
    fn new(
        id: NodeId,
        store: Arc<dyn SnapshotStore>,
        events: crate::node::events::EventSender,
        shared: Arc<Shared>,
        stopping: Arc<AtomicBool>,
    ) -> Worker {
        Worker {
            stopping,
            id,
            store,
            events,
            shared,
            readers: BTreeMap::new(),
            receiving: None,
        }
    }

    fn run(mut self, jobs: mpsc::Receiver<SnapshotJob>) {
        while let Ok(job) = jobs.recv() {
            if !self.do_job(job) {
                break;
            }
        }
        self.cancel_receiving();
    }

    /// Does one job and reports its completion; false once the worker should stop.
    fn do_job(&mut self, job: SnapshotJob) -> bool {
        if self.stopping.load(Ordering::Acquire) {
            return false;
        }
        if let Some(event) = self.handle(job) {
            if self.events.send(event).is_err() {
                return false;
            }
            self.shared.signal.notify();
        }
        true
    }

    fn cancel_receiving(&mut self) {
        if let Some(r) = self.receiving.take() {
            let _ = r.sink.cancel();
        }
    }

    fn handle(&mut self, job: SnapshotJob) -> Option<ShardEvent> {
        match job {
            SnapshotJob::Persist {
                snapshot,
                last,
                configuration,
                configuration_index,
            } => Some(ShardEvent::SnapshotPersisted(Box::new(self.persist(
                snapshot,
                last,
                &configuration,
                configuration_index,
            )))),
            SnapshotJob::ReadChunk {
                peer,
                meta,
                stage,
                offset,
                max_bytes,
            } => self.read_chunk(peer, &meta, stage, offset, max_bytes),
            SnapshotJob::WriteChunk {
                meta,
                offset,
                data,
                done,
                stage,
            } => Some(self.write_chunk(&meta, offset, &data, done, stage)),
            SnapshotJob::ForgetReaders => {
                self.readers.clear();
                None
            }
            SnapshotJob::OpenForRestore { meta, stage } => {
                let what = if stage { "staged restore" } else { "snapshot" };
                let opened = self
                    .store(stage)
                    .ok_or_else(|| "the snapshot store has no staging area".to_string())
                    .and_then(|store| {
                        let local = local_in(store, &meta.id, meta.last)
                            .ok_or_else(|| format!("{what} {} is not in the store", meta.last))?;
                        store
                            .open(&local.id)
                            .map(|(_, reader)| reader)
                            .map_err(|e| format!("cannot open {what} {}: {e}", meta.last))
                    });
                Some(ShardEvent::RestoreOpened(opened))
            }
            SnapshotJob::StageRestore { token, meta, data } => Some(ShardEvent::RestoreStaged {
                token,
                result: Box::new(self.stage_restore(&meta, data)),
            }),
            SnapshotJob::DropStaged { through } => {
                self.drop_staged(through);
                None
            }
        }
    }

    fn persist(
        &mut self,
        mut snapshot: Box<dyn FsmSnapshot>,
        last: LogId,
        configuration: &Configuration,
        configuration_index: Index,
    ) -> Result<SnapshotMeta, TakeSnapshotError> {
        // A snapshot received from the leader may have landed since the capture was taken
        // (the jobs are in order, the capture is not): persisting the older capture then
        // would, with a store that keeps one snapshot, replace the newer one that the core
        // has installed and the state machine has yet to restore (found by the simulator
        // running this worker, seed 275).
        let newer = self.store.list().ok().and_then(|l| l.into_iter().next());
        if newer.is_some_and(|m| m.last.index >= last.index) {
            snapshot.release();
            return Err(TakeSnapshotError::NothingNewToSnapshot);
        }
        let started = self.shared.clock.now();
        let created = self.store.create(last, configuration, configuration_index);
        let create = &self.shared.metrics.snapshot_create;
        NodeMetrics::time(create, started, self.shared.clock.now());
        let mut sink = match created {
            Ok(sink) => sink,
            Err(e) => {
                snapshot.release();
                return Err(TakeSnapshotError::Store(e.to_string()));
            }
        };
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
        result
    }

    /// The store that holds snapshots (`stage` false) or staged user restores (`stage` true).
    fn store(&self, stage: bool) -> Option<&dyn SnapshotStore> {
        if stage {
            self.store.staging()
        } else {
            Some(&*self.store)
        }
    }

    fn open_reader(&self, meta: &SnapshotMeta, stage: bool, offset: u64) -> Option<ChunkReader> {
        let local = local_in(self.store(stage)?, &meta.id, meta.last)?;
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

    fn read_chunk(
        &mut self,
        peer: NodeId,
        meta: &SnapshotMeta,
        stage: bool,
        offset: u64,
        max: u64,
    ) -> Option<ShardEvent> {
        let cached = self
            .readers
            .remove(&peer)
            .filter(|r| r.last == meta.last && r.stage == stage && r.position == offset);
        // The snapshot may be gone (replaced by a newer one): the core retries with what it
        // has once the follower asks again.
        let mut r = cached.or_else(|| self.open_reader(meta, stage, offset))?;
        let want = max.min(r.size.saturating_sub(offset)) as usize;
        let mut data = vec![0u8; want];
        let mut filled = 0;
        while filled < want {
            match r.reader.read(&mut data[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => return None,
            }
        }
        data.truncate(filled);
        r.position += filled as u64;
        let done = r.position >= r.size;
        if !done {
            self.readers.insert(peer, r);
        }
        Some(ShardEvent::Core(Box::new(Input::SnapshotChunkRead {
            peer,
            snapshot: meta.last,
            offset,
            data: Bytes::from(data),
            done,
        })))
    }

    fn write_chunk(
        &mut self,
        meta: &SnapshotMeta,
        offset: u64,
        data: &[u8],
        done: bool,
        stage: bool,
    ) -> ShardEvent {
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
                            Ok(_) => (offset + data.len() as u64, true),
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
        ShardEvent::Core(Box::new(Input::SnapshotChunkWritten {
            snapshot: meta.last,
            next_offset,
            done,
        }))
    }

    fn stage_restore(
        &mut self,
        meta: &SnapshotMeta,
        mut data: Box<dyn Read + Send>,
    ) -> Result<SnapshotMeta, String> {
        let Some(staging) = self.store.staging() else {
            return Err("the snapshot store has no staging area".into());
        };
        let mut sink = staging
            .create(meta.last, &meta.configuration, meta.configuration_index)
            .map_err(|e| e.to_string())?;
        match std::io::copy(&mut data, &mut sink) {
            Ok(_) => sink.commit().map_err(|e| e.to_string()),
            Err(e) => {
                let _ = sink.cancel();
                Err(format!("reading the snapshot: {e}"))
            }
        }
    }

    fn drop_staged(&mut self, through: Index) {
        let Some(staging) = self.store.staging() else {
            return;
        };
        let Ok(staged) = staging.list() else {
            return;
        };
        for meta in staged.iter().filter(|m| m.last.index <= through) {
            if let Err(e) = staging.remove(&meta.id) {
                tracing::warn!(node = self.id.0, id = %meta.id, error = %e,
                    "could not delete a staged restore");
            }
        }
    }
}

/// The snapshot in `store` ending at `last`, preferring the one stored under `id` (ids differ
/// between nodes: a received snapshot is stored under this node's own id).
fn local_in(store: &dyn SnapshotStore, id: &str, last: LogId) -> Option<SnapshotMeta> {
    let list = store.list().ok()?;
    let exact = list.iter().find(|m| m.id == id && m.last == last);
    exact
        .or_else(|| list.iter().find(|m| m.last == last))
        .cloned()
}
