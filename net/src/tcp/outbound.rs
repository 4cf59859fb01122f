//! One outgoing connection to one peer on one lane: dial, handshake, pipeline, redial.

use super::conn::{write_parts, FrameReader, COALESCE_BYTES};
use super::{backoff, random_u64, Internal, Outgoing, Shared};
use crate::codec::{FrameDecoder, Payload};
use crate::handshake::{read_hello, send_hello, HandshakeError, Hello, Lane};
use crate::stream::StreamLayer;
use crate::transport::{FailedSend, PeerError, TransportEvent};
use bytes::BytesMut;
use ringraft_storage::NodeId;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncRead, ReadHalf};
use tokio::net::TcpSocket;
use tokio::sync::mpsc;

pub(crate) struct Outbound<L> {
    pub(crate) shared: Arc<Shared<L>>,
    pub(crate) peer: NodeId,
    pub(crate) address: SocketAddr,
    pub(crate) lane: Lane,
    pub(crate) queue: mpsc::Receiver<Outgoing>,
    pub(crate) inflight: Arc<AtomicUsize>,
}

/// What the response reader tells the writer.
enum Ack {
    /// A response answering request `id` (and every earlier one) arrived.
    Answered(u64),
    /// The connection failed.
    Failed(PeerError),
}

impl<L: StreamLayer> Outbound<L> {
    pub(crate) async fn run(mut self) {
        let mut shutdown = self.shared.shutdown.clone();
        let mut attempt: u32 = 0;
        let salt = (self.shared.config.node_id.0 << 32) ^ self.peer.0;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let connected = tokio::select! {
                r = self.connect() => r,
                _ = shutdown.changed() => return,
            };
            match connected {
                Ok((stream, buf)) => {
                    attempt = 0;
                    self.event(TransportEvent::PeerConnected { peer: self.peer });
                    let mut inflight = VecDeque::new();
                    let error = self.serve(stream, buf, &mut inflight).await;
                    self.inflight.store(0, Ordering::Relaxed);
                    if error == PeerError::Shutdown {
                        return;
                    }
                    let mut failed: Vec<FailedSend> = inflight.into_iter().collect();
                    // Queued messages would go out only after a redial, stale by then: fail
                    // them now so the node can resend what is still wanted.
                    while let Ok(o) = self.queue.try_recv() {
                        failed.push(o.info);
                    }
                    if !failed.is_empty() {
                        self.event(TransportEvent::SendFailed {
                            peer: self.peer,
                            failed,
                            error: error.clone(),
                        });
                    }
                    self.event(TransportEvent::PeerDisconnected {
                        peer: self.peer,
                        error,
                    });
                }
                Err(error) => {
                    // Report the first failure of a run only, not every redial of an outage.
                    if attempt == 0 {
                        self.event(TransportEvent::PeerDisconnected {
                            peer: self.peer,
                            error,
                        });
                    }
                    attempt = attempt.saturating_add(1);
                }
            }
            let config = &self.shared.config;
            let delay = backoff(
                config.backoff_initial,
                config.backoff_max,
                attempt,
                random_u64(salt ^ u64::from(attempt)),
            );
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            loop {
                tokio::select! {
                    _ = &mut sleep => break,
                    _ = shutdown.changed() => return,
                    next = self.queue.recv() => match next {
                        // The peer was removed.
                        None => return,
                        Some(o) => self.event(TransportEvent::SendFailed {
                            peer: self.peer,
                            failed: vec![o.info],
                            error: PeerError::NotConnected,
                        }),
                    },
                }
            }
        }
    }

    fn event(&self, event: TransportEvent) {
        // Only the peer's control lane announces connects and disconnects, so the node hears
        // one of each per peer; the bulk lane reports failed requests.
        let announce = !matches!(
            event,
            TransportEvent::PeerConnected { .. } | TransportEvent::PeerDisconnected { .. }
        ) || self.lane == Lane::Control;
        if announce {
            let _ = self.shared.events.send(Internal::Event(event));
        }
    }

    async fn connect(&self) -> Result<(L::Stream, BytesMut), PeerError> {
        let shared = &self.shared;
        let config = &shared.config;
        let dial = async {
            let socket = if self.address.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            if let Some(ip) = shared.source_ip {
                if ip.is_ipv4() == self.address.is_ipv4() && !ip.is_unspecified() {
                    socket.bind(SocketAddr::new(ip, 0))?;
                }
            }
            let tcp = socket.connect(self.address).await?;
            // Frames are whole messages, written with one vectored write: Nagle would only
            // delay them.
            tcp.set_nodelay(true)?;
            let stream = shared.layer.connect(self.peer, self.address, tcp).await?;
            Ok::<_, PeerError>(stream)
        };
        let handshake = async {
            let mut stream = dial.await?;
            let hello = Hello::new(config.cluster_id, config.node_id, self.peer, self.lane);
            send_hello(&mut stream, &hello)
                .await
                .map_err(|e| PeerError::Handshake(e.into()))?;
            let mut buf = BytesMut::with_capacity(64 << 10);
            let theirs = read_hello(&mut stream, &mut buf, config.max_frame_bytes)
                .await
                .map_err(PeerError::Handshake)?;
            hello
                .negotiate(&theirs, Some(self.peer))
                .map_err(PeerError::Handshake)?;
            Ok((stream, buf))
        };
        match tokio::time::timeout(config.connect_timeout, handshake).await {
            Ok(result) => result,
            Err(_) => Err(PeerError::Handshake(HandshakeError::TimedOut)),
        }
    }

    /// Pipelines requests until the connection fails; returns why.
    async fn serve(
        &mut self,
        stream: L::Stream,
        buf: BytesMut,
        inflight: &mut VecDeque<FailedSend>,
    ) -> PeerError {
        let (read, mut write) = tokio::io::split(stream);
        let (acks, mut ack_rx) = super::queue::queue();
        let reader = tokio::spawn(read_responses(
            read,
            FrameReader::new(buf, FrameDecoder::new(self.shared.config.max_frame_bytes)),
            self.shared.clone(),
            self.peer,
            acks,
        ));
        let window = match self.lane {
            Lane::Bulk => self.shared.config.max_inflight,
            Lane::Control => usize::MAX,
        };
        let mut shutdown = self.shared.shutdown.clone();
        let mut parts = Vec::new();
        let error = loop {
            let open = inflight.len() < window;
            tokio::select! {
                biased;
                _ = shutdown.changed() => break PeerError::Shutdown,
                ack = ack_rx.recv() => match ack {
                    Some(Ack::Answered(id)) => {
                        // Cumulative: the peer handles a connection's requests in order.
                        while inflight.front().is_some_and(|f| f.request_id <= id) {
                            inflight.pop_front();
                        }
                    }
                    Some(Ack::Failed(e)) => break e,
                    None => break PeerError::Closed,
                },
                next = self.queue.recv(), if open => {
                    let Some(first) = next else { break PeerError::Shutdown };
                    let mut bytes = take(first, inflight, &mut parts);
                    // Coalesce whatever else is queued into the same vectored write.
                    while inflight.len() < window && bytes < COALESCE_BYTES {
                        match self.queue.try_recv() {
                            Ok(o) => bytes += take(o, inflight, &mut parts),
                            Err(_) => break,
                        }
                    }
                    if let Err(e) = write_parts(&mut write, &mut parts).await {
                        break e;
                    }
                }
            }
            self.inflight.store(inflight.len(), Ordering::Relaxed);
        };
        reader.abort();
        error
    }
}

/// Moves a queued frame into the write batch, tracking it as in flight if it expects an
/// answer; returns its length.
fn take(o: Outgoing, inflight: &mut VecDeque<FailedSend>, parts: &mut Vec<bytes::Bytes>) -> usize {
    let len = o.frame.len();
    if o.info.request_id != 0 && o.info.kind.expects_response() {
        inflight.push_back(o.info);
    }
    parts.extend(o.frame.into_parts());
    len
}

/// Reads responses (and anything else the peer sends on our connection) until it fails.
async fn read_responses<S: AsyncRead, L>(
    mut read: ReadHalf<S>,
    mut reader: FrameReader,
    shared: Arc<Shared<L>>,
    peer: NodeId,
    acks: super::queue::Sender<Ack>,
) {
    let error = loop {
        let frame = match reader.read(&mut read).await {
            Ok(frame) => frame,
            Err(e) => break e,
        };
        let Payload::Message(message) = frame.payload else {
            break PeerError::Protocol("a second Hello after the handshake");
        };
        if message.from != peer {
            break PeerError::Protocol("a message from another node than the connection's");
        }
        // Not another frame off this connection until the node has room for this one.
        let Some(held) = shared.hold_received(reader.last_len()).await else {
            return;
        };
        let received = Internal::Received {
            group: frame.group,
            message,
            _held: held,
        };
        if shared.events.send(received).is_err() {
            return;
        }
        if frame.kind.is_response() && acks.send(Ack::Answered(frame.request_id)).is_err() {
            return;
        }
    };
    let _ = acks.send(Ack::Failed(error));
}
