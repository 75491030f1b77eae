"""No 5xx from any input: hypothesis-generated hostile input for each public endpoint, over the test client.

Every answer is below 500, and input that is refused stores nothing: the counts of orders, outbox rows and
accounts are what they were before. Each endpoint also has pinned cases, tried on every run whatever hypothesis
draws: those that gave a 500 before they were fixed, and their neighbours.
"""
import copy
import json
import os
import uuid
from urllib.parse import quote, quote_from_bytes, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from werkzeug.datastructures import MultiDict

from portal.auth.models import Organizer
from portal.channels import shopify, wix
from portal.events.models import DiscountCode, Event
from portal.extensions import db
from portal.orders.models import Order
from portal.sync.checkout_models import CheckoutSession
from portal.sync.models import KlaviyoConnection, OutboxEvent
from tests.test_channels import (  # noqa: F401 - wix_key is a fixture
    INSTANCE, SECRET, SHOP, post_wix, shopify_channel, shopify_order, wix_channel, wix_event, wix_key,
)

# HOSTILE_EXAMPLES=500 for a longer hunt; the default keeps the file at about 15 s.
FAST = settings(max_examples=int(os.environ.get("HOSTILE_EXAMPLES", "30")), deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])

# Strings that have broken parsers before, or could: NUL (PostgreSQL refuses it in text), digits that are digits
# only to Python, numbers past every column's range and past int()'s 4300 digits, very long values, markup,
# byte-order and direction marks.
SPICY = ["", " ", "\x00", "a\x00b", "٣", "²", "１２", "1e309", "NaN", "-0", "-1", "0x1F", "9" * 30, "9" * 5000,
         "x" * 20000, "%00", "%", "%zz", "<script>alert(1)</script>", "{{7*7}}", "\u202e", "\ufeff", "\ud7ff",
         "../../etc/passwd", "[]", "{}", "null", "true", "  a@b.example  ", "a@b.example\x00", "é" * 300]
odd_text = st.one_of(st.text(max_size=30), st.sampled_from(SPICY), st.integers(-2 ** 70, 2 ** 70).map(str))
odd_digits = st.one_of(st.sampled_from(["0", "1", "٣", "9" * 30, "9" * 5000, "-1", "01", "1.0", ""]),
                       st.integers(0, 2 ** 64).map(str))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats(allow_nan=False) | odd_text,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_text, inner, max_size=4), max_leaves=12)
DEEP = b"[" * 200000 + b"]" * 200000
NUL = "\x00"
HUGE = "9" * 5000


def counts(app) -> tuple[int, ...]:
    with app.app_context():
        found = tuple(db.session.scalar(select(func.count()).select_from(model))
                      for model in (Order, OutboxEvent, Organizer, KlaviyoConnection, CheckoutSession))
        db.session.rollback()
        return found


def no_5xx(response):
    assert response.status_code < 500, (response.status_code, response.get_data(as_text=True)[:2000])
    return response


def header(value: str) -> str:
    """A header value as a client can send it: latin-1, on one line."""
    return value.encode("utf-8", "replace").decode("latin-1").replace("\r", " ").replace("\n", " ")


@pytest.fixture
def world(app, client, connected, make_event, wix_key):
    """The logged-in organizer, connected to Klaviyo (so Started Checkout stores what it captures), with a live
    event with two ticket types and a discount code, one placed order, a draft event, and a proved Shopify store
    and Wix site."""
    from portal.orders.service import AttendeeInput, OrderInput, place_order

    event_id = make_event(connected)
    draft_id = make_event(connected, name="Draft", status="draft")
    with app.app_context():
        event = db.session.get(Event, event_id)
        db.session.add(DiscountCode(event_id=event.id, code="EARLY", kind="percent", amount=10))
        order = place_order(event, OrderInput(first_name="Pat", last_name="Buyer", email="pat@buyer.example",
                                              phone=None, lines=[(event.ticket_types[0], AttendeeInput("Pat", "B"))]))
        db.session.commit()
        world = {"organizer_id": connected, "public_id": event.public_id, "token": order.public_token,
                 "draft_id": db.session.get(Event, draft_id).public_id, "type_ids": [t.id for t in event.ticket_types]}
    shopify_channel(app, connected)
    wix_channel(app, connected, wix_key)
    return world


def fill(value: str, world) -> str:
    return value.replace("{id}", world["public_id"]).replace("{t}", str(world["type_ids"][0]))


# --- the Event Page, the widget and their fragments ------------------------------------------------------------------

PAGES = ["/e/{id}", "/w/{id}", "/e/{id}/attendees", "/w/{id}/summary", "/e/{id}/summary", "/w/{id}/attendees"]


def query_pairs(type_ids):
    keys = st.one_of(st.sampled_from(["preview", "w", "discount_code", "next", "tickets", "email",
                                      *(f"qty-{t}" for t in type_ids)]),
                     odd_digits.map(lambda n: f"qty-{n}"), odd_text)
    return st.lists(st.tuples(keys, odd_text), max_size=8)


def get_page(app, client, path: str, query: str, htmx: bool):
    before = counts(app)
    no_5xx(client.get(path, query_string=query, headers={"HX-Request": "true"} if htmx else {}))
    assert counts(app) == before  # a GET stores nothing


@FAST
@given(data=st.data())
def test_event_page_widget_and_fragments_answer_any_query_string(app, client, world, data):
    path = data.draw(st.sampled_from(PAGES))
    public_id = data.draw(st.one_of(st.sampled_from([world["public_id"], world["draft_id"]]), odd_text))
    raw = data.draw(st.one_of(st.none(), st.binary(max_size=60)))  # perhaps not even UTF-8
    pairs = data.draw(query_pairs(world["type_ids"]))
    query = quote_from_bytes(raw, safe="=&") if raw is not None else urlencode(pairs)
    who = client if data.draw(st.booleans()) else app.test_client()  # the organizer (previews) or anyone
    get_page(app, who, path.replace("{id}", quote(public_id, safe="")), query, data.draw(st.booleans()))


EVENT_PAGE_CASES = [
    ("/e/{id}", {"qty-" + HUGE: "1"}), ("/e/{id}", {"qty-{t}": HUGE}), ("/e/{id}", {"qty-{t}": "٣"}),
    ("/e/{id}/summary", {"discount_code": "a\x00b", "qty-{t}": "1"}), ("/w/{id}/attendees", {"qty-" + HUGE: "1"}),
    ("/e/\x00", {}), ("/e/\x00/summary", {}), ("/w/{id}", {"preview": NUL}), ("/e/" + "x" * 20000, {}),
    ("/e/{id}", {"preview": "1", "qty-{t}": "1", "discount_code": NUL}),
]


def test_event_page_pinned_cases(app, client, world):
    for path, query in EVENT_PAGE_CASES:
        query = urlencode({fill(k, world): v for k, v in query.items()})
        for who in (client, app.test_client()):
            for htmx in (False, True):
                get_page(app, who, quote(fill(path, world)), query, htmx)


# --- the checkout ---------------------------------------------------------------------------------------------------


def checkout_forms(type_ids):
    good = [("first_name", "Pat"), ("last_name", "Buyer"), ("email", "pat@buyers.example"),
            (f"qty-{type_ids[0]}", "1"), ("attendee-0-same", "1")]
    keys = st.one_of(st.sampled_from(["first_name", "last_name", "email", "phone", "discount_code",
                                      "checkout_session", "test_domain_ok", "form_token", "marketing_email",
                                      "marketing_sms", "consent_language", "consent_email_version",
                                      "consent_sms_version", *(f"qty-{t}" for t in type_ids),
                                      "attendee-0-first_name", "attendee-0-email", "attendee-1-same"]),
                     odd_digits.map(lambda n: f"qty-{n}"), odd_digits.map(lambda n: f"attendee-{n}-email"), odd_text)
    return st.tuples(st.booleans(), st.lists(st.tuples(keys, odd_text), max_size=10)).map(
        lambda drawn: (good if drawn[0] else []) + drawn[1])  # often a good form with odd extras, repeated keys too


def post_checkout(app, client, world, pairs, kind="e", token=True, preview=False):
    form = MultiDict(pairs)
    if token and "form_token" not in form:
        form.add("form_token", client.form_token(f"/{kind}/{world['public_id']}/checkout"))
    before = counts(app)
    url = f"/{kind}/{world['public_id']}/checkout" + ("?preview=1" if preview else "")
    response = no_5xx(client.post(url, data=form))
    after = counts(app)
    if response.status_code == 303:
        assert after[0] == before[0] + 1  # one whole order
    else:
        assert 400 <= response.status_code < 500 and after == before
        assert "error" in response.get_data(as_text=True)  # and the page says what to fix


@FAST
@given(data=st.data())
def test_checkout_refuses_any_form_with_a_4xx_and_stores_nothing(app, client, world, data):
    post_checkout(app, client, world, data.draw(checkout_forms(world["type_ids"])),
                  data.draw(st.sampled_from(["e", "w"])), data.draw(st.booleans()), data.draw(st.booleans()))


GOOD = [("first_name", "Pat"), ("last_name", "Buyer"), ("email", "pat@buyers.example"), ("qty-{t}", "1"),
        ("attendee-0-same", "1")]


CHECKOUT_CASES = [
    [("qty-" + HUGE, "1")], [("qty-{t}", HUGE)], [("qty-{t}", "٣")], [("discount_code", NUL)],
    [("discount_code", "EARLY\x00")], [("first_name", NUL)], [("email", "pat@buyers.example\x00")],
    [("phone", NUL)], [("phone", HUGE)], [("attendee-0-same", ""), ("attendee-0-first_name", NUL)],
    [("checkout_session", NUL)], [("form_token", NUL)], [("form_token", "x" * 20000)],
    [("qty-{t}", "1"), ("qty-{t}", "2"), ("email", "a@b.example"), ("email", "not an e-mail")],
    [("attendee-" + HUGE + "-email", "a@b.example"), ("attendee-²-email", "a@b.example")],
]


def test_checkout_pinned_cases(app, client, world):
    for extra in CHECKOUT_CASES:
        pairs = [(fill(k, world), fill(v, world)) for k, v in GOOD + extra]
        for preview in (False, True):
            post_checkout(app, client, world, pairs, preview=preview)


def post_change(app, client, world, pairs, preview):
    url = f"/e/{world['public_id']}/checkout/started" + ("?preview=1" if preview else "")
    form = MultiDict(pairs)
    form.setlist("form_token", [client.form_token(f"/e/{world['public_id']}/checkout")])
    before = counts(app)
    response = no_5xx(client.post(url, data=form, headers={"HX-Request": "true"}))
    if response.status_code >= 400:
        assert counts(app) == before


@FAST
@given(data=st.data())
def test_checkout_change_requests_answer_any_form(app, client, world, data):
    """The checkout form's change requests (Started Checkout, the test-domain warning), for the preview too."""
    post_change(app, client, world, data.draw(checkout_forms(world["type_ids"])), data.draw(st.booleans()))


CHANGE_CASES = [
    [("attendee-" + HUGE + "-email", "a@mailinator.com"), ("email", "pat@buyers.example")],
    [("attendee-²-email", "a@mailinator.com"), ("attendee-٣-email", "b@mailinator.com")],
    [("first_name", NUL), ("email", "pat@buyers.example"), ("qty-{t}", "1"), ("checkout_session", "a" * 24)],
    [("last_name", "x" * 20000), ("email", "pat@buyers.example"), ("qty-{t}", "1"), ("checkout_session", "b" * 24)],
    [("qty-" + HUGE, "1"), ("email", "pat@buyers.example")],
    [("discount_code", NUL), ("qty-{t}", "1")],
]


def test_checkout_change_requests_pinned_cases(app, client, world):
    for pairs in CHANGE_CASES:
        pairs = [(fill(k, world), v) for k, v in pairs]
        for preview in (True, False):
            post_change(app, client, world, pairs, preview)


# --- the confirmation page and its sync panel ---------------------------------------------------------------------


def get_confirmation(app, client, world, token, suffix, query, htmx):
    before = counts(app)
    no_5xx(client.get(f"/orders/{quote(token, safe='')}{suffix}", query_string=query,
                      headers={"HX-Request": "true"} if htmx else {}))
    page = no_5xx(app.test_client().get(f"/orders/{world['token']}{suffix}", query_string=query))
    if NUL not in query and "%00" not in query:
        assert page.status_code == (404 if suffix else 200)  # the sync panel is only the organizer's
    assert counts(app) == before


@FAST
@given(token=odd_text, suffix=st.sampled_from(["", "/sync"]), pairs=st.lists(st.tuples(odd_text, odd_text), max_size=4),
       htmx=st.booleans())
def test_confirmation_answers_any_token(app, client, world, token, suffix, pairs, htmx):
    get_confirmation(app, client, world, token, suffix, urlencode(pairs), htmx)


def test_confirmation_pinned_cases(app, client, world):
    for token, suffix in ((NUL, ""), (NUL, "/sync"), ("x" * 20000, ""), ("٣", "/sync"), ("%00", "")):
        for htmx in (False, True):
            get_confirmation(app, client, world, token, suffix, urlencode({"w": "٣", "x": "é" * 300}), htmx)


# --- the Klaviyo OAuth callback ---------------------------------------------------------------------------------------


def get_callback(app, client, pairs):
    before = counts(app)
    response = no_5xx(client.get("/manage/integrations/klaviyo/callback", query_string=urlencode(pairs)))
    assert response.status_code in (302, 303, 400, 404, 409, 422)
    assert counts(app) == before  # no second connection, nothing else either


@FAST
@given(pairs=st.lists(st.tuples(st.sampled_from(["code", "state", "error", "error_description", "scope"]) | odd_text,
                                odd_text), max_size=6))
def test_oauth_callback_answers_any_query_string(app, client, world, pairs):
    get_callback(app, client, pairs)


CALLBACK_CASES = [
    [("state", NUL), ("code", "x")], [("error", "access_denied"), ("state", "x" * 20000)],
    [("state", "a"), ("state", "b"), ("code", "c"), ("code", "d")], [("code", NUL)], [("error", NUL)],
    [("error", "x" * 20000), ("error_description", "<script>alert(1)</script>")],
]


def test_oauth_callback_pinned_cases(app, client, world):
    for pairs in CALLBACK_CASES:
        get_callback(app, client, pairs)


# --- the Shopify and Wix webhooks ------------------------------------------------------------------------------------

ORDER_PATHS = [("id",), ("email",), ("currency",), ("line_items",), ("line_items", 0), ("line_items", 0, "quantity"),
               ("line_items", 0, "price"), ("line_items", 0, "variant_id"), ("line_items", 0, "properties"),
               ("customer",), ("processed_at",), ("total_tax",), ("shipping_lines",), ("discount_codes",),
               ("line_items", 0, "discount_allocations"), ("cancelled_at",), ("refund_line_items",),
               ("transactions",), ("order_id",), ("line_items", 0, "id"), ("name",)]


def spoiled_order(value, paths) -> dict:
    """The fixture order with some fields (at any depth) replaced by an odd value (a path an earlier one cut
    short is left out)."""
    order = shopify_order()
    for path in paths:
        target = order
        for step in path[:-1]:
            target = target[step] if _has(target, step) else None
        if isinstance(target, dict) or _has(target, path[-1]):
            target[path[-1]] = copy.deepcopy(value)  # a copy each time: a value may not end up inside itself
    return order


def _has(container, step) -> bool:
    if isinstance(step, int):
        return isinstance(container, list) and len(container) > step
    return isinstance(container, dict) and step in container


def post_shopify_raw(app, client, body: bytes, topic: str, signed: bool, shop: str = SHOP, webhook_id=None):
    before = counts(app)
    headers = {"X-Shopify-Topic": header(topic), "X-Shopify-Shop-Domain": header(shop),
               "X-Shopify-Webhook-Id": header(webhook_id if webhook_id is not None else str(uuid.uuid4())),
               "X-Shopify-Hmac-Sha256": shopify.signature(body, SECRET) if signed else "bm90IGl0"}
    response = no_5xx(client.post("/webhooks/shopify", data=body, headers=headers, content_type="application/json"))
    if response.status_code >= 400:
        assert counts(app) == before
        assert response.json["message"]  # what was wrong, in words
    return response


@FAST
@given(data=st.data())
def test_shopify_webhook_answers_any_body_and_headers(app, client, world, data):
    kind = data.draw(st.sampled_from(["bytes", "json", "order"]))
    if kind == "bytes":
        body = data.draw(st.binary(max_size=300))
    elif kind == "json":
        body = json.dumps(data.draw(json_values)).encode()
    else:
        paths = data.draw(st.lists(st.sampled_from(ORDER_PATHS), min_size=1, max_size=3))
        body = json.dumps(spoiled_order(data.draw(json_values), paths)).encode()
    post_shopify_raw(app, client, body, data.draw(st.one_of(st.sampled_from(shopify.TOPICS), odd_text)),
                     data.draw(st.booleans()), data.draw(st.one_of(st.just(SHOP), odd_text)),
                     data.draw(st.one_of(st.none(), odd_text)))


SHOPIFY_CASES = [
    (DEEP, "orders/paid", True, SHOP, None),
    (b'{"id": 1, "line_items": [' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"]}", "orders/paid", True, SHOP, None),
    (b"\xff\xfe", "orders/paid", True, SHOP, None), (b"{}", NUL, True, SHOP, None),
    (b"{}", "orders/paid", True, SHOP, NUL), (b"{}", "shop/update", True, SHOP, "x" * 20000),
    (b"{}", "orders/paid", False, NUL + ".myshopify.com", None), (b"{}", "orders/paid", False, "x" * 20000, None),
    (json.dumps({"id": NUL, "line_items": []}).encode(), "orders/paid", True, SHOP, None),
    (json.dumps({"id": 1, "order_id": int(HUGE[:400])}).encode(), "refunds/create", True, SHOP, None),
    (json.dumps({"id": 1e308, "cancelled_at": NUL}).encode(), "orders/cancelled", True, SHOP, None),
]


def test_shopify_webhook_pinned_cases(app, client, world):
    for body, topic, signed, shop, webhook_id in SHOPIFY_CASES:
        post_shopify_raw(app, client, body, topic, signed, shop, webhook_id)


def post_wix_raw(app, client, body: bytes):
    before = counts(app)
    response = no_5xx(post_wix(client, body))
    if response.status_code >= 400:
        assert counts(app) == before
        assert response.json["message"]


def signed(claims, key) -> bytes:
    return wix.sign(claims, key).encode()


@FAST
@given(data=st.data())
def test_wix_webhook_answers_any_token(app, client, world, wix_key, data):
    kind = data.draw(st.sampled_from(["bytes", "segments", "signed envelope", "signed event"]))
    if kind == "bytes":
        body = data.draw(st.binary(max_size=300))
    elif kind == "segments":  # header.payload.signature, each any JSON
        body = ".".join(wix._b64encode(json.dumps(data.draw(json_values)).encode()) for _ in range(3)).encode()
    elif kind == "signed envelope":
        envelope = data.draw(st.one_of(json_values, st.fixed_dictionaries(
            {"instanceId": st.one_of(st.just(INSTANCE), json_values), "eventType": json_values,
             "data": st.one_of(json_values, json_values.map(json.dumps))})))
        body = signed({"data": json.dumps(envelope), "exp": data.draw(st.one_of(st.none(), json_values))}, wix_key)
    else:
        event = wix_event()
        target = event["actionEvent"]["body"]
        field = data.draw(st.sampled_from(["order", "refund", "orderId", "id", "lineItems", "paymentStatus",
                                           "buyerInfo", "priceSummary", "currency", "number"]))
        if field not in ("order", "refund", "orderId"):
            target = target["order"]
        target[field] = data.draw(json_values)
        event["id"] = str(uuid.uuid4())
        kind_of = data.draw(st.sampled_from([wix.EVENT_TYPE, wix.CANCELED_EVENT, wix.REFUND_EVENT, ""]))
        body = signed(wix.envelope(event, INSTANCE, kind_of), wix_key)
    post_wix_raw(app, client, body)


def _deep(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


WIX_CASES = [
    lambda key: DEEP, lambda key: b"a.b.c", lambda key: b"..", lambda key: b"\xff.\xfe.\xfd",
    lambda key: ("e30." + wix._b64encode(json.dumps({"data": _deep(100000)}).encode()) + ".e30").encode(),
    lambda key: signed({"data": json.dumps({"instanceId": INSTANCE, "data": _deep(100000)})}, key),
    lambda key: signed({"data": json.dumps({"instanceId": {"x": 1}, "data": "{}"})}, key),
    lambda key: signed({"data": json.dumps({"instanceId": INSTANCE + NUL, "data": "{}"})}, key),
    lambda key: signed({"data": json.dumps({"instanceId": INSTANCE, "eventType": wix.EVENT_TYPE, "data": json.dumps(
        {"id": NUL, "actionEvent": {"body": {"order": []}}})})}, key),
    lambda key: signed({"data": json.dumps({"instanceId": INSTANCE, "eventType": wix.EVENT_TYPE}),
                        "exp": "tomorrow"}, key),
    lambda key: signed({"data": json.dumps({"instanceId": INSTANCE, "data": "{}"}), "exp": 1e309}, key),
]


def test_wix_webhook_pinned_cases(app, client, world, wix_key):
    for build in WIX_CASES:
        post_wix_raw(app, client, build(wix_key))


# --- log in and sign up -------------------------------------------------------------------------------------------


def post_account_form(app, client, path, pairs):
    form = MultiDict(pairs)
    if "csrf_token" not in form:
        form.add("csrf_token", client.csrf_token())
    before = counts(app)
    response = no_5xx(client.post(path, data=form))
    if response.status_code != 303:
        assert counts(app) == before


account_forms = st.lists(st.tuples(st.sampled_from(["email", "password", "name", "csrf_token"]) | odd_text, odd_text),
                         max_size=6)


@FAST
@given(pairs=account_forms, path=st.sampled_from(["/auth/login", "/auth/signup"]))
def test_login_and_signup_answer_any_form(app, pairs, path):
    post_account_form(app, app.test_client(), path, pairs)


ACCOUNT_CASES = [
    ("/auth/login", [("email", "a\x00@b.example"), ("password", "correct horse battery")]),
    ("/auth/login", [("email", "ada@organizer.example"), ("password", NUL)]),
    ("/auth/login", [("email", "x" * 20000), ("password", "y" * 20000)]),
    ("/auth/signup", [("name", "Ada\x00"), ("email", "new@organizer.example"), ("password", "violet tundra pocket 77")]),
    ("/auth/signup", [("name", "Ada"), ("email", "new\x00@organizer.example"), ("password", "violet tundra pocket 77")]),
    ("/auth/signup", [("name", "Ada"), ("email", "new@organizer.example"), ("password", "violet tundra\x00 pocket")]),
    ("/auth/signup", [("email", "x" * 20000), ("password", "y" * 20000), ("name", "z" * 20000)]),
]


def test_login_and_signup_pinned_cases(app):
    for path, pairs in ACCOUNT_CASES:
        post_account_form(app, app.test_client(), path, pairs)


# --- every page and fragment, asked for directly, for objects in states it may not expect ------------------------

ODD_QUERIES = ["", "page=" + HUGE + "&q=" + "x" * 3000 + "&status=nonsense&kind=x&channel=y&outcome=z",
               "page=٣&fragment=1&w=1&preview=1&next=//evil.example&outcome=attention&status=cancelled"]


@pytest.fixture
def odd_world(app, client, connected, make_event):
    """The organizer's things in the states a page or fragment may not expect: a draft event without ticket
    types, a cancelled event, a cancelled order, a refunded one, a sold-out ticket type, a pending Shopify claim,
    a disconnected Wix site, and no flows, backfill or health check ever started."""
    from portal.orders import lifecycle
    from portal.orders.service import AttendeeInput, OrderInput, place_order
    from tests.test_channels import add_channel

    live = make_event(connected, capacity=1)
    cancelled = make_event(connected, name="Cancelled")
    with app.app_context():
        empty = Event(organizer_id=connected, name="Empty", venue="", timezone="UTC", status="draft",
                      starts_at=db.session.get(Event, live).starts_at, ends_at=db.session.get(Event, live).ends_at,
                      currency="USD")
        db.session.add(empty)
        db.session.commit()
        ids = {"events": [live, cancelled, empty.id], "orders": [], "tickets": []}
        for event_id in (live, live, cancelled):
            event = db.session.get(Event, event_id)
            ticket_type = next(t for t in event.ticket_types if t.remaining)
            order = place_order(event, OrderInput(first_name="Pat", last_name="Buyer", email="pat@buyer.example",
                                                  phone=None, lines=[(ticket_type, AttendeeInput("Pat", "B"))]))
            ids["orders"].append(order.id)
            ids["tickets"].append(order.tickets[0].id)
        first, second = (db.session.get(Order, i) for i in ids["orders"][:2])
        lifecycle.cancel_order(first, refund=False, include_fees=False, reason="odd", by="test")
        lifecycle.refund_order(second, ticket_ids=[second.tickets[0].id], amount=None, include_fees=True,
                               reason="odd", by="test")
        lifecycle.cancel_event(db.session.get(Event, cancelled), refund=True, include_fees=True, reason="odd",
                               by="test")
        ids["types"] = [t.id for e in ids["events"] for t in db.session.get(Event, e).ticket_types] or [1]
        ids["public"] = [db.session.get(Event, e).public_id for e in ids["events"]]
        ids["tokens"] = [db.session.get(Order, o).public_token for o in ids["orders"]]
    ids["channels"] = [add_channel(app, connected, proved=False)]
    with app.app_context():
        from portal.channels.models import WIX, SalesChannel

        wix_site = SalesChannel(organizer_id=connected, platform=WIX)
        wix_site.connect(INSTANCE, "unused")
        wix_site.disconnect()
        db.session.add(wix_site)
        db.session.commit()
        ids["channels"].append(wix_site.id)
    return ids


def fills(rule, ids) -> list[dict]:
    """Every way to fill a route's arguments from the odd world (one value list per argument, in turn)."""
    choices = {"event_id": ids["events"], "order_id": ids["orders"], "ticket_id": ids["tickets"],
               "ticket_type_id": ids["types"], "channel_id": ids["channels"], "public_id": ids["public"],
               "token": ids["tokens"], "platform": ["shopify", "wix"], "kind": ["e", "w"]}
    values = [{}]
    for argument in sorted(rule.arguments):
        values = [{**v, argument: option} for v in values for option in choices.get(argument, ["1"])]
    return values


@pytest.mark.parametrize("klaviyo", ["connected", "needs_reconnect", "disconnected"])
def test_every_page_and_fragment_answers_objects_in_odd_states(app, client, odd_world, klaviyo):
    with app.app_context():
        connection = db.session.scalar(select(KlaviyoConnection))
        connection.status = klaviyo
        db.session.commit()
    before = counts(app)
    asked = 0
    for rule in app.url_map.iter_rules():
        if "GET" not in rule.methods or rule.endpoint in ("static", "integrations.callback"):
            continue
        for values in fills(rule, odd_world):
            path = rule.build(values, append_unknown=False)[1]
            for query in ODD_QUERIES:
                for htmx in ({}, {"HX-Request": "true"}):
                    response = client.get(path, query_string=query, headers=htmx)
                    assert response.status_code < 500, (path, query, htmx, response.get_data(as_text=True)[:1500])
                    asked += 1
    assert asked > 300  # every page, really
    assert counts(app) == before  # and not one of them stored anything


def test_ids_in_paths_past_a_database_integer_or_in_other_digits_are_not_found(app, client, odd_world):
    """<int:...> takes ASCII digits within a database integer: others are a 404, never an overflow (500)."""
    sentinel, tried = 7654321, 0
    for rule in app.url_map.iter_rules():
        ints = [arg for arg, conv in rule._converters.items() if type(conv).__name__ == "IdConverter"]
        if not ints:
            continue
        values = {**fills(rule, odd_world)[0], **{arg: sentinel for arg in ints}}
        path = rule.build(values, append_unknown=False)[1]
        for odd in ("99999999999999999999", "2147483648", "٣", HUGE):
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                data = {"csrf_token": client.csrf_token()} if method == "POST" else None
                response = client.open(path.replace(str(sentinel), quote(odd)), method=method, data=data)
                # 405 when another method's route matched the path before its id was refused
                assert response.status_code in (404, 405), (method, path, odd, response.status_code)
                tried += 1
    assert tried > 100


def test_a_nul_in_a_path_query_or_form_is_refused_with_what_to_fix(app, client, odd_world):
    """PostgreSQL cannot hold a NUL: anywhere in a request (but where a parser of its own reads it) it is a 400
    that says what to remove, before any view looks anything up or stores it."""
    before = counts(app)
    event_id = odd_world["events"][0]
    for method, path, data in [
        ("POST", "/manage/events/new", {"name": "Gala\x00", "venue": "Hall"}),
        ("POST", f"/manage/events/{event_id}/edit", {"name": "Gala", "venue": "\x00"}),
        ("POST", f"/manage/channels/{odd_world['channels'][0]}/products", {"product-1\x00": "1"}),
        ("GET", f"/manage/events/{event_id}/orders?q=%00", None),
        ("GET", "/e/%00", None),
        ("GET", f"/orders/{odd_world['tokens'][0]}%00", None),
    ]:
        if data is not None:
            data["csrf_token"] = client.csrf_token()
        for htmx in (False, True):
            response = client.open(path, method=method, data=data, headers={"HX-Request": "true"} if htmx else {})
            assert response.status_code == 400, (path, response.status_code)
            assert "NUL character" in response.get_data(as_text=True)
    assert counts(app) == before
    # The checkout reads its fields itself: a NUL is told next to its field, and what was typed is kept.
    public_id = odd_world["public"][0]
    with app.app_context():
        type_id = db.session.scalar(select(Event).where(Event.public_id == public_id)).ticket_types[0].id
    page = client.post_form(f"/e/{public_id}/checkout", {"first_name": "Pat\x00", "last_name": "Buyer",
                                                         "email": "pat@buyers.example", f"qty-{type_id}": "1"})
    assert page.status_code == 422 and "Remove the invisible control characters" in page.get_data(as_text=True)
    assert counts(app) == before
