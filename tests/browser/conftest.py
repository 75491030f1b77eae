"""Browser fixtures: the real portal over HTTP for Debian's Chromium, driven by Playwright (sync API).

- `live` (per test): a threaded Werkzeug server (started once per session) running `create_app(...)` with the
  `app` fixture's configuration (tests/conftest.py `base_config`: the tests' database, Redis and Klaviyo
  sandbox) but PUBLIC_BASE_URL set to the server's own URL. The `app` fixture has emptied the tables, reset
  the sandbox and flushed Redis; the sandbox knows the server's OAuth callback as a registered redirect URI.
- `browser` (session) and `page` (per test, 1280x900, its own cookies). Uncaught page errors fail the test.

Playwright never downloads a browser here: it launches /usr/bin/chromium.
"""
import re

import pytest
import requests
from playwright.sync_api import expect, sync_playwright

from devtools.processes import CALLBACK_PATH, PortalThread

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
PASSWORD = "correct horse battery"
EMAIL = "ada@organizer.example"

expect.set_options(timeout=10_000)


class LiveServer(PortalThread):
    """The portal over real HTTP in a background thread. `url` is also the app's PUBLIC_BASE_URL."""

    def __init__(self, config: dict):
        from portal import create_app

        super().__init__()
        self.start(create_app({**config, "PUBLIC_BASE_URL": self.url}))

    @property
    def callback(self) -> str:
        return self.url + CALLBACK_PATH


def register_redirect_uri(sandbox_url: str, uri: str) -> None:
    """Add a redirect URI to the sandbox's OAuth app at run time (POST /_sandbox/config)."""
    response = requests.post(f"{sandbox_url}/_sandbox/config", json={"redirect_uris": [uri]}, timeout=5)
    response.raise_for_status()
    assert uri in response.json()["redirect_uris"]


@pytest.fixture(scope="session")
def _live_servers():
    servers = []
    yield servers
    for server in servers:
        server.shutdown()


@pytest.fixture
def live(app, sandbox, _live_servers):
    """The live portal for one test, on empty tables (`app` empties them, resets the sandbox, flushes Redis).

    The server is started once per session, with the `app` fixture's own configuration (the same database,
    Redis, sandbox and token encryption key as the test client and `start_worker`) and its own
    PUBLIC_BASE_URL, so the OAuth redirect URI is the one the browser really comes back to.
    """
    if not _live_servers:
        _live_servers.append(LiveServer(dict(app.config)))
    server = _live_servers[0]
    register_redirect_uri(sandbox.url, server.callback)  # every test: a reset may restore the startup config
    return server


@pytest.fixture(scope="session")
def playwright_instance():
    with sync_playwright() as playwright:
        yield playwright


@pytest.fixture(scope="session")
def browser(playwright_instance):
    browser = playwright_instance.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture
def page(request, browser, live, tmp_path):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, base_url=live.url)
    context.set_default_timeout(10_000)
    page = context.new_page()
    errors, server_errors = [], []
    page.on("pageerror", lambda error: errors.append(str(error)))
    # A page that breaks its own Content-Security-Policy (an inline script or style) fails the test too.
    page.on("console", lambda message: errors.append(message.text)
            if message.type == "error" and "Content Security Policy" in message.text else None)
    page.on("response", lambda r: server_errors.append(f"{r.status} {r.request.method} {r.url}")
            if r.status >= 500 else None)
    yield page
    report = getattr(request.node, "report_call", None)
    if report is not None and report.failed:
        if server_errors:
            print("\nserver errors the browser saw:\n  " + "\n  ".join(server_errors))
        shot = tmp_path / "failure.png"
        try:
            page.screenshot(path=str(shot), full_page=True)
            print(f"\nscreenshot of the page at the failure ({page.url}): {shot}")
        except Exception as exc:  # noqa: BLE001 - the failure itself matters more
            print(f"\nno screenshot: {exc}")
    context.close()
    assert not errors, f"uncaught JavaScript errors in the page: {errors}"


@pytest.fixture
def log_in(live):
    """Log in through the real form, as an organizer would."""

    def do(page, email=EMAIL, password=PASSWORD):
        page.goto("/auth/login")
        page.get_by_label("E-mail").fill(email)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("navigation", name="Main")).to_be_visible()
        expect(page).not_to_have_url(re.compile(r"/auth/login"))

    return do
