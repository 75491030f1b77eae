"""What the sandbox shows of flows, segments and metrics, and its local controls for them.

* On the received-events page, each created flow with its trigger, delays and e-mails, and each
  segment's definition, in words (``sandbox/_objects.html``, included by ``events.html``).
* ``/flow/<id>/edit`` and ``/list/<id>/members``: the pages the portal's "Open in Klaviyo" links
  reach when it talks to the sandbox (Klaviyo's own paths for a flow and a segment).
* ``GET /_sandbox/objects.json``, ``POST /_sandbox/metrics`` (a metric from another integration,
  such as Shopify's Placed Order) and ``POST /_sandbox/usage`` (today's use of a daily limit).
"""

from __future__ import annotations

import time

from flask import Blueprint, abort, jsonify, render_template, request

from portal.sandbox import objects_store, store
from portal.sandbox.context import accounts, db, state
from portal.sandbox.settings import daily_limits

bp = Blueprint("objects_pages", __name__)


def _bad(message: str, status: int = 400):
    response = jsonify({"error": message})
    response.status_code = status
    return response


# --- in words -------------------------------------------------------------------------------------


def _filter_words(flt: dict | None) -> str:
    if not flt:
        return "any value"
    value = flt.get("value")
    shown = repr(value) if isinstance(value, str) else value
    return {"existence": f"is {'set' if flt.get('operator') == 'is-set' else 'not set'}"}.get(
        flt.get("type"), f"{flt.get('operator')} {shown}")


def _timeframe_words(flt: dict | None) -> str:
    if not flt:
        return ""
    operator = flt.get("operator")
    if operator == "alltime":
        return "over all time"
    if operator == "flow-start":
        return "since starting this flow"
    if "quantity" in flt:
        return f"{operator} {flt['quantity']} {flt.get('unit')}s"
    return str(operator)


def condition_words(condition: dict, metric_names: dict[str, str]) -> str:
    """One condition of a segment or profile filter, as a sentence."""
    kind = condition.get("type")
    if kind == "profile-metric":
        name = metric_names.get(condition.get("metric_id"), condition.get("metric_id"))
        measured = condition.get("measurement_filter") or {}
        text = (f"{name} ({condition.get('metric_id')}): {condition.get('measurement')} "
                f"{measured.get('operator')} {measured.get('value')} {_timeframe_words(condition.get('timeframe_filter'))}")
        wheres = [f"{f.get('property')} {_filter_words(f.get('filter'))}" for f in condition.get("metric_filters") or []]
        return text + (" where " + " and ".join(wheres) if wheres else "")
    if kind == "profile-property":
        return f"profile {condition.get('property')} {_filter_words(condition.get('filter'))}"
    return kind or "condition"


def definition_words(definition: dict, metric_names: dict[str, str]) -> list[str]:
    """A segment's condition groups: groups must all hold, conditions within a group are alternatives."""
    return [" or ".join(condition_words(c, metric_names) for c in group.get("conditions", []))
            for group in definition.get("condition_groups", [])]


def trigger_words(trigger: dict, metric_names: dict[str, str]) -> str:
    kind = trigger.get("type")
    if kind == "metric":
        return f"Metric: {metric_names.get(trigger.get('id'), '?')} ({trigger.get('id')})"
    if kind == "date":
        before = trigger.get("timedelta_value_before_date")
        unit = trigger.get("timedelta_unit_before_date", "weeks")
        when = "on the date" if before == 0 else f"{before} {unit.removesuffix('s') if before == 1 else unit} before"
        return (f"Date: profile property {trigger.get('date_profile_property')}, {when}, at "
                f"{trigger.get('trigger_time')} ({trigger.get('timezone', 'profile')} time), repeats "
                f"{trigger.get('recurrence_frequency', 'monthly')}")
    return f"{kind}: {trigger.get('id')}"


def action_words(action: dict) -> str:
    data = action.get("data") or {}
    kind = action.get("type")
    if kind == "time-delay":
        return f"Wait {data.get('value')} {data.get('unit', 'days')}"
    if kind == "target-date":
        return f"On the date, at {data.get('target_time') or 'the trigger time'}"
    if kind == "send-email":
        message = data.get("message") or {}
        return (f"E-mail ({data.get('status', 'draft')}): “{message.get('subject_line') or '(no subject)'}”"
                + (f" · {message.get('name')}" if message.get("name") else ""))
    return kind or "action"


def flow_steps(flow: dict) -> list[str]:
    """The flow's actions in the order a profile goes through them, from the entry action."""
    definition = flow["definition"]
    by_id = {a["id"]: a for a in definition["actions"]}
    steps, seen, current = [], set(), definition.get("entry_action_id")
    while current in by_id and current not in seen:
        seen.add(current)
        action = by_id[current]
        steps.append(action_words(action))
        current = (action.get("links") or {}).get("next")
    return steps


def describe(account_id: str | None = None) -> dict:
    """Flows and segments in words, for the received-events page."""
    conn = db()
    metrics = objects_store.list_metrics(conn, account_id)
    names = {m["id"]: m["name"] for m in metrics}
    flows = [{**f, "trigger": trigger_words(f["definition"]["triggers"][0], names),
              "profile_filter": definition_words(f["definition"].get("profile_filter") or {}, names),
              "steps": flow_steps(f)} for f in objects_store.list_flows(conn, account_id)]
    segments = [{**s, "words": definition_words(s["definition"], names)}
                for s in objects_store.list_segments(conn, account_id)]
    return {"flows": flows, "segments": segments, "metrics": metrics}


@bp.app_context_processor
def _objects_for_templates():
    return {"sandbox_objects": describe, "sandbox_iso": objects_store.iso}


# --- pages ----------------------------------------------------------------------------------------


@bp.get("/flow/<flow_id>/edit")
def flow_page(flow_id: str):
    """Where an "Open in Klaviyo" link for a flow lands in the sandbox."""
    flow = next((f for f in describe()["flows"] if f["id"] == flow_id), None)
    if flow is None:
        abort(404)
    return render_template("sandbox/object.html", flow=flow, segment=None)


@bp.get("/list/<segment_id>/members")
def segment_page(segment_id: str):
    segment = next((s for s in describe()["segments"] if s["id"] == segment_id), None)
    if segment is None:
        abort(404)
    return render_template("sandbox/object.html", flow=None, segment=segment)


# --- admin ----------------------------------------------------------------------------------------


@bp.get("/_sandbox/objects.json")
def objects_json():
    """Metrics, flows (with the body received) and segments, oldest first; ?account_id= narrows."""
    account_id = request.args.get("account_id") or None
    conn = db()
    return jsonify({"metrics": objects_store.list_metrics(conn, account_id),
                    "flows": objects_store.list_flows(conn, account_id),
                    "segments": objects_store.list_segments(conn, account_id)})


@bp.post("/_sandbox/metrics")
def add_metric():
    """A metric made by another integration: {"name", "integration": {"name", "key"?, "category"?}}."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body["name"].strip():
        return _bad('Send {"name": "Placed Order", "integration": {"name": "Shopify", "category": "eCommerce"}}.')
    spec = body.get("integration") or {}
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not spec["name"].strip():
        return _bad("integration needs a name, e.g. {\"name\": \"Shopify\"}.")
    account_id = body.get("account_id") or accounts()[0]["id"]
    if account_id not in {a["id"] for a in accounts()}:
        return _bad("No such account.", 404)
    metric = objects_store.add_metric(db(), account_id, body["name"].strip(),
                                      objects_store.integration_from(spec), time.time())
    return jsonify(metric), 201


@bp.post("/_sandbox/usage")
def set_usage():
    """Say how much of a daily limit was used today: {"endpoint": "flows_create", "daily_used": 100,
    "installation_id"?: ...} (every installation when none is named)."""
    body = request.get_json(silent=True)
    limits = daily_limits()
    if not isinstance(body, dict) or body.get("endpoint") not in limits:
        return _bad(f"endpoint must be one of {sorted(limits)}.")
    used = body.get("daily_used")
    if not isinstance(used, int) or isinstance(used, bool) or used < 0:
        return _bad("daily_used must be a whole number (0 or more).")
    chosen = [i["id"] for i in store.installations(db())
              if not body.get("installation_id") or i["id"] == body["installation_id"]]
    for installation_id in chosen:
        state().limiter.set_daily_used((installation_id, body["endpoint"]), used)
    return jsonify({"endpoint": body["endpoint"], "daily_used": used, "daily_limit": limits[body["endpoint"]],
                    "installations": chosen})
