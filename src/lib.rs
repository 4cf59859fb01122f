//! ringraft: Raft consensus for Rust services.
//!
//! Embed it to replicate your state machine: implement [`Fsm`] (apply a committed command,
//! take and restore a snapshot), start one [`Raft`] node per server, bootstrap the cluster
//! once, then `apply` commands on the leader and read linearizably with `read_index`. Here, a
//! three-node cluster in one process, in memory, replicating a sum:
//!
//! ```
//! use bytes::Bytes;
//! use ringraft::{Config, Fsm, FsmError, FsmSnapshot, Raft};
//! use ringraft_net::memory::MemNetwork;
//! use ringraft_storage::{Configuration, Entry, EntryKind, InmemSnapshotStore, InmemStore, NodeId};
//! use std::io::{Read, Write};
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! /// Adds the decimal numbers it is sent; answers with the sum.
//! struct Sum(Arc<AtomicU64>);
//!
//! impl Fsm for Sum {
//!     fn apply(&mut self, entry: &Entry) -> Bytes {
//!         let text = std::str::from_utf8(&entry.data).unwrap_or_default();
//!         let n: u64 = match entry.kind {
//!             EntryKind::Command => text.parse().unwrap_or(0), // Garbage adds nothing.
//!             _ => 0,
//!         };
//!         Bytes::from((self.0.fetch_add(n, Ordering::SeqCst) + n).to_string())
//!     }
//!     fn snapshot(&mut self) -> Result<Box<dyn FsmSnapshot>, FsmError> {
//!         Ok(Box::new(SumSnapshot(self.0.load(Ordering::SeqCst))))
//!     }
//!     fn restore(&mut self, snapshot: &mut dyn Read) -> Result<(), FsmError> {
//!         let mut bytes = [0u8; 8];
//!         snapshot.read_exact(&mut bytes)?;
//!         self.0.store(u64::from_le_bytes(bytes), Ordering::SeqCst);
//!         Ok(())
//!     }
//! }
//!
//! struct SumSnapshot(u64);
//!
//! impl FsmSnapshot for SumSnapshot {
//!     fn persist(&mut self, sink: &mut dyn Write) -> Result<(), FsmError> {
//!         Ok(sink.write_all(&self.0.to_le_bytes())?)
//!     }
//! }
//!
//! // Three nodes on an in-memory network, each with in-memory stores.
//! let network = MemNetwork::new();
//! let ids = [NodeId(1), NodeId(2), NodeId(3)];
//! let mut nodes = Vec::new();
//! for id in ids {
//!     let sum = Arc::new(AtomicU64::new(0));
//!     let store = InmemStore::new();
//!     let (snapshots, transport) = (InmemSnapshotStore::new(), network.transport(id));
//!     let fsm = Sum(sum.clone());
//!     let raft = Raft::new(Config::fast(id), fsm, store.clone(), store, snapshots, transport)?;
//!     nodes.push((raft, sum));
//! }
//! // Every node is bootstrapped with the same configuration; one of them becomes leader.
//! let configuration = Configuration::voters_with_default_addresses(ids);
//! for (raft, _) in &nodes {
//!     raft.bootstrap_cluster(configuration.clone()).wait()?;
//! }
//! let mut changes = nodes[0].0.leader_changes();
//! let leader = loop {
//!     if let Some(id) = changes.current().leader {
//!         break id;
//!     }
//!     changes.wait_changed(Duration::from_secs(5));
//! };
//! let (raft, sum) = &nodes[ids.iter().position(|&id| id == leader).unwrap_or(0)];
//!
//! // Writes go through the leader; each resolves once committed and applied there.
//! raft.apply("40", Duration::from_secs(1)).wait()?;
//! let applied = raft.apply("2", Duration::from_secs(1)).wait()?;
//! assert_eq!(applied.response, Bytes::from("42"));
//!
//! // A linearizable read: `read_index` confirms leadership with a quorum and resolves once
//! // this node applied everything committed before the read; then read the local state.
//! raft.read_index(Duration::from_secs(1)).wait()?;
//! assert_eq!(sum.load(Ordering::SeqCst), 42);
//!
//! for (raft, _) in &nodes {
//!     raft.shutdown().wait().map_err(|()| "shutdown failed")?;
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! For durable nodes, use `ringraft_storage::WalLogStore` (the io_uring write-ahead log),
//! `FileStableStore` and `FileSnapshotStore`, and a [`TcpTransportConfig`]: the crate's
//! `examples/replicated_counter.rs` runs three nodes that way (with `add_voter` and a restart),
//! `cargo run --example replicated_counter`.
//!
//! # Map of the crate
//!
//! ```text
//!  application ──► Raft handle ──► shard thread: core (sans-IO) + glue + WAL + peers
//!                                      │ committed batches
//!                                      ▼
//!                  your state machine: on the shard thread while it is fast, else on a
//!                  thread of its own (`Config::apply_placement`)
//! ```
//!
//! - [`api`] (re-exported at the root): [`Raft`] and its futures, [`Config`], [`Fsm`], the
//!   errors of each request, observers, metrics, offline tools (`recover_cluster`,
//!   `peers.json`); [`MultiRaft`] for thousands of groups per node (one thread, one transport,
//!   idle groups quiesced).
//! - [`core`]: the sans-IO consensus state machine, `step(now, input)` → effects, usable on
//!   its own.
//! - `sim` (feature `sim`): the deterministic simulator that runs whole clusters of real nodes
//!   under faults.
//! - The stores and transports are in sibling crates: `ringraft-storage` (entries, the
//!   segment WAL, stable and snapshot stores, in-memory stores) and `ringraft-net` (the TCP
//!   transport, the in-memory network).
//!
//! docs/ARCHITECTURE.md in the repository describes the design: layers, threads, the path of a
//! write, durability order, formats, and what differs from hashicorp/raft.
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
    MultiRaft, MultiRaftConfig, MultiRaftStats, Observation, Observer, ObserverId, PeersJsonError,
    Raft, RaftFuture, RaftState, ReadError, RecoverClusterError, ReloadConfigError,
    ReloadableConfig, RestoreError, ShardHost, StartError, TakeSnapshotError, TcpTransportConfig,
    TransferError,
};
