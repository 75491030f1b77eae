"""Creating the recipes' flows and segments in an organizer's Klaviyo: the rq job behind "Set up flows and
segments".

The job takes an organizer id and reloads everything, so running it twice is harmless: one job at a time works
an organizer's items (a lock in Redis), a flow is looked for by name (GET /api/flows) before it is made, and an
item's state moves only by a guarded update. Every request goes through the shared limiter (Create Flow and
Create Segment allow 1 a second, 15 a minute, 100 a day), the send gate (Disconnect is a hard stop) and the
connection's token handling (refresh once on a 401): see setup_calls. A wait longer than a moment becomes the
item's next_attempt_at, and the sweeper enqueues the job again when it is due (the workers run no rq scheduler).
The metric ids come first (setup_metrics): the example profile is seeded when ours are not there yet.
"""
import logging
import random
from datetime import timedelta

from flask import current_app
from redis.exceptions import LockError, RedisError
from sqlalchemy import select, update

from portal.extensions import db
from portal.klaviyo import client, recipes
from portal.sync import connection as klaviyo, setup_calls, setup_metrics
from portal.sync.models import CONNECTED, DISCONNECTED, KlaviyoConnection
from portal.sync.queue import queue, redis_connection
from portal.sync.setup_models import (
    CANCELLED, CREATED, FAILED, NEEDS_PERMISSION, QUEUED, WORKING, SetupItem,
)
from portal.types import utcnow

log = logging.getLogger("portal.sync")

JOB = "portal.sync.setup.run"
LOCK_SECONDS = 300  # also how long an item may stay "working" before the sweeper hands it back
MAX_ATTEMPTS = 8  # no answer or a 5xx: about four minutes of backoff, then "failed" with a Retry button
METRIC_CHECKS = 20  # Klaviyo processes events within minutes: look for the seeded metrics this many times
NEEDS_PERMISSION_TEXT = ("Klaviyo needs one more permission for flows and segments. Reconnect, and this will be "
                         "created right after.")


def marker(organizer_id: int) -> str:
    return f"portal:setup-queued:{organizer_id}"


def enqueue(organizer_id: int) -> bool:
    """Ask a worker to create this organizer's queued items. Call only after they are committed. If Redis is down
    nothing is lost: the sweeper enqueues later."""
    try:
        if redis_connection().set(marker(organizer_id), 1, nx=True, ex=5):
            queue().enqueue(JOB, organizer_id, result_ttl=0, failure_ttl=24 * 3600, job_timeout=600)
        return True
    except RedisError as exc:
        log.warning("setup enqueue failed organizer=%s error=%s; the sweeper will retry", organizer_id,
                    type(exc).__name__)
        return False


# --- the job ------------------------------------------------------------------------------------------

def run(organizer_id: int) -> None:
    """Create this organizer's due flows and segments in Klaviyo (enqueued by dotted name, after commit)."""
    r = redis_connection()
    try:
        r.delete(marker(organizer_id))
    except RedisError:
        pass
    started = utcnow()
    lock = r.lock(f"portal:setup:{organizer_id}", timeout=LOCK_SECONDS)
    if not lock.acquire(blocking=False):
        return  # another worker is on it, and it takes up what is due when it is done
    try:
        _work(organizer_id)
    finally:
        db.session.rollback()
        try:
            lock.release()
        except LockError:
            pass
    # Something asked for while this job finished (its own job found the lock taken): do it now.
    if db.session.scalar(select(SetupItem.id).where(
            SetupItem.organizer_id == organizer_id, SetupItem.status == QUEUED,
            SetupItem.requested_at >= started, SetupItem.next_attempt_at <= utcnow()).limit(1)):
        enqueue(organizer_id)
    db.session.rollback()


def sweep() -> None:
    """Hand back items a dead worker left "working", and enqueue organizers with items due (a rate-limit wait
    over, a retry due, or a Reconnect that granted what they waited for)."""
    now = utcnow()
    db.session.execute(update(SetupItem).where(
        SetupItem.status == WORKING, SetupItem.updated_at < now - timedelta(seconds=LOCK_SECONDS))
        .values(status=QUEUED, detail="Trying again after an interrupted attempt.", updated_at=now))
    db.session.commit()
    rows = db.session.execute(
        select(SetupItem.organizer_id, SetupItem.status).join(
            KlaviyoConnection, KlaviyoConnection.organizer_id == SetupItem.organizer_id)
        .where(KlaviyoConnection.status == CONNECTED, SetupItem.status.in_((QUEUED, NEEDS_PERMISSION)),
               SetupItem.next_attempt_at <= now).distinct()).all()
    due = {organizer_id for organizer_id, status in rows if status == QUEUED}
    for organizer_id in {organizer_id for organizer_id, status in rows if status == NEEDS_PERMISSION} - due:
        connection = klaviyo.connection_for(organizer_id)
        if connection is not None and not klaviyo.missing_scopes(connection, "flows"):
            due.add(organizer_id)
    db.session.rollback()
    for organizer_id in due:
        enqueue(organizer_id)


def _due(organizer_id: int) -> list[SetupItem]:
    return list(db.session.scalars(select(SetupItem).where(
        SetupItem.organizer_id == organizer_id, SetupItem.status == QUEUED,
        SetupItem.next_attempt_at <= utcnow()).order_by(SetupItem.id)))


def _work(organizer_id: int) -> None:
    connection = klaviyo.connection_for(organizer_id)
    if connection is None or connection.status == DISCONNECTED:
        cancel_pending(organizer_id)
        db.session.commit()
        return
    if connection.status != CONNECTED:
        return  # needs reconnecting: the items wait, and go after the Reconnect
    if klaviyo.missing_scopes(connection, "flows"):
        _move_all(organizer_id, (QUEUED,), status=NEEDS_PERMISSION, detail=NEEDS_PERMISSION_TEXT)
        return
    _move_all(organizer_id, (NEEDS_PERMISSION,), status=QUEUED, detail=None, next_attempt_at=utcnow())
    metric_ids = None
    while items := _due(organizer_id):
        try:
            if metric_ids is None or not setup_metrics.has_metrics(items, metric_ids):
                metric_ids = setup_metrics.metric_ids(connection, items)
            for item in items:
                _make(connection, item, metric_ids)
        except setup_calls.Wait as wait:  # the metrics are not there yet
            _wait_for_metrics(organizer_id, wait)
            return
        except setup_calls.Stop:
            if db.session.scalar(select(KlaviyoConnection.status).where(
                    KlaviyoConnection.id == connection.id)) == DISCONNECTED:
                cancel_pending(organizer_id)
                db.session.commit()
            return
        except setup_calls.NoPermission as exc:
            _move_all(organizer_id, (QUEUED,), status=NEEDS_PERMISSION,
                      detail=f"{NEEDS_PERMISSION_TEXT} (Klaviyo said: {exc})")
            return


def _make(connection: KlaviyoConnection, item: SetupItem, metric_ids: dict[str, str]) -> None:
    """Create one item (or find it made already), and record what happened."""
    if not _guarded(item.id, (QUEUED,), status=WORKING, detail=None):
        return
    recipe = recipes.recipe_for(item.key)
    try:
        if recipe.kind == recipes.FLOW:
            existing = _find_flow(connection, item.name)
            if existing:
                _done(item, connection, existing, found=True)
                return
        body = recipes.build(item.key, metric_ids, current_app.config["PRODUCT_NAME"], item.options)
        body["data"]["attributes"]["name"] = item.name  # the name the organizer was shown, and we look for
        if recipe.kind == recipes.FLOW:
            response = setup_calls.request(connection, "flows_create", client.create_flow, body)
        else:
            response = setup_calls.request(connection, "segments_create", client.create_segment, body)
    except setup_calls.Wait as wait:
        _guarded(item.id, (WORKING,), status=QUEUED, detail=wait.reason,
                 next_attempt_at=utcnow() + timedelta(seconds=wait.seconds))
        return
    except setup_calls.NoPermission:
        _guarded(item.id, (WORKING,), status=NEEDS_PERMISSION, detail=NEEDS_PERMISSION_TEXT)
        raise
    except setup_calls.Stop:
        _guarded(item.id, (WORKING,), status=QUEUED, detail="Waiting for the Klaviyo connection.")
        raise
    except setup_calls.Trouble as trouble:
        response = trouble.response
    except Exception:
        db.session.rollback()
        _guarded(item.id, (WORKING,), status=FAILED, detail="Something went wrong on the portal's side while creating "
                                                            "it. Retry, and tell support if it happens again.")
        raise
    if response.status in (200, 201) and isinstance(response.body, dict):
        _done(item, connection, response.body["data"]["id"])
    elif response.status == 0 or response.status >= 500:
        _retry(item, response)
    else:
        where = response.error_pointer()
        _guarded(item.id, (WORKING,), status=FAILED, updated_at=utcnow(),
                 detail=f"Klaviyo refused it: {response.error_text()}" + (f" (at {where})" if where else ""))


def _wait_for_metrics(organizer_id: int, wait: setup_calls.Wait) -> None:
    now = utcnow()
    for item in _due(organizer_id):
        if item.attempts + 1 >= METRIC_CHECKS:
            values = {"status": FAILED, "detail": "Klaviyo has not shown the metrics of the example events after "
                                                  "several minutes. Retry in a while."}
        else:
            values = {"detail": wait.reason, "next_attempt_at": now + timedelta(seconds=wait.seconds)}
        _guarded(item.id, (QUEUED,), attempts=item.attempts + 1, **values)


def _find_flow(connection: KlaviyoConnection, name: str) -> str | None:
    """The id of a flow of this name already in the account (not archived), so none is made twice."""
    quoted = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    response = setup_calls.request(connection, "flows_read", client.get_flows,
                        {"filter": f"equals(name,{quoted})", "fields[flow]": "name,archived"})
    if not response.accepted or not isinstance(response.body, dict):
        raise setup_calls.Trouble(response)
    for flow in response.body.get("data") or []:
        attributes = flow.get("attributes") or {}
        if attributes.get("name") == name and not attributes.get("archived"):
            return flow["id"]
    return None


# --- item states (every change is one guarded statement, then a commit) ---------------------------------

def _guarded(item_id: int, from_statuses: tuple[str, ...], **values) -> bool:
    values.setdefault("updated_at", utcnow())
    changed = db.session.execute(update(SetupItem).where(SetupItem.id == item_id, SetupItem.status.in_(from_statuses))
                                 .values(**values)).rowcount
    db.session.commit()
    return bool(changed)


def _move_all(organizer_id: int, from_statuses: tuple[str, ...], **values) -> None:
    values.setdefault("updated_at", utcnow())
    db.session.execute(update(SetupItem).where(SetupItem.organizer_id == organizer_id,
                                               SetupItem.status.in_(from_statuses)).values(**values))
    db.session.commit()


def _done(item: SetupItem, connection: KlaviyoConnection, klaviyo_id: str, found: bool = False) -> None:
    now = utcnow()
    _guarded(item.id, (WORKING,), status=CREATED, klaviyo_id=klaviyo_id, account_id=connection.account_id,
             found_existing=found, detail=None, done_at=now, attempts=item.attempts + 1)
    log.info("setup.created organizer=%s key=%s id=%s existing=%s", item.organizer_id, item.key, klaviyo_id, found)


def _retry(item: SetupItem, response: client.ApiResponse) -> None:
    attempts = item.attempts + 1
    problem = response.error_text() if response.status == 0 else f"HTTP {response.status}"
    if attempts >= MAX_ATTEMPTS:
        _guarded(item.id, (WORKING,), status=FAILED, attempts=attempts,
                 detail=f"Klaviyo could not be reached after {attempts} tries ({problem}). Retry when it is back.")
        return
    seconds = min(current_app.config["RETRY_BASE_SECONDS"] * 2 ** attempts, 120) * random.uniform(1, 1.25)
    _guarded(item.id, (WORKING,), status=QUEUED, attempts=attempts,
             next_attempt_at=utcnow() + timedelta(seconds=seconds),
             detail=f"Klaviyo did not answer ({problem}); trying again in {max(1, round(seconds))} s.")


def cancel_pending(organizer_id: int) -> None:
    """Disconnect: what was waiting is not made (an item a worker holds is settled by that worker). The caller
    commits."""
    db.session.execute(update(SetupItem).where(SetupItem.organizer_id == organizer_id,
                                               SetupItem.status.in_((QUEUED, NEEDS_PERMISSION)))
                       .values(status=CANCELLED, detail="Cancelled: Klaviyo was disconnected.", updated_at=utcnow()))
