//! Per-transport counters under the reference's names (docs/protocol.md §5), so
//! dashboards built for one work for the other, plus a process-wide registry
//! that sums them by transport name.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};

use crate::sync::Mutex;

macro_rules! counters {
    ($($name:ident),* $(,)?) => {
        /// Relaxed atomics: each counter is read on its own, never as a snapshot.
        #[derive(Default, Debug)]
        pub struct Stats { $(pub $name: AtomicU64,)* }

        impl Stats {
            pub const NAMES: &'static [&'static str] = &[$(stringify!($name),)*];

            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$name.load(Relaxed)),)*]
            }
        }
    };
}

counters!(
    n_tx,
    n_flushes,
    n_txbyte,
    n_txpost,
    n_txreq,
    n_txresp,
    n_txstart,
    n_txstream,
    n_txfin,
    n_rx,
    n_rxbyte,
    n_rxpost,
    n_rxreq,
    n_rxresp,
    n_rxstart,
    n_rxstream,
    n_rxfin,
    n_rxbeats,
    n_dropped,
    n_mdrops,
    // Beyond the reference: failures it cannot see.
    n_handler_errors,
    n_timeouts,
    // Warnings about the peer's frames left out by the log rate limit.
    n_log_suppressed,
);

impl Stats {
    #[inline]
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    #[inline]
    pub fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// A frame we could not use: its bytes and one message count as dropped.
    pub fn drop_frame(&self, bytes: usize) {
        Self::add(&self.n_dropped, bytes as u64);
        Self::incr(&self.n_mdrops);
    }
}

static REGISTRY: Mutex<Vec<(String, Weak<Stats>)>> = Mutex::new(Vec::new());

/// Remembers a live transport's counters under its name; the entry goes
/// away when the transport closes (`unregister`) or is dropped.
pub fn register(name: &str, stats: &Arc<Stats>) {
    let mut reg = REGISTRY.lock();
    reg.retain(|(_, w)| w.strong_count() > 0);
    reg.push((name.to_string(), Arc::downgrade(stats)));
}

/// Forgets a transport's counters when it closes, as the reference drops a
/// closed transport from its registry; its own `stats()` still reads them.
pub fn unregister(stats: &Arc<Stats>) {
    let target = Arc::as_ptr(stats);
    REGISTRY
        .lock()
        .retain(|(_, w)| w.strong_count() > 0 && w.as_ptr() != target);
}

/// The names of the live transports, sorted, each once.
pub fn names() -> Vec<String> {
    let mut names: Vec<String> = REGISTRY
        .lock()
        .iter()
        .filter(|(_, w)| w.strong_count() > 0)
        .map(|(n, _)| n.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Sums the counters of every live transport, or of those named `name`.
pub fn aggregate(name: Option<&str>) -> Vec<(&'static str, u64)> {
    let mut sums: Vec<(&'static str, u64)> = Stats::NAMES.iter().map(|n| (*n, 0)).collect();
    let reg = REGISTRY.lock();
    for (tname, weak) in reg.iter() {
        if name.is_some_and(|n| n != tname) {
            continue;
        }
        if let Some(stats) = weak.upgrade() {
            for (sum, (_, v)) in sums.iter_mut().zip(stats.snapshot()) {
                sum.1 += v;
            }
        }
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregates_by_name_and_forgets_dropped() {
        let a = Arc::new(Stats::default());
        let b = Arc::new(Stats::default());
        register("agg-test-a", &a);
        register("agg-test-a", &b);
        Stats::add(&a.n_tx, 2);
        Stats::add(&b.n_tx, 3);
        let get = |n: &str| {
            aggregate(Some(n))
                .into_iter()
                .find(|(k, _)| *k == "n_tx")
                .unwrap()
                .1
        };
        assert_eq!(get("agg-test-a"), 5);
        drop(b);
        assert_eq!(get("agg-test-a"), 2);
        assert_eq!(Stats::NAMES.len(), 23);
    }

    #[test]
    fn closed_transports_leave_names() {
        let a = Arc::new(Stats::default());
        let b = Arc::new(Stats::default());
        register("names-test-a", &a);
        register("names-test-a", &b);
        register("names-test-b", &b);
        let has = |n: &str| names().iter().filter(|x| x.as_str() == n).count();
        assert_eq!((has("names-test-a"), has("names-test-b")), (1, 1));
        unregister(&b);
        assert_eq!((has("names-test-a"), has("names-test-b")), (1, 0));
        unregister(&a);
        assert_eq!(has("names-test-a"), 0);
    }
}
