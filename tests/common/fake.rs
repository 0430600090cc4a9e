//! A fake Descope on loopback: the project's keys, and refresh / access-key exchange answered by a
//! handler the test gives, over real HTTP. Every request is recorded.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::{all_public_keys, now, sign, PROJECT};

/// A request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub body: Value,
}

impl Recorded {
    /// The secret after `Bearer <project>:` (a refresh token or an access key).
    pub fn bearer_secret(&self) -> Option<&str> {
        self.authorization.as_deref()?.strip_prefix(&format!("Bearer {PROJECT}:"))
    }
}

pub type Handler = dyn Fn(&Recorded) -> (u16, Value) + Send + Sync;

pub struct FakeDescope {
    pub url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl FakeDescope {
    /// Serves `GET /v2/keys/{PROJECT}` itself; every other request goes to `handler`.
    pub fn start(handler: impl Fn(&Recorded) -> (u16, Value) + Send + Sync + 'static) -> FakeDescope {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let recorded = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (handler, recorded) = (handler.clone(), recorded.clone());
                // One thread per connection: concurrent clients are answered concurrently.
                std::thread::spawn(move || serve(stream, handler.as_ref(), &recorded));
            }
        });
        FakeDescope { url, requests }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// The requests to `path` (keys fetches excluded unless asked for).
    pub fn calls(&self, path: &str) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.path == path).collect()
    }
}

fn serve(mut stream: TcpStream, handler: &Handler, recorded: &Mutex<Vec<Recorded>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or("").to_string(), parts.next().unwrap_or("").to_string());
    let (mut content_length, mut authorization) = (0usize, None);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        let (name, value) = line.split_once(':').unwrap_or((&line, ""));
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => content_length = value.trim().parse().unwrap_or(0),
            "authorization" => authorization = Some(value.trim().to_string()),
            _ => {}
        }
    }
    let mut body = vec![0; content_length];
    let _ = reader.read_exact(&mut body);
    let request = Recorded { method, path, authorization, body: serde_json::from_slice(&body).unwrap_or(Value::Null) };
    recorded.lock().unwrap().push(request.clone());
    let (status, answer) = if request.method == "GET" && request.path == format!("/v2/keys/{PROJECT}") {
        (200, json!({ "keys": all_public_keys() }))
    } else {
        handler(&request)
    };
    let text = answer.to_string();
    let _ = write!(
        stream,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    );
}

static SERIAL: AtomicU64 = AtomicU64::new(0);

/// A session token of `sub` signed with the published RSA fixture key (or `key`), issued at `iat`,
/// expiring at `exp`; a `jti` makes every token unique.
pub fn session_token_with(key: &str, sub: &str, iat: i64, exp: i64) -> String {
    let jti = SERIAL.fetch_add(1, Ordering::SeqCst);
    sign(
        key,
        &json!({
            "sub": sub, "iss": format!("https://api.descope.com/{PROJECT}"), "iat": iat, "exp": exp,
            "drn": "DS", "roles": ["editor"], "amr": ["pwd"], "jti": format!("S{jti}"),
        }),
    )
}

/// A fresh ten-minute session of `sub`.
pub fn session_token(sub: &str) -> String {
    let t = now();
    session_token_with("rsa", sub, t, t + 600)
}

/// A refresh token (`drn` DSR) of `sub`, signed with the published RSA key, valid for a day.
pub fn refresh_token(sub: &str) -> String {
    let (t, jti) = (now(), SERIAL.fetch_add(1, Ordering::SeqCst));
    sign(
        "rsa",
        &json!({
            "sub": sub, "iss": format!("https://api.descope.com/{PROJECT}"), "iat": t, "exp": t + 86_400,
            "drn": "DSR", "jti": format!("R{jti}"),
        }),
    )
}

/// Descope's JWTResponse: the session, and the refresh token only when it rotated.
pub fn jwt_response(session: &str, rotated_refresh: Option<&str>) -> Value {
    let mut body = json!({ "sessionJwt": session, "cookieMaxAge": 86_400, "cookiePath": "/" });
    if let Some(refresh) = rotated_refresh {
        body["refreshJwt"] = json!(refresh);
    }
    body
}

/// Descope's error body.
pub fn descope_error(code: &str, description: &str) -> Value {
    json!({ "errorCode": code, "errorDescription": description, "errorMessage": description })
}
