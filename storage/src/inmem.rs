//! [`InmemStore`]: log and hard state in memory, for tests and the simulator.

use crate::error::{LogError, StableError};
use crate::store::{DurableNotifier, HardState, LogStore, StableStore, Ticket};
use crate::types::{Entry, Index, Term};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug)]
struct Inner {
    /// Entries `first..first + log.len()`.
    log: VecDeque<Entry>,
    first: Index,
    hard_state: HardState,
    ticket: Ticket,
}

/// A [`LogStore`] and [`StableStore`] in memory. Every operation is durable when it returns.
///
/// Clones share the same contents, so a test can keep a handle to inspect what a node stored
/// (hashicorp's `InmemStore` is shared the same way).
#[derive(Clone, Debug)]
pub struct InmemStore {
    inner: Arc<Mutex<Inner>>,
}

impl Default for InmemStore {
    fn default() -> Self {
        InmemStore::new()
    }
}

impl InmemStore {
    /// An empty store (first index 1).
    pub fn new() -> InmemStore {
        InmemStore {
            inner: Arc::new(Mutex::new(Inner {
                log: VecDeque::new(),
                first: Index(1),
                hard_state: HardState::default(),
                ticket: Ticket(0),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Inner {
    fn last(&self) -> Index {
        Index(self.first.0 + self.log.len() as u64 - 1)
    }

    fn get(&self, index: Index) -> Option<&Entry> {
        let offset = index.0.checked_sub(self.first.0)?;
        self.log.get(usize::try_from(offset).ok()?)
    }

    fn next_ticket(&mut self) -> Ticket {
        self.ticket = Ticket(self.ticket.0 + 1);
        self.ticket
    }
}

impl LogStore for InmemStore {
    fn first_index(&self) -> Index {
        self.lock().first
    }

    fn last_index(&self) -> Index {
        self.lock().last()
    }

    fn term(&self, index: Index) -> Result<Option<Term>, LogError> {
        Ok(self.lock().get(index).map(|e| e.id.term))
    }

    fn entry(&self, index: Index) -> Result<Option<Entry>, LogError> {
        Ok(self.lock().get(index).cloned())
    }

    fn entries(&self, start: Index, end: Index, max_bytes: usize) -> Result<Vec<Entry>, LogError> {
        let inner = self.lock();
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut index = start;
        while index < end {
            let Some(entry) = inner.get(index) else { break };
            if !out.is_empty() && bytes + entry.payload_len() > max_bytes {
                break;
            }
            bytes += entry.payload_len();
            out.push(entry.clone());
            index = index.next();
        }
        Ok(out)
    }

    fn append(&mut self, entries: &[Entry]) -> Result<Ticket, LogError> {
        self.append_owned(entries.to_vec())
    }

    /// Moves the entries in: no clone of each (with 256 clients in memory, the clones and
    /// the caller's drop of its copies were 4 % of the shard thread).
    fn append_owned(&mut self, entries: Vec<Entry>) -> Result<Ticket, LogError> {
        let mut inner = self.lock();
        if entries.is_empty() {
            return Ok(inner.ticket);
        }
        let mut expected = inner.last().next();
        for entry in &entries {
            if entry.id.index != expected {
                return Err(LogError::NotContiguous {
                    expected,
                    found: entry.id.index,
                });
            }
            expected = expected.next();
        }
        inner.log.extend(entries);
        Ok(inner.next_ticket())
    }

    fn truncate_suffix(&mut self, last: Index) -> Result<Ticket, LogError> {
        let mut inner = self.lock();
        if last < inner.first.prev() {
            return Err(LogError::TruncateOutOfRange {
                requested: last,
                first: inner.first,
                last: inner.last(),
            });
        }
        let keep = (last.0 + 1 - inner.first.0).min(inner.log.len() as u64) as usize;
        inner.log.truncate(keep);
        Ok(inner.next_ticket())
    }

    fn truncate_prefix(&mut self, first: Index) -> Result<Ticket, LogError> {
        let mut inner = self.lock();
        if first > inner.first {
            let drop = (first.0 - inner.first.0).min(inner.log.len() as u64) as usize;
            inner.log.drain(..drop);
            inner.first = first;
        }
        Ok(inner.next_ticket())
    }

    fn durable(&self) -> Result<Ticket, LogError> {
        Ok(self.lock().ticket)
    }

    fn wait_durable(&self, _ticket: Ticket) -> Result<(), LogError> {
        // Durable at once, but it stands in for stores that block: the same check.
        crate::blocking::check("InmemStore::wait_durable");
        Ok(())
    }

    fn set_durable_notifier(&mut self, _notifier: DurableNotifier) {
        // Every operation is durable on return; there is never anything to wake for.
    }

    /// The hard state is kept with the log (and is the same one [`StableStore`] serves).
    fn save_hard_state(&mut self, state: &HardState) -> Result<Option<Ticket>, LogError> {
        let mut inner = self.lock();
        inner.hard_state = *state;
        Ok(Some(inner.next_ticket()))
    }

    fn saved_hard_state(&self) -> Option<HardState> {
        Some(self.lock().hard_state)
    }
}

impl StableStore for InmemStore {
    fn hard_state(&self) -> HardState {
        self.lock().hard_state
    }

    fn save(&mut self, state: &HardState) -> Result<(), StableError> {
        // Instant here, but it stands in for stable stores that fsync: the same check.
        crate::blocking::check("InmemStore::save (a stable store)");
        self.lock().hard_state = *state;
        Ok(())
    }
}
