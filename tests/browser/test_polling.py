"""View Details' sync queue in a real Chromium: it polls while events are on their way and stops once they are sent.

Run: .venv/bin/python -m pytest tests/browser/test_polling.py -q
"""
import re

import pytest
from playwright.sync_api import Page, expect

pytestmark = [
    pytest.mark.browser,
    pytest.mark.filterwarnings("ignore:Passing SelectField choices as tuples:DeprecationWarning"),
]


def test_view_details_polls_only_while_events_are_pending(page: Page, app, client, live, connected, make_event,
                                                          log_in):
    from portal.events.models import Event
    from portal.extensions import db
    from portal.sync import jobs

    polls = []
    page.on("request", lambda r: polls.append(r.url) if "/klaviyo/queue" in r.url else None)
    log_in(page)
    page.goto("/manage/integrations/klaviyo")
    queue = page.locator("#klaviyo-queue")

    def stat(name):
        return queue.locator(".stat").filter(has=page.locator("span", has_text=re.compile(f"^{name}$"))).locator("b")

    pending = stat("on the way")
    expect(pending).to_have_text("0")
    page.wait_for_timeout(2500)
    assert polls == [], "an idle queue does not poll"

    with app.app_context():
        event = db.session.get(Event, make_event(connected))
        public_id, type_id = event.public_id, event.ticket_types[0].id
    assert client.post_form(f"/e/{public_id}/checkout", {
        f"qty-{type_id}": "1", "first_name": "Pat", "last_name": "Buyer", "email": "pat@buyer.example",
        "attendee-0-same": "1"}).status_code == 303
    queue.get_by_role("link", name="Refresh").click()
    expect(pending).to_have_text("2")
    page.wait_for_timeout(2500)
    assert len(polls) >= 2, "a queue with pending events polls itself"

    with app.app_context():
        assert jobs.deliver(connected) == 2
    expect(pending).to_have_text("0", timeout=5000)
    page.wait_for_timeout(300)  # a poll that was already on its way
    settled = len(polls)
    page.wait_for_timeout(2500)
    assert len(polls) == settled, "once everything is sent the queue stops polling"
    expect(stat("accepted by Klaviyo")).to_have_text("2")
