//! Hand-driven scenarios for membership changes, leadership transfer, snapshots, bootstrap and
//! recovery (Consensus core II).

use bytes::Bytes;
use ringraft::core::{
    BootstrapError, Core, Event, Input, MembershipChange, Outcome, RecoveredState, RequestError,
    Role,
};
use ringraft::sim::testkit::Cluster;
use ringraft_net::message::Body;
use ringraft_storage::{Configuration, Index, NodeId, Server, Term};
use std::time::Duration;

const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);
const N3: NodeId = NodeId(3);
const N4: NodeId = NodeId(4);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn voters(c: &Cluster, id: NodeId) -> Vec<NodeId> {
    c.core(id).latest_configuration().1.voters().collect()
}

fn add_voter(id: NodeId) -> MembershipChange {
    MembershipChange::AddVoter {
        id,
        address: format!("n{}", id.0),
    }
}

fn is_committed(c: &Cluster, t: ringraft::core::Token) -> bool {
    matches!(c.reply(t), Some(Ok(Outcome::Committed { .. })))
}

#[test]
fn removing_a_follower_commits_and_shrinks_the_quorum() {
    let mut c = Cluster::new(3);
    c.elect(N1);
    let t = c.change(N1, MembershipChange::RemoveServer { id: N3 }, None);
    c.deliver_all();
    c.heartbeat(N1);
    assert!(is_committed(&c, t), "{:?}", c.reply(t));
    assert_eq!(voters(&c, N1), vec![N1, N2]);
    assert_eq!(voters(&c, N2), vec![N1, N2]);
    // The removed follower learned of its removal and never campaigns.
    assert_eq!(voters(&c, N3), vec![N1, N2]);
    c.isolate(N3);
    c.run_for(ms(1000), ms(5));
    assert_eq!(c.core(N3).role(), Role::Follower);
    // Two voters still commit.
    let w = c.propose(N1, b"w");
    c.deliver_all();
    assert!(is_committed(&c, w));
}

fn remove_the_leader(shutdown_on_remove: bool) -> Cluster {
    let mut c = Cluster::with_config(3, |cfg| cfg.shutdown_on_remove = shutdown_on_remove);
    c.elect(N1);
    let t = c.change(N1, MembershipChange::RemoveServer { id: N1 }, None);
    // Until the change commits, the leader still leads but refuses new writes.
    let w = c.propose(N1, b"w");
    assert_eq!(
        c.reply(w),
        Some(Err(RequestError::NotLeader { leader: None }))
    );
    assert_eq!(c.core(N1).role(), Role::Leader);
    c.deliver_all();
    assert!(is_committed(&c, t), "{:?}", c.reply(t));
    assert_eq!(c.core(N1).role(), Role::Follower);
    c.run_for(ms(600), ms(5));
    let leader = c.leader().expect("the remaining voters elect a leader");
    assert_ne!(leader, N1);
    c
}

#[test]
fn removing_the_leader_with_shutdown_on_remove_asks_it_to_shut_down() {
    let c = remove_the_leader(true);
    assert!(c
        .events(N1)
        .contains(&Event::RemovedFromConfiguration { shutdown: true }));
}

#[test]
fn removing_the_leader_without_shutdown_on_remove_leaves_it_a_follower() {
    let c = remove_the_leader(false);
    assert!(c
        .events(N1)
        .contains(&Event::RemovedFromConfiguration { shutdown: false }));
    assert_eq!(c.core(N1).role(), Role::Follower);
}

#[test]
fn adding_a_known_peer_and_removing_an_unknown_one_each_write_an_identical_configuration() {
    let mut c = Cluster::new(3);
    c.elect(N1);
    let (before_index, before) = c.core(N1).latest_configuration();
    let t = c.change(N1, add_voter(N2), None);
    c.deliver_all();
    assert!(is_committed(&c, t));
    let (index, after) = c.core(N1).latest_configuration();
    assert!(index > before_index);
    assert_eq!(after, before);
    let t = c.change(N1, MembershipChange::RemoveServer { id: NodeId(9) }, None);
    c.deliver_all();
    assert!(is_committed(&c, t));
    let (index2, after2) = c.core(N1).latest_configuration();
    assert!(index2 > index);
    assert_eq!(after2, before);
}

#[test]
fn removing_a_third_follower_cannot_commit_while_two_are_partitioned_away() {
    let mut c = Cluster::new(4);
    c.elect(N1);
    c.cut(N1, N3);
    c.cut(N1, N4);
    let commit = c.core(N1).commit_index();
    let t = c.change(N1, MembershipChange::RemoveServer { id: N2 }, None);
    c.deliver_all();
    c.heartbeat(N1);
    // The new configuration {1, 3, 4} is in force at once; N1 alone is not its majority.
    assert_eq!(c.reply(t), None);
    assert_eq!(c.core(N1).commit_index(), commit);
}

#[test]
fn configuration_changes_validate_prev_index_and_one_at_a_time() {
    let mut c = Cluster::new(3);
    c.elect(N1);
    let (latest, _) = c.core(N1).latest_configuration();
    let t = c.change(
        N1,
        MembershipChange::RemoveServer { id: N3 },
        Some(Index(latest.0 + 7)),
    );
    assert_eq!(
        c.reply(t),
        Some(Err(RequestError::ConfigurationChanged { latest }))
    );
    c.cut(N1, N2);
    c.cut(N1, N3);
    let first = c.change(N1, MembershipChange::RemoveServer { id: N3 }, Some(latest));
    let second = c.change(N1, add_voter(N4), None);
    assert_eq!(c.reply(first), None);
    assert_eq!(
        c.reply(second),
        Some(Err(RequestError::ConfigurationChangeInProgress))
    );
    // The last voter cannot be removed.
    let mut single = Cluster::new(1);
    single.elect(N1);
    let t = single.change(N1, MembershipChange::RemoveServer { id: N1 }, None);
    assert!(matches!(
        single.reply(t),
        Some(Err(RequestError::InvalidConfiguration(_)))
    ));
    // Followers refuse.
    let t = c.change(N2, add_voter(N4), None);
    assert!(matches!(
        c.reply(t),
        Some(Err(RequestError::NotLeader { .. }))
    ));
}

#[test]
fn a_non_voter_replicates_but_never_counts_or_campaigns() {
    let mut c = Cluster::with_spares(3, 1, |_| {});
    c.elect(N1);
    let t = c.change(
        N1,
        MembershipChange::AddNonvoter {
            id: N4,
            address: "n4".into(),
        },
        None,
    );
    c.deliver_all();
    assert!(is_committed(&c, t));
    let w = c.propose(N1, b"w");
    c.deliver_all();
    c.heartbeat(N1);
    assert_eq!(
        c.core(N4).log().last_log_id(),
        c.core(N1).log().last_log_id()
    );
    // With both other voters cut off, the leader and the non-voter are no quorum.
    assert!(is_committed(&c, w));
    c.cut(N1, N2);
    c.cut(N1, N3);
    let w = c.propose(N1, b"x");
    c.deliver_all();
    assert_eq!(c.reply(w), None);
    // The non-voter never campaigns, however long it hears nothing.
    c.isolate(N4);
    c.run_for(ms(1000), ms(5));
    assert_eq!(c.core(N4).role(), Role::Follower);
}

#[test]
fn a_new_voter_catches_up_as_a_non_voter_before_it_is_promoted() {
    let mut c = Cluster::with_spares(3, 1, |cfg| {
        cfg.promotion_lag_max = Some(0);
        cfg.max_append_entries = 2;
    });
    c.elect(N1);
    for _ in 0..30 {
        c.propose(N1, b"w");
        c.deliver_all();
    }
    c.cut(N1, N4);
    let t = c.change(N1, add_voter(N4), None);
    c.deliver_all();
    // Joined as a non-voter first: the quorum is unchanged while it lags.
    assert!(!c.core(N1).latest_configuration().1.is_voter(N4));
    assert!(c.core(N1).latest_configuration().1.server(N4).is_some());
    assert_eq!(c.reply(t), None);
    c.heal();
    c.run_for(ms(100), ms(5));
    assert!(is_committed(&c, t), "{:?}", c.reply(t));
    assert!(c.core(N1).latest_configuration().1.is_voter(N4));
    assert_eq!(
        c.core(N4).log().last_log_id(),
        c.core(N1).log().last_log_id()
    );
}

#[test]
fn a_new_voter_that_never_catches_up_fails_with_promotion_timeout() {
    let mut c = Cluster::with_spares(3, 1, |cfg| {
        cfg.promotion_lag_max = Some(0);
        cfg.promotion_rounds_max = 5;
    });
    c.elect(N1);
    c.isolate(N4);
    let t = c.change(N1, add_voter(N4), None);
    c.run_for(ms(200), ms(5));
    assert_eq!(
        c.reply(t),
        Some(Err(RequestError::PromotionTimeout { id: N4 }))
    );
    assert!(!c.core(N1).latest_configuration().1.is_voter(N4));
}

#[test]
fn a_removed_node_can_rejoin() {
    let mut c = Cluster::new(3);
    c.elect(N1);
    let t = c.change(N1, MembershipChange::RemoveServer { id: N3 }, None);
    c.deliver_all();
    c.heartbeat(N1);
    assert!(is_committed(&c, t));
    let t = c.change(N1, add_voter(N3), None);
    c.deliver_all();
    c.heartbeat(N1);
    assert!(is_committed(&c, t));
    assert_eq!(voters(&c, N3), vec![N1, N2, N3]);
    let w = c.propose(N1, b"back");
    c.deliver_all();
    assert!(is_committed(&c, w));
    assert_eq!(
        c.core(N3).log().last_log_id(),
        c.core(N1).log().last_log_id()
    );
}

#[test]
fn a_removed_node_with_a_much_higher_term_cannot_disrupt_the_cluster() {
    let mut c = Cluster::with_config(3, |cfg| cfg.pre_vote = false);
    c.elect(N1);
    // N3 is cut off before it learns of its removal, so it still thinks it is a voter.
    c.isolate(N3);
    let t = c.change(N1, MembershipChange::RemoveServer { id: N3 }, None);
    c.deliver_all();
    assert!(is_committed(&c, t));
    let term = c.core(N1).term();
    for _ in 0..20 {
        c.run_for(ms(100), ms(10));
    }
    assert!(
        c.core(N3).term().0 > term.0 + 5,
        "N3 campaigned again and again"
    );
    c.heal();
    c.run_for(ms(300), ms(2));
    assert_eq!(c.core(N1).role(), Role::Leader);
    assert_eq!(c.core(N1).term(), term);
    let w = c.propose(N1, b"still here");
    c.deliver_all();
    assert!(is_committed(&c, w));
}

#[test]
fn leadership_transfer_under_concurrent_writes() {
    let mut c = Cluster::new(3);
    c.elect(N1);
    let before = c.propose(N1, b"before");
    let t = c.transfer(N1, Some(N2));
    // While transferring, writes are refused with a typed error.
    let during = c.propose(N1, b"during");
    assert_eq!(c.reply(during), Some(Err(RequestError::TransferInProgress)));
    c.deliver_all();
    assert_eq!(c.reply(t), Some(Ok(Outcome::LeadershipTransferred)));
    assert_eq!(c.core(N2).role(), Role::Leader);
    assert!(c.core(N2).term() > Term(2));
    // The write accepted before the transfer committed under the old leader or the new one.
    let applied: Vec<Bytes> = c.applied(N2).iter().map(|e| e.data.clone()).collect();
    assert!(is_committed(&c, before) || c.reply(before) == Some(Err(RequestError::LeadershipLost)));
    c.heartbeat(N2);
    let after = c.propose(N2, b"after");
    c.deliver_all();
    assert!(is_committed(&c, after));
    assert!(applied.contains(&Bytes::from_static(b"before")) || !is_committed(&c, before));
}

#[test]
fn leadership_transfer_to_a_far_behind_follower_catches_it_up_first() {
    let mut c = Cluster::with_config(3, |cfg| cfg.max_append_entries = 4);
    c.elect(N1);
    c.isolate(N3);
    for _ in 0..40 {
        c.propose(N1, b"w");
        c.deliver_all();
    }
    c.heal();
    let t = c.transfer(N1, Some(N3));
    c.deliver_all();
    assert_eq!(c.reply(t), None, "N3 must catch up first");
    for _ in 0..5 {
        c.heartbeat(N1);
    }
    assert_eq!(c.reply(t), Some(Ok(Outcome::LeadershipTransferred)));
    assert_eq!(c.core(N3).role(), Role::Leader);
}

#[test]
fn leadership_transfer_errors_are_typed() {
    let mut c = Cluster::with_spares(3, 1, |_| {});
    c.elect(N1);
    let t = c.change(
        N1,
        MembershipChange::AddNonvoter {
            id: N4,
            address: "n4".into(),
        },
        None,
    );
    c.deliver_all();
    assert!(is_committed(&c, t));
    let t = c.transfer(N1, Some(N1));
    assert_eq!(c.reply(t), Some(Err(RequestError::TransferToSelf)));
    let t = c.transfer(N1, Some(NodeId(9)));
    assert_eq!(
        c.reply(t),
        Some(Err(RequestError::UnknownServer { id: NodeId(9) }))
    );
    let t = c.transfer(N1, Some(N4));
    assert_eq!(
        c.reply(t),
        Some(Err(RequestError::TargetNotVoter { id: N4 }))
    );
    let t = c.transfer(N2, None);
    assert!(matches!(
        c.reply(t),
        Some(Err(RequestError::NotLeader { .. }))
    ));
    let mut single = Cluster::new(1);
    single.elect(N1);
    let t = single.transfer(N1, None);
    assert_eq!(single.reply(t), Some(Err(RequestError::NoTransferTarget)));
}

#[test]
fn a_transfer_to_an_unreachable_target_times_out_and_the_leader_resumes() {
    let mut c = Cluster::new(3);
    c.elect(N1);
    c.isolate(N3);
    let t = c.transfer(N1, Some(N3));
    c.run_for(ms(250), ms(5));
    assert_eq!(c.reply(t), Some(Err(RequestError::TransferTimeout)));
    assert_eq!(c.core(N1).role(), Role::Leader);
    let w = c.propose(N1, b"w");
    c.deliver_all();
    assert!(is_committed(&c, w));
}

#[test]
fn a_far_behind_follower_gets_a_snapshot_and_then_logs() {
    let mut c = Cluster::with_config(3, |cfg| {
        cfg.trailing_logs = 2;
        cfg.snapshot_chunk_bytes = 64;
    });
    c.elect(N1);
    c.isolate(N3);
    for _ in 0..30 {
        c.propose(N1, b"payload-bytes");
        c.deliver_all();
    }
    c.take_snapshot(N1);
    let snapshot = c.core(N1).snapshot().expect("snapshot").last;
    assert!(c.core(N1).log().prev().index >= Index(snapshot.index.0 - 2));
    c.heal();
    // Several chunks of 64 bytes, then the log after the snapshot.
    c.heartbeat(N1);
    c.heartbeat(N1);
    let w = c.propose(N1, b"after");
    c.deliver_all();
    c.heartbeat(N1);
    assert!(is_committed(&c, w));
    assert_eq!(c.restores(N3), 1);
    assert_eq!(
        c.core(N3).log().last_log_id(),
        c.core(N1).log().last_log_id()
    );
    assert_eq!(c.applied(N3), c.applied(N1));
}

#[test]
fn a_lost_snapshot_chunk_is_resent_from_where_the_follower_stands() {
    let mut c = Cluster::with_config(3, |cfg| {
        cfg.trailing_logs = 0;
        cfg.snapshot_chunk_bytes = 32;
    });
    c.elect(N1);
    c.isolate(N3);
    for _ in 0..10 {
        c.propose(N1, b"0123456789");
        c.deliver_all();
    }
    c.take_snapshot(N1);
    c.heal();
    // Heartbeat rounds, delivering by hand and dropping the first snapshot chunk.
    let mut dropped = false;
    for _ in 0..10 {
        c.advance(ms(10));
        c.tick(N1);
        loop {
            let in_flight = c.take_in_flight();
            if in_flight.is_empty() {
                break;
            }
            for m in in_flight {
                if !dropped && matches!(m.body, Body::InstallSnapshot(_)) {
                    dropped = true;
                    continue;
                }
                c.deliver(m);
            }
        }
        if dropped {
            break;
        }
    }
    assert!(dropped);
    assert_eq!(c.restores(N3), 0, "the lost chunk stalls the install");
    for _ in 0..10 {
        c.heartbeat(N1);
    }
    assert_eq!(c.restores(N3), 1);
    assert_eq!(c.applied(N3), c.applied(N1));
}

#[test]
fn install_snapshot_discards_a_log_that_conflicts_at_the_snapshot_index() {
    // hashicorp/raft#697: a follower that kept its conflicting suffix after installing a
    // snapshot livelocked. Here N3 holds stale entries of an old leader at the snapshot's index.
    let mut c = Cluster::with_config(3, |cfg| cfg.trailing_logs = 0);
    c.elect(N3);
    c.isolate(N3);
    for _ in 0..5 {
        c.propose(N3, b"stale");
    }
    c.deliver_all();
    let stale_last = c.core(N3).log().last_log_id();
    c.heal();
    c.isolate(N3);
    c.elect(N1);
    for _ in 0..8 {
        c.propose(N1, b"fresh");
        c.deliver_all();
    }
    c.take_snapshot(N1);
    let snapshot = c.core(N1).snapshot().expect("snapshot").last;
    assert!(snapshot.index <= stale_last.index.plus(5));
    assert_ne!(
        c.core(N3).log().term_at(snapshot.index),
        Some(snapshot.term)
    );
    c.heal();
    for _ in 0..5 {
        c.heartbeat(N1);
    }
    assert_eq!(c.restores(N3), 1);
    assert_eq!(
        c.core(N3).log().last_log_id(),
        c.core(N1).log().last_log_id()
    );
    let stale = Bytes::from_static(b"stale");
    assert!(c.core(N3).log().iter().all(|e| e.data != stale));
    let w = c.propose(N1, b"w");
    c.deliver_all();
    assert!(is_committed(&c, w));
}

#[test]
fn bootstrap_only_initialises_an_empty_node_that_is_a_voter() {
    let config = Configuration::new(vec![Server::voter(N1, "a"), Server::voter(N2, "b")]);
    let state = Core::bootstrap(&RecoveredState::default(), N1, &config).expect("bootstrap");
    assert_eq!(state.entries.len(), 1);
    assert_eq!(
        Core::bootstrap(&state, N1, &config).err(),
        Some(BootstrapError::ExistingState)
    );
    assert_eq!(
        Core::bootstrap(&RecoveredState::default(), N3, &config).err(),
        Some(BootstrapError::NotVoter { id: N3 })
    );
    let bad = Configuration::new(vec![Server::voter(N1, "a"), Server::voter(N1, "b")]);
    assert!(matches!(
        Core::bootstrap(&RecoveredState::default(), N1, &bad),
        Err(BootstrapError::InvalidConfiguration(_))
    ));
}

#[test]
fn recover_cluster_forces_a_configuration_after_quorum_loss() {
    let mut c = Cluster::new(3);
    c.elect(N1);
    c.propose(N1, b"kept");
    c.deliver_all();
    // Pretend N2 and N3 are gone for good: recover N1 alone.
    let mut existing = RecoveredState::default();
    let log: Vec<_> = c.core(N1).log().iter().cloned().collect();
    existing.hard_state.term = c.core(N1).term();
    existing.entries = log.clone();
    let alone = Configuration::new(vec![Server::voter(N1, "n1")]);
    let (state, meta) = Core::recover_cluster(&existing, &alone).expect("recover");
    assert_eq!(meta.last, log.last().map(|e| e.id).unwrap_or_default());
    assert_eq!(meta.configuration, alone);
    let mut config = ringraft::core::CoreConfig::new(N1);
    config.election_timeout = ms(100);
    config.heartbeat_interval = ms(10);
    config.leader_lease_timeout = ms(50);
    let mut core = Core::new(config, state, ringraft::core::Time(0)).expect("starts");
    assert_eq!(core.commit_index(), meta.last.index);
    core.step(ringraft::core::Time(300_000_000), Input::Tick);
    for effect in core.take_effects() {
        if let ringraft::core::Effect::Persist(b) = effect {
            core.step(
                ringraft::core::Time(300_000_000),
                Input::Persisted { seq: b.seq },
            );
        }
    }
    assert_eq!(core.role(), Role::Leader, "a single voter leads again");
    assert_eq!(
        Core::recover_cluster(&RecoveredState::default(), &alone).err(),
        Some(BootstrapError::NoExistingState)
    );
}

/// A leader that has told its successor to campaign (TimeoutNow) has no lease any more: the
/// voters grant a transfer's votes although they still hear from it, so a new leader can
/// commit while the old one believes its lease holds. Found by injecting bugs by hand; the
/// simulator's read checker now catches it too.
#[test]
fn a_leader_that_sent_timeout_now_serves_no_lease_reads() {
    let mut c = Cluster::with_config(3, |cfg| cfg.lease_read = true);
    c.elect(N1);
    c.heartbeat(N1);
    let token = c.token();
    c.step(N1, Input::LeaseRead { token });
    let before = c.reply(token);
    assert_eq!(before, Some(Ok(Outcome::ReadReady { index: Index(2) })));
    // N2 holds the whole log: TimeoutNow goes out at once. Then N1 is cut off.
    let t = c.transfer(N1, Some(N2));
    let sent = c.take_in_flight();
    assert!(sent.iter().any(|m| m.body == Body::TimeoutNow), "{sent:?}");
    for m in sent {
        c.deliver(m);
    }
    c.isolate(N1);
    c.deliver_all();
    assert_eq!(c.core(N2).role(), Role::Leader);
    let w = c.propose(N2, b"after the transfer");
    c.deliver_all();
    let Some(Ok(Outcome::Committed { last, .. })) = c.reply(w) else {
        panic!("the new leader commits: {:?}", c.reply(w));
    };
    assert_eq!(last, Index(4));
    // No time has passed: N1's old lease would still hold, but N1 must not answer from it.
    assert_eq!(c.core(N1).role(), Role::Leader);
    assert_eq!(c.reply(t), None, "N1 has not heard of the new term");
    let token = c.token();
    c.step(N1, Input::LeaseRead { token });
    assert_eq!(c.reply(token), None, "a stale lease read at the old leader");
}

/// A transfer whose TimeoutNow was lost fails by timeout, but a copy of that message may still
/// arrive (delayed or duplicated), and the target would campaign with voters that ignore the
/// lease: the lease stays void for the rest of the term, and reads take a quorum round.
#[test]
fn a_failed_transfer_that_sent_timeout_now_leaves_the_lease_void_for_the_term() {
    let mut c = Cluster::with_config(3, |cfg| cfg.lease_read = true);
    c.elect(N1);
    let t = c.transfer(N1, Some(N2));
    let lost = c.take_in_flight();
    assert!(lost.iter().any(|m| m.body == Body::TimeoutNow), "{lost:?}");
    c.run_for(ms(250), ms(5));
    assert_eq!(c.reply(t), Some(Err(RequestError::TransferTimeout)));
    assert_eq!(c.core(N1).role(), Role::Leader);
    let token = c.token();
    c.step(N1, Input::LeaseRead { token });
    assert_eq!(c.reply(token), None, "answered from a void lease");
    c.deliver_all();
    assert_eq!(
        c.reply(token),
        Some(Ok(Outcome::ReadReady { index: Index(2) }))
    );
}

/// A transfer that fails before TimeoutNow was sent (the target never caught up) leaves the
/// lease intact: no voter was asked to grant a transfer's vote.
#[test]
fn a_transfer_that_never_sent_timeout_now_keeps_the_lease() {
    let mut c = Cluster::with_config(3, |cfg| cfg.lease_read = true);
    c.elect(N1);
    c.isolate(N3);
    c.propose(N1, b"w");
    c.deliver_all();
    let t = c.transfer(N1, Some(N3));
    c.run_for(ms(250), ms(5));
    assert_eq!(c.reply(t), Some(Err(RequestError::TransferTimeout)));
    c.heartbeat(N1);
    let token = c.token();
    c.step(N1, Input::LeaseRead { token });
    assert_eq!(
        c.reply(token),
        Some(Ok(Outcome::ReadReady { index: Index(3) }))
    );
}

/// A node restarts with a snapshot and a stale log that disagrees with it (the log was not
/// compacted yet when it crashed). The stale log is discarded, and so must be the
/// configurations it held: a never-committed configuration entry in it must not become the
/// node's latest configuration.
#[test]
fn a_restart_discards_the_configurations_of_a_stale_log_behind_a_snapshot() {
    use ringraft_storage::{Entry, EntryKind, LogId, SnapshotMeta};
    let three = Configuration::new(vec![
        Server::voter(N1, "n1"),
        Server::voter(N2, "n2"),
        Server::voter(N3, "n3"),
    ]);
    let mut four = three.clone();
    four.servers.push(Server::voter(N4, "n4"));
    let id = |term, index| LogId::new(Term(term), Index(index));
    // The stale log: terms 1..2, with an uncommitted configuration at 4 and entries past the
    // snapshot's index, all of another branch than the snapshot (taken at t3/i6).
    let mut entries = vec![Entry::new(
        id(1, 1),
        EntryKind::Configuration,
        three.encode(),
    )];
    entries.push(Entry::new(id(2, 2), EntryKind::Noop, Bytes::new()));
    entries.push(Entry::new(id(2, 3), EntryKind::Command, Bytes::from("a")));
    entries.push(Entry::new(
        id(2, 4),
        EntryKind::Configuration,
        four.encode(),
    ));
    for i in 5..=8 {
        entries.push(Entry::new(id(2, i), EntryKind::Command, Bytes::from("b")));
    }
    let state = RecoveredState {
        hard_state: ringraft::core::HardState {
            term: Term(3),
            vote: None,
            commit: Index(6),
        },
        snapshot: Some(SnapshotMeta {
            id: "3-6".into(),
            last: id(3, 6),
            configuration: three.clone(),
            configuration_index: Index(1),
            size: 0,
        }),
        log_prev: LogId::default(),
        entries,
        staged_restores: Vec::new(),
    };
    let mut core = Core::new(
        ringraft::core::CoreConfig::new(N1),
        state,
        ringraft::core::Time(0),
    )
    .expect("starts");
    assert_eq!(core.log().prev(), id(3, 6));
    assert_eq!(core.log().last_index(), Index(6), "the stale log is gone");
    assert_eq!(core.latest_configuration(), (Index(1), three));
    assert_eq!(core.configurations().len(), 1);
    // The store is told to drop the stale log too, its suffix past the snapshot included:
    // compacting through the snapshot alone would leave entries 7 and 8 of the other branch
    // in the store, and the next append at 7 would fail there (the simulator running the
    // glue found that at seed 35 234).
    let batch = core
        .take_effects()
        .into_iter()
        .find_map(|e| match e {
            ringraft::core::Effect::Persist(batch) => Some(batch),
            _ => None,
        })
        .expect("a persist batch makes the store agree");
    assert_eq!(batch.truncate_from, Some(Index(7)));
    assert_eq!(batch.compact_through, Some(id(3, 6)));
}

/// A node that an uncommitted configuration demotes campaigns even when its commit index
/// lags behind the configuration before that change (a restart that did not recover its
/// commit index): that earlier configuration is committed anyway, because a leader appends a
/// configuration only once the one before it committed. Otherwise, when it holds the longest
/// log, no one can finish the change (the simulator's livelock at seed 30 884).
#[test]
fn a_demoted_node_whose_commit_index_lags_still_campaigns() {
    use ringraft_storage::{Entry, EntryKind, LogId};
    let three = Configuration::new(vec![
        Server::voter(N1, "n1"),
        Server::voter(N2, "n2"),
        Server::voter(N3, "n3"),
    ]);
    let demoted = Configuration::new(vec![
        Server::nonvoter(N1, "n1"),
        Server::nonvoter(N2, "n2"),
        Server::voter(N3, "n3"),
    ]);
    let id = |term, index| LogId::new(Term(term), Index(index));
    let entries = vec![
        Entry::new(id(1, 1), EntryKind::Configuration, three.encode()),
        Entry::new(id(2, 2), EntryKind::Noop, Bytes::new()),
        Entry::new(id(2, 3), EntryKind::Configuration, demoted.encode()),
    ];
    let state = ringraft::core::RecoveredState {
        hard_state: ringraft::core::HardState {
            term: Term(2),
            vote: None,
            // Lost in a restart: not even the bootstrap entry is known committed.
            commit: Index(0),
        },
        snapshot: None,
        log_prev: LogId::default(),
        entries,
        staged_restores: Vec::new(),
    };
    let mut config = ringraft::core::CoreConfig::new(N1);
    config.pre_vote = true;
    let mut core =
        ringraft::core::Core::new(config, state, ringraft::core::Time(0)).expect("starts");
    let _ = core.take_effects();
    let later = ringraft::core::Time(Duration::from_secs(5).as_nanos() as u64);
    core.step(later, Input::Tick);
    let asked: Vec<NodeId> = core
        .take_effects()
        .into_iter()
        .filter_map(|e| match e {
            ringraft::core::Effect::Send(m) if matches!(m.body, Body::PreVote { .. }) => Some(m.to),
            _ => None,
        })
        .collect();
    assert!(
        asked.contains(&N3),
        "N1 campaigns, asking the latest configuration's voter N3 (asked {asked:?})"
    );
}
