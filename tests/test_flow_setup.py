"""Set up flows and segments, end to end: the panel, a real worker, the sandbox over HTTP.

"Add all" makes every offered recipe as a draft, each flow's body valid against the official slice and triggered
by our own metric's id (after the example profile made the metrics); a second "Add all" makes nothing; with our
memory lost a flow is found in Klaviyo by name instead of made again; a missing permission leads to Reconnect and
the pending recipes are made right after it; rate limits (429 and the daily 100) make them wait, Disconnect
cancels what waits, failures say why and can be retried; the panel polls only while work runs; bad input gets a
clear message and never a 5xx."""
import html
import re
from datetime import datetime, timedelta, timezone

import pytest
import requests
from sqlalchemy import delete, select

from portal.extensions import db
from portal.klaviyo import recipes
from portal.sandbox import objects
from portal.sync.models import KlaviyoConnection
from portal.sync.setup_models import CANCELLED, CREATED, FAILED, NEEDS_PERMISSION, QUEUED, SetupItem
from tests.conftest import oauth_connect, sandbox_events, wait_for

PANEL = "/manage/integrations/klaviyo/flows/"
FLOW_KEYS = {"order_confirmation", "event_reminder", "attendee_welcome", "post_event_survey", "abandoned_checkout"}
SEGMENT_KEYS = {"vip_segment", "high_value_segment", "repeat_attendees"}
EXAMPLE = "klaviyo-example@ticketing-portal.test"
HTMX = {"HX-Request": "true"}


def made(sandbox) -> dict:
    return sandbox.objects()


def posts(sandbox, since: float, path: str) -> list[dict]:
    return [r for r in sandbox.api_requests_after(since) if r["method"] == "POST" and r["path"] == path]


def items(app) -> dict[str, SetupItem]:
    with app.app_context():
        rows = list(db.session.scalars(select(SetupItem)))
        for row in rows:
            db.session.expunge(row)
        return {row.key: row for row in rows}


def settled(app, statuses=(CREATED,)):
    """Every item asked for is in one of these states (and there is at least one item)."""
    rows = items(app)
    return rows if rows and all(row.status in statuses for row in rows.values()) else None


def flashes(page: str) -> list[str]:
    return [html.unescape(m) for m in re.findall(r'<div class="flash [a-z]+" role="[^"]+">([^<]*)</div>', page)]


def with_flows_permission(client, app, sandbox):
    """Turn the feature on and reconnect, so the connection has the flows and segments scopes already."""
    with app.app_context():
        connection = db.session.scalar(select(KlaviyoConnection))
        connection.features = "flows"
        db.session.commit()
    assert oauth_connect(client, sandbox.url).status_code == 303
    with app.app_context():
        assert "flows:write" in db.session.scalar(select(KlaviyoConnection)).scopes


def upcoming(app, event_id):
    """Move a test event into the future, so "Add all" makes its segment."""
    from portal.events.models import Event

    with app.app_context():
        event = db.session.get(Event, event_id)
        event.starts_at = datetime.now(timezone.utc) + timedelta(days=30)
        event.ends_at = event.starts_at + timedelta(hours=5)
        db.session.commit()


@pytest.fixture
def flows_ready(client, app, connected, sandbox):
    with_flows_permission(client, app, sandbox)
    return connected


def test_add_all_makes_every_recipe_as_a_draft_from_our_own_metrics(client, app, flows_ready, sandbox, start_worker,
                                                                     make_event):
    event_id = make_event(flows_ready)
    upcoming(app, event_id)
    # The organizer also sells through Shopify: its "Placed Order" is another metric, which no flow may use.
    shopify = sandbox.add_metric("Placed Order", "Shopify", "eCommerce")
    page = client.get(PANEL).get_data(as_text=True)
    assert "Add all (9)" in page and "Waits for" not in page
    started = datetime.now(timezone.utc).timestamp()
    start_worker()
    answer = client.post_form(PANEL + "all", {"text": "VIP", "amount": "250"})
    assert answer.status_code == 303
    rows = wait_for(lambda: settled(app), timeout=60, message="every recipe created")
    assert set(rows) == FLOW_KEYS | SEGMENT_KEYS | {f"event_segment:{event_id}"}
    assert all(row.account_id == "SBX01HXYZ" and row.klaviyo_id and not row.found_existing for row in rows.values())

    # Metrics first: the example profile got one past event per metric we send, which made our metrics.
    example_events = [e for e in sandbox_events(sandbox.url) if e["profile"].get("email") == EXAMPLE]
    assert sorted(e["metric"] for e in example_events) == sorted(recipes.SENT_METRICS)
    assert all(e["backfill"] for e in example_events)
    state = made(sandbox)
    ours = {m["name"]: m["id"] for m in state["metrics"] if m["integration"]["name"] == "Festival Ticketing Portal"}
    account_metrics = {m["id"] for m in state["metrics"]}

    flows = {f["name"]: f for f in state["flows"]}
    assert set(flows) == {rows[key].name for key in FLOW_KEYS}
    assert all(name.startswith("Ticketing: ") for name in flows)
    for key in FLOW_KEYS:
        flow = flows[rows[key].name]
        assert flow["status"] == "draft" and flow["id"] == rows[key].klaviyo_id
        received = flow["received"]
        assert not objects.validate_create_flow(received, account_metrics)  # valid against the official slice
        assert received == recipes.build(key, ours, "Ticketing")  # exactly the golden recipe
        trigger = received["data"]["attributes"]["definition"]["triggers"][0]
        wanted = recipes.recipe_for(key).metrics
        assert trigger.get("id") == (ours[wanted[0]] if wanted else None) and trigger.get("id") != shopify["id"]
        emails = [a for a in flow["definition"]["actions"] if a["type"] == "send-email"]
        assert emails and all(a["data"]["status"] == "draft" for a in emails)
    segments = {s["name"]: s for s in state["segments"]}
    assert set(segments) == {rows[key].name for key in rows if key not in FLOW_KEYS}
    for key, row in rows.items():
        if key in FLOW_KEYS:
            continue
        received = segments[row.name]["received"]
        assert not objects.validate_create_segment(received, account_metrics)
        assert shopify["id"] not in str(received)
    vip = segments["Ticketing: VIP Ticket Holders"]["definition"]["condition_groups"][0]["conditions"][0]
    assert vip["metric_id"] == ours["Ordered Experience"] and vip["metric_filters"][0]["filter"]["value"] == "VIP"
    assert "Ticketing: High-Value Customers (orders over 250)" in segments
    # Each flow was made once: no request repeated.
    assert len(posts(sandbox, started, "/api/flows")) == len(FLOW_KEYS)

    # The panel says so, with a link into Klaviyo for each.
    page = client.get(PANEL).get_data(as_text=True)
    assert page.count("In Klaviyo · draft") == len(rows)
    assert f'href="{sandbox.url}/flow/{rows["event_reminder"].klaviyo_id}/edit"' in page
    assert f'href="{sandbox.url}/list/{rows["vip_segment"].klaviyo_id}/members"' in page
    assert "Add all (0)" in page and "hx-trigger" not in page.split('id="flows-status"')[1].split(">")[0]

    # A second "Add all" makes nothing new.
    again = datetime.now(timezone.utc).timestamp()
    answer = client.post_form(PANEL + "all", {})
    assert "already in Klaviyo" in " ".join(flashes(client.get(PANEL).get_data(as_text=True)))
    assert not posts(sandbox, again, "/api/flows") and not posts(sandbox, again, "/api/segments")
    assert len(made(sandbox)["flows"]) == len(FLOW_KEYS)

    # With what we remembered lost, a flow is found in Klaviyo by its name and not made again.
    with app.app_context():
        db.session.execute(delete(SetupItem).where(SetupItem.key == "order_confirmation"))
        db.session.commit()
    lost = datetime.now(timezone.utc).timestamp()
    client.post_form(PANEL + "add/order_confirmation", {})
    found = wait_for(lambda: items(app).get("order_confirmation") if items(app).get("order_confirmation")
                     and items(app)["order_confirmation"].status == CREATED else None, message="found again")
    assert found.found_existing and found.klaviyo_id == flows["Ticketing: Order Confirmation"]["id"]
    assert not posts(sandbox, lost, "/api/flows")
    assert "Already in Klaviyo" in client.get(PANEL).get_data(as_text=True)


def test_a_missing_permission_leads_to_reconnect_and_then_the_pending_recipes_are_made(client, app, connected, sandbox,
                                                                                        start_worker):
    start_worker()
    started = datetime.now(timezone.utc).timestamp()
    answer = client.post_form(PANEL + "add/event_reminder", {})
    assert answer.status_code == 303
    client.post_form(PANEL + "add/vip_segment", {"text": "Backstage"})
    page = client.get(PANEL).get_data(as_text=True)
    assert "Klaviyo needs one more permission for flows and segments" in page
    assert "flows:write" in page and "Reconnect" in page and page.count("Waiting for permission") == 2
    card = client.get("/manage/integrations/").get_data(as_text=True)
    assert 'id="needs-permission-flows"' in card
    assert {row.status for row in items(app).values()} == {NEEDS_PERMISSION}
    # Nothing was asked of Klaviyo without the permission (it would have been a 403).
    assert not [r for r in sandbox.api_requests_after(started) if r["path"] in ("/api/flows", "/api/segments",
                                                                              "/api/metrics")]

    # Reconnect asks Klaviyo for the flows and segments scopes too; right after it, the two are made.
    start = client.post_form("/manage/integrations/klaviyo/connect")
    assert "flows%3Awrite" in start.headers["Location"] and "segments%3Awrite" in start.headers["Location"]
    assert oauth_connect(client, sandbox.url).status_code == 303
    rows = wait_for(lambda: settled(app), timeout=30, message="made after the Reconnect")
    state = made(sandbox)
    assert [f["name"] for f in state["flows"]] == ["Ticketing: Event Reminder"]
    assert [s["name"] for s in state["segments"]] == ["Ticketing: Backstage Ticket Holders"]
    assert rows["vip_segment"].options == {"text": "Backstage"}
    page = client.get(PANEL).get_data(as_text=True)
    assert "Klaviyo needs one more permission" not in page


def test_a_refused_recipe_says_why_and_can_be_retried(client, app, flows_ready, sandbox, start_worker):
    sandbox.add_faults({"status": 400, "count": 1, "paths": ["/api/segments"]})
    start_worker()
    client.post_form(PANEL + "add/repeat_attendees", {})
    row = wait_for(lambda: settled(app, (FAILED,)), timeout=30, message="the refusal")["repeat_attendees"]
    assert "Klaviyo refused it: Injected fault: HTTP 400." in row.detail
    page = client.get(PANEL).get_data(as_text=True)
    assert "Not added" in page and "Klaviyo refused it" in page and f"/{row.id}/retry" in page
    assert client.post_form(f"{PANEL}{row.id}/retry", {}).status_code == 303
    wait_for(lambda: settled(app), timeout=30, message="made on retry")
    assert [s["name"] for s in made(sandbox)["segments"]] == ["Ticketing: Repeat Attendees"]


def test_klaviyo_slow_downs_and_outages_make_it_wait_then_it_is_made(client, app, flows_ready, sandbox, start_worker):
    sandbox.add_faults({"status": 429, "retry_after": 1, "count": 1, "paths": ["/api/flows"]},
                       {"status": 503, "count": 1, "paths": ["/api/segments"]})
    start_worker()
    client.post_form(PANEL + "all", {})
    wait_for(lambda: settled(app), timeout=60, message="every recipe made despite a 429 and a 503")
    state = made(sandbox)
    assert len(state["flows"]) == len(FLOW_KEYS) and len(state["segments"]) == len(SEGMENT_KEYS)
    assert sandbox.stats()["faults_injected"] == 2


def test_the_daily_limit_makes_it_wait_and_disconnect_cancels_what_waits(client, app, flows_ready, sandbox,
                                                                         start_worker):
    assert sandbox.set_daily_usage("flows_create", 100)["daily_limit"] == 100
    start_worker()
    client.post_form(PANEL + "add/order_confirmation", {})
    row = wait_for(lambda: (items(app).get("order_confirmation") if "a day" in (
        items(app).get("order_confirmation").detail or "") else None), timeout=30, message="the daily limit")
    assert row.status == QUEUED and "Klaviyo allows 100 new flows a day" in row.detail
    now = datetime.now(timezone.utc)
    midnight = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)  # the sandbox's day ends
    assert row.next_attempt_at > min(now + timedelta(minutes=30), midnight - timedelta(seconds=5))
    page = client.get(PANEL).get_data(as_text=True)
    assert "Klaviyo allows 100 new flows a day" in page and made(sandbox)["flows"] == []
    # Disconnect is a hard stop: what waited is cancelled and never made.
    client.post_form("/manage/integrations/klaviyo/disconnect")
    assert items(app)["order_confirmation"].status == CANCELLED
    assert made(sandbox)["flows"] == []


# --- the panel without a worker -----------------------------------------------------------------------------


def test_the_card_opens_the_panel_and_it_lists_every_recipe(client, app, connected):
    card = client.get("/manage/integrations/").get_data(as_text=True)
    assert 'href="/manage/integrations/klaviyo/flows/"' in card and "Set up flows and segments" in card
    fragment = client.get(PANEL, headers=HTMX)
    assert fragment.status_code == 200 and "Vary" in fragment.headers
    text = fragment.get_data(as_text=True)
    assert text.lstrip().startswith('<section class="card panel" id="flows-panel"')
    for recipe in recipes.RECIPES:
        assert recipe.summary in html.unescape(text)
    assert "NextEventStartAt" in text and EXAMPLE in text
    assert "Ticketing: …" in text  # the names Klaviyo will show
    assert client.get(PANEL).get_data(as_text=True).count('id="klaviyo-card"') == 1  # the full page has the card


def test_the_status_polls_only_while_work_runs(client, app, flows_ready):
    with app.app_context():
        db.session.add(SetupItem(organizer_id=flows_ready, key="repeat_attendees", kind="segment",
                                 name="Ticketing: Repeat Attendees", status=QUEUED))
        db.session.commit()
    busy = client.get(PANEL + "status", headers=HTMX).get_data(as_text=True)
    assert 'hx-trigger="load delay:1s"' in busy and "Adding 1 to Klaviyo" in busy
    assert 'id="state-repeat_attendees" hx-swap-oob="true"' in busy and "Queued" in busy
    with app.app_context():
        row = db.session.scalar(select(SetupItem))
        row.status, row.klaviyo_id, row.account_id = CREATED, "AbC123", "SBX01HXYZ"
        db.session.commit()
    idle = client.get(PANEL + "status", headers=HTMX).get_data(as_text=True)
    assert "hx-trigger" not in idle and "hx-get" not in idle and "1 in Klaviyo" in idle


@pytest.mark.parametrize("path, form, message", [
    ("add/vip_segment", {"text": "   "}, "Type the text the ticket type's name must contain"),
    ("add/vip_segment", {"text": "x" * 300}, "under 100 characters"),
    ("add/high_value_segment", {"amount": "lots"}, "Type the amount as a number"),
    ("add/high_value_segment", {"amount": "-3"}, "above 0"),
    ("add/event_segment", {"event_id": "99999"}, "Pick one of your live events"),
    ("add/event_segment", {"event_id": "1e5"}, "Pick one of your live events"),
    ("all", {"text": ""}, "Type the text"),
])
def test_bad_input_gets_a_clear_message_and_adds_nothing(client, app, connected, path, form, message):
    answer = client.post_form(PANEL + path, form)
    assert answer.status_code == 303
    assert any(message in m for m in flashes(client.get(PANEL).get_data(as_text=True)))
    assert items(app) == {}


def test_another_organizers_event_and_items_are_out_of_reach(client, app, connected, make_organizer, make_event):
    other = make_organizer(email="bo@organizer.example")
    theirs = make_event(other)
    client.post_form(PANEL + "add/event_segment", {"event_id": str(theirs)})
    assert items(app) == {}
    with app.app_context():
        row = SetupItem(organizer_id=other, key="repeat_attendees", kind="segment", name="x", status=FAILED)
        db.session.add(row)
        db.session.commit()
        row_id = row.id
    assert client.post_form(f"{PANEL}{row_id}/retry", {}).status_code == 404
    assert items(app)["repeat_attendees"].status == FAILED
    assert client.post_form(PANEL + "add/not_a_recipe", {}).status_code == 404


def test_without_a_connection_the_panel_sends_back_to_the_card(client, organizer):
    assert client.get(PANEL).status_code == 303
    assert client.get(PANEL + "status").status_code == 404
    answer = client.post_form(PANEL + "add/vip_segment", {})
    assert answer.status_code == 303 and answer.headers["Location"].endswith("/manage/integrations/")


def test_the_shared_limiter_keeps_a_daily_window(app, monkeypatch):
    from portal.sync import limiter

    monkeypatch.setitem(limiter.KLAVIYO_LIMITS, "test_daily", (100, 1000))
    monkeypatch.setitem(limiter.KLAVIYO_DAILY_LIMITS, "test_daily", 3)
    with app.app_context():
        assert limiter.daily_left("inst", "test_daily") == 3
        assert [limiter.try_acquire("inst", "test_daily") for _ in range(3)] == [0, 0, 0]
        assert limiter.daily_left("inst", "test_daily") == 0
        wait = limiter.try_acquire("inst", "test_daily")
        assert 86_000 < wait <= 86_400  # until the first of the three is a day old
        assert limiter.try_acquire("other", "test_daily") == 0  # per installation
        assert limiter.daily_left("inst", "events") is None  # no daily limit there
        assert limiter.KLAVIYO_DAILY_LIMITS["flows_create"] == limiter.KLAVIYO_DAILY_LIMITS["segments_create"] == 100


def test_the_limiter_tiers_are_those_of_the_official_slices():
    from portal.sandbox.settings import daily_limits, rate_limit_tiers
    from portal.sync import limiter

    tiers = rate_limit_tiers()
    for endpoint in ("metrics", "flows_read", "flows_create", "segments_create", "events"):
        assert limiter.KLAVIYO_LIMITS[endpoint] == tiers[endpoint][1:], endpoint
    assert {k: v for k, v in daily_limits().items() if k in limiter.KLAVIYO_LIMITS} == limiter.KLAVIYO_DAILY_LIMITS


def test_an_expired_token_is_refreshed_once_and_the_recipe_made(client, app, flows_ready, sandbox, start_worker):
    from portal.crypto import decrypt
    from portal.types import utcnow

    sandbox.configure(access_token_lifetime=1)
    try:
        assert oauth_connect(client, sandbox.url).status_code == 303  # a token Klaviyo ends after a second
        with app.app_context():
            connection = db.session.scalar(select(KlaviyoConnection))
            connection.expires_at = utcnow() + timedelta(hours=1)  # ... while the portal believes it good
            db.session.commit()
            token = decrypt(connection.access_token_enc)
        wait_for(lambda: requests.get(f"{sandbox.url}/api/accounts", timeout=5, headers={
            "Authorization": f"Bearer {token}", "revision": "2026-07-15"}).status_code == 401, message="expiry")
        sandbox.configure(access_token_lifetime=3600)  # the refreshed token lives an hour
        refreshes = sandbox.stats()["refreshes"]
        started = datetime.now(timezone.utc).timestamp()
        start_worker()
        client.post_form(PANEL + "add/repeat_attendees", {})
        wait_for(lambda: settled(app), timeout=30, message="made after one refresh")
        assert sandbox.stats()["refreshes"] == refreshes + 1
        first = sandbox.api_requests_after(started)[0]
        assert (first["path"], first["status"]) == ("/api/metrics", 401)  # refreshed because Klaviyo said 401
        assert [s["name"] for s in made(sandbox)["segments"]] == ["Ticketing: Repeat Attendees"]
    finally:
        sandbox.configure(access_token_lifetime=3600)


def test_abandoned_checkout_says_when_started_checkout_is_off(client, app, connected):
    from portal.sync import abandoned

    assert "Started Checkout is switched off" not in client.get(PANEL).get_data(as_text=True)
    with app.app_context():
        abandoned.set_enabled(connected, False)
    assert "Started Checkout is switched off in View Details" in client.get(PANEL).get_data(as_text=True)
