//! Restarting nodes from their stores: every acknowledged write survives.

mod node_support;

use bytes::Bytes;
use node_support::{commands, TestCluster};
use ringraft_storage::NodeId;
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

#[test]
fn a_restarted_cluster_has_every_acknowledged_write() {
    let mut cluster = TestCluster::new(3);
    let leader = cluster.wait_leader();
    let mut acknowledged = Vec::new();
    for c in commands("w", 100) {
        cluster
            .raft(leader)
            .apply(c.clone(), T)
            .wait()
            .expect("apply");
        acknowledged.push(c);
    }
    cluster.shutdown_all();
    for i in 1..=3 {
        cluster.start(NodeId(i));
    }
    let leader = cluster.wait_leader();
    // A barrier commits an entry of the new term, so everything before it is applied.
    cluster.raft(leader).barrier(T).wait().expect("barrier");
    cluster.wait_applied_everywhere(&acknowledged);
}

#[test]
fn a_restarted_single_node_recovers_its_log_and_keeps_going() {
    let mut cluster = TestCluster::new(1);
    let id = cluster.wait_leader();
    let first = commands("one", 10);
    for c in &first {
        cluster.raft(id).apply(c.clone(), T).wait().expect("apply");
    }
    let term = cluster.raft(id).current_term();
    cluster.stop(id);
    cluster.start(id);
    cluster.wait_leader();
    assert!(cluster.raft(id).current_term() > term);
    let applied = cluster.raft(id).apply("two", T).wait().expect("apply");
    assert_eq!(applied.response, Bytes::from("11"));
    let mut expected = first;
    expected.push(Bytes::from("two"));
    assert_eq!(cluster.applied(id), expected);
}
