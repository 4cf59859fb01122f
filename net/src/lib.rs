//! `ringraft-net`: the messages ringraft nodes exchange, the frame codec, and the transports
//! that carry them (ARCHITECTURE §6).
//!
//! ```text
//!   core ──Effect::Send(Message)──► Transport::send(group, m)
//!                                      │  codec: Message ⇄ frame (32-byte header + body;
//!                                      │  entries as storage record bytes, zero-copy)
//!            ┌─────────────────────────┴──────────────────────────┐
//!            ▼                                                    ▼
//!     TcpTransport (tokio, current-thread)                 MemTransport (tests)
//!     per peer: control lane + bulk lane,                  drop / delay / partition /
//!     pipelined window, vectored writes,                   disconnect hooks
//!     reconnect with backoff, StreamLayer (TLS: `tls`)
//!            │                                                    │
//!            └──► TransportEvent::Message ──► Input::Message(m) ──► peer's core
//! ```
//!
//! - [`message`]: the RPC types the consensus core produces and consumes.
//! - [`frame`] and [`codec`]: the wire format and its never-panicking, bounded decoder.
//! - [`handshake`]: cluster id, node id and version negotiation when a connection opens.
//! - [`transport`]: the [`Transport`](transport::Transport) trait the shard thread drives.
//! - [`tcp`], [`stream`], [`memory`]: the transports; `tls` (feature `tls`): mutual TLS.
//!
//! ```
//! use bytes::Bytes;
//! use ringraft_net::codec::{decode_frame, encode_message, Payload};
//! use ringraft_net::frame::DEFAULT_MAX_FRAME_BYTES;
//! use ringraft_net::memory::MemNetwork;
//! use ringraft_net::message::{AppendEntries, Body, Message};
//! use ringraft_net::transport::{Transport, TransportEvent};
//! use ringraft_storage::{Entry, EntryKind, GroupId, Index, LogId, NodeId, Term};
//!
//! let entry = Entry::new(LogId::new(Term(3), Index(10)), EntryKind::Command, Bytes::from("x=1"));
//! let m = Message {
//!     from: NodeId(1),
//!     to: NodeId(2),
//!     term: Term(3),
//!     body: Body::AppendEntries(AppendEntries {
//!         prev_log_id: LogId::new(Term(3), Index(9)),
//!         entries: vec![entry],
//!         leader_commit: Index(9),
//!         round: 4,
//!     }),
//! };
//!
//! // On the wire: one frame; the entry travels as its storage record.
//! let frame = encode_message(&m, 1, GroupId(0), DEFAULT_MAX_FRAME_BYTES)?.to_bytes();
//! let (decoded, _) = decode_frame(&frame, DEFAULT_MAX_FRAME_BYTES)?;
//! assert_eq!(decoded.payload, Payload::Message(m.clone()));
//!
//! // Through the in-memory transport.
//! let net = MemNetwork::new();
//! let mut n1 = net.transport(NodeId(1));
//! let mut n2 = net.transport(NodeId(2));
//! n1.send(GroupId(0), m.clone()).expect("queued");
//! assert_eq!(n2.try_recv(), Some(TransportEvent::Message { group: GroupId(0), message: m }));
//! # Ok::<(), ringraft_net::frame::FrameError>(())
//! ```
#![deny(missing_docs)]

pub mod codec;
pub mod frame;
pub mod handshake;
pub mod memory;
pub mod message;
pub mod stream;
pub mod tcp;
#[cfg(feature = "tls")]
pub mod tls;
pub mod transport;

#[cfg(test)]
mod codec_tests;
