"""The support line is always there (issue 16): a support address and a help link from the configuration, on the
Klaviyo card and in the guide; the guide has the seed's use cases with the exact metrics and properties."""
import html
import re

import pytest

from portal.config import Config, support_address
from portal.klaviyo import lifecycle
from portal.klaviyo.metrics import PURPOSE
from portal.klaviyo.payloads import METRICS


@pytest.mark.parametrize("base, address", [
    ("https://tickets.example.org", "support@tickets.example.org"),
    ("https://www.harbourlights.example/", "support@harbourlights.example"),
    ("http://127.0.0.1:5000", "support@localhost"),
    ("http://localhost:8000", "support@localhost"),
    ("", "support@localhost"),
])
def test_default_support_address(base, address):
    assert support_address(base) == address


def test_the_configuration_always_has_a_support_line():
    assert Config.SUPPORT_EMAIL and "@" in Config.SUPPORT_EMAIL
    assert Config.HELP_URL


def card_foot(page: str) -> str:
    return re.search(r'<span class="muted" id="klaviyo-support">(.*?)</span>', page, re.S).group(1)


@pytest.mark.parametrize("state", ["not connected", "connected"])
def test_the_card_always_shows_the_support_address_and_the_guide(client, app, organizer, sandbox, state):
    from tests.conftest import oauth_connect

    app.config["SUPPORT_EMAIL"] = "help@harbourlights.example"
    app.config["HELP_URL"] = "https://help.harbourlights.example/klaviyo"
    if state == "connected":
        assert oauth_connect(client, sandbox.url).status_code == 303
    foot = card_foot(client.get("/manage/integrations/").get_data(as_text=True))
    assert '<a href="mailto:help@harbourlights.example">help@harbourlights.example</a>' in foot
    assert 'href="https://help.harbourlights.example/klaviyo"' in foot


def test_the_guide_has_the_use_cases_with_their_exact_properties(client, app):
    app.config["SUPPORT_EMAIL"] = "help@harbourlights.example"
    page = html.unescape(client.get("/help/klaviyo").get_data(as_text=True))
    words = " ".join(re.sub(r"<[^>]+>", " ", page).split())
    for title in ("1. Event reminder", "2. Segment attendees by event", "3. Order confirmation", "4. VIP ticket holders",
                  "5. Welcome for attendees who did not buy"):
        assert title in words, title
    for recipe in ("Date property , the profile property NextEventStartAt , 1 day before",
                   "{{ person|lookup:'NextEventName' }}", "{{ event|lookup:'AttendeeCount' }}",
                   "Placed Order at least once, with the property filter EventName equals",
                   "{{ event|lookup:'$value' }}", "{% for item in event|lookup:'Items' %}{{ item.ProductName }}",
                   "Ordered Experience at least once, with the property filter ExperienceName contains “VIP”",
                   "triggered by Registered Attendee", "{{ event|lookup:'TicketName' }}",
                   "Cancelled Order zero times since starting this flow"):
        assert recipe in words, recipe
    for metric in METRICS + lifecycle.METRICS:  # every event metric, and what Klaviyo uses it for
        assert metric in words and PURPOSE[metric] in words, metric
    assert "Still stuck? Write to help@harbourlights.example" in words
    assert 'href="/manage/integrations/klaviyo/flows/">Set up flows and segments</a>' in page  # the one-click recipes
