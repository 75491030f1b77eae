"""The Klaviyo connection as the sync sees it: a usable token, one refresh at a time, Needs reconnect,
Disconnect as a hard stop, and revokes that are retried until Klaviyo hears them.

The Integrations pages (portal.integrations) call down into this module; nothing here knows about pages.
"""
import logging
from datetime import timedelta

from flask import current_app
from redis.exceptions import RedisError
from sqlalchemy import bindparam, select

from portal.crypto import decrypt, encrypt
from portal.extensions import db
from portal.klaviyo import client
from portal.sync import gate, outbox
from portal.sync.models import CONNECTED, DISCONNECTED, NEEDS_RECONNECT, KlaviyoConnection
from portal.sync.queue import enqueue_delivery, redis_connection
from portal.types import utcnow

log = logging.getLogger("portal.klaviyo")


# Incremental authorization: a connection asks Klaviyo for the base scopes (KLAVIYO_SCOPES), plus those of
# each feature the organizer turned on. A connection that never turns one on keeps the base scopes.
FEATURE_SCOPES = {
    "subscriptions": ("lists:read", "lists:write", "profiles:write", "subscriptions:write"),
    "flows": ("flows:read", "flows:write", "segments:write", "metrics:read"),
}
FEATURE_NAMES = {"subscriptions": "list subscriptions", "flows": "flows and segments"}


def requested_scopes(connection: KlaviyoConnection | None) -> list[str]:
    """What to ask Klaviyo for at the next Connect or Reconnect, in a stable order."""
    wanted = current_app.config["KLAVIYO_SCOPES"].split()
    for feature in (connection.feature_list if connection else []):
        wanted += [scope for scope in FEATURE_SCOPES.get(feature, ()) if scope not in wanted]
    return wanted


def missing_scopes(connection: KlaviyoConnection, feature: str | None = None) -> list[str]:
    """Scopes asked for (for one feature, or for everything turned on) that Klaviyo has not granted yet."""
    wanted = FEATURE_SCOPES[feature] if feature else requested_scopes(connection)
    granted = set(connection.scopes)
    return [scope for scope in wanted if scope not in granted]


def has_scopes(connection: KlaviyoConnection, *scopes: str) -> bool:
    return set(scopes) <= set(connection.scopes)


def turn_on(connection: KlaviyoConnection, feature: str) -> bool:
    """Remember that the organizer wants this feature. True when Klaviyo must be asked for more (Reconnect).
    The caller commits."""
    if feature not in FEATURE_SCOPES:
        raise ValueError(f"unknown feature {feature!r}")
    if feature not in connection.feature_list:
        connection.features = " ".join(connection.feature_list + [feature])
    return bool(missing_scopes(connection, feature))


def turn_off(connection: KlaviyoConnection, feature: str) -> None:
    """The feature is off; its scopes stay granted until the next Reconnect asks for less. The caller commits."""
    connection.features = " ".join(f for f in connection.feature_list if f != feature)


# A caller that has read the organizer's connection already passes it on; this default means "look it up" (None is a
# connection that does not exist).
LOOK_UP = object()

_CONNECTION_FOR = select(KlaviyoConnection).where(KlaviyoConnection.organizer_id == bindparam("organizer_id"))


def connection_for(organizer_id: int) -> KlaviyoConnection | None:
    return db.session.scalar(_CONNECTION_FOR, {"organizer_id": organizer_id})


def installation_key(connection: KlaviyoConnection) -> str:
    """Klaviyo's rate limits are per installed app per account, so key on the account when we know it."""
    return f"acct-{connection.account_id}" if connection.account_id else f"conn-{connection.id}"


def account_lookup_key(organizer_id: int) -> str:
    """Account lookups are rare and made before the account is known, so they are counted per organizer."""
    return f"accounts-{organizer_id}"


def store_tokens(connection: KlaviyoConnection, token: dict) -> None:
    """Keep a token answer from Klaviyo, encrypted. The caller commits."""
    connection.access_token_enc = encrypt(token["access_token"])
    if token.get("refresh_token"):  # Klaviyo may rotate it: always keep the newest
        connection.refresh_token_enc = encrypt(token["refresh_token"])
    expires_in = int(token.get("expires_in") or 3600)
    connection.expires_at = utcnow() + timedelta(seconds=expires_in)
    if token.get("scope"):
        connection.scope = token["scope"]


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
        store_tokens(connection, token)
        db.session.commit()
        log.info("klaviyo.token_refreshed connection=%s", connection.id)
        return token["access_token"]


def needs_reconnect(connection: KlaviyoConnection, reason: str) -> None:
    """Stop sending until the organizer reconnects; hold (never drop) the events waiting to go."""
    connection.status = NEEDS_RECONNECT
    connection.status_reason = reason
    outbox.hold(connection.organizer_id, "held: the Klaviyo connection needs reconnecting")
    db.session.commit()
    log.warning("klaviyo.needs_reconnect connection=%s", connection.id)


def reconnected(connection: KlaviyoConnection) -> None:
    """After a fresh authorization was committed: open the send gate again and wake the worker."""
    try:
        gate.reopen(connection.id)
    except RedisError:
        pass
    enqueue_delivery(connection.organizer_id)


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
    outbox.cancel(connection.organizer_id, "cancelled: disconnected")
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


def pending_revokes() -> list[KlaviyoConnection]:
    """Connections whose Disconnect could not reach Klaviyo to revoke access yet."""
    return list(db.session.scalars(
        select(KlaviyoConnection).where(KlaviyoConnection.revoke_pending_enc.is_not(None))))
