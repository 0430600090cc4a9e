//! `ClientSession` over the login file `mlflow-descope-auth login` stores: renewed under the file's
//! lock by one of the sessions (processes) sharing it, the rotated tokens written back, and the
//! errors that tell a person to sign in again. Against a fake Descope on loopback (real HTTP).

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use common::fake::*;
use common::*;
use mlflow_descope_auth::{stored_login, ClientSession, Config, DescopeClient, ErrorKind, Source, StoredLogin};
use serde_json::json;

const REFRESH: &str = "/v1/auth/refresh";
const URI: &str = "https://mlflow.example.com";

fn client(fake: &FakeDescope) -> Arc<DescopeClient> {
    let mut cfg = Config::new(PROJECT).unwrap();
    cfg.base_url = fake.url.clone();
    cfg.http_timeout = Duration::from_secs(5);
    Arc::new(DescopeClient::new(cfg))
}

/// A private scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let mut n = [0u8; 8];
        aws_lc_rs::rand::fill(&mut n).unwrap();
        let name: String = n.iter().map(|b| format!("{b:02x}")).collect();
        Scratch(std::env::temp_dir().join(format!("mda-login-{name}")))
    }
    fn file(&self) -> PathBuf {
        self.0.join("sessions").join("0123abcd.json")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn expired_session(sub: &str) -> String {
    let t = now();
    session_token_with("rsa", sub, t - 1200, t - 600)
}

fn store(path: &Path, session: String, refresh: Option<String>) {
    let login = StoredLogin {
        tracking_uri: URI.into(),
        project_id: PROJECT.into(),
        base_url: "https://api.descope.com".into(),
        session_token: session,
        refresh_token: refresh,
        user: "ada".into(),
    };
    stored_login::save(path, &login).unwrap();
}

fn from_file(client: Arc<DescopeClient>, path: &Path) -> mlflow_descope_auth::Result<ClientSession> {
    ClientSession::new(client, Source::LoginFile { path: path.to_path_buf(), tracking_uri: URI.into() }, 60)
}

/// A Descope that rotates refresh tokens and refuses a spent one, as Descope does with rotation on:
/// two processes that both refreshed would sign one of them out. It takes a moment, so that
/// concurrent callers really overlap.
fn rotating_descope() -> FakeDescope {
    let spent = Mutex::new(HashSet::new());
    FakeDescope::start(move |req| {
        std::thread::sleep(Duration::from_millis(200));
        let token = req.bearer_secret().unwrap_or_default().to_string();
        if !spent.lock().unwrap().insert(token) {
            return (401, descope_error("E061102", "refresh token already used"));
        }
        (200, jwt_response(&session_token("U2file"), Some(&refresh_token("U2file"))))
    })
}

#[test]
fn two_processes_renewing_one_stored_login_cause_one_refresh_and_share_its_result() {
    let fake = rotating_descope();
    let dir = Scratch::new();
    let path = dir.file();
    let first_refresh = refresh_token("U2file");
    store(&path, expired_session("U2file"), Some(first_refresh.clone()));

    // Two sessions with their own clients: they share nothing but the file, like two notebooks.
    let barrier = Arc::new(Barrier::new(2));
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (session, barrier) = (from_file(client(&fake), &path).unwrap(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                session.token().map(|(t, _)| t.to_string())
            })
        })
        .collect();
    let tokens: Vec<String> = threads.into_iter().map(|t| t.join().unwrap().unwrap()).collect();
    assert_eq!(tokens[0], tokens[1], "the second process used the session the first wrote");
    let calls = fake.calls(REFRESH);
    assert_eq!(calls.len(), 1, "one refresh at Descope");
    assert_eq!(calls[0].bearer_secret(), Some(first_refresh.as_str()));

    let written = stored_login::load(&path).unwrap().unwrap();
    assert_eq!(written.session_token, tokens[0]);
    let rotated = written.refresh_token.expect("the rotated refresh token");
    assert_ne!(rotated, first_refresh);
    assert_eq!((written.tracking_uri.as_str(), written.user.as_str()), (URI, "ada"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    // The server refused that session: the next renewal spends the rotated token, not the old one.
    let session = from_file(client(&fake), &path).unwrap();
    let next = session.renew_after_rejection(&tokens[0]).unwrap().0;
    assert_ne!(*next, *tokens[0]);
    let calls = fake.calls(REFRESH);
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[1].bearer_secret(), Some(rotated.as_str()));
    assert_eq!(stored_login::load(&path).unwrap().unwrap().session_token, *next);
}

#[test]
fn a_good_stored_session_is_used_without_asking_descope() {
    let fake = rotating_descope();
    let dir = Scratch::new();
    let path = dir.file();
    let session_jwt = session_token("U2file");
    store(&path, session_jwt.clone(), Some(refresh_token("U2file")));
    let session = from_file(client(&fake), &path).unwrap();
    let (token, identity) = session.token().unwrap();
    assert_eq!((&*token, identity.user_id.as_str()), (session_jwt.as_str(), "U2file"));
    assert!(fake.calls(REFRESH).is_empty());
}

fn assert_sign_in_again(err: &mlflow_descope_auth::Error, why: &str) {
    assert_eq!((err.kind(), err.code()), (ErrorKind::RefreshFailed, "refresh_failed"), "{err}");
    let message = err.to_string();
    assert!(message.contains(why), "{message}");
    assert!(message.ends_with(&format!("run `mlflow-descope-auth login --tracking-uri {URI}` again")), "{message}");
}

#[test]
fn a_missing_login_file_says_to_sign_in_again() {
    let fake = rotating_descope();
    let dir = Scratch::new();
    let err = from_file(client(&fake), &dir.file()).err().expect("no file, no session");
    assert_sign_in_again(&err, &format!("stored for {URI} cannot be read"));
}

#[test]
fn a_login_file_deleted_by_logout_says_to_sign_in_again() {
    let fake = rotating_descope();
    let dir = Scratch::new();
    let path = dir.file();
    store(&path, expired_session("U2file"), Some(refresh_token("U2file")));
    let session = from_file(client(&fake), &path).unwrap();
    assert!(stored_login::delete(&path).unwrap());
    assert_sign_in_again(&session.token().unwrap_err(), "is gone (signed out)");
    assert!(fake.calls(REFRESH).is_empty());
}

#[test]
fn a_login_file_for_another_server_is_not_used() {
    let fake = rotating_descope();
    let dir = Scratch::new();
    let path = dir.file();
    store(&path, session_token("U2file"), None);
    let other = ClientSession::new(
        client(&fake),
        Source::LoginFile { path: path.clone(), tracking_uri: "https://other.example.com".into() },
        60,
    );
    let err = other.err().expect("another server's login");
    assert!(err.to_string().contains("stored for https://other.example.com cannot be read"), "{err}");
}

#[test]
fn a_stored_session_descope_will_not_renew_says_to_sign_in_again_and_keeps_the_file() {
    let fake = FakeDescope::start(|_| (401, descope_error("E061102", "refresh token expired")));
    let dir = Scratch::new();
    let path = dir.file();
    let refresh = refresh_token("U2file");
    store(&path, expired_session("U2file"), Some(refresh.clone()));
    let err = from_file(client(&fake), &path).unwrap().token().unwrap_err();
    assert_sign_in_again(&err, "cannot be renewed (");
    assert!(!err.to_string().contains(&refresh), "no token in the message");
    assert!(stored_login::load(&path).unwrap().is_some());
}

#[test]
fn an_expired_stored_session_without_a_refresh_token_says_to_sign_in_again() {
    let fake = FakeDescope::start(|_| (500, json!({})));
    let dir = Scratch::new();
    let path = dir.file();
    store(&path, expired_session("U2file"), None);
    let err = from_file(client(&fake), &path).unwrap().token().unwrap_err();
    assert_sign_in_again(&err, "expired and has no refresh token");
    assert!(fake.calls(REFRESH).is_empty());
}
