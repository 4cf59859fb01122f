//! How fast the consensus core alone replicates: three cores in one thread, messages delivered
//! and writes made durable at once, so only the core's own work is measured (the ceiling the
//! node runtime can reach). A proposal of `batch` 64-byte commands goes to the leader, then
//! every effect is performed until the batch commits on the leader.
//!
//! `cargo bench --bench core_step` prints, per batch size, the median of 5 runs of committed
//! commands per second.
// Benchmarks measure wall-clock time by design.
#![allow(clippy::disallowed_methods)]

use bytes::Bytes;
use ringraft::core::{Core, CoreConfig, Effect, Input, Outcome, Role, Time, Token};
use ringraft_net::message::Message;
use ringraft_storage::{Configuration, NodeId};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

struct Cluster {
    cores: Vec<Core>,
    network: VecDeque<Message>,
    now: Time,
    committed: u64,
}

impl Cluster {
    fn new() -> Cluster {
        let ids = [NodeId(1), NodeId(2), NodeId(3)];
        let state = Core::bootstrap_state(&Configuration::voters_with_default_addresses(ids))
            .expect("bootstrap");
        let cores = ids
            .iter()
            .map(|&id| {
                let mut config = CoreConfig::new(id);
                config.max_append_entries = 1024;
                config.max_append_bytes = 4 << 20;
                Core::new(config, state.clone(), Time(0)).expect("core")
            })
            .collect();
        let mut cluster = Cluster {
            cores,
            network: VecDeque::new(),
            now: Time(0),
            committed: 0,
        };
        cluster.now = Time(3_000_000_000);
        cluster.step(0, Input::Tick);
        cluster.run();
        assert_eq!(cluster.cores[0].role(), Role::Leader);
        cluster
    }

    fn step(&mut self, i: usize, input: Input) {
        self.cores[i].step(self.now, input);
        self.drain(i);
    }

    fn drain(&mut self, i: usize) {
        loop {
            let effects = self.cores[i].take_effects();
            if effects.is_empty() {
                return;
            }
            for effect in effects {
                match effect {
                    Effect::Persist(batch) => {
                        self.cores[i].step(self.now, Input::Persisted { seq: batch.seq })
                    }
                    Effect::Send(m) => self.network.push_back(m),
                    Effect::Apply { entries } => {
                        if let Some(last) = entries.last() {
                            let index = last.id.index;
                            self.cores[i].step(self.now, Input::Applied { index });
                        }
                    }
                    Effect::Reply {
                        result: Ok(Outcome::Committed { first, last, .. }),
                        ..
                    } => {
                        self.committed += last.0 - first.0 + 1;
                    }
                    _ => {}
                }
            }
        }
    }

    fn run(&mut self) {
        while let Some(m) = self.network.pop_front() {
            let to = m.to.0 as usize - 1;
            self.step(to, Input::Message(m));
        }
    }
}

fn measure(batch: usize, commands: u64) -> f64 {
    let mut cluster = Cluster::new();
    let payload = Bytes::from(vec![7u8; 64]);
    let started = Instant::now();
    let mut token = 0;
    while cluster.committed < commands {
        token += 1;
        let batch_commands = vec![payload.clone(); batch];
        cluster.step(
            0,
            Input::Propose {
                token: Token(token),
                commands: batch_commands,
                extensions: Vec::new(),
            },
        );
        cluster.run();
        // Heartbeats now and then so followers learn the commit index and apply.
        if token % 64 == 0 {
            cluster.now = cluster
                .now
                .plus_nanos(Duration::from_millis(100).as_nanos() as u64);
            cluster.step(0, Input::Tick);
            cluster.run();
        }
    }
    cluster.committed as f64 / started.elapsed().as_secs_f64()
}

fn main() {
    println!("core_step: 3 cores in one thread, 64-byte commands, medians of 5 runs");
    for batch in [1usize, 16, 64, 256] {
        let commands = if batch == 1 { 200_000 } else { 1_000_000 };
        let mut runs: Vec<f64> = (0..5).map(|_| measure(batch, commands)).collect();
        runs.sort_by(|a, b| a.total_cmp(b));
        println!("batch {batch:>4}: {:>12.0} commands/s committed", runs[2]);
    }
}
