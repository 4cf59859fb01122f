//! A `ringraft-kv` node: the Raft node with its WAL, stable and snapshot stores and TCP
//! transport under the data directory, the replicated state, and what clients may ask of it.
//!
//! ```text
//!  <data>/wal/         segment WAL (WalLogStore)
//!  <data>/stable       term, vote, commit (FileStableStore)
//!  <data>/snapshots/   the two newest snapshots (FileSnapshotStore)
//! ```

use super::fsm::{KvFsm, SharedState};
use super::options::{Options, ReadMode};
use ringraft::{Config, Raft, RaftState, TcpTransportConfig};
use ringraft_net::handshake::ClusterId;
use ringraft_net::tcp::TcpConfig;
use ringraft_storage::{
    Configuration, FileSnapshotStore, FileStableStore, NodeId, Server, Suffrage, WalConfig,
    WalLogStore,
};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};

/// Every `ringraft-kv` cluster uses this id in its transport handshake.
const CLUSTER_ID: ClusterId = ClusterId(0x6b76);

/// A running node.
pub struct Node {
    /// The Raft node.
    pub raft: Raft,
    /// The replicated key-value state (read by the client server).
    pub state: SharedState,
    /// The node's settings.
    pub options: Options,
}

impl Node {
    /// Opens the stores under `options.data`, starts the Raft node and, if the directory held
    /// no state and the node is not joining, bootstraps the cluster from `options.peers`.
    pub fn start(options: Options) -> Result<Node, String> {
        let data = &options.data;
        let stable_path = data.join("stable");
        let fresh = !stable_path.exists() && !data.join("wal").exists();
        ringraft_storage::create_dir_durable(data)
            .map_err(|e| format!("creating {}: {e}", data.display()))?;
        let mut wal = WalConfig::new(data.join("wal"));
        wal.segment_size_bytes = options.wal_segment_size_bytes;
        wal.max_entry_bytes = wal
            .max_entry_bytes
            .min((wal.segment_size_bytes / 4) as usize);
        let log = WalLogStore::open(wal).map_err(|e| format!("opening the WAL: {e}"))?;
        let stable = FileStableStore::open(&stable_path)
            .map_err(|e| format!("opening the stable store: {e}"))?;
        let snapshots = FileSnapshotStore::new(data.join("snapshots"), 2)
            .map_err(|e| format!("opening the snapshot store: {e}"))?;

        let id = NodeId(options.id);
        // The initial members; the node tells the transport about later ones as they join (a
        // joining node, which may have no `--peers`, learns everyone from the configuration).
        let mut tcp = TcpConfig::new(id, CLUSTER_ID, options.raft);
        // Peers dial the advertised address; outgoing connections bind its host as their
        // source (the transport's default, ARCHITECTURE §6).
        tcp.advertise_address = Some(options.advertise_raft);
        for p in &options.peers {
            if p.id != options.id {
                tcp.peers.insert(NodeId(p.id), p.raft);
            }
        }
        let state = SharedState::default();
        let fsm = KvFsm::new(state.clone());
        let raft = Raft::new(
            raft_config(&options),
            fsm,
            log,
            stable,
            snapshots,
            TcpTransportConfig::new(tcp),
        )
        .map_err(|e| format!("starting raft: {e}"))?;
        if fresh && options.join.is_none() {
            let configuration = Configuration::new(
                options
                    .peers
                    .iter()
                    .map(|p| Server::voter(NodeId(p.id), p.raft.to_string()))
                    .collect(),
            );
            raft.bootstrap_cluster(configuration)
                .wait()
                .map_err(|e| format!("bootstrap: {e}"))?;
        }
        Ok(Node {
            raft,
            state,
            options,
        })
    }

    /// The client address of node `id`: the replicated member directory first, then
    /// `--peers`.
    pub fn client_address(&self, id: NodeId) -> Option<String> {
        if let Some(m) = self.state.lock().members.get(&id.0) {
            return Some(m.client.clone());
        }
        self.options
            .peers
            .iter()
            .find(|p| p.id == id.0)
            .map(|p| p.client.to_string())
    }

    /// The known leader's client address.
    pub fn leader_client_address(&self) -> Option<String> {
        self.raft.leader().and_then(|l| self.client_address(l))
    }

    /// Initial members (from `--peers`) missing from the replicated member directory, as
    /// (id, raft, client): the leader records them before it adds a new member, so that
    /// joined nodes, which may not have `--peers`, can find every member's client port.
    pub fn unrecorded_initial_members(&self) -> Vec<(u64, String, String)> {
        let state = self.state.lock();
        self.options
            .peers
            .iter()
            .filter(|p| !state.members.contains_key(&p.id))
            .map(|p| (p.id, p.raft.to_string(), p.client.to_string()))
            .collect()
    }

    /// The `RAFT.INFO` text: `field:value` lines.
    pub fn info(&self) -> String {
        let r = &self.raft;
        let role = match r.state() {
            RaftState::Follower => "follower",
            RaftState::PreCandidate => "precandidate",
            RaftState::Candidate => "candidate",
            RaftState::Leader => "leader",
            RaftState::Shutdown => "shutdown",
        };
        let (config_index, configuration) = r.configuration();
        let members: Vec<String> = configuration
            .servers
            .iter()
            .map(|s| {
                let suffrage = match s.suffrage {
                    Suffrage::Voter => "voter",
                    Suffrage::Nonvoter => "nonvoter",
                };
                let client = self.client_address(s.id).unwrap_or_default();
                format!("{}={}/{}/{}", s.id.0, s.address, client, suffrage)
            })
            .collect();
        let mut out = String::new();
        let _ = writeln!(out, "id:{}", self.options.id);
        let _ = writeln!(out, "role:{role}");
        let _ = writeln!(out, "term:{}", r.current_term().0);
        let _ = writeln!(out, "leader:{}", r.leader().map_or(0, |l| l.0));
        let _ = writeln!(
            out,
            "leader_client:{}",
            self.leader_client_address().unwrap_or_default()
        );
        let _ = writeln!(out, "commit:{}", r.commit_index().0);
        let _ = writeln!(out, "applied:{}", r.applied_index().0);
        let _ = writeln!(out, "last_index:{}", r.last_index().0);
        let _ = writeln!(out, "configuration_index:{}", config_index.0);
        let _ = writeln!(out, "configuration:{}", members.join(","));
        let _ = writeln!(out, "read_mode:{:?}", self.options.read_mode);
        let _ = writeln!(out, "forward:{}", self.options.forward);
        out
    }

    /// Connects to `target` from the node's client host (as the raft transport binds its
    /// advertised host, ARCHITECTURE §6), so that the leader and firewalls see forwarded
    /// requests come from the address this node advertises.
    pub async fn connect_from_client_host(&self, target: SocketAddr) -> io::Result<TcpStream> {
        connect_from(self.options.client.ip(), target).await
    }

    /// The client addresses of every member this node knows, by id.
    pub fn client_addresses(&self) -> BTreeMap<u64, String> {
        let mut all: BTreeMap<u64, String> = self
            .options
            .peers
            .iter()
            .map(|p| (p.id, p.client.to_string()))
            .collect();
        for (id, m) in &self.state.lock().members {
            all.insert(*id, m.client.clone());
        }
        all
    }
}

/// The Raft settings: one timeout for heartbeats, elections and the lease (as the load
/// generator uses), lease reads on when asked for.
fn raft_config(options: &Options) -> Config {
    let mut config = Config::new(NodeId(options.id));
    let timeout = options.election_timeout.max(Duration::from_millis(20));
    config.heartbeat_timeout = timeout;
    config.election_timeout = timeout;
    config.leader_lease_timeout = timeout;
    config.clock_drift_bound = (timeout / 10).min(Duration::from_millis(50));
    config.lease_read = options.read_mode == ReadMode::Lease;
    config.max_append_entries = 1024;
    config.snapshot_threshold = options.snapshot_threshold;
    config.snapshot_interval = options.snapshot_interval;
    config.trailing_logs = options.trailing_logs;
    config
}

/// Connects to `target` from `host` (any port), unless `host` is unspecified or of the other
/// address family (then from what the system chooses).
pub async fn connect_from(host: IpAddr, target: SocketAddr) -> io::Result<TcpStream> {
    let socket = match target {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if host.is_ipv4() == target.is_ipv4() && !host.is_unspecified() {
        socket.bind(SocketAddr::new(host, 0))?;
    }
    socket.connect(target).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_come_from_the_given_host() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let target = listener.local_addr().expect("address");
            for (host, seen) in [
                ("127.0.0.2", "127.0.0.2"),
                ("127.0.0.3", "127.0.0.3"),
                // The wrong family, or no host: the system's choice.
                ("::1", "127.0.0.1"),
                ("0.0.0.0", "127.0.0.1"),
            ] {
                let host: IpAddr = host.parse().expect("ip");
                let _stream = connect_from(host, target).await.expect("connect");
                let (_, peer) = listener.accept().await.expect("accept");
                assert_eq!(
                    peer.ip(),
                    seen.parse::<IpAddr>().expect("ip"),
                    "from {host}"
                );
            }
        });
    }
}
