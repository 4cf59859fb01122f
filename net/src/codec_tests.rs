//! Codec tests: round trips for every message kind, and one test per malformation.

use crate::codec::*;
use crate::frame::*;
use crate::handshake::{ClusterId, Hello, Lane};
use crate::message::*;
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use ringraft_storage::{
    Configuration, Entry, EntryKind, GroupId, Index, LogId, NodeId, Server, SnapshotMeta, Term,
};
use zerocopy::IntoBytes;

const MAX: usize = 1 << 20;

fn message(body: Body) -> Message {
    Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(3),
        body,
    }
}

fn entry(index: u64, data: Bytes) -> Entry {
    Entry::new(LogId::new(Term(3), Index(index)), EntryKind::Command, data)
}

fn append(entries: Vec<Entry>) -> Message {
    message(Body::AppendEntries(AppendEntries {
        prev_log_id: LogId::new(Term(2), Index(9)),
        entries,
        leader_commit: Index(8),
        round: 4,
    }))
}

fn round_trip(m: &Message, group: GroupId) -> Frame {
    let encoded = encode_message(m, 77, group, MAX).expect("encode");
    let bytes = encoded.to_bytes();
    assert_eq!(bytes.len(), encoded.len());
    let (frame, used) = decode_frame(&bytes, MAX).expect("decode");
    assert_eq!(used, bytes.len());
    assert_eq!(frame.request_id, 77);
    assert_eq!(frame.group, group);
    assert_eq!(frame.payload, Payload::Message(m.clone()));
    frame
}

fn arb_log_id() -> impl Strategy<Value = LogId> {
    (any::<u64>(), any::<u64>()).prop_map(|(t, i)| LogId::new(Term(t), Index(i)))
}

fn arb_entry() -> impl Strategy<Value = Entry> {
    (
        arb_log_id(),
        1u8..=4,
        proptest::collection::vec(any::<u8>(), 0..200),
        proptest::collection::vec(any::<u8>(), 0..20),
    )
        .prop_map(|(id, kind, data, ext)| Entry {
            id,
            kind: EntryKind::from_code(kind).expect("known kind"),
            data: Bytes::from(data),
            extensions: Bytes::from(ext),
        })
}

fn arb_result() -> impl Strategy<Value = AppendResult> {
    prop_oneof![
        any::<u64>().prop_map(|m| AppendResult::Success {
            match_index: Index(m)
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(r, l)| AppendResult::Conflict {
            rejected_prev_index: Index(r),
            hint: ConflictHint::LogTooShort {
                last_index: Index(l)
            },
        }),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(r, t, f)| {
            AppendResult::Conflict {
                rejected_prev_index: Index(r),
                hint: ConflictHint::TermMismatch {
                    term: Term(t),
                    first_index: Index(f),
                },
            }
        }),
        Just(AppendResult::StaleTerm),
        (any::<u64>(), arb_log_id()).prop_map(|(r, entry)| AppendResult::Conflict {
            rejected_prev_index: Index(r),
            hint: ConflictHint::MissingRestore { entry },
        }),
    ]
}

fn arb_snapshot() -> impl Strategy<Value = InstallSnapshot> {
    (
        "[a-z0-9-]{0,20}",
        arb_log_id(),
        1u64..6,
        any::<u64>(),
        any::<(u64, u64, bool, u64, bool)>(),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(
            |(id, last, servers, ci, (size, offset, done, round, stage), data)| {
                let configuration = Configuration::new(
                    (1..=servers)
                        .map(|i| Server::voter(NodeId(i), format!("10.0.0.{i}:7000")))
                        .collect(),
                );
                InstallSnapshot {
                    meta: SnapshotMeta {
                        id,
                        last,
                        configuration,
                        configuration_index: Index(ci),
                        size,
                    },
                    offset,
                    data: Bytes::from(data),
                    done,
                    stage,
                    round,
                }
            },
        )
}

fn arb_body() -> impl Strategy<Value = Body> {
    prop_oneof![
        (
            arb_log_id(),
            proptest::collection::vec(arb_entry(), 0..8),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(|(prev_log_id, entries, c, round)| Body::AppendEntries(
                AppendEntries {
                    prev_log_id,
                    entries,
                    leader_commit: Index(c),
                    round,
                }
            )),
        (arb_result(), any::<u64>()).prop_map(|(result, round)| Body::AppendEntriesResponse(
            AppendEntriesResponse { result, round }
        )),
        (any::<u64>(), any::<u64>()).prop_map(|(c, round)| Body::Heartbeat {
            leader_commit: Index(c),
            round
        }),
        any::<u64>().prop_map(|round| Body::HeartbeatResponse { round }),
        (arb_log_id(), any::<bool>()).prop_map(|(last_log_id, t)| Body::RequestVote {
            last_log_id,
            leadership_transfer: t
        }),
        any::<bool>().prop_map(|granted| Body::RequestVoteResponse { granted }),
        arb_log_id().prop_map(|last_log_id| Body::PreVote { last_log_id }),
        any::<bool>().prop_map(|granted| Body::PreVoteResponse { granted }),
        Just(Body::TimeoutNow),
        (any::<u64>(), any::<u64>()).prop_map(|(c, round)| Body::Quiesce {
            leader_commit: Index(c),
            round
        }),
        Just(Body::NodePing),
        Just(Body::GroupStopped),
        arb_snapshot().prop_map(Body::InstallSnapshot),
        (
            arb_log_id(),
            any::<u64>(),
            any::<bool>(),
            any::<bool>(),
            any::<u64>()
        )
            .prop_map(|(last, next_offset, done, stage, round)| {
                Body::InstallSnapshotResponse(InstallSnapshotResponse {
                    last,
                    next_offset,
                    done,
                    stage,
                    round,
                })
            }),
    ]
}

proptest! {
    #[test]
    fn every_message_kind_round_trips(
        body in arb_body(), from in any::<u64>(), to in any::<u64>(), term in any::<u64>(),
        group in any::<u64>(),
    ) {
        let m = Message { from: NodeId(from), to: NodeId(to), term: Term(term), body };
        let encoded = encode_message(&m, 5, GroupId(group), MAX).expect("encode");
        let (frame, _) = decode_frame(&encoded.to_bytes(), MAX).expect("decode");
        prop_assert_eq!(frame.payload, Payload::Message(m));
        prop_assert_eq!(frame.group, GroupId(group));
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = decode_frame(&Bytes::from(bytes.clone()), 256);
        let mut buf = BytesMut::from(&bytes[..]);
        let _ = FrameDecoder::new(256).decode(&mut buf);
    }

    #[test]
    fn every_bit_flip_of_a_small_frame_is_detected(byte in 0usize..100, bit in 0u8..8) {
        let m = message(Body::Heartbeat { leader_commit: Index(5), round: 6 });
        let mut bytes = encode_message(&m, 1, GroupId(0), MAX).expect("encode").to_bytes().to_vec();
        let byte = byte % bytes.len();
        bytes[byte] ^= 1 << bit;
        prop_assert!(decode_frame(&Bytes::from(bytes), MAX).is_err());
    }
}

#[test]
fn every_kind_has_a_table_case_that_round_trips() {
    let cases = [
        append(vec![entry(10, Bytes::from_static(b"x"))]),
        message(Body::HeartbeatResponse { round: 1 }),
        message(Body::TimeoutNow),
        message(Body::PreVoteResponse { granted: true }),
        message(Body::Quiesce {
            leader_commit: Index(4),
            round: 9,
        }),
        message(Body::NodePing),
        message(Body::GroupStopped),
    ];
    for m in &cases {
        round_trip(m, GroupId(0));
    }
}

#[test]
fn large_entries_are_sent_by_reference_and_decoded_as_slices_of_the_frame() {
    let payload = Bytes::from(vec![9u8; 1 << 20]);
    let m = append(vec![entry(10, payload.clone())]);
    let encoded = encode_message(&m, 1, GroupId(0), 2 << 20).expect("encode");
    assert!(
        encoded
            .parts()
            .iter()
            .any(|p| p.as_ptr() == payload.as_ptr()),
        "the payload is one of the frame's parts, not a copy"
    );
    let bytes = encoded.to_bytes();
    let (frame, _) = decode_frame(&bytes, 2 << 20).expect("decode");
    let Payload::Message(Message {
        body: Body::AppendEntries(ae),
        ..
    }) = frame.payload
    else {
        panic!("not an AppendEntries");
    };
    let range = bytes.as_ptr_range();
    assert!(
        range.contains(&ae.entries[0].data.as_ptr()),
        "decoded data is a slice of the frame"
    );
}

#[test]
fn entries_travel_as_storage_record_bytes() {
    let e = entry(10, Bytes::from_static(b"set x 1"));
    let bytes = encode_message(&append(vec![e.clone()]), 1, GroupId(4), MAX)
        .expect("encode")
        .to_bytes();
    let mut record = Vec::new();
    ringraft_storage::record::encode_entry(&mut record, GroupId(4), &e, MAX).expect("record");
    let records = &bytes[FRAME_HEADER_SIZE + APPEND_FIXED_BYTES..];
    assert_eq!(
        records,
        &record[..],
        "the frame carries exactly the WAL's record bytes"
    );
}

#[test]
fn the_stream_decoder_waits_for_whole_frames_and_reserves_only_what_the_header_allows() {
    let m = append(vec![entry(10, Bytes::from(vec![1u8; 5000]))]);
    let bytes = encode_message(&m, 9, GroupId(0), MAX)
        .expect("encode")
        .to_bytes();
    let decoder = FrameDecoder::new(MAX);
    let mut buf = BytesMut::new();
    for (i, b) in bytes.iter().enumerate() {
        buf.extend_from_slice(&[*b]);
        let out = decoder.decode(&mut buf).expect("valid prefix");
        if i + 1 < bytes.len() {
            assert!(out.is_none());
            assert!(buf.capacity() <= bytes.len().max(64) * 2);
        } else {
            assert_eq!(
                out.expect("whole frame").payload,
                Payload::Message(m.clone())
            );
        }
    }
    assert!(buf.is_empty());
}

#[test]
fn hello_frames_round_trip() {
    let hello = Hello::new(ClusterId(0xfeed), NodeId(3), NodeId(4), Lane::Control);
    let (frame, _) = decode_frame(&encode_hello(&hello).to_bytes(), 64).expect("decode");
    assert_eq!(frame.payload, Payload::Hello(hello));
}

/// Re-encodes a frame with `body` replaced (and a correct checksum), to reach body checks.
fn with_body(kind: FrameKind, body: &[u8]) -> Bytes {
    let mut header = FrameHeader::new(kind, 1, 0, body.len() as u32);
    let checked = if kind == FrameKind::AppendEntries {
        &body[..body.len().min(APPEND_FIXED_BYTES)]
    } else {
        body
    };
    header.crc = header.compute_crc(checked).into();
    let mut out = header.as_bytes().to_vec();
    out.extend_from_slice(body);
    Bytes::from(out)
}

fn body_of(m: &Message) -> Vec<u8> {
    let bytes = encode_message(m, 1, GroupId(0), MAX)
        .expect("encode")
        .to_bytes();
    bytes[FRAME_HEADER_SIZE..].to_vec()
}

#[test]
fn every_malformation_is_a_distinct_typed_error() {
    let hb = message(Body::Heartbeat {
        leader_commit: Index(1),
        round: 2,
    });
    let good = encode_message(&hb, 1, GroupId(0), MAX)
        .expect("encode")
        .to_bytes();
    let mutate = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut v = good.to_vec();
        f(&mut v);
        decode_frame(&Bytes::from(v), MAX)
    };
    assert!(matches!(
        mutate(&|v| v[0] = b'X'),
        Err(FrameError::BadMagic { .. })
    ));
    assert_eq!(
        mutate(&|v| v[4] = 99),
        Err(FrameError::UnknownVersion { version: 99 })
    );
    assert_eq!(
        mutate(&|v| v[5] = 200),
        Err(FrameError::UnknownKind { code: 200 })
    );
    assert_eq!(
        mutate(&|v| v[6] = 1),
        Err(FrameError::ReservedFlags { flags: 1 })
    );
    assert!(matches!(
        mutate(&|v| v[8..12].copy_from_slice(&u32::MAX.to_le_bytes())),
        Err(FrameError::FrameTooLarge { .. })
    ));
    assert!(matches!(
        mutate(&|v| v[12] ^= 1),
        Err(FrameError::ChecksumMismatch { .. })
    ));
    assert!(matches!(
        mutate(&|v| v.truncate(40)),
        Err(FrameError::TruncatedFrame { .. })
    ));

    let body = body_of(&hb);
    assert!(matches!(
        decode_frame(&with_body(FrameKind::Heartbeat, &body[..30]), MAX),
        Err(FrameError::TruncatedBody {
            kind: FrameKind::Heartbeat,
            ..
        })
    ));
    let mut long = body.clone();
    long.extend_from_slice(&[0; 3]);
    assert_eq!(
        decode_frame(&with_body(FrameKind::Heartbeat, &long), MAX),
        Err(FrameError::TrailingBytes {
            kind: FrameKind::Heartbeat,
            extra: 3
        })
    );
    let mut vote = body_of(&message(Body::RequestVoteResponse { granted: true }));
    vote[24] = 2;
    assert!(matches!(
        decode_frame(&with_body(FrameKind::RequestVoteResponse, &vote), MAX),
        Err(FrameError::BadField {
            field: "granted",
            value: 2,
            ..
        })
    ));
}

#[test]
fn corrupt_entry_records_are_reported_with_their_position() {
    let m = append(vec![
        entry(10, Bytes::from_static(b"a")),
        entry(11, Bytes::from_static(b"b")),
    ]);
    let mut body = body_of(&m);
    let last = body.len() - 1;
    body[last - 7] ^= 0x40; // inside the second record's body
    assert!(matches!(
        decode_frame(&with_body(FrameKind::AppendEntries, &body), MAX),
        Err(FrameError::BadRecord { position: 1, .. })
    ));
    // More records declared than present: the allocation is bounded and the error typed.
    let mut lying = body_of(&m);
    lying[56..60].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        decode_frame(&with_body(FrameKind::AppendEntries, &lying), MAX),
        Err(FrameError::BadRecord { position: 2, .. })
    ));
    // Records of another group in this group's frame.
    let bytes = encode_message(&m, 1, GroupId(5), MAX)
        .expect("encode")
        .to_bytes();
    let mut other = bytes.to_vec();
    other[24..32].copy_from_slice(&6u64.to_le_bytes());
    let mut header = FrameHeader::new(FrameKind::AppendEntries, 1, 6, (other.len() - 32) as u32);
    header.crc = header
        .compute_crc(&other[32..32 + APPEND_FIXED_BYTES])
        .into();
    other[..32].copy_from_slice(header.as_bytes());
    assert_eq!(
        decode_frame(&Bytes::from(other), MAX),
        Err(FrameError::RecordGroupMismatch {
            frame: 6,
            record: 5
        })
    );
}

#[test]
fn messages_larger_than_the_maximum_frame_are_refused_when_encoding() {
    let m = append(vec![entry(10, Bytes::from(vec![0u8; 2000]))]);
    assert!(matches!(
        encode_message(&m, 1, GroupId(0), 1024),
        Err(FrameError::MessageTooLarge { .. })
    ));
}

#[test]
fn errors_display_what_went_wrong() {
    let e = FrameError::TrailingBytes {
        kind: FrameKind::Heartbeat,
        extra: 3,
    };
    assert_eq!(
        e.to_string(),
        "Heartbeat body has 3 bytes after its last field"
    );
}
