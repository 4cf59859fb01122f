//! [`Reply`]: where the answer to a request goes, one type from the handle through the shard
//! to the apply loop. The core answers a request with an outcome (or an error); a reply either
//! resolves at once (verify-leader, a transfer, a membership change) or waits in the apply
//! loop until the state machine has applied its entries (applies, barriers, restores, reads).

use crate::api::error::{ApplyError, MembershipError, ReadError, RestoreError, TransferError};
use crate::api::future::Sender;
use crate::api::outcome::{Applied, AppliedBatch};
use crate::core::{Outcome, RequestError};
use bytes::Bytes;
use ringraft_storage::Index;

/// Where a request's answer goes.
pub(crate) enum Reply {
    Apply(Sender<Result<Applied, ApplyError>>),
    ApplyBatch(Sender<Result<AppliedBatch, ApplyError>>),
    Barrier(Sender<Result<Index, ApplyError>>),
    Verify(Sender<Result<(), ReadError>>),
    Read(Sender<Result<Index, ReadError>>),
    Membership(Sender<Result<Index, MembershipError>>),
    Transfer(Sender<Result<(), TransferError>>),
    Restore(Sender<Result<Index, RestoreError>>),
}

/// A request's state-machine responses, in entry order. The common case, one `apply`, holds
/// its one response without a vector of its own.
#[derive(Debug, Default)]
pub(crate) enum Responses {
    /// None yet (or none: a barrier, a read).
    #[default]
    None,
    /// Exactly one.
    One(Bytes),
    /// Two or more.
    Many(Vec<Bytes>),
}

impl Responses {
    /// Adds the next entry's response.
    pub(crate) fn push(&mut self, response: Bytes) {
        *self = match std::mem::take(self) {
            Responses::None => Responses::One(response),
            Responses::One(first) => Responses::Many(vec![first, response]),
            Responses::Many(mut all) => {
                all.push(response);
                Responses::Many(all)
            }
        };
    }

    /// The last response (empty if there is none).
    fn last(self) -> Bytes {
        match self {
            Responses::None => Bytes::new(),
            Responses::One(only) => only,
            Responses::Many(mut all) => all.pop().unwrap_or_default(),
        }
    }

    /// Every response, in order.
    fn into_vec(self) -> Vec<Bytes> {
        match self {
            Responses::None => Vec::new(),
            Responses::One(only) => vec![only],
            Responses::Many(all) => all,
        }
    }
}

/// What to do with a reply once the core answered it.
pub(crate) enum Next {
    /// Answered.
    Done,
    /// Answer once the entries `first..=last` are applied, with their responses.
    AwaitApplied {
        first: Index,
        last: Index,
        reply: Reply,
    },
    /// Answer once `index` is applied (a read point).
    AwaitIndex { index: Index, reply: Reply },
}

impl Reply {
    /// Answers with the core's error, mapped to the request's error type.
    pub(crate) fn fail(self, e: RequestError) {
        match self {
            Reply::Apply(tx) => tx.send(Err(e.into())),
            Reply::ApplyBatch(tx) => tx.send(Err(e.into())),
            Reply::Barrier(tx) => tx.send(Err(e.into())),
            Reply::Verify(tx) => tx.send(Err(e.into())),
            Reply::Read(tx) => tx.send(Err(e.into())),
            Reply::Membership(tx) => tx.send(Err(e.into())),
            Reply::Transfer(tx) => tx.send(Err(e.into())),
            Reply::Restore(tx) => tx.send(Err(e.into())),
        }
    }

    /// A user restore failed before its entry existed (staging, or no staging area).
    pub(crate) fn restore_failed(self, e: RestoreError) {
        match self {
            Reply::Restore(tx) => tx.send(Err(e)),
            other => other.fail(RequestError::RestoreFailed),
        }
    }

    /// The core's outcome for this request. An outcome that does not fit the request would
    /// be a core bug: the caller then learns that the outcome is unknown.
    pub(crate) fn on_outcome(self, outcome: Outcome) -> Next {
        match (self, outcome) {
            (
                reply @ (Reply::Apply(_)
                | Reply::ApplyBatch(_)
                | Reply::Barrier(_)
                | Reply::Restore(_)),
                Outcome::Committed { first, last, .. },
            ) => Next::AwaitApplied { first, last, reply },
            (reply @ Reply::Read(_), Outcome::ReadReady { index }) => {
                Next::AwaitIndex { index, reply }
            }
            (Reply::Verify(tx), Outcome::LeaderVerified) => {
                tx.send(Ok(()));
                Next::Done
            }
            (Reply::Transfer(tx), Outcome::LeadershipTransferred) => {
                tx.send(Ok(()));
                Next::Done
            }
            (Reply::Membership(tx), Outcome::Committed { last, .. }) => {
                tx.send(Ok(last));
                Next::Done
            }
            (reply, _) => {
                reply.fail(RequestError::LeadershipLost);
                Next::Done
            }
        }
    }

    /// The state machine applied `first..=last` (`responses` are its answers to the commands
    /// among them, in order), or, for a read, the read point `last`.
    pub(crate) fn applied(self, first: Index, last: Index, responses: Responses) {
        match self {
            Reply::Apply(tx) => tx.send(Ok(Applied {
                index: last,
                response: responses.last(),
            })),
            Reply::ApplyBatch(tx) => tx.send(Ok(AppliedBatch {
                first,
                last,
                responses: responses.into_vec(),
            })),
            Reply::Barrier(tx) => tx.send(Ok(last)),
            Reply::Restore(tx) => tx.send(Ok(last)),
            Reply::Read(tx) => tx.send(Ok(last)),
            other => other.fail(RequestError::LeadershipLost),
        }
    }
}
