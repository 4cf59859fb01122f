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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Poll, Wake, Waker};

thread_local! {
    /// When this thread's runtime last woke from a park.
    static LAST_UNPARK: std::cell::Cell<Option<std::time::Instant>> =
        const { std::cell::Cell::new(None) };
    /// Wake-ups of this thread's sleeping shards (the signals bound on this thread count
    /// theirs here): a thread about to park spins briefly while this does not move (see
    /// [`spin_before_park`]).
    static WAKES: Arc<AtomicU64> = Arc::new(AtomicU64::new(0));
    /// [`WAKES`] as a turn of a shard on this thread last began.
    static SEEN: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Called as a shard's turn begins: wake-ups after this one are news to the thread's next
/// spin before parking.
pub(crate) fn note_turn() {
    SEEN.with(|seen| seen.set(WAKES.with(|w| w.load(Ordering::Acquire))));
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
    // Compared with the count as the thread's last turn began, not as the spin begins: a
    // wake-up that came after the last task went to sleep but before this call has already
    // notified the runtime, which will not sleep; a spin that waited for one more wake-up
    // wasted its whole length on 10–18 % of one client's in-memory writes (docs/PERFORMANCE.md,
    // session 17).
    loop {
        for _ in 0..64 {
            if woken_since_turn() {
                return;
            }
            std::hint::spin_loop();
        }
        if super::clock::monotonic_now().duration_since(now) >= SPIN_MAX {
            return;
        }
    }
}

/// Whether a shard bound on this thread was woken since the thread's last turn began.
fn woken_since_turn() -> bool {
    WAKES.with(|w| w.load(Ordering::Acquire)) != SEEN.with(std::cell::Cell::get)
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
    /// The wake-up count of the thread the signal is bound on, set once.
    wakes: OnceLock<Arc<AtomicU64>>,
    /// The waker of the shard's main future (the runtime's `block_on`), set once.
    waker: OnceLock<Waker>,
}

impl Signal {
    /// Wakes the shard (cheap when it is already awake or already notified).
    pub(crate) fn notify(&self) {
        if !self.pending.swap(true, Ordering::SeqCst) && self.sleeping.load(Ordering::SeqCst) {
            if let Some(wakes) = self.wakes.get() {
                wakes.fetch_add(1, Ordering::Release);
            }
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

    /// Binds the signal to the calling future (the shard's main future) and its thread, once.
    pub(crate) async fn bind(&self) {
        let _ = self.wakes.set(WAKES.with(Arc::clone));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Binds `signal` on this thread and leaves it asleep (as a shard waiting for work).
    fn bind_asleep(signal: &Signal) {
        let waker = Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut bind = std::pin::pin!(signal.bind());
        assert!(bind.as_mut().poll(&mut cx).is_ready());
        let mut timer = std::pin::pin!(std::future::pending::<()>());
        let mut wait = std::pin::pin!(signal.wait(timer.as_mut()));
        assert!(wait.as_mut().poll(&mut cx).is_pending());
    }

    /// A wake-up of a sleeping shard bound on this thread counts until the thread's next turn
    /// begins, also when it came before the spin would begin (the spin then parks at once
    /// rather than wait for another); a shard bound on another thread does not count here.
    #[test]
    fn a_wake_up_counts_from_the_last_turn_on_the_shards_own_thread() {
        std::thread::spawn(|| {
            note_turn();
            assert!(!woken_since_turn());
            let here = Signal::default();
            bind_asleep(&here);
            here.notify();
            assert!(woken_since_turn(), "a wake-up since the last turn is seen");
            here.notify();
            note_turn();
            assert!(
                !woken_since_turn(),
                "a turn takes in the wake-ups before it"
            );
            let elsewhere = Arc::new(Signal::default());
            let bound = elsewhere.clone();
            std::thread::spawn(move || bind_asleep(&bound))
                .join()
                .expect("binding thread");
            elsewhere.notify();
            assert!(
                !woken_since_turn(),
                "another thread's shard woke this thread's spin"
            );
        })
        .join()
        .expect("shard-like thread");
    }
}
