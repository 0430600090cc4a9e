//! Descope session validation, refresh, access-key exchange and claim mapping for MLflow.
//!
//! The core is plain Rust (usable and tested without Python); `py` is the thin PyO3 layer that
//! `maturin` builds into `mlflow_descope_auth._core` with the `python` feature.

pub mod admissions;
pub mod api;
pub mod cache;
pub mod client;
pub mod clock;
pub mod code_seal;
pub mod config;
pub mod error;
pub mod identity;
pub mod keys;
pub mod permission;
pub mod refresh;
pub mod session;
pub mod settings;
pub mod stored_login;
pub mod token;

#[cfg(feature = "python")]
mod py;
#[cfg(feature = "python")]
mod py_settings;

pub use client::{DescopeClient, IssuedSession};
pub use config::Config;
pub use error::{Error, ErrorKind, Result};
pub use identity::{Identity, TenantAccess};
pub use permission::Permission;
pub use refresh::{RefreshCoordinator, SharedStore};
pub use session::{ClientSession, Source};
pub use stored_login::StoredLogin;
