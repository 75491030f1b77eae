"""The jobs the rq worker runs: deliver an organizer's outbox rows to Klaviyo, and sweep for stragglers.

Jobs take ids and reload everything, so running one twice is harmless: a row is claimed atomically
before it is sent, and every send carries its unique_id, so Klaviyo drops a repeat after a crash.

How a claim goes out (Bulk Create allows 10/s but only 150/min, Create Event 350/s and 3,500/min):

- a small claim (at most SYNC_SINGLE_THRESHOLD rows) from an idle organizer: single Create Event calls, the
  lowest latency;
- anything else as Bulk Create, paced: a request that is not full goes out no sooner than BULK_SPACING after the
  installation's previous Bulk request (a slot reserved in Redis, so shared by every worker), and while it waits
  for its slot it takes in the rows that fell due meanwhile. So sustained traffic goes out in a few requests of
  many events, within the steady budget, instead of using it up in small requests and then stalling. A full
  request (a backlog, a backfill) goes at once, bound only by the rate limiter;
- when Create Event's budget is spent, the rest of a small claim goes out as Bulk rather than waiting, and small
  claims keep going by Bulk for SUSTAINED_SECONDS (the traffic is more than singles can carry). A small claim
  otherwise goes as singles even while Bulk is busy: at a few orders a second the claims stay small, and a
  Bulk slot would cost each of them up to BULK_SPACING of latency.
"""
import json
import logging
import time

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
# Bulk requests that are not full go out at most one per this, across all workers: our steady pace (60 s / 135)
# plus a margin, so the requests that are full still find room in the minute.
BULK_SPACING = 60.0 / limiter.pace("bulk")[1] + 0.025
SUSTAINED_SECONDS = 2.0  # once Create Event's budget is spent, small claims go by Bulk for this long
JOIN_MARGIN = 0.001  # a claim hands its rows to a worker whose Bulk slot is still ahead (by more than this)
JOB_SECONDS = 60.0  # a delivery job that still finds rows after this long hands over to a new job (rq's timeout)


class Stop(Exception):
    """The connection can't send now (disconnected, needs reconnecting, or rate-limited for a while)."""


class HandedOver(Exception):
    """The claim went back to the outbox for another worker's Bulk request, which is waiting for its slot."""

    def __init__(self, still_waiting: bool):
        super().__init__()
        self.still_waiting = still_waiting


class _Claim:
    """The rows one turn of deliver() holds: the claim, and what it took in while it waited for a Bulk slot."""

    def __init__(self, organizer_id: int, rows: list[Claimed], lease: int, limit: int):
        self.organizer_id, self.lease, self.limit = organizer_id, lease, limit
        self.rows = list(rows)
        self.heartbeats = [claim_lease.keep(rows, lease)]  # a short lease, renewed while we send: see lease.py

    def top_up(self, rows: list[Claimed]) -> list[Claimed]:
        """Claim more due rows, so that `rows` (part of this claim) makes up to `limit` events."""
        room = self.limit - len(rows)
        more = outbox.claim(self.organizer_id, room, self.lease) if room > 0 else []
        if more:
            self.rows += more
            self.heartbeats.append(claim_lease.keep(more, self.lease))
        return more

    def stop(self) -> None:
        for heartbeat in self.heartbeats:
            heartbeat.stop()


def deliver(organizer_id: int) -> int:
    """Send this organizer's due events to Klaviyo. Returns how many were accepted."""
    started = time.monotonic()
    try:
        redis_connection().delete(delivery_marker(organizer_id))
    except RedisError:
        pass
    # List subscriptions first (rows of their own kind, their own endpoint): they wait for nothing the events do.
    accepted = subscriptions.deliver(organizer_id)
    config = current_app.config
    lease = config["OUTBOX_LEASE_SECONDS"]
    batch_limit = min(config["SYNC_BATCH_LIMIT"], KLAVIYO_BULK_MAX_EVENTS)
    threshold = config["SYNC_SINGLE_THRESHOLD"]
    while True:
        if time.monotonic() - started > JOB_SECONDS:
            enqueue_delivery(organizer_id)  # a long on-sale: carry on in a new job, well within rq's job timeout
            return accepted
        connection = klaviyo.connection_for(organizer_id)
        if connection is None or connection.status != CONNECTED:
            return accepted
        installation = klaviyo.installation_key(connection)
        if limiter.slot_in(installation, "bulk") > JOIN_MARGIN:
            return accepted  # a worker waits for the next Bulk slot, and takes in every due row when it comes
        rows = outbox.claim(organizer_id, batch_limit, lease)
        if not rows:
            return accepted
        if len(rows) == batch_limit:
            enqueue_delivery(organizer_id)  # a big backlog: let another idle worker join in
        claim = _Claim(organizer_id, rows, lease, batch_limit)
        try:
            if len(rows) <= threshold and not limiter.sustained(installation, "bulk"):
                accepted += _send_singles(connection, claim)
            else:
                accepted += _send_paced(connection, claim, rows)
        except Stop:
            return accepted
        except HandedOver as handed:
            if handed.still_waiting:
                return accepted  # that worker takes our rows in when its slot comes
            continue  # its slot came meanwhile: it may have missed them, so look again
        except Exception:
            # Something unexpected (a database error, say): hand back what this claim still holds at once,
            # rather than leaving it to the lease, then let rq record the failure.
            db.session.rollback()
            outbox.release(claim.rows, current_app.config["RETRY_BASE_SECONDS"])
            raise
        finally:
            claim.stop()
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


# --- one event ---------------------------------------------------------------------------------------

def _send_singles(connection: KlaviyoConnection, claim: _Claim) -> int:
    accepted = 0
    rows = list(claim.rows)
    for index, row in enumerate(rows):
        try:
            sent = _send_single(connection, row)
        except Stop:
            outbox.release(rows[index:])
            raise
        if sent is None:
            # Create Event's budget is spent for now: the rest goes out as one Bulk request rather than waiting,
            # and small claims go by Bulk for a while too (the traffic is more than singles can carry).
            limiter.mark_sustained(klaviyo.installation_key(connection), "bulk", SUSTAINED_SECONDS)
            return accepted + _send_paced(connection, claim, rows[index:])
        accepted += sent
    return accepted


def _send_single(connection: KlaviyoConnection, row: Claimed) -> int | None:
    """Send one event with Create Event. Returns 1 when accepted, 0 when not, None (nothing sent) when Create
    Event's budget is spent for now."""
    installation = klaviyo.installation_key(connection)
    with gate.sending(connection.id) as allowed:
        _check_can_send(connection, allowed, [row])
        wait = limiter.try_acquire(installation, "events")
        if wait and not limiter.blocked(installation, "events"):
            return None  # our own budget is spent, not Klaviyo's Retry-After: the caller sends by Bulk instead
        if wait:
            wait = limiter.acquire(installation, "events")  # a Retry-After: wait it out here when it is short
        if wait:
            outbox.release([row], wait, "waiting for Klaviyo's rate limit")
            raise Stop()
        response = _call(connection, client.create_event, json.loads(row.payload), [row])
        limiter.observe(installation, "events", response.status, response.headers)
    outbox.record([row], response, "single")
    return 1 if response.accepted else 0


# --- many events -------------------------------------------------------------------------------------

def _send_paced(connection: KlaviyoConnection, claim: _Claim, rows: list[Claimed]) -> int:
    """Send `rows` (part of the claim) by Bulk Create: at once when full, else in the next Bulk slot of this
    installation, topped up with what fell due while waiting for it."""
    installation = klaviyo.installation_key(connection)
    rows = list(rows)
    wait = limiter.reserve(installation, "bulk", BULK_SPACING, full=len(rows) >= claim.limit,
                           join_margin=JOIN_MARGIN)
    if wait < 0:
        # Another worker waits for the next slot: give it our rows (due now) rather than take a slot after it.
        outbox.release(rows, 0)
        raise HandedOver(still_waiting=limiter.slot_in(installation, "bulk") > 0)
    if wait > 0:
        time.sleep(wait)  # the heartbeat renews the claim meanwhile
        rows += claim.top_up(rows)
    return _send_bulk(connection, rows)


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

