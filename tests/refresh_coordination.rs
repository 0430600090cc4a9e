//! The core's refresh single flight and admissions against a loopback Descope that signs real
//! tokens, with a clock the tests move instead of sleeping.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::Duration;

use common::fake::{descope_error, jwt_response, refresh_token, session_token, FakeDescope};
use common::{now, sign, PROJECT};
use mlflow_descope_auth::clock::ManualClock;
use mlflow_descope_auth::refresh::{ProcessStore, RefreshCoordinator, SharedStore};
use mlflow_descope_auth::{Config, DescopeClient, Error};
use serde_json::json;

/// A Descope whose refresh answers after `delay` with a new session and a rotated refresh token;
/// `refused` makes it a 401, `down` a 503.
struct Descope {
    fake: FakeDescope,
    refused: Arc<AtomicBool>,
    down: Arc<AtomicBool>,
}

impl Descope {
    fn start(delay: Duration) -> Descope {
        let refused = Arc::new(AtomicBool::new(false));
        let down = Arc::new(AtomicBool::new(false));
        let (refuse, outage) = (refused.clone(), down.clone());
        let fake = FakeDescope::start(move |_| {
            std::thread::sleep(delay); // a slow Descope, so concurrent callers overlap
            if outage.load(Ordering::SeqCst) {
                (503, descope_error("E000000", "down"))
            } else if refuse.load(Ordering::SeqCst) {
                (401, descope_error("E061004", "refused"))
            } else {
                (200, jwt_response(&session_token("U2rita"), Some(&refresh_token("U2rita"))))
            }
        });
        Descope { fake, refused, down }
    }

    fn refreshes(&self) -> usize {
        self.fake.calls("/v1/auth/refresh").len()
    }
}

fn client(descope: &Descope, clock: Arc<ManualClock>) -> Arc<DescopeClient> {
    let mut cfg = Config::new(PROJECT).unwrap();
    cfg.base_url = descope.fake.url.clone();
    cfg.http_timeout = Duration::from_secs(5);
    Arc::new(DescopeClient::with_clock(cfg, clock))
}

const SECRET: &[u8] = b"the same server secret on every replica";

#[test]
fn a_burst_of_threads_costs_one_refresh_and_gets_one_result() {
    let fake = Descope::start(Duration::from_millis(200));
    let clock = ManualClock::at(now());
    let coordinator =
        Arc::new(RefreshCoordinator::new(client(&fake, clock), Arc::new(ProcessStore::default()), SECRET).unwrap());
    let start = Arc::new(Barrier::new(16));
    let token = Arc::new(refresh_token("U2rita"));
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
    let next = results[0].refresh_jwt.clone();
    assert!(next.is_some() && next.as_deref() != Some(token.as_str()), "rotated");
    assert!(results.iter().all(|r| r.refresh_jwt == next));
    assert!(results.iter().all(|r| r.session_jwt == results[0].session_jwt));
    assert_eq!(results[0].identity.user_id, "U2rita");
}

#[test]
fn processes_sharing_a_store_refresh_once_and_need_the_same_secret() {
    let fake = Descope::start(Duration::ZERO);
    let clock = ManualClock::at(now());
    let store: Arc<dyn SharedStore> = Arc::new(ProcessStore::default());
    let first = RefreshCoordinator::new(client(&fake, clock.clone()), store.clone(), SECRET).unwrap();
    let second = RefreshCoordinator::new(client(&fake, clock.clone()), store.clone(), SECRET).unwrap();
    let token = refresh_token("U2rita");
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
    let fake = Descope::start(Duration::ZERO);
    let clock = ManualClock::at(now());
    let coordinator =
        RefreshCoordinator::new(client(&fake, clock.clone()), Arc::new(ProcessStore::default()), SECRET).unwrap();
    let token = refresh_token("U2rita");
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
    let fake = Descope::start(Duration::ZERO);
    let clock = ManualClock::at(now());
    let coordinator =
        RefreshCoordinator::new(client(&fake, clock.clone()), Arc::new(ProcessStore::default()), SECRET).unwrap();
    fake.refused.store(true, Ordering::SeqCst);
    let (refused, stalled) = (refresh_token("U2rita"), refresh_token("U2rita"));
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
    let fake = Descope::start(Duration::ZERO);
    let clock = ManualClock::at(now());
    let store: Arc<dyn SharedStore> = Arc::new(ProcessStore::default());
    let here = RefreshCoordinator::new(client(&fake, clock.clone()), store.clone(), SECRET).unwrap();
    let there = RefreshCoordinator::new(client(&fake, clock), store, SECRET).unwrap();

    let signed_out = refresh_token("U2rita");
    here.revoke(&signed_out).unwrap();
    assert!(matches!(there.refresh(&signed_out), Err(Error::RefreshFailed(m)) if m.contains("signed out")));
    assert_eq!(fake.refreshes(), 0, "a signed-out token costs no call");

    // A result remembered before its successor was signed out is not handed out after.
    let token = refresh_token("U2rita");
    let renewed = there.refresh(&token).unwrap();
    assert!(renewed.refresh_jwt.as_deref().is_some_and(|r| r != token), "rotated");
    here.revoke(renewed.refresh_jwt.as_deref().unwrap()).unwrap();
    assert!(matches!(there.refresh(&token), Err(Error::RefreshFailed(_))));
    assert_eq!(fake.refreshes(), 1);
}

#[test]
fn admitted_sessions_outlive_their_expiry_by_the_grace_only() {
    let fake = Descope::start(Duration::ZERO);
    let clock = ManualClock::at(now());
    let client = client(&fake, clock.clone());
    let mut claims = common::session_claims("U2rita", &[]);
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

/// A store that cannot answer (its database is down).
struct BrokenStore;

impl SharedStore for BrokenStore {
    fn once(&self, _: &str, _: mlflow_descope_auth::refresh::Produce) -> mlflow_descope_auth::Result<Option<Vec<u8>>> {
        Err(Error::Coordination("down".into()))
    }
    fn revoke(&self, _: &str, _: f64) -> mlflow_descope_auth::Result<()> {
        Err(Error::Coordination("down".into()))
    }
    fn is_revoked(&self, _: &str) -> mlflow_descope_auth::Result<bool> {
        Err(Error::Coordination("down".into()))
    }
}

#[test]
fn a_store_that_cannot_answer_renews_nothing_and_signs_nobody_out() {
    let descope = Descope::start(Duration::ZERO);
    let coordinator =
        RefreshCoordinator::new(client(&descope, ManualClock::at(now())), Arc::new(BrokenStore), SECRET).unwrap();
    let err = coordinator.refresh(&refresh_token("U2rita")).unwrap_err();
    // Not a refusal of the token (which would clear the browser's cookies): "not right now".
    assert!(matches!(err, Error::Coordination(_)), "{err}");
    assert_eq!(err.kind(), mlflow_descope_auth::ErrorKind::Unreachable);
    assert_eq!(descope.refreshes(), 0);
}

#[test]
fn signing_out_with_a_token_that_was_just_rotated_ends_its_successor_too() {
    let descope = Descope::start(Duration::ZERO);
    let clock = ManualClock::at(now());
    let store: Arc<dyn SharedStore> = Arc::new(ProcessStore::default());
    let renewing = RefreshCoordinator::new(client(&descope, clock.clone()), store.clone(), SECRET).unwrap();
    let signing_out = RefreshCoordinator::new(client(&descope, clock), store, SECRET).unwrap();
    let stale = refresh_token("U2rita");
    let successor = renewing.refresh(&stale).unwrap().refresh_jwt.unwrap();

    // The browser signs out with the DSR it held before a parallel request's renewal arrived.
    signing_out.sign_out(&stale).unwrap();
    assert!(matches!(renewing.refresh(&successor), Err(Error::RefreshFailed(m)) if m.contains("signed out")));
    assert!(matches!(signing_out.refresh(&stale), Err(Error::RefreshFailed(_))));
    let logouts = descope.fake.calls("/v1/auth/logout");
    assert_eq!(logouts.len(), 1);
    assert_eq!(logouts[0].bearer_secret(), Some(successor.as_str()), "Descope ends the live token");
}

/// A process store that holds `once` for one key until told to go on.
struct HoldingStore {
    inner: ProcessStore,
    held_key: String,
    entered: std::sync::mpsc::SyncSender<()>,
    go_on: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl SharedStore for HoldingStore {
    fn once(
        &self,
        key: &str,
        produce: mlflow_descope_auth::refresh::Produce,
    ) -> mlflow_descope_auth::Result<Option<Vec<u8>>> {
        if key == self.held_key {
            self.entered.send(()).unwrap();
            self.go_on.lock().unwrap().recv_timeout(Duration::from_secs(120)).unwrap();
        }
        self.inner.once(key, produce)
    }
    fn revoke(&self, key: &str, ttl: f64) -> mlflow_descope_auth::Result<()> {
        self.inner.revoke(key, ttl)
    }
    fn is_revoked(&self, key: &str) -> mlflow_descope_auth::Result<bool> {
        self.inner.is_revoked(key)
    }
}

#[test]
fn renewals_of_different_tokens_never_wait_for_each_other() {
    use mlflow_descope_auth::cache::token_digest;
    use mlflow_descope_auth::refresh::store_key;

    let descope = Descope::start(Duration::ZERO);
    // Two tokens whose digests share a first byte: lock striping by digest would make the second
    // wait for the first.
    let held = refresh_token("U2rita");
    let other = std::iter::repeat_with(|| refresh_token("U2rita"))
        .find(|t| token_digest(t)[0] == token_digest(&held)[0])
        .unwrap();
    let (entered_tx, entered) = std::sync::mpsc::sync_channel(1);
    let (go_on, go_on_rx) = std::sync::mpsc::channel();
    let store = HoldingStore {
        inner: ProcessStore::default(),
        held_key: store_key(&held),
        entered: entered_tx,
        go_on: Mutex::new(go_on_rx),
    };
    let coordinator =
        Arc::new(RefreshCoordinator::new(client(&descope, ManualClock::at(now())), Arc::new(store), SECRET).unwrap());

    let slow = {
        let (c, t) = (coordinator.clone(), held.clone());
        std::thread::spawn(move || c.refresh(&t).map(|_| ()))
    };
    entered.recv_timeout(Duration::from_secs(60)).unwrap();
    let (done_tx, done) = std::sync::mpsc::channel();
    let fast = {
        let c = coordinator.clone();
        std::thread::spawn(move || done_tx.send(c.refresh(&other).map(|_| ())).unwrap())
    };
    let finished = done.recv_timeout(Duration::from_secs(60));
    go_on.send(()).unwrap();
    slow.join().unwrap().unwrap();
    fast.join().unwrap();
    assert!(matches!(finished, Ok(Ok(()))), "the other user's renewal waited for this one: {finished:?}");
    assert_eq!(coordinator.flights_in_progress(), 0, "finished flights are forgotten");
}
