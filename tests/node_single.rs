//! A single node: bootstrap, election, every request kind, snapshots, shutdown.

mod node_support;

use bytes::Bytes;
use node_support::{commands, wait_until, TestCluster, HANG_GUARD};
use ringraft::{
    ApplyError, BootstrapClusterError, Config, RaftState, ReadError, TakeSnapshotError,
};
use ringraft_storage::{Configuration, Index, NodeId};
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

#[test]
fn single_node_elects_itself_and_applies_with_the_fsm_response() {
    let cluster = TestCluster::new(1);
    let id = cluster.wait_leader();
    let raft = cluster.raft(id);
    assert_eq!(raft.state(), RaftState::Leader);
    assert_eq!(raft.leader(), Some(NodeId(1)));
    assert!(raft.current_term().0 >= 1);

    let first = raft.apply("a", T).wait().expect("apply");
    assert_eq!(first.response, Bytes::from("1"));
    let second = raft.apply("b", T).wait().expect("apply");
    assert_eq!(second.response, Bytes::from("2"));
    assert!(second.index > first.index);

    let batch = raft
        .apply_batch(vec![Bytes::from("c"), Bytes::from("d")], T)
        .wait()
        .expect("batch");
    assert_eq!(batch.responses, vec![Bytes::from("3"), Bytes::from("4")]);
    assert_eq!(batch.last.0, batch.first.0 + 1);
    assert_eq!(
        raft.apply_batch(Vec::new(), T).wait(),
        Err(ApplyError::EmptyBatch)
    );

    let barrier = raft.barrier(T).wait().expect("barrier");
    assert!(barrier > batch.last);
    assert!(raft.applied_index() >= barrier);
    raft.verify_leader().wait().expect("verify leader");
    let read = raft.read_index(T).wait().expect("read index");
    assert!(raft.applied_index() >= read);
    assert_eq!(raft.lease_read(T).wait(), Err(ReadError::LeaseReadDisabled));
    assert!(raft.commit_index() >= barrier);
    assert!(raft.last_index() >= barrier);
    assert_eq!(
        cluster.applied(id),
        commands("x", 0)
            .into_iter()
            .chain(["a", "b", "c", "d"].map(Bytes::from))
            .collect::<Vec<_>>()
    );
    let (index, configuration) = raft.configuration();
    assert_eq!(index, Index(1));
    assert!(configuration.is_voter(NodeId(1)));
}

#[test]
fn bootstrap_is_refused_on_a_node_with_state() {
    let cluster = TestCluster::new(1);
    cluster.wait_leader();
    let again = cluster
        .raft(NodeId(1))
        .bootstrap_cluster(Configuration::voters_with_default_addresses([NodeId(1)]))
        .wait();
    assert_eq!(again, Err(BootstrapClusterError::CantBootstrap));
}

#[test]
fn user_snapshot_compacts_and_a_second_one_has_nothing_new() {
    fn config(id: NodeId) -> Config {
        let mut c = node_support::test_config(id);
        c.trailing_logs = 2;
        c
    }
    let cluster = TestCluster::with_config(1, config);
    let raft = cluster.raft(cluster.wait_leader());
    for c in commands("s", 20) {
        raft.apply(c, T).wait().expect("apply");
    }
    let meta = raft.snapshot().wait().expect("snapshot");
    assert!(meta.last.index >= Index(20));
    assert_eq!(
        raft.snapshot().wait(),
        Err(TakeSnapshotError::NothingNewToSnapshot)
    );
    let stores = &cluster.stores[0];
    use ringraft_storage::{LogStore, SnapshotStore};
    assert_eq!(stores.snapshots.list().expect("list").len(), 1);
    wait_until("the log to be compacted", || {
        stores.log.first_index() > Index(10)
    });
}

#[test]
fn automatic_snapshots_happen_past_the_threshold() {
    fn config(id: NodeId) -> Config {
        let mut c = node_support::test_config(id);
        c.snapshot_threshold = 10;
        c.snapshot_interval = Duration::from_millis(5);
        c.trailing_logs = 0;
        c
    }
    let cluster = TestCluster::with_config(1, config);
    let raft = cluster.raft(cluster.wait_leader());
    for c in commands("auto", 30) {
        raft.apply(c, T).wait().expect("apply");
    }
    use ringraft_storage::SnapshotStore;
    wait_until("an automatic snapshot", || {
        cluster.stores[0]
            .snapshots
            .list()
            .is_ok_and(|l| l.first().is_some_and(|m| m.last.index >= Index(10)))
    });
}

/// The memory tests' settings: a snapshot after 20 entries, the periodic check an hour away
/// (only the log's memory can start one), and `memory` bytes of log held in memory.
fn memory_config(id: NodeId, memory: u64, trailing_logs: u64) -> Config {
    let mut c = node_support::test_config(id);
    c.snapshot_threshold = 20;
    c.snapshot_interval = Duration::from_secs(3600);
    c.snapshot_memory_threshold = memory;
    c.trailing_logs = trailing_logs;
    c
}

/// Applies commands `range`, each of `bytes` bytes.
fn write(raft: &ringraft::Raft, range: std::ops::Range<usize>, bytes: usize) {
    for i in range {
        let command = Bytes::from(vec![b'0' + (i % 10) as u8; bytes]);
        raft.apply(command, T).wait().expect("apply");
    }
}

/// The last index of the node's newest stored snapshot.
fn newest_snapshot(cluster: &TestCluster) -> Option<Index> {
    use ringraft_storage::SnapshotStore;
    let list = cluster.stores[0].snapshots.list().expect("list snapshots");
    list.first().map(|m| m.last.index)
}

#[test]
fn a_full_log_in_memory_starts_a_snapshot_before_the_next_check() {
    fn on(id: NodeId) -> Config {
        memory_config(id, 32 << 10, 5)
    }
    fn off(id: NodeId) -> Config {
        memory_config(id, 0, 5)
    }
    // 40 entries of 1 KiB pass 32 KiB of log held in memory and the 20-entry threshold.
    let cluster = TestCluster::with_config(1, on);
    let raft = cluster.raft(cluster.wait_leader());
    write(raft, 0..40, 1024);
    wait_until("a snapshot started by the log's memory", || {
        newest_snapshot(&cluster).is_some_and(|i| i >= Index(20))
    });
    // Compacted behind it, keeping the trailing entries.
    wait_until("the log compacted", || {
        raft.stats()
            .get("last_snapshot_index")
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|i| i >= 20)
    });

    // A snapshot would have started in the turn that applied the last write.
    let settle = || std::thread::sleep(Duration::from_millis(100));
    // Off (0): nothing starts before the check, however large the log.
    let cluster = TestCluster::with_config(1, off);
    write(cluster.raft(cluster.wait_leader()), 0..40, 1024);
    settle();
    assert_eq!(
        newest_snapshot(&cluster),
        None,
        "a threshold of 0 started one"
    );

    // On, past 32 KiB but short of `snapshot_threshold` entries: nothing yet; past both, one.
    let cluster = TestCluster::with_config(1, on);
    let raft = cluster.raft(cluster.wait_leader());
    write(raft, 0..12, 4096);
    settle();
    assert_eq!(
        newest_snapshot(&cluster),
        None,
        "48 KiB in 14 entries, under the 20-entry threshold"
    );
    write(raft, 12..20, 4096);
    wait_until("a snapshot once the entry threshold is met too", || {
        newest_snapshot(&cluster).is_some()
    });
}

#[test]
fn the_log_s_memory_waits_for_the_entry_threshold_after_any_snapshot() {
    // Entries kept behind a snapshot (here all of them) may hold the log over its memory
    // threshold right after the snapshot: the memory starts none before `snapshot_threshold`
    // more entries.
    fn config(id: NodeId) -> Config {
        memory_config(id, 32 << 10, 1000)
    }
    let cluster = TestCluster::with_config(1, config);
    let raft = cluster.raft(cluster.wait_leader());
    write(raft, 0..10, 4096);
    let user = raft.snapshot().wait().expect("a user snapshot");
    // 10 entries more: 22 since the start, 10 since the user's snapshot, 80 KiB held.
    write(raft, 10..20, 4096);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        newest_snapshot(&cluster),
        Some(user.last.index),
        "no snapshot after the user's yet"
    );
    write(raft, 20..30, 4096);
    wait_until("a snapshot 20 entries after the user's", || {
        newest_snapshot(&cluster).is_some_and(|i| i > user.last.index)
    });
}

#[test]
fn a_snapshot_the_log_s_memory_started_is_not_retried_every_turn_when_it_fails() {
    use ringraft::{Fsm, FsmError, FsmSnapshot};
    use ringraft_storage::{Entry, InmemSnapshotStore};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Applies nothing of note; every snapshot fails, and is counted.
    struct Unsnapshottable(Arc<AtomicUsize>);
    impl Fsm for Unsnapshottable {
        fn apply(&mut self, _entry: &Entry) -> Bytes {
            Bytes::new()
        }
        fn snapshot(&mut self) -> Result<Box<dyn FsmSnapshot>, FsmError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Err("this state machine cannot snapshot".into())
        }
        fn restore(&mut self, _snapshot: &mut dyn std::io::Read) -> Result<(), FsmError> {
            Ok(())
        }
    }

    let attempts = Arc::new(AtomicUsize::new(0));
    let raft = node_support::start_single_with(
        memory_config(NodeId(1), 32 << 10, 10_240),
        Unsnapshottable(attempts.clone()),
        InmemSnapshotStore::new(),
    );
    // 60 commands of 1 KiB, each followed by a barrier (an entry too): the log passes 32 KiB
    // near its 57th entry and ends near its 122nd, so about 4 attempts, one per 20 entries.
    // Retried every turn instead, it made 66.
    for i in 0..60 {
        raft.apply(Bytes::from(vec![b'a' + (i % 26) as u8; 1024]), T)
            .wait()
            .expect("apply");
        raft.barrier(T).wait().expect("barrier");
    }
    let tried = attempts.load(Ordering::SeqCst);
    assert!(
        (1..=6).contains(&tried),
        "a failing snapshot started by memory is retried once per 20 entries, not per turn: \
         {tried} attempts"
    );
    raft.shutdown().wait().expect("shutdown");
}

#[test]
fn shutdown_is_idempotent_and_later_requests_fail_with_shutdown() {
    let cluster = TestCluster::new(1);
    let raft = cluster.raft(cluster.wait_leader()).clone();
    raft.shutdown().wait().expect("shutdown");
    raft.shutdown().wait().expect("second shutdown");
    assert_eq!(raft.state(), RaftState::Shutdown);
    assert_eq!(raft.apply("late", T).wait(), Err(ApplyError::Shutdown));
    assert_eq!(raft.barrier(T).wait(), Err(ApplyError::Shutdown));
    assert_eq!(raft.verify_leader().wait(), Err(ReadError::Shutdown));
    assert!(raft
        .leader_changes()
        .wait_changed(Duration::from_millis(1))
        .is_none());
}

#[test]
fn shutdown_with_requests_in_flight_resolves_every_future() {
    let cluster = TestCluster::new(1);
    let raft = cluster.raft(cluster.wait_leader()).clone();
    let mut futures = Vec::new();
    for c in commands("f", 2000) {
        futures.push(raft.apply(c, Duration::ZERO));
    }
    let barriers: Vec<_> = (0..10).map(|_| raft.barrier(Duration::ZERO)).collect();
    let _stopping = raft.shutdown();
    for mut f in futures {
        let result = f.wait_timeout(HANG_GUARD).expect("an apply future hung");
        assert!(
            matches!(
                result,
                Ok(_) | Err(ApplyError::Shutdown | ApplyError::LeadershipLost)
            ),
            "{result:?}"
        );
    }
    for mut b in barriers {
        b.wait_timeout(HANG_GUARD).expect("a barrier hung").ok();
    }
}

#[test]
fn futures_work_under_an_async_executor() {
    let cluster = TestCluster::new(1);
    let raft = cluster.raft(cluster.wait_leader()).clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let applied = runtime.block_on(async {
        let mut changes = raft.leader_changes();
        assert_eq!(changes.current().leader, Some(NodeId(1)));
        raft.apply("async", T).await
    });
    assert_eq!(applied.expect("apply").response, Bytes::from("1"));
}

#[test]
fn a_pinned_shard_runs_and_a_cpu_out_of_range_fails_the_start() {
    let pinned = |id: NodeId| {
        let mut c = node_support::test_config(id);
        c.shard_cpu = Some(0);
        c
    };
    let cluster = TestCluster::with_config(1, pinned);
    let id = cluster.wait_leader();
    cluster
        .raft(id)
        .apply("x", HANG_GUARD)
        .wait()
        .expect("apply");

    let mut config = node_support::test_config(NodeId(9));
    config.shard_cpu = Some(1 << 20);
    let store = ringraft_storage::InmemStore::new();
    let result = ringraft::Raft::new(
        config,
        node_support::RecordingFsm::new(),
        store.clone(),
        store,
        ringraft_storage::InmemSnapshotStore::new(),
        cluster.net.transport(NodeId(9)),
    );
    assert!(
        matches!(result, Err(ringraft::StartError::Thread(_))),
        "{result:?}"
    );
}

/// hashicorp's `LeaderCh` delivers `false` when a leader shuts down; the watch delivers "no
/// leader" before it closes.
#[test]
fn the_leader_watch_says_no_leader_before_it_closes_at_shutdown() {
    let cluster = TestCluster::new(1);
    let id = cluster.wait_leader();
    let raft = cluster.raft(id).clone();
    let mut changes = raft.leader_changes();
    assert_eq!(changes.current().leader, Some(id));
    let term = changes.current().term;
    raft.shutdown().wait().expect("shutdown");
    let last = changes.wait_changed(HANG_GUARD);
    assert_eq!(
        last,
        Some(ringraft::LeaderObservation { leader: None, term })
    );
    assert_eq!(changes.wait_changed(Duration::from_millis(10)), None);
}
