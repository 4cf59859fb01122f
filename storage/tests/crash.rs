//! Crash tests: a child process appends and is killed with SIGKILL at arbitrary moments; the
//! parent reopens the log and checks that every acknowledged entry is present and intact, and
//! that the hard state saved with each batch (its commit index is the batch's last entry) is
//! the newest acknowledged one or later, never past the recovered log.
//!
//! The child is this test binary re-invoked with `RINGRAFT_CRASH_CHILD_DIR` set, running only
//! `crash_child`. Fast: `acknowledged_entries_survive_sigkill` (a few rounds). Long (ignored):
//! `cargo test -p ringraft-storage --release --test crash -- --ignored` (200 rounds).

use bytes::Bytes;
use ringraft_storage::{
    BackendChoice, Entry, EntryKind, HardState, Index, LogId, LogStore, Term, Ticket, WalConfig,
    WalLogStore,
};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

const CHILD_DIR: &str = "RINGRAFT_CRASH_CHILD_DIR";
const CHILD_BACKEND: &str = "RINGRAFT_CRASH_CHILD_BACKEND";

fn entry(index: u64) -> Entry {
    let data = index.to_le_bytes().repeat((index % 97 + 1) as usize);
    Entry::new(
        LogId::new(Term(1), Index(index)),
        EntryKind::Command,
        Bytes::from(data),
    )
}

fn config(dir: &Path, backend: BackendChoice) -> WalConfig {
    WalConfig {
        segment_size_bytes: 256 << 10,
        max_entry_bytes: 16 << 10,
        backend,
        ..WalConfig::new(dir)
    }
}

fn backend_from_env() -> BackendChoice {
    match std::env::var(CHILD_BACKEND).as_deref() {
        Ok("portable") => BackendChoice::Portable,
        _ => BackendChoice::Auto,
    }
}

/// Checks the log holds exactly `1..=last` with the expected contents; returns `last`.
fn verify(store: &WalLogStore) -> u64 {
    let last = store.last_index().0;
    assert_eq!(store.first_index(), Index(1));
    let mut index = 1;
    while index <= last {
        let got = store
            .entries(Index(index), Index(last + 1), 1 << 20)
            .expect("read");
        assert!(!got.is_empty());
        for e in got {
            assert_eq!(e, entry(index), "entry {index} damaged");
            index += 1;
        }
    }
    last
}

/// The child: appends forever with up to four batches in flight, printing each durable index.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else {
        return;
    };
    let mut store = WalLogStore::open(config(Path::new(&dir), backend_from_env())).expect("open");
    // Asynchronous writes reaped here, as a `MultiRaft` host does (io_uring only).
    let completions = match std::env::var(CHILD_BACKEND).as_deref() {
        Ok("async") => store.write_completions(),
        _ => None,
    };
    let mut next = verify(&store) + 1;
    let mut inflight: VecDeque<(Ticket, u64)> = VecDeque::new();
    let mut rng = next.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    loop {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let count = rng % 40 + 1;
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
        if let Some(completions) = &completions {
            store.release_writes(false).expect("release");
            completions.reap();
        }
        if inflight.len() >= 4 {
            let (ticket, last) = inflight.pop_front().expect("inflight");
            match &completions {
                Some(completions) => {
                    while store.durable().expect("durable") < ticket {
                        completions.wait_and_reap(std::time::Duration::from_millis(100));
                    }
                }
                None => store.wait_durable(ticket).expect("durable"),
            }
            println!("acked {last}");
        }
    }
}

fn crash_rounds(rounds: u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("current exe");
    let mut acked_max = 0;
    for round in 0..rounds {
        let backend = ["auto", "portable", "async"][(round % 3) as usize];
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, dir.path())
            .env(CHILD_BACKEND, backend)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("stdout");
        // Kill after a pseudo-random number of acknowledgements (seeded by the round).
        let kill_after = (round * 7919 + 13) % 60 + 1;
        let mut seen = 0;
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("line");
            if let Some(n) = line.strip_prefix("acked ") {
                acked_max = acked_max.max(n.parse::<u64>().expect("number"));
                seen += 1;
                if seen >= kill_after {
                    break;
                }
            }
        }
        child.kill().expect("SIGKILL"); // std sends SIGKILL on Unix
        let status = child.wait().expect("wait");
        assert!(
            !status.success(),
            "the child must have been killed, not finished"
        );
        let store = WalLogStore::open(config(dir.path(), BackendChoice::Portable)).expect("reopen");
        let last = verify(&store);
        assert!(
            last >= acked_max,
            "round {round}: acknowledged {acked_max} but recovered {last}"
        );
        let commit = store.saved_hard_state().map_or(0, |hs| hs.commit.0);
        assert!(
            commit >= acked_max && commit <= last,
            "round {round}: hard state commit {commit}, acknowledged {acked_max}, log ends at {last}"
        );
    }
    assert!(acked_max > 0, "the children never acknowledged anything");
}

#[test]
fn acknowledged_entries_survive_sigkill() {
    if std::env::var(CHILD_DIR).is_ok() {
        return;
    }
    crash_rounds(4);
}

#[test]
#[ignore = "long: 200 SIGKILL rounds"]
fn acknowledged_entries_survive_many_sigkills() {
    if std::env::var(CHILD_DIR).is_ok() {
        return;
    }
    crash_rounds(200);
}
