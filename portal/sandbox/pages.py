"""The "Received events" page: what an organizer opens to check that events arrived."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from flask import Blueprint, render_template, request

from portal.sandbox import store
from portal.sandbox.context import accounts, db

bp = Blueprint("pages", __name__)

PAGE_SIZE = 200


def _when(ts: float | None) -> str:
    if ts is None:
        return "—"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _event_time(text: str) -> str:
    return datetime.fromisoformat(text).strftime("%Y-%m-%d %H:%M:%S UTC")


@bp.app_template_filter("pretty_json")
def pretty_json(value) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)


@bp.get("/")
def received_events():
    """Accounts, metrics with counts, and the events the sandbox accepted, newest first."""
    conn = db()
    metric = request.args.get("metric") or None
    account_id = request.args.get("account_id") or None
    counts = store.metric_counts(conn, account_id)
    events = store.list_events(conn, metric=metric, account_id=account_id, limit=PAGE_SIZE)
    total = counts.get(metric, 0) if metric else sum(counts.values())
    names = {a["id"]: a["organization_name"] for a in accounts()}
    return render_template(
        "sandbox/events.html",
        accounts=accounts(), account_names=names, selected_account=account_id,
        metric=metric, counts=counts, total=total, events=events,
        installations=store.installations(conn), revokes=store.revokes(conn, 10),
        counters=store.counters(conn), when=_when, event_time=_event_time, page_size=PAGE_SIZE,
    )
