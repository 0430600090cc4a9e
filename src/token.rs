//! Session-token checks: cheap structural pre-checks that run before any crypto, then the signature
//! (with the algorithm the key dictates) and Descope's claim rules.

use std::collections::HashSet;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::Value;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::identity::Claims;
use crate::keys::VerifyKey;

/// A header longer than this is not a Descope header (theirs are ~80 bytes).
const MAX_HEADER_B64: usize = 1024;

/// Algorithms a token may name. Anything else (`none`, HS*, EdDSA, ...) is refused before any key is
/// looked up.
const ACCEPTED_ALGS: [&str; 8] = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub kid: String,
    pub alg: String,
}

#[derive(Deserialize)]
struct RawHeader {
    alg: Option<Value>,
    kid: Option<Value>,
    crit: Option<Value>,
}

/// Shape, size and header checks. Costs well under a microsecond and rejects junk before crypto.
pub fn precheck(token: &str, max_bytes: usize) -> Result<Header> {
    if token.is_empty() {
        return Err(Error::invalid("it is empty"));
    }
    if token.len() > max_bytes {
        return Err(too_long(token.len(), max_bytes));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Error::invalid("it is not a JWT (a JWT has three dot-separated parts)"));
    };
    for part in [header, payload, signature] {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(Error::invalid("it is not a JWT (its parts must be non-empty base64url)"));
        }
    }
    if header.len() > MAX_HEADER_B64 {
        return Err(Error::invalid("its header is too long"));
    }
    let bytes = URL_SAFE_NO_PAD.decode(header).map_err(|_| Error::invalid("its header is not valid base64url"))?;
    let raw: RawHeader =
        serde_json::from_slice(&bytes).map_err(|_| Error::invalid("its header is not a JSON object"))?;
    if raw.crit.is_some() {
        return Err(Error::invalid("its header has critical extensions ('crit'), which Descope never sets"));
    }
    let alg = match raw.alg {
        Some(Value::String(a)) => a,
        _ => return Err(Error::invalid("its header names no algorithm")),
    };
    if !ACCEPTED_ALGS.contains(&alg.as_str()) {
        let shown: String = alg.chars().filter(|c| c.is_ascii_graphic()).take(16).collect();
        return Err(Error::invalid(format!(
            "it uses algorithm '{shown}'; only asymmetric signatures ({}) are accepted",
            ACCEPTED_ALGS.join(", ")
        )));
    }
    let kid = match raw.kid {
        Some(Value::String(k)) if !k.is_empty() && k.len() <= 256 => k,
        _ => return Err(Error::invalid("its header has no key id ('kid')")),
    };
    Ok(Header { kid, alg })
}

pub fn too_long(len: usize, max_bytes: usize) -> Error {
    Error::invalid(format!("it is {len} bytes long, over the {max_bytes}-byte limit for a Descope session token"))
}

/// Which kind of Descope token a check expects (`drn` claim).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Session,
    Refresh,
}

/// Signature and claims of a session token. `header` is what [`precheck`] returned for the token.
pub fn verify(token: &str, header: &Header, key: &VerifyKey, cfg: &Config) -> Result<Claims> {
    verify_kind(token, header, key, cfg, TokenKind::Session)
}

pub fn verify_kind(token: &str, header: &Header, key: &VerifyKey, cfg: &Config, kind: TokenKind) -> Result<Claims> {
    // The key decides the algorithm. A token claiming another one (say HS256, to have the public key
    // used as an HMAC secret) is refused here, and jsonwebtoken refuses it again below.
    let token_alg = Algorithm::from_str(&header.alg).map_err(|_| Error::invalid("its algorithm is unknown"))?;
    if token_alg != key.alg {
        return Err(Error::invalid(format!(
            "its header says {} but key '{}' is a {:?} key",
            header.alg, key.kid, key.alg
        )));
    }
    let mut validation = Validation::new(key.alg);
    validation.leeway = cfg.leeway.as_secs();
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.required_spec_claims = HashSet::from(["exp".to_string()]);
    match &cfg.audience {
        Some(aud) => validation.set_audience(aud),
        None => validation.validate_aud = false,
    }
    let claims = match jsonwebtoken::decode::<Claims>(token, &key.key, &validation) {
        Ok(data) => data.claims,
        Err(e) => return Err(map_jwt_error(e.kind(), token)),
    };
    check_issuer(&claims, &cfg.project_id)?;
    let is_refresh = claims.get("drn").and_then(Value::as_str) == Some("DSR");
    match kind {
        TokenKind::Session if is_refresh => {
            Err(Error::invalid("it is a refresh token (drn DSR); send the session token (DS) instead"))
        }
        TokenKind::Refresh if !is_refresh => Err(Error::invalid("it is not a refresh token (drn is not DSR)")),
        _ => Ok(claims),
    }
}

/// Descope sets `iss` to the project id or to a URL whose last segment is the project id. A token
/// from another project is signed by keys we do not have, so this is defence in depth, and it also
/// catches a misconfigured DESCOPE_BASE_URI pointing at the wrong project's key set.
fn check_issuer(claims: &Claims, project_id: &str) -> Result<()> {
    let iss = claims.get("iss").and_then(Value::as_str).unwrap_or("");
    let last = iss.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    if last == project_id {
        Ok(())
    } else if iss.is_empty() {
        Err(Error::invalid("it has no issuer ('iss')"))
    } else {
        Err(Error::invalid(format!(
            "it was issued for another Descope project, not {project_id}; check DESCOPE_PROJECT_ID"
        )))
    }
}

fn map_jwt_error(kind: &JwtErrorKind, token: &str) -> Error {
    match kind {
        JwtErrorKind::ExpiredSignature => Error::ExpiredToken { expired_at: unverified_exp(token).unwrap_or(0) },
        JwtErrorKind::ImmatureSignature => {
            Error::invalid("it is not valid yet ('nbf' is in the future); check the clock")
        }
        JwtErrorKind::InvalidSignature => Error::invalid("its signature does not match the project's key"),
        JwtErrorKind::InvalidAudience => Error::invalid("its audience ('aud') is not one DESCOPE_AUDIENCE allows"),
        JwtErrorKind::MissingRequiredClaim(c) => Error::invalid(format!("it has no '{c}' claim")),
        JwtErrorKind::InvalidClaimFormat(c) => Error::invalid(format!("its '{c}' claim is malformed")),
        JwtErrorKind::InvalidAlgorithm => Error::invalid("its algorithm does not match the key"),
        JwtErrorKind::Base64(_) | JwtErrorKind::Json(_) | JwtErrorKind::Utf8(_) | JwtErrorKind::InvalidToken => {
            Error::invalid("it is malformed: its signature or payload is not valid base64url JSON")
        }
        _ => Error::invalid("it could not be verified with the project's key"),
    }
}

/// Only called after the signature checked out (jsonwebtoken verifies before it validates claims),
/// to say when the session expired.
fn unverified_exp(token: &str) -> Option<i64> {
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<Value>(&bytes).ok()?.get("exp")?.as_i64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn precheck_accepts_a_descope_header() {
        let t = format!("{}.{}.c2ln", b64(r#"{"alg":"RS256","kid":"K1","typ":"JWT"}"#), b64("{}"));
        assert_eq!(precheck(&t, 4096).unwrap(), Header { kid: "K1".into(), alg: "RS256".into() });
    }

    #[test]
    fn precheck_rejects_junk_before_crypto() {
        let cases = [
            ("", "empty"),
            ("abc", "three dot-separated"),
            ("a.b.c.d", "three dot-separated"),
            ("a..c", "non-empty base64url"),
            ("a+b.c.d", "non-empty base64url"),
            ("!!!.e30.c2ln", "non-empty base64url"),
            (&format!("{}.e30.c2ln", b64("not json")), "JSON object"),
            (&format!("{}.e30.c2ln", b64(r#"{"alg":"none","kid":"k"}"#)), "only asymmetric"),
            (&format!("{}.e30.c2ln", b64(r#"{"alg":"HS256","kid":"k"}"#)), "only asymmetric"),
            (&format!("{}.e30.c2ln", b64(r#"{"alg":"RS256"}"#)), "no key id"),
            (&format!("{}.e30.c2ln", b64(r#"{"alg":"RS256","kid":"k","crit":["x"]}"#)), "critical"),
        ];
        for (token, expected) in cases {
            let err = precheck(token, 4096).unwrap_err().to_string();
            assert!(err.contains(expected), "{token:?}: {err}");
        }
        let big = "a".repeat(5000);
        assert!(precheck(&big, 4096).unwrap_err().to_string().contains("over the 4096-byte limit"));
    }

    #[test]
    fn issuer_must_name_the_project() {
        let ok = |iss: &str| {
            let claims = serde_json::json!({ "iss": iss }).as_object().unwrap().clone();
            check_issuer(&claims, "P2abc").is_ok()
        };
        assert!(ok("P2abc"));
        assert!(ok("https://api.descope.com/P2abc"));
        assert!(!ok("https://api.descope.com/P2abcd"));
        assert!(!ok("https://evil.example/P2abc/other"));
        assert!(!ok(""));
    }
}
