//! End-to-end validation through the public API, against a real key endpoint on loopback.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use mlflow_descope_auth::{Error, ErrorKind, Permission};
use serde_json::json;

#[test]
fn valid_tokens_of_every_supported_algorithm_map_to_an_identity() {
    let server = KeyServer::start(all_public_keys());
    let client = client_for(&server, |_| {});
    for key in ["rsa", "ec256", "ec384"] {
        let token = sign(key, &session_claims("U2ada", &["editor"]));
        let id = client.validate(&token).unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(id.user_id, "U2ada");
        assert_eq!(id.email.as_deref(), Some("U2ada@example.com"));
        assert_eq!(id.permission, Permission::Read);
        assert!(id.tenants.contains_key("T2x"));
    }
    assert_eq!(server.hits(), 1, "one key fetch serves all three keys");
}

#[test]
fn repeated_tokens_are_served_from_the_cache() {
    let server = KeyServer::start(all_public_keys());
    let client = client_for(&server, |_| {});
    let token = sign("rsa", &session_claims("U2c", &[]));
    let first = client.validate(&token).unwrap();
    let second = client.validate(&token).unwrap();
    assert!(std::sync::Arc::ptr_eq(&first, &second));
    assert_eq!(client.cache().len(), 1);
}

fn kind_of(client: &mlflow_descope_auth::DescopeClient, token: &str) -> (ErrorKind, String) {
    let err = client.validate(token).expect_err("must be rejected");
    let msg = err.to_string();
    assert!(!msg.contains(token), "the message must not contain the token");
    (err.kind(), msg)
}

#[test]
fn adversarial_tokens_are_rejected_with_the_right_error() {
    let server = KeyServer::start(all_public_keys());
    let client = client_for(&server, |c| c.key_refetch_interval = std::time::Duration::from_secs(60));
    let good = sign("rsa", &session_claims("U2a", &[]));
    let [h, p, s]: [&str; 3] = good.split('.').collect::<Vec<_>>().try_into().unwrap();
    let b64 = |v: serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let kid = fixtures()["rsa"]["jwk"]["kid"].as_str().unwrap().to_string();

    // HS256 signed with the RSA public key as the secret: the classic algorithm-confusion attack.
    let pem = fixtures()["rsa"]["public_pem"].as_str().unwrap().to_string();
    let mut hs = Header::new(Algorithm::HS256);
    hs.kid = Some(kid.clone());
    let hs_token = encode(&hs, &session_claims("U2a", &["admin"]), &EncodingKey::from_secret(pem.as_bytes())).unwrap();

    // A foreign key that reuses our kid.
    let (foreign, _, _) = encoding_key("rsa_foreign");
    let mut fh = Header::new(Algorithm::RS256);
    fh.kid = Some(kid.clone());
    let foreign_token = encode(&fh, &session_claims("U2a", &["admin"]), &foreign).unwrap();

    let mut expired = session_claims("U2a", &[]);
    expired["exp"] = json!(now() - 60);
    let mut future = session_claims("U2a", &[]);
    future["nbf"] = json!(now() + 600);
    let mut other_project = session_claims("U2a", &[]);
    other_project["iss"] = json!("https://api.descope.com/P2someoneElse");
    let mut refresh = session_claims("U2a", &[]);
    refresh["drn"] = json!("DSR");
    let mut admin = session_claims("U2a", &["admin"]);
    admin["exp"] = json!(now() + 600);

    let cases: Vec<(&str, String, ErrorKind, &str)> = vec![
        ("alg none", format!("{}.{p}.", b64(json!({"alg": "none", "kid": kid}))), ErrorKind::InvalidToken, "JWT"),
        (
            "alg none with sig",
            format!("{}.{p}.{s}", b64(json!({"alg": "none", "kid": kid}))),
            ErrorKind::InvalidToken,
            "only asymmetric",
        ),
        ("HS256 with public key", hs_token, ErrorKind::InvalidToken, "only asymmetric"),
        (
            "unknown kid",
            format!("{}.{p}.{s}", b64(json!({"alg": "RS256", "kid": "nope"}))),
            ErrorKind::InvalidToken,
            "does not publish",
        ),
        ("foreign key, known kid", foreign_token, ErrorKind::InvalidToken, "signature"),
        (
            "alg differs from key",
            format!("{}.{p}.{s}", b64(json!({"alg": "PS256", "kid": kid}))),
            ErrorKind::InvalidToken,
            "key",
        ),
        ("expired", sign("rsa", &expired), ErrorKind::ExpiredToken, "expired"),
        ("nbf in the future", sign("rsa", &future), ErrorKind::InvalidToken, "not valid yet"),
        ("other project", sign("rsa", &other_project), ErrorKind::InvalidToken, "another Descope project"),
        ("refresh token", sign("rsa", &refresh), ErrorKind::InvalidToken, "refresh token"),
        ("tampered payload", format!("{h}.{}.{s}", b64(admin.clone())), ErrorKind::InvalidToken, "signature"),
        (
            "tampered header",
            format!("{}.{p}.{s}", b64(json!({"alg": "RS256", "kid": kid, "typ": "X"}))),
            ErrorKind::InvalidToken,
            "signature",
        ),
        ("truncated", good[..good.len() - 10].to_string(), ErrorKind::InvalidToken, "signature"),
        ("no signature", format!("{h}.{p}"), ErrorKind::InvalidToken, "three dot-separated"),
        ("not base64", format!("{h}.{p}.***"), ErrorKind::InvalidToken, "base64url"),
        (
            "payload not JSON",
            format!("{h}.{}.{s}", URL_SAFE_NO_PAD.encode("not json")),
            ErrorKind::InvalidToken,
            "signature",
        ),
        ("1 MB", format!("{h}.{}.{s}", "A".repeat(1 << 20)), ErrorKind::InvalidToken, "byte limit"),
    ];
    for (name, token, kind, needle) in cases {
        let (got, msg) = kind_of(&client, &token);
        assert_eq!(got, kind, "{name}: {msg}");
        assert!(msg.contains(needle), "{name}: {msg}");
    }
}

#[test]
fn a_flood_of_random_kids_hits_the_key_endpoint_a_bounded_number_of_times() {
    let server = KeyServer::start(all_public_keys());
    let client =
        std::sync::Arc::new(client_for(&server, |c| c.key_refetch_interval = std::time::Duration::from_secs(60)));
    let good = sign("rsa", &session_claims("U2a", &[]));
    client.validate(&good).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let client = client.clone();
            std::thread::spawn(move || {
                for i in 0..250 {
                    let header =
                        URL_SAFE_NO_PAD.encode(json!({"alg": "RS256", "kid": format!("forged-{t}-{i}")}).to_string());
                    let token = format!("{header}.e30.c2ln");
                    assert!(matches!(client.validate(&token), Err(Error::InvalidToken(_))));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(server.hits(), 1, "1000 forged kids within the refetch interval cause no refetch");
    assert!(client.validate(&good).is_ok());
}

#[test]
fn a_rotated_key_is_picked_up_and_a_removed_key_stops_working() {
    let f = fixtures();
    let server = KeyServer::start(json!([f["rsa"]["jwk"]]));
    let client = client_for(&server, |c| {
        c.key_refetch_interval = std::time::Duration::ZERO;
        c.key_ttl = std::time::Duration::from_secs(1);
    });
    let rsa_token = sign("rsa", &session_claims("U2a", &[]));
    client.validate(&rsa_token).unwrap();
    // Descope publishes a new key and starts signing with it: one refetch finds it.
    *server.keys.lock().unwrap() = json!([f["rsa"]["jwk"], f["ec256"]["jwk"]]);
    client.validate(&sign("ec256", &session_claims("U2a", &[]))).unwrap();
    assert_eq!(server.hits(), 2);
    // The old key is withdrawn: after the TTL, even the cached validation stops counting.
    *server.keys.lock().unwrap() = json!([f["ec256"]["jwk"]]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (kind, msg) = kind_of(&client, &rsa_token);
    assert_eq!(kind, ErrorKind::InvalidToken, "{msg}");
    assert!(msg.contains("publish"), "{msg}");
}

#[test]
fn descope_down_at_start_is_reported_as_unreachable() {
    let mut cfg = mlflow_descope_auth::Config::new(PROJECT).unwrap();
    cfg.base_url = "http://127.0.0.1:9".into();
    cfg.http_timeout = std::time::Duration::from_millis(500);
    let client = mlflow_descope_auth::DescopeClient::new(cfg);
    let err = client.validate(&sign("rsa", &session_claims("U2a", &[]))).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err}");
    assert!(err.to_string().contains("DESCOPE_BASE_URI"), "{err}");
}

#[test]
fn validate_cached_answers_only_tokens_seen_before() {
    let server = KeyServer::start(all_public_keys());
    let client = client_for(&server, |_| {});
    let token = sign("ec256", &session_claims("U2c", &[]));
    assert!(client.validate_cached(&token).is_none());
    assert_eq!(server.hits(), 0, "a cache lookup never fetches keys");
    let identity = client.validate(&token).unwrap();
    assert!(std::sync::Arc::ptr_eq(&client.validate_cached(&token).unwrap(), &identity));
    assert!(client.validate_cached(&format!("{token}x")).is_none());
}
