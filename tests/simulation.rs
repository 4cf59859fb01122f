//! Deterministic simulation seeds run by `cargo test` (the long run is `ringraft-sim` in CI).

use ringraft::core::Mutation;
use ringraft::sim::{run, SimConfig};

fn sweep(start: u64, count: u64, nodes: usize) {
    let mut failures = Vec::new();
    for seed in start..start + count {
        let mut config = SimConfig::new(seed);
        config.nodes = nodes;
        let report = run(&config);
        if let Some(failure) = report.failure {
            failures.push(format!(
                "seed {seed} ({nodes} nodes): {failure}\n  replay: cargo run --release -p \
                 ringraft-tools --bin ringraft-sim -- --seeds 1 --start {seed} --nodes {nodes}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failing seeds:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn three_node_clusters_stay_safe_and_live_over_500_seeds() {
    sweep(0, 500, 3);
}

#[test]
fn five_node_clusters_stay_safe_and_live_over_300_seeds() {
    sweep(1_000_000, 300, 5);
}

#[test]
fn the_same_seed_gives_the_same_trace() {
    for seed in [1, 77, 4242] {
        let a = run(&SimConfig::new(seed));
        let b = run(&SimConfig::new(seed));
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed}");
        assert_eq!(a.events, b.events);
        assert!(a.events > 1000, "a run processes events");
    }
    assert_ne!(
        run(&SimConfig::new(1)).trace_hash,
        run(&SimConfig::new(2)).trace_hash
    );
}

#[test]
fn a_fault_free_cluster_completes_every_operation() {
    let mut config = SimConfig::new(9);
    config.faults = false;
    let report = run(&config);
    assert_eq!(report.failure, None);
    assert_eq!(report.ops_unknown, 0);
    assert!(report.ops_completed > 100);
}

/// Runs seeds with `mutation` from 0 until one fails; returns the first failing seed.
fn first_catch(mutation: Mutation, bound: u64) -> Option<(u64, String)> {
    (0..bound).find_map(|seed| {
        let mut config = SimConfig::new(seed);
        config.mutation = Some(mutation);
        run(&config).failure.map(|f| (seed, f))
    })
}

#[test]
fn the_simulator_catches_apply_before_commit() {
    let caught = first_catch(Mutation::ApplyBeforeCommit, 50);
    assert!(caught.is_some(), "not caught within 50 seeds");
}

#[test]
fn the_simulator_catches_two_votes_in_one_term() {
    let caught = first_catch(Mutation::GrantTwoVotesPerTerm, 200);
    assert!(caught.is_some(), "not caught within 200 seeds");
}

#[test]
fn the_simulator_catches_follower_commit_without_the_min() {
    let caught = first_catch(Mutation::FollowerCommitWithoutMin, 200);
    assert!(caught.is_some(), "not caught within 200 seeds");
}

// `two-uncommitted-configs` needs a few thousand seeds since the simulator runs the shard
// glue, whose membership queue hands the core one change at a time (the core's own rule then
// matters only for a new leader's inherited change and catch-up promotions): `.ci/run` checks
// it in release, and `tests/core_membership.rs` drives the refusal by hand.

// `keep-conflicting-suffix` needs a few hundred seeds (first caught at seed 411 with the
// restore workload): too slow for a debug-build test, so only `.ci/run` checks it, in release.

#[test]
fn the_simulator_catches_a_non_voter_counted_toward_commit() {
    let caught = first_catch(Mutation::CountNonvoterTowardCommit, 300);
    assert!(caught.is_some(), "not caught within 300 seeds");
}

#[test]
fn the_simulator_catches_a_vote_released_before_it_is_durable() {
    let caught = first_catch(Mutation::ReleaseVoteBeforePersist, 1000);
    assert!(caught.is_some(), "not caught within 1000 seeds");
}

#[test]
fn the_simulator_catches_a_restore_entry_accepted_without_its_snapshot() {
    let caught = first_catch(Mutation::AcceptUnstagedRestore, 100);
    assert!(caught.is_some(), "not caught within 100 seeds");
}

/// Seed `seed` (3 nodes) with `mutation` fails, reported by `checker`.
fn caught_at(seed: u64, mutation: Mutation, checker: &str) {
    let mut config = SimConfig::new(seed);
    config.mutation = Some(mutation);
    let failure = run(&config).failure.expect("caught");
    assert!(failure.contains(checker), "{failure}");
}

/// Each checker added for the simulator's blind spots catches the bug it was built for, and is
/// the checker that reports it.
fn caught_by(mutation: Mutation, bound: u64, checker: &str) {
    let Some((seed, failure)) = first_catch(mutation, bound) else {
        panic!("{} not caught within {bound} seeds", mutation.name());
    };
    assert!(
        failure.contains(checker),
        "{} caught at seed {seed} by another checker: {failure}",
        mutation.name()
    );
}

/// A rare bug: about one seed in 1 600 catches it (`ringraft-sim --mutation
/// lease-after-timeout-now --seeds 8000` fails 4 or 5), and seed 2 359 is the first 3-node seed
/// with today's random draws.
#[test]
fn the_read_checker_catches_lease_reads_after_timeout_now() {
    caught_at(2359, Mutation::LeaseAfterTimeoutNow, "stale read");
}

#[test]
fn the_durable_term_checker_catches_a_heartbeat_ack_before_its_term_is_durable() {
    caught_by(
        Mutation::HeartbeatAckBeforeTermDurable,
        50,
        "durability of what was said",
    );
}

#[test]
fn the_acknowledged_entries_checker_catches_an_append_ack_before_the_entries_are_durable() {
    caught_by(
        Mutation::AppendAckBeforeEntriesDurable,
        50,
        "acknowledged its log through",
    );
}

#[test]
fn the_bookkeeping_checker_catches_configurations_kept_after_a_truncation() {
    caught_by(
        Mutation::KeepTruncatedConfigurations,
        50,
        "configuration bookkeeping",
    );
}

// The glue mutations: bugs in the node runtime's shard glue, which the simulator runs (the
// same code a `Raft` node runs), each caught by the checker that watches for it.

#[test]
fn the_durable_term_checker_catches_the_glue_acknowledging_before_the_disk() {
    caught_by(
        Mutation::GlueAckBeforeDurable,
        20,
        "durability of what was said",
    );
}

/// Every seed catches the glue applying before commit, most through the client that finds its
/// answer undecodable (an entry applied and answered, then replaced); the state-machine
/// checker reports it where two nodes applied different entries at one index first. Seed 36
/// is the first such 3-node seed with today's random draws (`ringraft-sim --nodes 3
/// --mutation glue-apply-before-commit --seeds 1 --start S` for S from 0).
#[test]
fn the_state_machine_checker_catches_the_glue_applying_before_commit() {
    caught_at(36, Mutation::GlueApplyBeforeCommit, "state-machine safety");
}

#[test]
fn a_seed_that_runs_out_of_events_fails_instead_of_hanging() {
    let mut config = SimConfig::new(3);
    config.event_budget = Some(2_000);
    let report = run(&config);
    let failure = report
        .failure
        .expect("the budget is far too small to finish");
    assert!(failure.contains("event budget exhausted"), "{failure}");
    assert_eq!(report.events, 2_001);
}

#[test]
fn quiescence_seeds_quiesce_and_stay_live() {
    // Seed 10 is the first 3-node seed whose nodes quiesce (ARCHITECTURE §14; a lull must last
    // an election timeout, and most come with faults): a quiesced leader crashes or is cut
    // off, and the cluster still finishes every check. (Seed 57 was, until a quarter of the
    // seeds got log stores that write on the shard's thread, which moved both seeds' timing.)
    let report = run(&SimConfig::new(10));
    assert_eq!(report.failure, None);
    assert!(report.quiesce, "seed 10 runs with quiescence");
    assert!(report.quiesces > 0, "{report:?}");
}

#[test]
fn the_quiescence_checker_catches_a_follower_deaf_to_its_leaders_silence() {
    // The first 3-node seed that catches it (`ringraft-sim --nodes 3 --mutation
    // quiesced-ignores-silence --expect-failure`).
    caught_at(371, Mutation::QuiescedIgnoresSilence, "stays quiesced");
}

/// A seed of `groups` Raft groups on the same nodes, as a `MultiRaft` node hosts them.
fn groups_config(seed: u64, nodes: usize, groups: usize, slots: usize) -> SimConfig {
    let mut config = SimConfig::new(seed);
    config.nodes = nodes;
    config.groups = groups;
    config.campaign_slots = slots;
    config
}

#[test]
fn groups_sharing_nodes_stay_safe_and_live() {
    // Node crashes, pauses and partitions hit a replica of every group at once; the groups
    // share each node's disk (group commit) and one campaign slot per node; every group is
    // checked on its own. The long run is `ringraft-sim --groups 3` in CI.
    let (mut host_crashes, mut campaign_waits, mut failures) = (0, 0, Vec::new());
    for seed in 0..24 {
        let nodes = if seed % 2 == 0 { 3 } else { 5 };
        let report = run(&groups_config(seed, nodes, 3, 1));
        assert_eq!(report.groups, 3);
        host_crashes += report.host_crashes;
        campaign_waits += report.campaign_waits;
        if let Some(failure) = report.failure {
            failures.push(format!(
                "seed {seed} ({nodes} nodes): {failure}\n  replay: cargo run --release -p \
                 ringraft-tools --bin ringraft-sim -- --seeds 1 --start {seed} --nodes {nodes} \
                 --groups 3 --campaign-slots 1"
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // The sharing is real: crashes took whole nodes down, and groups queued for a slot.
    assert!(host_crashes > 0, "no node crash");
    assert!(campaign_waits > 0, "no group waited for a campaign slot");
}

#[test]
fn a_seed_of_several_groups_replays_exactly() {
    let a = run(&groups_config(5, 3, 3, 1));
    let b = run(&groups_config(5, 3, 3, 1));
    assert_eq!(a.trace_hash, b.trace_hash);
    assert_eq!(a.events, b.events);
    assert_ne!(a.trace_hash, run(&groups_config(5, 3, 2, 1)).trace_hash);
}

#[test]
fn each_group_of_several_is_checked() {
    // A bug injected into every core is caught, and the failure names the group it was in.
    let caught = (0..50).find_map(|seed| {
        let mut config = groups_config(seed, 3, 3, 1);
        config.mutation = Some(Mutation::ApplyBeforeCommit);
        run(&config).failure
    });
    let failure = caught.expect("not caught within 50 seeds");
    assert!(failure.starts_with("group "), "{failure}");
}

#[test]
fn the_simulator_catches_a_campaign_slot_never_given_back() {
    // Only several groups per node can show it: alone, a group's slot is always free.
    let caught = (0..60).find_map(|seed| {
        let mut config = groups_config(seed, 3, 3, 1);
        config.mutation = Some(Mutation::GlueKeepsCampaignSlot);
        run(&config).failure.map(|f| (seed, f))
    });
    let (_, failure) = caught.expect("not caught within 60 seeds");
    assert!(failure.contains("liveness"), "{failure}");
    let mut alone = SimConfig::new(0);
    alone.mutation = Some(Mutation::GlueKeepsCampaignSlot);
    assert_eq!(run(&alone).failure, None);
}
