//! `Stream`: what a handler answers a REQUEST through, and both ends of a
//! bi-directional STREAM.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::aio::send_on_loop;
use super::errors::{ConnectionClosed, RemoteError, Timeout, UsageError};
use super::handler::PyHandler;
use super::message::{lendable, message_parts};
use super::transport::owned_session;
use super::{send_message, send_or_wait};
use crate::codec::Kind;
use crate::exchange::Origin;
use crate::protocol::Session;

/// Where a stream's incoming messages go, shared by the exchange table and
/// the `Stream` object: the callable (the user's callback, or the inbox's
/// `put`), and why the stream was cut, if the connection ended under it.
pub struct StreamSink {
    /// Set once: at once for streams we open, when the handler returns for
    /// streams the peer opens.
    pub callback: OnceLock<Py<PyAny>>,
    pub cut: OnceLock<String>,
    /// The peer's handler failed (`x-errors`): (type name, message).
    pub remote_error: OnceLock<(String, String)>,
}

impl StreamSink {
    pub fn new() -> Arc<Self> {
        Arc::new(StreamSink {
            callback: OnceLock::new(),
            cut: OnceLock::new(),
            remote_error: OnceLock::new(),
        })
    }

    pub fn with_callback(callback: Py<PyAny>) -> Arc<Self> {
        let sink = Self::new();
        let _ = sink.callback.set(callback);
        sink
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The peer's REQUEST: answered once with `respond()`.
    Request,
    Stream(Origin),
}

/// One exchange with the peer: the peer's REQUEST, answered once with
/// `respond()`, or a bi-directional STREAM (`send()`, `close()`, and
/// `recv()` or iteration when it was opened without a callback). A handler
/// gets one as its first argument; `Transport.stream()` returns one.
#[pyclass(frozen, module = "gofast._native", name = "Stream")]
pub struct PyStream {
    session: Arc<Session<PyHandler>>,
    opaque: u64,
    role: Role,
    responded: AtomicBool,
    /// A request counted in its handler's `unanswered` (until answered, or
    /// until this object goes, when nobody can answer it any more).
    counted: AtomicBool,
    /// A `queue.SimpleQueue` fed by the stream's callback, for streams
    /// opened without one: iterate the stream to read it.
    inbox: Option<Py<PyAny>>,
    /// `recv()` has returned the end of the stream: it stays ended.
    ended: AtomicBool,
    /// For streams (not requests): what the connection's end left there.
    sink: Option<Arc<StreamSink>>,
}

impl PyStream {
    pub fn for_request(session: Arc<Session<PyHandler>>, opaque: u64) -> Self {
        session.handler().request_started();
        PyStream {
            session,
            opaque,
            role: Role::Request,
            responded: AtomicBool::new(false),
            counted: AtomicBool::new(true),
            inbox: None,
            ended: AtomicBool::new(false),
            sink: None,
        }
    }

    pub fn for_stream(
        session: Arc<Session<PyHandler>>,
        opaque: u64,
        origin: Origin,
        sink: Arc<StreamSink>,
    ) -> Self {
        let role = Role::Stream(origin);
        PyStream {
            session,
            opaque,
            role,
            responded: AtomicBool::new(false),
            counted: AtomicBool::new(false),
            inbox: None,
            ended: AtomicBool::new(false),
            sink: Some(sink),
        }
    }

    fn session(&self) -> PyResult<&Arc<Session<PyHandler>>> {
        owned_session(&self.session)
    }

    pub fn opaque_value(&self) -> u64 {
        self.opaque
    }

    /// The request is over for its handler's count (answered, failed, or
    /// left with nobody to answer it); once.
    pub fn answered(&self) {
        if self.counted.swap(false, Ordering::AcqRel) {
            self.session.handler().request_ended();
        }
    }

    /// Whether `respond()` has answered the request.
    pub fn responded(&self) -> bool {
        self.responded.load(Ordering::Acquire)
    }

    pub(super) fn cut_error(&self) -> Option<PyErr> {
        let sink = self.sink.as_ref()?;
        if let Some((t, m)) = sink.remote_error.get() {
            return Some(RemoteError::new_err((t.clone(), m.clone())));
        }
        let why = sink.cut.get()?;
        Some(ConnectionClosed::new_err(format!(
            "stream {} was cut: connection closed: {why}",
            self.opaque
        )))
    }

    /// Closes this side of a stream, as `close()`, for a drop (errors are
    /// a closed connection: nothing left to close).
    pub(super) fn close_quietly(&self) {
        if let (Role::Stream(origin), Ok(session)) = (self.role, self.session()) {
            let _ = session.stream_close(self.opaque, origin);
        }
    }

    pub fn with_inbox(mut self, inbox: Py<PyAny>) -> Self {
        self.inbox = Some(inbox);
        self
    }

    fn origin(&self, what: &str) -> PyResult<Origin> {
        match self.role {
            Role::Stream(o) => Ok(o),
            Role::Request => Err(UsageError::new_err(format!(
                "{what}() is for streams; a request is answered with respond()"
            ))),
        }
    }
}

impl PyStream {
    fn send_response(
        &self,
        slf: &Bound<'_, Self>,
        msg: &Bound<'_, PyAny>,
        id: u64,
        data: &Bound<'_, PyBytes>,
        flush: bool,
    ) -> PyResult<()> {
        let py = slf.py();
        let session = self.session()?;
        let data = lendable(data);
        if session.handler().is_aio() {
            // On an event loop: never wait here. A full queue hands the
            // reply to a task that waits for room without blocking the loop.
            if send_on_loop(py, session, || {
                session.respond(self.opaque, id, data, flush)
            })? {
                return Ok(());
            }
            super::aio::drive(py)?.call_method1("respond_later", (slf, msg, flush))?;
            return Ok(());
        }
        send_or_wait(py, session, None, || {
            session.respond(self.opaque, id, data, flush)
        })
    }
}

impl Drop for PyStream {
    /// A request still unanswered when its stream goes can never be
    /// answered: its count ends, and under `x-errors` the peer is told now
    /// (a handler that kept the stream to answer later, from another
    /// thread, is told nothing until then).
    fn drop(&mut self) {
        if !self.counted.swap(false, Ordering::AcqRel) {
            return;
        }
        self.session.handler().request_ended();
        if self.role == Role::Request && !self.responded() {
            // Not from a fork()ed child: the socket is the parent's.
            if let Ok(session) = owned_session(&self.session) {
                if session.errors_ext() && !session.is_closed() {
                    let why = "the request's handler let go of it without a reply";
                    session.send_error(Kind::Request, self.opaque, "NoResponse", why);
                }
            }
        }
    }
}

#[pymethods]
impl PyStream {
    /// The opaque value this exchange travels under.
    #[getter]
    fn opaque(&self) -> u64 {
        self.opaque
    }

    /// True for the stream a request handler answers through.
    #[getter]
    fn is_request(&self) -> bool {
        self.role == Role::Request
    }

    /// Why the stream ended early: a `RemoteError` when the peer's handler
    /// failed (`x-errors` on both sides), a `ConnectionClosed` when the
    /// connection ended before the peer closed its side; None while it runs
    /// or after the peer closed it.
    #[getter]
    fn error(&self) -> Option<PyErr> {
        self.cut_error()
    }

    /// Sends a message on the stream; while the peer is not reading it
    /// waits for room, up to `timeout` seconds (None: as long as it takes).
    #[pyo3(signature = (msg, flush = false, timeout = None))]
    fn send(
        &self,
        py: Python<'_>,
        msg: &Bound<'_, PyAny>,
        flush: bool,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        let origin = self.origin("send")?;
        let session = self.session()?;
        send_message(py, session, msg, timeout, |id, data| {
            session.stream_send(self.opaque, origin, id, data, flush)
        })
    }

    /// Answers the peer's request; exactly once.
    #[pyo3(signature = (msg, flush = true))]
    fn respond(slf: &Bound<'_, Self>, msg: &Bound<'_, PyAny>, flush: bool) -> PyResult<()> {
        let me = slf.get();
        if me.role != Role::Request {
            return Err(UsageError::new_err(
                "respond() answers a request; a stream uses send()",
            ));
        }
        let (id, data) = message_parts(msg)?;
        // Refused before it counts as the answer, so a valid one can follow.
        super::transport::check_user_id(id)?;
        if me.responded.swap(true, Ordering::AcqRel) {
            return Err(UsageError::new_err(format!(
                "request {} was already answered",
                me.opaque
            )));
        }
        let sent = me.send_response(slf, msg, id, &data, flush);
        me.answered();
        sent
    }

    /// Queues the reply of `respond()` once there is room: False while the
    /// send queue is full (for `gofast.aio`, which waits without blocking).
    #[pyo3(signature = (msg, flush = true))]
    fn _try_respond(&self, py: Python<'_>, msg: &Bound<'_, PyAny>, flush: bool) -> PyResult<bool> {
        let (id, data) = message_parts(msg)?;
        let session = self.session()?;
        let data = lendable(&data);
        Ok(send_on_loop(py, session, || {
            session.respond(self.opaque, id, data, flush)
        })?)
    }

    /// Waits (without the GIL) up to `seconds` for room in the send queue.
    fn _wait_room(&self, py: Python<'_>, seconds: f64) -> PyResult<()> {
        let session = self.session()?;
        let until = std::time::Instant::now()
            + std::time::Duration::from_secs_f64(seconds.clamp(0.0, 3600.0));
        py.detach(|| session.wait_room(until));
        Ok(())
    }

    /// Queues a message on the stream without waiting: False while the send
    /// queue is full (for `gofast.aio`, which waits without blocking).
    #[pyo3(signature = (msg, flush = false))]
    fn _try_send(&self, py: Python<'_>, msg: &Bound<'_, PyAny>, flush: bool) -> PyResult<bool> {
        let origin = self.origin("send")?;
        let (id, data) = message_parts(msg)?;
        let session = self.session()?;
        let data = lendable(&data);
        Ok(send_on_loop(py, session, || {
            session.stream_send(self.opaque, origin, id, data, flush)
        })?)
    }

    /// Ends a stream the peer opened because this side failed: tells the
    /// peer (type name, message) under `x-errors`, then closes this side.
    /// For `gofast._drive`, which runs generator stream handlers.
    fn _fail(&self, py: Python<'_>, type_name: &str, message: &str) -> PyResult<()> {
        let origin = self.origin("_fail")?;
        let session = self.session()?;
        Ok(send_on_loop(py, session, || {
            session.send_error(Kind::StreamMsg, self.opaque, type_name, message);
            session.stream_close(self.opaque, origin)
        })?)
    }

    /// Closes this side of the stream (sends FINISH once; later calls do
    /// nothing). The stream is over when the peer has closed its side too.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let origin = self.origin("close")?;
        let session = self.session()?;
        Ok(send_on_loop(py, session, || {
            session.stream_close(self.opaque, origin)
        })?)
    }

    /// The next message from the peer, or None once the peer has closed its
    /// side. Only for streams opened without a callback. `timeout` in
    /// seconds raises `Timeout` when nothing arrives in time; a stream cut
    /// by the connection's end raises `ConnectionClosed`, one the peer's
    /// handler failed (`x-errors`) `RemoteError`.
    #[pyo3(signature = (timeout = None))]
    fn recv(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        let Some(inbox) = &self.inbox else {
            return Err(UsageError::new_err(
                "recv() needs a stream opened without a callback",
            ));
        };
        self.session()?;
        if self.ended.load(Ordering::Acquire) {
            return match self.cut_error() {
                Some(e) => Err(e),
                None => Ok(py.None()),
            };
        }
        match inbox.call_method1(py, intern!(py, "get"), (true, timeout)) {
            Err(e) if e.is_instance(py, &py.import("queue")?.getattr("Empty")?) => {
                let waited = timeout.map_or("ever".to_string(), |t| format!("{t}s"));
                Err(Timeout::new_err(format!(
                    "no stream message within {waited}"
                )))
            }
            Ok(m) if m.is_none(py) => {
                self.ended.store(true, Ordering::Release);
                match self.cut_error() {
                    Some(e) => Err(e),
                    None => Ok(m),
                }
            }
            other => other,
        }
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        let msg = self.recv(py, None)?;
        Ok(if msg.is_none(py) { None } else { Some(msg) })
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __exit__(
        &self,
        py: Python<'_>,
        _exc_type: &Bound<'_, PyAny>,
        _exc: &Bound<'_, PyAny>,
        _tb: &Bound<'_, PyAny>,
    ) -> PyResult<bool> {
        if self.role != Role::Request {
            self.close(py)?;
        }
        Ok(false)
    }

    fn __repr__(&self) -> String {
        let role = match self.role {
            Role::Request => "request",
            Role::Stream(Origin::Local) => "local",
            Role::Stream(Origin::Remote) => "remote",
        };
        format!(
            "Stream(opaque={}, {role}, transport={:?})",
            self.opaque, self.session.name
        )
    }
}
