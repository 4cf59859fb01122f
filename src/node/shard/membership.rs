//! Membership changes wait in line (hashicorp's behaviour): the core takes one configuration
//! change at a time and refuses another while one is uncommitted, so the shard keeps later
//! requests in a bounded FIFO and hands them to the core one after another. A request the core
//! refuses with "change in progress" (a configuration from an earlier term not yet committed,
//! or a new leader that has not committed an entry of its term) goes back to the head of the
//! line and is tried again once the commit index, the term or the role moves. Each request
//! waits at most its own timeout (the one given to `add_voter` and the others; zero waits as
//! long as it takes), then fails with `EnqueueTimeout`; a full line fails at once with
//! `ChangeQueueFull`.

use super::*;
use crate::api::error::MembershipError;
use crate::core::MembershipChange;

/// Requests that may wait behind the one in flight.
pub(super) const MEMBERSHIP_QUEUE_MAX: usize = 64;

/// A membership request waiting for its turn (or in flight, kept to be requeued).
pub(super) struct QueuedChange {
    pub(super) change: MembershipChange,
    pub(super) prev_index: Option<Index>,
    pub(super) reply: Sender<Result<Index, MembershipError>>,
    pub(super) deadline: Option<Time>,
}

/// The line of membership requests.
#[derive(Default)]
pub(super) struct MembershipQueue {
    waiting: VecDeque<QueuedChange>,
    /// The token of the request the core holds.
    in_flight: Option<Token>,
    /// After a "change in progress" refusal: (commit index, term, role) then; the head is
    /// retried once any of them differs.
    retry_gate: Option<(Index, Term, Role)>,
}

impl MembershipQueue {
    /// True if `token` is the request in flight.
    pub(super) fn is_in_flight(&self, token: Token) -> bool {
        self.in_flight == Some(token)
    }

    /// The request in flight was answered outside `membership_answered` (its core was
    /// replaced): the line moves on.
    pub(super) fn forget_in_flight(&mut self) {
        self.in_flight = None;
        self.retry_gate = None;
    }
}

impl Shard {
    /// A membership request from a caller: into the line, then maybe to the core.
    /// With nothing in flight it goes to the core at once (its effects are performed with the
    /// turn's), so the line holds only requests waiting behind another.
    pub(super) fn queue_membership(&mut self, now: Time, request: QueuedChange) {
        if self.membership.waiting.len() >= MEMBERSHIP_QUEUE_MAX {
            request.reply.send(Err(MembershipError::ChangeQueueFull));
            return;
        }
        self.membership.waiting.push_back(request);
        self.pump_membership_once(now);
    }

    /// Hands the head of the line to the core when nothing is in flight, again and again
    /// while the core answers at once (a refusal); expires requests whose timeout passed while
    /// they waited.
    pub(super) fn pump_membership(&mut self, now: Time) {
        while self.pump_membership_once(now) {
            self.perform_effects(now);
        }
    }

    /// One hand-over; true if a request went to the core.
    fn pump_membership_once(&mut self, now: Time) -> bool {
        let q = &mut self.membership;
        if q.waiting.is_empty() {
            return false;
        }
        let expired: Vec<QueuedChange> = {
            let (gone, kept): (VecDeque<_>, VecDeque<_>) = std::mem::take(&mut q.waiting)
                .into_iter()
                .partition(|r| r.deadline.is_some_and(|d| now >= d));
            q.waiting = kept;
            gone.into()
        };
        for r in expired {
            r.reply.send(Err(MembershipError::EnqueueTimeout));
        }
        if q.in_flight.is_some() {
            return false;
        }
        let position = (self.core.commit_index(), self.core.term(), self.core.role());
        if q.retry_gate.is_some_and(|gate| gate == position) {
            return false;
        }
        q.retry_gate = None;
        let Some(request) = q.waiting.pop_front() else {
            return false;
        };
        let token = self.token();
        self.membership.in_flight = Some(token);
        let input = Input::ChangeMembership {
            token,
            change: request.change.clone(),
            prev_index: request.prev_index,
        };
        self.waiters.insert(token, Waiter::Membership(request));
        self.core.step(now, input);
        true
    }

    /// The core answered the request in flight: a "change in progress" refusal sends it back
    /// to the head of the line (unless its timeout passed); anything else is its answer.
    pub(super) fn membership_answered(
        &mut self,
        request: QueuedChange,
        result: Result<Outcome, RequestError>,
    ) {
        self.membership.in_flight = None;
        match result {
            Err(RequestError::ConfigurationChangeInProgress) => {
                self.membership.retry_gate =
                    Some((self.core.commit_index(), self.core.term(), self.core.role()));
                self.membership.waiting.push_front(request);
            }
            Err(e) => request.reply.send(Err(e.into())),
            Ok(Outcome::Committed { last, .. }) => request.reply.send(Ok(last)),
            // Any other outcome would be a core bug: the change's outcome is unknown.
            Ok(_) => request.reply.send(Err(MembershipError::LeadershipLost)),
        }
    }
}
