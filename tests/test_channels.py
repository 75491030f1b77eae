"""Sales channels: Shopify orders/paid and Wix Payment Status Updated webhooks become portal orders.

The fixtures are shaped like the platforms' documented payloads: tests/fixtures/shopify_orders_paid.json is the
Order body Shopify posts; tests/fixtures/wix_order_paid.json is the decoded JWT payload Wix signs (its `data` is a
JSON string holding {eventType, instanceId, data}, and that `data` is again a JSON string holding the event).
"""
import copy
import json
import re
from decimal import Decimal
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import func, select

from portal.channels import shopify, wix
from portal.channels.common import ExternalLine, attendees_from_properties, unit_prices
from portal.channels.models import (
    CREATED, DUPLICATE, IGNORED, OVERSOLD, REJECTED, SHOPIFY, UNMAPPED, WIX, ChannelMapping, ChannelWebhook,
    SalesChannel,
)
from portal.events.models import DiscountCode, Event, TicketType
from portal.extensions import db
from portal.orders.models import Order, Ticket
from portal.orders.service import AttendeeInput, OrderInput, SoldOut, place_order
from portal.sync.models import OutboxEvent
from tests.channel_proof import prove, shopify_proof
from tests.conftest import sandbox_events, sandbox_received, sync_settled, wait_for



FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHOP = "demo.myshopify.com"
SECRET = "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"
INSTANCE = "3f2c1a9e-5b7d-4e1f-9a3b-2c8d7e6f5a41"
PRODUCT, GA_VARIANT, VIP_VARIANT = "7513594001", "34505432001", "34505432002"
WIX_PRODUCT = "8f2d4a6c-1e3b-4c5d-9a7f-6b8e0d2c4a1f"
WIX_GA, WIX_VIP = "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d", "6f5e4d3c-2b1a-4f0e-9d8c-7b6a5f4e3d2c"
NO_FEE = [("General Admission", "75.00", "0.00"), ("VIP", "150.00", "0.00")]


# --- helpers ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def wix_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key) -> str:
    return wix.normalize_public_key(
        key.public_key().public_bytes(wix.serialization.Encoding.PEM,
                                      wix.serialization.PublicFormat.SubjectPublicKeyInfo).decode())


def shopify_order() -> dict:
    return json.loads((FIXTURES / "shopify_orders_paid.json").read_text())


def post_shopify(client, payload, *, secret=SECRET, shop=SHOP, webhook_id="b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
                 topic="orders/paid", signature=None):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"X-Shopify-Topic": topic, "X-Shopify-Shop-Domain": shop, "X-Shopify-API-Version": "2025-10",
               "X-Shopify-Hmac-Sha256": signature if signature is not None else shopify.signature(body, secret)}
    if webhook_id:
        headers["X-Shopify-Webhook-Id"] = webhook_id
    return client.post("/webhooks/shopify", data=body, headers=headers, content_type="application/json")


def wix_event() -> dict:
    """The inner event of the fixture: {id, entityFqdn, slug, entityId, actionEvent: {body: {order, ...}}, ...}."""
    claims = json.loads((FIXTURES / "wix_order_paid.json").read_text())
    return json.loads(json.loads(claims["data"])["data"])


def wix_token(event: dict, key, instance=INSTANCE, event_type=wix.EVENT_TYPE, lifetime=3600) -> bytes:
    return wix.sign(wix.envelope(event, instance, event_type, lifetime), key).encode()


def post_wix(client, body: bytes):
    return client.post("/webhooks/wix", data=body, content_type="text/plain")


def add_channel(app, organizer_id, platform=SHOPIFY, account=SHOP, secret=SECRET, mappings=None, private_key=None,
                proved=True) -> int:
    """A channel with mappings {ticket type name: (product id, variant id)} on the organizer's events: claimed, then
    (unless proved=False) proved as a real store proves it, by a signed delivery to the webhook endpoint."""
    with app.app_context():
        channel = SalesChannel(organizer_id=organizer_id, platform=platform)
        channel.connect(account, secret)
        db.session.add(channel)
        db.session.flush()
        types = db.session.scalars(select(TicketType).join(Event).where(Event.organizer_id == organizer_id))
        by_name = {t.name: t for t in types}
        for name, (product_id, variant_id) in (mappings or {}).items():
            db.session.add(ChannelMapping(channel_id=channel.id, ticket_type_id=by_name[name].id,
                                          product_id=product_id, variant_id=variant_id))
        db.session.commit()
        channel_id = channel.id
    if proved:
        prove(app, channel_id, secret=secret, private_key=private_key)
    return channel_id


def shopify_channel(app, organizer_id, mappings="variants"):
    if mappings == "variants":
        mappings = {"General Admission": (None, GA_VARIANT), "VIP": (None, VIP_VARIANT)}
    return add_channel(app, organizer_id, mappings=mappings)


def wix_channel(app, organizer_id, key, mappings="variants"):
    if mappings == "variants":
        mappings = {"General Admission": (WIX_PRODUCT, WIX_GA), "VIP": (WIX_PRODUCT, WIX_VIP)}
    return add_channel(app, organizer_id, WIX, INSTANCE, public_pem(key), mappings, private_key=key)


def orders(app) -> list[Order]:
    with app.app_context():
        found = list(db.session.scalars(select(Order).order_by(Order.id)))
        for order in found:
            order.tickets  # noqa: B018 - load before leaving the session
            for ticket in order.tickets:
                ticket.attendee  # noqa: B018
            db.session.expunge(order)
        return found


def log_entries(app) -> list[ChannelWebhook]:
    with app.app_context():
        entries = list(db.session.scalars(select(ChannelWebhook).order_by(ChannelWebhook.id)))
        for entry in entries:
            db.session.expunge(entry)
        return entries


def sold(app) -> dict[str, int]:
    with app.app_context():
        return {t.name: t.sold for t in db.session.scalars(select(TicketType))}


def count(app, model) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(model))


def assert_nothing_imported(app):
    assert count(app, Order) == 0
    assert count(app, Ticket) == 0
    assert count(app, OutboxEvent) == 0
    assert set(sold(app).values()) == {0}


def field_error(page: str, name: str) -> str | None:
    import html

    match = re.search(rf'<div class="error-text" id="{re.escape(name)}-error">([^<]*)</div>', page)
    return html.unescape(match.group(1)) if match else None


def assert_fixture_order(order: Order, source: str):
    """The fixture's order: Pat buys 2 General Admission and 1 VIP with a 10% code; Sam attends two of them."""
    assert order.source == source
    assert (order.first_name, order.last_name, order.email, order.phone) == ("Pat", "Buyer", "pat@buyer.example",
                                                                            "+12125550100")
    assert order.currency == "USD"
    assert order.discount_code == "EARLYBIRD"
    assert order.placed_at.isoformat() == "2026-05-01T14:15:00+00:00"
    assert [(t.type_name, t.base_price, t.final_price, t.fee) for t in order.tickets] == [
        ("General Admission", Decimal("75.00"), Decimal("67.50"), Decimal("0.00")),
        ("General Admission", Decimal("75.00"), Decimal("67.50"), Decimal("0.00")),
        ("VIP", Decimal("150.00"), Decimal("135.00"), Decimal("0.00")),
    ]
    assert [(t.attendee.first_name, t.attendee.last_name, t.attendee.email) for t in order.tickets] == [
        ("Pat", "Buyer", "pat@buyer.example"), ("Sam", "Guest", "sam@guest.example"),
        ("Sam", "Guest", "SAM@guest.example"),
    ]
    assert (order.subtotal, order.discount_total, order.fee_total, order.total) == (
        Decimal("300.00"), Decimal("30.00"), Decimal("0.00"), Decimal("270.00"))
    assert order.note_lines == []


# --- pure parsing ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pairs, units, expected", [
    ([], 2, [{}, {}]),
    ([("Attendee Name", "Sam Guest"), ("Attendee Email", "sam@x.example")], 2,
     [{"name": "Sam Guest", "email": "sam@x.example"}, {}]),
    ([("Attendee Name", "A One"), ("Attendee Name", "B Two"), ("Attendee Email", "a@x.example")], 3,
     [{"name": "A One", "email": "a@x.example"}, {"name": "B Two"}, {}]),
    ([("Attendee 2 Name", "B Two"), ("Attendee 2 E-mail", "b@x.example"), ("Attendee 1 First Name", "Ann")], 2,
     [{"first_name": "Ann"}, {"name": "B Two", "email": "b@x.example"}]),
    ([("_attendee_0_name", "Zero"), ("attendee_1_phone", "+44 20 7946 0958")], 2,
     [{"name": "Zero"}, {"phone": "+44 20 7946 0958"}]),
    ([("Attendee #3 Name", "Third"), ("Gift wrap", "yes"), ("Attendee Name", "  ")], 3, [{}, {}, {"name": "Third"}]),
])
def test_attendee_properties_per_unit(pairs, units, expected):
    assert attendees_from_properties(pairs, units) == expected


def test_line_discount_is_split_to_the_cent():
    line = ExternalLine("1", "GA", "1", "2", 3, Decimal("10.00"), Decimal("10.00"))
    assert [p.final for p in unit_prices(line)] == [Decimal("6.66"), Decimal("6.67"), Decimal("6.67")]
    assert sum(p.final for p in unit_prices(line)) == Decimal("20.00")
    free = ExternalLine("1", "GA", "1", "2", 1, Decimal("10.00"), Decimal("25.00"))
    assert unit_prices(free)[0].final == Decimal("0.00")


def test_shopify_fixture_parses_as_documented():
    order = shopify.parse_order(shopify_order())
    assert (order.order_id, order.name, order.currency, order.discount_codes) == ("5834921377890", "#1001", "USD",
                                                                                  ["EARLYBIRD"])
    assert [(line.product_id, line.variant_id, line.quantity, line.unit_price, line.discount) for line in order.lines] == [
        (PRODUCT, GA_VARIANT, 2, Decimal("75.00"), Decimal("15.00")),
        (PRODUCT, VIP_VARIANT, 1, Decimal("150.00"), Decimal("15.00"))]


@pytest.mark.parametrize("value, expected", [
    ("demo.myshopify.com", "demo.myshopify.com"), ("https://Demo.MyShopify.com/admin", "demo.myshopify.com"),
    ("shop.example.com", ""), ("demo.myshopify.com.evil.example", ""), ("", ""), (None, ""),
])
def test_shop_domain_normalization(value, expected):
    assert shopify.normalize_shop(value) == expected


# --- Shopify webhook ------------------------------------------------------------------------------------------------


def test_shopify_orders_paid_becomes_a_portal_order(app, client, make_organizer, make_event):
    organizer = make_organizer()
    make_event(organizer, types=NO_FEE)
    shopify_channel(app, organizer)
    response = post_shopify(client, shopify_order())
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.json["outcome"] == CREATED
    [order] = orders(app)
    assert_fixture_order(order, SHOPIFY)
    assert order.external_ref == "shopify:5834921377890"
    assert sold(app) == {"General Admission": 2, "VIP": 1}
    [entry] = log_entries(app)
    assert (entry.outcome, entry.order_id, entry.external_order_name, entry.topic) == (CREATED, order.id, "#1001",
                                                                                      "orders/paid")
    assert entry.webhook_id == "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"


def test_shopify_product_mapping_and_test_orders(app, client, make_organizer, make_event):
    """A whole-product mapping takes every variant; a Shopify test order is a test order in the portal."""
    organizer = make_organizer()
    make_event(organizer, types=NO_FEE)
    shopify_channel(app, organizer, mappings={"General Admission": (PRODUCT, None), "VIP": (PRODUCT, VIP_VARIANT)})
    payload = shopify_order()
    payload["test"] = True
    assert post_shopify(client, payload).status_code == 200
    [order] = orders(app)
    assert [t.type_name for t in order.tickets] == ["General Admission", "General Admission", "VIP"]
    assert order.is_test is True


@pytest.mark.parametrize("case", ["wrong secret", "tampered body", "no signature", "garbage signature"])
def test_shopify_bad_signature_is_401_and_stores_nothing(app, client, make_organizer, make_event, case):
    organizer = make_organizer()
    make_event(organizer, types=NO_FEE)
    shopify_channel(app, organizer)
    body = json.dumps(shopify_order()).encode()
    if case == "wrong secret":
        response = post_shopify(client, body, signature=shopify.signature(body, "not-the-secret-0123456789"))
    elif case == "tampered body":
        response = post_shopify(client, body.replace(b'"75.00"', b'"0.01"'), signature=shopify.signature(body, SECRET))
    elif case == "no signature":
        response = post_shopify(client, body, signature="")
    else:
        response = post_shopify(client, body, signature="bm90IGEgc2lnbmF0dXJl")
    assert response.status_code == 401
    assert_nothing_imported(app)
    [entry] = log_entries(app)
    assert entry.outcome == REJECTED and "signature" in entry.detail and entry.webhook_id is None
    # The genuine delivery with the same webhook id still gets in afterwards.
    assert post_shopify(client, body).json["outcome"] == CREATED


@pytest.mark.parametrize("shop", ["unknown.myshopify.com", "", "demo.example.com"])
def test_shopify_unknown_shop_is_404(app, client, make_organizer, make_event, shop):
    organizer = make_organizer()
    make_event(organizer, types=NO_FEE)
    shopify_channel(app, organizer)
    response = post_shopify(client, shopify_order(), shop=shop)
    assert response.status_code == 404
    assert_nothing_imported(app)
    assert log_entries(app) == []


@pytest.mark.parametrize("body, reason", [
    (b"{not json", "not a JSON object"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"id": 1}', "no line_items"),
    (json.dumps({**shopify_order(), "currency": "dollars"}).encode(), "currency"),
    (json.dumps({**shopify_order(), "line_items": [{"id": 1, "quantity": "two", "price": "1.00"}]}).encode(),
     "quantity"),
    (json.dumps({**shopify_order(), "line_items": [{"id": 1, "quantity": 1, "price": "-5"}]}).encode(), "price"),
])
def test_shopify_malformed_payload_is_400_and_stores_nothing(app, client, make_organizer, make_event, body, reason):
    organizer = make_organizer()
    make_event(organizer, types=NO_FEE)
    shopify_channel(app, organizer)
    response = post_shopify(client, body)
    assert response.status_code == 400
    assert reason in response.json["message"]
    assert_nothing_imported(app)
    [entry] = log_entries(app)
    assert entry.outcome == REJECTED and reason in entry.detail


@pytest.mark.parametrize("endpoint", ["/webhooks/shopify", "/webhooks/wix"])
def test_oversize_body_is_refused(app, client, make_organizer, make_event, endpoint):
    organizer = make_organizer()
    make_event(organizer, types=NO_FEE)
    shopify_channel(app, organizer)
    body = b'{"pad": "' + b"x" * (1024 * 1024) + b'"}'
    response = client.post(endpoint, data=body, content_type="application/json",
                           headers={"X-Shopify-Shop-Domain": SHOP, "X-Shopify-Topic": "orders/paid",
                                    "X-Shopify-Hmac-Sha256": shopify.signature(body, SECRET)})
    assert response.status_code == 413
    assert_nothing_imported(app)


def test_shopify_replay_creates_no_second_order(app, client, make_organizer, make_event):
    organizer = make_organizer()
    make_event(organizer, types=NO_FEE)
    shopify_channel(app, organizer)
    first = post_shopify(client, shopify_order())
    again = post_shopify(client, shopify_order())
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json["outcome"] == DUPLICATE
    # The same Shopify order in another delivery (a second subscription, say) is a duplicate too.
    other = post_shopify(client, shopify_order(), webhook_id="0b6f5c2e-other-delivery")
    assert other.json["outcome"] == DUPLICATE
    assert count(app, Order) == 1
    assert sold(app) == {"General Admission": 2, "VIP": 1}
    assert [e.outcome for e in log_entries(app)] == [CREATED, DUPLICATE, DUPLICATE]


def test_a_replay_racing_the_first_delivery_is_still_one_order(app, client, make_organizer, make_event, monkeypatch):
    """Both requests pass the look-ups before either commits: the unique webhook id stops the second one."""
    from portal.channels import service

    organizer = make_organizer()
    make_event(organizer, types=NO_FEE)
    shopify_channel(app, organizer)
    assert post_shopify(client, shopify_order()).json["outcome"] == CREATED
    for name in ("seen", "first_import"):
        real = getattr(service, name)
        calls = []

        def blind_once(*args, real=real, calls=calls):
            calls.append(args)
            return None if len(calls) == 1 else real(*args)
        monkeypatch.setattr(service, name, blind_once)
    response = post_shopify(client, shopify_order())
    assert response.status_code == 200 and response.json["outcome"] == DUPLICATE
    assert count(app, Order) == 1 and count(app, OutboxEvent) == 0
    assert sold(app) == {"General Admission": 2, "VIP": 1}


def test_shopify_other_topics_are_ignored(app, client, make_organizer, make_event):
    organizer = make_organizer()
    make_event(organizer, types=NO_FEE)
    shopify_channel(app, organizer)
    response = post_shopify(client, shopify_order(), topic="orders/create")
    assert response.status_code == 200 and response.json["outcome"] == IGNORED
    assert_nothing_imported(app)


def test_some_items_unmapped_keeps_the_mapped_tickets_with_a_note(app, client, make_organizer, make_event):
    organizer = make_organizer()
    make_event(organizer, types=NO_FEE)
    shopify_channel(app, organizer, mappings={"General Admission": (None, GA_VARIANT)})
    payload = shopify_order()
    shirt = copy.deepcopy(payload["line_items"][0])
    shirt.update(id=555, name="Festival T-shirt - L", product_id=999, variant_id=888, quantity=1, properties=[],
                 discount_allocations=[], price="25.00")
    payload["line_items"].append(shirt)
    response = post_shopify(client, payload)
    assert response.status_code == 200 and response.json["outcome"] == UNMAPPED
    [order] = orders(app)
    assert [t.type_name for t in order.tickets] == ["General Admission", "General Admission"]
    [note] = order.note_lines
    assert "Not imported from Shopify order #1001" in note
    assert "1 × Summer Music Festival 2026 - VIP (product 7513594001, variant 34505432002)" in note
    assert "1 × Festival T-shirt - L (product 999, variant 888)" in note
    [entry] = log_entries(app)
    assert entry.order_id == order.id and "Not mapped: 1 × Festival T-shirt - L" in entry.detail


def test_nothing_mapped_keeps_no_order_until_imported_again(app, client, organizer, make_event):
    make_event(organizer, types=NO_FEE)
    channel_id = shopify_channel(app, organizer, mappings={})
    response = post_shopify(client, shopify_order())
    assert response.status_code == 200 and response.json["outcome"] == UNMAPPED
    assert_nothing_imported(app)
    [entry] = log_entries(app)
    assert "Nothing imported from Shopify order #1001" in entry.detail
    details = client.get(f"/manage/channels/{channel_id}").get_data(as_text=True)
    assert "Import again" in details and "Nothing imported from Shopify order #1001" in details
    # The mapping page lists what arrived unmapped, to help fill it in.
    page = client.get(f"/manage/channels/{channel_id}/products").get_data(as_text=True)
    assert GA_VARIANT in page and VIP_VARIANT in page

    with app.app_context():
        ga, vip = (t.id for t in db.session.scalars(select(TicketType).order_by(TicketType.id)))
    saved = client.post_form(f"/manage/channels/{channel_id}/products",
                             {f"variant-{ga}": GA_VARIANT, f"variant-{vip}": VIP_VARIANT})
    assert saved.status_code == 303
    imported = client.post_form(f"/manage/channels/{channel_id}/log/{entry.id}/import")
    assert imported.status_code == 303
    [order] = orders(app)
    assert_fixture_order(order, SHOPIFY)
    [entry] = log_entries(app)
    assert (entry.outcome, entry.order_id, entry.skipped) == (CREATED, order.id, None)
    # Twice is not possible, and a replay of the delivery is still a duplicate.
    assert client.post_form(f"/manage/channels/{channel_id}/log/{entry.id}/import").status_code == 404
    assert post_shopify(client, shopify_order()).json["outcome"] == DUPLICATE
    assert count(app, Order) == 1


def test_import_again_brings_in_only_what_was_left_out(app, client, organizer, make_event):
    make_event(organizer, types=NO_FEE)
    channel_id = shopify_channel(app, organizer, mappings={"General Admission": (None, GA_VARIANT)})
    assert post_shopify(client, shopify_order()).json["outcome"] == UNMAPPED
    [entry] = log_entries(app)
    with app.app_context():
        vip = db.session.scalars(select(TicketType).where(TicketType.name == "VIP")).one()
        db.session.add(ChannelMapping(channel_id=channel_id, ticket_type_id=vip.id, variant_id=VIP_VARIANT))
        db.session.commit()
    assert client.post_form(f"/manage/channels/{channel_id}/log/{entry.id}/import").status_code == 303
    first, second = orders(app)
    assert [t.type_name for t in first.tickets] == ["General Admission", "General Admission"]
    assert [(t.type_name, t.final_price, t.attendee.email) for t in second.tickets] == [
        ("VIP", Decimal("135.00"), "SAM@guest.example")]
    assert sold(app) == {"General Admission": 2, "VIP": 1}
    [entry] = log_entries(app)
    assert (entry.outcome, entry.order_id, entry.skipped) == (CREATED, first.id, None)
    assert "Imported again" in entry.detail and "Not mapped" not in entry.detail
    page = client.get(f"/manage/channels/{channel_id}").get_data(as_text=True)
    assert f'href="/manage/orders/{first.id}"' in page and f'href="/manage/orders/{second.id}"' in page


def test_oversold_channel_order_is_kept_and_flagged(app, client, organizer, make_event):
    make_event(organizer, types=NO_FEE, capacity=2)
    channel_id = shopify_channel(app, organizer)
    payload = shopify_order()
    payload["line_items"][0]["quantity"] = 3
    payload["line_items"][0]["discount_allocations"][0]["amount"] = "22.50"
    response = post_shopify(client, payload)
    assert response.status_code == 200 and response.json["outcome"] == OVERSOLD
    [order] = orders(app)
    assert len(order.tickets) == 4
    assert any(line.startswith("Oversold: General Admission") for line in order.note_lines)
    assert sold(app) == {"General Admission": 3, "VIP": 1}
    page = client.get(f"/manage/channels/{channel_id}?outcome=attention").get_data(as_text=True)
    assert "oversold" in page and "Oversold: General Admission had 2 left, this order took 3." in page
    card = client.get("/manage/integrations/").get_data(as_text=True)
    assert "1 needs attention" in card


def test_channel_orders_count_against_capacity(app, client, make_organizer, make_event):
    organizer = make_organizer()
    event_id = make_event(organizer, types=NO_FEE, capacity=2)
    shopify_channel(app, organizer)
    payload = shopify_order()
    payload["line_items"] = payload["line_items"][:1]  # the 2 General Admission tickets: all there are
    assert post_shopify(client, payload).json["outcome"] == CREATED
    with app.app_context():
        event = db.session.get(Event, event_id)
        ga = event.ticket_types[0]
        assert ga.remaining == 0
        with pytest.raises(SoldOut):
            place_order(event, OrderInput("Late", "Buyer", "late@buyer.example", None,
                                          lines=[(ga, AttendeeInput("Late", "Buyer", "late@buyer.example"))]))


def test_channel_order_across_two_events_becomes_two_orders(app, client, make_organizer, make_event):
    organizer = make_organizer()
    make_event(organizer, types=[("General Admission", "75.00", "0.00")])
    make_event(organizer, name="Winter Gala", types=[("VIP", "150.00", "0.00")])
    shopify_channel(app, organizer)
    assert post_shopify(client, shopify_order()).json["outcome"] == CREATED
    first, second = orders(app)
    assert [t.type_name for t in first.tickets] == ["General Admission", "General Admission"]
    assert [t.type_name for t in second.tickets] == ["VIP"]
    assert first.external_ref == second.external_ref == "shopify:5834921377890"
    assert "also had tickets for Winter Gala" in first.notes


def test_order_without_a_buyer_email_is_refused_with_a_reason(app, client, make_organizer, make_event):
    organizer = make_organizer()
    make_event(organizer, types=NO_FEE)
    shopify_channel(app, organizer)
    payload = shopify_order()
    payload["email"] = payload["contact_email"] = payload["customer"]["email"] = None
    response = post_shopify(client, payload)
    assert response.status_code == 200 and response.json["outcome"] == REJECTED
    assert_nothing_imported(app)
    assert "no valid e-mail address" in log_entries(app)[0].detail


def test_bad_attendee_details_are_noted_not_fatal(app, client, make_organizer, make_event):
    organizer = make_organizer()
    make_event(organizer, types=NO_FEE)
    shopify_channel(app, organizer)
    payload = shopify_order()
    payload["line_items"][1]["properties"] = [{"name": "Attendee Name", "value": "Robin"},
                                              {"name": "Attendee Email", "value": "not-an-email"}]
    payload["currency"] = "EUR"
    assert post_shopify(client, payload).json["outcome"] == CREATED
    [order] = orders(app)
    assert (order.tickets[2].attendee.first_name, order.tickets[2].attendee.email) == ("Robin", None)
    assert order.currency == "EUR"
    assert any("'not-an-email' on ticket 3 (VIP) is not a valid address" in line for line in order.note_lines)
    assert any("Paid in EUR in Shopify; this event's ticket prices are in USD." == line for line in order.note_lines)


# --- Wix webhook ----------------------------------------------------------------------------------------------------


def test_wix_paid_order_becomes_a_portal_order(app, client, make_organizer, make_event, wix_key):
    organizer = make_organizer()
    make_event(organizer, types=NO_FEE)
    wix_channel(app, organizer, wix_key)
    response = post_wix(client, wix_token(wix_event(), wix_key))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.json["outcome"] == CREATED
    [order] = orders(app)
    assert_fixture_order(order, WIX)
    assert order.external_ref == "wix:4c7a1e90-2b5f-4d83-9e16-0a8b7c6d5e4f"
    [entry] = log_entries(app)
    assert (entry.webhook_id, entry.external_order_name, entry.topic) == (
        "e1f2a3b4-c5d6-4e7f-8091-a2b3c4d5e6f7", "10001", wix.EVENT_TYPE)


def test_wix_fixture_is_the_documented_envelope():
    claims = json.loads((FIXTURES / "wix_order_paid.json").read_text())
    envelope = json.loads(claims["data"])
    assert set(envelope) == {"data", "instanceId", "eventType", "identity"}
    event = json.loads(envelope["data"])
    assert (event["entityFqdn"], event["slug"]) == ("wix.ecom.v1.order", "payment_status_updated")
    assert event["actionEvent"]["body"]["order"]["paymentStatus"] == "PAID"


@pytest.mark.parametrize("case", ["other key", "tampered payload", "alg none", "expired"])
def test_wix_bad_signature_is_401_and_stores_nothing(app, client, make_organizer, make_event, wix_key, case):
    organizer = make_organizer()
    make_event(organizer, types=NO_FEE)
    wix_channel(app, organizer, wix_key)
    if case == "other key":
        token = wix_token(wix_event(), rsa.generate_private_key(public_exponent=65537, key_size=2048))
    elif case == "tampered payload":
        header, _, signature = wix_token(wix_event(), wix_key).split(b".")
        event = wix_event()
        event["actionEvent"]["body"]["order"]["lineItems"][0]["quantity"] = 50
        forged = wix_token(event, wix_key).split(b".")[1]
        token = b".".join([header, forged, signature])
    elif case == "alg none":
        header, payload, signature = wix_token(wix_event(), wix_key).split(b".")
        token = b".".join([wix._b64encode(b'{"alg":"none","typ":"JWT"}').encode(), payload, b"AAAA"])
    else:
        token = wix_token(wix_event(), wix_key, lifetime=-3600)
    response = post_wix(client, token)
    assert response.status_code == 401
    assert_nothing_imported(app)
    [entry] = log_entries(app)
    assert entry.outcome == REJECTED and entry.webhook_id is None


def test_wix_unknown_instance_is_404(app, client, make_organizer, make_event, wix_key):
    organizer = make_organizer()
    make_event(organizer, types=NO_FEE)
    wix_channel(app, organizer, wix_key)
    response = post_wix(client, wix_token(wix_event(), wix_key, instance="99999999-9999-4999-8999-999999999999"))
    assert response.status_code == 404
    assert_nothing_imported(app)
    assert log_entries(app) == []


@pytest.mark.parametrize("body", [b"not a jwt", b"{\"data\": 1}", b"a.b.c", b"\xff\xfe", b""])
def test_wix_malformed_body_is_400(app, client, make_organizer, make_event, wix_key, body):
    organizer = make_organizer()
    make_event(organizer, types=NO_FEE)
    wix_channel(app, organizer, wix_key)
    assert post_wix(client, body).status_code == 400
    assert_nothing_imported(app)


def test_wix_signed_but_malformed_event_is_400(app, client, make_organizer, make_event, wix_key):
    organizer = make_organizer()
    make_event(organizer, types=NO_FEE)
    wix_channel(app, organizer, wix_key)
    claims = wix.envelope({}, INSTANCE)
    envelope = json.loads(claims["data"])
    envelope["data"] = "{broken"
    claims["data"] = json.dumps(envelope)
    assert post_wix(client, wix.sign(claims, wix_key).encode()).status_code == 400
    no_order = {"id": "f0e1d2c3-0000-4000-8000-000000000001", "actionEvent": {"body": {}}}
    assert post_wix(client, wix_token(no_order, wix_key)).status_code == 400
    assert_nothing_imported(app)
    assert [e.outcome for e in log_entries(app)] == [REJECTED, REJECTED]


def test_wix_order_is_imported_only_once_paid_and_only_once(app, client, make_organizer, make_event, wix_key):
    organizer = make_organizer()
    make_event(organizer, types=NO_FEE)
    wix_channel(app, organizer, wix_key)
    pending = wix_event()
    pending["id"] = "a0a0a0a0-0000-4000-8000-000000000001"
    pending["actionEvent"]["body"]["order"]["paymentStatus"] = "PENDING"
    response = post_wix(client, wix_token(pending, wix_key))
    assert response.status_code == 200 and response.json["outcome"] == IGNORED
    assert_nothing_imported(app)
    other_event = wix_event()
    other_event["id"] = "b0b0b0b0-0000-4000-8000-000000000002"
    assert post_wix(client, wix_token(other_event, wix_key, event_type="wix.ecom.v1.order_updated")).json[
        "outcome"] == IGNORED

    token = wix_token(wix_event(), wix_key)
    assert post_wix(client, token).json["outcome"] == CREATED
    assert post_wix(client, token).json["outcome"] == DUPLICATE  # Wix retried the same event
    assert post_wix(client, wix_token(wix_event(), wix_key)).json["outcome"] == DUPLICATE  # same event id, new token
    assert count(app, Order) == 1
    assert sold(app) == {"General Admission": 2, "VIP": 1}


# --- the organizer's pages -------------------------------------------------------------------------------------------


def test_integrations_page_has_a_sales_channels_category(client, organizer):
    page = client.get("/manage/integrations/").get_data(as_text=True)
    assert '<h2 id="cat-channels">Sales channels</h2>' in page
    for platform, name in (("shopify", "Shopify"), ("wix", "Wix")):
        assert f'<article class="card" id="{platform}-card" aria-labelledby="{platform}-title"' in page
        assert f'<h3 id="{platform}-title">{name}</h3>' in page
        assert f'alt="{name} logo"' in page
        assert f'href="/manage/channels/{platform}/connect"' in page
        assert f"{name} setup guide" in page
    assert 'id="klaviyo-card"' in page  # untouched, and still first
    assert page.index('id="klaviyo-card"') < page.index('id="cat-channels"')


@pytest.mark.parametrize("form, field, message", [
    ({"shop_domain": "", "secret": SECRET}, "shop_domain", "Enter your store's myshopify.com domain"),
    ({"shop_domain": "tickets.example.com", "secret": SECRET}, "shop_domain", "permanent myshopify.com domain"),
    ({"shop_domain": SHOP, "secret": ""}, "secret", "Paste the secret"),
    ({"shop_domain": SHOP, "secret": "short"}, "secret", "16 characters or more"),
    ({"shop_domain": SHOP, "secret": "has a space in it 0123456789"}, "secret", "without spaces"),
])
def test_connect_shopify_validates_each_field(app, client, organizer, form, field, message):
    response = client.post_form("/manage/channels/shopify/connect", form)
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert message in field_error(page, field)
    if form["shop_domain"]:
        assert f'value="{form["shop_domain"]}"' in page  # what was typed is kept
    assert count(app, SalesChannel) == 0


def test_connect_shopify_shows_the_webhook_url_and_stores_the_secret_encrypted(app, client, organizer):
    response = client.post_form("/manage/channels/shopify/connect",
                                {"shop_domain": "https://Demo.myshopify.com/", "secret": SECRET})
    assert response.status_code == 303
    with app.app_context():
        channel = db.session.scalar(select(SalesChannel))
        assert channel.account == SHOP
        assert SECRET not in channel.secret_enc and channel.secret == SECRET
    page = client.get("/manage/integrations/").get_data(as_text=True)
    assert 'value="http://localhost/webhooks/shopify"' in page
    assert 'aria-label="Copy the Shopify webhook URL"' in page
    assert "Pending proof" in page and "Send test notification" in page  # what the store's admin must do
    assert shopify_proof(client, SHOP, SECRET).status_code == 200
    page = client.get("/manage/integrations/").get_data(as_text=True)
    assert "Pending proof" not in page and "No products mapped" in page
    # Saving again with a blank secret keeps the one saved.
    assert client.post_form("/manage/channels/shopify/connect", {"shop_domain": SHOP, "secret": ""}).status_code == 303
    with app.app_context():
        assert db.session.scalar(select(SalesChannel)).secret == SECRET


def test_connect_wix_checks_the_public_key(app, client, organizer, wix_key):
    bad = client.post_form("/manage/channels/wix/connect", {"instance_id": "not-a-guid", "public_key": "hello"})
    assert bad.status_code == 422
    page = bad.get_data(as_text=True)
    assert "GUID" in field_error(page, "instance_id")
    assert "not an RSA public key" in field_error(page, "public_key")
    pem = public_pem(wix_key)
    bare = "".join(pem.splitlines()[1:-1])  # the base64 body alone is accepted too
    good = client.post_form("/manage/channels/wix/connect", {"instance_id": INSTANCE.upper(), "public_key": bare})
    assert good.status_code == 303
    with app.app_context():
        channel = db.session.scalar(select(SalesChannel))
        assert (channel.account, channel.secret) == (INSTANCE, pem)
    assert 'value="http://localhost/webhooks/wix"' in client.get("/manage/integrations/").get_data(as_text=True)


def test_a_store_connects_to_one_account_only(app, client, organizer, make_organizer):
    other = make_organizer(email="bo@organizer.example", name="Bo")
    add_channel(app, other)
    response = client.post_form("/manage/channels/shopify/connect", {"shop_domain": SHOP, "secret": SECRET})
    assert response.status_code == 422
    assert "already connected to another portal account" in field_error(response.get_data(as_text=True),
                                                                         "shop_domain")


def test_mapping_page_lists_ticket_types_and_validates(app, client, organizer, make_event):
    make_event(organizer, types=NO_FEE)
    make_event(organizer, name="Winter Gala", types=[("Balcony", "40.00", "0.00")])
    channel_id = add_channel(app, organizer)
    page = client.get(f"/manage/channels/{channel_id}/products").get_data(as_text=True)
    for name in ("Summer Music Festival 2026", "Winter Gala", "General Admission", "VIP", "Balcony"):
        assert name in page
    assert "Unmapped items are not imported." in page
    assert '<a href="/manage/integrations/" aria-current="page">Integrations</a>' in page
    with app.app_context():
        ga, vip, balcony = (t.id for t in db.session.scalars(select(TicketType).order_by(TicketType.id)))
    bad = client.post_form(f"/manage/channels/{channel_id}/products", {
        f"product-{ga}": "abc", f"variant-{vip}": "555", f"variant-{balcony}": "555"})
    assert bad.status_code == 422
    text = bad.get_data(as_text=True)
    assert "numeric product ID" in field_error(text, f"product-{ga}")
    assert "already uses this variant" in field_error(text, f"variant-{balcony}")
    assert 'value="abc"' in text
    assert count(app, ChannelMapping) == 0
    good = client.post_form(f"/manage/channels/{channel_id}/products", {
        f"product-{ga}": "gid://shopify/Product/7513594001", f"variant-{vip}": VIP_VARIANT})
    assert good.status_code == 303
    with app.app_context():
        rows = {(m.ticket_type_id, m.product_id, m.variant_id) for m in db.session.scalars(select(ChannelMapping))}
    assert rows == {(ga, PRODUCT, None), (vip, None, VIP_VARIANT)}
    # Clearing a row removes its mapping.
    assert client.post_form(f"/manage/channels/{channel_id}/products", {f"variant-{vip}": VIP_VARIANT}).status_code == 303
    assert count(app, ChannelMapping) == 1


def test_deleting_a_mapped_ticket_type_forgets_its_mapping(app, client, organizer, make_event):
    event_id = make_event(organizer, types=NO_FEE)
    shopify_channel(app, organizer)
    with app.app_context():
        vip = db.session.scalars(select(TicketType).where(TicketType.name == "VIP")).one().id
    response = client.post_form(f"/manage/events/{event_id}/ticket-types/{vip}/delete")
    assert response.status_code == 303
    assert count(app, ChannelMapping) == 1


def test_another_organizers_channel_is_not_found(app, client, organizer, make_organizer, make_event):
    other = make_organizer(email="bo@organizer.example", name="Bo")
    make_event(other, types=NO_FEE)
    channel_id = shopify_channel(app, other, mappings={})
    post_shopify(client, shopify_order())
    [entry] = log_entries(app)
    for url in (f"/manage/channels/{channel_id}", f"/manage/channels/{channel_id}/products",
                f"/manage/channels/{channel_id}/disconnect"):
        assert client.get(url).status_code == 404
    for url in (f"/manage/channels/{channel_id}/products", f"/manage/channels/{channel_id}/disconnect",
                f"/manage/channels/{channel_id}/log/{entry.id}/import"):
        assert client.post_form(url).status_code == 404
    with app.app_context():
        assert db.session.get(SalesChannel, channel_id).is_connected


def test_forms_need_the_csrf_token(client, organizer, app):
    channel_id = add_channel(app, organizer)
    assert client.post(f"/manage/channels/{channel_id}/disconnect").status_code == 400
    assert client.post("/manage/channels/shopify/connect", data={"shop_domain": SHOP}).status_code == 400
    with app.app_context():
        assert db.session.get(SalesChannel, channel_id).is_connected


def test_disconnect_asks_first_then_refuses_webhooks_and_reconnect_restores(app, client, organizer, make_event):
    make_event(organizer, types=NO_FEE)
    channel_id = shopify_channel(app, organizer)
    confirm = client.get(f"/manage/channels/{channel_id}/disconnect")
    assert confirm.status_code == 200 and "Disconnect Shopify?" in confirm.get_data(as_text=True)
    assert client.post_form(f"/manage/channels/{channel_id}/disconnect").status_code == 303
    with app.app_context():
        channel = db.session.get(SalesChannel, channel_id)
        assert (channel.is_connected, channel.secret_enc, channel.active_key) == (False, None, None)
    assert post_shopify(client, shopify_order()).status_code == 404
    assert_nothing_imported(app)
    page = client.get("/manage/integrations/").get_data(as_text=True)
    assert "Your product mappings are kept" in page
    reconnected = client.post_form("/manage/channels/shopify/connect", {"shop_domain": SHOP, "secret": SECRET})
    assert reconnected.status_code == 303
    assert post_shopify(client, shopify_order()).json["outcome"] == CREATED


def test_details_show_the_last_webhook_counts_and_rejects(app, client, organizer, make_event):
    make_event(organizer, types=NO_FEE)
    channel_id = shopify_channel(app, organizer)
    post_shopify(client, shopify_order())
    post_shopify(client, shopify_order(), signature="Zm9yZ2Vk", webhook_id="x")
    page = client.get(f"/manage/channels/{channel_id}").get_data(as_text=True)
    assert "Last webhook received" in page
    assert "The signature (X-Shopify-Hmac-Sha256) does not match" in page
    assert re.search(r"<b>1</b><span>created</span>", page) and re.search(r"<b>1</b><span>rejected</span>", page)
    [order] = orders(app)
    assert f'href="/manage/orders/{order.id}"' in page
    only_rejects = client.get(f"/manage/channels/{channel_id}?outcome=rejected").get_data(as_text=True)
    assert "does not match" in only_rejects and f'href="/manage/orders/{order.id}"' not in only_rejects


# --- the same Klaviyo events as the widget --------------------------------------------------------------------------

IDS = {"OrderId", "ExperienceId", "ProductID", "AttendeeId"}


def normalized(events: list[dict]) -> list[str]:
    """The events an order produced, without what differs by design: ids and time."""
    def strip(value):
        if isinstance(value, dict):
            return {k: ("<id>" if k in IDS else strip(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value
    return sorted(json.dumps({"metric": e["metric"], "profile": e["profile"], "properties": strip(e["properties"]),
                              "value": e["value"], "value_currency": e.get("value_currency")}, sort_keys=True)
                  for e in events)


def by_order(events: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for event in events:
        grouped.setdefault(event["properties"]["OrderId"], []).append(event)
    return grouped


def test_shopify_and_wix_orders_reach_klaviyo_like_the_widget(app, client, connected, make_event, sandbox,
                                                              start_worker, wix_key):
    event_id = make_event(connected, types=NO_FEE)
    shopify_channel(app, connected)
    wix_channel(app, connected, wix_key)
    with app.app_context():
        event = db.session.get(Event, event_id)
        event.discount_codes.append(DiscountCode(code="EARLYBIRD", kind="percent", amount=Decimal(10)))
        db.session.commit()
        ga, vip = event.ticket_types
        sam = AttendeeInput("Sam", "Guest", "sam@guest.example")
        widget = place_order(event, OrderInput(
            "Pat", "Buyer", "pat@buyer.example", "+12125550100", source="widget", discount=event.discount_codes[0],
            lines=[(ga, AttendeeInput("Pat", "Buyer", "pat@buyer.example", "+12125550100")), (ga, sam),
                   (vip, AttendeeInput("Sam", "Guest", "SAM@guest.example"))]))
        widget_id = str(widget.id)
    shopify_body = shopify_order()
    wix_body = wix_token(wix_event(), wix_key)
    assert post_shopify(client, shopify_body).json["outcome"] == CREATED
    assert post_wix(client, wix_body).json["outcome"] == CREATED
    start_worker()
    wait_for(lambda: len(sandbox_events(sandbox.url)) >= 15 and sync_settled(app), timeout=30,
             message="15 events in the sandbox and nothing left to send")
    sent = sandbox_received(sandbox.url)
    assert len(sent) == 15 and set(sent.values()) == {1}, sent
    grouped = by_order(sandbox_events(sandbox.url))
    assert len(grouped) == 3
    expected = normalized(grouped.pop(widget_id))
    assert sorted(json.loads(e)["metric"] for e in expected) == ["Ordered Experience"] * 3 + [
        "Placed Order", "Registered Attendee"]
    for order_id, events in grouped.items():
        assert normalized(events) == expected, f"order {order_id} differs from the widget order"

    # Replays create nothing new: no order, no outbox row, no event in the sandbox.
    rows = count(app, OutboxEvent)
    assert post_shopify(client, shopify_body).json["outcome"] == DUPLICATE
    assert post_wix(client, wix_body).json["outcome"] == DUPLICATE
    assert (count(app, Order), count(app, OutboxEvent)) == (3, rows)
    wait_for(lambda: sync_settled(app), message="nothing left to send")
    assert sandbox_received(sandbox.url) == sent
