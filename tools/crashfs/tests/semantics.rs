//! crashfs mounted for real (root and /dev/fuse needed): what survives a crash through the
//! kernel's own system calls, O_DIRECT included.

use ringraft_crashfs::{CrashFs, CrashMode, OpKind, Phase, Trigger};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// Mounts a crashfs in a fresh temporary directory, or explains why this machine cannot.
fn mounted(mode: CrashMode, seed: u64) -> Option<(tempfile::TempDir, CrashFs)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !Path::new("/dev/fuse").exists() {
        eprintln!("skipped: needs root and /dev/fuse (tools/scripts/powerloss.sh requires them)");
        return None;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let mnt = dir.path().join("mnt");
    fs::create_dir(&mnt).expect("mount point");
    let fs = CrashFs::mount(&mnt, dir.path(), mode, seed).expect("mounting crashfs");
    Some((dir, fs))
}

fn sync_dir(path: &Path) {
    File::open(path)
        .expect("open dir")
        .sync_all()
        .expect("fsync dir");
}

fn read(path: &Path) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    File::open(path).ok()?.read_to_end(&mut out).expect("read");
    Some(out)
}

#[test]
fn only_synced_data_and_entries_survive_a_crash() {
    let Some((_dir, mut fs)) = mounted(CrashMode::DropUnsynced, 7) else {
        return;
    };
    let root = fs.mountpoint().to_path_buf();
    // a: written, synced, directory synced, then more unsynced writes.
    let a = root.join("a");
    let mut file = File::create(&a).expect("create a");
    file.write_all(b"durable").expect("write");
    file.sync_data().expect("fdatasync");
    sync_dir(&root);
    file.write_all(b" and lost").expect("write");
    assert_eq!(read(&a).as_deref(), Some(&b"durable and lost"[..]));
    // c: renamed over without a directory sync.
    let c = root.join("c");
    fs::write(&c, b"old").expect("write c");
    File::open(&c).expect("c").sync_all().expect("fsync c");
    sync_dir(&root);
    // b: written and synced, but its directory entry never was.
    let b = root.join("b");
    let mut file_b = File::create(&b).expect("create b");
    file_b.write_all(b"nameless").expect("write");
    file_b.sync_all().expect("fsync");
    let tmp = root.join("c.tmp");
    fs::write(&tmp, b"new").expect("write tmp");
    File::open(&tmp)
        .expect("tmp")
        .sync_all()
        .expect("fsync tmp");
    fs::rename(&tmp, &c).expect("rename");
    assert_eq!(read(&c).as_deref(), Some(&b"new"[..]));
    drop((file, file_b));

    let report = fs.crash();
    assert!(report.dropped > 0, "{report:?}");
    assert!(
        File::open(&a).is_err(),
        "a crashed file system serves nothing"
    );
    fs.restart().expect("restart");

    assert_eq!(read(&a).as_deref(), Some(&b"durable"[..]));
    assert_eq!(read(&b), None, "b's entry was never synced");
    assert_eq!(read(&c).as_deref(), Some(&b"old"[..]));
    assert_eq!(read(&tmp), None);
}

/// Writes a block of 0xA5 at offset 0 of an O_DIRECT file with `durable_write`, then a block
/// of 0x5A after it with a plain write, crashes, and checks that only the first survives.
fn only_the_first_block_survives(durable_write: impl FnOnce(&File, &[u8])) {
    let Some((_dir, mut fs)) = mounted(CrashMode::DropUnsynced, 7) else {
        return;
    };
    let root = fs.mountpoint().to_path_buf();
    let path = root.join("seg");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .expect("O_DIRECT open");
    sync_dir(&root);
    let mut block = vec![0u8; 8192];
    // An aligned buffer for O_DIRECT: 4 KiB inside an 8 KiB allocation.
    let start = block.as_ptr().align_offset(4096);
    let aligned = &mut block[start..start + 4096];
    aligned.fill(0xA5);
    durable_write(&file, aligned);
    aligned.fill(0x5A);
    file.write_all_at(aligned, 4096).expect("O_DIRECT write");
    let len = fs::metadata(&path).expect("stat").len();
    assert_eq!(len, 8192);
    drop(file);
    fs.crash();
    fs.restart().expect("restart");
    let data = read(&path).expect("segment survives");
    assert_eq!(data.len(), 4096, "only the first write was durable");
    assert!(data.iter().all(|&b| b == 0xA5));
}

#[test]
fn o_direct_writes_are_served_and_forgotten_unless_synced() {
    only_the_first_block_survives(|file, block| {
        file.write_all_at(block, 0).expect("O_DIRECT write");
        file.sync_data().expect("fdatasync");
    });
}

#[test]
fn a_dsync_write_is_durable_when_it_returns() {
    only_the_first_block_survives(|file, block| {
        let iov = libc::iovec {
            iov_base: block.as_ptr() as *mut libc::c_void,
            iov_len: block.len(),
        };
        // SAFETY: `iov` points to `block`, alive for the call; the kernel only reads it.
        let n = unsafe { libc::pwritev2(file.as_raw_fd(), &iov, 1, 0, libc::RWF_DSYNC) };
        assert_eq!(n, 4096, "pwritev2: {}", std::io::Error::last_os_error());
    });
}

#[test]
fn a_trigger_crashes_at_the_named_operation() {
    let Some((_dir, mut fs)) = mounted(CrashMode::DropUnsynced, 7) else {
        return;
    };
    let root = fs.mountpoint().to_path_buf();
    fs.arm(Trigger {
        op: OpKind::Fsync,
        phase: Phase::Before,
        path_contains: "log-".into(),
        skip: 1,
    });
    let path = root.join("log-1");
    let mut file = File::create(&path).expect("create");
    sync_dir(&root);
    file.write_all(b"one").expect("write");
    file.sync_data().expect("first fsync passes");
    file.write_all(b"two").expect("write");
    assert!(file.sync_data().is_err(), "the second fsync crashes");
    let report = fs.crashed().expect("crashed");
    assert_eq!(report.label, "fsync-before:/log-#");
    drop(file);
    fs.restart().expect("restart");
    assert_eq!(read(&path).as_deref(), Some(&b"one"[..]));
}

#[test]
fn a_torn_crash_keeps_a_prefix_of_the_unsynced_writes() {
    let (mut kept, mut torn, mut lengths) = (0, 0, std::collections::BTreeSet::new());
    for seed in 0..20u64 {
        let Some((_dir, mut fs)) = mounted(CrashMode::Torn, seed) else {
            return;
        };
        let root = fs.mountpoint().to_path_buf();
        let path = root.join("f");
        let mut file = File::create(&path).expect("create");
        sync_dir(&root);
        file.write_all(&[1u8; 100]).expect("write");
        file.sync_data().expect("fsync");
        for byte in 2..6u8 {
            file.write_all(&[byte; 100]).expect("write");
        }
        drop(file);
        let report = fs.crash();
        kept += report.kept;
        torn += usize::from(report.torn);
        fs.restart().expect("restart");
        let data = read(&path).expect("file");
        lengths.insert(data.len());
        assert!(data.len() >= 100 && data.len() <= 500, "{}", data.len());
        // Synced bytes intact; then whole writes in order; at most the last one cut short.
        for (i, &b) in data.iter().enumerate() {
            assert_eq!(b, (i / 100) as u8 + 1, "byte {i} of {}", data.len());
        }
    }
    assert!(kept > 0 && torn > 0, "kept {kept} writes, tore {torn}");
    assert!(lengths.len() > 3, "survivors of 20 seeds: {lengths:?}");
}
