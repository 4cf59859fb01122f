//! Many Raft groups in one process (`ringraft-load --groups N --active M`): how long until
//! every group has a leader, what idle groups cost (CPU, resident memory, threads), the
//! writes of the active ones, how long the groups a frozen node led take to elect others,
//! and, durable, how long a restart of the whole process takes.
//!
//! Each of the `nodes` nodes is a [`MultiRaft`]: one shard thread and one transport endpoint
//! for every group's replica on it, peer nodes pinged for liveness, idle groups quiesced
//! (ARCHITECTURE §14). In memory, the transport is the in-memory network and the stores are
//! in memory. Durable, each node has one TCP listener and one [`SharedWal`] holding every
//! group's log and hard state (one group commit for all the node's groups); snapshots stay in
//! memory, and a run that takes one fails rather than claim a restart it did not test.

use super::cluster::{Cluster, Digest};
use super::drive::{self, Load, Outcome};
use super::freeze::Freezable;
use super::report::{process_cpu_secs, CpuMark, CpuWindow};
use ringraft::{MultiRaft, MultiRaftConfig, Raft, RaftState};
use ringraft_net::memory::MemNetwork;
use ringraft_storage::{Configuration, GroupId, NodeId, SharedWal, WalConfig};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Groups bootstrapped at a time when a run starts (see `Nodes::start_groups`), as an
/// application starting thousands of groups would: one fsync per group, each waited for
/// before the next group started, took 3–5 s of a durable 10 000-group start on this VM's
/// disk (docs/PERFORMANCE.md, session 13).
const BOOTSTRAP_WINDOW: usize = 256;

/// What to run.
#[derive(Clone, Debug)]
pub struct GroupsRun {
    /// Groups to start.
    pub groups: usize,
    /// Nodes (replicas per group).
    pub nodes: u64,
    /// Groups the clients write to.
    pub active: usize,
    /// Writes before the measured ones.
    pub warmup: u64,
    /// The quiet window over which idle CPU is measured.
    pub idle_window: Duration,
    /// How long to wait for every group's leader.
    pub elect_limit: Duration,
    /// Durable: TCP on loopback and one WAL per node in `dir/node-K/wal`. `None`: in memory.
    pub durable: Option<PathBuf>,
    /// Durable only: stop every node after the writes, start them again from their WALs, and
    /// check every group.
    pub restart: bool,
    /// `MultiRaftConfig::campaign_slots` of every node (`None`: the library's default).
    pub campaign_slots: Option<usize>,
    /// `MultiRaftConfig::shards` of every node (`None`: the library's default).
    pub shards: Option<usize>,
    /// `MultiRaftConfig::ping_interval` of every node (`None`: [`default_ping_interval`]).
    pub ping_interval: Option<Duration>,
    /// After the writes, cut off the node that leads the most groups (its messages lost, its
    /// connections open: a frozen node) and time how long until every group it led has a
    /// leader among the others.
    pub failover: bool,
}

/// The load's ping interval unless told otherwise: a quarter of the silence timeout (the
/// groups' election timeout), as the library's default is. A silence is reported when it
/// reaches the timeout whatever the ping interval (ARCHITECTURE §14); more frequent pings
/// only wake every node more often.
pub fn default_ping_interval() -> Duration {
    Cluster::election_timeout() / 4
}

/// What cutting off one node found (`--failover`).
pub struct FailoverOutcome {
    /// The node cut off: the one that led the most groups.
    pub node: u64,
    /// Groups it led when it was cut off.
    pub led: usize,
    /// Of those, the groups that had a leader among the other nodes within the limit.
    pub moved: usize,
    /// Seconds from the cut until the last of them had one (`None`: not all within the
    /// limit).
    pub secs: Option<f64>,
}

/// What a restart of every node found.
pub struct RestartOutcome {
    /// Seconds to open the nodes' WALs (recovery of every group's log).
    pub open_secs: f64,
    /// Seconds to start every group again (part of `elect_all_secs`).
    pub start_secs: f64,
    /// Campaigns that waited for a slot after the restart, over all nodes.
    pub campaigns_deferred: u64,
    /// Seconds from the first group's start until every group had a leader (`None`: not
    /// within the limit).
    pub elect_all_secs: Option<f64>,
    /// Groups whose committed state came back: a leader, every entry committed before the
    /// restart applied, and (for active groups) the same state machine digest.
    pub recovered: usize,
}

/// What a multi-group run measured.
pub struct GroupsOutcome {
    /// Groups started.
    pub groups: usize,
    /// Groups that had a leader within the limit.
    pub elected: usize,
    /// Seconds to start and bootstrap every group on every node (part of `elect_all_secs`).
    pub start_secs: f64,
    /// Campaigns that waited for a slot (`MultiRaftConfig::campaign_slots`) until every
    /// group had a leader, over all nodes.
    pub campaigns_deferred: u64,
    /// Seconds from the first group's start until every group had a leader (`None`: not
    /// within the limit).
    pub elect_all_secs: Option<f64>,
    /// Process CPU over the quiet window, as a percentage of one core.
    pub idle_cpu_pct: f64,
    /// Resident memory the groups added, per replica, in bytes.
    pub rss_per_replica_bytes: u64,
    /// Threads in the process once every group started.
    pub threads: u64,
    /// The measured writes to the active groups, if any were asked for, and the process's CPU
    /// time and the machine's steal over them.
    pub load: Option<(Outcome, CpuWindow)>,
    /// The restart, if one was asked for.
    pub restart: Option<RestartOutcome>,
    /// The failover, if one was asked for.
    pub failover: Option<FailoverOutcome>,
}

/// The nodes of a run: hosts, and their WALs when durable.
struct Nodes {
    hosts: Vec<MultiRaft>,
    /// Durable: each node's switch that freezes its TCP transport (see [`Freezable`]).
    freezes: Vec<Arc<AtomicBool>>,
    wals: Option<Vec<SharedWal>>,
    /// Seconds it took to open the WALs (recovering every group's log).
    wal_open_secs: f64,
}

impl Nodes {
    fn start(
        run: &GroupsRun,
        network: &MemNetwork,
        addresses: &[std::net::SocketAddr],
    ) -> Result<Nodes, String> {
        let election = Cluster::election_timeout();
        let defaults = MultiRaftConfig::default();
        let watch = MultiRaftConfig {
            ping_interval: run.ping_interval.unwrap_or_else(default_ping_interval),
            silence_timeout: election,
            campaign_slots: run.campaign_slots.unwrap_or(defaults.campaign_slots),
            shards: run.shards.unwrap_or(defaults.shards),
            ..defaults
        };
        let mut hosts = Vec::new();
        let mut freezes = Vec::new();
        for id in (1..=run.nodes).map(NodeId) {
            let host = match &run.durable {
                None => MultiRaft::new(network.transport(id), watch.clone()),
                Some(_) => {
                    let (tcp, freeze) = Freezable::new(Cluster::tcp_transport(id, addresses));
                    freezes.push(freeze);
                    MultiRaft::new(tcp, watch.clone())
                }
            };
            hosts.push(host.map_err(|e| format!("starting node {}: {e}", id.0))?);
        }
        let opened = super::drive::now();
        let wals = match &run.durable {
            None => None,
            Some(dir) => Some(
                (1..=run.nodes)
                    .map(|id| {
                        let path = dir.join(format!("node-{id}")).join("wal");
                        SharedWal::open(WalConfig::new(&path))
                            .map_err(|e| format!("opening {}: {e}", path.display()))
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        Ok(Nodes {
            hosts,
            freezes,
            wals,
            wal_open_secs: opened.elapsed().as_secs_f64(),
        })
    }

    /// Campaigns that waited for a slot so far, over all nodes.
    fn campaigns_deferred(&self) -> u64 {
        self.hosts
            .iter()
            .map(|h| h.stats().campaigns_deferred)
            .sum()
    }

    /// Starts `groups` groups and, if `bootstrap`, bootstraps them [`BOOTSTRAP_WINDOW`] at a
    /// time: a window's bootstraps are asked at once and waited for together, so each node's
    /// WAL writes them in a few group commits instead of one fsync per group.
    fn start_groups(&self, groups: usize, bootstrap: bool) -> Result<Vec<Cluster>, String> {
        let configuration =
            Configuration::voters_with_default_addresses(self.hosts.iter().map(|h| h.id()));
        let mut clusters = Vec::with_capacity(groups);
        let mut pending = Vec::new();
        for g in 0..groups {
            let group = GroupId(g as u64 + 1);
            let replicas = self
                .hosts
                .iter()
                .enumerate()
                .map(|(i, host)| {
                    let wal = self.wals.as_deref().and_then(|w| w.get(i));
                    Cluster::start_replica(host, wal, group)
                })
                .collect::<Result<Vec<_>, _>>()?;
            if bootstrap {
                pending.extend(
                    replicas
                        .iter()
                        .map(|(raft, _)| raft.bootstrap_cluster(configuration.clone())),
                );
            }
            clusters.push(Cluster::of_replicas(replicas));
            if (g + 1) % BOOTSTRAP_WINDOW == 0 || g + 1 == groups {
                for b in pending.drain(..) {
                    b.wait().map_err(|e| format!("bootstrap: {e}"))?;
                }
            }
        }
        Ok(clusters)
    }
}

/// Starts `run.groups` groups of `run.nodes` nodes, waits for their leaders, measures the
/// idle window, runs `load` spread over the leaders of the first `run.active` groups (none if
/// 0), and restarts every node if asked.
pub fn run(run: &GroupsRun, load: &Load) -> Result<GroupsOutcome, String> {
    if run.failover && run.nodes < 3 {
        return Err(format!(
            "--failover needs at least 3 nodes (with {}, the others hold no majority)",
            run.nodes
        ));
    }
    let network = MemNetwork::new();
    let addresses = match run.durable {
        Some(_) => super::cluster::free_addresses(run.nodes as usize)?,
        None => Vec::new(),
    };
    let nodes = Nodes::start(run, &network, &addresses)?;
    let rss_before = resident_bytes();
    let started = super::drive::now();
    let clusters = nodes.start_groups(run.groups, true)?;
    let start_secs = started.elapsed().as_secs_f64();
    let threads = thread_count();
    let (elected, elect_all_secs) = wait_for_leaders(&clusters, started, run.elect_limit);
    let campaigns_deferred = nodes.campaigns_deferred();
    // A quiet window: every group idle.
    std::thread::sleep(Duration::from_millis(500));
    let cpu_before = process_cpu_secs();
    let window_start = super::drive::now();
    std::thread::sleep(run.idle_window);
    let cpu = process_cpu_secs() - cpu_before;
    let idle_cpu_pct = 100.0 * cpu / window_start.elapsed().as_secs_f64();
    // Resident memory once idle (the process's high-water mark of the groups' start and
    // elections: freed memory stays resident with the allocator). It includes each replica's
    // state machine and stores.
    let rss_after = resident_bytes();
    let replicas = (run.groups as u64 * run.nodes).max(1);
    let rss_per_replica_bytes = rss_after.saturating_sub(rss_before) / replicas;
    let load_outcome = if run.active > 0 && elected == run.groups {
        let leaders: Vec<Raft> = clusters
            .iter()
            .take(run.active)
            .map(|c| c.leader(run.elect_limit))
            .collect::<Result<_, _>>()?;
        if run.warmup > 0 {
            let warm = Load {
                ops: Some(run.warmup),
                rate: None,
                progress: false,
                ..load.clone()
            };
            drive::run(&leaders, &warm)?;
        }
        let mark = CpuMark::now();
        let outcome = drive::run(&leaders, load)?;
        Some((outcome, mark.end()))
    } else {
        None
    };
    let failover = if run.failover && elected == run.groups {
        Some(failover(
            &network,
            &nodes.freezes,
            &clusters,
            run.elect_limit,
        ))
    } else {
        None
    };
    let restart = if run.restart && run.durable.is_some() && elected == run.groups {
        Some(restart(run, &network, &addresses, nodes, clusters)?)
    } else {
        for cluster in &clusters {
            cluster.shutdown();
        }
        None
    };
    Ok(GroupsOutcome {
        groups: run.groups,
        elected,
        start_secs,
        campaigns_deferred,
        elect_all_secs,
        idle_cpu_pct,
        rss_per_replica_bytes,
        threads,
        load: load_outcome,
        restart,
        failover,
    })
}

/// Cuts off the node that leads the most groups (every message to or from it lost, as when a
/// node freezes or a switch fails: no connection breaks, so only the other nodes' watch of
/// its silence tells its groups), waits until every group it led has a leader among the
/// others, and heals the network. In memory the network is partitioned; durable, the node's
/// TCP transport is frozen (`freezes`, one per node).
fn failover(
    network: &MemNetwork,
    freezes: &[Arc<AtomicBool>],
    clusters: &[Cluster],
    limit: Duration,
) -> FailoverOutcome {
    let nodes = clusters.first().map_or(0, |c| c.nodes.len());
    let leader_of = |c: &Cluster| {
        c.nodes
            .iter()
            .position(|(r, _)| r.state() == RaftState::Leader)
    };
    let mut led = vec![Vec::new(); nodes];
    for (g, cluster) in clusters.iter().enumerate() {
        if let Some(i) = leader_of(cluster) {
            led[i].push(g);
        }
    }
    let victim = (0..nodes).max_by_key(|&i| led[i].len()).unwrap_or(0);
    let ids: Vec<NodeId> = (1..=nodes as u64).map(NodeId).collect();
    let others: Vec<NodeId> = ids
        .iter()
        .copied()
        .filter(|id| *id != ids[victim])
        .collect();
    let cut = super::drive::now();
    match freezes.get(victim) {
        Some(freeze) => freeze.store(true, Ordering::Relaxed),
        None => network.partition(&[&ids[victim..=victim], &others]),
    }
    let mut waiting = led[victim].clone();
    let secs = loop {
        waiting.retain(|&g| {
            !clusters[g]
                .nodes
                .iter()
                .enumerate()
                .any(|(i, (r, _))| i != victim && r.state() == RaftState::Leader)
        });
        if waiting.is_empty() {
            break Some(cut.elapsed().as_secs_f64());
        }
        if cut.elapsed() > limit {
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    match freezes.get(victim) {
        Some(freeze) => freeze.store(false, Ordering::Relaxed),
        None => network.heal(),
    }
    FailoverOutcome {
        node: victim as u64 + 1,
        led: led[victim].len(),
        moved: led[victim].len() - waiting.len(),
        secs,
    }
}

/// What a group must hold after a restart: every entry committed before it, and for groups
/// that took writes, the same state machine.
struct Expected {
    committed: u64,
    digest: Option<Digest>,
}

/// Commits a barrier in every group, [`WAVE`] groups at a time, and returns each group's
/// barrier index (`None` for the groups that had not committed one when `limit` ran out).
fn barriers(clusters: &[Cluster], limit: Duration) -> Vec<Option<u64>> {
    let deadline = super::drive::now() + limit;
    let mut out = Vec::with_capacity(clusters.len());
    for (k, wave) in clusters.chunks(WAVE).enumerate() {
        if k > 0 {
            // Let the last wave fall quiet again before waking the next.
            std::thread::sleep(2 * Cluster::election_timeout());
        }
        out.extend(barriers_at_once(wave, deadline));
    }
    out
}

/// Groups woken together by the restart check, one wave every two election timeouts: up to
/// 10 000 at once, as an application touching every shard would. Before campaign slots and
/// the quiescence rule that accepts late acknowledgements (ARCHITECTURE §14), 10 000 groups
/// woken at once on this 2-core VM never fell quiet again, and the check used waves of 500.
const WAVE: usize = 10_000;

/// Commits a barrier in every group at once (through its leader now, or the next one) and
/// returns each group's barrier index, or `None` if `deadline` passed first.
fn barriers_at_once(clusters: &[Cluster], deadline: Instant) -> Vec<Option<u64>> {
    let mut out: Vec<Option<u64>> = vec![None; clusters.len()];
    let mut pass = 0u32;
    loop {
        // Every group still without a barrier, all at once through its leader of the moment.
        // Waking thousands of quiesced groups at once can cost some their leader (their
        // followers' acknowledgements come late): the next pass asks the next leader, as a
        // client would.
        let pending: Vec<(usize, Option<_>)> = out
            .iter()
            .enumerate()
            .filter(|(_, done)| done.is_none())
            .map(|(g, _)| {
                let leader = clusters[g]
                    .nodes
                    .iter()
                    .find(|(r, _)| r.state() == RaftState::Leader);
                (g, leader.map(|(r, _)| r.barrier(Duration::ZERO)))
            })
            .collect();
        if pending.is_empty() {
            break;
        }
        for (g, barrier) in pending {
            out[g] = barrier.and_then(|b| b.wait().ok()).map(|index| index.0);
        }
        if out.iter().all(Option::is_some) || super::drive::now() >= deadline {
            break;
        }
        pass += 1;
        // Leaders being elected: a moment before the next pass (longer as passes go by).
        std::thread::sleep(Duration::from_millis(20 * u64::from(pass.min(10))));
    }
    out
}

/// Waits (at most `limit`) until every replica of every group applied through its group's
/// target index; returns each group's replicas' digests, or `None` for a group that did not
/// get there.
fn applied_through(
    clusters: &[Cluster],
    targets: &[u64],
    limit: Duration,
) -> Vec<Option<Vec<Digest>>> {
    let started = super::drive::now();
    // `u64::MAX`: a group with nothing to wait for (it committed no barrier).
    let behind = |(cluster, &target): (&Cluster, &u64)| {
        target != u64::MAX
            && cluster
                .nodes
                .iter()
                .any(|(r, _)| r.applied_index().0 < target)
    };
    while clusters.iter().zip(targets).any(behind) && started.elapsed() < limit {
        std::thread::sleep(Duration::from_millis(5));
    }
    clusters
        .iter()
        .zip(targets)
        .map(|(cluster, target)| {
            (*target != u64::MAX && !behind((cluster, target))).then(|| {
                cluster
                    .nodes
                    .iter()
                    .map(|(_, d)| *d.lock().unwrap_or_else(|p| p.into_inner()))
                    .collect()
            })
        })
        .collect()
}

/// Records every group's committed state, stops every node, opens their WALs again, starts
/// every group from them (no bootstrap) and checks each one.
fn restart(
    run: &GroupsRun,
    network: &MemNetwork,
    addresses: &[std::net::SocketAddr],
    nodes: Nodes,
    clusters: Vec<Cluster>,
) -> Result<RestartOutcome, String> {
    let mut committed = Vec::with_capacity(clusters.len());
    for (g, index) in barriers(&clusters, run.elect_limit).into_iter().enumerate() {
        let Some(index) = index else {
            return Err(format!(
                "before the restart: group {} committed no barrier within {:?}",
                g + 1,
                run.elect_limit
            ));
        };
        committed.push(index);
    }
    let caught_up = applied_through(&clusters, &committed, run.elect_limit);
    let mut expected = Vec::with_capacity(clusters.len());
    for (g, cluster) in clusters.iter().enumerate() {
        let digest = if g < run.active {
            let Some(digests) = &caught_up[g] else {
                return Err(format!("group {}: replicas did not catch up", g + 1));
            };
            if digests.windows(2).any(|w| w[0] != w[1]) {
                return Err(format!(
                    "group {}: replicas differ before the restart",
                    g + 1
                ));
            }
            digests.first().copied()
        } else {
            None
        };
        if cluster.snapshots_taken() {
            return Err(format!(
                "group {} took a snapshot, which this tool keeps in memory: a restart would \
                 not test recovery from the log alone",
                g + 1
            ));
        }
        expected.push(Expected {
            committed: committed[g],
            digest,
        });
    }
    for cluster in &clusters {
        cluster.shutdown();
    }
    drop(clusters);
    let Nodes { hosts, wals, .. } = nodes;
    for host in hosts {
        let id = host.id();
        // Its listener is closed when this returns: the restart binds the same addresses.
        if !host.shutdown(Duration::from_secs(5)) {
            return Err(format!("node {} did not stop within 5 s", id.0));
        }
    }
    drop(wals);
    let nodes = Nodes::start(run, network, addresses)?;
    let open_secs = nodes.wal_open_secs;
    let started = super::drive::now();
    let clusters = nodes.start_groups(run.groups, false)?;
    let start_secs = started.elapsed().as_secs_f64();
    let (elected, elect_all_secs) = wait_for_leaders(&clusters, started, run.elect_limit);
    let campaigns_deferred = nodes.campaigns_deferred();
    let mut recovered = 0;
    if elected == run.groups {
        // Every group just elected a leader and heartbeats until it falls quiet.
        std::thread::sleep(4 * Cluster::election_timeout());
        // A group that commits no barrier in time counts as not recovered.
        let now = barriers(&clusters, run.elect_limit);
        let targets: Vec<u64> = now
            .iter()
            .zip(&expected)
            .map(|(n, want)| n.map_or(u64::MAX, |n| n.max(want.committed)))
            .collect();
        let states = applied_through(&clusters, &targets, run.elect_limit);
        for (state, want) in states.iter().zip(&expected) {
            let Some(digests) = state else { continue };
            if want.digest.is_none_or(|d| digests.iter().all(|x| *x == d)) {
                recovered += 1;
            }
        }
    }
    for cluster in &clusters {
        cluster.shutdown();
    }
    Ok(RestartOutcome {
        open_secs,
        start_secs,
        campaigns_deferred,
        elect_all_secs,
        recovered,
    })
}

/// Polls every group until each has a leader or `limit` passed since `started`; returns how
/// many had one and, if all did, when the last one got it.
fn wait_for_leaders(
    clusters: &[Cluster],
    started: Instant,
    limit: Duration,
) -> (usize, Option<f64>) {
    let mut led = vec![false; clusters.len()];
    let mut count = 0;
    loop {
        for (i, cluster) in clusters.iter().enumerate() {
            if !led[i]
                && cluster
                    .nodes
                    .iter()
                    .any(|(r, _)| r.state() == RaftState::Leader)
            {
                led[i] = true;
                count += 1;
            }
        }
        let elapsed = started.elapsed();
        if count == clusters.len() {
            return (count, Some(elapsed.as_secs_f64()));
        }
        if elapsed > limit {
            return (count, None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The process's resident memory in bytes (`/proc/self/statm`; 0 where there is none).
pub fn resident_bytes() -> u64 {
    let pages = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}

/// Threads in this process (`/proc/self/status`; 0 where there is none).
pub fn thread_count() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}
