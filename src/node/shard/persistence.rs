//! Persistence: the core's persist batches go to the log store (hard state included), and
//! their durability comes back as inputs; live bootstrap. Nothing here waits on a disk (see
//! `ringraft_storage::blocking`).

use super::*;

impl Shard {
    /// hashicorp's live `BootstrapCluster`: only on a node with no state. The initial state is
    /// submitted to the log store, the core restarts from it at once, and the caller hears
    /// when it is durable (the log store makes later writes durable only after it, so nothing
    /// the new core does can overtake it). A log store that keeps no hard state needs the
    /// stable store saved first: that one case waits here.
    pub(super) fn bootstrap(
        &mut self,
        now: Time,
        configuration: &ringraft_storage::Configuration,
        reply: Sender<Result<(), BootstrapClusterError>>,
    ) {
        let core = &self.core;
        if core.term() > Term(0)
            || core.log().last_index() > Index(0)
            || core.snapshot().is_some()
            || !self.pending_persist.is_empty()
            || self.bootstrapping.is_some()
        {
            return reply.send(Err(BootstrapClusterError::CantBootstrap));
        }
        let state = match Core::bootstrap(&RecoveredState::default(), self.shared.id, configuration)
        {
            Ok(state) => state,
            Err(e) => {
                return reply.send(Err(match e {
                    BootstrapError::NotVoter { id } => BootstrapClusterError::NotVoter { id },
                    BootstrapError::InvalidConfiguration(c) => {
                        BootstrapClusterError::InvalidConfiguration(c)
                    }
                    _ => BootstrapClusterError::CantBootstrap,
                }))
            }
        };
        let written = self.log.append(&state.entries).and_then(|t| {
            Ok(self
                .log
                .save_hard_state(&state.hard_state)?
                .map(|h| h.max(t)))
        });
        let ticket = match written {
            Ok(Some(ticket)) => ticket,
            Ok(None) => {
                // No hard state in the log store: the stable store must have it before the
                // core can vote. The one blocking exception (see `ringraft_storage::blocking`).
                let _allow = ringraft_storage::blocking::Allow::new();
                let saved = self
                    .log
                    .append_and_wait(&[])
                    .map_err(|e| e.to_string())
                    .and_then(|()| {
                        self.stable
                            .save(&state.hard_state)
                            .map_err(|e| e.to_string())
                    });
                match saved {
                    Ok(()) => match self.log.durable() {
                        Ok(t) => t,
                        Err(e) => return self.bootstrap_failed(e.to_string(), reply),
                    },
                    Err(e) => return self.bootstrap_failed(e, reply),
                }
            }
            Err(e) => return self.bootstrap_failed(e.to_string(), reply),
        };
        self.hard_state = state.hard_state;
        match Core::new(self.core_config.clone(), state, now) {
            Ok(core) => {
                self.core = core;
                self.configuration_dirty = true;
                self.transport_peers_dirty = true;
                // Requests the empty core was holding cannot be answered by the new one.
                for (_, waiter) in std::mem::take(&mut self.waiters) {
                    waiter.fail(RequestError::NotLeader { leader: None });
                }
                // A membership change the old core held was just answered: the next may go.
                self.membership.forget_in_flight();
                self.bootstrapping = Some((ticket, reply));
                self.check_durable(now);
            }
            Err(e) => self.bootstrap_failed(e.to_string(), reply),
        }
    }

    pub(super) fn bootstrap_failed(
        &mut self,
        e: String,
        reply: Sender<Result<(), BootstrapClusterError>>,
    ) {
        self.fatal = Some(format!("bootstrap: {e}"));
        reply.send(Err(BootstrapClusterError::Storage(e)));
    }

    /// Performs one persist batch in the order `PersistBatch` documents. The log operations
    /// are submitted and complete asynchronously; the hard state is saved once the batch's
    /// entries are durable.
    pub(super) fn persist(&mut self, batch: PersistBatch) -> Result<(), String> {
        let mut ticket = None;
        if let Some(from) = batch.truncate_from {
            ticket = Some(self.log.truncate_suffix(from.prev()).map_err(log_error)?);
            self.configuration_dirty = true;
        }
        if !batch.entries.is_empty() {
            if batch
                .entries
                .iter()
                .any(|e| e.kind == EntryKind::Configuration)
            {
                self.configuration_dirty = true;
            }
            ticket = Some(self.log.append(&batch.entries).map_err(log_error)?);
        }
        // Term, vote and the commit index go into the log store when it keeps them (the WAL
        // and the in-memory store do): durable with this batch, no separate fsync, no wait on
        // this thread. The commit index only rides along with writes that happen anyway.
        if batch.hard_state.is_some() || batch.commit.is_some() {
            let mut next = batch.hard_state.unwrap_or(self.hard_state);
            next.commit = batch
                .commit
                .unwrap_or(self.hard_state.commit)
                .max(next.commit);
            match self.log.save_hard_state(&next).map_err(log_error)? {
                Some(t) => {
                    ticket = Some(t);
                    self.hard_state = next;
                }
                None => {
                    self.hard_state.commit = next.commit;
                    if let Some(hard_state) = batch.hard_state {
                        // A log store without hard state: the stable store saves term and vote
                        // once the batch's entries are durable (a blocking wait; see
                        // `LogStore::save_hard_state`), the one exception to "never block here".
                        let _allow = ringraft_storage::blocking::Allow::new();
                        let t = match ticket {
                            Some(t) => t,
                            None => self.log.append(&[]).map_err(log_error)?,
                        };
                        self.log.wait_durable(t).map_err(log_error)?;
                        self.stable.save(&hard_state).map_err(|e| e.to_string())?;
                        self.hard_state = hard_state;
                    }
                }
            }
        }
        if let Some(through) = batch.compact_through {
            ticket = Some(
                self.log
                    .truncate_prefix(through.index.next())
                    .map_err(log_error)?,
            );
            self.configuration_dirty = true;
        }
        let t = match ticket {
            Some(t) => t,
            None => self.log.append(&[]).map_err(log_error)?,
        };
        self.pending_persist.push_back((batch.seq, t));
        Ok(())
    }

    /// Reports the batches that became durable; true if it stepped the core.
    pub(super) fn check_durable(&mut self, now: Time) -> bool {
        if self.pending_persist.is_empty() && self.bootstrapping.is_none() {
            return false;
        }
        let durable = match self.log.durable() {
            Ok(t) => t,
            Err(e) => {
                self.fatal = Some(format!("log store failed: {e}"));
                return false;
            }
        };
        if self
            .bootstrapping
            .as_ref()
            .is_some_and(|(t, _)| *t <= durable)
        {
            if let Some((_, reply)) = self.bootstrapping.take() {
                reply.send(Ok(()));
            }
        }
        self.metrics.durable(now, durable);
        let mut seq = None;
        while self
            .pending_persist
            .front()
            .is_some_and(|(_, t)| *t <= durable)
        {
            seq = self.pending_persist.pop_front().map(|(s, _)| s);
        }
        match seq {
            Some(seq) => {
                self.core.step(now, Input::Persisted { seq });
                true
            }
            None => false,
        }
    }
}

pub(super) fn log_error(e: LogError) -> String {
    e.to_string()
}
