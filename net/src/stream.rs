//! The stream layer: what runs on top of a connected TCP socket.
//!
//! ```text
//!   TcpTransport ── TcpSocket (bind source, NODELAY, connect) ──► StreamLayer::connect ──► S
//!   listener ────── accept ─────────────────────────────────────► StreamLayer::accept ───► S
//! ```
//!
//! The transport owns the socket decisions that must hold for every layer (source address,
//! TCP_NODELAY, timeouts); a layer only turns a connected `TcpStream` into the byte stream the
//! frames travel on: [`PlainTcp`] as is, `tls::TlsLayer` (feature `tls`) with mutual TLS.

use ringraft_storage::NodeId;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A boxed, sendable future (keeps [`StreamLayer`] free of an async-trait dependency).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Turns connected TCP sockets into the streams frames travel on.
pub trait StreamLayer: Send + Sync + 'static {
    /// The stream type.
    type Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static;

    /// Client side: `tcp` is connected to `peer` at `addr`.
    fn connect<'a>(
        &'a self,
        peer: NodeId,
        addr: SocketAddr,
        tcp: TcpStream,
    ) -> BoxFuture<'a, io::Result<Self::Stream>>;

    /// Server side: `tcp` was just accepted.
    fn accept<'a>(&'a self, tcp: TcpStream) -> BoxFuture<'a, io::Result<Self::Stream>>;
}

/// Frames straight over TCP.
#[derive(Clone, Copy, Debug, Default)]
pub struct PlainTcp;

impl StreamLayer for PlainTcp {
    type Stream = TcpStream;

    fn connect<'a>(
        &'a self,
        _peer: NodeId,
        _addr: SocketAddr,
        tcp: TcpStream,
    ) -> BoxFuture<'a, io::Result<TcpStream>> {
        Box::pin(async move { Ok(tcp) })
    }

    fn accept<'a>(&'a self, tcp: TcpStream) -> BoxFuture<'a, io::Result<TcpStream>> {
        Box::pin(async move { Ok(tcp) })
    }
}
