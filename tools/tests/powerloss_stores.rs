//! Power loss under the stable file and the file snapshot store (run by
//! `tools/scripts/powerloss.sh`; needs root and /dev/fuse).
//!
//! Children (this binary's ignored tests) save hard states one after another, or take
//! snapshots one after another (with retention), printing each one the store said was
//! durable. Each round arms a crash at one kind of operation (a slot write and its fdatasync;
//! a snapshot's data write, its fsyncs, the rename into place, the directory sync after it,
//! retention's removals), the power fails, the child is killed and the store is reopened:
//! the last acknowledged hard state or a newer one is there, intact; the newest acknowledged
//! snapshot or a newer one is listed, and every listed snapshot opens with its exact data.

mod powerloss_support;

use powerloss_support::{
    child_round, mode_for, mount, number_after, rounds, under, Aim, CrashPoints, Rng,
};
use ringraft_crashfs::{OpKind, Phase};
use ringraft_storage::{
    Configuration, FileSnapshotStore, FileStableStore, HardState, Index, LogId, NodeId,
    SnapshotStore, StableStore, Term,
};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};

const STABLE_PATH: &str = "RINGRAFT_POWERLOSS_STABLE";
const SNAPSHOT_DIR: &str = "RINGRAFT_POWERLOSS_SNAPSHOTS";
const RETAIN: usize = 2;

/// The hard state saved as number `n`: every field derived from `n`, so a mix of two saves
/// shows.
fn hard_state(n: u64) -> HardState {
    HardState {
        term: Term(n),
        vote: Some(NodeId(n % 7 + 1)),
        commit: Index(n * 3),
    }
}

#[test]
#[ignore = "the child process of the power-loss tests"]
fn powerloss_stable_child() {
    let Ok(path) = std::env::var(STABLE_PATH) else {
        return;
    };
    let mut store = FileStableStore::open(&path).expect("open");
    let mut n = store.hard_state().term.0;
    loop {
        n += 1;
        store.save(&hard_state(n)).expect("save");
        println!("saved {n}");
    }
}

/// Snapshot `n`'s data: up to 300 KiB (several FUSE writes), derived from `n`.
fn snapshot_data(n: u64) -> Vec<u8> {
    let len = (n * 7919 % 300) as usize * 1024 + 17;
    (0..len)
        .map(|i| (i as u64 ^ n.wrapping_mul(31)) as u8)
        .collect()
}

fn configuration() -> Configuration {
    Configuration::voters_with_default_addresses([NodeId(1), NodeId(2), NodeId(3)])
}

#[test]
#[ignore = "the child process of the power-loss tests"]
fn powerloss_snapshot_child() {
    let Ok(dir) = std::env::var(SNAPSHOT_DIR) else {
        return;
    };
    let store = FileSnapshotStore::new(&dir, RETAIN).expect("open");
    let mut n = store
        .list()
        .expect("list")
        .first()
        .map_or(0, |meta| meta.last.index.0);
    loop {
        n += 1;
        let mut sink = store
            .create(LogId::new(Term(1), Index(n)), &configuration(), Index(1))
            .expect("create");
        sink.write_all(&snapshot_data(n)).expect("write");
        sink.commit().expect("commit");
        println!("committed {n}");
    }
}

const STABLE_AIMS: &[Aim] = &[
    Aim::new(OpKind::Write, Phase::Before, "/stable", 20),
    Aim::new(OpKind::Write, Phase::After, "/stable", 20),
    Aim::new(OpKind::Fsync, Phase::Before, "/stable", 20),
    Aim::new(OpKind::Create, Phase::After, "/stable", 0),
    Aim::new(OpKind::FsyncDir, Phase::Before, "/", 0),
];

const SNAPSHOT_AIMS: &[Aim] = &[
    // The data and metadata being written and synced.
    Aim::new(OpKind::Write, Phase::After, ".tmp/", 20),
    Aim::new(OpKind::Fsync, Phase::Before, ".tmp/", 6),
    Aim::new(OpKind::FsyncDir, Phase::Before, ".tmp", 3),
    // The rename into place and the directory sync after it.
    Aim::new(OpKind::Rename, Phase::Before, ".tmp", 3),
    Aim::new(OpKind::Rename, Phase::After, ".tmp", 3),
    Aim::new(OpKind::FsyncDir, Phase::Before, "/snaps", 6),
    Aim::new(OpKind::FsyncDir, Phase::After, "/snaps", 6),
    // Retention deleting old snapshots.
    Aim::new(OpKind::Remove, Phase::After, "/snaps/", 4),
    Aim::new(OpKind::Create, Phase::After, ".tmp", 3),
];

fn stable_rounds(rounds: u64, seed: u64) -> Result<CrashPoints, String> {
    let Some((_dir, mut fs)) = mount(mode_for(0), seed) else {
        return Ok(CrashPoints::default());
    };
    let path = under(&fs, "stable");
    let mut rng = Rng::new(seed);
    let mut points = CrashPoints::default();
    let acked = Arc::new(Mutex::new(0u64));
    for round in 0..rounds {
        fs.set_mode(mode_for(round));
        let trigger = STABLE_AIMS[(round % STABLE_AIMS.len() as u64) as usize].trigger(&mut rng);
        let heard = acked.clone();
        let report = child_round(
            &mut fs,
            trigger,
            "powerloss_stable_child",
            &[(STABLE_PATH, path.as_os_str())],
            None,
            move |line| {
                if let Some(n) = number_after(line, "saved ") {
                    let mut acked = heard.lock().expect("acked");
                    *acked = (*acked).max(n);
                }
            },
        );
        points.record(&format!("stable {}", report.label));
        let acked = *acked.lock().expect("acked");
        let store = FileStableStore::open(&path)
            .map_err(|e| format!("round {round}, crash {report:?}: reopen: {e}"))?;
        let got = store.hard_state();
        // One save at a time: at most the one in flight when the power failed is newer.
        if got.term.0 < acked || got.term.0 > acked + 1 || got != hard_state(got.term.0) {
            return Err(format!(
                "round {round}, crash {report:?}: acknowledged save {acked}, recovered {got:?}"
            ));
        }
    }
    Ok(points)
}

fn snapshot_rounds(rounds: u64, seed: u64, mutation: Option<&str>) -> Result<CrashPoints, String> {
    let Some((_dir, mut fs)) = mount(mode_for(0), seed) else {
        return Ok(CrashPoints::default());
    };
    let dir = under(&fs, "snaps");
    let mut rng = Rng::new(seed);
    let mut points = CrashPoints::default();
    let acked = Arc::new(Mutex::new(0u64));
    for round in 0..rounds {
        fs.set_mode(mode_for(round));
        let aim = SNAPSHOT_AIMS[(round % SNAPSHOT_AIMS.len() as u64) as usize];
        let heard = acked.clone();
        let report = child_round(
            &mut fs,
            aim.trigger(&mut rng),
            "powerloss_snapshot_child",
            &[(SNAPSHOT_DIR, dir.as_os_str())],
            mutation,
            move |line| {
                if let Some(n) = number_after(line, "committed ") {
                    let mut acked = heard.lock().expect("acked");
                    *acked = (*acked).max(n);
                }
            },
        );
        points.record(&format!("snapshot {}", report.label));
        let acked = *acked.lock().expect("acked");
        check_snapshots(&dir, acked)
            .map_err(|e| format!("round {round}, crash {report:?}: {e}"))?;
    }
    Ok(points)
}

fn check_snapshots(dir: &Path, acked: u64) -> Result<(), String> {
    if acked == 0 && !dir.exists() {
        return Ok(());
    }
    let store = FileSnapshotStore::new(dir, RETAIN).map_err(|e| format!("reopen: {e}"))?;
    let listed = store.list().map_err(|e| format!("list: {e}"))?;
    let newest = listed.first().map_or(0, |m| m.last.index.0);
    if newest < acked {
        return Err(format!(
            "snapshot {acked} was acknowledged, the newest listed is {newest} ({} listed)",
            listed.len()
        ));
    }
    for meta in &listed {
        let (opened, mut reader) = store
            .open(&meta.id)
            .map_err(|e| format!("open {}: {e}", meta.id))?;
        let mut data = Vec::new();
        reader
            .read_to_end(&mut data)
            .map_err(|e| format!("read {}: {e}", meta.id))?;
        let n = opened.last.index.0;
        if data != snapshot_data(n) || opened.configuration != configuration() {
            return Err(format!(
                "snapshot {} ({n}) came back with other data",
                meta.id
            ));
        }
    }
    Ok(())
}

#[test]
#[ignore = "needs root and /dev/fuse: tools/scripts/powerloss.sh"]
fn acknowledged_hard_states_survive_power_loss() {
    let rounds = rounds(48) / 2;
    let points = stable_rounds(rounds, 3).unwrap_or_else(|e| panic!("{e}"));
    if rounds >= STABLE_AIMS.len() as u64 * 2 {
        points.finish(
            "stable",
            &["stable write-after:/stable", "stable fsync-before:/stable"],
        );
    }
}

#[test]
#[ignore = "needs root and /dev/fuse: tools/scripts/powerloss.sh"]
fn acknowledged_snapshots_survive_power_loss() {
    let rounds = rounds(48);
    let points = snapshot_rounds(rounds, 4, None).unwrap_or_else(|e| panic!("{e}"));
    if rounds >= SNAPSHOT_AIMS.len() as u64 * 2 {
        points.finish(
            "snapshots",
            &[
                "snapshot write-after:",
                "snapshot fsync-before:",
                "snapshot rename-",
                "snapshot fsyncdir-",
                "snapshot remove-",
            ],
        );
    }
}

#[test]
#[ignore = "needs root and /dev/fuse: tools/scripts/powerloss.sh"]
fn a_snapshot_store_that_skips_its_directory_sync_is_caught() {
    match snapshot_rounds(rounds(48), 5, Some("skip-snapshot-dir-sync")) {
        Err(e) => println!("powerloss: mutation skip-snapshot-dir-sync caught: {e}"),
        Ok(points) if points.rounds() == 0 => {} // not mounted: skipped
        Ok(_) => {
            panic!("a snapshot store that never syncs its directory survived every power loss")
        }
    }
}
