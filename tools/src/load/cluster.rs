//! A local cluster for the load generator: `n` nodes in this process, either in memory
//! (`InmemStore`, `MemNetwork`) or durable (segment WAL, file stable and snapshot stores in a
//! directory, TCP on loopback).

use super::drive::KEY_BYTES;
use bytes::Bytes;
use ringraft::{
    Config, Fsm, FsmError, FsmSnapshot, Raft, RaftState, ShardHost, TcpTransportConfig,
};
use ringraft_net::handshake::ClusterId;
use ringraft_net::memory::MemNetwork;
use ringraft_net::tcp::TcpConfig;
use ringraft_storage::{
    Configuration, Entry, FileSnapshotStore, FileStableStore, InmemSnapshotStore, InmemStore,
    NodeId, SharedWal, WalConfig, WalLogStore,
};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where the cluster keeps its state and how its nodes talk.
#[derive(Clone, Debug)]
pub enum Mode {
    /// In-memory stores and in-process delivery.
    Inmem,
    /// The segment WAL and file stores under this directory, TCP on loopback.
    Durable(PathBuf),
}

/// Digest of everything a replica applied: count, last index and a running FNV-1a hash of
/// (index, data).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Digest {
    /// Commands applied.
    pub count: u64,
    /// Index of the last one.
    pub last_index: u64,
    /// FNV-1a over every (index, data).
    pub hash: u64,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x100_0000_01b3;

/// The load's state machine: a key/value map (the first [`KEY_BYTES`] of a command are its
/// key, the rest its value), the work the peers' harnesses' state machines do, plus a
/// [`Digest`] of everything applied so the replicas can be compared. Keys and values are
/// slices of the entry's bytes, not copies.
pub struct KvFsm {
    digest: Arc<Mutex<Digest>>,
    map: KvMap,
}

/// FNV-1a as a `Hasher`: fixed (no per-process random state), cheap on 16-byte keys.
#[derive(Default)]
pub struct FnvHasher(u64);

impl std::hash::Hasher for FnvHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { FNV_OFFSET } else { self.0 };
        for &b in bytes {
            h = (h ^ u64::from(b)).wrapping_mul(FNV_PRIME);
        }
        self.0 = h;
    }
}

// Iteration order is never used (snapshots sort their keys), and the hasher is fixed.
#[allow(clippy::disallowed_types)]
type KvMap = std::collections::HashMap<Bytes, Bytes, std::hash::BuildHasherDefault<FnvHasher>>;

impl KvFsm {
    /// A state machine whose digest is shared with `digest`.
    pub fn new(digest: Arc<Mutex<Digest>>) -> KvFsm {
        KvFsm {
            digest,
            map: KvMap::default(),
        }
    }

    /// The value a command set for `key` (its first 16 bytes), if any.
    pub fn value(&self, key: &[u8]) -> Option<&[u8]> {
        self.map.get(key).map(|v| &v[..])
    }

    /// How many keys are set.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no key is set.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl Fsm for KvFsm {
    fn apply(&mut self, entry: &Entry) -> Bytes {
        let split = entry.data.len().min(KEY_BYTES);
        self.map
            .insert(entry.data.slice(..split), entry.data.slice(split..));
        let mut d = self.digest.lock().unwrap_or_else(|p| p.into_inner());
        // FNV-1a over 8-byte words (the tail zero-padded): the digest should cost the
        // benchmark little next to the replication it checks.
        let mut h = if d.count == 0 { FNV_OFFSET } else { d.hash };
        h = (h ^ entry.id.index.0).wrapping_mul(FNV_PRIME);
        let mut words = entry.data.chunks_exact(8);
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            h = (h ^ u64::from_le_bytes(b)).wrapping_mul(FNV_PRIME);
        }
        let mut tail = [0u8; 8];
        tail[..words.remainder().len()].copy_from_slice(words.remainder());
        h = (h ^ u64::from_le_bytes(tail) ^ entry.data.len() as u64).wrapping_mul(FNV_PRIME);
        d.hash = h;
        d.count += 1;
        d.last_index = entry.id.index.0;
        Bytes::new()
    }

    fn snapshot(&mut self) -> Result<Box<dyn FsmSnapshot>, FsmError> {
        let digest = *self.digest.lock().unwrap_or_else(|p| p.into_inner());
        let mut pairs: Vec<(Bytes, Bytes)> = self
            .map
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        pairs.sort_unstable();
        Ok(Box::new(KvSnapshot { digest, pairs }))
    }

    fn restore(&mut self, snapshot: &mut dyn Read) -> Result<(), FsmError> {
        let mut bytes = Vec::new();
        snapshot.read_to_end(&mut bytes)?;
        let mut rest = &bytes[..];
        fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], FsmError> {
            if rest.len() < n {
                return Err("truncated load snapshot".into());
            }
            let (part, tail) = rest.split_at(n);
            *rest = tail;
            Ok(part)
        }
        fn word(rest: &mut &[u8]) -> Result<u64, FsmError> {
            let mut w = [0u8; 8];
            w.copy_from_slice(take(rest, 8)?);
            Ok(u64::from_le_bytes(w))
        }
        let digest = Digest {
            count: word(&mut rest)?,
            last_index: word(&mut rest)?,
            hash: word(&mut rest)?,
        };
        let pairs = word(&mut rest)?;
        let mut map = KvMap::default();
        for _ in 0..pairs {
            let (k, v) = (word(&mut rest)?, word(&mut rest)?);
            let key = Bytes::copy_from_slice(take(&mut rest, k as usize)?);
            let value = Bytes::copy_from_slice(take(&mut rest, v as usize)?);
            map.insert(key, value);
        }
        self.map = map;
        *self.digest.lock().unwrap_or_else(|p| p.into_inner()) = digest;
        Ok(())
    }
}

struct KvSnapshot {
    digest: Digest,
    pairs: Vec<(Bytes, Bytes)>,
}

impl FsmSnapshot for KvSnapshot {
    fn persist(&mut self, sink: &mut dyn Write) -> Result<(), FsmError> {
        let d = self.digest;
        for w in [d.count, d.last_index, d.hash, self.pairs.len() as u64] {
            sink.write_all(&w.to_le_bytes())?;
        }
        for (k, v) in &self.pairs {
            sink.write_all(&(k.len() as u64).to_le_bytes())?;
            sink.write_all(&(v.len() as u64).to_le_bytes())?;
            sink.write_all(k)?;
            sink.write_all(v)?;
        }
        Ok(())
    }
}

/// The running nodes and their digests.
pub struct Cluster {
    /// Every node, in id order.
    pub nodes: Vec<(Raft, Arc<Mutex<Digest>>)>,
    /// The thread all nodes' shard loops share, with `--shared-thread`.
    _host: Option<ShardHost>,
}

/// How the nodes are laid out on threads.
#[derive(Clone, Copy, Debug, Default)]
pub struct Engine {
    /// All nodes' shard loops on one shard thread ([`ShardHost`]) instead of one each.
    pub shared_thread: bool,
    /// Where the state machines run (`Config::apply_placement`; the library's default unless
    /// a flag says otherwise).
    pub apply: ringraft::ApplyPlacement,
}

/// The load generator's node settings: timeouts that tolerate a loaded 2-core machine, large
/// AppendEntries, and a submission queue with room for every client.
fn node_config(id: NodeId, clients: usize) -> Config {
    let mut config = Config::new(id);
    config.heartbeat_timeout = Duration::from_millis(300);
    config.election_timeout = Duration::from_millis(300);
    config.leader_lease_timeout = Duration::from_millis(300);
    config.max_append_entries = 1024;
    config.submission_queue_capacity = clients.max(64) * 2;
    config
}

/// Free loopback addresses for the nodes (the transport binds its own listener, so every
/// node's address must be known before any starts). Their ports lie outside the ephemeral
/// range, so no connection takes one before its node binds it, at the start or at a restart.
pub fn free_addresses(n: usize) -> Result<Vec<SocketAddr>, String> {
    ringraft_net::tcp::free_loopback_addresses(n).map_err(|e| format!("finding free ports: {e}"))
}

fn start_durable(
    host: Option<&ShardHost>,
    id: NodeId,
    dir: &Path,
    addresses: &[SocketAddr],
    config: Config,
    fsm: KvFsm,
) -> Result<Raft, String> {
    let dir = dir.join(format!("node-{}", id.0));
    let log = WalLogStore::open(WalConfig::new(dir.join("wal"))).map_err(|e| e.to_string())?;
    let stable = FileStableStore::open(dir.join("stable")).map_err(|e| e.to_string())?;
    let snapshots = FileSnapshotStore::new(dir.join("snapshots"), 2).map_err(|e| e.to_string())?;
    let transport = Cluster::tcp_transport(id, addresses);
    match host {
        Some(host) => Raft::new_on(host, config, fsm, log, stable, snapshots, transport),
        None => Raft::new(config, fsm, log, stable, snapshots, transport),
    }
    .map_err(|e| e.to_string())
}

impl Cluster {
    /// Starts and bootstraps `n` nodes.
    pub fn start(mode: &Mode, n: u64, clients: usize, engine: Engine) -> Result<Cluster, String> {
        let ids: Vec<NodeId> = (1..=n).map(NodeId).collect();
        let host = if engine.shared_thread {
            let io_driver = matches!(mode, Mode::Durable(_));
            Some(ShardHost::new(None, io_driver).map_err(|e| e.to_string())?)
        } else {
            None
        };
        let net = MemNetwork::new();
        let addresses = match mode {
            Mode::Inmem => Vec::new(),
            Mode::Durable(_) => free_addresses(n as usize)?,
        };
        let mut nodes = Vec::new();
        for &id in &ids {
            let digest = Arc::new(Mutex::new(Digest::default()));
            let fsm = KvFsm::new(digest.clone());
            let mut config = node_config(id, clients);
            config.apply_placement = engine.apply;
            let raft = match mode {
                Mode::Inmem => {
                    let store = InmemStore::new();
                    let (snapshots, transport) = (InmemSnapshotStore::new(), net.transport(id));
                    match &host {
                        Some(host) => Raft::new_on(
                            host,
                            config,
                            fsm,
                            store.clone(),
                            store,
                            snapshots,
                            transport,
                        ),
                        None => Raft::new(config, fsm, store.clone(), store, snapshots, transport),
                    }
                    .map_err(|e| e.to_string())?
                }
                Mode::Durable(dir) => {
                    start_durable(host.as_ref(), id, dir, &addresses, config, fsm)?
                }
            };
            nodes.push((raft, digest));
        }
        let configuration = Configuration::voters_with_default_addresses(ids.iter().copied());
        for (raft, _) in &nodes {
            raft.bootstrap_cluster(configuration.clone())
                .wait()
                .map_err(|e| format!("bootstrap: {e}"))?;
        }
        Ok(Cluster { nodes, _host: host })
    }

    /// Starts the replica of group `group` on `host` (many groups per node,
    /// [`MultiRaft`](ringraft::MultiRaft)), not bootstrapped. With `wal` (its node's), the
    /// replica's log is its share of the node's WAL, which also keeps its hard state;
    /// otherwise its stores are in memory. Snapshots stay in memory: the runs stay below the
    /// snapshot threshold (`groups::run` checks that none was taken). The submission queue
    /// keeps the library's default capacity: clients are spread over many groups.
    pub fn start_replica(
        host: &ringraft::MultiRaft,
        wal: Option<&SharedWal>,
        group: ringraft_storage::GroupId,
    ) -> Result<(Raft, Arc<Mutex<Digest>>), String> {
        let id = host.id();
        let digest = Arc::new(Mutex::new(Digest::default()));
        let mut config = node_config(id, 0);
        config.submission_queue_capacity = Config::new(id).submission_queue_capacity;
        let fsm = KvFsm::new(digest.clone());
        let snapshots = InmemSnapshotStore::new();
        let raft = match wal {
            Some(wal) => {
                let log = wal
                    .log(group)
                    .map_err(|e| format!("group {}: {e}", group.0))?;
                // The WAL keeps the hard state; this store only meets the signature.
                host.add_group(group, config, fsm, log, InmemStore::new(), snapshots)
            }
            None => {
                let store = InmemStore::new();
                host.add_group(group, config, fsm, store.clone(), store, snapshots)
            }
        }
        .map_err(|e| format!("group {}: {e}", group.0))?;
        Ok((raft, digest))
    }

    /// A cluster of one group's replicas, one per node, in node id order.
    pub fn of_replicas(nodes: Vec<(Raft, Arc<Mutex<Digest>>)>) -> Cluster {
        Cluster { nodes, _host: None }
    }

    /// The TCP transport of node `id` of a cluster on `addresses` (node `k` on
    /// `addresses[k - 1]`).
    pub fn tcp_transport(id: NodeId, addresses: &[SocketAddr]) -> TcpTransportConfig {
        let index = id.0 as usize - 1;
        let mut tcp = TcpConfig::new(id, ClusterId(0x10ad), addresses[index]);
        for (j, address) in addresses.iter().enumerate() {
            if j != index {
                tcp.peers.insert(NodeId(j as u64 + 1), *address);
            }
        }
        TcpTransportConfig::new(tcp)
    }

    /// The election timeout of the load generator's nodes.
    pub fn election_timeout() -> Duration {
        node_config(NodeId(1), 0).election_timeout
    }

    /// Waits for a leader (at most `limit`) and commits a barrier through it.
    pub fn leader(&self, limit: Duration) -> Result<Raft, String> {
        let mut waited = Duration::ZERO;
        let step = Duration::from_millis(5);
        let leader = loop {
            if let Some((r, _)) = self
                .nodes
                .iter()
                .find(|(r, _)| r.state() == RaftState::Leader)
            {
                break r.clone();
            }
            if waited > limit {
                return Err(format!("no leader elected within {limit:?}"));
            }
            std::thread::sleep(step);
            waited += step;
        };
        leader
            .barrier(Duration::ZERO)
            .wait()
            .map_err(|e| format!("barrier: {e}"))?;
        Ok(leader)
    }

    /// Waits until every replica applied through the leader's latest index (a barrier), at
    /// most `limit`; returns every replica's digest.
    pub fn digests_after_catch_up(
        &self,
        leader: &Raft,
        limit: Duration,
    ) -> Result<Vec<Digest>, String> {
        let target = leader
            .barrier(Duration::ZERO)
            .wait()
            .map_err(|e| format!("final barrier: {e}"))?;
        let mut waited = Duration::ZERO;
        let step = Duration::from_millis(5);
        while self.nodes.iter().any(|(r, _)| r.applied_index() < target) && waited < limit {
            std::thread::sleep(step);
            waited += step;
        }
        Ok(self
            .nodes
            .iter()
            .map(|(_, d)| *d.lock().unwrap_or_else(|p| p.into_inner()))
            .collect())
    }

    /// Whether any replica has taken or installed a snapshot.
    pub fn snapshots_taken(&self) -> bool {
        self.nodes.iter().any(|(r, _)| {
            r.stats()
                .get("last_snapshot_index")
                .is_some_and(|v| v != "0")
        })
    }

    /// Stops every node and waits for their threads.
    pub fn shutdown(&self) {
        for (raft, _) in &self.nodes {
            let _ = raft.shutdown().wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::drive::{command, KEY_SPACE};
    use ringraft_storage::{EntryKind, Index, LogId, Term};

    #[test]
    fn commands_have_the_peers_format_and_cycle_over_their_key_space() {
        let c = command(3, 7, 64);
        assert_eq!(c.len(), 64);
        assert_eq!(&c[..16], b"k000000000000016");
        assert_eq!(&c[16..23], b"v00003-");
        assert!(c[23..].iter().all(u8::is_ascii_digit));
        assert_eq!(&c[..16], &command(3, 7 + KEY_SPACE, 64)[..16]);
        assert_eq!(command(1, 2, 100).len(), 100);
        assert_eq!(command(1, 2, 10).len(), 10);
    }

    #[test]
    fn the_key_value_state_machine_survives_a_snapshot_and_refuses_a_truncated_one() {
        let mut fsm = KvFsm::new(Arc::new(Mutex::new(Digest::default())));
        for i in 1..=50u64 {
            let entry = Entry::new(
                LogId::new(Term(1), Index(i)),
                EntryKind::Command,
                command(i % 3, i, 64),
            );
            fsm.apply(&entry);
        }
        let mut bytes = Vec::new();
        fsm.snapshot()
            .expect("snapshot")
            .persist(&mut bytes)
            .expect("persist");
        let digest = Arc::new(Mutex::new(Digest::default()));
        let mut restored = KvFsm::new(digest.clone());
        restored.restore(&mut &bytes[..]).expect("restore");
        assert_eq!(restored.map, fsm.map);
        // Each key holds the rest of the last command that set it.
        let last = command(50 % 3, 50, 64);
        let (key, value) = last.split_at(KEY_BYTES);
        assert_eq!(restored.value(key), Some(value));
        assert_eq!(restored.value(b"no such key 0000"), None);
        assert_eq!(restored.len(), fsm.map.len());
        assert!(!restored.is_empty() && KvFsm::new(Arc::default()).is_empty());
        assert_eq!(
            *digest.lock().expect("digest"),
            *fsm.digest.lock().expect("digest")
        );
        let mut fresh = KvFsm::new(Arc::new(Mutex::new(Digest::default())));
        assert!(fresh.restore(&mut &bytes[..bytes.len() - 1]).is_err());
    }
}
