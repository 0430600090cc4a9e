//! One error type for the whole core. Every message says what is wrong and what to do about it, and
//! none ever contains a token: callers log these messages and return them to HTTP clients.

use std::fmt;

/// What went wrong, coarse enough for a caller to pick a response (401, 503, a config error at start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Config,
    InvalidToken,
    ExpiredToken,
    Unreachable,
    RefreshFailed,
    AccessKeyRejected,
    Api,
}

/// Why a token was refused, for callers that act on the reason (never on the message's wording).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenCode {
    /// Not a well-formed JWT: empty, wrong shape, header or payload not base64url JSON.
    Malformed,
    /// Over the size limit, refused before any parsing.
    TooLong,
    /// An algorithm Descope does not sign with, or one that does not match the key.
    Algorithm,
    /// Signed by a key the project does not (or no longer) publish.
    UnknownKey,
    Signature,
    NotYetValid,
    Issuer,
    Audience,
    /// A refresh token where a session token belongs, or the reverse.
    Kind,
    /// A claim the mapping needs is missing or unusable (`sub`, `exp`, the username claim).
    Claims,
    /// Refused for a reason without a code of its own (e.g. no token at all).
    Invalid,
}

impl TokenCode {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenCode::Malformed => "token_malformed",
            TokenCode::TooLong => "token_too_long",
            TokenCode::Algorithm => "token_algorithm",
            TokenCode::UnknownKey => "token_unknown_key",
            TokenCode::Signature => "token_signature",
            TokenCode::NotYetValid => "token_not_yet_valid",
            TokenCode::Issuer => "token_issuer",
            TokenCode::Audience => "token_audience",
            TokenCode::Kind => "token_kind",
            TokenCode::Claims => "token_claims",
            TokenCode::Invalid => "token_invalid",
        }
    }
}

/// The reason a token was refused: a stable code and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenProblem {
    pub code: TokenCode,
    pub reason: String,
    /// The token was offered as a refresh token (`DSR`), so messages name it that way.
    pub refresh: bool,
}

impl TokenProblem {
    fn subject(&self) -> &'static str {
        if self.refresh {
            "refresh"
        } else {
            "session"
        }
    }
}

impl fmt::Display for TokenProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// `var` is the environment variable; `keyword` the `DescopeClient(...)` argument when the value
    /// came from one.
    #[error("configuration error in {}: {reason}", subject(var, *keyword))]
    Config { var: &'static str, keyword: Option<&'static str>, missing: bool, reason: String },

    #[error("invalid {} token: {}", .0.subject(), .0)]
    InvalidToken(TokenProblem),

    #[error("the session token expired at {expired_at} (unix time); sign in again or refresh the session")]
    ExpiredToken { expired_at: i64 },

    #[error("cannot reach Descope at {url}: {reason}; check DESCOPE_BASE_URI and the network, or retry later")]
    Unreachable { url: String, reason: String },

    #[error("refreshing the session failed: {0}; sign in again to get a new refresh token")]
    RefreshFailed(String),

    #[error("exchanging the access key failed: {0}; check DESCOPE_ACCESS_KEY and that the key is active in the Descope console")]
    AccessKeyRejected(String),

    #[error("Descope {operation} failed: {reason}")]
    Api { operation: &'static str, reason: String },

    /// The store the server's processes share for refreshes failed; like Descope being out of
    /// reach, the session cannot be renewed right now but nothing is wrong with it.
    #[error("coordinating the session refresh failed: {0}; retry in a moment")]
    Coordination(String),

    /// The session `mlflow-descope-auth login` stored cannot be used (gone, unreadable, or Descope
    /// refused to renew it): only signing in again helps.
    #[error(
        "the session `mlflow-descope-auth login` stored for {tracking_uri} {why}; \
         run `mlflow-descope-auth login --tracking-uri {tracking_uri}` again"
    )]
    StoredLogin { tracking_uri: String, why: String },
}

fn subject(var: &str, keyword: Option<&str>) -> String {
    match keyword {
        Some(k) => format!("{k} ({var})"),
        None => var.to_string(),
    }
}

/// Every code [`Error::code`] can return, for documentation and tests.
pub const CODES: [&str; 19] = [
    "config_missing",
    "config_invalid",
    "token_malformed",
    "token_too_long",
    "token_algorithm",
    "token_unknown_key",
    "token_signature",
    "token_expired",
    "token_not_yet_valid",
    "token_issuer",
    "token_audience",
    "token_kind",
    "token_claims",
    "token_invalid",
    "descope_unreachable",
    "refresh_failed",
    "access_key_rejected",
    "descope_api",
    "refresh_store_unavailable",
];

impl Error {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Config { .. } => ErrorKind::Config,
            Error::InvalidToken(_) => ErrorKind::InvalidToken,
            Error::ExpiredToken { .. } => ErrorKind::ExpiredToken,
            Error::Unreachable { .. } => ErrorKind::Unreachable,
            Error::RefreshFailed(_) => ErrorKind::RefreshFailed,
            Error::AccessKeyRejected(_) => ErrorKind::AccessKeyRejected,
            Error::Api { .. } => ErrorKind::Api,
            Error::Coordination(_) => ErrorKind::Unreachable,
            Error::StoredLogin { .. } => ErrorKind::RefreshFailed,
        }
    }

    /// A stable snake_case name of what went wrong (listed in [`CODES`]): callers branch on it, never
    /// on the message, whose wording may change.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Config { missing: true, .. } => "config_missing",
            Error::Config { missing: false, .. } => "config_invalid",
            Error::InvalidToken(p) => p.code.as_str(),
            Error::ExpiredToken { .. } => "token_expired",
            Error::Unreachable { .. } => "descope_unreachable",
            Error::RefreshFailed(_) => "refresh_failed",
            Error::AccessKeyRejected(_) => "access_key_rejected",
            Error::Api { .. } => "descope_api",
            Error::Coordination(_) => "refresh_store_unavailable",
            Error::StoredLogin { .. } => "refresh_failed",
        }
    }

    /// The environment variable a configuration error is about.
    pub fn variable(&self) -> Option<&'static str> {
        match self {
            Error::Config { var, .. } => Some(var),
            _ => None,
        }
    }

    /// The `DescopeClient(...)` keyword a configuration error is about, when it came from one.
    pub fn keyword(&self) -> Option<&'static str> {
        match self {
            Error::Config { keyword, .. } => *keyword,
            _ => None,
        }
    }

    /// The same configuration error, reported against a keyword argument (the variable stays named).
    pub fn for_keyword(self, name: &'static str) -> Self {
        match self {
            Error::Config { var, missing, reason, .. } => Error::Config { var, keyword: Some(name), missing, reason },
            other => other,
        }
    }

    /// The same error, about a token that was offered as a refresh token.
    pub fn for_refresh_token(self) -> Self {
        match self {
            Error::InvalidToken(p) => Error::InvalidToken(TokenProblem { refresh: true, ..p }),
            other => other,
        }
    }

    pub(crate) fn invalid(reason: impl fmt::Display) -> Self {
        Error::token(TokenCode::Invalid, reason)
    }

    pub(crate) fn token(code: TokenCode, reason: impl fmt::Display) -> Self {
        Error::InvalidToken(TokenProblem { code, reason: reason.to_string(), refresh: false })
    }

    pub(crate) fn config(var: &'static str, reason: impl fmt::Display) -> Self {
        Error::Config { var, keyword: None, missing: false, reason: reason.to_string() }
    }

    pub(crate) fn config_missing(var: &'static str, reason: impl fmt::Display) -> Self {
        Error::Config { var, keyword: None, missing: true, reason: reason.to_string() }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Replaces anything shaped like a JWT (or a `project:secret` bearer credential) with `[redacted]`.
/// Descope error bodies and transport errors are copied into messages, and they must never carry a
/// credential into a log line, even one the server echoed back.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, word) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
        }
        if looks_like_secret(word) {
            out.push_str("[redacted]");
        } else {
            out.push_str(word);
        }
    }
    out
}

fn looks_like_secret(word: &str) -> bool {
    let w = word.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    // JWT headers are base64url JSON objects, so they start with `eyJ` (`{"`).
    w.contains("eyJ") || (w.len() >= 40 && w.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_removes_jwts_and_long_secrets() {
        let text = "bad token eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln here, key P2abc:K2abcdefghijklmnopqrstuvwxyz0123456789ABCD";
        let red = redact(text);
        assert!(!red.contains("eyJ"), "{red}");
        assert!(!red.contains("K2abc"), "{red}");
        assert!(red.starts_with("bad token [redacted] here, key [redacted]"), "{red}");
    }

    #[test]
    fn every_error_has_a_listed_code_and_configuration_errors_name_their_variable() {
        let errors = [
            Error::config("DESCOPE_KEY_TTL", "bad"),
            Error::config_missing("DESCOPE_PROJECT_ID", "not set"),
            Error::token(TokenCode::Signature, "x"),
            Error::invalid("x"),
            Error::ExpiredToken { expired_at: 1 },
            Error::Unreachable { url: "u".into(), reason: "r".into() },
            Error::RefreshFailed("x".into()),
            Error::AccessKeyRejected("x".into()),
            Error::Api { operation: "key fetch", reason: "r".into() },
            Error::Coordination("store down".into()),
            Error::StoredLogin { tracking_uri: "https://m".into(), why: "is gone".into() },
        ];
        let codes: Vec<&str> = errors.iter().map(Error::code).collect();
        assert_eq!(
            codes,
            [
                "config_invalid",
                "config_missing",
                "token_signature",
                "token_invalid",
                "token_expired",
                "descope_unreachable",
                "refresh_failed",
                "access_key_rejected",
                "descope_api",
                "refresh_store_unavailable",
                "refresh_failed"
            ]
        );
        assert!(codes.iter().all(|c| CODES.contains(c)));
        let keyword = Error::config("DESCOPE_KEY_TTL", "bad").for_keyword("key_ttl");
        assert_eq!((keyword.variable(), keyword.keyword()), (Some("DESCOPE_KEY_TTL"), Some("key_ttl")));
        assert_eq!(keyword.to_string(), "configuration error in key_ttl (DESCOPE_KEY_TTL): bad");
        assert_eq!(Error::ExpiredToken { expired_at: 1 }.variable(), None);
    }

    #[test]
    fn token_codes_are_listed() {
        use TokenCode::*;
        for code in
            [Malformed, TooLong, Algorithm, UnknownKey, Signature, NotYetValid, Issuer, Audience, Kind, Claims, Invalid]
        {
            assert!(CODES.contains(&code.as_str()), "{code:?}");
        }
    }

    #[test]
    fn redact_keeps_ordinary_text() {
        assert_eq!(redact("connection refused (os error 111)"), "connection refused (os error 111)");
    }
}
