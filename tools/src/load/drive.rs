//! Driving load at a leader: closed-loop clients (each waits for its write before the next)
//! or an open loop at a fixed rate with coordinated-omission correction.
//!
//! Clients are tasks on one small tokio current-thread runtime rather than one OS thread each:
//! at 256 clients, 256 threads on a 2-core machine would measure the scheduler more than the
//! node. `RaftFuture`s are runtime-agnostic, so they are simply awaited.
//!
//! Open loop: request `i` is *intended* to go out at `start + i / rate`; a pacer thread sends
//! each when its time comes and its latency is measured from that intended time, not from
//! when it actually went out. A stall therefore shows up in the latency of every request that
//! should have been sent during it (Gil Tene's coordinated omission), instead of silently
//! thinning the sample.

use super::report::new_histogram;
use bytes::Bytes;
use hdrhistogram::Histogram;
use ringraft::Raft;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The monotonic clock the load generator measures latency with.
#[allow(clippy::disallowed_methods)] // A load generator measures wall-clock latency.
pub fn now() -> Instant {
    Instant::now()
}

/// Distinct keys the commands cycle over (the peers' harnesses' key space).
pub const KEY_SPACE: u64 = 100_000;
/// Bytes of a command that are its key.
pub const KEY_BYTES: usize = 16;

/// Command `seq` of client `client`, `len` bytes: the peers' harnesses' format
/// (`../shared/bench-peers`), so every system does the same work. A 16-byte ASCII key `k` +
/// 15 digits cycling over [`KEY_SPACE`] keys, then the value `v` + 5 digits of the client + `-`
/// + digits of `seq` (48 bytes at the default 64; longer values are padded with `x`).
pub fn command(client: u64, seq: u64, len: usize) -> Bytes {
    command_in_group(client, seq, len, 0, 1)
}

/// [`command`] for group `group` of `groups` (`groups` at least 1), its key in that group's
/// share of the key space: the keys `k` with `k mod groups == group`, about
/// `KEY_SPACE / groups` of them (at least one). A service that shards its data partitions
/// its keys so (a key belongs to one group), and the groups' state machines together hold
/// about [`KEY_SPACE`] keys, as one group's does. With one group this is [`command`].
pub fn command_in_group(client: u64, seq: u64, len: usize, group: u64, groups: u64) -> Bytes {
    fn digits(out: &mut Vec<u8>, mut n: u64, width: usize) {
        let start = out.len();
        out.resize(start + width, b'0');
        for d in out[start..].iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
    }
    let groups = groups.max(1);
    let share = (KEY_SPACE / groups).max(1);
    let key = client.wrapping_mul(1_000_003).wrapping_add(seq) % KEY_SPACE % share * groups
        + group % groups;
    let mut b = Vec::with_capacity(len.max(KEY_BYTES + 8));
    b.push(b'k');
    digits(&mut b, key, KEY_BYTES - 1);
    b.push(b'v');
    digits(&mut b, client % 100_000, 5);
    b.push(b'-');
    let value_digits = len.saturating_sub(b.len()).clamp(1, 41);
    digits(&mut b, seq, value_digits);
    b.resize(len, b'x');
    Bytes::from(b)
}

/// What load to apply.
#[derive(Clone, Debug)]
pub struct Load {
    /// Closed-loop clients (reported as such in open loop).
    pub clients: usize,
    /// Stop after this many writes (instead of after `duration`).
    pub ops: Option<u64>,
    /// How long to run when `ops` is not given.
    pub duration: Duration,
    /// Size of each write's command in bytes (see [`command`]).
    pub payload_bytes: usize,
    /// Open loop at this many writes per second (all clients together).
    pub rate: Option<f64>,
    /// Print a progress line to stderr every second.
    pub progress: bool,
    /// Closed loop: each client on a thread of its own, blocking in `RaftFuture::wait`,
    /// instead of every client as a task on one runtime thread.
    pub threads: bool,
}

/// What a run measured.
pub struct Outcome {
    /// Latency of every acknowledged write, in nanoseconds.
    pub histogram: Histogram<u64>,
    /// Writes that failed.
    pub errors: u64,
    /// Seconds from the first request to the last response.
    pub elapsed_secs: f64,
}

#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    errors: AtomicU64,
    /// Closed loop: clients that finished. Open loop: requests not yet answered.
    active: AtomicUsize,
    stop: AtomicBool,
    /// Ops mode: writes not yet started.
    remaining: AtomicU64,
    /// Closed loop: when the last client to stop stopped, in nanoseconds after the run
    /// started (0 until one has).
    last_finish_ns: AtomicU64,
}

/// One closed-loop client's side of the count: the commands it sends and the latencies it
/// records, whether it awaits its writes or waits for them.
struct Client {
    id: u64,
    seq: u64,
    /// Clients in the run: with more groups than clients, a client's successive writes go
    /// to groups this far apart, so every group gets writes.
    clients: u64,
    payload_bytes: usize,
    ops_mode: bool,
    counters: Arc<Counters>,
    histogram: Histogram<u64>,
    /// When the run started: a client's stop is counted from it.
    started: Instant,
}

impl Client {
    fn new(id: usize, load: &Load, counters: &Arc<Counters>, started: Instant) -> Client {
        Client {
            id: id as u64,
            seq: 0,
            clients: load.clients.max(1) as u64,
            payload_bytes: load.payload_bytes,
            ops_mode: load.ops.is_some(),
            counters: counters.clone(),
            histogram: new_histogram(),
            started,
        }
    }

    /// The next command and the group (its index among `groups`) it goes to, made before the
    /// clock starts (as the peers' harnesses do), or `None` once the run is over. Client `c`'s
    /// `k`-th write goes to group `(c + k × clients) mod groups`: with one group, to it; with
    /// more groups than clients, every group gets writes in turn (none is left idle to
    /// quiesce), and the clients' writes in flight are on different groups.
    fn next(&mut self, groups: usize) -> Option<(usize, Bytes)> {
        if !self.counters.take_one(self.ops_mode) {
            return None;
        }
        let k = self.seq;
        self.seq += 1;
        let groups = groups.max(1) as u64;
        let group = (self.id % groups + (k % groups) * (self.clients % groups)) % groups;
        let command = command_in_group(self.id, k, self.payload_bytes, group, groups);
        Some((group as usize, command))
    }

    /// Counts a write sent at `sent`: its latency if `done`, else an error.
    fn record(&mut self, sent: Instant, done: bool) {
        if done {
            let latency = now().duration_since(sent).as_nanos() as u64;
            self.histogram.saturating_record(latency);
            self.counters.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.counters.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The client stopped (after its last write's answer); its latencies.
    fn finish(self) -> Histogram<u64> {
        let ns = now().duration_since(self.started).as_nanos() as u64;
        self.counters
            .last_finish_ns
            .fetch_max(ns.max(1), Ordering::Relaxed);
        self.counters.active.fetch_add(1, Ordering::Relaxed);
        self.histogram
    }
}

impl Counters {
    /// How long a closed-loop run lasted: until its last client stopped. The run's end is
    /// noticed by a poll up to 100 ms late, which would count as time without writes (about
    /// 4 % of a one-second run on average); `fallback` if no client has stopped.
    fn closed_loop_lasted(&self, fallback: Duration) -> Duration {
        match self.last_finish_ns.load(Ordering::Relaxed) {
            0 => fallback,
            ns => Duration::from_nanos(ns),
        }
    }

    /// Whether a closed-loop run of `load` is over after `elapsed`.
    fn closed_loop_over(&self, load: &Load, elapsed: Duration) -> bool {
        if load.ops.is_some() {
            self.active.load(Ordering::Relaxed) == load.clients
        } else {
            elapsed >= load.duration
        }
    }

    fn take_one(&self, ops_mode: bool) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        !ops_mode
            || self
                .remaining
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| r.checked_sub(1))
                .is_ok()
    }
}

/// Prints a progress line per second until `done` says the run is over.
async fn progress_until(
    load: &Load,
    started: Instant,
    counters: &Counters,
    mut done: impl FnMut(Duration) -> bool,
) {
    let mut last_ok = 0;
    let mut tick = 1u64;
    loop {
        let elapsed = now().duration_since(started);
        if done(elapsed) {
            return;
        }
        let next_tick = Duration::from_secs(tick);
        let step = if load.ops.is_none() && load.rate.is_none() {
            next_tick.min(load.duration)
        } else {
            next_tick
        };
        let step = step
            .saturating_sub(elapsed)
            .clamp(Duration::from_millis(1), Duration::from_millis(100));
        tokio::time::sleep(step).await;
        if now().duration_since(started) >= next_tick {
            let ok = counters.ok.load(Ordering::Relaxed);
            if load.progress {
                eprintln!(
                    "  {tick:>4} s {:>10} writes/s {:>12} total {:>8} errors",
                    ok - last_ok,
                    ok,
                    counters.errors.load(Ordering::Relaxed)
                );
            }
            last_ok = ok;
            tick += 1;
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| format!("client runtime: {e}"))
}

/// Runs `load` against `leaders` (one per Raft group; client `c`'s `k`-th write goes to
/// `leaders[(c + k × clients) % len]`, request `i` in open loop to `leaders[i % len]`).
pub fn run(leaders: &[Raft], load: &Load) -> Result<Outcome, String> {
    if leaders.is_empty() {
        return Err("no leader to load".into());
    }
    match load.rate {
        None => closed_loop(leaders, load),
        Some(rate) => open_loop(leaders, load, rate),
    }
}

fn closed_loop(leaders: &[Raft], load: &Load) -> Result<Outcome, String> {
    let rt = runtime()?;
    let counters = Arc::new(Counters::default());
    counters
        .remaining
        .store(load.ops.unwrap_or(0), Ordering::Relaxed);
    let started = now();
    let histogram = if load.threads {
        closed_loop_threads(leaders, load, &rt, &counters, started)?
    } else {
        rt.block_on(async {
            let leaders: Arc<[Raft]> = leaders.into();
            let clients: Vec<_> = (0..load.clients)
                .map(|id| {
                    let leaders = leaders.clone();
                    let mut client = Client::new(id, load, &counters, started);
                    tokio::spawn(async move {
                        while let Some((g, cmd)) = client.next(leaders.len()) {
                            let t = now();
                            let done = leaders[g].apply(cmd, Duration::ZERO).await.is_ok();
                            client.record(t, done);
                        }
                        client.finish()
                    })
                })
                .collect();
            progress_until(load, started, &counters, |elapsed| {
                counters.closed_loop_over(load, elapsed)
            })
            .await;
            counters.stop.store(true, Ordering::Relaxed);
            let mut all = new_histogram();
            for c in clients {
                if let Ok(h) = c.await {
                    all.add(&h)
                        .map_err(|e| format!("merging histograms: {e}"))?;
                }
            }
            Ok::<_, String>(all)
        })?
    };
    Ok(Outcome {
        histogram,
        errors: counters.errors.load(Ordering::Relaxed),
        elapsed_secs: counters
            .closed_loop_lasted(now().duration_since(started))
            .as_secs_f64(),
    })
}

/// Most requests the open loop keeps unanswered; beyond it the pacer waits (and the wait
/// counts in the latency of the requests it delays).
const OPEN_LOOP_OUTSTANDING_MAX: usize = 1 << 20;

/// [`closed_loop`]'s clients, each on a thread of its own, blocking in `RaftFuture::wait`;
/// their latencies together.
fn closed_loop_threads(
    leaders: &[Raft],
    load: &Load,
    rt: &tokio::runtime::Runtime,
    counters: &Arc<Counters>,
    started: Instant,
) -> Result<Histogram<u64>, String> {
    let leaders: Arc<[Raft]> = leaders.into();
    let clients = (0..load.clients)
        .map(|id| {
            let leaders = leaders.clone();
            let mut client = Client::new(id, load, counters, started);
            std::thread::Builder::new()
                .name("ringraft-load-client".into())
                .spawn(move || {
                    while let Some((g, cmd)) = client.next(leaders.len()) {
                        let t = now();
                        let done = leaders[g].apply(cmd, Duration::ZERO).wait().is_ok();
                        client.record(t, done);
                    }
                    client.finish()
                })
                .map_err(|e| format!("client thread: {e}"))
        })
        .collect::<Result<Vec<_>, String>>()?;
    rt.block_on(progress_until(load, started, counters, |elapsed| {
        counters.closed_loop_over(load, elapsed)
    }));
    counters.stop.store(true, Ordering::Relaxed);
    let mut all = new_histogram();
    for c in clients {
        let h = c
            .join()
            .map_err(|_| "a client thread panicked".to_string())?;
        all.add(&h)
            .map_err(|e| format!("merging histograms: {e}"))?;
    }
    Ok(all)
}

fn open_loop(leaders: &[Raft], load: &Load, rate: f64) -> Result<Outcome, String> {
    if !(rate.is_finite() && rate > 0.0) {
        return Err("--rate must be a positive number".into());
    }
    let rt = runtime()?;
    let total = load
        .ops
        .unwrap_or_else(|| (rate * load.duration.as_secs_f64()).ceil() as u64);
    let counters = Arc::new(Counters::default());
    let histogram = Arc::new(Mutex::new(new_histogram()));
    let last_done = Arc::new(Mutex::new(None::<Instant>));
    let started = now();
    let interval_ns = 1e9 / rate;
    let pacer = {
        let (leaders, payload_bytes, counters, histogram, last_done) = (
            leaders.to_vec(),
            load.payload_bytes,
            counters.clone(),
            histogram.clone(),
            last_done.clone(),
        );
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name("load-pacer".into())
            .spawn(move || {
                for i in 0..total {
                    let intended = started + Duration::from_nanos((i as f64 * interval_ns) as u64);
                    loop {
                        let t = now();
                        if t >= intended
                            && counters.active.load(Ordering::Relaxed) < OPEN_LOOP_OUTSTANDING_MAX
                        {
                            break;
                        }
                        std::thread::sleep(
                            intended
                                .saturating_duration_since(t)
                                .max(Duration::from_micros(50)),
                        );
                    }
                    counters.active.fetch_add(1, Ordering::Relaxed);
                    let raft = &leaders[(i % leaders.len() as u64) as usize];
                    let reply = raft.apply(command(0, i, payload_bytes), Duration::ZERO);
                    let (counters, histogram, last_done) =
                        (counters.clone(), histogram.clone(), last_done.clone());
                    handle.spawn(async move {
                        let result = reply.await;
                        let done = now();
                        match result {
                            Ok(_) => {
                                let ns = done.duration_since(intended).as_nanos() as u64;
                                histogram
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .saturating_record(ns);
                                counters.ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(_) => {
                                counters.errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        *last_done.lock().unwrap_or_else(|p| p.into_inner()) = Some(done);
                        counters.active.fetch_sub(1, Ordering::Relaxed);
                    });
                }
                counters.stop.store(true, Ordering::Release);
            })
            .map_err(|e| format!("starting the pacer: {e}"))?
    };
    rt.block_on(progress_until(load, started, &counters, |_| {
        counters.stop.load(Ordering::Acquire) && counters.active.load(Ordering::Relaxed) == 0
    }));
    pacer
        .join()
        .map_err(|_| "the pacer thread panicked".to_string())?;
    let end = last_done
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .unwrap_or_else(now);
    let histogram = std::mem::replace(
        &mut *histogram.lock().unwrap_or_else(|p| p.into_inner()),
        new_histogram(),
    );
    Ok(Outcome {
        histogram,
        errors: counters.errors.load(Ordering::Relaxed),
        elapsed_secs: end.duration_since(started).as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(clients: usize, ops: u64) -> Load {
        Load {
            clients,
            ops: Some(ops),
            duration: Duration::ZERO,
            payload_bytes: 16,
            rate: None,
            progress: false,
            threads: false,
        }
    }

    /// The groups client `id` of `clients` writes to over `writes` writes, among `groups`.
    fn targets(id: usize, clients: usize, groups: usize, writes: u64) -> Vec<usize> {
        writes_of(id, clients, groups, writes)
            .into_iter()
            .map(|(g, _)| g)
            .collect()
    }

    /// The (group, command) pairs client `id` of `clients` sends over `writes` writes.
    fn writes_of(id: usize, clients: usize, groups: usize, writes: u64) -> Vec<(usize, Bytes)> {
        let counters = Arc::new(Counters::default());
        counters.remaining.store(writes, Ordering::Relaxed);
        let mut client = Client::new(id, &load(clients, writes), &counters, now());
        std::iter::from_fn(|| client.next(groups)).collect()
    }

    fn key_of(command: &Bytes) -> u64 {
        std::str::from_utf8(&command[1..KEY_BYTES])
            .expect("ascii key")
            .parse()
            .expect("key digits")
    }

    #[test]
    fn each_group_gets_its_own_share_of_the_key_space() {
        // One group: the peers' commands, byte for byte.
        for (k, (_, c)) in writes_of(3, 4, 1, 10).into_iter().enumerate() {
            assert_eq!(c, command(3, k as u64, 16));
        }
        // 256 clients over 1 000 groups: a group's keys are its own (k mod 1 000 = group), and
        // all groups' keys together stay within the one-group key space.
        let mut keys: Vec<std::collections::BTreeSet<u64>> = vec![Default::default(); 1000];
        for id in 0..256 {
            for (g, c) in writes_of(id, 256, 1000, 2_000) {
                let key = key_of(&c);
                assert_eq!(key % 1000, g as u64, "key {key} written to group {g}");
                keys[g].insert(key);
            }
        }
        assert!(keys.iter().all(|k| !k.is_empty() && k.len() <= 100));
        assert!(keys.iter().map(|k| k.len()).sum::<usize>() as u64 <= KEY_SPACE);
        // More groups than keys: each group still gets a key of its own.
        let c = command_in_group(1, 2, 64, 123_456, 200_000);
        assert_eq!(key_of(&c), 123_456);
    }

    /// A closed-loop run lasts until its last client stopped, not until the progress poll
    /// noticed.
    #[test]
    fn a_closed_loop_run_lasts_until_its_last_client_stopped() {
        let counters = Arc::new(Counters::default());
        let poll = Duration::from_secs(60);
        assert_eq!(
            counters.closed_loop_lasted(poll),
            poll,
            "no client stopped yet"
        );
        let started = now()
            .checked_sub(Duration::from_secs(2))
            .expect("the clock is past 2 s");
        let early = Client::new(0, &load(2, 1), &counters, started);
        let late = Client::new(1, &load(2, 1), &counters, started);
        early.finish();
        std::thread::sleep(Duration::from_millis(20));
        late.finish();
        let lasted = counters.closed_loop_lasted(poll);
        assert!(
            lasted >= Duration::from_millis(2020) && lasted < poll,
            "lasted {lasted:?}"
        );
    }

    #[test]
    fn clients_spread_their_writes_over_every_group() {
        // One group: every write goes to it.
        assert!(targets(3, 4, 1, 10).iter().all(|&g| g == 0));
        // 256 clients over 1 000 groups: every group gets writes within a few rounds, and the
        // first writes in flight are on different groups.
        let mut hit = vec![0u32; 1000];
        for id in 0..256 {
            for g in targets(id, 256, 1000, 125) {
                hit[g] += 1;
            }
        }
        assert!(hit.iter().all(|&n| n > 0), "a group got no writes");
        let first: std::collections::BTreeSet<usize> =
            (0..256).map(|id| targets(id, 256, 1000, 1)[0]).collect();
        assert_eq!(first.len(), 256);
        // As many groups as clients: each client keeps its own group.
        assert!(targets(5, 8, 8, 20).iter().all(|&g| g == 5));
    }
}
