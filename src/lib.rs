//! ringraft: Raft consensus for Rust services.
//!
//! ```text
//!  application ──► Raft handle ──► shard thread: core (sans-IO) + glue + WAL + peers
//!                                      │ committed batches
//!                                      ▼
//!                  your state machine: on the shard thread while it is fast, else on a
//!                  thread of its own (`Config::apply_placement`)
//! ```
//!
//! The public API is [`Raft`]: start a node with [`Raft::new`] (a [`Config`], your [`Fsm`], a
//! log store, a stable store, a snapshot store and a transport), bootstrap a new cluster, then
//! `apply` commands and read linearizably. The stores and transports are in
//! `ringraft-storage` (the io_uring write-ahead log, in-memory stores) and `ringraft-net`
//! (TCP, in memory). Underneath, [`core`] is the sans-IO consensus state machine, usable on
//! its own; behind the `sim` feature, `sim` is the deterministic simulator that runs whole
//! clusters of real cores under faults. docs/ARCHITECTURE.md in the repository describes the
//! design.
//!
//! ```
//! use bytes::Bytes;
//! use ringraft::{Config, Fsm, FsmError, FsmSnapshot, Raft};
//! use ringraft_net::memory::MemNetwork;
//! use ringraft_storage::{Configuration, Entry, InmemSnapshotStore, InmemStore, NodeId};
//! use std::time::Duration;
//!
//! /// A state machine that sums the numbers it is sent.
//! struct Sum(u64);
//! impl Fsm for Sum {
//!     fn apply(&mut self, entry: &Entry) -> Bytes {
//!         let text = std::str::from_utf8(&entry.data).unwrap_or("0");
//!         let n: u64 = text.parse().unwrap_or(0);
//!         self.0 += n;
//!         Bytes::from(self.0.to_string())
//!     }
//!     fn snapshot(&mut self) -> Result<Box<dyn FsmSnapshot>, FsmError> {
//!         Err("not needed here".into())
//!     }
//!     fn restore(&mut self, _snapshot: &mut dyn std::io::Read) -> Result<(), FsmError> {
//!         Ok(())
//!     }
//! }
//!
//! let network = MemNetwork::new();
//! let store = InmemStore::new();
//! let raft = Raft::new(
//!     Config::fast(NodeId(1)),
//!     Sum(0),
//!     store.clone(),
//!     store,
//!     InmemSnapshotStore::new(),
//!     network.transport(NodeId(1)),
//! )?;
//! raft.bootstrap_cluster(Configuration::voters_with_default_addresses([NodeId(1)]))
//!     .wait()?;
//! let mut leader = raft.leader_changes();
//! while leader.current().leader != Some(NodeId(1)) {
//!     leader.wait_changed(Duration::from_secs(5));
//! }
//! raft.apply("40", Duration::from_secs(1)).wait()?;
//! let applied = raft.apply("2", Duration::from_secs(1)).wait()?;
//! assert_eq!(applied.response, Bytes::from("42"));
//! raft.read_index(Duration::from_secs(1)).wait()?; // a linearizable read point
//! raft.shutdown().wait();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(missing_docs)]

pub mod api;
pub mod core;
mod node;
#[cfg(feature = "sim")]
pub mod sim;

pub use api::{
    get_configuration, has_existing_state, parse_peers_json, read_peers_json, recover_cluster,
    Applied, AppliedBatch, ApplyError, ApplyPlacement, BootstrapClusterError, Config, ConfigError,
    Fsm, FsmError, FsmSnapshot, IntoTransport, LeaderChanges, LeaderObservation, MembershipError,
    Observation, Observer, ObserverId, PeersJsonError, Raft, RaftFuture, RaftState, ReadError,
    RecoverClusterError, ReloadConfigError, ReloadableConfig, RestoreError, ShardHost, StartError,
    TakeSnapshotError, TcpTransportConfig, TransferError,
};
