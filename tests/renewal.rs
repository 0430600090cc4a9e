//! Refresh, access-key exchange and `ClientSession` through the public API, against a fake Descope
//! on loopback (real HTTP, Descope's wire format).

mod common;

use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::fake::*;
use common::*;
use mlflow_descope_auth::{ClientSession, Config, DescopeClient, ErrorKind, Source};
use serde_json::json;

const REFRESH: &str = "/v1/auth/refresh";
const EXCHANGE: &str = "/v1/auth/accesskey/exchange";
const ACCESS_KEY: &str = "K2rust-access-key-0001";

fn client(fake: &FakeDescope) -> DescopeClient {
    client_at(&fake.url)
}

fn client_at(url: &str) -> DescopeClient {
    let mut cfg = Config::new(PROJECT).unwrap();
    cfg.base_url = url.to_string();
    cfg.http_timeout = Duration::from_secs(2);
    DescopeClient::new(cfg)
}

/// A port nobody listens on.
fn closed_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

// -- refresh -----------------------------------------------------------------------------------------

#[test]
fn refresh_without_rotation_keeps_the_refresh_token_that_was_sent() {
    let fake = FakeDescope::start(|_| (200, jwt_response(&session_token("U2ref"), None)));
    let refresh = refresh_token("U2ref");
    let issued = client(&fake).refresh(&refresh).unwrap();
    assert_eq!(issued.identity.user_id, "U2ref");
    assert_eq!(issued.refresh_jwt.as_deref(), Some(refresh.as_str()));
    assert_eq!(issued.cookie_max_age, Some(86_400));
    let calls = fake.calls(REFRESH);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].method, "POST");
    assert_eq!(calls[0].bearer_secret(), Some(refresh.as_str()), "Authorization: Bearer <project>:<refresh>");
    assert_eq!(calls[0].body, json!({}));
}

#[test]
fn refresh_with_rotation_hands_back_the_new_refresh_token() {
    let rotated = refresh_token("U2rot");
    let answer = rotated.clone();
    let fake = FakeDescope::start(move |_| (200, jwt_response(&session_token("U2rot"), Some(&answer))));
    let issued = client(&fake).refresh(&refresh_token("U2rot")).unwrap();
    assert_eq!(issued.refresh_jwt.as_deref(), Some(rotated.as_str()));
    assert_eq!(issued.identity.user_id, "U2rot");
}

#[test]
fn a_descope_refusal_is_a_refresh_failure_quoting_descope_but_not_the_token() {
    let fake = FakeDescope::start(|_| (401, descope_error("E061301", "Refresh token is invalid")));
    let refresh = refresh_token("U2no");
    let err = client(&fake).refresh(&refresh).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RefreshFailed);
    let message = err.to_string();
    assert!(message.contains("HTTP 401 (E061301: Refresh token is invalid)"), "{message}");
    assert!(!message.contains(&refresh), "{message}");
}

#[test]
fn descope_overloaded_or_failing_is_unreachable_not_a_refusal() {
    for status in [429u16, 500, 503] {
        let fake = FakeDescope::start(move |_| (status, descope_error("E000000", "try later")));
        let err = client(&fake).refresh(&refresh_token("U2busy")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unreachable, "HTTP {status}: {err}");
        assert!(err.to_string().contains(&format!("HTTP {status}")), "{err}");
    }
}

#[test]
fn refresh_against_a_closed_port_is_unreachable() {
    let err = client_at(&closed_url()).refresh(&refresh_token("U2down")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err}");
    assert!(err.to_string().contains(REFRESH), "{err}");
}

#[test]
fn a_refreshed_session_the_client_cannot_verify_is_refused() {
    // Signed with a key the project does not publish: a compromised or misconfigured base URL must
    // not be able to mint identities.
    let fake = FakeDescope::start(|_| {
        let t = now();
        (200, jwt_response(&session_token_with("rsa_foreign", "U2mint", t, t + 600), None))
    });
    let err = client(&fake).refresh(&refresh_token("U2mint")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RefreshFailed);
    assert!(err.to_string().contains("cannot verify"), "{err}");
}

#[test]
fn a_refresh_answer_without_a_session_is_a_failure() {
    let fake = FakeDescope::start(|_| (200, json!({ "refreshJwt": "x" })));
    let err = client(&fake).refresh(&refresh_token("U2empty")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RefreshFailed);
    assert!(err.to_string().contains("no sessionJwt"), "{err}");
}

#[test]
fn a_malformed_refresh_token_is_refused_without_asking_descope() {
    let fake = FakeDescope::start(|_| (200, jwt_response(&session_token("U2x"), None)));
    let err = client(&fake).refresh("not-a-jwt").unwrap_err();
    assert_eq!(err.kind(), ErrorKind::RefreshFailed);
    assert!(err.to_string().contains("invalid refresh token"), "{err}");
    assert!(fake.calls(REFRESH).is_empty());
}

// -- access-key exchange -----------------------------------------------------------------------------

#[test]
fn an_access_key_is_exchanged_for_a_verified_session() {
    let fake = FakeDescope::start(|_| (200, json!({ "sessionJwt": session_token("U2key"), "keyId": "K2x" })));
    let issued = client(&fake).exchange_access_key(ACCESS_KEY).unwrap();
    assert_eq!(issued.identity.user_id, "U2key");
    assert_eq!(issued.refresh_jwt, None);
    let calls = fake.calls(EXCHANGE);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].bearer_secret(), Some(ACCESS_KEY));
    assert_eq!(calls[0].body, json!({ "loginOptions": {} }));
}

#[test]
fn a_refused_access_key_is_reported_without_the_key() {
    let fake = FakeDescope::start(|_| (401, descope_error("E062108", "Access key is invalid")));
    let err = client(&fake).exchange_access_key(ACCESS_KEY).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AccessKeyRejected);
    assert!(err.to_string().contains("HTTP 401 (E062108: Access key is invalid)"), "{err}");
    assert!(!err.to_string().contains(ACCESS_KEY), "{err}");
}

#[test]
fn a_malformed_access_key_is_refused_without_asking_descope() {
    let fake = FakeDescope::start(|_| (200, json!({ "sessionJwt": session_token("U2x") })));
    for key in ["", "   ", "K2 with spaces", &"K".repeat(5000)] {
        let err = client(&fake).exchange_access_key(key).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AccessKeyRejected, "{key:?}");
    }
    assert!(fake.calls(EXCHANGE).is_empty());
}

#[test]
fn an_exchanged_session_the_client_cannot_verify_is_refused() {
    let fake = FakeDescope::start(|_| {
        let t = now();
        (200, json!({ "sessionJwt": session_token_with("rsa_foreign", "U2mint", t, t + 600) }))
    });
    let err = client(&fake).exchange_access_key(ACCESS_KEY).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AccessKeyRejected);
    assert!(err.to_string().contains("cannot verify"), "{err}");
}

#[test]
fn exchange_against_a_closed_port_is_unreachable() {
    let err = client_at(&closed_url()).exchange_access_key(ACCESS_KEY).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err}");
}

// -- ClientSession -----------------------------------------------------------------------------------

/// A fake whose exchange issues sessions of `lifetime` seconds, `age` seconds old when issued.
fn exchanging(lifetime: i64, age: i64, pause: Duration) -> FakeDescope {
    FakeDescope::start(move |_| {
        // A Descope that takes a moment, so concurrent callers really overlap.
        std::thread::sleep(pause);
        let issued = now() - age;
        (200, json!({ "sessionJwt": session_token_with("rsa", "U2cs", issued, issued + lifetime) }))
    })
}

fn access_key_session(fake: &FakeDescope, margin: i64) -> ClientSession {
    ClientSession::new(Arc::new(client(fake)), Source::AccessKey(ACCESS_KEY.into()), margin).unwrap()
}

#[test]
fn a_fresh_session_is_reused_without_asking_descope_again() {
    let fake = exchanging(600, 0, Duration::ZERO);
    let session = access_key_session(&fake, 60);
    let (first, identity) = session.token().unwrap();
    assert_eq!(identity.user_id, "U2cs");
    for _ in 0..5 {
        assert_eq!(session.token().unwrap().0, first);
    }
    assert_eq!(fake.calls(EXCHANGE).len(), 1);
}

#[test]
fn a_session_within_the_margin_of_its_expiry_is_renewed_before_it_expires() {
    // Sessions of 1200 s issued 1000 s ago: still valid for 200 s, inside the 300 s margin. Every
    // token() renews first, and hands out the new session (which is again inside the margin).
    let fake = exchanging(1200, 1000, Duration::ZERO);
    let session = access_key_session(&fake, 300);
    let first = session.token().unwrap().0;
    let second = session.token().unwrap().0;
    assert_ne!(first, second);
    assert_eq!(fake.calls(EXCHANGE).len(), 2);
}

#[test]
fn the_margin_is_capped_at_a_quarter_of_the_lifetime() {
    // 1200 s sessions issued 800 s ago have 400 s left: inside a 600 s margin, but the margin is
    // capped at 1200 / 4 = 300 s, so the session is kept.
    let fake = exchanging(1200, 800, Duration::ZERO);
    let session = access_key_session(&fake, 600);
    let first = session.token().unwrap().0;
    assert_eq!(session.token().unwrap().0, first);
    assert_eq!(fake.calls(EXCHANGE).len(), 1);
}

#[test]
fn threads_needing_a_renewal_at_once_share_one() {
    let fake = exchanging(600, 0, Duration::from_millis(200));
    let session = Arc::new(access_key_session(&fake, 60));
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (session, barrier) = (session.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                session.token().unwrap().0
            })
        })
        .collect();
    let tokens: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(tokens.iter().all(|t| *t == tokens[0]));
    assert_eq!(fake.calls(EXCHANGE).len(), 1);
}

#[test]
fn renew_after_rejection_renews_once_however_many_threads_saw_the_rejection() {
    let fake = exchanging(600, 0, Duration::from_millis(200));
    let session = Arc::new(access_key_session(&fake, 60));
    let rejected = session.token().unwrap().0;
    let barrier = Arc::new(Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (session, barrier, rejected) = (session.clone(), barrier.clone(), rejected.clone());
            std::thread::spawn(move || {
                barrier.wait();
                session.renew_after_rejection(&rejected).unwrap().0
            })
        })
        .collect();
    let renewed: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(renewed.iter().all(|t| *t == renewed[0] && *t != rejected));
    assert_eq!(fake.calls(EXCHANGE).len(), 2, "the first session and one renewal");
    // A late report of the same rejection is answered with the session that replaced it.
    assert_eq!(session.renew_after_rejection(&rejected).unwrap().0, renewed[0]);
    assert_eq!(session.token().unwrap().0, renewed[0]);
    assert_eq!(fake.calls(EXCHANGE).len(), 2);
}

#[test]
fn a_session_renewed_with_a_rotating_refresh_token_uses_the_newest_one_next_time() {
    let fake = FakeDescope::start(|_| (200, jwt_response(&session_token("U2rt"), Some(&refresh_token("U2rt")))));
    let first_refresh = refresh_token("U2rt");
    let source = Source::Tokens { session: None, refresh: Some(first_refresh.clone()) };
    let session = ClientSession::new(Arc::new(client(&fake)), source, 60).unwrap();
    let first = session.token().unwrap().0;
    let second = session.renew_after_rejection(&first).unwrap().0;
    assert_ne!(first, second);
    let calls = fake.calls(REFRESH);
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].bearer_secret(), Some(first_refresh.as_str()));
    let next = calls[1].bearer_secret().expect("a refresh token");
    assert_ne!(next, first_refresh, "the rotated refresh token is used, not the spent one");
}

#[test]
fn an_expired_session_without_a_way_to_renew_is_refused_at_the_start() {
    let fake = FakeDescope::start(|_| (500, json!({})));
    let t = now();
    let expired = session_token_with("rsa", "U2old", t - 1200, t - 600);
    let source = Source::Tokens { session: Some(expired), refresh: None };
    let err = ClientSession::new(Arc::new(client(&fake)), source, 60).err().expect("must be refused");
    assert_eq!(err.kind(), ErrorKind::ExpiredToken, "{err}");
    let none = ClientSession::new(Arc::new(client(&fake)), Source::Tokens { session: None, refresh: None }, 60);
    assert_eq!(none.err().expect("no credential").kind(), ErrorKind::Config);
}
