//! The TCP transport with a peer list that grows as members join.
//!
//! ringraft's node glue hands the transport to the shard once and never tells it about new
//! configuration members, and [`TcpTransport`] only dials the peers it was configured with (or
//! added through [`TcpTransport::add_peer`]). So a node that joins later would be unreachable.
//! [`DynamicTcpConfig`] binds the ordinary TCP transport on the shard thread and wraps it:
//! before each send, peers published to the shared [`PeerBook`] (by the state machine, from
//! committed configurations and the member directory, and by `RAFT.ADD` on the leader) are
//! added to it.

use ringraft::IntoTransport;
use ringraft_net::message::Message;
use ringraft_net::tcp::{TcpConfig, TcpTransport};
use ringraft_net::transport::{SendError, Transport, TransportEvent};
use ringraft_storage::{GroupId, NodeId};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

/// Raft addresses of the cluster's members, shared between the state machine (which learns
/// them) and the transport (which dials them).
#[derive(Clone, Default)]
pub struct PeerBook {
    inner: Arc<PeerBookInner>,
}

#[derive(Default)]
struct PeerBookInner {
    peers: Mutex<BTreeMap<NodeId, SocketAddr>>,
    /// Bumped on every change, so the transport checks the map only when it changed.
    generation: AtomicU64,
}

impl PeerBook {
    /// Records `address` for `id` (ignored if it is not a socket address).
    pub fn learn(&self, id: NodeId, address: &str) {
        let Ok(address) = address.parse::<SocketAddr>() else {
            return;
        };
        let mut peers = self.inner.peers.lock().unwrap_or_else(|p| p.into_inner());
        if peers.insert(id, address) != Some(address) {
            self.inner.generation.fetch_add(1, Ordering::Release);
        }
    }

    /// The known peers.
    pub fn snapshot(&self) -> BTreeMap<NodeId, SocketAddr> {
        self.inner
            .peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// A [`TcpConfig`] plus the [`PeerBook`] that extends its peers while the node runs.
pub struct DynamicTcpConfig {
    /// The TCP transport's settings (its `peers` are the initial ones).
    pub tcp: TcpConfig,
    /// Where new peers appear.
    pub book: PeerBook,
}

impl IntoTransport for DynamicTcpConfig {
    async fn into_transport(self) -> Result<Box<dyn Transport>, String> {
        let dialled = self.tcp.peers.clone();
        let inner = TcpTransport::bind(self.tcp)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Box::new(DynamicTcp {
            inner,
            book: self.book,
            seen_generation: u64::MAX,
            dialled,
        }))
    }

    fn runs_tasks(&self) -> bool {
        true
    }
}

struct DynamicTcp {
    inner: TcpTransport,
    book: PeerBook,
    seen_generation: u64,
    /// The peers the inner transport dials, and where.
    dialled: BTreeMap<NodeId, SocketAddr>,
}

impl DynamicTcp {
    fn sync_peers(&mut self) {
        let generation = self.book.inner.generation.load(Ordering::Acquire);
        if generation == self.seen_generation {
            return;
        }
        self.seen_generation = generation;
        let local = self.inner.local_id();
        for (id, address) in self.book.snapshot() {
            // `add_peer` replaces a peer's connection (dropping what is queued for it), so
            // only new peers and changed addresses go to it.
            if id != local && self.dialled.get(&id) != Some(&address) {
                self.inner.add_peer(id, address);
                self.dialled.insert(id, address);
            }
        }
    }
}

impl Transport for DynamicTcp {
    fn local_id(&self) -> NodeId {
        self.inner.local_id()
    }

    fn send(&mut self, group: GroupId, message: Message) -> Result<(), SendError> {
        self.sync_peers();
        self.inner.send(group, message)
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<TransportEvent>> {
        self.inner.poll_recv(cx)
    }
}
