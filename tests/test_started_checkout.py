"""Started Checkout for abandoned carts, against the sandbox with a real worker: the checkout form's change requests
(server-side) keep the checkout; one left unfinished gets exactly one Started Checkout after the delay (seconds
here), one that became an order gets none, and the organizer can switch it off."""
from urllib.parse import urlsplit

import pytest

from portal.events.models import Event
from portal.extensions import db
from portal.sync.checkout_models import CheckoutSession
from portal.sync.models import OutboxEvent
from tests.conftest import sandbox_events, sandbox_received, wait_for

DELAY = {"ABANDONED_CHECKOUT_MINUTES": "0.05"}  # 3 s


def ids(app, event_id):
    with app.app_context():
        event = db.session.get(Event, event_id)
        return event.public_id, [t.id for t in event.ticket_types]


def change(client, app, event_id, token, email="ana@fans-club.net", quantities=(1,), preview=False, **extra):
    """One of the checkout form's change requests, as htmx sends it (the whole form)."""
    public_id, types = ids(app, event_id)
    form = {"form_token": client.form_token(f"/e/{public_id}/checkout"), "checkout_session": token,
            "first_name": "Ana", "last_name": "Fan", "email": email, **extra}
    form.update({f"qty-{type_id}": str(n) for type_id, n in zip(types, quantities)})
    return client.post(f"/e/{public_id}/checkout/started" + ("?preview=1" if preview else ""), data=form)


def sessions(app) -> list[tuple[str, str, str]]:
    with app.app_context():
        return [(s.token, s.email, s.status) for s in db.session.scalars(db.select(CheckoutSession)
                                                                          .order_by(CheckoutSession.id))]


def started(sandbox) -> list[dict]:
    return sandbox_events(sandbox.url, "Started Checkout")


TOKEN_A, TOKEN_B = "a" * 24, "b" * 24


def test_an_abandoned_checkout_sends_exactly_one_started_checkout(client, app, connected, make_event, sandbox,
                                                                  start_worker):
    event_id = make_event(connected)
    public_id, types = ids(app, event_id)
    assert change(client, app, event_id, TOKEN_A, quantities=(1,)).status_code == 200
    assert change(client, app, event_id, TOKEN_A, quantities=(2, 1)).status_code == 200  # the buyer changes their mind
    assert sessions(app) == [(TOKEN_A, "ana@fans-club.net", "open")]
    start_worker(**DELAY)
    [event] = wait_for(lambda: started(sandbox), message="Started Checkout in Klaviyo")
    properties = event["properties"]
    assert event["unique_id"].startswith("checkout_") and event["profile"]["email"] == "ana@fans-club.net"
    assert event["value"] == 2 * (75 + 5) + (150 + 10) and event["value_currency"] == "USD"
    assert properties["Items"] == [
        {"ProductID": str(types[0]), "ProductName": "General Admission", "Quantity": 2, "ItemPrice": 75,
         "RowTotal": 150, "FeeAmount": 10},
        {"ProductID": str(types[1]), "ProductName": "VIP", "Quantity": 1, "ItemPrice": 150, "RowTotal": 150,
         "FeeAmount": 10}]
    assert (properties["EventName"], properties["VenueName"], properties["Currency"], properties["IsTest"]) == \
        ("Summer Music Festival 2026", "Central Park, New York", "USD", False)
    assert properties["EventStartAt"] == "2026-07-15T18:00:00Z"
    # The CheckoutURL opens the Event Page with the same tickets chosen again.
    url = urlsplit(properties["CheckoutURL"])
    assert url.path == f"/e/{public_id}"
    page = app.test_client().get(f"{url.path}?{url.query}").get_data(as_text=True)
    assert f'name="qty-{types[0]}" min="0"' in page and 'value="2"' in page
    assert "Ticket 3: VIP" in page  # the attendee fields for the three tickets are there too
    # Changes after it went are no new checkout, and another buyer's abandoned checkout is a checkout of its own.
    assert change(client, app, event_id, TOKEN_A, quantities=(3,)).status_code == 200
    assert change(client, app, event_id, TOKEN_B, email="bo@fans-club.net").status_code == 200
    wait_for(lambda: len(started(sandbox)) == 2, message="the second buyer's Started Checkout")
    received = sandbox_received(sandbox.url)
    assert sorted(received[e["unique_id"]] for e in started(sandbox)) == [1, 1]  # each sent exactly once
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(OutboxEvent)
                                 .where(OutboxEvent.metric == "Started Checkout")) == 2


def test_a_checkout_that_became_an_order_sends_none(client, app, connected, make_event, sandbox, start_worker):
    event_id = make_event(connected)
    public_id, types = ids(app, event_id)
    start_worker(**DELAY)
    assert change(client, app, event_id, TOKEN_A, email="ana@fans-club.net").status_code == 200
    placed = client.post_form(f"/e/{public_id}/checkout", {
        "checkout_session": TOKEN_A, "first_name": "Ana", "last_name": "Fan", "email": "ana@fans-club.net",
        f"qty-{types[0]}": "1", "attendee-0-same": "1"})
    assert placed.status_code == 303
    # The same buyer's other open checkout for this event (another tab) is done too.
    assert ("ana@fans-club.net", "completed") == sessions(app)[0][1:]
    assert change(client, app, event_id, TOKEN_B, email="bo@fans-club.net").status_code == 200  # abandoned
    wait_for(lambda: started(sandbox), message="the abandoned one's Started Checkout (the sweeper ran after the delay)")
    assert [e["profile"]["email"] for e in started(sandbox)] == ["bo@fans-club.net"]
    assert [status for _, _, status in sessions(app)] == ["completed", "sent"]


def test_a_newer_checkout_of_the_same_buyer_replaces_the_older_one(client, app, connected, make_event):
    event_id = make_event(connected)
    assert change(client, app, event_id, TOKEN_A).status_code == 200
    assert change(client, app, event_id, TOKEN_B).status_code == 200  # the page opened again
    assert [status for _, _, status in sessions(app)] == ["replaced", "open"]


def test_the_organizer_can_switch_it_off(client, app, connected, make_event):
    event_id = make_event(connected)
    assert change(client, app, event_id, TOKEN_A).status_code == 200
    off = client.post_form("/manage/integrations/klaviyo/started-checkout", {"on": "0"})
    assert off.status_code == 303
    assert [status for _, _, status in sessions(app)] == ["skipped"]  # what waited is not sent either
    assert change(client, app, event_id, TOKEN_B).status_code == 200
    assert len(sessions(app)) == 1  # nothing kept while it is off
    details = client.get("/manage/integrations/klaviyo").get_data(as_text=True)
    assert "Nothing is sent for checkouts that are left unfinished." in details and ">Turn on</button>" in details
    assert client.post_form("/manage/integrations/klaviyo/started-checkout", {"on": "1"}).status_code == 303
    assert change(client, app, event_id, TOKEN_B).status_code == 200
    assert [status for _, _, status in sessions(app)] == ["skipped", "open"]


@pytest.mark.parametrize("extra, quantities", [
    pytest.param({"email": ""}, (1,), id="no e-mail"),
    pytest.param({"email": "not an address"}, (1,), id="invalid e-mail"),
    pytest.param({}, (0,), id="no ticket"),
    pytest.param({}, (21,), id="more than an order holds"),
    pytest.param({"checkout_session": "short"}, (1,), id="no usable session id"),
    pytest.param({"qty-999999": "1"}, (0,), id="a ticket type of another event"),
])
def test_a_checkout_is_kept_only_with_a_valid_email_and_a_ticket(client, app, connected, make_event, extra,
                                                                 quantities):
    event_id = make_event(connected)
    response = change(client, app, event_id, TOKEN_A, quantities=quantities, **extra)
    assert response.status_code == 200 and response.get_data(as_text=True) == ""
    assert sessions(app) == []


def test_without_the_form_token_or_klaviyo_nothing_is_kept(client, app, organizer, make_event):
    event_id = make_event(organizer)
    public_id, types = ids(app, event_id)
    forged = client.post(f"/e/{public_id}/checkout/started", data={
        "checkout_session": TOKEN_A, "email": "ana@fans-club.net", f"qty-{types[0]}": "1"})
    assert forged.status_code == 400
    assert change(client, app, event_id, TOKEN_A).status_code == 200  # not connected to Klaviyo
    assert sessions(app) == []
    assert client.post("/e/nope/checkout/started", data={}).status_code == 404


def test_a_preview_checkout_is_a_test_and_hears_about_dropped_addresses_as_it_is_typed(client, app, connected,
                                                                                       make_event):
    event_id = make_event(connected)
    response = change(client, app, event_id, TOKEN_A, email="tess@example.com", preview=True)
    assert response.status_code == 200
    assert "Klaviyo drops events for the purchaser (tess@example.com) at @example.com" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(db.select(CheckoutSession.is_test)) is True
    attendee = change(client, app, event_id, TOKEN_A, email="ana@fans-club.net", preview=True,
                      **{"attendee-0-email": "guest@test.com"})
    assert "attendee 1 (guest@test.com) at @test.com" in attendee.get_data(as_text=True)
    # A buyer on the public Event Page is never told about it: that page is for the organizer's test purchases.
    public = change(client, app, event_id, TOKEN_B, email="tess@example.com")
    assert public.status_code == 200 and public.get_data(as_text=True) == ""
