"""The public side: Event Page, embeddable widget, checkout (validation, totals, capacity), the confirmation page by
its unguessable token, test orders from the organizer's preview, and the organizer-only sync panel."""
import html
import re
from decimal import Decimal

import pytest
from sqlalchemy import func, select, update

from portal.events.models import DiscountCode, Event, TicketType
from portal.extensions import db
from portal.orders.models import Attendee, Order, Ticket
from portal.storefront.checkout import MAX_PER_ORDER

BUYER = {"first_name": "Pat", "last_name": "Buyer", "email": "pat@buyer.example", "phone": "+1 212 555 0100"}



def info(app, event_id):
    with app.app_context():
        event = db.session.get(Event, event_id)
        return event.public_id, [t.id for t in event.ticket_types]


def order_form(types, quantities, attendees=None, **changes):
    """A checkout form. `quantities` per ticket type (in order); `attendees` per ticket: 'same' or a dict."""
    form = dict(BUYER)
    for type_id, quantity in zip(types, quantities):
        form[f"qty-{type_id}"] = str(quantity)
    total = sum(int(q) for q in quantities if str(q).isdigit())
    attendees = attendees if attendees is not None else ["same"] * total
    for position, attendee in enumerate(attendees):
        if attendee == "same":
            form[f"attendee-{position}-same"] = "1"
        else:
            for key, value in attendee.items():
                form[f"attendee-{position}-{key}"] = value
    form.update(changes)
    return form


def orders(app) -> list[Order]:
    with app.app_context():
        rows = list(db.session.scalars(select(Order).order_by(Order.id)))
        for row in rows:
            _ = [(t.attendee, t.attendee.name) for t in row.tickets]
        db.session.expunge_all()
        return rows


def sold(app) -> list[int]:
    with app.app_context():
        return list(db.session.scalars(select(TicketType.sold).order_by(TicketType.id)))


def error_for(page: str, name: str) -> str | None:
    match = re.search(rf'id="{re.escape(name)}-error">([^<]*)<', page)
    return html.unescape(match.group(1)) if match else None


def tickets_error(page: str) -> str | None:
    match = re.search(r'<div class="error-text" role="alert"[^>]*>([^<]*)</div>', page)
    return html.unescape(match.group(1)) if match else None


@pytest.fixture
def live(app, make_organizer, make_event):
    """An organizer (not logged in) with a live event: (organizer id, event id, public id, ticket type ids)."""
    organizer_id = make_organizer()
    event_id = make_event(organizer_id)
    public_id, types = info(app, event_id)
    return organizer_id, event_id, public_id, types


# --- the pages ---------------------------------------------------------------------------------------------------------

def test_event_page_and_widget_render_with_tickets(client, app, live):
    """Regression: the checkout macros once could not see `max_per_order` (imported without context): 500."""
    app.config["PROPAGATE_EXCEPTIONS"] = False
    _, _, public_id, types = live
    assert client.get(f"/e/{public_id}").status_code == 200
    assert client.get(f"/w/{public_id}").status_code == 200
    assert client.get(f"/e/{public_id}/attendees", query_string={f"qty-{types[0]}": "1"}).status_code == 200


def test_public_event_page_of_a_live_event(client, live):
    _, _, public_id, types = live
    response = client.get(f"/e/{public_id}")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "Summer Music Festival 2026" in page and "Central Park, New York" in page
    assert "General Admission" in page and "USD 75.00" in page and "USD 5.00 fee" in page
    assert f'name="qty-{types[0]}"' in page and f'name="qty-{types[1]}"' in page
    assert f'action="/e/{public_id}/checkout"' in page
    assert re.search(r'<input type="hidden" name="form_token" value="[^"]{20,}">', page)
    assert "Wed 15 Jul 2026, 2:00 PM EDT" in page  # 18:00 UTC shown in the event's zone
    assert '<nav class="tabs"' not in page


def test_unknown_event_is_404(client):
    assert client.get("/e/doesnotexist").status_code == 404
    assert client.get("/w/doesnotexist").status_code == 404


@pytest.mark.parametrize("path", ["/e/{id}", "/w/{id}", "/e/{id}?preview=1", "/w/{id}?preview=1",
                                  "/e/{id}/attendees?preview=1"])
def test_draft_is_404_to_the_public_and_to_another_organizer(client, app, make_organizer, make_event, login, path):
    owner = make_organizer()
    public_id, _ = info(app, make_event(owner, status="draft"))
    url = path.format(id=public_id)
    assert client.get(url).status_code == 404
    make_organizer(email="bo@other.example", name="Bo")
    login(email="bo@other.example")
    assert client.get(url).status_code == 404


def test_draft_preview_for_its_owner(client, app, make_organizer, make_event, login):
    owner = make_organizer()
    event_id = make_event(owner, status="draft")
    public_id, _ = info(app, event_id)
    login()
    assert client.get(f"/e/{public_id}").status_code == 404  # a draft has no public page, even for its owner
    response = client.get(f"/e/{public_id}?preview=1")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "Preview of your Event Page (draft)" in page
    assert f'action="/e/{public_id}/checkout?preview=1"' in page
    assert f'hx-post="/manage/events/{event_id}/previewed" hx-trigger="load"' in page  # step 2's beacon
    with app.app_context():
        assert db.session.get(Event, event_id).preview_opened_at is None  # the GET itself wrote nothing
    widget = client.get(f"/w/{public_id}?preview=1")
    assert widget.status_code == 200 and "Test mode" in widget.get_data(as_text=True)


def test_widget_page(client, live):
    _, _, public_id, _ = live
    response = client.get(f"/w/{public_id}")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "data-accent=\"#4f46e5\"" in page and "Get tickets" in page
    assert f'action="/w/{public_id}/checkout"' in page
    assert "Test mode" not in page
    assert '<nav class="tabs"' not in page


# --- checkout validation -------------------------------------------------------------------------------------------------

CASES = [
    # (changes to a valid one-ticket form, field with the error, message)
    ({"email": "not-an-email"}, "email", "Enter a valid e-mail address, like name@example.com."),
    ({"email": "pat@@buyer.example"}, "email", "Enter a valid e-mail address, like name@example.com."),
    ({"email": ""}, "email", "Enter an e-mail address."),
    ({"email": "p" * 90 + "@buyer.example"}, "email", "Use an e-mail address of at most 99 characters."),
    ({"first_name": ""}, "first_name", "Enter your first name."),
    ({"last_name": "   "}, "last_name", "Enter your last name."),
    ({"first_name": "x" * 101}, "first_name", "Use at most 100 characters."),
    ({"first_name": "Pat\x00"}, "first_name", "Remove the invisible control characters."),
    ({"last_name": "Buy\u2028er"}, "last_name", "Remove the invisible control characters."),
    ({"phone": "12"}, "phone", None),
    ({"phone": "not a phone"}, "phone", None),
    ({"phone": "+1 555"}, "phone", None),
    ({"phone": "1" * 31}, "phone", "That phone number is too long."),
    ({"discount_code": "NOPE"}, "discount_code", "That code is not valid for this event."),
    ({"attendee-0-same": "", "attendee-0-first_name": "", "attendee-0-last_name": "Guest"},
     "attendee-0-first_name", "Enter the attendee's first name."),
    ({"attendee-0-same": "", "attendee-0-first_name": "Sam", "attendee-0-last_name": ""},
     "attendee-0-last_name", "Enter the attendee's last name."),
    ({"attendee-0-same": "", "attendee-0-first_name": "Sam", "attendee-0-last_name": "Guest",
      "attendee-0-email": "sam(at)guest"}, "attendee-0-email", "Enter a valid e-mail address, like name@example.com."),
    ({"attendee-0-same": "", "attendee-0-first_name": "Sam", "attendee-0-last_name": "Guest",
      "attendee-0-phone": "999"}, "attendee-0-phone", None),
]


@pytest.mark.parametrize("changes, field, message", CASES)
def test_checkout_validation(client, app, live, changes, field, message):
    _, _, public_id, types = live
    form = order_form(types, [1, 0], **changes)
    form = {k: v for k, v in form.items() if v != "" or not k.endswith("-same")}
    response = client.post_form(f"/e/{public_id}/checkout", form)
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "Please check the highlighted fields." in page
    error = error_for(page, field)
    assert error, f"no message next to {field}"
    if message:
        assert error == message
    else:
        assert error.startswith("Enter a valid phone number")
    assert re.search(rf'<input[^>]*name="{re.escape(field)}"[^>]*aria-invalid="true"', page, re.S)
    # What was typed is kept.
    for key in ("first_name", "last_name", "email"):
        typed = form[key]
        if typed.strip() and "\x00" not in typed and "\u2028" not in typed:
            assert f'value="{html.escape(typed)}"' in page, key
    assert f'name="qty-{types[0]}" min="0"' in page
    assert re.search(rf'name="qty-{types[0]}"[^>]*value="1"', page)
    assert orders(app) == [] and sold(app) == [0, 0]


@pytest.mark.parametrize("quantities, field, message", [
    (["0", "0"], "tickets", "Choose at least one ticket."),
    (["", ""], "tickets", "Choose at least one ticket."),
    (["-1", "0"], "qty-0", "Enter a whole number."),
    (["1.5", "0"], "qty-0", "Enter a whole number."),
    (["abc", "0"], "qty-0", "Enter a whole number."),
    (["99999", "0"], "qty-0", "Enter a whole number."),
    ([str(MAX_PER_ORDER), "1"], "tickets", f"One order can hold at most {MAX_PER_ORDER} tickets."),
    (["6", "0"], "qty-0", "Only 5 left."),
])
def test_checkout_quantity_validation(client, app, make_organizer, make_event, quantities, field, message):
    event_id = make_event(make_organizer(), capacity=5 if quantities[0] == "6" else 100)
    public_id, types = info(app, event_id)
    form = order_form(types, quantities, attendees=[])
    response = client.post_form(f"/e/{public_id}/checkout", form)
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    if field == "tickets":
        assert tickets_error(page) == message
    else:
        assert error_for(page, f"qty-{types[0]}") == message
    assert orders(app) == [] and sold(app) == [0, 0]


def test_unknown_ticket_type_is_refused(client, app, live):
    _, _, public_id, types = live
    form = order_form(types, [1, 0])
    form["qty-999999"] = "1"
    response = client.post_form(f"/e/{public_id}/checkout", form)
    assert response.status_code == 422
    assert tickets_error(response.get_data(as_text=True)).startswith("One of the chosen ticket types does not exist")
    assert orders(app) == []


def test_another_events_ticket_type_is_refused(client, app, live, make_event):
    organizer_id, _, public_id, types = live
    _, other_types = info(app, make_event(organizer_id, name="Other"))
    form = order_form(types, [0, 0], attendees=[])
    form[f"qty-{other_types[0]}"] = "1"
    response = client.post_form(f"/e/{public_id}/checkout", form)
    assert response.status_code == 422
    assert orders(app) == [] and sold(app) == [0, 0, 0, 0]


def test_checkout_needs_the_form_token_of_this_event(client, app, live, make_event):
    organizer_id, _, public_id, types = live
    other_public_id, _ = info(app, make_event(organizer_id, name="Other"))
    form = order_form(types, [1, 0])
    for token in (None, "forged", client.form_token(f"/e/{other_public_id}/checkout")):
        data = dict(form) if token is None else {**form, "form_token": token}
        response = client.post(f"/e/{public_id}/checkout", data=data)
        assert response.status_code == 400
        page = response.get_data(as_text=True)
        assert "This form has expired or did not come from this page." in page
        assert 'value="pat@buyer.example"' in page  # what was typed is kept
    assert orders(app) == [] and sold(app) == [0, 0, 0, 0]


def test_attendee_errors_are_shown_in_the_attendee_fieldset(client, live):
    _, _, public_id, types = live
    form = order_form(types, [1, 1], attendees=["same", {"first_name": "", "last_name": "", "email": "x"}])
    page = client.post_form(f"/e/{public_id}/checkout", form).get_data(as_text=True)
    fieldsets = re.findall(r'<fieldset class="attendee">(.*?)</fieldset>', page, re.S)
    assert len(fieldsets) == 2
    assert "error-text" not in fieldsets[0] and "checked" in fieldsets[0]
    assert 'id="attendee-1-first_name-error"' in fieldsets[1] and 'id="attendee-1-email-error"' in fieldsets[1]
    assert 'value="x"' in fieldsets[1]


# --- a good checkout --------------------------------------------------------------------------------------------------

def test_good_checkout_redirects_to_the_confirmation_by_token(client, app, live):
    organizer_id, event_id, public_id, types = live
    sam = {"first_name": "Sam", "last_name": "Guest", "email": "sam@guest.example", "phone": "020 7946 0958"}
    form = order_form(types, [1, 1], attendees=["same", {**sam, "phone": "+44 20 7946 0958"}])
    response = client.post_form(f"/e/{public_id}/checkout", form)
    assert response.status_code == 303, response.get_data(as_text=True)[:500]
    [order] = orders(app)
    assert re.fullmatch(r"[0-9a-f]{32}", order.public_token)
    assert response.headers["Location"] == f"/orders/{order.public_token}"
    assert (order.organizer_id, order.event_id, order.source, order.is_test) == (organizer_id, event_id, "event_page",
                                                                                 False)
    assert (order.first_name, order.email, order.phone, order.currency) == ("Pat", "pat@buyer.example",
                                                                           "+12125550100", "USD")
    assert [t.type_name for t in order.tickets] == ["General Admission", "VIP"]
    assert [t.attendee.name for t in order.tickets] == ["Pat Buyer", "Sam Guest"]
    assert order.tickets[1].attendee.phone == "+442079460958"
    assert (order.subtotal, order.fee_total, order.discount_total, order.total) == (
        Decimal("225.00"), Decimal("15.00"), Decimal("0.00"), Decimal("240.00"))
    assert sold(app) == [1, 1]

    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "You're going to Summer Music Festival 2026" in page
    rows = re.findall(r"<tr><td>([^<]+)</td><td>([^<]+)", page)
    assert rows == [("General Admission", "Pat Buyer"), ("VIP", "Sam Guest")]
    assert "Total paid USD 240.00" in page
    assert "Test order" not in page
    assert "Klaviyo sync" not in page  # nobody is logged in


def test_confirmation_is_not_reachable_by_order_id_or_a_guess(client, app, live):
    _, _, public_id, types = live
    client.post_form(f"/e/{public_id}/checkout", order_form(types, [1, 0]))
    [order] = orders(app)
    assert client.get(f"/orders/{order.id}").status_code == 404
    guess = order.public_token[:-1] + ("1" if order.public_token[-1] == "0" else "0")
    assert client.get(f"/orders/{guess}").status_code == 404
    assert client.get("/orders/" + "0" * 32).status_code == 404


def test_widget_checkout_goes_to_the_widget_confirmation(client, app, live):
    _, _, public_id, types = live
    response = client.post_form(f"/w/{public_id}/checkout", order_form(types, [2, 0]))
    assert response.status_code == 303
    [order] = orders(app)
    assert order.source == "widget"
    assert response.headers["Location"] == f"/orders/{order.public_token}?w=1"
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert page.count("<tr><td>General Admission</td>") == 2
    assert '<nav class="tabs"' not in page


@pytest.mark.parametrize("types, discount, quantities, code, finals, subtotal, discount_total, fees, total", [
    # 10 % off two GA tickets
    (None, ("SUMMER10", "percent", "10"), [2, 0], "summer10", ["67.50", "67.50"], "150.00", "15.00", "10.00", "145.00"),
    # 15 % of 19.99 is 2.9985: rounded half-up to 3.00 per ticket
    ([("Odd", "19.99", "1.01")], ("ODD15", "percent", "15"), [3], "ODD15", ["16.99"] * 3, "59.97", "9.00", "3.03",
     "54.00"),
    # 10.00 off per ticket
    (None, ("TENOFF", "fixed", "10.00"), [2, 1], "TenOff", ["65.00", "65.00", "140.00"], "300.00", "30.00", "20.00",
     "290.00"),
    # a fixed discount bigger than the price makes the ticket free, never negative; the fee stays
    (None, ("FREE", "fixed", "100.00"), [1, 0], "FREE", ["0.00"], "75.00", "75.00", "5.00", "5.00"),
    (None, ("ALL", "percent", "100"), [1, 1], " all ", ["0.00", "0.00"], "225.00", "225.00", "15.00", "15.00"),
])
def test_discounts_give_exact_decimal_totals(client, app, make_organizer, make_event, types, discount, quantities,
                                             code, finals, subtotal, discount_total, fees, total):
    event_id = make_event(make_organizer(), types=types)
    with app.app_context():
        db.session.add(DiscountCode(event_id=event_id, code=discount[0], kind=discount[1], amount=Decimal(discount[2])))
        db.session.commit()
    public_id, type_ids = info(app, event_id)
    response = client.post_form(f"/e/{public_id}/checkout", order_form(type_ids, quantities, discount_code=code))
    assert response.status_code == 303, response.get_data(as_text=True)[:300]
    [order] = orders(app)
    assert [t.final_price for t in order.tickets] == [Decimal(f) for f in finals]
    assert all(isinstance(t.final_price, Decimal) for t in order.tickets)
    assert order.subtotal == Decimal(subtotal)
    assert order.discount_total == Decimal(discount_total)
    assert order.fee_total == Decimal(fees)
    assert order.total == Decimal(total) and isinstance(order.total, Decimal)
    assert order.total == sum((t.final_price + t.fee for t in order.tickets), Decimal("0"))
    assert order.discount_code == discount[0]
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert f"Total paid USD {Decimal(total):,.2f}" in page
    assert f"Discount {discount[0]}: −USD {Decimal(discount_total):,.2f}" in page


def test_capacity_is_enforced(client, app, make_organizer, make_event):
    event_id = make_event(make_organizer(), capacity=2)
    public_id, types = info(app, event_id)
    response = client.post_form(f"/e/{public_id}/checkout", order_form(types, [3, 0]))
    assert response.status_code == 422
    assert error_for(response.get_data(as_text=True), f"qty-{types[0]}") == "Only 2 left."
    assert client.post_form(f"/e/{public_id}/checkout", order_form(types, [2, 0])).status_code == 303
    page = client.get(f"/e/{public_id}").get_data(as_text=True)
    assert "sold out" in page and re.search(rf'name="qty-{types[0]}"[^>]*disabled', page)
    response = client.post_form(f"/e/{public_id}/checkout", order_form(types, [1, 0]))
    assert response.status_code == 422
    assert error_for(response.get_data(as_text=True), f"qty-{types[0]}") == "Sold out."
    assert sold(app) == [2, 0] and len(orders(app)) == 1


def test_losing_the_race_for_the_last_tickets_sells_nothing(client, app, make_organizer, make_event, monkeypatch):
    """Another buyer takes the last tickets between this buyer's form check and the order: no overselling."""
    from portal.storefront import views

    event_id = make_event(make_organizer(), capacity=3)
    public_id, types = info(app, event_id)
    real = views.read_checkout

    def racing(*args, **kwargs):
        checked = real(*args, **kwargs)
        with db.engine.begin() as conn:  # the other buyer, on another connection
            conn.execute(update(TicketType).where(TicketType.id == types[0]).values(sold=2))
        return checked

    monkeypatch.setattr(views, "read_checkout", racing)
    response = client.post_form(f"/e/{public_id}/checkout", order_form(types, [2, 1]))
    assert response.status_code == 409
    page = response.get_data(as_text=True)
    assert "Someone was quicker" in page
    assert error_for(page, f"qty-{types[0]}") == "Only 1 left."
    assert orders(app) == []
    assert sold(app) == [2, 0]  # the VIP ticket taken before the failure was given back
    with app.app_context():
        assert db.session.scalar(select(func.count()).select_from(Ticket)) == 0
        assert db.session.scalar(select(func.count()).select_from(Attendee)) == 0


# --- test orders from the preview -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("status", ["live", "draft"])
@pytest.mark.parametrize("kind", ["e", "w"])
def test_preview_purchase_is_a_test_order(client, app, make_organizer, make_event, login, status, kind):
    owner = make_organizer()
    public_id, types = info(app, make_event(owner, status=status))
    login()
    response = client.post_form(f"/{kind}/{public_id}/checkout?preview=1", order_form(types, [1, 0]))
    assert response.status_code == 303
    [order] = orders(app)
    assert order.is_test is True and order.source == "preview"
    page = client.get(f"/manage/orders/{order.id}").get_data(as_text=True)
    assert re.search(r'<h1>Order #\d+ <span class="[^"]*" id="order-status">Paid</span>\s*<span class="badge info">Test order</span></h1>', page)
    assert "Test order" in client.get(response.headers["Location"]).get_data(as_text=True)


def test_preview_flag_from_someone_else_is_ignored(client, app, live, make_organizer, login):
    _, _, public_id, types = live
    # Anonymous, then another organizer: a live event sells normally, never as a test order.
    assert client.post_form(f"/e/{public_id}/checkout?preview=1", order_form(types, [1, 0])).status_code == 303
    make_organizer(email="bo@other.example", name="Bo")
    login(email="bo@other.example")
    assert client.post_form(f"/e/{public_id}/checkout?preview=1", order_form(types, [1, 0])).status_code == 303
    assert [(o.is_test, o.source) for o in orders(app)] == [(False, "event_page")] * 2


def test_a_non_preview_order_has_no_test_badge(client, app, live, login):
    _, _, public_id, types = live
    client.post_form(f"/e/{public_id}/checkout", order_form(types, [1, 0]))
    [order] = orders(app)
    login()
    page = client.get(f"/manage/orders/{order.id}").get_data(as_text=True)
    assert "Test order" not in page


# --- the attendees fragment --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["e", "w"])
@pytest.mark.parametrize("quantities, legends", [
    ([0, 0], []),
    ([1, 0], ["Ticket 1: General Admission"]),
    ([2, 1], ["Ticket 1: General Admission", "Ticket 2: General Admission", "Ticket 3: VIP"]),
    ([0, 3], ["Ticket 1: VIP", "Ticket 2: VIP", "Ticket 3: VIP"]),
    ([MAX_PER_ORDER, 1], []),  # over the per-order limit: no fields, the form will say why
])
def test_attendees_fragment_has_one_fieldset_per_ticket(client, live, kind, quantities, legends):
    _, _, public_id, types = live
    query = {f"qty-{t}": str(q) for t, q in zip(types, quantities)}
    query["first_name"] = "Pat"
    response = client.get(f"/{kind}/{public_id}/attendees", query_string=query, headers={"HX-Request": "true"})
    assert response.status_code == 200
    body = response.get_data(as_text=True)
    assert "<html" not in body and body.lstrip().startswith('<div id="attendees">')
    assert body.count('<fieldset class="attendee">') == len(legends)
    assert re.findall(r"<legend>([^<]+)</legend>", body) == legends
    fields = body.split('<div id="summary"')[0]  # the attendee fields; the order summary follows, out of band
    assert "error-text" not in fields and "aria-invalid" not in fields


def test_attendees_fragment_keeps_typed_attendees(client, live):
    _, _, public_id, types = live
    query = {f"qty-{types[0]}": "2", "attendee-1-first_name": "Sam", "attendee-0-same": "1"}
    body = client.get(f"/e/{public_id}/attendees", query_string=query).get_data(as_text=True)
    fieldsets = re.findall(r'<fieldset class="attendee">(.*?)</fieldset>', body, re.S)
    assert 'checked' in fieldsets[0] and 'value="Sam"' in fieldsets[1]


# --- framing ---------------------------------------------------------------------------------------------------------------

def test_widget_is_embeddable_and_portal_pages_are_not(client, app, live, login):
    organizer_id, event_id, public_id, _ = live
    assert "X-Frame-Options" not in client.get(f"/w/{public_id}").headers
    assert client.get("/auth/login").headers["X-Frame-Options"] == "SAMEORIGIN"
    assert client.get(f"/e/{public_id}").headers["X-Frame-Options"] == "SAMEORIGIN"
    login()
    for url in ("/manage/events/", "/manage/integrations/", f"/manage/events/{event_id}/widget"):
        assert client.get(url).headers["X-Frame-Options"] == "SAMEORIGIN", url


def test_the_whole_widget_flow_is_embeddable(client, app, live):
    _, _, public_id, types = live
    invalid = client.post_form(f"/w/{public_id}/checkout", order_form(types, [1, 0], email="bad"))
    assert invalid.status_code == 422
    assert "X-Frame-Options" not in invalid.headers
    done = client.post_form(f"/w/{public_id}/checkout", order_form(types, [1, 0]))
    assert done.status_code == 303
    assert "X-Frame-Options" not in client.get(done.headers["Location"]).headers


def _cross_site_cookies(response) -> str:
    """The cookies a browser sends back from inside a third-party iframe: only SameSite=None; Secure ones."""
    sent = []
    for header in response.headers.getlist("Set-Cookie"):
        parts = [p.strip() for p in header.split(";")]
        flags = {p.lower() for p in parts[1:]}
        if "samesite=none" in flags and "secure" in flags:
            sent.append(parts[0])
    return "; ".join(sent)


def test_embedded_widget_checkout_works_from_a_third_party_site(app, live):
    """Inside an organizer's site the browser sends none of our SameSite=Lax cookies: the widget must still sell."""
    _, _, public_id, types = live
    frame = app.test_client(use_cookies=False)
    page = frame.get(f"/w/{public_id}", base_url="https://localhost")
    hidden = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"',
                             re.search(r'<form method="post".*?</form>', page.get_data(as_text=True), re.S).group(0)))
    assert hidden, "the checkout form carries its anti-forgery token"
    cookies = _cross_site_cookies(page)
    response = frame.post(f"/w/{public_id}/checkout", base_url="https://localhost",
                          data={**order_form(types, [1, 0]), **hidden},
                          headers={"Cookie": cookies} if cookies else {})
    assert response.status_code == 303, response.status_code
    assert len(orders(app)) == 1
    assert "X-Frame-Options" not in frame.get(response.headers["Location"], base_url="https://localhost").headers


# --- the sync panel on the confirmation page ------------------------------------------------------------------------------

def test_sync_panel_only_for_the_logged_in_owner(client, app, connected, make_event, make_organizer, login):
    public_id, types = info(app, make_event(connected))
    response = client.post_form(f"/e/{public_id}/checkout?preview=1", order_form(types, [1, 0]))
    assert response.status_code == 303
    [order] = orders(app)
    confirmation, panel = f"/orders/{order.public_token}", f"/orders/{order.public_token}/sync"

    page = client.get(confirmation).get_data(as_text=True)
    assert 'id="sync-panel"' in page and "Only you, the organizer, see this panel." in page
    assert re.findall(r'<tr data-metric="([^"]+)">', page) == ["Placed Order", "Ordered Experience"]
    assert f'href="/manage/orders/{order.id}"' in page
    fragment = client.get(panel, headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    body = fragment.get_data(as_text=True)
    assert "<html" not in body and 'id="sync-panel"' in body and f"order_{order.id}" in body

    client.post_form("/auth/logout")
    page = client.get(confirmation).get_data(as_text=True)
    assert "You're going to" in page and 'id="sync-panel"' not in page and "Klaviyo" not in page
    assert client.get(panel).status_code == 404
    assert client.get(panel, headers={"HX-Request": "true"}).status_code == 404

    make_organizer(email="bo@other.example", name="Bo")
    login(email="bo@other.example")
    assert 'id="sync-panel"' not in client.get(confirmation).get_data(as_text=True)
    assert client.get(panel).status_code == 404


def test_no_sync_panel_without_a_klaviyo_connection(client, app, organizer, make_event):
    public_id, types = info(app, make_event(organizer))
    response = client.post_form(f"/e/{public_id}/checkout", order_form(types, [1, 0]))
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert 'id="sync-panel"' not in page


def test_sync_panel_and_order_timeline_poll_only_until_everything_is_sent(client, app, connected, make_event):
    from portal.sync import jobs

    public_id, types = info(app, make_event(connected))
    assert client.post_form(f"/e/{public_id}/checkout?preview=1", order_form(types, [1, 0])).status_code == 303
    [order] = orders(app)
    panel, timeline = f"/orders/{order.public_token}/sync", f"/manage/orders/{order.id}"
    assert 'hx-trigger="load delay:700ms"' in client.get(panel, headers={"HX-Request": "true"}).get_data(as_text=True)
    assert 'hx-trigger="every 2s"' in client.get(timeline, headers={"HX-Request": "true"}).get_data(as_text=True)
    with app.app_context():
        assert jobs.deliver(connected) == 2
    for url in (panel, timeline):
        body = client.get(url, headers={"HX-Request": "true"}).get_data(as_text=True)
        assert "Accepted by Klaviyo" in body and "hx-trigger" not in body
