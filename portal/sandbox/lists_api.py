"""Klaviyo's list endpoints: Get Lists, Create List and Bulk Subscribe Profiles.

They go through the same guard as the event endpoints (api.guard: bearer token, revision, every scope the slice
names, its burst, steady and daily limits, content type), then check their query parameters against the slice
(objects_api's reader: an unknown parameter, field, sort or page size is a 400) and their bodies with lists.py.

* Get Lists: 10 a page at most, filtered by name, id, created or updated, sorted as the slice allows. A deleted
  list is gone from it.
* Create List: 201 with the new list; the opt-in process defaults to the account's (single opt-in here).
* Bulk Subscribe Profiles: 202 and no body, as Klaviyo answers. A list that does not exist in the account (never
  did, or was deleted) is a 404. Profiles at Klaviyo's test domains are accepted and dropped, as events are.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

from flask import Blueprint, g, request

from portal.sandbox import api, filters, jsonapi, lists, lists_store, objects_api, objects_store, schemas, store
from portal.sandbox.context import db

bp = Blueprint("lists", __name__)
bp.before_request(api.guard)
bp.after_request(api.rate_headers)

LISTS_PAGE = 10  # "Returns a maximum of 10 results per page."
ACCOUNT_DEFAULT_OPT_IN = "single_opt_in"


def _list_resource(item: dict, fields: list[str] | None, include: list[str]) -> dict:
    attributes = {"name": item["name"], "created": objects_store.iso(item["created_at"]),
                  "updated": objects_store.iso(item["updated_at"]), "opt_in_process": item["opt_in_process"]}
    relationships = {name: objects_api._relationship("lists", item["id"], name, [] if name in include else None)
                     for name in ("profiles", "tags", "flow-triggers")}
    return {"type": "list", "id": item["id"], "attributes": objects_api._sparse(attributes, fields),
            "relationships": relationships, "links": {"self": f"{objects_api._base()}/api/lists/{item['id']}/"}}


def _filter_values(item: dict) -> dict:
    return {"id": item["id"], "name": item["name"], "created": datetime.fromtimestamp(item["created_at"], UTC),
            "updated": datetime.fromtimestamp(item["updated_at"], UTC)}


@bp.get("/api/lists", strict_slashes=False)
def get_lists():
    """The account's lists, up to 10 a page."""
    try:
        params = objects_api._params("get_lists.json")
        conditions = filters.parse(params["filter"], objects_api._filter_fields("get_lists.json"), "list") \
            if "filter" in params else []
        offset = objects_api._offset(params)
    except objects_api.BadParameter as exc:
        return objects_api._bad_parameter(exc)
    except filters.FilterError as exc:
        return jsonapi.error_response(400, "invalid", str(exc), parameter="filter")
    conn, account_id = db(), g.token["account_id"]
    lists_store.ensure_defaults(conn, account_id, time.time())
    found = [item for item in lists_store.lists(conn, account_id) if filters.matches(conditions, _filter_values(item))]
    sort = params.get("sort")
    if sort:
        found.sort(key=lambda item: _filter_values(item)[sort.lstrip("-")], reverse=sort.startswith("-"))
    size = params.get("page[size]", LISTS_PAGE)
    include = params.get("include", [])
    body = {"data": [_list_resource(item, params.get("fields[list]"), include)
                     for item in found[offset:offset + size]],
            "links": objects_api._page_links("/api/lists", offset, size, len(found))}
    if include:
        body["included"] = []  # the sandbox keeps no tags, and lists here trigger no flows
    return objects_api._json(body)


@bp.post("/api/lists", strict_slashes=False)
def create_list():
    """Create a list: 201 with the list, as Klaviyo answers."""
    try:
        params = objects_api._params("create_list.json")
    except objects_api.BadParameter as exc:
        return objects_api._bad_parameter(exc)
    body, problem = api._read_body()
    if problem:
        return problem
    issues = lists.validate_create_list(body)
    if issues:
        return objects_api._invalid(issues)
    attributes = body["data"]["attributes"]
    created = lists_store.create_list(db(), account_id=g.token["account_id"], installation_id=g.token["installation_id"],
                                      name=attributes["name"].strip(),
                                      opt_in_process=attributes.get("opt_in_process") or ACCOUNT_DEFAULT_OPT_IN,
                                      now=time.time())
    resource = _list_resource(created, params.get("fields[list]"), [])
    return objects_api._json({"data": resource, "links": {"self": f"{objects_api._base()}/api/lists/"}}, 201)


def _subscription_row(profile: dict, job: dict, chosen: dict | None, now: float) -> dict:
    attributes = profile["attributes"]
    channels = {name: value for name, value in (attributes["subscriptions"] or {}).items() if value is not None}
    historical = job.get("historical_import") is True
    consented = next((value["marketing"].get("consented_at") for value in channels.values()
                      if value.get("marketing")), None)
    double = chosen is not None and chosen["opt_in_process"] == "double_opt_in"
    return {"account_id": g.token["account_id"], "installation_id": g.token["installation_id"],
            "list_id": chosen["id"] if chosen else lists_store.NO_LIST, "profile_key": schemas.profile_key(profile),
            "email": attributes.get("email"), "phone_number": attributes.get("phone_number"),
            "channels": " ".join(sorted(channels)),
            # A historical import skips the confirmation e-mail of a double opt-in list.
            "status": lists_store.AWAITING_CONFIRMATION if double and not historical else lists_store.SUBSCRIBED,
            "custom_source": job.get("custom_source"), "historical_import": historical, "consented_at": consented,
            "received_at": now}


@bp.post("/api/profile-subscription-bulk-create-jobs", strict_slashes=False)
def bulk_subscribe_profiles():
    """Subscribe up to 1,000 profiles (to a list, when one is named): 202 and no body, or 400/404."""
    body, problem = api._read_body()
    if problem:
        return problem
    issues = lists.validate_bulk_subscribe(body)
    if issues:
        return objects_api._invalid(issues)
    conn, account_id, now = db(), g.token["account_id"], time.time()
    lists_store.ensure_defaults(conn, account_id, now)
    wanted = lists.list_relationship(body)
    chosen = None
    if wanted is not None:
        chosen = lists_store.get_list(conn, wanted, account_id, include_deleted=False)
        if chosen is None:
            return jsonapi.error_response(404, "not_found", f"A list with id {json.dumps(wanted)} does not exist.",
                                          pointer="/data/relationships/list/data/id")
    job = body["data"]["attributes"]
    rows, dropped = [], 0
    for _, profile in lists.subscribed_profiles(body):
        if schemas.is_test_email(profile["attributes"].get("email")):
            dropped += 1  # Klaviyo: 202, then the test address is left out
            continue
        rows.append(_subscription_row(profile, job, chosen, now))
    lists_store.subscribe(conn, rows)
    store.bump(conn, "dropped_test_addresses", dropped)
    return api._accepted()
