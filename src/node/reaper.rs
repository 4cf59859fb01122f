//! The shard thread reaps its WAL's asynchronous writes (ARCHITECTURE §5, "Writes without the
//! writer thread").
//!
//! A log store may submit a released persist batch without blocking anyone and signal its
//! completion on a file descriptor ([`LogStore::write_completions`]). The host thread's
//! runtime watches that descriptor with its I/O driver (epoll) and reaps the completion on
//! that thread, so a durable write costs neither a wake-up of the WAL's writer thread nor one
//! of the shard by that thread.
//!
//! The groups of a host thread (a `MultiRaft` node's) share one WAL: one reaper task per WAL
//! and thread, found by the descriptor in a thread-local list, alive while a group holds its
//! [`Reaper`]. It is a task of its own, not part of some group's turn: a group that stops
//! would take the wake-up with it.
//!
//! The store's handle belongs to the [`Reaper`], not to the task: it is dropped (which
//! completes a write in flight, waiting for it) when the last group using it stops, before
//! that group's shutdown is reported, so a WAL closed after its groups stopped is closed for
//! good, not held open until the task next runs. If watching fails, the handle is dropped at
//! once: the store then goes back to its writer thread.
//!
use ringraft_storage::WriteCompletions;
use std::cell::RefCell;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::task::{Poll, Waker};
use tokio::io::unix::AsyncFd;

/// The reaper of one WAL on one host thread, alive while a group holds it; its task watches
/// the WAL's completion descriptor.
pub(crate) struct Reaper {
    fd: RawFd,
    /// Dropped with the reaper, or when watching fails.
    completions: RefCell<Option<Arc<dyn WriteCompletions>>>,
    /// The task's waker, to end it when the reaper goes.
    task: RefCell<Option<Waker>>,
}

impl Drop for Reaper {
    fn drop(&mut self) {
        // The handle goes first (here, on the stopping group's thread), then the task ends.
        drop(self.completions.borrow_mut().take());
        if let Some(waker) = self.task.borrow_mut().take() {
            waker.wake();
        }
    }
}

thread_local! {
    /// This thread's reapers, by their WAL's completion descriptor.
    static REAPERS: RefCell<Vec<Weak<Reaper>>> = const { RefCell::new(Vec::new()) };
}

/// Watches `fd` (a duplicate of it, which the result owns) with the current runtime's I/O
/// driver.
fn watch(fd: RawFd) -> Option<AsyncFd<OwnedFd>> {
    // SAFETY: fcntl duplicates a descriptor the caller keeps open; no pointers.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return None;
    }
    // SAFETY: `dup` is a new descriptor nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(dup) };
    // SAFETY: the `AsyncFd` owns `owned`, which stays open and the same until it drops.
    unsafe { AsyncFd::register_with_interest(owned, tokio::io::Interest::READABLE) }.ok()
}

/// The reaper of `completions`' WAL on this thread (its task started now if there is none).
/// Call from a `LocalSet` on a runtime with an I/O driver. `None` (and the handle dropped:
/// the store keeps its writer thread) if the descriptor cannot be watched.
pub(crate) fn reaper(completions: Arc<dyn WriteCompletions>) -> Option<Rc<Reaper>> {
    let fd = completions.fd();
    REAPERS.with(|reapers| {
        let mut reapers = reapers.borrow_mut();
        reapers.retain(|r| r.strong_count() > 0);
        if let Some(running) = reapers
            .iter()
            .filter_map(Weak::upgrade)
            .find(|r| r.fd == fd)
        {
            // The running reaper's handle keeps the WAL writing this way; this one may go.
            return Some(running);
        }
        let watched = watch(fd)?;
        let reaper = Rc::new(Reaper {
            fd,
            completions: RefCell::new(Some(completions)),
            task: RefCell::new(None),
        });
        reapers.push(Rc::downgrade(&reaper));
        let weak = Rc::downgrade(&reaper);
        tokio::task::spawn_local(std::future::poll_fn(move |cx| loop {
            let Some(reaper) = weak.upgrade() else {
                return Poll::Ready(());
            };
            match watched.poll_read_ready(cx) {
                Poll::Ready(Ok(mut guard)) => {
                    guard.clear_ready();
                    let completions = reaper.completions.borrow().clone();
                    match completions {
                        Some(completions) => completions.reap(),
                        None => return Poll::Ready(()),
                    }
                }
                Poll::Ready(Err(e)) => {
                    tracing::warn!(
                        error = %e,
                        "watching the WAL's completions failed; its writer thread takes over"
                    );
                    drop(reaper.completions.borrow_mut().take());
                    return Poll::Ready(());
                }
                Poll::Pending => {
                    *reaper.task.borrow_mut() = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
        }));
        Some(reaper)
    })
}
