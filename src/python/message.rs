//! Messages at the boundary: `BinMessage` (what handlers receive) and the
//! extraction of `(id, bytes)` from any message object the user sends — an
//! object with an integer `ID` and an `encode()` returning bytes.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::errors::ProtocolError;
use crate::codec::Message;
use crate::writer::{Data, Lender};

/// A received message: its id and its encoded bytes. It can be sent back as
/// it is (it has `ID` and `encode()`), and `decode(T)` turns it into a `T`.
#[pyclass(frozen, module = "gofast._native", name = "BinMessage")]
pub struct BinMessage {
    /// The message id (1 and up; 0x1000..0x100F are the built-ins').
    #[pyo3(get)]
    pub id: u64,
    /// The message's encoded bytes, as they came off the wire.
    #[pyo3(get)]
    pub data: Py<PyBytes>,
}

impl BinMessage {
    pub fn from_wire(py: Python<'_>, msg: &Message<'_>) -> PyResult<Py<BinMessage>> {
        let data = PyBytes::new(py, &msg.data).unbind();
        Py::new(py, BinMessage { id: msg.id, data })
    }
}

#[pymethods]
impl BinMessage {
    #[new]
    fn new(id: u64, data: Py<PyBytes>) -> Self {
        BinMessage { id, data }
    }

    /// The message id, under the name message classes use.
    #[getter(ID)]
    fn message_id(&self) -> u64 {
        self.id
    }

    /// The encoded bytes (`data`): a `BinMessage` sends as it came.
    fn encode(&self, py: Python<'_>) -> Py<PyBytes> {
        self.data.clone_ref(py)
    }

    /// Decodes the bytes with `message_type.decode(data)`; raises
    /// `ProtocolError` if the type's `ID` is not this message's id.
    fn decode<'py>(
        &self,
        py: Python<'py>,
        message_type: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        decode_as(self.id, self.data.bind(py), message_type)
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        let n = self.data.bind(py).as_bytes().len();
        format!("BinMessage(id={}, data=<{} bytes>)", self.id, n)
    }

    fn __eq__(&self, py: Python<'_>, other: &Bound<'_, PyAny>) -> bool {
        match other.cast::<BinMessage>() {
            Ok(o) => {
                let o = o.get();
                o.id == self.id && o.data.bind(py).as_bytes() == self.data.bind(py).as_bytes()
            }
            Err(_) => false,
        }
    }

    fn __len__(&self, py: Python<'_>) -> usize {
        self.data.bind(py).as_bytes().len()
    }
}

/// `message_type.decode(data)` for a received message of id `id`. A type
/// with an integer `ID` that differs is refused with `ProtocolError` (the
/// peer sent another message than the one expected) before `decode` can
/// build a wrong object from bytes meant for another type.
pub fn decode_as<'py>(
    id: u64,
    data: &Bound<'py, PyBytes>,
    message_type: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = message_type.py();
    let expected = message_type
        .getattr(intern!(py, "ID"))
        .and_then(|v| v.extract::<u64>());
    if let Ok(expected) = expected {
        if expected != id {
            let name = message_type
                .getattr(intern!(py, "__qualname__"))
                .and_then(|n| n.extract::<String>())
                .unwrap_or_else(|_| "the expected type".to_string());
            return Err(ProtocolError::new_err(format!(
                "received message id {id} ({id:#x}), but {name} has ID {expected} ({expected:#x})"
            )));
        }
    }
    message_type.call_method1(intern!(py, "decode"), (data,))
}

/// `(id, encoded bytes)` of a message object.
pub fn message_parts<'py>(msg: &Bound<'py, PyAny>) -> PyResult<(u64, Bound<'py, PyBytes>)> {
    let py = msg.py();
    if let Ok(bin) = msg.cast::<BinMessage>() {
        let bin = bin.get();
        return Ok((bin.id, bin.data.bind(py).clone()));
    }
    let not_a_message = |_| {
        pyo3::exceptions::PyTypeError::new_err(format!(
            "{} is not a message: it needs an integer ID attribute and an encode() method",
            msg.get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default()
        ))
    };
    let id: u64 = msg
        .getattr(intern!(py, "ID"))
        .and_then(|v| v.extract())
        .map_err(not_a_message)?;
    // A missing encode() is a TypeError like a missing ID; an error raised
    // inside encode() reaches the caller as it is.
    let encode = msg.getattr(intern!(py, "encode")).map_err(not_a_message)?;
    let data = encode.call0()?;
    let data = data.cast_into::<PyBytes>().map_err(|e| {
        pyo3::exceptions::PyTypeError::new_err(format!(
            "encode() must return bytes, not {}",
            e.into_inner().get_type()
        ))
    })?;
    Ok((id, data))
}

impl Lender for Bound<'_, PyBytes> {
    fn lend(&self) -> Box<dyn Send> {
        Box::new(self.clone().unbind())
    }
}

/// A message's bytes as data the writer may keep a reference to instead of
/// copying (it does so for large ones). Only while attached to Python: the
/// `Bound` cannot cross into `detach`. Only exact `bytes`: the writer drops
/// its references wherever it is, and a subclass's `__del__` could run
/// Python code there.
pub fn lendable<'a>(bytes: &'a Bound<'_, PyBytes>) -> Data<'a> {
    if !bytes.is_exact_instance_of::<PyBytes>() {
        return Data::copied(bytes.as_bytes());
    }
    // SAFETY: a `bytes` object's contents live inside the object and never
    // change once it exists; every lent box holds a strong reference to it.
    unsafe { Data::lent(bytes.as_bytes(), bytes) }
}
