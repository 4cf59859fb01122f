//! `ringraft-net`: the messages ringraft nodes exchange, and the transports that carry them.
//!
//! ```text
//!   core ──Send{to, Message}──► Transport ──frames──► peer's Transport ──► peer's core
//! ```
//!
//! Today this crate holds the RPC [`message`] types the consensus core produces and consumes.
//! The transports move them without reshaping them. The binary frame codec (fixed header with
//! magic, version, kind, flags, length, request id and crc32c), the pipelined TCP transport on
//! tokio and the in-memory transport for tests are built on these types (DESIGN.md §6).
//!
//! ```
//! use ringraft_net::message::{Body, Message};
//! use ringraft_storage::{Index, NodeId, Term};
//!
//! let m = Message {
//!     from: NodeId(1),
//!     to: NodeId(2),
//!     term: Term(3),
//!     body: Body::Heartbeat { leader_commit: Index(9), round: 4 },
//! };
//! assert_eq!(m.body.kind_name(), "Heartbeat");
//! ```
#![deny(missing_docs)]

pub mod message;
