//! The core's front door: validate sessions, refresh, exchange access keys, me, logout.

use std::sync::Arc;

use serde_json::Value;

use crate::admissions::{self, Admissions};
use crate::api::{DescopeApi, JwtResponse};
use crate::cache::{token_digest, TokenCache};
use crate::clock::{self, Clock};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::identity::Identity;
use crate::keys::KeyStore;
use crate::token;

/// A session Descope just issued (refresh or access-key exchange), already validated.
#[derive(Debug, Clone)]
pub struct IssuedSession {
    pub session_jwt: String,
    /// The refresh token to use next time: Descope's rotated one, or the one that was sent.
    pub refresh_jwt: Option<String>,
    pub identity: Arc<Identity>,
    pub cookie_max_age: Option<i64>,
}

pub struct DescopeClient {
    cfg: Arc<Config>,
    api: Arc<DescopeApi>,
    keys: KeyStore,
    cache: TokenCache,
    admissions: Admissions,
    clock: Arc<dyn Clock>,
}

impl DescopeClient {
    pub fn new(cfg: Config) -> Self {
        Self::with_clock(cfg, clock::system())
    }

    /// A client whose notion of now (token expiry, caches, grace windows) is `clock`.
    pub fn with_clock(cfg: Config, clock: Arc<dyn Clock>) -> Self {
        let cfg = Arc::new(cfg);
        let api = Arc::new(DescopeApi::new(&cfg.base_url, &cfg.project_id, cfg.http_timeout));
        let fetch_api = api.clone();
        let keys = KeyStore::new(Box::new(move || fetch_api.fetch_keys()), cfg.key_refetch_interval, cfg.key_ttl);
        DescopeClient {
            cache: TokenCache::new(cfg.token_cache_size),
            admissions: Admissions::default(),
            cfg,
            api,
            keys,
            clock,
        }
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    pub fn admitted_count(&self) -> usize {
        self.admissions.len()
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn keys(&self) -> &KeyStore {
        &self.keys
    }

    pub fn cache(&self) -> &TokenCache {
        &self.cache
    }

    /// Verifies a session token and maps it to an identity. A token seen before (and still within
    /// its `exp`, with its key still published) is answered from the cache.
    pub fn validate(&self, session_jwt: &str) -> Result<Arc<Identity>> {
        if session_jwt.len() > self.cfg.max_token_bytes {
            // Before hashing: an oversized token costs nothing but this comparison.
            return Err(token::too_long(session_jwt.len(), self.cfg.max_token_bytes));
        }
        let now = self.clock.unix_seconds();
        // Before the cache: a refetch that drops a key must invalidate what that key verified.
        self.keys.refresh_if_stale();
        let epoch = self.keys.epoch();
        // With the cache off (token_cache_size=0) there is nothing to look up or store: no hash.
        let digest = self.cache.is_enabled().then(|| token_digest(session_jwt));
        // A hit is a token that passed every check below before (same SHA-256), so its header
        // need not be parsed again.
        if let Some(hit) = digest.as_ref().and_then(|d| self.cache.get(d, now, epoch)) {
            self.admit(session_jwt, digest, &hit, now);
            return Ok(hit);
        }
        let header = token::precheck(session_jwt, self.cfg.max_token_bytes)?;
        let key = self.keys.get(&header.kid)?;
        let claims = token::verify(session_jwt, &header, &key, &self.cfg, now)?;
        let identity = Arc::new(Identity::from_claims(claims, &self.cfg)?);
        if let Some(digest) = digest {
            self.cache.insert(digest, identity.clone(), now, epoch);
        }
        self.admit(session_jwt, digest, &identity, now);
        Ok(identity)
    }

    /// Every session this client verifies close to its expiry is admitted (see [`admissions`]).
    fn admit(&self, session_jwt: &str, digest: Option<[u8; 32]>, identity: &Arc<Identity>, now: i64) {
        if identity.expires_at - now <= admissions::WINDOW_SECONDS {
            let digest = digest.unwrap_or_else(|| token_digest(session_jwt));
            self.admissions.admit(digest, identity, now);
        }
    }

    /// Like [`validate`](Self::validate), but a session this client verified shortly before it
    /// expired is still accepted for a short grace: for a second check of the credential later in
    /// the same request (MLflow's authorization function after the server's gate).
    pub fn validate_admitted(&self, session_jwt: &str) -> Result<Arc<Identity>> {
        match self.validate(session_jwt) {
            Err(e @ Error::ExpiredToken { .. }) => {
                let now = self.clock.unix_seconds();
                self.admissions.get(&token_digest(session_jwt), now).ok_or(e)
            }
            other => other,
        }
    }

    /// The identity of a token validated before, without any I/O or crypto; `None` when it is not in
    /// the cache (then call [`validate`](Self::validate), which may fetch keys). Lets an async
    /// server answer repeated tokens on its event loop and hand only the rest to a thread.
    pub fn validate_cached(&self, session_jwt: &str) -> Option<Arc<Identity>> {
        if session_jwt.len() > self.cfg.max_token_bytes || self.keys.is_stale() {
            return None;
        }
        let now = self.clock.unix_seconds();
        let digest = token_digest(session_jwt);
        let hit = self.cache.get(&digest, now, self.keys.epoch())?;
        self.admit(session_jwt, Some(digest), &hit, now);
        Some(hit)
    }

    /// Validates `session_jwt`; when it is expired (or missing) and a refresh token is given,
    /// refreshes and returns the new session instead. `None` in the result's first slot means the
    /// session was valid as sent.
    pub fn validate_or_refresh(
        &self,
        session_jwt: Option<&str>,
        refresh_jwt: Option<&str>,
    ) -> Result<(Arc<Identity>, Option<IssuedSession>)> {
        let first = match session_jwt {
            Some(s) => self.validate(s),
            None => Err(Error::invalid("there is none")),
        };
        match (first, refresh_jwt) {
            (Ok(identity), _) => Ok((identity, None)),
            // An invalid (not just expired) session next to a refresh token happens after key
            // rotation; the refresh token, a credential in its own right, decides.
            (Err(Error::ExpiredToken { .. } | Error::InvalidToken(_)), Some(refresh)) => {
                let issued = self.refresh(refresh)?;
                Ok((issued.identity.clone(), Some(issued)))
            }
            (Err(e), _) => Err(e),
        }
    }

    /// Verifies a refresh token (signature, expiry, issuer, `drn` DSR) and returns its `exp`, so a
    /// server can give the refresh cookie the token's own lifetime. Not cached: called at sign-in.
    pub fn validate_refresh_token(&self, refresh_jwt: &str) -> Result<i64> {
        let verify = || {
            let header = token::precheck(refresh_jwt, self.cfg.max_token_bytes)?;
            let key = self.keys.get(&header.kid)?;
            let now = self.clock.unix_seconds();
            let claims = token::verify_kind(refresh_jwt, &header, &key, &self.cfg, token::TokenKind::Refresh, now)?;
            claims.get("exp").and_then(serde_json::Value::as_i64).ok_or_else(|| Error::invalid("it has no 'exp' claim"))
        };
        verify().map_err(Error::for_refresh_token)
    }

    pub fn refresh(&self, refresh_jwt: &str) -> Result<IssuedSession> {
        token::precheck(refresh_jwt, self.cfg.max_token_bytes)
            .map_err(|e| Error::RefreshFailed(e.for_refresh_token().to_string()))?;
        let resp = self.api.refresh(refresh_jwt)?;
        let identity = self.validate_issued(&resp, Error::RefreshFailed)?;
        Ok(IssuedSession {
            refresh_jwt: resp.refresh_jwt.clone().filter(|r| !r.is_empty()).or_else(|| Some(refresh_jwt.to_string())),
            session_jwt: resp.session_jwt,
            cookie_max_age: resp.cookie_max_age,
            identity,
        })
    }

    pub fn exchange_access_key(&self, access_key: &str) -> Result<IssuedSession> {
        if access_key.trim().is_empty() || access_key.len() > 4096 || access_key.contains(char::is_whitespace) {
            return Err(Error::AccessKeyRejected("the access key is empty or malformed".into()));
        }
        let resp = self.api.exchange_access_key(access_key)?;
        let identity = self.validate_issued(&resp, Error::AccessKeyRejected)?;
        Ok(IssuedSession {
            session_jwt: resp.session_jwt,
            refresh_jwt: None,
            cookie_max_age: resp.cookie_max_age,
            identity,
        })
    }

    /// A session Descope just handed us is still checked: a compromised or misconfigured base URL
    /// must not be able to mint identities.
    fn validate_issued(&self, resp: &JwtResponse, wrap: fn(String) -> Error) -> Result<Arc<Identity>> {
        self.validate(&resp.session_jwt).map_err(|e| match e {
            Error::Unreachable { .. } => e,
            other => wrap(format!("Descope returned a session this server cannot verify ({other})")),
        })
    }

    pub fn me(&self, refresh_jwt: &str) -> Result<Value> {
        self.api.me(refresh_jwt)
    }

    pub fn logout(&self, refresh_jwt: &str) -> Result<()> {
        self.api.logout(refresh_jwt)
    }
}
