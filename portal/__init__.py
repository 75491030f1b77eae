"""The organizer portal: events, ticket sales, and their sync to Klaviyo."""
import logging
import os
import secrets

from flask import Flask

from portal.config import INSTANCE, Config
from portal.extensions import csrf, db, login_manager, migrate


def create_app(test_config: dict | None = None) -> Flask:
    """Build the portal: configuration, extensions, blueprints, commands."""
    app = Flask(__name__, template_folder="../templates", static_folder="../static", instance_path=str(INSTANCE))
    app.config.from_mapping(Config.load())
    if test_config:
        app.config.update(test_config)
    _check_secrets(app)
    _database_options(app)
    if app.config.get("PROXY_FIX_X_FOR"):  # the client address as the trusted proxies saw it
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=app.config["PROXY_FIX_X_FOR"],
                                x_proto=app.config["PROXY_FIX_X_FOR"])

    db.init_app(app)
    migrate.init_app(app, db, directory=str(INSTANCE.parent / "migrations"))
    csrf.init_app(app)
    login_manager.init_app(app)
    from portal import cli, errors, filters, headers, inputs, models, pages  # noqa: F401  (models registers every table)
    from portal.auth import login, views as auth_views
    from portal.channels import views as channel_views, webhooks as channel_webhooks
    from portal.consent import views as consent_views
    from portal.events import views as event_views
    from portal.integrations import flow_views, health as integration_health, views as integration_views
    from portal.orders import views as order_views
    from portal.storefront import views as storefront_views
    from portal.integrations.oauth_state import OAuthStateStore
    from portal.klaviyo.client import init_oauth

    init_oauth(app, OAuthStateStore())
    inputs.install_converters(app)  # before the routes are added
    for module in (pages, auth_views, event_views, storefront_views, order_views, integration_views, flow_views,
                   channel_views, channel_webhooks, integration_health, consent_views):
        app.register_blueprint(module.bp)
    for module in (cli, login, errors, filters, headers, inputs):
        module.init_app(app)
    logging.getLogger("portal").setLevel(app.config.get("LOG_LEVEL", "INFO"))
    return app


def _database_options(app: Flask) -> None:
    """The connection pool and SQLite's durability, from the configuration."""
    from portal import extensions

    synchronous = str(app.config["SQLITE_SYNCHRONOUS"]).strip().upper()
    if synchronous not in {"NORMAL", "FULL", "EXTRA"}:
        raise ConfigError(f"SQLITE_SYNCHRONOUS must be NORMAL or FULL (or EXTRA), not {synchronous!r}.")
    extensions.sqlite_synchronous = synchronous
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("postgresql"):
        size = max(1, app.config["DATABASE_POOL_SIZE"])
        # LIFO: the connections a quiet moment leaves idle are the same few, so PostgreSQL keeps its caches warm.
        app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {
            **app.config["SQLALCHEMY_ENGINE_OPTIONS"], "pool_size": size, "max_overflow": max(2, size // 2),
            "pool_recycle": 1800, "pool_use_lifo": True}


class ConfigError(RuntimeError):
    """The configuration cannot work; the message says what to set. Entry points print it as one line."""


def _check_secrets(app: Flask) -> None:
    """Refuse to run in production on a made-up secret; in development make throwaway ones. Check the token
    keys now, not at the first OAuth callback."""
    from cryptography.fernet import Fernet

    production = app.config["ENV_NAME"] == "production"
    for name in ("SECRET_KEY", "TOKEN_ENCRYPTION_KEY"):
        value = app.config.get(name)
        if value and value not in {"dev", "change-me"}:
            continue
        if production:
            raise ConfigError(f"{name} must be set to a real secret when PORTAL_ENV=production.")
        app.config[name] = _dev_secret(name)
    keys = [key.strip() for key in app.config["TOKEN_ENCRYPTION_KEY"].split(",") if key.strip()]
    for position, key in enumerate(keys or [""], start=1):
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise ConfigError(f"TOKEN_ENCRYPTION_KEY key {position} is not a Fernet key (32 url-safe base64 bytes). "
                              "Make one with: python -c 'from cryptography.fernet import Fernet; "
                              "print(Fernet.generate_key().decode())'") from None


def _dev_secret(name: str) -> str:
    """A development secret kept under instance/, so sessions and stored tokens survive a restart."""
    from cryptography.fernet import Fernet

    INSTANCE.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = INSTANCE / f"{name.lower()}.dev"
    if not path.exists():
        value = Fernet.generate_key().decode() if name == "TOKEN_ENCRYPTION_KEY" else secrets.token_urlsafe(48)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as key_file:  # never readable by others
            key_file.write(value)
    return path.read_text().strip()
