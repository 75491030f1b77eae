"""The organizer's journey through "Set up flows and segments" in a real Chromium: open the panel from the Klaviyo card,
add the Event Reminder (Klaviyo asks for one more permission: Reconnect), add the VIP segment, watch both reach
Klaviyo as drafts while the panel polls, and find them on the sandbox's page with their trigger, e-mail and
definition."""
import re

import pytest
from playwright.sync_api import Page, expect

pytestmark = [pytest.mark.browser,
              pytest.mark.filterwarnings("ignore:Passing SelectField choices as tuples:DeprecationWarning")]

SYNC_TIMEOUT = 30_000  # ms: a real worker creating drafts at Klaviyo's 1 a second


def open_panel(page: Page):
    card = page.get_by_role("article", name=re.compile("Klaviyo"))
    card.get_by_role("link", name="Set up flows and segments").click()
    panel = page.get_by_role("region", name="Set up flows and segments")
    expect(panel).to_be_visible()
    return panel


def recipe(panel, name: str):
    return panel.get_by_role("listitem").filter(has=panel.page.get_by_text(name, exact=True))


def test_add_the_reminder_and_the_vip_segment_and_see_them_in_klaviyo(page: Page, live, sandbox, connected,
                                                                     start_worker, log_in):
    start_worker()
    log_in(page)
    page.goto("/manage/integrations/")
    panel = open_panel(page)
    expect(panel).to_contain_text("Everything is created as a draft")
    reminder = recipe(panel, "Event Reminder")
    expect(reminder).to_contain_text("NextEventStartAt")
    expect(recipe(panel, "Abandoned Checkout")).to_contain_text("Started Checkout")
    expect(recipe(panel, "Abandoned Checkout").get_by_role("button", name="Add Abandoned Checkout to Klaviyo")).to_have_count(1)

    # The first addition asks Klaviyo for the flows and segments permission: Reconnect, then Allow.
    reminder.get_by_role("button", name="Add Event Reminder to Klaviyo").click()
    panel = page.get_by_role("region", name="Set up flows and segments")
    notice = panel.get_by_role("status").filter(has_text="Klaviyo needs one more permission for flows and segments")
    expect(notice).to_be_visible()
    expect(recipe(panel, "Event Reminder")).to_contain_text("Waiting for permission")
    notice.get_by_role("button", name="Reconnect").click()
    expect(page.get_by_text("flows:write")).to_be_visible()  # the consent page names what is asked for
    page.get_by_role("button", name="Allow").click()
    expect(page).to_have_url(re.compile(r"/manage/integrations/?$"))

    panel = open_panel(page)
    reminder = recipe(panel, "Event Reminder")
    expect(reminder).to_contain_text("In Klaviyo · draft", timeout=SYNC_TIMEOUT)
    expect(panel.get_by_role("status").filter(has_text="Klaviyo needs one more permission")).to_have_count(0)

    # The VIP segment, with the text the ticket type's name must contain.
    vip = recipe(panel, "VIP Ticket Holders")
    expect(vip.get_by_label("Ticket type contains")).to_have_value("VIP")
    vip.get_by_role("button", name="Add VIP Ticket Holders to Klaviyo").click()
    panel = page.get_by_role("region", name="Set up flows and segments")
    expect(page.get_by_role("status").filter(has_text="Adding VIP Ticket Holders")).to_be_visible()
    # The status polls itself and brings the row's state along.
    expect(recipe(panel, "VIP Ticket Holders")).to_contain_text("In Klaviyo · draft", timeout=SYNC_TIMEOUT)
    expect(panel.locator("#flows-status")).to_contain_text("2 in Klaviyo")
    expect(panel.locator("#flows-status")).not_to_have_attribute("hx-trigger", re.compile("."))

    # "Open in Klaviyo" lands on the flow (here, the sandbox's page for it).
    link = recipe(panel, "Event Reminder").get_by_role("link", name=re.compile("Open in Klaviyo"))
    expect(link).to_have_attribute("href", re.compile(rf"^{re.escape(sandbox.url)}/flow/\w{{6}}/edit$"))

    # The sandbox's page shows what Klaviyo got: the flow's trigger and draft e-mail, the segment's definition.
    page.goto(sandbox.url + "/")
    flows = page.get_by_role("region", name="Flows")
    flow = flows.get_by_role("article", name="Flow Ticketing: Event Reminder")
    expect(flow).to_contain_text("Date: profile property NextEventStartAt, 1 day before, at 09:00:00")
    expect(flow).to_contain_text("draft")
    expect(flow.get_by_role("listitem")).to_have_text([re.compile("On the date, at 09:00:00"),
                                                        re.compile("E-mail \\(draft\\): “Tomorrow: ")])
    segment = page.get_by_role("region", name="Segments").get_by_role("article",
                                                                      name="Segment Ticketing: VIP Ticket Holders")
    expect(segment).to_contain_text(re.compile(r"Ordered Experience \(\w{6}\): count greater-than-or-equal 1 over all "
                                               r"time where ExperienceName contains 'VIP'"))
    flow.get_by_role("link", name="Ticketing: Event Reminder").click()
    expect(page.get_by_role("heading", name="Ticketing: Event Reminder")).to_be_visible()
