//! `gofast._native.TlsConfig`: the rustls configuration behind `gofast.TLS`
//! (which reads the PEM files and picks the defaults, in Python).

use std::sync::Arc;

use pyo3::prelude::*;

use super::errors::SettingsError;
use crate::io::{ClientAuth, TlsConfig};

#[pyclass(frozen, module = "gofast._native", name = "TlsConfig")]
pub struct PyTlsConfig {
    pub(super) inner: Arc<TlsConfig>,
}

#[pymethods]
impl PyTlsConfig {
    #[new]
    #[pyo3(signature = (cert, key, ca, system_roots, client_auth))]
    fn new(
        cert: Option<&[u8]>,
        key: Option<&[u8]>,
        ca: Option<&[u8]>,
        system_roots: bool,
        client_auth: &str,
    ) -> PyResult<Self> {
        let auth = ClientAuth::from_name(client_auth).ok_or_else(|| {
            SettingsError::new_err(format!(
                "client_auth {client_auth:?}: want \"none\", \"optional\" or \"required\""
            ))
        })?;
        let inner = TlsConfig::new(cert, key, ca, system_roots, auth)?;
        Ok(PyTlsConfig {
            inner: Arc::new(inner),
        })
    }

    /// Whether it has a certificate chain and key (a server must).
    #[getter]
    fn has_certificate(&self) -> bool {
        self.inner.has_certificate()
    }
}
