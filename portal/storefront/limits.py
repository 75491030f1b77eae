"""Abuse limits of the public checkout, so a script cannot buy out an event, mail strangers through Klaviyo
flows or guess discount codes, while a real buyer in a real on-sale never meets them.

Counters live in Redis (one atomic INCR with an expiry), shared by every portal process. When Redis cannot
be reached the limits let buyers through rather than stop a sale: the database still guards capacity.
Behind a proxy, set PROXY_FIX_X_FOR so the client address is the buyer's, not the proxy's.
"""
import logging

from flask import current_app, request
from redis.exceptions import RedisError

from portal.sync.queue import redis_connection

log = logging.getLogger("portal.storefront")
PREFIX = "portal:checkout-limit"


def _hit(key: str, seconds: int, amount: int = 1) -> int | None:
    """Count one more in this window; the count so far, or None without Redis."""
    try:
        pipe = redis_connection().pipeline()
        pipe.incrby(f"{PREFIX}:{key}", amount)
        pipe.expire(f"{PREFIX}:{key}", seconds, nx=True)
        return int(pipe.execute()[0])
    except RedisError as exc:
        log.warning("checkout limits unavailable (%s): letting the request through", type(exc).__name__)
        return None


def _count(key: str) -> int:
    try:
        return int(redis_connection().get(f"{PREFIX}:{key}") or 0)
    except RedisError:
        return 0


def admit(event_id: int, nonce: str, count_address: bool = True) -> str | None:
    """Take one order attempt from this address, for this event and on this form token, in one round trip to
    Redis; the reason to refuse the order, or None. A refused attempt gives its form use back."""
    config = current_app.config
    keys = [(f"form:{nonce}", 12 * 3600, config["FORM_TOKEN_MAX_ORDERS"],
             "This form has served several orders already. Reload the page to buy more tickets.")]
    if count_address:  # the organizer's own test purchases are not limited by address or event
        keys[:0] = [
            (f"addr:{request.remote_addr}", 60, config["CHECKOUT_ORDERS_PER_ADDRESS_PER_MINUTE"],
             "Too many orders from your connection in the last minute. Please try again in a minute."),
            (f"event:{event_id}", 60, config["CHECKOUT_ORDERS_PER_EVENT_PER_MINUTE"],
             "This event is taking more orders than it can handle right now. Please try again in a minute.")]
    try:
        pipe = redis_connection().pipeline(transaction=False)
        for key, seconds, _, _ in keys:
            pipe.incrby(f"{PREFIX}:{key}", 1)
            pipe.expire(f"{PREFIX}:{key}", seconds, nx=True)
        counts = pipe.execute()[::2]
    except RedisError as exc:
        log.warning("checkout limits unavailable (%s): letting the request through", type(exc).__name__)
        return None
    for (_, _, limit, refusal), count in zip(keys, counts):
        if int(count) > limit:
            give_back_form_use(nonce)
            return refusal
    return None


def give_back_form_use(nonce: str) -> None:
    """The order did not happen after all (sold out): the form keeps its use."""
    _hit(f"form:{nonce}", 12 * 3600, -1)


def code_guesses_left() -> bool:
    """May this address have another discount code checked?"""
    return _count(f"codes:{request.remote_addr}") < current_app.config["DISCOUNT_GUESSES_PER_ADDRESS"]


def wrong_code() -> None:
    _hit(f"codes:{request.remote_addr}", 600)
