//! `ringraft-load`: a load generator for a local ringraft cluster (issue 6 §4, first slice).
//!
//! ```text
//! ringraft-load --inmem [--nodes N] [--clients C] [--duration SECS] [--payload-bytes B] [--json]
//! ```
//!
//! Starts an `N`-node cluster in this process (in-memory stores and network), runs `C`
//! closed-loop clients that each apply one `B`-byte command at a time on the leader for the
//! duration, then prints throughput and latency percentiles, and checks that every replica
//! applied the same entries. Percentiles are exact (every latency is kept and sorted).
//! Not yet: the durable TCP + WAL cluster (the default in the issue), `--ops`, `--rate`,
//! `--plot`, a progress bar.

use bytes::Bytes;
use ringraft::{Config, Fsm, FsmError, FsmSnapshot, Raft, RaftState};
use ringraft_net::memory::MemNetwork;
use ringraft_storage::{Configuration, Entry, InmemSnapshotStore, InmemStore, NodeId};
use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const USAGE: &str = "usage: ringraft-load --inmem [--nodes N] [--clients C] [--duration SECS] \
[--payload-bytes B] [--json]";

struct Args {
    nodes: u64,
    clients: usize,
    duration: Duration,
    payload_bytes: usize,
    json: bool,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        nodes: 3,
        clients: 64,
        duration: Duration::from_secs(10),
        payload_bytes: 64,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--inmem" => {}
            "--json" => args.json = true,
            "--nodes" => args.nodes = value("--nodes")?.parse().map_err(|e| format!("{e}"))?,
            "--clients" => {
                args.clients = value("--clients")?.parse().map_err(|e| format!("{e}"))?
            }
            "--duration" => {
                let secs: f64 = value("--duration")?
                    .trim_end_matches('s')
                    .parse()
                    .map_err(|e| format!("{e}"))?;
                args.duration = Duration::from_secs_f64(secs);
            }
            "--payload-bytes" => {
                args.payload_bytes = value("--payload-bytes")?
                    .parse()
                    .map_err(|e| format!("{e}"))?
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if args.nodes == 0 || args.clients == 0 {
        return Err("--nodes and --clients must be at least 1".into());
    }
    Ok(args)
}

/// Digest of everything applied: count and a running FNV-1a hash of (index, data).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Digest {
    count: u64,
    last_index: u64,
    hash: u64,
}

struct DigestFsm(Arc<Mutex<Digest>>);

impl Fsm for DigestFsm {
    fn apply(&mut self, entry: &Entry) -> Bytes {
        let mut d = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut h = if d.count == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            d.hash
        };
        for b in entry
            .id
            .index
            .0
            .to_le_bytes()
            .iter()
            .chain(entry.data.iter())
        {
            h = (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
        d.hash = h;
        d.count += 1;
        d.last_index = entry.id.index.0;
        Bytes::new()
    }

    fn snapshot(&mut self) -> Result<Box<dyn FsmSnapshot>, FsmError> {
        Ok(Box::new(DigestSnapshot(
            *self.0.lock().unwrap_or_else(|p| p.into_inner()),
        )))
    }

    fn restore(&mut self, snapshot: &mut dyn Read) -> Result<(), FsmError> {
        let mut b = [0u8; 24];
        snapshot.read_exact(&mut b)?;
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i * 8..i * 8 + 8]);
            u64::from_le_bytes(w)
        };
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Digest {
            count: word(0),
            last_index: word(1),
            hash: word(2),
        };
        Ok(())
    }
}

struct DigestSnapshot(Digest);

impl FsmSnapshot for DigestSnapshot {
    fn persist(&mut self, sink: &mut dyn Write) -> Result<(), FsmError> {
        for w in [self.0.count, self.0.last_index, self.0.hash] {
            sink.write_all(&w.to_le_bytes())?;
        }
        Ok(())
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[allow(clippy::disallowed_methods)] // A load generator measures wall-clock latency.
fn now() -> Instant {
    Instant::now()
}

fn run(args: &Args) -> Result<bool, String> {
    let net = MemNetwork::new();
    let ids: Vec<NodeId> = (1..=args.nodes).map(NodeId).collect();
    let mut nodes = Vec::new();
    for &id in &ids {
        let mut config = Config::new(id);
        config.heartbeat_timeout = Duration::from_millis(300);
        config.election_timeout = Duration::from_millis(300);
        config.leader_lease_timeout = Duration::from_millis(300);
        config.max_append_entries = 1024;
        config.submission_queue_capacity = args.clients.max(64) * 2;
        let digest = Arc::new(Mutex::new(Digest::default()));
        let store = InmemStore::new();
        let raft = Raft::new(
            config,
            DigestFsm(digest.clone()),
            store.clone(),
            store,
            InmemSnapshotStore::new(),
            net.transport(id),
        )
        .map_err(|e| e.to_string())?;
        nodes.push((raft, digest));
    }
    let configuration = Configuration::voters_with_default_addresses(ids.iter().copied());
    for (raft, _) in &nodes {
        raft.bootstrap_cluster(configuration.clone())
            .wait()
            .map_err(|e| e.to_string())?;
    }
    let started = now();
    let leader = loop {
        if let Some((r, _)) = nodes.iter().find(|(r, _)| r.state() == RaftState::Leader) {
            break r.clone();
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err("no leader elected within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    leader
        .barrier(Duration::ZERO)
        .wait()
        .map_err(|e| e.to_string())?;

    let stop = Arc::new(AtomicBool::new(false));
    let payload = Bytes::from(vec![0x5a; args.payload_bytes]);
    let clients: Vec<_> = (0..args.clients)
        .map(|_| {
            let (raft, stop, payload) = (leader.clone(), stop.clone(), payload.clone());
            std::thread::spawn(move || {
                let mut latencies_ns = Vec::with_capacity(1 << 16);
                let mut errors = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let t = now();
                    match raft.apply(payload.clone(), Duration::ZERO).wait() {
                        Ok(_) => latencies_ns.push(t.elapsed().as_nanos() as u64),
                        Err(_) => errors += 1,
                    }
                }
                (latencies_ns, errors)
            })
        })
        .collect();
    let began = now();
    std::thread::sleep(args.duration);
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    let mut errors = 0;
    for c in clients {
        let (l, e) = c
            .join()
            .map_err(|_| "a client thread panicked".to_string())?;
        latencies.extend(l);
        errors += e;
    }
    let elapsed = began.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let ops = latencies.len() as u64;
    let writes_per_sec = ops as f64 / elapsed;
    let us = |p: f64| percentile(&latencies, p) as f64 / 1000.0;

    // Every replica must apply the same entries: wait for them to reach the leader's index.
    let target = leader
        .barrier(Duration::ZERO)
        .wait()
        .map_err(|e| e.to_string())?;
    let deadline = now() + Duration::from_secs(30);
    while nodes.iter().any(|(r, _)| r.applied_index() < target) && now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let digests: Vec<Digest> = nodes
        .iter()
        .map(|(_, d)| *d.lock().unwrap_or_else(|p| p.into_inner()))
        .collect();
    let consistent = digests.windows(2).all(|w| w[0] == w[1]);

    if args.json {
        println!(
            "{{\"system\":\"ringraft\",\"clients\":{},\"ops\":{},\"writes_per_sec\":{:.0},\
\"p50_us\":{:.1},\"p99_us\":{:.1},\"p999_us\":{:.1}}}",
            args.clients,
            ops,
            writes_per_sec,
            us(50.0),
            us(99.0),
            us(99.9)
        );
    } else {
        println!(
            "ringraft-load --inmem: {} nodes, {} clients, {}-byte commands, {:.1} s",
            args.nodes, args.clients, args.payload_bytes, elapsed
        );
        println!("  writes: {ops} ok, {errors} failed, {writes_per_sec:.0} writes/s");
        println!(
            "  latency µs: p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
            us(50.0),
            us(90.0),
            us(99.0),
            us(99.9),
            us(100.0)
        );
        if consistent {
            println!(
                "  replicas: all {} applied the same {} entries (digest {:016x})",
                args.nodes, digests[0].count, digests[0].hash
            );
        } else {
            println!("  replicas DIFFER: {digests:?}");
        }
    }
    for (raft, _) in &nodes {
        let _ = raft.shutdown().wait();
    }
    Ok(consistent)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("ringraft-load: {e}");
            ExitCode::FAILURE
        }
    }
}
