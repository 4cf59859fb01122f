//! What each client command does, and how failures map to replies.
//!
//! Replies to failures say whether the command happened:
//! - `-NOTLEADER [leader client address]` and `-ERR ...`: it certainly did not take effect;
//! - `-UNKNOWN ...`: it may or may not have (leadership lost after the proposal, a timeout
//!   after the proposal was made, the node shutting down, a forwarded request whose
//!   connection failed after it was sent). A client must not assume either way.
//!
//! A follower forwards a command to the leader as `RAFT.FWD <command...>`; a forwarded command
//! is never forwarded again (so a stale leader hint cannot make a loop): it gets
//! `-NOTLEADER`.

use super::fsm::Command;
use super::node::Node;
use super::options::ReadMode;
use super::resp;
use ringraft::{ApplyError, MembershipError, RaftState, ReadError, TransferError};
use ringraft_storage::{Index, NodeId};
use std::time::Duration;

/// How long a request may wait to enter the node's submission queue. The wait blocks the
/// server's runtime thread (ringraft's submit is blocking), so it is short; a full queue
/// answers `-ERR busy`, nothing having been proposed.
const ENQUEUE_TIMEOUT: Duration = Duration::from_millis(20);

/// Where a request came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A client connected to this node.
    Client,
    /// Another node forwarded it (never forward again).
    Forwarded,
}

/// What to do with a command.
pub enum Action {
    /// Answer with these reply bytes.
    Reply(Vec<u8>),
    /// Send these arguments to the leader and relay its reply.
    Forward(Vec<Vec<u8>>),
}

fn upper(a: &[u8]) -> String {
    String::from_utf8_lossy(a).to_ascii_uppercase()
}

fn wrong_args(name: &str) -> Action {
    Action::Reply(resp::error(&format!(
        "ERR wrong number of arguments for '{}' command",
        name.to_ascii_lowercase()
    )))
}

fn err(text: &str) -> Action {
    Action::Reply(resp::error(text))
}

fn not_leader(node: &Node) -> Vec<u8> {
    match node.leader_client_address() {
        Some(a) if node.raft.leader() != Some(NodeId(node.options.id)) => {
            resp::error(&format!("NOTLEADER {a}"))
        }
        _ => resp::error("NOTLEADER"),
    }
}

/// Not the leader: forward (a client's command, with forwarding on) or say so.
fn redirect(node: &Node, origin: Origin, args: &[Vec<u8>]) -> Action {
    if origin == Origin::Client && node.options.forward {
        Action::Forward(args.to_vec())
    } else {
        Action::Reply(not_leader(node))
    }
}

fn parse_i64(a: &[u8]) -> Option<i64> {
    std::str::from_utf8(a).ok()?.parse().ok()
}

/// Executes one request.
pub async fn execute(node: &Node, args: Vec<Vec<u8>>, origin: Origin) -> Action {
    let Some(name) = args.first().map(|a| upper(a)) else {
        return Action::Reply(Vec::new());
    };
    if name == "RAFT.FWD" {
        if origin == Origin::Forwarded || args.len() < 2 {
            return err("ERR RAFT.FWD is only for nodes forwarding a command");
        }
        return Box::pin(execute(node, args[1..].to_vec(), Origin::Forwarded)).await;
    }
    let n = args.len();
    match name.as_str() {
        "PING" => match n {
            1 => Action::Reply(resp::simple("PONG")),
            2 => Action::Reply(resp::bulk(Some(&args[1]))),
            _ => wrong_args(&name),
        },
        "ECHO" if n == 2 => Action::Reply(resp::bulk(Some(&args[1]))),
        "GET" if n == 2 => {
            read(node, origin, &args, |s| {
                resp::bulk(s.data.get(&args[1]).map(|v| &v[..]))
            })
            .await
        }
        "EXISTS" if n >= 2 => {
            read(node, origin, &args, |s| {
                resp::integer(args[1..].iter().filter(|k| s.data.contains_key(*k)).count() as i64)
            })
            .await
        }
        "MGET" if n >= 2 => {
            read(node, origin, &args, |s| {
                let values: Vec<_> = args[1..].iter().map(|k| s.data.get(k).cloned()).collect();
                resp::bulk_array(&values)
            })
            .await
        }
        "SET" if n >= 3 => {
            let mut nx = false;
            let mut xx = false;
            for option in &args[3..] {
                match upper(option).as_str() {
                    "NX" => nx = true,
                    "XX" => xx = true,
                    _ => return err("ERR syntax error"),
                }
            }
            if nx && xx {
                return err("ERR syntax error");
            }
            let command = Command::Set {
                key: args[1].clone(),
                value: args[2].clone(),
                nx,
                xx,
            };
            write(node, origin, &args, command).await
        }
        "DEL" if n >= 2 => {
            let keys = args[1..].to_vec();
            write(node, origin, &args, Command::Del { keys }).await
        }
        "INCR" if n == 2 => {
            let command = Command::IncrBy {
                key: args[1].clone(),
                by: 1,
            };
            write(node, origin, &args, command).await
        }
        "INCRBY" if n == 3 => {
            let Some(by) = parse_i64(&args[2]) else {
                return err("ERR value is not an integer or out of range");
            };
            let command = Command::IncrBy {
                key: args[1].clone(),
                by,
            };
            write(node, origin, &args, command).await
        }
        "CAS" if n == 4 => {
            let command = Command::Cas {
                key: args[1].clone(),
                expected: args[2].clone(),
                new: args[3].clone(),
            };
            write(node, origin, &args, command).await
        }
        "RAFT.INFO" if n == 1 => Action::Reply(resp::bulk(Some(node.info().as_bytes()))),
        "RAFT.SNAPSHOT" if n == 1 => {
            let outcome = node.raft.snapshot().await;
            Action::Reply(match outcome {
                Ok(meta) => resp::simple(&format!("OK {}", meta.last.index.0)),
                Err(e) => resp::error(&format!("ERR snapshot: {e}")),
            })
        }
        "RAFT.ADD" if n == 4 || n == 5 => add(node, origin, &args).await,
        "RAFT.REMOVE" if n == 2 => {
            let Some(id) = parse_i64(&args[1]).and_then(|i| u64::try_from(i).ok()) else {
                return err("ERR invalid node id");
            };
            let future = node
                .raft
                .remove_server(NodeId(id), Index(0), ENQUEUE_TIMEOUT);
            membership(node, origin, &args, future).await
        }
        "RAFT.TRANSFER" if n <= 2 => {
            let future = match args.get(1) {
                None => node.raft.transfer_leadership(),
                Some(id) => match parse_i64(id).and_then(|i| u64::try_from(i).ok()) {
                    Some(id) => node.raft.transfer_leadership_to(NodeId(id)),
                    None => return err("ERR invalid node id"),
                },
            };
            match tokio::time::timeout(node.options.request_timeout, future).await {
                Err(_) => Action::Reply(resp::error("UNKNOWN transfer timed out")),
                Ok(Ok(())) => Action::Reply(resp::simple("OK")),
                Ok(Err(TransferError::NotLeader { .. })) => redirect(node, origin, &args),
                Ok(Err(e)) => Action::Reply(resp::error(&format!("ERR {e}"))),
            }
        }
        "GET" | "ECHO" | "EXISTS" | "MGET" | "SET" | "DEL" | "INCR" | "INCRBY" | "CAS"
        | "RAFT.INFO" | "RAFT.SNAPSHOT" | "RAFT.ADD" | "RAFT.REMOVE" | "RAFT.TRANSFER" => {
            wrong_args(&name)
        }
        // redis-benchmark reads `save` and `appendonly` with CONFIG GET: every setting is
        // reported empty.
        "CONFIG" if n == 3 && upper(&args[1]) == "GET" => {
            Action::Reply(resp::bulk_array(&[Some(args[2].clone()), Some(Vec::new())]))
        }
        // redis-cli asks for these at start; an empty answer is enough for it.
        "COMMAND" | "CLIENT" | "CONFIG" => Action::Reply(b"*0\r\n".to_vec()),
        _ => err(&format!(
            "ERR unknown command '{}'",
            String::from_utf8_lossy(&args[0])
        )),
    }
}

/// A read at the configured consistency.
async fn read(
    node: &Node,
    origin: Origin,
    args: &[Vec<u8>],
    answer: impl FnOnce(&super::fsm::KvState) -> Vec<u8>,
) -> Action {
    let raft = &node.raft;
    let point = match node.options.read_mode {
        ReadMode::Stale => None,
        ReadMode::Index => Some(raft.read_index(ENQUEUE_TIMEOUT)),
        ReadMode::Lease => Some(raft.lease_read(ENQUEUE_TIMEOUT)),
    };
    if let Some(point) = point {
        let index = match tokio::time::timeout(node.options.request_timeout, point).await {
            Err(_) => return err("ERR read timed out"),
            Ok(Err(ReadError::NotLeader { .. })) => return redirect(node, origin, args),
            Ok(Err(e)) => return Action::Reply(resp::error(&format!("ERR read: {e}"))),
            Ok(Ok(index)) => index,
        };
        // `read_index` resolves once this node applied `index`; waiting here as well keeps
        // the read correct should that ever change.
        let mut waited = Duration::ZERO;
        while raft.applied_index() < index {
            if waited > node.options.request_timeout {
                return err("ERR read timed out waiting for the state machine");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
            waited += Duration::from_millis(1);
        }
    }
    Action::Reply(answer(&node.state.lock()))
}

/// A replicated write.
async fn write(node: &Node, origin: Origin, args: &[Vec<u8>], command: Command) -> Action {
    let proposal = node.raft.apply(command.encode(), ENQUEUE_TIMEOUT);
    match tokio::time::timeout(node.options.request_timeout, proposal).await {
        Err(_) => err("UNKNOWN timed out after the command was proposed"),
        Ok(Ok(applied)) => Action::Reply(applied.response.to_vec()),
        Ok(Err(e)) => apply_error(node, origin, args, e),
    }
}

fn apply_error(node: &Node, origin: Origin, args: &[Vec<u8>], e: ApplyError) -> Action {
    match e {
        ApplyError::NotLeader { .. } => redirect(node, origin, args),
        ApplyError::LeadershipLost | ApplyError::Shutdown => err(&format!("UNKNOWN {e}")),
        ApplyError::EnqueueTimeout => err("ERR busy: the node's submission queue is full"),
        e => err(&format!("ERR {e}")),
    }
}

/// `RAFT.ADD id raft-addr client-addr [nonvoter]`.
async fn add(node: &Node, origin: Origin, args: &[Vec<u8>]) -> Action {
    let Some(id) = parse_i64(&args[1]).and_then(|i| u64::try_from(i).ok()) else {
        return err("ERR invalid node id");
    };
    let text = |a: &[u8]| String::from_utf8_lossy(a).into_owned();
    let (raft_address, client_address) = (text(&args[2]), text(&args[3]));
    if raft_address.parse::<std::net::SocketAddr>().is_err()
        || client_address.parse::<std::net::SocketAddr>().is_err()
    {
        return err("ERR addresses must be IP:PORT");
    }
    let nonvoter = match args.get(4).map(|a| upper(a)) {
        None => false,
        Some(s) if s == "NONVOTER" => true,
        Some(_) => return err("ERR syntax error: expected NONVOTER"),
    };
    if node.raft.state() != RaftState::Leader {
        return redirect(node, origin, args);
    }
    // Record client addresses first (the initial members' too, for nodes that joined without
    // --peers); then change the configuration (the node tells its transport where the new
    // member is as the configuration entry is appended).
    let mut members = node.unrecorded_initial_members();
    members.push((id, raft_address.clone(), client_address));
    for (id, raft, client) in members {
        if let Action::Reply(reply) =
            write(node, origin, args, Command::Member { id, raft, client }).await
        {
            if reply.first() == Some(&b'-') {
                return Action::Reply(reply);
            }
        } else {
            return Action::Reply(not_leader(node));
        }
    }
    let future = if nonvoter {
        node.raft
            .add_nonvoter(NodeId(id), raft_address, Index(0), ENQUEUE_TIMEOUT)
    } else {
        node.raft
            .add_voter(NodeId(id), raft_address, Index(0), ENQUEUE_TIMEOUT)
    };
    membership(node, origin, args, future).await
}

async fn membership(
    node: &Node,
    origin: Origin,
    args: &[Vec<u8>],
    future: ringraft::RaftFuture<Index, MembershipError>,
) -> Action {
    match tokio::time::timeout(node.options.request_timeout, future).await {
        Err(_) => err("UNKNOWN timed out after the change was proposed"),
        Ok(Ok(index)) => Action::Reply(resp::simple(&format!("OK {}", index.0))),
        Ok(Err(MembershipError::NotLeader { .. })) => redirect(node, origin, args),
        Ok(Err(e @ (MembershipError::LeadershipLost | MembershipError::Shutdown))) => {
            err(&format!("UNKNOWN {e}"))
        }
        Ok(Err(e)) => err(&format!("ERR {e}")),
    }
}
