//! Accepting connections: handshake, then read requests and write back responses.

use super::conn::{write_loop, FrameReader};
use super::{Internal, Shared};
use crate::codec::{FrameDecoder, Payload};
use crate::handshake::{read_hello, send_hello, Hello};
use crate::stream::StreamLayer;
use crate::transport::{PeerError, TransportEvent};
use bytes::BytesMut;
use ringraft_storage::NodeId;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

pub(crate) async fn accept_loop<L: StreamLayer>(shared: Arc<Shared<L>>, listener: TcpListener) {
    let mut shutdown = shared.shutdown.clone();
    let mut connection = 0u64;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((tcp, address)) => {
                connection += 1;
                tokio::spawn(serve(shared.clone(), tcp, address, connection));
            }
            // Out of file descriptors and the like: wait rather than spin.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

fn reject<L>(shared: &Shared<L>, address: SocketAddr, peer: Option<NodeId>, error: PeerError) {
    let event = TransportEvent::InboundRejected {
        address,
        peer,
        error,
    };
    let _ = shared.events.send(Internal::Event(event));
}

async fn serve<L: StreamLayer>(
    shared: Arc<Shared<L>>,
    tcp: TcpStream,
    address: SocketAddr,
    connection: u64,
) {
    let config = &shared.config;
    let handshake = async {
        tcp.set_nodelay(true).map_err(|e| (None, e.into()))?;
        let mut stream = shared
            .layer
            .accept(tcp)
            .await
            .map_err(|e| (None, e.into()))?;
        let mut buf = BytesMut::with_capacity(64 << 10);
        let theirs = read_hello(&mut stream, &mut buf, config.max_frame_bytes)
            .await
            .map_err(|e| (None, PeerError::Handshake(e)))?;
        let peer = Some(theirs.node_id);
        // Answer before judging, so a refused dialer learns why.
        let ours = Hello::new(config.cluster_id, config.node_id, NodeId(0), theirs.lane);
        send_hello(&mut stream, &ours)
            .await
            .map_err(|e| (peer, PeerError::Handshake(e.into())))?;
        ours.negotiate(&theirs, None)
            .map_err(|e| (peer, PeerError::Handshake(e)))?;
        Ok::<_, (Option<NodeId>, PeerError)>((stream, buf, theirs))
    };
    let mut shutdown = shared.shutdown.clone();
    let (stream, buf, theirs) = tokio::select! {
        _ = shutdown.changed() => return,
        r = tokio::time::timeout(config.connect_timeout, handshake) => match r {
            Ok(Ok(ok)) => ok,
            Ok(Err((peer, error))) => return reject(&shared, address, peer, error),
            Err(_) => {
                let error = PeerError::Handshake(crate::handshake::HandshakeError::TimedOut);
                return reject(&shared, address, None, error);
            }
        },
    };
    let peer = theirs.node_id;
    let lane = theirs.lane;
    let (mut read, mut write) = tokio::io::split(stream);
    let (responses, mut response_rx) = super::queue::queue();
    let opened = Internal::InboundOpened {
        peer,
        lane,
        connection,
        responses,
    };
    if shared.events.send(opened).is_err() {
        return;
    }
    let writer = tokio::spawn(async move { write_loop(&mut write, &mut response_rx).await });
    let mut reader = FrameReader::new(buf, FrameDecoder::new(config.max_frame_bytes));
    let error = loop {
        let frame = tokio::select! {
            _ = shutdown.changed() => break PeerError::Shutdown,
            f = reader.read(&mut read) => match f {
                Ok(frame) => frame,
                Err(e) => break e,
            },
        };
        let Payload::Message(message) = frame.payload else {
            break PeerError::Protocol("a second Hello after the handshake");
        };
        if message.from != peer {
            break PeerError::Protocol("a message from another node than the connection's");
        }
        // Not another frame off this connection until the node has room for this one.
        let held = tokio::select! {
            _ = shutdown.changed() => break PeerError::Shutdown,
            held = shared.hold_received(reader.last_len()) => match held {
                Some(held) => held,
                None => break PeerError::Shutdown,
            },
        };
        let internal = if frame.kind.is_response() {
            Internal::Received {
                group: frame.group,
                message,
                _held: held,
            }
        } else {
            Internal::Request {
                _held: held,
                peer,
                lane,
                connection,
                request_id: frame.request_id,
                kind: frame.kind,
                group: frame.group,
                message,
            }
        };
        if shared.events.send(internal).is_err() {
            break PeerError::Shutdown;
        }
    };
    writer.abort();
    let _ = shared.events.send(Internal::InboundClosed {
        peer,
        lane,
        connection,
    });
    // A peer closing its connection (restart, shutdown) is routine; anything else is reported.
    if !matches!(error, PeerError::Closed | PeerError::Shutdown) {
        reject(&shared, address, Some(peer), error);
    }
}
