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
//! per snapshot and per restore. Nodes on a shard host the application manages (the groups of
//! a `MultiRaft`) share the host's few snapshot threads instead ([`SnapshotPool`]): one pool
//! thread at a time runs a node's jobs, in order, so the order is kept there too.

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
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};

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
    /// The shard host's snapshot threads, if the node uses them rather than its own.
    pool: Option<SnapshotPool>,
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
    /// To the shard host's pool of snapshot threads (see [`SnapshotPool`]).
    Pooled(Arc<PooledWorker>),
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
            pool: None,
            stopping,
            failure: None,
        })
    }

    /// Why the worker's thread could not start, once (the node cannot go on without it).
    pub(crate) fn take_failure(&mut self) -> Option<String> {
        self.failure.take()
    }

    /// The worker of node `id` on `pool`'s threads, which it shares with the other nodes of
    /// its shard host.
    pub(crate) fn pooled(
        id: NodeId,
        store: Arc<dyn SnapshotStore>,
        events: crate::node::events::EventSender,
        shared: Arc<Shared>,
        pool: &SnapshotPool,
    ) -> SnapshotIo {
        let stopping = Arc::new(AtomicBool::new(false));
        let worker = Worker::new(id, store, events, shared, stopping.clone());
        SnapshotIo {
            // Its place in the pool is made with its first job, as a thread of its own would
            // be: most groups of a node never snapshot.
            jobs: Jobs::NotStarted(Some(Box::new(worker))),
            pool: Some(pool.clone()),
            stopping,
            failure: None,
        }
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
            pool: None,
            stopping,
            failure: None,
        }
    }

    /// Queues `job`; false if the worker is gone (the node is stopping).
    pub(crate) fn submit(&mut self, job: SnapshotJob) -> bool {
        if let (Jobs::NotStarted(worker), Some(pool)) = (&mut self.jobs, &self.pool) {
            let Some(worker) = worker.take() else {
                return false; // stopped before any job
            };
            self.jobs = Jobs::Pooled(PooledWorker::new(pool, worker));
        }
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
            Jobs::Pooled(pooled) => {
                if self.stopping.load(Ordering::Acquire) {
                    return false;
                }
                match pooled.submit(job) {
                    Ok(()) => true,
                    Err(e) => {
                        self.failure = Some(e);
                        false
                    }
                }
            }
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
            Jobs::NotStarted(_) | Jobs::Thread(_) | Jobs::Pooled(_) => 0,
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
            // A pool thread drops what is queued and cancels a sink being received (now, or
            // after the job in progress).
            Jobs::Pooled(pooled) => {
                let _ = pooled.schedule();
            }
            #[cfg(feature = "sim")]
            Jobs::Queued { jobs, worker } => {
                jobs.clear();
                worker.cancel_receiving();
            }
        }
    }
}

/// Snapshot threads shared by the nodes of one shard host (the groups of a `MultiRaft`):
/// at most `threads_max` run at once, started as jobs come and ended after
/// [`POOL_IDLE_EXIT`] without work, so thousands of groups that each snapshot now and then
/// cost a few threads rather than one each. A node's jobs still run one at a time and in
/// order (one pool thread takes a node's queue at a time); a node with many jobs gives its
/// thread up after [`POOL_JOBS_PER_TURN`] of them, so one large snapshot transfer does not
/// hold back other nodes' jobs while other threads are busy too.
#[derive(Clone)]
pub(crate) struct SnapshotPool {
    inner: Arc<PoolInner>,
}

/// A pool thread with nothing to do for this long ends.
const POOL_IDLE_EXIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Jobs a pool thread does for one node before it lets other nodes' jobs go first.
const POOL_JOBS_PER_TURN: usize = 16;

struct PoolInner {
    state: Mutex<PoolState>,
    work: Condvar,
    threads_max: usize,
}

#[derive(Default)]
struct PoolState {
    /// Nodes with jobs (or a stop) waiting, in the order they asked.
    ready: VecDeque<Arc<PooledWorker>>,
    threads: usize,
    idle: usize,
}

/// One node's place in a [`SnapshotPool`].
struct PooledWorker {
    pool: Arc<PoolInner>,
    jobs: Mutex<PooledJobs>,
    /// Locked only by the pool thread running the node's jobs; `None` once stopped.
    worker: Mutex<Option<Box<dyn PoolRunner>>>,
}

/// What a pool thread runs a node's jobs with: the node's [`Worker`] (a stand-in in tests).
trait PoolRunner: Send {
    /// Does one job; false once the node's jobs should stop.
    fn run(&mut self, job: SnapshotJob) -> bool;
    /// The node is stopping: its queued jobs are dropped.
    fn stopping(&self) -> bool;
    /// Marks the node stopping (its shard is gone).
    fn stop(&mut self);
    /// Called once after the last job: cancels what is half done.
    fn finish(&mut self);
}

impl PoolRunner for Worker {
    fn run(&mut self, job: SnapshotJob) -> bool {
        self.do_job(job)
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    fn stop(&mut self) {
        self.stopping.store(true, Ordering::Release);
    }

    fn finish(&mut self) {
        self.cancel_receiving();
    }
}

struct PooledJobs {
    queue: VecDeque<SnapshotJob>,
    /// In the pool's ready queue or being run: a submit need not schedule it again.
    scheduled: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl SnapshotPool {
    /// A pool of at most `threads_max` threads (at least one), none started yet.
    pub(crate) fn new(threads_max: usize) -> SnapshotPool {
        SnapshotPool {
            inner: Arc::new(PoolInner {
                state: Mutex::new(PoolState::default()),
                work: Condvar::new(),
                threads_max: threads_max.max(1),
            }),
        }
    }
}

impl PoolInner {
    /// Queues `node` for a pool thread, starting one if fewer are idle than nodes wait and the
    /// pool has room.
    fn ready(self: &Arc<PoolInner>, node: Arc<PooledWorker>) -> Result<(), String> {
        let mut state = lock(&self.state);
        state.ready.push_back(node);
        if state.idle > 0 {
            self.work.notify_one();
        }
        if state.ready.len() > state.idle && state.threads < self.threads_max {
            let pool = self.clone();
            let spawned = std::thread::Builder::new()
                .name("ringraft-snapshots".into())
                .spawn(move || pool.run());
            match spawned {
                Ok(_) => state.threads += 1,
                // With no thread at all, the node asking cannot go on (what is queued waits
                // for the next start to succeed); otherwise the running threads take it.
                Err(e) if state.threads == 0 => {
                    return Err(format!("starting a snapshot thread: {e}"));
                }
                Err(_) => {}
            }
        }
        Ok(())
    }

    /// A pool thread: runs the ready nodes' jobs until it has been idle for
    /// [`POOL_IDLE_EXIT`].
    fn run(self: Arc<PoolInner>) {
        let mut state = lock(&self.state);
        loop {
            if let Some(node) = state.ready.pop_front() {
                drop(state);
                node.run_some();
                state = lock(&self.state);
                continue;
            }
            state.idle += 1;
            let (next, timeout) = self
                .work
                .wait_timeout(state, POOL_IDLE_EXIT)
                .unwrap_or_else(|p| p.into_inner());
            state = next;
            state.idle -= 1;
            if timeout.timed_out() && state.ready.is_empty() {
                state.threads -= 1;
                return;
            }
        }
    }
}

impl PooledWorker {
    fn new(pool: &SnapshotPool, runner: Box<dyn PoolRunner>) -> Arc<PooledWorker> {
        Arc::new(PooledWorker {
            pool: pool.inner.clone(),
            jobs: Mutex::new(PooledJobs {
                queue: VecDeque::new(),
                scheduled: false,
            }),
            worker: Mutex::new(Some(runner)),
        })
    }

    fn submit(self: &Arc<PooledWorker>, job: SnapshotJob) -> Result<(), String> {
        lock(&self.jobs).queue.push_back(job);
        self.schedule()
    }

    /// Puts the node in the pool's ready queue unless it is there or running.
    fn schedule(self: &Arc<PooledWorker>) -> Result<(), String> {
        {
            let mut jobs = lock(&self.jobs);
            if jobs.scheduled {
                return Ok(());
            }
            jobs.scheduled = true;
        }
        self.pool.ready(self.clone())
    }

    /// Runs up to [`POOL_JOBS_PER_TURN`] of the node's jobs in order, then queues it again
    /// if more are waiting. Once the node stops, drops what is queued and the worker.
    fn run_some(self: &Arc<PooledWorker>) {
        let mut slot = lock(&self.worker);
        for _ in 0..POOL_JOBS_PER_TURN {
            let Some(worker) = slot.as_mut().filter(|w| !w.stopping()) else {
                let mut jobs = lock(&self.jobs);
                jobs.queue.clear();
                jobs.scheduled = false;
                drop(jobs);
                if let Some(mut worker) = slot.take() {
                    worker.finish();
                }
                return;
            };
            let job = {
                let mut jobs = lock(&self.jobs);
                match jobs.queue.pop_front() {
                    Some(job) => job,
                    None => {
                        jobs.scheduled = false;
                        return;
                    }
                }
            };
            if !worker.run(job) {
                // Stopping, or the node's shard is gone: the next round cleans up.
                worker.stop();
            }
        }
        // More to do (or the stop to finish): after the other ready nodes.
        lock(&self.jobs).scheduled = false;
        drop(slot);
        let _ = self.schedule();
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
            stage,
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

#[cfg(test)]
mod pool_tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::thread::ThreadId;

    /// Records the jobs it runs (`DropStaged { through: i }` as job `i`) and counts the
    /// times two threads ran its node's jobs at once.
    struct Recorder {
        node: usize,
        running: AtomicBool,
        stopping: Arc<AtomicBool>,
        log: Arc<Mutex<Vec<(usize, u64, ThreadId)>>>,
        overlaps: Arc<AtomicUsize>,
        finished: Arc<AtomicUsize>,
    }

    impl PoolRunner for Recorder {
        fn run(&mut self, job: SnapshotJob) -> bool {
            if self.running.swap(true, Ordering::SeqCst) {
                self.overlaps.fetch_add(1, Ordering::SeqCst);
            }
            if let SnapshotJob::DropStaged { through } = job {
                let me = std::thread::current().id();
                lock(&self.log).push((self.node, through.0, me));
                if through.0 % 7 == 0 {
                    std::thread::yield_now();
                }
            }
            self.running.store(false, Ordering::SeqCst);
            true
        }

        fn stopping(&self) -> bool {
            self.stopping.load(Ordering::Acquire)
        }

        fn stop(&mut self) {
            self.stopping.store(true, Ordering::Release);
        }

        fn finish(&mut self) {
            self.finished.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn each_nodes_jobs_run_in_order_one_at_a_time_on_at_most_the_pools_threads() {
        const NODES: usize = 20;
        const JOBS: u64 = 300;
        let pool = SnapshotPool::new(2);
        let log = Arc::new(Mutex::new(Vec::new()));
        let overlaps = Arc::new(AtomicUsize::new(0));
        let finished = Arc::new(AtomicUsize::new(0));
        let nodes: Vec<(Arc<PooledWorker>, Arc<AtomicBool>)> = (0..NODES)
            .map(|node| {
                let stopping = Arc::new(AtomicBool::new(false));
                let recorder = Recorder {
                    node,
                    running: AtomicBool::new(false),
                    stopping: stopping.clone(),
                    log: log.clone(),
                    overlaps: overlaps.clone(),
                    finished: finished.clone(),
                };
                (PooledWorker::new(&pool, Box::new(recorder)), stopping)
            })
            .collect();
        for i in 0..JOBS {
            for (node, _) in &nodes {
                let job = SnapshotJob::DropStaged { through: Index(i) };
                node.submit(job).expect("submit");
            }
        }
        let all = NODES * JOBS as usize;
        for _ in 0..2000 {
            if lock(&log).len() == all {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let log = std::mem::take(&mut *lock(&log));
        assert_eq!(log.len(), all, "jobs lost");
        assert_eq!(
            overlaps.load(Ordering::SeqCst),
            0,
            "a node's jobs ran at once"
        );
        for node in 0..NODES {
            let order: Vec<u64> = log.iter().filter(|j| j.0 == node).map(|j| j.1).collect();
            assert_eq!(
                order,
                (0..JOBS).collect::<Vec<_>>(),
                "node {node}'s jobs out of order"
            );
        }
        let mut threads: Vec<ThreadId> = Vec::new();
        for (_, _, thread) in &log {
            if !threads.contains(thread) {
                threads.push(*thread);
            }
        }
        assert!(threads.len() <= 2, "{} threads", threads.len());
        // Stopped nodes drop what they had queued and finish once.
        for (node, stopping) in &nodes {
            stopping.store(true, Ordering::Release);
            let job = SnapshotJob::DropStaged {
                through: Index(JOBS),
            };
            node.submit(job).expect("submit");
        }
        for _ in 0..2000 {
            if finished.load(Ordering::SeqCst) == NODES {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(finished.load(Ordering::SeqCst), NODES);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(finished.load(Ordering::SeqCst), NODES, "finished twice");
    }
}
