//! Durable log-append throughput: the io_uring WAL, the portable WAL and a naive baseline, in
//! the same process, for 64 B, 256 B, 1 KiB and 4 KiB entries at batches of 1, 64 and 1024.
//!
//! `cargo bench --bench log_append` runs the criterion groups, then prints a summary table
//! (median of several timed runs per row) with entries/s, payload MB/s and the ratio to the
//! naive baseline. Two modes:
//!
//! - `sync`: append a batch, wait until it is durable, repeat (what the naive baseline does).
//! - `pipe`: keep up to `PIPELINE_DEPTH` batches in flight, as a shard does while a sync runs;
//!   the WAL's group commit then covers several batches with one fdatasync.
//!
//! Environment: `RINGRAFT_BENCH_DIR` (default: the system temp dir) chooses the file system;
//! `RINGRAFT_BENCH_SUMMARY_ONLY=1` skips criterion; `RINGRAFT_BENCH_SECS` sets the length of
//! one summary run (default 0.5); `RINGRAFT_BENCH_ROWS=64x1024,4096x1024` and
//! `RINGRAFT_BENCH_SUBJECTS=naive,io_uring-pipe` limit the summary to some rows and subjects.
//!
//! `RINGRAFT_BENCH_RECOVERY=1` runs only the recovery benchmark instead: it builds a log of
//! `RINGRAFT_BENCH_RECOVERY_MIB` MiB (default 1024) of `RINGRAFT_BENCH_RECOVERY_ENTRY_BYTES`
//! entries (default 1024), then times `WalLogStore::open` three times with the segment files
//! evicted from the page cache (cold: read from the device) and three times warm.
// Benchmarks measure wall-clock time by design.
#![allow(clippy::disallowed_methods)]

use bytes::Bytes;
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use ringraft_storage::{
    BackendChoice, Entry, EntryKind, Index, LogId, LogStore, Term, Ticket, WalConfig, WalLogStore,
};
use std::collections::VecDeque;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SIZES: [usize; 4] = [64, 256, 1024, 4096];
const BATCHES: [usize; 3] = [1, 64, 1024];
const PIPELINE_DEPTH: usize = 8;
/// Batches appended before the timed region starts.
const WARM_UP_BATCHES: usize = 2 * PIPELINE_DEPTH;
const NAIVE_SEGMENT_BYTES: u64 = 64 << 20;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Subject {
    Naive,
    Portable,
    Uring,
    UringPipelined,
}

impl Subject {
    fn name(self) -> &'static str {
        match self {
            Subject::Naive => "naive",
            Subject::Portable => "portable",
            Subject::Uring => "io_uring",
            Subject::UringPipelined => "io_uring-pipe",
        }
    }
}

fn bench_root() -> PathBuf {
    std::env::var_os("RINGRAFT_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from)
}

/// The naive baseline (after shared/bench-peers naive_wal.rs, append mode): length + crc32c
/// records appended to a std file, one write and one fdatasync per batch, new 64 MiB files.
struct Naive {
    dir: PathBuf,
    file: File,
    offset: u64,
    segment: u64,
    buf: Vec<u8>,
}

impl Naive {
    fn open(dir: &Path) -> Naive {
        let file = File::create(dir.join("naive-0.wal")).expect("create");
        Naive {
            dir: dir.to_path_buf(),
            file,
            offset: 0,
            segment: 0,
            buf: Vec::new(),
        }
    }

    fn append(&mut self, entries: &[Entry]) {
        self.buf.clear();
        for e in entries {
            self.buf
                .extend_from_slice(&(e.data.len() as u32).to_le_bytes());
            self.buf
                .extend_from_slice(&crc32c::crc32c(&e.data).to_le_bytes());
            self.buf.extend_from_slice(&e.data);
        }
        if self.offset + self.buf.len() as u64 > NAIVE_SEGMENT_BYTES {
            self.segment += 1;
            let path = self.dir.join(format!("naive-{}.wal", self.segment));
            self.file = File::create(path).expect("create");
            File::open(&self.dir)
                .and_then(|d| d.sync_all())
                .expect("fsync dir");
            self.offset = 0;
        }
        self.file.write_all(&self.buf).expect("write");
        self.file.sync_data().expect("fdatasync");
        self.offset += self.buf.len() as u64;
    }
}

/// Entries `next..next + batch` whose payloads share one pool (no copies when building them).
fn batch_at(pool: &Bytes, next: u64, batch: usize, size: usize) -> Vec<Entry> {
    (0..batch as u64)
        .map(|i| {
            let start = ((next + i) as usize * 131) % (pool.len() - size);
            let id = LogId::new(Term(1), Index(next + i));
            Entry::new(id, EntryKind::Command, pool.slice(start..start + size))
        })
        .collect()
}

/// Appends for about `duration` (or `iterations` batches) and returns (batches, elapsed).
fn run(subject: Subject, size: usize, batch: usize, limit: Limit) -> (u64, Duration) {
    let dir = tempfile::tempdir_in(bench_root()).expect("tempdir");
    let pool = Bytes::from(
        (0..(1 << 20) + 8192)
            .map(|i| (i * 7 + 3) as u8)
            .collect::<Vec<u8>>(),
    );
    let backend = match subject {
        Subject::Portable => BackendChoice::Portable,
        _ => BackendChoice::IoUring,
    };
    let mut naive = (subject == Subject::Naive).then(|| Naive::open(dir.path()));
    let mut wal = (subject != Subject::Naive).then(|| {
        let mut config = WalConfig::new(dir.path());
        config.backend = backend;
        WalLogStore::open(config).expect("open WAL")
    });
    // Warm up outside the timed region, as a long-running shard would be: the first segment
    // started, and (for the WAL) its staging buffers grown to the sizes this load needs.
    // Without it, a 0.5 s run of 4 KiB × 1024 spent a tenth of its time growing fresh buffers.
    let mut next = 1u64;
    let mut inflight: VecDeque<Ticket> = VecDeque::new();
    let depth = if subject == Subject::UringPipelined {
        PIPELINE_DEPTH
    } else {
        1
    };
    for _ in 0..WARM_UP_BATCHES {
        let entries = batch_at(&pool, next, batch, size);
        next += batch as u64;
        if let Some(naive) = naive.as_mut() {
            naive.append(&entries);
        } else if let Some(wal) = wal.as_mut() {
            inflight.push_back(wal.append(&entries).expect("warm up"));
            if inflight.len() >= depth {
                let ticket = inflight.pop_front().expect("ticket");
                wal.wait_durable(ticket).expect("durable");
            }
        }
    }
    if let (Some(wal), Some(last)) = (wal.as_ref(), inflight.back()) {
        wal.wait_durable(*last).expect("durable");
    }
    inflight.clear();
    let start = Instant::now();
    let mut done = 0u64;
    while !limit.reached(done, start) {
        let entries = batch_at(&pool, next, batch, size);
        next += batch as u64;
        if let Some(naive) = naive.as_mut() {
            naive.append(&entries);
        } else if let Some(wal) = wal.as_mut() {
            inflight.push_back(wal.append(&entries).expect("append"));
            if inflight.len() >= depth {
                let ticket = inflight.pop_front().expect("ticket");
                wal.wait_durable(ticket).expect("durable");
            }
        }
        done += 1;
    }
    if let (Some(wal), Some(last)) = (wal.as_ref(), inflight.back()) {
        wal.wait_durable(*last).expect("durable");
    }
    let elapsed = start.elapsed();
    drop(wal);
    (done, elapsed)
}

#[derive(Clone, Copy)]
enum Limit {
    Iterations(u64),
    Time(Duration),
}

impl Limit {
    fn reached(self, done: u64, start: Instant) -> bool {
        match self {
            Limit::Iterations(n) => done >= n,
            Limit::Time(d) => start.elapsed() >= d,
        }
    }
}

fn subjects() -> Vec<Subject> {
    let wanted = std::env::var("RINGRAFT_BENCH_SUBJECTS").unwrap_or_default();
    [
        Subject::Naive,
        Subject::Portable,
        Subject::Uring,
        Subject::UringPipelined,
    ]
    .into_iter()
    .filter(|s| wanted.is_empty() || wanted.split(',').any(|w| w == s.name()))
    .collect()
}

/// `RINGRAFT_BENCH_ROWS=64x1024,4096x1024` limits the summary to those rows (default: all).
fn row_selected(size: usize, batch: usize) -> bool {
    let wanted = std::env::var("RINGRAFT_BENCH_ROWS").unwrap_or_default();
    wanted.is_empty() || wanted.split(',').any(|w| w == format!("{size}x{batch}"))
}

fn criterion_benches(c: &mut Criterion) {
    for &size in &SIZES {
        for &batch in &BATCHES {
            let mut group = c.benchmark_group(format!("log_append/{size}B"));
            group.throughput(Throughput::Elements(batch as u64));
            group.sample_size(10);
            group.warm_up_time(Duration::from_millis(300));
            group.measurement_time(Duration::from_secs(1));
            for subject in subjects() {
                group.bench_with_input(
                    BenchmarkId::new(subject.name(), format!("batch{batch}")),
                    &(size, batch),
                    |b, &(size, batch)| {
                        b.iter_custom(|iters| run(subject, size, batch, Limit::Iterations(iters)).1)
                    },
                );
            }
            group.finish();
        }
    }
}

criterion_group!(benches, criterion_benches);

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn summary() {
    let secs: f64 = std::env::var("RINGRAFT_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.5);
    let runs = 3;
    println!(
        "\nlog_append summary: median of {runs} runs of {secs} s each, dir {}",
        bench_root().display()
    );
    println!(
        "{:>6} {:>6} {:>14} {:>14} {:>10} {:>8}",
        "size", "batch", "subject", "entries/s", "MB/s", "x naive"
    );
    for &size in &SIZES {
        for &batch in &BATCHES {
            if !row_selected(size, batch) {
                continue;
            }
            let mut naive_rate = 0.0;
            for subject in subjects() {
                let rates: Vec<f64> = (0..runs)
                    .map(|_| {
                        let (batches, elapsed) = run(
                            subject,
                            size,
                            batch,
                            Limit::Time(Duration::from_secs_f64(secs)),
                        );
                        (batches * batch as u64) as f64 / elapsed.as_secs_f64()
                    })
                    .collect();
                let rate = median(rates);
                if subject == Subject::Naive {
                    naive_rate = rate;
                }
                println!(
                    "{:>6} {:>6} {:>14} {:>14.0} {:>10.1} {:>8.2}",
                    size,
                    batch,
                    subject.name(),
                    rate,
                    rate * size as f64 / 1e6,
                    rate / naive_rate
                );
            }
        }
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

extern "C" {
    // From the C library every Rust program on Linux links; the bench has no `libc` crate.
    fn posix_fadvise(fd: i32, offset: i64, len: i64, advice: i32) -> i32;
}
const POSIX_FADV_DONTNEED: i32 = 4;

/// Drops the (clean) pages of every file in `dir` from the page cache.
fn evict(dir: &Path) {
    use std::os::unix::io::AsRawFd;
    for item in std::fs::read_dir(dir).expect("list") {
        let file = File::open(item.expect("item").path()).expect("open");
        // SAFETY: a plain syscall on a descriptor we own.
        let rc = unsafe { posix_fadvise(file.as_raw_fd(), 0, 0, POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0, "posix_fadvise");
    }
}

/// Builds a log of about `RINGRAFT_BENCH_RECOVERY_MIB` MiB and times recovery.
fn recovery() {
    let size: usize = env_or("RINGRAFT_BENCH_RECOVERY_ENTRY_BYTES", 1024);
    let mib: u64 = env_or("RINGRAFT_BENCH_RECOVERY_MIB", 1024);
    let record_bytes = 40 + size.div_ceil(8) * 8;
    let count = (mib << 20).div_ceil(record_bytes as u64);
    let dir = tempfile::tempdir_in(bench_root()).expect("tempdir");
    let pool = Bytes::from(
        (0..(1 << 20) + 8192)
            .map(|i| (i * 7 + 3) as u8)
            .collect::<Vec<u8>>(),
    );
    let build = Instant::now();
    {
        let mut wal = WalLogStore::open(WalConfig::new(dir.path())).expect("open");
        let mut next = 1u64;
        let mut inflight = VecDeque::new();
        while next <= count {
            let n = (count + 1 - next).min(1024) as usize;
            inflight.push_back(wal.append(&batch_at(&pool, next, n, size)).expect("append"));
            next += n as u64;
            if inflight.len() >= PIPELINE_DEPTH {
                let ticket = inflight.pop_front().expect("ticket");
                wal.wait_durable(ticket).expect("durable");
            }
        }
        if let Some(last) = inflight.back() {
            wal.wait_durable(*last).expect("durable");
        }
    }
    let on_disk: u64 = std::fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("item").metadata().expect("stat").len())
        .sum();
    println!(
        "\nrecovery: {count} entries of {size} B ({:.0} MiB of records, {:.0} MiB of segment \
         files incl. the spare), built in {:.1} s, dir {}",
        (count * record_bytes as u64) as f64 / (1 << 20) as f64,
        on_disk as f64 / (1 << 20) as f64,
        build.elapsed().as_secs_f64(),
        bench_root().display()
    );
    // Let the device finish writing back what the build wrote before measuring reads.
    std::thread::sleep(Duration::from_secs(5));
    for cold in [true, false] {
        let mut times = Vec::new();
        for _ in 0..3 {
            if cold {
                evict(dir.path());
            }
            let start = Instant::now();
            let wal = WalLogStore::open(WalConfig::new(dir.path())).expect("reopen");
            let elapsed = start.elapsed().as_secs_f64();
            assert_eq!(wal.last_index(), Index(count), "recovered everything");
            drop(wal);
            times.push(elapsed);
        }
        let label = if cold {
            "cold (evicted)"
        } else {
            "warm (page cache)"
        };
        println!(
            "  open, {label:<17}: median {:.3} s of {:?}",
            median(times.clone()),
            times
                .iter()
                .map(|t| (t * 1000.0).round() / 1000.0)
                .collect::<Vec<_>>()
        );
    }
}

fn main() {
    if std::env::var("RINGRAFT_BENCH_RECOVERY").is_ok() {
        recovery();
        return;
    }
    if std::env::var("RINGRAFT_BENCH_SUMMARY_ONLY").is_err() {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
    summary();
}
