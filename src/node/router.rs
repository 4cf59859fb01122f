//! One transport shared by every Raft group of a node (ARCHITECTURE §14): the router of a
//! [`MultiRaft`](crate::MultiRaft).
//!
//! ```text
//!  group 7's shard ──send──► GroupTransport(7) ──► node transport ──frame(group 7)──► peer
//!  group 9's shard ◄─poll── inbox(9) ◄── router task ◄── node transport ◄── frames, pings
//! ```
//!
//! The router, its node transport and the shard loops of the groups on the node's first shard
//! run on one host thread, so the router is an `Rc<RefCell<_>>` found through a thread-local
//! registry (what crosses threads when a group starts is its [`GroupLink`]). Groups on the
//! node's other shard threads (`MultiRaftConfig::shards`) reach it through a
//! [`RemoteGroupTransport`]: requests queued for the router task, and an inbox of their own
//! behind a lock (ARCHITECTURE §14, "Several shard threads"). The router task
//! polls the node transport and hands each message to its group's inbox (waking that group's
//! shard); messages for groups this node does not run are dropped, as a network may drop them.
//!
//! Peer nodes are watched, not groups: every `ping_interval` the router sends each peer node
//! one `NodePing`, and a peer from which nothing arrived for `silence_timeout` is reported to
//! every group that has it as a member, as `PeerDisconnected { error: Silent }`, as soon as
//! that timeout passes (the router's timer wakes it for the earliest one, not only for its
//! pings). That report
//! is what lets idle groups quiesce: a quiesced follower wakes on it when its leader's node
//! goes silent. A lost connection is passed on the same way, and so is a peer's
//! `GroupStopped` (the group was shut down on that node), to that group alone.
//!
//! The router also paces the groups' elections ([`Campaigns`]): a group whose election timer
//! fires asks its transport for a campaign slot before it campaigns, and waits in a queue
//! while the node's slots are taken (ARCHITECTURE §14, "Herds").
//!
//! And it bounds what waits for the groups: at [`QUEUED_MAX`] messages in all inboxes it
//! stops taking messages from the node transport until the groups have taken half, so the
//! node transport (and, with TCP, flow control) holds what the groups have no time for yet
//! (ARCHITECTURE §14, "Bounded receiving").

use super::campaign::{Asked, CampaignSlots, Places, Slot};
use crate::api::transport::IntoTransport;
use ringraft_net::message::{Body, Message};
use ringraft_net::transport::{PeerError, SendError, SetPeerError, Transport, TransportEvent};
use ringraft_storage::{GroupId, NodeId, Term};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::{poll_fn, Future};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// Messages taken from the node transport per poll of the router task before it yields.
const EVENTS_PER_POLL_MAX: usize = 4096;

/// Messages held in the groups' inboxes (all groups of the node together) at which the router
/// stops taking messages from the node transport; it takes them again once the groups have
/// taken half. The node transport then holds what peers send (TCP: up to its receive budget,
/// then flow control holds the senders back), so a node that falls behind its peers stops
/// reading instead of growing without bound (ARCHITECTURE §14, "Bounded receiving").
const QUEUED_MAX: usize = 65_536;

/// Why a group cannot start on a node whose router task has stopped.
const ROUTER_STOPPED: &str = "the node's router has stopped";

/// Router ids, unique in the process (the thread-local registry's keys).
static NEXT_ROUTER: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The routers whose task runs on this thread.
    static ROUTERS: RefCell<BTreeMap<u64, Rc<RefCell<Router>>>> = const {
        RefCell::new(BTreeMap::new())
    };
}

/// What a router shares with the `MultiRaft` handle on other threads.
#[derive(Debug, Default)]
pub(crate) struct RouterShared {
    /// Set when the handle is dropped: the router task ends at its next tick.
    pub(crate) closed: AtomicBool,
    /// Groups registered now.
    pub(crate) groups: AtomicUsize,
    /// Pings sent and peers reported silent, for tests and stats.
    pub(crate) pings_sent: AtomicU64,
    pub(crate) silences: AtomicU64,
    /// Campaigns that waited for a slot.
    pub(crate) campaigns_deferred: AtomicU64,
    /// Campaign slots held now.
    pub(crate) campaign_slots_held: AtomicUsize,
    /// The router task's waker, so that closing the node wakes it at once.
    pub(crate) task_waker: Mutex<Option<Waker>>,
    /// Set (and `stopped_cv` notified) once the router task has stopped and its node
    /// transport is gone (with TCP, its listener closed).
    pub(crate) stopped: Mutex<bool>,
    pub(crate) stopped_cv: Condvar,
    /// The thread the router runs on (the node's first shard host thread).
    pub(crate) thread: OnceLock<ThreadId>,
    /// This node's id, set as the router starts.
    me: OnceLock<NodeId>,
    /// Messages in all inboxes together; groups on other shard threads take theirs there.
    queued: AtomicUsize,
    /// The router stopped taking messages from the node transport (`queued` reached
    /// [`QUEUED_MAX`]); a group that takes its messages wakes it at half.
    paused: AtomicBool,
    /// What groups on other shard threads ask of the router, in order (ARCHITECTURE §14,
    /// "Several shard threads").
    requests: Mutex<Requests>,
    /// Groups started on the node, on any of its shard threads.
    registered: Mutex<BTreeSet<GroupId>>,
}

/// Requests of groups on other shard threads, taken by the router task each poll.
#[derive(Default)]
struct Requests {
    list: Vec<Request>,
    /// The router stopped: nothing more is taken.
    gone: bool,
}

impl std::fmt::Debug for Requests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Requests")
            .field("queued", &self.list.len())
            .field("gone", &self.gone)
            .finish()
    }
}

/// What a group on another shard thread asks of the router.
enum Request {
    /// The group started: route its messages to this inbox.
    Register(GroupId, Arc<RemoteInbox>),
    Send(GroupId, Message),
    SetPeer(GroupId, NodeId, String),
    RemovePeer(GroupId, NodeId),
    AskSlot(GroupId),
    ReleaseSlot(GroupId),
    /// The group stopped (its transport was dropped).
    Stopped(GroupId),
}

impl RouterShared {
    /// Has the router task stop at once (it would notice `closed` within a ping interval).
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let waker = self
            .task_waker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Waits until the router task has stopped, at most `limit`; true if it has.
    pub(crate) fn wait_stopped(&self, limit: Duration) -> bool {
        let stopped = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
        let (stopped, _) = self
            .stopped_cv
            .wait_timeout_while(stopped, limit, |stopped| !*stopped)
            .unwrap_or_else(|p| p.into_inner());
        *stopped
    }

    /// Queues `request` for the router task, waking it if the queue was empty; false if the
    /// router has stopped.
    fn request(&self, request: Request) -> bool {
        let first = {
            let mut r = self.requests.lock().unwrap_or_else(|p| p.into_inner());
            if r.gone {
                return false;
            }
            r.list.push(request);
            r.list.len() == 1
        };
        if first {
            self.wake_task();
        }
        true
    }

    /// Counts `group` as running on the node; fails if it already does, or if the router has
    /// stopped (then no group starts).
    pub(crate) fn register_group(&self, group: GroupId) -> Result<(), String> {
        if self.closed.load(Ordering::Acquire)
            || self.requests.lock().unwrap_or_else(|p| p.into_inner()).gone
        {
            return Err(ROUTER_STOPPED.into());
        }
        let mut registered = self.registered.lock().unwrap_or_else(|p| p.into_inner());
        if !registered.insert(group) {
            return Err(format!("group {} already runs on this node", group.0));
        }
        self.groups.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// `group` no longer runs on the node (it may start again).
    pub(crate) fn unregister(&self, group: GroupId) {
        let removed = self
            .registered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&group);
        if removed {
            self.groups.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// `n` messages left the inboxes; reading resumes once half the bound is taken.
    fn taken(&self, n: usize) {
        let left = self.queued.fetch_sub(n, Ordering::AcqRel) - n;
        if left <= QUEUED_MAX / 2
            && self.paused.load(Ordering::Acquire)
            && self.paused.swap(false, Ordering::AcqRel)
        {
            self.wake_task();
        }
    }

    /// Wakes the router task (it keeps its waker).
    fn wake_task(&self) {
        let waker = self.task_waker.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(waker) = waker.as_ref() {
            waker.wake_by_ref();
        }
    }

    fn keep_waker(&self, cx: &Context<'_>) {
        keep_waker(
            &mut self.task_waker.lock().unwrap_or_else(|p| p.into_inner()),
            cx,
        );
    }
}

/// Keeps `cx`'s waker in `slot`, unless the one there already wakes the same task.
fn keep_waker(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// Timing of the liveness watch.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Watch {
    pub(crate) ping_interval: Duration,
    pub(crate) silence_timeout: Duration,
}

struct Inbox {
    mailbox: Mailbox,
    slot: Slot,
}

/// Where a group's messages wait: on the router's thread, or handed to another shard thread.
enum Mailbox {
    Local {
        events: VecDeque<TransportEvent>,
        waker: Option<Waker>,
    },
    Remote(Arc<RemoteInbox>),
}

/// The inbox of a group on another shard thread than the router's.
#[derive(Default)]
struct RemoteInbox {
    state: Mutex<RemoteState>,
}

#[derive(Default)]
struct RemoteState {
    events: VecDeque<TransportEvent>,
    waker: Option<Waker>,
    /// The group asked for a campaign slot and waits for it.
    asked: bool,
    /// The group holds a campaign slot.
    granted: bool,
    /// The router stopped: no more messages.
    stopped: bool,
}

impl RemoteInbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, RemoteState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the state and wakes the group's shard.
    fn update(&self, f: impl FnOnce(&mut RemoteState)) {
        let waker = {
            let mut s = self.lock();
            f(&mut s);
            s.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Inbox {
    fn new(mailbox: Mailbox) -> Inbox {
        Inbox {
            mailbox,
            slot: Slot::None,
        }
    }

    /// Keeps `cx`'s waker to wake the group's shard (a group on the router's thread).
    fn register(&mut self, cx: &Context<'_>) {
        if let Mailbox::Local { waker, .. } = &mut self.mailbox {
            keep_waker(waker, cx);
        }
    }

    /// Hands `event` to the group and wakes its shard.
    fn push(&mut self, event: TransportEvent) {
        match &mut self.mailbox {
            Mailbox::Local { events, waker } => {
                events.push_back(event);
                if let Some(waker) = waker.take() {
                    waker.wake();
                }
            }
            Mailbox::Remote(inbox) => inbox.update(|s| s.events.push_back(event)),
        }
    }

    /// The group was granted the campaign slot it waits for.
    fn granted(&mut self) {
        match &mut self.mailbox {
            Mailbox::Local { waker, .. } => {
                if let Some(waker) = waker.take() {
                    waker.wake();
                }
            }
            Mailbox::Remote(inbox) => inbox.update(|s| {
                if s.asked {
                    s.asked = false;
                    s.granted = true;
                }
            }),
        }
    }

    /// The router stopped: wake the group to find its transport closed.
    fn stopped(&mut self) {
        match &mut self.mailbox {
            Mailbox::Local { waker, .. } => {
                if let Some(waker) = waker.take() {
                    waker.wake();
                }
            }
            Mailbox::Remote(inbox) => inbox.update(|s| s.stopped = true),
        }
    }

    /// Messages waiting.
    fn len(&self) -> usize {
        match &self.mailbox {
            Mailbox::Local { events, .. } => events.len(),
            Mailbox::Remote(inbox) => inbox.lock().events.len(),
        }
    }
}

/// The inboxes hold the groups' places in the campaign line. A waiting group is woken through
/// its inbox once granted: a waiting shard is parked, and a shard parks only after its
/// receive found the inbox empty and left its waker.
impl Places<GroupId> for BTreeMap<GroupId, Inbox> {
    fn place(&mut self, group: GroupId) -> Option<&mut Slot> {
        self.get_mut(&group).map(|inbox| &mut inbox.slot)
    }
}

struct Peer {
    /// Groups that have this peer as a member (they called `set_peer`).
    groups: BTreeSet<GroupId>,
    /// The last address the node transport took for the peer (empty: none yet).
    address: String,
    /// When anything last arrived from the peer (or the watch began).
    heard: Instant,
    silent: bool,
}

pub(crate) struct Router {
    me: NodeId,
    /// `None` once the router stopped (the handle was dropped or the transport shut down).
    transport: Option<Box<dyn Transport>>,
    inboxes: BTreeMap<GroupId, Inbox>,
    peers: BTreeMap<NodeId, Peer>,
    /// The node's campaign slots: a group's shard gives its slot back when its campaign ends,
    /// when the leader it became commits an entry of its term, or two election timeouts
    /// after the grant, whichever comes first, so a slot is never held for long and every
    /// waiting group gets one.
    campaigns: CampaignSlots<GroupId>,
    shared: Arc<RouterShared>,
}

impl Router {
    /// `group` asks for a campaign slot (see [`Transport::poll_campaign_slot`]).
    /// `Ready` once `group` holds a slot; otherwise it waits in line (counted as deferred when
    /// it joins) and is woken through its inbox when granted, with `cx`'s waker if it is on
    /// this thread.
    fn poll_campaign_slot(&mut self, group: GroupId, cx: Option<&Context<'_>>) -> Poll<()> {
        let Some(inbox) = self.inboxes.get_mut(&group) else {
            return Poll::Ready(());
        };
        match self.campaigns.poll(group, &mut inbox.slot) {
            Asked::Granted => {
                self.count_held_slots();
                return Poll::Ready(());
            }
            Asked::Waiting => {}
            Asked::Queued => {
                self.shared
                    .campaigns_deferred
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(cx) = cx {
            inbox.register(cx);
        }
        Poll::Pending
    }

    /// `group` gives back its slot or leaves the queue; the slot goes to the next in line.
    fn release_campaign_slot(&mut self, group: GroupId) {
        let Some(inbox) = self.inboxes.get_mut(&group) else {
            return;
        };
        if self.campaigns.release(&mut inbox.slot) {
            // Free slots go to waiting groups, first come first served.
            while let Some(granted) = self.campaigns.next_grant(&mut self.inboxes) {
                if let Some(inbox) = self.inboxes.get_mut(&granted) {
                    inbox.granted();
                }
            }
            self.count_held_slots();
        }
    }

    /// Publishes how many campaign slots are held (`MultiRaftStats::campaign_slots_held`).
    fn count_held_slots(&self) {
        self.shared
            .campaign_slots_held
            .store(self.campaigns.held(), Ordering::Relaxed);
    }

    /// Hands `event` to `group`'s inbox (dropped if this node does not run the group).
    fn deliver(&mut self, group: GroupId, event: TransportEvent) {
        if let Some(inbox) = self.inboxes.get_mut(&group) {
            self.shared.queued.fetch_add(1, Ordering::AcqRel);
            inbox.push(event);
        }
    }

    /// Hands a copy of `event` to every group that has `peer` as a member.
    fn deliver_to_groups_of(&mut self, peer: NodeId, event: &TransportEvent) {
        let groups: Vec<GroupId> = self
            .peers
            .get(&peer)
            .map(|p| p.groups.iter().copied().collect())
            .unwrap_or_default();
        for group in groups {
            self.deliver(group, event.clone());
        }
    }

    fn heard_from(&mut self, peer: NodeId, now: Instant) {
        if let Some(p) = self.peers.get_mut(&peer) {
            p.heard = now;
            p.silent = false;
        }
    }

    /// Routes one event of the node transport.
    fn route(&mut self, event: TransportEvent, now: Instant) {
        match event {
            TransportEvent::Message { group, message } => {
                self.heard_from(message.from, now);
                match message.body {
                    Body::NodePing => {}
                    // The sender's replica of the group stopped: to the group, as if the
                    // peer were gone (a quiesced follower under it campaigns).
                    Body::GroupStopped => {
                        let event = TransportEvent::PeerDisconnected {
                            peer: message.from,
                            error: PeerError::GroupStopped,
                        };
                        self.deliver(group, event);
                    }
                    _ => self.deliver(group, TransportEvent::Message { group, message }),
                }
            }
            TransportEvent::PeerConnected { peer } => {
                self.heard_from(peer, now);
                self.deliver_to_groups_of(peer, &TransportEvent::PeerConnected { peer });
            }
            TransportEvent::PeerDisconnected { peer, error } => {
                self.deliver_to_groups_of(peer, &TransportEvent::PeerDisconnected { peer, error });
            }
            TransportEvent::SendFailed {
                peer,
                failed,
                error,
            } => {
                let mut by_group: BTreeMap<GroupId, Vec<_>> = BTreeMap::new();
                for f in failed {
                    by_group.entry(f.group).or_default().push(f);
                }
                for (group, failed) in by_group {
                    let event = TransportEvent::SendFailed {
                        peer,
                        failed,
                        error: error.clone(),
                    };
                    self.deliver(group, event);
                }
            }
            // About no group: logged by the node transport's own metrics path elsewhere.
            event @ TransportEvent::InboundRejected { .. } => {
                tracing::debug!(node = self.me.0, ?event, "inbound connection rejected");
            }
            event => tracing::debug!(node = self.me.0, ?event, "transport event"),
        }
    }

    /// Pings every peer node if `ping`, and reports the ones silent for
    /// `watch.silence_timeout`. Returns when the next peer falls silent unless it is heard
    /// from before (`None`: no peer left to watch): the router wakes then, so a silence is
    /// reported when it reaches the timeout, not at the next ping (which may be up to a
    /// ping interval later).
    fn watch(&mut self, watch: Watch, now: Instant, ping: bool) -> Option<Instant> {
        let me = self.me;
        let mut silent = Vec::new();
        let mut next_silence: Option<Instant> = None;
        let paused = self.shared.paused.load(Ordering::Acquire);
        if let Some(transport) = self.transport.as_mut() {
            for (&peer, p) in &mut self.peers {
                if paused {
                    // While the router does not read, what peers sent waits unread: no peer
                    // can be told silent.
                    p.heard = now;
                }
                if ping {
                    let ping = Message {
                        from: me,
                        to: peer,
                        term: Term(0),
                        body: Body::NodePing,
                    };
                    // Best effort: a full queue or a missing connection is what the watch is
                    // for.
                    let _ = transport.send(GroupId(0), ping);
                    self.shared.pings_sent.fetch_add(1, Ordering::Relaxed);
                }
                if p.silent {
                    continue;
                }
                let quiet = now.saturating_duration_since(p.heard);
                if quiet >= watch.silence_timeout {
                    p.silent = true;
                    silent.push((peer, quiet));
                } else {
                    let at = p.heard + watch.silence_timeout;
                    next_silence = Some(next_silence.map_or(at, |n| n.min(at)));
                }
            }
        }
        for (peer, quiet) in silent {
            self.shared.silences.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(node = me.0, peer = peer.0, ?quiet, "peer node silent");
            let event = TransportEvent::PeerDisconnected {
                peer,
                error: PeerError::Silent {
                    for_ms: quiet.as_millis() as u64,
                },
            };
            self.deliver_to_groups_of(peer, &event);
        }
        next_silence
    }

    /// Stops: drops the node transport and tells every group.
    fn stop(&mut self) {
        self.transport = None;
        let left = {
            let mut r = self
                .shared
                .requests
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            r.gone = true;
            std::mem::take(&mut r.list)
        };
        for request in left {
            // Groups that started on other threads since the last poll hear it too.
            if let Request::Register(_, inbox) = request {
                inbox.update(|s| s.stopped = true);
            }
        }
        for inbox in self.inboxes.values_mut() {
            inbox.stopped();
        }
    }

    /// Does what a group on another shard thread asked.
    fn handle(&mut self, request: Request) {
        match request {
            Request::Register(group, inbox) => {
                self.inboxes
                    .insert(group, Inbox::new(Mailbox::Remote(inbox)));
            }
            Request::Send(group, message) => {
                let to = message.to;
                let sent = match self.transport.as_mut() {
                    Some(t) => t.send(group, message),
                    None => Err(SendError::Shutdown),
                };
                if let Err(SendError::NotConnected { .. }) = sent {
                    // What a group on this thread learns from `send`'s error: a transfer to
                    // the peer fails fast instead of waiting out its timeout.
                    let event = TransportEvent::PeerDisconnected {
                        peer: to,
                        error: PeerError::NotConnected,
                    };
                    self.deliver(group, event);
                }
            }
            Request::SetPeer(group, peer, address) => {
                // An address the node transport refuses still puts the group on the peer's
                // list (see `set_peer`); this group's call returned `Ok`, so say so here.
                if let Err(e) = self.set_peer(group, peer, &address) {
                    tracing::warn!(
                        node = self.me.0,
                        group = group.0,
                        peer = peer.0,
                        address = %address,
                        error = %e,
                        "the node transport refused a peer's address"
                    );
                }
            }
            Request::RemovePeer(group, peer) => self.remove_peer(group, peer),
            Request::AskSlot(group) => {
                if self.poll_campaign_slot(group, None).is_ready() {
                    if let Some(inbox) = self.inboxes.get_mut(&group) {
                        inbox.granted();
                    }
                }
            }
            Request::ReleaseSlot(group) => self.release_campaign_slot(group),
            Request::Stopped(group) => self.group_stopped(group),
        }
    }

    /// `group` (on any shard thread) has `peer` as a member, reached at `address`. The group
    /// joins the peer's list even when the node transport refuses the address (a host name,
    /// for TCP): the transport may know the peer from its own configuration, and the liveness
    /// watch must cover the group either way, since a quiesced follower learns that its
    /// leader's node went silent from nothing else. The refusal is returned.
    fn set_peer(
        &mut self,
        group: GroupId,
        peer: NodeId,
        address: &str,
    ) -> Result<(), SetPeerError> {
        let Some(transport) = self.transport.as_mut() else {
            return Ok(());
        };
        let known = self.peers.get(&peer).map(|p| p.address.as_str());
        let result = if known == Some(address) {
            Ok(())
        } else {
            transport.set_peer(peer, address)
        };
        let now = super::clock::monotonic_now();
        let p = self.peers.entry(peer).or_insert_with(|| Peer {
            groups: BTreeSet::new(),
            // The address the transport took; none yet.
            address: String::new(),
            heard: now,
            silent: false,
        });
        if result.is_ok() {
            p.address = address.to_string();
        }
        p.groups.insert(group);
        result
    }

    /// `group` no longer has `peer` as a member.
    fn remove_peer(&mut self, group: GroupId, peer: NodeId) {
        let Some(p) = self.peers.get_mut(&peer) else {
            return;
        };
        p.groups.remove(&group);
        if p.groups.is_empty() {
            self.peers.remove(&peer);
            if let Some(t) = self.transport.as_mut() {
                t.remove_peer(peer);
            }
        }
    }

    /// `group` stopped on this node: its peers' replicas hear so (`GroupStopped`), so none of
    /// them stays quiesced under a leader that is gone while its node is not.
    fn group_stopped(&mut self, group: GroupId) {
        self.release_campaign_slot(group);
        if let Some(inbox) = self.inboxes.remove(&group) {
            self.shared.taken(inbox.len());
        }
        let me = self.me;
        if let Some(transport) = self.transport.as_mut() {
            for (&peer, p) in &self.peers {
                if p.groups.contains(&group) {
                    let stopped = Message {
                        from: me,
                        to: peer,
                        term: Term(0),
                        body: Body::GroupStopped,
                    };
                    // Best effort: if it is lost, the followers wait for the next message
                    // or for this node's silence.
                    let _ = transport.send(group, stopped);
                }
            }
        }
        let mut gone = Vec::new();
        for (&peer, p) in &mut self.peers {
            if p.groups.remove(&group) && p.groups.is_empty() {
                gone.push(peer);
            }
        }
        for peer in gone {
            self.peers.remove(&peer);
            if let Some(t) = self.transport.as_mut() {
                t.remove_peer(peer);
            }
        }
    }
}

/// Creates the router on this (host) thread and returns its id and its task. The task polls
/// `transport` and routes, and ends once the handle sets `shared.closed` or the transport
/// shuts down.
pub(crate) fn start(
    transport: Box<dyn Transport>,
    watch: Watch,
    campaign_slots: usize,
    shared: Arc<RouterShared>,
) -> (u64, impl Future<Output = ()>) {
    let id = NEXT_ROUTER.fetch_add(1, Ordering::Relaxed);
    let _ = shared.thread.set(std::thread::current().id());
    let _ = shared.me.set(transport.local_id());
    let router = Rc::new(RefCell::new(Router {
        me: transport.local_id(),
        transport: Some(transport),
        inboxes: BTreeMap::new(),
        peers: BTreeMap::new(),
        campaigns: CampaignSlots::new(campaign_slots),
        shared,
    }));
    ROUTERS.with(|r| r.borrow_mut().insert(id, router.clone()));
    (id, run(id, router, watch))
}

async fn run(id: u64, router: Rc<RefCell<Router>>, watch: Watch) {
    // The watch's timer: the next ping, or a peer's silence timeout if that comes first. A
    // peer heard from meanwhile moves its timeout later; a peer added, or heard again after a
    // silence, gets one a whole silence timeout away: after the armed time, which is never
    // after the next ping (`ping_interval` is below `silence_timeout`).
    let mut next_ping = tokio::time::Instant::now() + watch.ping_interval;
    let tick = tokio::time::sleep_until(next_ping);
    tokio::pin!(tick);
    poll_fn(|cx| {
        let mut r = router.borrow_mut();
        r.shared.keep_waker(cx);
        if r.shared.closed.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        let now = super::clock::monotonic_now();
        let requests = {
            let mut q = r.shared.requests.lock().unwrap_or_else(|p| p.into_inner());
            std::mem::take(&mut q.list)
        };
        for request in requests {
            r.handle(request);
        }
        let shared = r.shared.clone();
        if shared.queued.load(Ordering::Acquire) < QUEUED_MAX {
            // Polled again (a group took half, or the tick): reading.
            shared.paused.store(false, Ordering::Release);
        }
        let mut taken = 0;
        loop {
            if shared.queued.load(Ordering::Acquire) >= QUEUED_MAX {
                // Woken by a group once half is taken (`RouterShared::taken`).
                shared.paused.store(true, Ordering::Release);
                if shared.queued.load(Ordering::Acquire) <= QUEUED_MAX / 2 {
                    // Groups on other threads took half meanwhile: read on.
                    shared.paused.store(false, Ordering::Release);
                    continue;
                }
                break;
            }
            if taken == EVENTS_PER_POLL_MAX {
                // More may be waiting, and the transport need not wake us for them: yield and
                // come back (the groups just handed messages run first).
                cx.waker().wake_by_ref();
                break;
            }
            let Some(transport) = r.transport.as_mut() else {
                return Poll::Ready(());
            };
            match transport.poll_recv(cx) {
                Poll::Ready(Some(event)) => r.route(event, now),
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => break,
            }
            taken += 1;
        }
        while tick.as_mut().poll(cx).is_ready() {
            let woke = tokio::time::Instant::now();
            let ping = woke >= next_ping;
            if ping {
                next_ping = woke + watch.ping_interval;
            }
            let next = match r.watch(watch, woke.into_std(), ping) {
                Some(silence) => next_ping.min(tokio::time::Instant::from_std(silence)),
                None => next_ping,
            };
            tick.as_mut().reset(next);
        }
        Poll::Pending
    })
    .await;
    router.borrow_mut().stop();
    ROUTERS.with(|r| r.borrow_mut().remove(&id));
    // The node transport is dropped; its own tasks (the TCP listener's accept loop, woken by
    // the drop) end in this thread's next turns: let them run before saying so.
    for _ in 0..2 {
        tokio::task::yield_now().await;
    }
    let shared = router.borrow().shared.clone();
    *shared.stopped.lock().unwrap_or_else(|p| p.into_inner()) = true;
    shared.stopped_cv.notify_all();
}

/// What crosses to a shard thread when a group starts: the router's id, the group's, and
/// what the router shares across threads. Becomes that group's [`GroupTransport`] on the
/// router's own thread, a [`RemoteGroupTransport`] on another. The group was registered
/// when it was added ([`RouterShared::register_group`], on the caller's thread); a start
/// that fails unregisters it.
pub(crate) struct GroupLink {
    pub(crate) router: u64,
    pub(crate) group: GroupId,
    pub(crate) shared: Arc<RouterShared>,
}

/// What a group the router has registered starts with on the calling thread: its inbox in
/// the router and a transport through it (see [`GroupLink`]), or why not.
fn connect(
    router: u64,
    group: GroupId,
    shared: &Arc<RouterShared>,
) -> Result<Box<dyn Transport>, String> {
    let local = ROUTERS.with(|r| r.borrow().get(&router).cloned());
    if let Some(router) = local {
        {
            let mut r = router.borrow_mut();
            if r.transport.is_none() {
                return Err(ROUTER_STOPPED.into());
            }
            let mailbox = Mailbox::Local {
                events: VecDeque::new(),
                waker: None,
            };
            r.inboxes.insert(group, Inbox::new(mailbox));
        }
        return Ok(Box::new(GroupTransport { router, group }));
    }
    if shared.thread.get() == Some(&std::thread::current().id()) {
        // The router's own thread, and the router is gone from it.
        return Err(ROUTER_STOPPED.into());
    }
    let me = *shared.me.get().ok_or(ROUTER_STOPPED)?;
    let inbox = Arc::new(RemoteInbox::default());
    if !shared.request(Request::Register(group, inbox.clone())) {
        return Err(ROUTER_STOPPED.into());
    }
    Ok(Box::new(RemoteGroupTransport {
        shared: shared.clone(),
        inbox,
        group,
        me,
    }))
}

impl IntoTransport for GroupLink {
    async fn into_transport(self) -> Result<Box<dyn Transport>, String> {
        let GroupLink {
            router,
            group,
            shared,
        } = self;
        let made = connect(router, group, &shared);
        if made.is_err() {
            shared.unregister(group);
        }
        made
    }

    fn reports_silent_peers(&self) -> bool {
        true
    }
}

/// One group's view of the node transport, on the router's thread (see the module docs).
pub(crate) struct GroupTransport {
    router: Rc<RefCell<Router>>,
    group: GroupId,
}

impl Transport for GroupTransport {
    fn local_id(&self) -> NodeId {
        self.router.borrow().me
    }

    fn send(&mut self, _group: GroupId, message: Message) -> Result<(), SendError> {
        let mut r = self.router.borrow_mut();
        match r.transport.as_mut() {
            Some(t) => t.send(self.group, message),
            None => Err(SendError::Shutdown),
        }
    }

    fn set_peer(&mut self, peer: NodeId, address: &str) -> Result<(), SetPeerError> {
        self.router.borrow_mut().set_peer(self.group, peer, address)
    }

    fn remove_peer(&mut self, peer: NodeId) {
        self.router.borrow_mut().remove_peer(self.group, peer);
    }

    fn reports_silent_peers(&self) -> bool {
        true
    }

    fn poll_campaign_slot(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.router
            .borrow_mut()
            .poll_campaign_slot(self.group, Some(cx))
    }

    fn release_campaign_slot(&mut self) {
        self.router.borrow_mut().release_campaign_slot(self.group);
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<TransportEvent>> {
        let mut r = self.router.borrow_mut();
        let Router {
            transport,
            inboxes,
            shared,
            ..
        } = &mut *r;
        let stopped = transport.is_none();
        let Some(inbox) = inboxes.get_mut(&self.group) else {
            return Poll::Ready(None);
        };
        let Mailbox::Local { events, .. } = &mut inbox.mailbox else {
            return Poll::Ready(None);
        };
        if let Some(event) = events.pop_front() {
            shared.taken(1);
            return Poll::Ready(Some(event));
        }
        // Some room stays for the next message: a busy group's inbox empties after nearly
        // every message (one turn each), and freeing it then cost an allocation per message.
        // An idle group gives it back as it quiesces (`release_idle_memory`).
        trim_burst(events);
        if stopped {
            return Poll::Ready(None);
        }
        inbox.register(cx);
        Poll::Pending
    }

    fn release_idle_memory(&mut self) {
        let mut r = self.router.borrow_mut();
        if let Some(Inbox {
            mailbox: Mailbox::Local { events, .. },
            ..
        }) = r.inboxes.get_mut(&self.group)
        {
            release_if_empty(events);
        }
    }
}

/// Room an empty inbox keeps for a busy group's next messages; more (after a burst) is freed.
const INBOX_KEEP: usize = 16;

/// Frees the room of an empty inbox beyond [`INBOX_KEEP`] slots.
fn trim_burst(events: &mut VecDeque<TransportEvent>) {
    if events.is_empty() && events.capacity() > INBOX_KEEP {
        *events = VecDeque::new();
    }
}

/// Frees the room of an empty inbox (an idle group's: thousands per node).
fn release_if_empty(events: &mut VecDeque<TransportEvent>) {
    if events.is_empty() && events.capacity() > 0 {
        *events = VecDeque::new();
    }
}

impl Drop for GroupTransport {
    /// The group stopped on this node (see [`Router::group_stopped`]).
    fn drop(&mut self) {
        let mut r = self.router.borrow_mut();
        r.group_stopped(self.group);
        r.shared.unregister(self.group);
    }
}

/// One group's view of the node transport from another shard thread than the router's: what
/// it sends and asks goes to the router task as [`Request`]s, what arrives for it waits in its
/// [`RemoteInbox`] (ARCHITECTURE §14, "Several shard threads").
pub(crate) struct RemoteGroupTransport {
    shared: Arc<RouterShared>,
    inbox: Arc<RemoteInbox>,
    group: GroupId,
    me: NodeId,
}

impl Transport for RemoteGroupTransport {
    fn local_id(&self) -> NodeId {
        self.me
    }

    /// Queued for the router's thread, so a peer that is not connected is reported afterwards
    /// as `PeerDisconnected` rather than as this call's error.
    fn send(&mut self, _group: GroupId, message: Message) -> Result<(), SendError> {
        if self.shared.request(Request::Send(self.group, message)) {
            Ok(())
        } else {
            Err(SendError::Shutdown)
        }
    }

    /// Queued for the router's thread, so an address the node transport refuses is not this
    /// call's error: the router logs it, and the group stays off the peer's list (as it would
    /// on the router's thread), but its shard, told `Ok`, does not try that address again.
    fn set_peer(&mut self, peer: NodeId, address: &str) -> Result<(), SetPeerError> {
        self.shared
            .request(Request::SetPeer(self.group, peer, address.to_string()));
        Ok(())
    }

    fn remove_peer(&mut self, peer: NodeId) {
        self.shared.request(Request::RemovePeer(self.group, peer));
    }

    fn reports_silent_peers(&self) -> bool {
        true
    }

    fn poll_campaign_slot(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let ask = {
            let mut s = self.inbox.lock();
            if s.granted || s.stopped {
                return Poll::Ready(());
            }
            keep_waker(&mut s.waker, cx);
            !std::mem::replace(&mut s.asked, true)
        };
        if ask && !self.shared.request(Request::AskSlot(self.group)) {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    fn release_campaign_slot(&mut self) {
        let held = {
            let mut s = self.inbox.lock();
            let held = s.asked || s.granted;
            s.asked = false;
            s.granted = false;
            held
        };
        if held {
            self.shared.request(Request::ReleaseSlot(self.group));
        }
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<TransportEvent>> {
        let mut s = self.inbox.lock();
        if let Some(event) = s.events.pop_front() {
            drop(s);
            self.shared.taken(1);
            return Poll::Ready(Some(event));
        }
        // As on the router's thread: some room stays until the group quiesces.
        trim_burst(&mut s.events);
        if s.stopped {
            return Poll::Ready(None);
        }
        keep_waker(&mut s.waker, cx);
        Poll::Pending
    }

    fn release_idle_memory(&mut self) {
        release_if_empty(&mut self.inbox.lock().events);
    }
}

impl Drop for RemoteGroupTransport {
    /// The group stopped on this node: the router tells its peers (see
    /// [`Router::group_stopped`]) and counts off what still waits in its inbox.
    fn drop(&mut self) {
        self.shared.request(Request::Stopped(self.group));
        self.shared.unregister(self.group);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A node transport with an endless supply of messages for group 1; counts those taken.
    struct Flood {
        taken: Rc<Cell<u64>>,
    }

    impl Transport for Flood {
        fn local_id(&self) -> NodeId {
            NodeId(1)
        }

        fn send(&mut self, _group: GroupId, _message: Message) -> Result<(), SendError> {
            Ok(())
        }

        fn poll_recv(&mut self, _cx: &mut Context<'_>) -> Poll<Option<TransportEvent>> {
            self.taken.set(self.taken.get() + 1);
            let message = Message {
                from: NodeId(2),
                to: NodeId(1),
                term: Term(1),
                body: Body::TimeoutNow,
            };
            Poll::Ready(Some(TransportEvent::Message {
                group: GroupId(1),
                message,
            }))
        }
    }

    /// A node transport that refuses every peer address (as TCP refuses a host name) and
    /// hears nothing.
    struct Refusing;

    impl Transport for Refusing {
        fn local_id(&self) -> NodeId {
            NodeId(1)
        }

        fn send(&mut self, _group: GroupId, _message: Message) -> Result<(), SendError> {
            Ok(())
        }

        fn set_peer(&mut self, peer: NodeId, address: &str) -> Result<(), SetPeerError> {
            Err(SetPeerError::NotDialable {
                peer,
                address: address.to_string(),
            })
        }

        fn poll_recv(&mut self, _cx: &mut Context<'_>) -> Poll<Option<TransportEvent>> {
            Poll::Pending
        }
    }

    /// A group whose member's address the node transport refuses still has that member
    /// watched: the refusal is returned, and the member's silence reaches the group (a
    /// quiesced follower learns of its leader's failure from nothing else).
    #[test]
    fn a_member_whose_address_the_transport_refuses_is_still_watched() {
        let watch = Watch {
            ping_interval: Duration::from_millis(10),
            silence_timeout: Duration::from_millis(50),
        };
        on_router_thread_with(Box::new(Refusing), watch, |shared, id, task| async move {
            let mut group = group_1(&shared, id).await;
            tokio::task::spawn_local(task);
            assert_eq!(
                group.set_peer(NodeId(2), "n2"),
                Err(SetPeerError::NotDialable {
                    peer: NodeId(2),
                    address: "n2".to_string()
                })
            );
            let heard = tokio::time::timeout(Duration::from_secs(5), silence(&mut group)).await;
            assert_eq!(
                heard,
                Ok(true),
                "the member's silence never reached the group"
            );
            shared.close();
            turns(10).await;
        });
    }

    /// Resolves to true once `group` hears that node 2 fell silent (false if its transport
    /// ended first).
    async fn silence(group: &mut Box<dyn Transport>) -> bool {
        poll_fn(|cx| loop {
            match group.poll_recv(cx) {
                Poll::Ready(Some(TransportEvent::PeerDisconnected {
                    peer: NodeId(2),
                    error: PeerError::Silent { .. },
                })) => return Poll::Ready(true),
                Poll::Ready(Some(_)) => continue,
                Poll::Ready(None) => return Poll::Ready(false),
                Poll::Pending => return Poll::Pending,
            }
        })
        .await
    }

    /// A silence is reported when it reaches the timeout, not at the router's next ping:
    /// with pings every 1.9 s and a timeout of 2 s, a member silent from the start is reported
    /// at 2 s (the router wakes for the timeout), not at the second ping, 3.8 s.
    #[test]
    fn a_silence_is_reported_at_its_timeout_not_at_the_next_ping() {
        let watch = Watch {
            ping_interval: Duration::from_millis(1900),
            silence_timeout: Duration::from_secs(2),
        };
        on_router_thread_with(Box::new(Refusing), watch, |shared, id, task| async move {
            let mut group = group_1(&shared, id).await;
            tokio::task::spawn_local(task);
            let _ = group.set_peer(NodeId(2), "n2");
            let watched = tokio::time::Instant::now();
            let heard = tokio::time::timeout(Duration::from_secs(5), silence(&mut group)).await;
            assert_eq!(heard, Ok(true), "the silence was never reported");
            let after = watched.elapsed();
            assert!(
                after >= Duration::from_millis(1900) && after < Duration::from_millis(3200),
                "reported silent after {after:?}: the timeout is 2 s, the second ping 3.8 s"
            );
            shared.close();
            turns(10).await;
        });
    }

    fn event() -> TransportEvent {
        let message = Message {
            from: NodeId(2),
            to: NodeId(1),
            term: Term(1),
            body: Body::TimeoutNow,
        };
        TransportEvent::Message {
            group: GroupId(1),
            message,
        }
    }

    /// A busy group's inbox keeps a little room between messages (no allocation per message),
    /// a burst's room goes once the inbox is empty, and an idle group keeps none.
    #[test]
    fn an_inbox_keeps_room_for_a_few_messages_until_its_group_is_idle() {
        let mut events = VecDeque::new();
        for _ in 0..3 {
            events.push_back(event());
        }
        events.clear();
        trim_burst(&mut events);
        let kept = events.capacity();
        assert!(kept > 0 && kept <= INBOX_KEEP, "kept {kept}");
        events.push_back(event());
        assert_eq!(events.capacity(), kept, "the next message reuses the room");
        trim_burst(&mut events);
        assert_eq!(events.capacity(), kept, "not empty: nothing freed");
        events.clear();
        release_if_empty(&mut events);
        assert_eq!(events.capacity(), 0, "an idle group keeps no room");

        for _ in 0..4 * INBOX_KEEP {
            events.push_back(event());
        }
        events.clear();
        trim_burst(&mut events);
        assert_eq!(events.capacity(), 0, "a burst's room is freed");
    }

    async fn turns(n: usize) {
        for _ in 0..n {
            tokio::task::yield_now().await;
        }
    }

    /// Runs `test` on a router's thread: a router over `transport` watching its peers with
    /// `watch`, its id and its task, not yet spawned.
    fn on_router_thread_with<F, Fut>(transport: Box<dyn Transport>, watch: Watch, test: F)
    where
        F: FnOnce(Arc<RouterShared>, u64, std::pin::Pin<Box<dyn Future<Output = ()>>>) -> Fut,
        Fut: Future<Output = ()>,
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let local = tokio::task::LocalSet::new();
        let shared = Arc::new(RouterShared::default());
        local.block_on(&runtime, async {
            let (id, task) = start(transport, watch, 1, shared.clone());
            test(shared, id, Box::pin(task)).await
        });
    }

    /// [`on_router_thread_with`] a router over an endless flood of messages for group 1
    /// (`taken` counts those it took), whose watch never reports a peer silent.
    fn on_router_thread<F, Fut>(test: F)
    where
        F: FnOnce(
            Rc<Cell<u64>>,
            Arc<RouterShared>,
            u64,
            std::pin::Pin<Box<dyn Future<Output = ()>>>,
        ) -> Fut,
        Fut: Future<Output = ()>,
    {
        let taken = Rc::new(Cell::new(0));
        let flood = Box::new(Flood {
            taken: taken.clone(),
        });
        let watch = Watch {
            ping_interval: Duration::from_secs(60),
            silence_timeout: Duration::from_secs(120),
        };
        on_router_thread_with(flood, watch, |shared, id, task| {
            test(taken, shared, id, task)
        });
    }

    /// Group 1 registered with router `id`, and its transport on this (the router's) thread.
    async fn group_1(shared: &Arc<RouterShared>, id: u64) -> Box<dyn Transport> {
        shared.register_group(GroupId(1)).expect("register");
        let link = GroupLink {
            router: id,
            group: GroupId(1),
            shared: shared.clone(),
        };
        link.into_transport().await.expect("group")
    }

    /// A node whose groups fall behind stops taking messages from its transport at the bound
    /// (so the transport, and with TCP the senders, hold them) and takes them again once its
    /// groups have taken half.
    #[test]
    fn a_node_whose_groups_fall_behind_stops_reading_until_they_catch_up() {
        on_router_thread(|taken, shared, id, task| async move {
            let mut group = group_1(&shared, id).await;
            tokio::task::spawn_local(task);
            let queued = || shared.queued.load(Ordering::Acquire);
            turns(100).await;
            // The group took nothing: the router stopped at the bound, and stays stopped.
            assert_eq!(queued(), QUEUED_MAX);
            let before = taken.get();
            turns(100).await;
            assert_eq!(taken.get(), before, "the router kept reading");
            // The group takes half; the router reads up to the bound again.
            let mut cx = Context::from_waker(Waker::noop());
            for _ in 0..QUEUED_MAX / 2 {
                assert!(matches!(group.poll_recv(&mut cx), Poll::Ready(Some(_))));
            }
            turns(100).await;
            assert!(taken.get() > before, "the router did not read again");
            assert_eq!(queued(), QUEUED_MAX);
            // A group that stops takes its messages off the count.
            drop(group);
            assert_eq!(queued(), 0);
            shared.close();
            turns(10).await;
        });
    }

    /// The same bound with the group on another thread than the router's (another shard):
    /// its messages count toward the bound, the router stops at it, takes more once the
    /// group has taken half from its own thread, and a group that stops there takes what it
    /// left off the count.
    #[test]
    fn a_group_on_another_shard_thread_holds_the_router_back_the_same_way() {
        use std::sync::mpsc;
        on_router_thread(|taken, shared, id, task| async move {
            tokio::task::spawn_local(task);
            // The group's thread: it starts the group, then takes messages when told to.
            let (take_tx, take_rx) = mpsc::channel::<usize>();
            let (done_tx, done_rx) = mpsc::channel::<usize>();
            shared.register_group(GroupId(1)).expect("register");
            let link = GroupLink {
                router: id,
                group: GroupId(1),
                shared: shared.clone(),
            };
            let thread = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .expect("runtime");
                let mut group = rt.block_on(link.into_transport()).expect("remote group");
                let mut cx = Context::from_waker(Waker::noop());
                while let Ok(n) = take_rx.recv() {
                    let mut got = 0;
                    for _ in 0..n {
                        if let Poll::Ready(Some(_)) = group.poll_recv(&mut cx) {
                            got += 1;
                        }
                    }
                    let _ = done_tx.send(got);
                }
                // Dropped here: the group stops.
            });
            let queued = || shared.queued.load(Ordering::Acquire);
            for _ in 0..1000 {
                if queued() == QUEUED_MAX {
                    break;
                }
                turns(10).await;
            }
            assert_eq!(
                queued(),
                QUEUED_MAX,
                "the remote group's messages fill the bound"
            );
            let before = taken.get();
            turns(100).await;
            assert_eq!(taken.get(), before, "the router kept reading");
            take_tx.send(QUEUED_MAX / 2).expect("group thread");
            assert_eq!(done_rx.recv().expect("group thread"), QUEUED_MAX / 2);
            // Woken from the group's thread, the router reads up to the bound again.
            for _ in 0..1000 {
                if taken.get() > before && queued() == QUEUED_MAX {
                    break;
                }
                turns(10).await;
            }
            assert!(taken.get() > before, "the router did not read again");
            assert_eq!(queued(), QUEUED_MAX);
            drop(take_tx);
            thread.join().expect("group thread");
            for _ in 0..1000 {
                if queued() == 0 {
                    break;
                }
                turns(10).await;
            }
            assert_eq!(
                queued(),
                0,
                "the stopped group's messages are off the count"
            );
            assert_eq!(shared.groups.load(Ordering::Acquire), 0);
            shared.close();
            turns(10).await;
        });
    }
}
