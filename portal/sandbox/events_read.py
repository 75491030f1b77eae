"""Klaviyo's Get Events (``GET /api/events``), as strict as the rest of the sandbox, and the profile page that
an event's "see the profile" link reaches (Klaviyo's own path, ``/profile/<id>``).

Checked like every endpoint (api.guard: bearer token, revision, ``events:read``, the slice's 350/s and
3500/m), then the query against the official slice (``get_events.json``): an unknown parameter, field, sort
or page size is a 400. Of the filter, the sandbox supports what the portal uses, strictly:

    equals(metric_id,'AbC123')          the events of one metric
    equals(profile_id,'01H...')         the events of one profile
    greater-or-equal(datetime,2026-07-15T18:00:00Z)    and greater-than, less-than, less-or-equal;
    greater-than(timestamp,1752602400)                  the same on Unix seconds

Several conditions side by side (or in ``and(...)``) must all hold. ``has(profile)``, ``has(metric)`` and
``include=attributions`` are in the slice but answer 400 here: nothing the sandbox keeps could fill them.

Answers are what Klaviyo returns: the event's ``datetime`` (its own time, to the second), ``timestamp``,
``uuid`` and ``event_properties`` (the properties sent, plus ``$event_id``, the ``unique_id``, and
``$value`` when a value was sent), with the profile and metric as relationships. Sorted by ``datetime``
(ascending unless ``sort=-datetime``), 200 a page (``page[size]`` up to 1,000), with a ``next`` link.
Events for test addresses were dropped on arrival, so they are never here: the round trip shows what
Klaviyo kept. With ``events_visible_after`` (POST /_sandbox/config) an event only shows that many seconds
after it arrived, as Klaviyo's own processing delay.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
import uuid
from datetime import UTC, datetime

from flask import Blueprint, abort, current_app, g, render_template, request

from portal.sandbox import api, filters, jsonapi, objects_api, objects_store, schemas, store
from portal.sandbox.context import db

bp = Blueprint("events_read", __name__)
bp.before_request(api.guard)
bp.after_request(api.rate_headers)

SLICE = "get_events.json"
UNSUPPORTED_FIELDS = {"profile": "has(profile)", "metric": "has(metric)"}
PROFILE_ATTRIBUTES = ("email", "phone_number", "external_id", "first_name", "last_name", "organization",
                      "locale", "title", "image")


def profile_id(account_id: str, profile_key: str) -> str:
    """A profile's id, shaped like Klaviyo's (a 26-character ULID), the same every time for one person."""
    digest = hashlib.sha256(f"{account_id}\x00{profile_key}".encode()).digest()
    return "01" + base64.b32encode(digest).decode()[:24]


def _conditions(params: dict) -> list[filters.Condition]:
    if "filter" not in params:
        return []
    unsupported = re.search(r"\bhas\(\s*(profile|metric)\s*\)", params["filter"])
    if unsupported:
        raise filters.FilterError(f"Invalid filter provided: this sandbox does not support 'has({unsupported[1]})'.")
    conditions = filters.parse(params["filter"], objects_api._filter_fields(SLICE), "event")
    for condition in conditions:
        if condition.field in UNSUPPORTED_FIELDS:
            raise filters.FilterError(f"Invalid filter provided: this sandbox does not support "
                                      f"'{UNSUPPORTED_FIELDS[condition.field]}'.")
        if condition.field == "datetime" and not isinstance(condition.value, datetime):
            raise filters.FilterError("Invalid filter provided: 'datetime' takes an ISO 8601 time, like "
                                      "2026-07-15T18:00:00Z.")
        if condition.field == "timestamp" and not isinstance(condition.value, (int, float)):
            raise filters.FilterError("Invalid filter provided: 'timestamp' takes Unix seconds.")
        if condition.field in ("metric_id", "profile_id") and not isinstance(condition.value, str):
            raise filters.FilterError(f"Invalid filter provided: '{condition.field}' takes a quoted id.")
        if condition.field == "datetime" and condition.value.tzinfo is None:
            raise filters.FilterError("Invalid filter provided: give the time zone, e.g. 2026-07-15T18:00:00Z.")
    return conditions


def _metric_ids(account_id: str) -> dict[str, str]:
    """Metric name -> id of the metrics made by events of the OAuth app (the only events the sandbox has)."""
    ours = objects_store.app_integration(current_app.config["SANDBOX_CLIENT_ID"],
                                         current_app.config["SANDBOX_APP_NAME"])["key"]
    return {m["name"]: m["id"] for m in objects_store.list_metrics(db(), account_id)
            if m["integration"].get("key") == ours}


def _visible(account_id: str) -> list[dict]:
    hidden_for = current_app.config.get("SANDBOX_EVENTS_VISIBLE_AFTER", 0) or 0
    now = time.time()
    return [e for e in store.list_events(db(), account_id=account_id) if e["received_at"] <= now - hidden_for]


def _values(event: dict, metric_id: str | None, pid: str) -> dict:
    moment = datetime.fromisoformat(event["time"])
    return {"metric_id": metric_id, "profile_id": pid, "datetime": moment, "timestamp": int(moment.timestamp())}


def _event_properties(event: dict) -> dict:
    properties = dict(event["properties"])
    properties["$event_id"] = event["unique_id"]
    if event["value"] is not None:
        properties["$value"] = event["value"]
    return properties


def _resource(event: dict, metric_id: str | None, pid: str, fields: list[str] | None) -> dict:
    base = request.host_url.rstrip("/")
    moment = datetime.fromisoformat(event["time"])
    attributes = {"timestamp": int(moment.timestamp()), "event_properties": _event_properties(event),
                  "datetime": moment.isoformat(), "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, event["id"]))}
    if fields:
        attributes = {k: v for k, v in attributes.items() if k in fields}
    relationships = {
        "profile": {"data": {"type": "profile", "id": pid},
                    "links": {"self": f"{base}/api/events/{event['id']}/relationships/profile/",
                              "related": f"{base}/api/events/{event['id']}/profile/"}},
        "metric": {"data": {"type": "metric", "id": metric_id or ""},
                   "links": {"self": f"{base}/api/events/{event['id']}/relationships/metric/",
                             "related": f"{base}/api/events/{event['id']}/metric/"}},
    }
    return {"type": "event", "id": event["id"], "attributes": attributes, "relationships": relationships,
            "links": {"self": f"{base}/api/events/{event['id']}/"}}


def _profile_resource(pid: str, profile: dict, fields: list[str] | None) -> dict:
    attributes = {name: profile.get(name) for name in PROFILE_ATTRIBUTES}
    if fields:
        attributes = {k: v for k, v in attributes.items() if k in fields}
    return {"type": "profile", "id": pid, "attributes": attributes,
            "links": {"self": f"{request.host_url.rstrip('/')}/api/profiles/{pid}/"}}


def _metric_resource(metric: dict, fields: list[str] | None) -> dict:
    attributes = {"name": metric["name"], "created": objects_store.iso(metric["created_at"]),
                  "updated": objects_store.iso(metric["updated_at"]), "integration": metric["integration"]}
    if fields:
        attributes = {k: v for k, v in attributes.items() if k in fields}
    return {"type": "metric", "id": metric["id"], "attributes": attributes,
            "links": {"self": f"{request.host_url.rstrip('/')}/api/metrics/{metric['id']}/"}}


@bp.get("/api/events", strict_slashes=False)
def get_events():
    """The account's events, filtered by metric, profile or time, sorted by time, a page at a time."""
    try:
        params = objects_api._params(SLICE)
        conditions = _conditions(params)
        offset = objects_api._offset(params)
    except objects_api.BadParameter as exc:
        return objects_api._bad_parameter(exc)
    except filters.FilterError as exc:
        return jsonapi.error_response(400, "invalid", str(exc), parameter="filter")
    includes = params.get("include", [])
    if "attributions" in includes:
        return jsonapi.error_response(400, "invalid", "This sandbox does not support include=attributions.",
                                      parameter="include")
    account_id = g.token["account_id"]
    metric_ids = _metric_ids(account_id)
    rows = []
    for event in _visible(account_id):
        metric_id, pid = metric_ids.get(event["metric"]), profile_id(account_id, _profile_key(event))
        if filters.matches(conditions, _values(event, metric_id, pid)):
            rows.append((event, metric_id, pid))
    sort = params.get("sort", "datetime")
    rows.sort(key=lambda row: (row[0]["time"], row[0]["received_at"]), reverse=sort.startswith("-"))
    size = params.get("page[size]", 200)
    page = rows[offset:offset + size]
    body = {"data": [_resource(e, m, p, params.get("fields[event]")) for e, m, p in page],
            "links": objects_api._page_links("/api/events", offset, size, len(rows))}
    if includes:
        included: dict[tuple, dict] = {}
        metrics = {m["id"]: m for m in objects_store.list_metrics(db(), account_id)}
        for event, metric_id, pid in page:
            if "profile" in includes:
                included.setdefault(("profile", pid), _profile_resource(pid, event["profile"],
                                                                        params.get("fields[profile]")))
            if "metric" in includes and metric_id in metrics:
                included.setdefault(("metric", metric_id), _metric_resource(metrics[metric_id],
                                                                            params.get("fields[metric]")))
        body["included"] = list(included.values())
    return objects_api._json(body)


def _profile_key(event: dict) -> str:
    """The same identity the sandbox deduplicates on (email, else phone, else id)."""
    profile = event["profile"]
    return schemas.profile_key({"id": profile.get("id"), "attributes": profile})


@bp.get("/profile/<pid>")
def profile_page(pid: str):
    """Where a "see the profile in Klaviyo" link lands: the person and what the sandbox kept for them."""
    events = [e for e in store.list_events(db()) if profile_id(e["account_id"], _profile_key(e)) == pid]
    if not events:
        abort(404)
    return render_template("sandbox/profile.html", pid=pid, profile=events[0]["profile"], events=events,
                           when=lambda ts: datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
                           pretty=lambda value: json.dumps(value, indent=2, ensure_ascii=False))
