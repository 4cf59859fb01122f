//! The shard thread: owns the [`Core`] and performs its effects in order (see the module docs
//! of [`crate::node`] and [`crate::core`]).
//!
//! This file holds the loop (`run`, `turn`) and the effect dispatch. By concern:
//! `requests` (commands from the handles, waiters, replies), `membership` (configuration
//! changes waiting in line), `persistence` (persist batches, hard state, durability, live
//! bootstrap), `peers` (messages received, heartbeat observations, the transport's peer list),
//! `observation` (role, leader and configuration updates for handles and observers),
//! `snapshots` (snapshots taken, installed and restored, user restores) and `snapshot_io` (the
//! worker thread that does every snapshot-store operation).

mod membership;
mod observation;
mod peers;
mod persistence;
mod requests;
pub(crate) mod snapshot_io;
mod snapshots;
mod stable_io;
mod waiters;

use requests::Waiter;
pub(crate) use snapshot_io::SnapshotIo;
use snapshot_io::SnapshotJob;
pub(crate) use stable_io::StableKey;

use super::apply::{ApplyLoop, ApplyTask, ShardEvent};
use super::clock::Clock;
use super::metrics::ShardMetrics;
use super::reply::{Next, Responses};
use super::{Command, Reply, Shared};
use crate::api::config::Config;
use crate::api::error::{BootstrapClusterError, RestoreError, TakeSnapshotError};
use crate::api::fsm::FsmSnapshot;
use crate::api::future::Sender;
use crate::api::observer::Observation;
use crate::api::outcome::RaftState;
use crate::api::watch::LeaderObservation;
use crate::core::{
    BootstrapError, Core, Effect, Event, Input, Outcome, PersistBatch, RecoveredState,
    RequestError, Role, Time, Token,
};
use bytes::Bytes;
use ringraft_net::message::{Body, Message};
use ringraft_net::transport::{Transport, TransportEvent};
use ringraft_storage::{
    EntryKind, GroupId, Index, LogError, LogId, LogStore, NodeId, SnapshotMeta, SnapshotStore,
    StableStore, Term, Ticket,
};
use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll, Waker};
use std::thread::JoinHandle;
use std::time::Duration;

/// Most transport events handled in one turn, so requests and timers are not starved.
const MESSAGES_PER_TURN_MAX: usize = 4096;

/// Longest park without a timer, as a guard against a missed wake-up.
const PARK_MAX: Duration = Duration::from_millis(100);

/// The same guard while the core is quiesced (ARCHITECTURE §14): thousands of idle groups on a
/// thread must not each wake ten times a second.
const QUIESCED_PARK_MAX: Duration = Duration::from_secs(30);

/// Without transport tasks, a busy shard still yields to its runtime this often (timers).
const YIELD_EVERY_BUSY_TURNS: u32 = 64;

/// A node's use of its transport's campaign slots ([`Transport::poll_campaign_slot`]): a
/// host of many groups paces their elections (ARCHITECTURE §14, "Herds").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CampaignSlot {
    None,
    /// Queued for a slot; the transport wakes the shard when it is granted. Asked again at
    /// `recheck_at` (a guard against a lost wake-up).
    Waiting {
        recheck_at: Time,
    },
    /// Granted at `since`; given back when the campaign ends, when the leader it made has
    /// settled (it committed an entry of its term), or two election timeouts after `since`.
    Held {
        since: Time,
    },
}

/// Everything the shard thread owns.
pub(crate) struct Shard {
    pub(crate) core: Core,
    pub(crate) config: Config,
    pub(crate) log: Box<dyn LogStore>,
    /// The stable store, behind its worker (used only when the log store keeps no hard
    /// state).
    stable: stable_io::StableIo,
    pub(crate) snapshots: Arc<dyn SnapshotStore>,
    pub(crate) transport: Box<dyn Transport>,
    /// Whether the transport works in tasks on this thread's runtime (yield every turn).
    yield_every_turn: bool,
    /// When a follower writes its persist batches itself (ARCHITECTURE §10).
    inline_writes: persistence::InlineWrites,
    pub(crate) shared: Arc<Shared>,
    pub(crate) clock: Clock,
    /// Where the state machine runs; `None` once it stopped (shutdown, or it failed).
    applier: Option<Applier>,
    pub(crate) events_rx: crate::node::events::EventReceiver,
    /// For the stable-store worker's answers.
    events_tx: crate::node::events::EventSender,
    next_token: u64,
    waiters: waiters::Waiters<Waiter>,
    pending_persist: VecDeque<persistence::PendingPersist>,
    commands: VecDeque<Command>,
    /// Where snapshot-store operations run (never on this thread).
    snapshot_io: SnapshotIo,
    /// Apply tasks held back behind a restore whose snapshot the worker is opening, so the
    /// state machine sees the restore in its place among the entries.
    apply_held: VecDeque<Held>,
    snapshot_in_progress: bool,
    snapshot_waiters: Vec<Sender<Result<SnapshotMeta, TakeSnapshotError>>>,
    next_snapshot_check: Time,
    /// The last index when the log's memory last started a snapshot: it starts none again
    /// before `snapshot_threshold` more entries, so a snapshot that fails (or finds nothing
    /// new applied) is not retried every turn.
    memory_snapshot_at: Index,
    configuration_dirty: bool,
    /// While leading (and observed): when each peer was last heard from, and whether a
    /// heartbeat failure was reported for it; `leading_since` (the election, or when observing
    /// began) stands in for peers not yet heard from.
    peer_contact: BTreeMap<NodeId, (Time, bool)>,
    leading_since: Time,
    next_heartbeat_check: Time,
    transport_closed: bool,
    /// Where this node is in its host's campaign pacing (ARCHITECTURE §14, "Herds").
    campaign: CampaignSlot,
    /// The peers this shard gave the transport from configurations, each with a hash of the
    /// address it gave ([`peers::address_hash`]). A few entries, sized exactly: this is per
    /// group, and a node may run thousands (a map's node would hold room for eleven).
    transport_peers: Box<[(NodeId, u64)]>,
    /// The configurations in force changed in a way no effect shows (start, bootstrap).
    transport_peers_dirty: bool,
    /// The latest configuration's index while it is not committed: once the commit index
    /// reaches it, members that only the old committed configuration had are dropped.
    transport_peers_recheck_at: Option<Index>,
    fatal: Option<String>,
    /// The hard state last submitted for persistence (term and vote from the core's batches,
    /// the commit index riding along).
    hard_state: ringraft_storage::HardState,
    /// Membership requests waiting for the one in flight.
    membership: membership::MembershipQueue,
    /// A bootstrap whose initial state is not durable yet: its ticket and its caller.
    bootstrapping: Option<persistence::Bootstrapping>,
    /// Metric tallies and timings, flushed once per turn.
    metrics: ShardMetrics,
    /// The host thread's reaper of the log store's asynchronous writes, if it writes that
    /// way (see [`Shard::watch_write_completions`]).
    reaper: Option<std::rc::Rc<super::reaper::Reaper>>,
}

/// An apply task held back behind a restore being opened, or that restore.
enum Held {
    Task(ApplyTask),
    Open { meta: SnapshotMeta, stage: bool },
}

/// What the shard needs to start.
pub(crate) struct ShardParts {
    pub(crate) core: Core,
    pub(crate) config: Config,
    pub(crate) log: Box<dyn LogStore>,
    pub(crate) stable: Box<dyn StableStore>,
    pub(crate) snapshots: Arc<dyn SnapshotStore>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) clock: Clock,
    pub(crate) applier: Applier,
    pub(crate) events_tx: crate::node::events::EventSender,
    pub(crate) events_rx: crate::node::events::EventReceiver,
    /// The node's snapshot I/O worker (started with the node).
    pub(crate) snapshot_io: SnapshotIo,
}

/// Where the state machine runs.
pub(crate) enum Applier {
    /// On its own apply thread, fed through a channel.
    Thread {
        tx: mpsc::Sender<ApplyTask>,
        thread: JoinHandle<()>,
    },
    /// On the shard thread itself (`ApplyPlacement::ShardThread`, or `Adaptive` while the
    /// state machine is fast: then `adaptive` watches its calls).
    Inline {
        apply: Box<ApplyLoop>,
        adaptive: Option<SlowCalls>,
    },
}

impl Applier {
    /// The state machine on a thread of its own (node `id`'s).
    pub(crate) fn own_thread(apply: ApplyLoop, id: NodeId) -> std::io::Result<Applier> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("ringraft-apply-{}", id.0))
            .spawn(move || apply.run(rx))?;
        Ok(Applier::Thread { tx, thread })
    }
}

/// An adaptive placement's record of slow state-machine calls (see `ApplyPlacement::Adaptive`).
#[derive(Debug, Default)]
pub(crate) struct SlowCalls {
    /// The slow calls (1 ms or more of CPU) of the last [`SLOW_CALLS_WINDOW`]: when each
    /// ended and what it computed.
    recent: VecDeque<(std::time::Instant, Duration)>,
    /// Their CPU time together.
    recent_cpu: Duration,
    /// A reading of the thread's CPU time from before this turn's first call (wall instant,
    /// CPU time): reading the thread CPU clock is a system call, so the groups of a shard
    /// thread share one reading for up to [`super::clock::THREAD_CPU_MAX_AGE`], and it is
    /// read again only after a call that took a millisecond of wall time.
    turn: Option<(std::time::Instant, Option<Duration>)>,
}

/// A call that computes this long (thread CPU time, so preemption on a busy machine does not
/// count) is slow; slow calls computing [`SLOW_CALLS_CPU`] together within
/// [`SLOW_CALLS_WINDOW`] move the state machine.
///
/// A budget rather than a count of slow calls: a state machine that is slow call after call
/// uses it up within a few calls, while the occasional pause of a fast one does not. A hash
/// map that doubles pauses for 1, 2, then 5 ms as it grows through 28 000, 57 000 and 114 000
/// keys (measured: `ringraft-load`'s state machine, docs/PERFORMANCE.md session 10); three
/// such pauses within a second used to move every state machine of an in-process cluster off
/// the shard thread within its first seconds, and each write then paid a thread hand-off more.
/// A map's doublings pause for about as long in all as it took to grow, so the faster the
/// writes, the more of them fall within one window: at 140 000 writes/s (one blocking client
/// in memory) four doublings (1, 2, 4 and 8 ms) came within a second and, with a preemption,
/// sometimes crossed a 20 ms budget (session 12). 50 ms, 5 % of the window, leaves room for
/// that and still moves a state machine that is slow on every call within 50 calls.
const SLOW_CALL: Duration = Duration::from_millis(1);
const SLOW_CALLS_CPU: Duration = Duration::from_millis(50);
const SLOW_CALLS_WINDOW: Duration = Duration::from_secs(1);
/// One call this long in wall time (blocking I/O, say) moves the state machine at once.
const VERY_SLOW_CALL: Duration = Duration::from_millis(20);

impl SlowCalls {
    /// A new shard turn begins.
    fn new_turn(&mut self) {
        self.turn = None;
    }

    /// A call begins; returns when.
    fn call_starting(&mut self) -> std::time::Instant {
        let now = super::clock::monotonic_now();
        if self.turn.is_none() {
            self.turn = Some(super::clock::recent_thread_cpu(now));
        }
        now
    }

    /// The call that began at `started` ended at `ended`; true if the state machine should
    /// move.
    fn call_ended(&mut self, started: std::time::Instant, ended: std::time::Instant) -> bool {
        let wall = ended.duration_since(started);
        // A thread computes no longer than the wall time passes: a call shorter than a slow
        // call's CPU time needs no CPU clock.
        let cpu = if wall < SLOW_CALL {
            wall
        } else {
            match (self.turn, super::clock::thread_cpu_now()) {
                // CPU time since the reading less the wall time from the reading until this
                // call began (the most the thread computed then): a lower bound of this
                // call's CPU time, short by at most the time the thread did not run between
                // the reading and the call (under `THREAD_CPU_MAX_AGE` for the turn's first
                // call).
                (Some((turn_started, Some(turn_cpu))), Some(now)) => now
                    .saturating_sub(turn_cpu)
                    .saturating_sub(started.saturating_duration_since(turn_started)),
                // Without a thread CPU clock, wall time stands in.
                _ => wall,
            }
        };
        self.too_slow(wall, cpu, ended)
    }

    /// Notes a call that took `wall` (and `cpu` of the thread's CPU time), ending at `at`;
    /// true if the state machine should move.
    fn too_slow(&mut self, wall: Duration, cpu: Duration, at: std::time::Instant) -> bool {
        if wall >= VERY_SLOW_CALL {
            return true;
        }
        if cpu < SLOW_CALL {
            return false;
        }
        self.recent.push_back((at, cpu));
        self.recent_cpu += cpu;
        while let Some(&(ended, spent)) = self.recent.front() {
            if at.duration_since(ended) <= SLOW_CALLS_WINDOW {
                break;
            }
            self.recent.pop_front();
            self.recent_cpu = self.recent_cpu.saturating_sub(spent);
        }
        self.recent_cpu >= SLOW_CALLS_CPU
    }
}

impl Shard {
    pub(crate) fn new(
        p: ShardParts,
        transport: Box<dyn Transport>,
        yield_every_turn: bool,
        alone_on_thread: bool,
    ) -> Shard {
        let mut applier = p.applier;
        if let Applier::Inline { apply, .. } = &mut applier {
            apply.start();
            apply.report_inline();
        }
        let metrics = ShardMetrics::new(
            p.shared.metrics.clone(),
            p.shared.id,
            p.clock,
            p.config.heartbeat_timeout,
        );
        let hard_state = p.core.hard_state();
        let snapshot_io = p.snapshot_io;
        Shard {
            core: p.core,
            config: p.config,
            log: p.log,
            stable: stable_io::StableIo::new(p.stable),
            snapshots: p.snapshots,
            transport,
            yield_every_turn,
            inline_writes: persistence::InlineWrites::new(alone_on_thread),
            shared: p.shared,
            clock: p.clock,
            applier: Some(applier),
            events_rx: p.events_rx,
            events_tx: p.events_tx,
            next_token: 0,
            waiters: waiters::Waiters::default(),
            pending_persist: VecDeque::new(),
            commands: VecDeque::new(),
            snapshot_io,
            apply_held: VecDeque::new(),
            snapshot_in_progress: false,
            snapshot_waiters: Vec::new(),
            next_snapshot_check: Time(0),
            memory_snapshot_at: Index(0),
            configuration_dirty: true,
            peer_contact: BTreeMap::new(),
            leading_since: Time(0),
            next_heartbeat_check: Time(0),
            transport_closed: false,
            campaign: CampaignSlot::None,
            transport_peers: Box::default(),
            transport_peers_dirty: true,
            transport_peers_recheck_at: None,
            fatal: None,
            hard_state,
            membership: membership::MembershipQueue::default(),
            bootstrapping: None,
            metrics,
            reaper: None,
        }
    }

    /// Lets the log store write released batches without blocking, its completions reaped by
    /// the host thread's reaper task (see [`super::reaper`]). Call from a `LocalSet` on a
    /// runtime with an I/O driver: a shard host's.
    pub(crate) fn watch_write_completions(&mut self) {
        if let Some(completions) = self.log.write_completions() {
            self.reaper = super::reaper::reaper(completions);
        }
    }

    /// The shard loop, on the shard thread's tokio runtime; returns when the node shuts down
    /// or fails.
    ///
    /// Why a plain loop over one future rather than `select!` over many: every source of
    /// work (callers, the apply thread, the log store's I/O thread, the transport) funnels
    /// into one [`Signal`](super::signal::Signal), so a turn always drains everything and a
    /// wake-up costs one atomic when the shard is already awake. The runtime only parks (on
    /// epoll) when the shard has nothing to do, and runs the TCP transport's connection tasks
    /// whenever the loop yields.
    ///
    /// The shard is boxed so the loop's future holds a pointer: a future that held the shard
    /// by value, awaited by a task that built it, would hold it twice (thousands of groups on
    /// one host pay for every byte, ARCHITECTURE §14).
    pub(crate) async fn run(mut self: Box<Self>) {
        let signal = self.shared.signal.clone();
        signal.bind().await;
        let waker = Waker::from(signal.clone());
        let notifier = signal.clone();
        self.log
            .set_durable_notifier(Arc::new(move || notifier.notify()));
        self.begin(self.clock.now());
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut busy_turns: u32 = 0;
        while !self.shared.shutdown_requested() && self.fatal.is_none() {
            signal.take();
            super::signal::note_turn();
            let now = self.clock.now();
            let busy = self.turn(now, &waker);
            if self.shared.shutdown_requested() || self.fatal.is_some() {
                break;
            }
            if busy || signal.is_pending() {
                // More work is waiting. Let the runtime's other tasks (connections) run first
                // when there are any, and now and then regardless.
                busy_turns = busy_turns.wrapping_add(1);
                if self.yield_every_turn || busy_turns % YIELD_EVERY_BUSY_TURNS == 0 {
                    tokio::task::yield_now().await;
                }
                continue;
            }
            busy_turns = 0;
            let next = self.next_wakeup();
            let now = self.clock.now();
            if next > now {
                let park_max = if self.core.is_quiesced() {
                    self.release_idle_memory();
                    QUIESCED_PARK_MAX
                } else {
                    PARK_MAX
                };
                let sleep_for = Clock::until(now, next).min(park_max);
                timer
                    .as_mut()
                    .reset(tokio::time::Instant::now() + sleep_for);
                signal.wait(timer.as_mut()).await;
            }
        }
        self.stop();
    }

    /// Gives back the room of empty queues before a quiesced shard parks: a host of thousands
    /// of idle groups should not keep buffers sized for bursts (ARCHITECTURE §14).
    fn release_idle_memory(&mut self) {
        fn release<T>(q: &mut VecDeque<T>) {
            if q.is_empty() && q.capacity() > 0 {
                *q = VecDeque::new();
            }
        }
        release(&mut self.commands);
        release(&mut self.pending_persist);
        release(&mut self.apply_held);
        self.shared.queue.release_if_empty();
        self.transport.release_idle_memory();
        self.metrics.release_idle_memory();
        self.core.release_idle_memory();
    }

    /// Before the first turn at `now`.
    pub(crate) fn begin(&mut self, now: Time) {
        self.schedule_snapshot_check(now);
    }

    /// When the shard next has something to do without being woken: the core's next timer
    /// or the next automatic-snapshot check.
    pub(crate) fn next_wakeup(&self) -> Time {
        let timer = match self.campaign {
            // The election timer is due; the transport wakes the shard once a slot is granted.
            CampaignSlot::Waiting { recheck_at } => recheck_at,
            _ => self.core.next_timer(),
        };
        timer.min(self.next_snapshot_check)
    }

    /// False if the election timer is due but the node must wait for a campaign slot: the
    /// tick is held back (a tick of a node that is not leading only starts campaigns).
    fn may_campaign(&mut self, now: Time, waker: &Waker) -> bool {
        if !self.core.campaign_due(now) || matches!(self.campaign, CampaignSlot::Held { .. }) {
            return true;
        }
        match self
            .transport
            .poll_campaign_slot(&mut Context::from_waker(waker))
        {
            Poll::Ready(()) => {
                self.campaign = CampaignSlot::Held { since: now };
                true
            }
            Poll::Pending => {
                // Thousands of groups may wait at once: the guard is long.
                let recheck = 4 * self.core.config().election_timeout.as_nanos() as u64;
                self.campaign = CampaignSlot::Waiting {
                    recheck_at: now.plus_nanos(recheck),
                };
                false
            }
        }
    }

    /// After a turn: gives back a campaign slot whose campaign is over (the node follows, or
    /// leads and committed an entry of its term, or held it for two election timeouts), and
    /// leaves the queue for one if the node no longer needs it (it heard from a leader).
    fn settle_campaign_slot(&mut self, now: Time) {
        #[cfg(feature = "sim")]
        if self.core.config().mutation == Some(crate::core::Mutation::GlueKeepsCampaignSlot)
            && matches!(self.campaign, CampaignSlot::Held { .. })
        {
            return;
        }
        let done = match self.campaign {
            CampaignSlot::None => false,
            CampaignSlot::Waiting { .. } => !self.core.campaign_due(now),
            CampaignSlot::Held { since } => {
                let expires = 2 * self.core.config().election_timeout.as_nanos() as u64;
                now >= since.plus_nanos(expires)
                    || match self.core.role() {
                        Role::Follower => true,
                        Role::PreCandidate | Role::Candidate => false,
                        // Settled: a quorum holds the entry that opened its term, so a
                        // quorum follows it. It heartbeats on until it quiesces, but no
                        // longer campaigns (ARCHITECTURE §14, "Herds").
                        Role::Leader => self.core.leads_with_own_term_committed(),
                    }
            }
        };
        if done {
            self.transport.release_campaign_slot();
            self.campaign = CampaignSlot::None;
        }
    }

    /// Why the node stopped, if it failed.
    #[cfg(feature = "sim")]
    pub(crate) fn failure(&self) -> Option<&str> {
        self.fatal.as_deref()
    }

    /// Snapshot jobs waiting for [`Shard::run_snapshot_jobs`] (a simulated node's).
    #[cfg(feature = "sim")]
    pub(crate) fn queued_snapshot_jobs(&self) -> usize {
        self.snapshot_io.queued_jobs()
    }

    /// Stable-store saves go to a queue that [`Shard::run_stable_saves`] empties (a simulated
    /// node's, with a log store that keeps no hard state).
    #[cfg(feature = "sim")]
    pub(crate) fn queue_stable_saves(&mut self) {
        self.stable.queue_saves();
    }

    /// Stable-store saves waiting for [`Shard::run_stable_saves`].
    #[cfg(feature = "sim")]
    pub(crate) fn queued_stable_saves(&self) -> usize {
        self.stable.queued()
    }

    /// Does a simulated node's queued stable-store saves; their completions are handled in
    /// the next turn.
    #[cfg(feature = "sim")]
    pub(crate) fn run_stable_saves(&mut self) {
        self.stable.run_queued(&self.events_tx);
    }

    /// Does a simulated node's queued snapshot jobs (its "worker" ran); their completions are
    /// handled in the next turn.
    #[cfg(feature = "sim")]
    pub(crate) fn run_snapshot_jobs(&mut self) {
        self.snapshot_io.run_queued();
    }

    /// One turn of the loop at `now`; true if work was left over.
    pub(crate) fn turn(&mut self, now: Time, waker: &Waker) -> bool {
        let mut busy = false;
        if let Some(failure) = self.snapshot_io.take_failure() {
            self.fatal.get_or_insert(failure);
        }
        if let Some(Applier::Inline {
            adaptive: Some(slow),
            ..
        }) = &mut self.applier
        {
            slow.new_turn();
        }
        self.shared.queue.drain(&mut self.commands);
        while let Some(command) = self.commands.pop_front() {
            self.metrics.command(&command);
            self.handle_command(now, command);
        }
        while let Some(event) = self.events_rx.try_recv() {
            self.handle_event(now, event);
        }
        if !self.transport_closed {
            let mut cx = Context::from_waker(waker);
            let mut handled = 0;
            loop {
                if handled == MESSAGES_PER_TURN_MAX {
                    busy = true;
                    break;
                }
                match self.transport.poll_recv(&mut cx) {
                    Poll::Ready(Some(event)) => {
                        handled += 1;
                        match event {
                            TransportEvent::Message { message, .. } => self.receive(now, message),
                            event => {
                                super::metrics::transport_event(self.shared.id, &event);
                                if let TransportEvent::PeerDisconnected { peer, .. }
                                | TransportEvent::SendFailed { peer, .. } = event
                                {
                                    self.core.step(now, Input::PeerUnreachable { peer });
                                }
                            }
                        }
                    }
                    Poll::Ready(None) => {
                        self.transport_closed = true;
                        break;
                    }
                    Poll::Pending => break,
                }
            }
            self.inline_writes.polled(handled > 0);
        }
        self.check_durable(now);
        if now >= self.core.next_timer() && self.may_campaign(now, waker) {
            self.core.step(now, Input::Tick);
        }
        if now >= self.next_snapshot_check {
            self.schedule_snapshot_check(now);
            self.maybe_automatic_snapshot();
        } else if self.log_memory_full() {
            self.memory_snapshot_at = self.core.log().last_index();
            self.start_snapshot(None);
        }
        self.perform_effects(now);
        self.settle_campaign_slot(now);
        // A membership request may have arrived, become possible, or timed out this turn.
        self.pump_membership(now);
        self.check_heartbeats(now);
        self.metrics.end_turn(now, &self.core);
        self.publish();
        busy
    }

    fn handle_event(&mut self, now: Time, event: ShardEvent) {
        match event {
            ShardEvent::Applied(index) => self.core.step(now, Input::Applied { index }),
            ShardEvent::SnapshotCaptured(Ok((snapshot, last))) => {
                self.metrics.snapshot_captured(now);
                self.persist_snapshot(snapshot, last)
            }
            ShardEvent::SnapshotCaptured(Err(e)) => {
                tracing::warn!(node = self.shared.id.0, error = %e, "state machine snapshot failed");
                self.finish_snapshot(Err(TakeSnapshotError::Fsm(e)))
            }
            ShardEvent::SnapshotPersisted(result) => {
                let result = *result;
                self.metrics.snapshot_persisted(now, result.as_ref());
                if let Ok(meta) = &result {
                    self.core
                        .step(now, Input::SnapshotTaken { meta: meta.clone() });
                }
                self.finish_snapshot(result);
            }
            ShardEvent::Fatal(e) => self.fatal = Some(e),
            ShardEvent::RestoreStaged { token, result } => {
                self.restore_stage_done(now, token, *result)
            }
            ShardEvent::Core(input) => self.core.step(now, *input),
            ShardEvent::StableSaved { key, result } => self.stable_saved(now, key, result),
            ShardEvent::RestoreOpened(opened) => self.restore_opened(opened),
        }
    }

    // ---- effects ----------------------------------------------------------------------------

    fn perform_effects(&mut self, now: Time) {
        loop {
            self.step_inline_applied(now);
            let effects = self.core.take_effects();
            self.maybe_sync_transport_peers(&effects);
            if effects.is_empty() {
                if self.check_durable(now) {
                    continue;
                }
                break;
            }
            for effect in effects {
                self.perform(now, effect);
                if self.fatal.is_some() {
                    return;
                }
            }
            self.check_durable(now);
        }
    }

    fn perform(&mut self, now: Time, effect: Effect) {
        match effect {
            Effect::Persist(batch) => {
                let entries = batch.entries.len();
                if let Err(e) = self.persist(batch) {
                    // A failed write or fsync cannot be retried safely: stop (docs/ARCHITECTURE.md §5).
                    self.fatal = Some(format!("log or stable store failed: {e}"));
                } else {
                    let ticket = self.pending_persist.back().map(|p| p.ticket);
                    self.metrics.persisting(now, entries, ticket);
                }
            }
            Effect::Send(message) => {
                // Best effort, as Raft expects of a network; the core retries.
                self.metrics.sending(now, &message);
                let to = message.to;
                if let Err(ringraft_net::transport::SendError::NotConnected { .. }) =
                    self.transport.send(GroupId(0), message)
                {
                    // A transfer to it fails fast instead of waiting out its timeout.
                    self.core.step(now, Input::PeerUnreachable { peer: to });
                }
            }
            Effect::Apply { entries } => self.apply_entries(entries),
            Effect::ReadSnapshotChunk {
                peer,
                meta,
                stage,
                offset,
                max_bytes,
            } => self.read_chunk(peer, meta, stage, offset, max_bytes),
            Effect::WriteSnapshotChunk {
                meta,
                offset,
                data,
                done,
                stage,
            } => self.write_chunk(meta, offset, data, done, stage),
            Effect::StageRestore { token, meta } => self.stage_restore(now, token, meta),
            Effect::DropStagedRestores { through } => self.drop_staged_restores(through),
            Effect::RestoreSnapshot { meta } => self.restore(meta),
            Effect::Reply { token, result } => self.reply(token, result),
            Effect::Event(event) => self.core_event(now, event),
        }
    }

    /// Whether a state machine is there to take tasks (false once shut down).
    pub(super) fn can_apply(&self) -> bool {
        self.applier.is_some()
    }

    fn send_to_apply(&mut self, task: ApplyTask) {
        if self.apply_held.is_empty() {
            self.deliver_to_apply(task);
        } else {
            self.apply_held.push_back(Held::Task(task));
        }
    }

    /// A restore for the state machine: the worker opens it (`restore_opened` delivers it);
    /// apply tasks after it wait until then.
    fn restore_in_order(&mut self, meta: SnapshotMeta, stage: bool) {
        self.apply_held.push_back(Held::Open {
            meta: meta.clone(),
            stage,
        });
        if !self
            .snapshot_io
            .submit(SnapshotJob::OpenForRestore { meta, stage })
        {
            self.fatal = Some("the snapshot worker stopped".into());
        }
    }

    /// The worker opened the oldest pending restore: deliver it and what waited behind it.
    fn restore_opened(&mut self, opened: Result<Box<dyn Read + Send>, String>) {
        let Some(Held::Open { meta, stage }) = self.apply_held.pop_front() else {
            self.fatal = Some("a restore was opened that nothing waits for".into());
            return;
        };
        let reader = match opened {
            Ok(reader) => reader,
            Err(e) => {
                // The core installs a snapshot or applies a restore entry only once it is
                // stored: lost or damaged storage. Stop rather than diverge.
                self.fatal = Some(format!("cannot restore {}: {e}", meta.last));
                return;
            }
        };
        let task = if stage {
            ApplyTask::RestoreEntry {
                entry: meta.last,
                reader,
            }
        } else {
            ApplyTask::Restore { meta, reader }
        };
        self.deliver_to_apply(task);
        while let Some(Held::Task(_)) = self.apply_held.front() {
            if let Some(Held::Task(task)) = self.apply_held.pop_front() {
                self.deliver_to_apply(task);
            }
        }
    }

    /// A state machine on this thread applied entries: the core learns it in this turn, not
    /// from an event that would take a turn of its own (ARCHITECTURE §10, step 6).
    fn step_inline_applied(&mut self, now: Time) {
        if let Some(Applier::Inline { apply, .. }) = &mut self.applier {
            if let Some(index) = apply.take_applied() {
                self.core.step(now, Input::Applied { index });
            }
        }
    }

    fn deliver_to_apply(&mut self, task: ApplyTask) {
        let Some(applier) = self.applier.as_mut() else {
            return;
        };
        if matches!(task, ApplyTask::Entries(_)) {
            // The apply loop counts it down once applied.
            self.shared.stats.fsm_pending.fetch_add(1, Ordering::AcqRel);
        }
        let restore = matches!(
            task,
            ApplyTask::Restore { .. } | ApplyTask::RestoreEntry { .. }
        );
        if let Applier::Inline {
            adaptive: Some(_), ..
        } = applier
        {
            if restore {
                // A restore reads a whole snapshot: never on the shard thread when adaptive.
                self.move_apply_to_own_thread("a restore");
            }
        }
        let Some(applier) = self.applier.as_mut() else {
            return;
        };
        match applier {
            Applier::Inline { apply, adaptive } => {
                // Only tasks that call the state machine are timed; replies waiting for an
                // index are bookkeeping (and one per client request).
                let calls_fsm = matches!(task, ApplyTask::Entries(_) | ApplyTask::Snapshot);
                let started = adaptive
                    .as_mut()
                    .filter(|_| calls_fsm)
                    .map(|slow| slow.call_starting());
                if !apply.handle(task) {
                    self.applier = None;
                    return;
                }
                if let (Some(slow), Some(started)) = (adaptive.as_mut(), started) {
                    if slow.call_ended(started, super::clock::monotonic_now()) {
                        self.move_apply_to_own_thread("slow calls");
                    }
                }
            }
            // If the apply thread is gone the task's waiters are dropped: they see Shutdown.
            Applier::Thread { tx, .. } => {
                let _ = tx.send(task);
            }
        }
    }

    /// `ApplyPlacement::Adaptive`: the state machine leaves the shard thread for a thread of
    /// its own, for good. It is between calls (everything sent to it so far is done), so the
    /// order of what it sees is kept; the waiters it holds go with it.
    fn move_apply_to_own_thread(&mut self, why: &str) {
        let Some(Applier::Inline { mut apply, .. }) = self.applier.take() else {
            return;
        };
        apply.report_by_event();
        match Applier::own_thread(*apply, self.shared.id) {
            Ok(applier) => {
                tracing::info!(
                    node = self.shared.id.0,
                    why,
                    "state machine moved off the shard thread to a thread of its own"
                );
                self.applier = Some(applier);
            }
            Err(e) => self.fatal = Some(format!("starting the apply thread: {e}")),
        }
    }

    fn stop(mut self) {
        if let Some(e) = self.fatal.take() {
            tracing::error!(node = self.shared.id.0, error = %e, "node stopped by a failure");
            self.shared.set_fatal(e);
        }
        self.shared
            .shutdown_requested
            .store(true, Ordering::Release);
        drop(self.shared.queue.close());
        self.commands.clear();
        // Dropping a waiter's sender answers it with `Shutdown`.
        self.waiters.clear();
        self.snapshot_waiters.clear();
        self.snapshot_io.stop();
        if let Some(Applier::Thread { tx, thread }) = self.applier.take() {
            drop(tx);
            let _ = thread.join();
        }
        tracing::info!(node = self.shared.id.0, "shut down");
    }
}

#[cfg(test)]
mod slow_call_tests {
    use super::*;
    use crate::node::clock::{monotonic_now, thread_cpu_now};

    /// Computes until the thread has used `cpu` of CPU time.
    fn compute(cpu: Duration) {
        let Some(start) = thread_cpu_now() else {
            return;
        };
        while thread_cpu_now().is_some_and(|now| now.saturating_sub(start) < cpu) {
            std::hint::black_box(0u64);
        }
    }

    #[test]
    fn calls_that_wait_are_not_slow_and_calls_that_compute_are() {
        if thread_cpu_now().is_none() {
            return; // wall time stands in for CPU time: nothing to tell apart
        }
        let mut slow = SlowCalls::default();
        for _ in 0..4 {
            slow.new_turn();
            let started = slow.call_starting();
            std::thread::sleep(Duration::from_millis(3));
            assert!(
                !slow.call_ended(started, monotonic_now()),
                "waiting is not computing"
            );
        }
        let mut moved = Vec::new();
        for _ in 0..6 {
            slow.new_turn();
            let started = slow.call_starting();
            compute(Duration::from_millis(9));
            moved.push(slow.call_ended(started, monotonic_now()));
        }
        assert_eq!(
            moved,
            [false, false, false, false, false, true],
            "the computing call that brings the second's slow calls to 50 ms"
        );
        // Slow calls further apart than the window do not add up.
        let mut spread = SlowCalls::default();
        let start = monotonic_now();
        for i in 0..10u32 {
            let at = start + (SLOW_CALLS_WINDOW + Duration::from_millis(1)) * i;
            let cpu = Duration::from_millis(10);
            assert!(!spread.too_slow(cpu, cpu, at), "call {i}");
        }
    }
}
