"""The sandbox's Get Events (GET /api/events): the official slice's answer shape, the filters and pagination the
portal uses (strictly: anything else is a JSON:API 400), events:read, the slice's rate limit, and test-domain
events that Klaviyo drops never coming back."""
import json

import pytest

from portal.sandbox import events_read
from portal.sandbox.limits import RateLimiter
from portal.sandbox.schemas import schema_issues
from tests.sandbox.helpers import api_headers, sample_event


@pytest.fixture
def read_token(oauth) -> str:
    return oauth.connect(scope="accounts:read events:read events:write metrics:read")["access_token"]


def get(client, token, **params):
    return client.get("/api/events", query_string=params, headers=api_headers(token))


def send(post_event, token, unique_id, email="ada@festival.test", time="2026-07-01T12:00:00Z", metric="Placed Order",
         **extra):
    body = sample_event(unique_id=unique_id, time=time, properties={"OrderId": unique_id, **extra},
                        metric={"data": {"type": "metric", "attributes": {"name": metric}}},
                        profile={"data": {"type": "profile", "attributes": {"email": email, "first_name": "Ada"}}})
    assert post_event(body, access_token=token).status_code == 202


def valid(body) -> dict:
    issues = schema_issues("get_events.json", "GetEventResponseCollectionCompoundDocument", body, strict=False)
    assert not issues, issues
    return body


def test_events_come_back_as_klaviyo_returns_them(client, post_event, read_token):
    send(post_event, read_token, "order_1", Items=[{"ProductID": "t-1"}])
    response = get(client, read_token, include="profile,metric")
    assert response.status_code == 200 and response.mimetype == "application/vnd.api+json"
    assert response.headers["RateLimit-Limit"] == "3500"  # the slice's steady limit
    body = valid(response.get_json())
    [event] = body["data"]
    attributes = event["attributes"]
    assert attributes["event_properties"] == {"OrderId": "order_1", "Items": [{"ProductID": "t-1"}],
                                              "$event_id": "order_1", "$value": 10.5}
    assert attributes["datetime"] == "2026-07-01T12:00:00+00:00" and attributes["timestamp"] == 1782907200
    profile_id = event["relationships"]["profile"]["data"]["id"]
    assert len(profile_id) == 26 and profile_id == events_read.profile_id("SBX01HXYZ", "email:ada@festival.test")
    metric_id = event["relationships"]["metric"]["data"]["id"]
    included = {(r["type"], r["id"]): r for r in body["included"]}
    assert included[("profile", profile_id)]["attributes"]["email"] == "ada@festival.test"
    assert included[("metric", metric_id)]["attributes"]["name"] == "Placed Order"
    # The profile link the portal shows lands on the sandbox's profile page.
    page = client.get(f"/profile/{profile_id}")
    assert page.status_code == 200 and "order_1" in page.get_data(as_text=True)
    assert client.get("/profile/01NOTAPROFILE").status_code == 404


def test_test_domain_events_are_dropped_and_never_read_back(client, post_event, read_token):
    send(post_event, read_token, "order_1", email="tess@example.com")
    send(post_event, read_token, "order_2", email="tess@test.com")
    send(post_event, read_token, "order_3", email="real@festival.test")
    ids = [e["attributes"]["event_properties"]["$event_id"] for e in get(client, read_token).get_json()["data"]]
    assert ids == ["order_3"]


def test_filter_by_metric_and_time(client, post_event, read_token):
    send(post_event, read_token, "order_1", time="2026-07-01T12:00:00Z")
    send(post_event, read_token, "order_2", time="2026-07-01T12:00:05Z")
    send(post_event, read_token, "attendee_1", time="2026-07-01T12:00:05Z", metric="Registered Attendee")
    metrics = client.get("/api/metrics", headers=api_headers(read_token)).get_json()["data"]
    placed = next(m["id"] for m in metrics if m["attributes"]["name"] == "Placed Order")

    def ids(flt, **extra):
        response = get(client, read_token, filter=flt, **extra)
        assert response.status_code == 200, response.get_json()
        return [e["attributes"]["event_properties"]["$event_id"] for e in valid(response.get_json())["data"]]

    assert ids(f"equals(metric_id,'{placed}')") == ["order_1", "order_2"]
    assert ids(f"equals(metric_id,'{placed}'),greater-than(datetime,2026-07-01T12:00:00Z)") == ["order_2"]
    assert ids("and(greater-or-equal(datetime,2026-07-01T12:00:05Z),less-or-equal(datetime,2026-07-01T12:00:05Z))",
               sort="-datetime") in (["order_2", "attendee_1"], ["attendee_1", "order_2"])
    assert ids("less-than(timestamp,1782907205)") == ["order_1"]
    assert ids("equals(metric_id,'nope00')") == []


def test_pages_follow_the_next_link(client, post_event, read_token):
    for n in range(5):
        send(post_event, read_token, f"order_{n}", time=f"2026-07-01T12:00:0{n}Z")
    seen, params = [], {"page[size]": "2"}
    for _ in range(5):
        body = valid(get(client, read_token, **params).get_json())
        seen += [e["attributes"]["event_properties"]["$event_id"] for e in body["data"]]
        if "next" not in body["links"]:
            break
        params = dict(part.split("=", 1) for part in body["links"]["next"].split("?", 1)[1].split("&"))
        params = {k.replace("%5B", "[").replace("%5D", "]"): v for k, v in params.items()}
    assert seen == [f"order_{n}" for n in range(5)]


@pytest.mark.parametrize("params, parameter, words", [
    ({"filter": "has(profile)"}, "filter", "does not support 'has(profile)'"),
    ({"filter": "contains(metric_id,'x')"}, "filter", "not a valid operator"),
    ({"filter": "equals(uuid,'x')"}, "filter", "not a valid field"),
    ({"filter": "greater-than(datetime,'yesterday')"}, "filter", "ISO 8601"),
    ({"filter": "greater-than(datetime,2026-07-01T12:00:00)"}, "filter", "time zone"),
    ({"filter": "equals(metric_id,"}, "filter", "Invalid filter"),
    ({"page[size]": "0"}, "page[size]", "whole number"),
    ({"page[size]": "1001"}, "page[size]", "whole number"),
    ({"page[cursor]": "garbage"}, "page[cursor]", "not valid"),
    ({"sort": "created"}, "sort", "not a valid value"),
    ({"fields[event]": "nope"}, "fields[event]", "not a valid value"),
    ({"include": "attributions"}, "include", "does not support"),
    ({"profile_id": "x"}, "profile_id", "not a valid parameter"),
])
def test_what_is_not_supported_is_a_json_api_400(client, read_token, params, parameter, words):
    response = get(client, read_token, **params)
    assert response.status_code == 400
    [error] = response.get_json()["errors"]
    assert error["source"] == {"parameter": parameter} and words in error["detail"], error


def test_events_read_scope_is_required(client, token):
    response = get(client, token)  # the default token: accounts:read events:write
    assert response.status_code == 403
    assert "events:read" in response.get_json()["errors"][0]["detail"]


def test_the_slices_burst_limit_applies(app, client, oauth):
    token = oauth.connect(scope="events:read")["access_token"]
    app.extensions["klaviyo_sandbox"].limiter = RateLimiter(clock=lambda: 1_800_000_000.25)  # one second, frozen
    statuses = [get(client, token).status_code for _ in range(351)]
    assert statuses[:350] == [200] * 350 and statuses[350] == 429  # 350/s, from get_events.json


def test_events_become_visible_after_the_configured_delay(client, post_event, read_token, monkeypatch):
    client.post("/_sandbox/config", json={"events_visible_after": 30})
    send(post_event, read_token, "order_1")
    assert get(client, read_token).get_json()["data"] == []
    real = events_read.time.time
    monkeypatch.setattr(events_read.time, "time", lambda: real() + 31)
    assert len(get(client, read_token).get_json()["data"]) == 1
    assert json.loads(client.get("/_sandbox/config").get_data())["events_visible_after"] == 30
