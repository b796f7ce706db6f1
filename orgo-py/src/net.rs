//! The network's part of the Python API: `Computer.ports`,
//! `Computer.egress_learned()` and `orgo.PortError`.

use orgo_runtime::{EgressLearned, PortMapping};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::errors::OrgoError;

pyo3::create_exception!(
    orgo,
    PortError,
    OrgoError,
    "A port of `apps[].ports` could not be forwarded at launch (a taken host\n\
     port, say). `field` is the port's path (`apps[0].ports[1]`), `reason` why.\n\
     Nothing of the launch is left."
);

/// The `PortError` of a port that could not be forwarded.
pub(crate) fn port_error(py: Python<'_>, message: String, field: &str, reason: &str) -> PyErr {
    let exception = PortError::new_err(message);
    let value = exception.value(py);
    match value
        .setattr("field", field)
        .and_then(|()| value.setattr("reason", reason))
    {
        Ok(()) => exception,
        Err(failure) => failure,
    }
}

/// `Computer.ports`: one `dict` per forwarded port, in the template's order:
/// `{"internal": 8000, "protocol": "tcp", "host": "127.0.0.1", "port": 41234}`.
pub(crate) fn ports<'py>(py: Python<'py>, ports: &[PortMapping]) -> PyResult<Bound<'py, PyList>> {
    let list = PyList::empty(py);
    for p in ports {
        let item = PyDict::new(py);
        item.set_item("internal", p.internal)?;
        item.set_item("protocol", &p.protocol)?;
        item.set_item("host", p.address.ip().to_string())?;
        item.set_item("port", p.address.port())?;
        list.append(item)?;
    }
    Ok(list)
}

/// `Computer.egress_learned()`'s answer: `{"names": [...], "addresses":
/// [...], "policy": "egress_policy: ..."}`.
pub(crate) fn learned<'py>(
    py: Python<'py>,
    learned: &EgressLearned,
) -> PyResult<Bound<'py, PyDict>> {
    let out = PyDict::new(py);
    out.set_item("names", &learned.names)?;
    let addresses: Vec<String> = learned.addresses.iter().map(ToString::to_string).collect();
    out.set_item("addresses", addresses)?;
    out.set_item("policy", &learned.policy)?;
    Ok(out)
}
