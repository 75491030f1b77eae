"""Shared fixtures: a real Redis, a real database (SQLite or PostgreSQL), the Klaviyo sandbox over HTTP,
the app and its test client, and a real rq worker process.

Set TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test to run on PostgreSQL.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import requests
from cryptography.fernet import Fernet
from flask.testing import FlaskClient
from sqlalchemy import text

ROOT = Path(__file__).resolve().parent.parent
TOKEN_KEY = Fernet.generate_key().decode()
CALLBACK = "/manage/integrations/klaviyo/callback"
PUBLIC_BASE = "http://localhost"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server of the tests' own, on a free port, that a test may stop and start again."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = None

    def start(self):
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: run .ci/run (it installs it) or apt-get install redis-server")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.dir), "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while time.time() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self):
        if self.proc:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory):
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'portal.db'}"
    return url


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory):
    from portal.sandbox.server import start_in_thread

    server = start_in_thread({
        "SANDBOX_DB": str(tmp_path_factory.mktemp("sandbox") / "sandbox.db"),
        "SANDBOX_REDIRECT_URIS": [PUBLIC_BASE + CALLBACK, "http://127.0.0.1:5000" + CALLBACK],
    })
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


@pytest.fixture
def app(migrated, database_url, redis_server, sandbox):
    from portal import create_app
    from portal.extensions import db

    app = create_app(base_config(database_url, redis_server.url, sandbox.url))
    app.test_client_class = PortalClient
    with app.app_context():
        _empty_tables(db)
    requests.post(f"{sandbox.url}/_sandbox/reset", timeout=5).raise_for_status()
    import redis

    redis.Redis.from_url(redis_server.url).flushdb()
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def _empty_tables(db):
    tables = list(reversed(db.metadata.sorted_tables))
    with db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("TRUNCATE " + ", ".join(t.name for t in tables) + " RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                conn.execute(table.delete())


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


class Worker:
    """A real `python worker.py` process against the tests' database, Redis and sandbox."""

    def __init__(self, env: dict, log_path: Path):
        self.env = env
        self.log_path = log_path
        self.proc = None

    def start(self):
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, str(ROOT / "worker.py")], cwd=ROOT, env=self.env,
                                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def kill(self, sig=signal.SIGKILL):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(10)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def worker_env(database_url, redis_url, sandbox_url, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KLAVIYO_", "DATABASE_URL", "REDIS_URL"))}
    env.update({
        "DATABASE_URL": database_url, "REDIS_URL": redis_url, "SECRET_KEY": "test-secret-key",
        "TOKEN_ENCRYPTION_KEY": TOKEN_KEY, "PUBLIC_BASE_URL": PUBLIC_BASE,
        "KLAVIYO_CLIENT_ID": "sandbox-client-id", "KLAVIYO_CLIENT_SECRET": "sandbox-client-secret",
        "KLAVIYO_OAUTH_BASE": sandbox_url, "KLAVIYO_API_BASE": sandbox_url, "KLAVIYO_TIMEOUT": "5",
        "RETRY_BASE_SECONDS": "0.2", "SWEEP_INTERVAL_SECONDS": "1", "PYTHONUNBUFFERED": "1",
    })
    env.update({k: str(v) for k, v in extra.items()})
    return env


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
    for worker in workers:
        worker.stop()


def wait_for(predicate, timeout=20.0, interval=0.1, message="condition"):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {message} (last: {last!r})")


@pytest.fixture(autouse=True)
def _fast_password_hashing(monkeypatch):
    """scrypt is slow on purpose; the tests that don't check hashing itself use a cheap pbkdf2."""
    from werkzeug import security

    import portal.auth.models as auth_models

    monkeypatch.setattr(auth_models, "generate_password_hash",
                        lambda password: security.generate_password_hash(password, "pbkdf2:sha256:1000"))
