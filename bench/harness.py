"""What every benchmark sets up for itself, in a temp dir: its own redis-server on a free port, a database
(SQLite by default, or PostgreSQL with --database-url), the Klaviyo sandbox in its own process with Klaviyo's
real rate limits on, an app, organizers connected through the real OAuth flow, and real worker processes.

Nothing here touches the machine's shared Redis on 6379: the Redis is always our own, and the PostgreSQL
database named in --database-url is emptied (its public schema dropped, then migrated up) before use, so
point it at a database made for benchmarks (e.g. `createdb -h 127.0.0.1 -U postgres bench`; it is created
when missing).
"""
from __future__ import annotations

import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402

from devtools import processes  # noqa: E402
from devtools.processes import RedisServer, free_port  # noqa: E402, F401 - free_port: for the benchmarks

PY = sys.executable
CALLBACK = "/manage/integrations/klaviyo/callback"
PUBLIC_BASE = "http://localhost"
SECRET_KEY = "bench-secret-key-" + "x" * 32
TOKEN_KEY = Fernet.generate_key().decode()
PASSWORD = "correct horse battery"

# Klaviyo's published limits (per installation), the ones the sandbox enforces.
BULK_BURST, BULK_STEADY, BULK_MAX_EVENTS = 10, 150, 1000
SINGLE_BURST, SINGLE_STEADY = 350, 3500


# Two Klaviyo accounts in the sandbox: one for our portal's organizer, one for the SDK baseline, so that the
# baseline's events neither share a rate-limit bucket nor collide with ours in the sandbox's dedup.
SANDBOX_ACCOUNTS = [
    {"id": "SBX01HXYZ", "organization_name": "Sandbox Festival Co.", "public_api_key": "SbX123"},
    {"id": "SBX02BASE", "organization_name": "Baseline Loop Co.", "public_api_key": "SbX456"},
]


def percentile(values, p: float) -> float:
    """Nearest-rank percentile (p in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summary_ms(values_s) -> str:
    ms = [v * 1000 for v in values_s]
    return (f"n={len(ms)} p50={percentile(ms, 50):.1f} ms  p90={percentile(ms, 90):.1f} ms  "
            f"p99={percentile(ms, 99):.1f} ms  mean={statistics.fmean(ms):.1f} ms  max={max(ms):.1f} ms")


def bulk_floor_seconds(events: int, burst: int = BULK_BURST, steady: int = BULK_STEADY,
                       per_request: int = BULK_MAX_EVENTS) -> tuple[int, float]:
    """The rate-limit floor for sending `events` through Bulk Create: R = ceil(events / 1000) requests; with
    fixed 1 s windows of `burst` and 60 s windows of `steady`, request k (0-based) can go no earlier than
    60*floor(k/steady) + floor((k mod steady)/burst) seconds after the first, so the floor is the time until the
    last window opens, plus that window's full second: 60*floor((R-1)/steady) + ceil(((R-1) mod steady + 1)/burst).
    E.g. 42,500 events -> 43 requests -> 5 s (10+10+10+10+3 in 5 one-second windows)."""
    r = math.ceil(events / per_request)
    if r == 0:
        return 0, 0.0
    k = r - 1
    return r, 60 * (k // steady) + math.ceil(((k % steady) + 1) / burst)


def single_floor_seconds(events: int) -> float:
    """The floor for one Create Event call per event: 350/s and 3,500/min fixed windows."""
    return bulk_floor_seconds(events, SINGLE_BURST, SINGLE_STEADY, 1)[1]


def proc_status(pid: int) -> dict:
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                out[key] = int(value.split()[0]) / 1024  # MB
    except OSError:
        pass
    return out


def children_of(pid: int) -> list[int]:
    kids = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


class Sandbox:
    """The sandbox in its own process (devtools/sandbox.py) with SANDBOX_ACCOUNTS, real rate limits on."""

    def __init__(self, directory: Path):
        self.dir, self.port = directory, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self):
        self.proc = processes.start_sandbox_process(self.port, {
            "SANDBOX_DB": str(self.dir / "sandbox.db"), "SANDBOX_REDIRECT_URIS": [PUBLIC_BASE + CALLBACK],
            "SANDBOX_ACCOUNTS": SANDBOX_ACCOUNTS, "SANDBOX_ENFORCE_RATE_LIMITS": True}, self.dir / "sandbox.log")
        config = requests.post(f"{self.url}/_sandbox/config", json={"enforce_rate_limits": True}, timeout=10)
        config.raise_for_status()
        assert config.json()["enforce_rate_limits"] is True
        self.limits = config.json()["rate_limits"]
        return self

    def stats(self) -> dict:
        r = requests.get(f"{self.url}/_sandbox/stats", timeout=30)
        r.raise_for_status()
        return r.json()

    def accepted(self) -> int:
        return self.stats()["accepted"]["total"]

    def events(self, **params) -> list[dict]:
        r = requests.get(f"{self.url}/_sandbox/events.json", params=params, timeout=120)
        r.raise_for_status()
        return r.json()["events"]

    def requests_log(self, since: float = 0.0, **params) -> list[dict]:
        r = requests.get(f"{self.url}/_sandbox/requests", params={"since": since, "limit": 100000, **params},
                         timeout=60)
        r.raise_for_status()
        return r.json()["requests"]

    def stop(self):
        processes.stop(self.proc)


def ensure_postgres_database(url: str) -> None:
    """Create the database named in a postgresql+psycopg:// URL when it does not exist."""
    import psycopg

    parts = urlsplit(url.replace("postgresql+psycopg://", "postgresql://"))
    name = parts.path.lstrip("/")
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')


class Stack:
    """Redis + database + sandbox + app, in a temp dir; organizers connected through the real OAuth flow."""

    def __init__(self, name: str, database_url: str | None = None, keep: bool = False, **config):
        self.tmp = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        self.keep = keep
        self.database_url = database_url or f"sqlite:///{self.tmp / 'portal.db'}"
        self.extra_config = config
        self.workers: list[subprocess.Popen] = []
        self.redis = self.sandbox = self.app = None

    @property
    def db_label(self) -> str:
        return "PostgreSQL" if self.database_url.startswith("postgresql") else "SQLite"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.close()

    def config(self) -> dict:
        return {
            "SECRET_KEY": SECRET_KEY, "TOKEN_ENCRYPTION_KEY": TOKEN_KEY,
            "SQLALCHEMY_DATABASE_URI": self.database_url, "REDIS_URL": self.redis.url,
            "PUBLIC_BASE_URL": PUBLIC_BASE, "KLAVIYO_CLIENT_ID": "sandbox-client-id",
            "KLAVIYO_CLIENT_SECRET": "sandbox-client-secret", "KLAVIYO_OAUTH_BASE": self.sandbox.url,
            "KLAVIYO_API_BASE": self.sandbox.url, "KLAVIYO_SANDBOX_URL": self.sandbox.url,
            "SESSION_COOKIE_SECURE": False, **self.extra_config,
        }

    def env(self, **extra) -> dict:
        """The environment of a worker or gunicorn process: same database, Redis, sandbox and secrets."""
        return processes.child_env({
            "DATABASE_URL": self.database_url, "REDIS_URL": self.redis.url, "SECRET_KEY": SECRET_KEY,
            "TOKEN_ENCRYPTION_KEY": TOKEN_KEY, "PUBLIC_BASE_URL": PUBLIC_BASE,
            "KLAVIYO_CLIENT_ID": "sandbox-client-id", "KLAVIYO_CLIENT_SECRET": "sandbox-client-secret",
            "KLAVIYO_OAUTH_BASE": self.sandbox.url, "KLAVIYO_API_BASE": self.sandbox.url,
            "KLAVIYO_SANDBOX_URL": self.sandbox.url,
            **{k: v for k, v in self.extra_config.items() if k.isupper()}, **extra,
        })

    def start(self):
        self.redis = RedisServer(self.tmp).start()
        self.sandbox = Sandbox(self.tmp).start()
        if self.database_url.startswith("postgresql"):
            ensure_postgres_database(self.database_url)
        from flask_migrate import upgrade

        from portal import create_app
        from portal.extensions import db

        self.app = create_app(self.config())
        with self.app.app_context():
            if self.database_url.startswith("postgresql"):
                # Emptied whatever made it: an older commit's migrations can't downgrade a newer schema
                # (--compare runs the previous commit on the same database).
                with db.engine.begin() as conn:
                    conn.exec_driver_sql("DROP SCHEMA public CASCADE")
                    conn.exec_driver_sql("CREATE SCHEMA public")
            upgrade(directory=str(ROOT / "migrations"))
            db.engine.dispose()
        return self

    def close(self):
        self.stop_workers()
        if self.app is not None:
            from portal.extensions import db

            with self.app.app_context():
                db.session.remove()
                db.engine.dispose()
        for part in (self.sandbox, self.redis):
            if part is not None:
                part.stop()
        if not self.keep:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # --- organizers, connections, events -----------------------------------------------------------------

    def make_organizer(self, email: str, name: str = "Bench Events") -> int:
        from portal.auth.models import Organizer
        from portal.extensions import db

        with self.app.app_context():
            organizer = Organizer(name=name, email=email)
            organizer.set_password(PASSWORD)
            db.session.add(organizer)
            db.session.commit()
            return organizer.id

    def logged_in_client(self, email: str):
        client = self.app.test_client()
        response = client.post("/auth/login", data={"csrf_token": _csrf_token(client), "email": email,
                                                    "password": PASSWORD})
        assert response.status_code == 303, response.status_code
        client.csrf = _csrf_token(client)  # logging in starts a new session, with a new token
        return client

    def connect(self, email: str, account_index: int = 0) -> int:
        """Create an organizer and walk the real OAuth flow: portal -> sandbox consent -> portal callback."""
        from portal.sandbox.server import parse_consent_form

        organizer_id = self.make_organizer(email)
        client = self.logged_in_client(email)
        start = client.post("/manage/integrations/klaviyo/connect", data={"csrf_token": client.csrf})
        assert start.status_code == 302, start.status_code
        consent = requests.get(start.headers["Location"], timeout=10)
        consent.raise_for_status()
        form = parse_consent_form(consent.text)
        decided = requests.post(f"{self.sandbox.url}/oauth/authorize", allow_redirects=False, timeout=10,
                                data={"nonce": form["nonce"], "decision": "allow",
                                      "account_id": form["account_ids"][account_index]})
        assert decided.status_code in (302, 303), decided.text[:300]
        back = urlsplit(decided.headers["Location"])
        done = client.get(f"{back.path}?{back.query}")
        assert done.status_code == 303, done.status_code
        from portal.sync.connection import connection_for

        with self.app.app_context():
            connection = connection_for(organizer_id)
            assert connection is not None and connection.status == "connected", connection
        return organizer_id

    def access_token(self, organizer_id: int) -> str:
        from portal.crypto import decrypt
        from portal.sync.connection import connection_for

        with self.app.app_context():
            return decrypt(connection_for(organizer_id).access_token_enc)

    def make_event(self, organizer_id: int, capacity: int = 1_000_000) -> int:
        from portal.events.models import Event, TicketType
        from portal.extensions import db

        with self.app.app_context():
            event = Event(organizer_id=organizer_id, name="Summer Music Festival 2026", venue="Central Park, New York",
                          timezone="America/New_York", starts_at=datetime(2027, 7, 15, 18, tzinfo=timezone.utc),
                          ends_at=datetime(2027, 7, 15, 23, tzinfo=timezone.utc), currency="USD", status="live")
            for type_name, price, fee in (("General Admission", "75.00", "5.00"), ("VIP", "150.00", "10.00")):
                event.ticket_types.append(TicketType(name=type_name, price=Decimal(price), fee=Decimal(fee),
                                                     capacity=capacity))
            db.session.add(event)
            db.session.commit()
            return event.id

    # --- workers ------------------------------------------------------------------------------------------

    def start_workers(self, count: int, profile: bool = False, **extra) -> list[subprocess.Popen]:
        """Start `count` real `python worker.py` processes. With profile, each runs under pyinstrument and
        writes its profile to worker-N.profile.txt in the temp dir when it stops (SIGTERM: rq's warm shutdown)."""
        for _ in range(count):
            n = len(self.workers)
            wrapper = []
            if profile:
                wrapper = ["-m", "pyinstrument", "--interval", "0.001", "-r", "text",
                           "-o", str(self.tmp / f"worker-{n}.profile.txt")]
            self.workers.append(processes.start_worker(self.env(**extra), self.tmp / f"worker-{n}.log", wrapper))
        return self.workers

    def worker_memory(self) -> list[dict]:
        """Peak (VmHWM) and current RSS of each worker process and of its children (rq's scheduler)."""
        out = []
        for proc in self.workers:
            entry = {"pid": proc.pid, **proc_status(proc.pid)}
            entry["children"] = [{"pid": c, **proc_status(c)} for c in children_of(proc.pid)]
            out.append(entry)
        return out

    def stop_workers(self):
        processes.stop(*self.workers, timeout=15)
        self.workers = []

    def worker_logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.tmp.glob("worker-*.log")))


def _csrf_token(client) -> str:
    html = client.get("/auth/login").get_data(as_text=True)
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html) or re.search(r'"X-CSRFToken": "([^"]+)"', html)
    return match.group(1)


def typical_order(event, index: int, types):
    """A typical purchase: the purchaser's own ticket plus one guest with her own e-mail, and every fourth
    order a third ticket (VIP) for the purchaser too. So 4 events (Placed Order, 2 Ordered Experience,
    1 Registered Attendee), or 5 with the third ticket. Addresses avoid the test domains Klaviyo drops."""
    from portal.orders.service import AttendeeInput, OrderInput

    general, vip = types
    first, last, email = "Pat", f"Buyer{index}", f"pat.buyer{index}@fans-mail.net"
    phone = f"+1 212 555 01{index % 100:02d}"
    lines = [(general, AttendeeInput(first, last, email, phone)),
             (general, AttendeeInput("Sam", f"Guest{index}", f"sam.guest{index}@fans-mail.net", None))]
    if index % 4 == 3:
        lines.append((vip, AttendeeInput(first, last, email, phone)))
    return OrderInput(first_name=first, last_name=last, email=email, phone=phone, lines=lines)


def checkout_form(types: list[int], index: int, prefix: str = "") -> dict:
    """The same typical purchase as a posted Event Page form (form_token added by the caller)."""
    general, vip = types
    key = f"{prefix}{index}"
    form = {"first_name": "Pat", "last_name": f"Buyer{key}", "email": f"pat.buyer{key}@fans-mail.net",
            "phone": f"+1 212 555 01{index % 100:02d}", f"qty-{general}": "2", f"qty-{vip}": "0",
            "attendee-0-same": "1", "attendee-1-first_name": "Sam", "attendee-1-last_name": f"Guest{key}",
            "attendee-1-email": f"sam.guest{key}@fans-mail.net"}
    if index % 4 == 3:
        form[f"qty-{vip}"] = "1"
        form["attendee-2-same"] = "1"
    return form


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), Python {sys.version.split()[0]}"


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().split(" ", 3)[:3].__str__()
    except OSError:
        return "?"


CLK_TCK = os.sysconf("SC_CLK_TCK")


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children_of(p)
    return out


def _jiffies(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0


def _machine_busy() -> int:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values[:8]) - idle


def pids_named(fragment: str) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if fragment in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    out.append(int(entry.name))
            except OSError:
                pass
    return out


class CpuMeter:
    """Where the machine's CPU went during a phase: per group of our processes (each with its children),
    our own reaped children (e.g. wrk), and everything else on the machine (other sessions' work)."""

    def __init__(self, groups: dict):
        self.groups = groups  # name -> callable returning root pids

    def _sample(self) -> dict:
        return {name: {p: _jiffies(p) for root in roots() for p in _tree(root)} for name, roots in self.groups.items()}

    def __enter__(self):
        import resource

        self.t0 = time.time()
        self.busy0 = _machine_busy()
        self.children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.self0 = resource.getrusage(resource.RUSAGE_SELF)
        self.s0 = self._sample()
        return self

    def __exit__(self, *exc):
        import resource

        s1 = self._sample()
        elapsed = time.time() - self.t0
        busy = (_machine_busy() - self.busy0) / CLK_TCK
        self.cores = {}
        for name in self.groups:
            before, after = self.s0[name], s1[name]
            j = sum(after[p] - before.get(p, 0) for p in after)
            self.cores[name] = j / CLK_TCK / elapsed
        c1, r1 = resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF)
        self.cores["load generator (reaped children)"] = (c1.ru_utime + c1.ru_stime - self.children0.ru_utime
                                                          - self.children0.ru_stime) / elapsed
        self.cores["bench process"] = (r1.ru_utime + r1.ru_stime - self.self0.ru_utime - self.self0.ru_stime) / elapsed
        self.machine = busy / elapsed
        self.cores["other processes on the machine"] = max(self.machine - sum(self.cores.values()), 0.0)
        self.elapsed = elapsed

    def report(self) -> str:
        parts = ", ".join(f"{name} {value:.2f}" for name, value in self.cores.items() if value >= 0.005)
        return f"CPU in cores (of {os.cpu_count()}), machine busy {self.machine:.2f}: {parts}"


def wait_for_quiet(max_wait: float = 120.0, threshold: float = 0.35, window: float = 2.0) -> str:
    """Wait (up to max_wait s) until the machine's other work uses under `threshold` cores over `window` s:
    other sessions' test suites share these 2 cores, and a benchmark that starts under their load measures them."""
    started = time.time()
    busy = 0.0
    while True:
        b0 = _machine_busy()
        time.sleep(window)
        busy = (_machine_busy() - b0) / CLK_TCK / window
        if busy < threshold or time.time() - started > max_wait:
            break
    waited = time.time() - started - window
    return f"machine busy {busy:.2f} cores before the start" + (f" (waited {waited:.0f} s for quiet)" if waited > 1 else "")


def log_problems(text: str) -> dict:
    """Counts of error lines in worker logs (tracebacks, SQLite lock timeouts, failed jobs)."""
    return {k: v for k, v in {
        "tracebacks": text.count("Traceback"),
        "database is locked": text.count("database is locked"),
        "job failures": sum(1 for line in text.splitlines() if "rq.worker ERROR" in line or "Moving job to FailedJobRegistry" in line),
    }.items() if v}


def run_on_commit(module: str, rev: str, options: list[str], database_url: str | None = None,
                  timeout: float = 3600) -> dict:
    """The same benchmark on another commit, for the side-by-side figures: export it (bench/snapshot.sh, read-only
    for the repo; or a directory exported already), run `python -m <module> --json --compare none <options>` there
    in its own process, after this one's run, and return the figures it prints as JSON on its last line."""
    if Path(rev).is_dir():
        directory = rev
    else:
        directory = subprocess.run([str(ROOT / "bench" / "snapshot.sh"), rev], check=True, capture_output=True,
                                   text=True, cwd=ROOT).stdout.strip().splitlines()[-1]
    command = [sys.executable, "-m", module, "--json", "--compare", "none", *options]
    if database_url:
        command += ["--database-url", database_url]
    done = subprocess.run(command, cwd=directory, capture_output=True, text=True, timeout=timeout)
    if done.returncode:
        raise SystemExit(f"the run on {rev} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])

