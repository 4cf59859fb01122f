//! The bounded submission queue: a caller whose timeout passes before its request is accepted
//! gets `EnqueueTimeout`; the others complete once the node moves again.

mod node_support;

use node_support::{resolve, test_config, wait_until, RecordingFsm, HANG_GUARD};
use ringraft::{ApplyError, Raft, RaftState};
use ringraft_net::memory::MemNetwork;
use ringraft_storage::{
    Configuration, DurableNotifier, Entry, Index, InmemSnapshotStore, InmemStore, LogError,
    LogStore, NodeId, Term, Ticket,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// An `InmemStore` whose appends block while the gate is closed (a stalled disk); with a
/// probe, each append records whether its thread is marked as never blocking on storage.
struct GatedStore {
    inner: InmemStore,
    gate: Arc<(Mutex<bool>, Condvar)>,
    probe: Option<Arc<AtomicBool>>,
}

impl LogStore for GatedStore {
    fn first_index(&self) -> Index {
        self.inner.first_index()
    }
    fn last_index(&self) -> Index {
        self.inner.last_index()
    }
    fn term(&self, index: Index) -> Result<Option<Term>, LogError> {
        self.inner.term(index)
    }
    fn entry(&self, index: Index) -> Result<Option<Entry>, LogError> {
        self.inner.entry(index)
    }
    fn entries(&self, start: Index, end: Index, max_bytes: usize) -> Result<Vec<Entry>, LogError> {
        self.inner.entries(start, end, max_bytes)
    }
    fn append(&mut self, entries: &[Entry]) -> Result<Ticket, LogError> {
        if let (Some(probe), false) = (&self.probe, entries.is_empty()) {
            probe.store(
                ringraft_storage::blocking::forbidden_here(),
                Ordering::SeqCst,
            );
        }
        if !entries.is_empty() {
            let (open, changed) = &*self.gate;
            let mut open = open.lock().unwrap();
            while !*open {
                open = changed.wait(open).unwrap();
            }
        }
        self.inner.append(entries)
    }
    fn truncate_suffix(&mut self, last: Index) -> Result<Ticket, LogError> {
        self.inner.truncate_suffix(last)
    }
    fn truncate_prefix(&mut self, first: Index) -> Result<Ticket, LogError> {
        self.inner.truncate_prefix(first)
    }
    fn durable(&self) -> Result<Ticket, LogError> {
        self.inner.durable()
    }
    fn wait_durable(&self, ticket: Ticket) -> Result<(), LogError> {
        self.inner.wait_durable(ticket)
    }
    fn set_durable_notifier(&mut self, notifier: DurableNotifier) {
        self.inner.set_durable_notifier(notifier)
    }
}

fn set_gate(gate: &(Mutex<bool>, Condvar), open: bool) {
    *gate.0.lock().unwrap() = open;
    gate.1.notify_all();
}

#[test]
fn a_full_submission_queue_times_out_callers_and_drains_when_the_node_moves() {
    let store = InmemStore::new();
    let gate = Arc::new((Mutex::new(true), Condvar::new()));
    let mut config = test_config(NodeId(1));
    config.submission_queue_capacity = 2;
    let net = MemNetwork::new();
    let raft = Raft::new(
        config,
        RecordingFsm::new(),
        GatedStore {
            inner: store.clone(),
            gate: gate.clone(),
            probe: None,
        },
        store,
        InmemSnapshotStore::new(),
        net.transport(NodeId(1)),
    )
    .expect("start");
    raft.bootstrap_cluster(Configuration::voters_with_default_addresses([NodeId(1)]))
        .wait()
        .expect("bootstrap");
    wait_until("leadership", || raft.state() == RaftState::Leader);
    raft.barrier(HANG_GUARD).wait().expect("barrier");

    // Stall the disk: the shard blocks in the first append, and the queue fills behind it.
    set_gate(&gate, false);
    let stuck = raft.apply("stuck", Duration::ZERO);
    // Fill the queue: attempts succeed until it is full, then time out.
    let mut queued = Vec::new();
    loop {
        assert!(queued.len() < 100, "the queue is bounded");
        let mut f = raft.apply("fill", Duration::from_millis(1));
        if f.wait_timeout(Duration::ZERO) == Some(Err(ApplyError::EnqueueTimeout)) {
            break;
        }
        queued.push(f);
    }
    let refused = raft.apply("refused", Duration::from_millis(20)).wait();
    assert_eq!(refused, Err(ApplyError::EnqueueTimeout));

    set_gate(&gate, true);
    stuck.wait().expect("the stalled apply completes");
    for f in queued {
        f.wait().expect("a queued apply completes");
    }
    raft.apply("after", HANG_GUARD)
        .wait()
        .expect("apply after the stall");
    raft.shutdown().wait().expect("shutdown");
}

/// The shard thread is marked as one that must never block on storage, so in debug builds
/// every blocking call of the storage crate's stores panics there (`ringraft_storage::
/// blocking`): a log store sees the mark when the shard calls it, and the node tests, which
/// run in debug builds over the WAL, file and in-memory stores, pass with it armed.
#[test]
fn the_shard_thread_is_marked_as_never_blocking_on_storage() {
    let marked = Arc::new(AtomicBool::new(false));
    let store = InmemStore::new();
    let stable = InmemStore::new();
    let net = MemNetwork::new();
    let raft = Raft::new(
        test_config(NodeId(1)),
        RecordingFsm::new(),
        GatedStore {
            inner: store.clone(),
            gate: Arc::new((Mutex::new(true), Condvar::new())),
            probe: Some(marked.clone()),
        },
        stable.clone(),
        ringraft_storage::InmemSnapshotStore::new(),
        net.transport(NodeId(1)),
    )
    .expect("start");
    let configuration =
        ringraft_storage::Configuration::new(vec![ringraft_storage::Server::voter(
            NodeId(1),
            "n1",
        )]);
    resolve("bootstrap", raft.bootstrap_cluster(configuration)).expect("bootstrap");
    wait_until("leadership", || raft.state() == ringraft::RaftState::Leader);
    resolve("apply", raft.apply("x", Duration::from_secs(5))).expect("apply");
    assert!(
        marked.load(Ordering::SeqCst),
        "the shard thread is not marked"
    );
    // This log store keeps no hard state: the stable store has it, saved by its worker
    // before the node could lead (an in-memory stable store panics on the shard thread).
    let saved = ringraft_storage::StableStore::hard_state(&stable);
    assert!(
        saved.term >= Term(2) && saved.vote == Some(NodeId(1)),
        "{saved:?}"
    );
    // And the calling thread is not.
    assert!(!ringraft_storage::blocking::forbidden_here());
}
