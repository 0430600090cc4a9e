"""What the client plugins add to each MLflow request: the auth hook plus the header provider, as
MLflow calls them, against the same request with no plugin. Interleaved rounds, medians.

    python benchmarks/bench_client_overhead.py [--rounds 15] [--calls 20000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import requests

from mlflow_descope_auth.client.auth import DescopeAuthProvider
from mlflow_descope_auth.client.headers import DescopeHeaderProvider
from mlflow_descope_auth.emulator import Emulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    with Emulator() as emu:
        os.environ.update(
            {
                "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
                "DESCOPE_PROJECT_ID": emu.project_id,
                "DESCOPE_BASE_URI": emu.base_url,
                "DESCOPE_ACCESS_KEY": emu.access_key_for("editor"),
            }
        )
        auth = DescopeAuthProvider().get_auth()
        headers = DescopeHeaderProvider()
        url = "http://127.0.0.1:5000/api/2.0/mlflow/runs/log-metric"

        def bare() -> None:
            requests.Request("POST", url, headers={"User-Agent": "mlflow"}).prepare()

        def with_plugins() -> None:
            h = {"User-Agent": "mlflow"}
            if headers.in_context():
                h.update(headers.request_headers())
            auth(requests.Request("POST", url, headers=h).prepare())

        prepared = requests.Request("POST", url).prepare()

        def plugin_calls_only() -> None:
            # What the plugins' own code costs, without requests' handling of the extra headers.
            if headers.in_context():
                headers.request_headers()
            prepared.hooks["response"].clear()
            auth(prepared)

        with_plugins()  # first call: access-key exchange and key fetch
        contenders = (
            ("no plugin", bare),
            ("descope plugins", with_plugins),
            ("plugin calls only", plugin_calls_only),
        )
        samples: dict[str, list[float]] = {name: [] for name, _ in contenders}
        for _ in range(args.rounds):
            for name, fn in contenders:
                start = time.perf_counter_ns()
                for _ in range(args.calls):
                    fn()
                samples[name].append((time.perf_counter_ns() - start) / args.calls / 1000)
    med = {k: statistics.median(v) for k, v in samples.items()}
    print("| path | median µs/request |")  # requests' own prepare() is the baseline
    print("|---|---:|")
    for k, v in med.items():
        print(f"| {k} | {v:.2f} |")
    print(f"| added by the plugins (difference) | {med['descope plugins'] - med['no plugin']:.2f} |")


if __name__ == "__main__":
    main()
