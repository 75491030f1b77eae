"""Proof of store ownership: a claim on a Shopify store or Wix site stays pending until the store's own signed
webhook arrives.

Connecting a store saves a claim: the shop domain (or Wix instance id) and the secret (or public key) that the
store signs its webhooks with. Anyone can type any shop domain and any secret, and then sign a delivery with that
secret themselves. So a verified delivery proves only the pair (store, key): whoever holds the key the store really
signs with. That is why a proof never locks a store to the first account that proves something about it:

* each delivery goes to the one claim whose key verifies it: the store's real deliveries reach only a claim that
  holds the store's real key, whatever other claims exist on that store;
* the first delivery verified with a pending claim's key proves that claim, and is then handled like every later
  one (the store will not send it again, so a paid order in it is imported, not lost);
* one key of one store belongs to one portal account (the unique active_key): of several claims that hold the
  same key, and so were all made by someone who has it, the first proved wins and the others are told;
* a claim that is not proved within CLAIM_LIFETIME expires and receives nothing.
"""
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field

from flask import current_app
from sqlalchemy import case, or_, select
from sqlalchemy.exc import IntegrityError

from portal.channels.models import CONNECTED, PENDING, PLATFORM_NAMES, SHOPIFY, SalesChannel, channel_key
from portal.extensions import db
from portal.types import utcnow


def key_fingerprint(secret: str) -> str:
    """A stable, non-reversible name for a signing key (keyed with SECRET_KEY, so a copy of the database does
    not let anyone test guesses of a weak secret)."""
    return hmac.new(current_app.config["SECRET_KEY"].encode(), b"sales channel key\0" + secret.strip().encode(),
                    hashlib.sha256).hexdigest()[:40]


def active_key(channel: SalesChannel) -> str:
    return f"{channel_key(channel.platform, channel.account)}#{key_fingerprint(channel.secret or '')}"


def live_claims(platform: str, account: str) -> list[SalesChannel]:
    """Every claim a webhook for this store may belong to: proved ones first (oldest proof first), then pending
    ones that have not expired (oldest claim first)."""
    if not account:
        return []
    key = channel_key(platform, account)
    return list(db.session.scalars(
        select(SalesChannel).where(
            SalesChannel.store_key == key,
            or_(SalesChannel.status == CONNECTED,
                (SalesChannel.status == PENDING) & (SalesChannel.claim_expires_at > utcnow())))
        .order_by(case((SalesChannel.status == CONNECTED, 0), else_=1), SalesChannel.proved_at,
                  SalesChannel.connected_at, SalesChannel.id)))


@dataclass
class Route:
    """Where a delivery goes: the claim whose key verified it (None: no claim's key did), the claims that were
    tried, and whether this delivery is the one that proved it."""

    channel: SalesChannel | None
    claims: list[SalesChannel] = field(default_factory=list)
    proved: bool = False


def route(platform: str, account: str, verifies: Callable[[SalesChannel], bool], *, retry: bool = True) -> Route:
    """Find the claim a delivery belongs to by its signature; prove it if it was pending. Commits a proof."""
    claims = live_claims(platform, account)
    matching = [claim for claim in claims if claim.secret and verifies(claim)]
    if not matching:
        return Route(None, claims)
    chosen, proved = matching[0], False
    if chosen.status == PENDING:
        chosen.prove(active_key(chosen))
        proved = True
    for other in matching[1:]:
        if other.status == PENDING:
            other.disconnect(taken_note(other, chosen))
    if proved or len(matching) > 1:
        try:
            db.session.commit()
        except IntegrityError:
            # Another claim with this very key was proved by a delivery running at the same moment.
            db.session.rollback()
            if retry:
                return route(platform, account, verifies, retry=False)
            raise
    return Route(chosen, claims, proved)


def taken_note(claim: SalesChannel, winner: SalesChannel) -> str:
    key = "secret" if claim.platform == SHOPIFY else "public key"
    return (f"On {utcnow():%d %b %Y} another portal account proved that {claim.account} is its own, with the same "
            f"{key} as your claim, and before you. A {PLATFORM_NAMES[claim.platform]} {key} connects to one portal "
            f"account. If that account is not yours, someone else has your {key}: change it in "
            f"{PLATFORM_NAMES[claim.platform]}, then connect again with the new one.")


def connected_with_same_key(platform: str, account: str, secret: str) -> SalesChannel | None:
    """The proved channel on this store that holds this same key, if any."""
    for claim in live_claims(platform, account):
        if claim.status == CONNECTED and claim.secret \
                and hmac.compare_digest(claim.secret.strip().encode(), secret.strip().encode()):
            return claim
    return None
