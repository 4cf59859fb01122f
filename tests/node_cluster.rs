//! Three nodes on the in-memory network: election, replication, follower requests, concurrent
//! applies, barrier, verify-leader, leader failure.

mod node_support;

use bytes::Bytes;
use node_support::{commands, resolve, wait_until, TestCluster};
use ringraft::{ApplyError, RaftState, ReadError};
use ringraft_storage::{Index, NodeId};
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

#[test]
fn three_nodes_elect_one_leader_and_replicate_to_every_fsm() {
    let cluster = TestCluster::new(3);
    let leader = cluster.wait_leader();
    let raft = cluster.raft(leader);
    let expected = commands("r", 50);
    for c in &expected {
        raft.apply(c.clone(), T).wait().expect("apply");
    }
    cluster.wait_applied_everywhere(&expected);
    let leaders = cluster
        .running()
        .filter(|r| r.state() == RaftState::Leader)
        .count();
    assert_eq!(leaders, 1);
    for r in cluster.running() {
        assert_eq!(r.current_term(), raft.current_term());
    }
}

#[test]
fn apply_on_a_follower_fails_with_a_leader_hint() {
    let cluster = TestCluster::new(3);
    let leader = cluster.wait_leader();
    let follower = cluster
        .running()
        .find(|r| r.local_id() != leader)
        .expect("a follower");
    assert_eq!(
        follower.apply("x", T).wait(),
        Err(ApplyError::NotLeader {
            leader: Some(leader)
        })
    );
    assert_eq!(
        follower.barrier(T).wait(),
        Err(ApplyError::NotLeader {
            leader: Some(leader)
        })
    );
    assert_eq!(
        follower.verify_leader().wait(),
        Err(ReadError::NotLeader {
            leader: Some(leader)
        })
    );
}

#[test]
fn concurrent_applies_from_many_threads_all_commit_in_one_order() {
    let cluster = TestCluster::new(3);
    let raft = cluster.raft(cluster.wait_leader()).clone();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let raft = raft.clone();
            std::thread::spawn(move || {
                let mut indexes = Vec::new();
                for c in commands(&format!("t{t}"), 100) {
                    indexes.push(raft.apply(c, T).wait().expect("apply").index);
                }
                indexes
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in threads {
        let indexes = t.join().expect("client thread");
        assert!(
            indexes.windows(2).all(|w| w[0] < w[1]),
            "one client's writes in order"
        );
        all.extend(indexes);
    }
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 800, "every apply got its own index");
    let leader_applied = cluster.applied(raft.local_id());
    assert_eq!(leader_applied.len(), 800);
    cluster.wait_applied_everywhere(&leader_applied);
}

#[test]
fn barrier_and_verify_leader_on_the_leader() {
    let cluster = TestCluster::new(3);
    let raft = cluster.raft(cluster.wait_leader());
    let futures: Vec<_> = commands("b", 20)
        .into_iter()
        .map(|c| raft.apply(c, T))
        .collect();
    let barrier = raft.barrier(T).wait().expect("barrier");
    // Every entry before the barrier is applied on this node when the barrier resolves.
    assert_eq!(cluster.applied(raft.local_id()).len(), 20);
    assert!(raft.applied_index() >= barrier);
    for f in futures {
        assert!(f.wait().expect("apply").index < barrier);
    }
    raft.verify_leader().wait().expect("verify leader");
    let read = raft.read_index(T).wait().expect("read index");
    assert!(read >= barrier);
}

#[test]
fn verify_leader_fails_on_a_leader_cut_off_from_its_quorum() {
    let cluster = TestCluster::new(3);
    let leader = cluster.wait_leader();
    let others: Vec<NodeId> = (1..=3).map(NodeId).filter(|n| *n != leader).collect();
    cluster.net.partition(&[&[leader], &others]);
    let result = cluster.raft(leader).verify_leader().wait();
    assert!(
        matches!(
            result,
            Err(ReadError::LeadershipLost | ReadError::NotLeader { .. })
        ),
        "{result:?}"
    );
}

#[test]
fn verify_leader_succeeds_with_one_of_two_followers_cut_off() {
    let cluster = TestCluster::new(3);
    let leader = cluster.wait_leader();
    let raft = cluster.raft(leader);
    let others: Vec<NodeId> = (1..=3).map(NodeId).filter(|n| *n != leader).collect();
    cluster.net.partition(&[&[leader, others[0]], &[others[1]]]);
    // The leader and one follower are a quorum of three: leadership is confirmed, reads and
    // writes go on.
    resolve("verify_leader", raft.verify_leader()).expect("verify leader");
    let expected = commands("v", 5);
    let mut last = Index(0);
    for c in &expected {
        last = resolve("apply", raft.apply(c.clone(), T))
            .expect("apply")
            .index;
    }
    let read = resolve("read_index", raft.read_index(T)).expect("read index");
    assert!(
        read >= last,
        "read index {read} is behind the last write {last}"
    );
    assert_eq!(cluster.applied(leader), expected);
    assert_eq!(raft.state(), RaftState::Leader);
    cluster.net.heal();
    cluster.wait_applied_everywhere(&expected);
}

#[test]
fn a_new_leader_takes_over_when_the_leader_fails() {
    let mut cluster = TestCluster::new(3);
    let old = cluster.wait_leader();
    let before = commands("before", 10);
    for c in &before {
        cluster.raft(old).apply(c.clone(), T).wait().expect("apply");
    }
    cluster.stop(old);
    let new = cluster.wait_leader();
    assert_ne!(new, old);
    let after = commands("after", 10);
    for c in &after {
        cluster.raft(new).apply(c.clone(), T).wait().expect("apply");
    }
    let expected: Vec<Bytes> = before.into_iter().chain(after).collect();
    cluster.wait_applied_everywhere(&expected);
    // The old leader comes back as a follower and catches up.
    cluster.start(old);
    cluster.wait_leader();
    wait_until("the old leader to catch up", || {
        cluster.applied(old).len() >= expected.len()
    });
    assert_eq!(cluster.applied(old), expected);
}

#[test]
fn leader_changes_are_observed() {
    let mut cluster = TestCluster::new(3);
    let old = cluster.wait_leader();
    let survivor = (1..=3).map(NodeId).find(|n| *n != old).expect("survivor");
    let mut changes = cluster.raft(survivor).leader_changes();
    assert_eq!(changes.current().leader, Some(old));
    cluster.stop(old);
    let new = cluster.wait_leader();
    wait_until("the watch to report the new leader", || {
        changes.wait_changed(Duration::from_millis(50));
        changes.current().leader == Some(new)
    });
}
