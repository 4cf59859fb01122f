//! Waking the shard thread: every producer (callers, the apply thread, the log store's I/O
//! thread, the transport) calls [`Signal::notify`]; the shard sleeps in its tokio runtime
//! until notified, until a transport task wakes it, or until its next timer.
//!
//! `notify` costs one atomic swap when a notification is already pending or the shard is
//! awake; only a notification that finds the shard asleep wakes its runtime (a syscall). The
//! `sleeping` / `pending` pair is a Dekker handshake (both sides store, then load, with
//! `SeqCst`): either the shard sees the notification before it sleeps, or the notifier sees
//! the shard asleep and wakes it.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Poll, Wake, Waker};

/// A wake-up flag for one shard.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    pending: AtomicBool,
    sleeping: AtomicBool,
    /// The waker of the shard's main future (the runtime's `block_on`), set once.
    waker: OnceLock<Waker>,
}

impl Signal {
    /// Wakes the shard (cheap when it is already awake or already notified).
    pub(crate) fn notify(&self) {
        if !self.pending.swap(true, Ordering::SeqCst) && self.sleeping.load(Ordering::SeqCst) {
            if let Some(w) = self.waker.get() {
                w.wake_by_ref();
            }
        }
    }

    /// Clears the flag; returns whether a notification was pending.
    pub(crate) fn take(&self) -> bool {
        self.pending.swap(false, Ordering::AcqRel)
    }

    /// Whether a notification is pending.
    pub(crate) fn is_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Binds the signal to the calling future (the shard's main future), once.
    pub(crate) async fn bind(&self) {
        poll_fn(|cx| {
            let _ = self.waker.set(cx.waker().clone());
            Poll::Ready(())
        })
        .await
    }

    /// Sleeps until notified or until `timer` fires. The runtime runs its other tasks (the
    /// transport's connections) meanwhile.
    pub(crate) async fn wait<F: Future>(&self, mut timer: Pin<&mut F>) {
        poll_fn(|cx| {
            self.sleeping.store(true, Ordering::SeqCst);
            if self.pending.load(Ordering::SeqCst) || timer.as_mut().poll(cx).is_ready() {
                self.sleeping.store(false, Ordering::SeqCst);
                return Poll::Ready(());
            }
            Poll::Pending
        })
        .await
    }
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.notify();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.notify();
    }
}
