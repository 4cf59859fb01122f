//! Observers (hashicorp's `RegisterObserver`): what they receive, filters, dropping with
//! counts, deregistering.

mod node_support;

use node_support::{test_config, wait_until, RecordingFsm, TestCluster};
use ringraft::{LeaderObservation, Observation, Observer, Raft, RaftState};
use ringraft_net::memory::MemNetwork;
use ringraft_storage::{Configuration, Index, InmemSnapshotStore, InmemStore, NodeId};
use std::sync::mpsc::{sync_channel, Receiver};
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

/// A single node that is not bootstrapped yet, so observers see its whole life.
fn fresh_node(network: &MemNetwork) -> Raft {
    let store = InmemStore::new();
    Raft::new(
        test_config(NodeId(1)),
        RecordingFsm::new(),
        store.clone(),
        store,
        InmemSnapshotStore::new(),
        network.transport(NodeId(1)),
    )
    .expect("start")
}

fn bootstrap(raft: &Raft) {
    raft.bootstrap_cluster(Configuration::voters_with_default_addresses([NodeId(1)]))
        .wait()
        .expect("bootstrap");
    wait_until("leadership", || raft.state() == RaftState::Leader);
}

/// Receives until `wanted` arrives (panics after the hang guard), returning all received.
fn receive_until(rx: &Receiver<Observation>, wanted: &Observation) -> Vec<Observation> {
    let mut seen = Vec::new();
    wait_until(&format!("observation {wanted:?}"), || {
        seen.extend(rx.try_iter());
        seen.contains(wanted)
    });
    seen
}

#[test]
fn observer_sees_state_leader_and_peer_changes() {
    let network = MemNetwork::new();
    let raft = fresh_node(&network);
    let (tx, rx) = sync_channel(1024);
    let observer = Observer::new(tx, true);
    raft.register_observer(observer.clone());
    bootstrap(&raft);

    let seen = receive_until(
        &rx,
        &Observation::Leader(LeaderObservation {
            leader: Some(NodeId(1)),
            term: raft.current_term(),
        }),
    );
    assert!(
        seen.contains(&Observation::State(RaftState::Leader)),
        "{seen:?}"
    );

    raft.add_nonvoter(NodeId(2), "2", Index(0), T)
        .wait()
        .expect("add");
    receive_until(
        &rx,
        &Observation::PeerAdded {
            id: NodeId(2),
            address: "2".into(),
        },
    );
    raft.remove_server(NodeId(2), Index(0), T)
        .wait()
        .expect("remove");
    receive_until(&rx, &Observation::PeerRemoved { id: NodeId(2) });
    assert_eq!(observer.dropped(), 0);
    assert!(observer.observed() >= 4);
    raft.shutdown().wait().expect("shutdown");
}

#[test]
fn filter_passes_only_what_it_accepts() {
    let network = MemNetwork::new();
    let raft = fresh_node(&network);
    let (tx, rx) = sync_channel(1024);
    let observer = Observer::with_filter(tx, false, |o| matches!(o, Observation::Leader(_)));
    raft.register_observer(observer);
    bootstrap(&raft);
    let seen = receive_until(
        &rx,
        &Observation::Leader(LeaderObservation {
            leader: Some(NodeId(1)),
            term: raft.current_term(),
        }),
    );
    assert!(
        seen.iter().all(|o| matches!(o, Observation::Leader(_))),
        "{seen:?}"
    );
    raft.shutdown().wait().expect("shutdown");
}

#[test]
fn non_blocking_observer_drops_and_counts_what_does_not_fit() {
    let network = MemNetwork::new();
    let raft = fresh_node(&network);
    // A rendezvous channel nobody receives from: every offer is dropped, none blocks the node.
    let (tx, _rx) = sync_channel(0);
    let observer = Observer::new(tx, false);
    raft.register_observer(observer.clone());
    bootstrap(&raft);
    wait_until("dropped observations", || observer.dropped() >= 2);
    assert_eq!(observer.observed(), 0);
    raft.shutdown().wait().expect("shutdown");
}

#[test]
fn deregistered_observer_receives_nothing_more() {
    let network = MemNetwork::new();
    let raft = fresh_node(&network);
    let (tx, rx) = sync_channel(1024);
    let id = raft.register_observer(Observer::new(tx, true));
    bootstrap(&raft);
    assert!(raft.deregister_observer(id));
    assert!(!raft.deregister_observer(id));
    raft.add_nonvoter(NodeId(2), "2", Index(0), T)
        .wait()
        .expect("add");
    // A later request is handled in a later shard turn, after the turn that published the
    // configuration change.
    raft.barrier(T).wait().expect("barrier");
    let seen: Vec<Observation> = rx.try_iter().collect();
    assert!(
        !seen
            .iter()
            .any(|o| matches!(o, Observation::PeerAdded { .. })),
        "{seen:?}"
    );
    raft.shutdown().wait().expect("shutdown");
}

#[test]
fn followers_observe_vote_requests_of_the_next_election() {
    let mut cluster = TestCluster::new(3);
    let old = cluster.wait_leader();
    let mut receivers = Vec::new();
    for raft in cluster.running().filter(|r| r.local_id() != old) {
        let (tx, rx) = sync_channel(4096);
        raft.register_observer(Observer::with_filter(tx, false, |o| {
            matches!(o, Observation::RequestVote { .. })
        }));
        receivers.push(rx);
    }
    cluster.stop(old);
    let new = cluster.wait_leader();
    assert_ne!(new, old);
    // The new leader won a vote from the other survivor, which therefore received its
    // request.
    let mut seen = Vec::new();
    wait_until("a vote request", || {
        for rx in &receivers {
            seen.extend(rx.try_iter());
        }
        seen.iter()
            .any(|o| matches!(o, Observation::RequestVote { candidate, .. } if *candidate == new))
    });
}

#[test]
fn leader_observes_a_silent_peer_fail_and_resume() {
    let mut cluster = TestCluster::new(3);
    let leader = cluster.wait_leader();
    let (tx, rx) = sync_channel(4096);
    cluster
        .raft(leader)
        .register_observer(Observer::with_filter(tx, false, |o| {
            matches!(
                o,
                Observation::HeartbeatFailed { .. } | Observation::HeartbeatResumed { .. }
            )
        }));
    let follower = NodeId(if leader == NodeId(1) { 2 } else { 1 });
    cluster.stop(follower);
    let mut seen = Vec::new();
    wait_until("a failed heartbeat", || {
        seen.extend(rx.try_iter());
        seen.iter()
            .any(|o| matches!(o, Observation::HeartbeatFailed { peer, .. } if *peer == follower))
    });
    cluster.start(follower);
    receive_until(&rx, &Observation::HeartbeatResumed { peer: follower });
}
