//! One refresh per refresh token across threads, worker processes and replicas.
//!
//! A browser sends several requests at once, and with refresh-token rotation only the first
//! refresh of a `DSR` succeeds at Descope: every other request must get that first result instead
//! of being signed out. Threads of one process meet on a striped lock and a short result cache
//! here; processes and hosts meet in a [`SharedStore`] (a file directory on one host, the auth
//! database across replicas), which sees only the token's digest and the result sealed with a key
//! derived from the server secret (AES-256-GCM, the digest as associated data, so a result cannot
//! be replayed under another token).
//!
//! Signing out revokes a refresh token in the store before anything else; every process checks
//! for that before it hands out a remembered result, for the token and for the one it rotated into.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::hkdf::{Salt, HKDF_SHA256};
use serde::{Deserialize, Serialize};

use crate::cache::token_digest;
use crate::client::{DescopeClient, IssuedSession};
use crate::error::{Error, Result};

/// How long a result is reused for the same refresh token (the requests a page load fires at once).
pub const GRACE_MILLIS: i64 = 30_000;
/// A failure to reach Descope is shared only briefly: Descope may be back for the next request.
pub const UNREACHABLE_MILLIS: i64 = 5_000;
/// A revocation outlives every result remembered for its token: those made before the sign-out and
/// one that a refresh in flight at that moment stores after it.
pub const REVOKED_MILLIS: i64 = 4 * GRACE_MILLIS;
pub const REVOKED_MESSAGE: &str = "the refresh token was revoked when the user signed out";

const SEAL_VERSION: u8 = 1;
const SEAL_SALT: &[u8] = b"mlflow-descope-auth refresh results";
const SEAL_INFO: &[u8] = b"aes-256-gcm v1";

/// Produces the sealed result and how long (seconds) to keep it, or `None` when there is nothing
/// to share (Descope refused the token: that answer stays with the process that asked).
pub type Produce = Box<dyn FnOnce() -> Result<Option<(Vec<u8>, f64)>> + Send>;

/// Where the processes of one deployment meet. Keys are 64 lowercase hex characters.
pub trait SharedStore: Send + Sync {
    /// Under a lock on `key` that every process using the store waits for: the unexpired blob
    /// saved under `key`, or else `produce()`'s blob, saved for its time.
    fn once(&self, key: &str, produce: Produce) -> Result<Option<Vec<u8>>>;
    /// Marks `key` revoked for `ttl_seconds` everywhere, and drops any blob saved under it.
    fn revoke(&self, key: &str, ttl_seconds: f64) -> Result<()>;
    /// Whether `key` is revoked now; an error when the store cannot say (the caller then renews
    /// nothing, without taking the answer for a sign-out).
    fn is_revoked(&self, key: &str) -> Result<bool>;
}

/// A store for one process (its threads share results; other processes are not reached).
#[derive(Default)]
pub struct ProcessStore {
    lock: Mutex<()>,
    blobs: Mutex<HashMap<String, (std::time::Instant, Vec<u8>)>>,
    revoked: Mutex<HashMap<String, std::time::Instant>>,
}

impl SharedStore for ProcessStore {
    fn once(&self, key: &str, produce: Produce) -> Result<Option<Vec<u8>>> {
        let _held = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        {
            let mut blobs = self.blobs.lock().unwrap_or_else(|e| e.into_inner());
            blobs.retain(|_, (until, _)| *until > now);
            if let Some((_, blob)) = blobs.get(key) {
                return Ok(Some(blob.clone()));
            }
        }
        let produced = produce()?;
        if let Some((blob, ttl)) = &produced {
            let until = now + std::time::Duration::from_secs_f64(ttl.max(0.0));
            self.blobs.lock().unwrap_or_else(|e| e.into_inner()).insert(key.to_string(), (until, blob.clone()));
        }
        Ok(produced.map(|(blob, _)| blob))
    }

    fn revoke(&self, key: &str, ttl_seconds: f64) -> Result<()> {
        let until = std::time::Instant::now() + std::time::Duration::from_secs_f64(ttl_seconds.max(0.0));
        self.revoked.lock().unwrap_or_else(|e| e.into_inner()).insert(key.to_string(), until);
        self.blobs.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
        Ok(())
    }

    fn is_revoked(&self, key: &str) -> Result<bool> {
        let now = std::time::Instant::now();
        let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        revoked.retain(|_, until| *until > now);
        Ok(revoked.contains_key(key))
    }
}

/// What one process tells the others about a refresh.
#[derive(Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
enum Shared {
    Renewed { session: String, refresh: Option<String>, cookie_max_age: Option<i64> },
    Unreachable { url: String, reason: String },
}

/// AES-256-GCM with a key derived (HKDF-SHA256) from the server secret.
pub struct Sealer {
    key: LessSafeKey,
}

impl Sealer {
    pub fn new(secret: &[u8]) -> Result<Self> {
        if secret.len() < 16 {
            return Err(Error::config(
                "MLFLOW_FLASK_SERVER_SECRET_KEY",
                "the server secret is shorter than 16 bytes; set a long random value, the same on every replica",
            ));
        }
        Self::derive(secret, SEAL_SALT)
    }

    /// A sealer whose key is derived from `secret` with `salt`: one salt per purpose, so that a
    /// blob sealed for one purpose never opens for another even under the same secret.
    pub(crate) fn derive(secret: &[u8], salt: &[u8]) -> Result<Self> {
        let prk = Salt::new(HKDF_SHA256, salt).extract(secret);
        let okm = prk
            .expand(&[SEAL_INFO], &AES_256_GCM)
            .map_err(|_| Error::Coordination("cannot derive the sealing key".into()))?;
        Ok(Sealer { key: LessSafeKey::new(UnboundKey::from(okm)) })
    }

    pub fn seal(&self, key: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| Error::Coordination("no randomness for a nonce".into()))?;
        let mut data = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(key.as_bytes()), &mut data)
            .map_err(|_| Error::Coordination("cannot seal a refresh result".into()))?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + data.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&data);
        Ok(out)
    }

    pub fn open(&self, key: &str, blob: &[u8]) -> Result<Vec<u8>> {
        let unreadable = || {
            Error::Coordination(
                "a refresh result shared by another process cannot be decrypted; every worker and replica \
                 must share MLFLOW_FLASK_SERVER_SECRET_KEY"
                    .into(),
            )
        };
        self.try_open(key, blob).ok_or_else(unreadable)
    }

    /// The plaintext, or `None` when `blob` was not sealed by this key under `key` (or was altered).
    pub(crate) fn try_open(&self, key: &str, blob: &[u8]) -> Option<Vec<u8>> {
        if blob.len() < 1 + NONCE_LEN || blob[0] != SEAL_VERSION {
            return None;
        }
        let nonce = Nonce::try_assume_unique_for_key(&blob[1..1 + NONCE_LEN]).ok()?;
        let mut data = blob[1 + NONCE_LEN..].to_vec();
        let plain = self.key.open_in_place(nonce, Aad::from(key.as_bytes()), &mut data).ok()?;
        Some(plain.to_vec())
    }
}

/// The digest a store knows a refresh token by.
pub fn store_key(refresh_jwt: &str) -> String {
    token_digest(refresh_jwt).iter().map(|b| format!("{b:02x}")).collect()
}

type Outcome = std::result::Result<IssuedSession, Error>;

pub struct RefreshCoordinator {
    client: Arc<DescopeClient>,
    store: Arc<dyn SharedStore>,
    sealer: Arc<Sealer>,
    /// One lock per refresh token being renewed right now (removed when nobody holds or waits for
    /// it), so the renewals of different users never wait for each other.
    flights: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    done: Mutex<HashMap<String, (i64, Outcome)>>,
    revoked: Mutex<HashMap<String, i64>>,
}

impl RefreshCoordinator {
    pub fn new(client: Arc<DescopeClient>, store: Arc<dyn SharedStore>, secret: &[u8]) -> Result<Self> {
        Ok(RefreshCoordinator {
            client,
            store,
            sealer: Arc::new(Sealer::new(secret)?),
            flights: Mutex::new(HashMap::new()),
            done: Mutex::new(HashMap::new()),
            revoked: Mutex::new(HashMap::new()),
        })
    }

    fn now(&self) -> i64 {
        self.client.clock().unix_millis()
    }

    /// The session `refresh_jwt` renews to: this process's or another's recent result for it, or a
    /// new one from Descope (one call per token however many ask at once).
    pub fn refresh(&self, refresh_jwt: &str) -> Result<IssuedSession> {
        let key = store_key(refresh_jwt);
        self.refuse_if_revoked(&key)?; // before the cache and before Descope
        let outcome = match self.recent(&key) {
            Some(hit) => hit,
            None => self.in_flight(&key, || match self.recent(&key) {
                Some(hit) => Ok(hit),
                None => {
                    self.refuse_if_revoked(&key)?; // signed out while this request waited
                    self.refresh_shared(&key, refresh_jwt)
                }
            })?,
        };
        let issued = outcome?;
        // A remembered result is handed out only while neither the token it renewed nor the one it
        // rotated into has been signed out since.
        self.refuse_if_revoked(&key)?;
        if let Some(next) = issued.refresh_jwt.as_deref().filter(|r| *r != refresh_jwt) {
            self.refuse_if_revoked(&store_key(next))?;
        }
        Ok(issued)
    }

    /// Signs a refresh token out: tombstones for it and for the token it rotated into (a browser
    /// may sign out with a `DSR` a parallel request just renewed), then Descope's logout of the one
    /// still alive there. Every step runs; the first failure is returned.
    pub fn sign_out(&self, refresh_jwt: &str) -> Result<()> {
        let successor = self.successor(refresh_jwt);
        let mut failed = None;
        for token in std::iter::once(refresh_jwt).chain(successor.as_deref()) {
            if let Err(e) = self.revoke(token) {
                failed.get_or_insert(e);
            }
        }
        if let Err(e) = self.client.logout(successor.as_deref().unwrap_or(refresh_jwt)) {
            failed.get_or_insert(e);
        }
        failed.map_or(Ok(()), Err)
    }

    /// Ends a refresh token here: the revocation goes to the store first, so no process hands out a
    /// result for it after this returns. The store keeps it until the token's own expiry, so that a
    /// sign-out Descope did not confirm still holds here; this process refuses it even if the store
    /// failed.
    pub fn revoke(&self, refresh_jwt: &str) -> Result<()> {
        let key = store_key(refresh_jwt);
        let now = self.now();
        {
            let mut revoked = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
            revoked.retain(|_, until| *until > now);
            revoked.insert(key.clone(), now + REVOKED_MILLIS);
        }
        self.done.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
        let lifetime = match self.client.validate_refresh_token(refresh_jwt) {
            Ok(exp) => (exp * 1000).saturating_sub(now),
            Err(_) => 0,
        };
        self.store.revoke(&key, lifetime.max(REVOKED_MILLIS) as f64 / 1000.0)
    }

    /// The refresh token `refresh_jwt` was rotated into by a refresh this process or another one
    /// remembers, if any.
    fn successor(&self, refresh_jwt: &str) -> Option<String> {
        let key = store_key(refresh_jwt);
        let remembered = self.done.lock().unwrap_or_else(|e| e.into_inner()).get(&key).map(|(_, o)| o.clone());
        let issued = match remembered {
            Some(outcome) => outcome.ok(),
            // Under the key's lock: a refresh in flight elsewhere finishes first, and its result counts.
            None => match self.store.once(&key, Box::new(|| Ok(None))) {
                Ok(Some(blob)) => self.open(&key, &blob).ok(),
                _ => None,
            },
        };
        issued.and_then(|i| i.refresh_jwt).filter(|next| next != refresh_jwt)
    }

    /// Runs `work` holding the lock of `key`'s flight.
    fn in_flight<T>(&self, key: &str, work: impl FnOnce() -> T) -> T {
        let flight = self.flights.lock().unwrap_or_else(|e| e.into_inner()).entry(key.to_string()).or_default().clone();
        let result = {
            let _held = flight.lock().unwrap_or_else(|e| e.into_inner());
            work()
        };
        let mut flights = self.flights.lock().unwrap_or_else(|e| e.into_inner());
        // Two references (the map's and this one): nobody else holds or waits for it.
        if flights.get(key).is_some_and(|f| Arc::ptr_eq(f, &flight) && Arc::strong_count(f) == 2) {
            flights.remove(key);
        }
        result
    }

    pub fn flights_in_progress(&self) -> usize {
        self.flights.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn refuse_if_revoked(&self, key: &str) -> Result<()> {
        let now = self.now();
        let local = self.revoked.lock().unwrap_or_else(|e| e.into_inner()).get(key).is_some_and(|t| *t > now);
        if local || self.store.is_revoked(key)? {
            self.done.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
            return Err(Error::RefreshFailed(REVOKED_MESSAGE.into()));
        }
        Ok(())
    }

    fn recent(&self, key: &str) -> Option<Outcome> {
        let now = self.now();
        let done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        done.get(key).filter(|(until, _)| *until > now).map(|(_, o)| o.clone())
    }

    /// Asks the store; the outer `Err` is the store failing (nothing is remembered then).
    fn refresh_shared(&self, key: &str, refresh_jwt: &str) -> Result<Outcome> {
        let refused: Arc<Mutex<Option<Error>>> = Arc::default();
        let produce: Produce = {
            let (client, sealer, key, token, refused) =
                (self.client.clone(), self.sealer.clone(), key.to_string(), refresh_jwt.to_string(), refused.clone());
            Box::new(move || {
                let (shared, ttl) = match client.refresh(&token) {
                    Ok(issued) => (
                        Shared::Renewed {
                            session: issued.session_jwt,
                            refresh: issued.refresh_jwt,
                            cookie_max_age: issued.cookie_max_age,
                        },
                        GRACE_MILLIS,
                    ),
                    Err(Error::Unreachable { url, reason }) => {
                        (Shared::Unreachable { url, reason }, UNREACHABLE_MILLIS)
                    }
                    Err(other) => {
                        *refused.lock().unwrap_or_else(|e| e.into_inner()) = Some(other);
                        return Ok(None);
                    }
                };
                let plain = serde_json::to_vec(&shared).map_err(|e| Error::Coordination(e.to_string()))?;
                Ok(Some((sealer.seal(&key, &plain)?, ttl as f64 / 1000.0)))
            })
        };
        let outcome = match self.store.once(key, produce)? {
            Some(blob) => self.open(key, &blob),
            None => Err(refused
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .unwrap_or_else(|| Error::RefreshFailed("Descope refused the refresh token".into()))),
        };
        let keep = match &outcome {
            Err(Error::Unreachable { .. }) => UNREACHABLE_MILLIS,
            _ => GRACE_MILLIS,
        };
        let now = self.now();
        let mut done = self.done.lock().unwrap_or_else(|e| e.into_inner());
        done.retain(|_, (until, _)| *until > now);
        done.insert(key.to_string(), (now + keep, outcome.clone()));
        Ok(outcome)
    }

    /// A shared result, checked like any session Descope hands out (signature and all): whoever
    /// wrote it, it is verified here before anyone is let in with it.
    fn open(&self, key: &str, blob: &[u8]) -> Outcome {
        let plain = self.sealer.open(key, blob)?;
        let shared: Shared = serde_json::from_slice(&plain)
            .map_err(|_| Error::Coordination("a shared refresh result is not in this version's format".into()))?;
        match shared {
            Shared::Unreachable { url, reason } => Err(Error::Unreachable { url, reason }),
            Shared::Renewed { session, refresh, cookie_max_age } => {
                let identity = self.client.validate(&session).map_err(|e| match e {
                    Error::Unreachable { .. } => e,
                    other => Error::RefreshFailed(format!("the renewed session cannot be verified ({other})")),
                })?;
                Ok(IssuedSession { session_jwt: session, refresh_jwt: refresh, identity, cookie_max_age })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";

    #[test]
    fn sealed_results_open_only_with_the_same_secret_and_key() {
        let sealer = Sealer::new(b"a server secret of some length").unwrap();
        let blob = sealer.seal(KEY, b"{\"session\":\"x\"}").unwrap();
        assert!(!blob.windows(7).any(|w| w == b"session"), "the plaintext is not in the blob");
        assert_eq!(sealer.open(KEY, &blob).unwrap(), b"{\"session\":\"x\"}");
        assert_ne!(sealer.seal(KEY, b"same").unwrap(), sealer.seal(KEY, b"same").unwrap(), "fresh nonce each time");

        let other = Sealer::new(b"another server secret entirely").unwrap();
        assert!(matches!(other.open(KEY, &blob), Err(Error::Coordination(_))), "another secret");
        let moved = KEY.replace('0', "1");
        assert!(sealer.open(&moved, &blob).is_err(), "a blob cannot be replayed under another token");
        let mut tampered = blob.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(sealer.open(KEY, &tampered).is_err());
        assert!(sealer.open(KEY, &blob[..5]).is_err());
        assert!(sealer.open(KEY, &[]).is_err());
    }

    #[test]
    fn a_short_secret_is_a_configuration_error() {
        let err = Sealer::new(b"short").err().expect("refused");
        assert!(matches!(err, Error::Config { var: "MLFLOW_FLASK_SERVER_SECRET_KEY", .. }), "{err}");
    }

    #[test]
    fn the_process_store_produces_once_and_forgets_revoked_keys() {
        let store = ProcessStore::default();
        let first = store.once(KEY, Box::new(|| Ok(Some((b"blob".to_vec(), 30.0))))).unwrap();
        assert_eq!(first.as_deref(), Some(&b"blob"[..]));
        let second = store.once(KEY, Box::new(|| panic!("produced twice"))).unwrap();
        assert_eq!(second.as_deref(), Some(&b"blob"[..]));
        assert!(!store.is_revoked(KEY).unwrap());
        store.revoke(KEY, 60.0).unwrap();
        assert!(store.is_revoked(KEY).unwrap());
        let after = store.once(KEY, Box::new(|| Ok(None))).unwrap();
        assert_eq!(after, None, "the revoked key's blob is gone");
    }

    #[test]
    fn store_keys_are_hex_digests() {
        let key = store_key("a.b.c");
        assert_eq!(key.len(), 64);
        assert!(key.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(key, store_key("a.b.d"));
    }
}
