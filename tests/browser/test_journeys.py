"""The organizer's journeys in a real Chromium: connect Klaviyo (issue 2) and verify the installation (issue 3).

Run: .venv/bin/python -m pytest tests/browser -q
"""
import re
import threading

import pytest
import requests
from playwright.sync_api import Page, expect
from werkzeug.serving import make_server

pytestmark = [
    pytest.mark.browser,
    # App bug, reported: portal/events/forms.py DiscountForm.kind passes SelectField choices as tuples, which
    # WTForms 3.3 deprecates; with pytest.ini's `filterwarnings = error` the event page then fails with a 500
    # in the live server's thread. Fix: choices=[SelectChoice("percent", "Percent off"), ...].
    pytest.mark.filterwarnings("ignore:Passing SelectField choices as tuples:DeprecationWarning"),
]

ORG = "Sandbox Festival Co."
EMAIL = "ada@organizer.example"  # make_organizer's default
SYNC_TIMEOUT = 25_000  # ms: a real worker on a real Redis, against the sandbox


def klaviyo_card(page: Page):
    marketing = page.get_by_role("region", name="Marketing Automation")
    expect(marketing).to_be_visible()
    return marketing.get_by_role("article", name=re.compile("Klaviyo"))


def open_integrations_from_nav(page: Page):
    nav = page.get_by_role("navigation", name="Main")
    nav.get_by_role("link", name="Integrations").click()
    expect(page).to_have_url(re.compile(r"/manage/integrations/?$"))
    expect(nav.get_by_role("link", name="Integrations")).to_have_attribute("aria-current", "page")


def connect_through_consent(page: Page):
    """Connect → the sandbox's consent page → Allow → back on Integrations with the green check."""
    card = klaviyo_card(page)
    card.get_by_role("button", name="Connect").click()
    expect(page.get_by_role("heading", name=re.compile("wants to access your Klaviyo account"))).to_be_visible()
    expect(page.get_by_text(ORG)).to_be_visible()
    page.get_by_role("button", name="Allow").click()
    expect(page).to_have_url(re.compile(r"/manage/integrations/?$"))
    expect(klaviyo_card(page).get_by_role("img", name="Connected")).to_be_visible()


def test_connect_view_details_and_disconnect(page: Page, live, sandbox, make_organizer, log_in):
    make_organizer()
    log_in(page)
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Events").click()
    expect(page.get_by_role("heading", name="Events", level=1)).to_be_visible()
    open_integrations_from_nav(page)

    card = klaviyo_card(page)
    expect(card.get_by_role("heading", name="Klaviyo")).to_be_visible()
    expect(card.get_by_role("img", name="Connected")).to_have_count(0)
    connect_through_consent(page)
    card = klaviyo_card(page)
    expect(card).to_contain_text(f"Connected to {ORG}")
    expect(page.get_by_role("region", name="Verify your installation")).to_be_visible()

    # The ⋯ menu works from the keyboard: Escape closes it and focus goes back to the button.
    more = card.get_by_role("button", name=re.compile("More actions"))
    menu = page.get_by_role("menu")
    more.click()
    expect(menu).to_be_visible()
    expect(menu.get_by_role("menuitem", name="View Details")).to_be_focused()
    page.keyboard.press("Escape")
    expect(menu).to_be_hidden()
    expect(more).to_be_focused()
    assert page.evaluate("document.activeElement.id") == "klaviyo-more"

    # View Details: the sandbox account as Klaviyo's /api/accounts describes it.
    more.click()
    menu.get_by_role("menuitem", name="View Details").click()
    details = page.get_by_role("region", name="Klaviyo connection details")
    expect(details).to_be_visible()
    expect(details).to_contain_text(ORG)
    expect(details).to_contain_text("SBX01HXYZ")
    expect(details).to_contain_text("events:write")
    expect(details).to_contain_text(EMAIL)
    expect(menu).to_be_hidden()

    # Disconnect, after confirming.
    more.click()
    menu.get_by_role("menuitem", name="Disconnect").click()
    confirm = page.get_by_role("region", name="Disconnect Klaviyo?")
    expect(confirm).to_contain_text("Nothing more will be sent to Klaviyo; what Klaviyo already has stays there")
    confirm.get_by_role("button", name="Disconnect").click()
    card = klaviyo_card(page)
    expect(card.get_by_role("button", name="Connect")).to_be_visible()
    expect(card.get_by_role("img", name="Connected")).to_have_count(0)
    expect(card.get_by_role("button", name=re.compile("More actions"))).to_have_count(0)
    expect(page.get_by_role("region", name="Verify your installation")).to_have_count(0)

    revokes = requests.get(f"{sandbox.url}/_sandbox/stats", timeout=5).json()["revokes"]
    assert len(revokes) == 1, revokes
    assert revokes[0]["via"] == "oauth_revoke" and revokes[0]["account_id"] == "SBX01HXYZ", revokes
    assert revokes[0]["token_type_hint"] == "refresh_token", revokes


def test_verify_installation_with_a_test_purchase(page: Page, live, sandbox, connected, start_worker, log_in):
    start_worker()
    log_in(page)
    nav = page.get_by_role("navigation", name="Main")

    # 1. Create a test event, add a ticket type, make it live.
    nav.get_by_role("link", name="Events").click()
    page.get_by_role("link", name="Create event").first.click()
    expect(page.get_by_role("heading", name="Create an event")).to_be_visible()
    page.get_by_label("Event name").fill("Harbour Lights Festival")
    page.get_by_label("Venue or location").fill("Pier 4, Boston")
    page.get_by_label("Starts").fill("2027-09-11T18:00")
    page.get_by_label("Ends").fill("2027-09-11T23:30")
    page.get_by_label("Time zone").select_option("America/New_York")
    page.get_by_label("Currency").select_option("USD")
    page.get_by_label("Description").fill("Lanterns, food trucks and three stages by the water.")
    page.get_by_role("button", name="Create event").click()
    expect(page.get_by_role("heading", name=re.compile("Harbour Lights Festival"), level=1)).to_be_visible()
    expect(page.get_by_text("Sat 11 Sep 2027, 6:00 PM EDT")).to_be_visible()

    add = page.get_by_role("region", name="Add a ticket type")
    add.get_by_label("Ticket name").fill("General Admission")
    add.get_by_label("Price").fill("40.00")
    add.get_by_label("Service fee per ticket").fill("3.50")
    add.get_by_label("Capacity").fill("100")
    add.get_by_role("button", name="Add ticket type").click()
    expect(page.get_by_role("region", name="Ticket types").get_by_role("cell", name="General Admission")).to_be_visible()
    page.get_by_role("button", name="Make live").click()
    expect(page.get_by_role("heading", level=1).get_by_text("Live")).to_be_visible()

    # 2. Widget Customization: settings change the live preview (the iframe reloads with them).
    page.get_by_role("link", name="Widget Customization").click()
    expect(page.get_by_role("heading", name="Widget Customization")).to_be_visible()
    widget = page.frame_locator("#widget-frame")
    expect(widget.get_by_role("button", name="Get tickets")).to_be_visible()
    label = page.get_by_label("Button label")
    label.fill("Buy festival passes")
    label.press("Tab")
    buy = widget.get_by_role("button", name="Buy festival passes")
    expect(buy).to_be_visible()
    accent = page.get_by_label("Accent colour", exact=True)
    accent.fill("#0f766e")
    accent.press("Tab")
    expect(buy).to_have_css("background-color", "rgb(15, 118, 110)")
    # The settings were saved: they survive a reload (which also leaves no preview refresh pending).
    page.reload()
    expect(page.get_by_label("Button label")).to_have_value("Buy festival passes")
    expect(buy).to_have_css("background-color", "rgb(15, 118, 110)")

    # 3. Buy 2 tickets inside the preview: attendee 1 is the purchaser, attendee 2 someone else.
    widget.get_by_label(re.compile("General Admission")).fill("2")
    first = widget.get_by_role("group", name="Ticket 1: General Admission")
    second = widget.get_by_role("group", name="Ticket 2: General Admission")
    expect(second).to_be_visible(timeout=5_000)
    purchaser = widget.get_by_role("group", name="Purchaser")
    purchaser.get_by_label("First name").fill("Pat")
    purchaser.get_by_label("Last name").fill("Buyer")
    purchaser.get_by_label("E-mail").fill("pat@buyer.example")
    purchaser.get_by_label(re.compile("Phone")).fill("+1 617 555 0142")
    first.get_by_label("Same as purchaser").check()
    expect(first.get_by_label("First name")).to_be_hidden()
    second.get_by_label("First name").fill("Sam")
    second.get_by_label("Last name").fill("Guest")
    second.get_by_label(re.compile("E-mail")).fill("sam@guest.example")
    widget.get_by_role("button", name="Buy festival passes").click()

    expect(widget.get_by_role("heading", name="You're going to Harbour Lights Festival")).to_be_visible()
    expect(widget.get_by_text("Test order")).to_be_visible()
    # The live sync panel polls itself until every Klaviyo event is accepted.
    panel = widget.get_by_role("region", name="Klaviyo sync")
    rows = panel.locator("tbody tr")
    expect(rows).to_have_count(4)
    expect(rows.filter(has_text="Accepted by Klaviyo")).to_have_count(4, timeout=SYNC_TIMEOUT)
    for metric, count in (("Placed Order", 1), ("Ordered Experience", 2), ("Registered Attendee", 1)):
        expect(panel.locator(f'tr[data-metric="{metric}"]')).to_have_count(count)

    # 4. The checklist on Integrations is complete.
    open_integrations_from_nav(page)
    checklist = page.get_by_role("region", name="Verify your installation")
    expect(checklist).to_contain_text("4 of 4 done")
    expect(checklist.get_by_role("img", name="Done")).to_have_count(4)

    # …and the events are on the sandbox's received-events page.
    page.goto(sandbox.url + "/")
    expect(page.get_by_role("heading", name="Received events")).to_be_visible()
    metrics = page.get_by_role("navigation", name="Filter by metric")
    for metric, count in (("Placed Order", 1), ("Ordered Experience", 2), ("Registered Attendee", 1)):
        expect(metrics.get_by_role("link", name=re.compile(rf"^{metric}\s*{count}$"))).to_be_visible()
    expect(page.locator("article.event", has_text="sam@guest.example").filter(has_text="Registered Attendee")) \
        .to_have_count(1)


def no_horizontal_scroll(page: Page) -> None:
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"{page.url} scrolls sideways: scrollWidth {width[0]} > innerWidth {width[1]}"


def test_phone_width_has_no_sideways_scroll(page: Page, live, connected, make_event, log_in):
    from portal.events.models import Event
    from portal.extensions import db

    event_id = make_event(connected)
    with live.app.app_context():
        public_id = db.session.get(Event, event_id).public_id
    page.set_viewport_size({"width": 390, "height": 844})
    log_in(page)
    nav = page.get_by_role("navigation", name="Main")
    for path in ("/manage/integrations/", f"/manage/events/{event_id}", f"/e/{public_id}?preview=1",
                 f"/e/{public_id}"):
        page.goto(path)
        expect(page.get_by_role("heading", level=1)).to_be_visible()
        expect(nav).to_be_visible()
        expect(nav.get_by_role("link", name="Events")).to_be_in_viewport()
        expect(nav.get_by_role("link", name="Integrations")).to_be_in_viewport()
        no_horizontal_scroll(page)
    # The Klaviyo card's ⋯ menu still opens inside the screen.
    page.goto("/manage/integrations/")
    klaviyo_card(page).get_by_role("button", name=re.compile("More actions")).click()
    expect(page.get_by_role("menu")).to_be_in_viewport(ratio=1)
    no_horizontal_scroll(page)


def test_widget_embedded_on_another_site_can_sell(page: Page, live, connected, make_event):
    """The embed snippet on an organizer's own site (another origin): the widget must complete a purchase."""
    from portal.events.models import Event
    from portal.extensions import db

    event_id = make_event(connected, types=[("General Admission", "40.00", "0.00")])
    with live.app.app_context():
        public_id = db.session.get(Event, event_id).public_id
    # The organizer's site: another site than the portal (localhost vs 127.0.0.1), served over real HTTP.
    html = (f'<!doctype html><title>Our festival</title><h1>Tickets</h1><iframe id="tickets" '
            f'src="{live.url}/w/{public_id}" style="width:100%;max-width:480px;height:1400px;border:0"></iframe>')
    site = make_server("127.0.0.1", 0, lambda env, start: (start("200 OK", [("Content-Type", "text/html")]),
                                                          [html.encode()])[1])
    threading.Thread(target=site.serve_forever, daemon=True).start()
    try:
        page.goto(f"http://localhost:{site.server_port}/")
        buy_one_in_embedded_widget(page)
    finally:
        site.shutdown()
        site.server_close()


def buy_one_in_embedded_widget(page: Page):
    widget = page.frame_locator("#tickets")
    widget.get_by_label(re.compile("General Admission")).fill("1")
    ticket = widget.get_by_role("group", name="Ticket 1: General Admission")
    expect(ticket).to_be_visible(timeout=5_000)
    purchaser = widget.get_by_role("group", name="Purchaser")
    purchaser.get_by_label("First name").fill("Rita")
    purchaser.get_by_label("Last name").fill("Remote")
    purchaser.get_by_label("E-mail").fill("rita@remote.example")
    ticket.get_by_label("Same as purchaser").check()
    widget.get_by_role("button", name="Get tickets").click()
    expect(widget.get_by_role("heading", name=re.compile("You're going to"))).to_be_visible()


def test_untouched_form_fields_are_not_announced_as_invalid(page: Page, live):
    page.goto("/auth/login")
    expect(page.get_by_label("E-mail")).to_be_visible()
    flagged = page.locator("input[aria-invalid]:not([aria-invalid='false']), select[aria-invalid]:not([aria-invalid='false'])")
    assert flagged.count() == 0, [flagged.nth(i).evaluate("e => e.outerHTML") for i in range(flagged.count())]
    dangling = page.evaluate("""[...document.querySelectorAll('[aria-describedby]')]
        .filter(e => e.getAttribute('aria-describedby').split(/\\s+/).some(id => !document.getElementById(id)))
        .map(e => e.id)""")
    assert dangling == [], f"aria-describedby points at no element: {dangling}"
