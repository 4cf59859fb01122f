//! The RESP server: a tokio current-thread runtime on its own thread, one task per client
//! connection, requests on a connection answered in order. Requests that arrive together on a
//! connection (a client's pipeline) are executed together: consecutive writes as one
//! `apply_batch`, consecutive reads on one read point (see `commands::runs`); on a follower,
//! such a run is forwarded to the leader as one pipeline.
//!
//! A malformed request gets `-ERR Protocol error: ...` and its connection is closed; nothing a
//! client sends can panic the server. A follower forwards commands to the leader over one
//! connection per client connection (opened on first use, re-opened when the leader changes).

use super::commands::{execute, runs, Action, Origin};
use super::node::Node;
use super::resp::{self, parse_reply, parse_request};
use ringraft::RaftState;
use ringraft_storage::NodeId;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Starts the server thread on `listener`; it runs until `stop` is set.
pub fn spawn(
    node: Arc<Node>,
    listener: std::net::TcpListener,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name(format!("ringraft-kv-server-{}", node.options.id))
        .spawn(move || {
            runtime.block_on(async move {
                let listener = match TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("ringraft-kv: client listener: {e}");
                        return;
                    }
                };
                accept_loop(node, listener, stop).await;
            });
            // Dropping the runtime here cancels every connection task.
        })
}

async fn accept_loop(node: Arc<Node>, listener: TcpListener, stop: Arc<AtomicBool>) {
    let stopped = async {
        while !stop.load(Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve_connection(node.clone(), stream));
                }
                Err(e) => {
                    // Out of file descriptors, say: back off instead of spinning.
                    eprintln!("ringraft-kv: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
}

/// Largest request (all its arguments together) a connection may send.
const MAX_REQUEST_BYTES: usize = 2 * resp::MAX_BULK_BYTES;

async fn serve_connection(node: Arc<Node>, mut stream: TcpStream) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    let mut forwarder = Forwarder::default();
    loop {
        // Answer every whole request received, then write the replies together. Requests
        // that arrived together (a pipeline) run together: consecutive writes as one batch.
        let mut requests = Vec::new();
        let mut consumed = 0;
        let mut malformed = None;
        loop {
            match parse_request(&buf[consumed..]) {
                Ok(None) => break,
                Ok(Some((args, used))) => {
                    consumed += used;
                    if !args.is_empty() {
                        requests.push(args);
                    }
                }
                Err(e) => {
                    malformed = Some(e);
                    break;
                }
            }
        }
        buf.drain(..consumed);
        if !requests.is_empty() {
            // Requests for the leader are forwarded together, as a pipeline, before the next
            // run executes here (so a later read here cannot overtake an earlier write).
            let mut to_forward = Vec::new();
            for run in runs(requests) {
                forward_all(&node, &mut forwarder, &mut to_forward, &mut out).await;
                for action in run.execute(&node).await {
                    match action {
                        Action::Forward(args) => to_forward.push(args),
                        Action::Reply(reply) => {
                            forward_all(&node, &mut forwarder, &mut to_forward, &mut out).await;
                            out.extend_from_slice(&reply);
                        }
                        Action::Replied(reply) => {
                            forward_all(&node, &mut forwarder, &mut to_forward, &mut out).await;
                            out.extend_from_slice(&reply);
                        }
                    }
                }
            }
            forward_all(&node, &mut forwarder, &mut to_forward, &mut out).await;
        }
        if let Some(e) = malformed {
            out.extend_from_slice(&resp::error(&format!("ERR {e}")));
            let _ = stream.write_all(&out).await;
            return;
        }
        if !out.is_empty() {
            if stream.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
        if buf.len() > MAX_REQUEST_BYTES {
            let _ = stream
                .write_all(&resp::error("ERR Protocol error: request too large"))
                .await;
            return;
        }
        let mut chunk = [0u8; 16 * 1024];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Forwards the `requests` gathered so far (if any) and appends their replies to `out`.
async fn forward_all(
    node: &Node,
    forwarder: &mut Forwarder,
    requests: &mut Vec<Vec<Vec<u8>>>,
    out: &mut Vec<u8>,
) {
    if requests.is_empty() {
        return;
    }
    for reply in forwarder.forward(node, std::mem::take(requests)).await {
        out.extend_from_slice(&reply);
    }
}

/// One client connection's link to the leader.
#[derive(Default)]
struct Forwarder {
    link: Option<(String, TcpStream)>,
    buf: Vec<u8>,
}

impl Forwarder {
    /// Sends `requests` to the leader together (a pipeline) and returns its replies, in order;
    /// where a reply cannot be had, an error reply saying whether the command may have
    /// happened.
    async fn forward(&mut self, node: &Node, requests: Vec<Vec<Vec<u8>>>) -> Vec<Vec<u8>> {
        let all = |reply: Vec<u8>| vec![reply; requests.len()];
        let address = match wait_for_leader(node).await {
            Leader::Unknown => return all(resp::error("ERR no leader known; try again")),
            // This node won an election meanwhile.
            Leader::Me => {
                let mut replies = Vec::with_capacity(requests.len());
                for args in requests {
                    replies.push(
                        match Box::pin(execute(node, args, Origin::Forwarded)).await {
                            Action::Reply(r) => r,
                            Action::Replied(r) => r.to_vec(),
                            Action::Forward(_) => resp::error("ERR not the leader any more"),
                        },
                    );
                }
                return replies;
            }
            Leader::At(address) => address,
        };
        if self.link.as_ref().map(|(a, _)| a) != Some(&address) {
            self.link = None;
            let target: SocketAddr = match address.parse() {
                Ok(a) => a,
                Err(_) => return all(resp::error("ERR leader has no valid client address")),
            };
            let timeout = node.options.request_timeout;
            match tokio::time::timeout(timeout, node.connect_from_client_host(target)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    self.link = Some((address.clone(), s));
                    self.buf.clear();
                }
                _ => {
                    let reply = resp::error(&format!("ERR cannot reach the leader at {address}"));
                    return all(reply);
                }
            }
        }
        let Some((_, stream)) = self.link.as_mut() else {
            return all(resp::error("ERR cannot reach the leader"));
        };
        let mut pipeline = Vec::new();
        for args in &requests {
            let mut request = vec![b"RAFT.FWD".to_vec()];
            request.extend(args.iter().cloned());
            pipeline.extend(resp::encode_request(&request));
        }
        // A leader that stalls (paused, partitioned) is replaced by an election well before
        // the timeout: stop waiting for it as soon as this node hears of another leader.
        let forwarded_to = node.raft.leader();
        let deposed = async {
            while node.raft.leader() == forwarded_to {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let mut replies = Vec::with_capacity(requests.len());
        let exchanged = tokio::time::timeout(
            node.options.request_timeout * 2,
            exchange(
                stream,
                &pipeline,
                &mut self.buf,
                requests.len(),
                &mut replies,
            ),
        );
        let outcome = tokio::select! {
            outcome = exchanged => Some(outcome),
            () = deposed => None,
        };
        let failure = match outcome {
            Some(Ok(Ok(()))) => return replies,
            None => resp::error("UNKNOWN the leader changed while the request was forwarded"),
            Some(Ok(Err(e))) => {
                resp::error(&format!("UNKNOWN forwarding to the leader failed: {e}"))
            }
            Some(Err(_)) => resp::error("UNKNOWN forwarding to the leader timed out"),
        };
        // The replies that arrived stand; the rest may or may not have happened.
        self.link = None;
        replies.resize(requests.len(), failure);
        replies
    }
}

enum Leader {
    Unknown,
    Me,
    At(String),
}

/// The leader, waiting up to a few election timeouts for one to be known.
async fn wait_for_leader(node: &Node) -> Leader {
    let step = Duration::from_millis(20);
    let mut waited = Duration::ZERO;
    loop {
        if node.raft.state() == RaftState::Leader {
            return Leader::Me;
        }
        if node.raft.leader() != Some(NodeId(node.options.id)) {
            if let Some(address) = node.leader_client_address() {
                return Leader::At(address);
            }
        }
        if waited > node.options.election_timeout * 6 {
            return Leader::Unknown;
        }
        tokio::time::sleep(step).await;
        waited += step;
    }
}

/// Writes `request` (`count` requests) and reads their replies into `replies`, each as its raw
/// bytes.
async fn exchange(
    stream: &mut TcpStream,
    request: &[u8],
    buf: &mut Vec<u8>,
    count: usize,
    replies: &mut Vec<Vec<u8>>,
) -> io::Result<()> {
    stream.write_all(request).await?;
    while replies.len() < count {
        match parse_reply(buf) {
            Ok(Some((_, used))) => {
                replies.push(buf.drain(..used).collect());
                continue;
            }
            Ok(None) => {}
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the leader closed the connection",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(())
}
