//! Leadership through the public API on the in-memory network: a leader cut off from its
//! followers loses its lease and steps down, failing what was pending; leadership transfer to
//! any server and to a given one under concurrent writes, and its refusals.
//!
//! Waits poll with generous deadlines that only guard against hangs; no test asserts on how
//! long anything took.

mod node_support;

use bytes::Bytes;
use node_support::{commands, resolve, test_config, wait_until, TestCluster};
use ringraft::{ApplyError, Config, Raft, RaftState, ReadError, TransferError};
use ringraft_storage::{Index, NodeId};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

fn with_lease_reads(id: NodeId) -> Config {
    let mut c = test_config(id);
    c.lease_read = true;
    c
}

#[test]
fn a_leader_cut_off_from_its_followers_steps_down_when_its_lease_expires() {
    let mut cluster = TestCluster::with_config(3, with_lease_reads);
    let leader = cluster.wait_leader();
    let raft = cluster.raft(leader).clone();
    let mut expected = commands("before", 10);
    for c in &expected {
        resolve("apply", raft.apply(c.clone(), T)).expect("apply");
    }
    resolve("lease_read", raft.lease_read(T)).expect("lease read while in contact");

    let others: Vec<NodeId> = (1..=3).map(NodeId).filter(|n| *n != leader).collect();
    cluster.net.partition(&[&[leader], &others]);
    // Submitted right after the cut, long before the lease runs out: the leader takes them,
    // cannot commit or confirm them, and fails them when it steps down (their outcome is
    // unknown to the caller: "LeadershipLost").
    let apply = raft.apply("lost", T);
    let barrier = raft.barrier(T);
    let read = raft.read_index(T);
    wait_until("the cut-off leader to step down", || {
        raft.state() != RaftState::Leader
    });
    assert_eq!(resolve("apply", apply), Err(ApplyError::LeadershipLost));
    assert_eq!(resolve("barrier", barrier), Err(ApplyError::LeadershipLost));
    assert_eq!(resolve("read_index", read), Err(ReadError::LeadershipLost));
    assert!(matches!(
        resolve("lease_read", raft.lease_read(T)),
        Err(ReadError::NotLeader { .. })
    ));
    assert!(matches!(
        resolve("apply", raft.apply("refused", T)),
        Err(ApplyError::NotLeader { .. })
    ));

    // The others elect a leader and go on; once healed, the old leader follows it and its
    // uncommitted entry is gone everywhere.
    let new = cluster.wait_leader_among(&others);
    let after = commands("after", 10);
    for c in &after {
        resolve("apply", cluster.raft(new).apply(c.clone(), T)).expect("apply");
    }
    expected.extend(after);
    cluster.net.heal();
    cluster.barrier_on_leader();
    cluster.wait_applied_everywhere(&expected);
    cluster.shutdown_all();
}

/// Clients that write unique commands to whichever node leads until told to stop; every
/// acknowledged command is recorded.
struct Writers {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<Bytes>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Writers {
    fn start(nodes: Vec<Raft>, clients: usize) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|client| {
                let (nodes, stop, acknowledged) =
                    (nodes.clone(), stop.clone(), acknowledged.clone());
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let Some(leader) = nodes.iter().find(|r| r.state() == RaftState::Leader)
                        else {
                            std::thread::sleep(Duration::from_millis(1));
                            continue;
                        };
                        n += 1;
                        let command = Bytes::from(format!("c{client}-{n}"));
                        match leader.apply(command.clone(), T).wait_timeout(T) {
                            Some(Ok(_)) => acknowledged.lock().unwrap().push(command),
                            // Not applied, or outcome unknown: either way not acknowledged.
                            Some(Err(_)) => std::thread::sleep(Duration::from_millis(1)),
                            None => panic!("an apply hung"),
                        }
                    }
                })
            })
            .collect();
        Writers {
            stop,
            acknowledged,
            threads,
        }
    }

    fn count(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }

    /// Waits until `more` further writes were acknowledged.
    fn wait_for_more(&self, more: usize) {
        let target = self.count() + more;
        wait_until(&format!("{target} acknowledged writes"), || {
            self.count() >= target
        });
    }

    fn finish(self) -> Vec<Bytes> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("writer thread");
        }
        let acknowledged = self.acknowledged.lock().unwrap().clone();
        acknowledged
    }
}

#[test]
fn leadership_moves_to_any_and_to_a_chosen_server_under_concurrent_writes() {
    let cluster = TestCluster::new(3);
    let first = cluster.wait_leader();
    let writers = Writers::start(cluster.running().cloned().collect(), 4);
    writers.wait_for_more(20);

    resolve(
        "transfer_leadership",
        cluster.raft(first).transfer_leadership(),
    )
    .expect("transfer");
    let second = cluster.wait_leader();
    assert_ne!(second, first);
    writers.wait_for_more(20);

    // To the one server that has not led yet.
    let third = (1..=3)
        .map(NodeId)
        .find(|n| *n != first && *n != second)
        .expect("a third node");
    resolve(
        "transfer_leadership_to",
        cluster.raft(second).transfer_leadership_to(third),
    )
    .expect("transfer to a chosen server");
    assert_eq!(cluster.wait_leader(), third);
    writers.wait_for_more(20);
    let acknowledged = writers.finish();

    // One order everywhere, with every acknowledged write in it once.
    let leader = cluster.barrier_on_leader();
    let applied = cluster.applied(leader);
    cluster.wait_applied_everywhere(&applied);
    let distinct: BTreeSet<&Bytes> = applied.iter().collect();
    assert_eq!(distinct.len(), applied.len(), "a write was applied twice");
    for c in &acknowledged {
        assert!(distinct.contains(c), "acknowledged {c:?} was not applied");
    }
}

#[test]
fn leadership_transfer_refuses_itself_unknown_servers_non_voters_and_followers() {
    let mut cluster = TestCluster::new(3);
    let leader = cluster.wait_leader();
    let raft = cluster.raft(leader).clone();
    assert_eq!(
        resolve("transfer to itself", raft.transfer_leadership_to(leader)),
        Err(TransferError::TransferToSelf)
    );
    assert_eq!(
        resolve(
            "transfer to a stranger",
            raft.transfer_leadership_to(NodeId(99))
        ),
        Err(TransferError::UnknownServer { id: NodeId(99) })
    );
    let follower = (1..=3)
        .map(NodeId)
        .find(|n| *n != leader)
        .expect("follower");
    assert_eq!(
        resolve(
            "transfer on a follower",
            cluster.raft(follower).transfer_leadership()
        ),
        Err(TransferError::NotLeader {
            leader: Some(leader)
        })
    );
    let learner = cluster.add_node();
    resolve(
        "add_nonvoter",
        raft.add_nonvoter(learner, "n4", Index(0), T),
    )
    .expect("add non-voter");
    assert_eq!(
        resolve(
            "transfer to a non-voter",
            raft.transfer_leadership_to(learner)
        ),
        Err(TransferError::TargetNotVoter { id: learner })
    );
    // Nothing moved.
    assert_eq!(raft.state(), RaftState::Leader);
    resolve("apply", raft.apply("still leading", T)).expect("apply");

    let single = TestCluster::new(1);
    let only = single.wait_leader();
    assert_eq!(
        resolve("transfer alone", single.raft(only).transfer_leadership()),
        Err(TransferError::NoTransferTarget)
    );
}

/// A transfer to a server the transport reports unreachable fails at once with a typed error
/// (hashicorp fails when its TimeoutNow RPC fails) instead of waiting two election timeouts;
/// the leader keeps leading, and a transfer works again once the target is back.
#[test]
fn a_transfer_to_an_unreachable_server_fails_fast_with_a_typed_error() {
    let cluster = TestCluster::new(3);
    let leader = cluster.wait_leader();
    let target = (1..=3)
        .map(NodeId)
        .find(|n| *n != leader)
        .expect("a follower");
    cluster.net.disconnect(target);
    // The leader hears of it from the transport (a failed send or the disconnect event).
    cluster
        .raft(leader)
        .apply("while cut off", T)
        .wait()
        .expect("the other two commit");
    let result = resolve(
        "transfer",
        cluster.raft(leader).transfer_leadership_to(target),
    );
    assert_eq!(result, Err(TransferError::TargetUnreachable { id: target }));
    assert_eq!(cluster.raft(leader).state(), RaftState::Leader);
    cluster.net.reconnect(target);
    cluster.wait_applied(target, &[Bytes::from("while cut off")]);
    resolve(
        "transfer",
        cluster.raft(leader).transfer_leadership_to(target),
    )
    .expect("the transfer succeeds once the target is back");
    wait_until("the target to lead", || {
        cluster.raft(target).state() == RaftState::Leader
    });
}
