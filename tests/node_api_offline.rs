//! The offline helpers: has-existing-state, get-configuration, peers.json and recover-cluster.

mod node_support;

use node_support::{commands, test_config, wait_until, RecordingFsm, TestCluster};
use ringraft::{
    get_configuration, has_existing_state, parse_peers_json, read_peers_json, recover_cluster,
    PeersJsonError, RaftState, RecoverClusterError,
};
use ringraft_storage::{Configuration, Index, InmemSnapshotStore, InmemStore, NodeId, Server};
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

#[test]
fn fresh_stores_have_no_state_and_a_bootstrapped_node_has() {
    let store = InmemStore::new();
    let snapshots = InmemSnapshotStore::new();
    assert!(!has_existing_state(&store, &store, &snapshots).expect("read"));

    let mut cluster = TestCluster::new(3);
    cluster.wait_leader();
    cluster.shutdown_all();
    let s = &cluster.stores[0];
    assert!(has_existing_state(&s.log, &s.log, &s.snapshots).expect("read"));
    let (index, configuration) =
        get_configuration(&test_config(NodeId(1)), &s.log, &s.log, &s.snapshots).expect("read");
    assert_eq!(index, Index(1));
    assert_eq!(
        configuration,
        Configuration::voters_with_default_addresses((1..=3).map(NodeId))
    );
}

#[test]
fn peers_json_reads_both_formats() {
    let dir = tempfile::tempdir().expect("tempdir");
    let legacy = dir.path().join("legacy.json");
    std::fs::write(&legacy, r#"["1", "2", "3"]"#).expect("write");
    let c = read_peers_json(&legacy).expect("legacy");
    assert_eq!(
        c.servers,
        vec![
            Server::voter(NodeId(1), "1"),
            Server::voter(NodeId(2), "2"),
            Server::voter(NodeId(3), "3"),
        ]
    );

    let current = dir.path().join("current.json");
    std::fs::write(
        &current,
        r#"[
          {"id": 1, "address": "10.0.0.1:8300", "non_voter": false},
          {"id": "2", "address": "10.0.0.2:8300"},
          {"id": 3, "address": "10.0.0.3:8300", "non_voter": true}
        ]"#,
    )
    .expect("write");
    let c = read_peers_json(&current).expect("current");
    assert_eq!(
        c.servers,
        vec![
            Server::voter(NodeId(1), "10.0.0.1:8300"),
            Server::voter(NodeId(2), "10.0.0.2:8300"),
            Server::nonvoter(NodeId(3), "10.0.0.3:8300"),
        ]
    );
    assert!(matches!(
        read_peers_json(dir.path().join("missing.json")),
        Err(PeersJsonError::Io(_))
    ));
}

#[test]
fn peers_json_names_bad_ids_and_invalid_configurations() {
    assert_eq!(
        parse_peers_json(r#"["10.0.0.1:8300"]"#),
        Err(PeersJsonError::BadId {
            id: "10.0.0.1:8300".into()
        })
    );
    assert_eq!(
        parse_peers_json(r#"[{"id": "server-a", "address": "a"}]"#),
        Err(PeersJsonError::BadId {
            id: "server-a".into()
        })
    );
    for id in ["0", "-1", "1.5", "18446744073709551616"] {
        let text = format!(r#"[{{"id": {id}, "address": "a"}}]"#);
        assert!(
            matches!(parse_peers_json(&text), Err(PeersJsonError::BadId { .. })),
            "{id}"
        );
    }
    assert!(matches!(
        parse_peers_json(r#"[{"id": 1, "address": "a"}, {"id": 1, "address": "b"}]"#),
        Err(PeersJsonError::Invalid(_))
    ));
    assert!(matches!(
        parse_peers_json(r#"[{"id": 1, "address": "a", "non_voter": true}]"#),
        Err(PeersJsonError::Invalid(_))
    ));
}

#[test]
fn recover_cluster_refuses_empty_stores() {
    let mut store = InmemStore::new();
    let mut stable = store.clone();
    let snapshots = InmemSnapshotStore::new();
    let result = recover_cluster(
        &test_config(NodeId(1)),
        RecordingFsm::new(),
        &mut store,
        &mut stable,
        &snapshots,
        &Configuration::voters_with_default_addresses([NodeId(1)]),
    );
    assert!(matches!(result, Err(RecoverClusterError::NoExistingState)));
}

#[test]
fn a_lone_survivor_recovers_with_a_forced_configuration_and_keeps_its_writes() {
    let mut cluster = TestCluster::new(3);
    let leader = cluster.wait_leader();
    let written = commands("w", 10);
    cluster
        .raft(leader)
        .apply_batch(written.clone(), T)
        .wait()
        .expect("apply");
    cluster.wait_applied_everywhere(&written);
    // Snapshot part of the history so recovery restores a snapshot *and* replays the log.
    cluster.raft(NodeId(1)).snapshot().wait().expect("snapshot");
    let more = commands("m", 3);
    cluster
        .raft(leader)
        .apply_batch(more.clone(), T)
        .wait()
        .expect("apply");
    let all: Vec<_> = written.iter().chain(&more).cloned().collect();
    cluster.wait_applied_everywhere(&all);
    cluster.shutdown_all();

    // Nodes 2 and 3 are lost for good.
    let alone = Configuration::voters_with_default_addresses([NodeId(1)]);
    let s = &cluster.stores[0];
    recover_cluster(
        &test_config(NodeId(1)),
        RecordingFsm::new(),
        &mut s.log.clone(),
        &mut s.log.clone(),
        &s.snapshots,
        &alone,
    )
    .expect("recover");
    let (_, configuration) =
        get_configuration(&test_config(NodeId(1)), &s.log, &s.log, &s.snapshots).expect("read");
    assert_eq!(configuration, alone);

    cluster.start(NodeId(1));
    let raft = cluster.raft(NodeId(1)).clone();
    wait_until("the survivor to lead", || raft.state() == RaftState::Leader);
    assert_eq!(cluster.applied(NodeId(1)), all);
    let next = raft.apply("after", T).wait().expect("apply after recovery");
    assert_eq!(
        next.response,
        bytes::Bytes::from((all.len() + 1).to_string())
    );
}
