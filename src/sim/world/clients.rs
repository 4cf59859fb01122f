//! The simulated clients: closed-loop puts, reads and compare-and-sets, with every invocation
//! and completion recorded for the linearizability check.

use super::*;

impl World {
    pub(super) fn client_next(&mut self, c: usize) -> Result<(), String> {
        if self.clients[c].current.is_some() {
            return Ok(());
        }
        let key = self.rng.below(3);
        let op = match self.rng.below(10) {
            0..=3 => KvOp::Get { key },
            4..=7 => {
                self.next_value += 1;
                KvOp::Put {
                    key,
                    value: self.next_value,
                }
            }
            _ => {
                self.next_value += 1;
                let expected = if self.rng.chance(1, 4) {
                    None
                } else {
                    Some(self.rng.range(1, self.next_value))
                };
                KvOp::Cas {
                    key,
                    expected,
                    new: self.next_value,
                }
            }
        };
        let node = self.clients[c].leader_guess;
        let token = self.next_token;
        self.next_token += 1;
        self.history.push(Operation {
            client: c as u64,
            op: op.clone(),
            invoke: self.now.0,
            completion: None,
        });
        let history = self.history.len() - 1;
        self.history_tokens.push(token);
        self.hash(&[9, self.now.0, c as u64, node as u64, token]);
        if self.nodes[node].core.is_none() {
            // Connection refused: certainly not executed.
            self.discarded.insert(history);
            self.clients[c].leader_guess = self.rng.below(self.nodes.len() as u64) as usize;
            let at = self.now.plus_nanos(self.rng.range(MS, 10 * MS));
            self.schedule(at, Ev::ClientNext { client: c });
            return Ok(());
        }
        self.clients[c].current = Some(InFlight {
            token,
            node,
            history,
            waiting: Waiting::Reply,
        });
        let timeout = self.now.plus_nanos(2000 * MS);
        self.schedule(timeout, Ev::ClientTimeout { client: c, token });
        let input = match op {
            KvOp::Get { .. } if self.lease_read && self.rng.chance(1, 2) => Input::LeaseRead {
                token: Token(token),
            },
            // hashicorp's other linearizable read: a barrier, then the local state machine.
            KvOp::Get { .. } if self.rng.chance(1, 4) => Input::Barrier {
                token: Token(token),
            },
            KvOp::Get { .. } => Input::ReadIndex {
                token: Token(token),
            },
            _ => Input::Propose {
                token: Token(token),
                commands: vec![kv::encode(token, &op)],
                extensions: Vec::new(),
            },
        };
        let at = self.now.plus_nanos(self.rng.range(MS / 20, MS / 2));
        self.schedule(at, Ev::Request { node, input });
        Ok(())
    }

    pub(super) fn client_of(&self, n: usize, token: u64) -> Option<usize> {
        self.clients.iter().position(|c| {
            c.current
                .as_ref()
                .is_some_and(|f| f.token == token && f.node == n)
        })
    }

    pub(super) fn on_reply(
        &mut self,
        n: usize,
        token: Token,
        result: Result<Outcome, RequestError>,
    ) -> Result<(), String> {
        if token.0 >> 63 == 1 {
            self.log(|| format!("n{} admin reply {result:?}", n + 1));
        }
        let floor = self.read_floor.remove(&token.0);
        self.log(|| format!("n{} replies to {} with {result:?}", n + 1, token.0));
        let Some(c) = self.client_of(n, token.0) else {
            return Ok(());
        };
        if let (
            Some(floor),
            Ok(Outcome::ReadReady { index: read } | Outcome::Committed { last: read, .. }),
        ) = (floor, &result)
        {
            if *read < floor {
                return Err(format!(
                    "stale read: n{} answered read {} at index {read}, but {floor} was already \
                     committed when it arrived; nodes:{}",
                    n + 1,
                    token.0,
                    self.describe_nodes()
                ));
            }
        }
        self.hash(&[10, self.now.0, c as u64, token.0]);
        match result {
            Ok(Outcome::Committed { term, last, .. }) => {
                self.set_waiting(
                    c,
                    Waiting::Apply {
                        index: last,
                        committed: Some(LogId::new(term, last)),
                    },
                );
                self.wake_clients(n)
            }
            Ok(Outcome::ReadReady { index }) => {
                self.set_waiting(
                    c,
                    Waiting::Apply {
                        index,
                        committed: None,
                    },
                );
                self.wake_clients(n)
            }
            Ok(other @ (Outcome::LeaderVerified | Outcome::LeadershipTransferred)) => {
                Err(format!("unexpected reply to a client operation: {other:?}"))
            }
            Err(RequestError::NotLeader { leader }) => {
                if let Some(f) = self.clients[c].current.take() {
                    self.discarded.insert(f.history);
                }
                self.clients[c].leader_guess = match leader {
                    Some(l) => l.0 as usize - 1,
                    None => self.rng.below(self.nodes.len() as u64) as usize,
                };
                let at = self.now.plus_nanos(self.rng.range(MS, 5 * MS));
                self.schedule(at, Ev::ClientNext { client: c });
                Ok(())
            }
            Err(RequestError::TransferInProgress | RequestError::RestoreInProgress) => {
                // Certainly not executed: try again shortly.
                if let Some(f) = self.clients[c].current.take() {
                    self.discarded.insert(f.history);
                }
                let at = self.now.plus_nanos(self.rng.range(5 * MS, 20 * MS));
                self.schedule(at, Ev::ClientNext { client: c });
                Ok(())
            }
            Err(RequestError::LeadershipLost) => {
                self.client_done(c, None);
                Ok(())
            }
            Err(e) => Err(format!("unexpected request error: {e}")),
        }
    }

    pub(super) fn set_waiting(&mut self, c: usize, waiting: Waiting) {
        if let Some(f) = self.clients[c].current.as_mut() {
            f.waiting = waiting;
        }
    }

    /// Completes client operations waiting for node `n` to apply far enough.
    pub(super) fn wake_clients(&mut self, n: usize) -> Result<(), String> {
        for c in 0..self.clients.len() {
            let Some(f) = self.clients[c].current.as_ref() else {
                continue;
            };
            let Waiting::Apply { index, committed } = f.waiting else {
                continue;
            };
            if f.node != n || self.nodes[n].applied.index < index {
                continue;
            }
            let (token, history) = (f.token, f.history);
            let result = match self.history[history].op {
                KvOp::Get { key } => KvResult::Value(self.nodes[n].kv.get(key)),
                _ => match self.nodes[n].kv.result_at(index.0) {
                    Some((op_id, result)) if *op_id == token => result.clone(),
                    other => {
                        return Err(format!(
                            "acknowledged write lost: op {token} committed at {index} but {n} \
                             applied {other:?} there"
                        ))
                    }
                },
            };
            if let Some(id) = committed {
                self.acked_writes.push((history, id));
            }
            self.client_done(c, Some(result));
        }
        Ok(())
    }

    pub(super) fn client_done(&mut self, c: usize, result: Option<KvResult>) {
        let Some(f) = self.clients[c].current.take() else {
            return;
        };
        if result.is_none() {
            self.ops_unknown += 1;
        }
        if let Some(result) = result {
            self.history[f.history].completion = Some((self.now.0, result));
            if self.healed {
                self.clients[c].ok_since_heal += 1;
            }
        }
        let at = self.now.plus_nanos(self.rng.range(0, self.think_time_max));
        self.schedule(at, Ev::ClientNext { client: c });
    }
}
