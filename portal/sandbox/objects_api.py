"""Klaviyo's flow, segment and metric endpoints: Get Metrics, Get Flows, Create Flow, Create Segment.

They go through the same guard as the event endpoints (api.guard: bearer token, revision, the
slice's scope, its burst, steady and daily limits, content type), then check their query parameters
against the slice (an unknown parameter, field, sort or page size is a 400) and their bodies with
objects.py. Flows made here are drafts, as Klaviyo makes them.
"""

from __future__ import annotations

import base64
import json
import re
import time
from datetime import UTC, datetime
from functools import cache
from urllib.parse import urlencode

from flask import Blueprint, current_app, g, request

from portal.sandbox import api, filters, jsonapi, objects, objects_store, schemas
from portal.sandbox.context import db

bp = Blueprint("objects", __name__)
bp.before_request(api.guard)
bp.after_request(api.rate_headers)

METRICS_PAGE = 200  # "Returns a maximum of 200 results per page."


@cache
def _query_params(filename: str) -> dict[str, dict]:
    operation = schemas.openapi_operation(filename)
    return {p["name"]: p for p in operation["parameters"] if p["in"] == "query"}


@cache
def _filter_fields(filename: str) -> dict[str, set[str]]:
    """The fields and operators the slice's filter parameter allows ("`name`: `contains`, `equals`")."""
    text = _query_params(filename)["filter"]["description"]
    allowed = {}
    for field, ops in re.findall(r"`([\w.\-]+)`: ((?:`[\w\-]+`(?:, )?)+)", text):
        allowed[field] = set(re.findall(r"`([\w\-]+)`", ops))
    return allowed


class BadParameter(Exception):
    def __init__(self, parameter: str, detail: str):
        super().__init__(detail)
        self.parameter = parameter
        self.detail = detail


def _params(filename: str) -> dict:
    """The request's query parameters, checked against the slice: lists split, integers read."""
    known = _query_params(filename)
    out: dict = {}
    for name in request.args:
        if name not in known:
            raise BadParameter(name, f"'{name}' is not a valid parameter for this endpoint.")
        raw = request.args[name]
        schema = known[name]["schema"]
        if schema.get("type") == "array":
            values = [v.strip() for v in raw.split(",") if v.strip()]
            choices = schema["items"].get("enum")
            bad = [v for v in values if choices is not None and v not in choices]
            if bad or not values:
                raise BadParameter(name, f"'{bad[0] if bad else raw}' is not a valid value for '{name}'.")
            out[name] = values
        elif schema.get("type") == "integer":
            if not re.fullmatch(r"\d+", raw) or not schema.get("minimum", 0) <= int(raw) <= schema.get("maximum", 10**9):
                raise BadParameter(name, f"'{name}' must be a whole number from {schema.get('minimum', 0)} "
                                         f"to {schema.get('maximum')}.")
            out[name] = int(raw)
        elif "enum" in schema and raw not in schema["enum"]:
            raise BadParameter(name, f"'{raw}' is not a valid value for '{name}'.")
        else:
            out[name] = raw
    return out


def _bad_parameter(exc: BadParameter):
    return jsonapi.error_response(400, "invalid", exc.detail, parameter=exc.parameter)


def _sparse(attributes: dict, fields: list[str] | None) -> dict:
    if not fields:
        return attributes
    out: dict = {}
    for name in fields:
        parts = name.split(".")
        if parts == ["id"]:
            continue
        source, target = attributes, out
        for part in parts[:-1]:
            source = source.get(part) if isinstance(source, dict) else None
            if not isinstance(source, dict):
                break
            target = target.setdefault(part, {})
        else:
            if parts[-1] in source:
                target[parts[-1]] = source[parts[-1]]
    return out


def _base() -> str:
    return request.host_url.rstrip("/")


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"o": offset}).encode()).decode().rstrip("=")


def _offset(params: dict) -> int:
    raw = params.get("page[cursor]")
    if raw is None:
        return 0
    try:
        offset = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))["o"]
    except (ValueError, KeyError, TypeError) as exc:
        raise BadParameter("page[cursor]", "The page cursor is not valid.") from exc
    if not isinstance(offset, int) or offset < 0:
        raise BadParameter("page[cursor]", "The page cursor is not valid.")
    return offset


def _page_links(path: str, offset: int, size: int, total: int) -> dict:
    args = {k: v for k, v in request.args.items() if k != "page[cursor]"}
    links = {"self": f"{_base()}{path}" + (f"?{urlencode(request.args)}" if request.args else "")}
    if offset + size < total:
        links["next"] = f"{_base()}{path}?{urlencode({**args, 'page[cursor]': _cursor(offset + size)})}"
    if offset > 0:
        links["prev"] = f"{_base()}{path}?{urlencode({**args, 'page[cursor]': _cursor(max(0, offset - size))})}"
    return links


def _json(body: dict, status: int = 200):
    return current_app.response_class(json.dumps(body), status=status, content_type=jsonapi.JSONAPI)


def _relationship(kind: str, rid: str, name: str, data=None) -> dict:
    out = {"links": {"self": f"{_base()}/api/{kind}/{rid}/relationships/{name}/",
                     "related": f"{_base()}/api/{kind}/{rid}/{name}/"}}
    if data is not None:
        out = {"data": data, **out}
    return out


# --- metrics ------------------------------------------------------------------------------------


def _when(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _flow_resource(flow: dict, fields: list[str] | None, include_actions: bool = False) -> dict:
    attributes = {"name": flow["name"], "status": flow["status"], "archived": flow["archived"],
                  "created": objects_store.iso(flow["created_at"]), "updated": objects_store.iso(flow["updated_at"]),
                  "trigger_type": flow["trigger_type"]}
    actions = [{"type": "flow-action", "id": a["id"]} for a in flow["definition"]["actions"]]
    return {"type": "flow", "id": flow["id"], "attributes": _sparse(attributes, fields),
            "relationships": {
                "flow-actions": _relationship("flows", flow["id"], "flow-actions",
                                              actions if include_actions else None),
                "tags": _relationship("flows", flow["id"], "tags", [] if include_actions else None)},
            "links": {"self": f"{_base()}/api/flows/{flow['id']}/"}}


@bp.get("/api/metrics", strict_slashes=False)
def get_metrics():
    """The account's metrics, 200 a page; filter by integration name or category."""
    try:
        params = _params("get_metrics.json")
        conditions = filters.parse(params["filter"], _filter_fields("get_metrics.json"), "metric") \
            if "filter" in params else []
        offset = _offset(params)
    except BadParameter as exc:
        return _bad_parameter(exc)
    except filters.FilterError as exc:
        return jsonapi.error_response(400, "invalid", str(exc), parameter="filter")
    account_id = g.token["account_id"]
    metrics = [m for m in objects_store.list_metrics(db(), account_id)
               if filters.matches(conditions, {"integration.name": m["integration"].get("name"),
                                               "integration.category": m["integration"].get("category")})]
    page = metrics[offset:offset + METRICS_PAGE]
    include = "flow-triggers" in params.get("include", [])
    flows = objects_store.list_flows(db(), account_id) if include else []
    data, included = [], {}
    for metric in page:
        attributes = {"name": metric["name"], "created": objects_store.iso(metric["created_at"]),
                      "updated": objects_store.iso(metric["updated_at"]), "integration": metric["integration"]}
        triggered = [f for f in flows if f["definition"]["triggers"][0].get("type") == "metric"
                     and f["definition"]["triggers"][0].get("id") == metric["id"]]
        for flow in triggered:
            included[flow["id"]] = _flow_resource(flow, params.get("fields[flow]"))
        data.append({"type": "metric", "id": metric["id"], "attributes": _sparse(attributes, params.get("fields[metric]")),
                     "relationships": {"flow-triggers": _relationship(
                         "metrics", metric["id"], "flow-triggers",
                         [{"type": "flow", "id": f["id"]} for f in triggered] if include else None)},
                     "links": {"self": f"{_base()}/api/metrics/{metric['id']}/"}})
    body = {"data": data, "links": _page_links("/api/metrics", offset, METRICS_PAGE, len(metrics))}
    if include:
        body["included"] = list(included.values())
    return _json(body)


# --- flows --------------------------------------------------------------------------------------


def _filter_values(flow: dict) -> dict:
    return {"id": flow["id"], "name": flow["name"], "status": flow["status"], "archived": flow["archived"],
            "created": _when(flow["created_at"]), "updated": _when(flow["updated_at"]),
            "trigger_type": flow["trigger_type"]}


def _action_resource(flow: dict, action: dict) -> dict:
    return {"type": "flow-action", "id": action["id"],
            "attributes": {"created": objects_store.iso(flow["created_at"]),
                           "updated": objects_store.iso(flow["updated_at"]), "definition": action},
            "relationships": {"flow": {"data": {"type": "flow", "id": flow["id"]},
                                       "links": {"self": f"{_base()}/api/flow-actions/{action['id']}/relationships/flow/",
                                                 "related": f"{_base()}/api/flow-actions/{action['id']}/flow/"}}},
            "links": {"self": f"{_base()}/api/flow-actions/{action['id']}/"}}


@bp.get("/api/flows", strict_slashes=False)
def get_flows():
    """The account's flows, up to 50 a page, filtered and sorted as the slice allows."""
    try:
        params = _params("get_flows.json")
        conditions = filters.parse(params["filter"], _filter_fields("get_flows.json"), "flow") \
            if "filter" in params else []
        offset = _offset(params)
    except BadParameter as exc:
        return _bad_parameter(exc)
    except filters.FilterError as exc:
        return jsonapi.error_response(400, "invalid", str(exc), parameter="filter")
    flows = [f for f in objects_store.list_flows(db(), g.token["account_id"])
             if filters.matches(conditions, _filter_values(f))]
    sort = params.get("sort")
    if sort:
        field = sort.lstrip("-")
        flows.sort(key=lambda f: _filter_values(f)[field], reverse=sort.startswith("-"))
    size = params.get("page[size]", 50)
    page = flows[offset:offset + size]
    includes = params.get("include", [])
    data = [_flow_resource(f, params.get("fields[flow]"), include_actions="flow-actions" in includes) for f in page]
    body = {"data": data, "links": _page_links("/api/flows", offset, size, len(flows))}
    if includes:
        body["included"] = [_action_resource(f, a) for f in page for a in f["definition"]["actions"]] \
            if "flow-actions" in includes else []
    return _json(body)


def _with_real_ids(definition: dict) -> dict:
    """The stored definition: every temporary_id becomes an action id, and links follow."""
    definition = json.loads(json.dumps(definition))
    ids = {a["temporary_id"]: objects_store.action_id() for a in definition["actions"]}
    for action in definition["actions"]:
        action["id"] = ids[action.pop("temporary_id")]
        for name, target in list((action.get("links") or {}).items()):
            action["links"][name] = ids.get(target) if target is not None else None
        message = (action.get("data") or {}).get("message")
        if isinstance(message, dict):
            message["id"] = objects_store.short_id()  # the e-mail (flow message) Klaviyo makes for it
    definition["entry_action_id"] = ids[definition["entry_action_id"]]
    return definition


def _invalid(issues):
    return jsonapi.errors_response(400, [jsonapi.error(400, "invalid", i.message, pointer=i.pointer or "/data")
                                         for i in issues[:20]])


@bp.post("/api/flows", strict_slashes=False)
def create_flow():
    """Create a flow from an encoded definition: 201 with the stored definition, as a draft."""
    try:
        params = _params("create_flow.json")
    except BadParameter as exc:
        return _bad_parameter(exc)
    body, problem = api._read_body()
    if problem:
        return problem
    account_id = g.token["account_id"]
    conn = db()
    issues = objects.validate_create_flow(body, objects_store.metric_ids(conn, account_id),
                                          {s["id"] for s in objects_store.list_segments(conn, account_id)})
    if issues:
        return _invalid(issues)
    attributes = body["data"]["attributes"]
    definition = attributes["definition"]
    flow = objects_store.create_flow(
        conn, flow_id=objects_store.short_id(), account_id=account_id, installation_id=g.token["installation_id"],
        name=attributes["name"], trigger_type=objects.TRIGGER_TYPES[definition["triggers"][0]["type"]],
        definition=_with_real_ids(definition), received=body, now=time.time())
    resource = _flow_resource(flow, None, include_actions=True)
    resource["attributes"]["definition"] = flow["definition"]
    fields = params.get("fields[flow]")
    if fields:
        resource["attributes"] = _sparse(resource["attributes"], fields)
    elif "definition" not in params.get("additional-fields[flow]", ["definition"]):
        resource["attributes"].pop("definition")
    return _json({"data": resource, "links": {"self": f"{_base()}/api/flows/"}}, 201)


# --- segments -----------------------------------------------------------------------------------


@bp.post("/api/segments", strict_slashes=False)
def create_segment():
    """Create a segment from a definition: 201, processing (the sandbox never fills it with profiles)."""
    try:
        params = _params("create_segment.json")
    except BadParameter as exc:
        return _bad_parameter(exc)
    body, problem = api._read_body()
    if problem:
        return problem
    account_id = g.token["account_id"]
    conn = db()
    issues = objects.validate_create_segment(body, objects_store.metric_ids(conn, account_id),
                                             {s["id"] for s in objects_store.list_segments(conn, account_id)})
    if issues:
        return _invalid(issues)
    attributes = body["data"]["attributes"]
    segment = objects_store.create_segment(
        conn, segment_id=objects_store.short_id(), account_id=account_id,
        installation_id=g.token["installation_id"], name=attributes["name"], definition=attributes["definition"],
        is_starred=bool(attributes.get("is_starred")), received=body, now=time.time())
    sid = segment["id"]
    resource = {"type": "segment", "id": sid,
                "attributes": _sparse({"name": segment["name"], "definition": segment["definition"],
                                       "created": objects_store.iso(segment["created_at"]),
                                       "updated": objects_store.iso(segment["updated_at"]),
                                       "is_active": True, "is_processing": True,
                                       "is_starred": segment["is_starred"]}, params.get("fields[segment]")),
                "relationships": {name: _relationship("segments", sid, name)
                                  for name in ("profiles", "tags", "flow-triggers")},
                "links": {"self": f"{_base()}/api/segments/{sid}/"}}
    return _json({"data": resource, "links": {"self": f"{_base()}/api/segments/"}}, 201)
