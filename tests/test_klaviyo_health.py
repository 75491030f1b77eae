"""Issue 12 against the sandbox over HTTP with real worker processes: a test order's events read back from Klaviyo
(stored ✓, not visible yet, dropped), the warning before a test purchase Klaviyo would drop, alerts (banner, one
mail per incident and one when resolved, the history), and the double-send guard."""
import re
import time

import pytest
import requests

from devtools.mailcatcher import MailCatcher
from portal.events.models import Event
from portal.extensions import db
from portal.orders.models import Order
from portal.sync.health_models import Incident, MetricGuard
from tests.conftest import oauth_connect, sandbox_events, wait_for
from tests.test_sync_worker import buy

FAST = {"VERIFY_RECHECK_SECONDS": "0.3", "ALERT_HELD_MINUTES": "0.01"}
REAL = {"first_name": "Tess", "last_name": "Tester", "email": "tess.tester@fastmail.fm"}
DROPPED = {"first_name": "Tess", "last_name": "Tester", "email": "tess@example.com"}
GUEST = {"first_name": "Sam", "last_name": "Guest", "email": "sam@guest-list.net"}


@pytest.fixture(scope="module")
def mail_catcher():
    catcher = MailCatcher().start()
    yield catcher
    catcher.stop()


@pytest.fixture
def mailbox(mail_catcher):
    mail_catcher.clear()
    return mail_catcher


def latest_order(app) -> Order:
    with app.app_context():
        order = db.session.scalars(db.select(Order).order_by(Order.id.desc())).first()
        db.session.expunge(order)
        return order


def check(client, order_id) -> str:
    response = client.get(f"/manage/integrations/klaviyo/orders/{order_id}/check", headers={"HX-Request": "true"})
    assert response.status_code == 200
    return response.get_data(as_text=True)


def states(fragment: str) -> list[str]:
    return re.findall(r'data-state="([a-z_]+)"', fragment)


def steps(page: str) -> list[bool]:
    block = re.search(r'<ol class="steps">(.*?)</ol>', page, re.S).group(1)
    return ['aria-label="Done"' in item for item in re.findall(r"<li.*?</li>", block, re.S)]


def event_reads(sandbox, since: float) -> int:
    return sum(1 for r in sandbox.api_requests_after(since) if r["path"] == "/api/events" and r["method"] == "GET")


# --- reading a test order back ------------------------------------------------------------------------------------

def test_example_com_buyer_is_warned_first_then_its_events_show_dropped(client, app, connected, make_event, sandbox,
                                                                        start_worker):
    start_worker(**FAST)
    event_id = make_event(connected)
    warned = buy(client, app, event_id, [(0, "same")], DROPPED, preview=True)
    assert warned.status_code == 422
    page = warned.get_data(as_text=True)
    assert "Klaviyo drops events for the purchaser (tess@example.com) at @example.com" in page
    assert 'name="test_domain_ok"' in page and 'value="tess@example.com"' in page  # what was typed is kept
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count()).select_from(Order)) == 0  # nothing was placed
    # A real purchase is never held back: only the organizer's test purchase is warned about.
    assert buy(client, app, event_id, [(0, "same")], {**DROPPED, "email": "fan@example.com"}).status_code == 303
    since = time.time()
    placed = client.post_form(f"/e/{public_id(app, event_id)}/checkout?preview=1",
                              {**form_of(app, event_id, DROPPED), "test_domain_ok": "1"})
    assert placed.status_code == 303
    order = latest_order(app)
    assert order.is_test
    final = wait_for(lambda: (f := check(client, order.id)) and states(f) == ["dropped", "dropped"] and f,
                     message="both events read back as dropped")
    assert final.count("Klaviyo dropped it") == 2
    assert "tess@example.com is at example.com, a test domain" in final
    assert "hx-trigger" not in final  # settled: the polling stops
    # It really asked Klaviyo: Klaviyo has no Placed Order metric at all (nothing of it was kept), so Get Metrics
    # already says so and no event needs reading.
    assert any(r["path"] == "/api/metrics" for r in sandbox.api_requests_after(since))
    checklist = client.get("/manage/integrations/klaviyo/checklist").get_data(as_text=True)
    assert steps(checklist)[3] is False and "Klaviyo dropped 2 of this test order" in checklist
    assert not [e for e in sandbox_events(sandbox.url) if e["profile"]["email"] == "tess@example.com"]


def public_id(app, event_id) -> str:
    with app.app_context():
        return db.session.get(Event, event_id).public_id


def form_of(app, event_id, purchaser, attendee="same") -> dict:
    with app.app_context():
        type_id = db.session.get(Event, event_id).ticket_types[0].id
    form = {**purchaser, f"qty-{type_id}": "1"}
    if attendee == "same":
        form["attendee-0-same"] = "1"
    else:
        form.update({f"attendee-0-{k}": v for k, v in attendee.items()})
    return form


def test_a_real_looking_address_ends_stored_with_a_link_to_the_profile(client, app, connected, make_event, sandbox,
                                                                       start_worker):
    start_worker(**FAST)
    event_id = make_event(connected)
    assert buy(client, app, event_id, [(0, "same"), (0, GUEST)], REAL, preview=True).status_code == 303
    order = latest_order(app)
    final = wait_for(lambda: (f := check(client, order.id)) and states(f) == ["stored"] * 4 and f,
                     message="every event stored in Klaviyo")
    assert final.count("Stored in Klaviyo") == 4 and "hx-trigger" not in final
    links = set(re.findall(r'href="([^"]+/profile/[^"]+)"', final))
    assert len(links) == 2 and all(link.startswith(sandbox.url + "/profile/") for link in links)  # buyer, attendee
    assert all(requests.get(link, timeout=5).status_code == 200 for link in links)
    checklist = client.get("/manage/integrations/klaviyo/checklist").get_data(as_text=True)
    assert steps(checklist)[3] is True
    # The order page shows the same check, and a test order's events say so in Klaviyo.
    assert "Stored in Klaviyo" in client.get(f"/manage/orders/{order.id}").get_data(as_text=True)
    assert {e["properties"]["IsTest"] for e in sandbox_events(sandbox.url)} == {True}


def test_accepted_not_visible_yet_is_looked_for_again_until_stored(client, app, connected, make_event, sandbox,
                                                                   start_worker):
    sandbox.configure(events_visible_after=3)  # Klaviyo's processing delay
    try:
        start_worker(**FAST)
        event_id = make_event(connected)
        assert buy(client, app, event_id, [(0, "same")], REAL, preview=True).status_code == 303
        order = latest_order(app)
        waiting = wait_for(lambda: (f := check(client, order.id)) and states(f) == ["waiting"] * 2 and f,
                           message="accepted, not visible yet")
        assert "Accepted, not visible yet" in waiting and 'hx-trigger="every 2s"' in waiting
        checklist = client.get("/manage/integrations/klaviyo/checklist", headers={"HX-Request": "true"})
        assert 'hx-trigger="every 3s"' in checklist.get_data(as_text=True)  # still looking
        wait_for(lambda: states(check(client, order.id)) == ["stored"] * 2, timeout=25,
                 message="stored once Klaviyo shows them")
    finally:
        sandbox.configure(events_visible_after=0)


def test_a_connection_without_events_read_keeps_working_and_waits_for_a_reconnect(client, app, organizer, make_event,
                                                                                  sandbox, start_worker):
    app.config["KLAVIYO_SCOPES"] = "accounts:read events:write"  # a connection made before events:read was asked
    assert oauth_connect(client, sandbox.url).status_code == 303
    start_worker(**FAST)
    event_id = make_event(organizer)
    since = time.time()
    assert buy(client, app, event_id, [(0, "same")], REAL, preview=True).status_code == 303
    order = latest_order(app)
    fragment = wait_for(lambda: (f := check(client, order.id)) and states(f) == ["no_permission"] * 2 and f,
                        message="accepted, waiting for a reconnect")
    assert "reconnect Klaviyo: the portal now asks to read events back (events:read)" in fragment
    assert "hx-trigger" not in fragment  # nothing to poll for until the organizer reconnects
    assert "Reconnect Klaviyo so the portal may read events back" in \
        client.get("/manage/integrations/klaviyo/checklist").get_data(as_text=True)
    assert event_reads(sandbox, since) == 0
    app.config["KLAVIYO_SCOPES"] = "accounts:read events:read events:write metrics:read"
    assert oauth_connect(client, sandbox.url).status_code == 303  # Reconnect: the base scopes again
    wait_for(lambda: states(check(client, order.id)) == ["stored"] * 2, message="stored after the reconnect")


def test_check_again_after_the_window_and_other_organizers_orders_are_404(client, app, connected, make_event, login,
                                                                          make_organizer, start_worker):
    start_worker(**FAST)
    event_id = make_event(connected)
    assert buy(client, app, event_id, [(0, "same")], REAL, preview=True).status_code == 303
    order = latest_order(app)
    wait_for(lambda: states(check(client, order.id)) == ["stored"] * 2, message="stored")
    again = client.post_form(f"/manage/integrations/klaviyo/orders/{order.id}/check")
    assert again.status_code == 303
    wait_for(lambda: states(check(client, order.id)) == ["stored"] * 2, message="stored again")
    assert buy(client, app, event_id, [(0, "same")], REAL).status_code == 303  # a real order: no check card
    real = latest_order(app)
    assert client.get(f"/manage/integrations/klaviyo/orders/{real.id}/check").status_code == 404
    other = app.test_client()
    make_organizer(email="bo@organizer.example")
    login(email="bo@organizer.example", who=other)
    assert other.get(f"/manage/integrations/klaviyo/orders/{order.id}/check").status_code == 404
    assert other.post_form(f"/manage/integrations/klaviyo/orders/{order.id}/check").status_code == 404


# --- alerts -------------------------------------------------------------------------------------------------------

def banner(client, path="/manage/events/") -> str | None:
    page = client.get(path).get_data(as_text=True)
    found = re.search(r'<div class="alert-banner[^"]*" role="alert" id="klaviyo-alert">(.*?)</div>\s*</div>', page, re.S)
    # Its words (tags dropped), and its buttons after a "|".
    buttons = re.findall(r"<button[^>]*>([^<]+)</button>", found.group(1)) if found else []
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", found.group(1))).strip() + " | " + ", ".join(buttons) \
        if found else None


def incident(app) -> Incident | None:
    with app.app_context():
        found = db.session.scalars(db.select(Incident).order_by(Incident.id.desc())).first()
        if found is not None:
            db.session.expunge(found)
        return found


def test_revoked_grant_gives_a_banner_and_one_alert_mail_and_reconnect_one_resolved_mail(
        client, app, connected, make_event, sandbox, start_worker, mailbox):
    start_worker(MAIL_URL=mailbox.url, **FAST)
    event_id = make_event(connected)
    sandbox.uninstall()  # the organizer removes the app inside Klaviyo
    assert banner(client) is None
    assert buy(client, app, event_id, [(0, "same")], REAL).status_code == 303
    [alert] = wait_for(lambda: mailbox.messages(), message="the alert mail")
    assert alert["to"] == ["ada@organizer.example"]
    assert alert["subject"] == "Action needed: reconnect Klaviyo, your ticket sales are being held"
    assert "nothing is lost" in alert["body"] and "http://localhost/manage/integrations/" in alert["body"]
    shown = wait_for(lambda: banner(client), message="the banner")
    assert "Klaviyo needs you to reconnect. 2 events are held until you do; nothing is lost." in shown
    assert shown.endswith("| Reconnect")
    assert banner(client, "/manage/integrations/") is not None  # on every organizer page
    # More held events later are the same incident: the sweeper sees them (held_most), and no second mail goes.
    assert buy(client, app, event_id, [(0, "same")], REAL).status_code == 303
    wait_for(lambda: incident(app).held_most == 4, message="the open incident counting 4 held events")
    assert len(mailbox.messages()) == 1
    assert "4 events are held" in banner(client)
    assert oauth_connect(client, sandbox.url).status_code == 303  # Reconnect
    wait_for(lambda: len(mailbox.messages()) == 2, message="the resolved mail")
    resolved = mailbox.messages()[1]
    assert resolved["subject"] == "Resolved: your ticket sales reach Klaviyo again"
    assert banner(client) is None
    wait_for(lambda: len([e for e in sandbox_events(sandbox.url) if e["metric"] == "Placed Order"]) == 2,
             message="the held events sent after the reconnect")
    over = incident(app)
    assert over.resolved_at is not None and over.opened_mail == "sent" and over.resolved_mail == "sent"
    details = client.get("/manage/integrations/klaviyo").get_data(as_text=True)
    history = re.search(r'<section id="klaviyo-incidents".*?</section>', details, re.S).group(0)
    assert "Needs reconnect" in history and ">4<" in history and "Klaviyo accepts events again" in history
    assert len(mailbox.messages()) == 2


def test_failed_events_give_a_banner_with_retry_failed_and_one_mail_each_way(
        client, app, connected, make_event, sandbox, start_worker, mailbox):
    sandbox.add_faults({"status": 400, "paths": ["/api/events"], "count": 2})  # Klaviyo refuses both events
    start_worker(MAIL_URL=mailbox.url, **FAST)
    event_id = make_event(connected)
    assert buy(client, app, event_id, [(0, "same")], REAL).status_code == 303
    shown = wait_for(lambda: (b := banner(client)) and "2 events failed" in b and b, message="the banner for both")
    assert "2 events failed to reach Klaviyo. Each order page says why." in shown and shown.endswith("| Retry failed")
    [alert] = wait_for(lambda: mailbox.messages(), message="the alert mail")
    assert alert["subject"] == "Ticket sales are not reaching Klaviyo"
    retried = client.post_form("/manage/integrations/klaviyo/retry-failed", {"next": "/manage/events/"})
    assert retried.status_code == 303 and retried.headers["Location"].endswith("/manage/events/")
    wait_for(lambda: len(mailbox.messages()) == 2, message="the resolved mail")
    assert banner(client) is None
    assert len(sandbox_events(sandbox.url)) == 2
    # An outside address for `next` is never followed.
    away = client.post_form("/manage/integrations/klaviyo/retry-failed", {"next": "//evil.example/"})
    assert away.status_code == 303 and away.headers["Location"].endswith("/manage/integrations/")


def test_without_a_mail_server_the_incident_is_kept_and_says_no_mail_went(app, client, connected):
    from portal.sync import connection as klaviyo, incidents

    with app.app_context():
        klaviyo.needs_reconnect(klaviyo.connection_for(connected), "Klaviyo rejected the token.")
        incidents.sweep()
        incidents.sweep()  # twice: still one incident
        assert db.session.scalar(db.select(db.func.count()).select_from(Incident)) == 1
    opened = incident(app)
    assert opened.kind == "needs_reconnect" and opened.opened_mail == "off" and opened.resolved_at is None
    assert "Klaviyo rejected the token." in opened.reason
    details = client.get("/manage/integrations/klaviyo").get_data(as_text=True)
    assert "not sent (no mail server set)" in details and "Ongoing" in details


# --- the double-send guard ----------------------------------------------------------------------------------------

def test_a_placed_order_from_another_integration_makes_the_guard_show(client, app, organizer, sandbox, start_worker):
    added = requests.post(f"{sandbox.url}/_sandbox/metrics", timeout=5, json={
        "name": "Placed Order", "integration": {"name": "Shopify", "key": "shopify", "category": "eCommerce"}})
    assert added.status_code == 201
    start_worker()
    assert oauth_connect(client, sandbox.url).status_code == 303
    guard = "Placed Order already comes from Shopify in your Klaviyo account."

    def card():
        page = client.get("/manage/integrations/").get_data(as_text=True)
        return re.search(r'<article class="card" id="klaviyo-card".*?</article>', page, re.S).group(0)

    shown = wait_for(lambda: guard in card() and card(), message="the guard on the Klaviyo card")
    assert "send each order one way only" in shown
    assert guard in client.get("/manage/channels/shopify/connect").get_data(as_text=True)  # in the Shopify setup
    assert any(r["path"] == "/api/metrics" for r in sandbox.api_requests_after(0))


def test_our_own_placed_order_is_not_another_integration(client, app, connected, make_event, sandbox, start_worker):
    start_worker()
    assert buy(client, app, make_event(connected), [(0, "same")], REAL).status_code == 303
    wait_for(lambda: len(sandbox_events(sandbox.url)) == 2, message="our Placed Order in Klaviyo")
    assert client.post_form("/manage/integrations/klaviyo/guard", {"next": "/manage/integrations/"}).status_code == 303

    def checked():
        with app.app_context():
            return db.session.scalar(db.select(MetricGuard.status).where(MetricGuard.organizer_id == connected))

    assert wait_for(lambda: checked() in ("clear", "found") and checked()) == "clear"
    assert "Placed Order already comes from" not in client.get("/manage/integrations/").get_data(as_text=True)
