"""Issue 12's journeys in a real Chromium: a test purchase Klaviyo would drop is warned about (as it is typed, and
before it is placed), a real one ends "Stored in Klaviyo ✓" with a link to the profile, and a connection revoked in
Klaviyo puts a banner on every page until Reconnect."""
import re

import pytest
from playwright.sync_api import Page, expect

from portal.events.models import Event
from portal.extensions import db
from portal.orders.models import Order
from portal.sync.models import OutboxEvent
from tests.conftest import wait_for

pytestmark = [pytest.mark.browser,
              pytest.mark.filterwarnings("ignore:Passing SelectField choices as tuples:DeprecationWarning")]
FAST = {"VERIFY_RECHECK_SECONDS": "0.3"}
SYNC_TIMEOUT = 25_000


def public_id(live, event_id) -> str:
    with live.app.app_context():
        return db.session.get(Event, event_id).public_id


def latest_order_id(live) -> int:
    with live.app.app_context():
        return db.session.scalar(db.select(Order.id).order_by(Order.id.desc()))


def fill_purchase(page: Page, email: str):
    page.get_by_label(re.compile("General Admission")).fill("1")
    ticket = page.get_by_role("group", name="Ticket 1: General Admission")
    expect(ticket).to_be_visible(timeout=5_000)
    purchaser = page.get_by_role("group", name="Purchaser")
    purchaser.get_by_label("First name").fill("Tess")
    purchaser.get_by_label("Last name").fill("Tester")
    purchaser.get_by_label("E-mail").fill(email)
    ticket.get_by_label("Same as purchaser").check()


def test_a_test_purchase_at_a_dropped_domain_is_warned_about_first(page: Page, live, connected, make_event,
                                                                   start_worker, log_in):
    start_worker(**FAST)
    event_id = make_event(connected)
    log_in(page)
    page.goto(f"/e/{public_id(live, event_id)}?preview=1")
    fill_purchase(page, "tess@example.com")
    # As it is typed (the form's change request): the warning shows before anything is placed.
    notes = page.locator("#checkout-notes")
    expect(notes).to_contain_text("Klaviyo drops events for the purchaser (tess@example.com) at @example.com")
    page.get_by_role("button", name="Get tickets").click()
    # Submitted anyway: the portal asks once more, keeping what was typed.
    warning = page.get_by_role("alert").filter(has_text="Klaviyo drops events for the purchaser")
    expect(warning).to_be_visible()
    expect(page.get_by_role("group", name="Purchaser").get_by_label("E-mail")).to_have_value("tess@example.com")
    page.get_by_label("Place the test order anyway").check()
    page.get_by_role("button", name="Get tickets").click()
    expect(page.get_by_role("heading", name=re.compile("You're going to"))).to_be_visible()
    page.goto(f"/manage/orders/{latest_order_id(live)}")
    check = page.get_by_role("region", name="Is it in Klaviyo?")
    expect(check.get_by_text("Klaviyo dropped it")).to_have_count(2, timeout=SYNC_TIMEOUT)
    expect(check).to_contain_text("a test domain")


def test_a_real_test_purchase_ends_stored_in_klaviyo_with_the_profile(page: Page, live, connected, make_event,
                                                                      start_worker, log_in, sandbox):
    start_worker(**FAST)
    event_id = make_event(connected)
    log_in(page)
    page.goto(f"/e/{public_id(live, event_id)}?preview=1")
    fill_purchase(page, "tess.tester@fastmail.fm")
    expect(page.locator("#checkout-notes")).to_be_empty()
    page.get_by_role("button", name="Get tickets").click()
    expect(page.get_by_role("heading", name=re.compile("You're going to"))).to_be_visible()
    page.goto(f"/manage/orders/{latest_order_id(live)}")
    check = page.get_by_role("region", name="Is it in Klaviyo?")
    # The card polls itself until Klaviyo shows both events, then stops.
    expect(check.get_by_role("img", name="Stored")).to_have_count(2, timeout=SYNC_TIMEOUT)
    expect(check).not_to_have_attribute("hx-trigger", re.compile("every"))
    with page.context.expect_page() as opened:
        check.get_by_role("link", name="See the profile in Klaviyo ↗").first.click()
    profile = opened.value
    expect(profile.get_by_role("heading", name="Profile: tess.tester@fastmail.fm")).to_be_visible()
    assert profile.url.startswith(sandbox.url + "/profile/")
    page.goto("/manage/integrations/")
    checklist = page.get_by_role("region", name="Verify your installation")
    expect(checklist.get_by_role("listitem").last.get_by_role("img", name="Done")).to_be_visible()


def test_a_connection_revoked_in_klaviyo_puts_a_banner_on_every_page_until_reconnect(
        page: Page, live, client, connected, make_event, start_worker, sandbox, log_in):
    start_worker(**FAST)
    event_id = make_event(connected)
    sandbox.uninstall()
    with live.app.app_context():
        event = db.session.get(Event, event_id)
        form = {f"qty-{event.ticket_types[0].id}": "1", "first_name": "Rita", "last_name": "Remote",
                "email": "rita@remote-fans.net", "attendee-0-same": "1"}
    assert client.post_form(f"/e/{event.public_id}/checkout", form).status_code == 303

    def held() -> int:  # the worker has found out: Klaviyo refuses the connection, and holds both events
        with live.app.app_context():
            return db.session.scalar(db.select(db.func.count()).select_from(OutboxEvent)
                                     .where(OutboxEvent.status == "held"))

    wait_for(lambda: held() == 2, timeout=25, message="both events held")
    log_in(page)
    banner = page.get_by_role("alert").filter(has_text="Klaviyo needs you to reconnect")
    expect(banner).to_be_visible()
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Events").click()
    expect(page.get_by_role("heading", name="Events", level=1)).to_be_visible()
    expect(banner).to_contain_text("2 events are held until you do")
    banner.get_by_role("button", name="Reconnect").click()
    page.get_by_role("button", name="Allow").click()
    expect(page).to_have_url(re.compile(r"/manage/integrations/?$"))
    expect(page.get_by_role("alert").filter(has_text="Klaviyo needs you to reconnect")).to_have_count(0)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Events").click()
    expect(page.locator("#klaviyo-alert")).to_have_count(0)
