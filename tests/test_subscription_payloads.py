"""The pure builders of list subscriptions: golden bodies, and every body they can build is one Klaviyo's official
Bulk Subscribe Profiles slice accepts (checked by the sandbox's strict validator)."""
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portal.klaviyo.subscriptions import (
    Consent, bulk_subscribe_body, build_subscription, create_list_body, group_key, source_for, unique_id,
)
from portal.sandbox.lists import validate_bulk_subscribe, validate_create_list

CONSENTED = datetime(2026, 3, 1, 17, 30, 5, tzinfo=timezone.utc)


def test_live_email_subscription_golden():
    built = build_subscription(Consent(order_id=7, email="Pat@Buyer.example", email_marketing=True,
                                       source="Ticket checkout (Event Page)", consented_at=CONSENTED))
    assert built.notes == []
    assert built.event.unique_id == "subscription-7" == unique_id(7)
    assert built.event.profile_key == "pat@buyer.example"
    # Live: no consented_at (Klaviyo refuses it without historical_import), no historical_import.
    assert built.event.body == {"data": {"type": "profile-subscription-bulk-create-job", "attributes": {
        "custom_source": "Ticket checkout (Event Page)",
        "profiles": {"data": [{"type": "profile", "attributes": {
            "email": "Pat@Buyer.example",
            "subscriptions": {"email": {"marketing": {"consent": "SUBSCRIBED"}}}}}]}}}}


def test_historical_email_and_sms_subscription_golden():
    built = build_subscription(Consent(order_id=8, email="pat@buyer.example", email_marketing=True, sms_marketing=True,
                                       phone="(212) 555-0100", consented_at=CONSENTED, source="Shopify checkout"),
                               historical=True)
    attributes = built.event.body["data"]["attributes"]
    assert attributes["historical_import"] is True
    assert attributes["profiles"]["data"][0]["attributes"] == {
        "email": "pat@buyer.example", "phone_number": "+12125550100",
        "subscriptions": {"email": {"marketing": {"consent": "SUBSCRIBED", "consented_at": "2026-03-01T17:30:05Z"}},
                          "sms": {"marketing": {"consent": "SUBSCRIBED", "consented_at": "2026-03-01T17:30:05Z"}}}}


def test_an_unreadable_phone_leaves_sms_out_with_a_note_and_email_goes():
    built = build_subscription(Consent(order_id=9, email="pat@buyer.example", email_marketing=True,
                                       sms_marketing=True, phone="12"))
    subscriptions = built.event.body["data"]["attributes"]["profiles"]["data"][0]["attributes"]["subscriptions"]
    assert list(subscriptions) == ["email"]
    assert built.sms_left_out and "'12' could not be read" in built.notes[0]
    assert "only the e-mail consent" in built.notes[0]


def test_nothing_to_subscribe_without_consent():
    assert build_subscription(Consent(order_id=1, email="pat@buyer.example", email_marketing=False)).event is None
    only_sms = build_subscription(Consent(order_id=1, email="pat@buyer.example", email_marketing=False,
                                          sms_marketing=True, phone=None))
    assert only_sms.event is None and "nothing goes to Klaviyo" in only_sms.notes[0]


def test_a_historical_subscription_needs_its_time():
    with pytest.raises(ValueError):
        build_subscription(Consent(order_id=1, email="pat@buyer.example", email_marketing=True), historical=True)


def test_bulk_body_joins_profiles_for_the_list_and_validates():
    bodies = [build_subscription(Consent(order_id=n, email=f"p{n}@buyer.example", email_marketing=True,
                                         source="Ticket checkout (Widget)")).event.body for n in range(3)]
    body = bulk_subscribe_body(bodies, "Y6nRLr")
    assert [p["attributes"]["email"] for p in body["data"]["attributes"]["profiles"]["data"]] == [
        "p0@buyer.example", "p1@buyer.example", "p2@buyer.example"]
    assert body["data"]["relationships"] == {"list": {"data": {"type": "list", "id": "Y6nRLr"}}}
    assert validate_bulk_subscribe(body) == []
    assert bodies[0]["data"].get("relationships") is None  # the stored bodies are left as they were


def test_bulk_body_refuses_to_mix_live_and_historical():
    live = build_subscription(Consent(order_id=1, email="a@buyer.example", email_marketing=True)).event.body
    past = build_subscription(Consent(order_id=2, email="b@buyer.example", email_marketing=True,
                                      consented_at=CONSENTED), historical=True).event.body
    assert group_key(live) != group_key(past)
    with pytest.raises(ValueError):
        bulk_subscribe_body([live, past], "Y6nRLr")
    with pytest.raises(ValueError):
        bulk_subscribe_body([], "Y6nRLr")


@pytest.mark.parametrize("channel, source", [("Event Page", "Ticket checkout (Event Page)"),
                                             ("Widget", "Ticket checkout (Widget)"),
                                             ("Shopify", "Shopify checkout"), ("Wix", "Wix checkout")])
def test_consent_source_names_the_channel(channel, source):
    assert source_for(channel) == source


def test_create_list_body_validates():
    assert validate_create_list(create_list_body("Ticket buyers: news", True)) == []
    assert create_list_body("X", False)["data"]["attributes"]["opt_in_process"] == "single_opt_in"


emails = st.from_regex(r"[a-z][a-z0-9.]{0,20}@[a-z]{1,12}\.(example|org|de)", fullmatch=True).filter(
    lambda e: ".." not in e and not e.split("@")[0].endswith("."))
phones = st.one_of(st.none(), st.sampled_from(["+12125550100", "(212) 555-0100", "+442079460958", "12", "", "abc"]))
consents = st.builds(
    Consent, order_id=st.integers(1, 10**9), email=emails, email_marketing=st.booleans(), sms_marketing=st.booleans(),
    phone=phones, consented_at=st.datetimes(min_value=datetime(1995, 1, 1), max_value=datetime(2025, 12, 31),
                                            timezones=st.just(timezone.utc)),
    source=st.text(min_size=1, max_size=80), phone_region=st.sampled_from(["US", "GB", "DE"]))


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(consent=consents, historical=st.booleans(), more=st.integers(0, 3))
def test_every_buildable_body_validates_against_the_official_slice(consent, historical, more):
    built = build_subscription(consent, historical=historical)
    if built.event is None:
        assert not consent.email_marketing
        return
    body = bulk_subscribe_body([built.event.body] * (1 + more), "Y6nRLr")
    assert validate_bulk_subscribe(body, now=datetime.now(timezone.utc) + timedelta(minutes=1)) == []


def test_the_check_catches_a_broken_body():
    body = bulk_subscribe_body([build_subscription(Consent(order_id=1, email="a@buyer.example", email_marketing=True,
                                                           consented_at=CONSENTED)).event.body], "Y6nRLr")
    body["data"]["attributes"]["profiles"]["data"][0]["attributes"]["subscriptions"]["email"]["marketing"][
        "consented_at"] = "2026-03-01T17:30:05Z"  # a time without historical_import: Klaviyo refuses it
    assert validate_bulk_subscribe(body)
