//! The store interfaces the node glue drives: [`LogStore`], [`StableStore`], [`SnapshotStore`].
//! The durability contract is documented on [`LogStore`].

use crate::configuration::Configuration;
use crate::error::{LogError, SnapshotError, StableError};
use crate::types::{Entry, Index, LogId, NodeId, Term};
use std::io::{Read, Write};
use std::sync::Arc;

/// Identifies one submitted log operation; tickets of one store increase with every operation
/// (by one, or by more where the store shares its log with other groups' stores).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(pub u64);

/// A callback a store invokes, possibly from its own I/O thread, after operations become
/// durable (or the store fails). It should only wake the shard; it must not call into the store.
pub type DurableNotifier = Arc<dyn Fn() + Send + Sync>;

/// Completions of the writes a [`LogStore`] submits without blocking anyone, for the caller's
/// event loop to watch (see [`LogStore::write_completions`]).
pub trait WriteCompletions: Send + Sync {
    /// A file descriptor that becomes readable (edge-triggered: watch it with epoll, as
    /// tokio's `AsyncFd` does) when a submitted write completes. The same for every handle of
    /// one store's writes while any of them lives.
    fn fd(&self) -> std::os::fd::RawFd;

    /// Completes what has finished (tickets become durable, notifiers run) and submits what
    /// was staged meanwhile. Never waits for the disk; cheap when nothing has finished.
    fn reap(&self);

    /// Waits until [`WriteCompletions::fd`] is readable or `timeout` has passed, then
    /// [`reap`](WriteCompletions::reap)s: for a caller without an event loop (a tool, a
    /// test). Blocks: not for a shard thread.
    fn wait_and_reap(&self, timeout: std::time::Duration) {
        let mut watched = libc::pollfd {
            fd: self.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd; the result only says whether to hurry.
        unsafe { libc::poll(&mut watched, 1, millis) };
        self.reap();
    }
}

/// The replicated log's storage.
///
/// # Durability contract
///
/// The shard (ARCHITECTURE §2) must never block on the disk, and must never ack what is not durable.
/// So every mutating call *submits* an operation and returns at once with a [`Ticket`]:
///
/// - **Visibility is immediate.** After `append`, `truncate_suffix` or `truncate_prefix`
///   returns, `first_index`, `last_index`, `term`, `entry` and `entries` reflect it, durable or
///   not (a leader replicates entries while it is still writing them, thesis §10.2.1).
/// - **Durability is in submission order.** Tickets increase with every operation. When
///   [`LogStore::durable`] returns `t`, every operation with a ticket `<= t` is on stable
///   storage and survives a crash or power loss; later operations may or may not.
/// - **Complete means durable.** "Complete" is never "written to the page cache".
/// - **Errors are sticky.** After an I/O error (a failed write or fsync, a full device) the
///   store stops: `durable` and every later mutating call return [`LogError::Failed`] (or the
///   error itself) until the store is reopened, because a failed fsync cannot be retried safely.
///   Operations not durable at the failure may or may not have reached disk; reopening recovers
///   a valid prefix that includes everything ever reported durable.
/// - **Wake-ups.** A store may complete operations on another thread. The shard can register a
///   [`DurableNotifier`] to be woken, then call `durable` to learn how far it got.
///
/// [`LogStore::append_and_wait`] is the synchronous convenience path on top of this.
///
/// Entries form a contiguous range `first_index()..=last_index()`; the log is empty when
/// `first_index() == last_index().next()`. A new store holds nothing with first index 1.
pub trait LogStore: Send {
    /// The first index held (or, when empty, the index the next append must use).
    fn first_index(&self) -> Index;

    /// The last index held; `first_index() - 1` when empty (0 for a new store).
    fn last_index(&self) -> Index;

    /// The term of the entry at `index`, or `None` if it is not held.
    fn term(&self, index: Index) -> Result<Option<Term>, LogError>;

    /// The entry at `index`, or `None` if it is not held.
    fn entry(&self, index: Index) -> Result<Option<Entry>, LogError>;

    /// Entries from `start` up to (not including) `end`, stopping early once their payloads
    /// exceed `max_bytes` (at least one entry is returned if `start` is held). Indexes outside
    /// the held range are skipped: the result is empty if `start` is not held.
    fn entries(&self, start: Index, end: Index, max_bytes: usize) -> Result<Vec<Entry>, LogError>;

    /// Submits `entries` (contiguous, the first at `last_index() + 1`) to be made durable.
    ///
    /// An empty slice submits nothing and returns the latest ticket.
    fn append(&mut self, entries: &[Entry]) -> Result<Ticket, LogError>;

    /// [`LogStore::append`] of entries the caller gives away: a store that keeps entries in
    /// memory ([`crate::InmemStore`], [`crate::LogCache`]) moves them in rather than cloning
    /// each one. The node's shard calls this with every persist batch. The default appends
    /// a borrow of them, so a store that encodes entries (the WAL) need not implement it.
    fn append_owned(&mut self, entries: Vec<Entry>) -> Result<Ticket, LogError> {
        self.append(&entries)
    }

    /// Removes every entry after `last` (conflict resolution on a follower, Raft §5.3).
    /// `last` must be at least `first_index() - 1`; at or beyond `last_index()` it is a no-op.
    fn truncate_suffix(&mut self, last: Index) -> Result<Ticket, LogError>;

    /// Removes every entry before `first` (compaction after a snapshot). If `first` is beyond
    /// `last_index() + 1` the log becomes empty and the next append must be at `first` (after
    /// installing a snapshot). At or below `first_index()` it is a no-op.
    fn truncate_prefix(&mut self, first: Index) -> Result<Ticket, LogError>;

    /// The highest ticket that is durable together with every ticket before it. Never blocks.
    fn durable(&self) -> Result<Ticket, LogError>;

    /// Blocks until `ticket` is durable or the store fails.
    fn wait_durable(&self, ticket: Ticket) -> Result<(), LogError>;

    /// Registers a callback run after operations become durable or the store fails.
    fn set_durable_notifier(&mut self, notifier: DurableNotifier);

    /// Submits `state` (term, vote and commit index) to be made durable in order with the
    /// log's other operations, like an append: a term change or a vote then costs no separate
    /// fsync, and the commit index rides with the entries (hashicorp's commit tracking), so a
    /// node restarted alone can apply what it knew was committed. Returns `Ok(None)` if this
    /// store keeps no hard state (the default); the caller then saves it in a [`StableStore`].
    fn save_hard_state(&mut self, state: &HardState) -> Result<Option<Ticket>, LogError> {
        let _ = state;
        Ok(None)
    }

    /// The newest hard state this store holds (recovered when it was opened, or submitted
    /// since), if it keeps one. A caller merges it with its [`StableStore`]'s: the higher term
    /// wins, and within one term the vote that is set and the higher commit index.
    fn saved_hard_state(&self) -> Option<HardState> {
        None
    }

    /// Holds back the store's own writer: operations submitted from now on are staged and
    /// wait for [`LogStore::release_writes`], which the caller must call next. For a caller
    /// that submits several operations at once (entries, then the hard state) and may write
    /// them itself. The default does nothing: each operation starts on its own.
    fn hold_writes(&mut self) {}

    /// Ends [`LogStore::hold_writes`]: starts the store's writer on what was staged, or, if
    /// `here` and the store can start at once (its writer idle, little staged), writes and
    /// syncs it on the calling thread before it returns, saving the hand-offs to a writer
    /// thread and back. Returns true in the second case; the operations are then durable
    /// (or the store failed: the error is returned, and every later call fails too). The
    /// default does nothing and returns false.
    fn release_writes(&mut self, here: bool) -> Result<bool, LogError> {
        let _ = here;
        Ok(false)
    }

    /// Asks the store to write what [`LogStore::release_writes`] releases without blocking
    /// any thread, from now on while the returned handle (or a clone) lives: the write is
    /// submitted on the releasing thread and completes when the handle's
    /// [`WriteCompletions::reap`] is called after its file descriptor became readable. The
    /// caller must watch that descriptor from its event loop; otherwise writes wait forever
    /// (a blocking [`LogStore::wait_durable`] still completes them itself). `None` if the
    /// store has no such mode, which is the default.
    fn write_completions(&mut self) -> Option<Arc<dyn WriteCompletions>> {
        None
    }

    /// Appends and blocks until the entries are durable.
    fn append_and_wait(&mut self, entries: &[Entry]) -> Result<(), LogError> {
        let ticket = self.append(entries)?;
        self.wait_durable(ticket)
    }

    /// The id of the last entry held, if any.
    fn last_log_id(&self) -> Result<Option<LogId>, LogError> {
        let last = self.last_index();
        Ok(self.term(last)?.map(|term| LogId::new(term, last)))
    }
}

/// The state Raft must persist before it acts on it (Raft figure 2): the current term, the
/// vote cast in it, and (as an optimisation for restarts) the commit index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HardState {
    /// The latest term this server has seen.
    pub term: Term,
    /// The candidate voted for in `term`, if any.
    pub vote: Option<NodeId>,
    /// The highest index known committed (may lag; never ahead of the truth).
    pub commit: Index,
}

impl HardState {
    /// The newer of two hard states saved by the same node in two places: the higher term;
    /// within a term, the vote that is set (a vote is cast at most once per term) and the
    /// higher commit index (it only grows).
    pub fn newest(a: HardState, b: HardState) -> HardState {
        match a.term.cmp(&b.term) {
            std::cmp::Ordering::Greater => a,
            std::cmp::Ordering::Less => b,
            std::cmp::Ordering::Equal => HardState {
                term: a.term,
                vote: a.vote.or(b.vote),
                commit: a.commit.max(b.commit),
            },
        }
    }
}

/// Durable storage for [`HardState`].
///
/// `save` returns only once the state is durable: a vote must never be sent before it is on
/// disk. Saves are small and rare (term changes, votes); the commit index can be saved lazily.
pub trait StableStore: Send {
    /// The last saved state (the default state for a new store).
    fn hard_state(&self) -> HardState;

    /// Makes `state` durable. After an error the store refuses further saves until reopened.
    fn save(&mut self, state: &HardState) -> Result<(), StableError>;
}

/// What a snapshot covers and how to restore membership from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The store-assigned id, unique within the store.
    pub id: String,
    /// The last log entry the snapshot includes.
    pub last: LogId,
    /// The latest configuration as of `last`.
    pub configuration: Configuration,
    /// The index of the entry that held `configuration`.
    pub configuration_index: Index,
    /// Size of the snapshot data in bytes.
    pub size: u64,
}

/// Receives a snapshot's data while it is being written.
///
/// Drop without `commit` is `cancel`.
pub trait SnapshotSink: Write + Send {
    /// The id the snapshot will have.
    fn id(&self) -> &str;

    /// Makes the snapshot durable and visible; returns its metadata.
    fn commit(self: Box<Self>) -> Result<SnapshotMeta, SnapshotError>;

    /// Discards the snapshot.
    fn cancel(self: Box<Self>) -> Result<(), SnapshotError>;
}

/// Where snapshots live.
pub trait SnapshotStore: Send + Sync {
    /// Starts a snapshot covering the log up to `last`.
    fn create(
        &self,
        last: LogId,
        configuration: &Configuration,
        configuration_index: Index,
    ) -> Result<Box<dyn SnapshotSink>, SnapshotError>;

    /// Metadata of the retained snapshots, newest first (by term, index, then id).
    fn list(&self) -> Result<Vec<SnapshotMeta>, SnapshotError>;

    /// Opens a snapshot for reading, after verifying its checksum.
    fn open(&self, id: &str) -> Result<(SnapshotMeta, Box<dyn Read + Send>), SnapshotError>;

    /// The store's staging area for user restores: snapshots that wait, durably and apart
    /// from the retained ones, until the log entry that restores them is applied. Its `list`
    /// returns every staged snapshot and its `remove` deletes one. `None` (the default): this
    /// store cannot stage, and user restore is refused.
    fn staging(&self) -> Option<&dyn SnapshotStore> {
        None
    }

    /// Deletes the snapshot `id` (used on staging areas once a staged snapshot is no longer
    /// needed). The default refuses with [`SnapshotError::NotSupported`].
    fn remove(&self, id: &str) -> Result<(), SnapshotError> {
        let _ = id;
        Err(SnapshotError::NotSupported)
    }
}
