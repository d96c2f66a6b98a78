//! Settings between Python dicts and `Settings`: one key a field, unknown
//! keys rejected so a typo is an error rather than a silent default.

use std::time::Duration;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict};

use super::errors::SettingsError;
use crate::settings::{Role, Settings};

pub fn role(dialed: bool) -> Role {
    if dialed {
        Role::Dialer
    } else {
        Role::Acceptor
    }
}

fn seconds(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64())
}

/// Seconds as a float, `None` for "never".
fn opt_duration(v: &Bound<'_, PyAny>) -> PyResult<Option<Duration>> {
    if v.is_none() {
        return Ok(None);
    }
    let secs: f64 = v.extract()?;
    Duration::try_from_secs_f64(secs)
        .map(Some)
        .map_err(|_| SettingsError::new_err(format!("{secs} is not a valid number of seconds")))
}

pub fn to_dict<'py>(py: Python<'py>, s: &Settings) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("buffersize", s.buffersize)?;
    d.set_item("batchsize", s.batchsize)?;
    d.set_item("tags", s.tags_csv())?;
    d.set_item("opaque.start", s.opaque_start)?;
    d.set_item("opaque.end", s.opaque_end)?;
    d.set_item("gzip.level", s.gzip_level)?;
    d.set_item("frame.max", s.max_frame)?;
    d.set_item("pending.max", s.max_pending)?;
    d.set_item("flush.period", seconds(s.flush_period))?;
    d.set_item("request.timeout", seconds(s.request_timeout))?;
    d.set_item("streams.max", s.max_streams)?;
    d.set_item("idle.timeout", seconds(s.idle_timeout))?;
    d.set_item("errors.extension", s.errors_ext)?;
    d.set_item("reader", if s.shared_reader { "shared" } else { "thread" })?;
    Ok(d)
}

pub fn from_dict(role: Role, dict: &Bound<'_, PyDict>) -> PyResult<Settings> {
    let mut s = Settings::defaults(role);
    for (k, v) in dict.iter() {
        let key: String = k.extract()?;
        apply(&mut s, &key, &v).map_err(|e| {
            if e.is_instance_of::<SettingsError>(dict.py()) {
                e
            } else {
                SettingsError::new_err(format!("setting {key:?}: {e}"))
            }
        })?;
    }
    s.validate()?;
    Ok(s)
}

/// An integer setting; `True` is an int to Python, but never a size.
fn int<T: TryFrom<u64>>(key: &str, v: &Bound<'_, PyAny>) -> PyResult<T> {
    let bad = || SettingsError::new_err(format!("setting {key:?} takes a count, not {v}"));
    if v.is_instance_of::<PyBool>() {
        return Err(bad());
    }
    let n: u64 = v.extract().map_err(|_| bad())?;
    T::try_from(n).map_err(|_| bad())
}

/// A yes/no setting: a bool, not any truthy value (a typo'd "no" is true).
fn flag(key: &str, v: &Bound<'_, PyAny>) -> PyResult<bool> {
    v.cast::<PyBool>().map(|b| b.is_true()).map_err(|_| {
        SettingsError::new_err(format!("setting {key:?} takes True or False, not {v}"))
    })
}

fn apply(s: &mut Settings, key: &str, v: &Bound<'_, PyAny>) -> PyResult<()> {
    match key {
        "buffersize" => s.buffersize = int(key, v)?,
        "batchsize" => s.batchsize = int(key, v)?,
        "tags" => s.set_tags(&v.extract::<String>()?)?,
        "opaque.start" => s.opaque_start = int(key, v)?,
        "opaque.end" => s.opaque_end = int(key, v)?,
        "gzip.level" => s.gzip_level = int(key, v)?,
        "frame.max" => s.max_frame = int(key, v)?,
        "pending.max" => s.max_pending = int(key, v)?,
        "flush.period" => s.flush_period = opt_duration(v)?,
        "request.timeout" => s.request_timeout = opt_duration(v)?,
        "streams.max" => s.max_streams = int(key, v)?,
        "idle.timeout" => s.idle_timeout = opt_duration(v)?,
        "errors.extension" => s.errors_ext = flag(key, v)?,
        "reader" => {
            s.shared_reader = match v.extract::<String>().ok().as_deref() {
                Some("thread") => false,
                Some("shared") => true,
                _ => {
                    return Err(SettingsError::new_err(format!(
                        "setting \"reader\" takes \"thread\" or \"shared\", not {v}"
                    )))
                }
            }
        }
        // The reference's channel size has no meaning here; accepted so that
        // settings written for the Go transport carry over unchanged.
        "chansize" => {}
        other => return Err(SettingsError::new_err(format!("unknown setting {other:?}"))),
    }
    Ok(())
}
