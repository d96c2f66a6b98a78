//! A per-transport limit on warning lines about what the peer sends: a peer
//! streaming bad frames must not turn each into a log line (100,000 lines a
//! second were seen). A token bucket, kept as one atomic "theoretical
//! arrival time" (GCRA), because callers may hold Rust locks and logging
//! takes the GIL: a lock here would be one more to order against it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Lines allowed at once, then per second: enough to see what a peer is
/// doing, few enough that a flood costs nothing in the log.
pub const BURST: u64 = 20;
pub const PER_SECOND: u64 = 5;

#[derive(Debug)]
pub struct LogLimit {
    epoch: Instant,
    /// Nanoseconds after `epoch` at which the bucket would be full again
    /// (GCRA's theoretical arrival time): each line admitted adds `interval`.
    tat: AtomicU64,
    interval: u64,
    /// How far ahead of now `tat` may run: the burst.
    tolerance: u64,
    /// Lines left out since the last one admitted.
    suppressed: AtomicU64,
}

impl Default for LogLimit {
    fn default() -> Self {
        Self::new(BURST, PER_SECOND)
    }
}

impl LogLimit {
    pub fn new(burst: u64, per_second: u64) -> Self {
        let interval = 1_000_000_000 / per_second.max(1);
        LogLimit {
            epoch: Instant::now(),
            tat: AtomicU64::new(0),
            interval,
            tolerance: interval.saturating_mul(burst.max(1)),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)`: log this line, and say that `n` were left out before it;
    /// `None`: leave it out (it is counted for the next line).
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(self.epoch.elapsed())
    }

    fn admit_at(&self, now: Duration) -> Option<u64> {
        let now = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
        let mut tat = self.tat.load(Relaxed);
        loop {
            let next = tat.max(now).saturating_add(self.interval);
            if next > now.saturating_add(self.tolerance) {
                self.suppressed.fetch_add(1, Relaxed);
                return None;
            }
            match self.tat.compare_exchange_weak(tat, next, Relaxed, Relaxed) {
                Ok(_) => return Some(self.suppressed.swap(0, Relaxed)),
                Err(seen) => tat = seen,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn admitted(l: &LogLimit, at: Duration, tries: usize) -> Vec<Option<u64>> {
        (0..tries).map(|_| l.admit_at(at)).collect()
    }

    #[test]
    fn a_burst_then_the_rate_and_the_count_of_what_was_left_out() {
        let l = LogLimit::new(3, 10); // one line per 100 ms
        let got = admitted(&l, Duration::ZERO, 5);
        assert_eq!(got, [Some(0), Some(0), Some(0), None, None]);
        assert_eq!(l.admit_at(50 * MS), None);
        // 100 ms on, one token is back; the line says 3 were left out.
        assert_eq!(admitted(&l, 100 * MS, 2), [Some(3), None]);
        assert_eq!(admitted(&l, 200 * MS, 2), [Some(1), None]);
    }

    #[test]
    fn a_long_quiet_refills_only_the_burst() {
        let l = LogLimit::new(2, 10);
        assert_eq!(admitted(&l, Duration::ZERO, 3), [Some(0), Some(0), None]);
        let got = admitted(&l, Duration::from_secs(3600), 4);
        assert_eq!(got, [Some(1), Some(0), None, None]);
    }

    #[test]
    fn a_flood_gets_burst_plus_rate_times_elapsed() {
        let l = LogLimit::new(BURST, PER_SECOND);
        let mut lines = 0;
        for i in 0..100_000u64 {
            // 100,000 attempts spread over 10 s
            if l.admit_at(Duration::from_micros(i * 100)).is_some() {
                lines += 1;
            }
        }
        assert!(lines <= BURST + 10 * PER_SECOND, "{lines} lines");
        assert!(lines >= BURST + 10 * PER_SECOND - 1, "{lines} lines");
    }
}
