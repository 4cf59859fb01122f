//! Starting a node: recover its state from the stores, restore the newest snapshot into the
//! state machine, build the core, the apply loop, the snapshot worker and the shard, and run
//! the shard on its own thread or on a `ShardHost`. The public [`Raft`](crate::Raft) handle
//! wraps what this returns; the offline tools share [`recover`].

use super::apply::ApplyLoop;
use super::clock::Clock;
use super::host::ShardHost;
use super::runtime::{spawn_on_host, spawn_shard};
use super::shard::{Applier, ShardParts, SnapshotIo};
use super::{Shared, StopGuard};
use crate::api::config::{Config, ReloadableConfig};
use crate::api::error::StartError;
use crate::api::fsm::Fsm;
use crate::api::transport::IntoTransport;
use crate::core::{Core, RecoveredState};
use ringraft_storage::{Index, LogId, LogStore, SnapshotStore, StableStore, Term};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};

/// Starts a node (see [`Raft::new`](crate::Raft::new)); returns its shared state and its
/// snapshot store.
pub(crate) fn start_node(
    host: Option<&ShardHost>,
    config: Config,
    mut fsm: impl Fsm,
    log_store: impl LogStore + 'static,
    stable_store: impl StableStore + 'static,
    snapshot_store: impl SnapshotStore + 'static,
    transport: impl IntoTransport,
) -> Result<(Arc<Shared>, Arc<dyn SnapshotStore>), StartError> {
    let seed = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
        ^ config.local_id.0;
    let core_config = config.core_config(seed).map_err(StartError::Config)?;
    let state = recover(&log_store, &stable_store, &snapshot_store)?;
    if let Some(meta) = &state.snapshot {
        if !config.no_snapshot_restore_on_start {
            let (_, mut reader) = snapshot_store
                .open(&meta.id)
                .map_err(StartError::Snapshot)?;
            fsm.restore(&mut reader)
                .map_err(|e| StartError::Restore(e.to_string()))?;
        }
    }
    let applied = state
        .snapshot
        .as_ref()
        .map_or(state.log_prev, |s| s.last.max(state.log_prev));
    let clock = Clock::start();
    let core = Core::new(core_config.clone(), state, clock.now()).map_err(StartError::Core)?;

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
    let snapshots: Arc<dyn SnapshotStore> = Arc::new(snapshot_store);
    let (events_tx, events_rx) = mpsc::channel();
    let apply = ApplyLoop::new(Box::new(fsm), applied, shared.clone(), events_tx.clone());
    let applier = if config.apply_on_shard_thread {
        Applier::Inline(Box::new(apply))
    } else {
        let (tx, apply_rx) = mpsc::channel();
        let id = config.local_id.0;
        let thread = std::thread::Builder::new()
            .name(format!("ringraft-apply-{id}"))
            .spawn(move || apply.run(apply_rx))
            .map_err(|e| StartError::Thread(e.to_string()))?;
        Applier::Thread { tx, thread }
    };
    let snapshot_io = SnapshotIo::start(
        config.local_id,
        snapshots.clone(),
        events_tx.clone(),
        shared.clone(),
    )
    .map_err(|e| StartError::Thread(e.to_string()))?;
    let cpu = config.shard_cpu;
    let parts = ShardParts {
        core,
        core_config,
        config,
        log: Box::new(log_store),
        stable: Box::new(stable_store),
        snapshots: snapshots.clone(),
        shared: shared.clone(),
        clock,
        applier,
        events_tx,
        events_rx,
        snapshot_io,
    };
    let guard = StopGuard(shared.clone());
    match host {
        Some(host) => spawn_on_host(host, parts, transport, guard)?,
        None => spawn_shard(parts, transport, guard, cpu)?,
    }
    Ok((shared, snapshots))
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
