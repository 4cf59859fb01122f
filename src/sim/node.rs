//! What a simulated node runs on: the real shard glue (`crate::node::shard`) over a simulated
//! log store, transport and state machine, each behind the trait the runtime uses
//! ([`LogStore`], [`Transport`], [`Fsm`]). The world holds the other end of each: it decides
//! when a submitted write becomes durable (and what a crash leaves of it), delivers and drops
//! messages, and reads what the state machine applied.
//!
//! Disk fault model (after TigerBeetle's habit of writing it down):
//! - A log operation (append, truncation, hard state) is durable once the world completes its
//!   ticket (the fsync returned); completion is in ticket order.
//! - At a crash, the operations still in flight survive as a prefix: the first `k` complete,
//!   the next, if it is an append, may keep a prefix of its entries, the rest are lost. So a
//!   batch's truncation and part of its entries may survive without its hard state, which is
//!   more than a checksummed, batch-atomic log such as the WAL allows.
//! - Snapshots and staged user restores are durable once their sink commits (the snapshot
//!   store fsyncs before it reports); the in-memory snapshot store keeps them across crashes.
//! - Durable data is never damaged (bit rot is the storage crate's concern: its recovery
//!   refuses corrupt records, and its tests cover that).

use super::kv::{self, Kv};
use super::linearizability::KvResult;
use crate::api::fsm::{Fsm, FsmError, FsmSnapshot};
use crate::core::{Rng, Time};
use crate::node::campaign::{Asked, CampaignSlots, Slot};
use bytes::{BufMut, Bytes, BytesMut};
use ringraft_net::message::Message;
use ringraft_net::transport::{SendError, Transport, TransportEvent};
use ringraft_storage::{
    DurableNotifier, Entry, GroupId, HardState, Index, LogError, LogStore, NodeId, Term, Ticket,
};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

/// Locks a simulator-owned mutex (one thread: never contended, never poisoned by a panic
/// that the seed does not already report).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

// ---- the disk --------------------------------------------------------------------------------

/// A log operation as submitted.
#[derive(Clone, Debug)]
enum Op {
    /// Keep entries up to and including this index.
    TruncateSuffix(Index),
    Append(Vec<Entry>),
    HardState(HardState),
    /// Drop entries before this index.
    TruncatePrefix(Index),
}

/// A log's contents: entries `first..`, and the hard state.
#[derive(Clone, Debug)]
struct Image {
    first: Index,
    entries: Vec<Entry>,
    hard_state: Option<HardState>,
}

impl Default for Image {
    fn default() -> Image {
        Image {
            first: Index(1),
            entries: Vec::new(),
            hard_state: None,
        }
    }
}

impl Image {
    fn last_index(&self) -> Index {
        Index(self.first.0 + self.entries.len() as u64 - 1)
    }

    fn get(&self, index: Index) -> Option<&Entry> {
        if index < self.first {
            return None;
        }
        self.entries.get((index.0 - self.first.0) as usize)
    }

    /// Applies `op`, keeping only `keep` entries of an append. Errors describe a glue bug
    /// (an operation the store contract forbids).
    fn apply(&mut self, op: &Op, keep: usize) -> Result<(), String> {
        match op {
            Op::TruncateSuffix(last) => {
                if last.0 + 1 < self.first.0 {
                    return Err(format!(
                        "disk: truncation after {last}, before {}",
                        self.first
                    ));
                }
                let keep = (last.0 + 1 - self.first.0) as usize;
                self.entries.truncate(keep);
            }
            Op::Append(entries) => {
                for entry in entries.iter().take(keep) {
                    let expected = self.last_index().next();
                    if entry.id.index != expected {
                        return Err(format!(
                            "disk: append of {} where {expected} was expected",
                            entry.id
                        ));
                    }
                    self.entries.push(entry.clone());
                }
            }
            Op::HardState(state) => self.hard_state = Some(*state),
            Op::TruncatePrefix(first) => {
                if *first <= self.first {
                    return Ok(());
                }
                let drop = ((first.0 - self.first.0) as usize).min(self.entries.len());
                self.entries.drain(..drop);
                self.first = *first;
            }
        }
        Ok(())
    }
}

/// One node's disk: what is durable, and the operations in flight. Shared by the node's log
/// store and the world.
#[derive(Debug, Default)]
pub(crate) struct Disk {
    durable: Image,
    inflight: VecDeque<(Ticket, Op)>,
    /// The last ticket issued and the last one durable.
    issued: Ticket,
    durable_through: Ticket,
    /// The last ticket the world has scheduled a completion for.
    pub(crate) scheduled: Ticket,
    /// Whether an operation submitted since the last completion was scheduled changes the
    /// term or the vote (crashes are aimed at those moments).
    pub(crate) term_change_pending: bool,
    /// A glue bug the store saw (an operation its contract forbids).
    pub(crate) error: Option<String>,
    /// Whether the log store keeps the hard state (like the WAL); if not, the node's stable
    /// store does (like a user's own log store beside hashicorp's `StableStore`).
    pub(crate) log_keeps_hard_state: bool,
    /// The stable store's contents (durable once a save returns).
    stable: HardState,
    /// Whether the log store writes a released batch on the caller's thread when nothing is
    /// on its way to disk, as the WAL of a node alone on its thread does
    /// ([`LogStore::release_writes`]): the batch is durable when the call returns.
    pub(crate) writes_here: bool,
}

impl Disk {
    /// The last ticket issued.
    pub(crate) fn issued(&self) -> Ticket {
        self.issued
    }

    /// Makes every operation through `ticket` durable.
    pub(crate) fn complete(&mut self, ticket: Ticket) -> Result<(), String> {
        while self.inflight.front().is_some_and(|(t, _)| *t <= ticket) {
            if let Some((t, op)) = self.inflight.pop_front() {
                self.durable.apply(&op, usize::MAX)?;
                self.durable_through = t;
            }
        }
        self.durable_through = self.durable_through.max(ticket.min(self.issued));
        Ok(())
    }

    /// A crash: in-flight operations survive as a prefix, the next append maybe torn.
    pub(crate) fn crash(&mut self, rng: &mut Rng) -> Result<(), String> {
        let ops: Vec<(Ticket, Op)> = self.inflight.drain(..).collect();
        let keep = rng.below(ops.len() as u64 + 1) as usize;
        for (_, op) in &ops[..keep] {
            self.durable.apply(op, usize::MAX)?;
        }
        if let Some((_, op @ Op::Append(entries))) = ops.get(keep) {
            if rng.chance(1, 2) {
                let torn = rng.below(entries.len() as u64 + 1) as usize;
                self.durable.apply(op, torn)?;
            }
        }
        self.issued = Ticket(0);
        self.durable_through = Ticket(0);
        self.scheduled = Ticket(0);
        self.term_change_pending = false;
        Ok(())
    }

    /// The term of the durable hard state (what a crash now would recover).
    pub(crate) fn durable_term(&self) -> Term {
        let in_log = self.durable.hard_state.map_or(Term(0), |h| h.term);
        in_log.max(self.stable.term)
    }
}

/// The log store a simulated node's shard writes to: operations are visible at once and
/// durable when the world says so.
pub(crate) struct SimLog {
    disk: Arc<Mutex<Disk>>,
    visible: Image,
    keeps_hard_state: bool,
}

impl SimLog {
    /// Opens the durable contents of `disk` (after a crash or at boot).
    pub(crate) fn open(disk: Arc<Mutex<Disk>>) -> SimLog {
        let (visible, keeps_hard_state) = {
            let d = lock(&disk);
            (d.durable.clone(), d.log_keeps_hard_state)
        };
        SimLog {
            disk,
            visible,
            keeps_hard_state,
        }
    }

    /// A disk holding a bootstrapped state (`log_keeps_hard_state`: see [`Disk`]).
    pub(crate) fn disk_with(
        entries: &[Entry],
        hard_state: HardState,
        log_keeps_hard_state: bool,
    ) -> Disk {
        Disk {
            durable: Image {
                first: Index(1),
                entries: entries.to_vec(),
                hard_state: log_keeps_hard_state.then_some(hard_state),
            },
            log_keeps_hard_state,
            stable: if log_keeps_hard_state {
                HardState::default()
            } else {
                hard_state
            },
            ..Disk::default()
        }
    }

    /// An empty disk.
    pub(crate) fn empty_disk(log_keeps_hard_state: bool) -> Disk {
        Disk {
            log_keeps_hard_state,
            ..Disk::default()
        }
    }

    fn submit(&mut self, op: Op) -> Result<Ticket, LogError> {
        if let Err(e) = self.visible.apply(&op, usize::MAX) {
            lock(&self.disk).error.get_or_insert(e.clone());
            return Err(LogError::Config { reason: e });
        }
        let mut disk = lock(&self.disk);
        if let Op::HardState(state) = &op {
            let durable = disk.durable.hard_state.unwrap_or_default();
            let last = disk
                .inflight
                .iter()
                .rev()
                .find_map(|(_, op)| match op {
                    Op::HardState(h) => Some(*h),
                    _ => None,
                })
                .unwrap_or(durable);
            if (last.term, last.vote) != (state.term, state.vote) {
                disk.term_change_pending = true;
            }
        }
        disk.issued = Ticket(disk.issued.0 + 1);
        let ticket = disk.issued;
        disk.inflight.push_back((ticket, op));
        Ok(ticket)
    }
}

impl LogStore for SimLog {
    fn first_index(&self) -> Index {
        self.visible.first
    }

    fn last_index(&self) -> Index {
        self.visible.last_index()
    }

    fn term(&self, index: Index) -> Result<Option<Term>, LogError> {
        Ok(self.visible.get(index).map(|e| e.id.term))
    }

    fn entry(&self, index: Index) -> Result<Option<Entry>, LogError> {
        Ok(self.visible.get(index).cloned())
    }

    fn entries(&self, start: Index, end: Index, max_bytes: usize) -> Result<Vec<Entry>, LogError> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut index = start;
        while index < end {
            let Some(entry) = self.visible.get(index) else {
                break;
            };
            if !out.is_empty() && bytes + entry.data.len() > max_bytes {
                break;
            }
            bytes += entry.data.len();
            out.push(entry.clone());
            index = index.next();
        }
        Ok(out)
    }

    fn append(&mut self, entries: &[Entry]) -> Result<Ticket, LogError> {
        if entries.is_empty() {
            return Ok(lock(&self.disk).issued);
        }
        self.submit(Op::Append(entries.to_vec()))
    }

    fn truncate_suffix(&mut self, last: Index) -> Result<Ticket, LogError> {
        self.submit(Op::TruncateSuffix(last))
    }

    fn truncate_prefix(&mut self, first: Index) -> Result<Ticket, LogError> {
        self.submit(Op::TruncatePrefix(first))
    }

    fn durable(&self) -> Result<Ticket, LogError> {
        Ok(lock(&self.disk).durable_through)
    }

    fn wait_durable(&self, _ticket: Ticket) -> Result<(), LogError> {
        Err(LogError::Config {
            reason: "the simulated log store cannot block: the shard must not wait on it".into(),
        })
    }

    fn set_durable_notifier(&mut self, _notifier: DurableNotifier) {}

    fn save_hard_state(&mut self, state: &HardState) -> Result<Option<Ticket>, LogError> {
        if !self.keeps_hard_state {
            return Ok(None);
        }
        self.submit(Op::HardState(*state)).map(Some)
    }

    fn saved_hard_state(&self) -> Option<HardState> {
        self.visible.hard_state
    }

    fn release_writes(&mut self, here: bool) -> Result<bool, LogError> {
        let mut disk = lock(&self.disk);
        let idle = disk.scheduled <= disk.durable_through;
        if !here || !disk.writes_here || !idle || disk.issued <= disk.durable_through {
            return Ok(false);
        }
        let issued = disk.issued;
        disk.complete(issued)
            .map_err(|reason| LogError::Config { reason })?;
        // Nothing left for the world to schedule.
        disk.scheduled = issued;
        Ok(true)
    }
}

/// The stable store of a simulated node whose log store keeps no hard state: a save is
/// durable when it returns (the shard calls it from its stable-store worker, which the world
/// runs when it schedules it).
pub(crate) struct SimStable {
    disk: Arc<Mutex<Disk>>,
}

impl SimStable {
    pub(crate) fn new(disk: Arc<Mutex<Disk>>) -> SimStable {
        SimStable { disk }
    }
}

impl ringraft_storage::StableStore for SimStable {
    fn hard_state(&self) -> HardState {
        lock(&self.disk).stable
    }

    fn save(&mut self, state: &HardState) -> Result<(), ringraft_storage::StableError> {
        lock(&self.disk).stable = *state;
        Ok(())
    }
}

// ---- the network -----------------------------------------------------------------------------

/// A node's end of the simulated network: what it sent, and what arrived for it.
#[derive(Debug, Default)]
pub(crate) struct Wire {
    pub(crate) outbox: Vec<Message>,
    pub(crate) inbox: VecDeque<TransportEvent>,
}

/// The disk of one simulated host shared by its groups' replicas, with group commit as the
/// shared WAL does it (ARCHITECTURE §5): one flush at a time; a write that arrives while a
/// flush is running joins the next one, with every other write that arrives before it starts.
#[derive(Debug, Default)]
pub(crate) struct HostDisk {
    /// When the running flush ends.
    running_until: Time,
    /// When the next flush ends, if writes wait for it.
    next_until: Option<Time>,
}

impl HostDisk {
    /// When a write issued at `now` is durable, if a flush takes `latency`.
    pub(crate) fn durable_at(&mut self, now: Time, latency: u64) -> Time {
        if let Some(next) = self.next_until {
            if now >= self.running_until {
                // The waiting flush has started (and may be over).
                self.running_until = next;
                self.next_until = None;
            }
        }
        if now >= self.running_until {
            self.running_until = now.plus_nanos(latency);
            return self.running_until;
        }
        *self
            .next_until
            .get_or_insert(self.running_until.plus_nanos(latency))
    }
}

/// The campaign slots of one simulated host shared by its groups: the router's rules
/// (`node::campaign`, ARCHITECTURE §14), with the world in place of the router's wakers: a
/// group granted a slot while it waited is listed in `granted`, and the world turns it.
#[derive(Debug)]
pub(crate) struct CampaignPool {
    slots: CampaignSlots<usize>,
    /// Each group's place in line.
    places: std::collections::BTreeMap<usize, Slot>,
    /// Groups granted a slot while they waited: the world turns them so they take it.
    pub(crate) granted: Vec<usize>,
    /// Times a group had to wait.
    pub(crate) waits: u64,
}

impl CampaignPool {
    /// A pool of `slots` slots.
    pub(crate) fn new(slots: usize) -> CampaignPool {
        CampaignPool {
            slots: CampaignSlots::new(slots),
            places: std::collections::BTreeMap::new(),
            granted: Vec::new(),
            waits: 0,
        }
    }

    fn poll(&mut self, group: usize) -> Poll<()> {
        let place = self.places.entry(group).or_default();
        match self.slots.poll(group, place) {
            Asked::Granted => Poll::Ready(()),
            Asked::Queued => {
                self.waits += 1;
                Poll::Pending
            }
            Asked::Waiting => Poll::Pending,
        }
    }

    fn release(&mut self, group: usize) {
        let Some(place) = self.places.get_mut(&group) else {
            return;
        };
        if self.slots.release(place) {
            while let Some(next) = self.slots.next_grant(&mut self.places) {
                self.granted.push(next);
            }
        }
    }

    /// The host's process died: its router, and every slot and place in line, with it.
    pub(crate) fn reset(&mut self) {
        self.slots.clear();
        self.places.clear();
        self.granted.clear();
    }
}

/// The transport a simulated node's shard uses.
pub(crate) struct SimTransport {
    id: NodeId,
    wire: Arc<Mutex<Wire>>,
    /// With several groups per host: the host's campaign slots, and this replica's group.
    campaign: Option<(Arc<Mutex<CampaignPool>>, usize)>,
}

impl SimTransport {
    pub(crate) fn new(
        id: NodeId,
        wire: Arc<Mutex<Wire>>,
        campaign: Option<(Arc<Mutex<CampaignPool>>, usize)>,
    ) -> SimTransport {
        SimTransport { id, wire, campaign }
    }
}

impl Drop for SimTransport {
    /// A replica that stops gives its slot back (the router's group link does the same).
    fn drop(&mut self) {
        self.release_campaign_slot();
    }
}

impl Transport for SimTransport {
    fn local_id(&self) -> NodeId {
        self.id
    }

    fn send(&mut self, _group: GroupId, message: Message) -> Result<(), SendError> {
        lock(&self.wire).outbox.push(message);
        Ok(())
    }

    fn poll_campaign_slot(&mut self, _cx: &mut Context<'_>) -> Poll<()> {
        match &self.campaign {
            Some((pool, group)) => lock(pool).poll(*group),
            None => Poll::Ready(()),
        }
    }

    fn release_campaign_slot(&mut self) {
        if let Some((pool, group)) = &self.campaign {
            lock(pool).release(*group);
        }
    }

    fn poll_recv(&mut self, _cx: &mut Context<'_>) -> Poll<Option<TransportEvent>> {
        match lock(&self.wire).inbox.pop_front() {
            Some(event) => Poll::Ready(Some(event)),
            None => Poll::Pending,
        }
    }
}

// ---- the state machine -----------------------------------------------------------------------

/// What a node's state machine holds and did since the world last looked.
#[derive(Debug, Default)]
pub(crate) struct Machine {
    pub(crate) kv: Kv,
    /// Command entries applied since the world last drained them, with their results.
    pub(crate) applied: Vec<(Entry, u64, KvResult)>,
    /// Snapshots installed (restored from a leader's snapshot) since the last drain.
    pub(crate) installs: u64,
    /// User restores applied since the last drain.
    pub(crate) restores: u64,
    /// Snapshots captured (taken) since the last drain.
    pub(crate) captures: u64,
    /// The index of the last command applied (commands must arrive in increasing order).
    pub(crate) last_command: Index,
    /// A broken promise the state machine saw (a gap, damaged restore data).
    pub(crate) error: Option<String>,
}

/// The simulator's key-value state machine behind the [`Fsm`] trait.
pub(crate) struct SimFsm {
    pub(crate) machine: Arc<Mutex<Machine>>,
    pub(crate) id: NodeId,
}

/// The response to a command: its op id, the term of its entry, and its result.
fn encode_response(op_id: u64, term: Term, result: &KvResult) -> Bytes {
    let mut b = BytesMut::with_capacity(26);
    b.put_u64_le(op_id);
    b.put_u64_le(term.0);
    kv::put_result(&mut b, result);
    b.freeze()
}

/// Parses [`encode_response`]'s output.
pub(crate) fn decode_response(b: &[u8]) -> Option<(u64, Term, KvResult)> {
    let mut at = 0usize;
    let mut next = |n: usize| -> Option<&[u8]> {
        let s = b.get(at..at + n)?;
        at += n;
        Some(s)
    };
    let word = |s: &[u8]| -> Option<u64> { Some(u64::from_le_bytes(s.try_into().ok()?)) };
    let op_id = word(next(8)?)?;
    let term = Term(word(next(8)?)?);
    let result = kv::take_result(&mut next)?;
    Some((op_id, term, result))
}

impl Fsm for SimFsm {
    fn apply(&mut self, entry: &Entry) -> Bytes {
        let mut m = lock(&self.machine);
        if entry.id.index <= m.last_command {
            let e = format!(
                "{} applied {} after {} (out of order)",
                self.id, entry.id, m.last_command
            );
            m.error.get_or_insert(e);
        }
        m.last_command = entry.id.index;
        let Some((op_id, op)) = kv::decode(&entry.data) else {
            let e = format!("{}: undecodable command at {}", self.id, entry.id);
            m.error.get_or_insert(e);
            return Bytes::new();
        };
        let result = m.kv.apply_at(entry.id.index.0, op_id, &op);
        m.applied.push((entry.clone(), op_id, result.clone()));
        encode_response(op_id, entry.id.term, &result)
    }

    fn snapshot(&mut self) -> Result<Box<dyn FsmSnapshot>, FsmError> {
        let mut m = lock(&self.machine);
        m.captures += 1;
        Ok(Box::new(SimSnapshot(m.kv.encode())))
    }

    fn restore(&mut self, snapshot: &mut dyn Read) -> Result<(), FsmError> {
        let mut bytes = Vec::new();
        snapshot
            .read_to_end(&mut bytes)
            .map_err(|e| FsmError::from(e.to_string()))?;
        let mut m = lock(&self.machine);
        if bytes.starts_with(RESTORE_MAGIC) {
            // A user restore: the simulated external snapshot stands for the state machine's
            // own state (the runtime's tests restore real state), so the model is unchanged;
            // what matters is that it arrived intact.
            if !restore_blob_is_intact(&bytes) {
                let e = format!("{}: a staged restore arrived damaged", self.id);
                m.error.get_or_insert(e.clone());
                return Err(FsmError::from(e));
            }
            m.restores += 1;
            return Ok(());
        }
        let Some(kv) = Kv::decode(&bytes) else {
            let e = format!("{}: a snapshot does not decode", self.id);
            m.error.get_or_insert(e.clone());
            return Err(FsmError::from(e));
        };
        m.kv = kv;
        m.installs += 1;
        // Commands after the snapshot may be at any index above it.
        m.last_command = Index(0);
        Ok(())
    }
}

struct SimSnapshot(Bytes);

impl FsmSnapshot for SimSnapshot {
    fn persist(&mut self, sink: &mut dyn Write) -> Result<(), FsmError> {
        sink.write_all(&self.0)
            .map_err(|e| FsmError::from(e.to_string()))
    }
}

const RESTORE_MAGIC: &[u8] = b"SIMRSTR1";

/// The simulated external snapshot a user restore stages: a header, bytes derived from
/// `nonce` and of varying length (so transfers take one or several chunks), so any node can
/// check that what it staged and applies is intact.
pub(crate) fn restore_blob(nonce: u64) -> Bytes {
    let len = 40 + (nonce.wrapping_mul(7919) >> 7) % 600;
    let mut b = BytesMut::with_capacity(16 + len as usize);
    b.put_slice(RESTORE_MAGIC);
    b.put_u64_le(nonce);
    b.extend(blob_body(nonce, len));
    b.freeze()
}

fn blob_body(nonce: u64, len: u64) -> impl Iterator<Item = u8> {
    let seed = nonce.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..len).map(move |i| (seed.rotate_left((i % 64) as u32) >> 3) as u8 ^ i as u8)
}

fn restore_blob_is_intact(bytes: &[u8]) -> bool {
    let Some(nonce) = bytes
        .get(8..16)
        .and_then(|s| <[u8; 8]>::try_from(s).ok())
        .map(u64::from_le_bytes)
    else {
        return false;
    };
    restore_blob(nonce)[..] == *bytes
}
