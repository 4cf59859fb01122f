//! `Fsm::apply_batch` (hashicorp's `BatchingFSM`): consecutive commands reach the state
//! machine as one batch, and each caller gets its own entry's response.

mod node_support;

use bytes::Bytes;
use node_support::resolve;
use ringraft::{Fsm, FsmError, FsmSnapshot};
use ringraft_storage::{Entry, InmemSnapshotStore};
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Answers each command with its own payload reversed; records the size of every batch.
struct Batching(Arc<Mutex<Vec<usize>>>);

impl Fsm for Batching {
    fn apply(&mut self, _entry: &Entry) -> Bytes {
        panic!("a batching state machine gets batches");
    }

    fn apply_batch(&mut self, entries: &[Entry]) -> Vec<Bytes> {
        self.0.lock().unwrap().push(entries.len());
        entries
            .iter()
            .map(|e| e.data.iter().rev().copied().collect::<Vec<u8>>().into())
            .collect()
    }

    fn snapshot(&mut self) -> Result<Box<dyn FsmSnapshot>, FsmError> {
        Err("not used".into())
    }

    fn restore(&mut self, _snapshot: &mut dyn Read) -> Result<(), FsmError> {
        Ok(())
    }
}

#[test]
fn commands_arrive_in_batches_and_each_caller_gets_its_response() {
    let batches = Arc::new(Mutex::new(Vec::new()));
    let raft = node_support::start_single(Batching(batches.clone()), InmemSnapshotStore::new());
    let commands: Vec<Bytes> = (0..16)
        .map(|i| Bytes::from(format!("cmd-{i:02}")))
        .collect();
    let applied = resolve(
        "apply_batch",
        raft.apply_batch(commands.clone(), Duration::from_secs(5)),
    )
    .expect("apply_batch");
    let expected: Vec<Bytes> = commands
        .iter()
        .map(|c| c.iter().rev().copied().collect::<Vec<u8>>().into())
        .collect();
    assert_eq!(applied.responses, expected);
    let one = resolve("apply", raft.apply("xyz", Duration::from_secs(5))).expect("apply");
    assert_eq!(one.response, Bytes::from("zyx"));
    let seen = batches.lock().unwrap().clone();
    assert_eq!(
        seen.iter().sum::<usize>(),
        17,
        "every command exactly once: {seen:?}"
    );
    assert!(
        seen.iter().any(|&n| n > 1),
        "the batch arrived together: {seen:?}"
    );
    resolve("shutdown", raft.shutdown()).expect("shutdown");
}
