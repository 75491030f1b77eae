"""One Klaviyo call for "Set up flows and segments": through the send gate (Disconnect is a hard stop) and the
shared limiter, with the token handling Klaviyo expects (refresh once on a 401). What cannot go ahead now is an
exception the job turns into an item's state: Wait (a rate limit), Stop (the connection), NoPermission (a 403).
"""
from sqlalchemy import select

from portal.extensions import db
from portal.klaviyo import client
from portal.sync import connection as klaviyo, gate, limiter
from portal.sync.models import CONNECTED, KlaviyoConnection

SLEEP_AT_MOST = 3.0  # a rate-limit wait up to this is slept inside the job; a longer one is rescheduled


class Wait(Exception):
    """Not now: try again in `seconds` (a rate limit, Klaviyo still processing)."""

    def __init__(self, seconds: float, reason: str):
        super().__init__(reason)
        self.seconds = max(float(seconds), 0.5)
        self.reason = reason


class Stop(Exception):
    """The connection cannot be used now (disconnected, needs reconnecting, the gate is closed)."""


class NoPermission(Exception):
    """Klaviyo answered 403: the connection lacks a scope the flows and segments need."""


class Trouble(Exception):
    """A lookup on the way (Get Flows) got an answer we cannot use: handled like the create's own answer."""

    def __init__(self, response: client.ApiResponse):
        super().__init__(response.error_text())
        self.response = response


def _limit_words(endpoint: str, seconds: float) -> str:
    if endpoint in limiter.KLAVIYO_DAILY_LIMITS and seconds > 60:  # past the minute windows: the day's limit
        what = "flows" if endpoint == "flows_create" else "segments"
        when = f"about {round(seconds / 3600)} h" if seconds >= 5400 else f"{max(1, round(seconds / 60))} min"
        return (f"Klaviyo allows {limiter.KLAVIYO_DAILY_LIMITS[endpoint]} new {what} a day; this one will be "
                f"created in {when}.")
    return f"Waiting for Klaviyo's rate limit (about {max(1, round(seconds))} s)."


def request(connection: KlaviyoConnection, endpoint: str, send, *args) -> client.ApiResponse:
    """One call through the gate and the shared limiter, with the token handling Klaviyo expects."""
    installation = klaviyo.installation_key(connection)
    with gate.sending(connection.id) as allowed:
        status = db.session.scalar(select(KlaviyoConnection.status).where(KlaviyoConnection.id == connection.id))
        if not allowed or status != CONNECTED:
            raise Stop()
        wait = limiter.acquire(installation, endpoint, max_wait=SLEEP_AT_MOST)
        if wait:
            raise Wait(wait, _limit_words(endpoint, wait))
        response = _call(connection, send, *args)
        limiter.observe(installation, endpoint, response.status, response.headers)
    if response.status == 429:
        seconds = response.retry_after or 1
        raise Wait(seconds, _limit_words(endpoint, seconds))
    if response.status == 403:
        raise NoPermission(response.error_text())
    return response


def _call(connection: KlaviyoConnection, send, *args) -> client.ApiResponse:
    try:
        token = klaviyo.access_token(connection)
        response = send(token, *args)
        if response.status == 401:
            response = send(klaviyo.refresh(connection, stale=token), *args)
            if response.status == 401:
                klaviyo.needs_reconnect(connection, "Klaviyo rejected the access token even after refreshing it. "
                                                    "Reconnect to resume.")
                raise Stop()
        return response
    except client.TokenRejected as exc:
        raise Stop() from exc  # the connection now says Needs reconnect
    except client.KlaviyoUnavailable as exc:
        return client.ApiResponse(0, {}, None, 0, [{"detail": f"no answer from Klaviyo ({exc})"}])
