//! Snapshots across nodes: a follower that fell behind a compacted log catches up through
//! InstallSnapshot; a node restarts from its snapshot.

mod node_support;

use bytes::Bytes;
use node_support::{commands, wait_until, TestCluster};
use ringraft::Config;
use ringraft_storage::{Index, LogStore, NodeId};
use std::sync::atomic::Ordering;
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

fn small_trailing(id: NodeId) -> Config {
    let mut c = node_support::test_config(id);
    c.trailing_logs = 5;
    c
}

#[test]
fn a_follower_behind_the_compacted_log_catches_up_by_install_snapshot() {
    let mut cluster = TestCluster::with_config(3, small_trailing);
    let leader = cluster.wait_leader();
    let lagging = (1..=3)
        .map(NodeId)
        .find(|n| *n != leader)
        .expect("a follower");
    cluster.stop(lagging);
    let expected = commands("snap", 60);
    for c in &expected {
        cluster
            .raft(leader)
            .apply(c.clone(), T)
            .wait()
            .expect("apply");
    }
    let meta = cluster.raft(leader).snapshot().wait().expect("snapshot");
    assert!(meta.last.index >= Index(60));
    let leader_log = &cluster.stores[leader.0 as usize - 1].log;
    wait_until("the leader's log to be compacted", || {
        leader_log.first_index() > Index(30)
    });
    cluster.start(lagging);
    wait_until("the lagging follower to catch up", || {
        cluster.applied(lagging).len() >= expected.len()
    });
    assert_eq!(cluster.applied(lagging), expected);
    let i = lagging.0 as usize - 1;
    assert!(
        cluster.stores[i].restores.load(Ordering::SeqCst) >= 1,
        "caught up by a snapshot"
    );
    // It keeps replicating after the snapshot.
    cluster
        .raft(leader)
        .apply("after", T)
        .wait()
        .expect("apply");
    wait_until("the follower to apply past the snapshot", || {
        cluster.applied(lagging).last() == Some(&Bytes::from("after"))
    });
}

#[test]
fn a_node_restarts_from_its_snapshot_and_the_log_after_it() {
    let mut cluster = TestCluster::with_config(1, small_trailing);
    let id = cluster.wait_leader();
    let mut expected = commands("a", 30);
    for c in &expected {
        cluster.raft(id).apply(c.clone(), T).wait().expect("apply");
    }
    cluster.raft(id).snapshot().wait().expect("snapshot");
    for c in commands("b", 5) {
        cluster.raft(id).apply(c.clone(), T).wait().expect("apply");
        expected.push(c);
    }
    cluster.stop(id);
    cluster.start(id);
    cluster.wait_leader();
    cluster.raft(id).barrier(T).wait().expect("barrier");
    assert_eq!(cluster.stores[0].restores.load(Ordering::SeqCst), 1);
    assert_eq!(cluster.applied(id), expected);
}

#[test]
fn a_user_snapshot_can_be_opened_and_restored_elsewhere() {
    use ringraft::Fsm;
    let cluster = TestCluster::new(1);
    let id = cluster.wait_leader();
    let expected = commands("open", 12);
    for c in &expected {
        cluster.raft(id).apply(c.clone(), T).wait().expect("apply");
    }
    let meta = cluster.raft(id).snapshot().wait().expect("snapshot");
    let (opened, mut reader) = cluster.raft(id).open_snapshot(&meta).expect("open");
    assert_eq!(opened.last, meta.last);
    let mut elsewhere = node_support::RecordingFsm::new();
    elsewhere.restore(&mut reader).expect("restore");
    assert_eq!(*elsewhere.applied.lock().unwrap(), expected);
    let mut missing = meta.clone();
    missing.id = "no-such-snapshot".into();
    assert!(cluster.raft(id).open_snapshot(&missing).is_err());
}

/// A snapshot requested after an apply future resolved covers that write (hashicorp orders
/// snapshots with applies), and so does the snapshot opened from its metadata; asked again
/// and again, right after each write.
#[test]
fn a_snapshot_after_an_acknowledged_apply_covers_it() {
    use ringraft::Fsm;
    let inline: fn(NodeId) -> Config = |id| {
        let mut c = node_support::test_config(id);
        c.apply_placement = ringraft::ApplyPlacement::ShardThread;
        c
    };
    let own_thread: fn(NodeId) -> Config = |id| {
        let mut c = node_support::test_config(id);
        c.apply_placement = ringraft::ApplyPlacement::OwnThread;
        c
    };
    for configure in [node_support::test_config, inline, own_thread] {
        let cluster = TestCluster::with_config(1, configure);
        let id = cluster.wait_leader();
        let raft = cluster.raft(id);
        let mut written = Vec::new();
        for i in 0..30 {
            let command = Bytes::from(format!("w{i}"));
            let applied = raft.apply(command.clone(), T).wait().expect("apply");
            written.push(command);
            let meta = raft
                .snapshot()
                .wait()
                .unwrap_or_else(|e| panic!("snapshot after write {i}: {e}"));
            assert!(
                meta.last.index >= applied.index,
                "{meta:?} misses {applied:?}"
            );
            let (_, mut reader) = raft.open_snapshot(&meta).expect("open");
            let mut copy = node_support::RecordingFsm::new();
            copy.restore(&mut reader).expect("restore");
            assert_eq!(*copy.applied.lock().unwrap(), written);
        }
    }
}

/// The documented difference from hashicorp: with no command applied, a snapshot still
/// covers the bootstrap configuration and the leader's no-op; asked again with nothing new,
/// it fails with `NothingNewToSnapshot`.
#[test]
fn a_cluster_with_no_commands_snapshots_its_configuration_and_no_op() {
    let cluster = TestCluster::new(1);
    let id = cluster.wait_leader();
    let raft = cluster.raft(id);
    wait_until("the no-op to apply", || raft.applied_index() >= Index(2));
    let meta = raft.snapshot().wait().expect("snapshot");
    assert_eq!(meta.last.index, Index(2));
    assert_eq!(
        raft.snapshot().wait(),
        Err(ringraft::TakeSnapshotError::NothingNewToSnapshot)
    );
}
