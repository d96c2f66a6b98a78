//! pyo3 bindings: the private `gofast._native` module. `gofast/__init__.py`
//! is the public face; `_native.pyi` spells out these types.

mod aio;
mod aio_inbox;
mod aio_transport;
mod errors;
mod handler;
mod message;
mod poller;
mod settings;
mod stream;
mod tls;
mod transport;

use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::errors::Result;
use crate::protocol::{Session, WAKE_EVERY};
use crate::writer::Data;
use handler::PyHandler;

/// Runs `push` until the frame is queued, waiting for room without the GIL
/// whenever the send queue is full (backpressure), in slices that let
/// Python see Ctrl-C; past `deadline` it gives up with `Timeout`.
fn send_or_wait(
    py: Python<'_>,
    session: &Session<PyHandler>,
    deadline: Option<Instant>,
    mut push: impl FnMut() -> Result<bool>,
) -> PyResult<()> {
    loop {
        if push()? {
            return Ok(());
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(errors::Timeout::new_err(
                "no room in the send queue in time: the peer is not reading",
            ));
        }
        let slice = Instant::now() + WAKE_EVERY;
        let until = deadline.map_or(slice, |d| d.min(slice));
        py.detach(|| session.wait_room(until));
        py.check_signals()?;
    }
}

/// Queues one message with `push(id, data)`, waiting for room as
/// `send_or_wait` does, for at most `timeout` seconds (None: no limit).
fn send_message(
    py: Python<'_>,
    session: &Session<PyHandler>,
    msg: &Bound<'_, PyAny>,
    timeout: Option<f64>,
    mut push: impl FnMut(u64, Data<'_>) -> Result<bool>,
) -> PyResult<()> {
    let (id, data) = message::message_parts(msg)?;
    let data = message::lendable(&data);
    send_or_wait(py, session, deadline_after(timeout)?, || push(id, data))
}

/// A deadline `timeout` seconds from now; `None` waits for ever.
fn deadline_after(timeout: Option<f64>) -> PyResult<Option<Instant>> {
    match timeout {
        None => Ok(None),
        Some(t) if t >= 0.0 && t.is_finite() => {
            Ok(Some(Instant::now() + Duration::from_secs_f64(t)))
        }
        Some(t) if t == f64::INFINITY => Ok(None),
        Some(t) => Err(errors::UsageError::new_err(format!(
            "timeout {t} is not a valid number of seconds"
        ))),
    }
}

/// Runs `wait` without the GIL. `wait` gets a check to call between slices
/// of its wait: it takes the GIL back for a moment to see whether a signal
/// (Ctrl-C) arrived, and if its handler raised, `wait` ends with that.
fn detach_checked<T, F>(py: Python<'_>, wait: F) -> PyResult<T>
where
    F: Send + FnOnce(&mut dyn FnMut() -> Result<()>) -> Result<T>,
    T: Send,
{
    let mut raised: Option<PyErr> = None;
    let result = py.detach(|| {
        let mut check = || {
            Python::attach(|py| py.check_signals()).map_err(|e| {
                raised = Some(e);
                crate::errors::Error::Interrupted
            })
        };
        wait(&mut check)
    });
    match (result, raised) {
        (Err(_), Some(e)) => Err(e),
        (result, _) => Ok(result?),
    }
}

/// Counters summed over live transports, all or those named `name`.
#[pyfunction]
#[pyo3(signature = (name = None))]
fn stats<'py>(py: Python<'py>, name: Option<&str>) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in crate::stats::aggregate(name) {
        d.set_item(k, v)?;
    }
    Ok(d)
}

/// The names of the live (not yet closed) transports, sorted, each once.
#[pyfunction]
fn transport_names() -> Vec<String> {
    crate::stats::names()
}

/// Closes every transport of the process and waits for their threads
/// (used at interpreter exit, before Python is torn down).
#[pyfunction]
fn _close_all_transports(py: Python<'_>) {
    py.detach(|| {
        crate::transport::close_all_transports();
        poller::stop();
    });
}

/// The default settings of a dialing (`dialed=True`) or accepting side.
#[pyfunction]
#[pyo3(signature = (dialed = true))]
fn default_settings(py: Python<'_>, dialed: bool) -> PyResult<Bound<'_, PyDict>> {
    settings::to_dict(
        py,
        &crate::settings::Settings::defaults(settings::role(dialed)),
    )
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Rust `log` records go to Python's `logging`, to loggers named after
    // the module ("gofast.transport.receive", ... under "gofast"). Loggers
    // are cached, levels are not: `logging` has no change notification, so
    // a cached level would outlive any later setLevel/dictConfig (a level
    // that once hid messages hid them for good). Asking `isEnabledFor` per
    // record costs a GIL take, which is affordable because nothing logs per
    // message: only connects, handshakes, closes and rate-limited drops.
    // Already installed (another extension's logger): keep that one.
    let _ = pyo3_log::Logger::new(m.py(), pyo3_log::Caching::Loggers)?
        .filter(log::LevelFilter::Debug)
        .install();
    m.add_class::<tls::PyTlsConfig>()?;
    m.add_class::<transport::PyTransport>()?;
    m.add_class::<stream::PyStream>()?;
    m.add_class::<message::BinMessage>()?;
    m.add_class::<aio::Ready>()?;
    m.add_class::<aio_inbox::AioInbox>()?;
    m.add_class::<aio_inbox::AioMessages>()?;
    m.add_class::<aio_inbox::ReadyValue>()?;
    m.add_function(wrap_pyfunction!(stats, m)?)?;
    m.add_function(wrap_pyfunction!(transport_names, m)?)?;
    m.add_function(wrap_pyfunction!(default_settings, m)?)?;
    m.add_function(wrap_pyfunction!(_close_all_transports, m)?)?;
    m.add_function(wrap_pyfunction!(poller::_shared_reader_connections, m)?)?;
    m.add("READY", aio::ready(m.py())?)?;
    m.add("STAT_NAMES", crate::stats::Stats::NAMES.to_vec())?;
    m.add("PING_ID", crate::builtin::PING_ID)?;
    m.add("WHOAMI_ID", crate::builtin::WHOAMI_ID)?;
    m.add("HEARTBEAT_ID", crate::builtin::HEARTBEAT_ID)?;
    Ok(())
}
