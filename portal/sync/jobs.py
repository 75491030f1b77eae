"""The jobs the rq worker runs: deliver an organizer's outbox rows to Klaviyo, and sweep for stragglers.

Jobs take ids and reload everything, so running one twice is harmless: a row is claimed atomically
before it is sent, and every send carries its unique_id, so Klaviyo drops a repeat after a crash.
"""
import json
import logging

from flask import current_app
from redis.exceptions import RedisError
from sqlalchemy import select

from portal.extensions import db
from portal.klaviyo import client
from portal.klaviyo.payloads import bulk_body
from portal.sync import connection as klaviyo, gate, health, lease as claim_lease, limiter, outbox, setup, subscriptions
from portal.sync.models import CONNECTED, KlaviyoConnection
from portal.sync.outbox import Claimed
from portal.sync.queue import delivery_marker, enqueue_delivery, redis_connection

log = logging.getLogger("portal.sync")

KLAVIYO_BULK_MAX_EVENTS = 1000  # Klaviyo's cap on events per Bulk Create request
BULK_MAX_BYTES = 4_500_000  # under Klaviyo's 5 MB


class Stop(Exception):
    """The connection can't send now (disconnected, needs reconnecting, or rate-limited for a while)."""


def deliver(organizer_id: int) -> int:
    """Send this organizer's due events to Klaviyo. Returns how many were accepted."""
    try:
        redis_connection().delete(delivery_marker(organizer_id))
    except RedisError:
        pass
    # List subscriptions first (rows of their own kind, their own endpoint): they wait for nothing the events do.
    accepted = subscriptions.deliver(organizer_id)
    config = current_app.config
    lease = config["OUTBOX_LEASE_SECONDS"]
    batch_limit = min(config["SYNC_BATCH_LIMIT"], KLAVIYO_BULK_MAX_EVENTS)
    while True:
        connection = klaviyo.connection_for(organizer_id)
        if connection is None or connection.status != CONNECTED:
            return accepted
        rows = outbox.claim(organizer_id, batch_limit, lease)
        if not rows:
            return accepted
        if len(rows) == batch_limit:
            enqueue_delivery(organizer_id)  # a big backlog: let another idle worker join in
        heartbeat = claim_lease.keep(rows, lease)  # a short lease, renewed while we send: see lease.py
        try:
            if len(rows) <= config["SYNC_SINGLE_THRESHOLD"]:
                for index, row in enumerate(rows):
                    try:
                        accepted += _send_single(connection, row)
                    except Stop:
                        outbox.release(rows[index:])
                        raise
            else:
                accepted += _send_bulk(connection, rows)
        except Stop:
            return accepted
        except Exception:
            # Something unexpected (a database error, say): hand back what this claim still holds at once,
            # rather than leaving it to the lease, then let rq record the failure.
            db.session.rollback()
            outbox.release(rows, current_app.config["RETRY_BASE_SECONDS"])
            raise
        finally:
            heartbeat.stop()
            db.session.rollback()


def sweep() -> None:
    """Re-enqueue what a lost job or a dead worker left behind, and finish revokes that failed."""
    organizers = set(outbox.reclaim_expired()) | set(outbox.organizers_with_due_rows())
    for organizer_id in organizers:
        enqueue_delivery(organizer_id)
    for connection in klaviyo.pending_revokes():
        klaviyo.retry_revoke(connection)
    db.session.rollback()
    setup.sweep()  # flows and segments waiting for a rate limit, a retry or a Reconnect
    health.sweep()  # alerts, reading test orders back, the double-send guard, Started Checkout


# --- one event --------------------------------------------------------------------------------------

def _send_single(connection: KlaviyoConnection, row: Claimed) -> int:
    installation = klaviyo.installation_key(connection)
    with gate.sending(connection.id) as allowed:
        _check_can_send(connection, allowed, [row])
        wait = limiter.acquire(installation, "events")
        if wait:
            outbox.release([row], wait, "waiting for Klaviyo's rate limit")
            raise Stop()
        response = _call(connection, client.create_event, json.loads(row.payload), [row])
        limiter.observe(installation, "events", response.status, response.headers)
    outbox.record([row], response, "single")
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
            outbox.release([row for part in [chunk, *pending] for row in part])
            raise
        if response.status == 400 and len(chunk) > 1:
            # Klaviyo rejects a bulk request as a whole: split it to isolate the bad event(s).
            half = len(chunk) // 2
            pending[:0] = [chunk[:half], chunk[half:]]
            continue
        outbox.record(chunk, response, "bulk")
        if response.accepted:
            accepted += len(chunk)
    return accepted


def _bulk_request(connection, chunk) -> client.ApiResponse:
    installation = klaviyo.installation_key(connection)
    with gate.sending(connection.id) as allowed:
        _check_can_send(connection, allowed, chunk)
        wait = limiter.acquire(installation, "bulk")
        if wait:
            outbox.release(chunk, wait, "waiting for Klaviyo's rate limit")
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
        outbox.release(rows, 1.0)
        raise Stop()


def _call(connection, send, body, rows) -> client.ApiResponse:
    """One API call with the token handling Klaviyo expects: refresh before expiry, and once on a 401."""
    try:
        token = klaviyo.access_token(connection)
        response = send(token, body)
        if response.status == 401:
            response = send(klaviyo.refresh(connection, stale=token), body)
            if response.status == 401:
                klaviyo.needs_reconnect(connection, "Klaviyo rejected the access token even after refreshing it. "
                                                    "Reconnect to resume sending.")
                raise Stop()
        if response.status == 403:
            klaviyo.needs_reconnect(connection, "Klaviyo says this connection lacks a permission it needs "
                                                f"({response.error_text()}). Reconnect to grant it.")
            raise Stop()
        return response
    except client.TokenRejected as exc:
        log.warning("klaviyo.refresh_rejected connection=%s error=%s", connection.id, exc.error)
        raise Stop() from exc  # needs_reconnect() has held the rows
    except client.KlaviyoUnavailable as exc:
        return client.ApiResponse(0, {}, None, 0, [{"detail": f"no answer from Klaviyo ({exc})"}])

