"""One flat configuration, read from the environment."""
import os
from pathlib import Path
from urllib.parse import urlsplit

INSTANCE = Path(__file__).resolve().parent.parent / "instance"


def support_address(base_url: str) -> str:
    """support@ the portal's domain (https://www.tickets.example.org → support@tickets.example.org); on a
    machine reached by IP address or localhost, support@localhost."""
    host = (urlsplit(base_url).hostname or "").removeprefix("www.")
    if "." not in host or host.replace(".", "").isdigit():
        host = "localhost"
    return f"support@{host}"


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
    # Database connections each portal process keeps open: one per gunicorn thread is enough (gunicorn.conf.py
    # sets it to its --threads), plus a few for bursts. FULL or NORMAL: see portal/extensions.py.
    DATABASE_POOL_SIZE = int(os.environ.get("DATABASE_POOL_SIZE", "5"))
    SQLITE_SYNCHRONOUS = os.environ.get("SQLITE_SYNCHRONOUS", "NORMAL").strip().upper()
    REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    RQ_QUEUE = os.environ.get("RQ_QUEUE", "klaviyo")
    PUBLIC_BASE_URL = os.environ.get("PUBLIC_BASE_URL", "http://127.0.0.1:5000")

    KLAVIYO_CLIENT_ID = os.environ.get("KLAVIYO_CLIENT_ID")
    KLAVIYO_CLIENT_SECRET = os.environ.get("KLAVIYO_CLIENT_SECRET")
    KLAVIYO_OAUTH_BASE = os.environ.get("KLAVIYO_OAUTH_BASE", "https://www.klaviyo.com")
    KLAVIYO_API_BASE = os.environ.get("KLAVIYO_API_BASE", "https://a.klaviyo.com")
    KLAVIYO_API_REVISION = os.environ.get("KLAVIYO_API_REVISION", "2026-07-15")
    # accounts:read shows which account is connected, events:write sends the events, events:read reads them
    # back to confirm Klaviyo kept them (the checklist's last step), metrics:read spots a Placed Order that
    # another integration already sends (the double-send guard). Features add theirs (sync/connection.py).
    KLAVIYO_SCOPES = "accounts:read events:read events:write metrics:read"
    KLAVIYO_TIMEOUT = float(os.environ.get("KLAVIYO_TIMEOUT", "10"))
    # Where the local Klaviyo sandbox's "received events" page lives, when the portal talks to it.
    KLAVIYO_SANDBOX_URL = os.environ.get("KLAVIYO_SANDBOX_URL")
    # The name flows and segments made in an organizer's Klaviyo start with ("Ticketing: Event Reminder"), and
    # the example profile seeded there (default: klaviyo-example@ the portal's own domain).
    PRODUCT_NAME = os.environ.get("PRODUCT_NAME", "Ticketing")
    KLAVIYO_EXAMPLE_EMAIL = os.environ.get("KLAVIYO_EXAMPLE_EMAIL")

    # The support line, always on the Klaviyo card and in the guide: the operator's support address (by default
    # support@ the portal's own domain) and a help link (by default the in-app Klaviyo guide).
    SUPPORT_EMAIL = os.environ.get("SUPPORT_EMAIL") or support_address(PUBLIC_BASE_URL)
    HELP_URL = os.environ.get("HELP_URL") or "/help/klaviyo"

    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    SESSION_COOKIE_SECURE = _bool(os.environ.get("SESSION_COOKIE_SECURE", PUBLIC_BASE_URL.startswith("https")))
    REMEMBER_COOKIE_HTTPONLY = True
    REMEMBER_COOKIE_SECURE = SESSION_COOKIE_SECURE
    WTF_CSRF_TIME_LIMIT = None
    MAX_CONTENT_LENGTH = 1024 * 1024

    # The public checkout's abuse limits (portal/storefront/limits.py), and how many proxies set X-Forwarded-For.
    CHECKOUT_ORDERS_PER_ADDRESS_PER_MINUTE = int(os.environ.get("CHECKOUT_ORDERS_PER_ADDRESS_PER_MINUTE", "10"))
    CHECKOUT_ORDERS_PER_EVENT_PER_MINUTE = int(os.environ.get("CHECKOUT_ORDERS_PER_EVENT_PER_MINUTE", "30000"))
    FORM_TOKEN_MAX_ORDERS = int(os.environ.get("FORM_TOKEN_MAX_ORDERS", "3"))
    DISCOUNT_GUESSES_PER_ADDRESS = int(os.environ.get("DISCOUNT_GUESSES_PER_ADDRESS", "20"))
    PROXY_FIX_X_FOR = int(os.environ.get("PROXY_FIX_X_FOR", "0"))

    LOGIN_MAX_FAILURES = 5
    LOGIN_LOCK_SECONDS = 15 * 60
    # A session not used for this long ends; logout ends every copy of it (see portal/auth/login.py).
    SESSION_IDLE_SECONDS = int(os.environ.get("SESSION_IDLE_SECONDS", str(8 * 3600)))

    # Sync tuning: how long a claimed outbox row is leased to a worker before the sweeper may retake it. Short,
    # so a killed worker's rows come back in seconds: the worker renews it while it sends (portal/sync/lease.py).
    OUTBOX_LEASE_SECONDS = int(os.environ.get("OUTBOX_LEASE_SECONDS", "10"))
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

    # Reading a test order's events back from Klaviyo: how long an accepted event that is not visible yet is
    # looked for again (Klaviyo can take minutes), and how long to wait between two looks at first.
    VERIFY_WINDOW_SECONDS = int(os.environ.get("VERIFY_WINDOW_SECONDS", "300"))
    VERIFY_RECHECK_SECONDS = float(os.environ.get("VERIFY_RECHECK_SECONDS", "5"))
    # Alerts: events held this long (the connection needs reconnecting) or failed open an incident, with one
    # e-mail to the organizer, and one when it is resolved. MAIL_URL: smtp://user:pass@host:port (smtps:// for
    # TLS from the start, ?starttls=1 to upgrade); unset, no mail is sent (the incident is still shown).
    ALERT_HELD_MINUTES = float(os.environ.get("ALERT_HELD_MINUTES", "5"))
    MAIL_URL = os.environ.get("MAIL_URL")
    MAIL_FROM = os.environ.get("MAIL_FROM", "Ticketing alerts <alerts@localhost>")
    # Where the development mail catcher lists what it caught (the run command sets it).
    MAIL_CATCHER_URL = os.environ.get("MAIL_CATCHER_URL")
    # Started Checkout: a checkout with an e-mail and a ticket that has not become an order this long after.
    ABANDONED_CHECKOUT_MINUTES = float(os.environ.get("ABANDONED_CHECKOUT_MINUTES", "30"))

    @classmethod
    def load(cls):
        return {k: getattr(cls, k) for k in dir(cls) if k.isupper()}
