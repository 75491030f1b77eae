"""Marketing consent becomes a Klaviyo list subscription: the whole path with a real worker against the sandbox
over HTTP, from turning the feature on to Disconnect, with the proof each order keeps."""
import re
from datetime import datetime, timezone

from sqlalchemy import select

from portal.consent.models import OrderConsent
from portal.consent.service import ConsentInput
from portal.events.models import Event
from portal.extensions import db
from portal.orders.models import Order
from portal.orders.service import AttendeeInput, OrderInput, place_order
from portal.sync.models import CANCELLED, HELD, SENT, SUBSCRIPTION, KlaviyoConnection, OutboxEvent
from portal.sync.subscriptions import HELD_NO_LIST, HELD_PERMISSION
from tests.conftest import oauth_connect, sandbox_events, sync_settled, wait_for
from tests.test_sync_worker import buy

SETTINGS = "/manage/integrations/klaviyo/subscriptions/"
PAST = datetime(2025, 11, 2, 10, 0, tzinfo=timezone.utc)


def subscribers(sandbox, list_id: str) -> list[dict]:
    return next(item for item in sandbox.lists() if item["id"] == list_id)["subscribers"]


def subscription_rows(app, organizer_id: int) -> list[tuple]:
    with app.app_context():
        return list(db.session.execute(select(OutboxEvent.order_id, OutboxEvent.status, OutboxEvent.status_detail)
                                       .where(OutboxEvent.organizer_id == organizer_id,
                                              OutboxEvent.kind == SUBSCRIPTION).order_by(OutboxEvent.id)))


def place_past_order(app, event_id: int) -> int:
    """An order from before the portal was connected, whose purchaser agreed to marketing back then."""
    with app.app_context():
        event = db.session.get(Event, event_id)
        order = place_order(event, OrderInput(
            first_name="Old", last_name="Buyer", email="old@buyer.example", phone=None, placed_at=PAST,
            lines=[(event.ticket_types[0], AttendeeInput("Old", "Buyer", "old@buyer.example"))],
            consent=ConsentInput(email=True, channel="event_page", language="en", email_version=0, consented_at=PAST)))
        return order.id


def test_consent_to_one_list_subscription_with_a_real_worker(app, client, organizer, make_event, sandbox,
                                                             start_worker):
    event_id = make_event(organizer)
    past_order = place_past_order(app, event_id)
    assert oauth_connect(client, sandbox.url).status_code == 303
    worker = start_worker()

    # 1. Turn it on: the checkout shows an unticked box, and Klaviyo must be asked for more.
    assert client.post_form(SETTINGS, {"enabled": "1"}).status_code == 303
    card = client.get("/manage/integrations/").get_data(as_text=True)
    assert "Klaviyo needs one more permission for list subscriptions." in card
    with app.app_context():
        public_id = db.session.get(Event, event_id).public_id
    checkout = client.get(f"/e/{public_id}").get_data(as_text=True)
    box = re.search(r'<input type="checkbox" name="marketing_email"[^>]*>', checkout).group(0)
    assert "checked" not in box
    assert "Send me news about upcoming events from Ada Events" in checkout

    # A purchase now: its events go, its subscription is held (not dropped) for the missing permission.
    guest = {"first_name": "Sam", "last_name": "Guest", "email": "sam@guest.example"}
    assert buy(client, app, event_id, [(0, "same"), (0, guest)], {"marketing_email": "1"}).status_code == 303
    wait_for(lambda: [row[1:] for row in subscription_rows(app, organizer)] == [(HELD, HELD_PERMISSION)],
             message="the subscription held for the permission")
    wait_for(lambda: any(e["metric"] == "Placed Order" for e in sandbox_events(sandbox.url)),
             message="the order's events, which do not wait")

    # 2. Reconnect with the added scopes: the subscription waits for a list now; then choose one.
    assert oauth_connect(client, sandbox.url).status_code == 303
    with app.app_context():
        scopes = db.session.scalar(select(KlaviyoConnection.scope).where(KlaviyoConnection.organizer_id == organizer))
    assert {"lists:read", "lists:write", "profiles:write", "subscriptions:write"} <= set(scopes.split())
    wait_for(lambda: [row[1:] for row in subscription_rows(app, organizer)] == [(HELD, HELD_NO_LIST)],
             message="the subscription waiting for a list")
    assert "Choose the Klaviyo list consenting buyers are subscribed to" in client.get("/manage/integrations/").get_data(
        as_text=True)
    newsletter = next(item for item in sandbox.lists() if item["name"] == "Newsletter")
    page = client.get(SETTINGS).get_data(as_text=True)
    assert f'<option value="{newsletter["id"]}"' in page
    assert client.post_form(SETTINGS + "list", {"action": "choose", "list_id": newsletter["id"]}).status_code == 303

    # 3. A second purchase, box left empty.
    assert buy(client, app, event_id, [(0, "same")], {"email": "kim@new.example", "first_name": "Kim"}).status_code == 303

    # 4. Exactly one subscription reaches the list: the purchaser who ticked, with the consent's source and time.
    wait_for(lambda: subscribers(sandbox, newsletter["id"]) and sync_settled(app), message="the subscription")
    (subscriber,) = subscribers(sandbox, newsletter["id"])
    assert subscriber["email"] == "pat@buyer.example" and subscriber["channels"] == ["email"]
    assert subscriber["custom_source"] == "Ticket checkout (Event Page)" and not subscriber["historical_import"]
    with app.app_context():
        order = db.session.scalar(select(Order).where(Order.email == "pat@buyer.example"))
        proof = order.consent
        assert proof.email_marketing and proof.email_version == 0 and proof.channel == "event_page"
        assert proof.language == "en" and proof.email_text == "Send me news about upcoming events from Ada Events"
        assert db.session.scalar(select(OrderConsent).where(OrderConsent.order_id != order.id,
                                                            OrderConsent.email_marketing.is_(True),
                                                            OrderConsent.order_id != past_order)) is None
        order_id = order.id
    received = datetime.fromisoformat(subscriber["consented_at_shown"])
    assert abs((received - proof.consented_at).total_seconds()) < 60
    detail = client.get(f"/manage/orders/{order_id}").get_data(as_text=True)
    assert "Marketing consent" in detail and "wording version 0" in detail and "List subscription" in detail

    # 5. A backfill subscribes the older consenting order, historically and with its original time.
    assert client.post_form("/manage/integrations/klaviyo/backfill").status_code == 303
    wait_for(lambda: len(subscribers(sandbox, newsletter["id"])) == 2 and sync_settled(app), timeout=30,
             message="the past subscription")
    old = next(s for s in subscribers(sandbox, newsletter["id"]) if s["email"] == "old@buyer.example")
    assert old["historical_import"] is True and old["consented_at"] == "2025-11-02T10:00:00Z"
    assert [s["times_received"] for s in subscribers(sandbox, newsletter["id"])] == [1, 1]  # none twice

    # 6. Disconnect stops subscriptions too: one waiting to go is cancelled and never reaches Klaviyo.
    worker.stop()
    assert buy(client, app, event_id, [(0, "same")], {"email": "lee@friend.example", "marketing_email": "1"}
               ).status_code == 303
    assert client.post_form("/manage/integrations/klaviyo/disconnect").status_code == 303
    start_worker()
    wait_for(lambda: sync_settled(app), message="nothing left to send")
    rows = subscription_rows(app, organizer)
    assert [status for _, status, _ in rows] == [SENT, SENT, CANCELLED]
    assert all(s["email"] != "lee@friend.example" for s in subscribers(sandbox, newsletter["id"]))


def enable_subscriptions(client, app, sandbox, list_name="Newsletter") -> str:
    """Turn list subscriptions on, reconnect for the added scopes and choose a list; returns the list's id."""
    assert client.post_form(SETTINGS, {"enabled": "1"}).status_code == 303
    assert oauth_connect(client, sandbox.url).status_code == 303
    chosen = next(item for item in sandbox.lists() if item["name"] == list_name)
    assert client.post_form(SETTINGS + "list", {"action": "choose", "list_id": chosen["id"]}).status_code == 303
    return chosen["id"]
