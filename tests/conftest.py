"""Shared fixtures: a real Redis, a real database (SQLite or PostgreSQL), the Klaviyo sandbox over HTTP,
the app and its test client, and a real rq worker process.

Set TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test to run on PostgreSQL.
"""
import copy
import os
import re
import shutil
import signal
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from cryptography.fernet import Fernet
from flask.testing import FlaskClient
from sqlalchemy import text

from devtools import processes
from devtools.processes import ROOT, RedisServer  # noqa: F401 - RedisServer: tests start a Redis of their own

TOKEN_KEY = Fernet.generate_key().decode()
CALLBACK = "/manage/integrations/klaviyo/callback"
PUBLIC_BASE = "http://localhost"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    """A redis-server of the tests' own, on a free port (a test may stop and start it again)."""
    if processes.redis_binary() is None:
        pytest.fail("redis-server is not installed: run .ci/run (it installs it) or apt-get install redis-server")
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def database_dir(tmp_path_factory):
    """Where the SQLite databases live: in memory (/dev/shm) when the machine has it. On a disk every commit
    waits for an fsync (about 4 ms here), which was most of a test's setup; SQLite behaves the same otherwise."""
    if not os.access("/dev/shm", os.W_OK):
        yield tmp_path_factory.mktemp("db")
        return
    directory = Path(tempfile.mkdtemp(prefix="portal-tests-", dir="/dev/shm"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def database_url(database_dir):
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        return f"sqlite:///{database_dir / 'portal.db'}"
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # pytest-xdist's gw0, gw1, ...: each needs a database of its own
    return _worker_database(url, worker) if worker else url


def _worker_database(url: str, worker: str) -> str:
    """TEST_DATABASE_URL's database with the xdist worker's id added (test -> test_gw0), created when missing
    (through the server's `postgres` database), its commits asynchronous."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    base = make_url(url)
    name = f"{base.database}_{worker}"
    with psycopg.connect(host=base.host, port=base.port or 5432, user=base.username, password=base.password,
                         dbname="postgres", autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):  # another run made it just now
                pass
        # A commit needn't wait for its WAL flush here (about 4 ms on this disk, as SQLite's fsync would be: see
        # database_dir). Only a server crash could lose the last commits; what every session sees is unchanged.
        conn.execute(sql.SQL("ALTER DATABASE {} SET synchronous_commit = off").format(sql.Identifier(name)))
    return base.set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def sandbox(database_dir):
    server = processes.sandbox_in_thread(database_dir / "sandbox.db",
                                         [PUBLIC_BASE + CALLBACK, "http://127.0.0.1:5000" + CALLBACK])
    yield server
    server.shutdown()


def base_config(database_url, redis_url, sandbox_url) -> dict:
    return {
        "TESTING": True,
        "SECRET_KEY": "test-secret-key",
        "TOKEN_ENCRYPTION_KEY": TOKEN_KEY,
        "SQLALCHEMY_DATABASE_URI": database_url,
        "REDIS_URL": redis_url,
        "PUBLIC_BASE_URL": PUBLIC_BASE,
        "KLAVIYO_CLIENT_ID": "sandbox-client-id",
        "KLAVIYO_CLIENT_SECRET": "sandbox-client-secret",
        "KLAVIYO_OAUTH_BASE": sandbox_url,
        "KLAVIYO_API_BASE": sandbox_url,
        "KLAVIYO_SANDBOX_URL": sandbox_url,
        "KLAVIYO_TIMEOUT": 5.0,
        "RETRY_BASE_SECONDS": 0.2,
        "SWEEP_INTERVAL_SECONDS": 1,
        # Tests place many orders from one address; tests/test_checkout_limits.py sets the real limits.
        "CHECKOUT_ORDERS_PER_ADDRESS_PER_MINUTE": 100_000, "FORM_TOKEN_MAX_ORDERS": 100_000,
        "DISCOUNT_GUESSES_PER_ADDRESS": 100_000,
        "SESSION_COOKIE_SECURE": False,
        "SUPPORT_EMAIL": "support@tickets.example",
    }


@pytest.fixture(scope="session")
def migrated(database_url, redis_server, sandbox):
    """Apply the Alembic migrations once, as the run command does."""
    from flask_migrate import downgrade, upgrade

    from portal import create_app

    app = create_app(base_config(database_url, redis_server.url, sandbox.url))
    with app.app_context():
        if database_url.startswith("postgresql"):
            downgrade(directory=str(ROOT / "migrations"), revision="base")
        upgrade(directory=str(ROOT / "migrations"))
        from portal.extensions import db

        db.engine.dispose()
    return True


class PortalClient(FlaskClient):
    """The test client, plus the CSRF token a real browser would have from the page."""

    def csrf_token(self) -> str:
        html = self.get("/auth/login").get_data(as_text=True)
        match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html) or re.search(r'"X-CSRFToken": "([^"]+)"', html)
        return match.group(1)

    def form_token(self, checkout_url: str) -> str:
        """The signed token a checkout form carries, read from the page that shows the form."""
        page = checkout_url.replace("/checkout", "", 1)
        html = self.get(page).get_data(as_text=True)
        return re.search(r'name="form_token" value="([^"]+)"', html).group(1)

    def post_form(self, url, data=None, **kwargs):
        data = dict(data or {})
        data.setdefault("csrf_token", self.csrf_token())
        if "/checkout" in url:
            data.setdefault("form_token", self.form_token(url))
        return self.post(url, data=data, **kwargs)


@pytest.fixture(scope="session")
def _one_app(migrated, database_url, redis_server, sandbox):
    """The app, made once: making it again for every test (its URL map and, above all, compiling its templates
    anew) cost about a tenth of a second a test. `app` puts its configuration and extensions back each time."""
    from portal import create_app
    from portal.extensions import db

    app = create_app(base_config(database_url, redis_server.url, sandbox.url))
    app.test_client_class = PortalClient
    yield app, copy.deepcopy(dict(app.config)), dict(app.extensions)
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def app(_one_app, redis_server, sandbox):
    """The app on empty tables, a reset sandbox and an empty Redis, with the configuration and extensions it
    was made with (a test may change them: `app.config[...] = ...`, `app.extensions.pop("redis")`)."""
    from portal.extensions import db

    app, config, extensions = _one_app
    app.config.clear()
    app.config.update(copy.deepcopy(config))
    app.extensions.clear()
    app.extensions.update(extensions)
    with app.app_context():
        _empty_tables(db)
    # The sandbox runs in this process: reset it through its own WSGI app, without a round trip over TCP.
    assert sandbox.app.test_client().post("/_sandbox/reset").status_code == 200
    import redis

    with redis.Redis.from_url(redis_server.url) as connection:
        connection.flushdb()
    yield app
    with app.app_context():
        db.session.remove()


# The id sequences that belong to a table's column (serial or identity), back to their start.
_RESTART_OWNED_SEQUENCES = text("""
    SELECT setval(seq.oid::regclass, pg_sequence.seqstart, false)
    FROM pg_class seq
    JOIN pg_sequence ON pg_sequence.seqrelid = seq.oid
    JOIN pg_namespace ns ON ns.oid = seq.relnamespace
    WHERE ns.nspname = current_schema() AND EXISTS (
        SELECT 1 FROM pg_depend dep WHERE dep.objid = seq.oid AND dep.classid = 'pg_class'::regclass
        AND dep.deptype IN ('a', 'i'))
""")


def _empty_tables(db):
    """Delete every row, children first; on PostgreSQL also restart the id sequences. (That is what TRUNCATE ...
    RESTART IDENTITY does, but TRUNCATE makes new files for every table and index: about 0.4 s a test.)"""
    with db.engine.begin() as conn:
        for table in reversed(db.metadata.sorted_tables):
            conn.execute(table.delete())
        if conn.dialect.name == "postgresql":
            conn.execute(_RESTART_OWNED_SEQUENCES)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def make_organizer(app):
    """Create an organizer and return it (factory, so a test can make several)."""
    from portal.auth.models import Organizer
    from portal.extensions import db

    def make(email="ada@organizer.example", name="Ada Events", password="correct horse battery"):
        with app.app_context():
            organizer = Organizer(name=name, email=email)
            organizer.set_password(password)
            db.session.add(organizer)
            db.session.commit()
            return organizer.id

    return make


@pytest.fixture
def login(client):
    def do(email="ada@organizer.example", password="correct horse battery", who=None):
        target = who or client
        response = target.post_form("/auth/login", {"email": email, "password": password})
        assert response.status_code == 303, response.get_data(as_text=True)[:500]
        return response

    return do


@pytest.fixture
def organizer(make_organizer, login):
    """A logged-in organizer's id."""
    organizer_id = make_organizer()
    login()
    return organizer_id


def oauth_connect(client, sandbox_url: str, decision: str = "allow"):
    """Walk the real OAuth flow: portal → sandbox consent page → decision → portal callback."""
    from portal.sandbox.server import parse_consent_form

    start = client.post_form("/manage/integrations/klaviyo/connect")
    assert start.status_code == 302, start.status_code
    authorize_url = start.headers["Location"]
    consent = requests.get(authorize_url, timeout=5)
    assert consent.status_code == 200, consent.text[:300]
    form = parse_consent_form(consent.text)
    decided = requests.post(f"{sandbox_url}/oauth/authorize", allow_redirects=False, timeout=5,
                            data={"nonce": form["nonce"], "decision": decision, "account_id": form["account_ids"][0]})
    assert decided.status_code in (302, 303), decided.text[:300]
    back = urlsplit(decided.headers["Location"])
    return client.get(f"{back.path}?{back.query}")


@pytest.fixture
def connected(client, organizer, sandbox):
    """The logged-in organizer, connected to the sandbox's Klaviyo account."""
    response = oauth_connect(client, sandbox.url)
    assert response.status_code == 303
    return organizer


@pytest.fixture
def make_event(app):
    """A live event with ticket types, owned by an organizer; returns its id."""
    from datetime import datetime, timezone
    from decimal import Decimal

    from portal.events.models import Event, TicketType
    from portal.extensions import db

    def make(organizer_id, name="Summer Music Festival 2026", status="live", types=None, capacity=100):
        with app.app_context():
            event = Event(organizer_id=organizer_id, name=name, venue="Central Park, New York",
                          timezone="America/New_York", starts_at=datetime(2026, 7, 15, 18, tzinfo=timezone.utc),
                          ends_at=datetime(2026, 7, 15, 23, tzinfo=timezone.utc), currency="USD", status=status)
            for type_name, price, fee in types or [("General Admission", "75.00", "5.00"), ("VIP", "150.00", "10.00")]:
                event.ticket_types.append(TicketType(name=type_name, price=Decimal(price), fee=Decimal(fee),
                                                     capacity=capacity))
            db.session.add(event)
            db.session.commit()
            return event.id

    return make


def sandbox_events(sandbox_url: str, metric: str | None = None) -> list[dict]:
    params = {"metric": metric} if metric else {}
    response = requests.get(f"{sandbox_url}/_sandbox/events.json", params=params, timeout=5)
    response.raise_for_status()
    body = response.json()
    return body["events"] if isinstance(body, dict) else body


def sandbox_received(sandbox_url: str) -> dict[str, int]:
    """How many times the sandbox received each unique_id: what was sent, the repeats it dropped included."""
    received: dict[str, int] = {}
    for event in sandbox_events(sandbox_url):
        received[event["unique_id"]] = received.get(event["unique_id"], 0) + event["times_received"]
    return received


def sync_settled(app) -> bool:
    """Nothing is left to send: no outbox row pending or claimed, no rq job queued, no live worker busy."""
    from rq import Worker
    from sqlalchemy import func, select

    from portal.extensions import db
    from portal.sync.models import CLAIMED, PENDING, OutboxEvent
    from portal.sync.queue import queue

    def alive(pid):  # a killed worker stays listed as busy until its key expires
        try:
            os.kill(pid, 0)
        except (ProcessLookupError, TypeError):
            return False
        return True

    with app.app_context():  # a fresh session each call, so every poll sees the worker's latest commits
        active = db.session.scalar(select(func.count()).select_from(OutboxEvent)
                                   .where(OutboxEvent.status.in_((PENDING, CLAIMED))))
        db.session.rollback()
        jobs = queue()
        # Read in the order a job moves (queued, taken, running), so none slips past between two reads.
        return (active == 0 and jobs.count == 0 and not jobs.connection.llen(jobs.intermediate_queue_key)
                and not any(w.get_state() == "busy" and alive(w.pid) for w in Worker.all(queue=jobs)))


class Worker:
    """A real `python worker.py` process against the tests' database, Redis and sandbox."""

    def __init__(self, env: dict, log_path: Path):
        self.env = env
        self.log_path = log_path
        self.proc = None

    def start(self):
        self.proc = processes.start_worker(self.env, self.log_path)
        return self

    def kill(self, sig=signal.SIGKILL):
        """Send sig to the worker (SIGKILL: a crash) and wait until it has gone."""
        if self.proc and self.proc.poll() is None:
            processes.signal_group(self.proc.pid, sig)
            self.proc.wait(10)

    def stop(self):
        """SIGTERM (rq's warm shutdown), SIGKILL after 10 s."""
        processes.stop(self.proc)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def worker_env(database_url, redis_url, sandbox_url, **extra) -> dict:
    return processes.child_env({
        "DATABASE_URL": database_url, "REDIS_URL": redis_url, "SECRET_KEY": "test-secret-key",
        "TOKEN_ENCRYPTION_KEY": TOKEN_KEY, "PUBLIC_BASE_URL": PUBLIC_BASE,
        "KLAVIYO_CLIENT_ID": "sandbox-client-id", "KLAVIYO_CLIENT_SECRET": "sandbox-client-secret",
        "KLAVIYO_OAUTH_BASE": sandbox_url, "KLAVIYO_API_BASE": sandbox_url, "KLAVIYO_TIMEOUT": "5",
        "RETRY_BASE_SECONDS": "0.2", "SWEEP_INTERVAL_SECONDS": "1", **extra,
    })


@pytest.fixture
def start_worker(app, database_url, sandbox, tmp_path):
    """Start real worker processes (a factory: call it once per worker). All are stopped afterwards."""
    workers = []

    def start(redis_url=None, **extra):
        env = worker_env(database_url, redis_url or app.config["REDIS_URL"], sandbox.url, **extra)
        worker = Worker(env, tmp_path / f"worker-{len(workers)}.log").start()
        workers.append(worker)
        return worker

    yield start
    processes.stop(*(worker.proc for worker in workers))  # all at once: each takes a moment to shut down


def wait_for(predicate, timeout=20.0, interval=0.05, message="condition"):
    """Call predicate until it returns something true, and return that; fail after timeout seconds.

    Every poll ends the database transaction it read in (when an app context is active), so the next poll
    sees what the workers committed meanwhile: in SQLite's WAL mode a session that keeps one read transaction
    open never sees a later commit, and its identity map would keep showing the old rows anyway.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            last = predicate()
        finally:
            _end_transaction()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message} (last: {last!r})")
        time.sleep(interval)


def _end_transaction() -> None:
    from flask import has_app_context

    if has_app_context():
        from portal.extensions import db

        db.session.rollback()


@pytest.fixture(autouse=True)
def _fast_password_hashing(monkeypatch):
    """scrypt is slow on purpose; the tests that don't check hashing itself use a cheap pbkdf2."""
    from werkzeug import security

    import portal.auth.models as auth_models

    monkeypatch.setattr(auth_models, "generate_password_hash",
                        lambda password: security.generate_password_hash(password, "pbkdf2:sha256:1000"))
