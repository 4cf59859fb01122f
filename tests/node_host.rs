//! Several nodes on one shard thread (`ShardHost`, `Raft::new_on`) and state machines on the
//! shard thread (`ApplyPlacement::ShardThread`): the same guarantees as the default layout —
//! replication with the state machine's responses, failover, snapshots and InstallSnapshot,
//! user restore, shutdown.

mod node_support;

use bytes::{BufMut, Bytes};
use node_support::{commands, resolve, test_config, wait_until, TestCluster};
use ringraft::{Config, ShardHost};
use ringraft_storage::{Index, LogStore, NodeId};
use std::sync::atomic::Ordering;
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

fn inline(id: NodeId) -> Config {
    let mut c = test_config(id);
    c.apply_placement = ringraft::ApplyPlacement::ShardThread;
    c.trailing_logs = 5;
    c
}

fn others(leader: NodeId) -> Vec<NodeId> {
    (1..=3).map(NodeId).filter(|n| *n != leader).collect()
}

/// A lease timeout (250 ms) shorter than the stall below, heartbeat and election timeouts
/// (1 s) longer than it.
fn stall_config(id: NodeId) -> Config {
    let mut c = inline(id);
    c.heartbeat_timeout = Duration::from_millis(1000);
    c.election_timeout = Duration::from_millis(1000);
    c.leader_lease_timeout = Duration::from_millis(250);
    c
}

#[test]
fn a_stall_of_the_shared_thread_does_not_depose_its_leader() {
    let cluster = TestCluster::on_host(3, stall_config);
    let leader = cluster.wait_leader();
    let raft = cluster.raft(leader);
    let term = raft.current_term();
    // The first state machine to apply this blocks the one thread every node runs on for
    // 500 ms: longer than the lease timeout, shorter than an election timeout. When the thread
    // runs again, the leader's tick comes before its followers have answered anything.
    raft.apply(Bytes::from_static(b"stall-ms:500:host"), T)
        .wait()
        .expect("apply the stalling command");
    std::thread::sleep(Duration::from_millis(300));
    for c in commands("after", 5) {
        raft.apply(c, T)
            .wait()
            .expect("the same leader takes writes");
    }
    assert_eq!(raft.current_term(), term, "no election followed the stall");
    assert_eq!(raft.leader(), Some(leader));
}

#[test]
fn nodes_sharing_one_thread_replicate_and_fail_over() {
    let mut cluster = TestCluster::on_host(3, inline);
    let leader = cluster.wait_leader();
    let mut expected = commands("a", 50);
    for (i, c) in expected.iter().enumerate() {
        let applied = cluster
            .raft(leader)
            .apply(c.clone(), T)
            .wait()
            .expect("apply");
        // The state machine's response (commands applied so far), from the shard thread.
        assert_eq!(applied.response, Bytes::from((i + 1).to_string()));
    }
    cluster.wait_applied_everywhere(&expected);
    // The leader stops; the other two, still on the shared thread, elect one and go on.
    cluster.stop(leader);
    let rest = others(leader);
    let next = cluster.wait_leader_among(&rest);
    for c in commands("b", 10) {
        cluster
            .raft(next)
            .apply(c.clone(), T)
            .wait()
            .expect("apply");
        expected.push(c);
    }
    for id in &rest {
        cluster.wait_applied(*id, &expected);
    }
    // It comes back on the same host and catches up.
    cluster.start(leader);
    cluster.wait_applied(leader, &expected);
    cluster.shutdown_all();
}

#[test]
fn inline_state_machines_snapshot_and_install_snapshots() {
    let mut cluster = TestCluster::on_host(3, inline);
    let leader = cluster.wait_leader();
    let lagging = others(leader)[0];
    cluster.stop(lagging);
    let expected = commands("snap", 40);
    for c in &expected {
        cluster
            .raft(leader)
            .apply(c.clone(), T)
            .wait()
            .expect("apply");
    }
    let meta = resolve("snapshot", cluster.raft(leader).snapshot()).expect("snapshot");
    assert!(meta.last.index >= Index(40));
    let leader_log = &cluster.stores[leader.0 as usize - 1].log;
    wait_until("compaction", || leader_log.first_index() > Index(20));
    cluster.start(lagging);
    cluster.wait_applied(lagging, &expected);
    let i = lagging.0 as usize - 1;
    assert!(cluster.stores[i].restores.load(Ordering::SeqCst) >= 1);
}

#[test]
fn a_user_restore_applies_inline_on_every_node() {
    let cluster = TestCluster::on_host(3, inline);
    let leader = cluster.wait_leader();
    cluster.raft(leader).apply("old", T).wait().expect("apply");
    let restored = vec![Bytes::from("r1"), Bytes::from("r2")];
    let mut data = Vec::new();
    for c in &restored {
        data.put_u32_le(c.len() as u32);
        data.put_slice(c);
    }
    resolve(
        "restore",
        cluster.raft(leader).restore(std::io::Cursor::new(data), T),
    )
    .expect("restore");
    cluster.raft(leader).apply("new", T).wait().expect("apply");
    let mut expected = restored;
    expected.push(Bytes::from("new"));
    cluster.wait_applied_everywhere(&expected);
}

#[test]
fn the_host_thread_outlives_its_handle_until_its_nodes_shut_down() {
    let mut cluster = TestCluster::on_host(3, inline);
    let leader = cluster.wait_leader();
    // Dropping the cluster's handle keeps the nodes running.
    cluster.host = None;
    cluster
        .raft(leader)
        .apply("still", T)
        .wait()
        .expect("apply");
    cluster.shutdown_all();
    // A host with no nodes starts and stops cleanly.
    drop(ShardHost::new(None, true).expect("host"));
}

#[test]
fn a_transport_that_needs_io_is_refused_by_a_host_without_it() {
    use ringraft::{Raft, StartError, TcpTransportConfig};
    use ringraft_net::handshake::ClusterId;
    use ringraft_net::tcp::TcpConfig;
    let host = ShardHost::new(None, false).expect("host");
    let log = ringraft_storage::InmemStore::new();
    let address = "127.0.0.1:0".parse().expect("address");
    let tcp = TcpConfig::new(NodeId(1), ClusterId(7), address);
    let started = Raft::new_on(
        &host,
        test_config(NodeId(1)),
        node_support::RecordingFsm::new(),
        log.clone(),
        log,
        ringraft_storage::InmemSnapshotStore::new(),
        TcpTransportConfig::new(tcp),
    );
    assert!(
        matches!(&started, Err(StartError::Transport(why)) if why.contains("I/O driver")),
        "{:?}",
        started.as_ref().err()
    );
}

/// A snapshot store whose sinks take `delay` per write call (a slow disk or network volume).
#[derive(Clone)]
struct SlowSnapshotStore {
    inner: ringraft_storage::InmemSnapshotStore,
    delay: Duration,
}

struct SlowSink {
    inner: Box<dyn ringraft_storage::SnapshotSink>,
    delay: Duration,
}

impl std::io::Write for SlowSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::thread::sleep(self.delay);
        self.inner.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl ringraft_storage::SnapshotSink for SlowSink {
    fn id(&self) -> &str {
        self.inner.id()
    }

    fn commit(
        self: Box<Self>,
    ) -> Result<ringraft_storage::SnapshotMeta, ringraft_storage::SnapshotError> {
        self.inner.commit()
    }

    fn cancel(self: Box<Self>) -> Result<(), ringraft_storage::SnapshotError> {
        self.inner.cancel()
    }
}

impl ringraft_storage::SnapshotStore for SlowSnapshotStore {
    fn create(
        &self,
        last: ringraft_storage::LogId,
        configuration: &ringraft_storage::Configuration,
        configuration_index: Index,
    ) -> Result<Box<dyn ringraft_storage::SnapshotSink>, ringraft_storage::SnapshotError> {
        let inner = self
            .inner
            .create(last, configuration, configuration_index)?;
        Ok(Box::new(SlowSink {
            inner,
            delay: self.delay,
        }))
    }

    fn list(&self) -> Result<Vec<ringraft_storage::SnapshotMeta>, ringraft_storage::SnapshotError> {
        self.inner.list()
    }

    fn open(
        &self,
        id: &str,
    ) -> Result<
        (
            ringraft_storage::SnapshotMeta,
            Box<dyn std::io::Read + Send>,
        ),
        ringraft_storage::SnapshotError,
    > {
        self.inner.open(id)
    }
}

/// The shard thread never waits on a snapshot store: two nodes of different groups share one
/// `ShardHost`; one installs a large snapshot through a store that takes 300 ms per write,
/// while the other keeps committing. The second one's commits stay fast throughout (an earlier
/// version wrote snapshot chunks on the shard thread, stalling every node on it).
#[test]
#[allow(clippy::disallowed_methods)] // It measures the wall-clock latency of commits.
fn a_slow_snapshot_install_does_not_stall_another_group_on_the_same_shard() {
    use ringraft::{Raft, RaftState};
    use ringraft_net::memory::MemNetwork;
    use ringraft_storage::{Configuration, InmemSnapshotStore, InmemStore, Server};
    let host = ShardHost::new(None, false).expect("host");
    let (n1, n2) = (NodeId(1), NodeId(2));
    let single = |id: NodeId| Configuration::new(vec![Server::voter(id, format!("n{}", id.0))]);
    // Group B: one voter on the host, committing all along.
    let net_b = MemNetwork::new();
    let store_b = InmemStore::new();
    let b = Raft::new_on(
        &host,
        test_config(n1),
        node_support::RecordingFsm::new(),
        store_b.clone(),
        store_b,
        InmemSnapshotStore::new(),
        net_b.transport(n1),
    )
    .expect("start B");
    resolve("bootstrap B", b.bootstrap_cluster(single(n1))).expect("bootstrap");
    wait_until("B leads", || b.state() == RaftState::Leader);
    // Group A: a leader on its own thread with a large, compacted log...
    let net_a = MemNetwork::new();
    let mut config = test_config(n1);
    config.trailing_logs = 10;
    let store_a1 = InmemStore::new();
    let a1 = Raft::new(
        config,
        node_support::RecordingFsm::new(),
        store_a1.clone(),
        store_a1,
        InmemSnapshotStore::new(),
        net_a.transport(n1),
    )
    .expect("start A1");
    resolve("bootstrap A", a1.bootstrap_cluster(single(n1))).expect("bootstrap");
    wait_until("A1 leads", || a1.state() == RaftState::Leader);
    let payload = Bytes::from(vec![7u8; 4096]);
    for _ in 0..800 {
        a1.apply(payload.clone(), T).wait().expect("apply");
    }
    let meta = resolve("snapshot", a1.snapshot()).expect("snapshot");
    // ...and a new member on the host, whose snapshot store is slow.
    let fsm_a2 = node_support::RecordingFsm::new();
    let applied_a2 = fsm_a2.applied.clone();
    let store_a2 = InmemStore::new();
    let a2 = Raft::new_on(
        &host,
        test_config(n2),
        fsm_a2,
        store_a2.clone(),
        store_a2,
        SlowSnapshotStore {
            inner: InmemSnapshotStore::new(),
            delay: Duration::from_millis(300),
        },
        net_a.transport(n2),
    )
    .expect("start A2");
    let join = a1.add_nonvoter(n2, "n2", Index(0), T);
    // B commits one write after another until A2 has installed the snapshot.
    let mut latencies = Vec::new();
    let started = std::time::Instant::now();
    while applied_a2.lock().unwrap().len() < 800 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "A2 never caught up"
        );
        let at = std::time::Instant::now();
        b.apply("b", T).wait().expect("B applies");
        latencies.push(at.elapsed());
    }
    resolve("A2 joins", join).expect("the join commits");
    // The state machine holds the snapshot a moment before the node publishes its applied
    // index (the apply loop does that after `restore` returns).
    wait_until("A2 publishes the restored index", || {
        a2.applied_index() >= meta.last.index
    });
    latencies.sort();
    let p99 = latencies[latencies.len() * 99 / 100];
    let max = latencies[latencies.len() - 1];
    assert!(
        latencies.len() > 100,
        "B committed only {} writes while A2 installed a snapshot over {:?}",
        latencies.len(),
        started.elapsed()
    );
    assert!(
        p99 < Duration::from_millis(50) && max < Duration::from_millis(250),
        "B's commits stalled behind A2's snapshot: p99 {p99:?}, max {max:?} over {} writes",
        latencies.len()
    );
    let _ = a2.shutdown().wait();
    let _ = a1.shutdown().wait();
    let _ = b.shutdown().wait();
}
