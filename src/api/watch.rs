//! [`LeaderChanges`]: a watch of leadership changes (hashicorp's `LeaderCh`, without its lost
//! updates: a receiver always sees the latest value, and never misses that a change happened).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use ringraft_storage::{NodeId, Term};

use crate::node::clock::monotonic_now;

/// The leader a node knows of, and the term it learned it in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaderObservation {
    /// The leader, if one is known (this node itself when it leads).
    pub leader: Option<NodeId>,
    /// The node's term at the change.
    pub term: Term,
}

struct State {
    version: u64,
    value: LeaderObservation,
    closed: bool,
    wakers: Vec<Waker>,
}

/// The node's end of the watch.
pub(crate) struct LeaderWatch {
    state: Mutex<State>,
    changed: Condvar,
}

impl LeaderWatch {
    pub(crate) fn new() -> Arc<LeaderWatch> {
        Arc::new(LeaderWatch {
            state: Mutex::new(State {
                version: 0,
                value: LeaderObservation::default(),
                closed: false,
                wakers: Vec::new(),
            }),
            changed: Condvar::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn publish(&self, value: LeaderObservation) {
        let mut s = self.lock();
        if s.value == value {
            return;
        }
        s.value = value;
        s.version += 1;
        let wakers = std::mem::take(&mut s.wakers);
        drop(s);
        self.changed.notify_all();
        wakers.into_iter().for_each(Waker::wake);
    }

    pub(crate) fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        let wakers = std::mem::take(&mut s.wakers);
        drop(s);
        self.changed.notify_all();
        wakers.into_iter().for_each(Waker::wake);
    }
}

/// A receiver of leadership changes. Each receiver tracks which change it saw last.
pub struct LeaderChanges {
    watch: Arc<LeaderWatch>,
    seen: u64,
}

impl LeaderChanges {
    pub(crate) fn new(watch: Arc<LeaderWatch>) -> LeaderChanges {
        let seen = watch.lock().version;
        LeaderChanges { watch, seen }
    }

    /// The latest observation (marks it seen).
    pub fn current(&mut self) -> LeaderObservation {
        let s = self.watch.lock();
        self.seen = s.version;
        s.value
    }

    /// Waits for a change not yet seen by this receiver and returns the latest value; `None`
    /// once the node has shut down.
    pub fn changed(&mut self) -> Changed<'_> {
        Changed { receiver: self }
    }

    /// Blocking form of [`changed`](LeaderChanges::changed): `None` if the node shut down or
    /// nothing changed within `timeout`.
    pub fn wait_changed(&mut self, timeout: Duration) -> Option<LeaderObservation> {
        let deadline = monotonic_now() + timeout;
        let mut s = self.watch.lock();
        loop {
            if s.version != self.seen {
                self.seen = s.version;
                return Some(s.value);
            }
            let now = monotonic_now();
            if s.closed || now >= deadline {
                return None;
            }
            s = self
                .watch
                .changed
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl Clone for LeaderChanges {
    fn clone(&self) -> Self {
        LeaderChanges {
            watch: self.watch.clone(),
            seen: self.seen,
        }
    }
}

/// The future of [`LeaderChanges::changed`].
pub struct Changed<'a> {
    receiver: &'a mut LeaderChanges,
}

impl Future for Changed<'_> {
    type Output = Option<LeaderObservation>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let receiver = &mut *self.get_mut().receiver;
        let mut s = receiver.watch.lock();
        if s.version != receiver.seen {
            receiver.seen = s.version;
            return Poll::Ready(Some(s.value));
        }
        if s.closed {
            return Poll::Ready(None);
        }
        s.wakers.push(cx.waker().clone());
        Poll::Pending
    }
}
