//! A client-side session: the token a script sends, renewed ahead of expiry, one renewal at a time
//! (across the processes sharing a stored login, too).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use crate::client::{DescopeClient, IssuedSession};
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::stored_login::{self, sign_in_again, StoredLogin};

/// Where new sessions come from.
pub enum Source {
    /// An access key (CI, services): exchanged for a session, and again before it expires.
    AccessKey(String),
    /// A session token and, optionally, a refresh token (rotated as Descope rotates it).
    Tokens { session: Option<String>, refresh: Option<String> },
    /// The login `mlflow-descope-auth login` stored for `tracking_uri` in `path` (see
    /// [`stored_login`]): read when a session is needed, renewed under the file's lock, and the
    /// rotated tokens written back for the other processes.
    LoginFile { path: PathBuf, tracking_uri: String },
}

struct LoginFile {
    path: PathBuf,
    tracking_uri: String,
}

struct Current {
    token: Arc<str>,
    identity: Arc<Identity>,
    /// Unix time after which the next `token()` call renews first.
    renew_at: i64,
}

pub struct ClientSession {
    client: Arc<DescopeClient>,
    access_key: Option<String>,
    login_file: Option<LoginFile>,
    refresh: Mutex<Option<String>>,
    current: RwLock<Option<Current>>,
    renew_lock: Mutex<()>,
    margin: i64,
}

impl ClientSession {
    /// `margin` is how many seconds before `exp` to renew; it is capped at a quarter of the
    /// session's lifetime so that short sessions are not renewed on every request.
    pub fn new(client: Arc<DescopeClient>, source: Source, margin: i64) -> Result<Self> {
        let (access_key, session, refresh) = match source {
            Source::AccessKey(k) => (Some(k), None, None),
            Source::Tokens { session, refresh } => (None, session, refresh),
            Source::LoginFile { path, tracking_uri } => {
                let file = LoginFile { path, tracking_uri };
                // Fails now when there is nothing usable; the session itself is read on first use.
                file.load("cannot be read")?;
                return Ok(ClientSession {
                    client,
                    access_key: None,
                    login_file: Some(file),
                    refresh: Mutex::new(None),
                    current: RwLock::new(None),
                    renew_lock: Mutex::new(()),
                    margin: margin.max(0),
                });
            }
        };
        if access_key.is_none() && session.is_none() && refresh.is_none() {
            return Err(Error::config(
                "DESCOPE_SESSION_TOKEN",
                "no credential; set DESCOPE_ACCESS_KEY, or DESCOPE_SESSION_TOKEN (and DESCOPE_REFRESH_TOKEN)",
            ));
        }
        let s = ClientSession {
            client,
            access_key,
            login_file: None,
            refresh: Mutex::new(refresh),
            current: RwLock::new(None),
            renew_lock: Mutex::new(()),
            margin: margin.max(0),
        };
        if let Some(token) = session {
            // A stale token from the environment is not fatal when it can be renewed.
            match s.client.validate(&token) {
                Ok(identity) => s.install(token.into(), identity),
                Err(Error::ExpiredToken { .. }) if s.can_renew() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(s)
    }

    fn now(&self) -> i64 {
        self.client.clock().unix_seconds()
    }

    fn can_renew(&self) -> bool {
        self.access_key.is_some() || self.refresh.lock().unwrap_or_else(|e| e.into_inner()).is_some()
    }

    fn renew_at(&self, identity: &Identity) -> i64 {
        let lifetime = identity.expires_at - identity.issued_at.unwrap_or(identity.expires_at - 600);
        identity.expires_at - self.margin.min(lifetime / 4).max(1)
    }

    fn install(&self, token: Arc<str>, identity: Arc<Identity>) {
        let renew_at = self.renew_at(&identity);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(Current { token, identity, renew_at });
    }

    fn current(&self, now: i64) -> Option<(Arc<str>, Arc<Identity>)> {
        let cur = self.current.read().unwrap_or_else(|e| e.into_inner());
        cur.as_ref().filter(|c| now < c.renew_at).map(|c| (c.token.clone(), c.identity.clone()))
    }

    /// The token to send now; renews first when it is close to expiry.
    pub fn token(&self) -> Result<(Arc<str>, Arc<Identity>)> {
        if let Some(found) = self.current(self.now()) {
            return Ok(found);
        }
        self.renew(None)
    }

    /// After the server refused `rejected`: renew once, unless another thread already did.
    pub fn renew_after_rejection(&self, rejected: &str) -> Result<(Arc<str>, Arc<Identity>)> {
        self.renew(Some(rejected))
    }

    fn renew(&self, rejected: Option<&str>) -> Result<(Arc<str>, Arc<Identity>)> {
        let _guard = self.renew_lock.lock().unwrap_or_else(|e| e.into_inner());
        // Single flight: whoever waited for the lock finds the session the first caller got.
        {
            let cur = self.current.read().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = cur.as_ref() {
                let replaced = rejected.is_some_and(|r| *r != *c.token);
                if replaced || (rejected.is_none() && self.now() < c.renew_at) {
                    return Ok((c.token.clone(), c.identity.clone()));
                }
            }
        }
        let issued = match &self.login_file {
            Some(file) => self.obtain_stored(file, rejected)?,
            None => self.obtain()?,
        };
        let token: Arc<str> = issued.session_jwt.into();
        self.install(token.clone(), issued.identity.clone());
        Ok((token, issued.identity))
    }

    fn obtain(&self) -> Result<IssuedSession> {
        if let Some(key) = &self.access_key {
            return self.client.exchange_access_key(key);
        }
        let mut refresh = self.refresh.lock().unwrap_or_else(|e| e.into_inner());
        let Some(rt) = refresh.clone() else {
            // Nothing to renew with: keep the token until it really expires, then say what to set.
            let cur = self.current.read().unwrap_or_else(|e| e.into_inner());
            if let Some(c) = cur.as_ref().filter(|c| self.now() < c.identity.expires_at) {
                return Ok(IssuedSession {
                    session_jwt: c.token.to_string(),
                    refresh_jwt: None,
                    identity: c.identity.clone(),
                    cookie_max_age: None,
                });
            }
            return Err(Error::config(
                "DESCOPE_SESSION_TOKEN",
                "the session expired and cannot be renewed; set DESCOPE_REFRESH_TOKEN or DESCOPE_ACCESS_KEY \
                 (for long jobs), or get a new session token",
            ));
        };
        let issued = self.client.refresh(&rt)?;
        if issued.refresh_jwt.is_some() {
            refresh.clone_from(&issued.refresh_jwt);
        }
        Ok(issued)
    }

    /// Under the login file's lock: the session another process already renewed, if it is still
    /// good (and not the one the server just refused), else a refresh, written back before the lock
    /// is released so that the next process uses the rotated refresh token.
    fn obtain_stored(&self, file: &LoginFile, rejected: Option<&str>) -> Result<IssuedSession> {
        let _held = stored_login::lock(&file.path).map_err(|e| {
            Error::Coordination(format!("cannot lock the stored session {} ({e})", file.path.display()))
        })?;
        let login = file.load("is gone (signed out)")?;
        if rejected != Some(login.session_token.as_str()) {
            match self.client.validate(&login.session_token) {
                Ok(identity) => {
                    let usable_until =
                        if login.refresh_token.is_some() { self.renew_at(&identity) } else { identity.expires_at };
                    if self.now() < usable_until {
                        return Ok(IssuedSession {
                            session_jwt: login.session_token,
                            refresh_jwt: login.refresh_token,
                            identity,
                            cookie_max_age: None,
                        });
                    }
                }
                // Expired, or signed by a rotated key: the refresh token decides.
                Err(Error::ExpiredToken { .. } | Error::InvalidToken(_)) => {}
                Err(e) => return Err(e),
            }
        }
        let Some(refresh) = login.refresh_token.as_deref() else {
            return Err(sign_in_again(&file.tracking_uri, "expired and has no refresh token"));
        };
        let issued = match self.client.refresh(refresh) {
            Ok(issued) => issued,
            Err(Error::RefreshFailed(why)) => {
                return Err(sign_in_again(&file.tracking_uri, format!("cannot be renewed ({why})")))
            }
            // Descope out of reach: the stored session stays for a retry.
            Err(e) => return Err(e),
        };
        let renewed = StoredLogin {
            session_token: issued.session_jwt.clone(),
            refresh_token: issued.refresh_jwt.clone().or(login.refresh_token.clone()),
            ..login
        };
        stored_login::save(&file.path, &renewed).map_err(|e| {
            Error::Coordination(format!("cannot write the renewed session to {} ({e})", file.path.display()))
        })?;
        Ok(issued)
    }
}

impl LoginFile {
    fn load(&self, missing: &str) -> Result<StoredLogin> {
        stored_login::load_for(&self.path, &self.tracking_uri, missing)
    }
}
