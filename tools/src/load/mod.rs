//! The pieces of `ringraft-load`: a local cluster ([`cluster`]), the load it drives at the
//! leader ([`drive`]), what it reports ([`report`]), and many groups at once ([`groups`]).
//!
//! ```text
//!  clients (tasks on one tokio thread) ──apply──► leader ──► followers
//!     │  or a pacer thread at --rate R              (in memory, or TCP + WAL in a temp dir)
//!     ▼
//!  HDR histogram ──► percentiles, JSON line, SVG percentile plot
//! ```

pub mod cluster;
pub mod drive;
pub mod freeze;
pub mod groups;
pub mod report;
