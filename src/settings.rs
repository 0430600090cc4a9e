//! Every environment variable the package reads, in one table: its side, default, accepted values
//! and help. The core validates with it ([`crate::config::Config`] and the `DescopeClient(...)`
//! keywords go through the same validator per kind), and the Python side takes from it the server's
//! settings, `doctor`'s listing and the README's configuration reference.

use std::time::Duration;

use crate::error::{Error, Result};
use crate::permission::Permission;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Where MLflow scripts run.
    Client,
    /// Where `mlflow server --app-name descope` runs.
    Server,
    /// Both places, with the same value.
    Both,
}

impl Side {
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
            Side::Both => "both",
        }
    }
}

/// What a variable accepts; one validator each ([`Kind::check`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    Seconds {
        min: f64,
        max: f64,
    },
    WholeNumber {
        min: u64,
        max: u64,
    },
    /// One of these, matched case-insensitively and normalised to the spelling here.
    Choice(&'static [&'static str]),
    /// `http://` or `https://` and a host; a trailing `/` is dropped.
    HttpUrl,
    /// A same-site path (a redirect target): one leading `/`, no scheme, no `//` or `\`.
    SitePath,
    /// A path in the file system.
    FilePath,
    /// A URI that may carry a password (shown masked).
    Uri,
    /// Comma-separated values; blanks around them and empty ones are dropped.
    List,
    /// `role=LEVEL` pairs, comma-separated.
    RoleLevels,
    /// Letters, digits, `-` and `_` (it goes into URLs and headers).
    Identifier,
    /// A credential: never shown.
    Secret,
    Text,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Seconds { .. } => "seconds",
            Kind::WholeNumber { .. } => "whole_number",
            Kind::Choice(_) => "choice",
            Kind::HttpUrl => "http_url",
            Kind::SitePath => "site_path",
            Kind::FilePath => "file_path",
            Kind::Uri => "uri",
            Kind::List => "list",
            Kind::RoleLevels => "role_levels",
            Kind::Identifier => "identifier",
            Kind::Secret => "secret",
            Kind::Text => "text",
        }
    }

    /// What the kind accepts, in words (for the reference table and error messages).
    pub fn accepts(self) -> String {
        match self {
            Kind::Seconds { min, max } => format!("seconds, {min} to {max}"),
            Kind::WholeNumber { min, max } => format!("a whole number, {min} to {max}"),
            Kind::Choice(choices) => format!("one of {}", choices.join(", ")),
            Kind::HttpUrl => "an http(s) URL".into(),
            Kind::SitePath => "a path on this server".into(),
            Kind::FilePath => "a file system path".into(),
            Kind::Uri => "a URI (its password is masked)".into(),
            Kind::List => "a comma-separated list".into(),
            Kind::RoleLevels => "role=LEVEL pairs, comma-separated".into(),
            Kind::Identifier => "letters, digits, - and _".into(),
            Kind::Secret => "a secret (masked)".into(),
            Kind::Text => "text".into(),
        }
    }

    /// Validates `raw` (already known not to be blank, except for lists) and normalises it.
    fn check(self, var: &'static str, raw: &str) -> Result<Value> {
        let raw = raw.trim();
        match self {
            Kind::Seconds { .. } => match raw.parse::<f64>() {
                Ok(s) => self.seconds(var, s).map(Value::Seconds),
                Err(_) => Err(Error::config(var, format!("'{raw}' is not {}", self.seconds_range()))),
            },
            Kind::WholeNumber { .. } => match raw.parse::<i128>() {
                Ok(n) => self.whole_number(var, n).map(Value::WholeNumber),
                Err(_) => Err(Error::config(var, format!("'{raw}' is not {}", self.accepts()))),
            },
            Kind::Choice(choices) => choices
                .iter()
                .find(|c| c.eq_ignore_ascii_case(raw))
                .map(|c| Value::Text(c.to_string()))
                .ok_or_else(|| Error::config(var, format!("'{raw}' is not one of {}", choices.join(", ")))),
            Kind::HttpUrl => {
                let trimmed = raw.trim_end_matches('/');
                let rest = trimmed.strip_prefix("https://").or_else(|| trimmed.strip_prefix("http://"));
                match rest {
                    Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => {
                        Ok(Value::Text(trimmed.to_string()))
                    }
                    _ => Err(Error::config(
                        var,
                        format!("'{raw}' is not an http(s) URL; use e.g. https://api.descope.com or unset it"),
                    )),
                }
            }
            Kind::SitePath if is_site_path(raw) => Ok(Value::Text(raw.to_string())),
            Kind::SitePath => Err(Error::config(
                var,
                "must be a path on this server such as / (an absolute URL would make the login page an open \
                 redirect)",
            )),
            Kind::List => Ok(Value::List(split_list(raw))),
            Kind::RoleLevels => parse_role_levels(var, raw).map(Value::RoleLevels),
            Kind::Identifier => {
                if raw.len() > 128 || !raw.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                    return Err(Error::config(
                        var,
                        "must be letters and digits only (like P2abc...); copy it again from the Descope console",
                    ));
                }
                Ok(Value::Text(raw.to_string()))
            }
            Kind::FilePath | Kind::Uri | Kind::Secret | Kind::Text => Ok(Value::Text(raw.to_string())),
        }
    }

    fn seconds_range(self) -> String {
        match self {
            Kind::Seconds { min, max } => format!("a number of seconds between {min} and {max}"),
            _ => self.accepts(),
        }
    }

    /// The one range check for seconds, from the environment (parsed) or a keyword argument.
    fn seconds(self, var: &'static str, value: f64) -> Result<Duration> {
        match self {
            Kind::Seconds { min, max } if value.is_finite() && (min..=max).contains(&value) => {
                Ok(Duration::from_secs_f64(value))
            }
            _ => Err(Error::config(var, format!("'{value}' is not {}", self.seconds_range()))),
        }
    }

    fn whole_number(self, var: &'static str, value: i128) -> Result<u64> {
        match self {
            Kind::WholeNumber { min, max } if (i128::from(min)..=i128::from(max)).contains(&value) => Ok(value as u64),
            _ => Err(Error::config(var, format!("'{value}' is not {}", self.accepts()))),
        }
    }
}

/// What a variable holds when unset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultValue {
    /// No default: an unset variable is a configuration error, explained by the hint.
    Required { hint: &'static str },
    /// Unset means "off" or "none".
    Unset,
    /// A value the validator accepts. `{cwd}` stands for the working directory and `{NAME}` for the
    /// value of the variable NAME.
    Value(&'static str),
    /// Computed by the code that reads the variable; `shown` says how.
    Computed { shown: &'static str },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Setting {
    pub name: &'static str,
    pub side: Side,
    pub kind: Kind,
    pub default: DefaultValue,
    /// The `DescopeClient(...)` keyword that sets it, when there is one.
    pub keyword: Option<&'static str>,
    /// A set but empty value counts (e.g. "no admin roles") instead of meaning "unset".
    pub empty_is_a_value: bool,
    pub example: &'static str,
    /// One line, Markdown.
    pub help: &'static str,
}

impl Setting {
    /// How the default is shown to people (`doctor`, the README).
    pub fn default_shown(&self) -> String {
        match self.default {
            DefaultValue::Required { .. } => "(required)".into(),
            DefaultValue::Unset => "unset".into(),
            DefaultValue::Value(v) => v.replace('{', "<").replace('}', ">"),
            DefaultValue::Computed { shown } => shown.into(),
        }
    }

    /// Validates a value from the environment; `None` when it is blank and blank means unset.
    pub fn check(&self, raw: &str) -> Result<Option<Value>> {
        if raw.trim().is_empty() && !self.empty_is_a_value {
            return Ok(None);
        }
        self.kind.check(self.name, raw).map(Some)
    }

    /// The value of this setting: `raw` when set, else the default (resolved through `lookup` for the
    /// variables it names). `None` for an unset setting without a default value.
    pub fn read(&self, raw: Option<&str>, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Option<Value>> {
        if let Some(value) = raw.map(|r| self.check(r)).transpose()?.flatten() {
            return Ok(Some(value));
        }
        match self.default {
            DefaultValue::Required { hint } => Err(Error::config_missing(self.name, format!("not set; {hint}"))),
            DefaultValue::Unset | DefaultValue::Computed { .. } => Ok(None),
            DefaultValue::Value(template) => self.kind.check(self.name, &resolve(template, lookup)?).map(Some),
        }
    }

    /// A `DescopeClient(...)` keyword's number of seconds, through the same range check as the variable.
    pub fn seconds(&self, value: f64) -> Result<Duration> {
        self.kind.seconds(self.name, value).map_err(|e| self.keyword_error(e))
    }

    pub fn whole_number(&self, value: i128) -> Result<u64> {
        self.kind.whole_number(self.name, value).map_err(|e| self.keyword_error(e))
    }

    /// A keyword's text value, through the variable's validator (a list keyword's items are joined).
    pub fn keyword_value(&self, raw: &str) -> Result<Value> {
        let checked = if raw.trim().is_empty() && !self.empty_is_a_value {
            match self.default {
                DefaultValue::Required { hint } => Err(Error::config_missing(self.name, format!("not set; {hint}"))),
                _ => Err(Error::config(self.name, "is empty; leave it out for the default")),
            }
        } else {
            self.kind.check(self.name, raw)
        };
        checked.map_err(|e| self.keyword_error(e))
    }

    fn keyword_error(&self, e: Error) -> Error {
        match self.keyword {
            Some(k) => e.for_keyword(k),
            None => e,
        }
    }
}

/// A validated, normalised value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Seconds(Duration),
    WholeNumber(u64),
    Text(String),
    List(Vec<String>),
    RoleLevels(Vec<(String, Permission)>),
}

impl Value {
    pub fn into_seconds(self, var: &'static str) -> Result<Duration> {
        match self {
            Value::Seconds(d) => Ok(d),
            other => Err(mismatch(var, &other)),
        }
    }
    pub fn into_whole_number(self, var: &'static str) -> Result<u64> {
        match self {
            Value::WholeNumber(n) => Ok(n),
            other => Err(mismatch(var, &other)),
        }
    }
    pub fn into_text(self, var: &'static str) -> Result<String> {
        match self {
            Value::Text(s) => Ok(s),
            other => Err(mismatch(var, &other)),
        }
    }
    pub fn into_list(self, var: &'static str) -> Result<Vec<String>> {
        match self {
            Value::List(items) => Ok(items),
            other => Err(mismatch(var, &other)),
        }
    }
    pub fn into_role_levels(self, var: &'static str) -> Result<Vec<(String, Permission)>> {
        match self {
            Value::RoleLevels(pairs) => Ok(pairs),
            other => Err(mismatch(var, &other)),
        }
    }
}

fn mismatch(var: &'static str, value: &Value) -> Error {
    Error::config(var, format!("the settings table gives it another kind of value ({value:?}); a bug to report"))
}

const PERMISSION_LEVELS: &[&str] = &["NO_PERMISSIONS", "READ", "USE", "EDIT", "MANAGE"];

/// Every variable the package reads.
pub static SETTINGS: &[Setting] = &[
    Setting {
        name: "DESCOPE_PROJECT_ID",
        side: Side::Both,
        kind: Kind::Identifier,
        default: DefaultValue::Required {
            hint: "copy your project id (it starts with P) from the Descope console, Project settings",
        },
        keyword: Some("project_id"),
        empty_is_a_value: false,
        example: "P2abc...",
        help: "your project id (Descope console, Project settings)",
    },
    Setting {
        name: "DESCOPE_BASE_URI",
        side: Side::Both,
        kind: Kind::HttpUrl,
        default: DefaultValue::Computed {
            shown: "https://api.descope.com (https://api.<region>.descope.com for 32+ character project ids)",
        },
        keyword: Some("base_url"),
        empty_is_a_value: false,
        example: "http://127.0.0.1:8765",
        help: "Descope API base URL; the emulator's URL for offline work",
    },
    Setting {
        name: "DESCOPE_ACCESS_KEY",
        side: Side::Client,
        kind: Kind::Secret,
        default: DefaultValue::Unset,
        keyword: None,
        empty_is_a_value: false,
        example: "K2...",
        help: "an access key, exchanged for sessions (preferred for CI and services: never runs out)",
    },
    Setting {
        name: "DESCOPE_SESSION_TOKEN",
        side: Side::Client,
        kind: Kind::Secret,
        default: DefaultValue::Unset,
        keyword: None,
        empty_is_a_value: false,
        example: "eyJ...",
        help: "a session JWT (e.g. from `mlflow-descope-auth token`)",
    },
    Setting {
        name: "DESCOPE_REFRESH_TOKEN",
        side: Side::Client,
        kind: Kind::Secret,
        default: DefaultValue::Unset,
        keyword: None,
        empty_is_a_value: false,
        example: "eyJ...",
        help: "the refresh JWT that renews it",
    },
    Setting {
        name: "DESCOPE_ALLOWED_HOSTS",
        side: Side::Client,
        kind: Kind::List,
        default: DefaultValue::Unset,
        keyword: None,
        empty_is_a_value: false,
        example: "mlflow-internal:5000",
        help: "more hosts (`host` or `host:port`) that may receive the token",
    },
    Setting {
        name: "DESCOPE_ADMIN_ROLES",
        side: Side::Both,
        kind: Kind::List,
        default: DefaultValue::Value("admin,mlflow-admin"),
        keyword: Some("admin_roles"),
        empty_is_a_value: true,
        example: "mlflow-admin",
        help: "project roles that make a user an MLflow admin; empty for none",
    },
    Setting {
        name: "DESCOPE_DEFAULT_PERMISSION",
        side: Side::Both,
        kind: Kind::Choice(PERMISSION_LEVELS),
        default: DefaultValue::Value("READ"),
        keyword: Some("default_permission"),
        empty_is_a_value: false,
        example: "NO_PERMISSIONS",
        help: "level of a user with no admin role and no mapped role",
    },
    Setting {
        name: "DESCOPE_ROLE_PERMISSIONS",
        side: Side::Both,
        kind: Kind::RoleLevels,
        default: DefaultValue::Unset,
        keyword: Some("role_permissions"),
        empty_is_a_value: false,
        example: "editor=EDIT,viewer=READ",
        help: "`role=LEVEL` pairs; project and tenant roles match; the highest wins",
    },
    Setting {
        name: "DESCOPE_USERNAME_CLAIM",
        side: Side::Both,
        kind: Kind::Text,
        default: DefaultValue::Value("sub"),
        keyword: Some("username_claim"),
        empty_is_a_value: false,
        example: "email",
        help: "claim used as the MLflow username; must be unique and immutable (`sub` is; `email` only if \
               your project guarantees it: [SECURITY.md](SECURITY.md#which-username-claim-descope_username_claim)); \
               a token whose claim is missing, blank, padded, with control characters or over 255 characters \
               is refused",
    },
    Setting {
        name: "DESCOPE_JWT_LEEWAY",
        side: Side::Both,
        kind: Kind::Seconds { min: 0.0, max: 300.0 },
        default: DefaultValue::Value("5"),
        keyword: Some("leeway"),
        empty_is_a_value: false,
        example: "10",
        help: "clock skew allowed on `exp` / `nbf`",
    },
    Setting {
        name: "DESCOPE_AUDIENCE",
        side: Side::Both,
        kind: Kind::List,
        default: DefaultValue::Unset,
        keyword: Some("audience"),
        empty_is_a_value: false,
        example: "P2abc...",
        help: "when set, the token's `aud` must contain one of these",
    },
    Setting {
        name: "DESCOPE_HTTP_TIMEOUT",
        side: Side::Both,
        kind: Kind::Seconds { min: 0.05, max: 120.0 },
        default: DefaultValue::Value("5"),
        keyword: Some("http_timeout"),
        empty_is_a_value: false,
        example: "2",
        help: "for each call to Descope (connect at most 3)",
    },
    Setting {
        name: "DESCOPE_KEY_REFETCH_INTERVAL",
        side: Side::Both,
        kind: Kind::Seconds { min: 0.0, max: 3600.0 },
        default: DefaultValue::Value("10"),
        keyword: Some("key_refetch_interval"),
        empty_is_a_value: false,
        example: "30",
        help: "an unknown key id triggers a key refetch at most this often",
    },
    Setting {
        name: "DESCOPE_KEY_TTL",
        side: Side::Both,
        kind: Kind::Seconds { min: 1.0, max: 86_400.0 },
        default: DefaultValue::Value("600"),
        keyword: Some("key_ttl"),
        empty_is_a_value: false,
        example: "3600",
        help: "cached keys older than this are refetched on next use",
    },
    Setting {
        name: "DESCOPE_TOKEN_CACHE_SIZE",
        side: Side::Both,
        kind: Kind::WholeNumber { min: 0, max: 10_000_000 },
        default: DefaultValue::Value("10000"),
        keyword: Some("token_cache_size"),
        empty_is_a_value: false,
        example: "0",
        help: "validated sessions kept in memory (SHA-256 keyed, never past `exp`); `0` turns it off",
    },
    Setting {
        name: "DESCOPE_FLOW_ID",
        side: Side::Server,
        kind: Kind::Text,
        default: DefaultValue::Value("sign-up-or-in"),
        keyword: None,
        empty_is_a_value: false,
        example: "sign-in",
        help: "the Descope flow the login page runs",
    },
    Setting {
        name: "DESCOPE_REDIRECT_URL",
        side: Side::Server,
        kind: Kind::SitePath,
        default: DefaultValue::Value("/"),
        keyword: None,
        empty_is_a_value: false,
        example: "/#/experiments",
        help: "where to go after sign-in when no `next` is given",
    },
    Setting {
        name: "DESCOPE_WEB_COMPONENT_VERSION",
        side: Side::Server,
        kind: Kind::Text,
        default: DefaultValue::Value("3.54.0"),
        keyword: None,
        empty_is_a_value: false,
        example: "3.54.0",
        help: "version of `@descope/web-component` loaded from the CDN",
    },
    Setting {
        name: "DESCOPE_WEB_COMPONENT_URL",
        side: Side::Server,
        kind: Kind::Text,
        default: DefaultValue::Value(
            "https://unpkg.com/@descope/web-component@{DESCOPE_WEB_COMPONENT_VERSION}/dist/index.js",
        ),
        keyword: None,
        empty_is_a_value: false,
        example: "https://static.example.com/descope-wc.js",
        help: "the flow component's script: a copy you host, or the emulator's stand-in",
    },
    Setting {
        name: "DESCOPE_COOKIE_SECURE",
        side: Side::Server,
        kind: Kind::Choice(&["auto", "true", "false"]),
        default: DefaultValue::Value("auto"),
        keyword: None,
        empty_is_a_value: false,
        example: "true",
        help: "`Secure` cookies: `auto` (when the request is HTTPS), `true`, `false`",
    },
    Setting {
        name: "DESCOPE_AUTH_DB_URI",
        side: Side::Server,
        kind: Kind::Uri,
        default: DefaultValue::Value("sqlite:///{cwd}/descope_auth.db"),
        keyword: None,
        empty_is_a_value: false,
        example: "postgresql+psycopg2://mlflow:***@db/mlflow_auth",
        help: "MLflow's user and permission database (PostgreSQL for several replicas); the `database_uri` of \
               `MLFLOW_AUTH_CONFIG_PATH` when unset",
    },
    Setting {
        name: "DESCOPE_AUTH_STATE_DIR",
        side: Side::Server,
        kind: Kind::FilePath,
        default: DefaultValue::Value("{cwd}/.mlflow-descope"),
        keyword: None,
        empty_is_a_value: false,
        example: "/shared/descope-state",
        help: "generated auth config, Flask secret key, start-up lock; refresh results the workers share when the auth DB is not PostgreSQL (mode 0700)",
    },
    Setting {
        name: "MLFLOW_TRACKING_URI",
        side: Side::Client,
        kind: Kind::Uri,
        default: DefaultValue::Unset,
        keyword: None,
        empty_is_a_value: false,
        example: "https://mlflow.example.com",
        help: "the MLflow server (the only host that receives the token, with `MLFLOW_REGISTRY_URI` and \
               `DESCOPE_ALLOWED_HOSTS`)",
    },
    Setting {
        name: "MLFLOW_REGISTRY_URI",
        side: Side::Client,
        kind: Kind::Uri,
        default: DefaultValue::Computed { shown: "the tracking URI" },
        keyword: None,
        empty_is_a_value: false,
        example: "https://registry.example.com",
        help: "MLflow's model registry server, when it is another one; it receives the token too",
    },
    Setting {
        name: "MLFLOW_TRACKING_AUTH",
        side: Side::Client,
        kind: Kind::Text,
        default: DefaultValue::Unset,
        keyword: None,
        empty_is_a_value: false,
        example: "descope",
        help: "`descope` turns the auth plugin on",
    },
    Setting {
        name: "MLFLOW_AUTH_CONFIG_PATH",
        side: Side::Server,
        kind: Kind::FilePath,
        default: DefaultValue::Unset,
        keyword: None,
        empty_is_a_value: false,
        example: "/etc/mlflow/auth.ini",
        help: "your MLflow auth config (cache settings, workspace access, ...); kept except \
               `authorization_function` and `admin_username`",
    },
    Setting {
        name: "MLFLOW_FLASK_SERVER_SECRET_KEY",
        side: Side::Server,
        kind: Kind::Secret,
        default: DefaultValue::Computed { shown: "random, stored in the state dir" },
        keyword: None,
        empty_is_a_value: false,
        example: "(a long random string)",
        help: "Flask's secret key, and the key that seals the refresh results workers and replicas share: the same on every replica",
    },
];

/// The row of `name`. Every name the code reads is in the table (a test checks), so a miss is a bug.
pub fn setting(name: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == name)
}

pub(crate) fn row(name: &'static str) -> Result<&'static Setting> {
    setting(name).ok_or_else(|| Error::config(name, "is not in the settings table; a bug to report"))
}

/// Reads `name` through `lookup` (raw value or default), validated.
pub fn read(name: &'static str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Option<Value>> {
    row(name)?.read(lookup(name).as_deref(), lookup)
}

/// Fills `{cwd}` and `{NAME}` in a default.
fn resolve(template: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let end = rest[start..].find('}').map(|e| start + e).unwrap_or(rest.len());
        out.push_str(&rest[..start]);
        let name = &rest[start + 1..end];
        if name == "cwd" {
            let cwd = std::env::current_dir().map_err(|e| Error::config("DESCOPE_AUTH_STATE_DIR", e))?;
            out.push_str(cwd.to_string_lossy().trim_end_matches('/'));
        } else {
            match setting(name) {
                Some(other) => match other.read(lookup(other.name).as_deref(), lookup)? {
                    Some(Value::Text(v)) => out.push_str(&v),
                    Some(v) => out.push_str(&format!("{v:?}")),
                    None => {}
                },
                None => out.push_str(&rest[start..=end.min(rest.len() - 1)]),
            }
        }
        rest = &rest[(end + 1).min(rest.len())..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A same-site relative path: starts with one '/', no scheme, no '//' or '/\' (browsers read both as
/// another host), no control characters.
pub fn is_site_path(target: &str) -> bool {
    if !target.starts_with('/') || target.starts_with("//") || target.starts_with("/\\") {
        return false;
    }
    !target.chars().any(|c| (c as u32) < 0x20 || c == '\\')
}

pub fn split_list(value: &str) -> Vec<String> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

/// `editor=EDIT, viewer=READ` -> pairs. Duplicates keep the highest level.
fn parse_role_levels(var: &'static str, value: &str) -> Result<Vec<(String, Permission)>> {
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

    fn check(name: &str, raw: &str) -> Result<Option<Value>> {
        setting(name).unwrap().check(raw)
    }

    fn code_and_var(e: Error) -> (&'static str, Option<&'static str>, Option<&'static str>) {
        (e.code(), e.variable(), e.keyword())
    }

    #[test]
    fn names_are_unique_and_defaults_pass_their_own_validator() {
        let none = |_: &str| None;
        for (i, s) in SETTINGS.iter().enumerate() {
            assert!(SETTINGS[..i].iter().all(|o| o.name != s.name), "{} twice", s.name);
            if let DefaultValue::Value(_) = s.default {
                assert!(s.read(None, &none).unwrap().is_some(), "{}", s.name);
            }
            assert!(!s.help.is_empty() && !s.example.is_empty(), "{}", s.name);
        }
    }

    #[test]
    fn seconds_are_range_checked() {
        let leeway = setting("DESCOPE_JWT_LEEWAY").unwrap();
        assert_eq!(check("DESCOPE_JWT_LEEWAY", " 2.5 ").unwrap(), Some(Value::Seconds(Duration::from_millis(2500))));
        for bad in ["-1", "301", "nan", "inf", "five"] {
            let e = check("DESCOPE_JWT_LEEWAY", bad).unwrap_err();
            assert_eq!(code_and_var(e), ("config_invalid", Some("DESCOPE_JWT_LEEWAY"), None), "{bad}");
        }
        assert_eq!(leeway.seconds(300.0).unwrap(), Duration::from_secs(300));
        for bad in [1e6, -0.5, f64::NAN, f64::INFINITY] {
            let e = leeway.seconds(bad).unwrap_err();
            let text = e.to_string();
            assert_eq!(code_and_var(e), ("config_invalid", Some("DESCOPE_JWT_LEEWAY"), Some("leeway")), "{bad}");
            assert!(text.starts_with("configuration error in leeway (DESCOPE_JWT_LEEWAY): "), "{text}");
        }
        let timeout = setting("DESCOPE_HTTP_TIMEOUT").unwrap();
        assert!(timeout.seconds(0.0).is_err() && timeout.seconds(0.05).is_ok() && timeout.seconds(121.0).is_err());
        assert!(check("DESCOPE_HTTP_TIMEOUT", "0").is_err());
        assert!(setting("DESCOPE_KEY_TTL").unwrap().seconds(0.5).is_err());
        assert!(setting("DESCOPE_KEY_REFETCH_INTERVAL").unwrap().seconds(3601.0).is_err());
    }

    #[test]
    fn whole_numbers_are_range_checked() {
        let size = setting("DESCOPE_TOKEN_CACHE_SIZE").unwrap();
        assert_eq!(check("DESCOPE_TOKEN_CACHE_SIZE", "0").unwrap(), Some(Value::WholeNumber(0)));
        for bad in ["-1", "1.5", "lots", "10000001"] {
            assert!(check("DESCOPE_TOKEN_CACHE_SIZE", bad).is_err(), "{bad}");
        }
        let e = size.whole_number(-1).unwrap_err();
        assert_eq!(code_and_var(e), ("config_invalid", Some("DESCOPE_TOKEN_CACHE_SIZE"), Some("token_cache_size")));
        assert_eq!(size.whole_number(10_000_000).unwrap(), 10_000_000);
    }

    #[test]
    fn choices_match_case_insensitively_and_normalise() {
        assert_eq!(check("DESCOPE_COOKIE_SECURE", " TRUE ").unwrap(), Some(Value::Text("true".into())));
        assert_eq!(
            check("DESCOPE_DEFAULT_PERMISSION", "no_permissions").unwrap(),
            Some(Value::Text("NO_PERMISSIONS".into()))
        );
        let e = check("DESCOPE_COOKIE_SECURE", "Yes").unwrap_err();
        assert_eq!(
            e.to_string(),
            "configuration error in DESCOPE_COOKIE_SECURE: 'Yes' is not one of auto, true, false"
        );
        let e = setting("DESCOPE_DEFAULT_PERMISSION").unwrap().keyword_value("ADMIN").unwrap_err();
        assert_eq!(code_and_var(e), ("config_invalid", Some("DESCOPE_DEFAULT_PERMISSION"), Some("default_permission")));
    }

    #[test]
    fn urls_paths_identifiers_lists_and_pairs() {
        assert_eq!(
            check("DESCOPE_BASE_URI", "http://127.0.0.1:9/").unwrap(),
            Some(Value::Text("http://127.0.0.1:9".into()))
        );
        for bad in ["ftp://x", "api.descope.com", "https://", "https://a b"] {
            assert!(check("DESCOPE_BASE_URI", bad).is_err(), "{bad}");
        }
        assert!(check("DESCOPE_REDIRECT_URL", "/#/experiments").unwrap().is_some());
        for bad in ["https://evil.example", "//evil.example", "/\\evil.example", "/a\nb", "x"] {
            let e = check("DESCOPE_REDIRECT_URL", bad).unwrap_err();
            assert_eq!(e.variable(), Some("DESCOPE_REDIRECT_URL"), "{bad}");
        }
        assert!(check("DESCOPE_PROJECT_ID", "P2 x/../").is_err());
        assert_eq!(check("DESCOPE_AUDIENCE", " a, ,b ").unwrap(), Some(Value::List(vec!["a".into(), "b".into()])));
        // Set but empty is "no admins by role"; unset is the default.
        assert_eq!(check("DESCOPE_ADMIN_ROLES", "").unwrap(), Some(Value::List(vec![])));
        assert_eq!(check("DESCOPE_AUDIENCE", "  ").unwrap(), None);
        assert_eq!(
            check("DESCOPE_ROLE_PERMISSIONS", "editor=EDIT,viewer=READ,editor=MANAGE").unwrap(),
            Some(Value::RoleLevels(vec![("editor".into(), Permission::Manage), ("viewer".into(), Permission::Read)]))
        );
        for bad in ["editor", "=EDIT", "editor=ROOT"] {
            assert!(check("DESCOPE_ROLE_PERMISSIONS", bad).is_err(), "{bad}");
        }
        for name in ["DESCOPE_FLOW_ID", "DESCOPE_AUTH_STATE_DIR", "DESCOPE_AUTH_DB_URI", "DESCOPE_ACCESS_KEY"] {
            assert_eq!(check(name, " x ").unwrap(), Some(Value::Text("x".into())), "{name}");
        }
    }

    #[test]
    fn defaults_resolve_the_working_directory_and_other_variables() {
        let cwd = std::env::current_dir().unwrap().to_string_lossy().trim_end_matches('/').to_string();
        let none = |_: &str| None;
        let db = read("DESCOPE_AUTH_DB_URI", &none).unwrap();
        assert_eq!(db, Some(Value::Text(format!("sqlite:///{cwd}/descope_auth.db"))));
        let version = |k: &str| (k == "DESCOPE_WEB_COMPONENT_VERSION").then(|| "9.9.9".to_string());
        let url = read("DESCOPE_WEB_COMPONENT_URL", &version).unwrap();
        assert_eq!(url, Some(Value::Text("https://unpkg.com/@descope/web-component@9.9.9/dist/index.js".into())));
        assert_eq!(setting("DESCOPE_AUTH_STATE_DIR").unwrap().default_shown(), "<cwd>/.mlflow-descope");
        let e = read("DESCOPE_PROJECT_ID", &none).unwrap_err();
        assert_eq!(code_and_var(e), ("config_missing", Some("DESCOPE_PROJECT_ID"), None));
        assert_eq!(read("DESCOPE_ROLE_PERMISSIONS", &none).unwrap(), None);
    }

    #[test]
    fn empty_keyword_values_are_refused_where_empty_means_unset() {
        let e = setting("DESCOPE_USERNAME_CLAIM").unwrap().keyword_value(" ").unwrap_err();
        assert_eq!(code_and_var(e), ("config_invalid", Some("DESCOPE_USERNAME_CLAIM"), Some("username_claim")));
        assert_eq!(setting("DESCOPE_ADMIN_ROLES").unwrap().keyword_value("").unwrap(), Value::List(vec![]));
    }
}
