//! The cheap checks every credential from the network goes through first (size, shape, base64url,
//! header JSON, algorithm, kid): never a panic, and no error message that repeats the token.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlflow_descope_auth::token::precheck;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else { return };
    if let Err(err) = precheck(token, 16 * 1024) {
        let message = err.to_string();
        assert!(token.len() < 16 || !message.contains(token), "error message repeats the token");
    }
});
