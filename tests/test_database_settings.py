"""The database settings an on-sale depends on: SQLite's durability (SQLITE_SYNCHRONOUS) as configured, on every
connection, and a clear refusal of a value SQLite does not have; PostgreSQL's pool sized from the configuration."""
import pytest
from sqlalchemy import text

from portal import ConfigError, create_app, extensions
from portal.extensions import db


def _app(tmp_path, **config):
    return create_app({"TESTING": True, "SECRET_KEY": "test-secret-key",
                       "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'settings.db'}", **config})


@pytest.fixture(autouse=True)
def _keep_setting():
    before = extensions.sqlite_synchronous
    yield
    extensions.sqlite_synchronous = before


@pytest.mark.parametrize(("setting", "level"), [(None, 1), ("FULL", 2), ("normal", 1)])
def test_sqlite_synchronous_is_applied_to_each_connection(tmp_path, setting, level):
    app = _app(tmp_path, **({"SQLITE_SYNCHRONOUS": setting} if setting else {}))
    with app.app_context():
        try:
            with db.engine.connect() as first, db.engine.connect() as second:  # two pooled connections
                for connection in (first, second):
                    assert connection.execute(text("PRAGMA synchronous")).scalar() == level
                    assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
                    assert connection.execute(text("PRAGMA busy_timeout")).scalar() == 10000
        finally:
            db.engine.dispose()


def test_a_synchronous_setting_sqlite_lacks_is_refused_with_what_to_set(tmp_path):
    with pytest.raises(ConfigError, match="SQLITE_SYNCHRONOUS must be NORMAL or FULL"):
        _app(tmp_path, SQLITE_SYNCHRONOUS="OFF")


def test_the_postgresql_pool_follows_the_configured_size(tmp_path):
    app = create_app({"TESTING": True, "SECRET_KEY": "test-secret-key", "DATABASE_POOL_SIZE": 6,
                      "SQLALCHEMY_DATABASE_URI": "postgresql+psycopg://postgres@127.0.0.1:1/none"})
    options = app.config["SQLALCHEMY_ENGINE_OPTIONS"]
    assert options["pool_size"] == 6 and options["max_overflow"] == 3 and options["hide_parameters"] is True
    with app.app_context():
        assert db.engine.pool.size() == 6  # made without connecting
