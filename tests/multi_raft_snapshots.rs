//! Snapshots of many groups on one node share the node's few snapshot threads
//! (`MultiRaftConfig::snapshot_threads`): every group persists its own snapshot, and a new
//! replica of every group catches up by InstallSnapshot, with no more snapshot threads than
//! configured. One test in a binary of its own: it counts the process's threads.

mod node_support;

use bytes::Bytes;
use node_support::{resolve, test_config, wait_until, RecordingFsm};
use ringraft::{MultiRaft, MultiRaftConfig, Raft, RaftState};
use ringraft_net::memory::MemNetwork;
use ringraft_storage::{Configuration, GroupId, Index, InmemSnapshotStore, InmemStore, NodeId};
use std::sync::atomic::Ordering;
use std::time::Duration;

const T: Duration = Duration::from_secs(5);
const GROUPS: u64 = 24;
const THREADS_PER_NODE: usize = 2;

/// Threads of this process named as snapshot threads are.
fn snapshot_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("/proc/self/task")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("ringraft-snaps"))
        .count()
}

fn group_config(id: NodeId) -> ringraft::Config {
    let mut c = test_config(id);
    // Only the snapshots taken here, and no entries kept behind them: a new replica must be
    // sent the snapshot.
    c.snapshot_threshold = 1 << 40;
    c.trailing_logs = 0;
    c
}

fn add(node: &MultiRaft, g: u64, fsm: RecordingFsm) -> Raft {
    node.add_group(
        GroupId(g),
        group_config(node.id()),
        fsm,
        InmemStore::new(),
        InmemStore::new(),
        InmemSnapshotStore::new(),
    )
    .expect("group")
}

#[test]
fn many_groups_snapshot_and_install_on_a_few_shared_threads() {
    let network = MemNetwork::new();
    let config = MultiRaftConfig {
        snapshot_threads: THREADS_PER_NODE,
        ping_interval: Duration::from_millis(20),
        silence_timeout: Duration::from_millis(200),
        ..MultiRaftConfig::default()
    };
    let nodes: Vec<MultiRaft> = (1..=3)
        .map(|id| MultiRaft::new(network.transport(NodeId(id)), config.clone()).expect("node"))
        .collect();
    let pair = Configuration::voters_with_default_addresses([NodeId(1), NodeId(2)]);
    struct Group {
        members: Vec<Raft>,
        third: Raft,
        third_fsm: RecordingFsm,
    }
    let groups: Vec<Group> = (1..=GROUPS)
        .map(|g| {
            let members: Vec<Raft> = nodes[..2]
                .iter()
                .map(|node| {
                    let raft = add(node, g, RecordingFsm::new());
                    resolve("bootstrap", raft.bootstrap_cluster(pair.clone())).expect("bootstrap");
                    raft
                })
                .collect();
            let third_fsm = RecordingFsm::new();
            let shared_fsm = RecordingFsm {
                applied: third_fsm.applied.clone(),
                restores: third_fsm.restores.clone(),
            };
            let third = add(&nodes[2], g, shared_fsm);
            Group {
                members,
                third,
                third_fsm,
            }
        })
        .collect();
    let leader = |group: &Group| -> usize {
        wait_until("a leader", || {
            group.members.iter().any(|r| r.state() == RaftState::Leader)
        });
        group
            .members
            .iter()
            .position(|r| r.state() == RaftState::Leader)
            .expect("leader")
    };
    // The first groups' snapshots are larger than a chunk (1 MiB), so they travel in several
    // chunks, which the new replica's pool thread must write in order.
    let command = |g: u64, i: usize| -> Bytes {
        let size = if g <= 4 { 300_000 } else { 16 };
        Bytes::from(vec![(g as u8) ^ (i as u8); size])
    };
    for (g, group) in (1..).zip(&groups) {
        let l = &group.members[leader(group)];
        for i in 0..5 {
            resolve("apply", l.apply(command(g, i), T)).expect("apply");
        }
        let meta = resolve("snapshot", l.snapshot()).expect("snapshot");
        assert!(meta.last.index >= Index(5), "{meta:?}");
    }
    // Every group's new replica catches up from its leader's snapshot.
    for group in &groups {
        let l = &group.members[leader(group)];
        resolve("add voter", l.add_voter(NodeId(3), "n3", Index(0), T)).expect("add voter");
    }
    for (g, group) in (1..).zip(&groups) {
        let expected: Vec<Bytes> = (0..5).map(|i| command(g, i)).collect();
        wait_until("the new replica restored the snapshot", || {
            group.third_fsm.restores.load(Ordering::SeqCst) >= 1
                && *group.third_fsm.applied.lock().unwrap() == expected
        });
    }
    let threads = snapshot_threads();
    assert!(
        threads <= 3 * THREADS_PER_NODE,
        "{threads} snapshot threads for {GROUPS} groups on 3 nodes"
    );
    assert!(threads >= 1, "the snapshot threads are named differently");
    for group in &groups {
        for raft in group.members.iter().chain([&group.third]) {
            raft.shutdown().wait().expect("shutdown");
        }
    }
}
