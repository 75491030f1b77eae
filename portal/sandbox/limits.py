"""Klaviyo's rate limits: fixed windows of 1 second (burst) and 60 seconds (steady), and for
some endpoints (Create Flow, Create Segment) a daily window too, from midnight UTC.

Each installed app instance (account + app) gets its own quota per endpoint, as Klaviyo
gives OAuth apps. Counters live in memory: they only matter for the next minute (or day).
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
        self._days: dict[tuple, list] = {}

    def reset(self) -> None:
        with self._lock:
            self._windows.clear()
            self._days.clear()

    def _day(self, key: tuple, now: float) -> list:
        """[day start, requests counted that day] for a key, moved on to today."""
        day_start = math.floor(now / 86400) * 86400
        day = self._days.get(key)
        if day is None or day[0] != day_start:
            day = self._days[key] = [day_start, 0]
        return day

    def set_daily_used(self, key: tuple, used: int) -> None:
        """Say that ``used`` requests were already made today (tests use it to reach a daily limit)."""
        with self._lock:
            self._day(key, self._clock())[1] = used

    def daily_used(self, key: tuple) -> int:
        with self._lock:
            return self._day(key, self._clock())[1]

    def hit(self, key: tuple, burst: int, steady: int, enforce: bool = True,
            daily: int | None = None) -> Decision:
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
            day = self._day(key, now) if daily else None
            if enforce and day is not None and day[1] >= daily:
                retry_after = max(1, math.ceil(day[0] + 86400 - now))
                return Decision(False, steady, max(0, steady - window[3]), steady_reset, retry_after)
            if enforce and (window[1] >= burst or window[3] >= steady):
                if window[3] >= steady:
                    retry_after = steady_reset
                else:
                    retry_after = max(1, math.ceil(burst_start + 1 - now))
                return Decision(False, steady, max(0, steady - window[3]), steady_reset, retry_after)
            window[1] += 1
            window[3] += 1
            if day is not None:
                day[1] += 1
            return Decision(True, steady, max(0, steady - window[3]), steady_reset)
