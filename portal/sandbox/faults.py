"""Fault injection: make the sandbox fail on purpose, the ways a real network service fails.

A rule is ``{"status": 503 | 429 | "drop", "probability": 0.3, "count": 5,
"retry_after": 2, "latency_ms": 200, "paths": ["/api/events"]}``; every key but one of
``status`` / ``latency_ms`` is optional. ``count`` limits a rule to its next N firings,
``probability`` fires it on that share of matching requests, ``paths`` defaults to every
``/api/*`` path (a path ending in ``*`` is a prefix).
"""

from __future__ import annotations

import random
import socket
import threading
from dataclasses import asdict, dataclass, field
from itertools import count as counter

DEFAULT_PATHS = ("/api/*",)


class FaultSpecError(ValueError):
    """A fault rule that cannot be understood; the message says why."""


@dataclass
class FaultRule:
    id: int
    status: int | str | None = None
    probability: float = 1.0
    count: int | None = None
    retry_after: int | None = None
    latency_ms: int = 0
    paths: list[str] = field(default_factory=lambda: list(DEFAULT_PATHS))
    fired: int = 0

    def matches(self, path: str) -> bool:
        return any(path.startswith(p[:-1]) if p.endswith("*") else path == p for p in self.paths)

    def as_dict(self) -> dict:
        return asdict(self)


def parse_rule(spec: dict, rule_id: int) -> FaultRule:
    """Check a rule as sent to POST /_sandbox/faults and build it."""
    if not isinstance(spec, dict):
        raise FaultSpecError("A fault rule must be a JSON object.")
    unknown = set(spec) - {"status", "probability", "count", "retry_after", "latency_ms", "paths"}
    if unknown:
        raise FaultSpecError(f"Unknown fault keys: {sorted(unknown)}")
    status = spec.get("status")
    if status is not None and status != "drop" and not (
            isinstance(status, int) and not isinstance(status, bool) and 400 <= status <= 599):
        raise FaultSpecError('"status" must be an HTTP error status (400-599) or "drop".')
    latency = spec.get("latency_ms", 0)
    if not isinstance(latency, (int, float)) or isinstance(latency, bool) or not 0 <= latency <= 60000:
        raise FaultSpecError('"latency_ms" must be a number from 0 to 60000.')
    if status is None and not latency:
        raise FaultSpecError('A fault rule needs "status" or "latency_ms".')
    probability = spec.get("probability", 1.0)
    if not isinstance(probability, (int, float)) or isinstance(probability, bool) or not 0 <= probability <= 1:
        raise FaultSpecError('"probability" must be a number from 0 to 1.')
    count = spec.get("count")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 1):
        raise FaultSpecError('"count" must be a positive integer.')
    retry_after = spec.get("retry_after")
    if retry_after is not None and (not isinstance(retry_after, int) or isinstance(retry_after, bool)
                                    or retry_after < 0):
        raise FaultSpecError('"retry_after" must be a whole number of seconds.')
    paths = spec.get("paths", list(DEFAULT_PATHS))
    if not isinstance(paths, list) or not paths or not all(isinstance(p, str) and p.startswith("/")
                                                           for p in paths):
        raise FaultSpecError('"paths" must be a list of paths starting with "/".')
    return FaultRule(id=rule_id, status=status, probability=float(probability), count=count,
                     retry_after=retry_after, latency_ms=int(latency), paths=paths)


@dataclass
class Firing:
    """What the active rules decided for one request."""

    latency_ms: int = 0
    rule: FaultRule | None = None  # the status/drop rule that fired, if any
    kinds: list[str] = field(default_factory=list)  # for the stats: "503", "drop", "latency"


class FaultInjector:
    """The active rules, shared by all request threads."""

    def __init__(self, seed: int | None = None):
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []
        self._ids = counter(1)
        self._random = random.Random(seed)

    def add(self, spec: dict) -> FaultRule:
        with self._lock:
            rule = parse_rule(spec, next(self._ids))
            self._rules.append(rule)
            return rule

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def seed(self, seed: int) -> None:
        with self._lock:
            self._random.seed(seed)

    def rules(self) -> list[dict]:
        with self._lock:
            return [rule.as_dict() for rule in self._rules]

    def decide(self, path: str) -> Firing:
        """Roll the dice for one request: added latency and at most one failing rule."""
        firing = Firing()
        with self._lock:
            for rule in list(self._rules):
                if not rule.matches(path):
                    continue
                if rule.status is not None and firing.rule is not None:
                    continue  # one failure per request is enough
                if self._random.random() >= rule.probability:
                    continue
                rule.fired += 1
                if rule.count is not None:
                    rule.count -= 1
                    if rule.count == 0:
                        self._rules.remove(rule)
                if rule.latency_ms:
                    firing.latency_ms += rule.latency_ms
                    firing.kinds.append("latency")
                if rule.status is not None:
                    firing.rule = rule
                    firing.kinds.append(str(rule.status))
        return firing


DROP_FLAG = "klaviyo_sandbox.drop"


def drop_connection(environ: dict) -> None:
    """Cut the TCP connection with no HTTP answer, as a crashed load balancer would.

    Under Werkzeug's (or gunicorn's) server the socket is shut down, so a client sees a
    connection error. The WSGI wrapper below then raises ``ConnectionResetError``, which
    Werkzeug treats as a dropped connection and the Flask test client passes to the test.
    """
    sock = environ.get("werkzeug.socket") or environ.get("gunicorn.socket")
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
    environ[DROP_FLAG] = True


def wrap_wsgi(wsgi_app):
    """WSGI wrapper that turns a dropped request into ``ConnectionResetError``."""

    def app(environ, start_response):
        result = wsgi_app(environ, start_response)
        if environ.get(DROP_FLAG):
            close = getattr(result, "close", None)
            if close is not None:
                close()
            raise ConnectionResetError("Klaviyo sandbox dropped the connection (fault injection).")
        return result

    return app
