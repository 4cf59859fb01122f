//! Mutual TLS (rustls, ring provider) as a [`StreamLayer`]; feature `tls`.
//!
//! Both sides present a certificate chained to the cluster's CA and verify the other's: a
//! node without a CA-signed certificate cannot even reach the Hello. By default a dialer
//! expects the peer's certificate to name the peer's IP address (the address it dials); use
//! [`TlsLayer::with_server_name`] to expect host names instead.

use crate::stream::{BoxFuture, StreamLayer};
use ringraft_storage::NodeId;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector, TlsStream};

type NameFn = dyn Fn(NodeId, SocketAddr) -> io::Result<ServerName<'static>> + Send + Sync;

/// A mutual-TLS stream layer.
pub struct TlsLayer {
    connector: TlsConnector,
    acceptor: TlsAcceptor,
    server_name: Box<NameFn>,
}

impl TlsLayer {
    /// Mutual TLS trusting `ca` and presenting `chain` / `key` both as client and server.
    pub fn new(
        ca: Vec<CertificateDer<'static>>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<TlsLayer, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for cert in ca {
            roots.add(cert)?;
        }
        let roots = Arc::new(roots);
        let client = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots.clone())
            .with_client_auth_cert(chain.clone(), key.clone_key())?;
        let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let server = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)?;
        Ok(TlsLayer::from_configs(Arc::new(client), Arc::new(server)))
    }

    /// A layer from ready-made rustls configurations (bring your own verifiers).
    pub fn from_configs(client: Arc<ClientConfig>, server: Arc<ServerConfig>) -> TlsLayer {
        TlsLayer {
            connector: TlsConnector::from(client),
            acceptor: TlsAcceptor::from(server),
            server_name: Box::new(|_, addr| Ok(ServerName::IpAddress(addr.ip().into()))),
        }
    }

    /// Chooses the name a peer's certificate must carry.
    pub fn with_server_name(
        mut self,
        name: impl Fn(NodeId, SocketAddr) -> io::Result<ServerName<'static>> + Send + Sync + 'static,
    ) -> TlsLayer {
        self.server_name = Box::new(name);
        self
    }
}

impl StreamLayer for TlsLayer {
    type Stream = TlsStream<TcpStream>;

    fn connect<'a>(
        &'a self,
        peer: NodeId,
        addr: SocketAddr,
        tcp: TcpStream,
    ) -> BoxFuture<'a, io::Result<Self::Stream>> {
        Box::pin(async move {
            let name = (self.server_name)(peer, addr)?;
            let stream = self.connector.connect(name, tcp).await?;
            Ok(TlsStream::Client(stream))
        })
    }

    fn accept<'a>(&'a self, tcp: TcpStream) -> BoxFuture<'a, io::Result<Self::Stream>> {
        Box::pin(async move { Ok(TlsStream::Server(self.acceptor.accept(tcp).await?)) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handshake::ClusterId;
    use crate::message::{Body, Message};
    use crate::tcp::{TcpConfig, TcpTransport};
    use crate::transport::{recv, Transport, TransportEvent};
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    use ringraft_storage::{GroupId, Index, Term};
    use rustls::pki_types::PrivatePkcs8KeyDer;
    use std::time::Duration;

    struct Ca {
        cert: rcgen::Certificate,
        key: KeyPair,
    }

    fn ca() -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("ca");
        Ca { cert, key }
    }

    fn layer(ca: &Ca) -> TlsLayer {
        let params = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &ca.cert, &ca.key).expect("sign");
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        TlsLayer::new(vec![ca.cert.der().clone()], vec![cert.der().clone()], der).expect("tls")
    }

    fn config(id: u64) -> TcpConfig {
        let mut c = TcpConfig::new(NodeId(id), ClusterId(1), "127.0.0.1:0".parse().expect("a"));
        c.backoff_initial = Duration::from_millis(5);
        c
    }

    async fn next(t: &mut TcpTransport<TlsLayer>) -> TransportEvent {
        tokio::time::timeout(Duration::from_secs(30), recv(t))
            .await
            .expect("hang guard")
            .expect("open")
    }

    #[tokio::test]
    async fn nodes_with_certificates_from_the_cluster_ca_talk_over_mutual_tls() {
        let ca = ca();
        let mut a = TcpTransport::bind_with(config(1), layer(&ca))
            .await
            .expect("a");
        let mut b = TcpTransport::bind_with(config(2), layer(&ca))
            .await
            .expect("b");
        a.add_peer(NodeId(2), b.local_address());
        b.add_peer(NodeId(1), a.local_address());
        let hb = Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(1),
            body: Body::Heartbeat {
                leader_commit: Index(0),
                round: 1,
            },
        };
        a.send(GroupId(0), hb.clone()).expect("send");
        loop {
            if let TransportEvent::Message { message, .. } = next(&mut b).await {
                assert_eq!(message, hb);
                break;
            }
        }
        let reply = Message {
            from: NodeId(2),
            to: NodeId(1),
            term: Term(1),
            body: Body::HeartbeatResponse { round: 1 },
        };
        b.send(GroupId(0), reply.clone()).expect("send");
        loop {
            if let TransportEvent::Message { message, .. } = next(&mut a).await {
                assert_eq!(message, reply);
                break;
            }
        }
    }

    #[tokio::test]
    async fn a_node_with_a_certificate_from_another_ca_is_refused() {
        let (ours, theirs) = (ca(), ca());
        let mut a = TcpTransport::bind_with(config(1), layer(&theirs))
            .await
            .expect("a");
        let mut b = TcpTransport::bind_with(config(2), layer(&ours))
            .await
            .expect("b");
        a.add_peer(NodeId(2), b.local_address());
        assert!(matches!(
            next(&mut a).await,
            TransportEvent::PeerDisconnected { .. }
        ));
        assert!(matches!(
            next(&mut b).await,
            TransportEvent::InboundRejected { peer: None, .. }
        ));
    }
}
