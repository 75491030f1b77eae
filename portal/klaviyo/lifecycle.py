"""Pure builders for what happens to an order after it is placed: Cancelled Order, Refunded Order, an
attendee's Cancelled Registration, and Event Changed for every holder of a valid ticket.

The names are Klaviyo's own ecommerce names where Klaviyo has one. Like payloads.py, nothing here touches
the database or the network; each event's unique_id is deterministic, so a repeat is dropped by Klaviyo.
"""
import hashlib
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from portal.contact import normalize_email
from portal.klaviyo.payloads import (
    NextEvents, OrderData, OutgoingEvent, Person, TicketLine, event, iso_utc, item, number, order_total,
)

CANCELLED_ORDER = "Cancelled Order"
REFUNDED_ORDER = "Refunded Order"
CANCELLED_REGISTRATION = "Cancelled Registration"
EVENT_CHANGED = "Event Changed"
METRICS = (CANCELLED_ORDER, REFUNDED_ORDER, CANCELLED_REGISTRATION, EVENT_CHANGED)

# Why an attendee lost their ticket (the Reason of Cancelled Registration).
LOST_CANCELLED, LOST_REFUNDED, LOST_TRANSFERRED = "cancelled", "refunded", "transferred"


@dataclass(frozen=True)
class Cancellation:
    at: datetime
    reason: str


@dataclass(frozen=True)
class RefundData:
    refund_id: int
    at: datetime
    amount: Decimal
    is_full: bool
    reason: str
    ticket_ids: tuple[str, ...]  # the tickets refunded (none for an amount on the order)


@dataclass(frozen=True)
class ChangeData:
    change_id: int
    at: datetime
    event_name: str
    old_start: datetime
    new_start: datetime
    old_end: datetime
    new_end: datetime
    old_venue: str
    new_venue: str

    @property
    def changed(self) -> list[str]:
        """Which of the event's facts changed, by their property names."""
        return [name for name, old, new in (("EventStartAt", self.old_start, self.new_start),
                                            ("EventEndAt", self.old_end, self.new_end),
                                            ("VenueName", self.old_venue, self.new_venue)) if old != new]


def cancelled_order(order: OrderData, cancellation: Cancellation) -> OutgoingEvent:
    """Once per cancelled order, on the purchaser's profile; its value is the order's value."""
    properties = {
        "OrderId": str(order.order_id),
        "Items": [item(line) for line in order.tickets],
        "EventName": order.event_name,
        "EventStartAt": iso_utc(order.event_start),
        "VenueName": order.venue,
        "Currency": order.currency,
        "Reason": cancellation.reason,
        "IsTest": order.is_test,
    }
    return event(CANCELLED_ORDER, f"cancel_{order.order_id}", order.purchaser, None, properties, cancellation.at,
                 order_total(order), order.currency, order.next_events)


def refunded_order(order: OrderData, refund: RefundData) -> OutgoingEvent:
    """Once per refund, on the purchaser's profile; its value is the amount refunded."""
    refunded = set(refund.ticket_ids)
    properties = {
        "OrderId": str(order.order_id),
        "Items": [item(line) for line in order.tickets if line.ticket_id in refunded],
        "RefundedAmount": number(refund.amount),
        "IsFullRefund": refund.is_full,
        "EventName": order.event_name,
        "EventStartAt": iso_utc(order.event_start),
        "Currency": order.currency,
        "Reason": refund.reason,
        "IsTest": order.is_test,
    }
    return event(REFUNDED_ORDER, f"refund_{refund.refund_id}", order.purchaser, None, properties, refund.at,
                 refund.amount, order.currency, order.next_events)


def cancelled_registration(order: OrderData, line: TicketLine, lost: str, at: datetime) -> OutgoingEvent:
    """An attendee (not the purchaser) who no longer holds a ticket in this order: the ticket was cancelled,
    refunded or handed to someone else. Their profile's NextEvent properties follow."""
    properties = {
        "AttendeeId": str(line.attendee_id),
        "OrderId": str(order.order_id),
        "EventName": order.event_name,
        "EventStartAt": iso_utc(order.event_start),
        "VenueName": order.venue,
        "TicketName": line.type_name,
        "Reason": lost,
        "IsTest": order.is_test,
    }
    return event(CANCELLED_REGISTRATION, f"unregistered_{line.attendee_id}", line.attendee, None, properties, at,
                 next_events=order.next_events)


def event_changed(change: ChangeData, holder: Person, next_events: NextEvents) -> OutgoingEvent:
    """Once per change and holder of a valid ticket, with the new and the previous time and venue."""
    properties = {
        "EventName": change.event_name,
        "EventStartAt": iso_utc(change.new_start),
        "EventEndAt": iso_utc(change.new_end),
        "VenueName": change.new_venue,
        "PreviousEventStartAt": iso_utc(change.old_start),
        "PreviousEventEndAt": iso_utc(change.old_end),
        "PreviousVenueName": change.old_venue,
        "ChangedFields": change.changed,
    }
    # The unique_id names the person by a digest, never by their address: it is logged.
    who = hashlib.sha256(normalize_email(holder.email).encode()).hexdigest()[:16]
    return event(EVENT_CHANGED, f"eventchange_{change.change_id}_{who}", holder, None, properties, change.at,
                 next_events=next_events)
