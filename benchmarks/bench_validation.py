"""Token validation cost: the Rust core (first sight and repeated token) against PyJWT with a pre-loaded
key and the official descope SDK, on the same emulator-signed tokens. Contenders run interleaved in
each round, and the report gives medians over rounds and ratios against the core.

Per-token cost is measured on the thread's CPU clock (`time.thread_time_ns`), so time the shared
machine spends on other processes does not count. Throughput with one and two threads is wall-clock:
two threads validating distinct tokens at once, which scales only where the GIL is released.

    python benchmarks/bench_validation.py [--rounds 15] [--tokens 300] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import threading
import time
from collections.abc import Callable
from typing import Any

import jwt

from mlflow_descope_auth import DescopeClient
from mlflow_descope_auth.emulator import Emulator

Contender = Callable[[str], object]


def per_call_us(fn: Contender, tokens: list[str]) -> float:
    start = time.thread_time_ns()
    for t in tokens:
        fn(t)
    return (time.thread_time_ns() - start) / len(tokens) / 1000


def throughput(fn: Contender, tokens: list[str], threads: int) -> float:
    """Tokens per second (wall clock) with `threads` threads sharing `tokens` between them."""
    shares = [tokens[i::threads] for i in range(threads)]
    barrier = threading.Barrier(threads + 1)

    def work(share: list[str]) -> None:
        barrier.wait()
        for t in share:
            fn(t)

    pool = [threading.Thread(target=work, args=(share,)) for share in shares]
    for th in pool:
        th.start()
    barrier.wait()
    start = time.perf_counter()
    for th in pool:
        th.join()
    return len(tokens) / (time.perf_counter() - start)


def contenders(emu: Emulator) -> dict[str, tuple[Contender, bool]]:
    """name -> (validate function, needs a fresh token each call)."""
    from descope import DescopeClient as SdkClient

    cold = DescopeClient(emu.project_id, base_url=emu.base_url, token_cache_size=0)
    cached = DescopeClient(emu.project_id, base_url=emu.base_url)
    sdk = SdkClient(project_id=emu.project_id, base_url=emu.base_url)
    key = emu.signing_key
    public = key.private_key.public_key()
    alg = key.alg

    def pyjwt(token: str) -> object:
        return jwt.decode(token, public, algorithms=[alg], options={"verify_aud": False}, leeway=5)

    return {
        "core, first sight": (cold.validate_session, True),
        "core, repeated token": (cached.validate_session, False),
        "PyJWT (key pre-loaded)": (pyjwt, True),
        "descope SDK validate_session": (sdk.validate_session, True),
    }


def bench_algorithm(algorithm: str, rounds: int, n_tokens: int) -> dict[str, Any]:
    with Emulator(algorithm=algorithm) as emu:
        users = ["admin", "editor", "reader"]
        # Distinct tokens (distinct `iat`/`exp` offsets), so "first sight" never hits a cache.
        tokens = [
            emu.sign({**emu.session_claims(users[i % 3]), "exp": int(time.time()) + 3600 + i})
            for i in range(n_tokens)
        ]
        funcs = contenders(emu)
        for fn, _ in funcs.values():  # warm-up: key fetch, first-call costs
            fn(tokens[0])
        samples: dict[str, list[float]] = {name: [] for name in funcs}
        rates: dict[str, dict[int, list[float]]] = {name: {1: [], 2: []} for name in funcs}
        for _ in range(rounds):
            for name, (fn, fresh) in funcs.items():
                batch = tokens if fresh else [tokens[0]] * n_tokens
                samples[name].append(per_call_us(fn, batch))
                for n_threads in (1, 2):
                    rates[name][n_threads].append(throughput(fn, batch, n_threads))
    medians = {name: statistics.median(v) for name, v in samples.items()}
    base = medians["core, first sight"]
    per_second = {name: {str(n): statistics.median(v) for n, v in r.items()} for name, r in rates.items()}
    return {
        "algorithm": algorithm,
        "median_us": medians,
        "ratio_vs_core_first_sight": {name: m / base for name, m in medians.items()},
        "tokens_per_second": per_second,
        "two_thread_speedup": {name: r["2"] / r["1"] for name, r in per_second.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    results = [bench_algorithm(a, args.rounds, args.tokens) for a in ("RS256", "ES256", "ES384")]
    print(
        f"machine: {platform.machine()}, Python {platform.python_version()}, rounds={args.rounds}, "
        f"tokens/round={args.tokens}"
    )
    print("| algorithm | contender | median µs/token | x core first sight | tokens/s, 1 thread | 2 threads |")
    print("|---|---|---:|---:|---:|---:|")
    for r in results:
        for name, us in r["median_us"].items():
            tps = r["tokens_per_second"][name]
            print(
                f"| {r['algorithm']} | {name} | {us:.2f} | {r['ratio_vs_core_first_sight'][name]:.2f} | "
                f"{tps['1']:.0f} | {tps['2']:.0f} |"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
