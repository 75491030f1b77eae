"""Klaviyo's rate limits: fixed windows of 1 second (burst) and 60 seconds (steady).

Each installed app instance (account + app) gets its own quota per endpoint, as Klaviyo
gives OAuth apps. Counters live in memory: they only matter for the next minute.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Decision:
    """The outcome of one request against the limits."""

    allowed: bool
    limit: int  # steady-window limit (RateLimit-Limit)
    remaining: int  # left in the steady window (RateLimit-Remaining)
    reset: int  # seconds until the steady window ends (RateLimit-Reset)
    retry_after: int = 0  # only when not allowed

    def headers(self) -> dict[str, str]:
        """Headers Klaviyo sends: RateLimit-* normally, only Retry-After on a 429."""
        if not self.allowed:
            return {"Retry-After": str(self.retry_after)}
        return {"RateLimit-Limit": str(self.limit), "RateLimit-Remaining": str(self.remaining),
                "RateLimit-Reset": str(self.reset)}


class RateLimiter:
    """Thread-safe fixed-window counters keyed by (installation, endpoint)."""

    def __init__(self, clock=time.time):
        self._clock = clock
        self._lock = threading.Lock()
        self._windows: dict[tuple, list] = {}

    def reset(self) -> None:
        with self._lock:
            self._windows.clear()

    def hit(self, key: tuple, burst: int, steady: int, enforce: bool = True) -> Decision:
        """Count one request; refuse it (without counting) when a window is full."""
        now = self._clock()
        burst_start = math.floor(now)
        steady_start = math.floor(now / 60) * 60
        steady_reset = max(1, math.ceil(steady_start + 60 - now))
        with self._lock:
            window = self._windows.get(key)
            if window is None:
                window = self._windows[key] = [burst_start, 0, steady_start, 0]
            if window[0] != burst_start:
                window[0], window[1] = burst_start, 0
            if window[2] != steady_start:
                window[2], window[3] = steady_start, 0
            if enforce and (window[1] >= burst or window[3] >= steady):
                if window[3] >= steady:
                    retry_after = steady_reset
                else:
                    retry_after = max(1, math.ceil(burst_start + 1 - now))
                return Decision(False, steady, max(0, steady - window[3]), steady_reset, retry_after)
            window[1] += 1
            window[3] += 1
            return Decision(True, steady, max(0, steady - window[3]), steady_reset)
