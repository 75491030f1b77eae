"""The double-send guard: does another integration already send Placed Order to this Klaviyo account?

A Shopify store that runs Klaviyo's own Shopify integration gets a Placed Order from it for every order. Connect
the same store here and Klaviyo gets a second Placed Order (ours) for each: revenue counts twice. So at Connect,
and when a Shopify store is connected, the portal lists the account's metrics (Get Metrics, metrics:read) and
looks for a Placed Order metric that is not ours. Klaviyo keeps one metric per name and integration; ours is the
integration that also holds the metrics only this portal sends (Ordered Experience, Registered Attendee...), and
before we have sent anything every Placed Order there is someone else's.

The job takes an organizer id, is enqueued after the commit by dotted name, and is safe to run twice: it only
works a check that is pending and due, and writes its result in one guarded update.
"""
import json
import logging
from datetime import timedelta

from redis.exceptions import RedisError
from sqlalchemy import select, update

from portal.extensions import db
from portal.klaviyo import client
from portal.klaviyo.lifecycle import CANCELLED_REGISTRATION, EVENT_CHANGED
from portal.klaviyo.payloads import ORDERED_EXPERIENCE, PLACED_ORDER, REGISTERED_ATTENDEE
from portal.sync import calls, connection as klaviyo
from portal.sync.health_models import (
    GUARD_CLEAR, GUARD_FAILED, GUARD_FOUND, GUARD_NO_PERMISSION, GUARD_PENDING, MetricGuard,
)
from portal.sync.models import CONNECTED, KlaviyoConnection
from portal.sync.queue import queue, redis_connection
from portal.types import utcnow

log = logging.getLogger("portal.sync")

JOB = "portal.sync.metric_guard.run"
SCOPE = "metrics:read"
OURS_ONLY = (ORDERED_EXPERIENCE, REGISTERED_ATTENDEE, CANCELLED_REGISTRATION, EVENT_CHANGED)
MAX_ATTEMPTS = 6


def request_check(organizer_id: int) -> None:
    """Look at the account's metrics again soon (after Connect, or a Shopify store connected). Commits, then
    enqueues the job."""
    guard = db.session.scalar(select(MetricGuard).where(MetricGuard.organizer_id == organizer_id))
    if guard is None:
        guard = MetricGuard(organizer_id=organizer_id)
        db.session.add(guard)
    now = utcnow()
    guard.status, guard.requested_at, guard.next_attempt_at, guard.attempts = GUARD_PENDING, now, now, 0
    guard.detail = None
    db.session.commit()
    enqueue(organizer_id)


def enqueue(organizer_id: int) -> None:
    try:
        if redis_connection().set(f"portal:guard-queued:{organizer_id}", 1, nx=True, ex=5):
            queue().enqueue(JOB, organizer_id, result_ttl=0, failure_ttl=24 * 3600, job_timeout=120)
    except RedisError as exc:  # the sweeper enqueues it later
        log.warning("guard enqueue failed organizer=%s error=%s", organizer_id, type(exc).__name__)


def sweep() -> None:
    """Enqueue the checks that are due (a rate-limit wait over, a retry after no answer)."""
    due = db.session.scalars(
        select(MetricGuard.organizer_id)
        .join(KlaviyoConnection, KlaviyoConnection.organizer_id == MetricGuard.organizer_id)
        .where(MetricGuard.status == GUARD_PENDING, MetricGuard.next_attempt_at <= utcnow(),
               KlaviyoConnection.status == CONNECTED)).all()
    db.session.rollback()
    for organizer_id in due:
        enqueue(organizer_id)


def _finish(guard: MetricGuard, **values) -> None:
    db.session.execute(update(MetricGuard).where(MetricGuard.id == guard.id, MetricGuard.status == GUARD_PENDING,
                                                 MetricGuard.requested_at == guard.requested_at).values(**values))
    db.session.commit()


def run(organizer_id: int) -> None:
    """Look at the account's metrics and record whether another integration sends Placed Order."""
    try:
        redis_connection().delete(f"portal:guard-queued:{organizer_id}")
    except RedisError:
        pass
    guard = db.session.scalar(select(MetricGuard).where(MetricGuard.organizer_id == organizer_id))
    now = utcnow()
    if guard is None or guard.status != GUARD_PENDING or guard.next_attempt_at > now:
        return
    connection = klaviyo.connection_for(organizer_id)
    if connection is None or connection.status != CONNECTED:
        return  # looked at once it is connected again (sweep)
    if not klaviyo.has_scopes(connection, SCOPE):
        _finish(guard, status=GUARD_NO_PERMISSION, checked_at=now)
        return
    try:
        metrics = _metrics(connection)
    except calls.Wait as wait:
        _finish(guard, next_attempt_at=now + timedelta(seconds=wait.seconds))
        return
    except calls.NoPermission:
        _finish(guard, status=GUARD_NO_PERMISSION, checked_at=now)
        return
    except calls.Stop:
        return
    if metrics is None:
        attempts = guard.attempts + 1
        if attempts >= MAX_ATTEMPTS:
            _finish(guard, status=GUARD_FAILED, attempts=attempts, checked_at=now,
                    detail="Klaviyo could not list the account's metrics.")
        else:
            _finish(guard, attempts=attempts, next_attempt_at=now + timedelta(seconds=min(5 * 2 ** attempts, 300)))
        return
    others = other_placed_orders(metrics)
    _finish(guard, status=GUARD_FOUND if others else GUARD_CLEAR, others=json.dumps(others), checked_at=now)
    log.info("klaviyo.guard organizer=%s others=%s", organizer_id, [o["name"] for o in others])


def _metrics(connection: KlaviyoConnection) -> list[dict] | None:
    """Every metric of the account: [{"id", "name", "integration"}]; None when Klaviyo gave no usable answer."""
    out = []
    params: dict | None = {"fields[metric]": "name,integration"}
    for _page in range(25):
        response = calls.read(connection, "metrics", client.get_metrics, params)
        if not response.accepted or not isinstance(response.body, dict):
            return None
        for metric in response.body.get("data") or []:
            attributes = metric.get("attributes") or {}
            out.append({"id": metric.get("id"), "name": attributes.get("name"),
                        "integration": attributes.get("integration") or {}})
        params = calls.next_link_params(response.body, params)
        if params is None:
            break
    return out


def _integration_key(integration: dict) -> str:
    return str(integration.get("id") or integration.get("key") or integration.get("name") or "")


def other_placed_orders(metrics: list[dict]) -> list[dict]:
    """The Placed Order metrics that another integration made (pure: from Get Metrics' answer)."""
    ours = {_integration_key(m["integration"]) for m in metrics if m["name"] in OURS_ONLY}
    return [{"metric_id": m["id"], "name": m["integration"].get("name") or "another integration",
             "key": m["integration"].get("key"), "category": m["integration"].get("category")}
            for m in metrics if m["name"] == PLACED_ORDER and _integration_key(m["integration"]) not in ours]


def state(organizer_id: int) -> dict | None:
    """What the card and the Shopify setup show: None before any check, else the status and the others."""
    guard = db.session.scalar(select(MetricGuard).where(MetricGuard.organizer_id == organizer_id))
    if guard is None:
        return None
    return {"status": guard.status, "others": json.loads(guard.others or "[]"), "checked_at": guard.checked_at,
            "detail": guard.detail}
