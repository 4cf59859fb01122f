//! Metrics through the `metrics` facade: a node started under a recorder reports hashicorp's
//! metric names, labelled with its id.
//!
//! The recorder is thread-local (`metrics::with_local_recorder` around `Raft::new`): a node
//! registers its handles when it starts, so the test needs no process-wide recorder. Waits
//! poll with a deadline that only guards against hangs; nothing asserts on durations.

use bytes::Bytes;
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use ringraft::api::metrics as names;
use ringraft::{Config, Fsm, FsmError, FsmSnapshot, Raft};
use ringraft_net::memory::MemNetwork;
use ringraft_storage::{Configuration, Entry, InmemSnapshotStore, InmemStore, NodeId};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const T: Duration = Duration::from_secs(5);
const HANG_GUARD: Duration = Duration::from_secs(20);

/// One registered metric: how often it was touched and its last value.
#[derive(Default)]
struct Cell {
    /// Counter total, or number of histogram samples, or number of gauge updates.
    count: AtomicU64,
    /// The last gauge value or histogram sample, as `f64` bits.
    last: AtomicU64,
}

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.count.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.count.store(value, Ordering::Relaxed);
    }
}

impl GaugeFn for Cell {
    fn increment(&self, _value: f64) {}
    fn decrement(&self, _value: f64) {}
    fn set(&self, value: f64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.last.store(value.to_bits(), Ordering::Relaxed);
    }
}

impl HistogramFn for Cell {
    fn record(&self, value: f64) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.last.store(value.to_bits(), Ordering::Relaxed);
    }
}

/// A metric's labels (of its first registration) and its cell.
type Registered = (Vec<(String, String)>, Arc<Cell>);

/// Records every metric by name, with the labels of its registration.
#[derive(Clone, Default)]
struct TestRecorder {
    cells: Arc<Mutex<BTreeMap<String, Registered>>>,
}

impl TestRecorder {
    fn cell(&self, key: &Key) -> Arc<Cell> {
        let labels = key
            .labels()
            .map(|l| (l.key().to_string(), l.value().to_string()))
            .collect();
        let mut cells = self.cells.lock().unwrap();
        cells
            .entry(key.name().to_string())
            .or_insert_with(|| (labels, Arc::new(Cell::default())))
            .1
            .clone()
    }

    fn count(&self, name: &str) -> u64 {
        let cells = self.cells.lock().unwrap();
        cells
            .get(name)
            .map_or(0, |(_, c)| c.count.load(Ordering::Relaxed))
    }

    fn last(&self, name: &str) -> f64 {
        let cells = self.cells.lock().unwrap();
        cells
            .get(name)
            .map_or(0.0, |(_, c)| f64::from_bits(c.last.load(Ordering::Relaxed)))
    }

    fn labels(&self, name: &str) -> Vec<(String, String)> {
        let cells = self.cells.lock().unwrap();
        cells.get(name).map(|(l, _)| l.clone()).unwrap_or_default()
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.cell(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.cell(key))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.cell(key))
    }
}

struct Counting(u64);

impl Fsm for Counting {
    fn apply(&mut self, _entry: &Entry) -> Bytes {
        self.0 += 1;
        Bytes::from(self.0.to_string())
    }
    fn snapshot(&mut self) -> Result<Box<dyn FsmSnapshot>, FsmError> {
        Err("not supported".into())
    }
    fn restore(&mut self, _snapshot: &mut dyn std::io::Read) -> Result<(), FsmError> {
        Ok(())
    }
}

/// Polls `condition` until it holds; panics with `what` if it does not within the hang guard.
fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let mut waited = Duration::ZERO;
    let step = Duration::from_millis(10);
    while !condition() {
        assert!(waited < HANG_GUARD, "timed out waiting for {what}");
        std::thread::sleep(step);
        waited += step;
    }
}

#[test]
fn single_node_applying_writes_reports_apply_commit_time_and_state() {
    let recorder = TestRecorder::default();
    let network = MemNetwork::new();
    let store = InmemStore::new();
    let mut config = Config::fast(NodeId(1));
    // Generous timeouts: a loaded test machine must not cost the node its leadership.
    config.heartbeat_timeout = Duration::from_millis(200);
    config.election_timeout = Duration::from_millis(200);
    config.leader_lease_timeout = Duration::from_millis(200);
    let raft = metrics::with_local_recorder(&recorder, || {
        Raft::new(
            config,
            Counting(0),
            store.clone(),
            store,
            InmemSnapshotStore::new(),
            network.transport(NodeId(1)),
        )
    })
    .expect("start");
    raft.bootstrap_cluster(Configuration::voters_with_default_addresses([NodeId(1)]))
        .wait()
        .expect("bootstrap");
    let mut changes = raft.leader_changes();
    while changes.current().leader != Some(NodeId(1)) {
        changes.wait_changed(T);
    }
    for i in 0..5 {
        raft.apply(format!("w{i}"), T).wait().expect("apply");
    }
    raft.apply_batch(vec![Bytes::from("b1"), Bytes::from("b2")], T)
        .wait()
        .expect("apply batch");
    raft.barrier(T).wait().expect("barrier");
    raft.verify_leader().wait().expect("verify leader");

    wait_for("raft.apply to count six calls", || {
        recorder.count(names::APPLY) >= 6
    });
    wait_for("raft.commitTime samples", || {
        recorder.count(names::COMMIT_TIME) > 0
    });
    wait_for("raft.barrier and raft.verify_leader", || {
        recorder.count(names::BARRIER) >= 1 && recorder.count(names::VERIFY_LEADER) >= 1
    });
    wait_for("the applied index gauge to reach the barrier", || {
        recorder.last(names::APPLIED_INDEX) >= raft.applied_index().0 as f64
            && raft.applied_index().0 > 0
    });
    assert_eq!(
        recorder.count(names::APPLY),
        6,
        "one per call, not per entry"
    );
    assert!(recorder.count(names::STATE_LEADER) >= 1);
    assert!(recorder.count(names::LEADER_DISPATCH_LOG) > 0);
    assert!(recorder.count(names::FSM_APPLY_BATCH) > 0);
    assert!(recorder.count(names::FSM_APPLY) > 0);
    assert!(recorder.last(names::COMMIT_INDEX) > 0.0);
    assert!(recorder.last(names::COMMIT_TIME) >= 0.0);
    assert_eq!(recorder.last(names::PEERS), 1.0);
    assert_eq!(
        recorder.labels(names::APPLY),
        vec![("node_id".to_string(), "1".to_string())]
    );
    let _ = raft.shutdown().wait();
}

#[test]
fn a_node_without_a_recorder_runs_as_usual() {
    // The facade's no-op recorder: nothing to observe, the node must simply work.
    let network = MemNetwork::new();
    let store = InmemStore::new();
    let raft = Raft::new(
        Config::fast(NodeId(1)),
        Counting(0),
        store.clone(),
        store,
        InmemSnapshotStore::new(),
        network.transport(NodeId(1)),
    )
    .expect("start");
    raft.bootstrap_cluster(Configuration::voters_with_default_addresses([NodeId(1)]))
        .wait()
        .expect("bootstrap");
    let mut changes = raft.leader_changes();
    while changes.current().leader != Some(NodeId(1)) {
        changes.wait_changed(T);
    }
    let applied = raft.apply("x", T).wait().expect("apply");
    assert_eq!(applied.response, Bytes::from("1"));
    let _ = raft.shutdown().wait();
}
