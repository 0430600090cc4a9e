//! The stored `mlflow-descope-auth login` and the command-line sign-in codes for Python. The tokens
//! go into Rust and stay there: Python sees where the file is and the fields it displays.

use std::path::PathBuf;

use pyo3::prelude::*;
use pyo3::types::PyBytes;

use super::{to_pyerr, PyDescopeClient};
use crate::code_seal;
use crate::stored_login::{self, StoredLogin};

/// A session `mlflow-descope-auth login` stores for one tracking server. Its tokens can be given
/// but never read back; `renewable` says whether it holds a refresh token.
#[pyclass(frozen, name = "StoredLogin", module = "mlflow_descope_auth")]
pub struct PyStoredLogin {
    inner: StoredLogin,
}

#[pymethods]
impl PyStoredLogin {
    #[new]
    #[pyo3(signature = (*, tracking_uri, project_id, base_url, session_token, refresh_token, user))]
    fn new(
        tracking_uri: String,
        project_id: String,
        base_url: String,
        session_token: String,
        refresh_token: Option<String>,
        user: String,
    ) -> Self {
        let refresh_token = refresh_token.filter(|r| !r.is_empty());
        PyStoredLogin { inner: StoredLogin { tracking_uri, project_id, base_url, session_token, refresh_token, user } }
    }

    #[getter]
    fn tracking_uri(&self) -> &str {
        &self.inner.tracking_uri
    }
    #[getter]
    fn project_id(&self) -> &str {
        &self.inner.project_id
    }
    #[getter]
    fn base_url(&self) -> &str {
        &self.inner.base_url
    }
    #[getter]
    fn user(&self) -> &str {
        &self.inner.user
    }
    #[getter]
    fn renewable(&self) -> bool {
        self.inner.refresh_token.is_some()
    }

    /// The same login, for the tracking URI spelled `tracking_uri`.
    fn with_tracking_uri(&self, tracking_uri: String) -> Self {
        PyStoredLogin { inner: StoredLogin { tracking_uri, ..self.inner.clone() } }
    }

    fn __repr__(&self) -> String {
        format!("{:?}", self.inner)
    }
}

/// The login stored in `path` for `tracking_uri`; RefreshFailedError (saying to run `login` again)
/// when there is none, or the file is not one this package wrote for that server.
#[pyfunction]
pub fn load_login(path: PathBuf, tracking_uri: &str) -> PyResult<PyStoredLogin> {
    let inner = stored_login::load_for(&path, tracking_uri, "cannot be read").map_err(to_pyerr)?;
    Ok(PyStoredLogin { inner })
}

/// Writes `login` to `path` atomically (0600, in a 0700 directory). Raises OSError.
#[pyfunction]
pub fn save_login(py: Python<'_>, path: PathBuf, login: &PyStoredLogin) -> PyResult<()> {
    let inner = login.inner.clone();
    Ok(py.detach(move || {
        let _held = stored_login::lock(&path)?;
        stored_login::save(&path, &inner)
    })?)
}

/// Deletes the login in `path`; False when there was none. Raises OSError.
#[pyfunction]
pub fn delete_login(py: Python<'_>, path: PathBuf) -> PyResult<bool> {
    Ok(py.detach(move || {
        let _held = stored_login::lock(&path)?;
        stored_login::delete(&path)
    })?)
}

/// Ends the login in `path` at Descope (logs its refresh token out); nothing when there is no login
/// or it has no refresh token. Raises the core's errors; the file stays (see `delete_login`).
#[pyfunction]
pub fn logout_login(py: Python<'_>, path: PathBuf, client: &PyDescopeClient) -> PyResult<()> {
    let client = client.inner.clone();
    py.detach(move || {
        let refresh = stored_login::load(&path).ok().flatten().and_then(|l| l.refresh_token);
        refresh.map_or(Ok(()), |r| client.logout(&r))
    })
    .map_err(to_pyerr)
}

/// `payload` sealed with a key derived from the one-time `code` (AES-256-GCM, versioned).
#[pyfunction]
pub fn seal_with_code<'py>(py: Python<'py>, code: &str, payload: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    let blob = code_seal::seal_with_code(code, payload).map_err(to_pyerr)?;
    Ok(PyBytes::new(py, &blob))
}

/// The payload `seal_with_code` sealed with `code`; InvalidTokenError for another code or an
/// altered blob.
#[pyfunction]
pub fn open_with_code<'py>(py: Python<'py>, code: &str, blob: &[u8]) -> PyResult<Bound<'py, PyBytes>> {
    let payload = code_seal::open_with_code(code, blob).map_err(to_pyerr)?;
    Ok(PyBytes::new(py, &payload))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyStoredLogin>()?;
    m.add_function(wrap_pyfunction!(load_login, m)?)?;
    m.add_function(wrap_pyfunction!(save_login, m)?)?;
    m.add_function(wrap_pyfunction!(delete_login, m)?)?;
    m.add_function(wrap_pyfunction!(logout_login, m)?)?;
    m.add_function(wrap_pyfunction!(seal_with_code, m)?)?;
    m.add_function(wrap_pyfunction!(open_with_code, m)?)?;
    Ok(())
}
