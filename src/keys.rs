//! The project's public keys: fetched on first need, cached, refetched on an unknown `kid`
//! (single-flight and rate limited) or when older than the TTL, and kept while Descope is down.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{self as sig, ParsedPublicKey, RsaParameters, RsaPublicKeyComponents};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::Algorithm;
use serde_json::Value;

use crate::error::{Error, Result, TokenCode};

/// A verification key and the one algorithm it may be used with. The algorithm comes from the key
/// set, never from a token header.
///
/// The key is parsed into aws-lc's native form once, when the key set is fetched. jsonwebtoken's
/// `DecodingKey` keeps raw bytes and has aws-lc parse them again on every verification (rebuilding
/// the RSA key from `n`/`e`, decoding and checking the EC point), which cost as much as the
/// signature check itself for ES256 (see BENCHMARKS.md).
pub struct VerifyKey {
    pub kid: String,
    pub alg: Algorithm,
    key: ParsedPublicKey,
}

impl VerifyKey {
    /// True when `signature` (raw bytes, not base64) is this key's signature over `message`.
    pub fn verify_signature(&self, message: &[u8], signature: &[u8]) -> bool {
        self.key.verify_sig(message, signature).is_ok()
    }
}

/// Where keys come from: the Descope key endpoint in production.
pub type FetchKeys = Box<dyn Fn() -> Result<Vec<Value>> + Send + Sync>;

/// After a failed fetch with no keys at all, callers get the error for this long instead of each
/// waiting out its own timeout against an unreachable Descope.
const FAILURE_BACKOFF: Duration = Duration::from_secs(1);

#[derive(Default)]
struct State {
    keys: Arc<HashMap<String, Arc<VerifyKey>>>,
    fetched_at: Option<Instant>,
    last_attempt: Option<Instant>,
    last_error: Option<String>,
}

pub struct KeyStore {
    fetch: FetchKeys,
    refetch_interval: Duration,
    ttl: Duration,
    state: RwLock<State>,
    fetch_lock: Mutex<()>,
    /// Bumped whenever a refetch drops a key, so cached validations made with it stop counting.
    epoch: AtomicU64,
    fetches: AtomicU64,
}

impl KeyStore {
    pub fn new(fetch: FetchKeys, refetch_interval: Duration, ttl: Duration) -> Self {
        KeyStore {
            fetch,
            refetch_interval,
            ttl,
            state: RwLock::new(State::default()),
            fetch_lock: Mutex::new(()),
            epoch: AtomicU64::new(0),
            fetches: AtomicU64::new(0),
        }
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// How many times the key endpoint was asked (successfully or not).
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    pub fn loaded_count(&self) -> usize {
        self.read().keys.len()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The key for `kid`, fetching the key set if needed.
    pub fn get(&self, kid: &str) -> Result<Arc<VerifyKey>> {
        if self.refresh_if_stale() {
            return self.read().keys.get(kid).cloned().ok_or_else(|| removed(kid));
        }
        let found = self.read().keys.get(kid).cloned();
        match found {
            Some(key) => Ok(key),
            None => self.get_unknown(kid),
        }
    }

    /// True when the key set is older than the TTL (the next validation will refetch it).
    pub fn is_stale(&self) -> bool {
        self.read().fetched_at.is_some_and(|t| t.elapsed() >= self.ttl)
    }

    /// Refetches keys older than the TTL. One caller does it; the others carry on with the cached
    /// keys meanwhile, and they stay in place when Descope is unreachable. Returns true when this
    /// call refetched successfully. Cheap when fresh: a read lock and a clock read.
    pub fn refresh_if_stale(&self) -> bool {
        let is_stale = |st: &State| st.fetched_at.is_some_and(|t| t.elapsed() >= self.ttl);
        if !is_stale(&self.read()) {
            return false;
        }
        let Ok(_guard) = self.fetch_lock.try_lock() else {
            return false;
        };
        // Retry a failing Descope no more often than the refetch interval.
        let st = self.read();
        let recently_failed = st.last_attempt.is_some_and(|t| t.elapsed() < self.refetch_interval.max(FAILURE_BACKOFF));
        if !is_stale(&st) || recently_failed && st.last_error.is_some() {
            return false;
        }
        drop(st);
        self.refetch().is_ok()
    }

    fn get_unknown(&self, kid: &str) -> Result<Arc<VerifyKey>> {
        let _guard = self.fetch_lock.lock().unwrap_or_else(|e| e.into_inner());
        // Whoever held the lock before us may have fetched the key already.
        let (loaded, recent_attempt) = {
            let st = self.read();
            if let Some(key) = st.keys.get(kid) {
                return Ok(key.clone());
            }
            (!st.keys.is_empty(), st.last_attempt.map(|t| t.elapsed()))
        };
        if loaded {
            if recent_attempt.is_some_and(|e| e < self.refetch_interval) {
                return Err(unknown(kid));
            }
        } else if recent_attempt.is_some_and(|e| e < FAILURE_BACKOFF) {
            let reason = self.read().last_error.clone().unwrap_or_else(|| "the key set is empty".into());
            return Err(Error::Unreachable { url: "the Descope key endpoint".into(), reason });
        }
        self.refetch()?;
        self.read().keys.get(kid).cloned().ok_or_else(|| unknown(kid))
    }

    /// Fetches the key set now. On failure the cached keys stay in place.
    pub fn refetch(&self) -> Result<usize> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let result = (self.fetch)();
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        st.last_attempt = Some(Instant::now());
        let raw = match result {
            Ok(raw) => raw,
            Err(e) => {
                st.last_error = Some(e.to_string());
                return Err(e);
            }
        };
        let keys: HashMap<_, _> = raw.iter().filter_map(parse_jwk).map(|k| (k.kid.clone(), Arc::new(k))).collect();
        if keys.is_empty() {
            let reason = "the project's key set has no usable asymmetric (RS/PS/ES) signing key".to_string();
            st.last_error = Some(reason.clone());
            return Err(Error::Api { operation: "key fetch", reason });
        }
        if st.keys.keys().any(|kid| !keys.contains_key(kid)) {
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
        let count = keys.len();
        st.keys = Arc::new(keys);
        st.fetched_at = Some(Instant::now());
        st.last_error = None;
        Ok(count)
    }
}

fn unknown(kid: &str) -> Error {
    Error::token(
        TokenCode::UnknownKey,
        format!(
            "it is signed by key '{}', which this Descope project does not publish; sign in again, \
         and check DESCOPE_PROJECT_ID matches the project that issued the token",
            printable(kid)
        ),
    )
}

fn removed(kid: &str) -> Error {
    Error::token(
        TokenCode::UnknownKey,
        format!("it is signed by key '{}', which Descope no longer publishes; sign in again", printable(kid)),
    )
}

/// A `kid` comes from an attacker-controlled header: keep it short and printable in messages.
fn printable(kid: &str) -> String {
    kid.chars().filter(|c| c.is_ascii_graphic()).take(64).collect()
}

/// One JWK -> a verification key, or `None` for keys we must not or cannot use (symmetric keys,
/// encryption keys, unknown algorithms, keys with no `kid`).
pub fn parse_jwk(raw: &Value) -> Option<VerifyKey> {
    if raw.get("use").and_then(Value::as_str).is_some_and(|u| u != "sig") {
        return None;
    }
    let jwk: Jwk = serde_json::from_value(raw.clone()).ok()?;
    let kid = jwk.common.key_id.clone().filter(|k| !k.is_empty())?;
    let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
        (AlgorithmParameters::RSA(_), Some(a)) => match a {
            KeyAlgorithm::RS256 => Algorithm::RS256,
            KeyAlgorithm::RS384 => Algorithm::RS384,
            KeyAlgorithm::RS512 => Algorithm::RS512,
            KeyAlgorithm::PS256 => Algorithm::PS256,
            KeyAlgorithm::PS384 => Algorithm::PS384,
            KeyAlgorithm::PS512 => Algorithm::PS512,
            _ => return None,
        },
        // An RSA key without `alg` could be used with six algorithms; refusing it keeps the choice
        // out of the token's hands.
        (AlgorithmParameters::RSA(_), None) => return None,
        (AlgorithmParameters::EllipticCurve(ec), alg) => match (&ec.curve, alg) {
            (EllipticCurve::P256, None | Some(KeyAlgorithm::ES256)) => Algorithm::ES256,
            (EllipticCurve::P384, None | Some(KeyAlgorithm::ES384)) => Algorithm::ES384,
            _ => return None,
        },
        _ => return None,
    };
    let key = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            let n = URL_SAFE_NO_PAD.decode(&rsa.n).ok()?;
            let e = URL_SAFE_NO_PAD.decode(&rsa.e).ok()?;
            RsaPublicKeyComponents { n: n.as_slice(), e: e.as_slice() }.to_parsed_public_key(rsa_params(alg)?).ok()?
        }
        AlgorithmParameters::EllipticCurve(ec) => {
            let (x, y) = (URL_SAFE_NO_PAD.decode(&ec.x).ok()?, URL_SAFE_NO_PAD.decode(&ec.y).ok()?);
            let (verification, size): (&'static sig::EcdsaVerificationAlgorithm, usize) = match alg {
                Algorithm::ES256 => (&sig::ECDSA_P256_SHA256_FIXED, 32),
                _ => (&sig::ECDSA_P384_SHA384_FIXED, 48),
            };
            if x.len() != size || y.len() != size {
                return None;
            }
            // The SEC 1 uncompressed point; aws-lc checks it lies on the curve.
            let point: Vec<u8> = [&[4u8][..], &x, &y].concat();
            ParsedPublicKey::new(verification, point).ok()?
        }
        _ => return None,
    };
    Some(VerifyKey { kid, alg, key })
}

/// The aws-lc verification parameters for an RSA algorithm: PKCS#1 v1.5 or PSS, 2048 to 8192 bits
/// (what jsonwebtoken's aws-lc backend uses too).
fn rsa_params(alg: Algorithm) -> Option<&'static RsaParameters> {
    Some(match alg {
        Algorithm::RS256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &sig::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &sig::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &sig::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::AtomicUsize;

    fn rsa_jwk(kid: &str, alg: Option<&str>) -> Value {
        let mut v = json!({"kty": "RSA", "kid": kid, "use": "sig", "n": "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw", "e": "AQAB"});
        if let Some(a) = alg {
            v["alg"] = json!(a);
        }
        v
    }

    #[test]
    fn only_asymmetric_signing_keys_with_a_fixed_algorithm_are_used() {
        assert!(parse_jwk(&rsa_jwk("a", Some("RS256"))).is_some());
        assert!(parse_jwk(&rsa_jwk("a", None)).is_none(), "RSA without alg is ambiguous");
        assert!(parse_jwk(&rsa_jwk("a", Some("HS256"))).is_none());
        assert!(parse_jwk(&json!({"kty": "oct", "kid": "h", "alg": "HS256", "k": "c2VjcmV0"})).is_none());
        let mut enc = rsa_jwk("e", Some("RS256"));
        enc["use"] = json!("enc");
        assert!(parse_jwk(&enc).is_none());
        let mut no_kid = rsa_jwk("", Some("RS256"));
        no_kid.as_object_mut().unwrap().remove("kid");
        assert!(parse_jwk(&no_kid).is_none());
    }

    fn counting_store(keys: Vec<Value>, interval: Duration) -> (KeyStore, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let store = KeyStore::new(
            Box::new(move || {
                c.fetch_add(1, Ordering::SeqCst);
                Ok(keys.clone())
            }),
            interval,
            Duration::from_secs(600),
        );
        (store, calls)
    }

    #[test]
    fn unknown_kids_refetch_at_most_once_per_interval() {
        let (store, calls) = counting_store(vec![rsa_jwk("k1", Some("RS256"))], Duration::from_secs(60));
        assert!(store.get("k1").is_ok());
        for i in 0..100 {
            assert!(store.get(&format!("forged-{i}")).is_err());
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert!(store.get("k1").is_ok());
    }

    #[test]
    fn failed_fetch_keeps_serving_cached_keys() {
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let f = fail.clone();
        let store = KeyStore::new(
            Box::new(move || {
                if f.load(Ordering::SeqCst) {
                    Err(Error::Unreachable { url: "x".into(), reason: "down".into() })
                } else {
                    Ok(vec![rsa_jwk("k1", Some("RS256"))])
                }
            }),
            Duration::ZERO,
            Duration::ZERO,
        );
        assert!(store.get("k1").is_ok());
        fail.store(true, Ordering::SeqCst);
        // Stale (ttl 0) and Descope down: the cached key still serves.
        assert!(store.get("k1").is_ok());
        assert!(matches!(store.get("other"), Err(Error::Unreachable { .. })));
    }
}
