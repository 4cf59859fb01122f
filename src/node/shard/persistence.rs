//! Persistence: the core's persist batches go to the log store (hard state included), and
//! their durability comes back as inputs; live bootstrap. Nothing here waits on a disk (see
//! `ringraft_storage::blocking`): with a log store that keeps no hard state, the stable store
//! is saved by its own worker (`stable_io`) and a batch counts as durable once both are.

use super::stable_io::StableKey;
use super::*;

/// A persist batch submitted to the stores, waiting to be durable.
pub(super) struct PendingPersist {
    pub(super) seq: u64,
    /// Durable in the log store at this ticket.
    pub(super) ticket: Ticket,
    /// Its hard state in the stable store, when the log store keeps none.
    pub(super) stable: StableStep,
}

/// Where a hard state on its way to the stable store is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum StableStep {
    /// Nothing to save there (or saved).
    Done,
    /// To save once the batch's log writes are durable.
    Needed(ringraft_storage::HardState),
    /// With the stable-store worker.
    Saving,
}

/// A live bootstrap whose initial state is not durable yet.
pub(super) struct Bootstrapping {
    pub(super) ticket: Ticket,
    pub(super) reply: Sender<Result<(), BootstrapClusterError>>,
    pub(super) stable: StableStep,
}

impl Shard {
    /// hashicorp's live `BootstrapCluster`: only on a node with no state. The initial state is
    /// submitted to the log store, the core restarts from it at once, and the caller hears
    /// when it is durable (the log store makes later writes durable only after it, so nothing
    /// the new core does can overtake it). With a log store that keeps no hard state, the
    /// stable-store worker saves it once the entries are durable, before any later batch's
    /// hard state (saves are in order), so no vote can leave before it.
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
        let (ticket, stable) = match written {
            Ok(Some(ticket)) => (ticket, StableStep::Done),
            // The latest ticket: the entries just appended.
            Ok(None) => match self.log.append(&[]) {
                Ok(ticket) => (ticket, StableStep::Needed(state.hard_state)),
                Err(e) => return self.bootstrap_failed(e.to_string(), reply),
            },
            Err(e) => return self.bootstrap_failed(e.to_string(), reply),
        };
        self.hard_state = state.hard_state;
        match Core::new(self.core.config().clone(), state, now) {
            Ok(core) => {
                self.core = core;
                self.configuration_dirty = true;
                self.transport_peers_dirty = true;
                // Requests the empty core was holding cannot be answered by the new one.
                for (_, waiter) in self.waiters.take_all() {
                    waiter.fail(RequestError::NotLeader { leader: None });
                }
                // A membership change the old core held was just answered: the next may go.
                self.membership.forget_in_flight();
                self.bootstrapping = Some(Bootstrapping {
                    ticket,
                    reply,
                    stable,
                });
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
        self.log.hold_writes();
        let submitted = self.submit_persist(batch);
        // A follower alone on its thread writes a small batch itself when its WAL writer is
        // idle: its acknowledgement waits for this write and nothing else, and the hand-offs
        // to the writer thread and back cost more than the write on a small VM
        // (ARCHITECTURE §10). So does a leader without peers (a one-server cluster), whose
        // commit waits for its own write alone. A leader with peers does not: its
        // AppendEntries leave only once its turn yields to the connection tasks.
        let leader = self.core.role() == Role::Leader;
        let here = submitted.is_ok()
            && (!leader || self.leads_alone())
            && self.inline_writes.may_write_here();
        let released = self.log.release_writes(here).map_err(log_error);
        if let Ok(true) = released {
            if leader {
                // Requests that came during the write: the clients pipeline.
                self.inline_writes
                    .wrote_here_as_leader(!self.shared.queue.is_empty());
            } else {
                self.inline_writes.wrote_here();
            }
        }
        submitted.and(released.map(drop))
    }

    /// Whether this node is the only server of its latest configuration.
    fn leads_alone(&self) -> bool {
        self.core
            .configurations()
            .last()
            .is_none_or(|(_, c)| c.servers.iter().all(|s| s.id == self.shared.id))
    }

    fn submit_persist(&mut self, mut batch: PersistBatch) -> Result<(), String> {
        let mut ticket = None;
        let mut stable = StableStep::Done;
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
            #[cfg(feature = "sim")]
            let early = (self.core.config().mutation
                == Some(crate::core::Mutation::GlueApplyBeforeCommit))
            .then(|| batch.entries.clone());
            let entries = std::mem::take(&mut batch.entries);
            ticket = Some(self.log.append_owned(entries).map_err(log_error)?);
            #[cfg(feature = "sim")]
            if let Some(entries) = early {
                // The glue mutation: the state machine gets entries as they are written.
                self.send_to_apply(ApplyTask::Entries(entries));
            }
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
                        // A log store without hard state: the stable-store worker saves term
                        // and vote once this batch's log writes are durable.
                        stable = StableStep::Needed(hard_state);
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
        self.pending_persist.push_back(PendingPersist {
            seq: batch.seq,
            ticket: t,
            stable,
        });
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
        if let Some(b) = self.bootstrapping.as_mut() {
            if b.ticket <= durable {
                if let StableStep::Needed(state) = b.stable {
                    b.stable = StableStep::Saving;
                    if !self
                        .stable
                        .save(StableKey::Bootstrap, state, &self.events_tx, &self.shared)
                    {
                        self.fatal = Some("the stable-store worker is gone".into());
                        return false;
                    }
                }
                if b.stable == StableStep::Done {
                    if let Some(b) = self.bootstrapping.take() {
                        b.reply.send(Ok(()));
                    }
                }
            }
        }
        #[cfg(feature = "sim")]
        let durable =
            if self.core.config().mutation == Some(crate::core::Mutation::GlueAckBeforeDurable) {
                // The glue mutation: whatever was submitted counts as durable.
                self.pending_persist
                    .back()
                    .map_or(durable, |p| p.ticket.max(durable))
            } else {
                durable
            };
        self.metrics.durable(now, durable);
        let mut seq = None;
        while let Some(front) = self.pending_persist.front_mut() {
            if front.ticket > durable {
                break;
            }
            match front.stable {
                StableStep::Done => {}
                StableStep::Saving => break,
                StableStep::Needed(state) => {
                    front.stable = StableStep::Saving;
                    let key = StableKey::Batch(front.seq);
                    if !self.stable.save(key, state, &self.events_tx, &self.shared) {
                        self.fatal = Some("the stable-store worker is gone".into());
                        return false;
                    }
                    break;
                }
            }
            seq = self.pending_persist.pop_front().map(|p| p.seq);
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

impl Shard {
    /// The stable-store worker saved a hard state: its batch (or the bootstrap) may now count
    /// as durable.
    pub(super) fn stable_saved(&mut self, now: Time, key: StableKey, result: Result<(), String>) {
        if let Err(e) = result {
            // Like a failed log write: cannot be retried safely.
            self.fatal = Some(format!("stable store failed: {e}"));
            return;
        }
        match key {
            StableKey::Bootstrap => {
                if let Some(b) = self.bootstrapping.as_mut() {
                    b.stable = StableStep::Done;
                }
            }
            StableKey::Batch(seq) => {
                if let Some(p) = self.pending_persist.iter_mut().find(|p| p.seq == seq) {
                    p.stable = StableStep::Done;
                }
            }
        }
        self.check_durable(now);
    }
}

/// Batches a follower hands to its log store's writer thread, after messages were found
/// waiting once it had written a batch itself, before it writes one itself again.
const INLINE_BACKOFF_BATCHES: u32 = 64;

/// When a node writes a persist batch on its own thread (ARCHITECTURE §10): only when its
/// loop is alone on the thread (a write there would stall no other node), and not while
/// work piles up during such writes. A follower whose leader pipelines (several clients)
/// finds AppendEntries waiting after each write it does itself, a leader without peers finds
/// requests of other clients: it would then stage and write them in turn, where the writer
/// thread writes one batch while the shard stages the next, so after such a write it leaves
/// the next batches to the writer.
pub(super) struct InlineWrites {
    alone: bool,
    /// A batch was written here, and the transport has not been polled since.
    watching: bool,
    /// Batches left for the writer thread before one is written here again.
    backoff: u32,
}

impl InlineWrites {
    pub(super) fn new(alone_on_thread: bool) -> InlineWrites {
        InlineWrites {
            alone: alone_on_thread,
            watching: false,
            backoff: 0,
        }
    }

    /// Whether the next batch may be written here (counts one batch of a backoff).
    pub(super) fn may_write_here(&mut self) -> bool {
        if !self.alone {
            return false;
        }
        if self.backoff > 0 {
            self.backoff -= 1;
            return false;
        }
        true
    }

    /// A follower's batch was written here: the messages that came meanwhile are seen at
    /// the next poll of the transport (its connection tasks read them only once the turn
    /// yields).
    pub(super) fn wrote_here(&mut self) {
        self.watching = true;
    }

    /// A leader's batch was written here; `requests` if requests came meanwhile. (Not at its
    /// next turn: a lone leader answers its clients in the turn of the write, so their next
    /// requests are there by then even when they do not pipeline.)
    pub(super) fn wrote_here_as_leader(&mut self, requests: bool) {
        if requests {
            self.backoff = INLINE_BACKOFF_BATCHES;
        }
    }

    /// The transport was polled after a follower's batch was written here: `arrived` if it
    /// had messages waiting.
    pub(super) fn polled(&mut self, arrived: bool) {
        if std::mem::take(&mut self.watching) && arrived {
            self.backoff = INLINE_BACKOFF_BATCHES;
        }
    }
}
