//! A node transport that can be frozen (`ringraft-load --groups N --failover` over TCP):
//! while frozen, every message the node sends is dropped and every message it receives is
//! dropped on arrival, and its connections stay open, as when a node's process stops running
//! or a switch drops its traffic. Only the other nodes' watch of its silence (ARCHITECTURE
//! §14) then tells its groups to elect other leaders. The in-memory network does the same
//! with `MemNetwork::partition`.

use ringraft::IntoTransport;
use ringraft_net::message::Message;
use ringraft_net::transport::{SendError, SetPeerError, Transport, TransportEvent};
use ringraft_storage::{GroupId, NodeId};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

/// `inner`, frozen while `frozen` is set.
pub struct Freezable<T> {
    inner: T,
    frozen: Arc<AtomicBool>,
}

impl<T> Freezable<T> {
    /// `inner`, and the switch that freezes it (set: frozen).
    pub fn new(inner: T) -> (Freezable<T>, Arc<AtomicBool>) {
        let frozen = Arc::new(AtomicBool::new(false));
        (
            Freezable {
                inner,
                frozen: frozen.clone(),
            },
            frozen,
        )
    }
}

impl<T: IntoTransport> IntoTransport for Freezable<T> {
    async fn into_transport(self) -> Result<Box<dyn Transport>, String> {
        let inner = self.inner.into_transport().await?;
        Ok(Box::new(Frozen {
            inner,
            frozen: self.frozen,
        }))
    }

    fn runs_tasks(&self) -> bool {
        self.inner.runs_tasks()
    }

    fn reports_silent_peers(&self) -> bool {
        self.inner.reports_silent_peers()
    }
}

/// The running transport of a [`Freezable`].
struct Frozen {
    inner: Box<dyn Transport>,
    frozen: Arc<AtomicBool>,
}

impl Frozen {
    fn is_frozen(&self) -> bool {
        self.frozen.load(Ordering::Relaxed)
    }
}

impl Transport for Frozen {
    fn local_id(&self) -> NodeId {
        self.inner.local_id()
    }

    /// Dropped while frozen (and reported sent, as a network that loses it would).
    fn send(&mut self, group: GroupId, message: Message) -> Result<(), SendError> {
        if self.is_frozen() {
            return Ok(());
        }
        self.inner.send(group, message)
    }

    fn set_peer(&mut self, peer: NodeId, address: &str) -> Result<(), SetPeerError> {
        self.inner.set_peer(peer, address)
    }

    fn remove_peer(&mut self, peer: NodeId) {
        self.inner.remove_peer(peer)
    }

    fn reports_silent_peers(&self) -> bool {
        self.inner.reports_silent_peers()
    }

    fn poll_campaign_slot(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.inner.poll_campaign_slot(cx)
    }

    fn release_campaign_slot(&mut self) {
        self.inner.release_campaign_slot()
    }

    /// Messages that arrive while frozen are dropped; connection events pass.
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<TransportEvent>> {
        loop {
            match self.inner.poll_recv(cx) {
                Poll::Ready(Some(TransportEvent::Message { .. })) if self.is_frozen() => {}
                other => return other,
            }
        }
    }

    fn release_idle_memory(&mut self) {
        self.inner.release_idle_memory()
    }
}
