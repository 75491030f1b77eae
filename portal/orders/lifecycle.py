"""What happens to an order after it is placed: cancel, refund, hand a ticket to someone else; and a live
event that moves or is cancelled.

Each action is one transaction: the change, its Klaviyo events in the outbox, and the counts it moves
(inventory, what was refunded). The decisive step is a conditional UPDATE, so a double click or a second
worker finds nothing left to do and is refused with a message, never done twice. The worker is woken
after the commit.
"""
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import case, select, update
from sqlalchemy.exc import IntegrityError

from portal.contact import normalize_email
from portal.events.models import Event, EventChange, TicketType
from portal.extensions import db
from portal.klaviyo import lifecycle as build
from portal.klaviyo.payloads import REGISTERED, OutgoingEvent, registered_attendee, registration_reasons
from portal.orders import holders
from portal.orders.models import (
    CANCELLED, PARTLY_REFUNDED, REFUNDED, TICKET_CANCELLED, TICKET_REFUNDED, VALID, Attendee, Order, Refund,
    RefundLine, Ticket, Transfer,
)
from portal.orders.service import AttendeeInput, snapshot
from portal.sync.connection import connection_for
from portal.sync.outbox import add_rows
from portal.sync.queue import enqueue_delivery
from portal.types import utcnow

CENT = Decimal("0.01")
_QUIET = {"synchronize_session": False}


class Refused(ValueError):
    """The action cannot be done as asked; the message says why and what to do instead."""


class AlreadyDone(Refused):
    """The same action arrived again (a double click, a store's retried webhook): it was done once already."""


def _atomic(action):
    """All of an action or none of it: a refusal, or any error, rolls back whatever it had begun."""
    @functools.wraps(action)
    def run(*args, **kwargs):
        try:
            return action(*args, **kwargs)
        except Exception:
            db.session.rollback()
            raise
    return run


@dataclass
class _Queue:
    """The Klaviyo events one action produces, per order, to write in its transaction."""

    organizer_id: int
    rows: list[tuple[int | None, OutgoingEvent]]

    def add(self, order_id: int | None, events: Iterable[OutgoingEvent]) -> None:
        self.rows.extend((order_id, e) for e in events)

    def write(self) -> bool:
        connection = connection_for(self.organizer_id)
        queued = False
        for order_id in dict.fromkeys(order_id for order_id, _ in self.rows):
            events = [e for oid, e in self.rows if oid == order_id]
            queued = bool(add_rows(self.organizer_id, order_id, events, connection)) or queued
        return queued


def _commit(queue: _Queue) -> None:
    try:
        queued = queue.write()
        db.session.commit()
    except Exception:
        db.session.rollback()
        raise
    if queued:
        enqueue_delivery(queue.organizer_id)


def _release(tickets: list[Ticket]) -> None:
    """Give the tickets' places back to their ticket types."""
    counts: dict[int, int] = {}
    for ticket in tickets:
        counts[ticket.ticket_type_id] = counts.get(ticket.ticket_type_id, 0) + 1
    for type_id, count in sorted(counts.items()):
        db.session.execute(update(TicketType).where(TicketType.id == type_id)
                           .values(sold=case((TicketType.sold >= count, TicketType.sold - count), else_=0)),
                           execution_options=_QUIET)


def _mark(tickets: list[Ticket], status: str) -> None:
    """Valid tickets become cancelled or refunded; refused when one of them is no longer valid."""
    if not tickets:
        return
    taken = db.session.execute(update(Ticket).where(Ticket.id.in_([t.id for t in tickets]), Ticket.status == VALID)
                               .values(status=status), execution_options=_QUIET).rowcount
    if taken != len(tickets):
        raise Refused("One of these tickets was cancelled or refunded meanwhile. Reload the order and try again.")
    for ticket in tickets:
        ticket.status = status


def _lost_registrations(order: Order, lost: list[Ticket], why: str, at: datetime, data) -> list[OutgoingEvent]:
    """Cancelled Registration for each attendee (not the purchaser) left with no valid ticket in this order."""
    still = {normalize_email(t.attendee.email) for t in order.tickets if t.is_valid and t not in lost}
    purchaser, told, events = normalize_email(order.email), set(), []
    lines = {line.ticket_id: line for line in data.tickets}
    for ticket in lost:
        email = normalize_email(ticket.attendee.email)
        if email and email != purchaser and email not in still and email not in told:
            told.add(email)
            events.append(build.cancelled_registration(data, lines[ticket.id], why, at))
    return events


def _people(order: Order, tickets: Iterable[Ticket] = ()) -> list[str | None]:
    return [order.email] + [t.attendee.email for t in tickets]


# --- refunds ---------------------------------------------------------------------------------------------------

def _shares(amount: Decimal, weights: list[Decimal]) -> list[Decimal]:
    """Split an amount over tickets in proportion to what each can give back; cents to the first."""
    total = sum(weights, Decimal("0"))
    if not weights:
        return []
    if total <= 0:
        return [amount] + [Decimal("0")] * (len(weights) - 1)
    shares = [(amount * w / total).quantize(CENT, rounding="ROUND_DOWN") for w in weights]
    shares[0] += amount - sum(shares, Decimal("0"))
    return shares


def _record_refund(order: Order, tickets: list[Ticket], amount: Decimal, include_fees: bool, reason: str, by: str,
                   source: str, request_key: str | None, external_ref: str | None, at: datetime) -> Refund:
    """The refund row and the money it moves, atomically. Refused beyond what is refundable."""
    if amount <= 0:
        raise Refused("Enter an amount above zero to refund.")
    refund = Refund(order_id=order.id, amount=amount, fees_included=include_fees, reason=reason, created_by=by,
                    created_at=at, source=source, request_key=request_key, external_ref=external_ref)
    db.session.add(refund)
    try:
        db.session.flush()  # first: a repeated form or store refund id stops here
    except IntegrityError:
        db.session.rollback()
        raise AlreadyDone("This refund was already made; nothing more was refunded.") from None
    taken = db.session.execute(
        update(Order).where(Order.id == order.id, Order.refunded_total + amount <= Order.total)
        .values(refunded_total=Order.refunded_total + amount,
                status=case((Order.status == CANCELLED, CANCELLED),
                            (Order.refunded_total + amount >= Order.total, REFUNDED), else_=PARTLY_REFUNDED)),
        execution_options=_QUIET).rowcount
    if taken != 1:
        db.session.rollback()
        db.session.refresh(order)
        raise Refused(f"You can refund at most {order.currency} {order.refundable:,.2f} on this order: what was "
                      "paid, minus earlier refunds.")
    db.session.refresh(order, ["refunded_total", "status"])
    refund.is_full = order.refunded_total >= order.total
    weights = [t.final_price + (t.fee if include_fees else 0) - t.refunded_amount for t in tickets]
    for ticket, share in zip(tickets, _shares(amount, weights)):
        ticket.refunded_amount += share
        refund.lines.append(RefundLine(ticket_id=ticket.id, amount=share))
    return refund


@_atomic
def refund_order(order: Order, *, ticket_ids: list[str], amount: Decimal | None, include_fees: bool, reason: str,
                 by: str, source: str = "portal", request_key: str | None = None,
                 external_ref: str | None = None) -> Refund:
    """Refund chosen tickets (they stop being valid and their places are released) or an amount on the order.
    Without an amount, the chosen tickets' prices are refunded, with their fees when include_fees."""
    for key, value in (("request_key", request_key), ("external_ref", external_ref)):
        if value and db.session.scalar(select(Refund.id).where(Refund.order_id == order.id,
                                                               getattr(Refund, key) == value)):
            raise AlreadyDone("This refund was already made; nothing more was refunded.")
    if order.is_cancelled and ticket_ids:
        raise Refused("This order is cancelled: its tickets can no longer be refunded one by one. Refund an amount "
                      "on the order instead.")
    by_id = {t.id: t for t in order.tickets}
    if any(tid not in by_id for tid in ticket_ids):
        raise Refused("One of the chosen tickets is not in this order.")
    tickets = [by_id[tid] for tid in dict.fromkeys(ticket_ids)]
    if gone := [t for t in tickets if not t.is_valid]:
        raise Refused(f"The {gone[0].type_name} ticket of {gone[0].attendee.name or 'this attendee'} was already "
                      f"{gone[0].status}; choose only valid tickets.")
    if amount is None:
        amount = sum((t.final_price + (t.fee if include_fees else 0) for t in tickets), Decimal("0"))
        if not tickets:
            raise Refused("Choose the tickets to refund, or enter an amount.")
    at = utcnow()
    refund = _record_refund(order, tickets, Decimal(amount).quantize(CENT), include_fees, reason, by, source,
                            request_key, external_ref, at)
    _mark(tickets, TICKET_REFUNDED)
    _release(tickets)
    db.session.flush()
    data = snapshot(order, holders.next_events(order.organizer_id, _people(order, tickets)))
    queue = _Queue(order.organizer_id, [])
    queue.add(order.id, [build.refunded_order(data, _refund_data(refund, at))])
    queue.add(order.id, _lost_registrations(order, tickets, build.LOST_REFUNDED, at, data))
    _commit(queue)
    return refund


def _refund_data(refund: Refund, at: datetime) -> build.RefundData:
    return build.RefundData(refund.id, at, refund.amount, refund.is_full, refund.reason,
                            tuple(line.ticket_id for line in refund.lines))


def history_events(order: Order) -> list[OutgoingEvent]:
    """The lifecycle events an order has had so far (its cancellation and refunds), as built when they
    happened: for a history backfill, which sends them as past events."""
    data = snapshot(order)
    events = [build.refunded_order(data, _refund_data(refund, refund.created_at)) for refund in order.refunds]
    if order.is_cancelled:
        events.insert(0, build.cancelled_order(data, build.Cancellation(order.cancelled_at, order.cancel_reason or "")))
    return events


# --- cancelling ------------------------------------------------------------------------------------------------

def _cancel(order: Order, queue: _Queue, *, refund: bool, include_fees: bool, reason: str, by: str, at: datetime,
            source: str = "portal", request_key: str | None = None, external_ref: str | None = None) -> None:
    taken = db.session.execute(
        update(Order).where(Order.id == order.id, Order.status != CANCELLED)
        .values(status=CANCELLED, cancelled_at=at, cancelled_by=by, cancel_reason=reason),
        execution_options=_QUIET).rowcount
    if taken != 1:
        raise AlreadyDone("This order was already cancelled; nothing more was changed.")
    lost = order.valid_tickets
    refund_row = None
    if refund:
        owed = sum((t.final_price + (t.fee if include_fees else 0) - t.refunded_amount for t in lost), Decimal("0"))
        owed = min(owed, order.refundable)
        if owed > 0:
            refund_row = _record_refund(order, lost, owed, include_fees, reason, by, source, request_key,
                                        external_ref, at)
    _mark(lost, TICKET_REFUNDED if refund_row else TICKET_CANCELLED)
    _release(lost)
    db.session.flush()
    db.session.refresh(order, ["status", "cancelled_at", "cancel_reason", "cancelled_by"])
    data = snapshot(order, holders.next_events(order.organizer_id, _people(order, lost)))
    events = [build.cancelled_order(data, build.Cancellation(at, reason))]
    if refund_row is not None:
        events.append(build.refunded_order(data, _refund_data(refund_row, at)))
    events.extend(_lost_registrations(order, lost, build.LOST_CANCELLED, at, data))
    queue.add(order.id, events)


@_atomic
def cancel_order(order: Order, *, refund: bool, include_fees: bool, reason: str, by: str, source: str = "portal",
                 external_ref: str | None = None) -> None:
    """Cancel every ticket of the order and release its places; refund what is left to refund when asked."""
    queue = _Queue(order.organizer_id, [])
    _cancel(order, queue, refund=refund, include_fees=include_fees, reason=reason, by=by, at=utcnow(), source=source,
            external_ref=external_ref)
    _commit(queue)


@_atomic
def cancel_event(event: Event, *, refund: bool, include_fees: bool, reason: str, by: str) -> int:
    """Cancel the event and every order of it that is not cancelled yet. Returns how many orders."""
    if event.is_cancelled:
        raise Refused("This event is already cancelled.")
    event.status = "cancelled"
    queue, at = _Queue(event.organizer_id, []), utcnow()
    orders = list(db.session.scalars(select(Order).where(Order.event_id == event.id, Order.status != CANCELLED)
                                     .order_by(Order.id)))
    for order in orders:
        _cancel(order, queue, refund=refund, include_fees=include_fees, reason=reason, by=by, at=at)
    _commit(queue)
    return len(orders)


# --- handing a ticket to someone else -------------------------------------------------------------------------

@_atomic
def transfer_ticket(order: Order, ticket: Ticket, new: AttendeeInput, *, reason: str, by: str) -> Transfer:
    """The ticket gets a new attendee (a new AttendeeId); the old attendee no longer holds it."""
    if order.is_cancelled or not ticket.is_valid:
        raise Refused("Only a valid ticket can be handed to someone else.")
    old = ticket.attendee
    if normalize_email(new.email) and normalize_email(new.email) == normalize_email(old.email):
        raise Refused("This person already holds the ticket. Enter the new attendee's details.")
    at = utcnow()
    transfer = Transfer(order_id=order.id, ticket_id=ticket.id, from_attendee_id=old.id, from_name=old.name,
                        from_email=old.email, to_attendee_id=0, reason=reason, created_by=by, created_at=at)
    before = snapshot(order, None)
    db.session.delete(old)
    db.session.flush()  # the old attendee is gone before the new one takes the ticket
    ticket.attendee = Attendee(first_name=new.first_name, last_name=new.last_name, email=new.email or None,
                               phone=new.phone or None)
    db.session.flush()
    transfer.to_attendee_id = ticket.attendee.id
    db.session.add(transfer)
    db.session.flush()
    people = _people(order, [ticket]) + [old.email]
    data = snapshot(order, holders.next_events(order.organizer_id, people))
    queue = _Queue(order.organizer_id, [])
    others = [t.attendee.email for t in order.tickets if t.is_valid and t.id != ticket.id]
    if registration_reasons(order.email, others + [new.email])[-1] == REGISTERED:
        line = next(line for line in data.tickets if line.ticket_id == ticket.id)
        queue.add(order.id, [registered_attendee(data, line, at)])
    old_email = normalize_email(old.email)
    if old_email and old_email != normalize_email(order.email) and old_email not in map(normalize_email, others):
        old_line = next(line for line in before.tickets if line.ticket_id == ticket.id)
        lost = build.cancelled_registration(data, old_line, build.LOST_TRANSFERRED, at)
        queue.add(order.id, [lost])
    _commit(queue)
    return transfer


# --- a live event that moves ------------------------------------------------------------------------------------

def holders_to_tell(event: Event) -> int:
    """How many people an Event Changed would reach now."""
    return len(holders.holders(event.id)) if event.is_live else 0


def change_event(event: Event, *, previous: tuple[datetime, datetime, str], by: str) -> EventChange | None:
    """Record that a live event's time or venue changed from `previous` (start, end, venue) to what it is
    now, and tell each holder of a valid ticket, in the caller's transaction (the caller commits with the
    rest of the edit, then calls wake())."""
    old_start, old_end, old_venue = previous
    if not event.is_live or previous == (event.starts_at, event.ends_at, event.venue):
        return None
    change = EventChange(event_id=event.id, old_starts_at=old_start, new_starts_at=event.starts_at,
                         old_ends_at=old_end, new_ends_at=event.ends_at, old_venue=old_venue, new_venue=event.venue,
                         changed_by=by, changed_at=utcnow())
    db.session.add(change)
    db.session.flush()
    people = holders.holders(event.id)
    upcoming = holders.next_events(event.organizer_id, [person.email for person, _ in people])
    data = build.ChangeData(change.id, change.changed_at, event.name, old_start, event.starts_at,
                            old_end, event.ends_at, old_venue, event.venue)
    queue = _Queue(event.organizer_id, [])
    for person, order_id in people:
        queue.add(order_id, [build.event_changed(data, person, upcoming)])
    change.people_told = len(people)
    queue.write()
    return change


def wake(organizer_id: int) -> None:
    """After the commit of an edit that queued Event Changed."""
    enqueue_delivery(organizer_id)
