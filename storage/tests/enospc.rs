//! A full device: the WAL reports a typed out-of-space error, refuses further writes until
//! reopened, and loses nothing it acknowledged. Needs root to mount a 2 MiB tmpfs; without it
//! the test prints why it is skipped.

use bytes::Bytes;
use ringraft_storage::{
    BackendChoice, Entry, EntryKind, Index, LogError, LogId, LogStore, Term, WalConfig, WalLogStore,
};
use std::path::{Path, PathBuf};
use std::process::Command;

struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn mount_small_tmpfs(dir: &Path) -> Option<Mount> {
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(dir)
        .status();
    match status {
        Ok(s) if s.success() => Some(Mount(dir.to_path_buf())),
        Ok(s) => {
            eprintln!("skipping ENOSPC test: mount -t tmpfs failed ({s}); needs root");
            None
        }
        Err(e) => {
            eprintln!("skipping ENOSPC test: cannot run mount ({e})");
            None
        }
    }
}

fn entry(index: u64) -> Entry {
    Entry::new(
        LogId::new(Term(1), Index(index)),
        EntryKind::Command,
        Bytes::from(vec![index as u8; 4000]),
    )
}

fn run(backend: BackendChoice) {
    let dir = tempfile::tempdir().expect("tempdir");
    let Some(_mount) = mount_small_tmpfs(dir.path()) else {
        return;
    };
    let config = WalConfig {
        segment_size_bytes: 256 << 10,
        max_entry_bytes: 64 << 10,
        backend,
        ..WalConfig::new(dir.path().join("wal"))
    };
    let mut store = WalLogStore::open(config.clone()).expect("open");
    let mut acked = 0;
    let error = loop {
        let batch: Vec<Entry> = (acked + 1..=acked + 8).map(entry).collect();
        match store.append_and_wait(&batch) {
            Ok(()) => acked += 8,
            Err(e) => break e,
        }
        assert!(acked < 10_000, "a 2 MiB file system never filled");
    };
    assert!(
        error.is_no_space(),
        "expected a typed out-of-space error, got: {error}"
    );
    assert!(acked > 0);
    // Stopped: later writes and polls fail until reopened.
    let again = store
        .append(&[entry(store.last_index().0 + 1)])
        .expect_err("stopped");
    assert!(
        matches!(again, LogError::Failed { .. }) && again.is_no_space(),
        "{again}"
    );
    assert!(store.durable().is_err());
    drop(store);
    let store = WalLogStore::open(config).expect("reopen after ENOSPC");
    assert!(store.last_index().0 >= acked, "lost acknowledged entries");
    for index in 1..=acked {
        assert_eq!(
            store.entry(Index(index)).expect("read"),
            Some(entry(index)),
            "entry {index}"
        );
    }
}

#[test]
fn a_full_device_is_a_typed_error_and_loses_nothing_acknowledged() {
    run(BackendChoice::Portable);
    run(BackendChoice::Auto);
}
