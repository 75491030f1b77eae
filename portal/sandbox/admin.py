"""Local controls and inspection for tests and demos, under ``/_sandbox/``.

Plain JSON, no authentication: the sandbox is a local tool bound to loopback, and guard.py refuses what a web
page rather than a local tool could send here (a form post, another origin, a foreign Host header).
"""

from __future__ import annotations

import copy
import time
from datetime import UTC, datetime

from flask import Blueprint, current_app, jsonify, request

from portal.sandbox import store
from portal.sandbox.context import accounts, db, state
from portal.sandbox.faults import FaultSpecError
from portal.sandbox.settings import RUNTIME_KEYS, rate_limit_tiers

bp = Blueprint("admin", __name__, url_prefix="/_sandbox")


def _bad(message: str, status: int = 400):
    response = jsonify({"error": message})
    response.status_code = status
    return response


def _json_body() -> dict | list | None:
    return request.get_json(silent=True) if request.get_data() else {}


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds")


# --- config, reset, faults, uninstall ---------------------------------------------


def config_view() -> dict:
    config = current_app.config
    return {
        "client_id": config["SANDBOX_CLIENT_ID"],
        "app_name": config["SANDBOX_APP_NAME"],
        "redirect_uris": list(config["SANDBOX_REDIRECT_URIS"]),
        "access_token_lifetime": config["SANDBOX_ACCESS_TOKEN_LIFETIME"],
        "code_lifetime": config["SANDBOX_CODE_LIFETIME"],
        "refresh_token_lifetime": config["SANDBOX_REFRESH_TOKEN_LIFETIME"],
        "enforce_rate_limits": config["SANDBOX_ENFORCE_RATE_LIMITS"],
        "events_visible_after": config["SANDBOX_EVENTS_VISIBLE_AFTER"],
        "accounts": [{"id": a["id"], "organization_name": a["organization_name"]} for a in accounts()],
        "rate_limits": {name: {"scope": scope, "burst_per_second": burst, "steady_per_minute": steady}
                        for name, (scope, burst, steady) in rate_limit_tiers().items()},
        "db": config["SANDBOX_DB"],
    }


@bp.get("/config")
def get_config():
    return jsonify(config_view())


@bp.post("/config")
def set_config():
    """Change lifetimes, rate limiting, the client secret or the redirect URIs at run time."""
    body = _json_body()
    if not isinstance(body, dict):
        return _bad("Send a JSON object.")
    allowed = set(RUNTIME_KEYS) | {"redirect_uris", "replace_redirect_uris"}
    unknown = sorted(set(body) - allowed)
    if unknown:
        return _bad(f"Unknown config keys {unknown}; allowed: {sorted(allowed)}.")
    updates = {}
    for key, (config_key, kind) in RUNTIME_KEYS.items():
        if key not in body:
            continue
        value = body[key]
        if kind is int and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            return _bad(f"{key} must be a whole number of seconds (0 or more).")
        if kind is bool and not isinstance(value, bool):
            return _bad(f"{key} must be true or false.")
        if kind is str and (not isinstance(value, str) or not value):
            return _bad(f"{key} must be a non-empty string.")
        updates[config_key] = value
    uris = body.get("redirect_uris")
    if uris is not None and (not isinstance(uris, list)
                             or not all(isinstance(u, str) and u.startswith(("http://", "https://"))
                                        for u in uris)):
        return _bad("redirect_uris must be a list of http(s) URLs.")
    with state().config_lock:
        current_app.config.update(updates)
        if uris is not None:
            known = [] if body.get("replace_redirect_uris") else list(current_app.config["SANDBOX_REDIRECT_URIS"])
            current_app.config["SANDBOX_REDIRECT_URIS"] = list(dict.fromkeys(known + uris))
    return jsonify(config_view())


@bp.post("/reset")
def reset():
    """Forget everything: tokens, installations, events, logs, counters, faults."""
    body = _json_body() or {}
    store.reset(db())
    state().limiter.reset()
    state().faults.clear()
    if isinstance(body, dict) and body.get("restore_config"):
        with state().config_lock:
            for config_key, _kind in RUNTIME_KEYS.values():
                current_app.config[config_key] = current_app.config["SANDBOX_STARTUP"][config_key]
            current_app.config["SANDBOX_REDIRECT_URIS"] = copy.deepcopy(
                current_app.config["SANDBOX_STARTUP"]["SANDBOX_REDIRECT_URIS"])
    return jsonify({"reset": True, "config": config_view()})


@bp.get("/faults")
def list_faults():
    return jsonify({"active": state().faults.rules()})


@bp.post("/faults")
def add_faults():
    """Add one rule (an object), several (a list or {"rules": [...]}), optionally {"seed": n}."""
    body = _json_body()
    seed = None
    if isinstance(body, dict) and ("rules" in body or set(body) == {"seed"}):
        seed = body.get("seed")
        specs = body.get("rules", [])
    elif isinstance(body, dict):
        seed = body.pop("seed", None)
        specs = [body]
    elif isinstance(body, list):
        specs = body
    else:
        return _bad("Send a fault rule as a JSON object, or a list of them.")
    if seed is not None:
        if not isinstance(seed, int):
            return _bad("seed must be an integer.")
        state().faults.seed(seed)
    try:
        added = [state().faults.add(spec).as_dict() for spec in specs]
    except FaultSpecError as exc:
        return _bad(str(exc))
    return jsonify({"added": added, "active": state().faults.rules()}), 201


@bp.delete("/faults")
def clear_faults():
    state().faults.clear()
    return jsonify({"active": []})


@bp.post("/uninstall")
def uninstall():
    """Simulate the organizer removing the app inside Klaviyo: every token dies."""
    body = _json_body()
    if not isinstance(body, dict):
        return _bad("Send a JSON object.")
    conn = db()
    chosen = [i for i in store.installations(conn)
              if (not body.get("installation_id") or i["id"] == body["installation_id"])
              and (not body.get("account_id") or i["account_id"] == body["account_id"])]
    if (body.get("installation_id") or body.get("account_id")) and not chosen:
        return _bad("No such installation.", 404)
    now = time.time()
    done = [store.end_installation(conn, i["id"], via="uninstall", now=now) for i in chosen]
    return jsonify({"uninstalled": done, "at": now})


# --- inspection -----------------------------------------------------------------------


def event_view(event: dict) -> dict:
    event = dict(event)
    event["received_at_iso"] = iso(event["received_at"])
    return event


@bp.get("/events.json")
def events_json():
    """Accepted events, newest first; filters ?metric= and ?account_id=, ?limit=."""
    limit = request.args.get("limit", type=int)
    events = store.list_events(db(), metric=request.args.get("metric"),
                               account_id=request.args.get("account_id"), limit=limit)
    return jsonify({"count": len(events), "events": [event_view(e) for e in events]})


@bp.get("/requests")
def requests_log():
    """Logged API requests after ?since= (unix seconds), oldest first."""
    since = request.args.get("since", default=0.0, type=float)
    entries = store.requests_after(
        db(), since, installation_id=request.args.get("installation_id"),
        account_id=request.args.get("account_id"),
        path_prefix=request.args.get("path_prefix", "/api/"),
        limit=request.args.get("limit", default=10000, type=int))
    for entry in entries:
        entry["time"] = iso(entry["ts"])
    return jsonify({"since": since, "count": len(entries), "requests": entries})


def stats_view(since: float | None = None) -> dict:
    conn = db()
    counts = store.counters(conn)
    by_path = store.requests_by_path(conn)
    by_metric = store.metric_counts(conn)
    view = {
        "requests": {"total": sum(sum(s.values()) for s in by_path.values()), "by_path": by_path},
        "throttled_429": counts.get("throttled_429", 0),
        "duplicates_ignored": counts.get("duplicates_ignored", 0),
        "dropped_test_addresses": counts.get("dropped_test_addresses", 0),
        "faults_injected": counts.get("faults_injected", 0),
        "faults_by_kind": {name.split(":", 1)[1]: n for name, n in counts.items()
                           if name.startswith("fault:")},
        "token_grants": counts.get("token_grants", 0),
        "refreshes": counts.get("refreshes", 0),
        "revokes": [{**r, "at_iso": iso(r["at"])} for r in store.revokes(conn)],
        "accepted": {"total": sum(by_metric.values()), "by_metric": by_metric},
        "installations": [{**i, "created_at_iso": iso(i["created_at"]),
                           "last_api_call_iso": iso(i["last_api_call"])}
                          for i in store.installations(conn)],
    }
    if since is not None:
        entries = store.requests_after(conn, since)
        per_installation: dict[str, int] = {}
        for entry in entries:
            key = entry["installation_id"] or "unknown"
            per_installation[key] = per_installation.get(key, 0) + 1
        view["api_requests_since"] = {"since": since, "count": len(entries),
                                      "by_installation": per_installation}
    return view


@bp.get("/stats")
def stats():
    """Counters for tests and benchmarks; ?since=<unix seconds> adds API requests after then."""
    return jsonify(stats_view(request.args.get("since", type=float)))

