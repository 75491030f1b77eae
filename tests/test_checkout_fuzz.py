"""Checkout under hostile input: hypothesis-generated fields never crash it, never store half an order,
and two buyers racing for the last ticket never both get it."""
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from portal.events.models import Event, TicketType
from portal.extensions import db
from portal.orders.models import Attendee, Order, Ticket

weird_text = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(categories=["Cc", "Zs", "So", "Lo"]), max_size=30),
    st.just("x" * 5000),
    st.sampled_from(["<script>alert(1)</script>", "{{7*7}}", "Ада", "名前", "O'Brien", " ", "\x00", "\u202e"]),
)
emails = st.one_of(weird_text, st.sampled_from(["a@b.example", "no-at-sign", "a@", "@b.c", "x@y.z" * 40,
                                                "ok@festival.example"]))
phones = st.one_of(weird_text, st.sampled_from(["+1 212 555 0100", "555", "+999999999999", "0", ""]))
quantities = st.one_of(st.integers(-5, 30).map(str), st.sampled_from(["", "1.5", "1e3", "-0", "٣", "99999999"]), weird_text)


def counts(app):
    with app.app_context():
        return tuple(db.session.scalar(select(func.count()).select_from(m)) for m in (Order, Ticket, Attendee))


@pytest.fixture
def shop(app, make_organizer, make_event):
    organizer_id = make_organizer()
    event_id = make_event(organizer_id, capacity=5)
    with app.app_context():
        event = db.session.get(Event, event_id)
        return event.public_id, [t.id for t in event.ticket_types]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_hostile_checkout_input_is_answered_and_never_half_stored(app, client, shop, data):
    public_id, type_ids = shop
    # Start from a good form and spoil a random selection of its fields (sometimes none).
    form = {
        "first_name": "Pat", "last_name": "Buyer", "email": "pat@buyers.example", "phone": "",
        f"qty-{type_ids[0]}": "2", "discount_code": "",
        "attendee-0-same": "1", "attendee-1-first_name": "Sam", "attendee-1-last_name": "Guest",
        "attendee-1-email": "sam@guests.example",
    }
    hostile = {
        "first_name": weird_text, "last_name": weird_text, "email": emails, "phone": phones,
        f"qty-{type_ids[0]}": quantities, "discount_code": weird_text,
        "attendee-1-first_name": weird_text, "attendee-1-last_name": weird_text, "attendee-1-email": emails,
        "attendee-1-phone": phones, f"qty-{type_ids[1]}": quantities,
    }
    for field in data.draw(st.lists(st.sampled_from(sorted(hostile)), unique=True, max_size=5)):
        form[field] = data.draw(hostile[field])
    if data.draw(st.booleans()):
        form.pop("attendee-0-same")
    if data.draw(st.integers(0, 9)) == 0:
        form["qty-999999"] = "1"
    before = counts(app)
    response = client.post_form(f"/e/{public_id}/checkout", form)
    after = counts(app)
    assert response.status_code in (303, 400, 409, 413, 422), response.status_code
    if response.status_code == 303:
        orders, tickets, attendees = (a - b for a, b in zip(after, before))
        assert orders == 1 and tickets == attendees >= 1
    else:
        assert after == before
        body = response.get_data(as_text=True)
        assert "error-text" in body or "flash error" in body or response.status_code == 413
        assert "<script>alert(1)</script>" not in body


def test_two_buyers_race_for_the_last_ticket(app, make_organizer, make_event):
    """Both submit at once for the only ticket left: exactly one gets it."""
    from portal.orders.service import AttendeeInput, OrderInput, SoldOut, place_order

    event_id = make_event(make_organizer(), capacity=1)
    results = []
    barrier = threading.Barrier(2)

    def buy(n):
        with app.app_context():
            event = db.session.get(Event, event_id)
            ticket_type = event.ticket_types[0]
            barrier.wait()
            try:
                place_order(event, OrderInput(first_name="B", last_name=str(n), email=f"b{n}@buyers.example",
                                              phone=None, lines=[(ticket_type, AttendeeInput("B", str(n)))]))
                results.append("ok")
            except SoldOut:
                results.append("sold out")
            finally:
                db.session.remove()

    threads = [threading.Thread(target=buy, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(results) == ["ok", "sold out"]
    with app.app_context():
        assert db.session.get(TicketType, db.session.get(Event, event_id).ticket_types[0].id).sold == 1
        assert db.session.scalar(select(func.count()).select_from(Order)) == 1
