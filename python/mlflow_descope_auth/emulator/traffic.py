"""Descope API requests in flight right now, and how the finished ones ended, per route.

``RouteStats`` counts requests as they arrive; this says what happened to them: a test sees that a
refresh is being handled (to act while it is, e.g. kill its sender) and how many refreshes really
succeeded, as opposed to failed or were dropped because their sender vanished during a delay.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

DROPPED = "dropped"  # the outcome of a request whose client disconnected before it was processed


class Traffic:
    """Safe to use from any thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight: Counter[str] = Counter()
        self._ended: dict[str, Counter[str]] = {}

    def started(self, route: str) -> None:
        with self._lock:
            self._in_flight[route] += 1

    def ended(self, route: str, outcome: str) -> None:
        """``outcome``: the HTTP status answered, as text, or ``DROPPED``."""
        with self._lock:
            self._in_flight[route] -= 1
            self._ended.setdefault(route, Counter())[outcome] += 1

    def snapshot(self) -> dict[str, Any]:
        """``{"inFlight": {route: n}, "ended": {route: {"200": n, "dropped": n, ...}}}``"""
        with self._lock:
            return {
                "inFlight": {r: n for r, n in self._in_flight.items() if n},
                "ended": {r: dict(c) for r, c in self._ended.items()},
            }

    def reset(self) -> None:
        """Forgets how requests ended; those in flight stay counted until they end."""
        with self._lock:
            self._ended = {}
