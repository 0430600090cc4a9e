//! The settings table for Python: `_core.SETTINGS` (a tuple of `Setting`) and `_core.check_setting`.

use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::py::to_pyerr;
use crate::settings::{setting, DefaultValue, Kind, Setting, Value, SETTINGS};

/// One environment variable the package reads (a row of the core's settings table). Immutable.
#[pyclass(frozen, name = "Setting", module = "mlflow_descope_auth")]
pub struct PySetting {
    inner: &'static Setting,
}

#[pymethods]
impl PySetting {
    #[getter]
    fn name(&self) -> &'static str {
        self.inner.name
    }
    /// `client`, `server` or `both`.
    #[getter]
    fn side(&self) -> &'static str {
        self.inner.side.as_str()
    }
    /// `seconds`, `whole_number`, `choice`, `http_url`, `site_path`, `file_path`, `uri`, `list`,
    /// `role_levels`, `identifier`, `secret` or `text`.
    #[getter]
    fn kind(&self) -> &'static str {
        self.inner.kind.name()
    }
    /// What the kind accepts, in words (`seconds, 0 to 300`).
    #[getter]
    fn accepts(&self) -> String {
        self.inner.kind.accepts()
    }
    #[getter]
    fn minimum(&self) -> Option<f64> {
        match self.inner.kind {
            Kind::Seconds { min, .. } => Some(min),
            Kind::WholeNumber { min, .. } => Some(min as f64),
            _ => None,
        }
    }
    #[getter]
    fn maximum(&self) -> Option<f64> {
        match self.inner.kind {
            Kind::Seconds { max, .. } => Some(max),
            Kind::WholeNumber { max, .. } => Some(max as f64),
            _ => None,
        }
    }
    #[getter]
    fn choices(&self) -> Vec<&'static str> {
        match self.inner.kind {
            Kind::Choice(choices) => choices.to_vec(),
            _ => Vec::new(),
        }
    }
    /// The value used when unset, as written in the table (`{cwd}` and `{NAME}` are filled in by
    /// `check_setting`); None when the variable is required, off when unset, or computed.
    #[getter]
    fn default(&self) -> Option<&'static str> {
        match self.inner.default {
            DefaultValue::Value(v) => Some(v),
            _ => None,
        }
    }
    /// How the default is shown to people.
    #[getter]
    fn default_shown(&self) -> String {
        self.inner.default_shown()
    }
    #[getter]
    fn required(&self) -> bool {
        matches!(self.inner.default, DefaultValue::Required { .. })
    }
    /// The `DescopeClient(...)` keyword that sets it, if any.
    #[getter]
    fn keyword(&self) -> Option<&'static str> {
        self.inner.keyword
    }
    #[getter]
    fn example(&self) -> &'static str {
        self.inner.example
    }
    /// One line of Markdown.
    #[getter]
    fn help(&self) -> &'static str {
        self.inner.help
    }

    fn __repr__(&self) -> String {
        format!("Setting(name={:?}, side={:?}, kind={:?})", self.inner.name, self.side(), self.kind())
    }
}

fn value_to_py(py: Python<'_>, value: Value) -> PyResult<Bound<'_, PyAny>> {
    Ok(match value {
        Value::Seconds(d) => d.as_secs_f64().into_pyobject(py)?.into_any(),
        Value::WholeNumber(n) => n.into_pyobject(py)?.into_any(),
        Value::Text(s) => s.into_pyobject(py)?.into_any(),
        Value::List(items) => items.into_pyobject(py)?.into_any(),
        Value::RoleLevels(pairs) => {
            let pairs: Vec<(String, &str)> = pairs.into_iter().map(|(r, p)| (r, p.as_str())).collect();
            pairs.into_pyobject(py)?.into_any()
        }
    })
}

/// Validates `raw` for the variable `name` with the core's validator and returns it normalised
/// (seconds as float, whole numbers as int, lists as list[str], role=LEVEL pairs as a list of
/// tuples, everything else as str). A blank or missing `raw` gives the default, its `{NAME}` parts
/// read from `environ`; None when there is no default. Raises ConfigurationError (with `.variable`)
/// for a bad value or a missing required one, KeyError for a name not in the table.
#[pyfunction]
#[pyo3(signature = (name, raw=None, *, environ=None))]
fn check_setting<'py>(
    py: Python<'py>,
    name: &str,
    raw: Option<&str>,
    environ: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyAny>> {
    let row = setting(name).ok_or_else(|| PyKeyError::new_err(name.to_string()))?;
    let lookup = |var: &str| -> Option<String> {
        let env = environ?;
        env.call_method1("get", (var,)).ok().and_then(|v| v.extract::<Option<String>>().ok().flatten())
    };
    match row.read(raw, &lookup).map_err(to_pyerr)? {
        Some(value) => value_to_py(py, value),
        None => Ok(py.None().into_bound(py)),
    }
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add_class::<PySetting>()?;
    let rows = SETTINGS.iter().map(|s| Py::new(py, PySetting { inner: s })).collect::<PyResult<Vec<_>>>()?;
    m.add("SETTINGS", PyTuple::new(py, rows)?)?;
    m.add("ERROR_CODES", PyTuple::new(py, crate::error::CODES)?)?;
    m.add_function(wrap_pyfunction!(check_setting, m)?)?;
    Ok(())
}
