//! The crate's locks: a `Mutex` and `Condvar` with parking_lot's calling
//! conventions (no poisoning to unwrap, `MutexGuard::unlocked`, deadlines as
//! `Instant`s), built on `std::sync`.
//!
//! Why not parking_lot itself: it parks waiting threads in one process-wide
//! table. After `fork()`, the child inherits entries for the parent's parked
//! threads (every idle writer thread is one), and glibc hands the child's
//! new threads the parent's cached stacks, where parking_lot keeps its
//! per-thread data: a child thread then parks through a node still linked in
//! that table, and the next notify walks a broken list forever (seen as a
//! child hanging in `Condvar::notify_all`). std's locks are futexes on the
//! lock's own memory, with no shared table to inherit.

use std::ops::{Deref, DerefMut};
use std::sync::PoisonError;
use std::time::Instant;

/// A mutex that ignores poisoning: a panic while holding one is already a
/// bug reported elsewhere, and the data behind it stays consistent enough
/// for closing down.
#[derive(Default)]
pub struct Mutex<T: ?Sized>(std::sync::Mutex<T>);

pub struct MutexGuard<'a, T: ?Sized> {
    lock: &'a std::sync::Mutex<T>,
    /// `None` only inside `unlocked` and `Condvar` waits.
    guard: Option<std::sync::MutexGuard<'a, T>>,
}

impl<T> Mutex<T> {
    pub const fn new(value: T) -> Mutex<T> {
        Mutex(std::sync::Mutex::new(value))
    }

    pub fn into_inner(self) -> T {
        self.0.into_inner().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<T: ?Sized> Mutex<T> {
    pub fn lock(&self) -> MutexGuard<'_, T> {
        let guard = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        MutexGuard {
            lock: &self.0,
            guard: Some(guard),
        }
    }

    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        let guard = match self.0.try_lock() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        Some(MutexGuard {
            lock: &self.0,
            guard: Some(guard),
        })
    }

    pub fn get_mut(&mut self) -> &mut T {
        self.0.get_mut().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<'a, T: ?Sized> MutexGuard<'a, T> {
    /// Runs `f` with the lock released, then takes it again.
    pub fn unlocked<R>(this: &mut Self, f: impl FnOnce() -> R) -> R {
        drop(this.guard.take());
        let r = f();
        this.guard = Some(this.lock.lock().unwrap_or_else(PoisonError::into_inner));
        r
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.guard.as_deref().expect("guard held outside a wait")
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.guard
            .as_deref_mut()
            .expect("guard held outside a wait")
    }
}

#[derive(Default)]
pub struct Condvar(std::sync::Condvar);

/// Whether a `wait_until` ended at its deadline.
pub struct WaitTimeoutResult(bool);

impl WaitTimeoutResult {
    pub fn timed_out(&self) -> bool {
        self.0
    }
}

impl Condvar {
    pub const fn new() -> Condvar {
        Condvar(std::sync::Condvar::new())
    }

    pub fn notify_one(&self) {
        self.0.notify_one();
    }

    pub fn notify_all(&self) {
        self.0.notify_all();
    }

    pub fn wait<T>(&self, g: &mut MutexGuard<'_, T>) {
        let inner = g.guard.take().expect("guard held");
        g.guard = Some(self.0.wait(inner).unwrap_or_else(PoisonError::into_inner));
    }

    /// Waits for a notification or `deadline` (spurious wake-ups included,
    /// as with any condition variable: callers re-check their condition).
    pub fn wait_until<T>(&self, g: &mut MutexGuard<'_, T>, deadline: Instant) -> WaitTimeoutResult {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let inner = g.guard.take().expect("guard held");
        let (inner, result) = self
            .0
            .wait_timeout(inner, timeout)
            .unwrap_or_else(PoisonError::into_inner);
        g.guard = Some(inner);
        WaitTimeoutResult(result.timed_out())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn waits_wake_and_time_out_and_unlocked_releases() {
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
        let seen = MutexGuard::unlocked(&mut g, || pair.0.try_lock().map(|v| *v));
        assert_eq!(seen, Some(1));
        assert!(pair.0.try_lock().is_none()); // held again
    }
}
