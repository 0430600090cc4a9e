//! MLflow permission levels, ordered so that "the highest matching level wins" is `max()`.

use std::fmt;
use std::str::FromStr;

/// The levels a Descope identity can map to. MLflow also knows `DENY`, but that is a per-resource
/// grant an admin sets, never a baseline derived from a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Permission {
    NoPermissions,
    Read,
    Use,
    Edit,
    Manage,
}

impl Permission {
    pub const ALL: [Permission; 5] =
        [Permission::NoPermissions, Permission::Read, Permission::Use, Permission::Edit, Permission::Manage];

    /// The name MLflow's permission API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::NoPermissions => "NO_PERMISSIONS",
            Permission::Read => "READ",
            Permission::Use => "USE",
            Permission::Edit => "EDIT",
            Permission::Manage => "MANAGE",
        }
    }
}

impl serde::Serialize for Permission {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Permission {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_uppercase();
        Permission::ALL.into_iter().find(|p| p.as_str() == wanted).ok_or_else(|| {
            let names: Vec<_> = Permission::ALL.iter().map(|p| p.as_str()).collect();
            format!("'{}' is not a permission level; use one of {}", s.trim(), names.join(", "))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_case_insensitively_and_orders_by_power() {
        assert_eq!("edit".parse::<Permission>().unwrap(), Permission::Edit);
        assert_eq!(" NO_PERMISSIONS ".parse::<Permission>().unwrap(), Permission::NoPermissions);
        assert!(Permission::Manage > Permission::Edit && Permission::Read > Permission::NoPermissions);
        let err = "DENY".parse::<Permission>().unwrap_err();
        assert!(err.contains("READ, USE, EDIT, MANAGE"), "{err}");
    }
}
