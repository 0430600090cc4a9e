//! Shared test helpers: the fixture keys, token signing, and a real HTTP key endpoint on loopback.

#![allow(dead_code)]

pub mod fake;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use mlflow_descope_auth::{Config, DescopeClient};
use serde_json::{json, Value};

pub const PROJECT: &str = "P2rustTests";

pub fn fixtures() -> Value {
    serde_json::from_str(include_str!("../fixtures/keys.json")).unwrap()
}

pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

pub fn encoding_key(name: &str) -> (EncodingKey, Algorithm, String) {
    let f = &fixtures()[name];
    let kid = f["jwk"]["kid"].as_str().unwrap().to_string();
    match name {
        "rsa" | "rsa_foreign" => {
            let der = STANDARD.decode(f["private_pkcs1_der_b64"].as_str().unwrap()).unwrap();
            (EncodingKey::from_rsa_der(&der), Algorithm::RS256, kid)
        }
        "ec256" | "ec384" => {
            let der = STANDARD.decode(f["private_pkcs8_der_b64"].as_str().unwrap()).unwrap();
            let alg = if name == "ec256" { Algorithm::ES256 } else { Algorithm::ES384 };
            (EncodingKey::from_ec_der(&der), alg, kid)
        }
        other => panic!("no fixture key {other}"),
    }
}

/// Claims shaped like a Descope session token.
pub fn session_claims(sub: &str, roles: &[&str]) -> Value {
    let t = now();
    json!({
        "sub": sub, "iss": format!("https://api.descope.com/{PROJECT}"), "iat": t, "exp": t + 600,
        "drn": "DS", "roles": roles, "permissions": ["read:models"], "amr": ["pwd"],
        "tenants": {"T2x": {"roles": ["tenant-viewer"], "permissions": []}}, "email": format!("{sub}@example.com"),
    })
}

pub fn sign(key: &str, claims: &Value) -> String {
    let (k, alg, kid) = encoding_key(key);
    let mut header = Header::new(alg);
    header.kid = Some(kid);
    encode(&header, claims, &k).unwrap()
}

/// A loopback HTTP server answering `GET /v2/keys/{PROJECT}` with `keys`; counts requests.
pub struct KeyServer {
    pub url: String,
    pub hits: Arc<AtomicUsize>,
    pub keys: Arc<Mutex<Value>>,
}

impl KeyServer {
    pub fn start(keys: Value) -> KeyServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(AtomicUsize::new(0));
        let keys = Arc::new(Mutex::new(keys));
        let (h, k) = (hits.clone(), keys.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut request_line = String::new();
                let _ = reader.read_line(&mut request_line);
                let mut content_length = 0usize;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        content_length = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; content_length];
                let _ = reader.read_exact(&mut body);
                let (status, body) = if request_line.starts_with(&format!("GET /v2/keys/{PROJECT} ")) {
                    h.fetch_add(1, Ordering::SeqCst);
                    ("200 OK", json!({ "keys": k.lock().unwrap().clone() }).to_string())
                } else {
                    ("404 Not Found", json!({"errorCode": "E000000", "errorDescription": "not here"}).to_string())
                };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        KeyServer { url, hits, keys }
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

pub fn all_public_keys() -> Value {
    let f = fixtures();
    json!([f["rsa"]["jwk"], f["ec256"]["jwk"], f["ec384"]["jwk"]])
}

pub fn client_for(server: &KeyServer, tweak: impl FnOnce(&mut Config)) -> DescopeClient {
    let mut cfg = Config::new(PROJECT).unwrap();
    cfg.base_url = server.url.clone();
    cfg.http_timeout = Duration::from_secs(2);
    tweak(&mut cfg);
    DescopeClient::new(cfg)
}
