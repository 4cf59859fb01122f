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
