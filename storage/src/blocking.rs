//! Threads that must never wait on storage.
//!
//! A node's shard thread runs the consensus loop of every node a `ShardHost` holds: one fsync,
//! blocking read or wait for durability there stalls them all. The runtime marks that thread
//! with [`forbid_on_this_thread`]; in debug builds, every blocking operation of this crate's
//! stores (waiting for the WAL to become durable, saving the stable file, creating, listing,
//! opening, writing or removing file snapshots) panics on a marked thread, so tests catch a
//! regression. [`Allow`] lifts the ban for code that knowingly blocks: a small batch a caller
//! asked to write itself ([`LogStore::release_writes`] with `here`, which ringraft's runtime
//! asks only for a follower, or a leader without peers, alone on its thread while the WAL's
//! writer is idle), and two rare paths of asynchronous writes
//! ([`LogStore::write_completions`]): a batch the ring refused, written at once, and the last
//! completions handle dropped with a write in flight, which waits for it. Even a stable-store
//! save runs on a worker. Release builds check nothing.
//!
//! [`LogStore::release_writes`]: crate::LogStore::release_writes
//! [`LogStore::write_completions`]: crate::LogStore::write_completions

use std::cell::Cell;

thread_local! {
    static FORBIDDEN: Cell<bool> = const { Cell::new(false) };
    static ALLOWED: Cell<u32> = const { Cell::new(0) };
}

/// Marks the calling thread as one that must never block on storage (checked in debug
/// builds).
pub fn forbid_on_this_thread() {
    FORBIDDEN.with(|f| f.set(true));
}

/// True if the calling thread is marked and no [`Allow`] is in scope.
pub fn forbidden_here() -> bool {
    FORBIDDEN.with(Cell::get) && ALLOWED.with(Cell::get) == 0
}

/// While alive, blocking storage operations are allowed on this thread even if it is marked.
#[must_use = "the exception lasts as long as the value"]
pub struct Allow(());

impl Allow {
    /// Allows blocking on this thread until the value is dropped.
    pub fn new() -> Allow {
        ALLOWED.with(|a| a.set(a.get() + 1));
        Allow(())
    }
}

impl Default for Allow {
    fn default() -> Self {
        Allow::new()
    }
}

impl Drop for Allow {
    fn drop(&mut self) {
        ALLOWED.with(|a| a.set(a.get().saturating_sub(1)));
    }
}

/// Panics in debug builds if the calling thread must not block (see the module docs).
#[track_caller]
pub(crate) fn check(what: &str) {
    if cfg!(debug_assertions) && forbidden_here() {
        panic!("{what} would block a thread that must never wait on storage (the shard thread)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marked_thread_may_not_block_unless_allowed() {
        std::thread::spawn(|| {
            assert!(!forbidden_here());
            check("unmarked");
            forbid_on_this_thread();
            assert!(forbidden_here());
            {
                let _allow = Allow::new();
                check("allowed");
            }
            let blocked = std::panic::catch_unwind(|| check("a save"));
            assert_eq!(blocked.is_err(), cfg!(debug_assertions));
        })
        .join()
        .expect("thread");
    }
}
