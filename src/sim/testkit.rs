//! A hand-driven cluster for scenario tests (ARCHITECTURE §8 layer 2).
//!
//! Unlike the simulator, nothing here is random: the test decides when each node ticks, which
//! messages are delivered or dropped, when writes become durable and who crashes. Time moves
//! only when the test advances it.
//!
//! ```
//! use ringraft::sim::testkit::Cluster;
//! use ringraft::core::Role;
//! use ringraft_storage::NodeId;
//!
//! let mut cluster = Cluster::new(3);
//! cluster.elect(NodeId(1));
//! assert_eq!(cluster.core(NodeId(1)).role(), Role::Leader);
//! ```

use super::chunks::{read_chunk, Receiver};
use super::disk::Disk;
use crate::core::{
    Core, CoreConfig, Effect, Event, Input, MembershipChange, Outcome, PersistBatch,
    RecoveredState, RequestError, Role, Time, Token,
};
use bytes::Bytes;
use ringraft_net::message::Message;
use ringraft_storage::{Configuration, Entry, EntryKind, Index, LogId, NodeId, SnapshotMeta, Term};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

struct TestNode {
    core: Option<Core>,
    /// The newest snapshot: its metadata and the applied entries it stands for.
    snapshot: Option<(SnapshotMeta, Vec<Entry>)>,
    receiving: Receiver,
    /// The state an external snapshot carries, while a user restore is being staged.
    pending_restore: Option<Vec<Entry>>,
    config: CoreConfig,
    disk: Disk,
    hold_persist: bool,
    unsynced: Vec<PersistBatch>,
    applied: Vec<Entry>,
    events: Vec<Event>,
    restores: u64,
    boots: u64,
}

/// A cluster of real cores driven by hand.
pub struct Cluster {
    now: Time,
    nodes: Vec<TestNode>,
    network: Vec<Message>,
    blocked: BTreeSet<(NodeId, NodeId)>,
    replies: BTreeMap<Token, Result<Outcome, RequestError>>,
    next_token: u64,
    /// Messages sent, for assertions on traffic (cleared by [`Cluster::take_sent`]).
    sent: Vec<Message>,
    /// While set, user restores wait in `held_stages` instead of being staged at once.
    hold_staging: bool,
    held_stages: Vec<(usize, Token, SnapshotMeta)>,
}

impl Cluster {
    /// `n` voters with the test configuration: 100 ms election timeout, 10 ms heartbeats,
    /// 50 ms leader lease, pre-vote on.
    pub fn new(n: usize) -> Cluster {
        Cluster::with_config(n, |_| {})
    }

    /// `n` voters, each configuration adjusted by `adjust`.
    pub fn with_config(n: usize, adjust: impl Fn(&mut CoreConfig)) -> Cluster {
        Cluster::with_spares(n, 0, adjust)
    }

    /// `voters` bootstrapped voters plus `spares` running nodes that start empty (outside the
    /// configuration, waiting to be added).
    pub fn with_spares(voters: usize, spares: usize, adjust: impl Fn(&mut CoreConfig)) -> Cluster {
        let n = voters + spares;
        let ids: Vec<NodeId> = (1..=n as u64).map(NodeId).collect();
        let configuration =
            Configuration::voters_with_default_addresses(ids.iter().copied().take(voters));
        let bootstrapped = Core::bootstrap_state(&configuration).expect("valid configuration");
        let mut cluster = Cluster {
            now: Time(0),
            nodes: Vec::new(),
            network: Vec::new(),
            blocked: BTreeSet::new(),
            replies: BTreeMap::new(),
            next_token: 1,
            sent: Vec::new(),
            hold_staging: false,
            held_stages: Vec::new(),
        };
        for id in ids {
            let mut config = CoreConfig::new(id);
            config.election_timeout = Duration::from_millis(100);
            config.heartbeat_interval = Duration::from_millis(10);
            config.leader_lease_timeout = Duration::from_millis(50);
            config.clock_drift_bound = Duration::from_millis(5);
            adjust(&mut config);
            let state = if id.0 as usize <= voters {
                bootstrapped.clone()
            } else {
                RecoveredState::default()
            };
            let core = Core::new(config.clone(), state.clone(), Time(0)).expect("valid core");
            cluster.nodes.push(TestNode {
                core: Some(core),
                snapshot: None,
                receiving: Receiver::default(),
                pending_restore: None,
                config,
                disk: Disk::with_state(&state),
                hold_persist: false,
                unsynced: Vec::new(),
                applied: Vec::new(),
                events: Vec::new(),
                restores: 0,
                boots: 1,
            });
        }
        for i in 0..n {
            cluster.drain(i);
        }
        cluster
    }

    fn index(&self, id: NodeId) -> usize {
        assert!(
            id.0 >= 1 && id.0 as usize <= self.nodes.len(),
            "no node {id}"
        );
        id.0 as usize - 1
    }

    /// The node's core (panics if it is crashed).
    pub fn core(&self, id: NodeId) -> &Core {
        self.nodes[self.index(id)]
            .core
            .as_ref()
            .expect("node is up")
    }

    /// The node's core, to change (panics if it is crashed).
    pub fn core_mut(&mut self, id: NodeId) -> &mut Core {
        let i = self.index(id);
        self.nodes[i].core.as_mut().expect("node is up")
    }

    /// The current time.
    pub fn now(&self) -> Time {
        self.now
    }

    /// Moves the clock forward without ticking anyone.
    pub fn advance(&mut self, by: Duration) {
        self.now = self.now.plus_nanos(by.as_nanos() as u64);
    }

    /// Feeds an input to a node and performs its effects.
    pub fn step(&mut self, id: NodeId, input: Input) {
        let i = self.index(id);
        let now = self.now;
        if let Some(core) = self.nodes[i].core.as_mut() {
            core.step(now, input);
            self.drain(i);
        }
    }

    /// Ticks one node at the current time.
    pub fn tick(&mut self, id: NodeId) {
        self.step(id, Input::Tick);
    }

    /// Ticks every live node at the current time.
    pub fn tick_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.tick(NodeId(i as u64 + 1));
        }
    }

    /// Advances time in `step` increments for `total`, ticking every node and delivering
    /// messages after each increment.
    pub fn run_for(&mut self, total: Duration, step: Duration) {
        let end = self.now.plus_nanos(total.as_nanos() as u64);
        while self.now < end {
            self.advance(step);
            self.tick_all();
            self.deliver_all();
        }
    }

    fn drain(&mut self, i: usize) {
        loop {
            let Some(core) = self.nodes[i].core.as_mut() else {
                return;
            };
            let effects = core.take_effects();
            if effects.is_empty() {
                break;
            }
            for effect in effects {
                match effect {
                    Effect::Persist(batch) => {
                        self.nodes[i].disk.submit(batch.clone());
                        self.nodes[i].unsynced.push(batch);
                        if !self.nodes[i].hold_persist {
                            self.sync(i);
                        }
                    }
                    Effect::Send(m) => {
                        self.sent.push(m.clone());
                        self.network.push(m);
                    }
                    Effect::Apply { entries } => {
                        let last = entries.last().map(|e| e.id.index);
                        for entry in entries {
                            let node = &mut self.nodes[i];
                            if entry.kind == EntryKind::Restore {
                                // Replace the state with the staged snapshot's, then record
                                // the restore entry itself.
                                let (_, data) = node
                                    .disk
                                    .staged(entry.id)
                                    .expect("a restore entry is applied only where staged");
                                node.applied = decode_entries(data).expect("staged decodes");
                            }
                            node.applied.push(entry);
                        }
                        if let (Some(index), Some(core)) = (last, self.nodes[i].core.as_mut()) {
                            core.step(self.now, Input::Applied { index });
                        }
                    }
                    Effect::Reply { token, result } => {
                        self.replies.insert(token, result);
                    }
                    Effect::ReadSnapshotChunk {
                        peer,
                        meta,
                        stage,
                        offset,
                        max_bytes,
                    } => {
                        let bytes = if stage {
                            let (_, data) = self.nodes[i]
                                .disk
                                .staged(meta.last)
                                .expect("asked to stream a restore that is not staged");
                            data.clone()
                        } else {
                            let Some((stored, entries)) = self.nodes[i].snapshot.as_ref() else {
                                panic!("asked to read a snapshot that does not exist");
                            };
                            assert_eq!(stored.last, meta.last, "asked for a snapshot not held");
                            encode_entries(entries)
                        };
                        let (data, done) = read_chunk(&bytes, offset, max_bytes);
                        let input = Input::SnapshotChunkRead {
                            peer,
                            snapshot: meta.last,
                            offset,
                            data,
                            done,
                        };
                        if let Some(core) = self.nodes[i].core.as_mut() {
                            core.step(self.now, input);
                        }
                    }
                    Effect::WriteSnapshotChunk {
                        meta,
                        offset,
                        data,
                        done,
                        stage,
                    } => {
                        let node = &mut self.nodes[i];
                        let (next_offset, whole) = node
                            .receiving
                            .accept(&meta, offset, &data, done)
                            .expect("the core sends chunks in order");
                        if let (true, Some((meta, buffer))) = (stage, &whole) {
                            node.disk.stage(meta.clone(), Bytes::from(buffer.clone()));
                        } else if let Some((meta, buffer)) = whole {
                            let entries = decode_entries(&buffer).expect("snapshot decodes");
                            node.snapshot = Some((meta, entries));
                        }
                        let input = Input::SnapshotChunkWritten {
                            snapshot: meta.last,
                            stage,
                            next_offset,
                            done,
                        };
                        if let Some(core) = node.core.as_mut() {
                            core.step(self.now, input);
                        }
                    }
                    Effect::RestoreSnapshot { meta } => {
                        let node = &mut self.nodes[i];
                        let (stored, entries) = node.snapshot.as_ref().expect("snapshot held");
                        assert_eq!(stored.last, meta.last);
                        node.applied = entries.clone();
                        node.restores += 1;
                    }
                    Effect::StageRestore { token, meta } if self.hold_staging => {
                        self.held_stages.push((i, token, meta));
                    }
                    Effect::StageRestore { token, mut meta } => {
                        let node = &mut self.nodes[i];
                        let state = node.pending_restore.take().unwrap_or_default();
                        let data = encode_entries(&state);
                        meta.size = data.len() as u64;
                        meta.id = format!("restore-{}", meta.last.index.0);
                        node.disk.stage(meta.clone(), data);
                        if let Some(core) = node.core.as_mut() {
                            core.step(self.now, Input::RestoreStaged { token, meta });
                        }
                    }
                    Effect::DropStagedRestores { through } => {
                        self.nodes[i].disk.drop_staged(through)
                    }
                    Effect::Event(e) => self.nodes[i].events.push(e),
                }
            }
        }
        if let Some(core) = self.nodes[i].core.as_ref() {
            if let Err(e) = core.check_invariants() {
                panic!("invariant violated: {e}");
            }
        }
    }

    fn sync(&mut self, i: usize) {
        let batches = std::mem::take(&mut self.nodes[i].unsynced);
        for batch in batches {
            self.nodes[i]
                .disk
                .complete(batch.seq)
                .expect("disk accepts batches in order");
            if let Some(core) = self.nodes[i].core.as_mut() {
                core.step(self.now, Input::Persisted { seq: batch.seq });
            }
        }
        self.drain(i);
    }

    /// Stops (`true`) or resumes (`false`) completing a node's writes. Resuming completes
    /// everything held.
    pub fn hold_persist(&mut self, id: NodeId, hold: bool) {
        let i = self.index(id);
        self.nodes[i].hold_persist = hold;
        if !hold {
            self.sync(i);
        }
    }

    /// Delivers every in-flight message (and the messages they cause) until the network is
    /// quiet. Messages on a blocked link or to a crashed node are dropped.
    pub fn deliver_all(&mut self) {
        let mut rounds = 0;
        while !self.network.is_empty() {
            rounds += 1;
            assert!(rounds < 10_000, "messages keep flowing: a livelock");
            let batch = std::mem::take(&mut self.network);
            for m in batch {
                self.deliver(m);
            }
        }
    }

    /// Delivers one message now (unless its link is blocked).
    pub fn deliver(&mut self, m: Message) {
        if self.blocked.contains(&(m.from, m.to)) {
            return;
        }
        let to = m.to;
        self.step(to, Input::Message(m));
    }

    /// Delivers in-flight messages that `select` accepts (and the messages they cause that it
    /// also accepts) until none is left; the others stay in flight.
    pub fn deliver_only(&mut self, select: impl Fn(&Message) -> bool) {
        loop {
            let (chosen, rest): (Vec<Message>, Vec<Message>) = std::mem::take(&mut self.network)
                .into_iter()
                .partition(|m| select(m));
            self.network = rest;
            if chosen.is_empty() {
                return;
            }
            for m in chosen {
                self.deliver(m);
            }
        }
    }

    /// Drops every in-flight message.
    pub fn drop_in_flight(&mut self) {
        self.network.clear();
    }

    /// Removes and returns the in-flight messages (to reorder, inspect or drop some).
    pub fn take_in_flight(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.network)
    }

    /// Messages sent since the last call.
    pub fn take_sent(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.sent)
    }

    /// Cuts `id` off from every other node, both ways.
    pub fn isolate(&mut self, id: NodeId) {
        for i in 1..=self.nodes.len() as u64 {
            if NodeId(i) != id {
                self.blocked.insert((id, NodeId(i)));
                self.blocked.insert((NodeId(i), id));
            }
        }
    }

    /// Cuts the link between `a` and `b`, both ways.
    pub fn cut(&mut self, a: NodeId, b: NodeId) {
        self.blocked.insert((a, b));
        self.blocked.insert((b, a));
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.blocked.clear();
    }

    /// Makes `id` campaign now: moves the clock to its election deadline (at least one
    /// election timeout from now, so no one still feels a leader) and ticks only it.
    pub fn campaign(&mut self, id: NodeId) {
        let timeout = self.nodes[self.index(id)].config.election_timeout;
        self.advance(timeout);
        let deadline = self.core(id).next_timer();
        self.now = self.now.max(deadline);
        self.tick(id);
    }

    /// `campaign` then deliver everything; asserts that `id` won.
    pub fn elect(&mut self, id: NodeId) {
        self.campaign(id);
        self.deliver_all();
        assert_eq!(
            self.core(id).role(),
            Role::Leader,
            "{id} should have won: {:?}",
            self.core(id)
        );
    }

    /// One heartbeat interval passes for the leader `id`, which sends heartbeats; the answers
    /// are delivered.
    pub fn heartbeat(&mut self, id: NodeId) {
        let interval = self.nodes[self.index(id)].config.heartbeat_interval;
        self.advance(interval);
        self.tick(id);
        self.deliver_all();
    }

    /// Heartbeat intervals enough for every follower of the leader `id` to learn its commit
    /// index: a follower that was sent AppendEntries lately gets no heartbeat for
    /// `Core::busy_rounds` rounds (ARCHITECTURE §4, "Heartbeats of a busy leader"), so one
    /// interval more than that passes (three at least).
    pub fn settle(&mut self, id: NodeId) {
        let rounds = self.core(id).busy_rounds();
        for _ in 0..(rounds + 1).max(3) {
            self.heartbeat(id);
        }
    }

    /// Proposes one command at `id`; returns the request's token.
    pub fn propose(&mut self, id: NodeId, command: &'static [u8]) -> Token {
        let token = self.token();
        self.step(
            id,
            Input::Propose {
                token,
                commands: vec![Bytes::from_static(command)],
                extensions: Vec::new(),
            },
        );
        token
    }

    /// Asks `id` for a membership change; returns the request's token.
    pub fn change(&mut self, id: NodeId, change: MembershipChange, prev: Option<Index>) -> Token {
        let token = self.token();
        self.step(
            id,
            Input::ChangeMembership {
                token,
                change,
                prev_index: prev,
            },
        );
        token
    }

    /// Asks `id` to transfer leadership; returns the request's token.
    pub fn transfer(&mut self, id: NodeId, target: Option<NodeId>) -> Token {
        let token = self.token();
        self.step(id, Input::TransferLeadership { token, target });
        token
    }

    /// Events the node reported.
    pub fn events(&self, id: NodeId) -> &[Event] {
        &self.nodes[self.index(id)].events
    }

    /// A fresh request token.
    pub fn token(&mut self) -> Token {
        self.next_token += 1;
        Token(self.next_token)
    }

    /// The reply to `token`, if it arrived.
    pub fn reply(&self, token: Token) -> Option<Result<Outcome, RequestError>> {
        self.replies.get(&token).cloned()
    }

    /// Crashes `id`: writes not yet durable are lost (none are torn).
    pub fn crash(&mut self, id: NodeId) {
        let i = self.index(id);
        self.nodes[i].core = None;
        self.nodes[i].unsynced.clear();
        // In-flight writes are simply lost: keep only what completed.
        self.nodes[i].disk = self.nodes[i].disk.durable_copy();
    }

    /// Restarts a crashed node from its disk.
    pub fn restart(&mut self, id: NodeId) {
        let i = self.index(id);
        assert!(self.nodes[i].core.is_none(), "{id} is running");
        self.nodes[i].boots += 1;
        let mut config = self.nodes[i].config.clone();
        config.seed ^= self.nodes[i].boots << 32;
        let mut state = self.nodes[i].disk.recover();
        state.snapshot = self.nodes[i].snapshot.as_ref().map(|(m, _)| m.clone());
        self.nodes[i].core = Some(Core::new(config, state, self.now).expect("restart"));
        self.nodes[i].applied = self.nodes[i]
            .snapshot
            .as_ref()
            .map(|(_, e)| e.clone())
            .unwrap_or_default();
        self.drain(i);
    }

    /// The node's state machine saves a snapshot of everything it applied, and tells its core.
    pub fn take_snapshot(&mut self, id: NodeId) {
        let i = self.index(id);
        let applied = self.nodes[i].applied.clone();
        let Some(last) = applied.last().map(|e| e.id) else {
            return;
        };
        let core = self.core(id);
        let (configuration_index, configuration) = core.configuration_at(last.index);
        let meta = SnapshotMeta {
            id: format!("{}-{}", last.term.0, last.index.0),
            last,
            configuration,
            configuration_index,
            size: encode_entries(&applied).len() as u64,
        };
        self.nodes[i].snapshot = Some((meta.clone(), applied));
        self.step(id, Input::SnapshotTaken { meta });
    }

    /// Asks `id` to restore the cluster from an external snapshot whose state is `state` (what
    /// the test state machine holds after applying the restore); returns the request's token.
    pub fn user_restore(&mut self, id: NodeId, state: Vec<Entry>) -> Token {
        let i = self.index(id);
        self.nodes[i].pending_restore = Some(state);
        let token = self.token();
        self.step(id, Input::UserRestore { token });
        token
    }

    /// Holds (`true`) user restores before they are staged, or stages the held ones
    /// (`false`).
    pub fn hold_staging(&mut self, hold: bool) {
        self.hold_staging = hold;
        if hold {
            return;
        }
        for (i, token, meta) in std::mem::take(&mut self.held_stages) {
            let node = &mut self.nodes[i];
            let data = encode_entries(&node.pending_restore.take().unwrap_or_default());
            let meta = SnapshotMeta {
                id: format!("restore-{}", meta.last.index.0),
                size: data.len() as u64,
                ..meta
            };
            node.disk.stage(meta.clone(), data);
            if let Some(core) = node.core.as_mut() {
                core.step(self.now, Input::RestoreStaged { token, meta });
            }
            self.drain(i);
        }
    }

    /// Whether `id` has the restore whose entry is `entry` staged on its disk.
    pub fn has_staged(&self, id: NodeId, entry: LogId) -> bool {
        self.nodes[self.index(id)].disk.staged(entry).is_some()
    }

    /// How many snapshots the node's state machine restored from the leader.
    pub fn restores(&self, id: NodeId) -> u64 {
        self.nodes[self.index(id)].restores
    }

    /// What the node's state machine has applied (a restored snapshot counts as applied).
    pub fn applied(&self, id: NodeId) -> &[Entry] {
        &self.nodes[self.index(id)].applied
    }

    /// The leader, if exactly one live node believes it leads the highest term.
    pub fn leader(&self) -> Option<NodeId> {
        let leaders: Vec<&Core> = self
            .nodes
            .iter()
            .filter_map(|n| n.core.as_ref())
            .filter(|c| c.role() == Role::Leader)
            .collect();
        leaders.iter().max_by_key(|c| c.term()).map(|c| c.id())
    }
}

/// The test state machine's snapshot format: its applied entries, each as index, term, kind,
/// data length and data.
fn encode_entries(entries: &[Entry]) -> Bytes {
    let mut out = Vec::new();
    for e in entries {
        out.extend_from_slice(&e.id.index.0.to_le_bytes());
        out.extend_from_slice(&e.id.term.0.to_le_bytes());
        out.push(e.kind.code());
        out.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
        out.extend_from_slice(&e.data);
    }
    Bytes::from(out)
}

fn decode_entries(mut bytes: &[u8]) -> Option<Vec<Entry>> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let header = bytes.get(..21)?;
        let word = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&header[at..at + 8]);
            u64::from_le_bytes(b)
        };
        let kind = EntryKind::from_code(header[16])?;
        let len = u32::from_le_bytes([header[17], header[18], header[19], header[20]]) as usize;
        let data = bytes.get(21..21 + len)?;
        let id = LogId::new(Term(word(8)), Index(word(0)));
        out.push(Entry::new(id, kind, Bytes::copy_from_slice(data)));
        bytes = &bytes[21 + len..];
    }
    Some(out)
}
