"""The ⋯ menus of the Integrations page from the keyboard, as the ARIA menu button pattern has it (static/menu.js).

Run: .venv/bin/python -m pytest tests/browser/test_menus.py -q
"""
import re

import pytest
from playwright.sync_api import Page, expect

pytestmark = [
    pytest.mark.browser,
    pytest.mark.filterwarnings("ignore:Passing SelectField choices as tuples:DeprecationWarning"),
]


@pytest.fixture
def shopify(app, connected):
    """A connected Shopify store next to the connected Klaviyo account: two ⋯ menus on one page."""
    from portal.channels.models import SalesChannel
    from portal.extensions import db
    from tests.channel_proof import prove

    secret = "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"
    with app.app_context():
        channel = SalesChannel(organizer_id=connected, platform="shopify")
        channel.connect("demo.myshopify.com", secret)
        db.session.add(channel)
        db.session.commit()
        channel_id = channel.id
    prove(app, channel_id, secret=secret)  # as the store proves it: its signed webhook arrives


def focused(page: Page) -> str:
    return page.evaluate("document.activeElement.textContent.trim()")


@pytest.mark.parametrize("card, items", [
    ("klaviyo", ["View Details", "Disconnect"]),
    ("shopify", ["View Details", "Map products", "Edit connection", "Disconnect"]),
])
def test_menu_keyboard(page: Page, live, shopify, log_in, card, items):
    log_in(page)
    page.goto("/manage/integrations/")
    button = page.locator(f"#{card}-more")
    menu = page.get_by_role("menu", name=re.compile(f"^{card} actions$", re.I))

    button.click()
    expect(menu).to_be_visible()
    expect(menu.get_by_role("menuitem", name=items[0])).to_be_focused()
    # The menu opens under its own button, right edges aligned (each card head scopes its anchor name).
    b, m = button.bounding_box(), menu.bounding_box()
    assert abs(m["y"] - (b["y"] + b["height"] + 4)) <= 1 and abs((m["x"] + m["width"]) - (b["x"] + b["width"])) <= 1

    for expected in items[1:] + items[:1]:  # ArrowDown walks the items and wraps to the first
        page.keyboard.press("ArrowDown")
        assert focused(page) == expected
    page.keyboard.press("ArrowUp")  # and ArrowUp wraps to the last
    assert focused(page) == items[-1]
    page.keyboard.press("Home")
    assert focused(page) == items[0]
    page.keyboard.press("End")
    assert focused(page) == items[-1]

    page.keyboard.press("Escape")
    expect(menu).to_be_hidden()
    expect(button).to_be_focused()

    page.keyboard.press("ArrowUp")  # from the button: opens on the last item
    expect(menu).to_be_visible()
    assert focused(page) == items[-1]
    page.keyboard.press("Escape")
    page.keyboard.press("ArrowDown")  # ... or on the first
    expect(menu).to_be_visible()
    assert focused(page) == items[0]

    page.keyboard.press("Tab")  # Tab leaves the menu and closes it
    expect(menu).to_be_hidden()
    assert page.evaluate("!document.activeElement.closest('[role=menu]')")


def test_choosing_an_htmx_item_closes_the_menu(page: Page, live, connected, log_in):
    log_in(page)
    page.goto("/manage/integrations/")
    page.locator("#klaviyo-more").click()
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")  # Disconnect: swapped in by htmx, the page stays
    expect(page.get_by_role("region", name="Disconnect Klaviyo?")).to_be_visible()
    expect(page.get_by_role("menu")).to_be_hidden()
