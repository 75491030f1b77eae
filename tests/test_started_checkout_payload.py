"""The Started Checkout builder: a golden payload pinned to docs/data-reference.md, validated against Klaviyo's
official Create Event schema; and IsTest on the lifecycle events of a test order."""
from datetime import datetime, timezone
from decimal import Decimal

from portal.klaviyo import lifecycle
from portal.klaviyo.checkout import CartData, CartLine, cart_total, started_checkout
from portal.klaviyo.payloads import OrderData, Person, TicketLine
from portal.sandbox.schemas import assert_valid_create_event

STARTED = datetime(2026, 6, 1, 14, 30, 15, 500000, tzinfo=timezone.utc)


def cart(**changes) -> CartData:
    values = dict(
        session_id=77, started_at=STARTED, currency="USD", event_name="Summer Music Festival 2026",
        event_start=datetime(2026, 7, 15, 18, tzinfo=timezone.utc), venue="Central Park, New York",
        buyer=Person("Pat", "Buyer", " Pat@Buyer.example"),
        lines=(CartLine(3, "VIP", 1, Decimal("150.00"), Decimal("135.00"), Decimal("10.00")),
               CartLine(4, "General Admission", 2, Decimal("75.00"), Decimal("67.50"), Decimal("5.00"))),
        checkout_url="https://tickets.example.org/e/ab12cd34ef56?qty-3=1&qty-4=2")
    values.update(changes)
    return CartData(**values)


def test_started_checkout_golden():
    built = started_checkout(cart())
    assert (built.metric, built.unique_id, built.profile_key) == ("Started Checkout", "checkout_77", "pat@buyer.example")
    assert built.body == {"data": {"type": "event", "attributes": {
        "properties": {
            "EventName": "Summer Music Festival 2026",
            "EventStartAt": "2026-07-15T18:00:00Z",
            "VenueName": "Central Park, New York",
            "Currency": "USD",
            "Items": [
                {"ProductID": "3", "ProductName": "VIP", "Quantity": 1, "ItemPrice": 150, "RowTotal": 135,
                 "FeeAmount": 10},
                {"ProductID": "4", "ProductName": "General Admission", "Quantity": 2, "ItemPrice": 75,
                 "RowTotal": 135, "FeeAmount": 10},
            ],
            "CheckoutURL": "https://tickets.example.org/e/ab12cd34ef56?qty-3=1&qty-4=2",
            "IsTest": False,
        },
        "time": "2026-06-01T14:30:15Z",
        "unique_id": "checkout_77",
        "metric": {"data": {"type": "metric", "attributes": {"name": "Started Checkout"}}},
        "profile": {"data": {"type": "profile", "attributes": {
            "email": "Pat@Buyer.example", "first_name": "Pat", "last_name": "Buyer"}}},
        "value": 290,
        "value_currency": "USD",
    }}}
    assert_valid_create_event(built.body)
    assert cart_total(cart()) == Decimal("290.00")


def test_a_preview_checkout_is_marked_as_a_test():
    built = started_checkout(cart(is_test=True, lines=(CartLine(4, "GA", 1, Decimal("9.99"), Decimal("9.99"),
                                                                Decimal("0")),)))
    attributes = built.body["data"]["attributes"]
    assert attributes["properties"]["IsTest"] is True and attributes["value"] == 9.99
    assert_valid_create_event(built.body)


def test_lifecycle_events_of_a_test_order_carry_is_test():
    at = datetime(2026, 6, 20, tzinfo=timezone.utc)
    line = TicketLine("t-1", "VIP", Decimal("150"), Decimal("150"), Decimal("0"), 1, Person("Sam", "Guest", "s@g.example"))
    order = OrderData(1, at, "USD", "Gala", at, at, "Hall", Person("Pat", "Buyer", "p@b.example"), (line,), is_test=True)
    built = [lifecycle.cancelled_order(order, lifecycle.Cancellation(at, "")),
             lifecycle.refunded_order(order, lifecycle.RefundData(1, at, Decimal("1"), False, "", ())),
             lifecycle.cancelled_registration(order, line, lifecycle.LOST_CANCELLED, at)]
    assert [b.body["data"]["attributes"]["properties"]["IsTest"] for b in built] == [True, True, True]
