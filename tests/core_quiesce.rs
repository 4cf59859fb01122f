//! Quiescence in the core alone (ARCHITECTURE §14), driven by hand: an idle group stops its
//! timers and messages, a request wakes its leader, a restarted peer's pre-votes are refused by
//! the quiesced followers and wake the leader, and a silent leader node makes the followers
//! elect another leader. The test cluster's timing: election timeout 100 ms, heartbeats every
//! 10 ms, lease 50 ms.

use ringraft::core::{Input, Role, Time};
use ringraft::sim::testkit::Cluster;
use ringraft_net::message::Body;
use ringraft_storage::NodeId;
use std::time::Duration;

const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);
const N3: NodeId = NodeId(3);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Three nodes with quiescence on, N1 elected, one entry committed, then idle long enough for
/// everyone to quiesce.
fn quiesced() -> Cluster {
    let mut c = Cluster::with_config(3, |config| config.quiesce = true);
    c.elect(N1);
    c.propose(N1, b"x");
    c.deliver_all();
    c.run_for(ms(300), ms(5));
    for id in [N1, N2, N3] {
        assert!(c.core(id).is_quiesced(), "{id}: {:?}", c.core(id));
    }
    c
}

#[test]
fn an_idle_group_quiesces_and_then_sends_nothing_and_never_campaigns() {
    let mut c = quiesced();
    let term = c.core(N1).term();
    assert_eq!(c.core(N2).next_timer(), Time(u64::MAX));
    // Ten election timeouts of ticks: no message, no election.
    for _ in 0..200 {
        c.advance(ms(5));
        c.tick_all();
        assert!(c.take_in_flight().is_empty());
    }
    assert_eq!(c.core(N1).role(), Role::Leader);
    assert_eq!(c.core(N2).term(), term);
    assert_eq!(c.core(N3).leader(), Some(N1));
}

#[test]
fn without_quiescence_the_same_group_keeps_heartbeating() {
    let mut c = Cluster::new(3);
    c.elect(N1);
    c.run_for(ms(300), ms(5));
    assert!(!c.core(N1).is_quiesced());
    c.advance(ms(10));
    c.tick(N1);
    assert!(c
        .take_in_flight()
        .iter()
        .any(|m| matches!(m.body, Body::Heartbeat { .. })));
}

#[test]
fn a_proposal_wakes_the_leader_which_wakes_its_followers() {
    let mut c = quiesced();
    let token = c.propose(N1, b"y");
    assert!(!c.core(N1).is_quiesced());
    c.deliver_all();
    c.deliver_all();
    assert!(c.reply(token).is_some_and(|r| r.is_ok()), "committed");
    assert!(!c.core(N2).is_quiesced() && !c.core(N3).is_quiesced());
    // Idle again, the group quiesces again.
    c.run_for(ms(300), ms(5));
    assert!(c.core(N1).is_quiesced() && c.core(N2).is_quiesced());
}

#[test]
fn a_request_at_a_quiesced_follower_does_not_wake_it() {
    let mut c = quiesced();
    c.propose(N2, b"z");
    assert!(c.core(N2).is_quiesced());
}

#[test]
fn a_restarted_peer_is_refused_by_the_quiesced_follower_and_brought_in_by_the_leader() {
    let mut c = quiesced();
    let term = c.core(N1).term();
    c.crash(N3);
    c.restart(N3);
    // N3 hears nothing (the group is quiet) and asks for pre-votes; N2 refuses (its leader
    // is alive), N1 wakes and heartbeats; N3 follows N1 in the same term.
    c.run_for(ms(1000), ms(5));
    assert_eq!(c.core(N1).role(), Role::Leader);
    assert_eq!(
        c.core(N1).term(),
        term,
        "no election disrupted the live leader"
    );
    assert_eq!(c.core(N3).leader(), Some(N1));
}

#[test]
fn followers_elect_another_leader_when_the_quiesced_leaders_node_goes_silent() {
    let mut c = quiesced();
    let term = c.core(N1).term();
    c.crash(N1);
    // Nothing happens by itself: the followers are quiesced.
    c.run_for(ms(1000), ms(5));
    assert!(c.core(N2).is_quiesced() && c.core(N3).is_quiesced());
    // Their hosts report N1's node silent.
    c.step(N2, Input::PeerUnreachable { peer: N1 });
    c.step(N3, Input::PeerUnreachable { peer: N1 });
    c.run_for(ms(1000), ms(5));
    let leader = c.leader().expect("a new leader");
    assert_ne!(leader, N1);
    assert!(c.core(leader).term() > term);
}

/// Ticks only `id` for `ticks` × 5 ms, dropping every message: its followers' answers never
/// arrive.
fn tick_alone(c: &mut Cluster, id: NodeId, ticks: usize) {
    for _ in 0..ticks {
        c.advance(ms(5));
        c.tick(id);
        c.drop_in_flight();
    }
}

#[test]
fn late_acknowledgements_depose_the_leader_with_quiescence_on_too() {
    // hashicorp's rule: no acknowledgement from a quorum within the lease timeout (50 ms
    // here), and the leader steps down. Kept for hosts of many groups: under a herd, the
    // step-downs shed heartbeats (leaders kept in place while acknowledgements came late
    // drove a 10 000-group process out of memory, docs/PERFORMANCE.md).
    let mut c = Cluster::with_config(3, |config| config.quiesce = true);
    c.elect(N1);
    tick_alone(&mut c, N1, 20);
    assert_eq!(c.core(N1).role(), Role::Follower);
}

#[test]
fn a_leader_quiesces_when_acknowledgements_lag_behind_its_latest_round() {
    // Under a herd, acknowledgements take longer than a heartbeat interval: a newer round is
    // always out when the answer to an older one arrives. The leader quiesces once every
    // follower answered a round sent since it was last active, not only its latest.
    let mut c = Cluster::with_config(3, |config| config.quiesce = true);
    c.elect(N1);
    c.propose(N1, b"x");
    c.deliver_all();
    // Every answer to N1 arrives 20 ms (two heartbeat intervals) late; the lease (50 ms)
    // holds.
    let mut late: std::collections::VecDeque<(usize, ringraft_net::message::Message)> =
        std::collections::VecDeque::new();
    for step in 0..200 {
        c.advance(ms(5));
        c.tick(N1);
        // Twice: the followers' answers to what the first pass delivered wait their turn.
        for pass in 0..2 {
            for m in c.take_in_flight() {
                if m.to == N1 {
                    late.push_back((step + 4, m));
                } else {
                    c.deliver(m);
                }
            }
            while pass == 0 && late.front().is_some_and(|(due, _)| *due <= step) {
                let (_, m) = late.pop_front().expect("a late answer");
                c.deliver(m);
            }
        }
        if c.core(N1).is_quiesced() {
            break;
        }
    }
    assert_eq!(c.core(N1).role(), Role::Leader);
    assert!(c.core(N1).is_quiesced(), "{:?}", c.core(N1));
}
