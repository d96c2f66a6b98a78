//! The one place Rust errors become Python exceptions. The exception classes
//! are defined in Python (`gofast/errors.py`) so they can inherit from the
//! matching built-ins (`Timeout` is a `TimeoutError`, and so on).

use pyo3::prelude::*;

use crate::errors::Error;

pyo3::import_exception!(gofast.errors, GofastError);
pyo3::import_exception!(gofast.errors, ConnectionClosed);
pyo3::import_exception!(gofast.errors, ProtocolError);
pyo3::import_exception!(gofast.errors, Timeout);
pyo3::import_exception!(gofast.errors, OpaqueExhausted);
pyo3::import_exception!(gofast.errors, StreamClosed);
pyo3::import_exception!(gofast.errors, SettingsError);
pyo3::import_exception!(gofast.errors, UsageError);
pyo3::import_exception!(gofast.errors, RemoteError);
pyo3::import_exception!(gofast.errors, TLSError);

impl From<Error> for PyErr {
    fn from(e: Error) -> PyErr {
        let msg = e.to_string();
        match e {
            Error::Closed(_) | Error::Io(_) => ConnectionClosed::new_err(msg),
            Error::Timeout(_) => Timeout::new_err(msg),
            Error::Tls(_) => TLSError::new_err(msg),
            Error::OpaqueExhausted { .. } => OpaqueExhausted::new_err(msg),
            Error::Protocol(_) => ProtocolError::new_err(msg),
            Error::Settings(_) => SettingsError::new_err(msg),
            Error::InvalidArgument(_) => UsageError::new_err(msg),
            Error::StreamClosed(_) => StreamClosed::new_err(msg),
            // Normally replaced by the signal handler's own exception.
            Error::Interrupted => pyo3::exceptions::PyKeyboardInterrupt::new_err(msg),
        }
    }
}
