"""Delivering list subscriptions: the outbox rows of kind SUBSCRIPTION, sent in batches of up to 1,000 profiles
through Bulk Subscribe Profiles to the list the organizer chose.

They go the way events go (portal.sync.jobs): claimed atomically from the same outbox, through the send gate
(Disconnect is a hard stop for them too), the shared rate limiter (tier "subscribe"), the connection's token
handling and the outbox's retry policy (429, 5xx, timeouts, 400). What only subscriptions can meet holds them,
never drops them, while events go on:

* list subscriptions turned off, the list permission not granted yet, or no list chosen;
* Klaviyo answers 403 (no permission): held until the organizer reconnects;
* Klaviyo answers 404 for the list (deleted in Klaviyo): held until the organizer chooses another.
"""
import json
import logging
from itertools import groupby

from flask import current_app
from sqlalchemy import select

from portal.consent.models import LIST_MISSING, NO_PERMISSION, ListSettings
from portal.extensions import db
from portal.klaviyo import client
from portal.klaviyo.subscriptions import MAX_PROFILES, bulk_subscribe_body, group_key
from portal.sync import connection as klaviyo, gate, lease as claim_lease, limiter, outbox
from portal.sync.models import CONNECTED, SUBSCRIPTION, KlaviyoConnection
from portal.sync.outbox import Claimed
from portal.sync.queue import enqueue_delivery
from portal.types import utcnow

log = logging.getLogger("portal.sync")
FEATURE = "subscriptions"

HELD_OFF = "held: list subscriptions are turned off; turn them on again to send these"
HELD_PERMISSION = "held: Klaviyo needs one more permission for list subscriptions; reconnect to grant it"
HELD_NO_LIST = "held: choose the Klaviyo list to subscribe buyers to"
HELD_LIST_MISSING = "held: the chosen Klaviyo list no longer exists; choose another list"
HELD_REFUSED = "held: Klaviyo refused list subscriptions for lack of permission; reconnect to grant it"


class Stop(Exception):
    """Nothing more can be sent now: the connection, the gate, a rate-limit wait, or a hold."""


def settings_for(organizer_id: int) -> ListSettings | None:
    return db.session.scalar(select(ListSettings).where(ListSettings.organizer_id == organizer_id))


def why_waiting(connection: KlaviyoConnection, settings: ListSettings | None) -> str | None:
    """Why this organizer's subscriptions cannot go now (the hold's detail), or None. A permission problem
    clears itself once the organizer has reconnected since Klaviyo refused."""
    if FEATURE not in connection.feature_list:
        return HELD_OFF
    if klaviyo.missing_scopes(connection, FEATURE):
        return HELD_PERMISSION
    if settings is None or not settings.list_id:
        return HELD_NO_LIST
    if settings.problem == NO_PERMISSION:
        if connection.connected_at and settings.problem_at and connection.connected_at > settings.problem_at:
            settings.problem = settings.problem_detail = settings.problem_at = None
            db.session.commit()
            return None
        return HELD_REFUSED
    if settings.problem == LIST_MISSING:
        return HELD_LIST_MISSING
    return None


def deliver(organizer_id: int) -> int:
    """Send this organizer's due subscriptions. Returns how many profiles Klaviyo accepted."""
    accepted = 0
    config = current_app.config
    limit = min(config["SYNC_BATCH_LIMIT"], MAX_PROFILES)
    while True:
        connection = klaviyo.connection_for(organizer_id)
        if connection is None or connection.status != CONNECTED:
            return accepted
        rows = outbox.claim(organizer_id, limit, config["OUTBOX_LEASE_SECONDS"], kind=SUBSCRIPTION)
        if not rows:
            return accepted
        if len(rows) == limit:
            enqueue_delivery(organizer_id)  # a big backlog: let another idle worker join in
        heartbeat = claim_lease.keep(rows, config["OUTBOX_LEASE_SECONDS"])  # renewed while we send: see lease.py
        try:
            settings = settings_for(organizer_id)
            waiting = why_waiting(connection, settings)
            if waiting:
                outbox.hold(organizer_id, waiting, SUBSCRIPTION)
                db.session.commit()
                return accepted
            accepted += _send(connection, settings, rows)
        except Stop:
            return accepted
        except Exception:
            db.session.rollback()
            outbox.release(rows, config["RETRY_BASE_SECONDS"])
            raise
        finally:
            heartbeat.stop()
            db.session.rollback()


def _chunks(rows: list[Claimed]) -> list[list[tuple[Claimed, dict]]]:
    """Requests of up to 1,000 profiles, each of one kind of job (live or historical, one consent source)."""
    bodies = sorted(((row, json.loads(row.payload)) for row in rows), key=lambda pair: (
        group_key(pair[1])[0], group_key(pair[1])[1] or "", pair[0].id))
    chunks = []
    for _, same in groupby(bodies, key=lambda pair: group_key(pair[1])):
        same = list(same)
        chunks += [same[i:i + MAX_PROFILES] for i in range(0, len(same), MAX_PROFILES)]
    return chunks


def _send(connection: KlaviyoConnection, settings: ListSettings, rows: list[Claimed]) -> int:
    accepted = 0
    pending = _chunks(rows)
    while pending:
        chunk = pending.pop(0)
        claimed = [row for row, _ in chunk]
        try:
            response = _request(connection, settings.list_id, chunk)
        except Stop:
            outbox.release([row for part in [chunk, *pending] for row, _ in part])
            raise
        if response.status in (403, 404):
            _hold(connection, settings, claimed, response)
            raise Stop()
        if response.status == 400 and len(chunk) > 1:
            # Klaviyo refuses a request as a whole: split it to isolate the bad profile(s).
            half = len(chunk) // 2
            pending[:0] = [chunk[:half], chunk[half:]]
            continue
        outbox.record(claimed, response, "bulk")
        if response.accepted:
            accepted += len(chunk)
    return accepted


def _hold(connection: KlaviyoConnection, settings: ListSettings, rows: list[Claimed], response) -> None:
    """Klaviyo refused for a reason the organizer must fix: hold every subscription, say what to do."""
    missing_list = response.status == 404
    settings.problem = LIST_MISSING if missing_list else NO_PERMISSION
    settings.problem_detail = response.error_text()
    settings.problem_at = utcnow()
    outbox.note_attempts(rows, response, "held", "bulk")
    outbox.hold(connection.organizer_id, HELD_LIST_MISSING if missing_list else HELD_REFUSED, SUBSCRIPTION)
    db.session.commit()
    log.warning(json.dumps({"msg": "klaviyo.subscriptions_held", "organizer": connection.organizer_id,
                            "status": response.status, "detail": settings.problem_detail}))


def _request(connection: KlaviyoConnection, list_id: str, chunk) -> client.ApiResponse:
    installation = klaviyo.installation_key(connection)
    with gate.sending(connection.id) as allowed:
        status = db.session.scalar(select(KlaviyoConnection.status).where(KlaviyoConnection.id == connection.id))
        if not allowed or status != CONNECTED:
            raise Stop()
        wait = limiter.acquire(installation, "subscribe")
        if wait:
            outbox.release([row for row, _ in chunk], wait, "waiting for Klaviyo's rate limit")
            raise Stop()
        response = _call(connection, bulk_subscribe_body([body for _, body in chunk], list_id))
        limiter.observe(installation, "subscribe", response.status, response.headers)
    return response


def _call(connection: KlaviyoConnection, body: dict) -> client.ApiResponse:
    """Refresh before expiry, and once on a 401 (as for events); no answer at all is status 0."""
    try:
        token = klaviyo.access_token(connection)
        response = client.bulk_subscribe_profiles(token, body)
        if response.status == 401:
            response = client.bulk_subscribe_profiles(klaviyo.refresh(connection, stale=token), body)
            if response.status == 401:
                klaviyo.needs_reconnect(connection, "Klaviyo rejected the access token even after refreshing it. "
                                                    "Reconnect to resume sending.")
                raise Stop()
        return response
    except client.TokenRejected as exc:
        raise Stop() from exc  # refresh() has marked the connection Needs reconnect and held the rows
    except client.KlaviyoUnavailable as exc:
        return client.ApiResponse(0, {}, None, 0, [{"detail": f"no answer from Klaviyo ({exc})"}])
