//! The shard's clock source: the one place in the crate that reads the system's monotonic
//! clock (the core takes time as an input, ARCHITECTURE §4).

use crate::core::Time;
use std::time::{Duration, Instant};

/// The monotonic clock. Everything else in the crate asks here.
#[allow(clippy::disallowed_methods)] // The shard's clock source is the one allowed place.
pub(crate) fn monotonic_now() -> Instant {
    Instant::now()
}

/// A node's clock: nanoseconds since the node started, as the core's [`Time`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    origin: Instant,
}

impl Clock {
    pub(crate) fn start() -> Clock {
        Clock {
            origin: monotonic_now(),
        }
    }

    pub(crate) fn now(&self) -> Time {
        Time(
            monotonic_now()
                .saturating_duration_since(self.origin)
                .as_nanos() as u64,
        )
    }

    /// How long from `now` until `at` (zero if past).
    pub(crate) fn until(now: Time, at: Time) -> Duration {
        Duration::from_nanos(at.nanos_since(now))
    }
}

/// CPU time the calling thread has used (Linux `CLOCK_THREAD_CPUTIME_ID`): unlike wall time, it
/// does not grow while the thread is preempted or blocked. `None` where unavailable.
pub(crate) fn thread_cpu_now() -> Option<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes one `timespec` through the valid pointer it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// How old a thread's CPU-time reading may be and still serve [`recent_thread_cpu`].
pub(crate) const THREAD_CPU_MAX_AGE: Duration = Duration::from_micros(250);

thread_local! {
    /// This thread's last CPU-time reading and when (wall) it was taken.
    static THREAD_CPU: std::cell::Cell<Option<(Instant, Option<Duration>)>> =
        const { std::cell::Cell::new(None) };
}

/// The calling thread's CPU time at a recent instant (`.0`, at most [`THREAD_CPU_MAX_AGE`]
/// before `now`), read again only when the last reading is older. Reading the thread CPU clock
/// is a system call, and every group on a shard thread wants one per turn: 1 000 busy groups
/// spent 7 % of their CPU in it (docs/PERFORMANCE.md, session 11). A reading shared this way
/// still bounds a later call's CPU time from below (`SlowCalls::call_ended`): the thread
/// computed at most the wall time between the reading and the call's start, so the bound is
/// short by at most the age of the reading.
pub(crate) fn recent_thread_cpu(now: Instant) -> (Instant, Option<Duration>) {
    THREAD_CPU.with(|cell| match cell.get() {
        Some(reading) if now.saturating_duration_since(reading.0) <= THREAD_CPU_MAX_AGE => reading,
        _ => {
            let reading = (now, thread_cpu_now());
            cell.set(Some(reading));
            reading
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recent_reading_of_the_thread_cpu_clock_is_shared_and_an_old_one_is_not() {
        let start = monotonic_now();
        let first = recent_thread_cpu(start);
        assert_eq!(first.0, start);
        let shared = recent_thread_cpu(start + THREAD_CPU_MAX_AGE);
        assert_eq!(shared, first, "within the age limit the reading is reused");
        let later = start + THREAD_CPU_MAX_AGE + Duration::from_nanos(1);
        let fresh = recent_thread_cpu(later);
        assert_eq!(fresh.0, later, "an older reading is taken again");
        // Another thread has its own reading.
        let other = std::thread::spawn(move || recent_thread_cpu(later + Duration::from_nanos(1)))
            .join()
            .expect("the thread runs");
        assert_eq!(other.0, later + Duration::from_nanos(1));
        assert_eq!(recent_thread_cpu(later).0, later);
    }
}
