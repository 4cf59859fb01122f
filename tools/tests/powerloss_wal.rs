//! Power loss under the WAL (run by `tools/scripts/powerloss.sh`; needs root and /dev/fuse).
//!
//! A child process (this binary, `powerloss_wal_child`) appends batches with their hard state,
//! up to three in flight, compacts now and then, and prints each batch it saw durable. Its
//! WAL lives on crashfs; each round arms a crash at one kind of operation (cycling through
//! them: between a batch's writes and its fdatasync, in the middle of a batch, while a spare
//! segment is pre-allocated, at the segment roll's rename and directory sync, at compaction's
//! unlink), the power fails there, the child is killed, the file system comes back with only
//! what was synced (all of it dropped, or a random prefix with a torn write) and the parent
//! reopens the WAL: every batch reported durable is there and intact, nothing after a torn
//! record is replayed, the hard state is at least the acknowledged one, and `ringraft-wal
//! verify` passes. The next round's child continues on the recovered log.
//!
//! The WAL is shared (`SharedWal`) by the busy group 0 and an idle group 1 that holds three
//! entries and never compacts, with rewrites after two segments: the idle group's log is moved
//! forward again and again as compaction deletes old segments, and must survive every crash.
//! A third group is removed now and then (`SharedWal::remove`) and started again as its next
//! generation: once a removal was acknowledged, nothing of that generation (entries, hard
//! state) may come back.

mod powerloss_support;

use bytes::Bytes;
use powerloss_support::{
    child_round, mode_for, mount, number_after, rounds, under, Aim, CrashPoints, Rng,
};
use ringraft_crashfs::{OpKind, Phase};
use ringraft_storage::{
    BackendKind, Entry, EntryKind, GroupId, HardState, Index, LogId, LogStore, SharedWal, Term,
    Ticket, WalConfig, WalLogStore,
};
use std::collections::VecDeque;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

const CHILD_DIR: &str = "RINGRAFT_POWERLOSS_WAL_DIR";
/// The churn group's generation after the last removal the parent heard of.
const GENERATION: &str = "RINGRAFT_POWERLOSS_WAL_GENERATION";
const WAL_BINARY: &str = env!("CARGO_BIN_EXE_ringraft-wal");

/// Entries of up to 31 KiB, so a batch spans several FUSE writes (a crash can split it).
fn entry(index: u64) -> Entry {
    let data = index.to_le_bytes().repeat((index % 61 + 1) as usize * 64);
    Entry::new(
        LogId::new(Term(1), Index(index)),
        EntryKind::Command,
        Bytes::from(data),
    )
}

fn config(dir: &Path) -> WalConfig {
    WalConfig {
        segment_size_bytes: 1 << 20,
        max_entry_bytes: 64 << 10,
        rewrite_after_segments: 2,
        ..WalConfig::new(dir)
    }
}

/// The child: appends forever; prints `floor F` before compacting to F and `acked L` once the
/// batch ending at L (and its hard state, commit L) is durable.
#[test]
#[ignore = "the child process of the power-loss tests"]
fn powerloss_wal_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let wal = SharedWal::open(config(Path::new(&dir))).expect("open");
    let mut idle = wal.log(IDLE).expect("idle group");
    if idle.last_index() == Index(0) {
        idle.append_and_wait(&[entry(1), entry(2), entry(3)])
            .expect("idle entries");
    }
    println!("idle ready");
    let mut churn = Some(wal.log(CHURN).expect("churn group"));
    // The parent says which generation comes after the last removal it heard of: the churn
    // group's log may be empty (its new entries lost in the crash).
    let mut generation = std::env::var(GENERATION)
        .ok()
        .and_then(|g| g.parse::<u64>().ok())
        .unwrap_or(0);
    if let Some(Ok(Some(e))) = churn.as_ref().map(|l| l.entry(Index(1))) {
        generation = generation.max(churn_generation(&e).expect("a churn entry"));
    }
    let mut store = wal.log(GroupId(0)).expect("busy group");
    let mut next = store.last_index().0 + 1;
    let mut rng = Rng::new(next);
    let mut inflight: VecDeque<(Ticket, u64)> = VecDeque::new();
    // Every other child holds its batches and has them written without the writer thread
    // (submitted asynchronously where they fit, reaped here), as a `MultiRaft` node's shard
    // thread does.
    let completions = if rng.below(2) == 0 {
        store.write_completions()
    } else {
        None
    };
    loop {
        // Smaller batches when written asynchronously, so that most fit one write (256 KiB).
        let count = rng.below(if completions.is_some() { 6 } else { 24 }) + 1;
        let batch: Vec<Entry> = (next..next + count).map(entry).collect();
        if completions.is_some() {
            store.hold_writes();
        }
        store.append(&batch).expect("append");
        next += count;
        let hard_state = HardState {
            term: Term(1),
            vote: None,
            commit: Index(next - 1),
        };
        let ticket = store
            .save_hard_state(&hard_state)
            .expect("save hard state")
            .expect("the WAL keeps the hard state");
        inflight.push_back((ticket, next - 1));
        if rng.below(6) == 0 && next > 300 {
            let floor = next - 250;
            println!("floor {floor}");
            store.truncate_prefix(Index(floor)).expect("compact");
        }
        if completions.is_some() {
            store.release_writes(false).expect("release");
        }
        if rng.below(30) == 0 {
            // The churn group leaves for good and comes back as its next generation.
            drop(churn.take());
            wal.remove(CHURN).expect("remove the churn group");
            println!("removed {generation}");
            generation += 1;
            let mut log = wal.log(CHURN).expect("churn group");
            let entries: Vec<Entry> = (1..=4).map(|i| churn_entry(generation, i)).collect();
            log.append(&entries).expect("churn entries");
            let hard_state = HardState {
                term: Term(generation),
                vote: None,
                commit: Index(0),
            };
            log.save_hard_state(&hard_state).expect("churn hard state");
            churn = Some(log);
        }
        if inflight.len() >= 3 {
            let (ticket, last) = inflight.pop_front().expect("in flight");
            match &completions {
                // Reaped as an event loop would; sometimes a blocking wait does it.
                Some(completions) if rng.below(4) != 0 => {
                    while store.durable().expect("durable") < ticket {
                        completions.wait_and_reap(std::time::Duration::from_millis(100));
                    }
                }
                _ => store.wait_durable(ticket).expect("durable"),
            }
            println!("acked {last}");
        }
    }
}

/// The group that holds three entries and does nothing else.
const IDLE: GroupId = GroupId(1);

/// The group that is removed and started again (see the module docs).
const CHURN: GroupId = GroupId(2);

/// Entry `index` of the churn group's generation `generation` (a few KiB, so that removed
/// generations fill segments too).
fn churn_entry(generation: u64, index: u64) -> Entry {
    Entry::new(
        LogId::new(Term(generation), Index(index)),
        EntryKind::Command,
        Bytes::from(generation.to_le_bytes().repeat(512)),
    )
}

/// The generation an entry of the churn group belongs to, if it is one.
fn churn_generation(e: &Entry) -> Option<u64> {
    let generation = e.id.term.0;
    (*e == churn_entry(generation, e.id.index.0)).then_some(generation)
}

/// What the children said across rounds: the highest acknowledged index, the newest floor,
/// whether the idle group's entries were durable; and the backend a WAL gets on this
/// machine's own file system.
struct Said {
    acked: u64,
    floor: u64,
    idle_ready: bool,
    /// The newest generation of the churn group whose removal returned.
    removed: Option<u64>,
    backend: BackendKind,
}

const AIMS: &[Aim] = &[
    // Between a batch's writes and its fdatasync.
    Aim::new(OpKind::Fsync, Phase::Before, ".seg", 30),
    // Mid-batch: after one of a batch's writes (a batch spans several).
    Aim::new(OpKind::Write, Phase::After, ".seg", 300),
    // Spare segment pre-allocation: while zero-filling, at its fallocate, at its creation.
    Aim::new(OpKind::Write, Phase::After, ".tmp", 40),
    Aim::new(OpKind::Fallocate, Phase::After, ".tmp", 2),
    Aim::new(OpKind::Create, Phase::After, ".tmp", 2),
    Aim::new(OpKind::Fsync, Phase::Before, ".tmp", 2),
    // Segment roll: the spare renamed into place, then the directory synced.
    Aim::new(OpKind::Rename, Phase::Before, ".tmp", 2),
    Aim::new(OpKind::Rename, Phase::After, ".tmp", 2),
    Aim::new(OpKind::FsyncDir, Phase::Before, "/wal", 3),
    Aim::new(OpKind::FsyncDir, Phase::After, "/wal", 3),
    // Compaction: a segment unlinked.
    Aim::new(OpKind::Remove, Phase::Before, ".seg", 2),
    Aim::new(OpKind::Remove, Phase::After, ".seg", 2),
];

fn power_loss_rounds(
    rounds: u64,
    seed: u64,
    mutation: Option<&str>,
) -> Result<CrashPoints, String> {
    let Some((_dir, mut fs)) = mount(mode_for(0), seed) else {
        return Ok(CrashPoints::default());
    };
    let wal = under(&fs, "wal");
    let mut rng = Rng::new(seed);
    let mut points = CrashPoints::default();
    let probe = tempfile::tempdir().expect("temporary directory");
    let backend = WalLogStore::open(config(probe.path()))
        .map_err(|e| format!("a WAL on the machine's file system: {e}"))?
        .info()
        .backend;
    let said = Arc::new(Mutex::new(Said {
        acked: 0,
        floor: 0,
        idle_ready: false,
        removed: None,
        backend,
    }));
    for round in 0..rounds {
        fs.set_mode(mode_for(round));
        let trigger = AIMS[(round % AIMS.len() as u64) as usize].trigger(&mut rng);
        let heard = said.clone();
        let generation = said
            .lock()
            .expect("said")
            .removed
            .map_or(0, |r| r + 1)
            .to_string();
        let report = child_round(
            &mut fs,
            trigger,
            "powerloss_wal_child",
            &[
                (CHILD_DIR, wal.as_os_str()),
                (GENERATION, std::ffi::OsStr::new(&generation)),
            ],
            mutation,
            move |line| {
                let mut said = heard.lock().expect("said");
                if let Some(n) = number_after(line, "acked ") {
                    said.acked = said.acked.max(n);
                } else if let Some(n) = number_after(line, "floor ") {
                    said.floor = said.floor.max(n);
                } else if let Some(n) = number_after(line, "removed ") {
                    said.removed = Some(said.removed.map_or(n, |r| r.max(n)));
                } else if line.trim() == "idle ready" {
                    said.idle_ready = true;
                }
            },
        );
        points.record(&report.label);
        let said = said.lock().expect("said");
        if let Err(e) = check(&wal, &said) {
            let stat = Command::new(WAL_BINARY).arg("stat").arg(&wal).output();
            let stat = stat.map_or_else(
                |e| e.to_string(),
                |o| String::from_utf8_lossy(&o.stdout).into_owned(),
            );
            return Err(format!(
                "round {round}, crash {report:?}: {e}\nringraft-wal stat:\n{stat}"
            ));
        }
    }
    let said = said.lock().expect("said");
    if said.acked == 0 {
        return Err("the children never acknowledged a batch".into());
    }
    if said.removed.is_none() {
        return Err("the children never removed the churn group".into());
    }
    println!(
        "powerloss: the churn group was removed {} times",
        said.removed.map_or(0, |r| r + 1)
    );
    Ok(points)
}

/// Reopens the WAL and checks it against what the children said.
fn check(wal: &Path, said: &Said) -> Result<(), String> {
    let shared = SharedWal::open(config(wal)).map_err(|e| format!("reopen: {e}"))?;
    if said.idle_ready {
        let idle = shared.log(IDLE).map_err(|e| format!("idle group: {e}"))?;
        let got = idle
            .entries(Index(1), Index(4), usize::MAX)
            .map_err(|e| format!("reading the idle group: {e}"))?;
        if got != [entry(1), entry(2), entry(3)] {
            return Err(format!(
                "the idle group holds {:?}, not entries 1..=3",
                got.iter().map(|e| e.id).collect::<Vec<_>>()
            ));
        }
    }
    check_churn(&shared, said)?;
    drop(shared);
    let store = WalLogStore::open(config(wal)).map_err(|e| format!("reopen: {e}"))?;
    // The backend users get: io_uring with O_DIRECT wherever this machine's own file system
    // has it (crashfs serves O_DIRECT opens), not a silent fallback to the portable one.
    if store.info().backend != said.backend {
        return Err(format!(
            "the WAL runs {:?} on crashfs, {:?} on the machine's file system",
            store.info().backend,
            said.backend
        ));
    }
    let (first, last) = (store.first_index().0, store.last_index().0);
    if last < said.acked {
        return Err(format!(
            "acknowledged up to {} but the log ends at {last}",
            said.acked
        ));
    }
    let from = said.floor.max(1);
    if from <= said.acked && first > from {
        return Err(format!(
            "entries from {from} (the newest compaction floor) to {} were acknowledged, the \
             log starts at {first}",
            said.acked
        ));
    }
    let mut index = first;
    while index <= last {
        let got = store
            .entries(Index(index), Index(last + 1), 4 << 20)
            .map_err(|e| format!("reading {index}: {e}"))?;
        if got.is_empty() {
            return Err(format!("entry {index} missing inside {first}..={last}"));
        }
        for e in got {
            if e != entry(index) {
                return Err(format!("entry {index} damaged"));
            }
            index += 1;
        }
    }
    let commit = store.saved_hard_state().map_or(0, |hs| hs.commit.0);
    if commit < said.acked || commit > last {
        return Err(format!(
            "hard state commit {commit}: acknowledged {}, log ends at {last}",
            said.acked
        ));
    }
    drop(store);
    let out = Command::new(WAL_BINARY)
        .arg("verify")
        .arg(wal)
        .output()
        .map_err(|e| format!("running ringraft-wal: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ringraft-wal verify: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// The churn group holds one generation, newer than every acknowledged removal: its entries
/// from 1 on, and its hard state, if any, of that generation or a newer one.
fn check_churn(shared: &SharedWal, said: &Said) -> Result<(), String> {
    let churn = shared.log(CHURN).map_err(|e| format!("churn group: {e}"))?;
    let removed = said.removed.map_or(0, |r| r + 1);
    let got = churn
        .entries(Index(1), churn.last_index().next(), usize::MAX)
        .map_err(|e| format!("reading the churn group: {e}"))?;
    let generations: Vec<Option<u64>> = got.iter().map(churn_generation).collect();
    let first = generations.first().copied().flatten();
    let one = generations.iter().all(|g| *g == first);
    let from_one = got.iter().zip(1..).all(|(e, i)| e.id.index == Index(i));
    if churn.first_index() != Index(1) || !one || !from_one || first.is_some_and(|g| g < removed) {
        return Err(format!(
            "the churn group holds {:?} of generations {generations:?}; generations before \
             {removed} were removed",
            got.iter().map(|e| e.id).collect::<Vec<_>>()
        ));
    }
    let term = churn.saved_hard_state().map(|hs| hs.term.0);
    if term.is_some_and(|t| t < removed || first.is_some_and(|g| t < g)) {
        return Err(format!(
            "the churn group's hard state is of generation {term:?}, its entries of {first:?}; \
             generations before {removed} were removed"
        ));
    }
    Ok(())
}

#[test]
#[ignore = "needs root and /dev/fuse: tools/scripts/powerloss.sh"]
fn acknowledged_batches_survive_power_loss() {
    let rounds = rounds(48);
    let points = power_loss_rounds(rounds, 1, None).unwrap_or_else(|e| panic!("{e}"));
    if rounds >= AIMS.len() as u64 * 2 {
        points.finish(
            "wal",
            &[
                "fsync-before:/wal/#.seg",
                "write-after:/wal/#.seg",
                "write-after:/wal/#.seg.tmp",
                "rename-",
                "fsyncdir-",
                "remove-",
            ],
        );
    }
}

#[test]
#[ignore = "needs root and /dev/fuse: tools/scripts/powerloss.sh"]
fn a_wal_that_skips_fdatasync_is_caught() {
    let found = power_loss_rounds(rounds(48), 2, Some("skip-wal-fdatasync"));
    match found {
        Err(e) => println!("powerloss: mutation skip-wal-fdatasync caught: {e}"),
        Ok(points) if points.rounds() == 0 => {} // not mounted: skipped
        Ok(_) => panic!("a WAL that never calls fdatasync survived every power loss"),
    }
}
