"""What the sandbox shows of lists and their subscribers, and its local controls for them.

* On the received-events page, each list with the profiles subscribed to it: channel, consent source
  (``custom_source``), when consent was given, and whether it came as a historical import
  (``sandbox/_lists.html``, included by ``events.html``).
* ``GET /_sandbox/lists.json`` (lists, deleted ones too, with their subscribers), ``POST /_sandbox/lists``
  (a list made in Klaviyo's own screens) and ``DELETE /_sandbox/lists/<id>`` (the organizer deletes a list in
  Klaviyo).
"""

from __future__ import annotations

import time

from flask import Blueprint, jsonify, request

from portal.sandbox import lists_store, objects_store
from portal.sandbox.context import accounts, db

bp = Blueprint("lists_pages", __name__)
OPT_IN_PROCESSES = ("single_opt_in", "double_opt_in")


def _bad(message: str, status: int = 400):
    response = jsonify({"error": message})
    response.status_code = status
    return response


def lists_with_subscribers(account_id: str | None = None, include_deleted: bool = False) -> list[dict]:
    """Every list (of one account, or all), oldest first, each with its subscribers newest first; subscriptions
    sent without a list come last, under a list of their own with id ""."""
    conn, now = db(), time.time()
    for acc in accounts():
        if account_id in (None, acc["id"]):
            lists_store.ensure_defaults(conn, acc["id"], now)
    subscribed: dict[str, list[dict]] = {}
    for item in lists_store.subscriptions(conn, account_id):
        item["consented_at_shown"] = item["consented_at"] or objects_store.iso(item["received_at"])
        subscribed.setdefault(item["list_id"], []).append(item)
    out = [{**item, "created": objects_store.iso(item["created_at"]), "deleted": item["deleted_at"] is not None,
            "subscribers": subscribed.get(item["id"], [])}
           for item in lists_store.lists(conn, account_id, include_deleted=include_deleted)]
    if subscribed.get(lists_store.NO_LIST):
        out.append({"id": lists_store.NO_LIST, "name": "(no list: the account's default opt-in)", "deleted": False,
                    "opt_in_process": "single_opt_in", "subscribers": subscribed[lists_store.NO_LIST]})
    return out


@bp.app_context_processor
def _lists_for_templates():
    return {"sandbox_lists": lists_with_subscribers}


@bp.get("/_sandbox/lists.json")
def lists_json():
    """Lists, deleted ones too, with their subscribers; ?account_id= narrows."""
    return jsonify({"lists": lists_with_subscribers(request.args.get("account_id") or None, include_deleted=True)})


@bp.post("/_sandbox/lists")
def add_list():
    """A list made in Klaviyo's own screens: {"name", "opt_in_process"?, "account_id"?}."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body["name"].strip():
        return _bad('Send {"name": "VIP buyers", "opt_in_process": "double_opt_in"}.')
    opt_in = body.get("opt_in_process", "single_opt_in")
    if opt_in not in OPT_IN_PROCESSES:
        return _bad(f"opt_in_process must be one of {list(OPT_IN_PROCESSES)}.")
    account_id = body.get("account_id") or accounts()[0]["id"]
    if account_id not in {a["id"] for a in accounts()}:
        return _bad("No such account.", 404)
    made = lists_store.create_list(db(), account_id=account_id, installation_id=None, name=body["name"].strip()[:255],
                                   opt_in_process=opt_in, now=time.time())
    return jsonify(made), 201


@bp.delete("/_sandbox/lists/<list_id>")
def delete_list(list_id: str):
    """The organizer deletes a list in Klaviyo: the API stops showing it and subscribing to it is a 404."""
    if not lists_store.delete_list(db(), list_id, time.time()):
        return _bad("No such list (or it is deleted already).", 404)
    return jsonify({"deleted": list_id})
