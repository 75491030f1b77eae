"""Check Create Flow and Create Segment bodies as Klaviyo does, and the answers to flow and metric reads.

Two layers, as for events (see schemas.py): the official slices (``create_flow.json``,
``create_segment.json``, ``get_flows.json``, ``get_metrics.json``) with unknown fields rejected,
then the rules Klaviyo states in prose:

* a flow has exactly one trigger ("Only one trigger is supported");
* new actions are named by ``temporary_id`` ("an ``id`` is not allowed on create"), uniquely, and
  every link and the ``entry_action_id`` point at one of them, without going round in a circle;
* every metric id (the trigger's, a trigger filter's, a profile filter's) names a metric of the
  account; a metric trigger's filter can only look at the trigger's own metric;
* a date-triggered flow starts with its ``target-date`` action (what Klaviyo's editor makes, and
  what public provisioning scripts report Klaviyo asking for);
* time delays wait at least one unit; an e-mail names no template the account lacks;
* a segment has at least one condition group, and no group is empty.

Used by the sandbox's endpoints and by the portal's tests, which prove the portal's bodies valid.
"""

from __future__ import annotations

import re
from typing import Any

from portal.sandbox.schemas import ValidationIssue, _raise_if, pointer, schema_issues

_TIME_OF_DAY = re.compile(r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d)?$")
TRIGGER_TYPES = {"metric": "Metric", "date": "Date Based", "list": "Added to List", "segment": "Added to List"}


def _walk_metric_ids(node: Any, path: list, out: list) -> None:
    """Every ``metric_id`` inside a definition, with its path."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "metric_id" and isinstance(value, str):
                out.append((value, path + [key]))
            else:
                _walk_metric_ids(value, path + [key], out)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _walk_metric_ids(value, path + [index], out)


def _unknown_metrics(node: Any, path: list, metric_ids: set[str] | None) -> list[ValidationIssue]:
    if metric_ids is None:
        return []
    found: list = []
    _walk_metric_ids(node, path, found)
    return [ValidationIssue(pointer(where), f"Metric '{metric_id}' does not exist in this account.")
            for metric_id, where in found if metric_id not in metric_ids]


def _trigger_issues(trigger: dict, path: list, metric_ids: set[str] | None,
                    segment_ids: set[str] | None) -> list[ValidationIssue]:
    kind = trigger["type"]
    issues: list[ValidationIssue] = []
    if kind == "metric":
        if not trigger.get("id"):
            return [ValidationIssue(pointer(path + ["id"]), "A metric trigger needs the metric's id.")]
        if metric_ids is not None and trigger["id"] not in metric_ids:
            issues.append(ValidationIssue(pointer(path + ["id"]),
                                          f"Metric '{trigger['id']}' does not exist in this account."))
        groups = (trigger.get("trigger_filter") or {}).get("condition_groups") or []
        for g, group in enumerate(groups):
            for c, condition in enumerate(group["conditions"]):
                if condition["metric_id"] != trigger["id"]:
                    issues.append(ValidationIssue(
                        pointer(path + ["trigger_filter", "condition_groups", g, "conditions", c, "metric_id"]),
                        "A trigger filter can only filter on the trigger's own metric."))
    elif kind == "date":
        if trigger.get("date_field_type") != "profile-property":
            return [ValidationIssue(pointer(path + ["date_field_type"]),
                                    "This sandbox supports date triggers on profile properties only.")]
        if not trigger["date_profile_property"].strip():
            issues.append(ValidationIssue(pointer(path + ["date_profile_property"]),
                                          "Name the profile property whose date starts the flow."))
        if not _TIME_OF_DAY.match(trigger["trigger_time"]):
            issues.append(ValidationIssue(pointer(path + ["trigger_time"]),
                                          f"Invalid trigger_time {trigger['trigger_time']!r}: use HH:MM:SS."))
    elif kind in ("list", "segment"):
        known = segment_ids if kind == "segment" else set()
        if not trigger.get("id"):
            issues.append(ValidationIssue(pointer(path + ["id"]), f"A {kind} trigger needs the {kind}'s id."))
        elif known is not None and trigger["id"] not in known:
            issues.append(ValidationIssue(pointer(path + ["id"]),
                                          f"{kind.title()} '{trigger['id']}' does not exist in this account."))
    else:
        issues.append(ValidationIssue(pointer(path + ["type"]),
                                      f"This sandbox does not support '{kind}' triggers."))
    return issues


def _targets(action: dict) -> list[tuple[str, str | None]]:
    links = action.get("links") or {}
    return [(name, links.get(name)) for name in ("next", "next_if_true", "next_if_false") if name in links]


def _action_issues(actions: list[dict], entry: str | None, path: list, trigger_kind: str) -> list[ValidationIssue]:
    issues: list[ValidationIssue] = []
    if not actions:
        return [ValidationIssue(pointer(path + ["actions"]), "A flow needs at least one action.")]
    ids: dict[str, int] = {}
    for index, action in enumerate(actions):
        here = path + ["actions", index]
        if action.get("id") is not None:
            issues.append(ValidationIssue(pointer(here + ["id"]),
                                          "'id' is not allowed on create: name new actions with 'temporary_id'."))
        temporary = action.get("temporary_id")
        if not temporary:
            issues.append(ValidationIssue(pointer(here + ["temporary_id"]), "Every new action needs a temporary_id."))
        elif temporary in ids:
            issues.append(ValidationIssue(pointer(here + ["temporary_id"]),
                                          f"temporary_id {temporary!r} is used by more than one action."))
        else:
            ids[temporary] = index
        data = action.get("data") or {}
        if action["type"] == "time-delay" and data.get("value", 1) < 1:
            issues.append(ValidationIssue(pointer(here + ["data", "value"]), "A time delay must wait at least 1."))
        if action["type"] == "send-email":
            message = data.get("message") or {}
            if message.get("id") is not None:
                issues.append(ValidationIssue(pointer(here + ["data", "message", "id"]),
                                              "'id' is not allowed on create."))
            if message.get("template_id"):
                issues.append(ValidationIssue(pointer(here + ["data", "message", "template_id"]),
                                              f"Template '{message['template_id']}' does not exist in this account."))
    if issues:
        return issues
    for index, action in enumerate(actions):
        for name, target in _targets(action):
            if target is not None and (target not in ids or target == action["temporary_id"]):
                issues.append(ValidationIssue(pointer(path + ["actions", index, "links", name]),
                                              f"{name} names {target!r}, which is not another action of this flow."))
    if entry not in ids:
        issues.append(ValidationIssue(pointer(path + ["entry_action_id"]),
                                      f"entry_action_id {entry!r} must be the temporary_id of one of the actions."))
    if issues:
        return issues
    if _has_cycle(actions, ids):
        issues.append(ValidationIssue(pointer(path + ["actions"]), "The actions' links go round in a circle."))
    if trigger_kind == "date" and actions[ids[entry]]["type"] != "target-date":
        issues.append(ValidationIssue(pointer(path + ["entry_action_id"]),
                                      "A date-triggered flow must start with its 'target-date' action."))
    return issues


def _has_cycle(actions: list[dict], ids: dict[str, int]) -> bool:
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(name: str) -> bool:
        if state.get(name) == 1:
            return True
        if state.get(name) == 2:
            return False
        state[name] = 1
        for _, target in _targets(actions[ids[name]]):
            if target is not None and visit(target):
                return True
        state[name] = 2
        return False

    return any(visit(name) for name in ids)


def validate_create_flow(body: Any, metric_ids: set[str] | None = None,
                         segment_ids: set[str] | None = None) -> list[ValidationIssue]:
    """Problems with a Create Flow body; ``metric_ids`` (the account's) also checks the ids it names."""
    issues = schema_issues("create_flow.json", "FlowCreateQuery", body)
    if issues:
        return issues
    attributes = body["data"]["attributes"]
    base = ["data", "attributes"]
    if not attributes["name"].strip():
        issues.append(ValidationIssue(pointer(base + ["name"]), "A flow needs a name."))
    definition = attributes["definition"]
    dpath = base + ["definition"]
    triggers = definition["triggers"]
    if len(triggers) != 1:
        return issues + [ValidationIssue(pointer(dpath + ["triggers"]), "Only one trigger is supported.")]
    issues += _trigger_issues(triggers[0], dpath + ["triggers", 0], metric_ids, segment_ids)
    issues += _action_issues(definition["actions"], definition["entry_action_id"], dpath, triggers[0]["type"])
    for key in ("profile_filter", "actions"):
        issues += _unknown_metrics(definition.get(key), dpath + [key], metric_ids)
    return issues


def validate_create_segment(body: Any, metric_ids: set[str] | None = None,
                            segment_ids: set[str] | None = None) -> list[ValidationIssue]:
    """Problems with a Create Segment body; ``metric_ids`` (the account's) also checks the ids it names."""
    issues = schema_issues("create_segment.json", "SegmentCreateQuery", body)
    if issues:
        return issues
    attributes = body["data"]["attributes"]
    base = ["data", "attributes"]
    if not attributes["name"].strip():
        issues.append(ValidationIssue(pointer(base + ["name"]), "A segment needs a name."))
    groups = attributes["definition"]["condition_groups"]
    gpath = base + ["definition", "condition_groups"]
    if not groups:
        issues.append(ValidationIssue(pointer(gpath), "A segment needs at least one condition group."))
    for g, group in enumerate(groups):
        if not group["conditions"]:
            issues.append(ValidationIssue(pointer(gpath + [g, "conditions"]),
                                          "A condition group needs at least one condition."))
        for c, condition in enumerate(group["conditions"]):
            measured = (condition.get("measurement_filter") or {}).get("value")
            if isinstance(measured, (int, float)) and measured < 0:
                issues.append(ValidationIssue(pointer(gpath + [g, "conditions", c, "measurement_filter", "value"]),
                                              "A count or sum cannot be compared with a negative number."))
            for group_id in condition.get("group_ids") or []:
                if segment_ids is not None and group_id not in segment_ids:
                    issues.append(ValidationIssue(pointer(gpath + [g, "conditions", c, "group_ids"]),
                                                  f"List or segment '{group_id}' does not exist in this account."))
    issues += _unknown_metrics(groups, gpath, metric_ids)
    return issues


def validate_flows_response(body: Any) -> list[ValidationIssue]:
    """Problems with a ``GET /api/flows`` answer (GetFlowResponseCollectionCompoundDocument)."""
    return schema_issues("get_flows.json", "GetFlowResponseCollectionCompoundDocument", body, strict=False)


def validate_metrics_response(body: Any) -> list[ValidationIssue]:
    """Problems with a ``GET /api/metrics`` answer (GetMetricResponseCollectionCompoundDocument)."""
    return schema_issues("get_metrics.json", "GetMetricResponseCollectionCompoundDocument", body, strict=False)


def validate_flow_created(body: Any) -> list[ValidationIssue]:
    return schema_issues("create_flow.json", "PostFlowV2Response", body, strict=False)


def validate_segment_created(body: Any) -> list[ValidationIssue]:
    return schema_issues("create_segment.json", "PostSegmentCreateResponse", body, strict=False)


def assert_valid_create_flow(body: Any, metric_ids: set[str] | None = None) -> None:
    """Fail a test with a readable list of problems unless ``body`` is a valid Create Flow body."""
    _raise_if(validate_create_flow(body, metric_ids), "Create Flow body")


def assert_valid_create_segment(body: Any, metric_ids: set[str] | None = None) -> None:
    """Fail a test unless ``body`` is a valid Create Segment body."""
    _raise_if(validate_create_segment(body, metric_ids), "Create Segment body")
