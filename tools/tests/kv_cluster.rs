//! Real-process tests of `ringraft-kv` (DESIGN §8 layer 5): clusters of the built binary on
//! loopback, nodes killed with SIGKILL and restarted, client histories judged by the
//! simulator's linearizability checker. No assertion depends on how long anything took;
//! timeouts only guard against hangs.
//!
//! ```text
//! cargo test -p ringraft-tools --test kv_cluster                 # the quick ones (~30 s)
//! cargo test -p ringraft-tools --test kv_cluster -- --ignored    # repeated leader kills
//! ```

use ringraft::sim::linearizability::{check_kv_history, KvOp, KvResult, Operation};
use ringraft_tools::kv::client::{info_field, Client};
use ringraft_tools::kv::local::cluster_addresses;
use ringraft_tools::kv::resp::Reply;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_ringraft-kv");
/// Hang guard for one client request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Hang guard for a cluster to elect a leader.
const LEADER_TRIES: usize = 600;

struct NodeProcess {
    id: usize,
    raft: String,
    client: String,
    extra: Vec<String>,
    child: Option<Child>,
}

/// A cluster of `ringraft-kv` processes, killed when dropped.
struct Cluster {
    dir: tempfile::TempDir,
    peers: String,
    nodes: Vec<NodeProcess>,
}

impl Cluster {
    /// Starts `n` nodes; `extra(id)` adds flags to node `id`.
    fn start(n: usize, extra: impl Fn(usize) -> Vec<String>) -> Cluster {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (peers, addresses) = cluster_addresses(n).expect("free ports");
        let nodes = addresses
            .into_iter()
            .enumerate()
            .map(|(i, (raft, client))| NodeProcess {
                id: i + 1,
                raft,
                client,
                extra: extra(i + 1),
                child: None,
            })
            .collect();
        let mut cluster = Cluster { dir, peers, nodes };
        for id in 1..=n {
            cluster.spawn(id);
        }
        cluster
    }

    fn log_path(&self, id: usize) -> PathBuf {
        self.dir.path().join(format!("node-{id}.log"))
    }

    fn spawn(&mut self, id: usize) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))
            .expect("log file");
        let data = self.dir.path().join(format!("node-{id}"));
        let node = &mut self.nodes[id - 1];
        assert!(node.child.is_none(), "node {id} is already running");
        let child = Command::new(BINARY)
            .args(["--id", &id.to_string(), "--client", &node.client])
            .args(["--raft", &node.raft, "--peers", &self.peers])
            .args([
                "--election-timeout-ms",
                "300",
                "--request-timeout-ms",
                "3000",
            ])
            .arg("--data")
            .arg(data)
            .args(&node.extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawning ringraft-kv");
        node.child = Some(child);
    }

    fn signal(&mut self, id: usize, signal: libc::c_int) -> ExitStatus {
        let mut child = self.nodes[id - 1].child.take().expect("node is running");
        let pid = libc::pid_t::try_from(child.id()).expect("pid");
        // SAFETY: signalling our own child process.
        unsafe {
            libc::kill(pid, signal);
        }
        child.wait().expect("waiting for the node")
    }

    /// Sends `signal` to a running node without waiting for it (SIGSTOP, SIGCONT).
    fn signal_running(&self, id: usize, signal: libc::c_int) {
        let child = self.nodes[id - 1].child.as_ref().expect("node is running");
        let pid = libc::pid_t::try_from(child.id()).expect("pid");
        // SAFETY: signalling our own child process.
        unsafe {
            libc::kill(pid, signal);
        }
    }

    fn client(&self, id: usize) -> Client {
        Client::connect(self.nodes[id - 1].client.as_str(), REQUEST_TIMEOUT).expect("connect")
    }

    fn running(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.id)
            .collect()
    }

    fn info(&self, id: usize) -> Option<String> {
        let mut c = Client::connect(self.nodes[id - 1].client.as_str(), REQUEST_TIMEOUT).ok()?;
        c.call(&["RAFT.INFO"]).ok()?.text()
    }

    /// Waits until a running node reports itself leader; returns its id.
    fn leader(&self) -> usize {
        for _ in 0..LEADER_TRIES {
            for id in self.running() {
                if let Some(info) = self.info(id) {
                    if info_field(&info, "role").as_deref() == Some("leader") {
                        return id;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.dump_logs();
        panic!("no leader elected");
    }

    fn dump_logs(&self) {
        for n in &self.nodes {
            let log = std::fs::read_to_string(self.log_path(n.id)).unwrap_or_default();
            eprintln!("--- node {} log ---\n{log}", n.id);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn call(c: &mut Client, args: &[&str]) -> Reply {
    c.call(args).expect("request")
}

fn ok() -> Reply {
    Reply::Simple("OK".into())
}

fn bulk(s: &str) -> Reply {
    Reply::Bulk(Some(s.as_bytes().to_vec()))
}

/// Retries `args` on `node` until it is not a certain failure (`-ERR`, `-NOTLEADER`, a
/// refused connection): for set-up steps during elections.
fn call_until_done(cluster: &Cluster, node: usize, args: &[&str]) -> Reply {
    for _ in 0..200 {
        if let Ok(mut c) = Client::connect(cluster.nodes[node - 1].client.as_str(), REQUEST_TIMEOUT)
        {
            match c.call(args) {
                Ok(Reply::Error(e)) if e.starts_with("ERR") || e.starts_with("NOTLEADER") => {}
                Ok(r) => return r,
                Err(_) => {}
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.dump_logs();
    panic!("{args:?} on node {node} kept failing");
}

#[test]
fn leader_and_forwarding_follower_serve_commands_and_no_forward_answers_notleader() {
    let mut cluster = Cluster::start(3, |id| {
        if id == 3 {
            vec!["--no-forward".into()]
        } else {
            vec![]
        }
    });
    let mut leader = cluster.leader();
    if leader == 3 {
        call_until_done(&cluster, 3, &["RAFT.TRANSFER", "1"]);
        while {
            leader = cluster.leader();
            leader == 3
        } {}
    }
    let follower = if leader == 1 { 2 } else { 1 };

    let mut l = cluster.client(leader);
    assert_eq!(call(&mut l, &["SET", "a", "1"]), ok());
    assert_eq!(call(&mut l, &["GET", "a"]), bulk("1"));
    assert_eq!(call(&mut l, &["INCR", "n"]), Reply::Integer(1));
    assert_eq!(call(&mut l, &["SET", "a", "2", "NX"]), Reply::Bulk(None));
    assert_eq!(call(&mut l, &["CAS", "a", "1", "5"]), Reply::Integer(1));
    assert_eq!(call(&mut l, &["CAS", "a", "1", "6"]), Reply::Integer(0));

    let mut f = cluster.client(follower);
    assert_eq!(call(&mut f, &["SET", "b", "x", "XX"]), Reply::Bulk(None));
    assert_eq!(call(&mut f, &["SET", "b", "x"]), ok());
    assert_eq!(call(&mut f, &["INCR", "n"]), Reply::Integer(2));
    assert_eq!(call(&mut f, &["INCRBY", "n", "40"]), Reply::Integer(42));
    assert_eq!(call(&mut f, &["GET", "a"]), bulk("5"));
    assert_eq!(
        call(&mut f, &["MGET", "a", "b", "c"]),
        Reply::Array(Some(vec![bulk("5"), bulk("x"), Reply::Bulk(None)]))
    );
    assert_eq!(call(&mut f, &["EXISTS", "a", "c"]), Reply::Integer(1));
    assert_eq!(call(&mut f, &["DEL", "b", "c"]), Reply::Integer(1));
    assert_eq!(call(&mut l, &["GET", "b"]), Reply::Bulk(None));
    assert!(call(&mut f, &["INCR", "a5"]).error().is_none());
    assert_eq!(call(&mut f, &["SET", "s", "t"]), ok());
    assert!(call(&mut f, &["INCR", "s"])
        .error()
        .is_some_and(|e| e.starts_with("ERR")));

    // Node 3 does not forward: it names the leader's client address.
    let leader_client = cluster.nodes[leader - 1].client.clone();
    let mut n3 = cluster.client(3);
    assert_eq!(call(&mut n3, &["PING"]), Reply::Simple("PONG".into()));
    for args in [
        &["SET", "z", "1"][..],
        &["GET", "a"][..],
        &["INCR", "n"][..],
    ] {
        assert_eq!(
            call(&mut n3, args),
            Reply::Error(format!("NOTLEADER {leader_client}")),
            "{args:?}"
        );
    }
    let info = cluster.info(3).expect("info");
    assert_eq!(info_field(&info, "leader"), Some(leader.to_string()));
    assert!(info_field(&info, "configuration").is_some_and(|c| c.matches("voter").count() == 3));

    // A malformed request gets an error and its connection is closed; the node lives on.
    use std::io::{Read, Write};
    let mut raw = std::net::TcpStream::connect(cluster.nodes[0].client.as_str()).expect("connect");
    raw.set_read_timeout(Some(REQUEST_TIMEOUT))
        .expect("timeout");
    raw.write_all(b"*1\r\n$-7\r\n").expect("write");
    let mut answer = Vec::new();
    raw.read_to_end(&mut answer).expect("read until closed");
    assert!(answer.starts_with(b"-ERR Protocol error"), "{answer:?}");
    assert_eq!(call(&mut l, &["GET", "n"]), bulk("42"));
    let _ = cluster.signal(1, libc::SIGTERM);
}

// ---- histories ----------------------------------------------------------------------------

const KEYS: u64 = 4;

/// Microseconds since `base`, the history's clock.
// A real-process history needs real time: the checker orders operations by when they were
// invoked and completed.
#[allow(clippy::disallowed_methods)]
fn now_micros(base: Instant) -> u64 {
    Instant::now().duration_since(base).as_micros() as u64
}

#[allow(clippy::disallowed_methods)]
fn history_base() -> Instant {
    Instant::now()
}

/// How a reply reads in the history: `Ok(Some(result))` done, `Ok(None)` outcome unknown,
/// `Err(())` certainly not executed (left out of the history).
fn classify(op: &KvOp, reply: std::io::Result<Reply>) -> Result<Option<KvResult>, ()> {
    let reply = match reply {
        Err(_) => return Ok(None),
        Ok(r) => r,
    };
    match (op, reply) {
        (_, Reply::Error(e)) if e.starts_with("UNKNOWN") => Ok(None),
        (_, Reply::Error(_)) => Err(()),
        (KvOp::Put { .. }, Reply::Simple(s)) if s == "OK" => Ok(Some(KvResult::Written)),
        (KvOp::Get { .. }, Reply::Bulk(None)) => Ok(Some(KvResult::Value(None))),
        (KvOp::Get { .. }, Reply::Bulk(Some(v))) => {
            let text = String::from_utf8_lossy(&v).into_owned();
            let value = text.parse().unwrap_or_else(|_| panic!("bad value {text}"));
            Ok(Some(KvResult::Value(Some(value))))
        }
        (KvOp::Cas { .. }, Reply::Integer(n)) => Ok(Some(KvResult::Swapped(n == 1))),
        (op, r) => panic!("unexpected reply {r:?} to {op}"),
    }
}

fn request(op: &KvOp) -> Vec<String> {
    match op {
        KvOp::Put { key, value } => vec!["SET".into(), key.to_string(), value.to_string()],
        KvOp::Get { key } => vec!["GET".into(), key.to_string()],
        KvOp::Cas { key, expected, new } => vec![
            "CAS".into(),
            key.to_string(),
            expected.unwrap_or_default().to_string(),
            new.to_string(),
        ],
    }
}

/// A client thread: operations on random keys through node `home` (then any running node
/// when that one fails), until `stop`.
fn run_client(
    client: u64,
    addresses: Arc<Mutex<Vec<String>>>,
    base: Instant,
    stop: Arc<AtomicBool>,
    history: Arc<Mutex<Vec<Operation>>>,
) {
    let mut seed = client.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut random = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut next_value = (client + 1) * 1_000_000;
    let mut connection: Option<Client> = None;
    let mut target = client as usize;
    while !stop.load(Ordering::Acquire) {
        let c = match connection.as_mut() {
            Some(c) => c,
            None => {
                let list = addresses.lock().expect("addresses").clone();
                target = (target + 1) % list.len();
                match Client::connect(list[target].as_str(), REQUEST_TIMEOUT) {
                    Ok(c) => connection.insert(c),
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                }
            }
        };
        let key = random() % KEYS;
        next_value += 1;
        let op = match random() % 3 {
            0 => KvOp::Put {
                key,
                value: next_value,
            },
            1 => KvOp::Get { key },
            _ => KvOp::Cas {
                key,
                expected: Some(next_value - 1 - random() % 2),
                new: next_value,
            },
        };
        let invoke = now_micros(base);
        let reply = c.call(&request(&op));
        let failed = reply.is_err();
        let done = now_micros(base);
        match classify(&op, reply) {
            Err(()) => std::thread::sleep(Duration::from_millis(10)),
            Ok(result) => history.lock().expect("history").push(Operation {
                client,
                op,
                invoke,
                completion: result.map(|r| (done, r)),
            }),
        }
        if failed {
            connection = None;
        }
    }
}

/// What happens to the leader in a history test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// SIGKILL, then restart it once a new leader has served some operations.
    Kill,
    /// SIGSTOP until another node leads and served some operations, then SIGCONT: the old
    /// leader must not acknowledge a write or serve a stale read after it was deposed.
    Pause,
}

/// Runs clients against the cluster while hitting the leader with `fault` `rounds` times, then
/// checks the history, with a final read of every key.
fn leader_faults_keep_history_linearizable(fault: Fault, rounds: usize, clients: u64) {
    let mut cluster = Cluster::start(3, |_| vec![]);
    cluster.leader();
    let addresses: Vec<String> = cluster.nodes.iter().map(|n| n.client.clone()).collect();
    let addresses = Arc::new(Mutex::new(addresses));
    let base = history_base();
    let stop = Arc::new(AtomicBool::new(false));
    let history = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..clients)
        .map(|client| {
            let (a, s, h) = (addresses.clone(), stop.clone(), history.clone());
            std::thread::spawn(move || run_client(client, a, base, s, h))
        })
        .collect();
    let completed = |history: &Mutex<Vec<Operation>>| {
        history
            .lock()
            .expect("history")
            .iter()
            .filter(|o| o.completion.is_some())
            .count()
    };
    // Progress is counted in completed operations, not seconds: each phase waits for some.
    let wait_for_progress = |n: usize| {
        let start = completed(&history);
        for _ in 0..1200 {
            if completed(&history) >= start + n {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("clients made no progress");
    };
    wait_for_progress(100);
    for _ in 0..rounds {
        let leader = cluster.leader();
        match fault {
            Fault::Kill => {
                let _ = cluster.signal(leader, libc::SIGKILL);
            }
            Fault::Pause => {
                cluster.signal_running(leader, libc::SIGSTOP);
                // The paused node still answers RAFT.INFO from its socket backlog only when it
                // resumes, so look for the new leader among the others.
                let others: Vec<usize> = cluster
                    .running()
                    .into_iter()
                    .filter(|&id| id != leader)
                    .collect();
                let mut found = false;
                for _ in 0..LEADER_TRIES {
                    found = others.iter().any(|&id| {
                        cluster
                            .info(id)
                            .is_some_and(|i| info_field(&i, "role").as_deref() == Some("leader"))
                    });
                    if found {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                assert!(found, "no new leader while node {leader} was paused");
            }
        }
        wait_for_progress(100);
        match fault {
            Fault::Kill => {
                assert_ne!(cluster.leader(), leader);
                cluster.spawn(leader);
            }
            Fault::Pause => cluster.signal_running(leader, libc::SIGCONT),
        }
        wait_for_progress(50);
    }
    stop.store(true, Ordering::Release);
    for t in threads {
        t.join().expect("client thread");
    }
    // Final reads through the leader, after every client stopped.
    let leader = cluster.leader();
    let mut finals = BTreeMap::new();
    for key in 0..KEYS {
        let op = KvOp::Get { key };
        let invoke = now_micros(base);
        let reply = call_until_done(&cluster, leader, &["GET", &key.to_string()]);
        let done = now_micros(base);
        let result = classify(&op, Ok(reply)).ok().flatten().expect("final read");
        finals.insert(key, result.clone());
        history.lock().expect("history").push(Operation {
            client: u64::MAX,
            op,
            invoke,
            completion: Some((done, result)),
        });
    }
    let history = history.lock().expect("history").clone();
    let acknowledged_writes = history
        .iter()
        .filter(|o| matches!(o.completion, Some((_, KvResult::Written))))
        .count();
    assert!(acknowledged_writes > 0, "no write was acknowledged");
    if let Err(e) = check_kv_history(&history, 1_000_000) {
        cluster.dump_logs();
        panic!("{e}");
    }
    eprintln!(
        "{} operations ({} acknowledged writes), final values {finals:?}",
        history.len(),
        acknowledged_writes
    );
}

#[test]
fn leader_killed_with_sigkill_loses_no_acknowledged_write_and_history_is_linearizable() {
    leader_faults_keep_history_linearizable(Fault::Kill, 1, 4);
}

#[test]
fn leader_paused_past_its_election_timeout_is_deposed_and_history_is_linearizable() {
    leader_faults_keep_history_linearizable(Fault::Pause, 1, 4);
}

/// Run with `cargo test -p ringraft-tools --test kv_cluster -- --ignored`.
#[test]
#[ignore = "long: five leader kills with restarts"]
fn repeated_leader_kills_keep_history_linearizable() {
    leader_faults_keep_history_linearizable(Fault::Kill, 5, 6);
}

/// Run with `cargo test -p ringraft-tools --test kv_cluster -- --ignored`.
#[test]
#[ignore = "long: five leader pauses"]
fn repeated_leader_pauses_keep_history_linearizable() {
    leader_faults_keep_history_linearizable(Fault::Pause, 5, 6);
}

#[test]
fn a_node_joins_through_a_follower_and_becomes_a_voter() {
    let mut cluster = Cluster::start(3, |_| vec![]);
    let leader = cluster.leader();
    let follower = if leader == 1 { 2 } else { 1 };
    assert_eq!(
        call_until_done(&cluster, leader, &["SET", "before", "1"]),
        ok()
    );
    let (_, mut addresses) = cluster_addresses(1).expect("free ports");
    let (raft, client) = addresses.pop().expect("one node");
    let join = cluster.nodes[follower - 1].client.clone();
    cluster.nodes.push(NodeProcess {
        id: 4,
        raft,
        client,
        extra: vec!["--join".into(), join],
        child: None,
    });
    cluster.spawn(4);
    let mut voters = 0;
    for _ in 0..LEADER_TRIES {
        let info = cluster.info(leader).unwrap_or_default();
        let configuration = info_field(&info, "configuration").unwrap_or_default();
        voters = configuration.matches("/voter").count();
        if voters == 4 {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if voters != 4 {
        cluster.dump_logs();
        panic!("node 4 did not become a voter");
    }
    // The new node serves reads and writes (forwarding to the leader).
    assert_eq!(call_until_done(&cluster, 4, &["GET", "before"]), bulk("1"));
    assert_eq!(call_until_done(&cluster, 4, &["SET", "after", "2"]), ok());
    assert_eq!(
        call_until_done(&cluster, leader, &["GET", "after"]),
        bulk("2")
    );
    let info = cluster.info(4).expect("info");
    assert!(info_field(&info, "leader_client").is_some_and(|a| !a.is_empty()));
}

#[test]
fn all_nodes_restarted_keep_acknowledged_data() {
    let mut cluster = Cluster::start(3, |_| vec![]);
    let leader = cluster.leader();
    for i in 0..30 {
        let (k, v) = (format!("k{i}"), format!("v{i}"));
        assert_eq!(call_until_done(&cluster, leader, &["SET", &k, &v]), ok());
        call_until_done(&cluster, leader, &["INCR", "counter"]);
        if i == 15 {
            // Half the data goes through a snapshot (and log compaction), half the log.
            let reply = call_until_done(&cluster, 2, &["RAFT.SNAPSHOT"]);
            assert!(matches!(reply, Reply::Simple(_)), "{reply:?}");
        }
    }
    // Two stop cleanly, one is killed; nothing acknowledged may be lost either way.
    assert!(cluster.signal(1, libc::SIGTERM).success());
    assert!(cluster.signal(2, libc::SIGTERM).success());
    let _ = cluster.signal(3, libc::SIGKILL);
    for id in 1..=3 {
        cluster.spawn(id);
    }
    let leader = cluster.leader();
    for i in 0..30 {
        let (k, v) = (format!("k{i}"), format!("v{i}"));
        assert_eq!(call_until_done(&cluster, leader, &["GET", &k]), bulk(&v));
    }
    assert_eq!(
        call_until_done(&cluster, leader, &["GET", "counter"]),
        bulk("30")
    );
    // And through a follower (forwarded).
    let follower = if leader == 1 { 2 } else { 1 };
    assert_eq!(
        call_until_done(&cluster, follower, &["GET", "k29"]),
        bulk("v29")
    );
}

// ---- real clients ---------------------------------------------------------------------------

fn redis_cli(port: &str, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", port])
        .args(args)
        .output()
        .expect("running redis-cli (apt-get install redis-tools)");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `redis-benchmark -t set,get,incr -n 100000 -c 50` against `port`; every INCR must have
/// counted (an error reply would leave the counter short).
fn redis_benchmark(cluster: &Cluster, port: &str, expected_counter: u64) {
    let out = Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", port, "-q"])
        .args(["-t", "set,get,incr", "-n", "100000", "-c", "50"])
        .output()
        .expect("running redis-benchmark (apt-get install redis-tools)");
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "\n");
    let summary: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("requests per second"))
        .collect();
    eprintln!("redis-benchmark -p {port}:\n{}", summary.join("\n"));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(summary.len(), 3, "{text}");
    let leader = cluster.leader();
    assert_eq!(
        call_until_done(cluster, leader, &["GET", "counter:__rand_int__"]),
        bulk(&expected_counter.to_string())
    );
}

/// Run with `cargo test -p ringraft-tools --test kv_cluster -- --ignored redis` after
/// `apt-get install redis-tools` (a few minutes in a debug build).
#[test]
#[ignore = "needs redis-tools; runs redis-benchmark twice"]
fn redis_cli_and_redis_benchmark_work_through_leader_and_follower() {
    let cluster = Cluster::start(3, |_| vec![]);
    let leader = cluster.leader();
    let follower = if leader == 1 { 2 } else { 1 };
    let port = |id: usize| {
        let client = &cluster.nodes[id - 1].client;
        client.rsplit(':').next().unwrap_or_default().to_string()
    };
    let f = port(follower);
    assert_eq!(redis_cli(&f, &["set", "greeting", "hello"]), "OK");
    assert_eq!(redis_cli(&f, &["get", "greeting"]), "hello");
    assert_eq!(redis_cli(&f, &["incr", "visits"]), "1");
    assert_eq!(redis_cli(&f, &["incr", "visits"]), "2");
    assert!(redis_cli(&f, &["raft.info"]).contains("role:follower"));
    redis_benchmark(&cluster, &port(leader), 100_000);
    redis_benchmark(&cluster, &f, 200_000);
}
