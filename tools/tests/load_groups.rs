//! `ringraft-load --groups`: several Raft groups in one process (in memory, or durable with
//! one WAL per node shared by the groups), each elects a leader, idle cost is measured, the
//! active groups take writes, and durable groups come back after a restart.

use std::process::Command;

const LOAD: &str = env!("CARGO_BIN_EXE_ringraft-load");

fn field<'a>(json: &'a str, name: &str) -> &'a str {
    let key = format!("\"{name}\":");
    let start = json
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {json}"))
        + key.len();
    let rest = &json[start..];
    &rest[..rest.find([',', '}']).unwrap_or(rest.len())]
}

/// Runs `ringraft-load` with `args`, checks that it succeeded, returns its JSON line.
fn json_of(args: &[&str]) -> String {
    let out = Command::new(LOAD)
        .args(args)
        .output()
        .expect("running ringraft-load");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.trim().to_string()
}

#[test]
fn every_group_elects_a_leader_and_the_active_ones_take_writes() {
    let json = &json_of(&[
        "--inmem",
        "--groups",
        "4",
        "--active",
        "2",
        "--clients",
        "4",
        "--duration",
        "1",
        "--idle-secs",
        "0.3",
        "--warmup",
        "20",
        "--json",
    ]);
    assert_eq!(field(json, "groups"), "4");
    assert_eq!(field(json, "active"), "2");
    assert_eq!(field(json, "elected"), "4");
    let elect: f64 = field(json, "elect_all_s").parse().expect("elect_all_s");
    assert!(elect > 0.0 && elect < 120.0, "{json}");
    let writes: f64 = field(json, "writes_per_sec")
        .parse()
        .expect("writes_per_sec");
    assert!(writes > 0.0, "{json}");
    for name in ["p50_us", "p99_us", "idle_cpu_pct", "rss_per_replica_bytes"] {
        let v: f64 = field(json, name)
            .parse()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(v >= 0.0, "{json}");
    }
    let cpu: f64 = field(json, "cpu_us_per_write")
        .parse()
        .expect("cpu_us_per_write");
    assert!(cpu > 0.0, "the writes took CPU: {json}");
}

#[test]
fn durable_groups_share_a_wal_per_node_and_recover_after_a_restart() {
    let json = &json_of(&[
        "--groups",
        "96",
        "--active",
        "6",
        "--clients",
        "6",
        "--ops",
        "600",
        "--idle-secs",
        "0.3",
        "--restart",
        // One campaign slot per node: the 96 groups' elections wait their turn, at the
        // start and after the restart (MultiRaftConfig::campaign_slots). A campaign that
        // wins holds its slot only until its first commit, a few milliseconds, so it takes
        // this many groups for campaigns to meet.
        "--campaign-slots",
        "1",
        "--json",
    ]);
    assert_eq!(field(json, "durable"), "true");
    assert_eq!(field(json, "elected"), "96");
    assert_eq!(field(json, "restart_recovered"), "96", "{json}");
    for name in ["campaigns_deferred", "restart_campaigns_deferred"] {
        let deferred: u64 = field(json, name)
            .parse()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(deferred > 0, "no campaign waited for a slot: {json}");
    }
    let elect: f64 = field(json, "restart_elect_all_s")
        .parse()
        .expect("restart_elect_all_s");
    assert!(elect > 0.0 && elect < 120.0, "{json}");
    let writes: f64 = field(json, "writes_per_sec")
        .parse()
        .expect("writes_per_sec");
    assert!(writes > 0.0, "{json}");
}

#[test]
fn a_restart_needs_durable_groups_and_active_groups_are_at_most_groups() {
    let out = Command::new(LOAD)
        .args(["--inmem", "--groups", "2", "--restart"])
        .output()
        .expect("running ringraft-load");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--restart"));
    let out = Command::new(LOAD)
        .args(["--inmem", "--groups", "2", "--active", "3"])
        .output()
        .expect("running ringraft-load");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--active 3"));
}

#[test]
fn groups_spread_over_several_shard_threads_per_node_elect_and_take_writes() {
    let json = &json_of(&[
        "--inmem",
        "--groups",
        "9",
        "--active",
        "9",
        "--clients",
        "9",
        "--ops",
        "900",
        "--idle-secs",
        "0.2",
        "--shards",
        "3",
        "--json",
    ]);
    assert_eq!(field(json, "elected"), "9");
    let writes: f64 = field(json, "writes_per_sec")
        .parse()
        .expect("writes_per_sec");
    assert!(writes > 0.0, "{json}");
    // Three nodes of three shard threads each, beside the client's and the process's own.
    let threads: u64 = field(json, "threads").parse().expect("threads");
    assert!(threads >= 9, "{json}");
    let refused = Command::new(LOAD)
        .args(["--inmem", "--groups", "2", "--shards", "0"])
        .output()
        .expect("running ringraft-load");
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("--shards"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// `--failover`: the node leading the most groups is cut off with its connections open (its
/// messages lost), and every group it led elects a leader among the others, found only by
/// the other nodes' watch of its silence (the groups were quiesced: no election timer ran).
#[test]
fn a_frozen_node_s_groups_elect_other_leaders() {
    frozen_node_s_groups_elect_other_leaders(true);
}

/// The same over TCP with every node's groups in one WAL: the frozen node's transport drops
/// what it sends and receives, its connections stay open.
#[test]
fn a_frozen_durable_node_s_groups_elect_other_leaders() {
    frozen_node_s_groups_elect_other_leaders(false);
}

fn frozen_node_s_groups_elect_other_leaders(inmem: bool) {
    let mut args = vec![
        "--groups",
        "12",
        "--active",
        "0",
        "--idle-secs",
        "0.5",
        "--failover",
        "--json",
    ];
    if inmem {
        args.push("--inmem");
    }
    let json = &json_of(&args);
    assert_eq!(field(json, "durable"), (!inmem).to_string(), "{json}");
    assert_eq!(field(json, "elected"), "12");
    let led: usize = field(json, "failover_led").parse().expect("failover_led");
    // Twelve groups over three nodes: the one leading the most leads at least four.
    assert!(led >= 4, "{json}");
    assert_eq!(field(json, "failover_moved"), led.to_string(), "{json}");
    let secs: f64 = field(json, "failover_s").parse().expect("failover_s");
    // At least the silence timeout (the election timeout, 300 ms) must pass first.
    assert!((0.25..120.0).contains(&secs), "{json}");
}

/// `--failover` needs three nodes or more: cutting one of two leaves the other no majority.
#[test]
fn a_failover_needs_three_nodes() {
    let out = Command::new(LOAD)
        .args(["--inmem", "--nodes", "2", "--groups", "2", "--failover"])
        .output()
        .expect("running ringraft-load");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("at least 3 nodes"), "{err}");
}
