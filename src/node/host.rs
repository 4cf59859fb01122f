//! A shard thread shared by several nodes (ARCHITECTURE §2: one thread per core, many Raft groups
//! on it).
//!
//! A [`ShardHost`] is one thread with one tokio current-thread runtime on which the shard
//! loops of many nodes run as tasks: messages between nodes on the same host (the in-memory
//! transport, or several groups of one process) wake a task instead of another thread, and the
//! host's thread can be pinned to a core. `Raft::new` places a node whose transport runs no
//! tasks (the in-memory one) on one of the process's default hosts ([`default_host`]): one per
//! CPU less one, created as nodes need them, the least loaded first. A node with a TCP
//! transport, or with `Config::shard_cpu`, gets a thread of its own; `Raft::new_on` places a
//! node on a host the application manages.
//!
//! ```text
//!  Raft::new_on(&host, ..) ──job──► host thread: runtime + LocalSet
//!                                     ├─ shard loop of node 1 (task)
//!                                     ├─ shard loop of node 2 (task)
//!                                     └─ ...
//! ```
//!
//! The host thread ends once its [`ShardHost`] handle is dropped and every node on it has
//! shut down.

use super::shard::snapshot_io::SnapshotPool;
use super::signal::Signal;
use crate::api::error::StartError;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Work for the host thread: builds (on the host thread) the future of one node's shard loop.
pub(crate) type HostJob = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = ()>>> + Send>;

struct HostInner {
    jobs: Mutex<VecDeque<HostJob>>,
    signal: Arc<Signal>,
    closed: AtomicBool,
    /// The snapshot threads of the host's nodes.
    snapshots: SnapshotPool,
    /// Loops handed over without waiting that have not started yet (see
    /// [`ShardHost::queue_start`]), and the condition their start signals.
    starting: Mutex<usize>,
    started: Condvar,
    /// The host's own thread, once it runs.
    thread: std::sync::OnceLock<std::thread::ThreadId>,
}

/// Loops a host may have queued to start, handed over without waiting, before the next one
/// waits for the host to start some. Each holds its node's parts (a few KiB) on the heap of
/// the thread that added it until it starts; thousands queued at once, interleaved with the
/// nodes' long-lived allocations, left that heap in holes (about 100 bytes more resident per
/// replica after a 10 000-group start), and a caller adding groups faster than the host
/// starts them would queue without bound. A few dozen keep the caller from waiting on each
/// group's start, which is what made a start of thousands slow (ARCHITECTURE §14).
const STARTS_QUEUED_MAX: usize = 64;

/// A loop counted as queued to start on a host until this is dropped (see
/// [`ShardHost::queue_start`]).
pub(crate) struct QueuedStart(Arc<HostInner>);

/// [`ShardHost::queue_start`].
fn queue_start(inner: &Arc<HostInner>) -> QueuedStart {
    let own_thread = inner.thread.get() == Some(&std::thread::current().id());
    let mut starting = inner.starting.lock().unwrap_or_else(|p| p.into_inner());
    if *starting >= STARTS_QUEUED_MAX && !own_thread {
        while *starting > STARTS_QUEUED_MAX / 2 {
            starting = inner
                .started
                .wait(starting)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
    *starting += 1;
    QueuedStart(inner.clone())
}

impl Drop for QueuedStart {
    fn drop(&mut self) {
        let mut starting = self.0.starting.lock().unwrap_or_else(|p| p.into_inner());
        *starting -= 1;
        // Once half have started: a caller waits for a batch of starts, not woken for each.
        if *starting == STARTS_QUEUED_MAX / 2 {
            self.0.started.notify_all();
        }
    }
}

/// Snapshot threads a host's nodes share at most, unless said otherwise
/// (`MultiRaftConfig::snapshot_threads`).
pub(crate) const DEFAULT_SNAPSHOT_THREADS: usize = 4;

/// One shard thread that runs the shard loops of many nodes (see the module docs). Pass it to
/// [`Raft::new_on`](crate::Raft::new_on). Dropping the handle lets the thread end once every
/// node on it has shut down.
pub struct ShardHost {
    inner: Arc<HostInner>,
    io_driver: bool,
}

impl std::fmt::Debug for ShardHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardHost").finish_non_exhaustive()
    }
}

impl ShardHost {
    /// Starts the host thread, pinned to `cpu` if given (Linux). `io_driver` enables tokio's
    /// I/O driver on its runtime, which transports that run tasks (TCP) need; without it the
    /// runtime sleeps on a futex, which is cheaper to wake (right for the in-memory
    /// transport).
    ///
    /// The host's nodes share its snapshot threads (at most four, started as they are
    /// needed), instead of one thread each.
    pub fn new(cpu: Option<usize>, io_driver: bool) -> Result<ShardHost, StartError> {
        ShardHost::with_snapshot_threads(cpu, io_driver, DEFAULT_SNAPSHOT_THREADS)
    }

    /// [`ShardHost::new`], with at most `snapshot_threads` snapshot threads (at least one).
    pub(crate) fn with_snapshot_threads(
        cpu: Option<usize>,
        io_driver: bool,
        snapshot_threads: usize,
    ) -> Result<ShardHost, StartError> {
        let inner = Arc::new(HostInner {
            jobs: Mutex::new(VecDeque::new()),
            signal: Arc::new(Signal::default()),
            closed: AtomicBool::new(false),
            starting: Mutex::new(0),
            started: Condvar::new(),
            thread: std::sync::OnceLock::new(),
            snapshots: SnapshotPool::new(snapshot_threads),
        });
        let (started_tx, started_rx) = std::sync::mpsc::sync_channel(1);
        let thread_inner = inner.clone();
        std::thread::Builder::new()
            .name("ringraft-shard-host".into())
            .spawn(move || {
                let runtime = match super::runtime::prepare(cpu, io_driver) {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                        return;
                    }
                };
                let _ = thread_inner.thread.set(std::thread::current().id());
                let _ = started_tx.send(Ok(()));
                let local = tokio::task::LocalSet::new();
                runtime.block_on(local.run_until(accept_jobs(&thread_inner)));
                // No new nodes: run the remaining ones until they shut down.
                runtime.block_on(local);
            })
            .map_err(|e| StartError::Thread(e.to_string()))?;
        started_rx
            .recv()
            .unwrap_or_else(|_| Err(StartError::Thread("the host thread exited".into())))?;
        Ok(ShardHost { inner, io_driver })
    }

    /// Whether the host's runtime has tokio's I/O driver (see [`ShardHost::new`]).
    pub fn has_io_driver(&self) -> bool {
        self.io_driver
    }

    /// The snapshot threads the host's nodes share.
    pub(crate) fn snapshot_pool(&self) -> &SnapshotPool {
        &self.inner.snapshots
    }

    /// Counts one more loop queued to start on this host without its caller waiting for it,
    /// until the returned guard is dropped (when the loop started, or failed to). Waits first
    /// while [`STARTS_QUEUED_MAX`] are queued, until half of them have started, unless called
    /// on the host's own thread (which would wait for itself).
    pub(crate) fn queue_start(&self) -> QueuedStart {
        queue_start(&self.inner)
    }

    /// Queues a node's shard loop on the host thread.
    pub(crate) fn submit(&self, job: HostJob) {
        self.inner
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(job);
        self.inner.signal.notify();
    }
}

impl Drop for ShardHost {
    fn drop(&mut self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.signal.notify();
    }
}

/// Spawns every submitted shard loop as a task until the handle is dropped.
async fn accept_jobs(inner: &HostInner) {
    inner.signal.bind().await;
    // A long sleep that only guards against a missed wake-up; notifications end it early.
    let timer = tokio::time::sleep(Duration::from_secs(3600));
    tokio::pin!(timer);
    loop {
        inner.signal.take();
        let jobs: Vec<HostJob> = inner
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
            .collect();
        for job in jobs {
            tokio::task::spawn_local(job());
        }
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        if !inner.signal.is_pending() {
            timer
                .as_mut()
                .reset(tokio::time::Instant::now() + Duration::from_secs(3600));
            inner.signal.wait(timer.as_mut()).await;
        }
    }
}

/// The process's default hosts, each with the number of live nodes on it.
static DEFAULT_HOSTS: std::sync::OnceLock<Mutex<HostPool>> = std::sync::OnceLock::new();

/// Default hosts, each with its count of live nodes.
type HostPool = Vec<(ShardHost, Arc<AtomicUsize>)>;

/// Counts a node on a default host until the node's shard loop ends.
pub(crate) struct HostSeat(Arc<AtomicUsize>);

impl Drop for HostSeat {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A default host (no I/O driver) for one more node whose transport runs no tasks (the
/// in-memory transport): an empty host if one exists or another may be started, else the one
/// with the fewest nodes. At most one host per CPU the process may use, less one left to the
/// application, its clients and the apply threads of slow state machines: nodes that talk
/// through memory deliver messages by waking tasks, which is cheapest on one thread (a
/// 3-node in-memory cluster on 2 vCPUs commits a single client's write in about 40 % less
/// time and half the CPU, see docs/PERFORMANCE.md). The hosts live as long as the process (their threads sleep while
/// they have no nodes). Nodes with a TCP transport keep a thread each: sharing measured no
/// faster and had longer tails.
pub(crate) fn default_host(
    place: impl FnOnce(&ShardHost, HostSeat) -> Result<(), StartError>,
) -> Result<(), StartError> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let hosts_max = cpus.saturating_sub(1).max(1);
    let pool = DEFAULT_HOSTS.get_or_init(Mutex::default);
    let mut pool = pool.lock().unwrap_or_else(|p| p.into_inner());
    let least = pool
        .iter()
        .enumerate()
        .min_by_key(|(_, (_, nodes))| nodes.load(Ordering::Acquire))
        .map(|(i, (_, nodes))| (i, nodes.load(Ordering::Acquire)));
    let chosen = match least {
        Some((i, 0)) => i,
        Some((i, _)) if pool.len() >= hosts_max => i,
        _ => {
            pool.push((ShardHost::new(None, false)?, Arc::default()));
            pool.len() - 1
        }
    };
    let (host, nodes) = &pool[chosen];
    nodes.fetch_add(1, Ordering::AcqRel);
    let seat = HostSeat(nodes.clone());
    // Started under the lock, so two nodes starting at once see each other's seats.
    place(host, seat)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A caller queueing loops to start waits once `STARTS_QUEUED_MAX` are queued, until half
    /// of them have started; on the host's own thread it never waits.
    #[test]
    fn queued_starts_are_bounded_and_a_waiting_caller_resumes_after_half_started() {
        let host = ShardHost::new(None, false).expect("host");
        let mut queued: Vec<QueuedStart> =
            (0..STARTS_QUEUED_MAX).map(|_| host.queue_start()).collect();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                let start = host.queue_start();
                let _ = done_tx.send(());
                drop(start);
            });
            let early = done_rx.recv_timeout(Duration::from_millis(200)).is_ok();
            // One short of half started: still waiting.
            queued.truncate(STARTS_QUEUED_MAX / 2 + 1);
            let still_early = done_rx.recv_timeout(Duration::from_millis(100)).is_ok();
            queued.pop();
            let resumed = done_rx.recv_timeout(Duration::from_secs(5)).is_ok();
            // Whatever happened, the waiter is not left waiting when the scope ends.
            queued.clear();
            assert!(!early, "a caller queued a start beyond the bound");
            assert!(!still_early, "a caller resumed before half had started");
            assert!(resumed, "a caller did not resume once half had started");
        });
        // The host's own thread queues past the bound without waiting for itself.
        let full: Vec<QueuedStart> = (0..STARTS_QUEUED_MAX).map(|_| host.queue_start()).collect();
        let (tx, rx) = std::sync::mpsc::channel();
        let inner = host.inner.clone();
        host.submit(Box::new(move || {
            Box::pin(async move {
                let extra = queue_start(&inner);
                let _ = tx.send(());
                drop(extra);
            })
        }));
        assert!(
            rx.recv_timeout(Duration::from_secs(5)).is_ok(),
            "the host's thread waited for itself"
        );
        drop(full);
    }
}
