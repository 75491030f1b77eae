"""The pure payload builders: golden payloads pinned to the Data Reference, and every payload the code
can build validated against Klaviyo's official schema."""
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from portal.klaviyo import payloads
from portal.klaviyo.payloads import OrderData, Person, TicketLine, build_order_events, bulk_body
from portal.sandbox.schemas import assert_valid_bulk_create, assert_valid_create_event

PLACED = datetime(2026, 6, 1, 14, 30, 15, 123456, tzinfo=timezone.utc)
START = datetime(2026, 7, 15, 18, 0, tzinfo=timezone.utc)
END = datetime(2026, 7, 15, 23, 0, tzinfo=timezone.utc)
PURCHASER = Person("Pat", "Buyer", "Pat@Buyer.example ", "(212) 555-0100")
GUEST = Person("Sam", "Guest", "sam@guest.example", "+44 20 7946 0958")


def golden_order() -> OrderData:
    """Three tickets: the purchaser's own, and two for Sam (the second e-mail in another case)."""
    return OrderData(
        order_id=12345, placed_at=PLACED, currency="USD", event_name="Summer Music Festival 2026",
        event_start=START, event_end=END, venue="Central Park, New York", purchaser=PURCHASER,
        tickets=(
            TicketLine("t-1", "VIP", Decimal("150.00"), Decimal("135.00"), Decimal("10.00"), 1,
                       Person("Pat", "Buyer", "pat@buyer.example")),
            TicketLine("t-2", "General Admission", Decimal("75.00"), Decimal("67.50"), Decimal("5.00"), 2, GUEST),
            TicketLine("t-3", "General Admission", Decimal("75.00"), Decimal("67.50"), Decimal("5.00"), 3,
                       Person("Sam", "Guest", " SAM@GUEST.example")),
        ),
    )


def by_metric(result, metric):
    return [e for e in result.events if e.metric == metric]


def test_placed_order_golden():
    [event] = by_metric(build_order_events(golden_order()), "Placed Order")
    assert event.unique_id == "order_12345"
    assert event.body == {"data": {"type": "event", "attributes": {
        "properties": {
            "OrderId": "12345",
            "Items": [
                {"ProductID": "t-1", "ProductName": "VIP", "Quantity": 1, "ItemPrice": 150, "RowTotal": 135, "FeeAmount": 10},
                {"ProductID": "t-2", "ProductName": "General Admission", "Quantity": 1, "ItemPrice": 75, "RowTotal": 67.5, "FeeAmount": 5},
                {"ProductID": "t-3", "ProductName": "General Admission", "Quantity": 1, "ItemPrice": 75, "RowTotal": 67.5, "FeeAmount": 5},
            ],
            "EventName": "Summer Music Festival 2026",
            "EventStartAt": "2026-07-15T18:00:00Z",
            "EventEndAt": "2026-07-15T23:00:00Z",
            "VenueName": "Central Park, New York",
            "Currency": "USD",
            "AttendeeCount": 3,
            "IsTest": False,
        },
        "time": "2026-06-01T14:30:15Z",
        "unique_id": "order_12345",
        "metric": {"data": {"type": "metric", "attributes": {"name": "Placed Order"}}},
        "profile": {"data": {"type": "profile", "attributes": {
            "email": "Pat@Buyer.example", "first_name": "Pat", "last_name": "Buyer", "phone_number": "+12125550100"}}},
        "value": 290,
        "value_currency": "USD",
    }}}


def test_ordered_experience_golden():
    events = by_metric(build_order_events(golden_order()), "Ordered Experience")
    assert [e.unique_id for e in events] == ["experience_t-1", "experience_t-2", "experience_t-3"]
    assert events[1].body == {"data": {"type": "event", "attributes": {
        "properties": {
            "OrderId": "12345", "ExperienceId": "t-2", "ExperienceName": "General Admission", "Quantity": 1,
            "TicketPrice": 75, "FinalPrice": 67.5, "FeeAmount": 5, "EventName": "Summer Music Festival 2026",
            "EventStartAt": "2026-07-15T18:00:00Z", "VenueName": "Central Park, New York", "Currency": "USD",
            "IsTest": False,
        },
        "time": "2026-06-01T14:30:15Z",
        "unique_id": "experience_t-2",
        "metric": {"data": {"type": "metric", "attributes": {"name": "Ordered Experience"}}},
        # The purchaser's profile, without a phone number, as the Data Reference lists it.
        "profile": {"data": {"type": "profile", "attributes": {
            "email": "Pat@Buyer.example", "first_name": "Pat", "last_name": "Buyer"}}},
        "value": 67.5,
        "value_currency": "USD",
    }}}


def test_registered_attendee_golden():
    result = build_order_events(golden_order())
    [event] = by_metric(result, "Registered Attendee")
    assert event.body == {"data": {"type": "event", "attributes": {
        "properties": {
            "AttendeeId": "2", "EventName": "Summer Music Festival 2026", "EventStartAt": "2026-07-15T18:00:00Z",
            "EventEndAt": "2026-07-15T23:00:00Z", "VenueName": "Central Park, New York", "OrderId": "12345",
            "Currency": "USD", "TicketName": "General Admission", "IsTest": False,
        },
        "time": "2026-06-01T14:30:15Z",
        "unique_id": "attendee_2",
        "metric": {"data": {"type": "metric", "attributes": {"name": "Registered Attendee"}}},
        "profile": {"data": {"type": "profile", "attributes": {
            "email": "sam@guest.example", "first_name": "Sam", "last_name": "Guest", "phone_number": "+442079460958"}}},
    }}}
    assert "value" not in event.body["data"]["attributes"]
    assert result.attendee_reasons == [(1, payloads.SAME_AS_PURCHASER), (2, payloads.REGISTERED),
                                       (3, payloads.REPEATED_EMAIL)]


def test_order_total_is_sum_of_final_price_and_fee():
    assert payloads.order_total(golden_order()) == Decimal("290.00")


@pytest.mark.parametrize("email, reason", [
    (None, payloads.NO_EMAIL), ("", payloads.NO_EMAIL), ("   ", payloads.NO_EMAIL),
    ("PAT@buyer.example", payloads.SAME_AS_PURCHASER), ("other@x.example", payloads.REGISTERED),
])
def test_attendee_reason(email, reason):
    order = golden_order()
    line = TicketLine("t-9", "GA", Decimal("1"), Decimal("1"), Decimal("0"), 9, Person("A", "B", email))
    order = OrderData(**{**order.__dict__, "tickets": (line,)})
    assert payloads.attendee_reasons(order) == [(9, reason)]


def test_a_test_order_carries_is_test_true_on_every_event():
    result = build_order_events(OrderData(**{**golden_order().__dict__, "is_test": True}))
    assert [e.body["data"]["attributes"]["properties"]["IsTest"] for e in result.events] == [True] * 5
    assert all(e.body["data"]["attributes"]["properties"]["IsTest"] is False
               for e in build_order_events(golden_order()).events)


def test_unreadable_phone_is_left_out_and_noted():
    order = OrderData(**{**golden_order().__dict__, "purchaser": Person("Pat", "Buyer", "pat@buyer.example", "call me")})
    result = build_order_events(order)
    placed = by_metric(result, "Placed Order")[0]
    assert "phone_number" not in placed.body["data"]["attributes"]["profile"]["data"]["attributes"]
    assert any("phone number of the purchaser" in note for note in result.notes)


def test_naive_datetimes_are_refused():
    with pytest.raises(ValueError):
        payloads.iso_utc(datetime(2026, 1, 1))


def test_times_are_converted_to_utc():
    moment = datetime(2026, 7, 15, 14, 0, tzinfo=timezone(timedelta(hours=-4)))
    assert payloads.iso_utc(moment) == "2026-07-15T18:00:00Z"


def test_literal_text_is_sent_unchanged():
    hostile = "<script>alert(1)</script>{{7*7}} & ' \""
    order = OrderData(**{**golden_order().__dict__, "event_name": hostile})
    for event in build_order_events(order).events:
        assert event.body["data"]["attributes"]["properties"]["EventName"] == hostile


def test_bulk_body_groups_per_profile_and_validates():
    result = build_order_events(golden_order())
    body = bulk_body([e.body for e in result.events], backfill=True)
    assert_valid_bulk_create(body)
    entries = body["data"]["attributes"]["events-bulk-create"]["data"]
    assert len(entries) == 2  # the purchaser (4 events) and Sam (1 event)
    assert [len(e["attributes"]["events"]["data"]) for e in entries] == [4, 1]
    assert all(ev["attributes"]["backfill"] is True for e in entries for ev in e["attributes"]["events"]["data"])


# --- every payload the code can build validates against EventCreateQueryV2 ---------------------------

names = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=0, max_size=300)
money = st.decimals(min_value=0, max_value=100000, places=2, allow_nan=False, allow_infinity=False)
emails = st.sampled_from(["a@b.example", "ÜNÏ@例え.jp", "x.y+z@sub.domain.example", "", None, "PAT@BUYER.EXAMPLE"])
phones = st.sampled_from([None, "", "+1 212 555 0100", "020 7946 0958", "not a phone", "+4420794609580000"])
moments = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2027, 1, 1), timezones=st.just(timezone.utc))


@st.composite
def orders(draw):
    count = draw(st.integers(min_value=1, max_value=8))
    tickets = []
    for i in range(count):
        base = draw(money)
        tickets.append(TicketLine(
            ticket_id=f"{i:08d}-uuid", type_name=draw(names.filter(str.strip)) or "GA", base_price=base,
            final_price=draw(st.decimals(min_value=0, max_value=base, places=2)) if base else base,
            fee=draw(money), attendee_id=i + 1,
            attendee=Person(draw(names), draw(names), draw(emails), draw(phones)),
        ))
    start = draw(moments)
    return OrderData(
        order_id=draw(st.integers(min_value=1, max_value=2**62)), placed_at=draw(moments),
        currency=draw(st.sampled_from(["USD", "EUR", "JPY", "GBP"])), event_name=draw(names.filter(str.strip)),
        event_start=start, event_end=start + timedelta(hours=draw(st.integers(1, 72))),
        venue=draw(names), purchaser=Person(draw(names), draw(names), "pat@buyer.example", draw(phones)),
        tickets=tuple(tickets),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(orders())
def test_every_built_payload_validates_against_the_official_schema(order):
    result = build_order_events(order)
    assert len([e for e in result.events if e.metric == "Placed Order"]) == 1
    assert len([e for e in result.events if e.metric == "Ordered Experience"]) == len(order.tickets)
    for event in result.events:
        assert_valid_create_event(event.body)
        assert 1 <= len(event.unique_id) <= 255
    assert_valid_bulk_create(bulk_body([e.body for e in result.events]))


@pytest.mark.parametrize("break_it", [
    lambda a: a.pop("metric"),
    lambda a: a["profile"]["data"].update(type="person"),
    lambda a: a.update(value="290"),
    lambda a: a.update(properties="not an object"),
])
def test_the_schema_check_catches_a_broken_payload(break_it):
    """The validation above can fail: a payload broken in any of these ways is refused."""
    event = by_metric(build_order_events(golden_order()), "Placed Order")[0]
    body = {"data": {"type": "event", "attributes": dict(event.body["data"]["attributes"])}}
    break_it(body["data"]["attributes"])
    with pytest.raises(AssertionError):
        assert_valid_create_event(body)
