//! How long the reader thread keeps polling a quiet socket before it sleeps
//! in `recv()`. A sleep costs a wake-up when the next bytes come, and a
//! wake-up on another core (dearer still on a VM that halts idle vCPUs)
//! can cost more than the round trip being waited for. So a reader whose
//! sleeps end quickly polls instead, and one whose polls find nothing stops
//! polling: the grow/shrink rule of Linux's guest halt-polling, kept per
//! reader. Only a reader that has just had REQUESTs to answer polls (the
//! next ones come a round trip later); one that only receives POSTs or a
//! stream sleeps, leaving the core to the threads producing its data (a
//! Python sender encoding CBOR ran 40 % slower when its peer polled). A
//! connection with sparse traffic never polls.

use std::time::Duration;

/// The first budget after a quick sleep.
const START: Duration = Duration::from_micros(10);
/// The most a reader polls for before it sleeps; also how short a sleep
/// must be for polling to have caught it.
const MAX: Duration = Duration::from_micros(50);

#[derive(Debug, Default)]
pub(super) struct IdleSpin {
    budget: Duration,
}

impl IdleSpin {
    /// How long to poll before sleeping (zero: sleep at once).
    pub(super) fn budget(&self) -> Duration {
        self.budget
    }

    /// Polling for the whole budget found nothing: halve it.
    pub(super) fn missed(&mut self) {
        self.budget /= 2;
        if self.budget < START {
            self.budget = Duration::ZERO;
        }
    }

    /// A sleep (or a blocking read) ended after `slept`: if polling would
    /// have caught it, poll longer next time.
    pub(super) fn slept(&mut self, slept: Duration) {
        if slept < MAX {
            self.budget = (self.budget * 2).clamp(START, MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_sleeps_grow_the_budget_to_the_cap() {
        let mut spin = IdleSpin::default();
        assert_eq!(spin.budget(), Duration::ZERO);
        spin.slept(Duration::from_micros(5));
        assert_eq!(spin.budget(), START);
        for _ in 0..10 {
            spin.slept(Duration::from_micros(5));
        }
        assert_eq!(spin.budget(), MAX);
    }

    #[test]
    fn long_sleeps_never_start_polling() {
        let mut spin = IdleSpin::default();
        for _ in 0..10 {
            spin.slept(Duration::from_millis(10));
        }
        assert_eq!(spin.budget(), Duration::ZERO);
    }

    #[test]
    fn misses_halve_the_budget_down_to_none() {
        let mut spin = IdleSpin::default();
        for _ in 0..10 {
            spin.slept(Duration::ZERO);
        }
        spin.missed();
        assert_eq!(spin.budget(), MAX / 2);
        spin.missed();
        spin.missed();
        assert_eq!(spin.budget(), Duration::ZERO);
        spin.missed();
        assert_eq!(spin.budget(), Duration::ZERO);
    }
}
