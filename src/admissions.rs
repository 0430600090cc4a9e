//! Sessions the server let in shortly before they expired, honoured for a short grace after.
//!
//! A server validates the credential at its front door and MLflow's authorization function checks
//! it again later in the same request. A busy worker can queue a request for seconds in between, and
//! a session admitted at the door must not be refused inside because its time ran out meanwhile
//! (a browser would be sent to sign in although its refresh token is fine). Only a token this
//! process verified itself is ever admitted, so nothing a client sends can add to it. Keyed by
//! the token's digest: the table holds no token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::cache::TokenDigest;
use crate::identity::Identity;

/// Only sessions this close to their `exp` are remembered (the others cannot run out mid-request).
pub const WINDOW_SECONDS: i64 = 120;
/// How long past its `exp` an admitted session is still honoured.
pub const GRACE_SECONDS: i64 = 60;
const MAX_ENTRIES: usize = 10_000;

#[derive(Default)]
pub struct Admissions {
    admitted: Mutex<HashMap<TokenDigest, Arc<Identity>>>,
}

impl Admissions {
    pub fn admit(&self, digest: TokenDigest, identity: &Arc<Identity>, now: i64) {
        if identity.expires_at - now > WINDOW_SECONDS {
            return;
        }
        let mut map = self.admitted.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENTRIES && !map.contains_key(&digest) {
            map.retain(|_, i| i.expires_at + GRACE_SECONDS > now);
            if map.len() >= MAX_ENTRIES {
                // Every entry is live: a flood of near-expiry sessions. Forgetting one costs its
                // owner a refresh, never access, so drop an arbitrary half.
                let drop: Vec<TokenDigest> = map.keys().take(map.len() / 2 + 1).copied().collect();
                for k in drop {
                    map.remove(&k);
                }
            }
        }
        map.insert(digest, identity.clone());
    }

    /// The identity admitted for this digest, while within its grace.
    pub fn get(&self, digest: &TokenDigest, now: i64) -> Option<Arc<Identity>> {
        let map = self.admitted.lock().unwrap_or_else(|e| e.into_inner());
        map.get(digest).filter(|i| i.expires_at + GRACE_SECONDS > now).cloned()
    }

    pub fn len(&self) -> usize {
        self.admitted.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::token_digest;
    use crate::config::Config;
    use serde_json::json;

    fn identity(exp: i64) -> Arc<Identity> {
        let claims = json!({"sub": "u", "exp": exp}).as_object().unwrap().clone();
        Arc::new(Identity::from_claims(claims, &Config::new("P2x").unwrap()).unwrap())
    }

    #[test]
    fn only_near_expiry_sessions_are_admitted_and_only_for_the_grace() {
        let a = Admissions::default();
        let far = token_digest("far");
        a.admit(far, &identity(1000), 1000 - WINDOW_SECONDS - 1);
        assert!(a.get(&far, 1001).is_none(), "a session far from expiry is not remembered");
        let near = token_digest("near");
        a.admit(near, &identity(1000), 1000 - WINDOW_SECONDS);
        assert!(a.get(&near, 1000 + GRACE_SECONDS - 1).is_some());
        assert!(a.get(&near, 1000 + GRACE_SECONDS).is_none(), "never past the grace");
        assert!(a.get(&token_digest("other"), 999).is_none());
    }

    #[test]
    fn stays_bounded() {
        let a = Admissions::default();
        for i in 0..(MAX_ENTRIES + 50) {
            a.admit(token_digest(&i.to_string()), &identity(1000), 990);
            assert!(a.len() <= MAX_ENTRIES);
        }
    }
}
