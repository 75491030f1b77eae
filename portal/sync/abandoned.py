"""Started Checkout for abandoned carts: the checkout form reports what the buyer has typed (server-side, with the
htmx requests the form makes; never a browser-side Klaviyo script), and a checkout that has a valid e-mail and at
least one ticket but no order ABANDONED_CHECKOUT_MINUTES later gets one Started Checkout.

    capture()   the form's change requests: start or update a checkout session (only while Klaviyo is connected
                and the organizer has not switched Started Checkout off)
    complete()  the order was placed: this session (and any other open one of the same buyer for the same event)
                never sends
    sweep()     every worker, every few seconds: each due session is claimed by one guarded update, checked once
                more for an order, and its Started Checkout goes into the outbox (then the usual delivery)

At most once per session (its unique_id is checkout_<session id>); a newer session of the same buyer for the same
event replaces an older open one, so one person abandoning twice gets one.
"""
import json
import logging
import re
from dataclasses import asdict, dataclass
from datetime import timedelta
from decimal import Decimal
from urllib.parse import urlencode

from flask import current_app
from sqlalchemy import bindparam, func, select, update

from portal.contact import normalize_email
from portal.events.models import Event
from portal.extensions import db
from portal.klaviyo.checkout import CartData, CartLine, started_checkout
from portal.klaviyo.payloads import Person
from portal.orders.models import Order
from portal.sync import outbox
from portal.sync.checkout_models import (
    COMPLETED, OPEN, REPLACED, SENDING, SENT, SKIPPED, CheckoutSession, KlaviyoOptions,
)
from portal.sync.connection import connection_for
from portal.sync.models import CONNECTED, NEEDS_RECONNECT
from portal.sync.queue import enqueue_delivery
from portal.types import utcnow

log = logging.getLogger("portal.sync")

TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
BATCH = 200


@dataclass(frozen=True)
class ChosenLine:
    """One ticket type as the buyer chose it, priced as the form's summary showed it."""

    ticket_type_id: int
    name: str
    quantity: int
    base_price: str
    final_price: str
    fee: str


# --- the organizer's switch -------------------------------------------------------------------------------

def enabled(organizer_id: int) -> bool:
    options = db.session.get(KlaviyoOptions, organizer_id)
    return options is None or options.started_checkout


def set_enabled(organizer_id: int, on: bool) -> None:
    """Turn Started Checkout on or off for this organizer. Off, nothing waiting is sent either. Commits."""
    options = db.session.get(KlaviyoOptions, organizer_id)
    if options is None:
        options = KlaviyoOptions(organizer_id=organizer_id)
        db.session.add(options)
    options.started_checkout, options.updated_at = on, utcnow()
    if not on:
        db.session.execute(update(CheckoutSession).where(CheckoutSession.organizer_id == organizer_id,
                                                         CheckoutSession.status == OPEN).values(status=SKIPPED))
    db.session.commit()


# --- the checkout form ------------------------------------------------------------------------------------

def capture(event: Event, token: str, email: str, first_name: str, last_name: str, lines: list[ChosenLine],
            is_test: bool, layout: str, discount_code: str | None = None) -> bool:
    """Record (or update) a checkout session that has a valid e-mail and a ticket. Returns whether one is kept."""
    if not TOKEN_RE.match(token or "") or not lines or not email:
        return False
    connection = connection_for(event.organizer_id)
    if connection is None or connection.status not in (CONNECTED, NEEDS_RECONNECT) or not enabled(event.organizer_id):
        return False
    now = utcnow()
    email = email.strip()
    selection = json.dumps({"lines": [asdict(line) for line in lines], "discount_code": discount_code or None})
    session = db.session.scalar(select(CheckoutSession).where(CheckoutSession.token == token))
    if session is None:
        session = CheckoutSession(token=token, organizer_id=event.organizer_id, event_id=event.id, started_at=now)
        db.session.add(session)
    elif session.status != OPEN or session.event_id != event.id:
        return False  # sent, completed or replaced already: a later change is no new checkout
    session.email, session.first_name, session.last_name = email, first_name[:100], last_name[:100]
    session.selection, session.updated_at, session.is_test, session.layout = selection, now, is_test, layout
    db.session.flush()
    # The same buyer, starting again for the same event: the newer checkout counts.
    db.session.execute(update(CheckoutSession).where(
        CheckoutSession.event_id == event.id, func.lower(CheckoutSession.email) == normalize_email(email),
        CheckoutSession.status == OPEN, CheckoutSession.id != session.id).values(status=REPLACED))
    db.session.commit()
    return True


_SESSIONS = CheckoutSession.__table__
_COMPLETE = (update(_SESSIONS).where(_SESSIONS.c.event_id == bindparam("of_event"), _SESSIONS.c.status == OPEN)
             .values(status=COMPLETED, order_id=bindparam("the_order"), updated_at=bindparam("now")))
_COMPLETE_BY_EMAIL = _COMPLETE.where(func.lower(_SESSIONS.c.email) == bindparam("of_email"))
_COMPLETE_BY_EMAIL_OR_TOKEN = _COMPLETE.where((func.lower(_SESSIONS.c.email) == bindparam("of_email"))
                                              | (_SESSIONS.c.token == bindparam("of_token")))


def complete(event_id: int, token: str | None, order_id: int, email: str) -> None:
    """The buyer placed the order: this checkout (and any other open one of theirs for this event) sends
    nothing. In the order's own transaction; the caller commits."""
    params = {"of_event": event_id, "the_order": order_id, "now": utcnow(), "of_email": normalize_email(email)}
    if token and TOKEN_RE.match(token):
        db.session.execute(_COMPLETE_BY_EMAIL_OR_TOKEN, {**params, "of_token": token})
    else:
        db.session.execute(_COMPLETE_BY_EMAIL, params)


# --- the sweeper ------------------------------------------------------------------------------------------

def sweep() -> None:
    """Queue Started Checkout for each checkout left unfinished for ABANDONED_CHECKOUT_MINUTES."""
    delay = timedelta(minutes=current_app.config["ABANDONED_CHECKOUT_MINUTES"])
    due = list(db.session.scalars(select(CheckoutSession.id).where(
        CheckoutSession.status == OPEN, CheckoutSession.started_at <= utcnow() - delay)
        .order_by(CheckoutSession.id).limit(BATCH)))
    db.session.rollback()
    woken = set()
    for session_id in due:
        organizer_id = _send(session_id)
        if organizer_id is not None:
            woken.add(organizer_id)
    for organizer_id in woken:
        enqueue_delivery(organizer_id)


def _send(session_id: int) -> int | None:
    """Claim one due session and put its Started Checkout in the outbox. Returns the organizer to wake."""
    claimed = db.session.execute(update(CheckoutSession).where(CheckoutSession.id == session_id,
                                                               CheckoutSession.status == OPEN)
                                 .values(status=SENDING, updated_at=utcnow())).rowcount
    db.session.commit()
    if not claimed:
        return None  # another worker took it, or the order came in
    session = db.session.get(CheckoutSession, session_id)
    event = db.session.get(Event, session.event_id)
    ordered = db.session.scalar(select(Order.id).where(
        Order.event_id == session.event_id, func.lower(Order.email) == normalize_email(session.email),
        Order.placed_at >= session.started_at).limit(1))
    connection = connection_for(session.organizer_id)
    if ordered is not None:
        session.status, session.order_id = COMPLETED, ordered
    elif (connection is None or connection.status not in (CONNECTED, NEEDS_RECONNECT)
          or not enabled(session.organizer_id) or event is None):
        session.status = SKIPPED
    else:
        built = started_checkout(cart(session, event))
        outbox.add_rows(session.organizer_id, None, [built], connection)
        session.status, session.sent_at = SENT, utcnow()
    db.session.commit()
    log.info("checkout.started session=%s outcome=%s", session_id, session.status)
    return session.organizer_id if session.status == SENT else None


def cart(session: CheckoutSession, event: Event) -> CartData:
    """The session as plain data for the builder."""
    selection = json.loads(session.selection)
    chosen = [ChosenLine(**line) for line in selection.get("lines", [])]
    lines = tuple(CartLine(c.ticket_type_id, c.name, c.quantity, Decimal(c.base_price), Decimal(c.final_price),
                           Decimal(c.fee)) for c in chosen)
    return CartData(session_id=session.id, started_at=session.started_at, currency=event.currency,
                    event_name=event.name, event_start=event.starts_at, venue=event.venue,
                    buyer=Person(session.first_name, session.last_name, session.email), lines=lines,
                    checkout_url=checkout_url(event, chosen, selection.get("discount_code"), session.is_test),
                    is_test=session.is_test)


def checkout_url(event: Event, chosen: list[ChosenLine], discount_code: str | None, preview: bool) -> str:
    """The Event Page with the same tickets (and discount code) chosen again; the buyer's details are not in it."""
    query: dict = {f"qty-{line.ticket_type_id}": line.quantity for line in chosen}
    if discount_code:
        query["discount_code"] = discount_code
    if preview:
        query["preview"] = 1
    base = current_app.config["PUBLIC_BASE_URL"].rstrip("/")
    return f"{base}/e/{event.public_id}?{urlencode(query)}"
