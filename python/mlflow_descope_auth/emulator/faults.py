"""Fault switches: make the emulated Descope API fail, stall or vanish on purpose.

* ``error``: every targeted route answers ``status`` with a Descope-style error body.
* ``delay``: every targeted route waits ``delay`` seconds before answering: a stall in the network
  before the request reaches Descope. A request whose client disconnects during the delay (it gave up,
  or its process died) is therefore dropped unprocessed, and logged: a refresh token it carried stays
  unused, as it would at Descope.
* ``outage``: the listening socket is really closed (clients get "connection refused") for ``seconds``
  or until cleared, then reopened on the same port. The server runs outages; this module only
  validates them.

A fault targets the Descope API routes named in ``routes`` (``keys``, ``refresh``, ``exchange``,
``logout``, ``me``; empty means all of them) and may expire after ``seconds``. The ``/emulator/*``
control routes are never affected, so a test can always clear what it set.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# "login" is the sign-in the stand-in flow component performs (POST /emulator/login): a Descope outage
# must break browser sign-in too.
API_ROUTES: tuple[str, ...] = ("keys", "refresh", "exchange", "logout", "me", "login")
MODES: tuple[str, ...] = ("error", "delay", "outage")
MAX_DELAY_SECONDS = 300.0
MAX_FAULT_SECONDS = 86_400.0


@dataclass(frozen=True)
class Fault:
    mode: str
    routes: frozenset[str] = frozenset()
    status: int = 503
    delay: float = 0.0
    seconds: float | None = None
    retry_after: int | None = None
    expires_at: float | None = None  # time.monotonic() deadline

    def applies_to(self, route: str) -> bool:
        return not self.routes or route in self.routes

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and (time.monotonic() if now is None else now) >= self.expires_at

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": self.mode, "routes": sorted(self.routes) or list(API_ROUTES)}
        if self.mode == "error":
            out["status"] = self.status
            if self.retry_after is not None:
                out["retryAfter"] = self.retry_after
        if self.mode == "delay":
            out["delay"] = self.delay
        if self.expires_at is not None:
            out["remainingSeconds"] = round(max(0.0, self.expires_at - time.monotonic()), 3)
        return out


def _seconds(value: Any, name: str, upper: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name}: must be a number of seconds")
    if not 0 < value <= upper:
        raise ValueError(f"{name}: must be more than 0 and at most {upper:g} seconds")
    return float(value)


def make_fault(
    mode: str,
    *,
    status: int = 503,
    delay: float = 0.0,
    seconds: float | None = None,
    routes: Iterable[str] | None = None,
    retry_after: int | None = None,
) -> Fault:
    """A validated fault; ``ValueError`` names the bad field."""
    if mode not in MODES:
        raise ValueError(f"mode: must be one of {', '.join(MODES)}")
    if isinstance(routes, str):
        routes = [routes]
    chosen = frozenset(routes or ())
    unknown = sorted(r for r in chosen if r not in API_ROUTES)
    if unknown:
        raise ValueError(f"routes: {unknown[0]!r} is not a Descope API route; use {', '.join(API_ROUTES)}")
    bad_status = isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599
    if mode == "error" and bad_status:
        raise ValueError("status: must be an HTTP error status between 400 and 599")
    if mode == "delay":
        delay = _seconds(delay, "delay", MAX_DELAY_SECONDS)
    if retry_after is not None and (
        isinstance(retry_after, bool) or not isinstance(retry_after, int) or retry_after < 0
    ):
        raise ValueError("retryAfter: must be a whole number of seconds, 0 or more")
    duration = None if seconds is None else _seconds(seconds, "seconds", MAX_FAULT_SECONDS)
    return Fault(
        mode=mode,
        routes=chosen,
        status=status,
        delay=delay,
        seconds=duration,
        retry_after=retry_after,
        expires_at=None if duration is None else time.monotonic() + duration,
    )


class FaultBoard:
    """The active ``error`` and ``delay`` faults, one per mode; safe to use from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: dict[str, Fault] = {}

    def set(self, fault: Fault) -> None:
        if fault.mode == "outage":
            raise ValueError("mode: outages are run by the server, not the fault board")
        with self._lock:
            self._faults[fault.mode] = fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def active(self) -> list[Fault]:
        now = time.monotonic()
        with self._lock:
            for mode in [m for m, f in self._faults.items() if f.expired(now)]:
                del self._faults[mode]
            return list(self._faults.values())

    def for_route(self, route: str) -> tuple[Fault | None, Fault | None]:
        """The (error, delay) faults that apply to ``route`` now."""
        faults = {f.mode: f for f in self.active() if f.applies_to(route)}
        return faults.get("error"), faults.get("delay")
