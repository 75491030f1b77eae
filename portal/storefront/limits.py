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


def order_refusal(event_id: int) -> str | None:
    """Take one order attempt from this address and for this event; the reason to refuse it, or None."""
    config = current_app.config
    per_address = _hit(f"addr:{request.remote_addr}", 60)
    if per_address is not None and per_address > config["CHECKOUT_ORDERS_PER_ADDRESS_PER_MINUTE"]:
        return "Too many orders from your connection in the last minute. Please try again in a minute."
    per_event = _hit(f"event:{event_id}", 60)
    if per_event is not None and per_event > config["CHECKOUT_ORDERS_PER_EVENT_PER_MINUTE"]:
        return "This event is taking more orders than it can handle right now. Please try again in a minute."
    return None


def take_form_use(nonce: str) -> bool:
    """One order on this form token; False once it has served FORM_TOKEN_MAX_ORDERS."""
    used = _hit(f"form:{nonce}", 12 * 3600)
    return used is None or used <= current_app.config["FORM_TOKEN_MAX_ORDERS"]


def give_back_form_use(nonce: str) -> None:
    """The order did not happen after all (sold out): the form keeps its use."""
    _hit(f"form:{nonce}", 12 * 3600, -1)


def code_guesses_left() -> bool:
    """May this address have another discount code checked?"""
    return _count(f"codes:{request.remote_addr}") < current_app.config["DISCOUNT_GUESSES_PER_ADDRESS"]


def wrong_code() -> None:
    _hit(f"codes:{request.remote_addr}", 600)
