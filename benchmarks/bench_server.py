"""Server throughput and latency: `mlflow server` with no authentication, MLflow's `basic-auth` (its
credential cache on) and `--app-name descope`, with 1 and 2 workers, as an admin and as a non-admin
user holding an EDIT grant on the experiment, for three calls (get an experiment, log a batch of
metrics, search runs). The load generator is `wrk` (C, not Python), one short burst per contender per
round, all contenders interleaved in every round; medians over rounds.

    python benchmarks/bench_server.py [--rounds 5] [--seconds 2] [--workers 1 2] [--json out.json]

`--compare-src DIR` adds a contender `descope-base`: the same server with the package's Python code
taken from DIR (e.g. `git archive <commit> python | tar -x -C /tmp/base`, plus the built `_core`
extension copied into DIR/mlflow_descope_auth/), so a change is measured against the code before it
in the same run.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from mlflow_descope_auth.emulator import Emulator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests_py.descope_server import server_env
from tests_py.servers import mlflow_server

LUA = Path(__file__).resolve().parent / "wrk"
ADMIN_PASSWORD = "bench-Admin-password-1"  # basic-auth's bootstrap admin, a throwaway server
USER_PASSWORD = "bench-User-password-1"
# MLflow 3.17 starts a job runner with ~8 huey consumer processes beside every server; not on the
# request path, but on a 2-core machine their start-up and polling would be measured too.
NO_JOB_RUNNER = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
Tags = tuple[str, list[dict[str, str]]]
CALLS = ("get-experiment", "log-batch", "search-runs")


@dataclass
class Target:
    """One server and one user: what a wrk burst needs."""

    auth: str  # none | basic-auth | descope
    workers: int
    user: str  # admin | user
    url: str
    authorization: str | None
    experiment_id: str
    run_id: str
    pids: list[int] = dataclasses.field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.auth} / {self.workers}w / {self.user}"


def _post(url: str, path: str, auth: str | None, body: dict[str, Any]) -> dict[str, Any]:
    headers = {"Authorization": auth} if auth else {}
    r = requests.post(url + path, json=body, headers=headers, timeout=60)
    if r.status_code != 200:
        raise RuntimeError(f"{path} answered {r.status_code}: {r.text[:300]}")
    return r.json() if r.content else {}


def _seed(url: str, auth: str | None, tags: Tags) -> tuple[str, str]:
    """An experiment with 20 runs; returns (experiment id, id of the last run)."""
    exp = _post(url, "/api/2.0/mlflow/experiments/create", auth, {"name": f"bench-{time.time_ns()}"})
    exp_id = exp["experiment_id"]
    user_id, tag_list = tags
    for i in range(20):  # something for search-runs to find
        body = {"experiment_id": exp_id, "start_time": i, "user_id": user_id, "tags": tag_list}
        run = _post(url, "/api/2.0/mlflow/runs/create", auth, body)
    run_id = run["run"]["info"]["run_id"]
    return exp_id, run_id


def attribution_tags(emu: Emulator) -> Tags:
    """The user id and tags the descope server writes on every run it creates (server-side
    attribution); the other servers get the same on theirs, so every search returns the same data."""
    from mlflow_descope_auth import DescopeClient
    from mlflow_descope_auth.client.identity_fields import identity_fields

    client = DescopeClient(emu.project_id, base_url=emu.base_url)
    identity = client.validate_session(emu.login("admin")["sessionJwt"])
    tags = [{"key": "mlflow.user", "value": identity.username}]
    tags += [{"key": f"descope.{k}", "value": v} for k, v in identity_fields(identity).items()]
    return identity.username, tags


def _grant(url: str, admin: str, username: str, exp_id: str) -> None:
    body = {"username": username, "resource_type": "experiment", "resource_id": exp_id, "permission": "EDIT"}
    _post(url, "/api/3.0/mlflow/users/permissions/grant", admin, body)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@contextlib.contextmanager
def none_server(workdir: Path, workers: int, tags: Tags) -> Iterator[list[Target]]:
    with mlflow_server(workdir, extra_args=("--workers", str(workers)), env=_clean_env()) as url:
        exp_id, run_id = _seed(url, None, tags)
        yield [Target("none", workers, "admin", url, None, exp_id, run_id)]


@contextlib.contextmanager
def basic_auth_server(workdir: Path, workers: int, tags: Tags) -> Iterator[list[Target]]:
    workdir.mkdir(parents=True, exist_ok=True)
    ini = workdir / "basic_auth.ini"
    ini.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = sqlite:///{workdir / 'basic_auth.db'}\n"
        "admin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        # MLflow's credential cache: PBKDF2 once per (user, password) per TTL, not per request.
        "auth_cache_ttl_seconds = 3600\nauth_cache_max_size = 10000\n"
    )
    env = _clean_env(
        MLFLOW_AUTH_CONFIG_PATH=str(ini),
        MLFLOW_AUTH_ADMIN_PASSWORD=ADMIN_PASSWORD,
        MLFLOW_FLASK_SERVER_SECRET_KEY="bench-secret-key",  # noqa: S106  (a throwaway server)
    )
    args = ("--app-name", "basic-auth", "--workers", str(workers))
    with mlflow_server(workdir, extra_args=args, env=env) as url:
        admin = _basic("admin", ADMIN_PASSWORD)
        _post(
            url, "/api/2.0/mlflow/users/create", admin, {"username": "bench-user", "password": USER_PASSWORD}
        )
        exp_id, run_id = _seed(url, admin, tags)
        _grant(url, admin, "bench-user", exp_id)
        yield [
            Target("basic-auth", workers, "admin", url, admin, exp_id, run_id),
            Target("basic-auth", workers, "user", url, _basic("bench-user", USER_PASSWORD), exp_id, run_id),
        ]


@contextlib.contextmanager
def descope_server(
    workdir: Path, workers: int, emu: Emulator, tags: Tags, auth: str = "descope", source: Path | None = None
) -> Iterator[list[Target]]:
    workdir.mkdir(parents=True, exist_ok=True)
    env = server_env(emu, workdir, **NO_JOB_RUNNER)
    if source is not None:
        env["PYTHONPATH"] = str(source)
    args = ("--app-name", "descope", "--workers", str(workers))
    with mlflow_server(workdir, extra_args=args, env=env) as url:
        admin = "Bearer " + emu.login("admin")["sessionJwt"]
        # A reader (READ baseline from DESCOPE_ROLE_PERMISSIONS) with an EDIT grant on the experiment,
        # like basic-auth's user; its first request provisions it.
        reader = "Bearer " + emu.login("reader")["sessionJwt"]
        r = requests.get(
            url + "/api/2.0/mlflow/experiments/search?max_results=1",
            headers={"Authorization": reader},
            timeout=60,
        )
        r.raise_for_status()
        exp_id, run_id = _seed(url, admin, tags)
        _grant(url, admin, emu.user("reader").user_id, exp_id)
        yield [
            Target(auth, workers, "admin", url, admin, exp_id, run_id),
            Target(auth, workers, "user", url, reader, exp_id, run_id),
        ]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DESCOPE_", "MLFLOW_TRACKING_", "MLFLOW_AUTH"))
    }
    env.update(NO_JOB_RUNNER)
    env.update(extra)
    return env


def _server_pids(url: str) -> list[int]:
    """The uvicorn process serving `url` and its descendants (the workers)."""
    port = url.rsplit(":", 1)[1]
    parents: dict[int, int] = {}
    root = None
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents[int(entry.name)] = ppid
        if (
            b"uvicorn" in b" ".join(cmd)
            and b"--port" in cmd
            and cmd[cmd.index(b"--port") + 1] == port.encode()
        ):
            root = int(entry.name)
    if root is None:
        raise RuntimeError(f"no uvicorn process for {url}")
    pids, changed = {root}, True
    while changed:
        grown = pids | {p for p, pp in parents.items() if pp in pids}
        changed, pids = grown != pids, grown
    return sorted(pids)


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes (all their threads) so far."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / os.sysconf("SC_CLK_TCK")


def wrk(target: Target, call: str, seconds: int, connections: int) -> dict[str, float]:
    env = {
        **os.environ,
        "BENCH_EXPERIMENT_ID": target.experiment_id,
        "BENCH_RUN_ID": target.run_id,
        "BENCH_AUTHORIZATION": target.authorization or "",
    }
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s",
           "-s", str(LUA / f"{call}.lua"), target.url]  # fmt: skip
    cpu_before = _cpu_seconds(target.pids)
    out = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=seconds + 60, check=True
    ).stdout
    cpu = _cpu_seconds(target.pids) - cpu_before
    line = next(x for x in out.splitlines() if x.startswith("BENCH_JSON "))
    result: dict[str, float] = json.loads(line.removeprefix("BENCH_JSON "))
    # The server's own CPU per request: steadier than req/s on a machine shared with other jobs.
    result["server_cpu_ms_per_request"] = cpu * 1000 / max(result["requests"], 1)
    if result["non_2xx"] or result["socket_errors"]:
        raise RuntimeError(f"{target.name} {call}: {result} (wrk output: {out[-500:]})")
    return result


def _start_all(factories: list[Any], stack: contextlib.ExitStack) -> list[Target]:
    """Starts the servers concurrently (start-up is mostly imports); `stack` stops them all."""

    def start(factory: Any) -> tuple[contextlib.ExitStack, list[Target]]:
        own = contextlib.ExitStack()
        try:
            return own, own.enter_context(factory())
        except BaseException:
            own.close()
            raise

    with ThreadPoolExecutor(len(factories)) as pool:
        futures = [pool.submit(start, f) for f in factories]
    targets: list[Target] = []
    errors = []
    for fut in futures:
        try:
            own, started = fut.result()
        except Exception as exc:
            errors.append(exc)
            continue
        stack.push(own.__exit__)
        targets += started
    if errors:
        stack.close()
        raise errors[0]
    return targets


def run(
    rounds: int, seconds: int, worker_counts: list[int], connections: int, compare_src: Path | None = None
) -> dict[str, Any]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")
    root = Path(
        # mkdtemp (mode 0700) in memory: SQLite's fsyncs would otherwise dominate every write call.
        tempfile.mkdtemp(prefix="bench-server-", dir="/dev/shm" if Path("/dev/shm").is_dir() else None)  # noqa: S108
    )
    samples: dict[tuple[str, str], list[dict[str, float]]] = {}
    try:
        with Emulator(session_ttl=24 * 3600) as emu, contextlib.ExitStack() as stack:
            tags = attribution_tags(emu)
            servers = []
            for w in worker_counts:
                servers += [
                    lambda w=w: none_server(root / f"none-{w}", w, tags),
                    lambda w=w: basic_auth_server(root / f"basic-{w}", w, tags),
                    lambda w=w: descope_server(root / f"descope-{w}", w, emu, tags),
                ]
                if compare_src is not None:
                    servers.append(
                        lambda w=w: descope_server(
                            root / f"descope-base-{w}", w, emu, tags, auth="descope-base", source=compare_src
                        )
                    )
            targets = _start_all(servers, stack)
            for t in targets:
                t.pids = _server_pids(t.url)
            for t in targets:  # warm-up: imports, caches, provisioning, DB connections
                for call in CALLS:
                    wrk(t, call, 1, connections)
            for r in range(rounds):
                started = time.monotonic()
                for t in targets:
                    for call in CALLS:
                        samples.setdefault((t.name, call), []).append(wrk(t, call, seconds, connections))
                print(f"round {r + 1}/{rounds}: {time.monotonic() - started:.0f}s", file=sys.stderr)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rows = []
    for (name, call), runs in samples.items():
        auth, workers, user = (p.strip() for p in name.split("/"))
        rows.append(
            {
                "auth": auth,
                "workers": int(workers.removesuffix("w")),
                "user": user,
                "call": call,
                "rps": statistics.median(s["requests"] / s["duration_s"] for s in runs),
                "p50_ms": statistics.median(s["p50_us"] for s in runs) / 1000,
                "p99_ms": statistics.median(s["p99_us"] for s in runs) / 1000,
                "cpu_ms": statistics.median(s["server_cpu_ms_per_request"] for s in runs),
                "requests": sum(int(s["requests"]) for s in runs),
            }
        )
    _add_ratios(rows)
    return {
        "rounds": rounds,
        "seconds_per_burst": seconds,
        "connections": connections,
        "rows": rows,
    }


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    def find(auth: str, workers: int, user: str, call: str) -> dict[str, Any] | None:
        for row in rows:
            if (row["auth"], row["workers"], row["user"], row["call"]) == (auth, workers, user, call):
                return row
        return None

    for row in rows:
        none = find("none", row["workers"], "admin", row["call"])
        basic = find("basic-auth", row["workers"], row["user"], row["call"])
        row["rps_vs_none"] = row["rps"] / none["rps"] if none and none["rps"] else None
        row["cpu_vs_none"] = row["cpu_ms"] / none["cpu_ms"] if none and none["cpu_ms"] else None
        row["cpu_vs_basic_auth"] = row["cpu_ms"] / basic["cpu_ms"] if basic and basic["cpu_ms"] else None
        row["rps_vs_basic_auth"] = row["rps"] / basic["rps"] if basic and basic["rps"] else None
        base = find("descope-base", row["workers"], row["user"], row["call"])
        row["cpu_vs_descope_base"] = row["cpu_ms"] / base["cpu_ms"] if base and base["cpu_ms"] else None
        row["rps_vs_descope_base"] = row["rps"] / base["rps"] if base and base["rps"] else None


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=2, help="length of one wrk burst")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--json", default=None)
    parser.add_argument(
        "--compare-src", type=Path, default=None, help="add descope-base: this package's code from DIR"
    )
    args = parser.parse_args()
    result = run(args.rounds, args.seconds, args.workers, args.connections, args.compare_src)
    print(
        "| workers | call | auth | user | req/s | p50 ms | p99 ms | CPU ms/req | x none | x basic-auth "
        "| CPU x descope-base |"
    )
    print("|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|")

    def ratio(value: float | None) -> str:
        return f"{value:.2f}" if value else ""

    for r in result["rows"]:
        print(
            f"| {r['workers']} | {r['call']} | {r['auth']} | {r['user']} | {r['rps']:.0f} | "
            f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['cpu_ms']:.2f} | {ratio(r['rps_vs_none'])} | "
            f"{ratio(r['rps_vs_basic_auth'])} | {ratio(r['cpu_vs_descope_base'])} |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
