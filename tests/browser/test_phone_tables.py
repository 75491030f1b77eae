"""At phone width (390 px) every organizer table is readable: its rows stack, each value beside its column's name,
and nothing is cut off or hidden in a sideways scroll (issue 16). In a real Chromium, over the pages an organizer
uses, with every "Details" disclosure opened."""
import re

import pytest
from playwright.sync_api import Page, expect
from sqlalchemy import select

from portal.events.models import Event
from portal.extensions import db
from portal.orders.models import Order
from tests.test_channels import post_shopify, shopify_channel, shopify_order
from tests.test_sync_worker import buy

pytestmark = pytest.mark.browser
SAM = {"first_name": "Sam", "last_name": "Guest", "email": "sam@guest.example"}
LEE = {"first_name": "Lee", "last_name": "Tester", "email": "lee@example.com"}  # a test domain Klaviyo drops


def organizer_world(app, client, organizer_id, make_event) -> dict:
    """A GBP event with a web order of three tickets and a Shopify order paid in USD, their events sent to the
    sandbox (in this process), and a Shopify channel with its webhook log."""
    from portal.sync import jobs

    event_id = make_event(organizer_id)
    with app.app_context():
        db.session.get(Event, event_id).currency = "GBP"
        db.session.commit()
    assert buy(client, app, event_id, [(0, "same"), (0, SAM), (1, LEE)]).status_code == 303
    channel_id = shopify_channel(app, organizer_id)
    assert post_shopify(client, shopify_order()).status_code == 200
    with app.app_context():
        assert jobs.deliver(organizer_id) > 0
        web, shop = db.session.scalars(select(Order).order_by(Order.id)).all()
        return {"event_id": event_id, "web": web.id, "token": web.public_token, "shop": shop.id,
                "channel_id": channel_id}


def overflowing_tables(page: Page) -> list[str]:
    """Tables wider than the box they sit in, or scrolling sideways inside it."""
    return page.evaluate("""() => [...document.querySelectorAll('table')].flatMap((table, i) => {
        const box = table.closest('.table-wrap') || table.parentElement;
        const wide = table.getBoundingClientRect().width > box.clientWidth + 1 || box.scrollWidth > box.clientWidth + 1;
        const out = table.getBoundingClientRect().right > document.documentElement.clientWidth + 1;
        return wide || out ? [`table ${i} (${table.querySelector('th, td')?.textContent.trim().slice(0, 30)}):`
            + ` ${Math.round(table.getBoundingClientRect().width)} px in ${box.clientWidth} px`] : [];
    })""")


def unlabelled_cells(page: Page) -> int:
    """Stacked cells that show a value but not which column it is."""
    return page.evaluate("""() => [...document.querySelectorAll('.table-wrap > table > thead')].reduce((n, head) => {
        const names = [...head.querySelectorAll('th')].map(th => th.textContent.trim());
        const rows = head.parentElement.querySelectorAll(':scope > tbody > tr');
        return n + [...rows].reduce((m, row) => m + [...row.children].filter((cell, i) =>
            names[i] && cell.textContent.trim() && getComputedStyle(cell, '::before').content !== `"${names[i]}"`
        ).length, 0);
    }, 0)""")


def test_no_organizer_table_overflows_at_phone_width(page: Page, live, app, client, connected, make_event, log_in):
    world = organizer_world(app, client, connected, make_event)
    page.set_viewport_size({"width": 390, "height": 844})
    log_in(page)
    pages = [
        (f"/manage/events/{world['event_id']}", "Ticket types"),
        (f"/manage/events/{world['event_id']}/orders", "Orders"),
        (f"/manage/orders/{world['web']}", "Klaviyo sync timeline"),
        (f"/manage/orders/{world['shop']}", "Klaviyo sync timeline"),
        (f"/orders/{world['token']}", "Klaviyo sync"),
        ("/manage/integrations/klaviyo", "Klaviyo connection details"),
        (f"/manage/channels/{world['channel_id']}", None),
        (f"/manage/channels/{world['channel_id']}/products", None),
        ("/help/klaviyo", "What is sent"),
    ]
    checked = 0
    for path, heading in pages:
        response = page.goto(path)
        assert response.ok, (path, response.status)
        if heading:
            expect(page.get_by_text(heading, exact=True).first).to_be_visible()
        for details in page.locator("details").all():  # the technical record too, payload JSON and all
            if details.is_visible():
                details.locator("summary").first.click()
        tables = page.locator("table").count()
        checked += tables
        assert overflowing_tables(page) == [], path
        width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert width[0] <= width[1], f"{path} scrolls sideways: {width}"
        assert unlabelled_cells(page) == 0, f"{path}: stacked cells without their column's name"
    assert checked >= 8, checked  # the pages above really have tables

    # A stacked row still reads as one order: its number, buyer, total, status and Klaviyo status together.
    page.goto(f"/manage/events/{world['event_id']}/orders")
    row = page.get_by_role("row", name=re.compile(rf"#{world['shop']}\b"))
    expect(row).to_contain_text("Paid in USD")
    expect(row).to_contain_text("Shopify")
    box = row.bounding_box()
    assert box["width"] <= 390 and box["height"] > 150, box  # stacked: tall and narrow, not one wide line
