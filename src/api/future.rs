//! Runtime-agnostic futures: a small oneshot built on a `Mutex`, a `Condvar` and a `Waker`.
//!
//! A [`RaftFuture`] can be `.await`ed under any executor, or waited on from a plain thread with
//! [`RaftFuture::wait`]. If the node drops the request without answering (it shut down), the
//! future resolves with the request's "shut down" error: no future can hang.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::node::clock::monotonic_now;

struct Slot<T> {
    value: Option<T>,
    /// The sender is gone (after sending or by being dropped).
    closed: bool,
    waker: Option<Waker>,
    /// A thread is blocked in [`RaftFuture::wait_timeout`]: only then is the condition variable
    /// notified (notifying one costs a system call even when nobody waits).
    blocked: bool,
}

struct Shared<T> {
    slot: Mutex<Slot<T>>,
    ready: Condvar,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The sending half of a request's reply. Dropping it unsent resolves the future with its
/// "closed" result.
pub(crate) struct Sender<T> {
    shared: Option<Arc<Shared<T>>>,
}

impl<T> Sender<T> {
    /// Resolves the future.
    pub(crate) fn send(mut self, value: T) {
        self.close(Some(value));
    }

    /// Stores `value` (if any), marks the future resolved and wakes whoever waits on it.
    fn close(&mut self, value: Option<T>) {
        if let Some(shared) = self.shared.take() {
            let mut slot = shared.lock();
            if value.is_some() {
                slot.value = value;
            }
            slot.closed = true;
            let waker = slot.waker.take();
            let blocked = slot.blocked;
            drop(slot);
            if blocked {
                shared.ready.notify_all();
            }
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.close(None);
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sender")
    }
}

enum State<T> {
    Waiting(Arc<Shared<T>>),
    Ready(T),
    Taken,
}

/// The eventual answer to a request: `Result<T, E>`.
///
/// Implements [`Future`] (any executor) and has blocking [`wait`](RaftFuture::wait) and
/// [`wait_timeout`](RaftFuture::wait_timeout) for plain threads. Resolves exactly once; polling
/// after completion panics, as with other futures.
#[must_use = "a request's outcome is only known by waiting for its future"]
pub struct RaftFuture<T, E> {
    state: State<Result<T, E>>,
    on_closed: fn() -> Result<T, E>,
}

/// A reply channel: the sender for the node, the future for the caller.
pub(crate) fn channel<T, E>(
    on_closed: fn() -> Result<T, E>,
) -> (Sender<Result<T, E>>, RaftFuture<T, E>) {
    let shared = Arc::new(Shared {
        slot: Mutex::new(Slot {
            value: None,
            closed: false,
            waker: None,
            blocked: false,
        }),
        ready: Condvar::new(),
    });
    (
        Sender {
            shared: Some(shared.clone()),
        },
        RaftFuture {
            state: State::Waiting(shared),
            on_closed,
        },
    )
}

impl<T, E> RaftFuture<T, E> {
    /// A future that is already resolved.
    pub(crate) fn ready(result: Result<T, E>, on_closed: fn() -> Result<T, E>) -> Self {
        RaftFuture {
            state: State::Ready(result),
            on_closed,
        }
    }

    fn take_if_done(
        slot: &mut Slot<Result<T, E>>,
        on_closed: fn() -> Result<T, E>,
    ) -> Option<Result<T, E>> {
        if let Some(v) = slot.value.take() {
            return Some(v);
        }
        slot.closed.then(on_closed)
    }

    /// True if the outcome is known (waiting would not block).
    pub fn is_ready(&self) -> bool {
        match &self.state {
            State::Waiting(shared) => {
                let slot = shared.lock();
                slot.value.is_some() || slot.closed
            }
            State::Ready(_) => true,
            State::Taken => false,
        }
    }

    /// Blocks the calling thread until the outcome is known.
    pub fn wait(mut self) -> Result<T, E> {
        loop {
            if let Some(result) = self.wait_timeout(Duration::from_secs(3600)) {
                return result;
            }
        }
    }

    /// Blocks for at most `timeout`; `None` if the outcome is not known by then (the request
    /// stays pending and the future can be waited on again).
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<Result<T, E>> {
        let on_closed = self.on_closed;
        match std::mem::replace(&mut self.state, State::Taken) {
            State::Ready(v) => Some(v),
            State::Taken => None,
            State::Waiting(shared) => {
                let deadline = monotonic_now() + timeout;
                let mut slot = shared.lock();
                loop {
                    if let Some(v) = Self::take_if_done(&mut slot, on_closed) {
                        return Some(v);
                    }
                    let now = monotonic_now();
                    if now >= deadline {
                        break;
                    }
                    slot.blocked = true;
                    slot = shared
                        .ready
                        .wait_timeout(slot, deadline - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                slot.blocked = false;
                drop(slot);
                self.state = State::Waiting(shared);
                None
            }
        }
    }
}

// No field is ever pinned: the value moves out by `mem::replace`.
impl<T, E> Unpin for RaftFuture<T, E> {}

impl<T, E> Future for RaftFuture<T, E> {
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // No field is structurally pinned: `RaftFuture` is `Unpin`.
        let this = self.get_mut();
        let on_closed = this.on_closed;
        match std::mem::replace(&mut this.state, State::Taken) {
            State::Ready(v) => Poll::Ready(v),
            State::Taken => panic!("RaftFuture polled after completion"),
            State::Waiting(shared) => {
                let mut slot = shared.lock();
                if let Some(v) = Self::take_if_done(&mut slot, on_closed) {
                    return Poll::Ready(v);
                }
                if !slot.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    slot.waker = Some(cx.waker().clone());
                }
                drop(slot);
                this.state = State::Waiting(shared);
                Poll::Pending
            }
        }
    }
}

impl<T, E> fmt::Debug for RaftFuture<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RaftFuture")
            .field("ready", &self.is_ready())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed() -> Result<u32, &'static str> {
        Err("closed")
    }

    #[test]
    fn a_sent_value_is_received_and_a_dropped_sender_resolves_with_the_closed_result() {
        let (tx, rx) = channel(closed);
        let t = std::thread::spawn(move || tx.send(Ok(7)));
        assert_eq!(rx.wait(), Ok(7));
        t.join().expect("sender thread");
        let (tx, rx) = channel(closed);
        drop(tx);
        assert_eq!(rx.wait(), Err("closed"));
    }

    #[test]
    fn wait_timeout_leaves_the_future_pending() {
        let (tx, mut rx) = channel(closed);
        assert_eq!(rx.wait_timeout(Duration::from_millis(1)), None);
        tx.send(Ok(1));
        assert_eq!(rx.wait_timeout(Duration::from_millis(1)), Some(Ok(1)));
    }
}
