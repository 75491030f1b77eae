"""Where a Klaviyo sign-in's state and PKCE verifier wait for the callback: in Redis, bound to the organizer
and the browser session that started it, and consumed by the first callback that comes back with it (GETDEL), so a second callback
with the same state finds nothing and exchanges nothing.

Authlib keeps its state data through this object (its `cache` interface: get, set, delete).
"""
import secrets

from flask import session
from flask_login import current_user

from portal.sync.queue import redis_connection

PREFIX = "portal:oauth-state"
USED_SECONDS = 3600  # how long a finished sign-in is remembered, to say so when its callback comes again


def _key(name: str, create: bool = False) -> str:
    """Bound to the organizer and to this browser's session: a callback replayed elsewhere finds nothing."""
    browser = session.get("oauth_browser")
    if browser is None and create:
        browser = session["oauth_browser"] = secrets.token_urlsafe(16)
    return f"{PREFIX}:{current_user.get_id() or 'anonymous'}:{browser or 'none'}:{name}"


def _authlib_key(state: str) -> str:
    return f"_state_klaviyo_{state}"


class OAuthStateStore:
    def set(self, key: str, value: str, expires: int | None = None) -> None:
        redis_connection().set(_key(key, create=True), value, ex=min(int(expires or 600), 600))  # a sign-in has 10 minutes

    def get(self, key: str) -> str | None:
        """Take the state data, once: the first callback gets it, any later one gets nothing."""
        value = redis_connection().getdel(_key(key))
        if value is not None:
            redis_connection().set(_key(f"used:{key}"), 1, ex=USED_SECONDS)
        return value.decode() if isinstance(value, bytes) else value

    def delete(self, key: str) -> None:
        """Nothing to do: get() has consumed it already."""


def take(state: str) -> bool:
    """Consume a state this organizer started (for a callback that reports an error). True when it was theirs."""
    return bool(state) and OAuthStateStore().get(_authlib_key(state)) is not None


def was_used(state: str) -> bool:
    """Did an earlier callback of this organizer already finish with this state?"""
    return bool(state) and bool(redis_connection().exists(_key(f"used:{_authlib_key(state)}")))
