//! A bounded cache of already-validated tokens, so a repeated token costs a hash and a map lookup.
//!
//! Keyed by SHA-256 of the token (the cache holds no token), and an entry is used only while
//! `now < exp` and only while the key set that verified it is unchanged (see `KeyStore::epoch`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use aws_lc_rs::digest::{digest, SHA256};

use crate::identity::Identity;

pub type TokenDigest = [u8; 32];

pub fn token_digest(token: &str) -> TokenDigest {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest(&SHA256, token.as_bytes()).as_ref());
    out
}

struct Entry {
    identity: Arc<Identity>,
    epoch: u64,
}

pub struct TokenCache {
    capacity: usize,
    map: RwLock<HashMap<TokenDigest, Entry>>,
}

impl TokenCache {
    pub fn new(capacity: usize) -> Self {
        TokenCache { capacity, map: RwLock::new(HashMap::new()) }
    }

    /// False for a zero-capacity cache, which stores nothing.
    pub fn is_enabled(&self) -> bool {
        self.capacity > 0
    }

    pub fn get(&self, key: &TokenDigest, now: i64, epoch: u64) -> Option<Arc<Identity>> {
        if self.capacity == 0 {
            return None;
        }
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        map.get(key).filter(|e| e.epoch == epoch && now < e.identity.expires_at).map(|e| e.identity.clone())
    }

    pub fn insert(&self, key: TokenDigest, identity: Arc<Identity>, now: i64, epoch: u64) {
        if self.capacity == 0 || identity.expires_at <= now {
            return;
        }
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= self.capacity && !map.contains_key(&key) {
            map.retain(|_, e| e.epoch == epoch && now < e.identity.expires_at);
            if map.len() >= self.capacity {
                // Still full of live tokens: drop an arbitrary half (HashMap order is randomised per
                // process) rather than track recency on the read path, which would need a write lock.
                let drop: Vec<TokenDigest> = map.keys().take(map.len() / 2 + 1).copied().collect();
                for k in drop {
                    map.remove(&k);
                }
            }
        }
        map.insert(key, Entry { identity, epoch });
    }

    pub fn len(&self) -> usize {
        self.map.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn clear(&self) {
        self.map.write().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use serde_json::json;

    fn identity(exp: i64) -> Arc<Identity> {
        let claims = json!({"sub": "u", "exp": exp}).as_object().unwrap().clone();
        Arc::new(Identity::from_claims(claims, &Config::new("P2x").unwrap()).unwrap())
    }

    #[test]
    fn entries_expire_with_the_token_and_the_key_epoch() {
        let cache = TokenCache::new(10);
        let k = token_digest("a.b.c");
        cache.insert(k, identity(100), 50, 0);
        assert!(cache.get(&k, 99, 0).is_some());
        assert!(cache.get(&k, 100, 0).is_none(), "never past exp");
        assert!(cache.get(&k, 60, 1).is_none(), "a key was dropped since");
    }

    #[test]
    fn stays_bounded() {
        let cache = TokenCache::new(8);
        for i in 0..100 {
            cache.insert(token_digest(&i.to_string()), identity(1000), 0, 0);
            assert!(cache.len() <= 8);
        }
        let zero = TokenCache::new(0);
        zero.insert(token_digest("x"), identity(1000), 0, 0);
        assert!(zero.is_empty());
    }
}
