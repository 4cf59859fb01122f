//! The deterministic simulator (feature `sim`, ARCHITECTURE §8 layer 3).
//!
//! ```text
//!   seed ──► Rng ──► fault schedule, network delays/loss, disk latency, crash damage, workload
//!                        │
//!   World: N nodes, each the runtime's shard glue around a real `Core`
//!          (node::shard::Shard::turn, driven with simulated time)
//!            ├─ LogStore  ──► simulated disk: durable when the world says, torn by crashes
//!            ├─ Transport ──► simulated network: delay, loss, duplication, partitions
//!            ├─ Fsm       ──► the key-value model, applied inline
//!            ├─ snapshot worker jobs, run when the world schedules them
//!            └─ submission queue and reply futures ◄── simulated clients and operators
//!                        │
//!   checkers after every turn: invariants, election safety, commit and state-machine safety,
//!   leader completeness, reads, durability of what was said, configurations; at the end:
//!   log matching, acknowledged writes, linearizability, liveness after healing
//! ```
//!
//! With [`SimConfig::groups`] above one, a seed runs that many groups on the same nodes, as a
//! `MultiRaft` node hosts them: crashes, pauses and partitions hit every group's replica on a
//! node at once, a node's groups share a group-commit disk and campaign slots, and every group
//! is checked on its own.
//!
//! Everything derives from one `u64` seed, and the world is a single-threaded discrete-event
//! loop over simulated time, so a seed replays exactly: [`Report::trace_hash`] hashes every
//! processed event, and equal seeds give equal hashes.
//!
//! ```
//! use ringraft::sim::{run, SimConfig};
//!
//! let report = run(&SimConfig::new(42));
//! assert!(report.failure.is_none(), "{:?}", report.failure);
//! ```

mod checks;
mod chunks;
mod disk;
pub mod kv;
pub mod linearizability;
mod node;
pub mod testkit;
mod world;

pub use world::{run, Report, SimConfig};
