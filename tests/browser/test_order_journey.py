"""The organizer refunds a ticket and then cancels the order from the order page, in a real Chromium, and
Klaviyo (the sandbox) gets Refunded Order and Cancelled Order through a real worker."""
import re

import pytest
from playwright.sync_api import Page, expect

from tests.conftest import sandbox_events, wait_for
from tests.test_sync_worker import buy

pytestmark = pytest.mark.browser
SAM = {"first_name": "Sam", "last_name": "Guest", "email": "sam@guest.example"}


def test_refund_then_cancel_from_the_order_page(page: Page, live, client, app, connected, make_event, sandbox,
                                                start_worker, log_in):
    event_id = make_event(connected)
    start_worker()
    assert buy(client, app, event_id, [(0, "same"), (0, SAM)]).status_code == 303
    log_in(page)
    page.goto(f"/manage/events/{event_id}/orders")
    expect(page.get_by_role("cell", name="Paid")).to_be_visible()
    page.get_by_role("link", name=re.compile(r"#\d+")).first.click()
    expect(page.locator("#order-status")).to_have_text("Paid")

    # Refund Sam's ticket, with its fee.
    page.get_by_role("link", name="Refund").click()
    expect(page.get_by_role("heading", name=re.compile("Refund order"))).to_be_visible()
    page.get_by_label(re.compile("Sam Guest")).check()
    page.get_by_label(re.compile("Reason")).fill("Sam cannot come")
    page.get_by_role("button", name="Refund").click()
    expect(page.get_by_text("Refunded USD 80.00. Klaviyo gets Refunded Order.")).to_be_visible()
    expect(page.locator("#order-status")).to_have_text("Partly refunded")
    expect(page.get_by_role("row", name=re.compile("Sam Guest")).get_by_text("Refunded", exact=True)).to_be_visible()
    timeline = page.locator("#timeline")
    expect(timeline.get_by_role("row", name=re.compile("Refunded Order"))).to_contain_text("Accepted by Klaviyo",
                                                                                           timeout=25_000)

    # A refund beyond what is left is refused next to the field, and nothing changes.
    page.get_by_role("link", name="Refund").click()
    page.get_by_label(re.compile("Amount")).fill("500")
    page.get_by_label(re.compile("Reason")).fill("too much")
    page.get_by_role("button", name="Refund").click()
    expect(page.locator("#amount-error")).to_contain_text("At most USD 80.00 can be refunded")
    page.get_by_role("link", name=re.compile("Order #")).click()

    # Cancel the rest of the order.
    page.get_by_role("link", name="Cancel order").click()
    expect(page.get_by_role("heading", name=re.compile("Cancel order"))).to_be_visible()
    page.get_by_label(re.compile("Reason")).fill("Change of plans")
    page.get_by_label(re.compile("Refund what is left")).uncheck()
    page.get_by_role("button", name="Cancel the order").click()
    expect(page.locator("#order-status")).to_have_text("Cancelled")
    expect(page.get_by_role("link", name="Cancel order")).to_have_count(0)
    expect(page.get_by_text(re.compile("cancelled by .*Change of plans"))).to_be_visible()
    expect(timeline.get_by_role("row", name=re.compile("Cancelled Order"))).to_contain_text("Accepted by Klaviyo",
                                                                                            timeout=25_000)
    wait_for(lambda: sandbox_events(sandbox.url, "Cancelled Order"), message="Cancelled Order in the sandbox")
    [cancelled] = sandbox_events(sandbox.url, "Cancelled Order")
    assert cancelled["properties"]["Reason"] == "Change of plans"
    assert [e["properties"]["RefundedAmount"] for e in sandbox_events(sandbox.url, "Refunded Order")] == [80]
