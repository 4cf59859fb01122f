//! The `Transport` trait: what a node's shard thread needs from a network.
//!
//! ```text
//!   shard loop ── send(group, Message) ──► Transport   (never blocks; queues or refuses)
//!   shard loop ◄─ poll_recv / try_recv ─── Transport   (Message | PeerConnected
//!                                                       | PeerDisconnected | SendFailed)
//! ```
//!
//! The trait is deliberately small and poll-based: the shard thread drives it from its own
//! event loop (a tokio current-thread runtime for the TCP transport), the in-memory transport
//! works without any runtime through [`Transport::try_recv`], and `dyn Transport` works.
//!
//! Delivery is best effort, as Raft expects of a network: a message may be lost, and the
//! core retries. What the transport adds is *knowing* about losses where it can: when a
//! connection dies with requests in flight, they come back as [`TransportEvent::SendFailed`]
//! so the node can move that follower back to probing at once instead of waiting for a
//! timeout.
//!
//! Addresses come from the configurations: the node calls [`Transport::set_peer`] for each
//! member of the configurations in force whenever they change, and [`Transport::remove_peer`]
//! for a member gone from all of them. A transport that routes by id ignores both.

use crate::frame::{FrameError, FrameKind};
use crate::handshake::HandshakeError;
use crate::message::Message;
use ringraft_storage::{GroupId, NodeId};
use std::fmt;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::task::{Context, Poll, Waker};

/// A network as the shard thread sees it.
pub trait Transport {
    /// This node's id.
    fn local_id(&self) -> NodeId;

    /// Queues `message` for `message.to` in `group`. Never blocks. An `Err` means the message
    /// was not queued; `Ok` means it will be sent or reported in a [`TransportEvent::SendFailed`]
    /// (or lost silently, as any network may).
    fn send(&mut self, group: GroupId, message: Message) -> Result<(), SendError>;

    /// Tells the transport where `peer` is: the node calls it for every member of the
    /// configurations in force whenever they change (a configuration appended, truncated
    /// away or installed from a snapshot), so a server added at runtime is reachable. Calling
    /// it again with the same address changes nothing. Transports that route by id (the
    /// in-memory one) need no addresses; the default accepts and ignores them.
    fn set_peer(&mut self, peer: NodeId, address: &str) -> Result<(), SetPeerError> {
        let _ = (peer, address);
        Ok(())
    }

    /// `peer` left every configuration in force (the committed one and the latest): stop
    /// reaching out to it. Messages still addressed to it may then fail with
    /// [`SendError::UnknownPeer`]. The default does nothing.
    fn remove_peer(&mut self, peer: NodeId) {
        let _ = peer;
    }

    /// True if this transport reports [`TransportEvent::PeerDisconnected`] whenever a peer's
    /// node goes silent, a connection or not (a host of many groups pings its peer nodes and
    /// does). Nodes on such a transport may quiesce when idle (ARCHITECTURE §14): a quiesced
    /// follower learns of its leader's failure from that report alone. The default is false.
    fn reports_silent_peers(&self) -> bool {
        false
    }

    /// Asks for one of the node's campaign slots before a node starts an election (pre-vote
    /// or vote) because its election timer fired. A transport shared by many Raft groups
    /// bounds how many of them campaign, or lead without having settled yet, at once, so a
    /// herd of elections (every group after a restart, or every group a failed node led)
    /// does not send more messages than the node can answer (ARCHITECTURE §14). `Ready`
    /// grants a slot, held until [`Transport::release_campaign_slot`]; `Pending` queues the
    /// node and registers `cx`'s waker, woken once a slot is granted. Leadership transfers
    /// never ask. The default grants at once: a transport of one node has no herd.
    fn poll_campaign_slot(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let _ = cx;
        Poll::Ready(())
    }

    /// Gives back the slot granted by [`Transport::poll_campaign_slot`] (the campaign ended,
    /// or the leader it made settled), or leaves the queue for one. Does nothing if the node
    /// neither holds nor waits for a slot. The default does nothing.
    fn release_campaign_slot(&mut self) {}

    /// The next event, or `Pending` (registering `cx`'s waker). `Ready(None)` once the
    /// transport has shut down.
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<TransportEvent>>;

    /// The node is idle (its Raft group quiesced): give back the room of empty buffers kept
    /// for the next burst. A host of thousands of idle groups should not keep it for each;
    /// a busy group keeps it between messages rather than allocate for every one. The default
    /// does nothing.
    fn release_idle_memory(&mut self) {}

    /// The next event if one is ready now.
    fn try_recv(&mut self) -> Option<TransportEvent> {
        match self.poll_recv(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(event) => event,
            Poll::Pending => None,
        }
    }
}

/// Waits for the next event of `transport`.
pub async fn recv<T: Transport + ?Sized>(transport: &mut T) -> Option<TransportEvent> {
    poll_fn(|cx| transport.poll_recv(cx)).await
}

/// Something the transport tells the node.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportEvent {
    /// A message arrived.
    Message {
        /// The group it belongs to.
        group: GroupId,
        /// The message.
        message: Message,
    },
    /// A connection to `peer` is established (after the handshake).
    PeerConnected {
        /// The peer.
        peer: NodeId,
    },
    /// The connection to `peer` was lost; the transport reconnects on its own.
    PeerDisconnected {
        /// The peer.
        peer: NodeId,
        /// Why.
        error: PeerError,
    },
    /// An incoming connection was refused or closed because of what the other side sent (a
    /// failed handshake, a malformed or oversized frame). Only that connection is affected.
    InboundRejected {
        /// The remote address.
        address: SocketAddr,
        /// The node it claimed to be, if it got that far.
        peer: Option<NodeId>,
        /// Why.
        error: PeerError,
    },
    /// Messages to `peer` that were queued or in flight will not be answered.
    SendFailed {
        /// The peer.
        peer: NodeId,
        /// What failed, oldest first.
        failed: Vec<FailedSend>,
        /// Why.
        error: PeerError,
    },
}

/// A message that was sent (or queued) but will not be answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FailedSend {
    /// Its group.
    pub group: GroupId,
    /// Its kind.
    pub kind: FrameKind,
    /// The request id it was (or would have been) sent with; 0 if never sent.
    pub request_id: u64,
}

/// Why a message could not be queued.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SendError {
    /// The transport knows no address for this node.
    UnknownPeer(NodeId),
    /// The peer's queue is full: it is slower than we are (backpressure; drop or retry later).
    QueueFull {
        /// The peer.
        peer: NodeId,
    },
    /// The message cannot be framed (too large for the maximum frame size).
    Encode(FrameError),
    /// The peer is known to be unreachable right now.
    NotConnected {
        /// The peer.
        peer: NodeId,
    },
    /// The transport has shut down.
    Shutdown,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::UnknownPeer(peer) => write!(f, "no address known for peer {peer}"),
            SendError::QueueFull { peer } => write!(f, "send queue to {peer} is full"),
            SendError::Encode(e) => write!(f, "cannot encode the message: {e}"),
            SendError::NotConnected { peer } => write!(f, "peer {peer} is not reachable"),
            SendError::Shutdown => write!(f, "the transport has shut down"),
        }
    }
}

impl std::error::Error for SendError {}

/// Why [`Transport::set_peer`] refused an address.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SetPeerError {
    /// The transport cannot dial this address (for TCP: not `IP:PORT`, an unspecified IP or
    /// port 0).
    NotDialable {
        /// The peer.
        peer: NodeId,
        /// The address it was given.
        address: String,
    },
}

impl fmt::Display for SetPeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetPeerError::NotDialable { peer, address } => {
                write!(f, "address {address:?} of peer {peer} is not dialable")
            }
        }
    }
}

impl std::error::Error for SetPeerError {}

/// Why a connection to a peer failed or closed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeerError {
    /// Connecting, reading or writing failed.
    Io {
        /// The error's kind.
        kind: io::ErrorKind,
        /// Its message.
        message: String,
    },
    /// The handshake failed (wrong cluster, wrong node, no common version, …).
    Handshake(HandshakeError),
    /// The peer sent a malformed frame; the connection was closed.
    Frame(FrameError),
    /// The peer closed the connection.
    Closed,
    /// The peer sent a well-formed frame that breaks the protocol (a second Hello, a message
    /// claiming another sender than the connection's node).
    Protocol(&'static str),
    /// There is no connection to the peer right now (reconnecting with backoff).
    NotConnected,
    /// The in-memory network's `disconnect` hook cut the peer off.
    Disconnected,
    /// This transport shut down.
    Shutdown,
    /// Nothing arrived from the peer's node for this long although it is pinged (a host of
    /// many groups watching its peers' liveness, ARCHITECTURE §14).
    Silent {
        /// How long it has been silent, in milliseconds.
        for_ms: u64,
    },
    /// The peer's node said it no longer runs this group (it was shut down there; the node
    /// stays up).
    GroupStopped,
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerError::Io { kind, message } => write!(f, "I/O error ({kind:?}): {message}"),
            PeerError::Handshake(e) => write!(f, "handshake failed: {e}"),
            PeerError::Frame(e) => write!(f, "malformed frame from peer: {e}"),
            PeerError::Closed => write!(f, "the peer closed the connection"),
            PeerError::Protocol(what) => write!(f, "protocol violation: {what}"),
            PeerError::NotConnected => write!(f, "not connected"),
            PeerError::Disconnected => write!(f, "disconnected by the test network"),
            PeerError::Shutdown => write!(f, "the transport shut down"),
            PeerError::Silent { for_ms } => {
                write!(f, "nothing heard from the peer for {for_ms} ms")
            }
            PeerError::GroupStopped => write!(f, "the peer no longer runs this group"),
        }
    }
}

impl std::error::Error for PeerError {}

impl From<io::Error> for PeerError {
    fn from(e: io::Error) -> PeerError {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            return PeerError::Closed;
        }
        PeerError::Io {
            kind: e.kind(),
            message: e.to_string(),
        }
    }
}
