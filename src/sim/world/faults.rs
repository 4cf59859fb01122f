//! Faults and operations the simulator injects: crashes, partitions, pauses, loss and
//! duplication, membership churn, leadership transfers, and the final healing.

use super::*;

impl World {
    pub(super) fn heal_everything(&mut self) -> Result<(), String> {
        self.healed = true;
        self.blocked.clear();
        self.drop_per_mille = 0;
        self.duplicate_per_mille = 0;
        for n in 0..self.nodes.len() {
            if !self.nodes[n].is_up() {
                self.boot(n)?;
            }
        }
        for c in &mut self.clients {
            c.ok_since_heal = 0;
        }
        Ok(())
    }

    pub(super) fn crash(&mut self, n: usize) -> Result<(), String> {
        // The process dies: its shard, state machine, worker queue and connections with it.
        if self.nodes[n].running.take().is_none() {
            return Ok(());
        }
        self.hash(&[6, self.now.0, n as u64]);
        self.log(|| format!("n{} crashes", n + 1));
        self.nodes[n].down_since = Some(self.now);
        let mut rng = Rng::new(self.rng.next_u64());
        lock(&self.nodes[n].disk).crash(&mut rng)?;
        *lock(&self.nodes[n].wire) = Wire::default();
        self.nodes[n].timer_at = None;
        self.nodes[n].role = (Role::Follower, ringraft_storage::Term(0));
        // What queued up for the process while it was paused dies with it.
        self.nodes[n].deferred.clear();
        // Clients waiting on the crashed node learn nothing: their outcome is unknown.
        for c in 0..self.clients.len() {
            if self.clients[c]
                .current
                .as_ref()
                .is_some_and(|f| f.node == n)
            {
                self.client_done(c, None);
            }
        }
        Ok(())
    }

    pub(super) fn live_leader(&self) -> Option<usize> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                n.core()
                    .filter(|c| c.role() == Role::Leader)
                    .map(|c| (i, c.term()))
            })
            .max_by_key(|(_, t)| *t)
            .map(|(i, _)| i)
    }

    /// Submits an operator's request to node `n` and turns it. The answer is not awaited:
    /// the checkers judge its effects.
    fn operate(&mut self, n: usize, command: crate::node::Command) -> Result<(), String> {
        let Some(running) = self.nodes[n].running.as_ref() else {
            return Ok(());
        };
        super::clients::submit(&running.shared, command)?;
        self.turn(n)
    }

    pub(super) fn churn(&mut self) -> Result<(), String> {
        if self.healed {
            return Ok(());
        }
        let at = self.now.plus_nanos(self.rng.range(50 * MS, 500 * MS));
        self.schedule(at, Ev::Churn);
        self.change_membership()
    }

    /// Cuts node `n` off from every other node, both ways, until the next heal.
    pub(super) fn isolate(&mut self, n: usize) {
        self.hash(&[18, self.now.0, n as u64]);
        self.log(|| format!("n{} isolated", n + 1));
        for other in 0..self.nodes.len() {
            if other != n {
                self.blocked.insert((n, other));
                self.blocked.insert((other, n));
            }
        }
        let at = self.now.plus_nanos(self.rng.range(50 * MS, 600 * MS));
        self.schedule(at, Ev::Heal);
    }

    /// Asks the live leader for one random membership change.
    pub(super) fn change_membership(&mut self) -> Result<(), String> {
        if self.healed {
            return Ok(());
        }
        let Some(l) = self.live_leader() else {
            return Ok(());
        };
        let Some(core) = self.nodes[l].core() else {
            return Ok(());
        };
        let (latest_index, latest) = core.latest_configuration();
        let pick = self.rng.below(self.nodes.len() as u64) as usize;
        let id = self.nodes[pick].id;
        let change = match self.rng.below(5) {
            0 | 1 => MembershipChange::AddVoter {
                id,
                address: format!("n{}", id.0),
            },
            2 => MembershipChange::AddNonvoter {
                id,
                address: format!("n{}", id.0),
            },
            3 => MembershipChange::DemoteVoter { id },
            _ => {
                // Keep at least two voters most of the time so the cluster stays interesting;
                // the leader removes itself now and then.
                if latest.voters().count() <= 2 && self.rng.chance(3, 4) {
                    MembershipChange::AddVoter {
                        id,
                        address: format!("n{}", id.0),
                    }
                } else if self.rng.chance(1, 4) {
                    MembershipChange::RemoveServer {
                        id: self.nodes[l].id,
                    }
                } else {
                    MembershipChange::RemoveServer { id }
                }
            }
        };
        let prev_index = if self.rng.chance(1, 2) {
            Some(latest_index)
        } else {
            None
        };
        self.log(|| format!("n{} asked to {change:?} (prev {prev_index:?})", l + 1));
        self.hash(&[12, self.now.0, l as u64, id.0]);
        let (reply, _answer) =
            crate::api::future::channel(|| Err(crate::api::error::MembershipError::Shutdown));
        let command = crate::node::Command::Membership {
            change,
            prev_index,
            timeout: Duration::from_millis(500),
            reply: crate::node::Reply::Membership(reply),
        };
        self.operate(l, command)
    }

    /// Reloads every live node's timing through `reload_config` (election timeout 100–300
    /// ms, heartbeat timeout half to all of it; the lease stays, no longer than any of them).
    pub(super) fn retime(&mut self) -> Result<(), String> {
        if self.healed {
            return Ok(());
        }
        let at = self.now.plus_nanos(self.rng.range(500 * MS, 3000 * MS));
        self.schedule(at, Ev::Retime);
        let election = self.rng.range(100, 300);
        let lease = self.config_template.leader_lease_timeout.as_millis() as u64;
        let heartbeat = self.rng.range((election / 2).max(lease), election + 1);
        let t = &mut self.config_template;
        t.election_timeout = Duration::from_millis(election);
        t.heartbeat_timeout = Duration::from_millis(heartbeat);
        t.trailing_logs = self.rng.below(8);
        let reloadable = crate::api::config::ReloadableConfig::from_config(t);
        self.hash(&[15, self.now.0, election, heartbeat, lease]);
        self.log(|| format!("all nodes retimed to {reloadable:?}"));
        // Nodes that are down now restart with the new timing (`config_template`), as a
        // reloaded config file would give them.
        for n in 0..self.nodes.len() {
            let (reply, _answer) =
                crate::api::future::channel(|| Err(crate::api::error::ReloadConfigError::Shutdown));
            self.operate(n, crate::node::Command::Reload { reloadable, reply })?;
        }
        Ok(())
    }

    pub(super) fn transfer(&mut self) -> Result<(), String> {
        if self.healed {
            return Ok(());
        }
        let at = self.now.plus_nanos(self.rng.range(200 * MS, 1500 * MS));
        self.schedule(at, Ev::Transfer);
        let Some(l) = self.live_leader() else {
            return Ok(());
        };
        let target = if self.rng.chance(1, 2) {
            None
        } else {
            Some(self.nodes[self.rng.below(self.nodes.len() as u64) as usize].id)
        };
        self.log(|| format!("n{} asked to transfer leadership to {target:?}", l + 1));
        self.hash(&[13, self.now.0, l as u64]);
        if self.network_faults && self.rng.chance(1, 3) {
            // The old leader is cut off right after its TimeoutNow left (or while the target
            // catches up), with clients still sending it reads.
            let at = self.now.plus_nanos(self.rng.range(MS, 5 * MS));
            self.schedule(at, Ev::Isolate { node: l });
        }
        let (reply, _answer) =
            crate::api::future::channel(|| Err(crate::api::error::TransferError::Shutdown));
        let reply = crate::node::Reply::Transfer(reply);
        self.operate(l, crate::node::Command::Transfer { target, reply })
    }

    /// Asks the leader to restore an external snapshot (see `restore_blob`).
    pub(super) fn user_restore(&mut self) -> Result<(), String> {
        if self.healed {
            return Ok(());
        }
        let at = self.now.plus_nanos(self.rng.range(300 * MS, 2000 * MS));
        self.schedule(at, Ev::Restore);
        let Some(l) = self.live_leader() else {
            return Ok(());
        };
        self.log(|| format!("n{} asked to restore a snapshot", l + 1));
        self.hash(&[16, self.now.0, l as u64]);
        self.restores += 1;
        let nonce = self.rng.next_u64();
        let data = std::io::Cursor::new(super::super::node::restore_blob(nonce));
        let (reply, _answer) =
            crate::api::future::channel(|| Err(crate::api::error::RestoreError::Shutdown));
        let reply = crate::node::Reply::Restore(reply);
        let command = crate::node::Command::Restore {
            data: Box::new(data),
            reply,
        };
        self.operate(l, command)
    }

    /// The nodes that `leader`'s latest configuration lists as non-voters.
    fn nonvoters_of(&self, leader: Option<usize>) -> Vec<usize> {
        let Some(core) = leader.and_then(|l| self.nodes[l].core()) else {
            return Vec::new();
        };
        let (_, latest) = core.latest_configuration();
        (0..self.nodes.len())
            .filter(|&i| {
                let id = self.nodes[i].id;
                latest.server(id).is_some() && !latest.is_voter(id)
            })
            .collect()
    }

    pub(super) fn fault(&mut self) -> Result<(), String> {
        if self.healed {
            return Ok(());
        }
        let n = self.nodes.len();
        // Half the faults aim at the leader: that is where the interesting bugs live.
        let leader = self
            .nodes
            .iter()
            .position(|x| x.core().is_some_and(|c| c.role() == Role::Leader));
        let victim = match leader {
            Some(l) if self.rng.chance(1, 2) => l,
            _ => self.rng.below(n as u64) as usize,
        };
        match self.rng.below(6) {
            0 => {
                self.crash(victim)?;
                self.note_host(HostEvent::Crashed(victim));
                let at = self.now.plus_nanos(self.rng.range(5 * MS, 800 * MS));
                self.schedule(at, Ev::Restart { node: victim });
            }
            1 | 2 => {
                // A random split (or one isolated node, or the leader with the non-voters).
                let isolate_one = self.rng.chance(1, 2);
                let nonvoters = self.nonvoters_of(leader);
                let with_nonvoters = !nonvoters.is_empty() && self.rng.chance(1, 2);
                let side: Vec<bool> = (0..n)
                    .map(|i| {
                        if with_nonvoters {
                            Some(i) == leader || nonvoters.contains(&i)
                        } else if isolate_one {
                            i == victim
                        } else {
                            self.rng.chance(1, 2)
                        }
                    })
                    .collect();
                self.blocked.clear();
                for a in 0..n {
                    for b in 0..n {
                        if side[a] != side[b] {
                            // Sometimes only one direction is cut.
                            if self.rng.chance(1, 5) && a < b {
                                continue;
                            }
                            self.blocked.insert((a, b));
                        }
                    }
                }
                let at = self.now.plus_nanos(self.rng.range(50 * MS, 1500 * MS));
                self.schedule(at, Ev::Heal);
            }
            3 => {
                // A pause (GC, SIGSTOP), sometimes past the election timeout.
                let until = self.now.plus_nanos(self.rng.range(10 * MS, 400 * MS));
                // Never shorten a pause: events already deferred to its end keep their order.
                let node = &mut self.nodes[victim];
                node.paused_until = node.paused_until.max(until);
                let at = node.paused_until;
                self.schedule(at, Ev::Resume { node: victim });
                self.note_host(HostEvent::Paused(victim, at));
            }
            4 => {
                self.drop_per_mille = if self.rng.chance(1, 2) {
                    0
                } else {
                    self.rng.below(300)
                };
                self.duplicate_per_mille = self.rng.below(50);
            }
            _ => {
                self.blocked.clear();
            }
        }
        self.hash(&[7, self.now.0, victim as u64]);
        let at = self.now.plus_nanos(self.rng.range(10 * MS, 250 * MS));
        self.schedule(at, Ev::Fault);
        Ok(())
    }
}
