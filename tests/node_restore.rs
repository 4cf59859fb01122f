//! User restore through the public API (`Raft::restore`): the external snapshot replaces every
//! node's state at the same log position, reaches a follower that was down, survives a
//! restart, and fails with typed errors that change nothing.

mod node_support;

use bytes::{BufMut, Bytes};
use node_support::{commands, resolve, wait_until, RecordingFsm, TestCluster};
use ringraft::RestoreError;
use ringraft_storage::{DiscardSnapshotStore, NodeId};
use std::io::Read;
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

/// A snapshot in [`RecordingFsm`]'s format holding `state`.
fn external_snapshot(state: &[Bytes]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in state {
        out.put_u32_le(c.len() as u32);
        out.put_slice(c);
    }
    out
}

fn restored_state() -> Vec<Bytes> {
    vec![Bytes::from("restored-1"), Bytes::from("restored-2")]
}

fn follower_of(leader: NodeId) -> NodeId {
    (1..=3)
        .map(NodeId)
        .find(|n| *n != leader)
        .expect("a follower")
}

#[test]
fn a_restore_replaces_every_nodes_state_and_later_writes_apply_on_top() {
    let cluster = TestCluster::new(3);
    let leader = cluster.wait_leader();
    for c in commands("before", 10) {
        cluster.raft(leader).apply(c, T).wait().expect("apply");
    }
    let data = external_snapshot(&restored_state());
    let index = resolve(
        "restore",
        cluster.raft(leader).restore(std::io::Cursor::new(data), T),
    )
    .expect("restore");
    // Resolved only once the leader's own state machine holds the restored state.
    assert_eq!(cluster.applied(leader), restored_state());
    assert!(cluster.raft(leader).applied_index() >= index);
    let after = commands("after", 5);
    for c in &after {
        cluster
            .raft(leader)
            .apply(c.clone(), T)
            .wait()
            .expect("apply");
    }
    let mut expected = restored_state();
    expected.extend(after);
    cluster.wait_applied_everywhere(&expected);
}

#[test]
fn a_follower_that_was_down_stages_the_restore_when_it_returns() {
    let mut cluster = TestCluster::new(3);
    let leader = cluster.wait_leader();
    let down = follower_of(leader);
    cluster.stop(down);
    for c in commands("before", 3) {
        cluster.raft(leader).apply(c, T).wait().expect("apply");
    }
    let data = external_snapshot(&restored_state());
    resolve(
        "restore",
        cluster.raft(leader).restore(std::io::Cursor::new(data), T),
    )
    .expect("the two running nodes commit the restore");
    cluster
        .raft(leader)
        .apply("after", T)
        .wait()
        .expect("apply");
    cluster.start(down);
    let mut expected = restored_state();
    expected.push(Bytes::from("after"));
    cluster.wait_applied(down, &expected);
    let i = down.0 as usize - 1;
    let staging = cluster.stores[i].snapshots.clone();
    use ringraft_storage::SnapshotStore;
    let staged = staging
        .staging()
        .expect("staging area")
        .list()
        .expect("list");
    assert_eq!(
        staged.len(),
        1,
        "it staged the restore before taking its entry"
    );
}

#[test]
fn a_restored_node_restarts_into_the_restored_state() {
    let mut cluster = TestCluster::new(1);
    let id = cluster.wait_leader();
    for c in commands("old", 4) {
        cluster.raft(id).apply(c, T).wait().expect("apply");
    }
    let data = external_snapshot(&restored_state());
    resolve(
        "restore",
        cluster.raft(id).restore(std::io::Cursor::new(data), T),
    )
    .expect("restore");
    cluster.raft(id).apply("new", T).wait().expect("apply");
    cluster.stop(id);
    cluster.start(id);
    cluster.wait_leader();
    let mut expected = restored_state();
    expected.push(Bytes::from("new"));
    wait_until("the restarted node to replay its log", || {
        cluster.applied(id) == expected
    });
}

/// A reader that fails half-way.
struct Broken(usize);

impl Read for Broken {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.0 == 0 {
            return Err(std::io::Error::other("the backup file went away"));
        }
        let n = buf.len().min(self.0);
        buf[..n].fill(7);
        self.0 -= n;
        Ok(n)
    }
}

#[test]
fn failed_restores_say_why_and_change_nothing() {
    let cluster = TestCluster::new(3);
    let leader = cluster.wait_leader();
    cluster.raft(leader).apply("kept", T).wait().expect("apply");
    let follower = follower_of(leader);
    let on_follower = resolve(
        "restore on a follower",
        cluster.raft(follower).restore(std::io::empty(), T),
    );
    assert!(
        matches!(on_follower, Err(RestoreError::NotLeader { .. })),
        "{on_follower:?}"
    );
    let broken = resolve(
        "broken restore",
        cluster.raft(leader).restore(Broken(100), T),
    );
    assert!(
        matches!(&broken, Err(RestoreError::Staging(why)) if why.contains("went away")),
        "{broken:?}"
    );
    // The cluster keeps its state and accepts writes.
    cluster
        .raft(leader)
        .apply("still", T)
        .wait()
        .expect("apply");
    cluster.wait_applied_everywhere(&[Bytes::from("kept"), Bytes::from("still")]);
}

#[test]
fn a_snapshot_store_without_a_staging_area_refuses_restores() {
    let raft = node_support::start_single(RecordingFsm::new(), DiscardSnapshotStore);
    let refused = resolve(
        "restore",
        raft.restore(std::io::Cursor::new(vec![1, 2, 3]), T),
    );
    assert_eq!(refused, Err(RestoreError::NotSupported));
    raft.apply("works", T)
        .wait()
        .expect("apply after the refusal");
    raft.shutdown().wait().expect("shutdown");
}

/// A reader that hands out `data` only after the test opens the gate.
struct Gated {
    data: std::io::Cursor<Vec<u8>>,
    gate: std::sync::mpsc::Receiver<()>,
    opened: bool,
}

impl Read for Gated {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.opened {
            let _ = self.gate.recv();
            self.opened = true;
        }
        self.data.read(buf)
    }
}

#[test]
fn writes_are_refused_while_the_restore_is_staged_then_apply_on_top() {
    let cluster = TestCluster::new(3);
    let leader = cluster.wait_leader();
    let (open, gate) = std::sync::mpsc::channel();
    let reader = Gated {
        data: std::io::Cursor::new(external_snapshot(&restored_state())),
        gate,
        opened: false,
    };
    let restore = cluster.raft(leader).restore(reader, T);
    // Requests are handled in order: the restore is staging when the write arrives.
    let refused = resolve(
        "write during staging",
        cluster.raft(leader).apply("during", T),
    );
    assert_eq!(refused, Err(ringraft::ApplyError::RestoreInProgress));
    open.send(()).expect("open the gate");
    resolve("restore", restore).expect("restore");
    cluster
        .raft(leader)
        .apply("after", T)
        .wait()
        .expect("apply");
    let mut expected = restored_state();
    expected.push(Bytes::from("after"));
    cluster.wait_applied_everywhere(&expected);
}
