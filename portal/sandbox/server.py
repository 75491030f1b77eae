"""Run the sandbox over real HTTP in a background thread, for tests and benchmarks.

    server = start_in_thread({"SANDBOX_DB": str(tmp_path / "sandbox.db")})
    try:
        ... point the portal's Klaviyo base URL at server.url ...
    finally:
        server.shutdown()
"""

from __future__ import annotations

import re
import threading
from html import unescape
from urllib.parse import urljoin

from werkzeug.serving import WSGIRequestHandler, make_server

from portal.sandbox.app import create_sandbox_app

_NONCE_RE = re.compile(r'name="nonce" value="([^"]+)"')
_ACCOUNT_RE = re.compile(r'name="account_id" value="([^"]+)"')


class QuietHandler(WSGIRequestHandler):
    """Werkzeug's handler without the access log line for every request."""

    def log_request(self, code="-", size="-"):
        pass


def parse_consent_form(html: str) -> dict:
    """The hidden ``nonce`` and the offered ``account_ids`` of a consent page."""
    nonce = _NONCE_RE.search(html)
    if nonce is None:
        raise ValueError("not a consent page (no nonce field)")
    return {"nonce": unescape(nonce.group(1)),
            "account_ids": [unescape(a) for a in _ACCOUNT_RE.findall(html)]}


class SandboxServer:
    """A running sandbox: ``url``, ``app``, ``shutdown()`` and small HTTP helpers."""

    def __init__(self, app, httpd, thread: threading.Thread):
        self.app = app
        self._httpd = httpd
        self._thread = thread
        self.host, self.port = httpd.server_address[:2]
        self.url = f"http://{self.host}:{self.port}"

    def shutdown(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)
        self.app.extensions["klaviyo_sandbox"].close()

    def __enter__(self) -> SandboxServer:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

    # --- helpers over HTTP (requests is imported lazily: only tests need it) ---

    def _call(self, method: str, path: str, **kwargs):
        import requests

        response = requests.request(method, urljoin(self.url, path), timeout=30, **kwargs)
        response.raise_for_status()
        return response.json()

    def stats(self, since: float | None = None) -> dict:
        return self._call("GET", "/_sandbox/stats", params={"since": since} if since is not None else None)

    def events(self, metric: str | None = None, account_id: str | None = None) -> list[dict]:
        params = {k: v for k, v in (("metric", metric), ("account_id", account_id)) if v}
        return self._call("GET", "/_sandbox/events.json", params=params)["events"]

    def api_requests_after(self, ts: float, installation_id: str | None = None,
                           account_id: str | None = None) -> list[dict]:
        """API requests logged after unix time ``ts`` (optionally for one installation)."""
        params = {"since": ts}
        if installation_id:
            params["installation_id"] = installation_id
        if account_id:
            params["account_id"] = account_id
        return self._call("GET", "/_sandbox/requests", params=params)["requests"]

    def add_faults(self, *rules: dict) -> dict:
        return self._call("POST", "/_sandbox/faults", json=list(rules))

    def clear_faults(self) -> dict:
        return self._call("DELETE", "/_sandbox/faults")

    def configure(self, **changes) -> dict:
        return self._call("POST", "/_sandbox/config", json=changes)

    def reset(self) -> dict:
        return self._call("POST", "/_sandbox/reset")

    def uninstall(self, installation_id: str | None = None, account_id: str | None = None) -> dict:
        body = {k: v for k, v in (("installation_id", installation_id), ("account_id", account_id)) if v}
        return self._call("POST", "/_sandbox/uninstall", json=body)

    def objects(self, account_id: str | None = None) -> dict:
        """Metrics, flows (with the body received) and segments: see objects_pages.py."""
        return self._call("GET", "/_sandbox/objects.json", params={"account_id": account_id} if account_id else None)

    def add_metric(self, name: str, integration: str, category: str | None = None,
                   account_id: str | None = None) -> dict:
        """A metric of another integration, e.g. add_metric("Placed Order", "Shopify", "eCommerce")."""
        body = {"name": name, "integration": {"name": integration, "category": category}, "account_id": account_id}
        return self._call("POST", "/_sandbox/metrics", json=body)

    def set_daily_usage(self, endpoint: str, used: int, installation_id: str | None = None) -> dict:
        """Say that `used` requests of a daily limit (flows_create, segments_create) were made today."""
        body = {"endpoint": endpoint, "daily_used": used, "installation_id": installation_id}
        return self._call("POST", "/_sandbox/usage", json=body)

    def lists(self, account_id: str | None = None) -> list[dict]:
        """Every list (deleted ones too), each with its subscribers: see lists_pages.py."""
        return self._call("GET", "/_sandbox/lists.json", params={"account_id": account_id} if account_id else None)["lists"]

    def delete_list(self, list_id: str) -> dict:
        """Play the organizer deleting a list in Klaviyo."""
        return self._call("DELETE", f"/_sandbox/lists/{list_id}")

    def consent(self, authorize_url: str, decision: str = "allow", account_id: str | None = None) -> str:
        """Play the organizer on the consent page; returns where Klaviyo redirects the browser."""
        import requests

        with requests.Session() as browser:
            page = browser.get(authorize_url, allow_redirects=False, timeout=30)
            if page.is_redirect:
                return page.headers["Location"]
            page.raise_for_status()
            form = parse_consent_form(page.text)
            answer = browser.post(urljoin(self.url, "/oauth/authorize"), allow_redirects=False, timeout=30,
                                  data={"nonce": form["nonce"], "decision": decision,
                                        "account_id": account_id or form["account_ids"][0]})
            if not answer.is_redirect:
                raise RuntimeError(f"consent answer was HTTP {answer.status_code}, not a redirect")
            return answer.headers["Location"]


def start_in_thread(config: dict | None = None, host: str = "127.0.0.1", port: int = 0) -> SandboxServer:
    """Start a threaded Werkzeug server for a new sandbox app (port 0: any free port)."""
    app = create_sandbox_app(config)
    httpd = make_server(host, port, app, threaded=True, request_handler=QuietHandler)
    thread = threading.Thread(target=httpd.serve_forever, name="klaviyo-sandbox", daemon=True)
    thread.start()
    return SandboxServer(app, httpd, thread)
