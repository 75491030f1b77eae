"""Did Klaviyo keep a test order's events? Read them back (Get Events, events:read) and say, per event: stored in
Klaviyo (on which profile), accepted but not visible yet (looked for again for a few minutes), or dropped (with
the likely reason: a test domain, an invalid phone number...).

A 202 only means Klaviyo accepted the request: it drops some events afterwards, silently. So the checklist's last
step and a test order's page go by what Get Events returns. The job takes an organizer id and reloads everything,
one job at a time per organizer (a Redis lock); it is enqueued by dotted name, by the sweeper or after a commit,
and every read goes through the gate and the shared limiter (portal.sync.calls). Only test orders are read back:
Klaviyo's read limits are for checking an installation, not for mirroring an account.
"""
import json
import logging
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app
from redis.exceptions import LockError, RedisError
from sqlalchemy import exists, select, true, update
from sqlalchemy.exc import IntegrityError

from portal.contact import klaviyo_drops
from portal.extensions import db
from portal.klaviyo import client
from portal.orders.models import Order
from portal.sync import calls, connection as klaviyo
from portal.sync.health_models import DROPPED, STORED, WAITING, EventCheck
from portal.sync.models import CONNECTED, EVENT, SENT, KlaviyoConnection, OutboxEvent
from portal.sync.queue import queue, redis_connection
from portal.types import utcnow

log = logging.getLogger("portal.sync")

JOB = "portal.sync.verify.run"
SCOPE = "events:read"
LOOKBACK = timedelta(hours=2)  # test orders placed this recently are read back by themselves
MAX_PAGES = 10  # 2,000 events of one metric in one test order's second is more than any test makes
TEST_DOMAIN = "{email} is at {domain}, a test domain: Klaviyo accepts events for such addresses and drops them."


def marker(organizer_id: int) -> str:
    return f"portal:verify-queued:{organizer_id}"


def enqueue(organizer_id: int) -> bool:
    """Ask a worker to read this organizer's test-order events back. Call after the commit."""
    try:
        if redis_connection().set(marker(organizer_id), 1, nx=True, ex=5):
            queue().enqueue(JOB, organizer_id, result_ttl=0, failure_ttl=24 * 3600, job_timeout=300)
        return True
    except RedisError as exc:
        log.warning("verify enqueue failed organizer=%s error=%s", organizer_id, type(exc).__name__)
        return False


def _new_rows(organizer_id: int | None = None):
    """Accepted events of recent test orders that were never looked for."""
    query = (select(OutboxEvent).join(Order, Order.id == OutboxEvent.order_id)
             .where(Order.is_test == true(), Order.placed_at >= utcnow() - LOOKBACK, OutboxEvent.status == SENT,
                    OutboxEvent.kind == EVENT,  # a list subscription is no event to read back
                    ~exists().where(EventCheck.outbox_id == OutboxEvent.id)))
    return query.where(OutboxEvent.organizer_id == organizer_id) if organizer_id is not None else query


def sweep() -> None:
    """Enqueue the organizers with test-order events to look for: new ones, and looks that are due."""
    new = db.session.scalars(_new_rows().with_only_columns(OutboxEvent.organizer_id).distinct())
    due = db.session.scalars(select(EventCheck.organizer_id).where(
        EventCheck.state == WAITING, EventCheck.next_look_at <= utcnow()).distinct())
    organizers = set(new) | set(due)
    if organizers:
        connections = db.session.scalars(select(KlaviyoConnection).where(
            KlaviyoConnection.organizer_id.in_(organizers), KlaviyoConnection.status == CONNECTED))
        organizers = {c.organizer_id for c in connections if klaviyo.has_scopes(c, SCOPE)}
    db.session.rollback()
    for organizer_id in organizers:
        enqueue(organizer_id)


def look_again(order: Order) -> None:
    """A person asked to check this test order in Klaviyo now (the automatic looks ended, say). Commits."""
    now = utcnow()
    window = timedelta(seconds=current_app.config["VERIFY_WINDOW_SECONDS"])
    db.session.execute(update(EventCheck).where(
        EventCheck.outbox_id.in_(select(OutboxEvent.id).where(OutboxEvent.order_id == order.id)))
        .values(state=WAITING, next_look_at=now, give_up_at=now + window, reason=None))
    db.session.commit()
    enqueue(order.organizer_id)


# --- the job --------------------------------------------------------------------------------------------

def run(organizer_id: int) -> None:
    """Read this organizer's due test-order events back from Klaviyo (enqueued by dotted name, after commit)."""
    r = redis_connection()
    try:
        r.delete(marker(organizer_id))
    except RedisError:
        pass
    lock = r.lock(f"portal:verify:{organizer_id}", timeout=120)
    if not lock.acquire(blocking=False):
        return  # another worker is looking; the sweeper enqueues what is left
    try:
        _work(organizer_id)
    finally:
        db.session.rollback()
        try:
            lock.release()
        except LockError:
            pass


def _work(organizer_id: int) -> None:
    connection = klaviyo.connection_for(organizer_id)
    if connection is None or connection.status != CONNECTED or not klaviyo.has_scopes(connection, SCOPE):
        return
    _add_checks(organizer_id)
    now = utcnow()
    due = db.session.execute(
        select(EventCheck, OutboxEvent).join(OutboxEvent, OutboxEvent.id == EventCheck.outbox_id)
        .where(EventCheck.organizer_id == organizer_id, EventCheck.state == WAITING, EventCheck.next_look_at <= now)
        .order_by(EventCheck.id).limit(500)).all()
    if not due:
        return
    try:
        found = _find(connection, [row for _, row in due])
    except calls.Wait as wait:
        _later([check for check, _ in due], wait.seconds)
        return
    except calls.NoPermission:
        _later([check for check, _ in due], 60)
        return
    except calls.Stop:
        return
    if found is None:  # no usable answer from Klaviyo: look again in a while
        _later([check for check, _ in due], 30)
        return
    now = utcnow()
    for check, row in due:
        _settle(check, row, found.get((row.metric, row.unique_id)), now)
    db.session.commit()


def _add_checks(organizer_id: int) -> None:
    now = utcnow()
    window = timedelta(seconds=current_app.config["VERIFY_WINDOW_SECONDS"])
    for row in db.session.scalars(_new_rows(organizer_id).limit(500)):
        db.session.add(EventCheck(outbox_id=row.id, organizer_id=organizer_id, state=WAITING, next_look_at=now,
                                  give_up_at=max(row.sent_at or now, now - window) + window))
    try:
        db.session.commit()
    except IntegrityError:  # a look that raced us (after a lost lock) made them already
        db.session.rollback()


def _later(checks: list[EventCheck], seconds: float) -> None:
    at = utcnow() + timedelta(seconds=seconds)
    db.session.execute(update(EventCheck).where(EventCheck.id.in_([c.id for c in checks]),
                                                EventCheck.state == WAITING).values(next_look_at=at))
    db.session.commit()


@dataclass(frozen=True)
class Found:
    klaviyo_event_id: str
    profile_id: str | None
    metric_id: str | None


def _event_time(row: OutboxEvent) -> str:
    return json.loads(row.payload)["data"]["attributes"]["time"]


def _find(connection: KlaviyoConnection, rows: list[OutboxEvent]) -> dict[tuple[str, str], Found] | None:
    """What Klaviyo has of these events, by (metric, unique_id); None when Klaviyo could not be asked now."""
    metric_ids = _metric_ids(connection, {row.metric for row in rows})
    found: dict[tuple[str, str], Found] = {}
    for metric in sorted({row.metric for row in rows}):
        mine = [row for row in rows if row.metric == metric]
        wanted = {row.unique_id for row in mine}
        times = sorted(_event_time(row) for row in mine)
        window = f"greater-or-equal(datetime,{times[0]}),less-or-equal(datetime,{times[-1]})"
        # Without metrics:read the events of that second are read whatever their metric; with it, one metric's
        # (none at all when Klaviyo has no metric of that name yet: then nothing of it is stored).
        for metric_id in [None] if metric_ids is None else metric_ids.get(metric, []):
            flt = f"equals(metric_id,'{metric_id}'),{window}" if metric_id else window
            params = {"filter": flt, "fields[event]": "event_properties,datetime", "sort": "datetime",
                      "page[size]": "200"}
            for _page in range(MAX_PAGES):
                response = calls.read(connection, "events_read", client.get_events, params)
                if not response.accepted or not isinstance(response.body, dict):
                    log.info("verify.read_failed organizer=%s status=%s", connection.organizer_id, response.status)
                    return None
                for event in response.body.get("data") or []:
                    unique_id = ((event.get("attributes") or {}).get("event_properties") or {}).get("$event_id")
                    if unique_id in wanted:
                        relationships = event.get("relationships") or {}
                        found[(metric, unique_id)] = Found(
                            event.get("id"), ((relationships.get("profile") or {}).get("data") or {}).get("id"),
                            ((relationships.get("metric") or {}).get("data") or {}).get("id") or metric_id)
                params = calls.next_link_params(response.body, params)
                if params is None:
                    break
    return found


def _metric_ids(connection: KlaviyoConnection, names: set[str]) -> dict[str, list[str]] | None:
    """Metric name -> the ids of every metric of that name (one per integration); None without metrics:read."""
    if not klaviyo.has_scopes(connection, "metrics:read"):
        return None
    ids: dict[str, list[str]] = {}
    params: dict | None = {"fields[metric]": "name"}
    for _page in range(25):
        try:
            response = calls.read(connection, "metrics", client.get_metrics, params)
        except calls.NoPermission:
            return None
        if not response.accepted or not isinstance(response.body, dict):
            return None
        for metric in response.body.get("data") or []:
            name = (metric.get("attributes") or {}).get("name")
            if name in names:
                ids.setdefault(name, []).append(metric["id"])
        params = calls.next_link_params(response.body, params)
        if params is None:
            break
    return ids


def _settle(check: EventCheck, row: OutboxEvent, hit: Found | None, now) -> None:
    values = {"looks": check.looks + 1, "last_look_at": now}
    if hit is not None:
        values.update(state=STORED, profile_id=hit.profile_id, klaviyo_event_id=hit.klaviyo_event_id,
                      metric_id=hit.metric_id, reason=None)
    elif likely_reason(row, certain_only=True):
        values.update(state=DROPPED, reason=likely_reason(row))  # Klaviyo never keeps these: no need to wait
    elif now >= check.give_up_at:
        values.update(state=DROPPED, reason=likely_reason(row))
    else:
        base = current_app.config["VERIFY_RECHECK_SECONDS"]
        values["next_look_at"] = now + timedelta(seconds=min(base * 2 ** min(check.looks, 6), 60))
    db.session.execute(update(EventCheck).where(EventCheck.id == check.id, EventCheck.state == WAITING)
                       .values(**values))


def likely_reason(row: OutboxEvent, certain_only: bool = False) -> str | None:
    """Why Klaviyo most likely dropped an accepted event. With certain_only, only a reason that never fails
    (a test domain), else also a guess."""
    email = row.profile_key
    if klaviyo_drops(email):
        return TEST_DOMAIN.format(email=email, domain=email.rpartition("@")[2])
    if certain_only:
        return None
    profile = json.loads(row.payload)["data"]["attributes"]["profile"]["data"]["attributes"]
    if not profile.get("email") and profile.get("phone_number"):
        return "The profile has only a phone number, and Klaviyo did not accept it as a valid one (E.164)."
    return ("Klaviyo accepted it but did not keep it. Likely: it considers the address invalid or suppressed, or the "
            "profile was deleted. Check the address on the order.")
