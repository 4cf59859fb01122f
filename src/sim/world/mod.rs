//! The simulated world: nodes, network, disks, clients and faults in one discrete-event loop.

mod clients;
mod effects;
mod faults;
mod groups;

use super::checks::{check_log_matching, Checker};
use super::kv;
use super::linearizability::{check_kv_history, KvOp, KvResult, Operation};
use super::node::{
    lock, CampaignPool, Disk, HostDisk, Machine, SimFsm, SimLog, SimStable, SimTransport, Wire,
};
use crate::api::config::Config;
use crate::api::error::{ApplyError, ReadError};
use crate::api::outcome::Applied;
use crate::api::RaftFuture;
#[cfg(feature = "sim")]
use crate::core::Mutation;
use crate::core::{Core, CoreConfig, MembershipChange, Rng, Role, Time};
use crate::node::shard::Shard;
use crate::node::Shared;
use ringraft_net::message::Message;
use ringraft_storage::{Configuration, Index, InmemSnapshotStore, LogId, NodeId, Ticket};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const MS: u64 = 1_000_000;
/// Quiescence seeds: how often a node's host pings its peers.
const PING_INTERVAL: u64 = 30 * MS;
/// After the faults stop, every client must complete operations within this simulated time.
const LIVENESS_WINDOW_NANOS: u64 = 20_000 * MS;

/// What to simulate.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed everything derives from.
    pub seed: u64,
    /// Cluster size (3 or 5 typically).
    pub nodes: usize,
    /// Events processed in the fault phase, before the network heals and liveness is checked.
    pub steps: u64,
    /// Concurrent closed-loop clients.
    pub clients: usize,
    /// Inject crashes, partitions, pauses, loss and duplication.
    pub faults: bool,
    /// A bug to inject into every core.
    pub mutation: Option<Mutation>,
    /// Change the membership now and then (add, remove, demote, promote, leader self-removal);
    /// one spare node outside the initial configuration joins the pool.
    pub churn: bool,
    /// Ask the leader to transfer leadership now and then.
    pub transfers: bool,
    /// Nodes take snapshots (with few trailing entries, so InstallSnapshot is common).
    pub snapshots: bool,
    /// Ask the leader to restore an external snapshot now and then (user restore).
    pub restores: bool,
    /// Events a seed may process in all before it fails with "event budget exhausted"
    /// (`None`: 40 times `steps`). The liveness deadline is in simulated time; this bound
    /// keeps a livelock that makes simulated time crawl from running forever.
    pub event_budget: Option<u64>,
    /// Raft groups on the same nodes (1: the classic single-group world). With several, a
    /// node is a host of one replica of every group, as a `MultiRaft` node is: a crash or a
    /// pause takes all of a host's replicas at once, partitions and loss cut every group's
    /// traffic between two hosts, a host's replicas share one disk (group commit) and its
    /// campaign slots, and every group gets its own clients and checkers (see `groups.rs`).
    pub groups: usize,
    /// With several groups: how many of a host's groups may campaign at once
    /// (`MultiRaftConfig::campaign_slots`).
    pub campaign_slots: usize,
}

impl SimConfig {
    /// Defaults: 3 nodes, 20,000 fault-phase events, 6 clients, faults on.
    pub fn new(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            nodes: 3,
            steps: 20_000,
            clients: 6,
            faults: true,
            mutation: None,
            churn: true,
            transfers: true,
            snapshots: true,
            restores: true,
            event_budget: None,
            groups: 1,
            campaign_slots: 1,
        }
    }

    /// The event budget in force.
    pub fn max_events(&self) -> u64 {
        self.event_budget
            .unwrap_or_else(|| self.steps.saturating_mul(40))
    }
}

/// The outcome of one seed.
#[derive(Clone, Debug)]
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// The first violated property, if any.
    pub failure: Option<String>,
    /// A hash of every processed event: equal seeds give equal hashes.
    pub trace_hash: u64,
    /// Events processed.
    pub events: u64,
    /// Simulated time at the end.
    pub sim_time: Duration,
    /// Snapshots the nodes took.
    pub snapshots: u64,
    /// Snapshots installed from a leader (InstallSnapshot).
    pub installs: u64,
    /// Of those, installs at a follower whose log already held the snapshot's last entry and
    /// more (a rare path: the leader resent what the follower held).
    pub installs_over_matching_suffix: u64,
    /// User restores requested at a leader.
    pub restores: u64,
    /// Restore entries applied (summed over nodes).
    pub restores_applied: u64,
    /// Restores a leader streamed to a follower for staging.
    pub restores_streamed: u64,
    /// Client operations that completed with a result.
    pub ops_completed: u64,
    /// Client operations whose client gave up without an answer (timeout, crash, leadership
    /// lost).
    pub ops_unknown: u64,
    /// Terms that had a leader.
    pub leader_terms: usize,
    /// The seed ran its nodes with quiescence and the hosts' liveness watch.
    pub quiesce: bool,
    /// Times a node quiesced.
    pub quiesces: u64,
    /// Groups simulated on the same nodes.
    pub groups: usize,
    /// Host crashes (each took one replica of every group down).
    pub host_crashes: u64,
    /// Times a replica waited for one of its host's campaign slots.
    pub campaign_waits: u64,
}

/// What the groups' worlds share of each host (several groups; empty for a world alone).
#[derive(Clone, Default)]
struct Hosts {
    campaign_pools: Vec<Arc<Mutex<CampaignPool>>>,
    disks: Vec<Arc<Mutex<HostDisk>>>,
}

/// What happened to a whole host during one event of one group's world (several groups).
#[derive(Clone, Copy, Debug)]
enum HostEvent {
    /// The host's process died.
    Crashed(usize),
    /// The host's process started again.
    Restarted(usize),
    /// The host is paused until then.
    Paused(usize, Time),
}

#[derive(Debug)]
enum Ev {
    Deliver(Box<Message>),
    Timer {
        node: usize,
    },
    /// The node's disk finished the writes through `ticket` (the fsync returned).
    DiskDone {
        node: usize,
        boot: u64,
        ticket: Ticket,
    },
    /// The node's snapshot worker does the jobs queued so far.
    SnapshotWork {
        node: usize,
        boot: u64,
    },
    /// The node's stable-store worker does the saves queued so far.
    StableWork {
        node: usize,
        boot: u64,
    },
    ClientNext {
        client: usize,
    },
    ClientTimeout {
        client: usize,
        token: u64,
    },
    Fault,
    Restart {
        node: usize,
    },
    /// A membership change at the leader (schedules the next one).
    Churn,
    /// One membership change at the leader right after an election (three leaders in quick
    /// succession each get one).
    ChurnNow,
    /// Cuts a node off from everyone (the old leader right after it sent TimeoutNow).
    Isolate {
        node: usize,
    },
    /// A leadership transfer request at the leader.
    Transfer,
    /// A user restore request at the leader.
    Restore,
    /// Every node's timing changes at once (a cluster-wide reload).
    Retime,
    Crash {
        node: usize,
        boot: u64,
    },
    /// The node's host pings its peers (if `ping`; otherwise it woke for a peer's silence
    /// timeout alone) and reports the silent ones (quiescence seeds, the router's liveness
    /// watch, ARCHITECTURE §14).
    Ping {
        node: usize,
        boot: u64,
        ping: bool,
    },
    /// A client's request arriving at a node.
    Request {
        node: usize,
        client: usize,
        token: u64,
    },
    /// The node's transport reports `peer` unreachable (a refused connection).
    Unreachable {
        node: usize,
        peer: NodeId,
    },
    /// A paused node resumes and processes what arrived meanwhile, in order.
    Resume {
        node: usize,
    },
    Heal,
}

struct Scheduled {
    at: Time,
    order: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.order) == (other.at, other.order)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.order).cmp(&(other.at, other.order))
    }
}

/// A running node: its shard (the real glue around its core) and the handle it shares.
struct Running {
    shard: Box<Shard>,
    shared: Arc<Shared>,
}

struct SimNode {
    id: NodeId,
    running: Option<Running>,
    boot: u64,
    /// The log store's disk (what survives a crash is decided here).
    disk: Arc<Mutex<Disk>>,
    /// Snapshots and staged restores: durable once committed, kept across crashes.
    snapshots: InmemSnapshotStore,
    wire: Arc<Mutex<Wire>>,
    machine: Arc<Mutex<Machine>>,
    disk_free_at: Time,
    /// fsync latency range: most disks are fast, some seeds give a node a slow one (which
    /// widens the window between a leader's sends and its own durability).
    disk_latency: (u64, u64),
    /// Whether a snapshot-work event is scheduled.
    snapshot_work_scheduled: bool,
    /// Whether a stable-store-work event is scheduled.
    stable_work_scheduled: bool,
    commit_seen: Index,
    paused_until: Time,
    /// Events that arrived while paused, in arrival order.
    deferred: std::collections::VecDeque<Ev>,
    timer_at: Option<Time>,
    /// Role and term after the last turn (a change is hashed and draws faults).
    role: (Role, ringraft_storage::Term),
    /// The furthest AppendEntries success this node sent, in the newest term it sent one.
    acked: Option<Acked>,
    /// The highest term this node ever reached (across restarts: a crash can lose a term
    /// change whose truncation survived).
    term_seen: ringraft_storage::Term,
    /// Quiescence seeds: when anything last arrived from each peer, and the peers reported
    /// silent since (the host's liveness watch).
    heard: BTreeMap<usize, Time>,
    silent: BTreeSet<usize>,
    /// Quiescence seeds: when the host pings next, and when it wakes for a peer's silence
    /// timeout before that (the router's timer: the earlier of the two).
    next_ping: Time,
    silence_check: Option<Time>,
    /// Whether the core was quiesced after the last turn (a change is counted and hashed).
    quiesced: bool,
    /// Since when the node is down (crashed and not restarted).
    down_since: Option<Time>,
}

impl SimNode {
    fn core(&self) -> Option<&Core> {
        self.running.as_ref().map(|r| &r.shard.core)
    }

    fn is_up(&self) -> bool {
        self.running.is_some()
    }
}

/// What a node last promised a leader it holds durably.
#[derive(Clone, Copy, Debug)]
struct Acked {
    term: ringraft_storage::Term,
    index: Index,
    /// The term of the entry at `index` when the promise was made (unknown if compacted).
    entry_term: Option<ringraft_storage::Term>,
}

/// A client operation's answer on its way back (the future of the `Raft` call it stands for).
enum Answer {
    Apply(RaftFuture<Applied, ApplyError>),
    Read(RaftFuture<Index, ReadError>),
    Barrier(RaftFuture<Index, ApplyError>),
}

/// A client operation's answer.
enum Answered {
    Apply(Result<Applied, ApplyError>),
    Read(Result<Index, ReadError>),
    Barrier(Result<Index, ApplyError>),
}

struct InFlight {
    token: u64,
    node: usize,
    history: usize,
    /// Set once the request reached its node.
    answer: Option<Answer>,
}

struct Client {
    leader_guess: usize,
    current: Option<InFlight>,
    ok_since_heal: u64,
}

struct World {
    config: SimConfig,
    rng: Rng,
    now: Time,
    order: u64,
    queue: BinaryHeap<Reverse<Scheduled>>,
    nodes: Vec<SimNode>,
    clients: Vec<Client>,
    history: Vec<Operation>,
    discarded: BTreeSet<usize>,
    /// Acknowledged writes: (history index, log id).
    acked_writes: Vec<(usize, LogId)>,
    /// When each command was first applied anywhere, and its result (token → (time, result)).
    first_applied: BTreeMap<u64, (u64, KvResult)>,
    /// Token of each history entry.
    history_tokens: Vec<u64>,
    next_token: u64,
    next_value: u64,
    blocked: BTreeSet<(usize, usize)>,
    drop_per_mille: u64,
    duplicate_per_mille: u64,
    healed: bool,
    /// Operations whose client gave up without an answer (timeout, crash, leadership lost).
    ops_unknown: u64,
    /// Snapshots taken.
    snapshots: u64,
    /// Snapshots installed from a leader.
    installs: u64,
    installs_over_matching_suffix: u64,
    restores: u64,
    restores_applied: u64,
    restores_streamed: u64,
    checker: Checker,
    trace: u64,
    events: u64,
    lease_read: bool,
    /// Print a human-readable trace to stderr (`RINGRAFT_SIM_TRACE=1`), for replaying a seed.
    verbose: bool,
    /// Clients pause up to this long between operations (varies by seed: busy or idle).
    think_time_max: u64,
    /// The core settings the node glue's `Config` cannot express (chunk and message sizes,
    /// promotion, the mutation); timing comes from `config_template`.
    core_template: CoreConfig,
    /// The nodes' `Config` (its id set per node); retimes change it, so restarts use the new
    /// timing as a reloaded config file would give them.
    config_template: Config,
    /// For each read in progress (by token), the highest index committed anywhere when it
    /// reached its node: its answer may not be older.
    read_floor: BTreeMap<u64, Index>,
    /// Events a seed may process before it fails (a livelock can make simulated time crawl).
    event_budget: u64,
    /// A third of the seeds run their nodes as a multi-group host does: quiescence on, peers
    /// pinged and silent ones reported, and clients that fall quiet together now and then
    /// (ARCHITECTURE §14). Their draws come from `quiet_rng`, so other seeds do not move.
    quiesce: bool,
    quiet_rng: Rng,
    /// Clients send nothing before this time (a lull), and the next lull starts after
    /// `lull_next`.
    lull_until: Time,
    lull_next: Time,
    /// Times a node quiesced.
    quiesces: u64,
    /// This world's group among several on the same hosts (0 when alone).
    group: usize,
    /// Whether this world draws network faults (partitions, loss, isolation). With several
    /// groups only group 0's world does, and the others take its network as it is.
    network_faults: bool,
    /// With several groups: each host's campaign slots (empty when alone).
    campaign_pools: Vec<Arc<Mutex<CampaignPool>>>,
    /// With several groups: each host's disk (empty when alone: each node's writes are then
    /// serialized on a disk of its own).
    host_disks: Vec<Arc<Mutex<HostDisk>>>,
    /// What happened to whole hosts in the last event, for the other groups' worlds.
    host_events: Vec<HostEvent>,
}

/// The failure of a seed run by `seed`, if any. A panic (a failed assertion inside the core)
/// is a failure of the seed, not of the run.
fn failure_of(seed: impl FnOnce() -> Result<(), String>) -> Option<String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(seed)) {
        Ok(result) => result.err(),
        Err(panic) => Some(format!(
            "panic: {}",
            panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(non-string payload)")
        )),
    }
}

/// Runs one seed and reports what happened.
pub fn run(config: &SimConfig) -> Report {
    if config.groups > 1 {
        return groups::run(config);
    }
    let mut world = World::new(config.clone());
    let failure = failure_of(|| world.run_to_end());
    Report {
        seed: config.seed,
        failure,
        trace_hash: world.trace,
        events: world.events,
        sim_time: Duration::from_nanos(world.now.0),
        ops_completed: world
            .history
            .iter()
            .filter(|o| o.completion.is_some())
            .count() as u64,
        ops_unknown: world.ops_unknown,
        leader_terms: world.checker.leader_terms(),
        snapshots: world.snapshots,
        installs: world.installs,
        installs_over_matching_suffix: world.installs_over_matching_suffix,
        restores: world.restores,
        restores_applied: world.restores_applied,
        restores_streamed: world.restores_streamed,
        quiesce: world.quiesce,
        quiesces: world.quiesces,
        groups: 1,
        host_crashes: 0,
        campaign_waits: 0,
    }
}

impl World {
    fn new(config: SimConfig) -> World {
        World::new_in(config, 0, Hosts::default(), None)
    }

    /// The world of group `group` on `hosts` (none: a world of its own); `quiesce`
    /// overrides the seed's own choice.
    fn new_in(config: SimConfig, group: usize, hosts: Hosts, quiesce: Option<bool>) -> World {
        let mut rng = Rng::new(config.seed);
        let ids: Vec<NodeId> = (1..=config.nodes as u64).map(NodeId).collect();
        let configuration = Configuration::voters_with_default_addresses(ids.iter().copied());
        // The pool: the initial voters plus, with churn, one spare that starts empty.
        let pool: Vec<NodeId> = (1..=config.nodes as u64 + u64::from(config.churn))
            .map(NodeId)
            .collect();
        let state = Core::bootstrap_state(&configuration).expect("valid bootstrap configuration");
        let mut template = CoreConfig::new(NodeId(1));
        let mut glue = Config::new(NodeId(1));
        glue.election_timeout = Duration::from_millis(150);
        glue.heartbeat_timeout = Duration::from_millis(150);
        // A lease no longer than any election timeout a retime may choose, less the drift.
        // One seed in three has a lease of 60 ms or more (four heartbeat intervals of 15 ms),
        // with which busy leaders skip heartbeats for two rounds (ARCHITECTURE §4, "Heartbeats
        // of a busy leader"; a retime can switch it either way, and its shorter heartbeat
        // timeouts give leases of up to ten intervals, so three or four rounds: about a tenth
        // of the timer's rounds over 500 seeds); the others keep the shorter leases under
        // which leaders step down more often.
        let lease = if rng.chance(1, 3) {
            rng.range(60, 86)
        } else {
            rng.range(25, 50)
        };
        glue.leader_lease_timeout = Duration::from_millis(lease);
        glue.clock_drift_bound = Duration::from_millis(15);
        glue.commit_timeout = Duration::from_millis(5);
        glue.pre_vote_disabled = !rng.chance(4, 5);
        let max_entries_bound = if rng.chance(1, 2) { 4 } else { 64 };
        glue.max_append_entries = 1 + rng.below(max_entries_bound) as usize;
        template.max_append_bytes = 64 + rng.below(4096) as usize;
        glue.max_inflight = 1 + rng.below(8) as usize;
        let lease_read = rng.chance(1, 2);
        let think_time_max = rng.range(MS, 30 * MS);
        // Frequent snapshots with few trailing entries make InstallSnapshot common.
        let snapshot_every = if !config.snapshots || rng.chance(1, 5) {
            u64::MAX
        } else {
            rng.range(5, 60)
        };
        glue.snapshot_threshold = snapshot_every;
        glue.snapshot_interval = Duration::from_millis(rng.range(5, 40));
        // Half of the seeds with snapshots also start them between checks once the log held
        // in memory reaches about that many entries' worth (an `Entry` is 88 bytes): derived
        // from the draws above, so the seed's other choices stay as they were.
        glue.snapshot_memory_threshold = if snapshot_every != u64::MAX && snapshot_every % 2 == 0 {
            snapshot_every * 100
        } else {
            0
        };
        template.promotion_lag_max = if rng.chance(1, 2) {
            Some(rng.below(20))
        } else {
            None
        };
        template.promotion_rounds_max = rng.range(5, 40);
        glue.shutdown_on_remove = rng.chance(1, 2);
        glue.trailing_logs = rng.below(8);
        template.snapshot_chunk_bytes = rng.range(16, 256);
        glue.lease_read = lease_read;
        // The simulator turns the shard itself; the state machine runs inline.
        glue.apply_placement = crate::api::config::ApplyPlacement::ShardThread;
        template.mutation = config.mutation;
        let mut world = World {
            rng,
            now: Time(0),
            order: 0,
            queue: BinaryHeap::new(),
            nodes: Vec::new(),
            clients: Vec::new(),
            history: Vec::new(),
            discarded: BTreeSet::new(),
            acked_writes: Vec::new(),
            first_applied: BTreeMap::new(),
            history_tokens: Vec::new(),
            next_token: 1,
            next_value: 1,
            blocked: BTreeSet::new(),
            drop_per_mille: 0,
            duplicate_per_mille: 0,
            healed: !config.faults,
            ops_unknown: 0,
            snapshots: 0,
            installs: 0,
            installs_over_matching_suffix: 0,
            restores: 0,
            restores_applied: 0,
            restores_streamed: 0,
            checker: Checker::default(),
            trace: 0xcbf2_9ce4_8422_2325,
            events: 0,
            lease_read,
            think_time_max,
            verbose: std::env::var_os("RINGRAFT_SIM_TRACE").is_some(),
            core_template: template,
            config_template: glue,
            read_floor: BTreeMap::new(),
            event_budget: config.max_events(),
            quiesce: Rng::new(config.seed ^ 0x0051_E5CE).chance(1, 3),
            quiet_rng: Rng::new(config.seed ^ 0x1D1E_0000),
            lull_until: Time(0),
            lull_next: Time(500 * MS),
            quiesces: 0,
            group,
            network_faults: config.faults && group == 0,
            campaign_pools: hosts.campaign_pools,
            host_disks: hosts.disks,
            host_events: Vec::new(),
            config,
        };
        if let Some(quiesce) = quiesce {
            world.quiesce = quiesce;
        }
        // A quarter of the seeds give their nodes a log store that keeps no hard state, as a
        // user's own log store beside a `StableStore` (the shard's stable-store path). Drawn
        // from its own generator, so the other seeds' schedules do not move.
        let log_keeps_hard_state = !Rng::new(world.config.seed ^ 0x57AB_1E00).chance(1, 4);
        // A quarter of the one-group seeds give their nodes a log store that writes a
        // follower's batch on the shard's own thread when its disk is idle, as the WAL of a
        // node alone on its thread does (ARCHITECTURE §10). Its own generator, as above.
        let writes_here =
            world.host_disks.is_empty() && Rng::new(world.config.seed ^ 0x1A1E_0000).chance(1, 4);
        for id in pool {
            let mut disk = if ids.contains(&id) {
                SimLog::disk_with(&state.entries, state.hard_state, log_keeps_hard_state)
            } else {
                SimLog::empty_disk(log_keeps_hard_state)
            };
            disk.writes_here = writes_here;
            let disk_latency = if world.rng.chance(1, 4) {
                (2 * MS, 30 * MS)
            } else {
                (MS / 20, 2 * MS)
            };
            world.nodes.push(SimNode {
                id,
                disk_latency,
                running: None,
                boot: 0,
                disk: Arc::new(Mutex::new(disk)),
                snapshots: InmemSnapshotStore::new(),
                wire: Arc::default(),
                machine: Arc::default(),
                disk_free_at: Time(0),
                snapshot_work_scheduled: false,
                stable_work_scheduled: false,
                commit_seen: Index(0),
                paused_until: Time(0),
                deferred: std::collections::VecDeque::new(),
                timer_at: None,
                role: (Role::Follower, ringraft_storage::Term(0)),
                acked: None,
                term_seen: ringraft_storage::Term(0),
                heard: BTreeMap::new(),
                silent: BTreeSet::new(),
                next_ping: Time(0),
                silence_check: None,
                quiesced: false,
                down_since: None,
            });
        }
        for c in 0..world.config.clients {
            let guess = world.rng.below(world.nodes.len() as u64) as usize;
            world.clients.push(Client {
                leader_guess: guess,
                current: None,
                ok_since_heal: 0,
            });
            let at = world.now.plus_nanos(world.rng.range(0, 300 * MS));
            world.schedule(at, Ev::ClientNext { client: c });
        }
        if world.config.churn {
            let at = world.now.plus_nanos(world.rng.range(300 * MS, 800 * MS));
            world.schedule(at, Ev::Churn);
        }
        {
            // Lease reads need the leader's election timeout never to exceed a voter's: every
            // node is retimed at the same instant (and restarts use the new timing).
            let at = world.now.plus_nanos(world.rng.range(500 * MS, 3000 * MS));
            world.schedule(at, Ev::Retime);
        }
        if world.config.transfers {
            let at = world.now.plus_nanos(world.rng.range(300 * MS, 1500 * MS));
            world.schedule(at, Ev::Transfer);
        }
        if world.config.restores {
            let at = world.now.plus_nanos(world.rng.range(300 * MS, 2000 * MS));
            world.schedule(at, Ev::Restore);
        }
        if world.network_faults {
            let at = world.now.plus_nanos(world.rng.range(100 * MS, 500 * MS));
            world.schedule(at, Ev::Fault);
        }
        world
    }

    fn log(&self, line: impl FnOnce() -> String) {
        if self.verbose {
            let group = if self.campaign_pools.is_empty() {
                String::new()
            } else {
                format!("g{} ", self.group)
            };
            eprintln!("{:>12.6} {group}{}", self.now.0 as f64 / 1e9, line());
        }
    }

    /// One line per node: what a failing seed's final state looked like.
    fn describe_nodes(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let Some(c) = n.core() else {
                out.push_str(&format!("\n  {}: down", n.id));
                continue;
            };
            let servers: Vec<String> = c
                .latest_configuration()
                .1
                .servers
                .iter()
                .map(|s| {
                    let voter = s.suffrage == ringraft_storage::Suffrage::Voter;
                    format!("{}{}", s.id, if voter { "" } else { "(nv)" })
                })
                .collect();
            out.push_str(&format!(
                "\n  {}: {:?} {} leader {:?} last {} commit {} applied {} config {:?}",
                n.id,
                c.role(),
                c.term(),
                c.leader(),
                c.log().last_log_id(),
                c.commit_index(),
                c.applied_index(),
                servers
            ));
        }
        out
    }

    fn schedule(&mut self, at: Time, ev: Ev) {
        self.order += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            order: self.order,
            ev,
        }));
    }

    fn hash(&mut self, values: &[u64]) {
        for v in values {
            for b in v.to_le_bytes() {
                self.trace ^= u64::from(b);
                self.trace = self.trace.wrapping_mul(0x100_0000_01b3);
            }
        }
    }

    fn run_to_end(&mut self) -> Result<(), String> {
        self.boot_all()?;
        let mut deadline = None;
        while let Some(ev) = self.pop_event()? {
            if deadline.is_none() && self.events >= self.config.steps {
                if !self.healed {
                    self.heal_everything()?;
                }
                // Liveness: after healing, a leader emerges and every client completes
                // operations within bounded simulated time.
                deadline = Some(self.now.plus_nanos(LIVENESS_WINDOW_NANOS));
            }
            if deadline.is_some_and(|d| self.now > d) {
                return Err(self.liveness_failure());
            }
            self.process(ev)?;
            if self.finished() {
                break;
            }
        }
        self.final_checks()
    }

    /// Records what happened to a whole host, for the other groups' worlds (several groups).
    fn note_host(&mut self, event: HostEvent) {
        if !self.campaign_pools.is_empty() {
            self.host_events.push(event);
        }
    }

    fn boot_all(&mut self) -> Result<(), String> {
        for n in 0..self.nodes.len() {
            self.boot(n)?;
        }
        Ok(())
    }

    /// When the next event is due, if any.
    fn next_at(&self) -> Option<Time> {
        self.queue.peek().map(|Reverse(s)| s.at)
    }

    /// Takes the next event and moves the clock to it; fails once the event budget is spent.
    fn pop_event(&mut self) -> Result<Option<Ev>, String> {
        let Some(Reverse(s)) = self.queue.pop() else {
            return Ok(None);
        };
        self.now = self.now.max(s.at);
        self.events += 1;
        if self.events > self.event_budget {
            return Err(format!(
                "event budget exhausted: {} events by simulated time {:.3} s without \
                 finishing (a livelock?); nodes:{}",
                self.event_budget,
                self.now.0 as f64 / 1e9,
                self.describe_nodes()
            ));
        }
        Ok(Some(s.ev))
    }

    fn liveness_failure(&self) -> String {
        let done: Vec<u64> = self.clients.iter().map(|c| c.ok_since_heal).collect();
        format!(
            "liveness: clients did not each complete 3 operations within 20 s of healing \
             (completed: {done:?}); nodes:{}",
            self.describe_nodes()
        )
    }

    /// Healed, past the fault phase, and every client did three operations since.
    fn finished(&self) -> bool {
        self.healed
            && self.events >= self.config.steps
            && self.clients.iter().all(|c| c.ok_since_heal >= 3)
    }

    fn process(&mut self, ev: Ev) -> Result<(), String> {
        // A paused node processes nothing until it resumes; what arrives meanwhile waits in
        // arrival order.
        let target = match &ev {
            Ev::Deliver(m) => Some(m.to.0 as usize - 1),
            Ev::Timer { node }
            | Ev::Ping { node, .. }
            | Ev::DiskDone { node, .. }
            | Ev::SnapshotWork { node, .. }
            | Ev::StableWork { node, .. }
            | Ev::Request { node, .. }
            | Ev::Unreachable { node, .. } => Some(*node),
            _ => None,
        };
        if let Some(n) = target {
            if self.nodes[n].paused_until > self.now || !self.nodes[n].deferred.is_empty() {
                self.nodes[n].deferred.push_back(ev);
                return Ok(());
            }
        }
        self.process_now(ev)
    }

    fn process_now(&mut self, ev: Ev) -> Result<(), String> {
        match ev {
            Ev::Deliver(m) => {
                let (from, to) = (m.from.0 as usize - 1, m.to.0 as usize - 1);
                self.hash(&[1, self.now.0, from as u64, to as u64, m.term.0]);
                self.log(|| match &m.body {
                    ringraft_net::message::Body::AppendEntries(ae) => format!(
                        "n{} -> n{} {} AppendEntries prev {} +{} commit {}",
                        from + 1,
                        to + 1,
                        m.term,
                        ae.prev_log_id,
                        ae.entries.len(),
                        ae.leader_commit
                    ),
                    body => format!("n{} -> n{} {} {:?}", from + 1, to + 1, m.term, body),
                });
                if self.blocked.contains(&(from, to)) || !self.nodes[to].is_up() {
                    return Ok(());
                }
                if self.quiesce {
                    let node = &mut self.nodes[to];
                    node.heard.insert(from, self.now);
                    node.silent.remove(&from);
                    if m.body == ringraft_net::message::Body::NodePing {
                        // The host consumes pings; no core sees them.
                        return Ok(());
                    }
                }
                self.note_install(to, &m);
                let event = ringraft_net::transport::TransportEvent::Message {
                    group: ringraft_storage::GroupId(0),
                    message: *m,
                };
                lock(&self.nodes[to].wire).inbox.push_back(event);
                self.turn(to)
            }
            Ev::Timer { node } => {
                self.nodes[node].timer_at = None;
                self.hash(&[2, self.now.0, node as u64]);
                self.turn(node)
            }
            Ev::DiskDone { node, boot, ticket } => {
                if self.nodes[node].boot != boot || !self.nodes[node].is_up() {
                    return Ok(());
                }
                self.hash(&[3, self.now.0, node as u64, ticket.0]);
                lock(&self.nodes[node].disk).complete(ticket)?;
                self.turn(node)
            }
            Ev::SnapshotWork { node, boot } => {
                if self.nodes[node].boot != boot {
                    return Ok(());
                }
                self.nodes[node].snapshot_work_scheduled = false;
                self.hash(&[19, self.now.0, node as u64]);
                let Some(running) = self.nodes[node].running.as_mut() else {
                    return Ok(());
                };
                running.shard.run_snapshot_jobs();
                self.turn(node)
            }
            Ev::StableWork { node, boot } => {
                if self.nodes[node].boot != boot {
                    return Ok(());
                }
                self.nodes[node].stable_work_scheduled = false;
                self.hash(&[20, self.now.0, node as u64]);
                let Some(running) = self.nodes[node].running.as_mut() else {
                    return Ok(());
                };
                running.shard.run_stable_saves();
                self.turn(node)
            }
            Ev::Unreachable { node, peer } => {
                if !self.nodes[node].is_up() {
                    return Ok(());
                }
                let event = ringraft_net::transport::TransportEvent::SendFailed {
                    peer,
                    failed: Vec::new(),
                    error: ringraft_net::transport::PeerError::Io {
                        kind: std::io::ErrorKind::ConnectionRefused,
                        message: "connection refused".into(),
                    },
                };
                lock(&self.nodes[node].wire).inbox.push_back(event);
                self.turn(node)
            }
            Ev::ClientNext { client } => self.client_next(client),
            Ev::ClientTimeout { client, token } => {
                let current = self.clients[client].current.as_ref().map(|f| f.token);
                if current == Some(token) {
                    self.hash(&[4, self.now.0, client as u64]);
                    self.client_done(client, None);
                }
                Ok(())
            }
            Ev::Fault => self.fault(),
            Ev::Churn => self.churn(),
            Ev::ChurnNow => self.change_membership(),
            Ev::Isolate { node } => {
                if !self.healed {
                    self.isolate(node);
                }
                Ok(())
            }
            Ev::Transfer => self.transfer(),
            Ev::Restore => self.user_restore(),
            Ev::Retime => self.retime(),
            Ev::Restart { node } => {
                if !self.nodes[node].is_up() {
                    self.boot(node)?;
                    self.note_host(HostEvent::Restarted(node));
                }
                Ok(())
            }
            Ev::Ping { node, boot, ping } => self.ping(node, boot, ping),
            Ev::Crash { node, boot } => {
                if !self.healed && self.nodes[node].boot == boot {
                    self.crash(node)?;
                    self.note_host(HostEvent::Crashed(node));
                    let mut at = self.now.plus_nanos(self.rng.range(MS, 30 * MS));
                    if self.quiesce && self.now < self.lull_until {
                        // Down through the quiet: the others must notice its silence.
                        at = at.plus_nanos(self.quiet_rng.range(500 * MS, 2000 * MS));
                    }
                    self.schedule(at, Ev::Restart { node });
                }
                Ok(())
            }
            Ev::Request {
                node,
                client,
                token,
            } => self.request_arrives(node, client, token),
            Ev::Resume { node } => {
                if self.nodes[node].paused_until > self.now {
                    let at = self.nodes[node].paused_until;
                    self.schedule(at, Ev::Resume { node });
                    return Ok(());
                }
                while let Some(ev) = self.nodes[node].deferred.pop_front() {
                    self.process_now(ev)?;
                }
                Ok(())
            }
            Ev::Heal => {
                if !self.healed {
                    self.blocked.clear();
                }
                Ok(())
            }
        }
    }

    /// Node `n`'s glue configuration and core settings for its next start.
    fn node_configs(&self, n: usize) -> Result<(Config, CoreConfig), String> {
        let mut config = self.config_template.clone();
        config.local_id = self.nodes[n].id;
        let seed = self.config.seed ^ ((n as u64 + 1) << 48) ^ (self.nodes[n].boot << 32);
        let mut core = config
            .core_config(seed)
            .map_err(|e| format!("invalid simulated configuration: {e}"))?;
        let t = &self.core_template;
        core.max_append_bytes = t.max_append_bytes;
        core.promotion_lag_max = t.promotion_lag_max;
        core.promotion_rounds_max = t.promotion_rounds_max;
        core.snapshot_chunk_bytes = t.snapshot_chunk_bytes;
        core.mutation = t.mutation;
        core.quiesce = self.quiesce;
        Ok((config, core))
    }

    /// Starts node `n` from what its disk and snapshot store hold, through the runtime's own
    /// recovery (`node::start`): the state machine restores the newest snapshot, the shard
    /// applies what the log says was committed.
    fn boot(&mut self, n: usize) -> Result<(), String> {
        self.nodes[n].boot += 1;
        let (config, core) = self.node_configs(n)?;
        let node = &mut self.nodes[n];
        *lock(&node.machine) = Machine::default();
        *lock(&node.wire) = Wire::default();
        let fsm = SimFsm {
            machine: node.machine.clone(),
            id: node.id,
        };
        let log = SimLog::open(node.disk.clone());
        let campaign = self
            .campaign_pools
            .get(n)
            .map(|pool| (pool.clone(), self.group));
        let transport = SimTransport::new(node.id, node.wire.clone(), campaign);
        let (shard, shared) = crate::node::start::sim_shard(
            config,
            core,
            Box::new(fsm),
            Box::new(log),
            Box::new(SimStable::new(node.disk.clone())),
            Arc::new(node.snapshots.clone()),
            Box::new(transport),
            self.now,
        )
        .map_err(|e| format!("n{} restart failed: {e}", n + 1))?;
        node.running = Some(Running {
            shard: Box::new(shard),
            shared,
        });
        node.commit_seen = Index(0);
        node.disk_free_at = self.now;
        node.quiesced = false;
        node.down_since = None;
        if self.quiesce {
            // The watch starts with the host: every peer counts as heard from now.
            let now = self.now;
            let heard = (0..self.nodes.len()).map(|p| (p, now)).collect();
            self.nodes[n].heard = heard;
            self.nodes[n].silent.clear();
            self.nodes[n].silence_check = None;
            let boot = self.nodes[n].boot;
            self.schedule_ping(n, boot);
        }
        let node = &mut self.nodes[n];
        node.snapshot_work_scheduled = false;
        node.stable_work_scheduled = false;
        self.hash(&[5, self.now.0, n as u64]);
        self.log(|| {
            let core = self.nodes[n].core().map(|c| {
                format!(
                    "{} {:?} log {}..{} commit {} snapshot {:?}",
                    c.term(),
                    c.hard_state().vote,
                    c.log().prev(),
                    c.log().last_log_id(),
                    c.commit_index(),
                    c.snapshot().map(|s| s.last)
                )
            });
            format!("n{} starts: {}", n + 1, core.unwrap_or_default())
        });
        self.turn(n)
    }

    // ---- the end ---------------------------------------------------------------------

    fn final_checks(&mut self) -> Result<(), String> {
        if self.healed && self.config.faults && !self.clients.iter().all(|c| c.ok_since_heal >= 3) {
            return Err("liveness: the event queue ran dry before clients finished".into());
        }
        let logs: Vec<(NodeId, Vec<ringraft_storage::Entry>)> = self
            .nodes
            .iter()
            .filter_map(|n| n.core().map(|c| (n.id, c.log().iter().cloned().collect())))
            .collect();
        for a in 0..logs.len() {
            for b in a + 1..logs.len() {
                check_log_matching((logs[a].0, &logs[a].1), (logs[b].0, &logs[b].1))?;
            }
        }
        for &(history, id) in &self.acked_writes {
            if self.checker.committed_at(id.index) != Some(id) {
                return Err(format!(
                    "acknowledged write lost: op {history} at {id} is not what was committed"
                ));
            }
        }
        let leader = self
            .nodes
            .iter()
            .filter_map(SimNode::core)
            .find(|c| c.role() == Role::Leader);
        if let Some(leader) = leader {
            for &(history, id) in &self.acked_writes {
                if leader.log().term_at(id.index).is_some_and(|t| t != id.term) {
                    return Err(format!(
                        "acknowledged write lost: op {history} at {id} missing from leader {}",
                        leader.id()
                    ));
                }
            }
        }
        // Operations whose outcome the client never learned: the simulator knows the truth. A
        // command that was applied somewhere took effect before its first application (an upper
        // bound on its linearization point) with the result it had there; one that never was
        // applied had no effect that anything observed, and an unknown read constrains nothing.
        // Resolving them keeps the checker's search small without weakening what it checks.
        let mut history = Vec::with_capacity(self.history.len());
        for (i, op) in self.history.iter().enumerate() {
            if self.discarded.contains(&i) {
                continue;
            }
            let mut op = op.clone();
            if op.completion.is_none() {
                if matches!(op.op, KvOp::Get { .. }) {
                    continue;
                }
                match self.first_applied.get(&self.history_tokens[i]) {
                    Some((at, result)) => op.completion = Some((*at, result.clone())),
                    None => continue,
                }
            }
            history.push(op);
        }
        check_kv_history(&history, 2_000_000).map_err(|e| format!("linearizability: {e}"))
    }
}

impl World {
    /// Node `n`'s host pings its peers again a ping interval from now.
    fn schedule_ping(&mut self, n: usize, boot: u64) {
        let at = self.now.plus_nanos(PING_INTERVAL);
        self.nodes[n].next_ping = at;
        self.schedule(
            at,
            Ev::Ping {
                node: n,
                boot,
                ping: true,
            },
        );
    }

    /// Node `n`'s host pings every peer (if `ping`) and reports those silent for an election
    /// timeout, then wakes at its next ping or at the earliest peer's silence timeout before
    /// it, as the router does (quiescence seeds; the router's watch, ARCHITECTURE §14).
    fn ping(&mut self, n: usize, boot: u64, ping: bool) -> Result<(), String> {
        if self.nodes[n].boot != boot || !self.nodes[n].is_up() {
            return Ok(());
        }
        if !ping {
            if self.nodes[n].silence_check != Some(self.now) {
                // Superseded by an earlier wake.
                return Ok(());
            }
            self.nodes[n].silence_check = None;
        }
        self.hash(&[21 + u64::from(!ping), self.now.0, n as u64]);
        let me = self.nodes[n].id;
        let silence = self.config_template.election_timeout.as_nanos() as u64;
        self.check_quiesced_leader_alive(n, silence)?;
        let mut reported = false;
        for p in 0..self.nodes.len() {
            if p == n {
                continue;
            }
            let peer = self.nodes[p].id;
            if ping {
                self.send(Message {
                    from: me,
                    to: peer,
                    term: ringraft_storage::Term(0),
                    body: ringraft_net::message::Body::NodePing,
                });
            }
            let heard = self.nodes[n].heard.get(&p).copied().unwrap_or(self.now);
            let quiet = self.now.nanos_since(heard);
            if quiet >= silence && self.nodes[n].silent.insert(p) {
                self.log(|| format!("n{} hears nothing from n{}", n + 1, p + 1));
                let event = ringraft_net::transport::TransportEvent::PeerDisconnected {
                    peer,
                    error: ringraft_net::transport::PeerError::Silent { for_ms: quiet / MS },
                };
                lock(&self.nodes[n].wire).inbox.push_back(event);
                reported = true;
            }
        }
        if ping {
            self.schedule_ping(n, boot);
        }
        let node = &self.nodes[n];
        let first_silence = (0..self.nodes.len())
            .filter(|p| *p != n && !node.silent.contains(p))
            .map(|p| {
                node.heard
                    .get(&p)
                    .copied()
                    .unwrap_or(self.now)
                    .plus_nanos(silence)
            })
            .min();
        if let Some(at) = first_silence {
            let node = &mut self.nodes[n];
            if at < node.next_ping && node.silence_check.is_none_or(|c| at < c) {
                node.silence_check = Some(at);
                self.schedule(
                    at,
                    Ev::Ping {
                        node: n,
                        boot,
                        ping: false,
                    },
                );
            }
        }
        if reported {
            self.turn(n)?;
        }
        Ok(())
    }

    /// Quiescence must not outlive the leader: a follower still quiesced under a leader whose
    /// node has been down for the silence timeout, a ping interval and three election
    /// timeouts (the whole detection plus time to campaign) fails the seed.
    fn check_quiesced_leader_alive(&self, n: usize, silence: u64) -> Result<(), String> {
        let Some(core) = self.nodes[n].core() else {
            return Ok(());
        };
        if !core.is_quiesced() || core.role() == Role::Leader {
            return Ok(());
        }
        let Some(leader) = core.leader() else {
            return Ok(());
        };
        let l = leader.0 as usize - 1;
        let Some(down) = self.nodes.get(l).and_then(|node| node.down_since) else {
            return Ok(());
        };
        let limit = silence + PING_INTERVAL + 3 * silence;
        if self.now.nanos_since(down) > limit {
            return Err(format!(
                "n{} stays quiesced under leader n{} although that node has been down for {} ms",
                n + 1,
                l + 1,
                self.now.nanos_since(down) / MS
            ));
        }
        Ok(())
    }

    /// In quiescence seeds, before the network heals, every client falls quiet for 0.2–1.5 s
    /// now and then, long enough for the cluster to quiesce: the time a client about to send
    /// must wait until, if a lull is on.
    pub(super) fn lull(&mut self) -> Option<Time> {
        if !self.quiesce || self.healed {
            return None;
        }
        if self.now >= self.lull_next {
            let r = &mut self.quiet_rng;
            self.lull_until = self.now.plus_nanos(r.range(200 * MS, 1500 * MS));
            self.lull_next = self.lull_until.plus_nanos(r.range(100 * MS, 1000 * MS));
        }
        (self.now < self.lull_until).then_some(self.lull_until)
    }
}
