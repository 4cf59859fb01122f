//! The metrics a node emits through the [`metrics`](https://docs.rs/metrics) facade, with
//! hashicorp/raft's names where hashicorp has the metric.
//!
//! Install a recorder (for example `metrics-exporter-prometheus`, as `ringraft-kv --metrics`
//! does) **before** [`Raft::new`](crate::Raft::new): a node resolves its metric handles against
//! the recorder in force when it starts, so recording costs one indirect call per event (and
//! nothing measurable without a recorder). A thread-local recorder set with
//! `metrics::with_local_recorder` around `Raft::new` works too, except for the per-peer metrics,
//! which are registered later on the shard thread with the global recorder.
//!
//! Every metric carries the label `node_id` (this node's id); per-peer metrics also carry
//! `peer_id`, as hashicorp's do. Timers are histograms in **milliseconds** (hashicorp's unit),
//! as `f64` with sub-millisecond precision. Exporters may rewrite the names: Prometheus turns
//! `raft.commitTime` into `raft_commitTime`.
//!
//! Nothing is recorded per entry: requests are counted per shard turn, commit latency per
//! persist batch, state machine time per committed batch.
//!
//! | name | kind | unit | meaning |
//! |---|---|---|---|
//! | `raft.apply` | counter | calls | `apply` and `apply_batch` calls that reached the shard |
//! | `raft.barrier` | counter | calls | `barrier` calls that reached the shard |
//! | `raft.verify_leader` | counter | calls | `verify_leader` calls that reached the shard |
//! | `raft.restore` | counter | calls | user `restore` calls that reached the shard |
//! | `raft.state.follower` | counter | times | this node became a follower |
//! | `raft.state.pre_candidate` | counter | times | a pre-vote campaign started (ringraft; hashicorp counts it as a candidate) |
//! | `raft.state.candidate` | counter | times | an election started |
//! | `raft.state.leader` | counter | times | an election was won |
//! | `raft.transition.heartbeat_timeout` | counter | times | a follower stopped hearing from its leader and campaigned |
//! | `raft.transition.leader_lease_timeout` | counter | times | a leader stepped down for lack of contact with a quorum |
//! | `raft.peers` | gauge | servers | servers in the latest configuration (voters and non-voters, this node included) |
//! | `raft.term` | gauge | term | current term (ringraft) |
//! | `raft.last_index` | gauge | index | last index in the log (ringraft) |
//! | `raft.commit_index` | gauge | index | commit index (ringraft) |
//! | `raft.applied_index` | gauge | index | last index applied to the state machine (ringraft) |
//! | `raft.commitNumLogs` | gauge | entries | entries committed by the last advance of the commit index |
//! | `raft.commitTime` | histogram | ms | leader: from appending a batch of entries to committing it, one sample per batch |
//! | `raft.leader.dispatchLog` | histogram | ms | leader: from submitting a batch to the log store to its being durable |
//! | `raft.leader.dispatchNumLogs` | gauge | entries | leader: entries in the last batch written |
//! | `raft.leader.lastContact` | histogram | ms | leader: time since each peer (`peer_id`) was last heard from, sampled once per heartbeat timeout |
//! | `raft.rpc.appendEntries` | histogram | ms | handling an AppendEntries request in the core (the write to disk is measured by `storeLogs`) |
//! | `raft.rpc.appendEntries.storeLogs` | histogram | ms | follower: from submitting a batch to the log store to its being durable |
//! | `raft.rpc.processHeartbeat` | histogram | ms | handling a heartbeat |
//! | `raft.rpc.requestVote` | histogram | ms | handling a RequestVote |
//! | `raft.rpc.requestPreVote` | histogram | ms | handling a pre-vote request |
//! | `raft.rpc.installSnapshot` | histogram | ms | handling one InstallSnapshot chunk |
//! | `raft.replication.appendEntries.rpc` | histogram | ms | leader: AppendEntries round trip to `peer_id` (send to acknowledgement) |
//! | `raft.replication.appendEntries.logs` | counter | entries | leader: entries sent to `peer_id` |
//! | `raft.replication.heartbeat` | histogram | ms | leader: heartbeat round trip to `peer_id` |
//! | `raft.fsm.apply` | histogram | ms | state machine time per entry: a committed batch's time divided by its entries |
//! | `raft.fsm.applyBatch` | histogram | ms | state machine time per committed batch |
//! | `raft.fsm.applyBatchNum` | histogram | entries | entries per committed batch |
//! | `raft.fsm.snapshot` | histogram | ms | [`Fsm::snapshot`](crate::Fsm::snapshot) |
//! | `raft.fsm.restore` | histogram | ms | [`Fsm::restore`](crate::Fsm::restore) while running (an installed or restored snapshot) |
//! | `raft.snapshot.create` | histogram | ms | creating a snapshot's entry in the snapshot store |
//! | `raft.snapshot.persist` | histogram | ms | from the captured state machine snapshot to its being stored (`FsmSnapshot::persist` and the store's commit) |
//!
//! Logs go through [`tracing`](https://docs.rs/tracing) (targets `ringraft::node::…`), every
//! event with the field `node` (this node's id): `info` for role changes, elections won or
//! lost, leader changes, configuration changes, peer connections, snapshots taken and
//! installed, and shutdown; `warn` for lost or rejected connections, failed snapshots and lease
//! step-downs; `error` for the storage or state machine failure that stops a node; `debug` for
//! vote, pre-vote and snapshot requests and undeliverable messages. Nothing is logged per entry
//! or per AppendEntries.

/// `raft.apply`: counter of `apply` and `apply_batch` calls.
pub const APPLY: &str = "raft.apply";
/// `raft.barrier`: counter of `barrier` calls.
pub const BARRIER: &str = "raft.barrier";
/// `raft.verify_leader`: counter of `verify_leader` calls.
pub const VERIFY_LEADER: &str = "raft.verify_leader";
/// `raft.restore`: counter of user `restore` calls.
pub const RESTORE: &str = "raft.restore";
/// `raft.state.follower`: counter of transitions to follower.
pub const STATE_FOLLOWER: &str = "raft.state.follower";
/// `raft.state.pre_candidate`: counter of pre-vote campaigns.
pub const STATE_PRE_CANDIDATE: &str = "raft.state.pre_candidate";
/// `raft.state.candidate`: counter of elections started.
pub const STATE_CANDIDATE: &str = "raft.state.candidate";
/// `raft.state.leader`: counter of elections won.
pub const STATE_LEADER: &str = "raft.state.leader";
/// `raft.transition.heartbeat_timeout`: counter of follower timeouts that started a campaign.
pub const TRANSITION_HEARTBEAT_TIMEOUT: &str = "raft.transition.heartbeat_timeout";
/// `raft.transition.leader_lease_timeout`: counter of lease step-downs.
pub const TRANSITION_LEADER_LEASE_TIMEOUT: &str = "raft.transition.leader_lease_timeout";
/// `raft.peers`: gauge of servers in the latest configuration.
pub const PEERS: &str = "raft.peers";
/// `raft.term`: gauge of the current term.
pub const TERM: &str = "raft.term";
/// `raft.last_index`: gauge of the last log index.
pub const LAST_INDEX: &str = "raft.last_index";
/// `raft.commit_index`: gauge of the commit index.
pub const COMMIT_INDEX: &str = "raft.commit_index";
/// `raft.applied_index`: gauge of the index last applied to the state machine.
pub const APPLIED_INDEX: &str = "raft.applied_index";
/// `raft.commitNumLogs`: gauge of entries committed by the last commit advance.
pub const COMMIT_NUM_LOGS: &str = "raft.commitNumLogs";
/// `raft.commitTime`: histogram (ms) from a leader's append of a batch to its commit.
pub const COMMIT_TIME: &str = "raft.commitTime";
/// `raft.leader.dispatchLog`: histogram (ms) of a leader's log writes, submit to durable.
pub const LEADER_DISPATCH_LOG: &str = "raft.leader.dispatchLog";
/// `raft.leader.dispatchNumLogs`: gauge of entries in a leader's last log write.
pub const LEADER_DISPATCH_NUM_LOGS: &str = "raft.leader.dispatchNumLogs";
/// `raft.leader.lastContact`: histogram (ms) of time since each peer was last heard from.
pub const LEADER_LAST_CONTACT: &str = "raft.leader.lastContact";
/// `raft.rpc.appendEntries`: histogram (ms) of handling an AppendEntries request.
pub const RPC_APPEND_ENTRIES: &str = "raft.rpc.appendEntries";
/// `raft.rpc.appendEntries.storeLogs`: histogram (ms) of a follower's log writes.
pub const RPC_APPEND_ENTRIES_STORE_LOGS: &str = "raft.rpc.appendEntries.storeLogs";
/// `raft.rpc.processHeartbeat`: histogram (ms) of handling a heartbeat.
pub const RPC_PROCESS_HEARTBEAT: &str = "raft.rpc.processHeartbeat";
/// `raft.rpc.requestVote`: histogram (ms) of handling a RequestVote.
pub const RPC_REQUEST_VOTE: &str = "raft.rpc.requestVote";
/// `raft.rpc.requestPreVote`: histogram (ms) of handling a pre-vote request.
pub const RPC_REQUEST_PRE_VOTE: &str = "raft.rpc.requestPreVote";
/// `raft.rpc.installSnapshot`: histogram (ms) of handling an InstallSnapshot chunk.
pub const RPC_INSTALL_SNAPSHOT: &str = "raft.rpc.installSnapshot";
/// `raft.replication.appendEntries.rpc`: histogram (ms) of AppendEntries round trips per peer.
pub const REPLICATION_APPEND_ENTRIES_RPC: &str = "raft.replication.appendEntries.rpc";
/// `raft.replication.appendEntries.logs`: counter of entries sent per peer.
pub const REPLICATION_APPEND_ENTRIES_LOGS: &str = "raft.replication.appendEntries.logs";
/// `raft.replication.heartbeat`: histogram (ms) of heartbeat round trips per peer.
pub const REPLICATION_HEARTBEAT: &str = "raft.replication.heartbeat";
/// `raft.fsm.apply`: histogram (ms) of state machine time per entry (batch mean).
pub const FSM_APPLY: &str = "raft.fsm.apply";
/// `raft.fsm.applyBatch`: histogram (ms) of state machine time per committed batch.
pub const FSM_APPLY_BATCH: &str = "raft.fsm.applyBatch";
/// `raft.fsm.applyBatchNum`: histogram of entries per committed batch.
pub const FSM_APPLY_BATCH_NUM: &str = "raft.fsm.applyBatchNum";
/// `raft.fsm.snapshot`: histogram (ms) of `Fsm::snapshot`.
pub const FSM_SNAPSHOT: &str = "raft.fsm.snapshot";
/// `raft.fsm.restore`: histogram (ms) of `Fsm::restore` while running.
pub const FSM_RESTORE: &str = "raft.fsm.restore";
/// `raft.snapshot.create`: histogram (ms) of creating a snapshot in the store.
pub const SNAPSHOT_CREATE: &str = "raft.snapshot.create";
/// `raft.snapshot.persist`: histogram (ms) of writing a captured snapshot to the store.
pub const SNAPSHOT_PERSIST: &str = "raft.snapshot.persist";
