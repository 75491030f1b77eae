"""The organizer's list-subscription journey in a real Chromium: turn it on, reconnect for the permission, choose
the list, buy with the box ticked, and see the subscription on the sandbox's received page.

Run: .venv/bin/python -m pytest tests/browser/test_subscription_journey.py -q
"""
import re

import pytest
from playwright.sync_api import Page, expect

from portal.events.models import Event
from portal.extensions import db

pytestmark = [
    pytest.mark.browser,
    pytest.mark.filterwarnings("ignore:Passing SelectField choices as tuples:DeprecationWarning"),
]
SYNC_TIMEOUT = 25_000  # ms: a real worker on a real Redis, against the sandbox


def test_enable_reconnect_choose_list_buy_and_see_the_subscription(page: Page, live, app, sandbox, connected,
                                                                  make_event, start_worker, log_in):
    event_id = make_event(connected)
    with app.app_context():
        public_id = db.session.get(Event, event_id).public_id
    start_worker()
    log_in(page)

    # Turn it on from the Klaviyo card.
    page.goto("/manage/integrations/")
    page.get_by_role("link", name="List subscriptions").click()
    expect(page.get_by_role("heading", name="List subscriptions", level=1)).to_be_visible()
    switch = page.get_by_label("Subscribe consenting buyers to a Klaviyo list")
    expect(switch).not_to_be_checked()
    switch.check()
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.get_by_text("Klaviyo needs one more permission for list subscriptions")).to_be_visible()

    # Reconnect: Klaviyo's consent page asks for the list permissions too.
    page.get_by_role("button", name="Reconnect").click()
    expect(page.get_by_role("heading", name=re.compile("wants to access your Klaviyo account"))).to_be_visible()
    expect(page.get_by_text("subscriptions", exact=False).first).to_be_visible()
    page.get_by_role("button", name="Allow").click()
    expect(page).to_have_url(re.compile(r"/manage/integrations/?$"))
    expect(page.get_by_text("Choose the Klaviyo list consenting buyers are subscribed to")).to_be_visible()

    # Choose the list.
    page.get_by_role("link", name="Choose the list").click()
    page.get_by_label("Your lists in Klaviyo").select_option(label="Newsletter")
    page.get_by_role("button", name="Use this list").click()
    expect(page.get_by_text("Consenting buyers are subscribed to “Newsletter”.")).to_be_visible()
    expect(page.locator("#chosen-list")).to_have_text("Newsletter")

    # Buy on the Event Page with the box ticked; the SMS box shows once a phone is typed.
    page.goto(f"/e/{public_id}")
    page.get_by_label(re.compile("General Admission")).fill("1")
    purchaser = page.get_by_role("group", name="Purchaser")
    purchaser.get_by_label("First name").fill("Pat")
    purchaser.get_by_label("Last name").fill("Buyer")
    purchaser.get_by_label("E-mail").fill("pat@buyer.example")
    sms = page.get_by_label(re.compile("Send me text messages"))
    expect(sms).to_be_hidden()
    purchaser.get_by_label("Phone").fill("+1 212 555 0100")
    expect(sms).to_be_visible()
    page.get_by_role("group", name=re.compile(r"^Ticket 1:")).get_by_label("Same as purchaser").check()
    news = page.get_by_label("Send me news about upcoming events from Ada Events")
    expect(news).not_to_be_checked()
    news.check()
    page.get_by_role("button", name="Get tickets").click()
    expect(page.get_by_text(re.compile("Total paid"))).to_be_visible()

    # The sandbox's received page: the list, its subscriber, the consent's source and time.
    page.goto(sandbox.url + "/")
    newsletter = page.get_by_role("article", name="List Newsletter")
    row = newsletter.locator("tr", has_text="pat@buyer.example")
    for _ in range(50):
        if row.count():
            break
        page.wait_for_timeout(500)
        page.reload()
    expect(row).to_be_visible(timeout=SYNC_TIMEOUT)
    expect(row).to_contain_text("Ticket checkout (Event Page)")
    expect(row).to_contain_text("subscribed")
    expect(row.locator(".consent-time")).to_have_text(re.compile(r"^\d{4}-\d{2}-\d{2}T"))
