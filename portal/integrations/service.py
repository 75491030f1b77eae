"""The Klaviyo card as the organizer uses it: connecting through Klaviyo's consent page, the account's
details, the figures of View Details and the "Verifying your installation" checklist.

Tokens, refresh, Needs reconnect and Disconnect belong to the sync (portal.sync.connection); this module
calls down into it and never the other way round.
"""
import logging
from dataclasses import dataclass
from datetime import timedelta

from authlib.common.errors import AuthlibBaseError
from authlib.integrations.base_client import MismatchingStateError, OAuthError
from redis.exceptions import RedisError
from sqlalchemy import func, select, true

from portal.events.models import Event
from portal.extensions import db
from portal.integrations import flows, oauth_state
from portal.klaviyo import client
from portal.orders.models import Order
from portal.sync import connection as klaviyo, limiter, metric_guard, outbox, verdicts
from portal.sync.models import (
    CANCELLED, CLAIMED, CONNECTED, FAILED, HELD, PENDING, SENT, KlaviyoConnection, OutboxEvent, OutboxTally,
)
from portal.text import sentence
from portal.types import utcnow

log = logging.getLogger("portal.klaviyo")
NOT_SENT = (PENDING, CLAIMED, HELD, FAILED, CANCELLED)  # every status but SENT
REQUIRED_SCOPE = "events:write"


def apply_account(connection: KlaviyoConnection, response: client.ApiResponse) -> bool:
    """Cache the account from a GET /api/accounts answer. Returns False when the answer had none."""
    try:
        account = response.body["data"][0]
        attributes = account["attributes"]
    except (TypeError, KeyError, IndexError):
        return False
    contact = attributes.get("contact_information") or {}
    connection.account_id = account.get("id")
    connection.organization_name = contact.get("organization_name")
    connection.public_api_key = attributes.get("public_api_key")
    connection.account_timezone = attributes.get("timezone")
    connection.account_currency = attributes.get("preferred_currency")
    connection.account_fetched_at = utcnow()
    return True


def connect(organizer, token: dict, account_response: client.ApiResponse | None) -> KlaviyoConnection:
    """Record a fresh authorization: tokens (encrypted), account, and resume events held while the
    connection needed reconnecting. The caller commits, then calls klaviyo.reconnected()."""
    connection = klaviyo.connection_for(organizer.id)
    if connection is None:
        connection = KlaviyoConnection(organizer_id=organizer.id)
        db.session.add(connection)
    klaviyo.store_tokens(connection, token)
    connection.status = CONNECTED
    connection.status_reason = None
    connection.connected_by = f"{organizer.name} <{organizer.email}>"
    connection.connected_at = utcnow()
    connection.disconnected_at = None
    if account_response is not None and account_response.accepted:
        apply_account(connection, account_response)
    db.session.flush()
    outbox.resume(organizer.id)
    return connection


# --- Klaviyo's consent page and its callback ------------------------------------------------------------

def start_authorization(organizer_id: int, redirect_uri: str):
    """Send the browser to Klaviyo's consent page (Connect and Reconnect), asking for the base scopes and
    those of the features this organizer turned on. Raises RedisError when the state cannot be kept."""
    return client.authorize_redirect(redirect_uri, klaviyo.requested_scopes(klaviyo.connection_for(organizer_id)))


def missing_features(connection: KlaviyoConnection | None) -> list[dict]:
    """The features turned on whose permissions Klaviyo has not granted yet: each needs a Reconnect."""
    if connection is None or not connection.is_active:
        return []
    return [{"key": feature, "name": klaviyo.FEATURE_NAMES[feature]} for feature in connection.feature_list
            if feature in klaviyo.FEATURE_SCOPES and klaviyo.missing_scopes(connection, feature)]


@dataclass(frozen=True)
class Outcome:
    """What to tell the organizer after the callback: a flash category and the message."""

    category: str
    message: str


def _failed(message: str) -> Outcome:
    return Outcome("error", message)


NOT_STARTED_HERE = ("This Klaviyo sign-in was not started from this page, or it expired. "
                    "Click Connect to start again.")
ALREADY_FINISHED = "This Klaviyo sign-in was already completed, so nothing changed."


def finish_authorization(organizer, args) -> Outcome:
    """Klaviyo sent the organizer back: check the state is one this organizer started and has not used,
    exchange the code, check what was granted, connect and commit. Any failure stores nothing and says
    what to do, in our own words (never the callback's)."""
    state = args.get("state") or ""
    if args.get("error"):
        if not oauth_state.take(state):
            return Outcome("info", ALREADY_FINISHED) if oauth_state.was_used(state) else _failed(NOT_STARTED_HERE)
        return _failed(_oauth_error_text(OAuthError(error=args.get("error"))))
    try:
        token = client.exchange_code()
    except MismatchingStateError:
        return Outcome("info", ALREADY_FINISHED) if oauth_state.was_used(state) else _failed(NOT_STARTED_HERE)
    except OAuthError as exc:
        return _failed(_oauth_error_text(exc))
    except client.KlaviyoUnavailable:
        return _failed("Klaviyo could not be reached to finish connecting. Nothing was saved; try again in a minute.")
    except AuthlibBaseError:  # e.g. a callback with a valid state but no code
        return _failed("Klaviyo could not complete the connection: its answer had no sign-in code. "
                       "Click Connect to try again.")

    if REQUIRED_SCOPE not in set((token.get("scope") or "").split()):
        _revoke_quietly(token)
        return _failed("Klaviyo did not grant permission to send events (events:write), so nothing was connected. "
                       "Click Connect and allow all requested permissions.")
    account = _fetch_account(organizer.id, token["access_token"])
    connection = connect(organizer, token, account)
    db.session.commit()
    klaviyo.reconnected(connection)
    flows.resume(organizer.id)  # flows and segments that waited for this Reconnect's permission
    metric_guard.request_check(organizer.id)  # does another integration already send Placed Order?
    if account is None or not account.accepted:
        return Outcome("warning", "Connected to Klaviyo. The account details could not be loaded yet; "
                                  "use Refresh in View Details.")
    # One full stop, even after a name that ends with one ("Sandbox Festival Co.").
    return Outcome("success", sentence(f"Connected to your Klaviyo account {connection.organization_name}"
                                       if connection.organization_name else "Connected to your Klaviyo account"))


def _oauth_error_text(exc: OAuthError) -> str:
    if exc.error == "access_denied":
        return "You cancelled in Klaviyo, so nothing was connected. Click Connect whenever you are ready."
    if exc.error == "invalid_grant":
        return ("Klaviyo did not accept the sign-in code: it was already used or has expired. "
                "Click Connect to try again.")
    if exc.error == "invalid_client":
        return ("Klaviyo did not recognise this portal's app credentials. An administrator should check "
                "KLAVIYO_CLIENT_ID and KLAVIYO_CLIENT_SECRET.")
    return "Klaviyo could not complete the connection. Click Connect to try again."


def _fetch_account(organizer_id: int, access_token: str) -> client.ApiResponse | None:
    """The account lookup right after connecting, within Klaviyo's 1/s, 15/min limit for it."""
    try:
        if limiter.acquire(klaviyo.account_lookup_key(organizer_id), "accounts", max_wait=1.5):
            return None
    except RedisError:  # without Redis, look it up anyway: it is one call
        pass
    try:
        return client.get_accounts(access_token)
    except client.KlaviyoUnavailable:
        return None


def _revoke_quietly(token: dict) -> None:
    if token.get("refresh_token"):
        try:
            client.revoke(token["refresh_token"])
        except client.KlaviyoUnavailable:
            log.warning("could not revoke a token Klaviyo granted without events:write")


def refresh_account(connection: KlaviyoConnection) -> str | None:
    """Fetch the account again (for View Details). Returns an error message, or None on success."""
    try:
        wait = limiter.try_acquire(klaviyo.account_lookup_key(connection.organizer_id), "accounts")
    except RedisError:
        wait = 0
    if wait:
        return f"Klaviyo allows one account lookup per second and 15 a minute. Try again in {max(int(wait), 1)} s."
    try:
        token = klaviyo.access_token(connection)
        response = client.get_accounts(token)
        if response.status == 401:
            response = client.get_accounts(klaviyo.refresh(connection, stale=token))
    except client.TokenRejected:
        return "Klaviyo no longer accepts this connection. Reconnect to resume."
    except client.KlaviyoUnavailable:
        return "Klaviyo could not be reached. Try again in a minute."
    if response.status == 429:
        return f"Klaviyo asks us to wait {response.retry_after or 1} s before looking up the account again."
    if not response.accepted or not apply_account(connection, response):
        return f"Klaviyo answered the account lookup with: {response.error_text()}"
    db.session.commit()
    return None


# --- what View Details and the checklist show -----------------------------------------------------------

def queue_stats(organizer_id: int) -> dict:
    """Counts by status, the age of the oldest pending event, and the last error, for View Details.

    Nothing here reads every row the organizer ever sent (View Details polls this every 2 s during an on-sale):
    the rows not sent are counted in ix_outbox_org_status (one range per status), the sent ones come from their
    tally (OutboxTally, kept by outbox.record), the last minute's is a range of sent_at in the same index, and
    the last error is the newest entry of ix_outbox_org_error, which holds only rows with an error."""
    counts = dict(db.session.execute(
        select(OutboxEvent.status, func.count()).where(OutboxEvent.organizer_id == organizer_id,
                                                       OutboxEvent.status.in_(NOT_SENT))
        .group_by(OutboxEvent.status)
    ).all())
    sent = db.session.scalar(select(OutboxTally.sent).where(OutboxTally.organizer_id == organizer_id))
    oldest = db.session.scalar(select(func.min(OutboxEvent.created_at)).where(
        OutboxEvent.organizer_id == organizer_id, OutboxEvent.status.in_((PENDING, CLAIMED))))
    last_error = db.session.execute(
        select(OutboxEvent.last_error, OutboxEvent.metric, OutboxEvent.unique_id, OutboxEvent.order_id)
        .where(OutboxEvent.organizer_id == organizer_id, OutboxEvent.last_error.is_not(None))
        .order_by(OutboxEvent.id.desc()).limit(1)
    ).first()
    recent = db.session.scalar(select(func.count()).select_from(OutboxEvent).where(
        OutboxEvent.organizer_id == organizer_id, OutboxEvent.status == SENT,
        OutboxEvent.sent_at >= utcnow() - timedelta(seconds=60)))
    return {
        "sent": sent or 0,
        "pending": counts.get(PENDING, 0) + counts.get(CLAIMED, 0),
        "held": counts.get(HELD, 0),
        "failed": counts.get(FAILED, 0),
        "cancelled": counts.get(CANCELLED, 0),
        "oldest_pending_seconds": int((utcnow() - oldest).total_seconds()) if oldest else None,
        "last_error": last_error,
        "per_second": round((recent or 0) / 60, 1),
    }


@dataclass(frozen=True)
class Checklist:
    """The four steps of "Verifying your installation", each from real data."""

    live_event: bool
    previewed: bool
    test_order_id: int | None
    test_order_stored: bool  # Klaviyo has every event of a test order (read back: a 202 is not enough)
    test_order_note: str | None = None  # what the latest test order's events are waiting for, or why they failed
    checking: bool = False  # still looking for them in Klaviyo


def checklist(organizer_id: int) -> Checklist:
    live = db.session.scalar(select(func.count()).select_from(Event).where(
        Event.organizer_id == organizer_id, Event.status == "live"))
    previewed = db.session.scalar(select(func.count()).select_from(Event).where(
        Event.organizer_id == organizer_id, Event.preview_opened_at.is_not(None)))
    test_order = db.session.scalar(select(Order.id).where(Order.organizer_id == organizer_id, Order.is_test == true())
                                   .order_by(Order.id.desc()).limit(1))
    if test_order is None:
        return Checklist(bool(live), bool(previewed), None, False)
    connection = klaviyo.connection_for(organizer_id)
    earlier = list(db.session.scalars(
        select(Order.id).where(Order.organizer_id == organizer_id, Order.is_test == true(), Order.id != test_order)
        .order_by(Order.id.desc()).limit(9)))
    checks = verdicts.order_checks(connection, [test_order, *earlier])  # two queries for the ten orders
    latest = checks[test_order]
    stored = any(check.done for check in checks.values())
    return Checklist(bool(live), bool(previewed), test_order, stored, None if stored else latest.note,
                     latest.checking and not stored)
