//! Hand-driven scenarios for user restore (see `ringraft::core` module `restore`): the external
//! snapshot is staged before its log entry, followers stage it before they accept the entry,
//! and a leader that fails mid-restore leaves nothing that blocks replication.

use bytes::Bytes;
use ringraft::core::{Outcome, RequestError, Role};
use ringraft::sim::testkit::Cluster;
use ringraft_net::message::{AppendResult, Body, ConflictHint};
use ringraft_storage::{Entry, EntryKind, Index, LogId, NodeId, Term};
use std::time::Duration;

const N1: NodeId = NodeId(1);
const N2: NodeId = NodeId(2);
const N3: NodeId = NodeId(3);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The state an external snapshot carries: two made-up commands.
fn external_state() -> Vec<Entry> {
    vec![
        Entry::new(
            LogId::new(Term(90), Index(1000)),
            EntryKind::Command,
            Bytes::from_static(b"restored-a"),
        ),
        Entry::new(
            LogId::new(Term(90), Index(1001)),
            EntryKind::Command,
            Bytes::from_static(b"restored-b"),
        ),
    ]
}

fn committed_index(c: &Cluster, t: ringraft::core::Token) -> Option<Index> {
    match c.reply(t) {
        Some(Ok(Outcome::Committed { last, .. })) => Some(last),
        _ => None,
    }
}

/// What a node's state machine holds, as command payloads.
fn state(c: &Cluster, id: NodeId) -> Vec<Bytes> {
    c.applied(id)
        .iter()
        .filter(|e| e.kind == EntryKind::Command)
        .map(|e| e.data.clone())
        .collect()
}

#[test]
fn a_restore_replaces_every_nodes_state_at_the_same_log_position() {
    let mut c = Cluster::new(3);
    c.elect(N1);
    let before = c.propose(N1, b"before");
    c.deliver_all();
    c.heartbeat(N1);
    assert!(committed_index(&c, before).is_some());
    let r = c.user_restore(N1, external_state());
    c.deliver_all();
    c.heartbeat(N1);
    let at = committed_index(&c, r).expect("the restore commits");
    let after = c.propose(N1, b"after");
    c.deliver_all();
    c.settle(N1);
    assert!(committed_index(&c, after).is_some_and(|i| i > at));
    let expected: Vec<Bytes> = vec![
        Bytes::from_static(b"restored-a"),
        Bytes::from_static(b"restored-b"),
        Bytes::from_static(b"after"),
    ];
    for id in [N1, N2, N3] {
        assert_eq!(
            state(&c, id),
            expected,
            "{id}: earlier writes replaced, later on top"
        );
        let restore_entry = c.core(id).log().term_at(at).map(|t| LogId::new(t, at));
        assert!(restore_entry.is_some_and(|e| c.has_staged(id, e)), "{id}");
    }
}

#[test]
fn writes_wait_while_the_restore_is_staged_and_nothing_is_cancelled() {
    let mut c = Cluster::new(3);
    c.elect(N1);
    // A write already in the log when the restore starts applies before it.
    let early = c.propose(N1, b"early");
    c.hold_staging(true);
    let r = c.user_restore(N1, external_state());
    let during = c.propose(N1, b"during");
    assert_eq!(c.reply(during), Some(Err(RequestError::RestoreInProgress)));
    let change = c.change(
        N1,
        ringraft::core::MembershipChange::RemoveServer { id: N3 },
        None,
    );
    assert_eq!(c.reply(change), Some(Err(RequestError::RestoreInProgress)));
    let transfer = c.transfer(N1, Some(N2));
    assert_eq!(
        c.reply(transfer),
        Some(Err(RequestError::RestoreInProgress))
    );
    c.hold_staging(false);
    c.deliver_all();
    c.heartbeat(N1);
    assert!(committed_index(&c, early).is_some(), "not cancelled");
    let at = committed_index(&c, r).expect("restore commits");
    assert!(committed_index(&c, early).is_some_and(|i| i < at));
    let later = c.propose(N1, b"later");
    c.deliver_all();
    assert!(committed_index(&c, later).is_some());
}

#[test]
fn a_follower_without_the_staged_snapshot_refuses_the_entry_until_the_leader_stages_it() {
    let mut c = Cluster::new(3);
    c.elect(N1);
    c.isolate(N3);
    let r = c.user_restore(N1, external_state());
    c.deliver_all();
    c.heartbeat(N1);
    let at = committed_index(&c, r).expect("N1 and N2 commit the restore");
    let entry = LogId::new(c.core(N1).term(), at);
    assert!(!c.has_staged(N3, entry));
    c.heal();
    c.take_sent();
    c.heartbeat(N1);
    c.deliver_all();
    c.heartbeat(N1);
    let sent = c.take_sent();
    let refused = sent.iter().any(|m| {
        m.from == N3
            && matches!(
                &m.body,
                Body::AppendEntriesResponse(r) if matches!(
                    r.result,
                    AppendResult::Conflict { hint: ConflictHint::MissingRestore { entry: e }, .. }
                        if e == entry
                )
            )
    });
    assert!(refused, "N3 asks for the restore before taking its entry");
    let staged_by_stream = sent
        .iter()
        .any(|m| m.to == N3 && matches!(&m.body, Body::InstallSnapshot(s) if s.stage));
    assert!(staged_by_stream, "the leader streams the staged snapshot");
    assert!(c.has_staged(N3, entry));
    assert_eq!(c.core(N3).applied_index(), c.core(N1).commit_index());
    assert_eq!(state(&c, N3), state(&c, N1));
}

#[test]
fn a_leader_that_fails_before_its_restore_commits_leaves_no_livelock() {
    // The scenario that breaks hashicorp's install-at-once design: the restore reaches only
    // the leader, which then loses leadership.
    let mut c = Cluster::new(3);
    c.elect(N1);
    let w = c.propose(N1, b"w");
    c.deliver_all();
    c.heartbeat(N1);
    assert!(committed_index(&c, w).is_some());
    c.isolate(N1);
    let r = c.user_restore(N1, external_state());
    c.drop_in_flight();
    c.run_for(ms(600), ms(5));
    let leader = c.leader().expect("N2 or N3 takes over");
    assert_ne!(leader, N1);
    let fresh = c.propose(leader, b"fresh");
    c.deliver_all();
    c.heal();
    c.run_for(ms(400), ms(5));
    assert!(committed_index(&c, fresh).is_some());
    assert_eq!(c.reply(r), Some(Err(RequestError::LeadershipLost)));
    // The old leader's uncommitted restore entry is gone, and it follows the new leader.
    assert_eq!(c.core(N1).role(), Role::Follower);
    for id in [N1, N2, N3] {
        assert_eq!(
            c.core(id).commit_index(),
            c.core(leader).commit_index(),
            "{id}"
        );
        assert_eq!(
            state(&c, id),
            vec![Bytes::from_static(b"w"), Bytes::from_static(b"fresh")],
            "{id}"
        );
    }
}

#[test]
fn a_snapshot_covering_a_restore_replaces_it_for_followers_far_behind() {
    let mut c = Cluster::with_config(3, |cfg| cfg.trailing_logs = 0);
    c.elect(N1);
    c.isolate(N3);
    let r = c.user_restore(N1, external_state());
    c.deliver_all();
    c.heartbeat(N1);
    let at = committed_index(&c, r).expect("restore commits on N1 and N2");
    let entry = LogId::new(c.core(N1).term(), at);
    let w = c.propose(N1, b"after");
    c.deliver_all();
    c.heartbeat(N1);
    assert!(committed_index(&c, w).is_some());
    c.take_snapshot(N1);
    assert!(
        !c.has_staged(N1, entry),
        "a snapshot past the restore drops it"
    );
    c.heal();
    c.heartbeat(N1);
    c.deliver_all();
    c.heartbeat(N1);
    assert!(
        !c.has_staged(N3, entry),
        "N3 got the snapshot, not the restore"
    );
    assert_eq!(c.restores(N3), 1);
    assert_eq!(c.core(N3).applied_index(), c.core(N1).applied_index());
}

#[test]
fn a_staged_restore_survives_a_restart() {
    let mut c = Cluster::new(3);
    c.elect(N1);
    let r = c.user_restore(N1, external_state());
    c.deliver_all();
    c.heartbeat(N1);
    let at = committed_index(&c, r).expect("restore commits");
    c.crash(N2);
    c.restart(N2);
    c.settle(N1);
    c.deliver_all();
    assert_eq!(c.core(N2).applied_index(), c.core(N1).commit_index());
    assert!(c.core(N2).applied_index() >= at);
    assert_eq!(state(&c, N2), state(&c, N1));
}

#[test]
fn a_promotion_that_comes_due_while_a_restore_is_staged_waits_for_it() {
    const N4: NodeId = NodeId(4);
    let mut c = Cluster::with_spares(3, 1, |cfg| cfg.promotion_lag_max = Some(0));
    c.elect(N1);
    c.propose(N1, b"w");
    c.deliver_all();
    c.cut(N1, N4);
    let add = c.change(
        N1,
        ringraft::core::MembershipChange::AddVoter {
            id: N4,
            address: "n4".into(),
        },
        None,
    );
    c.deliver_all();
    c.heartbeat(N1);
    // The restore reserves the next index; the learner catches up while it is being staged.
    c.hold_staging(true);
    let r = c.user_restore(N1, external_state());
    c.heal();
    c.run_for(ms(60), ms(5));
    assert_eq!(
        c.reply(add),
        None,
        "no promotion entry while the restore is staged"
    );
    c.hold_staging(false);
    c.run_for(ms(100), ms(5));
    let at = committed_index(&c, r).expect("the restore commits at its reserved index");
    let promoted = committed_index(&c, add).expect("then the promotion");
    assert!(promoted > at);
    assert!(c.core(N1).latest_configuration().1.is_voter(N4));
    assert_eq!(state(&c, N4), state(&c, N1));
}

#[test]
fn a_staged_restore_s_late_completion_does_not_complete_a_snapshot_ending_at_the_same_entry() {
    use ringraft::core::{Core, CoreConfig, Effect, Input, Time};
    use ringraft_net::message::{InstallSnapshot, Message};
    use ringraft_storage::{Configuration, SnapshotMeta};

    // A leader applies a user restore at i10 and at once snapshots its state there: a follower
    // may be sent the restore to stage, then (its log behind the leader's compaction) the
    // leader's own snapshot, both ending at t1/i10. The glue stores chunks in order, so the
    // staged transfer's last chunk can be reported after the second transfer began
    // (simulator, seed 15441: the follower then restored a snapshot it had not stored).
    let configuration = Configuration::voters_with_default_addresses([N1, N2, N3]);
    let state = Core::bootstrap_state(&configuration).expect("bootstrap");
    let mut core = Core::new(CoreConfig::new(N1), state, Time(0)).expect("core");
    let last = LogId::new(Term(1), Index(10));
    let chunk = |id: &str, stage: bool| {
        Input::Message(Message {
            from: N2,
            to: N1,
            term: Term(1),
            body: Body::InstallSnapshot(InstallSnapshot {
                meta: SnapshotMeta {
                    id: id.into(),
                    last,
                    configuration: configuration.clone(),
                    configuration_index: Index(1),
                    size: 4,
                },
                offset: 0,
                data: Bytes::from_static(b"snap"),
                done: true,
                stage,
                round: 1,
            }),
        })
    };
    let written = |stage: bool| Input::SnapshotChunkWritten {
        snapshot: last,
        stage,
        next_offset: 4,
        done: true,
    };
    let restores = |effects: &[Effect]| -> Vec<String> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::RestoreSnapshot { meta } => Some(meta.id.clone()),
                _ => None,
            })
            .collect()
    };
    let now = Time(1_000_000);
    core.step(now, chunk("restore-to-stage", true));
    let staged: Vec<Effect> = core.take_effects();
    assert!(
        staged
            .iter()
            .any(|e| matches!(e, Effect::WriteSnapshotChunk { stage: true, .. })),
        "{staged:?}"
    );
    core.step(now, chunk("leaders-own", false));
    let _ = core.take_effects();
    core.step(now, written(true));
    let late = core.take_effects();
    assert!(
        restores(&late).is_empty(),
        "the staged transfer's completion installed the other snapshot: {late:?}"
    );
    core.step(now, written(false));
    let installed = core.take_effects();
    assert_eq!(restores(&installed), vec!["leaders-own".to_string()]);
}
