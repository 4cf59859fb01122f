//! Quiescence of idle groups (ARCHITECTURE §14), with `CoreConfig::quiesce` on.
//!
//! A leader that has had nothing to do for an election timeout (no request, no message but
//! heartbeat acknowledgements), whose every follower holds every entry and acknowledged a
//! heartbeat round sent since the leader was last active, sends `Quiesce` instead of its next
//! heartbeat and stops its timers.
//! A follower that receives it from its leader pauses its election timer and, while paused,
//! counts its leader as alive (it refuses votes, as within a heartbeat's reach). Thousands of
//! idle groups then cost no timer, no message and no CPU.
//!
//! What ends it:
//! - any message but a heartbeat acknowledgement, `Quiesce` or the hosts' own, and any request
//!   at a leader, wakes the node once handled: a leader starts a heartbeat round at once
//!   (which wakes its followers), a follower re-arms its election timer. A restarted
//!   follower's pre-votes reach the leader too, so it learns of the leader without waiting for
//!   anything else (the quiesced followers refuse them: their leader is alive);
//! - `Input::PeerUnreachable` naming the leader wakes a paused follower and has it campaign
//!   within `[0, T)`: the node's host reports it when the leader's node goes silent (it watches
//!   every peer node with one ping per heartbeat interval, not one per group) or its
//!   connection drops.
//!
//! Safety does not depend on timers; leases stay sound: a paused follower only refuses more
//! votes than it otherwise would, and on waking it keeps the time it last heard from the
//! leader, so it grants no vote sooner than an election timeout after it (the rule a leader's
//! lease relies on). A woken leader has no lease until a new round is acknowledged.

use super::{Core, RoleState};
use crate::core::types::Input;
use crate::core::Time;
use ringraft_net::message::{Body, Message};
use ringraft_storage::{Index, NodeId};

/// What an input means for quiescence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Activity {
    /// Timers, completions, reloads, silence reports, heartbeat acknowledgements and the
    /// quiescence messages themselves.
    None,
    /// Any other message.
    Message,
    /// A request (proposal, read, membership, transfer, snapshot work).
    Request,
}

impl Core {
    /// What `input` is, as activity (before it is handled): see [`Core::after_activity`].
    pub(super) fn activity_of(input: &Input) -> Activity {
        let active = match input {
            Input::Tick
            | Input::Persisted { .. }
            | Input::Applied { .. }
            | Input::SnapshotTaken { .. }
            | Input::Reconfigure(_)
            | Input::PeerUnreachable { .. } => false,
            Input::Message(m) => !matches!(
                m.body,
                Body::HeartbeatResponse { .. }
                    | Body::Quiesce { .. }
                    | Body::NodePing
                    | Body::GroupStopped
            ),
            _ => true,
        };
        match input {
            _ if !active => Activity::None,
            Input::Message(_) => Activity::Message,
            _ => Activity::Request,
        }
    }

    /// After an input was handled: activity delays a leader's quiescence; a message wakes a
    /// quiesced node, a request a quiesced leader (a follower only refuses requests, and
    /// should not start its election timer for that). Woken after the input was handled, so a
    /// quiesced follower answers a pre-vote as one that hears from its leader (it refuses);
    /// the leader, woken by the same pre-vote, heartbeats.
    pub(super) fn after_activity(&mut self, activity: Activity) {
        if activity == Activity::None {
            return;
        }
        self.active_at = self.now;
        if let RoleState::Leader(l) = &mut self.role {
            l.note_activity();
        }
        let leader = matches!(self.role, RoleState::Leader(_));
        if self.quiesced && (leader || activity == Activity::Message) {
            self.wake();
        }
    }

    /// Ends quiescence: a leader heartbeats when this batch closes, a follower re-arms its
    /// election timer.
    fn wake(&mut self) {
        self.quiesced = false;
        let now = self.now;
        let heartbeat = self.config.heartbeat_interval.as_nanos() as u64;
        match &mut self.role {
            RoleState::Leader(l) => {
                l.wake(now, heartbeat);
            }
            _ => self.reset_election_deadline(),
        }
    }

    /// True while quiesced (see the module docs).
    pub fn is_quiesced(&self) -> bool {
        self.quiesced
    }

    /// Gives back the room of the queue of messages held until their hard state is durable
    /// once it is empty (called by a host as the node parks quiesced). Changes no state. After
    /// a herd of elections this was about 100–250 bytes per replica of 30 000, and about 120
    /// after an orderly start (docs/PERFORMANCE.md, session 12).
    pub fn release_idle_memory(&mut self) {
        if self.held.is_empty() && self.held.capacity() > 0 {
            self.held = std::collections::VecDeque::new();
        }
    }

    /// `peer` is unreachable or its node went silent: a follower quiesced under it wakes and
    /// campaigns within `[0, T)` (its host waited a while before reporting the silence). It
    /// keeps the time it last heard from the leader, so it refuses votes until an election
    /// timeout after that, as always.
    pub(super) fn quiesced_leader_silent(&mut self, peer: NodeId) {
        if !self.quiesced || self.leader != Some(peer) || matches!(self.role, RoleState::Leader(_))
        {
            return;
        }
        #[cfg(feature = "sim")]
        if self.config.mutation == Some(super::config::Mutation::QuiescedIgnoresSilence) {
            return;
        }
        self.quiesced = false;
        let t = self.election_timeout_nanos();
        let wait = self.rng.range(0, t);
        self.election_deadline = self.now.plus_nanos(wait);
    }

    /// A leader's heartbeat is due: true if it quiesced instead (and told its followers).
    pub(super) fn try_quiesce(&mut self) -> bool {
        if !self.config.quiesce || self.quiesced || !self.ready_to_quiesce() {
            return false;
        }
        let me = self.id();
        let term = self.term;
        let commit = self.commit;
        let RoleState::Leader(l) = &self.role else {
            return false;
        };
        let round = l.round();
        let messages: Vec<Message> = l
            .progress
            .keys()
            .map(|&peer| Message {
                from: me,
                to: peer,
                term,
                body: Body::Quiesce {
                    leader_commit: commit,
                    round,
                },
            })
            .collect();
        for m in messages {
            self.emit(super::Effect::Send(m));
        }
        self.quiesced = true;
        true
    }

    /// Nothing happened for an election timeout, nothing is pending, every follower holds
    /// every entry and acknowledged a round sent since this leader was last active, and this
    /// leader is a voter.
    fn ready_to_quiesce(&self) -> bool {
        let last = self.log.last_index();
        if self.now.nanos_since(self.active_at) < self.election_timeout_nanos()
            || self.commit != last
            || !self.is_voter(self.id())
            || self.receiving.is_some()
        {
            return false;
        }
        let RoleState::Leader(l) = &self.role else {
            return false;
        };
        // Every follower must have answered a round sent since the leader was last active,
        // not necessarily its latest: when acknowledgements take longer than a heartbeat
        // interval (thousands of groups waking at once), a newer round is always out, and
        // asking for the latest would keep the group awake for as long as the load lasts.
        let Some(round) = l.round_since_active() else {
            return false;
        };
        l.is_idle() && l.progress.values().all(|p| p.is_caught_up(last, round))
    }

    /// A follower receives `Quiesce` from `from` in the current term: a heartbeat that also
    /// pauses its election timer (with quiescence on). Not answered.
    pub(super) fn handle_quiesce(&mut self, from: NodeId, leader_commit: Index) {
        if !self.accept_leader(from) {
            return;
        }
        // Capped at our match index by the leader, as a heartbeat's.
        self.advance_follower_commit(leader_commit.min(self.log.last_index()));
        if self.config.quiesce {
            self.quiesced = true;
        }
    }

    /// The core's next timer while quiesced: none.
    pub(super) fn quiesced_timer() -> Time {
        Time(u64::MAX)
    }
}

#[cfg(all(test, feature = "sim"))]
mod tests {
    use crate::sim::testkit::Cluster;
    use ringraft_storage::NodeId;

    /// Messages held until the hard state is durable (vote requests after a term change)
    /// leave room behind once sent; a quiet node gives it back.
    #[test]
    fn a_quiet_node_gives_back_the_room_of_its_held_messages() {
        let n1 = NodeId(1);
        let mut c = Cluster::with_config(3, |config| config.quiesce = true);
        c.hold_persist(n1, true);
        c.campaign(n1);
        c.deliver_all();
        assert!(
            !c.core(n1).held.is_empty(),
            "vote requests wait for the term"
        );
        c.hold_persist(n1, false);
        let core = c.core_mut(n1);
        assert!(core.held.is_empty());
        assert!(core.held.capacity() > 0);
        core.release_idle_memory();
        assert_eq!(core.held.capacity(), 0);
    }
}
