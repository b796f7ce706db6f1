//! `Computer.logs()`, `Computer.events()`: iterators over a computer's
//! service logs and events.

use orgo_runtime::{EventReader, LogReader, event_json};
use pyo3::prelude::*;

use crate::runtime::{Interrupt, wait};

/// Lines of a computer's logs, as `(service, line)` pairs; from `Computer.logs()`.
#[pyclass(module = "orgo", name = "LogLines")]
pub(crate) struct PyLogLines {
    reader: tokio::sync::Mutex<LogReader>,
}

impl PyLogLines {
    pub(crate) fn new(reader: LogReader) -> Self {
        PyLogLines {
            reader: tokio::sync::Mutex::new(reader),
        }
    }
}

#[pymethods]
impl PyLogLines {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__(&self, py: Python<'_>) -> PyResult<Option<(String, String)>> {
        let next = wait(py, None, Interrupt::Allowed, || async move {
            Ok(self.reader.lock().await.next().await?)
        })?;
        Ok(next.map(|l| (l.service, l.line)))
    }
}

/// A computer's events, as dicts with `ts`, `seq`, `kind` and the event's
/// fields; from `Computer.events()`.
#[pyclass(module = "orgo", name = "Events")]
pub(crate) struct PyEvents {
    reader: tokio::sync::Mutex<EventReader>,
}

impl PyEvents {
    pub(crate) fn new(reader: EventReader) -> Self {
        PyEvents {
            reader: tokio::sync::Mutex::new(reader),
        }
    }
}

#[pymethods]
impl PyEvents {
    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let next = wait(py, None, Interrupt::Allowed, || async move {
            Ok(self.reader.lock().await.next().await?)
        })?;
        next.map(|record| crate::convert::to_python(py, &event_json(&record)))
            .transpose()
    }
}
