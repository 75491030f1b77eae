"""The pure builders for an order's later life (Cancelled Order, Refunded Order, Cancelled Registration, Event
Changed) and the profile's NextEvent properties: golden payloads pinned to docs/data-reference.md, every body
validated against Klaviyo's official schema, and Bulk Create bodies that merge one profile's events in order."""
import copy
import hashlib
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portal.contact import normalize_email
from portal.klaviyo import lifecycle
from portal.klaviyo.lifecycle import (
    Cancellation, ChangeData, RefundData, cancelled_order, cancelled_registration, event_changed, refunded_order,
)
from portal.klaviyo.payloads import NextEvent, OrderData, Person, as_past_event, build_order_events, bulk_body
from portal.sandbox.schemas import assert_valid_bulk_create, assert_valid_create_event
from tests.test_payloads import END, START, golden_order, moments, money, names, orders

AT = datetime(2026, 6, 20, 9, 15, 42, 999, tzinfo=timezone.utc)  # sent to the second: 2026-06-20T09:15:42Z
NAME = "Summer Music Festival 2026"
VENUE = "Central Park, New York"
GALA = NextEvent("Autumn Gala", datetime(2026, 9, 1, 17, 0, tzinfo=timezone(timedelta(hours=2))))
GALA_PROPERTIES = {"NextEventName": "Autumn Gala", "NextEventStartAt": "2026-09-01T15:00:00Z"}
UNSET = {"patch_properties": {"unset": ["NextEventName", "NextEventStartAt"]}}
ITEMS = {
    "t-1": {"ProductID": "t-1", "ProductName": "VIP", "Quantity": 1, "ItemPrice": 150, "RowTotal": 135,
            "FeeAmount": 10},
    "t-2": {"ProductID": "t-2", "ProductName": "General Admission", "Quantity": 1, "ItemPrice": 75, "RowTotal": 67.5,
            "FeeAmount": 5},
    "t-3": {"ProductID": "t-3", "ProductName": "General Admission", "Quantity": 1, "ItemPrice": 75, "RowTotal": 67.5,
            "FeeAmount": 5},
}
PAT_PROFILE = {"email": "Pat@Buyer.example", "first_name": "Pat", "last_name": "Buyer"}
SAM_PROFILE = {"email": "sam@guest.example", "first_name": "Sam", "last_name": "Guest"}
# In a Create Event body an unset rides in the profile's attributes (EventProfileCreateQueryResourceObject); in a
# Bulk Create body the profile resource holds it next to its attributes (OnsiteProfileCreateQueryResourceObject).


def attributes(built):
    return built.body["data"]["attributes"]


def profile_of(built):
    return attributes(built)["profile"]["data"]["attributes"]


def with_next(order: OrderData, **people) -> OrderData:
    """The order with its people's next events: with_next(order, pat=GALA, sam=None)."""
    emails = {"pat": "pat@buyer.example", "sam": "sam@guest.example"}
    return replace(order, next_events={emails[who]: upcoming for who, upcoming in people.items()})


def moved(change_id=4, start=START + timedelta(days=1), end=END + timedelta(days=1), venue=VENUE) -> ChangeData:
    return ChangeData(change_id, AT, NAME, START, start, END, end, VENUE, venue)


# --- Cancelled Order -------------------------------------------------------------------------------------------

def test_cancelled_order_golden():
    built = cancelled_order(golden_order(), Cancellation(AT, "Event full of doubts"))
    assert (built.metric, built.unique_id, built.profile_key) == ("Cancelled Order", "cancel_12345",
                                                                  "pat@buyer.example")
    assert built.body == {"data": {"type": "event", "attributes": {
        "properties": {
            "OrderId": "12345",
            "Items": [ITEMS["t-1"], ITEMS["t-2"], ITEMS["t-3"]],
            "EventName": NAME,
            "EventStartAt": "2026-07-15T18:00:00Z",
            "VenueName": VENUE,
            "Currency": "USD",
            "Reason": "Event full of doubts",
            "IsTest": False,
        },
        "time": "2026-06-20T09:15:42Z",
        "unique_id": "cancel_12345",
        "metric": {"data": {"type": "metric", "attributes": {"name": "Cancelled Order"}}},
        # The purchaser, without the phone number that Placed Order carries.
        "profile": {"data": {"type": "profile", "attributes": PAT_PROFILE}},
        "value": 290,
        "value_currency": "USD",
    }}}
    assert_valid_create_event(built.body)


# --- Refunded Order --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("refund, items, value", [
    pytest.param(RefundData(7, AT, Decimal("290.00"), True, "Cannot come", ("t-1", "t-2", "t-3")),
                 ["t-1", "t-2", "t-3"], 290, id="full, every ticket"),
    pytest.param(RefundData(8, AT, Decimal("72.50"), False, "Cannot come", ("t-2",)),
                 ["t-2"], 72.5, id="partial, one ticket"),
    pytest.param(RefundData(9, AT, Decimal("20.00"), False, "Goodwill", ()),
                 [], 20, id="partial, an amount on the order"),
    pytest.param(RefundData(10, AT, Decimal("197.50"), True, "The rest", ()),
                 [], 197.5, id="full, the last amount on the order"),
    pytest.param(RefundData(11, AT, Decimal("145.00"), False, "Two", ("t-3", "t-1")),
                 ["t-1", "t-3"], 145, id="items in the order's ticket order"),
])
def test_refunded_order_golden(refund, items, value):
    built = refunded_order(golden_order(), refund)
    assert (built.metric, built.unique_id) == ("Refunded Order", f"refund_{refund.refund_id}")
    assert built.body == {"data": {"type": "event", "attributes": {
        "properties": {
            "OrderId": "12345",
            "Items": [ITEMS[ticket_id] for ticket_id in items],
            "RefundedAmount": value,
            "IsFullRefund": refund.is_full,
            "EventName": NAME,
            "EventStartAt": "2026-07-15T18:00:00Z",
            "Currency": "USD",
            "Reason": refund.reason,
            "IsTest": False,
        },
        "time": "2026-06-20T09:15:42Z",
        "unique_id": f"refund_{refund.refund_id}",
        "metric": {"data": {"type": "metric", "attributes": {"name": "Refunded Order"}}},
        "profile": {"data": {"type": "profile", "attributes": PAT_PROFILE}},
        "value": value,  # what this refund gave back, not the order's value
        "value_currency": "USD",
    }}}
    assert_valid_create_event(built.body)


def test_two_refunds_of_one_order_are_two_events():
    first = refunded_order(golden_order(), RefundData(8, AT, Decimal("72.50"), False, "", ("t-2",)))
    second = refunded_order(golden_order(), RefundData(9, AT, Decimal("72.50"), False, "", ("t-3",)))
    assert first.unique_id != second.unique_id


# --- Cancelled Registration ------------------------------------------------------------------------------------

@pytest.mark.parametrize("lost, reason", [
    (lifecycle.LOST_CANCELLED, "cancelled"), (lifecycle.LOST_REFUNDED, "refunded"),
    (lifecycle.LOST_TRANSFERRED, "transferred"),
])
def test_cancelled_registration_golden(lost, reason):
    order = golden_order()
    built = cancelled_registration(order, order.tickets[1], lost, AT)
    assert (built.metric, built.unique_id, built.profile_key) == ("Cancelled Registration", "unregistered_2",
                                                                  "sam@guest.example")
    assert built.body == {"data": {"type": "event", "attributes": {
        "properties": {
            "AttendeeId": "2",
            "OrderId": "12345",
            "EventName": NAME,
            "EventStartAt": "2026-07-15T18:00:00Z",
            "VenueName": VENUE,
            "TicketName": "General Admission",
            "Reason": reason,
            "IsTest": False,
        },
        "time": "2026-06-20T09:15:42Z",
        "unique_id": "unregistered_2",
        "metric": {"data": {"type": "metric", "attributes": {"name": "Cancelled Registration"}}},
        # The attendee, without the phone number their Registered Attendee carried; no value.
        "profile": {"data": {"type": "profile", "attributes": SAM_PROFILE}},
    }}}
    assert_valid_create_event(built.body)


# --- Event Changed ---------------------------------------------------------------------------------------------

def test_event_changed_golden():
    built = event_changed(moved(), Person("Sam", "Guest", " SAM@Guest.example "), {})
    assert (built.metric, built.unique_id) == ("Event Changed", "eventchange_4_97539d33028521dc")
    assert built.body == {"data": {"type": "event", "attributes": {
        "properties": {
            "EventName": NAME,
            "EventStartAt": "2026-07-16T18:00:00Z",
            "EventEndAt": "2026-07-16T23:00:00Z",
            "VenueName": VENUE,
            "PreviousEventStartAt": "2026-07-15T18:00:00Z",
            "PreviousEventEndAt": "2026-07-15T23:00:00Z",
            "PreviousVenueName": VENUE,
            "ChangedFields": ["EventStartAt", "EventEndAt"],
        },
        "time": "2026-06-20T09:15:42Z",
        "unique_id": "eventchange_4_97539d33028521dc",
        "metric": {"data": {"type": "metric", "attributes": {"name": "Event Changed"}}},
        "profile": {"data": {"type": "profile", "attributes": {
            "email": "SAM@Guest.example", "first_name": "Sam", "last_name": "Guest"}}},
    }}}
    assert_valid_create_event(built.body)


@pytest.mark.parametrize("change, fields", [
    pytest.param(moved(end=END), ["EventStartAt"], id="start"),
    pytest.param(moved(start=START), ["EventEndAt"], id="end"),
    pytest.param(moved(start=START, end=END, venue="Prospect Park, Brooklyn"), ["VenueName"], id="venue"),
    pytest.param(moved(venue="Prospect Park, Brooklyn"), ["EventStartAt", "EventEndAt", "VenueName"], id="all"),
    # The same moment written in another time zone is no change.
    pytest.param(moved(start=START.astimezone(timezone(timedelta(hours=-4))), end=END, venue="Hall B"),
                 ["VenueName"], id="same instant, other zone"),
])
def test_event_changed_names_what_changed(change, fields):
    built = event_changed(change, Person("Pat", "Buyer", "pat@buyer.example"), {})
    properties = attributes(built)["properties"]
    assert properties["ChangedFields"] == fields
    assert (properties["VenueName"], properties["PreviousVenueName"]) == (change.new_venue, VENUE)
    assert_valid_create_event(built.body)


def test_event_changed_unique_id_names_the_person_by_digest_never_by_address():
    change = moved()
    ids = {email: event_changed(change, Person("A", "B", email), {}).unique_id
           for email in ("sam@guest.example", " SAM@guest.EXAMPLE", "pat@buyer.example")}
    for email, unique_id in ids.items():
        assert "@" not in unique_id and normalize_email(email).split("@")[0] not in unique_id
    digest = hashlib.sha256(b"sam@guest.example").hexdigest()[:16]
    assert ids["sam@guest.example"] == ids[" SAM@guest.EXAMPLE"] == f"eventchange_4_{digest}"  # one person
    assert ids["pat@buyer.example"] != ids["sam@guest.example"]  # another person
    later = event_changed(moved(change_id=5), Person("A", "B", "sam@guest.example"), {})
    assert later.unique_id == f"eventchange_5_{digest}"  # the next change is a new event for the same person


# --- the profile's NextEventName / NextEventStartAt -------------------------------------------------------------

# Each builder that carries the profile properties, with the person it is about ("pat" or "sam").
CARRIERS = {
    "Placed Order": ("pat", lambda order: build_order_events(order).events[0]),
    "Registered Attendee": ("sam", lambda order: build_order_events(order).events[-1]),
    "Cancelled Order": ("pat", lambda order: cancelled_order(order, Cancellation(AT, "x"))),
    "Refunded Order": ("pat", lambda order: refunded_order(order, RefundData(7, AT, Decimal("1"), False, "x", ()))),
    "Cancelled Registration": ("sam", lambda order: cancelled_registration(order, order.tickets[1],
                                                                           lifecycle.LOST_REFUNDED, AT)),
    "Event Changed": ("sam", lambda order: event_changed(moved(), Person("Sam", "Guest", "sam@guest.example"),
                                                         order.next_events or {})),
}


@pytest.mark.parametrize("metric", CARRIERS)
@pytest.mark.parametrize("state", ["set", "unset", "not computed", "someone else's"])
def test_next_event_profile_properties(metric, state):
    who, build = CARRIERS[metric]
    other = "sam" if who == "pat" else "pat"
    order = {
        "set": with_next(golden_order(), **{who: GALA}),
        "unset": with_next(golden_order(), **{who: None}),
        "not computed": golden_order(),
        "someone else's": with_next(golden_order(), **{other: GALA}),
    }[state]
    built = build(order)
    assert built.metric == metric
    person = profile_of(built)
    if state == "set":
        assert person["properties"] == GALA_PROPERTIES  # in UTC, to the second
        assert "meta" not in person
    elif state == "unset":
        assert person["meta"] == UNSET
        assert "properties" not in person
    else:  # the profile is left as it is in Klaviyo
        assert "properties" not in person and "meta" not in person
    assert_valid_create_event(built.body)


def test_ordered_experience_never_carries_next_event():
    """Its profile stays as the Data Reference lists it; the order's Placed Order carries the purchaser's."""
    for built in build_order_events(with_next(golden_order(), pat=GALA, sam=None)).events:
        if built.metric == "Ordered Experience":
            assert set(profile_of(built)) == {"email", "first_name", "last_name"}


def test_next_events_are_found_by_normalized_email():
    """The purchaser is 'Pat@Buyer.example ' in the order; the mapping holds normalized addresses."""
    built = cancelled_order(with_next(golden_order(), pat=GALA), Cancellation(AT, "x"))
    assert profile_of(built)["properties"] == GALA_PROPERTIES


# --- Bulk Create: mixed events, one profile's events merged in order --------------------------------------------

@pytest.mark.parametrize("sam", [pytest.param(GALA, id="all set"), pytest.param(None, id="one unset")])
def test_bulk_body_of_mixed_events_validates_and_groups_per_profile(sam):
    order = with_next(golden_order(), pat=GALA, sam=sam)
    placed = build_order_events(order).events  # Placed Order, 3 Ordered Experience, Registered Attendee (Sam)
    later = [
        cancelled_order(order, Cancellation(AT, "Event full of doubts")),
        refunded_order(order, RefundData(7, AT, Decimal("290"), True, "Cancelled", ("t-1", "t-2", "t-3"))),
        cancelled_registration(order, order.tickets[1], lifecycle.LOST_CANCELLED, AT),
        event_changed(moved(), Person("Pat", "Buyer", "pat@buyer.example"), order.next_events),
        event_changed(moved(), Person("Sam", "Guest", "sam@guest.example"), order.next_events),
    ]
    events = placed + later
    for built in events:
        assert_valid_create_event(built.body)
    for backfill in (False, True):
        body = bulk_body([e.body for e in events], backfill=backfill)
        assert_valid_bulk_create(body)
        entries = body["data"]["attributes"]["events-bulk-create"]["data"]
        metrics = [[ev["attributes"]["metric"]["data"]["attributes"]["name"]
                    for ev in entry["attributes"]["events"]["data"]] for entry in entries]
        assert metrics == [
            ["Placed Order"] + ["Ordered Experience"] * 3 + ["Cancelled Order", "Refunded Order", "Event Changed"],
            ["Registered Attendee", "Cancelled Registration", "Event Changed"],
        ]
        flags = {ev["attributes"].get("backfill") for entry in entries for ev in entry["attributes"]["events"]["data"]}
        assert flags == ({True} if backfill else {None})


def test_past_lifecycle_events_are_marked_backfill_and_the_original_is_left_alone():
    order = golden_order()
    events = [cancelled_order(order, Cancellation(AT, "x")),
              refunded_order(order, RefundData(7, AT, Decimal("290"), True, "x", ("t-1",))),
              cancelled_registration(order, order.tickets[1], lifecycle.LOST_CANCELLED, AT),
              event_changed(moved(), Person("Sam", "Guest", "sam@guest.example"), {})]
    for built in events:
        before = copy.deepcopy(built.body)
        past = as_past_event(built)
        assert built.body == before and "backfill" not in attributes(built)
        assert attributes(past)["backfill"] is True and past.unique_id == built.unique_id
        assert_valid_create_event(past.body)
    # A request may mix live and past events: each keeps its own flag.
    body = bulk_body([as_past_event(events[0]).body, events[2].body])
    assert_valid_bulk_create(body)
    entries = body["data"]["attributes"]["events-bulk-create"]["data"]
    assert [ev["attributes"].get("backfill") for entry in entries for ev in entry["attributes"]["events"]["data"]] \
        == [True, None]


def merged_profile(*events):
    """The one profile resource of a Bulk Create body made of one person's events."""
    bodies = [e.body for e in events]
    before = copy.deepcopy(bodies)
    body = bulk_body(bodies)
    assert bodies == before  # the events given are not changed
    assert_valid_bulk_create(body)
    [entry] = body["data"]["attributes"]["events-bulk-create"]["data"]
    sent = entry["attributes"]["events"]["data"]
    assert [ev["attributes"]["unique_id"] for ev in sent] == [e.unique_id for e in events]  # in the order given
    return entry["attributes"]["profile"]["data"]


def pat(**attributes):
    return {"type": "profile", "attributes": {**PAT_PROFILE, "phone_number": "+12125550100", **attributes}}


def placed(order):
    return build_order_events(order).events[0]


def cancelled(order):
    return cancelled_order(order, Cancellation(AT, "x"))


def test_bulk_merge_a_later_set_replaces_an_earlier_unset():
    merged = merged_profile(cancelled(with_next(golden_order(), pat=None)), placed(with_next(golden_order(), pat=GALA)))
    assert merged == pat(properties=GALA_PROPERTIES)


def test_bulk_merge_a_later_unset_replaces_an_earlier_set():
    merged = merged_profile(placed(with_next(golden_order(), pat=GALA)), cancelled(with_next(golden_order(), pat=None)))
    assert merged == {**pat(), "meta": UNSET}


def test_bulk_merge_a_later_set_replaces_an_earlier_set():
    sooner = NextEvent("Spring Brunch", datetime(2026, 8, 1, 10, 0, tzinfo=timezone.utc))
    merged = merged_profile(placed(with_next(golden_order(), pat=GALA)),
                            cancelled(with_next(golden_order(), pat=sooner)))
    assert merged == pat(properties={"NextEventName": "Spring Brunch", "NextEventStartAt": "2026-08-01T10:00:00Z"})


@pytest.mark.parametrize("upcoming, expected", [
    pytest.param(GALA, pat(properties=GALA_PROPERTIES), id="set"),
    pytest.param(None, {**pat(), "meta": UNSET}, id="unset"),
])
def test_bulk_merge_an_event_without_the_properties_keeps_them(upcoming, expected):
    """Ordered Experience (never any) and an event whose next events were not computed leave the earlier state."""
    order = with_next(golden_order(), pat=upcoming)
    merged = merged_profile(placed(order), build_order_events(order).events[1], cancelled(golden_order()))
    assert merged == expected


@pytest.mark.parametrize("first, second", [(placed, cancelled), (cancelled, placed)], ids=["phone first", "phone last"])
def test_bulk_merge_keeps_the_phone_of_the_event_that_had_it(first, second):
    merged = merged_profile(first(golden_order()), second(golden_order()))
    assert merged == pat()


def test_bulk_merge_later_details_win():
    order = golden_order()
    merged = merged_profile(placed(order), event_changed(moved(), Person("Patricia", "Buyer", "pat@buyer.example"), {}))
    assert merged == pat(email="pat@buyer.example", first_name="Patricia")


# --- every lifecycle body the builders can make validates against the official schema ----------------------------

@st.composite
def lifecycles(draw, unsets=True):
    """An order (the strategy of test_payloads), its people's next events, and each lifecycle action on it, called
    the way portal/orders/lifecycle.py calls the builders. Without unsets, everyone's next event is known or not
    computed."""
    order = draw(orders())
    purchaser = normalize_email(order.purchaser.email)
    people = sorted({normalize_email(p.email) for p in [order.purchaser] + [t.attendee for t in order.tickets]} - {""})
    upcoming = st.builds(NextEvent, names, moments)
    if unsets:
        upcoming = st.none() | upcoming
    next_events = draw(st.none() | st.dictionaries(st.sampled_from(people), upcoming))
    order = replace(order, next_events=next_events)
    ticket_ids = [line.ticket_id for line in order.tickets]
    built = [
        cancelled_order(order, Cancellation(draw(moments), draw(names))),
        refunded_order(order, RefundData(draw(st.integers(1, 2**62)), draw(moments), draw(money), draw(st.booleans()),
                                         draw(names), tuple(draw(st.lists(st.sampled_from(ticket_ids), unique=True))))),
    ]
    told = set()
    for line in order.tickets:  # one per attendee e-mail other than the purchaser's, as _lost_registrations does
        email = normalize_email(line.attendee.email)
        if email and email != purchaser and email not in told:
            told.add(email)
            lost = draw(st.sampled_from([lifecycle.LOST_CANCELLED, lifecycle.LOST_REFUNDED,
                                         lifecycle.LOST_TRANSFERRED]))
            built.append(cancelled_registration(order, line, lost, draw(moments)))
    start, end = draw(moments), draw(moments)
    change = ChangeData(draw(st.integers(1, 2**62)), draw(moments), order.event_name, order.event_start,
                        draw(st.sampled_from([order.event_start, start])), order.event_end,
                        draw(st.sampled_from([order.event_end, end])), order.venue,
                        draw(st.sampled_from([order.venue, draw(names)])))
    holders = {}  # everyone holding a ticket, once each by e-mail, as holders.holders() gives them
    for person in [order.purchaser] + [line.attendee for line in order.tickets]:
        if normalize_email(person.email):
            holders.setdefault(normalize_email(person.email), Person(person.first_name, person.last_name, person.email))
    built += [event_changed(change, holder, next_events or {}) for holder in holders.values()]
    return order, built


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lifecycles())
def test_every_lifecycle_payload_validates_against_the_official_schema(case):
    _, built = case
    for event in built:
        assert event.metric in lifecycle.METRICS
        assert_valid_create_event(event.body)
        assert_valid_create_event(as_past_event(event).body)
        assert 1 <= len(event.unique_id) <= 255
        has_value = event.metric in ("Cancelled Order", "Refunded Order")
        assert ("value" in attributes(event)) == has_value == ("value_currency" in attributes(event))
        if event.metric == "Event Changed":
            assert "@" not in event.unique_id


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lifecycles())
def test_every_bulk_body_of_an_orders_life_validates_against_the_official_schema(case):
    order, built = case
    everything = [e.body for e in build_order_events(order).events + built]
    assert_valid_bulk_create(bulk_body(everything))
    assert_valid_bulk_create(bulk_body(everything, backfill=True))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lifecycles(unsets=False))
def test_every_bulk_body_without_an_unset_validates_against_the_official_schema(case):
    """The same, for people whose next event is known or not computed: what the bulk path can send today."""
    order, built = case
    everything = [e.body for e in build_order_events(order).events + built]
    assert_valid_bulk_create(bulk_body(everything))
    assert_valid_bulk_create(bulk_body(everything, backfill=True))
