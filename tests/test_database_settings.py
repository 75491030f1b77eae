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


def test_sqlite_writers_wait_in_line_across_processes(app, tmp_path):
    """write_turn(): on SQLite one checkout writes at a time, across this process's threads and other processes
    (a file lock beside the database), so none waits in SQLite's sleeping busy handler. On PostgreSQL it does
    nothing: many writers at once is what it is for."""
    import subprocess
    import sys
    import threading

    from portal.extensions import write_turn

    with app.app_context():
        url = db.engine.url
        inside = threading.Event()

        def enter():
            with app.app_context(), write_turn():
                inside.set()

        if url.get_backend_name() != "sqlite":
            with write_turn():
                thread = threading.Thread(target=enter)
                thread.start()
                assert inside.wait(5)  # not held back
            thread.join(5)
            return
        lock_path = f"{url.database}-writer.lock"
        # Another process takes the turn and keeps it until told to let go.
        holder = subprocess.Popen(
            [sys.executable, "-c", "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
             "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); sys.stdin.readline()", lock_path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "held"
            thread = threading.Thread(target=enter)
            thread.start()
            assert not inside.wait(0.5)  # waits for the other process
            holder.stdin.write("\n")
            holder.stdin.flush()
            assert inside.wait(10)  # and goes as soon as it is free
            thread.join(5)
        finally:
            holder.kill()
            holder.communicate()  # and closes its pipes
        # Within the process: a second thread waits for the first to leave.
        with write_turn():
            inside.clear()
            thread = threading.Thread(target=enter)
            thread.start()
            assert not inside.wait(0.3)
        assert inside.wait(10)
        thread.join(5)
