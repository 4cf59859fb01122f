//! Network codec and loopback replication throughput.
//!
//! `cargo bench --bench codec` runs the criterion groups (encode / decode of AppendEntries with
//! 64 × 64 B entries and with 1 × 1 MiB), then prints a loopback summary: AppendEntries sent
//! through `TcpTransport` (each node on its own thread with a current-thread tokio runtime, as
//! a shard runs it) against a blocking-socket baseline (std `TcpStream`, same frames,
//! stop-and-wait) in the same process. Medians of `RUNS` runs.
//!
//! Environment: `RINGRAFT_BENCH_SUMMARY_ONLY=1` skips criterion; `RINGRAFT_BENCH_MESSAGES`
//! sets messages per run for the small case (default 20 000; the 1 MiB case sends 1/40 of it).
// Benchmarks measure wall-clock time by design.
#![allow(clippy::disallowed_methods)]

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput};
use ringraft_net::codec::{decode_frame, encode_message, FrameDecoder, Payload};
use ringraft_net::frame::DEFAULT_MAX_FRAME_BYTES;
use ringraft_net::handshake::ClusterId;
use ringraft_net::message::{AppendEntries, AppendEntriesResponse, AppendResult, Body, Message};
use ringraft_net::tcp::{TcpConfig, TcpTransport};
use ringraft_net::transport::{recv, Transport, TransportEvent};
use ringraft_storage::{Entry, EntryKind, GroupId, Index, LogId, NodeId, Term};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

const MAX: usize = DEFAULT_MAX_FRAME_BYTES;
const RUNS: usize = 5;

fn append(count: usize, size: usize) -> Message {
    let entries = (0..count)
        .map(|i| {
            let id = LogId::new(Term(2), Index(11 + i as u64));
            Entry::new(id, EntryKind::Command, Bytes::from(vec![i as u8; size]))
        })
        .collect();
    Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(2),
        body: Body::AppendEntries(AppendEntries {
            prev_log_id: LogId::new(Term(2), Index(10)),
            entries,
            leader_commit: Index(10),
            round: 1,
        }),
    }
}

fn ack() -> Message {
    Message {
        from: NodeId(2),
        to: NodeId(1),
        term: Term(2),
        body: Body::AppendEntriesResponse(AppendEntriesResponse {
            result: AppendResult::Success {
                match_index: Index(10),
            },
            round: 1,
        }),
    }
}

fn payload_bytes(m: &Message) -> usize {
    match &m.body {
        Body::AppendEntries(ae) => ae.entries.iter().map(Entry::payload_len).sum(),
        _ => 0,
    }
}

fn benches() {
    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("codec");
    for (name, m) in [("64x64B", append(64, 64)), ("1x1MiB", append(1, 1 << 20))] {
        let frame = encode_message(&m, 1, GroupId(0), MAX)
            .expect("encode")
            .to_bytes();
        group.throughput(Throughput::Bytes(frame.len() as u64));
        group.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| encode_message(&m, 1, GroupId(0), MAX).expect("encode"))
        });
        group.bench_function(format!("encode+flatten/{name}"), |b| {
            b.iter(|| {
                encode_message(&m, 1, GroupId(0), MAX)
                    .expect("encode")
                    .to_bytes()
            })
        });
        group.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| decode_frame(&frame, MAX).expect("decode"))
        });
    }
    group.finish();
}

/// Receiver for the blocking baseline: answers every frame with an ack frame.
fn blocking_receiver(listener: TcpListener) {
    let (mut s, _) = listener.accept().expect("accept");
    s.set_nodelay(true).expect("nodelay");
    let reply = encode_message(&ack(), 1, GroupId(0), MAX)
        .expect("encode")
        .to_bytes();
    let decoder = FrameDecoder::new(MAX);
    let mut buf = BytesMut::with_capacity(1 << 16);
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        match decoder.decode(&mut buf) {
            Ok(Some(_)) => {
                if s.write_all(&reply).is_err() {
                    return;
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => panic!("baseline decode: {e}"),
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Blocking sockets, stop-and-wait: write a frame, read the response, repeat.
fn run_blocking(m: &Message, n: usize) -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = std::thread::spawn(move || blocking_receiver(listener));
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let decoder = FrameDecoder::new(MAX);
    let mut buf = BytesMut::with_capacity(1 << 16);
    let mut chunk = vec![0u8; 1 << 16];
    let start = Instant::now();
    for i in 0..n {
        let frame = encode_message(m, i as u64 + 1, GroupId(0), MAX).expect("encode");
        for part in frame.parts() {
            s.write_all(part).expect("write");
        }
        loop {
            if let Some(f) = decoder.decode(&mut buf).expect("decode") {
                assert!(matches!(f.payload, Payload::Message(_)));
                break;
            }
            let r = s.read(&mut chunk).expect("read");
            assert!(r > 0, "baseline receiver closed");
            buf.extend_from_slice(&chunk[..r]);
        }
    }
    let elapsed = start.elapsed();
    drop(s);
    server.join().expect("receiver");
    elapsed
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn config(id: u64, window: usize) -> TcpConfig {
    let mut c = TcpConfig::new(
        NodeId(id),
        ClusterId(1),
        "127.0.0.1:0".parse().expect("addr"),
    );
    c.max_inflight = window;
    c.max_queued = 4096;
    c
}

/// `TcpTransport` on both ends, each on its own thread and current-thread runtime; the
/// sender keeps the queue fed and the window bounds what is unanswered.
fn run_transport(m: &Message, n: usize, window: usize) -> Duration {
    let (addr_tx, addr_rx) = std::sync::mpsc::channel::<SocketAddr>();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let receiver = std::thread::spawn(move || {
        runtime().block_on(async move {
            let mut b = TcpTransport::bind(config(2, window)).await.expect("bind");
            addr_tx.send(b.local_address()).expect("addr");
            loop {
                let event = tokio::select! {
                    e = recv(&mut b) => e,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {
                        if stop_rx.try_recv().is_ok() { return; }
                        continue;
                    }
                };
                if let Some(TransportEvent::Message { message, .. }) = event {
                    if matches!(message.body, Body::AppendEntries(_)) {
                        b.send(GroupId(0), ack()).expect("ack");
                    }
                }
            }
        })
    });
    let addr = addr_rx.recv().expect("receiver address");
    let elapsed = runtime().block_on(async move {
        let mut a = TcpTransport::bind(config(1, window)).await.expect("bind");
        a.add_peer(NodeId(2), addr);
        // Warm up: connect and complete one round trip before timing.
        a.send(GroupId(0), m.clone()).expect("send");
        wait_acks(&mut a, 1).await;
        let start = Instant::now();
        let (mut sent, mut acked) = (0, 0);
        while acked < n {
            while sent < n && sent - acked < 2 * window {
                a.send(GroupId(0), m.clone()).expect("send");
                sent += 1;
            }
            acked += wait_acks(&mut a, 1).await;
        }
        start.elapsed()
    });
    stop_tx.send(()).expect("stop");
    receiver.join().expect("receiver");
    elapsed
}

async fn wait_acks(a: &mut TcpTransport, want: usize) -> usize {
    let mut got = 0;
    while got < want {
        match recv(a).await {
            Some(TransportEvent::Message { message, .. }) => {
                if matches!(message.body, Body::AppendEntriesResponse(_)) {
                    got += 1;
                }
            }
            Some(TransportEvent::SendFailed { error, .. }) => panic!("send failed: {error}"),
            Some(_) => {}
            None => panic!("transport closed"),
        }
    }
    got
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn summary() {
    let n_small: usize = std::env::var("RINGRAFT_BENCH_MESSAGES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    println!();
    println!("| message | subject | msgs/s | payload MB/s | × blocking |");
    println!("|---|---|---:|---:|---:|");
    for (name, m, n) in [
        ("64 × 64 B", append(64, 64), n_small),
        ("1 × 1 MiB", append(1, 1 << 20), (n_small / 40).max(20)),
    ] {
        let bytes = payload_bytes(&m) as f64;
        let rate = |d: Duration| n as f64 / d.as_secs_f64();
        let base = median((0..RUNS).map(|_| rate(run_blocking(&m, n))).collect());
        let rows = [
            ("blocking, stop-and-wait".to_string(), base),
            (
                "TcpTransport, window 1".to_string(),
                median((0..RUNS).map(|_| rate(run_transport(&m, n, 1))).collect()),
            ),
            (
                "TcpTransport, window 16".to_string(),
                median((0..RUNS).map(|_| rate(run_transport(&m, n, 16))).collect()),
            ),
        ];
        for (subject, r) in rows {
            println!(
                "| {name} | {subject} | {r:.0} | {:.1} | {:.2} |",
                r * bytes / 1e6,
                r / base
            );
        }
    }
}

fn main() {
    if std::env::var("RINGRAFT_BENCH_SUMMARY_ONLY").is_err() {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
    summary();
}
