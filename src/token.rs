//! Session-token checks: cheap structural pre-checks that run before any crypto, then the signature
//! (with the algorithm the key dictates) and Descope's claim rules.

use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde::Deserialize;
use serde_json::Value;

use crate::config::Config;
use crate::error::{Error, Result, TokenCode};
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

/// The header as Descope writes it, borrowed from the decoded bytes (no per-field allocation). Any
/// other shape goes to [`RawHeader`], which says what is wrong.
#[derive(Deserialize)]
struct PlainHeader<'a> {
    alg: &'a str,
    kid: &'a str,
    crit: Option<serde::de::IgnoredAny>,
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
        return Err(Error::token(TokenCode::Malformed, "it is empty"));
    }
    if token.len() > max_bytes {
        return Err(too_long(token.len(), max_bytes));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Error::token(TokenCode::Malformed, "it is not a JWT (a JWT has three dot-separated parts)"));
    };
    for part in [header, payload, signature] {
        if part.is_empty() || !is_base64url(part) {
            return Err(Error::token(TokenCode::Malformed, "it is not a JWT (its parts must be non-empty base64url)"));
        }
    }
    if header.len() > MAX_HEADER_B64 {
        return Err(Error::token(TokenCode::TooLong, "its header is too long"));
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| Error::token(TokenCode::Malformed, "its header is not valid base64url"))?;
    if let Ok(h) = serde_json::from_slice::<PlainHeader>(&bytes) {
        if h.crit.is_none() && ACCEPTED_ALGS.contains(&h.alg) && !h.kid.is_empty() && h.kid.len() <= 256 {
            return Ok(Header { kid: h.kid.to_string(), alg: h.alg.to_string() });
        }
    }
    let raw: RawHeader = serde_json::from_slice(&bytes)
        .map_err(|_| Error::token(TokenCode::Malformed, "its header is not a JSON object"))?;
    if raw.crit.is_some() {
        return Err(Error::token(
            TokenCode::Malformed,
            "its header has critical extensions ('crit'), which Descope never sets",
        ));
    }
    let alg = match raw.alg {
        Some(Value::String(a)) => a,
        _ => return Err(Error::token(TokenCode::Algorithm, "its header names no algorithm")),
    };
    if !ACCEPTED_ALGS.contains(&alg.as_str()) {
        let shown: String = alg.chars().filter(|c| c.is_ascii_graphic()).take(16).collect();
        return Err(Error::token(
            TokenCode::Algorithm,
            format!(
                "it uses algorithm '{shown}'; only asymmetric signatures ({}) are accepted",
                ACCEPTED_ALGS.join(", ")
            ),
        ));
    }
    let kid = match raw.kid {
        Some(Value::String(k)) if !k.is_empty() && k.len() <= 256 => k,
        _ => return Err(Error::token(TokenCode::Malformed, "its header has no key id ('kid')")),
    };
    Ok(Header { kid, alg })
}

/// Only `A-Z a-z 0-9 - _`. Written without early exit so it compiles to SIMD compares: tokens are
/// ~800 bytes, and the short-circuiting version cost a microsecond a token.
fn is_base64url(part: &str) -> bool {
    part.bytes().fold(true, |ok, b| {
        ok & ((b | 0x20).wrapping_sub(b'a') < 26 || b.wrapping_sub(b'0') < 10 || b == b'-' || b == b'_')
    })
}

pub fn too_long(len: usize, max_bytes: usize) -> Error {
    Error::token(
        TokenCode::TooLong,
        format!("it is {len} bytes long, over the {max_bytes}-byte limit for a Descope session token"),
    )
}

/// Which kind of Descope token a check expects (`drn` claim).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Session,
    Refresh,
}

/// Signature and claims of a session token. `header` is what [`precheck`] returned for the token.
pub fn verify(token: &str, header: &Header, key: &VerifyKey, cfg: &Config, now: i64) -> Result<Claims> {
    verify_kind(token, header, key, cfg, TokenKind::Session, now)
}

/// `now` is Unix seconds from the client's clock (`exp`/`nbf` are judged against it).
pub fn verify_kind(
    token: &str,
    header: &Header,
    key: &VerifyKey,
    cfg: &Config,
    kind: TokenKind,
    now: i64,
) -> Result<Claims> {
    // The key decides the algorithm. A token claiming another one (say HS256, to have the public key
    // used as an HMAC secret) is refused here, before any crypto.
    let token_alg =
        Algorithm::from_str(&header.alg).map_err(|_| Error::token(TokenCode::Algorithm, "its algorithm is unknown"))?;
    if token_alg != key.alg {
        return Err(Error::token(
            TokenCode::Algorithm,
            format!("its header says {} but key '{}' is a {:?} key", header.alg, key.kid, key.alg),
        ));
    }
    // `precheck` established three non-empty base64url parts.
    let (message, signature) = token.rsplit_once('.').ok_or_else(malformed)?;
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| malformed())?;
    // The signature is checked before anything in the payload is looked at.
    if !key.verify_signature(message.as_bytes(), &signature) {
        return Err(Error::token(TokenCode::Signature, "its signature does not match the project's key"));
    }
    let payload = message.split_once('.').map(|(_, p)| p).ok_or_else(malformed)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).map_err(|_| malformed())?;
    let claims: Claims = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
    check_times(&claims, cfg.leeway.as_secs(), now)?;
    if let Some(allowed) = &cfg.audience {
        check_audience(&claims, allowed)?;
    }
    check_issuer(&claims, &cfg.project_id)?;
    let is_refresh = claims.get("drn").and_then(Value::as_str) == Some("DSR");
    match kind {
        TokenKind::Session if is_refresh => {
            Err(Error::token(TokenCode::Kind, "it is a refresh token (drn DSR); send the session token (DS) instead"))
        }
        TokenKind::Refresh if !is_refresh => {
            Err(Error::token(TokenCode::Kind, "it is not a refresh token (drn is not DSR)"))
        }
        _ => Ok(claims),
    }
}

fn malformed() -> Error {
    Error::token(TokenCode::Malformed, "it is malformed: its signature or payload is not valid base64url JSON")
}

/// A NumericDate claim (RFC 7519): whole seconds, or a fraction of them (truncated), never negative.
fn numeric_date(claims: &Claims, name: &str) -> Result<Option<i64>> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => match (v.as_i64(), v.as_f64()) {
            (Some(n), _) if n >= 0 => Ok(Some(n)),
            (None, Some(f)) if f.is_finite() && f >= 0.0 && f < i64::MAX as f64 => Ok(Some(f as i64)),
            _ => Err(Error::token(TokenCode::Claims, format!("its '{name}' claim is malformed"))),
        },
    }
}

/// `exp` is required and `nbf` honoured, both with the configured leeway for clock skew.
fn check_times(claims: &Claims, leeway: u64, now: i64) -> Result<()> {
    let leeway = i64::try_from(leeway).unwrap_or(i64::MAX);
    let exp = numeric_date(claims, "exp")?.ok_or_else(|| Error::token(TokenCode::Claims, "it has no 'exp' claim"))?;
    let nbf = numeric_date(claims, "nbf")?;
    if exp < now.saturating_sub(leeway) {
        return Err(Error::ExpiredToken { expired_at: exp });
    }
    if nbf.is_some_and(|nbf| nbf > now.saturating_add(leeway)) {
        return Err(Error::token(
            TokenCode::NotYetValid,
            "it is not valid yet ('nbf' is in the future); check the clock",
        ));
    }
    Ok(())
}

/// With DESCOPE_AUDIENCE set, the token must name one of its values in `aud` (a string or a list);
/// a token without `aud` is refused too.
fn check_audience(claims: &Claims, allowed: &[String]) -> Result<()> {
    let matches = |a: &Value| a.as_str().is_some_and(|a| allowed.iter().any(|x| x == a));
    let ok = match claims.get("aud") {
        None => {
            return Err(Error::token(TokenCode::Audience, "it has no 'aud' claim, and DESCOPE_AUDIENCE requires one"))
        }
        Some(Value::Array(list)) => list.iter().any(matches),
        Some(single @ Value::String(_)) => matches(single),
        Some(_) => return Err(Error::token(TokenCode::Audience, "its 'aud' claim is malformed")),
    };
    if ok {
        Ok(())
    } else {
        Err(Error::token(TokenCode::Audience, "its audience ('aud') is not one DESCOPE_AUDIENCE allows"))
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
        Err(Error::token(TokenCode::Issuer, "it has no issuer ('iss')"))
    } else {
        Err(Error::token(
            TokenCode::Issuer,
            format!("it was issued for another Descope project, not {project_id}; check DESCOPE_PROJECT_ID"),
        ))
    }
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
    fn base64url_check_matches_the_alphabet() {
        for b in 0..=255u8 {
            let expected = b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
            let s = [b'A', b, b'z'];
            if let Ok(s) = std::str::from_utf8(&s) {
                assert_eq!(is_base64url(s), expected, "byte {b}");
            }
        }
        assert!(is_base64url("abcXYZ019-_"));
        assert!(!is_base64url("abc=") && !is_base64url("a+b") && !is_base64url("a/b") && !is_base64url("a b"));
    }

    #[test]
    fn times_and_audience_follow_the_configuration() {
        let c = |v: serde_json::Value| v.as_object().unwrap().clone();
        assert!(check_times(&c(serde_json::json!({"exp": 100})), 5, 104).is_ok());
        assert!(check_times(&c(serde_json::json!({"exp": 100.7})), 5, 105).is_ok());
        assert!(matches!(
            check_times(&c(serde_json::json!({"exp": 100})), 5, 106),
            Err(Error::ExpiredToken { expired_at: 100 })
        ));
        assert!(check_times(&c(serde_json::json!({})), 5, 0).unwrap_err().to_string().contains("no 'exp'"));
        for bad in [serde_json::json!("100"), serde_json::json!(-1), serde_json::json!(null)] {
            let err = check_times(&c(serde_json::json!({"exp": bad})), 5, 0).unwrap_err().to_string();
            assert!(err.contains("'exp' claim is malformed"), "{err}");
        }
        assert!(check_times(&c(serde_json::json!({"exp": 1000, "nbf": 105})), 5, 100).is_ok());
        assert!(check_times(&c(serde_json::json!({"exp": 1000, "nbf": 106})), 5, 100).is_err());
        let allowed = vec!["mlflow".to_string(), "other".to_string()];
        assert!(check_audience(&c(serde_json::json!({"aud": "mlflow"})), &allowed).is_ok());
        assert!(check_audience(&c(serde_json::json!({"aud": ["x", "other"]})), &allowed).is_ok());
        assert!(check_audience(&c(serde_json::json!({"aud": ["x"]})), &allowed).is_err());
        assert!(check_audience(&c(serde_json::json!({"aud": 5})), &allowed).is_err());
        // DESCOPE_AUDIENCE set means the token must name an audience (jsonwebtoken let a token
        // without `aud` through).
        let err = check_audience(&c(serde_json::json!({})), &allowed).unwrap_err().to_string();
        assert!(err.contains("no 'aud'"), "{err}");
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
