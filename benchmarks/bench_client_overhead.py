"""What the client plugins add to each MLflow request, measured around MLflow's own request path
(`mlflow.utils.rest_utils.http_request`, which resolves the header providers and the auth provider
on every call), against the same call with no plugin. The auth plugin (`MLFLOW_TRACKING_AUTH=descope`)
and the `X-Descope-*` header provider act per request; the run-context plugin acts at `start_run`,
not per request, so it is not on this path.

The socket is taken out of the picture: requests' HTTP adapter answers every call from memory with
a canned 200, for both contenders alike, so what remains is MLflow's request path plus the plugins.
The two contenders alternate call by call (MLflow's path costs milliseconds of CPU, so the plugins'
microseconds are read off the median of the paired differences), on the thread's CPU clock.

    python benchmarks/bench_client_overhead.py [--pairs 3000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from mlflow_descope_auth.client.auth import DescopeAuthProvider
from mlflow_descope_auth.client.headers import DescopeHeaderProvider
from mlflow_descope_auth.emulator import Emulator

LAST_SENT: dict[str, str] = {}
RECORD = [True]  # only while checking the contenders, not while timing them
BODY = b'{"experiment": {"experiment_id": "1", "name": "bench", "lifecycle_stage": "active"}}'


def canned_send(self: HTTPAdapter, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
    """An in-memory answer in place of the network round trip."""
    if RECORD[0]:
        LAST_SENT.clear()
        LAST_SENT.update({k: str(v) for k, v in request.headers.items()})
    resp = requests.Response()
    resp.status_code = 200
    resp._content = BODY
    resp.headers["Content-Type"] = "application/json"
    resp.url = request.url or ""
    resp.request = request
    resp.encoding = "utf-8"
    return resp


def cpu_us(fn: Callable[[], object], calls: int = 1) -> float:
    start = time.thread_time_ns()
    for _ in range(calls):
        fn()
    return (time.thread_time_ns() - start) / calls / 1000


def run(pairs: int) -> dict[str, Any]:
    from mlflow.tracking.request_header.registry import _request_header_provider_registry as registry
    from mlflow.utils.rest_utils import MlflowHostCreds, http_request

    host = "http://127.0.0.1:5000"
    with Emulator() as emu:
        os.environ.update(
            {
                "MLFLOW_TRACKING_URI": host,
                "DESCOPE_PROJECT_ID": emu.project_id,
                "DESCOPE_BASE_URI": emu.base_url,
                "DESCOPE_ACCESS_KEY": emu.access_key_for("editor"),
            }
        )
        os.environ.pop("MLFLOW_TRACKING_AUTH", None)  # the contenders choose through host_creds
        HTTPAdapter.send = canned_send  # type: ignore[method-assign,assignment]
        plain = MlflowHostCreds(host)  # type: ignore[no-untyped-call]
        with_auth = MlflowHostCreds(host, auth="descope")  # type: ignore[no-untyped-call]
        all_providers = list(registry._registry)
        if not any(isinstance(p, DescopeHeaderProvider) for p in all_providers):
            raise SystemExit("the descope header provider is not registered: pip install the package")
        without_ours = [p for p in all_providers if not isinstance(p, DescopeHeaderProvider)]

        def call(creds: MlflowHostCreds) -> None:
            r = http_request(  # type: ignore[no-untyped-call]
                creds, "/api/2.0/mlflow/experiments/get", "GET", params={"experiment_id": "1"}
            )
            assert r.status_code == 200

        def no_plugin() -> None:
            registry._registry = without_ours
            call(plain)

        def with_plugins() -> None:
            registry._registry = all_providers
            call(with_auth)

        auth = DescopeAuthProvider().get_auth()
        headers = DescopeHeaderProvider()
        prepared = requests.Request("GET", host + "/api/2.0/mlflow/experiments/get").prepare()

        def plugin_calls_only() -> None:
            if headers.in_context():
                headers.request_headers()
            auth(prepared)

        # First calls: access-key exchange and key fetch; and a check that the contenders differ
        # exactly by the plugins acting on MLflow's request.
        with_plugins()
        assert LAST_SENT["Authorization"].startswith("Bearer ") and "X-Descope-User-ID" in LAST_SENT
        no_plugin()
        assert "Authorization" not in LAST_SENT and "X-Descope-User-ID" not in LAST_SENT
        RECORD[0] = False
        bare: list[float] = []
        plugged: list[float] = []
        own: list[float] = []
        for i in range(pairs):
            # Alternate which goes first, so neither always runs with the other's warm caches.
            if i % 2:
                bare.append(cpu_us(no_plugin))
                plugged.append(cpu_us(with_plugins))
            else:
                plugged.append(cpu_us(with_plugins))
                bare.append(cpu_us(no_plugin))
            if i % 10 == 0:
                own.append(cpu_us(plugin_calls_only, 100))
        registry._registry = all_providers
    med = {
        "MLflow request, no plugin": statistics.median(bare),
        "MLflow request, descope plugins": statistics.median(plugged),
        "plugin calls only": statistics.median(own),
    }
    added = statistics.median(p - b for p, b in zip(plugged, bare, strict=True))
    return {"pairs": pairs, "median_us": med, "added_us": added}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3000)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    result = run(args.pairs)
    print("| path | median µs/request (CPU) |")
    print("|---|---:|")
    for k, v in result["median_us"].items():
        print(f"| {k} | {v:.2f} |")
    print(f"| added by the plugins (median of paired differences) | {result['added_us']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
