"""What a paying organizer and their buyers see (issue 16), in a real Chromium: the embedded widget sizes itself on
the organizer's own site, and the checkout adds up as the buyer types."""
import re
import threading
from decimal import Decimal

import pytest
from playwright.sync_api import Page, expect
from werkzeug.serving import make_server

from portal.events.models import DiscountCode, Event
from portal.extensions import db

pytestmark = pytest.mark.browser
FALLBACK = 760  # the snippet's fixed height, for browsers without JavaScript


def public_id(live, event_id) -> str:
    with live.app.app_context():
        return db.session.get(Event, event_id).public_id


class HostSite:
    """The organizer's own site, on another origin than the portal (localhost vs 127.0.0.1), over real HTTP."""

    def __init__(self, body: str):
        page = f"<!doctype html><meta name=viewport content='width=device-width'><title>Our festival</title>" \
               f"<h1>Our festival</h1>{body}<p id='after'>See you there.</p>"
        self.server = make_server("127.0.0.1", 0, lambda env, start: (
            start("200 OK", [("Content-Type", "text/html; charset=utf-8")]), [page.encode()])[1])
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://localhost:{self.server.server_port}/"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def host_site():
    sites = []

    def make(body: str) -> HostSite:
        sites.append(HostSite(body))
        return sites[-1]

    yield make
    for site in sites:
        site.close()


def frame_height(page: Page) -> int:
    return page.locator("iframe[data-ticketing-widget]").evaluate("f => f.getBoundingClientRect().height")


def widget_frame(page: Page, live):
    return next(f for f in page.frames if f.url.startswith(live.url + "/w/") or f.url.startswith(live.url + "/orders/"))


def assert_fits(page: Page, live):
    """The iframe is as tall as the widget's content: no inner scrollbar, nothing cut off."""
    inner = widget_frame(page, live).evaluate(
        "() => [document.documentElement.scrollHeight, window.innerHeight,"
        " Math.ceil(document.querySelector('.widget').getBoundingClientRect().bottom)]")
    scroll_height, viewport, content = inner
    assert scroll_height <= viewport, f"the widget scrolls inside its frame: {inner}"
    assert abs(viewport - content) <= 2, f"the frame is not the height of its content: {inner}"


def wait_for_height(page: Page, predicate: str) -> int:
    """Wait until the frame's height `h` makes the JavaScript expression true; return the height."""
    page.wait_for_function(
        "() => { const h = document.querySelector('iframe[data-ticketing-widget]').getBoundingClientRect().height;"
        f" return {predicate}; }}", timeout=10_000)
    return frame_height(page)


@pytest.mark.parametrize("width", [1280, 390])
def test_embedded_widget_grows_and_shrinks_with_its_content(page: Page, live, connected, make_event, log_in,
                                                             host_site, width):
    event_id = make_event(connected, types=[("General Admission", "40.00", "0.00")])
    page.set_viewport_size({"width": width, "height": 900})
    log_in(page)
    page.goto(f"/manage/events/{event_id}/widget")
    snippet = page.locator("#embed-snippet").inner_text()  # what the organizer copies, as it is
    assert "height:760px" in snippet and "embed.js" in snippet
    site = host_site(snippet)

    page.goto(site.url)
    widget = page.frame_locator("iframe[data-ticketing-widget]")
    expect(widget.get_by_role("heading", name=re.compile("Summer Music Festival"))).to_be_visible()
    start = wait_for_height(page, f"h !== {FALLBACK}")
    assert_fits(page, live)

    # Three tickets: three attendee fieldsets appear, and the frame grows with them.
    widget.get_by_label(re.compile("General Admission")).fill("3")
    expect(widget.get_by_role("group", name="Ticket 3: General Admission")).to_be_visible()
    grown = wait_for_height(page, f"h > {start} + 300")
    assert_fits(page, live)

    # Back to none: it shrinks to what it was.
    widget.get_by_label(re.compile("General Admission")).fill("0")
    expect(widget.get_by_role("group", name="Ticket 1: General Admission")).to_have_count(0)
    shrunk = wait_for_height(page, f"h < {grown} - 300")
    assert abs(shrunk - start) <= 2, (start, grown, shrunk)
    assert_fits(page, live)
    # The page around it follows: the paragraph after the widget sits right below its frame.
    gap = page.evaluate("document.getElementById('after').getBoundingClientRect().top"
                        " - document.querySelector('iframe').getBoundingClientRect().bottom")
    assert 0 <= gap < 40, gap


def test_embed_ignores_heights_from_anyone_but_its_widget(page: Page, live, connected, make_event, host_site):
    """Only the widget's own window, from the portal's origin, may size the frame."""
    event_id = make_event(connected, types=[("General Admission", "40.00", "0.00")])
    base = live.url
    site = host_site(f'<iframe data-ticketing-widget src="{base}/w/{public_id(live, event_id)}" '
                     f'style="width:100%;max-width:480px;height:760px;border:0"></iframe>'
                     f'<script src="{base}/static/embed.js" async></script>')
    page.goto(site.url)
    sized = wait_for_height(page, f"h !== {FALLBACK}")
    page.evaluate("""() => { window.heights = [];
        new MutationObserver(() => window.heights.push(document.querySelector('iframe').style.height))
            .observe(document.querySelector('iframe'), {attributes: true}); }""")
    # The host page itself (another origin than the portal's) claims a height...
    page.evaluate("window.postMessage({type: 'ticketing:height', height: 123}, '*')")
    # ...then the widget really grows. Messages arrive in order, so once it has, the claim was handled: ignored.
    page.frame_locator("iframe").get_by_label(re.compile("General Admission")).fill("2")
    wait_for_height(page, f"h > {sized} + 200")
    heights = page.evaluate("window.heights")
    assert heights and "123px" not in heights, heights


def test_without_the_script_the_snippet_keeps_its_fixed_height(page: Page, live, connected, make_event, host_site):
    event_id = make_event(connected, types=[("General Admission", "40.00", "0.00")])
    site = host_site(f'<iframe data-ticketing-widget src="{live.url}/w/{public_id(live, event_id)}" '
                     f'style="width:100%;max-width:480px;height:760px;border:0"></iframe>')
    page.goto(site.url)
    widget = page.frame_locator("iframe[data-ticketing-widget]")
    expect(widget.get_by_role("heading", name=re.compile("Summer Music Festival"))).to_be_visible()
    widget.get_by_label(re.compile("General Admission")).fill("4")
    expect(widget.get_by_role("group", name="Ticket 4: General Admission")).to_be_visible()
    assert frame_height(page) == FALLBACK  # and the widget scrolls inside it, as any iframe does
    assert widget_frame(page, live).evaluate("document.documentElement.scrollHeight > window.innerHeight")


def test_total_follows_quantities_and_the_discount_code_before_submit(page: Page, live, connected, make_event):
    event_id = make_event(connected, types=[("General Admission", "100.00", "5.00"), ("VIP", "250.00", "10.00")])
    with live.app.app_context():
        db.session.add(DiscountCode(event_id=event_id, code="SUMMER10", kind="percent", amount=Decimal("10")))
        db.session.commit()
    page.goto(f"/e/{public_id(live, event_id)}")
    summary = page.get_by_role("region", name="Order summary")
    total = summary.locator("#summary-total")
    expect(summary).to_contain_text("Choose your tickets above")

    page.get_by_label(re.compile("General Admission")).fill("2")
    expect(total).to_have_text("USD 210.00")  # 2 × (100 + 5)
    page.get_by_label(re.compile("VIP")).fill("1")
    expect(total).to_have_text("USD 470.00")  # + 250 + 10

    code = page.get_by_label(re.compile("Discount code"))
    code.fill("SUMMER1")  # not a code: flagged in place, the total unchanged
    expect(page.locator("#discount_code-error")).to_have_text("That code is not valid for this event.")
    expect(code).to_have_attribute("aria-invalid", "true")
    expect(total).to_have_text("USD 470.00")

    code.press_sequentially("0")  # SUMMER10: 10 % off the tickets (not the fees)
    expect(total).to_have_text("USD 425.00")  # 470 − 45
    expect(summary).to_contain_text("Discount SUMMER10")
    expect(page.locator("#discount_code-error")).to_have_text("")
    expect(page.locator("#discount_code-ok")).to_contain_text("Code SUMMER10 applied")
    expect(code).not_to_have_attribute("aria-invalid", "true")

    # Top to bottom: tickets, the summary, the purchaser, the attendees (one per ticket), then pay.
    order = page.evaluate("""[...document.querySelectorAll(
        '#checkout legend, #checkout h3, #checkout button[type=submit]')].map(e => e.textContent.trim())""")
    assert order[:3] == ["Tickets", "Order summary", "Purchaser"], order
    assert order[3] == "Attendees" and order[-1] == "Get tickets", order
    assert order[4:-1] == ["Ticket 1: General Admission", "Ticket 2: General Admission", "Ticket 3: VIP"], order
    expect(page.locator("#attendees")).to_contain_text("One attendee per ticket")

    # The total paid is the total shown.
    purchaser = page.get_by_role("group", name="Purchaser")
    purchaser.get_by_label("First name").fill("Pat")
    purchaser.get_by_label("Last name").fill("Buyer")
    purchaser.get_by_label("E-mail").fill("pat@buyer.example")
    for number in (1, 2, 3):
        page.get_by_role("group", name=re.compile(rf"^Ticket {number}:")).get_by_label("Same as purchaser").check()
    page.get_by_role("button", name="Get tickets").click()
    expect(page.get_by_text("Total paid USD 425.00")).to_be_visible()
