//! Requests from the node's handles: each becomes one input to the core with a waiter, and
//! the core's reply resolves the waiter (or hands it to the apply loop, which resolves it once
//! the entries are applied).

use super::*;

/// A request the core holds: where its answer goes, and what else it needs meanwhile.
pub(super) enum Waiter {
    /// Answered through its reply alone.
    Plain(Reply),
    /// A membership change, kept so it can go back in line if the core refuses it for now.
    Membership(membership::QueuedChange),
    /// A user restore, with the snapshot to stage until the core asks for it.
    Restore {
        reply: Reply,
        data: Option<Box<dyn Read + Send>>,
    },
}

impl Waiter {
    pub(super) fn fail(self, e: RequestError) {
        match self {
            Waiter::Plain(reply) | Waiter::Restore { reply, .. } => reply.fail(e),
            Waiter::Membership(request) => request.reply.send(Err(e.into())),
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
            } => self.submit(now, Waiter::Plain(reply), |token| Input::Propose {
                token,
                commands,
                extensions,
            }),
            Command::Barrier { reply } => {
                self.submit(now, Waiter::Plain(reply), |token| Input::Barrier { token })
            }
            Command::VerifyLeader { reply } => self.submit(now, Waiter::Plain(reply), |token| {
                Input::VerifyLeader { token }
            }),
            Command::Read { lease, reply } => self.submit(now, Waiter::Plain(reply), |token| {
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
                let Reply::Membership(reply) = reply else {
                    return reply.fail(RequestError::LeadershipLost);
                };
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
                self.submit(now, Waiter::Plain(reply), |token| {
                    Input::TransferLeadership { token, target }
                })
            }
            Command::Snapshot { reply } => self.start_snapshot(Some(reply)),
            Command::Reload { reloadable, reply } => {
                let reloaded = self.config.reloaded(&reloadable).and_then(|merged| {
                    let core = merged
                        .core_config(self.core.config().seed)
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
                    // Only the timing changes (the core keeps it in its own settings): the
                    // rest of the core's settings (its seed, and in the simulator its mutation)
                    // stay as the node started.
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
        let Some(waiter) = self.waiters.remove(token) else {
            return;
        };
        let (reply, result) = match waiter {
            Waiter::Membership(request) => {
                debug_assert!(self.membership.is_in_flight(token));
                return self.membership_answered(request, result);
            }
            Waiter::Plain(reply) | Waiter::Restore { reply, .. } => (reply, result),
        };
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(e) => return reply.fail(e),
        };
        #[cfg(feature = "sim")]
        let Some((reply, outcome)) = self.reply_before_apply(reply, outcome) else {
            return;
        };
        match reply.on_outcome(outcome) {
            Next::Done => {}
            Next::AwaitApplied { first, last, reply } => {
                self.send_to_apply(ApplyTask::Await { first, last, reply })
            }
            Next::AwaitIndex { index, reply } => {
                self.send_to_apply(ApplyTask::WaitApplied { index, reply })
            }
        }
    }
}

#[cfg(feature = "sim")]
impl Shard {
    /// The glue mutation `GlueReplyBeforeApply`: reads and barriers are answered as soon as
    /// the core says so, without waiting for the state machine. `None` once answered.
    fn reply_before_apply(&mut self, reply: Reply, outcome: Outcome) -> Option<(Reply, Outcome)> {
        if self.core.config().mutation != Some(crate::core::Mutation::GlueReplyBeforeApply) {
            return Some((reply, outcome));
        }
        match (reply, outcome) {
            (reply @ Reply::Read(_), Outcome::ReadReady { index }) => {
                reply.applied(index, index, Responses::None);
                None
            }
            (reply @ Reply::Barrier(_), Outcome::Committed { last, .. }) => {
                reply.applied(last, last, Responses::None);
                None
            }
            (reply, outcome) => Some((reply, outcome)),
        }
    }
}
