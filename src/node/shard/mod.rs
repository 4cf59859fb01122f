//! The shard thread: owns the [`Core`] and performs its effects in order (see the module docs
//! of [`crate::node`] and [`crate::core`]).

mod membership;
mod snapshot_io;
mod snapshots;

pub(crate) use snapshot_io::{local_in as local_snapshot_in, SnapshotIo};

use super::apply::{ApplyLoop, ApplyTask, AwaitWaiter, ShardEvent};
use super::clock::Clock;
use super::metrics::ShardMetrics;
use super::{ApplyReply, Command, Shared};
use crate::api::future::Sender;
use crate::api::{
    ApplyError, BootstrapClusterError, Config, FsmSnapshot, LeaderObservation, Observation,
    RaftState, ReadError, RestoreError, TakeSnapshotError, TransferError,
};
use crate::core::{
    BootstrapError, Core, CoreConfig, Effect, Event, Input, Outcome, PersistBatch, RecoveredState,
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

/// Without transport tasks, a busy shard still yields to its runtime this often (timers).
const YIELD_EVERY_BUSY_TURNS: u32 = 64;

/// A request waiting for the core's reply.
enum Waiter {
    Apply(ApplyReply),
    Barrier(Sender<Result<Index, ApplyError>>),
    Verify(Sender<Result<(), ReadError>>),
    Read(Sender<Result<Index, ReadError>>),
    Membership(membership::QueuedChange),
    Transfer(Sender<Result<(), TransferError>>),
    /// A user restore, with the snapshot to stage until the core asks for it.
    Restore {
        reply: Sender<Result<Index, RestoreError>>,
        data: Option<Box<dyn Read + Send>>,
    },
}

impl Waiter {
    fn fail(self, e: RequestError) {
        match self {
            Waiter::Apply(ApplyReply::One(tx)) => tx.send(Err(e.into())),
            Waiter::Apply(ApplyReply::Batch(tx)) => tx.send(Err(e.into())),
            Waiter::Barrier(tx) => tx.send(Err(e.into())),
            Waiter::Verify(tx) => tx.send(Err(e.into())),
            Waiter::Read(tx) => tx.send(Err(e.into())),
            Waiter::Membership(request) => request.reply.send(Err(e.into())),
            Waiter::Transfer(tx) => tx.send(Err(e.into())),
            Waiter::Restore { reply, .. } => reply.send(Err(e.into())),
        }
    }
}

/// Everything the shard thread owns.
pub(crate) struct Shard {
    pub(crate) core: Core,
    pub(crate) core_config: CoreConfig,
    pub(crate) config: Config,
    pub(crate) log: Box<dyn LogStore>,
    pub(crate) stable: Box<dyn StableStore>,
    pub(crate) snapshots: Arc<dyn SnapshotStore>,
    pub(crate) transport: Box<dyn Transport>,
    /// Whether the transport works in tasks on this thread's runtime (yield every turn).
    yield_every_turn: bool,
    pub(crate) shared: Arc<Shared>,
    pub(crate) clock: Clock,
    /// Where the state machine runs; `None` once it stopped (shutdown, or it failed).
    applier: Option<Applier>,
    pub(crate) events_rx: mpsc::Receiver<ShardEvent>,
    next_token: u64,
    waiters: BTreeMap<Token, Waiter>,
    pending_persist: VecDeque<(u64, Ticket)>,
    commands: VecDeque<Command>,
    /// Where snapshot-store operations run (never on this thread).
    snapshot_io: SnapshotIo,
    snapshot_in_progress: bool,
    snapshot_waiters: Vec<Sender<Result<SnapshotMeta, TakeSnapshotError>>>,
    next_snapshot_check: Time,
    configuration_dirty: bool,
    /// While leading (and observed): when each peer was last heard from, and whether a
    /// heartbeat failure was reported for it; `leading_since` (the election, or when observing
    /// began) stands in for peers not yet heard from.
    peer_contact: BTreeMap<NodeId, (Time, bool)>,
    leading_since: Time,
    next_heartbeat_check: Time,
    transport_closed: bool,
    /// The peers (and addresses) this shard gave the transport from configurations.
    transport_peers: BTreeMap<NodeId, String>,
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
    bootstrapping: Option<(Ticket, Sender<Result<(), BootstrapClusterError>>)>,
    /// Metric tallies and timings, flushed once per turn.
    metrics: ShardMetrics,
}

/// What the shard needs to start.
pub(crate) struct ShardParts {
    pub(crate) core: Core,
    pub(crate) core_config: CoreConfig,
    pub(crate) config: Config,
    pub(crate) log: Box<dyn LogStore>,
    pub(crate) stable: Box<dyn StableStore>,
    pub(crate) snapshots: Arc<dyn SnapshotStore>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) clock: Clock,
    pub(crate) applier: Applier,
    pub(crate) events_rx: mpsc::Receiver<ShardEvent>,
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
    /// On the shard thread itself (`Config::apply_on_shard_thread`).
    Inline(Box<ApplyLoop>),
}

impl Shard {
    pub(crate) fn new(
        p: ShardParts,
        transport: Box<dyn Transport>,
        yield_every_turn: bool,
    ) -> Shard {
        let mut applier = p.applier;
        if let Applier::Inline(apply) = &mut applier {
            apply.start();
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
            core_config: p.core_config,
            config: p.config,
            log: p.log,
            stable: p.stable,
            snapshots: p.snapshots,
            transport,
            yield_every_turn,
            shared: p.shared,
            clock: p.clock,
            applier: Some(applier),
            events_rx: p.events_rx,
            next_token: 0,
            waiters: BTreeMap::new(),
            pending_persist: VecDeque::new(),
            commands: VecDeque::new(),
            snapshot_io,
            snapshot_in_progress: false,
            snapshot_waiters: Vec::new(),
            next_snapshot_check: Time(0),
            configuration_dirty: true,
            peer_contact: BTreeMap::new(),
            leading_since: Time(0),
            next_heartbeat_check: Time(0),
            transport_closed: false,
            transport_peers: BTreeMap::new(),
            transport_peers_dirty: true,
            transport_peers_recheck_at: None,
            fatal: None,
            hard_state,
            membership: membership::MembershipQueue::default(),
            bootstrapping: None,
            metrics,
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
    pub(crate) async fn run(mut self) {
        let signal = self.shared.signal.clone();
        signal.bind().await;
        let waker = Waker::from(signal.clone());
        let notifier = signal.clone();
        self.log
            .set_durable_notifier(Arc::new(move || notifier.notify()));
        let now = self.clock.now();
        self.schedule_snapshot_check(now);
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut busy_turns: u32 = 0;
        while !self.shared.shutdown_requested() && self.fatal.is_none() {
            signal.take();
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
            let next = self.core.next_timer().min(self.next_snapshot_check);
            let now = self.clock.now();
            if next > now {
                let sleep_for = Clock::until(now, next).min(PARK_MAX);
                timer
                    .as_mut()
                    .reset(tokio::time::Instant::now() + sleep_for);
                signal.wait(timer.as_mut()).await;
            }
        }
        self.stop();
    }

    /// One turn of the loop; true if work was left over.
    fn turn(&mut self, now: Time, waker: &Waker) -> bool {
        let mut busy = false;
        self.shared.queue.drain(&mut self.commands);
        while let Some(command) = self.commands.pop_front() {
            self.metrics.command(&command);
            self.handle_command(now, command);
        }
        while let Ok(event) = self.events_rx.try_recv() {
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
        }
        self.check_durable(now);
        if now >= self.core.next_timer() {
            self.core.step(now, Input::Tick);
        }
        if now >= self.next_snapshot_check {
            self.schedule_snapshot_check(now);
            self.maybe_automatic_snapshot();
        }
        self.perform_effects(now);
        // A membership request may have arrived, become possible, or timed out this turn.
        self.pump_membership(now);
        self.check_heartbeats(now);
        self.metrics.end_turn(now, &self.core);
        self.publish();
        busy
    }

    /// Steps the core with a peer's message, noting what observers and `stats()` want.
    fn receive(&mut self, now: Time, message: Message) {
        let from = message.from;
        if self.shared.has_observers() {
            let observation = match &message.body {
                Body::RequestVote { last_log_id, .. } => Some(Observation::RequestVote {
                    candidate: from,
                    term: message.term,
                    last_log_id: *last_log_id,
                }),
                Body::PreVote { last_log_id } => Some(Observation::RequestPreVote {
                    candidate: from,
                    term: message.term,
                    last_log_id: *last_log_id,
                }),
                _ => None,
            };
            if let Some(o) = observation {
                self.shared.observe(o);
            }
        }
        let timing = self.metrics.receiving(now, &message);
        self.core.step(now, Input::Message(message));
        self.metrics.received(timing);
        if self.core.role() == Role::Leader && self.shared.has_observers() {
            let (heard, failed) = self.peer_contact.entry(from).or_insert((now, false));
            *heard = now;
            if std::mem::take(failed) {
                self.shared
                    .observe(Observation::HeartbeatResumed { peer: from });
            }
        }
        // hashicorp's last contact: the last time the current leader was heard from.
        if self.core.leader() == Some(from) && from != self.core.id() {
            self.shared
                .stats
                .last_contact
                .store(now.0.saturating_add(1), Ordering::Release);
        }
    }

    /// While leading, reports peers not heard from for `heartbeat_timeout` (hashicorp's
    /// `FailedHeartbeatObservation`, once per outage; [`Self::receive`] reports the
    /// resumption). Only done when someone observes, at most ten times per heartbeat timeout.
    fn check_heartbeats(&mut self, now: Time) {
        if self.core.role() != Role::Leader {
            return;
        }
        if !self.shared.has_observers() {
            // Nobody watches, so nothing is noted; whoever registers next starts from now
            // rather than seeing every peer as silent since the election.
            self.peer_contact.clear();
            self.leading_since = now;
            return;
        }
        if now < self.next_heartbeat_check {
            return;
        }
        let timeout = self.config.heartbeat_timeout.as_nanos() as u64;
        self.next_heartbeat_check = now.plus_nanos(timeout / 10);
        let (_, configuration) = self.core.latest_configuration();
        let me = self.core.id();
        for peer in configuration.members().filter(|id| *id != me) {
            let (heard, failed) = self
                .peer_contact
                .entry(peer)
                .or_insert((self.leading_since, false));
            let silent = now.nanos_since(*heard);
            if !*failed && silent >= timeout {
                *failed = true;
                self.shared.observe(Observation::HeartbeatFailed {
                    peer,
                    since_last_contact: Duration::from_nanos(silent),
                });
            }
        }
    }

    fn token(&mut self) -> Token {
        self.next_token += 1;
        Token(self.next_token)
    }

    fn submit(&mut self, now: Time, waiter: Waiter, input: impl FnOnce(Token) -> Input) {
        let token = self.token();
        self.waiters.insert(token, waiter);
        self.core.step(now, input(token));
    }

    fn handle_command(&mut self, now: Time, command: Command) {
        match command {
            Command::Apply {
                commands,
                extensions,
                reply,
            } => self.submit(now, Waiter::Apply(reply), |token| Input::Propose {
                token,
                commands,
                extensions,
            }),
            Command::Barrier { reply } => self.submit(now, Waiter::Barrier(reply), |token| {
                Input::Barrier { token }
            }),
            Command::VerifyLeader { reply } => self.submit(now, Waiter::Verify(reply), |token| {
                Input::VerifyLeader { token }
            }),
            Command::Read { lease, reply } => self.submit(now, Waiter::Read(reply), |token| {
                if lease {
                    Input::LeaseRead { token }
                } else {
                    Input::ReadIndex { token }
                }
            }),
            Command::Membership {
                change,
                prev_index,
                timeout,
                reply,
            } => {
                let deadline = (!timeout.is_zero())
                    .then(|| now.plus_nanos(u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX)));
                let request = membership::QueuedChange {
                    change,
                    prev_index,
                    reply,
                    deadline,
                };
                self.queue_membership(now, request);
            }
            Command::Restore { data, reply } => {
                let waiter = Waiter::Restore {
                    reply,
                    data: Some(data),
                };
                self.submit(now, waiter, |token| Input::UserRestore { token })
            }
            Command::Transfer { target, reply } => {
                self.submit(now, Waiter::Transfer(reply), |token| {
                    Input::TransferLeadership { token, target }
                })
            }
            Command::Snapshot { reply } => self.start_snapshot(Some(reply)),
            Command::Reload { reloadable, reply } => {
                let reloaded = self.config.reloaded(&reloadable).and_then(|merged| {
                    let core = merged
                        .core_config(self.core_config.seed)
                        .map_err(crate::api::ReloadConfigError::Invalid)?;
                    Ok((merged, core))
                });
                reply.send(reloaded.map(|(merged, core)| {
                    self.core.step(
                        now,
                        Input::Reconfigure(crate::core::Timing {
                            election_timeout: core.election_timeout,
                            heartbeat_interval: core.heartbeat_interval,
                            leader_lease_timeout: core.leader_lease_timeout,
                            trailing_logs: core.trailing_logs,
                        }),
                    );
                    self.core_config = core;
                    let interval_changed =
                        merged.snapshot_interval != self.config.snapshot_interval;
                    *self
                        .shared
                        .reloadable
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = reloadable;
                    self.config = merged;
                    if interval_changed {
                        self.schedule_snapshot_check(now);
                    }
                }))
            }
            Command::Bootstrap {
                configuration,
                reply,
            } => self.bootstrap(now, &configuration, reply),
        }
    }

    /// hashicorp's live `BootstrapCluster`: only on a node with no state. The initial state is
    /// submitted to the log store, the core restarts from it at once, and the caller hears
    /// when it is durable (the log store makes later writes durable only after it, so nothing
    /// the new core does can overtake it). A log store that keeps no hard state needs the
    /// stable store saved first: that one case waits here.
    fn bootstrap(
        &mut self,
        now: Time,
        configuration: &ringraft_storage::Configuration,
        reply: Sender<Result<(), BootstrapClusterError>>,
    ) {
        let core = &self.core;
        if core.term() > Term(0)
            || core.log().last_index() > Index(0)
            || core.snapshot().is_some()
            || !self.pending_persist.is_empty()
            || self.bootstrapping.is_some()
        {
            return reply.send(Err(BootstrapClusterError::CantBootstrap));
        }
        let state = match Core::bootstrap(&RecoveredState::default(), self.shared.id, configuration)
        {
            Ok(state) => state,
            Err(e) => {
                return reply.send(Err(match e {
                    BootstrapError::NotVoter { id } => BootstrapClusterError::NotVoter { id },
                    BootstrapError::InvalidConfiguration(c) => {
                        BootstrapClusterError::InvalidConfiguration(c)
                    }
                    _ => BootstrapClusterError::CantBootstrap,
                }))
            }
        };
        let written = self.log.append(&state.entries).and_then(|t| {
            Ok(self
                .log
                .save_hard_state(&state.hard_state)?
                .map(|h| h.max(t)))
        });
        let ticket = match written {
            Ok(Some(ticket)) => ticket,
            Ok(None) => {
                // No hard state in the log store: the stable store must have it before the
                // core can vote. The one blocking exception (see `ringraft_storage::blocking`).
                let _allow = ringraft_storage::blocking::Allow::new();
                let saved = self
                    .log
                    .append_and_wait(&[])
                    .map_err(|e| e.to_string())
                    .and_then(|()| {
                        self.stable
                            .save(&state.hard_state)
                            .map_err(|e| e.to_string())
                    });
                match saved {
                    Ok(()) => match self.log.durable() {
                        Ok(t) => t,
                        Err(e) => return self.bootstrap_failed(e.to_string(), reply),
                    },
                    Err(e) => return self.bootstrap_failed(e, reply),
                }
            }
            Err(e) => return self.bootstrap_failed(e.to_string(), reply),
        };
        self.hard_state = state.hard_state;
        match Core::new(self.core_config.clone(), state, now) {
            Ok(core) => {
                self.core = core;
                self.configuration_dirty = true;
                self.transport_peers_dirty = true;
                // Requests the empty core was holding cannot be answered by the new one.
                for (_, waiter) in std::mem::take(&mut self.waiters) {
                    waiter.fail(RequestError::NotLeader { leader: None });
                }
                self.bootstrapping = Some((ticket, reply));
                self.check_durable(now);
            }
            Err(e) => self.bootstrap_failed(e.to_string(), reply),
        }
    }

    fn bootstrap_failed(&mut self, e: String, reply: Sender<Result<(), BootstrapClusterError>>) {
        self.fatal = Some(format!("bootstrap: {e}"));
        reply.send(Err(BootstrapClusterError::Storage(e)));
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
                self.metrics.snapshot_persisted(now, result.as_ref());
                if let Ok(meta) = &result {
                    self.core
                        .step(now, Input::SnapshotTaken { meta: meta.clone() });
                }
                self.finish_snapshot(result);
            }
            ShardEvent::Fatal(e) => self.fatal = Some(e),
            ShardEvent::RestoreStaged { token, result } => self.restore_stage_done(token, result),
            ShardEvent::ChunkRead {
                peer,
                snapshot,
                offset,
                data,
                done,
            } => self.core.step(
                now,
                Input::SnapshotChunkRead {
                    peer,
                    snapshot,
                    offset,
                    data,
                    done,
                },
            ),
            ShardEvent::ChunkWritten {
                snapshot,
                next_offset,
                done,
            } => self.core.step(
                now,
                Input::SnapshotChunkWritten {
                    snapshot,
                    next_offset,
                    done,
                },
            ),
        }
    }

    // ---- snapshots taken by this node -------------------------------------------------------

    // ---- effects ----------------------------------------------------------------------------

    fn perform_effects(&mut self, now: Time) {
        loop {
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
                    // A failed write or fsync cannot be retried safely: stop (DESIGN, STYLE).
                    self.fatal = Some(format!("log or stable store failed: {e}"));
                } else {
                    let ticket = self.pending_persist.back().map(|(_, t)| *t);
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
            Effect::StageRestore { token, meta } => self.stage_restore(token, meta),
            Effect::DropStagedRestores { through } => self.drop_staged_restores(through),
            Effect::RestoreSnapshot { meta } => self.restore(meta),
            Effect::Reply { token, result } => self.reply(token, result),
            Effect::Event(event) => self.core_event(now, event),
        }
    }

    /// Tells the transport about the members of the configurations in force (the committed
    /// one and the latest) before `effects`, which may already send to a new member, are
    /// performed. The core changes its configurations only with a persist batch that appends
    /// a configuration entry or truncates the log, or with a snapshot install; and the
    /// committed one also when the commit index reaches the latest.
    fn maybe_sync_transport_peers(&mut self, effects: &[Effect]) {
        let changed = self.transport_peers_dirty
            || self
                .transport_peers_recheck_at
                .is_some_and(|index| self.core.commit_index() >= index)
            || effects.iter().any(|effect| match effect {
                Effect::Persist(batch) => {
                    batch.truncate_from.is_some()
                        || batch
                            .entries
                            .iter()
                            .any(|e| e.kind == EntryKind::Configuration)
                }
                Effect::RestoreSnapshot { .. } => true,
                _ => false,
            });
        if changed {
            self.sync_transport_peers();
        }
    }

    fn sync_transport_peers(&mut self) {
        self.transport_peers_dirty = false;
        let (latest_index, latest) = self.core.latest_configuration();
        let (committed_index, committed) = self.core.committed_configuration();
        self.transport_peers_recheck_at = (latest_index > committed_index).then_some(latest_index);
        let me = self.core.id();
        // The latest configuration's address wins where the two differ.
        let mut wanted: BTreeMap<NodeId, String> = BTreeMap::new();
        for server in committed.servers.into_iter().chain(latest.servers) {
            if server.id != me {
                wanted.insert(server.id, server.address);
            }
        }
        for (peer, address) in &wanted {
            if self.transport_peers.get(peer) == Some(address) {
                continue;
            }
            // An address the transport cannot dial (a host name for TCP, say) leaves the
            // transport as it was configured: it may still know the peer by other means.
            if self.transport.set_peer(*peer, address).is_ok() {
                self.transport_peers.insert(*peer, address.clone());
            }
        }
        let gone: Vec<NodeId> = self
            .transport_peers
            .keys()
            .filter(|peer| !wanted.contains_key(peer))
            .copied()
            .collect();
        for peer in gone {
            self.transport_peers.remove(&peer);
            self.transport.remove_peer(peer);
        }
    }

    /// Whether a state machine is there to take tasks (false once shut down).
    pub(super) fn can_apply(&self) -> bool {
        self.applier.is_some()
    }

    fn send_to_apply(&mut self, task: ApplyTask) {
        let Some(applier) = self.applier.as_mut() else {
            return;
        };
        if matches!(task, ApplyTask::Entries(_)) {
            // The apply loop counts it down once applied.
            self.shared.stats.fsm_pending.fetch_add(1, Ordering::AcqRel);
        }
        match applier {
            Applier::Inline(apply) => {
                if !apply.handle(task) {
                    self.applier = None;
                }
            }
            // If the apply thread is gone the task's waiters are dropped: they see Shutdown.
            Applier::Thread { tx, .. } => {
                let _ = tx.send(task);
            }
        }
    }

    /// Performs one persist batch in the order `PersistBatch` documents. The log operations
    /// are submitted and complete asynchronously; the hard state is saved once the batch's
    /// entries are durable.
    fn persist(&mut self, batch: PersistBatch) -> Result<(), String> {
        let mut ticket = None;
        if let Some(from) = batch.truncate_from {
            ticket = Some(self.log.truncate_suffix(from.prev()).map_err(log_error)?);
            self.configuration_dirty = true;
        }
        if !batch.entries.is_empty() {
            if batch
                .entries
                .iter()
                .any(|e| e.kind == EntryKind::Configuration)
            {
                self.configuration_dirty = true;
            }
            ticket = Some(self.log.append(&batch.entries).map_err(log_error)?);
        }
        // Term, vote and the commit index go into the log store when it keeps them (the WAL
        // and the in-memory store do): durable with this batch, no separate fsync, no wait on
        // this thread. The commit index only rides along with writes that happen anyway.
        if batch.hard_state.is_some() || batch.commit.is_some() {
            let mut next = batch.hard_state.unwrap_or(self.hard_state);
            next.commit = batch
                .commit
                .unwrap_or(self.hard_state.commit)
                .max(next.commit);
            match self.log.save_hard_state(&next).map_err(log_error)? {
                Some(t) => {
                    ticket = Some(t);
                    self.hard_state = next;
                }
                None => {
                    self.hard_state.commit = next.commit;
                    if let Some(hard_state) = batch.hard_state {
                        // A log store without hard state: the stable store saves term and vote
                        // once the batch's entries are durable (a blocking wait; see
                        // `LogStore::save_hard_state`), the one exception to "never block here".
                        let _allow = ringraft_storage::blocking::Allow::new();
                        let t = match ticket {
                            Some(t) => t,
                            None => self.log.append(&[]).map_err(log_error)?,
                        };
                        self.log.wait_durable(t).map_err(log_error)?;
                        self.stable.save(&hard_state).map_err(|e| e.to_string())?;
                        self.hard_state = hard_state;
                    }
                }
            }
        }
        if let Some(through) = batch.compact_through {
            ticket = Some(
                self.log
                    .truncate_prefix(through.index.next())
                    .map_err(log_error)?,
            );
            self.configuration_dirty = true;
        }
        let t = match ticket {
            Some(t) => t,
            None => self.log.append(&[]).map_err(log_error)?,
        };
        self.pending_persist.push_back((batch.seq, t));
        Ok(())
    }

    /// Reports the batches that became durable; true if it stepped the core.
    fn check_durable(&mut self, now: Time) -> bool {
        if self.pending_persist.is_empty() && self.bootstrapping.is_none() {
            return false;
        }
        let durable = match self.log.durable() {
            Ok(t) => t,
            Err(e) => {
                self.fatal = Some(format!("log store failed: {e}"));
                return false;
            }
        };
        if self
            .bootstrapping
            .as_ref()
            .is_some_and(|(t, _)| *t <= durable)
        {
            if let Some((_, reply)) = self.bootstrapping.take() {
                reply.send(Ok(()));
            }
        }
        self.metrics.durable(now, durable);
        let mut seq = None;
        while self
            .pending_persist
            .front()
            .is_some_and(|(_, t)| *t <= durable)
        {
            seq = self.pending_persist.pop_front().map(|(s, _)| s);
        }
        match seq {
            Some(seq) => {
                self.core.step(now, Input::Persisted { seq });
                true
            }
            None => false,
        }
    }

    fn reply(&mut self, token: Token, result: Result<Outcome, RequestError>) {
        let Some(waiter) = self.waiters.remove(&token) else {
            return;
        };
        if let Waiter::Membership(request) = waiter {
            debug_assert!(self.membership.is_in_flight(token));
            let result = match result {
                Ok(Outcome::Committed { last, .. }) => Ok(last),
                Ok(_) => Err(RequestError::LeadershipLost),
                Err(e) => Err(e),
            };
            return self.membership_answered(request, result);
        }
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(e) => return waiter.fail(e),
        };
        match (waiter, outcome) {
            (Waiter::Apply(reply), Outcome::Committed { first, last, .. }) => {
                self.send_to_apply(ApplyTask::Await {
                    first,
                    last,
                    waiter: AwaitWaiter::Apply(reply),
                })
            }
            (Waiter::Barrier(tx), Outcome::Committed { first, last, .. }) => {
                self.send_to_apply(ApplyTask::Await {
                    first,
                    last,
                    waiter: AwaitWaiter::Barrier(tx),
                })
            }
            (Waiter::Verify(tx), Outcome::LeaderVerified) => tx.send(Ok(())),
            (Waiter::Read(reply), Outcome::ReadReady { index }) => {
                self.send_to_apply(ApplyTask::WaitApplied { index, reply })
            }
            (Waiter::Transfer(tx), Outcome::LeadershipTransferred) => tx.send(Ok(())),
            (Waiter::Restore { reply, .. }, Outcome::Committed { first, last, .. }) => self
                .send_to_apply(ApplyTask::Await {
                    first,
                    last,
                    waiter: AwaitWaiter::Restore(reply),
                }),
            // An outcome that does not fit the request would be a core bug: the outcome is
            // unknown to the caller.
            (waiter, _) => waiter.fail(RequestError::LeadershipLost),
        }
    }

    fn core_event(&mut self, now: Time, event: Event) {
        match event {
            Event::RoleChanged { role, term } => {
                // The term first: whoever sees the new role also sees its term.
                self.shared.term.store(term.0, Ordering::Release);
                let state = match role {
                    Role::Follower => RaftState::Follower,
                    Role::PreCandidate => RaftState::PreCandidate,
                    Role::Candidate => RaftState::Candidate,
                    Role::Leader => RaftState::Leader,
                };
                self.shared.set_state(state);
                self.metrics.role_changed(role, term);
                if state == RaftState::Leader {
                    self.peer_contact.clear();
                    self.leading_since = now;
                }
                self.shared.observe(Observation::State(state));
            }
            Event::LeaderChanged { leader, term } => {
                self.shared.term.store(term.0, Ordering::Release);
                self.shared
                    .leader
                    .store(leader.map_or(0, |l| l.0), Ordering::Release);
                tracing::info!(
                    node = self.shared.id.0,
                    term = term.0,
                    leader = leader.map(|l| l.0),
                    "leader changed"
                );
                let observation = LeaderObservation { leader, term };
                self.shared.leader_watch.publish(observation);
                self.shared.observe(Observation::Leader(observation));
            }
            Event::RemovedFromConfiguration { shutdown: false } => self.metrics.removed(false),
            Event::RemovedFromConfiguration { shutdown: true } => {
                self.metrics.removed(true);
                self.shared
                    .shutdown_requested
                    .store(true, Ordering::Release);
            }
            _ => {}
        }
    }

    // ---- snapshots sent and received --------------------------------------------------------

    // ---- state for the handles, and stopping ------------------------------------------------

    fn publish(&mut self) {
        let s = &self.shared;
        s.term.store(self.core.term().0, Ordering::Release);
        s.commit_index
            .store(self.core.commit_index().0, Ordering::Release);
        let last = self.core.log().last_index().max(self.snapshot_index());
        s.last_index.store(last.0, Ordering::Release);
        let cells = &s.stats;
        let last_log = self.core.log().last_log_id();
        cells
            .last_log_index
            .store(last_log.index.0, Ordering::Release);
        cells
            .last_log_term
            .store(last_log.term.0, Ordering::Release);
        let snapshot = self
            .core
            .snapshot()
            .map_or(LogId::default(), |meta| meta.last);
        cells
            .last_snapshot_index
            .store(snapshot.index.0, Ordering::Release);
        cells
            .last_snapshot_term
            .store(snapshot.term.0, Ordering::Release);
        if self.configuration_dirty {
            self.configuration_dirty = false;
            let latest = self.core.latest_configuration();
            self.metrics.configuration(latest.0, &latest.1);
            let mut published = s.configuration.lock().unwrap_or_else(|p| p.into_inner());
            if !s.has_observers() {
                *published = latest;
                return;
            }
            let previous = std::mem::replace(&mut *published, latest.clone());
            drop(published);
            if previous.0 != latest.0 {
                let (old, new) = (&previous.1, &latest.1);
                // Peers only, as in hashicorp: this node is not its own peer.
                for server in new.servers.iter().filter(|x| x.id != s.id) {
                    if old.server(server.id).is_none() {
                        s.observe(Observation::PeerAdded {
                            id: server.id,
                            address: server.address.clone(),
                        });
                    }
                }
                for server in old.servers.iter().filter(|x| x.id != s.id) {
                    if new.server(server.id).is_none() {
                        s.observe(Observation::PeerRemoved { id: server.id });
                    }
                }
            }
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

fn log_error(e: LogError) -> String {
    e.to_string()
}
