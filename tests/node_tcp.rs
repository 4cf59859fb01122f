//! Real nodes over the TCP transport on loopback, with the segment WAL, the file stable store
//! and the file snapshot store in a temporary directory (issue 6 §3, the durable subset).
//!
//! Waits poll with generous deadlines that only guard against hangs; no test asserts on how
//! long anything took.

mod node_support;

use bytes::Bytes;
use node_support::{commands, test_config, wait_until, RecordingFsm};
use ringraft::{Raft, RaftState, TcpTransportConfig};
use ringraft_net::handshake::ClusterId;
use ringraft_net::tcp::TcpConfig;
use ringraft_storage::{
    Configuration, FileSnapshotStore, FileStableStore, Index, NodeId, Server, Suffrage, WalConfig,
    WalLogStore,
};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

/// A cluster of nodes whose state lives in `dir` and who talk over loopback TCP.
struct TcpCluster {
    _dir: tempfile::TempDir,
    root: PathBuf,
    addresses: Vec<SocketAddr>,
    /// The first `configured` nodes know each other's addresses from their transport
    /// configuration; nodes added later know nobody's, and nobody knows theirs.
    configured: usize,
    nodes: Vec<Option<Raft>>,
    applied: Vec<Arc<Mutex<Vec<Bytes>>>>,
}

/// Free loopback addresses outside the ephemeral range (the transport binds its own listener,
/// so a port has to be known before the node starts).
fn free_addresses(n: usize) -> Vec<SocketAddr> {
    ringraft_net::tcp::free_loopback_addresses(n).expect("free loopback ports")
}

/// A WAL with small segments (each is preallocated and zero-filled).
fn open_wal(dir: PathBuf) -> WalLogStore {
    let mut wal = WalConfig::new(dir);
    wal.segment_size_bytes = 4 << 20;
    wal.max_entry_bytes = 1 << 20;
    WalLogStore::open(wal).expect("open the WAL")
}

impl TcpCluster {
    fn new(n: usize) -> TcpCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut cluster = TcpCluster {
            root: dir.path().to_path_buf(),
            _dir: dir,
            addresses: free_addresses(n),
            configured: n,
            nodes: (0..n).map(|_| None).collect(),
            applied: (0..n).map(|_| Arc::default()).collect(),
        };
        for i in 1..=n as u64 {
            cluster.start(NodeId(i));
        }
        let configuration = Configuration::new(
            (1..=n as u64)
                .map(|i| Server::voter(NodeId(i), cluster.addresses[i as usize - 1].to_string()))
                .collect(),
        );
        for raft in cluster.nodes.iter().flatten() {
            raft.bootstrap_cluster(configuration.clone())
                .wait()
                .expect("bootstrap");
        }
        cluster
    }

    /// Starts (or restarts) node `id` from its directory with a fresh state machine.
    fn start(&mut self, id: NodeId) {
        let i = id.0 as usize - 1;
        assert!(self.nodes[i].is_none(), "{id} is running");
        let dir = self.root.join(format!("n{}", id.0));
        let log = open_wal(dir.join("wal"));
        let stable = FileStableStore::open(dir.join("stable")).expect("open the stable store");
        let snapshots = FileSnapshotStore::new(dir.join("snapshots"), 2).expect("snapshots");
        let mut tcp = TcpConfig::new(id, ClusterId(42), self.addresses[i]);
        if i < self.configured {
            for (j, address) in self.addresses[..self.configured].iter().enumerate() {
                if j != i {
                    tcp.peers.insert(NodeId(j as u64 + 1), *address);
                }
            }
        }
        tcp.backoff_initial = Duration::from_millis(5);
        tcp.backoff_max = Duration::from_millis(100);
        let fsm = RecordingFsm::new();
        self.applied[i] = fsm.applied.clone();
        let raft = Raft::new(
            test_config(id),
            fsm,
            log,
            stable,
            snapshots,
            TcpTransportConfig::new(tcp),
        )
        .expect("start node");
        self.nodes[i] = Some(raft);
    }

    /// Starts a node with no state and no peers in its transport configuration, at an address
    /// no other node's transport was configured with; returns its id and address.
    fn add_node(&mut self) -> (NodeId, SocketAddr) {
        let address = free_addresses(1)[0];
        self.addresses.push(address);
        self.nodes.push(None);
        self.applied.push(Arc::default());
        let id = NodeId(self.nodes.len() as u64);
        self.start(id);
        (id, address)
    }

    fn stop(&mut self, id: NodeId) {
        if let Some(raft) = self.nodes[id.0 as usize - 1].take() {
            raft.shutdown().wait().expect("shutdown");
        }
    }

    /// Stops every node, then starts them all again from their data directories.
    fn restart_all(&mut self) {
        let ids: Vec<NodeId> = (1..=self.nodes.len() as u64).map(NodeId).collect();
        for &id in &ids {
            self.stop(id);
        }
        for id in ids {
            self.start(id);
        }
    }

    fn raft(&self, id: NodeId) -> &Raft {
        self.nodes[id.0 as usize - 1].as_ref().expect("running")
    }

    fn running(&self) -> impl Iterator<Item = &Raft> {
        self.nodes.iter().flatten()
    }

    fn applied(&self, id: NodeId) -> Vec<Bytes> {
        self.applied[id.0 as usize - 1]
            .lock()
            .expect("applied")
            .clone()
    }

    /// A leader of the highest term that every running node follows.
    fn wait_leader(&self) -> NodeId {
        let mut leader = None;
        wait_until("a leader everyone follows", || {
            let Some(l) = self
                .running()
                .filter(|r| r.state() == RaftState::Leader)
                .max_by_key(|r| r.current_term())
            else {
                return false;
            };
            leader = Some(l.local_id());
            self.running().all(|r| r.leader() == leader)
        });
        leader.expect("leader")
    }

    /// Applies `commands` on the leader, retrying a command whose outcome is known to be
    /// "not applied" (no leader yet); returns the acknowledged ones.
    fn write(&self, commands: &[Bytes]) -> Vec<Bytes> {
        let mut acknowledged = Vec::new();
        for c in commands {
            let leader = self.wait_leader();
            self.raft(leader).apply(c.clone(), T).wait().expect("apply");
            acknowledged.push(c.clone());
        }
        acknowledged
    }

    fn wait_applied_everywhere(&self, expected: &[Bytes]) {
        for raft in self.running() {
            let id = raft.local_id();
            wait_until(
                &format!("{id} to apply {} commands", expected.len()),
                || self.applied(id).len() >= expected.len(),
            );
            assert_eq!(self.applied(id), expected, "{id} applied something else");
        }
    }
}

impl Drop for TcpCluster {
    fn drop(&mut self) {
        for raft in self.nodes.iter().flatten() {
            let _ = raft.shutdown().wait();
        }
    }
}

#[test]
fn three_nodes_over_tcp_elect_replicate_and_survive_a_leader_restart() {
    let mut cluster = TcpCluster::new(3);
    let leader = cluster.wait_leader();
    let mut acknowledged = cluster.write(&commands("a", 50));
    // Many in flight at once: they share persist batches and AppendEntries.
    let futures: Vec<_> = commands("b", 200)
        .into_iter()
        .map(|c| (c.clone(), cluster.raft(leader).apply(c, T)))
        .collect();
    for (c, f) in futures {
        f.wait().expect("concurrent apply");
        acknowledged.push(c);
    }
    cluster.wait_applied_everywhere(&acknowledged);

    cluster.stop(leader);
    let second = cluster.wait_leader();
    assert_ne!(second, leader);
    acknowledged.extend(cluster.write(&commands("c", 50)));
    cluster.start(leader);
    cluster.raft(second).barrier(T).wait().expect("barrier");
    cluster.wait_applied_everywhere(&acknowledged);
}

#[test]
fn a_cluster_restarted_from_disk_has_every_acknowledged_write() {
    let mut cluster = TcpCluster::new(3);
    let acknowledged = cluster.write(&commands("w", 100));
    cluster.restart_all();
    let leader = cluster.wait_leader();
    // A barrier commits an entry of the new term, so everything before it is applied.
    cluster.raft(leader).barrier(T).wait().expect("barrier");
    cluster.wait_applied_everywhere(&acknowledged);
    let more = cluster.write(&commands("x", 10));
    let mut all = acknowledged;
    all.extend(more);
    cluster.wait_applied_everywhere(&all);
}

#[test]
fn a_single_server_restarted_from_disk_has_every_acknowledged_write() {
    // A leader without peers writes small batches on its own thread (ARCHITECTURE §10): one
    // write at a time, then 64 at once (which go to the WAL's writer thread after the first).
    let mut cluster = TcpCluster::new(1);
    let mut acknowledged = cluster.write(&commands("w", 50));
    let leader = cluster.wait_leader();
    let burst = commands("b", 64);
    let futures: Vec<_> = burst
        .iter()
        .map(|c| cluster.raft(leader).apply(c.clone(), T))
        .collect();
    for future in futures {
        future.wait().expect("apply");
    }
    acknowledged.extend(burst);
    cluster.restart_all();
    let leader = cluster.wait_leader();
    cluster.raft(leader).barrier(T).wait().expect("barrier");
    cluster.wait_applied_everywhere(&acknowledged);
}

#[test]
fn a_voter_added_at_an_address_no_transport_was_configured_with_receives_and_applies_writes() {
    let mut cluster = TcpCluster::new(3);
    let mut acknowledged = cluster.write(&commands("before", 20));
    // (The new node follows nobody until it joins, so the leader is found before it starts.)
    let leader = cluster.wait_leader();
    let (new, address) = cluster.add_node();
    cluster
        .raft(leader)
        .add_voter(new, address.to_string(), Index(0), T)
        .wait()
        .expect("add voter");
    acknowledged.extend(cluster.write(&commands("after", 20)));
    // The new node received and applied everything, the writes from before it joined too.
    cluster.wait_applied_everywhere(&acknowledged);
    let (_, configuration) = cluster.raft(new).configuration();
    assert_eq!(
        configuration.server(new).map(|s| s.suffrage),
        Some(Suffrage::Voter)
    );

    // Under the next leader too, which dials the new node at the address the configuration
    // gave it (and if the new node leads, it knows the others' addresses only from there).
    cluster.stop(leader);
    let second = cluster.wait_leader();
    assert_ne!(second, leader);
    acknowledged.extend(cluster.write(&commands("without-leader", 20)));
    cluster.wait_applied_everywhere(&acknowledged);
}

#[test]
fn a_port_in_use_fails_the_start_with_a_transport_error() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let dir = tempfile::tempdir().expect("temp dir");
    let tcp = TcpConfig::new(
        NodeId(1),
        ClusterId(1),
        taken.local_addr().expect("address"),
    );
    let result = Raft::new(
        test_config(NodeId(1)),
        RecordingFsm::new(),
        open_wal(dir.path().join("wal")),
        FileStableStore::open(dir.path().join("stable")).expect("stable"),
        FileSnapshotStore::new(dir.path().join("snapshots"), 1).expect("snapshots"),
        TcpTransportConfig::new(tcp),
    );
    assert!(
        matches!(result, Err(ringraft::StartError::Transport(_))),
        "{result:?}"
    );
}

#[test]
fn a_user_restore_over_tcp_reaches_a_returning_follower_in_chunks_and_survives_restarts() {
    let mut cluster = TcpCluster::new(3);
    let leader = cluster.wait_leader();
    let down = (1..=3)
        .map(NodeId)
        .find(|n| *n != leader)
        .expect("a follower");
    cluster.stop(down);
    cluster.write(&commands("before", 3));
    // About 2.5 MiB: the stage-only InstallSnapshot stream takes several 1 MiB chunks.
    let restored: Vec<Bytes> = (0..2500)
        .map(|i| Bytes::from(format!("{i:04}-{}", "x".repeat(1000))))
        .collect();
    let mut data = Vec::new();
    for c in &restored {
        data.extend_from_slice(&(c.len() as u32).to_le_bytes());
        data.extend_from_slice(c);
    }
    node_support::resolve(
        "restore",
        cluster.raft(leader).restore(std::io::Cursor::new(data), T),
    )
    .expect("restore");
    let mut expected = restored;
    expected.extend(cluster.write(&commands("after", 2)));
    cluster.start(down);
    cluster.wait_applied_everywhere(&expected);
    // Every node restarts from its WAL and staging area into the same state.
    for id in (1..=3).map(NodeId) {
        cluster.stop(id);
    }
    for id in (1..=3).map(NodeId) {
        cluster.start(id);
    }
    cluster.wait_applied_everywhere(&expected);
}

/// Per-entry extensions (hashicorp's `Log.Extensions`) travel with their entry through the
/// leader's WAL, the TCP transport and the followers' WALs to every state machine, and are
/// still there when the nodes replay their logs after a restart.
#[test]
fn extensions_reach_every_state_machine_and_survive_a_restart() {
    let mut cluster = TcpCluster::new(3);
    let leader = cluster.wait_leader();
    let mut expected = Vec::new();
    for i in 0..5 {
        let command = format!("cmd{i}");
        let ext = format!("trace-{i}");
        cluster
            .raft(leader)
            .apply_with_extensions(command.clone(), ext.clone(), T)
            .wait()
            .expect("apply");
        expected.push(Bytes::from(format!("{command}#ext:{ext}")));
    }
    cluster
        .raft(leader)
        .apply("plain", T)
        .wait()
        .expect("apply");
    expected.push(Bytes::from("plain"));
    cluster.wait_applied_everywhere(&expected);
    cluster.restart_all();
    let leader = cluster.wait_leader();
    cluster.raft(leader).barrier(T).wait().expect("barrier");
    cluster.wait_applied_everywhere(&expected);
}

/// hashicorp 1.7's commit tracking: the commit index is persisted with the log, so a node
/// restarted while its peers are down applies, before anyone answers, every write it held
/// that was committed before the stop (here: everything before the barrier, whose appends
/// carried the commit index of the writes).
#[test]
fn a_follower_restarted_alone_applies_what_it_knew_was_committed() {
    let mut cluster = TcpCluster::new(3);
    let acknowledged = cluster.write(&commands("w", 40));
    let leader = cluster.wait_leader();
    cluster.raft(leader).barrier(T).wait().expect("barrier");
    cluster.wait_applied_everywhere(&acknowledged);
    let follower = (1..=3)
        .map(NodeId)
        .find(|n| *n != leader)
        .expect("follower");
    for i in 1..=3 {
        cluster.stop(NodeId(i));
    }
    cluster.start(follower);
    wait_until(
        "the lone follower to apply every acknowledged write",
        || cluster.applied(follower) == acknowledged,
    );
    assert_ne!(cluster.raft(follower).state(), ringraft::RaftState::Leader);
}
