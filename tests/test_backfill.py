"""History backfill: dry run, run with backfill: true through Bulk Create, progress, cancel and resume."""
import requests
from sqlalchemy import func, select

from portal.extensions import db
from portal.sync import backfill
from portal.sync.models import BackfillRun, OutboxEvent
from tests.conftest import oauth_connect, sandbox_events, sandbox_received, sync_settled, wait_for
from tests.test_faults import place_orders


def test_estimate_follows_bulk_limits():
    assert backfill.estimate_seconds(0) == 0
    assert backfill.estimate_seconds(1000) == 0.1  # one request, 10 a second
    assert backfill.estimate_seconds(150_000) == 15.0  # 150 requests in the first minute's burst
    assert backfill.estimate_seconds(300_000) == 15.0 + 60.0  # then 150 a minute


def test_dry_run_counts_and_sends_nothing(app, client, organizer, make_event, sandbox):
    event_id = make_event(organizer)
    place_orders(app, event_id, 4)  # placed before connecting: 3 events each
    place_orders(app, event_id, 1, guest=False)  # the attendee is the purchaser: 2 events
    assert oauth_connect(client, sandbox.url).status_code == 303
    page = client.get("/manage/integrations/klaviyo/backfill", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "<html" not in page and "Dry run" in page
    with app.app_context():
        plan = backfill.plan(organizer)
    assert (plan.orders, plan.tickets, plan.attendee_events, plan.events) == (5, 5, 4, 14)
    assert (plan.already_sent, plan.to_send) == (0, 14)
    assert "Send 14 events" in page
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(OutboxEvent)) == 0


def test_backfill_sends_past_orders_once_without_flows(app, client, organizer, make_event, sandbox, start_worker):
    event_id = make_event(organizer)
    past = place_orders(app, event_id, 30)  # 90 events, before connecting
    assert oauth_connect(client, sandbox.url).status_code == 303
    live = place_orders(app, event_id, 1)  # placed while connected: sent live, not again
    start_worker()
    # Until the worker has recorded the live events as sent, a dry run counts them as still to send.
    wait_for(lambda: sync_settled(app), message="the live order to be sent")
    assert sandbox_received(sandbox.url) == dict.fromkeys(live, 1)
    response = client.post_form("/manage/integrations/klaviyo/backfill")
    assert response.status_code == 303

    def run_complete():
        with app.app_context():  # a fresh session each poll, so it sees the worker's commits
            return backfill.progress(backfill.current_run(organizer))["complete"]

    wait_for(lambda: run_complete() and sync_settled(app), timeout=30, message="the run to complete")
    assert sandbox_received(sandbox.url) == dict.fromkeys(past | live, 1)  # each sent once, the live ones not again
    events = sandbox_events(sandbox.url)
    assert all(e["backfill"] for e in events if e["unique_id"] in past)
    assert not any(e["backfill"] for e in events if e["unique_id"] in live)
    log = requests.get(f"{sandbox.url}/_sandbox/requests", params={"since": 0}, timeout=5).json()["requests"]
    assert any(entry["path"] == "/api/event-bulk-create-jobs" for entry in log)
    with app.app_context():
        progress = backfill.progress(backfill.current_run(organizer))
        assert progress["sent"] == 90 and progress["percent"] == 100
    page = client.get("/manage/integrations/klaviyo/backfill/progress", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert "90 of 90 events accepted" in page and "hx-trigger" not in page
    # A second dry run finds nothing left to send.
    with app.app_context():
        assert backfill.plan(organizer).to_send == 0


def test_cancel_and_resume(app, client, organizer, make_event, sandbox, start_worker, monkeypatch):
    monkeypatch.setattr(backfill, "CHUNK_ORDERS", 20)  # in this process; the worker keeps its own size
    event_id = make_event(organizer)
    past = place_orders(app, event_id, 60)  # 180 events
    assert oauth_connect(client, sandbox.url).status_code == 303
    assert client.post_form("/manage/integrations/klaviyo/backfill").status_code == 303
    with app.app_context():
        from portal.sync.queue import queue

        queue().empty()  # no worker yet: queue one chunk by hand, then stop the run
        queue().connection.delete(f"portal:deliver-queued:{organizer}")
        run_id = backfill.current_run(organizer).id
        assert backfill.queue_next_chunk(run_id)
    response = client.post_form(f"/manage/integrations/klaviyo/backfill/{run_id}/cancel")
    assert response.status_code == 303
    with app.app_context():
        counts = dict(db.session.execute(select(OutboxEvent.status, func.count()).group_by(OutboxEvent.status)).all())
        assert counts == {"cancelled": 60}
        run = db.session.get(BackfillRun, run_id)
        assert (run.status, run.processed_orders) == ("cancelled", 20)
        assert not backfill.queue_next_chunk(run_id)  # a stopped run queues nothing more
    page = client.get("/manage/integrations/klaviyo").get_data(as_text=True)
    assert "Stopped" in page and "Resume" in page
    start_worker()
    response = client.post_form(f"/manage/integrations/klaviyo/backfill/{run_id}/resume")
    assert response.status_code == 303
    wait_for(lambda: len(sandbox_events(sandbox.url)) == len(past) and sync_settled(app), timeout=60,
             message="every past event, and nothing left to send")
    assert sandbox_received(sandbox.url) == dict.fromkeys(past, 1)
    with app.app_context():
        run = db.session.get(BackfillRun, run_id)
        assert run.processed_orders == 60 and run.status == "done"


def test_another_organizers_run_is_404(app, client, organizer, make_organizer, login, sandbox):
    other = make_organizer(email="other@organizer.example")
    with app.app_context():
        run = BackfillRun(organizer_id=other, status="cancelled")
        db.session.add(run)
        db.session.commit()
        run_id = run.id
    assert oauth_connect(client, sandbox.url).status_code == 303
    for action in ("cancel", "resume"):
        assert client.post_form(f"/manage/integrations/klaviyo/backfill/{run_id}/{action}").status_code == 404


def test_backfill_sends_past_cancellations_and_refunds(app, client, organizer, make_event, sandbox, start_worker):
    """An order refunded and another cancelled before connecting reach Klaviyo as past events too."""
    from portal.orders import lifecycle
    from portal.orders.models import Order

    event_id = make_event(organizer)
    place_orders(app, event_id, 2)
    with app.app_context():
        first, second = db.session.scalars(select(Order).order_by(Order.id)).all()
        lifecycle.refund_order(first, ticket_ids=[], amount=10, include_fees=False, reason="Goodwill", by="Ada")
        lifecycle.cancel_order(db.session.get(Order, second.id), refund=True, include_fees=True, reason="Ill",
                               by="Ada")
        first_id, second_id = first.id, second.id
    assert oauth_connect(client, sandbox.url).status_code == 303
    with app.app_context():
        plan = backfill.plan(organizer)
    assert (plan.lifecycle_events, plan.events) == (3, 9)  # 2 refunds and 1 cancellation, on top of 2 × 3
    start_worker()
    assert client.post_form("/manage/integrations/klaviyo/backfill").status_code == 303
    wait_for(lambda: len(sandbox_events(sandbox.url)) == 9 and sync_settled(app), timeout=30,
             message="the past orders and their history, and nothing left to send")
    received = sandbox_received(sandbox.url)
    assert len(received) == 9 and set(received.values()) == {1}, received  # each sent exactly once
    events = {e["unique_id"]: e for e in sandbox_events(sandbox.url)}
    assert all(e["backfill"] for e in events.values())
    assert events[f"cancel_{second_id}"]["properties"]["Reason"] == "Ill"
    refunds = sorted(e["properties"]["RefundedAmount"] for e in events.values() if e["metric"] == "Refunded Order")
    assert refunds == [10, 80]
    assert all(e["properties"]["OrderId"] in (str(first_id), str(second_id)) for e in events.values())
