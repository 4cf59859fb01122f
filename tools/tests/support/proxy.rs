//! A fault-injecting TCP proxy for partitions where network namespaces are not available (not
//! root, no iproute2).
//!
//! ```text
//!  node i (raft 127.0.0.(10+i):R_i) ──dials──► proxy of node j (127.0.0.(10+j):P_j) ──► node j
//!                                              source 127.0.0.(10+i) names node i
//! ```
//!
//! Every node advertises its proxy's address in `--peers` and listens on its own port behind
//! it; the raft transport binds outgoing connections to the node's advertised host (ARCHITECTURE
//! §6), so the proxy of node j knows which node dialed it. A cut between i and j refuses new
//! connections between them (closed right after accept) and shuts down the live ones; healing
//! lets them through again. Only raft traffic goes through the proxies: a follower forwarding a
//! client command to the leader's client port is not cut in this mode.

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Node `id`'s loopback host.
fn host(id: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, 10 + u8::try_from(id).expect("node id below 245"))
}

fn node_of(ip: IpAddr) -> Option<usize> {
    match ip {
        IpAddr::V4(v4) if v4.octets()[..3] == [127, 0, 0] && v4.octets()[3] > 10 => {
            Some(usize::from(v4.octets()[3] - 10))
        }
        _ => None,
    }
}

fn free_port(ip: Ipv4Addr) -> io::Result<u16> {
    Ok(TcpListener::bind((ip, 0))?.local_addr()?.port())
}

#[derive(Default)]
struct Shared {
    /// Cut ordered pairs (from, to).
    cuts: Mutex<BTreeSet<(usize, usize)>>,
    /// Live proxied connections: (from, to, the two sockets).
    live: Mutex<Vec<(usize, usize, TcpStream, TcpStream)>>,
    stop: AtomicBool,
}

impl Shared {
    fn is_cut(&self, from: usize, to: usize) -> bool {
        self.cuts.lock().expect("cuts").contains(&(from, to))
    }
}

/// Addresses of one node behind its proxy.
pub struct ProxiedNode {
    /// What peers dial (the proxy).
    pub advertised_raft: String,
    /// Where the node's raft transport listens.
    pub listen_raft: String,
    /// The node's client port (not proxied).
    pub client: String,
}

/// The proxies of a cluster; stopped when dropped.
pub struct ProxyNet {
    shared: Arc<Shared>,
    pub nodes: Vec<ProxiedNode>,
    threads: Vec<JoinHandle<()>>,
}

impl ProxyNet {
    /// Starts a proxy in front of each of `n` nodes.
    pub fn start(n: usize) -> io::Result<ProxyNet> {
        let shared = Arc::new(Shared::default());
        let mut nodes = Vec::new();
        let mut threads = Vec::new();
        for id in 1..=n {
            let ip = host(id);
            let listener = TcpListener::bind((ip, 0))?;
            listener.set_nonblocking(true)?;
            let target = SocketAddr::new(IpAddr::V4(ip), free_port(ip)?);
            nodes.push(ProxiedNode {
                advertised_raft: listener.local_addr()?.to_string(),
                listen_raft: target.to_string(),
                client: SocketAddr::new(IpAddr::V4(ip), free_port(ip)?).to_string(),
            });
            let shared = shared.clone();
            threads.push(std::thread::spawn(move || {
                accept_loop(&shared, &listener, id, target)
            }));
        }
        Ok(ProxyNet {
            shared,
            nodes,
            threads,
        })
    }

    /// Cuts every node in `a` off from every node in `b` (both directions).
    pub fn partition(&self, a: &[usize], b: &[usize]) {
        let mut cuts = self.shared.cuts.lock().expect("cuts");
        for &x in a {
            for &y in b {
                cuts.insert((x, y));
                cuts.insert((y, x));
            }
        }
        let mut live = self.shared.live.lock().expect("live");
        live.retain(|(from, to, s, t)| {
            if cuts.contains(&(*from, *to)) {
                let _ = s.shutdown(Shutdown::Both);
                let _ = t.shutdown(Shutdown::Both);
                false
            } else {
                true
            }
        });
    }

    /// Removes every cut.
    pub fn heal(&self) {
        self.shared.cuts.lock().expect("cuts").clear();
    }
}

impl Drop for ProxyNet {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        for (_, _, s, t) in self.shared.live.lock().expect("live").drain(..) {
            let _ = s.shutdown(Shutdown::Both);
            let _ = t.shutdown(Shutdown::Both);
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn accept_loop(shared: &Arc<Shared>, listener: &TcpListener, to: usize, target: SocketAddr) {
    while !shared.stop.load(Ordering::Acquire) {
        let (inbound, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(_) => continue,
        };
        // A source that names no node (not bound to a node's host) is never cut.
        let from = node_of(peer.ip()).unwrap_or(0);
        if shared.is_cut(from, to) {
            drop(inbound);
            continue;
        }
        let _ = inbound.set_nonblocking(false);
        let Ok(outbound) = TcpStream::connect_timeout(&target, Duration::from_secs(2)) else {
            continue;
        };
        let _ = inbound.set_nodelay(true);
        let _ = outbound.set_nodelay(true);
        let (Ok(a), Ok(b), Ok(c), Ok(d)) = (
            inbound.try_clone(),
            outbound.try_clone(),
            inbound.try_clone(),
            outbound.try_clone(),
        ) else {
            continue;
        };
        shared.live.lock().expect("live").push((from, to, c, d));
        std::thread::spawn(move || pump(a, b));
        std::thread::spawn(move || pump(outbound, inbound));
    }
}

/// Copies `from` to `to` until either ends, then closes both.
fn pump(mut from: TcpStream, mut to: TcpStream) {
    let _ = io::copy(&mut from, &mut to);
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
