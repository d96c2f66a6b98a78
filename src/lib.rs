//! gofast for Python: the Rust core.
//!
//! The protocol, with no I/O:
//!
//! * `codec`     — bytes ⇄ frames (docs/protocol.md §1), compression.
//! * `protocol`  — one connection's protocol state (`Session`): handshake,
//!   dispatch of received frames, built-in replies, what is sent; frames in,
//!   handler calls and frames out (to a `FrameSink`).
//! * `exchange`  — which exchange a frame belongs to; opaque lifetimes.
//! * `opaque`    — the pool of opaque values.
//! * `builtin`   — whoami, ping and heartbeat payloads.
//! * `log_limit` — the rate limit on warnings about what a peer sends.
//! * `settings`, `stats`, `errors` — what their names say; `sync`: the
//!   crate's locks (std-based, for fork()ed children: see there).
//!
//! The byte streams under a connection:
//!
//! * `io`        — TCP or Unix domain sockets, and TLS (rustls) over either.
//!
//! The threaded driver of a session over such a stream:
//!
//! * `transport` — `Core`: the link, the reader thread, requesters
//!   reading their own RESPONSEs, the TLS handshake, closing; fork() safety
//!   (`forks`).
//! * `readbuf`   — the reader's receive buffer.
//! * `writer`    — the batching writer and its thread (the `FrameSink`).
//!
//! The front end:
//!
//! * `python`    — the pyo3 bindings (`gofast._native`).

pub mod builtin;
pub mod codec;
pub mod errors;
pub mod exchange;
pub mod forks;
pub mod io;
pub mod log_limit;
pub mod opaque;
pub mod protocol;
pub mod readbuf;
pub mod settings;
pub mod stats;
pub mod sync;
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
