"""A store's marketing consent maps to the same consent record as the portal's checkout: Shopify's
buyer_accepts_marketing and customer consent states, Wix's custom checkout fields. No consent field, no consent."""
import copy
from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from portal.channels import consent
from portal.consent.models import OrderConsent
from portal.extensions import db
from portal.orders.models import Order
from tests.conftest import oauth_connect, sync_settled, wait_for
from tests.test_channels import post_shopify, shopify_channel, shopify_order, wix_event
from tests.test_subscriptions import enable_subscriptions, subscribers


@pytest.mark.parametrize("order, customer, email, sms", [
    ({"buyer_accepts_marketing": True}, {}, True, False),
    ({"buyer_accepts_marketing": False}, {}, False, False),
    ({}, {}, False, False),  # no field: no consent
    ({}, {"email_marketing_consent": {"state": "subscribed"}}, True, False),
    ({}, {"email_marketing_consent": {"state": "pending"}}, False, False),
    # The customer unsubscribed later: never subscribed again, whatever the order's box said.
    ({"buyer_accepts_marketing": True}, {"email_marketing_consent": {"state": "unsubscribed"}}, False, False),
    ({"buyer_accepts_marketing": True}, {"email_marketing_consent": {"state": "redacted"}}, False, False),
    ({}, {"sms_marketing_consent": {"state": "subscribed"}}, False, True),
    ({"buyer_accepts_marketing": "yes"}, {"email_marketing_consent": "subscribed"}, False, False),  # not the shape
])
def test_shopify_consent(order, customer, email, sms):
    read = consent.shopify(order, customer)
    assert (read.email, read.sms) == (email, sms)
    assert read.detail.startswith("Shopify: ")


def test_shopify_consent_keeps_when_and_how():
    read = consent.shopify({"buyer_accepts_marketing": True, "customer_locale": "de-CH"}, {
        "email_marketing_consent": {"state": "subscribed", "opt_in_level": "confirmed_opt_in",
                                    "consent_updated_at": "2026-04-30T08:00:00-04:00"}})
    assert read.consented_at == datetime(2026, 4, 30, 12, tzinfo=timezone.utc) and read.language == "de-CH"
    assert read.detail == ("Shopify: buyer_accepts_marketing = true; customer email_marketing_consent = subscribed "
                           "(confirmed_opt_in)")


@pytest.mark.parametrize("fields, email, sms", [
    ([], False, False),
    (None, False, False),
    ([{"title": "Send me news about upcoming events", "value": "true"}], True, False),
    ([{"title": "Subscribe to our newsletter", "value": "Yes"}], True, False),
    ([{"title": "Newsletter", "value": "false"}], False, False),
    ([{"title": "SMS offers", "value": "true"}], False, True),
    ([{"title": "Dietary needs", "value": "vegan"}], False, False),
    ([{"title": "Newsletter"}, "junk", {"value": "true"}], False, False),
])
def test_wix_consent_from_custom_checkout_fields(fields, email, sms):
    order = copy.deepcopy(wix_event()["actionEvent"]["body"]["order"])
    order["customFields"] = fields
    read = consent.wix(order)
    assert (read.email, read.sms) == (email, sms) and read.language == "en"


def test_a_shopify_order_with_consent_subscribes_and_one_without_does_not(app, client, organizer, make_event,
                                                                           sandbox, start_worker):
    make_event(organizer, types=[("General Admission", "75.00", "0.00"), ("VIP", "150.00", "0.00")])
    shopify_channel(app, organizer)
    assert oauth_connect(client, sandbox.url).status_code == 303
    list_id = enable_subscriptions(client, app, sandbox)
    start_worker()
    agreed = shopify_order()  # buyer_accepts_marketing: true, email_marketing_consent: subscribed
    assert post_shopify(client, agreed).status_code == 200
    declined = shopify_order()
    declined.update(id=5834921377891, name="#1002", email="kim@new.example", buyer_accepts_marketing=False)
    declined["customer"] = {**declined["customer"], "email": "kim@new.example", "email_marketing_consent": None}
    assert post_shopify(client, declined, webhook_id="0c5a7e3b-0000-4b37-8a5f-bf7d70bcd044").status_code == 200
    wait_for(lambda: subscribers(sandbox, list_id) and sync_settled(app), message="the Shopify subscription")
    (subscriber,) = subscribers(sandbox, list_id)
    assert subscriber["email"] == "pat@buyer.example" and subscriber["custom_source"] == "Shopify checkout"
    with app.app_context():
        records = {order.email: order.consent for order in db.session.scalars(select(Order))}
        assert records["pat@buyer.example"].email_marketing and records["pat@buyer.example"].channel == "shopify"
        assert records["pat@buyer.example"].consented_at == datetime(2026, 5, 1, 14, 15, 3, tzinfo=timezone.utc)
        assert records["pat@buyer.example"].email_text is None  # Shopify's own wording: the portal never saw it
        assert not records["kim@new.example"].email_marketing
        assert "buyer_accepts_marketing = false" in records["kim@new.example"].source_detail
        assert db.session.scalar(select(OrderConsent).where(OrderConsent.email_marketing.is_(True))
                                 .where(OrderConsent.channel != "shopify")) is None
