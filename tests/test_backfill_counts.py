"""Honest backfill counts (issue 16): "already in Klaviyo" counts only what Klaviyo kept (sent, and not to a test
address it drops), and a run's progress counts what it really sent, and says what it skipped and why."""
import html
import re

from sqlalchemy import select, update

from portal.events.models import Event
from portal.extensions import db
from portal.orders.service import AttendeeInput, OrderInput, place_order
from portal.sync import backfill
from portal.sync.models import OutboxEvent
from tests.conftest import oauth_connect

HX = {"HX-Request": "true"}


def order(app, event_id, guest_email: str) -> int:
    """One order of two tickets, the purchaser's and a guest's: 4 events (Placed Order, 2 Ordered Experience and the
    guest's Registered Attendee)."""
    with app.app_context():
        event = db.session.get(Event, event_id)
        ticket_type = event.ticket_types[0]
        placed = place_order(event, OrderInput(
            first_name="Pat", last_name="Buyer", email="pat@buyer.example", phone=None,
            lines=[(ticket_type, AttendeeInput("Pat", "Buyer", "pat@buyer.example")),
                   (ticket_type, AttendeeInput("Guest", "One", guest_email))]))
        return placed.id


def deliver(app, organizer_id) -> int:
    from portal.sync import jobs

    with app.app_context():
        return jobs.deliver(organizer_id)


def text(page: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def test_counts_say_what_klaviyo_kept_and_what_a_run_really_sent(app, client, organizer, make_event, sandbox):
    event_id = make_event(organizer)
    before = order(app, event_id, "guest@guests.example")  # placed before connecting: nothing sent yet
    assert oauth_connect(client, sandbox.url).status_code == 303
    order(app, event_id, "lee@example.com")  # Klaviyo accepts its Registered Attendee, then drops it
    failing = order(app, event_id, "kim@guests.example")
    assert deliver(app, organizer) == 8
    with app.app_context():
        db.session.execute(update(OutboxEvent).where(OutboxEvent.order_id == failing,
                                                     OutboxEvent.metric == "Placed Order")
                           .values(status="failed", last_error="Invalid"))
        db.session.commit()
        plan = backfill.plan(organizer)
    assert plan.events == 12  # 3 orders × 4 events
    # Kept: 3 of the dropped order's (its Registered Attendee is not) and 3 of the failing order's.
    assert (plan.already_sent, plan.dropped, plan.failed, plan.waiting) == (6, 1, 1, 0)
    assert plan.to_send == 4  # the order placed before connecting; nothing is sent twice
    page = text(client.get("/manage/integrations/klaviyo/backfill", headers=HX).get_data(as_text=True))
    assert "6 already in Klaviyo" in page and "1 sent, but dropped by Klaviyo (test addresses)" in page
    assert "1 failed earlier: retry them from their orders" in page and "Send 4 events" in page

    # Run it here, a chunk at a time, and send what it queued.
    assert client.post_form("/manage/integrations/klaviyo/backfill").status_code == 303
    with app.app_context():
        from portal.sync.queue import queue

        queue().empty()
        run_id = backfill.current_run(organizer).id
        while backfill.queue_next_chunk(run_id):
            pass
    assert deliver(app, organizer) == 4
    with app.app_context():
        progress = backfill.progress(backfill.current_run(organizer))
        sent_for = set(db.session.scalars(select(OutboxEvent.order_id).where(OutboxEvent.backfill_run_id == run_id)))
    assert sent_for == {before}
    assert (progress["sent"], progress["orders_sent"], progress["orders_skipped"]) == (4, 1, 2)
    assert progress["skipped"] == 8 and progress["skipped_why"] == {"kept": 6, "dropped": 1, "waiting": 0,
                                                                     "failed": 1}
    page = text(client.get("/manage/integrations/klaviyo/backfill/progress", headers=HX).get_data(as_text=True))
    assert "4 of 4 events accepted" in page
    assert "Orders: 1 sent, 2 with nothing new to send · 3 of 3 looked at" in page
    assert ("Skipped 8 events the outbox had already: 6 already in Klaviyo; 1 sent before but dropped by Klaviyo "
            "(test addresses; sending again would change nothing); 1 failed earlier (retry them from their orders).") in page
    with app.app_context():
        assert backfill.plan(organizer).to_send == 0


def test_a_run_that_sends_to_test_addresses_says_klaviyo_drops_them(app, client, organizer, make_event, sandbox):
    event_id = make_event(organizer)
    order(app, event_id, "sam@example.org")  # before connecting
    assert oauth_connect(client, sandbox.url).status_code == 303
    assert client.post_form("/manage/integrations/klaviyo/backfill").status_code == 303
    with app.app_context():
        from portal.sync.queue import queue

        queue().empty()
        run_id = backfill.current_run(organizer).id
        while backfill.queue_next_chunk(run_id):
            pass
    assert deliver(app, organizer) == 4
    page = text(client.get("/manage/integrations/klaviyo/backfill/progress", headers=HX).get_data(as_text=True))
    assert "4 of 4 events accepted (1 for test addresses, which Klaviyo drops)" in page
    assert "Orders: 1 sent · 1 of 1 looked at" in page and "Skipped" not in page
