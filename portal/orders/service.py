"""Placing an order: prices, capacity, and the Klaviyo outbox rows, all in one transaction."""
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from flask import current_app
from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.orm import make_transient_to_detached

from portal.consent import service as consent
from portal.events.models import DiscountCode, Event, TicketType
from portal.extensions import db, write_turn
from portal.klaviyo.payloads import NextEvents, OrderData, Person, TicketLine, build_order_events
from portal.orders import holders
from portal.orders.models import PAID, VALID, Attendee, Order, Ticket
from portal.sync import abandoned
from portal.sync.connection import LOOK_UP, connection_for
from portal.sync.outbox import add_rows
from portal.sync.queue import enqueue_delivery
from portal.types import utcnow

CENT = Decimal("0.01")


@dataclass
class AttendeeInput:
    first_name: str = ""
    last_name: str = ""
    email: str | None = None
    phone: str | None = None


@dataclass(frozen=True)
class LinePrice:
    """What one ticket cost when a store (Shopify, Wix) set the price instead of the ticket type."""

    base: Decimal
    final: Decimal
    fee: Decimal = Decimal("0")


@dataclass
class OrderInput:
    """A validated checkout: who buys, how many of each ticket type, and who attends each ticket."""

    first_name: str
    last_name: str
    email: str
    phone: str | None
    # (ticket type, attendee) per ticket, in the order the buyer listed them
    lines: list[tuple[TicketType, AttendeeInput]] = field(default_factory=list)
    discount: DiscountCode | None = None
    source: str = "event_page"
    is_test: bool = False
    # Sales-channel orders were priced and paid in the store: they carry one LinePrice per line, the
    # store's currency, when and where they were placed, and notes for the organizer. Checkout leaves these unset.
    prices: list[LinePrice] | None = None
    currency: str | None = None
    placed_at: datetime | None = None
    external_ref: str | None = None
    discount_label: str | None = None
    notes: list[str] = field(default_factory=list)
    # What the purchaser agreed to about marketing (portal.consent); None where nothing was asked.
    consent: "consent.ConsentInput | None" = None
    # A checkout of the portal's own form: its checkout session ("" when the form had none), whose Started Checkout
    # is then never sent. None for orders that come from elsewhere (sales channels).
    checkout_session: str | None = None


class SoldOut(Exception):
    def __init__(self, ticket_type: TicketType, remaining: int):
        super().__init__(f"{ticket_type.name} has only {remaining} left")
        self.ticket_type = ticket_type
        self.remaining = remaining


def discounted(price: Decimal, discount: DiscountCode | None) -> Decimal:
    """A ticket's price after the discount code, never below zero."""
    if discount is None:
        return price
    if discount.kind == "percent":
        cut = (price * discount.amount / 100).quantize(CENT, rounding=ROUND_HALF_UP)
    else:
        cut = discount.amount
    return max(price - cut, Decimal("0")).quantize(CENT)


def place_order(event: Event, data: OrderInput, allow_oversell: bool = False, connection=LOOK_UP) -> Order:
    """Record a paid order and queue its Klaviyo events, atomically; then wake the worker.

    Lean, because an on-sale runs through here hundreds of times a second: everything that can happen before the
    write transaction does (prices, the buyers' next events, the connection), the order's rows go in with one
    statement per table, and capacity is taken last, by one conditional UPDATE per ticket type, so the hot ticket
    type's row is locked only for that statement and the commit. Two buyers racing for the last ticket can't both
    get it: the second one's UPDATE matches nothing and its whole order rolls back. With allow_oversell (a
    channel order that was already paid elsewhere) the order is kept and flagged instead.
    """
    if data.prices is not None and len(data.prices) != len(data.lines):
        raise ValueError("OrderInput.prices needs exactly one LinePrice per line")
    region = event.country or current_app.config["DEFAULT_PHONE_REGION"]
    organizer_id = event.organizer_id  # the commit expires `event`: no reading it back to wake the worker
    if connection is LOOK_UP:
        connection = connection_for(organizer_id)
    priced = _priced(event, data)
    people = [priced.order["email"]] + [attendee["email"] for attendee in priced.attendees]
    # A purchase only adds tickets: someone with nothing upcoming had nothing before either, so their
    # profile is left as it is rather than unset (which Bulk Create could not carry).
    upcoming = {email: next_event for email, next_event in holders.next_events_for_purchase(event, people).items()
                if next_event is not None}
    with write_turn():  # SQLite: wait in line for the write lock, not in its busy handler
        try:
            order_id = db.session.execute(INSERT_ORDER, priced.order).scalar_one()
            order = Order(id=order_id, **priced.order)
            db.session.execute(INSERT_TICKETS, [dict(ticket, order_id=order_id) for ticket in priced.tickets])
            attendee_ids = {ticket_id: attendee_id for attendee_id, ticket_id in
                            db.session.execute(INSERT_ATTENDEES, priced.attendees)}
            result = build_order_events(_order_data(event, order, priced, attendee_ids, region, upcoming))
            queued = add_rows(event.organizer_id, order_id, result.events, connection)
            order.notes = "\n".join(data.notes + result.notes)
            queued += consent.record(order, data.consent, connection, region)  # may add notes of its own
            if data.checkout_session is not None:  # no Started Checkout for a checkout that became an order
                abandoned.complete(event.id, data.checkout_session, order_id, order.email)
            oversold = _take_capacity(event, data.lines, allow_oversell)
            if oversold:
                order.notes = "\n".join(oversold + order.note_lines)
            if order.notes:
                db.session.execute(update(ORDERS).where(ORDERS.c.id == order_id).values(notes=order.notes))
            db.session.commit()
        except Exception:
            db.session.rollback()
            raise
    # The order's row as written, in the session without reading it back (its tickets load when asked for).
    make_transient_to_detached(order)
    db.session.add(order)
    if queued:
        enqueue_delivery(organizer_id)
    return order


# Built once: the statements of every checkout, with their parameters bound at each execution.
ORDERS, TICKETS, ATTENDEES, TYPES = Order.__table__, Ticket.__table__, Attendee.__table__, TicketType.__table__
INSERT_ORDER = insert(ORDERS).returning(ORDERS.c.id)
INSERT_TICKETS = insert(TICKETS).returning(TICKETS.c.id)  # RETURNING: one multi-row INSERT on PostgreSQL too
INSERT_ATTENDEES = insert(ATTENDEES).returning(ATTENDEES.c.id, ATTENDEES.c.ticket_id)
TAKE_CAPACITY = (update(TYPES).where(TYPES.c.id == bindparam("type_id"), TYPES.c.event_id == bindparam("of_event"),
                                     TYPES.c.sold + bindparam("quantity") <= TYPES.c.capacity)
                 .values(sold=TYPES.c.sold + bindparam("quantity")))


@dataclass
class _Priced:
    """An order's rows before they are written: the order's columns, its tickets' (with their ids), and one
    attendee per ticket."""

    order: dict
    tickets: list[dict]
    attendees: list[dict]


def _priced(event: Event, data: OrderInput) -> _Priced:
    tickets, attendees = [], []
    subtotal = discount_total = fee_total = Decimal("0")
    for position, (ticket_type, attendee) in enumerate(data.lines):
        if data.prices is not None:
            price = data.prices[position]
            base, final, fee = price.base, price.final, price.fee
        else:
            base, final, fee = ticket_type.price, discounted(ticket_type.price, data.discount), ticket_type.fee
        ticket_id = str(uuid.uuid4())
        tickets.append({"id": ticket_id, "position": position, "ticket_type_id": ticket_type.id,
                        "type_name": ticket_type.name, "base_price": base, "final_price": final, "fee": fee,
                        "status": VALID, "refunded_amount": Decimal("0")})
        attendees.append({"ticket_id": ticket_id, "first_name": attendee.first_name, "last_name": attendee.last_name,
                          "email": (attendee.email or "").strip() or None, "phone": attendee.phone or None})
        subtotal += base
        discount_total += base - final
        fee_total += fee
    order = {
        "public_token": uuid.uuid4().hex, "organizer_id": event.organizer_id, "event_id": event.id,
        "source": data.source, "is_test": data.is_test, "first_name": data.first_name, "last_name": data.last_name,
        "email": data.email.strip(), "phone": data.phone or None, "currency": data.currency or event.currency,
        "discount_code": data.discount.code if data.discount else (data.discount_label or None),
        "subtotal": subtotal, "discount_total": discount_total, "fee_total": fee_total,
        "total": subtotal - discount_total + fee_total, "notes": "", "placed_at": data.placed_at or utcnow(),
        "external_ref": data.external_ref, "status": PAID, "refunded_total": Decimal("0"),
        "cancelled_at": None, "cancelled_by": None, "cancel_reason": None,
    }
    return _Priced(order, tickets, attendees)


def _order_data(event: Event, order: Order, priced: _Priced, attendee_ids: dict[str, int], region: str,
                upcoming: NextEvents) -> OrderData:
    """The order about to be written, as the payload builders take it (what snapshot() reads from a stored one)."""
    return OrderData(
        order_id=order.id, placed_at=order.placed_at, currency=order.currency, event_name=event.name,
        event_start=event.starts_at, event_end=event.ends_at, venue=event.venue,
        purchaser=Person(order.first_name, order.last_name, order.email, order.phone),
        tickets=tuple(
            TicketLine(ticket_id=t["id"], type_name=t["type_name"], base_price=t["base_price"],
                       final_price=t["final_price"], fee=t["fee"], attendee_id=attendee_ids[t["id"]],
                       attendee=Person(a["first_name"], a["last_name"], a["email"], a["phone"]))
            for t, a in zip(priced.tickets, priced.attendees)),
        phone_region=region, next_events=upcoming, is_test=order.is_test,
    )


def _take_capacity(event: Event, lines, allow_oversell: bool) -> list[str]:
    """Take the tickets from each type's capacity, or raise SoldOut. Returns the notes of an allowed oversell."""
    counts: dict[int, int] = {}
    for ticket_type, _ in lines:
        counts[ticket_type.id] = counts.get(ticket_type.id, 0) + 1
    notes = []
    for type_id, quantity in sorted(counts.items()):  # always in the same order: no deadlock between two orders
        taken = db.session.execute(TAKE_CAPACITY, {"type_id": type_id, "of_event": event.id,
                                                   "quantity": quantity}).rowcount
        if taken != 1:
            ticket_type = db.session.get(TicketType, type_id)
            db.session.refresh(ticket_type)
            remaining = ticket_type.remaining  # before the update below refreshes `sold`
            if not allow_oversell:
                raise SoldOut(ticket_type, remaining)
            db.session.execute(update(TicketType).where(TicketType.id == type_id)
                               .values(sold=TicketType.sold + quantity))
            notes.append(f"Oversold: {ticket_type.name} had {remaining} left, this order took {quantity}.")
    return notes


def snapshot(order: Order, next_events: NextEvents | None = None) -> OrderData:
    """The order as plain data for the payload builders (with its people's next events, when given)."""
    event = order.event or db.session.get(Event, order.event_id)
    return OrderData(
        order_id=order.id, placed_at=order.placed_at, currency=order.currency, event_name=event.name,
        event_start=event.starts_at, event_end=event.ends_at, venue=event.venue,
        purchaser=Person(order.first_name, order.last_name, order.email, order.phone),
        tickets=tuple(
            TicketLine(ticket_id=t.id, type_name=t.type_name, base_price=t.base_price, final_price=t.final_price,
                       fee=t.fee, attendee_id=t.attendee.id,
                       attendee=Person(t.attendee.first_name, t.attendee.last_name, t.attendee.email, t.attendee.phone))
            for t in order.tickets
        ),
        phone_region=event.country or current_app.config["DEFAULT_PHONE_REGION"],
        next_events=next_events, is_test=order.is_test,
    )


def find_discount(event: Event, code: str) -> DiscountCode | None:
    code = (code or "").strip()
    if not code:
        return None
    return db.session.scalar(select(DiscountCode).where(DiscountCode.event_id == event.id,
                                                        func.lower(DiscountCode.code) == code.lower()))
