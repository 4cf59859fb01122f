//! Membership changes through the public API on the in-memory network: a node joins as a
//! non-voter and catches up, is promoted, demoted and removed; `prev_index` guards; a leader
//! removes itself (with `shutdown_on_remove` on and off).
//!
//! Waits poll with generous deadlines that only guard against hangs; no test asserts on how
//! long anything took.

mod node_support;

use bytes::Bytes;
use node_support::{commands, resolve, test_config, wait_until, TestCluster};
use ringraft::{ApplyError, Config, MembershipError, RaftState};
use ringraft_net::memory::Verdict;
use ringraft_net::message::Body;
use ringraft_storage::{Configuration, EntryKind, Index, NodeId, Suffrage};
use std::time::Duration;

const T: Duration = Duration::from_secs(5);

fn suffrage(configuration: &Configuration, id: NodeId) -> Option<Suffrage> {
    configuration.server(id).map(|s| s.suffrage)
}

/// Applies `commands` on `leader`, each acknowledged.
fn write(cluster: &TestCluster, leader: NodeId, commands: &[Bytes]) {
    for c in commands {
        resolve("apply", cluster.raft(leader).apply(c.clone(), T)).expect("apply");
    }
}

#[test]
fn a_nonvoter_joins_catches_up_and_is_promoted_demoted_and_removed() {
    let mut cluster = TestCluster::new(3);
    let leader = cluster.wait_leader();
    let raft = cluster.raft(leader).clone();
    let mut expected = commands("before", 30);
    write(&cluster, leader, &expected);

    let new = cluster.add_node();
    let added =
        resolve("add_nonvoter", raft.add_nonvoter(new, "n4", Index(0), T)).expect("add non-voter");
    let (index, configuration) = raft.configuration();
    assert_eq!(index, added);
    assert_eq!(suffrage(&configuration, new), Some(Suffrage::Nonvoter));
    // It catches up on what was written before it joined, and receives what follows.
    cluster.wait_applied(new, &expected);
    let more = commands("nonvoter", 10);
    write(&cluster, leader, &more);
    expected.extend(more);
    cluster.wait_applied(new, &expected);

    let promoted = resolve("add_voter", raft.add_voter(new, "n4", added, T)).expect("promote");
    assert!(promoted > added);
    assert_eq!(
        suffrage(&raft.configuration().1, new),
        Some(Suffrage::Voter)
    );
    wait_until("the new node to see itself a voter", || {
        suffrage(&cluster.raft(new).configuration().1, new) == Some(Suffrage::Voter)
    });

    // A stale prev_index is refused with the latest configuration's index; nothing changes.
    assert_eq!(
        resolve("remove_server", raft.remove_server(new, added, T)),
        Err(MembershipError::ConfigurationChanged { latest: promoted })
    );
    assert_eq!(raft.configuration().0, promoted);

    let demoted = resolve("demote_voter", raft.demote_voter(new, promoted, T)).expect("demote");
    assert_eq!(
        suffrage(&raft.configuration().1, new),
        Some(Suffrage::Nonvoter)
    );
    let removed = resolve("remove_server", raft.remove_server(new, demoted, T)).expect("remove");
    let (index, configuration) = raft.configuration();
    assert_eq!(index, removed);
    assert_eq!(configuration.server(new), None);
    assert_eq!(configuration.voters().count(), 3);

    // The three remaining voters keep committing.
    let after = commands("after", 10);
    write(&cluster, leader, &after);
    expected.extend(after);
    for id in (1..=3).map(NodeId) {
        cluster.wait_applied(id, &expected);
    }
}

#[test]
fn a_fresh_node_added_as_a_voter_receives_every_write_and_counts_for_the_quorum() {
    let mut cluster = TestCluster::new(3);
    let leader = cluster.wait_leader();
    let raft = cluster.raft(leader).clone();
    let mut expected = commands("before", 20);
    write(&cluster, leader, &expected);
    let new = cluster.add_node();
    resolve("add_voter", raft.add_voter(new, "n4", Index(0), T)).expect("add voter");
    assert_eq!(
        suffrage(&raft.configuration().1, new),
        Some(Suffrage::Voter)
    );
    cluster.wait_applied(new, &expected);
    let more = commands("after", 10);
    write(&cluster, leader, &more);
    expected.extend(more);
    cluster.wait_applied_everywhere(&expected);

    // Four voters need three: the leader and one follower no longer commit (as a non-voter,
    // the new node would leave them two of three). The write never succeeds; the leader may
    // step down for lack of a quorum, failing it.
    let followers: Vec<NodeId> = (1..=3).map(NodeId).filter(|n| *n != leader).collect();
    cluster
        .net
        .partition(&[&[leader, followers[0]], &[new], &[followers[1]]]);
    let mut stuck = raft.apply("without-a-quorum", T);
    let outcome = stuck.wait_timeout(Duration::from_millis(500));
    assert!(
        matches!(outcome, None | Some(Err(ApplyError::LeadershipLost))),
        "{outcome:?}"
    );
    cluster.net.heal();
    // Everyone ends with the same log, with every acknowledged write in it.
    let leader = cluster.barrier_on_leader();
    let applied = cluster.applied(leader);
    assert_eq!(applied[..expected.len()], expected[..]);
    cluster.wait_applied_everywhere(&applied);
}

#[test]
fn membership_changes_are_refused_with_typed_errors() {
    let cluster = TestCluster::new(3);
    let leader = cluster.wait_leader();
    let raft = cluster.raft(leader);
    let follower = (1..=3)
        .map(NodeId)
        .find(|n| *n != leader)
        .expect("follower");
    assert_eq!(
        resolve(
            "add_voter on a follower",
            cluster
                .raft(follower)
                .add_voter(NodeId(9), "n9", Index(0), T)
        ),
        Err(MembershipError::NotLeader {
            leader: Some(leader)
        })
    );
    let (latest, _) = raft.configuration();
    assert_eq!(
        resolve(
            "a change with a wrong prev_index",
            raft.add_nonvoter(NodeId(9), "n9", Index(latest.0 + 7), T)
        ),
        Err(MembershipError::ConfigurationChanged { latest })
    );
    // Another server at an address already taken makes an invalid configuration.
    assert!(matches!(
        resolve(
            "a duplicate address",
            raft.add_nonvoter(NodeId(9), "n2", Index(0), T)
        ),
        Err(MembershipError::InvalidConfiguration(_))
    ));
    assert_eq!(raft.configuration().0, latest, "nothing changed");

    let single = TestCluster::new(1);
    let only = single.wait_leader();
    assert!(matches!(
        resolve(
            "removing the last voter",
            single.raft(only).remove_server(only, Index(0), T)
        ),
        Err(MembershipError::InvalidConfiguration(_))
    ));
}

fn shutdown_on_remove(id: NodeId) -> Config {
    let mut c = test_config(id);
    c.shutdown_on_remove = true;
    c
}

fn stay_on_remove(id: NodeId) -> Config {
    let mut c = test_config(id);
    c.shutdown_on_remove = false;
    c
}

/// The leader removes itself: while the removal is uncommitted it still leads; once it
/// commits, the future resolves with its index and the leader steps down (and shuts down if
/// configured to); the other two elect a leader and carry on.
fn leader_removes_itself(configure: fn(NodeId) -> Config) {
    let shutdown = configure(NodeId(1)).shutdown_on_remove;
    let cluster = TestCluster::with_config(3, configure);
    let leader = cluster.wait_leader();
    let raft = cluster.raft(leader).clone();
    let mut expected = commands("before", 10);
    write(&cluster, leader, &expected);

    // Hold the configuration entry back from the followers: it cannot commit, while
    // heartbeats (and with them the leader's lease) go through.
    cluster.net.set_filter(|_, message| match &message.body {
        Body::AppendEntries(a) if a.entries.iter().any(|e| e.kind == EntryKind::Configuration) => {
            Verdict::Drop
        }
        _ => Verdict::Deliver,
    });
    let removal = raft.remove_server(leader, Index(0), T);
    wait_until("the removal to be appended", || {
        raft.configuration().1.server(leader).is_none()
    });
    resolve("verify_leader", raft.verify_leader()).expect("still the leader");
    assert_eq!(raft.state(), RaftState::Leader);
    assert!(!removal.is_ready(), "the removal cannot have committed");

    cluster.net.clear_filter();
    let index = resolve("remove_server", removal).expect("the removal commits");
    if shutdown {
        wait_until("the removed leader to shut down", || {
            raft.state() == RaftState::Shutdown
        });
    } else {
        wait_until("the removed leader to step down", || {
            raft.state() == RaftState::Follower
        });
        assert_eq!(raft.fatal_error(), None);
    }

    let others: Vec<NodeId> = (1..=3).map(NodeId).filter(|n| *n != leader).collect();
    let new = cluster.wait_leader_among(&others);
    let (latest, configuration) = cluster.raft(new).configuration();
    assert!(latest >= index);
    assert_eq!(configuration.server(leader), None);
    let after = commands("after", 10);
    write(&cluster, new, &after);
    expected.extend(after);
    for id in &others {
        cluster.wait_applied(*id, &expected);
    }
    assert_ne!(
        raft.state(),
        RaftState::Leader,
        "a removed node never leads"
    );
}

#[test]
fn a_removed_leader_leads_until_the_removal_commits_then_shuts_down() {
    leader_removes_itself(shutdown_on_remove);
}

#[test]
fn a_removed_leader_leads_until_the_removal_commits_then_steps_down_and_stays_up() {
    leader_removes_itself(stay_on_remove);
}

/// Concurrent membership changes queue behind the one in flight and commit one after another,
/// in order (hashicorp's behaviour), instead of failing with "change in progress".
#[test]
fn concurrent_membership_changes_queue_and_commit_in_order() {
    let cluster = TestCluster::new(3);
    let leader = cluster.wait_leader();
    let raft = cluster.raft(leader);
    let futures: Vec<_> = (4..=9)
        .map(|i| raft.add_nonvoter(NodeId(i), format!("n{i}"), Index(0), T))
        .collect();
    let mut indexes = Vec::new();
    for (i, f) in futures.into_iter().enumerate() {
        indexes.push(resolve("a queued change", f).unwrap_or_else(|e| panic!("change {i}: {e}")));
    }
    assert!(
        indexes.windows(2).all(|w| w[0] < w[1]),
        "committed in order: {indexes:?}"
    );
    let (latest, configuration) = raft.configuration();
    assert_eq!(latest, *indexes.last().expect("six changes"));
    for i in 4..=9 {
        assert_eq!(
            suffrage(&configuration, NodeId(i)),
            Some(Suffrage::Nonvoter)
        );
    }
}

/// A change that cannot start before its own timeout (the one in flight cannot commit) fails
/// with `EnqueueTimeout`, and one that finds the line full fails with `ChangeQueueFull`;
/// neither changed anything.
#[test]
fn queued_membership_changes_time_out_or_find_the_line_full() {
    let cluster = TestCluster::new(3);
    let leader = cluster.wait_leader();
    let raft = cluster.raft(leader);
    // The leader has committed an entry of its term, so it takes a change at once.
    resolve("a write", raft.apply("x", T)).expect("apply");
    // The followers no longer hear the leader: nothing commits.
    for id in (1..=3).map(NodeId).filter(|n| *n != leader) {
        cluster.net.disconnect(id);
    }
    let stuck = raft.add_nonvoter(NodeId(10), "n10", Index(0), T);
    let short = raft.add_nonvoter(NodeId(11), "n11", Index(0), Duration::from_millis(20));
    let waiting: Vec<_> = (0..63)
        .map(|i| raft.add_nonvoter(NodeId(100 + i), format!("w{i}"), Index(0), T))
        .collect();
    let full = raft.add_nonvoter(NodeId(12), "n12", Index(0), T);
    assert_eq!(
        resolve("a change behind a full line", full),
        Err(MembershipError::ChangeQueueFull)
    );
    assert_eq!(
        resolve("a change with a short timeout", short),
        Err(MembershipError::EnqueueTimeout)
    );
    // The leader loses its lease: the change in flight has an unknown outcome, the waiting
    // ones find it is no longer the leader.
    assert!(matches!(
        resolve("the change in flight", stuck),
        Err(MembershipError::LeadershipLost | MembershipError::NotLeader { .. })
    ));
    for f in waiting {
        let result = resolve("a waiting change", f);
        assert!(
            matches!(result, Err(MembershipError::NotLeader { .. })),
            "{result:?}"
        );
    }
}
