"""The jobs the rq worker runs: deliver an organizer's outbox rows to Klaviyo, and sweep for stragglers.

Jobs take ids and reload everything, so running one twice is harmless: a row is claimed atomically
before it is sent, and every send carries its unique_id, so Klaviyo drops a repeat after a crash.
"""
import json
import logging
import random
from datetime import timedelta

from flask import current_app
from redis.exceptions import RedisError
from sqlalchemy import insert, select, update

from portal.extensions import db
from portal.integrations import service
from portal.integrations.models import CONNECTED, KlaviyoConnection
from portal.klaviyo import client
from portal.klaviyo.payloads import bulk_body
from portal.sync import gate, limiter
from portal.sync.models import FAILED, PENDING, SENT, DeliveryAttempt, OutboxEvent
from portal.sync.outbox import Claimed, claim, organizers_with_due_rows, reclaim_expired, release
from portal.sync.queue import enqueue_delivery, redis_connection
from portal.types import utcnow

log = logging.getLogger("portal.sync")

KLAVIYO_BULK_MAX_EVENTS = 1000  # Klaviyo's cap on events per Bulk Create request
BULK_MAX_BYTES = 4_500_000  # under Klaviyo's 5 MB


class Stop(Exception):
    """The connection can't send now (disconnected, needs reconnecting, or rate-limited for a while)."""


def deliver(organizer_id: int) -> int:
    """Send this organizer's due events to Klaviyo. Returns how many were accepted."""
    try:
        redis_connection().delete(f"portal:deliver-queued:{organizer_id}")
    except RedisError:
        pass
    accepted = 0
    config = current_app.config
    lease = config["OUTBOX_LEASE_SECONDS"]
    batch_limit = min(config["SYNC_BATCH_LIMIT"], KLAVIYO_BULK_MAX_EVENTS)
    while True:
        connection = service.connection_for(organizer_id)
        if connection is None or connection.status != CONNECTED:
            return accepted
        rows = claim(organizer_id, batch_limit, lease)
        if not rows:
            return accepted
        if len(rows) == batch_limit:
            enqueue_delivery(organizer_id)  # a big backlog: let another idle worker join in
        try:
            if len(rows) <= config["SYNC_SINGLE_THRESHOLD"]:
                for index, row in enumerate(rows):
                    try:
                        accepted += _send_single(connection, row)
                    except Stop:
                        _release_rest(rows[index:])
                        raise
            else:
                accepted += _send_bulk(connection, rows)
        except Stop:
            return accepted
        except Exception:
            # Something unexpected (a database error, say): hand back what this claim still holds at once,
            # rather than leaving it to the lease, then let rq record the failure.
            db.session.rollback()
            _release_rest(rows, current_app.config["RETRY_BASE_SECONDS"])
            raise
        finally:
            db.session.rollback()


def sweep() -> None:
    """Re-enqueue what a lost job or a dead worker left behind, and finish revokes that failed."""
    organizers = set(reclaim_expired()) | set(organizers_with_due_rows())
    for organizer_id in organizers:
        enqueue_delivery(organizer_id)
    for connection in db.session.scalars(
        select(KlaviyoConnection).where(KlaviyoConnection.revoke_pending_enc.is_not(None))
    ):
        service.retry_revoke(connection)
    db.session.rollback()


def retry(row: OutboxEvent) -> None:
    """A person asked to try a failed event again: it gets a fresh 3-day retry window."""
    row.status, row.status_detail = PENDING, "retry requested"
    row.next_attempt_at = utcnow()
    row.give_up_at = None


# --- one event --------------------------------------------------------------------------------------

def _send_single(connection: KlaviyoConnection, row: Claimed) -> int:
    installation = service.installation_key(connection)
    with gate.sending(connection.id) as allowed:
        _check_can_send(connection, allowed, [row])
        wait = limiter.acquire(installation, "events")
        if wait:
            _release_rest([row], wait, "waiting for Klaviyo's rate limit")
            raise Stop()
        response = _call(connection, client.create_event, json.loads(row.payload), [row])
        limiter.observe(installation, "events", response.status, response.headers)
    _record([row], response, "single")
    return 1 if response.accepted else 0


# --- many events -------------------------------------------------------------------------------------

def _chunks(rows: list[Claimed]):
    """Split rows into Bulk Create requests: at most 1,000 events and well under 5 MB each."""
    chunk, size = [], 0
    for row in rows:
        row_size = len(row.payload.encode())
        if chunk and (len(chunk) >= KLAVIYO_BULK_MAX_EVENTS or size + row_size > BULK_MAX_BYTES):
            yield chunk
            chunk, size = [], 0
        chunk.append(row)
        size += row_size
    if chunk:
        yield chunk


def _send_bulk(connection: KlaviyoConnection, rows: list[Claimed]) -> int:
    accepted = 0
    pending = list(_chunks(rows))
    while pending:
        chunk = pending.pop(0)
        try:
            response = _bulk_request(connection, chunk)
        except Stop:
            _release_rest([row for part in [chunk, *pending] for row in part])
            raise
        if response.status == 400 and len(chunk) > 1:
            # Klaviyo rejects a bulk request as a whole: split it to isolate the bad event(s).
            half = len(chunk) // 2
            pending[:0] = [chunk[:half], chunk[half:]]
            continue
        _record(chunk, response, "bulk")
        if response.accepted:
            accepted += len(chunk)
    return accepted


def _bulk_request(connection, chunk) -> client.ApiResponse:
    installation = service.installation_key(connection)
    with gate.sending(connection.id) as allowed:
        _check_can_send(connection, allowed, chunk)
        wait = limiter.acquire(installation, "bulk")
        if wait:
            _release_rest(chunk, wait, "waiting for Klaviyo's rate limit")
            raise Stop()
        # Past events carry backfill: true in their own payload, so one request may mix both kinds.
        body = bulk_body([json.loads(row.payload) for row in chunk])
        response = _call(connection, client.bulk_create_events, body, chunk)
        limiter.observe(installation, "bulk", response.status, response.headers)
    return response


# --- shared --------------------------------------------------------------------------------------------

def _check_can_send(connection, allowed: bool, rows) -> None:
    """Right before a send: is the gate open and the connection still active in the database?"""
    status = db.session.scalar(select(KlaviyoConnection.status).where(KlaviyoConnection.id == connection.id))
    if not allowed or status != CONNECTED:
        _release_rest(rows, 1.0)
        raise Stop()


def _call(connection, send, body, rows) -> client.ApiResponse:
    """One API call with the token handling Klaviyo expects: refresh before expiry, and once on a 401."""
    try:
        token = service.access_token(connection)
        response = send(token, body)
        if response.status == 401:
            response = send(service.refresh(connection, stale=token), body)
            if response.status == 401:
                service.needs_reconnect(connection, "Klaviyo rejected the access token even after refreshing it. "
                                                    "Reconnect to resume sending.")
                raise Stop()
        if response.status == 403:
            service.needs_reconnect(connection, "Klaviyo says this connection lacks a permission it needs "
                                                f"({response.error_text()}). Reconnect to grant it.")
            raise Stop()
        return response
    except client.TokenRejected as exc:
        log.warning("klaviyo.refresh_rejected connection=%s error=%s", connection.id, exc.error)
        raise Stop() from exc  # needs_reconnect() has held the rows
    except client.KlaviyoUnavailable as exc:
        return client.ApiResponse(0, {}, None, 0, [{"detail": f"no answer from Klaviyo ({exc})"}])


def _release_rest(rows, wait: float = 1.0, detail: str | None = None) -> None:
    release(rows, utcnow() + timedelta(seconds=wait), detail)


def _backoff(attempts: int) -> float:
    base = current_app.config.get("RETRY_BASE_SECONDS", 2)
    return min(base * 2 ** max(attempts - 1, 0), 6 * 3600) * random.uniform(0.75, 1.25)


def _record(rows: list[Claimed], response: client.ApiResponse, via: str) -> None:
    """Write down what happened to each row, and decide whether and when it is tried again."""
    now = utcnow()
    status = response.status
    if response.accepted and len(rows) > 1:
        _record_accepted(rows, response, via, now)
        return
    for row in rows:
        attempts = row.attempts + 1
        values = {"attempts": attempts, "last_http_status": status or None, "claim_token": None, "claimed_until": None}
        if response.accepted:
            outcome = "accepted"
            values.update(status=SENT, sent_at=now, status_detail=None, last_error=None, last_error_pointer=None)
        elif status == 429:
            outcome = "retry"
            wait = (response.retry_after or 1) + random.uniform(0.1, 1.0)
            values.update(status=PENDING, next_attempt_at=now + timedelta(seconds=wait),
                          last_error=f"Rate limited by Klaviyo; retrying after {response.retry_after or 1} s.",
                          status_detail="rate limited")
        elif status == 0 or status >= 500 or status == 408:
            give_up_at = row.give_up_at or (now + timedelta(seconds=current_app.config["OUTBOX_RETRY_HORIZON_SECONDS"]))
            values["give_up_at"] = give_up_at
            values["last_error"] = response.error_text()
            if now >= give_up_at:
                outcome = "failed"
                values.update(status=FAILED, status_detail="failed: Klaviyo kept failing for 3 days")
            else:
                outcome = "retry"
                values.update(status=PENDING, next_attempt_at=now + timedelta(seconds=_backoff(attempts)),
                              status_detail="retrying")
        else:
            outcome = "failed"
            values.update(status=FAILED, last_error=response.error_text(), last_error_pointer=response.error_pointer(),
                          status_detail="failed: Klaviyo rejected this event")
        # Klaviyo's acceptance is the truth even if a Disconnect cancelled the row while it was in flight;
        # any other outcome only counts while the row is still ours.
        guard = OutboxEvent.id == row.id if response.accepted else OutboxEvent.claim_token == row.claim_token
        db.session.execute(update(OutboxEvent).where(OutboxEvent.id == row.id, guard).values(**values),
                           execution_options={"synchronize_session": False})
        db.session.add(DeliveryAttempt(outbox_id=row.id, attempted_at=now, outcome=outcome, http_status=status or None,
                                       detail=None if response.accepted else response.error_text()[:2000],
                                       latency_ms=response.latency_ms, via=via))
        log.info(json.dumps({"msg": "klaviyo.send", "organizer": row.organizer_id, "metric": row.metric,
                             "unique_id": row.unique_id, "status": status, "outcome": outcome,
                             "latency_ms": response.latency_ms, "via": via}))
    db.session.commit()
    if response.accepted:
        # A transaction of its own: holding the connection row while updating outbox rows would take the
        # locks in the opposite order to Disconnect, and PostgreSQL would find a deadlock.
        db.session.execute(update(KlaviyoConnection).where(KlaviyoConnection.organizer_id == rows[0].organizer_id)
                           .values(last_success_at=now))
        db.session.commit()


def _record_accepted(rows: list[Claimed], response: client.ApiResponse, via: str, now) -> None:
    """A whole request accepted: one UPDATE for its rows and one multi-row INSERT of attempts."""
    db.session.execute(
        update(OutboxEvent).where(OutboxEvent.id.in_([row.id for row in rows]))
        .values(attempts=OutboxEvent.attempts + 1, last_http_status=response.status, claim_token=None,
                claimed_until=None, status=SENT, sent_at=now, status_detail=None, last_error=None,
                last_error_pointer=None),
        execution_options={"synchronize_session": False})
    db.session.execute(insert(DeliveryAttempt), [
        {"outbox_id": row.id, "attempted_at": now, "outcome": "accepted", "http_status": response.status,
         "detail": None, "latency_ms": response.latency_ms, "via": via} for row in rows])
    db.session.commit()
    db.session.execute(update(KlaviyoConnection).where(KlaviyoConnection.organizer_id == rows[0].organizer_id)
                       .values(last_success_at=now))
    db.session.commit()
    # One line per request (a bulk request is one send): its metrics, and its first and last unique_id.
    metrics: dict[str, int] = {}
    for row in rows:
        metrics[row.metric] = metrics.get(row.metric, 0) + 1
    log.info(json.dumps({"msg": "klaviyo.send", "organizer": rows[0].organizer_id, "metrics": metrics,
                         "events": len(rows), "first_unique_id": rows[0].unique_id,
                         "last_unique_id": rows[-1].unique_id, "status": response.status, "outcome": "accepted",
                         "latency_ms": response.latency_ms, "via": via}))
