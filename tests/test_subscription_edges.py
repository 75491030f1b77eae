"""List subscriptions' settings and edge cases: versioned wording, choosing and creating lists (and Klaviyo's
daily limit), a deleted list, a 403 from Klaviyo, SMS consent with a good or an unreadable phone, test orders,
turning the feature off, and forged or broken input (a clear message, never a 5xx)."""
import json
import re

import pytest
import requests
from sqlalchemy import select

from portal.consent.models import LIST_MISSING, NO_PERMISSION, ConsentWording, ListSettings
from portal.consent.service import ConsentInput
from portal.events.models import Event
from portal.extensions import db
from portal.orders.models import Order
from portal.orders.service import AttendeeInput, OrderInput, place_order
from portal.sync.models import CANCELLED, HELD, PENDING, SUBSCRIPTION, KlaviyoConnection, OutboxEvent
from portal.sync.subscriptions import HELD_LIST_MISSING, HELD_REFUSED
from tests.conftest import oauth_connect, sandbox_events, sync_settled, wait_for
from tests.test_subscriptions import SETTINGS, enable_subscriptions, subscribers, subscription_rows
from tests.test_sync_worker import buy


def public_id(app, event_id):
    with app.app_context():
        return db.session.get(Event, event_id).public_id


def turn_on(client):
    assert client.post_form(SETTINGS, {"enabled": "1"}).status_code == 303


def test_the_settings_need_a_klaviyo_connection(client, organizer, app):
    assert client.get(SETTINGS).status_code == 404
    assert client.post_form(SETTINGS, {"enabled": "1"}).status_code == 404
    client.post_form("/auth/logout")
    assert client.get(SETTINGS).status_code in (302, 303)


def test_off_by_default_no_box_and_a_forged_tick_counts_for_nothing(client, app, connected, make_event):
    event_id = make_event(connected)
    page = client.get(SETTINGS).get_data(as_text=True)
    assert re.search(r'name="enabled" value="1"\s*>', page)  # unticked
    assert 'name="marketing_email"' not in client.get(f"/e/{public_id(app, event_id)}").get_data(as_text=True)
    assert buy(client, app, event_id, [(0, "same")], {"marketing_email": "1"}).status_code == 303
    with app.app_context():
        order = db.session.scalar(select(Order))
        assert order.consent is None
        assert not db.session.scalars(select(OutboxEvent).where(OutboxEvent.kind == SUBSCRIPTION)).all()
        assert db.session.scalar(select(KlaviyoConnection.scope)).split() == app.config["KLAVIYO_SCOPES"].split()


def test_the_box_is_unticked_sms_waits_for_a_phone_and_a_failed_checkout_keeps_the_ticks(client, app, connected,
                                                                                       make_event):
    event_id = make_event(connected)
    turn_on(client)
    for kind in ("e", "w"):
        page = client.get(f"/{kind}/{public_id(app, event_id)}").get_data(as_text=True)
        assert re.search(r'<input type="checkbox" name="marketing_email" value="1" id="marketing_email"\s*>', page)
        assert re.search(r'<label class="checkbox mb-2" id="marketing-sms"\s+hidden>', page)
    preview = client.get(f"/w/{public_id(app, event_id)}?preview=1").get_data(as_text=True)
    assert "Send me news about upcoming events from Ada Events" in preview
    response = buy(client, app, event_id, [(0, "same")], {"email": "not an address", "marketing_email": "1",
                                                          "marketing_sms": "1"})
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert re.search(r'name="marketing_email" value="1" id="marketing_email" checked', page)
    assert re.search(r'id="marketing-sms"\s*><input type="checkbox" name="marketing_sms" value="1" id="marketing_sms" checked',
                     page)


@pytest.mark.parametrize("text, message", [("", "Write what the purchaser agrees to"), ("x" * 301, "at most 300"),
                                           ("line\none", "one line")])
def test_bad_wording_is_refused_next_to_the_field(client, connected, text, message):
    response = client.post_form(SETTINGS + "wording", {"email_text": text, "sms_text": "Texts from {organizer}"})
    assert response.status_code == 422
    assert message in response.get_data(as_text=True)


def test_each_wording_edit_is_a_version_and_orders_keep_the_one_shown(client, app, connected, make_event):
    event_id = make_event(connected)
    turn_on(client)
    form = {"email_text": "News from {organizer}, please", "sms_text": "Texts from {organizer}"}
    assert client.post_form(SETTINGS + "wording", form).status_code == 303
    assert client.post_form(SETTINGS + "wording", form).status_code == 303  # unchanged: no new version
    page = client.get(f"/e/{public_id(app, event_id)}").get_data(as_text=True)
    assert "News from Ada Events, please" in page and 'name="consent_email_version" value="1"' in page
    assert client.post_form(SETTINGS + "wording", {**form, "email_text": "Tell me about {organizer}'s events"}
                            ).status_code == 303
    with app.app_context():
        versions = [(w.channel, w.version) for w in db.session.scalars(select(ConsentWording).order_by(ConsentWording.id))]
    assert versions == [("email", 1), ("sms", 1), ("email", 2)]
    # This purchaser's page showed version 1 before the edit: version 1 is what their order records.
    assert buy(client, app, event_id, [(0, "same")], {"marketing_email": "1", "consent_email_version": "1",
                                                      "consent_sms_version": "1"}).status_code == 303
    with app.app_context():
        proof = db.session.scalar(select(Order)).consent
        assert (proof.email_version, proof.email_text) == (1, "News from Ada Events, please")
        assert (proof.sms_version, proof.sms_marketing) == (1, False)  # the phone was given, the box not ticked
    assert "Tell me about Ada Events" in client.get(f"/e/{public_id(app, event_id)}").get_data(as_text=True)


@pytest.mark.parametrize("extra", [{"consent_email_version": "999"}, {"consent_email_version": "-1"},
                                   {"consent_email_version": "١"}, {"consent_language": "<script>"},
                                   {"marketing_email": "yes please"}])
def test_odd_consent_fields_never_break_the_checkout(client, app, connected, make_event, extra):
    event_id = make_event(connected)
    turn_on(client)
    assert buy(client, app, event_id, [(0, "same")], {"marketing_email": "1", **extra}).status_code == 303
    with app.app_context():
        proof = db.session.scalar(select(Order)).consent
        assert proof.email_version == 0 and proof.language in ("en", None)
        assert proof.email_marketing is (extra.get("marketing_email", "1") == "1")


def test_test_orders_subscribe_only_when_the_organizer_asks(client, app, connected, make_event):
    event_id = make_event(connected)
    turn_on(client)
    assert buy(client, app, event_id, [(0, "same")], {"marketing_email": "1"}, preview=True).status_code == 303
    assert subscription_rows(app, connected) == []
    assert client.post_form(SETTINGS, {"enabled": "1", "include_test_orders": "1"}).status_code == 303
    assert buy(client, app, event_id, [(0, "same")], {"marketing_email": "1"}, preview=True).status_code == 303
    assert [status for _, status, _ in subscription_rows(app, connected)] == [PENDING]


def test_turning_off_cancels_what_waits_and_hides_the_box(client, app, connected, make_event):
    event_id = make_event(connected)
    turn_on(client)
    assert buy(client, app, event_id, [(0, "same")], {"marketing_email": "1"}).status_code == 303
    assert client.post_form(SETTINGS, {}).status_code == 303
    assert [status for _, status, _ in subscription_rows(app, connected)] == [CANCELLED]
    assert 'name="marketing_email"' not in client.get(f"/e/{public_id(app, event_id)}").get_data(as_text=True)
    with app.app_context():
        assert "subscriptions" not in db.session.scalar(select(KlaviyoConnection.features))


def test_choosing_a_list_that_is_not_the_accounts_is_refused(client, app, connected, sandbox):
    enable_subscriptions(client, app, sandbox)
    response = client.post_form(SETTINGS + "list", {"action": "choose", "list_id": "NoSuch"})
    assert response.status_code == 422 and "Choose one of your Klaviyo lists." in response.get_data(as_text=True)
    response = client.post_form(SETTINGS + "list", {"action": "create", "new_list_name": "  "})
    assert response.status_code == 422 and "Name the new list" in response.get_data(as_text=True)


def test_creating_a_list_uses_it_and_klaviyos_daily_limit_is_explained(client, app, connected, sandbox):
    enable_subscriptions(client, app, sandbox)
    response = client.post_form(SETTINGS + "list", {"action": "create", "new_list_name": "Ticket buyers: news",
                                                    "double_opt_in": "1"})
    assert response.status_code == 303
    made = next(item for item in sandbox.lists() if item["name"] == "Ticket buyers: news")
    assert made["opt_in_process"] == "double_opt_in"
    with app.app_context():
        assert db.session.scalar(select(ListSettings.list_id)) == made["id"]
    assert requests.post(f"{sandbox.url}/_sandbox/usage", json={"endpoint": "lists_create", "daily_used": 150},
                         timeout=5).status_code == 200
    response = client.post_form(SETTINGS + "list", {"action": "create", "new_list_name": "One more"})
    assert response.status_code == 422
    assert "Klaviyo allows 150 new lists a day" in response.get_data(as_text=True)


def test_a_deleted_list_holds_subscriptions_until_another_is_chosen(client, app, connected, make_event, sandbox,
                                                                   start_worker):
    event_id = make_event(connected)
    newsletter = enable_subscriptions(client, app, sandbox)
    sandbox.delete_list(newsletter)
    start_worker()
    assert buy(client, app, event_id, [(0, "same")], {"marketing_email": "1"}).status_code == 303
    wait_for(lambda: [row[1:] for row in subscription_rows(app, connected)] == [(HELD, HELD_LIST_MISSING)],
             message="the subscription held for the deleted list")
    with app.app_context():
        assert db.session.scalar(select(ListSettings.problem)) == LIST_MISSING
    card = client.get("/manage/integrations/").get_data(as_text=True)
    assert "The Klaviyo list “Newsletter” no longer exists. Choose another list" in card
    wait_for(lambda: any(e["metric"] == "Placed Order" for e in sandbox_events(sandbox.url)), message="the events")
    enable_subscriptions(client, app, sandbox, list_name="Preview List")
    preview_list = next(item for item in sandbox.lists() if item["name"] == "Preview List")["id"]
    wait_for(lambda: subscribers(sandbox, preview_list) and sync_settled(app), message="the subscription, released")
    assert "no longer exists" not in client.get("/manage/integrations/").get_data(as_text=True)


def test_a_403_holds_subscriptions_says_reconnect_and_events_go_on(client, app, connected, make_event, sandbox,
                                                                  start_worker):
    event_id = make_event(connected)
    newsletter = enable_subscriptions(client, app, sandbox)
    sandbox.add_faults({"status": 403, "count": 1, "paths": ["/api/profile-subscription-bulk-create-jobs"]})
    start_worker()
    assert buy(client, app, event_id, [(0, "same")], {"marketing_email": "1"}).status_code == 303
    wait_for(lambda: [row[1:] for row in subscription_rows(app, connected)] == [(HELD, HELD_REFUSED)],
             message="the subscription held after the 403")
    wait_for(lambda: len(sandbox_events(sandbox.url)) == 2 and sync_settled(app), message="the events, not held")
    with app.app_context():
        assert db.session.scalar(select(KlaviyoConnection.status)) == "connected"
        assert db.session.scalar(select(ListSettings.problem)) == NO_PERMISSION
    card = client.get("/manage/integrations/").get_data(as_text=True)
    assert "Klaviyo refused list subscriptions for lack of permission. Reconnect" in card
    detail = client.get(f"/manage/orders/{subscription_rows(app, connected)[0][0]}").get_data(as_text=True)
    assert "HTTP 403" in detail
    assert oauth_connect(client, sandbox.url).status_code == 303
    wait_for(lambda: subscribers(sandbox, newsletter) and sync_settled(app), message="the subscription after Reconnect")


def test_sms_consent_with_a_phone_and_an_unreadable_phone(client, app, connected, make_event, sandbox, start_worker):
    event_id = make_event(connected)
    newsletter = enable_subscriptions(client, app, sandbox)
    assert buy(client, app, event_id, [(0, "same")], {"marketing_email": "1", "marketing_sms": "1"}).status_code == 303
    with app.app_context():  # a store order whose phone cannot be read as a number
        event = db.session.get(Event, event_id)
        place_order(event, OrderInput(
            first_name="Bo", last_name="Other", email="bo@other.example", phone="12", source="shopify",
            lines=[(event.ticket_types[0], AttendeeInput("Bo", "Other", "bo@other.example"))],
            consent=ConsentInput(email=True, sms=True, channel="shopify", source_detail="Shopify: test")))
    start_worker()
    wait_for(lambda: len(subscribers(sandbox, newsletter)) == 2 and sync_settled(app), message="both subscriptions")
    found = {s["email"]: s for s in subscribers(sandbox, newsletter)}
    assert found["pat@buyer.example"]["channels"] == ["email", "sms"]
    assert found["pat@buyer.example"]["phone_number"] == "+12125550100"
    assert found["bo@other.example"]["channels"] == ["email"] and found["bo@other.example"]["phone_number"] is None
    with app.app_context():
        order = db.session.scalar(select(Order).where(Order.email == "bo@other.example"))
        assert "agreed to text messages, but the phone number '12' could not be read" in order.notes
        assert order.consent.note and order.consent.sms_marketing
        order_id = order.id
        payload = json.loads(db.session.scalar(select(OutboxEvent.payload).where(OutboxEvent.order_id == order_id,
                                                                                 OutboxEvent.kind == SUBSCRIPTION)))
    assert "sms" not in payload["data"]["attributes"]["profiles"]["data"][0]["attributes"]["subscriptions"]
    page = client.get(f"/manage/orders/{order_id}").get_data(as_text=True)
    assert "could not be read" in page and "Shopify: test" in page


def test_counts_on_the_settings_page(client, app, connected, make_event, sandbox, start_worker):
    event_id = make_event(connected)
    enable_subscriptions(client, app, sandbox)
    assert buy(client, app, event_id, [(0, "same")], {"marketing_email": "1"}).status_code == 303
    page = client.get(SETTINGS).get_data(as_text=True)
    assert '<b id="count-pending">1</b>' in page and '<b id="count-sent">0</b>' in page
    start_worker()
    wait_for(lambda: sync_settled(app), message="the subscription sent")
    page = client.get(SETTINGS).get_data(as_text=True)
    assert '<b id="count-sent">1</b>' in page and '<b id="count-failed">0</b>' in page
    assert 'id="chosen-list">Newsletter<' in page
