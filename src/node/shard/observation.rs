//! Observation: the core's events become role, leader and configuration updates for the
//! handles, observers, the leader watch and metrics.

use super::*;

impl Shard {
    pub(super) fn core_event(&mut self, now: Time, event: Event) {
        match event {
            Event::RoleChanged { role, term } => {
                // The term first: whoever sees the new role also sees its term.
                self.shared.term.store(term.0, Ordering::Release);
                let state = match role {
                    Role::Follower => RaftState::Follower,
                    Role::PreCandidate => RaftState::PreCandidate,
                    Role::Candidate => RaftState::Candidate,
                    Role::Leader => RaftState::Leader,
                };
                self.shared.set_state(state);
                self.metrics.role_changed(role, term);
                if state == RaftState::Leader {
                    self.peer_contact.clear();
                    self.leading_since = now;
                }
                self.shared.observe(Observation::State(state));
            }
            Event::LeaderChanged { leader, term } => {
                self.shared.term.store(term.0, Ordering::Release);
                self.shared
                    .leader
                    .store(leader.map_or(0, |l| l.0), Ordering::Release);
                tracing::info!(
                    node = self.shared.id.0,
                    term = term.0,
                    leader = leader.map(|l| l.0),
                    "leader changed"
                );
                let observation = LeaderObservation { leader, term };
                self.shared.leader_watch.publish(observation);
                self.shared.observe(Observation::Leader(observation));
            }
            Event::RemovedFromConfiguration { shutdown: false } => self.metrics.removed(false),
            Event::RemovedFromConfiguration { shutdown: true } => {
                self.metrics.removed(true);
                self.shared
                    .shutdown_requested
                    .store(true, Ordering::Release);
            }
            _ => {}
        }
    }

    pub(super) fn publish(&mut self) {
        let s = &self.shared;
        s.term.store(self.core.term().0, Ordering::Release);
        s.commit_index
            .store(self.core.commit_index().0, Ordering::Release);
        let last = self.core.log().last_index().max(self.snapshot_index());
        s.last_index.store(last.0, Ordering::Release);
        let cells = &s.stats;
        let last_log = self.core.log().last_log_id();
        cells
            .last_log_index
            .store(last_log.index.0, Ordering::Release);
        cells
            .last_log_term
            .store(last_log.term.0, Ordering::Release);
        let snapshot = self
            .core
            .snapshot()
            .map_or(LogId::default(), |meta| meta.last);
        cells
            .last_snapshot_index
            .store(snapshot.index.0, Ordering::Release);
        cells
            .last_snapshot_term
            .store(snapshot.term.0, Ordering::Release);
        if self.configuration_dirty {
            self.configuration_dirty = false;
            let latest = self.core.latest_configuration();
            self.metrics.configuration(latest.0, &latest.1);
            let mut published = s.configuration.lock().unwrap_or_else(|p| p.into_inner());
            if !s.has_observers() {
                *published = latest;
                return;
            }
            let previous = std::mem::replace(&mut *published, latest.clone());
            drop(published);
            if previous.0 != latest.0 {
                let (old, new) = (&previous.1, &latest.1);
                // Peers only, as in hashicorp: this node is not its own peer.
                for server in new.servers.iter().filter(|x| x.id != s.id) {
                    if old.server(server.id).is_none() {
                        s.observe(Observation::PeerAdded {
                            id: server.id,
                            address: server.address.clone(),
                        });
                    }
                }
                for server in old.servers.iter().filter(|x| x.id != s.id) {
                    if new.server(server.id).is_none() {
                        s.observe(Observation::PeerRemoved { id: server.id });
                    }
                }
            }
        }
    }
}
