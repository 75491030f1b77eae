"""The example profile: one event per metric the portal sends, so that every metric exists in Klaviyo before a
flow or segment names it (Klaviyo creates a metric on its first event, and recommends apps seed one).

The profile is an address of the portal's own, named Example Attendee, never a real buyer. Every event is a
past event (backfill: true), so Klaviyo records it without starting any flow, and carries a fixed unique_id,
so seeding again adds nothing. Pure, like the payload builders.
"""
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal

from portal.klaviyo import lifecycle
from portal.klaviyo.checkout import CartData, CartLine, started_checkout
from portal.klaviyo.lifecycle import Cancellation, ChangeData, RefundData
from portal.klaviyo.payloads import (
    OrderData, OutgoingEvent, Person, TicketLine, as_past_event, build_order_events, registered_attendee,
)

EXAMPLE_TICKET = "example-ticket"


def example_events(email: str, at: datetime) -> list[OutgoingEvent]:
    """Placed Order, Ordered Experience, Registered Attendee, Cancelled Order, Refunded Order, Cancelled
    Registration, Event Changed and Started Checkout, all for the example profile, all as past events."""
    person = Person("Example", "Attendee", email)
    line = TicketLine(ticket_id=EXAMPLE_TICKET, type_name="General Admission", base_price=Decimal("50"),
                      final_price=Decimal("50"), fee=Decimal("5"), attendee_id=0, attendee=person)
    starts = (at + timedelta(days=30)).replace(hour=18, minute=0, second=0, microsecond=0)
    order = OrderData(order_id=0, placed_at=at, currency="USD", event_name="Example Event",
                      event_start=starts, event_end=starts + timedelta(hours=4), venue="Example Venue",
                      purchaser=person, tickets=(line,))
    change = ChangeData(change_id=0, at=at, event_name="Example Event", old_start=starts, new_start=starts,
                        old_end=starts + timedelta(hours=3), new_end=starts + timedelta(hours=4),
                        old_venue="Example Venue", new_venue="Example Venue")
    built = build_order_events(order).events  # the attendee is the buyer: no Registered Attendee here
    built += [
        registered_attendee(order, line),
        lifecycle.cancelled_order(order, Cancellation(at, "example")),
        lifecycle.refunded_order(order, RefundData(0, at, Decimal("50"), True, "example", (EXAMPLE_TICKET,))),
        lifecycle.cancelled_registration(order, line, lifecycle.LOST_CANCELLED, at),
        lifecycle.event_changed(change, person, {}),
        started_checkout(CartData(session_id=0, started_at=at, currency="USD", event_name="Example Event",
                                  event_start=starts, venue="Example Venue", buyer=person,
                                  lines=(CartLine(0, "General Admission", 1, Decimal("50"), Decimal("50"), Decimal("5")),),
                                  checkout_url="https://example.invalid/e/example")),
    ]
    out = []
    for event in built:
        unique_id = "example_" + event.metric.lower().replace(" ", "_")
        past = as_past_event(event)
        past.body["data"]["attributes"]["unique_id"] = unique_id
        out.append(replace(past, unique_id=unique_id))
    return out
