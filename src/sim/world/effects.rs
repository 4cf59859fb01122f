//! Stepping a node and performing its effects: the simulated glue between a core and its disk,
//! network, state machine and snapshot store.

use super::super::chunks::read_chunk;
use super::*;

impl World {
    pub(super) fn step(&mut self, n: usize, input: Input) -> Result<(), String> {
        let now = self.now;
        let Some(core) = self.nodes[n].core.as_mut() else {
            return Ok(());
        };
        core.step(now, input);
        self.drain(n)
    }

    /// Performs a node's effects until it has none left, then runs the checkers.
    pub(super) fn drain(&mut self, n: usize) -> Result<(), String> {
        loop {
            let Some(core) = self.nodes[n].core.as_mut() else {
                return Ok(());
            };
            let effects = core.take_effects();
            if effects.is_empty() {
                break;
            }
            // Record commits before effects run: a snapshot may compact the entries away.
            let node = &mut self.nodes[n];
            if let Some(core) = node.core.as_ref() {
                self.checker.observe_commits(core, &mut node.commit_seen)?;
            }
            for effect in effects {
                self.perform(n, effect)?;
            }
        }
        let node = &mut self.nodes[n];
        let Some(core) = node.core.as_ref() else {
            return Ok(());
        };
        self.checker.after_step(core, &mut node.commit_seen)?;
        node.term_seen = node.term_seen.max(core.term());
        check_acknowledged_entries(node)?;
        let next = core.next_timer().max(self.now);
        if node.timer_at.is_none_or(|t| t > next) {
            node.timer_at = Some(next);
            self.schedule(next, Ev::Timer { node: n });
        }
        Ok(())
    }

    pub(super) fn perform(&mut self, n: usize, effect: Effect) -> Result<(), String> {
        match effect {
            Effect::Persist(batch) => {
                let (low, high) = self.nodes[n].disk_latency;
                let latency = self.rng.range(low, high);
                // Crash at the worst moments ("buggify"): while a vote or a term change is
                // being written, or while a leader's entries are on their way to disk.
                let odds = if batch.hard_state.is_some() { 8 } else { 40 };
                if !self.healed && self.config.faults && self.rng.chance(1, odds) {
                    let at = self.now.plus_nanos(self.rng.range(0, latency));
                    let boot = self.nodes[n].boot;
                    self.schedule(at, Ev::Crash { node: n, boot });
                }
                let node = &mut self.nodes[n];
                let done = node.disk_free_at.max(self.now).plus_nanos(latency);
                node.disk_free_at = done;
                let (boot, seq) = (node.boot, batch.seq);
                node.disk.submit(batch);
                self.schedule(done, Ev::DiskDone { node: n, boot, seq });
            }
            Effect::Send(m) => {
                self.check_said(n, &m)?;
                self.send(m);
            }
            Effect::Apply { entries } => {
                let mut last = self.nodes[n].applied;
                for entry in &entries {
                    if entry.id.index != last.index.next() {
                        return Err(format!("apply gap: {} after {last}", entry.id));
                    }
                    self.checker.on_apply(self.nodes[n].id, entry)?;
                    if entry.kind == EntryKind::Restore {
                        // Its data must be staged here, intact. The simulated external
                        // snapshot stands for the state machine's own state, so the kv model
                        // is unchanged (the runtime's tests restore real state).
                        let staged = self.nodes[n].disk.staged(entry.id);
                        if staged.map(|(_, data)| data) != Some(&restore_blob(entry.id)) {
                            return Err(format!(
                                "n{} applies restore {} without its staged data",
                                n + 1,
                                entry.id
                            ));
                        }
                        self.restores_applied += 1;
                    }
                    if entry.kind == EntryKind::Command {
                        let Some((op_id, op)) = kv::decode(&entry.data) else {
                            return Err(format!("undecodable command at {}", entry.id));
                        };
                        let result = self.nodes[n].kv.apply_at(entry.id.index.0, op_id, &op);
                        let now = self.now.0;
                        self.first_applied
                            .entry(op_id)
                            .or_insert_with(|| (now, result));
                    }
                    last = entry.id;
                }
                self.nodes[n].applied = last;
                let now = self.now;
                if let Some(core) = self.nodes[n].core.as_mut() {
                    core.step(now, Input::Applied { index: last.index });
                }
                self.maybe_take_snapshot(n);
                self.wake_clients(n)?;
            }
            Effect::ReadSnapshotChunk {
                peer,
                meta,
                stage,
                offset,
                max_bytes,
            } => {
                let bytes = self.stored_bytes(n, &meta, stage)?;
                let (data, done) = read_chunk(&bytes, offset, max_bytes);
                let input = Input::SnapshotChunkRead {
                    peer,
                    snapshot: meta.last,
                    offset,
                    data,
                    done,
                };
                self.step(n, input)?;
            }
            Effect::WriteSnapshotChunk {
                meta,
                offset,
                data,
                done,
                stage,
            } => {
                let node = &mut self.nodes[n];
                if done && !stage {
                    // Before the core installs it: does the log already hold a matching suffix?
                    let matching = node.core.as_ref().is_some_and(|c| {
                        c.log().term_at(meta.last.index) == Some(meta.last.term)
                            && c.log().last_index() > meta.last.index
                    });
                    self.installs_over_matching_suffix += u64::from(matching);
                }
                let (next_offset, whole) = node
                    .receiving
                    .accept(&meta, offset, &data, done)
                    .map_err(|e| format!("{n}: {e}"))?;
                if let (true, Some((meta, buffer))) = (stage, &whole) {
                    if buffer[..] != restore_blob(meta.last)[..] {
                        return Err(format!(
                            "n{}: staged restore {} arrived damaged",
                            n + 1,
                            meta.last
                        ));
                    }
                    node.disk.stage(meta.clone(), Bytes::from(buffer.clone()));
                    self.restores_streamed += 1;
                } else if let Some((meta, buffer)) = whole {
                    let Some(kv) = Kv::decode(&buffer) else {
                        return Err(format!(
                            "{n}: received snapshot {} does not decode",
                            meta.last
                        ));
                    };
                    node.disk.save_snapshot(meta, kv);
                }
                let input = Input::SnapshotChunkWritten {
                    snapshot: meta.last,
                    next_offset,
                    done,
                };
                self.step(n, input)?;
            }
            Effect::RestoreSnapshot { meta } => {
                let node = &mut self.nodes[n];
                let Some((stored, kv)) = node.disk.snapshot() else {
                    return Err(format!("{n}: restore of a snapshot it does not have"));
                };
                if stored.last != meta.last {
                    return Err(format!(
                        "{n}: restore of {} but holds {}",
                        meta.last, stored.last
                    ));
                }
                node.kv = kv.clone();
                node.applied = meta.last;
                self.installs += 1;
                self.wake_clients(n)?;
            }
            Effect::StageRestore { token, mut meta } => {
                let data = restore_blob(meta.last);
                meta.size = data.len() as u64;
                meta.id = format!("restore-{}-{}", meta.last.term.0, meta.last.index.0);
                self.nodes[n].disk.stage(meta.clone(), data);
                self.hash(&[17, self.now.0, n as u64, meta.last.index.0]);
                self.step(n, Input::RestoreStaged { token, meta })?;
            }
            Effect::DropStagedRestores { through } => self.nodes[n].disk.drop_staged(through),
            Effect::Reply { token, result } => self.on_reply(n, token, result)?,
            Effect::Event(e) => {
                self.log(|| format!("n{} {e:?}", n + 1));
                if let Event::RoleChanged { role, term } = e {
                    let code = match role {
                        Role::Follower => 0,
                        Role::PreCandidate => 1,
                        Role::Candidate => 2,
                        Role::Leader => 3,
                    };
                    self.hash(&[8, self.now.0, n as u64, code, term.0]);
                    // New leaders die young now and then, leaving entries of their term on a
                    // minority: the raw material of Figure 8.
                    if role == Role::Leader
                        && !self.healed
                        && self.config.faults
                        && self.rng.chance(1, 2)
                    {
                        let at = self.now.plus_nanos(self.rng.range(0, 15 * MS));
                        let boot = self.nodes[n].boot;
                        self.schedule(at, Ev::Crash { node: n, boot });
                    }
                    // A membership change right after an election: with the crashes above,
                    // several leaders in quick succession each start one.
                    if role == Role::Leader
                        && !self.healed
                        && self.config.churn
                        && self.rng.chance(1, 4)
                    {
                        let at = self.now.plus_nanos(self.rng.range(0, 5 * MS));
                        self.schedule(at, Ev::ChurnNow);
                    }
                }
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
        let durable = node.disk.durable_term();
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
            let term_there = node
                .core
                .as_ref()
                .and_then(|c| c.log().term_at(match_index));
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
        if to < self.nodes.len() && self.nodes[to].core.is_none() {
            // Connection refused: the sender's transport reports the peer unreachable.
            let at = self.now.plus_nanos(self.rng.range(MS / 20, MS));
            let input = Input::PeerUnreachable { peer: m.to };
            self.schedule(at, Ev::Request { node: from, input });
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
            self.schedule(at, Ev::Deliver(m.clone()));
        }
    }

    /// The bytes of node `n`'s staged restore (`stage`) or snapshot `meta.last`, for streaming.
    fn stored_bytes(&self, n: usize, meta: &SnapshotMeta, stage: bool) -> Result<Bytes, String> {
        if stage {
            let Some((_, data)) = self.nodes[n].disk.staged(meta.last) else {
                return Err(format!(
                    "n{}: asked to stream restore {} it has not staged",
                    n + 1,
                    meta.last
                ));
            };
            return Ok(data.clone());
        }
        let Some((stored, kv)) = self.nodes[n].disk.snapshot() else {
            return Err(format!("{n}: asked to read a snapshot it does not have"));
        };
        if stored.last != meta.last {
            return Err(format!(
                "{n}: asked for snapshot {} but holds {}",
                meta.last, stored.last
            ));
        }
        Ok(kv.encode())
    }

    /// Takes a snapshot when the node applied `snapshot_every` entries since its last one.
    pub(super) fn maybe_take_snapshot(&mut self, n: usize) {
        let node = &self.nodes[n];
        let Some(core) = node.core.as_ref() else {
            return;
        };
        let last_snapshot = node.disk.snapshot().map_or(Index(0), |(m, _)| m.last.index);
        if self.snapshot_every == 0 || node.applied.index.0 < last_snapshot.0 + self.snapshot_every
        {
            return;
        }
        let (configuration_index, configuration) = core.configuration_at(node.applied.index);
        let bytes = node.kv.encode();
        let meta = SnapshotMeta {
            id: format!("{}-{}", node.applied.term.0, node.applied.index.0),
            last: node.applied,
            configuration,
            configuration_index,
            size: bytes.len() as u64,
        };
        let kv = node.kv.clone();
        self.nodes[n].disk.save_snapshot(meta.clone(), kv);
        self.snapshots += 1;
        self.hash(&[11, self.now.0, n as u64, meta.last.index.0]);
        let now = self.now;
        if let Some(core) = self.nodes[n].core.as_mut() {
            core.step(now, Input::SnapshotTaken { meta });
        }
    }
}

/// The simulated external snapshot a user restore stages for the entry `id`: bytes that depend
/// only on the id (and of varying length, so transfers take one or several chunks), so any
/// node can check that what it staged and applies is intact.
pub(crate) fn restore_blob(id: LogId) -> Bytes {
    let len = 40 + (id.index.0.wrapping_mul(7919) ^ id.term.0.wrapping_mul(104_729)) % 600;
    let seed = id.index.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ id.term.0;
    (0..len)
        .map(|i| (seed.rotate_left((i % 64) as u32) >> 3) as u8 ^ i as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// A node never loses entries it acknowledged to the leader of its current term: until it
/// has seen a newer term, its log still holds the acknowledged entry (or a snapshot past it),
/// across truncations, snapshot installs and restarts. A later leader may legitimately
/// overwrite what was never committed, so a newer term ends the obligation, even if a crash
/// then loses that term change (the disk model may keep a torn batch's truncation without
/// its hard state).
pub(super) fn check_acknowledged_entries(node: &SimNode) -> Result<(), String> {
    let (Some(core), Some(acked)) = (node.core.as_ref(), node.acked) else {
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
