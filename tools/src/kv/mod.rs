//! `ringraft-kv`: an example replicated key-value service that embeds ringraft and speaks a
//! RESP2 subset, so `redis-cli` and `redis-benchmark` work against it.
//!
//! ```text
//!  client ──RESP──► server (tokio, own thread) ──apply_batch / read_index──► Raft ──TCP──► peers
//!                     │  follower: forwards to the leader (RAFT.FWD)             │
//!                     ▼                                                          ▼ committed
//!                 SharedState ◄──────────────────── KvFsm (the shard thread, or an apply thread)
//! ```
//!
//! Requests a client pipelines are executed together: consecutive writes as one
//! `apply_batch`, consecutive reads on one read point, answered in order. Commands and
//! snapshots are a version byte then MessagePack (serde + rmp-serde, [`fsm`]).
//!
//! - [`node`]: stores under the data directory, start-up and bootstrap, `RAFT.INFO`.
//! - [`commands`]: the commands, and how failures map to `-ERR` / `-NOTLEADER` / `-UNKNOWN`.
//! - [`server`]: the RESP server and forwarding.
//! - [`fsm`]: the replicated state machine, its command and snapshot formats.
//! - [`resp`]: the protocol; [`client`]: a tiny blocking client.
//! - [`options`]: command line and config file; [`local`]: `ringraft-kv local`.
//! - [`metrics`]: `--metrics ADDR`, Prometheus text at `GET /metrics`; [`logs`]: the node's
//!   logs on stderr, one line per event with an RFC 3339 UTC timestamp (`RINGRAFT_LOG=info`,
//!   `--log-format json`).

pub mod client;
pub mod commands;
pub mod fsm;
pub mod local;
pub mod logs;
pub mod metrics;
pub mod node;
pub mod options;
pub mod resp;
pub mod server;
pub mod signals;
