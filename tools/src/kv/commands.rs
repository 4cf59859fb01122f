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
    /// Answer with these reply bytes (the state machine's response, as Raft returned it).
    Replied(bytes::Bytes),
    /// Send these arguments to the leader and relay its reply.
    Forward(Vec<Vec<u8>>),
}

fn upper(a: &[u8]) -> String {
    String::from_utf8_lossy(a).to_ascii_uppercase()
}

/// A command's name, upper-cased without allocating (a request's hot path); names longer than
/// any command this service knows are empty.
struct Name {
    bytes: [u8; 16],
    len: usize,
}

impl Name {
    fn of(a: &[u8]) -> Name {
        let mut bytes = [0u8; 16];
        let len = if a.len() <= bytes.len() { a.len() } else { 0 };
        bytes[..len].copy_from_slice(&a[..len]);
        bytes.make_ascii_uppercase();
        Name { bytes, len }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
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
    let Some(name) = args.first().map(|a| Name::of(a)) else {
        return Action::Reply(Vec::new());
    };
    let name = name.as_str();
    if name == "RAFT.FWD" {
        if origin == Origin::Forwarded || args.len() < 2 {
            return err("ERR RAFT.FWD is only for nodes forwarding a command");
        }
        return Box::pin(execute(node, args[1..].to_vec(), Origin::Forwarded)).await;
    }
    let args = match step(args) {
        Step::Read(query) => return read(node, origin, query).await,
        Step::Write(command) => return write(node, origin, command).await,
        Step::Invalid(reply) => return Action::Reply(reply),
        Step::Other(args) => args,
    };
    let n = args.len();
    match name {
        "PING" => match n {
            1 => Action::Reply(resp::simple("PONG")),
            2 => Action::Reply(resp::bulk(Some(&args[1]))),
            _ => wrong_args(name),
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
            wrong_args(name)
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
    /// The request, for forwarding to the leader.
    fn to_args(&self) -> Vec<Vec<u8>> {
        let (name, keys) = match self {
            Query::Get(key) => (&b"GET"[..], std::slice::from_ref(key)),
            Query::Exists(keys) => (&b"EXISTS"[..], &keys[..]),
            Query::MGet(keys) => (&b"MGET"[..], &keys[..]),
        };
        std::iter::once(name.to_vec())
            .chain(keys.iter().cloned())
            .collect()
    }

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

/// The request a client command is, for forwarding to the leader; `None` for the commands
/// no client sends (`Member`, which only `RAFT.ADD` proposes).
fn command_args(command: &Command) -> Option<Vec<Vec<u8>>> {
    let word = |w: &str| w.as_bytes().to_vec();
    Some(match command {
        Command::Set { key, value, nx, xx } => {
            let mut args = vec![word("SET"), key.clone(), value.clone()];
            args.extend(nx.then(|| word("NX")));
            args.extend(xx.then(|| word("XX")));
            args
        }
        Command::Del { keys } => std::iter::once(word("DEL"))
            .chain(keys.iter().cloned())
            .collect(),
        Command::IncrBy { key, by } => vec![word("INCRBY"), key.clone(), word(&by.to_string())],
        Command::Cas { key, expected, new } => {
            vec![word("CAS"), key.clone(), expected.clone(), new.clone()]
        }
        Command::Member { .. } => return None,
    })
}

/// How a request is run.
enum Step {
    /// A well-formed read.
    Read(Query),
    /// A well-formed write.
    Write(Command),
    /// A write with bad options: this error reply.
    Invalid(Vec<u8>),
    /// Anything else (including reads and writes with the wrong number of arguments, which
    /// [`execute`] answers).
    Other(Vec<Vec<u8>>),
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

/// What `args` is; reads and writes take their arguments without copying them.
fn step(args: Vec<Vec<u8>>) -> Step {
    let Some(name) = args.first().map(|a| Name::of(a)) else {
        return Step::Other(args);
    };
    let n = args.len();
    let mut it = args.into_iter();
    let command = it.next().unwrap_or_default();
    let mut next = || it.next().unwrap_or_default();
    match (name.as_str(), n) {
        ("GET", 2) => Step::Read(Query::Get(next())),
        ("EXISTS", 2..) => Step::Read(Query::Exists(it.collect())),
        ("MGET", 2..) => Step::Read(Query::MGet(it.collect())),
        ("SET", 3..) => {
            let (key, value) = (next(), next());
            let mut nx = false;
            let mut xx = false;
            for option in it {
                match upper(&option).as_str() {
                    "NX" => nx = true,
                    "XX" => xx = true,
                    _ => return Step::Invalid(resp::error("ERR syntax error")),
                }
            }
            if nx && xx {
                return Step::Invalid(resp::error("ERR syntax error"));
            }
            Step::Write(Command::Set { key, value, nx, xx })
        }
        ("DEL", 2..) => Step::Write(Command::Del { keys: it.collect() }),
        ("INCR", 2) => Step::Write(Command::IncrBy { key: next(), by: 1 }),
        ("INCRBY", 3) => {
            let key = next();
            match parse_i64(&next()) {
                Some(by) => Step::Write(Command::IncrBy { key, by }),
                None => Step::Invalid(resp::error("ERR value is not an integer or out of range")),
            }
        }
        ("CAS", 4) => Step::Write(Command::Cas {
            key: next(),
            expected: next(),
            new: next(),
        }),
        _ => Step::Other(std::iter::once(command).chain(it).collect()),
    }
}

/// Requests of a pipeline that execute together: consecutive reads, or consecutive writes, of
/// one origin; or one other request.
pub struct Run {
    origin: Origin,
    steps: Vec<Step>,
}

/// Groups the requests a client (or a forwarding follower) sent together, a pipeline, into
/// runs, in order: each run of consecutive writes goes to Raft as one `apply_batch`, each run
/// of consecutive reads shares one read point taken after the writes before it were applied;
/// anything else runs alone.
pub fn runs(requests: Vec<Vec<Vec<u8>>>) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for args in requests {
        let (origin, args) = forwarded(args);
        let next = step(args);
        match runs.last_mut() {
            Some(run) if run.origin == origin && next.joins(&run.steps[0]) => run.steps.push(next),
            _ => runs.push(Run {
                origin,
                steps: vec![next],
            }),
        }
    }
    runs
}

impl Run {
    /// Executes the run: one action per request, in order.
    pub async fn execute(self, node: &Node) -> Vec<Action> {
        let (mut reads, mut writes, mut actions) = (Vec::new(), Vec::new(), Vec::new());
        for step in self.steps {
            match step {
                Step::Read(query) => reads.push(query),
                Step::Write(command) => writes.push(command),
                Step::Invalid(reply) => actions.push(Action::Reply(reply)),
                Step::Other(args) => actions.push(execute(node, args, self.origin).await),
            }
        }
        // A run is all reads, all writes or one other request.
        if !reads.is_empty() {
            actions.extend(read_batch(node, self.origin, reads).await);
        }
        if !writes.is_empty() {
            actions.extend(write_batch(node, self.origin, writes).await);
        }
        actions
    }
}

/// A request's origin, and its arguments without the `RAFT.FWD` a forwarding node put before
/// them (a pipeline a follower forwards is executed as one, like a client's). A malformed
/// `RAFT.FWD` is left for [`execute`] to refuse.
fn forwarded(mut args: Vec<Vec<u8>>) -> (Origin, Vec<Vec<u8>>) {
    let is_fwd = |a: &[u8]| Name::of(a).as_str() == "RAFT.FWD";
    if args.len() >= 2 && is_fwd(&args[0]) && !is_fwd(&args[1]) {
        args.remove(0);
        (Origin::Forwarded, args)
    } else {
        (Origin::Client, args)
    }
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
async fn read(node: &Node, origin: Origin, query: Query) -> Action {
    let mut answers = read_batch(node, origin, vec![query]).await;
    answers.pop().unwrap_or_else(|| err("ERR no reply"))
}

/// Reads sharing one read point, answered in order.
async fn read_batch(node: &Node, origin: Origin, queries: Vec<Query>) -> Vec<Action> {
    match read_point(node).await {
        Ok(()) => {
            let state = node.state.lock();
            queries
                .iter()
                .map(|query| Action::Reply(query.answer(&state)))
                .collect()
        }
        Err(ReadFailure::NotLeader) => queries
            .iter()
            .map(|query| redirect(node, origin, &query.to_args()))
            .collect(),
        Err(ReadFailure::Reply(reply)) => queries
            .iter()
            .map(|_| Action::Reply(reply.clone()))
            .collect(),
    }
}

/// A replicated write.
async fn write(node: &Node, origin: Origin, command: Command) -> Action {
    let mut answers = write_batch(node, origin, vec![command]).await;
    answers.pop().unwrap_or_else(|| err("ERR no reply"))
}

/// Writes replicated as one batch of entries (`apply` for one), answered in order.
async fn write_batch(node: &Node, origin: Origin, commands: Vec<Command>) -> Vec<Action> {
    let encoded: Vec<_> = commands.iter().map(Command::encode).collect();
    let outcome = if let [one] = &encoded[..] {
        let proposal = node.raft.apply(one.clone(), ENQUEUE_TIMEOUT);
        tokio::time::timeout(node.options.request_timeout, proposal)
            .await
            .map(|applied| applied.map(|a| vec![a.response]))
    } else {
        let proposal = node.raft.apply_batch(encoded, ENQUEUE_TIMEOUT);
        tokio::time::timeout(node.options.request_timeout, proposal)
            .await
            .map(|applied| applied.map(|a| a.responses))
    };
    match outcome {
        Err(_) => commands
            .iter()
            .map(|_| err("UNKNOWN timed out after the command was proposed"))
            .collect(),
        Ok(Ok(responses)) if responses.len() == commands.len() => {
            responses.into_iter().map(Action::Replied).collect()
        }
        Ok(Ok(responses)) => commands
            .iter()
            .map(|_| {
                err(&format!(
                    "UNKNOWN {} responses for {} commands",
                    responses.len(),
                    commands.len()
                ))
            })
            .collect(),
        Ok(Err(e)) => commands
            .iter()
            .map(|command| apply_error(node, origin, command, e.clone()))
            .collect(),
    }
}

fn apply_error(node: &Node, origin: Origin, command: &Command, e: ApplyError) -> Action {
    match e {
        ApplyError::NotLeader { .. } => match command_args(command) {
            Some(args) => redirect(node, origin, &args),
            None => Action::Reply(not_leader(node)),
        },
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
        match write(node, origin, Command::Member { id, raft, client }).await {
            Action::Reply(reply) if reply.first() == Some(&b'-') => return Action::Reply(reply),
            Action::Replied(reply) if reply.first() == Some(&b'-') => {
                return Action::Replied(reply)
            }
            Action::Reply(_) | Action::Replied(_) => {}
            Action::Forward(_) => return Action::Reply(not_leader(node)),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A request of these words.
    fn args(words: &[&str]) -> Vec<Vec<u8>> {
        words.iter().copied().map(Vec::from).collect()
    }

    #[test]
    fn requests_are_classified_and_forwarded_writes_keep_their_meaning() {
        let writes = [
            &["set", "k", "v"][..],
            &["SET", "k", "v", "nx"],
            &["Set", "k", "v", "XX"],
            &["DEL", "a", "b"],
            &["incr", "n"],
            &["INCRBY", "n", "-4"],
            &["CAS", "k", "1", "2"],
        ];
        for words in writes {
            let Step::Write(command) = step(args(words)) else {
                panic!("{words:?} is a write");
            };
            // The request a follower forwards means the same command on the leader.
            let forwarded = command_args(&command).expect("a client command");
            assert!(
                matches!(step(forwarded), Step::Write(c) if c == command),
                "{words:?}"
            );
        }
        for words in [&["GET", "k"][..], &["exists", "a", "b"], &["MGET", "a"]] {
            let Step::Read(query) = step(args(words)) else {
                panic!("{words:?} is a read");
            };
            let mut upper = args(words);
            upper[0].make_ascii_uppercase();
            assert_eq!(query.to_args(), upper);
        }
        for words in [&["SET", "k", "v", "NX", "XX"][..], &["INCRBY", "n", "x"]] {
            assert!(matches!(step(args(words)), Step::Invalid(_)), "{words:?}");
        }
        for words in [
            &["GET"][..],
            &["INCR", "a", "b"],
            &["PING"],
            &["A-VERY-LONG-COMMAND-NAME"],
        ] {
            assert!(
                matches!(step(args(words)), Step::Other(a) if a == args(words)),
                "{words:?}"
            );
        }
        assert!(command_args(&Command::Member {
            id: 1,
            raft: "a".into(),
            client: "b".into()
        })
        .is_none());
    }

    #[test]
    fn forwarded_requests_lose_their_prefix_once() {
        assert_eq!(
            forwarded(args(&["raft.fwd", "SET", "k", "v"])),
            (Origin::Forwarded, args(&["SET", "k", "v"]))
        );
        for words in [
            &["SET", "k", "v"][..],
            &["RAFT.FWD"],
            &["RAFT.FWD", "RAFT.FWD", "GET", "k"],
        ] {
            assert_eq!(forwarded(args(words)), (Origin::Client, args(words)));
        }
    }
}
