"""An order's whole life reaches Klaviyo: refunds, transfers, cancellations and a live event that moves, each
through the order page, the outbox and a real worker, into the sandbox over HTTP, exactly once."""
import re
from datetime import timedelta

import pytest
import requests
from sqlalchemy import func, select

from portal.events.models import Event, TicketType
from portal.extensions import db
from portal.orders.models import Order, Refund, Ticket
from portal.sync.models import OutboxEvent
from portal.types import utcnow
from tests.conftest import oauth_connect, sandbox_events, sandbox_received, sync_settled, wait_for
from tests.test_sync_worker import buy

PAT = {"first_name": "Pat", "last_name": "Buyer", "email": "pat@buyer.example"}
SAM = {"first_name": "Sam", "last_name": "Guest", "email": "sam@guest.example"}
LEE = {"first_name": "Lee", "last_name": "Friend", "email": "lee@friend.example"}
KIM = {"first_name": "Kim", "last_name": "New", "email": "kim@new.example"}


def upcoming(app, event_id, days=30):
    """Move the event into the future, so its holders have it as their next event."""
    with app.app_context():
        event = db.session.get(Event, event_id)
        event.starts_at = utcnow().replace(microsecond=0) + timedelta(days=days)
        event.ends_at = event.starts_at + timedelta(hours=4)
        db.session.commit()
        return event.starts_at.strftime("%Y-%m-%dT%H:%M:%SZ")


def settle(app, sandbox, count):
    wait_for(lambda: len(sandbox_events(sandbox.url)) >= count and sync_settled(app),
             message=f"{count} events in the sandbox and nothing left to send")
    received = sandbox_received(sandbox.url)
    assert len(received) == count and set(received.values()) == {1}, received  # each sent exactly once
    return sandbox_events(sandbox.url)


def latest_profile(events, email):
    """The NextEvent properties the last event for this person set: (name, start) or None when unset.
    The sandbox lists the newest event first."""
    mine = [e["profile"] for e in events if e["profile"]["email"] == email and ("properties" in e["profile"]
                                                                                or "meta" in e["profile"])]
    assert mine, f"no event for {email}"
    profile = mine[0]
    if profile.get("meta", {}).get("patch_properties", {}).get("unset"):
        assert profile["meta"]["patch_properties"]["unset"] == ["NextEventName", "NextEventStartAt"]
        return None
    properties = profile["properties"]
    return properties["NextEventName"], properties["NextEventStartAt"]


def only(events, metric, email=None):
    found = [e for e in events if e["metric"] == metric and (email is None or e["profile"]["email"] == email)]
    assert len(found) == 1, (metric, email, found)
    return found[0]


def order_and_tickets(app):
    with app.app_context():
        order = db.session.scalar(select(Order).order_by(Order.id.desc()))
        return order.id, [(t.id, t.attendee.email) for t in order.tickets]


def test_refund_transfer_cancel_reach_klaviyo_once_each(client, app, connected, make_event, sandbox, start_worker):
    event_id = make_event(connected)
    start = upcoming(app, event_id)
    start_worker()
    response = buy(client, app, event_id, [(0, "same"), (0, SAM), (0, SAM), (1, LEE)])
    assert response.status_code == 303
    order_id, tickets = order_and_tickets(app)
    events = settle(app, sandbox, 7)  # Placed Order, 4 × Ordered Experience, Registered Attendee for Sam and Lee
    name = "Summer Music Festival 2026"
    for email in ("pat@buyer.example", "sam@guest.example", "lee@friend.example"):
        assert latest_profile(events, email) == (name, start)

    # 1. Refund Lee's VIP ticket, fees included.
    lee_ticket = next(tid for tid, email in tickets if email == "lee@friend.example")
    page = client.get(f"/manage/orders/{order_id}/refund").get_data(as_text=True)
    key = re.search(r'name="request_key" value="([0-9a-f]{32})"', page).group(1)
    form = {"ticket": [lee_ticket], "include_fees": "1", "reason": "Cannot come", "request_key": key}
    assert client.post_form(f"/manage/orders/{order_id}/refund", form).status_code == 303
    again = client.post_form(f"/manage/orders/{order_id}/refund", form)  # a double click
    assert again.status_code == 303
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Refund)) == 1
        order = db.session.get(Order, order_id)
        assert (order.status, str(order.refunded_total)) == ("partly_refunded", "160.00")
        assert db.session.scalar(select(TicketType.sold).where(TicketType.name == "VIP")) == 0  # the place is back
    events = settle(app, sandbox, 9)
    refunded = only(events, "Refunded Order")
    assert refunded["unique_id"].startswith("refund_") and refunded["value"] == 160
    properties = refunded["properties"]
    assert (properties["OrderId"], properties["RefundedAmount"], properties["IsFullRefund"], properties["Reason"],
            properties["Currency"]) == (str(order_id), 160, False, "Cannot come", "USD")
    assert [item["ProductID"] for item in properties["Items"]] == [lee_ticket]
    assert properties["EventStartAt"] == start
    lost = only(events, "Cancelled Registration", "lee@friend.example")
    assert lost["properties"]["Reason"] == "refunded"
    assert latest_profile(events, "lee@friend.example") is None  # Lee's reminder stops
    assert latest_profile(events, "pat@buyer.example") == (name, start)

    # 2. Transfer one of Sam's tickets to Kim: Kim is registered, Sam still holds the other one.
    sam_ticket = next(tid for tid, email in tickets if email == "sam@guest.example")
    assert client.post_form(f"/manage/orders/{order_id}/tickets/{sam_ticket}/transfer",
                            {**KIM, "reason": "Gift"}).status_code == 303
    events = settle(app, sandbox, 10)
    kim = only(events, "Registered Attendee", "kim@new.example")
    assert kim["unique_id"] != only(events, "Registered Attendee", "sam@guest.example")["unique_id"]
    assert latest_profile(events, "kim@new.example") == (name, start)
    assert [e for e in events if e["metric"] == "Cancelled Registration" and e["profile"]["email"] == "sam@guest.example"] == []

    # 3. Cancel the rest of the order, without a refund.
    assert client.post_form(f"/manage/orders/{order_id}/cancel", {"reason": "Event full of doubts"}).status_code == 303
    assert client.post_form(f"/manage/orders/{order_id}/cancel", {"reason": "again"}).status_code == 303  # no-op
    events = settle(app, sandbox, 13)  # Cancelled Order, Cancelled Registration for Sam and Kim
    cancelled = only(events, "Cancelled Order")
    assert cancelled["unique_id"] == f"cancel_{order_id}"
    assert cancelled["properties"]["Reason"] == "Event full of doubts" and len(cancelled["properties"]["Items"]) == 4
    assert cancelled["value"] == 400  # the order's value: 3 × (75 + 5) + 150 + 10
    for email in ("sam@guest.example", "kim@new.example"):
        assert only(events, "Cancelled Registration", email)["properties"]["Reason"] == "cancelled"
    for email in ("pat@buyer.example", "sam@guest.example", "lee@friend.example", "kim@new.example"):
        assert latest_profile(events, email) is None
    with app.app_context():
        order = db.session.get(Order, order_id)
        assert order.status == "cancelled" and {t.status for t in order.tickets} == {"cancelled", "refunded"}
        assert sum(db.session.scalars(select(TicketType.sold))) == 0
    page = client.get(f"/manage/orders/{order_id}").get_data(as_text=True)
    assert "Cancelled" in page and "Cannot come" in page and "Gift" in page and "Cancel order" not in page


def test_a_live_event_that_moves_tells_each_holder_once(client, app, connected, make_event, sandbox, start_worker):
    event_id = make_event(connected)
    upcoming(app, event_id)
    start_worker()
    assert buy(client, app, event_id, [(0, "same"), (0, SAM)]).status_code == 303
    assert buy(client, app, event_id, [(1, LEE)], purchaser=LEE).status_code == 303
    order_id, tickets = order_and_tickets(app)
    settle(app, sandbox, 6)  # 2 Placed Order, 3 Ordered Experience, 1 Registered Attendee (Sam)
    with app.app_context():
        event = db.session.get(Event, event_id)
        local = event.starts_at.astimezone(__import__("zoneinfo").ZoneInfo(event.timezone))
        form = {"name": "Summer Music Festival 2026 (moved)", "venue": "Prospect Park, Brooklyn", "timezone": event.timezone,
                "currency": event.currency, "description": "",
                "starts_at": (local + timedelta(days=7)).strftime("%Y-%m-%dT%H:%M"),
                "ends_at": (local + timedelta(days=7, hours=4)).strftime("%Y-%m-%dT%H:%M")}
    asked = client.post_form(f"/manage/events/{event_id}/edit", form)
    assert asked.status_code == 200 and "tells 3 people" in asked.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(Event, event_id).venue == "Central Park, New York"  # nothing saved yet
    assert client.post_form(f"/manage/events/{event_id}/edit", {**form, "confirm_change": "1"}).status_code == 303
    events = settle(app, sandbox, 9)
    with app.app_context():
        new_start = db.session.get(Event, event_id).starts_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    for email in ("pat@buyer.example", "sam@guest.example", "lee@friend.example"):
        changed = only(events, "Event Changed", email)
        assert changed["properties"]["VenueName"] == "Prospect Park, Brooklyn"
        assert changed["properties"]["EventName"] == "Summer Music Festival 2026 (moved)"  # renamed in the same save
        assert changed["properties"]["PreviousVenueName"] == "Central Park, New York"
        assert changed["properties"]["EventStartAt"] == new_start
        assert changed["properties"]["ChangedFields"] == ["EventStartAt", "EventEndAt", "VenueName"]
        assert latest_profile(events, email)[1] == new_start
        assert email not in changed["unique_id"]


def test_a_refund_waits_while_klaviyo_needs_reconnecting(client, app, connected, make_event, sandbox, start_worker):
    event_id = make_event(connected)
    start_worker()
    assert buy(client, app, event_id, [(0, "same")]).status_code == 303
    settle(app, sandbox, 2)
    order_id, _ = order_and_tickets(app)
    requests.post(f"{sandbox.url}/_sandbox/uninstall", json={}, timeout=5).raise_for_status()  # in Klaviyo
    assert client.post_form(f"/manage/orders/{order_id}/refund",
                            {"amount": "10.00", "reason": "Goodwill"}).status_code == 303

    def held():
        from portal.sync.connection import connection_for

        with app.app_context():
            status = db.session.scalar(select(OutboxEvent.status).where(OutboxEvent.metric == "Refunded Order"))
            return connection_for(connected).status == "needs_reconnect" and status == "held"

    wait_for(held, message="the worker to find the connection gone and hold the refund")
    assert len(sandbox_received(sandbox.url)) == 2
    assert oauth_connect(client, sandbox.url).status_code == 303
    events = settle(app, sandbox, 3)
    assert only(events, "Refunded Order")["properties"]["RefundedAmount"] == 10

    assert client.post_form("/manage/integrations/klaviyo/disconnect").status_code == 303
    assert client.post_form(f"/manage/orders/{order_id}/cancel", {"reason": "Too late"}).status_code == 303
    wait_for(lambda: sync_settled(app), message="nothing left to send")
    assert len(sandbox_received(sandbox.url)) == 3  # nothing after Disconnect
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(OutboxEvent)
                                 .where(OutboxEvent.metric == "Cancelled Order")) == 0


@pytest.mark.parametrize("form, field, message", [
    ({"amount": "1000.00", "reason": "x"}, "amount", "At most USD 80.00 can be refunded"),
    ({"amount": "-5", "reason": "x"}, "amount", "Enter an amount like 25.00"),
    ({"amount": "abc", "reason": "x"}, "amount", "Enter an amount like 25.00"),
    ({"amount": "10"}, "reason", "Say why"),
    ({"reason": "x"}, "ticket", "Choose the tickets to refund"),
    ({"ticket": ["not-a-ticket"], "reason": "x"}, "ticket", "not in this order"),
])
def test_bad_refunds_are_refused_next_to_the_field(client, app, organizer, make_event, form, field, message):
    event_id = make_event(organizer)
    assert buy(client, app, event_id, [(0, "same")]).status_code == 303
    order_id, _ = order_and_tickets(app)
    response = client.post_form(f"/manage/orders/{order_id}/refund", form)
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert f'id="{field}-error"' in page and message in page
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Refund)) == 0
        assert db.session.get(Order, order_id).refunded_total == 0


def test_a_refunded_ticket_cannot_be_refunded_again(client, app, organizer, make_event):
    event_id = make_event(organizer)
    assert buy(client, app, event_id, [(0, "same"), (0, SAM)]).status_code == 303
    order_id, tickets = order_and_tickets(app)
    form = {"ticket": [tickets[1][0]], "reason": "x"}
    assert client.post_form(f"/manage/orders/{order_id}/refund", form).status_code == 303
    second = client.post_form(f"/manage/orders/{order_id}/refund", form)  # a new form, same ticket
    assert second.status_code == 409 and "already refunded" in second.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Refund)) == 1


def test_transfer_to_an_invalid_e_mail_changes_nothing(client, app, organizer, make_event):
    event_id = make_event(organizer)
    assert buy(client, app, event_id, [(0, SAM)]).status_code == 303
    order_id, tickets = order_and_tickets(app)
    response = client.post_form(f"/manage/orders/{order_id}/tickets/{tickets[0][0]}/transfer",
                                {**KIM, "email": "kim at new", "reason": "Gift"})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert 'id="email-error"' in page and "valid e-mail" in page and 'value="kim at new"' in page
    with app.app_context():
        assert db.session.get(Ticket, tickets[0][0]).attendee.email == "sam@guest.example"


def test_another_organizers_order_actions_are_404(client, app, make_organizer, make_event, login):
    other = make_organizer("bo@organizer.example", "Bo Events")
    event_id = make_event(other)
    login(email="bo@organizer.example")
    assert buy(client, app, event_id, [(0, "same")]).status_code == 303
    order_id, tickets = order_and_tickets(app)
    client.post_form("/auth/logout")
    make_organizer()
    login()
    for url in (f"/manage/orders/{order_id}/refund", f"/manage/orders/{order_id}/cancel",
                f"/manage/orders/{order_id}/tickets/{tickets[0][0]}/transfer", f"/manage/events/{event_id}/cancel"):
        assert client.get(url).status_code == 404
        assert client.post_form(url, {"reason": "x", "amount": "1"}).status_code == 404
    with app.app_context():
        assert db.session.get(Order, order_id).status == "paid"
