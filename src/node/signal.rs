//! Waking the shard thread: every producer (callers, the apply thread, the log store's I/O
//! thread, the transport) calls [`Signal::notify`]; the shard parks until notified or until its
//! next timer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::Wake;
use std::thread::Thread;
use std::time::Duration;

/// A wake-up flag for one thread.
#[derive(Debug, Default)]
pub(crate) struct Signal {
    pending: AtomicBool,
    thread: OnceLock<Thread>,
}

impl Signal {
    /// Binds the signal to the calling thread (the shard), once.
    pub(crate) fn bind_current_thread(&self) {
        let _ = self.thread.set(std::thread::current());
    }

    /// Wakes the shard (cheap when it is already awake or already notified).
    pub(crate) fn notify(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            if let Some(t) = self.thread.get() {
                t.unpark();
            }
        }
    }

    /// Clears the flag; returns whether a notification was pending.
    pub(crate) fn take(&self) -> bool {
        self.pending.swap(false, Ordering::AcqRel)
    }

    /// Parks the bound thread for at most `timeout` unless a notification is pending.
    pub(crate) fn wait(&self, timeout: Duration) {
        if self.pending.load(Ordering::Acquire) {
            return;
        }
        // `unpark` before `park` makes `park` return at once: no wake-up is lost.
        std::thread::park_timeout(timeout);
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
