//! The inbox of a `gofast.aio` stream read with `async for` or `recv()`:
//! the drain puts each message straight in (no Python call per message),
//! and `__anext__` hands it out as a pre-completed awaitable (no coroutine
//! per message). Only when the inbox is empty does a reader get a future,
//! which the next message completes.
//!
//! Locks: `AioInbox::state` is a leaf, taken only on the loop's thread with
//! the GIL held; nothing calls Python while it is held (futures are
//! completed and callbacks called after it is let go).

use std::collections::VecDeque;

use pyo3::exceptions::{PyStopAsyncIteration, PyStopIteration};
use pyo3::intern;
use pyo3::prelude::*;

use super::stream::PyStream;
use crate::sync::Mutex;

/// What a waiting reader wants at the end of the stream.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `recv()`: None.
    Recv,
    /// `__anext__`: StopAsyncIteration.
    Iter,
}

#[derive(Default)]
struct State {
    items: VecDeque<Py<PyAny>>,
    /// The peer closed its side (or the stream was cut): after `items`.
    ended: bool,
    /// Readers waiting on an empty inbox, first come first served.
    waiters: VecDeque<(Py<PyAny>, Mode)>,
    /// Where messages go instead (a callable an `async def` stream handler
    /// returned): set once, later messages are forwarded.
    forward: Option<Py<PyAny>>,
    /// The stream, for why it ended early (its `error`).
    stream: Option<Py<PyStream>>,
}

/// A stream's incoming messages, for the loop it was made on.
#[pyclass(frozen, module = "gofast._native", name = "AioInbox")]
pub struct AioInbox {
    event_loop: Py<PyAny>,
    state: Mutex<State>,
}

/// What `deliver` found to do once the lock is let go.
enum Then {
    Nothing,
    Forward(Py<PyAny>),
    Wake(Vec<(Py<PyAny>, Mode)>),
}

impl AioInbox {
    /// Takes one message (None: the end) from the drain. Returns what a
    /// forwarding callable returned (the drain runs a coroutine as a task).
    pub fn deliver(
        &self,
        py: Python<'_>,
        mut msg: Option<Py<PyAny>>,
    ) -> PyResult<Option<Py<PyAny>>> {
        let then = {
            let mut st = self.state.lock();
            if let Some(f) = &st.forward {
                Then::Forward(f.clone_ref(py))
            } else if msg.is_none() {
                st.ended = true;
                Then::Wake(st.waiters.drain(..).collect())
            } else if st.waiters.is_empty() {
                st.items.extend(msg.take());
                Then::Nothing
            } else {
                Then::Wake(st.waiters.drain(..).collect())
            }
        };
        match then {
            Then::Nothing => Ok(None),
            Then::Forward(f) => {
                let arg = msg.unwrap_or_else(|| py.None());
                f.call1(py, (arg,)).map(Some)
            }
            Then::Wake(waiters) => {
                self.wake(py, waiters, msg)?;
                Ok(None)
            }
        }
    }

    /// Gives `msg` (or the end) to the first waiter still waiting; the
    /// others wait on (the end goes to all of them).
    fn wake(
        &self,
        py: Python<'_>,
        waiters: Vec<(Py<PyAny>, Mode)>,
        mut msg: Option<Py<PyAny>>,
    ) -> PyResult<()> {
        let at_end = msg.is_none();
        let mut left = Vec::new();
        for (fut, mode) in waiters {
            let f = fut.bind(py);
            if f.call_method0(intern!(py, "done"))?.is_truthy()? {
                continue; // cancelled (a timeout): it wants nothing now
            }
            if at_end {
                match (self.end_error(py), mode) {
                    (Some(e), _) => f.call_method1(intern!(py, "set_exception"), (e,))?,
                    (None, Mode::Recv) => {
                        f.call_method1(intern!(py, "set_result"), (py.None(),))?
                    }
                    (None, Mode::Iter) => {
                        let stop = PyStopAsyncIteration::new_err(()).into_value(py);
                        f.call_method1(intern!(py, "set_exception"), (stop,))?
                    }
                };
            } else if let Some(m) = msg.take() {
                f.call_method1(intern!(py, "set_result"), (m,))?;
            } else {
                left.push((fut, mode));
            }
        }
        let mut st = self.state.lock();
        // Nobody took it: it is the first in line (the inbox was empty).
        st.items.extend(msg);
        for w in left.into_iter().rev() {
            st.waiters.push_front(w);
        }
        Ok(())
    }

    /// Why the stream ended early, as the exception to raise; None if the
    /// peer just closed its side.
    fn end_error(&self, py: Python<'_>) -> Option<PyErr> {
        let stream = self.state.lock().stream.as_ref().map(|s| s.clone_ref(py))?;
        stream.get().cut_error()
    }

    /// The next message as an awaitable: ready at once when one is in,
    /// else a future of the loop's that the next delivery completes.
    fn next(&self, py: Python<'_>, mode: Mode) -> PyResult<Py<PyAny>> {
        let ended = {
            let mut st = self.state.lock();
            if let Some(m) = st.items.pop_front() {
                return Ok(Py::new(py, ReadyValue { value: m })?.into_any());
            }
            st.ended
        };
        if ended {
            return match (self.end_error(py), mode) {
                (Some(e), _) => Err(e),
                (None, Mode::Recv) => Ok(Py::new(py, ReadyValue { value: py.None() })?.into_any()),
                (None, Mode::Iter) => Err(PyStopAsyncIteration::new_err(())),
            };
        }
        let fut = self
            .event_loop
            .bind(py)
            .call_method0(intern!(py, "create_future"))?
            .unbind();
        self.state
            .lock()
            .waiters
            .push_back((fut.clone_ref(py), mode));
        Ok(fut)
    }
}

#[pymethods]
impl AioInbox {
    #[new]
    fn new(event_loop: Py<PyAny>) -> Self {
        AioInbox {
            event_loop,
            state: Mutex::new(State::default()),
        }
    }

    /// Delivers `msg` (None: the end), as the drain does.
    fn __call__(&self, py: Python<'_>, msg: Py<PyAny>) -> PyResult<Option<Py<PyAny>>> {
        let msg = if msg.is_none(py) { None } else { Some(msg) };
        self.deliver(py, msg)
    }

    /// The stream whose `error` explains an early end.
    fn _bind(&self, stream: Py<PyStream>) {
        self.state.lock().stream = Some(stream);
    }

    /// From now on messages go to `callback` instead.
    fn _forward(&self, callback: Py<PyAny>) {
        self.state.lock().forward = Some(callback);
    }

    /// `await inbox.recv()`: the next message, or None at the end (raising
    /// the stream's error if it was cut or the peer's handler failed).
    fn recv(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.next(py, Mode::Recv)
    }

    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.next(py, Mode::Iter)
    }
}

/// `Transport.messages()`: iterates a stream's inbox and closes our side
/// of the stream when it is let go (the loop ended, broke or raised).
#[pyclass(frozen, module = "gofast._native", name = "AioMessages")]
pub struct AioMessages {
    inbox: Py<AioInbox>,
    stream: Py<PyStream>,
}

#[pymethods]
impl AioMessages {
    #[new]
    fn new(inbox: Py<AioInbox>, stream: Py<PyStream>) -> Self {
        AioMessages { inbox, stream }
    }

    fn __aiter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __anext__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.inbox.get().next(py, Mode::Iter)
    }

    /// Closes our side now (as dropping the iterator does).
    fn aclose(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        self.stream.get().close_quietly();
        super::aio::ready(py)
    }
}

impl Drop for AioMessages {
    fn drop(&mut self) {
        self.stream.get().close_quietly();
    }
}

/// A pre-completed awaitable with a value: `await` gives `value` at once.
#[pyclass(frozen, module = "gofast._native", name = "ReadyValue")]
pub struct ReadyValue {
    value: Py<PyAny>,
}

#[pymethods]
impl ReadyValue {
    fn __await__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __iter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<Py<PyAny>>> {
        // A one-tuple, so that a tuple value is not taken for arguments.
        Err(PyStopIteration::new_err((self.value.clone_ref(py),)))
    }
}
