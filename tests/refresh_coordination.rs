//! The core's refresh single flight and admissions against a loopback Descope that signs real
//! tokens, with a clock the tests move instead of sleeping.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::{all_public_keys, now, session_claims, sign, PROJECT};
use mlflow_descope_auth::clock::ManualClock;
use mlflow_descope_auth::refresh::{ProcessStore, RefreshCoordinator, SharedStore};
use mlflow_descope_auth::{Config, DescopeClient, Error};
use serde_json::{json, Value};

/// Refresh token number `n` (its `jti`), signed like Descope's.
fn dsr(n: u64) -> String {
    sign(
        "rsa",
        &json!({"sub": "U2rita", "drn": "DSR", "jti": n.to_string(), "iat": now(), "exp": now() + 86_400,
                        "iss": format!("https://api.descope.com/{PROJECT}")}),
    )
}

fn number(refresh_jwt: &str) -> u64 {
    use base64::Engine;
    let payload = refresh_jwt.split('.').nth(1).unwrap_or_default();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap_or_default();
    let claims: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    claims["jti"].as_str().and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// `/v2/keys/{PROJECT}` and `/v1/auth/refresh`: refresh token `n` answers with a fresh session and
/// token `n + 1` (rotation); `refused` makes it a 401, `down` a 503.
struct FakeDescope {
    url: String,
    refreshes: Arc<AtomicUsize>,
    refused: Arc<AtomicBool>,
    down: Arc<AtomicBool>,
}

impl FakeDescope {
    fn start(delay: Duration) -> FakeDescope {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let refreshes = Arc::new(AtomicUsize::new(0));
        let refused = Arc::new(AtomicBool::new(false));
        let down = Arc::new(AtomicBool::new(false));
        let (count, refuse, outage) = (refreshes.clone(), refused.clone(), down.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (count, refuse, outage) = (count.clone(), refuse.clone(), outage.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut request_line = String::new();
                    let _ = reader.read_line(&mut request_line);
                    let mut content_length = 0usize;
                    let mut bearer = String::new();
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                            break;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            content_length = v.trim().parse().unwrap_or(0);
                        }
                        if lower.starts_with("authorization:") {
                            bearer = line.trim().rsplit(':').next().unwrap_or_default().to_string();
                        }
                    }
                    let mut body = vec![0; content_length];
                    let _ = reader.read_exact(&mut body);
                    let (status, body) = if request_line.starts_with(&format!("GET /v2/keys/{PROJECT} ")) {
                        ("200 OK", json!({ "keys": all_public_keys() }))
                    } else if request_line.starts_with("POST /v1/auth/refresh ") {
                        count.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(delay); // a slow Descope, so concurrent callers overlap
                        if outage.load(Ordering::SeqCst) {
                            ("503 Service Unavailable", json!({"errorCode": "E000000", "errorDescription": "down"}))
                        } else if refuse.load(Ordering::SeqCst) {
                            ("401 Unauthorized", json!({"errorCode": "E061004", "errorDescription": "refused"}))
                        } else {
                            let session = sign("rsa", &session_claims("U2rita", &["viewer"]));
                            let body = json!({"sessionJwt": session, "refreshJwt": dsr(number(bearer.trim()) + 1),
                                              "cookieMaxAge": 2_592_000});
                            ("200 OK", body)
                        }
                    } else {
                        ("404 Not Found", json!({"errorCode": "E000000", "errorDescription": "not here"}))
                    };
                    let body = body.to_string();
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        FakeDescope { url, refreshes, refused, down }
    }

    fn refreshes(&self) -> usize {
        self.refreshes.load(Ordering::SeqCst)
    }
}

fn client(fake: &FakeDescope, clock: Arc<ManualClock>) -> Arc<DescopeClient> {
    let mut cfg = Config::new(PROJECT).unwrap();
    cfg.base_url = fake.url.clone();
    cfg.http_timeout = Duration::from_secs(5);
    Arc::new(DescopeClient::with_clock(cfg, clock))
}

const SECRET: &[u8] = b"the same server secret on every replica";

#[test]
fn a_burst_of_threads_costs_one_refresh_and_gets_one_result() {
    let fake = FakeDescope::start(Duration::from_millis(200));
    let clock = ManualClock::at(now());
    let coordinator =
        Arc::new(RefreshCoordinator::new(client(&fake, clock), Arc::new(ProcessStore::default()), SECRET).unwrap());
    let start = Arc::new(Barrier::new(16));
    let token = Arc::new(dsr(1));
    let results: Vec<_> = (0..16)
        .map(|_| {
            let (c, s, t) = (coordinator.clone(), start.clone(), token.clone());
            std::thread::spawn(move || {
                s.wait();
                c.refresh(&t).unwrap()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().unwrap())
        .collect();
    assert_eq!(fake.refreshes(), 1);
    assert!(results.iter().all(|r| r.refresh_jwt.as_deref().map(number) == Some(2)));
    assert!(results.iter().all(|r| r.session_jwt == results[0].session_jwt));
    assert_eq!(results[0].identity.user_id, "U2rita");
}

#[test]
fn processes_sharing_a_store_refresh_once_and_need_the_same_secret() {
    let fake = FakeDescope::start(Duration::ZERO);
    let clock = ManualClock::at(now());
    let store: Arc<dyn SharedStore> = Arc::new(ProcessStore::default());
    let first = RefreshCoordinator::new(client(&fake, clock.clone()), store.clone(), SECRET).unwrap();
    let second = RefreshCoordinator::new(client(&fake, clock.clone()), store.clone(), SECRET).unwrap();
    let token = dsr(1);
    let a = first.refresh(&token).unwrap();
    let b = second.refresh(&token).unwrap();
    assert_eq!(fake.refreshes(), 1);
    assert_eq!((a.session_jwt, a.refresh_jwt), (b.session_jwt, b.refresh_jwt));

    let stranger =
        RefreshCoordinator::new(client(&fake, clock), store, b"a different secret, another deployment").unwrap();
    let err = stranger.refresh(&token).unwrap_err();
    assert!(matches!(err, Error::Coordination(_)), "{err}");
    assert!(err.to_string().contains("MLFLOW_FLASK_SERVER_SECRET_KEY"), "{err}");
    assert_eq!(fake.refreshes(), 1, "an unreadable result is not a reason to spend the token again");
}

#[test]
fn results_are_remembered_for_the_grace_then_asked_again() {
    let fake = FakeDescope::start(Duration::ZERO);
    let clock = ManualClock::at(now());
    let coordinator =
        RefreshCoordinator::new(client(&fake, clock.clone()), Arc::new(ProcessStore::default()), SECRET).unwrap();
    let token = dsr(7);
    coordinator.refresh(&token).unwrap();
    clock.advance_millis(mlflow_descope_auth::refresh::GRACE_MILLIS - 1);
    coordinator.refresh(&token).unwrap();
    assert_eq!(fake.refreshes(), 1);
    clock.advance_millis(2);
    // The in-process memory has lapsed; the shared store keeps real time, so it still answers.
    coordinator.refresh(&token).unwrap();
    assert_eq!(fake.refreshes(), 1);
}

#[test]
fn a_refused_token_is_remembered_and_an_outage_only_briefly() {
    let fake = FakeDescope::start(Duration::ZERO);
    let clock = ManualClock::at(now());
    let coordinator =
        RefreshCoordinator::new(client(&fake, clock.clone()), Arc::new(ProcessStore::default()), SECRET).unwrap();
    fake.refused.store(true, Ordering::SeqCst);
    let (refused, stalled) = (dsr(3), dsr(4));
    assert!(matches!(coordinator.refresh(&refused), Err(Error::RefreshFailed(_))));
    assert!(matches!(coordinator.refresh(&refused), Err(Error::RefreshFailed(_))));
    assert_eq!(fake.refreshes(), 1, "a refused token does not send every request to Descope");

    fake.refused.store(false, Ordering::SeqCst);
    fake.down.store(true, Ordering::SeqCst);
    assert!(matches!(coordinator.refresh(&stalled), Err(Error::Unreachable { .. })));
    assert!(matches!(coordinator.refresh(&stalled), Err(Error::Unreachable { .. })));
    assert_eq!(fake.refreshes(), 2);
    fake.down.store(false, Ordering::SeqCst);
    clock.advance_millis(mlflow_descope_auth::refresh::UNREACHABLE_MILLIS + 1);
    let store_forgets =
        RefreshCoordinator::new(client(&fake, clock), Arc::new(ProcessStore::default()), SECRET).unwrap();
    assert!(store_forgets.refresh(&stalled).is_ok(), "Descope is back: the next request renews");
}

#[test]
fn a_revoked_token_and_its_successor_are_refused_before_descope() {
    let fake = FakeDescope::start(Duration::ZERO);
    let clock = ManualClock::at(now());
    let store: Arc<dyn SharedStore> = Arc::new(ProcessStore::default());
    let here = RefreshCoordinator::new(client(&fake, clock.clone()), store.clone(), SECRET).unwrap();
    let there = RefreshCoordinator::new(client(&fake, clock), store, SECRET).unwrap();

    let signed_out = dsr(10);
    here.revoke(&signed_out).unwrap();
    assert!(matches!(there.refresh(&signed_out), Err(Error::RefreshFailed(m)) if m.contains("signed out")));
    assert_eq!(fake.refreshes(), 0, "a signed-out token costs no call");

    // A result remembered before its successor was signed out is not handed out after.
    let token = dsr(20);
    let renewed = there.refresh(&token).unwrap();
    assert_eq!(renewed.refresh_jwt.as_deref().map(number), Some(21));
    here.revoke(renewed.refresh_jwt.as_deref().unwrap()).unwrap();
    assert!(matches!(there.refresh(&token), Err(Error::RefreshFailed(_))));
    assert_eq!(fake.refreshes(), 1);
}

#[test]
fn admitted_sessions_outlive_their_expiry_by_the_grace_only() {
    let fake = FakeDescope::start(Duration::ZERO);
    let clock = ManualClock::at(now());
    let client = client(&fake, clock.clone());
    let mut claims: Value = session_claims("U2rita", &[]);
    claims["exp"] = json!(now() + 60);
    let near = sign("rsa", &claims);
    claims["exp"] = json!(now() + 3600);
    let far = sign("rsa", &claims);
    client.validate(&near).unwrap();
    client.validate(&far).unwrap();
    assert_eq!(client.admitted_count(), 1, "only the session close to its expiry");

    clock.advance(70); // past exp and the 5 s leeway
    assert!(matches!(client.validate(&near), Err(Error::ExpiredToken { .. })));
    assert_eq!(client.validate_admitted(&near).unwrap().user_id, "U2rita");
    clock.advance(mlflow_descope_auth::admissions::GRACE_SECONDS);
    assert!(matches!(client.validate_admitted(&near), Err(Error::ExpiredToken { .. })));

    clock.advance(3600);
    assert!(matches!(client.validate_admitted(&far), Err(Error::ExpiredToken { .. })), "never admitted");
}
