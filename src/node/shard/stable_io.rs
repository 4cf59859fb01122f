//! The stable-store worker, for a log store that keeps no hard state (a user's own
//! `LogStore`): term and vote must be durable before a vote or an answer in a new term
//! leaves, and a `StableStore::save` fsyncs. Here it runs on a thread of its own (started
//! the first time it is needed), and the shard reports a persist batch durable to the core
//! only once both its log writes and its hard state are; so the shard thread never waits on
//! the stable store either. Saves are done in submission order.

use super::super::apply::ShardEvent;
use super::super::Shared;
use ringraft_storage::{HardState, StableStore};
use std::sync::{mpsc, Arc};

/// Which write a save belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StableKey {
    /// The persist batch with this sequence number.
    Batch(u64),
    /// A live bootstrap's initial state.
    Bootstrap,
}

/// The shard's handle on the worker.
pub(crate) enum StableIo {
    /// Not started: the store is still here.
    Idle(Option<Box<dyn StableStore>>),
    /// Started: saves go to the worker.
    Running(mpsc::Sender<(StableKey, HardState)>),
    /// Saves wait until [`StableIo::run_queued`] does them on the caller's thread (the
    /// simulator decides when the worker runs).
    #[cfg(feature = "sim")]
    Queued {
        store: Box<dyn StableStore>,
        saves: std::collections::VecDeque<(StableKey, HardState)>,
    },
}

impl StableIo {
    pub(crate) fn new(store: Box<dyn StableStore>) -> StableIo {
        StableIo::Idle(Some(store))
    }

    /// Queues a save of `state`; the worker answers with `ShardEvent::StableSaved`. False if
    /// the worker cannot be started or is gone.
    pub(crate) fn save(
        &mut self,
        key: StableKey,
        state: HardState,
        events: &crate::node::events::EventSender,
        shared: &Arc<Shared>,
    ) -> bool {
        if let StableIo::Idle(store) = self {
            let Some(mut store) = store.take() else {
                return false;
            };
            let (tx, rx) = mpsc::channel::<(StableKey, HardState)>();
            let events = events.clone();
            let shared = shared.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("ringraft-stable-{}", shared.id.0))
                .spawn(move || {
                    while let Ok((key, state)) = rx.recv() {
                        if !save_one(&mut *store, key, state, &events) {
                            return;
                        }
                        shared.signal.notify();
                    }
                });
            if spawned.is_err() {
                return false;
            }
            *self = StableIo::Running(tx);
        }
        match self {
            StableIo::Running(tx) => tx.send((key, state)).is_ok(),
            StableIo::Idle(_) => false,
            #[cfg(feature = "sim")]
            StableIo::Queued { saves, .. } => {
                saves.push_back((key, state));
                true
            }
        }
    }

    /// Switches a worker that has not started to queued saves (a simulated node's).
    #[cfg(feature = "sim")]
    pub(crate) fn queue_saves(&mut self) {
        if let StableIo::Idle(store) = self {
            if let Some(store) = store.take() {
                *self = StableIo::Queued {
                    store,
                    saves: std::collections::VecDeque::new(),
                };
            }
        }
    }

    /// Saves waiting for [`StableIo::run_queued`].
    #[cfg(feature = "sim")]
    pub(crate) fn queued(&self) -> usize {
        match self {
            StableIo::Queued { saves, .. } => saves.len(),
            _ => 0,
        }
    }

    /// Does the queued saves in order, as the worker thread would.
    #[cfg(feature = "sim")]
    pub(crate) fn run_queued(&mut self, events: &crate::node::events::EventSender) {
        if let StableIo::Queued { store, saves } = self {
            while let Some((key, state)) = saves.pop_front() {
                if !save_one(&mut **store, key, state, events) {
                    return;
                }
            }
        }
    }
}

/// Saves `state` and tells the shard; false once the shard is gone.
fn save_one(
    store: &mut dyn StableStore,
    key: StableKey,
    state: HardState,
    events: &crate::node::events::EventSender,
) -> bool {
    let result = store.save(&state).map_err(|e| e.to_string());
    events.send(ShardEvent::StableSaved { key, result }).is_ok()
}
