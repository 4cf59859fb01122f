//! Power loss under a `MultiRaft` cluster (run by `tools/scripts/powerloss.sh`; needs root and
//! /dev/fuse).
//!
//! A child process (this binary, `powerloss_groups_child`: `groups_support::child`) runs three
//! `MultiRaft` nodes over TCP on loopback, each with one `SharedWal` for its eight durable
//! groups and a file snapshot store per group, all on one crashfs: the shard threads submit
//! the WAL's group commits as asynchronous io_uring writes and reap them (ARCHITECTURE §5,
//! "Writes without the writer thread"), as every `MultiRaft` over TCP does. The groups
//! snapshot every 64 entries and keep 32 behind, so within every round logs are compacted on
//! the shared WAL and snapshots written and retired, and every few rounds a filled segment is
//! reclaimed. The child starts the groups (bootstrapping them the first time), writes to each
//! group through its leader from a client thread per group (six groups without a pause, two
//! idle, written once every two seconds, so that they quiesce in between), and prints each
//! write once `apply` returned it applied.
//!
//! The power fails under all three nodes at once: at a WAL write or sync (after a random number
//! of them, so it falls during bootstrap, elections or writes), as a spare segment or a
//! snapshot is renamed into place, or as a reclaimed segment is deleted. The child is killed
//! and the file system comes back with only what was synced (all of it dropped, or a random
//! prefix with a torn write). The parent then reopens every node's WAL and snapshot stores:
//! each write any child reported applied must be held by at least two of the three nodes (a
//! majority: what commit promised), in its group's log or in the group's newest snapshot. Over
//! the run, replicas must have held snapshots and, with the io_uring backend, most batches must
//! have been written asynchronously (the children print their WALs' counts). The next round's
//! child recovers the groups from those stores and writes on, so recovery after each power
//! loss is exercised too; the test fails if the children started the cluster in fewer than
//! half of the rounds.
//!
//! A node at a time (`applied_writes_of_many_groups_survive_a_node_losing_power`): each node
//! runs in its own child process (the same child with `RINGRAFT_POWERLOSS_GROUPS_NODE`) on its
//! own crashfs, and writes to the groups it leads. In four rounds of five the power fails under
//! one node while the other two go on electing and writing; that node is killed, its file
//! system comes back with what was synced, and it starts again and catches up (from the
//! leaders' logs or their snapshots). Every fifth round, and after the last, the power fails
//! under all three, and every node's stores are checked as above. The test fails if, after
//! more than one round in four, some group (the idle ones too: `groups_support`) did not apply
//! a write within ten seconds.

mod groups_support;
mod powerloss_support;

use groups_support::{
    addresses, check, check_run, every_group_applies, Heard, CHILD_ADDRESSES, CHILD_DIR,
    CHILD_NODE, CHILD_NUMBER, NODES,
};
use powerloss_support::{
    child_round, mode_for, mount, rounds, under, Aim, Child, CrashPoints, Rng,
};
use ringraft_crashfs::{OpKind, Phase};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where the power fails: the three nodes' WAL segments (`/wal/`), at a write or a sync,
/// after skipping up to that many of them (the start, with WALs opened, groups bootstrapped
/// and leaders elected, takes a few dozen; a second of writes about a thousand); at the rename
/// that puts a spare segment in place (1 MiB segments and 512-byte commands, so segments fill
/// within a few rounds); at a snapshot's rename into place; or as a segment every group has
/// compacted past is deleted. A round whose trigger is not reached within three seconds loses
/// its power then (`now:`).
const AIMS: [Aim; 6] = [
    Aim::new(OpKind::Fsync, Phase::Before, "/wal/", 500),
    Aim::new(OpKind::Write, Phase::After, "/wal/", 500),
    Aim::new(OpKind::Fsync, Phase::After, "/wal/", 500),
    Aim::new(OpKind::Rename, Phase::After, "/wal/", 4),
    // A snapshot just renamed into place, its directory not yet synced.
    Aim::new(OpKind::Rename, Phase::After, "/snapshots/", 40),
    // A segment whose every group's entries are compacted (or were rewritten) being deleted.
    Aim::new(OpKind::Remove, Phase::Before, ".seg", 2),
];

/// The child process of these tests (see the module docs).
#[test]
#[ignore = "the child process of the power-loss tests"]
fn powerloss_groups_child() {
    groups_support::child();
}

/// Runs `rounds` power losses under all three nodes (in one child process) at once; returns
/// the crash points reached and the writes acknowledged.
fn power_loss_rounds(
    rounds: u64,
    seed: u64,
    mutation: Option<&str>,
) -> Result<(CrashPoints, usize), String> {
    let Some((_dir, mut fs)) = mount(mode_for(0), seed) else {
        return Ok((CrashPoints::default(), 0));
    };
    let root = durable_root(&fs)?;
    let addresses = addresses()?;
    let mut rng = Rng::new(seed);
    let mut points = CrashPoints::default();
    let heard = Arc::new(Mutex::new(Heard::default()));
    // The most replicas found holding a snapshot after a round.
    let mut most_snapshots = 0;
    for round in 0..rounds {
        fs.set_mode(mode_for(round));
        let trigger = AIMS[(round % AIMS.len() as u64) as usize].trigger(&mut rng);
        let round_text = round.to_string();
        let report = child_round(
            &mut fs,
            trigger,
            "powerloss_groups_child",
            &[
                (CHILD_DIR, root.as_os_str()),
                (CHILD_ADDRESSES, std::ffi::OsStr::new(&addresses)),
                (CHILD_NUMBER, std::ffi::OsStr::new(&round_text)),
            ],
            mutation,
            Heard::listener(&heard, round),
        );
        points.record(&report.label);
        let heard = heard.lock().expect("heard");
        let roots = [root.clone(), root.clone(), root.clone()];
        let with_snapshots = check(&roots, &heard.acked)
            .map_err(|e| format!("round {round}, crash {report:?}: {e}"))?;
        most_snapshots = most_snapshots.max(with_snapshots);
    }
    let heard = heard.lock().expect("heard");
    // A child that cannot recover the groups from their WALs never starts writing.
    if heard.started * 2 < rounds {
        return Err(format!(
            "the children started the cluster in only {} of {rounds} rounds",
            heard.started
        ));
    }
    check_run("groups", &heard, most_snapshots)?;
    Ok((points, heard.acked.len()))
}

/// The directory `nodes` under the mount, created durably: the WALs sync their own directories
/// and those directories' parents, not the mount's root, where a power loss would otherwise
/// take `nodes` and everything under it.
fn durable_root(fs: &ringraft_crashfs::CrashFs) -> Result<PathBuf, String> {
    let root = under(fs, "nodes");
    ringraft_storage::create_dir_durable(&root)
        .map_err(|e| format!("create {}: {e}", root.display()))?;
    Ok(root)
}

/// Runs `rounds` power losses with each node in its own child process on its own crashfs: in
/// most rounds the power fails under one node while the other two go on (and the node comes
/// back from what it had synced, to catch up with them); in every fifth round, and after the
/// last, under all three at once, after which every node's stores are checked. Returns the
/// crash points reached and the writes acknowledged.
fn node_power_loss_rounds(
    rounds: u64,
    seed: u64,
    mutation: Option<&str>,
) -> Result<(CrashPoints, usize), String> {
    let mut disks = Vec::new();
    for node in 1..=NODES {
        let Some(disk) = mount(mode_for(0), seed * 10 + node) else {
            return Ok((CrashPoints::default(), 0));
        };
        disks.push(disk);
    }
    let roots = disks
        .iter()
        .map(|(_, fs)| durable_root(fs))
        .collect::<Result<Vec<_>, _>>()?;
    let addresses = addresses()?;
    let heard = Arc::new(Mutex::new(Heard::default()));
    let mut spawned = 0;
    let mut spawn = |node: u64| {
        spawned += 1;
        let (number, node_text) = (spawned.to_string(), node.to_string());
        Child::spawn(
            "powerloss_groups_child",
            &[
                (CHILD_DIR, roots[node as usize - 1].as_os_str()),
                (CHILD_ADDRESSES, std::ffi::OsStr::new(&addresses)),
                (CHILD_NUMBER, std::ffi::OsStr::new(&number)),
                (CHILD_NODE, std::ffi::OsStr::new(&node_text)),
            ],
            mutation,
            Heard::listener(&heard, spawned),
        )
    };
    let mut children: Vec<Option<Child>> = (1..=NODES).map(|node| Some(spawn(node))).collect();
    let mut rng = Rng::new(seed);
    let mut points = CrashPoints::default();
    let mut most_snapshots = 0;
    // Rounds after which every group applied writes again.
    let mut went_on = 0;
    for round in 0..=rounds {
        let last = round == rounds;
        let all = last || round % 5 == 4;
        let victims: Vec<u64> = if all {
            (1..=NODES).collect()
        } else {
            vec![1 + rng.below(NODES)]
        };
        let scenario = if all { "all" } else { "one" };
        // The first victim's power fails at a chosen operation if it comes within three
        // seconds (the last round's at once), then every other victim's.
        let (_, first) = &disks[victims[0] as usize - 1];
        first.set_mode(mode_for(round));
        let report = if last {
            first.crash()
        } else {
            first.arm(AIMS[(round % AIMS.len() as u64) as usize].trigger(&mut rng));
            first
                .wait_crashed(Duration::from_secs(3))
                .unwrap_or_else(|| first.crash())
        };
        points.record(&format!("nodes {scenario} {}", report.label));
        for &node in &victims[1..] {
            let (_, fs) = &disks[node as usize - 1];
            fs.set_mode(mode_for(round + node));
            let report = fs.crash();
            points.record(&format!("nodes {scenario} {}", report.label));
        }
        for &node in &victims {
            if let Some(child) = children[node as usize - 1].take() {
                child.kill();
            }
            let (_, fs) = &mut disks[node as usize - 1];
            fs.disarm();
            fs.restart().map_err(|e| format!("restart crashfs: {e}"))?;
        }
        if all {
            let heard = heard.lock().expect("heard");
            let with_snapshots = check(&roots, &heard.acked)
                .map_err(|e| format!("round {round}, crash {report:?}: {e}"))?;
            most_snapshots = most_snapshots.max(with_snapshots);
        }
        if last {
            break;
        }
        for &node in &victims {
            children[node as usize - 1] = Some(spawn(node));
        }
        // Until every group applies writes again (at most ten seconds): the groups the victim
        // led, quiescent or not, must elect a leader on a node that is up (or on the victim,
        // back).
        let before = heard.lock().expect("heard").per_child_group.clone();
        if every_group_applies(&heard, &before, |_| true, Duration::from_secs(10)).is_ok() {
            went_on += 1;
        }
    }
    drop(children);
    let heard = heard.lock().expect("heard");
    if went_on * 4 < rounds * 3 {
        return Err(format!(
            "every group applied writes again after only {went_on} of {rounds} rounds"
        ));
    }
    check_run("groups, a node at a time", &heard, most_snapshots)?;
    println!(
        "powerloss: groups, a node at a time: {} of {spawned} node processes started, the \
         groups all applied writes again within 10 s after {went_on} of {rounds} rounds",
        heard.started
    );
    Ok((points, heard.acked.len()))
}

#[test]
#[ignore = "needs root and /dev/fuse: tools/scripts/powerloss.sh"]
fn applied_writes_of_many_groups_survive_power_loss() {
    // Each round starts a three-node cluster: fewer rounds than the storage tests.
    let rounds = rounds(48).div_ceil(4);
    let (points, _) = power_loss_rounds(rounds, 3, None).unwrap_or_else(|e| panic!("{e}"));
    if rounds >= AIMS.len() as u64 {
        points.finish(
            "groups",
            &[
                "fsync-before:/nodes/node-#/wal/",
                "write-after:/nodes/node-#/wal/",
                "rename-after:/nodes/node-#/wal/",
            ],
        );
    }
}

#[test]
#[ignore = "needs root and /dev/fuse: tools/scripts/powerloss.sh"]
fn groups_on_a_wal_that_skips_fdatasync_are_caught() {
    let found = power_loss_rounds(rounds(48).div_ceil(4), 4, Some("skip-wal-fdatasync"));
    match found {
        Err(e) => println!("powerloss: mutation skip-wal-fdatasync caught under groups: {e}"),
        Ok((points, _)) if points.rounds() == 0 => {} // not mounted: skipped
        Ok(_) => panic!("groups on a WAL that never calls fdatasync survived every power loss"),
    }
}

#[test]
#[ignore = "needs root and /dev/fuse: tools/scripts/powerloss.sh"]
fn applied_writes_of_many_groups_survive_a_node_losing_power() {
    let rounds = rounds(48).div_ceil(4);
    let (points, _) = node_power_loss_rounds(rounds, 5, None).unwrap_or_else(|e| panic!("{e}"));
    if rounds >= AIMS.len() as u64 {
        points.finish(
            "groups, a node at a time",
            &[
                "nodes one fsync-before:/nodes/node-#/wal/",
                "nodes one write-after:/nodes/node-#/wal/",
                "nodes all ",
            ],
        );
    }
}

#[test]
#[ignore = "needs root and /dev/fuse: tools/scripts/powerloss.sh"]
fn nodes_on_a_wal_that_skips_fdatasync_are_caught() {
    let found = node_power_loss_rounds(rounds(48).div_ceil(4), 6, Some("skip-wal-fdatasync"));
    match found {
        Err(e) => println!("powerloss: mutation skip-wal-fdatasync caught a node at a time: {e}"),
        Ok((points, _)) if points.rounds() == 0 => {} // not mounted: skipped
        Ok(_) => panic!("nodes on a WAL that never calls fdatasync survived every power loss"),
    }
}
