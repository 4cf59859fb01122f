//! Many Raft groups in one process (`ringraft-load --groups N --active M`): how long until
//! every group has a leader, what idle groups cost (CPU, resident memory, threads), and the
//! writes of the active ones.
//!
//! Each of the `nodes` nodes is a [`MultiRaft`]: one shard thread and one transport endpoint
//! (the in-memory network) for every group's replica on it, peer nodes pinged for liveness,
//! idle groups quiesced (ARCHITECTURE §14). The log stores are in memory: durable groups would
//! each still need their own WAL (one WAL per shard is the next step).

use super::cluster::Cluster;
use super::drive::{self, Load, Outcome};
use super::report::process_cpu_secs;
use ringraft::{MultiRaft, MultiRaftConfig, Raft, RaftState};
use ringraft_net::memory::MemNetwork;
use ringraft_storage::{GroupId, NodeId};
use std::time::{Duration, Instant};

/// What a multi-group run measured.
pub struct GroupsOutcome {
    /// Groups started.
    pub groups: usize,
    /// Groups that had a leader within the limit.
    pub elected: usize,
    /// Seconds from the first group's start until every group had a leader (`None`: not
    /// within the limit).
    pub elect_all_secs: Option<f64>,
    /// Process CPU over the quiet window, as a percentage of one core.
    pub idle_cpu_pct: f64,
    /// Resident memory the groups added, per replica, in bytes.
    pub rss_per_replica_bytes: u64,
    /// Threads in the process once every group started.
    pub threads: u64,
    /// The measured writes to the active groups, if any were asked for.
    pub load: Option<Outcome>,
}

/// Starts `groups` in-memory groups of `nodes` nodes, waits for their leaders (at most
/// `elect_limit`), measures `idle_window` of idleness, then runs `load` spread over the
/// leaders of the first `active` groups (none if `active` is 0).
pub fn run(
    groups: usize,
    nodes: u64,
    active: usize,
    load: &Load,
    warmup: u64,
    idle_window: Duration,
    elect_limit: Duration,
) -> Result<GroupsOutcome, String> {
    let network = MemNetwork::new();
    let election = Cluster::election_timeout();
    let watch = MultiRaftConfig {
        ping_interval: election / 10,
        silence_timeout: election,
        ..MultiRaftConfig::default()
    };
    let hosts: Vec<MultiRaft> = (1..=nodes)
        .map(|id| MultiRaft::new(network.transport(NodeId(id)), watch.clone()))
        .collect::<Result<_, _>>()
        .map_err(|e| format!("starting a node: {e}"))?;
    let rss_before = resident_bytes();
    let started = super::drive::now();
    let mut clusters = Vec::with_capacity(groups);
    for g in 0..groups {
        clusters.push(Cluster::start_group(&hosts, GroupId(g as u64 + 1))?);
    }
    let threads = thread_count();
    let (elected, elect_all_secs) = wait_for_leaders(&clusters, started, elect_limit);
    // A quiet window: every group idle.
    std::thread::sleep(Duration::from_millis(500));
    let cpu_before = process_cpu_secs();
    let window_start = super::drive::now();
    std::thread::sleep(idle_window);
    let cpu = process_cpu_secs() - cpu_before;
    let idle_cpu_pct = 100.0 * cpu / window_start.elapsed().as_secs_f64();
    // Resident memory once idle (the process's high-water mark of the groups' start and
    // elections: freed memory stays resident with the allocator). It includes each replica's
    // state machine and in-memory stores.
    let rss_after = resident_bytes();
    let replicas = (groups as u64 * nodes).max(1);
    let rss_per_replica_bytes = rss_after.saturating_sub(rss_before) / replicas;
    let load_outcome = if active > 0 && elected == groups {
        let leaders: Vec<Raft> = clusters
            .iter()
            .take(active)
            .map(|c| c.leader(elect_limit))
            .collect::<Result<_, _>>()?;
        if warmup > 0 {
            let warm = Load {
                ops: Some(warmup),
                rate: None,
                progress: false,
                ..load.clone()
            };
            drive::run(&leaders, &warm)?;
        }
        Some(drive::run(&leaders, load)?)
    } else {
        None
    };
    for cluster in &clusters {
        cluster.shutdown();
    }
    Ok(GroupsOutcome {
        groups,
        elected,
        elect_all_secs,
        idle_cpu_pct,
        rss_per_replica_bytes,
        threads,
        load: load_outcome,
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
