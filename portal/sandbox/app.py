"""The Klaviyo sandbox's own Flask app: a strict local stand-in for Klaviyo's OAuth and API."""

from __future__ import annotations

import copy
import time

from flask import Flask, g, request
from werkzeug.exceptions import HTTPException

from portal.sandbox import (
    admin, api, events_read, guard, jsonapi, lists_api, lists_pages, oauth, objects_api, objects_pages, pages, store,
)
from portal.sandbox.context import SandboxState, close_db, db, state
from portal.sandbox.faults import DROP_FLAG, drop_connection, wrap_wsgi
from portal.sandbox.settings import DEFAULTS, normalize_account

LOGGED_PREFIXES = ("/api/", "/oauth/")
HTML_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def create_sandbox_app(config: dict | None = None) -> Flask:
    """Build a sandbox app; ``config`` overrides the SANDBOX_* defaults (see settings.py)."""
    app = Flask(__name__, template_folder="templates", static_folder=None)
    app.config.from_mapping(copy.deepcopy(DEFAULTS))
    app.config["MAX_CONTENT_LENGTH"] = 32 * 1024 * 1024  # far above Klaviyo's 5 MB, checked later
    if config:
        app.config.update(copy.deepcopy(config))
    app.config["SANDBOX_ACCOUNTS"] = [normalize_account(a) for a in app.config["SANDBOX_ACCOUNTS"]]
    app.config["SANDBOX_REDIRECT_URIS"] = list(app.config["SANDBOX_REDIRECT_URIS"])
    # What POST /_sandbox/reset {"restore_config": true} goes back to.
    app.config["SANDBOX_STARTUP"] = {k: copy.deepcopy(v) for k, v in app.config.items()
                                     if k.startswith("SANDBOX_") and k != "SANDBOX_STARTUP"}
    app.json.sort_keys = False  # keep documents in the order they are built, like Klaviyo
    app.extensions["klaviyo_sandbox"] = SandboxState(app.config.get("SANDBOX_FAULT_SEED"))

    for blueprint in (oauth.bp, api.bp, objects_api.bp, events_read.bp, lists_api.bp, admin.bp, objects_pages.bp,
                      lists_pages.bp, pages.bp):
        app.register_blueprint(blueprint)
    app.before_request(guard.check_admin_request)  # /_sandbox/*: this machine's own tools, never a web page
    app.before_request(_begin)
    app.after_request(_finish)
    app.teardown_appcontext(close_db)
    app.register_error_handler(HTTPException, _http_error)
    app.wsgi_app = wrap_wsgi(app.wsgi_app)
    return app


def _begin():
    """Resolve the token (for the log), then let the fault rules have their say."""
    g.started = time.time()
    path = request.path
    if path.startswith("/api/"):
        api.resolve_token()
    if path.startswith("/_sandbox/") or path == "/":
        return None
    firing = state().faults.decide(path)
    if not firing.kinds:
        return None
    conn = db()
    with store.transaction(conn):
        store.bump(conn, "faults_injected", len(firing.kinds))
        for kind in firing.kinds:
            store.bump(conn, f"fault:{kind}")
    if firing.latency_ms:
        time.sleep(firing.latency_ms / 1000)
    rule = firing.rule
    if rule is None:
        return None
    g.fault = str(rule.status)
    if rule.status == "drop":
        # The client never sees this answer: the socket is shut and the WSGI wrapper raises.
        drop_connection(request.environ)
        return "", 500
    return jsonapi.fault_response(rule.status, rule.retry_after)


def _finish(response):
    path = request.path
    if path.startswith(LOGGED_PREFIXES):
        ctx = g.get("log_ctx") or {}
        dropped = request.environ.get(DROP_FLAG)
        store.log_request(db(), ts=g.get("started", time.time()), method=request.method, path=path,
                          status=0 if dropped else response.status_code,
                          account_id=ctx.get("account_id"), installation_id=ctx.get("installation_id"),
                          grant_id=ctx.get("grant_id"), fault=g.get("fault"),
                          revision=request.headers.get("revision"))
    if response.mimetype == "text/html":
        for name, value in HTML_HEADERS.items():
            response.headers.setdefault(name, value)
    return response


def _http_error(exc: HTTPException):
    """JSON:API errors under /api/, plain JSON elsewhere (never an HTML error page for APIs)."""
    if request.path.startswith("/api/"):
        code = {404: "not_found", 405: "method_not_allowed", 413: "invalid"}.get(exc.code, "invalid")
        detail = {404: "Not found.", 405: f'Method "{request.method}" not allowed.',
                  413: "The payload cannot be larger than 5MB."}.get(exc.code, exc.description)
        status = 400 if exc.code == 413 else exc.code
        headers = {k: v for k, v in exc.get_headers() if k.lower() != "content-type"}
        return jsonapi.error_response(status, code, detail, headers=headers)
    return exc
