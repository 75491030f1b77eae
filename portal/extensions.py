"""Extensions, created unbound and attached in create_app."""
import fcntl
import os
import sqlite3
import threading
from contextlib import contextmanager

from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()


# SQLITE_SYNCHRONOUS (portal.config): NORMAL unless the configuration asks for FULL; create_app sets it.
sqlite_synchronous = "NORMAL"


@event.listens_for(Engine, "connect")
def _sqlite_pragmas(dbapi_connection, _record):
    """SQLite in WAL mode, so readers never block the writer, and writers wait their turn (busy timeout) instead
    of failing. synchronous=NORMAL in WAL mode: a commit no longer waits for the disk, only a checkpoint does. The
    database can't be corrupted either way, and an order survives the portal crashing or being killed; what a power
    cut or an operating-system crash may lose is the last commits before it. SQLITE_SYNCHRONOUS=FULL keeps those
    too, at about a millisecond more per order under the write lock (see docs/benchmarks.md); PostgreSQL is the
    database for a busy installation."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={sqlite_synchronous}")
        cursor.execute("PRAGMA busy_timeout=10000")
        files = [row[2] for row in cursor.execute("PRAGMA database_list") if row[2]]
        cursor.close()
        for path in files:  # buyers' details and encrypted tokens: readable by this user only
            for name in (path, f"{path}-wal", f"{path}-shm"):
                if os.path.exists(name) and os.stat(name).st_mode & 0o077:
                    os.chmod(name, 0o600)


_turns: dict[str, tuple[threading.Lock, int]] = {}
_turns_lock = threading.Lock()


@contextmanager
def write_turn():
    """On SQLite, wait in line for the one writer's turn: a thread lock within this process, then a file lock beside
    the database across processes (the kernel wakes the next in line as soon as it is free). Without it, checkouts
    that find SQLite's write lock taken wait in its busy handler, which sleeps 1, 2, 5, 10... ms and retries: under
    an on-sale the lock is mostly free while they sleep, and a few wait for seconds. On PostgreSQL (row locks, many
    writers at once) it does nothing. Hold it only around a short write transaction: nothing inside may wait for
    another turn."""
    url = db.engine.url
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        yield
        return
    path = f"{url.database}-writer.lock"
    with _turns_lock:
        if path not in _turns:
            _turns[path] = (threading.Lock(), os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        lock, handle = _turns[path]
    with lock:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
