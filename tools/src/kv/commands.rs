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

use super::fsm::{Command, KvState};
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
    if let Some(query) = parse_read(&name, &args) {
        return read(node, origin, &args, query).await;
    }
    if let Some(parsed) = parse_write(&name, &args) {
        return match parsed {
            Ok(command) => write(node, origin, &args, command).await,
            Err(reply) => Action::Reply(reply),
        };
    }
    let n = args.len();
    match name.as_str() {
        "PING" => match n {
            1 => Action::Reply(resp::simple("PONG")),
            2 => Action::Reply(resp::bulk(Some(&args[1]))),
            _ => wrong_args(&name),
        },
        "ECHO" if n == 2 => Action::Reply(resp::bulk(Some(&args[1]))),
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

/// A read-only client command.
pub enum Query {
    /// `GET key`.
    Get(Vec<u8>),
    /// `EXISTS key...`.
    Exists(Vec<Vec<u8>>),
    /// `MGET key...`.
    MGet(Vec<Vec<u8>>),
}

impl Query {
    /// The reply, read from `state`.
    fn answer(&self, state: &KvState) -> Vec<u8> {
        match self {
            Query::Get(key) => resp::bulk(state.data.get(key).map(|v| &v[..])),
            Query::Exists(keys) => {
                resp::integer(keys.iter().filter(|k| state.data.contains_key(*k)).count() as i64)
            }
            Query::MGet(keys) => {
                let values: Vec<_> = keys.iter().map(|k| state.data.get(k).cloned()).collect();
                resp::bulk_array(&values)
            }
        }
    }
}

/// The query, if `args` (whose command is `name`, upper-cased) is a well-formed read.
fn parse_read(name: &str, args: &[Vec<u8>]) -> Option<Query> {
    let n = args.len();
    match name {
        "GET" if n == 2 => Some(Query::Get(args[1].clone())),
        "EXISTS" if n >= 2 => Some(Query::Exists(args[1..].to_vec())),
        "MGET" if n >= 2 => Some(Query::MGet(args[1..].to_vec())),
        _ => None,
    }
}

/// The command, if `args` (whose command is `name`, upper-cased) is a well-formed write; the
/// error reply if it is a write with bad options; `None` if it is no write (or has the wrong
/// number of arguments, which [`execute`] answers).
fn parse_write(name: &str, args: &[Vec<u8>]) -> Option<Result<Command, Vec<u8>>> {
    let n = args.len();
    let command = match name {
        "SET" if n >= 3 => {
            let mut nx = false;
            let mut xx = false;
            for option in &args[3..] {
                match upper(option).as_str() {
                    "NX" => nx = true,
                    "XX" => xx = true,
                    _ => return Some(Err(resp::error("ERR syntax error"))),
                }
            }
            if nx && xx {
                return Some(Err(resp::error("ERR syntax error")));
            }
            Command::Set {
                key: args[1].clone(),
                value: args[2].clone(),
                nx,
                xx,
            }
        }
        "DEL" if n >= 2 => Command::Del {
            keys: args[1..].to_vec(),
        },
        "INCR" if n == 2 => Command::IncrBy {
            key: args[1].clone(),
            by: 1,
        },
        "INCRBY" if n == 3 => {
            let Some(by) = parse_i64(&args[2]) else {
                return Some(Err(resp::error(
                    "ERR value is not an integer or out of range",
                )));
            };
            Command::IncrBy {
                key: args[1].clone(),
                by,
            }
        }
        "CAS" if n == 4 => Command::Cas {
            key: args[1].clone(),
            expected: args[2].clone(),
            new: args[3].clone(),
        },
        _ => return None,
    };
    Some(Ok(command))
}

/// How a request of a pipeline is run.
enum Step {
    Read(Query),
    Write(Command),
    Other,
}

impl Step {
    /// Whether this request runs together with a run that began with `first`.
    fn joins(&self, first: &Step) -> bool {
        matches!(
            (self, first),
            (Step::Read(_), Step::Read(_)) | (Step::Write(_), Step::Write(_))
        )
    }
}

fn step(args: &[Vec<u8>]) -> Step {
    let Some(name) = args.first().map(|a| upper(a)) else {
        return Step::Other;
    };
    if let Some(query) = parse_read(&name, args) {
        return Step::Read(query);
    }
    match parse_write(&name, args) {
        Some(Ok(command)) => Step::Write(command),
        _ => Step::Other,
    }
}

/// Executes the requests a client sent together (a pipeline), answering in order: each run of
/// consecutive writes goes to Raft as one `apply_batch`, each run of consecutive reads shares
/// one read point taken after the writes before it were applied; anything else runs alone.
pub async fn execute_pipeline(node: &Node, requests: Vec<Vec<Vec<u8>>>) -> Vec<Action> {
    let mut runs: Vec<Vec<(Step, Vec<Vec<u8>>)>> = Vec::new();
    for args in requests {
        let next = step(&args);
        match runs.last_mut() {
            Some(run) if next.joins(&run[0].0) => run.push((next, args)),
            _ => runs.push(vec![(next, args)]),
        }
    }
    let mut actions = Vec::new();
    for run in runs {
        let (mut reads, mut writes) = (Vec::new(), Vec::new());
        for (step, args) in run {
            match step {
                Step::Read(query) => reads.push((args, query)),
                Step::Write(command) => writes.push((args, command)),
                Step::Other => actions.push(execute(node, args, Origin::Client).await),
            }
        }
        // A run is all reads, all writes or one other request.
        if !reads.is_empty() {
            actions.extend(read_batch(node, reads).await);
        }
        if !writes.is_empty() {
            actions.extend(write_batch(node, writes).await);
        }
    }
    actions
}

/// Why a read point could not be had.
enum ReadFailure {
    NotLeader,
    Reply(Vec<u8>),
}

/// Waits until reads at the configured consistency may be served from this node's state.
async fn read_point(node: &Node) -> Result<(), ReadFailure> {
    let raft = &node.raft;
    let point = match node.options.read_mode {
        ReadMode::Stale => return Ok(()),
        ReadMode::Index => raft.read_index(ENQUEUE_TIMEOUT),
        ReadMode::Lease => raft.lease_read(ENQUEUE_TIMEOUT),
    };
    let index = match tokio::time::timeout(node.options.request_timeout, point).await {
        Err(_) => return Err(ReadFailure::Reply(resp::error("ERR read timed out"))),
        Ok(Err(ReadError::NotLeader { .. })) => return Err(ReadFailure::NotLeader),
        Ok(Err(e)) => return Err(ReadFailure::Reply(resp::error(&format!("ERR read: {e}")))),
        Ok(Ok(index)) => index,
    };
    // `read_index` resolves once this node applied `index`; waiting here as well keeps the
    // read correct should that ever change.
    let mut waited = Duration::ZERO;
    while raft.applied_index() < index {
        if waited > node.options.request_timeout {
            return Err(ReadFailure::Reply(resp::error(
                "ERR read timed out waiting for the state machine",
            )));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        waited += Duration::from_millis(1);
    }
    Ok(())
}

/// A read at the configured consistency.
async fn read(node: &Node, origin: Origin, args: &[Vec<u8>], query: Query) -> Action {
    match read_point(node).await {
        Ok(()) => Action::Reply(query.answer(&node.state.lock())),
        Err(ReadFailure::NotLeader) => redirect(node, origin, args),
        Err(ReadFailure::Reply(reply)) => Action::Reply(reply),
    }
}

/// Client reads sharing one read point.
async fn read_batch(node: &Node, batch: Vec<(Vec<Vec<u8>>, Query)>) -> Vec<Action> {
    match read_point(node).await {
        Ok(()) => {
            let state = node.state.lock();
            batch
                .iter()
                .map(|(_, query)| Action::Reply(query.answer(&state)))
                .collect()
        }
        Err(ReadFailure::NotLeader) => batch
            .iter()
            .map(|(args, _)| redirect(node, Origin::Client, args))
            .collect(),
        Err(ReadFailure::Reply(reply)) => {
            batch.iter().map(|_| Action::Reply(reply.clone())).collect()
        }
    }
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

/// Client writes replicated as one batch of entries, answered in order.
async fn write_batch(node: &Node, batch: Vec<(Vec<Vec<u8>>, Command)>) -> Vec<Action> {
    let encoded = batch.iter().map(|(_, command)| command.encode()).collect();
    let proposal = node.raft.apply_batch(encoded, ENQUEUE_TIMEOUT);
    match tokio::time::timeout(node.options.request_timeout, proposal).await {
        Err(_) => batch
            .iter()
            .map(|_| err("UNKNOWN timed out after the command was proposed"))
            .collect(),
        Ok(Ok(applied)) if applied.responses.len() == batch.len() => applied
            .responses
            .into_iter()
            .map(|r| Action::Reply(r.to_vec()))
            .collect(),
        Ok(Ok(applied)) => batch
            .iter()
            .map(|_| {
                err(&format!(
                    "UNKNOWN {} responses for {} commands",
                    applied.responses.len(),
                    batch.len()
                ))
            })
            .collect(),
        Ok(Err(e)) => batch
            .iter()
            .map(|(args, _)| apply_error(node, Origin::Client, args, e.clone()))
            .collect(),
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
