//! The desktop methods of `orgo.Computer` (screenshot, pointer, keys,
//! streams): argument checks and conversions; `computer.rs` declares them
//! to Python and calls these.

use std::collections::BTreeMap;

use orgo_runtime::{MouseButton, Region, ScrollDirection, StreamStatus, Vault};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::computer::PyComputer;
use crate::errors;

fn button(name: &str) -> PyResult<MouseButton> {
    match name {
        "left" => Ok(MouseButton::Left),
        "middle" => Ok(MouseButton::Middle),
        "right" => Ok(MouseButton::Right),
        other => Err(errors::orgo_error(
            format!("button must be `left`, `middle` or `right`, not `{other}`"),
            None,
        )),
    }
}

fn direction(name: &str) -> PyResult<ScrollDirection> {
    match name {
        "up" => Ok(ScrollDirection::Up),
        "down" => Ok(ScrollDirection::Down),
        "left" => Ok(ScrollDirection::Left),
        "right" => Ok(ScrollDirection::Right),
        other => Err(errors::orgo_error(
            format!("direction must be `up`, `down`, `left` or `right`, not `{other}`"),
            None,
        )),
    }
}

pub(crate) fn screenshot<'py>(
    c: &PyComputer,
    py: Python<'py>,
    region: Option<(u32, u32, u32, u32)>,
) -> PyResult<Bound<'py, PyBytes>> {
    let region = region.map(|(x, y, width, height)| {
        let mut r = Region {
            x: 0,
            y: 0,
            width: 0,
            height: 0,
        };
        (r.x, r.y, r.width, r.height) = (x, y, width, height);
        r
    });
    let shot = c.with_open(py, async move |computer| {
        Ok(computer.screenshot(region).await?)
    })?;
    Ok(PyBytes::new(py, &shot.png))
}

pub(crate) fn move_to(c: &PyComputer, py: Python<'_>, x: u32, y: u32) -> PyResult<()> {
    c.with_open(py, async move |computer| Ok(computer.move_to(x, y).await?))
}

pub(crate) fn click(
    c: &PyComputer,
    py: Python<'_>,
    x: u32,
    y: u32,
    which: &str,
    double: bool,
) -> PyResult<()> {
    let b = button(which)?;
    c.with_open(py, async move |computer| {
        Ok(computer.click(x, y, b, double).await?)
    })
}

pub(crate) fn drag(
    c: &PyComputer,
    py: Python<'_>,
    start: (u32, u32),
    end: (u32, u32),
    which: &str,
) -> PyResult<()> {
    let b = button(which)?;
    c.with_open(py, async move |computer| {
        Ok(computer.drag(start, end, b).await?)
    })
}

pub(crate) fn type_text(c: &PyComputer, py: Python<'_>, text: String) -> PyResult<()> {
    c.with_open(py, async move |computer| {
        Ok(computer.type_text(&text).await?)
    })
}

pub(crate) fn key(c: &PyComputer, py: Python<'_>, combo: String) -> PyResult<()> {
    c.with_open(py, async move |computer| Ok(computer.key(&combo).await?))
}

pub(crate) fn scroll(
    c: &PyComputer,
    py: Python<'_>,
    which: &str,
    amount: u32,
    x: Option<u32>,
    y: Option<u32>,
) -> PyResult<()> {
    let d = direction(which)?;
    let at = match (x, y) {
        (Some(x), Some(y)) => Some((x, y)),
        (None, None) => None,
        _ => {
            return Err(errors::orgo_error(
                "scroll takes both `x` and `y`, or neither".to_owned(),
                None,
            ));
        }
    };
    c.with_open(py, async move |computer| {
        Ok(computer.scroll(d, amount, at).await?)
    })
}

pub(crate) fn cursor(c: &PyComputer, py: Python<'_>) -> PyResult<(u32, u32)> {
    c.with_open(py, async move |computer| Ok(computer.cursor().await?))
}

/// The secrets a stream started by hand reads: the environment's
/// `ORGO_SECRET_*` under `given`.
fn vault(given: BTreeMap<String, String>) -> Vault {
    let mut values = BTreeMap::new();
    for (key, value) in std::env::vars() {
        if let Some(name) = key.strip_prefix(orgo_runtime::SECRET_ENV_PREFIX)
            && !name.is_empty()
        {
            values.insert(name.to_lowercase(), value);
        }
    }
    values.extend(given);
    Vault::new().with(values)
}

pub(crate) fn stream_start(
    c: &PyComputer,
    py: Python<'_>,
    name: String,
    secrets: Option<&Bound<'_, PyAny>>,
) -> PyResult<()> {
    let vault = vault(crate::runtime::string_map(secrets, "secrets")?);
    c.with_open(py, async move |computer| {
        Ok(computer.stream_start(&name, &vault).await?)
    })
}

pub(crate) fn stream_stop(c: &PyComputer, py: Python<'_>, name: String) -> PyResult<()> {
    c.with_open(py, async move |computer| {
        Ok(computer.stream_stop(&name).await?)
    })
}

pub(crate) fn stream_status<'py>(
    c: &PyComputer,
    py: Python<'py>,
    name: String,
) -> PyResult<Bound<'py, PyDict>> {
    let status: StreamStatus = c.with_open(py, async move |computer| {
        Ok(computer.stream_status(&name).await?)
    })?;
    let dict = PyDict::new(py);
    dict.set_item("name", status.name)?;
    dict.set_item("state", status.state.as_str())?;
    dict.set_item("restarts", status.restarts)?;
    dict.set_item("last_exit_code", status.last_exit.and_then(|e| e.code))?;
    Ok(dict)
}
