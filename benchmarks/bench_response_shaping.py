"""What issue 13 adds to every answer a signed-in user gets: the response shaping (``no-store``, the
person-readable refusal, the UI page check), side by side in one run with the core's cached token
check, which every request already pays. CPU time of this thread, medians over rounds.

    python benchmarks/bench_response_shaping.py [--rounds 7] [--calls 20000]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from mlflow_descope_auth import DescopeClient
from mlflow_descope_auth.emulator import Emulator
from mlflow_descope_auth.server.response_shaping import shaping_for

PATH = "/api/2.0/mlflow/experiments/get"
HEADERS = [("Content-Type", "application/json"), ("Content-Length", "120"), ("Server", "uvicorn")]


def per_call_ns(work: Callable[[], object], calls: int) -> float:
    start = time.thread_time_ns()
    for _ in range(calls):
        work()
    return (time.thread_time_ns() - start) / calls


def shape() -> object:
    shaping = shaping_for("GET", PATH, "", PATH)
    shaping.wants_body(200, HEADERS)
    return shaping.response_headers(HEADERS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=20000)
    args = parser.parse_args()
    with Emulator() as emu:
        client = DescopeClient(emu.project_id, base_url=emu.base_url)
        token = emu.login("editor")["sessionJwt"]
        client.validate_session(token)
        shaped, checked = [], []
        for _ in range(args.rounds):
            shaped.append(per_call_ns(shape, args.calls))
            checked.append(per_call_ns(lambda: client.validate_cached(token), args.calls))
    s, c = statistics.median(shaped), statistics.median(checked)
    print(f"response shaping per request:   {s / 1000:.2f} us")
    print(f"cached token check per request: {c / 1000:.2f} us")
    print(f"shaping / cached check:         {s / c:.2f}x")


if __name__ == "__main__":
    main()
