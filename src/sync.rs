//! The crate's locks: parking_lot's `Mutex`, and a `Condvar` of our own on
//! a futex in its own memory.
//!
//! Why not parking_lot's `Condvar`: parking_lot parks waiting threads in one
//! process-wide table. After `fork()` the child inherits the entries of the
//! parent's parked threads (every idle writer thread waits on a condvar),
//! and glibc hands the child's new threads the parent's cached stacks,
//! where parking_lot keeps its per-thread data: a child thread then parks
//! through a node still linked in that table, and the next notify walks a
//! broken list forever (a forked child's own new transports hung in
//! `Condvar::notify_all`). The threads that wait for long (writers,
//! requesters, handshakes) wait here instead, in no shared table; a
//! parking_lot `Mutex` parks only while contended, for microseconds.
//!
//! Not std's `Condvar`: it needs std's `Mutex`, and its `notify_one` is a
//! system call even with nobody waiting (posts notify often: twice the
//! per-post cost, measured). This one counts its waiters.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Instant;

pub use parking_lot::{Mutex, MutexGuard};

pub struct Condvar {
    /// Bumped by every notify; a waiter sleeps while it is unchanged.
    seq: AtomicU32,
    /// Threads between registering (under the mutex) and waking up.
    waiters: AtomicU32,
    /// A wake-up was sent and no waiter has gone to sleep since: further
    /// notifies skip the system call (a woken writer can take a while to
    /// run, and posts notify it all along; the `seq` check makes sure no
    /// sleeper misses a notify).
    woken: AtomicBool,
}

/// Whether a `wait_until` ended at its deadline.
pub struct WaitTimeoutResult(bool);

impl WaitTimeoutResult {
    pub fn timed_out(&self) -> bool {
        self.0
    }
}

impl Default for Condvar {
    fn default() -> Self {
        Condvar::new()
    }
}

impl Condvar {
    pub const fn new() -> Condvar {
        Condvar {
            seq: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
            woken: AtomicBool::new(false),
        }
    }

    /// Wakes every waiter, as `notify_all`: a condition variable may wake
    /// more than asked (waiters re-check), and waking all is what makes
    /// skipping repeated wake-ups (`woken`) safe. Our condvars have one
    /// waiter each where notify_one is used.
    pub fn notify_one(&self) {
        self.notify_all();
    }

    /// A waiter registers while holding the mutex the notifier changed its
    /// state under, so a notifier that sees no waiter has none to wake.
    pub fn notify_all(&self) {
        self.seq.fetch_add(1, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 && !self.woken.swap(true, Ordering::SeqCst) {
            futex_wake(&self.seq, i32::MAX);
        }
    }

    pub fn wait<T>(&self, g: &mut MutexGuard<'_, T>) {
        self.wait_inner(g, None);
    }

    /// Waits for a notification or `deadline`; wake-ups may be spurious, as
    /// with any condition variable: callers re-check their condition.
    pub fn wait_until<T>(&self, g: &mut MutexGuard<'_, T>, deadline: Instant) -> WaitTimeoutResult {
        self.wait_inner(g, Some(deadline));
        WaitTimeoutResult(Instant::now() >= deadline)
    }

    fn wait_inner<T>(&self, g: &mut MutexGuard<'_, T>, deadline: Option<Instant>) {
        let seq = self.seq.load(Ordering::SeqCst);
        self.waiters.fetch_add(1, Ordering::SeqCst);
        MutexGuard::unlocked(g, || {
            self.woken.store(false, Ordering::SeqCst);
            futex_wait(&self.seq, seq, deadline);
            // Awake: notifiers need not wake us while we wait for the lock.
            self.waiters.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// Sleeps while `word` holds `expected`, until woken or `deadline`.
fn futex_wait(word: &AtomicU32, expected: u32, deadline: Option<Instant>) {
    let timeout = deadline.map(|d| {
        let left = d.saturating_duration_since(Instant::now());
        libc::timespec {
            tv_sec: left.as_secs().min(i32::MAX as u64) as libc::time_t,
            tv_nsec: left.subsec_nanos() as libc::c_long,
        }
    });
    if timeout.is_some_and(|t| t.tv_sec == 0 && t.tv_nsec == 0) {
        return;
    }
    let ts = timeout
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: FUTEX_WAIT reads the u32 at `word`, which outlives the call;
    // `ts` is null or points at a live timespec. EINTR, EAGAIN (the value
    // changed already) and ETIMEDOUT all just return to the caller's check.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG,
            expected,
            ts,
        );
    }
}

fn futex_wake(word: &AtomicU32, count: i32) {
    // SAFETY: FUTEX_WAKE only uses the address as a key.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            count,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn waits_wake_and_time_out() {
        let pair = Arc::new((Mutex::new(0), Condvar::new()));
        let other = pair.clone();
        let t = std::thread::spawn(move || {
            *other.0.lock() = 1;
            other.1.notify_all();
        });
        let mut g = pair.0.lock();
        while *g == 0 {
            pair.1.wait(&mut g);
        }
        t.join().unwrap();
        let soon = Instant::now() + Duration::from_millis(5);
        while !pair.1.wait_until(&mut g, soon).timed_out() {}
        assert!(Instant::now() >= soon);
    }

    #[test]
    fn many_waiters_all_wake() {
        let pair = Arc::new((Mutex::new(false), Condvar::new()));
        let waiters: Vec<_> = (0..8)
            .map(|_| {
                let p = pair.clone();
                std::thread::spawn(move || {
                    let mut g = p.0.lock();
                    while !*g {
                        p.1.wait(&mut g);
                    }
                })
            })
            .collect();
        *pair.0.lock() = true;
        pair.1.notify_all();
        for w in waiters {
            w.join().unwrap();
        }
    }
}
