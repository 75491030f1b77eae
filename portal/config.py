"""One flat configuration, read from the environment."""
import os
from pathlib import Path

INSTANCE = Path(__file__).resolve().parent.parent / "instance"


def _bool(value):
    return str(value).lower() in {"1", "true", "yes", "on"}


class Config:
    """Defaults that work on a developer's machine; production overrides come from the environment."""

    ENV_NAME = os.environ.get("PORTAL_ENV", "development")
    SECRET_KEY = os.environ.get("SECRET_KEY")
    TOKEN_ENCRYPTION_KEY = os.environ.get("TOKEN_ENCRYPTION_KEY")
    SQLALCHEMY_DATABASE_URI = os.environ.get("DATABASE_URL", f"sqlite:///{INSTANCE / 'portal.db'}")
    # Database errors never carry their bound parameters (password hashes, tokens, buyers' details) into a log.
    SQLALCHEMY_ENGINE_OPTIONS = {"hide_parameters": True}
    REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    RQ_QUEUE = os.environ.get("RQ_QUEUE", "klaviyo")
    PUBLIC_BASE_URL = os.environ.get("PUBLIC_BASE_URL", "http://127.0.0.1:5000")

    KLAVIYO_CLIENT_ID = os.environ.get("KLAVIYO_CLIENT_ID")
    KLAVIYO_CLIENT_SECRET = os.environ.get("KLAVIYO_CLIENT_SECRET")
    KLAVIYO_OAUTH_BASE = os.environ.get("KLAVIYO_OAUTH_BASE", "https://www.klaviyo.com")
    KLAVIYO_API_BASE = os.environ.get("KLAVIYO_API_BASE", "https://a.klaviyo.com")
    KLAVIYO_API_REVISION = os.environ.get("KLAVIYO_API_REVISION", "2026-07-15")
    KLAVIYO_SCOPES = "accounts:read events:write"
    KLAVIYO_TIMEOUT = float(os.environ.get("KLAVIYO_TIMEOUT", "10"))
    # Where the local Klaviyo sandbox's "received events" page lives, when the portal talks to it.
    KLAVIYO_SANDBOX_URL = os.environ.get("KLAVIYO_SANDBOX_URL")

    # The Klaviyo card's support line: the help link defaults to this project's Klaviyo guide; the
    # e-mail shows only when the portal's operator sets one.
    SUPPORT_EMAIL = os.environ.get("SUPPORT_EMAIL")
    HELP_URL = os.environ.get("HELP_URL", "/help/klaviyo")

    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = _bool(os.environ.get("SESSION_COOKIE_SECURE", PUBLIC_BASE_URL.startswith("https")))
    REMEMBER_COOKIE_HTTPONLY = True
    REMEMBER_COOKIE_SECURE = SESSION_COOKIE_SECURE
    WTF_CSRF_TIME_LIMIT = None
    MAX_CONTENT_LENGTH = 1024 * 1024

    LOGIN_MAX_FAILURES = 5
    LOGIN_LOCK_SECONDS = 15 * 60
    # A session not used for this long ends; logout ends every copy of it (see portal/auth/login.py).
    SESSION_IDLE_SECONDS = int(os.environ.get("SESSION_IDLE_SECONDS", str(8 * 3600)))

    # Sync tuning: how long a claimed outbox row is leased to a worker before the sweeper may retake it.
    OUTBOX_LEASE_SECONDS = int(os.environ.get("OUTBOX_LEASE_SECONDS", "120"))
    OUTBOX_RETRY_HORIZON_SECONDS = int(os.environ.get("OUTBOX_RETRY_HORIZON_SECONDS", str(3 * 24 * 3600)))
    RETRY_BASE_SECONDS = float(os.environ.get("RETRY_BASE_SECONDS", "2"))
    SWEEP_INTERVAL_SECONDS = int(os.environ.get("SWEEP_INTERVAL_SECONDS", "5"))
    # A backlog up to this size goes out as single Create Event calls (lowest latency); a larger one
    # through Bulk Create, at most SYNC_BATCH_LIMIT events a request (Klaviyo's cap is 1,000).
    SYNC_SINGLE_THRESHOLD = int(os.environ.get("SYNC_SINGLE_THRESHOLD", "10"))
    SYNC_BATCH_LIMIT = int(os.environ.get("SYNC_BATCH_LIMIT", "1000"))
    # Refresh the access token this long before it expires (the official SDK uses 30 s).
    KLAVIYO_REFRESH_MARGIN_SECONDS = int(os.environ.get("KLAVIYO_REFRESH_MARGIN_SECONDS", "60"))
    DEFAULT_PHONE_REGION = os.environ.get("DEFAULT_PHONE_REGION", "US")

    @classmethod
    def load(cls):
        return {k: getattr(cls, k) for k in dir(cls) if k.isupper()}
