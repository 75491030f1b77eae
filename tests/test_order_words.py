"""Words for organizers, not engineers (issue 16): one plain line per order about its Klaviyo events, what each
event is for, and the technical record (unique_id, HTTP status, request body) behind a "Details" disclosure; on the
order page, the confirmation's sync panel and View Details."""
import html
import json
import re

import pytest
from sqlalchemy import select, update

from portal.contact import KLAVIYO_DROPPED_DOMAINS, klaviyo_drops
from portal.extensions import db
from portal.klaviyo.metrics import PURPOSE
from portal.orders.models import Order
from portal.orders.sync_status import OrderSync, summarize
from portal.sync.models import OutboxEvent
from portal.text import plural, sentence
from tests.test_sync_worker import buy

SAM = {"first_name": "Sam", "last_name": "Guest", "email": "sam@guest.example"}
LEE = {"first_name": "Lee", "last_name": "Tester", "email": "Lee@Example.COM"}  # a domain Klaviyo drops


def visible(page: str) -> str:
    """The page's text as a person reads it, without the closed "Details" disclosures."""
    page = re.sub(r"<details.*?</details>", " ", page, flags=re.S)
    page = re.sub(r"<(script|style)\b.*?</\1>", " ", page, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def order_id(app) -> int:
    with app.app_context():
        return db.session.scalar(select(Order.id).order_by(Order.id.desc()))


def deliver(app, organizer_id) -> int:
    from portal.sync import jobs

    with app.app_context():
        return jobs.deliver(organizer_id)  # the worker's job, here, against the sandbox


# --- the rules -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("rows, line, short", [
    ([], "Nothing was sent to Klaviyo for this order: it was placed while Klaviyo was not connected.", "Not sent"),
    ([("sent", "a@b.example")] * 5, "Klaviyo has all 5 events of this order.", "All 5 in Klaviyo"),
    ([("sent", "a@b.example")], "Klaviyo has the one event of this order.", "All 1 in Klaviyo"),
    ([("sent", "a@b.example")] * 3 + [("pending", "a@b.example"), ("claimed", "a@b.example")],
     "Sending to Klaviyo: 3 of 5 events accepted so far.", "Sending, 3 of 5"),
    ([("sent", "a@b.example")] * 4 + [("failed", "a@b.example")],
     "Klaviyo has 4 of this order's 5 events; 1 failed. See why below, then retry.", "1 failed"),
    ([("sent", "a@b.example"), ("held", "a@b.example"), ("held", "a@b.example")],
     "Klaviyo has 1 of this order's 3 events; 2 wait until you reconnect Klaviyo. Nothing is lost.", "Held: reconnect"),
    ([("sent", "a@b.example"), ("cancelled", "a@b.example")],
     "Klaviyo has 1 of this order's 2 events; 1 was never sent, because Klaviyo was disconnected or the backfill was "
     "stopped first.", "1 not sent"),
    ([("sent", "a@b.example")] * 4 + [("sent", "lee@example.com")],
     "Klaviyo accepted all 5 events of this order but keeps 4: 1 is for a test address (like @example.com), which "
     "Klaviyo drops.", "4 of 5 kept"),
])
def test_one_plain_line_per_order(rows, line, short):
    sync = summarize(rows)
    assert (sync.line, sync.short) == (line, short)
    assert "unique_id" not in sync.line and "HTTP" not in sync.line


def test_the_worst_news_comes_first():
    assert summarize([("failed", "a@b.example"), ("held", "a@b.example"), ("pending", "a@b.example")]).tone == "bad"
    assert summarize([("held", "a@b.example"), ("pending", "a@b.example")]).tone == "warn"
    assert summarize([("sent", "a@b.example"), ("pending", "a@b.example")]).tone == "info"
    assert summarize([("sent", "a@b.example")]).tone == "ok" and OrderSync().tone == ""


def test_klaviyo_drops_the_same_test_domains_as_the_sandbox():
    from portal.sandbox.schemas import TEST_EMAIL_DOMAINS, is_test_email

    assert set(KLAVIYO_DROPPED_DOMAINS) == set(TEST_EMAIL_DOMAINS)
    for email in ("pat@example.com", " Lee@Example.ORG ", "x@test.com", "pat@buyer.example", "example.com", None, ""):
        assert klaviyo_drops(email) == is_test_email((email or "").strip() or None), email


def test_sentences_end_with_one_full_stop():
    assert sentence("Connected to Sandbox Festival Co.") == "Connected to Sandbox Festival Co."
    assert sentence("Connected to Harbour Lights ") == "Connected to Harbour Lights."
    assert (plural(1, "event"), plural(5, "event"), plural(2, "person", "people")) == ("1 event", "5 events",
                                                                                       "2 people")


# --- the order page ----------------------------------------------------------------------------------------------

def test_order_page_says_where_its_events_stand_in_plain_words(client, app, connected, make_event):
    event_id = make_event(connected)
    assert buy(client, app, event_id, [(0, "same"), (0, SAM), (1, "same")]).status_code == 303
    the_order = order_id(app)
    url = f"/manage/orders/{the_order}"
    waiting = visible(client.get(url).get_data(as_text=True))
    assert "Sending to Klaviyo: 0 of 5 events accepted so far." in waiting

    assert deliver(app, connected) == 5
    page = client.get(url).get_data(as_text=True)
    words = visible(page)
    assert words.count("Klaviyo has all 5 events of this order.") == 2  # at the top, and on the timeline
    for metric in ("Placed Order", "Ordered Experience", "Registered Attendee"):
        assert PURPOSE[metric] in words
    assert "General Admission ticket" in words and "VIP ticket" in words  # which ticket each Ordered Experience is
    assert "Sam Guest sam@guest.example" in words  # whom each event is about
    # No engineer-speak on the page itself...
    for jargon in ("unique_id", "HTTP", "order_" + str(the_order), "· single", "experience_", "\"data\""):
        assert jargon not in words, jargon
    # ...but it is all there behind Details: the id, Klaviyo's answer, each try, the exact request body.
    details = re.findall(r'<details class="tech" id="tech-\d+">(.*?)</details>', page, re.S)
    assert len(details) == 5
    placed = html.unescape(details[0])
    assert f"order_{the_order}" in placed and "HTTP 202 Accepted" in placed and "on its own (Create Event)" in placed
    body = json.loads(re.search(r'<pre class="payload">(.*?)</pre>', placed, re.S).group(1))
    assert body["data"]["attributes"]["unique_id"] == f"order_{the_order}"
    assert body["data"]["attributes"]["properties"]["AttendeeCount"] == 3


def test_a_failed_and_a_held_event_say_what_to_do(client, app, connected, make_event):
    event_id = make_event(connected)
    assert buy(client, app, event_id, [(0, "same"), (0, SAM)]).status_code == 303
    the_order = order_id(app)
    with app.app_context():
        db.session.execute(update(OutboxEvent).where(OutboxEvent.metric == "Registered Attendee").values(
            status="failed", status_detail="failed: Klaviyo rejected this event", attempts=1, last_http_status=400,
            last_error="Invalid email address", last_error_pointer="/data/attributes/profile/data/attributes/email"))
        db.session.execute(update(OutboxEvent).where(OutboxEvent.metric == "Placed Order").values(
            status="held", status_detail="held: the Klaviyo connection needs reconnecting"))
        db.session.commit()
    page = client.get(f"/manage/orders/{the_order}").get_data(as_text=True)
    words = visible(page)
    assert "Klaviyo has 0 of this order's 4 events; 1 failed. See why below, then retry." in words
    assert "Klaviyo refused this event. Its reason is below; fix it, then retry. Invalid email address" in words
    assert "Waiting for you to reconnect Klaviyo. Nothing is lost" in words
    assert page.count(">Retry</button>") == 1
    assert "/data/attributes/profile/data/attributes/email" in page and "HTTP 400" in page  # in Details


def test_events_for_test_addresses_are_accepted_but_not_kept(client, app, connected, make_event):
    event_id = make_event(connected)
    assert buy(client, app, event_id, [(0, "same"), (0, LEE)]).status_code == 303
    deliver(app, connected)
    words = visible(client.get(f"/manage/orders/{order_id(app)}").get_data(as_text=True))
    assert "Klaviyo accepted all 4 events of this order but keeps 3: 1 is for a test address" in words
    assert "Accepted, not kept" in words and "no profile gets it" in words


def test_no_events_without_a_connection(client, app, organizer, make_event):
    event_id = make_event(organizer)
    assert buy(client, app, event_id, [(0, "same")]).status_code == 303
    words = visible(client.get(f"/manage/orders/{order_id(app)}").get_data(as_text=True))
    assert "Nothing was sent to Klaviyo for this order: it was placed while Klaviyo was not connected." in words


def test_refunds_cancellations_and_their_events_are_described(client, app, connected, make_event):
    event_id = make_event(connected)
    assert buy(client, app, event_id, [(0, "same"), (0, SAM)]).status_code == 303
    the_order = order_id(app)
    with app.app_context():
        sam_ticket = db.session.get(Order, the_order).tickets[1].id
    refund = client.get(f"/manage/orders/{the_order}/refund").get_data(as_text=True)
    key = re.search(r'name="request_key" value="([0-9a-f]{32})"', refund).group(1)
    assert client.post_form(f"/manage/orders/{the_order}/refund", {"ticket": sam_ticket, "include_fees": "1",
                                                                  "reason": "Cannot come",
                                                                  "request_key": key}).status_code == 303
    assert client.post_form(f"/manage/orders/{the_order}/cancel", {"reason": "Plans changed"}).status_code == 303
    words = visible(client.get(f"/manage/orders/{the_order}").get_data(as_text=True))
    for metric in ("Refunded Order", "Cancelled Order", "Cancelled Registration"):
        assert f"{metric} {PURPOSE[metric]}" in words, metric
    assert "USD 80 refunded" in words  # which refund the Refunded Order is


def test_a_store_order_in_another_currency_is_flagged(client, app, connected, make_event):
    event_id = make_event(connected)
    assert buy(client, app, event_id, [(0, "same")]).status_code == 303
    with app.app_context():
        db.session.execute(update(Order).values(currency="GBP", source="shopify"))
        db.session.commit()
    words = visible(client.get(f"/manage/orders/{order_id(app)}").get_data(as_text=True))
    assert "Paid in GBP, while Summer Music Festival 2026 sells in USD" in words and "via Shopify" in words


def test_the_timeline_fragment_refreshes_the_line_at_the_top(client, app, connected, make_event):
    event_id = make_event(connected)
    assert buy(client, app, event_id, [(0, "same")]).status_code == 303
    fragment = client.get(f"/manage/orders/{order_id(app)}", headers={"HX-Request": "true"}).get_data(as_text=True)
    assert fragment.lstrip().startswith('<div class="card" id="timeline"') and "<html" not in fragment
    assert re.search(r'<p class="sync-line" id="sync-line" hx-swap-oob="true">.*Sending to Klaviyo', fragment, re.S)


# --- the confirmation's sync panel and View Details ---------------------------------------------------------------

def test_sync_panel_speaks_plainly_with_details_behind_a_disclosure(client, app, connected, make_event):
    event_id = make_event(connected)
    assert buy(client, app, event_id, [(0, "same"), (0, SAM)], preview=True).status_code == 303
    deliver(app, connected)
    with app.app_context():
        token = db.session.scalar(select(Order.public_token))
    panel = client.get(f"/orders/{token}/sync", headers={"HX-Request": "true"}).get_data(as_text=True)
    words = visible(panel)
    assert "Klaviyo has all 4 events of this order." in words
    assert PURPOSE["Placed Order"] in words and "unique_id" not in words and "HTTP" not in words
    assert panel.count('<details class="tech"') == 4 and "unique_id" in panel


def test_view_details_speaks_plainly(client, app, connected, make_event):
    event_id = make_event(connected)
    assert buy(client, app, event_id, [(0, "same")]).status_code == 303
    page = client.get("/manage/integrations/klaviyo").get_data(as_text=True)
    words = visible(page)
    assert "2 events are on the way to Klaviyo." in words
    assert "Account ID" not in words and "SBX01HXYZ" not in words and "events:write" not in words
    assert "SBX01HXYZ" in page and "events:write" in page  # behind Details
    deliver(app, connected)
    words = visible(client.get("/manage/integrations/klaviyo").get_data(as_text=True))
    assert "Klaviyo accepted every event sent so far." in words
