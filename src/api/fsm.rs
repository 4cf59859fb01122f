//! The user's state machine: [`Fsm`] and [`FsmSnapshot`] (hashicorp's `FSM` and
//! `FSMSnapshot`).

use bytes::Bytes;
use ringraft_storage::{Configuration, Entry, Index};
use std::io::{Read, Write};

/// An error from user code (state machine or snapshot).
pub type FsmError = Box<dyn std::error::Error + Send + Sync>;

/// A replicated state machine. Runs on the node's shard thread while it is fast, else on an
/// apply thread of its own ([`Config::apply_placement`](crate::Config::apply_placement)):
/// `apply`, `snapshot` and `restore` are never called concurrently, and always in log order.
/// Keep `apply` and `snapshot` quick (microseconds); a state machine that does I/O in them
/// is moved to its own thread after its first slow calls, or can ask for that from the start
/// with [`ApplyPlacement::OwnThread`](crate::ApplyPlacement::OwnThread).
pub trait Fsm: Send + 'static {
    /// Applies a committed command entry (`entry.kind` is `EntryKind::Command`); the result
    /// becomes the response of the `apply` that proposed it. Must be deterministic: every
    /// replica applies the same entries in the same order. Errors belong in the response.
    ///
    /// `entry.data` is a reference-counted view of the buffer the entry arrived in, not a copy:
    /// on a follower, of the network read that brought it, which it shares with the entries and
    /// messages read with it. Keeping a slice of it (a key or value in a map, say) keeps that
    /// whole buffer alive for as long; copy what the state keeps for long
    /// (`Bytes::copy_from_slice`) unless that memory does not matter.
    fn apply(&mut self, entry: &Entry) -> Bytes;

    /// Applies consecutive committed command entries at once (hashicorp's `BatchingFSM`),
    /// returning one response per entry, in order. Override it to amortise work over a batch
    /// (one write transaction, one lock); the default calls [`Fsm::apply`] for each.
    fn apply_batch(&mut self, entries: &[Entry]) -> Vec<Bytes> {
        entries.iter().map(|e| self.apply(e)).collect()
    }

    /// Captures the current state for a snapshot. Applies wait while this runs, so it should be
    /// quick (a copy-on-write handle, not the serialised state); the heavy work belongs in
    /// [`FsmSnapshot::persist`], which runs on another thread.
    fn snapshot(&mut self) -> Result<Box<dyn FsmSnapshot>, FsmError>;

    /// Replaces the whole state with a snapshot's contents (written by
    /// [`FsmSnapshot::persist`]).
    fn restore(&mut self, snapshot: &mut dyn Read) -> Result<(), FsmError>;

    /// A configuration entry committed (hashicorp's `ConfigurationStore` hook). Does nothing
    /// unless overridden.
    fn store_configuration(&mut self, index: Index, configuration: &Configuration) {
        let _ = (index, configuration);
    }
}

/// A point-in-time capture of the state machine, written out while applies continue.
pub trait FsmSnapshot: Send + 'static {
    /// Writes the snapshot's bytes. An error cancels the snapshot.
    fn persist(&mut self, sink: &mut dyn Write) -> Result<(), FsmError>;

    /// Called once the snapshot was persisted or abandoned. Does nothing unless overridden.
    fn release(&mut self) {}
}
