//! Helpers for the node integration tests: a recording state machine and an in-memory cluster
//! of real nodes (on the process's shard threads) over `MemNetwork`.
//!
//! Waits poll with generous deadlines that only guard against hangs; no test asserts on how
//! long anything took.
#![allow(dead_code)]

use bytes::{Buf, BufMut, Bytes};
use ringraft::{Config, Fsm, FsmError, FsmSnapshot, Raft, RaftFuture, RaftState, ShardHost};
use ringraft_net::memory::MemNetwork;
use ringraft_storage::{Configuration, Entry, InmemSnapshotStore, InmemStore, NodeId};
use std::io::{Read, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a test waits for something before declaring a hang.
pub const HANG_GUARD: Duration = Duration::from_secs(20);

/// The tests' node configuration: hashicorp's 50 ms test timeouts are too tight for a shared,
/// loaded 2-core machine (a leader whose thread is not scheduled for one lease steps down), so
/// these are four times longer. No test depends on how long an election takes.
pub fn test_config(id: NodeId) -> Config {
    let mut c = Config::fast(id);
    c.heartbeat_timeout = Duration::from_millis(200);
    c.election_timeout = Duration::from_millis(200);
    c.leader_lease_timeout = Duration::from_millis(200);
    c.clock_drift_bound = Duration::from_millis(20);
    c
}

/// A state machine that records every command it applied (a command with extensions as
/// `data#ext:extensions`); the response to a command is the number of commands applied so
/// far.
pub struct RecordingFsm {
    pub applied: Arc<Mutex<Vec<Bytes>>>,
    pub restores: Arc<AtomicU64>,
}

impl RecordingFsm {
    pub fn new() -> RecordingFsm {
        RecordingFsm {
            applied: Arc::new(Mutex::new(Vec::new())),
            restores: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// Commands `stall-ms:<n>:<tag>` make the first state machine in the process that applies
/// them sleep `n` ms (a stalled thread), once per command.
const STALL_PREFIX: &[u8] = b"stall-ms:";

fn stall_once(data: &[u8]) {
    static STALLED: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());
    let Some(rest) = data.strip_prefix(STALL_PREFIX) else {
        return;
    };
    {
        let mut stalled = STALLED.lock().unwrap();
        if stalled.iter().any(|d| d == data) {
            return;
        }
        stalled.push(data.to_vec());
    }
    let ms: u64 = std::str::from_utf8(rest)
        .ok()
        .and_then(|r| r.split(':').next())
        .and_then(|n| n.parse().ok())
        .expect("stall-ms:<n>:<tag>");
    std::thread::sleep(Duration::from_millis(ms));
}

impl Fsm for RecordingFsm {
    fn apply(&mut self, entry: &Entry) -> Bytes {
        stall_once(&entry.data);
        let mut applied = self.applied.lock().unwrap();
        if entry.extensions.is_empty() {
            applied.push(entry.data.clone());
        } else {
            let mut recorded = entry.data.to_vec();
            recorded.extend_from_slice(b"#ext:");
            recorded.extend_from_slice(&entry.extensions);
            applied.push(Bytes::from(recorded));
        }
        Bytes::from(applied.len().to_string())
    }

    fn snapshot(&mut self) -> Result<Box<dyn FsmSnapshot>, FsmError> {
        Ok(Box::new(RecordingSnapshot(
            self.applied.lock().unwrap().clone(),
        )))
    }

    fn restore(&mut self, snapshot: &mut dyn Read) -> Result<(), FsmError> {
        let mut bytes = Vec::new();
        snapshot.read_to_end(&mut bytes)?;
        let mut buf = &bytes[..];
        let mut out = Vec::new();
        while buf.remaining() >= 4 {
            let len = buf.get_u32_le() as usize;
            if buf.remaining() < len {
                return Err("truncated snapshot".into());
            }
            out.push(Bytes::copy_from_slice(&buf[..len]));
            buf.advance(len);
        }
        *self.applied.lock().unwrap() = out;
        self.restores.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

struct RecordingSnapshot(Vec<Bytes>);

impl FsmSnapshot for RecordingSnapshot {
    fn persist(&mut self, sink: &mut dyn Write) -> Result<(), FsmError> {
        let mut out = Vec::new();
        for c in &self.0 {
            out.put_u32_le(c.len() as u32);
            out.put_slice(c);
        }
        sink.write_all(&out)?;
        Ok(())
    }
}

/// Starts node 1 alone over `net` with `fsm` and `snapshots`, bootstraps it as the only voter
/// and waits until it leads.
pub fn start_single(
    fsm: impl Fsm,
    snapshots: impl ringraft_storage::SnapshotStore + 'static,
) -> Raft {
    start_single_with(test_config(NodeId(1)), fsm, snapshots)
}

/// [`start_single`] with `config` (its `local_id` must be 1).
pub fn start_single_with(
    config: Config,
    fsm: impl Fsm,
    snapshots: impl ringraft_storage::SnapshotStore + 'static,
) -> Raft {
    let net = MemNetwork::new();
    let log = InmemStore::new();
    let raft = Raft::new(
        config,
        fsm,
        log.clone(),
        log,
        snapshots,
        net.transport(NodeId(1)),
    )
    .expect("start");
    let configuration = Configuration::new(vec![ringraft_storage::Server::voter(NodeId(1), "n1")]);
    resolve("bootstrap", raft.bootstrap_cluster(configuration)).expect("bootstrap");
    wait_until("leadership", || raft.state() == RaftState::Leader);
    raft
}

/// Polls `condition` until it holds; panics (naming `what`) after [`HANG_GUARD`].
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let mut waited = Duration::ZERO;
    while !condition() {
        assert!(waited < HANG_GUARD, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
        waited += Duration::from_millis(2);
    }
}

/// Waits for `future`'s outcome; panics (naming `what`) after [`HANG_GUARD`].
pub fn resolve<T, E>(what: &str, mut future: RaftFuture<T, E>) -> Result<T, E> {
    future
        .wait_timeout(HANG_GUARD)
        .unwrap_or_else(|| panic!("timed out waiting for {what} to resolve"))
}

/// One node's durable stores and its state machine's record.
pub struct NodeStores {
    pub log: InmemStore,
    pub snapshots: InmemSnapshotStore,
    pub applied: Arc<Mutex<Vec<Bytes>>>,
    pub restores: Arc<AtomicU64>,
}

/// A cluster of real nodes on one in-memory network.
pub struct TestCluster {
    pub net: MemNetwork,
    pub nodes: Vec<Option<Raft>>,
    pub stores: Vec<NodeStores>,
    pub configure: fn(NodeId) -> Config,
    /// When set, every node's shard loop runs on this one thread.
    pub host: Option<Arc<ShardHost>>,
}

impl TestCluster {
    /// `n` bootstrapped voters with [`test_config`].
    pub fn new(n: u64) -> TestCluster {
        TestCluster::with_config(n, test_config)
    }

    pub fn with_config(n: u64, configure: fn(NodeId) -> Config) -> TestCluster {
        TestCluster::build(n, configure, None)
    }

    /// `n` bootstrapped voters whose shard loops all run on one [`ShardHost`] thread.
    pub fn on_host(n: u64, configure: fn(NodeId) -> Config) -> TestCluster {
        let host = ShardHost::new(None, false).expect("start the shard host");
        TestCluster::build(n, configure, Some(Arc::new(host)))
    }

    fn build(n: u64, configure: fn(NodeId) -> Config, host: Option<Arc<ShardHost>>) -> TestCluster {
        let mut cluster = TestCluster {
            net: MemNetwork::new(),
            nodes: Vec::new(),
            stores: Vec::new(),
            configure,
            host,
        };
        for i in 1..=n {
            cluster.stores.push(NodeStores {
                log: InmemStore::new(),
                snapshots: InmemSnapshotStore::new(),
                applied: Arc::new(Mutex::new(Vec::new())),
                restores: Arc::new(AtomicU64::new(0)),
            });
            cluster.nodes.push(None);
            cluster.start(NodeId(i));
        }
        let configuration = Configuration::voters_with_default_addresses((1..=n).map(NodeId));
        for raft in cluster.nodes.iter().flatten() {
            raft.bootstrap_cluster(configuration.clone())
                .wait()
                .expect("bootstrap");
        }
        cluster
    }

    /// Starts a node with empty stores (not bootstrapped, in no configuration) on the
    /// cluster's network; returns its id.
    pub fn add_node(&mut self) -> NodeId {
        self.stores.push(NodeStores {
            log: InmemStore::new(),
            snapshots: InmemSnapshotStore::new(),
            applied: Arc::new(Mutex::new(Vec::new())),
            restores: Arc::new(AtomicU64::new(0)),
        });
        self.nodes.push(None);
        let id = NodeId(self.nodes.len() as u64);
        self.start(id);
        id
    }

    /// Starts (or restarts) node `id` from its stores with a fresh state machine.
    pub fn start(&mut self, id: NodeId) {
        let i = id.0 as usize - 1;
        assert!(self.nodes[i].is_none(), "{id} is running");
        let fsm = RecordingFsm::new();
        self.stores[i].applied = fsm.applied.clone();
        self.stores[i].restores = fsm.restores.clone();
        let s = &self.stores[i];
        let (config, log, snapshots) = ((self.configure)(id), s.log.clone(), s.snapshots.clone());
        let transport = self.net.transport(id);
        let raft = match &self.host {
            Some(host) => Raft::new_on(host, config, fsm, log.clone(), log, snapshots, transport),
            None => Raft::new(config, fsm, log.clone(), log, snapshots, transport),
        }
        .expect("start node");
        self.nodes[i] = Some(raft);
    }

    /// Shuts node `id` down and waits until its threads stopped.
    pub fn stop(&mut self, id: NodeId) {
        let i = id.0 as usize - 1;
        if let Some(raft) = self.nodes[i].take() {
            raft.shutdown().wait().expect("shutdown");
        }
    }

    pub fn raft(&self, id: NodeId) -> &Raft {
        self.nodes[id.0 as usize - 1]
            .as_ref()
            .expect("node is running")
    }

    pub fn running(&self) -> impl Iterator<Item = &Raft> {
        self.nodes.iter().flatten()
    }

    /// Waits for a single leader of the highest term that every running node follows.
    pub fn wait_leader(&self) -> NodeId {
        let mut leader = None;
        wait_until("a leader everyone follows", || {
            let leaders: Vec<&Raft> = self
                .running()
                .filter(|r| r.state() == RaftState::Leader)
                .collect();
            let Some(l) = leaders.iter().max_by_key(|r| r.current_term()) else {
                return false;
            };
            let id = l.local_id();
            leader = Some(id);
            self.running().all(|r| r.leader() == Some(id))
        });
        leader.expect("leader")
    }

    /// Waits for a single leader among `ids` (of the highest term) that all of `ids` follow.
    pub fn wait_leader_among(&self, ids: &[NodeId]) -> NodeId {
        let mut leader = None;
        wait_until(&format!("a leader {ids:?} follow"), || {
            let Some(l) = ids
                .iter()
                .map(|id| self.raft(*id))
                .filter(|r| r.state() == RaftState::Leader)
                .max_by_key(|r| r.current_term())
            else {
                return false;
            };
            leader = Some(l.local_id());
            ids.iter().all(|id| self.raft(*id).leader() == leader)
        });
        leader.expect("leader")
    }

    /// Waits for a leader and commits a barrier on it, retrying while leadership still moves
    /// (after a partition heals, say); returns the leader whose barrier committed. Everything
    /// committed before is then applied on that leader.
    pub fn barrier_on_leader(&self) -> NodeId {
        let mut done = None;
        wait_until("a barrier to commit on a leader", || {
            let leader = self.wait_leader();
            let barrier = self.raft(leader).barrier(Duration::from_secs(5));
            if resolve("barrier", barrier).is_ok() {
                done = Some(leader);
            }
            done.is_some()
        });
        done.expect("leader")
    }

    /// Waits until node `id` applied exactly `expected`.
    /// Waits until node `id`'s state machine holds exactly `expected` (a state reached on the
    /// way, such as entries from before a restore, does not count).
    pub fn wait_applied(&self, id: NodeId, expected: &[Bytes]) {
        let mut waited = Duration::ZERO;
        loop {
            let applied = self.applied(id);
            if applied == expected {
                return;
            }
            assert!(
                waited < HANG_GUARD,
                "timed out waiting for {id} to apply {expected:?}; it holds {applied:?}"
            );
            std::thread::sleep(Duration::from_millis(2));
            waited += Duration::from_millis(2);
        }
    }

    /// What node `id`'s state machine applied.
    pub fn applied(&self, id: NodeId) -> Vec<Bytes> {
        self.stores[id.0 as usize - 1]
            .applied
            .lock()
            .unwrap()
            .clone()
    }

    /// Waits until every running node applied exactly `expected`.
    pub fn wait_applied_everywhere(&self, expected: &[Bytes]) {
        for raft in self.running() {
            self.wait_applied(raft.local_id(), expected);
        }
    }

    pub fn shutdown_all(&mut self) {
        for i in 1..=self.nodes.len() as u64 {
            self.stop(NodeId(i));
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for raft in self.nodes.iter().flatten() {
            drop(raft.shutdown());
        }
    }
}

/// `n` distinct commands.
pub fn commands(prefix: &str, n: usize) -> Vec<Bytes> {
    (0..n)
        .map(|i| Bytes::from(format!("{prefix}-{i}")))
        .collect()
}
