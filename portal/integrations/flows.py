"""The "Set up flows and segments" panel as the organizer uses it: the recipes with their state, asking for one
or all of them, retrying, and what happens at Reconnect and Disconnect.

Asking writes a row and commits; the sync (portal.sync.setup) creates it in Klaviyo after the commit. The
flows and segments permissions are asked for only here, when the organizer chooses to add something.
"""
import json
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from redis.exceptions import RedisError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from portal.events.models import Event
from portal.extensions import db
from portal.klaviyo import recipes
from portal.klaviyo.checkout import STARTED_CHECKOUT
from portal.klaviyo.recipes import FLOW, Recipe
from portal.sync import abandoned, connection as klaviyo, limiter, setup, setup_metrics
from portal.sync.models import KlaviyoConnection
from portal.sync.setup_models import (
    CANCELLED, CREATED, FAILED, NEEDS_PERMISSION, PENDING, QUEUED, WORKING, SetupItem,
)
from portal.types import utcnow

FEATURE = "flows"
ADD_ALL_EVENTS = 20  # "Add all" makes a segment for each upcoming event, up to this many


@dataclass
class Row:
    """One line of the panel: a recipe (or one event's segment) and where it stands."""

    recipe: Recipe
    key: str
    item: SetupItem | None
    state: str  # available | waits | needs_permission | queued | working | created | failed
    link: str | None = None
    label: str = ""
    note: str = ""  # something the organizer must do in the portal for it to work

    @property
    def dom_id(self) -> str:
        return self.key.replace(":", "-")


def _state(item: SetupItem | None, connection: KlaviyoConnection) -> str:
    if item is None or item.status == CANCELLED:
        return "available"
    if item.status == CREATED:
        return "created" if item.account_id == connection.account_id else "available"
    return item.status


def klaviyo_link(item: SetupItem) -> str:
    """Where the object opens in Klaviyo (or in the sandbox, which serves the same paths)."""
    base = current_app.config["KLAVIYO_OAUTH_BASE"].rstrip("/")
    if item.kind == FLOW:
        return f"{base}/flow/{item.klaviyo_id}/edit"
    return f"{base}/list/{item.klaviyo_id}/members"


def _items(organizer_id: int) -> dict[str, SetupItem]:
    return {item.key: item for item in db.session.scalars(
        select(SetupItem).where(SetupItem.organizer_id == organizer_id).order_by(SetupItem.id))}


def events_for(organizer_id: int) -> list[Event]:
    """The events a segment can be made for: the live ones, newest first."""
    return list(db.session.scalars(select(Event).where(Event.organizer_id == organizer_id, Event.status == "live")
                                   .order_by(Event.starts_at.desc())))


def _row(recipe: Recipe, key: str, item: SetupItem | None, connection: KlaviyoConnection, label: str = "") -> Row:
    state = "waits" if recipe.waits_for and item is None else _state(item, connection)
    row = Row(recipe, key, item, state, label=label or recipe.title)
    if STARTED_CHECKOUT in recipe.metrics and not abandoned.enabled(connection.organizer_id):
        row.note = "Started Checkout is switched off in View Details: turn it on, or this flow never starts."
    if state == "created":
        row.link = klaviyo_link(item)
    return row


def panel(organizer_id: int, connection: KlaviyoConnection) -> dict:
    """Everything the panel shows: rows by kind, what is on its way, and how long that takes."""
    items = _items(organizer_id)
    flows, segments, event_rows = [], [], []
    for recipe in recipes.RECIPES:
        if recipe.key == "event_segment":
            for key, item in items.items():
                if recipes.base_key(key) == "event_segment" and item.status != CANCELLED:
                    event_rows.append(_row(recipe, key, item, connection,
                                           label=f"Attendees of {item.options.get('event_name', 'an event')}"))
            segments.append(_row(recipe, recipe.key, None, connection))
            continue
        (flows if recipe.kind == FLOW else segments).append(_row(recipe, recipe.key, items.get(recipe.key), connection))
    rows = flows + segments + event_rows
    on_way = [row for row in rows if row.state in (QUEUED, WORKING)]
    soon = [row for row in on_way if row.item.next_attempt_at <= utcnow() + timedelta(seconds=60)]
    return {
        "flows": flows, "segments": segments, "event_rows": event_rows, "rows": rows,
        "events": events_for(organizer_id),
        "busy": len(on_way), "eta": estimate(connection, soon),
        "failed": sum(1 for row in rows if row.state == FAILED),
        "created": sum(1 for row in rows if row.state == "created"),
        "needs_permission": any(row.state == NEEDS_PERMISSION for row in rows)
        or (FEATURE in connection.feature_list and bool(klaviyo.missing_scopes(connection, FEATURE))),
        "missing_scopes": klaviyo.missing_scopes(connection, FEATURE),
        "to_add": len(_all_wanted(organizer_id, connection, {})),
        "add_all_eta": estimate(connection, None, _all_wanted(organizer_id, connection, {})),
        "vip_default": recipes.VIP_DEFAULT, "amount_default": recipes.AMOUNT_DEFAULT,
        "example_email": setup_metrics.example_email(),
    }


def estimate(connection: KlaviyoConnection, rows: list[Row] | None, keys: list[str] | None = None) -> int:
    """Seconds to make these at Klaviyo's limits: Create Flow and Create Segment allow 1 a second and 15 a
    minute each (we keep under it), one after another, plus a moment to look up the metrics."""
    kinds = [row.recipe.kind for row in rows] if rows is not None else [recipes.recipe_for(k).kind for k in keys]
    if not kinds:
        return 0
    total = 2.0
    for kind, endpoint in ((FLOW, "flows_create"), (recipes.SEGMENT, "segments_create")):
        count = kinds.count(kind)
        if not count:
            continue
        per_second, per_minute = limiter.pace(endpoint)
        total += (count - 1) // per_minute * 60 + ((count - 1) % per_minute) / per_second + 1
    return int(round(total))


def daily_left(connection: KlaviyoConnection) -> dict[str, int | None]:
    """How many flows and segments Klaviyo still allows us today (None when Redis cannot say)."""
    installation = klaviyo.installation_key(connection)
    try:
        return {"flows": limiter.daily_left(installation, "flows_create"),
                "segments": limiter.daily_left(installation, "segments_create")}
    except RedisError:
        return {"flows": None, "segments": None}


# --- asking -------------------------------------------------------------------------------------

class Refused(ValueError):
    """The organizer's input cannot be used; the message says what to change."""


def _options(recipe: Recipe, form, organizer_id: int) -> tuple[str, dict]:
    """(item key, options) for one recipe from the form. Raises Refused with a message to show."""
    if recipe.option == "text":
        text, problem = recipes.vip_text(form.get("text"))
        if problem:
            raise Refused(problem)
        return recipe.key, {"text": text}
    if recipe.option == "amount":
        value, problem = recipes.amount(form.get("amount"))
        if problem:
            raise Refused(problem)
        return recipe.key, {"amount": value}
    if recipe.option == "event":
        raw = (form.get("event_id") or "").strip()
        event = db.session.get(Event, int(raw)) if raw.isdigit() and len(raw) < 12 else None
        if event is None or event.organizer_id != organizer_id or event.status != "live":
            raise Refused("Pick one of your live events for this segment.")
        return f"event_segment:{event.id}", {"event_name": event.name}
    return recipe.key, {}


def _ask(connection: KlaviyoConnection, key: str, options: dict, needs_permission: bool) -> bool:
    """Write (or re-open) the item. True when it is new work; False when it is in Klaviyo or on its way."""
    item = db.session.scalar(select(SetupItem).where(SetupItem.organizer_id == connection.organizer_id,
                                                     SetupItem.key == key))
    if item is not None and (item.status in PENDING or _state(item, connection) == "created"):
        return False
    recipe = recipes.recipe_for(key)
    if item is None:
        item = SetupItem(organizer_id=connection.organizer_id, key=key, kind=recipe.kind)
        db.session.add(item)
    now = utcnow()
    item.name = recipes.name(key, current_app.config["PRODUCT_NAME"], options)
    item.options_json = json.dumps(options, sort_keys=True)
    item.status = NEEDS_PERMISSION if needs_permission else QUEUED
    item.detail = setup.NEEDS_PERMISSION_TEXT if needs_permission else None
    item.klaviyo_id, item.account_id, item.found_existing, item.done_at = None, None, False, None
    item.attempts, item.next_attempt_at, item.requested_at, item.updated_at = 0, now, now, now
    return True


def _commit_and_enqueue(organizer_id: int, queued: bool) -> None:
    try:
        db.session.commit()
    except IntegrityError:  # the same recipe asked for twice at once: the other request has it
        db.session.rollback()
    if queued:
        setup.enqueue(organizer_id)


def add(connection: KlaviyoConnection, key: str, form) -> tuple[str, str]:
    """Ask for one recipe. Returns (flash category, message)."""
    recipe = recipes.BY_KEY[key]
    if recipe.waits_for:
        return "error", recipe.waits_for
    try:
        item_key, options = _options(recipe, form, connection.organizer_id)
    except Refused as exc:
        return "error", str(exc)
    needs_permission = klaviyo.turn_on(connection, FEATURE)
    new = _ask(connection, item_key, options, needs_permission)
    _commit_and_enqueue(connection.organizer_id, new and not needs_permission)
    if needs_permission:
        return "warning", ("Klaviyo needs one more permission for flows and segments. Click Reconnect: "
                           f"{recipe.title} is created right after.")
    if not new:
        return "info", f"{recipe.title} is already in Klaviyo, or on its way."
    return "success", f"Adding {recipe.title} to Klaviyo as a draft."


def _all_wanted(organizer_id: int, connection: KlaviyoConnection, form) -> list[str]:
    """Item keys "Add all" would ask for: every recipe offered and not in Klaviyo or on its way."""
    items = _items(organizer_id)
    keys = []
    for recipe in recipes.RECIPES:
        if recipe.waits_for:
            continue
        if recipe.key == "event_segment":
            upcoming = [e for e in events_for(organizer_id) if e.ends_at > utcnow()][:ADD_ALL_EVENTS]
            candidates = [f"event_segment:{event.id}" for event in upcoming]
        else:
            candidates = [recipe.key]
        for key in candidates:
            item = items.get(key)
            if item is None or not (item.status in PENDING or _state(item, connection) == "created"):
                keys.append(key)
    return keys


def add_all(connection: KlaviyoConnection, form) -> tuple[str, str]:
    """Ask for every recipe offered (a segment for each upcoming event), with the VIP text and amount typed."""
    organizer_id = connection.organizer_id
    wanted = _all_wanted(organizer_id, connection, form)
    if not wanted:
        return "info", "Everything offered here is already in Klaviyo, or on its way."
    typed = {"text": form.get("text"), "amount": form.get("amount")}
    try:
        asks = [_options(recipes.recipe_for(key), {**typed, "event_id": key.partition(":")[2]}, organizer_id)
                for key in wanted]
    except Refused as exc:
        return "error", str(exc)
    needs_permission = klaviyo.turn_on(connection, FEATURE)
    new = sum(_ask(connection, key, options, needs_permission) for key, options in asks)
    _commit_and_enqueue(organizer_id, bool(new) and not needs_permission)
    if needs_permission:
        return "warning", (f"Klaviyo needs one more permission for flows and segments. Click Reconnect: the {new} "
                           "drafts are created right after.")
    return "success", f"Adding {new} drafts to Klaviyo: about {estimate(connection, None, wanted)} s at Klaviyo's limits."


def retry(connection: KlaviyoConnection, item: SetupItem) -> tuple[str, str]:
    if item.status != FAILED:
        return "info", "It is not waiting for a retry."
    needs_permission = bool(klaviyo.missing_scopes(connection, FEATURE))
    item.status = NEEDS_PERMISSION if needs_permission else QUEUED
    item.detail = setup.NEEDS_PERMISSION_TEXT if needs_permission else None
    item.attempts, item.next_attempt_at, item.updated_at = 0, utcnow(), utcnow()
    _commit_and_enqueue(connection.organizer_id, not needs_permission)
    return "success", f"Trying {recipes.recipe_for(item.key).title} again."


def item_or_none(organizer_id: int, item_id: int) -> SetupItem | None:
    item = db.session.get(SetupItem, item_id)
    return item if item is not None and item.organizer_id == organizer_id else None


def resume(organizer_id: int) -> None:
    """After a Reconnect: what waited for the permission (or for the connection) is created now."""
    connection = klaviyo.connection_for(organizer_id)
    if connection is None or not connection.is_active or klaviyo.missing_scopes(connection, FEATURE):
        return
    waiting = list(db.session.scalars(select(SetupItem).where(SetupItem.organizer_id == organizer_id,
                                                              SetupItem.status.in_((NEEDS_PERMISSION, QUEUED)))))
    for item in waiting:
        item.status, item.detail, item.next_attempt_at, item.updated_at = QUEUED, None, utcnow(), utcnow()
    db.session.commit()
    if waiting:
        setup.enqueue(organizer_id)


def cancel(organizer_id: int) -> None:
    """After a Disconnect: nothing that waited is made."""
    setup.cancel_pending(organizer_id)
    db.session.commit()
