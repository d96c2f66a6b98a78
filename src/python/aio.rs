//! The asyncio bridge (`gofast.aio`): the same core and session as the
//! sync API, with what arrives handed to an event loop instead of being
//! handled on the reader thread.
//!
//! In asyncio mode the handler (`PyHandler` with an `AioQueue`) never runs
//! Python on the reader thread: each application message, each RESPONSE
//! to an asyncio request (through its slot's `SlotWaker`) and the end of
//! the connection become an `Event` in the queue. After each read
//! (`Handler::received`) an eventfd is written once if the loop has not
//! been told yet, so the loop wakes once per read, not per message; it
//! watches the eventfd with `loop.add_reader` and drains the whole queue
//! with one native call (`PyTransport._aio_drain`), which runs the
//! handlers and resolves the requests' futures on the loop's thread.
//!
//! Over a plain link without `idle.timeout` there is no reader thread: the
//! loop watches the socket too and reads it itself (`_aio_watcher`, see
//! `transport/caller_read.rs`), then drains at once, without the eventfd,
//! which then carries only what other threads queue (a close).
//!
//! Locks: `AioQueue::state` is a leaf, taken without the GIL by the reader
//! (and by `Slot::fill`, possibly under `Session::ex`) and with it by the
//! loop, held only to push or swap. `LoopSide` is taken only by the loop's
//! thread, with the GIL, and nothing calls Python while it is held.

use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::sync::{Condvar, Mutex};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

use super::handler::PyHandler;
use super::stream::StreamSink;
use crate::exchange::{Slot, SlotWaker};
use crate::io::Link;
use crate::protocol::Session;

/// One thing for the loop to do, in the order the reader found it.
pub enum Event {
    Post {
        id: u64,
        data: Vec<u8>,
    },
    /// Consecutive POSTs of one id for a batch handler.
    Posts {
        id: u64,
        msgs: Vec<Vec<u8>>,
    },
    Request {
        opaque: u64,
        id: u64,
        data: Vec<u8>,
    },
    StreamStart {
        opaque: u64,
        id: u64,
        data: Vec<u8>,
        sink: Arc<StreamSink>,
    },
    /// `None`: the stream's end.
    StreamMsg {
        sink: Arc<StreamSink>,
        msg: Option<(u64, Vec<u8>)>,
        len: usize,
    },
    /// The RESPONSE to an asyncio request (or why there is none) is in its slot.
    Response(u64),
    Closed,
}

struct Queue {
    events: Vec<Event>,
    /// Message bytes in `events`.
    bytes: usize,
    /// The eventfd was written for what `events` holds.
    told: bool,
    /// The eventfd; -1 once released (`release_fd`). Used only under the
    /// lock, so it is never written after it was closed (and its number
    /// perhaps reused).
    efd: RawFd,
}

/// What the reader thread hands to the loop, and the eventfd it rings.
/// Bounded: past `limit` bytes the reader waits for the loop to take them
/// (`wait_taken`), so a loop that falls behind slows the peer down through
/// TCP, as a slow handler does under the sync API, instead of growing the
/// queue without end.
pub struct AioQueue {
    limit: usize,
    state: Mutex<Queue>,
    taken: Condvar,
    /// The bound loop's thread (`pthread_self`), 0 until bound.
    thread: AtomicUsize,
    /// How the loop's sends get their one write per loop pass.
    loop_flush: PyOnceLock<LoopFlush>,
}

/// `loop.call_soon`, which writes each pass's deferred frames.
struct LoopFlush {
    call_soon: Py<PyAny>,
    session: Weak<Session<PyHandler>>,
}

/// Writes the frames a loop pass deferred (see `send_on_loop`): one per
/// pass, called by the loop, or dropped uncalled when the loop closes
/// first, which writes them all the same (nothing waits for a pass that
/// never ends). Holds the session weakly: the session holds the queue
/// that holds the scheduler.
#[pyclass(frozen, module = "gofast._native", name = "AioFlush")]
pub struct AioFlush {
    session: Weak<Session<PyHandler>>,
    called: AtomicBool,
}

impl AioFlush {
    fn flush(&self) {
        if !self.called.swap(true, Ordering::AcqRel) {
            if let Some(session) = self.session.upgrade() {
                session.flush_deferred();
            }
        }
    }
}

#[pymethods]
impl AioFlush {
    fn __call__(&self) {
        self.flush();
    }
}

impl Drop for AioFlush {
    fn drop(&mut self) {
        self.flush();
    }
}

fn this_thread() -> usize {
    // SAFETY: pthread_self has no preconditions (it reads a register).
    unsafe { libc::pthread_self() as usize }
}

/// Runs `f`, a send, with its frames held for the one write of the loop's
/// pass when it runs on the bound loop's thread (elsewhere it sends as the
/// sync API does). The first deferred send of a pass schedules the write
/// with `loop.call_soon`, so a pass's posts, requests and replies share one
/// system call instead of waking the writer thread each.
pub fn send_on_loop<R>(
    py: Python<'_>,
    session: &Arc<Session<PyHandler>>,
    f: impl FnOnce() -> R,
) -> R {
    let Some(q) = session.handler().aio_queue() else {
        return f();
    };
    if !q.on_loop_thread() {
        return f();
    }
    let (r, schedule) = session.deferred(f);
    if schedule {
        q.schedule_flush(py, session);
    }
    r
}

impl AioQueue {
    pub fn new(limit: usize) -> std::io::Result<Arc<Self>> {
        // SAFETY: eventfd takes no pointers; the fd is ours until Drop.
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Arc::new(AioQueue {
            limit: limit.max(1),
            state: Mutex::new(Queue {
                events: Vec::new(),
                bytes: 0,
                told: false,
                efd,
            }),
            taken: Condvar::new(),
            thread: AtomicUsize::new(0),
            loop_flush: PyOnceLock::new(),
        }))
    }

    /// Binds the loop running on this thread: its `call_soon` writes the
    /// passes' deferred frames.
    pub fn bind_loop(
        &self,
        py: Python<'_>,
        event_loop: &Bound<'_, PyAny>,
        session: &Arc<Session<PyHandler>>,
    ) -> PyResult<()> {
        if self.loop_flush.get(py).is_none() {
            let call_soon = event_loop.getattr(intern!(py, "call_soon"))?.unbind();
            let session = Arc::downgrade(session);
            let _ = self.loop_flush.set(py, LoopFlush { call_soon, session });
        }
        if running_loop(py)?.is(event_loop) {
            self.thread.store(this_thread(), Ordering::Release);
        }
        Ok(())
    }

    /// Whether the caller runs on the bound loop's thread (where only that
    /// loop can be running, while it runs).
    pub fn on_loop_thread(&self) -> bool {
        self.thread.load(Ordering::Acquire) == this_thread()
    }

    fn schedule_flush(&self, py: Python<'_>, session: &Session<PyHandler>) {
        let scheduled = self.loop_flush.get(py).is_some_and(|lf| {
            let once = AioFlush {
                session: lf.session.clone(),
                called: AtomicBool::new(false),
            };
            Py::new(py, once).is_ok_and(|f| lf.call_soon.call1(py, (f,)).is_ok())
        });
        if !scheduled {
            session.flush_deferred(); // no loop to do it (closed): now
        }
    }

    /// The eventfd (-1 once released).
    pub fn fd(&self) -> RawFd {
        self.state.lock().efd
    }

    /// Closes the eventfd: the loop has drained the connection's end and
    /// stopped watching it, and nothing more will come. A closed transport
    /// that stays referenced keeps no fd (as its socket is released at the
    /// end too).
    pub fn release_fd(&self) {
        let mut q = self.state.lock();
        if q.efd >= 0 {
            // SAFETY: our fd, closed once (it is -1 from here on).
            unsafe { libc::close(q.efd) };
            q.efd = -1;
        }
    }

    pub fn push(&self, ev: Event) {
        let n = match &ev {
            Event::Post { data, .. } | Event::Request { data, .. } => data.len(),
            Event::StreamStart { data, .. } => data.len(),
            Event::Posts { msgs, .. } => msgs.iter().map(Vec::len).sum(),
            Event::StreamMsg { len, .. } => *len,
            Event::Response(_) | Event::Closed => 0,
        };
        let mut q = self.state.lock();
        q.bytes += n + 64; // an event costs something even without data
        q.events.push(ev);
    }

    /// On the reader thread, after a read: while the loop has more than
    /// `limit` bytes to take, waits (in slices, to see `closed()`).
    pub fn wait_taken(&self, closed: &dyn Fn() -> bool) {
        let mut q = self.state.lock();
        while q.bytes > self.limit && !closed() {
            let slice = std::time::Instant::now() + crate::protocol::WAKE_EVERY;
            self.taken.wait_until(&mut q, slice);
        }
    }

    /// Rings the loop if something waits that it was not told about.
    pub fn ring(&self) {
        let mut q = self.state.lock();
        if q.events.is_empty() || q.told || q.efd < 0 {
            return;
        }
        q.told = true;
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our open eventfd (under
        // the lock: not released meanwhile). It cannot block (EFD_NONBLOCK)
        // and only fails when the counter is saturated, when the loop is
        // awake anyway.
        unsafe { libc::write(q.efd, (&one as *const u64).cast(), 8) };
    }

    /// Everything queued so far; the next event rings again.
    pub fn take(&self) -> Vec<Event> {
        let mut q = self.state.lock();
        // Only a ring (`told`) made the counter non-zero: when the loop's
        // own read queued the events, there is nothing to clear.
        if q.told && q.efd >= 0 {
            let mut buf = 0u64;
            // SAFETY: reads 8 bytes into a live u64 from our open eventfd
            // (clears the counter; never blocks).
            unsafe { libc::read(q.efd, (&mut buf as *mut u64).cast(), 8) };
        }
        q.told = false;
        q.bytes = 0;
        self.taken.notify_all();
        std::mem::take(&mut q.events)
    }
}

impl Drop for AioQueue {
    fn drop(&mut self) {
        // Unless released at the Closed event already: the loop stopped
        // watching it then (the reader callback holds the transport until
        // then, or until the loop itself is closed).
        self.release_fd();
    }
}

impl SlotWaker for AioQueue {
    fn wake(&self, opaque: u64) {
        self.push(Event::Response(opaque));
    }
}

/// How a RESPONSE becomes the future's result.
pub enum Reply {
    /// A `BinMessage`, or `response_type.decode(data)`.
    User(Option<Py<PyAny>>),
    Ping,
    Whoami,
}

/// An asyncio request waiting for its RESPONSE.
pub struct Waiting {
    pub slot: Arc<Slot>,
    pub future: Py<PyAny>,
    pub reply: Reply,
    pub deadline: Option<(Instant, Duration)>,
}

/// The loop's own state: touched only on its thread, with the GIL.
#[derive(Default)]
pub struct LoopSide {
    pub waiting: HashMap<u64, Waiting>,
    /// The timer that expires requests: when it fires, and its handle.
    pub timer: Option<(Instant, Py<PyAny>)>,
}

/// The transport's asyncio half: its queue and what the loop keeps.
pub struct Aio {
    pub queue: Arc<AioQueue>,
    /// The loop it is bound to (the first it was used on), set once.
    pub bound: PyOnceLock<Py<PyAny>>,
    /// `gofast.aio.Transport._closed_here`-like hook run on `Closed`.
    pub on_closed: PyOnceLock<Py<PyAny>>,
    pub side: Mutex<LoopSide>,
    /// The socket the loop reads itself (`Core::use_caller_reader`; None
    /// over TLS or with `idle.timeout`, whose reader thread hands over
    /// through the queue). Kept until the loop has stopped watching it at
    /// `Closed`, so that its fd's number is not reused meanwhile. A leaf.
    pub read_link: Mutex<Option<Arc<Link>>>,
    /// The loop stops reading on purpose for a while: dropping its
    /// `AioWatch` then does not end the transport.
    pub watch_paused: AtomicBool,
}

impl Aio {
    pub fn new(queue: Arc<AioQueue>, read_link: Option<Arc<Link>>) -> Self {
        Aio {
            queue,
            bound: PyOnceLock::new(),
            on_closed: PyOnceLock::new(),
            side: Mutex::new(LoopSide::default()),
            read_link: Mutex::new(read_link),
            watch_paused: AtomicBool::new(false),
        }
    }

    /// The fd of the socket the loop reads, or -1 (the reader thread does).
    pub fn read_fd(&self) -> RawFd {
        self.read_link.lock().as_ref().map_or(-1, |l| l.fd())
    }
}

/// A pre-completed awaitable: what `await t.post(msg)` gets when the
/// message was queued at once (no coroutine, no allocation).
#[pyclass(frozen, module = "gofast._native", name = "Ready")]
pub struct Ready;

#[pymethods]
impl Ready {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self) -> Option<()> {
        None
    }
}

static READY: PyOnceLock<Py<Ready>> = PyOnceLock::new();

pub fn ready(py: Python<'_>) -> PyResult<Py<PyAny>> {
    let r = READY.get_or_try_init(py, || Py::new(py, Ready))?;
    Ok(r.clone_ref(py).into_any())
}

static DRIVE: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// `gofast.aio._drive`: the Python helpers (tasks, waiting for room).
pub fn drive(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    Ok(DRIVE
        .get_or_try_init(py, || py.import("gofast.aio._drive").map(Bound::unbind))?
        .bind(py))
}

static RUNNING_LOOP: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// The running loop of this thread, or None (`asyncio._get_running_loop`,
/// which is cheap: it reads a thread-local).
pub fn running_loop(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    let f = RUNNING_LOOP.get_or_try_init(py, || {
        py.import("asyncio")?
            .getattr("_get_running_loop")
            .map(Bound::unbind)
    })?;
    f.bind(py).call0()
}

static COROUTINE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Whether `obj` is a coroutine (an `async def` handler's call).
pub fn is_coroutine(py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<bool> {
    let t = COROUTINE.get_or_try_init(py, || {
        py.import("types")?
            .getattr("CoroutineType")
            .map(Bound::unbind)
    })?;
    obj.is_instance(t.bind(py))
}
