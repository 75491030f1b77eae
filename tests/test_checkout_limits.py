"""The public checkout's abuse limits: a form token serves a few orders, orders per address and per event are
rate-limited with a clear 'try again in a minute', discount-code guesses are limited, and the organizer can cap
orders per e-mail address. Concurrency cases run over real HTTP against a served portal."""
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from sqlalchemy import func, select

from devtools.processes import PortalThread
from portal.events.models import DiscountCode, Event
from portal.extensions import db
from portal.orders.models import Order
from tests.test_storefront import BUYER, info, order_form


def orders(app) -> int:
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(Order))


def test_one_form_token_serves_a_few_orders(client, app, make_organizer, make_event):
    app.config["FORM_TOKEN_MAX_ORDERS"] = 3
    public_id, types = info(app, make_event(make_organizer()))
    page = client.get(f"/e/{public_id}").get_data(as_text=True)
    token = re.search(r'name="form_token" value="([^"]+)"', page).group(1)
    form = {**order_form(types, [1, 0]), "form_token": token}
    statuses = [client.post(f"/e/{public_id}/checkout", data=form).status_code for _ in range(5)]
    assert statuses == [303, 303, 303, 429, 429]
    assert "Reload the page to buy more tickets" in client.post(f"/e/{public_id}/checkout", data=form).get_data(as_text=True)
    assert orders(app) == 3
    fresh = client.post_form(f"/e/{public_id}/checkout", order_form(types, [1, 0]))  # a new visit of the page
    assert fresh.status_code == 303


def test_thirty_purchases_on_one_token_from_one_client_are_mostly_refused(app, make_organizer, make_event):
    from portal import create_app

    config = {**app.config, "FORM_TOKEN_MAX_ORDERS": 3, "CHECKOUT_ORDERS_PER_ADDRESS_PER_MINUTE": 10}
    server = PortalThread()
    server.start(create_app({**config, "PUBLIC_BASE_URL": server.url}))
    try:
        public_id, types = info(app, make_event(make_organizer()))
        page = requests.get(f"{server.url}/e/{public_id}", timeout=10).text
        token = re.search(r'name="form_token" value="([^"]+)"', page).group(1)
        form = {**order_form(types, [1, 0]), "form_token": token}

        def buy(_):
            return requests.post(f"{server.url}/e/{public_id}/checkout", data=form, allow_redirects=False,
                                 timeout=30).status_code

        with ThreadPoolExecutor(max_workers=10) as pool:
            statuses = list(pool.map(buy, range(30)))
    finally:
        server.shutdown()
    assert all(status < 500 for status in statuses), statuses
    assert statuses.count(303) == 3 and statuses.count(429) == 27, statuses
    assert orders(app) == 3


def test_orders_per_address_are_limited_with_a_try_again_page(client, app, make_organizer, make_event):
    app.config["CHECKOUT_ORDERS_PER_ADDRESS_PER_MINUTE"] = 2
    public_id, types = info(app, make_event(make_organizer()))
    answers = [client.post_form(f"/e/{public_id}/checkout", order_form(types, [1, 0])) for _ in range(3)]
    assert [a.status_code for a in answers] == [303, 303, 429]
    assert "Please try again in a minute" in answers[-1].get_data(as_text=True)
    other = app.test_client()
    other.environ_base["REMOTE_ADDR"] = "198.51.100.7"
    assert other.post_form(f"/e/{public_id}/checkout", order_form(types, [1, 0])).status_code == 303


def test_a_trusted_proxy_tells_buyers_apart(app, make_organizer, make_event):
    """Behind a configured proxy, each buyer's own address counts (the checkout benchmark's way through)."""
    from portal import create_app

    proxied = create_app({**app.config, "PROXY_FIX_X_FOR": 1, "CHECKOUT_ORDERS_PER_ADDRESS_PER_MINUTE": 1})
    proxied.test_client_class = app.test_client_class
    public_id, types = info(app, make_event(make_organizer()))
    for buyer in range(3):
        client = proxied.test_client()
        response = client.post_form(f"/e/{public_id}/checkout", order_form(types, [1, 0]),
                                    headers={"X-Forwarded-For": f"203.0.113.{buyer + 1}"})
        assert response.status_code == 303
    assert orders(app) == 3


def test_discount_code_guesses_are_limited(client, app, make_organizer, make_event):
    app.config["DISCOUNT_GUESSES_PER_ADDRESS"] = 3
    event_id = make_event(make_organizer())
    with app.app_context():
        db.session.add(DiscountCode(event_id=event_id, code="REAL10", kind="percent", amount=10))
        db.session.commit()
    public_id, types = info(app, event_id)
    for guess in ("A1", "B2", "C3"):
        page = client.get(f"/e/{public_id}/summary", query_string={f"qty-{types[0]}": "1", "discount_code": guess})
        assert "not valid for this event" in page.get_data(as_text=True)
    page = client.get(f"/e/{public_id}/summary", query_string={f"qty-{types[0]}": "1", "discount_code": "REAL10"})
    assert "Too many codes were tried from your connection" in page.get_data(as_text=True)  # even the right one
    response = client.post_form(f"/e/{public_id}/checkout", order_form(types, [1, 0], discount_code="REAL10"))
    assert response.status_code == 422 and orders(app) == 0


def test_the_organizer_caps_orders_per_e_mail(client, app, make_organizer, make_event):
    event_id = make_event(make_organizer())
    with app.app_context():
        db.session.get(Event, event_id).max_orders_per_email = 2
        db.session.commit()
    public_id, types = info(app, event_id)
    answers = [client.post_form(f"/e/{public_id}/checkout", order_form(types, [1, 0], email=email)).status_code
               for email in (BUYER["email"], BUYER["email"].upper(), BUYER["email"], "other@buyer.example")]
    assert answers == [303, 303, 422, 303]
    assert orders(app) == 3
