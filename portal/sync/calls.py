"""One read from Klaviyo for the health jobs (reading events back, looking at the account's metrics), made the
way every call to Klaviyo is made: through the send gate (so Disconnect stays a hard stop), the shared rate
limiter with the endpoint's tier, and the connection's token handling (refresh before expiry, once on a 401).

A read never turns the connection to Needs reconnect on a 403: reading is optional, sending still works. The
caller learns of it as NoPermission and says the feature waits for a Reconnect.
"""
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import select

from portal.extensions import db
from portal.klaviyo import client
from portal.sync import connection as klaviyo, gate, limiter
from portal.sync.models import CONNECTED, KlaviyoConnection

SLEEP_AT_MOST = 2.0  # a rate-limit wait up to this is slept in the job; a longer one comes back as Wait


class Wait(Exception):
    """Not now: Klaviyo's rate limit (ours or its Retry-After). Try again in `seconds`."""

    def __init__(self, seconds: float):
        super().__init__(f"wait {seconds:.1f} s")
        self.seconds = max(float(seconds), 0.5)


class Stop(Exception):
    """The connection cannot be used now: disconnected, needs reconnecting, or the send gate is closed."""


class NoPermission(Exception):
    """Klaviyo answered 403: the connection was granted without the scope this read needs."""


def read(connection: KlaviyoConnection, endpoint: str, call, params: dict) -> client.ApiResponse:
    """One GET to Klaviyo. Returns the answer (status 0 when none came); raises Wait, Stop or NoPermission."""
    installation = klaviyo.installation_key(connection)
    with gate.sending(connection.id) as allowed:
        status = db.session.scalar(select(KlaviyoConnection.status).where(KlaviyoConnection.id == connection.id))
        if not allowed or status != CONNECTED:
            raise Stop()
        wait = limiter.acquire(installation, endpoint, max_wait=SLEEP_AT_MOST)
        if wait:
            raise Wait(wait)
        response = _call(connection, call, params)
        limiter.observe(installation, endpoint, response.status, response.headers)
    if response.status == 429:
        raise Wait(response.retry_after or 1)
    if response.status == 403:
        raise NoPermission(response.error_text())
    return response


def _call(connection: KlaviyoConnection, call, params: dict) -> client.ApiResponse:
    try:
        token = klaviyo.access_token(connection)
        response = call(token, params)
        if response.status == 401:
            response = call(klaviyo.refresh(connection, stale=token), params)
            if response.status == 401:
                klaviyo.needs_reconnect(connection, "Klaviyo rejected the access token even after refreshing it. "
                                                    "Reconnect to resume sending.")
                raise Stop()
        return response
    except client.TokenRejected as exc:
        raise Stop() from exc  # refresh() has marked the connection Needs reconnect when Klaviyo said so
    except client.KlaviyoUnavailable as exc:
        return client.ApiResponse(0, {}, None, 0, [{"detail": f"no answer from Klaviyo ({exc})"}])


def next_link_params(body: dict | None, params: dict) -> dict | None:
    """The query of the answer's `links.next` (Klaviyo's cursor pagination), or None on the last page."""
    link = ((body or {}).get("links") or {}).get("next")
    if not link:
        return None
    cursor = parse_qs(urlsplit(link).query).get("page[cursor]")
    return {**params, "page[cursor]": cursor[0]} if cursor else None
