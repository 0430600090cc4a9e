//! The core's configuration, read from the environment once through the settings table
//! ([`crate::settings`]), with errors that name the variable.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::permission::Permission;
use crate::settings::{self, Value};

pub const DEFAULT_BASE_URL: &str = "https://api.descope.com";

/// Everything the core needs to validate tokens and talk to Descope. Build it with [`Config::new`]
/// (the table's defaults) or [`Config::from_env`] / [`Config::from_lookup`] (environment variables).
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

/// Tokens longer than this are rejected before any parsing or crypto: not a setting (Descope's tokens
/// are a few KiB), so an attacker's megabyte never reaches the parser.
const MAX_TOKEN_BYTES: usize = 16 * 1024;

impl Config {
    /// The settings' defaults (from [`crate::settings::SETTINGS`]) for this project.
    pub fn new(project_id: &str) -> Result<Self> {
        let project_id = project_id.to_string();
        Self::from_lookup(|name| (name == "DESCOPE_PROJECT_ID").then(|| project_id.clone()))
    }

    pub fn from_env() -> Result<Self> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the `DESCOPE_*` variables through `lookup`, each validated by its row of the settings
    /// table; blank values count as unset (except where the table says empty is a value).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let lookup: &dyn Fn(&str) -> Option<String> = &lookup;
        let read = |name: &'static str| -> Result<Value> {
            settings::read(name, lookup)?.ok_or_else(|| Error::config(name, "has no default; a bug to report"))
        };
        let project_id = read("DESCOPE_PROJECT_ID")?.into_text("DESCOPE_PROJECT_ID")?;
        let base_url = match settings::read("DESCOPE_BASE_URI", lookup)? {
            Some(url) => url.into_text("DESCOPE_BASE_URI")?,
            None => default_base_url(&project_id),
        };
        let audience = match settings::read("DESCOPE_AUDIENCE", lookup)? {
            Some(list) => Some(list.into_list("DESCOPE_AUDIENCE")?),
            None => None,
        };
        let role_permissions = match settings::read("DESCOPE_ROLE_PERMISSIONS", lookup)? {
            Some(pairs) => pairs.into_role_levels("DESCOPE_ROLE_PERMISSIONS")?,
            None => Vec::new(),
        };
        let level = read("DESCOPE_DEFAULT_PERMISSION")?.into_text("DESCOPE_DEFAULT_PERMISSION")?;
        let cache_size = read("DESCOPE_TOKEN_CACHE_SIZE")?.into_whole_number("DESCOPE_TOKEN_CACHE_SIZE")?;
        Ok(Config {
            project_id,
            base_url,
            leeway: read("DESCOPE_JWT_LEEWAY")?.into_seconds("DESCOPE_JWT_LEEWAY")?,
            audience,
            admin_roles: read("DESCOPE_ADMIN_ROLES")?.into_list("DESCOPE_ADMIN_ROLES")?,
            username_claim: read("DESCOPE_USERNAME_CLAIM")?.into_text("DESCOPE_USERNAME_CLAIM")?,
            default_permission: level.parse().map_err(|e| Error::config("DESCOPE_DEFAULT_PERMISSION", e))?,
            role_permissions,
            http_timeout: read("DESCOPE_HTTP_TIMEOUT")?.into_seconds("DESCOPE_HTTP_TIMEOUT")?,
            key_refetch_interval: read("DESCOPE_KEY_REFETCH_INTERVAL")?.into_seconds("DESCOPE_KEY_REFETCH_INTERVAL")?,
            key_ttl: read("DESCOPE_KEY_TTL")?.into_seconds("DESCOPE_KEY_TTL")?,
            token_cache_size: usize::try_from(cache_size).map_err(|e| Error::config("DESCOPE_TOKEN_CACHE_SIZE", e))?,
            max_token_bytes: MAX_TOKEN_BYTES,
        })
    }
}

/// The `DescopeClient(...)` keyword arguments: each goes through its variable's validator, so a value
/// the environment would refuse is refused here too (with the keyword and the variable named).
#[derive(Debug, Clone, Default)]
pub struct Keywords<'a> {
    pub base_url: Option<&'a str>,
    pub leeway: Option<f64>,
    pub audience: Option<Vec<String>>,
    pub admin_roles: Option<Vec<String>>,
    pub username_claim: Option<&'a str>,
    pub default_permission: Option<&'a str>,
    pub role_permissions: Option<&'a str>,
    pub http_timeout: Option<f64>,
    pub key_refetch_interval: Option<f64>,
    pub key_ttl: Option<f64>,
    pub token_cache_size: Option<i64>,
}

impl Config {
    pub fn from_keywords(project_id: &str, kw: Keywords<'_>) -> Result<Self> {
        let text = |var: &'static str, raw: &str| settings::row(var)?.keyword_value(raw)?.into_text(var);
        let list =
            |var: &'static str, items: &[String]| settings::row(var)?.keyword_value(&items.join(","))?.into_list(var);
        let seconds = |var: &'static str, value: f64| settings::row(var)?.seconds(value);
        let mut cfg = Config::new(&text("DESCOPE_PROJECT_ID", project_id)?)?;
        if let Some(v) = kw.base_url {
            cfg.base_url = text("DESCOPE_BASE_URI", v)?;
        }
        if let Some(v) = kw.leeway {
            cfg.leeway = seconds("DESCOPE_JWT_LEEWAY", v)?;
        }
        if let Some(v) = kw.audience {
            cfg.audience = Some(list("DESCOPE_AUDIENCE", &v)?);
        }
        if let Some(v) = kw.admin_roles {
            cfg.admin_roles = list("DESCOPE_ADMIN_ROLES", &v)?;
        }
        if let Some(v) = kw.username_claim {
            cfg.username_claim = text("DESCOPE_USERNAME_CLAIM", v)?;
        }
        if let Some(v) = kw.default_permission {
            let level = text("DESCOPE_DEFAULT_PERMISSION", v)?;
            cfg.default_permission = level.parse().map_err(|e| Error::config("DESCOPE_DEFAULT_PERMISSION", e))?;
        }
        if let Some(v) = kw.role_permissions {
            let var = "DESCOPE_ROLE_PERMISSIONS";
            cfg.role_permissions = settings::row(var)?.keyword_value(v)?.into_role_levels(var)?;
        }
        if let Some(v) = kw.http_timeout {
            cfg.http_timeout = seconds("DESCOPE_HTTP_TIMEOUT", v)?;
        }
        if let Some(v) = kw.key_refetch_interval {
            cfg.key_refetch_interval = seconds("DESCOPE_KEY_REFETCH_INTERVAL", v)?;
        }
        if let Some(v) = kw.key_ttl {
            cfg.key_ttl = seconds("DESCOPE_KEY_TTL", v)?;
        }
        if let Some(v) = kw.token_cache_size {
            let var = "DESCOPE_TOKEN_CACHE_SIZE";
            let n = settings::row(var)?.whole_number(i128::from(v))?;
            cfg.token_cache_size = usize::try_from(n).map_err(|e| Error::config(var, e))?;
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
        let err = from(&[]).unwrap_err();
        assert_eq!((err.code(), err.variable()), ("config_missing", Some("DESCOPE_PROJECT_ID")));
        assert!(err.to_string().contains("Descope console"), "{err}");
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
    fn defaults_come_from_the_table() {
        let cfg = Config::new("P2x").unwrap();
        assert_eq!(cfg.leeway, Duration::from_secs(5));
        assert_eq!(cfg.admin_roles, vec!["admin", "mlflow-admin"]);
        assert_eq!((cfg.username_claim.as_str(), cfg.default_permission), ("sub", Permission::Read));
        assert_eq!((cfg.http_timeout, cfg.key_refetch_interval), (Duration::from_secs(5), Duration::from_secs(10)));
        assert_eq!((cfg.key_ttl, cfg.token_cache_size), (Duration::from_secs(600), 10_000));
        assert_eq!((cfg.audience, cfg.role_permissions), (None, vec![]));
        assert_eq!(
            from(&[("DESCOPE_PROJECT_ID", "P2x"), ("DESCOPE_ADMIN_ROLES", "")]).unwrap().admin_roles,
            Vec::<String>::new()
        );
    }

    fn keyword_error(kw: Keywords<'_>) -> (&'static str, Option<&'static str>, Option<&'static str>) {
        let e = Config::from_keywords("P2x", kw).unwrap_err();
        (e.code(), e.variable(), e.keyword())
    }

    #[test]
    fn keywords_go_through_the_variables_validators() {
        let bad = [
            (Keywords { leeway: Some(1e6), ..Default::default() }, "DESCOPE_JWT_LEEWAY", "leeway"),
            (Keywords { leeway: Some(-1.0), ..Default::default() }, "DESCOPE_JWT_LEEWAY", "leeway"),
            (Keywords { http_timeout: Some(0.0), ..Default::default() }, "DESCOPE_HTTP_TIMEOUT", "http_timeout"),
            (Keywords { key_ttl: Some(0.0), ..Default::default() }, "DESCOPE_KEY_TTL", "key_ttl"),
            (
                Keywords { key_refetch_interval: Some(f64::NAN), ..Default::default() },
                "DESCOPE_KEY_REFETCH_INTERVAL",
                "key_refetch_interval",
            ),
            (
                Keywords { token_cache_size: Some(-1), ..Default::default() },
                "DESCOPE_TOKEN_CACHE_SIZE",
                "token_cache_size",
            ),
            (Keywords { base_url: Some("ftp://x"), ..Default::default() }, "DESCOPE_BASE_URI", "base_url"),
            (
                Keywords { default_permission: Some("ROOT"), ..Default::default() },
                "DESCOPE_DEFAULT_PERMISSION",
                "default_permission",
            ),
            (
                Keywords { role_permissions: Some("editor"), ..Default::default() },
                "DESCOPE_ROLE_PERMISSIONS",
                "role_permissions",
            ),
            (Keywords { username_claim: Some(""), ..Default::default() }, "DESCOPE_USERNAME_CLAIM", "username_claim"),
            (Keywords { audience: Some(vec![]), ..Default::default() }, "DESCOPE_AUDIENCE", "audience"),
        ];
        for (kw, var, keyword) in bad {
            assert_eq!(keyword_error(kw), ("config_invalid", Some(var), Some(keyword)), "{keyword}");
        }
        // The same values through the environment fail on the same rule.
        for (var, value) in
            [("DESCOPE_JWT_LEEWAY", "1000000"), ("DESCOPE_HTTP_TIMEOUT", "0"), ("DESCOPE_TOKEN_CACHE_SIZE", "-1")]
        {
            let e = from(&[("DESCOPE_PROJECT_ID", "P2x"), (var, value)]).unwrap_err();
            assert_eq!((e.code(), e.variable(), e.keyword()), ("config_invalid", Some(var), None));
        }
        let e = Config::from_keywords(" ", Keywords::default()).unwrap_err();
        assert_eq!(
            (e.code(), e.variable(), e.keyword()),
            ("config_missing", Some("DESCOPE_PROJECT_ID"), Some("project_id"))
        );
        let e = Config::from_keywords("P2 bad!", Keywords::default()).unwrap_err();
        assert_eq!((e.code(), e.keyword()), ("config_invalid", Some("project_id")));
    }

    #[test]
    fn keywords_set_what_they_name() {
        let cfg = Config::from_keywords(
            "P2x",
            Keywords {
                base_url: Some("http://127.0.0.1:9/"),
                leeway: Some(300.0),
                audience: Some(vec!["a".into(), " b ".into()]),
                admin_roles: Some(vec![]),
                username_claim: Some("email"),
                default_permission: Some("edit"),
                role_permissions: Some("viewer=READ"),
                http_timeout: Some(0.05),
                key_refetch_interval: Some(0.0),
                key_ttl: Some(1.0),
                token_cache_size: Some(0),
            },
        )
        .unwrap();
        assert_eq!(cfg.base_url, "http://127.0.0.1:9");
        assert_eq!(cfg.leeway, Duration::from_secs(300));
        assert_eq!(cfg.audience, Some(vec!["a".to_string(), "b".to_string()]));
        assert!(cfg.admin_roles.is_empty());
        assert_eq!((cfg.username_claim.as_str(), cfg.default_permission), ("email", Permission::Edit));
        assert_eq!(cfg.role_permissions, vec![("viewer".to_string(), Permission::Read)]);
        assert_eq!(
            (cfg.http_timeout, cfg.key_ttl, cfg.token_cache_size),
            (Duration::from_millis(50), Duration::from_secs(1), 0)
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
            let err = from(&[("DESCOPE_PROJECT_ID", "P2x"), (var, value)]).unwrap_err();
            assert_eq!((err.code(), err.variable()), ("config_invalid", Some(var)));
        }
        let err = from(&[("DESCOPE_PROJECT_ID", "P2 x/../")]).unwrap_err();
        assert_eq!((err.code(), err.variable()), ("config_invalid", Some("DESCOPE_PROJECT_ID")));
    }
}
