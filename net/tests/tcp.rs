//! Loopback tests of the TCP transport (issue 5 §5). Timeouts here are hang guards only; no
//! test asserts on how long anything took.

use bytes::{Bytes, BytesMut};
use ringraft_net::codec::encode_hello;
use ringraft_net::frame::{FrameError, FrameHeader, FrameKind};
use ringraft_net::handshake::{ClusterId, HandshakeError, Hello, Lane};
use ringraft_net::message::*;
use ringraft_net::tcp::{ConfigError, TcpConfig, TcpTransport};
use ringraft_net::transport::{recv, PeerError, Transport, TransportEvent};
use ringraft_storage::{
    Configuration, Entry, EntryKind, GroupId, Index, LogId, NodeId, SnapshotMeta, Term,
};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use zerocopy::IntoBytes;

const GUARD: Duration = Duration::from_secs(30);

fn config(id: u64) -> TcpConfig {
    let mut c = TcpConfig::new(
        NodeId(id),
        ClusterId(7),
        "127.0.0.1:0".parse().expect("addr"),
    );
    c.max_inflight = 4;
    c.backoff_initial = Duration::from_millis(5);
    c.backoff_max = Duration::from_millis(100);
    c
}

async fn pair(a: TcpConfig, b: TcpConfig) -> (TcpTransport, TcpTransport) {
    let mut ta = TcpTransport::bind(a).await.expect("bind a");
    let mut tb = TcpTransport::bind(b).await.expect("bind b");
    let (ida, idb) = (ta.local_id(), tb.local_id());
    ta.add_peer(idb, tb.local_address());
    tb.add_peer(ida, ta.local_address());
    (ta, tb)
}

/// The next event matching `pick`, skipping others; panics after the hang guard.
async fn expect<T: Transport, R>(
    t: &mut T,
    mut pick: impl FnMut(TransportEvent) -> Option<R>,
) -> R {
    let wait = async {
        loop {
            let event = recv(t).await.expect("transport open");
            if let Some(r) = pick(event) {
                return r;
            }
        }
    };
    tokio::time::timeout(GUARD, wait)
        .await
        .expect("hang guard: event never came")
}

async fn next_message<T: Transport>(t: &mut T) -> Message {
    expect(t, |e| match e {
        TransportEvent::Message { message, .. } => Some(message),
        _ => None,
    })
    .await
}

fn msg(from: u64, to: u64, body: Body) -> Message {
    Message {
        from: NodeId(from),
        to: NodeId(to),
        term: Term(2),
        body,
    }
}

fn append(round: u64, entries: usize) -> Body {
    Body::AppendEntries(AppendEntries {
        prev_log_id: LogId::new(Term(1), Index(round * 10)),
        entries: (0..entries)
            .map(|i| {
                let id = LogId::new(Term(2), Index(round * 10 + 1 + i as u64));
                Entry::new(id, EntryKind::Command, Bytes::from(vec![i as u8; 100]))
            })
            .collect(),
        leader_commit: Index(round),
        round,
    })
}

fn ack(round: u64) -> Body {
    Body::AppendEntriesResponse(AppendEntriesResponse {
        result: AppendResult::Success {
            match_index: Index(round),
        },
        round,
    })
}

fn snapshot_meta() -> SnapshotMeta {
    SnapshotMeta {
        id: "snap-1".into(),
        last: LogId::new(Term(2), Index(100)),
        configuration: Configuration::voters_with_default_addresses([NodeId(1), NodeId(2)]),
        configuration_index: Index(1),
        size: 64 << 20,
    }
}

async fn wait_until(mut f: impl FnMut() -> bool) {
    tokio::time::timeout(GUARD, async {
        while !f() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await
    .expect("hang guard: condition never held");
}

#[tokio::test]
async fn every_rpc_kind_crosses_loopback_and_every_response_comes_back() {
    let (mut a, mut b) = pair(config(1), config(2)).await;
    let last = LogId::new(Term(1), Index(5));
    let requests = [
        append(1, 3),
        Body::Heartbeat {
            leader_commit: Index(4),
            round: 9,
        },
        Body::RequestVote {
            last_log_id: last,
            leadership_transfer: true,
        },
        Body::PreVote { last_log_id: last },
        Body::TimeoutNow,
        Body::InstallSnapshot(InstallSnapshot {
            meta: snapshot_meta(),
            offset: 0,
            data: Bytes::from_static(b"chunk"),
            done: false,
            stage: true,
            round: 3,
        }),
    ];
    let responses = [
        ack(1),
        Body::HeartbeatResponse { round: 9 },
        Body::RequestVoteResponse { granted: true },
        Body::PreVoteResponse { granted: false },
        Body::InstallSnapshotResponse(InstallSnapshotResponse {
            last: LogId::new(Term(2), Index(100)),
            next_offset: 5,
            done: false,
            stage: true,
            round: 3,
        }),
    ];
    for body in &requests {
        let m = msg(1, 2, body.clone());
        a.send(GroupId(3), m.clone()).expect("send");
        // Lanes are independent connections, so compare per message rather than by order.
        let got = next_message(&mut b).await;
        assert_eq!(got, m);
    }
    for body in &responses {
        let m = msg(2, 1, body.clone());
        b.send(GroupId(3), m.clone()).expect("send");
        assert_eq!(next_message(&mut a).await, m);
    }
    assert_eq!(a.inflight(NodeId(2)), 0, "every bulk request was answered");
}

#[tokio::test]
async fn append_entries_are_pipelined_in_order_up_to_the_window() {
    let (mut a, mut b) = pair(config(1), config(2)).await;
    for round in 0..10 {
        a.send(GroupId(0), msg(1, 2, append(round, 2)))
            .expect("send");
    }
    for round in 0..4 {
        let m = next_message(&mut b).await;
        assert!(matches!(m.body, Body::AppendEntries(ref ae) if ae.round == round));
    }
    wait_until(|| a.inflight(NodeId(2)) == 4 && a.queued(NodeId(2)) == 6).await;
    // Answering one request opens the window by one.
    b.send(GroupId(0), msg(2, 1, ack(0))).expect("respond");
    let m = next_message(&mut b).await;
    assert!(matches!(m.body, Body::AppendEntries(ref ae) if ae.round == 4));
    wait_until(|| a.inflight(NodeId(2)) == 4 && a.queued(NodeId(2)) == 5).await;
    for round in 1..10 {
        b.send(GroupId(0), msg(2, 1, ack(round))).expect("respond");
        if round + 4 < 10 {
            let m = next_message(&mut b).await;
            assert!(matches!(m.body, Body::AppendEntries(ref ae) if ae.round == round + 4));
        }
    }
    for round in 0..10 {
        assert_eq!(next_message(&mut a).await.body, ack(round));
    }
    wait_until(|| a.inflight(NodeId(2)) == 0).await;
}

#[tokio::test]
async fn a_peer_that_vanishes_mid_pipeline_fails_the_requests_in_flight() {
    let (mut a, mut b) = pair(config(1), config(2)).await;
    for round in 0..6 {
        a.send(GroupId(0), msg(1, 2, append(round, 1)))
            .expect("send");
    }
    for _ in 0..4 {
        next_message(&mut b).await;
    }
    wait_until(|| a.inflight(NodeId(2)) == 4).await;
    drop(b);
    let (failed, error) = expect(&mut a, |e| match e {
        TransportEvent::SendFailed {
            peer: NodeId(2),
            failed,
            error,
        } => Some((failed, error)),
        _ => None,
    })
    .await;
    let ids: Vec<u64> = failed.iter().map(|f| f.request_id).collect();
    assert_eq!(
        ids,
        vec![1, 2, 3, 4, 5, 6],
        "in flight first, then the queued ones"
    );
    assert!(failed.iter().all(|f| f.kind == FrameKind::AppendEntries));
    assert!(
        matches!(error, PeerError::Closed | PeerError::Io { .. }),
        "{error}"
    );
}

#[tokio::test]
async fn garbage_and_oversized_frames_close_only_their_connection() {
    let mut small = config(2);
    small.max_frame_bytes = 64 << 10;
    let (mut a, mut b) = pair(config(1), small).await;

    let mut raw = TcpStream::connect(b.local_address())
        .await
        .expect("connect");
    raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let error = expect(&mut b, |e| match e {
        TransportEvent::InboundRejected { error, .. } => Some(error),
        _ => None,
    })
    .await;
    assert!(matches!(
        error,
        PeerError::Handshake(HandshakeError::Frame(FrameError::BadMagic { .. }))
    ));
    let mut sink = Vec::new();
    let read = tokio::time::timeout(GUARD, raw.read_to_end(&mut sink)).await;
    assert!(
        matches!(read, Ok(Ok(_)) | Ok(Err(_))),
        "the garbage connection is closed"
    );

    // A well-behaved handshake, then a header announcing a body beyond the maximum.
    let mut raw = TcpStream::connect(b.local_address())
        .await
        .expect("connect");
    let hello = Hello::new(ClusterId(7), NodeId(9), NodeId(2), Lane::Control);
    raw.write_all(&encode_hello(&hello).to_bytes())
        .await
        .expect("hello");
    let mut answer = BytesMut::zeroed(64);
    raw.read_exact(&mut answer).await.expect("their hello");
    let header = FrameHeader::new(FrameKind::Heartbeat, 1, 0, 100 << 20);
    raw.write_all(header.as_bytes()).await.expect("header");
    let (peer, error) = expect(&mut b, |e| match e {
        TransportEvent::InboundRejected { peer, error, .. } => Some((peer, error)),
        _ => None,
    })
    .await;
    assert_eq!(peer, Some(NodeId(9)));
    assert!(
        matches!(error, PeerError::Frame(FrameError::FrameTooLarge { .. })),
        "{error}"
    );

    // The node still serves its real peer.
    let hb = msg(
        1,
        2,
        Body::Heartbeat {
            leader_commit: Index(1),
            round: 1,
        },
    );
    a.send(GroupId(0), hb.clone()).expect("send");
    assert_eq!(next_message(&mut b).await, hb);
}

#[tokio::test]
async fn a_node_of_another_cluster_is_refused_with_a_typed_error() {
    let mut other = config(2);
    other.cluster_id = ClusterId(8);
    let (mut a, mut b) = pair(config(1), other).await;
    let error = expect(&mut a, |e| match e {
        TransportEvent::PeerDisconnected { error, .. } => Some(error),
        _ => None,
    })
    .await;
    assert_eq!(
        error,
        PeerError::Handshake(HandshakeError::ClusterMismatch {
            ours: ClusterId(7),
            theirs: ClusterId(8)
        })
    );
    let error = expect(&mut b, |e| match e {
        TransportEvent::InboundRejected { error, .. } => Some(error),
        _ => None,
    })
    .await;
    assert!(matches!(
        error,
        PeerError::Handshake(HandshakeError::ClusterMismatch { .. })
    ));
}

#[tokio::test]
async fn a_64_mib_snapshot_streams_in_chunks_with_flow_control() {
    const CHUNK: usize = 1 << 20;
    let mut ca = config(1);
    ca.max_frame_bytes = 2 << 20;
    let mut cb = config(2);
    cb.max_frame_bytes = 2 << 20;
    let (mut a, mut b) = pair(ca, cb).await;
    let data = Bytes::from(
        (0..64 * CHUNK)
            .map(|i| (i * 31 / 7) as u8)
            .collect::<Vec<u8>>(),
    );
    let chunks = data.len() / CHUNK;
    let mut sent = 0;
    let mut received = BytesMut::with_capacity(data.len());
    while received.len() < data.len() {
        // Keep the queue short and let the window pace the stream.
        while sent < chunks && sent < received.len() / CHUNK + 8 {
            let chunk = InstallSnapshot {
                meta: snapshot_meta(),
                offset: (sent * CHUNK) as u64,
                data: data.slice(sent * CHUNK..(sent + 1) * CHUNK),
                done: sent + 1 == chunks,
                stage: false,
                round: sent as u64,
            };
            a.send(GroupId(0), msg(1, 2, Body::InstallSnapshot(chunk)))
                .expect("send");
            sent += 1;
        }
        let m = next_message(&mut b).await;
        let Body::InstallSnapshot(chunk) = m.body else {
            panic!("not a chunk")
        };
        assert_eq!(
            chunk.offset as usize,
            received.len(),
            "chunks arrive in order"
        );
        assert!(
            a.inflight(NodeId(2)) <= 4,
            "the window bounds what is in flight"
        );
        received.extend_from_slice(&chunk.data);
        let response = InstallSnapshotResponse {
            last: chunk.meta.last,
            next_offset: received.len() as u64,
            done: chunk.done,
            stage: false,
            round: chunk.round,
        };
        b.send(
            GroupId(0),
            msg(2, 1, Body::InstallSnapshotResponse(response)),
        )
        .expect("ack");
    }
    assert!(received[..] == data[..], "the snapshot arrived intact");
}

#[tokio::test]
async fn a_restarted_peer_is_redialled() {
    let (mut a, b) = pair(config(1), config(2)).await;
    let address = b.local_address();
    expect(&mut a, |e| {
        matches!(e, TransportEvent::PeerConnected { .. }).then_some(())
    })
    .await;
    drop(b);
    expect(&mut a, |e| {
        matches!(e, TransportEvent::PeerDisconnected { .. }).then_some(())
    })
    .await;
    let mut restarted = config(2);
    restarted.bind_address = address;
    // The old listener closes once its task observes the shutdown: retry until the port frees.
    let mut b = tokio::time::timeout(GUARD, async {
        loop {
            match TcpTransport::bind(restarted.clone()).await {
                Ok(t) => return t,
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    })
    .await
    .expect("rebind");
    expect(&mut a, |e| {
        matches!(e, TransportEvent::PeerConnected { .. }).then_some(())
    })
    .await;
    let hb = msg(
        1,
        2,
        Body::Heartbeat {
            leader_commit: Index(1),
            round: 2,
        },
    );
    a.send(GroupId(0), hb.clone()).expect("send");
    assert_eq!(next_message(&mut b).await, hb);
}

#[tokio::test]
async fn outgoing_connections_bind_the_advertised_host_as_source() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let mut c = config(1);
    c.bind_address = "127.0.0.2:0".parse().expect("addr");
    let mut a = TcpTransport::bind(c).await.expect("bind");
    a.add_peer(NodeId(2), listener.local_addr().expect("addr"));
    let (_, from) = tokio::time::timeout(GUARD, listener.accept())
        .await
        .expect("guard")
        .expect("accept");
    assert_eq!(
        from.ip(),
        "127.0.0.2".parse::<std::net::IpAddr>().expect("ip")
    );
}

#[tokio::test]
async fn binding_an_unspecified_address_without_advertise_is_refused() {
    let any: SocketAddr = "0.0.0.0:0".parse().expect("addr");
    let c = TcpConfig::new(NodeId(1), ClusterId(1), any);
    assert!(matches!(
        TcpTransport::bind(c).await,
        Err(ConfigError::UnspecifiedWithoutAdvertise(_))
    ));
}

/// An AppendEntries of 64 entries of 1000 bytes (a frame of about 66 KB).
fn big_append(round: u64) -> Body {
    Body::AppendEntries(AppendEntries {
        prev_log_id: LogId::new(Term(1), Index(round * 64)),
        entries: (0..64)
            .map(|i| {
                let id = LogId::new(Term(2), Index(round * 64 + 1 + i));
                Entry::new(id, EntryKind::Command, Bytes::from(vec![i as u8; 1000]))
            })
            .collect(),
        leader_commit: Index(round),
        round,
    })
}

/// A node that does not take its messages holds at most `max_received_bytes` of them: its
/// connections are not read meanwhile, so TCP flow control holds the sender back (its queue
/// fills and `send` answers `QueueFull`), and nothing is lost once the node takes them.
#[tokio::test]
async fn a_slow_receiver_holds_the_sender_back_instead_of_buffering_without_bound() {
    const MESSAGES: u64 = 1000; // about 66 MB, far more than the sockets buffer
    let mut sender = config(1);
    sender.max_inflight = 1 << 20; // no window: only the receiver may hold it back
    sender.max_queued = 64;
    let mut receiver = config(2);
    receiver.max_received_bytes = 1 << 20;
    let (mut a, mut b) = pair(sender, receiver).await;
    // Send until the sender has been held back for 150 tries 2 ms apart without b taking
    // anything.
    let mut sent = 0;
    let mut refused = 0;
    while sent < MESSAGES {
        match a.send(GroupId(0), msg(1, 2, big_append(sent))) {
            Ok(()) => {
                sent += 1;
                refused = 0;
            }
            Err(ringraft_net::transport::SendError::QueueFull { .. }) => {
                refused += 1;
                if refused == 150 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            Err(e) => panic!("send: {e:?}"),
        }
    }
    assert!(sent < MESSAGES, "the sender was never held back");
    let held = b.received_held_bytes();
    assert!(
        held <= (1 << 20) + (70 << 10),
        "{held} bytes held for a node whose budget is 1 MiB"
    );
    // Taken in order, every message arrives, the held-back ones too.
    let mut next = 0;
    while next < MESSAGES {
        if sent < MESSAGES && a.send(GroupId(0), msg(1, 2, big_append(sent))).is_ok() {
            sent += 1;
        }
        let m = next_message(&mut b).await;
        assert!(
            matches!(m.body, Body::AppendEntries(ref ae) if ae.round == next),
            "message {next} out of order or missing"
        );
        next += 1;
        assert!(b.received_held_bytes() <= (1 << 20) + (70 << 10));
    }
}

#[test]
fn a_receive_budget_of_zero_is_refused() {
    let mut c = config(1);
    c.max_received_bytes = 0;
    assert!(matches!(c.validate(), Err(ConfigError::ReceivedBudget(0))));
}
