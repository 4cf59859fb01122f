//! Power loss under a `MultiRaft` cluster (run by `tools/scripts/powerloss.sh`; needs root and
//! /dev/fuse).
//!
//! A child process (this binary, `powerloss_groups_child`) runs three `MultiRaft` nodes over
//! TCP on loopback, each with one `SharedWal` for its eight durable groups and a file snapshot
//! store per group, all on one crashfs: the shard threads submit the WAL's group commits as
//! asynchronous io_uring writes and reap them (ARCHITECTURE §5, "Writes without the writer
//! thread"), as every `MultiRaft` over TCP does. The groups snapshot every 64 entries and keep
//! 32 behind, so within every round logs are compacted on the shared WAL and snapshots
//! written and retired, and every few rounds a filled segment is reclaimed. The child starts
//! the groups (bootstrapping them the first time), writes to each group through its leader from
//! a client thread per group, and prints each write once `apply` returned it applied.
//!
//! The power fails under all three nodes at once: at a WAL write or sync (after a random number
//! of them, so it falls during bootstrap, elections or writes), as a spare segment or a
//! snapshot is renamed into place, or as a reclaimed segment is deleted. The child is killed
//! and the file system comes back with only what was synced (all of it dropped, or a random
//! prefix with a torn write). The parent then reopens every node's WAL and snapshot stores:
//! each write any child reported applied must be held by at least two of the three nodes (a
//! majority: what commit promised), in its group's log or in the group's newest snapshot. Over
//! the run, replicas must have held snapshots and, with the io_uring backend, most batches must
//! have been written asynchronously (the children print their WALs' counts). The next round's
//! child recovers the groups from those stores and writes on, so recovery after each power
//! loss is exercised too; the test fails if the children started the cluster in fewer than
//! half of the rounds.
//!
//! A node at a time (`applied_writes_of_many_groups_survive_a_node_losing_power`): each node
//! runs in its own child process (the same child with `RINGRAFT_POWERLOSS_GROUPS_NODE`) on its
//! own crashfs, and writes to the groups it leads. In four rounds of five the power fails under
//! one node while the other two go on electing and writing; that node is killed, its file
//! system comes back with what was synced, and it starts again and catches up (from the
//! leaders' logs or their snapshots). Every fifth round, and after the last, the power fails
//! under all three, and every node's stores are checked as above. The test fails if the
//! cluster did not apply writes again after three rounds in four.

mod powerloss_support;

use powerloss_support::{
    child_round, mode_for, mount, rounds, under, Aim, Child, CrashPoints, Rng,
};
use ringraft::{Config, Fsm, MultiRaft, MultiRaftConfig, Raft, RaftState};
use ringraft_crashfs::{OpKind, Phase};
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

const CHILD_DIR: &str = "RINGRAFT_POWERLOSS_GROUPS_DIR";
const CHILD_ADDRESSES: &str = "RINGRAFT_POWERLOSS_GROUPS_ADDRESSES";
/// The child's number, unique over the test: its writes' keys carry it.
const CHILD_NUMBER: &str = "RINGRAFT_POWERLOSS_GROUPS_CHILD";
/// Set: the child runs only this node (the others run in their own processes).
const CHILD_NODE: &str = "RINGRAFT_POWERLOSS_GROUPS_NODE";

/// Groups per node.
const GROUPS: u64 = 8;
/// Nodes, all in the child process.
const NODES: u64 = 3;

/// Where the power fails: the three nodes' WAL segments (`/wal/`), at a write or a sync,
/// after skipping up to that many of them (the start, with WALs opened, groups bootstrapped
/// and leaders elected, takes a few dozen; a second of writes about a thousand); at the rename
/// that puts a spare segment in place (1 MiB segments and 512-byte commands, so segments fill
/// within a few rounds); at a snapshot's rename into place; or as a segment every group has
/// compacted past is deleted. A round whose trigger is not reached within three seconds loses
/// its power then (`now:`).
const AIMS: [Aim; 6] = [
    Aim::new(OpKind::Fsync, Phase::Before, "/wal/", 500),
    Aim::new(OpKind::Write, Phase::After, "/wal/", 500),
    Aim::new(OpKind::Fsync, Phase::After, "/wal/", 500),
    Aim::new(OpKind::Rename, Phase::After, "/wal/", 4),
    // A snapshot just renamed into place, its directory not yet synced.
    Aim::new(OpKind::Rename, Phase::After, "/snapshots/", 40),
    // A segment whose every group's entries are compacted (or were rewritten) being deleted.
    Aim::new(OpKind::Remove, Phase::Before, ".seg", 2),
];

fn wal_config(dir: &Path, node: u64) -> WalConfig {
    WalConfig {
        segment_size_bytes: 1 << 20,
        max_entry_bytes: 64 << 10,
        ..WalConfig::new(dir.join(format!("node-{node}")).join("wal"))
    }
}

/// The command of write `k` of child `child` to group `group`: 512 bytes, so that segments
/// fill within a few rounds. Its first [`KEY_BYTES`] (the load's state machine's key) are unique
/// over the whole test, so a snapshot holds every applied write as its own key and value.
fn command(group: u64, child: u64, k: u64) -> String {
    format!("{group:02}{child:04}{k:010} {:x<512}", "")[..512].to_string()
}

/// Where node `node` keeps group `group`'s snapshots.
fn snapshot_dir(dir: &Path, node: u64, group: u64) -> std::path::PathBuf {
    dir.join(format!("node-{node}"))
        .join("snapshots")
        .join(format!("g{group}"))
}

/// Group `group`'s replica on `host`: its share of the node's WAL (which keeps its hard state
/// too) and a file snapshot store, snapshotting every 64 entries and keeping 32 behind, so
/// that logs are compacted and snapshots written within every round (and filled segments
/// reclaimed every few).
fn start_replica(
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
#[test]
#[ignore = "the child process of the power-loss tests"]
fn powerloss_groups_child() {
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
    // A client per group, so that the nodes' group commits carry several groups' entries. It
    // writes through the group's leader when that is one of this child's replicas.
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
                }
            })
        })
        .collect();
    for client in clients {
        let _ = client.join();
    }
}

/// What the children reported applied: (group, command).
type Acked = BTreeSet<(u64, String)>;

/// What one node holds of one group: its log's commands, and the state machine restored from
/// its newest snapshot (the entries before the log's first index are only there).
struct Held {
    log: BTreeSet<Vec<u8>>,
    snapshot: KvFsm,
}

impl Held {
    fn holds(&self, cmd: &[u8]) -> bool {
        let (key, value) = cmd.split_at(KEY_BYTES);
        self.log.contains(cmd) || self.snapshot.value(key) == Some(value)
    }
}

/// What node `node` holds of group `group`, from its WAL and its snapshot store.
fn held(dir: &Path, wal: &SharedWal, node: u64, group: u64) -> Result<Held, String> {
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
fn check(roots: &[PathBuf], acked: &Acked) -> Result<usize, String> {
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
        if holders * 2 <= NODES as usize {
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
struct Heard {
    /// The writes they reported applied.
    acked: Acked,
    /// How many of them started their nodes.
    started: u64,
    /// The last batch counts (all, asynchronous) each child reported, by its number.
    batches: BTreeMap<u64, (u64, u64)>,
}

impl Heard {
    /// A listener for the lines of child `child`.
    fn listener(heard: &Arc<Mutex<Heard>>, child: u64) -> impl FnMut(&str) + Send + 'static {
        let heard = heard.clone();
        move |line| {
            let mut heard = heard.lock().expect("heard");
            let fields = |rest: &str| -> Vec<u64> {
                rest.split_whitespace()
                    .filter_map(|f| f.parse().ok())
                    .collect()
            };
            if line.trim_end().ends_with("started") {
                heard.started += 1;
            } else if let Some((_, rest)) = line.rsplit_once("batches ") {
                if let [all, asynchronous] = fields(rest)[..] {
                    heard.batches.insert(child, (all, asynchronous));
                }
            } else if let Some((_, rest)) = line.rsplit_once("acked ") {
                if let [g, c, k] = fields(rest)[..] {
                    heard.acked.insert((g, command(g, c, k)));
                }
            }
        }
    }

    /// The batches every child wrote, and how many of them asynchronously.
    fn batches(&self) -> (u64, u64) {
        self.batches
            .values()
            .fold((0, 0), |(a, b), (all, asynchronous)| {
                (a + all, b + asynchronous)
            })
    }
}

/// The checks over a whole run: writes were applied, replicas held snapshots, and (with the
/// io_uring backend) most batches were written asynchronously. Prints the run's figures.
fn check_run(test: &str, heard: &Heard, most_snapshots: usize) -> Result<(), String> {
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

/// Runs `rounds` power losses under all three nodes (in one child process) at once; returns
/// the crash points reached and the writes acknowledged.
fn power_loss_rounds(
    rounds: u64,
    seed: u64,
    mutation: Option<&str>,
) -> Result<(CrashPoints, usize), String> {
    let Some((_dir, mut fs)) = mount(mode_for(0), seed) else {
        return Ok((CrashPoints::default(), 0));
    };
    let root = durable_root(&fs)?;
    let addresses = addresses()?;
    let mut rng = Rng::new(seed);
    let mut points = CrashPoints::default();
    let heard = Arc::new(Mutex::new(Heard::default()));
    // The most replicas found holding a snapshot after a round.
    let mut most_snapshots = 0;
    for round in 0..rounds {
        fs.set_mode(mode_for(round));
        let trigger = AIMS[(round % AIMS.len() as u64) as usize].trigger(&mut rng);
        let round_text = round.to_string();
        let report = child_round(
            &mut fs,
            trigger,
            "powerloss_groups_child",
            &[
                (CHILD_DIR, root.as_os_str()),
                (CHILD_ADDRESSES, std::ffi::OsStr::new(&addresses)),
                (CHILD_NUMBER, std::ffi::OsStr::new(&round_text)),
            ],
            mutation,
            Heard::listener(&heard, round),
        );
        points.record(&report.label);
        let heard = heard.lock().expect("heard");
        let roots = [root.clone(), root.clone(), root.clone()];
        let with_snapshots = check(&roots, &heard.acked)
            .map_err(|e| format!("round {round}, crash {report:?}: {e}"))?;
        most_snapshots = most_snapshots.max(with_snapshots);
    }
    let heard = heard.lock().expect("heard");
    // A child that cannot recover the groups from their WALs never starts writing.
    if heard.started * 2 < rounds {
        return Err(format!(
            "the children started the cluster in only {} of {rounds} rounds",
            heard.started
        ));
    }
    check_run("groups", &heard, most_snapshots)?;
    Ok((points, heard.acked.len()))
}

/// The directory `nodes` under the mount, created durably: the WALs sync their own directories
/// and those directories' parents, not the mount's root, where a power loss would otherwise
/// take `nodes` and everything under it.
fn durable_root(fs: &ringraft_crashfs::CrashFs) -> Result<PathBuf, String> {
    let root = under(fs, "nodes");
    ringraft_storage::create_dir_durable(&root)
        .map_err(|e| format!("create {}: {e}", root.display()))?;
    Ok(root)
}

/// Free loopback addresses for the three nodes, comma-separated.
fn addresses() -> Result<String, String> {
    Ok(free_addresses(NODES as usize)?
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(","))
}

/// Runs `rounds` power losses with each node in its own child process on its own crashfs: in
/// most rounds the power fails under one node while the other two go on (and the node comes
/// back from what it had synced, to catch up with them); in every fifth round, and after the
/// last, under all three at once, after which every node's stores are checked. Returns the
/// crash points reached and the writes acknowledged.
fn node_power_loss_rounds(
    rounds: u64,
    seed: u64,
    mutation: Option<&str>,
) -> Result<(CrashPoints, usize), String> {
    let mut disks = Vec::new();
    for node in 1..=NODES {
        let Some(disk) = mount(mode_for(0), seed * 10 + node) else {
            return Ok((CrashPoints::default(), 0));
        };
        disks.push(disk);
    }
    let roots = disks
        .iter()
        .map(|(_, fs)| durable_root(fs))
        .collect::<Result<Vec<_>, _>>()?;
    let addresses = addresses()?;
    let heard = Arc::new(Mutex::new(Heard::default()));
    let mut spawned = 0;
    let mut spawn = |node: u64| {
        spawned += 1;
        let (number, node_text) = (spawned.to_string(), node.to_string());
        Child::spawn(
            "powerloss_groups_child",
            &[
                (CHILD_DIR, roots[node as usize - 1].as_os_str()),
                (CHILD_ADDRESSES, std::ffi::OsStr::new(&addresses)),
                (CHILD_NUMBER, std::ffi::OsStr::new(&number)),
                (CHILD_NODE, std::ffi::OsStr::new(&node_text)),
            ],
            mutation,
            Heard::listener(&heard, spawned),
        )
    };
    let mut children: Vec<Option<Child>> = (1..=NODES).map(|node| Some(spawn(node))).collect();
    let acked = || heard.lock().expect("heard").acked.len();
    let mut rng = Rng::new(seed);
    let mut points = CrashPoints::default();
    let mut most_snapshots = 0;
    // Rounds after which the cluster applied writes again.
    let mut went_on = 0;
    for round in 0..=rounds {
        let last = round == rounds;
        let all = last || round % 5 == 4;
        let victims: Vec<u64> = if all {
            (1..=NODES).collect()
        } else {
            vec![1 + rng.below(NODES)]
        };
        let scenario = if all { "all" } else { "one" };
        // The first victim's power fails at a chosen operation if it comes within three
        // seconds (the last round's at once), then every other victim's.
        let (_, first) = &disks[victims[0] as usize - 1];
        first.set_mode(mode_for(round));
        let report = if last {
            first.crash()
        } else {
            first.arm(AIMS[(round % AIMS.len() as u64) as usize].trigger(&mut rng));
            first
                .wait_crashed(Duration::from_secs(3))
                .unwrap_or_else(|| first.crash())
        };
        points.record(&format!("nodes {scenario} {}", report.label));
        for &node in &victims[1..] {
            let (_, fs) = &disks[node as usize - 1];
            fs.set_mode(mode_for(round + node));
            let report = fs.crash();
            points.record(&format!("nodes {scenario} {}", report.label));
        }
        for &node in &victims {
            if let Some(child) = children[node as usize - 1].take() {
                child.kill();
            }
            let (_, fs) = &mut disks[node as usize - 1];
            fs.disarm();
            fs.restart().map_err(|e| format!("restart crashfs: {e}"))?;
        }
        if all {
            let heard = heard.lock().expect("heard");
            let with_snapshots = check(&roots, &heard.acked)
                .map_err(|e| format!("round {round}, crash {report:?}: {e}"))?;
            most_snapshots = most_snapshots.max(with_snapshots);
        }
        if last {
            break;
        }
        for &node in &victims {
            children[node as usize - 1] = Some(spawn(node));
        }
        // Until the cluster applies writes again (at most ten seconds).
        let before = acked();
        for _ in 0..200 {
            if acked() >= before + 20 {
                went_on += 1;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    drop(children);
    let heard = heard.lock().expect("heard");
    if went_on * 4 < rounds * 3 {
        return Err(format!(
            "the cluster applied writes again after only {went_on} of {rounds} rounds"
        ));
    }
    check_run("groups, a node at a time", &heard, most_snapshots)?;
    println!(
        "powerloss: groups, a node at a time: {} of {spawned} node processes started, the \
         cluster applied writes again after {went_on} of {rounds} rounds",
        heard.started
    );
    Ok((points, heard.acked.len()))
}

#[test]
#[ignore = "needs root and /dev/fuse: tools/scripts/powerloss.sh"]
fn applied_writes_of_many_groups_survive_power_loss() {
    // Each round starts a three-node cluster: fewer rounds than the storage tests.
    let rounds = rounds(48).div_ceil(4);
    let (points, _) = power_loss_rounds(rounds, 3, None).unwrap_or_else(|e| panic!("{e}"));
    if rounds >= AIMS.len() as u64 {
        points.finish(
            "groups",
            &[
                "fsync-before:/nodes/node-#/wal/",
                "write-after:/nodes/node-#/wal/",
                "rename-after:/nodes/node-#/wal/",
            ],
        );
    }
}

#[test]
#[ignore = "needs root and /dev/fuse: tools/scripts/powerloss.sh"]
fn groups_on_a_wal_that_skips_fdatasync_are_caught() {
    let found = power_loss_rounds(rounds(48).div_ceil(4), 4, Some("skip-wal-fdatasync"));
    match found {
        Err(e) => println!("powerloss: mutation skip-wal-fdatasync caught under groups: {e}"),
        Ok((points, _)) if points.rounds() == 0 => {} // not mounted: skipped
        Ok(_) => panic!("groups on a WAL that never calls fdatasync survived every power loss"),
    }
}

#[test]
#[ignore = "needs root and /dev/fuse: tools/scripts/powerloss.sh"]
fn applied_writes_of_many_groups_survive_a_node_losing_power() {
    let rounds = rounds(48).div_ceil(4);
    let (points, _) = node_power_loss_rounds(rounds, 5, None).unwrap_or_else(|e| panic!("{e}"));
    if rounds >= AIMS.len() as u64 {
        points.finish(
            "groups, a node at a time",
            &[
                "nodes one fsync-before:/nodes/node-#/wal/",
                "nodes one write-after:/nodes/node-#/wal/",
                "nodes all ",
            ],
        );
    }
}

#[test]
#[ignore = "needs root and /dev/fuse: tools/scripts/powerloss.sh"]
fn nodes_on_a_wal_that_skips_fdatasync_are_caught() {
    let found = node_power_loss_rounds(rounds(48).div_ceil(4), 6, Some("skip-wal-fdatasync"));
    match found {
        Err(e) => println!("powerloss: mutation skip-wal-fdatasync caught a node at a time: {e}"),
        Ok((points, _)) if points.rounds() == 0 => {} // not mounted: skipped
        Ok(_) => panic!("nodes on a WAL that never calls fdatasync survived every power loss"),
    }
}
