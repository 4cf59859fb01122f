//! How a node gets its network: [`IntoTransport`].
//!
//! A node's transport lives on its shard thread (ARCHITECTURE §2, §6). Some transports are ready to
//! use wherever they were made (the in-memory network's); the TCP transport spawns its
//! connection tasks on the tokio runtime it is created in, so it must be created *inside* the
//! shard's own current-thread runtime. [`IntoTransport`] covers both: any `Transport + Send`
//! is used as it is, and [`TcpTransportConfig`] binds a [`TcpTransport`] on the shard thread
//! when the node starts (a bind error fails [`Raft::new`](crate::Raft::new)).
//!
//! A transport's configured peers are only where it starts: the node tells it where every
//! member of the configurations in force is ([`Transport::set_peer`]) as configuration entries
//! are appended, truncated away or installed from a snapshot, so a server added with
//! [`Raft::add_voter`](crate::Raft::add_voter) at an address nobody was configured with is
//! reached; a server gone from both the committed and the latest configuration is dropped
//! ([`Transport::remove_peer`]). Peers configured but never in a configuration are left alone.
//!
//! ```no_run
//! use ringraft::{Config, TcpTransportConfig};
//! use ringraft_net::handshake::ClusterId;
//! use ringraft_net::tcp::TcpConfig;
//! use ringraft_storage::NodeId;
//!
//! let mut tcp = TcpConfig::new(NodeId(1), ClusterId(7), "127.0.0.1:7001".parse()?);
//! tcp.peers.insert(NodeId(2), "127.0.0.1:7002".parse()?);
//! let transport = TcpTransportConfig::new(tcp);
//! // Raft::new(Config::new(NodeId(1)), fsm, log, stable, snapshots, transport)
//! # let _ = (transport, Config::new(NodeId(1)));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use ringraft_net::stream::{PlainTcp, StreamLayer};
use ringraft_net::tcp::{TcpConfig, TcpTransport};
use ringraft_net::transport::Transport;
use std::future::Future;

/// A transport, or what it takes to create one on the node's shard thread.
pub trait IntoTransport: Send + 'static {
    /// Creates the transport. Called once, on the node's shard thread inside its tokio
    /// current-thread runtime, before the node runs; an error fails `Raft::new`.
    fn into_transport(self) -> impl Future<Output = Result<Box<dyn Transport>, String>>;

    /// True if the transport does its work in tasks on the shard's runtime and needs tokio's
    /// I/O driver there. The shard then yields to those tasks after every turn of its loop;
    /// otherwise its runtime has only a timer and the loop yields now and then.
    fn runs_tasks(&self) -> bool {
        false
    }

    /// True if the transport will report a silent peer node (see
    /// [`Transport::reports_silent_peers`]): the node then quiesces when idle.
    fn reports_silent_peers(&self) -> bool {
        false
    }
}

impl<T: Transport + Send + 'static> IntoTransport for T {
    async fn into_transport(self) -> Result<Box<dyn Transport>, String> {
        Ok(Box::new(self))
    }

    fn reports_silent_peers(&self) -> bool {
        Transport::reports_silent_peers(self)
    }
}

/// The TCP transport, bound on the node's shard thread when the node starts.
#[derive(Clone, Debug)]
pub struct TcpTransportConfig<L: StreamLayer = PlainTcp> {
    config: TcpConfig,
    layer: L,
}

impl TcpTransportConfig<PlainTcp> {
    /// Frames straight over TCP.
    pub fn new(config: TcpConfig) -> TcpTransportConfig<PlainTcp> {
        TcpTransportConfig {
            config,
            layer: PlainTcp,
        }
    }
}

impl<L: StreamLayer> TcpTransportConfig<L> {
    /// Frames over `layer` (TLS, for example).
    pub fn with_layer(config: TcpConfig, layer: L) -> TcpTransportConfig<L> {
        TcpTransportConfig { config, layer }
    }

    /// The transport's configuration.
    pub fn config(&self) -> &TcpConfig {
        &self.config
    }
}

impl<L: StreamLayer> IntoTransport for TcpTransportConfig<L> {
    async fn into_transport(self) -> Result<Box<dyn Transport>, String> {
        let transport = TcpTransport::bind_with(self.config, self.layer)
            .await
            .map_err(|e| e.to_string())?;
        Ok(Box::new(transport))
    }

    fn runs_tasks(&self) -> bool {
        true
    }
}
