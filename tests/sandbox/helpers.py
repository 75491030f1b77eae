"""Helpers for the Klaviyo sandbox tests: sample bodies, headers and an OAuth flow driver."""

from __future__ import annotations

import base64
import copy
import secrets
from urllib.parse import parse_qs, urlencode, urlsplit

from portal.sandbox.oauth import s256
from portal.sandbox.server import parse_consent_form

CLIENT_ID = "sandbox-client-id"
CLIENT_SECRET = "sandbox-client-secret"
REDIRECT_URI = "http://127.0.0.1:5000/manage/integrations/klaviyo/callback"
REVISION = "2026-07-15"

SAMPLE_EVENT = {"data": {"type": "event", "attributes": {
    "properties": {"OrderId": "1"}, "time": "2026-07-01T12:00:00Z", "value": 10.5,
    "value_currency": "USD", "unique_id": "order_1",
    "metric": {"data": {"type": "metric", "attributes": {"name": "Placed Order"}}},
    "profile": {"data": {"type": "profile", "attributes": {
        "email": "ada@festival.test", "first_name": "Ada", "last_name": "L"}}}}}}


def sample_event(**attributes) -> dict:
    """The sample Create Event body with some attributes replaced."""
    body = copy.deepcopy(SAMPLE_EVENT)
    body["data"]["attributes"].update(attributes)
    return body


def bulk_body(n_profiles: int, events_per_profile: int = 1, metric: str = "Ordered Experience") -> dict:
    entries = []
    for i in range(n_profiles):
        events = [{"type": "event", "attributes": {
            "properties": {"OrderId": str(i), "TicketIndex": j, "EventName": "Summer Fest"},
            "time": "2026-07-01T12:00:00+00:00", "value": 25.0, "value_currency": "USD",
            "unique_id": f"ticket_{i}_{j}",
            "metric": {"data": {"type": "metric", "attributes": {"name": metric}}}}}
            for j in range(events_per_profile)]
        entries.append({"type": "event-bulk-create", "attributes": {
            "profile": {"data": {"type": "profile", "attributes": {
                "email": f"buyer{i}@festival.test", "first_name": "Buyer", "last_name": str(i)}}},
            "events": {"data": events}}})
    return {"data": {"type": "event-bulk-create-job",
                     "attributes": {"events-bulk-create": {"data": entries}}}}


def basic(client_id: str = CLIENT_ID, secret: str = CLIENT_SECRET) -> dict:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def api_headers(access_token: str | None, **extra) -> dict:
    headers = {"revision": REVISION, "Content-Type": "application/vnd.api+json",
               "Accept": "application/vnd.api+json"}
    if access_token:
        headers["Authorization"] = f"Bearer {access_token}"
    headers.update(extra)
    return headers


class OAuthFlow:
    """Drives the sandbox's OAuth screens and endpoints through the Flask test client."""

    def __init__(self, client):
        self.client = client
        self.verifier = secrets.token_urlsafe(48)
        self.state = secrets.token_urlsafe(16)

    def authorize_query(self, **overrides) -> str:
        params = {"response_type": "code", "client_id": CLIENT_ID, "redirect_uri": REDIRECT_URI,
                  "scope": "accounts:read events:write", "state": self.state,
                  "code_challenge_method": "S256", "code_challenge": s256(self.verifier)}
        params.update(overrides)
        return "/oauth/authorize?" + urlencode({k: v for k, v in params.items() if v is not None})

    def authorize(self, **overrides):
        return self.client.get(self.authorize_query(**overrides))

    def answer(self, page, decision: str = "allow", account_id: str | None = None):
        form = parse_consent_form(page.get_data(as_text=True))
        return self.client.post("/oauth/authorize", data={
            "nonce": form["nonce"], "decision": decision,
            "account_id": account_id or form["account_ids"][0]})

    def code(self, **overrides) -> str:
        page = self.authorize(**overrides)
        assert page.status_code == 200, page.get_data(as_text=True)
        redirect = self.answer(page)
        query = redirect_query(redirect)
        assert query["state"] == self.state
        return query["code"]

    def exchange(self, code: str, verifier: str | None = None, redirect_uri: str = REDIRECT_URI,
                 headers: dict | None = None, **extra):
        data = {"grant_type": "authorization_code", "code": code,
                "code_verifier": verifier or self.verifier, "redirect_uri": redirect_uri, **extra}
        return self.client.post("/oauth/token", data=data, headers=basic() if headers is None else headers)

    def refresh(self, refresh_token: str):
        return self.client.post("/oauth/token", headers=basic(),
                                data={"grant_type": "refresh_token", "refresh_token": refresh_token})

    def revoke(self, token: str, hint: str = "refresh_token"):
        return self.client.post("/oauth/revoke", headers=basic(),
                                data={"token": token, "token_type_hint": hint})

    def connect(self, **overrides) -> dict:
        """The whole flow; returns the token response."""
        response = self.exchange(self.code(**overrides))
        assert response.status_code == 200, response.get_json()
        return response.get_json()


def redirect_query(response) -> dict:
    assert response.status_code == 302, response.get_data(as_text=True)
    location = response.headers["Location"]
    assert location.startswith(REDIRECT_URI)
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
