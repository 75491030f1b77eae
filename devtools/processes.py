"""Start and stop what the portal runs on: free ports, a private redis-server, the Klaviyo sandbox, `worker.py`
processes and the portal itself; wait until they answer; stop them again.

The run command (devtools/run.py), the tests, the benchmarks and scripts/screenshots.py all use this module.
Every child starts in the project root in a process group of its own, so that stopping it also stops what it
started (gunicorn's workers, say) and a Ctrl-C in the terminal reaches only the parent, which stops the rest.
"""
from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
CALLBACK_PATH = "/manage/integrations/klaviyo/callback"
REDIS_SEARCH_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/opt/homebrew/bin"
# What a child must get from its caller only, never from the shell that started the caller.
PORTAL_SETTINGS = ("KLAVIYO_", "DATABASE_URL", "REDIS_URL", "PORTAL_")

Output = Path | int | None  # a log file to append to, subprocess.PIPE (stderr joins stdout), or None: nowhere


class ProcessExited(RuntimeError):
    """A process stopped while we were waiting for something."""

    def __init__(self, proc: subprocess.Popen, what: str):
        super().__init__(f"process {proc.pid} stopped ({describe_exit(proc.returncode)}) while waiting for {what}")
        self.proc = proc


# --- ports and waiting --------------------------------------------------------------------------------------

def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now (the system picks it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def port_free(host: str, port: int) -> bool:
    """Could a server listen on host:port now? A port in TIME_WAIT counts as free, as it does for the servers."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Does something accept connections on host:port?"""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def http_status(url: str, timeout: float = 2) -> int | None:
    """The HTTP status that url answers with, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        error.close()
        return error.code
    except (OSError, ValueError):
        return None


def wait_until(ready: Callable[[], Any], timeout: float, what: str, *, watch: Iterable[subprocess.Popen] = (),
               pause: Callable[[float], Any] = time.sleep, interval: float = 0.02) -> Any:
    """Call ready() until it returns something true, and return that. ProcessExited if a watched process stops
    first, TimeoutError after timeout seconds. pause(interval) runs between tries (a supervisor pumps output)."""
    watch = list(watch)
    deadline = time.monotonic() + timeout
    while True:
        result = ready()
        if result:
            return result
        for proc in watch:
            if proc.poll() is not None:
                raise ProcessExited(proc, what)
        if time.monotonic() > deadline:
            raise TimeoutError(f"gave up after {timeout:g} s waiting for {what}")
        pause(interval)


def wait_for_port(port: int, timeout: float = 15, what: str | None = None, *, host: str = "127.0.0.1",
                  watch: Iterable[subprocess.Popen] = ()) -> None:
    """Wait until something accepts connections on host:port."""
    wait_until(lambda: port_open(port, host), timeout, what or f"port {port} to accept connections", watch=watch)


def wait_for_http(url: str, timeout: float = 30, *, status: int | None = 200,
                  watch: Iterable[subprocess.Popen] = ()) -> None:
    """Wait until url answers with status (with status=None: with any status at all)."""
    def answered() -> bool:
        got = http_status(url)
        return got is not None if status is None else got == status

    wait_until(answered, timeout, f"{url} to answer" + (f" {status}" if status else ""), watch=watch)


# --- processes ----------------------------------------------------------------------------------------------

def spawn(argv: Sequence[str], env: Mapping[str, str] | None = None, output: Output = None, *,
          die_with_parent: bool = False) -> subprocess.Popen:
    """Start argv in the project root, in a process group of its own. With die_with_parent (Linux), the child
    gets SIGTERM when this process dies without stopping it (kill -9); not for callers that run threads."""
    options: dict[str, Any] = dict(cwd=ROOT, env=None if env is None else dict(env), stdin=subprocess.DEVNULL,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    if die_with_parent and _LIBC is not None:
        options["preexec_fn"] = _die_with_parent
    if isinstance(output, Path):
        with open(output, "ab") as log:
            return subprocess.Popen(list(argv), stdout=log, **options)
    return subprocess.Popen(list(argv), stdout=subprocess.DEVNULL if output is None else output, **options)


def child_env(settings: Mapping[str, Any]) -> dict[str, str]:
    """The environment for a worker or a portal process: this one's without the portal's own settings
    (KLAVIYO_*, DATABASE_URL, REDIS_URL, PORTAL_*), then the given settings as strings, unbuffered output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(PORTAL_SETTINGS)}
    env["PYTHONUNBUFFERED"] = "1"
    env.update({k: str(v) for k, v in settings.items()})
    return env


def signal_group(pid: int, signum: int) -> None:
    """Send signum to the process group led by pid, if it still exists."""
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def group_alive(pid: int) -> bool:
    """Is anything left in the process group led by pid (the leader, even unreaped, or what it started)?"""
    try:
        os.killpg(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def running(proc: subprocess.Popen) -> bool:
    """Is the process, or anything left in its group, still running?"""
    return proc.poll() is None or group_alive(proc.pid)


def stop(*procs: subprocess.Popen | None, timeout: float = 10) -> None:
    """Stop processes started by spawn, each with its whole group: SIGTERM to all of them at once, then SIGKILL
    to whatever is left after timeout seconds. (One SIGTERM only: a second one makes rq stop cold.)"""
    live = [proc for proc in procs if proc is not None and running(proc)]
    for proc in live:
        signal_group(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while any(running(proc) for proc in live) and time.monotonic() < deadline:
        time.sleep(0.01)
    for proc in live:
        if running(proc):
            signal_group(proc.pid, signal.SIGKILL)
        proc.wait()


def describe_exit(returncode: int | None) -> str:
    """'exit code 1', 'killed by SIGKILL', or 'still running'."""
    if returncode is None:
        return "still running"
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    return f"exit code {returncode}"


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux for SIGTERM when the parent dies (PR_SET_PDEATHSIG)."""
    _LIBC.prctl(1, signal.SIGTERM)


_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


# --- Redis --------------------------------------------------------------------------------------------------

def probe_redis(port: int, db: int = 0, host: str = "127.0.0.1") -> str:
    """'redis' if an open Redis answers PING and SELECT db on host:port, 'closed' if nothing listens there,
    'other' if something else does (or a Redis that wants a password)."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\nSELECT %d\r\n" % db)
            reply = b""
            while reply.count(b"\r\n") < 2:
                chunk = sock.recv(256)
                if not chunk:
                    break
                reply += chunk
    except ConnectionRefusedError:
        return "closed"
    except OSError:
        return "other"
    return "redis" if reply.startswith(b"+PONG\r\n+OK\r\n") else "other"


def redis_binary() -> str | None:
    """The system's redis-server (PATH, then the usual sbin and bin directories), or None."""
    return shutil.which("redis-server") or shutil.which("redis-server", path=REDIS_SEARCH_PATH)


def redis_command(binary: str, port: int, directory: Path, logfile: Path | None = None) -> list[str]:
    """A redis-server on 127.0.0.1:port, working in directory, persisting nothing; logging to logfile or stdout."""
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory), "--save", "",
            "--appendonly", "no", "--loglevel", "warning"]
    return argv + (["--logfile", str(logfile)] if logfile else [])


class RedisServer:
    """A redis-server of our own on a free port, with its files in directory; it may be stopped and started
    again (on the same port, so URLs stay valid)."""

    def __init__(self, directory: Path, port: int | None = None):
        self.dir = Path(directory)
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10) -> RedisServer:
        """Start it and wait until it answers PING."""
        binary = redis_binary()
        if binary is None:
            raise RuntimeError("redis-server is not installed (Debian/Ubuntu: apt-get install redis-server; "
                               "macOS: brew install redis)")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = spawn(redis_command(binary, self.port, self.dir, self.dir / "redis.log"))
        wait_until(lambda: probe_redis(self.port) == "redis", timeout, f"redis-server to answer on port {self.port}",
                   watch=[self.proc])
        return self

    def stop(self) -> None:
        stop(self.proc)
        self.proc = None


# --- the Klaviyo sandbox ------------------------------------------------------------------------------------

def sandbox_in_thread(db: Path, redirect_uris: Sequence[str], **settings: Any):
    """The sandbox served from a thread of this process (port chosen freely); .url, .shutdown(). Its
    redirect URIs are exactly these."""
    from portal.sandbox.server import start_in_thread

    return start_in_thread({"SANDBOX_DB": str(db), "SANDBOX_REDIRECT_URIS": list(redirect_uris), **settings})


def sandbox_command(host: str, port: int, db: Path, redirect_uris: Sequence[str]) -> list[str]:
    """`python -m portal.sandbox`, the sandbox's own command (it logs requests); the redirect URIs are added
    to its defaults."""
    argv = [PYTHON, "-m", "portal.sandbox", "--host", host, "--port", str(port), "--db", str(db)]
    for uri in redirect_uris:
        argv += ["--redirect-uri", uri]
    return argv


def start_sandbox_process(port: int, settings: Mapping[str, Any], output: Output = None,
                          host: str = "127.0.0.1", timeout: float = 30) -> subprocess.Popen:
    """The sandbox in a process of its own with any settings (devtools/sandbox.py, quiet), answering HTTP
    when this returns."""
    proc = spawn([PYTHON, "-m", "devtools.sandbox", "--host", host, "--port", str(port),
                  "--settings", json.dumps(dict(settings))], output=output)
    try:
        wait_for_http(f"http://{host}:{port}/", timeout, status=None, watch=[proc])
    except BaseException:
        stop(proc)
        raise
    return proc


# --- the worker and the portal ------------------------------------------------------------------------------

def worker_command(wrapper: Sequence[str] = ()) -> list[str]:
    """`python worker.py`; wrapper goes between them (e.g. ["-m", "pyinstrument", ...])."""
    return [PYTHON, *wrapper, str(ROOT / "worker.py")]


def start_worker(env: Mapping[str, str], output: Output = None, wrapper: Sequence[str] = ()) -> subprocess.Popen:
    """Start a real `python worker.py` with this environment (see child_env)."""
    return spawn(worker_command(wrapper), env, output)


def flask_command(*args: str) -> list[str]:
    """`flask --app wsgi ARGS...` (migrations, seed-demo, the reloading server)."""
    return [PYTHON, "-m", "flask", "--app", "wsgi", *args]


def portal_command(host: str, port: int, *, dev: bool = False, workers: int = 2, threads: int = 4,
                   options: Sequence[str] = ()) -> list[str]:
    """What serves the portal on host:port: gunicorn wsgi:app (options go before the app), or with dev the
    reloading `flask run --debug`."""
    if dev:
        return flask_command("run", "--debug", "--host", host, "--port", str(port))
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return [PYTHON, "-m", "gunicorn", "--workers", str(workers), "--threads", str(threads), "--bind", bind,
            *options, "wsgi:app"]


def start_portal(port: int, env: Mapping[str, str], output: Output = None, *, host: str = "127.0.0.1",
                 timeout: float = 60, **command: Any) -> subprocess.Popen:
    """Start gunicorn (portal_command's options) and wait until its /healthz answers 200."""
    proc = spawn(portal_command(host, port, **command), env, output)
    try:
        wait_for_http(f"http://{host}:{port}/healthz", timeout, watch=[proc])
    except BaseException:
        stop(proc)
        raise
    return proc


class PortalThread:
    """The portal over real HTTP from a thread of this process (werkzeug, no request log). It listens as soon
    as it is made, so the app can be created knowing its own URL; start(app) begins serving it."""

    def __init__(self, host: str = "127.0.0.1"):
        from werkzeug.serving import WSGIRequestHandler, make_server

        class Quiet(WSGIRequestHandler):
            def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
                pass

        self.app = None
        self.httpd = make_server(host, 0, self._wsgi, threaded=True, request_handler=Quiet)
        self.url = f"http://{host}:{self.httpd.server_port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="portal", daemon=True)

    def _wsgi(self, environ, start_response):
        from werkzeug.wsgi import FileWrapper

        result = self.app(environ, start_response)
        if isinstance(result, FileWrapper):
            # A file (a static one) is read at once and closed here: werkzeug's server skips close() when the
            # browser resets the connection mid-response (reading the rest of the request fails first), and the
            # open file then reaches the garbage collector: a ResourceWarning in whichever test runs then.
            try:
                return [b"".join(result)]
            finally:
                result.close()
        return result

    def start(self, app) -> PortalThread:
        self.app = app
        self.thread.start()
        return self

    def shutdown(self) -> None:
        """Stop serving, and close the app's database connections."""
        if self.thread.is_alive():
            self.httpd.shutdown()
            self.thread.join(10)
        self.httpd.server_close()
        if self.app is not None:
            from portal.extensions import db

            with self.app.app_context():
                db.engine.dispose()
