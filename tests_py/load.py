"""A mixed read/write load from several Descope users with short sessions, checked request by request.

Each agent is one client of one user: browser-like agents send the `DS`/`DSR` cookies and let the
server renew them (refresh-token rotation on), API agents send `Authorization: Bearer` and renew
their own session at Descope when it runs out, as the client plugin does. Every request has an
expected answer from the user's permissions (editors write their own runs, the reader reads them
but may not write, the admin may do anything): any other answer is a wrong decision, any 5xx a
failure. Every metric acknowledged is read back at the end. Used by tests_py/test_load.py (short)
and benchmarks/soak.py (minutes)."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.cookiejar import DefaultCookiePolicy
from typing import Any

import jwt
import requests

from mlflow_descope_auth.emulator import Emulator

TIMEOUT = 60
LOG_METRIC = "/api/2.0/mlflow/runs/log-metric"
SET_TAG = "/api/2.0/mlflow/runs/set-tag"
GET_RUN = "/api/2.0/mlflow/runs/get"
SEARCH = "/api/2.0/mlflow/experiments/search"
HISTORY = "/api/2.0/mlflow/metrics/get-history"
CREATE_EXPERIMENT = "/api/2.0/mlflow/experiments/create"
CREATE_RUN = "/api/2.0/mlflow/runs/create"


@dataclass
class Report:
    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)  # wrongly allowed or denied
    exceptions: list[str] = field(default_factory=list)
    metrics: list[tuple[str, str, int, float]] = field(default_factory=list)  # acknowledged
    missing_metrics: list[tuple[str, str, int, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, agent: Agent, what: str, resp: requests.Response, expected: int) -> None:
        with self.lock:
            self.sent += 1
            self.statuses[resp.status_code] += 1
            if resp.status_code >= 500:
                self.server_errors.append(f"{what}: {resp.status_code} {resp.text[:200]}")
            elif resp.status_code != expected:
                self.wrong.append(
                    f"{what} ({type(agent).__name__}): expected {expected}, "
                    f"got {resp.status_code} {resp.text[:200]}"
                )

    @property
    def passed(self) -> bool:
        return not (self.server_errors or self.wrong or self.exceptions or self.missing_metrics)

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.sent,
            "statuses": dict(sorted(self.statuses.items())),
            "server_errors": len(self.server_errors),
            "wrong_decisions": len(self.wrong),
            "client_exceptions": len(self.exceptions),
            "metrics_acknowledged": len(self.metrics),
            "metrics_missing": len(self.missing_metrics),
            "examples": (self.server_errors + self.wrong + self.exceptions)[:5],
        }


class Agent:
    """One client of one user. Subclasses say how the credential travels."""

    def __init__(self, base: str, emu: Emulator, login_id: str) -> None:
        self.base = base
        self.emu = emu
        self.login_id = login_id
        self.http = requests.Session()
        self.http.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))  # cookies by hand

    def headers(self) -> dict[str, str]:
        raise NotImplementedError

    def after(self, resp: requests.Response) -> None:
        """Takes whatever the server renewed."""

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        resp = self.http.request(
            method, self.base + path, headers=self.headers(), timeout=TIMEOUT, allow_redirects=False, **kwargs
        )
        self.after(resp)
        return resp


class BrowserAgent(Agent):
    """Cookies, renewed by the server; state-changing requests carry this site's Origin."""

    def __init__(self, base: str, emu: Emulator, login_id: str) -> None:
        super().__init__(base, emu, login_id)
        tokens = emu.login(login_id)
        resp = self.http.post(
            base + "/auth/session",
            json={"sessionJwt": tokens["sessionJwt"], "refreshJwt": tokens["refreshJwt"]},
            headers={"Origin": base},
            timeout=TIMEOUT,
        )
        resp.raise_for_status()
        self.cookies: dict[str, str] = {}
        self.after(resp)

    def headers(self) -> dict[str, str]:
        cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return {"Cookie": cookie, "Origin": self.base, "Accept": "application/json"}

    def after(self, resp: requests.Response) -> None:
        for header in resp.raw.headers.getlist("Set-Cookie"):
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0]
            if name in ("DS", "DSR") and value:
                self.cookies[name] = value


class ApiAgent(Agent):
    """Bearer; renews its own session at Descope shortly before it runs out."""

    def __init__(self, base: str, emu: Emulator, login_id: str) -> None:
        super().__init__(base, emu, login_id)
        tokens = emu.login(login_id)
        self.session, self.refresh = tokens["sessionJwt"], tokens["refreshJwt"]

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        resp = super().call(method, path, **kwargs)
        if resp.status_code == 401 and self.expires_at() <= time.time():
            # Sent just before the session ran out, checked just after (a busy machine): renewed and
            # sent once more, as the client plugin does. A 401 for a live session stays an error.
            resp = super().call(method, path, **kwargs)
        return resp

    def expires_at(self) -> int:
        return int(jwt.decode(self.session, options={"verify_signature": False})["exp"])

    def headers(self) -> dict[str, str]:
        if self.expires_at() - time.time() < 2:
            resp = requests.post(
                f"{self.emu.base_url}/v1/auth/refresh",
                headers={"Authorization": f"Bearer {self.emu.project_id}:{self.refresh}"},
                json={},
                timeout=TIMEOUT,
            )
            resp.raise_for_status()
            body = resp.json()
            self.session = body["sessionJwt"]
            self.refresh = body.get("refreshJwt") or self.refresh
        return {"Authorization": f"Bearer {self.session}"}


@dataclass
class Workspace:
    """One editor-owned experiment and run per editor agent; what everyone works on."""

    experiment_id: str
    run_id: str
    step: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_step(self) -> int:
        with self.lock:
            self.step += 1
            return self.step


def make_workspace(owner: Agent) -> Workspace:
    exp = owner.call("POST", CREATE_EXPERIMENT, json={"name": f"load-{uuid.uuid4().hex[:10]}"})
    exp.raise_for_status()
    experiment_id = exp.json()["experiment_id"]
    run = owner.call("POST", CREATE_RUN, json={"experiment_id": experiment_id})
    run.raise_for_status()
    return Workspace(experiment_id, run.json()["run"]["info"]["run_id"])


Op = Callable[[Agent, Workspace, Report, random.Random], None]


def log_metric(expected: int) -> Op:
    def op(agent: Agent, ws: Workspace, report: Report, rng: random.Random) -> None:
        step = ws.next_step()
        key = f"m_{agent.login_id}"
        value = round(rng.random(), 6)
        body = {
            "run_id": ws.run_id,
            "key": key,
            "value": value,
            "timestamp": int(time.time() * 1000),
            "step": step,
        }
        resp = agent.call("POST", LOG_METRIC, json=body)
        report.record(agent, f"{agent.login_id} log-metric", resp, expected)
        if resp.status_code == 200:
            with report.lock:
                report.metrics.append((ws.run_id, key, step, value))

    return op


def set_tag(expected: int) -> Op:
    def op(agent: Agent, ws: Workspace, report: Report, rng: random.Random) -> None:
        body = {"run_id": ws.run_id, "key": "phase", "value": str(rng.randint(0, 9))}
        report.record(agent, f"{agent.login_id} set-tag", agent.call("POST", SET_TAG, json=body), expected)

    return op


def get_run(agent: Agent, ws: Workspace, report: Report, rng: random.Random) -> None:
    report.record(
        agent, f"{agent.login_id} get-run", agent.call("GET", GET_RUN, params={"run_id": ws.run_id}), 200
    )


def search(agent: Agent, ws: Workspace, report: Report, rng: random.Random) -> None:
    report.record(
        agent, f"{agent.login_id} search", agent.call("GET", SEARCH, params={"max_results": 20}), 200
    )


def create_experiment(expected: int) -> Op:
    def op(agent: Agent, ws: Workspace, report: Report, rng: random.Random) -> None:
        body = {"name": f"load-{agent.login_id}-{uuid.uuid4().hex[:10]}"}
        report.record(
            agent,
            f"{agent.login_id} create-experiment",
            agent.call("POST", CREATE_EXPERIMENT, json=body),
            expected,
        )

    return op


# What each demo user may do on an editor's run (DESCOPE_ROLE_PERMISSIONS=editor=EDIT,reader=READ).
PLANS: dict[str, list[Op]] = {
    "editor": [log_metric(200), log_metric(200), set_tag(200), get_run, search],
    "admin": [log_metric(200), get_run, search, create_experiment(200)],
    "reader": [get_run, search, log_metric(403), set_tag(403), create_experiment(403)],
}


def run_load(
    base: str,
    emu: Emulator,
    seconds: float,
    *,
    agents_per_user: int = 2,
    on_tick: Callable[[float], None] | None = None,
) -> Report:
    """Runs the mixed load for `seconds`; `on_tick(elapsed)` is called about once a second (memory
    samples). Returns the report, with acknowledged metrics already checked against the store."""
    report = Report()
    owners = [BrowserAgent(base, emu, "editor") for _ in range(agents_per_user)]
    spaces = [make_workspace(o) for o in owners]
    agents: list[Agent] = []
    for i in range(agents_per_user):
        agents += [
            owners[i],
            ApiAgent(base, emu, "editor"),
            BrowserAgent(base, emu, "reader"),
            ApiAgent(base, emu, "reader"),
            ApiAgent(base, emu, "admin"),
        ]
    stop = time.monotonic() + seconds

    def work(agent: Agent, seed: int) -> None:
        rng = random.Random(seed)
        plan = PLANS[agent.login_id]
        while time.monotonic() < stop:
            try:
                rng.choice(plan)(agent, rng.choice(spaces), report, rng)
            except requests.RequestException as exc:
                with report.lock:
                    report.exceptions.append(f"{agent.login_id}: {exc!r}")

    threads = [threading.Thread(target=work, args=(a, i)) for i, a in enumerate(agents)]
    for t in threads:
        t.start()
    started = time.monotonic()
    while any(t.is_alive() for t in threads):
        if on_tick is not None:
            on_tick(time.monotonic() - started)
        time.sleep(1)
    for t in threads:
        t.join()
    verify_metrics(base, emu, report)
    return report


def verify_metrics(base: str, emu: Emulator, report: Report) -> None:
    """Every acknowledged metric is in the store, with its value."""
    checker = ApiAgent(base, emu, "admin")
    wanted: dict[tuple[str, str], dict[int, float]] = {}
    for run_id, key, step, value in report.metrics:
        wanted.setdefault((run_id, key), {})[step] = value
    for (run_id, key), steps in wanted.items():
        stored: dict[int, float] = {}
        token = None
        while True:
            params: dict[str, Any] = {"run_id": run_id, "metric_key": key, "max_results": 25000}
            if token:
                params["page_token"] = token
            resp = checker.call("GET", HISTORY, params=params)
            resp.raise_for_status()
            body = resp.json()
            stored.update({m["step"]: m["value"] for m in body.get("metrics", [])})
            token = body.get("next_page_token")
            if not token:
                break
        report.missing_metrics += [
            (run_id, key, s, v) for s, v in steps.items() if s not in stored or abs(stored[s] - v) > 1e-9
        ]
