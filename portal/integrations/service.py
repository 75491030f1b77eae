"""What happens to a Klaviyo connection: connect, keep its token fresh, need reconnecting, disconnect."""
import logging
from datetime import timedelta

from flask import current_app
from redis.exceptions import RedisError
from sqlalchemy import select, update

from portal.crypto import decrypt, encrypt
from portal.extensions import db
from portal.integrations.models import (
    CONNECTED,
    DISCONNECTED,
    NEEDS_RECONNECT,
    KlaviyoConnection,
)
from portal.klaviyo import client
from portal.sync import gate
from portal.sync.models import CANCELLED, CLAIMED, HELD, PENDING, OutboxEvent
from portal.sync.queue import enqueue_delivery, redis_connection
from portal.types import utcnow

log = logging.getLogger("portal.klaviyo")


def connection_for(organizer_id: int) -> KlaviyoConnection | None:
    return db.session.scalar(select(KlaviyoConnection).where(KlaviyoConnection.organizer_id == organizer_id))


def installation_key(connection: KlaviyoConnection) -> str:
    """Klaviyo's rate limits are per installed app per account, so key on the account when we know it."""
    return f"acct-{connection.account_id}" if connection.account_id else f"conn-{connection.id}"


def account_lookup_key(organizer_id: int) -> str:
    """Account lookups are rare and made before the account is known, so they are counted per organizer."""
    return f"accounts-{organizer_id}"


def _store_tokens(connection: KlaviyoConnection, token: dict) -> None:
    connection.access_token_enc = encrypt(token["access_token"])
    if token.get("refresh_token"):  # Klaviyo may rotate it: always keep the newest
        connection.refresh_token_enc = encrypt(token["refresh_token"])
    expires_in = int(token.get("expires_in") or 3600)
    connection.expires_at = utcnow() + timedelta(seconds=expires_in)
    if token.get("scope"):
        connection.scope = token["scope"]


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
    """Record a fresh authorization: tokens (encrypted), account, and resume events held while disconnected
    from a needs-reconnect state. The caller commits, then calls after_connect()."""
    connection = connection_for(organizer.id)
    if connection is None:
        connection = KlaviyoConnection(organizer_id=organizer.id)
        db.session.add(connection)
    _store_tokens(connection, token)
    connection.status = CONNECTED
    connection.status_reason = None
    connection.connected_by = f"{organizer.name} <{organizer.email}>"
    connection.connected_at = utcnow()
    connection.disconnected_at = None
    if account_response is not None and account_response.accepted:
        apply_account(connection, account_response)
    db.session.flush()
    # Events held while the connection needed reconnecting flow again, keeping their original time.
    db.session.execute(
        update(OutboxEvent)
        .where(OutboxEvent.organizer_id == organizer.id, OutboxEvent.status == HELD)
        .values(status=PENDING, next_attempt_at=utcnow(), status_detail=None)
    )
    return connection


def after_connect(connection: KlaviyoConnection) -> None:
    try:
        gate.reopen(connection.id)
    except RedisError:
        pass
    enqueue_delivery(connection.organizer_id)


def _margin() -> timedelta:
    return timedelta(seconds=current_app.config["KLAVIYO_REFRESH_MARGIN_SECONDS"])


def access_token(connection: KlaviyoConnection) -> str:
    """A usable access token, refreshed first when it is about to expire."""
    if connection.expires_at is None or connection.expires_at - utcnow() < _margin():
        return refresh(connection, stale=decrypt(connection.access_token_enc))
    return decrypt(connection.access_token_enc)


def refresh(connection: KlaviyoConnection, stale: str | None) -> str:
    """Refresh the access token once, under a lock shared by all workers (Klaviyo rotates refresh tokens,
    so two refreshes racing with the same one would make the loser look revoked).

    Raises client.TokenRejected after marking the connection Needs reconnect, or KlaviyoUnavailable.
    """
    lock = redis_connection().lock(f"portal:refresh:{connection.id}", timeout=30, blocking_timeout=30)
    with lock:
        db.session.refresh(connection)
        current = decrypt(connection.access_token_enc)
        if connection.status != CONNECTED:
            raise client.TokenRejected("not_connected", "The connection is no longer active.")
        if current != stale and connection.expires_at and connection.expires_at - utcnow() > _margin():
            return current  # another worker refreshed it meanwhile
        try:
            token = client.refresh_token(decrypt(connection.refresh_token_enc))
        except client.TokenRejected as exc:
            if exc.error in {"invalid_grant", "invalid_client", "unauthorized_client"}:
                needs_reconnect(connection, "Klaviyo no longer accepts this connection (the app was uninstalled "
                                            "or access was revoked in Klaviyo). Reconnect to resume sending.")
            raise
        _store_tokens(connection, token)
        db.session.commit()
        log.info("klaviyo.token_refreshed connection=%s", connection.id)
        return token["access_token"]


def needs_reconnect(connection: KlaviyoConnection, reason: str) -> None:
    """Stop sending until the organizer reconnects; hold (never drop) the events waiting to go."""
    connection.status = NEEDS_RECONNECT
    connection.status_reason = reason
    db.session.execute(
        update(OutboxEvent)
        .where(OutboxEvent.organizer_id == connection.organizer_id, OutboxEvent.status.in_((PENDING, CLAIMED)))
        .values(status=HELD, claim_token=None, claimed_until=None,
                status_detail="held: the Klaviyo connection needs reconnecting")
    )
    db.session.commit()
    log.warning("klaviyo.needs_reconnect connection=%s", connection.id)


def disconnect(connection: KlaviyoConnection) -> bool:
    """Stop everything for this organizer, then revoke the refresh token at Klaviyo.

    Returns False when the revoke call could not reach Klaviyo; the worker then retries it later.
    The organizer is disconnected locally either way.
    """
    try:
        gate.close_and_drain(connection.id)
    except RedisError:
        log.warning("disconnect without the send gate: Redis unavailable connection=%s", connection.id)
    refresh_token = decrypt(connection.refresh_token_enc)
    connection.status = DISCONNECTED
    connection.status_reason = None
    connection.access_token_enc = None
    connection.refresh_token_enc = None
    connection.expires_at = None
    connection.disconnected_at = utcnow()
    connection.revoke_pending_enc = encrypt(refresh_token) if refresh_token else None
    db.session.execute(
        update(OutboxEvent)
        .where(OutboxEvent.organizer_id == connection.organizer_id,
               OutboxEvent.status.in_((PENDING, CLAIMED, HELD)))
        .values(status=CANCELLED, status_detail="cancelled: disconnected", claim_token=None, claimed_until=None)
    )
    db.session.commit()
    return retry_revoke(connection)


def retry_revoke(connection: KlaviyoConnection) -> bool:
    """Revoke a refresh token left over from a Disconnect. True when nothing is left to revoke."""
    token = decrypt(connection.revoke_pending_enc)
    if not token:
        return True
    try:
        client.revoke(token)
    except client.KlaviyoUnavailable:
        log.warning("klaviyo.revoke_failed connection=%s; will retry", connection.id)
        return False
    connection.revoke_pending_enc = None
    db.session.commit()
    log.info("klaviyo.revoked connection=%s", connection.id)
    return True


def refresh_account(connection: KlaviyoConnection) -> str | None:
    """Fetch the account again (for View Details). Returns an error message, or None on success."""
    from portal.sync import limiter

    try:
        wait = limiter.try_acquire(account_lookup_key(connection.organizer_id), "accounts")
    except RedisError:
        wait = 0
    if wait:
        return f"Klaviyo allows one account lookup per second and 15 a minute. Try again in {max(int(wait), 1)} s."
    try:
        token = access_token(connection)
        response = client.get_accounts(token)
        if response.status == 401:
            response = client.get_accounts(refresh(connection, stale=token))
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
