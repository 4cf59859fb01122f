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

/// Wake-ups of sleeping shards, process-wide: a shard thread about to park spins briefly while
/// this does not move (see [`spin_before_park`]).
static WAKES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

thread_local! {
    /// When this thread's runtime last woke from a park.
    static LAST_UNPARK: std::cell::Cell<Option<std::time::Instant>> =
        const { std::cell::Cell::new(None) };
}

/// Spin at most this long before parking.
const SPIN_MAX: std::time::Duration = std::time::Duration::from_micros(25);
/// Spin only when the thread was woken this recently (requests are arriving back to back).
const SPIN_IF_WOKEN_WITHIN: std::time::Duration = std::time::Duration::from_micros(200);

/// Called by a shard runtime before its thread parks: when the thread was woken very recently
/// (requests arriving back to back), spins for at most [`SPIN_MAX`] until some shard is
/// notified, so the next request finds the thread awake (a parked vCPU takes 5–15 µs to wake
/// on a VM) and its sender skips the wake-up system call. Never spins under a steady trickle.
pub(crate) fn spin_before_park() {
    let Some(woken) = LAST_UNPARK.with(|c| c.get()) else {
        return;
    };
    let now = super::clock::monotonic_now();
    if now.duration_since(woken) > SPIN_IF_WOKEN_WITHIN {
        return;
    }
    let seen = WAKES.load(Ordering::Acquire);
    loop {
        for _ in 0..64 {
            std::hint::spin_loop();
            if WAKES.load(Ordering::Acquire) != seen {
                return;
            }
        }
        if super::clock::monotonic_now().duration_since(now) >= SPIN_MAX {
            return;
        }
    }
}

/// Called by a shard runtime when its thread wakes from a park.
pub(crate) fn note_unpark() {
    LAST_UNPARK.with(|c| c.set(Some(super::clock::monotonic_now())));
}

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
            WAKES.fetch_add(1, Ordering::Release);
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
