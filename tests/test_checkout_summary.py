"""The checkout adds up as the buyer types (issue 16): the order summary fragment follows the quantities and the
discount code, an invalid code is flagged in place before submit, and the form reads tickets → summary →
purchaser → attendees → pay."""
import html
import re
from decimal import Decimal

import pytest

from portal.events.models import DiscountCode
from portal.extensions import db
from portal.storefront.checkout import MAX_PER_ORDER
from tests.test_storefront import info

HX = {"HX-Request": "true"}


@pytest.fixture
def shop(app, make_organizer, make_event):
    """A live event (General Admission 75 + 5 fee, VIP 150 + 10 fee) with the code SUMMER10 (10 % off)."""
    event_id = make_event(make_organizer())
    with app.app_context():
        db.session.add(DiscountCode(event_id=event_id, code="SUMMER10", kind="percent", amount=Decimal("10")))
        db.session.commit()
    return info(app, event_id)


def text(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def summary_of(body: str) -> str:
    return text(re.search(r'<div id="summary".*?</div>', body, re.S).group(0))


def feedback(body: str, which: str) -> str:
    match = re.search(rf'<div class="[a-z-]+" aria-live="polite" (?:hx-swap-oob="true" )?id="discount_code-{which}">'
                      r'([^<]*)</div>', body)
    return html.unescape(match.group(1)) if match else None


@pytest.mark.parametrize("kind", ["e", "w"])
def test_summary_follows_quantities_and_a_valid_code(client, shop, kind):
    public_id, (general, vip) = shop
    query = {f"qty-{general}": "2", f"qty-{vip}": "1"}
    body = client.get(f"/{kind}/{public_id}/summary", query_string=query, headers=HX).get_data(as_text=True)
    assert "<html" not in body and body.lstrip().startswith('<div id="summary"')
    assert summary_of(body) == ("2 × General Admission USD 150.00 1 × VIP USD 150.00 Service fees USD 20.00 "
                                "Total USD 320.00")
    assert feedback(body, "error") == "" and feedback(body, "ok") == ""

    body = client.get(f"/{kind}/{public_id}/summary", query_string={**query, "discount_code": " summer10 "},
                      headers=HX).get_data(as_text=True)
    assert summary_of(body) == ("2 × General Admission USD 150.00 1 × VIP USD 150.00 Discount SUMMER10 −USD 30.00 "
                                "Service fees USD 20.00 Total USD 290.00")
    assert feedback(body, "ok") == "Code SUMMER10 applied: 10% off each ticket." and feedback(body, "error") == ""


def test_an_invalid_code_is_flagged_in_place_and_changes_nothing(client, shop):
    public_id, (general, _) = shop
    body = client.get(f"/e/{public_id}/summary", query_string={f"qty-{general}": "2", "discount_code": "SUMMER1"},
                      headers=HX).get_data(as_text=True)
    assert feedback(body, "error") == "That code is not valid for this event."
    assert feedback(body, "ok") == ""
    assert summary_of(body).endswith("Total USD 160.00")
    # Only the code's own problem: the purchaser's empty fields are not flagged while the buyer is still choosing.
    assert "Enter your first name" not in body and "Enter an e-mail address" not in body


def test_quantities_refresh_the_attendees_and_the_summary_together(client, shop):
    public_id, (general, vip) = shop
    body = client.get(f"/e/{public_id}/attendees", query_string={f"qty-{general}": "1", f"qty-{vip}": "1",
                                                                "discount_code": "SUMMER10"},
                      headers=HX).get_data(as_text=True)
    assert body.lstrip().startswith('<div id="attendees">')
    assert "One attendee per ticket." in body
    assert re.findall(r"<legend>([^<]+)</legend>", body) == ["Ticket 1: General Admission", "Ticket 2: VIP"]
    assert '<div id="summary" class="summary" aria-live="polite" hx-swap-oob="true">' in body
    assert summary_of(body).endswith("Total USD 217.50")  # 75 + 150 − 22.50 + 15 of fees
    assert feedback(body, "ok").startswith("Code SUMMER10 applied")


def test_no_tickets_yet_and_too_many(client, shop):
    public_id, (general, vip) = shop
    empty = client.get(f"/e/{public_id}/attendees", headers=HX).get_data(as_text=True)
    assert "once you choose tickets above, a form for each ticket's attendee appears here" in empty
    assert "Choose your tickets above: the total shows here as you do." in summary_of(empty)
    over = client.get(f"/e/{public_id}/summary", query_string={f"qty-{general}": str(MAX_PER_ORDER), f"qty-{vip}": "1"},
                      headers=HX).get_data(as_text=True)
    assert summary_of(over) == f"One order can hold at most {MAX_PER_ORDER} tickets."


@pytest.mark.parametrize("query", [
    {"qty-{g}": "abc"}, {"qty-{g}": "-1"}, {"qty-{g}": "99999"}, {"qty-{g}": "²"}, {"qty-{g}": "1" * 40},
    {"qty-999999": "1"}, {"qty-x": "1"}, {"discount_code": "x" * 5000}, {"discount_code": "%_\\'\""},
    {"discount_code": "\x00"}, {"qty-{g}": "1", "discount_code": "SUMMER10\u2028"},
])
@pytest.mark.parametrize("path", ["summary", "attendees"])
def test_any_input_answers_without_a_server_error(client, app, shop, query, path):
    app.config["PROPAGATE_EXCEPTIONS"] = False
    public_id, (general, _) = shop
    query = {key.format(g=general): value for key, value in query.items()}
    response = client.get(f"/e/{public_id}/{path}", query_string=query, headers=HX)
    if any("\x00" in value for value in query.values()):  # refused once for the whole portal (portal/inputs.py)
        assert response.status_code == 400
        return
    assert response.status_code == 200, response.status_code
    assert 'id="summary"' in response.get_data(as_text=True)


def test_summary_of_a_draft_is_404_to_the_public(client, app, make_organizer, make_event):
    public_id, _ = info(app, make_event(make_organizer(), status="draft"))
    assert client.get(f"/e/{public_id}/summary", headers=HX).status_code == 404
    assert client.get(f"/w/{public_id}/summary", headers=HX).status_code == 404


def test_widget_summary_may_be_framed(client, shop):
    public_id, _ = shop
    assert "X-Frame-Options" not in client.get(f"/w/{public_id}/summary", headers=HX).headers
    assert client.get(f"/e/{public_id}/summary", headers=HX).headers["X-Frame-Options"] == "SAMEORIGIN"


@pytest.mark.parametrize("kind", ["e", "w"])
def test_the_form_reads_tickets_summary_purchaser_attendees_consent_pay(client, shop, kind):
    public_id, (general, _) = shop
    page = client.get(f"/{kind}/{public_id}").get_data(as_text=True)
    marks = ["<legend>Tickets</legend>", 'id="summary-title"', 'id="discount_code"', "<legend>Purchaser</legend>",
             ">Attendees</h3>", 'id="attendees"', 'type="submit"']
    positions = [page.index(mark) for mark in marks]
    assert positions == sorted(positions), dict(zip(marks, positions))
    assert "One attendee per ticket" in page
    # The live parts: quantities refresh the attendees (and the summary), the code refreshes the summary.
    assert f'hx-get="/{kind}/{public_id}/attendees"' in page and f'hx-get="/{kind}/{public_id}/summary"' in page
    assert 'aria-describedby="discount_code-error discount_code-ok"' in page
    assert "checkout.js" in page


def test_a_submitted_form_keeps_its_summary_and_the_codes_error(client, shop):
    public_id, (general, _) = shop
    response = client.post_form(f"/e/{public_id}/checkout", {f"qty-{general}": "2", "discount_code": "NOPE"})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert summary_of(page).endswith("Total USD 160.00")
    assert feedback(page, "error") == "That code is not valid for this event."
    assert re.search(r'id="discount_code"[^>]*aria-invalid="true"', page)
