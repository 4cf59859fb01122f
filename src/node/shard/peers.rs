//! Peers: messages received (and what observers and stats note about them), heartbeat
//! failure observations, and the transport's peer list kept in step with the configurations.

use super::*;

impl Shard {
    /// Steps the core with a peer's message, noting what observers and `stats()` want.
    pub(super) fn receive(&mut self, now: Time, message: Message) {
        let from = message.from;
        if self.shared.has_observers() {
            let observation = match &message.body {
                Body::RequestVote { last_log_id, .. } => Some(Observation::RequestVote {
                    candidate: from,
                    term: message.term,
                    last_log_id: *last_log_id,
                }),
                Body::PreVote { last_log_id } => Some(Observation::RequestPreVote {
                    candidate: from,
                    term: message.term,
                    last_log_id: *last_log_id,
                }),
                _ => None,
            };
            if let Some(o) = observation {
                self.shared.observe(o);
            }
        }
        let timing = self.metrics.receiving(now, &message);
        self.core.step(now, Input::Message(message));
        self.metrics.received(timing);
        if self.core.role() == Role::Leader && self.shared.has_observers() {
            let (heard, failed) = self.peer_contact.entry(from).or_insert((now, false));
            *heard = now;
            if std::mem::take(failed) {
                self.shared
                    .observe(Observation::HeartbeatResumed { peer: from });
            }
        }
        // hashicorp's last contact: the last time the current leader was heard from.
        if self.core.leader() == Some(from) && from != self.core.id() {
            self.shared
                .stats
                .last_contact
                .store(now.0.saturating_add(1), Ordering::Release);
        }
    }

    /// While leading, reports peers not heard from for `heartbeat_timeout` (hashicorp's
    /// `FailedHeartbeatObservation`, once per outage; [`Self::receive`] reports the
    /// resumption). Only done when someone observes, at most ten times per heartbeat timeout.
    pub(super) fn check_heartbeats(&mut self, now: Time) {
        if self.core.role() != Role::Leader {
            return;
        }
        if !self.shared.has_observers() {
            // Nobody watches, so nothing is noted; whoever registers next starts from now
            // rather than seeing every peer as silent since the election.
            self.peer_contact.clear();
            self.leading_since = now;
            return;
        }
        if self.core.is_quiesced() {
            // Quiesced: no heartbeats go out, so none are missed; the host watches the peer
            // nodes (ARCHITECTURE §14). Silence counts from when the group wakes.
            for (heard, _) in self.peer_contact.values_mut() {
                *heard = now;
            }
            self.leading_since = now;
            return;
        }
        if now < self.next_heartbeat_check {
            return;
        }
        let timeout = self.config.heartbeat_timeout.as_nanos() as u64;
        self.next_heartbeat_check = now.plus_nanos(timeout / 10);
        let (_, configuration) = self.core.latest_configuration();
        let me = self.core.id();
        for peer in configuration.members().filter(|id| *id != me) {
            let (heard, failed) = self
                .peer_contact
                .entry(peer)
                .or_insert((self.leading_since, false));
            let silent = now.nanos_since(*heard);
            if !*failed && silent >= timeout {
                *failed = true;
                self.shared.observe(Observation::HeartbeatFailed {
                    peer,
                    since_last_contact: Duration::from_nanos(silent),
                });
            }
        }
    }

    /// Tells the transport about the members of the configurations in force (the committed
    /// one and the latest) before `effects`, which may already send to a new member, are
    /// performed. The core changes its configurations only with a persist batch that appends
    /// a configuration entry or truncates the log, or with a snapshot install; and the
    /// committed one also when the commit index reaches the latest.
    pub(super) fn maybe_sync_transport_peers(&mut self, effects: &[Effect]) {
        let changed = self.transport_peers_dirty
            || self
                .transport_peers_recheck_at
                .is_some_and(|index| self.core.commit_index() >= index)
            || effects.iter().any(|effect| match effect {
                Effect::Persist(batch) => {
                    batch.truncate_from.is_some()
                        || batch
                            .entries
                            .iter()
                            .any(|e| e.kind == EntryKind::Configuration)
                }
                Effect::RestoreSnapshot { .. } => true,
                _ => false,
            });
        if changed {
            self.sync_transport_peers();
        }
    }

    pub(super) fn sync_transport_peers(&mut self) {
        self.transport_peers_dirty = false;
        let (latest_index, latest) = self.core.latest_configuration();
        let (committed_index, committed) = self.core.committed_configuration();
        self.transport_peers_recheck_at = (latest_index > committed_index).then_some(latest_index);
        let me = self.core.id();
        // The latest configuration's address wins where the two differ.
        let mut wanted: BTreeMap<NodeId, String> = BTreeMap::new();
        for server in committed.servers.into_iter().chain(latest.servers) {
            if server.id != me {
                wanted.insert(server.id, server.address);
            }
        }
        let mut given = Vec::with_capacity(wanted.len());
        for (peer, address) in &wanted {
            let hash = address_hash(address);
            let known = self
                .transport_peers
                .iter()
                .any(|&(p, h)| p == *peer && h == hash);
            // An address the transport cannot dial (a host name for TCP, say) leaves the
            // transport as it was configured: it may still know the peer by other means. The
            // peer is recorded all the same (trying the same address again would not help), so
            // the transport hears when it leaves the configuration: a node's router keeps every
            // member's groups on its list, whose silence it reports to them.
            if !known {
                if let Err(e) = self.transport.set_peer(*peer, address) {
                    tracing::debug!(node = me.0, peer = peer.0, error = %e, "address not taken");
                }
            }
            given.push((*peer, hash));
        }
        for &(peer, _) in self.transport_peers.iter() {
            if !wanted.contains_key(&peer) {
                self.transport.remove_peer(peer);
            }
        }
        self.transport_peers = given.into_boxed_slice();
    }
}

/// A hash of a peer's address, to tell when a configuration changed it: the shard keeps this,
/// not the address (kept once per group, and a node may run thousands of groups). Two
/// different addresses of one peer with the same 64-bit hash would leave the transport with
/// the old one; the addresses come from the cluster's own configurations.
fn address_hash(address: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    address.hash(&mut hasher);
    hasher.finish()
}
