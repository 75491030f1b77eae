"""The Klaviyo sandbox answers like Klaviyo: strict OAuth, strict API, limits, faults."""

from __future__ import annotations

import json
import threading
import time

import pytest
import requests

from portal.sandbox import schemas
from portal.sandbox import create_sandbox_app
from portal.sandbox.limits import RateLimiter
from portal.sandbox.server import start_in_thread
from tests.sandbox.helpers import (
    CLIENT_SECRET,
    REDIRECT_URI,
    SAMPLE_EVENT,
    OAuthFlow,
    api_headers,
    basic,
    bulk_body,
    redirect_query,
    sample_event,
)

pytestmark = pytest.mark.filterwarnings("error")


def events_json(client, **params):
    return client.get("/_sandbox/events.json", query_string=params).get_json()["events"]


def stats(client, **params):
    return client.get("/_sandbox/stats", query_string=params).get_json()


# --- OAuth: authorize and consent ---------------------------------------------------------


def test_consent_page_names_account_app_and_scopes(oauth):
    page = oauth.authorize()
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "Sandbox Festival Co." in html
    assert "Festival Ticketing Portal" in html
    assert "Record new events in your account" in html and "events:write" in html
    assert "See your account details" in html
    assert 'value="allow"' in html and 'value="deny"' in html
    assert 'name="nonce"' in html
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"


def test_full_code_flow_with_pkce(oauth, client):
    code = oauth.code()
    response = oauth.exchange(code)
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token", "scope"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["scope"] == "accounts:read events:write"
    assert len(body["access_token"]) >= 64 and len(body["refresh_token"]) >= 43
    assert response.headers["Cache-Control"] == "no-store"

    accounts = client.get("/api/accounts", headers=api_headers(body["access_token"]))
    assert accounts.status_code == 200
    assert accounts.mimetype == "application/vnd.api+json"
    document = accounts.get_json()
    assert schemas.validate_accounts_response(document) == []
    (account,) = document["data"]
    assert account["id"] == "SBX01HXYZ"
    assert account["attributes"]["contact_information"]["organization_name"] == "Sandbox Festival Co."
    assert account["attributes"]["public_api_key"] == "SbX123"
    assert stats(client)["token_grants"] == 1


def test_sparse_fieldset_on_accounts(client, token, clock):
    response = client.get("/api/accounts?fields[account]=contact_information.organization_name,timezone",
                          headers=api_headers(token))
    attributes = response.get_json()["data"][0]["attributes"]
    assert attributes == {"contact_information": {"organization_name": "Sandbox Festival Co."},
                          "timezone": "America/New_York"}
    clock.now += 1  # Get Accounts allows one call per second
    bad = client.get("/api/accounts?fields[account]=nope", headers=api_headers(token))
    assert bad.status_code == 400
    assert bad.get_json()["errors"][0]["source"] == {"parameter": "fields[account]"}


def test_bad_verifier_fails_code_challenge(oauth):
    other = OAuthFlow(oauth.client).verifier
    response = oauth.exchange(oauth.code(), verifier=other)
    assert response.status_code == 400
    assert response.get_json() == {"error": "invalid_grant", "error_description": "Code challenge failed."}


def test_malformed_verifier_is_invalid_request(oauth):
    response = oauth.exchange(oauth.code(), verifier="too-short")
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_request"


def test_replayed_code_fails_and_revokes_its_tokens(oauth, client):
    code = oauth.code()
    first = oauth.exchange(code).get_json()
    replay = oauth.exchange(code)
    assert replay.status_code == 400
    assert replay.get_json()["error"] == "invalid_grant"
    assert client.get("/api/accounts", headers=api_headers(first["access_token"])).status_code == 401
    assert oauth.refresh(first["refresh_token"]).get_json() == {"error": "invalid_grant"}


def test_expired_code(oauth, client):
    client.post("/_sandbox/config", json={"code_lifetime": 0})
    code = oauth.code()
    time.sleep(0.01)
    response = oauth.exchange(code)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_grant"
    assert "expired" in response.get_json()["error_description"]


def test_redirect_uri_must_match_the_one_authorized(oauth, client):
    other = "http://localhost:5000/manage/integrations/klaviyo/callback"
    response = oauth.exchange(oauth.code(), redirect_uri=other)
    assert response.status_code == 400
    assert response.get_json()["error"] == "invalid_grant"


@pytest.mark.parametrize("headers, extra", [
    ({}, {}),
    ({}, {"client_id": "sandbox-client-id", "client_secret": CLIENT_SECRET}),  # secret in body only
    (basic(secret="wrong"), {}),
    (basic(client_id="someone-else"), {}),
], ids=["no-auth", "secret-in-body", "wrong-secret", "wrong-client"])
def test_token_endpoint_requires_basic_auth(oauth, headers, extra):
    response = oauth.exchange(oauth.code(), headers=headers, **extra)
    assert response.status_code == 401
    assert response.get_json() == {"error": "invalid_client"}


def test_token_endpoint_rejects_json_and_unknown_grants(client):
    as_json = client.post("/oauth/token", json={"grant_type": "refresh_token"}, headers=basic())
    assert as_json.status_code == 400 and as_json.get_json()["error"] == "invalid_request"
    unknown = client.post("/oauth/token", data={"grant_type": "password"}, headers=basic())
    assert unknown.status_code == 400 and unknown.get_json() == {"error": "unsupported_grant_type"}


def test_unregistered_redirect_uri_never_redirects(oauth):
    response = oauth.authorize(redirect_uri="https://evil.test/callback")
    assert response.status_code == 400
    assert "Location" not in response.headers
    assert "not one of the app" in response.get_data(as_text=True)


def test_unknown_client_is_an_error_page(oauth):
    response = oauth.authorize(client_id="nobody")
    assert response.status_code == 400 and "Location" not in response.headers


@pytest.mark.parametrize("overrides, fragment", [
    ({"code_challenge": None}, "code_challenge"),
    ({"code_challenge_method": "plain"}, "S256"),
    ({"scope": "events:write events:fly"}, "events:fly"),
    ({"scope": None}, "scope"),
    ({"response_type": "token"}, "response_type"),
], ids=["no-challenge", "plain-method", "unknown-scope", "no-scope", "implicit"])
def test_authorize_problems_redirect_back_with_invalid_request(oauth, overrides, fragment):
    query = redirect_query(oauth.authorize(**overrides))
    assert query["error"] == "invalid_request"
    assert fragment in query["error_description"]
    assert query["state"] == oauth.state


def test_deny_redirects_with_access_denied(oauth):
    query = redirect_query(oauth.answer(oauth.authorize(), decision="deny"))
    assert query["error"] == "access_denied"
    assert query["state"] == oauth.state
    assert "code" not in query


def test_consent_form_cannot_be_forged_or_replayed(oauth, client):
    forged = client.post("/oauth/authorize", data={"nonce": "guess", "decision": "allow"})
    assert forged.status_code == 400 and "Location" not in forged.headers
    page = oauth.authorize()
    assert oauth.answer(page).status_code == 302
    again = oauth.answer(page)
    assert again.status_code == 400 and "Location" not in again.headers


def test_consent_offers_a_choice_of_accounts(make_app):
    app = make_app(SANDBOX_ACCOUNTS=[
        {"id": "ACC1", "organization_name": "Harbour Jazz"},
        {"id": "ACC2", "organization_name": "Mountain <b>Folk</b>", "public_api_key": "MtF456"}])
    client = app.test_client()
    flow = OAuthFlow(client)
    page = flow.authorize()
    html = page.get_data(as_text=True)
    assert "Harbour Jazz" in html and "Mountain &lt;b&gt;Folk&lt;/b&gt;" in html
    assert 'type="radio"' in html
    code = redirect_query(flow.answer(page, account_id="ACC2"))["code"]
    token = flow.exchange(code).get_json()["access_token"]
    (account,) = client.get("/api/accounts", headers=api_headers(token)).get_json()["data"]
    assert account["id"] == "ACC2" and account["attributes"]["public_api_key"] == "MtF456"


def test_redirect_uris_can_be_added_at_run_time(oauth, client):
    extra = "http://127.0.0.1:7777/cb"
    assert oauth.authorize(redirect_uri=extra).status_code == 400
    config = client.post("/_sandbox/config", json={"redirect_uris": [extra]}).get_json()
    assert extra in config["redirect_uris"] and REDIRECT_URI in config["redirect_uris"]
    assert oauth.authorize(redirect_uri=extra).status_code == 200
    assert client.post("/_sandbox/config", json={"nonsense": 1}).status_code == 400


# --- OAuth: refresh, revoke, uninstall -----------------------------------------------------


def test_refresh_rotates_the_refresh_token(oauth, client):
    first = oauth.connect()
    response = oauth.refresh(first["refresh_token"])
    assert response.status_code == 200
    second = response.get_json()
    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] != first["refresh_token"]
    assert second["scope"] == first["scope"]
    assert oauth.refresh(first["refresh_token"]).get_json() == {"error": "invalid_grant"}
    assert client.get("/api/accounts", headers=api_headers(second["access_token"])).status_code == 200
    assert oauth.refresh(second["refresh_token"]).status_code == 200
    assert stats(client)["refreshes"] == 2


def test_unknown_refresh_token_is_invalid_grant(oauth):
    response = oauth.refresh("krt_not-a-real-token")
    assert response.status_code == 400
    assert response.get_json() == {"error": "invalid_grant"}


def test_revoke_kills_refresh_and_access_tokens(oauth, client):
    tokens = oauth.connect()
    response = oauth.revoke(tokens["refresh_token"])
    assert response.status_code == 200 and response.get_json() == {}
    assert client.get("/api/accounts", headers=api_headers(tokens["access_token"])).status_code == 401
    assert oauth.refresh(tokens["refresh_token"]).get_json() == {"error": "invalid_grant"}
    (revoke,) = stats(client)["revokes"]
    assert revoke["via"] == "oauth_revoke" and revoke["token_type_hint"] == "refresh_token"
    assert revoke["account_id"] == "SBX01HXYZ" and revoke["grants_revoked"] == 1
    assert "revoked by app" in client.get("/").get_data(as_text=True)


def test_revoke_requires_basic_auth(oauth, client):
    tokens = oauth.connect()
    response = client.post("/oauth/revoke", data={"token": tokens["refresh_token"]})
    assert response.status_code == 401 and response.get_json() == {"error": "invalid_client"}


def test_uninstall_in_klaviyo_gives_invalid_grant(oauth, client):
    tokens = oauth.connect()
    (installation,) = stats(client)["installations"]
    result = client.post("/_sandbox/uninstall", json={"installation_id": installation["id"]}).get_json()
    assert result["uninstalled"][0]["installation_id"] == installation["id"]
    assert oauth.refresh(tokens["refresh_token"]).get_json() == {"error": "invalid_grant"}
    assert client.get("/api/accounts", headers=api_headers(tokens["access_token"])).status_code == 401
    assert stats(client)["installations"][0]["status"] == "uninstalled"
    # Connecting again brings the same installation back.
    OAuthFlow(client).connect()
    assert stats(client)["installations"][0]["status"] == "connected"


def test_expired_access_token_is_401(oauth, client):
    client.post("/_sandbox/config", json={"access_token_lifetime": 0})
    tokens = oauth.connect()
    assert tokens["expires_in"] == 0
    time.sleep(0.01)
    response = client.get("/api/accounts", headers=api_headers(tokens["access_token"]))
    assert response.status_code == 401
    assert response.get_json()["errors"][0]["code"] == "authentication_failed"


# --- API: authentication, revision, scope, content type --------------------------------------


@pytest.mark.parametrize("authorization, code", [
    (None, "not_authenticated"),
    ("Bearer not-a-token", "authentication_failed"),
    ("Klaviyo-API-Key pk_abc123", "authentication_failed"),
])
def test_api_authentication_errors(client, authorization, code):
    headers = api_headers(None)
    if authorization:
        headers["Authorization"] = authorization
    response = client.post("/api/events", data=json.dumps(SAMPLE_EVENT), headers=headers)
    assert response.status_code == 401
    (error,) = response.get_json()["errors"]
    assert error["code"] == code and error["status"] == 401
    assert set(error) >= {"id", "status", "code", "title", "detail", "source", "meta"}


@pytest.mark.parametrize("revision", [None, "latest", "2026-13-01", "2099-01-15"])
def test_revision_header_is_required_and_checked(post_event, revision):
    response = post_event(headers={"revision": revision})
    assert response.status_code == 400
    (error,) = response.get_json()["errors"]
    assert error["source"] == {"parameter": "revision"}


def test_beta_revision_suffix_is_accepted(post_event):
    assert post_event(headers={"revision": "2026-07-15.pre"}).status_code == 202


def test_missing_scope_is_403(oauth, post_event):
    token = oauth.connect(scope="accounts:read")["access_token"]
    response = post_event(access_token=token)
    assert response.status_code == 403
    (error,) = response.get_json()["errors"]
    assert error["code"] == "permission_denied" and "events:write" in error["detail"]


@pytest.mark.parametrize("content_type", ["application/json", None, "text/plain"])
def test_wrong_content_type_is_415(post_event, content_type):
    response = post_event(headers={"Content-Type": content_type})
    assert response.status_code == 415
    assert response.get_json()["errors"][0]["code"] == "unsupported_media_type"


def test_unknown_api_path_is_jsonapi_404(client, token):
    response = client.get("/api/nope", headers=api_headers(token))
    assert response.status_code == 404
    assert response.get_json()["errors"][0]["code"] == "not_found"


# --- API: Create Event ----------------------------------------------------------------------


def test_valid_event_is_accepted_and_recorded(post_event, client):
    response = post_event()
    assert response.status_code == 202
    assert response.get_data() == b""
    assert "Content-Type" not in response.headers
    (event,) = events_json(client)
    assert event["metric"] == "Placed Order"
    assert event["account_id"] == "SBX01HXYZ"
    assert event["profile"] == {"email": "ada@festival.test", "first_name": "Ada", "last_name": "L"}
    assert event["properties"] == {"OrderId": "1"}
    assert event["unique_id"] == "order_1"
    assert event["time"] == "2026-07-01T12:00:00+00:00"
    assert event["value"] == 10.5 and event["value_currency"] == "USD"
    assert event["backfill"] is False
    assert event["received_at"] > 0
    assert events_json(client, metric="Placed Order") and not events_json(client, metric="Viewed")


def test_repeat_event_is_deduplicated(post_event, client):
    assert post_event().status_code == 202
    (first,) = events_json(client)
    assert first["times_received"] == 1 and first["last_received_at"] == first["received_at"]
    shouting = sample_event(profile={"data": {"type": "profile", "attributes": {"email": "ADA@Festival.test"}}},
                            properties={"OrderId": "changed"})
    assert post_event(shouting).status_code == 202
    (kept,) = events_json(client)  # Klaviyo keeps the first; the sandbox counts the repeat it received
    assert kept["properties"] == {"OrderId": "1"} and kept["profile"]["email"] == "ada@festival.test"
    assert kept["times_received"] == 2 and kept["last_received_at"] >= kept["received_at"]
    assert stats(client)["duplicates_ignored"] == 1
    assert stats(client)["accepted"]["total"] == 1
    assert post_event(sample_event(unique_id="order_2")).status_code == 202
    received = {e["unique_id"]: e["times_received"] for e in events_json(client)}
    assert received == {"order_1": 2, "order_2": 1}
    assert "received 2×" in client.get("/").get_data(as_text=True)


def test_repeats_are_counted_per_profile_and_metric(post_event, client):
    assert post_event().status_code == 202
    other_profile = sample_event(profile={"data": {"type": "profile", "attributes": {"email": "bo@festival.test"}}})
    other_metric = sample_event(metric={"data": {"type": "metric", "attributes": {"name": "Ordered Experience"}}})
    for body in (other_profile, other_metric, other_profile):
        assert post_event(body).status_code == 202
    received = sorted((e["metric"], e["profile"]["email"], e["times_received"]) for e in events_json(client))
    assert received == [("Ordered Experience", "ada@festival.test", 1), ("Placed Order", "ada@festival.test", 1),
                        ("Placed Order", "bo@festival.test", 2)]
    assert stats(client)["duplicates_ignored"] == 1


def test_event_without_unique_id_dedups_on_the_second(post_event, client):
    for _ in range(2):
        assert post_event(sample_event(unique_id=None)).status_code == 202
    (event,) = events_json(client)
    assert event["unique_id"] == "2026-07-01T12:00:00+00:00" and event["unique_id_given"] is False


def test_test_addresses_are_accepted_then_dropped(post_event, client):
    body = sample_event(profile={"data": {"type": "profile", "attributes": {"email": "x@example.com"}}})
    assert post_event(body).status_code == 202
    assert events_json(client) == []
    assert stats(client)["dropped_test_addresses"] == 1


def _profile(**attributes):
    return {"data": {"type": "profile", "attributes": attributes}}


INVALID_EVENTS = [
    ("missing-metric", lambda b: b["data"]["attributes"].pop("metric"), "/data/attributes/metric"),
    ("unknown-field", lambda b: b["data"]["attributes"]["profile"]["data"]["attributes"].update(fist_name="A"),
     "/data/attributes/profile/data/attributes/fist_name"),
    ("wrong-type", lambda b: b["data"].update(type="events"), "/data/type"),
    ("value-as-string", lambda b: b["data"]["attributes"].update(value="10.50"), "/data/attributes/value"),
    ("no-identifier", lambda b: b["data"]["attributes"].update(profile=_profile(first_name="Ada")),
     "/data/attributes/profile/data/attributes"),
    ("bad-email", lambda b: b["data"]["attributes"].update(profile=_profile(email="ada@")),
     "/data/attributes/profile/data/attributes/email"),
    ("long-email", lambda b: b["data"]["attributes"].update(profile=_profile(email="a" * 90 + "@festival.test")),
     "/data/attributes/profile/data/attributes/email"),
    ("bad-phone", lambda b: b["data"]["attributes"].update(profile=_profile(phone_number="555-0100")),
     "/data/attributes/profile/data/attributes/phone_number"),
    ("invalid-phone", lambda b: b["data"]["attributes"].update(profile=_profile(phone_number="+1212555012")),
     "/data/attributes/profile/data/attributes/phone_number"),
    ("time-without-zone", lambda b: b["data"]["attributes"].update(time="2026-07-01T12:00:00"),
     "/data/attributes/time"),
    ("unix-time", lambda b: b["data"]["attributes"].update(time="1751371200"), "/data/attributes/time"),
    ("time-1989", lambda b: b["data"]["attributes"].update(time="1989-12-31T00:00:00Z"), "/data/attributes/time"),
    ("time-far-future", lambda b: b["data"]["attributes"].update(time="2099-01-01T00:00:00Z"),
     "/data/attributes/time"),
    ("empty-unique-id", lambda b: b["data"]["attributes"].update(unique_id=""), "/data/attributes/unique_id"),
    ("long-unique-id", lambda b: b["data"]["attributes"].update(unique_id="u" * 256), "/data/attributes/unique_id"),
    ("long-metric", lambda b: b["data"]["attributes"]["metric"]["data"]["attributes"].update(name="M" * 128),
     "/data/attributes/metric/data/attributes/name"),
    ("401-properties", lambda b: b["data"]["attributes"].update(properties={f"p{i}": i for i in range(401)}),
     "/data/attributes/properties"),
    ("huge-string", lambda b: b["data"]["attributes"].update(properties={"Blob": "x" * (100 * 1024 + 1)}),
     "/data/attributes/properties/Blob"),
    ("bad-currency", lambda b: b["data"]["attributes"].update(value_currency="dollars"),
     "/data/attributes/value_currency"),
]


@pytest.mark.parametrize("mutate, pointer", [(m, p) for _, m, p in INVALID_EVENTS],
                         ids=[name for name, _, _ in INVALID_EVENTS])
def test_invalid_events_get_400_with_a_pointer(post_event, client, mutate, pointer):
    body = sample_event()
    mutate(body)
    response = post_event(body)
    assert response.status_code == 400, response.get_data(as_text=True)
    errors = response.get_json()["errors"]
    assert pointer in [e["source"]["pointer"] for e in errors], errors
    assert all(e["code"] == "invalid" and e["title"] == "Invalid input." and e["detail"] for e in errors)
    assert events_json(client) == []


@pytest.mark.parametrize("raw", ["{not json", '{"data": NaN}', "[]"])
def test_malformed_json_is_400(post_event, raw):
    response = post_event(raw)
    assert response.status_code == 400
    assert response.get_json()["errors"][0]["code"] in ("parse_error", "invalid")


def test_payload_over_5mb_is_rejected(post_event):
    body = sample_event(properties={f"chunk{i}": "x" * 90_000 for i in range(60)})
    response = post_event(body)
    assert response.status_code == 400
    assert "5MB" in response.get_json()["errors"][0]["detail"]


def test_assert_valid_create_event_explains_problems():
    schemas.assert_valid_create_event(SAMPLE_EVENT)
    with pytest.raises(AssertionError, match="/data/attributes/metric"):
        schemas.assert_valid_create_event({"data": {"type": "event", "attributes": {"properties": {}}}})


# --- API: Bulk Create Events --------------------------------------------------------------


def test_bulk_with_repeated_unique_id_fails_whole_request(post_event, client):
    body = bulk_body(3, 2)
    events = body["data"]["attributes"]["events-bulk-create"]["data"][1]["attributes"]["events"]["data"]
    events[1]["attributes"]["unique_id"] = events[0]["attributes"]["unique_id"]
    response = post_event(body, path="/api/event-bulk-create-jobs")
    assert response.status_code == 400
    (error,) = response.get_json()["errors"]
    assert error["source"]["pointer"] == ("/data/attributes/events-bulk-create/data/1/attributes/"
                                          "events/data/1/attributes/unique_id")
    assert events_json(client) == []


def test_bulk_with_one_invalid_event_stores_nothing(post_event, client):
    body = bulk_body(5)
    entry = body["data"]["attributes"]["events-bulk-create"]["data"][3]
    entry["attributes"]["events"]["data"][0]["attributes"]["time"] = "yesterday"
    response = post_event(body, path="/api/event-bulk-create-jobs")
    assert response.status_code == 400
    assert response.get_json()["errors"][0]["source"]["pointer"] == (
        "/data/attributes/events-bulk-create/data/3/attributes/events/data/0/attributes/time")
    assert events_json(client) == []


def test_bulk_of_1000_is_accepted_and_recorded_quickly(post_event, client):
    body = bulk_body(100, 10)
    started = time.perf_counter()
    response = post_event(body, path="/api/event-bulk-create-jobs")
    elapsed = time.perf_counter() - started
    assert response.status_code == 202 and response.get_data() == b""
    assert stats(client)["accepted"]["by_metric"] == {"Ordered Experience": 1000}
    assert elapsed < 2.0, f"bulk of 1,000 took {elapsed:.3f}s"  # ~0.1 s here; generous for CI
    # Sending it again records nothing new: every event is a duplicate, and counted as received twice.
    assert post_event(body, path="/api/event-bulk-create-jobs").status_code == 202
    assert stats(client)["duplicates_ignored"] == 1000
    assert stats(client)["accepted"]["total"] == 1000
    assert {e["times_received"] for e in events_json(client)} == {2}


def test_a_bulk_repeat_of_single_events_counts_only_those(post_event, client):
    body = bulk_body(3, 1)
    first = body["data"]["attributes"]["events-bulk-create"]["data"][0]
    single = {"data": {"type": "event", "attributes": {
        **first["attributes"]["events"]["data"][0]["attributes"], "profile": first["attributes"]["profile"]}}}
    assert post_event(single).status_code == 202
    assert post_event(body, path="/api/event-bulk-create-jobs").status_code == 202
    received = {e["unique_id"] + " " + e["profile"]["email"]: e["times_received"] for e in events_json(client)}
    assert received == {"ticket_0_0 buyer0@festival.test": 2, "ticket_1_0 buyer1@festival.test": 1,
                        "ticket_2_0 buyer2@festival.test": 1}
    assert stats(client)["duplicates_ignored"] == 1


def test_bulk_of_1001_is_rejected(post_event, client):
    response = post_event(bulk_body(1001), path="/api/event-bulk-create-jobs")
    assert response.status_code == 400
    assert "1,000" in response.get_json()["errors"][0]["detail"]
    assert events_json(client) == []


def test_bulk_backfill_per_entry_and_per_event(post_event, client):
    body = bulk_body(2, 2)
    entries = body["data"]["attributes"]["events-bulk-create"]["data"]
    entries[0]["attributes"]["backfill"] = True
    entries[0]["attributes"]["events"]["data"][1]["attributes"]["backfill"] = False
    entries[1]["attributes"]["events"]["data"][0]["attributes"]["backfill"] = True
    assert post_event(body, path="/api/event-bulk-create-jobs").status_code == 202
    flags = {e["unique_id"]: e["backfill"] for e in events_json(client)}
    assert flags == {"ticket_0_0": True, "ticket_0_1": False, "ticket_1_0": True, "ticket_1_1": False}


def test_bulk_endpoint_checks_its_own_schema(post_event):
    response = post_event(SAMPLE_EVENT, path="/api/event-bulk-create-jobs")
    assert response.status_code == 400
    assert response.get_json()["errors"][0]["source"]["pointer"].startswith("/data")


# --- Rate limits ----------------------------------------------------------------------------


class FakeClock:
    def __init__(self, now: float = 1_800_000_000.25):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(app):
    fake = FakeClock()
    app.extensions["klaviyo_sandbox"].limiter = RateLimiter(clock=fake)
    return fake


def test_burst_limit_gives_429_with_retry_after_only(client, token, clock):
    ok = client.get("/api/accounts", headers=api_headers(token))
    assert ok.status_code == 200
    assert ok.headers["RateLimit-Limit"] == "15"
    assert ok.headers["RateLimit-Remaining"] == "14"
    assert 1 <= int(ok.headers["RateLimit-Reset"]) <= 60
    throttled = client.get("/api/accounts", headers=api_headers(token))
    assert throttled.status_code == 429
    assert throttled.headers["Retry-After"] == "1"
    assert not any(h.lower().startswith("ratelimit-") for h, _ in throttled.headers.items())
    assert throttled.get_json()["errors"][0]["code"] == "throttled"
    clock.now += 1
    assert client.get("/api/accounts", headers=api_headers(token)).status_code == 200
    assert stats(client)["throttled_429"] == 1


def test_steady_limit_waits_for_the_minute(client, token, clock):
    clock.now = 1_800_000_000.0  # start of a minute window (divisible by 60)
    for _ in range(15):
        assert client.get("/api/accounts", headers=api_headers(token)).status_code == 200
        clock.now += 1
    throttled = client.get("/api/accounts", headers=api_headers(token))
    assert throttled.status_code == 429
    assert int(throttled.headers["Retry-After"]) == 45


def test_each_endpoint_has_its_own_quota_and_headers_on_2xx(post_event, client, token, clock):
    response = post_event()
    assert response.status_code == 202
    assert response.headers["RateLimit-Limit"] == "3500"
    bulk = post_event(bulk_body(1), path="/api/event-bulk-create-jobs")
    assert bulk.headers["RateLimit-Limit"] == "150" and bulk.headers["RateLimit-Remaining"] == "149"


def test_rate_limits_can_be_switched_off(client, token, clock):
    client.post("/_sandbox/config", json={"enforce_rate_limits": False})
    statuses = {client.get("/api/accounts", headers=api_headers(token)).status_code for _ in range(5)}
    assert statuses == {200}


# --- Fault injection ------------------------------------------------------------------------


def test_fault_count_fails_the_next_n_requests(post_event, client):
    added = client.post("/_sandbox/faults", json={"status": 503, "count": 2})
    assert added.status_code == 201
    assert [post_event().status_code for _ in range(3)] == [503, 503, 202]
    assert client.get("/_sandbox/faults").get_json()["active"] == []
    counted = stats(client)
    assert counted["faults_injected"] == 2 and counted["faults_by_kind"] == {"503": 2}


def test_fault_probability_with_retry_after(post_event, client):
    client.post("/_sandbox/faults", json={"status": 429, "retry_after": 2, "probability": 0.5, "seed": 3})
    responses = [post_event(sample_event(unique_id=f"u{i}")) for i in range(40)]
    throttled = [r for r in responses if r.status_code == 429]
    assert 5 < len(throttled) < 35
    assert {r.headers["Retry-After"] for r in throttled} == {"2"}
    assert all(r.get_json()["errors"][0]["code"] == "throttled" for r in throttled)
    assert all(r.status_code == 202 for r in responses if r not in throttled)
    assert stats(client)["faults_injected"] == len(throttled)
    client.delete("/_sandbox/faults")
    assert post_event(sample_event(unique_id="after")).status_code == 202


def test_fault_paths_and_latency(post_event, client):
    client.post("/_sandbox/faults", json=[{"status": 500, "paths": ["/api/event-bulk-create-jobs"]},
                                          {"latency_ms": 150, "paths": ["/api/events"]}])
    started = time.perf_counter()
    assert post_event().status_code == 202
    assert time.perf_counter() - started >= 0.15
    assert post_event(bulk_body(1), path="/api/event-bulk-create-jobs").status_code == 500


def test_drop_fault_in_test_client_raises_connection_error(post_event, client):
    client.post("/_sandbox/faults", json={"status": "drop", "count": 1})
    with pytest.raises(ConnectionResetError):
        post_event()
    assert post_event().status_code == 202


def test_bad_fault_rule_is_explained(client):
    response = client.post("/_sandbox/faults", json={"status": 200})
    assert response.status_code == 400 and "status" in response.get_json()["error"]


# --- Inspection, page, persistence ------------------------------------------------------------


def test_received_events_page_escapes_everything(post_event, client):
    evil = "<script>alert(1)</script>"
    body = sample_event(profile=_profile(email="eve@festival.test", first_name=evil),
                        properties={"EventName": evil})
    body["data"]["attributes"]["metric"]["data"]["attributes"]["name"] = "Registered Attendee"
    assert post_event(body).status_code == 202
    assert post_event().status_code == 202
    page = client.get("/")
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "Received events" in html and "Sandbox Festival Co." in html
    assert "Registered Attendee" in html and "Placed Order" in html
    assert "<details>" in html
    filtered = client.get("/", query_string={"metric": "Placed Order"}).get_data(as_text=True)
    assert "ada@festival.test" in filtered and "eve@festival.test" not in filtered


def test_request_log_answers_what_reached_the_api_after_a_time(oauth, client, post_event):
    installation = stats(client)["installations"][0]["id"]
    before = time.time()
    assert post_event().status_code == 202
    (entry,) = client.get("/_sandbox/requests", query_string={"since": before}).get_json()["requests"]
    assert entry["path"] == "/api/events" and entry["status"] == 202
    assert entry["installation_id"] == installation and entry["account_id"] == "SBX01HXYZ"
    later = time.time()
    after = client.get("/_sandbox/requests",
                       query_string={"since": later, "installation_id": installation}).get_json()
    assert after["count"] == 0
    assert stats(client, since=before)["api_requests_since"] == {
        "since": before, "count": 1, "by_installation": {installation: 1}}


def test_stats_shape(post_event, client):
    post_event()
    body = stats(client)
    assert set(body) >= {"requests", "throttled_429", "duplicates_ignored", "faults_injected",
                         "token_grants", "refreshes", "revokes", "accepted", "installations"}
    assert body["requests"]["by_path"]["/api/events"] == {"202": 1}
    assert body["requests"]["by_path"]["/oauth/token"] == {"200": 1}
    assert body["accepted"] == {"total": 1, "by_metric": {"Placed Order": 1}}


def test_state_survives_a_restart(make_app, post_event, token):
    assert post_event().status_code == 202
    restarted = make_app().test_client()
    assert len(events_json(restarted)) == 1
    assert restarted.get("/api/accounts", headers=api_headers(token)).status_code == 200


def test_a_sandbox_file_from_before_repeat_counts_still_opens(db_path, make_app):
    import sqlite3

    from portal.sandbox import store

    old_schema = store.SCHEMA.replace("    times_received INTEGER NOT NULL DEFAULT 1,\n", "").replace(
        "    last_received_at REAL,\n", "")
    assert "times_received" not in old_schema
    with sqlite3.connect(db_path) as conn:
        conn.executescript(old_schema)
        conn.execute("INSERT INTO events (id, account_id, metric, profile_key, profile, properties, unique_id, "
                     "unique_id_given, time, backfill, source, received_at) VALUES ('evt_old', 'SBX01HXYZ', "
                     "'Placed Order', 'email:ada@festival.test', '{}', '{}', 'order_1', 1, '2026-07-01T12:00:00+00:00', "
                     "0, 'create_event', 1.0)")
    app = make_app()
    client = app.test_client()
    (event,) = events_json(client)
    assert event["times_received"] == 1 and event["last_received_at"] is None
    token = OAuthFlow(client).connect()["access_token"]
    response = client.post("/api/events", data=json.dumps(SAMPLE_EVENT), headers=api_headers(token))
    assert response.status_code == 202
    (event,) = events_json(client)
    assert event["id"] == "evt_old" and event["times_received"] == 2


def test_reset_wipes_everything(post_event, client, token):
    post_event()
    client.post("/_sandbox/faults", json={"status": 503})
    assert client.post("/_sandbox/reset").get_json()["reset"] is True
    assert events_json(client) == []
    assert client.get("/_sandbox/faults").get_json()["active"] == []
    assert client.get("/api/accounts", headers=api_headers(token)).status_code == 401


# --- Over real HTTP -----------------------------------------------------------------------------


def test_over_real_http_with_threads_and_a_dropped_connection(tmp_path):
    server = start_in_thread({"SANDBOX_DB": str(tmp_path / "http.db")})
    try:
        flow = OAuthFlow(None)
        callback = server.consent(server.url + flow.authorize_query())
        code = callback.split("code=")[1].split("&")[0]
        tokens = requests.post(server.url + "/oauth/token", auth=("sandbox-client-id", CLIENT_SECRET), timeout=10,
                               data={"grant_type": "authorization_code", "code": code,
                                     "code_verifier": flow.verifier, "redirect_uri": REDIRECT_URI}).json()
        headers = api_headers(tokens["access_token"])

        def send(i: int, results: list):
            with requests.Session() as session:
                body = json.dumps(sample_event(unique_id=f"order_{i}"))
                results.append(session.post(server.url + "/api/events", data=body, headers=headers,
                                            timeout=10).status_code)

        results: list[int] = []
        threads = [threading.Thread(target=send, args=(i, results)) for i in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == [202] * 16
        assert len(server.events(metric="Placed Order")) == 16

        server.add_faults({"status": "drop", "count": 1})
        with pytest.raises(requests.exceptions.ConnectionError):
            requests.post(server.url + "/api/events", data=json.dumps(SAMPLE_EVENT), headers=headers, timeout=10)
        assert requests.post(server.url + "/api/events", data=json.dumps(SAMPLE_EVENT), headers=headers,
                             timeout=10).status_code == 202
        assert server.stats()["faults_by_kind"] == {"drop": 1}

        installation = server.stats()["installations"][0]["id"]
        server.uninstall(installation_id=installation)
        after_uninstall = time.time()
        refreshed = requests.post(server.url + "/oauth/token", auth=("sandbox-client-id", CLIENT_SECRET),
                                  data={"grant_type": "refresh_token",
                                        "refresh_token": tokens["refresh_token"]}, timeout=10)
        assert refreshed.status_code == 400 and refreshed.json() == {"error": "invalid_grant"}
        assert server.api_requests_after(after_uninstall, installation_id=installation) == []
    finally:
        server.shutdown()


def test_create_sandbox_app_does_no_io(tmp_path):
    path = tmp_path / "nested" / "sandbox.db"
    create_sandbox_app({"SANDBOX_DB": str(path)})
    assert not path.exists()
