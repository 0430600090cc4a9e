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

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("configuration error in {var}: {reason}")]
    Config { var: &'static str, reason: String },

    #[error("invalid session token: {0}")]
    InvalidToken(String),

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
}

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
        }
    }

    pub(crate) fn invalid(reason: impl fmt::Display) -> Self {
        Error::InvalidToken(reason.to_string())
    }

    pub(crate) fn config(var: &'static str, reason: impl fmt::Display) -> Self {
        Error::Config { var, reason: reason.to_string() }
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
    fn redact_keeps_ordinary_text() {
        assert_eq!(redact("connection refused (os error 111)"), "connection refused (os error 111)");
    }
}
