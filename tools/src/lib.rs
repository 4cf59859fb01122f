//! `ringraft-tools`: the project's binaries.
//!
//! - `ringraft-sim`: runs deterministic simulation seeds against the real consensus core and
//!   prints `N passed, M failed` with a replay command for every failing seed.
//!
//! - `ringraft-load`: starts a local cluster (TCP on loopback with the WAL in a temporary
//!   directory, or `--inmem`) and measures write throughput and latency percentiles.
//!
//! - `ringraft-kv`: the example replicated key-value service speaking RESP ([`kv`]).
//!
//! - `ringraft-wal`: inspect and verify a segment log (see ARCHITECTURE §5).
#![deny(missing_docs)]

pub mod kv;
pub mod load;
