//! Where the state machine runs (`Config::apply_placement`): the adaptive default keeps a fast
//! state machine on the shard thread and moves a slow one to a thread of its own, keeping the
//! order of what it sees and the responses of what it applied.

mod node_support;

use bytes::Bytes;
use node_support::{resolve, start_single};
use ringraft::{Fsm, FsmError, FsmSnapshot};
use ringraft_storage::{Entry, InmemSnapshotStore};
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

/// Applies commands in order, answering each with its position; a command `slow` sleeps
/// `delay` first (blocking, as I/O would), a command `busy` computes for `delay`. Records the
/// name of the thread that applied each command.
struct Watched {
    seen: Arc<Mutex<Vec<(Bytes, String)>>>,
    delay: Duration,
}

impl Fsm for Watched {
    #[allow(clippy::disallowed_methods)] // It spins for a wall-clock time.
    fn apply(&mut self, entry: &Entry) -> Bytes {
        if entry.data == "slow" {
            std::thread::sleep(self.delay);
        }
        if entry.data == "busy" {
            let started = std::time::Instant::now();
            let mut x = 0u64;
            while started.elapsed() < self.delay {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
        let thread = std::thread::current().name().unwrap_or("").to_string();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.push((entry.data.clone(), thread));
        Bytes::from(seen.len().to_string())
    }

    fn snapshot(&mut self) -> Result<Box<dyn FsmSnapshot>, FsmError> {
        Ok(Box::new(Empty))
    }

    fn restore(&mut self, snapshot: &mut dyn Read) -> Result<(), FsmError> {
        std::io::copy(snapshot, &mut std::io::sink())?;
        Ok(())
    }
}

struct Empty;

impl FsmSnapshot for Empty {
    fn persist(&mut self, _sink: &mut dyn Write) -> Result<(), FsmError> {
        Ok(())
    }
}

fn threads(seen: &Arc<Mutex<Vec<(Bytes, String)>>>) -> Vec<(String, String)> {
    seen.lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(d, t)| (String::from_utf8_lossy(d).into_owned(), t.clone()))
        .collect()
}

#[test]
fn a_fast_state_machine_stays_on_the_shard_thread() {
    let seen = Arc::default();
    let fsm = Watched {
        seen: Arc::clone(&seen),
        delay: Duration::ZERO,
    };
    let raft = start_single(fsm, InmemSnapshotStore::new());
    for i in 0..50 {
        let applied = resolve("apply", raft.apply(format!("w{i}"), T)).expect("apply");
        assert_eq!(applied.response, Bytes::from((i + 1).to_string()));
    }
    // A loaded machine may preempt the shard thread inside a call often enough to move the
    // state machine later on; the first calls stay (slow ones computing 50 ms together are
    // needed, or one of 20 ms).
    for (data, thread) in threads(&seen).into_iter().take(3) {
        assert!(thread.starts_with("ringraft-shard"), "{data} on {thread}");
    }
}

#[test]
fn a_very_slow_call_moves_the_state_machine_to_its_own_thread_in_order() {
    let seen = Arc::default();
    let fsm = Watched {
        seen: Arc::clone(&seen),
        delay: Duration::from_millis(30),
    };
    let raft = start_single(fsm, InmemSnapshotStore::new());
    let mut futures = Vec::new();
    for data in ["a", "slow", "b", "c"] {
        futures.push(raft.apply(data, T));
    }
    let responses: Vec<Bytes> = futures
        .into_iter()
        .map(|f| resolve("apply", f).expect("apply").response)
        .collect();
    assert_eq!(responses, ["1", "2", "3", "4"].map(Bytes::from));
    // Written after the move: certainly on the apply thread.
    resolve("apply", raft.apply("d", T)).expect("apply");
    let seen = threads(&seen);
    let order: Vec<&str> = seen.iter().map(|(d, _)| d.as_str()).collect();
    assert_eq!(order, ["a", "slow", "b", "c", "d"]);
    assert!(seen[1].1.starts_with("ringraft-shard"), "{seen:?}");
    assert_eq!(seen[4].1, "ringraft-apply-1", "{seen:?}");
}

#[test]
fn calls_computing_50_ms_within_a_second_move_it_but_one_does_not() {
    let seen = Arc::default();
    // Computing calls of 7 ms: ten add up to more than the 50 ms budget (eight would, with
    // room for preemption), one does not.
    let fsm = Watched {
        seen: Arc::clone(&seen),
        delay: Duration::from_millis(7),
    };
    let raft = start_single(fsm, InmemSnapshotStore::new());
    resolve("apply", raft.apply("busy", T)).expect("apply");
    resolve("apply", raft.apply("fast", T)).expect("apply");
    assert!(
        threads(&seen)[1].1.starts_with("ringraft-shard"),
        "one slowish call is not enough: {:?}",
        threads(&seen)
    );
    // Blocked (not computing) for a few ms: does not count toward the three.
    resolve("apply", raft.apply("slow", T)).expect("apply");
    resolve("apply", raft.apply("slow", T)).expect("apply");
    resolve("apply", raft.apply("fast", T)).expect("apply");
    assert!(
        threads(&seen)[4].1.starts_with("ringraft-shard"),
        "blocking a few ms is not computing: {:?}",
        threads(&seen)
    );
    for _ in 0..9 {
        resolve("apply", raft.apply("busy", T)).expect("apply");
    }
    resolve("apply", raft.apply("after", T)).expect("apply");
    let seen = threads(&seen);
    assert_eq!(
        seen.last().map(|(_, t)| t.as_str()),
        Some("ringraft-apply-1")
    );
}
