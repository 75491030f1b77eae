"""Placing an order: prices, capacity, and the Klaviyo outbox rows, all in one transaction."""
from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal

from flask import current_app
from sqlalchemy import func, select, update

from portal.consent import service as consent
from portal.events.models import DiscountCode, Event, TicketType
from portal.extensions import db
from portal.klaviyo.payloads import NextEvents, OrderData, Person, TicketLine, build_order_events
from portal.orders import holders
from portal.orders.models import Attendee, Order, Ticket
from portal.sync.connection import connection_for
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


def place_order(event: Event, data: OrderInput, allow_oversell: bool = False) -> Order:
    """Record a paid order and queue its Klaviyo events, atomically; then wake the worker.

    Capacity is taken with one conditional UPDATE per ticket type, so two buyers racing for the last
    ticket can't both get it. With allow_oversell (a channel order that was already paid elsewhere)
    the order is kept and flagged instead.
    """
    if data.prices is not None and len(data.prices) != len(data.lines):
        raise ValueError("OrderInput.prices needs exactly one LinePrice per line")
    counts: dict[int, int] = {}
    for ticket_type, _ in data.lines:
        counts[ticket_type.id] = counts.get(ticket_type.id, 0) + 1
    notes = []
    try:
        for type_id, quantity in sorted(counts.items()):
            taken = db.session.execute(
                update(TicketType)
                .where(TicketType.id == type_id, TicketType.event_id == event.id,
                       TicketType.sold + quantity <= TicketType.capacity)
                .values(sold=TicketType.sold + quantity),
                execution_options={"synchronize_session": False},
            ).rowcount
            if taken != 1:
                ticket_type = db.session.get(TicketType, type_id)
                db.session.refresh(ticket_type)
                remaining = ticket_type.remaining  # before the update below refreshes `sold`
                if not allow_oversell:
                    raise SoldOut(ticket_type, remaining)
                db.session.execute(update(TicketType).where(TicketType.id == type_id)
                                   .values(sold=TicketType.sold + quantity))
                notes.append(f"Oversold: {ticket_type.name} had {remaining} left, this order took {quantity}.")
        order = _build_order(event, data)
        db.session.add(order)
        db.session.flush()
        people = [order.email] + [ticket.attendee.email for ticket in order.tickets]
        # A purchase only adds tickets: someone with nothing upcoming had nothing before either, so their
        # profile is left as it is rather than unset (which Bulk Create could not carry).
        upcoming = {email: next_event for email, next_event in holders.next_events(event.organizer_id, people).items()
                    if next_event is not None}
        result = build_order_events(snapshot(order, upcoming))
        order.notes = "\n".join(notes + data.notes + result.notes)
        connection = connection_for(event.organizer_id)
        queued = add_rows(event.organizer_id, order.id, result.events, connection)
        queued += consent.record(order, data.consent, connection,
                                 event.country or current_app.config["DEFAULT_PHONE_REGION"])
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    if queued:
        enqueue_delivery(event.organizer_id)
    return order


def _build_order(event: Event, data: OrderInput) -> Order:
    order = Order(
        organizer_id=event.organizer_id, event_id=event.id, source=data.source, is_test=data.is_test,
        first_name=data.first_name, last_name=data.last_name, email=data.email.strip(), phone=data.phone or None,
        currency=data.currency or event.currency, placed_at=data.placed_at or utcnow(), external_ref=data.external_ref,
        discount_code=data.discount.code if data.discount else (data.discount_label or None),
    )
    subtotal = discount_total = fee_total = Decimal("0")
    for position, (ticket_type, attendee) in enumerate(data.lines):
        if data.prices is not None:
            price = data.prices[position]
            base, final, fee = price.base, price.final, price.fee
        else:
            base, final, fee = ticket_type.price, discounted(ticket_type.price, data.discount), ticket_type.fee
        ticket = Ticket(position=position, ticket_type_id=ticket_type.id, type_name=ticket_type.name,
                        base_price=base, final_price=final, fee=fee)
        ticket.attendee = Attendee(first_name=attendee.first_name, last_name=attendee.last_name,
                                   email=(attendee.email or "").strip() or None, phone=attendee.phone or None)
        order.tickets.append(ticket)
        subtotal += base
        discount_total += base - final
        fee_total += fee
    order.subtotal, order.discount_total, order.fee_total = subtotal, discount_total, fee_total
    order.total = subtotal - discount_total + fee_total
    return order


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
