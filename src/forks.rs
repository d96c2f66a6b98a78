//! Which process a connection belongs to. After fork() the child has a copy
//! of every transport but none of their threads, and shares their sockets
//! with the parent: a copy must stay inert there. A pthread_atfork handler
//! counts the forks; a transport remembers the count it was made under.

use std::sync::atomic::{AtomicU64, Ordering};

/// How many times this process is a fork()ed child of the one that made
/// its transports (bumped in the child by a pthread_atfork handler).
static FORKS: AtomicU64 = AtomicU64::new(0);

extern "C" fn count_fork_in_child() {
    FORKS.fetch_add(1, Ordering::Relaxed);
}

/// Starts counting forks (once per process; later calls do nothing).
pub fn watch() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: registers a handler that only bumps an atomic (async-signal-safe).
    ONCE.call_once(|| unsafe {
        libc::pthread_atfork(None, None, Some(count_fork_in_child));
    });
}

/// The fork count now: differs from a transport's in a child it was copied into.
pub fn generation() -> u64 {
    FORKS.load(Ordering::Relaxed)
}
