"""Per-app sandbox state (rate-limit counters, fault rules) and the per-request database."""

from __future__ import annotations

import queue
import sqlite3
import threading
import weakref

from flask import current_app, g

from portal.sandbox import store
from portal.sandbox.faults import FaultInjector
from portal.sandbox.limits import RateLimiter


class ConnectionPool:
    """Idle SQLite connections, each used by one request at a time.

    Opening a connection per request is cheap, but closing the last one makes SQLite
    checkpoint and delete the WAL file, which costs about half a millisecond a request.
    Keeping a few connections open avoids that.
    """

    def __init__(self, path: str, keep: int = 16):
        self.path = path
        self._idle: queue.LifoQueue[sqlite3.Connection] = queue.LifoQueue()
        self._keep = keep

    def acquire(self) -> sqlite3.Connection:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            return store.connect(self.path, shared=True)

    def release(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:  # a request that failed half-way
            conn.rollback()
        if self._idle.qsize() < self._keep:
            self._idle.put(conn)
        else:
            conn.close()

    def close(self) -> None:
        while True:
            try:
                self._idle.get_nowait().close()
            except queue.Empty:
                return


class SandboxState:
    """What one sandbox app keeps in memory, shared by its request threads."""

    def __init__(self, fault_seed: int | None = None):
        self.limiter = RateLimiter()
        self.faults = FaultInjector(fault_seed)
        self.config_lock = threading.Lock()
        self._db_lock = threading.Lock()
        self._pool: ConnectionPool | None = None

    def pool(self, path: str) -> ConnectionPool:
        """The connection pool, creating the database on first use (the factory does no I/O)."""
        pool = self._pool
        if pool is not None and pool.path == path:
            return pool
        with self._db_lock:
            if self._pool is None or self._pool.path != path:
                store.init(path)
                if self._pool is not None:
                    self._pool.close()
                self._pool = ConnectionPool(path)
                weakref.finalize(self, self._pool.close)
            return self._pool

    def close(self) -> None:
        """Close the idle database connections (the server does this on shutdown)."""
        if self._pool is not None:
            self._pool.close()


def state() -> SandboxState:
    return current_app.extensions["klaviyo_sandbox"]


def db() -> sqlite3.Connection:
    """This request's connection to the sandbox database."""
    conn = g.get("sandbox_db")
    if conn is None:
        g.sandbox_pool = state().pool(current_app.config["SANDBOX_DB"])
        conn = g.sandbox_db = g.sandbox_pool.acquire()
    return conn


def close_db(_exc: BaseException | None = None) -> None:
    conn = g.pop("sandbox_db", None)
    if conn is not None:
        g.pop("sandbox_pool").release(conn)


def accounts() -> list[dict]:
    return current_app.config["SANDBOX_ACCOUNTS"]


def account(account_id: str) -> dict | None:
    return next((a for a in accounts() if a["id"] == account_id), None)
