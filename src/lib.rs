//! gofast for Python: the Rust core.
//!
//! * `codec`     — bytes ⇄ frames (docs/protocol.md §1), compression.
//! * `exchange`  — which exchange a frame belongs to; opaque lifetimes.
//! * `opaque`    — the pool of opaque values.
//! * `io`        — byte streams: TCP or Unix sockets, TLS over either.
//! * `readbuf`   — the reader's receive buffer.
//! * `writer`    — the batching writer and its thread.
//! * `transport` — one connection: reader thread, handshake, exchanges.
//! * `builtin`   — whoami, ping and heartbeat payloads.
//! * `log_limit` — the rate limit on warnings about what a peer sends.
//! * `settings`, `stats`, `errors` — what their names say.
//! * `python`    — the pyo3 bindings (`gofast._native`).

pub mod builtin;
pub mod codec;
pub mod errors;
pub mod exchange;
pub mod io;
pub mod log_limit;
pub mod opaque;
pub mod readbuf;
pub mod settings;
pub mod stats;
pub mod transport;
pub mod writer;

#[cfg(feature = "python")]
mod python;

// gil_used: no free-threaded CPython (3.13t/3.14t) has run the tests yet, so
// such an interpreter is told to keep the GIL on while this module is loaded
// (PyO3 0.28 would otherwise declare it safe without one).
#[cfg(feature = "python")]
#[pyo3::pymodule(gil_used = true)]
#[pyo3(name = "_native")]
fn native_module(m: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
    python::register(m)
}
