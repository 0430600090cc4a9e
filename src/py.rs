//! The PyO3 layer: `mlflow_descope_auth._core`. Thin by design: argument conversion, the
//! exception hierarchy, and `Python::detach` around every call that may do crypto or network I/O.

use std::sync::Arc;

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use serde_json::Value;

use crate::client::{DescopeClient, IssuedSession};
use crate::config::{Config, Keywords};
use crate::error::{Error, ErrorKind};
use crate::identity::Identity;
use crate::session::{ClientSession, Source};

mod refresh;
mod stored;

create_exception!(
    mlflow_descope_auth,
    DescopeAuthError,
    PyException,
    "Base class of every error this package raises; `code` says which error, in a stable word."
);
create_exception!(
    mlflow_descope_auth,
    ConfigurationError,
    DescopeAuthError,
    "A setting is missing or invalid: `variable` names it (and `keyword` the DescopeClient argument)."
);
create_exception!(
    mlflow_descope_auth,
    InvalidTokenError,
    DescopeAuthError,
    "A token failed validation (shape, signature, issuer, claims)."
);
create_exception!(
    mlflow_descope_auth,
    ExpiredTokenError,
    InvalidTokenError,
    "The session token is past its `exp` (plus leeway)."
);
create_exception!(
    mlflow_descope_auth,
    DescopeUnreachableError,
    DescopeAuthError,
    "Descope could not be reached or answered with a server error."
);
create_exception!(mlflow_descope_auth, DescopeApiError, DescopeAuthError, "Descope answered a request with an error.");
create_exception!(mlflow_descope_auth, RefreshFailedError, DescopeApiError, "Descope refused to refresh the session.");
create_exception!(
    mlflow_descope_auth,
    AccessKeyExchangeError,
    DescopeApiError,
    "Descope refused to exchange the access key."
);

/// The Python exception for `e`, with its stable `code` (and, for configuration errors, the
/// `variable` and `keyword`) as attributes, so callers never match on the message.
pub(crate) fn to_pyerr(e: Error) -> PyErr {
    let msg = e.to_string();
    let err = match e.kind() {
        ErrorKind::Config => ConfigurationError::new_err(msg),
        ErrorKind::InvalidToken => InvalidTokenError::new_err(msg),
        ErrorKind::ExpiredToken => ExpiredTokenError::new_err(msg),
        ErrorKind::Unreachable => DescopeUnreachableError::new_err(msg),
        ErrorKind::RefreshFailed => RefreshFailedError::new_err(msg),
        ErrorKind::AccessKeyRejected => AccessKeyExchangeError::new_err(msg),
        ErrorKind::Api => DescopeApiError::new_err(msg),
    };
    Python::attach(|py| {
        let value = err.value(py);
        value.setattr("code", e.code())?;
        if e.kind() == ErrorKind::Config {
            value.setattr("variable", e.variable())?;
            value.setattr("keyword", e.keyword())?;
        }
        PyResult::Ok(())
    })
    .err()
    .unwrap_or(err)
}

/// Class-level defaults of the attributes, for exceptions raised without [`to_pyerr`] (in Python).
fn add_error_codes(py: Python<'_>) -> PyResult<()> {
    py.get_type::<DescopeAuthError>().setattr("code", "descope_auth_error")?;
    py.get_type::<ConfigurationError>().setattr("code", "config_invalid")?;
    py.get_type::<ConfigurationError>().setattr("variable", py.None())?;
    py.get_type::<ConfigurationError>().setattr("keyword", py.None())?;
    py.get_type::<InvalidTokenError>().setattr("code", "token_invalid")?;
    py.get_type::<ExpiredTokenError>().setattr("code", "token_expired")?;
    py.get_type::<DescopeUnreachableError>().setattr("code", "descope_unreachable")?;
    py.get_type::<DescopeApiError>().setattr("code", "descope_api")?;
    py.get_type::<RefreshFailedError>().setattr("code", "refresh_failed")?;
    py.get_type::<AccessKeyExchangeError>().setattr("code", "access_key_rejected")?;
    Ok(())
}

fn json_to_py<'py>(py: Python<'py>, value: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        Value::Null => py.None().into_bound(py),
        Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any(),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => i.into_pyobject(py)?.into_any(),
            (None, Some(u)) => u.into_pyobject(py)?.into_any(),
            _ => n.as_f64().unwrap_or(f64::NAN).into_pyobject(py)?.into_any(),
        },
        Value::String(s) => s.into_pyobject(py)?.into_any(),
        Value::Array(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(json_to_py(py, item)?)?;
            }
            list.into_any()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, v) in map {
                dict.set_item(k, json_to_py(py, v)?)?;
            }
            dict.into_any()
        }
    })
}

/// Who a verified Descope session belongs to, and the MLflow permission it maps to. Immutable.
#[pyclass(frozen, name = "Identity", module = "mlflow_descope_auth")]
pub struct PyIdentity {
    inner: Arc<Identity>,
}

#[pymethods]
impl PyIdentity {
    #[getter]
    fn user_id(&self) -> &str {
        &self.inner.user_id
    }
    #[getter]
    fn username(&self) -> &str {
        &self.inner.username
    }
    #[getter]
    fn email(&self) -> Option<&str> {
        self.inner.email.as_deref()
    }
    #[getter]
    fn name(&self) -> Option<&str> {
        self.inner.name.as_deref()
    }
    #[getter]
    fn roles(&self) -> Vec<String> {
        self.inner.roles.clone()
    }
    #[getter]
    fn permissions(&self) -> Vec<String> {
        self.inner.permissions.clone()
    }
    #[getter]
    fn tenants<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let out = PyDict::new(py);
        for (id, access) in &self.inner.tenants {
            let d = PyDict::new(py);
            d.set_item("roles", access.roles.clone())?;
            d.set_item("permissions", access.permissions.clone())?;
            out.set_item(id, d)?;
        }
        Ok(out)
    }
    #[getter]
    fn current_tenant(&self) -> Option<&str> {
        self.inner.current_tenant.as_deref()
    }
    #[getter]
    fn expires_at(&self) -> i64 {
        self.inner.expires_at
    }
    #[getter]
    fn issued_at(&self) -> Option<i64> {
        self.inner.issued_at
    }
    #[getter]
    fn is_admin(&self) -> bool {
        self.inner.is_admin
    }
    #[getter]
    fn permission(&self) -> &'static str {
        self.inner.permission.as_str()
    }
    /// Every claim of the session token, custom claims included.
    #[getter]
    fn claims<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        json_to_py(py, &Value::Object(self.inner.claims.clone()))
    }

    #[pyo3(signature = (role, tenant=None))]
    fn has_role(&self, role: &str, tenant: Option<&str>) -> bool {
        self.inner.has_role(role, tenant)
    }

    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let value = serde_json::to_value(&*self.inner).map_err(|e| DescopeAuthError::new_err(e.to_string()))?;
        json_to_py(py, &value)
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other.cast::<PyIdentity>().is_ok_and(|o| *o.get().inner == *self.inner)
    }

    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&self.inner.user_id, self.inner.expires_at, self.inner.issued_at).hash(&mut h);
        h.finish()
    }

    fn __repr__(&self) -> String {
        format!(
            "Identity(username={:?}, user_id={:?}, roles={:?}, is_admin={}, permission={:?})",
            self.inner.username,
            self.inner.user_id,
            self.inner.roles,
            if self.inner.is_admin { "True" } else { "False" },
            self.inner.permission.as_str()
        )
    }
}

fn wrap_identity(identity: Arc<Identity>) -> PyIdentity {
    PyIdentity { inner: identity }
}

/// A session Descope issued: the identity plus the tokens to store (cookies, environment).
#[pyclass(frozen, name = "SessionResult", module = "mlflow_descope_auth")]
pub struct PySessionResult {
    #[pyo3(get)]
    identity: Py<PyIdentity>,
    #[pyo3(get)]
    session_token: String,
    #[pyo3(get)]
    refresh_token: Option<String>,
    /// True when Descope issued a new session (the one sent was expired or is a refresh/key).
    #[pyo3(get)]
    refreshed: bool,
    #[pyo3(get)]
    cookie_max_age: Option<i64>,
}

#[pymethods]
impl PySessionResult {
    fn __repr__(&self) -> String {
        // Never the tokens: reprs end up in logs and tracebacks.
        let refreshed = if self.refreshed { "True" } else { "False" };
        format!("SessionResult(identity={}, refreshed={refreshed})", self.identity.get().__repr__())
    }
}

fn session_result(py: Python<'_>, issued: IssuedSession, refreshed: bool) -> PyResult<PySessionResult> {
    Ok(PySessionResult {
        identity: Py::new(py, wrap_identity(issued.identity))?,
        session_token: issued.session_jwt,
        refresh_token: issued.refresh_jwt,
        refreshed,
        cookie_max_age: issued.cookie_max_age,
    })
}

/// Validates Descope sessions and talks to Descope's API. Safe to share across threads; build one
/// per process (see `mlflow_descope_auth.get_descope_client`).
#[pyclass(frozen, name = "DescopeClient", module = "mlflow_descope_auth")]
pub struct PyDescopeClient {
    inner: Arc<DescopeClient>,
}

#[pymethods]
impl PyDescopeClient {
    #[new]
    #[pyo3(signature = (
        project_id, *, base_url=None, leeway=None, audience=None, admin_roles=None, username_claim=None,
        default_permission=None, role_permissions=None, http_timeout=None, key_refetch_interval=None,
        key_ttl=None, token_cache_size=None
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        project_id: &str,
        base_url: Option<&str>,
        leeway: Option<f64>,
        audience: Option<Vec<String>>,
        admin_roles: Option<Vec<String>>,
        username_claim: Option<&str>,
        default_permission: Option<&str>,
        role_permissions: Option<&str>,
        http_timeout: Option<f64>,
        key_refetch_interval: Option<f64>,
        key_ttl: Option<f64>,
        token_cache_size: Option<i64>,
    ) -> PyResult<Self> {
        let keywords = Keywords {
            base_url,
            leeway,
            audience,
            admin_roles,
            username_claim,
            default_permission,
            role_permissions,
            http_timeout,
            key_refetch_interval,
            key_ttl,
            token_cache_size,
        };
        let cfg = Config::from_keywords(project_id, keywords).map_err(to_pyerr)?;
        Ok(PyDescopeClient { inner: Arc::new(DescopeClient::new(cfg)) })
    }

    /// Builds a client from `DESCOPE_*` variables in `environ` (default: `os.environ`).
    #[staticmethod]
    #[pyo3(signature = (environ=None))]
    fn from_env(py: Python<'_>, environ: Option<&Bound<'_, PyAny>>) -> PyResult<Self> {
        let environ = match environ {
            Some(e) => e.clone(),
            None => py.import("os")?.getattr("environ")?,
        };
        let lookup = |name: &str| -> Option<String> {
            environ.call_method1("get", (name,)).ok().and_then(|v| v.extract::<Option<String>>().ok().flatten())
        };
        let cfg = Config::from_lookup(lookup).map_err(to_pyerr)?;
        Ok(PyDescopeClient { inner: Arc::new(DescopeClient::new(cfg)) })
    }

    #[getter]
    fn project_id(&self) -> &str {
        &self.inner.config().project_id
    }
    #[getter]
    fn base_url(&self) -> &str {
        &self.inner.config().base_url
    }
    /// How many signing keys are cached now.
    #[getter]
    fn keys_loaded(&self) -> usize {
        self.inner.keys().loaded_count()
    }
    /// How many times this client asked the key endpoint.
    #[getter]
    fn key_fetch_count(&self) -> u64 {
        self.inner.keys().fetch_count()
    }
    #[getter]
    fn cached_sessions(&self) -> usize {
        self.inner.cache().len()
    }
    /// How many near-expiry sessions are admitted for their grace now.
    #[getter]
    fn admitted_sessions(&self) -> usize {
        self.inner.admitted_count()
    }

    /// The effective settings (nothing secret is among them).
    fn settings<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let c = self.inner.config();
        let d = PyDict::new(py);
        d.set_item("project_id", &c.project_id)?;
        d.set_item("base_url", &c.base_url)?;
        d.set_item("leeway", c.leeway.as_secs_f64())?;
        d.set_item("audience", c.audience.clone())?;
        d.set_item("admin_roles", c.admin_roles.clone())?;
        d.set_item("username_claim", &c.username_claim)?;
        d.set_item("default_permission", c.default_permission.as_str())?;
        let roles: Vec<(String, &str)> = c.role_permissions.iter().map(|(r, p)| (r.clone(), p.as_str())).collect();
        d.set_item("role_permissions", roles)?;
        d.set_item("http_timeout", c.http_timeout.as_secs_f64())?;
        d.set_item("key_refetch_interval", c.key_refetch_interval.as_secs_f64())?;
        d.set_item("key_ttl", c.key_ttl.as_secs_f64())?;
        d.set_item("token_cache_size", c.token_cache_size)?;
        d.set_item("max_token_bytes", c.max_token_bytes)?;
        Ok(d)
    }

    /// Fetches the key set now; returns how many usable keys it has.
    fn fetch_keys(&self, py: Python<'_>) -> PyResult<usize> {
        let inner = self.inner.clone();
        py.detach(move || inner.keys().refetch()).map_err(to_pyerr)
    }

    /// Validates a session token and returns its identity. To renew an expired session as well
    /// (and get the new tokens, including a rotated refresh token) use
    /// `validate_and_refresh_session`.
    fn validate_session(&self, py: Python<'_>, session_token: &str) -> PyResult<PyIdentity> {
        let inner = &self.inner;
        let identity = py.detach(|| inner.validate(session_token)).map_err(to_pyerr)?;
        Ok(wrap_identity(identity))
    }

    /// Like `validate_session`, but a session this client verified shortly before its expiry is
    /// accepted for a minute after it: for a second look at the credential later in the same
    /// request (MLflow's authorization function, after the server's gate).
    fn validate_admitted(&self, py: Python<'_>, session_token: &str) -> PyResult<PyIdentity> {
        let inner = &self.inner;
        let identity = py.detach(|| inner.validate_admitted(session_token)).map_err(to_pyerr)?;
        Ok(wrap_identity(identity))
    }

    /// The identity of a session token validated before (still within `exp`, key still published),
    /// or None: no network and no crypto, cheap enough for an event loop.
    fn validate_cached(&self, session_token: &str) -> Option<PyIdentity> {
        self.inner.validate_cached(session_token).map(wrap_identity)
    }

    /// Validates the session, refreshing it when it is expired or missing and a refresh token is
    /// given. `refreshed` on the result says whether new tokens were issued.
    #[pyo3(signature = (session_token=None, refresh_token=None))]
    fn validate_and_refresh_session(
        &self,
        py: Python<'_>,
        session_token: Option<&str>,
        refresh_token: Option<&str>,
    ) -> PyResult<PySessionResult> {
        let inner = &self.inner;
        let (identity, issued) =
            py.detach(|| inner.validate_or_refresh(session_token, refresh_token)).map_err(to_pyerr)?;
        match issued {
            Some(issued) => session_result(py, issued, true),
            None => session_result(
                py,
                IssuedSession {
                    session_jwt: session_token.unwrap_or_default().to_string(),
                    refresh_jwt: refresh_token.map(String::from),
                    identity,
                    cookie_max_age: None,
                },
                false,
            ),
        }
    }

    /// Verifies a refresh token (signature, expiry, issuer, kind) and returns its `exp` (unix time).
    fn validate_refresh_token(&self, py: Python<'_>, refresh_token: &str) -> PyResult<i64> {
        let inner = &self.inner;
        py.detach(|| inner.validate_refresh_token(refresh_token)).map_err(to_pyerr)
    }

    fn refresh_session(&self, py: Python<'_>, refresh_token: &str) -> PyResult<PySessionResult> {
        let inner = &self.inner;
        let issued = py.detach(|| inner.refresh(refresh_token)).map_err(to_pyerr)?;
        session_result(py, issued, true)
    }

    fn exchange_access_key(&self, py: Python<'_>, access_key: &str) -> PyResult<PySessionResult> {
        let inner = &self.inner;
        let issued = py.detach(|| inner.exchange_access_key(access_key)).map_err(to_pyerr)?;
        session_result(py, issued, true)
    }

    /// The user's details from Descope (`GET /v1/auth/me`).
    fn me<'py>(&self, py: Python<'py>, refresh_token: &str) -> PyResult<Bound<'py, PyAny>> {
        let inner = &self.inner;
        let value = py.detach(|| inner.me(refresh_token)).map_err(to_pyerr)?;
        json_to_py(py, &value)
    }

    /// Revokes the refresh token at Descope.
    fn logout(&self, py: Python<'_>, refresh_token: &str) -> PyResult<()> {
        let inner = &self.inner;
        py.detach(|| inner.logout(refresh_token)).map_err(to_pyerr)
    }

    fn __repr__(&self) -> String {
        format!(
            "DescopeClient(project_id={:?}, base_url={:?})",
            self.inner.config().project_id,
            self.inner.config().base_url
        )
    }
}

/// The session a client script sends: renewed ahead of expiry from an access key, a refresh token
/// or the login file `mlflow-descope-auth login` stored, one renewal at a time however many threads
/// (and, for a login file, processes) ask.
#[pyclass(frozen, name = "ClientSession", module = "mlflow_descope_auth")]
pub struct PyClientSession {
    inner: Arc<ClientSession>,
}

#[pymethods]
impl PyClientSession {
    #[new]
    #[pyo3(signature = (
        client, *, access_key=None, session_token=None, refresh_token=None, login_file=None, tracking_uri=None,
        refresh_margin=60
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        client: &PyDescopeClient,
        access_key: Option<String>,
        session_token: Option<String>,
        refresh_token: Option<String>,
        login_file: Option<std::path::PathBuf>,
        tracking_uri: Option<String>,
        refresh_margin: i64,
    ) -> PyResult<Self> {
        let source = match (access_key, login_file, tracking_uri) {
            (Some(k), None, None) => Source::AccessKey(k),
            (None, Some(path), Some(tracking_uri)) if session_token.is_none() && refresh_token.is_none() => {
                Source::LoginFile { path, tracking_uri }
            }
            (None, None, None) => Source::Tokens { session: session_token, refresh: refresh_token },
            _ => {
                return Err(pyo3::exceptions::PyTypeError::new_err(
                    "pass access_key, or session_token/refresh_token, or login_file with tracking_uri",
                ))
            }
        };
        let client = client.inner.clone();
        let session = py.detach(move || ClientSession::new(client, source, refresh_margin)).map_err(to_pyerr)?;
        Ok(PyClientSession { inner: Arc::new(session) })
    }

    /// The session token to send now (renewed first when close to expiry).
    fn token(&self, py: Python<'_>) -> PyResult<String> {
        let inner = &self.inner;
        let (token, _) = py.detach(|| inner.token()).map_err(to_pyerr)?;
        Ok(token.to_string())
    }

    /// The token to send now and its identity, from one consistent snapshot.
    fn token_and_identity(&self, py: Python<'_>) -> PyResult<(String, PyIdentity)> {
        let inner = &self.inner;
        let (token, identity) = py.detach(|| inner.token()).map_err(to_pyerr)?;
        Ok((token.to_string(), wrap_identity(identity)))
    }

    fn identity(&self, py: Python<'_>) -> PyResult<PyIdentity> {
        let inner = &self.inner;
        let (_, identity) = py.detach(|| inner.token()).map_err(to_pyerr)?;
        Ok(wrap_identity(identity))
    }

    /// Called after the server answered 401 to `rejected_token`: renews once (unless another thread
    /// already did) and returns the token to retry with.
    fn renew_after_rejection(&self, py: Python<'_>, rejected_token: &str) -> PyResult<String> {
        let inner = &self.inner;
        let (token, _) = py.detach(|| inner.renew_after_rejection(rejected_token)).map_err(to_pyerr)?;
        Ok(token.to_string())
    }

    fn __repr__(&self) -> &'static str {
        "ClientSession(<credentials hidden>)"
    }
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<PyDescopeClient>()?;
    m.add_class::<PyIdentity>()?;
    m.add_class::<PySessionResult>()?;
    m.add_class::<PyClientSession>()?;
    m.add_class::<refresh::PyRefreshCoordinator>()?;
    m.add("DescopeAuthError", py.get_type::<DescopeAuthError>())?;
    m.add("ConfigurationError", py.get_type::<ConfigurationError>())?;
    m.add("InvalidTokenError", py.get_type::<InvalidTokenError>())?;
    m.add("ExpiredTokenError", py.get_type::<ExpiredTokenError>())?;
    m.add("DescopeUnreachableError", py.get_type::<DescopeUnreachableError>())?;
    m.add("DescopeApiError", py.get_type::<DescopeApiError>())?;
    m.add("RefreshFailedError", py.get_type::<RefreshFailedError>())?;
    m.add("AccessKeyExchangeError", py.get_type::<AccessKeyExchangeError>())?;
    add_error_codes(py)?;
    crate::py_settings::register(m)?;
    stored::register(m)?;
    Ok(())
}
