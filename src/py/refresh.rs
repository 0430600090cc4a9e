//! `RefreshCoordinator` for Python: the core's refresh single flight, with the cross-process store
//! (files, or the auth database) supplied by the server as a Python object that only ever sees a
//! token's digest and sealed bytes.

use std::sync::{Arc, Mutex};

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyCFunction, PyTuple};

use super::{session_result, to_pyerr, PyDescopeClient, PySessionResult};
use crate::error::{Error, Result};
use crate::refresh::{ProcessStore, Produce, RefreshCoordinator, SharedStore};

/// A Python object with `once(key, produce)`, `revoke(key, ttl)` and `is_revoked(key)` (the
/// `RefreshStore` protocol in the stubs).
struct PyStore(Py<PyAny>);

impl SharedStore for PyStore {
    fn once(&self, key: &str, produce: Produce) -> Result<Option<Vec<u8>>> {
        Python::attach(|py| {
            let failed: Arc<Mutex<Option<Error>>> = Arc::default();
            let pending = Mutex::new(Some(produce));
            let failed_in = failed.clone();
            let callback = PyCFunction::new_closure(
                py,
                None,
                None,
                move |args: &Bound<'_, PyTuple>, _kwargs| -> PyResult<Option<(Py<PyBytes>, f64)>> {
                    let py = args.py();
                    let produce = pending
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .take()
                        .ok_or_else(|| PyRuntimeError::new_err("produce() may be called once"))?;
                    match py.detach(produce) {
                        Ok(Some((blob, ttl))) => Ok(Some((PyBytes::new(py, &blob).unbind(), ttl))),
                        Ok(None) => Ok(None),
                        Err(e) => {
                            let message = e.to_string();
                            *failed_in.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                            Err(PyRuntimeError::new_err(message))
                        }
                    }
                },
            )
            .map_err(|e| Error::Coordination(e.to_string()))?;
            let answer = self.0.call_method1(py, "once", (key, callback));
            if let Some(e) = failed.lock().unwrap_or_else(|p| p.into_inner()).take() {
                return Err(e); // the producer's own error, not the store's
            }
            let answer = answer.map_err(|e| Error::Coordination(format!("the refresh store failed: {e}")))?;
            answer
                .extract::<Option<Vec<u8>>>(py)
                .map_err(|_| Error::Coordination("the refresh store's once() did not return bytes or None".into()))
        })
    }

    fn revoke(&self, key: &str, ttl_seconds: f64) -> Result<()> {
        Python::attach(|py| {
            self.0
                .call_method1(py, "revoke", (key, ttl_seconds))
                .map(|_| ())
                .map_err(|e| Error::Coordination(format!("the refresh store could not record a sign-out: {e}")))
        })
    }

    fn is_revoked(&self, key: &str) -> Result<bool> {
        Python::attach(|py| {
            self.0.call_method1(py, "is_revoked", (key,)).and_then(|v| v.extract::<bool>(py)).map_err(|e| {
                Error::Coordination(format!("the refresh store cannot tell whether the token was signed out: {e}"))
            })
        })
    }
}

/// One refresh per refresh token across threads, worker processes and replicas; results shared
/// through `store`, sealed with a key derived from `secret`.
#[pyclass(frozen, name = "RefreshCoordinator", module = "mlflow_descope_auth")]
pub struct PyRefreshCoordinator {
    inner: Arc<RefreshCoordinator>,
}

#[pymethods]
impl PyRefreshCoordinator {
    #[new]
    #[pyo3(signature = (client, secret, store=None))]
    fn new(client: &PyDescopeClient, secret: &str, store: Option<Py<PyAny>>) -> PyResult<Self> {
        let store: Arc<dyn SharedStore> = match store {
            Some(s) => Arc::new(PyStore(s)),
            None => Arc::new(ProcessStore::default()),
        };
        let inner = RefreshCoordinator::new(client.inner.clone(), store, secret.as_bytes()).map_err(to_pyerr)?;
        Ok(PyRefreshCoordinator { inner: Arc::new(inner) })
    }

    /// The session `refresh_token` renews to (one call to Descope per token, however many ask).
    fn refresh(&self, py: Python<'_>, refresh_token: &str) -> PyResult<PySessionResult> {
        let inner = &self.inner;
        let issued = py.detach(|| inner.refresh(refresh_token)).map_err(to_pyerr)?;
        session_result(py, issued, true)
    }

    /// Ends `refresh_token` on every process sharing the store (until its own expiry).
    fn revoke(&self, py: Python<'_>, refresh_token: &str) -> PyResult<()> {
        let inner = &self.inner;
        py.detach(|| inner.revoke(refresh_token)).map_err(to_pyerr)
    }

    /// Signs `refresh_token` out everywhere: it and the token it rotated into are revoked in every
    /// process, then Descope logs out the one still alive. Raises the first failure, after all steps.
    fn sign_out(&self, py: Python<'_>, refresh_token: &str) -> PyResult<()> {
        let inner = &self.inner;
        py.detach(|| inner.sign_out(refresh_token)).map_err(to_pyerr)
    }

    fn __repr__(&self) -> &'static str {
        "RefreshCoordinator(<state hidden>)"
    }
}
