"""A store's cancellations and refunds reach the portal orders they came from, and Klaviyo, exactly once.

Shopify's orders/cancelled is the Order resource with cancelled_at and cancel_reason; refunds/create is the Refund
resource {id, order_id, note, refund_line_items: [{line_item_id, quantity, subtotal, line_item}], transactions:
[{kind, status, amount}]} (shopify.dev, REST Admin API, Refund). Wix sends eCommerce Order Canceled
(wix.ecom.v1.order, slug canceled: {order, restockAllItems, sendOrderCanceledEmail}) and Order Transactions Refund
Completed (wix.ecom.v1.order_transactions, slug refund_completed: {orderId, refund: {id, transactions: [{amount,
refundStatus}], details: {items: [{lineItemId, quantity}], reason}}}) (dev.wix.com, eCommerce webhooks).
"""
import base64
import copy
import json
import re
import uuid
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from portal.channels import lifecycle, shopify, wix
from portal.channels.common import PayloadError
from portal.channels.models import (
    CANCELLED, CREATED, DUPLICATE, IGNORED, REFUNDED, REJECTED, UNKNOWN_ORDER, UNMAPPED,
)
from portal.events.models import Event, TicketType
from portal.extensions import db
from portal.orders.models import Order, Refund
from portal.orders.service import AttendeeInput, OrderInput, place_order
from portal.sync.models import OutboxEvent
from tests.conftest import sandbox_events, sandbox_received, sync_settled, wait_for
from tests.test_channels import (  # noqa: F401 - wix_key is a fixture
    GA_VARIANT, INSTANCE, NO_FEE, SECRET, add_channel, by_order, count, log_entries, normalized, orders,
    post_shopify, post_wix, shopify_channel, shopify_order, sold, wix_channel, wix_event, wix_key, wix_token,
)
from tests.test_lifecycle import only

SHOPIFY_ORDER = "5834921377890"
GA_LINE, VIP_LINE = 14327765745762, 14327765778530
WIX_ORDER = "4c7a1e90-2b5f-4d83-9e16-0a8b7c6d5e4f"
WIX_GA_LINE, WIX_VIP_LINE = "00000000-0000-0000-0000-000000000001", "00000000-0000-0000-0000-000000000002"
LIFECYCLE_METRICS = ("Cancelled Order", "Refunded Order", "Cancelled Registration")


# --- what the stores send ----------------------------------------------------------------------------------------


def shopify_refund(refund_id=998877, lines=(), amount=None, note="Cannot come", order_id=SHOPIFY_ORDER, **extra):
    """A refunds/create body: lines are (line item, quantity); amount None leaves out the transactions."""
    refund_lines = []
    for line, quantity in lines:
        subtotal = float(line["price"]) * quantity - sum(float(a["amount"]) for a in line["discount_allocations"])
        refund_lines.append({"id": 70000 + len(refund_lines), "quantity": quantity, "line_item_id": line["id"],
                             "location_id": None, "restock_type": "cancel", "subtotal": subtotal, "total_tax": 0.0,
                             "line_item": line})
    transactions = [] if amount is None else [
        {"id": 5100, "order_id": int(order_id), "kind": "refund", "gateway": "shopify_payments", "status": "success",
         "amount": amount, "currency": "USD", "parent_id": 5000, "test": False}]
    return {"id": refund_id, "order_id": int(order_id), "created_at": "2026-05-02T09:00:00-04:00", "note": note,
            "user_id": None, "restock": True, "admin_graphql_api_id": f"gid://shopify/Refund/{refund_id}",
            "refund_line_items": refund_lines, "transactions": transactions, "order_adjustments": [], **extra}


def shopify_cancellation(reason="customer", **changes):
    order = shopify_order()
    order.update(cancelled_at="2026-05-02T09:00:00-04:00", cancel_reason=reason, financial_status="refunded", **changes)
    return order


def lines_of(order: dict) -> dict:
    return {line["id"]: line for line in order["line_items"]}


def post_refund(client, body, webhook_id=None):
    return post_shopify(client, body, topic=shopify.REFUND_TOPIC, webhook_id=webhook_id or str(uuid.uuid4()))


def post_cancel(client, body, webhook_id=None):
    return post_shopify(client, body, topic=shopify.CANCELLED_TOPIC, webhook_id=webhook_id or str(uuid.uuid4()))


def wix_refund_event(refund_id="7c1f0e52-9a1b-4c3d-8e5f-6a7b8c9d0e1f", items=(), amount="135.00", reason="Cannot come",
                     status="SUCCEEDED", event_id=None):
    refund = {"id": refund_id, "createdDate": "2026-05-02T13:00:00.000Z",
              "transactions": [{"paymentId": "a1b2c3d4-0000-4000-8000-000000000001", "refundStatus": status,
                                "amount": {"amount": amount, "formattedAmount": f"${amount}"}, "externalRefund": False}],
              "details": {"items": [{"lineItemId": line, "quantity": quantity} for line, quantity in items],
                          "shippingIncluded": False, "reason": reason},
              "summary": {"requestedRefund": {"amount": amount}, "pending": False}}
    return {"id": event_id or str(uuid.uuid4()), "entityFqdn": "wix.ecom.v1.order_transactions",
            "slug": "refund_completed", "entityId": WIX_ORDER, "eventTime": "2026-05-02T13:00:01.000Z",
            "actionEvent": {"body": {"orderId": WIX_ORDER, "refund": refund,
                                     "sideEffects": {"restockInfo": {"type": "NO_ITEMS"},
                                                     "sendOrderRefundedEmail": False}}},
            "triggeredByAnonymizeRequest": False}


def wix_cancel_event(event_id=None, message=None):
    event = wix_event()
    order = event["actionEvent"]["body"]["order"]
    order["status"] = "CANCELED"
    body = {"order": order, "restockAllItems": True, "sendOrderCanceledEmail": False}
    if message:
        body["customMessage"] = message
    event.update(id=event_id or str(uuid.uuid4()), slug="canceled", actionEvent={"body": body})
    return event


def festival_order() -> dict:
    """The order tests/test_lifecycle.py refunds from the order page, bought in Shopify: Pat buys three General
    Admission (one for Pat, two for Sam) and a VIP for Lee, without a discount."""
    payload = shopify_order()
    ga, vip = payload["line_items"]
    ga.update(quantity=3, current_quantity=3, discount_allocations=[], properties=[
        {"name": "Attendee 2 Name", "value": "Sam Guest"}, {"name": "Attendee 2 Email", "value": "sam@guest.example"},
        {"name": "Attendee 3 Name", "value": "Sam Guest"}, {"name": "Attendee 3 Email", "value": "sam@guest.example"}])
    vip.update(discount_allocations=[], properties=[{"name": "Attendee Name", "value": "Lee Friend"},
                                                    {"name": "Attendee Email", "value": "lee@friend.example"}])
    payload.update(discount_codes=[], discount_applications=[], total_discounts="0.00")
    return payload


def the_order(app, order_id) -> Order:
    with app.app_context():
        order = db.session.get(Order, order_id)
        for ticket in order.tickets:
            ticket.attendee  # noqa: B018 - load before leaving the session
        db.session.expunge(order)
        return order


def refunds(app) -> list[tuple]:
    with app.app_context():
        return [(r.order_id, r.amount, r.source, r.created_by, r.external_ref, r.reason)
                for r in db.session.scalars(select(Refund).order_by(Refund.id))]


def settle(app, sandbox, count):
    """Wait until the sandbox has count events and nothing is left to send; each must have come exactly once.
    A worker starting on a busy machine can take a while, so this waits up to a minute (it returns at once when
    the events are there)."""
    wait_for(lambda: len(sandbox_events(sandbox.url)) >= count and sync_settled(app), timeout=60,
             message=f"{count} events in the sandbox and nothing left to send")
    received = sandbox_received(sandbox.url)
    assert len(received) == count and set(received.values()) == {1}, received
    return sandbox_events(sandbox.url)


def lifecycle_events(events: list[dict]) -> list[dict]:
    return [e for e in events if e["metric"] in LIFECYCLE_METRICS]


# --- (a) a Shopify refund is the order page's refund ---------------------------------------------------------------


def test_a_shopify_refund_reaches_klaviyo_like_the_order_pages_refund(app, client, connected, make_event, sandbox,
                                                                     start_worker, monkeypatch):
    """The refund tests/test_lifecycle.py makes from the order page (Lee's VIP ticket, "Cannot come"), once on a
    widget order and once as Shopify's refunds/create on the same order bought in Shopify: the same events."""
    event_id = make_event(connected, types=NO_FEE)
    shopify_channel(app, connected)
    start_worker()
    with app.app_context():
        event = db.session.get(Event, event_id)
        ga, vip = event.ticket_types
        pat = AttendeeInput("Pat", "Buyer", "pat@buyer.example", "+12125550100")
        sam, lee = AttendeeInput("Sam", "Guest", "sam@guest.example"), AttendeeInput("Lee", "Friend", "lee@friend.example")
        widget = place_order(event, OrderInput("Pat", "Buyer", "pat@buyer.example", "+12125550100", source="widget",
                                               lines=[(ga, pat), (ga, sam), (ga, sam), (vip, lee)]))
        widget_id, widget_lee = widget.id, widget.tickets[3].id
    paid = festival_order()
    assert post_shopify(client, paid).json["outcome"] == CREATED
    shop_id = next(o.id for o in orders(app) if o.source == "shopify")
    settle(app, sandbox, 14)  # each order: Placed Order, 4 × Ordered Experience, Registered Attendee for Sam, Lee

    page = client.get(f"/manage/orders/{widget_id}/refund").get_data(as_text=True)
    key = re.search(r'name="request_key" value="([0-9a-f]{32})"', page).group(1)
    form = {"ticket": [widget_lee], "include_fees": "1", "reason": "Cannot come", "request_key": key}
    assert client.post_form(f"/manage/orders/{widget_id}/refund", form).status_code == 303

    body = shopify_refund(lines=[(lines_of(paid)[VIP_LINE], 1)], amount="150.00")
    first = post_refund(client, body, webhook_id="refund-delivery-1")
    assert first.status_code == 200 and first.json["outcome"] == REFUNDED, first.json
    assert first.json["order_id"] == shop_id
    again = post_refund(client, body, webhook_id="refund-delivery-1")  # Shopify retried the delivery
    other = post_refund(client, body, webhook_id="refund-delivery-2")  # the same refund, another subscription
    assert (again.json["outcome"], other.json["outcome"]) == (DUPLICATE, DUPLICATE)
    # Even when the portal's own look-up is blind (two deliveries racing), the refund id stops a second refund.
    monkeypatch.setattr(lifecycle, "recorded_on", lambda orders, external: None)
    raced = post_refund(client, shopify_refund(lines=[], amount="150.00"), webhook_id="refund-delivery-3")
    assert raced.json["outcome"] == DUPLICATE, raced.json

    events = settle(app, sandbox, 18)  # + Refunded Order and Lee's Cancelled Registration, for each order
    grouped = by_order(events)
    assert normalized(lifecycle_events(grouped[str(shop_id)])) == normalized(lifecycle_events(grouped[str(widget_id)]))
    refunded = only(lifecycle_events(grouped[str(shop_id)]), "Refunded Order")
    assert refunded["value"] == 150 and refunded["unique_id"].startswith("refund_")
    properties = refunded["properties"]
    assert (properties["RefundedAmount"], properties["IsFullRefund"], properties["Reason"], properties["Currency"]) == (
        150, False, "Cannot come", "USD")
    order = the_order(app, shop_id)
    assert [item["ProductID"] for item in properties["Items"]] == [order.tickets[3].id]
    lost = only(lifecycle_events(grouped[str(shop_id)]), "Cancelled Registration")
    assert lost["profile"]["email"] == "lee@friend.example" and lost["properties"]["Reason"] == "refunded"

    assert (order.status, order.refunded_total) == ("partly_refunded", Decimal("150.00"))
    assert [t.status for t in order.tickets] == ["valid", "valid", "valid", "refunded"]
    assert sold(app) == {"General Admission": 6, "VIP": 0}  # both VIP places are back
    assert refunds(app)[1] == (shop_id, Decimal("150.00"), "shopify", "Shopify", "shopify:refund:998877",
                               "Cannot come")
    assert len(refunds(app)) == 2
    entry = next(e for e in log_entries(app) if e.outcome == REFUNDED)
    assert entry.order_id == shop_id and entry.external_order_name == "#1001"
    assert f"Order #{shop_id}: refunded USD 150.00 for 1 ticket(s) (VIP)." in entry.detail_lines
    log = client.get(f"/manage/channels/{entry.channel_id}?outcome=refunded").get_data(as_text=True)
    assert "refunds/create" in log and f'href="/manage/orders/{shop_id}"' in log


# --- (b) a cancellation, then the money ------------------------------------------------------------------------------


def test_shopify_cancellation_then_its_refund(app, client, connected, make_event, sandbox, start_worker):
    make_event(connected, types=NO_FEE)
    shopify_channel(app, connected)
    start_worker()
    assert post_shopify(client, shopify_order()).json["outcome"] == CREATED
    [order] = orders(app)
    settle(app, sandbox, 5)  # Placed Order, 3 × Ordered Experience, Registered Attendee for Sam

    cancelled = post_cancel(client, shopify_cancellation())
    assert cancelled.status_code == 200 and cancelled.json["outcome"] == CANCELLED, cancelled.json
    assert post_cancel(client, shopify_cancellation()).json["outcome"] == DUPLICATE  # already cancelled
    events = settle(app, sandbox, 7)
    event = only(events, "Cancelled Order")
    assert event["unique_id"] == f"cancel_{order.id}" and event["value"] == 270
    assert event["properties"]["Reason"] == "Customer changed or canceled order"
    assert only(events, "Cancelled Registration", "sam@guest.example")["properties"]["Reason"] == "cancelled"
    after = the_order(app, order.id)
    assert after.status == "cancelled" and {t.status for t in after.tickets} == {"cancelled"}
    assert after.cancelled_by == "Shopify" and after.refunded_total == 0  # the money comes as its own refund
    assert sold(app) == {"General Admission": 0, "VIP": 0}

    # Shopify's refunds/create for the cancellation: every line, the whole amount.
    lines = lines_of(shopify_order())
    body = shopify_refund(refund_id=998878, lines=[(lines[GA_LINE], 2), (lines[VIP_LINE], 1)], amount="270.00",
                          note="")
    assert post_refund(client, body).json["outcome"] == REFUNDED
    events = settle(app, sandbox, 8)  # Refunded Order; nobody lost a ticket twice
    refunded = only(events, "Refunded Order")
    assert (refunded["properties"]["RefundedAmount"], refunded["properties"]["IsFullRefund"],
            refunded["properties"]["Reason"], refunded["properties"]["Items"]) == (270, True, "Refunded in Shopify", [])
    after = the_order(app, order.id)
    assert (after.status, after.refunded_total) == ("cancelled", Decimal("270.00"))


def test_one_store_order_in_two_portal_orders(app, client, organizer, make_event):
    """Tickets for two events became two portal orders: a cancellation cancels both, a refund goes to the order
    that holds its tickets, and an amount is shared by what each order can still refund."""
    make_event(organizer, types=[("General Admission", "75.00", "0.00")])
    make_event(organizer, name="Winter Gala", types=[("VIP", "150.00", "0.00")])
    channel_id = shopify_channel(app, organizer)
    assert post_shopify(client, shopify_order()).json["outcome"] == CREATED
    summer, gala = orders(app)
    assert (summer.total, gala.total) == (Decimal("135.00"), Decimal("135.00"))

    # The VIP line, named only by its id (the product was deleted in Shopify): found in the imported order.
    vip = {"id": 81, "line_item_id": VIP_LINE, "quantity": 1, "subtotal": "135.00", "line_item": None}
    assert post_refund(client, shopify_refund(refund_id=1, amount="135.00", refund_line_items=[vip])).json[
        "outcome"] == REFUNDED
    summer, gala = (the_order(app, o.id) for o in (summer, gala))
    assert (summer.status, gala.status, gala.tickets[0].status) == ("paid", "refunded", "refunded")
    assert sold(app) == {"General Admission": 2, "VIP": 0}

    response = post_refund(client, shopify_refund(refund_id=2, amount="100.00"))  # an amount, no line items
    assert response.json["outcome"] == REFUNDED
    assert refunds(app)[-1][:2] == (summer.id, Decimal("100.00"))  # the Gala order had nothing left to refund

    response = post_cancel(client, shopify_cancellation(reason="inventory"))
    assert response.json["outcome"] == CANCELLED
    assert {o.status for o in orders(app)} == {"cancelled"}
    entry = log_entries(app)[-1]
    assert entry.detail_lines[0] == "Shopify order #1001 was cancelled in Shopify: Items unavailable."
    assert [line.split(":")[0] for line in entry.detail_lines[1:]] == [f"Order #{summer.id} cancelled",
                                                                       f"Order #{gala.id} cancelled"]
    page = client.get(f"/manage/channels/{channel_id}?outcome=cancelled").get_data(as_text=True)
    assert f'href="/manage/orders/{summer.id}"' in page and f'href="/manage/orders/{gala.id}"' in page

    # The General Admission tickets, now cancelled: only what is left on their order (35.00) can be recorded.
    ga = {"id": 82, "line_item_id": GA_LINE, "quantity": 2, "subtotal": "135.00"}
    response = post_refund(client, shopify_refund(refund_id=3, amount="135.00", refund_line_items=[ga]))
    assert response.json["outcome"] == REFUNDED
    assert refunds(app)[-1][:2] == (summer.id, Decimal("35.00"))
    assert "USD 35.00 was left to refund on them in the portal" in log_entries(app)[-1].detail
    # Beyond what is refundable: rejected with the reason, and nothing changes.
    response = post_refund(client, shopify_refund(refund_id=4, amount="10.00"))
    assert response.status_code == 200 and response.json["outcome"] == REJECTED
    assert "nothing is left to refund" in response.json["message"] + log_entries(app)[-1].detail
    assert [o.refunded_total for o in orders(app)] == [Decimal("135.00"), Decimal("135.00")]
    assert len(refunds(app)) == 3


def test_refunds_of_no_ticket_or_no_money_are_ignored(app, client, organizer, make_event):
    make_event(organizer, types=NO_FEE)
    shopify_channel(app, organizer, mappings={"General Admission": (None, GA_VARIANT)})
    payload = shopify_order()
    shirt = copy.deepcopy(payload["line_items"][0])
    shirt.update(id=555, name="Festival T-shirt", product_id=999, variant_id=888, quantity=1, properties=[],
                 discount_allocations=[], price="25.00")
    payload["line_items"].append(shirt)
    assert post_shopify(client, payload).json["outcome"] == UNMAPPED  # GA imported, VIP and the shirt not
    response = post_refund(client, shopify_refund(lines=[(shirt, 1)], amount="25.00"))
    assert response.json["outcome"] == IGNORED
    assert "only for items that are not tickets" in log_entries(app)[-1].detail
    failed = shopify_refund(refund_id=5, lines=[(payload["line_items"][0], 1)], amount="67.50")
    failed["transactions"][0]["status"] = "failure"
    assert post_refund(client, failed).json["outcome"] == IGNORED
    # A ticket and the shirt together: the shirt's subtotal is not ticket money.
    both = shopify_refund(refund_id=6, lines=[(payload["line_items"][0], 1), (shirt, 1)], amount="92.50")
    assert post_refund(client, both).json["outcome"] == REFUNDED
    [order] = orders(app)
    assert order.refunded_total == Decimal("67.50") and [t.status for t in order.tickets] == ["refunded", "valid"]
    assert "Not a ticket (not mapped to a ticket type): 1 × Festival T-shirt." in log_entries(app)[-1].detail_lines


# --- (c) orders the portal never imported -----------------------------------------------------------------------------


def test_cancellations_and_refunds_of_unknown_orders_are_logged_and_change_nothing(app, client, organizer, make_event,
                                                                                 wix_key):
    make_event(organizer, types=NO_FEE)
    shopify_channel(app, organizer)
    wix_channel(app, organizer, wix_key)
    responses = [post_refund(client, shopify_refund(lines=[], amount="10.00", order_id="4242")),
                 post_cancel(client, shopify_cancellation(id=4242, name="#4242")),
                 post_wix(client, wix_token(wix_refund_event(), wix_key, event_type=wix.REFUND_EVENT)),
                 post_wix(client, wix_token(wix_cancel_event(), wix_key, event_type=wix.CANCELED_EVENT))]
    assert [(r.status_code, r.json["outcome"]) for r in responses] == [(200, UNKNOWN_ORDER)] * 4
    assert (count(app, Order), count(app, Refund), count(app, OutboxEvent)) == (0, 0, 0)
    entries = log_entries(app)
    assert entries[0].detail_lines[0] == ("Refund 998877 of Shopify order 4242, which the portal never imported: "
                                          "nothing was changed.")
    assert entries[1].external_order_name == "#4242" and "Cancellation of Shopify order #4242" in entries[1].detail
    assert all(entry.order_id is None for entry in entries)


def test_a_refund_of_an_order_that_arrived_unmapped_says_so(app, client, organizer, make_event):
    make_event(organizer, types=NO_FEE)
    channel_id = shopify_channel(app, organizer, mappings={})
    assert post_shopify(client, shopify_order()).json["outcome"] == UNMAPPED
    response = post_refund(client, shopify_refund(lines=[], amount="10.00"))
    assert response.json["outcome"] == UNKNOWN_ORDER
    first, entry = log_entries(app)
    assert f"It arrived with no item mapped to a ticket type (log entry #{first.id})" in entry.detail
    page = client.get(f"/manage/channels/{channel_id}").get_data(as_text=True)
    assert "unknown order" in page and "which the portal never imported" in page


# --- (d) malformed and hostile bodies ---------------------------------------------------------------------------------

REFUND_OK = shopify_refund(lines=[], amount="10.00")


@pytest.mark.parametrize("topic, body, reason", [
    (shopify.REFUND_TOPIC, b"{not json", "not a JSON object"),
    (shopify.REFUND_TOPIC, b"[]", "not a JSON object"),
    (shopify.REFUND_TOPIC, b"[" * 100000, "not a JSON object"),  # deeper than the JSON parser goes
    (shopify.REFUND_TOPIC, {**REFUND_OK, "id": None}, "the refund's id is missing"),
    (shopify.REFUND_TOPIC, {**REFUND_OK, "order_id": {"id": 1}}, "the refund's order_id is missing"),
    (shopify.REFUND_TOPIC, {**REFUND_OK, "refund_line_items": {"a": 1}}, "refund_line_items is not a list"),
    (shopify.REFUND_TOPIC, {**REFUND_OK, "refund_line_items": [7]}, "refund line item 1 is not an object"),
    (shopify.REFUND_TOPIC, {**REFUND_OK, "refund_line_items": [{"line_item_id": 1, "quantity": "two"}]},
     "quantity is not a whole number"),
    (shopify.REFUND_TOPIC, {**REFUND_OK, "refund_line_items": [{"line_item_id": 1, "quantity": "²"}]},
     "quantity is not a whole number"),
    (shopify.REFUND_TOPIC, {**REFUND_OK, "refund_line_items": [{"line_item_id": 1, "quantity": 5000}]},
     "more than 1000 items"),
    (shopify.REFUND_TOPIC, {**REFUND_OK, "refund_line_items": [{"quantity": 1}]}, "has no line_item_id"),
    (shopify.REFUND_TOPIC, {**REFUND_OK, "transactions": "all of it"}, "transactions is not a list"),
    (shopify.REFUND_TOPIC, {**REFUND_OK, "transactions": [{"kind": "refund", "amount": "-5"}]}, "out of range"),
    (shopify.REFUND_TOPIC, {**REFUND_OK, "transactions": [{"kind": "refund", "amount": "NaN"}]}, "out of range"),
    (shopify.REFUND_TOPIC, {**REFUND_OK, "transactions": [{"kind": "refund", "amount": [1]}]}, "not an amount"),
    (shopify.CANCELLED_TOPIC, {**shopify_order(), "cancelled_at": None}, "it is not a cancelled order"),
    (shopify.CANCELLED_TOPIC, {"cancelled_at": "2026-05-02T09:00:00-04:00"}, "the order's id is missing"),
    (shopify.TOPIC, {**shopify_order(), "shipping_lines": 5}, "shipping_lines is not a list"),
    (shopify.TOPIC, {**shopify_order(), "processed_at": "9999-12-31T23:59:59-05:00", "discount_codes": "X"},
     "discount_codes is not a list"),
])
def test_malformed_cancellations_and_refunds_are_400_and_change_nothing(app, client, organizer, make_event, topic,
                                                                       body, reason):
    make_event(organizer, types=NO_FEE)
    shopify_channel(app, organizer)
    assert post_shopify(client, shopify_order()).json["outcome"] == CREATED
    [before] = orders(app)
    response = post_shopify(client, body, topic=topic, webhook_id=str(uuid.uuid4()))
    assert response.status_code == 400, response.get_data(as_text=True)
    assert reason in response.json["message"]
    [after] = orders(app)
    assert (after.status, after.refunded_total, [t.status for t in after.tickets]) == (
        "paid", Decimal("0"), ["valid"] * 3)
    assert count(app, Refund) == 0 and count(app, Order) == 1 and before.id == after.id
    entry = log_entries(app)[-1]
    assert entry.outcome == REJECTED and reason in entry.detail and entry.webhook_id is None


def test_wix_malformed_refunds_and_cancellations_are_400(app, client, organizer, make_event, wix_key):
    make_event(organizer, types=NO_FEE)
    wix_channel(app, organizer, wix_key)
    assert post_wix(client, wix_token(wix_event(), wix_key)).json["outcome"] == CREATED
    no_refund = wix_refund_event()
    no_refund["actionEvent"]["body"].pop("refund")
    bad_amount = wix_refund_event(amount="lots")
    bad_items = wix_refund_event()
    bad_items["actionEvent"]["body"]["refund"]["details"]["items"] = "all"
    no_order = wix_cancel_event()
    no_order["actionEvent"]["body"].pop("order")
    cases = [(no_refund, wix.REFUND_EVENT, "actionEvent.body.refund is missing"),
             (bad_amount, wix.REFUND_EVENT, "is not an amount"),
             (bad_items, wix.REFUND_EVENT, "refund.details.items is not a list"),
             (no_order, wix.CANCELED_EVENT, "no actionEvent.body.order")]
    for event, event_type, reason in cases:
        response = post_wix(client, wix_token(event, wix_key, event_type=event_type))
        assert response.status_code == 400 and reason in response.json["message"], (reason, response.json)
    # A token nested deeper than the JSON parser goes is malformed before anything is looked up.
    segment = base64.urlsafe_b64encode(json.dumps({"data": "[" * 100000}).encode()).rstrip(b"=")
    header = base64.urlsafe_b64encode(b'{"alg":"RS256","typ":"JWT"}').rstrip(b"=")
    assert post_wix(client, header + b"." + segment + b".c2ln").status_code == 400
    [order] = orders(app)
    assert (order.status, count(app, Refund)) == ("paid", 0)
    assert [e.outcome for e in log_entries(app)] == [CREATED] + [REJECTED] * 4


def test_control_characters_in_a_store_text_are_cleaned_not_a_500(app, client, organizer, make_event):
    """PostgreSQL refuses NUL in text: a refund note or an order name with one is stored without it."""
    make_event(organizer, types=NO_FEE)
    shopify_channel(app, organizer)
    assert post_shopify(client, {**shopify_order(), "name": "#10\x0001"}).json["outcome"] == CREATED
    response = post_refund(client, shopify_refund(lines=[], amount="10.00", note="Cannot\x00 come\n"))
    assert response.status_code == 200 and response.json["outcome"] == REFUNDED
    assert refunds(app)[0][5] == "Cannot come"
    assert [e.external_order_name for e in log_entries(app)] == ["#1001", "#1001"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**6, 10**12) | st.floats() | st.text(max_size=12)
    | st.sampled_from(["", "1", "10.00", "-1", "²", "1e9", "NaN", "9999-12-31T23:59:59-05:00", "SUCCEEDED", "refund"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12)


def shaped(keys: dict, required: tuple = ()) -> st.SearchStrategy:
    """Dicts with some of these keys (all the required ones), each mostly a plausible value, sometimes anything."""
    values = {key: st.one_of(value, value, value, json_values) for key, value in keys.items()}
    return st.fixed_dictionaries({key: keys[key] for key in required},
                                 optional={key: value for key, value in values.items() if key not in required})


shopify_refund_lines = st.lists(shaped({"line_item_id": st.sampled_from([GA_LINE, VIP_LINE, 1]) | st.integers(0, 10**14),
                                        "quantity": st.integers(0, 3) | st.integers(-2, 2000),
                                        "subtotal": st.decimals(-10, 10**8, places=2).map(str),
                                        "line_item": shaped({"product_id": st.integers(), "variant_id": st.integers(),
                                                             "id": st.integers()})}), max_size=4)
shopify_transactions = st.lists(shaped({"kind": st.sampled_from(["refund", "sale", "REFUND"]),
                                        "status": st.sampled_from(["success", "failure", "pending", "error"]),
                                        "amount": st.decimals(0, 400, places=2).map(str)
                                        | st.decimals(-10, 10**8, places=2).map(str)}), max_size=3)
shopify_refund_keys = {"id": st.integers(0, 10**12), "order_id": st.just(int(SHOPIFY_ORDER)),
                       "note": st.text(max_size=20), "refund_line_items": shopify_refund_lines,
                       "transactions": shopify_transactions}
shopify_refunds = shaped(shopify_refund_keys)
wix_refunds = shaped({"id": st.text(max_size=10), "actionEvent": shaped({"body": shaped({
    "orderId": st.just(WIX_ORDER),
    "refund": shaped({"id": st.uuids().map(str),
                      "transactions": st.lists(shaped({"amount": shaped({"amount": st.decimals(-5, 10**7, places=2)
                                                                         .map(str)}),
                                                       "refundStatus": st.sampled_from(["SUCCEEDED", "FAILED"])}),
                                               max_size=3),
                      "details": shaped({"items": st.lists(shaped({"lineItemId": st.text(max_size=40),
                                                                   "quantity": st.integers(-1, 2000)}), max_size=3),
                                         "reason": st.text(max_size=20)})})})})})


@settings(max_examples=300, deadline=None)
@given(body=st.one_of(shopify_refunds, json_values), cancel=st.one_of(
    shaped({"id": st.integers(), "cancelled_at": st.text(max_size=25), "cancel_reason": st.text(max_size=10),
            "line_items": json_values}), json_values), event=st.one_of(wix_refunds, json_values))
def test_parsers_only_ever_raise_payload_error(body, cancel, event):
    """Whatever a signed body holds, reading it gives a result or a PayloadError (a 400), never a crash (a 500)."""
    for parse, value in ((shopify.parse_refund, body), (shopify.parse_cancellation, cancel),
                         (shopify.parse_order, cancel), (wix.parse_refund, event), (wix.parse_cancellation, event),
                         (wix.parse_order, body)):
        try:
            parse(value)
        except PayloadError:
            pass


@pytest.fixture
def imported(app, client, organizer, make_event):
    make_event(organizer, types=NO_FEE)
    shopify_channel(app, organizer)
    assert post_shopify(client, shopify_order()).json["outcome"] == CREATED
    return orders(app)[0].id


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(body=shaped(shopify_refund_keys, required=("id", "order_id")))
def test_hostile_refunds_are_answered_and_never_refund_more_than_was_paid(app, client, imported, body):
    response = post_refund(client, body)
    assert response.status_code in (200, 400), response.get_data(as_text=True)
    event(str(response.json.get("outcome", response.status_code)))  # shown with --hypothesis-show-statistics
    assert response.json["message"]
    order = the_order(app, imported)
    assert 0 <= order.refunded_total <= order.total
    assert sum((amount for _, amount, *_ in refunds(app)), Decimal("0")) == order.refunded_total
    if response.json.get("outcome") == REFUNDED:
        assert refunds(app)[-1][2:5] == ("shopify", "Shopify", f"shopify:refund:{body['id']}")
    with app.app_context():
        assert db.session.scalar(select(TicketType.sold).where(TicketType.name == "General Admission")) == sum(
            1 for t in order.tickets if t.is_valid and t.type_name == "General Admission")


# --- (e) Wix ----------------------------------------------------------------------------------------------------------


def test_wix_refund_and_cancellation_reach_klaviyo_once(app, client, connected, make_event, sandbox, start_worker,
                                                        wix_key):
    make_event(connected, types=NO_FEE)
    wix_channel(app, connected, wix_key)
    start_worker()
    assert post_wix(client, wix_token(wix_event(), wix_key)).json["outcome"] == CREATED
    [order] = orders(app)
    settle(app, sandbox, 5)

    status = wix_event()
    status["id"] = str(uuid.uuid4())
    status["actionEvent"]["body"]["order"]["paymentStatus"] = "PARTIALLY_REFUNDED"
    ignored = post_wix(client, wix_token(status, wix_key))
    assert ignored.json["outcome"] == IGNORED and "Refund Completed" in ignored.json["message"]

    token = wix_token(wix_refund_event(items=[(WIX_VIP_LINE, 1)]), wix_key, event_type=wix.REFUND_EVENT)
    response = post_wix(client, token)
    assert response.status_code == 200 and response.json["outcome"] == REFUNDED, response.json
    assert post_wix(client, token).json["outcome"] == DUPLICATE  # Wix retried the event
    again = wix_token(wix_refund_event(items=[(WIX_VIP_LINE, 1)]), wix_key, event_type=wix.REFUND_EVENT)
    assert post_wix(client, again).json["outcome"] == DUPLICATE  # the same refund in another event
    events = settle(app, sandbox, 6)  # Refunded Order; Sam still holds a General Admission ticket
    refunded = only(events, "Refunded Order")
    assert (refunded["properties"]["RefundedAmount"], refunded["properties"]["IsFullRefund"],
            refunded["properties"]["Reason"]) == (135, False, "Cannot come")
    after = the_order(app, order.id)
    assert [item["ProductID"] for item in refunded["properties"]["Items"]] == [after.tickets[2].id]
    assert [t.status for t in after.tickets] == ["valid", "valid", "refunded"]
    assert refunds(app) == [(order.id, Decimal("135.00"), "wix", "Wix",
                             "wix:refund:7c1f0e52-9a1b-4c3d-8e5f-6a7b8c9d0e1f", "Cannot come")]

    cancel = wix_token(wix_cancel_event(message="The venue is closed"), wix_key, event_type=wix.CANCELED_EVENT)
    assert post_wix(client, cancel).json["outcome"] == CANCELLED
    assert post_wix(client, cancel).json["outcome"] == DUPLICATE
    events = settle(app, sandbox, 8)  # Cancelled Order and Sam's Cancelled Registration
    assert only(events, "Cancelled Order")["properties"]["Reason"] == "The venue is closed"
    assert only(events, "Cancelled Registration", "sam@guest.example")["properties"]["Reason"] == "cancelled"
    assert the_order(app, order.id).status == "cancelled"
    assert sold(app) == {"General Admission": 0, "VIP": 0}
    outcomes = [e.outcome for e in log_entries(app)]
    assert outcomes == [CREATED, IGNORED, REFUNDED, DUPLICATE, DUPLICATE, CANCELLED, DUPLICATE]
    assert len(sandbox_events(sandbox.url)) == 8


def test_wix_refund_that_failed_changes_nothing(app, client, organizer, make_event, wix_key):
    make_event(organizer, types=NO_FEE)
    wix_channel(app, organizer, wix_key)
    assert post_wix(client, wix_token(wix_event(), wix_key)).json["outcome"] == CREATED
    failed = wix_refund_event(items=[(WIX_GA_LINE, 2)], amount="135.00", status="FAILED")
    assert post_wix(client, wix_token(failed, wix_key, event_type=wix.REFUND_EVENT)).json["outcome"] == IGNORED
    [order] = orders(app)
    assert (order.status, count(app, Refund)) == ("paid", 0)


def test_the_log_and_the_card_name_the_new_events(app, client, organizer):
    channel_id = add_channel(app, organizer)
    page = client.get(f"/manage/channels/{channel_id}").get_data(as_text=True)
    for topic in ("orders/paid", "orders/cancelled", "refunds/create"):
        assert f"<code>{topic}</code>" in page
    for outcome in ("cancelled", "refunded", "unknown order"):
        assert f"<span>{outcome}</span>" in page
    card = client.get("/manage/integrations/").get_data(as_text=True)
    assert "<code>orders/cancelled</code>, <code>refunds/create</code>" in card
    connect = client.get("/manage/channels/wix/connect").get_data(as_text=True)
    assert "<strong>Order Canceled</strong> and <strong>Order Transactions → Refund Completed</strong>" in connect
    guide = client.get("/help/channels").get_data(as_text=True)
    assert "<strong>Refund create</strong>" in guide and "<strong>Order Canceled</strong>" in guide


# --- the sample script ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sample_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "scripts" / "send_sample_webhook.py"
    spec = importlib.util.spec_from_file_location("send_sample_webhook", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def sample_args(platform, event="paid", **values):
    import argparse

    defaults = dict(platform=platform, secret=SECRET, shop="demo.myshopify.com", instance_id=INSTANCE, product_id=[],
                    variant_id=[], email=None, order_id=None, webhook_id=None, event=event, refund_id=None, line=[],
                    amount=None, note="Cannot come", cancel_reason="customer")
    return argparse.Namespace(**{**defaults, **values})


def test_the_sample_script_sends_what_the_portal_takes(app, client, organizer, make_event, wix_key, sample_script):
    """scripts/send_sample_webhook.py: a paid order, a refund of its VIP line (twice: once), then its cancellation."""
    make_event(organizer, types=NO_FEE)
    shopify_channel(app, organizer)
    wix_channel(app, organizer, wix_key)

    def send(args):
        if args.platform == "shopify":
            body, headers = sample_script.shopify_request(args)
            return client.post("/webhooks/shopify", data=body, headers=headers)
        body, headers = sample_script.wix_request(args, wix_key)
        return client.post("/webhooks/wix", data=body, headers=headers)

    for platform in ("shopify", "wix"):
        paid = sample_args(platform)
        assert send(paid).json["outcome"] == CREATED
        order_id = paid.order_id  # the script keeps the store order id it made, to print it
        refund = sample_args(platform, "refund", order_id=order_id, line=[2], refund_id="4711")
        assert send(refund).json["outcome"] == REFUNDED
        assert send(sample_args(platform, "refund", order_id=order_id, line=[2], refund_id="4711")).json[
            "outcome"] == DUPLICATE
        assert send(sample_args(platform, "cancel", order_id=order_id)).json["outcome"] == CANCELLED
    assert [(o.source, o.status, o.refunded_total) for o in orders(app)] == [
        ("shopify", "cancelled", Decimal("135.00")), ("wix", "cancelled", Decimal("135.00"))]
    assert [r[4] for r in refunds(app)] == ["shopify:refund:4711", "wix:refund:4711"]
