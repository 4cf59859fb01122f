//! `stats()` (hashicorp's keys, values read from the running node) and `reload_config`.

mod node_support;

use node_support::{commands, test_config, wait_until, TestCluster};
use ringraft::{Config, ConfigError, RaftState, ReloadConfigError, ReloadableConfig};
use ringraft_storage::NodeId;
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

fn number(stats: &std::collections::BTreeMap<String, String>, key: &str) -> u64 {
    stats[key]
        .parse()
        .unwrap_or_else(|_| panic!("{key} = {:?} is not a number", stats[key]))
}

#[test]
fn stats_of_a_leader_report_its_log_commit_and_configuration() {
    let cluster = TestCluster::new(1);
    let id = cluster.wait_leader();
    let raft = cluster.raft(id);
    let last = raft
        .apply_batch(commands("s", 5), T)
        .wait()
        .expect("apply")
        .last;
    wait_until("stats to catch up", || {
        let s = raft.stats();
        number(&s, "last_log_index") == last.0 && number(&s, "commit_index") == last.0
    });
    let s = raft.stats();
    for key in [
        "state",
        "term",
        "last_log_index",
        "last_log_term",
        "commit_index",
        "applied_index",
        "fsm_pending",
        "last_snapshot_index",
        "last_snapshot_term",
        "latest_configuration",
        "latest_configuration_index",
        "num_peers",
        "last_contact",
        "protocol_version",
    ] {
        assert!(s.contains_key(key), "missing {key}: {s:?}");
    }
    assert_eq!(s["state"], "Leader");
    assert_eq!(number(&s, "term"), raft.current_term().0);
    assert_eq!(number(&s, "last_log_term"), raft.current_term().0);
    assert!(number(&s, "applied_index") <= last.0);
    assert_eq!(number(&s, "last_snapshot_index"), 0);
    assert_eq!(number(&s, "latest_configuration_index"), 1);
    assert!(s["latest_configuration"].contains("n1"), "{s:?}");
    assert_eq!(s["num_peers"], "0");
    assert_eq!(s["last_contact"], "0");

    let meta = raft.snapshot().wait().expect("snapshot");
    wait_until("snapshot in stats", || {
        number(&raft.stats(), "last_snapshot_index") == meta.last.index.0
    });
    assert_eq!(
        number(&raft.stats(), "last_snapshot_term"),
        meta.last.term.0
    );
}

#[test]
fn stats_of_a_follower_count_peers_and_report_leader_contact() {
    let cluster = TestCluster::new(3);
    let leader = cluster.wait_leader();
    cluster.raft(leader).apply("x", T).wait().expect("apply");
    let follower = cluster
        .running()
        .find(|r| r.local_id() != leader)
        .expect("a follower");
    wait_until("a follower's leader contact", || {
        follower.stats()["last_contact"] != "never"
    });
    let s = follower.stats();
    assert_eq!(s["state"], "Follower");
    assert_eq!(s["num_peers"], "2");
    assert_ne!(s["last_contact"], "0");
    assert_eq!(cluster.raft(leader).stats()["num_peers"], "2");
    // The same through `last_contact()`: recent on the follower, zero on the leader.
    let since = follower.last_contact().expect("heard from the leader");
    assert!(since < Duration::from_secs(20), "{since:?}");
    assert_eq!(cluster.raft(leader).last_contact(), Some(Duration::ZERO));
}

#[test]
fn reload_config_validates_the_merged_config_and_names_the_field() {
    let cluster = TestCluster::new(1);
    let raft = cluster.raft(NodeId(1));
    let current = ReloadableConfig::from_config(&test_config(NodeId(1)));
    assert_eq!(raft.reloadable_config(), current);
    assert_eq!(raft.reload_config(current).wait(), Ok(()));

    let bad_interval = ReloadableConfig {
        snapshot_interval: Duration::ZERO,
        ..current
    };
    assert_eq!(
        raft.reload_config(bad_interval).wait(),
        Err(ReloadConfigError::Invalid(ConfigError {
            field: "snapshot_interval",
            reason: "must be at least 5 ms",
        }))
    );
    let bad_heartbeat = ReloadableConfig {
        heartbeat_timeout: Duration::from_millis(1),
        ..current
    };
    assert!(matches!(
        raft.reload_config(bad_heartbeat).wait(),
        Err(ReloadConfigError::Invalid(ConfigError {
            field: "heartbeat_timeout",
            ..
        }))
    ));
    let election_below_heartbeat = ReloadableConfig {
        election_timeout: current.heartbeat_timeout / 2,
        ..current
    };
    assert!(matches!(
        raft.reload_config(election_below_heartbeat).wait(),
        Err(ReloadConfigError::Invalid(ConfigError {
            field: "election_timeout",
            ..
        }))
    )); // A refused reload changes nothing.
    assert_eq!(raft.reloadable_config(), current);
}

#[test]
fn reloaded_timeouts_reach_the_core() {
    // A single node with a huge election timeout cannot elect itself in the test's patience;
    // reloading a short one lets it.
    fn config(id: NodeId) -> Config {
        let mut c = test_config(id);
        c.heartbeat_timeout = Duration::from_secs(600);
        c.election_timeout = Duration::from_secs(600);
        c.leader_lease_timeout = Duration::from_millis(50);
        c
    }
    let cluster = TestCluster::with_config(1, config);
    let raft = cluster.raft(NodeId(1));
    std::thread::sleep(Duration::from_millis(300));
    assert_ne!(
        raft.state(),
        RaftState::Leader,
        "600 s election timeout: not yet"
    );
    let fast = ReloadableConfig {
        heartbeat_timeout: Duration::from_millis(100),
        election_timeout: Duration::from_millis(100),
        trailing_logs: 7,
        ..raft.reloadable_config()
    };
    assert_eq!(raft.reload_config(fast).wait(), Ok(()));
    assert_eq!(raft.reloadable_config(), fast);
    wait_until("the reloaded election timeout to elect the node", || {
        raft.state() == RaftState::Leader
    });
}

#[test]
fn reloaded_snapshot_threshold_and_interval_take_effect() {
    // Automatic snapshots effectively off at start.
    fn config(id: NodeId) -> Config {
        let mut c = test_config(id);
        c.snapshot_interval = Duration::from_secs(3600);
        c.snapshot_threshold = u64::MAX;
        c
    }
    let cluster = TestCluster::with_config(1, config);
    let id = cluster.wait_leader();
    let raft = cluster.raft(id);
    raft.apply_batch(commands("r", 20), T)
        .wait()
        .expect("apply");
    assert_eq!(raft.stats()["last_snapshot_index"], "0");
    let reloaded = ReloadableConfig {
        snapshot_interval: Duration::from_millis(5),
        snapshot_threshold: 4,
        ..ReloadableConfig::from_config(&config(id))
    };
    raft.reload_config(reloaded).wait().expect("reload");
    assert_eq!(raft.reloadable_config(), reloaded);
    wait_until("an automatic snapshot", || {
        number(&raft.stats(), "last_snapshot_index") > 0
    });
    assert_ne!(raft.state(), RaftState::Shutdown);
}
