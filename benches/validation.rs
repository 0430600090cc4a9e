//! The core's full validation of a token against the raw signature check it is built on.
//!
//! For each algorithm, on the same Descope-shaped tokens, interleaved in every round:
//! - raw aws-lc verify with a key parsed once (the floor: the crypto alone, signature already decoded);
//! - raw aws-lc verify parsing the key on every call (what jsonwebtoken's aws-lc backend does);
//! - `jsonwebtoken::decode` with a `DecodingKey` built once (the core's previous path);
//! - the core's `DescopeClient::validate`, first sight (token cache off: precheck, key lookup,
//!   signature, claims, identity) and repeated token (cache on).
//!
//! Each round times a short batch per contender, on the thread's CPU clock (time spent descheduled
//! on a shared machine does not count); tokens cycle through a pool across rounds. Prints one
//! JSON object (medians over rounds, ns per token) on stdout.
//!
//!     cargo bench --bench validation -- [--rounds 150] [--batch 20] [--tokens 200]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_lc_rs::signature::{self as sig, ParsedPublicKey, RsaPublicKeyComponents, UnparsedPublicKey};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};

type Contender<'a> = (&'static str, Box<dyn Fn(usize) + 'a>);
/// A verification that parses the key from its bytes on each call.
type VerifyParsingKey = Box<dyn Fn(&[u8], &[u8])>;

fn b64(s: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(s).unwrap()
}

/// (message, signature bytes) of a token: the exact input a signature check sees.
fn signing_input(token: &str) -> (Vec<u8>, Vec<u8>) {
    let (message, signature) = token.rsplit_once('.').unwrap();
    (message.as_bytes().to_vec(), b64(signature))
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// This thread's CPU time in ns (CLOCK_THREAD_CPUTIME_ID).
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec through a valid pointer.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn bench_key(name: &str, rounds: usize, batch: usize, n_tokens: usize) -> Value {
    let fixture = &fixtures()[name];
    let jwk_json = &fixture["jwk"];
    let server = KeyServer::start(json!([jwk_json]));
    let cold = client_for(&server, |c| c.token_cache_size = 0);
    let warm = client_for(&server, |_| {});
    let (_, alg, _) = encoding_key(name);

    // Distinct tokens (distinct `exp`), so nothing downstream can short-cut a repeat.
    let tokens: Vec<String> = (0..n_tokens)
        .map(|i| {
            let mut claims = session_claims(&format!("U2user{i}"), &["editor"]);
            claims["exp"] = json!(now() + 3600 + i as i64);
            sign(name, &claims)
        })
        .collect();
    let inputs: Vec<(Vec<u8>, Vec<u8>)> = tokens.iter().map(|t| signing_input(t)).collect();

    let jwk: Jwk = serde_json::from_value(jwk_json.clone()).unwrap();
    let decoding_key = DecodingKey::from_jwk(&jwk).unwrap();
    let mut validation = Validation::new(alg);
    validation.validate_aud = false;
    let (raw_parsed, raw_unparsed): (ParsedPublicKey, VerifyParsingKey) = match alg {
        Algorithm::RS256 => {
            let (n, e) = (b64(jwk_json["n"].as_str().unwrap()), b64(jwk_json["e"].as_str().unwrap()));
            let parsed = RsaPublicKeyComponents { n: n.as_slice(), e: e.as_slice() }
                .to_parsed_public_key(&sig::RSA_PKCS1_2048_8192_SHA256)
                .unwrap();
            let unparsed = move |m: &[u8], s: &[u8]| {
                RsaPublicKeyComponents { n: n.as_slice(), e: e.as_slice() }
                    .verify(&sig::RSA_PKCS1_2048_8192_SHA256, m, s)
                    .unwrap()
            };
            (parsed, Box::new(unparsed))
        }
        Algorithm::ES256 | Algorithm::ES384 => {
            let point =
                [vec![4u8], b64(jwk_json["x"].as_str().unwrap()), b64(jwk_json["y"].as_str().unwrap())].concat();
            let verification =
                if alg == Algorithm::ES256 { &sig::ECDSA_P256_SHA256_FIXED } else { &sig::ECDSA_P384_SHA384_FIXED };
            let parsed = ParsedPublicKey::new(verification, &point).unwrap();
            let unparsed = move |m: &[u8], s: &[u8]| UnparsedPublicKey::new(verification, &point).verify(m, s).unwrap();
            (parsed, Box::new(unparsed))
        }
        other => panic!("no bench for {other:?}"),
    };

    let contenders: Vec<Contender> = vec![
        (
            "raw aws-lc verify, key parsed once",
            Box::new(|i| raw_parsed.verify_sig(&inputs[i].0, &inputs[i].1).unwrap()),
        ),
        ("raw aws-lc verify, key parsed per call", Box::new(|i| raw_unparsed(&inputs[i].0, &inputs[i].1))),
        (
            "jsonwebtoken::decode, DecodingKey built once",
            Box::new(|i| {
                jsonwebtoken::decode::<Value>(&tokens[i], &decoding_key, &validation).unwrap();
            }),
        ),
        (
            "core validate, first sight",
            Box::new(|i| {
                cold.validate(&tokens[i]).unwrap();
            }),
        ),
        (
            "core validate, repeated token",
            Box::new(|_| {
                warm.validate(&tokens[0]).unwrap();
            }),
        ),
    ];
    for (_, f) in &contenders {
        f(0); // warm-up: the key fetch happens here
    }
    let mut samples: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for round in 0..rounds {
        let first = round * batch;
        for (label, f) in &contenders {
            let start = thread_cpu_ns();
            for i in first..first + batch {
                f(i % n_tokens);
            }
            let ns = (thread_cpu_ns() - start) as f64 / batch as f64;
            samples.entry(label).or_default().push(ns);
        }
    }
    let medians: BTreeMap<&str, f64> = samples.into_iter().map(|(k, v)| (k, median(v))).collect();
    let floor = medians["raw aws-lc verify, key parsed once"];
    let ratios: BTreeMap<&str, f64> = medians.iter().map(|(k, v)| (*k, v / floor)).collect();
    json!({
        "algorithm": format!("{alg:?}"),
        "median_ns": medians,
        "ratio_vs_raw_verify": ratios,
        "order": contenders.iter().map(|(l, _)| *l).collect::<Vec<_>>(),
    })
}

fn main() {
    let rounds = arg("--rounds", 150);
    let batch = arg("--batch", 20).max(1);
    let n_tokens = arg("--tokens", 200).max(1);
    let started = Instant::now();
    let results: Vec<Value> = ["rsa", "ec256", "ec384"].iter().map(|k| bench_key(k, rounds, batch, n_tokens)).collect();
    let out = json!({
        "rounds": rounds,
        "batch": batch,
        "token_pool": n_tokens,
        "seconds": Duration::as_secs_f64(&started.elapsed()),
        "results": results,
    });
    println!("{}", serde_json::to_string_pretty(&out).unwrap());
}
