//! Shared by the power-loss tests (`tools/tests/powerloss_*.rs`, run by
//! `tools/scripts/powerloss.sh`): mounting crashfs, choosing crash points, reporting them.
//!
//! Each test prints `powerloss: crash point LABEL` for every crash it caused and
//! `powerloss: TEST: R rounds, K distinct crash points` at its end; the script counts them.

// Each test binary uses a different part of this module.
#![allow(dead_code)]

use ringraft_crashfs::{CrashFs, CrashMode, OpKind, Phase, Trigger};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Rounds per test: `RINGRAFT_POWERLOSS_ROUNDS`, else `quick`.
pub fn rounds(quick: u64) -> u64 {
    std::env::var("RINGRAFT_POWERLOSS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(quick)
}

/// A mounted crashfs in its own temporary directory, or `None` (with the reason printed) on a
/// machine without root or /dev/fuse. The script refuses to run there, so a skip cannot pass
/// for a pass.
pub fn mount(mode: CrashMode, seed: u64) -> Option<(tempfile::TempDir, CrashFs)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !Path::new("/dev/fuse").exists() {
        eprintln!("powerloss: skipped (needs root and /dev/fuse)");
        return None;
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mount point");
    let fs = CrashFs::mount(&mnt, dir.path(), mode, seed).expect("mounting crashfs");
    Some((dir, fs))
}

/// A small xorshift generator (tests choose crash points from a seed).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// A crash point to aim at: an operation on paths containing `path`, after skipping up to
/// `max_skip` of them.
#[derive(Clone, Copy)]
pub struct Aim {
    pub op: OpKind,
    pub phase: Phase,
    pub path: &'static str,
    pub max_skip: u64,
}

impl Aim {
    pub const fn new(op: OpKind, phase: Phase, path: &'static str, max_skip: u64) -> Aim {
        Aim {
            op,
            phase,
            path,
            max_skip,
        }
    }

    pub fn trigger(&self, rng: &mut Rng) -> Trigger {
        Trigger {
            op: self.op,
            phase: self.phase,
            path_contains: self.path.to_string(),
            skip: rng.below(self.max_skip + 1) as u32,
        }
    }
}

/// Counts the crash points a test reached.
#[derive(Default)]
pub struct CrashPoints {
    seen: BTreeMap<String, u64>,
    rounds: u64,
}

impl CrashPoints {
    pub fn record(&mut self, label: &str) {
        println!("powerloss: crash point {label}");
        *self.seen.entry(label.to_string()).or_default() += 1;
        self.rounds += 1;
    }

    pub fn rounds(&self) -> u64 {
        self.rounds
    }

    pub fn reached(&self, prefix: &str) -> bool {
        self.seen.keys().any(|k| k.starts_with(prefix))
    }

    /// Prints the summary line and asserts every label in `required` (prefixes) was reached.
    pub fn finish(&self, test: &str, required: &[&str]) {
        println!(
            "powerloss: {test}: {} rounds, {} distinct crash points",
            self.rounds,
            self.seen.len()
        );
        for (label, n) in &self.seen {
            println!("powerloss:   {n:>4} × {label}");
        }
        let missing: Vec<_> = required.iter().filter(|r| !self.reached(r)).collect();
        assert!(
            missing.is_empty(),
            "{test}: crash points never reached: {missing:?} (reached {:?})",
            self.seen.keys().collect::<Vec<_>>()
        );
    }
}

/// Mode for round `round`: every third crash drops all unsynced state, the others keep a
/// random prefix with a torn write.
pub fn mode_for(round: u64) -> CrashMode {
    if round % 3 == 0 {
        CrashMode::DropUnsynced
    } else {
        CrashMode::Torn
    }
}

/// The directory `name` under the mount.
pub fn under(fs: &CrashFs, name: &str) -> PathBuf {
    fs.mountpoint().join(name)
}

/// A child process: this test binary's ignored test `child_test`, started with `env` (and
/// `RINGRAFT_STORAGE_MUTATION` = `mutation`), each line it prints handed to `on_line` by a
/// reader thread.
pub struct Child {
    process: std::process::Child,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Child {
    pub fn spawn(
        child_test: &str,
        env: &[(&str, &std::ffi::OsStr)],
        mutation: Option<&str>,
        on_line: impl FnMut(&str) + Send + 'static,
    ) -> Child {
        Child::spawn_in(None, child_test, env, mutation, on_line)
    }

    /// [`Child::spawn`], in the network namespace `netns` (a file under /run/netns) if given.
    pub fn spawn_in(
        netns: Option<&Path>,
        child_test: &str,
        env: &[(&str, &std::ffi::OsStr)],
        mutation: Option<&str>,
        on_line: impl FnMut(&str) + Send + 'static,
    ) -> Child {
        use std::io::{BufRead, BufReader};
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        use std::process::{Command, Stdio};
        let exe = std::env::current_exe().expect("current exe");
        let mut command = Command::new(exe);
        command
            .args([
                "--exact",
                child_test,
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("RINGRAFT_STORAGE_MUTATION", mutation.unwrap_or(""))
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (key, value) in env {
            command.env(key, value);
        }
        let namespace = netns.map(|path| std::fs::File::open(path).expect("the namespace"));
        let fd = namespace.as_ref().map(AsRawFd::as_raw_fd);
        // SAFETY: between fork and exec only async-signal-safe calls: prctl, and setns on a
        // descriptor the parent keeps open until the child is spawned.
        unsafe {
            command.pre_exec(move || {
                // The child dies with the test, even one killed before its guards ran.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(fd) = fd {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let mut process = command.spawn().expect("spawn child");
        drop(namespace);
        let stdout = process.stdout.take().expect("stdout");
        let mut on_line = on_line;
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                on_line(&line);
            }
        });
        Child {
            process,
            reader: Some(reader),
        }
    }

    /// SIGKILLs the child and waits until it and its reader are gone.
    pub fn kill(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
        if let Some(reader) = self.reader.take() {
            reader.join().expect("reader");
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One round with a child process: arms `trigger`, starts the child (see [`Child::spawn`]),
/// waits up to three seconds for the trigger (then crashes on command), kills the child and
/// restarts the file system. Returns the crash.
pub fn child_round(
    fs: &mut CrashFs,
    trigger: ringraft_crashfs::Trigger,
    child_test: &str,
    env: &[(&str, &std::ffi::OsStr)],
    mutation: Option<&str>,
    on_line: impl FnMut(&str) + Send + 'static,
) -> ringraft_crashfs::CrashReport {
    fs.arm(trigger);
    let child = Child::spawn(child_test, env, mutation, on_line);
    let report = match fs.wait_crashed(std::time::Duration::from_secs(3)) {
        Some(report) => report,
        None => fs.crash(),
    };
    child.kill();
    fs.disarm();
    fs.restart().expect("restart crashfs");
    report
}

/// The number after the last `tag` in `line` (a child's first line follows libtest's
/// `test NAME ... `).
pub fn number_after(line: &str, tag: &str) -> Option<u64> {
    line.rsplit_once(tag)
        .and_then(|(_, n)| n.split_whitespace().next()?.parse().ok())
}
