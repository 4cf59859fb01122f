//! Power loss under `ringraft-kv` clusters (run by `tools/scripts/powerloss.sh`; needs root and
//! /dev/fuse): every node's data directory is on its own crashfs. Clients run the existing
//! linearizability harness while the power fails under one follower, the leader, a minority
//! at once, or every node at once (each crashed file system keeps nothing unsynced, or a random
//! prefix with a torn write); the nodes are killed, their file systems come back with what was
//! synced, the nodes restart. At the end every key is read through the leader and the whole
//! history must be linearizable: an acknowledged write that a power loss took fails it. Every
//! node's WAL must then pass `ringraft-wal verify`.

mod powerloss_support;
mod support;

use powerloss_support::{mode_for, rounds, Aim, CrashPoints, Rng};
use ringraft_crashfs::{CrashFs, OpKind, Phase};
use ringraft_tools::kv::local::cluster_addresses;
use std::time::Duration;
use support::{is_root, Cluster, Load};

/// Who loses power in a round.
#[derive(Clone, Copy, Debug)]
enum Victims {
    Follower,
    Leader,
    Minority,
    All,
}

const SCENARIOS: [Victims; 4] = [
    Victims::Follower,
    Victims::Leader,
    Victims::Minority,
    Victims::All,
];

/// Where the first victim's power fails.
const AIMS: [Aim; 5] = [
    Aim::new(OpKind::Fsync, Phase::Before, "/wal/", 40),
    Aim::new(OpKind::Write, Phase::After, "/wal/", 40),
    Aim::new(OpKind::Fsync, Phase::After, "/wal/", 40),
    // A snapshot being written or renamed into place.
    Aim::new(OpKind::Write, Phase::After, ".tmp/", 4),
    Aim::new(OpKind::Rename, Phase::Before, ".tmp", 1),
];

fn power_loss_cluster(nodes: usize, rounds: u64, seed: u64) {
    if !is_root() || !std::path::Path::new("/dev/fuse").exists() {
        eprintln!("powerloss: skipped (needs root and /dev/fuse)");
        return;
    }
    let (_, addresses) = cluster_addresses(nodes).expect("free ports");
    // One-MiB segments and frequent snapshots with a short trailing log: segment rolls,
    // spares, snapshots, compaction and snapshot installs to restarted nodes all happen
    // within a short test.
    let mut cluster = Cluster::new(addresses, |_| {
        [
            "--wal-segment-mb",
            "1",
            "--snapshot-threshold",
            "100",
            "--snapshot-interval-ms",
            "200",
            "--trailing-logs",
            "50",
        ]
        .map(String::from)
        .to_vec()
    });
    let disks = tempfile::tempdir().expect("temporary directory");
    let mut filesystems: Vec<CrashFs> = (1..=nodes)
        .map(|id| {
            let mnt = disks.path().join(format!("mnt-{id}"));
            std::fs::create_dir(&mnt).expect("mount point");
            let fs = CrashFs::mount(&mnt, disks.path(), mode_for(0), seed + id as u64)
                .expect("mounting crashfs");
            cluster.nodes[id - 1].data = mnt.join("data");
            fs
        })
        .collect();
    for id in 1..=nodes {
        cluster.spawn(id);
    }
    cluster.leader();
    let load = Load::start(cluster.client_addresses(), 4);
    load.wait_for_progress(100);
    let mut rng = Rng::new(seed);
    let mut points = CrashPoints::default();
    for round in 0..rounds {
        let scenario = SCENARIOS[(round % SCENARIOS.len() as u64) as usize];
        let leader = cluster.leader();
        let others: Vec<usize> = (1..=nodes).filter(|&id| id != leader).collect();
        let victims: Vec<usize> = match scenario {
            Victims::Follower => vec![*rng.pick(&others)],
            Victims::Leader => vec![leader],
            Victims::Minority => {
                // The leader and others up to a minority.
                let mut v = vec![leader];
                let mut rest = others.clone();
                while v.len() < (nodes - 1) / 2 {
                    let k = rng.below(rest.len() as u64) as usize;
                    v.push(rest.remove(k));
                }
                v
            }
            Victims::All => (1..=nodes).collect(),
        };
        // One victim's power fails at a chosen operation of its WAL (between a batch's writes
        // and its fdatasync, or after one of its writes) if it comes within two seconds; then
        // the power fails under every other victim at once, and they are killed.
        let first = &filesystems[victims[0] - 1];
        first.set_mode(mode_for(round));
        first.arm(AIMS[(round / 2 % AIMS.len() as u64) as usize].trigger(&mut rng));
        let report = first
            .wait_crashed(Duration::from_secs(2))
            .unwrap_or_else(|| first.crash());
        points.record(&format!("kv {scenario:?} {}", report.label));
        for &id in &victims[1..] {
            let fs = &filesystems[id - 1];
            fs.set_mode(mode_for(round + id as u64));
            let report = fs.crash();
            points.record(&format!("kv {scenario:?} {}", report.label));
        }
        for &id in &victims {
            let _ = cluster.signal(id, libc::SIGKILL);
        }
        for fs in &filesystems {
            fs.disarm();
        }
        for &id in &victims {
            filesystems[id - 1].restart().expect("restart crashfs");
            cluster.spawn(id);
        }
        cluster.leader();
        load.wait_for_progress(60);
    }
    let leader = cluster.leader();
    load.finish_and_check(&cluster, leader);
    for id in 1..=nodes {
        let _ = cluster.signal(id, libc::SIGKILL);
        cluster.verify_wal(id);
    }
    points.finish(&format!("kv {nodes} nodes"), &["kv Leader", "kv All"]);
    drop(cluster);
    drop(filesystems);
}

#[test]
#[ignore = "needs root and /dev/fuse: tools/scripts/powerloss.sh"]
fn three_nodes_lose_no_acknowledged_write_to_power_loss() {
    power_loss_cluster(3, rounds(48) / 6, 11);
}

#[test]
#[ignore = "needs root and /dev/fuse: tools/scripts/powerloss.sh"]
fn five_nodes_lose_no_acknowledged_write_to_power_loss() {
    power_loss_cluster(5, rounds(48) / 8, 12);
}
