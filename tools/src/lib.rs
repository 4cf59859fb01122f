//! `ringraft-tools`: the project's binaries.
//!
//! - `ringraft-sim`: runs deterministic simulation seeds against real nodes (the runtime's
//!   shard glue around the consensus core, over a simulated disk, network and state machine)
//!   and prints `N passed, M failed` with a replay command for every failing seed.
//!
//! - `ringraft-load`: starts a local cluster (TCP on loopback with the WAL in a temporary
//!   directory, or `--inmem`) and measures write throughput and latency percentiles.
//!
//! - `ringraft-kv`: the example replicated key-value service speaking RESP ([`kv`]). (The
//!   smallest embedding, a replicated counter, is the `ringraft` crate's
//!   `examples/replicated_counter.rs`.)
//!
//! - `ringraft-wal`: inspect and verify a segment log (see ARCHITECTURE §5).
#![deny(missing_docs)]

pub mod kv;
pub mod load;
