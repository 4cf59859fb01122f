//! Observers (hashicorp's `observer.go`): a caller's channel that receives what happens to a
//! node, optionally filtered, either blocking the node until there is room or dropping (and
//! counting) what does not fit.
//!
//! The shard thread feeds observers from the core's events and its own bookkeeping:
//!
//! | Observation | When |
//! |---|---|
//! | [`Observation::State`] | every role change (core `Event::RoleChanged`) |
//! | [`Observation::Leader`] | every change of the known leader, including to none |
//! | [`Observation::PeerAdded`] / [`Observation::PeerRemoved`] | another server enters or leaves the node's *latest* configuration (on every node, not only on the leader as in hashicorp) |
//! | [`Observation::RequestVote`] / [`Observation::RequestPreVote`] | a vote or pre-vote request arrives |
//! | [`Observation::HeartbeatFailed`] / [`Observation::HeartbeatResumed`] | on the leader: a peer has not been heard from for `heartbeat_timeout` / is heard from again |
//!
//! The heartbeat observations are the shard's own bookkeeping, not core events: the leader
//! notes when each peer's messages arrive (only while someone observes) and checks ten times
//! per `heartbeat_timeout`. hashicorp reports a failed heartbeat *RPC* instead; ringraft has no
//! per-RPC outcome (messages are one-way), so silence is the signal. One `HeartbeatFailed` per
//! outage, then one `HeartbeatResumed`.

use super::watch::LeaderObservation;
use super::RaftState;
use ringraft_storage::{LogId, NodeId, Term};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

/// Something that happened to a node, as an [`Observer`] receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Observation {
    /// The node's role changed.
    State(RaftState),
    /// The known leader changed (`leader: None`: no leader known).
    Leader(LeaderObservation),
    /// A server joined the latest configuration.
    PeerAdded {
        /// The server.
        id: NodeId,
        /// Its address.
        address: String,
    },
    /// A server left the latest configuration.
    PeerRemoved {
        /// The server.
        id: NodeId,
    },
    /// The leader has not heard from `peer` for at least `heartbeat_timeout`.
    HeartbeatFailed {
        /// The silent peer.
        peer: NodeId,
        /// How long it has been silent (since this node became leader, if never heard).
        since_last_contact: Duration,
    },
    /// The leader hears from `peer` again after a [`HeartbeatFailed`](Observation::HeartbeatFailed).
    HeartbeatResumed {
        /// The peer.
        peer: NodeId,
    },
    /// A candidate asked this node for its vote.
    RequestVote {
        /// The candidate.
        candidate: NodeId,
        /// The term it campaigns in.
        term: Term,
        /// Its last log entry.
        last_log_id: LogId,
    },
    /// A pre-candidate asked whether this node would vote for it.
    RequestPreVote {
        /// The pre-candidate.
        candidate: NodeId,
        /// The term it would campaign in.
        term: Term,
        /// Its last log entry.
        last_log_id: LogId,
    },
}

/// Identifies a registered observer, for [`Raft::deregister_observer`](crate::Raft::deregister_observer).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObserverId(pub(crate) u64);

type Filter = Box<dyn Fn(&Observation) -> bool + Send + Sync>;

struct Inner {
    sender: SyncSender<Observation>,
    blocking: bool,
    filter: Option<Filter>,
    observed: AtomicU64,
    dropped: AtomicU64,
}

/// A channel that receives [`Observation`]s (hashicorp's `NewObserver(ch, blocking, filter)`).
/// Cheap to clone; clones share the counters.
///
/// A *blocking* observer stalls the node's shard thread (requests, replication and shutdown,
/// of this node and of every other node sharing that thread) until its channel has room: use
/// it only with a receiver that keeps up (hashicorp's caveat).
/// A non-blocking one drops what does not fit and counts it ([`dropped`](Observer::dropped)).
/// A disconnected receiver counts as dropping, even for a blocking observer.
#[derive(Clone)]
pub struct Observer {
    inner: Arc<Inner>,
}

impl Observer {
    /// An observer sending into `sender` (make it with `std::sync::mpsc::sync_channel`).
    pub fn new(sender: SyncSender<Observation>, blocking: bool) -> Observer {
        Observer {
            inner: Arc::new(Inner {
                sender,
                blocking,
                filter: None,
                observed: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
            }),
        }
    }

    /// As [`new`](Observer::new), receiving only the observations `filter` accepts.
    pub fn with_filter(
        sender: SyncSender<Observation>,
        blocking: bool,
        filter: impl Fn(&Observation) -> bool + Send + Sync + 'static,
    ) -> Observer {
        Observer {
            inner: Arc::new(Inner {
                sender,
                blocking,
                filter: Some(Box::new(filter)),
                observed: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
            }),
        }
    }

    /// Observations delivered to the channel (hashicorp's `GetNumObserved`).
    pub fn observed(&self) -> u64 {
        self.inner.observed.load(Ordering::Relaxed)
    }

    /// Observations dropped because the channel was full or closed (`GetNumDropped`).
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Offers `observation` (on the shard thread).
    pub(crate) fn notify(&self, observation: &Observation) {
        let inner = &self.inner;
        if let Some(filter) = &inner.filter {
            if !filter(observation) {
                return;
            }
        }
        let sent = if inner.blocking {
            inner.sender.send(observation.clone()).is_ok()
        } else {
            match inner.sender.try_send(observation.clone()) {
                Ok(()) => true,
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
            }
        };
        let counter = if sent {
            &inner.observed
        } else {
            &inner.dropped
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for Observer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observer")
            .field("blocking", &self.inner.blocking)
            .field("filtered", &self.inner.filter.is_some())
            .field("observed", &self.observed())
            .field("dropped", &self.dropped())
            .finish()
    }
}
