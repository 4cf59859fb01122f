//! The TCP transport: long-lived, pipelined connections on the shard's tokio runtime.
//!
//! ```text
//!            shard thread (tokio current-thread runtime)
//!  ┌─────────────────────────────────────────────────────────────────────────────┐
//!  │ TcpTransport ─ send(req) ─► queue[peer,lane] ─► outbound task ─► connection ─┼─► peer
//!  │      ▲           (bounded)     window: max_inflight (bulk lane)  ◄─ responses │
//!  │      │ events ◄───────────────────────────────────────────────────────────── │
//!  │      │ send(resp) ─► inbound connection it answers ◄─ requests ◄─ listener ◄─┼── peer
//!  └─────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! - Each peer gets two outgoing connections, one per [`Lane`]: heartbeats and votes never
//!   queue behind megabytes of AppendEntries in a socket buffer.
//! - Requests go out on our connection to the peer; a response goes back on the connection its
//!   request came in on, stamped with the request's id. The sender keeps up to `max_inflight`
//!   bulk requests unanswered (a response with id `r` answers every earlier request too: a peer
//!   processes a connection's requests in order, so one that skipped an answer still freed it).
//! - Frames queued while the writer was busy go out together in one vectored write.
//! - A connection that fails fails its unanswered requests ([`TransportEvent::SendFailed`]) and
//!   is re-dialled with capped exponential backoff and jitter.
//! - A malformed frame closes only the connection it came on, with a typed error reported as
//!   [`TransportEvent::InboundRejected`] or [`TransportEvent::PeerDisconnected`].

mod conn;
mod inbound;
mod outbound;
mod ports;
mod queue;

pub use ports::free_loopback_addresses;

use crate::codec::{encode_message, kind_of, EncodedFrame};
use crate::frame::{FrameKind, DEFAULT_MAX_FRAME_BYTES, FRAME_HEADER_SIZE};
use crate::handshake::{ClusterId, Lane};
use crate::message::Message;
use crate::stream::{PlainTcp, StreamLayer};
use crate::transport::{FailedSend, SendError, SetPeerError, Transport, TransportEvent};
use ringraft_storage::{GroupId, NodeId};
use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};

/// Which source address outgoing connections bind to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SourceAddress {
    /// The node's own advertised host (the default): peers and firewalls see the address the
    /// node advertises, which matters on multi-homed hosts (ARCHITECTURE §6).
    #[default]
    AdvertisedHost,
    /// Let the operating system choose.
    Any,
    /// This address.
    Ip(IpAddr),
}

/// Configuration of a [`TcpTransport`].
#[derive(Clone, Debug)]
pub struct TcpConfig {
    /// This node.
    pub node_id: NodeId,
    /// The cluster; connections from other clusters are refused.
    pub cluster_id: ClusterId,
    /// Where to listen. Port 0 picks a free port.
    pub bind_address: SocketAddr,
    /// The address peers reach this node at; required when `bind_address` is unspecified
    /// (`0.0.0.0`, `::`), since that is not an address anyone can dial.
    pub advertise_address: Option<SocketAddr>,
    /// Source address of outgoing connections.
    pub source_address: SourceAddress,
    /// Peers and their addresses.
    pub peers: BTreeMap<NodeId, SocketAddr>,
    /// Largest frame sent or accepted, header included.
    pub max_frame_bytes: usize,
    /// Most unanswered AppendEntries / snapshot chunks per peer, every group's together.
    /// Each group's own pipeline is bounded by the node's `Config::max_inflight` (64 by
    /// default); this bounds their sum on the connection, so with many busy groups on one
    /// node (`MultiRaft`) it must be large. Memory is not what it guards (the sender keeps a
    /// few bytes per unanswered request; the receiver holds at most `max_received_bytes`).
    pub max_inflight: usize,
    /// Most messages queued per peer and lane before `send` answers `QueueFull`.
    pub max_queued: usize,
    /// Most bytes of received messages (whole frames) held for the node before it takes them
    /// ([`Transport::poll_recv`]). Beyond it no connection is read until the node takes some,
    /// so a peer that sends faster than this node handles is held back by TCP flow control
    /// (its queues fill and its `send` answers `QueueFull`) instead of growing this node's
    /// memory. A frame larger than the whole budget is let through alone.
    pub max_received_bytes: usize,
    /// Limit on connecting plus the handshake.
    pub connect_timeout: Duration,
    /// First reconnect delay.
    pub backoff_initial: Duration,
    /// Largest reconnect delay.
    pub backoff_max: Duration,
}

impl TcpConfig {
    /// A configuration with defaults: no peers, 64 MiB frames, 1024 in flight, 1024 queued,
    /// 256 MiB of received messages held, 2 s connect timeout, backoff from 20 ms to 2 s.
    pub fn new(node_id: NodeId, cluster_id: ClusterId, bind_address: SocketAddr) -> TcpConfig {
        TcpConfig {
            node_id,
            cluster_id,
            bind_address,
            advertise_address: None,
            source_address: SourceAddress::AdvertisedHost,
            peers: BTreeMap::new(),
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_inflight: DEFAULT_MAX_INFLIGHT,
            max_queued: 1024,
            max_received_bytes: DEFAULT_MAX_RECEIVED_BYTES,
            connect_timeout: Duration::from_secs(2),
            backoff_initial: Duration::from_millis(20),
            backoff_max: Duration::from_secs(2),
        }
    }

    /// Checks the configuration; returns the address to advertise (`None`: the bound port,
    /// known after binding).
    pub fn validate(&self) -> Result<Option<SocketAddr>, ConfigError> {
        if let Some(advertise) = self.advertise_address {
            if advertise.ip().is_unspecified() || advertise.port() == 0 {
                return Err(ConfigError::AdvertiseNotDialable(advertise));
            }
        } else if self.bind_address.ip().is_unspecified() {
            return Err(ConfigError::UnspecifiedWithoutAdvertise(self.bind_address));
        }
        if self.node_id.0 == 0 {
            return Err(ConfigError::ZeroNodeId);
        }
        if self.max_inflight == 0 || self.max_queued == 0 {
            return Err(ConfigError::ZeroLimit);
        }
        if self.max_received_bytes == 0 || self.max_received_bytes > MAX_RECEIVED_BYTES_LIMIT {
            return Err(ConfigError::ReceivedBudget(self.max_received_bytes));
        }
        if self.max_frame_bytes < FRAME_HEADER_SIZE + 1024 {
            return Err(ConfigError::MaxFrameTooSmall(self.max_frame_bytes));
        }
        for (id, addr) in &self.peers {
            if addr.ip().is_unspecified() || addr.port() == 0 {
                return Err(ConfigError::PeerNotDialable(*id, *addr));
            }
        }
        Ok(self.advertise_address)
    }
}

/// Why a transport could not start.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConfigError {
    /// The bind address is unspecified and no advertise address is given.
    UnspecifiedWithoutAdvertise(SocketAddr),
    /// The advertise address is unspecified or has port 0.
    AdvertiseNotDialable(SocketAddr),
    /// A peer's address is unspecified or has port 0.
    PeerNotDialable(NodeId, SocketAddr),
    /// Node id 0 is reserved.
    ZeroNodeId,
    /// `max_inflight` or `max_queued` is zero.
    ZeroLimit,
    /// `max_frame_bytes` is below the 1 KiB (plus header) floor.
    MaxFrameTooSmall(usize),
    /// `max_received_bytes` is zero or above 4 GiB − 1.
    ReceivedBudget(usize),
    /// Binding the listener failed.
    Bind(io::Error),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::UnspecifiedWithoutAdvertise(a) => write!(
                f,
                "bind address {a} is unspecified: set an advertise address peers can dial"
            ),
            ConfigError::AdvertiseNotDialable(a) => {
                write!(
                    f,
                    "advertise address {a} is not dialable (unspecified or port 0)"
                )
            }
            ConfigError::PeerNotDialable(id, a) => {
                write!(f, "address {a} of peer {id} is not dialable")
            }
            ConfigError::ZeroNodeId => write!(f, "node id 0 is reserved"),
            ConfigError::ZeroLimit => write!(f, "max_inflight and max_queued must be positive"),
            ConfigError::MaxFrameTooSmall(n) => write!(f, "max_frame_bytes {n} is too small"),
            ConfigError::ReceivedBudget(n) => write!(
                f,
                "max_received_bytes {n} must be at least 1 and at most {MAX_RECEIVED_BYTES_LIMIT}"
            ),
            ConfigError::Bind(e) => write!(f, "cannot bind the listener: {e}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The default of [`TcpConfig::max_inflight`]. It was 16, below one group's own pipeline
/// (64): 1 000 busy groups over one connection per peer wrote 35–38 k writes/s with it, against
/// 47–51 k with 1 024 (docs/PERFORMANCE.md, session 9).
pub const DEFAULT_MAX_INFLIGHT: usize = 1024;

/// The default of [`TcpConfig::max_received_bytes`]: 256 MiB.
pub const DEFAULT_MAX_RECEIVED_BYTES: usize = 256 << 20;

/// The largest [`TcpConfig::max_received_bytes`] (a semaphore's permits per acquisition).
const MAX_RECEIVED_BYTES_LIMIT: usize = u32::MAX as usize;

/// What the connection tasks tell the transport.
pub(crate) enum Internal {
    Event(TransportEvent),
    /// A message read off a connection that needs no answer from this node (a response, or
    /// anything the peer sent on our connection); `_held` is its share of the receive budget,
    /// given back when the node takes it.
    Received {
        group: GroupId,
        message: Message,
        _held: OwnedSemaphorePermit,
    },
    Request {
        /// Its share of the receive budget, given back when the node takes it.
        _held: OwnedSemaphorePermit,
        peer: NodeId,
        lane: Lane,
        connection: u64,
        request_id: u64,
        kind: FrameKind,
        group: GroupId,
        message: Message,
    },
    InboundOpened {
        peer: NodeId,
        lane: Lane,
        connection: u64,
        responses: queue::Sender<EncodedFrame>,
    },
    InboundClosed {
        peer: NodeId,
        lane: Lane,
        connection: u64,
    },
}

/// A message queued for an outbound connection.
pub(crate) struct Outgoing {
    pub(crate) frame: EncodedFrame,
    pub(crate) info: FailedSend,
}

/// State shared by the transport's tasks; read-only after start.
pub(crate) struct Shared<L> {
    pub(crate) config: TcpConfig,
    pub(crate) layer: L,
    pub(crate) source_ip: Option<IpAddr>,
    pub(crate) events: queue::Sender<Internal>,
    pub(crate) shutdown: watch::Receiver<bool>,
    /// The receive budget: one permit per byte of received messages the node has not taken
    /// yet ([`TcpConfig::max_received_bytes`]); readers wait for room before they hand a
    /// message over, and stop reading meanwhile. Closed when the transport is dropped.
    pub(crate) received: Arc<Semaphore>,
}

impl<L> Shared<L> {
    /// Waits for room in the receive budget for a message of `len` bytes and returns its
    /// share; `None` once the transport is gone. A message larger than the whole budget waits
    /// until the budget is all free.
    pub(crate) async fn hold_received(&self, len: usize) -> Option<OwnedSemaphorePermit> {
        let permits = len.clamp(1, self.config.max_received_bytes) as u32;
        self.received.clone().acquire_many_owned(permits).await.ok()
    }
}

struct OutboundHandle {
    /// Where the peer is dialled.
    address: SocketAddr,
    queue: mpsc::Sender<Outgoing>,
    inflight: Arc<AtomicUsize>,
    next_request_id: u64,
}

struct InboundHandle {
    connection: u64,
    responses: queue::Sender<EncodedFrame>,
    /// Requests delivered to the node and not yet answered, oldest first.
    unanswered: VecDeque<(u64, FrameKind)>,
}

/// Most unanswered requests remembered per inbound connection; beyond it the oldest are
/// forgotten (their responses then carry id 0, which frees nothing at the sender).
const UNANSWERED_MAX: usize = 4096;

/// The TCP transport. Create it inside the shard's tokio runtime; its tasks run there.
pub struct TcpTransport<L: StreamLayer = PlainTcp> {
    shared: Arc<Shared<L>>,
    local_address: SocketAddr,
    advertise_address: SocketAddr,
    outbound: BTreeMap<(NodeId, Lane), OutboundHandle>,
    inbound: BTreeMap<(NodeId, Lane), InboundHandle>,
    events: queue::Receiver<Internal>,
    shutdown: watch::Sender<bool>,
}

impl TcpTransport<PlainTcp> {
    /// Binds the listener and dials the configured peers, over plain TCP.
    pub async fn bind(config: TcpConfig) -> Result<TcpTransport<PlainTcp>, ConfigError> {
        TcpTransport::bind_with(config, PlainTcp).await
    }
}

impl<L: StreamLayer> TcpTransport<L> {
    /// Binds the listener and dials the configured peers, over `layer`.
    pub async fn bind_with(config: TcpConfig, layer: L) -> Result<TcpTransport<L>, ConfigError> {
        let advertise = config.validate()?;
        let listener = TcpListener::bind(config.bind_address)
            .await
            .map_err(ConfigError::Bind)?;
        let local_address = listener.local_addr().map_err(ConfigError::Bind)?;
        let advertise_address = advertise.unwrap_or(local_address);
        let source_ip = match config.source_address {
            SourceAddress::AdvertisedHost => Some(advertise_address.ip()),
            SourceAddress::Any => None,
            SourceAddress::Ip(ip) => Some(ip),
        };
        let (events_tx, events) = queue::queue();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let peers = config.peers.clone();
        let received = Arc::new(Semaphore::new(config.max_received_bytes));
        let shared = Arc::new(Shared {
            config,
            layer,
            source_ip,
            events: events_tx,
            shutdown: shutdown_rx,
            received,
        });
        tokio::spawn(inbound::accept_loop(shared.clone(), listener));
        let mut transport = TcpTransport {
            shared,
            local_address,
            advertise_address,
            outbound: BTreeMap::new(),
            inbound: BTreeMap::new(),
            events,
            shutdown,
        };
        for (id, addr) in peers {
            transport.add_peer(id, addr);
        }
        Ok(transport)
    }

    /// The address the listener is bound to.
    pub fn local_address(&self) -> SocketAddr {
        self.local_address
    }

    /// The address peers should dial.
    pub fn advertise_address(&self) -> SocketAddr {
        self.advertise_address
    }

    /// Starts dialling `peer` at `address` (replacing an earlier address for it).
    pub fn add_peer(&mut self, peer: NodeId, address: SocketAddr) {
        self.remove_peer(peer);
        for lane in Lane::ALL {
            let (queue, rx) = mpsc::channel(self.shared.config.max_queued);
            let inflight = Arc::new(AtomicUsize::new(0));
            let task = outbound::Outbound {
                shared: self.shared.clone(),
                peer,
                address,
                lane,
                queue: rx,
                inflight: inflight.clone(),
            };
            tokio::spawn(task.run());
            let handle = OutboundHandle {
                address,
                queue,
                inflight,
                next_request_id: 1,
            };
            self.outbound.insert((peer, lane), handle);
        }
    }

    /// The address `peer` is dialled at, if it is known.
    pub fn peer_address(&self, peer: NodeId) -> Option<SocketAddr> {
        self.outbound.get(&(peer, Lane::ALL[0])).map(|h| h.address)
    }

    /// Stops dialling `peer`; its queued messages are dropped.
    pub fn remove_peer(&mut self, peer: NodeId) {
        for lane in Lane::ALL {
            // Dropping the queue's sender ends the peer's outbound task.
            self.outbound.remove(&(peer, lane));
        }
    }

    /// Unanswered bulk requests (AppendEntries, snapshot chunks) to `peer`.
    pub fn inflight(&self, peer: NodeId) -> usize {
        self.outbound
            .get(&(peer, Lane::Bulk))
            .map_or(0, |h| h.inflight.load(Ordering::Relaxed))
    }

    /// Messages queued for `peer` (both lanes) and not yet taken by its connection.
    pub fn queued(&self, peer: NodeId) -> usize {
        Lane::ALL
            .iter()
            .filter_map(|lane| self.outbound.get(&(peer, *lane)))
            .map(|h| h.queue.max_capacity() - h.queue.capacity())
            .sum()
    }

    /// Bytes of received messages held for the node, not yet taken by
    /// [`Transport::poll_recv`]; at most [`TcpConfig::max_received_bytes`] (or one larger
    /// message).
    pub fn received_held_bytes(&self) -> usize {
        self.shared
            .config
            .max_received_bytes
            .saturating_sub(self.shared.received.available_permits())
    }

    /// Closes every connection and stops every task (also done on drop).
    pub fn shutdown(&mut self) {
        let _ = self.shutdown.send(true);
        self.shared.received.close();
        self.outbound.clear();
        self.inbound.clear();
    }

    fn send_response(
        &mut self,
        group: GroupId,
        message: Message,
        kind: FrameKind,
        lane: Lane,
    ) -> Result<(), SendError> {
        let peer = message.to;
        let max = self.shared.config.max_frame_bytes;
        if let Some(handle) = self.inbound.get_mut(&(peer, lane)) {
            let answered = kind.answers();
            let request_id = match handle
                .unanswered
                .iter()
                .position(|(_, k)| Some(*k) == answered)
            {
                Some(i) => handle.unanswered.remove(i).map_or(0, |(id, _)| id),
                None => 0,
            };
            let frame =
                encode_message(&message, request_id, group, max).map_err(SendError::Encode)?;
            if handle.responses.send(frame).is_ok() {
                return Ok(());
            }
        }
        // No live connection from the peer to answer on: send it on ours (id 0 frees nothing;
        // the node still gets its answer).
        self.send_request(group, message, kind, lane, false)
    }

    fn send_request(
        &mut self,
        group: GroupId,
        message: Message,
        kind: FrameKind,
        lane: Lane,
        numbered: bool,
    ) -> Result<(), SendError> {
        let peer = message.to;
        let max = self.shared.config.max_frame_bytes;
        let handle = self
            .outbound
            .get_mut(&(peer, lane))
            .ok_or(SendError::UnknownPeer(peer))?;
        let request_id = if numbered {
            handle.next_request_id += 1;
            handle.next_request_id - 1
        } else {
            0
        };
        let frame = encode_message(&message, request_id, group, max).map_err(SendError::Encode)?;
        let info = FailedSend {
            group,
            kind,
            request_id,
        };
        handle
            .queue
            .try_send(Outgoing { frame, info })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => SendError::QueueFull { peer },
                mpsc::error::TrySendError::Closed(_) => SendError::Shutdown,
            })
    }
}

impl<L: StreamLayer> Transport for TcpTransport<L> {
    fn local_id(&self) -> NodeId {
        self.shared.config.node_id
    }

    fn send(&mut self, group: GroupId, message: Message) -> Result<(), SendError> {
        if *self.shutdown.borrow() {
            return Err(SendError::Shutdown);
        }
        let kind = kind_of(&message.body);
        let lane = Lane::of(kind);
        if kind.is_response() {
            self.send_response(group, message, kind, lane)
        } else {
            self.send_request(group, message, kind, lane, true)
        }
    }

    /// Dials `peer` at `address` (`IP:PORT`; host names are not resolved). The same address
    /// again is a no-op, so the connection and what is queued on it survive; a new one replaces
    /// the connection.
    fn set_peer(&mut self, peer: NodeId, address: &str) -> Result<(), SetPeerError> {
        let not_dialable = || SetPeerError::NotDialable {
            peer,
            address: address.to_string(),
        };
        let parsed: SocketAddr = address.parse().map_err(|_| not_dialable())?;
        if parsed.ip().is_unspecified() || parsed.port() == 0 {
            return Err(not_dialable());
        }
        if peer != self.shared.config.node_id && self.peer_address(peer) != Some(parsed) {
            self.add_peer(peer, parsed);
        }
        Ok(())
    }

    fn remove_peer(&mut self, peer: NodeId) {
        TcpTransport::remove_peer(self, peer);
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<TransportEvent>> {
        loop {
            let internal = match self.events.poll_recv(cx) {
                Poll::Ready(Some(internal)) => internal,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            };
            match internal {
                Internal::Event(event) => return Poll::Ready(Some(event)),
                // The budget share (`_held`) is given back as the message is handed over.
                Internal::Received { group, message, .. } => {
                    return Poll::Ready(Some(TransportEvent::Message { group, message }))
                }
                Internal::Request {
                    _held: _,
                    peer,
                    lane,
                    connection,
                    request_id,
                    kind,
                    group,
                    message,
                } => {
                    if let Some(handle) = self.inbound.get_mut(&(peer, lane)) {
                        if handle.connection == connection && kind.expects_response() {
                            if handle.unanswered.len() == UNANSWERED_MAX {
                                handle.unanswered.pop_front();
                            }
                            handle.unanswered.push_back((request_id, kind));
                        }
                    }
                    return Poll::Ready(Some(TransportEvent::Message { group, message }));
                }
                Internal::InboundOpened {
                    peer,
                    lane,
                    connection,
                    responses,
                } => {
                    let handle = InboundHandle {
                        connection,
                        responses,
                        unanswered: VecDeque::new(),
                    };
                    self.inbound.insert((peer, lane), handle);
                }
                Internal::InboundClosed {
                    peer,
                    lane,
                    connection,
                } => {
                    if self
                        .inbound
                        .get(&(peer, lane))
                        .is_some_and(|h| h.connection == connection)
                    {
                        self.inbound.remove(&(peer, lane));
                    }
                }
            }
        }
    }
}

impl<L: StreamLayer> Drop for TcpTransport<L> {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        // Readers waiting for room in the receive budget stop too.
        self.shared.received.close();
    }
}

/// Capped exponential backoff with "equal jitter": half the delay fixed, half random, so
/// peers that lost a connection at the same moment do not redial in lockstep.
pub(crate) fn backoff(initial: Duration, max: Duration, attempt: u32, random: u64) -> Duration {
    let exp = initial.saturating_mul(1u32 << attempt.min(20)).min(max);
    let half = exp / 2;
    let nanos = half.as_nanos().min(u128::from(u64::MAX)) as u64;
    half + Duration::from_nanos(if nanos == 0 { 0 } else { random % nanos })
}

/// A random number from the standard library's per-process hash keys (no extra dependency;
/// jitter needs no more than this).
pub(crate) fn random_u64(salt: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(salt);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_up_to_the_cap_with_jitter_in_the_upper_half() {
        let initial = Duration::from_millis(10);
        let max = Duration::from_secs(1);
        for attempt in 0..30 {
            for random in [0, 1, u64::MAX / 3, u64::MAX] {
                let d = backoff(initial, max, attempt, random);
                let exp = initial.saturating_mul(1 << attempt.min(20)).min(max);
                assert!(d >= exp / 2 && d <= exp, "attempt {attempt}: {d:?}");
            }
        }
    }

    #[tokio::test]
    async fn set_peer_dials_new_addresses_keeps_known_ones_and_refuses_undialable_ones() {
        let loopback: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let mut t = TcpTransport::bind(TcpConfig::new(NodeId(1), ClusterId(1), loopback))
            .await
            .expect("bind");
        let transport: &mut dyn Transport = &mut t;
        assert_eq!(transport.set_peer(NodeId(2), "127.0.0.1:7002"), Ok(()));
        // Our own id is no peer.
        assert_eq!(transport.set_peer(NodeId(1), "127.0.0.1:7001"), Ok(()));
        for bad in ["n3", "0.0.0.0:7003", "127.0.0.1:0"] {
            assert_eq!(
                transport.set_peer(NodeId(3), bad),
                Err(SetPeerError::NotDialable {
                    peer: NodeId(3),
                    address: bad.to_string()
                })
            );
        }
        let queued = |t: &mut TcpTransport| {
            let message = Message {
                from: NodeId(1),
                to: NodeId(2),
                term: ringraft_storage::Term(1),
                body: crate::message::Body::TimeoutNow,
            };
            t.send(GroupId(0), message)
        };
        assert_eq!(queued(&mut t), Ok(()));
        assert_eq!(t.peer_address(NodeId(1)), None);
        assert_eq!(t.peer_address(NodeId(3)), None);
        // The same address again keeps the connection and what is queued on it (the
        // connection task has not run yet: this test never yields to it).
        assert_eq!(t.queued(NodeId(2)), 1);
        Transport::set_peer(&mut t, NodeId(2), "127.0.0.1:7002").expect("same address");
        assert_eq!(t.queued(NodeId(2)), 1);
        Transport::set_peer(&mut t, NodeId(2), "127.0.0.1:7012").expect("new address");
        assert_eq!(
            t.peer_address(NodeId(2)),
            Some("127.0.0.1:7012".parse().expect("addr"))
        );
        Transport::remove_peer(&mut t, NodeId(2));
        assert_eq!(t.peer_address(NodeId(2)), None);
        assert_eq!(queued(&mut t), Err(SendError::UnknownPeer(NodeId(2))));
    }

    #[test]
    fn unspecified_bind_addresses_need_an_advertise_address() {
        let any: SocketAddr = "0.0.0.0:7000".parse().expect("addr");
        let mut config = TcpConfig::new(NodeId(1), ClusterId(1), any);
        assert!(matches!(
            config.validate(),
            Err(ConfigError::UnspecifiedWithoutAdvertise(_))
        ));
        config.advertise_address = Some("0.0.0.0:7000".parse().expect("addr"));
        assert!(matches!(
            config.validate(),
            Err(ConfigError::AdvertiseNotDialable(_))
        ));
        config.advertise_address = Some("10.1.2.3:7000".parse().expect("addr"));
        assert!(config.validate().is_ok());
        config.max_inflight = 0;
        assert!(matches!(config.validate(), Err(ConfigError::ZeroLimit)));
    }
}
