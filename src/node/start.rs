//! Starting a node: recover its state from the stores, restore the newest snapshot into the
//! state machine, build the core, the apply loop, the snapshot worker and the shard, and run
//! the shard on its own thread or on a `ShardHost`. The public [`Raft`](crate::Raft) handle
//! wraps what this returns; the offline tools share [`recover`].

use super::apply::ApplyLoop;
use super::clock::Clock;
use super::host::{default_host, ShardHost};
use super::runtime::{spawn_on_host, spawn_shard};
#[cfg(feature = "sim")]
use super::shard::Shard;
use super::shard::{Applier, ShardParts, SlowCalls, SnapshotIo};
use super::{Shared, StopGuard};
use crate::api::config::{ApplyPlacement, Config, ReloadableConfig};
use crate::api::error::StartError;
use crate::api::fsm::Fsm;
use crate::api::transport::IntoTransport;
use crate::core::{Core, CoreConfig, RecoveredState, Time};
use ringraft_storage::{Index, LogId, LogStore, SnapshotStore, StableStore, Term};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Starts a node (see [`Raft::new`](crate::Raft::new)); returns its shared state and its
/// snapshot store. On a `host`, `wait_started` says whether to wait until its loop runs there
/// (see `spawn_on_host`); elsewhere it always waits.
#[allow(clippy::too_many_arguments)]
pub(crate) fn start_node(
    host: Option<&ShardHost>,
    config: Config,
    fsm: impl Fsm,
    log_store: impl LogStore + 'static,
    stable_store: impl StableStore + 'static,
    snapshot_store: impl SnapshotStore + 'static,
    transport: impl IntoTransport,
    wait_started: bool,
) -> Result<(Arc<Shared>, Arc<dyn SnapshotStore>), StartError> {
    let seed = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        ^ config.local_id.0;
    let mut core_config = config.core_config(seed).map_err(StartError::Config)?;
    core_config.quiesce = transport.reports_silent_peers();
    let clock = Clock::start();
    let p = prepare(
        config,
        core_config,
        Box::new(fsm),
        Box::new(log_store),
        Box::new(stable_store),
        Arc::new(snapshot_store),
        clock,
        clock.now(),
    )?;
    let shared = p.shared.clone();
    let snapshots = p.snapshots.clone();
    // On a host the application manages (a `MultiRaft`'s, say), the host's snapshot threads;
    // otherwise a thread of the node's own, started with its first job.
    let snapshot_io = match host {
        Some(host) => SnapshotIo::pooled(
            p.config.local_id,
            snapshots.clone(),
            p.events_tx.clone(),
            shared.clone(),
            host.snapshot_pool(),
        ),
        None => SnapshotIo::start(
            p.config.local_id,
            snapshots.clone(),
            p.events_tx.clone(),
            shared.clone(),
        )
        .map_err(|e| StartError::Thread(e.to_string()))?,
    };
    let cpu = p.config.shard_cpu;
    let (placement, id) = (p.config.apply_placement, p.config.local_id);
    let parts = p.into_parts(snapshot_io, |apply| match placement {
        ApplyPlacement::OwnThread => {
            Applier::own_thread(apply, id).map_err(|e| StartError::Thread(e.to_string()))
        }
        ApplyPlacement::ShardThread => Ok(Applier::Inline {
            apply: Box::new(apply),
            adaptive: None,
        }),
        // `ApplyPlacement` is non-exhaustive for users, not here.
        ApplyPlacement::Adaptive => Ok(Applier::Inline {
            apply: Box::new(apply),
            adaptive: Some(SlowCalls::default()),
        }),
    })?;
    let guard = StopGuard(shared.clone());
    match host {
        Some(host) => spawn_on_host(host, parts, transport, guard, None, wait_started)?,
        // In-process nodes share the default shard threads (see `default_host`); a node
        // pinned to a CPU, or with a transport that runs tasks (TCP), has a thread of its own.
        None if cpu.is_none() && !transport.runs_tasks() => default_host(|host, seat| {
            spawn_on_host(host, parts, transport, guard, Some(seat), true)
        })?,
        None => spawn_shard(parts, transport, guard, cpu)?,
    }
    Ok((shared, snapshots))
}

/// A node recovered from its stores, its state machine restored, before it has an apply loop
/// placement, a snapshot worker and a thread.
struct Prepared {
    core: Core,
    config: Config,
    log: Box<dyn LogStore>,
    stable: Box<dyn StableStore>,
    snapshots: Arc<dyn SnapshotStore>,
    shared: Arc<Shared>,
    clock: Clock,
    apply: ApplyLoop,
    events_tx: super::events::EventSender,
    events_rx: super::events::EventReceiver,
}

impl Prepared {
    /// The shard's parts, with the apply loop placed by `place`.
    fn into_parts(
        self,
        snapshot_io: SnapshotIo,
        place: impl FnOnce(ApplyLoop) -> Result<Applier, StartError>,
    ) -> Result<ShardParts, StartError> {
        Ok(ShardParts {
            applier: place(self.apply)?,
            core: self.core,
            config: self.config,
            log: self.log,
            stable: self.stable,
            snapshots: self.snapshots,
            shared: self.shared,
            clock: self.clock,
            events_tx: self.events_tx,
            events_rx: self.events_rx,
            snapshot_io,
        })
    }
}

/// Recovers the node's state, restores the newest snapshot into `fsm` and builds the core
/// (at time `now`) and the apply loop.
#[allow(clippy::too_many_arguments)]
fn prepare(
    config: Config,
    core_config: CoreConfig,
    mut fsm: Box<dyn Fsm>,
    log: Box<dyn LogStore>,
    stable: Box<dyn StableStore>,
    snapshots: Arc<dyn SnapshotStore>,
    clock: Clock,
    now: Time,
) -> Result<Prepared, StartError> {
    let state = recover(&*log, &*stable, &*snapshots)?;
    if let Some(meta) = &state.snapshot {
        if !config.no_snapshot_restore_on_start {
            let (_, mut reader) = snapshots.open(&meta.id).map_err(StartError::Snapshot)?;
            fsm.restore(&mut reader)
                .map_err(|e| StartError::Restore(e.to_string()))?;
        }
    }
    let applied = state
        .snapshot
        .as_ref()
        .map_or(state.log_prev, |s| s.last.max(state.log_prev));
    let core = Core::new(core_config, state, now).map_err(StartError::Core)?;
    let shared = Shared::new(
        config.local_id,
        config.submission_queue_capacity,
        clock,
        ReloadableConfig::from_config(&config),
    );
    shared.term.store(core.term().0, Ordering::Release);
    *shared
        .configuration
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = core.latest_configuration();
    let (events_tx, events_rx) = super::events::channel();
    let apply = ApplyLoop::new(fsm, applied, shared.clone(), events_tx.clone());
    Ok(Prepared {
        core,
        config,
        log,
        stable,
        snapshots,
        shared,
        clock,
        apply,
        events_tx,
        events_rx,
    })
}

/// A node for the simulator: the same recovery, core, shard glue and apply loop as
/// [`start_node`], but nothing runs on its own: the state machine is applied inline, snapshot
/// jobs wait until the simulator runs them, and the caller turns the shard with its own clock
/// (`core_config` is used as given, so the simulator can choose settings and mutations that
/// [`Config`] does not expose).
#[cfg(feature = "sim")]
#[allow(clippy::too_many_arguments)]
pub(crate) fn sim_shard(
    config: Config,
    core_config: CoreConfig,
    fsm: Box<dyn Fsm>,
    log: Box<dyn LogStore>,
    stable: Box<dyn StableStore>,
    snapshots: Arc<dyn SnapshotStore>,
    transport: Box<dyn ringraft_net::transport::Transport>,
    now: Time,
) -> Result<(Shard, Arc<Shared>), StartError> {
    let p = prepare(
        config,
        core_config,
        fsm,
        log,
        stable,
        snapshots,
        Clock::start(),
        now,
    )?;
    let shared = p.shared.clone();
    let snapshot_io = SnapshotIo::queued(
        p.config.local_id,
        p.snapshots.clone(),
        p.events_tx.clone(),
        shared.clone(),
    );
    // The state machine on the shard, always: no wall-clock timing in a simulation.
    let parts = p.into_parts(snapshot_io, |apply| {
        Ok(Applier::Inline {
            apply: Box::new(apply),
            adaptive: None,
        })
    })?;
    // Each simulated node is alone on its "thread"; its log store decides whether it writes
    // there (`SimLog`).
    let mut shard = Shard::new(parts, transport, false, true);
    shard.queue_stable_saves();
    shard.begin(now);
    Ok((shard, shared))
}

/// Reads a node's durable state from its stores.
pub(crate) fn recover(
    log: &dyn LogStore,
    stable: &dyn StableStore,
    snapshots: &dyn SnapshotStore,
) -> Result<RecoveredState, StartError> {
    // The log store's hard state (the WAL keeps term, vote and commit index with the log) and
    // the stable store's (older data, or a log store that keeps none): the newer wins.
    let hard_state = match log.saved_hard_state() {
        Some(in_log) => ringraft_storage::HardState::newest(stable.hard_state(), in_log),
        None => stable.hard_state(),
    };
    let snapshot = snapshots
        .list()
        .map_err(StartError::Snapshot)?
        .into_iter()
        .next();
    let first = log.first_index();
    let last = log.last_index();
    let entries = if last >= first {
        log.entries(first, last.next(), usize::MAX)
            .map_err(StartError::Log)?
    } else {
        Vec::new()
    };
    let prev_index = first.prev();
    let log_prev = if prev_index == Index(0) {
        LogId::default()
    } else {
        match &snapshot {
            Some(s) if s.last.index == prev_index => s.last,
            // The core compacts the log through the snapshot, which replaces this id; a
            // snapshot behind the log's start is reported by `Core::new`.
            Some(_) => LogId::new(Term(0), prev_index),
            None => return Err(StartError::LogCompactedWithoutSnapshot { first_index: first }),
        }
    };
    let staged_restores = match snapshots.staging() {
        Some(staging) => staging.list().map_err(StartError::Snapshot)?,
        None => Vec::new(),
    };
    Ok(RecoveredState {
        hard_state,
        snapshot,
        log_prev,
        entries,
        staged_restores,
    })
}
