//! `Config` from serde (the `serde` feature, on for the tests).

use ringraft::Config;
use ringraft_storage::NodeId;
use std::time::Duration;

#[test]
fn missing_fields_keep_hashicorps_defaults() {
    let c: Config = serde_json::from_str(r#"{"local_id": 3}"#).expect("parse");
    let d = Config::new(NodeId(3));
    assert_eq!(format!("{c:?}"), format!("{d:?}"));
}

#[test]
fn durations_are_milliseconds_or_go_strings() {
    let c: Config = serde_json::from_str(
        r#"{
            "local_id": 1,
            "heartbeat_timeout": "500ms",
            "election_timeout": 750,
            "snapshot_interval": "2m30s",
            "leader_lease_timeout": "250ms",
            "trailing_logs": 100,
            "snapshot_memory_threshold": 0,
            "pre_vote_disabled": true,
            "shard_cpu": 1,
            "apply_placement": "own_thread"
        }"#,
    )
    .expect("parse");
    assert_eq!(c.heartbeat_timeout, Duration::from_millis(500));
    assert_eq!(c.election_timeout, Duration::from_millis(750));
    assert_eq!(c.snapshot_interval, Duration::from_secs(150));
    assert_eq!(c.leader_lease_timeout, Duration::from_millis(250));
    assert_eq!(c.trailing_logs, 100);
    assert_eq!(c.snapshot_memory_threshold, 0);
    assert!(c.pre_vote_disabled);
    assert_eq!(c.shard_cpu, Some(1));
    assert_eq!(c.apply_placement, ringraft::ApplyPlacement::OwnThread);
    assert_eq!(c.validate(), Ok(()));
}

#[test]
fn bad_input_is_refused() {
    for bad in [
        r#"{}"#,
        r#"{"local_id": 1, "heartbeat_timout": 5}"#,
        r#"{"local_id": 1, "heartbeat_timeout": "5 parsecs"}"#,
        r#"{"local_id": 1, "heartbeat_timeout": -5}"#,
        r#"{"local_id": 1, "apply_placement": "sideways"}"#,
        r#"{"local_id": 1, "apply_placement": "adaptive", "apply_on_shard_thread": true}"#,
    ] {
        assert!(serde_json::from_str::<Config>(bad).is_err(), "{bad}");
    }
    // Deserializing does not validate; `validate` names the field.
    let c: Config =
        serde_json::from_str(r#"{"local_id": 1, "heartbeat_timeout": 1}"#).expect("parse");
    assert_eq!(c.validate().map_err(|e| e.field), Err("heartbeat_timeout"));
}

#[test]
fn apply_placement_defaults_to_adaptive_and_the_older_switch_still_reads() {
    use ringraft::ApplyPlacement;
    let parse = |json: &str| serde_json::from_str::<Config>(json).expect("parse");
    assert_eq!(
        parse(r#"{"local_id": 1}"#).apply_placement,
        ApplyPlacement::Adaptive
    );
    assert_eq!(
        parse(r#"{"local_id": 1, "apply_placement": "shard_thread"}"#).apply_placement,
        ApplyPlacement::ShardThread
    );
    assert_eq!(
        parse(r#"{"local_id": 1, "apply_on_shard_thread": true}"#).apply_placement,
        ApplyPlacement::ShardThread
    );
    assert_eq!(
        parse(r#"{"local_id": 1, "apply_on_shard_thread": false}"#).apply_placement,
        ApplyPlacement::OwnThread
    );
}
