//! Several nodes on one shard thread (`ShardHost`, `Raft::new_on`) and state machines on the
//! shard thread (`Config::apply_on_shard_thread`): the same guarantees as the default layout —
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
    c.apply_on_shard_thread = true;
    c.trailing_logs = 5;
    c
}

fn others(leader: NodeId) -> Vec<NodeId> {
    (1..=3).map(NodeId).filter(|n| *n != leader).collect()
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
