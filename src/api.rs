//! The Descope HTTP API: keys, refresh, access-key exchange, me, logout.
//!
//! Every call has explicit connect and total timeouts and follows no redirects (a redirect would
//! carry the `Authorization` header somewhere else). The HTTP client is created on first use, not at
//! import, and is created again in a child process: gunicorn forks after the parent may have used
//! it, and the connection pool and runtime thread of a client do not survive `fork()`.

use std::sync::Mutex;
use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder};
use serde::Deserialize;
use serde_json::Value;

use crate::error::{redact, Error, Result};

/// Descope's answer to refresh and access-key exchange (`JWTResponse`), the fields we use.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JwtResponse {
    pub session_jwt: String,
    #[serde(default)]
    pub refresh_jwt: Option<String>,
    #[serde(default)]
    pub cookie_max_age: Option<i64>,
    #[serde(default)]
    pub cookie_path: Option<String>,
    #[serde(default)]
    pub cookie_domain: Option<String>,
}

pub struct DescopeApi {
    base_url: String,
    project_id: String,
    timeout: Duration,
    client: Mutex<Option<(u32, Client)>>,
}

impl DescopeApi {
    pub fn new(base_url: &str, project_id: &str, timeout: Duration) -> Self {
        DescopeApi {
            base_url: base_url.trim_end_matches('/').to_string(),
            project_id: project_id.to_string(),
            timeout,
            client: Mutex::new(None),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn client(&self) -> Result<Client> {
        let pid = std::process::id();
        let mut slot = self.client.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((owner, client)) = slot.as_ref() {
            if *owner == pid {
                return Ok(client.clone());
            }
        }
        let client = Client::builder()
            .connect_timeout(self.timeout.min(Duration::from_secs(3)))
            .timeout(self.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("mlflow-descope-auth/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Api { operation: "client setup", reason: redact(&e.to_string()) })?;
        *slot = Some((pid, client.clone()));
        Ok(client)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url, path)
    }

    fn bearer(&self, secret: &str) -> String {
        format!("Bearer {}:{}", self.project_id, secret)
    }

    /// Sends the request; `Ok(Err(..))` is an answer from Descope with an error status.
    fn send(&self, path: &str, req: RequestBuilder) -> Result<std::result::Result<Value, (u16, String)>> {
        let unreachable = |reason: String| Error::Unreachable { url: self.url(path), reason: redact(&reason) };
        let resp = req.send().map_err(|e| unreachable(describe_transport_error(&e)))?;
        let status = resp.status();
        let body = resp.text().map_err(|e| unreachable(describe_transport_error(&e)))?;
        if status.is_success() {
            let value = serde_json::from_str(&body).map_err(|_| {
                unreachable(format!(
                    "the answer (HTTP {}) is not JSON; is DESCOPE_BASE_URI a Descope API?",
                    status.as_u16()
                ))
            })?;
            return Ok(Ok(value));
        }
        if status.is_server_error() || status.as_u16() == 429 {
            return Err(unreachable(status_text(status.as_u16(), &describe_error_body(&body))));
        }
        Ok(Err((status.as_u16(), describe_error_body(&body))))
    }

    /// `GET /v2/keys/{project}`: the project's public keys as raw JWK objects.
    pub fn fetch_keys(&self) -> Result<Vec<Value>> {
        let path = format!("/v2/keys/{}", self.project_id);
        let req = self.client()?.get(self.url(&path));
        match self.send(&path, req)? {
            Ok(Value::Object(mut obj)) => match obj.remove("keys") {
                Some(Value::Array(keys)) => Ok(keys),
                _ => Err(Error::Unreachable { url: self.url(&path), reason: "the answer has no 'keys' list".into() }),
            },
            Ok(_) => Err(Error::Unreachable { url: self.url(&path), reason: "the answer is not a key set".into() }),
            Err((status, reason)) => Err(Error::Api {
                operation: "key fetch",
                reason: format!("{}; check DESCOPE_PROJECT_ID", status_text(status, &reason)),
            }),
        }
    }

    pub fn refresh(&self, refresh_jwt: &str) -> Result<JwtResponse> {
        let path = "/v1/auth/refresh";
        let req = self
            .client()?
            .post(self.url(path))
            .header("Authorization", self.bearer(refresh_jwt))
            .json(&serde_json::json!({}));
        match self.send(path, req)? {
            Ok(v) => parse_jwt_response(v).map_err(Error::RefreshFailed),
            Err((status, reason)) => {
                Err(Error::RefreshFailed(format!("Descope answered {}", status_text(status, &reason))))
            }
        }
    }

    pub fn exchange_access_key(&self, access_key: &str) -> Result<JwtResponse> {
        let path = "/v1/auth/accesskey/exchange";
        let body = serde_json::json!({"loginOptions": {}});
        let req = self.client()?.post(self.url(path)).header("Authorization", self.bearer(access_key)).json(&body);
        match self.send(path, req)? {
            Ok(v) => parse_jwt_response(v).map_err(Error::AccessKeyRejected),
            Err((status, reason)) => {
                Err(Error::AccessKeyRejected(format!("Descope answered {}", status_text(status, &reason))))
            }
        }
    }

    /// `GET /v1/auth/me`: the user's details as Descope returns them.
    pub fn me(&self, refresh_jwt: &str) -> Result<Value> {
        let path = "/v1/auth/me";
        let req = self.client()?.get(self.url(path)).header("Authorization", self.bearer(refresh_jwt));
        self.send(path, req)?.map_err(|(status, reason)| Error::Api {
            operation: "user details (me)",
            reason: format!("{}; sign in again", status_text(status, &reason)),
        })
    }

    /// `POST /v1/auth/logout`: revokes the refresh token (and its sessions' refresh ability).
    pub fn logout(&self, refresh_jwt: &str) -> Result<()> {
        let path = "/v1/auth/logout";
        let req = self
            .client()?
            .post(self.url(path))
            .header("Authorization", self.bearer(refresh_jwt))
            .json(&serde_json::json!({}));
        self.send(path, req)?
            .map(|_| ())
            .map_err(|(status, reason)| Error::Api { operation: "logout", reason: status_text(status, &reason) })
    }
}

/// `HTTP 401 (E061005: ...)`, or just `HTTP 404` when the body said nothing useful.
fn status_text(status: u16, reason: &str) -> String {
    if reason.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status} {reason}")
    }
}

fn parse_jwt_response(value: Value) -> std::result::Result<JwtResponse, String> {
    serde_json::from_value::<JwtResponse>(value)
        .ok()
        .filter(|r| !r.session_jwt.is_empty())
        .ok_or_else(|| "Descope's answer has no sessionJwt".to_string())
}

/// Descope error bodies look like `{"errorCode": "E061005", "errorDescription": "...", ...}`.
fn describe_error_body(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let field = |name: &str| parsed.as_ref().and_then(|v| v.get(name)).and_then(Value::as_str).map(String::from);
    let text = match (field("errorCode"), field("errorDescription").or_else(|| field("errorMessage"))) {
        (Some(code), Some(desc)) => format!("({code}: {desc})"),
        (None, Some(desc)) => format!("({desc})"),
        (Some(code), None) => format!("({code})"),
        (None, None) => String::new(),
    };
    let mut text = redact(&text);
    text.truncate(300);
    text
}

fn describe_transport_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out (DESCOPE_HTTP_TIMEOUT)".into()
    } else if e.is_connect() {
        "connection failed".into()
    } else {
        // Walk to the root cause: reqwest's top-level message repeats the URL and little else.
        let mut source: &dyn std::error::Error = e;
        while let Some(next) = source.source() {
            source = next;
        }
        source.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_summarised_without_secrets() {
        let body = r#"{"errorCode":"E061005","errorDescription":"Invalid token eyJhbGciOi.eyJ.sig"}"#;
        let text = describe_error_body(body);
        assert!(text.starts_with("(E061005: Invalid token"), "{text}");
        assert!(!text.contains("eyJ"), "{text}");
        assert_eq!(describe_error_body("<html>"), "");
        assert_eq!(status_text(404, ""), "HTTP 404");
        assert_eq!(status_text(401, "(E1: no)"), "HTTP 401 (E1: no)");
    }
}
