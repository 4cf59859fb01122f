//! Network partitions of a real `ringraft-kv` cluster (issue 7 §2) under concurrent client
//! load recorded for the linearizability checker.
//!
//! ```text
//! cargo test -p ringraft-tools --test kv_partition -- --ignored
//! RINGRAFT_PARTITION=proxy cargo test -p ringraft-tools --test kv_partition -- --ignored
//! ```
//!
//! Mechanism, printed by every test: as root, each node in its own network namespace, veth
//! pairs on a bridge, cuts by blackhole routes (`support/netns.rs`); clients live in the hub
//! namespace and reach every node, so a cut-off leader keeps receiving requests and must not
//! acknowledge a write or serve a stale read once the majority elected another leader. Without
//! root or iproute2 (or with `RINGRAFT_PARTITION=proxy`), a fault-injecting TCP proxy in front
//! of each node's raft port (`support/proxy.rs`), which cuts raft traffic only.

mod support;

use ringraft_tools::kv::client::info_field;
use support::netns::NetLab;
use support::proxy::ProxyNet;
use support::{eventually, is_root, Cluster, Load};

/// Raft and client ports in the namespaces; each node has its own, so they never collide.
const RAFT_PORT: u16 = 7000;
const CLIENT_PORT: u16 = 6379;
/// How many times the sequence of cuts runs.
const ROUNDS: usize = 3;

/// How the test cuts nodes apart.
enum Network {
    Namespaces(NetLab),
    Proxy(ProxyNet),
}

impl Network {
    /// Namespaces when possible, else the proxy; says which and why.
    fn new(n: usize) -> Network {
        let forced_proxy = std::env::var("RINGRAFT_PARTITION").is_ok_and(|v| v == "proxy");
        let namespaces = if forced_proxy {
            Err("RINGRAFT_PARTITION=proxy".to_string())
        } else if !is_root() {
            Err("not root".to_string())
        } else {
            NetLab::create(n)
        };
        match namespaces {
            Ok(lab) => {
                eprintln!(
                    "partition mechanism: network namespaces {}-* (one per node, veth pairs on \
                     a bridge), cuts by blackhole routes",
                    lab.name()
                );
                Network::Namespaces(lab)
            }
            Err(why) => {
                eprintln!(
                    "partition mechanism: fault-injecting TCP proxy in front of each node's \
                     raft port on 127.0.0.x (no network namespaces: {why})"
                );
                Network::Proxy(ProxyNet::start(n).expect("starting the proxies"))
            }
        }
    }

    fn partition(&mut self, a: &[usize], b: &[usize]) {
        match self {
            Network::Namespaces(lab) => lab.partition(a, b),
            Network::Proxy(proxy) => proxy.partition(a, b),
        }
    }

    fn heal(&mut self) {
        match self {
            Network::Namespaces(lab) => lab.heal(),
            Network::Proxy(proxy) => proxy.heal(),
        }
    }

    /// An `n`-node cluster (not started) wired to this network.
    fn cluster(&mut self, n: usize) -> Cluster {
        match self {
            Network::Namespaces(lab) => {
                lab.enter_hub().expect("entering the hub namespace");
                let addresses = (1..=n)
                    .map(|id| {
                        let a = lab.address(id);
                        (format!("{a}:{RAFT_PORT}"), format!("{a}:{CLIENT_PORT}"))
                    })
                    .collect();
                let mut cluster = Cluster::new(addresses, |_| vec![]);
                for id in 1..=n {
                    cluster.nodes[id - 1].netns = Some(lab.node_netns(id));
                }
                cluster
            }
            Network::Proxy(proxy) => {
                let addresses = proxy
                    .nodes
                    .iter()
                    .map(|p| (p.advertised_raft.clone(), p.client.clone()))
                    .collect();
                let mut cluster = Cluster::new(addresses, |_| vec![]);
                for (node, p) in cluster.nodes.iter_mut().zip(&proxy.nodes) {
                    node.listen_raft = Some(p.listen_raft.clone());
                }
                cluster
            }
        }
    }
}

fn without(all: &[usize], cut: &[usize]) -> Vec<usize> {
    all.iter().copied().filter(|id| !cut.contains(id)).collect()
}

fn role(cluster: &Cluster, id: usize) -> Option<String> {
    cluster.info(id).and_then(|i| info_field(&i, "role"))
}

/// Cuts `minority` off from the rest, waits for the rest to have a leader and for the clients
/// to complete operations, heals, and waits for more.
fn cut_and_heal(net: &mut Network, cluster: &Cluster, load: &Load, minority: &[usize]) {
    let all: Vec<usize> = (1..=cluster.nodes.len()).collect();
    let majority = without(&all, minority);
    let old_leader = cluster.leader();
    net.partition(minority, &majority);
    eprintln!("leader {old_leader}; cut {minority:?} off from {majority:?}");
    let leader = cluster.leader_among(&majority);
    load.wait_for_progress(200);
    if minority.contains(&old_leader) {
        // With no quorum contact the old leader must step down (and, being cut off, cannot
        // win an election).
        let stepped_down = eventually(600, || {
            role(cluster, old_leader).is_some_and(|r| r != "leader")
        });
        assert!(
            stepped_down,
            "cut-off leader {old_leader} never stepped down"
        );
    }
    net.heal();
    eprintln!("healed (leader of the majority was {leader})");
    load.wait_for_progress(100);
}

/// Partitions an `n`-node cluster [`ROUNDS`] times three ways (leader alone; for 5 nodes,
/// leader with one follower against three; a minority of followers), healing in between; then
/// checks the history and that every node caught up.
fn partitions_keep_history_linearizable(n: usize) {
    let mut net = Network::new(n);
    // Declared after `net`: the nodes are killed before the network goes away.
    let mut cluster = net.cluster(n);
    for id in 1..=n {
        cluster.spawn(id);
    }
    cluster.leader();
    let load = Load::start(cluster.client_addresses(), 2 * n as u64);
    load.wait_for_progress(100);

    for _ in 0..ROUNDS {
        let leader = cluster.leader();
        cut_and_heal(&mut net, &cluster, &load, &[leader]);
        if n >= 5 {
            let leader = cluster.leader();
            let follower = if leader == 1 { 2 } else { 1 };
            cut_and_heal(&mut net, &cluster, &load, &[leader, follower]);
        }
        let leader = cluster.leader();
        let followers = without(&(1..=n).collect::<Vec<_>>(), &[leader]);
        cut_and_heal(&mut net, &cluster, &load, &followers[..(n - 1) / 2]);
    }

    let leader = cluster.leader();
    load.finish_and_check(&cluster, leader);
    // Every node catches up with what the leader committed.
    let commit = cluster
        .info_number(leader, "commit")
        .expect("leader's commit index");
    for id in 1..=n {
        let caught_up = eventually(600, || {
            cluster
                .info_number(id, "applied")
                .is_some_and(|a| a >= commit)
        });
        if !caught_up {
            cluster.dump_logs();
            panic!("node {id} did not catch up to {commit}");
        }
    }
    drop(cluster);
}

/// Run with `cargo test -p ringraft-tools --test kv_partition -- --ignored`.
#[test]
#[ignore = "real processes, network namespaces (root) or a TCP proxy"]
fn partitions_of_three_nodes_keep_history_linearizable() {
    partitions_keep_history_linearizable(3);
}

/// Run with `cargo test -p ringraft-tools --test kv_partition -- --ignored`.
#[test]
#[ignore = "real processes, network namespaces (root) or a TCP proxy"]
fn partitions_of_five_nodes_keep_history_linearizable() {
    partitions_keep_history_linearizable(5);
}
