//! The native `Transport` class; `gofast.Transport` subclasses it to add
//! constructors and conveniences in Python. The hot calls (`post`,
//! `request`, `Stream.send`) are here, one Python→Rust hop each.

use std::os::fd::RawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use super::aio::{Aio, AioQueue};
use super::errors::{RemoteError, SettingsError, UsageError};
use super::handler::PyHandler;
use super::message::{decode_as, lendable, message_parts, BinMessage};
use super::settings;
use super::stream::{PyStream, StreamSink};
use super::tls::PyTlsConfig;
use super::{deadline_after, detach_checked, send_message, send_or_wait};
use crate::builtin::{self, Whoami, PING_ID, WHOAMI_ID};
use crate::errors::Error;
use crate::exchange::{Origin, OwnedMessage};
use crate::io::{Address, Link, Socket};
use crate::protocol::Session;
use crate::transport::Core;

/// The native half of `gofast.Transport`, which subclasses it: one gofast
/// connection, with its reader and writer threads.
#[pyclass(frozen, subclass, module = "gofast._native", name = "Transport")]
pub struct PyTransport {
    /// Reached through `core()`, which refuses a fork()ed child.
    pub(super) inner: Arc<Core<PyHandler>>,
    /// For a `gofast.aio` transport: its queue and loop (`aio.rs`).
    pub(super) aio: Option<Aio>,
}

impl Drop for PyTransport {
    fn drop(&mut self) {
        // Never joins: this may run with the GIL held. Does nothing in a
        // forked child, whose copy must not touch the parent's connection.
        self.inner.close_nowait();
    }
}

/// The transport's core, unless this process is a fork()ed child of the one
/// that made it: there the connection and its threads are the parent's.
pub(super) fn owned(core: &Arc<Core<PyHandler>>) -> PyResult<&Arc<Core<PyHandler>>> {
    owned_session(core.session())?;
    Ok(core)
}

/// A session (what streams hold), with the same check as `owned`.
pub(super) fn owned_session(
    session: &Arc<Session<PyHandler>>,
) -> PyResult<&Arc<Session<PyHandler>>> {
    if session.in_owner_process() {
        Ok(session)
    } else {
        Err(UsageError::new_err(format!(
            "transport {:?} belongs to the parent process (this is a fork()ed \
             child): make a new transport here",
            session.name
        )))
    }
}

fn whoami_tuple(w: Whoami) -> (String, u64, u64, String) {
    (w.name, w.version, w.buffersize, w.tags)
}

impl PyTransport {
    pub(super) fn core(&self) -> PyResult<&Arc<Core<PyHandler>>> {
        owned(&self.inner)
    }

    pub(super) fn timeout(&self, timeout: Option<f64>) -> PyResult<Option<Duration>> {
        match timeout {
            None => Ok(self.inner.settings().request_timeout),
            Some(t) if t.is_infinite() && t > 0.0 => Ok(None),
            Some(t) => Duration::try_from_secs_f64(t).map(Some).map_err(|_| {
                UsageError::new_err(format!("timeout {t} is not a valid number of seconds"))
            }),
        }
    }

    /// Sends a request and waits for its response without the GIL, waking
    /// now and then for signals; a timeout leaves the opaque quarantined.
    fn round_trip(
        &self,
        py: Python<'_>,
        id: u64,
        data: &[u8],
        compress: bool,
        timeout: Option<Duration>,
    ) -> PyResult<OwnedMessage> {
        let core = self.core()?;
        check_receiving(core)?;
        let limit = timeout.map(|t| (Instant::now() + t, t));
        detach_checked(py, |check| {
            let p = core.send_request(id, data, compress, check)?;
            core.await_response(&p, limit, check)
        })
    }

    pub(super) fn reply_object(
        &self,
        py: Python<'_>,
        reply: OwnedMessage,
        response_type: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        if reply.id == builtin::ERROR_ID && self.inner.errors_ext() {
            // The peer's handler failed (x-errors, docs/protocol.md §9).
            let (t, m) = builtin::decode_error(&reply.data).map_err(Error::Protocol)?;
            return Err(RemoteError::new_err((t, m)));
        }
        let bytes = PyBytes::new(py, &reply.data);
        match response_type {
            Some(t) => Ok(decode_as(reply.id, &bytes, t)?.unbind()),
            None => Ok(Py::new(
                py,
                BinMessage {
                    id: reply.id,
                    data: bytes.unbind(),
                },
            )?
            .into_any()),
        }
    }
}

#[pymethods]
impl PyTransport {
    /// Takes over a connected TCP or Unix socket's file descriptor (the
    /// caller must have detached it) and starts the writer thread. With
    /// `tls`, the side that dialed is the TLS client (verifying
    /// `server_name`), the other the server; the TLS handshake runs in
    /// `handshake()`.
    #[new]
    #[pyo3(signature = (name, fd, version, settings, dialed, tls=None, server_name=None, aio=false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        name: &str,
        fd: RawFd,
        version: u64,
        settings: &Bound<'_, PyDict>,
        dialed: bool,
        tls: Option<PyRef<'_, PyTlsConfig>>,
        server_name: Option<&str>,
        aio: bool,
    ) -> PyResult<Self> {
        if fd < 0 {
            return Err(UsageError::new_err(format!("invalid file descriptor {fd}")));
        }
        // SAFETY: the caller hands us ownership of an open socket fd
        // (socket.detach()); from here on it is closed exactly once, by Rust.
        let sock = unsafe { Socket::from_raw_fd(fd) }.map_err(Error::from)?;
        let s = settings::from_dict(settings::role(dialed), settings)?;
        let tls = match (tls, dialed) {
            (None, _) => None,
            (Some(t), false) => Some(t.inner.server()?),
            (Some(t), true) => {
                let name = server_name.ok_or_else(|| {
                    UsageError::new_err(
                        "a TLS client needs the server's name to verify: \
                         give server_name= (TLS(server_name=...))",
                    )
                })?;
                Some(t.inner.client(name)?)
            }
        };
        let link = Link { socket: sock, tls };
        let handler = PyHandler::default();
        let queue = if aio {
            let queue = AioQueue::new(s.max_pending).map_err(Error::from)?;
            handler.set_aio(queue.clone());
            Some(queue)
        } else {
            None
        };
        if s.shared_reader && queue.is_some() {
            return Err(SettingsError::new_err(
                "setting \"reader\": \"shared\" is for the sync API; a gofast.aio \
                 transport's reads are handed to its event loop",
            ));
        }
        let poller = match s.shared_reader {
            true => Some(super::poller::shared()?),
            false => None,
        };
        let core = Core::new(name, link, version, s, handler)?;
        // The loop reads a plain socket itself (no reader thread).
        let aio = queue.map(|q| Aio::new(q, core.use_caller_reader()));
        if let Some(p) = poller {
            // TLS and idle.timeout keep a reader thread (`use_poller`).
            core.use_poller(p);
        }
        Ok(PyTransport { inner: core, aio })
    }

    /// The name given at connect/accept (it names the stats and log lines).
    #[getter]
    fn name(&self) -> &str {
        self.inner.name()
    }

    /// Whether the transport is closed, by either side or by an error.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// The effective settings (defaults merged with what was given).
    #[getter]
    fn settings<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        settings::to_dict(py, self.inner.settings())
    }

    /// This side's (host, port), or socket path ("" when unnamed), or None
    /// if the socket could not tell.
    #[getter]
    fn local_address(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.inner.local_addr().map(|a| address(py, a)).transpose()
    }

    /// The peer's address, as `local_address`; known after the peer has gone.
    #[getter]
    fn peer_address(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        self.inner.peer_addr().map(|a| address(py, a)).transpose()
    }

    /// Whether the connection runs over TLS.
    #[getter]
    fn tls(&self) -> bool {
        self.inner.is_tls()
    }

    /// The peer's certificate (DER), once the TLS handshake has verified
    /// it; None without TLS or when the peer presented none.
    #[getter]
    fn peer_certificate<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.inner
            .peer_certificate()
            .map(|c| PyBytes::new(py, &c.der))
    }

    /// The subject of the peer's certificate ("CN=client,O=Example").
    #[getter]
    fn peer_subject(&self) -> Option<String> {
        self.inner.peer_certificate().map(|c| c.subject)
    }

    fn _subscribe(&self, py: Python<'_>, id: u64, handler: Py<PyAny>) -> PyResult<()> {
        check_user_id(id)?;
        check_callable(py, &handler)?;
        let old = self.open_core()?.handler().subscribe(id, handler);
        drop(old); // here, not under the handler table's lock
        Ok(())
    }

    fn _subscribe_batch(&self, py: Python<'_>, id: u64, handler: Py<PyAny>) -> PyResult<()> {
        check_user_id(id)?;
        check_callable(py, &handler)?;
        let old = self.open_core()?.handler().subscribe_batch(id, handler);
        drop(old);
        Ok(())
    }

    fn _set_default_handler(&self, py: Python<'_>, handler: Option<Py<PyAny>>) -> PyResult<()> {
        if let Some(h) = &handler {
            check_callable(py, h)?;
        }
        let old = self.open_core()?.handler().set_default(handler);
        drop(old);
        Ok(())
    }

    /// Runs the whoami handshake; returns the peer's (name, version,
    /// buffersize, tags).
    fn _handshake(&self, py: Python<'_>, timeout: f64) -> PyResult<(String, u64, u64, String)> {
        let timeout = Duration::try_from_secs_f64(timeout).map_err(|_| {
            UsageError::new_err(format!(
                "timeout {timeout} is not a valid number of seconds"
            ))
        })?;
        let core = self.core()?;
        let peer = detach_checked(py, |check| core.handshake(timeout, check))?;
        Ok(whoami_tuple(peer))
    }

    /// The peer's whoami from the handshake, if it happened.
    fn _peer(&self) -> Option<(String, u64, u64, String)> {
        self.inner.peer().map(whoami_tuple)
    }

    /// Asks the peer for its whoami again.
    #[pyo3(signature = (timeout = None))]
    fn _whoami(
        &self,
        py: Python<'_>,
        timeout: Option<f64>,
    ) -> PyResult<(String, u64, u64, String)> {
        let ours = self.inner.whoami().encode();
        let reply = self.round_trip(py, WHOAMI_ID, &ours, false, self.timeout(timeout)?)?;
        Ok(whoami_tuple(
            Whoami::decode(&reply.data).map_err(Error::from)?,
        ))
    }

    /// Posts a message: no reply. Queued frames go out when `batchsize`
    /// are waiting, on `flush=True`, or within the flush period. When the
    /// peer stops reading and the send queue is full, it waits for room,
    /// up to `timeout` seconds (None: for as long as it takes).
    #[pyo3(signature = (msg, flush = false, timeout = None))]
    fn post(
        &self,
        py: Python<'_>,
        msg: &Bound<'_, PyAny>,
        flush: bool,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        let core = self.core()?;
        send_message(py, core.session(), msg, timeout, |id, data| {
            core.post(id, data, flush)
        })
    }

    /// Posts many messages in one call (one lock, one wake-up). `timeout`
    /// bounds the whole call; on `Timeout` the earlier messages are queued.
    #[pyo3(signature = (msgs, flush = true, timeout = None))]
    fn post_many(
        &self,
        py: Python<'_>,
        msgs: &Bound<'_, PyAny>,
        flush: bool,
        timeout: Option<f64>,
    ) -> PyResult<usize> {
        let core = self.core()?;
        let deadline = deadline_after(timeout)?;
        let mut n = 0;
        for msg in msgs.try_iter()? {
            let msg = msg?;
            let (id, data) = message_parts(&msg)?;
            let data = lendable(&data);
            send_or_wait(py, core.session(), deadline, || core.post(id, data, false))?;
            n += 1;
        }
        if flush && n > 0 {
            core.flush()?;
        }
        Ok(n)
    }

    /// Sends a request and returns its response: a `BinMessage`, or
    /// `response_type.decode(data)` when a type is given (`ProtocolError` if
    /// the response's id is not the type's `ID`). `timeout` in
    /// seconds; `None` uses settings["request.timeout"]; `math.inf` waits
    /// until the connection ends.
    #[pyo3(signature = (msg, response_type = None, timeout = None))]
    fn request(
        &self,
        py: Python<'_>,
        msg: &Bound<'_, PyAny>,
        response_type: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
    ) -> PyResult<Py<PyAny>> {
        let (id, data) = message_parts(msg)?;
        // The built-ins use reserved ids through round_trip; a user's may not.
        check_user_id(id)?;
        let reply = self.round_trip(py, id, data.as_bytes(), true, self.timeout(timeout)?)?;
        self.reply_object(py, reply, response_type)
    }

    /// Sends all `msgs` as REQUESTs at once (pipelined: one wake-up of the
    /// writer, not one round trip each) and returns their responses in the
    /// same order. `timeout` bounds the whole batch.
    #[pyo3(signature = (msgs, response_type = None, timeout = None))]
    fn request_many(
        &self,
        py: Python<'_>,
        msgs: &Bound<'_, PyAny>,
        response_type: Option<&Bound<'_, PyAny>>,
        timeout: Option<f64>,
    ) -> PyResult<Vec<Py<PyAny>>> {
        let mut parts = Vec::new();
        for msg in msgs.try_iter()? {
            let (id, data) = message_parts(&msg?)?;
            check_user_id(id)?;
            parts.push((id, data));
        }
        let limit = self.timeout(timeout)?.map(|t| (Instant::now() + t, t));
        let frames: Vec<(u64, &[u8])> = parts.iter().map(|(id, d)| (*id, d.as_bytes())).collect();
        let core = self.core()?;
        check_receiving(core)?;
        let pending = detach_checked(py, |check| core.send_requests(&frames, check))?;
        let mut replies = Vec::with_capacity(pending.len());
        for (i, p) in pending.iter().enumerate() {
            // A reply that raises (RemoteError, a wrong type) ends the call
            // like a timeout: the requests after it are given up.
            let reply = detach_checked(py, |check| core.await_response(p, limit, check))
                .and_then(|r| self.reply_object(py, r, response_type));
            match reply {
                Ok(r) => replies.push(r),
                Err(e) => {
                    pending[i + 1..].iter().for_each(|rest| core.expire(rest));
                    return Err(e);
                }
            }
        }
        Ok(replies)
    }

    /// Opens a stream with its first message; `callback(msg)` gets every
    /// message the peer sends on it, then `callback(None)` once at its end.
    /// Without a callback, iterate the returned stream (or `recv()`) instead.
    #[pyo3(signature = (msg, callback = None, flush = true))]
    fn stream(
        &self,
        py: Python<'_>,
        msg: &Bound<'_, PyAny>,
        callback: Option<Py<PyAny>>,
        flush: bool,
    ) -> PyResult<PyStream> {
        let core = self.core()?;
        let (callback, inbox) = match callback {
            Some(cb) if cb.bind(py).is_callable() => (cb, None),
            Some(_) => return Err(UsageError::new_err("the stream callback must be callable")),
            None => {
                let queue = py
                    .import(intern!(py, "queue"))?
                    .getattr(intern!(py, "SimpleQueue"))?
                    .call0()?;
                (
                    queue.getattr(intern!(py, "put"))?.unbind(),
                    Some(queue.unbind()),
                )
            }
        };
        let (id, data) = message_parts(msg)?;
        let data = lendable(&data);
        let sink = StreamSink::with_callback(callback);
        let mut opened = None;
        send_or_wait(py, core.session(), None, || {
            opened = core.open_stream(id, data, sink.clone(), flush)?;
            Ok(opened.is_some())
        })?;
        let opaque = opened.ok_or_else(|| UsageError::new_err("stream was not opened"))?;
        let stream = PyStream::for_stream(core.session().clone(), opaque, Origin::Local, sink);
        Ok(match inbox {
            Some(q) => stream.with_inbox(q),
            None => stream,
        })
    }

    /// Round trip of a ping: returns the echoed text.
    #[pyo3(signature = (echo = "", timeout = None))]
    fn ping(&self, py: Python<'_>, echo: &str, timeout: Option<f64>) -> PyResult<String> {
        // Its length travels in 2 bytes: refuse rather than cut it short.
        if echo.len() > u16::MAX as usize {
            return Err(UsageError::new_err(format!(
                "ping text of {} UTF-8 bytes exceeds the protocol's 65535",
                echo.len()
            )));
        }
        let data = builtin::encode_ping(echo);
        let reply = self.round_trip(py, PING_ID, &data, true, self.timeout(timeout)?)?;
        Ok(builtin::decode_ping(&reply.data).map_err(Error::from)?)
    }

    /// Seconds since the peer's last heartbeat; None before the first one.
    fn silent_since(&self) -> Option<f64> {
        self.inner.silent_since().map(|d| d.as_secs_f64())
    }

    /// Flushes batched frames at least this often (seconds; None: never).
    fn flush_period(&self, seconds: Option<f64>) -> PyResult<()> {
        let period = positive_seconds(seconds)?;
        self.open_core()?.set_flush_period(period);
        Ok(())
    }

    /// Posts a heartbeat to the peer this often (seconds; None: stop).
    fn send_heartbeat(&self, seconds: Option<f64>) -> PyResult<()> {
        let period = positive_seconds(seconds)?;
        self.open_core()?.set_heartbeat(period);
        Ok(())
    }

    /// Writes whatever is queued now.
    fn flush(&self) -> PyResult<()> {
        Ok(self.core()?.flush()?)
    }

    /// This transport's counters (docs/protocol.md §5 names).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in self.inner.stats.snapshot() {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    /// (opaques held by exchanges this side started, streams the peer opened)
    fn _exchanges_in_use(&self) -> PyResult<(usize, usize)> {
        Ok(self.core()?.exchanges_in_use())
    }

    /// The peer's requests handed to a handler and not answered yet (a
    /// server's graceful stop waits for them).
    fn _requests_unanswered(&self) -> PyResult<usize> {
        Ok(self.core()?.handler().unanswered())
    }

    // ---- gofast.aio (see aio.rs and aio_transport.rs) --------------------

    /// The eventfd the loop watches (`loop.add_reader`).
    fn _aio_fd(&self) -> PyResult<i32> {
        Ok(self.aio()?.queue.fd())
    }

    /// Binds to `event_loop` (once); `on_closed()` runs on it at the end.
    fn _aio_bind(
        &self,
        py: Python<'_>,
        event_loop: Py<PyAny>,
        on_closed: Py<PyAny>,
    ) -> PyResult<()> {
        self.aio_bind(py, event_loop, on_closed)
    }

    /// Raises `UsageError` unless called on the loop the transport is bound to.
    fn _aio_check(&self, py: Python<'_>) -> PyResult<()> {
        self.aio_check(py).map(|_| ())
    }

    /// Runs what arrived since the last call (the loop's reader callback).
    fn _aio_drain(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::aio_drain(slf)
    }

    /// The socket's fd if the loop reads it itself (`_aio_watcher()` when
    /// it is readable, from `_aio_read_here`), else -1.
    fn _aio_socket_fd(&self) -> PyResult<i32> {
        Ok(self.aio()?.read_fd())
    }

    /// Makes the calling loop the reader (before the handshake): returns
    /// the fd to watch with `_aio_watcher()`, or None when a reader thread
    /// reads (TLS, `idle.timeout`) or the transport is closed.
    fn _aio_read_here(&self, py: Python<'_>) -> PyResult<Option<i32>> {
        self.aio_check(py)?;
        let fd = self.aio()?.read_fd();
        if fd < 0 || self.inner.start_caller_reading().is_err() {
            return Ok(None); // the handshake says why it cannot start
        }
        Ok(Some(fd))
    }

    /// What the loop calls when the socket is readable (it reads it once
    /// and runs what arrived); the transport ends when the loop drops it
    /// (the loop was closed), unless paused.
    fn _aio_watcher(slf: &Bound<'_, Self>) -> PyResult<super::aio_transport::AioWatch> {
        Self::aio_watch(slf)
    }

    /// The loop will stop watching the socket for a while (and come back
    /// with a new `_aio_watcher()`): its watch's drop does not end it.
    fn _aio_pause_reading(&self) -> PyResult<()> {
        let aio = self.aio()?;
        aio.watch_paused.store(true, Ordering::Release);
        Ok(())
    }

    /// An awaitable posting `msg` (ready at once when it was queued).
    #[pyo3(signature = (msg, flush = false))]
    fn _aio_post(
        slf: &Bound<'_, Self>,
        msg: &Bound<'_, PyAny>,
        flush: bool,
    ) -> PyResult<Py<PyAny>> {
        Self::aio_post(slf, msg, flush)
    }

    /// Queues a POST without waiting: False while the send queue is full.
    #[pyo3(signature = (msg, flush = false))]
    fn _try_post(&self, py: Python<'_>, msg: &Bound<'_, PyAny>, flush: bool) -> PyResult<bool> {
        self.try_post(py, msg, flush)
    }

    /// Sends a REQUEST whose reply resolves `future`: its opaque, or None
    /// when the send queue is full (nothing sent).
    #[pyo3(signature = (msg, future, response_type = None, timeout = None))]
    fn _aio_request(
        slf: &Bound<'_, Self>,
        msg: &Bound<'_, PyAny>,
        future: Py<PyAny>,
        response_type: Option<Py<PyAny>>,
        timeout: Option<f64>,
    ) -> PyResult<Option<u64>> {
        Self::aio_user_request(slf, msg, future, response_type, timeout)
    }

    /// A ping whose echo resolves `future` (as `_aio_request`).
    #[pyo3(signature = (echo, future, timeout = None))]
    fn _aio_ping(
        slf: &Bound<'_, Self>,
        echo: &str,
        future: Py<PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Option<u64>> {
        if echo.len() > u16::MAX as usize {
            return Err(UsageError::new_err(format!(
                "ping text of {} UTF-8 bytes exceeds the protocol's 65535",
                echo.len()
            )));
        }
        let data = builtin::encode_ping(echo);
        Self::aio_builtin(slf, PING_ID, &data, future, timeout)
    }

    /// A whoami whose (name, version, buffersize, tags) resolves `future`.
    #[pyo3(signature = (future, timeout = None))]
    fn _aio_whoami(
        slf: &Bound<'_, Self>,
        future: Py<PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Option<u64>> {
        let data = slf.get().whoami_data();
        Self::aio_builtin(slf, WHOAMI_ID, &data, future, timeout)
    }

    /// Gives up the request `opaque` (its task was cancelled).
    fn _aio_cancel(&self, opaque: u64) -> PyResult<()> {
        self.aio_cancel(opaque)
    }

    /// The request timer's callback.
    fn _aio_expire(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::aio_expire(slf)
    }

    /// Opens a stream whose messages go to `callback` on the loop; None
    /// when the send queue is full.
    #[pyo3(signature = (msg, callback, flush = true))]
    fn _aio_stream(
        &self,
        py: Python<'_>,
        msg: &Bound<'_, PyAny>,
        callback: Py<PyAny>,
        flush: bool,
    ) -> PyResult<Option<PyStream>> {
        self.aio_open_stream(py, msg, callback, flush)
    }

    /// What a REQUEST handler's coroutine ended with (`exc`: it raised).
    #[pyo3(signature = (stream, id, result, exc = None))]
    fn _aio_finish_request(
        &self,
        py: Python<'_>,
        stream: &Bound<'_, PyStream>,
        id: u64,
        result: Py<PyAny>,
        exc: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        self.finish_request(py, stream, id, result, exc)
    }

    /// Logs and counts a handler's exception, as for one on the reader.
    fn _report(&self, py: Python<'_>, what: &str, exc: &Bound<'_, PyAny>) {
        self.report_error(py, what, exc)
    }

    /// Waits (without the GIL) up to `seconds` for room in the send queue.
    fn _wait_room(&self, py: Python<'_>, seconds: f64) -> PyResult<()> {
        let core = self.core()?;
        let until = Instant::now() + Duration::from_secs_f64(seconds.clamp(0.0, 3600.0));
        py.detach(|| core.wait_room(until));
        Ok(())
    }

    /// Flushes, closes the connection, fails pending requests with
    /// ConnectionClosed and ends open streams (callback(None)). Idempotent.
    /// In a fork()ed child it does nothing: the connection is the parent's.
    fn close(&self, py: Python<'_>) {
        let core = &self.inner;
        py.detach(|| core.close(CLOSED_HERE));
    }
}

/// Why calls fail after `close()` on this side.
const CLOSED_HERE: &str = "closed by this side";

impl PyTransport {
    /// `core()`, and not closed.
    fn open_core(&self) -> PyResult<&Arc<Core<PyHandler>>> {
        let core = self.core()?;
        if core.is_closed() {
            return Err(Error::Closed(core.close_reason()).into());
        }
        Ok(core)
    }
}

/// An address as Python's socket module gives it.
fn address(py: Python<'_>, a: &Address) -> PyResult<Py<PyAny>> {
    Ok(match a {
        Address::Inet(a) => (a.ip().to_string(), a.port())
            .into_pyobject(py)?
            .into_any()
            .unbind(),
        Address::Unix(path) => {
            let p = path
                .as_ref()
                .map_or(String::new(), |p| p.display().to_string());
            p.into_pyobject(py)?.into_any().unbind()
        }
    })
}

fn check_callable(py: Python<'_>, handler: &Py<PyAny>) -> PyResult<()> {
    if handler.bind(py).is_callable() {
        return Ok(());
    }
    Err(UsageError::new_err(format!(
        "a handler must be callable, not {}",
        handler.bind(py).get_type()
    )))
}

/// A request before `handshake()` could never get its RESPONSE: nothing
/// reads the socket yet.
fn check_receiving(core: &Core<PyHandler>) -> PyResult<()> {
    if core.is_receiving() || core.is_closed() {
        return Ok(());
    }
    Err(UsageError::new_err(
        "call handshake() first: before it nothing receives the RESPONSE",
    ))
}

fn positive_seconds(seconds: Option<f64>) -> PyResult<Option<Duration>> {
    match seconds {
        None => Ok(None),
        Some(s) if s > 0.0 => Duration::try_from_secs_f64(s)
            .map(Some)
            .map_err(|_| SettingsError::new_err(format!("{s} is not a valid number of seconds"))),
        Some(s) => Err(SettingsError::new_err(format!(
            "period must be positive, got {s}"
        ))),
    }
}

/// Refuses message id 0 and the reserved built-in ids (0x1000..0x100F).
pub(super) fn check_user_id(id: u64) -> PyResult<()> {
    if builtin::is_reserved(id) || id == 0 {
        return Err(UsageError::new_err(format!(
            "message id {id:#x} is reserved or invalid"
        )));
    }
    Ok(())
}
