"""The recipes of "Set up flows and segments": a golden body per recipe (pinned to the Data Reference's use cases),
every body valid against Klaviyo's official slices (create_flow.json, create_segment.json), drafts only, names
prefixed with the product's name, starter e-mails that use only properties the portal really sends, options
checked, and the example profile's events (one per metric we send, all past events)."""
import re
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from portal.klaviyo import example, lifecycle, payloads, recipes, starter_emails
from portal.sandbox import objects, schemas

pytestmark = pytest.mark.filterwarnings("error")

IDS = {"Placed Order": "PLACED", "Ordered Experience": "EXPERIENCE", "Registered Attendee": "ATTENDEE",
       "Started Checkout": "CHECKOUT"}
ALLTIME = {"type": "date", "operator": "alltime"}


def at_least(n: int) -> dict:
    return {"type": "numeric", "operator": "greater-than-or-equal", "value": n}


def email(starter, smart_sending: bool) -> dict:
    return {"message": {"name": starter.name, "subject_line": starter.subject, "preview_text": starter.preview,
                        "smart_sending_enabled": smart_sending, "transactional": False, "add_tracking_params": False},
            "status": "draft"}


def flow(name, trigger, actions, entry, reentry=None, profile_filter=None) -> dict:
    return {"data": {"type": "flow", "attributes": {"name": name, "definition": {
        "triggers": [trigger], "profile_filter": profile_filter, "actions": actions, "entry_action_id": entry,
        "reentry_criteria": reentry}}}}


def date_trigger(days_before: int) -> dict:
    return {"type": "date", "date_field_type": "profile-property", "date_profile_property": "NextEventStartAt",
            "timedelta_unit_before_date": "days", "timedelta_value_before_date": days_before,
            "recurrence_frequency": "never", "timezone": "profile", "trigger_time": "09:00:00"}


def segment(name, *conditions) -> dict:
    return {"data": {"type": "segment", "attributes": {"name": name, "definition": {
        "condition_groups": [{"conditions": list(conditions)}]}}}}


GOLDEN = {
    # Use Case 3: Placed Order, an e-mail right after the trigger, every order.
    "order_confirmation": flow(
        "Ticketing: Order Confirmation", {"type": "metric", "id": "PLACED", "trigger_filter": None},
        [{"temporary_id": "confirmation", "type": "send-email",
          "data": email(starter_emails.ORDER_CONFIRMATION, False), "links": {"next": None}}],
        "confirmation", {"duration": 0, "unit": "alltime"}),
    # Use Case 1, on the profile's NextEventStartAt: the day before, at 9:00 in the person's time zone.
    "event_reminder": flow(
        "Ticketing: Event Reminder", date_trigger(1),
        [{"temporary_id": "day-before", "type": "target-date", "data": {"timezone": "profile", "target_time": "09:00:00"},
          "links": {"next": "reminder"}},
         {"temporary_id": "reminder", "type": "send-email", "data": email(starter_emails.EVENT_REMINDER, False),
          "links": {"next": None}}],
        "day-before"),
    # Use Case 5: Registered Attendee, an e-mail right after the trigger.
    "attendee_welcome": flow(
        "Ticketing: Attendee Welcome", {"type": "metric", "id": "ATTENDEE", "trigger_filter": None},
        [{"temporary_id": "welcome", "type": "send-email", "data": email(starter_emails.ATTENDEE_WELCOME, False),
          "links": {"next": None}}],
        "welcome", {"duration": 0, "unit": "alltime"}),
    # Additional use case: 1 day after the event's start (on the day, then a 1-day wait).
    "post_event_survey": flow(
        "Ticketing: Post-Event Survey", date_trigger(0),
        [{"temporary_id": "event-day", "type": "target-date", "data": {"timezone": "profile", "target_time": "09:00:00"},
          "links": {"next": "day-after"}},
         {"temporary_id": "day-after", "type": "time-delay", "data": {"unit": "days", "value": 1, "timezone": "profile"},
          "links": {"next": "survey"}},
         {"temporary_id": "survey", "type": "send-email", "data": email(starter_emails.POST_EVENT_SURVEY, True),
          "links": {"next": None}}],
        "event-day"),
    # Started Checkout, 4 hours, only for those who have not Placed Order since starting this flow.
    "abandoned_checkout": flow(
        "Ticketing: Abandoned Checkout", {"type": "metric", "id": "CHECKOUT", "trigger_filter": None},
        [{"temporary_id": "wait", "type": "time-delay", "data": {"unit": "hours", "value": 4, "timezone": "profile"},
          "links": {"next": "follow-up"}},
         {"temporary_id": "follow-up", "type": "send-email", "data": email(starter_emails.ABANDONED_CHECKOUT, True),
          "links": {"next": None}}],
        "wait", {"duration": 1, "unit": "week"},
        {"condition_groups": [{"conditions": [{
            "type": "profile-metric", "metric_id": "PLACED", "measurement": "count",
            "measurement_filter": {"type": "numeric", "operator": "equals", "value": 0},
            "timeframe_filter": {"type": "date", "operator": "flow-start"}}]}]}),
    # Use Case 4: Ordered Experience at least once where ExperienceName contains "VIP".
    "vip_segment": segment(
        "Ticketing: VIP Ticket Holders",
        {"type": "profile-metric", "metric_id": "EXPERIENCE", "measurement": "count", "measurement_filter": at_least(1),
         "timeframe_filter": ALLTIME, "metric_filters": [
             {"property": "ExperienceName", "filter": {"type": "string", "operator": "contains", "value": "VIP"}}]}),
    # Use Case 2: Placed Order at least once where EventName equals the event (and its registered attendees).
    "event_segment:7": segment(
        "Ticketing: Summer Music Festival 2026 attendees",
        *[{"type": "profile-metric", "metric_id": metric_id, "measurement": "count", "measurement_filter": at_least(1),
           "timeframe_filter": ALLTIME, "metric_filters": [{"property": "EventName", "filter": {
               "type": "string", "operator": "equals", "value": "Summer Music Festival 2026"}}]}
          for metric_id in ("PLACED", "ATTENDEE")]),
    # Additional: Placed Order where $value is greater than an amount.
    "high_value_segment": segment(
        "Ticketing: High-Value Customers (orders over 200)",
        {"type": "profile-metric", "metric_id": "PLACED", "measurement": "count", "measurement_filter": at_least(1),
         "timeframe_filter": ALLTIME, "metric_filters": [
             {"property": "$value", "filter": {"type": "numeric", "operator": "greater-than", "value": 200}}]}),
    # Additional: Placed Order at least 2 times.
    "repeat_attendees": segment(
        "Ticketing: Repeat Attendees",
        {"type": "profile-metric", "metric_id": "PLACED", "measurement": "count", "measurement_filter": at_least(2),
         "timeframe_filter": ALLTIME}),
}
OPTIONS = {"event_segment:7": {"event_name": "Summer Music Festival 2026"}}


@pytest.mark.parametrize("key", GOLDEN)
def test_golden_body_of_each_recipe(key):
    body = recipes.build(key, IDS, "Ticketing", OPTIONS.get(key))
    assert body == GOLDEN[key]


@pytest.mark.parametrize("key", GOLDEN)
def test_every_body_is_valid_against_the_official_slice_with_the_right_metric_ids(key):
    body = recipes.build(key, IDS, "Ticketing", OPTIONS.get(key))
    if recipes.recipe_for(key).kind == recipes.FLOW:
        objects.assert_valid_create_flow(body, set(IDS.values()))
        # ... and the sandbox would refuse it with a metric id the account does not have
        if recipes.recipe_for(key).metrics:
            assert objects.validate_create_flow(body, {"OTHER"})
    else:
        objects.assert_valid_create_segment(body, set(IDS.values()))
        assert objects.validate_create_segment(body, {"OTHER"})


def test_every_recipe_has_a_golden_body_and_every_flow_is_a_draft_with_draft_emails():
    assert {recipes.base_key(key) for key in GOLDEN} == set(recipes.BY_KEY)
    for key in GOLDEN:
        body = recipes.build(key, IDS, "Ticketing", OPTIONS.get(key))
        assert body["data"]["attributes"]["name"].startswith("Ticketing: ")
        if body["data"]["type"] == "flow":
            actions = body["data"]["attributes"]["definition"]["actions"]
            emails = [a for a in actions if a["type"] == "send-email"]
            assert emails and all(a["data"]["status"] == "draft" for a in emails)


def test_a_missing_metric_id_is_a_key_error_not_a_half_built_body():
    with pytest.raises(KeyError):
        recipes.build("order_confirmation", {}, "Ticketing")


def test_every_recipe_is_offered_now_that_started_checkout_is_sent():
    assert recipes.STARTED_CHECKOUT in recipes.SENT_METRICS
    assert [r.key for r in recipes.RECIPES if r.waits_for] == []


# --- the starter e-mails use exactly the Data Reference's properties ---------------------------------------

LOOKUP = re.compile(r"(event|person)\|lookup:'([^']+)'")
ITEM = re.compile(r"\bitem\.(\w+)")
EVENT_DOT = re.compile(r"\bevent\.(\w+)")


def _sample_order() -> payloads.OrderData:
    buyer = payloads.Person("Ada", "L", "ada@festival.test")
    friend = payloads.Person("Bo", "K", "bo@festival.test")
    when = datetime(2026, 7, 15, 18, tzinfo=timezone.utc)
    line = payloads.TicketLine("t-1", "VIP", Decimal("150"), Decimal("140"), Decimal("10"), 9, friend)
    return payloads.OrderData(1, when, "USD", "Summer Fest", when, when, "Central Park", buyer, (line,),
                              next_events={"ada@festival.test": payloads.NextEvent("Summer Fest", when)})


def _properties() -> dict[str, set[str]]:
    """What the portal really sends: each metric's event properties, the profile's properties, an item's keys."""
    built = payloads.build_order_events(_sample_order()).events
    sent = {event.metric: set(event.body["data"]["attributes"]["properties"]) | {"$value"} for event in built}
    profile = next(e for e in built if e.metric == payloads.PLACED_ORDER).body["data"]["attributes"]["profile"]
    sent["person"] = set(profile["data"]["attributes"]["properties"])
    sent["item"] = set(payloads.item(_sample_order().tickets[0]))
    return sent


@pytest.mark.parametrize("recipe", [r for r in recipes.RECIPES if r.email], ids=lambda r: r.key)
def test_starter_emails_name_only_properties_the_portal_sends(recipe):
    sent = _properties()
    text = " ".join((recipe.email.subject, recipe.email.preview, recipe.email.body))
    metric = recipe.metrics[0] if recipe.metrics else None
    used = LOOKUP.findall(text)
    assert used, "a starter e-mail should use the Data Reference's properties"
    for where, name in used:
        if where == "person":
            assert name in sent["person"], name
        elif metric in sent:
            assert name in sent[metric], (metric, name)
        else:  # Started Checkout is not sent yet: its e-mail sticks to what every purchase event has
            assert name == "EventName"
    for name in EVENT_DOT.findall(text):
        assert name in sent[metric]
    for name in ITEM.findall(text):
        assert name in sent["item"]
    assert "{{ first_name" in recipe.email.body  # the profile's own first name, as the Data Reference lists it


# --- options --------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    (None, ("VIP", None)), ("  Backstage   pass ", ("Backstage pass", None)), ("", (None, "Type the text")),
    ("x" * 101, (None, "under 100")),
])
def test_vip_text(raw, expected):
    text, problem = recipes.vip_text(raw)
    assert text == expected[0]
    assert (problem is None) if expected[1] is None else expected[1] in problem


@pytest.mark.parametrize("raw, expected", [
    (None, "200"), ("1,250.50", "1250.5"), ("99.99", "99.99"), ("abc", None), ("0", None), ("-5", None),
    ("1.234", None), ("1e9", None), ("NaN", None), ("Infinity", None),
])
def test_amount(raw, expected):
    value, problem = recipes.amount(raw)
    assert value == expected
    assert (problem is None) == (expected is not None)


def test_names_follow_the_options():
    assert recipes.name("vip_segment", "Ticketing", {"text": "Backstage"}) == "Ticketing: Backstage Ticket Holders"
    assert recipes.name("high_value_segment", "Tix", {"amount": "99.5"}) == "Tix: High-Value Customers (orders over 99.5)"
    long = "A" * 120
    assert recipes.name("event_segment:1", "T", {"event_name": long}) == f"T: {'A' * 80}… attendees"
    body = recipes.build("high_value_segment", IDS, "T", {"amount": "99.5"})
    assert body["data"]["attributes"]["definition"]["condition_groups"][0]["conditions"][0]["metric_filters"][0][
        "filter"]["value"] == 99.5


# --- the example profile -------------------------------------------------------------------------

def test_example_profile_has_one_past_event_per_metric_we_send():
    events = example.example_events("klaviyo-example@ticketing-portal.test", datetime(2026, 8, 1, tzinfo=timezone.utc))
    assert sorted(e.metric for e in events) == sorted(recipes.SENT_METRICS)
    assert set(recipes.SENT_METRICS) == set(payloads.METRICS + lifecycle.METRICS) | {"Started Checkout"}
    assert len({e.unique_id for e in events}) == len(events)
    for event in events:
        attributes = event.body["data"]["attributes"]
        assert attributes["backfill"] is True  # recorded without starting any flow
        assert attributes["unique_id"] == event.unique_id and event.unique_id.startswith("example_")
        person = attributes["profile"]["data"]["attributes"]
        assert person["email"] == "klaviyo-example@ticketing-portal.test" and person["first_name"] == "Example"
        assert "properties" not in person  # no NextEventStartAt: a reminder flow never mails the example
        schemas.assert_valid_create_event(event.body)
    # the same events, the same unique_ids: seeding twice adds nothing in Klaviyo
    again = example.example_events("klaviyo-example@ticketing-portal.test", datetime(2026, 9, 1, tzinfo=timezone.utc))
    assert [e.unique_id for e in again] == [e.unique_id for e in events]
