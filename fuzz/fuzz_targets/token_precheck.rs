//! The cheap checks every credential from the network goes through first (size, shape, base64url,
//! header JSON, algorithm, kid): never a panic, and no error message that repeats the token.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlflow_descope_auth::token::precheck;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    if let Err(err) = precheck(token, 16 * 1024) {
        let message = err.to_string();
        assert!(!looks_like_a_token(token) || !message.contains(token), "error message repeats the token");
    }
});

/// Whether the input is distinctive enough to look for in a message: JWT-like (a dot, no space,
/// 24+ bytes). Shorter or spaced inputs can be pieces of the fixed message text itself, which the
/// fuzzer finds quickly ("invalid session token: it is not a JWT").
fn looks_like_a_token(token: &str) -> bool {
    token.len() >= 24 && token.contains('.') && !token.contains(' ')
}
