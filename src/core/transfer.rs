//! Leadership transfer (thesis §3.10).
//!
//! The leader stops accepting proposals, barriers and configuration changes
//! (`TransferInProgress`), brings the target's log up to date, then sends it `TimeoutNow`. The
//! target campaigns at once, skipping pre-vote, and flags its vote requests so voters grant
//! although they still hear from a live leader. The transfer succeeds when this leader sees the
//! higher term; it fails with `TransferTimeout` after twice the election timeout (one timeout
//! to catch the target up, one for its election, as hashicorp allows), and the leader resumes.
//!
//! Leases: once `TimeoutNow` is out, the voters' lease check no longer protects this leader (a
//! transfer's vote requests bypass it), so a successor can be elected and commit while this
//! leader still counts a quorum's acknowledgements. From that moment its lease is void for the
//! rest of its term, even if the transfer fails: a delayed or duplicated `TimeoutNow` can still
//! start the target's election later. Lease reads fall back to ReadIndex. A transfer that fails
//! before sending `TimeoutNow` leaves the lease alone.

use super::leader::Transfer;
use super::types::{Outcome, RequestError, Token};
use super::{Core, RoleState};
use ringraft_net::message::Body;
use ringraft_storage::NodeId;

impl Core {
    pub(super) fn transfer_leadership(&mut self, token: Token, target: Option<NodeId>) {
        if self.not_leader(token) {
            return;
        }
        match self.pick_transfer_target(target) {
            Ok(target) if self.unreachable.contains(&target) => self.reply(
                token,
                Err(RequestError::TransferTargetUnreachable { id: target }),
            ),
            Ok(target) => {
                let deadline = self.now.plus_nanos(2 * self.election_timeout_nanos());
                if let Some(l) = self.leader_state_mut() {
                    l.transfer = Some(Transfer {
                        target,
                        token,
                        deadline,
                        timeout_now_sent: false,
                    });
                }
                self.advance_transfer();
            }
            Err(e) => self.reply(token, Err(e)),
        }
    }

    fn pick_transfer_target(&self, target: Option<NodeId>) -> Result<NodeId, RequestError> {
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
        let me = self.id();
        let (_, latest) = self.latest_configuration();
        let others: Vec<NodeId> = latest.voters().filter(|&v| v != me).collect();
        match target {
            Some(t) if t == me => Err(RequestError::TransferToSelf),
            Some(t) if latest.server(t).is_none() => Err(RequestError::UnknownServer { id: t }),
            Some(t) if !latest.is_voter(t) => Err(RequestError::TargetNotVoter { id: t }),
            Some(t) => Ok(t),
            // The most up-to-date reachable voter (lowest id on ties, for determinism).
            None => others
                .iter()
                .copied()
                .max_by_key(|v| {
                    (
                        !self.unreachable.contains(v),
                        l.progress
                            .get(v)
                            .map_or(ringraft_storage::Index(0), |p| p.match_index),
                        std::cmp::Reverse(*v),
                    )
                })
                .ok_or(RequestError::NoTransferTarget),
        }
    }

    /// Sends `TimeoutNow` once the target holds the whole log; otherwise keeps it replicating.
    pub(super) fn advance_transfer(&mut self) {
        let last = self.log.last_index();
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        let Some(t) = l.transfer.as_mut() else { return };
        let target = t.target;
        let caught_up = l
            .progress
            .get(&target)
            .is_some_and(|p| p.match_index >= last);
        if caught_up && !t.timeout_now_sent {
            t.timeout_now_sent = true;
            l.lease_void = true;
            self.send(target, Body::TimeoutNow);
        } else if !caught_up {
            self.send_appends(target);
        }
    }

    /// The transport reports `peer` unreachable: a transfer to it that has not sent
    /// `TimeoutNow` fails now (hashicorp fails when its TimeoutNow RPC fails). Once `TimeoutNow`
    /// is out, the target may be campaigning: the outcome waits for the term or the timeout.
    pub(super) fn transfer_target_unreachable(&mut self, peer: NodeId) {
        let member = self
            .configurations()
            .last()
            .is_some_and(|(_, c)| c.server(peer).is_some());
        if member && peer != self.id() {
            self.unreachable.insert(peer);
        }
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        if !l
            .transfer
            .as_ref()
            .is_some_and(|t| t.target == peer && !t.timeout_now_sent)
        {
            return;
        }
        if let Some(t) = l.transfer.take() {
            self.reply(
                t.token,
                Err(RequestError::TransferTargetUnreachable { id: peer }),
            );
        }
    }

    /// On a leader tick: give up a transfer that took too long.
    pub(super) fn expire_transfer(&mut self) {
        let now = self.now;
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        if l.transfer.as_ref().is_some_and(|t| now >= t.deadline) {
            if let Some(t) = l.transfer.take() {
                self.reply(t.token, Err(RequestError::TransferTimeout));
            }
        }
    }

    /// A leader stepping down resolves its transfer: success if a higher term deposed it.
    pub(super) fn finish_transfer(&mut self, deposed_by_higher_term: bool) {
        let RoleState::Leader(l) = &mut self.role else {
            return;
        };
        if let Some(t) = l.transfer.take() {
            let result = if deposed_by_higher_term {
                Ok(Outcome::LeadershipTransferred)
            } else {
                Err(RequestError::LeadershipLost)
            };
            self.reply(t.token, result);
        }
    }
}
