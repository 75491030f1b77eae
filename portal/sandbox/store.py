"""The sandbox's memory: one SQLite file, so state survives a restart of the dev server.

One connection per request (taken from a small pool, never used by two requests at
once), WAL mode so readers never wait for the writer, and every multi-row write in a
single ``BEGIN IMMEDIATE`` transaction. Secrets (codes, tokens, consent nonces) are kept
only as SHA-256 hashes, as a real authorization server would.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

from portal.sandbox import lists_store, objects_store

SCHEMA = """
CREATE TABLE IF NOT EXISTS consents (
    nonce_hash TEXT PRIMARY KEY,
    params TEXT NOT NULL,
    expires_at REAL NOT NULL,
    used_at REAL
);
CREATE TABLE IF NOT EXISTS codes (
    code_hash TEXT PRIMARY KEY,
    client_id TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    challenge TEXT NOT NULL,
    scopes TEXT NOT NULL,
    account_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    used_at REAL,
    grant_id TEXT
);
CREATE TABLE IF NOT EXISTS installations (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    status TEXT NOT NULL,
    scopes TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    UNIQUE (account_id, client_id)
);
CREATE TABLE IF NOT EXISTS grants (
    id TEXT PRIMARY KEY,
    installation_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    scopes TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL,
    revoke_reason TEXT
);
CREATE INDEX IF NOT EXISTS grants_installation ON grants (installation_id);
CREATE TABLE IF NOT EXISTS refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    grant_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    rotated_at REAL
);
CREATE TABLE IF NOT EXISTS access_tokens (
    token_hash TEXT PRIMARY KEY,
    grant_id TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL,
    installation_id TEXT,
    metric TEXT NOT NULL,
    profile_key TEXT NOT NULL,
    profile TEXT NOT NULL,
    properties TEXT NOT NULL,
    unique_id TEXT NOT NULL,
    unique_id_given INTEGER NOT NULL,
    time TEXT NOT NULL,
    value REAL,
    value_currency TEXT,
    backfill INTEGER NOT NULL,
    source TEXT NOT NULL,
    received_at REAL NOT NULL,
    times_received INTEGER NOT NULL DEFAULT 1,
    last_received_at REAL,
    UNIQUE (account_id, metric, profile_key, unique_id)
);
CREATE INDEX IF NOT EXISTS events_metric ON events (metric);
CREATE TABLE IF NOT EXISTS revokes (
    seq INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    installation_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    via TEXT NOT NULL,
    token_type_hint TEXT,
    grants_revoked INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS request_log (
    seq INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    status INTEGER NOT NULL,
    account_id TEXT,
    installation_id TEXT,
    grant_id TEXT,
    fault TEXT,
    revision TEXT
);
CREATE INDEX IF NOT EXISTS request_log_ts ON request_log (ts);
CREATE INDEX IF NOT EXISTS request_log_installation ON request_log (installation_id, ts);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
"""

TABLES = ("consents", "codes", "installations", "grants", "refresh_tokens", "access_tokens",
          "events", "revokes", "request_log", "counters") + objects_store.TABLES + lists_store.TABLES


def digest(secret: str) -> str:
    """How a secret is stored: its SHA-256, never the secret itself."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def connect(path: str, shared: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode; ``shared`` lets a pool hand it to another thread."""
    conn = sqlite3.connect(path, timeout=15, isolation_level=None, check_same_thread=not shared)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 15000")
    # WAL + NORMAL: a commit does not wait for fsync; a crash can lose the last commits
    # but never corrupt the file. Fine for a sandbox, and it keeps bulk inserts fast.
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def init(path: str) -> None:
    """Create the database file and its tables if they are missing."""
    if path == ":memory:" or path.startswith("file::memory:"):
        # Every request opens its own connection, and each would get a fresh empty database.
        raise ValueError("SANDBOX_DB must be a file path; an in-memory database is not shared.")
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    conn = connect(path)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(SCHEMA + objects_store.SCHEMA + lists_store.SCHEMA)
        _add_missing_columns(conn)
    finally:
        conn.close()


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """A sandbox file made before the repeat counts still opens: add their columns."""
    have = {row["name"] for row in conn.execute("PRAGMA table_info(events)")}
    for column, kind in (("times_received", "INTEGER NOT NULL DEFAULT 1"), ("last_received_at", "REAL")):
        if column not in have:
            conn.execute(f"ALTER TABLE events ADD COLUMN {column} {kind}")


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction; IMMEDIATE takes the write lock up front, so no deadlocks."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def reset(conn: sqlite3.Connection) -> None:
    with transaction(conn):
        for table in TABLES:
            conn.execute(f"DELETE FROM {table}")  # noqa: S608 - fixed table names


# --- counters ---------------------------------------------------------------


def bump(conn: sqlite3.Connection, name: str, amount: int = 1) -> None:
    if amount:
        conn.execute(
            "INSERT INTO counters (name, value) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
            (name, amount))


def counters(conn: sqlite3.Connection) -> dict[str, int]:
    return {row["name"]: row["value"] for row in conn.execute("SELECT name, value FROM counters")}


# --- consent pages and authorization codes --------------------------------


def create_consent(conn: sqlite3.Connection, nonce: str, params: dict, expires_at: float) -> None:
    # Old pages are useless once expired; forget them so reloads do not pile up.
    conn.execute("DELETE FROM consents WHERE expires_at < ?", (expires_at - 86400,))
    conn.execute("INSERT INTO consents (nonce_hash, params, expires_at) VALUES (?, ?, ?)",
                 (digest(nonce), json.dumps(params), expires_at))


def take_consent(conn: sqlite3.Connection, nonce: str, now: float) -> dict | None:
    """The parameters a consent page was shown for; each page can be answered once."""
    nonce_hash = digest(nonce)
    with transaction(conn):
        row = conn.execute("SELECT params, expires_at, used_at FROM consents WHERE nonce_hash = ?",
                           (nonce_hash,)).fetchone()
        if row is None or row["used_at"] is not None or row["expires_at"] < now:
            return None
        conn.execute("UPDATE consents SET used_at = ? WHERE nonce_hash = ?", (now, nonce_hash))
    return json.loads(row["params"])


def create_code(conn: sqlite3.Connection, code: str, *, client_id: str, redirect_uri: str,
                challenge: str, scopes: str, account_id: str, now: float, lifetime: int) -> None:
    conn.execute(
        "INSERT INTO codes (code_hash, client_id, redirect_uri, challenge, scopes, account_id, "
        "created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (digest(code), client_id, redirect_uri, challenge, scopes, account_id, now, now + lifetime))


def get_code(conn: sqlite3.Connection, code: str) -> sqlite3.Row | None:
    return conn.execute("SELECT * FROM codes WHERE code_hash = ?", (digest(code),)).fetchone()


# --- grants and tokens --------------------------------------------------------


def _add_tokens(conn, grant_id: str, access_token: str, refresh_token: str, now: float,
                access_lifetime: int, refresh_lifetime: int) -> None:
    conn.execute("INSERT INTO access_tokens VALUES (?, ?, ?, ?)",
                 (digest(access_token), grant_id, now, now + access_lifetime))
    conn.execute("INSERT INTO refresh_tokens VALUES (?, ?, ?, ?, NULL)",
                 (digest(refresh_token), grant_id, now, now + refresh_lifetime))


def redeem_code(conn: sqlite3.Connection, code_row: sqlite3.Row, *, access_token: str,
                refresh_token: str, now: float, access_lifetime: int,
                refresh_lifetime: int) -> str | None:
    """Spend a code and open a grant (and the installation); None if it was spent meanwhile."""
    with transaction(conn):
        spent = conn.execute("UPDATE codes SET used_at = ? WHERE code_hash = ? AND used_at IS NULL",
                             (now, code_row["code_hash"])).rowcount
        if not spent:
            return None
        account_id, client_id, scopes = code_row["account_id"], code_row["client_id"], code_row["scopes"]
        installation = conn.execute(
            "SELECT id FROM installations WHERE account_id = ? AND client_id = ?",
            (account_id, client_id)).fetchone()
        if installation is None:
            installation_id = new_id("inst")
            conn.execute("INSERT INTO installations VALUES (?, ?, ?, 'connected', ?, ?, ?)",
                         (installation_id, account_id, client_id, scopes, now, now))
        else:
            installation_id = installation["id"]
            conn.execute("UPDATE installations SET status = 'connected', scopes = ?, updated_at = ? "
                         "WHERE id = ?", (scopes, now, installation_id))
        grant_id = new_id("grant")
        conn.execute("INSERT INTO grants VALUES (?, ?, ?, ?, ?, ?, NULL, NULL)",
                     (grant_id, installation_id, account_id, client_id, scopes, now))
        conn.execute("UPDATE codes SET grant_id = ? WHERE code_hash = ?", (grant_id, code_row["code_hash"]))
        _add_tokens(conn, grant_id, access_token, refresh_token, now, access_lifetime, refresh_lifetime)
        bump(conn, "token_grants")
    return grant_id


_GRANT_COLUMNS = ("g.id AS grant_id, g.installation_id, g.account_id, g.client_id, g.scopes, "
                  "g.revoked_at AS grant_revoked_at")


def find_access_token(conn: sqlite3.Connection, token: str) -> sqlite3.Row | None:
    return conn.execute(
        f"SELECT t.expires_at, {_GRANT_COLUMNS} FROM access_tokens t "
        "JOIN grants g ON g.id = t.grant_id WHERE t.token_hash = ?", (digest(token),)).fetchone()


def find_refresh_token(conn: sqlite3.Connection, token: str) -> sqlite3.Row | None:
    return conn.execute(
        f"SELECT t.token_hash, t.expires_at, t.rotated_at, {_GRANT_COLUMNS} FROM refresh_tokens t "
        "JOIN grants g ON g.id = t.grant_id WHERE t.token_hash = ?", (digest(token),)).fetchone()


def rotate_refresh_token(conn: sqlite3.Connection, old: sqlite3.Row, *, access_token: str,
                         refresh_token: str, now: float, access_lifetime: int,
                         refresh_lifetime: int) -> bool:
    """Retire a refresh token and issue its successor; False if it was used meanwhile."""
    with transaction(conn):
        retired = conn.execute(
            "UPDATE refresh_tokens SET rotated_at = ? WHERE token_hash = ? AND rotated_at IS NULL",
            (now, old["token_hash"])).rowcount
        if not retired:
            return False
        _add_tokens(conn, old["grant_id"], access_token, refresh_token, now, access_lifetime,
                    refresh_lifetime)
        bump(conn, "refreshes")
    return True


def revoke_grant(conn: sqlite3.Connection, grant_id: str, reason: str, now: float) -> None:
    conn.execute("UPDATE grants SET revoked_at = ?, revoke_reason = ? WHERE id = ? AND revoked_at IS NULL",
                 (now, reason, grant_id))


def end_installation(conn: sqlite3.Connection, installation_id: str, *, via: str, now: float,
                     token_type_hint: str | None = None) -> dict | None:
    """Kill every token of an installation (revoke or uninstall) and record it."""
    with transaction(conn):
        inst = conn.execute("SELECT * FROM installations WHERE id = ?", (installation_id,)).fetchone()
        if inst is None:
            return None
        killed = conn.execute(
            "UPDATE grants SET revoked_at = ?, revoke_reason = ? "
            "WHERE installation_id = ? AND revoked_at IS NULL", (now, via, installation_id)).rowcount
        status = "uninstalled" if via == "uninstall" else "revoked"
        conn.execute("UPDATE installations SET status = ?, updated_at = ? WHERE id = ?",
                     (status, now, installation_id))
        conn.execute("INSERT INTO revokes (at, installation_id, account_id, client_id, via, "
                     "token_type_hint, grants_revoked) VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (now, installation_id, inst["account_id"], inst["client_id"], via,
                      token_type_hint, killed))
    return {"installation_id": installation_id, "account_id": inst["account_id"],
            "client_id": inst["client_id"], "grants_revoked": killed}


def installations(conn: sqlite3.Connection) -> list[dict]:
    rows = conn.execute(
        "SELECT i.*, (SELECT MAX(ts) FROM request_log r WHERE r.installation_id = i.id "
        "AND r.path LIKE '/api/%') AS last_api_call, "
        "(SELECT COUNT(*) FROM grants g WHERE g.installation_id = i.id AND g.revoked_at IS NULL) "
        "AS live_grants FROM installations i ORDER BY i.created_at").fetchall()
    return [dict(row) for row in rows]


def revokes(conn: sqlite3.Connection, limit: int = 100) -> list[dict]:
    rows = conn.execute("SELECT * FROM revokes ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
    return [{k: row[k] for k in row.keys() if k != "seq"} for row in rows]


# --- events ---------------------------------------------------------------


EVENT_COLUMNS = ("id", "account_id", "installation_id", "metric", "profile_key", "profile",
                 "properties", "unique_id", "unique_id_given", "time", "value", "value_currency",
                 "backfill", "source", "received_at")


_EVENT_KEY = tuple(EVENT_COLUMNS.index(c) for c in ("account_id", "metric", "profile_key", "unique_id"))
_RECEIVED_AT = EVENT_COLUMNS.index("received_at")


def record_events(conn: sqlite3.Connection, rows: list[tuple], dropped: int = 0) -> int:
    """Record events in one transaction; returns how many were new.

    A row whose (account, metric, profile, unique_id) is already stored is a duplicate: it is
    not stored again (Klaviyo keeps one event), but the stored event counts it in
    ``times_received``, so what was sent can be told apart from what was kept.
    """
    received: dict[tuple, list[tuple]] = {}
    for row in rows:
        received.setdefault(tuple(row[i] for i in _EVENT_KEY), []).append(row)
    placeholders = ", ".join("?" for _ in range(len(EVENT_COLUMNS) + 2))
    with transaction(conn):
        conn.executemany(
            "UPDATE events SET times_received = times_received + ?, last_received_at = ? "
            "WHERE account_id = ? AND metric = ? AND profile_key = ? AND unique_id = ?",
            [(len(same), same[-1][_RECEIVED_AT], *key) for key, same in received.items()])
        before = conn.total_changes
        conn.executemany(
            f"INSERT OR IGNORE INTO events ({', '.join(EVENT_COLUMNS)}, times_received, last_received_at) "
            f"VALUES ({placeholders})",
            [(*same[0], len(same), same[-1][_RECEIVED_AT]) for same in received.values()])
        inserted = conn.total_changes - before
        bump(conn, "events_accepted", inserted)
        bump(conn, "duplicates_ignored", len(rows) - inserted)
        bump(conn, "dropped_test_addresses", dropped)
    return inserted


def list_events(conn: sqlite3.Connection, *, metric: str | None = None,
                account_id: str | None = None, limit: int | None = None) -> list[dict]:
    where, args = [], []
    if metric:
        where.append("metric = ?")
        args.append(metric)
    if account_id:
        where.append("account_id = ?")
        args.append(account_id)
    sql = "SELECT * FROM events"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY seq DESC"
    if limit:
        sql += " LIMIT ?"
        args.append(limit)
    return [_event_dict(row) for row in conn.execute(sql, args)]


def _event_dict(row: sqlite3.Row) -> dict:
    return {
        "id": row["id"],
        "account_id": row["account_id"],
        "installation_id": row["installation_id"],
        "metric": row["metric"],
        "profile": json.loads(row["profile"]),
        "properties": json.loads(row["properties"]),
        "unique_id": row["unique_id"],
        "unique_id_given": bool(row["unique_id_given"]),
        "time": row["time"],
        "value": row["value"],
        "value_currency": row["value_currency"],
        "backfill": bool(row["backfill"]),
        "source": row["source"],
        "received_at": row["received_at"],
        "times_received": row["times_received"],
        "last_received_at": row["last_received_at"],
    }


def metric_counts(conn: sqlite3.Connection, account_id: str | None = None) -> dict[str, int]:
    sql = "SELECT metric, COUNT(*) AS n FROM events"
    args: list = []
    if account_id:
        sql += " WHERE account_id = ?"
        args.append(account_id)
    sql += " GROUP BY metric ORDER BY metric"
    return {row["metric"]: row["n"] for row in conn.execute(sql, args)}


# --- request log --------------------------------------------------------------


def log_request(conn: sqlite3.Connection, *, ts: float, method: str, path: str, status: int,
                account_id: str | None, installation_id: str | None, grant_id: str | None,
                fault: str | None, revision: str | None) -> None:
    conn.execute(
        "INSERT INTO request_log (ts, method, path, status, account_id, installation_id, grant_id, "
        "fault, revision) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (ts, method, path, status, account_id, installation_id, grant_id, fault, revision))


def requests_after(conn: sqlite3.Connection, since: float = 0.0, *, installation_id: str | None = None,
                   account_id: str | None = None, path_prefix: str = "/api/",
                   limit: int = 10000) -> list[dict]:
    """Logged requests after ``since`` (unix time), oldest first."""
    sql = "SELECT * FROM request_log WHERE ts > ? AND substr(path, 1, ?) = ?"
    args: list = [since, len(path_prefix), path_prefix]
    if installation_id:
        sql += " AND installation_id = ?"
        args.append(installation_id)
    if account_id:
        sql += " AND account_id = ?"
        args.append(account_id)
    sql += " ORDER BY seq LIMIT ?"
    args.append(limit)
    return [{k: row[k] for k in row.keys() if k != "seq"} for row in conn.execute(sql, args)]


def requests_by_path(conn: sqlite3.Connection) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for row in conn.execute("SELECT path, status, COUNT(*) AS n FROM request_log "
                            "GROUP BY path, status ORDER BY path, status"):
        out.setdefault(row["path"], {})[str(row["status"])] = row["n"]
    return out
