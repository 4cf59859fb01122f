//! The simulated clients: closed-loop puts, reads and compare-and-sets, with every invocation
//! and completion recorded for the linearizability check.

use super::*;

impl World {
    pub(super) fn client_next(&mut self, c: usize) -> Result<(), String> {
        if self.clients[c].current.is_some() {
            return Ok(());
        }
        if let Some(at) = self.lull() {
            self.schedule(at, Ev::ClientNext { client: c });
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
        if !self.nodes[node].is_up() {
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
            answer: None,
        });
        let timeout = self.now.plus_nanos(2000 * MS);
        self.schedule(timeout, Ev::ClientTimeout { client: c, token });
        let at = self.now.plus_nanos(self.rng.range(MS / 20, MS / 2));
        self.schedule(
            at,
            Ev::Request {
                node,
                client: c,
                token,
            },
        );
        Ok(())
    }

    /// Client `c`'s request `token` reaches node `n`: it becomes a call of the `Raft` API's
    /// kind (apply, read index, lease read or barrier) on the node's submission queue.
    pub(super) fn request_arrives(&mut self, n: usize, c: usize, token: u64) -> Result<(), String> {
        let Some(f) = self.clients[c].current.as_ref() else {
            return Ok(());
        };
        if f.token != token || f.node != n {
            return Ok(());
        }
        let Some(running) = self.nodes[n].running.as_ref() else {
            // The node crashed while the request travelled: the client's crash handling
            // already resolved it.
            return Ok(());
        };
        let op = self.history[f.history].op.clone();
        let lease = self.lease_read && self.rng.chance(1, 2);
        // hashicorp's other linearizable read: a barrier, then the local state machine.
        let barrier = !lease && self.rng.chance(1, 4);
        let (command, answer) = match op {
            KvOp::Get { .. } if barrier => {
                let (tx, fut) = crate::api::future::channel(|| Err(ApplyError::Shutdown));
                let reply = crate::node::Reply::Barrier(tx);
                (
                    crate::node::Command::Barrier { reply },
                    Answer::Barrier(fut),
                )
            }
            KvOp::Get { .. } => {
                let (tx, fut) = crate::api::future::channel(|| Err(ReadError::Shutdown));
                let reply = crate::node::Reply::Read(tx);
                (
                    crate::node::Command::Read { lease, reply },
                    Answer::Read(fut),
                )
            }
            _ => {
                let (tx, fut) = crate::api::future::channel(|| Err(ApplyError::Shutdown));
                let command = crate::node::Command::Apply {
                    commands: vec![kv::encode(token, &op)],
                    extensions: Vec::new(),
                    reply: crate::node::Reply::Apply(tx),
                };
                (command, Answer::Apply(fut))
            }
        };
        if matches!(op, KvOp::Get { .. }) {
            // Its answer may not be older than what was committed anywhere now.
            self.read_floor.insert(token, self.checker.max_commit());
        }
        self.log(|| format!("n{} receives {op:?} ({token})", n + 1));
        submit(&running.shared, command)?;
        if let Some(f) = self.clients[c].current.as_mut() {
            f.answer = Some(answer);
        }
        self.turn(n)
    }

    /// Client `c`'s answer from node `n` arrived.
    pub(super) fn on_answer(&mut self, c: usize, n: usize, answer: Answered) -> Result<(), String> {
        let Some(f) = self.clients[c].current.as_ref() else {
            return Ok(());
        };
        let (token, history) = (f.token, f.history);
        self.hash(&[10, self.now.0, c as u64, token]);
        let floor = self.read_floor.remove(&token);
        let (read, error) = match answer {
            Answered::Apply(Ok(Applied { index, response })) => {
                let Some((op_id, term, result)) = super::super::node::decode_response(&response)
                else {
                    return Err(format!("n{}: undecodable response to {token}", n + 1));
                };
                if op_id != token {
                    return Err(format!(
                        "acknowledged write lost: op {token} committed at {index} but n{} \
                         applied op {op_id} there",
                        n + 1
                    ));
                }
                self.log(|| format!("n{} applied {token} at {index}", n + 1));
                self.acked_writes.push((history, LogId::new(term, index)));
                self.client_done(c, Some(result));
                return Ok(());
            }
            Answered::Read(Ok(index)) | Answered::Barrier(Ok(index)) => (Some(index), None),
            Answered::Apply(Err(e)) | Answered::Barrier(Err(e)) => (None, Some(Refusal::from(e))),
            Answered::Read(Err(e)) => (None, Some(Refusal::from(e))),
        };
        if let Some(read) = read {
            if let Some(floor) = floor.filter(|floor| read < *floor) {
                return Err(format!(
                    "stale read: n{} answered read {token} at index {read}, but {floor} was \
                     already committed when it arrived; nodes:{}",
                    n + 1,
                    self.describe_nodes()
                ));
            }
            let KvOp::Get { key } = self.history[history].op else {
                return Err(format!("read answer to a write ({token})"));
            };
            let value = lock(&self.nodes[n].machine).kv.get(key);
            self.log(|| format!("n{} read {token} at {read}: {value:?}", n + 1));
            self.client_done(c, Some(KvResult::Value(value)));
            return Ok(());
        }
        self.log(|| format!("n{} refused {token}: {error:?}", n + 1));
        match error {
            Some(Refusal::NotLeader(leader)) => {
                if let Some(f) = self.clients[c].current.take() {
                    self.discarded.insert(f.history);
                }
                self.clients[c].leader_guess = match leader {
                    Some(l) => l.0 as usize - 1,
                    None => self.rng.below(self.nodes.len() as u64) as usize,
                };
                let at = self.now.plus_nanos(self.rng.range(MS, 5 * MS));
                self.schedule(at, Ev::ClientNext { client: c });
            }
            Some(Refusal::Busy) => {
                // Certainly not executed: try again shortly.
                if let Some(f) = self.clients[c].current.take() {
                    self.discarded.insert(f.history);
                }
                let at = self.now.plus_nanos(self.rng.range(5 * MS, 20 * MS));
                self.schedule(at, Ev::ClientNext { client: c });
            }
            Some(Refusal::Unknown) => self.client_done(c, None),
            Some(Refusal::Unexpected(e)) => return Err(format!("unexpected request error: {e}")),
            None => {}
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

/// Why a node refused a client operation, as far as the client is concerned.
#[derive(Debug)]
enum Refusal {
    /// Certainly not executed; try the leader named.
    NotLeader(Option<NodeId>),
    /// Certainly not executed (a transfer or restore in progress); retry shortly.
    Busy,
    /// Maybe executed: the outcome is unknown.
    Unknown,
    /// A refusal the simulated clients never provoke.
    Unexpected(String),
}

impl From<ApplyError> for Refusal {
    fn from(e: ApplyError) -> Refusal {
        match e {
            ApplyError::NotLeader { leader } => Refusal::NotLeader(leader),
            ApplyError::LeadershipTransferInProgress | ApplyError::RestoreInProgress => {
                Refusal::Busy
            }
            ApplyError::LeadershipLost | ApplyError::Shutdown => Refusal::Unknown,
            e => Refusal::Unexpected(e.to_string()),
        }
    }
}

impl From<ReadError> for Refusal {
    fn from(e: ReadError) -> Refusal {
        match e {
            ReadError::NotLeader { leader } => Refusal::NotLeader(leader),
            ReadError::LeadershipLost | ReadError::Shutdown => Refusal::Unknown,
            e => Refusal::Unexpected(e.to_string()),
        }
    }
}

/// Puts `command` on a simulated node's submission queue (never full: the simulator's
/// clients and operators are few).
pub(super) fn submit(shared: &Shared, command: crate::node::Command) -> Result<(), String> {
    shared
        .queue
        .push(command, Duration::from_nanos(1), &shared.signal)
        .map_err(|e| format!("submission queue refused a request: {e:?}"))
}
