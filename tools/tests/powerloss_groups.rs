//! Power loss under a `MultiRaft` cluster (run by `tools/scripts/powerloss.sh`; needs root and
//! /dev/fuse).
//!
//! A child process (this binary, `powerloss_groups_child`) runs three `MultiRaft` nodes over
//! TCP on loopback, each with one `SharedWal` for its eight durable groups and a file snapshot
//! store per group, all on one crashfs: the shard threads submit the WAL's group commits as
//! asynchronous io_uring writes and reap them (ARCHITECTURE §5, "Writes without the writer
//! thread"), as every `MultiRaft` over TCP does. The groups snapshot every 64 entries and keep
//! 32 behind, so within every round logs are compacted on the shared WAL and snapshots
//! written and retired, and every few rounds a filled segment is reclaimed. The child starts the groups (bootstrapping them the
//! first time), writes to each group through its leader from a client thread per group, and
//! prints each write once `apply` returned it applied.
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

mod powerloss_support;

use powerloss_support::{child_round, mode_for, mount, rounds, under, Aim, CrashPoints, Rng};
use ringraft::{Config, Fsm, MultiRaft, MultiRaftConfig, Raft, RaftState};
use ringraft_crashfs::{OpKind, Phase};
use ringraft_storage::{
    BackendKind, Configuration, FileSnapshotStore, GroupId, Index, InmemStore, LogStore, NodeId,
    SharedWal, SnapshotStore, WalConfig,
};
use ringraft_tools::load::cluster::{free_addresses, Cluster, Digest, KvFsm};
use ringraft_tools::load::drive::KEY_BYTES;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CHILD_DIR: &str = "RINGRAFT_POWERLOSS_GROUPS_DIR";
const CHILD_ADDRESSES: &str = "RINGRAFT_POWERLOSS_GROUPS_ADDRESSES";
const CHILD_ROUND: &str = "RINGRAFT_POWERLOSS_GROUPS_ROUND";

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

/// The command of write `k` of round `round` to group `group`: 512 bytes, so that segments
/// fill within a few rounds. Its first [`KEY_BYTES`] (the load's state machine's key) are unique
/// over the whole test, so a snapshot holds every applied write as its own key and value.
fn command(group: u64, round: u64, k: u64) -> String {
    format!("{group:02}{round:04}{k:010} {:x<512}", "")[..512].to_string()
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

/// The child: starts the cluster from the WALs and snapshot stores under its directory, then
/// writes to every group, printing `acked G R K` for each write `apply` returned applied.
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
    let round: u64 = std::env::var(CHILD_ROUND)
        .expect("round")
        .parse()
        .expect("a round");
    let election = Cluster::election_timeout();
    let config = MultiRaftConfig {
        ping_interval: election / 10,
        silence_timeout: election,
        ..MultiRaftConfig::default()
    };
    let hosts: Vec<MultiRaft> = (1..=NODES)
        .map(|id| {
            MultiRaft::new(
                Cluster::tcp_transport(NodeId(id), &addresses),
                config.clone(),
            )
            .expect("start a node")
        })
        .collect();
    let wals: Vec<SharedWal> = (1..=NODES)
        .map(|id| SharedWal::open(wal_config(dir, id)).expect("open a WAL"))
        .collect();
    let configuration =
        Configuration::voters_with_default_addresses(hosts.iter().map(MultiRaft::id));
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
    // A client per group, so that the nodes' group commits carry several groups' entries.
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
                        .apply(command(g, round, k), Duration::from_secs(2))
                        .wait();
                    if applied.is_ok() {
                        println!("acked {g} {round} {k}");
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

/// Reopens every node's WAL and snapshot stores: each acknowledged write must be held by a
/// majority of the nodes, in the log of its group or in its newest snapshot.
fn check(dir: &Path, acked: &Acked) -> Result<usize, String> {
    let mut nodes: Vec<Vec<Held>> = Vec::new();
    for node in 1..=NODES {
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

/// Runs `rounds` power losses; returns the crash points reached and the writes acknowledged.
fn power_loss_rounds(
    rounds: u64,
    seed: u64,
    mutation: Option<&str>,
) -> Result<(CrashPoints, usize), String> {
    let Some((_dir, mut fs)) = mount(mode_for(0), seed) else {
        return Ok((CrashPoints::default(), 0));
    };
    let root = under(&fs, "nodes");
    // Durably: the WALs sync their own directories and those directories' parents, not the
    // mount's root, where a power loss would otherwise take `nodes` and everything under it.
    ringraft_storage::create_dir_durable(&root)
        .map_err(|e| format!("create {}: {e}", root.display()))?;
    let addresses = free_addresses(NODES as usize)?
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut rng = Rng::new(seed);
    let mut points = CrashPoints::default();
    let acked = Arc::new(Mutex::new(Acked::new()));
    let mut started_rounds = 0;
    // The most replicas found holding a snapshot after a round.
    let mut most_snapshots = 0;
    // Batches the children's WALs wrote, and how many of them asynchronously.
    let mut batches_written = (0, 0);
    for round in 0..rounds {
        fs.set_mode(mode_for(round));
        let trigger = AIMS[(round % AIMS.len() as u64) as usize].trigger(&mut rng);
        let heard = acked.clone();
        let started = Arc::new(Mutex::new(false));
        let said_started = started.clone();
        let batches = Arc::new(Mutex::new((0, 0)));
        let said_batches = batches.clone();
        let round_text = round.to_string();
        let report = child_round(
            &mut fs,
            trigger,
            "powerloss_groups_child",
            &[
                (CHILD_DIR, root.as_os_str()),
                (CHILD_ADDRESSES, std::ffi::OsStr::new(&addresses)),
                (CHILD_ROUND, std::ffi::OsStr::new(&round_text)),
            ],
            mutation,
            move |line| {
                if line.trim_end().ends_with("started") {
                    *said_started.lock().expect("started") = true;
                }
                if let Some((_, rest)) = line.rsplit_once("batches ") {
                    let fields: Vec<u64> = rest
                        .split_whitespace()
                        .filter_map(|f| f.parse().ok())
                        .collect();
                    if let [all, asynchronous] = fields[..] {
                        *said_batches.lock().expect("batches") = (all, asynchronous);
                    }
                }
                let Some((_, rest)) = line.rsplit_once("acked ") else {
                    return;
                };
                let fields: Vec<u64> = rest
                    .split_whitespace()
                    .filter_map(|f| f.parse().ok())
                    .collect();
                if let [g, r, k] = fields[..] {
                    heard.lock().expect("acked").insert((g, command(g, r, k)));
                }
            },
        );
        points.record(&report.label);
        if *started.lock().expect("started") {
            started_rounds += 1;
        }
        let (all, asynchronous) = *batches.lock().expect("batches");
        batches_written.0 += all;
        batches_written.1 += asynchronous;
        let acked = acked.lock().expect("acked");
        let with_snapshots =
            check(&root, &acked).map_err(|e| format!("round {round}, crash {report:?}: {e}"))?;
        most_snapshots = most_snapshots.max(with_snapshots);
    }
    let acked = acked.lock().expect("acked").len();
    if acked == 0 {
        return Err("the children never had a write applied".into());
    }
    // A child that cannot recover the groups from their WALs never starts writing.
    if started_rounds * 2 < rounds {
        return Err(format!(
            "the children started the cluster in only {started_rounds} of {rounds} rounds"
        ));
    }
    if most_snapshots == 0 {
        return Err("no replica ever held a snapshot: nothing was compacted".into());
    }
    let (all, asynchronous) = batches_written;
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
        "powerloss: groups: {acked} applied writes checked, the cluster started in \
         {started_rounds} of {rounds} rounds, {asynchronous} of {all} batches written \
         asynchronously, up to {most_snapshots} of {} replicas held a snapshot",
        NODES * GROUPS
    );
    Ok((points, acked))
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
