//! The native transport's asyncio calls (see `aio.rs`): what the loop
//! drains, requests resolved through futures, their timeouts, and sends
//! that never wait on the loop's thread.

use std::borrow::Cow;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pyo3::intern;
use pyo3::prelude::*;

use super::aio::{self, Aio, Event, Reply, Waiting};
use super::aio_inbox::AioInbox;
use super::errors::{ConnectionClosed, UsageError};
use super::handler::{report, tell_peer, PyHandler};
use super::message::{lendable, message_parts, BinMessage};
use super::stream::{PyStream, StreamSink};
use super::transport::{check_user_id, PyTransport};
use crate::builtin::{self, Whoami, PING_ID};
use crate::codec::{Kind, Message};
use crate::errors::Error;
use crate::exchange::{Origin, OwnedMessage, SlotWaker};
use crate::protocol::{PendingRequest, Session};
use crate::stats::Stats;

/// A timer may fire this much early (uvloop counts in milliseconds).
const TIMER_SLACK: Duration = Duration::from_millis(2);

/// What the loop calls when the socket it reads is readable. Dropped by
/// the loop when it stops watching: by `Closed` (the transport has ended),
/// or with the loop itself when it is closed while the transport is open.
/// Then nothing will read the socket again, not even the peer's close, so
/// the transport ends here (as a reader thread would at that close),
/// unless the watch was paused on purpose (`_aio_pause_reading`).
#[pyclass(frozen, module = "gofast._native", name = "AioWatch")]
pub struct AioWatch {
    transport: Py<PyTransport>,
}

#[pymethods]
impl AioWatch {
    fn __call__(&self, py: Python<'_>) -> PyResult<()> {
        PyTransport::aio_readable(self.transport.bind(py))
    }
}

impl Drop for AioWatch {
    fn drop(&mut self) {
        let t = self.transport.get();
        let paused = t
            .aio
            .as_ref()
            .is_some_and(|a| a.watch_paused.load(Ordering::Acquire));
        if !paused {
            t.inner.close_nowait(); // nothing if it has ended already
        }
    }
}

impl PyTransport {
    /// A new `AioWatch` for the loop to call; un-pauses.
    pub(super) fn aio_watch(slf: &Bound<'_, Self>) -> PyResult<AioWatch> {
        let aio = slf.get().aio()?;
        aio.watch_paused.store(false, Ordering::Release);
        Ok(AioWatch {
            transport: slf.clone().unbind(),
        })
    }

    pub(super) fn aio(&self) -> PyResult<&Aio> {
        self.aio
            .as_ref()
            .ok_or_else(|| UsageError::new_err("not a gofast.aio transport"))
    }

    /// The loop this transport is bound to, if the running one is it.
    pub(super) fn aio_check<'py>(&self, py: Python<'py>) -> PyResult<&Aio> {
        // In a fork()ed child say so, rather than that the loop is another.
        self.core()?;
        let aio = self.aio()?;
        if aio.queue.on_loop_thread() {
            // Only the bound loop can be running on its thread: no need to
            // ask asyncio (`_get_running_loop` makes a getpid() system call
            // on Python 3.11, a fifth of an awaited post).
            return Ok(aio);
        }
        let running = aio::running_loop(py)?;
        match aio.bound.get(py) {
            Some(l) if l.bind(py).is(&running) => Ok(aio),
            Some(_) if running.is_none() => Err(UsageError::new_err(format!(
                "gofast.aio transport {:?} is used outside its event loop: await it \
                 in a coroutine on the loop it was made on",
                self.inner.name()
            ))),
            Some(_) => Err(UsageError::new_err(format!(
                "gofast.aio transport {:?} is bound to another event loop (the one it \
                 was first used on); make a transport on this loop instead",
                self.inner.name()
            ))),
            None => Err(UsageError::new_err(
                "gofast.aio transport is not bound to a loop",
            )),
        }
    }

    pub(super) fn aio_bind(
        &self,
        py: Python<'_>,
        event_loop: Py<PyAny>,
        on_closed: Py<PyAny>,
    ) -> PyResult<()> {
        let aio = self.aio()?;
        let bound = aio.bound.get_or_init(py, || event_loop.clone_ref(py));
        if !bound.bind(py).is(event_loop.bind(py)) {
            return Err(UsageError::new_err(
                "gofast.aio transport is bound to another event loop",
            ));
        }
        let _ = aio.on_closed.set(py, on_closed);
        aio.queue
            .bind_loop(py, event_loop.bind(py), self.inner.session())
    }

    /// Queues a REQUEST whose RESPONSE resolves `future`: its opaque, or
    /// None when the send queue is full (nothing sent: wait, retry).
    pub(super) fn aio_request_raw(
        slf: &Bound<'_, Self>,
        id: u64,
        data: &[u8],
        future: Py<PyAny>,
        reply: Reply,
        timeout: Option<f64>,
    ) -> PyResult<Option<u64>> {
        let py = slf.py();
        let me = slf.get();
        let aio = me.aio_check(py)?;
        let core = me.core()?;
        if !core.is_receiving() && !core.is_closed() {
            return Err(UsageError::new_err(
                "await handshake() first: before it nothing receives the RESPONSE",
            ));
        }
        let timeout = me.timeout(timeout)?;
        let waker: Arc<dyn SlotWaker> = aio.queue.clone();
        let session = core.session();
        let sent = aio::send_on_loop(py, session, || session.try_request(id, data, true, &waker));
        let Some(p) = sent? else {
            return Ok(None);
        };
        let deadline = timeout.map(|t| (Instant::now() + t, t));
        let reschedule = {
            let mut side = aio.side.lock();
            side.waiting.insert(
                p.opaque,
                Waiting {
                    slot: p.slot.clone(),
                    future,
                    reply,
                    deadline,
                },
            );
            match (deadline, &side.timer) {
                (None, _) => None,
                (Some((d, _)), Some((when, _))) if *when <= d => None,
                (Some((d, _)), _) => Some(d),
            }
        };
        if let Some(d) = reschedule {
            me.schedule_expiry(slf, aio, d)?;
        }
        Ok(Some(p.opaque))
    }

    /// Sets the expiry timer to fire at `when` (replacing a later one).
    fn schedule_expiry(&self, slf: &Bound<'_, Self>, aio: &Aio, when: Instant) -> PyResult<()> {
        let py = slf.py();
        let Some(lp) = aio.bound.get(py) else {
            return Ok(());
        };
        let delay = when.saturating_duration_since(Instant::now()).as_secs_f64();
        let cb = slf.getattr(intern!(py, "_aio_expire"))?;
        let handle = lp.call_method1(py, intern!(py, "call_later"), (delay, cb))?;
        let old = aio.side.lock().timer.replace((when, handle));
        if let Some((_, h)) = old {
            h.call_method0(py, intern!(py, "cancel"))?;
        }
        Ok(())
    }

    /// The timer fired: fails the requests past their deadline with
    /// `Timeout` (their late RESPONSEs will be dropped) and sets the timer
    /// for the next deadline.
    pub(super) fn aio_expire(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let aio = me.aio()?;
        let now = Instant::now() + TIMER_SLACK;
        let (due, next) = {
            let mut side = aio.side.lock();
            let old = side.timer.take();
            let due: Vec<u64> = side
                .waiting
                .iter()
                .filter(|(_, w)| w.deadline.is_some_and(|(d, _)| d <= now) && !w.slot.is_ready())
                .map(|(o, _)| *o)
                .collect();
            let due: Vec<(u64, Waiting)> = due
                .into_iter()
                .filter_map(|o| side.waiting.remove(&o).map(|w| (o, w)))
                .collect();
            let next = side
                .waiting
                .values()
                .filter_map(|w| w.deadline.map(|(d, _)| d))
                .min();
            (due, (next, old))
        };
        let (next, old) = next;
        drop(old);
        let session = me.inner.session();
        for (opaque, w) in due {
            session.expire(&PendingRequest {
                opaque,
                slot: w.slot.clone(),
            });
            let t = w.deadline.map_or(Duration::ZERO, |(_, t)| t);
            let err = PyErr::from(Error::Timeout(t));
            settle(py, &w.future, Err(err));
        }
        if let Some(d) = next {
            me.schedule_expiry(slf, aio, d)?;
        }
        Ok(())
    }

    /// The requester's task was cancelled: the request is given up as for
    /// a timeout (a RESPONSE already in, or arriving later, is dropped and
    /// counted).
    pub(super) fn aio_cancel(&self, opaque: u64) -> PyResult<()> {
        let aio = self.aio()?;
        let Some(w) = aio.side.lock().waiting.remove(&opaque) else {
            return Ok(());
        };
        let session = self.inner.session();
        match w.slot.take() {
            Some(Ok(m)) => {
                // It came, but nobody wants it any more: a late RESPONSE.
                Stats::incr(&session.stats.n_timeouts);
                session.stats.drop_frame(m.data.len());
            }
            Some(Err(_)) => {}
            None => session.expire(&PendingRequest {
                opaque,
                slot: w.slot.clone(),
            }),
        }
        Ok(())
    }

    /// The loop's callback for a readable socket it reads itself: one
    /// read without the GIL (`read_ready` waits for the read side only
    /// detached), then the drain of what it queued, with no eventfd between.
    pub(super) fn aio_readable(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let core = me.inner.clone();
        if py.detach(|| core.read_ready()) {
            // Reading has ended: stop watching now rather than be called for
            // the shut socket until `Closed` is drained (which stops again).
            let aio = me.aio()?;
            let fd = aio.read_fd();
            if let (Some(lp), true) = (aio.bound.get(py), fd >= 0) {
                lp.call_method1(py, intern!(py, "remove_reader"), (fd,))?;
            }
        }
        Self::aio_drain(slf)
    }

    /// Runs everything the reader queued since the last drain, in order.
    pub(super) fn aio_drain(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let aio = me.aio()?;
        let events = aio.queue.take();
        let session = me.inner.session();
        // What the handlers send goes out in one write after the batch.
        session.corked(|| {
            for ev in events {
                let done = match ev {
                    Event::Post { id, data } => on_post(slf, session, id, &data),
                    Event::Posts { id, msgs } => on_posts(slf, session, id, msgs),
                    Event::Request { opaque, id, data } => {
                        on_request(slf, session, opaque, id, &data)
                    }
                    Event::StreamStart {
                        opaque,
                        id,
                        data,
                        sink,
                    } => on_stream_start(slf, session, opaque, id, &data, &sink),
                    Event::StreamMsg { sink, msg, len } => {
                        on_stream_msg(slf, session, &sink, msg, len)
                    }
                    Event::Response(opaque) => me.on_response(py, aio, opaque),
                    Event::Closed => me.on_closed(py, aio),
                };
                // One event's failure (a MemoryError, say) must not lose the
                // events after it: a Closed among them ends every await.
                if let Err(e) = done {
                    report(py, session, "gofast.aio event", e);
                }
            }
        });
        Ok(())
    }

    fn on_response(&self, py: Python<'_>, aio: &Aio, opaque: u64) -> PyResult<()> {
        let Some(w) = aio.side.lock().waiting.remove(&opaque) else {
            return Ok(()); // given up already (and counted), or not ours
        };
        let Some(value) = w.slot.take() else {
            return Ok(());
        };
        let len = value.as_ref().map_or(0, |m| m.data.len());
        let result = match value {
            Ok(m) => self.convert(py, m, &w.reply),
            Err(e) => Err(PyErr::from(e)),
        };
        if !settle(py, &w.future, result) {
            // Cancelled meanwhile (before its task could give it up).
            let st = &self.inner.session().stats;
            Stats::incr(&st.n_timeouts);
            st.drop_frame(len);
        }
        Ok(())
    }

    fn convert(&self, py: Python<'_>, m: OwnedMessage, reply: &Reply) -> PyResult<Py<PyAny>> {
        match reply {
            Reply::User(rt) => self.reply_object(py, m, rt.as_ref().map(|t| t.bind(py))),
            Reply::Ping => {
                let text = builtin::decode_ping(&m.data).map_err(Error::from)?;
                Ok(text.into_pyobject(py)?.into_any().unbind())
            }
            Reply::Whoami => {
                let w = Whoami::decode(&m.data).map_err(Error::from)?;
                let t = (w.name, w.version, w.buffersize, w.tags);
                Ok(t.into_pyobject(py)?.into_any().unbind())
            }
        }
    }

    fn on_closed(&self, py: Python<'_>, aio: &Aio) -> PyResult<()> {
        let (left, timer) = {
            let mut side = aio.side.lock();
            let left: Vec<Waiting> = side.waiting.drain().map(|(_, w)| w).collect();
            (left, side.timer.take())
        };
        let reason = self.inner.close_reason();
        for w in left {
            settle(
                py,
                &w.future,
                Err(ConnectionClosed::new_err(reason.clone())),
            );
        }
        if let Some((_, h)) = timer {
            h.call_method0(py, intern!(py, "cancel"))?;
        }
        self.inner.handler().clear();
        if let Some(cb) = aio.on_closed.get(py) {
            cb.call0(py)?; // the loop stops watching the eventfd and socket
        }
        aio.queue.release_fd();
        let link = aio.read_link.lock().take();
        drop(link); // its fd closes once the writer has let go too
        Ok(())
    }

    /// Posts without waiting: the `Ready` awaitable when queued, else a
    /// coroutine that waits for room (the peer is not reading) and retries.
    pub(super) fn aio_post(
        slf: &Bound<'_, Self>,
        msg: &Bound<'_, PyAny>,
        flush: bool,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let me = slf.get();
        me.aio_check(py)?;
        if me.try_post(py, msg, flush)? {
            return aio::ready(py);
        }
        Ok(aio::drive(py)?
            .call_method1(intern!(py, "post_later"), (slf, msg, flush))?
            .unbind())
    }

    pub(super) fn try_post(
        &self,
        py: Python<'_>,
        msg: &Bound<'_, PyAny>,
        flush: bool,
    ) -> PyResult<bool> {
        let core = self.core()?;
        let (id, data) = message_parts(msg)?;
        let data = lendable(&data);
        Ok(aio::send_on_loop(py, core.session(), || {
            core.post(id, data, flush)
        })?)
    }

    /// Opens a stream whose messages go to `callback` (called on the loop);
    /// None when the send queue is full.
    pub(super) fn aio_open_stream(
        &self,
        py: Python<'_>,
        msg: &Bound<'_, PyAny>,
        callback: Py<PyAny>,
        flush: bool,
    ) -> PyResult<Option<PyStream>> {
        self.aio_check(py)?;
        let core = self.core()?;
        let (id, data) = message_parts(msg)?;
        let sink = StreamSink::with_callback(callback);
        let data = lendable(&data);
        let opened = aio::send_on_loop(py, core.session(), || {
            core.open_stream(id, data, sink.clone(), flush)
        })?;
        Ok(opened.map(|o| PyStream::for_stream(core.session().clone(), o, Origin::Local, sink)))
    }

    /// Runs what a REQUEST handler's coroutine ended with: `exc` (raised)
    /// is reported and told to the peer, else the reply is checked.
    pub(super) fn finish_request(
        &self,
        py: Python<'_>,
        stream: &Bound<'_, PyStream>,
        id: u64,
        result: Py<PyAny>,
        exc: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let session = self.inner.session();
        let outcome = match exc {
            Some(e) => {
                let err = PyErr::from_value(e.clone());
                report(
                    py,
                    session,
                    &format!("handler for message id {id}"),
                    err.clone_ref(py),
                );
                Err(err)
            }
            None => Ok(result),
        };
        let stream = stream.clone().unbind();
        aio::send_on_loop(py, session, || {
            session
                .handler()
                .finish_request(py, session, &stream, id, outcome)
        });
        Ok(())
    }

    pub(super) fn report_error(&self, py: Python<'_>, what: &str, exc: &Bound<'_, PyAny>) {
        report(
            py,
            self.inner.session(),
            what,
            PyErr::from_value(exc.clone()),
        );
    }

    /// A ping or whoami through the loop.
    pub(super) fn aio_builtin(
        slf: &Bound<'_, Self>,
        id: u64,
        data: &[u8],
        future: Py<PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Option<u64>> {
        let reply = if id == PING_ID {
            Reply::Ping
        } else {
            Reply::Whoami
        };
        Self::aio_request_raw(slf, id, data, future, reply, timeout)
    }

    pub(super) fn aio_user_request(
        slf: &Bound<'_, Self>,
        msg: &Bound<'_, PyAny>,
        future: Py<PyAny>,
        response_type: Option<Py<PyAny>>,
        timeout: Option<f64>,
    ) -> PyResult<Option<u64>> {
        let (id, data) = message_parts(msg)?;
        check_user_id(id)?;
        let reply = Reply::User(response_type);
        Self::aio_request_raw(slf, id, data.as_bytes(), future, reply, timeout)
    }

    pub(super) fn whoami_data(&self) -> Vec<u8> {
        self.inner.whoami().encode()
    }
}

/// Resolves `future` (unless it is done: cancelled); whether it was.
fn settle(py: Python<'_>, future: &Py<PyAny>, result: PyResult<Py<PyAny>>) -> bool {
    let set = match result {
        Ok(v) => future.call_method1(py, intern!(py, "set_result"), (v,)),
        Err(e) => future.call_method1(py, intern!(py, "set_exception"), (e.into_value(py),)),
    };
    set.is_ok()
}

/// A handler's coroutine, run as a task that reports its exception.
fn spawn(slf: &Bound<'_, PyTransport>, coro: Py<PyAny>, what: String) -> PyResult<()> {
    let py = slf.py();
    aio::drive(py)?.call_method1(intern!(py, "spawn"), (coro, slf, what))?;
    Ok(())
}

fn wire<'a>(id: u64, data: &'a [u8]) -> Message<'a> {
    Message {
        id,
        data: Cow::Borrowed(data),
    }
}

fn on_post(
    slf: &Bound<'_, PyTransport>,
    session: &Arc<Session<PyHandler>>,
    id: u64,
    data: &[u8],
) -> PyResult<()> {
    let py = slf.py();
    let h = session.handler();
    let Some(f) = h.lookup(id) else {
        session.stats.drop_frame(data.len()); // unsubscribed meanwhile
        return Ok(());
    };
    if let Ok(r) = h.call(py, session, &f, None, &wire(id, data)) {
        if !r.is_none(py) && aio::is_coroutine(py, r.bind(py))? {
            spawn(slf, r, format!("handler for message id {id}"))?;
        }
    }
    Ok(())
}

fn on_posts(
    slf: &Bound<'_, PyTransport>,
    session: &Arc<Session<PyHandler>>,
    id: u64,
    msgs: Vec<Vec<u8>>,
) -> PyResult<()> {
    let py = slf.py();
    let Some(f) = session.handler().batch_handler(id) else {
        return Ok(());
    };
    let list = msgs
        .iter()
        .map(|d| BinMessage::from_wire(py, &wire(id, d)))
        .collect::<PyResult<Vec<_>>>()?;
    let what = format!("batch handler for message id {id}");
    match f.call1(py, (list,)) {
        Ok(r) if !r.is_none(py) && aio::is_coroutine(py, r.bind(py))? => spawn(slf, r, what)?,
        Ok(_) => {}
        Err(e) => report(py, session, &what, e),
    }
    Ok(())
}

fn on_request(
    slf: &Bound<'_, PyTransport>,
    session: &Arc<Session<PyHandler>>,
    opaque: u64,
    id: u64,
    data: &[u8],
) -> PyResult<()> {
    let py = slf.py();
    let h = session.handler();
    let stream = Py::new(py, PyStream::for_request(session.clone(), opaque))?;
    let Some(f) = h.lookup(id) else {
        let why = format!("no handler for message id {id}");
        session.send_error(Kind::Request, opaque, "NoHandler", &why);
        session.stats.drop_frame(data.len());
        return Ok(());
    };
    let called = h.call(py, session, &f, Some(&stream), &wire(id, data));
    if let Ok(r) = &called {
        if !r.is_none(py) && aio::is_coroutine(py, r.bind(py))? {
            let args = (r.clone_ref(py), stream, slf, id);
            aio::drive(py)?.call_method1(intern!(py, "request"), args)?;
            return Ok(());
        }
    }
    h.finish_request(py, session, &stream, id, called);
    Ok(())
}

fn on_stream_start(
    slf: &Bound<'_, PyTransport>,
    session: &Arc<Session<PyHandler>>,
    opaque: u64,
    id: u64,
    data: &[u8],
    sink: &Arc<StreamSink>,
) -> PyResult<()> {
    let py = slf.py();
    let failed = |e: PyErr| {
        report(
            py,
            session,
            &format!("handler for message id {id}"),
            e.clone_ref(py),
        );
        tell_peer(py, session, Kind::StreamMsg, opaque, &e);
        let _ = session.stream_close(opaque, Origin::Remote);
    };
    let Some(f) = session.handler().lookup(id) else {
        failed(UsageError::new_err(format!(
            "no handler for message id {id}"
        )));
        return Ok(());
    };
    let stream = PyStream::for_stream(session.clone(), opaque, Origin::Remote, sink.clone());
    let stream = Py::new(py, stream)?;
    let msg = BinMessage::from_wire(py, &wire(id, data))?;
    let started = aio::drive(py)?.call_method1(
        intern!(py, "stream_start"),
        (slf, f.as_ref().clone_ref(py), stream, msg),
    );
    match started {
        Ok(cb) if !cb.is_none() => {
            let _ = sink.callback.set(cb.unbind());
        }
        Ok(_) => {}
        Err(e) => failed(e),
    }
    Ok(())
}

fn on_stream_msg(
    slf: &Bound<'_, PyTransport>,
    session: &Arc<Session<PyHandler>>,
    sink: &Arc<StreamSink>,
    msg: Option<(u64, Vec<u8>)>,
    len: usize,
) -> PyResult<()> {
    let py = slf.py();
    let Some(cb) = sink.callback.get() else {
        if msg.is_some() {
            session.stats.drop_frame(len); // nothing listens on that stream
        }
        return Ok(());
    };
    let msg = match &msg {
        Some((id, data)) => Some(BinMessage::from_wire(py, &wire(*id, data))?.into_any()),
        None => None,
    };
    let called = match cb.bind(py).cast::<AioInbox>() {
        // A stream read with `async for`/`recv()`: no Python call.
        Ok(inbox) => inbox
            .get()
            .deliver(py, msg)
            .map(|r| r.unwrap_or_else(|| py.None())),
        Err(_) => cb.call1(py, (msg.unwrap_or_else(|| py.None()),)),
    };
    match called {
        Ok(r) if !r.is_none(py) && aio::is_coroutine(py, r.bind(py))? => {
            spawn(slf, r, "stream callback".into())?
        }
        Ok(_) => {}
        Err(e) => report(py, session, "stream callback", e),
    }
    Ok(())
}
