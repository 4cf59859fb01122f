//! ringraft: Raft consensus for Rust services.
//!
//! ```text
//!  application ──► Raft handle ──► shard thread: core (sans-IO) + glue + WAL + peers
//!                                      │ committed batches
//!                                      ▼
//!                                  apply thread: your state machine
//! ```
//!
//! Today the crate holds the sans-IO consensus [`core`] and, behind the `sim` feature, the
//! deterministic simulator (`sim`) that runs whole clusters of real cores under faults and
//! checks them. The node runtime and the public `Raft` handle are built on the core (see
//! ARCHITECTURE §2 and §7).
//!
//! ```
//! use ringraft::core::{Core, CoreConfig, Effect, Input, Role, Time};
//! use ringraft_storage::{Configuration, NodeId};
//!
//! // A single-node cluster elects itself once its election timer fires.
//! let state = Core::bootstrap_state(&Configuration::voters_with_default_addresses([NodeId(1)]))
//!     .unwrap();
//! let mut core = Core::new(CoreConfig::new(NodeId(1)), state, Time(0)).unwrap();
//! core.step(core.next_timer(), Input::Tick);
//! // Its vote and term must be durable before it can commit: acknowledge every persist.
//! for effect in core.take_effects() {
//!     if let Effect::Persist(batch) = effect {
//!         core.step(Time(0), Input::Persisted { seq: batch.seq });
//!     }
//! }
//! assert_eq!(core.role(), Role::Leader);
//! ```
#![deny(missing_docs)]

pub mod api;
pub mod core;
mod node;
#[cfg(feature = "sim")]
pub mod sim;

pub use api::{
    get_configuration, has_existing_state, parse_peers_json, read_peers_json, recover_cluster,
    Applied, AppliedBatch, ApplyError, BootstrapClusterError, Config, ConfigError, Fsm, FsmError,
    FsmSnapshot, IntoTransport, LeaderChanges, LeaderObservation, MembershipError, Observation,
    Observer, ObserverId, PeersJsonError, Raft, RaftFuture, RaftState, ReadError,
    RecoverClusterError, ReloadConfigError, ReloadableConfig, RestoreError, ShardHost, StartError,
    TakeSnapshotError, TcpTransportConfig, TransferError,
};
