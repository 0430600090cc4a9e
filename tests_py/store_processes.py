"""What the refresh store tests run in other processes. A module of its own, importing little, so
that each spawned interpreter starts quickly."""

from __future__ import annotations

import os
from dataclasses import dataclass
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from mlflow_descope_auth.server.refresh_store import RefreshStore, open_refresh_store

TTL = 60.0


@dataclass(frozen=True)
class Spec:
    """A store as a child process opens it: picklable, unlike the store."""

    auth_db_uri: str
    state_dir: str

    def open(self) -> RefreshStore:
        return open_refresh_store(self.auth_db_uri, Path(self.state_dir))


def once_in_child(
    spec: Spec, key: str, blob: bytes, produced: str, inside: Event | None, release: Event | None, out: Any
) -> None:
    """once(key) in this process; its produce() notes this pid in `produced`, then (if given) says so
    on `inside` and waits for `release`. The outcome goes to `out`."""

    def produce() -> tuple[bytes, float]:
        with open(produced, "a") as f:
            f.write(f"{os.getpid()}\n")
        if inside is not None:
            inside.set()
        if release is not None:
            release.wait()
        return blob, TTL

    try:
        out.put(("ok", spec.open().once(key, produce)))
    except BaseException as exc:
        out.put(("error", f"{type(exc).__name__}: {exc}"))


def revoke_in_child(spec: Spec, key: str, out: Any) -> None:
    spec.open().revoke(key, TTL)
    out.put(("ok", None))


def is_revoked_in_child(spec: Spec, key: str, out: Any) -> None:
    out.put(("ok", spec.open().is_revoked(key)))


def first_use_in_child(spec: Spec, key: str, start: Any, out: Any) -> None:
    try:
        store = spec.open()
        start.wait()
        out.put(("ok", (store.is_revoked(key), store.once(key, lambda: (b"x", TTL)))))
    except BaseException as exc:
        out.put(("error", f"{type(exc).__name__}: {exc}"))
