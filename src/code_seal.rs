//! Sealing with a one-time code: the server keeps the tokens of a command-line sign-in encrypted
//! with a key only the code's holder can derive (HKDF-SHA256 of the code, AES-256-GCM, versioned as
//! [`Sealer`]), so whoever reads the auth database (or a backup) cannot decrypt them.

use crate::error::{Error, Result};
use crate::refresh::Sealer;

const CODE_SALT: &[u8] = b"mlflow-descope-auth cli code";
/// Associated data: a blob sealed here opens only as a sign-in code's payload.
const CODE_AAD: &str = "mlflow-descope-auth cli sign-in v1";
/// A code shorter than this is not one the server issued (it issues 32 random bytes, base64url).
const MIN_CODE_BYTES: usize = 32;

fn sealer(code: &str) -> Result<Sealer> {
    if code.len() < MIN_CODE_BYTES {
        return Err(Error::invalid("the sign-in code is too short to seal with"));
    }
    Sealer::derive(code.as_bytes(), CODE_SALT)
}

pub fn seal_with_code(code: &str, payload: &[u8]) -> Result<Vec<u8>> {
    sealer(code)?.seal(CODE_AAD, payload)
}

/// The payload sealed with `code`; an invalid-token error for another code or an altered blob.
pub fn open_with_code(code: &str, blob: &[u8]) -> Result<Vec<u8>> {
    sealer(code)?
        .try_open(CODE_AAD, blob)
        .ok_or_else(|| Error::invalid("the sealed sign-in does not open with this code"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CODE: &str = "k1aLq7X0bH6pYd3mZ9rT2vW8cE5nF4sJ1gU0oR7iQ2w";

    #[test]
    fn a_payload_opens_with_its_code_only() {
        let blob = seal_with_code(CODE, b"tokens").unwrap();
        assert_eq!(blob[0], 1, "versioned");
        assert!(!blob.windows(6).any(|w| w == b"tokens"));
        assert_eq!(open_with_code(CODE, &blob).unwrap(), b"tokens");
        let other = CODE.replace('k', "K");
        assert_eq!(open_with_code(&other, &blob).unwrap_err().code(), "token_invalid");
        let mut altered = blob.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(open_with_code(CODE, &altered).is_err());
        assert!(open_with_code(CODE, &blob[..5]).is_err());
    }

    #[test]
    fn a_code_blob_does_not_open_as_a_refresh_result_under_the_same_secret() {
        let blob = seal_with_code(CODE, b"tokens").unwrap();
        let refresh_sealer = Sealer::new(CODE.as_bytes()).unwrap();
        assert!(refresh_sealer.try_open(CODE_AAD, &blob).is_none());
        assert!(seal_with_code("short", b"x").is_err());
    }
}
