//! An in-process network for integration tests, with hooks to drop, delay, partition and
//! disconnect.
//!
//! ```text
//!   MemNetwork (shared hub: per-node inboxes, link rules, filter)
//!     ├─ MemTransport n1 ──send──► hub ──(rules)──► inbox n2 ──► MemTransport n2
//!     └─ MemTransport n2 …
//! ```
//!
//! Messages are moved, not encoded (the codec has its own tests). Delivery is FIFO per
//! receiver except where a delay reorders. Delays use tokio's clock, so a test may pause time;
//! without delays no runtime is needed ([`Transport::try_recv`]). The deterministic simulator
//! keeps its own network; this one is for tests that run real nodes on real threads.

use crate::message::Message;
use crate::transport::{PeerError, SendError, Transport, TransportEvent};
use ringraft_storage::{GroupId, NodeId};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// What the filter decides for one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver as the link rules say.
    Deliver,
    /// Lose it.
    Drop,
    /// Deliver it after this long (in addition to the link's delay).
    Delay(Duration),
}

type Filter = Box<dyn FnMut(GroupId, &Message) -> Verdict + Send>;

#[derive(Default)]
struct Inbox {
    /// Keyed by (due time, arrival sequence): FIFO among messages due at the same time.
    events: BTreeMap<(Option<Instant>, u64), TransportEvent>,
    waker: Option<Waker>,
}

#[derive(Default)]
struct Hub {
    inboxes: BTreeMap<NodeId, Inbox>,
    disconnected: BTreeSet<NodeId>,
    blocked: BTreeSet<(NodeId, NodeId)>,
    delays: BTreeMap<(NodeId, NodeId), Duration>,
    filter: Option<Filter>,
    sequence: u64,
    dropped: u64,
    delivered: u64,
}

impl Hub {
    fn push(&mut self, to: NodeId, due: Option<Instant>, event: TransportEvent) {
        self.sequence += 1;
        let sequence = self.sequence;
        if let Some(inbox) = self.inboxes.get_mut(&to) {
            inbox.events.insert((due, sequence), event);
            if let Some(w) = inbox.waker.take() {
                w.wake();
            }
        }
    }
}

/// The shared in-memory network. Cheap to clone; all clones are the same network.
#[derive(Clone, Default)]
pub struct MemNetwork {
    hub: Arc<Mutex<Hub>>,
}

impl MemNetwork {
    /// An empty network.
    pub fn new() -> MemNetwork {
        MemNetwork::default()
    }

    fn hub(&self) -> MutexGuard<'_, Hub> {
        // A panic while holding the lock (a failing test) must not hide later assertions.
        self.hub
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds node `id` and returns its transport. Adding an existing id replaces its inbox.
    pub fn transport(&self, id: NodeId) -> MemTransport {
        self.hub().inboxes.insert(id, Inbox::default());
        MemTransport {
            id,
            net: self.clone(),
            sleep: None,
        }
    }

    /// Splits the nodes into `groups`; messages between groups are lost. Nodes in no group are
    /// cut off from everyone. Replaces any earlier partition or blocked links.
    pub fn partition(&self, groups: &[&[NodeId]]) {
        let mut hub = self.hub();
        let nodes: Vec<NodeId> = hub.inboxes.keys().copied().collect();
        let group_of = |n: NodeId| groups.iter().position(|g| g.contains(&n));
        hub.blocked.clear();
        for &a in &nodes {
            for &b in &nodes {
                if a != b && (group_of(a).is_none() || group_of(a) != group_of(b)) {
                    hub.blocked.insert((a, b));
                }
            }
        }
    }

    /// Removes every partition and blocked link.
    pub fn heal(&self) {
        self.hub().blocked.clear();
    }

    /// Loses every message from `from` to `to` (one direction) until [`MemNetwork::unblock`].
    pub fn block(&self, from: NodeId, to: NodeId) {
        self.hub().blocked.insert((from, to));
    }

    /// Undoes [`MemNetwork::block`].
    pub fn unblock(&self, from: NodeId, to: NodeId) {
        self.hub().blocked.remove(&(from, to));
    }

    /// Delays every message from `from` to `to` by `delay` (zero removes the delay).
    pub fn set_delay(&self, from: NodeId, to: NodeId, delay: Duration) {
        let mut hub = self.hub();
        if delay.is_zero() {
            hub.delays.remove(&(from, to));
        } else {
            hub.delays.insert((from, to), delay);
        }
    }

    /// Installs a filter consulted for every message that the link rules let through.
    pub fn set_filter(&self, filter: impl FnMut(GroupId, &Message) -> Verdict + Send + 'static) {
        self.hub().filter = Some(Box::new(filter));
    }

    /// Removes the filter.
    pub fn clear_filter(&self) {
        self.hub().filter = None;
    }

    /// Cuts `node` off as if its connections broke: it and every other node get a
    /// [`TransportEvent::PeerDisconnected`], and sends to or from it fail with
    /// [`SendError::NotConnected`] until [`MemNetwork::reconnect`].
    pub fn disconnect(&self, node: NodeId) {
        let mut hub = self.hub();
        if !hub.disconnected.insert(node) {
            return;
        }
        let others: Vec<NodeId> = hub.inboxes.keys().copied().filter(|n| *n != node).collect();
        for other in others {
            let lost = |peer| TransportEvent::PeerDisconnected {
                peer,
                error: PeerError::Disconnected,
            };
            hub.push(other, None, lost(node));
            hub.push(node, None, lost(other));
        }
    }

    /// Undoes [`MemNetwork::disconnect`], announcing [`TransportEvent::PeerConnected`].
    pub fn reconnect(&self, node: NodeId) {
        let mut hub = self.hub();
        if !hub.disconnected.remove(&node) {
            return;
        }
        let others: Vec<NodeId> = hub.inboxes.keys().copied().filter(|n| *n != node).collect();
        for other in others {
            hub.push(other, None, TransportEvent::PeerConnected { peer: node });
            hub.push(node, None, TransportEvent::PeerConnected { peer: other });
        }
    }

    /// Messages lost so far (blocked, filtered, or to an unknown node).
    pub fn dropped(&self) -> u64 {
        self.hub().dropped
    }

    /// Messages accepted for delivery so far.
    pub fn delivered(&self) -> u64 {
        self.hub().delivered
    }
}

/// One node's end of a [`MemNetwork`].
pub struct MemTransport {
    id: NodeId,
    net: MemNetwork,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl MemTransport {
    /// The network this transport belongs to.
    pub fn network(&self) -> &MemNetwork {
        &self.net
    }
}

impl Transport for MemTransport {
    fn local_id(&self) -> NodeId {
        self.id
    }

    fn send(&mut self, group: GroupId, message: Message) -> Result<(), SendError> {
        let mut hub = self.net.hub();
        let to = message.to;
        if !hub.inboxes.contains_key(&to) {
            return Err(SendError::UnknownPeer(to));
        }
        if hub.disconnected.contains(&self.id) || hub.disconnected.contains(&to) {
            return Err(SendError::NotConnected { peer: to });
        }
        if hub.blocked.contains(&(self.id, to)) {
            hub.dropped += 1;
            return Ok(());
        }
        let mut delay = hub.delays.get(&(self.id, to)).copied().unwrap_or_default();
        if let Some(filter) = hub.filter.as_mut() {
            match filter(group, &message) {
                Verdict::Deliver => {}
                Verdict::Drop => {
                    hub.dropped += 1;
                    return Ok(());
                }
                Verdict::Delay(extra) => delay += extra,
            }
        }
        let due = (!delay.is_zero()).then(|| Instant::now() + delay);
        hub.delivered += 1;
        hub.push(to, due, TransportEvent::Message { group, message });
        Ok(())
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<TransportEvent>> {
        let mut hub = self.net.hub();
        let Some(inbox) = hub.inboxes.get_mut(&self.id) else {
            return Poll::Ready(None);
        };
        // Undelayed events (key `None`) sort first; delayed ones wait for their time.
        let next_due = match inbox.events.first_key_value() {
            None => None,
            Some(((None, _), _)) => return Poll::Ready(inbox.events.pop_first().map(|(_, e)| e)),
            Some(((Some(due), _), _)) if *due <= Instant::now() => {
                return Poll::Ready(inbox.events.pop_first().map(|(_, e)| e));
            }
            Some(((Some(due), _), _)) => Some(*due),
        };
        inbox.waker = Some(cx.waker().clone());
        drop(hub);
        if let Some(due) = next_due {
            // Only reachable inside a tokio runtime with time enabled: delays need a clock.
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
            sleep.as_mut().reset(due);
            if sleep.as_mut().poll(cx).is_ready() {
                cx.waker().wake_by_ref();
            }
        }
        Poll::Pending
    }
}

impl Drop for MemTransport {
    fn drop(&mut self) {
        self.net.hub().inboxes.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Body;
    use ringraft_storage::Term;

    fn vote(from: u64, to: u64) -> Message {
        Message {
            from: NodeId(from),
            to: NodeId(to),
            term: Term(1),
            body: Body::RequestVoteResponse { granted: true },
        }
    }

    fn messages(t: &mut MemTransport) -> Vec<Message> {
        std::iter::from_fn(|| t.try_recv())
            .filter_map(|e| match e {
                TransportEvent::Message { message, .. } => Some(message),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn messages_are_delivered_in_order_without_a_runtime() {
        let net = MemNetwork::new();
        let mut a = net.transport(NodeId(1));
        let mut b = net.transport(NodeId(2));
        a.send(GroupId(0), vote(1, 2)).expect("send");
        a.send(GroupId(0), vote(1, 2)).expect("send");
        assert_eq!(messages(&mut b).len(), 2);
        assert_eq!(
            a.send(GroupId(0), vote(1, 9)),
            Err(SendError::UnknownPeer(NodeId(9)))
        );
    }

    #[test]
    fn partitions_and_blocked_links_lose_messages_until_healed() {
        let net = MemNetwork::new();
        let mut a = net.transport(NodeId(1));
        let mut b = net.transport(NodeId(2));
        let _c = net.transport(NodeId(3));
        net.partition(&[&[NodeId(1)], &[NodeId(2), NodeId(3)]]);
        a.send(GroupId(0), vote(1, 2)).expect("send");
        assert!(messages(&mut b).is_empty());
        net.heal();
        net.block(NodeId(2), NodeId(1));
        a.send(GroupId(0), vote(1, 2)).expect("send");
        b.send(GroupId(0), vote(2, 1)).expect("send");
        assert_eq!(messages(&mut b).len(), 1);
        assert!(messages(&mut a).is_empty());
        assert_eq!(net.dropped(), 2);
    }

    #[test]
    fn the_filter_can_drop_selected_messages() {
        let net = MemNetwork::new();
        let mut a = net.transport(NodeId(1));
        let mut b = net.transport(NodeId(2));
        net.set_filter(|_, m| match m.body {
            Body::RequestVoteResponse { .. } => Verdict::Drop,
            _ => Verdict::Deliver,
        });
        a.send(GroupId(0), vote(1, 2)).expect("send");
        assert!(messages(&mut b).is_empty());
        net.clear_filter();
        a.send(GroupId(0), vote(1, 2)).expect("send");
        assert_eq!(messages(&mut b).len(), 1);
    }

    #[test]
    fn disconnect_announces_the_loss_and_refuses_sends_until_reconnected() {
        let net = MemNetwork::new();
        let mut a = net.transport(NodeId(1));
        let mut b = net.transport(NodeId(2));
        net.disconnect(NodeId(2));
        assert_eq!(
            a.try_recv(),
            Some(TransportEvent::PeerDisconnected {
                peer: NodeId(2),
                error: PeerError::Disconnected
            })
        );
        assert_eq!(
            a.send(GroupId(0), vote(1, 2)),
            Err(SendError::NotConnected { peer: NodeId(2) })
        );
        net.reconnect(NodeId(2));
        assert_eq!(
            a.try_recv(),
            Some(TransportEvent::PeerConnected { peer: NodeId(2) })
        );
        assert!(matches!(
            b.try_recv(),
            Some(TransportEvent::PeerDisconnected { .. })
        ));
        assert!(matches!(
            b.try_recv(),
            Some(TransportEvent::PeerConnected { .. })
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_messages_arrive_after_undelayed_ones() {
        let net = MemNetwork::new();
        let mut a = net.transport(NodeId(1));
        let mut b = net.transport(NodeId(2));
        let mut c = net.transport(NodeId(3));
        net.set_delay(NodeId(1), NodeId(3), Duration::from_millis(50));
        a.send(GroupId(0), vote(1, 3)).expect("send");
        b.send(GroupId(0), vote(2, 3)).expect("send");
        assert!(
            c.try_recv().is_some(),
            "the undelayed message is ready at once"
        );
        assert!(c.try_recv().is_none(), "the delayed one is not");
        let event = crate::transport::recv(&mut c).await;
        assert!(
            matches!(event, Some(TransportEvent::Message { message, .. }) if message.from == NodeId(1))
        );
    }
}
