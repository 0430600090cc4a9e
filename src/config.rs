//! Settings, read from the environment once and validated with errors that name the variable.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::permission::Permission;

pub const DEFAULT_BASE_URL: &str = "https://api.descope.com";

/// Everything the core needs to validate tokens and talk to Descope. Build it with [`Config::new`]
/// (defaults) or [`Config::from_env`] / [`Config::from_lookup`] (environment variables).
#[derive(Debug, Clone)]
pub struct Config {
    pub project_id: String,
    pub base_url: String,
    /// Clock skew tolerated on `exp` and `nbf` (the Descope SDK's default is 5 s).
    pub leeway: Duration,
    /// When set, the token's `aud` must contain one of these.
    pub audience: Option<Vec<String>>,
    pub admin_roles: Vec<String>,
    pub username_claim: String,
    pub default_permission: Permission,
    /// `role -> level` pairs; project and tenant roles both match.
    pub role_permissions: Vec<(String, Permission)>,
    pub http_timeout: Duration,
    /// An unknown `kid` triggers a key refetch at most this often, so a flood of forged kids cannot
    /// turn the server into an amplifier against Descope.
    pub key_refetch_interval: Duration,
    /// Keys older than this are refetched on next use (keys removed at Descope stop working then).
    pub key_ttl: Duration,
    pub token_cache_size: usize,
    /// Tokens longer than this are rejected before any parsing or crypto.
    pub max_token_bytes: usize,
}

impl Config {
    pub fn new(project_id: &str) -> Result<Self> {
        let project_id = validate_project_id(project_id)?;
        Ok(Config {
            base_url: default_base_url(&project_id),
            project_id,
            leeway: Duration::from_secs(5),
            audience: None,
            admin_roles: vec!["admin".into(), "mlflow-admin".into()],
            username_claim: "sub".into(),
            default_permission: Permission::Read,
            role_permissions: Vec::new(),
            http_timeout: Duration::from_secs(5),
            key_refetch_interval: Duration::from_secs(10),
            key_ttl: Duration::from_secs(600),
            token_cache_size: 10_000,
            max_token_bytes: 16 * 1024,
        })
    }

    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the `DESCOPE_*` variables through `lookup`; empty values count as unset.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let get = |name: &str| lookup(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let project_id = get("DESCOPE_PROJECT_ID").ok_or_else(|| {
            Error::config(
                "DESCOPE_PROJECT_ID",
                "not set; copy your project id (it starts with P) from the Descope console, Project settings",
            )
        })?;
        let mut cfg = Config::new(&project_id)?;
        if let Some(url) = get("DESCOPE_BASE_URI") {
            cfg.base_url = validate_base_url(&url)?;
        }
        if let Some(v) = get("DESCOPE_JWT_LEEWAY") {
            cfg.leeway = parse_seconds("DESCOPE_JWT_LEEWAY", &v, 0.0, 300.0)?;
        }
        if let Some(v) = get("DESCOPE_AUDIENCE") {
            cfg.audience = Some(split_list(&v));
        }
        if let Some(v) = lookup("DESCOPE_ADMIN_ROLES") {
            // Set but empty means "no admins by role", which is a legitimate choice.
            cfg.admin_roles = split_list(&v);
        }
        if let Some(v) = get("DESCOPE_USERNAME_CLAIM") {
            cfg.username_claim = v;
        }
        if let Some(v) = get("DESCOPE_DEFAULT_PERMISSION") {
            cfg.default_permission = v.parse().map_err(|e| Error::config("DESCOPE_DEFAULT_PERMISSION", e))?;
        }
        if let Some(v) = get("DESCOPE_ROLE_PERMISSIONS") {
            cfg.role_permissions = parse_role_permissions(&v)?;
        }
        if let Some(v) = get("DESCOPE_HTTP_TIMEOUT") {
            cfg.http_timeout = parse_seconds("DESCOPE_HTTP_TIMEOUT", &v, 0.05, 120.0)?;
        }
        if let Some(v) = get("DESCOPE_KEY_REFETCH_INTERVAL") {
            cfg.key_refetch_interval = parse_seconds("DESCOPE_KEY_REFETCH_INTERVAL", &v, 0.0, 3600.0)?;
        }
        if let Some(v) = get("DESCOPE_KEY_TTL") {
            cfg.key_ttl = parse_seconds("DESCOPE_KEY_TTL", &v, 1.0, 86_400.0)?;
        }
        if let Some(v) = get("DESCOPE_TOKEN_CACHE_SIZE") {
            cfg.token_cache_size = v.parse().map_err(|_| {
                Error::config(
                    "DESCOPE_TOKEN_CACHE_SIZE",
                    format!("'{v}' is not a whole number; use e.g. 10000, or 0 to turn the cache off"),
                )
            })?;
        }
        Ok(cfg)
    }
}

/// The Descope SDK's rule: a project id of 32+ characters carries its region in characters 1..5.
pub fn default_base_url(project_id: &str) -> String {
    if project_id.len() >= 32 {
        format!("https://api.{}.descope.com", &project_id[1..5])
    } else {
        DEFAULT_BASE_URL.to_string()
    }
}

fn validate_project_id(project_id: &str) -> Result<String> {
    let id = project_id.trim();
    if id.is_empty() {
        return Err(Error::config("DESCOPE_PROJECT_ID", "empty; copy your project id from the Descope console"));
    }
    // The id goes into URLs and `Bearer id:token` headers, so anything but [A-Za-z0-9_-] is a typo.
    if id.len() > 128 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(Error::config(
            "DESCOPE_PROJECT_ID",
            "must be letters and digits only (like P2abc...); copy it again from the Descope console",
        ));
    }
    Ok(id.to_string())
}

fn validate_base_url(url: &str) -> Result<String> {
    let trimmed = url.trim_end_matches('/');
    let rest = trimmed.strip_prefix("https://").or_else(|| trimmed.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => Ok(trimmed.to_string()),
        _ => Err(Error::config(
            "DESCOPE_BASE_URI",
            format!("'{url}' is not an http(s) URL; use e.g. https://api.descope.com or unset it"),
        )),
    }
}

fn split_list(value: &str) -> Vec<String> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

fn parse_seconds(var: &'static str, value: &str, min: f64, max: f64) -> Result<Duration> {
    match value.parse::<f64>() {
        Ok(s) if s.is_finite() && (min..=max).contains(&s) => Ok(Duration::from_secs_f64(s)),
        _ => Err(Error::config(var, format!("'{value}' is not a number of seconds between {min} and {max}"))),
    }
}

/// `editor=EDIT, viewer=READ` -> pairs. Duplicates keep the highest level.
pub fn parse_role_permissions(value: &str) -> Result<Vec<(String, Permission)>> {
    let var = "DESCOPE_ROLE_PERMISSIONS";
    let mut out: Vec<(String, Permission)> = Vec::new();
    for item in split_list(value) {
        let (role, level) = item.split_once('=').ok_or_else(|| {
            Error::config(var, format!("'{item}' is not role=LEVEL; write pairs like editor=EDIT,viewer=READ"))
        })?;
        let role = role.trim();
        if role.is_empty() {
            return Err(Error::config(var, format!("'{item}' has no role name before '='")));
        }
        let level: Permission = level.parse().map_err(|e| Error::config(var, format!("role '{role}': {e}")))?;
        match out.iter_mut().find(|(r, _)| r == role) {
            Some(existing) => existing.1 = existing.1.max(level),
            None => out.push((role.to_string(), level)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<Config> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn regional_base_url_follows_the_sdk_rule() {
        assert_eq!(default_base_url("P2abc"), "https://api.descope.com");
        let long = "Puse12aAc4T2V93bddihGEx2Ryhc8e5Z";
        assert_eq!(long.len(), 32);
        assert_eq!(default_base_url(long), "https://api.use1.descope.com");
    }

    #[test]
    fn missing_project_id_names_the_variable() {
        let err = from(&[]).unwrap_err().to_string();
        assert!(err.contains("DESCOPE_PROJECT_ID"), "{err}");
    }

    #[test]
    fn reads_every_variable() {
        let cfg = from(&[
            ("DESCOPE_PROJECT_ID", "P2test"),
            ("DESCOPE_BASE_URI", "http://127.0.0.1:9/"),
            ("DESCOPE_JWT_LEEWAY", "2.5"),
            ("DESCOPE_ADMIN_ROLES", "boss, root"),
            ("DESCOPE_USERNAME_CLAIM", "email"),
            ("DESCOPE_DEFAULT_PERMISSION", "no_permissions"),
            ("DESCOPE_ROLE_PERMISSIONS", "editor=EDIT,viewer=READ,editor=MANAGE"),
            ("DESCOPE_HTTP_TIMEOUT", "1"),
        ])
        .unwrap();
        assert_eq!(cfg.base_url, "http://127.0.0.1:9");
        assert_eq!(cfg.leeway, Duration::from_millis(2500));
        assert_eq!(cfg.admin_roles, vec!["boss", "root"]);
        assert_eq!(cfg.username_claim, "email");
        assert_eq!(cfg.default_permission, Permission::NoPermissions);
        assert_eq!(
            cfg.role_permissions,
            vec![("editor".to_string(), Permission::Manage), ("viewer".to_string(), Permission::Read)]
        );
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (var, value) in [
            ("DESCOPE_BASE_URI", "ftp://x"),
            ("DESCOPE_JWT_LEEWAY", "-1"),
            ("DESCOPE_DEFAULT_PERMISSION", "ADMIN"),
            ("DESCOPE_ROLE_PERMISSIONS", "editor"),
            ("DESCOPE_HTTP_TIMEOUT", "nan"),
            ("DESCOPE_TOKEN_CACHE_SIZE", "lots"),
        ] {
            let err = from(&[("DESCOPE_PROJECT_ID", "P2x"), (var, value)]).unwrap_err().to_string();
            assert!(err.contains(var), "{var}: {err}");
        }
        let err = from(&[("DESCOPE_PROJECT_ID", "P2 x/../")]).unwrap_err().to_string();
        assert!(err.contains("DESCOPE_PROJECT_ID"), "{err}");
    }
}
