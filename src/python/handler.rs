//! The bridge from the reader thread to Python: looks up the handler for a
//! message id and calls it with the GIL, which it holds across a whole batch
//! of frames. A handler's exception is logged and counted, never fatal.

use std::collections::HashMap;
use std::sync::Arc;

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyDict;

use super::message::BinMessage;
use super::stream::{PyStream, StreamSink};
use crate::codec::Message;
use crate::exchange::Origin;
use crate::stats::Stats;
use crate::transport::{Core, Dispatched, Handler};

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
}

impl PyHandler {
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

    fn lookup(&self, id: u64) -> Option<PyCallable> {
        let found = self.handlers.lock().get(&id).cloned();
        found.or_else(|| self.default.lock().clone())
    }

    fn call(
        &self,
        core: &Arc<Core<Self>>,
        handler: &PyCallable,
        stream: Option<PyStream>,
        msg: &Message<'_>,
    ) -> Option<Py<PyAny>> {
        Python::attach(|py| {
            let called = BinMessage::from_wire(py, msg).and_then(|m| {
                let stream = match stream {
                    Some(s) => Py::new(py, s)?.into_any(),
                    None => py.None(),
                };
                handler.call1(py, (stream, m))
            });
            match called {
                Ok(r) => Some(r),
                Err(e) => {
                    report(py, core, &format!("handler for message id {}", msg.id), e);
                    None
                }
            }
        })
    }
}

impl Handler for PyHandler {
    type Callback = Arc<StreamSink>;

    fn batch(&self, run: &mut dyn FnMut()) {
        Python::attach(|_py| run());
    }

    fn on_post(&self, core: &Arc<Core<Self>>, msg: &Message<'_>) -> Dispatched {
        let Some(h) = self.lookup(msg.id) else {
            return Dispatched::NoHandler;
        };
        self.call(core, &h, None, msg);
        Dispatched::Handled
    }

    fn batches_posts(&self, id: u64) -> bool {
        self.any_batch.load(Ordering::Acquire) && self.batch_handlers.lock().contains_key(&id)
    }

    fn on_posts(&self, core: &Arc<Core<Self>>, msgs: &[Message<'_>]) {
        let Some(first) = msgs.first() else { return };
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
                    core,
                    &format!("batch handler for message id {}", first.id),
                    e,
                );
            }
        });
    }

    fn on_request(&self, core: &Arc<Core<Self>>, opaque: u64, msg: &Message<'_>) -> Dispatched {
        let Some(h) = self.lookup(msg.id) else {
            return Dispatched::NoHandler;
        };
        self.call(
            core,
            &h,
            Some(PyStream::for_request(core.clone(), opaque)),
            msg,
        );
        Dispatched::Handled
    }

    fn on_stream_start(
        &self,
        core: &Arc<Core<Self>>,
        opaque: u64,
        msg: &Message<'_>,
    ) -> Result<Option<Self::Callback>, Dispatched> {
        let Some(h) = self.lookup(msg.id) else {
            return Err(Dispatched::NoHandler);
        };
        let sink = StreamSink::new();
        let stream = PyStream::for_stream(core.clone(), opaque, Origin::Remote, sink.clone());
        let Some(returned) = self.call(core, &h, Some(stream), msg) else {
            // The handler failed: tell the peer this side is done.
            let _ = core.stream_close(opaque, Origin::Remote);
            return Ok(None);
        };
        Python::attach(|py| {
            let r = returned.bind(py);
            if r.is_none() {
                Ok(None)
            } else if r.is_callable() {
                let _ = sink.callback.set(returned);
                Ok(Some(sink))
            } else {
                let e = pyo3::exceptions::PyTypeError::new_err(format!(
                    "a stream handler must return a callable or None, not {}",
                    r.get_type()
                ));
                report(py, core, &format!("handler for message id {}", msg.id), e);
                let _ = core.stream_close(opaque, Origin::Remote);
                Ok(None)
            }
        })
    }

    fn on_stream_msg(
        &self,
        core: &Arc<Core<Self>>,
        callback: &Self::Callback,
        msg: Option<&Message<'_>>,
    ) {
        let Some(callback) = callback.callback.get() else {
            return; // registered without a callable: nothing listens
        };
        Python::attach(|py| {
            let called = match msg {
                Some(m) => BinMessage::from_wire(py, m).and_then(|m| callback.call1(py, (m,))),
                None => callback.call1(py, (py.None(),)),
            };
            if let Err(e) = called {
                report(py, core, "stream callback", e);
            }
        });
    }

    fn on_stream_cut(&self, sink: &Self::Callback, reason: &str) {
        let _ = sink.cut.set(reason.to_string());
    }

    fn reader_thread(&self, run: &mut dyn FnMut()) {
        // A thread without a Python thread state gets a new one from every
        // GIL acquisition, and loses it on release: microseconds a batch.
        // Create it once, release the GIL, and keep the state until exit.
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

    fn on_closed(&self) {
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

static LOGGER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// Logs a handler's exception (with its traceback) to the `gofast` logger
/// and counts it in `n_handler_errors`.
fn report(py: Python<'_>, core: &Core<PyHandler>, what: &str, err: PyErr) {
    Stats::incr(&core.stats.n_handler_errors);
    let logged = LOGGER
        .get_or_try_init(py, || {
            py.import("logging")?
                .call_method1("getLogger", ("gofast",))
                .map(Bound::unbind)
        })
        .and_then(|logger| {
            let kwargs = PyDict::new(py);
            kwargs.set_item("exc_info", err.clone_ref(py).into_value(py))?;
            logger.call_method(
                py,
                "error",
                ("gofast[%s]: %s raised", &core.name, what),
                Some(&kwargs),
            )
        });
    if logged.is_err() {
        err.print(py);
    }
}
