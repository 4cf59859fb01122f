//! The deterministic simulator (feature `sim`, ARCHITECTURE §8 layer 3).
//!
//! ```text
//!   seed ──► Rng ──► fault schedule, network delays/loss, disk latency, crash damage, workload
//!                        │
//!   World: N real `Core`s ◄─► simulated network ◄─► simulated disks ◄─► simulated clients
//!                        │
//!   checkers after every event: invariants, election safety, commit and state-machine safety,
//!   leader completeness; at the end: log matching, acknowledged writes, linearizability,
//!   liveness after healing
//! ```
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
