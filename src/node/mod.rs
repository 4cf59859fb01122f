//! The node runtime (ARCHITECTURE §2): the glue that turns the sans-IO core into a running node.
//!
//! ```text
//!  Raft handles ──push──► Submissions (bounded) ──drain once per turn──┐
//!                                                                      ▼
//!  transport ──poll_recv──► shard thread: Core::step … take_effects ──► effects, in order:
//!  log store ──durable──►     Persist → LogStore (+ StableStore after the entries are durable)
//!  apply thread ──events──►   Send → Transport · Apply → apply thread · snapshot chunks →
//!                             SnapshotStore · Reply → resolve the caller's future
//!                                                                      │ committed entries
//!                                                                      ▼
//!                             apply thread: Fsm::apply, resolves apply futures with responses
//! ```
//!
//! One turn of the shard loop: drain the submission queue (every request becomes one `step`;
//! all of them share the next `take_effects`, so proposals that arrived together become one
//! persist batch and one AppendEntries per follower), internal events, transport messages,
//! durability completions and timers; then perform the effects until the core is quiet. It
//! sleeps until something wakes it ([`signal::Signal`]) or the core's next timer.
//!
//! The shard thread runs a tokio current-thread runtime of its own ([`runtime`]): the TCP
//! transport's connection tasks live there, next to the core they serve.

pub(crate) mod apply;
pub(crate) mod campaign;
pub(crate) mod clock;
pub(crate) mod events;
pub(crate) mod host;
pub(crate) mod metrics;
pub(crate) mod reaper;
pub(crate) mod reply;
pub(crate) mod router;
pub(crate) mod runtime;
pub(crate) mod shard;
pub(crate) mod signal;
pub(crate) mod start;

use crate::api::config::ReloadableConfig;
use crate::api::error::{BootstrapClusterError, ReloadConfigError, TakeSnapshotError};
use crate::api::future::Sender;
use crate::api::observer::{Observation, Observer, ObserverId};
use crate::api::outcome::RaftState;
use crate::api::watch::LeaderWatch;
use crate::core::MembershipChange;
use bytes::Bytes;
pub(crate) use reply::Reply;
use ringraft_storage::{Configuration, Index, NodeId, SnapshotMeta};
use signal::Signal;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// A caller's request, on its way to the shard thread.
pub(crate) enum Command {
    /// `reply` is `Reply::Apply` or `Reply::ApplyBatch`.
    Apply {
        commands: Vec<Bytes>,
        extensions: Vec<Bytes>,
        reply: Reply,
    },
    Barrier {
        reply: Reply,
    },
    VerifyLeader {
        reply: Reply,
    },
    Read {
        lease: bool,
        reply: Reply,
    },
    Membership {
        change: MembershipChange,
        prev_index: Option<Index>,
        /// How long it may wait to start (behind other changes) after it was submitted.
        timeout: Duration,
        reply: Reply,
    },
    Transfer {
        target: Option<NodeId>,
        reply: Reply,
    },
    Restore {
        data: Box<dyn std::io::Read + Send>,
        reply: Reply,
    },
    Snapshot {
        reply: Sender<Result<SnapshotMeta, TakeSnapshotError>>,
    },
    Bootstrap {
        configuration: Configuration,
        reply: Sender<Result<(), BootstrapClusterError>>,
    },
    Reload {
        reloadable: ReloadableConfig,
        reply: Sender<Result<(), ReloadConfigError>>,
    },
}

/// Why a request could not enter the submission queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PushError {
    Timeout,
    Shutdown,
}

struct QueueInner {
    items: VecDeque<Command>,
    closed: bool,
}

/// The bounded submission queue (backpressure): callers wait for room up to their timeout.
pub(crate) struct Submissions {
    inner: Mutex<QueueInner>,
    not_full: Condvar,
    capacity: usize,
}

impl Submissions {
    fn new(capacity: usize) -> Submissions {
        Submissions {
            inner: Mutex::new(QueueInner {
                items: VecDeque::new(),
                closed: false,
            }),
            not_full: Condvar::new(),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Enqueues `command`, waiting up to `timeout` for room (`Duration::ZERO`: as long as it
    /// takes, hashicorp's convention). On failure the command (and its reply sender) is
    /// dropped; the caller answers with the returned error.
    pub(crate) fn push(
        &self,
        command: Command,
        timeout: Duration,
        signal: &Signal,
    ) -> Result<(), PushError> {
        // The clock is read only if the queue is full (the common case never waits).
        let mut deadline = None;
        let mut inner = self.lock();
        loop {
            if inner.closed {
                return Err(PushError::Shutdown);
            }
            if inner.items.len() < self.capacity {
                inner.items.push_back(command);
                drop(inner);
                signal.notify();
                return Ok(());
            }
            if !timeout.is_zero() && deadline.is_none() {
                deadline = Some(clock::monotonic_now() + timeout);
            }
            inner = match deadline {
                None => self.not_full.wait(inner).unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let now = clock::monotonic_now();
                    if now >= deadline {
                        return Err(PushError::Timeout);
                    }
                    self.not_full
                        .wait_timeout(inner, deadline - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }

    /// Moves every queued command to `out`.
    pub(crate) fn drain(&self, out: &mut VecDeque<Command>) {
        let mut inner = self.lock();
        if inner.items.is_empty() {
            return;
        }
        let was_full = inner.items.len() >= self.capacity;
        if out.is_empty() {
            std::mem::swap(&mut inner.items, out);
        } else {
            out.extend(inner.items.drain(..));
        }
        drop(inner);
        if was_full {
            self.not_full.notify_all();
        }
    }

    /// Whether no command is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.lock().items.is_empty()
    }

    /// Gives back the queue's room if it is empty (an idle node, ARCHITECTURE §14).
    pub(crate) fn release_if_empty(&self) {
        let mut inner = self.lock();
        if inner.items.is_empty() && inner.items.capacity() > 0 {
            inner.items = VecDeque::new();
        }
    }

    /// Refuses further commands and returns the ones still queued (dropping them answers
    /// their callers with `Shutdown`).
    pub(crate) fn close(&self) -> VecDeque<Command> {
        let mut inner = self.lock();
        inner.closed = true;
        let rest = std::mem::take(&mut inner.items);
        drop(inner);
        self.not_full.notify_all();
        rest
    }
}

/// Someone waiting for the node to stop.
pub(crate) type StopWaiter = Sender<Result<(), ()>>;

/// State shared by the handles, the shard thread and the apply thread.
pub(crate) struct Shared {
    pub(crate) id: NodeId,
    /// The node's clock (the shard's), to read `StatsCells::last_contact` against.
    pub(crate) clock: clock::Clock,
    /// The reloadable settings in force (the shard updates it on `reload_config`).
    pub(crate) reloadable: Mutex<ReloadableConfig>,
    pub(crate) signal: Arc<Signal>,
    pub(crate) queue: Submissions,
    pub(crate) shutdown_requested: AtomicBool,
    state: AtomicU8,
    pub(crate) term: AtomicU64,
    pub(crate) commit_index: AtomicU64,
    pub(crate) last_index: AtomicU64,
    pub(crate) applied_index: AtomicU64,
    /// The known leader's id, 0 for none.
    pub(crate) leader: AtomicU64,
    pub(crate) configuration: Mutex<(Index, Configuration)>,
    pub(crate) leader_watch: Arc<LeaderWatch>,
    /// Whether the node has fully stopped, and who waits for it.
    stopped: Mutex<(bool, Vec<StopWaiter>)>,
    /// The error that stopped the node, if one did.
    pub(crate) fatal: Mutex<Option<String>>,
    /// Registered observers; `observer_count` lets the shard skip the lock when there are none.
    observers: Mutex<Vec<(ObserverId, Observer)>>,
    observer_count: AtomicUsize,
    next_observer_id: AtomicU64,
    /// What [`Raft::stats`](crate::Raft::stats) reports beyond the fields above, published by
    /// the shard each turn (and `fsm_pending` by the shard and the apply thread).
    pub(crate) stats: StatsCells,
    /// The node's metric handles (see [`crate::api::metrics`]), registered when it starts.
    pub(crate) metrics: Arc<metrics::NodeMetrics>,
}

/// Counters the shard publishes for `stats()`.
#[derive(Default)]
pub(crate) struct StatsCells {
    pub(crate) last_log_index: AtomicU64,
    pub(crate) last_log_term: AtomicU64,
    pub(crate) last_snapshot_index: AtomicU64,
    pub(crate) last_snapshot_term: AtomicU64,
    /// Batches handed to the apply thread and not yet applied (hashicorp's `fsm_pending`).
    pub(crate) fsm_pending: AtomicU64,
    /// When this node last heard from its leader, as nanoseconds of the node's clock plus one
    /// (0: never).
    pub(crate) last_contact: AtomicU64,
}

impl Shared {
    pub(crate) fn new(
        id: NodeId,
        queue_capacity: usize,
        clock: clock::Clock,
        reloadable: ReloadableConfig,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            id,
            clock,
            reloadable: Mutex::new(reloadable),
            signal: Arc::new(Signal::default()),
            queue: Submissions::new(queue_capacity),
            shutdown_requested: AtomicBool::new(false),
            state: AtomicU8::new(state_code(RaftState::Follower)),
            term: AtomicU64::new(0),
            commit_index: AtomicU64::new(0),
            last_index: AtomicU64::new(0),
            applied_index: AtomicU64::new(0),
            leader: AtomicU64::new(0),
            configuration: Mutex::new((Index(0), Configuration::default())),
            leader_watch: LeaderWatch::new(),
            stopped: Mutex::new((false, Vec::new())),
            fatal: Mutex::new(None),
            observers: Mutex::new(Vec::new()),
            observer_count: AtomicUsize::new(0),
            next_observer_id: AtomicU64::new(1),
            stats: StatsCells::default(),
            metrics: Arc::new(metrics::NodeMetrics::new(id)),
        })
    }

    pub(crate) fn register_observer(&self, observer: Observer) -> ObserverId {
        let id = ObserverId(self.next_observer_id.fetch_add(1, Ordering::Relaxed));
        let mut list = self.observers.lock().unwrap_or_else(|p| p.into_inner());
        list.push((id, observer));
        self.observer_count.store(list.len(), Ordering::Release);
        id
    }

    /// True if `id` was registered.
    pub(crate) fn deregister_observer(&self, id: ObserverId) -> bool {
        let mut list = self.observers.lock().unwrap_or_else(|p| p.into_inner());
        let before = list.len();
        list.retain(|(i, _)| *i != id);
        self.observer_count.store(list.len(), Ordering::Release);
        list.len() != before
    }

    pub(crate) fn has_observers(&self) -> bool {
        self.observer_count.load(Ordering::Acquire) > 0
    }

    /// Offers `observation` to every observer. The list is copied out first so a blocking
    /// observer never holds the lock (registration stays possible while it waits).
    pub(crate) fn observe(&self, observation: Observation) {
        if !self.has_observers() {
            return;
        }
        let list: Vec<Observer> = self
            .observers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(_, o)| o.clone())
            .collect();
        for observer in list {
            observer.notify(&observation);
        }
    }

    pub(crate) fn state(&self) -> RaftState {
        match self.state.load(Ordering::Acquire) {
            0 => RaftState::Follower,
            1 => RaftState::PreCandidate,
            2 => RaftState::Candidate,
            3 => RaftState::Leader,
            _ => RaftState::Shutdown,
        }
    }

    pub(crate) fn set_state(&self, state: RaftState) {
        self.state.store(state_code(state), Ordering::Release);
    }

    /// Asks the shard thread to stop.
    pub(crate) fn request_shutdown(&self) {
        self.shutdown_requested.store(true, Ordering::Release);
        self.signal.notify();
    }

    pub(crate) fn shutdown_requested(&self) -> bool {
        self.shutdown_requested.load(Ordering::Acquire)
    }

    /// Registers a waiter for the node to stop; `None` if it already has.
    pub(crate) fn on_stopped(
        &self,
        waiter: Sender<Result<(), ()>>,
    ) -> Option<Sender<Result<(), ()>>> {
        let mut stopped = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
        if stopped.0 {
            return Some(waiter);
        }
        stopped.1.push(waiter);
        None
    }

    /// Marks the node stopped and wakes everyone waiting for it.
    pub(crate) fn mark_stopped(&self) {
        let waiters = {
            let mut stopped = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
            stopped.0 = true;
            std::mem::take(&mut stopped.1)
        };
        for w in waiters {
            w.send(Ok(()));
        }
    }

    pub(crate) fn set_fatal(&self, error: String) {
        let mut fatal = self.fatal.lock().unwrap_or_else(|p| p.into_inner());
        fatal.get_or_insert(error);
    }
}

fn state_code(state: RaftState) -> u8 {
    match state {
        RaftState::Follower => 0,
        RaftState::PreCandidate => 1,
        RaftState::Candidate => 2,
        RaftState::Leader => 3,
        RaftState::Shutdown => 4,
    }
}

/// Stops the node when dropped, even if the shard thread panics: the queue is closed (queued
/// requests answer `Shutdown`) and shutdown waiters are woken.
pub(crate) struct StopGuard(pub(crate) Arc<Shared>);

impl Drop for StopGuard {
    fn drop(&mut self) {
        let shared = &self.0;
        shared.shutdown_requested.store(true, Ordering::Release);
        drop(shared.queue.close());
        shared.set_state(RaftState::Shutdown);
        shared.leader.store(0, Ordering::Release);
        // hashicorp's LeaderCh says `false` before the node stops: the watch delivers "no
        // leader" as a change first (unless it already said so), then closes.
        let term = ringraft_storage::Term(shared.term.load(Ordering::Acquire));
        shared
            .leader_watch
            .publish(crate::api::watch::LeaderObservation { leader: None, term });
        shared.leader_watch.close();
        shared.mark_stopped();
    }
}
