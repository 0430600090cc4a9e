//! Verified claims -> an immutable [`Identity`], and the identity's MLflow permission level.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::config::Config;
use crate::error::{Error, Result, TokenCode};
use crate::permission::Permission;

pub type Claims = Map<String, Value>;

/// Roles and permissions a user holds within one Descope tenant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TenantAccess {
    pub roles: Vec<String>,
    pub permissions: Vec<String>,
}

/// Who a verified session belongs to and what it may do in MLflow. Built only from claims whose
/// signature has been checked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Identity {
    pub user_id: String,
    pub username: String,
    pub email: Option<String>,
    pub name: Option<String>,
    /// Project-level roles.
    pub roles: Vec<String>,
    pub permissions: Vec<String>,
    pub tenants: BTreeMap<String, TenantAccess>,
    pub current_tenant: Option<String>,
    pub expires_at: i64,
    pub issued_at: Option<i64>,
    pub is_admin: bool,
    pub permission: Permission,
    /// Every claim of the token, for custom claims (`amr`, JWT-template fields, ...).
    #[serde(skip)]
    pub claims: Claims,
}

impl Identity {
    pub fn from_claims(claims: Claims, cfg: &Config) -> Result<Identity> {
        let user_id = string_claim(&claims, "sub")
            .or_else(|| string_claim(&claims, "dsub"))
            .ok_or_else(|| Error::token(TokenCode::Claims, "it names no user (no 'sub' or 'dsub' claim)"))?;
        let username = match cfg.username_claim.as_str() {
            "sub" => user_id.clone(),
            claim => string_claim(&claims, claim).ok_or_else(|| {
                Error::token(
                    TokenCode::Claims,
                    format!(
                        "it has no '{claim}' claim, which DESCOPE_USERNAME_CLAIM names; add the claim to the \
                     session JWT template in the Descope console, or set DESCOPE_USERNAME_CLAIM=sub"
                    ),
                )
            })?,
        };
        check_username(&username)?;
        let expires_at = claims
            .get("exp")
            .and_then(Value::as_i64)
            .ok_or_else(|| Error::token(TokenCode::Claims, "it has no numeric 'exp' claim"))?;
        let tenants = tenants(&claims);
        let roles = string_list(claims.get("roles"));
        let is_admin = roles.iter().any(|r| cfg.admin_roles.contains(r));
        let permission = if is_admin {
            Permission::Manage
        } else {
            role_level(&roles, &tenants, &cfg.role_permissions).unwrap_or(cfg.default_permission)
        };
        Ok(Identity {
            email: string_claim(&claims, "email"),
            name: string_claim(&claims, "name"),
            permissions: string_list(claims.get("permissions")),
            current_tenant: string_claim(&claims, "dct"),
            issued_at: claims.get("iat").and_then(Value::as_i64),
            user_id,
            username,
            roles,
            tenants,
            expires_at,
            is_admin,
            permission,
            claims,
        })
    }

    /// Whether the user holds `role` at project level, or in `tenant` when one is given.
    pub fn has_role(&self, role: &str, tenant: Option<&str>) -> bool {
        match tenant {
            None => self.roles.iter().any(|r| r == role),
            Some(t) => self.tenants.get(t).is_some_and(|a| a.roles.iter().any(|r| r == role)),
        }
    }
}

/// The highest level any of the user's roles maps to; tenant roles count, since Descope B2B projects
/// often assign roles only per tenant. Admin status deliberately does not: a tenant's own admin must
/// not become admin of the whole MLflow server.
fn role_level(
    roles: &[String],
    tenants: &BTreeMap<String, TenantAccess>,
    mapping: &[(String, Permission)],
) -> Option<Permission> {
    let all_roles = roles.iter().chain(tenants.values().flat_map(|t| t.roles.iter()));
    all_roles.filter_map(|role| mapping.iter().find(|(r, _)| r == role).map(|(_, p)| *p)).max()
}

/// MLflow's longest username (3.18 refuses more).
const MAX_USERNAME_CHARS: usize = 255;

/// The username is MLflow's key for a user's grants and runs: one that could be confused with
/// another (surrounding or only blanks, control characters) or that MLflow cannot store is refused
/// rather than altered. The reserved names are MLflow's own (the bootstrap admin is refused by the
/// server; `__user_<n>__` is MLflow's per-user role namespace).
fn check_username(username: &str) -> Result<()> {
    if username.trim() != username || username.chars().any(char::is_control) {
        return Err(Error::token(TokenCode::Claims, "its username claim has surrounding blanks or control characters"));
    }
    if username.chars().count() > MAX_USERNAME_CHARS {
        return Err(Error::token(
            TokenCode::Claims,
            format!("its username claim is longer than {MAX_USERNAME_CHARS} characters"),
        ));
    }
    Ok(())
}

fn string_claim(claims: &Claims, name: &str) -> Option<String> {
    claims.get(name).and_then(Value::as_str).filter(|s| !s.is_empty()).map(String::from)
}

fn string_list(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(String::from).collect(),
        _ => Vec::new(),
    }
}

fn tenants(claims: &Claims) -> BTreeMap<String, TenantAccess> {
    let Some(Value::Object(map)) = claims.get("tenants") else {
        return BTreeMap::new();
    };
    map.iter()
        .map(|(id, access)| {
            let access = TenantAccess {
                roles: string_list(access.get("roles")),
                permissions: string_list(access.get("permissions")),
            };
            (id.clone(), access)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(v: Value) -> Claims {
        v.as_object().unwrap().clone()
    }

    fn cfg() -> Config {
        Config::new("P2test").unwrap()
    }

    #[test]
    fn maps_a_descope_session() {
        let id = Identity::from_claims(
            claims(json!({
                "sub": "U2abc", "exp": 2000000000, "iat": 1999999000, "email": "ada@example.com",
                "name": "Ada", "roles": ["editor"], "permissions": ["read"], "dct": "T1",
                "tenants": {"T1": {"roles": ["tenant-admin"], "permissions": ["p"]}}
            })),
            &cfg(),
        )
        .unwrap();
        assert_eq!(id.user_id, "U2abc");
        assert_eq!(id.username, "U2abc");
        assert_eq!(id.email.as_deref(), Some("ada@example.com"));
        assert_eq!(id.current_tenant.as_deref(), Some("T1"));
        assert_eq!(id.tenants["T1"].roles, vec!["tenant-admin"]);
        assert!(!id.is_admin);
        assert_eq!(id.permission, Permission::Read);
        assert!(id.has_role("tenant-admin", Some("T1")) && !id.has_role("tenant-admin", None));
    }

    #[test]
    fn admins_get_manage_but_tenant_admins_do_not() {
        let admin = Identity::from_claims(claims(json!({"sub": "a", "exp": 1, "roles": ["mlflow-admin"]})), &cfg());
        assert!(admin.as_ref().unwrap().is_admin);
        assert_eq!(admin.unwrap().permission, Permission::Manage);
        let tenant_admin = Identity::from_claims(
            claims(json!({"sub": "a", "exp": 1, "tenants": {"T": {"roles": ["admin"]}}})),
            &cfg(),
        )
        .unwrap();
        assert!(!tenant_admin.is_admin);
    }

    #[test]
    fn role_permissions_pick_the_highest_including_tenant_roles() {
        let mut c = cfg();
        c.default_permission = Permission::NoPermissions;
        c.role_permissions = vec![("viewer".into(), Permission::Read), ("editor".into(), Permission::Edit)];
        let id = Identity::from_claims(
            claims(json!({"sub": "a", "exp": 1, "roles": ["viewer"], "tenants": {"T": {"roles": ["editor"]}}})),
            &c,
        )
        .unwrap();
        assert_eq!(id.permission, Permission::Edit);
        let nobody = Identity::from_claims(claims(json!({"sub": "b", "exp": 1, "roles": ["other"]})), &c).unwrap();
        assert_eq!(nobody.permission, Permission::NoPermissions);
    }

    #[test]
    fn username_claim_is_required_when_configured() {
        let mut c = cfg();
        c.username_claim = "email".into();
        let err = Identity::from_claims(claims(json!({"sub": "a", "exp": 1})), &c).unwrap_err().to_string();
        assert!(err.contains("DESCOPE_USERNAME_CLAIM"), "{err}");
        let id = Identity::from_claims(claims(json!({"dsub": "a", "exp": 1, "email": "e@x"})), &c).unwrap();
        assert_eq!((id.user_id.as_str(), id.username.as_str()), ("a", "e@x"));
    }

    #[test]
    fn usernames_that_could_pass_for_another_are_refused() {
        let mut c = cfg();
        c.username_claim = "email".into();
        let long = "a".repeat(256);
        for bad in ["", " ", "e@x ", " e@x", "e@x\n", "e\u{0}@x", long.as_str()] {
            let result = Identity::from_claims(claims(json!({"sub": "a", "exp": 1, "email": bad})), &c);
            assert!(result.is_err(), "{bad:?} accepted");
        }
        let fine = "a".repeat(255);
        assert!(Identity::from_claims(claims(json!({"sub": "a", "exp": 1, "email": fine})), &c).is_ok());
        let sub = Identity::from_claims(claims(json!({"sub": " a", "exp": 1})), &cfg());
        assert!(sub.is_err());
    }
}
