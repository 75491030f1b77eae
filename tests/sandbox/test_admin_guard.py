"""The sandbox's admin endpoints answer this machine's own tools, not a web page: over real HTTP, a cross-site
form post cannot reset it, a page reaching it under a foreign name (DNS rebinding) gets nothing, and the sandbox
will not listen beyond loopback."""
import subprocess
import sys

import pytest
import requests

from devtools.processes import ROOT, free_port
from portal.sandbox.server import start_in_thread

EVIL = "https://evil.example"


@pytest.fixture
def served(db_path):
    server = start_in_thread({"SANDBOX_DB": db_path})
    yield server
    server.shutdown()


def active_faults(url) -> list:
    return requests.get(f"{url}/_sandbox/faults", timeout=5).json()["active"]


def add_fault(url):
    response = requests.post(f"{url}/_sandbox/faults", json={"status": 503, "count": 1}, timeout=5)
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("how", [
    {"data": {"restore_config": "1"}, "headers": {"Origin": EVIL}},  # an HTML form on another site
    {"data": {"restore_config": "1"}},  # a form whose browser sent no Origin
    {"data": "{}", "headers": {"Content-Type": "text/plain", "Origin": EVIL}},  # fetch(..., {mode: "no-cors"})
    {"data": "{}", "headers": {"Content-Type": "text/plain"}},
    {"headers": {"Origin": EVIL, "Sec-Fetch-Site": "cross-site"}},  # no body at all, from another site
    {"headers": {"Sec-Fetch-Site": "cross-site"}},
    {"headers": {"Origin": "null"}},  # a sandboxed iframe, a redirect chain
])
def test_a_web_page_cannot_reset_the_sandbox(served, how):
    add_fault(served.url)
    response = requests.post(f"{served.url}/_sandbox/reset", timeout=5, **how)
    assert response.status_code in (403, 415), response.text
    assert "error" in response.json()
    assert len(active_faults(served.url)) == 1, "the sandbox was reset"


def test_json_from_another_origin_is_refused_too(served):
    response = requests.post(f"{served.url}/_sandbox/faults", json={"status": 503}, timeout=5,
                             headers={"Origin": EVIL})
    assert response.status_code == 403
    assert active_faults(served.url) == []
    response = requests.delete(f"{served.url}/_sandbox/faults", timeout=5, headers={"Origin": EVIL})
    assert response.status_code == 403


@pytest.mark.parametrize("method, path", [("GET", "/_sandbox/events.json"), ("GET", "/_sandbox/config"),
                                          ("POST", "/_sandbox/reset"), ("DELETE", "/_sandbox/faults")])
def test_a_foreign_host_header_is_refused(served, method, path):
    """A page on evil.example whose name was rebound to 127.0.0.1 sends Host: evil.example:port."""
    add_fault(served.url)
    response = requests.request(method, served.url + path, timeout=5,
                                headers={"Host": f"evil.example:{served.port}"})
    assert response.status_code == 403, response.text
    assert "loopback" in response.json()["error"]
    assert len(active_faults(served.url)) == 1


def test_local_tools_keep_working(served):
    """What the tests, benchmarks and scripts send: JSON or no body, no Origin; or the sandbox's own origin."""
    add_fault(served.url)
    assert requests.post(f"{served.url}/_sandbox/reset", timeout=5).status_code == 200
    assert active_faults(served.url) == []
    add_fault(served.url)
    same_origin = {"Origin": served.url, "Sec-Fetch-Site": "same-origin"}
    assert requests.delete(f"{served.url}/_sandbox/faults", timeout=5, headers=same_origin).status_code == 200
    assert active_faults(served.url) == []
    config = requests.post(f"{served.url}/_sandbox/config", json={"access_token_lifetime": 60}, timeout=5,
                           headers={"Host": f"localhost:{served.port}"})
    assert config.status_code == 200 and config.json()["access_token_lifetime"] == 60
    assert requests.get(f"{served.url}/_sandbox/stats", timeout=5).status_code == 200
    # The received-events page and the OAuth pages are not admin endpoints: a browser uses them as before.
    assert requests.get(f"{served.url}/", timeout=5).status_code == 200


@pytest.mark.parametrize("module", ["portal.sandbox", "devtools.sandbox"])
def test_the_sandbox_will_not_listen_beyond_loopback(module):
    result = subprocess.run([sys.executable, "-m", module, "--host", "0.0.0.0", "--port", str(free_port())],
                            cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "loopback only" in result.stderr and "Traceback" not in result.stderr
