//! Requests from the node's handles: each becomes one input to the core with a waiter, and
//! the core's reply resolves the waiter (or hands it to the apply loop, which resolves it once
//! the entries are applied).

use super::*;

/// A request waiting for the core's reply.
pub(super) enum Waiter {
    Apply(ApplyReply),
    Barrier(Sender<Result<Index, ApplyError>>),
    Verify(Sender<Result<(), ReadError>>),
    Read(Sender<Result<Index, ReadError>>),
    Membership(membership::QueuedChange),
    Transfer(Sender<Result<(), TransferError>>),
    /// A user restore, with the snapshot to stage until the core asks for it.
    Restore {
        reply: Sender<Result<Index, RestoreError>>,
        data: Option<Box<dyn Read + Send>>,
    },
}

impl Waiter {
    pub(super) fn fail(self, e: RequestError) {
        match self {
            Waiter::Apply(ApplyReply::One(tx)) => tx.send(Err(e.into())),
            Waiter::Apply(ApplyReply::Batch(tx)) => tx.send(Err(e.into())),
            Waiter::Barrier(tx) => tx.send(Err(e.into())),
            Waiter::Verify(tx) => tx.send(Err(e.into())),
            Waiter::Read(tx) => tx.send(Err(e.into())),
            Waiter::Membership(request) => request.reply.send(Err(e.into())),
            Waiter::Transfer(tx) => tx.send(Err(e.into())),
            Waiter::Restore { reply, .. } => reply.send(Err(e.into())),
        }
    }
}

impl Shard {
    pub(super) fn token(&mut self) -> Token {
        self.next_token += 1;
        Token(self.next_token)
    }

    pub(super) fn submit(&mut self, now: Time, waiter: Waiter, input: impl FnOnce(Token) -> Input) {
        let token = self.token();
        self.waiters.insert(token, waiter);
        self.core.step(now, input(token));
    }

    pub(super) fn handle_command(&mut self, now: Time, command: Command) {
        match command {
            Command::Apply {
                commands,
                extensions,
                reply,
            } => self.submit(now, Waiter::Apply(reply), |token| Input::Propose {
                token,
                commands,
                extensions,
            }),
            Command::Barrier { reply } => self.submit(now, Waiter::Barrier(reply), |token| {
                Input::Barrier { token }
            }),
            Command::VerifyLeader { reply } => self.submit(now, Waiter::Verify(reply), |token| {
                Input::VerifyLeader { token }
            }),
            Command::Read { lease, reply } => self.submit(now, Waiter::Read(reply), |token| {
                if lease {
                    Input::LeaseRead { token }
                } else {
                    Input::ReadIndex { token }
                }
            }),
            Command::Membership {
                change,
                prev_index,
                timeout,
                reply,
            } => {
                let deadline = (!timeout.is_zero())
                    .then(|| now.plus_nanos(u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX)));
                let request = membership::QueuedChange {
                    change,
                    prev_index,
                    reply,
                    deadline,
                };
                self.queue_membership(now, request);
            }
            Command::Restore { data, reply } => {
                let waiter = Waiter::Restore {
                    reply,
                    data: Some(data),
                };
                self.submit(now, waiter, |token| Input::UserRestore { token })
            }
            Command::Transfer { target, reply } => {
                self.submit(now, Waiter::Transfer(reply), |token| {
                    Input::TransferLeadership { token, target }
                })
            }
            Command::Snapshot { reply } => self.start_snapshot(Some(reply)),
            Command::Reload { reloadable, reply } => {
                let reloaded = self.config.reloaded(&reloadable).and_then(|merged| {
                    let core = merged
                        .core_config(self.core_config.seed)
                        .map_err(crate::api::error::ReloadConfigError::Invalid)?;
                    Ok((merged, core))
                });
                reply.send(reloaded.map(|(merged, core)| {
                    self.core.step(
                        now,
                        Input::Reconfigure(crate::core::Timing {
                            election_timeout: core.election_timeout,
                            heartbeat_interval: core.heartbeat_interval,
                            leader_lease_timeout: core.leader_lease_timeout,
                            trailing_logs: core.trailing_logs,
                        }),
                    );
                    self.core_config = core;
                    let interval_changed =
                        merged.snapshot_interval != self.config.snapshot_interval;
                    *self
                        .shared
                        .reloadable
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = reloadable;
                    self.config = merged;
                    if interval_changed {
                        self.schedule_snapshot_check(now);
                    }
                }))
            }
            Command::Bootstrap {
                configuration,
                reply,
            } => self.bootstrap(now, &configuration, reply),
        }
    }

    pub(super) fn reply(&mut self, token: Token, result: Result<Outcome, RequestError>) {
        let Some(waiter) = self.waiters.remove(&token) else {
            return;
        };
        if let Waiter::Membership(request) = waiter {
            debug_assert!(self.membership.is_in_flight(token));
            let result = match result {
                Ok(Outcome::Committed { last, .. }) => Ok(last),
                Ok(_) => Err(RequestError::LeadershipLost),
                Err(e) => Err(e),
            };
            return self.membership_answered(request, result);
        }
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(e) => return waiter.fail(e),
        };
        match (waiter, outcome) {
            (Waiter::Apply(reply), Outcome::Committed { first, last, .. }) => {
                self.send_to_apply(ApplyTask::Await {
                    first,
                    last,
                    waiter: AwaitWaiter::Apply(reply),
                })
            }
            (Waiter::Barrier(tx), Outcome::Committed { first, last, .. }) => {
                self.send_to_apply(ApplyTask::Await {
                    first,
                    last,
                    waiter: AwaitWaiter::Barrier(tx),
                })
            }
            (Waiter::Verify(tx), Outcome::LeaderVerified) => tx.send(Ok(())),
            (Waiter::Read(reply), Outcome::ReadReady { index }) => {
                self.send_to_apply(ApplyTask::WaitApplied { index, reply })
            }
            (Waiter::Transfer(tx), Outcome::LeadershipTransferred) => tx.send(Ok(())),
            (Waiter::Restore { reply, .. }, Outcome::Committed { first, last, .. }) => self
                .send_to_apply(ApplyTask::Await {
                    first,
                    last,
                    waiter: AwaitWaiter::Restore(reply),
                }),
            // An outcome that does not fit the request would be a core bug: the outcome is
            // unknown to the caller.
            (waiter, _) => waiter.fail(RequestError::LeadershipLost),
        }
    }
}
