//! Shared harness of the real-process `ringraft-kv` tests (ARCHITECTURE §8 layer 5): a cluster of the
//! built binary (on loopback, or each node in its own network namespace), client threads that
//! record every operation for the simulator's linearizability checker, and the final check.
//! No assertion depends on how long anything took; timeouts only guard against hangs.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

pub mod netns;
pub mod proxy;

use ringraft::sim::linearizability::{check_kv_history, KvOp, KvResult, Operation};
use ringraft_tools::kv::client::{info_field, Client};
use ringraft_tools::kv::local::cluster_addresses;
use ringraft_tools::kv::resp::Reply;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const BINARY: &str = env!("CARGO_BIN_EXE_ringraft-kv");
pub const WAL_BINARY: &str = env!("CARGO_BIN_EXE_ringraft-wal");
/// Hang guard for one client request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Hang guard for a cluster to elect a leader (tries, 50 ms apart).
pub const LEADER_TRIES: usize = 600;

pub struct NodeProcess {
    pub id: usize,
    /// The raft address peers dial (in `--peers`).
    pub raft: String,
    /// Where the node's raft transport listens, when not at `raft` (behind a proxy).
    pub listen_raft: Option<String>,
    pub client: String,
    pub extra: Vec<String>,
    /// The data directory.
    pub data: PathBuf,
    /// The network namespace (a file under /run/netns) the node runs in; `None`: the test's.
    pub netns: Option<PathBuf>,
    pub child: Option<Child>,
}

/// A cluster of `ringraft-kv` processes, killed when dropped.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub peers: String,
    pub nodes: Vec<NodeProcess>,
}

impl Cluster {
    /// Starts `n` nodes on loopback; `extra(id)` adds flags to node `id`.
    pub fn start(n: usize, extra: impl Fn(usize) -> Vec<String>) -> Cluster {
        let (_, addresses) = cluster_addresses(n).expect("free ports");
        let mut cluster = Cluster::new(addresses, extra);
        for id in 1..=n {
            cluster.spawn(id);
        }
        cluster
    }

    /// A cluster of nodes at `addresses` (raft, client), none started yet: set `data` or
    /// `netns` of a node before [`Cluster::spawn`].
    pub fn new(addresses: Vec<(String, String)>, extra: impl Fn(usize) -> Vec<String>) -> Cluster {
        let dir = tempfile::tempdir().expect("temporary directory");
        let peers = addresses
            .iter()
            .enumerate()
            .map(|(i, (raft, client))| format!("{}={raft}/{client}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = addresses
            .into_iter()
            .enumerate()
            .map(|(i, (raft, client))| NodeProcess {
                id: i + 1,
                raft,
                listen_raft: None,
                client,
                extra: extra(i + 1),
                data: dir.path().join(format!("node-{}", i + 1)),
                netns: None,
                child: None,
            })
            .collect();
        Cluster { dir, peers, nodes }
    }

    pub fn log_path(&self, id: usize) -> PathBuf {
        self.dir.path().join(format!("node-{id}.log"))
    }

    pub fn log(&self, id: usize) -> String {
        std::fs::read_to_string(self.log_path(id)).unwrap_or_default()
    }

    pub fn spawn(&mut self, id: usize) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))
            .expect("log file");
        let node = &mut self.nodes[id - 1];
        assert!(node.child.is_none(), "node {id} is already running");
        let mut command = Command::new(BINARY);
        command
            .args(["--id", &id.to_string(), "--client", &node.client])
            .args(["--raft", node.listen_raft.as_ref().unwrap_or(&node.raft)])
            // Behind a proxy, the node's --peers entry names the proxy.
            .args(
                node.listen_raft
                    .as_ref()
                    .map(|_| ["--advertise-raft", node.raft.as_str()])
                    .into_iter()
                    .flatten(),
            )
            .args(["--peers", &self.peers])
            .args([
                "--election-timeout-ms",
                "300",
                "--request-timeout-ms",
                "3000",
            ])
            .arg("--data")
            .arg(&node.data)
            .args(&node.extra)
            .stdout(Stdio::null())
            .stderr(log);
        let namespace = node.netns.as_ref().map(|path| {
            std::fs::File::open(path)
                .unwrap_or_else(|e| panic!("opening network namespace {}: {e}", path.display()))
        });
        let fd = namespace.as_ref().map(|f| {
            use std::os::unix::io::AsRawFd;
            f.as_raw_fd()
        });
        // The node dies with the thread that started it (the test's), so a test process that
        // is itself killed leaves no nodes behind; then it enters its namespace, if any.
        // SAFETY: prctl and setns are async-signal-safe; the descriptor stays open until spawn
        // returns (`namespace` outlives it) and is inherited by the forked child.
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(fd) = fd {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        node.child = Some(command.spawn().expect("spawning ringraft-kv"));
        drop(namespace);
    }

    pub fn signal(&mut self, id: usize, signal: libc::c_int) -> ExitStatus {
        let mut child = self.nodes[id - 1].child.take().expect("node is running");
        let pid = libc::pid_t::try_from(child.id()).expect("pid");
        // SAFETY: signalling our own child process.
        unsafe {
            libc::kill(pid, signal);
        }
        child.wait().expect("waiting for the node")
    }

    /// Sends `signal` to a running node without waiting for it (SIGSTOP, SIGCONT).
    pub fn signal_running(&self, id: usize, signal: libc::c_int) {
        let child = self.nodes[id - 1].child.as_ref().expect("node is running");
        let pid = libc::pid_t::try_from(child.id()).expect("pid");
        // SAFETY: signalling our own child process.
        unsafe {
            libc::kill(pid, signal);
        }
    }

    /// The exit status of a node that exited by itself (then no longer counted as running).
    pub fn try_exited(&mut self, id: usize) -> Option<ExitStatus> {
        let node = &mut self.nodes[id - 1];
        let status = node.child.as_mut()?.try_wait().expect("try_wait")?;
        node.child = None;
        Some(status)
    }

    pub fn client(&self, id: usize) -> Client {
        Client::connect(self.nodes[id - 1].client.as_str(), REQUEST_TIMEOUT).expect("connect")
    }

    pub fn running(&self) -> Vec<usize> {
        self.nodes
            .iter()
            .filter(|n| n.child.is_some())
            .map(|n| n.id)
            .collect()
    }

    pub fn client_addresses(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.client.clone()).collect()
    }

    pub fn info(&self, id: usize) -> Option<String> {
        let mut c = Client::connect(self.nodes[id - 1].client.as_str(), REQUEST_TIMEOUT).ok()?;
        c.call(&["RAFT.INFO"]).ok()?.text()
    }

    pub fn info_number(&self, id: usize, field: &str) -> Option<u64> {
        self.info(id)
            .and_then(|i| info_field(&i, field))
            .and_then(|v| v.parse().ok())
    }

    /// Waits until a running node reports itself leader; returns its id.
    pub fn leader(&self) -> usize {
        self.leader_among(&self.running())
    }

    /// Waits until one of `ids` reports itself leader; returns its id.
    pub fn leader_among(&self, ids: &[usize]) -> usize {
        for _ in 0..LEADER_TRIES {
            for &id in ids {
                if let Some(info) = self.info(id) {
                    if info_field(&info, "role").as_deref() == Some("leader") {
                        return id;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.dump_logs();
        panic!("no leader elected among {ids:?}");
    }

    pub fn dump_logs(&self) {
        for n in &self.nodes {
            eprintln!("--- node {} log ---\n{}", n.id, self.log(n.id));
        }
    }

    /// Runs `ringraft-wal verify` on node `id`'s WAL (the node should not be running).
    pub fn verify_wal(&self, id: usize) {
        let wal = self.nodes[id - 1].data.join("wal");
        let out = Command::new(WAL_BINARY)
            .arg("verify")
            .arg(&wal)
            .output()
            .expect("running ringraft-wal");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "ringraft-wal verify {}: {text}",
            wal.display()
        );
        eprintln!(
            "ringraft-wal verify node {id}: {}",
            text.lines().last().unwrap_or_default()
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                // SIGKILL also ends a stopped (SIGSTOP) process.
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

pub fn call(c: &mut Client, args: &[&str]) -> Reply {
    c.call(args).expect("request")
}

pub fn ok() -> Reply {
    Reply::Simple("OK".into())
}

pub fn bulk(s: &str) -> Reply {
    Reply::Bulk(Some(s.as_bytes().to_vec()))
}

/// Retries `args` on `node` until it is not a certain failure (`-ERR`, `-NOTLEADER`, a
/// refused connection): for set-up steps during elections.
pub fn call_until_done(cluster: &Cluster, node: usize, args: &[&str]) -> Reply {
    call_until(cluster, node, args, false)
}

/// [`call_until_done`] for a command that may run twice with the same effect (`SET`, `GET`):
/// an `UNKNOWN` outcome (leadership lost while it was pending, as an election on a loaded
/// machine does) is retried too, where a counter's `INCR` must report it.
pub fn call_idempotent_until_done(cluster: &Cluster, node: usize, args: &[&str]) -> Reply {
    call_until(cluster, node, args, true)
}

fn call_until(cluster: &Cluster, node: usize, args: &[&str], idempotent: bool) -> Reply {
    for _ in 0..200 {
        if let Ok(mut c) = Client::connect(cluster.nodes[node - 1].client.as_str(), REQUEST_TIMEOUT)
        {
            match c.call(args) {
                Ok(Reply::Error(e))
                    if e.starts_with("ERR")
                        || e.starts_with("NOTLEADER")
                        || idempotent && e.starts_with("UNKNOWN") => {}
                Ok(r) => return r,
                Err(_) => {}
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.dump_logs();
    panic!("{args:?} on node {node} kept failing");
}

// ---- histories ----------------------------------------------------------------------------

pub const KEYS: u64 = 4;

/// Microseconds since `base`, the history's clock.
// A real-process history needs real time: the checker orders operations by when they were
// invoked and completed.
#[allow(clippy::disallowed_methods)]
pub fn now_micros(base: Instant) -> u64 {
    Instant::now().duration_since(base).as_micros() as u64
}

#[allow(clippy::disallowed_methods)]
pub fn history_base() -> Instant {
    Instant::now()
}

/// How a reply reads in the history: `Ok(Some(result))` done, `Ok(None)` outcome unknown,
/// `Err(())` certainly not executed (left out of the history).
pub fn classify(op: &KvOp, reply: std::io::Result<Reply>) -> Result<Option<KvResult>, ()> {
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

pub fn request(op: &KvOp) -> Vec<String> {
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

/// A client thread: operations on random keys through node `home` (then the next node when
/// that one fails or answers an error), until `stop`.
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
        let failed = !matches!(reply, Ok(ref r) if r.error().is_none());
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
        // A node that failed or answered an error may be cut off: try the next one.
        if failed {
            connection = None;
        }
    }
}

/// Client threads running operations against a cluster and recording them.
pub struct Load {
    pub base: Instant,
    stop: Arc<AtomicBool>,
    pub history: Arc<Mutex<Vec<Operation>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    /// Starts `clients` threads spread over `addresses`. The threads run in the calling
    /// thread's network namespace.
    pub fn start(addresses: Vec<String>, clients: u64) -> Load {
        let addresses = Arc::new(Mutex::new(addresses));
        let base = history_base();
        let stop = Arc::new(AtomicBool::new(false));
        let history = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|client| {
                let (a, s, h) = (addresses.clone(), stop.clone(), history.clone());
                std::thread::spawn(move || run_client(client, a, base, s, h))
            })
            .collect();
        Load {
            base,
            stop,
            history,
            threads,
        }
    }

    pub fn completed(&self) -> usize {
        self.history
            .lock()
            .expect("history")
            .iter()
            .filter(|o| o.completion.is_some())
            .count()
    }

    /// Waits until `n` more operations completed. Progress is counted in operations, not
    /// seconds; the bound (30 s without progress) only guards against a hang.
    pub fn wait_for_progress(&self, n: usize) {
        let start = self.completed();
        for _ in 0..1200 {
            if self.completed() >= start + n {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("clients made no progress");
    }

    /// Stops the clients; reads every key through `leader` once they stopped; checks that
    /// the history (final reads included) is linearizable and that some write was
    /// acknowledged. A lost acknowledged write fails the check (the final read would not see
    /// it, or would see a value overwritten before it).
    pub fn finish_and_check(self, cluster: &Cluster, leader: usize) -> Vec<Operation> {
        self.stop.store(true, Ordering::Release);
        for t in self.threads {
            t.join().expect("client thread");
        }
        let base = self.base;
        let mut finals = BTreeMap::new();
        for key in 0..KEYS {
            let op = KvOp::Get { key };
            let invoke = now_micros(base);
            let reply = call_until_done(cluster, leader, &["GET", &key.to_string()]);
            let done = now_micros(base);
            let result = classify(&op, Ok(reply)).ok().flatten().expect("final read");
            finals.insert(key, result.clone());
            self.history.lock().expect("history").push(Operation {
                client: u64::MAX,
                op,
                invoke,
                completion: Some((done, result)),
            });
        }
        let history = self.history.lock().expect("history").clone();
        let acknowledged_writes = history
            .iter()
            .filter(|o| matches!(o.completion, Some((_, KvResult::Written))))
            .count();
        let unknown = history.iter().filter(|o| o.completion.is_none()).count();
        assert!(acknowledged_writes > 0, "no write was acknowledged");
        if let Err(e) = check_kv_history(&history, 1_000_000) {
            cluster.dump_logs();
            panic!("{e}");
        }
        eprintln!(
            "linearizable: {} operations ({acknowledged_writes} acknowledged writes, {unknown} \
             with unknown outcome), final values {finals:?}",
            history.len(),
        );
        history
    }
}

/// Calls `f` until it returns true, `tries` times 50 ms apart; false if it never did.
pub fn eventually(tries: usize, mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..tries {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// True if this process runs as root (namespaces, mounts).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
