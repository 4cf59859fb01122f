//! Hand-driven scenarios against real cores (ARCHITECTURE §8 layer 2): every step is chosen by the
//! test, and every assertion is exact.

use bytes::Bytes;
use ringraft::core::{Input, Outcome, RequestError, Role};
use ringraft::sim::testkit::Cluster;
use ringraft_net::message::{AppendEntries, Body, Message};
use ringraft_storage::{Entry, EntryKind, Index, LogId, NodeId, Term};
use std::time::Duration;

const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);
const N3: NodeId = NodeId(3);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn committed(cluster: &Cluster, token: ringraft::core::Token) -> Outcome {
    match cluster.reply(token) {
        Some(Ok(outcome)) => outcome,
        other => panic!("expected a successful reply, got {other:?}"),
    }
}

#[test]
fn a_single_node_elects_itself_and_commits_alone() {
    let mut c = Cluster::new(1);
    c.elect(N1);
    assert_eq!(c.core(N1).term(), Term(2));
    let t = c.propose(N1, b"x");
    assert_eq!(
        committed(&c, t),
        Outcome::Committed {
            term: Term(2),
            first: Index(3),
            last: Index(3)
        }
    );
    assert_eq!(
        c.applied(N1).last().map(|e| e.data.clone()),
        Some(Bytes::from_static(b"x"))
    );
}

#[test]
fn three_nodes_elect_exactly_one_leader() {
    let mut c = Cluster::new(3);
    c.run_for(ms(1000), ms(1));
    let leaders: Vec<NodeId> = [N1, N2, N3]
        .into_iter()
        .filter(|&n| c.core(n).role() == Role::Leader)
        .collect();
    assert_eq!(leaders.len(), 1, "exactly one leader");
    let leader = leaders[0];
    for n in [N1, N2, N3] {
        assert_eq!(c.core(n).leader(), Some(leader));
        assert_eq!(c.core(n).term(), c.core(leader).term());
    }
    // The leader's no-op committed everywhere.
    for n in [N1, N2, N3] {
        assert_eq!(c.core(n).commit_index(), Index(2));
    }
}

#[test]
fn after_the_leader_fails_a_new_one_is_elected_with_a_higher_term() {
    let mut c = Cluster::new(3);
    c.elect(N1);
    let old_term = c.core(N1).term();
    c.crash(N1);
    c.run_for(ms(1000), ms(1));
    let leader = c.leader().expect("a new leader");
    assert_ne!(leader, N1);
    assert!(c.core(leader).term() > old_term);
}

#[test]
fn a_partitioned_old_leader_cannot_commit_and_its_proposals_resolve_leadership_lost() {
    let mut c = Cluster::new(3);
    c.elect(N1);
    c.isolate(N1);
    let token = c.propose(N1, b"lost?");
    c.deliver_all();
    assert_eq!(c.reply(token), None, "no quorum: nothing commits");
    let commit_before = c.core(N1).commit_index();
    // The other two elect a new leader meanwhile; the old one steps down at its lease.
    c.run_for(ms(400), ms(1));
    assert_ne!(c.core(N1).role(), Role::Leader);
    assert_eq!(c.core(N1).commit_index(), commit_before);
    assert_eq!(c.reply(token), Some(Err(RequestError::LeadershipLost)));
    let leader = c.leader().expect("the majority elected a leader");
    assert_ne!(leader, N1);
    // After healing, the old leader's uncommitted entry is replaced by the new leader's log.
    c.heal();
    c.run_for(ms(300), ms(1));
    let old_entry = c.core(N1).log().entry(Index(3)).map(|e| e.data.clone());
    assert_ne!(old_entry, Some(Bytes::from_static(b"lost?")));
    assert_eq!(
        c.core(N1).log().last_log_id(),
        c.core(leader).log().last_log_id()
    );
}

#[test]
fn a_far_behind_follower_catches_up() {
    let mut c = Cluster::with_config(3, |cfg| {
        cfg.max_append_entries = 4;
        cfg.max_inflight = 2;
    });
    c.elect(N1);
    c.crash(N3);
    let mut last = None;
    for _ in 0..100 {
        last = Some(c.propose(N1, b"w"));
        c.deliver_all();
    }
    let last = committed(&c, last.expect("proposed"));
    c.restart(N3);
    c.run_for(ms(200), ms(1));
    let Outcome::Committed {
        last: last_index, ..
    } = last
    else {
        panic!("{last:?}")
    };
    assert_eq!(
        c.core(N3).log().last_log_id(),
        c.core(N1).log().last_log_id()
    );
    assert!(c.core(N3).commit_index() >= last_index);
    assert_eq!(c.applied(N3).len() as u64, c.core(N3).commit_index().0);
}

#[test]
fn a_conflicting_follower_suffix_is_truncated() {
    let mut c = Cluster::new(3);
    c.elect(N1);
    // N1 appends two entries that reach no one, then loses leadership.
    c.isolate(N1);
    c.propose(N1, b"stale-1");
    c.propose(N1, b"stale-2");
    c.deliver_all();
    assert_eq!(c.core(N1).log().last_index(), Index(4));
    c.elect(N2);
    let t = c.propose(N2, b"fresh");
    c.deliver_all();
    assert!(matches!(committed(&c, t), Outcome::Committed { .. }));
    c.heal();
    c.heartbeat(N2);
    c.heartbeat(N2);
    let log = c.core(N1).log();
    assert_eq!(log.last_log_id(), c.core(N2).log().last_log_id());
    let data: Vec<Bytes> = log.iter().map(|e| e.data.clone()).collect();
    assert!(!data.contains(&Bytes::from_static(b"stale-1")));
    assert!(data.contains(&Bytes::from_static(b"fresh")));
}

#[test]
fn with_pre_vote_a_partitioned_node_rejoining_does_not_disrupt_the_leader() {
    let mut c = Cluster::new(3);
    c.elect(N1);
    let term = c.core(N1).term();
    c.isolate(N3);
    // N3 times out again and again but, without a quorum of pre-votes, never raises its term.
    for _ in 0..10 {
        c.run_for(ms(100), ms(5));
    }
    assert_eq!(c.core(N3).term(), term);
    c.heal();
    c.run_for(ms(100), ms(1));
    assert_eq!(c.core(N1).role(), Role::Leader);
    assert_eq!(c.core(N1).term(), term);
    assert_eq!(c.core(N3).leader(), Some(N1));
}

#[test]
fn without_pre_vote_a_rejoining_node_does_disrupt_the_leader() {
    // The control experiment for the test above.
    let mut c = Cluster::with_config(3, |cfg| cfg.pre_vote = false);
    c.elect(N1);
    let term = c.core(N1).term();
    c.isolate(N3);
    c.run_for(ms(1000), ms(5));
    assert!(c.core(N3).term() > term);
}

#[test]
fn a_leader_steps_down_without_quorum_contact() {
    let mut c = Cluster::new(3);
    c.elect(N1);
    c.isolate(N1);
    // Lease timeout is 50 ms: by 45 ms it still leads, by 70 ms it has stepped down.
    c.advance(ms(45));
    c.tick(N1);
    assert_eq!(c.core(N1).role(), Role::Leader);
    c.advance(ms(25));
    c.tick(N1);
    assert_eq!(c.core(N1).role(), Role::Follower);
    assert_eq!(c.core(N1).leader(), None);
}

#[test]
fn a_leader_that_did_not_run_sends_a_round_before_it_judges_its_followers() {
    let mut c = Cluster::with_config(3, |cfg| cfg.lease_read = true);
    c.elect(N1);
    c.heartbeat(N1);
    // N1 does not run for 100 ms (its thread stalled), longer than its 50 ms lease timeout and
    // its 95 ms lease, while its followers were there all along: its first tick sends a round
    // instead of stepping down, and the answers keep it leading.
    c.advance(ms(100));
    c.tick(N1);
    assert_eq!(c.core(N1).role(), Role::Leader);
    // The lease is not extended by the stall: a lease read needs the new round.
    assert_lease_read_needs_a_round(&mut c, "no lease from rounds sent before the stall");
    c.heartbeat(N1);
    assert_eq!(c.core(N1).role(), Role::Leader);
}

#[test]
fn a_late_leader_without_followers_steps_down_one_tick_later() {
    let mut c = Cluster::new(3);
    c.elect(N1);
    c.heartbeat(N1);
    c.isolate(N1);
    c.advance(ms(80));
    c.tick(N1);
    assert_eq!(
        c.core(N1).role(),
        Role::Leader,
        "a late tick is excused once"
    );
    // The next tick is late too (nothing ran N1 for 30 ms): no second excuse.
    c.advance(ms(30));
    c.tick(N1);
    assert_eq!(c.core(N1).role(), Role::Follower);
}

#[test]
fn read_index_on_a_deposed_leader_fails() {
    let mut c = Cluster::new(3);
    c.elect(N1);
    c.isolate(N1);
    let token = c.token();
    c.step(N1, Input::ReadIndex { token });
    c.deliver_all();
    assert_eq!(c.reply(token), None, "no quorum confirms the read");
    c.run_for(ms(100), ms(5));
    assert_eq!(c.reply(token), Some(Err(RequestError::LeadershipLost)));
    // Once deposed, reads are refused outright.
    let token = c.token();
    c.step(N1, Input::ReadIndex { token });
    assert!(matches!(
        c.reply(token),
        Some(Err(RequestError::NotLeader { .. }))
    ));
}

#[test]
fn read_index_waits_for_a_quorum_round_and_returns_the_commit_index() {
    let mut c = Cluster::new(3);
    c.elect(N1);
    let w = c.propose(N1, b"v");
    c.deliver_all();
    let Outcome::Committed { last, .. } = committed(&c, w) else {
        unreachable!()
    };
    let token = c.token();
    c.step(N1, Input::ReadIndex { token });
    assert_eq!(c.reply(token), None, "not before a quorum answers");
    c.deliver_all();
    assert_eq!(c.reply(token), Some(Ok(Outcome::ReadReady { index: last })));
}

#[test]
fn verify_leader_succeeds_with_one_follower_cut_off() {
    let mut c = Cluster::new(3);
    c.elect(N1);
    c.cut(N1, N3);
    let token = c.token();
    c.step(N1, Input::VerifyLeader { token });
    c.deliver_all();
    assert_eq!(c.reply(token), Some(Ok(Outcome::LeaderVerified)));
}

#[test]
fn lease_reads_answer_without_a_round_while_the_lease_holds() {
    let mut c = Cluster::with_config(3, |cfg| cfg.lease_read = true);
    c.elect(N1);
    c.heartbeat(N1);
    let token = c.token();
    c.step(N1, Input::LeaseRead { token });
    assert_eq!(
        c.reply(token),
        Some(Ok(Outcome::ReadReady { index: Index(2) }))
    );
    // Past the lease (election timeout minus drift) without contact, it needs a round.
    c.isolate(N1);
    c.advance(ms(99));
    let token = c.token();
    c.step(N1, Input::LeaseRead { token });
    assert_eq!(c.reply(token), None);
}

#[test]
fn lease_reads_are_refused_when_disabled() {
    let mut c = Cluster::new(3);
    c.elect(N1);
    let token = c.token();
    c.step(N1, Input::LeaseRead { token });
    assert_eq!(c.reply(token), Some(Err(RequestError::LeaseReadDisabled)));
}

#[test]
fn a_barrier_commits_as_an_entry_of_its_own() {
    let mut c = Cluster::new(3);
    c.elect(N1);
    let token = c.token();
    c.step(N1, Input::Barrier { token });
    c.deliver_all();
    assert_eq!(
        c.reply(token),
        Some(Ok(Outcome::Committed {
            term: Term(2),
            first: Index(3),
            last: Index(3)
        }))
    );
    assert_eq!(
        c.core(N2).log().entry(Index(3)).map(|e| e.kind),
        Some(EntryKind::Barrier)
    );
}

#[test]
fn followers_refuse_requests_with_a_leader_hint() {
    let mut c = Cluster::new(3);
    c.elect(N1);
    let t = c.propose(N2, b"x");
    assert_eq!(
        c.reply(t),
        Some(Err(RequestError::NotLeader { leader: Some(N1) }))
    );
    let token = c.token();
    c.step(
        N2,
        Input::Propose {
            token,
            commands: vec![],
            extensions: vec![],
        },
    );
    assert!(matches!(
        c.reply(token),
        Some(Err(RequestError::NotLeader { .. }))
    ));
}

#[test]
fn a_vote_is_not_released_before_it_is_durable() {
    let mut c = Cluster::new(3);
    c.hold_persist(N2, true);
    c.hold_persist(N3, true);
    c.campaign(N1);
    // Pre-votes are answered at once (they change nothing durable); real votes wait.
    c.deliver_all();
    assert_eq!(c.core(N1).role(), Role::Candidate);
    assert_eq!(c.core(N2).vote(), Some(N1));
    c.hold_persist(N2, false);
    c.deliver_all();
    assert_eq!(c.core(N1).role(), Role::Leader);
}

#[test]
fn the_leader_counts_itself_only_once_its_write_is_durable() {
    let mut c = Cluster::new(3);
    c.elect(N1);
    c.hold_persist(N1, true);
    c.cut(N1, N3);
    let t = c.propose(N1, b"x");
    c.deliver_all();
    // N2 holds it durably, N1 does not yet: one of three is not a quorum.
    assert_eq!(c.reply(t), None);
    c.hold_persist(N1, false);
    assert!(matches!(c.reply(t), Some(Ok(Outcome::Committed { .. }))));
}

/// Raft Figure 8, driven by hand: returns the cluster with N1 leading term 4 while X (term 2)
/// sits on a majority (N1, N3) next to N1's not-yet-durable term-4 no-op.
fn drive_figure_8(c: &mut Cluster) {
    c.elect(N1);
    // N1 (term 2) appends X at 3, which reaches no one; then it crashes.
    c.isolate(N1);
    c.propose(N1, b"X");
    c.deliver_all();
    c.crash(N1);
    c.heal();
    // N2 wins term 3 (with N3's vote), appends its no-op Y at 3, which reaches no one.
    c.campaign(N2);
    c.deliver_only(is_election_traffic);
    assert_eq!(c.core(N2).role(), Role::Leader);
    c.drop_in_flight();
    c.crash(N2);
    // N1 returns, learns term 3 from N3's refusal, then wins term 4 with N3's vote; its own
    // no-op is not durable yet.
    c.restart(N1);
    c.campaign(N1);
    c.deliver_only(is_election_traffic);
    assert_eq!(c.core(N1).term(), Term(3));
    c.campaign(N1);
    c.deliver_only(|m| matches!(m.body, Body::PreVote { .. } | Body::PreVoteResponse { .. }));
    assert_eq!(c.core(N1).role(), Role::Candidate);
    c.hold_persist(N1, true);
    c.deliver_all();
    assert_eq!(c.core(N1).role(), Role::Leader);
    // N3 now holds X (term 2) and N1's no-op; X is on a majority but is not of term 4.
    assert_eq!(c.core(N3).log().term_at(Index(3)), Some(Term(2)));
}

#[test]
fn a_leader_never_commits_an_old_term_entry_by_counting() {
    let mut c = Cluster::new(3);
    drive_figure_8(&mut c);
    assert_eq!(
        c.core(N1).commit_index(),
        Index(2),
        "X must not commit by counting"
    );
    // Once its own no-op is durable, X commits with it.
    c.hold_persist(N1, false);
    assert_eq!(c.core(N1).commit_index(), Index(4));
}

#[test]
fn the_commit_old_term_mutation_commits_x_by_counting() {
    // The control experiment: with the §5.4.2 check removed, X commits although N2, which
    // holds Y at index 3 in term 3, can still win an election with N1's vote after N1 crashes
    // before its no-op is durable, and overwrite X.
    let mut c = Cluster::with_config(3, |cfg| {
        cfg.mutation = Some(ringraft::core::Mutation::CommitOldTermByCounting)
    });
    drive_figure_8(&mut c);
    assert_eq!(c.core(N1).commit_index(), Index(3));
}

fn is_election_traffic(m: &Message) -> bool {
    matches!(
        m.body,
        Body::PreVote { .. }
            | Body::PreVoteResponse { .. }
            | Body::RequestVote { .. }
            | Body::RequestVoteResponse { .. }
    )
}

#[test]
fn malformed_append_entries_are_rejected_without_state_changes() {
    let mut c = Cluster::new(3);
    c.elect(N1);
    // The followers learn that the no-op committed.
    c.settle(N1);
    let before = c.core(N2).log().last_log_id();
    let term = c.core(N1).term();
    // Entries that skip an index.
    let gap = Entry::new(LogId::new(term, Index(9)), EntryKind::Command, Bytes::new());
    let message = Message {
        from: N1,
        to: N2,
        term,
        body: Body::AppendEntries(AppendEntries {
            prev_log_id: LogId::new(term, Index(2)),
            entries: vec![gap],
            leader_commit: Index(9),
            round: 1,
        }),
    };
    c.deliver(message);
    assert_eq!(c.core(N2).log().last_log_id(), before);
    assert_eq!(c.core(N2).commit_index(), Index(2));
    // A configuration entry that does not decode.
    let bad = Entry::new(
        LogId::new(term, Index(3)),
        EntryKind::Configuration,
        Bytes::from_static(b"\x07garbage"),
    );
    let message = Message {
        from: N1,
        to: N2,
        term,
        body: Body::AppendEntries(AppendEntries {
            prev_log_id: LogId::new(term, Index(2)),
            entries: vec![bad],
            leader_commit: Index(2),
            round: 1,
        }),
    };
    c.deliver(message);
    assert_eq!(c.core(N2).log().last_log_id(), before);
    // A message addressed to someone else, and one from a stranger with a stale term.
    let stray = Message {
        from: NodeId(9),
        to: N3,
        term: Term(1),
        body: Body::TimeoutNow,
    };
    c.deliver(stray);
    assert_eq!(c.core(N3).leader(), Some(N1));
}

#[test]
fn a_restarted_node_reapplies_its_recorded_commit_without_a_leader() {
    let mut c = Cluster::new(3);
    c.elect(N1);
    for _ in 0..5 {
        c.propose(N1, b"w");
        c.deliver_all();
    }
    // One more write so the commit index of the first five rides along to disk.
    c.propose(N1, b"w");
    c.deliver_all();
    c.heartbeat(N1);
    c.crash(N2);
    c.isolate(N2);
    c.restart(N2);
    assert!(c.core(N2).commit_index() >= Index(7));
    assert!(c.applied(N2).len() >= 7);
}

#[test]
fn reconfigured_timing_rearms_timers_and_invalid_timing_is_ignored() {
    use ringraft::core::Timing;
    let mut c = Cluster::new(3);
    c.elect(N1);
    let valid = Timing {
        election_timeout: ms(200),
        heartbeat_interval: ms(2),
        leader_lease_timeout: ms(100),
        trailing_logs: 5,
    };
    // The leader's heartbeat interval shrank: it heartbeats at its next tick.
    c.step(N1, Input::Reconfigure(valid));
    assert!(c.core(N1).next_timer() <= c.now());
    // A follower draws its next election deadline from the new timeout: within [T, 2T).
    c.step(N2, Input::Reconfigure(valid));
    let deadline = c.core(N2).next_timer().0 - c.now().0;
    assert!((200_000_000..400_000_000).contains(&deadline), "{deadline}");
    // Heartbeats longer than the election timeout are refused; nothing changes.
    let invalid = Timing {
        heartbeat_interval: ms(500),
        ..valid
    };
    c.step(N2, Input::Reconfigure(invalid));
    assert_eq!(c.core(N2).next_timer().0 - c.now().0, deadline);
}

/// A follower answers a message of an older term with `StaleTerm`, echoing that message's
/// heartbeat round under its current term. When the leader of that older term leads the next
/// term too, the echo looks like an answer to its own messages, and rounds are numbered from 1
/// in every term: counting it as an acknowledgement let a cut-off leader confirm reads that a
/// quorum never confirmed (found by the simulator's read checker with late duplicates).
#[test]
fn a_stale_term_answer_does_not_acknowledge_a_round() {
    let mut c = Cluster::new(3);
    c.elect(N1);
    for _ in 0..6 {
        c.heartbeat(N1);
    }
    // A heartbeat of term 2 with a high round, held back.
    c.advance(ms(10));
    c.tick(N1);
    let held: Vec<Message> = c
        .take_in_flight()
        .into_iter()
        .filter(|m| m.to == N3 && matches!(m.body, Body::Heartbeat { .. }))
        .collect();
    assert_eq!(held.len(), 1);
    let Body::Heartbeat {
        round: old_round, ..
    } = held[0].body
    else {
        unreachable!()
    };
    // N1 loses its lease, steps down, and wins the next term: rounds start again at 1. (A
    // tick that comes late only sends a round; the one after it judges.)
    c.isolate(N1);
    c.advance(ms(60));
    c.tick(N1);
    c.advance(ms(10));
    c.tick(N1);
    assert_eq!(c.core(N1).role(), Role::Follower);
    c.heal();
    c.drop_in_flight();
    c.elect(N1);
    let term = c.core(N1).term();
    assert_eq!(term, Term(3));
    c.heartbeat(N1);
    // The old heartbeat reaches N3 now; N3 answers StaleTerm in term 3 with the old round.
    c.deliver(held[0].clone());
    let answers = c.take_in_flight();
    let stale = answers
        .iter()
        .find(|m| {
            m.from == N3
                && m.term == term
                && matches!(
                    m.body,
                    Body::AppendEntriesResponse(ringraft_net::message::AppendEntriesResponse {
                        result: ringraft_net::message::AppendResult::StaleTerm,
                        round,
                    }) if round == old_round
                )
        })
        .cloned()
        .expect("N3 answers the old heartbeat with StaleTerm");
    // N1 is cut off; only that answer reaches it. A read must wait for a real quorum round.
    c.isolate(N1);
    c.step(N1, Input::Message(stale));
    let token = c.token();
    c.step(N1, Input::ReadIndex { token });
    c.deliver_all();
    assert_eq!(c.reply(token), None, "a read confirmed by a stale echo");
    c.heal();
    c.heartbeat(N1);
    assert!(matches!(
        c.reply(token),
        Some(Ok(Outcome::ReadReady { .. }))
    ));
}

/// Leader stickiness does not apply to the leader itself: a follower that heard from its
/// leader a moment ago still grants that leader's (pre-)vote for a higher term (it stepped
/// down and campaigns again), as hashicorp does, while it refuses anyone else's.
#[test]
fn a_follower_grants_its_own_leaders_vote_and_pre_vote() {
    let mut c = Cluster::new(3);
    c.elect(N1);
    c.heartbeat(N1);
    let term = c.core(N2).term();
    let last = c.core(N1).log().last_log_id();
    let ask = |from: NodeId, body: Body| Message {
        from,
        to: N2,
        term: term.next(),
        body,
    };
    let answers = |c: &mut Cluster| -> Vec<Body> {
        c.take_in_flight()
            .into_iter()
            .filter(|m| m.from == N2)
            .map(|m| m.body)
            .collect()
    };
    // N3 (same log) is refused: N2 still hears from N1.
    c.deliver(ask(N3, Body::PreVote { last_log_id: last }));
    assert_eq!(
        answers(&mut c),
        vec![Body::PreVoteResponse { granted: false }]
    );
    // N1 itself is granted a pre-vote...
    c.deliver(ask(N1, Body::PreVote { last_log_id: last }));
    assert_eq!(
        answers(&mut c),
        vec![Body::PreVoteResponse { granted: true }]
    );
    // ...and a vote.
    c.deliver(ask(
        N1,
        Body::RequestVote {
            last_log_id: last,
            leadership_transfer: false,
        },
    ));
    assert_eq!(
        answers(&mut c),
        vec![Body::RequestVoteResponse { granted: true }]
    );
    assert_eq!(c.core(N2).term(), term.next());
}

/// A reload that lengthens the election timeout must not stretch a lease over rounds that
/// voters acknowledged under the old timeout (they may already have voted for someone else
/// with it): lease reads wait for a round sent after the reload. Found by the simulator (seed
/// 46 959) once lease reads ran under timing reloads.
#[test]
fn a_lease_counts_only_rounds_sent_after_the_election_timeout_changed() {
    use ringraft::core::Timing;
    let mut c = Cluster::with_config(3, |cfg| cfg.lease_read = true);
    c.elect(N1);
    c.heartbeat(N1);
    assert_lease_read_answers_at_once(&mut c);
    let timing = Timing {
        election_timeout: ms(300),
        heartbeat_interval: ms(10),
        leader_lease_timeout: ms(50),
        trailing_logs: 10,
    };
    c.advance(ms(1));
    for id in [N1, N2, N3] {
        c.step(id, Input::Reconfigure(timing));
    }
    assert_lease_read_needs_a_round(&mut c, "a lease from a round before the reload");
    // The next read is served from the new round's lease.
    assert_lease_read_answers_at_once(&mut c);
}

/// `n` heartbeat intervals of the test configuration (10 ms), each with one write at N1 that
/// commits.
fn write_every_interval(c: &mut Cluster, n: usize) {
    for _ in 0..n {
        c.advance(ms(10));
        c.tick(N1);
        let token = c.propose(N1, b"w");
        c.deliver_all();
        committed(c, token);
    }
}

/// A lease read at N1 is answered at once: its lease holds.
/// A lease read at N1 is not answered until a new round is acknowledged (`why` says what
/// lease it must not use), then is.
fn assert_lease_read_needs_a_round(c: &mut Cluster, why: &str) {
    let token = c.token();
    c.step(N1, Input::LeaseRead { token });
    assert_eq!(c.reply(token), None, "{why}");
    c.deliver_all();
    assert!(matches!(
        c.reply(token),
        Some(Ok(Outcome::ReadReady { .. }))
    ));
}

fn assert_lease_read_answers_at_once(c: &mut Cluster) {
    let token = c.token();
    c.step(N1, Input::LeaseRead { token });
    assert!(matches!(
        c.reply(token),
        Some(Ok(Outcome::ReadReady { .. }))
    ));
}

/// The messages `from` sent to `to` since the last `take_sent`, by kind: (AppendEntries,
/// heartbeats).
fn appends_and_heartbeats(sent: &[Message], from: NodeId, to: NodeId) -> (usize, usize) {
    let between = sent.iter().filter(|m| m.from == from && m.to == to);
    let appends = between
        .clone()
        .filter(|m| matches!(m.body, Body::AppendEntries(_)))
        .count();
    let heartbeats = between
        .filter(|m| matches!(m.body, Body::Heartbeat { .. }))
        .count();
    (appends, heartbeats)
}

/// Heartbeats of a busy leader (ARCHITECTURE §4): a follower that keeps receiving
/// AppendEntries is sent no heartbeats; its appends acknowledge the rounds, so the leader keeps
/// its lease; once no AppendEntries went to it for two rounds, the next round's heartbeat does.
#[test]
fn a_busy_follower_gets_no_heartbeats_and_acknowledges_rounds_with_its_appends() {
    let mut c = Cluster::with_config(3, |cfg| cfg.lease_read = true);
    c.elect(N1);
    c.heartbeat(N1);
    c.take_sent();
    write_every_interval(&mut c, 20);
    let sent = c.take_sent();
    for peer in [N2, N3] {
        let (appends, heartbeats) = appends_and_heartbeats(&sent, N1, peer);
        assert!(appends >= 20, "{appends} AppendEntries to {peer}");
        assert_eq!(heartbeats, 0, "heartbeats to busy {peer}");
    }
    assert_eq!(c.core(N1).role(), Role::Leader);
    // The appends acknowledged the rounds: the lease holds and answers without a round.
    assert_lease_read_answers_at_once(&mut c);
    // Quiet now: the last AppendEntries carried the latest round, and two rounds pass before
    // the followers count as idle and get heartbeats again.
    c.take_sent();
    heartbeats_only_at_quiet_tick(&mut c, 3, "a lease of five intervals");
    assert_lease_read_answers_at_once(&mut c);
}

/// Ticks the leader N1 through `last` quiet heartbeat intervals and asserts that its
/// followers get a heartbeat at the last one only, and that N1 still leads.
fn heartbeats_only_at_quiet_tick(c: &mut Cluster, last: u64, case: &str) {
    for quiet_tick in 1..=last {
        c.heartbeat(N1);
        let sent = c.take_sent();
        for peer in [N2, N3] {
            let (_, heartbeats) = appends_and_heartbeats(&sent, N1, peer);
            assert_eq!(
                heartbeats,
                usize::from(quiet_tick == last),
                "{case}, quiet tick {quiet_tick}, to {peer}"
            );
        }
        assert_eq!(c.core(N1).role(), Role::Leader, "{case}");
    }
}

/// The longer the lease is against the heartbeat interval, the more rounds a busy follower may
/// go without a heartbeat (`Core::busy_rounds`: two with four or five intervals, then as many
/// as leave three intervals spare, four at most), and the leader keeps its lease throughout.
#[test]
fn a_longer_lease_lets_busy_followers_go_more_rounds_without_heartbeats() {
    for (intervals, rounds) in [(4, 2), (5, 2), (6, 3), (7, 4), (10, 4)] {
        let mut c = Cluster::with_config(3, |cfg| {
            cfg.lease_read = true;
            cfg.leader_lease_timeout = cfg.heartbeat_interval * intervals;
            cfg.election_timeout = cfg.election_timeout.max(cfg.leader_lease_timeout);
        });
        assert_eq!(
            c.core(N1).busy_rounds(),
            rounds,
            "a lease of {intervals} intervals"
        );
        c.elect(N1);
        c.heartbeat(N1);
        write_every_interval(&mut c, 12);
        c.take_sent();
        // Quiet now: `rounds` rounds pass before the followers count as idle.
        let case = format!("a lease of {intervals} intervals");
        heartbeats_only_at_quiet_tick(&mut c, rounds + 1, &case);
        assert_lease_read_answers_at_once(&mut c);
        // The followers learned the last write's commit with that heartbeat.
        let commit = c.core(N1).commit_index();
        for peer in [N2, N3] {
            assert_eq!(c.core(peer).commit_index(), commit, "{intervals} intervals");
        }
    }
}

/// A lease shorter than four heartbeat intervals leaves no room for a round acknowledged late:
/// every round reaches every follower, busy or not.
#[test]
fn a_short_lease_keeps_a_heartbeat_in_every_round() {
    let mut c = Cluster::with_config(3, |cfg| {
        cfg.leader_lease_timeout = cfg.heartbeat_interval * 3;
    });
    c.elect(N1);
    c.take_sent();
    write_every_interval(&mut c, 5);
    let sent = c.take_sent();
    for peer in [N2, N3] {
        assert_eq!(appends_and_heartbeats(&sent, N1, peer).1, 5, "to {peer}");
    }
}

/// A verification's round goes to busy followers too: it must not wait for the next write.
#[test]
fn a_verification_round_reaches_busy_followers() {
    let mut c = Cluster::new(3);
    c.elect(N1);
    let token = c.propose(N1, b"w");
    c.deliver_all();
    committed(&c, token);
    c.take_sent();
    let token = c.token();
    c.step(N1, Input::VerifyLeader { token });
    let sent = c.take_sent();
    for peer in [N2, N3] {
        assert_eq!(appends_and_heartbeats(&sent, N1, peer), (0, 1), "to {peer}");
    }
    c.deliver_all();
    assert_eq!(c.reply(token), Some(Ok(Outcome::LeaderVerified)));
}

/// A verification whose own round was lost (the leader was cut off) does not wait for busy
/// followers to become idle: the heartbeat timer's round while it waits reaches every
/// follower, and the read is answered at the next round.
#[test]
fn the_timer_round_while_a_verification_waits_reaches_busy_followers() {
    let mut c = Cluster::new(3);
    c.elect(N1);
    c.heartbeat(N1);
    write_every_interval(&mut c, 4);
    c.isolate(N1);
    let token = c.token();
    c.step(N1, Input::VerifyLeader { token });
    c.deliver_all();
    assert_eq!(c.reply(token), None, "its round was lost");
    c.heal();
    c.take_sent();
    c.heartbeat(N1);
    let sent = c.take_sent();
    for peer in [N2, N3] {
        assert_eq!(appends_and_heartbeats(&sent, N1, peer).1, 1, "to {peer}");
    }
    assert_eq!(c.reply(token), Some(Ok(Outcome::LeaderVerified)));
}

/// A follower whose AppendEntries go unanswered is not busy: the heartbeats that probe it (and
/// restart a stalled pipeline) keep going out every round, while its answering peer gets none.
#[test]
fn a_follower_that_does_not_answer_keeps_getting_heartbeats() {
    let mut c = Cluster::new(3);
    c.elect(N1);
    c.heartbeat(N1);
    c.cut(N1, N3);
    c.take_sent();
    write_every_interval(&mut c, 6);
    let sent = c.take_sent();
    assert_eq!(appends_and_heartbeats(&sent, N1, N2).1, 0);
    let (appends, heartbeats) = appends_and_heartbeats(&sent, N1, N3);
    assert!(appends >= 1, "the leader kept sending to {N3}");
    // Every round but the first, whose predecessor N3 had still answered.
    assert_eq!(heartbeats, 5);
    // Healed, the heartbeats bring N3 back and it catches up.
    c.heal();
    for _ in 0..3 {
        c.heartbeat(N1);
    }
    assert_eq!(
        c.core(N3).log().last_log_id(),
        c.core(N1).log().last_log_id()
    );
}
