"""Transparent cookie refresh on `mlflow server --app-name descope` (uvicorn, 2 workers): what a
request costs when its `DS` cookie has expired and the gate refreshes it with `DSR` (one call to
Descope, here the emulator on loopback), against the same request with a valid session; and how many
refreshes a burst of concurrent requests carrying one expired session causes (the core's
RefreshCoordinator promises one per refresh token, shared by the worker processes through the
refresh store: here the state directory, as the auth DB is SQLite).

Latency is the client's wall clock per request, the two kinds alternating; medians. The refresh
tokens rotate on every use, as Descope can be configured to do.

    python benchmarks/bench_refresh.py [--pairs 40] [--trials 5] [--burst 16] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import requests

from mlflow_descope_auth.emulator import Emulator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests_py.descope_server import DescopeServer, descope_server

PATH = "/api/2.0/mlflow/experiments/search?max_results=1"
NO_JOB_RUNNER = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def expired_pair(emu: Emulator, login_id: str) -> tuple[str, str]:
    """A fresh refresh token and a session of the same user that expired a minute ago."""
    refresh = emu.login(login_id)["refreshJwt"]
    now = int(time.time())
    expired = emu.sign({**emu.session_claims(login_id), "iat": now - 660, "exp": now - 60})
    return expired, refresh


def cookie(ds: str, dsr: str | None = None) -> dict[str, str]:
    return {"Cookie": f"DS={ds}" + (f"; DSR={dsr}" if dsr else "")}


def timed_get(
    session: requests.Session, url: str, headers: dict[str, str]
) -> tuple[float, requests.Response]:
    start = time.perf_counter()
    r = session.get(url + PATH, headers=headers, timeout=60)
    return (time.perf_counter() - start) * 1000, r


def latency(server: DescopeServer, pairs: int) -> dict[str, float]:
    emu = server.emulator
    valid = emu.login("editor")["sessionJwt"]
    valid_ms: list[float] = []
    refresh_ms: list[float] = []
    with requests.Session() as s:
        for _ in range(10):  # warm-up: first-seen token, connections
            timed_get(s, server.url, cookie(valid))
        for _ in range(pairs):
            ms, r = timed_get(s, server.url, cookie(valid))
            assert r.status_code == 200 and "Set-Cookie" not in r.headers, r.text[:200]
            valid_ms.append(ms)
            ms, r = timed_get(s, server.url, cookie(*expired_pair(emu, "editor")))
            assert r.status_code == 200 and "DS=" in r.headers.get("Set-Cookie", ""), r.text[:200]
            refresh_ms.append(ms)
    return {
        "valid_session_ms": statistics.median(valid_ms),
        "transparent_refresh_ms": statistics.median(refresh_ms),
        "added_ms": statistics.median(r - v for r, v in zip(refresh_ms, valid_ms, strict=True)),
    }


def burst(server: DescopeServer, size: int) -> dict[str, Any]:
    """`size` concurrent requests (each on its own connection) with one expired session."""
    emu = server.emulator
    ds, dsr = expired_pair(emu, "editor")
    barrier = threading.Barrier(size)
    statuses: list[int] = []
    new_sessions: set[str] = set()
    lock = threading.Lock()

    def hit() -> None:
        with requests.Session() as s:
            barrier.wait()
            r = s.get(server.url + PATH, headers=cookie(ds, dsr), timeout=120)
            with lock:
                statuses.append(r.status_code)
                new_sessions.add(r.cookies.get("DS") or "")

    before = emu.stats()["refresh"]
    threads = [threading.Thread(target=hit) for _ in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {
        "requests": size,
        "all_200": all(s == 200 for s in statuses),
        "refreshes_at_descope": emu.stats()["refresh"] - before,
        "distinct_new_sessions": len(new_sessions - {""}),
    }


def run(pairs: int, trials: int, size: int) -> dict[str, Any]:
    workers = 2
    with (
        Emulator(rotate_refresh_tokens=True) as emu,
        tempfile.TemporaryDirectory(prefix="bench-refresh-") as tmp,
        descope_server(
            emu, Path(tmp), extra_args=("--workers", str(workers)), DESCOPE_JWT_LEEWAY="0", **NO_JOB_RUNNER
        ) as server,
    ):
        # Every worker up and with its keys before anything is timed.
        deadline = time.monotonic() + 180
        while emu.stats()["keys"] < workers and time.monotonic() < deadline:
            burst(server, 8)
        lat = latency(server, pairs)
        bursts = [burst(server, size) for _ in range(trials)]
    return {
        "workers": workers,
        "pairs": pairs,
        **lat,
        "bursts": bursts,
        "max_refreshes_per_burst": max(b["refreshes_at_descope"] for b in bursts),
        "all_requests_200": all(b["all_200"] for b in bursts),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pairs", type=int, default=40)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--burst", type=int, default=16)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    r = run(args.pairs, args.trials, args.burst)
    print("| request | median ms |")
    print("|---|---:|")
    print(f"| valid session cookie | {r['valid_session_ms']:.2f} |")
    print(f"| expired DS + valid DSR (transparent refresh) | {r['transparent_refresh_ms']:.2f} |")
    print(f"| added by the refresh (median of paired differences) | {r['added_ms']:.2f} |")
    print()
    print(f"{args.trials} bursts of {args.burst} concurrent requests with one expired session, 2 workers:")
    print(f"refreshes at Descope per burst: {[b['refreshes_at_descope'] for b in r['bursts']]}")
    print(f"all requests 200: {r['all_requests_200']}")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))


if __name__ == "__main__":
    main()
