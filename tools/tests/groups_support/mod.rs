//! Shared by the tests that run `MultiRaft` nodes of many durable groups in child processes
//! (`tools/tests/powerloss_groups.rs`, `tools/tests/groups_partition.rs`): the child (each test
//! binary has an ignored test that calls [`child`]), the writes it makes and reports, and the
//! parent's checks of what the nodes' stores hold.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use ringraft::{Config, Fsm, MultiRaft, MultiRaftConfig, Raft, RaftState};
use ringraft_storage::{
    BackendKind, Configuration, FileSnapshotStore, GroupId, Index, InmemStore, LogStore, NodeId,
    SharedWal, SnapshotStore, WalConfig,
};
use ringraft_tools::load::cluster::{free_addresses, Cluster, Digest, KvFsm};
use ringraft_tools::load::drive::KEY_BYTES;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The child's directory: node `n`'s stores are under `node-n` in it.
pub const CHILD_DIR: &str = "RINGRAFT_GROUPS_DIR";
/// The three nodes' addresses, comma-separated.
pub const CHILD_ADDRESSES: &str = "RINGRAFT_GROUPS_ADDRESSES";
/// The child's number, unique over the test: its writes' keys carry it.
pub const CHILD_NUMBER: &str = "RINGRAFT_GROUPS_CHILD";
/// Set: the child runs only this node (the others run in their own processes).
pub const CHILD_NODE: &str = "RINGRAFT_GROUPS_NODE";

/// Groups per node.
pub const GROUPS: u64 = 8;
/// Groups `1..=BUSY_GROUPS` are written without a pause; the others are idle most of the time.
pub const BUSY_GROUPS: u64 = 6;
/// The pause after each write to an idle group: long enough for the group to quiesce (its
/// leader quiesces after an election timeout, 300 ms, without requests).
pub const IDLE_PAUSE: Duration = Duration::from_secs(2);
/// Nodes in the cluster.
pub const NODES: u64 = 3;

/// Node `node`'s WAL under `dir`: 1 MiB segments, so that they fill and are reclaimed.
pub fn wal_config(dir: &Path, node: u64) -> WalConfig {
    WalConfig {
        segment_size_bytes: 1 << 20,
        max_entry_bytes: 64 << 10,
        ..WalConfig::new(dir.join(format!("node-{node}")).join("wal"))
    }
}

/// The command of write `k` of child `child` to group `group`: 512 bytes, so that segments
/// fill within a few rounds. Its first [`KEY_BYTES`] (the load's state machine's key) are unique
/// over the whole test, so a snapshot holds every applied write as its own key and value.
pub fn command(group: u64, child: u64, k: u64) -> String {
    format!("{group:02}{child:04}{k:010} {:x<512}", "")[..512].to_string()
}

/// Where node `node` keeps group `group`'s snapshots.
pub fn snapshot_dir(dir: &Path, node: u64, group: u64) -> std::path::PathBuf {
    dir.join(format!("node-{node}"))
        .join("snapshots")
        .join(format!("g{group}"))
}

/// Group `group`'s replica on `host`: its share of the node's WAL (which keeps its hard state
/// too) and a file snapshot store, snapshotting every 64 entries and keeping 32 behind, so
/// that logs are compacted and snapshots written within every round (and filled segments
/// reclaimed every few).
pub fn start_replica(
    host: &MultiRaft,
    wal: &SharedWal,
    dir: &Path,
    group: u64,
) -> Result<Raft, String> {
    let id = host.id();
    let election = Cluster::election_timeout();
    let mut config = Config::new(id);
    config.heartbeat_timeout = election;
    config.election_timeout = election;
    config.leader_lease_timeout = election;
    config.snapshot_threshold = 64;
    config.trailing_logs = 32;
    config.snapshot_interval = Duration::from_millis(100);
    let fsm = KvFsm::new(Arc::new(Mutex::new(Digest::default())));
    let log = wal
        .log(GroupId(group))
        .map_err(|e| format!("group {group}: {e}"))?;
    let snapshots = FileSnapshotStore::new(snapshot_dir(dir, id.0, group), 2)
        .map_err(|e| format!("group {group}'s snapshot store: {e}"))?;
    host.add_group(
        GroupId(group),
        config,
        fsm,
        log,
        InmemStore::new(),
        snapshots,
    )
    .map_err(|e| format!("group {group}: {e}"))
}

/// The child: starts the cluster (or, with [`CHILD_NODE`], that one node) from the WALs and
/// snapshot stores under its directory, then writes to every group its nodes lead, printing
/// `acked G C K` for each write `apply` returned applied (C: its [`CHILD_NUMBER`]).
pub fn child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let dir = Path::new(&dir);
    let addresses: Vec<SocketAddr> = std::env::var(CHILD_ADDRESSES)
        .expect("addresses")
        .split(',')
        .map(|a| a.parse().expect("an address"))
        .collect();
    let child: u64 = std::env::var(CHILD_NUMBER)
        .expect("child number")
        .parse()
        .expect("a number");
    let nodes: Vec<u64> = match std::env::var(CHILD_NODE) {
        Ok(node) => vec![node.parse().expect("a node id")],
        Err(_) => (1..=NODES).collect(),
    };
    let election = Cluster::election_timeout();
    let config = MultiRaftConfig {
        ping_interval: election / 10,
        silence_timeout: election,
        ..MultiRaftConfig::default()
    };
    let hosts: Vec<MultiRaft> = nodes
        .iter()
        .map(|&id| {
            MultiRaft::new(
                Cluster::tcp_transport(NodeId(id), &addresses),
                config.clone(),
            )
            .expect("start a node")
        })
        .collect();
    let wals: Vec<SharedWal> = nodes
        .iter()
        .map(|&id| SharedWal::open(wal_config(dir, id)).expect("open a WAL"))
        .collect();
    let configuration = Configuration::voters_with_default_addresses((1..=NODES).map(NodeId));
    let mut clusters = Vec::new();
    for g in 1..=GROUPS {
        let replicas = hosts
            .iter()
            .zip(&wals)
            .map(|(host, wal)| start_replica(host, wal, dir, g))
            .collect::<Result<Vec<_>, _>>()
            .expect("start a group");
        for raft in &replicas {
            // Refused once the replica has state (an earlier round bootstrapped it): fine.
            let _ = raft.bootstrap_cluster(configuration.clone()).wait();
        }
        clusters.push(replicas);
    }
    println!("started");
    // How the nodes' WALs wrote their batches, now and then: the parent checks that most were
    // asynchronous, the path under test.
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(100));
        let (mut all, mut asynchronous) = (0, 0);
        for wal in &wals {
            let c = wal.batch_counts();
            all += c.writer_thread + c.caller_thread + c.asynchronous;
            asynchronous += c.asynchronous;
        }
        println!("batches {all} asynchronous {asynchronous}");
    });
    // Which idle groups' replicas here follow a quiesced leader: no contact for over a second,
    // where a leader that is not quiesced sends a heartbeat every 30 ms. Printed once each.
    let replicas = clusters.clone();
    std::thread::spawn(move || {
        let mut seen = BTreeSet::new();
        loop {
            std::thread::sleep(Duration::from_millis(100));
            for (g, replicas) in (1..=GROUPS).zip(&replicas) {
                let quiet = replicas.iter().any(|r| {
                    r.state() == RaftState::Follower
                        && r.last_contact().is_some_and(|d| d > Duration::from_secs(1))
                });
                if quiet && seen.insert(g) {
                    println!("quiet {g}");
                }
            }
        }
    });
    // A client per group, so that the nodes' group commits carry several groups' entries. It
    // writes through the group's leader when that is one of this child's replicas: without a
    // pause to the busy groups, one write every [`IDLE_PAUSE`] to the idle ones (which quiesce
    // in between).
    let clients: Vec<_> = (1..=GROUPS)
        .zip(clusters)
        .map(|(g, cluster)| {
            std::thread::spawn(move || {
                for k in 1.. {
                    let leader = cluster
                        .iter()
                        .find(|r| r.state() == RaftState::Leader)
                        .cloned();
                    let Some(leader) = leader else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    let applied = leader
                        .apply(command(g, child, k), Duration::from_secs(2))
                        .wait();
                    if applied.is_ok() {
                        println!("acked {g} {child} {k}");
                    }
                    if g > BUSY_GROUPS {
                        std::thread::sleep(IDLE_PAUSE);
                    }
                }
            })
        })
        .collect();
    for client in clients {
        let _ = client.join();
    }
}

/// What the children reported applied: (group, command).
pub type Acked = BTreeSet<(u64, String)>;

/// What one node holds of one group: its log's commands, and the state machine restored from
/// its newest snapshot (the entries before the log's first index are only there).
pub struct Held {
    pub log: BTreeSet<Vec<u8>>,
    pub snapshot: KvFsm,
}

impl Held {
    pub fn holds(&self, cmd: &[u8]) -> bool {
        let (key, value) = cmd.split_at(KEY_BYTES);
        self.log.contains(cmd) || self.snapshot.value(key) == Some(value)
    }
}

/// What node `node` holds of group `group`, from its WAL and its snapshot store.
pub fn held(dir: &Path, wal: &SharedWal, node: u64, group: u64) -> Result<Held, String> {
    let at = |e: &dyn std::fmt::Display| format!("node {node}, group {group}: {e}");
    let log = wal.log(GroupId(group)).map_err(|e| at(&e))?;
    let (first, last) = (log.first_index(), log.last_index());
    let entries = if last < first {
        Vec::new()
    } else {
        log.entries(first, Index(last.0 + 1), usize::MAX)
            .map_err(|e| at(&e))?
    };
    let mut held = Held {
        log: entries.iter().map(|e| e.data.to_vec()).collect(),
        snapshot: KvFsm::new(Arc::new(Mutex::new(Digest::default()))),
    };
    let dir = snapshot_dir(dir, node, group);
    if dir.exists() {
        let store = FileSnapshotStore::new(&dir, 2).map_err(|e| at(&e))?;
        let newest = store
            .list()
            .map_err(|e| at(&e))?
            .into_iter()
            .max_by_key(|m| m.last.index);
        if let Some(meta) = newest {
            let (_, mut reader) = store.open(&meta.id).map_err(|e| at(&e))?;
            held.snapshot.restore(&mut reader).map_err(|e| at(&e))?;
        }
    }
    Ok(held)
}

/// Reopens every node's WAL and snapshot stores (node `n`'s under `roots[n - 1]`): each
/// acknowledged write must be held by a majority of the nodes, in the log of its group or in
/// its newest snapshot. Returns how many replicas held a snapshot.
pub fn check(roots: &[PathBuf], acked: &Acked) -> Result<usize, String> {
    check_held_by(roots, acked, NODES as usize / 2 + 1)
}

/// [`check`], with each write held by at least `need` of the nodes.
pub fn check_held_by(roots: &[PathBuf], acked: &Acked, need: usize) -> Result<usize, String> {
    let mut nodes: Vec<Vec<Held>> = Vec::new();
    for (node, dir) in (1..=NODES).zip(roots) {
        let wal = SharedWal::open(wal_config(dir, node))
            .map_err(|e| format!("reopen node {node}'s WAL: {e}"))?;
        let groups = (1..=GROUPS)
            .map(|g| held(dir, &wal, node, g))
            .collect::<Result<Vec<_>, _>>()?;
        nodes.push(groups);
    }
    let with_snapshots = nodes
        .iter()
        .flatten()
        .filter(|held| !held.snapshot.is_empty())
        .count();
    for (g, cmd) in acked {
        let holders = nodes
            .iter()
            .filter(|groups| groups[*g as usize - 1].holds(cmd.as_bytes()))
            .count();
        if holders < need {
            return Err(format!(
                "group {g}: the applied write {:?} is held by {holders} of {NODES} nodes",
                &cmd[..KEY_BYTES]
            ));
        }
    }
    Ok(with_snapshots)
}

/// What the parent hears from its children.
#[derive(Default)]
pub struct Heard {
    /// The writes they reported applied.
    pub acked: Acked,
    /// The groups a child saw quiesced (`quiet G`).
    pub quiet: BTreeSet<u64>,
    /// How many of them each child had applied in each group, by (child, group).
    pub per_child_group: BTreeMap<(u64, u64), u64>,
    /// How many of them started their nodes.
    pub started: u64,
    /// The last batch counts (all, asynchronous) each child reported, by its number.
    pub batches: BTreeMap<u64, (u64, u64)>,
}

impl Heard {
    /// A listener for the lines of child `child`.
    pub fn listener(heard: &Arc<Mutex<Heard>>, child: u64) -> impl FnMut(&str) + Send + 'static {
        let heard = heard.clone();
        move |line| {
            let mut heard = heard.lock().expect("heard");
            let fields = |rest: &str| -> Vec<u64> {
                rest.split_whitespace()
                    .filter_map(|f| f.parse().ok())
                    .collect()
            };
            if let Some((_, rest)) = line.rsplit_once("quiet ") {
                if let [g] = fields(rest)[..] {
                    heard.quiet.insert(g);
                }
            } else if line.trim_end().ends_with("started") {
                heard.started += 1;
            } else if let Some((_, rest)) = line.rsplit_once("batches ") {
                if let [all, asynchronous] = fields(rest)[..] {
                    heard.batches.insert(child, (all, asynchronous));
                }
            } else if let Some((_, rest)) = line.rsplit_once("acked ") {
                if let [g, c, k] = fields(rest)[..] {
                    if heard.acked.insert((g, command(g, c, k))) {
                        *heard.per_child_group.entry((c, g)).or_default() += 1;
                    }
                }
            }
        }
    }

    /// The batches every child wrote, and how many of them asynchronously.
    pub fn batches(&self) -> (u64, u64) {
        self.batches
            .values()
            .fold((0, 0), |(a, b), (all, asynchronous)| {
                (a + all, b + asynchronous)
            })
    }
}

/// Waits up to `limit` until every group has applied writes reported by a child that
/// `counts` since `before` (what [`Heard::per_child_group`] held then); else returns the
/// groups that did not.
pub fn every_group_applies(
    heard: &Mutex<Heard>,
    before: &BTreeMap<(u64, u64), u64>,
    counts: impl Fn(u64) -> bool,
    limit: Duration,
) -> Result<(), Vec<u64>> {
    let step = Duration::from_millis(50);
    let mut waited = Duration::ZERO;
    loop {
        let stalled: Vec<u64> = {
            let heard = heard.lock().expect("heard");
            (1..=GROUPS)
                .filter(|&g| {
                    !heard.per_child_group.iter().any(|(&(c, group), &n)| {
                        group == g && counts(c) && before.get(&(c, g)).is_none_or(|&b| n > b)
                    })
                })
                .collect()
        };
        if stalled.is_empty() {
            return Ok(());
        }
        if waited >= limit {
            return Err(stalled);
        }
        std::thread::sleep(step);
        waited += step;
    }
}

/// The checks over a whole run: writes were applied, replicas held snapshots, and (with the
/// io_uring backend) most batches were written asynchronously. Prints the run's figures.
pub fn check_run(test: &str, heard: &Heard, most_snapshots: usize) -> Result<(), String> {
    if heard.acked.is_empty() {
        return Err("the children never had a write applied".into());
    }
    if most_snapshots == 0 {
        return Err("no replica ever held a snapshot: nothing was compacted".into());
    }
    let (all, asynchronous) = heard.batches();
    // Asynchronous writes need the io_uring backend; a kernel without io_uring runs the
    // portable one (and the writer thread), as users there get.
    let probe = tempfile::tempdir().map_err(|e| format!("temporary directory: {e}"))?;
    let backend = SharedWal::open(WalConfig::new(probe.path()))
        .map_err(|e| format!("a WAL on the machine's file system: {e}"))?
        .info()
        .backend;
    if backend == BackendKind::IoUring && asynchronous * 2 < all {
        return Err(format!(
            "only {asynchronous} of the {all} batches the WALs wrote were asynchronous: the \
             path under test was hardly taken"
        ));
    }
    println!(
        "powerloss: {test}: {} applied writes checked, {asynchronous} of {all} batches \
         written asynchronously, up to {most_snapshots} of {} replicas held a snapshot",
        heard.acked.len(),
        NODES * GROUPS
    );
    Ok(())
}

/// Free loopback addresses for the three nodes, comma-separated.
pub fn addresses() -> Result<String, String> {
    Ok(free_addresses(NODES as usize)?
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(","))
}
