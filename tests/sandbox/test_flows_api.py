"""The sandbox's flows, segments and metrics, as strict as Klaviyo: Get Metrics (metrics made by the first event of a
name, per integration), Get Flows, Create Flow and Create Segment against the official slices (unknown fields, bad
trigger and metric ids and broken action links refused with JSON:API errors that point at the field), their
scopes, their burst, steady and daily limits, and the received-events page showing what was made."""
import copy
import json

import pytest

from portal.sandbox import objects
from portal.sandbox.limits import RateLimiter
from tests.sandbox.helpers import api_headers, sample_event

ALL_SCOPES = "accounts:read events:write metrics:read flows:read flows:write segments:write"


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.25):  # 1_800_000_000 is a minute boundary
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(app):
    fake = FakeClock()
    app.extensions["klaviyo_sandbox"].limiter = RateLimiter(clock=fake)
    return fake


@pytest.fixture
def full_token(oauth) -> str:
    return oauth.connect(scope=ALL_SCOPES)["access_token"]


def send_event(client, token, metric="Placed Order", email="ada@festival.test", unique_id="u1"):
    body = sample_event(unique_id=unique_id, metric={"data": {"type": "metric", "attributes": {"name": metric}}},
                        profile={"data": {"type": "profile", "attributes": {"email": email}}})
    response = client.post("/api/events", data=json.dumps(body), headers=api_headers(token))
    assert response.status_code == 202


def metric_ids(client, token) -> dict[str, str]:
    body = client.get("/api/metrics", headers=api_headers(token)).get_json()
    return {m["attributes"]["name"]: m["id"] for m in body["data"]}


def post(client, token, path, body, **headers):
    return client.post(path, data=body if isinstance(body, (str, bytes)) else json.dumps(body),
                       headers={**api_headers(token), **headers})


def flow_body(metric_id, **changes) -> dict:
    definition = {
        "triggers": [{"type": "metric", "id": metric_id, "trigger_filter": None}],
        "profile_filter": None,
        "actions": [
            {"temporary_id": "wait", "type": "time-delay", "data": {"unit": "hours", "value": 2},
             "links": {"next": "email"}},
            {"temporary_id": "email", "type": "send-email",
             "data": {"message": {"name": "Thanks", "subject_line": "Thanks for {{ event|lookup:'EventName' }}"},
                      "status": "draft"}, "links": {"next": None}}],
        "entry_action_id": "wait", "reentry_criteria": {"duration": 0, "unit": "alltime"}}
    definition.update(changes)
    return {"data": {"type": "flow", "attributes": {"name": "Ticketing: Thanks", "definition": definition}}}


def segment_body(metric_id, name="Ticketing: VIP") -> dict:
    return {"data": {"type": "segment", "attributes": {"name": name, "definition": {"condition_groups": [
        {"conditions": [{"type": "profile-metric", "metric_id": metric_id, "measurement": "count",
                         "measurement_filter": {"type": "numeric", "operator": "greater-than-or-equal", "value": 1},
                         "timeframe_filter": {"type": "date", "operator": "alltime"},
                         "metric_filters": [{"property": "ExperienceName",
                                             "filter": {"type": "string", "operator": "contains", "value": "VIP"}}]}]}]}}}}


def error(response, status=400) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/vnd.api+json"
    first = response.get_json()["errors"][0]
    assert set(first) == {"id", "status", "code", "title", "detail", "source", "meta"}
    return first


# --- metrics --------------------------------------------------------------------------------------


def test_the_first_event_of_a_name_creates_its_metric_with_an_id(client, full_token):
    assert client.get("/api/metrics", headers=api_headers(full_token)).get_json()["data"] == []
    send_event(client, full_token, "Placed Order", unique_id="a")
    send_event(client, full_token, "Placed Order", unique_id="b")
    send_event(client, full_token, "Ordered Experience", unique_id="c")
    send_event(client, full_token, "Dropped Metric", email="tess@example.com")  # dropped: no metric either
    response = client.get("/api/metrics", headers=api_headers(full_token))
    assert response.status_code == 200 and response.headers["RateLimit-Limit"] == "150"
    body = response.get_json()
    assert not objects.validate_metrics_response(body)
    names = [m["attributes"]["name"] for m in body["data"]]
    assert names == ["Placed Order", "Ordered Experience"]
    placed = body["data"][0]
    assert len(placed["id"]) == 6 and placed["id"].isalnum()
    assert placed["attributes"]["integration"]["name"] == "Festival Ticketing Portal"  # the OAuth app, branded


def test_a_metric_of_another_integration_is_another_metric_and_filters_find_it(client, full_token):
    send_event(client, full_token, "Placed Order")
    added = client.post("/_sandbox/metrics", json={"name": "Placed Order",
                                                   "integration": {"name": "Shopify", "category": "eCommerce"}})
    assert added.status_code == 201
    shopify = added.get_json()
    assert client.post("/_sandbox/metrics", json={"name": "Placed Order", "integration": {"name": "Shopify"}}
                       ).get_json()["id"] == shopify["id"]  # adding it again finds the same one
    ids = {m["id"] for m in client.get("/api/metrics", headers=api_headers(full_token)).get_json()["data"]}
    assert len(ids) == 2 and shopify["id"] in ids
    only = client.get("/api/metrics", headers=api_headers(full_token),
                      query_string={"filter": "equals(integration.name,'Shopify')"}).get_json()["data"]
    assert [m["id"] for m in only] == [shopify["id"]]
    by_category = client.get("/api/metrics", headers=api_headers(full_token),
                             query_string={"filter": 'equals(integration.category,"eCommerce")',
                                           "fields[metric]": "name"}).get_json()["data"]
    assert by_category[0]["attributes"] == {"name": "Placed Order"}
    assert client.post("/_sandbox/metrics", json={"name": "x"}).status_code == 400


@pytest.mark.parametrize("params, parameter", [
    ({"filter": "equals(name,'Placed Order')"}, "filter"),  # name is not filterable on metrics
    ({"filter": "contains(integration.name,'Shop')"}, "filter"),  # equals only
    ({"filter": "equals(integration.name,'Shop'"}, "filter"),  # not closed
    ({"fields[metric]": "name,colour"}, "fields[metric]"),
    ({"include": "flows"}, "include"),
    ({"page[size]": "10"}, "page[size]"),  # not a parameter of Get Metrics
    ({"page[cursor]": "nonsense!"}, "page[cursor]"),
])
def test_get_metrics_refuses_what_the_slice_does_not_allow(client, full_token, params, parameter):
    first = error(client.get("/api/metrics", headers=api_headers(full_token), query_string=params))
    assert first["source"] == {"parameter": parameter}


def test_get_metrics_pages_200_at_a_time(client, full_token):
    for i in range(201):
        assert client.post("/_sandbox/metrics", json={"name": f"M{i}", "integration": {"name": "Other"}}).status_code == 201
    first = client.get("/api/metrics", headers=api_headers(full_token)).get_json()
    assert len(first["data"]) == 200 and "next" in first["links"]
    cursor = first["links"]["next"].split("page%5Bcursor%5D=")[1]
    second = client.get("/api/metrics", headers=api_headers(full_token),
                        query_string={"page[cursor]": cursor}).get_json()
    assert [m["attributes"]["name"] for m in second["data"]] == ["M200"] and "next" not in second["links"]


def test_metrics_include_the_flows_they_trigger(client, full_token):
    send_event(client, full_token)
    placed = metric_ids(client, full_token)["Placed Order"]
    made = post(client, full_token, "/api/flows", flow_body(placed)).get_json()["data"]
    body = client.get("/api/metrics", headers=api_headers(full_token), query_string={"include": "flow-triggers"}).get_json()
    assert not objects.validate_metrics_response(body)
    assert body["data"][0]["relationships"]["flow-triggers"]["data"] == [{"type": "flow", "id": made["id"]}]
    assert body["included"][0]["attributes"]["name"] == "Ticketing: Thanks"


# --- scopes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("method, path, scope", [
    ("GET", "/api/metrics", "metrics:read"), ("GET", "/api/flows", "flows:read"),
    ("POST", "/api/flows", "flows:write"), ("POST", "/api/segments", "segments:write"),
])
def test_each_endpoint_needs_its_scope(client, token, method, path, scope):
    response = client.open(path, method=method, data="{}", headers=api_headers(token))  # accounts:read events:write
    first = error(response, 403)
    assert first["code"] == "permission_denied" and scope in first["detail"]


def test_no_token_is_401_and_a_wrong_content_type_is_415(client, full_token):
    assert error(client.get("/api/flows"), 401)["code"] == "not_authenticated"
    response = client.post("/api/flows", data="{}", headers={**api_headers(full_token), "Content-Type": "application/json"})
    assert error(response, 415)["code"] == "unsupported_media_type"


# --- creating flows ---------------------------------------------------------------------------------


def test_a_flow_is_created_as_a_draft_with_real_ids(client, full_token):
    send_event(client, full_token)
    placed = metric_ids(client, full_token)["Placed Order"]
    response = post(client, full_token, "/api/flows", flow_body(placed))
    assert response.status_code == 201, response.get_json()
    assert response.headers["RateLimit-Limit"] == "15"
    body = response.get_json()
    assert not objects.validate_flow_created(body)
    attributes = body["data"]["attributes"]
    assert attributes["status"] == "draft" and attributes["trigger_type"] == "Metric"
    definition = attributes["definition"]
    wait, mail = definition["actions"]
    assert "temporary_id" not in wait and wait["id"].isdigit()
    assert definition["entry_action_id"] == wait["id"] and wait["links"]["next"] == mail["id"]
    assert mail["data"]["status"] == "draft" and definition["triggers"][0]["id"] == placed
    stored = client.get("/_sandbox/objects.json").get_json()["flows"]
    assert [f["received"] for f in stored] == [flow_body(placed)]  # what was sent, for tests to check


BAD_FLOWS = {
    "unknown field": (lambda b: b["data"]["attributes"].update(colour="red"), "/data/attributes/colour",
                      "not a valid field"),
    "unknown trigger metric": (lambda b: b["data"]["attributes"]["definition"]["triggers"][0].update(id="NOPE12"),
                               "/data/attributes/definition/triggers/0/id", "does not exist"),
    "two triggers": (lambda b: b["data"]["attributes"]["definition"]["triggers"].append(
        {"type": "metric", "id": "x"}), "/data/attributes/definition/triggers", "Only one trigger"),
    "an id on create": (lambda b: b["data"]["attributes"]["definition"]["actions"][0].update(id="123"),
                        "/data/attributes/definition/actions/0/id", "not allowed on create"),
    "no temporary id": (lambda b: b["data"]["attributes"]["definition"]["actions"][1].pop("temporary_id"),
                        "/data/attributes/definition/actions/1/temporary_id", "temporary_id"),
    "link to nowhere": (lambda b: b["data"]["attributes"]["definition"]["actions"][0]["links"].update(next="gone"),
                        "/data/attributes/definition/actions/0/links/next", "not another action"),
    "entry is not an action": (lambda b: b["data"]["attributes"]["definition"].update(entry_action_id="start"),
                               "/data/attributes/definition/entry_action_id", "temporary_id"),
    "a circle": (lambda b: b["data"]["attributes"]["definition"]["actions"][1]["links"].update(next="wait"),
                 "/data/attributes/definition/actions", "circle"),
    "bad delay unit": (lambda b: b["data"]["attributes"]["definition"]["actions"][0]["data"].update(unit="years"),
                       "/data/attributes/definition/actions/0", None),
    "zero delay": (lambda b: b["data"]["attributes"]["definition"]["actions"][0]["data"].update(value=0),
                   "/data/attributes/definition/actions/0/data/value", "at least 1"),
    "unknown template": (lambda b: b["data"]["attributes"]["definition"]["actions"][1]["data"]["message"].update(
        template_id="T1"), "/data/attributes/definition/actions/1/data/message/template_id", "does not exist"),
    "a string count": (lambda b: b["data"]["attributes"]["definition"]["actions"][0]["data"].update(value="2"),
                       "/data/attributes/definition/actions/0", None),
}


@pytest.mark.parametrize("case", BAD_FLOWS)
def test_bad_flows_are_refused_with_a_pointer(client, full_token, case):
    send_event(client, full_token)
    placed = metric_ids(client, full_token)["Placed Order"]
    body = flow_body(placed)
    change, pointer, words = BAD_FLOWS[case]
    change(body)
    first = error(post(client, full_token, "/api/flows", body))
    assert first["code"] == "invalid" and first["source"]["pointer"].startswith(pointer)
    if words:
        assert words in first["detail"]
    assert client.get("/_sandbox/objects.json").get_json()["flows"] == []


def test_a_trigger_filter_on_another_metric_and_a_profile_filter_on_an_unknown_one_are_refused(client, full_token,
                                                                                              clock):
    send_event(client, full_token)
    send_event(client, full_token, "Ordered Experience")
    ids = metric_ids(client, full_token)
    body = flow_body(ids["Placed Order"])
    body["data"]["attributes"]["definition"]["triggers"][0]["trigger_filter"] = {"condition_groups": [{"conditions": [
        {"type": "metric-property", "metric_id": ids["Ordered Experience"], "field": "EventName",
         "filter": {"type": "string", "operator": "equals", "value": "x"}}]}]}
    assert "own metric" in error(post(client, full_token, "/api/flows", body))["detail"]
    clock.now += 1  # a refused request counts against Create Flow's 1 a second too
    body = flow_body(ids["Placed Order"], profile_filter={"condition_groups": [{"conditions": [{
        "type": "profile-metric", "metric_id": "NOPE12", "measurement": "count",
        "measurement_filter": {"type": "numeric", "operator": "equals", "value": 0},
        "timeframe_filter": {"type": "date", "operator": "flow-start"}}]}]})
    first = error(post(client, full_token, "/api/flows", body))
    assert first["source"]["pointer"] == "/data/attributes/definition/profile_filter/condition_groups/0/conditions/0/metric_id"


def test_a_date_triggered_flow_starts_with_its_target_date(client, full_token, clock):
    trigger = {"type": "date", "date_field_type": "profile-property", "date_profile_property": "NextEventStartAt",
               "timedelta_unit_before_date": "days", "timedelta_value_before_date": 1, "recurrence_frequency": "never",
               "timezone": "profile", "trigger_time": "09:00:00"}
    email = {"temporary_id": "email", "type": "send-email", "data": {"status": "draft"}, "links": {"next": None}}
    no_target = {"data": {"type": "flow", "attributes": {"name": "Reminder", "definition": {
        "triggers": [trigger], "actions": [email], "entry_action_id": "email"}}}}
    assert "target-date" in error(post(client, full_token, "/api/flows", no_target))["detail"]
    clock.now += 1
    good = copy.deepcopy(no_target)
    good["data"]["attributes"]["definition"]["actions"].insert(0, {
        "temporary_id": "day", "type": "target-date", "data": {"timezone": "profile", "target_time": "09:00:00"},
        "links": {"next": "email"}})
    good["data"]["attributes"]["definition"]["entry_action_id"] = "day"
    made = post(client, full_token, "/api/flows", good)
    assert made.status_code == 201 and made.get_json()["data"]["attributes"]["trigger_type"] == "Date Based"
    bad_time = copy.deepcopy(good)
    bad_time["data"]["attributes"]["definition"]["triggers"][0]["trigger_time"] = "9 o'clock"
    clock.now += 1
    assert error(post(client, full_token, "/api/flows", bad_time))["source"]["pointer"].endswith("/trigger_time")


def test_bodies_that_are_not_json_api_are_refused(client, full_token, clock):
    assert error(post(client, full_token, "/api/flows", "{not json"))["code"] == "parse_error"
    clock.now += 1
    assert error(post(client, full_token, "/api/flows", "[1]"))["source"]["pointer"] == "/data"
    clock.now += 1
    assert "required" in error(post(client, full_token, "/api/flows", {"data": {"type": "flow"}}))["detail"]


# --- reading flows --------------------------------------------------------------------------------


def test_get_flows_filters_sorts_and_pages_as_the_slice_allows(client, full_token, clock):
    send_event(client, full_token)
    placed = metric_ids(client, full_token)["Placed Order"]
    for name in ("Ticketing: B", "Ticketing: A", "Other: C"):
        body = flow_body(placed)
        body["data"]["attributes"]["name"] = name
        assert post(client, full_token, "/api/flows", body).status_code == 201
        clock.now += 1  # Create Flow allows one a second
    response = client.get("/api/flows", headers=api_headers(full_token),
                          query_string={"filter": 'equals(name,"Ticketing: A")', "fields[flow]": "name,status"})
    assert response.status_code == 200 and response.headers["RateLimit-Limit"] == "60"
    body = response.get_json()
    assert not objects.validate_flows_response(body)
    assert [f["attributes"] for f in body["data"]] == [{"name": "Ticketing: A", "status": "draft"}]

    def names(**params):
        clock.now += 1  # Get Flows allows three a second
        answer = client.get("/api/flows", headers=api_headers(full_token), query_string=params).get_json()
        return [f["attributes"]["name"] for f in answer["data"]], answer["links"]

    assert names(filter="starts-with(name,'Ticketing')", sort="name")[0] == ["Ticketing: A", "Ticketing: B"]
    assert names(filter="and(equals(status,'draft'),equals(archived,false))", sort="-name")[0] == [
        "Ticketing: B", "Ticketing: A", "Other: C"]
    page, links = names(**{"page[size]": "2"})
    assert page == ["Ticketing: B", "Ticketing: A"] and "next" in links
    cursor = links["next"].split("page%5Bcursor%5D=")[1]
    assert names(**{"page[size]": "2", "page[cursor]": cursor})[0] == ["Other: C"]
    included = client.get("/api/flows", headers=api_headers(full_token), query_string={"include": "flow-actions"}).get_json()
    assert not objects.validate_flows_response(included)
    assert {a["attributes"]["definition"]["type"] for a in included["included"]} == {"time-delay", "send-email"}


@pytest.mark.parametrize("params, parameter", [
    ({"page[size]": "51"}, "page[size]"), ({"page[size]": "0"}, "page[size]"), ({"sort": "colour"}, "sort"),
    ({"filter": "contains(status,'dr')"}, "filter"), ({"filter": "equals(colour,'red')"}, "filter"),
    ({"filter": "any(id,'x')"}, "filter"), ({"filter": "or(equals(name,'a'),equals(name,'b'))"}, "filter"),
    ({"fields[flow]": "definition"}, "fields[flow]"), ({"colour": "red"}, "colour"),
])
def test_get_flows_refuses_what_the_slice_does_not_allow(client, full_token, params, parameter):
    first = error(client.get("/api/flows", headers=api_headers(full_token), query_string=params))
    assert first["source"] == {"parameter": parameter}


# --- segments -------------------------------------------------------------------------------------


def test_a_segment_is_created_with_its_definition(client, full_token):
    send_event(client, full_token, "Ordered Experience")
    experience = metric_ids(client, full_token)["Ordered Experience"]
    response = post(client, full_token, "/api/segments", segment_body(experience))
    assert response.status_code == 201
    body = response.get_json()
    assert not objects.validate_segment_created(body)
    assert body["data"]["attributes"]["definition"] == segment_body(experience)["data"]["attributes"]["definition"]
    assert body["data"]["attributes"]["is_processing"] is True


@pytest.mark.parametrize("case", ["unknown metric", "unknown field", "empty group", "no groups", "negative count"])
def test_bad_segments_are_refused_with_a_pointer(client, full_token, case):
    send_event(client, full_token, "Ordered Experience")
    body = segment_body(metric_ids(client, full_token)["Ordered Experience"])
    groups = body["data"]["attributes"]["definition"]["condition_groups"]
    pointer = "/data/attributes/definition/condition_groups"
    if case == "unknown metric":
        groups[0]["conditions"][0]["metric_id"] = "NOPE12"
        pointer += "/0/conditions/0/metric_id"
    elif case == "unknown field":
        groups[0]["conditions"][0]["colour"] = "red"
        pointer += "/0/conditions/0"
    elif case == "empty group":
        groups[0]["conditions"] = []
        pointer += "/0/conditions"
    elif case == "no groups":
        groups.clear()
    else:
        groups[0]["conditions"][0]["measurement_filter"]["value"] = -1
        pointer += "/0/conditions/0/measurement_filter/value"
    first = error(post(client, full_token, "/api/segments", body))
    assert first["source"]["pointer"].startswith(pointer)
    assert client.get("/_sandbox/objects.json").get_json()["segments"] == []


# --- rate limits ----------------------------------------------------------------------------------


def test_create_flow_allows_one_a_second_and_a_hundred_a_day(client, full_token, clock):
    send_event(client, full_token)
    placed = metric_ids(client, full_token)["Placed Order"]
    assert post(client, full_token, "/api/flows", flow_body(placed)).status_code == 201
    throttled = post(client, full_token, "/api/flows", flow_body(placed))
    assert error(throttled, 429)["code"] == "throttled" and throttled.headers["Retry-After"] == "1"
    clock.now += 1
    used = client.post("/_sandbox/usage", json={"endpoint": "flows_create", "daily_used": 100})
    assert used.status_code == 200 and used.get_json()["daily_limit"] == 100
    daily = post(client, full_token, "/api/flows", flow_body(placed))
    assert daily.status_code == 429
    assert int(daily.headers["Retry-After"]) == 86400 - (int(clock.now) % 86400)  # until midnight UTC
    # the daily limit is the endpoint's own: segments still go
    assert post(client, full_token, "/api/segments", segment_body(placed)).status_code == 201
    clock.now += 86400  # the next day
    assert post(client, full_token, "/api/flows", flow_body(placed)).status_code == 201
    assert client.post("/_sandbox/usage", json={"endpoint": "events", "daily_used": 1}).status_code == 400


def test_the_config_lists_the_new_tiers(client):
    limits = client.get("/_sandbox/config").get_json()["rate_limits"]
    assert limits["flows_create"] == {"scope": "flows:write", "burst_per_second": 1, "steady_per_minute": 15}
    assert limits["metrics"]["scope"] == "metrics:read" and limits["flows_read"]["steady_per_minute"] == 60


# --- what the sandbox shows -------------------------------------------------------------------------


def test_the_received_page_shows_each_flow_and_segment_in_words(client, full_token, clock):
    send_event(client, full_token)
    send_event(client, full_token, "Ordered Experience")
    ids = metric_ids(client, full_token)
    flow = post(client, full_token, "/api/flows", flow_body(ids["Placed Order"])).get_json()["data"]
    segment = post(client, full_token, "/api/segments",
                   segment_body(ids["Ordered Experience"], name="<b>VIP</b>")).get_json()["data"]
    html = client.get("/").get_data(as_text=True)
    assert "Ticketing: Thanks" in html
    assert f"Trigger — Metric: Placed Order ({ids['Placed Order']})" in html
    assert "Wait 2 hours" in html and "E-mail (draft)" in html
    assert "ExperienceName contains &#39;VIP&#39;" in html and "&lt;b&gt;VIP&lt;/b&gt;" in html  # escaped
    page = client.get(f"/flow/{flow['id']}/edit")
    assert page.status_code == 200 and "Wait 2 hours" in page.get_data(as_text=True)
    assert client.get(f"/list/{segment['id']}/members").status_code == 200
    assert client.get("/flow/NOPE12/edit").status_code == 404
    client.post("/_sandbox/reset")
    assert client.get("/_sandbox/objects.json").get_json() == {"metrics": [], "flows": [], "segments": []}
