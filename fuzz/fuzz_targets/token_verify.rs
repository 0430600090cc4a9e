//! The whole token path against a real RSA key: pre-check, then signature and claim verification
//! (what the server runs on a token that passed the pre-check). Never a panic, never a token in an
//! error message, and nothing made up ever verifies.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mlflow_descope_auth::keys::{parse_jwk, VerifyKey};
use mlflow_descope_auth::token::{precheck, verify};
use mlflow_descope_auth::Config;

const JWK: &str = r#"{"kty": "RSA", "key_ops": ["verify"], "n": "rX_4ngUxwjb6fvWEdidPv6yF3CXWLB62RIWyPzpCMI0TuaJXn0BgkrkhX3O8wc7E7KY0aEiKJWN_-gPA93q9RXYavTDY_0V8uhqDtcc2U7HduMTxHyG2Xw0oL9GV_HAIk-b3t91WSd_g3S97pkkwCxxNvgvgshN-N5raz0hnV_Pwt8antHQLZq99MZNhBLGVKGCATljhvlyrc8P5zpaeIaOX7Zns6se2BelJE6aRj0VHQSetcn7oZCuJPD8veslbdxN2sZuMmSMkotKoy5V7OJvHbC7wFeiGrzMwMAj_LAmQa_OEw_a4VQCDgMTiefW6cH_hpgwfjhDvsZzekFaUJQ", "e": "AQAB", "kid": "fuzz-key", "alg": "RS256", "use": "sig"}"#;

fn key() -> &'static VerifyKey {
    static KEY: OnceLock<VerifyKey> = OnceLock::new();
    KEY.get_or_init(|| parse_jwk(&serde_json::from_str(JWK).expect("jwk")).expect("usable key"))
}

fn config() -> &'static Config {
    static CFG: OnceLock<Config> = OnceLock::new();
    CFG.get_or_init(|| Config::new("P2fuzz").expect("config"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    let Ok(header) = precheck(token, 16 * 1024) else { return };
    match verify(token, &header, key(), config(), 0) {
        // The private half of the key is not in the fuzzer: a valid signature cannot be made up.
        Ok(_) => panic!("a made-up token verified"),
        Err(err) => {
            assert!(!looks_like_a_token(token) || !err.to_string().contains(token), "error message repeats the token")
        }
    }
});

/// Whether the input is distinctive enough to look for in a message: JWT-like (a dot, no space,
/// 24+ bytes). Shorter or spaced inputs can be pieces of the fixed message text itself, which the
/// fuzzer finds quickly ("invalid session token: it is not a JWT").
fn looks_like_a_token(token: &str) -> bool {
    token.len() >= 24 && token.contains('.') && !token.contains(' ')
}
