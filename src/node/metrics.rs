//! The node's metrics and logs: handles registered once per node, and the shard's per-turn
//! tallies that feed them (the names, kinds and units are documented in
//! [`crate::api::metrics`]).
//!
//! Why handles rather than `counter!(…)` at each site: a handle is resolved against the
//! recorder once, when the node starts, so recording is one indirect call (or nothing when no
//! recorder was installed), with no key hashing or label allocation on the hot path. The cost
//! is that a recorder installed after `Raft::new` does not see that node.
//!
//! Why tallies: the shard counts requests in plain integers and flushes them once per turn, and
//! measures commit latency per persist batch, never per entry.

use super::clock::Clock;
use crate::api::metrics as names;
use crate::core::{Core, Role, Time};
use ::metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Unit};
use ringraft_net::message::{AppendResult, Body, Message};
use ringraft_net::transport::TransportEvent;
use ringraft_storage::{Configuration, Index, NodeId, Term, Ticket};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

/// The kind of a metric, for its description.
#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A metric's description for the recorder (Prometheus `# HELP`).
type Description = (&'static str, Kind, Option<Unit>, &'static str);

const fn counter(name: &'static str, help: &'static str) -> Description {
    (name, Kind::Counter, Some(Unit::Count), help)
}
const fn gauge(name: &'static str, help: &'static str) -> Description {
    (name, Kind::Gauge, Some(Unit::Count), help)
}
const fn index(name: &'static str, help: &'static str) -> Description {
    (name, Kind::Gauge, None, help)
}
const fn ms(name: &'static str, help: &'static str) -> Description {
    (name, Kind::Histogram, Some(Unit::Milliseconds), help)
}
const fn histogram(name: &'static str, help: &'static str) -> Description {
    (name, Kind::Histogram, Some(Unit::Count), help)
}

/// Every metric the node emits, described to the recorder when a node starts.
const DESCRIPTIONS: &[Description] = &[
    counter(names::APPLY, "apply and apply_batch calls"),
    counter(names::BARRIER, "barrier calls"),
    counter(names::VERIFY_LEADER, "verify_leader calls"),
    counter(names::RESTORE, "user restore calls"),
    counter(names::STATE_FOLLOWER, "times this node became a follower"),
    counter(names::STATE_PRE_CANDIDATE, "pre-vote campaigns started"),
    counter(names::STATE_CANDIDATE, "elections started"),
    counter(names::STATE_LEADER, "elections won"),
    counter(
        names::TRANSITION_HEARTBEAT_TIMEOUT,
        "follower heartbeat timeouts that started a campaign",
    ),
    counter(
        names::TRANSITION_LEADER_LEASE_TIMEOUT,
        "leader step-downs for lack of quorum contact",
    ),
    gauge(names::PEERS, "servers in the latest configuration"),
    index(names::TERM, "current term"),
    index(names::LAST_INDEX, "last log index"),
    index(names::COMMIT_INDEX, "commit index"),
    index(
        names::APPLIED_INDEX,
        "index last applied to the state machine",
    ),
    gauge(
        names::COMMIT_NUM_LOGS,
        "entries committed by the last commit advance",
    ),
    ms(
        names::COMMIT_TIME,
        "leader: a persist batch's dispatch to its commit",
    ),
    ms(
        names::LEADER_DISPATCH_LOG,
        "leader: a persist batch's submission to its durability",
    ),
    gauge(
        names::LEADER_DISPATCH_NUM_LOGS,
        "leader: entries in the last persist batch",
    ),
    ms(
        names::RPC_APPEND_ENTRIES_STORE_LOGS,
        "follower: a persist batch's submission to its durability",
    ),
    ms(
        names::RPC_APPEND_ENTRIES,
        "handling an AppendEntries request",
    ),
    ms(names::RPC_PROCESS_HEARTBEAT, "handling a heartbeat"),
    ms(names::RPC_REQUEST_VOTE, "handling a RequestVote"),
    ms(names::RPC_REQUEST_PRE_VOTE, "handling a pre-vote request"),
    ms(
        names::RPC_INSTALL_SNAPSHOT,
        "handling an InstallSnapshot chunk",
    ),
    ms(
        names::REPLICATION_APPEND_ENTRIES_RPC,
        "leader: AppendEntries round trip per peer",
    ),
    counter(
        names::REPLICATION_APPEND_ENTRIES_LOGS,
        "leader: entries sent per peer",
    ),
    ms(
        names::REPLICATION_HEARTBEAT,
        "leader: heartbeat round trip per peer",
    ),
    ms(
        names::LEADER_LAST_CONTACT,
        "leader: time since each peer was last heard from, sampled",
    ),
    ms(
        names::FSM_APPLY,
        "state machine time per entry (batch mean)",
    ),
    ms(
        names::FSM_APPLY_BATCH,
        "state machine time per committed batch",
    ),
    histogram(names::FSM_APPLY_BATCH_NUM, "entries per committed batch"),
    ms(names::FSM_SNAPSHOT, "Fsm::snapshot"),
    ms(names::FSM_RESTORE, "Fsm::restore"),
    ms(
        names::SNAPSHOT_CREATE,
        "creating a snapshot in the snapshot store",
    ),
    ms(
        names::SNAPSHOT_PERSIST,
        "writing a captured snapshot to the store",
    ),
];

/// Milliseconds between two clock readings, as a histogram value.
fn millis(from: Time, to: Time) -> f64 {
    to.nanos_since(from) as f64 / 1e6
}

/// A node's metric handles, registered against the recorder in force when the node starts.
#[derive(Clone)]
pub(crate) struct NodeMetrics {
    node: String,
    apply: Counter,
    barrier: Counter,
    verify_leader: Counter,
    restore: Counter,
    state_follower: Counter,
    state_pre_candidate: Counter,
    state_candidate: Counter,
    state_leader: Counter,
    heartbeat_timeout: Counter,
    leader_lease_timeout: Counter,
    peers: Gauge,
    term: Gauge,
    last_index: Gauge,
    commit_index: Gauge,
    pub(crate) applied_index: Gauge,
    commit_num_logs: Gauge,
    commit_time: Histogram,
    dispatch_log: Histogram,
    dispatch_num_logs: Gauge,
    store_logs: Histogram,
    rpc_append_entries: Histogram,
    rpc_heartbeat: Histogram,
    rpc_request_vote: Histogram,
    rpc_pre_vote: Histogram,
    rpc_install_snapshot: Histogram,
    pub(crate) fsm_apply: Histogram,
    pub(crate) fsm_apply_batch: Histogram,
    pub(crate) fsm_apply_batch_num: Histogram,
    pub(crate) fsm_snapshot: Histogram,
    pub(crate) fsm_restore: Histogram,
    pub(crate) snapshot_create: Histogram,
    snapshot_persist: Histogram,
}

impl NodeMetrics {
    /// Describes the metrics to the current recorder and registers this node's handles, all
    /// labelled `node_id`.
    pub(crate) fn new(id: NodeId) -> NodeMetrics {
        let node = id.0.to_string();
        ::metrics::with_recorder(|r| {
            for (name, kind, unit, help) in DESCRIPTIONS {
                let name = KeyName::from_const_str(name);
                match kind {
                    Kind::Counter => r.describe_counter(name, *unit, (*help).into()),
                    Kind::Gauge => r.describe_gauge(name, *unit, (*help).into()),
                    Kind::Histogram => r.describe_histogram(name, *unit, (*help).into()),
                }
            }
        });
        let counter = |name: &'static str| ::metrics::counter!(name, "node_id" => node.clone());
        let gauge = |name: &'static str| ::metrics::gauge!(name, "node_id" => node.clone());
        let histogram = |name: &'static str| ::metrics::histogram!(name, "node_id" => node.clone());
        NodeMetrics {
            apply: counter(names::APPLY),
            barrier: counter(names::BARRIER),
            verify_leader: counter(names::VERIFY_LEADER),
            restore: counter(names::RESTORE),
            state_follower: counter(names::STATE_FOLLOWER),
            state_pre_candidate: counter(names::STATE_PRE_CANDIDATE),
            state_candidate: counter(names::STATE_CANDIDATE),
            state_leader: counter(names::STATE_LEADER),
            heartbeat_timeout: counter(names::TRANSITION_HEARTBEAT_TIMEOUT),
            leader_lease_timeout: counter(names::TRANSITION_LEADER_LEASE_TIMEOUT),
            peers: gauge(names::PEERS),
            term: gauge(names::TERM),
            last_index: gauge(names::LAST_INDEX),
            commit_index: gauge(names::COMMIT_INDEX),
            applied_index: gauge(names::APPLIED_INDEX),
            commit_num_logs: gauge(names::COMMIT_NUM_LOGS),
            commit_time: histogram(names::COMMIT_TIME),
            dispatch_log: histogram(names::LEADER_DISPATCH_LOG),
            dispatch_num_logs: gauge(names::LEADER_DISPATCH_NUM_LOGS),
            store_logs: histogram(names::RPC_APPEND_ENTRIES_STORE_LOGS),
            rpc_append_entries: histogram(names::RPC_APPEND_ENTRIES),
            rpc_heartbeat: histogram(names::RPC_PROCESS_HEARTBEAT),
            rpc_request_vote: histogram(names::RPC_REQUEST_VOTE),
            rpc_pre_vote: histogram(names::RPC_REQUEST_PRE_VOTE),
            rpc_install_snapshot: histogram(names::RPC_INSTALL_SNAPSHOT),
            fsm_apply: histogram(names::FSM_APPLY),
            fsm_apply_batch: histogram(names::FSM_APPLY_BATCH),
            fsm_apply_batch_num: histogram(names::FSM_APPLY_BATCH_NUM),
            fsm_snapshot: histogram(names::FSM_SNAPSHOT),
            fsm_restore: histogram(names::FSM_RESTORE),
            snapshot_create: histogram(names::SNAPSHOT_CREATE),
            snapshot_persist: histogram(names::SNAPSHOT_PERSIST),
            node,
        }
    }

    /// The key of a per-peer metric: labels `node_id` and `peer_id`.
    fn peer_key(&self, name: &'static str, peer: NodeId) -> Key {
        Key::from_parts(
            name,
            vec![
                Label::new("node_id", self.node.clone()),
                Label::new("peer_id", peer.0.to_string()),
            ],
        )
    }

    /// Records the apply thread's work on one committed batch of `entries` entries.
    pub(crate) fn fsm_applied(&self, started: Time, finished: Time, entries: usize) {
        if entries == 0 {
            return;
        }
        let total = millis(started, finished);
        self.fsm_apply_batch.record(total);
        self.fsm_apply.record(total / entries as f64);
        self.fsm_apply_batch_num.record(entries as f64);
    }

    /// Records `histogram` as the time from `started` to `finished`.
    pub(crate) fn time(histogram: &Histogram, started: Time, finished: Time) {
        histogram.record(millis(started, finished));
    }
}

/// Metadata for per-peer registrations.
static PEER_METADATA: Metadata<'static> =
    Metadata::new(module_path!(), ::metrics::Level::INFO, Some(module_path!()));

/// The leader's view of one peer.
struct PeerTrack {
    /// AppendEntries in flight: the last index each carried, and when it was sent.
    inflight: VecDeque<(Index, Time)>,
    /// The last heartbeat sent: its round and when.
    heartbeat: Option<(u64, Time)>,
    /// When the peer was last heard from.
    heard: Time,
    rpc: Histogram,
    logs: Counter,
    heartbeat_rtt: Histogram,
    last_contact: Histogram,
}

/// Most AppendEntries remembered per peer; older ones are forgotten (a peer that does not
/// answer must not grow the leader's memory).
const INFLIGHT_TRACKED_MAX: usize = 1024;

/// The shard's side of the metrics: per-turn tallies and the timing state they need.
pub(crate) struct ShardMetrics {
    /// The node's handles, shared with `Shared` (one copy per node).
    handles: Arc<NodeMetrics>,
    id: NodeId,
    clock: Clock,
    /// Requests drained this turn, flushed by [`ShardMetrics::end_turn`].
    applies: u64,
    barriers: u64,
    verifies: u64,
    restores: u64,
    role: Role,
    term: Term,
    term_published: Term,
    /// A leader stepped down without a new term (lease or removal; decided at the turn's end).
    stepped_down: bool,
    /// Persist batches not yet durable: their ticket, when submitted, whether as leader.
    persisting: VecDeque<(Ticket, Time, bool)>,
    /// The leader's batches not yet committed: their last index and dispatch time.
    uncommitted: VecDeque<(Index, Time)>,
    commit: Index,
    last_index: Index,
    configuration_index: Option<Index>,
    /// A few peers: a vector (a map's node would hold room for eleven, per group).
    peers: Vec<(NodeId, PeerTrack)>,
    contact_every: Duration,
    next_contact_sample: Time,
    snapshot_captured_at: Option<Time>,
}

impl ShardMetrics {
    pub(crate) fn new(
        handles: Arc<NodeMetrics>,
        id: NodeId,
        clock: Clock,
        heartbeat_timeout: Duration,
    ) -> ShardMetrics {
        ShardMetrics {
            handles,
            id,
            clock,
            applies: 0,
            barriers: 0,
            verifies: 0,
            restores: 0,
            role: Role::Follower,
            term: Term(0),
            term_published: Term(0),
            stepped_down: false,
            persisting: VecDeque::new(),
            uncommitted: VecDeque::new(),
            commit: Index(0),
            last_index: Index(0),
            configuration_index: None,
            peers: Vec::new(),
            contact_every: heartbeat_timeout,
            next_contact_sample: Time(0),
            snapshot_captured_at: None,
        }
    }

    /// Counts a request drained from the submission queue.
    pub(crate) fn command(&mut self, command: &super::Command) {
        match command {
            super::Command::Apply { .. } => self.applies += 1,
            super::Command::Barrier { .. } => self.barriers += 1,
            super::Command::VerifyLeader { .. } => self.verifies += 1,
            super::Command::Restore { .. } => self.restores += 1,
            _ => {}
        }
    }

    /// Before the core handles `message`: notes what a leader learns from a response, and
    /// starts timing a request. Returns what [`ShardMetrics::received`] needs.
    pub(crate) fn receiving(&mut self, now: Time, message: &Message) -> Option<(u8, Time)> {
        let kind = match &message.body {
            Body::AppendEntries(_) => 0,
            Body::Heartbeat { .. } => 1,
            Body::RequestVote { .. } => 2,
            Body::PreVote { .. } => 3,
            Body::InstallSnapshot(_) => 4,
            Body::AppendEntriesResponse(r) => {
                if let Some(p) = self.tracked(message.from) {
                    p.heard = now;
                    match r.result {
                        AppendResult::Success { match_index } => {
                            let mut sent = None;
                            while p.inflight.front().is_some_and(|(i, _)| *i <= match_index) {
                                sent = p.inflight.pop_front().map(|(_, t)| t);
                            }
                            if let Some(sent) = sent {
                                p.rpc.record(millis(sent, now));
                            }
                        }
                        _ => p.inflight.clear(),
                    }
                }
                return None;
            }
            Body::HeartbeatResponse { round } => {
                if let Some(p) = self.tracked(message.from) {
                    p.heard = now;
                    if let Some((sent_round, sent)) = p.heartbeat {
                        if sent_round == *round {
                            p.heartbeat_rtt.record(millis(sent, now));
                            p.heartbeat = None;
                        }
                    }
                }
                return None;
            }
            _ => {
                if let Some(p) = self.tracked(message.from) {
                    p.heard = now;
                }
                return None;
            }
        };
        if kind >= 2 {
            // Votes and snapshot chunks are rare; appends and heartbeats are the hot path.
            tracing::debug!(
                node = self.id.0,
                from = message.from.0,
                term = message.term.0,
                body = body_name(&message.body),
                "request received"
            );
        }
        Some((kind, self.clock.now()))
    }

    /// After the core handled a request [`ShardMetrics::receiving`] timed.
    pub(crate) fn received(&mut self, timing: Option<(u8, Time)>) {
        let Some((kind, started)) = timing else {
            return;
        };
        let h = &self.handles;
        let histogram = match kind {
            0 => &h.rpc_append_entries,
            1 => &h.rpc_heartbeat,
            2 => &h.rpc_request_vote,
            3 => &h.rpc_pre_vote,
            _ => &h.rpc_install_snapshot,
        };
        histogram.record(millis(started, self.clock.now()));
    }

    /// Notes a message the leader sends (for round-trip times and entries sent).
    pub(crate) fn sending(&mut self, now: Time, message: &Message) {
        if self.role != Role::Leader {
            return;
        }
        match &message.body {
            Body::AppendEntries(a) => {
                let p = self.peer(message.to, now);
                let last = Index(a.prev_log_id.index.0 + a.entries.len() as u64);
                if p.inflight.len() == INFLIGHT_TRACKED_MAX {
                    p.inflight.pop_front();
                }
                p.inflight.push_back((last, now));
                if !a.entries.is_empty() {
                    p.logs.increment(a.entries.len() as u64);
                }
            }
            Body::Heartbeat { round, .. } => {
                // Only the newest round is timed: a lost response must not stop the timing.
                let p = self.peer(message.to, now);
                if p.heartbeat.is_none_or(|(r, _)| r != *round) {
                    p.heartbeat = Some((*round, now));
                }
            }
            _ => {}
        }
    }

    /// Gives back the room of empty queues (a quiesced node).
    pub(crate) fn release_idle_memory(&mut self) {
        if self.persisting.is_empty() {
            self.persisting = VecDeque::new();
        }
        if self.uncommitted.is_empty() {
            self.uncommitted = VecDeque::new();
        }
        for (_, p) in &mut self.peers {
            if p.inflight.is_empty() {
                p.inflight = VecDeque::new();
            }
        }
    }

    /// The tracking of `peer`, if it has any.
    fn tracked(&mut self, peer: NodeId) -> Option<&mut PeerTrack> {
        self.peers
            .iter_mut()
            .find(|(id, _)| *id == peer)
            .map(|(_, p)| p)
    }

    fn peer(&mut self, peer: NodeId, now: Time) -> &mut PeerTrack {
        let i = match self.peers.iter().position(|(id, _)| *id == peer) {
            Some(i) => i,
            None => {
                let track = self.new_track(peer, now);
                self.peers.push((peer, track));
                self.peers.len() - 1
            }
        };
        &mut self.peers[i].1
    }

    fn new_track(&self, peer: NodeId, now: Time) -> PeerTrack {
        let handles = &self.handles;
        {
            ::metrics::with_recorder(|r| {
                let key = |name| handles.peer_key(name, peer);
                PeerTrack {
                    inflight: VecDeque::new(),
                    heartbeat: None,
                    heard: now,
                    rpc: r.register_histogram(
                        &key(names::REPLICATION_APPEND_ENTRIES_RPC),
                        &PEER_METADATA,
                    ),
                    logs: r.register_counter(
                        &key(names::REPLICATION_APPEND_ENTRIES_LOGS),
                        &PEER_METADATA,
                    ),
                    heartbeat_rtt: r
                        .register_histogram(&key(names::REPLICATION_HEARTBEAT), &PEER_METADATA),
                    last_contact: r
                        .register_histogram(&key(names::LEADER_LAST_CONTACT), &PEER_METADATA),
                }
            })
        }
    }

    /// A persist batch of `entries` entries was submitted; `ticket` completes it.
    pub(crate) fn persisting(&mut self, now: Time, entries: usize, ticket: Option<Ticket>) {
        let Some(ticket) = ticket else {
            return;
        };
        if entries == 0 {
            return;
        }
        let leader = self.role == Role::Leader;
        self.persisting.push_back((ticket, now, leader));
        if leader {
            self.handles.dispatch_num_logs.set(entries as f64);
        }
    }

    /// The log store is durable through `durable`.
    pub(crate) fn durable(&mut self, now: Time, durable: Ticket) {
        while let Some(&(ticket, submitted, leader)) = self.persisting.front() {
            if ticket > durable {
                break;
            }
            self.persisting.pop_front();
            let h = if leader {
                &self.handles.dispatch_log
            } else {
                &self.handles.store_logs
            };
            h.record(millis(submitted, now));
        }
    }

    /// The core changed role (or term).
    pub(crate) fn role_changed(&mut self, role: Role, term: Term) {
        let (previous, previous_term) = (self.role, self.term);
        self.role = role;
        self.term = term;
        let h = &self.handles;
        let id = self.id.0;
        match role {
            Role::Follower => h.state_follower.increment(1),
            Role::PreCandidate => h.state_pre_candidate.increment(1),
            Role::Candidate => h.state_candidate.increment(1),
            Role::Leader => h.state_leader.increment(1),
        }
        if previous == Role::Follower && role != Role::Follower {
            h.heartbeat_timeout.increment(1);
        }
        match (previous, role) {
            (_, Role::Leader) => {
                tracing::info!(node = id, term = term.0, "election won: leading");
            }
            (Role::Candidate | Role::PreCandidate, Role::Follower) => {
                tracing::info!(
                    node = id,
                    term = term.0,
                    "election lost or abandoned: following"
                );
            }
            (Role::Leader, Role::Follower) => {
                self.stepped_down = term == previous_term;
                tracing::info!(node = id, term = term.0, "stepped down as leader");
            }
            (_, role) => {
                tracing::info!(node = id, term = term.0, role = ?role, "role changed");
            }
        }
        if role != Role::Leader {
            self.uncommitted.clear();
            self.peers.clear();
        }
    }

    /// A leader removed (or demoted) by a committed configuration stepped down.
    pub(crate) fn removed(&mut self, shutdown: bool) {
        self.stepped_down = false;
        tracing::info!(
            node = self.id.0,
            shutdown,
            "removed from the configuration: stepped down"
        );
    }

    /// The latest configuration may have changed.
    pub(crate) fn configuration(&mut self, index: Index, configuration: &Configuration) {
        if self.configuration_index == Some(index) {
            return;
        }
        self.configuration_index = Some(index);
        self.handles.peers.set(configuration.servers.len() as f64);
        if configuration.servers.is_empty() {
            // A node with no state yet: nothing worth a line.
            return;
        }
        let servers: Vec<String> = configuration
            .servers
            .iter()
            .map(|s| format!("{}@{}", s.id, s.address))
            .collect();
        tracing::info!(
            node = self.id.0,
            index = index.0,
            servers = ?servers,
            "configuration changed"
        );
    }

    /// A snapshot of the state machine was captured; the store is writing it.
    pub(crate) fn snapshot_captured(&mut self, now: Time) {
        self.snapshot_captured_at = Some(now);
    }

    /// A snapshot finished persisting (or failed).
    pub(crate) fn snapshot_persisted<E: std::fmt::Display>(
        &mut self,
        now: Time,
        result: Result<&ringraft_storage::SnapshotMeta, &E>,
    ) {
        let started = self.snapshot_captured_at.take();
        match result {
            Ok(meta) => {
                if let Some(started) = started {
                    self.handles.snapshot_persist.record(millis(started, now));
                }
                tracing::info!(node = self.id.0, last = %meta.last, size = meta.size, "snapshot taken");
            }
            Err(e) => tracing::warn!(node = self.id.0, error = %e, "snapshot failed"),
        }
    }

    /// Once per turn: flushes the tallies and updates gauges and commit latency.
    pub(crate) fn end_turn(&mut self, now: Time, core: &Core) {
        let h = &self.handles;
        if self.applies > 0 {
            h.apply.increment(std::mem::take(&mut self.applies));
        }
        if self.barriers > 0 {
            h.barrier.increment(std::mem::take(&mut self.barriers));
        }
        if self.verifies > 0 {
            h.verify_leader
                .increment(std::mem::take(&mut self.verifies));
        }
        if self.restores > 0 {
            h.restore.increment(std::mem::take(&mut self.restores));
        }
        if std::mem::take(&mut self.stepped_down) {
            h.leader_lease_timeout.increment(1);
            tracing::warn!(
                node = self.id.0,
                "leader lease expired without quorum contact"
            );
        }
        let term = core.term();
        if term != self.term_published {
            self.term_published = term;
            h.term.set(term.0 as f64);
        }
        let last = core.log().last_index();
        if last != self.last_index {
            self.last_index = last;
            h.last_index.set(last.0 as f64);
            if self.role == Role::Leader && self.uncommitted.back().is_none_or(|(i, _)| *i < last) {
                self.uncommitted.push_back((last, now));
            }
        }
        let commit = core.commit_index();
        if commit > self.commit {
            h.commit_index.set(commit.0 as f64);
            h.commit_num_logs.set((commit.0 - self.commit.0) as f64);
            self.commit = commit;
            while let Some(&(index, dispatched)) = self.uncommitted.front() {
                if index > commit {
                    break;
                }
                self.uncommitted.pop_front();
                h.commit_time.record(millis(dispatched, now));
            }
        }
        if self.role == Role::Leader && now >= self.next_contact_sample {
            self.next_contact_sample = now.plus_nanos(self.contact_every.as_nanos() as u64);
            for (_, p) in &self.peers {
                p.last_contact.record(millis(p.heard, now));
            }
        }
    }
}

/// Logs a transport event other than a message.
pub(crate) fn transport_event(id: NodeId, event: &TransportEvent) {
    match event {
        TransportEvent::Message { .. } => {}
        TransportEvent::PeerConnected { peer } => {
            tracing::info!(node = id.0, peer = peer.0, "connected to peer");
        }
        TransportEvent::PeerDisconnected { peer, error } => {
            // Routine while peers start, restart or are partitioned away (the transport redials
            // with backoff); the core's heartbeat-failure observations say when it matters.
            tracing::info!(node = id.0, peer = peer.0, error = %error, "connection to peer lost");
        }
        TransportEvent::InboundRejected {
            address,
            peer,
            error,
        } => {
            tracing::warn!(
                node = id.0,
                address = %address,
                peer = ?peer,
                error = %error,
                "inbound connection rejected"
            );
        }
        TransportEvent::SendFailed {
            peer,
            failed,
            error,
        } => {
            tracing::debug!(
                node = id.0,
                peer = peer.0,
                messages = failed.len(),
                error = %error,
                "messages to peer will not be answered"
            );
        }
        _ => tracing::debug!(node = id.0, event = ?event, "transport event"),
    }
}

/// A message body's name, for logs.
fn body_name(body: &Body) -> &'static str {
    match body {
        Body::AppendEntries(_) => "AppendEntries",
        Body::Heartbeat { .. } => "Heartbeat",
        Body::RequestVote { .. } => "RequestVote",
        Body::PreVote { .. } => "PreVote",
        Body::InstallSnapshot(_) => "InstallSnapshot",
        _ => "other",
    }
}
