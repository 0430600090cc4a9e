//! Key sets as Descope (or anything answering in its place) might send them: any JSON, any JWK
//! fields. Never a panic; symmetric keys and keys without a kid are never accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlflow_descope_auth::keys::parse_jwk;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = serde_json::from_slice::<Value>(data) else { return };
    let candidates: Vec<&Value> = match value.get("keys").and_then(Value::as_array) {
        Some(keys) => keys.iter().collect(),
        None => vec![&value],
    };
    for raw in candidates {
        if let Some(key) = parse_jwk(raw) {
            assert!(!key.kid.is_empty(), "a key without a kid");
            assert_ne!(raw.get("kty").and_then(Value::as_str), Some("oct"), "a symmetric key");
        }
    }
});
