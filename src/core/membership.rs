//! Membership changes (hashicorp semantics; Raft thesis §4.1 single-server changes).
//!
//! - One server at a time, and at most one uncommitted configuration: a change is refused with
//!   `ConfigurationChangeInProgress` while the latest configuration is uncommitted or while
//!   this leader has not yet committed an entry of its own term (thesis §4.1's fix for the
//!   single-server change bug).
//! - A configuration takes effect as soon as it is appended (on every node), not when it
//!   commits; a truncation that removes it falls back to the previous one.
//! - A leader that removes or demotes itself keeps leading (without counting itself) until the
//!   entry commits, refusing new proposals with `NotLeader`, then steps down.
//! - Optional catch-up (`promotion_lag_max`): a new voter first joins as a non-voter and is
//!   promoted once its match index is close to the leader's last index, so adding a server
//!   that starts empty never leaves the cluster waiting on it for a quorum.

use super::leader::Promotion;
use super::types::{Effect, Event, MembershipChange, RequestError, Token};
use super::{Core, RoleState};

use ringraft_storage::{Configuration, EntryKind, Index, NodeId, Server, Suffrage};

impl Core {
    pub(super) fn change_membership(
        &mut self,
        token: Token,
        change: MembershipChange,
        prev_index: Option<Index>,
    ) {
        if self.not_leader(token) {
            return;
        }
        if let Err(e) = self.may_change_membership() {
            self.reply(token, Err(e));
            return;
        }
        let (latest_index, latest) = self.latest_configuration();
        if let Some(prev) = prev_index {
            if prev != latest_index {
                self.reply(
                    token,
                    Err(RequestError::ConfigurationChanged {
                        latest: latest_index,
                    }),
                );
                return;
            }
        }
        let mut promote = None;
        let next = match &change {
            MembershipChange::AddVoter { id, address } => {
                if self.config.promotion_lag_max.is_some() && !latest.is_voter(*id) {
                    promote = Some(Server::voter(*id, address.clone()));
                    with_server(&latest, *id, address, Suffrage::Nonvoter, false)
                } else {
                    with_server(&latest, *id, address, Suffrage::Voter, true)
                }
            }
            MembershipChange::AddNonvoter { id, address } => {
                with_server(&latest, *id, address, Suffrage::Nonvoter, false)
            }
            MembershipChange::DemoteVoter { id } => {
                let mut next = latest.clone();
                if let Some(s) = next.servers.iter_mut().find(|s| s.id == *id) {
                    s.suffrage = Suffrage::Nonvoter;
                }
                next
            }
            MembershipChange::RemoveServer { id } => {
                let mut next = latest.clone();
                next.servers.retain(|s| s.id != *id);
                next
            }
        };
        if let Err(e) = next.validate() {
            self.reply(token, Err(RequestError::InvalidConfiguration(e)));
            return;
        }
        let (first, last) = self.append_configuration(&next);
        let rounds = self.config.promotion_rounds_max;
        let Some(l) = self.leader_state_mut() else {
            return;
        };
        match promote {
            Some(server) => {
                l.promotion = Some(Promotion {
                    server,
                    token,
                    rounds_left: rounds,
                })
            }
            None => l.push_pending_commit(token, first, last),
        }
    }

    /// Why a configuration change cannot start now, if it cannot.
    fn may_change_membership(&self) -> Result<(), RequestError> {
        let RoleState::Leader(l) = &self.role else {
            return Err(RequestError::NotLeader {
                leader: self.leader,
            });
        };
        if l.transfer.is_some() {
            return Err(RequestError::TransferInProgress);
        }
        if l.restoring.is_some() {
            return Err(RequestError::RestoreInProgress);
        }
        let (latest_index, _) = self.latest_configuration();
        #[allow(unused_mut)]
        let mut uncommitted = latest_index > self.commit;
        #[cfg(feature = "sim")]
        if self.config.mutation == Some(super::Mutation::AllowTwoUncommittedConfigurations) {
            uncommitted = false;
        }
        if uncommitted || !l.committed_own_term(self.commit) || l.promotion.is_some() {
            return Err(RequestError::ConfigurationChangeInProgress);
        }
        Ok(())
    }

    fn append_configuration(&mut self, next: &Configuration) -> (ringraft_storage::LogId, Index) {
        let appended = self.append_as_leader(vec![(EntryKind::Configuration, next.encode())]);
        self.sync_progress();
        appended
    }

    /// Replicates to every member of the latest and the committed configuration (so a removed
    /// server still learns of its removal), and to no one else.
    pub(super) fn sync_progress(&mut self) {
        let me = self.id();
        let last = self.log.last_index();
        let (_, latest) = self.latest_configuration();
        let (removal_index, committed) = self.committed_configuration();
        let mut members: Vec<NodeId> = latest.members().chain(committed.members()).collect();
        members.sort_unstable();
        members.dedup();
        members.retain(|&m| m != me);
        let commit = self.commit;
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        let round = l.round();
        // A server that left keeps receiving the log until it holds the configuration that
        // removed it (or for a few rounds, if it is gone), then hears the commit index once
        // more, so it learns that its removal committed and stops considering itself a
        // possible candidate.
        let mut farewells: Vec<(NodeId, Index)> = Vec::new();
        l.progress.retain(|&id, p| {
            if members.contains(&id) {
                p.removed_at_round = None;
                return true;
            }
            let since = *p.removed_at_round.get_or_insert(round);
            if p.match_index >= removal_index {
                farewells.push((id, commit.min(p.match_index)));
                return false;
            }
            round <= since + 10
        });
        for m in members {
            l.progress
                .entry(m)
                .or_insert_with(|| super::Progress::new(last, round));
        }
        for (id, leader_commit) in farewells {
            self.send(
                id,
                ringraft_net::message::Body::Heartbeat {
                    leader_commit,
                    round,
                },
            );
        }
    }

    /// After the commit index advanced on a leader: finish configuration business.
    pub(super) fn on_configuration_commit(&mut self) {
        self.sync_progress();
        let me = self.id();
        let (committed_index, committed) = self.committed_configuration();
        let (latest_index, _) = self.latest_configuration();
        if latest_index == committed_index && !committed.is_voter(me) {
            // Removed or demoted: the change is committed without us; step down.
            let shutdown = self.config.shutdown_on_remove;
            let term = self.term;
            self.become_follower(term, None);
            self.emit(Effect::Event(Event::RemovedFromConfiguration { shutdown }));
            return;
        }
        self.check_promotion(false);
    }

    /// Promotes a catching-up server once it is close enough; on a heartbeat round (`tick`),
    /// spends one of its rounds and gives up when none are left.
    pub(super) fn check_promotion(&mut self, tick: bool) {
        if !matches!(&self.role, RoleState::Leader(l) if l.promotion.is_some()) {
            return;
        }
        let last = self.log.last_index();
        let commit = self.commit;
        let lag_max = self.config.promotion_lag_max.unwrap_or(0);
        let (latest_index, latest) = self.latest_configuration();
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        let Some(p) = l.promotion.as_mut() else {
            return;
        };
        let id = p.server.id;
        let caught_up = l
            .progress
            .get(&id)
            .is_some_and(|pr| pr.match_index.0 + lag_max >= last.0);
        // A restore being staged has reserved the next index: promote after it.
        let restoring = l.restoring.is_some();
        if caught_up && !restoring && latest_index <= commit && latest.server(id).is_some() {
            let Some(p) = l.promotion.take() else { return };
            let next = with_server(&latest, id, &p.server.address, Suffrage::Voter, true);
            let (first, last) = self.append_configuration(&next);
            if let Some(l) = self.leader_state_mut() {
                l.push_pending_commit(p.token, first, last);
            }
            return;
        }
        if tick {
            p.rounds_left = p.rounds_left.saturating_sub(1);
            if p.rounds_left == 0 || latest.server(id).is_none() {
                let token = p.token;
                l.promotion = None;
                self.reply(token, Err(RequestError::PromotionTimeout { id }));
            }
        }
    }
}

/// `configuration` with server `id` at `address`: added with `suffrage` if absent; if present,
/// its address is updated and its suffrage set to `suffrage` only when `change_suffrage`.
fn with_server(
    configuration: &Configuration,
    id: NodeId,
    address: &str,
    suffrage: Suffrage,
    change_suffrage: bool,
) -> Configuration {
    let mut next = configuration.clone();
    match next.servers.iter_mut().find(|s| s.id == id) {
        Some(s) => {
            s.address = address.to_owned();
            if change_suffrage {
                s.suffrage = suffrage;
            }
        }
        None => next.servers.push(Server {
            id,
            address: address.to_owned(),
            suffrage,
        }),
    }
    next
}
