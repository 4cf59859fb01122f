//! A replicated counter embedded in one process: three nodes over TCP on loopback, each with
//! its own write-ahead log, stable store and snapshot store in a temporary directory. It
//! bootstraps the cluster, applies increments through the leader, reads linearizably with
//! `read_index`, adds a fourth node with `add_voter`, restarts a node from its directory, and
//! shuts down. Run it with `cargo run --example replicated_counter`; docs/ARCHITECTURE.md §10
//! follows one of its writes through the library.

use bytes::Bytes;
use ringraft::{Config, Fsm, FsmError, FsmSnapshot, Raft, TcpTransportConfig};
use ringraft_net::handshake::ClusterId;
use ringraft_net::tcp::TcpConfig;
use ringraft_storage::{
    Configuration, Entry, EntryKind, FileSnapshotStore, FileStableStore, NodeId, Server, WalConfig,
    WalLogStore,
};
use std::collections::BTreeMap;
use std::error::Error;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(5);

/// The state machine: a counter. A command is an increment (`i64`, little-endian); the response
/// is the counter after it. The value is shared with the example so that it can read it.
struct Counter(Arc<AtomicI64>);

impl Fsm for Counter {
    fn apply(&mut self, entry: &Entry) -> Bytes {
        let by = match <[u8; 8]>::try_from(&entry.data[..]) {
            Ok(bytes) if entry.kind == EntryKind::Command => i64::from_le_bytes(bytes),
            _ => 0, // Not an increment (a configuration entry, say): no change.
        };
        let value = self.0.fetch_add(by, Ordering::SeqCst) + by;
        Bytes::copy_from_slice(&value.to_le_bytes())
    }

    fn snapshot(&mut self) -> Result<Box<dyn FsmSnapshot>, FsmError> {
        Ok(Box::new(Snapshot(self.0.load(Ordering::SeqCst))))
    }

    fn restore(&mut self, snapshot: &mut dyn Read) -> Result<(), FsmError> {
        let mut bytes = [0u8; 8];
        snapshot.read_exact(&mut bytes)?;
        self.0.store(i64::from_le_bytes(bytes), Ordering::SeqCst);
        Ok(())
    }
}

struct Snapshot(i64);

impl FsmSnapshot for Snapshot {
    fn persist(&mut self, sink: &mut dyn Write) -> Result<(), FsmError> {
        Ok(sink.write_all(&self.0.to_le_bytes())?)
    }
}

/// A running node and the counter its state machine keeps.
struct Node {
    id: u64,
    raft: Raft,
    counter: Arc<AtomicI64>,
}

/// Starts node `id` from its directory under `root` (empty the first time), listening on
/// `addresses[id]` and dialling the other nodes listed there.
fn start(
    root: &Path,
    id: u64,
    addresses: &BTreeMap<u64, SocketAddr>,
) -> Result<Node, Box<dyn Error>> {
    let dir = root.join(format!("node-{id}"));
    let mut wal = WalConfig::new(dir.join("wal"));
    wal.segment_size_bytes = 4 << 20; // Small preallocated segments for an example,
    wal.max_entry_bytes = 1 << 20; // so smaller entries too.
    let log = WalLogStore::open(wal)?;
    let stable = FileStableStore::open(dir.join("stable"))?;
    let snapshots = FileSnapshotStore::new(dir.join("snapshots"), 2)?;
    let mut tcp = TcpConfig::new(NodeId(id), ClusterId(7), addresses[&id]);
    for (&peer, &address) in addresses {
        if peer != id {
            tcp.peers.insert(NodeId(peer), address);
        }
    }
    let counter = Arc::new(AtomicI64::new(0));
    let (tcp, fsm) = (TcpTransportConfig::new(tcp), Counter(counter.clone()));
    let raft = Raft::new(Config::fast(NodeId(id)), fsm, log, stable, snapshots, tcp)?;
    Ok(Node { id, raft, counter })
}

/// Stops `node` (its directory stays for a restart).
fn stop(node: Node) -> Result<(), Box<dyn Error>> {
    let stopped = node.raft.shutdown().wait();
    Ok(stopped.map_err(|()| "shutdown failed")?)
}

/// The leader, once one of `nodes` is.
fn leader(nodes: &BTreeMap<u64, Node>) -> Result<&Node, Box<dyn Error>> {
    for _ in 0..500 {
        if let Some(node) = nodes
            .values()
            .find(|n| n.raft.leader() == Some(NodeId(n.id)))
        {
            return Ok(node);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err("no leader was elected".into())
}

/// Adds `by` through the leader; returns the counter after it.
fn add(nodes: &BTreeMap<u64, Node>, by: i64) -> Result<i64, Box<dyn Error>> {
    let applied = leader(nodes)?
        .raft
        .apply(by.to_le_bytes().to_vec(), TIMEOUT)
        .wait()?;
    let bytes = <[u8; 8]>::try_from(&applied.response[..])?;
    Ok(i64::from_le_bytes(bytes))
}

/// A linearizable read of the counter on `node`: `read_index` resolves once this node has
/// applied everything committed when the read was asked (on a follower it is refused with
/// `NotLeader`, so read on the leader).
fn read(node: &Node) -> Result<i64, Box<dyn Error>> {
    node.raft.read_index(TIMEOUT).wait()?;
    Ok(node.counter.load(Ordering::SeqCst))
}

/// Waits until `node` applied the counter value `expected` (followers apply a little later).
fn caught_up(node: &Node, expected: i64) -> Result<(), Box<dyn Error>> {
    for _ in 0..500 {
        if node.counter.load(Ordering::SeqCst) == expected {
            println!("node {} caught up: {expected}", node.id);
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(format!("node {} did not reach {expected}", node.id).into())
}

fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    // Free loopback ports (outside the ephemeral range, so no connection takes one before its
    // node binds it).
    let addresses: BTreeMap<u64, SocketAddr> = (1..=4)
        .zip(ringraft_net::tcp::free_loopback_addresses(4)?)
        .collect();
    let three: BTreeMap<_, _> = addresses.range(1..=3).map(|(k, v)| (*k, *v)).collect();

    // Start three nodes and bootstrap them with the same configuration.
    let mut nodes = BTreeMap::new();
    for &id in three.keys() {
        nodes.insert(id, start(dir.path(), id, &three)?);
    }
    let configuration = Configuration::new(
        three
            .iter()
            .map(|(&id, a)| Server::voter(NodeId(id), a.to_string()))
            .collect(),
    );
    for node in nodes.values() {
        node.raft.bootstrap_cluster(configuration.clone()).wait()?;
    }
    println!("leader: node {}", leader(&nodes)?.id);

    // Replicated writes, then a linearizable read.
    for by in [5, 10, 27] {
        println!("add {by:>2} -> {}", add(&nodes, by)?);
    }
    println!("read_index on the leader: {}", read(leader(&nodes)?)?);

    // A fourth node joins: it starts empty, the leader adds it as a voter, and it catches up.
    nodes.insert(4, start(dir.path(), 4, &addresses)?);
    let index = leader(&nodes)?
        .raft
        .add_voter(
            NodeId(4),
            addresses[&4].to_string(),
            Default::default(),
            TIMEOUT,
        )
        .wait()?;
    println!("node 4 added as a voter at index {}", index.0);
    caught_up(&nodes[&4], 42)?;

    // Restart a follower from its directory: its log replays into a fresh state machine.
    let follower = *nodes
        .keys()
        .find(|&&id| Some(id) != leader(&nodes).ok().map(|n| n.id))
        .ok_or("no follower")?;
    nodes.remove(&follower).map(stop).transpose()?;
    println!("add  8 -> {} (node {follower} down)", add(&nodes, 8)?);
    nodes.insert(follower, start(dir.path(), follower, &addresses)?);
    caught_up(&nodes[&follower], 50)?;

    println!("read_index on the leader: {}", read(leader(&nodes)?)?);
    nodes.into_values().try_for_each(stop)
}

#[test]
fn the_example_runs() {
    main().expect("the example runs to the end");
}
