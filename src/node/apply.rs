//! The apply thread: runs the user's [`Fsm`] on committed entries, in order, and resolves the
//! futures that wait for application (applies, barriers, reads).
//!
//! It receives tasks from the shard in one FIFO channel. The shard forwards a proposal's
//! "committed" reply *before* the entries themselves (the core emits the reply and then the
//! apply effect), so when an entry is applied its waiter is already here and receives the
//! FSM's response directly.

use super::metrics::NodeMetrics;
use super::reply::Responses;
use super::{Reply, Shared};
use crate::api::fsm::{Fsm, FsmSnapshot};
use bytes::Bytes;
use ringraft_storage::{Configuration, Entry, EntryKind, Index, LogId, SnapshotMeta};
use std::collections::VecDeque;
use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;

/// Work for the apply thread.
pub(crate) enum ApplyTask {
    /// Committed entries, consecutive.
    Entries(Vec<Entry>),
    /// Resolve `reply` once `last` is applied, with the responses of `first..=last`.
    Await {
        first: Index,
        last: Index,
        reply: Reply,
    },
    /// Resolve `reply` once `index` is applied (linearizable reads).
    WaitApplied { index: Index, reply: Reply },
    /// Capture a snapshot of the FSM as of the last applied entry.
    Snapshot,
    /// Replace the FSM's state with the snapshot `meta` (opened by the snapshot worker).
    Restore {
        meta: SnapshotMeta,
        reader: Box<dyn Read + Send>,
    },
    /// Apply the user-restore entry `entry`: replace the FSM's state with its staged snapshot
    /// (opened by the snapshot worker).
    RestoreEntry {
        entry: LogId,
        reader: Box<dyn Read + Send>,
    },
}

/// What the apply thread and the workers tell the shard.
pub(crate) enum ShardEvent {
    /// Everything up to this index is applied.
    Applied(Index),
    /// A snapshot of the FSM as of `last` (or why it failed).
    SnapshotCaptured(Result<(Box<dyn FsmSnapshot>, LogId), String>),
    /// A snapshot was persisted in the snapshot store (or why not). Large variants are boxed:
    /// the channel allocates its slots by the event's size, per node.
    SnapshotPersisted(Box<Result<SnapshotMeta, crate::api::error::TakeSnapshotError>>),
    /// The node cannot continue.
    Fatal(String),
    /// A user restore's snapshot was staged (or why not).
    RestoreStaged {
        token: crate::core::Token,
        result: Box<Result<SnapshotMeta, String>>,
    },
    /// A completion the core takes as it is (the snapshot worker's chunk reads and writes).
    Core(Box<crate::core::Input>),
    /// The stable-store worker saved a hard state (or why not).
    StableSaved {
        key: super::shard::StableKey,
        result: Result<(), String>,
    },
    /// The snapshot I/O worker opened what a restore reads (or why it could not).
    RestoreOpened(Result<Box<dyn Read + Send>, String>),
}

struct PendingAwait {
    first: Index,
    last: Index,
    responses: Responses,
    reply: Reply,
}

impl PendingAwait {
    fn resolve(self) {
        self.reply.applied(self.first, self.last, self.responses);
    }
}

pub(crate) struct ApplyLoop {
    pub(crate) fsm: Box<dyn Fsm>,
    pub(crate) last_applied: LogId,
    pub(crate) shared: Arc<Shared>,
    pub(crate) events: super::events::EventSender,
    awaits: VecDeque<PendingAwait>,
    reads: Vec<(Index, Reply)>,
    /// How the core learns what was applied.
    reports: Reports,
}

/// How an apply loop tells the shard's core what it applied (ARCHITECTURE §10, step 6).
enum Reports {
    /// On an apply thread: an `Applied` event for each batch.
    ByEvent,
    /// On the shard thread: the highest index applied and not yet taken, which the shard
    /// steps into its core in the same turn ([`ApplyLoop::take_applied`]); an event would
    /// cost a turn of its own per apply.
    Inline(Option<Index>),
}

impl ApplyLoop {
    pub(crate) fn new(
        fsm: Box<dyn Fsm>,
        last_applied: LogId,
        shared: Arc<Shared>,
        events: super::events::EventSender,
    ) -> ApplyLoop {
        ApplyLoop {
            fsm,
            last_applied,
            shared,
            events,
            awaits: VecDeque::new(),
            reads: Vec::new(),
            reports: Reports::ByEvent,
        }
    }

    /// The loop runs on the shard thread from now on: the shard takes the applied index with
    /// [`ApplyLoop::take_applied`] after each task rather than as an event.
    pub(crate) fn report_inline(&mut self) {
        if let Reports::ByEvent = self.reports {
            self.reports = Reports::Inline(None);
        }
    }

    /// The loop moves to a thread of its own: what the shard has not taken yet, and every
    /// applied index from now on, goes through the event channel, in order.
    pub(crate) fn report_by_event(&mut self) {
        if let Reports::Inline(Some(index)) = std::mem::replace(&mut self.reports, Reports::ByEvent)
        {
            self.tell(ShardEvent::Applied(index));
        }
    }

    /// The applied index the shard has not stepped into its core yet (on the shard thread).
    pub(crate) fn take_applied(&mut self) -> Option<Index> {
        match &mut self.reports {
            Reports::Inline(pending) => pending.take(),
            Reports::ByEvent => None,
        }
    }

    /// Entries up to `index` are applied: the shard's core learns it.
    fn report_applied(&mut self, index: Index) {
        match &mut self.reports {
            Reports::Inline(pending) => *pending = Some(pending.map_or(index, |p| p.max(index))),
            Reports::ByEvent => self.tell(ShardEvent::Applied(index)),
        }
    }

    /// Publishes the applied index the loop starts from (before the first task).
    pub(crate) fn start(&mut self) {
        self.shared
            .applied_index
            .store(self.last_applied.index.0, Ordering::Release);
    }

    /// Runs until the shard hangs up or the node shuts down. Waiters still pending are
    /// dropped, which answers them with `Shutdown`.
    pub(crate) fn run(mut self, tasks: mpsc::Receiver<ApplyTask>) {
        self.start();
        while let Ok(task) = tasks.recv() {
            if !self.handle(task) {
                break;
            }
        }
    }

    /// Performs one task; false once the loop must stop (shutdown, or the state machine
    /// failed).
    pub(crate) fn handle(&mut self, task: ApplyTask) -> bool {
        if self.shared.shutdown_requested() {
            return false;
        }
        match task {
            ApplyTask::Entries(entries) => {
                let (count, started) = (entries.len(), self.shared.clock.now());
                self.apply(entries);
                let m = &self.shared.metrics;
                m.fsm_applied(started, self.shared.clock.now(), count);
                self.shared.stats.fsm_pending.fetch_sub(1, Ordering::AcqRel);
            }
            ApplyTask::Await { first, last, reply } => {
                let pending = PendingAwait {
                    first,
                    last,
                    responses: Responses::None,
                    reply,
                };
                if last <= self.last_applied.index {
                    // Cannot happen with the core's ordering (the reply precedes the
                    // entries); answer rather than wait forever.
                    pending.resolve();
                } else {
                    self.awaits.push_back(pending);
                }
            }
            ApplyTask::WaitApplied { index, reply } => {
                if index <= self.last_applied.index {
                    reply.applied(index, index, Responses::None);
                } else {
                    self.reads.push((index, reply));
                }
            }
            ApplyTask::Snapshot => {
                let started = self.shared.clock.now();
                let result = self
                    .fsm
                    .snapshot()
                    .map(|s| (s, self.last_applied))
                    .map_err(|e| e.to_string());
                let m = &self.shared.metrics;
                NodeMetrics::time(&m.fsm_snapshot, started, self.shared.clock.now());
                self.tell(ShardEvent::SnapshotCaptured(result));
            }
            ApplyTask::Restore { meta, mut reader } => {
                let started = self.shared.clock.now();
                let restored = self.fsm.restore(&mut reader);
                let finished = self.shared.clock.now();
                NodeMetrics::time(&self.shared.metrics.fsm_restore, started, finished);
                if let Err(e) = restored {
                    let error = format!("restoring snapshot {}: {e}", meta.last);
                    self.tell(ShardEvent::Fatal(error));
                    return false;
                }
                self.last_applied = self.last_applied.max(meta.last);
                tracing::info!(
                    node = self.shared.id.0,
                    last = %meta.last,
                    size = meta.size,
                    "state machine restored from snapshot"
                );
                self.after_progress();
            }
            ApplyTask::RestoreEntry { entry, mut reader } => {
                if entry.index <= self.last_applied.index {
                    return true;
                }
                let started = self.shared.clock.now();
                let restored = self.fsm.restore(&mut reader);
                let finished = self.shared.clock.now();
                NodeMetrics::time(&self.shared.metrics.fsm_restore, started, finished);
                if let Err(e) = restored {
                    let error = format!("applying user restore {entry}: {e}");
                    self.tell(ShardEvent::Fatal(error));
                    return false;
                }
                tracing::info!(node = self.shared.id.0, entry = %entry, "user restore applied");
                self.entry_applied(entry, None);
                self.report_applied(entry.index);
                self.after_progress();
            }
        }
        true
    }

    /// Bookkeeping after the entry `id` was applied with `response`: publish the applied
    /// index and resolve the waiters it completes.
    fn entry_applied(&mut self, id: LogId, response: Option<Bytes>) {
        let index = id.index;
        self.last_applied = id;
        // Published before any waiter resolves: a caller that sees its future resolve also
        // sees `applied_index` at or past its entry.
        self.shared.applied_index.store(index.0, Ordering::Release);
        while self.awaits.front().is_some_and(|a| a.last < index) {
            if let Some(a) = self.awaits.pop_front() {
                a.resolve();
            }
        }
        if let Some(front) = self.awaits.front_mut() {
            if front.first <= index {
                if let Some(r) = response {
                    front.responses.push(r);
                }
                if front.last == index {
                    if let Some(a) = self.awaits.pop_front() {
                        a.resolve();
                    }
                }
            }
        }
    }

    fn tell(&self, event: ShardEvent) {
        let _ = self.events.send(event);
        self.shared.signal.notify();
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        let fresh = entries
            .iter()
            .position(|e| e.id.index > self.last_applied.index)
            .unwrap_or(entries.len());
        let mut rest = &entries[fresh..];
        while let Some(first) = rest.first() {
            if first.kind == EntryKind::Command {
                // A run of commands goes to the state machine as one batch.
                let run = rest
                    .iter()
                    .position(|e| e.kind != EntryKind::Command)
                    .unwrap_or(rest.len());
                let (batch, after) = rest.split_at(run);
                let mut responses = self.fsm.apply_batch(batch).into_iter();
                for entry in batch {
                    // A state machine that answers fewer responses than entries leaves the
                    // rest empty rather than stalling its callers.
                    self.entry_applied(entry.id, Some(responses.next().unwrap_or_default()));
                }
                rest = after;
                continue;
            }
            if first.kind == EntryKind::Configuration {
                if let Ok(c) = Configuration::decode(&first.data) {
                    self.fsm.store_configuration(first.id.index, &c);
                }
            }
            self.entry_applied(first.id, None);
            rest = &rest[1..];
        }
        if let Some(last) = entries.last() {
            self.report_applied(last.id.index.min(self.last_applied.index));
        }
        self.after_progress();
    }

    fn after_progress(&mut self) {
        let applied = self.last_applied.index;
        self.shared
            .applied_index
            .store(applied.0, Ordering::Release);
        self.shared.metrics.applied_index.set(applied.0 as f64);
        while self.awaits.front().is_some_and(|a| a.last <= applied) {
            if let Some(a) = self.awaits.pop_front() {
                a.resolve();
            }
        }
        if self.reads.iter().any(|(i, _)| *i <= applied) {
            let (ready, waiting) = std::mem::take(&mut self.reads)
                .into_iter()
                .partition(|(i, _)| *i <= applied);
            self.reads = waiting;
            for (index, reply) in ready {
                reply.applied(index, index, Responses::None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::config::Config;
    use crate::api::config::ReloadableConfig;
    use crate::api::fsm::FsmError;
    use crate::node::clock::Clock;
    use ringraft_storage::{NodeId, Term};

    /// Counts the commands it applies.
    struct Count(u64);

    impl Fsm for Count {
        fn apply(&mut self, _entry: &Entry) -> Bytes {
            self.0 += 1;
            Bytes::from(self.0.to_string())
        }
        fn snapshot(&mut self) -> Result<Box<dyn FsmSnapshot>, FsmError> {
            Err(FsmError::from("not in this test"))
        }
        fn restore(&mut self, _snapshot: &mut dyn Read) -> Result<(), FsmError> {
            Ok(())
        }
    }

    fn commands(first: u64, last: u64) -> ApplyTask {
        let entries = (first..=last)
            .map(|i| {
                let id = LogId::new(Term(1), Index(i));
                Entry::new(id, EntryKind::Command, Bytes::from_static(b"c"))
            })
            .collect();
        ApplyTask::Entries(entries)
    }

    fn applied_events(rx: &mut super::super::events::EventReceiver) -> Vec<Index> {
        let mut found = Vec::new();
        while let Some(event) = rx.try_recv() {
            match event {
                ShardEvent::Applied(index) => found.push(index),
                _ => panic!("only applied indexes are reported here"),
            }
        }
        found
    }

    #[test]
    fn on_the_shard_thread_applied_indexes_wait_for_the_shard_and_an_apply_thread_sends_them() {
        let reloadable = ReloadableConfig::from_config(&Config::new(NodeId(1)));
        let shared = Shared::new(NodeId(1), 16, Clock::start(), reloadable);
        let (tx, mut rx) = super::super::events::channel();
        let mut apply = ApplyLoop::new(Box::new(Count(0)), LogId::default(), shared, tx);
        apply.start();
        apply.report_inline();
        assert_eq!(apply.take_applied(), None, "nothing applied yet");

        // Inline: no event (it would cost the shard a turn); the shard takes the index.
        assert!(apply.handle(commands(1, 3)));
        assert!(apply.handle(commands(4, 5)));
        assert_eq!(applied_events(&mut rx), Vec::<Index>::new());
        assert_eq!(
            apply.take_applied(),
            Some(Index(5)),
            "the highest applied index"
        );
        assert_eq!(apply.take_applied(), None, "taken once");

        // Moving to a thread: what the shard has not taken goes first, then every apply.
        assert!(apply.handle(commands(6, 7)));
        apply.report_by_event();
        assert!(apply.handle(commands(8, 8)));
        assert_eq!(applied_events(&mut rx), vec![Index(7), Index(8)]);
        assert_eq!(apply.take_applied(), None);
        assert_eq!(apply.last_applied.index, Index(8));
    }
}
