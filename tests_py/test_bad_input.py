"""Bad input on every `/auth/...` route (and a few guarded MLflow routes) of a real server, generated
by hypothesis: random and malformed cookies (also non-UTF-8 bytes), Authorization headers, tokens
(made up, truncated, re-signed, expired, of the wrong kind), `next` values, Origin headers and bodies.
Never a 5xx, the server stays up, and no string that was sent as a credential shows up in the
server's log."""

from __future__ import annotations

import base64
import http.client
import json
import time
from urllib.parse import quote, urlencode, urlsplit

import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from .descope_server import DescopeServer

ROUTES = [
    "/auth/login",
    "/auth/session",
    "/auth/logout",
    "/auth/user",
    "/auth/health",
    "/auth/static/x.js",
    "/auth/cli/token",
]
# The same gate guards MLflow's routes, and MLflow's authorization function reads the cookies again.
GUARDED = ["/api/2.0/mlflow/experiments/search", "/ajax-api/2.0/mlflow/runs/create", "/"]
METHODS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
# Header values must be latin-1 without control characters for the HTTP client to send them at all.
header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=300
)
any_text = st.text(max_size=300)
# A credential worth looking for in the log: long enough not to match by accident.
MIN_SECRET = 16


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@st.composite
def tokens(draw: st.DrawFn, real: list[str]) -> str:
    """A token-shaped string: a real one as is or damaged, made-up JWTs, or noise."""
    kind = draw(st.sampled_from(["real", "cut", "flipped", "forged", "segments", "noise", "huge"]))
    token = draw(st.sampled_from(real))
    if kind == "real":
        return token
    if kind == "cut":
        return token[: draw(st.integers(0, len(token)))]
    if kind == "flipped":
        i = draw(st.integers(0, len(token) - 1))
        return token[:i] + draw(st.sampled_from("AZaz09-_.")) + token[i + 1 :]
    if kind == "forged":
        header = draw(
            st.fixed_dictionaries(
                {"alg": st.sampled_from(["none", "HS256", "RS256", "ES256", "", "RS1"])},
                optional={"kid": header_text, "typ": st.just("JWT"), "jku": st.just("http://evil.invalid/k")},
            )
        )
        claims = draw(
            st.dictionaries(
                st.sampled_from(["sub", "exp", "iss", "drn", "roles"]), st.one_of(st.integers(), header_text)
            )
        )
        sig = draw(st.binary(max_size=64))
        return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}.{b64(sig)}"
    if kind == "segments":
        return ".".join(draw(st.lists(header_text, max_size=5)))
    if kind == "huge":
        return token * draw(st.integers(2, 20))
    return draw(header_text)


def send(
    base: str, method: str, route: str, next_value: str | None, headers: dict[str, str], body: bytes | None
) -> tuple[int, str]:
    """One raw request (http.client: it sends header values a stricter client would refuse)."""
    target = quote(route, safe="/%")
    if next_value is not None:
        target += "?" + urlencode({"next": next_value})
    conn = http.client.HTTPConnection(urlsplit(base).netloc, timeout=60)
    try:
        conn.putrequest(
            method, target, skip_host="host" in {h.lower() for h in headers}, skip_accept_encoding=True
        )
        for name, value in headers.items():
            conn.putheader(name, value.encode("latin-1"))
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def test_auth_routes_survive_bad_input(descope: DescopeServer) -> None:
    emu = descope.emulator
    real = [emu.login("reader")["sessionJwt"], emu.login("editor")["refreshJwt"]]
    now = int(time.time())
    real.append(emu.sign({**emu.session_claims("reader"), "iat": now - 120, "exp": now - 60}))  # expired
    sent: set[str] = set()
    statuses: dict[int, int] = {}

    @settings(
        max_examples=250,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(
        route=st.one_of(
            st.sampled_from(ROUTES), header_text.map(lambda s: "/auth/" + s.replace("?", "").replace("#", ""))
        ),
        method=st.sampled_from(METHODS),
        ds=st.none() | tokens(real),
        dsr=st.none() | tokens(real),
        junk=st.none() | header_text.filter(lambda v: ";" not in v),
        authorization=st.none()
        | st.builds(
            lambda scheme, t: f"{scheme} {t}",
            st.sampled_from(["Bearer", "bearer", "Basic", "", "Bearer  "]),
            tokens(real),
        ),
        origin=st.none() | st.sampled_from(["same", "null", "http://evil.example", ""]) | header_text,
        next_value=st.none() | any_text,
        body=st.one_of(
            st.none(),
            st.binary(max_size=2000),
            st.builds(
                lambda s, r, n: json.dumps({"sessionJwt": s, "refreshJwt": r, "next": n}).encode(),
                st.one_of(tokens(real), st.integers(), st.none(), st.lists(st.integers())),
                st.one_of(tokens(real), st.none(), st.booleans()),
                st.one_of(any_text, st.none(), st.integers()),
            ),
            st.recursive(
                st.none() | st.booleans() | st.integers() | any_text,
                lambda c: st.lists(c) | st.dictionaries(any_text, c),
                max_leaves=30,
            ).map(lambda v: json.dumps(v).encode()),
        ),
        extra=st.dictionaries(
            st.sampled_from(
                [
                    "X-Descope-User-ID",
                    "X-Descope-Roles",
                    "Accept",
                    "Content-Type",
                    "Sec-Fetch-Mode",
                    "Referer",
                    "Host",
                ]
            ),
            header_text,
            max_size=3,
        ),
    )
    # Pinned examples, so every kind of answer is reached whatever hypothesis draws: the login page
    # (200), a sign-out (302) and the gate's refusal (401), each with hostile extras.
    @example(
        route="/auth/login",
        method="GET",
        ds=None,
        dsr=None,
        junk="\x00",
        authorization=None,
        origin="null",
        next_value="//evil.example",
        body=None,
        extra={},
    )
    @example(
        route="/auth/logout",
        method="GET",
        ds="not.a.jwt",
        dsr=None,
        junk=None,
        authorization=None,
        origin=None,
        next_value=None,
        body=None,
        extra={"Sec-Fetch-Mode": "navigate"},
    )
    @example(
        route="/auth/user",
        method="GET",
        ds=None,
        dsr=None,
        junk=None,
        authorization="Bearer x.y.z",
        origin=None,
        next_value=None,
        body=None,
        extra={},
    )
    def probe(
        route: str,
        method: str,
        ds: str | None,
        dsr: str | None,
        junk: str | None,
        authorization: str | None,
        origin: str | None,
        next_value: str | None,
        body: bytes | None,
        extra: dict[str, str],
    ) -> None:
        headers = dict(extra)
        cookies = []
        credentials: set[str] = set()
        if ds is not None:
            cookies.append(f"DS={ds}")
            credentials.add(ds)
        if dsr is not None:
            cookies.append(f"DSR={dsr}")
            credentials.add(dsr)
        if junk is not None:
            cookies.append(f"other={junk}")
        if cookies:
            headers["Cookie"] = "; ".join(cookies)
        if authorization is not None:
            headers["Authorization"] = authorization
            credentials.add(authorization.partition(" ")[2].strip())
        if origin is not None:
            headers["Origin"] = descope.url if origin == "same" else origin
        if body is not None:
            try:
                parsed = json.loads(body)
                if isinstance(parsed, dict):
                    credentials.update(
                        v
                        for k, v in parsed.items()
                        if k in ("sessionJwt", "refreshJwt") and isinstance(v, str)
                    )
            except ValueError:
                pass
        status, text = send(descope.url, method, route, next_value, headers, body)
        statuses[status] = statuses.get(status, 0) + 1
        assert status < 500, (status, text[:300])
        credentials = {c for c in credentials if len(c) >= MIN_SECRET}
        assert not any(c in text for c in credentials), "a credential echoed back"
        sent.update(credentials)

    probe()
    assert requests.get(descope.url + "/health", timeout=60).status_code == 200
    # Every kind of answer came up (the sweep reached the handlers, not only the gate's refusals).
    assert {200, 302, 401}.issubset(statuses), statuses
    log = (descope.workdir / "server.log").read_text(errors="replace")
    leaked = [s[:12] + "..." for s in sent if len(s) >= MIN_SECRET and s in log]
    assert not leaked, f"credentials in the server log: {leaked}"
