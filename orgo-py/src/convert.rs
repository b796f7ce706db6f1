//! JSON values to Python objects and back.

use orgo_template::{Diagnostic, FieldPath, MAX_DEPTH};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyMapping, PyString, PyTuple};
use serde_json::{Map, Number, Value};

/// The name of `value`'s Python type, for error messages.
pub(crate) fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_default()
}

/// A JSON value as Python objects: `dict` (members in order), `list`, `str`,
/// `int`, `float`, `bool` and `None`.
pub(crate) fn to_python<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => PyBool::new(py, *b).to_owned().into_any(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any()
            } else {
                PyFloat::new(py, n.as_f64().unwrap_or(f64::NAN)).into_any()
            }
        }
        Value::String(s) => PyString::new(py, s).into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_python(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (key, item) in map {
                dict.set_item(key, to_python(py, item)?)?;
            }
            dict.into_any()
        }
    })
}

/// A Python value as JSON: `dict` and other mappings with `str` keys, `list`
/// and `tuple`, `str`, `int`, `float`, `bool` and `None`. Anything else is a
/// problem at its path, collected in `problems` (the value becomes `null`).
pub(crate) fn from_python(
    object: &Bound<'_, PyAny>,
    path: &FieldPath,
    problems: &mut Vec<Diagnostic>,
) -> PyResult<Value> {
    Reader { problems }.value(object, path, 1)
}

struct Reader<'a> {
    problems: &'a mut Vec<Diagnostic>,
}

impl Reader<'_> {
    fn problem(&mut self, path: &FieldPath, message: String) -> Value {
        self.problems.push(Diagnostic {
            path: path.clone(),
            message,
            location: None,
        });
        Value::Null
    }

    fn value(
        &mut self,
        object: &Bound<'_, PyAny>,
        path: &FieldPath,
        depth: usize,
    ) -> PyResult<Value> {
        if object.is_none() {
            return Ok(Value::Null);
        }
        if let Ok(b) = object.cast::<PyBool>() {
            return Ok(Value::Bool(b.is_true()));
        }
        if object.is_instance_of::<PyInt>() {
            if let Ok(i) = object.extract::<i64>() {
                return Ok(Value::from(i));
            }
            if let Ok(u) = object.extract::<u64>() {
                return Ok(Value::from(u));
            }
            let shown = object.str()?.to_string();
            let message = if shown.starts_with('-') {
                format!("the number `{shown}` is too small (at least {})", i64::MIN)
            } else {
                format!("the number `{shown}` is too large (at most {})", u64::MAX)
            };
            return Ok(self.problem(path, message));
        }
        if let Ok(f) = object.cast::<PyFloat>() {
            let f = f.value();
            return Ok(match Number::from_f64(f) {
                Some(n) => Value::Number(n),
                None => self.problem(path, format!("the number `{f}` has no JSON form")),
            });
        }
        if let Ok(s) = object.cast::<PyString>() {
            return Ok(match s.to_cow() {
                Ok(text) => Value::String(text.into_owned()),
                Err(_) => self.problem(path, "the string is not valid Unicode".to_owned()),
            });
        }
        let is_list = object.is_instance_of::<PyList>() || object.is_instance_of::<PyTuple>();
        let mapping = if is_list {
            None
        } else if let Ok(dict) = object.cast::<PyDict>() {
            Some(dict.items().into_any())
        } else if let Ok(mapping) = object.cast::<PyMapping>() {
            Some(mapping.items()?.into_any())
        } else {
            None
        };
        if (is_list || mapping.is_some()) && depth > MAX_DEPTH {
            return Ok(self.problem(
                path,
                format!("document nests deeper than {MAX_DEPTH} levels"),
            ));
        }
        if is_list {
            let mut items = Vec::new();
            for (i, item) in object.try_iter()?.enumerate() {
                items.push(self.value(&item?, &path.index(i), depth + 1)?);
            }
            return Ok(Value::Array(items));
        }
        if let Some(items) = mapping {
            let mut map = Map::new();
            for pair in items.try_iter()? {
                let (key, item): (Bound<'_, PyAny>, Bound<'_, PyAny>) = pair?.extract()?;
                match key.cast::<PyString>().ok().and_then(|k| k.to_cow().ok()) {
                    Some(key) => {
                        let key = key.into_owned();
                        let value = self.value(&item, &path.key(key.clone()), depth + 1)?;
                        map.insert(key, value);
                    }
                    None => {
                        let shown = key.repr()?.to_string();
                        let kind = key.get_type().name()?.to_string();
                        self.problem(
                            &path.key(shown.clone()),
                            format!("keys must be strings, found the `{kind}` {shown}"),
                        );
                    }
                }
            }
            return Ok(Value::Object(map));
        }
        let kind = object.get_type().name()?.to_string();
        Ok(self.problem(
            path,
            format!("expected a string, number, boolean, None, list or dict, found a `{kind}`"),
        ))
    }
}
