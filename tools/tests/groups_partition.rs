//! Network partitions under `MultiRaft` nodes of many groups, each node a real process (issue
//! "Multi-raft"):
//!
//! ```text
//! cargo test -p ringraft-tools --test groups_partition -- --ignored --skip _child
//! ```
//!
//! Each node runs in its own child process (the child of `groups_support`, with
//! `RINGRAFT_GROUPS_NODE`) in its own network namespace (`support/netns.rs`: veth pairs on a
//! bridge), with eight durable groups on one `SharedWal` and a file snapshot store per group,
//! and writes to the groups it leads. A cut is a blackhole route: the cut-off node's TCP
//! connections stay open and go silent, as they do when a switch fails or a host freezes, so
//! only each node's watch of its peers' silence (`MultiRaftConfig::silence_timeout`) tells
//! that a peer is gone. Idle groups are quiescent (no heartbeats, no election timers), so this
//! is what wakes them.
//!
//! Six of the groups are written without a pause; two get one write every two seconds and
//! quiesce in between (the children report the quiesced groups they see, and the test fails
//! unless both idle groups were seen so before the first cut). Each round cuts one node off from the other two (each
//! node in turn). While it is cut off, every group must apply writes on the majority's side
//! (the groups the cut-off node led must elect a leader there); once healed, every group must
//! apply writes again. After the last
//! round the children are killed and every node's stores are read back: each write a child saw
//! applied must be held by a majority of the nodes, and every write applied before the last
//! heal by all three (the last cut-off node caught up on every group).
//!
//! Needs root (namespaces); skipped with a message otherwise.

mod groups_support;
mod powerloss_support;
mod support;

use groups_support::{
    check, check_held_by, every_group_applies, Heard, BUSY_GROUPS, CHILD_ADDRESSES, CHILD_DIR,
    CHILD_NODE, CHILD_NUMBER, GROUPS, NODES,
};
use powerloss_support::Child;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::netns::NetLab;

/// Every node's raft port, in its own namespace.
const RAFT_PORT: u16 = 7100;

/// The child process of this test (see `groups_support`).
#[test]
#[ignore = "the child process of the partition test"]
fn groups_partition_child() {
    groups_support::child();
}

fn partitions(rounds: u64) -> Result<(), String> {
    if !support::is_root() {
        eprintln!("groups_partition: skipped (needs root for network namespaces)");
        return Ok(());
    }
    let mut lab = match NetLab::create(NODES as usize) {
        Ok(lab) => lab,
        Err(e) => {
            eprintln!("groups_partition: skipped (no network namespaces: {e})");
            return Ok(());
        }
    };
    eprintln!(
        "partition mechanism: network namespaces {}-* (one per node), cuts by blackhole routes",
        lab.name()
    );
    let dir = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let root = dir.path().to_path_buf();
    let addresses = (1..=NODES)
        .map(|id| format!("{}:{RAFT_PORT}", lab.address(id as usize)))
        .collect::<Vec<_>>()
        .join(",");
    let heard = Arc::new(Mutex::new(Heard::default()));
    // Child `n` runs node `n`: its number is its node's id.
    let children: Vec<Child> = (1..=NODES)
        .map(|node| {
            let node_text = node.to_string();
            Child::spawn_in(
                Some(&lab.node_netns(node as usize)),
                "groups_partition_child",
                &[
                    (CHILD_DIR, root.as_os_str()),
                    (CHILD_ADDRESSES, OsStr::new(&addresses)),
                    (CHILD_NUMBER, OsStr::new(&node_text)),
                    (CHILD_NODE, OsStr::new(&node_text)),
                ],
                None,
                Heard::listener(&heard, node),
            )
        })
        .collect();
    let all: Vec<u64> = (1..=NODES).collect();
    let per_child_group = || heard.lock().expect("heard").per_child_group.clone();
    every_group_applies(&heard, &BTreeMap::new(), |_| true, Duration::from_secs(30))
        .map_err(|g| format!("groups {g:?} applied no write within 30 s of the start"))?;
    // Before any cut, a follower that has heard nothing from its leader for a second follows
    // a quiesced leader: both idle groups must have been seen so, or the rounds would not cut
    // nodes off under quiescent groups.
    let idle: Vec<u64> = (BUSY_GROUPS + 1..=GROUPS).collect();
    let mut waited = Duration::ZERO;
    while !idle
        .iter()
        .all(|g| heard.lock().expect("heard").quiet.contains(g))
    {
        if waited >= Duration::from_secs(15) {
            return Err(format!(
                "the idle groups {idle:?} were not all seen quiesced within 15 s (seen: {:?})",
                heard.lock().expect("heard").quiet
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
        waited += Duration::from_millis(50);
    }
    let mut applied_before_heal = Default::default();
    for round in 0..rounds {
        let cut = 1 + round % NODES;
        let majority: Vec<u64> = all.iter().copied().filter(|&n| n != cut).collect();
        let before = per_child_group();
        lab.partition(
            &[cut as usize],
            &majority.iter().map(|&n| n as usize).collect::<Vec<_>>(),
        );
        let on_majority = |child: u64| majority.contains(&child);
        let during = every_group_applies(&heard, &before, on_majority, Duration::from_secs(10));
        // Held a while longer: the cut-off node's leaders step down, its groups go silent.
        std::thread::sleep(Duration::from_millis(500));
        applied_before_heal = heard.lock().expect("heard").acked.clone();
        let before = per_child_group();
        lab.heal();
        during.map_err(|g| {
            format!(
                "round {round}: groups {g:?} applied no write on the majority's side within \
                 10 s of node {cut}'s cut"
            )
        })?;
        every_group_applies(&heard, &before, |_| true, Duration::from_secs(10)).map_err(|g| {
            format!("round {round}: groups {g:?} applied no write within 10 s of the heal")
        })?;
        println!("groups_partition: round {round}: node {cut} cut off and healed");
    }
    // Time for the last cut-off node to catch up on every group.
    std::thread::sleep(Duration::from_secs(3));
    drop(children);
    let heard = heard.lock().expect("heard");
    let roots = [root.clone(), root.clone(), root.clone()];
    check(&roots, &heard.acked)?;
    check_held_by(&roots, &applied_before_heal, NODES as usize)
        .map_err(|e| format!("after the last heal: {e}"))?;
    println!(
        "groups_partition: {rounds} rounds, {} applied writes held by a majority, the {} \
         applied before the last heal by every node",
        heard.acked.len(),
        applied_before_heal.len()
    );
    Ok(())
}

#[test]
#[ignore = "needs root (network namespaces): .ci/run"]
fn every_group_goes_on_through_silent_partitions() {
    partitions(6).unwrap_or_else(|e| panic!("{e}"));
}
