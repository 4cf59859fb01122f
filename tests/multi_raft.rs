//! Many groups per node (`MultiRaft`): one transport per node carries every group, idle groups
//! quiesce (no heartbeats, no timers), a write wakes its group, and a leader node that goes
//! silent is replaced in every group it led, found by the nodes' liveness watch alone
//! (ARCHITECTURE §14).

mod node_support;

use bytes::Bytes;
use node_support::{resolve, test_config, wait_until, RecordingFsm};
use ringraft::{
    Fsm, FsmError, FsmSnapshot, MultiRaft, MultiRaftConfig, Raft, RaftState, StartError,
};
use ringraft_net::memory::MemNetwork;
use ringraft_storage::{
    Configuration, GroupId, Index, InmemSnapshotStore, InmemStore, LogError, LogStore, NodeId,
    SharedWal, WalConfig,
};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

fn watch() -> MultiRaftConfig {
    MultiRaftConfig {
        ping_interval: Duration::from_millis(20),
        // The groups' election timeout (test_config).
        silence_timeout: Duration::from_millis(200),
        ..MultiRaftConfig::default()
    }
}

/// Starts group `g` on every node (in-memory stores) and bootstraps it with `members`.
fn start_group(nodes: &[MultiRaft], g: u64, members: &Configuration) -> Vec<Raft> {
    start_group_with(nodes, g, members, RecordingFsm::new)
}

/// [`start_group`] with the state machines `fsm` makes.
fn start_group_with<F: Fsm>(
    nodes: &[MultiRaft],
    g: u64,
    members: &Configuration,
    fsm: impl Fn() -> F,
) -> Vec<Raft> {
    start_group_configured(nodes, g, members, test_config, fsm)
}

/// [`start_group_with`] with each replica's configuration from `config`.
fn start_group_configured<F: Fsm>(
    nodes: &[MultiRaft],
    g: u64,
    members: &Configuration,
    config: impl Fn(NodeId) -> ringraft::Config,
    fsm: impl Fn() -> F,
) -> Vec<Raft> {
    nodes
        .iter()
        .map(|node| {
            let raft = node
                .add_group(
                    GroupId(g),
                    config(node.id()),
                    fsm(),
                    InmemStore::new(),
                    InmemStore::new(),
                    InmemSnapshotStore::new(),
                )
                .expect("group");
            resolve("bootstrap", raft.bootstrap_cluster(members.clone())).expect("bootstrap");
            raft
        })
        .collect()
}

/// Nodes 1, 2 and 3 on `network`, and the configuration of all three as voters.
fn three_nodes(network: &MemNetwork, config: &MultiRaftConfig) -> (Vec<MultiRaft>, Configuration) {
    let ids: Vec<NodeId> = (1..=3).map(NodeId).collect();
    let nodes = ids
        .iter()
        .map(|&id| MultiRaft::new(network.transport(id), config.clone()).expect("node"))
        .collect();
    (nodes, Configuration::voters_with_default_addresses(ids))
}

struct Cluster {
    network: MemNetwork,
    nodes: Vec<MultiRaft>,
    /// `groups[g][n]`: group g+1 on node n+1.
    groups: Vec<Vec<Raft>>,
}

impl Cluster {
    fn start(groups: u64) -> Cluster {
        Cluster::start_with(groups, watch())
    }

    fn start_with(groups: u64, config: MultiRaftConfig) -> Cluster {
        let network = MemNetwork::new();
        let (nodes, members) = three_nodes(&network, &config);
        let mut all = Vec::new();
        for g in 1..=groups {
            all.push(start_group(&nodes, g, &members));
        }
        Cluster {
            network,
            nodes,
            groups: all,
        }
    }

    /// The node (1-based) leading group `g` (0-based), among `among`.
    fn leader_of(&self, g: usize, among: &[usize]) -> Option<usize> {
        among
            .iter()
            .copied()
            .find(|&n| self.groups[g][n - 1].state() == RaftState::Leader)
    }

    fn wait_leaders(&self, among: &[usize]) -> Vec<usize> {
        wait_until("a leader in every group", || {
            (0..self.groups.len()).all(|g| self.leader_of(g, among).is_some())
        });
        (0..self.groups.len())
            .map(|g| self.leader_of(g, among).expect("leader"))
            .collect()
    }

    /// Writes one command to every group through its leader; each answers with the count
    /// of commands its state machine applied.
    fn write_everywhere(&self, leaders: &[usize], expected_count: usize) {
        for (g, &n) in leaders.iter().enumerate() {
            let applied =
                resolve("apply", self.groups[g][n - 1].apply(format!("g{g}"), T)).expect("apply");
            assert_eq!(applied.response, Bytes::from(expected_count.to_string()));
        }
    }

    /// Messages the network delivered during `window`.
    fn traffic_during(&self, window: Duration) -> u64 {
        let before = self.network.delivered();
        std::thread::sleep(window);
        self.network.delivered() - before
    }

    /// Waits (at most 20 s) until fewer than `limit` messages cross the network in 500 ms;
    /// returns the last count.
    fn wait_quiet(&self, limit: u64) -> u64 {
        let mut last = u64::MAX;
        for _ in 0..40 {
            last = self.traffic_during(Duration::from_millis(500));
            if last < limit {
                break;
            }
        }
        last
    }

    /// `groups` groups that elected leaders (returned, per group), took one write each and
    /// quiesced.
    fn quiesced_with(groups: u64, config: MultiRaftConfig) -> (Cluster, Vec<usize>) {
        let c = Cluster::start_with(groups, config);
        let leaders = c.wait_leaders(&[1, 2, 3]);
        c.write_everywhere(&leaders, 1);
        let idle = c.wait_quiet(300);
        assert!(
            idle < 300,
            "idle groups still exchange {idle} messages per 500 ms"
        );
        (c, leaders)
    }

    fn shutdown(self) {
        for group in &self.groups {
            for raft in group {
                raft.shutdown().wait().expect("shutdown");
            }
        }
    }
}

#[test]
fn idle_groups_quiesce_and_a_write_wakes_its_group() {
    let groups = 30;
    let c = Cluster::start(groups);
    let leaders = c.wait_leaders(&[1, 2, 3]);
    c.write_everywhere(&leaders, 1);
    assert_eq!(c.nodes[0].stats().groups, groups as usize);
    // Idle for an election timeout, the groups quiesce: what is left is the nodes' pings
    // (3 nodes × 2 peers every 20 ms = 150 per 500 ms). Heartbeating groups would exchange
    // 30 groups × 2 followers × 2 messages every 20 ms = 3 000.
    let idle = c.wait_quiet(300);
    assert!(
        idle < 300,
        "idle groups still exchange {idle} messages per 500 ms"
    );
    assert!(c.nodes[0].stats().pings_sent > 0);
    // Quiesced leaders still lead, and a write (or a read) wakes the group.
    assert_eq!(c.wait_leaders(&[1, 2, 3]), leaders);
    c.write_everywhere(&leaders, 2);
    for (g, &n) in leaders.iter().enumerate() {
        let raft = &c.groups[g][n - 1];
        resolve("read index", raft.read_index(T)).expect("read index");
        resolve("verify", raft.verify_leader()).expect("verify leader");
    }
    // Every replica applied both writes.
    for (g, group) in c.groups.iter().enumerate() {
        for raft in group {
            wait_until("followers apply", || {
                raft.applied_index() >= leaders_last(&c, g)
            });
        }
    }
    c.shutdown();
}

fn leaders_last(c: &Cluster, g: usize) -> Index {
    c.groups[g]
        .iter()
        .map(|r| r.last_index())
        .max()
        .unwrap_or(Index(0))
}

#[test]
fn a_silent_leader_node_is_replaced_in_every_group_it_led() {
    silent_leader_node_is_replaced(watch());
}

/// The groups quiesce, then the node leading group 1 is cut off without a word: no
/// connection event, only silence.
fn silent_leader_node_is_replaced(config: MultiRaftConfig) {
    let (c, leaders) = Cluster::quiesced_with(12, config);
    let gone = leaders[0];
    let rest: Vec<usize> = (1..=3).filter(|&n| n != gone).collect();
    let gone_id = NodeId(gone as u64);
    let rest_ids: Vec<NodeId> = rest.iter().map(|&n| NodeId(n as u64)).collect();
    c.network.partition(&[&[gone_id], &rest_ids]);
    let led_by_gone = leaders.iter().filter(|&&n| n == gone).count();
    assert!(led_by_gone >= 1);
    // Every group elects a leader among the two others, and takes writes there.
    let new_leaders = c.wait_leaders(&rest);
    c.write_everywhere(&new_leaders, 2);
    for &n in &rest {
        assert!(
            c.nodes[n - 1].stats().peers_silent >= 1,
            "node {n} never reported the silent node"
        );
    }
    c.network.heal();
    c.shutdown();
}

#[test]
fn a_herd_of_elections_waits_for_campaign_slots() {
    herd_waits_for_campaign_slots(watch());
}

/// One campaign slot per node: a node's groups campaign, and lead until they settle, one at
/// a time. Every group still elects after herds that had to wait for slots: at the start,
/// with each node cut off from the others until its groups' campaigns queue, and after the
/// leader node of some groups goes silent while the other two are cut off from each other
/// for a while. (A campaign that succeeds holds its slot for a few milliseconds, so herds
/// are made to wait by campaigns that cannot succeed.)
fn herd_waits_for_campaign_slots(config: MultiRaftConfig) {
    let one_slot = MultiRaftConfig {
        campaign_slots: 1,
        ..config
    };
    let c = Cluster::start_with(12, one_slot);
    let alone = |[a, b, n]: [NodeId; 3]| c.network.partition(&[&[a], &[b], &[n]]);
    alone([NodeId(1), NodeId(2), NodeId(3)]);
    let deferred =
        |c: &Cluster| -> u64 { c.nodes.iter().map(|n| n.stats().campaigns_deferred).sum() };
    // A node's first campaign keeps its slot while no vote can reach it; its other groups
    // wait.
    wait_until("a campaign waiting for a slot", || deferred(&c) > 0);
    c.network.heal();
    let leaders = c.wait_leaders(&[1, 2, 3]);
    c.write_everywhere(&leaders, 1);
    assert!(c.wait_quiet(300) < 300, "the groups did not quiesce");
    let at_start = deferred(&c);
    let gone = leaders[0];
    let rest: Vec<usize> = (1..=3).filter(|&n| n != gone).collect();
    let rest_ids: Vec<NodeId> = rest.iter().map(|&n| NodeId(n as u64)).collect();
    alone([NodeId(gone as u64), rest_ids[0], rest_ids[1]]);
    wait_until("the second herd waiting for slots", || {
        deferred(&c) > at_start
    });
    c.network.partition(&[&[NodeId(gone as u64)], &rest_ids]);
    let new_leaders = c.wait_leaders(&rest);
    c.write_everywhere(&new_leaders, 2);
    c.network.heal();
    c.shutdown();
}

/// A leader gives its campaign slot back once it has committed an entry of its term, not
/// when it quiesces (an election timeout later): a herd of elections then goes at the pace
/// of elections. One slot per node and 1 s election timeouts: the slots are free again well
/// within the second a leader waits before it may quiesce.
#[test]
fn a_leader_gives_its_campaign_slot_back_once_it_committed() {
    let second = Duration::from_secs(1);
    let config = MultiRaftConfig {
        silence_timeout: second,
        campaign_slots: 1,
        ..watch()
    };
    let network = MemNetwork::new();
    let (nodes, members) = three_nodes(&network, &config);
    let slow = |id: NodeId| {
        let mut c = test_config(id);
        c.heartbeat_timeout = second;
        c.election_timeout = second;
        c.leader_lease_timeout = second;
        c
    };
    let c = Cluster {
        groups: (1..=6)
            .map(|g| start_group_configured(&nodes, g, &members, slow, RecordingFsm::new))
            .collect(),
        network,
        nodes,
    };
    let leaders = c.wait_leaders(&[1, 2, 3]);
    c.write_everywhere(&leaders, 1);
    let held = || -> usize { c.nodes.iter().map(|n| n.stats().campaign_slots_held).sum() };
    // At most 600 ms: a slot kept until quiescence would still be held.
    for _ in 0..300 {
        if held() == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(held(), 0, "a settled leader kept its campaign slot");
    c.shutdown();
}

#[test]
fn wrong_use_is_refused_with_a_typed_error() {
    let network = MemNetwork::new();
    let d = MultiRaftConfig::default;
    let bad = [
        (
            MultiRaftConfig {
                ping_interval: Duration::from_secs(2),
                ..d()
            },
            "ping_interval",
        ),
        (
            MultiRaftConfig {
                campaign_slots: 0,
                ..d()
            },
            "campaign_slots",
        ),
        (
            MultiRaftConfig {
                snapshot_threads: 0,
                ..d()
            },
            "snapshot_threads",
        ),
        (MultiRaftConfig { shards: 0, ..d() }, "shards"),
    ];
    for (config, field) in bad {
        match MultiRaft::new(network.transport(NodeId(1)), config) {
            Err(StartError::Config(e)) => assert_eq!(e.field, field),
            other => panic!("expected a config error naming {field}, got {other:?}"),
        }
    }
    let node = MultiRaft::new(network.transport(NodeId(1)), watch()).expect("node");
    assert_eq!(node.id(), NodeId(1));
    let add = |id: u64| {
        node.add_group(
            GroupId(5),
            test_config(NodeId(id)),
            RecordingFsm::new(),
            InmemStore::new(),
            InmemStore::new(),
            InmemSnapshotStore::new(),
        )
    };
    match add(2) {
        Err(StartError::Config(e)) => assert_eq!(e.field, "local_id"),
        other => panic!("expected a config error, got {other:?}"),
    }
    let first = add(1).expect("group 5");
    match add(1) {
        Err(StartError::Transport(e)) => assert!(e.contains("already runs"), "{e}"),
        other => panic!("expected a transport error, got {other:?}"),
    }
    assert_eq!(node.stats().groups, 1);
    first.shutdown().wait().expect("shutdown");
    wait_until("group removed", || node.stats().groups == 0);
    // Removed, the group may start again.
    add(1)
        .expect("group 5 again")
        .shutdown()
        .wait()
        .expect("shutdown");
}

/// Three free loopback addresses.
fn free_addresses() -> Vec<std::net::SocketAddr> {
    ringraft_net::tcp::free_loopback_addresses(3).expect("free loopback ports")
}

/// Nodes 1, 2 and 3 over TCP at `addresses`, and the configuration of a group on all three.
fn tcp_nodes(addresses: &[std::net::SocketAddr]) -> (Vec<MultiRaft>, Configuration) {
    tcp_nodes_with(addresses, watch())
}

/// [`tcp_nodes`] with `config`.
fn tcp_nodes_with(
    addresses: &[std::net::SocketAddr],
    config: MultiRaftConfig,
) -> (Vec<MultiRaft>, Configuration) {
    use ringraft::TcpTransportConfig;
    use ringraft_net::handshake::ClusterId;
    use ringraft_net::tcp::TcpConfig;
    use ringraft_storage::Server;
    let nodes = (0..3)
        .map(|i| {
            let id = NodeId(i as u64 + 1);
            let mut tcp = TcpConfig::new(id, ClusterId(7), addresses[i]);
            tcp.backoff_initial = Duration::from_millis(5);
            tcp.backoff_max = Duration::from_millis(100);
            MultiRaft::new(TcpTransportConfig::new(tcp), config.clone()).expect("node")
        })
        .collect();
    let members = Configuration::new(
        (0..3)
            .map(|i| Server::voter(NodeId(i as u64 + 1), addresses[i].to_string()))
            .collect(),
    );
    (nodes, members)
}

#[test]
fn groups_share_one_tcp_connection_per_peer_node() {
    let addresses = free_addresses();
    let (nodes, members) = tcp_nodes(&addresses);
    let mut groups = Vec::new();
    for g in 1..=16u64 {
        groups.push(start_group(&nodes, g, &members));
    }
    let c = Cluster {
        network: MemNetwork::new(),
        nodes,
        groups,
    };
    c.replicate_and_stop_over_tcp(&addresses);
}

impl Cluster {
    /// Every group elects a leader and commits writes over the nodes' connections, and its
    /// followers apply them; then every group and node stops, and a stopped node has closed
    /// its listener: its address may be bound again at once.
    fn replicate_and_stop_over_tcp(self, addresses: &[std::net::SocketAddr]) {
        let leaders = self.wait_leaders(&[1, 2, 3]);
        self.write_everywhere(&leaders, 1);
        self.write_everywhere(&leaders, 2);
        for (g, group) in self.groups.iter().enumerate() {
            for raft in group {
                wait_until("followers apply", || {
                    raft.applied_index() >= leaders_last(&self, g)
                });
            }
        }
        let groups = self.groups.len();
        assert!(self.nodes.iter().all(|n| n.stats().groups == groups));
        for raft in self.groups.iter().flatten() {
            raft.shutdown().wait().expect("shutdown");
        }
        for (node, address) in self.nodes.into_iter().zip(addresses) {
            assert!(node.shutdown(T), "the node did not stop");
            std::net::TcpListener::bind(address).expect("the address is free again");
        }
    }
}

#[test]
fn a_group_stopped_on_a_live_node_is_led_from_another() {
    group_stopped_on_a_live_node_is_led_from_another(watch());
}

/// Group 1 stops on the node leading it; the node stays up and keeps pinging, so only the
/// group's own word (`GroupStopped`) tells its quiesced followers to elect another leader.
/// The node counts the group off, and the group may start there again, once.
fn group_stopped_on_a_live_node_is_led_from_another(config: MultiRaftConfig) {
    let (c, leaders) = Cluster::quiesced_with(8, config);
    let gone = leaders[0];
    c.groups[0][gone - 1].shutdown().wait().expect("shutdown");
    let rest: Vec<usize> = (1..=3).filter(|&n| n != gone).collect();
    wait_until("group 1 elects a leader elsewhere", || {
        c.leader_of(0, &rest).is_some()
    });
    let next = c.leader_of(0, &rest).expect("leader");
    let applied = resolve("apply", c.groups[0][next - 1].apply("after", T)).expect("apply");
    assert_eq!(applied.response, Bytes::from("2"));
    // The other groups kept their leaders.
    for (g, &leader) in leaders.iter().enumerate().skip(1) {
        assert_eq!(c.leader_of(g, &[1, 2, 3]), Some(leader), "group {}", g + 1);
    }
    let node = &c.nodes[gone - 1];
    assert_eq!(node.stats().groups, 7);
    let add = || {
        node.add_group(
            GroupId(1),
            test_config(node.id()),
            RecordingFsm::new(),
            InmemStore::new(),
            InmemStore::new(),
            InmemSnapshotStore::new(),
        )
    };
    let again = add().expect("group 1 starts again");
    match add() {
        Err(StartError::Transport(e)) => assert!(e.contains("already runs"), "{e}"),
        other => panic!("expected a transport error, got {other:?}"),
    }
    again.shutdown().wait().expect("shutdown");
    c.shutdown();
}

/// Durable groups, one `SharedWal` per node: group `g` on every node, its log that node's
/// share of the WAL; bootstrapped with `members` when asked.
fn start_durable_group(
    nodes: &[MultiRaft],
    wals: &[SharedWal],
    g: u64,
    bootstrap: Option<&Configuration>,
) -> Vec<Raft> {
    nodes
        .iter()
        .zip(wals)
        .map(|(node, wal)| {
            let raft = node
                .add_group(
                    GroupId(g),
                    test_config(node.id()),
                    RecordingFsm::new(),
                    wal.log(GroupId(g)).expect("the group's share of the WAL"),
                    InmemStore::new(),
                    InmemSnapshotStore::new(),
                )
                .expect("group");
            if let Some(members) = bootstrap {
                resolve("bootstrap", raft.bootstrap_cluster(members.clone())).expect("bootstrap");
            }
            raft
        })
        .collect()
}

/// Shuts down `groups`, then `nodes`.
fn stop<'a>(groups: impl Iterator<Item = &'a Raft>, nodes: Vec<MultiRaft>) {
    for raft in groups {
        raft.shutdown().wait().expect("shutdown");
    }
    for node in nodes {
        assert!(node.shutdown(T), "the node stopped");
    }
}

/// Three nodes whose groups keep their logs in one `SharedWal` per node, each in a
/// directory of its own that outlives the nodes (restarts).
struct DurableNodes {
    dirs: Vec<tempfile::TempDir>,
    config: MultiRaftConfig,
    members: Configuration,
}

impl DurableNodes {
    fn new(config: MultiRaftConfig) -> DurableNodes {
        DurableNodes {
            dirs: (0..3)
                .map(|_| tempfile::tempdir().expect("tempdir"))
                .collect(),
            config,
            members: Configuration::voters_with_default_addresses((1..=3).map(NodeId)),
        }
    }

    /// Starts the nodes (no groups yet) and opens their WALs.
    fn open(&self, network: &MemNetwork) -> (Vec<MultiRaft>, Vec<SharedWal>) {
        let nodes = (1..=3)
            .map(|id| MultiRaft::new(network.transport(NodeId(id)), self.config.clone()))
            .collect::<Result<_, _>>()
            .expect("node");
        let wals = self
            .dirs
            .iter()
            .map(|d| SharedWal::open(WalConfig::new(d.path())).expect("WAL"))
            .collect();
        (nodes, wals)
    }

    /// Starts and bootstraps groups 1 to `groups`, and commits two commands in each.
    fn start_with_two_commands(
        &self,
        nodes: &[MultiRaft],
        wals: &[SharedWal],
        groups: u64,
    ) -> Vec<Vec<Raft>> {
        let groups: Vec<Vec<Raft>> = (1..=groups)
            .map(|g| start_durable_group(nodes, wals, g, Some(&self.members)))
            .collect();
        for group in &groups {
            assert_eq!(apply_on_leader(group), Bytes::from("1"));
            assert_eq!(apply_on_leader(group), Bytes::from("2"));
        }
        groups
    }
}

/// Waits for a leader of the group (one `Raft` per node) and applies one command there;
/// returns the state machine's answer (the number of commands it applied).
fn apply_on_leader(group: &[Raft]) -> Bytes {
    wait_until("a leader", || {
        group.iter().any(|r| r.state() == RaftState::Leader)
    });
    let leader = group
        .iter()
        .find(|r| r.state() == RaftState::Leader)
        .expect("leader");
    resolve("apply", leader.apply("x", T))
        .expect("apply")
        .response
}

/// A group that leaves the nodes for good is shut down and removed from each node's WAL:
/// after a restart the WALs hold only the other groups, which come back with their data.
#[test]
fn a_group_removed_for_good_leaves_no_log_behind() {
    let durable = DurableNodes::new(watch());
    let network = MemNetwork::new();
    let (nodes, wals) = durable.open(&network);
    let groups = durable.start_with_two_commands(&nodes, &wals, 3);
    for wal in &wals {
        // Not while the group runs here: its log is open.
        let refused = wal.remove(GroupId(2));
        assert!(
            matches!(&refused, Err(LogError::Config { reason }) if reason.contains("open")),
            "{refused:?}"
        );
    }
    for raft in &groups[1] {
        raft.shutdown().wait().expect("shutdown");
    }
    for wal in &wals {
        wal.remove(GroupId(2)).expect("remove group 2");
        assert_eq!(wal.groups(), vec![GroupId(1), GroupId(3)]);
    }
    stop(groups.iter().flatten(), nodes);
    drop(wals);

    // Restarted from the WALs: groups 1 and 3 with their two commands, group 2 with nothing.
    let network = MemNetwork::new();
    let (nodes, wals) = durable.open(&network);
    for wal in &wals {
        assert_eq!(wal.groups(), vec![GroupId(1), GroupId(3)]);
        let log = wal.log(GroupId(2)).expect("group 2's share");
        assert_eq!((log.first_index(), log.last_index()), (Index(1), Index(0)));
        assert_eq!(log.saved_hard_state(), None);
    }
    for g in [1, 3] {
        let group = start_durable_group(&nodes, &wals, g, None);
        assert_eq!(apply_on_leader(&group), Bytes::from("3"), "group {g}");
        for raft in &group {
            raft.shutdown().wait().expect("shutdown");
        }
    }
}

/// Several shards per node another way: one `MultiRaft` per shard (its own thread, transport
/// and, durable, WAL), with the node's id, and groups placed on shards by the application
/// (here group g on shard g mod 2). Shard k of a node talks to shard k of the others only, so
/// a group's members are the addresses of its shard on each node. (`MultiRaftConfig::shards`
/// does it behind one transport: the tests below.)
#[test]
fn several_shards_per_node_are_one_multiraft_each() {
    let shards: Vec<(Vec<MultiRaft>, Configuration)> =
        (0..2).map(|_| tcp_nodes(&free_addresses())).collect();
    let groups: Vec<Vec<Raft>> = (1..=12u64)
        .map(|g| {
            let (nodes, members) = &shards[(g % 2) as usize];
            start_group(nodes, g, members)
        })
        .collect();
    for group in &groups {
        assert_eq!(apply_on_leader(group), Bytes::from("1"));
    }
    for (nodes, _) in &shards {
        assert!(nodes.iter().all(|n| n.stats().groups == 6));
    }
    for raft in groups.iter().flatten() {
        raft.shutdown().wait().expect("shutdown");
    }
    for (nodes, _) in shards {
        for node in nodes {
            assert!(node.shutdown(T), "the node did not stop");
        }
    }
}

fn shards(n: usize) -> MultiRaftConfig {
    MultiRaftConfig {
        shards: n,
        ..watch()
    }
}

/// A recording state machine that first calls `hook` with every entry it applies.
struct HookFsm<H> {
    inner: RecordingFsm,
    hook: H,
}

impl<H: FnMut(&ringraft_storage::Entry) + Send + 'static> HookFsm<H> {
    fn new(hook: H) -> HookFsm<H> {
        HookFsm {
            inner: RecordingFsm::new(),
            hook,
        }
    }
}

impl<H: FnMut(&ringraft_storage::Entry) + Send + 'static> Fsm for HookFsm<H> {
    fn apply(&mut self, entry: &ringraft_storage::Entry) -> Bytes {
        (self.hook)(entry);
        self.inner.apply(entry)
    }

    fn snapshot(&mut self) -> Result<Box<dyn FsmSnapshot>, FsmError> {
        self.inner.snapshot()
    }

    fn restore(&mut self, data: &mut dyn std::io::Read) -> Result<(), FsmError> {
        self.inner.restore(data)
    }
}

/// Records the threads its commands were applied on into `threads`.
fn thread_fsm(
    threads: &Arc<Mutex<BTreeSet<String>>>,
) -> HookFsm<impl FnMut(&ringraft_storage::Entry) + Send + 'static> {
    let threads = threads.clone();
    HookFsm::new(move |_: &ringraft_storage::Entry| {
        threads
            .lock()
            .unwrap()
            .insert(format!("{:?}", std::thread::current().id()));
    })
}

/// `MultiRaftConfig::shards`: a node's groups run on several shard threads behind its one
/// transport (one listener, one connection per peer node and lane). Groups on every shard
/// elect, commit and replicate through the first shard's router, and their state machines
/// run on different threads.
#[test]
fn groups_on_several_shard_threads_share_one_tcp_transport() {
    let addresses = free_addresses();
    let (nodes, members) = tcp_nodes_with(&addresses, shards(3));
    let threads = Arc::new(Mutex::new(BTreeSet::new()));
    let groups: Vec<Vec<Raft>> = (1..=12u64)
        .map(|g| start_group_with(&nodes, g, &members, || thread_fsm(&threads)))
        .collect();
    let c = Cluster {
        network: MemNetwork::new(),
        nodes,
        groups,
    };
    c.replicate_and_stop_over_tcp(&addresses);
    let distinct = threads.lock().unwrap().len();
    assert!(
        distinct >= 3,
        "the groups applied on {distinct} threads, not on their shards' three"
    );
}

/// With several shard threads, idle groups on every shard quiesce, and a leader node that
/// goes silent is replaced in every group it led: the first shard's liveness watch reports
/// the silence to groups on the other shards too.
#[test]
fn several_shard_threads_quiesce_and_replace_a_silent_leader_node() {
    silent_leader_node_is_replaced(shards(3));
}

/// The node's campaign slots are shared by its shard threads: with one slot per node, the
/// groups on every shard still all elect, one campaign at a time.
#[test]
fn several_shard_threads_share_the_campaign_slots() {
    herd_waits_for_campaign_slots(shards(3));
}

/// Group 1 runs on shard 1 of two: not the router's thread.
#[test]
fn a_group_stopped_on_another_shard_thread_is_led_from_another_node() {
    group_stopped_on_a_live_node_is_led_from_another(shards(2));
}

/// Durable groups on two shard threads per node share the node's one WAL; a restart of every
/// node brings every group back with its commands.
#[test]
fn durable_groups_on_several_shard_threads_share_a_wal_and_recover() {
    let durable = DurableNodes::new(shards(2));
    let network = MemNetwork::new();
    let (nodes, wals) = durable.open(&network);
    let groups = durable.start_with_two_commands(&nodes, &wals, 6);
    stop(groups.iter().flatten(), nodes);
    drop(wals);
    let network = MemNetwork::new();
    let (nodes, wals) = durable.open(&network);
    for g in 1..=6 {
        let group = start_durable_group(&nodes, &wals, g, None);
        assert_eq!(apply_on_leader(&group), Bytes::from("3"), "group {g}");
        for raft in &group {
            raft.shutdown().wait().expect("shutdown");
        }
    }
    for node in nodes {
        assert!(node.shutdown(T), "the node stopped");
    }
}

/// Durable groups over TCP: each node's shard thread has an I/O driver, so its groups' shares
/// of the node's `SharedWal` are written without the WAL's writer thread (submitted on the
/// shard thread, reaped by its reaper task) where io_uring is available. Every acknowledged
/// write survives the nodes' shutdown and comes back after a restart. Also with two shard
/// threads per node sharing its WAL: each thread reaps (whichever gets the writer's lock).
#[test]
fn durable_groups_over_tcp_write_without_the_wal_thread_and_recover() {
    durable_groups_over_tcp_recover(watch());
    durable_groups_over_tcp_recover(shards(2));
}

fn durable_groups_over_tcp_recover(config: MultiRaftConfig) {
    let dirs: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let open = || -> Vec<SharedWal> {
        dirs.iter()
            .map(|d| SharedWal::open(WalConfig::new(d.path())).expect("WAL"))
            .collect()
    };
    let addresses = free_addresses();
    let (nodes, members) = tcp_nodes_with(&addresses, config.clone());
    let wals = open();
    let groups: Vec<Vec<Raft>> = (1..=8)
        .map(|g| start_durable_group(&nodes, &wals, g, Some(&members)))
        .collect();
    for _ in 0..5 {
        for group in &groups {
            apply_on_leader(group);
        }
    }
    for wal in &wals {
        let counts = wal.batch_counts();
        if wal.info().backend == ringraft_storage::BackendKind::IoUring {
            assert!(counts.asynchronous > 0, "{counts:?}");
        }
    }
    stop(groups.iter().flatten(), nodes);
    drop(wals);
    let (nodes, _) = tcp_nodes_with(&addresses, config);
    let wals = open();
    for g in 1..=8 {
        let group = start_durable_group(&nodes, &wals, g, None);
        assert_eq!(apply_on_leader(&group), Bytes::from("6"), "group {g}");
        for raft in &group {
            raft.shutdown().wait().expect("shutdown");
        }
    }
    for node in nodes {
        assert!(node.shutdown(T), "the node stopped");
    }
}

/// A group placed on a shard of the caller's choosing (`MultiRaft::add_group_on`), and a
/// replica moved to another shard thread: shut down, then added again there from its share of
/// the WAL. It recovers its log (its state machine, replayed, counts on from the same
/// commands), applies on the new shard's thread, and the group keeps committing.
#[test]
fn a_replica_moves_to_another_shard_by_starting_again_there() {
    let durable = DurableNodes::new(shards(2));
    let network = MemNetwork::new();
    let (nodes, wals) = durable.open(&network);
    assert_eq!(nodes[0].shards(), 2);
    // Where node 1's state machines run: group 1 (shard 1), group 2 before and after its move.
    let threads = || Arc::new(Mutex::new(BTreeSet::<String>::new()));
    let (group_1, group_2, moved) = (threads(), threads(), threads());
    let add = |node: usize, g: u64, shard: usize, threads: &Arc<Mutex<BTreeSet<String>>>| {
        let mut config = test_config(nodes[node].id());
        config.apply_placement = ringraft::ApplyPlacement::ShardThread;
        nodes[node]
            .add_group_on(
                shard,
                GroupId(g),
                config,
                thread_fsm(threads),
                wals[node].log(GroupId(g)).expect("the group's share"),
                InmemStore::new(),
                InmemSnapshotStore::new(),
            )
            .expect("group")
    };
    let elsewhere = threads();
    // Group 2 on shard 0 of node 1, on shard 1 of the others (nodes need not agree).
    let mut groups: Vec<Vec<Raft>> = [(1, group_1.clone(), 1), (2, group_2.clone(), 0)]
        .into_iter()
        .map(|(g, threads, shard)| {
            (0..3)
                .map(|node| {
                    let raft = if node == 0 {
                        add(node, g, shard, &threads)
                    } else {
                        add(node, g, 1, &elsewhere)
                    };
                    resolve("bootstrap", raft.bootstrap_cluster(durable.members.clone()))
                        .expect("bootstrap");
                    raft
                })
                .collect()
        })
        .collect();
    for group in &groups {
        assert_eq!(apply_on_leader(group), Bytes::from("1"));
        assert_eq!(apply_on_leader(group), Bytes::from("2"));
    }
    let applied_on = |threads: &Arc<Mutex<BTreeSet<String>>>| threads.lock().unwrap().clone();
    wait_until("node 1 applied both groups' commands", || {
        !applied_on(&group_1).is_empty() && !applied_on(&group_2).is_empty()
    });
    assert_ne!(
        applied_on(&group_1),
        applied_on(&group_2),
        "two shard threads"
    );
    // The move: node 1's replica of group 2 stops, and starts again on shard 1.
    let old = groups[1].remove(0);
    old.shutdown().wait().expect("shutdown");
    wait_until("the replica stopped", || nodes[0].stats().groups == 1);
    groups[1].insert(0, add(0, 2, 1, &moved));
    assert_eq!(apply_on_leader(&groups[1]), Bytes::from("3"));
    wait_until("the moved replica applied the commands again", || {
        !applied_on(&moved).is_empty()
    });
    assert_eq!(
        applied_on(&moved),
        applied_on(&group_1),
        "the moved replica applies on shard 1's thread"
    );
    match nodes[0].add_group_on(
        2,
        GroupId(3),
        test_config(NodeId(1)),
        RecordingFsm::new(),
        InmemStore::new(),
        InmemStore::new(),
        InmemSnapshotStore::new(),
    ) {
        Err(StartError::Config(e)) => assert_eq!(e.field, "shard"),
        other => panic!("expected a config error naming the shard, got {other:?}"),
    }
    stop(groups.iter().flatten(), nodes);
}

/// `add_group` registers the group on the calling thread and does not wait for the group's
/// loop to run on its shard: with the node's only shard thread held up in another group's
/// state machine, a group is added (and a second add of it refused) at once, and runs once
/// the thread is free.
#[test]
fn adding_a_group_does_not_wait_for_its_busy_shard_thread() {
    let network = MemNetwork::new();
    let config = MultiRaftConfig {
        shards: 1,
        ..watch()
    };
    let node = MultiRaft::new(network.transport(NodeId(1)), config).expect("node");
    let members = Configuration::voters_with_default_addresses([NodeId(1)]);
    let inline = || {
        let mut c = test_config(NodeId(1));
        c.apply_placement = ringraft::ApplyPlacement::ShardThread;
        c
    };
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel();
    // Holds the shard thread in `apply` on a `hold` command until released.
    let gate = HookFsm::new(move |entry: &ringraft_storage::Entry| {
        if &entry.data[..] == b"hold" {
            let _ = entered_tx.send(());
            let _ = release_rx.recv_timeout(3 * T);
        }
    });
    let stores = || {
        (
            InmemStore::new(),
            InmemStore::new(),
            InmemSnapshotStore::new(),
        )
    };
    let (log, stable, snaps) = stores();
    let first = node
        .add_group(GroupId(1), inline(), gate, log, stable, snaps)
        .expect("group 1");
    resolve("bootstrap", first.bootstrap_cluster(members.clone())).expect("bootstrap");
    wait_until("group 1 leads", || first.state() == RaftState::Leader);
    let held = first.apply(Bytes::from_static(b"hold"), T);
    entered_rx
        .recv_timeout(T)
        .expect("the shard thread enters the state machine");

    let add_second = || {
        let (log, stable, snaps) = stores();
        node.add_group(
            GroupId(2),
            inline(),
            RecordingFsm::new(),
            log,
            stable,
            snaps,
        )
    };
    let (added_tx, added_rx) = std::sync::mpsc::channel();
    std::thread::scope(|s| {
        let adder = s.spawn(|| {
            let added = add_second();
            let _ = added_tx.send(());
            added
        });
        let in_time = added_rx.recv_timeout(T).is_ok();
        let again = add_second();
        let groups = node.stats().groups;
        // Released before asserting, so a failure does not leave the shard thread held.
        release_tx.send(()).expect("release");
        assert!(in_time, "add_group waited for the busy shard thread");
        match again {
            Err(StartError::Transport(e)) => assert!(e.contains("already runs"), "{e}"),
            other => panic!("a second add of group 2 was not refused: {other:?}"),
        }
        assert_eq!(groups, 2);
        let second = adder.join().expect("adder").expect("group 2");
        resolve("bootstrap", second.bootstrap_cluster(members.clone())).expect("bootstrap");
        wait_until("group 2 leads", || second.state() == RaftState::Leader);
        resolve("apply", second.apply(Bytes::from_static(b"x"), T)).expect("group 2 applies");
        second.shutdown().wait().expect("shutdown");
    });
    resolve("held apply", held).expect("the held command applies once released");
    first.shutdown().wait().expect("shutdown");
}

/// A shard thread that does not run for longer than its leaders' lease timeout (here one
/// state machine call blocking it for 500 ms; lease 250 ms, heartbeat and election timeouts
/// and the node's silence timeout longer than the stall) deposes none of the leaders on it:
/// their followers on the other nodes answered meanwhile (ARCHITECTURE §4, "Lease step-down
/// after the leader's own stall").
#[test]
fn a_stalled_shard_thread_keeps_the_leaders_it_hosts() {
    let network = MemNetwork::new();
    let config = MultiRaftConfig {
        ping_interval: Duration::from_millis(50),
        silence_timeout: Duration::from_millis(2000),
        ..MultiRaftConfig::default()
    };
    let (nodes, members) = three_nodes(&network, &config);
    let group_config = |id: NodeId| {
        let mut c = test_config(id);
        c.apply_placement = ringraft::ApplyPlacement::ShardThread;
        c.heartbeat_timeout = Duration::from_millis(2000);
        c.election_timeout = Duration::from_millis(2000);
        c.leader_lease_timeout = Duration::from_millis(250);
        c
    };
    let groups: Vec<Vec<Raft>> = (1..=6u64)
        .map(|g| start_group_configured(&nodes, g, &members, group_config, RecordingFsm::new))
        .collect();
    let leader_of = |g: &[Raft]| g.iter().position(|r| r.state() == RaftState::Leader);
    wait_until("a leader in every group", || {
        groups.iter().all(|g| leader_of(g).is_some())
    });
    let leaders: Vec<usize> = groups
        .iter()
        .map(|g| leader_of(g).expect("leader"))
        .collect();
    let stalled = leaders[0];
    let terms: Vec<_> = groups
        .iter()
        .zip(&leaders)
        .map(|(g, &l)| g[l].current_term())
        .collect();
    // Every group writes (none is quiescent), then group 1's leader blocks its node's shard
    // thread: the other groups that node leads cannot tick for 500 ms.
    for (g, &l) in groups.iter().zip(&leaders) {
        resolve("apply", g[l].apply(Bytes::from_static(b"before"), T)).expect("apply");
    }
    resolve(
        "stall",
        groups[0][stalled].apply(Bytes::from_static(b"stall-ms:500:multi"), T),
    )
    .expect("apply the stalling command");
    std::thread::sleep(Duration::from_millis(300));
    for (g, &l) in groups.iter().zip(&leaders) {
        resolve("apply", g[l].apply(Bytes::from_static(b"after"), T))
            .expect("the same leaders take writes");
    }
    for ((g, &l), term) in groups.iter().zip(&leaders).zip(&terms) {
        assert_eq!(g[l].current_term(), *term, "no election followed the stall");
    }
    let on_stalled = leaders.iter().filter(|&&l| l == stalled).count();
    assert!(on_stalled >= 1);
    for group in &groups {
        for raft in group {
            raft.shutdown().wait().expect("shutdown");
        }
    }
}

/// Members named by addresses the TCP transport cannot dial (host names: it takes socket
/// addresses), every peer's socket address given to the transport at its start instead. The
/// nodes' liveness watch must still cover every group: once the groups quiesce, the node
/// leading the most of them stops for three seconds (one state machine call blocks its shard
/// thread, which runs its router: no pings, nothing read, its connections open and silent),
/// and every group it led elects a leader on the other two nodes meanwhile.
#[test]
fn a_silent_leader_node_is_replaced_when_members_are_named_by_host_names() {
    use ringraft::TcpTransportConfig;
    use ringraft_net::handshake::ClusterId;
    use ringraft_net::tcp::TcpConfig;
    use ringraft_storage::Server;
    let addresses = free_addresses();
    let nodes: Vec<MultiRaft> = (0..3)
        .map(|i| {
            let mut tcp = TcpConfig::new(NodeId(i as u64 + 1), ClusterId(7), addresses[i]);
            for (j, address) in addresses.iter().enumerate() {
                if j != i {
                    tcp.peers.insert(NodeId(j as u64 + 1), *address);
                }
            }
            tcp.backoff_initial = Duration::from_millis(5);
            tcp.backoff_max = Duration::from_millis(100);
            MultiRaft::new(TcpTransportConfig::new(tcp), watch()).expect("node")
        })
        .collect();
    let members = Configuration::new(
        (1..=3)
            .map(|n| Server::voter(NodeId(n), format!("node-{n}.ringraft.test:7000")))
            .collect(),
    );
    let group_config = |id: NodeId| {
        let mut c = test_config(id);
        c.apply_placement = ringraft::ApplyPlacement::ShardThread;
        c
    };
    let groups: Vec<Vec<Raft>> = (1..=12u64)
        .map(|g| start_group_configured(&nodes, g, &members, group_config, RecordingFsm::new))
        .collect();
    let c = Cluster {
        network: MemNetwork::new(),
        nodes,
        groups,
    };
    let leaders = c.wait_leaders(&[1, 2, 3]);
    c.write_everywhere(&leaders, 1);
    // Quiesced: every follower has heard nothing for five heartbeat timeouts.
    wait_until("the groups quiesce", || {
        c.groups.iter().flatten().all(|r| {
            r.state() == RaftState::Leader
                || r.last_contact().is_some_and(|d| d > Duration::from_secs(1))
        })
    });
    let stalled = (1..=3)
        .max_by_key(|&n| leaders.iter().filter(|&&l| l == n).count())
        .expect("a node");
    let rest: Vec<usize> = (1..=3).filter(|&n| n != stalled).collect();
    let first = leaders.iter().position(|&l| l == stalled).expect("a group");
    assert!(leaders.iter().filter(|&&l| l == stalled).count() >= 4);
    let applied = c.groups[first][stalled - 1].applied_index();
    let stall = c.groups[first][stalled - 1].apply(Bytes::from_static(b"stall-ms:3000:tcp"), T);
    let new_leaders = c.wait_leaders(&rest);
    assert_eq!(
        c.groups[first][stalled - 1].applied_index(),
        applied,
        "the groups elected leaders among the others only after the stall ended"
    );
    for &n in &rest {
        assert!(
            c.nodes[n - 1].stats().peers_silent >= 1,
            "node {n} never reported the silent node"
        );
    }
    let _ = resolve("stall", stall);
    // Every group takes writes from its new leader (group `first` has applied the stalling
    // command too).
    for (g, &n) in new_leaders.iter().enumerate() {
        let applied = resolve("apply", c.groups[g][n - 1].apply(Bytes::from("after"), T));
        let expected = if g == first { "3" } else { "2" };
        assert_eq!(applied.expect("apply").response, Bytes::from(expected));
    }
    c.shutdown();
}
