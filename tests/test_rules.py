"""Rules that live in one place each: who gets a Registered Attendee, how contacts are read, the channel key,
past events, Klaviyo's headers; and the direction of imports that keeps them there."""
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select

from portal.channels.models import channel_key
from portal.contact import check_phone, e164
from portal.extensions import db
from portal.klaviyo import payloads
from portal.klaviyo.client import ApiResponse
from portal.klaviyo.payloads import REGISTERED, as_past_event, registration_reasons
from portal.orders.models import Order
from portal.sync import backfill
from tests.test_storefront import BUYER, info, order_form

ROOT = Path(__file__).resolve().parent.parent
STRUCTURE = ROOT.parent / "shared" / "tools" / "structure.py"


def test_registration_rule_reads_e_mails_as_klaviyo_does():
    reasons = registration_reasons(" Pat@Buyer.example", ["pat@buyer.example", "SAM@guest.example ", "sam@guest.example",
                                                           None, "", "lee@guest.example"])
    assert reasons == [payloads.SAME_AS_PURCHASER, REGISTERED, payloads.REPEATED_EMAIL, payloads.NO_EMAIL,
                       payloads.NO_EMAIL, REGISTERED]


def test_backfill_dry_run_counts_registered_attendees_by_the_builders_rule(client, app, make_organizer, make_event):
    """The dry run's count and the events the builders make come from the same rule."""
    organizer_id = make_organizer()
    public_id, types = info(app, make_event(organizer_id))
    guests = [{"first_name": "Sam", "last_name": "Guest", "email": email}
              for email in ("SAM@guest.example", "sam@guest.example ", "PAT@buyer.example", "lee@guest.example")]
    response = client.post_form(f"/e/{public_id}/checkout", order_form(types, [4, 0], attendees=guests))
    assert response.status_code == 303, response.get_data(as_text=True)[:300]
    with app.app_context():
        order = db.session.scalar(select(Order))
        from portal.orders.service import snapshot

        built = payloads.build_order_events(snapshot(order)).events
        registered = [event for event in built if event.metric == payloads.REGISTERED_ATTENDEE]
        assert len(registered) == 2  # sam once, lee; never the purchaser's own address
        assert backfill.plan(organizer_id).attendee_events == len(registered)


def test_past_event_is_a_copy():
    event = payloads.OutgoingEvent("Placed Order", "order_1", "pat@buyer.example",
                                   {"data": {"type": "event", "attributes": {"properties": {"OrderId": "1"}}}})
    past = as_past_event(event)
    assert past.body["data"]["attributes"]["backfill"] is True
    assert "backfill" not in event.body["data"]["attributes"]  # the built event is left as it was
    assert (past.metric, past.unique_id, past.profile_key) == (event.metric, event.unique_id, event.profile_key)


def test_klaviyo_headers_are_case_insensitive():
    response = ApiResponse(429, {"retry-after": "7", "ratelimit-remaining": "0"}, None, 3)
    assert response.retry_after == 7
    assert response.headers["RateLimit-Remaining"] == "0"


@pytest.mark.parametrize("account", ["demo.myshopify.com", " Demo.MyShopify.com "])
def test_one_channel_key_whatever_the_case(account):
    assert channel_key("shopify", account) == "shopify:demo.myshopify.com"


def test_phone_region_is_where_numbers_without_a_country_code_are_read():
    assert check_phone("020 7946 0958", "GB") == ("+442079460958", None)
    number, problem = check_phone("020 7946 0958", "US")
    assert number is None and problem.startswith("Enter a valid phone number")
    assert e164("+1 212 555 0100", "GB") == "+12125550100"  # a number with its country code is read as written


@pytest.mark.skipif(not STRUCTURE.exists(), reason="the shared structure check is not beside this checkout")
def test_imports_point_one_way():
    """No import circle inside portal/, sync/ and klaviyo/ never reach up into integrations/, no product module
    imports the sandbox, and none is over 400 lines."""
    result = subprocess.run([sys.executable, str(STRUCTURE), str(ROOT)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


# The base scopes (portal/config.py KLAVIYO_SCOPES): the account, sending events, reading them back (the checklist's
# round trip) and listing metrics (the double-send guard).
BASE = {"accounts:read", "events:read", "events:write", "metrics:read"}


def test_incremental_authorization_asks_for_a_features_scopes_only_once_it_is_on(client, app, connected, sandbox):
    from urllib.parse import parse_qs, urlsplit

    from portal.sync import connection as klaviyo
    from tests.conftest import oauth_connect

    def asked() -> set[str]:
        start = client.post_form("/manage/integrations/klaviyo/connect")
        return set(parse_qs(urlsplit(start.headers["Location"]).query)["scope"][0].split())

    assert asked() == BASE  # a connection that never turns a feature on
    with app.app_context():
        connection = klaviyo.connection_for(connected)
        assert klaviyo.turn_on(connection, "subscriptions") is True  # Klaviyo must be asked for more
        db.session.commit()
    page = client.get("/manage/integrations/").get_data(as_text=True)
    assert "Klaviyo needs one more permission for list subscriptions." in page
    assert asked() == BASE | {"lists:read", "lists:write", "profiles:write", "subscriptions:write"}
    assert oauth_connect(client, sandbox.url).status_code == 303
    with app.app_context():
        connection = klaviyo.connection_for(connected)
        assert klaviyo.missing_scopes(connection) == [] and klaviyo.has_scopes(connection, "subscriptions:write")
    assert "needs one more permission" not in client.get("/manage/integrations/").get_data(as_text=True)



@pytest.mark.parametrize("quantity", ["²", "١", "٣", "¹²", "𝟐"])
def test_unusual_digits_in_a_quantity_are_refused_not_a_500(client, app, make_organizer, make_event, quantity):
    public_id, types = info(app, make_event(make_organizer()))
    form = {**order_form(types, [0, 0]), f"qty-{types[0]}": quantity}
    response = client.post_form(f"/e/{public_id}/checkout", form)
    assert response.status_code == 422 and "Enter a whole number." in response.get_data(as_text=True)
    assert client.post_form(f"/e/{public_id}/checkout", {**form, f"qty-{types[0]}": "1", f"qty-{quantity}": "1"}
                            ).status_code == 422  # an unusual digit in the ticket type's id, too


@pytest.mark.parametrize("path", ["/auth/login", "/auth/signup"])
def test_head_answers_like_get(client, path):
    assert client.head(path).status_code == client.get(path).status_code == 200


def test_a_london_event_reads_london_numbers(client, app, make_organizer, make_event):
    from portal.events.models import Event

    event_id = make_event(make_organizer())
    with app.app_context():
        db.session.get(Event, event_id).country = "GB"
        db.session.commit()
    public_id, types = info(app, event_id)
    form = order_form(types, [1, 0], **{**BUYER, "phone": "020 7946 0958"})
    assert client.post_form(f"/e/{public_id}/checkout", form).status_code == 303
    with app.app_context():
        assert db.session.scalar(select(Order.phone)) == "+442079460958"


def test_pages_carry_a_strict_content_security_policy(client, app, organizer, make_event):
    event_id = make_event(organizer)
    public_id, _ = info(app, event_id)
    page = client.get("/manage/integrations/")
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "style-src 'self'" in policy
    assert "unsafe-inline" not in policy.replace("style-src-attr 'unsafe-inline'", "")  # no inline script, no <style>
    assert "frame-ancestors 'self'" in policy and page.headers["X-Frame-Options"] == "SAMEORIGIN"
    assert page.headers["Cache-Control"] == "no-store"  # an organizer page
    widget = client.get(f"/w/{public_id}")
    assert "frame-ancestors *" in widget.headers["Content-Security-Policy"] and "X-Frame-Options" not in widget.headers
    assert client.get(f"/e/{public_id}").headers["X-Frame-Options"] == "SAMEORIGIN"
    for html in (page.get_data(as_text=True), widget.get_data(as_text=True)):
        assert "<script>" not in html and " onclick=" not in html and ' style="' not in html
