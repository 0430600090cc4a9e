"""The emulator's notion of now: the system clock plus an offset a test can move.

Every time the emulator writes into a token (``iat``, ``exp``) or compares against (a refresh
token's expiry, cookie lifetimes) comes from here, so a test can get a session that expired a
minute ago, or one that expires in an hour, without waiting: ``emu.clock.set_offset(-700)`` before
``emu.login(...)`` issues tokens as of 700 seconds ago. Over HTTP: ``POST /emulator/clock
{"offset": -700}``. Fault durations are not affected: they measure real waiting.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

# Over a year either way: enough to expire even a refresh token (30 days by default).
MAX_OFFSET_SECONDS = 400 * 24 * 3600.0


class Clock:
    """``now()`` is ``source() + offset``; safe to use from any thread."""

    def __init__(self, source: Callable[[], float] = time.time, offset: float = 0.0) -> None:
        self._source = source
        self._lock = threading.Lock()
        self._offset = 0.0
        self.set_offset(offset)

    def now(self) -> float:
        with self._lock:
            offset = self._offset
        return self._source() + offset

    @property
    def offset(self) -> float:
        with self._lock:
            return self._offset

    def set_offset(self, seconds: float) -> float:
        """Makes now ``seconds`` away from the source's time (negative: in the past)."""
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
            raise ValueError("offset: must be a number of seconds")
        if abs(seconds) > MAX_OFFSET_SECONDS:
            raise ValueError(f"offset: must be at most {MAX_OFFSET_SECONDS:g} seconds either way")
        with self._lock:
            self._offset = float(seconds)
            return self._offset

    def advance(self, seconds: float) -> float:
        """Moves now by ``seconds`` (negative: back); returns the new offset."""
        return self.set_offset(self.offset + seconds)
