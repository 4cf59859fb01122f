//! [`LogCache`]: a ring buffer of recent entries in front of any [`LogStore`].
//!
//! Entries enter the cache only once the wrapped store reports them durable (as hashicorp's
//! `LogCache` caches only after `StoreLogs` succeeds): until then reads go to the store, which
//! serves its own unsynced entries. Any truncation clears the cache, which is simpler than
//! reasoning about partial invalidation and costs little because truncations are rare.

use crate::error::LogError;
use crate::store::{DurableNotifier, HardState, LogStore, Ticket};
use crate::types::{Entry, Index, Term};
use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

struct Ring {
    slots: Vec<Option<Entry>>,
    /// Appended entries waiting for their ticket to become durable.
    pending: VecDeque<(Ticket, Vec<Entry>)>,
}

impl Ring {
    fn get(&self, index: Index) -> Option<&Entry> {
        let len = self.slots.len() as u64;
        let slot = self.slots.get((index.0 % len) as usize)?.as_ref()?;
        (slot.id.index == index).then_some(slot)
    }

    fn promote(&mut self, durable: Ticket) {
        while self
            .pending
            .front()
            .is_some_and(|(ticket, _)| *ticket <= durable)
        {
            let Some((_, entries)) = self.pending.pop_front() else {
                break;
            };
            let len = self.slots.len() as u64;
            for entry in entries {
                let slot = (entry.id.index.0 % len) as usize;
                self.slots[slot] = Some(entry);
            }
        }
    }

    fn clear(&mut self) {
        self.slots.iter_mut().for_each(|slot| *slot = None);
        self.pending.clear();
    }
}

/// Caches the last `capacity` durable entries of the wrapped store.
pub struct LogCache<S> {
    store: S,
    ring: Mutex<Ring>,
}

impl<S: LogStore> LogCache<S> {
    /// Wraps `store` with a cache of `capacity` entries (at least 1).
    pub fn new(capacity: usize, store: S) -> LogCache<S> {
        LogCache {
            store,
            ring: Mutex::new(Ring {
                slots: vec![None; capacity.max(1)],
                pending: VecDeque::new(),
            }),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.store
    }

    /// Unwraps the store.
    pub fn into_inner(self) -> S {
        self.store
    }

    fn ring(&self) -> MutexGuard<'_, Ring> {
        self.ring
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<S: LogStore> LogStore for LogCache<S> {
    fn first_index(&self) -> Index {
        self.store.first_index()
    }

    fn last_index(&self) -> Index {
        self.store.last_index()
    }

    fn term(&self, index: Index) -> Result<Option<Term>, LogError> {
        if let Some(entry) = self.ring().get(index) {
            return Ok(Some(entry.id.term));
        }
        self.store.term(index)
    }

    fn entry(&self, index: Index) -> Result<Option<Entry>, LogError> {
        if let Some(entry) = self.ring().get(index) {
            return Ok(Some(entry.clone()));
        }
        self.store.entry(index)
    }

    fn entries(&self, start: Index, end: Index, max_bytes: usize) -> Result<Vec<Entry>, LogError> {
        // Serve from the cache while it has every entry; fall back to the store for the rest.
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut index = start;
        {
            let ring = self.ring();
            while index < end {
                let Some(entry) = ring.get(index) else { break };
                if !out.is_empty() && bytes + entry.payload_len() > max_bytes {
                    return Ok(out);
                }
                bytes += entry.payload_len();
                out.push(entry.clone());
                index = index.next();
            }
        }
        if index < end && (out.is_empty() || bytes < max_bytes) {
            let rest = self
                .store
                .entries(index, end, max_bytes.saturating_sub(bytes).max(1))?;
            for entry in rest {
                if !out.is_empty() && bytes + entry.payload_len() > max_bytes {
                    break;
                }
                bytes += entry.payload_len();
                out.push(entry);
            }
        }
        Ok(out)
    }

    fn append(&mut self, entries: &[Entry]) -> Result<Ticket, LogError> {
        self.append_owned(entries.to_vec())
    }

    fn append_owned(&mut self, entries: Vec<Entry>) -> Result<Ticket, LogError> {
        let ticket = self.store.append(&entries)?;
        if !entries.is_empty() {
            self.ring().pending.push_back((ticket, entries));
        }
        Ok(ticket)
    }

    fn truncate_suffix(&mut self, last: Index) -> Result<Ticket, LogError> {
        let ticket = self.store.truncate_suffix(last)?;
        self.ring().clear();
        Ok(ticket)
    }

    fn truncate_prefix(&mut self, first: Index) -> Result<Ticket, LogError> {
        let ticket = self.store.truncate_prefix(first)?;
        self.ring().clear();
        Ok(ticket)
    }

    fn durable(&self) -> Result<Ticket, LogError> {
        let ticket = self.store.durable()?;
        self.ring().promote(ticket);
        Ok(ticket)
    }

    fn wait_durable(&self, ticket: Ticket) -> Result<(), LogError> {
        self.store.wait_durable(ticket)?;
        self.ring().promote(ticket);
        Ok(())
    }

    fn set_durable_notifier(&mut self, notifier: DurableNotifier) {
        self.store.set_durable_notifier(notifier);
    }

    fn save_hard_state(&mut self, state: &HardState) -> Result<Option<Ticket>, LogError> {
        self.store.save_hard_state(state)
    }

    fn saved_hard_state(&self) -> Option<HardState> {
        self.store.saved_hard_state()
    }

    fn hold_writes(&mut self) {
        self.store.hold_writes();
    }

    fn write_completions(&mut self) -> Option<std::sync::Arc<dyn crate::store::WriteCompletions>> {
        self.store.write_completions()
    }

    fn release_writes(&mut self, here: bool) -> Result<bool, LogError> {
        let wrote = self.store.release_writes(here)?;
        if wrote {
            // Durable now: the cache may serve these entries.
            self.durable()?;
        }
        Ok(wrote)
    }
}
