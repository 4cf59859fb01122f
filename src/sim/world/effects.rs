//! Turning a node's shard and collecting what it did: the messages it sent, the writes it
//! submitted to its disk, the snapshot jobs it queued, what its state machine applied and the
//! answers its callers got. The shard glue performs the core's effects itself (one
//! interpreter, the runtime's); the world only plays the disk, the network, the snapshot
//! worker's schedule and the clients, and checks.

use super::*;
use std::sync::atomic::Ordering;
use std::task::Waker;

/// Most back-to-back turns per event (a turn that leaves work over is turned again).
const TURNS_PER_EVENT_MAX: usize = 64;

impl World {
    /// Turns node `n`'s shard at the current time until it is quiet, then collects what it
    /// did and runs the checkers.
    pub(super) fn turn(&mut self, n: usize) -> Result<(), String> {
        let now = self.now;
        let Some(running) = self.nodes[n].running.as_mut() else {
            return Ok(());
        };
        for _ in 0..TURNS_PER_EVENT_MAX {
            if !running.shard.turn(now, Waker::noop()) {
                break;
            }
        }
        if let Some(failure) = running.shard.failure() {
            return Err(format!("n{} stopped: {failure}", n + 1));
        }
        // The state machine runs on the shard (inline): once the shard is quiet, its core
        // knows every index the state machine applied (snapshots and quiescence go by it).
        // Not under the glue mutation that hands the state machine entries as they are
        // written, behind the core's back: what that breaks is the state-machine checker's
        // to find (a test pins it).
        let fsm_applied = Index(running.shared.applied_index.load(Ordering::Acquire));
        let core_applied = running.shard.core.applied_index();
        if core_applied < fsm_applied
            && self.config.mutation != Some(crate::core::Mutation::GlueApplyBeforeCommit)
        {
            return Err(format!(
                "n{}: the core knows entries up to {core_applied} applied, the state machine \
                 applied up to {fsm_applied}",
                n + 1
            ));
        }
        let shutdown = running.shared.shutdown_requested();
        self.collect(n)?;
        if shutdown {
            // Removed with `shutdown_on_remove`: the node stops, and its operator starts it
            // again a little later (so churn can add it back).
            self.log(|| format!("n{} shut down (removed)", n + 1));
            self.crash(n)?;
            let at = self.now.plus_nanos(self.rng.range(10 * MS, 300 * MS));
            self.schedule(at, Ev::Restart { node: n });
        }
        Ok(())
    }

    /// Everything node `n` did in its last turns, then the checkers.
    fn collect(&mut self, n: usize) -> Result<(), String> {
        self.collect_disk(n)?;
        self.collect_applied(n)?;
        let sent = std::mem::take(&mut lock(&self.nodes[n].wire).outbox);
        for m in sent {
            self.check_said(n, &m)?;
            self.send(m);
        }
        self.collect_answers(n)?;
        let node = &mut self.nodes[n];
        let Some(running) = node.running.as_ref() else {
            return Ok(());
        };
        let snapshot_work =
            running.shard.queued_snapshot_jobs() > 0 && !node.snapshot_work_scheduled;
        let stable_work = running.shard.queued_stable_saves() > 0 && !node.stable_work_scheduled;
        node.snapshot_work_scheduled |= snapshot_work;
        node.stable_work_scheduled |= stable_work;
        let (boot, (low, high)) = (node.boot, node.disk_latency);
        if snapshot_work {
            let at = self.now.plus_nanos(self.rng.range(MS / 20, 3 * MS));
            self.log(|| format!("n{}: snapshot jobs queued", n + 1));
            self.schedule(at, Ev::SnapshotWork { node: n, boot });
        }
        if stable_work {
            let latency = self.rng.range(low, high);
            // A term or vote on its way to the stable store: a worst moment to crash.
            if !self.healed && self.config.faults && self.rng.chance(1, 8) {
                let at = self.now.plus_nanos(self.rng.range(0, latency));
                self.schedule(at, Ev::Crash { node: n, boot });
            }
            let at = self.now.plus_nanos(latency);
            self.schedule(at, Ev::StableWork { node: n, boot });
        }
        let node = &mut self.nodes[n];
        let Some(running) = node.running.as_ref() else {
            return Ok(());
        };
        let core = &running.shard.core;
        let role = (core.role(), core.term());
        let role_changed = node.role != role;
        node.role = role;
        self.checker.observe_commits(core, &mut node.commit_seen)?;
        self.checker.after_step(core, &mut node.commit_seen)?;
        node.term_seen = node.term_seen.max(core.term());
        let quiesced = core.is_quiesced();
        let newly_quiesced = quiesced && !node.quiesced;
        node.quiesced = quiesced;
        check_acknowledged_entries(node)?;
        let next = running.shard.next_wakeup().max(self.now);
        if node.timer_at.is_none_or(|t| t > next) {
            node.timer_at = Some(next);
            self.schedule(next, Ev::Timer { node: n });
        }
        if newly_quiesced {
            self.quiesces += 1;
            self.hash(&[22, self.now.0, n as u64]);
            self.log(|| format!("n{} quiesced", n + 1));
            // A quiesced leader dies now and then: its followers hear nothing at all and
            // must learn of it from their hosts' watch.
            if role.0 == Role::Leader && !self.healed && self.quiet_rng.chance(1, 2) {
                let at = self.now.plus_nanos(self.quiet_rng.range(0, 200 * MS));
                let boot = self.nodes[n].boot;
                self.schedule(at, Ev::Crash { node: n, boot });
            }
        }
        if role_changed {
            self.role_changed(n, role.0, role.1);
        }
        Ok(())
    }

    /// Node `n` changed role: hashed into the trace, and new leaders draw fire.
    fn role_changed(&mut self, n: usize, role: Role, term: ringraft_storage::Term) {
        self.log(|| format!("n{} is {role:?} in {term}", n + 1));
        let code = match role {
            Role::Follower => 0,
            Role::PreCandidate => 1,
            Role::Candidate => 2,
            Role::Leader => 3,
        };
        self.hash(&[8, self.now.0, n as u64, code, term.0]);
        if role != Role::Leader || self.healed {
            return;
        }
        // New leaders die young now and then, leaving entries of their term on a minority:
        // the raw material of Figure 8.
        if self.config.faults && self.rng.chance(1, 2) {
            let at = self.now.plus_nanos(self.rng.range(0, 15 * MS));
            let boot = self.nodes[n].boot;
            self.schedule(at, Ev::Crash { node: n, boot });
        }
        // A membership change right after an election: with the crashes above, several
        // leaders in quick succession each start one.
        if self.config.churn && self.rng.chance(1, 4) {
            let at = self.now.plus_nanos(self.rng.range(0, 5 * MS));
            self.schedule(at, Ev::ChurnNow);
        }
    }

    /// Schedules the completion of the writes node `n` submitted since the last one was
    /// scheduled, and now and then a crash while they are in flight.
    fn collect_disk(&mut self, n: usize) -> Result<(), String> {
        let node = &mut self.nodes[n];
        let mut disk = lock(&node.disk);
        if let Some(e) = disk.error.take() {
            return Err(format!("n{}: {e}", n + 1));
        }
        let issued = disk.issued();
        if issued <= disk.scheduled {
            return Ok(());
        }
        disk.scheduled = issued;
        let term_change = std::mem::take(&mut disk.term_change_pending);
        drop(disk);
        let (low, high) = node.disk_latency;
        let latency = self.rng.range(low, high);
        // Crash at the worst moments ("buggify"): while a vote or a term change is being
        // written, or while a leader's entries are on their way to disk.
        let odds = if term_change { 8 } else { 40 };
        if !self.healed && self.config.faults && self.rng.chance(1, odds) {
            let at = self.now.plus_nanos(self.rng.range(0, latency));
            let boot = self.nodes[n].boot;
            self.schedule(at, Ev::Crash { node: n, boot });
        }
        let node = &mut self.nodes[n];
        let done = match self.host_disks.get(n) {
            // Several groups: the host's flushes cover every group's writes.
            Some(disk) => lock(disk).durable_at(self.now, latency),
            None => node.disk_free_at.max(self.now).plus_nanos(latency),
        };
        node.disk_free_at = done;
        let boot = node.boot;
        self.schedule(
            done,
            Ev::DiskDone {
                node: n,
                boot,
                ticket: issued,
            },
        );
        Ok(())
    }

    /// What node `n`'s state machine applied: state-machine safety, first applications.
    fn collect_applied(&mut self, n: usize) -> Result<(), String> {
        let (applied, installs, restores, captures, error) = {
            let mut m = lock(&self.nodes[n].machine);
            (
                std::mem::take(&mut m.applied),
                std::mem::take(&mut m.installs),
                std::mem::take(&mut m.restores),
                std::mem::take(&mut m.captures),
                m.error.take(),
            )
        };
        if let Some(e) = error {
            return Err(e);
        }
        if installs + restores + captures > 0 {
            self.log(|| {
                format!(
                    "n{}: state machine installed {installs}, restored {restores}, captured \
                     {captures}",
                    n + 1
                )
            });
        }
        self.installs += installs;
        self.restores_applied += restores;
        self.snapshots += captures;
        let id = self.nodes[n].id;
        for (entry, op_id, result) in applied {
            self.checker.on_apply(id, &entry)?;
            let now = self.now.0;
            self.first_applied
                .entry(op_id)
                .or_insert_with(|| (now, result));
        }
        Ok(())
    }

    /// Resolves the clients whose answer from node `n` arrived.
    fn collect_answers(&mut self, n: usize) -> Result<(), String> {
        for c in 0..self.clients.len() {
            let Some(f) = self.clients[c].current.as_mut() else {
                continue;
            };
            if f.node != n {
                continue;
            }
            let Some(answer) = f.answer.as_mut() else {
                continue;
            };
            let ready = match answer {
                Answer::Apply(fut) => fut.try_take().map(Answered::Apply),
                Answer::Read(fut) => fut.try_take().map(Answered::Read),
                Answer::Barrier(fut) => fut.try_take().map(Answered::Barrier),
            };
            if let Some(result) = ready {
                self.on_answer(c, n, result)?;
            }
        }
        Ok(())
    }

    /// Durability of what was said: a message never carries a term above its sender's durable
    /// term (pre-votes, which propose a term, and refusals, which promise nothing, excepted),
    /// and an AppendEntries success is remembered, so that losing what it acknowledged shows.
    fn check_said(&mut self, n: usize, m: &Message) -> Result<(), String> {
        use ringraft_net::message::{AppendEntriesResponse, AppendResult, Body};
        let exempt = matches!(
            m.body,
            Body::PreVote { .. }
                | Body::PreVoteResponse { .. }
                | Body::RequestVoteResponse { granted: false }
        );
        let node = &mut self.nodes[n];
        let durable = lock(&node.disk).durable_term();
        if !exempt && m.term > durable {
            return Err(format!(
                "durability of what was said: n{} sent {:?} in {} with only {durable} durable",
                n + 1,
                m.body,
                m.term
            ));
        }
        if let Body::AppendEntriesResponse(AppendEntriesResponse {
            result: AppendResult::Success { match_index },
            ..
        }) = m.body
        {
            let term_there = node.core().and_then(|c| c.log().term_at(match_index));
            let newer = node
                .acked
                .is_none_or(|a| (m.term, match_index) > (a.term, a.index));
            if newer {
                node.acked = Some(Acked {
                    term: m.term,
                    index: match_index,
                    entry_term: term_there,
                });
            }
        }
        Ok(())
    }

    pub(super) fn send(&mut self, m: Message) {
        let (from, to) = (m.from.0 as usize - 1, m.to.0 as usize - 1);
        if to < self.nodes.len() && !self.nodes[to].is_up() {
            // Connection refused: the sender's transport reports the peer unreachable.
            let at = self.now.plus_nanos(self.rng.range(MS / 20, MS));
            self.schedule(
                at,
                Ev::Unreachable {
                    node: from,
                    peer: m.to,
                },
            );
            return;
        }
        if to >= self.nodes.len() || self.blocked.contains(&(from, to)) {
            return;
        }
        if self.rng.below(1000) < self.drop_per_mille {
            return;
        }
        let copies = if self.rng.below(1000) < self.duplicate_per_mille {
            2
        } else {
            1
        };
        for copy in 0..copies {
            let delay = if copy == 1 && self.rng.chance(1, 3) {
                // A stale copy arriving long after: old answers make a leader resend what a
                // follower already holds (snapshots to followers with a matching suffix).
                self.rng.range(50 * MS, 400 * MS)
            } else if self.rng.chance(1, 20) {
                self.rng.range(MS, 40 * MS)
            } else {
                self.rng.range(MS / 10, 2 * MS)
            };
            let at = self.now.plus_nanos(delay);
            self.schedule(at, Ev::Deliver(Box::new(m.clone())));
        }
    }

    /// Counts the last chunk of a snapshot arriving at node `n`: a staged user restore, or an
    /// install over a log that already holds the snapshot's last entry and more (a rare path:
    /// the leader resent what the follower held).
    pub(super) fn note_install(&mut self, n: usize, m: &Message) {
        let ringraft_net::message::Body::InstallSnapshot(chunk) = &m.body else {
            return;
        };
        if !chunk.done {
            return;
        }
        if chunk.stage {
            self.restores_streamed += 1;
            return;
        }
        let last = chunk.meta.last;
        let matching = self.nodes[n].core().is_some_and(|c| {
            c.log().term_at(last.index) == Some(last.term) && c.log().last_index() > last.index
        });
        self.installs_over_matching_suffix += u64::from(matching);
    }
}

/// A node never loses entries it acknowledged to the leader of its current term: until it
/// has seen a newer term, its log still holds the acknowledged entry (or a snapshot past it),
/// across truncations, snapshot installs and restarts. A later leader may legitimately
/// overwrite what was never committed, so a newer term ends the obligation, even if a crash
/// then loses that term change (the disk model may keep a torn batch's truncation without
/// its hard state).
pub(super) fn check_acknowledged_entries(node: &SimNode) -> Result<(), String> {
    let (Some(core), Some(acked)) = (node.core(), node.acked) else {
        return Ok(());
    };
    if node.term_seen.max(core.term()) != acked.term || acked.index <= core.log().prev().index {
        return Ok(());
    }
    let holds = match acked.entry_term {
        Some(term) => core.log().term_at(acked.index) == Some(term),
        None => core.log().last_index() >= acked.index,
    };
    if holds {
        return Ok(());
    }
    Err(format!(
        "durability of what was said: {} acknowledged its log through {} (term {:?}) in {} \
         but now holds {:?} there (last {})",
        node.id,
        acked.index,
        acked.entry_term,
        acked.term,
        core.log().term_at(acked.index),
        core.log().last_log_id()
    ))
}
