"""Security across the whole portal: CSRF on every unsafe route (htmx included), another organizer's ids answer 404
on every route, names render escaped everywhere (no XSS, no template injection), and the health check."""
import html
import json
import re
from datetime import timedelta

import pytest
from sqlalchemy import select

from portal.crypto import encrypt
from portal.events.models import DiscountCode, Event
from portal.extensions import db
from portal.sync.models import KlaviyoConnection
from portal.orders.models import Order
from portal.sync.models import OutboxEvent
from portal.sync.setup_models import FAILED, SetupItem
from portal.types import utcnow

UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
# The event page renders DiscountForm.kind, whose tuple choices warn on WTForms 3.3 (pinned in test_events.py).
pytestmark = pytest.mark.filterwarnings("ignore:Passing SelectField choices as tuples:DeprecationWarning")



def _rules():
    """Every (rule, endpoint, method) of the real app's URL map, read at collection time."""
    from portal import create_app

    app = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite://", "SECRET_KEY": "collect", "TESTING": True,
                      "TOKEN_ENCRYPTION_KEY": "x" * 43 + "=", "KLAVIYO_CLIENT_ID": "c", "KLAVIYO_CLIENT_SECRET": "s"})
    out = []
    for rule in app.url_map.iter_rules():
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            out.append((rule.rule, rule.endpoint, method, tuple(sorted(rule.arguments))))
    return sorted(out)


RULES = _rules()
UNSAFE_RULES = [(r, e, m) for r, e, m, _ in RULES if m in UNSAFE]
ID_ARGS = {"event_id", "ticket_type_id", "discount_id", "order_id", "outbox_id", "run_id", "channel_id", "entry_id",
           "item_id"}
# Server-to-server endpoints (store webhooks): authenticated by the store's signature instead of a CSRF token.
SIGNED_ENDPOINTS = ("webhooks.",)
OWNED_RULES = [(r, e, m) for r, e, m, args in RULES if set(args) & ID_ARGS]


def test_every_id_in_the_url_map_is_covered():
    """A new kind of id in a route must be added to the world below, or the ownership test would miss it."""
    int_args = {name for rule, *_ in RULES for name in re.findall(r"<int:([a-z_]+)>", rule)}
    assert int_args <= ID_ARGS, int_args - ID_ARGS
    assert len(UNSAFE_RULES) >= 15 and len(OWNED_RULES) >= 15


# --- a world with two organizers ------------------------------------------------------------------------------------------

def make_connection(organizer_id):
    connection = KlaviyoConnection(
        organizer_id=organizer_id, status="connected", access_token_enc=encrypt("kat_not_a_real_token"),
        refresh_token_enc=encrypt("krt_not_a_real_token"), expires_at=utcnow() + timedelta(hours=1),
        scope="accounts:read events:write", account_id="SBX01HXYZ", organization_name="Sandbox Festival Co.",
        connected_by="x", connected_at=utcnow())
    db.session.add(connection)


class World:
    """Ada (logged in on `client`) owns an event, a draft, a discount, an order with outbox rows (one failed) and
    a backfill run, a Shopify channel with a webhook log entry; Bo owns an event of his own. `ids` fills every
    route argument with Ada's objects."""

    SHOP = "ada-fest.myshopify.com"

    def __init__(self, app, client, make_organizer, make_event, login):
        self.app, self.client = app, client
        self.ada = make_organizer()
        self.bo = make_organizer(email="bo@other.example", name="Bo")
        self.event = make_event(self.ada)
        self.draft = make_event(self.ada, name="Secret draft", status="draft")
        self.bo_event = make_event(self.bo, name="Bo's own")
        with app.app_context():
            make_connection(self.ada)
            db.session.add(DiscountCode(event_id=self.event, code="SUMMER10", kind="percent", amount=10))
            db.session.commit()
            event, draft = db.session.get(Event, self.event), db.session.get(Event, self.draft)
            self.public_id, self.draft_public_id = event.public_id, draft.public_id
            self.ticket_type = event.ticket_types[0].id
            self.discount = db.session.scalar(select(DiscountCode.id))
            bo_event = db.session.get(Event, self.bo_event)
            self.bo_public_id, self.bo_ticket_type = bo_event.public_id, bo_event.ticket_types[0].id
        login()
        response = client.post_form(f"/e/{self.public_id}/checkout", {
            f"qty-{self.ticket_type}": "1", "first_name": "Pat", "last_name": "Buyer", "email": "pat@buyer.example",
            "attendee-0-same": "1"})
        assert response.status_code == 303
        with app.app_context():
            order = db.session.scalar(select(Order))
            self.order, self.token, self.ticket = order.id, order.public_token, order.tickets[0].id
            row = db.session.scalar(select(OutboxEvent).order_by(OutboxEvent.id))
            row.status, row.last_error = "failed", "boom"
            self.outbox = row.id
            self.run = None
            try:
                from portal.sync.models import BackfillRun
            except ImportError:
                BackfillRun = None
            if BackfillRun is not None:
                run = BackfillRun(organizer_id=self.ada, status="cancelled")
                db.session.add(run)
                db.session.flush()
                self.run = run.id
            self.channel = self.entry = None
            try:
                from portal.channels.models import ChannelWebhook, SalesChannel
            except ImportError:
                SalesChannel = None
            if SalesChannel is not None:
                channel = SalesChannel(organizer_id=self.ada, platform="shopify")
                channel.connect(self.SHOP, "shpss_not_a_real_secret")
                db.session.add(channel)
                db.session.flush()
                entry = ChannelWebhook(channel_id=channel.id, outcome="unmapped", detail="Nothing mapped yet",
                                       topic="orders/paid")
                db.session.add(entry)
                db.session.flush()
                self.channel, self.entry = channel.id, entry.id
            # A segment "Set up flows and segments" could not make.
            item = SetupItem(organizer_id=self.ada, key="repeat_attendees", kind="segment",
                             name="Ticketing: Repeat Attendees", status=FAILED, detail="boom")
            db.session.add(item)
            db.session.flush()
            self.item = item.id
            db.session.commit()
        self.ids = {"event_id": self.event, "ticket_type_id": self.ticket_type, "discount_id": self.discount,
                    "order_id": self.order, "ticket_id": self.ticket, "outbox_id": self.outbox, "run_id": self.run, "kind": "e",
                    "channel_id": self.channel, "entry_id": self.entry, "item_id": self.item, "key": "repeat_attendees",
                    "public_id": self.public_id, "token": self.token, "filename": "app.css"}

    def url(self, rule, **override):
        values = {**self.ids, **override}

        def fill(match):
            converter, name = match.group(1) or "", match.group(2)
            if name in values:
                return str(values[name])
            choices = re.match(r"any\(([^,)]+)", converter)
            assert choices, f"no value for <{converter}:{name}> in {rule}"
            return choices.group(1).strip(" '\"")

        return re.sub(r"<(?:([^:>]+(?:\([^)]*\))?):)?([a-z_]+)>", fill, rule)

    def snapshot(self):
        """Every row of every table, so a test can tell that nothing at all changed."""
        with self.app.app_context():
            rows = {}
            for table in db.metadata.sorted_tables:
                order = [c for c in table.primary_key.columns] or list(table.columns)
                rows[table.name] = [tuple(r) for r in db.session.execute(select(table).order_by(*order))]
            return rows


@pytest.fixture
def world(app, client, make_organizer, make_event, login):
    return World(app, client, make_organizer, make_event, login)


SAMPLE_FORMS = {
    "auth.login": {"email": "ada@organizer.example", "password": "correct horse battery"},
    "auth.signup": {"name": "Eve", "email": "eve@evil.example", "password": "long enough password"},
    "events.new": {"name": "Forged", "venue": "Nowhere", "timezone": "UTC", "starts_at": "2026-07-15T18:00",
                   "ends_at": "2026-07-15T20:00", "currency": "USD"},
    "events.edit": {"name": "Forged", "venue": "Nowhere", "timezone": "UTC", "starts_at": "2026-07-15T18:00",
                    "ends_at": "2026-07-15T20:00", "currency": "USD"},
    "events.add_ticket_type": {"name": "Forged", "price": "1.00", "fee": "0", "capacity": "5"},
    "events.edit_ticket_type": {"name": "Forged", "price": "1.00", "fee": "0", "capacity": "5"},
    "events.add_discount": {"code": "FORGED", "kind": "percent", "amount": "100"},
    "events.widget": {"accent_color": "#000000", "button_label": "Forged"},
}


# What each unsafe route answers once it has its token and the sample form above: 303 (redirect after a POST)
# unless listed. Exact, so a 500 can't pass for "not refused for CSRF".
WITH_TOKEN_STATUS = {
    "integrations.connect": 302,  # on to Klaviyo's consent page
    "events.edit": 200,  # moving a live event with ticket holders: first says who will be told
    "events.widget": 200,  # the htmx preview fragment
    "events.previewed": 204,
    "auth.account": 422, "channels.connect": 422, "events.cancel": 422,  # the sample form misses fields
    "orders.cancel": 422, "orders.refund": 422, "orders.transfer": 422,
    "channels.import_again": 404,  # the world's log entry has nothing left to import
    "storefront.checkout_started": 200,  # the checkout form's change request: kept for Started Checkout
    "klaviyo_health.order_check_again": 404,  # the world's order is a real one: only test orders are read back
    "consent.save_wording": 422,  # the sample form has no wording
}
# A forged store delivery: Ada's Shopify store with a wrong signature, and a body that is no Wix token at all.
UNSIGNED_STATUS = {"webhooks.shopify": 401, "webhooks.wix": 400}


def sample_form(world, endpoint):
    if endpoint in ("storefront.checkout", "storefront.checkout_started"):
        return {f"qty-{world.ticket_type}": "1", "first_name": "Eve", "last_name": "Forger",
                "email": "eve@evil.example", "attendee-0-same": "1"}
    return dict(SAMPLE_FORMS.get(endpoint, {}))


# --- CSRF ---------------------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rule, endpoint, method", UNSAFE_RULES, ids=[f"{m} {r}" for r, _, m in UNSAFE_RULES])
def test_unsafe_route_refuses_a_request_without_its_anti_forgery_token(world, app, rule, endpoint, method):
    client = world.client
    url = world.url(rule)
    data = sample_form(world, endpoint)
    if endpoint.startswith(SIGNED_ENDPOINTS):
        return refuses_unsigned(world, url, method, UNSIGNED_STATUS[endpoint])
    before = world.snapshot()

    response = client.open(url, method=method, data=data)
    assert response.status_code == 400, (response.status_code, response.get_data(as_text=True)[:300])
    response = client.open(url, method=method, data={**data, "csrf_token": "forged", "form_token": "forged"})
    assert response.status_code == 400, response.status_code
    response = client.open(url, method=method, data=data, headers={"HX-Request": "true"})
    assert response.status_code == 400
    assert "<html" not in response.get_data(as_text=True) or endpoint == "storefront.checkout"
    assert world.snapshot() == before, "a refused request changed the database"
    assert client.get("/manage/events/").status_code == 200  # still logged in

    # The same request with the page's token is not refused for CSRF: the check above is what stopped it.
    if endpoint in ("storefront.checkout", "storefront.checkout_started"):  # the signed form token, not the session's
        page = client.get(url.split("/checkout")[0]).get_data(as_text=True)
        data["form_token"] = re.search(r'name="form_token" value="([^"]+)"', page).group(1)
    else:
        data["csrf_token"] = client.csrf_token()
    response = client.open(url, method=method, data=data)
    assert response.status_code == WITH_TOKEN_STATUS.get(endpoint, 303), response.get_data(as_text=True)[:300]


def refuses_unsigned(world, url, method, status):
    """A forged store delivery (no valid signature, sent from Ada's browser session) creates no order."""
    orders_before = world.snapshot()
    paid = json.dumps({"id": 1, "name": "#1001", "financial_status": "paid", "currency": "USD", "email": "e@e.example",
                       "line_items": [{"id": 1, "product_id": 1, "variant_id": 1, "quantity": 1, "price": "1.00"}]})
    headers = {"Content-Type": "application/json", "X-Shopify-Shop-Domain": World.SHOP, "X-Shopify-Topic": "orders/paid",
               "X-Shopify-Hmac-Sha256": "Zm9yZ2Vk", "X-Shopify-Webhook-Id": "forged-1"}
    for extra in ({}, {"X-CSRFToken": world.client.csrf_token()}):
        response = world.client.open(url, method=method, data=paid, headers={**headers, **extra})
        assert response.status_code == status, response.get_data(as_text=True)[:300]
    after = world.snapshot()
    for table in ("orders", "tickets", "attendees", "outbox_events", "ticket_types"):
        assert after[table] == orders_before[table], table


def test_htmx_request_with_the_token_in_the_header_is_accepted(world, app):
    client = world.client
    url = f"/manage/events/{world.draft}/live"
    response = client.post(url, headers={"HX-Request": "true"})
    assert response.status_code == 400
    assert "This form has expired or was not sent from the portal." in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(Event, world.draft).status == "draft"

    page = client.get("/manage/events/").get_data(as_text=True)
    token = json.loads(html.unescape(re.search(r"<body hx-headers='([^']+)'>", page).group(1)))["X-CSRFToken"]
    response = client.post(url, headers={"HX-Request": "true", "X-CSRFToken": token})
    assert response.status_code == 200
    assert response.headers["HX-Redirect"] == f"/manage/events/{world.draft}"
    with app.app_context():
        assert db.session.get(Event, world.draft).status == "live"


def test_csrf_token_of_another_session_is_refused(world, app, login):
    other = app.test_client()
    login(who=other, email="bo@other.example")
    foreign = other.csrf_token()
    response = world.client.post(f"/manage/events/{world.draft}/live", data={"csrf_token": foreign})
    assert response.status_code == 400
    with app.app_context():
        assert db.session.get(Event, world.draft).status == "draft"


# --- another organizer's ids ------------------------------------------------------------------------------------------------

def _as_bo(world, login):
    world.client.post_form("/auth/logout")
    login(email="bo@other.example")


def test_another_organizers_ids_are_not_found_on_any_route(world, app, login):
    """Every route that takes an id, GET and POST, plain and htmx: Bo gets 404 for Ada's ids, and nothing changes."""
    _as_bo(world, login)
    client = world.client
    before = world.snapshot()
    problems, tried = [], 0
    for rule, endpoint, method in OWNED_RULES:
        if any(world.ids[name] is None for name in re.findall(r"<int:([a-z_]+)>", rule)):
            problems.append(f"{rule}: the world has no object for this id")
            continue
        urls = [world.url(rule)]
        # Bo's own event with Ada's ticket type or discount in the same URL is not found either.
        if "<int:event_id>" in rule and re.search(r"<int:(ticket_type_id|discount_id)>", rule):
            urls.append(world.url(rule, event_id=world.bo_event))
        for url in urls:
            for headers in ({}, {"HX-Request": "true"}):
                if method == "GET":
                    response = client.get(url, headers=headers)
                else:
                    data = {**sample_form(world, endpoint), "csrf_token": client.csrf_token()}
                    response = client.open(url, method=method, data=data, headers=headers)
                tried += 1
                body = response.get_data(as_text=True)
                if response.status_code != 404 or "Secret draft" in body or "pat@buyer.example" in body:
                    problems.append(f"{method} {url} {headers}: {response.status_code}")
    assert problems == []
    assert tried >= 2 * len(OWNED_RULES)
    assert world.snapshot() == before


def test_bo_can_not_reach_adas_outbox_row_through_his_own_order(world, app, login, make_event):
    _as_bo(world, login)
    response = world.client.post_form(f"/e/{world.bo_public_id}/checkout", {
        f"qty-{world.bo_ticket_type}": "1", "first_name": "Bo", "last_name": "B", "email": "bo@buyer.example",
        "attendee-0-same": "1"})
    assert response.status_code == 303
    with app.app_context():
        bo_order = db.session.scalar(select(Order.id).where(Order.organizer_id == world.bo))
    before = world.snapshot()
    assert world.client.post_form(f"/manage/orders/{bo_order}/events/{world.outbox}/retry").status_code == 404
    assert world.snapshot() == before


def test_another_organizers_previews_and_sync_panels_are_not_found(world, app, login):
    _as_bo(world, login)
    before = world.snapshot()
    for path in ("/e/{draft}?preview=1", "/w/{draft}?preview=1", "/e/{draft}/attendees?preview=1",
                 "/w/{draft}/attendees?preview=1", "/orders/{token}/sync"):
        url = path.format(draft=world.draft_public_id, token=world.token)
        assert world.client.get(url).status_code == 404, url
        assert world.client.get(url, headers={"HX-Request": "true"}).status_code == 404, url
    for kind in ("e", "w"):  # nor buy Ada's draft as a test order
        response = world.client.post(f"/{kind}/{world.draft_public_id}/checkout?preview=1", data={
            f"qty-{world.ticket_type}": "1", "first_name": "Bo", "last_name": "B", "email": "bo@b.example"})
        assert response.status_code == 404
    assert world.snapshot() == before


def test_another_organizers_klaviyo_connection_is_out_of_reach(world, app, login):
    _as_bo(world, login)
    client = world.client
    page = client.get("/manage/integrations/").get_data(as_text=True)
    assert 'aria-label="Connected"' not in page and "Sandbox Festival Co." not in page and ">Connect</button>" in page
    assert client.get("/manage/integrations/klaviyo").status_code == 303
    assert client.get("/manage/integrations/klaviyo/disconnect").status_code == 303
    assert client.get("/manage/integrations/klaviyo/queue").status_code == 404
    before = world.snapshot()
    assert client.post_form("/manage/integrations/klaviyo/disconnect").status_code == 404
    assert client.post_form("/manage/integrations/klaviyo/account/refresh").status_code == 404
    assert world.snapshot() == before
    with app.app_context():
        assert db.session.scalar(select(KlaviyoConnection.status)) == "connected"


def test_another_organizers_events_and_orders_are_not_listed(world, login):
    _as_bo(world, login)
    page = world.client.get("/manage/events/").get_data(as_text=True)
    assert "Bo&#39;s own" in page and "Summer Music Festival" not in page and "Secret draft" not in page
    page = world.client.get(f"/manage/events/{world.bo_event}/orders").get_data(as_text=True)
    assert "pat@buyer.example" not in page


# --- XSS and template injection ------------------------------------------------------------------------------------------

EVENT_NAME = "<script>alert(1)</script>{{7*7}}"
ATTENDEE = "<img src=x onerror=alert(1)>"
BREAKOUT = '"><svg onload=alert(2)>'


def assert_escaped(page: str, where: str, *, attendee=True):
    assert "<script>alert(1)</script>" not in page, where
    assert "&lt;script&gt;alert(1)&lt;/script&gt;{{7*7}}" in page, where  # shown, escaped, and not evaluated
    if attendee:
        assert "<img src=x onerror=alert(1)>" not in page, where
        assert "&lt;img src=x onerror=alert(1)&gt;" in page, where
    assert "<svg onload=alert(2)>" not in page, where


def test_names_render_escaped_everywhere(app, client, make_organizer, make_event, login):
    ada = make_organizer()
    event_id = make_event(ada, name=EVENT_NAME)
    with app.app_context():
        make_connection(ada)
        db.session.commit()
        event = db.session.get(Event, event_id)
        public_id, type_id = event.public_id, event.ticket_types[0].id
    form = {f"qty-{type_id}": "1", "first_name": "Pat", "last_name": BREAKOUT, "email": "pat@buyer.example",
            "attendee-0-first_name": ATTENDEE, "attendee-0-last_name": "Guest", "attendee-0-email": "g@guest.example"}

    # The buyer's typed values come back escaped when the form is re-rendered.
    invalid = client.post_form(f"/e/{public_id}/checkout", {**form, "email": "nope"})
    assert invalid.status_code == 422
    assert_escaped(invalid.get_data(as_text=True), "checkout re-render")
    assert 'value="&lt;img src=x onerror=alert(1)&gt;"' in invalid.get_data(as_text=True)
    assert 'value="&#34;&gt;&lt;svg onload=alert(2)&gt;"' in invalid.get_data(as_text=True)

    response = client.post_form(f"/e/{public_id}/checkout", form)
    assert response.status_code == 303
    confirmation = response.headers["Location"]
    with app.app_context():
        order = db.session.scalar(select(Order))
        assert order.event.name == EVENT_NAME and order.tickets[0].attendee.first_name == ATTENDEE
        order_id = order.id
        # ... and it reaches Klaviyo as the literal text.
        payloads = [json.loads(p) for p in db.session.scalars(select(OutboxEvent.payload))]
    names = {p["data"]["attributes"]["properties"].get("EventName") for p in payloads}
    assert names == {EVENT_NAME}
    attendee = [p for p in payloads if p["data"]["attributes"]["metric"]["data"]["attributes"]["name"] ==
                "Registered Attendee"]
    assert attendee[0]["data"]["attributes"]["profile"]["data"]["attributes"]["first_name"] == ATTENDEE

    assert_escaped(client.get(f"/e/{public_id}").get_data(as_text=True), "event page", attendee=False)
    assert_escaped(client.get(f"/w/{public_id}").get_data(as_text=True), "widget", attendee=False)
    assert_escaped(client.get(confirmation).get_data(as_text=True), "confirmation")
    assert_escaped(client.get(confirmation + "?w=1").get_data(as_text=True), "widget confirmation")
    login()
    assert_escaped(client.get(confirmation).get_data(as_text=True), "confirmation with the sync panel")
    assert_escaped(client.get(f"/manage/orders/{order_id}").get_data(as_text=True), "order page")
    assert_escaped(client.get("/manage/events/").get_data(as_text=True), "events list", attendee=False)
    assert_escaped(client.get(f"/manage/events/{event_id}/orders").get_data(as_text=True), "orders list",
                   attendee=False)
    assert_escaped(client.get(f"/manage/events/{event_id}/widget").get_data(as_text=True), "widget customization",
                   attendee=False)
    assert_escaped(client.get(f"/e/{public_id}?preview=1").get_data(as_text=True), "preview", attendee=False)


def test_names_render_escaped_on_the_event_page_and_in_flashes(app, client, organizer, make_event):
    event_id = make_event(organizer, name=EVENT_NAME)
    assert_escaped(client.get(f"/manage/events/{event_id}").get_data(as_text=True), "event page", attendee=False)
    response = client.post_form(f"/manage/events/{event_id}/ticket-types", {
        "name": ATTENDEE, "price": "1.00", "fee": "0", "capacity": "5"})
    assert response.status_code == 303
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "<img src=x" not in page and "Ticket type “&lt;img src=x onerror=alert(1)&gt;” added." in page


def test_organizer_name_renders_escaped(app, client, make_organizer, login):
    make_organizer(name=EVENT_NAME)
    login()
    page = client.get("/manage/integrations/").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;{{7*7}}" in page


# --- health ---------------------------------------------------------------------------------------------------------------

def test_healthz(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}


def test_healthz_reports_redis_down(app, client):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app.config["REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    app.extensions.pop("redis", None)
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "unhealthy"
    assert body["checks"]["database"] == "ok" and body["checks"]["redis"].startswith("error")


def test_healthz_reports_the_database_down(app, client, monkeypatch):
    from sqlalchemy.orm import Session

    def broken(self, *args, **kwargs):
        raise RuntimeError("database unreachable")

    monkeypatch.setattr(Session, "execute", broken)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["checks"]["database"] == "error: RuntimeError"
