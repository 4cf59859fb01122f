//! Runtime-agnostic futures: a small oneshot built on a `Mutex`, a `Condvar` and a `Waker`.
//!
//! A [`RaftFuture`] can be `.await`ed under any executor, or waited on from a plain thread with
//! [`RaftFuture::wait`]. If the node drops the request without answering (it shut down), the
//! future resolves with the request's "shut down" error: no future can hang.
//!
//! A blocking wait spins briefly before it sleeps while this thread's answers come quickly and
//! a CPU is left for the other threads (see [`RaftFuture::wait_timeout`]): an answer then
//! costs the shard a store instead of a wake-up system call, and the waiter no wake-up latency
//! (5–15 µs for a sleeping vCPU on a VM; an in-memory write is answered in about 5 µs).
//! A poll spins the same way while its request is the only one in flight in the process (see
//! the [`Future`] implementation of [`RaftFuture`]).

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::node::clock::monotonic_now;

struct Slot<T> {
    value: Option<T>,
    /// The sender is gone (after sending or by being dropped).
    closed: bool,
    waker: Option<Waker>,
    /// A thread is blocked in [`RaftFuture::wait_timeout`]: only then is the condition variable
    /// notified (notifying one costs a system call even when nobody waits).
    blocked: bool,
    /// The waiter did not spin and wants to know when the answer came (`answered_at`): whether
    /// it came within a spin's length decides whether the waiting thread spins again. Taken
    /// when the sender closes rather than when the waiter sees it, which is a wake-up later:
    /// measured at the waiter, a wake-up slower than the spin (tens of µs on a busy VM) kept
    /// a thread from ever spinning again although its answers came in a few µs.
    timed: bool,
    answered_at: Option<Instant>,
}

struct Shared<T> {
    slot: Mutex<Slot<T>>,
    ready: Condvar,
    /// Set (after the slot) once the sender is gone: what a spinning waiter watches.
    done: AtomicBool,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, Slot<T>> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Spins until the sender is gone, for at most `limit`; true if it is.
    fn spin_until_done(&self, limit: Duration) -> bool {
        let start = monotonic_now();
        loop {
            for _ in 0..64 {
                if self.done.load(Ordering::Acquire) {
                    return true;
                }
                std::hint::spin_loop();
            }
            if monotonic_now().duration_since(start) >= limit {
                return self.done.load(Ordering::Acquire);
            }
        }
    }
}

/// The longest a blocking wait spins before it sleeps.
const SPIN_MAX: Duration = Duration::from_micros(50);

/// Spins in a row that ended before the answer came, after which a thread stops spinning.
const MISSES_MAX: u8 = 4;

thread_local! {
    /// This thread's blocking waits whose spin ended before the answer came, in a row.
    static SPIN_MISSES: Cell<u8> = const { Cell::new(0) };
}

/// Threads in a blocking wait now (spinning or asleep), process-wide.
static WAITING: AtomicUsize = AtomicUsize::new(0);

/// Futures whose answer has not been taken yet, process-wide: a poll spins only while its
/// own is the only one, so that no other request waits behind the spin to be made or taken.
static OUTSTANDING: Outstanding = Outstanding(AtomicUsize::new(0));

/// [`OUTSTANDING`]'s counter on cache lines of its own: the callers' threads change it for
/// every request, and a neighbour read in a shard's spin would bounce with it.
#[repr(align(128))]
struct Outstanding(AtomicUsize);

/// Polls in a row on one thread that spun and found their answer; after this many the next
/// one yields to the executor once (answer in hand) instead of returning it, so that a task
/// writing in a loop cannot keep the other tasks of its thread from running.
const SPUN_POLLS_BEFORE_A_YIELD: u8 = 8;

thread_local! {
    /// This thread's polls in a row that spun and found their answer.
    static SPUN_POLLS: Cell<u8> = const { Cell::new(0) };
}

/// Whether a blocking wait on this thread may spin first: unless its last [`MISSES_MAX`]
/// spins in a row ended before the answer came. So a thread whose requests take longer (a
/// disk's fsync, a busy cluster) stops spinning after a few waits, and starts again once an
/// answer comes within [`SPIN_MAX`] of the call. One slow answer among quick ones (the
/// answering thread preempted, say) does not stop it: it says little about the next.
fn spin_first() -> bool {
    SPIN_MISSES.with(Cell::get) < MISSES_MAX
}

/// Notes how a wait went: `spun` if it spun first, `answered_within` if the answer came
/// within [`SPIN_MAX`] of the call.
fn note_wait(spun: bool, answered_within: bool) {
    SPIN_MISSES.with(|misses| {
        if answered_within {
            misses.set(0);
        } else if spun {
            misses.set(misses.get().saturating_add(1));
        }
    });
}

/// Counts a thread among the waiting ones for as long as it waits.
struct Waiting {
    /// Waiting threads, this one included, are at most the CPUs less one: spinning then
    /// leaves the threads that answer (shard threads) a core. With more client threads than
    /// that, one spinning thread took a core from the shard and its tail grew from about
    /// 90 µs to 500 µs (four client threads on two CPUs, docs/PERFORMANCE.md).
    may_spin: bool,
}

impl Waiting {
    fn start() -> Waiting {
        static MAX: OnceLock<usize> = OnceLock::new();
        let max = *MAX.get_or_init(|| {
            std::thread::available_parallelism().map_or(0, |n| n.get().saturating_sub(1))
        });
        let waiting = WAITING.fetch_add(1, Ordering::AcqRel) + 1;
        Waiting {
            may_spin: waiting <= max,
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        WAITING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The sending half of a request's reply. Dropping it unsent resolves the future with its
/// "closed" result.
pub(crate) struct Sender<T> {
    shared: Option<Arc<Shared<T>>>,
}

impl<T> Sender<T> {
    /// Resolves the future.
    pub(crate) fn send(mut self, value: T) {
        self.close(Some(value));
    }

    /// Stores `value` (if any), marks the future resolved and wakes whoever waits on it.
    fn close(&mut self, value: Option<T>) {
        if let Some(shared) = self.shared.take() {
            let mut slot = shared.lock();
            if value.is_some() {
                slot.value = value;
            }
            slot.closed = true;
            if slot.timed {
                slot.answered_at = Some(monotonic_now());
            }
            shared.done.store(true, Ordering::Release);
            let waker = slot.waker.take();
            let blocked = slot.blocked;
            drop(slot);
            if blocked {
                shared.ready.notify_all();
            }
            if let Some(w) = waker {
                w.wake();
            }
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        self.close(None);
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sender")
    }
}

/// A future's share of its reply channel while the answer is not taken: counted in
/// [`OUTSTANDING`] for as long as it lives.
struct Pending<T>(Arc<Shared<T>>);

impl<T> Pending<T> {
    fn new(shared: Arc<Shared<T>>) -> Self {
        OUTSTANDING.0.fetch_add(1, Ordering::Relaxed);
        Pending(shared)
    }
}

impl<T> Drop for Pending<T> {
    fn drop(&mut self) {
        OUTSTANDING.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<T> std::ops::Deref for Pending<T> {
    type Target = Shared<T>;

    fn deref(&self) -> &Shared<T> {
        &self.0
    }
}

enum State<T> {
    Waiting(Pending<T>),
    Ready(T),
    Taken,
}

/// The eventual answer to a request: `Result<T, E>`.
///
/// Implements [`Future`] (any executor) and has blocking [`wait`](RaftFuture::wait) and
/// [`wait_timeout`](RaftFuture::wait_timeout) for plain threads. Resolves exactly once; polling
/// after completion panics, as with other futures.
///
/// Both ways of waiting may spin briefly (at most 50 µs) before they sleep, while answers
/// come quickly: a blocking wait while a CPU is left for the node's threads, a poll only while
/// its request is the only one in the process awaiting an answer (see the [`Future`]
/// implementation below for how a polling task still yields to its executor).
#[must_use = "a request's outcome is only known by waiting for its future"]
pub struct RaftFuture<T, E> {
    state: State<Result<T, E>>,
    on_closed: fn() -> Result<T, E>,
    /// Whether a poll of this future spun, or may still.
    spin: PollSpin,
}

/// Whether a poll of a future spun (see `poll`).
#[derive(Clone, Copy)]
enum PollSpin {
    /// No poll has returned `Pending` yet.
    NotYet,
    /// A poll spun, or could not (another request in flight, no CPU left); none will again.
    Over,
    /// A poll did not spin because this thread's last spins missed, while its request was
    /// the only one in flight, at this time: how long the answer takes from then decides
    /// whether the thread spins again.
    Timed(Instant),
}

/// A reply channel: the sender for the node, the future for the caller.
pub(crate) fn channel<T, E>(
    on_closed: fn() -> Result<T, E>,
) -> (Sender<Result<T, E>>, RaftFuture<T, E>) {
    let shared = Arc::new(Shared {
        slot: Mutex::new(Slot {
            value: None,
            closed: false,
            waker: None,
            blocked: false,
            timed: false,
            answered_at: None,
        }),
        ready: Condvar::new(),
        done: AtomicBool::new(false),
    });
    (
        Sender {
            shared: Some(shared.clone()),
        },
        RaftFuture {
            state: State::Waiting(Pending::new(shared)),
            on_closed,
            spin: PollSpin::NotYet,
        },
    )
}

impl<T, E> RaftFuture<T, E> {
    /// A future that is already resolved.
    pub(crate) fn ready(result: Result<T, E>, on_closed: fn() -> Result<T, E>) -> Self {
        RaftFuture {
            state: State::Ready(result),
            on_closed,
            spin: PollSpin::NotYet,
        }
    }

    fn take_if_done(
        slot: &mut Slot<Result<T, E>>,
        on_closed: fn() -> Result<T, E>,
    ) -> Option<Result<T, E>> {
        if let Some(v) = slot.value.take() {
            return Some(v);
        }
        slot.closed.then(on_closed)
    }

    /// Takes the outcome if it is known, without spinning or registering a waker (the
    /// simulator's clients look after every turn; a poll there could spin on a thread that
    /// alone can answer). `None` while pending or once taken.
    #[cfg(feature = "sim")]
    pub(crate) fn try_take(&mut self) -> Option<Result<T, E>> {
        let on_closed = self.on_closed;
        match std::mem::replace(&mut self.state, State::Taken) {
            State::Ready(v) => Some(v),
            State::Taken => None,
            State::Waiting(pending) => {
                let taken = Self::take_if_done(&mut pending.lock(), on_closed);
                if taken.is_none() {
                    self.state = State::Waiting(pending);
                }
                taken
            }
        }
    }

    /// True if the outcome is known (waiting would not block).
    pub fn is_ready(&self) -> bool {
        match &self.state {
            State::Waiting(shared) => {
                let slot = shared.lock();
                slot.value.is_some() || slot.closed
            }
            State::Ready(_) => true,
            State::Taken => false,
        }
    }

    /// Blocks the calling thread until the outcome is known.
    pub fn wait(mut self) -> Result<T, E> {
        loop {
            if let Some(result) = self.wait_timeout(Duration::from_secs(3600)) {
                return result;
            }
        }
    }

    /// Blocks for at most `timeout`; `None` if the outcome is not known by then (the request
    /// stays pending and the future can be waited on again).
    ///
    /// Spins for up to 50 µs before it sleeps, unless this thread's last four spins in a row
    /// ended before their answers came, or more threads wait now, this one included, than the
    /// machine has CPUs less one: an in-memory cluster answers a write in a few µs, and
    /// waking a sleeping thread costs more than that on many VMs. A thread whose waits take
    /// longer (durable writes, a loaded cluster) stops spinning after four, and spins again
    /// once an answer comes within 50 µs; spinning threads never take every CPU from the
    /// threads that answer.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<Result<T, E>> {
        let on_closed = self.on_closed;
        match std::mem::replace(&mut self.state, State::Taken) {
            State::Ready(v) => Some(v),
            State::Taken => None,
            State::Waiting(shared) => {
                let start = monotonic_now();
                let deadline = start + timeout;
                let waiting = Waiting::start();
                let spun = waiting.may_spin && spin_first();
                let answered_in_spin = spun && shared.spin_until_done(SPIN_MAX.min(timeout));
                let mut slot = shared.lock();
                loop {
                    if let Some(v) = Self::take_if_done(&mut slot, on_closed) {
                        let answered_at = slot.answered_at.unwrap_or_else(monotonic_now);
                        drop(slot);
                        let quick =
                            answered_in_spin || answered_at.duration_since(start) <= SPIN_MAX;
                        note_wait(spun, quick);
                        return Some(v);
                    }
                    let now = monotonic_now();
                    if now >= deadline {
                        note_wait(spun, false);
                        break;
                    }
                    slot.timed = true;
                    slot.blocked = true;
                    slot = shared
                        .ready
                        .wait_timeout(slot, deadline - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                slot.blocked = false;
                drop(slot);
                drop(waiting);
                self.state = State::Waiting(shared);
                None
            }
        }
    }
}

// No field is ever pinned: the value moves out by `mem::replace`.
impl<T, E> Unpin for RaftFuture<T, E> {}

/// Counts this thread's polls that found their answer in a spin (`found`; a miss starts the
/// count again), and says whether this one, having found it, yields to the executor first:
/// after [`SPUN_POLLS_BEFORE_A_YIELD`] in a row, so other tasks get to run.
fn yields_after_spin(found: bool) -> bool {
    SPUN_POLLS.with(|n| {
        let yields = found && n.get() >= SPUN_POLLS_BEFORE_A_YIELD;
        n.set(if found && !yields { n.get() + 1 } else { 0 });
        yields
    })
}

impl<T, E> RaftFuture<T, E> {
    /// Whether a poll may spin before its first `Pending` (see `poll`); if so, the thread
    /// counts among the waiting ones while it does. Not spinning because this thread's last
    /// spins missed starts the clock that decides, once the answer comes, whether it spins
    /// again.
    fn may_spin_in_poll(&mut self) -> Option<Waiting> {
        if !matches!(self.spin, PollSpin::NotYet) {
            return None;
        }
        self.spin = PollSpin::Over;
        if OUTSTANDING.0.load(Ordering::Relaxed) != 1 {
            return None;
        }
        if !spin_first() {
            self.spin = PollSpin::Timed(monotonic_now());
            return None;
        }
        let waiting = Waiting::start();
        waiting.may_spin.then_some(waiting)
    }

    /// The answer, which came at `answered_at` if the sender noted it, was taken by a poll: if
    /// an earlier poll of this future left the clock running instead of spinning, an answer
    /// within the spin's length re-enables spinning.
    fn answered(&mut self, answered_at: Option<Instant>) {
        if let PollSpin::Timed(since) = self.spin {
            let at = answered_at.unwrap_or_else(monotonic_now);
            note_wait(false, at.duration_since(since) <= SPIN_MAX);
        }
    }
}

impl<T, E> Future for RaftFuture<T, E> {
    type Output = Result<T, E>;

    /// Before its first `Pending`, a poll spins for up to 50 µs while the answer is not there,
    /// as a blocking wait does ([`RaftFuture::wait_timeout`]), but only while this request is
    /// the only one in the process whose answer has not been taken: then nothing else waits
    /// behind the spin to be sent or answered, and the answer costs the shard a store rather
    /// than waking the executor's thread. Every ninth poll in a row that finds its answer in
    /// a spin yields once to the executor (the future wakes itself and returns `Pending`), so
    /// a task that writes in a loop still lets its thread's other tasks run. With more
    /// requests in flight, or on a thread whose last four spins missed, a poll never spins.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // No field is structurally pinned: `RaftFuture` is `Unpin`.
        let this = self.get_mut();
        let on_closed = this.on_closed;
        match std::mem::replace(&mut this.state, State::Taken) {
            State::Ready(v) => Poll::Ready(v),
            State::Taken => panic!("RaftFuture polled after completion"),
            State::Waiting(pending) => {
                let mut slot = pending.lock();
                if let Some(v) = Self::take_if_done(&mut slot, on_closed) {
                    let answered_at = slot.answered_at;
                    drop(slot);
                    this.answered(answered_at);
                    return Poll::Ready(v);
                }
                if let Some(waiting) = this.may_spin_in_poll() {
                    drop(slot);
                    let found = pending.spin_until_done(SPIN_MAX);
                    note_wait(true, found);
                    drop(waiting);
                    if yields_after_spin(found) {
                        cx.waker().wake_by_ref();
                        this.state = State::Waiting(pending);
                        return Poll::Pending;
                    }
                    slot = pending.lock();
                    if let Some(v) = Self::take_if_done(&mut slot, on_closed) {
                        return Poll::Ready(v);
                    }
                }
                if !slot.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    slot.waker = Some(cx.waker().clone());
                }
                slot.timed = matches!(this.spin, PollSpin::Timed(_));
                drop(slot);
                SPUN_POLLS.with(|n| n.set(0));
                this.state = State::Waiting(pending);
                Poll::Pending
            }
        }
    }
}

impl<T, E> fmt::Debug for RaftFuture<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RaftFuture")
            .field("ready", &self.is_ready())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn closed() -> Result<u32, &'static str> {
        Err("closed")
    }

    #[test]
    fn a_sent_value_is_received_and_a_dropped_sender_resolves_with_the_closed_result() {
        let (tx, rx) = channel(closed);
        let t = std::thread::spawn(move || tx.send(Ok(7)));
        assert_eq!(rx.wait(), Ok(7));
        t.join().expect("sender thread");
        let (tx, rx) = channel(closed);
        drop(tx);
        assert_eq!(rx.wait(), Err("closed"));
    }

    /// A thread stops spinning after four spins in a row that ended before the answer (one
    /// slow answer among quick ones does not stop it; a wait that did not spin does not
    /// count), and spins again after an answer within the spin's length.
    #[test]
    fn a_blocking_wait_stops_spinning_after_slow_answers_and_starts_again_after_a_quick_one() {
        std::thread::spawn(|| {
            for i in 0..MISSES_MAX {
                assert!(spin_first(), "stopped spinning after {i} missed spins");
                note_wait(true, false);
                note_wait(false, false);
            }
            assert!(!spin_first(), "spins after four missed spins in a row");
            note_wait(false, true);
            assert!(spin_first(), "a quick answer re-enables the spin");
            note_wait(true, false);
            note_wait(true, true);
            for _ in 1..MISSES_MAX {
                note_wait(true, false);
            }
            assert!(spin_first(), "misses counted across a quick answer");
        })
        .join()
        .expect("waiting thread");
    }

    /// Answers and dropped senders that come while the waiter spins (or sleeps) are seen.
    #[test]
    fn answers_that_come_during_a_spin_are_received() {
        std::thread::spawn(|| {
            for i in 0..50u32 {
                let (tx, rx) = channel(closed);
                let quick = std::thread::spawn(move || tx.send(Ok(i)));
                assert_eq!(rx.wait(), Ok(i));
                quick.join().expect("sender thread");
                let (tx, rx) = channel(closed);
                let quick = std::thread::spawn(move || drop(tx));
                assert_eq!(rx.wait(), Err("closed"));
                quick.join().expect("sender thread");
            }
        })
        .join()
        .expect("waiting thread");
    }

    /// Waiting threads spin only while they leave a CPU to the others: at most the CPUs less
    /// one may (none on one CPU), and a place comes back when a wait ends.
    #[test]
    fn waiting_threads_leave_a_cpu_free() {
        let max = std::thread::available_parallelism().map_or(0, |n| n.get() - 1);
        // Other tests' waits may count briefly: wait until this test's own are the first.
        let deadline = monotonic_now() + Duration::from_secs(5);
        let held = loop {
            let held: Vec<Waiting> = (0..max).map(|_| Waiting::start()).collect();
            if held.iter().all(|w| w.may_spin) || monotonic_now() >= deadline {
                break held;
            }
        };
        assert!(
            held.iter().all(|w| w.may_spin),
            "the first waiters may spin"
        );
        assert!(
            !Waiting::start().may_spin,
            "a waiter beyond the CPUs less one may spin"
        );
        drop(held);
        let deadline = monotonic_now() + Duration::from_secs(5);
        let again = std::iter::from_fn(|| (monotonic_now() < deadline).then(Waiting::start))
            .find(|w| w.may_spin);
        assert_eq!(again.is_some(), max > 0, "spinning after the waits ended");
    }

    /// A waker that unparks the thread that made it and counts its wakes.
    struct Unpark {
        thread: std::thread::Thread,
        wakes: AtomicUsize,
    }

    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            self.wakes.fetch_add(1, Ordering::SeqCst);
            self.thread.unpark();
        }
    }

    /// Polls `fut` on this thread until it is ready (parking between polls), failing after
    /// five seconds: a lost wake-up fails instead of hanging.
    fn block_on<F: Future + Unpin>(mut fut: F) -> F::Output {
        let unpark = Arc::new(Unpark {
            thread: std::thread::current(),
            wakes: AtomicUsize::new(0),
        });
        let waker = Waker::from(unpark.clone());
        let mut cx = Context::from_waker(&waker);
        let deadline = monotonic_now() + Duration::from_secs(5);
        loop {
            if let Poll::Ready(v) = Pin::new(&mut fut).poll(&mut cx) {
                return v;
            }
            let now = monotonic_now();
            assert!(now < deadline, "a future's wake-up was lost");
            std::thread::park_timeout(deadline - now);
        }
    }

    /// Answers and dropped senders that come while a poll spins (or after it stopped) are
    /// seen, and wake the task when they come after the poll returned `Pending`.
    #[test]
    fn answers_that_come_during_a_polls_spin_are_received() {
        std::thread::spawn(|| {
            for i in 0..200u32 {
                let (tx, rx) = channel(closed);
                // Quick, then slower than the spin, so that both paths run.
                let delay = Duration::from_micros(if i % 2 == 0 { 1 } else { 200 });
                let sender = std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    tx.send(Ok(i))
                });
                assert_eq!(block_on(rx), Ok(i));
                sender.join().expect("sender thread");
                let (tx, rx) = channel(closed);
                let sender = std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    drop(tx)
                });
                assert_eq!(block_on(rx), Err("closed"));
                sender.join().expect("sender thread");
            }
        })
        .join()
        .expect("polling thread");
    }

    /// A poll does not spin while another request's answer is outstanding: it returns
    /// `Pending` at once, and no spin is counted as missed.
    #[test]
    fn a_poll_does_not_spin_while_another_request_is_outstanding() {
        std::thread::spawn(|| {
            let (_tx_a, _rx_a) = channel(closed);
            let (tx_b, mut rx_b) = channel(closed);
            let unpark = Arc::new(Unpark {
                thread: std::thread::current(),
                wakes: AtomicUsize::new(0),
            });
            let waker = Waker::from(unpark.clone());
            for _ in 0..MISSES_MAX + 1 {
                let (_tx, mut rx) = channel(closed);
                assert!(Pin::new(&mut rx)
                    .poll(&mut Context::from_waker(&waker))
                    .is_pending());
            }
            assert!(
                spin_first(),
                "a poll spun (and missed) with others outstanding"
            );
            assert!(Pin::new(&mut rx_b)
                .poll(&mut Context::from_waker(&waker))
                .is_pending());
            let before = unpark.wakes.load(Ordering::SeqCst);
            tx_b.send(Ok(3));
            assert_eq!(
                unpark.wakes.load(Ordering::SeqCst),
                before + 1,
                "the answer woke the task"
            );
            assert_eq!(
                Pin::new(&mut rx_b).poll(&mut Context::from_waker(&waker)),
                Poll::Ready(Ok(3))
            );
        })
        .join()
        .expect("polling thread");
    }

    /// Polls that find their answers in spins take them, except that each ninth in a row
    /// yields to the executor once; a spin that misses starts the count again.
    #[test]
    fn every_ninth_poll_in_a_row_that_found_its_answer_in_a_spin_yields() {
        std::thread::spawn(|| {
            for _ in 0..3 {
                for i in 0..SPUN_POLLS_BEFORE_A_YIELD {
                    assert!(!yields_after_spin(true), "spun poll {i}");
                }
                assert!(yields_after_spin(true));
            }
            for _ in 0..SPUN_POLLS_BEFORE_A_YIELD {
                yields_after_spin(true);
            }
            assert!(!yields_after_spin(false));
            assert!(!yields_after_spin(true), "a miss starts the count again");
        })
        .join()
        .expect("polling thread");
    }

    /// A thread that stopped spinning spins again once an answer comes within the spin's
    /// length, measured when the answer came, not when the waiter saw it (a slow wake-up must
    /// not keep it from spinning); an answer that came later does not re-enable it.
    #[test]
    fn an_answer_that_came_quickly_reenables_spinning_however_late_it_is_seen() {
        std::thread::spawn(|| {
            let waker = Waker::noop();
            for (answer_late, spins_again) in [(false, true), (true, false)] {
                // A preemption between noting the request and answering it (a loaded machine)
                // would make a quick answer late: such a try is made again.
                for attempt in 0.. {
                    assert!(attempt < 100, "never answered within the spin's length");
                    for _ in 0..MISSES_MAX {
                        note_wait(true, false);
                    }
                    assert!(!spin_first());
                    let (tx, mut rx) = channel(closed);
                    // As a first poll does when this thread's spins missed.
                    rx.spin = PollSpin::Timed(monotonic_now());
                    assert!(Pin::new(&mut rx)
                        .poll(&mut Context::from_waker(waker))
                        .is_pending());
                    let since = monotonic_now();
                    rx.spin = PollSpin::Timed(since);
                    if answer_late {
                        std::thread::sleep(SPIN_MAX * 4);
                    }
                    tx.send(Ok(5));
                    let answered_at = match &rx.state {
                        State::Waiting(pending) => pending.lock().answered_at,
                        _ => None,
                    }
                    .expect("the sender noted when it answered");
                    if !answer_late && answered_at.duration_since(since) > SPIN_MAX {
                        continue;
                    }
                    // The waiter sees the answer long after it came.
                    std::thread::sleep(SPIN_MAX * 4);
                    assert_eq!(
                        Pin::new(&mut rx).poll(&mut Context::from_waker(waker)),
                        Poll::Ready(Ok(5))
                    );
                    assert_eq!(spin_first(), spins_again, "answered late: {answer_late}");
                    break;
                }
            }
        })
        .join()
        .expect("polling thread");
    }

    #[test]
    fn wait_timeout_leaves_the_future_pending() {
        let (tx, mut rx) = channel(closed);
        assert_eq!(rx.wait_timeout(Duration::from_millis(1)), None);
        tx.send(Ok(1));
        assert_eq!(rx.wait_timeout(Duration::from_millis(1)), Some(Ok(1)));
    }
}
