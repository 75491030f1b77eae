"""The Klaviyo API endpoints the portal uses: Get Accounts, Create Event, Bulk Create Events.

Every call is checked the way Klaviyo checks it, in this order: bearer token (401),
``revision`` header (400), scope (403), rate limit (429), content type (415), body (400).
"""

from __future__ import annotations

import gzip
import json
import re
import secrets
import time
from datetime import UTC, date, datetime
from functools import cache

from flask import Blueprint, current_app, g, request

from portal.sandbox import jsonapi, objects_store, schemas, store
from portal.sandbox.context import account, db, state
from portal.sandbox.settings import daily_limits, rate_limit_tiers

bp = Blueprint("api", __name__, url_prefix="/api")

REVISION_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})(\.[A-Za-z0-9]+)?$")
FIRST_REVISION = date(2022, 10, 17)
ENDPOINTS = {"api.get_accounts": "accounts", "api.get_account": "accounts",
             "api.create_event": "events", "api.bulk_create_events": "bulk",
             # flows, segments and metrics (objects_api.py), checked by this same guard
             "objects.get_metrics": "metrics", "objects.get_flows": "flows_read",
             "objects.create_flow": "flows_create", "objects.create_segment": "segments_create",
             # lists and list subscriptions (lists_api.py)
             "lists.get_lists": "lists_read", "lists.create_list": "lists_create",
             "lists.bulk_subscribe_profiles": "subscribe",
             "events_read.get_events": "events_read"}  # Get Events (events_read.py)


@cache
def _tiers() -> dict[str, tuple[str, int, int]]:
    return rate_limit_tiers()


@cache
def _daily() -> dict[str, int]:
    return daily_limits()


@cache
def _account_field_names() -> frozenset[str]:
    """What fields[account]= may name, as the spec lists it."""
    (param,) = [p for p in schemas.openapi_operation("get_accounts.json")["parameters"]
                if p["name"] == "fields[account]"]
    return frozenset(param["schema"]["items"]["enum"])


def resolve_token() -> None:
    """Look up the bearer token once per request (also for the request log)."""
    header = request.headers.get("Authorization", "")
    scheme, _, credentials = header.partition(" ")
    g.auth_scheme = scheme.lower() if header else None
    g.token = None
    if g.auth_scheme == "bearer" and credentials.strip():
        row = store.find_access_token(db(), credentials.strip())
        if row is not None:
            g.token = row
            g.log_ctx = {"account_id": row["account_id"], "installation_id": row["installation_id"],
                         "grant_id": row["grant_id"]}


def _revision_problem(value: str | None) -> str | None:
    if not value:
        return "Missing required header: revision (format: YYYY-MM-DD[.suffix])."
    match = REVISION_RE.match(value)
    if not match:
        return f"Invalid revision header {value!r}; expected YYYY-MM-DD[.suffix]."
    try:
        day = date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return f"Invalid revision header {value!r}: not a real date."
    if day < FIRST_REVISION or day > datetime.now(UTC).date():
        return f"Revision {value} does not exist."
    return None


@bp.before_request
def guard():
    """Authentication, revision, scope, rate limit and content type, before any endpoint."""
    if request.endpoint not in ENDPOINTS:
        return None  # 404 / 405, answered by the app's JSON:API error handlers
    if g.auth_scheme is None:
        return jsonapi.error_response(401, "not_authenticated",
                                      "Authentication credentials were not provided.", pointer="/data/")
    token = g.token
    if (g.auth_scheme != "bearer" or token is None or token["grant_revoked_at"] is not None
            or token["expires_at"] < time.time()):
        return jsonapi.error_response(401, "authentication_failed",
                                      "Incorrect authentication credentials.", pointer="/data/")
    g.revision = request.headers.get("revision")
    problem = _revision_problem(g.revision)
    if problem:
        return jsonapi.error_response(400, "invalid", problem, parameter="revision")
    scope, burst, steady = _tiers()[ENDPOINTS[request.endpoint]]
    granted = token["scopes"].split(" ")
    missing = [name for name in scope.split(" ") if name not in granted]
    if missing:
        return jsonapi.error_response(
            403, "permission_denied", f"Your access token is missing required scopes: {', '.join(missing)}")
    tier = ENDPOINTS[request.endpoint]
    decision = state().limiter.hit((token["installation_id"], tier), burst, steady,
                                   enforce=current_app.config["SANDBOX_ENFORCE_RATE_LIMITS"],
                                   daily=_daily().get(tier))
    if not decision.allowed:
        store.bump(db(), "throttled_429")
        return jsonapi.error_response(
            429, "throttled", f"Request was throttled. Expected available in {decision.retry_after} seconds.",
            headers=decision.headers())
    g.rate_headers = decision.headers()
    if request.method == "POST":
        if request.mimetype != jsonapi.JSONAPI:
            return jsonapi.error_response(
                415, "unsupported_media_type",
                f'Unsupported media type "{request.content_type or ""}" in request. '
                f"Use {jsonapi.JSONAPI}.")
        if request.headers.get("Content-Encoding", "identity").lower() not in ("identity", "gzip"):
            return jsonapi.error_response(415, "unsupported_media_type",
                                          "Unsupported Content-Encoding; use gzip or none.")
    return None


@bp.after_request
def rate_headers(response):
    if response.status_code != 429:
        response.headers.update(g.get("rate_headers") or {})
    return response


def _read_body():
    """The request's JSON object, or an error response (size limit, bad JSON)."""
    raw = request.get_data(cache=False)
    if request.headers.get("Content-Encoding", "").lower() == "gzip":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError):
            return None, jsonapi.error_response(400, "parse_error", "The gzip body could not be read.")
    if len(raw) > schemas.MAX_PAYLOAD_BYTES:
        return None, jsonapi.error_response(400, "invalid", "The payload cannot be larger than 5MB.",
                                            pointer="/data")

    def no_constants(name):
        raise ValueError(f"{name} is not valid JSON")

    try:
        body = json.loads(raw, parse_constant=no_constants)
    except (ValueError, UnicodeDecodeError) as exc:
        return None, jsonapi.error_response(400, "parse_error", f"JSON parse error - {exc}")
    if not isinstance(body, dict):
        return None, jsonapi.error_response(400, "invalid", "The body must be a JSON object.",
                                            pointer="/data")
    return body, None


def _invalid(issues) -> object:
    errors = [jsonapi.error(400, "invalid", issue.message, pointer=issue.pointer or "/data")
              for issue in issues[:20]]
    return jsonapi.errors_response(400, errors)


def _event_row(attrs: dict, profile: dict, backfill: bool, source: str, now: float) -> tuple:
    """One row for the events table, with the identity Klaviyo deduplicates on."""
    token = g.token
    moment = schemas.parse_event_time(attrs["time"]) if attrs.get("time") else None
    moment = (moment or datetime.fromtimestamp(now, UTC)).astimezone(UTC)
    when = moment.replace(microsecond=0).isoformat()  # Klaviyo truncates to the second
    given = attrs.get("unique_id")
    metric = attrs["metric"]["data"]["attributes"]["name"]
    profile_out = {k: v for k, v in (profile.get("attributes") or {}).items() if v is not None}
    if profile.get("id"):
        profile_out = {"id": profile["id"], **profile_out}
    return ("evt_" + secrets.token_hex(10), token["account_id"], token["installation_id"], metric,
            schemas.profile_key(profile), json.dumps(profile_out), json.dumps(attrs["properties"]),
            given if given is not None else when, given is not None, when, attrs.get("value"),
            attrs.get("value_currency"), bool(backfill), source, now)


def _register_metrics(names: list[str], now: float) -> None:
    """Klaviyo creates a metric with the first event of its name, branded with the app that sent it."""
    integration = objects_store.app_integration(g.token["client_id"], current_app.config["SANDBOX_APP_NAME"])
    objects_store.register_metrics(db(), g.token["account_id"], integration, names, now)


def _accepted():
    """Klaviyo's answer to an accepted write: 202 and no body at all."""
    response = current_app.response_class(status=202)
    del response.headers["Content-Type"]
    return response


# --- endpoints ---------------------------------------------------------------------


def _account_resource(acc: dict, fields: list[str] | None) -> dict:
    attributes = {
        "test_account": acc["test_account"],
        "contact_information": {
            "default_sender_name": acc["default_sender_name"],
            "default_sender_email": acc["default_sender_email"],
            "website_url": acc["website_url"],
            "organization_name": acc["organization_name"],
            "street_address": dict(acc["street_address"]),
        },
        "industry": acc["industry"],
        "timezone": acc["timezone"],
        "preferred_currency": acc["preferred_currency"],
        "public_api_key": acc["public_api_key"],
        "locale": acc["locale"],
    }
    if fields:
        attributes = _sparse(attributes, fields)
    return {"type": "account", "id": acc["id"], "attributes": attributes,
            "links": {"self": f"{request.host_url}api/accounts/{acc['id']}/"}}


def _sparse(attributes: dict, fields: list[str]) -> dict:
    """Keep only the requested (possibly dotted) fields, as fields[account]= does."""
    out: dict = {}
    for name in fields:
        parts = name.split(".")
        if parts == ["id"]:
            continue
        source, target = attributes, out
        for part in parts[:-1]:
            source = source.get(part) or {}
            target = target.setdefault(part, {})
        if parts[-1] in source:
            target[parts[-1]] = source[parts[-1]]
    return out


def _account_fields():
    """The fields[account] list, or an error response for an unknown name or parameter."""
    unknown = [k for k in request.args if k != "fields[account]"]
    if unknown:
        return None, jsonapi.error_response(400, "invalid", f"'{unknown[0]}' is not a valid parameter.",
                                            parameter=unknown[0])
    raw = request.args.get("fields[account]")
    if raw is None:
        return None, None
    fields = [f.strip() for f in raw.split(",") if f.strip()]
    bad = [f for f in fields if f not in _account_field_names()]
    if bad or not fields:
        return None, jsonapi.error_response(400, "invalid", f"'{bad[0] if bad else raw}' is not a valid "
                                            "field for the resource 'account'.", parameter="fields[account]")
    return fields, None


def _json_api(body: dict, status: int = 200):
    return current_app.response_class(json.dumps(body), status=status, content_type=jsonapi.JSONAPI)


@bp.get("/accounts", strict_slashes=False)
def get_accounts():
    """The one account this installation belongs to."""
    fields, problem = _account_fields()
    if problem:
        return problem
    acc = account(g.token["account_id"])
    data = [_account_resource(acc, fields)] if acc else []
    return _json_api({"data": data, "links": {"self": f"{request.host_url}api/accounts/"}})


@bp.get("/accounts/<account_id>", strict_slashes=False)
def get_account(account_id: str):
    fields, problem = _account_fields()
    if problem:
        return problem
    if account_id != g.token["account_id"] or account(account_id) is None:
        return jsonapi.error_response(404, "not_found", "Not found.")
    return _json_api({"data": _account_resource(account(account_id), fields),
                      "links": {"self": f"{request.host_url}api/accounts/{account_id}/"}})


@bp.post("/events", strict_slashes=False)
def create_event():
    """Create one event: 202 with no body, or 400 with JSON:API errors."""
    body, problem = _read_body()
    if problem:
        return problem
    issues = schemas.validate_create_event(body, check_size=False)  # raw size checked
    if issues:
        return _invalid(issues)
    attrs, now = body["data"]["attributes"], time.time()
    profile = attrs["profile"]["data"]
    if schemas.is_test_email((profile.get("attributes") or {}).get("email")):
        store.record_events(db(), [], dropped=1)  # Klaviyo: 202, then silently dropped
    else:
        store.record_events(db(), [_event_row(attrs, profile, attrs.get("backfill") or False,
                                              "create_event", now)])
        _register_metrics([attrs["metric"]["data"]["attributes"]["name"]], now)
    return _accepted()


@bp.post("/event-bulk-create-jobs", strict_slashes=False)
def bulk_create_events():
    """Create up to 1,000 events at once; one bad event fails the whole request."""
    body, problem = _read_body()
    if problem:
        return problem
    issues = schemas.validate_bulk_create(body, check_size=False)  # raw size checked
    if issues:
        return _invalid(issues)
    now, rows, dropped = time.time(), [], 0
    for _i, _j, entry, event in schemas.bulk_events(body):
        profile = entry["attributes"]["profile"]["data"]
        if schemas.is_test_email((profile.get("attributes") or {}).get("email")):
            dropped += 1
            continue
        attrs = event["attributes"]
        backfill = attrs.get("backfill")
        if backfill is None:
            backfill = entry["attributes"].get("backfill") or False
        rows.append(_event_row(attrs, profile, backfill, "bulk_create", now))
    store.record_events(db(), rows, dropped)
    _register_metrics([row[3] for row in rows], now)  # row[3]: the metric's name
    return _accepted()
