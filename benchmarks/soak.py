"""The full load run (RELIABILITY.md): the production topology on loopback, several users with short
sessions, mixed reads and writes, for a few minutes.

    python benchmarks/soak.py --minutes 5 --json benchmarks/results/soak.json

Two `mlflow server --app-name descope` replicas (2 workers each) behind nginx, PostgreSQL backend
store and auth DB, shared folder; the offline emulator as Descope with rotating refresh tokens.
Pass: zero 5xx, zero wrong decisions, every acknowledged metric stored, worker memory flat (each
worker's resident memory at the end within 10 % or 16 MiB of its value at the middle of the run,
after warm-up). Exit status 1 on a failure.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests_py.load import run_load
from tests_py.replicas import cluster, rss_kib

from mlflow_descope_auth.emulator import Emulator

FLAT_RATIO = 0.10
FLAT_KIB = 16 * 1024


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--agents-per-user", type=int, default=2, help="agents per user kind (x5 agents)")
    parser.add_argument("--session-ttl", type=int, default=10, help="seconds a Descope session lives")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    seconds = args.minutes * 60

    with (
        tempfile.TemporaryDirectory(prefix="mlflow-descope-soak-") as tmp,
        Emulator(session_ttl=args.session_ttl, rotate_refresh_tokens=True) as emu,
        cluster(emu, Path(tmp), workers=2, DESCOPE_JWT_LEEWAY="0") as topology,
    ):
        workers = {
            f"replica{i}/pid{pid}": pid for i, r in enumerate(topology.replicas) for pid in r.worker_pids()
        }
        memory: dict[str, dict[str, int | None]] = {name: {} for name in workers}
        marks = {"start": 0.0, "middle": seconds / 2, "end": seconds - 2}

        def sample(elapsed: float) -> None:
            for mark, at in marks.items():
                if elapsed >= at and mark not in next(iter(memory.values()), {}):
                    for name, pid in workers.items():
                        memory[name][mark] = rss_kib(pid)

        before = emu.stats()
        print(f"load: {seconds:.0f} s through {topology.url} ({len(workers)} server processes)", flush=True)
        report = run_load(topology.url, emu, seconds, agents_per_user=args.agents_per_user, on_tick=sample)
        after = emu.stats()
        alive = all(r.alive() for r in topology.replicas)

    flat = all(
        m.get("middle") is not None
        and m.get("end") is not None
        and m["end"] - m["middle"] <= max(FLAT_RATIO * m["middle"], FLAT_KIB)  # type: ignore[operator]
        for m in memory.values()
    )
    result: dict[str, Any] = {
        "minutes": args.minutes,
        "session_ttl_seconds": args.session_ttl,
        "agents": args.agents_per_user * 5,
        **report.summary(),
        "descope_refreshes": after["refresh"] - before["refresh"],
        "requests_per_second": round(report.sent / seconds, 1),
        "worker_rss_kib": memory,
        "memory_flat": flat,
        "replicas_alive": alive,
    }
    result["passed"] = report.passed and flat and alive
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
