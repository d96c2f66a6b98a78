//! The process's shared reader for transports with `reader: "shared"`
//! (`transport::Poller`): started by the first such transport, one per
//! process (a fork child starts its own), stopped at interpreter exit after
//! every transport has closed.

use std::sync::Arc;

use pyo3::prelude::*;

use super::handler::{with_thread_state, PyHandler};
use crate::errors::Result;
use crate::sync::Mutex;
use crate::transport::{Poller, PollerHooks};

struct PyHooks;

impl PollerHooks for PyHooks {
    fn thread(&self, run: &mut dyn FnMut()) {
        with_thread_state(run)
    }

    /// At most one GIL acquisition for every frame of the pass: the first
    /// connection whose frames need a handler takes it (`hold_gil_for_pass`)
    /// and the pass keeps it to the end. A pass of RESPONSEs only (a
    /// client's) never takes it, so it never waits for the requesters.
    fn pass(&self, run: &mut dyn FnMut()) {
        PASS.set(Pass::Armed);
        run();
        if let Pass::Held(gstate) = PASS.replace(Pass::Off) {
            // SAFETY: pairs the Ensure of `hold_gil_for_pass` on this thread.
            unsafe { pyo3::ffi::PyGILState_Release(gstate) };
        }
    }
}

#[derive(Clone, Copy)]
enum Pass {
    Off,
    Armed,
    Held(pyo3::ffi::PyGILState_STATE),
}

thread_local! {
    static PASS: std::cell::Cell<Pass> = const { std::cell::Cell::new(Pass::Off) };
}

/// Called before a handler batch takes the GIL: within a shared reader's
/// pass, takes it for the rest of the pass (later batches then find it
/// held, a counter increment).
pub fn hold_gil_for_pass() {
    if let Pass::Armed = PASS.get() {
        // SAFETY: released by `PyHooks::pass` on this thread, before the
        // thread state is let go.
        let gstate = unsafe { pyo3::ffi::PyGILState_Ensure() };
        PASS.set(Pass::Held(gstate));
    }
}

/// The running poller and the process it belongs to. A leaf lock, never
/// held with the GIL taken after it (starting the thread takes no GIL).
static SHARED: Mutex<Option<(u32, Arc<Poller<PyHandler>>)>> = Mutex::new(None);

/// The shared reader, started if there is none in this process.
pub fn shared() -> Result<Arc<Poller<PyHandler>>> {
    let mut shared = SHARED.lock();
    let pid = std::process::id();
    if let Some((owner, p)) = shared.as_ref() {
        if *owner == pid && p.is_running() {
            return Ok(p.clone());
        }
    }
    let p = Poller::start("shared", Box::new(PyHooks))?;
    // A parent's poller (after fork) is forgotten, never stopped: its
    // thread is not in this process.
    if let Some((owner, old)) = shared.replace((pid, p.clone())) {
        if owner != pid {
            std::mem::forget(old);
        }
    }
    Ok(p)
}

/// Stops the shared reader (at exit, once every transport is closed).
pub fn stop() {
    let taken = SHARED.lock().take();
    if let Some((owner, p)) = taken {
        if owner == std::process::id() {
            p.stop();
        } else {
            std::mem::forget(p);
        }
    }
}

/// Transports the shared reader serves now (for tests and diagnostics).
#[pyfunction]
pub fn _shared_reader_connections() -> usize {
    SHARED
        .lock()
        .as_ref()
        .filter(|(owner, _)| *owner == std::process::id())
        .map_or(0, |(_, p)| p.connections())
}
