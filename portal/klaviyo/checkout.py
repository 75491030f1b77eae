"""The pure builder of Started Checkout: a checkout that has a valid e-mail and at least one ticket and did not
become an order in time (an abandoned cart). Like payloads.py: plain data in, a Create Event body out.

Klaviyo's recommended ecommerce metric has this name, so Klaviyo's abandoned-cart flow templates find it.
"""
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from portal.klaviyo.payloads import OutgoingEvent, Person, event, iso_utc, number

STARTED_CHECKOUT = "Started Checkout"


@dataclass(frozen=True)
class CartLine:
    """One ticket type chosen in the checkout, and how many."""

    ticket_type_id: int
    name: str
    quantity: int
    base_price: Decimal  # the ticket type's price
    final_price: Decimal  # one ticket's price after the discount code
    fee: Decimal  # one ticket's service fee


@dataclass(frozen=True)
class CartData:
    session_id: int  # the checkout session: its Started Checkout's unique_id
    started_at: datetime  # when the e-mail and a ticket were first both in the form
    currency: str
    event_name: str
    event_start: datetime
    venue: str
    buyer: Person
    lines: tuple[CartLine, ...]
    checkout_url: str  # the Event Page with this selection filled in again
    is_test: bool = False  # the organizer's own preview


def cart_total(cart: CartData) -> Decimal:
    return sum(((line.final_price + line.fee) * line.quantity for line in cart.lines), Decimal("0"))


def cart_item(line: CartLine) -> dict:
    """One chosen ticket type in the Items array: the Data Reference's item fields, for `Quantity` tickets."""
    return {
        "ProductID": str(line.ticket_type_id),
        "ProductName": line.name,
        "Quantity": line.quantity,
        "ItemPrice": number(line.base_price),
        "RowTotal": number(line.final_price * line.quantity),
        "FeeAmount": number(line.fee * line.quantity),
    }


def started_checkout(cart: CartData) -> OutgoingEvent:
    """Once per checkout session, on the buyer's profile; its value is the cart's total."""
    properties = {
        "EventName": cart.event_name,
        "EventStartAt": iso_utc(cart.event_start),
        "VenueName": cart.venue,
        "Currency": cart.currency,
        "Items": [cart_item(line) for line in cart.lines],
        "CheckoutURL": cart.checkout_url,
        "IsTest": cart.is_test,
    }
    return event(STARTED_CHECKOUT, f"checkout_{cart.session_id}", cart.buyer, None, properties, cart.started_at,
                 cart_total(cart), cart.currency)
