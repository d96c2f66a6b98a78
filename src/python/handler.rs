//! The bridge from the reader thread to Python: looks up the handler for a
//! message id and calls it with the GIL, which it holds across a whole batch
//! of frames. A handler's exception is logged and counted, never fatal.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use crate::sync::Mutex;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;

use super::aio::{AioQueue, Event};
use super::message::BinMessage;
use super::stream::{PyStream, StreamSink};
use crate::builtin::{self, ERROR_ID};
use crate::codec::{Kind, Message};
use crate::exchange::Origin;
use crate::protocol::{Dispatched, Handler, Session};
use crate::stats::Stats;

type PyCallable = Arc<Py<PyAny>>;

/// Its tables are leaf locks, taken with the GIL held: see "Locks and the
/// GIL" in transport.rs.
#[derive(Default)]
pub struct PyHandler {
    handlers: Mutex<HashMap<u64, PyCallable>>,
    default: Mutex<Option<PyCallable>>,
    /// POST handlers that take a list of messages at a time.
    batch_handlers: Mutex<HashMap<u64, PyCallable>>,
    /// Saves a lock per POST while nobody subscribed a batch handler.
    any_batch: AtomicBool,
    /// Message ids whose REQUEST handler left a request unanswered, already
    /// warned about (without `x-errors`: once per id, not per request).
    warned_unanswered: Mutex<HashSet<u64>>,
    /// Set (once, before the handshake) for a `gofast.aio` transport: what
    /// arrives is queued for its event loop, never run on the reader thread.
    aio: OnceLock<Arc<AioQueue>>,
    /// The peer's REQUESTs handed to a handler and not answered yet (see
    /// `PyStream::answered`): what a server's graceful stop waits for.
    unanswered: AtomicUsize,
}

impl PyHandler {
    /// Puts the handler in asyncio mode (see `aio.rs`).
    pub fn set_aio(&self, queue: Arc<AioQueue>) {
        let _ = self.aio.set(queue);
    }

    pub fn is_aio(&self) -> bool {
        self.aio.get().is_some()
    }

    pub fn aio_queue(&self) -> Option<&Arc<AioQueue>> {
        self.aio.get()
    }

    pub(super) fn request_started(&self) {
        self.unanswered.fetch_add(1, Ordering::AcqRel);
    }

    pub(super) fn request_ended(&self) {
        self.unanswered.fetch_sub(1, Ordering::AcqRel);
    }

    /// The peer's requests whose handler has not answered them yet.
    pub fn unanswered(&self) -> usize {
        self.unanswered.load(Ordering::Acquire)
    }

    fn has_handler(&self, id: u64) -> bool {
        self.handlers.lock().contains_key(&id) || self.default.lock().is_some()
    }

    /// Returns the handler replaced, for the caller to drop after the lock
    /// (dropping a Python object may run arbitrary code).
    pub fn subscribe(&self, id: u64, handler: Py<PyAny>) -> Option<PyCallable> {
        self.handlers.lock().insert(id, Arc::new(handler))
    }

    pub fn subscribe_batch(&self, id: u64, handler: Py<PyAny>) -> Option<PyCallable> {
        let old = self.batch_handlers.lock().insert(id, Arc::new(handler));
        self.any_batch.store(true, Ordering::Release);
        old
    }

    pub fn set_default(&self, handler: Option<Py<PyAny>>) -> Option<PyCallable> {
        std::mem::replace(&mut *self.default.lock(), handler.map(Arc::new))
    }

    pub(super) fn lookup(&self, id: u64) -> Option<PyCallable> {
        let found = self.handlers.lock().get(&id).cloned();
        found.or_else(|| self.default.lock().clone())
    }

    /// Calls the handler; its exception is reported (logged, counted) and
    /// returned for the caller to tell the peer.
    pub(super) fn call(
        &self,
        py: Python<'_>,
        session: &Arc<Session<Self>>,
        handler: &PyCallable,
        stream: Option<&Py<PyStream>>,
        msg: &Message<'_>,
    ) -> Result<Py<PyAny>, PyErr> {
        let called = BinMessage::from_wire(py, msg).and_then(|m| {
            let stream = match stream {
                Some(s) => s.clone_ref(py).into_any(),
                None => py.None(),
            };
            handler.call1(py, (stream, m))
        });
        called.inspect_err(|e| {
            report(
                py,
                session,
                &format!("handler for message id {}", msg.id),
                e.clone_ref(py),
            )
        })
    }

    /// A REQUEST handler returned `returned`: a message is the reply; None
    /// with no reply sent is reported, to the peer under `x-errors`, else
    /// by a warning once per message id.
    pub(super) fn after_request(
        &self,
        py: Python<'_>,
        session: &Arc<Session<Self>>,
        stream: &Py<PyStream>,
        opaque: u64,
        id: u64,
        returned: Py<PyAny>,
    ) {
        let stream = stream.bind(py);
        if !returned.is_none(py) {
            if let Err(e) = stream.call_method1("respond", (returned,)) {
                report(
                    py,
                    session,
                    &format!("reply of the handler for message id {id}"),
                    e.clone_ref(py),
                );
                tell_peer(py, session, Kind::Request, opaque, &e);
            }
            return;
        }
        if stream.get().responded() {
            return;
        }
        // Another reference than ours: the handler kept the stream to
        // answer later (from another thread). Its drop tells the peer if
        // that never happens (`PyStream::drop`).
        if stream.get_refcnt() > 1 {
            return;
        }
        if session.errors_ext() {
            let why = format!("the handler for message id {id} returned without a reply");
            session.send_error(Kind::Request, opaque, "NoResponse", &why);
            stream.get().answered();
            return;
        }
        let first = self.warned_unanswered.lock().insert(id);
        if first {
            warn(
                py,
                session,
                &format!(
                    "the handler for message id {id} returned without a reply (nor returned one) \
                     and kept no reference to its stream; its requester waits for its timeout \
                     (warned once per message id)"
                ),
            );
        }
    }
}

impl PyHandler {
    /// What follows a REQUEST handler's return (`called`: what it
    /// returned, or its exception, already reported).
    pub(super) fn finish_request(
        &self,
        py: Python<'_>,
        session: &Arc<Session<Self>>,
        stream: &Py<PyStream>,
        id: u64,
        called: PyResult<Py<PyAny>>,
    ) {
        let opaque = stream.get().opaque_value();
        match called {
            Ok(r) => self.after_request(py, session, stream, opaque, id, r),
            Err(e) => {
                if !stream.get().responded() {
                    tell_peer(py, session, Kind::Request, opaque, &e);
                }
                stream.get().answered(); // the handler failed: nothing will
            }
        }
    }

    /// Drops the handlers (asyncio mode: at the loop's `Closed` event; the
    /// caller holds the GIL and no lock).
    pub(super) fn clear(&self) {
        let handlers = std::mem::take(&mut *self.handlers.lock());
        let batch_handlers = std::mem::take(&mut *self.batch_handlers.lock());
        let default = self.default.lock().take();
        drop((handlers, batch_handlers, default));
    }

    pub(super) fn batch_handler(&self, id: u64) -> Option<PyCallable> {
        self.batch_handlers.lock().get(&id).cloned()
    }
}

impl Handler for PyHandler {
    type Callback = Arc<StreamSink>;

    fn batch(&self, run: &mut dyn FnMut()) {
        if self.is_aio() {
            return run(); // nothing here runs Python: it is queued
        }
        super::poller::hold_gil_for_pass();
        Python::attach(|_py| run());
    }

    fn received(&self, closed: &dyn Fn() -> bool) {
        if let Some(q) = self.aio.get() {
            if q.on_loop_thread() {
                return; // the loop read this itself and drains it next
            }
            q.ring();
            q.wait_taken(closed);
        }
    }

    fn requesters_read(&self) -> bool {
        !self.is_aio()
    }

    fn reader_polls(&self) -> bool {
        !self.is_aio()
    }

    fn on_post(&self, session: &Arc<Session<Self>>, msg: &Message<'_>) -> Dispatched {
        if let Some(q) = self.aio.get() {
            if !self.has_handler(msg.id) {
                return Dispatched::NoHandler;
            }
            let data = msg.data.to_vec();
            q.push(Event::Post { id: msg.id, data });
            return Dispatched::Handled;
        }
        let Some(h) = self.lookup(msg.id) else {
            return Dispatched::NoHandler;
        };
        Python::attach(|py| {
            let _ = self.call(py, session, &h, None, msg);
        });
        Dispatched::Handled
    }

    fn batches_posts(&self, id: u64) -> bool {
        self.any_batch.load(Ordering::Acquire) && self.batch_handlers.lock().contains_key(&id)
    }

    fn on_posts(&self, session: &Arc<Session<Self>>, msgs: &[Message<'_>]) {
        let Some(first) = msgs.first() else { return };
        if let Some(q) = self.aio.get() {
            let msgs = msgs.iter().map(|m| m.data.to_vec()).collect();
            q.push(Event::Posts { id: first.id, msgs });
            return;
        }
        let Some(h) = self.batch_handlers.lock().get(&first.id).cloned() else {
            return;
        };
        Python::attach(|py| {
            let called = msgs
                .iter()
                .map(|m| BinMessage::from_wire(py, m))
                .collect::<PyResult<Vec<_>>>()
                .and_then(|list| h.call1(py, (list,)));
            if let Err(e) = called {
                report(
                    py,
                    session,
                    &format!("batch handler for message id {}", first.id),
                    e,
                );
            }
        });
    }

    fn on_request(
        &self,
        session: &Arc<Session<Self>>,
        opaque: u64,
        msg: &Message<'_>,
    ) -> Dispatched {
        if let Some(q) = self.aio.get() {
            if !self.has_handler(msg.id) {
                return Dispatched::NoHandler;
            }
            let data = msg.data.to_vec();
            q.push(Event::Request {
                opaque,
                id: msg.id,
                data,
            });
            return Dispatched::Handled;
        }
        let Some(h) = self.lookup(msg.id) else {
            return Dispatched::NoHandler;
        };
        Python::attach(|py| {
            let stream = match Py::new(py, PyStream::for_request(session.clone(), opaque)) {
                Ok(s) => s,
                Err(e) => return report(py, session, "request stream", e),
            };
            let called = self.call(py, session, &h, Some(&stream), msg);
            self.finish_request(py, session, &stream, msg.id, called);
        });
        Dispatched::Handled
    }

    fn on_stream_start(
        &self,
        session: &Arc<Session<Self>>,
        opaque: u64,
        msg: &Message<'_>,
    ) -> Result<Option<Self::Callback>, Dispatched> {
        if let Some(q) = self.aio.get() {
            if !self.has_handler(msg.id) {
                return Err(Dispatched::NoHandler);
            }
            // Its callback is set on the loop, when the handler has run.
            let sink = StreamSink::new();
            q.push(Event::StreamStart {
                opaque,
                id: msg.id,
                data: msg.data.to_vec(),
                sink: sink.clone(),
            });
            return Ok(Some(sink));
        }
        let Some(h) = self.lookup(msg.id) else {
            return Err(Dispatched::NoHandler);
        };
        let sink = StreamSink::new();
        let stream = PyStream::for_stream(session.clone(), opaque, Origin::Remote, sink.clone());
        Python::attach(|py| {
            let failed = |e: &PyErr| {
                // Tell the peer this side is done (and why, under x-errors).
                tell_peer(py, session, Kind::StreamMsg, opaque, e);
                let _ = session.stream_close(opaque, Origin::Remote);
                Ok(None)
            };
            let stream = match Py::new(py, stream) {
                Ok(s) => s,
                Err(e) => {
                    report(py, session, "stream", e.clone_ref(py));
                    return failed(&e);
                }
            };
            let returned = match self.call(py, session, &h, Some(&stream), msg) {
                Ok(r) => r,
                Err(e) => return failed(&e),
            };
            let r = returned.bind(py);
            if r.is_none() {
                Ok(None)
            } else if is_generator(py, r) {
                // Driven on its own thread: the reader must not wait on it.
                let started = py
                    .import("gofast._drive")
                    .and_then(|m| m.call_method1("start", (r, stream.bind(py))));
                match started {
                    Ok(_) => Ok(None),
                    Err(e) => {
                        report(py, session, "stream generator", e.clone_ref(py));
                        failed(&e)
                    }
                }
            } else if r.is_callable() {
                let _ = sink.callback.set(returned);
                Ok(Some(sink))
            } else {
                let e = pyo3::exceptions::PyTypeError::new_err(format!(
                    "a stream handler must return a callable, a generator or None, not {}",
                    r.get_type()
                ));
                report(
                    py,
                    session,
                    &format!("handler for message id {}", msg.id),
                    e.clone_ref(py),
                );
                failed(&e)
            }
        })
    }

    fn on_stream_msg(
        &self,
        session: &Arc<Session<Self>>,
        callback: &Self::Callback,
        msg: Option<&Message<'_>>,
    ) {
        if let Some(m) = msg.filter(|m| m.id == ERROR_ID && session.errors_ext()) {
            // The peer's handler failed: the stream ends (its FINISH follows)
            // with this error, never delivered as a message.
            let err = builtin::decode_error(&m.data)
                .unwrap_or_else(|e| ("ProtocolError".into(), e.to_string()));
            let _ = callback.remote_error.set(err);
            return;
        }
        if let Some(q) = self.aio.get() {
            q.push(Event::StreamMsg {
                sink: callback.clone(),
                msg: msg.map(|m| (m.id, m.data.to_vec())),
                len: msg.map_or(0, |m| m.data.len()),
            });
            return;
        }
        let Some(callback) = callback.callback.get() else {
            return; // registered without a callable: nothing listens
        };
        Python::attach(|py| {
            let called = match msg {
                Some(m) => BinMessage::from_wire(py, m).and_then(|m| callback.call1(py, (m,))),
                None => callback.call1(py, (py.None(),)),
            };
            if let Err(e) = called {
                report(py, session, "stream callback", e);
            }
        });
    }

    fn on_stream_cut(&self, sink: &Self::Callback, reason: &str) {
        let _ = sink.cut.set(reason.to_string());
    }

    fn reader_thread(&self, run: &mut dyn FnMut()) {
        with_thread_state(run)
    }

    fn on_closed(&self) {
        if let Some(q) = self.aio.get() {
            // The loop still runs what was queued before this: it drops
            // the handlers when it gets here.
            q.push(Event::Closed);
            q.ring();
            return;
        }
        // Drop the handlers with the GIL: they may hold the last reference
        // to the transport's Python object (a cycle Python cannot see).
        let handlers = std::mem::take(&mut *self.handlers.lock());
        let batch_handlers = std::mem::take(&mut *self.batch_handlers.lock());
        let default = self.default.lock().take();
        Python::attach(|_py| {
            drop(handlers);
            drop(batch_handlers);
            drop(default);
        });
    }
}

/// Runs a native thread's whole life with one Python thread state: a
/// thread without one gets a new one from every GIL acquisition, and loses
/// it on release (microseconds a batch). Creates it once, releases the GIL,
/// and keeps the state until `run` returns.
pub(super) fn with_thread_state(run: &mut dyn FnMut()) {
    // SAFETY: Ensure/SaveThread and RestoreThread/Release are paired on
    // this thread; between them the thread holds no GIL.
    unsafe {
        let gstate = pyo3::ffi::PyGILState_Ensure();
        let tstate = pyo3::ffi::PyEval_SaveThread();
        run();
        pyo3::ffi::PyEval_RestoreThread(tstate);
        pyo3::ffi::PyGILState_Release(gstate);
    }
}

static LOGGER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

fn logger(py: Python<'_>) -> PyResult<&Py<PyAny>> {
    LOGGER.get_or_try_init(py, || {
        py.import("logging")?
            .call_method1("getLogger", ("gofast",))
            .map(Bound::unbind)
    })
}

/// A generator object (a generator function's call): its yields are sent.
fn is_generator(py: Python<'_>, obj: &Bound<'_, PyAny>) -> bool {
    py.import("inspect")
        .and_then(|m| m.call_method1("isgenerator", (obj,)))
        .and_then(|b| b.is_truthy())
        .unwrap_or(false)
}

/// Sends the peer, under `x-errors`, the type name and message of `err`.
pub(super) fn tell_peer(
    py: Python<'_>,
    session: &Session<PyHandler>,
    kind: Kind,
    opaque: u64,
    err: &PyErr,
) {
    if !session.errors_ext() {
        return;
    }
    let type_name = err
        .get_type(py)
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "Exception".into());
    let message = err
        .value(py)
        .str()
        .map(|s| s.to_string())
        .unwrap_or_default();
    session.send_error(kind, opaque, &type_name, &message);
}

fn warn(py: Python<'_>, session: &Session<PyHandler>, what: &str) {
    let logged = logger(py)
        .and_then(|l| l.call_method1(py, "warning", ("gofast[%s]: %s", &session.name, what)));
    if let Err(e) = logged {
        e.print(py);
    }
}

/// Logs a handler's exception (with its traceback) to the `gofast` logger
/// and counts it in `n_handler_errors`.
pub(super) fn report(py: Python<'_>, session: &Session<PyHandler>, what: &str, err: PyErr) {
    Stats::incr(&session.stats.n_handler_errors);
    let logged = logger(py).and_then(|logger| {
        let kwargs = PyDict::new(py);
        kwargs.set_item("exc_info", err.clone_ref(py).into_value(py))?;
        logger.call_method(
            py,
            "error",
            ("gofast[%s]: %s raised", &session.name, what),
            Some(&kwargs),
        )
    });
    if logged.is_err() {
        err.print(py);
    }
}
