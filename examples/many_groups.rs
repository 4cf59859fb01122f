//! Thousands of Raft groups on three nodes in one process: each node is a `MultiRaft` (its
//! shard threads, one transport for all its groups), every group has its own state machine and
//! stores, elects its own leader and takes its own writes, and idle groups quiesce (no
//! heartbeats, no timers; ARCHITECTURE §14). Run it with `cargo run --release --example
//! many_groups -- 10000 2` (the number of groups, 1 000 by default, which `cargo test` runs;
//! and the shard threads per node, `MultiRaftConfig::shards`, 1 by default).

use bytes::Bytes;
use ringraft::{Config, Fsm, FsmError, FsmSnapshot, MultiRaft, MultiRaftConfig, Raft, RaftState};
use ringraft_net::memory::MemNetwork;
use ringraft_storage::{
    Configuration, Entry, EntryKind, GroupId, InmemSnapshotStore, InmemStore, NodeId,
};
use std::error::Error;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// One group's state machine: a counter of the commands it applied.
struct Counter(u64);

impl Fsm for Counter {
    fn apply(&mut self, entry: &Entry) -> Bytes {
        if entry.kind == EntryKind::Command {
            self.0 += 1;
        }
        Bytes::copy_from_slice(&self.0.to_le_bytes())
    }

    fn snapshot(&mut self) -> Result<Box<dyn FsmSnapshot>, FsmError> {
        Ok(Box::new(CounterSnapshot(self.0)))
    }

    fn restore(&mut self, snapshot: &mut dyn Read) -> Result<(), FsmError> {
        let mut bytes = [0u8; 8];
        snapshot.read_exact(&mut bytes)?;
        self.0 = u64::from_le_bytes(bytes);
        Ok(())
    }
}

struct CounterSnapshot(u64);

impl FsmSnapshot for CounterSnapshot {
    fn persist(&mut self, sink: &mut dyn Write) -> Result<(), FsmError> {
        Ok(sink.write_all(&self.0.to_le_bytes())?)
    }
}

// The example times itself with the wall clock (the lint guards the consensus core's
// determinism, which an example does not touch).
#[allow(clippy::disallowed_methods)]
fn run(groups: u64, shards: usize) -> Result<(), Box<dyn Error>> {
    let network = MemNetwork::new();
    let ids = [NodeId(1), NodeId(2), NodeId(3)];
    // One MultiRaft per node: pings between nodes every 250 ms, a node silent for 1 s is
    // reported to its groups (the defaults, matching `Config`'s default timeouts); group g
    // runs on shard thread g mod `shards` of its node, every shard behind the node's one
    // transport.
    let config = MultiRaftConfig {
        shards,
        ..MultiRaftConfig::default()
    };
    let nodes = ids
        .iter()
        .map(|&id| MultiRaft::new(network.transport(id), config.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    let members = Configuration::voters_with_default_addresses(ids);
    let started = Instant::now();
    let mut all: Vec<Vec<Raft>> = Vec::new();
    for g in 1..=groups {
        let mut replicas = Vec::new();
        for node in &nodes {
            let store = InmemStore::new();
            let raft = node.add_group(
                GroupId(g),
                Config::new(node.id()),
                Counter(0),
                store.clone(),
                store,
                InmemSnapshotStore::new(),
            )?;
            raft.bootstrap_cluster(members.clone()).wait()?;
            replicas.push(raft);
        }
        all.push(replicas);
    }
    println!(
        "{groups} groups started on 3 nodes ({shards} shard threads each) in {:?}",
        started.elapsed()
    );
    // Every group elects its own leader.
    let leader_of = |replicas: &[Raft]| {
        replicas
            .iter()
            .find(|r| r.state() == RaftState::Leader)
            .cloned()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while all.iter().any(|g| leader_of(g).is_none()) {
        if Instant::now() > deadline {
            return Err("not every group elected a leader within 120 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "every group has a leader {:?} after the start",
        started.elapsed()
    );
    // Write to a spread of groups through their leaders; each counts its own commands.
    for replicas in all.iter().step_by((groups as usize / 50).max(1)) {
        let leader = leader_of(replicas).ok_or("leader lost")?;
        for expected in 1..=3u64 {
            let applied = leader.apply("tick", Duration::from_secs(5)).wait()?;
            assert_eq!(
                applied.response,
                Bytes::copy_from_slice(&expected.to_le_bytes())
            );
        }
    }
    let stats = nodes[0].stats();
    println!(
        "node 1 runs {} groups; {} pings sent to its peers so far",
        stats.groups, stats.pings_sent
    );
    assert_eq!(stats.groups, groups as usize);
    for replicas in &all {
        for raft in replicas {
            // Resolves once the group's loop stopped; it cannot fail.
            let _ = raft.shutdown().wait();
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn Error>> {
    let groups = match std::env::args().nth(1) {
        Some(n) => n.parse().map_err(|e| format!("groups {n:?}: {e}"))?,
        None => 1_000,
    };
    let shards = match std::env::args().nth(2) {
        Some(n) => n.parse().map_err(|e| format!("shards {n:?}: {e}"))?,
        None => 1,
    };
    run(groups, shards)
}

#[test]
fn the_example_runs() {
    run(1_000, 1).expect("the example runs to the end");
}

#[test]
fn the_example_runs_on_two_shard_threads_per_node() {
    run(300, 2).expect("the example runs to the end");
}
