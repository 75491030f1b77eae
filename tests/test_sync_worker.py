"""A purchase reaches the Klaviyo sandbox through a real rq worker process on a real Redis."""

from portal.events.models import Event
from portal.extensions import db
from tests.conftest import sandbox_events, sandbox_received, sync_settled, wait_for


def buy(client, app, event_id, lines, purchaser=None, preview=False, kind="e"):
    """Check out through the real form. `lines` is a list of (ticket type index, attendee dict or 'same')."""
    with app.app_context():
        event = db.session.get(Event, event_id)
        types = [t.id for t in event.ticket_types]
        public_id = event.public_id
    form = {"first_name": "Pat", "last_name": "Buyer", "email": "pat@buyer.example", "phone": "+1 212 555 0100"}
    form.update(purchaser or {})
    for index, _ in lines:
        key = f"qty-{types[index]}"
        form[key] = str(int(form.get(key, 0)) + 1)
    # Attendee fields are numbered in ticket-type order, as the form renders them.
    ordered = sorted(enumerate(lines), key=lambda item: (item[1][0], item[0]))
    for position, (_, (_, attendee)) in enumerate(ordered):
        if attendee == "same":
            form[f"attendee-{position}-same"] = "1"
        else:
            for field, value in attendee.items():
                form[f"attendee-{position}-{field}"] = value
    url = f"/{kind}/{public_id}/checkout" + ("?preview=1" if preview else "")
    return client.post_form(url, form)


def test_three_ticket_order_reaches_sandbox_exactly_once(client, app, connected, make_event, sandbox, start_worker):
    event_id = make_event(connected)
    second = {"first_name": "Sam", "last_name": "Guest", "email": "sam@guest.example"}
    response = buy(client, app, event_id, [(0, "same"), (0, second), (1, {**second, "email": "SAM@Guest.example"})])
    assert response.status_code == 303, response.get_data(as_text=True)[:2000]
    start_worker()
    wait_for(lambda: len(sandbox_events(sandbox.url)) >= 5 and sync_settled(app),
             message="5 events in the sandbox and nothing left to send")
    events = sandbox_events(sandbox.url)
    sent = sandbox_received(sandbox.url)
    assert len(sent) == 5 and set(sent.values()) == {1}, sent
    metrics = sorted(e["metric"] for e in events)
    assert metrics == ["Ordered Experience"] * 3 + ["Placed Order", "Registered Attendee"]
    attendee = next(e for e in events if e["metric"] == "Registered Attendee")
    assert attendee["profile"]["email"] == "sam@guest.example"
    # Running the job again sends nothing new.
    from portal.sync.jobs import deliver
    from portal.sync.queue import queue
    with app.app_context():
        from portal.sync.outbox import organizers_with_due_rows
        assert organizers_with_due_rows() == []
        job = queue().enqueue(deliver, connected)
    wait_for(lambda: job.get_status(refresh=True) == "finished", message="the job to run again")
    assert job.return_value() == 0  # it accepted nothing
    wait_for(lambda: sync_settled(app), message="nothing left to send")
    assert sandbox_received(sandbox.url) == sent
